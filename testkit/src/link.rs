//! Outbound federation links that end in memory: a
//! [`fedrouter::s2s::Connector`] whose every link writes into a sink the
//! caller makes, with no DNS, TCP, TLS or negotiation behind it. Start the
//! daemon with [`fedrouter::start_with_connector`] and everything sent to
//! a remote domain goes through the real router, the real outbound domain
//! actor and its real batched writer into that sink: what a benchmark of
//! the send path wants to measure, and what a test wants to inspect.
//!
//! The peer of such a link never speaks and never closes, so the actor
//! keeps the link up until it goes idle or the daemon stops.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use fedrouter::s2s::{Connecting, Connector, Link, S2sShared};
use fedrouter::transport::{Connection, Transport};
use fedrouter::xml::ns::NS_SERVER;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Makes one sink per link: called with the (local, remote) domain pair
/// each time an outbound actor connects.
pub struct MemoryConnector<F> {
    make: F,
}

impl<F, W> MemoryConnector<F>
where
    F: Fn(&str, &str) -> W + Send + Sync + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    pub fn new(make: F) -> Arc<MemoryConnector<F>> {
        Arc::new(MemoryConnector { make })
    }
}

impl<F, W> Connector for MemoryConnector<F>
where
    F: Fn(&str, &str) -> W + Send + Sync + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    fn connect(&self, shared: Arc<S2sShared>, local: String, remote: String) -> Connecting {
        let io = Box::new(MemoryLink((self.make)(&local, &remote)));
        let conn = Connection::new(
            Transport::Stream(io),
            NS_SERVER,
            shared.config.gateway.max_stanza_size,
            shared.metrics.clone(),
        );
        Box::pin(async move {
            Ok(Link {
                conn,
                method: None,
                peer_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                sm: false,
            })
        })
    }
}

/// A link over a sink: reads wait forever (the peer is silent), writes go
/// to the sink as they are, vectored writes included.
struct MemoryLink<W>(W);

impl<W: Unpin> AsyncRead for MemoryLink<W> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Never ready, and so never woken: the actor's other branches
        // (mailbox, timers) keep running.
        Poll::Pending
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for MemoryLink<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use fedrouter::jid::Jid;
    use fedrouter::router::Envelope;
    use fedrouter::xml::Stanza;
    use tokio::io::AsyncReadExt;

    use super::*;

    fn config(data_dir: &std::path::Path) -> fedrouter::config::Config {
        let toml = format!(
            r#"
[server]
domains = ["example.org"]
data_dir = "{}"
[c2s]
listen = []
[s2s]
listen = []
[metrics]
listen = ""
[log]
level = "off"
[[partner]]
domain = "remote.example"
partner_type = "federated"
[[access_policy]]
name = "global"
enable_federation_access = true
enable_xmpp_access = true
"#,
            data_dir.display()
        );
        fedrouter::config::Config::from_toml_str(&toml, None).expect("test config")
    }

    #[tokio::test]
    async fn a_stanza_for_a_remote_domain_goes_through_the_outbound_actor_into_the_sink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut links) = tokio::sync::mpsc::unbounded_channel();
        let connector = MemoryConnector::new(move |local: &str, remote: &str| {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            let _ = tx.send((local.to_string(), remote.to_string(), theirs));
            ours
        });
        let daemon = fedrouter::start_with_connector(config(dir.path()), connector)
            .await
            .expect("start");
        let stanza = Stanza::parse(Bytes::from_static(
            b"<message type='chat' id='m1'><body>hi</body></message>",
        ))
        .expect("stanza");
        let from = Jid::parse("alice@example.org/desk").expect("jid");
        let to = Jid::parse("bob@remote.example").expect("jid");
        daemon.router.route(Envelope::new(stanza, from, to)).await;

        let (local, remote, mut peer) = tokio::time::timeout(Duration::from_secs(10), links.recv())
            .await
            .expect("the outbound actor connected")
            .expect("a link");
        assert_eq!(
            (local.as_str(), remote.as_str()),
            ("example.org", "remote.example")
        );
        let mut got = Vec::new();
        while !got.ends_with(b"</message>") {
            let n = tokio::time::timeout(Duration::from_secs(10), peer.read_buf(&mut got))
                .await
                .expect("the stanza arrived")
                .expect("read");
            assert!(n > 0, "the link closed after {got:?}");
        }
        let sent = Stanza::parse(Bytes::from(got)).expect("one whole stanza");
        assert_eq!(sent.to().as_deref(), Some("bob@remote.example"));
        assert_eq!(sent.from().as_deref(), Some("alice@example.org/desk"));
        assert!(links.try_recv().is_err(), "one link for one domain");
        daemon.shutdown().await;
    }
}
