//! Scripted remote servers for tests and the load generator, speaking real
//! s2s over loopback with the same sans-IO machines the daemon uses:
//!
//! - [`S2sPeer`] initiates: connects to a daemon's s2s listener and
//!   negotiates with [`OutboundNegotiation`] as a domain of our choosing,
//!   then sends whatever stanzas the test scripts — including hostile ones.
//! - [`S2sListener`] receives: answers a daemon's outbound streams with
//!   [`InboundNegotiation`] and hands each authenticated stream over as an
//!   [`InboundPeer`] that reports stanzas and whitespace keepalives.
//! - [`DialbackAuthority`] is a listener that only answers `db:verify`, so
//!   a daemon verifying a dialback key for our fake domain gets a real
//!   answer computed from the secret we chose.
//!
//! Register listeners in [`TestDns`](crate::dns::TestDns) as the
//! fake domain's `_xmpp-server._tcp` SRV target. Nothing here checks what
//! the daemon does beyond what the machines check; asserting is the test's
//! business.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use fedrouter::error::{StanzaCondition, StreamError};
use fedrouter::pki::PeerVerifier;
use fedrouter::stream::s2s::{
    AuthMethod, FailReason, InAction, InInput, InboundContext, InboundNegotiation, OutAction,
    OutInput, OutMode, OutboundNegotiation, PeerIdentity, PeerPolicy, S2sFailure,
};
use fedrouter::transport::Transport;
use fedrouter::xml::element::Element;
use fedrouter::xml::ns::{NS_DIALBACK, NS_SASL, NS_SERVER, NS_SM, NS_STREAMS};
use fedrouter::xml::{Framer, FramerEvent, Stanza, StanzaKind};

/// Stanza size limit of the fakes: large, they are not what is under test.
const MAX_STANZA: usize = 16 * 1024 * 1024;
/// Events buffered per inbound stream before the fake stops reading (and
/// TCP pushes back on the daemon).
const EVENT_QUEUE: usize = 1024;
/// Authenticated streams waiting for [`S2sListener::accept`].
const ACCEPT_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(String),
    /// The outbound machine gave up (the reason says why, including a
    /// stream error the daemon sent during negotiation).
    #[error("negotiation failed: {0}")]
    Negotiation(S2sFailure),
    #[error("the server sent a stream error: {0}")]
    Stream(StreamError),
    #[error("the server sent bad XML: {0}")]
    BadXml(StreamError),
    #[error("the server closed the stream")]
    Closed,
    #[error("timed out waiting for the server")]
    Timeout,
}

