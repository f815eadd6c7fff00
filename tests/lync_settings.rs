//! The Lync gateway and partner settings doing what the README says they
//! do, end to end against the real daemon on loopback: keepalives both
//! ways and the close of a silent link (`keep_alive_interval`), the
//! presence re-probe (`subscription_refresh_interval`), the partner
//! connection limit (per partner entry, links in and out together), the
//! static route (`proxy_fqdn`) and the per-partner metric labels following
//! `fedrouter reload`, and the answer to a stanza for an unlisted domain.
//!
//! Remote domains are played by `testkit::s2s` with CA-signed
//! certificates (SASL EXTERNAL); every wait is on an event, bounded by a
//! timeout, and intervals are a second or two so the file stays fast.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fedrouter::error::StreamCondition;
use fedrouter::pki::PeerVerifier;
use fedrouter::stream::s2s::{AuthMethod, PeerPolicy};
use fedrouter::xml::Stanza;
use rustls::RootCertStore;
use testkit::ca::TestCa;
use testkit::client::Client;
use testkit::dns::TestDns;
use testkit::s2s::{
    InEvent, InboundPeer, ListenerConfig, PeerConfig, S2sListener, S2sPeer, random_secret,
    server_tls,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// The daemon's domain.
const HOME: &str = "home.test";

struct Site {
    server: TestServer,
    dns: TestDns,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

/// A daemon for `HOME` with a CA-signed certificate, trusting the test
/// CA, resolving s2s through the test DNS server, everyone allowed to
/// federate; `extra` is appended (`[gateway]` first, then `[[partner]]`s).
async fn site(extra: &str) -> Site {
    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("test DNS");
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("lync settings test CA");
    let ca_path = ca.write(dir.path(), "ca");
    let (cert, key) = ca.issue(&[HOME]).write(dir.path(), HOME);
    let config = format!(
        "[tls]\nca_file = \"{}\"\n[[tls.certificate]]\ndomain = \"{HOME}\"\ncert = \"{}\"\n\
         key = \"{}\"\n[s2s]\nlisten = [\"127.0.0.1:0\"]\ndns_nameservers = [\"{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
         {FEDERATION_ALLOWED}{extra}",
        ca_path.display(),
        cert.display(),
        key.display(),
        dns.addr()
    );
    let server = TestServer::start_domain(HOME, "", &config).await;
    Site {
        server,
        dns,
        ca,
        _dir: dir,
    }
}

fn federated(domain: &str, more: &str) -> String {
    format!("[[partner]]\ndomain = \"{domain}\"\npartner_type = \"federated\"\n{more}")
}

impl Site {
    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert_der()).unwrap();
        roots
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

    /// `domain`'s server for the daemon's outbound streams (SASL EXTERNAL
    /// offered), not in DNS.
    async fn unlisted_listener(&self, domain: &str) -> S2sListener {
        let roots = self.roots();
        S2sListener::start(ListenerConfig {
            domain: domain.into(),
            secret: random_secret(),
            server_tls: server_tls(
                self.ca.issue(&[domain]).certified_key(),
                Some(roots.clone()),
            ),
            verifier: Some(Arc::new(PeerVerifier::with_roots(roots).unwrap())),
            policy: PeerPolicy::open_federation(),
            timeout: TIMEOUT,
            load: Default::default(),
        })
        .await
        .unwrap()
    }

    /// Like [`unlisted_listener`](Self::unlisted_listener), registered in DNS.
    async fn listener(&self, domain: &str) -> S2sListener {
        let l = self.unlisted_listener(domain).await;
        self.register(domain, l.addr());
        l
    }

    /// A stream from `domain` into the daemon, by SASL EXTERNAL.
    fn peer_cfg(&self, domain: &str) -> PeerConfig {
        let mut cfg = PeerConfig::new(self.server.daemon.s2s_addrs[0], domain, HOME);
        cfg.cert = Some(self.ca.issue(&[domain]).certified_key());
        cfg
    }

    async fn user(&self, name: &str) -> Client {
        self.server.add_user(name, "pw");
        let mut c = self.server.client(name, "pw").await;
        c.send("<presence/>").await.unwrap();
        c
    }

    /// Rewrites the configuration file (`from` → `to`, which must occur)
    /// and reloads it.
    fn reload(&self, edits: &[(&str, &str)]) {
        let path = self.server.dir.path().join("fedrouter.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in edits {
            assert!(text.contains(from), "{from:?} not in the config");
            text = text.replace(from, to);
        }
        std::fs::write(&path, text).unwrap();
        self.server
            .daemon
            .reloader
            .reload()
            .unwrap_or_else(|e| panic!("reload: {e}"));
    }
}

fn chat(to: &str, id: &str, body: &str) -> String {
    format!("<message to='{to}' id='{id}' type='chat'><body>{body}</body></message>")
}

/// The next stanza on the daemon's stream, skipping keepalives.
async fn next_stanza(p: &mut InboundPeer, what: &str) -> Stanza {
    p.recv()
        .await
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// Waits (at most `limit`) for the error reply with `id` to the user.
async fn bounce(c: &mut Client, id: &str, limit: Duration) -> Stanza {
    let r = tokio::time::timeout(limit, async {
        loop {
            match c.recv().await {
                Ok(s) if s.id().as_deref() == Some(id) => return s,
                Ok(_) | Err(testkit::client::ClientError::Timeout) => {}
                Err(e) => panic!("waiting for the bounce of {id}: {e}"),
            }
        }
    })
    .await;
    let s = r.unwrap_or_else(|_| panic!("no bounce of {id} within {limit:?}"));
    assert_eq!(s.type_().as_deref(), Some("error"), "{}", text(&s));
    s
}

// ---------------------------------------------------------------------------
// keep_alive_interval
// ---------------------------------------------------------------------------

#[tokio::test]
async fn keep_alive_interval_sends_keepalives_on_an_outbound_link_and_closes_it_when_the_peer_is_silent()
 {
    // keep_alive_interval = 1: a whitespace keepalive after 1 s without a
    // write, the link closed after 1.5 s (1 s + half of it as grace)
    // without a single byte from a peer that has written on it before.
    let site = site(&format!(
        "[gateway]\nkeep_alive_interval = 1\n{}",
        federated("k.test", "")
    ))
    .await;
    let mut k = site.listener("k.test").await;
    let mut user = site.user("user").await;
    user.send(chat("r@k.test", "m1", "first")).await.unwrap();
    let mut link = k
        .accept(TIMEOUT)
        .await
        .expect("the daemon's stream to k.test");
    let up = Instant::now();
    let m = next_stanza(&mut link, "the first message").await;
    assert_eq!(body(&m).as_deref(), Some("first"), "{}", text(&m));

    // A receiving server need not write on a stream it did not open: while
    // the scripted peer has never written, 2.5 s (more than the 1.5 s
    // silence limit) pass with keepalives and no close.
    let mut keepalives = 0;
    let quiet_until = up + Duration::from_millis(2500);
    loop {
        match tokio::time::timeout_at(quiet_until, link.next()).await {
            Err(_) => break,
            Ok(Ok(InEvent::Whitespace(_))) => keepalives += 1,
            other => panic!("a peer that never wrote: expected keepalives only, got {other:?}"),
        }
    }
    assert!(
        keepalives >= 2,
        "{keepalives} keepalives in 2.5 s, expected 2"
    );

    // Once it has written (a keepalive of its own), it may not go silent:
    // closed with <connection-timeout/> after about 1.5 s.
    link.send(" ").await.unwrap();
    let silent_since = Instant::now();
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(4), link.next()).await {
            Ok(Ok(InEvent::Whitespace(_))) => {}
            Ok(Ok(InEvent::Closed(e))) => break e,
            other => panic!("expected the daemon to close the silent link, got {other:?}"),
        }
    };
    let silent = silent_since.elapsed();
    let e = closed.expect("closed with a stream error");
    assert_eq!(e.condition, StreamCondition::ConnectionTimeout, "{e}");
    assert!(
        silent >= Duration::from_millis(1200) && silent <= Duration::from_secs(3),
        "closed after {silent:?} of silence, expected about 1.5 s"
    );

    // A stanza queued afterwards opens a new link.
    user.send(chat("r@k.test", "m2", "again")).await.unwrap();
    let mut again = k
        .accept(TIMEOUT)
        .await
        .expect("a new stream for the next stanza");
    let m = next_stanza(&mut again, "the second message").await;
    assert_eq!(body(&m).as_deref(), Some("again"), "{}", text(&m));
}

