//! Everything between a socket and the sans-IO machines, shared by every
//! driver (c2s sessions, inbound and outbound s2s, outbound connect):
//!
//! - [`Transport`]: a connection before and after STARTTLS, as one stream
//!   type: plain TCP, TLS as the server (c2s, inbound s2s) or TLS as the
//!   client (outbound s2s); reading into a [`Framer`] without a read buffer
//!   held across the wait ([`Transport::poll_read_into`]), and the split of
//!   one transport between a reader and a writer task ([`split`]), which
//!   keeps that ability on the read half;
//! - [`Connection`] (`connection.rs`): one connection's read, send,
//!   STARTTLS (with the injection check) and close (with linger);
//! - [`accept_loop`] (`accept.rs`): listener → one spawn per connection;
//! - [`writer`]: the batching writer task and its queue;
//! - [`raise_fd_limit`]: room for as many sockets as the system allows.
//!
//! It knows bytes, frames and TLS, not XMPP meaning: what to send, when to
//! close and with which error is the drivers' (and their machines') call.

mod accept;
pub mod caps;
mod connection;
mod deadline;
pub mod shaper;
pub mod writer;

pub use accept::accept_loop;
pub use caps::{CapSlot, ConnCaps, Over};
pub use connection::{Connection, Linger, StartTlsError, injection_error};
pub use deadline::WriteDeadline;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::xml::Framer;

/// The first TCP keepalive probe after this much silence, then one per
/// [`KEEPALIVE_INTERVAL`]: a peer that vanished without a FIN or RST (a
/// NAT dropped its state, its host lost power) is found by the kernel in
/// minutes, not the hours of the system default.
const KEEPALIVE_TIME: std::time::Duration = std::time::Duration::from_secs(120);
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Sets TCP keepalive on an accepted or connected socket. Best effort: a
/// socket that refuses it works as before.
pub fn keepalive(tcp: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka);
}

/// Raises this process's open-file limit to its hard limit: every socket
/// is a descriptor, and the usual soft limit (1024) is far below what a
/// federation edge or a load generator holds. Returns the new limit.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            crate::events::daemon::FdLimitNotRaised { error: &e }.emit();
            None
        }
    }
}

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Any other byte stream, secured (or not) by whoever made it: an
    /// embedder's tunnel, an in-memory link for benches and tests. It cannot
    /// be upgraded with STARTTLS.
    Stream(Box<dyn Stream>),
}

/// What a [`Transport::Stream`] must be: a byte stream both ways that can
/// move between tasks (a reader and its writer task).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl Transport {
    /// Whether TLS protects this stream (a [`Transport::Stream`] counts
    /// as not: we cannot tell).
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_) | Transport::TlsClient(_))
    }

    /// The certificate chain the peer presented in the TLS handshake.
    pub fn peer_certificates(&self) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
        let certs = match self {
            Transport::Plain(_) | Transport::Stream(_) => None,
            Transport::Tls(s) => s.get_ref().1.peer_certificates(),
            Transport::TlsClient(s) => s.get_ref().1.peer_certificates(),
        }?;
        Some(certs.iter().map(|c| c.clone().into_owned()).collect())
    }

    /// Waits for bytes and appends them to `framer`; `Ok(0)` is EOF. While
    /// waiting it holds no read buffer, and the framer's is released when it
    /// is empty: an idle session then costs no read buffer at all. Plain TCP
    /// waits for readiness before the framer reserves; TLS copies the
    /// decrypted record straight from rustls, the one copy a `poll_read`
    /// would make too.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        framer: &mut Framer,
    ) -> Poll<io::Result<usize>> {
        let r = match self {
            Transport::Plain(tcp) => poll_read_plain(tcp, cx, framer),
            Transport::Tls(s) => poll_read_buffered(Pin::new(s.as_mut()), cx, framer),
            Transport::TlsClient(s) => poll_read_buffered(Pin::new(s.as_mut()), cx, framer),
            Transport::Stream(s) => {
                tokio_util::io::poll_read_buf(Pin::new(s.as_mut()), cx, &mut framer.read_buf())
            }
        };
        if r.is_pending() {
            framer.shrink_if_idle();
        }
        r
    }
}

