//! Opening an outbound server-to-server stream: targets from the static
//! route or DNS, TCP with Happy Eyeballs, then the sans-IO negotiation
//! driven over the socket until it is ready (or, in verify mode, until the
//! authoritative server has answered a `db:verify`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::S2sShared;
use crate::dns::{DnsError, Target, connect_happy_eyeballs, public_targets};
use crate::error::StanzaCondition;
use crate::stream::s2s::{
    AuthMethod, OutAction, OutInput, OutMode, OutboundNegotiation, S2sFailure,
};
use crate::transport::{Connection, Linger, StartTlsError, Transport};
use crate::xml::FramerEvent;
use crate::xml::ns::NS_SERVER;

/// TCP connect budget per target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DNS: {0}")]
    Dns(DnsError),
    #[error("no address of {0} accepted a connection")]
    Unreachable(String),
    /// Every address the domain's DNS named is private (loopback, RFC 1918,
    /// link-local, ...) and outside `s2s.allow_private_targets`.
    #[error("{0} resolves only to private addresses, which are not allowed")]
    PrivateTargets(String),
    #[error("TLS handshake: {0}")]
    Tls(String),
    #[error("negotiation: {0}")]
    Negotiation(String),
    /// The peer and our settings for it cannot agree (TLS, SASL, dialback)
    /// or it refused to authenticate us: retrying will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// The receiving server's certificate is not valid for the domain and
    /// the partner's settings need it to be: a possible impostor.
    #[error("certificate: {0}")]
    Certificate(String),
    /// DNS, connecting and negotiation together took longer than
    /// `stream_establishment_timeout`.
    #[error("the stream was not established within {0:?}")]
    Timeout(Duration),
    #[error("the peer closed the connection during negotiation")]
    Closed,
    #[error("connection limit reached")]
    Limit,
    /// The partner's own `connection_limit` (its links in and out together).
    #[error("the partner's connection limit is reached")]
    PartnerLimit,
}

impl ConnectError {
    /// The stanza error queued stanzas are bounced with: the server could
    /// not be found or reached, or it was found but did not complete.
    pub fn bounce_condition(&self) -> StanzaCondition {
        match self {
            ConnectError::Dns(_)
            | ConnectError::Unreachable(_)
            | ConnectError::PrivateTargets(_) => StanzaCondition::RemoteServerNotFound,
            ConnectError::Limit | ConnectError::PartnerLimit => StanzaCondition::ResourceConstraint,
            _ => StanzaCondition::RemoteServerTimeout,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            ConnectError::Dns(_) => "dns",
            ConnectError::Unreachable(_) => "connect",
            ConnectError::PrivateTargets(_) => "private_target",
            ConnectError::Tls(_) => "tls",
            ConnectError::Negotiation(_) => "negotiation",
            ConnectError::Refused(_) => "refused",
            ConnectError::Certificate(_) => "certificate",
            ConnectError::Timeout(_) => "timeout",
            ConnectError::Closed => "closed",
            ConnectError::Limit => "limit",
            ConnectError::PartnerLimit => "partner_limit",
        }
    }
}

/// A negotiated outbound stream (in verify mode, already closed).
pub struct Established {
    /// Whole, its framer positioned after the negotiation.
    pub conn: Connection,
    pub method: Option<AuthMethod>,
    /// Verify mode: the authoritative server's answer.
    pub verified: Option<bool>,
    pub peer_addr: SocketAddr,
    /// The peer offered XEP-0198 Stream Management.
    pub sm: bool,
}

/// Where to connect: the partner's static route, else DNS. The route is
/// read from the policy in force, so it follows `fedrouter reload`. It is
/// the operator's own word, so it may be private; what the remote domain's
/// DNS says may not, outside `s2s.allow_private_targets`.
async fn targets(shared: &S2sShared, remote: &str) -> Result<Vec<Target>, ConnectError> {
    if let Some(proxy) = shared.partner(remote).and_then(|p| p.proxy_fqdn.clone()) {
        let host = proxy
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, proxy.port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), proxy.port))
                .await
                .map_err(|e| ConnectError::Dns(DnsError::Other(e.to_string())))?
                .collect(),
        };
        return Ok(vec![Target {
            host,
            port: proxy.port,
            direct_tls: false,
            addrs,
        }]);
    }
    let started = Instant::now();
    let r = shared.resolver.resolve_s2s(remote).await;
    shared
        .s2s_metrics
        .dns_seconds
        .record(started.elapsed().as_secs_f64());
    let (kept, dropped) = public_targets(
        r.map_err(ConnectError::Dns)?,
        &shared.config.s2s.allow_private_targets,
    );
    if !dropped.is_empty() {
        crate::events::s2s::PrivateTargetsDropped {
            remote,
            addrs: &dropped,
            left: kept.len(),
        }
        .emit();
    }
    if kept.is_empty() {
        return Err(ConnectError::PrivateTargets(remote.to_string()));
    }
    Ok(kept)
}

