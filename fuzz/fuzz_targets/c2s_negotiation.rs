//! The c2s negotiation machine (STARTTLS, SASL SCRAM and PLAIN, bind)
//! driven through a real framer the way the session actor drives it.
//!
//! Input: byte 0 picks where the stream starts (bits 0-1: fresh, over TLS
//! with features sent, or authenticated as alice and ready to bind; bit 2:
//! TLS required) and then NUL-separated segments: a segment is client
//! bytes for the framer, except the one-byte segments 0x02/0x03/0x04,
//! which answer a pending bind with success / bad resource / internal
//! error. TLS completes as soon as the machine asks for it.
//!
//! Invariants: no panic; only alice (password "pencil") ever
//! authenticates, never over plaintext when TLS is required; the session
//! is established only with the JID the router bound; everything the
//! server sends is well-formed XMPP for a client's framer (no injection
//! of client bytes into server output).
#![no_main]

use std::sync::OnceLock;

use fedrouter::jid::{BareJid, FullJid};
use fedrouter::storage::{Credentials, MemStore, Store};
use fedrouter::stream::c2s::{
    Action, BindFailure, C2sNegotiation, C2sPolicy, Input, bind_error, bind_result,
};
use fedrouter::xml::ns::NS_CLIENT;
use fedrouter::xml::{Framer, FramerEvent};
use libfuzzer_sys::fuzz_target;

/// Low so each run is cheap; the code path is the same as with 4096.
const ITERATIONS: u32 = 16;
const HEADER: &[u8] = b"<stream:stream to='example.org' version='1.0' xmlns='jabber:client' \
                        xmlns:stream='http://etherx.jabber.org/streams'>";
const STARTTLS: &[u8] = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
/// PLAIN with `\0alice\0pencil`.
const PLAIN: &[u8] = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>\
                       AGFsaWNlAHBlbmNpbA==</auth>";

fn store() -> &'static MemStore {
    static STORE: OnceLock<MemStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let store = MemStore::new();
        let alice = BareJid::parse("alice@example.org").expect("valid JID");
        let creds = Credentials::from_password("pencil", ITERATIONS).expect("credentials");
        store.create_account(&alice, &creds).expect("account");
        store
    })
}

struct Driver {
    neg: C2sNegotiation,
    framer: Framer,
    /// Reads what the server sends, as a client would.
    echo: Framer,
    require_tls: bool,
    /// The bind the router has been asked for: (requested resource, iq id).
    pending_bind: Option<(Option<String>, String)>,
    bound: Option<FullJid>,
    done: bool,
}

impl Driver {
    fn new(require_tls: bool) -> Driver {
        let policy = C2sPolicy {
            domains: vec!["example.org".into()],
            require_tls,
            tls_available: true,
            scram_iterations: ITERATIONS,
        };
        Driver {
            neg: C2sNegotiation::new(policy, "sid-fuzz".into()),
            framer: Framer::new(NS_CLIENT, 65536),
            echo: Framer::new(NS_CLIENT, 1 << 20),
            require_tls,
            pending_bind: None,
            bound: None,
            done: false,
        }
    }

    fn client_bytes(&mut self, data: &[u8]) {
        self.framer.feed(data);
        while !self.done {
            let ev = match self.framer.next() {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                // The actor sends the framer's stream error and closes.
                Err(_) => {
                    self.done = true;
                    return;
                }
            };
            let actions = match &ev {
                FramerEvent::StreamOpen(h) => self.neg.handle(Input::StreamOpen(h), store()),
                FramerEvent::Stanza(s) => self.neg.handle(Input::Element(s), store()),
                FramerEvent::StreamClose => {
                    self.done = true;
                    return;
                }
            };
            self.perform(actions);
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(xml) => self.server_bytes(&xml),
                Action::StartTls => {
                    // The actor refuses a handshake with bytes already
                    // buffered behind <starttls/> (command injection).
                    if self.framer.buffered() > 0 {
                        self.done = true;
                        return;
                    }
                    self.framer = Framer::new(NS_CLIENT, 65536);
                    let more = self.neg.handle(Input::TlsEstablished, store());
                    assert!(self.neg.is_tls());
                    self.perform(more);
                }
                Action::RestartStream => self.framer.reset(),
                Action::Authenticated(user) => {
                    assert_eq!(
                        user.as_str(),
                        "alice@example.org",
                        "authenticated a stranger"
                    );
                    assert!(
                        self.neg.is_tls() || !self.require_tls,
                        "authenticated without the TLS that is required"
                    );
                }
                Action::Bind { requested, iq_id } => {
                    assert!(self.neg.is_authenticated(), "bind before authentication");
                    assert!(self.pending_bind.is_none(), "two binds at once");
                    self.pending_bind = Some((requested, iq_id));
                }
                Action::Established(jid) => {
                    assert_eq!(
                        Some(&jid),
                        self.bound.as_ref(),
                        "established an unbound JID"
                    );
                    self.done = true;
                }
                Action::AuthFailed(_) | Action::AuthThrottled(_) => {}
                Action::Resume { .. } => {
                    // The actor hands the connection to the session it
                    // names; this one ends.
                    assert!(self.neg.is_authenticated(), "resume before authentication");
                    assert!(self.bound.is_none(), "resume after bind");
                    self.done = true;
                    return;
                }
                Action::Fail(_) => {
                    self.done = true;
                    return;
                }
            }
        }
    }

    /// The router's answer to the pending bind, as the actor delivers it.
    fn bind(&mut self, outcome: u8) {
        let Some((requested, iq_id)) = self.pending_bind.take() else {
            return;
        };
        let user = self.neg.user().cloned().expect("bind without a user");
        let result = match outcome {
            0x02 => user
                .with_resource(requested.as_deref().unwrap_or("fuzz"))
                .map_err(|_| BindFailure::BadResource),
            0x03 => Err(BindFailure::BadResource),
            _ => Err(BindFailure::Internal),
        };
        match &result {
            Ok(jid) => {
                self.server_bytes(&bind_result(&iq_id, jid));
                self.bound = Some(jid.clone());
            }
            Err(BindFailure::BadResource) => {
                self.server_bytes(&bind_error(&iq_id, "bad-request", "modify"))
            }
            Err(BindFailure::Internal) => {
                self.server_bytes(&bind_error(&iq_id, "internal-server-error", "wait"))
            }
        }
        let actions = self.neg.handle(Input::Bound(result), store());
        self.perform(actions);
    }

    /// What the server sends must read back cleanly, whatever the client
    /// put into it (ids, resources).
    fn server_bytes(&mut self, xml: &str) {
        if xml.starts_with("<?xml") {
            self.echo = Framer::new(NS_CLIENT, 1 << 20);
        }
        self.echo.feed(xml.as_bytes());
        loop {
            match self.echo.next() {
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => panic!("the server sent XML a client cannot read: {e:?}\n{xml}"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let mut d = Driver::new(mode & 4 != 0);
    if mode & 3 >= 1 {
        d.client_bytes(HEADER);
        d.client_bytes(STARTTLS);
        assert!(d.neg.is_tls(), "the prefix reaches TLS");
        d.client_bytes(HEADER);
    }
    if mode & 3 >= 2 {
        d.client_bytes(PLAIN);
        assert!(d.neg.is_authenticated(), "the prefix authenticates");
        d.client_bytes(HEADER);
    }
    for segment in rest.split(|&b| b == 0) {
        if d.done {
            break;
        }
        match segment {
            [b @ 0x02..=0x04] => d.bind(*b),
            bytes => d.client_bytes(bytes),
        }
    }
});
