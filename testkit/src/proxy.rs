//! A TCP relay on loopback that a test can cut: every connection it
//! carries is dropped at once, bytes in flight included, as when a network
//! path dies or a peer's host vanishes. New connections are relayed again
//! afterwards. Nothing is parsed: TLS passes through untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Relays connections to `target`; stops when dropped.
pub struct CutProxy {
    addr: SocketAddr,
    cut: watch::Sender<u64>,
    relayed: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CutProxy {
    /// Listens on an ephemeral 127.0.0.1 port.
    pub async fn start(target: SocketAddr) -> std::io::Result<CutProxy> {
        let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = l.local_addr()?;
        let (cut, _) = watch::channel(0u64);
        let relayed = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (cut_tx, counted, bytes) = (cut.clone(), accepted.clone(), relayed.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = l.accept() => {
                        let Ok((down, _)) = r else { continue };
                        counted.fetch_add(1, Ordering::SeqCst);
                        let rx = cut_tx.subscribe();
                        conns.spawn(relay(down, target, rx, bytes.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(CutProxy {
            addr,
            cut,
            relayed,
            accepted,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection relayed now, with whatever it had read and
    /// not yet passed on: each side sees its socket end, without the
    /// other's stream close.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Bytes relayed so far, both ways.
    pub fn bytes(&self) -> usize {
        self.relayed.load(Ordering::SeqCst)
    }
}

async fn relay(
    down: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<u64>,
    bytes: Arc<AtomicUsize>,
) {
    cut.mark_unchanged();
    let Ok(up) = TcpStream::connect(target).await else {
        return;
    };
    let _ = (down.set_nodelay(true), up.set_nodelay(true));
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let b1 = bytes.clone();
    let one = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match dr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            b1.fetch_add(n, Ordering::SeqCst);
            if uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = uw.shutdown().await;
    };
    let other = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            bytes.fetch_add(n, Ordering::SeqCst);
            if dw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = dw.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(one, other) } => {}
        _ = cut.changed() => {}
    }
}
