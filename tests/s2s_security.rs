//! Hostile and misbehaving remote servers against the real daemon on
//! loopback: spoofed senders, wrong addressees, bad dialback keys,
//! certificates for the wrong domain, connection limits, idle streams, and
//! the daemon's own keepalives. The remote side is played by
//! `testkit::s2s` over real STARTTLS, with a test CA the daemon
//! trusts and a test DNS server it asks.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fedrouter::error::{StreamCondition, StreamError};
use fedrouter::pki::PeerVerifier;
use fedrouter::stream::s2s::{AuthMethod, FailReason, Negotiate, PeerPolicy};
use fedrouter::xml::Element;
use fedrouter::xml::ns::{NS_CLIENT, NS_DIALBACK, NS_STREAMS};
use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use testkit::ca::{TestCa, self_signed};
use testkit::client::Client;
use testkit::dns::TestDns;
use testkit::s2s::{
    Attempt, DialbackAuthority, InEvent, InboundPeer, ListenerConfig, LoadOptions, PeerConfig,
    PeerError, Refused, S2sListener, S2sPeer, SilentServer, random_secret, server_tls,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// The daemon's domain.
const HOME: &str = "home.test";

/// A daemon for `HOME` with a CA-signed certificate, trusting the test CA,
/// resolving s2s through the test DNS server; one user, `user`/`pw`.
struct Site {
    server: TestServer,
    dns: TestDns,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

async fn site(gateway: &str) -> Site {
    site_allowing(&["127.0.0.0/8"], gateway).await
}

/// [`site`] with `s2s_extra` in `[s2s]` and `server_extra` in `[server]`.
async fn site_with(server_extra: &str, s2s_extra: &str, gateway: &str) -> Site {
    site_full(&["127.0.0.0/8"], server_extra, s2s_extra, gateway).await
}

/// [`site`] with `s2s.allow_private_targets` set to `nets` (the test DNS
/// points every domain at loopback).
async fn site_allowing(nets: &[&str], gateway: &str) -> Site {
    site_full(nets, "", "", gateway).await
}

async fn site_full(nets: &[&str], server_extra: &str, s2s_extra: &str, gateway: &str) -> Site {
    let allow = nets
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("test DNS");
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("s2s security test CA");
    let ca_path = ca.write(dir.path(), "ca");
    let (cert, key) = ca.issue(&[HOME]).write(dir.path(), HOME);
    let extra = format!(
        "[tls]\nca_file = \"{}\"\n[[tls.certificate]]\ndomain = \"{HOME}\"\ncert = \"{}\"\n\
         key = \"{}\"\n[s2s]\nlisten = [\"127.0.0.1:0\"]\ndns_nameservers = [\"{}\"]\nallow_private_targets = [{allow}]\n\
         unlisted_domains = \"allow\"\nunlisted_partner_type = \"federated\"\n{s2s_extra}\n{FEDERATION_ALLOWED}{gateway}",
        ca_path.display(),
        cert.display(),
        key.display(),
        dns.addr()
    );
    let server = TestServer::start_domain(HOME, server_extra, &extra).await;
    server.add_user("user", "pw");
    Site {
        server,
        dns,
        ca,
        _dir: dir,
    }
}

impl Site {
    /// A fake remote server claiming `local`, without a certificate.
    fn peer(&self, local: &str) -> PeerConfig {
        PeerConfig::new(self.server.daemon.s2s_addrs[0], local, HOME)
    }

    /// Claiming `local`, presenting a CA-signed certificate for `cert_for`.
    fn peer_with_cert(&self, local: &str, cert_for: &str) -> PeerConfig {
        let mut cfg = self.peer(local);
        cfg.cert = Some(self.ca.issue(&[cert_for]).certified_key());
        cfg
    }

    /// Points `domain`'s `_xmpp-server._tcp` SRV record at `addr`.
    fn register(&self, domain: &str, addr: SocketAddr) {
        let host = format!("xmpp.{domain}");
        self.dns.add_srv(
            &format!("_xmpp-server._tcp.{domain}"),
            10,
            5,
            addr.port(),
            &host,
        );
        self.dns.add_a(&host, Ipv4Addr::LOCALHOST);
    }

    /// `domain`'s authoritative server for dialback, holding `secret`.
    async fn authority(&self, domain: &str, secret: Arc<[u8]>) -> DialbackAuthority {
        let tls = server_tls(self_signed(&[domain]).certified_key(), None);
        let a = DialbackAuthority::start(domain, secret, tls).await;
        self.register(domain, a.addr());
        a
    }

    /// The local user, online (so bare-JID messages are delivered).
    async fn user(&self) -> Client {
        let mut u = self.server.client("user", "pw").await;
        u.send("<presence/>").await.unwrap();
        u
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert_der()).unwrap();
        roots
    }
}

fn message(from: &str, body: &str) -> String {
    format!("<message from='{from}' to='user@{HOME}' type='chat'><body>{body}</body></message>")
}

/// The next message the user gets must be this one: anything sent (and
/// refused) before it would have been routed ahead of it.
async fn next_message_is(user: &mut Client, from_prefix: &str, expected: &str) {
    let m = expect(user, expected, |s| s.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some(expected), "{}", text(&m));
    assert!(
        m.from().is_some_and(|f| f.starts_with(from_prefix)),
        "{}",
        text(&m)
    );
}

async fn refused(cfg: &PeerConfig) -> Refused {
    match S2sPeer::attempt(cfg).await {
        Ok(Attempt::Refused(r)) => r,
        Ok(Attempt::Ready(p)) => panic!("{} authenticated by {:?}", cfg.local, p.method()),
        Err(e) => panic!("{}: {e}", cfg.local),
    }
}

/// The stream error that refused a stream, whether it came during the
/// negotiation or right after it looked finished.
async fn refusal(r: Result<S2sPeer, PeerError>) -> StreamError {
    match r {
        Ok(mut p) => p
            .expect_stream_error()
            .await
            .unwrap_or_else(|e| panic!("authenticated, then {e} instead of a stream error")),
        Err(e) => e
            .stream_error()
            .cloned()
            .unwrap_or_else(|| panic!("refused without a stream error: {e}")),
    }
}

/// Retries `connect` until it succeeds (a slot is released when the
/// daemon's actor stops, just after the socket closes).
async fn connect_eventually(cfg: &PeerConfig) -> S2sPeer {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match S2sPeer::connect(cfg).await {
            Ok(p) => return p,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "not yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{} never got its slot back: {e}", cfg.local),
        }
    }
}

