//! The Lync-style federation policy, end to end against the real daemon on
//! loopback: partner types on traffic from remote users (a table: partner
//! type × the local user's roster state × message / subscribe / probe), the
//! personal note (`<status/>`) only for federated partners, unlisted
//! domains, the per-partner negotiation settings, access policies, and the
//! audit log.
//!
//! Remote domains are played by `testkit::s2s`: an [`S2sPeer`]
//! for the stream a remote server opens to the daemon, an [`S2sListener`]
//! (registered in the test DNS) for the daemon's own outbound stream to it.
//! Both authenticate by SASL EXTERNAL with certificates from a test CA the
//! daemon trusts. Waits are on events, bounded by timeouts; where something
//! must NOT happen, a later stanza on the same path (a "fence") proves the
//! daemon got past the point where it would have happened.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use fedrouter::error::StreamCondition;
use fedrouter::pki::PeerVerifier;
use fedrouter::stream::s2s::{AuthMethod, FailReason, Negotiate, PeerPolicy};
use fedrouter::xml::element::Element;
use fedrouter::xml::ns::{
    NS_CLIENT, NS_ROSTER, NS_SERVER, NS_STANZAS, NS_STREAMS, NS_XMPP_STREAMS,
};
use fedrouter::xml::{Framer, FramerEvent, Stanza};
use rustls::RootCertStore;
use testkit::ca::{TestCa, self_signed};
use testkit::client::Client;
use testkit::dns::TestDns;
use testkit::s2s::{
    Attempt, DialbackAuthority, InboundPeer, ListenerConfig, PeerConfig, PeerError, Refused,
    S2sListener, S2sPeer, random_secret, server_tls,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// The daemon's domain.
const HOME: &str = "home.test";
/// One fake remote domain per partner type.
const FED: &str = "fed.test";
const PV: &str = "pv.test";
const PU: &str = "pu.test";

/// How long one step of the partner-type table waits for what it expects.
const STEP: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The site: the daemon for HOME, a test CA, a test DNS server
// ---------------------------------------------------------------------------

struct Site {
    server: TestServer,
    dns: TestDns,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

/// A daemon for `HOME` with a CA-signed certificate, trusting the test CA,
/// resolving s2s through the test DNS server, with the global access policy
/// letting everyone federate. `s2s` goes into `[s2s]`; `extra` is appended
/// (whole tables: `[[partner]]`, more `[[access_policy]]`, `[log]`, ...).
async fn site(s2s: &str, extra: &str) -> Site {
    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("test DNS");
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("policy test CA");
    let ca_path = ca.write(dir.path(), "ca");
    let (cert, key) = ca.issue(&[HOME]).write(dir.path(), HOME);
    let config = format!(
        "[tls]\nca_file = \"{}\"\n[[tls.certificate]]\ndomain = \"{HOME}\"\ncert = \"{}\"\n\
         key = \"{}\"\n[s2s]\nlisten = [\"127.0.0.1:0\"]\ndns_nameservers = [\"{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n{s2s}\n\
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

/// A `[[partner]]` entry with the default (Lync) negotiation settings: TLS
/// and SASL required.
fn partner(domain: &str, partner_type: &str) -> String {
    format!("[[partner]]\ndomain = \"{domain}\"\npartner_type = \"{partner_type}\"\n")
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

    /// A fake remote server for `local` connecting to the daemon, with a
    /// CA-signed certificate for its domain (SASL EXTERNAL).
    fn peer_cfg(&self, local: &str) -> PeerConfig {
        let mut cfg = PeerConfig::new(self.server.daemon.s2s_addrs[0], local, HOME);
        cfg.cert = Some(self.ca.issue(&[local]).certified_key());
        cfg
    }

    /// `domain`'s server receiving the daemon's outbound streams, registered
    /// in DNS. With `verify`, it checks the daemon's certificate against the
    /// test CA and offers SASL EXTERNAL; without, it never does. It answers
    /// `db:verify` with `secret`.
    async fn listener_with(
        &self,
        domain: &str,
        policy: PeerPolicy,
        verify: bool,
        secret: Arc<[u8]>,
        timeout: Duration,
    ) -> S2sListener {
        let roots = self.roots();
        let verifier = verify.then(|| Arc::new(PeerVerifier::with_roots(roots.clone()).unwrap()));
        let l = S2sListener::start(ListenerConfig {
            domain: domain.into(),
            secret,
            server_tls: server_tls(
                self.ca.issue(&[domain]).certified_key(),
                verify.then_some(roots),
            ),
            verifier,
            policy,
            timeout,
            load: Default::default(),
        })
        .await
        .unwrap();
        self.register(domain, l.addr());
        l
    }

    async fn listener(&self, domain: &str, timeout: Duration) -> S2sListener {
        self.listener_with(
            domain,
            PeerPolicy::open_federation(),
            true,
            random_secret(),
            timeout,
        )
        .await
    }

    /// A remote domain both ways: its listener, and its stream into the
    /// daemon authenticated by SASL EXTERNAL.
    async fn remote(&self, domain: &str, timeout: Duration) -> Remote {
        let listener = self.listener(domain, timeout).await;
        let mut cfg = self.peer_cfg(domain);
        cfg.timeout = timeout;
        let peer = S2sPeer::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("{domain} could not connect to the daemon: {e}"));
        assert_eq!(peer.method(), AuthMethod::SaslExternal, "{domain}");
        Remote {
            domain: domain.into(),
            peer,
            listener,
            out: None,
        }
    }

    /// A local user (created here), online with `<show>chat</show>`, after
    /// everything the server sent on sign-in.
    async fn online(&self, name: &str, timeout: Duration) -> Client {
        self.server.add_user(name, "pw");
        let mut c = self.server.client_with_resource(name, "pw", "desk").await;
        c.set_timeout(timeout);
        c.send("<presence><show>chat</show></presence>")
            .await
            .unwrap();
        roster_get(&mut c, &format!("sync-{name}")).await;
        c
    }
}

/// A fake remote domain: `peer` sends into the daemon; what the daemon
/// sends to the domain arrives on `out`, its stream to `listener`.
struct Remote {
    domain: String,
    peer: S2sPeer,
    listener: S2sListener,
    out: Option<InboundPeer>,
}

impl Remote {
    async fn send(&mut self, xml: impl AsRef<[u8]>) {
        self.peer
            .send(xml)
            .await
            .unwrap_or_else(|e| panic!("{}: sending to the daemon: {e}", self.domain));
    }

    /// The daemon's stream to this domain, accepted when first needed.
    async fn out(&mut self) -> Result<&mut InboundPeer, String> {
        if self.out.is_none() {
            let p = self.listener.accept(TIMEOUT).await.map_err(|e| {
                format!(
                    "{}: the daemon never opened a stream to it: {e}",
                    self.domain
                )
            })?;
            assert_eq!(p.remote, HOME);
            self.out = Some(p);
        }
        Ok(self.out.as_mut().unwrap())
    }

    /// The next stanza from the daemon matching `pred`; the ones before it
    /// are pushed to `skipped`.
    async fn wait(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Stanza) -> bool,
        skipped: &mut Vec<String>,
    ) -> Result<Stanza, String> {
        let domain = self.domain.clone();
        let out = self.out().await?;
        loop {
            match out.recv().await {
                Ok(s) if pred(&s) => return Ok(s),
                Ok(s) => skipped.push(format!("{domain} got {}", text(&s))),
                Err(e) => return Err(format!("{domain} waiting for {what}: {e}")),
            }
        }
    }

    /// Like [`wait`](Self::wait), panicking on failure.
    async fn expect(&mut self, what: &str, pred: impl FnMut(&Stanza) -> bool) -> Stanza {
        let mut skipped = Vec::new();
        self.wait(what, pred, &mut skipped)
            .await
            .unwrap_or_else(|e| panic!("{e}; skipped: {skipped:#?}"))
    }
}

// ---------------------------------------------------------------------------
// Stanza helpers
// ---------------------------------------------------------------------------

fn parse(s: &Stanza) -> Option<Element> {
    Element::parse(s.bytes(), NS_CLIENT, &[])
        .or_else(|_| Element::parse(s.bytes(), NS_SERVER, &[]))
        .ok()
}

/// The defined condition of an error stanza.
fn stanza_error(s: &Stanza) -> Option<String> {
    if s.type_().as_deref() != Some("error") {
        return None;
    }
    let el = parse(s)?;
    let e = el.elements().find(|c| c.name == "error")?;
    e.elements()
        .find(|c| c.ns == NS_STANZAS && c.name != "text")
        .map(|c| c.name.clone())
}

/// The `<text/>` of an error stanza.
fn stanza_error_text(s: &Stanza) -> Option<String> {
    let el = parse(s)?;
    let e = el.elements().find(|c| c.name == "error")?;
    e.elements()
        .find(|c| c.ns == NS_STANZAS && c.name == "text")
        .map(|c| c.text())
}

fn is_error_reply(s: &Stanza, name: &str, id: &str) -> bool {
    s.name() == name && s.id().as_deref() == Some(id) && s.type_().as_deref() == Some("error")
}

fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// Presence from exactly the bare JID `from` (subscription stanzas).
fn is_subscription(s: &Stanza, from: &str, ty: &str) -> bool {
    s.name() == "presence" && s.from().as_deref() == Some(from) && s.type_().as_deref() == Some(ty)
}

/// Available presence from one of `user`'s resources.
fn is_available_from(s: &Stanza, user: &str) -> bool {
    s.name() == "presence"
        && s.type_().is_none()
        && s.from().is_some_and(|f| f.starts_with(&format!("{user}/")))
}

/// The roster item for `jid` in a roster result or push.
fn roster_item(iq: &Stanza, jid: &str) -> Option<Element> {
    let el = parse(iq)?;
    let q = el.child("query", NS_ROSTER)?;
    q.children_named("item", NS_ROSTER)
        .find(|i| i.attr("jid") == Some(jid))
        .cloned()
}

fn is_roster_push(s: &Stanza, jid: &str) -> bool {
    s.name() == "iq" && s.type_().as_deref() == Some("set") && roster_item(s, jid).is_some()
}

/// A roster get; returns what arrived before the result, and the result.
/// Everything the user's shard sent the user before handling the get
/// arrives first, so this is also a fence on the user's side.
async fn roster_get(c: &mut Client, id: &str) -> (Vec<Stanza>, Stanza) {
    c.send(format!(
        "<iq type='get' id='{id}'><query xmlns='{NS_ROSTER}'/></iq>"
    ))
    .await
    .unwrap();
    let mut before = Vec::new();
    loop {
        let s = c
            .recv()
            .await
            .unwrap_or_else(|e| panic!("waiting for roster result {id}: {e}"));
        if s.name() == "iq" && s.id().as_deref() == Some(id) {
            assert_eq!(s.type_().as_deref(), Some("result"), "{}", text(&s));
            return (before, s);
        }
        before.push(s);
    }
}

/// The next stanza from the daemon to the user matching `pred`; the ones
/// before it are pushed to `skipped`.
async fn wait_user(
    c: &mut Client,
    what: &str,
    mut pred: impl FnMut(&Stanza) -> bool,
    skipped: &mut Vec<String>,
) -> Result<Stanza, String> {
    loop {
        match c.recv().await {
            Ok(s) if pred(&s) => return Ok(s),
            Ok(s) => skipped.push(format!("the user got {}", text(&s))),
            Err(e) => return Err(format!("the user waiting for {what}: {e}")),
        }
    }
}

/// Waits for an error reply with `id` to the user, at most `limit`.
async fn bounce_within(
    c: &mut Client,
    name: &str,
    id: &str,
    limit: Duration,
) -> Result<Stanza, String> {
    let mut skipped = Vec::new();
    let r = tokio::time::timeout(limit, async {
        loop {
            match c.recv().await {
                Ok(s) if is_error_reply(&s, name, id) => return Ok(s),
                Ok(s) => skipped.push(text(&s)),
                // The client's own receive timeout: `limit` bounds the wait.
                Err(testkit::client::ClientError::Timeout) => {}
                Err(e) => return Err(format!("{e}")),
            }
        }
    })
    .await;
    match r {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("no error reply to {id}: {e}; before: {skipped:?}")),
        Err(_) => Err(format!(
            "no error reply to {id} within {limit:?}; got meanwhile: {skipped:?}"
        )),
    }
}

/// Polls `cond` (every 50 ms, at most `TIMEOUT`).
async fn eventually<F: std::future::Future<Output = bool>>(mut cond: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Partner types × roster state: the table
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    /// The local user gets the message.
    Delivered,
    /// The remote gets `service-unavailable` back; the user gets nothing.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sub {
    /// Approved on the user's behalf: the remote gets `subscribed` and the
    /// user's current presence; the user gets a roster push with
    /// subscription `from` (and never the request itself).
    Approved,
    /// The request reaches the user, who has not answered: nothing goes
    /// back to the remote; the item stays subscription `none`.
    ToUser,
    /// Dropped silently: nothing to the user, nothing back, no roster item.
    Dropped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// The remote gets the user's current presence.
    Answered,
    /// Nothing at all comes back.
    Unanswered,
}

/// What the local user did before the remote user wrote.
const STATES: [&str; 3] = [
    // Nothing: the remote JID is not in the roster.
    "none", // A roster set (`<item jid='remote'/>`): listed, subscription none.
    "added",
    // `<presence type='subscribed' to='remote'/>` before any request: a
    // pre-approval (RFC 6121 §3.4), listed with approved='true'.
    "pre",
];

/// The expected outcome of each cell. Each cell is run in this order on
/// the same pair (remote user, local user): message, then subscribe, then
/// probe. A probe is answered only when the prober has a subscription
/// `from` (RFC 6121 §4.3.2), so the probe column follows the subscribe
/// column: answered exactly when the subscription was approved.
///
/// | partner type      | roster state | message   | subscribe | probe      |
/// |-------------------|--------------|-----------|-----------|------------|
/// | federated         | none         | delivered | approved  | answered   |
/// | federated         | added        | delivered | approved  | answered   |
/// | federated         | pre          | delivered | approved  | answered   |
/// | public_verified   | none         | delivered | approved  | answered   |
/// | public_verified   | added        | delivered | approved  | answered   |
/// | public_verified   | pre          | delivered | approved  | answered   |
/// | public_unverified | none         | refused   | dropped   | unanswered |
/// | public_unverified | added        | delivered | to user   | unanswered |
/// | public_unverified | pre          | delivered | approved  | answered   |
///
/// public_unverified + added: the request reaches the user, who has not
/// approved it, so the prober has no `from` and the probe is not answered.
/// public_unverified + pre: the pre-approval answers the request (§3.4).
fn expected(partner_type: &str, state: &str) -> (Msg, Sub, Probe) {
    match (partner_type, state) {
        ("public_unverified", "none") => (Msg::Refused, Sub::Dropped, Probe::Unanswered),
        ("public_unverified", "added") => (Msg::Delivered, Sub::ToUser, Probe::Unanswered),
        ("public_unverified", "pre") => (Msg::Delivered, Sub::Approved, Probe::Answered),
        ("federated" | "public_verified", _) => (Msg::Delivered, Sub::Approved, Probe::Answered),
        other => unreachable!("{other:?}"),
    }
}

/// The remote user of a cell: one per (domain, state).
fn remote_user(domain: &str, state: &str) -> String {
    format!("from-{state}@{domain}")
}

/// Runs one cell; returns what went wrong.
async fn cell(
    remote: &mut Remote,
    partner_type: &str,
    user: &mut Client,
    state: &str,
) -> Vec<String> {
    let (msg, sub, probe) = expected(partner_type, state);
    let domain = remote.domain.clone();
    let r = remote_user(&domain, state);
    let local = format!("{state}@{HOME}");
    let tag = format!("{domain}-{state}");
    let mut errors = Vec::new();
    // Stanzas that arrived while waiting for another: none is expected.
    let mut unexpected = Vec::new();

    // 1. A chat message.
    let id = format!("msg-{tag}");
    remote
        .send(format!(
            "<message from='{r}/phone' to='{local}' id='{id}' type='chat'><body>hello {tag}</body></message>"
        ))
        .await;
    match msg {
        Msg::Delivered => {
            match wait_user(
                user,
                "the message",
                |s| s.name() == "message",
                &mut unexpected,
            )
            .await
            {
                Ok(m) => {
                    if m.id().as_deref() != Some(&*id)
                        || m.type_().as_deref() == Some("error")
                        || body(&m).as_deref() != Some(&*format!("hello {tag}"))
                    {
                        errors.push(format!(
                            "message: expected delivered, the user got {}",
                            text(&m)
                        ));
                    }
                }
                Err(e) => errors.push(format!("message: expected delivered: {e}")),
            }
        }
        Msg::Refused => {
            match remote
                .wait("the bounce", |s| s.name() == "message", &mut unexpected)
                .await
            {
                Ok(b) => {
                    let ok = is_error_reply(&b, "message", &id)
                        && stanza_error(&b).as_deref() == Some("service-unavailable")
                        && b.from().as_deref() == Some(&*local)
                        && b.to().is_some_and(|t| bare(&t) == r);
                    if !ok {
                        errors.push(format!(
                            "message: expected a service-unavailable bounce, {domain} got {}",
                            text(&b)
                        ));
                    }
                }
                Err(e) => errors.push(format!("message: expected refused: {e}")),
            }
        }
    }

    // 2. A subscription request.
    remote
        .send(format!(
            "<presence from='{r}' to='{local}' type='subscribe'/>"
        ))
        .await;
    match sub {
        Sub::Approved => {
            match remote
                .wait(
                    "subscribed",
                    |s| s.name() == "presence" && s.type_().is_some(),
                    &mut unexpected,
                )
                .await
            {
                Ok(s) if is_subscription(&s, &local, "subscribed") => {}
                Ok(s) => errors.push(format!(
                    "subscribe: expected subscribed back, {domain} got {}",
                    text(&s)
                )),
                Err(e) => errors.push(format!("subscribe: expected subscribed back: {e}")),
            }
            match remote
                .wait("the user's presence after approval", |s| s.name() == "presence", &mut unexpected)
                .await
            {
                Ok(p) if is_available_from(&p, &local) && text(&p).contains("<show>chat</show>") => {}
                Ok(p) => errors.push(format!(
                    "subscribe: expected the user's current presence after subscribed, {domain} got {}",
                    text(&p)
                )),
                Err(e) => errors.push(format!("subscribe: expected the user's current presence: {e}")),
            }
            match wait_user(
                user,
                "the roster push",
                |s| s.name() == "iq",
                &mut unexpected,
            )
            .await
            {
                Ok(push) => {
                    let item = roster_item(&push, &r);
                    if !is_roster_push(&push, &r)
                        || item.as_ref().and_then(|i| i.attr("subscription")) != Some("from")
                    {
                        errors.push(format!(
                            "subscribe: expected a roster push with subscription 'from', the user got {}",
                            text(&push)
                        ));
                    }
                }
                Err(e) => errors.push(format!("subscribe: expected a roster push: {e}")),
            }
        }
        Sub::ToUser => {
            match wait_user(
                user,
                "the request",
                |s| s.name() == "presence",
                &mut unexpected,
            )
            .await
            {
                Ok(p) if is_subscription(&p, &r, "subscribe") => {}
                Ok(p) => errors.push(format!(
                    "subscribe: expected the request delivered to the user, who got {}",
                    text(&p)
                )),
                Err(e) => errors.push(format!("subscribe: expected the request delivered: {e}")),
            }
        }
        Sub::Dropped => {}
    }

    // 3. A presence probe (the user is online with <show>chat</show>).
    remote
        .send(format!("<presence from='{r}' to='{local}' type='probe'/>"))
        .await;
    if probe == Probe::Answered {
        match remote
            .wait(
                "the probe's answer",
                |s| s.name() == "presence",
                &mut unexpected,
            )
            .await
        {
            Ok(p) if is_available_from(&p, &local) && text(&p).contains("<show>chat</show>") => {}
            Ok(p) => errors.push(format!(
                "probe: expected the user's presence, {domain} got {}",
                text(&p)
            )),
            Err(e) => errors.push(format!("probe: expected an answer: {e}")),
        }
    }

    // Fences. The daemon answers an IQ to a bare JID on the user's behalf
    // (an error here, whatever the partner type): once the answer is back,
    // everything the daemon sent this remote for steps 1-3 has arrived.
    let fence = format!("fence-{tag}");
    remote
        .send(format!(
            "<iq type='get' id='{fence}' from='{r}/phone' to='{local}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    if let Err(e) = remote
        .wait(
            "the fence",
            |s| s.name() == "iq" && s.id().as_deref() == Some(&*fence),
            &mut unexpected,
        )
        .await
    {
        errors.push(format!("fence: {e}"));
    }
    // And a roster get: what the user got before its result, and the item.
    let (before, roster) = roster_get(user, &format!("roster-{tag}")).await;
    unexpected.extend(before.iter().map(|s| format!("the user got {}", text(s))));
    let item = roster_item(&roster, &r);
    let sub_attr = item
        .as_ref()
        .map(|i| i.attr("subscription").unwrap_or("none").to_string());
    let expected_item = match sub {
        Sub::Approved => Some("from"),
        Sub::ToUser => Some("none"),
        Sub::Dropped => None,
    };
    if sub_attr.as_deref() != expected_item {
        errors.push(format!(
            "roster: expected the item {}, found {}",
            expected_item.map_or("absent".to_string(), |s| format!("with subscription '{s}'")),
            item.as_ref()
                .map_or("none".to_string(), |i| i.to_string_in(NS_ROSTER))
        ));
    }
    if let Some(i) = &item
        && (i.attr("approved").is_some() || i.attr("ask").is_some())
        && sub != Sub::ToUser
    {
        errors.push(format!(
            "roster: the item should carry no pending state any more: {}",
            i.to_string_in(NS_ROSTER)
        ));
    }
    for u in unexpected {
        errors.push(format!("unexpected: {u}"));
    }
    errors
        .into_iter()
        .map(|e| {
            format!(
                "[{partner_type} × {state}: expected message {msg:?}, subscribe {sub:?}, probe {probe:?}] {e}"
            )
        })
        .collect()
}

#[tokio::test]
async fn partner_types_decide_what_reaches_a_local_user_from_remote_users() {
    let types = [
        (FED, "federated"),
        (PV, "public_verified"),
        (PU, "public_unverified"),
    ];
    let partners: String = types.iter().map(|(d, t)| partner(d, t)).collect();
    let site = site("", &partners).await;
    let mut remotes = Vec::new();
    for (d, t) in types {
        remotes.push((site.remote(d, STEP).await, t));
    }
    // One local user per roster state, each online with <show>chat</show>.
    let mut users = Vec::new();
    for state in STATES {
        let mut u = site.online(state, STEP).await;
        for (d, _) in types {
            let r = remote_user(d, state);
            match state {
                "none" => {}
                "added" => add_contact(&mut u, &r).await,
                "pre" => {
                    u.send(format!("<presence type='subscribed' to='{r}'/>"))
                        .await
                        .unwrap();
                    // Pushed once stored: wait, so no push is left over.
                    expect(&mut u, "the pre-approval's roster push", |s| {
                        is_roster_push(s, &r)
                    })
                    .await;
                }
                _ => unreachable!(),
            }
        }
        // The roster is as the state says before any remote writes.
        let (_, roster) = roster_get(&mut u, &format!("setup-{state}")).await;
        for (d, _) in types {
            let r = remote_user(d, state);
            let item = roster_item(&roster, &r);
            match state {
                "none" => assert!(item.is_none(), "{}", text(&roster)),
                "added" => assert!(
                    item.as_ref()
                        .is_some_and(|i| i.attr("subscription").unwrap_or("none") == "none"
                            && i.attr("approved").is_none()),
                    "{state}: {}",
                    text(&roster)
                ),
                _ => assert!(
                    item.as_ref()
                        .is_some_and(|i| i.attr("subscription").unwrap_or("none") == "none"
                            && i.attr("approved") == Some("true")),
                    "{state}: a pre-approval is an item with approved='true': {}",
                    text(&roster)
                ),
            }
        }
        users.push((state, u));
    }

    let mut failures = Vec::new();
    for (remote, t) in remotes.iter_mut() {
        for (state, user) in users.iter_mut() {
            failures.extend(cell(remote, t, user, state).await);
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) in the partner-type table:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The personal note
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_status_note_reaches_federated_contacts_only() {
    let types = [
        (FED, "federated"),
        (PV, "public_verified"),
        (PU, "public_unverified"),
    ];
    let partners: String = types.iter().map(|(d, t)| partner(d, t)).collect();
    let site = site("", &partners).await;
    let mut user = site.online("user", TIMEOUT).await;
    let me = format!("user@{HOME}");
    let mut remotes = Vec::new();
    for (d, t) in types {
        let mut remote = site.remote(d, TIMEOUT).await;
        let contact = format!("contact@{d}");
        if t == "public_unverified" {
            // Only a user's own approval lets such a contact subscribe: a
            // pre-approval.
            user.send(format!("<presence type='subscribed' to='{contact}'/>"))
                .await
                .unwrap();
            expect(&mut user, "the pre-approval's roster push", |s| {
                is_roster_push(s, &contact)
            })
            .await;
        }
        remote
            .send(format!(
                "<presence from='{contact}' to='{me}' type='subscribe'/>"
            ))
            .await;
        remote
            .expect("subscribed", |s| is_subscription(s, &me, "subscribed"))
            .await;
        remote
            .expect("presence after subscribed", |s| is_available_from(s, &me))
            .await;
        remotes.push((remote, t));
    }
    let (_, roster) = roster_get(&mut user, "subscriptions").await;
    for (d, _) in types {
        let item = roster_item(&roster, &format!("contact@{d}"));
        assert_eq!(
            item.as_ref().and_then(|i| i.attr("subscription")),
            Some("from"),
            "{}",
            text(&roster)
        );
    }

    user.send("<presence><show>away</show><status>secret note</status></presence>")
        .await
        .unwrap();
    for (remote, t) in remotes.iter_mut() {
        let p = remote
            .expect("the broadcast", |s| {
                is_available_from(s, &me) && text(s).contains("<show>away</show>")
            })
            .await;
        if *t == "federated" {
            assert!(
                text(&p).contains("secret note"),
                "a federated contact gets the status note: {}",
                text(&p)
            );
        } else {
            assert!(
                !text(&p).contains("secret note") && !text(&p).contains("<status"),
                "a {t} contact gets presence without the status note: {}",
                text(&p)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Unlisted domains
// ---------------------------------------------------------------------------

/// The stream error that refused a stream, during the negotiation or right
/// after it looked finished.
async fn refusal(r: Result<S2sPeer, PeerError>) -> fedrouter::error::StreamError {
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

#[tokio::test]
async fn unlisted_domains_are_denied_by_default_both_ways() {
    let site = site("", &partner(FED, "federated")).await;
    // open.test exists and would answer: only the policy stands in the way.
    let mut open = site.listener("open.test", TIMEOUT).await;
    let mut fed = site.remote(FED, TIMEOUT).await;
    let mut user = site.online("user", TIMEOUT).await;

    user.send("<message to='x@open.test' id='u1' type='chat'><body>hi</body></message>")
        .await
        .unwrap();
    let b = bounce_within(&mut user, "message", "u1", TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("a message to an unlisted domain: {e}"));
    // lync-xmpp-federation.md §11: a remote-server-not-found-style error.
    assert_eq!(
        stanza_error(&b).as_deref(),
        Some("remote-server-not-found"),
        "{}",
        text(&b)
    );
    // The listed partner is reachable (control).
    user.send("<message to='r@fed.test' id='u2' type='chat'><body>to a partner</body></message>")
        .await
        .unwrap();
    let m = fed.expect("the message", |s| s.name() == "message").await;
    assert_eq!(m.id().as_deref(), Some("u2"), "{}", text(&m));
    assert!(
        open.accept(Duration::from_millis(1)).await.is_err(),
        "the daemon opened a stream to an unlisted domain"
    );

    // Inbound: a stream from the unlisted domain, with a good certificate.
    let e = refusal(S2sPeer::connect(&site.peer_cfg("open.test")).await).await;
    assert_eq!(e.condition, StreamCondition::PolicyViolation, "{e}");

    // Both refusals are counted.
    let m = site.server.scrape().await;
    for dir in ["out", "in"] {
        assert!(
            metric(
                &m,
                "fedrouter_policy_refusals_total",
                &[("reason", "unlisted_domain"), ("dir", dir)]
            ) >= 1.0,
            "refusal {dir} not counted"
        );
    }
}

#[tokio::test]
async fn unlisted_domains_federate_when_allowed() {
    let site = site("unlisted_domains = \"allow\"\n", "").await;
    let mut open = site.listener("open.test", TIMEOUT).await;
    let mut user = site.online("user", TIMEOUT).await;
    // Unlisted domains are public unverified partners by default: the user
    // adds the contact before anything from it may reach her.
    add_contact(&mut user, "x@open.test").await;

    user.send("<message to='x@open.test' id='o1' type='chat'><body>out</body></message>")
        .await
        .unwrap();
    let m = open
        .accept(TIMEOUT)
        .await
        .expect("the daemon's stream to open.test")
        .recv()
        .await
        .expect("the message");
    assert_eq!(body(&m).as_deref(), Some("out"), "{}", text(&m));

    let mut peer = S2sPeer::connect(&site.peer_cfg("open.test"))
        .await
        .expect("an unlisted domain may connect when allowed");
    peer.send(format!(
        "<message from='x@open.test/r' to='user@{HOME}' id='o2' type='chat'><body>in</body></message>"
    ))
    .await
    .unwrap();
    let m = expect(&mut user, "the message from open.test", |s| {
        s.name() == "message"
    })
    .await;
    assert_eq!(body(&m).as_deref(), Some("in"), "{}", text(&m));
}

// ---------------------------------------------------------------------------
// Negotiation settings
// ---------------------------------------------------------------------------

/// A plain TCP s2s stream written by hand, for a peer that does what the
/// negotiation machines never would (going on without required TLS).
struct RawS2s {
    io: tokio::net::TcpStream,
    framer: Framer,
}

#[derive(Debug)]
enum RawEvent {
    Stanza(Stanza),
    StreamError(String),
    Closed,
    Timeout,
    BadXml(#[allow(dead_code)] String),
}

fn stream_condition(s: &Stanza) -> String {
    Element::parse(s.bytes(), NS_SERVER, &[("stream", NS_STREAMS)])
        .ok()
        .and_then(|el| {
            el.elements()
                .find(|c| c.ns == NS_XMPP_STREAMS && c.name != "text")
                .map(|c| c.name.clone())
        })
        .unwrap_or_else(|| text(s))
}

impl RawS2s {
    /// Opens a stream from `from`; returns it with the features offered.
    async fn open(addr: SocketAddr, from: &str) -> (RawS2s, String) {
        let io = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut r = RawS2s {
            io,
            framer: Framer::new(NS_SERVER, 1 << 20),
        };
        r.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:stream='{NS_STREAMS}' xmlns:db='jabber:server:dialback' \
             from='{from}' to='{HOME}' version='1.0'>"
        ))
        .await;
        loop {
            match r.next().await {
                RawEvent::Stanza(s) if s.name() == "stream:features" => return (r, text(&s)),
                RawEvent::Stanza(_) => {}
                other => panic!("{from}: no features: {other:?}"),
            }
        }
    }

    async fn send(&mut self, xml: &str) {
        self.io.write_all(xml.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    async fn next(&mut self) -> RawEvent {
        let r = tokio::time::timeout(TIMEOUT, async {
            loop {
                match self.framer.next() {
                    Ok(Some(FramerEvent::StreamOpen(_))) => continue,
                    Ok(Some(FramerEvent::StreamClose)) => return RawEvent::Closed,
                    Ok(Some(FramerEvent::Stanza(s))) if s.name() == "stream:error" => {
                        return RawEvent::StreamError(stream_condition(&s));
                    }
                    Ok(Some(FramerEvent::Stanza(s))) => return RawEvent::Stanza(s),
                    Ok(None) => {}
                    Err(e) => return RawEvent::BadXml(format!("{e}")),
                }
                let n = {
                    let mut buf = self.framer.read_buf();
                    self.io.read_buf(&mut buf).await
                };
                if !matches!(n, Ok(n) if n > 0) {
                    return RawEvent::Closed;
                }
            }
        })
        .await;
        r.unwrap_or(RawEvent::Timeout)
    }
}

/// A dialback key offered for `from` must not be accepted: the answer is a
/// dialback error or `invalid`, or a stream error. Returns what came.
async fn dialback_refused(answer: Result<Stanza, PeerError>, from: &str) -> String {
    match answer {
        Ok(s) if s.local_name() == "result" => {
            assert_ne!(
                s.type_().as_deref(),
                Some("valid"),
                "dialback for {from} accepted: {}",
                text(&s)
            );
            text(&s)
        }
        Ok(s) => panic!("{from}: unexpected answer to a dialback key: {}", text(&s)),
        Err(PeerError::Stream(e)) => format!("stream error {e}"),
        Err(e) => panic!("{from}: no answer to a dialback key: {e}"),
    }
}

/// The user's message to `to` must come back as an error within `TIMEOUT`
/// of sending it, after the daemon's negotiation with `domain` failed, and
/// say why (a stanza error `<text/>`). Returns the bounce.
///
/// A negotiation refused by the local partner settings cannot succeed by
/// retrying, so the sender is told at once rather than after
/// `gateway.stream_establishment_timeout` (60 s by default), when a
/// transient failure would be bounced.
async fn bounced_by_negotiation(site: &Site, user: &mut Client, to: &str, id: &str) -> Stanza {
    let domain = to.split('@').nth(1).unwrap();
    let sent = Instant::now();
    user.send(format!(
        "<message to='{to}' id='{id}' type='chat'><body>through?</body></message>"
    ))
    .await
    .unwrap();
    let failed = eventually(|| async {
        let m = site.server.scrape().await;
        metric(
            &m,
            "fedrouter_s2s_failures_total",
            // `refused`: the peer and the partner settings cannot agree,
            // which no retry fixes.
            &[("domain", domain), ("stage", "refused")],
        ) >= 1.0
    })
    .await;
    assert!(
        failed,
        "the daemon's outbound negotiation with {domain} never failed: {}",
        site.server
            .scrape()
            .await
            .lines()
            .filter(|l| l.contains(domain))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let left = TIMEOUT.saturating_sub(sent.elapsed());
    let b = bounce_within(user, "message", id, left)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the negotiation with {domain} failed (local policy), but the message was not \
             bounced within {TIMEOUT:?} of sending it: {e}"
            )
        });
    assert!(stanza_error(&b).is_some(), "{}", text(&b));
    assert!(
        stanza_error_text(&b).is_some_and(|t| !t.trim().is_empty()),
        "the bounce ({}) does not say why the stream to {domain} failed: {}",
        stanza_error(&b).unwrap_or_default(),
        text(&b)
    );
    b
}

#[tokio::test]
async fn tls_required_refuses_a_partner_that_cannot_do_tls_both_ways() {
    let extra = "[[partner]]\ndomain = \"notls.test\"\npartner_type = \"federated\"\n\
                 tls_negotiation = \"required\"\nsasl_negotiation = \"optional\"\n\
                 support_dialback_negotiation = true\n\
                 [[partner]]\ndomain = \"tlsopt.test\"\npartner_type = \"federated\"\n\
                 tls_negotiation = \"optional\"\nsasl_negotiation = \"not_supported\"\n\
                 support_dialback_negotiation = true\n";
    let site = site("", extra).await;
    let no_tls = PeerPolicy {
        tls: Negotiate::NotSupported,
        sasl: Negotiate::NotSupported,
        dialback: true,
    };
    // notls.test's server does no TLS.
    let _notls = site
        .listener_with(
            "notls.test",
            no_tls.clone(),
            false,
            random_secret(),
            TIMEOUT,
        )
        .await;
    let mut user = site.online("user", TIMEOUT).await;

    // Inbound: the daemon demands TLS and offers nothing without it.
    let mut cfg = site.peer_cfg("notls.test");
    cfg.cert = None;
    cfg.policy = no_tls.clone();
    match S2sPeer::attempt(&cfg).await.expect("attempt") {
        Attempt::Ready(p) => panic!("a peer without TLS authenticated by {:?}", p.method()),
        Attempt::Refused(r) => {
            assert_eq!(
                r.failure.reason,
                FailReason::TlsOfferedButNotSupportedAndRequiredByPeer,
                "{}",
                r.failure
            );
            let f = r.features().map(text).unwrap_or_default();
            assert!(
                f.contains("starttls")
                    && f.contains("required")
                    && !f.contains("dialback")
                    && !f.contains("mechanisms"),
                "the features without TLS: {f}"
            );
        }
    }
    // A peer that goes on without TLS regardless: dialback in the clear is
    // refused, and the stream is closed with a stream error.
    let (mut raw, features) = RawS2s::open(site.server.daemon.s2s_addrs[0], "notls.test").await;
    assert!(features.contains("required"), "{features}");
    raw.send(&format!(
        "<db:result from='notls.test' to='{HOME}'>0123456789abcdef</db:result>"
    ))
    .await;
    let mut events = vec![raw.next().await];
    if let RawEvent::Stanza(s) = &events[0] {
        assert_ne!(s.type_().as_deref(), Some("valid"), "{}", text(s));
        raw.send(&format!(
            "<message from='x@notls.test' to='user@{HOME}'><body>in the clear</body></message>"
        ))
        .await;
        events.push(raw.next().await);
    }
    match events.last().unwrap() {
        RawEvent::StreamError(c) => assert!(
            c == "policy-violation" || c == "not-authorized",
            "stream error {c}"
        ),
        other => panic!("expected a stream error without TLS, got {events:?} (last {other:?})"),
    }

    // Control: where TLS is optional, the same peer gets in by dialback.
    let secret = random_secret();
    let tls = server_tls(self_signed(&["tlsopt.test"]).certified_key(), None);
    let authority = DialbackAuthority::start("tlsopt.test", secret.clone(), tls).await;
    site.register("tlsopt.test", authority.addr());
    let mut cfg = site.peer_cfg("tlsopt.test");
    cfg.cert = None;
    cfg.policy = no_tls;
    cfg.secret = secret;
    let mut p = S2sPeer::connect(&cfg)
        .await
        .expect("tls_negotiation = optional lets a peer without TLS in by dialback");
    assert_eq!(p.method(), AuthMethod::DialbackPlain);
    p.send(format!(
        "<message from='x@tlsopt.test' to='user@{HOME}' type='chat'><body>plain</body></message>"
    ))
    .await
    .unwrap();
    let m = expect(&mut user, "the message over TCP dialback", |s| {
        s.name() == "message"
    })
    .await;
    assert_eq!(body(&m).as_deref(), Some("plain"), "{}", text(&m));

    // Outbound: notls.test's server offers no STARTTLS.
    let b = bounced_by_negotiation(&site, &mut user, "x@notls.test", "n1").await;
    eprintln!("bounce for notls.test: {}", text(&b));
}

#[tokio::test]
async fn sasl_required_refuses_a_partner_without_a_valid_certificate_both_ways() {
    let extra = "[[partner]]\ndomain = \"sasl.test\"\npartner_type = \"federated\"\n\
                 tls_negotiation = \"required\"\nsasl_negotiation = \"required\"\n\
                 support_dialback_negotiation = false\n";
    let site = site("", extra).await;
    let secret = random_secret();
    // sasl.test's server cannot check the daemon's certificate (no SASL
    // EXTERNAL), and would confirm dialback keys made with `secret`.
    let listener = site
        .listener_with(
            "sasl.test",
            PeerPolicy::open_federation(),
            false,
            secret.clone(),
            TIMEOUT,
        )
        .await;
    let mut user = site.online("user", TIMEOUT).await;

    // Inbound, with a certificate nobody trusts: no EXTERNAL, no dialback.
    let mut cfg = site.peer_cfg("sasl.test");
    cfg.cert = Some(self_signed(&["sasl.test"]).certified_key());
    cfg.secret = secret;
    let mut r: Refused = match S2sPeer::attempt(&cfg).await.expect("attempt") {
        Attempt::Ready(p) => panic!(
            "authenticated by {:?} without a valid certificate",
            p.method()
        ),
        Attempt::Refused(r) => r,
    };
    let f = r.features().map(text).unwrap_or_default();
    assert!(
        !f.contains("EXTERNAL") && !f.contains("dialback"),
        "the features after TLS: {f}"
    );
    // A dialback key anyway (a key sasl.test's server would confirm).
    let _ = r
        .send(format!(
            "<db:result xmlns:db='jabber:server:dialback' from='sasl.test' to='{HOME}'>0123456789abcdef</db:result>"
        ))
        .await;
    let answer = dialback_refused(r.recv().await, "sasl.test").await;
    assert_eq!(
        listener.verify_requests(),
        0,
        "the daemon checked a dialback key where SASL is required ({answer})"
    );
    let _ = r
        .send(format!(
            "<message from='x@sasl.test' to='user@{HOME}'><body>no cert</body></message>"
        ))
        .await;
    match r.expect_stream_error().await {
        Ok(e) => assert!(
            matches!(
                e.condition,
                StreamCondition::NotAuthorized | StreamCondition::PolicyViolation
            ),
            "{e}"
        ),
        Err(e) => panic!("the unauthenticated stream did not get a stream error: {e}"),
    }

    // Control: the CA-signed certificate gets in by SASL EXTERNAL.
    let mut p = S2sPeer::connect(&site.peer_cfg("sasl.test")).await.unwrap();
    assert_eq!(p.method(), AuthMethod::SaslExternal);
    p.send(format!(
        "<message from='x@sasl.test' to='user@{HOME}' type='chat'><body>certified</body></message>"
    ))
    .await
    .unwrap();
    let m = expect(&mut user, "the message", |s| s.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("certified"), "{}", text(&m));

    // Outbound: sasl.test offers no SASL EXTERNAL.
    let b = bounced_by_negotiation(&site, &mut user, "x@sasl.test", "s1").await;
    eprintln!("bounce for sasl.test: {}", text(&b));
}

#[tokio::test]
async fn support_dialback_negotiation_false_refuses_dialback_both_ways() {
    let extra = "[[partner]]\ndomain = \"nodb.test\"\npartner_type = \"federated\"\n\
                 tls_negotiation = \"required\"\nsasl_negotiation = \"optional\"\n\
                 support_dialback_negotiation = false\n\
                 [[partner]]\ndomain = \"db.test\"\npartner_type = \"federated\"\n\
                 tls_negotiation = \"required\"\nsasl_negotiation = \"optional\"\n\
                 support_dialback_negotiation = true\n";
    let site = site("", extra).await;
    let nodb_secret = random_secret();
    let db_secret = random_secret();
    // Both servers confirm keys made with their secret and cannot check
    // the daemon's certificate.
    let nodb = site
        .listener_with(
            "nodb.test",
            PeerPolicy::open_federation(),
            false,
            nodb_secret.clone(),
            TIMEOUT,
        )
        .await;
    let _db = site
        .listener_with(
            "db.test",
            PeerPolicy::open_federation(),
            false,
            db_secret.clone(),
            TIMEOUT,
        )
        .await;
    let mut user = site.online("user", TIMEOUT).await;

    // Inbound, no certificate, a key nodb.test's server would confirm.
    let mut cfg = site.peer_cfg("nodb.test");
    cfg.cert = None;
    cfg.secret = nodb_secret;
    let mut r = match S2sPeer::attempt(&cfg).await.expect("attempt") {
        Attempt::Ready(p) => panic!("authenticated by {:?} with dialback off", p.method()),
        Attempt::Refused(r) => r,
    };
    // The peer may try dialback anyway (the daemon's stream header declares
    // the dialback namespace, which XEP-0220 counts as support); then it is
    // refused.
    assert!(
        matches!(
            &r.failure.reason,
            FailReason::DialbackNotOffered
                | FailReason::DialbackRefused
                | FailReason::DialbackError(_)
        ),
        "{}",
        r.failure
    );
    let f = r.features().map(text).unwrap_or_default();
    assert!(
        !f.contains("<dialback"),
        "the features after TLS offer dialback: {f}"
    );
    let _ = r
        .send(format!(
            "<db:result xmlns:db='jabber:server:dialback' from='nodb.test' to='{HOME}'>0123456789abcdef</db:result>"
        ))
        .await;
    let answer = dialback_refused(r.recv().await, "nodb.test").await;
    assert_eq!(
        nodb.verify_requests(),
        0,
        "the daemon checked a dialback key with dialback off ({answer})"
    );

    // Control: with dialback on, the same kind of peer gets in.
    let mut cfg = site.peer_cfg("db.test");
    cfg.cert = None;
    cfg.secret = db_secret;
    let mut p = S2sPeer::connect(&cfg)
        .await
        .expect("support_dialback_negotiation = true accepts dialback");
    assert_eq!(p.method(), AuthMethod::DialbackTls);
    p.send(format!(
        "<message from='x@db.test' to='user@{HOME}' type='chat'><body>vouched</body></message>"
    ))
    .await
    .unwrap();
    let m = expect(&mut user, "the message", |s| s.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("vouched"), "{}", text(&m));

    // Outbound: nodb.test offers dialback only; the daemon may not use it.
    let b = bounced_by_negotiation(&site, &mut user, "x@nodb.test", "d1").await;
    eprintln!("bounce for nodb.test: {}", text(&b));
}

// ---------------------------------------------------------------------------
// Access policies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_user_without_xmpp_access_neither_reaches_nor_is_reached_by_remote_domains() {
    let extra = format!(
        "{}[[access_policy]]\nname = \"no-federation\"\nenable_federation_access = true\n\
         enable_xmpp_access = false\nusers = [\"nofed@{HOME}\"]\n",
        partner(FED, "federated")
    );
    let site = site("", &extra).await;
    let mut fed = site.remote(FED, TIMEOUT).await;
    let mut nofed = site.online("nofed", TIMEOUT).await;
    let mut user = site.online("user", TIMEOUT).await;

    // Outbound: forbidden, whatever the stanza.
    nofed
        .send("<message to='r@fed.test' id='a1' type='chat'><body>out</body></message>")
        .await
        .unwrap();
    let b = bounce_within(&mut nofed, "message", "a1", TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        stanza_error(&b).as_deref(),
        Some("forbidden"),
        "{}",
        text(&b)
    );
    nofed
        .send("<iq to='r@fed.test/phone' id='a2' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await
        .unwrap();
    let b = bounce_within(&mut nofed, "iq", "a2", TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        stanza_error(&b).as_deref(),
        Some("forbidden"),
        "{}",
        text(&b)
    );
    nofed
        .send("<presence to='r@fed.test' id='a3' type='subscribe'/>")
        .await
        .unwrap();
    // Subscription requests are re-stamped on the way out (the id is not
    // kept), so the bounce is known by its sender.
    let b = expect(&mut nofed, "the subscription request's bounce", |s| {
        s.name() == "presence" && s.type_().as_deref() == Some("error")
    })
    .await;
    assert_eq!(b.from().as_deref(), Some("r@fed.test"), "{}", text(&b));
    assert_eq!(
        stanza_error(&b).as_deref(),
        Some("forbidden"),
        "{}",
        text(&b)
    );
    // Nothing of that left: the next thing fed.test gets is another user's.
    user.send("<message to='r@fed.test' id='c1' type='chat'><body>allowed</body></message>")
        .await
        .unwrap();
    let m = fed.expect("a stanza", |_| true).await;
    assert_eq!(m.id().as_deref(), Some("c1"), "{}", text(&m));

    // Inbound: the user looks like one who does not exist. A subscription
    // request and a probe first, then a message whose bounce is the fence.
    let mut errors = Vec::new();
    fed.send(format!(
        "<presence from='r@fed.test' to='nofed@{HOME}' type='subscribe'/>"
    ))
    .await;
    fed.send(format!(
        "<presence from='r@fed.test' to='nofed@{HOME}' type='probe'/>"
    ))
    .await;
    fed.send(format!(
        "<message from='r@fed.test/phone' to='nofed@{HOME}' id='i1' type='chat'><body>in</body></message>"
    ))
    .await;
    let mut skipped = Vec::new();
    match fed
        .wait("the bounce", |s| s.name() == "message", &mut skipped)
        .await
    {
        Ok(b)
            if is_error_reply(&b, "message", "i1")
                && stanza_error(&b).as_deref() == Some("service-unavailable") => {}
        Ok(b) => errors.push(format!(
            "expected a service-unavailable bounce, fed.test got {}",
            text(&b)
        )),
        Err(e) => {
            let m = site.server.scrape().await;
            errors.push(format!(
                "a message to a user without access: {e}; refusals: {}",
                m.lines()
                    .filter(|l| l.starts_with("fedrouter_policy_refusals_total"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
    for s in &skipped {
        if s.contains("type='subscribed'") || s.contains("<show>") {
            errors.push(format!("the user's presence or approval went out: {s}"));
        }
    }

    // Local chat works both ways, and nothing from fed.test came before.
    user.send(format!(
        "<message to='nofed@{HOME}' id='l1' type='chat'><body>local hello</body></message>"
    ))
    .await
    .unwrap();
    let mut before = Vec::new();
    match wait_user(
        &mut nofed,
        "the local message",
        |s| s.name() == "message" && s.id().as_deref() == Some("l1"),
        &mut before,
    )
    .await
    {
        Ok(m) => assert_eq!(body(&m).as_deref(), Some("local hello")),
        Err(e) => errors.push(e),
    }
    for s in before.iter().filter(|s| s.contains("fed.test")) {
        errors.push(format!("reached the user without access: {s}"));
    }
    nofed
        .send(format!(
            "<message to='user@{HOME}' id='l2' type='chat'><body>local reply</body></message>"
        ))
        .await
        .unwrap();
    let m = expect(&mut user, "the local reply", |s| s.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("local reply"), "{}", text(&m));
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

// ---------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------

/// Everything logged in this test process (at `debug`, fedrouter at
/// `trace`), from the first call on.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct W(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug,fedrouter=trace"))
            .with_ansi(false)
            .with_writer(move || W(b.clone()))
            .finish();
        tracing::subscriber::set_global_default(sub).expect("the only global subscriber");
        buf
    })
    .clone()
}

fn marker() -> String {
    let mut r = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut r);
    format!("MARKER{}", hex::encode(r))
}

/// Sends a federated message each way with `marker` in the body; returns
/// the audit file's text once both lines are there.
async fn audited_exchange(bodies: bool, marker: &str) -> String {
    let logs = captured_logs();
    let site_dir = tempfile::tempdir().unwrap();
    let audit = site_dir.path().join("audit.log");
    let extra = format!(
        "{}[log]\naudit_file = \"{}\"\n[gateway]\nenable_logging_all_message_bodies = {bodies}\n",
        partner(FED, "federated"),
        audit.display()
    );
    let site = site("", &extra).await;
    let mut fed = site.remote(FED, TIMEOUT).await;
    let mut user = site.online("user", TIMEOUT).await;

    user.send(format!(
        "<message to='r@fed.test' id='audit-out' type='chat'><body>{marker} out</body></message>"
    ))
    .await
    .unwrap();
    let m = fed.expect("the message", |s| s.name() == "message").await;
    assert_eq!(m.id().as_deref(), Some("audit-out"), "{}", text(&m));
    fed.send(format!(
        "<message from='r@fed.test/phone' to='user@{HOME}' id='audit-in' type='chat'><body>{marker} in</body></message>"
    ))
    .await;
    let m = expect(&mut user, "the message", |s| s.name() == "message").await;
    assert_eq!(m.id().as_deref(), Some("audit-in"), "{}", text(&m));

    let complete = eventually(|| {
        let t = std::fs::read_to_string(&audit).unwrap_or_default();
        async move { t.contains("\"audit-out\"") && t.contains("\"audit-in\"") }
    })
    .await;
    let t = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(complete, "the audit file lacks a message: {t:?}");
    let out: Vec<&str> = t.lines().filter(|l| l.contains("\"audit-out\"")).collect();
    let inb: Vec<&str> = t.lines().filter(|l| l.contains("\"audit-in\"")).collect();
    assert_eq!(out.len(), 1, "one line per message: {t}");
    assert_eq!(inb.len(), 1, "one line per message: {t}");
    assert_eq!(
        t.lines().count(),
        2,
        "only the two messages are audited: {t}"
    );
    assert!(
        out[0].contains(&format!("from=\"user@{HOME}/desk\""))
            && out[0].contains("to=\"r@fed.test\"")
            && out[0].contains("id=\"audit-out\"")
            && out[0].contains("type=\"chat\""),
        "{}",
        out[0]
    );
    assert!(
        inb[0].contains("from=\"r@fed.test/phone\"")
            && inb[0].contains(&format!("to=\"user@{HOME}\""))
            && inb[0].contains("id=\"audit-in\"")
            && inb[0].contains("type=\"chat\""),
        "{}",
        inb[0]
    );
    drop(user);
    drop(fed);
    drop(site);
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logs.is_empty(), "the log capture works");
    if !bodies {
        let hits: Vec<&str> = logs.lines().filter(|l| l.contains(marker)).collect();
        assert!(
            hits.is_empty(),
            "message bodies reached the logs with enable_logging_all_message_bodies = false: {hits:#?}"
        );
    }
    t
}

#[tokio::test]
async fn the_audit_log_has_a_line_per_federated_message_and_no_bodies_by_default() {
    let m = marker();
    let t = audited_exchange(false, &m).await;
    assert!(
        !t.contains(&m),
        "a body in the audit file with enable_logging_all_message_bodies = false: {t}"
    );
}

#[tokio::test]
async fn the_audit_log_has_the_bodies_when_enabled() {
    let m = marker();
    let t = audited_exchange(true, &m).await;
    for l in t.lines() {
        assert!(l.contains(&m), "no body in {l}");
    }
}
