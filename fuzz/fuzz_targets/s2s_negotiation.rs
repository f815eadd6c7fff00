//! The s2s negotiation machines (STARTTLS, SASL EXTERNAL, Server Dialback)
//! in both directions, driven through a real framer the way the s2s
//! actors drive them, with the peer's bytes chosen by the fuzzer.
//!
//! We are `b.example`; the peer claims `a.example`. Input: byte 0 picks
//! the direction (bit 0) and the setup (inbound: bits 1-2 the peer's
//! certificate, bit 3 start over TLS, bit 4 no TLS; outbound: see
//! `Outbound::new`, which also takes byte 1), then NUL-separated
//! segments: peer bytes for the framer, except one-byte control segments:
//! 0x02/0x03 answer the oldest pending dialback verification valid /
//! invalid, 0x04 reports it could not be asked (inbound); 0x05 closes the
//! peer's stream (outbound). TLS completes as soon as a machine asks.
//!
//! Invariants: no panic; a peer is authenticated only towards a local
//! domain, by EXTERNAL only with TLS and a certificate valid for it, by
//! dialback only after the authoritative server said valid for that very
//! pair; an outbound stream is ready by EXTERNAL only with a valid
//! certificate; everything we send reads back as well-formed XMPP.
#![no_main]

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use fedrouter::error::StanzaCondition;
use fedrouter::stream::s2s::{
    AuthMethod, InAction, InInput, InboundContext, InboundNegotiation, Negotiate, OutAction,
    OutInput, OutMode, OutboundNegotiation, PeerIdentity, PeerPolicy,
};
use fedrouter::xml::ns::NS_SERVER;
use fedrouter::xml::{Framer, FramerEvent};
use libfuzzer_sys::fuzz_target;

const LOCAL: &str = "b.example";
const PEER: &str = "a.example";
const SECRET: &[u8] = b"dialback secret of b.example";
const HEADER: &[u8] = b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
                        xmlns:db='jabber:server:dialback' from='a.example' to='b.example' version='1.0'>";
const STARTTLS: &[u8] = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