/// Resolves, connects and negotiates `local` → `remote`, all of it (DNS,
/// every target tried, TLS, the negotiation) within the gateway's
/// `stream_establishment_timeout`: a domain whose DNS or servers answer
/// slowly costs one deadline, not one per step or target.
pub async fn connect_and_negotiate(
    shared: Arc<S2sShared>,
    local: String,
    remote: String,
    mode: OutMode,
) -> Result<Established, ConnectError> {
    let budget = shared.config.gateway.stream_establishment_timeout;
    match tokio::time::timeout(budget, attempt(shared, local, remote, mode)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(budget)),
    }
}

async fn attempt(
    shared: Arc<S2sShared>,
    local: String,
    remote: String,
    mode: OutMode,
) -> Result<Established, ConnectError> {
    let targets = targets(&shared, &remote).await?;
    let mut last = ConnectError::Unreachable(remote.clone());
    for t in targets {
        // Direct TLS targets (XEP-0368) are tried like STARTTLS ones but
        // with the handshake first.
        let started = Instant::now();
        let tcp = match connect_happy_eyeballs(&t.addrs, CONNECT_TIMEOUT).await {
            Ok(tcp) => tcp,
            Err(e) => {
                crate::events::s2s::TargetUnreachable {
                    remote: &remote,
                    host: &t.host,
                    port: t.port,
                    error: &e,
                }
                .emit();
                last = ConnectError::Unreachable(remote.clone());
                continue;
            }
        };
        shared
            .s2s_metrics
            .connect_seconds
            .record(started.elapsed().as_secs_f64());
        let _ = tcp.set_nodelay(true);
        crate::transport::keepalive(&tcp);
        let peer_addr = tcp
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let conn = Connection::new(
            Transport::Plain(tcp),
            NS_SERVER,
            shared.config.gateway.max_stanza_size,
            shared.metrics.clone(),
        )
        .with_write_timeout(shared.config.server.write_timeout);
        return negotiate(
            shared.clone(),
            conn,
            t.direct_tls,
            &local,
            &remote,
            mode.clone(),
            peer_addr,
        )
        .await;
    }
    Err(last)
}

/// The client side of STARTTLS or Direct TLS on `conn`, presenting
/// `local`'s certificate and checking `remote`'s.
async fn start_tls(
    shared: &S2sShared,
    local: &str,
    remote: &str,
    conn: &mut Connection,
) -> Result<(), ConnectError> {
    match conn
        .start_tls(|tcp| tls_client(shared, local, remote, tcp))
        .await
    {
        Ok(()) => Ok(()),
        Err(StartTlsError::Injected) => {
            Err(ConnectError::Negotiation("data after <proceed/>".into()))
        }
        Err(StartTlsError::NotPlain) => Err(ConnectError::Tls("already TLS".into())),
        Err(StartTlsError::Handshake(e)) => Err(e),
    }
}

async fn tls_client(
    shared: &S2sShared,
    local: &str,
    remote: &str,
    tcp: TcpStream,
) -> Result<Transport, ConnectError> {
    let cfg = shared
        .identity
        .client_tls
        .get(local)
        .cloned()
        .ok_or_else(|| ConnectError::Tls(format!("no TLS client configuration for {local}")))?;
    let name =
        ServerName::try_from(remote.to_string()).map_err(|e| ConnectError::Tls(e.to_string()))?;
    let started = Instant::now();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    shared
        .s2s_metrics
        .tls_seconds
        .record(started.elapsed().as_secs_f64());
    Ok(Transport::TlsClient(Box::new(tls)))
}

