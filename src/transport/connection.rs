//! One connection's I/O, the same for every driver (after mini-redis's
//! `Connection`): reading into its [`Framer`], sending, STARTTLS with the
//! injection check, and closing with a lingering drain.
//!
//! A connection starts whole (one task reads and writes, as negotiation
//! does) and may be [`Connection::split`] once: the read half stays here,
//! writes go through a [`Writer`] task that others (shards) feed too.
//!
//! It owns the socket, the framer and the byte counters (`bytes_in`; the
//! writes it makes itself count in `bytes_out`, as the writer's do). It
//! must not decide anything XMPP: which error to close with, whether a
//! STARTTLS injection is a stream error or a failed attempt, and every
//! timeout but the write deadline (given by the driver, enforced here and in
//! the writer task) are the driver's.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::shaper::Shaper;
use super::writer::{Queue, QueueLimits, Writer};
use super::{ReadHalf, Transport};
use crate::error::{StreamCondition, StreamError};
use crate::events::Metrics;
use crate::xml::{Frame, Framer};

pub struct Connection {
    io: Io,
    framer: Framer,
    /// The framer's content namespace, for the fresh framer after TLS.
    ns: &'static str,
    metrics: Arc<Metrics>,
    /// How long a write may make no progress before it fails.
    write_timeout: Duration,
    /// Read shaping (`gateway.c2s_rate_limit`, `s2s_rate_limit`).
    shaper: Option<Shaper>,
}

/// The write deadline of a connection no one set one for.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

enum Io {
    /// Negotiating: reads and writes on the whole transport.
    Whole(Transport),
    /// Running: reads here, writes through the writer task.
    Split {
        rd: ReadHalf,
        writer: Writer,
        /// Cancelled when the writer's write deadline passes: reading then
        /// fails too, so the driver closes the connection.
        write_failed: tokio_util::sync::CancellationToken,
    },
    Closed,
}

/// How a close waits for the peer: writing the tail is bounded by `write`
/// (a peer that does not read), then what the peer still sends is read and
/// discarded for at most `drain` and `drain_bytes`, so closing with unread
/// data does not reset the connection and destroy the stream error before
/// the peer has read it. `total` bounds the whole.
#[derive(Clone, Copy, Debug)]
pub struct Linger {
    pub write: Duration,
    pub drain: Duration,
    pub drain_bytes: usize,
    pub total: Duration,
}