#[tokio::test]
async fn keep_alive_interval_sends_keepalives_on_an_inbound_link_and_closes_it_when_the_peer_is_silent()
 {
    let site = site(&format!(
        "[gateway]\nkeep_alive_interval = 1\n{}",
        federated("k.test", "")
    ))
    .await;
    let peer = S2sPeer::connect(&site.peer_cfg("k.test"))
        .await
        .expect("k.test connects");
    assert_eq!(peer.method(), AuthMethod::SaslExternal);
    let up = Instant::now();
    let (mut io, _framer) = peer.into_parts();
    let mut buf = [0u8; 4096];

    // While the peer sends a keepalive every 0.4 s, for 3 s (twice the
    // silence limit), the daemon keeps the link and sends its own.
    let mut keepalives = 0;
    let mut next_send = Instant::now();
    while up.elapsed() < Duration::from_secs(3) {
        if Instant::now() >= next_send {
            io.write_all(b" ").await.unwrap();
            next_send += Duration::from_millis(400);
        }
        match tokio::time::timeout_at(next_send, io.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) => panic!("the daemon closed a link whose peer sent keepalives"),
            Ok(Ok(n)) => {
                let got = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(got.trim().is_empty(), "expected keepalives, got {got:?}");
                keepalives += n;
            }
            Ok(Err(e)) => panic!("reading: {e}"),
        }
    }
    assert!(
        keepalives >= 2,
        "{keepalives} keepalive bytes in 3 s, expected about 3"
    );

    // Then the peer goes silent: closed with <connection-timeout/> within
    // the bound.
    let silent_since = Instant::now();
    let mut got = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(4), io.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
                if got.contains("</stream:stream>") {
                    break;
                }
            }
            Ok(Err(_)) => break,
            Err(_) => panic!("still open after 4 s of silence; got {got:?}"),
        }
    }
    let silent = silent_since.elapsed();
    assert!(got.contains("connection-timeout"), "{got:?}");
    assert!(
        silent >= Duration::from_millis(900) && silent <= Duration::from_secs(3),
        "closed after {silent:?} of silence, expected about 1.5 s"
    );
}

