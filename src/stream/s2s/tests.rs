//! The s2s negotiation machines driven against each other and against
//! scripted peers, in memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::*;
use crate::stream::dialback::{self, MAX_KEY_LEN};
use crate::xml::{Framer, FramerEvent};

/// The initiating (and originating) domain.
const A: &str = "a.example";
/// The receiving domain.
const B: &str = "b.example";
const SECRET_A: &[u8] = b"dialback secret of a.example";
const SECRET_B: &[u8] = b"dialback secret of b.example";

struct Cert(Vec<&'static str>);

impl PeerIdentity for Cert {
    fn is_valid_for(&self, domain: &str) -> bool {
        self.0.contains(&domain)
    }
}

fn cert(domains: &[&'static str]) -> Option<Arc<dyn PeerIdentity>> {
    Some(Arc::new(Cert(domains.to_vec())))
}

/// Valid only the first time it is asked: the receiving side offers
/// EXTERNAL, then refuses it (a certificate that expired in between).
struct ValidOnce(AtomicUsize);

impl PeerIdentity for ValidOnce {
    fn is_valid_for(&self, _: &str) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst) == 0
    }
}

fn policy(tls: Negotiate, sasl: Negotiate, dialback: bool) -> PeerPolicy {
    PeerPolicy {
        tls,
        sasl,
        dialback,
    }
}

#[derive(Clone)]
struct Ctx {
    locals: Vec<String>,
    partners: HashMap<String, PeerPolicy>,
    /// The policy for unlisted domains; `None` = closed federation.
    unlisted: Option<PeerPolicy>,
    secret: Vec<u8>,
}

impl Ctx {
    fn new(locals: &[&str], secret: &[u8]) -> Ctx {
        Ctx {
            locals: locals.iter().map(|s| s.to_string()).collect(),
            partners: HashMap::new(),
            unlisted: Some(PeerPolicy::open_federation()),
            secret: secret.to_vec(),
        }
    }

    fn partner(mut self, domain: &str, p: PeerPolicy) -> Ctx {
        self.partners.insert(domain.into(), p);
        self
    }

    fn closed(mut self) -> Ctx {
        self.unlisted = None;
        self
    }
}

impl InboundContext for Ctx {
    fn is_local(&self, domain: &str) -> bool {
        self.locals.iter().any(|l| l == domain)
    }
    fn policy(&self, remote: &str) -> Option<PeerPolicy> {
        self.partners
            .get(remote)
            .cloned()
            .or_else(|| self.unlisted.clone())
    }
    fn dialback_secret(&self) -> &[u8] {
        &self.secret
    }
}

fn framer() -> Framer {
    Framer::new(NS_SERVER, 65536)
}

/// An outbound machine driven against an inbound one through two
/// framers, with TLS simulated and db:verify answered by a real third
/// machine pair (a Verify-mode outbound against the Authoritative
/// Server's inbound).
struct Pair {
    out: OutboundNegotiation,
    inb: InboundNegotiation,
    ctx: Ctx,
    /// Bytes from the inbound side, read by the outbound side.
    to_out: Framer,
    /// Bytes from the outbound side, read by the inbound side.
    to_in: Framer,
    /// The certificate the initiating server presents.
    out_cert: Option<Arc<dyn PeerIdentity>>,
    /// The certificate the receiving server presents.
    in_cert: Option<Arc<dyn PeerIdentity>>,
    out_tls: bool,
    in_tls: bool,
    /// The Authoritative Server for the originating domain, if reachable.
    authority: Option<Ctx>,
    /// The receiving side's policy for the originating domain, used by
    /// its verify connections.
    verify_policy: PeerPolicy,
    verifies: Vec<InAction>,
    out_log: Vec<OutAction>,
    in_log: Vec<InAction>,
}

impl Pair {
    fn new(out: OutboundNegotiation, ctx: Ctx, tls_available: bool) -> Pair {
        Pair {
            out,
            inb: InboundNegotiation::new("sid-b".into(), tls_available),
            ctx,
            to_out: framer(),
            to_in: framer(),
            out_cert: cert(&[A]),
            in_cert: cert(&[B]),
            out_tls: false,
            in_tls: false,
            authority: Some(Ctx::new(&[A], SECRET_A)),
            verify_policy: PeerPolicy::open_federation(),
            verifies: Vec::new(),
            out_log: Vec::new(),
            in_log: Vec::new(),
        }
    }

    /// The usual case: a.example → b.example with `p` on our side.
    fn authenticate(p: PeerPolicy, can_external: bool, ctx: Ctx) -> Pair {
        Pair::new(
            OutboundNegotiation::new(
                A.into(),
                B.into(),
                p,
                Arc::from(SECRET_A),
                can_external,
                OutMode::Authenticate,
            ),
            ctx,
            true,
        )
    }

    fn run(mut self) -> Pair {
        let a = self.out.start();
        self.apply_out(a);
        self.pump();
        self
    }

    fn apply_out(&mut self, actions: Vec<OutAction>) {
        for a in &actions {
            match a {
                OutAction::Send(s) => self.to_in.feed(s.as_bytes()),
                OutAction::StartTls => self.out_tls = true,
                OutAction::RestartStream => self.to_out.reset(),
                OutAction::Fail(f) => {
                    if let Some(e) = &f.send {
                        self.to_in.feed(e.to_xml().as_bytes());
                    }
                    self.to_in.feed(b"</stream:stream>");
                }
                OutAction::Ready(_) | OutAction::Verified(_) => {}
            }
        }
        self.out_log.extend(actions);
    }

    fn apply_in(&mut self, actions: Vec<InAction>) {
        for a in &actions {
            match a {
                InAction::Send(s) => self.to_out.feed(s.as_bytes()),
                InAction::StartTls => self.in_tls = true,
                InAction::RestartStream => self.to_in.reset(),
                InAction::Fail(e) => {
                    self.to_out.feed(e.to_xml().as_bytes());
                    self.to_out.feed(b"</stream:stream>");
                }
                InAction::PeerStreamError(_) => self.to_out.feed(b"</stream:stream>"),
                InAction::VerifyDialback { .. } => self.verifies.push(a.clone()),
                InAction::Authenticated { .. } => {}
            }
        }
        self.in_log.extend(actions);
    }

    fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            while let Ok(Some(ev)) = self.to_in.next() {
                moved = true;
                let a = match &ev {
                    FramerEvent::StreamOpen(h) => {
                        self.inb.handle(InInput::StreamOpen(h), &self.ctx)
                    }
                    FramerEvent::Stanza(s) => self.inb.handle(InInput::Element(s), &self.ctx),
                    FramerEvent::StreamClose => Vec::new(),
                };
                self.apply_in(a);
            }
            while let Ok(Some(ev)) = self.to_out.next() {
                moved = true;
                let a = match &ev {
                    FramerEvent::StreamOpen(h) => self.out.handle(OutInput::StreamOpen(h)),
                    FramerEvent::Stanza(s) => self.out.handle(OutInput::Element(s)),
                    FramerEvent::StreamClose => self.out.handle(OutInput::StreamClosed),
                };
                self.apply_out(a);
            }
            if self.out_tls && self.in_tls {
                moved = true;
                (self.out_tls, self.in_tls) = (false, false);
                assert_eq!(
                    (self.to_in.buffered(), self.to_out.buffered()),
                    (0, 0),
                    "nothing may be buffered when TLS starts"
                );
                (self.to_in, self.to_out) = (framer(), framer());
                let peer = self.out_cert.clone();
                let a = self.inb.handle(InInput::TlsEstablished { peer }, &self.ctx);
                self.apply_in(a);
                let peer = self.in_cert.clone();
                let a = self.out.handle(OutInput::TlsEstablished { peer });
                self.apply_out(a);
            }
            for v in std::mem::take(&mut self.verifies) {
                moved = true;
                let InAction::VerifyDialback {
                    originating,
                    receiving,
                    stream_id,
                    key,
                } = v
                else {
                    continue;
                };
                let answer = self.authority.clone().and_then(|auth| {
                    let p = self.verify_policy.clone();
                    ask_authority(auth, p, &receiving, &originating, &stream_id, &key)
                });
                let input = match answer {
                    Some(valid) => InInput::DialbackChecked {
                        originating,
                        receiving,
                        valid,
                    },
                    None => InInput::DialbackFailed {
                        originating,
                        receiving,
                        condition: StanzaCondition::RemoteServerNotFound,
                    },
                };
                let a = self.inb.handle(input, &self.ctx);
                self.apply_in(a);
            }
            if !moved {
                return;
            }
        }
        panic!("negotiation did not settle");
    }

    fn ready(&self) -> Option<AuthMethod> {
        self.out_log.iter().find_map(|a| match a {
            OutAction::Ready(m) => Some(*m),
            _ => None,
        })
    }

    fn out_failure(&self) -> Option<&S2sFailure> {
        self.out_log.iter().find_map(|a| match a {
            OutAction::Fail(f) => Some(f),
            _ => None,
        })
    }

    fn inbound_auth(&self) -> Vec<(String, String, AuthMethod)> {
        auths(&self.in_log)
    }

    fn in_failure(&self) -> Option<StreamCondition> {
        in_failure(&self.in_log)
    }

    fn sent_by_inbound(&self) -> String {
        in_sent(&self.in_log)
    }
}

/// Runs a Verify-mode outbound from `receiving` against the
/// Authoritative Server (`auth`) of `originating`.
fn ask_authority(
    auth: Ctx,
    policy: PeerPolicy,
    receiving: &str,
    originating: &str,
    stream_id: &str,
    key: &str,
) -> Option<bool> {
    let out = OutboundNegotiation::new(
        receiving.into(),
        originating.into(),
        policy,
        Arc::from(SECRET_B),
        false,
        OutMode::Verify {
            receiving: receiving.into(),
            originating: originating.into(),
            stream_id: stream_id.into(),
            key: key.into(),
        },
    );
    let mut p = Pair::new(out, auth, true);
    p.authority = None;
    let p = p.run();
    assert!(
        p.inbound_auth().is_empty(),
        "a verify connection authenticates nothing"
    );
    p.out_log.iter().find_map(|a| match a {
        OutAction::Verified(v) => Some(*v),
        _ => None,
    })
}

fn auths(log: &[InAction]) -> Vec<(String, String, AuthMethod)> {
    log.iter()
        .filter_map(|a| match a {
            InAction::Authenticated {
                remote,
                local,
                method,
            } => Some((remote.clone(), local.clone(), *method)),
            _ => None,
        })
        .collect()
}

fn in_failure(log: &[InAction]) -> Option<StreamCondition> {
    log.iter().find_map(|a| match a {
        InAction::Fail(e) => Some(e.condition),
        _ => None,
    })
}