#[tokio::test]
async fn a_stream_authenticated_as_one_domain_is_closed_with_invalid_from_when_it_sends_for_another()
 {
    let site = site("").await;
    let mut user = site.user().await;
    let mut a = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    assert_eq!(a.method(), AuthMethod::SaslExternal);
    a.send(message("x@b.test", "spoofed")).await.unwrap();
    let e = a.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::InvalidFrom, "{e}");

    // A look-alike of the authenticated domain is another domain.
    let mut a = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    a.send(message("x@sub.a.test", "spoofed too"))
        .await
        .unwrap();
    let e = a.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::InvalidFrom, "{e}");

    let mut a = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    a.send(message("x@a.test", "legit")).await.unwrap();
    next_message_is(&mut user, "x@a.test", "legit").await;
}

#[tokio::test]
async fn a_stanza_using_prefixes_bound_on_the_peers_stream_header_reaches_the_user_namespace_well_formed()
 {
    let site = site("").await;
    let mut user = site.user().await;
    let mut cfg = site.peer_with_cert("a.test", "a.test");
    cfg.header_prefixes = vec![("foo".into(), "urn:x".into())];
    let mut a = S2sPeer::connect(&cfg).await.unwrap();
    // `foo` and `db` are bound on the peer's header only; the user's
    // stream binds neither.
    a.send(format!(
        "<message from='x@a.test' to='user@{HOME}' type='chat'><body>prefixed</body>\
         <foo:bar foo:attr='1'><db:x/></foo:bar></message>"
    ))
    .await
    .unwrap();
    // The user's framer refuses undeclared prefixes (not-well-formed), so
    // getting the stanza at all shows it arrived namespace-well-formed.
    let m = expect(&mut user, "the prefixed message", |s| s.name() == "message").await;
    let el = Element::parse(m.bytes(), NS_CLIENT, &[("stream", NS_STREAMS)])
        .unwrap_or_else(|e| panic!("{e}: {}", text(&m)));
    let bar = el.child("bar", "urn:x").expect("foo:bar in urn:x");
    assert_eq!(bar.attr("foo:attr"), Some("1"));
    assert_eq!(bar.prefixes, vec![("foo".to_string(), "urn:x".to_string())]);
    assert!(bar.child("x", NS_DIALBACK).is_some(), "{}", text(&m));
    // Both streams stay up.
    a.send(message("x@a.test", "still up")).await.unwrap();
    next_message_is(&mut user, "x@a.test", "still up").await;
}

#[tokio::test]
async fn hostile_xml_from_a_peer_gets_its_exact_stream_error_and_federation_keeps_working() {
    let site = site("").await;
    let mut user = site.user().await;
    let cfg = site.peer_with_cert("a.test", "a.test");
    let deep = format!(
        "<message from='x@a.test' to='user@{HOME}'>{}",
        "<a>".repeat(fedrouter::xml::MAX_DEPTH)
    );
    let many: String = (0..=fedrouter::xml::MAX_ATTRIBUTES)
        .map(|i| format!(" a{i}=''"))
        .collect();
    let cases: Vec<(&str, Vec<String>, StreamCondition)> = vec![
        (
            "&#0;",
            vec![message("x@a.test", "&#0;")],
            StreamCondition::NotWellFormed,
        ),
        (
            "&#x110000; in an attribute",
            vec![format!(
                "<message from='x@a.test' to='user@{HOME}' id='&#x110000;'/>"
            )],
            StreamCondition::NotWellFormed,
        ),
        ("depth 65", vec![deep], StreamCondition::PolicyViolation),
        (
            "one attribute more than the limit",
            vec![format!("<message{many}/>")],
            StreamCondition::PolicyViolation,
        ),
        (
            "]]> in text split across reads",
            vec![
                format!("<message from='x@a.test' to='user@{HOME}'><body>a]]"),
                ">b</body></message>".into(),
            ],
            StreamCondition::NotWellFormed,
        ),
    ];
    for (i, (what, input, want)) in cases.into_iter().enumerate() {
        let mut a = connect_eventually(&cfg).await;
        for piece in input {
            if a.send(piece).await.is_err() {
                break;
            }
        }
        let e = a.expect_stream_error().await.unwrap();
        assert_eq!(e.condition, want, "{what}: {e}");
        // A new stream from the same peer still delivers, even a stanza
        // trickled in one byte at a time.
        let mut a = connect_eventually(&cfg).await;
        let body = format!("after case {i}");
        for b in message("x@a.test", &body).bytes() {
            a.send([b]).await.unwrap();
        }
        next_message_is(&mut user, "x@a.test", &body).await;
    }
}

