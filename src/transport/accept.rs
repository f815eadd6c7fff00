//! The one accept loop (mini-redis's `Listener::run`): every listener
//! (c2s, s2s STARTTLS, s2s Direct TLS) hands each accepted socket to its
//! driver's spawn function. What a connection is (and any TLS it starts
//! with) is the driver's; connection caps are counted by the drivers too,
//! since they know the peer and answer with a stream error.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long to wait after a failed accept (EMFILE and friends) instead of
/// spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` until the task is dropped; `kind`
/// names the listener in the log line of a failed accept.
pub async fn accept_loop<F>(listener: TcpListener, kind: &'static str, mut spawn: F)
where
    F: FnMut(TcpStream, SocketAddr),
{
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                // Stanzas are small and latency-bound; the writer batches.
                let _ = tcp.set_nodelay(true);
                super::keepalive(&tcp);
                spawn(tcp, peer);
            }
            Err(e) => {
                crate::events::router::AcceptFailed { kind, error: &e }.emit();
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_accepted_connection_is_handed_over_with_its_peer_address_and_keepalive_on() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(l, "test", move |tcp, peer| {
            let ka = socket2::SockRef::from(&tcp).keepalive().unwrap_or(false);
            let _ = tx.send((tcp.nodelay().unwrap_or(false) && ka, peer));
        }));
        let a = TcpStream::connect(addr).await.expect("connect");
        let b = TcpStream::connect(addr).await.expect("connect");
        let mut got = vec![
            rx.recv().await.expect("first"),
            rx.recv().await.expect("second"),
        ];
        got.sort_by_key(|(_, p)| p.port());
        let mut want = [a.local_addr().expect("a"), b.local_addr().expect("b")];
        want.sort_by_key(|p| p.port());
        assert_eq!(got, vec![(true, want[0]), (true, want[1])]);
        task.abort();
    }
}