impl PeerError {
    /// The stream error the daemon sent, during negotiation or after.
    pub fn stream_error(&self) -> Option<&StreamError> {
        match self {
            PeerError::Stream(e) => Some(e),
            PeerError::Negotiation(f) => match &f.reason {
                FailReason::PeerStreamError(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn fail_reason(&self) -> Option<&FailReason> {
        match self {
            PeerError::Negotiation(f) => Some(&f.reason),
            _ => None,
        }
    }
}

/// Who an [`S2sPeer`] pretends to be and where it connects.
#[derive(Clone)]
pub struct PeerConfig {
    /// The daemon's s2s listener (STARTTLS).
    pub addr: SocketAddr,
    /// The domain we pretend to be.
    pub local: String,
    /// The daemon's domain (stream `to`, TLS SNI).
    pub remote: String,
    /// Presented in the TLS handshake, for SASL EXTERNAL.
    pub cert: Option<Arc<CertifiedKey>>,
    pub policy: PeerPolicy,
    /// The dialback secret of our fake domain: a daemon verifying our key
    /// asks a [`DialbackAuthority`], which must hold the same one.
    pub secret: Arc<[u8]>,
    /// Bounds the whole negotiation, and each later receive.
    pub timeout: Duration,
    /// Extra `xmlns:prefix='namespace'` declarations put on every stream
    /// header we send, as some servers do.
    pub header_prefixes: Vec<(String, String)>,
}

impl PeerConfig {
    /// Open-federation policy, no certificate, a random dialback secret,
    /// a 10 s timeout.
    pub fn new(addr: SocketAddr, local: &str, remote: &str) -> PeerConfig {
        PeerConfig {
            addr,
            local: local.to_string(),
            remote: remote.to_string(),
            cert: None,
            policy: PeerPolicy::open_federation(),
            secret: random_secret(),
            timeout: Duration::from_secs(10),
            header_prefixes: Vec::new(),
        }
    }
}

/// 32 random bytes, for a fake domain's dialback secret.
pub fn random_secret() -> Arc<[u8]> {
    let mut r = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut r);
    Arc::from(&r[..])
}

/// A TLS server config for a fake's listener presenting `cert`. With
/// `client_roots`, it asks for a client certificate chained to them (not
/// requiring one), which is what offering SASL EXTERNAL needs.
///
/// # Panics
/// When rustls refuses the configuration: this is a test helper.
pub fn server_tls(
    cert: Arc<CertifiedKey>,
    client_roots: Option<RootCertStore>,
) -> Arc<rustls::ServerConfig> {
    let provider = fedrouter::tls::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_roots {
        Some(roots) => {
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .expect("client verifier over the test roots");
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(cert))))
}

/// The socket and framer of a stream, with a receive timeout.
struct Wire {
    io: Transport,
    framer: Framer,
    timeout: Duration,
}

impl Wire {
    async fn send(&mut self, xml: &[u8]) -> Result<(), PeerError> {
        self.io.write_all(xml).await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn next_event(&mut self) -> Result<FramerEvent, PeerError> {
        read_event(&mut self.io, &mut self.framer).await
    }

    async fn recv(&mut self) -> Result<Stanza, PeerError> {
        let t = self.timeout;
        tokio::time::timeout(t, async {
            loop {
                match self.next_event().await? {
                    FramerEvent::StreamOpen(_) => {}
                    FramerEvent::StreamClose => return Err(PeerError::Closed),
                    FramerEvent::Stanza(s) if s.name() == "stream:error" => {
                        return Err(PeerError::Stream(parse_stream_error(&s)));
                    }
                    FramerEvent::Stanza(s) => return Ok(s),
                }
            }
        })
        .await
        .map_err(|_| PeerError::Timeout)?
    }

    async fn expect_stream_error(&mut self) -> Result<StreamError, PeerError> {
        loop {
            match self.recv().await {
                Ok(_) => {}
                Err(PeerError::Stream(e)) => return Ok(e),
                Err(e) => return Err(e),
            }
        }
    }
}

async fn read_event(io: &mut Transport, framer: &mut Framer) -> Result<FramerEvent, PeerError> {
    loop {
        match framer.next() {
            Ok(Some(ev)) => return Ok(ev),
            Ok(None) => {}
            Err(e) => return Err(PeerError::BadXml(e)),
        }
        let n = {
            let mut buf = framer.read_buf();
            io.read_buf(&mut buf).await?
        };
        if n == 0 {
            return Err(PeerError::Closed);
        }
    }
}

fn parse_stream_error(s: &Stanza) -> StreamError {
    use fedrouter::error::StreamCondition;
    match Element::parse(s.bytes(), NS_SERVER, &[("stream", NS_STREAMS)]) {
        Ok(el) => fedrouter::stream::s2s::parse_stream_error(&el),
        Err(_) => StreamError::new(StreamCondition::UndefinedCondition),
    }
}

/// The SASL mechanisms a `<stream:features/>` offers.
fn mechanisms(features: Option<&Stanza>) -> Vec<String> {
    let Some(f) = features else {
        return Vec::new();
    };
    let Ok(el) = Element::parse(f.bytes(), NS_SERVER, &[("stream", NS_STREAMS)]) else {
        return Vec::new();
    };
    el.child("mechanisms", NS_SASL)
        .map(|m| {
            m.children_named("mechanism", NS_SASL)
                .map(|x| x.text().trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// An authenticated stream from our fake domain to the daemon.
pub struct S2sPeer {
    wire: Wire,
    method: AuthMethod,
    features: Option<Stanza>,
}

/// A negotiation the machine gave up on. When it failed without sending a
/// stream error of its own (e.g. the daemon answered `type='invalid'`), the
/// connection is left open so the test can see what the daemon does next.
pub struct Refused {
    pub failure: S2sFailure,
    wire: Wire,
    features: Option<Stanza>,
}

pub enum Attempt {
    Ready(S2sPeer),
    Refused(Refused),
}

impl S2sPeer {
    /// Connects and negotiates (OutMode::Authenticate) until ready. A
    /// refused negotiation is `Err(PeerError::Negotiation)`, closed.
    pub async fn connect(cfg: &PeerConfig) -> Result<S2sPeer, PeerError> {
        match Self::attempt(cfg).await? {
            Attempt::Ready(p) => Ok(p),
            Attempt::Refused(mut r) => {
                if r.failure.send.is_none() {
                    let _ = r.wire.send(b"</stream:stream>").await;
                    let _ = r.wire.io.shutdown().await;
                }
                Err(PeerError::Negotiation(r.failure))
            }
        }
    }

    /// Like [`connect`](Self::connect), but a refusal is an answer, not an
    /// error.
    pub async fn attempt(cfg: &PeerConfig) -> Result<Attempt, PeerError> {
        tokio::time::timeout(cfg.timeout, negotiate(cfg))
            .await
            .map_err(|_| PeerError::Timeout)?
    }

    pub fn method(&self) -> AuthMethod {
        self.method
    }

    /// The socket and the framer (with whatever it already buffered), for
    /// a caller that reads and writes on its own.
    pub fn into_parts(self) -> (Transport, Framer) {
        (self.wire.io, self.wire.framer)
    }

    /// The `<stream:features/>` authentication was chosen from (after
    /// TLS when TLS was used; never the empty ones after SASL).
    pub fn features(&self) -> Option<&Stanza> {
        self.features.as_ref()
    }

    /// The SASL mechanisms those features offered.
    pub fn mechanisms(&self) -> Vec<String> {
        mechanisms(self.features.as_ref())
    }

    pub async fn send(&mut self, xml: impl AsRef<[u8]>) -> Result<(), PeerError> {
        self.wire.send(xml.as_ref()).await
    }

    /// The next top-level element; a stream error is `Err(Stream)`.
    pub async fn recv(&mut self) -> Result<Stanza, PeerError> {
        self.wire.recv().await
    }

    /// Reads (skipping anything else) until the daemon's stream error.
    pub async fn expect_stream_error(&mut self) -> Result<StreamError, PeerError> {
        self.wire.expect_stream_error().await
    }

    /// How long [`recv`](Self::recv) waits.
    pub fn set_timeout(&mut self, t: Duration) {
        self.wire.timeout = t;
    }

    /// Closes our stream and waits for the daemon to close its own.
    pub async fn close(mut self) -> Result<(), PeerError> {
        self.wire.send(b"</stream:stream>").await?;
        loop {
            match self.wire.recv().await {
                Ok(_) => {}
                Err(PeerError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Refused {
    /// The features the daemon offered last before the failure.
    pub fn features(&self) -> Option<&Stanza> {
        self.features.as_ref()
    }

    pub fn mechanisms(&self) -> Vec<String> {
        mechanisms(self.features.as_ref())
    }

    pub async fn send(&mut self, xml: impl AsRef<[u8]>) -> Result<(), PeerError> {
        self.wire.send(xml.as_ref()).await
    }

    pub async fn recv(&mut self) -> Result<Stanza, PeerError> {
        self.wire.recv().await
    }

    pub async fn expect_stream_error(&mut self) -> Result<StreamError, PeerError> {
        self.wire.expect_stream_error().await
    }
}

async fn tls_client(cfg: &PeerConfig, io: Transport) -> Result<Transport, PeerError> {
    let Transport::Plain(tcp) = io else {
        return Err(PeerError::Tls("already TLS".into()));
    };
    let verifier = PeerVerifier::with_roots(RootCertStore::empty())
        .map_err(|e| PeerError::Tls(e.to_string()))?;
    let tls = verifier.client_config(cfg.cert.clone());
    let name =
        ServerName::try_from(cfg.remote.clone()).map_err(|e| PeerError::Tls(e.to_string()))?;
    let s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| PeerError::Tls(e.to_string()))?;
    Ok(Transport::TlsClient(Box::new(s)))
}

/// What an [`S2sPeer`] makes of the daemon's certificate: whatever it is,
/// valid for the domain dialed, so SASL EXTERNAL is used whenever the
/// daemon offers it.
struct DialedDaemon;

impl PeerIdentity for DialedDaemon {
    fn is_valid_for(&self, _: &str) -> bool {
        true
    }
}

/// `s` with the configured extra prefixes declared if it opens a stream.
fn with_prefixes(cfg: &PeerConfig, s: String) -> String {
    const OPEN: &str = "<stream:stream";
    let Some(at) = s.find(OPEN) else { return s };
    let mut decls = String::new();
    for (p, ns) in &cfg.header_prefixes {
        decls.push_str(&format!(" xmlns:{p}='{ns}'"));
    }
    let at = at + OPEN.len();
    format!("{}{decls}{}", &s[..at], &s[at..])
}

/// Drives the outbound machine over a socket, the way `s2s::connect` does.
async fn negotiate(cfg: &PeerConfig) -> Result<Attempt, PeerError> {
    let tcp = TcpStream::connect(cfg.addr).await?;
    let _ = tcp.set_nodelay(true);
    let mut io = Transport::Plain(tcp);
    let mut framer = Framer::new(NS_SERVER, MAX_STANZA);
    let mut neg = OutboundNegotiation::new(
        cfg.local.clone(),
        cfg.remote.clone(),
        cfg.policy.clone(),
        cfg.secret.clone(),
        cfg.cert.is_some(),
        OutMode::Authenticate,
    );
    let mut features = None;
    let mut sasl_done = false;
    let mut pending: VecDeque<OutAction> = neg.start().into();
    loop {
        while let Some(a) = pending.pop_front() {
            match a {
                OutAction::Send(s) => write(&mut io, with_prefixes(cfg, s).as_bytes()).await?,
                OutAction::StartTls => {
                    if framer.buffered() > 0 {
                        return Err(PeerError::Tls("data after <proceed/>".into()));
                    }
                    io = tls_client(cfg, io).await?;
                    framer = Framer::new(NS_SERVER, MAX_STANZA);
                    // The daemon's certificate is not what these fakes are
                    // about: it is taken to be whom they dialed.
                    let peer: Arc<dyn PeerIdentity> = Arc::new(DialedDaemon);
                    pending.extend(neg.handle(OutInput::TlsEstablished { peer: Some(peer) }));
                }
                OutAction::RestartStream => framer.reset(),
                OutAction::Ready(method) => {
                    let wire = Wire {
                        io,
                        framer,
                        timeout: cfg.timeout,
                    };
                    return Ok(Attempt::Ready(S2sPeer {
                        wire,
                        method,
                        features,
                    }));
                }
                OutAction::Verified(_) => {
                    return Err(PeerError::Tls("verify mode is not used here".into()));
                }
                OutAction::Fail(failure) => {
                    if let Some(e) = &failure.send {
                        let tail = format!("{}</stream:stream>", e.to_xml());
                        let _ = write(&mut io, tail.as_bytes()).await;
                        let _ = io.shutdown().await;
                    }
                    let wire = Wire {
                        io,
                        framer,
                        timeout: cfg.timeout,
                    };
                    return Ok(Attempt::Refused(Refused {
                        failure,
                        wire,
                        features,
                    }));
                }
            }
        }
        match read_event(&mut io, &mut framer).await {
            Ok(FramerEvent::StreamOpen(h)) => pending.extend(neg.handle(OutInput::StreamOpen(&h))),
            Ok(FramerEvent::Stanza(s)) => {
                // Keep the features authentication was chosen from, not the
                // empty ones after SASL.
                if s.name() == "stream:features" && !sasl_done {
                    features = Some(s.clone());
                }
                sasl_done |= s.local_name() == "success";
                pending.extend(neg.handle(OutInput::Element(&s)));
            }
            Ok(FramerEvent::StreamClose) | Err(PeerError::Closed) => {
                pending.extend(neg.handle(OutInput::StreamClosed));
            }
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// The receiving side
// ---------------------------------------------------------------------------

/// What an [`S2sListener`] is and does.
#[derive(Clone)]
pub struct ListenerConfig {
    /// The fake domain (the only one `is_local`).
    pub domain: String,
    /// Its dialback secret: `db:verify` is answered with it.
    pub secret: Arc<[u8]>,
    /// See [`server_tls`].
    pub server_tls: Arc<rustls::ServerConfig>,
    /// Checks the initiator's certificate; `None` never offers SASL
    /// EXTERNAL. Dialback keys sent to us are never verified (the fake has
    /// no way to ask the daemon's authority): they get a
    /// `remote-server-not-found` dialback error.
    pub verifier: Option<Arc<PeerVerifier>>,
    pub policy: PeerPolicy,
    /// Receive timeout of the [`InboundPeer`]s.
    pub timeout: Duration,
    /// What a load generator needs beyond the tests' fake; `Default` for
    /// tests.
    pub load: LoadOptions,
}

/// Options of an [`S2sListener`] playing many domains under load.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Listen here instead of on an ephemeral 127.0.0.1 port.
    pub bind: Option<SocketAddr>,
    /// Every domain ending in `.<suffix>` is local too.
    pub domain_suffix: Option<String>,
    /// Answer a `db:result` as valid without asking the sender's
    /// authoritative server (a load generator trusts its target).
    pub trust_dialback: bool,
    /// Offer no XEP-0198 Stream Management (a peer without it). With it,
    /// the daemon's `<enable/>` and `<r/>` are answered here (acks only,
    /// no resumption) and never reach the [`InboundPeer`].
    pub no_stream_management: bool,
    /// Hand every authenticated stanza to this function, on the
    /// connection's task, instead of queueing it for an [`InboundPeer`].
    #[allow(clippy::type_complexity)]
    pub sink: Option<Arc<dyn Fn(Stanza) + Send + Sync>>,
}

/// What happened on an authenticated inbound stream.
#[derive(Debug, Clone, PartialEq)]
pub enum InEvent {
    Stanza(Stanza),
    /// A read that carried only whitespace (a keepalive), of this length.
    Whitespace(usize),
    /// The daemon closed the stream, with the stream error it sent if any.
    Closed(Option<StreamError>),
}

/// An authenticated stream from the daemon to our fake domain.
pub struct InboundPeer {
    pub remote: String,
    pub local: String,
    pub method: AuthMethod,
    rx: mpsc::Receiver<InEvent>,
    timeout: Duration,
    /// Bytes for the connection's task to write to the daemon.
    out: mpsc::Sender<Vec<u8>>,
}

impl InboundPeer {
    /// The next event, within the listener's timeout; after the stream
    /// ended, `Err(Closed)`.
    pub async fn next(&mut self) -> Result<InEvent, PeerError> {
        tokio::time::timeout(self.timeout, self.rx.recv())
            .await
            .map_err(|_| PeerError::Timeout)?
            .ok_or(PeerError::Closed)
    }

    /// Writes raw bytes back to the daemon on its own outbound stream
    /// (whitespace keepalives, a stream error, anything a test scripts).
    pub async fn send(&self, bytes: impl Into<Vec<u8>>) -> Result<(), PeerError> {
        self.out
            .send(bytes.into())
            .await
            .map_err(|_| PeerError::Closed)
    }

    /// The next stanza, skipping keepalives; the end of the stream is an
    /// error.
    pub async fn recv(&mut self) -> Result<Stanza, PeerError> {
        loop {
            match self.next().await? {
                InEvent::Stanza(s) => return Ok(s),
                InEvent::Whitespace(_) => {}
                InEvent::Closed(Some(e)) => return Err(PeerError::Stream(e)),
                InEvent::Closed(None) => return Err(PeerError::Closed),
            }
        }
    }
}

/// Accepts the daemon's outbound streams for one fake domain. Stops when
/// dropped.
pub struct S2sListener {
    addr: SocketAddr,
    accepted: mpsc::Receiver<InboundPeer>,
    verify_requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for S2sListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    cfg: ListenerConfig,
    accepted: mpsc::Sender<InboundPeer>,
    verify_requests: Arc<AtomicUsize>,
}

impl InboundContext for Shared {
    fn is_local(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(&self.cfg.domain)
            || self.cfg.load.domain_suffix.as_deref().is_some_and(|sfx| {
                domain.len() > sfx.len() + 1
                    && domain.as_bytes()[domain.len() - sfx.len() - 1] == b'.'
                    && domain[domain.len() - sfx.len()..].eq_ignore_ascii_case(sfx)
            })
    }

    fn policy(&self, _remote: &str) -> Option<PeerPolicy> {
        Some(self.cfg.policy.clone())
    }

    fn dialback_secret(&self) -> &[u8] {
        &self.cfg.secret
    }
}

impl S2sListener {
    /// Listens on a loopback port.
    pub async fn start(cfg: ListenerConfig) -> std::io::Result<S2sListener> {
        let bind = cfg
            .load
            .bind
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        let l = TcpListener::bind(bind).await?;
        let addr = l.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let verify_requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let shared = Arc::new(Shared {
            cfg,
            accepted: tx,
            verify_requests: verify_requests.clone(),
        });
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = l.accept() => match r {
                        Ok((tcp, _)) => {
                            counted.fetch_add(1, Ordering::SeqCst);
                            let _ = tcp.set_nodelay(true);
                            conns.spawn(serve(tcp, shared.clone()));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "fake s2s listener: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(S2sListener {
            addr,
            accepted: rx,
            verify_requests,
            connections,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next stream that authenticated, within `timeout`.
    pub async fn accept(&mut self, timeout: Duration) -> Result<InboundPeer, PeerError> {
        tokio::time::timeout(timeout, self.accepted.recv())
            .await
            .map_err(|_| PeerError::Timeout)?
            .ok_or(PeerError::Closed)
    }

    /// How many `db:verify` requests arrived (answered or not).
    pub fn verify_requests(&self) -> usize {
        self.verify_requests.load(Ordering::SeqCst)
    }

    /// How many TCP connections were accepted (negotiated or not).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// One inbound connection: negotiation, then events for the InboundPeer.
async fn serve(tcp: TcpStream, shared: Arc<Shared>) {
    let mut sid = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut sid);
    let mut neg = InboundNegotiation::new(hex::encode(sid), true);
    if shared.cfg.load.no_stream_management {
        neg = neg.without_sm();
    }
    // XEP-0198: stanzas received since the daemon's <enable/>.
    let mut sm_h: Option<u32> = None;
    let mut io = Transport::Plain(tcp);
    let mut framer = Framer::new(NS_SERVER, MAX_STANZA);
    let mut events: Option<mpsc::Sender<InEvent>> = None;
    let mut pending: VecDeque<InAction> = VecDeque::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out: Option<mpsc::Receiver<Vec<u8>>> = None;
    loop {
        while let Some(a) = pending.pop_front() {
            match a {
                InAction::Send(s) => {
                    if write(&mut io, s.as_bytes()).await.is_err() {
                        return;
                    }
                }
                InAction::StartTls => {
                    if framer.buffered() > 0 {
                        return;
                    }
                    let Transport::Plain(tcp) = io else {
                        return;
                    };
                    let acceptor = tokio_rustls::TlsAcceptor::from(shared.cfg.server_tls.clone());
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    io = Transport::Tls(Box::new(tls));
                    framer = Framer::new(NS_SERVER, MAX_STANZA);
                    let peer = match (&shared.cfg.verifier, io.peer_certificates()) {
                        (Some(v), Some(chain)) => Some(v.identity(chain)),
                        _ => None,
                    };
                    pending.extend(neg.handle(InInput::TlsEstablished { peer }, &*shared));
                }
                InAction::RestartStream => framer.reset(),
                InAction::VerifyDialback {
                    originating,
                    receiving,
                    ..
                } => {
                    let input = if shared.cfg.load.trust_dialback {
                        InInput::DialbackChecked {
                            originating,
                            receiving,
                            valid: true,
                        }
                    } else {
                        InInput::DialbackFailed {
                            originating,
                            receiving,
                            condition: StanzaCondition::RemoteServerNotFound,
                        }
                    };
                    pending.extend(neg.handle(input, &*shared));
                }
                InAction::Authenticated {
                    remote,
                    local,
                    method,
                } => {
                    if events.is_none() {
                        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
                        let (out_tx, out_rx) = mpsc::channel(EVENT_QUEUE);
                        out = Some(out_rx);
                        let peer = InboundPeer {
                            remote,
                            local,
                            method,
                            rx,
                            timeout: shared.cfg.timeout,
                            out: out_tx,
                        };
                        // Nobody accepting (a pure authority): the events
                        // are dropped with the receiver.
                        let _ = shared.accepted.try_send(peer);
                        events = Some(tx);
                    }
                }
                InAction::Fail(e) => {
                    let tail = format!("{}</stream:stream>", e.to_xml());
                    let _ = write(&mut io, tail.as_bytes()).await;
                    let _ = io.shutdown().await;
                    return;
                }
                InAction::PeerStreamError(e) => {
                    if let Some(tx) = &events {
                        let _ = tx.send(InEvent::Closed(Some(e))).await;
                    }
                    let _ = write(&mut io, b"</stream:stream>").await;
                    let _ = io.shutdown().await;
                    return;
                }
            }
        }
        let ev = match framer.next() {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                let n = match read_or_write(&mut io, &mut buf, &mut out).await {
                    Ok(0) | Err(_) => {
                        if let Some(tx) = &events {
                            let _ = tx.send(InEvent::Closed(None)).await;
                        }
                        return;
                    }
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                if framer.buffered() == 0 && chunk.iter().all(u8::is_ascii_whitespace) {
                    if let Some(tx) = &events {
                        let _ = tx.send(InEvent::Whitespace(n)).await;
                    }
                    continue;
                }
                framer.feed(chunk);
                continue;
            }
            Err(e) => {
                let tail = format!("{}</stream:stream>", e.to_xml());
                let _ = write(&mut io, tail.as_bytes()).await;
                return;
            }
        };
        match ev {
            FramerEvent::StreamOpen(h) => {
                pending.extend(neg.handle(InInput::StreamOpen(&h), &*shared))
            }
            FramerEvent::StreamClose => {
                if let Some(tx) = &events {
                    let _ = tx.send(InEvent::Closed(None)).await;
                }
                let _ = write(&mut io, b"</stream:stream>").await;
                let _ = io.shutdown().await;
                return;
            }
            FramerEvent::Stanza(s) => {
                if s.kind() != StanzaKind::Other && !neg.authenticated().is_empty() {
                    // Hold the daemon to the addressing rules it enforces.
                    if let Err(cond) = neg.check_addressing(&s) {
                        pending.push_back(InAction::Fail(StreamError::new(cond)));
                        continue;
                    }
                    if let Some(h) = &mut sm_h {
                        *h = h.wrapping_add(1);
                    }
                    if let Some(sink) = &shared.cfg.load.sink {
                        sink(s);
                    } else if let Some(tx) = &events {
                        let _ = tx.send(InEvent::Stanza(s)).await;
                    }
                    continue;
                }
                if !neg.authenticated().is_empty() && s.xmlns() == Some(NS_SM) {
                    let answer = match (s.local_name(), sm_h) {
                        ("enable", None) if !shared.cfg.load.no_stream_management => {
                            sm_h = Some(0);
                            format!("<enabled xmlns='{NS_SM}'/>")
                        }
                        ("r", Some(h)) => format!("<a xmlns='{NS_SM}' h='{h}'/>"),
                        ("a", _) => continue,
                        _ => format!(
                            "<failed xmlns='{NS_SM}'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
                        ),
                    };
                    pending.push_back(InAction::Send(answer));
                    continue;
                }
                if is_db_verify(&s, framer.stream_prefixes()) {
                    shared.verify_requests.fetch_add(1, Ordering::SeqCst);
                }
                pending.extend(neg.handle(InInput::Element(&s), &*shared));
            }
        }
    }
}

/// Reads into `buf`, writing whatever the [`InboundPeer`] asks for
/// meanwhile.
async fn read_or_write(
    io: &mut Transport,
    buf: &mut [u8],
    out: &mut Option<mpsc::Receiver<Vec<u8>>>,
) -> std::io::Result<usize> {
    loop {
        let Some(rx) = out.as_mut() else {
            return io.read(buf).await;
        };
        tokio::select! {
            r = io.read(buf) => return r,
            b = rx.recv() => match b {
                Some(b) => write(io, &b).await?,
                None => *out = None,
            },
        }
    }
}

fn is_db_verify(s: &Stanza, prefixes: &[(String, String)]) -> bool {
    let p: Vec<(&str, &str)> = prefixes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    s.local_name() == "verify"
        && Element::parse(s.bytes(), NS_SERVER, &p).is_ok_and(|e| e.is("verify", NS_DIALBACK))
}

async fn write(io: &mut Transport, b: &[u8]) -> std::io::Result<()> {
    io.write_all(b).await?;
    io.flush().await
}

/// A server that accepts TCP connections and never sends a byte: each
/// connection is held open (until the peer closes it or this is dropped)
/// and counted.
pub struct SilentServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SilentServer {
    /// Listens on a loopback port.
    pub async fn start() -> std::io::Result<SilentServer> {
        let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = l.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            let mut held = tokio::task::JoinSet::new();
            while let Ok((mut tcp, _)) = l.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                // Read (and drop) whatever comes until the peer closes.
                held.spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        Ok(SilentServer {
            addr,
            connections,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The authoritative server of a fake domain for dialback: answers
/// `db:verify` with the domain's secret, authenticates nobody. Stops when
/// dropped.
pub struct DialbackAuthority {
    listener: S2sListener,
}

impl DialbackAuthority {
    /// # Panics
    /// When no loopback port can be bound: this is a test helper.
    pub async fn start(
        domain: &str,
        secret: Arc<[u8]>,
        server_tls: Arc<rustls::ServerConfig>,
    ) -> DialbackAuthority {
        let listener = S2sListener::start(ListenerConfig {
            domain: domain.to_string(),
            secret,
            server_tls,
            verifier: None,
            policy: PeerPolicy::open_federation(),
            timeout: Duration::from_secs(10),
            load: Default::default(),
        })
        .await
        .expect("bind a loopback port for the dialback authority");
        DialbackAuthority { listener }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// How many `db:verify` requests the daemon sent us.
    pub fn verify_requests(&self) -> usize {
        self.listener.verify_requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::TestCa;

    fn listener_config(ca: &TestCa, domain: &str) -> ListenerConfig {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der()).unwrap();
        let verifier = Arc::new(PeerVerifier::with_roots(roots.clone()).unwrap());
        ListenerConfig {
            domain: domain.into(),
            secret: random_secret(),
            server_tls: server_tls(ca.issue(&[domain]).certified_key(), Some(roots)),
            verifier: Some(verifier),
            policy: PeerPolicy::open_federation(),
            timeout: Duration::from_secs(10),
            load: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_peer_with_a_trusted_certificate_authenticates_to_a_listener_by_sasl_external() {
        fedrouter::tls::install_default_provider();
        let ca = TestCa::new("fake s2s CA");
        let mut l = S2sListener::start(listener_config(&ca, "b.test"))
            .await
            .unwrap();
        let mut cfg = PeerConfig::new(l.addr(), "a.test", "b.test");
        cfg.cert = Some(ca.issue(&["a.test"]).certified_key());
        let mut p = S2sPeer::connect(&cfg).await.unwrap();
        assert_eq!(p.method(), AuthMethod::SaslExternal);
        assert_eq!(p.mechanisms(), ["EXTERNAL"]);
        let mut inbound = l.accept(Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            (inbound.remote.as_str(), inbound.local.as_str()),
            ("a.test", "b.test")
        );
        p.send(" ").await.unwrap();
        assert_eq!(inbound.next().await.unwrap(), InEvent::Whitespace(1));
        p.send("<message from='x@a.test' to='y@b.test'/>")
            .await
            .unwrap();
        let m = inbound.recv().await.unwrap();
        assert_eq!(m.from().as_deref(), Some("x@a.test"));
        // The listener holds the initiator to the addressing rules.
        p.send("<message from='x@evil.test' to='y@b.test'/>")
            .await
            .unwrap();
        let e = p.expect_stream_error().await.unwrap();
        assert_eq!(e.condition, fedrouter::error::StreamCondition::InvalidFrom);
        assert!(matches!(
            inbound.recv().await,
            Err(PeerError::Closed | PeerError::Stream(_))
        ));
    }

    #[tokio::test]
    async fn a_listener_cannot_check_dialback_keys_and_says_so_with_a_dialback_error() {
        fedrouter::tls::install_default_provider();
        let ca = TestCa::new("fake s2s CA");
        let l = S2sListener::start(listener_config(&ca, "b.test"))
            .await
            .unwrap();
        let cfg = PeerConfig::new(l.addr(), "a.test", "b.test");
        let e = S2sPeer::connect(&cfg).await.err().unwrap();
        assert!(
            matches!(e.fail_reason(), Some(FailReason::DialbackError(c)) if c == "remote-server-not-found"),
            "{e}"
        );
    }
}