impl Linger {
    /// Write the tail within `write`, then drop the connection at once.
    pub const fn no_drain(write: Duration) -> Linger {
        Linger {
            write,
            drain: Duration::ZERO,
            drain_bytes: 0,
            total: Duration::MAX,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartTlsError<E> {
    /// Bytes the peer sent after the STARTTLS command and before the
    /// handshake would be read as if they came over TLS: the
    /// command-injection hole (CVE-2011-0411 class). The connection is
    /// left as it was.
    #[error("data received after the STARTTLS command before the TLS handshake")]
    Injected,
    /// Already TLS, split or closed; the connection is closed.
    #[error("the connection is not plain TCP")]
    NotPlain,
    /// The handshake failed; the connection is closed.
    #[error("TLS handshake: {0}")]
    Handshake(E),
}

/// The stream error c2s and inbound s2s answer [`StartTlsError::Injected`]
/// with (a receiving entity's choice; an initiating one just gives up).
pub fn injection_error() -> StreamError {
    StreamError::with_text(
        StreamCondition::PolicyViolation,
        "data received after <starttls/> before the TLS handshake",
    )
}

impl Connection {
    pub fn new(
        transport: Transport,
        ns: &'static str,
        max_stanza: usize,
        metrics: Arc<Metrics>,
    ) -> Connection {
        Connection {
            io: Io::Whole(transport),
            framer: Framer::new(ns, max_stanza),
            ns,
            metrics,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            shaper: None,
        }
    }

    /// A write (here, or in the writer task after [`Connection::split`])
    /// that makes no progress for `d` fails and closes the connection: a
    /// peer that does not read cannot hold its session or a shutdown.
    pub fn with_write_timeout(mut self, d: Duration) -> Connection {
        self.write_timeout = d;
        self
    }

    /// Shapes reads to `rate` bytes per second (0: unshaped).
    pub fn set_read_rate(&mut self, rate: u64) {
        self.shaper = Shaper::new(rate, tokio::time::Instant::now());
    }

    pub fn framer(&mut self) -> &mut Framer {
        &mut self.framer
    }

    /// Whether bytes can still arrive (not closed).
    pub fn can_read(&self) -> bool {
        matches!(self.io, Io::Whole(_) | Io::Split { .. })
    }

    /// The writer task's queue, once split.
    pub fn queue(&self) -> Option<&Queue> {
        match &self.io {
            Io::Split { writer, .. } => Some(&writer.queue),
            _ => None,
        }
    }

    /// The certificate chain the peer presented, while whole and TLS.
    pub fn peer_certificates(&self) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
        match &self.io {
            Io::Whole(t) => t.peer_certificates(),
            _ => None,
        }
    }

    /// Waits for bytes and appends them to the framer; `Ok(0)` is EOF.
    /// Holds no read buffer while waiting ([`Transport::poll_read_into`]).
    /// Never ready when there is nothing to read from, so it can sit in a
    /// `select!` beside a mailbox and timers. Cancel-safe: bytes are only
    /// taken from the socket in the poll that returns them.
    pub async fn read(&mut self) -> io::Result<usize> {
        if let Some(at) = self.shaper.as_ref().and_then(Shaper::ready_at) {
            tokio::time::sleep_until(at).await;
        }
        let write_failed = match &self.io {
            Io::Split { write_failed, .. } => Some(write_failed.clone()),
            _ => None,
        };
        let n = tokio::select! {
            biased;
            r = std::future::poll_fn(|cx| self.poll_read(cx)) => r?,
            _ = async {
                match &write_failed {
                    Some(t) => t.cancelled().await,
                    None => std::future::pending().await,
                }
            } => return Err(io::ErrorKind::TimedOut.into()),
        };
        if let Some(s) = &mut self.shaper {
            s.consumed(n, tokio::time::Instant::now());
        }
        self.metrics.bytes_in.increment(n as u64);
        Ok(n)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Whole(t) => t.poll_read_into(cx, &mut self.framer),
            Io::Split { rd, .. } => rd.poll_read_into(cx, &mut self.framer),
            Io::Closed => Poll::Pending,
        }
    }

    /// Writes `b`: at once while whole (flushed, failing with `TimedOut`
    /// when the peer takes nothing for the write timeout), through the
    /// writer's queue once split (waiting for room). An error means the
    /// connection is unusable.
    pub async fn send(&mut self, b: Bytes) -> io::Result<()> {
        match &mut self.io {
            Io::Whole(t) => {
                let mut t = super::WriteDeadline::new(t, self.write_timeout);
                t.write_all(&b).await?;
                t.flush().await?;
                self.metrics.bytes_out.increment(b.len() as u64);
                Ok(())
            }
            Io::Split { writer, .. } => writer
                .queue
                .send(b.into())
                .await
                .map_err(|_| io::ErrorKind::BrokenPipe.into()),
            Io::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Hands writing to a writer task with a queue bounded by `limits`
    /// and returns a sender for it; `None` if not whole.
    pub fn split(&mut self, limits: QueueLimits) -> Option<Queue> {
        let Io::Whole(t) = std::mem::replace(&mut self.io, Io::Closed) else {
            return None;
        };
        let (rd, wr) = super::split(t);
        let write_failed = tokio_util::sync::CancellationToken::new();
        let wr = super::WriteDeadline::new(wr, self.write_timeout).signalling(write_failed.clone());
        let writer = Writer::spawn(wr, limits, self.metrics.clone());
        let queue = writer.queue.clone();
        self.io = Io::Split {
            rd,
            writer,
            write_failed,
        };
        Some(queue)
    }

    /// Upgrades plain TCP to TLS with `handshake` (server or client side,
    /// with whatever budget the driver gives it), after checking that the
    /// peer sent nothing past the command. The stream restarts on a fresh
    /// framer with the same namespace and size limit.
    pub async fn start_tls<F, Fut, E>(&mut self, handshake: F) -> Result<(), StartTlsError<E>>
    where
        F: FnOnce(TcpStream) -> Fut,
        Fut: Future<Output = Result<Transport, E>>,
    {
        if self.framer.buffered() > 0 {
            return Err(StartTlsError::Injected);
        }
        let tcp = match std::mem::replace(&mut self.io, Io::Closed) {
            Io::Whole(Transport::Plain(tcp)) => tcp,
            other => {
                self.io = other;
                return Err(StartTlsError::NotPlain);
            }
        };
        let tls = handshake(tcp).await.map_err(StartTlsError::Handshake)?;
        self.io = Io::Whole(tls);
        self.framer = Framer::new(self.ns, self.framer.max_stanza_size());
        Ok(())
    }

    /// Writes what is queued, then `tail` (a stream error and
    /// `</stream:stream>`, or nothing), shuts the socket down, lingers as
    /// `linger` says, and drops the connection. Returns the frames the
    /// writer never wrote (the peer did not read, or the socket died), for
    /// the caller to keep or bounce. Closing a closed connection does
    /// nothing.
    pub async fn close(&mut self, tail: Bytes, linger: Linger) -> Vec<Frame> {
        let queue = self.queue().cloned();
        self.close_keeping_queue(tail, linger).await;
        queue.map(|q| q.take_unwritten()).unwrap_or_default()
    }

    /// [`Connection::close`], leaving what was not written in the writer's
    /// queue (a session waiting to be resumed sends it on its next
    /// connection).
    pub async fn close_keeping_queue(&mut self, tail: Bytes, linger: Linger) {
        let io = std::mem::replace(&mut self.io, Io::Closed);
        let _ = tokio::time::timeout(linger.total, async move {
            match io {
                Io::Whole(mut t) => {
                    let _ = tokio::time::timeout(linger.write, async {
                        let _ = t.write_all(&tail).await;
                        let _ = t.shutdown().await;
                    })
                    .await;
                    drain(&mut t, linger).await;
                }
                Io::Split {
                    mut rd, mut writer, ..
                } => {
                    writer.close(tail, linger.write).await;
                    drain(&mut rd, linger).await;
                }
                Io::Closed => {}
            }
        })
        .await;
    }

    /// Moves the connection out (to the session it resumes), leaving a
    /// closed one.
    pub fn take(&mut self) -> Connection {
        let closed = Connection {
            io: Io::Closed,
            framer: Framer::new(self.ns, self.framer.max_stanza_size()),
            ns: self.ns,
            metrics: self.metrics.clone(),
            write_timeout: self.write_timeout,
            shaper: None,
        };
        std::mem::replace(self, closed)
    }

    /// [`Connection::split`] onto an existing queue (a resumed session's),
    /// whose writer is gone.
    pub fn attach(&mut self, queue: &Queue) -> bool {
        let Io::Whole(t) = std::mem::replace(&mut self.io, Io::Closed) else {
            return false;
        };
        let (rd, wr) = super::split(t);
        let write_failed = tokio_util::sync::CancellationToken::new();
        let wr = super::WriteDeadline::new(wr, self.write_timeout).signalling(write_failed.clone());
        let writer = Writer::attach(wr, queue, self.metrics.clone());
        self.io = Io::Split {
            rd,
            writer,
            write_failed,
        };
        true
    }
}

/// Reads and discards until EOF, an error, or `linger`'s drain bounds.
async fn drain<R: AsyncRead + Unpin>(r: &mut R, linger: Linger) {
    if linger.drain.is_zero() || linger.drain_bytes == 0 {
        return;
    }
    let _ = tokio::time::timeout(linger.drain, async {
        // Only for the moment of closing; a session holds none.
        let mut sink = vec![0u8; 16 * 1024];
        let mut left = linger.drain_bytes;
        while left > 0 {
            match r.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::FramerEvent;
    use crate::xml::ns::NS_CLIENT;
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    const HDR: &str = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='a.example' version='1.0'>";
    const LINGER: Linger = Linger {
        write: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        drain_bytes: 1 << 20,
        total: Duration::MAX,
    };

    async fn pair() -> (TcpStream, Connection) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        let conn = Connection::new(Transport::Plain(server), NS_CLIENT, 8192, Metrics::get());
        (client, conn)
    }

    /// Reads until the framer has `want` events.
    async fn events(conn: &mut Connection, want: usize) -> Vec<FramerEvent> {
        let mut out = Vec::new();
        while out.len() < want {
            let n = conn.read().await.expect("read");
            assert!(n > 0, "EOF after {} events", out.len());
            while let Some(e) = conn.framer().next().expect("valid") {
                out.push(e);
            }
        }
        out
    }

    async fn read_to_end(client: &mut TcpStream) -> String {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        String::from_utf8(got).expect("utf-8")
    }

    #[tokio::test]
    async fn bytes_sent_after_the_starttls_command_refuse_the_handshake() {
        let (mut client, mut conn) = pair().await;
        let starttls = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
        client
            .write_all(format!("{HDR}{starttls}<message/>").as_bytes())
            .await
            .expect("write");
        // Read until the <starttls/> is framed and the injected bytes sit
        // behind it in the framer.
        let mut seen = 0;
        while seen < 2 || conn.framer().buffered() == 0 {
            assert!(conn.read().await.expect("read") > 0, "EOF");
            while seen < 2 {
                match conn.framer().next().expect("valid") {
                    Some(_) => seen += 1,
                    None => break,
                }
            }
        }
        let mut called = false;
        let r = conn
            .start_tls(|_tcp| {
                called = true;
                async { Err::<Transport, io::Error>(io::ErrorKind::Other.into()) }
            })
            .await;
        assert!(matches!(r, Err(StartTlsError::Injected)), "{r:?}");
        assert!(!called, "no handshake is attempted");
        assert!(conn.can_read(), "the driver decides how to close");
    }

    #[tokio::test]
    async fn a_clean_starttls_hands_the_socket_to_the_handshake_and_restarts_the_framer() {
        let (_client, mut conn) = pair().await;
        conn.framer().set_max_stanza_size(1234);
        let r = conn
            .start_tls(|tcp| async move { Ok::<_, io::Error>(Transport::Plain(tcp)) })
            .await;
        assert!(r.is_ok(), "{r:?}");
        assert!(conn.can_read());
        assert_eq!(conn.framer().max_stanza_size(), 1234);
        // Once split, it is no longer plain TCP to upgrade.
        assert!(conn.split(QueueLimits::frames(4)).is_some());
        let r = conn
            .start_tls(|tcp| async move { Ok::<_, io::Error>(Transport::Plain(tcp)) })
            .await;
        assert!(matches!(r, Err(StartTlsError::NotPlain)), "{r:?}");
    }

    #[tokio::test]
    async fn close_writes_the_error_then_the_stream_end_and_shuts_the_socket() {
        let (mut client, mut conn) = pair().await;
        conn.send(Bytes::from_static(b"<hello/>"))
            .await
            .expect("send");
        let tail = "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>";
        let closing = tokio::spawn(async move {
            conn.close(Bytes::from_static(tail.as_bytes()), LINGER)
                .await;
            conn
        });
        assert_eq!(read_to_end(&mut client).await, format!("<hello/>{tail}"));
        drop(client);
        let conn = closing.await.expect("close");
        assert!(!conn.can_read());
        assert!(conn.queue().is_none());
    }

    #[tokio::test]
    async fn a_split_connection_closes_after_what_its_writer_has_queued() {
        let (mut client, mut conn) = pair().await;
        client.write_all(HDR.as_bytes()).await.expect("write");
        let ev = events(&mut conn, 1).await;
        assert!(matches!(ev[0], FramerEvent::StreamOpen(_)));
        let q = conn.split(QueueLimits::frames(8)).expect("whole");
        q.try_send(Bytes::from_static(b"<a/>").into())
            .expect("room");
        conn.send(Bytes::from_static(b"<b/>")).await.expect("send");
        let closing = tokio::spawn(async move {
            conn.close(Bytes::from_static(b"</stream:stream>"), LINGER)
                .await;
        });
        assert_eq!(read_to_end(&mut client).await, "<a/><b/></stream:stream>");
        drop(client);
        closing.await.expect("close");
        assert!(q.try_send(Bytes::from_static(b"<c/>").into()).is_err());
    }

    /// Real time (tokio's paused clock is not enabled here): short bounds,
    /// and a wide margin above them for a loaded machine.
    const SHORT: Linger = Linger {
        write: Duration::from_secs(5),
        drain: Duration::from_millis(300),
        drain_bytes: 1 << 20,
        total: Duration::MAX,
    };
    const MARGIN: Duration = Duration::from_secs(3);

    #[tokio::test]
    async fn the_linger_is_bounded_when_the_peer_never_closes() {
        let (mut client, mut conn) = pair().await;
        let started = Instant::now();
        conn.close(Bytes::from_static(b"</stream:stream>"), SHORT)
            .await;
        let took = started.elapsed();
        assert!(
            took >= SHORT.drain && took < SHORT.drain + MARGIN,
            "{took:?}"
        );
        // The peer still got the stream end and then EOF.
        assert_eq!(read_to_end(&mut client).await, "</stream:stream>");
    }

    #[tokio::test]
    async fn the_total_bound_cuts_the_linger_short() {
        let (_client, mut conn) = pair().await;
        let started = Instant::now();
        let linger = Linger {
            drain: Duration::from_secs(600),
            total: Duration::from_millis(300),
            ..SHORT
        };
        conn.close(Bytes::new(), linger).await;
        let took = started.elapsed();
        assert!(
            took >= linger.total && took < linger.total + MARGIN,
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn the_linger_ends_as_soon_as_the_peer_closes() {
        let (mut client, mut conn) = pair().await;
        let closing = tokio::spawn(async move {
            let started = Instant::now();
            conn.close(Bytes::from_static(b"</stream:stream>"), LINGER)
                .await;
            started.elapsed()
        });
        assert_eq!(read_to_end(&mut client).await, "</stream:stream>");
        client.write_all(b"late bytes").await.expect("write");
        drop(client);
        let took = closing.await.expect("close");
        assert!(took < LINGER.drain, "{took:?}");
    }

    #[tokio::test]
    async fn a_stream_transport_reads_and_writes_like_a_socket() {
        let (peer, ours) = tokio::io::duplex(4096);
        let mut conn = Connection::new(
            Transport::Stream(Box::new(ours)),
            NS_CLIENT,
            8192,
            Metrics::get(),
        );
        let (mut prd, mut pwr) = tokio::io::split(peer);
        pwr.write_all(HDR.as_bytes()).await.expect("write");
        let ev = events(&mut conn, 1).await;
        assert!(matches!(ev[0], FramerEvent::StreamOpen(_)));
        let r = conn
            .start_tls(|tcp| async move { Ok::<_, io::Error>(Transport::Plain(tcp)) })
            .await;
        assert!(matches!(r, Err(StartTlsError::NotPlain)), "{r:?}");
        assert!(conn.split(QueueLimits::frames(8)).is_some());
        conn.send(Bytes::from_static(b"<x/>")).await.expect("send");
        drop(pwr);
        conn.close(Bytes::from_static(b"</stream:stream>"), LINGER)
            .await;
        let mut got = Vec::new();
        prd.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"<x/></stream:stream>");
    }
}