fn in_sent(log: &[InAction]) -> String {
    log.iter()
        .filter_map(|a| match a {
            InAction::Send(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

fn out_sent(log: &[OutAction]) -> String {
    log.iter()
        .filter_map(|a| match a {
            OutAction::Send(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

// -- outbound against inbound ------------------------------------------

#[test]
fn starttls_then_sasl_external_authenticates_both_sides() {
    let p = Pair::authenticate(
        PeerPolicy::open_federation(),
        true,
        Ctx::new(&[B], SECRET_B),
    )
    .run();
    assert_eq!(p.ready(), Some(AuthMethod::SaslExternal), "{:?}", p.out_log);
    assert_eq!(
        p.inbound_auth(),
        vec![(A.into(), B.into(), AuthMethod::SaslExternal)]
    );
    assert!(p.out.is_tls() && p.inb.is_tls());
    assert!(p.out.remote_certificate_valid());
    assert!(p.inb.is_authenticated_for(A, B));
    assert!(!p.sent_by_inbound().contains("db:result"));
}

#[test]
fn starttls_then_dialback_when_we_hold_no_certificate_asks_the_authoritative_server() {
    let p = Pair::authenticate(
        PeerPolicy::open_federation(),
        false,
        Ctx::new(&[B], SECRET_B),
    )
    .run();
    assert_eq!(p.ready(), Some(AuthMethod::DialbackTls), "{:?}", p.out_log);
    assert_eq!(
        p.inbound_auth(),
        vec![(A.into(), B.into(), AuthMethod::DialbackTls)]
    );
    assert!(
        p.sent_by_inbound()
            .contains("<db:result from='b.example' to='a.example' type='valid'/>")
    );
}

#[test]
fn a_peer_certificate_not_valid_for_its_domain_gets_no_external_offer_and_uses_dialback() {
    let mut p = Pair::authenticate(
        PeerPolicy::open_federation(),
        true,
        Ctx::new(&[B], SECRET_B),
    );
    p.out_cert = cert(&["someone-else.example"]);
    let p = p.run();
    assert!(!p.sent_by_inbound().contains("EXTERNAL"));
    assert_eq!(p.ready(), Some(AuthMethod::DialbackTls));
}

#[test]
fn plain_dialback_works_when_both_sides_refuse_tls() {
    let gtalk = policy(Negotiate::NotSupported, Negotiate::NotSupported, true);
    let ctx = Ctx::new(&[B], SECRET_B).partner(A, gtalk.clone());
    let mut p = Pair::authenticate(gtalk.clone(), true, ctx);
    // The Authoritative Server also treats b.example as a plain
    // partner, and b.example's verify connection follows its policy.
    p.authority = Some(Ctx::new(&[A], SECRET_A).partner(B, gtalk.clone()));
    p.verify_policy = gtalk;
    let p = p.run();
    assert!(!p.sent_by_inbound().contains("starttls"));
    assert_eq!(
        p.ready(),
        Some(AuthMethod::DialbackPlain),
        "{:?}",
        p.out_log
    );
    assert_eq!(
        p.inbound_auth(),
        vec![(A.into(), B.into(), AuthMethod::DialbackPlain)]
    );
    assert!(!p.out.is_tls() && !p.inb.is_tls());
}

#[test]
fn a_refused_external_falls_back_to_dialback_over_tls() {
    let mut p = Pair::authenticate(
        PeerPolicy::open_federation(),
        true,
        Ctx::new(&[B], SECRET_B),
    );
    p.out_cert = Some(Arc::new(ValidOnce(AtomicUsize::new(0))));
    let p = p.run();
    assert!(
        p.sent_by_inbound().contains(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
        )
    );
    assert_eq!(p.ready(), Some(AuthMethod::DialbackTls), "{:?}", p.out_log);
    assert_eq!(
        p.inbound_auth(),
        vec![(A.into(), B.into(), AuthMethod::DialbackTls)]
    );
}

#[test]
fn a_refused_external_with_sasl_required_fails_without_dialback() {
    let mut p = Pair::authenticate(
        policy(Negotiate::Required, Negotiate::Required, true),
        true,
        Ctx::new(&[B], SECRET_B),
    );
    p.out_cert = Some(Arc::new(ValidOnce(AtomicUsize::new(0))));
    let p = p.run();
    let f = p.out_failure().expect("fails");
    assert_eq!(f.reason, FailReason::SaslExternalRefused);
    assert!(!p.sent_by_inbound().contains("db:result"));
    assert!(p.inbound_auth().is_empty());
}

#[test]
fn required_tls_that_is_not_offered_fails_with_a_policy_violation() {
    let mut p = Pair::authenticate(
        PeerPolicy::open_federation(),
        true,
        Ctx::new(&[B], SECRET_B),
    );
    p.inb = InboundNegotiation::new("sid-b".into(), false);
    let p = p.run();
    let f = p.out_failure().expect("fails");
    assert_eq!(f.reason, FailReason::TlsRequiredButNotOffered);
    assert_eq!(
        f.send.as_ref().map(|e| e.condition),
        Some(StreamCondition::PolicyViolation)
    );
    assert!(f.timeout_class);
    assert_eq!(f.bounce(), StanzaCondition::RemoteServerTimeout);
    assert!(f.to_string().contains("TLS is required"));
    assert!(p.in_log.iter().any(|a| matches!(
        a,
        InAction::PeerStreamError(e) if e.condition == StreamCondition::PolicyViolation
    )));
    assert!(p.inbound_auth().is_empty());
}

#[test]
fn required_sasl_with_a_peer_certificate_that_does_not_verify_fails() {
    let mut p = Pair::authenticate(
        policy(Negotiate::Required, Negotiate::Required, false),
        true,
        Ctx::new(&[B], SECRET_B),
    );
    p.out_cert = cert(&[]);
    let p = p.run();
    let f = p.out_failure().expect("fails");
    assert_eq!(f.reason, FailReason::SaslRequiredButNotOffered);
    assert_eq!(
        f.send.as_ref().map(|e| e.condition),
        Some(StreamCondition::PolicyViolation)
    );
    assert!(p.inbound_auth().is_empty());
}

#[test]
fn a_wrong_dialback_key_is_answered_invalid_and_never_authenticates() {
    let mut p = Pair::new(
        OutboundNegotiation::new(
            A.into(),
            B.into(),
            PeerPolicy::open_federation(),
            Arc::from(&b"a guessed secret"[..]),
            false,
            OutMode::Authenticate,
        ),
        Ctx::new(&[B], SECRET_B),
        true,
    );
    p = p.run();
    assert!(
        p.sent_by_inbound()
            .contains("<db:result from='b.example' to='a.example' type='invalid'/>")
    );
    assert_eq!(p.in_failure(), Some(StreamCondition::NotAuthorized));
    assert!(p.inbound_auth().is_empty());
    assert!(p.inb.authenticated().is_empty());
    let f = p.out_failure().expect("fails");
    assert_eq!(f.reason, FailReason::DialbackRefused);
    assert_eq!(f.bounce(), StanzaCondition::InternalServerError);
    assert_eq!(p.ready(), None);
}

#[test]
fn an_unreachable_authoritative_server_is_a_non_fatal_dialback_error() {
    let mut p = Pair::authenticate(
        PeerPolicy::open_federation(),
        false,
        Ctx::new(&[B], SECRET_B),
    );
    p.authority = None;
    let p = p.run();
    assert!(p.sent_by_inbound().contains(
        "type='error'><error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
    ));
    assert_eq!(p.in_failure(), None, "a dialback error keeps the stream");
    let f = p.out_failure().expect("fails");
    assert_eq!(
        f.reason,
        FailReason::DialbackError("remote-server-not-found".into())
    );
    assert_eq!(f.bounce(), StanzaCondition::RemoteServerTimeout);
}

#[test]
fn verify_mode_asks_the_authoritative_server_end_to_end() {
    let good = dialback::dialback_key(SECRET_A, B, A, "sid-b");
    let auth = Ctx::new(&[A], SECRET_A);
    let open = PeerPolicy::open_federation;
    assert_eq!(
        ask_authority(auth.clone(), open(), B, A, "sid-b", &good),
        Some(true)
    );
    assert_eq!(
        ask_authority(auth.clone(), open(), B, A, "sid-c", &good),
        Some(false)
    );
    assert_eq!(
        ask_authority(auth, open(), B, A, "sid-b", "00"),
        Some(false)
    );
}

#[test]
fn verify_mode_goes_through_required_starttls_first() {
    let key = dialback::dialback_key(SECRET_A, B, A, "s1");
    let out = OutboundNegotiation::new(
        B.into(),
        A.into(),
        PeerPolicy::open_federation(),
        Arc::from(SECRET_B),
        true,
        OutMode::Verify {
            receiving: B.into(),
            originating: A.into(),
            stream_id: "s1".into(),
            key,
        },
    );
    let mut p = Pair::new(out, Ctx::new(&[A], SECRET_A), true);
    p.out_cert = cert(&[B]);
    let p = p.run();
    assert!(p.out.is_tls(), "the verify stream did STARTTLS");
    assert!(p.out_log.contains(&OutAction::Verified(true)));
    assert!(
        !out_sent(&p.out_log).contains("<auth"),
        "no SASL on a verify stream"
    );
}

// -- inbound, fed by hand ----------------------------------------------

const HEADER_FROM_A: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
     xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
     from='a.example' to='b.example' version='1.0'>";

struct Inb {
    neg: InboundNegotiation,
    ctx: Ctx,
    framer: Framer,
}

impl Inb {
    fn new(ctx: Ctx) -> Inb {
        Inb {
            neg: InboundNegotiation::new("sid".into(), true),
            ctx,
            framer: framer(),
        }
    }

    fn feed(&mut self, xml: &str) -> Vec<InAction> {
        self.framer.feed(xml.as_bytes());
        let mut out = Vec::new();
        while let Ok(Some(ev)) = self.framer.next() {
            let a = match &ev {
                FramerEvent::StreamOpen(h) => self.neg.handle(InInput::StreamOpen(h), &self.ctx),
                FramerEvent::Stanza(s) => self.neg.handle(InInput::Element(s), &self.ctx),
                FramerEvent::StreamClose => Vec::new(),
            };
            if a.contains(&InAction::RestartStream) {
                self.framer.reset();
            }
            out.extend(a);
        }
        out
    }

    fn input(&mut self, i: InInput<'_>) -> Vec<InAction> {
        self.neg.handle(i, &self.ctx)
    }

    fn tls(&mut self, peer: Option<Arc<dyn PeerIdentity>>) {
        self.framer = framer();
        assert!(self.input(InInput::TlsEstablished { peer }).is_empty());
    }

    /// Header, STARTTLS, TLS with `peer`, header again.
    fn over_tls(&mut self, peer: Option<Arc<dyn PeerIdentity>>) -> Vec<InAction> {
        self.feed(HEADER_FROM_A);
        let a = self.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(a.last(), Some(&InAction::StartTls));
        self.tls(peer);
        self.feed(HEADER_FROM_A)
    }

    /// db:result for `from` → `to`, answered by the "authoritative
    /// server" with `valid`.
    fn dialback(&mut self, from: &str, to: &str, valid: bool) -> Vec<InAction> {
        let a = self.feed(&format!(
            "<db:result from='{from}' to='{to}'>0123abcd</db:result>"
        ));
        let Some(InAction::VerifyDialback {
            originating,
            receiving,
            ..
        }) = a.first().cloned()
        else {
            panic!("expected VerifyDialback, got {a:?}");
        };
        self.input(InInput::DialbackChecked {
            originating,
            receiving,
            valid,
        })
    }
}

fn msg(from: &str, to: &str) -> Stanza {
    let mut s = String::from("<message");
    if !from.is_empty() {
        s.push_str(&format!(" from='{from}'"));
    }
    if !to.is_empty() {
        s.push_str(&format!(" to='{to}'"));
    }
    s.push_str("><body>hi</body></message>");
    Stanza::parse(bytes::Bytes::from(s)).unwrap()
}

#[test]
fn features_follow_the_policy_of_the_header_from() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    let s = in_sent(&h.feed(HEADER_FROM_A));
    assert!(s.starts_with("<?xml version='1.0'?><stream:stream xmlns='jabber:server'"));
    assert!(s.contains(
        "xmlns:db='jabber:server:dialback' id='sid' from='b.example' to='a.example' version='1.0'>"
    ));
    assert!(s.contains(
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
    ), "open federation: TLS required, nothing else before it: {s}");

    let plain = policy(Negotiate::NotSupported, Negotiate::NotSupported, true);
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B).partner(A, plain));
    let s = in_sent(&h.feed(HEADER_FROM_A));
    assert!(!s.contains("starttls"));
    assert!(s.contains("<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>"));

    let optional = policy(Negotiate::Optional, Negotiate::Optional, true);
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B).partner(A, optional));
    let s = in_sent(&h.feed(HEADER_FROM_A));
    assert!(s.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'></starttls>"));
    assert!(s.contains("<dialback"));
    assert!(!s.contains("EXTERNAL"), "no SASL before TLS");
}

#[test]
fn after_tls_external_is_offered_only_for_a_certificate_valid_for_the_peer() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    let s = in_sent(&h.over_tls(cert(&[A])));
    assert!(s.contains(
        "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>"
    ));
    assert!(s.contains("<dialback"));
    assert!(!s.contains("starttls"));

    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    let s = in_sent(&h.over_tls(cert(&["evil.example"])));
    assert!(!s.contains("EXTERNAL") && s.contains("<dialback"));

    let no_sasl = policy(Negotiate::Required, Negotiate::NotSupported, true);
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B).partner(A, no_sasl));
    let s = in_sent(&h.over_tls(cert(&[A])));
    assert!(!s.contains("EXTERNAL"));
}

#[test]
fn each_stream_restart_gets_a_new_id_and_dialback_uses_the_current_one() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    let s = in_sent(&h.over_tls(None));
    assert!(s.contains("id='sid.1'"), "{s}");
    assert_eq!(h.neg.stream_id(), "sid.1");
    let a = h.feed("<db:result from='a.example' to='b.example'>k</db:result>");
    assert_eq!(
        a,
        vec![InAction::VerifyDialback {
            originating: A.into(),
            receiving: B.into(),
            stream_id: "sid.1".into(),
            key: "k".into()
        }]
    );
}