#[tokio::test]
async fn a_stanza_to_a_domain_the_daemon_does_not_serve_is_closed_with_host_unknown() {
    let site = site("").await;
    let mut a = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    a.send("<message from='x@a.test' to='user@elsewhere.test'><body>relay?</body></message>")
        .await
        .unwrap();
    let e = a.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::HostUnknown, "{e}");
}

#[tokio::test]
async fn a_dialback_key_the_authoritative_server_refuses_never_authenticates_and_a_good_one_does() {
    let site = site("").await;
    let mut user = site.user().await;
    let secret = random_secret();
    let authority = site.authority("c.test", secret.clone()).await;
    // No certificate: dialback is the only way in. Our key is computed with
    // a secret c.test's authoritative server does not hold.
    let mut cfg = site.peer("c.test");
    let mut r = refused(&cfg).await;
    assert_eq!(
        r.failure.reason,
        FailReason::DialbackRefused,
        "{}",
        r.failure
    );
    assert!(
        authority.verify_requests() >= 1,
        "the daemon never asked c.test's authoritative server"
    );
    assert!(!r.mechanisms().contains(&"EXTERNAL".to_string()));
    // Whatever comes next on that stream is not accepted.
    let _ = r.send(message("x@c.test", "sneaky")).await;
    match r.expect_stream_error().await {
        Ok(e) => assert_eq!(e.condition, StreamCondition::NotAuthorized, "{e}"),
        Err(PeerError::Closed | PeerError::Io(_)) => {}
        Err(e) => panic!("after type='invalid': {e}"),
    }

    cfg.secret = secret;
    let mut c = S2sPeer::connect(&cfg).await.unwrap();
    assert_eq!(c.method(), AuthMethod::DialbackTls);
    c.send(message("x@c.test", "by dialback")).await.unwrap();
    next_message_is(&mut user, "x@c.test", "by dialback").await;

    // A certificate nobody trusts changes nothing: dialback, not EXTERNAL.
    cfg.cert = Some(self_signed(&["c.test"]).certified_key());
    let c = S2sPeer::connect(&cfg).await.unwrap();
    assert_eq!(c.method(), AuthMethod::DialbackTls);
    assert!(!c.mechanisms().contains(&"EXTERNAL".to_string()));
}

#[tokio::test]
async fn a_stanza_before_authentication_is_refused_with_not_authorized() {
    let site = site("").await;
    let mut user = site.user().await;
    // No certificate and no dialback: the negotiation stops after TLS,
    // unauthenticated, with the stream still open.
    let mut cfg = site.peer("d.test");
    cfg.policy.dialback = false;
    let mut r = refused(&cfg).await;
    assert_eq!(
        r.failure.reason,
        FailReason::NoUsableAuthMethod,
        "{}",
        r.failure
    );
    r.send(message("x@d.test", "unauthenticated"))
        .await
        .unwrap();
    let e = r.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::NotAuthorized, "{e}");

    let mut a = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    a.send(message("x@a.test", "authenticated")).await.unwrap();
    next_message_is(&mut user, "x@a.test", "authenticated").await;
}

#[tokio::test]
async fn a_certificate_for_another_domain_never_yields_sasl_external() {
    let site = site("").await;
    let mut user = site.user().await;
    let secret = random_secret();
    let _authority = site.authority("a.test", secret.clone()).await;

    // Control: a certificate for a.test is offered EXTERNAL.
    let good = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    assert_eq!(good.method(), AuthMethod::SaslExternal);
    assert!(good.mechanisms().contains(&"EXTERNAL".to_string()));

    // SASL required: nothing else will do.
    let mut cfg = site.peer_with_cert("a.test", "z.test");
    cfg.policy = PeerPolicy {
        tls: Negotiate::Required,
        sasl: Negotiate::Required,
        dialback: false,
    };
    let r = refused(&cfg).await;
    assert_eq!(
        r.failure.reason,
        FailReason::SaslRequiredButNotOffered,
        "{}",
        r.failure
    );
    let features = r.features().map(text).unwrap_or_default();
    assert!(
        !features.contains("EXTERNAL") && !features.contains("starttls"),
        "the features after TLS: {features}"
    );

    // Dialback allowed: only a key a.test's authority confirms gets in.
    cfg.policy = PeerPolicy::open_federation();
    let r = refused(&cfg).await;
    assert_eq!(
        r.failure.reason,
        FailReason::DialbackRefused,
        "{}",
        r.failure
    );
    assert!(!r.mechanisms().contains(&"EXTERNAL".to_string()));

    cfg.secret = secret;
    let mut p = S2sPeer::connect(&cfg).await.unwrap();
    assert_eq!(p.method(), AuthMethod::DialbackTls);
    assert!(!p.mechanisms().contains(&"EXTERNAL".to_string()));
    p.send(message("x@a.test", "vouched for")).await.unwrap();
    next_message_is(&mut user, "x@a.test", "vouched for").await;
}

#[tokio::test]
async fn a_third_stream_authenticated_by_sasl_external_is_refused_at_partner_connection_limit_two()
{
    let site = site("[gateway]\npartner_connection_limit = 2\n").await;
    let cfg = site.peer_with_cert("a.test", "a.test");
    let first = S2sPeer::connect(&cfg).await.unwrap();
    let _second = S2sPeer::connect(&cfg).await.unwrap();
    let e = refusal(S2sPeer::connect(&cfg).await).await;
    assert_eq!(e.condition, StreamCondition::PolicyViolation, "{e}");
    // Other domains are not affected.
    S2sPeer::connect(&site.peer_with_cert("b.test", "b.test"))
        .await
        .unwrap();
    // A closed stream gives its slot back.
    first.close().await.unwrap();
    connect_eventually(&cfg).await;
}

