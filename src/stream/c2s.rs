//! Client-to-server stream negotiation as a sans-IO state machine:
//! stream header → STARTTLS → SASL (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN over
//! TLS) → stream restart → resource binding. It takes [`Input`]s and returns
//! [`Action`]s; the session actor performs them. No sockets, no clock, so
//! every branch — the hostile ones too — is tested in milliseconds.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{StreamCondition, StreamError};
use crate::jid::{BareJid, FullJid};
use crate::storage::Store;
use crate::stream::scram::{self, Credentials, ScramHash, ScramServer, ScramServerFinal};
use crate::xml::element::Element;
use crate::xml::escape::{escape_attr, escape_text};
use crate::xml::ns::{NS_BIND, NS_CLIENT, NS_SASL, NS_SESSION, NS_SM, NS_STREAMS, NS_TLS};
use crate::xml::{Stanza, StanzaKind, StreamHeader};

/// Failed SASL attempts allowed on one stream before it is closed.
const MAX_AUTH_FAILURES: u32 = 3;

/// Where accounts' credentials come from, and whether a login may be tried.
pub trait CredentialSource {
    fn lookup(&self, user: &BareJid) -> Option<Credentials>;

    /// Whether a password for `user` may be checked now: false while the
    /// account, or the address the client comes from, is throttled after
    /// too many failed logins. Asked before any salt or verdict is given.
    fn may_attempt(&self, _user: &BareJid) -> bool {
        true
    }
}

impl<S: Store + ?Sized> CredentialSource for S {
    fn lookup(&self, user: &BareJid) -> Option<Credentials> {
        self.credentials(user).ok().flatten()
    }
}