fn peer_identity(
    shared: &S2sShared,
    conn: &Connection,
) -> Option<Arc<dyn crate::stream::s2s::PeerIdentity>> {
    conn.peer_certificates()
        .map(|chain| shared.identity.verifier.identity(chain))
}

/// Writes the peer an end to the stream (the negotiation's own writes
/// are bounded by the caller's `stream_establishment_timeout`).
const END: Linger = Linger::no_drain(Duration::MAX);

async fn negotiate(
    shared: Arc<S2sShared>,
    mut conn: Connection,
    direct_tls: bool,
    local: &str,
    remote: &str,
    mode: OutMode,
    peer_addr: SocketAddr,
) -> Result<Established, ConnectError> {
    let started = Instant::now();
    let can_external = shared.identity.certs.for_domain(local).is_some();
    let policy = shared
        .policy(remote)
        .ok_or_else(|| ConnectError::Negotiation("domain refused by policy".into()))?;
    let mut neg = OutboundNegotiation::new(
        local.to_string(),
        remote.to_string(),
        policy,
        shared.identity.secret.clone(),
        can_external,
        mode,
    );
    let mut pending: std::collections::VecDeque<OutAction> = Default::default();
    if direct_tls {
        start_tls(&shared, local, remote, &mut conn).await?;
        let peer = peer_identity(&shared, &conn);
        pending.extend(neg.handle(OutInput::TlsEstablished { peer }));
    }
    pending.extend(neg.start());
    loop {
        while let Some(a) = pending.pop_front() {
            match a {
                OutAction::Send(s) => {
                    conn.send(Bytes::from(s))
                        .await
                        .map_err(|_| ConnectError::Closed)?;
                }
                OutAction::StartTls => {
                    start_tls(&shared, local, remote, &mut conn).await?;
                    let peer = peer_identity(&shared, &conn);
                    pending.extend(neg.handle(OutInput::TlsEstablished { peer }));
                }
                OutAction::RestartStream => conn.framer().reset(),
                OutAction::Ready(method) => {
                    shared
                        .s2s_metrics
                        .negotiation_seconds
                        .record(started.elapsed().as_secs_f64());
                    return Ok(Established {
                        conn,
                        method: Some(method),
                        verified: None,
                        peer_addr,
                        sm: neg.sm_offered(),
                    });
                }
                OutAction::Verified(valid) => {
                    conn.close(Bytes::from_static(b"</stream:stream>"), END)
                        .await;
                    return Ok(Established {
                        conn,
                        method: None,
                        verified: Some(valid),
                        peer_addr,
                        sm: false,
                    });
                }
                OutAction::Fail(f) => return Err(fail(&mut conn, f).await),
            }
        }
        // Need more input.
        let ev = loop {
            match conn.framer().next() {
                Ok(Some(ev)) => break ev,
                Ok(None) => {}
                Err(e) => {
                    let _ = conn
                        .send(Bytes::from(format!("{}</stream:stream>", e.to_xml())))
                        .await;
                    return Err(ConnectError::Negotiation(format!(
                        "the peer sent bad XML: {e}"
                    )));
                }
            }
            let n = conn.read().await.map_err(|_| ConnectError::Closed)?;
            if n == 0 {
                pending.extend(neg.handle(OutInput::StreamClosed));
                break FramerEvent::StreamClose;
            }
        };
        match ev {
            FramerEvent::StreamOpen(h) => pending.extend(neg.handle(OutInput::StreamOpen(&h))),
            FramerEvent::Stanza(s) => pending.extend(neg.handle(OutInput::Element(&s))),
            FramerEvent::StreamClose => {
                if pending.is_empty() {
                    return Err(ConnectError::Closed);
                }
            }
        }
    }
}

async fn fail(conn: &mut Connection, f: S2sFailure) -> ConnectError {
    if let Some(e) = &f.send {
        let tail = format!("{}</stream:stream>", e.to_xml());
        conn.close(Bytes::from(tail), END).await;
    }
    use crate::stream::s2s::FailReason;
    match f.reason {
        FailReason::PeerStreamError(_) | FailReason::Protocol(_) => {
            ConnectError::Negotiation(f.reason.to_string())
        }
        FailReason::RemoteCertificateInvalid => ConnectError::Certificate(f.reason.to_string()),
        _ => ConnectError::Refused(f.reason.to_string()),
    }
}