#[tokio::test]
async fn a_third_stream_authenticated_by_dialback_is_refused_at_partner_connection_limit_two() {
    let site = site("[gateway]\npartner_connection_limit = 2\n").await;
    let secret = random_secret();
    let _authority = site.authority("c.test", secret.clone()).await;
    let mut cfg = site.peer("c.test");
    cfg.secret = secret;
    let first = S2sPeer::connect(&cfg).await.unwrap();
    let _second = S2sPeer::connect(&cfg).await.unwrap();
    assert_eq!(first.method(), AuthMethod::DialbackTls);
    let e = refusal(S2sPeer::connect(&cfg).await).await;
    assert_eq!(e.condition, StreamCondition::PolicyViolation, "{e}");
    // Other domains are not affected.
    S2sPeer::connect(&site.peer_with_cert("b.test", "b.test"))
        .await
        .unwrap();
    // A closed stream gives its slot back.
    first.close().await.unwrap();
    connect_eventually(&cfg).await;
}

#[tokio::test]
async fn the_connection_after_connection_limit_is_refused_with_policy_violation() {
    let site = site("[gateway]\nconnection_limit = 2\npartner_connection_limit = 2\n").await;
    let a = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    let _b = S2sPeer::connect(&site.peer_with_cert("b.test", "b.test"))
        .await
        .unwrap();
    let cfg = site.peer_with_cert("c.test", "c.test");
    let e = refusal(S2sPeer::connect(&cfg).await).await;
    assert_eq!(e.condition, StreamCondition::PolicyViolation, "{e}");
    a.close().await.unwrap();
    connect_eventually(&cfg).await;
}

#[tokio::test]
async fn a_silent_authenticated_stream_is_closed_with_connection_timeout() {
    let site = site("[gateway]\nstream_inactivity_timeout = 2\n").await;
    let mut p = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    let silent_since = Instant::now();
    let e = p.expect_stream_error().await.unwrap();
    let waited = silent_since.elapsed();
    assert_eq!(e.condition, StreamCondition::ConnectionTimeout, "{e}");
    assert!(
        waited >= Duration::from_millis(1800) && waited <= Duration::from_secs(5),
        "closed after {waited:?} of silence, expected about 2 s"
    );
}

#[tokio::test]
async fn whitespace_keepalives_keep_an_inbound_stream_open() {
    let site = site("[gateway]\nstream_inactivity_timeout = 2\n").await;
    let mut p = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    // 4 s of keepalives every 0.5 s: twice the inactivity timeout.
    p.set_timeout(Duration::from_millis(500));
    for _ in 0..8 {
        p.send(" ").await.unwrap();
        match p.recv().await {
            Err(PeerError::Timeout) => {}
            other => panic!("a stream sending keepalives was not left alone: {other:?}"),
        }
    }
    p.set_timeout(TIMEOUT);
    let silent_since = Instant::now();
    let e = p.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::ConnectionTimeout, "{e}");
    assert!(silent_since.elapsed() <= Duration::from_secs(5));
}

#[tokio::test]
async fn the_daemon_sends_whitespace_keepalives_on_an_idle_outbound_stream() {
    let site = site("[gateway]\nkeep_alive_interval = 1\n").await;
    let (_k, mut inbound) = outbound_stream_to_k(&site).await;
    assert_eq!(inbound.remote, HOME);
    assert_eq!(inbound.method, AuthMethod::SaslExternal);
    let m = inbound.recv().await.unwrap();
    assert_eq!(body(&m).as_deref(), Some("ping"), "{}", text(&m));
    // Keepalives keep coming, each about a second after the last write.
    let mut last = Instant::now();
    for n in 1..=2 {
        match tokio::time::timeout(Duration::from_secs(3), inbound.next()).await {
            Ok(Ok(InEvent::Whitespace(_))) => {}
            Ok(other) => panic!("keepalive {n}: {other:?}"),
            Err(_) => panic!("keepalive {n}: nothing within 3 s"),
        }
        let gap = last.elapsed();
        assert!(
            gap >= Duration::from_millis(500),
            "keepalive {n} after only {gap:?}"
        );
        last = Instant::now();
    }
}

#[tokio::test]
async fn a_partner_with_enable_keep_alive_false_gets_no_whitespace_keepalives() {
    let site = site(
        "[gateway]\nkeep_alive_interval = 1\n[[partner]]\ndomain = \"k.test\"\nsasl_negotiation = \"optional\"\n\
         enable_keep_alive = false\npartner_type = \"federated\"\n",
    )
    .await;
    let (_k, mut inbound) = outbound_stream_to_k(&site).await;
    let m = inbound.recv().await.unwrap();
    assert_eq!(body(&m).as_deref(), Some("ping"), "{}", text(&m));
    // Three keepalive intervals pass without a single whitespace byte.
    match tokio::time::timeout(Duration::from_secs(3), inbound.next()).await {
        Err(_) => {}
        Ok(other) => panic!("expected silence, got {other:?}"),
    }
}

/// A fake `k.test` (SASL EXTERNAL with a CA certificate) that the daemon
/// opens an outbound stream to when the local user sends it a message;
/// returns the listener (keep it alive) and the accepted stream, whose
/// first stanza is the message `ping`.
async fn outbound_stream_to_k(site: &Site) -> (S2sListener, InboundPeer) {
    let mut k = listener_k(site).await;
    let mut user = site.user().await;
    user.send("<message to='someone@k.test' type='chat'><body>ping</body></message>")
        .await
        .unwrap();
    let inbound = k.accept(TIMEOUT).await.unwrap();
    // The user session may end now: the outbound stream is the daemon's.
    drop(user);
    (k, inbound)
}