#[derive(Debug)]
pub enum Input<'a> {
    StreamOpen(&'a StreamHeader),
    Element(&'a Stanza),
    /// The TLS handshake the machine asked for has completed.
    TlsEstablished,
    /// The answer to [`Action::Bind`].
    Bound(Result<FullJid, BindFailure>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindFailure {
    BadResource,
    Internal,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Send(String),
    /// `<proceed/>` has been queued: flush it, check nothing more was
    /// received, then run the TLS handshake and report `TlsEstablished`.
    StartTls,
    /// SASL succeeded: the client restarts the stream on the same
    /// transport; expect a new header (the framer is reset).
    RestartStream,
    Authenticated(BareJid),
    /// Bind a resource (the shard decides the final one).
    Bind {
        requested: Option<String>,
        iq_id: String,
    },
    /// Negotiation is complete: the session is live.
    Established(FullJid),
    /// A SASL attempt failed (counted; the failure is already in a `Send`),
    /// naming the account when the attempt named a valid one.
    AuthFailed(Option<BareJid>),
    /// A SASL attempt for this account was refused with
    /// `<temporary-auth-failure/>` by the failed-login throttle, without
    /// checking any password (also in a `Send`; not a new failure).
    AuthThrottled(BareJid),
    /// Send this stream error and close.
    Fail(StreamError),
    /// XEP-0198 `<resume/>` instead of bind: hand this connection to the
    /// session `previd` names, which answers from there on.
    Resume {
        previd: String,
        h: u32,
    },
}

#[derive(Debug)]
enum State {
    /// Waiting for the (first or restarted) stream header.
    ExpectHeader,
    /// Header received, features sent.
    Features,
    /// SCRAM: server-first sent, waiting for client-final.
    ScramFinal(Box<ScramServerFinal>, BareJid),
    /// An `<auth/>` without initial response: waiting for client-first.
    ScramFirst(ScramHash),
    /// Waiting for the shard to bind.
    Binding,
    Established,
    Closed,
}

/// Settings the machine needs from configuration.
#[derive(Debug, Clone)]
pub struct C2sPolicy {
    pub domains: Vec<String>,
    pub require_tls: bool,
    pub tls_available: bool,
    /// `c2s.scram_iterations`: what an unknown user's fake credentials
    /// show, so they look like an account made with today's settings.
    pub scram_iterations: u32,
}

pub struct C2sNegotiation {
    policy: C2sPolicy,
    state: State,
    tls: bool,
    user: Option<BareJid>,
    domain: Option<String>,
    stream_id: String,
    failures: u32,
}

impl C2sNegotiation {
    pub fn new(policy: C2sPolicy, stream_id: String) -> Self {
        C2sNegotiation {
            policy,
            state: State::ExpectHeader,
            tls: false,
            user: None,
            domain: None,
            stream_id,
            failures: 0,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }

    pub fn user(&self) -> Option<&BareJid> {
        self.user.as_ref()
    }

    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    fn fail(&mut self, cond: StreamCondition, text: &str) -> Vec<Action> {
        self.state = State::Closed;
        vec![Action::Fail(StreamError::with_text(cond, text))]
    }

    pub fn handle<C: CredentialSource + ?Sized>(
        &mut self,
        input: Input<'_>,
        creds: &C,
    ) -> Vec<Action> {
        match input {
            Input::StreamOpen(h) => self.on_header(h),
            Input::TlsEstablished => {
                self.tls = true;
                self.state = State::ExpectHeader;
                Vec::new()
            }
            Input::Element(s) => self.on_element(s, creds),
            Input::Bound(r) => self.on_bound(r),
        }
    }

    /// The stream header we answer with.
    fn header(&self, domain: &str) -> String {
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}' \
             id='{}' from='{}' version='1.0' xml:lang='en'>",
            escape_attr(&self.stream_id),
            escape_attr(domain)
        )
    }

    fn on_header(&mut self, h: &StreamHeader) -> Vec<Action> {
        if !matches!(self.state, State::ExpectHeader) {
            return self.fail(StreamCondition::BadFormat, "unexpected stream header");
        }
        let to =
            h.to.as_deref()
                .map(|t| t.trim_end_matches('.').to_ascii_lowercase());
        let domain = match to {
            Some(t) if self.policy.domains.contains(&t) => t,
            Some(_) | None => {
                // RFC 6120 §4.9.3.6: answer with a header first, then the error.
                let d = self.policy.domains.first().cloned().unwrap_or_default();
                let mut out = vec![Action::Send(self.header(&d))];
                out.extend(self.fail(
                    StreamCondition::HostUnknown,
                    "this server does not serve that domain",
                ));
                return out;
            }
        };
        if let Some(prev) = &self.domain
            && *prev != domain
        {
            return self.fail(
                StreamCondition::HostUnknown,
                "the domain changed on restart",
            );
        }
        let mut out = vec![Action::Send(self.header(&domain))];
        self.domain = Some(domain);
        if h.version
            .as_deref()
            .map(|v| v.split('.').next() != Some("1"))
            .unwrap_or(true)
        {
            out.extend(self.fail(StreamCondition::UnsupportedVersion, "XMPP 1.0 is required"));
            return out;
        }
        out.push(Action::Send(self.features()));
        self.state = State::Features;
        out
    }

    fn features(&self) -> String {
        let mut f = String::from("<stream:features>");
        if self.user.is_some() {
            f.push_str(&format!(
                "<bind xmlns='{NS_BIND}'/><session xmlns='{NS_SESSION}'><optional/></session><sm xmlns='{NS_SM}'/>"
            ));
        } else {
            if !self.tls && self.policy.tls_available {
                f.push_str(&format!("<starttls xmlns='{NS_TLS}'>"));
                if self.policy.require_tls {
                    f.push_str("<required/>");
                }
                f.push_str("</starttls>");
            }
            if self.tls || !self.policy.require_tls {
                f.push_str(&format!(
                    "<mechanisms xmlns='{NS_SASL}'><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism>"
                ));
                if self.tls {
                    f.push_str("<mechanism>PLAIN</mechanism>");
                }
                f.push_str("</mechanisms>");
            }
        }
        f.push_str("</stream:features>");
        f
    }

    fn on_element<C: CredentialSource + ?Sized>(&mut self, s: &Stanza, creds: &C) -> Vec<Action> {
        if matches!(self.state, State::Established | State::Closed) {
            return Vec::new();
        }
        if matches!(self.state, State::ExpectHeader) {
            return self.fail(
                StreamCondition::NotWellFormed,
                "stanza before the stream header",
            );
        }
        let Ok(el) = Element::parse(s.bytes(), NS_CLIENT, &[("stream", NS_STREAMS)]) else {
            return self.fail(StreamCondition::NotWellFormed, "cannot parse element");
        };
        if el.ns == NS_TLS && el.name == "starttls" {
            if self.tls || !self.policy.tls_available || self.user.is_some() {
                self.state = State::Closed;
                return vec![
                    Action::Send(format!("<failure xmlns='{NS_TLS}'/>")),
                    Action::Fail(StreamError::with_text(
                        StreamCondition::PolicyViolation,
                        "STARTTLS not allowed now",
                    )),
                ];
            }
            return vec![
                Action::Send(format!("<proceed xmlns='{NS_TLS}'/>")),
                Action::StartTls,
            ];
        }
        let is_stanza = matches!(
            s.kind(),
            StanzaKind::Message | StanzaKind::Presence | StanzaKind::Iq
        );
        if is_stanza && self.user.is_none() {
            // RFC 6120 §8.1.1: no stanzas before the stream is authenticated.
            return self.fail(StreamCondition::NotAuthorized, "authenticate first");
        }
        if self.user.is_none() && !self.tls && self.policy.require_tls {
            return self.fail(
                StreamCondition::PolicyViolation,
                "STARTTLS is required first",
            );
        }
        if el.ns == NS_SM && self.user.is_some() {
            if el.name == "resume" && matches!(self.state, State::Features) {
                let previd = el.attr("previd").unwrap_or_default().to_string();
                let Some(h) = el.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                    return vec![Action::Send(sm_failed("bad-request"))];
                };
                return vec![Action::Resume { previd, h }];
            }
            // XEP-0198 §3: enabling before a resource is bound is refused,
            // and the stream goes on.
            return vec![Action::Send(sm_failed("unexpected-request"))];
        }
        if el.ns == NS_SASL {
            if self.user.is_some() {
                return self.fail(StreamCondition::PolicyViolation, "already authenticated");
            }
            return self.on_sasl(&el, creds);
        }
        if is_stanza {
            if s.kind() == StanzaKind::Iq
                && matches!(self.state, State::Features)
                && let Some(bind) = el.child("bind", NS_BIND)
            {
                if el.attr("type") != Some("set") {
                    return vec![Action::Send(iq_error(&el, "bad-request", "modify"))];
                }
                let requested = bind.child("resource", NS_BIND).map(|r| r.text());
                self.state = State::Binding;
                return vec![Action::Bind {
                    requested,
                    iq_id: el.attr("id").unwrap_or_default().to_string(),
                }];
            }
            return self.fail(StreamCondition::NotAuthorized, "bind a resource first");
        }
        self.fail(
            StreamCondition::UnsupportedStanzaType,
            "unexpected element during negotiation",
        )
    }

    fn sasl_failure(&mut self, condition: &str) -> Vec<Action> {
        self.failure_of(condition, Action::AuthFailed(None))
    }

    /// A failure of an attempt that named the valid account `user`.
    fn user_failure(&mut self, condition: &str, user: BareJid) -> Vec<Action> {
        self.failure_of(condition, Action::AuthFailed(Some(user)))
    }

    fn throttled(&mut self, user: BareJid) -> Vec<Action> {
        self.failure_of("temporary-auth-failure", Action::AuthThrottled(user))
    }

    fn failure_of(&mut self, condition: &str, what: Action) -> Vec<Action> {
        self.failures += 1;
        self.state = State::Features;
        let mut out = vec![
            Action::Send(format!(
                "<failure xmlns='{NS_SASL}'><{condition}/></failure>"
            )),
            what,
        ];
        if self.failures >= MAX_AUTH_FAILURES {
            out.extend(self.fail(
                StreamCondition::PolicyViolation,
                "too many failed authentication attempts",
            ));
        }
        out
    }

    fn user_jid(&self, username: &str) -> Option<BareJid> {
        BareJid::from_parts(Some(username), self.domain.as_deref()?).ok()
    }

    fn on_sasl<C: CredentialSource + ?Sized>(&mut self, el: &Element, creds: &C) -> Vec<Action> {
        let payload = || -> Result<Vec<u8>, ()> {
            let t = el.text();
            let t = t.trim();
            if t.is_empty() || t == "=" {
                return Ok(Vec::new());
            }
            B64.decode(t).map_err(|_| ())
        };
        match (
            el.name.as_str(),
            std::mem::replace(&mut self.state, State::Features),
        ) {
            ("abort", _) => self.sasl_failure("aborted"),
            ("auth", State::Features) => {
                let Ok(data) = payload() else {
                    return self.sasl_failure("incorrect-encoding");
                };
                let mech = el.attr("mechanism").unwrap_or_default();
                if mech == "PLAIN" {
                    if !self.tls {
                        return self.sasl_failure("encryption-required");
                    }
                    return self.plain(&data, creds);
                }
                let Some(hash) = ScramHash::from_mechanism(mech) else {
                    return self.sasl_failure("invalid-mechanism");
                };
                if data.is_empty() {
                    self.state = State::ScramFirst(hash);
                    return vec![Action::Send(format!("<challenge xmlns='{NS_SASL}'/>"))];
                }
                self.scram_first(hash, &data, creds)
            }
            ("response", State::ScramFirst(hash)) => {
                let Ok(data) = payload() else {
                    return self.sasl_failure("incorrect-encoding");
                };
                self.scram_first(hash, &data, creds)
            }
            ("response", State::ScramFinal(server, user)) => {
                let Ok(data) = payload() else {
                    return self.sasl_failure("incorrect-encoding");
                };
                match server.finish(&data) {
                    Ok(server_final) => self.success(user, Some(server_final)),
                    Err(e) => self.user_failure(e.sasl_condition(), user),
                }
            }
            (_, _) => self.sasl_failure("malformed-request"),
        }
    }

    fn scram_first<C: CredentialSource + ?Sized>(
        &mut self,
        hash: ScramHash,
        data: &[u8],
        creds: &C,
    ) -> Vec<Action> {
        let (awaiting, username, authzid) = match ScramServer::start(hash, data) {
            Ok(x) => x,
            Err(e) => return self.sasl_failure(e.sasl_condition()),
        };
        let Some(user) = self.user_jid(&username) else {
            return self.sasl_failure("not-authorized");
        };
        if let Some(a) = authzid.filter(|a| !a.is_empty())
            && BareJid::parse(&a).ok().as_ref() != Some(&user)
        {
            return self.user_failure("invalid-authzid", user);
        }
        if !creds.may_attempt(&user) {
            return self.throttled(user);
        }
        let stored = creds.lookup(&user);
        let (fin, server_first) = match awaiting.server_first(
            stored.as_ref().map(|c| c.keys(hash)),
            self.policy.scram_iterations,
        ) {
            Ok(x) => x,
            Err(e) => return self.sasl_failure(e.sasl_condition()),
        };
        self.state = State::ScramFinal(Box::new(fin), user);
        vec![Action::Send(format!(
            "<challenge xmlns='{NS_SASL}'>{}</challenge>",
            B64.encode(server_first)
        ))]
    }

    fn plain<C: CredentialSource + ?Sized>(&mut self, data: &[u8], creds: &C) -> Vec<Action> {
        let mut parts = data.split(|b| *b == 0);
        let (Some(authz), Some(authc), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.sasl_failure("malformed-request");
        };
        let (Ok(authz), Ok(authc), Ok(pass)) = (
            std::str::from_utf8(authz),
            std::str::from_utf8(authc),
            std::str::from_utf8(pass),
        ) else {
            return self.sasl_failure("malformed-request");
        };
        let Some(user) = self.user_jid(authc) else {
            return self.sasl_failure("not-authorized");
        };
        if !authz.is_empty() && BareJid::parse(authz).ok().as_ref() != Some(&user) {
            return self.user_failure("invalid-authzid", user);
        }
        if !creds.may_attempt(&user) {
            return self.throttled(user);
        }
        // An unknown user runs the same derivation as a known one.
        let stored = creds.lookup(&user);
        match scram::verify_plain(
            stored.as_ref(),
            user.as_str(),
            pass,
            self.policy.scram_iterations,
        ) {
            Ok(true) => self.success(user, None),
            Ok(false) => self.user_failure("not-authorized", user),
            Err(e) => self.sasl_failure(e.sasl_condition()),
        }
    }

    fn success(&mut self, user: BareJid, additional: Option<Vec<u8>>) -> Vec<Action> {
        self.user = Some(user.clone());
        self.state = State::ExpectHeader;
        let body = match additional {
            Some(d) => format!("<success xmlns='{NS_SASL}'>{}</success>", B64.encode(d)),
            None => format!("<success xmlns='{NS_SASL}'/>"),
        };
        vec![
            Action::Send(body),
            Action::Authenticated(user),
            Action::RestartStream,
        ]
    }

    fn on_bound(&mut self, r: Result<FullJid, BindFailure>) -> Vec<Action> {
        // The iq id travels with the actor; the machine only needs the outcome.
        match r {
            Ok(jid) => {
                self.state = State::Established;
                vec![Action::Established(jid)]
            }
            Err(_) => {
                self.state = State::Features;
                Vec::new()
            }
        }
    }
}

/// XEP-0198 `<failed/>` with a stanza error condition.
pub fn sm_failed(condition: &str) -> String {
    format!(
        "<failed xmlns='{NS_SM}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    )
}

/// The result of a successful bind.
pub fn bind_result(iq_id: &str, jid: &FullJid) -> String {
    format!(
        "<iq type='result' id='{}'><bind xmlns='{NS_BIND}'><jid>{}</jid></bind></iq>",
        escape_attr(iq_id),
        escape_text(&jid.to_string())
    )
}

/// An IQ error answering `el` during negotiation.
pub fn iq_error(el: &Element, condition: &str, ty: &str) -> String {
    format!(
        "<iq type='error' id='{}'><error type='{ty}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        escape_attr(el.attr("id").unwrap_or_default())
    )
}

pub fn bind_error(iq_id: &str, condition: &str, ty: &str) -> String {
    format!(
        "<iq type='error' id='{}'><error type='{ty}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        escape_attr(iq_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStore;
    use crate::stream::scram::ScramClient;
    use crate::xml::{Framer, FramerEvent};

    const HEADER: &str = "<stream:stream to='example.org' version='1.0' xmlns='jabber:client' \
                          xmlns:stream='http://etherx.jabber.org/streams'>";
    /// Low, to keep the tests fast: the arithmetic is the same.
    const TEST_ITERS: u32 = 64;

    /// The store, with a throttle that refuses everyone when `deny` is set.
    struct Source {
        store: MemStore,
        deny: bool,
    }

    impl CredentialSource for Source {
        fn lookup(&self, user: &BareJid) -> Option<Credentials> {
            self.store.lookup(user)
        }

        fn may_attempt(&self, _user: &BareJid) -> bool {
            !self.deny
        }
    }

    struct Harness {
        neg: C2sNegotiation,
        store: Source,
        framer: Framer,
    }

    impl Harness {
        fn new(require_tls: bool) -> Harness {
            let store = MemStore::new();
            let alice = BareJid::parse("alice@example.org").unwrap();
            store
                .create_account(
                    &alice,
                    &Credentials::from_password("pencil", TEST_ITERS).unwrap(),
                )
                .unwrap();
            Harness {
                neg: C2sNegotiation::new(
                    C2sPolicy {
                        domains: vec!["example.org".into()],
                        require_tls,
                        tls_available: true,
                        scram_iterations: TEST_ITERS,
                    },
                    "sid1".into(),
                ),
                store: Source { store, deny: false },
                framer: Framer::new(NS_CLIENT, 65536),
            }
        }

        /// A stream over TLS, features received: ready for any mechanism.
        fn over_tls() -> Harness {
            let mut h = Harness::new(true);
            h.feed(HEADER);
            h.feed(&format!("<starttls xmlns='{NS_TLS}'/>"));
            h.tls();
            h.feed(HEADER);
            h
        }

        fn plain(&mut self, blob: &[u8]) -> Vec<Action> {
            self.feed(&format!(
                "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{}</auth>",
                B64.encode(blob)
            ))
        }

        /// Feeds client XML and collects the actions of every event it yields.
        fn feed(&mut self, xml: &str) -> Vec<Action> {
            self.framer.feed(xml.as_bytes());
            let mut out = Vec::new();
            while let Ok(Some(ev)) = self.framer.next() {
                let actions = match ev {
                    FramerEvent::StreamOpen(h) => {
                        self.neg.handle(Input::StreamOpen(&h), &self.store)
                    }
                    FramerEvent::Stanza(s) => self.neg.handle(Input::Element(&s), &self.store),
                    FramerEvent::StreamClose => Vec::new(),
                };
                for a in &actions {
                    if *a == Action::RestartStream {
                        self.framer.reset();
                    }
                }
                out.extend(actions);
            }
            out
        }

        fn tls(&mut self) {
            self.framer = Framer::new(NS_CLIENT, 65536);
            assert!(
                self.neg
                    .handle(Input::TlsEstablished, &self.store)
                    .is_empty()
            );
        }
    }

    fn sent(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn failure(actions: &[Action]) -> Option<StreamCondition> {
        actions.iter().find_map(|a| match a {
            Action::Fail(e) => Some(e.condition),
            _ => None,
        })
    }

    fn challenge(actions: &[Action]) -> Vec<u8> {
        let s = sent(actions);
        let start = s.find("'>").expect("challenge body") + 2;
        let end = s.find("</challenge>").expect("challenge end");
        B64.decode(&s[start..end]).unwrap()
    }

    fn scram_login(h: &mut Harness, password: &str) -> Vec<Action> {
        let (mut client, first) = ScramClient::new(ScramHash::Sha256, "alice", password).unwrap();
        let a = h.feed(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
            B64.encode(first)
        ));
        let fin = client.handle_server_first(&challenge(&a)).unwrap();
        h.feed(&format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(fin)
        ))
    }

    #[test]
    fn a_fresh_stream_offers_required_starttls_and_no_mechanisms() {
        let mut h = Harness::new(true);
        let a = h.feed(HEADER);
        let s = sent(&a);
        assert!(s.contains("from='example.org'") && s.contains("id='sid1'"));
        assert!(
            s.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>")
        );
        assert!(
            !s.contains("mechanisms"),
            "no SASL before TLS when TLS is required"
        );
    }

    #[test]
    fn stream_management_is_offered_with_bind_and_resume_replaces_bind() {
        let mut h = Harness::new(true);
        h.feed(HEADER);
        h.feed(&format!("<starttls xmlns='{NS_TLS}'/>"));
        h.tls();
        h.feed(HEADER);
        scram_login(&mut h, "pencil");
        let a = h.feed(HEADER);
        assert!(sent(&a).contains("<sm xmlns='urn:xmpp:sm:3'/>"), "{a:?}");
        let a = h.feed("<enable xmlns='urn:xmpp:sm:3'/>");
        assert!(
            sent(&a).contains("<unexpected-request"),
            "enable before bind: {a:?}"
        );
        let a = h.feed("<resume xmlns='urn:xmpp:sm:3' previd='x' h='zz'/>");
        assert!(sent(&a).contains("<bad-request"), "{a:?}");
        let a = h.feed("<resume xmlns='urn:xmpp:sm:3' previd='x' h='4294967295'/>");
        assert_eq!(
            a,
            vec![Action::Resume {
                previd: "x".into(),
                h: u32::MAX
            }]
        );
    }

    #[test]
    fn starttls_then_scram_sha_256_then_bind_reaches_established() {
        let mut h = Harness::new(true);
        h.feed(HEADER);
        let a = h.feed(&format!("<starttls xmlns='{NS_TLS}'/>"));
        assert_eq!(a.last(), Some(&Action::StartTls));
        assert!(sent(&a).contains("<proceed"));
        h.tls();
        let a = h.feed(HEADER);
        let s = sent(&a);
        assert!(s.contains("SCRAM-SHA-256") && s.contains("SCRAM-SHA-1") && s.contains("PLAIN"));
        assert!(!s.contains("starttls"));
        let a = scram_login(&mut h, "pencil");
        assert!(sent(&a).starts_with("<success"), "{a:?}");
        assert!(a.contains(&Action::Authenticated(
            BareJid::parse("alice@example.org").unwrap()
        )));
        let a = h.feed(HEADER);
        assert!(sent(&a).contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"));
        let a = h.feed("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>");
        assert_eq!(
            a,
            vec![Action::Bind {
                requested: Some("phone".into()),
                iq_id: "b1".into()
            }]
        );
        let jid = FullJid::parse("alice@example.org/phone").unwrap();
        let a = h.neg.handle(Input::Bound(Ok(jid.clone())), &h.store);
        assert_eq!(a, vec![Action::Established(jid)]);
        assert!(h.neg.is_established());
    }

    #[test]
    fn a_wrong_password_fails_and_three_failures_close_the_stream() {
        let mut h = Harness::new(false);
        h.feed(HEADER);
        for attempt in 1..=3 {
            let a = scram_login(&mut h, "wrong");
            assert!(sent(&a).contains("<not-authorized/>"), "{a:?}");
            assert!(a.contains(&Action::AuthFailed(Some(
                BareJid::parse("alice@example.org").unwrap()
            ))));
            assert_eq!(failure(&a).is_some(), attempt == 3, "attempt {attempt}");
        }
    }

    #[test]
    fn plain_is_refused_without_tls() {
        let mut h = Harness::new(false);
        let a = h.feed(HEADER);
        assert!(!sent(&a).contains("PLAIN"));
        let a = h.feed(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{}</auth>",
            B64.encode("\0alice\0pencil")
        ));
        assert!(sent(&a).contains("<encryption-required/>"), "{a:?}");
    }

    #[test]
    fn plain_over_tls_authenticates() {
        let mut h = Harness::new(true);
        h.feed(HEADER);
        h.feed(&format!("<starttls xmlns='{NS_TLS}'/>"));
        h.tls();
        h.feed(HEADER);
        let a = h.feed(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{}</auth>",
            B64.encode("\0alice\0pencil")
        ));
        assert!(sent(&a).starts_with("<success"), "{a:?}");
    }

    #[test]
    fn stanzas_before_authentication_are_not_authorized() {
        let mut h = Harness::new(true);
        h.feed(HEADER);
        let a = h.feed("<message to='bob@example.org'><body>hi</body></message>");
        assert_eq!(failure(&a), Some(StreamCondition::NotAuthorized));
    }

    #[test]
    fn sasl_before_required_tls_is_a_policy_violation() {
        let mut h = Harness::new(true);
        h.feed(HEADER);
        let a = h.feed(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>x</auth>"
        ));
        assert_eq!(failure(&a), Some(StreamCondition::PolicyViolation));
    }

    #[test]
    fn an_unknown_domain_gets_a_header_then_host_unknown() {
        let mut h = Harness::new(true);
        let a = h.feed(&HEADER.replace("example.org", "other.example"));
        assert!(sent(&a).starts_with("<?xml"), "a header precedes the error");
        assert_eq!(failure(&a), Some(StreamCondition::HostUnknown));
    }

    #[test]
    fn a_missing_version_is_unsupported() {
        let mut h = Harness::new(true);
        let a = h.feed(&HEADER.replace(" version='1.0'", ""));
        assert_eq!(failure(&a), Some(StreamCondition::UnsupportedVersion));
    }

    #[test]
    fn an_unknown_mechanism_is_refused_without_closing() {
        let mut h = Harness::new(false);
        h.feed(HEADER);
        let a = h.feed(&format!("<auth xmlns='{NS_SASL}' mechanism='DIGEST-MD5'/>"));
        assert!(sent(&a).contains("<invalid-mechanism/>"));
        assert_eq!(failure(&a), None);
    }

    #[test]
    fn scram_without_initial_response_gets_an_empty_challenge_first() {
        let mut h = Harness::new(false);
        h.feed(HEADER);
        let a = h.feed(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'/>"
        ));
        assert_eq!(sent(&a), format!("<challenge xmlns='{NS_SASL}'/>"));
        let (mut client, first) = ScramClient::new(ScramHash::Sha1, "alice", "pencil").unwrap();
        let a = h.feed(&format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(first)
        ));
        let fin = client.handle_server_first(&challenge(&a)).unwrap();
        let a = h.feed(&format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(fin)
        ));
        assert!(sent(&a).starts_with("<success"), "{a:?}");
    }

    #[test]
    fn an_unknown_user_fails_like_a_wrong_password() {
        let mut h = Harness::new(false);
        h.feed(HEADER);
        let (mut client, first) = ScramClient::new(ScramHash::Sha256, "mallory", "x").unwrap();
        let a = h.feed(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
            B64.encode(first)
        ));
        let fin = client.handle_server_first(&challenge(&a)).unwrap();
        let a = h.feed(&format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(fin)
        ));
        assert!(sent(&a).contains("<not-authorized/>"));
    }
    fn alice() -> BareJid {
        BareJid::parse("alice@example.org").unwrap()
    }

    #[test]
    fn plain_for_an_unknown_user_costs_the_same_derivation_and_answers_the_same() {
        use crate::stream::scram::derivations;
        let mut h = Harness::over_tls();
        derivations::take();
        let known = h.plain(b"\0alice\0wrong");
        let known_cost = derivations::take();
        let unknown = h.plain(b"\0mallory\0wrong");
        let unknown_cost = derivations::take();
        assert_eq!(known_cost, (1, u64::from(TEST_ITERS)));
        assert_eq!(unknown_cost, known_cost);
        assert_eq!(sent(&known), sent(&unknown));
        assert!(sent(&unknown).contains("<not-authorized/>"), "{unknown:?}");
    }

    #[test]
    fn plain_with_extra_nuls_an_empty_password_or_another_authzid_is_refused() {
        for (blob, condition) in [
            (&b"\0a\0b\0c"[..], "malformed-request"),
            (b"\0alice\0pencil\0", "malformed-request"),
            (b"alice", "malformed-request"),
            (b"\0alice\0", "not-authorized"),
            (b"bob@example.org\0alice\0pencil", "invalid-authzid"),
            (b"\0\0pencil", "not-authorized"),
            (b"\0alice\0\xff", "malformed-request"),
        ] {
            let mut h = Harness::over_tls();
            let a = h.plain(blob);
            assert!(
                sent(&a).contains(&format!("<{condition}/>")),
                "{:?}: {a:?}",
                String::from_utf8_lossy(blob)
            );
            assert_eq!(failure(&a), None, "one failure does not close the stream");
            // The same stream still signs in properly afterwards.
            let a = h.plain(b"\0alice\0pencil");
            assert!(sent(&a).starts_with("<success"), "{a:?}");
        }
    }

    #[test]
    fn a_throttled_account_gets_temporary_auth_failure_without_a_password_check() {
        use crate::stream::scram::derivations;
        let mut h = Harness::over_tls();
        h.store.deny = true;
        derivations::take();
        let a = h.plain(b"\0alice\0pencil");
        assert!(sent(&a).contains("<temporary-auth-failure/>"), "{a:?}");
        assert!(a.contains(&Action::AuthThrottled(alice())));
        assert_eq!(derivations::take(), (0, 0), "no password was checked");
        let (_, first) = ScramClient::new(ScramHash::Sha256, "alice", "pencil").unwrap();
        let a = h.feed(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
            B64.encode(first)
        ));
        assert_eq!(
            sent(&a),
            format!("<failure xmlns='{NS_SASL}'><temporary-auth-failure/></failure>"),
            "no salt is revealed"
        );
        h.store.deny = false;
        let a = h.plain(b"\0alice\0pencil");
        assert!(sent(&a).starts_with("<success"), "{a:?}");
    }

    #[test]
    fn a_failing_random_generator_refuses_scram_with_temporary_auth_failure() {
        let mut h = Harness::new(false);
        h.feed(HEADER);
        let (_, first) = ScramClient::new(ScramHash::Sha256, "alice", "pencil").unwrap();
        let a = crate::random::failing::with(|| {
            h.feed(&format!(
                "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
                B64.encode(first)
            ))
        });
        assert!(sent(&a).contains("<temporary-auth-failure/>"), "{a:?}");
        assert!(!sent(&a).contains("challenge"));
    }

    #[test]
    fn scram_usernames_with_bad_escapes_or_huge_nonces_are_malformed_requests() {
        for first in [
            "n,,n=al=2Dice,r=abcdef".to_owned(),
            "n,,n=alice=,r=abcdef".to_owned(),
            format!("n,,n=alice,r={}", "n".repeat(8 * 1024)),
        ] {
            let mut h = Harness::new(false);
            h.feed(HEADER);
            let a = h.feed(&format!(
                "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{}</auth>",
                B64.encode(&first)
            ));
            assert!(
                sent(&a).contains("<malformed-request/>"),
                "{first:.40}: {a:?}"
            );
            assert!(a.contains(&Action::AuthFailed(None)));
        }
    }
}