#[test]
fn external_checks_authzid_and_certificate_and_keeps_the_stream_open_on_failure() {
    let auth = |authzid: &str| {
        format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>"
        )
    };
    // Before TLS.
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.feed(HEADER_FROM_A);
    let a = h.feed(&auth("="));
    assert!(in_sent(&a).contains("<encryption-required/>"));
    assert_eq!(in_failure(&a), None);

    // Someone else's authzid, then garbage, then the right one as "=".
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(cert(&[A]));
    let a = h.feed(&auth(&B64.encode("c.example")));
    assert!(in_sent(&a).contains("<invalid-authzid/>"), "{a:?}");
    assert_eq!(in_failure(&a), None);
    let a = h.feed(&auth("!!!"));
    assert!(in_sent(&a).contains("<incorrect-encoding/>"));
    let a = h.feed(&auth("="));
    assert_eq!(
        a,
        vec![
            InAction::Send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".into()),
            InAction::Authenticated {
                remote: A.into(),
                local: B.into(),
                method: AuthMethod::SaslExternal
            },
            InAction::RestartStream,
        ]
    );
    let a = h.feed(HEADER_FROM_A);
    assert!(
        in_sent(&a).ends_with("<stream:features><sm xmlns='urn:xmpp:sm:3'/></stream:features>")
    );

    // The base64 of the domain works too; a certificate for someone else does not.
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(cert(&[A]));
    assert!(in_sent(&h.feed(&auth(&B64.encode(A)))).starts_with("<success"));
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(cert(&["evil.example"]));
    let a = h.feed(&auth("="));
    assert!(in_sent(&a).contains("<not-authorized/>"));
    assert!(auths(&a).is_empty());
    let a = h.feed(&auth("="));
    assert!(in_failure(&a).is_none());
    let a = h.feed(&auth("="));
    assert_eq!(
        in_failure(&a),
        Some(StreamCondition::PolicyViolation),
        "three failures close the stream"
    );
}

#[test]
fn an_unknown_mechanism_is_refused() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(cert(&[A]));
    let a =
        h.feed("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>");
    assert!(in_sent(&a).contains("<invalid-mechanism/>"));
    assert!(auths(&a).is_empty());
}

#[test]
fn two_domains_are_authenticated_on_one_inbound_stream() {
    let mut h = Inb::new(Ctx::new(&[B, "muc.b.example"], SECRET_B));
    h.over_tls(None);
    let a = h.dialback(A, B, true);
    assert!(in_sent(&a).contains("<db:result from='b.example' to='a.example' type='valid'/>"));
    let a = h.dialback("rooms.a.example", "muc.b.example", true);
    assert_eq!(
        auths(&a),
        vec![(
            "rooms.a.example".into(),
            "muc.b.example".into(),
            AuthMethod::DialbackTls
        )]
    );
    assert_eq!(
        h.neg.authenticated(),
        &[
            (A.to_string(), B.to_string()),
            ("rooms.a.example".to_string(), "muc.b.example".to_string())
        ]
    );
    assert!(
        h.neg
            .check_addressing(&msg("x@rooms.a.example/r", "muc.b.example"))
            .is_ok()
    );
    assert_eq!(
        h.neg
            .check_addressing(&msg("x@rooms.a.example/r", "y@b.example")),
        Err(StreamCondition::HostUnknown),
        "each pair is authorised on its own"
    );
    // Asking again for a verified pair is answered at once.
    let a = h.feed("<db:result from='a.example' to='b.example'>whatever</db:result>");
    assert_eq!(
        in_sent(&a),
        "<db:result from='b.example' to='a.example' type='valid'/>"
    );
}

#[test]
fn check_addressing_needs_an_authenticated_from_and_a_to_it_was_authenticated_for() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(None);
    h.dialback(A, B, true);
    let n = &h.neg;
    assert_eq!(
        n.check_addressing(&msg("alice@a.example/phone", "bob@b.example")),
        Ok(())
    );
    assert_eq!(n.check_addressing(&msg("a.example", "b.example")), Ok(()));
    assert_eq!(
        n.check_addressing(&msg("", "bob@b.example")),
        Err(StreamCondition::ImproperAddressing)
    );
    assert_eq!(
        n.check_addressing(&msg("alice@a.example", "")),
        Err(StreamCondition::ImproperAddressing)
    );
    assert_eq!(
        n.check_addressing(&msg("@a.example", "bob@b.example")),
        Err(StreamCondition::ImproperAddressing)
    );
    assert_eq!(
        n.check_addressing(&msg("mallory@c.example", "bob@b.example")),
        Err(StreamCondition::InvalidFrom)
    );
    assert_eq!(
        n.check_addressing(&msg("alice@a.example", "carol@elsewhere.example")),
        Err(StreamCondition::HostUnknown)
    );
    assert_eq!(
        n.check_addressing(&msg("ALICE@A.EXAMPLE", "bob@B.example")),
        Ok(()),
        "domains are compared normalised"
    );
}