/// A real `k.test` (SASL EXTERNAL with a CA certificate), registered in
/// the site's DNS on 127.0.0.1.
async fn listener_k(site: &Site) -> S2sListener {
    let cert = site.ca.issue(&["k.test"]).certified_key();
    fake_k(site, cert, LoadOptions::default()).await
}

/// A fake `k.test` that is not k.test: its certificate is self-signed,
/// yet it offers SASL EXTERNAL (it trusts the daemon's certificate),
/// answers `<success/>` to it, and takes any dialback key as valid.
async fn impostor_k(site: &Site) -> S2sListener {
    let load = LoadOptions {
        trust_dialback: true,
        ..Default::default()
    };
    fake_k(site, self_signed(&["k.test"]).certified_key(), load).await
}

/// A `k.test` presenting `cert`, offering EXTERNAL to certificates of the
/// site's CA, registered in the site's DNS on 127.0.0.1.
async fn fake_k(site: &Site, cert: Arc<CertifiedKey>, load: LoadOptions) -> S2sListener {
    let roots = site.roots();
    let verifier = Arc::new(PeerVerifier::with_roots(roots.clone()).unwrap());
    let k = S2sListener::start(ListenerConfig {
        domain: "k.test".into(),
        secret: random_secret(),
        server_tls: server_tls(cert, Some(roots)),
        verifier: Some(verifier),
        policy: PeerPolicy::open_federation(),
        timeout: TIMEOUT,
        load,
    })
    .await
    .unwrap();
    site.register("k.test", k.addr());
    k
}

/// The user sends message `id` to `to`; it must come back as a stanza
/// error with `condition`. Returns how long that took.
async fn bounced(user: &mut Client, to: &str, id: &str, condition: &str) -> Duration {
    let sent = Instant::now();
    user.send(format!(
        "<message to='{to}' id='{id}' type='chat'><body>{id}</body></message>"
    ))
    .await
    .unwrap();
    let e = expect(user, "the bounce", |s| s.name() == "message").await;
    let waited = sent.elapsed();
    assert_eq!(e.type_().as_deref(), Some("error"), "{}", text(&e));
    assert_eq!(e.id().as_deref(), Some(id));
    assert!(text(&e).contains(condition), "{}", text(&e));
    waited
}