fn poll_read_plain(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    framer: &mut Framer,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_read_ready(cx))?;
        match tcp.try_read_buf(&mut framer.read_buf()) {
            // Readiness was stale; `try_read_buf` cleared it, so the next
            // `poll_read_ready` registers the waker.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

fn poll_read_buffered<R: AsyncBufRead>(
    mut r: Pin<&mut R>,
    cx: &mut Context<'_>,
    framer: &mut Framer,
) -> Poll<io::Result<usize>> {
    let data = ready!(r.as_mut().poll_fill_buf(cx))?;
    let n = if data.is_empty() {
        0
    } else {
        framer.fill_from(data)
    };
    r.consume(n);
    Poll::Ready(Ok(n))
}

/// Splits a transport between a session's reader and its writer task. Like
/// `tokio::io::split` (one lock around the whole stream, since a TLS
/// connection's state is shared by both directions), but the read half can
/// still [`ReadHalf::poll_read_into`] a framer.
pub fn split(t: Transport) -> (ReadHalf, WriteHalf) {
    let shared = Arc::new(Mutex::new(t));
    (ReadHalf(shared.clone()), WriteHalf(shared))
}

pub struct ReadHalf(Arc<Mutex<Transport>>);

pub struct WriteHalf(Arc<Mutex<Transport>>);

/// The lock is held only inside one poll, never across an await, and a
/// panic while holding it leaves nothing half-updated on our side.
fn lock(m: &Mutex<Transport>) -> MutexGuard<'_, Transport> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReadHalf {
    /// See [`Transport::poll_read_into`].
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        framer: &mut Framer,
    ) -> Poll<io::Result<usize>> {
        lock(&self.0).poll_read_into(cx, framer)
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Stream(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Stream(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Transport::Stream(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Stream(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Stream(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::FramerEvent;
    use crate::xml::ns::NS_CLIENT;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const HDR: &str = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='a.example' version='1.0'>";

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        (client, server)
    }

    /// Polls once: `None` when the read would wait.
    async fn poll_once(rd: &mut ReadHalf, f: &mut Framer) -> Option<io::Result<usize>> {
        std::future::poll_fn(|cx| match rd.poll_read_into(cx, f) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    async fn events(rd: &mut ReadHalf, f: &mut Framer, want: usize) -> Vec<FramerEvent> {
        let mut out = Vec::new();
        while out.len() < want {
            let n = std::future::poll_fn(|cx| rd.poll_read_into(cx, f))
                .await
                .expect("read");
            assert!(n > 0, "EOF after {out:?}");
            while let Some(e) = f.next().expect("valid") {
                out.push(e);
            }
        }
        out
    }

    #[tokio::test]
    async fn a_reader_waits_without_a_read_buffer_and_frames_what_arrives() {
        let (mut client, server) = pair().await;
        let (mut rd, mut wr) = split(Transport::Plain(server));
        let mut f = Framer::new(NS_CLIENT, 8192);
        assert!(poll_once(&mut rd, &mut f).await.is_none());
        assert_eq!(f.allocated(), 0);

        client
            .write_all(format!("{HDR}<presence/>").as_bytes())
            .await
            .expect("write");
        let ev = events(&mut rd, &mut f, 2).await;
        assert!(matches!(ev[0], FramerEvent::StreamOpen(_)));
        assert!(matches!(ev[1], FramerEvent::Stanza(_)));
        assert!(poll_once(&mut rd, &mut f).await.is_none());
        assert_eq!(f.allocated(), 0, "released once drained");

        // The write half shares the stream.
        wr.write_all(b"<presence/>").await.expect("write");
        let mut got = [0u8; 11];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"<presence/>");

        drop(client);
        let n = std::future::poll_fn(|cx| rd.poll_read_into(cx, &mut f)).await;
        assert_eq!(n.expect("eof"), 0);
    }
}
