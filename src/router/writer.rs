//! The write side of a session: one task per socket draining a bounded
//! queue of [`Frame`]s. Everything queued when the task wakes is written
//! with vectored writes (one syscall, or one TLS record run, per wakeup),
//! so a burst of stanzas costs one write rather than one per stanza.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::events::Metrics;
use crate::xml::Frame;

/// Most frames gathered into one write.
const BATCH_FRAMES: usize = 128;
/// Most slices handed to one `write_vectored` call (IOV_MAX is 1024).
const MAX_IOV: usize = 256;

/// The session's side of its writer task.
pub struct Writer {
    pub queue: mpsc::Sender<Frame>,
    close: Option<oneshot::Sender<Bytes>>,
    task: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn spawn<W>(io: W, capacity: usize, metrics: Arc<Metrics>) -> Writer
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity);
        let (close_tx, close_rx) = oneshot::channel();
        let task = tokio::spawn(run(io, rx, close_rx, metrics));
        Writer {
            queue: tx,
            close: Some(close_tx),
            task: Some(task),
        }
    }

    /// Writes what is queued, then `tail` (e.g. a stream error and
    /// `</stream:stream>`), then shuts the socket down. Waits at most
    /// `timeout` for a peer that does not read.
    pub async fn close(&mut self, tail: Bytes, timeout: std::time::Duration) {
        if let Some(c) = self.close.take() {
            let _ = c.send(tail);
        }
        if let Some(t) = self.task.take() {
            let abort = t.abort_handle();
            if tokio::time::timeout(timeout, t).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            // Without an explicit close, stop at once: the socket is gone.
            if self.close.is_some() {
                t.abort();
            }
        }
    }
}

async fn run<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: mpsc::Receiver<Frame>,
    mut close_rx: oneshot::Receiver<Bytes>,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(16);
    loop {
        tokio::select! {
            biased;
            f = rx.recv() => match f {
                Some(f) => {
                    push(&mut batch, f);
                    let mut n = 1;
                    while n < BATCH_FRAMES {
                        match rx.try_recv() {
                            Ok(f) => { push(&mut batch, f); n += 1; }
                            Err(_) => break,
                        }
                    }
                    if write_all(&mut io, &mut batch, &metrics).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            tail = &mut close_rx => {
                while let Ok(f) = rx.try_recv() {
                    push(&mut batch, f);
                }
                if let Ok(tail) = tail {
                    batch.push(tail);
                }
                let _ = write_all(&mut io, &mut batch, &metrics).await;
                break;
            }
        }
    }
    let _ = io.shutdown().await;
}

fn push(batch: &mut Vec<Bytes>, f: Frame) {
    batch.extend(f.into_parts());
}

async fn write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    batch: &mut Vec<Bytes>,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < batch.len() {
        let n = {
            let slices: Vec<IoSlice<'_>> = batch[first..]
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            io.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        metrics.bytes_out.increment(n as u64);
        let mut left = n;
        while left > 0 {
            let b = &mut batch[first];
            if b.len() <= left {
                left -= b.len();
                first += 1;
            } else {
                b.advance(left);
                left = 0;
            }
        }
    }
    batch.clear();
    io.flush().await
}