struct Cert(&'static str);

impl PeerIdentity for Cert {
    fn is_valid_for(&self, domain: &str) -> bool {
        domain == self.0
    }
}

struct Ctx;

impl InboundContext for Ctx {
    fn is_local(&self, domain: &str) -> bool {
        domain == LOCAL || domain == "c.example"
    }
    fn policy(&self, remote: &str) -> Option<PeerPolicy> {
        match remote {
            "closed.example" => None,
            "dialback.example" => Some(PeerPolicy {
                tls: Negotiate::NotSupported,
                sasl: Negotiate::NotSupported,
                dialback: true,
            }),
            "sasl.example" => Some(PeerPolicy {
                tls: Negotiate::Required,
                sasl: Negotiate::Required,
                dialback: false,
            }),
            _ => Some(PeerPolicy::open_federation()),
        }
    }
    fn dialback_secret(&self) -> &[u8] {
        SECRET
    }
}

/// The certificate the peer presents: none, valid for `a.example`, or
/// valid for another name.
fn cert(bits: u8) -> Option<Arc<dyn PeerIdentity>> {
    match bits & 3 {
        0 => None,
        1 => Some(Arc::new(Cert(PEER))),
        _ => Some(Arc::new(Cert("mallory.example"))),
    }
}

fn policy(bits: u8) -> PeerPolicy {
    let n = |b: u8| match b & 3 {
        0 => Negotiate::Required,
        1 => Negotiate::Optional,
        _ => Negotiate::NotSupported,
    };
    PeerPolicy {
        tls: n(bits),
        sasl: n(bits >> 2),
        dialback: bits & 16 == 0,
    }
}

/// Reads what we send, as the peer would; panics on broken output.
struct Echo(Framer);

impl Echo {
    fn new() -> Echo {
        Echo(Framer::new(NS_SERVER, 1 << 20))
    }

    fn read(&mut self, xml: &str) {
        if xml.starts_with("<?xml") {
            self.0 = Framer::new(NS_SERVER, 1 << 20);
        }
        self.0.feed(xml.as_bytes());
        loop {
            match self.0.next() {
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => panic!("we sent XML a peer cannot read: {e:?}\n{xml}"),
            }
        }
    }
}

/// What a driver does after a batch of actions.
#[derive(PartialEq)]
enum Next {
    Read,
    RestartStream,
    StartTls,
    Close,
}

/// The connection side both drivers share, as the s2s actors handle it.
struct Wire {
    /// Reads the peer.
    framer: Framer,
    /// Reads what we send.
    echo: Echo,
    /// What the peer presents in the TLS handshake.
    cert: Option<Arc<dyn PeerIdentity>>,
    done: bool,
}

impl Wire {
    fn new(cert: Option<Arc<dyn PeerIdentity>>) -> Wire {
        Wire {
            framer: Framer::new(NS_SERVER, 65536),
            echo: Echo::new(),
            cert,
            done: false,
        }
    }

    /// Does what a batch of actions asked for last. `Some(peer)`: the TLS
    /// handshake ran and the machine must hear of it.
    #[allow(clippy::option_option)]
    fn apply(&mut self, next: Next) -> Option<Option<Arc<dyn PeerIdentity>>> {
        match next {
            Next::Read => None,
            Next::RestartStream => {
                self.framer.reset();
                None
            }
            Next::Close => {
                self.done = true;
                None
            }
            Next::StartTls => {
                // The actor refuses bytes buffered behind <starttls/>.
                if self.framer.buffered() > 0 {
                    self.done = true;
                    return None;
                }
                self.framer = Framer::new(NS_SERVER, 65536);
                Some(self.cert.clone())
            }
        }
    }
}

struct Inbound {
    neg: InboundNegotiation,
    wire: Wire,
    /// Verifications asked for, oldest first: (originating, receiving).
    pending: VecDeque<(String, String)>,
    /// Pairs the authoritative server said valid for.
    vouched: HashSet<(String, String)>,
}

impl Inbound {
    fn new(tls_available: bool, cert: Option<Arc<dyn PeerIdentity>>) -> Inbound {
        Inbound {
            neg: InboundNegotiation::new("sid-fuzz".into(), tls_available),
            wire: Wire::new(cert),
            pending: VecDeque::new(),
            vouched: HashSet::new(),
        }
    }

    fn bytes(&mut self, data: &[u8]) {
        self.wire.framer.feed(data);
        while !self.wire.done {
            let actions = match self.wire.framer.next() {
                Ok(Some(FramerEvent::StreamOpen(h))) => {
                    self.neg.handle(InInput::StreamOpen(&h), &Ctx)
                }
                Ok(Some(FramerEvent::Stanza(s))) => {
                    if !self.neg.authenticated().is_empty() {
                        let _ = self.neg.check_addressing(&s);
                    }
                    self.neg.handle(InInput::Element(&s), &Ctx)
                }
                Ok(None) => return,
                Ok(Some(FramerEvent::StreamClose)) | Err(_) => {
                    self.wire.done = true;
                    return;
                }
            };
            self.perform(actions);
        }
    }

    fn perform(&mut self, actions: Vec<InAction>) {
        let mut next = Next::Read;
        for a in actions {
            match a {
                InAction::Send(xml) => self.wire.echo.read(&xml),
                InAction::StartTls => next = Next::StartTls,
                InAction::RestartStream => next = Next::RestartStream,
                InAction::VerifyDialback {
                    originating,
                    receiving,
                    ..
                } => self.pending.push_back((originating, receiving)),
                InAction::Authenticated {
                    remote,
                    local,
                    method,
                } => {
                    assert!(Ctx.is_local(&local), "authenticated towards {local}");
                    match method {
                        AuthMethod::SaslExternal => {
                            assert!(self.neg.is_tls(), "EXTERNAL without TLS");
                            assert!(
                                self.wire
                                    .cert
                                    .as_ref()
                                    .is_some_and(|c| c.is_valid_for(&remote)),
                                "EXTERNAL for {remote} without a certificate for it"
                            );
                        }
                        AuthMethod::DialbackTls | AuthMethod::DialbackPlain => {
                            assert!(
                                self.vouched.contains(&(remote.clone(), local.clone())),
                                "dialback for {remote} -> {local} nobody vouched for"
                            );
                            assert_eq!(method == AuthMethod::DialbackTls, self.neg.is_tls());
                        }
                    }
                }
                InAction::Fail(_) | InAction::PeerStreamError(_) => next = Next::Close,
            }
        }
        if let Some(peer) = self.wire.apply(next) {
            let more = self.neg.handle(InInput::TlsEstablished { peer }, &Ctx);
            self.perform(more);
        }
    }

    /// The authoritative server's answer to the oldest verification.
    fn checked(&mut self, control: u8) {
        let Some((originating, receiving)) = self.pending.pop_front() else {
            return;
        };
        let input = match control {
            0x02 | 0x03 => {
                let valid = control == 0x02;
                if valid {
                    self.vouched
                        .insert((originating.clone(), receiving.clone()));
                }
                InInput::DialbackChecked {
                    originating,
                    receiving,
                    valid,
                }
            }
            _ => InInput::DialbackFailed {
                originating,
                receiving,
                condition: StanzaCondition::RemoteServerNotFound,
            },
        };
        let actions = self.neg.handle(input, &Ctx);
        self.perform(actions);
    }
}

struct Outbound {
    neg: OutboundNegotiation,
    wire: Wire,
    verify: bool,
}

impl Outbound {
    /// `mode`: bits 1-2 the peer's certificate, bit 3 verify-only; `setup`:
    /// bits 0-4 the partner policy, bit 5 whether we hold a certificate.
    fn new(mode: u8, setup: u8) -> Outbound {
        let verify = mode & 8 != 0;
        let out_mode = if verify {
            OutMode::Verify {
                receiving: LOCAL.into(),
                originating: PEER.into(),
                stream_id: "sid-c".into(),
                key: "0123456789abcdef".into(),
            }
        } else {
            OutMode::Authenticate
        };
        let neg = OutboundNegotiation::new(
            LOCAL.into(),
            PEER.into(),
            policy(setup),
            Arc::from(SECRET),
            setup & 32 != 0,
            out_mode,
        );
        let mut out = Outbound {
            neg,
            wire: Wire::new(cert(mode >> 1)),
            verify,
        };
        let start = out.neg.start();
        out.perform(start);
        out
    }

    fn bytes(&mut self, data: &[u8]) {
        self.wire.framer.feed(data);
        while !self.wire.done {
            let actions = match self.wire.framer.next() {
                Ok(Some(FramerEvent::StreamOpen(h))) => self.neg.handle(OutInput::StreamOpen(&h)),
                Ok(Some(FramerEvent::Stanza(s))) => self.neg.handle(OutInput::Element(&s)),
                Ok(None) => return,
                Ok(Some(FramerEvent::StreamClose)) | Err(_) => {
                    self.closed();
                    return;
                }
            };
            self.perform(actions);
        }
    }

    fn closed(&mut self) {
        let actions = self.neg.handle(OutInput::StreamClosed);
        self.perform(actions);
        self.wire.done = true;
    }

    fn perform(&mut self, actions: Vec<OutAction>) {
        let mut next = Next::Read;
        for a in actions {
            match a {
                OutAction::Send(xml) => self.wire.echo.read(&xml),
                OutAction::StartTls => next = Next::StartTls,
                OutAction::RestartStream => next = Next::RestartStream,
                OutAction::Ready(method) => {
                    assert!(!self.verify, "a verify-only stream became ready");
                    match method {
                        AuthMethod::SaslExternal => {
                            assert!(self.neg.is_tls(), "EXTERNAL without TLS");
                            assert!(
                                self.neg.remote_certificate_valid(),
                                "EXTERNAL to a peer whose certificate is not valid"
                            );
                        }
                        AuthMethod::DialbackTls => assert!(self.neg.is_tls()),
                        AuthMethod::DialbackPlain => assert!(!self.neg.is_tls()),
                    }
                }
                OutAction::Verified(_) => assert!(self.verify, "a verdict on an auth stream"),
                OutAction::Fail(_) => next = Next::Close,
            }
        }
        if let Some(peer) = self.wire.apply(next) {
            let more = self.neg.handle(OutInput::TlsEstablished { peer });
            self.perform(more);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let segments = rest.split(|&b| b == 0);
    if mode & 1 == 0 {
        let mut inb = Inbound::new(mode & 16 == 0, cert(mode >> 1));
        if mode & 8 != 0 {
            inb.bytes(HEADER);
            inb.bytes(STARTTLS);
            inb.bytes(HEADER);
        }
        for segment in segments {
            if inb.wire.done {
                break;
            }
            match segment {
                [c @ 0x02..=0x04] => inb.checked(*c),
                bytes => inb.bytes(bytes),
            }
        }
    } else {
        let Some((&setup, rest)) = rest.split_first() else {
            return;
        };
        let mut out = Outbound::new(*mode, setup);
        let segments = rest.split(|&b| b == 0);
        for segment in segments {
            if out.wire.done {
                break;
            }
            match segment {
                [0x05] => out.closed(),
                bytes => out.bytes(bytes),
            }
        }
    }
});