#[test]
fn a_refused_domain_in_the_header_gets_a_policy_violation() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B).closed());
    let a = h.feed(HEADER_FROM_A);
    assert!(
        in_sent(&a).starts_with("<?xml"),
        "a header precedes the error"
    );
    assert_eq!(in_failure(&a), Some(StreamCondition::PolicyViolation));
}

#[test]
fn a_db_result_for_a_refused_domain_is_a_dialback_error_and_the_stream_stays_open() {
    let ctx = Ctx::new(&[B], SECRET_B)
        .closed()
        .partner(A, PeerPolicy::open_federation());
    let mut h = Inb::new(ctx);
    h.over_tls(None);
    let a = h.feed("<db:result from='spam.example' to='b.example'>k</db:result>");
    assert_eq!(
        in_sent(&a),
        "<db:result from='b.example' to='spam.example' type='error'><error type='modify'>\
         <policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>"
    );
    assert_eq!(in_failure(&a), None);
    let a = h.dialback(A, B, true);
    assert_eq!(
        auths(&a).len(),
        1,
        "the stream still works for allowed pairs"
    );
}

#[test]
fn a_db_result_to_a_domain_we_do_not_host_is_item_not_found_and_not_fatal() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(None);
    let a = h.feed("<db:result from='a.example' to='c.example'>k</db:result>");
    assert!(in_sent(&a).contains("from='c.example' to='a.example' type='error'"));
    assert!(in_sent(&a).contains("<item-not-found "));
    assert_eq!(in_failure(&a), None);
}

#[test]
fn dialback_without_tls_is_refused_when_the_policy_requires_tls() {
    let ctx = Ctx::new(&[B], SECRET_B).partner(
        "legacy.example",
        policy(Negotiate::NotSupported, Negotiate::NotSupported, true),
    );
    let mut h = Inb::new(ctx);
    h.feed(&HEADER_FROM_A.replace("from='a.example'", "from='legacy.example'"));
    // a.example (open federation: TLS required) piggybacks on a plain stream.
    let a = h.feed("<db:result from='a.example' to='b.example'>k</db:result>");
    assert!(in_sent(&a).contains("<policy-violation "), "{a:?}");
    assert!(
        !a.iter()
            .any(|x| matches!(x, InAction::VerifyDialback { .. }))
    );
    // The plain partner itself may use dialback without TLS.
    let a = h.dialback("legacy.example", B, true);
    assert_eq!(
        auths(&a),
        vec![("legacy.example".into(), B.into(), AuthMethod::DialbackPlain)]
    );
}

#[test]
fn dialback_disabled_or_sasl_required_for_a_domain_is_not_authorized() {
    for strict in [
        policy(Negotiate::Required, Negotiate::Optional, false),
        policy(Negotiate::Required, Negotiate::Required, true),
    ] {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B).partner(A, strict));
        let s = in_sent(&h.over_tls(cert(&["evil.example"])));
        assert!(!s.contains("<dialback"));
        let a = h.feed("<db:result from='a.example' to='b.example'>k</db:result>");
        assert!(in_sent(&a).contains("<not-authorized "));
        assert!(auths(&a).is_empty());
        assert_eq!(in_failure(&a), None);
    }
}

#[test]
fn a_key_that_is_empty_or_huge_is_invalid_without_asking_anyone() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(None);
    let a = h.feed("<db:result from='a.example' to='b.example'/>");
    assert!(in_sent(&a).contains("type='invalid'"));
    assert_eq!(in_failure(&a), Some(StreamCondition::NotAuthorized));

    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(None);
    let huge = "f".repeat(MAX_KEY_LEN + 1);
    let a = h.feed(&format!(
        "<db:result from='a.example' to='b.example'>{huge}</db:result>"
    ));
    assert!(
        !a.iter()
            .any(|x| matches!(x, InAction::VerifyDialback { .. }))
    );
    assert_eq!(in_failure(&a), Some(StreamCondition::NotAuthorized));
}

#[test]
fn unsolicited_dialback_answers_never_authenticate() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(None);
    // A typed db:result on an inbound stream is an answer nobody asked for.
    let a = h.feed("<db:result from='a.example' to='b.example' type='valid'/>");
    assert!(a.is_empty());
    let a = h.feed("<db:verify from='a.example' to='b.example' id='sid.1' type='valid'/>");
    assert!(a.is_empty());
    // A verification result for a pair that was never asked about.
    let a = h.input(InInput::DialbackChecked {
        originating: A.into(),
        receiving: B.into(),
        valid: true,
    });
    assert!(a.is_empty());
    let a = h.input(InInput::DialbackFailed {
        originating: A.into(),
        receiving: B.into(),
        condition: StanzaCondition::RemoteServerTimeout,
    });
    assert!(a.is_empty());
    assert!(h.neg.authenticated().is_empty());
    assert_eq!(
        h.neg
            .check_addressing(&msg("alice@a.example", "bob@b.example")),
        Err(StreamCondition::InvalidFrom)
    );
    let a = h.feed("<message from='alice@a.example' to='bob@b.example'/>");
    assert_eq!(in_failure(&a), Some(StreamCondition::NotAuthorized));
}

#[test]
fn a_verification_result_is_used_once() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(None);
    let a = h.dialback(A, B, true);
    assert_eq!(auths(&a).len(), 1);
    let again = h.input(InInput::DialbackChecked {
        originating: A.into(),
        receiving: B.into(),
        valid: false,
    });
    assert!(again.is_empty(), "a late duplicate changes nothing");
    assert!(h.neg.is_authenticated_for(A, B));
}

#[test]
fn db_verify_is_answered_before_any_authentication_with_our_key() {
    let mut h = Inb::new(Ctx::new(&[A], SECRET_A));
    h.feed(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='b.example' to='a.example' version='1.0'>",
    );
    let key = dialback::dialback_key(SECRET_A, B, A, "417GAF25");
    let a = h.feed(&format!(
        "<db:verify from='b.example' to='a.example' id='417GAF25'>\n {key}\n</db:verify>"
    ));
    assert_eq!(
        in_sent(&a),
        "<db:verify from='a.example' to='b.example' id='417GAF25' type='valid'/>"
    );
    let a = h.feed(&format!(
        "<db:verify from='b.example' to='a.example' id='OTHER'>{key}</db:verify>"
    ));
    assert!(in_sent(&a).ends_with("type='invalid'/>"));
    let a = h.feed(&format!(
        "<db:verify from='c.example' to='a.example' id='417GAF25'>{key}</db:verify>"
    ));
    assert!(
        in_sent(&a).ends_with("type='invalid'/>"),
        "the key binds the receiving domain"
    );
    let a = h.feed("<db:verify from='b.example' to='a.example'>x</db:verify>");
    assert!(
        in_sent(&a).ends_with("type='invalid'/>"),
        "no id, no validity"
    );
    assert!(h.neg.authenticated().is_empty());
    assert_eq!(in_failure(&a), None);
}

#[test]
fn db_verify_for_a_domain_we_do_not_host_is_item_not_found() {
    let mut h = Inb::new(Ctx::new(&[A, B], SECRET_A));
    h.feed(HEADER_FROM_A.replace("a.example", "c.example").as_str());
    let a = h.feed("<db:verify from='c.example' to='z.example' id='i'>k</db:verify>");
    assert_eq!(
        in_sent(&a),
        "<db:verify from='z.example' to='c.example' id='i' type='error'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:verify>"
    );
}

