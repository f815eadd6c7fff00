//! Test harness: the real daemon on loopback ports with real TLS, in a
//! temporary data directory, and clients that speak XMPP over sockets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use fedrouter::config::Config;
use fedrouter::xml::Stanza;
use fedrouter::{Daemon, admin};
use testkit::client::{Client, ClientConfig, ClientError, Connection, Mechanism};

pub mod federation;

pub const DOMAIN: &str = "localhost";
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
    pub domain: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with("").await
    }

    /// Starts with extra TOML appended to the base test configuration.
    pub async fn start_with(extra: &str) -> TestServer {
        Self::start_domain(DOMAIN, "", extra).await
    }

    /// Starts serving `domain`. `server_extra` goes into `[server]`; `extra`
    /// is appended (whole tables). s2s listens on a loopback port.
    pub async fn start_domain(domain: &str, server_extra: &str, extra: &str) -> TestServer {
        Self::start_full(domain, server_extra, "", extra).await
    }

    /// Starts with extra keys in `[c2s]` (the login settings), and `extra`
    /// appended as in [`TestServer::start_with`].
    pub async fn start_with_c2s(c2s_extra: &str, extra: &str) -> TestServer {
        Self::start_full(DOMAIN, "", c2s_extra, extra).await
    }

    async fn start_full(
        domain: &str,
        server_extra: &str,
        c2s_extra: &str,
        extra: &str,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[server]\ndomains = [\"{domain}\"]\ndata_dir = \"{}\"\nworkers = 2\n{server_extra}\n\
             [c2s]\nlisten = [\"127.0.0.1:0\"]\n{c2s_extra}\n[metrics]\nlisten = \"127.0.0.1:0\"\n{extra}",
            dir.path().join("data").display()
        );
        let text = if text.contains("[s2s]") {
            text
        } else {
            format!("{text}\n[s2s]\nlisten = [\"127.0.0.1:0\"]\n")
        };
        let path = dir.path().join("fedrouter.toml");
        std::fs::write(&path, &text).expect("write config");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("test config: {e}"));
        let daemon = fedrouter::start(config)
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        TestServer {
            daemon,
            dir,
            domain: domain.to_string(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.daemon.c2s_addrs[0]
    }

    pub fn add_user(&self, local: &str, password: &str) {
        let jid = admin::user_jid(
            &format!("{local}@{}", self.domain),
            std::slice::from_ref(&self.domain),
        )
        .unwrap();
        admin::add_user(
            &*self.daemon.store,
            &jid,
            password,
            self.daemon.config.c2s.scram_iterations,
        )
        .unwrap();
    }

    pub fn config(&self, local: &str, password: &str) -> ClientConfig {
        let mut c = ClientConfig::new(self.addr(), &format!("{local}@{}", self.domain), password);
        c.timeout = TIMEOUT;
        c
    }

    pub async fn client(&self, local: &str, password: &str) -> Client {
        Client::connect(&self.config(local, password))
            .await
            .unwrap_or_else(|e| panic!("{local} could not sign in: {e}"))
    }

    pub async fn client_with_resource(
        &self,
        local: &str,
        password: &str,
        resource: &str,
    ) -> Client {
        let mut c = self.config(local, password);
        c.resource = Some(resource.to_string());
        Client::connect(&c)
            .await
            .unwrap_or_else(|e| panic!("{local}/{resource} could not sign in: {e}"))
    }

    /// Signs in as `local` from the loopback address `from` (127.0.0.x),
    /// returning the error when refused.
    pub async fn sign_in_from(
        &self,
        from: &str,
        local: &str,
        password: &str,
        mechanism: Mechanism,
    ) -> Result<Client, ClientError> {
        let mut c = self.config(local, password);
        c.bind = Some(from.parse().expect("a loopback address"));
        c.mechanism = mechanism;
        Client::connect(&c).await
    }

    /// A raw TCP connection to the c2s port, for hostile input.
    pub async fn raw(&self) -> Connection {
        Connection::tcp(self.addr(), TIMEOUT)
            .await
            .expect("connect")
    }

    pub async fn scrape(&self) -> String {
        let addr = self.daemon.metrics_addr.expect("metrics enabled");
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("metrics connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

/// The value of one metric series in a Prometheus text exposition
/// (`name{labels}` exactly as rendered, labels in any order).
/// `fedrouter_events_total{event}` in a scrape.
pub fn event_count(text: &str, event: &str) -> f64 {
    metric(text, "fedrouter_events_total", &[("event", event)])
}

pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| l.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        {
            return value.parse().unwrap_or(f64::NAN);
        }
    }
    0.0
}

pub fn text(s: &Stanza) -> String {
    String::from_utf8_lossy(s.bytes()).into_owned()
}

/// The text of the first `<body>` in a stanza.
pub fn body(s: &Stanza) -> Option<String> {
    let el = fedrouter::xml::element::Element::parse(s.bytes(), fedrouter::xml::ns::NS_CLIENT, &[])
        .ok()?;
    el.child("body", fedrouter::xml::ns::NS_CLIENT)
        .map(|b| b.text())
}

pub fn is_presence_from(s: &Stanza, from_prefix: &str, ty: Option<&str>) -> bool {
    s.name() == "presence"
        && s.from().is_some_and(|f| f.starts_with(from_prefix))
        && s.type_().as_deref() == ty
}

/// Waits for a stanza matching `pred`, skipping others.
pub async fn expect(c: &mut Client, what: &str, pred: impl FnMut(&Stanza) -> bool) -> Stanza {
    match c.recv_until(pred).await {
        Ok(s) => s,
        Err(e) => panic!("waiting for {what}: {e}"),
    }
}

pub fn is_closed(e: &ClientError) -> bool {
    matches!(e, ClientError::Closed | ClientError::Io(_))
}

/// The access policy that lets every local user federate (the built-in
/// global policy, as in Lync, lets nobody).
pub const FEDERATION_ALLOWED: &str = "[[access_policy]]\nname = \"global\"\nenable_federation_access = true\nenable_xmpp_access = true\n";

/// A ping round trip: what the client sent before it has been routed.
pub async fn sync(c: &mut Client) {
    c.iq(
        "sync",
        "<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await
    .expect("ping round trip");
}

/// Adds `jid` to the client's roster (a roster set), as a user does before
/// subscribing; public unverified partners reach only users who did so.
pub async fn add_contact(c: &mut Client, jid: &str) {
    let id = format!("add-{jid}");
    let r = c
        .iq(
            &id,
            &format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'><item jid='{jid}'/></query></iq>"),
        )
        .await
        .unwrap_or_else(|e| panic!("adding {jid}: {e}"));
    assert_eq!(
        r.type_().as_deref(),
        Some("result"),
        "adding {jid}: {}",
        text(&r)
    );
}

/// `from` sends `n` chat messages (bodies `PREFIX<i>`) to `to`, and `into`
/// must receive every one of them, in order, from `from`'s full JID.
pub async fn exchange_in_order(
    from: &mut Client,
    into: &mut Client,
    to: &str,
    prefix: &str,
    n: usize,
) {
    for i in 0..n {
        from.send(format!(
            "<message to='{to}' type='chat' id='{prefix}{i}'><body>{prefix}{i}</body></message>"
        ))
        .await
        .unwrap();
    }
    let sender = from.jid.to_string();
    let mut next = 0;
    while next < n {
        let s = into
            .recv()
            .await
            .unwrap_or_else(|e| panic!("after {next} of {n} messages: {e}"));
        if s.name() != "message" {
            continue;
        }
        assert_eq!(
            body(&s).as_deref(),
            Some(format!("{prefix}{next}").as_str()),
            "out of order or lost"
        );
        assert_eq!(
            s.from().as_deref(),
            Some(sender.as_str()),
            "from is the sender's full JID"
        );
        next += 1;
    }
}
