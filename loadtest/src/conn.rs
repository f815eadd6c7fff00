//! One XMPP stream after negotiation, driven by two tasks: a reader that
//! frames what arrives and hands each stanza to a handler, and a writer
//! that sends everything queued since its last wakeup in one write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fedrouter::xml::{Framer, FramerEvent, Stanza};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes queued to one stream's writer. Cloning shares the stream.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Bytes>,
}

impl Writer {
    /// Queues `b`; false once the stream is gone.
    pub fn send(&self, b: impl Into<Bytes>) -> bool {
        self.tx.send(b.into()).is_ok()
    }
}

/// How a stream ended, as seen by its reader.
#[derive(Debug, Clone)]
pub enum End {
    /// The peer closed the stream or the socket.
    Closed,
    /// A `<stream:error/>` (its bytes).
    StreamError(String),
    /// Unparsable input or an I/O error.
    Failed(String),
}

/// Counters shared by every stream of a run.
#[derive(Default)]
pub struct IoStats {
    pub bytes_out: AtomicU64,
    pub writes: AtomicU64,
    pub ended: AtomicU64,
}

pub struct Stream {
    pub writer: Writer,
    pub reader: JoinHandle<End>,
    writer_task: JoinHandle<()>,
}

impl Stream {
    /// Sends `</stream:stream>` after everything queued and stops writing.
    pub async fn close(self) {
        let _ = self.writer.send(Bytes::from_static(b"</stream:stream>"));
        drop(self.writer);
        let _ = self.writer_task.await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.reader).await;
    }
}

/// Splits `io` and starts the reader (calling `on_stanza` for every
/// stanza, in order) and the writer.
pub fn spawn<S, F>(io: S, framer: Framer, stats: Arc<IoStats>, mut on_stanza: F) -> Stream
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: FnMut(Stanza) + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let wstats = stats.clone();
    let writer_task = tokio::spawn(async move {
        let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(b) => batch.extend_from_slice(&b),
                    Err(_) => break,
                }
            }
            if wr.write_all(&batch).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            wstats
                .bytes_out
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            wstats.writes.fetch_add(1, Ordering::Relaxed);
        }
        let _ = wr.shutdown().await;
    });
    let reader = tokio::spawn(async move {
        let mut framer = framer;
        let end = loop {
            match framer.next() {
                Ok(Some(FramerEvent::Stanza(s))) => {
                    if s.name() == "stream:error" {
                        break End::StreamError(String::from_utf8_lossy(s.bytes()).into_owned());
                    }
                    on_stanza(s);
                    continue;
                }
                Ok(Some(FramerEvent::StreamOpen(_))) => continue,
                Ok(Some(FramerEvent::StreamClose)) => break End::Closed,
                Ok(None) => {}
                Err(e) => break End::Failed(format!("bad XML from the target: {e}")),
            }
            let n = {
                let mut buf = framer.read_buf();
                match rd.read_buf(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => break End::Failed(e.to_string()),
                }
            };
            if n == 0 {
                break End::Closed;
            }
        };
        stats.ended.fetch_add(1, Ordering::Relaxed);
        end
    });
    Stream {
        writer: Writer { tx },
        reader,
        writer_task,
    }
}