#[test]
fn stanzas_before_authentication_are_not_authorized() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.feed(HEADER_FROM_A);
    let a = h.feed("<message from='alice@a.example' to='bob@b.example'><body>hi</body></message>");
    assert_eq!(in_failure(&a), Some(StreamCondition::NotAuthorized));
    assert!(
        h.feed("<presence/>").is_empty(),
        "closed streams ignore input"
    );
}

#[test]
fn after_authentication_stanzas_and_unknown_elements_are_left_to_the_actor() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(None);
    h.dialback(A, B, true);
    assert!(
        h.feed("<message from='alice@a.example' to='bob@b.example'/>")
            .is_empty()
    );
    assert!(h.feed("<r xmlns='urn:xmpp:sm:3'/>").is_empty());
    let a = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert_eq!(in_failure(&a), Some(StreamCondition::PolicyViolation));
}

#[test]
fn an_unknown_host_gets_a_header_then_host_unknown() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    let a = h.feed(&HEADER_FROM_A.replace("to='b.example'", "to='c.example'"));
    assert!(in_sent(&a).starts_with("<?xml"));
    assert!(
        !in_sent(&a).contains("from='c.example'"),
        "we do not claim to be c.example"
    );
    assert_eq!(in_failure(&a), Some(StreamCondition::HostUnknown));
}

#[test]
fn a_header_without_version_or_with_a_bad_from_is_refused() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    let a = h.feed(&HEADER_FROM_A.replace("to='b.example' version='1.0'", "to='b.example'"));
    assert_eq!(in_failure(&a), Some(StreamCondition::UnsupportedVersion));
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    let a = h.feed(&HEADER_FROM_A.replace("from='a.example'", "from='u@a.example'"));
    assert_eq!(in_failure(&a), Some(StreamCondition::InvalidFrom));
}

#[test]
fn a_restart_that_changes_the_from_is_invalid_from() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.feed(HEADER_FROM_A);
    h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    h.tls(None);
    let a = h.feed(&HEADER_FROM_A.replace("from='a.example'", "from='c.example'"));
    assert_eq!(in_failure(&a), Some(StreamCondition::InvalidFrom));
}

#[test]
fn starttls_twice_or_when_not_offered_is_refused() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.over_tls(None);
    let a = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(in_sent(&a).contains("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
    assert_eq!(in_failure(&a), Some(StreamCondition::PolicyViolation));

    let mut h = Inb {
        neg: InboundNegotiation::new("sid".into(), false),
        ctx: Ctx::new(&[B], SECRET_B),
        framer: framer(),
    };
    h.feed(HEADER_FROM_A);
    let a = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert_eq!(in_failure(&a), Some(StreamCondition::PolicyViolation));
}

#[test]
fn a_peer_stream_error_on_inbound_closes_without_answering() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.feed(HEADER_FROM_A);
    let a = h.feed(
        "<stream:error><connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
    );
    assert_eq!(
        a,
        vec![InAction::PeerStreamError(StreamError::new(
            StreamCondition::ConnectionTimeout
        ))]
    );
}

#[test]
fn an_unexpected_element_before_authentication_is_unsupported() {
    let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
    h.feed(HEADER_FROM_A);
    let a = h.feed("<enable xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(in_failure(&a), Some(StreamCondition::UnsupportedStanzaType));
}

// -- outbound, fed realistic peer XML ----------------------------------

/// Prosody's header declares xmlns:db; its features offer required
/// STARTTLS and dialback with errors.
const PROSODY_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
     xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
     id='7a1e5f0c' from='b.example' to='a.example' version='1.0' xml:lang='en'>";
const PROSODY_FEATURES: &str = "<stream:features>\
     <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>\
     <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
     </stream:features>";
/// ejabberd announces dialback by the namespace on its header only.
const EJABBERD_HEADER: &str = "<?xml version='1.0'?><stream:stream \
     xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server' \
     xmlns:db='jabber:server:dialback' id='14213458966236478513' from='b.example' \
     to='a.example' version='1.0'>";

struct Out {
    neg: OutboundNegotiation,
    framer: Framer,
}

impl Out {
    fn new(p: PeerPolicy, can_external: bool) -> (Out, Vec<OutAction>) {
        let mut neg = OutboundNegotiation::new(
            A.into(),
            B.into(),
            p,
            Arc::from(SECRET_A),
            can_external,
            OutMode::Authenticate,
        );
        let a = neg.start();
        (
            Out {
                neg,
                framer: framer(),
            },
            a,
        )
    }

    fn feed(&mut self, xml: &str) -> Vec<OutAction> {
        self.framer.feed(xml.as_bytes());
        let mut out = Vec::new();
        while let Ok(Some(ev)) = self.framer.next() {
            let a = match &ev {
                FramerEvent::StreamOpen(h) => self.neg.handle(OutInput::StreamOpen(h)),
                FramerEvent::Stanza(s) => self.neg.handle(OutInput::Element(s)),
                FramerEvent::StreamClose => self.neg.handle(OutInput::StreamClosed),
            };
            if a.contains(&OutAction::RestartStream) {
                self.framer.reset();
            }
            out.extend(a);
        }
        out
    }

    fn tls(&mut self, peer: Option<Arc<dyn PeerIdentity>>) -> Vec<OutAction> {
        self.framer = framer();
        self.neg.handle(OutInput::TlsEstablished { peer })
    }
}

fn out_failure(a: &[OutAction]) -> Option<S2sFailure> {
    a.iter().find_map(|x| match x {
        OutAction::Fail(f) => Some(f.clone()),
        _ => None,
    })
}

#[test]
fn direct_tls_skips_starttls_and_goes_straight_to_dialback() {
    let mut neg = OutboundNegotiation::new(
        A.into(),
        B.into(),
        PeerPolicy::open_federation(),
        Arc::from(SECRET_A),
        false,
        OutMode::Authenticate,
    );
    // XEP-0368: the handshake ran before the stream was opened.
    assert!(
        neg.handle(OutInput::TlsEstablished { peer: None })
            .is_empty()
    );
    assert!(neg.is_tls());
    let mut out = Out {
        neg,
        framer: framer(),
    };
    assert!(
        matches!(out.neg.start().as_slice(), [OutAction::Send(h)] if h.contains("to='b.example'"))
    );
    // Features without STARTTLS are fine: TLS is already up.
    let a = out.feed(&format!(
        "{PROSODY_HEADER}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>"
    ));
    assert!(
        a.iter()
            .any(|x| matches!(x, OutAction::Send(s) if s.starts_with("<db:result"))),
        "{a:?}"
    );
    assert!(out_failure(&a).is_none());
}

#[test]
fn the_opening_header_declares_dialback_and_names_both_domains() {
    let (_, a) = Out::new(PeerPolicy::open_federation(), true);
    assert_eq!(
        a,
        vec![OutAction::Send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns:db='jabber:server:dialback' from='a.example' to='b.example' version='1.0'>"
                .into()
        )]
    );
}

