//! A small but real XMPP client (RFC 6120 c2s: STARTTLS, SCRAM, bind) used
//! by the integration tests and the load generator. It shares the framer
//! and SCRAM code with the server, but speaks only the standard protocol,
//! so it works against any XMPP server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use fedrouter::error::{StreamCondition, StreamError};
use fedrouter::jid::FullJid;
use fedrouter::stream::scram::{ScramClient, ScramHash};
use fedrouter::xml::element::Element;
use fedrouter::xml::escape::{escape_attr, escape_text};
use fedrouter::xml::ns::{NS_BIND, NS_CLIENT, NS_SASL, NS_STREAMS, NS_TLS};
use fedrouter::xml::{Framer, FramerEvent, Stanza, StreamHeader};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server sent a stream error: {0}")]
    Stream(StreamError),
    #[error("the server closed the stream")]
    Closed,
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("tls: {0}")]
    Tls(String),
}

/// How the client checks the server certificate.
#[derive(Clone, Debug)]
pub enum TlsTrust {
    /// Accept any certificate (signatures are still checked). Tests only.
    Insecure,
    /// Trust these roots.
    Roots(Vec<CertificateDer<'static>>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Scram(ScramHash),
    /// SCRAM-SHA-256 when offered, else SCRAM-SHA-1 (Prosody and ejabberd
    /// offer only the latter).
    BestScram,
    Plain,
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub addr: SocketAddr,
    pub domain: String,
    pub username: String,
    pub password: String,
    pub resource: Option<String>,
    pub trust: TlsTrust,
    pub mechanism: Mechanism,
    pub timeout: Duration,
    /// Source address of the TCP connection (the kernel's choice when
    /// `None`); a load generator spreads many sessions over several.
    pub bind: Option<IpAddr>,
}

impl ClientConfig {
    pub fn new(addr: SocketAddr, jid: &str, password: &str) -> ClientConfig {
        let (user, domain) = jid.split_once('@').unwrap_or(("", jid));
        ClientConfig {
            addr,
            domain: domain.to_string(),
            username: user.to_string(),
            password: password.to_string(),
            resource: None,
            trust: TlsTrust::Insecure,
            mechanism: Mechanism::Scram(ScramHash::Sha256),
            timeout: Duration::from_secs(10),
            bind: None,
        }
    }
}

/// The client's socket, plain or TLS: what [`Client::into_parts`] hands
/// over.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while the socket is moved into the TLS handshake.
    Detached,
}

fn detached() -> std::task::Poll<std::io::Result<()>> {
    std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()))
}

impl AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Detached => detached(),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Detached => std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            Io::Detached => detached(),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Detached => detached(),
        }
    }
}

/// An XMPP stream over TCP (optionally upgraded to TLS): send raw XML,
/// receive framed stanzas. [`Client::connect`] does the whole negotiation;
/// [`Connection`] alone lets tests misbehave on purpose.
pub struct Connection {
    io: Io,
    framer: Framer,
    pub header: Option<StreamHeader>,
    timeout: Duration,
}

impl Connection {
    pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<Connection, ClientError> {
        Self::tcp_from(addr, None, timeout).await
    }