// ---------------------------------------------------------------------------
// subscription_refresh_interval
// ---------------------------------------------------------------------------

#[tokio::test]
async fn subscription_refresh_interval_re_probes_the_remote_contacts_an_online_user_is_subscribed_to()
 {
    let site = site(&format!(
        "[gateway]\nsubscription_refresh_interval = 1\n{}",
        federated("fed.test", "")
    ))
    .await;
    let mut fed = site.listener("fed.test").await;
    let mut remote = S2sPeer::connect(&site.peer_cfg("fed.test")).await.unwrap();
    let mut user = site.user("user").await;
    // r@fed.test: subscription "to" (the user asked, r approved);
    // n@fed.test: on the roster, subscription "none".
    add_contact(&mut user, "r@fed.test").await;
    add_contact(&mut user, "n@fed.test").await;
    user.send("<presence to='r@fed.test' type='subscribe'/>")
        .await
        .unwrap();
    let mut link = fed.accept(TIMEOUT).await.expect("the daemon's stream");
    loop {
        let s = next_stanza(&mut link, "the subscribe").await;
        if s.type_().as_deref() == Some("subscribe") {
            break;
        }
    }
    remote
        .send(format!(
            "<presence from='r@fed.test' to='user@{HOME}' type='subscribed'/>"
        ))
        .await
        .unwrap();
    expect(&mut user, "the approval", |s| {
        is_presence_from(s, "r@fed.test", Some("subscribed"))
    })
    .await;

    // Every second, a probe from the user's bare JID to r, none to n.
    let mut probes = Vec::new();
    let watch = Instant::now();
    while probes.len() < 3 {
        let s = tokio::time::timeout(Duration::from_secs(3), link.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} probe(s) in {:?}", probes.len(), watch.elapsed()))
            .unwrap();
        if s.type_().as_deref() != Some("probe") {
            continue;
        }
        assert_eq!(s.to().as_deref(), Some("r@fed.test"), "{}", text(&s));
        assert_eq!(s.from().as_deref(), Some("user@home.test"), "{}", text(&s));
        probes.push(Instant::now());
    }
    let spread = probes[2] - probes[0];
    assert!(
        spread >= Duration::from_millis(1500),
        "three probes within {spread:?}: faster than one per interval"
    );

    // Offline users' contacts are not probed: after the user leaves, 2.5
    // intervals pass without a probe.
    drop(user);
    let quiet_until = Instant::now() + Duration::from_millis(2500);
    loop {
        match tokio::time::timeout_at(quiet_until, link.recv()).await {
            Err(_) => break,
            Ok(Ok(s)) => assert_ne!(
                s.type_().as_deref(),
                Some("probe"),
                "probed for an offline user: {}",
                text(&s)
            ),
            Ok(Err(e)) => panic!("the link ended: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// connection_limit per partner
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_partners_connection_limit_counts_its_links_in_and_out_over_all_its_domains() {
    // One partner entry, two domains, connection_limit = 2.
    let site = site(&format!(
        "[gateway]\nstream_establishment_timeout = 2\n{}",
        federated(
            "lim.test",
            "additional_domains = [\"alt.lim.test\"]\nconnection_limit = 2\n"
        )
    ))
    .await;
    let mut lim = site.listener("lim.test").await;
    let mut alt = site.listener("alt.lim.test").await;
    let mut user = site.user("user").await;

    // Link 1, inbound from lim.test.
    let first = S2sPeer::connect(&site.peer_cfg("lim.test"))
        .await
        .expect("the first link");
    // Link 2, outbound to alt.lim.test.
    user.send(chat("x@alt.lim.test", "a1", "to alt"))
        .await
        .unwrap();
    let mut out = alt.accept(TIMEOUT).await.expect("the second link");
    let m = next_stanza(&mut out, "the message to alt").await;
    assert_eq!(body(&m).as_deref(), Some("to alt"), "{}", text(&m));

    // Link 3, inbound from the other domain of the same partner: refused.
    match S2sPeer::connect(&site.peer_cfg("alt.lim.test")).await {
        Ok(mut p) => {
            let e = p.expect_stream_error().await.unwrap();
            assert_eq!(e.condition, StreamCondition::PolicyViolation, "{e}");
        }
        Err(e) => {
            let se = e
                .stream_error()
                .unwrap_or_else(|| panic!("refused without a stream error: {e}"));
            assert_eq!(se.condition, StreamCondition::PolicyViolation, "{se}");
        }
    }
    // Link 4, outbound to lim.test: never opened; the stanza bounces with
    // resource-constraint once it waited stream_establishment_timeout.
    user.send(chat("y@lim.test", "l1", "to lim")).await.unwrap();
    let b = bounce(&mut user, "l1", Duration::from_secs(8)).await;
    assert!(text(&b).contains("resource-constraint"), "{}", text(&b));
    assert!(
        lim.accept(Duration::from_millis(1)).await.is_err(),
        "the daemon opened a third link to the partner"
    );

    // A closed link gives its slot back: now lim.test is reachable.
    first.close().await.unwrap();
    let freed = Instant::now() + TIMEOUT;
    while !site.server.daemon.reloader.partners().contains("1 link(s)") {
        assert!(
            Instant::now() < freed,
            "the closed link's slot was not given back: {}",
            site.server.daemon.reloader.partners()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    user.send(chat("y@lim.test", "l2", "to lim again"))
        .await
        .unwrap();
    let mut out = lim
        .accept(TIMEOUT)
        .await
        .expect("a link once a slot is free");
    let m = next_stanza(&mut out, "the message to lim").await;
    assert_eq!(body(&m).as_deref(), Some("to lim again"), "{}", text(&m));
}

// ---------------------------------------------------------------------------
// proxy_fqdn, metric labels and unlisted domains under reload
// ---------------------------------------------------------------------------

#[tokio::test]
async fn proxy_fqdn_routes_past_dns_and_follows_reload_as_do_partner_metric_labels() {
    // Neither px.test nor its proxies are in DNS. The proxies need the
    // site's CA, so the daemon starts with a route to a closed port and
    // is pointed at proxy a by a first reload.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let unused = closed.local_addr().unwrap().port();
    drop(closed);
    let site = site(&federated(
        "px.test",
        &format!("proxy_fqdn = \"127.0.0.1:{unused}\"\n"),
    ))
    .await;
    let mut a = site.unlisted_listener("px.test").await;
    let mut b = site.unlisted_listener("px.test").await;
    let mut new = site.listener("new.test").await;
    site.reload(&[(
        &format!("127.0.0.1:{unused}"),
        &format!("127.0.0.1:{}", a.addr().port()),
    )]);
    let mut user = site.user("user").await;

    user.send(chat("r@px.test", "p1", "via a")).await.unwrap();
    let mut link = a.accept(TIMEOUT).await.expect("the stream to proxy a");
    let m = next_stanza(&mut link, "the message via a").await;
    assert_eq!(body(&m).as_deref(), Some("via a"), "{}", text(&m));

    // new.test is not a partner yet: unlisted and denied, it answers as a
    // domain that cannot be found (lync-xmpp-federation.md §11).
    user.send(chat("n@new.test", "n1", "too early"))
        .await
        .unwrap();
    let e = bounce(&mut user, "n1", TIMEOUT).await;
    assert!(text(&e).contains("remote-server-not-found"), "{}", text(&e));

    // Reload: px.test now goes to proxy b, and new.test is a partner.
    site.reload(&[
        (
            &format!("127.0.0.1:{}", a.addr().port()),
            &format!("127.0.0.1:{}", b.addr().port()),
        ),
        (
            "[[partner]]\ndomain = \"px.test\"",
            "[[partner]]\ndomain = \"new.test\"\npartner_type = \"federated\"\n\
             [[partner]]\ndomain = \"px.test\"",
        ),
    ]);
    // The stream to the old route is closed; the next stanza goes to b.
    loop {
        match link.next().await {
            Ok(InEvent::Closed(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    user.send(chat("r@px.test", "p2", "via b")).await.unwrap();
    let mut link = b.accept(TIMEOUT).await.expect("the stream to proxy b");
    let m = next_stanza(&mut link, "the message via b").await;
    assert_eq!(body(&m).as_deref(), Some("via b"), "{}", text(&m));
    assert!(
        a.accept(Duration::from_millis(1)).await.is_err(),
        "the daemon went back to the old proxy"
    );

    // The partner added by reload has its own metric series.
    user.send(chat("n@new.test", "n2", "now")).await.unwrap();
    let mut nl = new.accept(TIMEOUT).await.expect("the stream to new.test");
    let m = next_stanza(&mut nl, "the message to new.test").await;
    assert_eq!(body(&m).as_deref(), Some("now"), "{}", text(&m));
    let scraped = site.server.scrape().await;
    assert_eq!(
        metric(
            &scraped,
            "fedrouter_s2s_connections",
            &[("domain", "new.test"), ("dir", "out"), ("state", "up")]
        ),
        1.0,
        "no series labelled new.test"
    );
    assert_eq!(
        metric(
            &scraped,
            "fedrouter_s2s_connections",
            &[("domain", "px.test"), ("dir", "out"), ("state", "up")]
        ),
        1.0,
        "no series labelled px.test"
    );
}

/// Issue 9, item 7, end to end: a federated partner's users cannot grow a
/// local user's roster past `[user_limits]`, each refused request is
/// answered `<policy-violation/>` over federation, and the user's own
/// roster set past the cap gets the same error.
#[tokio::test]
async fn a_partner_cannot_fill_a_roster_past_the_user_limits_and_the_user_is_refused_too() {
    let site = site(&format!(
        "{}[user_limits]\nmax_roster_items = 3\nmax_inbound_subscriptions_per_domain = 2\n",
        federated("sub.test", "")
    ))
    .await;
    let mut sub = site.listener("sub.test").await;
    let mut user = site.user("user").await;
    let mut peer = S2sPeer::connect(&site.peer_cfg("sub.test"))
        .await
        .expect("sub.test's stream into the daemon");
    for n in 1..=3 {
        peer.send(format!(
            "<presence from='c{n}@sub.test' to='user@{HOME}' type='subscribe' id='s{n}'/>"
        ))
        .await
        .unwrap();
    }
    // The daemon's answers come on its own stream to sub.test: two
    // approvals (each followed by the user's presence) and one refusal,
    // which may overtake them (an approval waits for its roster write).
    let mut link = sub
        .accept(TIMEOUT)
        .await
        .expect("the daemon's stream to sub.test");
    let mut approved = Vec::new();
    let mut refusal = None;
    while approved.len() < 2 || refusal.is_none() {
        let s = next_stanza(&mut link, "the answers to the subscription requests").await;
        match s.type_().as_deref() {
            Some("subscribed") => approved.push(s.to().map(|t| t.into_owned()).unwrap_or_default()),
            Some("error") => refusal = Some(s),
            _ => {}
        }
    }
    let refusal = refusal.unwrap();
    approved.sort();
    assert_eq!(approved, ["c1@sub.test", "c2@sub.test"]);
    assert_eq!(refusal.id().as_deref(), Some("s3"), "{}", text(&refusal));
    assert_eq!(
        refusal.to().as_deref(),
        Some("c3@sub.test"),
        "{}",
        text(&refusal)
    );
    assert!(
        text(&refusal).contains("policy-violation"),
        "{}",
        text(&refusal)
    );

    // The user's own roster set: a third item fits, a fourth does not.
    for (id, jid) in [
        ("add3", "friend@elsewhere.test"),
        ("add4", "another@elsewhere.test"),
    ] {
        user.send(format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'><item jid='{jid}'/></query></iq>"
        ))
        .await
        .unwrap();
    }
    // add4's refusal may overtake add3's result (which waits for its write).
    let (mut r3, mut r4) = (None, None);
    while r3.is_none() || r4.is_none() {
        let s = expect(&mut user, "the answers to add3 and add4", |s| {
            s.name() == "iq"
        })
        .await;
        match s.id().as_deref() {
            Some("add3") => r3 = Some(s),
            Some("add4") => r4 = Some(s),
            _ => {}
        }
    }
    let (r3, r4) = (r3.unwrap(), r4.unwrap());
    assert_eq!(r3.type_().as_deref(), Some("result"), "{}", text(&r3));
    assert_eq!(r4.type_().as_deref(), Some("error"), "{}", text(&r4));
    assert!(text(&r4).contains("policy-violation"), "{}", text(&r4));
    let scrape = site.server.scrape().await;
    assert!(
        scrape.contains(
            "fedrouter_user_limit_refusals_total{limit=\"max_inbound_subscriptions_per_domain\"}"
        ) && scrape.contains("fedrouter_user_limit_refusals_total{limit=\"max_roster_items\"}"),
        "the refusals are counted"
    );
}