#[test]
fn prosody_features_lead_to_starttls_then_dialback_with_the_new_stream_id() {
    let (mut o, _) = Out::new(PeerPolicy::open_federation(), false);
    assert!(o.feed(PROSODY_HEADER).is_empty());
    assert_eq!(o.neg.stream_id(), Some("7a1e5f0c"));
    let a = o.feed(PROSODY_FEATURES);
    assert_eq!(
        a,
        vec![OutAction::Send(
            "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".into()
        )]
    );
    assert_eq!(
        o.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        vec![OutAction::StartTls]
    );
    let a = o.tls(cert(&["not-b.example"]));
    assert_eq!(a[0], OutAction::RestartStream);
    assert!(matches!(&a[1], OutAction::Send(h) if h.contains("from='a.example' to='b.example'")));
    assert!(!o.neg.remote_certificate_valid());
    o.feed(&PROSODY_HEADER.replace("7a1e5f0c", "after-tls"));
    let a = o.feed(
        "<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>",
    );
    let key = dialback::dialback_key(SECRET_A, B, A, "after-tls");
    assert_eq!(
        out_sent(&a),
        format!("<db:result from='a.example' to='b.example'>{key}</db:result>")
    );
    let a = o.feed("<db:result from='b.example' to='a.example' type='valid'/>");
    assert_eq!(a, vec![OutAction::Ready(AuthMethod::DialbackTls)]);
    assert!(o.neg.is_ready());
}

#[test]
fn prosody_required_starttls_against_a_tls_not_supported_partner_fails_clearly() {
    let gtalk = policy(Negotiate::NotSupported, Negotiate::NotSupported, true);
    let (mut o, _) = Out::new(gtalk, false);
    o.feed(PROSODY_HEADER);
    let f = out_failure(&o.feed(PROSODY_FEATURES)).expect("fails");
    assert_eq!(
        f.reason,
        FailReason::TlsOfferedButNotSupportedAndRequiredByPeer
    );
    assert_eq!(
        f.send.map(|e| e.condition),
        Some(StreamCondition::UnsupportedFeature)
    );
}

#[test]
fn optional_starttls_is_skipped_for_a_tls_not_supported_partner() {
    let gtalk = policy(Negotiate::NotSupported, Negotiate::NotSupported, true);
    let (mut o, _) = Out::new(gtalk, true);
    o.feed(PROSODY_HEADER);
    let a = o.feed(
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
         <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>",
    );
    assert!(out_sent(&a).starts_with("<db:result"), "{a:?}");
    let a = o.feed("<db:result from='b.example' to='a.example' type='valid'/>");
    assert_eq!(a, vec![OutAction::Ready(AuthMethod::DialbackPlain)]);
}

#[test]
fn an_ejabberd_stream_that_only_declares_the_db_namespace_still_gets_dialback() {
    let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
    o.feed(EJABBERD_HEADER);
    o.feed(
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
    );
    o.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    o.tls(cert(&[B]));
    assert!(o.neg.remote_certificate_valid());
    o.feed(EJABBERD_HEADER);
    // No EXTERNAL (ejabberd did not like our certificate), no dialback feature.
    let a = o.feed("<stream:features/>");
    assert!(out_sent(&a).starts_with("<db:result from='a.example' to='b.example'>"));
}

#[test]
fn external_is_sent_with_our_domain_as_authzid_and_success_restarts() {
    let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
    o.feed(EJABBERD_HEADER);
    o.feed("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>");
    o.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    o.tls(cert(&[B]));
    o.feed(EJABBERD_HEADER);
    let a = o.feed(
        "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
         <mechanism>EXTERNAL</mechanism></mechanisms></stream:features>",
    );
    assert_eq!(
        out_sent(&a),
        format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{}</auth>",
            B64.encode(A)
        )
    );
    let a = o.feed("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    assert_eq!(a[0], OutAction::RestartStream);
    o.feed(EJABBERD_HEADER);
    let a = o.feed("<stream:features><bidi xmlns='urn:xmpp:features:bidi'/></stream:features>");
    assert_eq!(a, vec![OutAction::Ready(AuthMethod::SaslExternal)]);
}

#[test]
fn a_sasl_failure_without_dialback_allowed_is_sasl_external_refused() {
    let (mut o, _) = Out::new(
        policy(Negotiate::Required, Negotiate::Optional, false),
        true,
    );
    o.feed(PROSODY_HEADER);
    o.feed(PROSODY_FEATURES);
    o.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    o.tls(cert(&[B]));
    o.feed(PROSODY_HEADER);
    o.feed(
        "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
         <mechanism>EXTERNAL</mechanism></mechanisms></stream:features>",
    );
    let a = o.feed("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
    assert_eq!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::SaslExternalRefused)
    );
}

#[test]
fn no_usable_method_and_missing_dialback_are_told_apart() {
    let (mut o, _) = Out::new(
        policy(Negotiate::Optional, Negotiate::Optional, false),
        false,
    );
    o.feed(&PROSODY_HEADER.replace(" xmlns:db='jabber:server:dialback'", ""));
    let a = o.feed("<stream:features/>");
    assert_eq!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::NoUsableAuthMethod)
    );

    let (mut o, _) = Out::new(
        policy(Negotiate::Optional, Negotiate::Optional, true),
        false,
    );
    o.feed(&PROSODY_HEADER.replace(" xmlns:db='jabber:server:dialback'", ""));
    let a = o.feed("<stream:features/>");
    assert_eq!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::DialbackNotOffered)
    );
}

#[test]
fn a_legacy_peer_without_version_gets_plain_dialback_only_when_policy_allows() {
    let legacy = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
         id='old1'>";
    let plain = policy(Negotiate::Optional, Negotiate::Optional, true);
    let (mut o, _) = Out::new(plain, true);
    let a = o.feed(legacy);
    assert!(out_sent(&a).starts_with("<db:result"), "{a:?}");

    let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
    let a = o.feed(legacy);
    assert_eq!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::TlsRequiredButNotOffered)
    );
}

#[test]
fn a_dialback_answer_for_another_domain_pair_is_ignored() {
    let (mut o, _) = Out::new(
        policy(Negotiate::Optional, Negotiate::Optional, true),
        false,
    );
    o.feed(PROSODY_HEADER);
    o.feed("<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>");
    assert!(
        o.feed("<db:result from='evil.example' to='a.example' type='valid'/>")
            .is_empty()
    );
    assert!(
        o.feed("<db:verify from='b.example' to='a.example' id='x' type='valid'/>")
            .is_empty()
    );
    assert!(!o.neg.is_ready());
    let a = o.feed("<db:result from='B.example' to='a.example' type='invalid'/>");
    assert_eq!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::DialbackRefused)
    );
}

#[test]
fn failures_before_and_after_the_peer_header_bounce_differently() {
    let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
    let f = out_failure(&o.feed("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'></stream:stream>"));
    let f = f.expect("closed");
    assert!(matches!(f.reason, FailReason::Protocol(_)));
    assert!(f.timeout_class, "the peer did open a stream");

    let mut neg = OutboundNegotiation::new(
        A.into(),
        B.into(),
        PeerPolicy::open_federation(),
        Arc::from(SECRET_A),
        true,
        OutMode::Authenticate,
    );
    neg.start();
    let f = out_failure(&neg.handle(OutInput::StreamClosed)).expect("closed");
    assert!(!f.timeout_class);
    assert_eq!(f.bounce(), StanzaCondition::RemoteServerNotFound);

    let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
    o.feed(PROSODY_HEADER);
    let a = o.feed(
        "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no such host</text></stream:error>",
    );
    let f = out_failure(&a).expect("fails");
    assert_eq!(
        f.reason,
        FailReason::PeerStreamError(StreamError::with_text(
            StreamCondition::HostUnknown,
            "no such host"
        ))
    );
    assert_eq!(f.bounce(), StanzaCondition::RemoteServerNotFound);
    assert!(f.to_string().contains("host-unknown: no such host"));

    let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
    o.feed(PROSODY_HEADER);
    let a = o.feed(
        "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
    );
    assert_eq!(
        out_failure(&a).unwrap().bounce(),
        StanzaCondition::RemoteServerTimeout
    );
}