    /// Like [`tcp`](Self::tcp), from the source address `bind`.
    pub async fn tcp_from(
        addr: SocketAddr,
        bind: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let connect = async {
            match bind {
                None => TcpStream::connect(addr).await,
                Some(ip) => {
                    let sock = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    sock.bind(SocketAddr::new(ip, 0))?;
                    sock.connect(addr).await
                }
            }
        };
        let tcp = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout)??;
        let _ = tcp.set_nodelay(true);
        Ok(Connection {
            io: Io::Plain(tcp),
            framer: Framer::new(NS_CLIENT, 16 * 1024 * 1024),
            header: None,
            timeout,
        })
    }

    pub async fn send_raw(&mut self, data: impl AsRef<[u8]>) -> Result<(), ClientError> {
        self.io.write_all(data.as_ref()).await?;
        self.io.flush().await?;
        Ok(())
    }

    pub async fn open_stream(&mut self, domain: &str) -> Result<(), ClientError> {
        self.send_raw(format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>",
            escape_attr(domain)
        ))
        .await
    }

    /// The next framer event, waiting at most the configured timeout.
    pub async fn next_event(&mut self) -> Result<FramerEvent, ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.next_event_inner())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn next_event_inner(&mut self) -> Result<FramerEvent, ClientError> {
        loop {
            match self.framer.next() {
                Ok(Some(ev)) => return Ok(ev),
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(format!("server sent bad XML: {e}"))),
            }
            let n = {
                let mut buf = self.framer.read_buf();
                self.io.read_buf(&mut buf).await?
            };
            if n == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// The next stanza (or top-level element). A stream error or close is an `Err`.
    pub async fn recv(&mut self) -> Result<Stanza, ClientError> {
        loop {
            match self.next_event().await? {
                FramerEvent::StreamOpen(h) => self.header = Some(h),
                FramerEvent::StreamClose => return Err(ClientError::Closed),
                FramerEvent::Stanza(s) => {
                    if s.name() == "stream:error" {
                        return Err(ClientError::Stream(parse_stream_error(&s)));
                    }
                    return Ok(s);
                }
            }
        }
    }

    /// Reads until the server closes, returning the stream error it sent.
    pub async fn expect_stream_error(&mut self) -> Result<StreamError, ClientError> {
        loop {
            match self.recv().await {
                Ok(_) => continue,
                Err(ClientError::Stream(e)) => return Ok(e),
                Err(e) => return Err(e),
            }
        }
    }

    async fn recv_element(&mut self) -> Result<Element, ClientError> {
        let s = self.recv().await?;
        Element::parse(s.bytes(), NS_CLIENT, &[("stream", NS_STREAMS)])
            .map_err(|e| ClientError::Protocol(format!("unparsable element: {e:?}")))
    }

    /// Upgrades to TLS after `<proceed/>`.
    pub async fn start_tls(&mut self, domain: &str, trust: &TlsTrust) -> Result<(), ClientError> {
        let cfg = tls_config(trust)?;
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let tcp = match std::mem::replace(&mut self.io, Io::Detached) {
            Io::Plain(t) => t,
            other => {
                self.io = other;
                return Err(ClientError::Protocol("not a plain TCP stream".into()));
            }
        };
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        self.io = Io::Tls(Box::new(tls));
        self.framer = Framer::new(NS_CLIENT, 16 * 1024 * 1024);
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    /// Expects a new stream on the same transport, as after SASL success.
    pub fn restart(&mut self) {
        self.framer.reset();
    }
}

fn parse_stream_error(s: &Stanza) -> StreamError {
    let el = Element::parse(s.bytes(), NS_CLIENT, &[("stream", NS_STREAMS)]);
    let mut cond = StreamCondition::UndefinedCondition;
    let mut text = None;
    if let Ok(el) = el {
        for c in el.children.iter().filter_map(|n| match n {
            fedrouter::xml::element::Node::Element(e) => Some(e),
            _ => None,
        }) {
            if c.name == "text" {
                text = Some(c.text());
            } else if let Some(k) = StreamCondition::ALL.iter().find(|k| k.as_str() == c.name) {
                cond = *k;
            }
        }
    }
    StreamError {
        condition: cond,
        text,
    }
}

/// A negotiated, bound session.
pub struct Client {
    pub conn: Connection,
    pub jid: FullJid,
}

impl Client {
    pub async fn connect(cfg: &ClientConfig) -> Result<Client, ClientError> {
        let (mut conn, features) = Client::authenticated(cfg).await?;
        if features.child("bind", NS_BIND).is_none() {
            return Err(ClientError::Protocol(
                "no bind feature after authentication".into(),
            ));
        }
        let res = match &cfg.resource {
            Some(r) => format!("<resource>{}</resource>", escape_text(r)),
            None => String::new(),
        };
        conn.send_raw(format!(
            "<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'>{res}</bind></iq>"
        ))
        .await?;
        let r = conn.recv_element().await?;
        let jid = r
            .child("bind", NS_BIND)
            .and_then(|b| b.child("jid", NS_BIND))
            .map(|j| j.text())
            .ok_or_else(|| ClientError::Protocol("bind failed".into()))?;
        let jid =
            FullJid::parse(&jid).map_err(|e| ClientError::Protocol(format!("bound JID: {e}")))?;
        Ok(Client { conn, jid })
    }

    /// STARTTLS, SASL and the stream restart, stopping before bind: the
    /// connection and the features the server offered after
    /// authentication.
    pub async fn authenticated(cfg: &ClientConfig) -> Result<(Connection, Element), ClientError> {
        let mut conn = Connection::tcp_from(cfg.addr, cfg.bind, cfg.timeout).await?;
        conn.open_stream(&cfg.domain).await?;
        let mut features = conn.recv_element().await?;
        if features.child("starttls", NS_TLS).is_some() {
            conn.send_raw(format!("<starttls xmlns='{NS_TLS}'/>"))
                .await?;
            let p = conn.recv_element().await?;
            if p.name != "proceed" {
                return Err(ClientError::Tls("the server refused STARTTLS".into()));
            }
            conn.start_tls(&cfg.domain, &cfg.trust).await?;
            conn.open_stream(&cfg.domain).await?;
            features = conn.recv_element().await?;
        }
        let mechs: Vec<String> = features
            .child("mechanisms", NS_SASL)
            .map(|m| {
                m.children_named("mechanism", NS_SASL)
                    .map(|e| e.text())
                    .collect()
            })
            .unwrap_or_default();
        let scram = match cfg.mechanism {
            Mechanism::Scram(h) => Some(h),
            Mechanism::BestScram if mechs.iter().any(|m| m == "SCRAM-SHA-256") => {
                Some(ScramHash::Sha256)
            }
            Mechanism::BestScram => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        };
        match scram {
            Some(h) => {
                if !mechs.iter().any(|m| m == h.mechanism_name()) {
                    return Err(ClientError::Auth(format!(
                        "{} not offered: {mechs:?}",
                        h.mechanism_name()
                    )));
                }
                let (mut scram, first) = ScramClient::new(h, &cfg.username, &cfg.password)
                    .map_err(|e| ClientError::Auth(e.to_string()))?;
                conn.send_raw(format!(
                    "<auth xmlns='{NS_SASL}' mechanism='{}'>{}</auth>",
                    h.mechanism_name(),
                    B64.encode(first)
                ))
                .await?;
                let ch = conn.recv_element().await?;
                if ch.name != "challenge" {
                    return Err(ClientError::Auth(format!(
                        "<{}/> instead of a challenge",
                        first_child_name(&ch)
                    )));
                }
                let server_first = B64
                    .decode(ch.text().trim())
                    .map_err(|e| ClientError::Auth(e.to_string()))?;
                let fin = scram
                    .handle_server_first(&server_first)
                    .map_err(|e| ClientError::Auth(e.to_string()))?;
                conn.send_raw(format!(
                    "<response xmlns='{NS_SASL}'>{}</response>",
                    B64.encode(fin)
                ))
                .await?;
                let ok = conn.recv_element().await?;
                if ok.name != "success" {
                    return Err(ClientError::Auth(first_child_name(&ok)));
                }
                let server_final = B64
                    .decode(ok.text().trim())
                    .map_err(|e| ClientError::Auth(e.to_string()))?;
                scram
                    .verify_server_final(&server_final)
                    .map_err(|e| ClientError::Auth(e.to_string()))?;
            }
            None => {
                let blob = format!("\0{}\0{}", cfg.username, cfg.password);
                conn.send_raw(format!(
                    "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{}</auth>",
                    B64.encode(blob)
                ))
                .await?;
                let ok = conn.recv_element().await?;
                if ok.name != "success" {
                    return Err(ClientError::Auth(first_child_name(&ok)));
                }
            }
        }
        conn.framer.reset();
        conn.open_stream(&cfg.domain).await?;
        let features = conn.recv_element().await?;
        Ok((conn, features))
    }

    pub async fn send(&mut self, xml: impl AsRef<[u8]>) -> Result<(), ClientError> {
        self.conn.send_raw(xml).await
    }

    pub async fn recv(&mut self) -> Result<Stanza, ClientError> {
        self.conn.recv().await
    }

    /// Receives until `pred` matches, dropping what does not (bounded by
    /// the connection timeout per stanza).
    pub async fn recv_until(
        &mut self,
        mut pred: impl FnMut(&Stanza) -> bool,
    ) -> Result<Stanza, ClientError> {
        loop {
            let s = self.recv().await?;
            if pred(&s) {
                return Ok(s);
            }
        }
    }

    /// Sends an IQ and waits for the answer with the same id.
    pub async fn iq(&mut self, id: &str, xml: &str) -> Result<Stanza, ClientError> {
        self.send(xml).await?;
        self.recv_until(|s| {
            s.name() == "iq"
                && s.id().as_deref() == Some(id)
                && matches!(s.type_().as_deref(), Some("result") | Some("error"))
        })
        .await
    }

    /// Closes the stream politely and waits for the server's close.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.send("</stream:stream>").await?;
        loop {
            match self.conn.recv().await {
                Ok(_) => continue,
                Err(ClientError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.conn.timeout = t;
    }

    /// The socket and the framer (with whatever it already buffered), for
    /// a caller that reads and writes on its own, e.g. split in two
    /// halves.
    pub fn into_parts(self) -> (Io, Framer) {
        (self.conn.io, self.conn.framer)
    }
}

fn first_child_name(e: &Element) -> String {
    e.children
        .iter()
        .find_map(|n| match n {
            fedrouter::xml::element::Node::Element(c) => Some(c.name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| e.name.clone())
}

fn tls_config(trust: &TlsTrust) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = fedrouter::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let cfg = match trust {
        TlsTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(fedrouter::pki::accept_any_server_cert())
            .with_no_client_auth(),
        TlsTrust::Roots(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                store
                    .add(r.clone())
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
    };
    Ok(Arc::new(cfg))
}