#[tokio::test]
async fn an_impostor_with_a_self_signed_certificate_gets_no_stanza_when_the_partner_requires_sasl()
{
    let site = site(
        "[[partner]]\ndomain = \"k.test\"\nsasl_negotiation = \"required\"\n\
         support_dialback_negotiation = false\npartner_type = \"federated\"\n",
    )
    .await;
    let mut k = impostor_k(&site).await;
    let mut user = site.user().await;
    bounced(&mut user, "someone@k.test", "imp1", "remote-server-timeout").await;
    assert!(
        k.connections() >= 1,
        "the daemon never reached the impostor"
    );
    // Nothing was authenticated there, so nothing was sent to it.
    match k.accept(Duration::from_millis(500)).await {
        Err(PeerError::Timeout) => {}
        Ok(p) => panic!("the daemon authenticated to the impostor by {:?}", p.method),
        Err(e) => panic!("{e}"),
    }
    let m = site.server.scrape().await;
    assert!(
        metric(
            &m,
            "fedrouter_s2s_failures_total",
            &[("domain", "k.test"), ("stage", "certificate")]
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_where_dialback_is_allowed_gets_dialback_and_never_external() {
    let site = site("").await;
    let mut k = impostor_k(&site).await;
    let mut user = site.user().await;
    user.send("<message to='someone@k.test' type='chat'><body>by dns</body></message>")
        .await
        .unwrap();
    let mut inbound = k.accept(TIMEOUT).await.unwrap();
    assert_eq!(inbound.method, AuthMethod::DialbackTls);
    let m = inbound.recv().await.unwrap();
    assert_eq!(body(&m).as_deref(), Some("by dns"), "{}", text(&m));
}

#[tokio::test]
async fn a_domain_whose_dns_points_at_loopback_is_refused_unless_allow_private_targets_covers_it() {
    let site = site_allowing(&["10.0.0.0/8", "fd00::/8"], "").await;
    let k = listener_k(&site).await;
    let mut user = site.user().await;
    bounced(&mut user, "someone@k.test", "p1", "remote-server-not-found").await;
    assert_eq!(k.connections(), 0, "the daemon connected to 127.0.0.1");
    let m = site.server.scrape().await;
    assert!(
        metric(
            &m,
            "fedrouter_events_total",
            &[("event", "s2s_private_targets_dropped")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "fedrouter_s2s_failures_total",
            &[("stage", "private_target")]
        ) >= 1.0,
        "{m}"
    );

    // The same setup with loopback allowed reaches k.test.
    let site = site_allowing(&["127.0.0.1/32"], "").await;
    let (_k, mut inbound) = outbound_stream_to_k(&site).await;
    let m = inbound.recv().await.unwrap();
    assert_eq!(body(&m).as_deref(), Some("ping"), "{}", text(&m));
}

#[tokio::test]
async fn connecting_to_a_domain_is_bounded_by_one_deadline_however_slow_its_dns() {
    let site = site("[gateway]\nstream_establishment_timeout = 3\n").await;
    // 1.2 s for the SRV answer, 1.2 s more for the target's address, then
    // a server that accepts and never speaks: 2.4 s + 3 s if only the
    // negotiation were bounded.
    let silent = SilentServer::start().await.unwrap();
    site.register("slow.test", silent.addr());
    let delay = Duration::from_millis(1200);
    site.dns.add_delay("_xmpp-server._tcp.slow.test", delay);
    site.dns.add_delay("_xmpps-server._tcp.slow.test", delay);
    site.dns.add_delay("xmpp.slow.test", delay);
    let mut user = site.user().await;
    let waited = bounced(&mut user, "x@slow.test", "s1", "remote-server-timeout").await;
    assert_eq!(silent.connections(), 1, "the target was reached");
    assert!(
        waited >= Duration::from_millis(2800) && waited < Duration::from_millis(4400),
        "bounced after {waited:?}, expected about stream_establishment_timeout (3 s)"
    );
}

#[tokio::test]
async fn a_flood_of_db_result_from_many_claimed_domains_opens_at_most_connection_limit_connections()
{
    let site = site("[gateway]\nconnection_limit = 3\npartner_connection_limit = 3\n").await;
    // Every claimed domain's authoritative server accepts and says nothing,
    // so each verification connection holds its slot.
    let silent = SilentServer::start().await.unwrap();
    const CLAIMED: usize = 8;
    for i in 0..CLAIMED {
        site.register(&format!("f{i}.test"), silent.addr());
    }
    // An unauthenticated stream (it holds no connection slot until it
    // authenticates) that sends db:result after db:result, each for
    // another domain.
    let mut cfg = site.peer("d.test");
    cfg.policy.dialback = false;
    let mut r = refused(&cfg).await;
    for i in 0..CLAIMED {
        r.send(format!(
            "<db:result xmlns:db='jabber:server:dialback' from='f{i}.test' to='{HOME}'>abcd</db:result>"
        ))
        .await
        .unwrap();
    }
    // All three slots go to verification: the other keys are answered
    // at once with resource-constraint.
    const VERIFYING: usize = 3;
    let mut refused_domains = Vec::new();
    while refused_domains.len() < CLAIMED - VERIFYING {
        let s = r
            .recv()
            .await
            .unwrap_or_else(|e| panic!("after {} dialback errors: {e}", refused_domains.len()));
        assert_eq!(s.local_name(), "result", "{}", text(&s));
        assert_eq!(s.type_().as_deref(), Some("error"), "{}", text(&s));
        assert!(text(&s).contains("resource-constraint"), "{}", text(&s));
        refused_domains.push(s.to().unwrap_or_default().to_string());
    }
    refused_domains.sort();
    refused_domains.dedup();
    assert_eq!(
        refused_domains.len(),
        CLAIMED - VERIFYING,
        "{refused_domains:?}"
    );
    let deadline = Instant::now() + TIMEOUT;
    while silent.connections() < VERIFYING {
        assert!(
            Instant::now() < deadline,
            "the verifications never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(silent.connections(), VERIFYING);
    let m = site.server.scrape().await;
    assert_eq!(
        metric(
            &m,
            "fedrouter_events_total",
            &[("event", "s2s_verify_connection_limit_reached")]
        ),
        (CLAIMED - VERIFYING) as f64,
        "{m}"
    );
}

// ---- caps on what unauthenticated peers may hold (issue 9 item 2) ----

/// A stream header as a remote server opens its stream with.
const S2S_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    from='flood.test' to='home.test' version='1.0'>";

/// A raw TCP connection to `to` from `source`, any address of 127.0.0.0/8.
async fn connect_from(source: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((source, 0))).unwrap();
    tokio::time::timeout(TIMEOUT, sock.connect(to))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Reads until `until` appears or the daemon closes (bounded by TIMEOUT);
/// returns what was read.
async fn read_until(s: &mut tokio::net::TcpStream, until: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = String::from_utf8_lossy(&got);
        if text.contains(until) {
            return text.into_owned();
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return text.into_owned(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("neither {until:?} nor a close within {TIMEOUT:?}: {text}"),
        }
    }
}

#[tokio::test]
async fn unauthenticated_connections_over_the_per_ip_cap_are_refused_while_another_address_connects()
 {
    let site = site_with("", "max_unauthenticated_per_ip = 3\n", "").await;
    let addr = site.server.daemon.s2s_addrs[0];
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from([127, 0, 0, 2], addr).await;
        s.write_all(S2S_HEADER.as_bytes()).await.unwrap();
        let got = read_until(&mut s, "</stream:features>").await;
        assert!(got.contains("starttls"), "{got}");
        held.push(s);
    }
    let mut fourth = connect_from([127, 0, 0, 2], addr).await;
    let got = read_until(&mut fourth, "</stream:stream>").await;
    assert!(got.contains("<policy-violation"), "{got}");

    let mut other = connect_from([127, 0, 0, 3], addr).await;
    other.write_all(S2S_HEADER.as_bytes()).await.unwrap();
    let got = read_until(&mut other, "</stream:features>").await;
    assert!(
        got.contains("starttls"),
        "another address is not refused: {got}"
    );

    // A slot comes back when its connection goes.
    drop(held.pop());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut s = connect_from([127, 0, 0, 2], addr).await;
        s.write_all(S2S_HEADER.as_bytes()).await.unwrap();
        if read_until(&mut s, "</stream:features>")
            .await
            .contains("starttls")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = site.server.scrape().await;
    assert!(
        event_count(&m, "s2s_unauthenticated_per_ip_limit_reached") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_stream_sending_more_elements_than_allowed_before_authenticating_gets_policy_violation() {
    let site = site_with("", "max_pre_auth_elements = 5\n", "").await;
    let mut cfg = site.peer("d.test");
    cfg.policy.dialback = false;
    let mut r = refused(&cfg).await;
    for i in 0..10 {
        let _ = r
            .send(format!(
                "<db:verify xmlns:db='jabber:server:dialback' from='d.test' to='{HOME}' id='s{i}'>abcd</db:verify>"
            ))
            .await;
    }
    let e = r.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::PolicyViolation, "{e}");
    let m = site.server.scrape().await;
    assert!(
        event_count(&m, "s2s_pre_auth_elements_exceeded") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_thousand_db_verify_floods_that_never_read_neither_stop_federation_nor_hold_shutdown() {
    fedrouter::transport::raise_fd_limit();
    let grace = Duration::from_secs(3);
    let site = site_with(
        "shutdown_grace = 3\nwrite_timeout = 2\n",
        "max_unauthenticated = 200\nmax_unauthenticated_per_ip = 10\nmax_pre_auth_elements = 100\n",
        "",
    )
    .await;
    let addr = site.server.daemon.s2s_addrs[0];
    let mut user = site.user().await;
    // 1,000 connections from ten addresses, each a header and 150 db:verify
    // (past the element cap), never reading a byte of the answers.
    let mut flood = S2S_HEADER.to_string();
    for i in 0..150 {
        flood.push_str(&format!(
            "<db:verify from='flood.test' to='{HOME}' id='f{i}'>{}</db:verify>",
            "k".repeat(64)
        ));
    }
    let flood: Arc<[u8]> = flood.into_bytes().into();
    let mut floods = tokio::task::JoinSet::new();
    for c in 0..1000u32 {
        let flood = flood.clone();
        floods.spawn(async move {
            let mut s = connect_from([127, 0, 0, 2 + (c % 10) as u8], addr).await;
            // The daemon may close first, or stop reading: either is fine.
            let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&flood)).await;
            s
        });
    }
    // While the flood runs, a real partner still federates.
    let mut a = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    a.send(message("x@a.test", "through the flood"))
        .await
        .unwrap();
    next_message_is(&mut user, "x@a.test", "through the flood").await;
    let mut held = Vec::new();
    while let Some(s) = floods.join_next().await {
        held.push(s.expect("flood task"));
    }
    assert_eq!(held.len(), 1000);
    // Every flood connection was refused at accept or, let in, closed at
    // the element cap (metrics are process-wide: other tests add to them).
    let m = site.server.scrape().await;
    assert!(
        event_count(&m, "s2s_unauthenticated_per_ip_limit_reached") >= 1.0,
        "{m}"
    );
    assert!(
        event_count(&m, "s2s_pre_auth_elements_exceeded") >= 1.0,
        "{m}"
    );
    // Shutdown with every flood socket still open and unread.
    let started = Instant::now();
    site.server.daemon.shutdown().await;
    let took = started.elapsed();
    assert!(
        took < grace + Duration::from_secs(2),
        "shutdown took {took:?} (shutdown_grace 3 s)"
    );
    drop(held);
}

#[tokio::test]
async fn a_stream_with_more_dialback_keys_in_flight_than_allowed_gets_policy_violation() {
    let site = site_with("", "max_pending_dialback = 2\n", "").await;
    // The authoritative servers accept and never answer: every key stays
    // in flight.
    let silent = SilentServer::start().await.unwrap();
    for i in 0..3 {
        site.register(&format!("p{i}.test"), silent.addr());
    }
    let mut cfg = site.peer("d.test");
    cfg.policy.dialback = false;
    let mut r = refused(&cfg).await;
    for i in 0..3 {
        r.send(format!(
            "<db:result xmlns:db='jabber:server:dialback' from='p{i}.test' to='{HOME}'>abcd</db:result>"
        ))
        .await
        .unwrap();
    }
    let e = r.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::PolicyViolation, "{e}");
    let m = site.server.scrape().await;
    assert!(
        event_count(&m, "s2s_pending_dialback_exceeded") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_dialback_key_past_the_global_in_flight_cap_is_answered_resource_constraint() {
    let site = site_with(
        "",
        "max_pending_dialback = 2\nmax_pending_dialback_total = 2\n",
        "",
    )
    .await;
    let silent = SilentServer::start().await.unwrap();
    for i in 0..3 {
        site.register(&format!("q{i}.test"), silent.addr());
    }
    let mut cfg = site.peer("d.test");
    cfg.policy.dialback = false;
    let key = |i: usize| {
        format!(
            "<db:result xmlns:db='jabber:server:dialback' from='q{i}.test' to='{HOME}'>abcd</db:result>"
        )
    };
    let mut a = refused(&cfg).await;
    a.send(key(0)).await.unwrap();
    a.send(key(1)).await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while silent.connections() < 2 {
        assert!(
            Instant::now() < deadline,
            "the two verifications never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut b = refused(&cfg).await;
    b.send(key(2)).await.unwrap();
    let s = b.recv().await.unwrap();
    assert_eq!(s.local_name(), "result", "{}", text(&s));
    assert_eq!(s.type_().as_deref(), Some("error"), "{}", text(&s));
    assert!(text(&s).contains("resource-constraint"), "{}", text(&s));
    assert_eq!(silent.connections(), 2, "no connection for the third key");
    let m = site.server.scrape().await;
    assert!(
        event_count(&m, "s2s_pending_dialback_total_reached") >= 1.0,
        "{m}"
    );
}

/// XEP-0198 acks on an inbound federation stream (what Prosody's
/// mod_smacks asks of a receiving server): `<sm/>` is offered, `<enable/>`
/// is answered, and `<r/>` gets the count of stanzas received since.
#[tokio::test]
async fn a_partner_may_enable_stream_management_and_gets_acks_counting_its_stanzas() {
    let site = site("").await;
    let mut user = site.user().await;
    let before = site.server.scrape().await;
    let (mut a, _) = sm_peer(&site, "").await;
    for i in 0..3 {
        a.send(message("x@a.test", &format!("counted {i}")))
            .await
            .unwrap();
    }
    a.send("<r xmlns='urn:xmpp:sm:3'/>").await.unwrap();
    let ack = a.recv().await.unwrap();
    assert_eq!(ack.local_name(), "a", "{}", text(&ack));
    assert!(
        text(&ack).contains("h='3'") || text(&ack).contains("h=\"3\""),
        "{}",
        text(&ack)
    );
    for i in 0..3 {
        next_message_is(&mut user, "x@a.test", &format!("counted {i}")).await;
    }
    let after = site.server.scrape().await;
    assert_eq!(
        event_count(&after, "s2s_sm_acks_sent") - event_count(&before, "s2s_sm_acks_sent"),
        1.0
    );
}

/// A partner a.test (certificate-authenticated) on a new stream that
/// enabled Stream Management with `attrs`; the daemon's `<enabled/>`.
async fn sm_peer(site: &Site, attrs: &str) -> (S2sPeer, fedrouter::xml::Stanza) {
    let mut a = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    a.send(format!("<enable xmlns='urn:xmpp:sm:3'{attrs}/>"))
        .await
        .unwrap();
    let enabled = a.recv().await.unwrap();
    assert_eq!(enabled.local_name(), "enabled", "{}", text(&enabled));
    (a, enabled)
}

/// The attribute `name` of a stanza as received.
fn attr_of(s: &fedrouter::xml::Stanza, name: &str) -> Option<String> {
    let el = fedrouter::xml::Element::parse(s.bytes(), "", &[]).ok()?;
    el.attr(name).map(str::to_string)
}

/// XEP-0198 resumption between servers: a partner whose connection died
/// opens a new stream for the same domain pair, resumes the old count, and
/// learns exactly how many stanzas we handled; nothing is handled twice.
/// Another domain's stream, and an unknown id, cannot resume it.
#[tokio::test]
async fn a_partner_resumes_its_lost_stream_and_learns_how_many_stanzas_were_handled() {
    let site = site("").await;
    let mut user = site.user().await;
    let (mut a, enabled) = sm_peer(&site, " resume='true'").await;
    assert_eq!(attr_of(&enabled, "resume").as_deref(), Some("true"));
    let id = attr_of(&enabled, "id").expect("a resumption id");
    assert_eq!(attr_of(&enabled, "max").as_deref(), Some("300"));
    for i in 0..3 {
        a.send(message("x@a.test", &format!("before {i}")))
            .await
            .unwrap();
    }
    for i in 0..3 {
        next_message_is(&mut user, "x@a.test", &format!("before {i}")).await;
    }
    // The connection dies without a stream close.
    drop(a);

    // An unknown id, and the id on another domain's stream, fail.
    let mut b = S2sPeer::connect(&site.peer_with_cert("b.test", "b.test"))
        .await
        .unwrap();
    for previd in ["no-such-id", id.as_str()] {
        b.send(format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"
        ))
        .await
        .unwrap();
        let failed = b.recv().await.unwrap();
        assert_eq!(failed.local_name(), "failed", "{}", text(&failed));
        assert!(
            text(&failed).contains("item-not-found"),
            "{}",
            text(&failed)
        );
    }

    let before = site.server.scrape().await;
    let mut again = S2sPeer::connect(&site.peer_with_cert("a.test", "a.test"))
        .await
        .unwrap();
    again
        .send(format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"
        ))
        .await
        .unwrap();
    let resumed = again.recv().await.unwrap();
    assert_eq!(resumed.local_name(), "resumed", "{}", text(&resumed));
    assert_eq!(attr_of(&resumed, "h").as_deref(), Some("3"));
    assert_eq!(attr_of(&resumed, "previd").as_deref(), Some(id.as_str()));
    // The count goes on from there.
    again.send(message("x@a.test", "after")).await.unwrap();
    again.send("<r xmlns='urn:xmpp:sm:3'/>").await.unwrap();
    let ack = again.recv().await.unwrap();
    assert_eq!(attr_of(&ack, "h").as_deref(), Some("4"), "{}", text(&ack));
    next_message_is(&mut user, "x@a.test", "after").await;
    let after = site.server.scrape().await;
    assert_eq!(
        event_count(&after, "s2s_sm_resumed") - event_count(&before, "s2s_sm_resumed"),
        1.0
    );
}

/// A sender that could not resume resends what we had not acknowledged;
/// a message carrying the same XEP-0359 origin-id from the same sender is
/// delivered once, and one with a new id still arrives.
#[tokio::test]
async fn a_message_resent_with_the_same_origin_id_on_a_new_stream_is_delivered_once() {
    let site = site("").await;
    let mut user = site.user().await;
    let with_id = |body: &str, oid: &str| {
        format!(
            "<message from='x@a.test/r' to='user@{HOME}' type='chat'><body>{body}</body>\
             <origin-id xmlns='urn:xmpp:sid:0' id='{oid}'/></message>"
        )
    };
    let (mut a, _) = sm_peer(&site, "").await;
    a.send(with_id("first", "oid-1")).await.unwrap();
    next_message_is(&mut user, "x@a.test", "first").await;
    drop(a);

    let before = site.server.scrape().await;
    let (mut a, _) = sm_peer(&site, "").await;
    a.send(with_id("first", "oid-1")).await.unwrap();
    a.send(with_id("second", "oid-2")).await.unwrap();
    // The resent one is not delivered again: the next is the new one.
    next_message_is(&mut user, "x@a.test", "second").await;
    let after = site.server.scrape().await;
    assert_eq!(
        event_count(&after, "s2s_duplicates_dropped")
            - event_count(&before, "s2s_duplicates_dropped"),
        1.0
    );
}