#[test]
fn a_refused_starttls_or_an_unexpected_element_is_a_protocol_failure() {
    let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
    o.feed(PROSODY_HEADER);
    o.feed(PROSODY_FEATURES);
    let a = o.feed("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(matches!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::Protocol(_))
    ));

    let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
    o.feed(PROSODY_HEADER);
    let a = o.feed("<message to='x@a.example'/>");
    let f = out_failure(&a).expect("fails");
    assert_eq!(
        f.send.map(|e| e.condition),
        Some(StreamCondition::UnsupportedStanzaType)
    );
    assert!(
        o.feed(PROSODY_FEATURES).is_empty(),
        "a failed machine stays quiet"
    );
}

#[test]
fn tls_established_without_starttls_is_a_protocol_failure() {
    let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
    let a = o.tls(None);
    assert!(matches!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::Protocol(_))
    ));
}

// -- the receiving server's certificate (RFC 6125, XEP-0178) ------------

/// `EXTERNAL` offered after TLS, as a server that would accept it.
const EXTERNAL_FEATURES: &str = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
     <mechanism>EXTERNAL</mechanism></mechanisms>\
     <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>";

/// An outbound machine after STARTTLS with `peer` as the receiving
/// server's certificate, fed features offering EXTERNAL and dialback.
fn after_starttls(p: PeerPolicy, peer: Option<Arc<dyn PeerIdentity>>) -> (Out, Vec<OutAction>) {
    let (mut o, _) = Out::new(p, true);
    o.feed(PROSODY_HEADER);
    o.feed(PROSODY_FEATURES);
    o.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    o.tls(peer);
    o.feed(PROSODY_HEADER);
    let a = o.feed(EXTERNAL_FEATURES);
    (o, a)
}

#[test]
fn an_impostor_certificate_with_sasl_required_fails_before_any_auth_is_sent() {
    let required = policy(Negotiate::Required, Negotiate::Required, false);
    for peer in [cert(&["impostor.example"]), None] {
        let (mut o, a) = after_starttls(required.clone(), peer);
        assert!(!o.neg.remote_certificate_valid());
        assert!(!out_sent(&a).contains("<auth"), "{a:?}");
        let f = out_failure(&a).expect("fails");
        assert_eq!(f.reason, FailReason::RemoteCertificateInvalid);
        assert_eq!(
            f.send.as_ref().map(|e| e.condition),
            Some(StreamCondition::PolicyViolation)
        );
        assert_eq!(f.bounce(), StanzaCondition::RemoteServerTimeout);
        // An unsolicited <success/> changes nothing.
        assert!(
            o.feed("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                .is_empty()
        );
        assert!(!o.neg.is_ready());
    }
    // Dialback allowed does not help when SASL is required.
    let (_, a) = after_starttls(
        policy(Negotiate::Required, Negotiate::Required, true),
        cert(&[]),
    );
    assert_eq!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::RemoteCertificateInvalid)
    );
}

#[test]
fn an_impostor_certificate_without_dialback_allowed_fails_even_with_sasl_optional() {
    let (_, a) = after_starttls(
        policy(Negotiate::Required, Negotiate::Optional, false),
        cert(&["impostor.example"]),
    );
    assert!(!out_sent(&a).contains("<auth"), "{a:?}");
    assert_eq!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::RemoteCertificateInvalid)
    );
}

#[test]
fn an_untrusted_certificate_with_dialback_allowed_gets_dialback_and_never_external() {
    let (mut o, a) = after_starttls(PeerPolicy::open_federation(), cert(&["impostor.example"]));
    assert!(!out_sent(&a).contains("<auth"), "{a:?}");
    assert!(out_sent(&a).starts_with("<db:result from='a.example' to='b.example'>"));
    let a = o.feed("<db:result from='b.example' to='a.example' type='valid'/>");
    assert_eq!(a, vec![OutAction::Ready(AuthMethod::DialbackTls)]);

    // Against the real receiving machine: it offers EXTERNAL (it likes our
    // certificate), we still use dialback.
    let mut p = Pair::authenticate(
        PeerPolicy::open_federation(),
        true,
        Ctx::new(&[B], SECRET_B),
    );
    p.in_cert = cert(&["impostor.example"]);
    let p = p.run();
    assert!(p.sent_by_inbound().contains("EXTERNAL"));
    assert!(!out_sent(&p.out_log).contains("<auth"));
    assert_eq!(p.ready(), Some(AuthMethod::DialbackTls), "{:?}", p.out_log);
}

#[test]
fn a_certificate_valid_for_the_remote_domain_still_gets_external_to_ready() {
    let (mut o, a) = after_starttls(
        policy(Negotiate::Required, Negotiate::Required, false),
        cert(&[B]),
    );
    assert!(o.neg.remote_certificate_valid());
    assert!(
        out_sent(&a)
            .starts_with("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>")
    );
    o.feed("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    o.feed(PROSODY_HEADER);
    let a = o.feed("<stream:features/>");
    assert_eq!(a, vec![OutAction::Ready(AuthMethod::SaslExternal)]);

    let mut p = Pair::authenticate(
        policy(Negotiate::Required, Negotiate::Required, false),
        true,
        Ctx::new(&[B], SECRET_B),
    );
    p.in_cert = cert(&[B]);
    assert_eq!(p.run().ready(), Some(AuthMethod::SaslExternal));
}

#[test]
fn direct_tls_judges_the_receiving_certificate_like_starttls() {
    let required = policy(Negotiate::Required, Negotiate::Required, false);
    let direct = |peer: Option<Arc<dyn PeerIdentity>>| {
        let mut neg = OutboundNegotiation::new(
            A.into(),
            B.into(),
            required.clone(),
            Arc::from(SECRET_A),
            true,
            OutMode::Authenticate,
        );
        assert!(neg.handle(OutInput::TlsEstablished { peer }).is_empty());
        let mut o = Out {
            neg,
            framer: framer(),
        };
        o.neg.start();
        o.feed(PROSODY_HEADER);
        o.feed(EXTERNAL_FEATURES)
    };
    let a = direct(cert(&["impostor.example"]));
    assert!(!out_sent(&a).contains("<auth"), "{a:?}");
    assert_eq!(
        out_failure(&a).map(|f| f.reason),
        Some(FailReason::RemoteCertificateInvalid)
    );
    let a = direct(cert(&[B]));
    assert!(out_sent(&a).contains("mechanism='EXTERNAL'"), "{a:?}");
}

#[test]
fn a_verify_connection_asks_its_question_whatever_the_certificate() {
    // db:verify authenticates nobody: the answer is checked against the
    // key, not trusted for who the server is.
    let key = dialback::dialback_key(SECRET_A, B, A, "s1");
    let mut neg = OutboundNegotiation::new(
        B.into(),
        A.into(),
        policy(Negotiate::Required, Negotiate::Required, false),
        Arc::from(SECRET_B),
        true,
        OutMode::Verify {
            receiving: B.into(),
            originating: A.into(),
            stream_id: "s1".into(),
            key,
        },
    );
    assert!(
        neg.handle(OutInput::TlsEstablished {
            peer: cert(&["impostor.example"])
        })
        .is_empty()
    );
    let mut o = Out {
        neg,
        framer: framer(),
    };
    o.neg.start();
    o.feed(PROSODY_HEADER);
    let a = o.feed(EXTERNAL_FEATURES);
    assert!(out_sent(&a).starts_with("<db:verify"), "{a:?}");
    assert!(out_failure(&a).is_none());
}
