//! A write deadline for any byte stream: a write (or flush, or shutdown)
//! that makes no progress for the deadline fails with `TimedOut`, so a
//! peer that stops reading cannot hold a writer, and through it a session
//! actor or a shutdown, forever. Progress restarts the clock: a slow
//! reader that keeps taking bytes is not cut off.
//!
//! The timer exists only while a write is blocked, so an idle connection
//! pays nothing for it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

pub struct WriteDeadline<W> {
    inner: W,
    limit: Duration,
    /// Armed when a write first returns `Pending`, dropped on progress.
    blocked: Option<Pin<Box<Sleep>>>,
    /// Cancelled when the deadline passes, for whoever reads the same
    /// connection (a writer task's failure is otherwise unseen).
    on_timeout: Option<CancellationToken>,
}

impl<W> WriteDeadline<W> {
    pub fn new(inner: W, limit: Duration) -> WriteDeadline<W> {
        WriteDeadline {
            inner,
            limit,
            blocked: None,
            on_timeout: None,
        }
    }

    /// Also cancels `token` when the deadline passes.
    pub fn signalling(mut self, token: CancellationToken) -> WriteDeadline<W> {
        self.on_timeout = Some(token);
        self
    }

    /// Passes on a ready result (progress: disarm), or arms the timer on
    /// `Pending` and fails once it has run out.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.blocked = None;
            return r;
        }
        let limit = self.limit;
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.blocked = None;
            crate::events::daemon::WriteTimedOut { limit }.emit();
            if let Some(t) = &self.on_timeout {
                t.cancel();
            }
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Real time (tokio's test-util is not enabled): short bounds, and a
    // wide margin above them for a loaded machine.
    const LIMIT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_write_the_peer_never_takes_fails_after_the_deadline() {
        let (_peer, ours) = tokio::io::duplex(16);
        let mut w = WriteDeadline::new(ours, LIMIT);
        let started = tokio::time::Instant::now();
        let r = w.write_all(&[0u8; 64]).await;
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        let took = started.elapsed();
        assert!(took >= LIMIT && took < LIMIT * 10, "{took:?}");
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (mut peer, ours) = tokio::io::duplex(16);
        let mut w = WriteDeadline::new(ours, LIMIT);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 16];
            while got < 96 {
                // Each read comes well inside the deadline, but the whole
                // write takes far longer than it.
                tokio::time::sleep(LIMIT / 3).await;
                got += peer.read(&mut buf).await.expect("read");
            }
            got
        });
        w.write_all(&[1u8; 96])
            .await
            .expect("progress keeps it alive");
        assert_eq!(reader.await.expect("reader"), 96);
    }
}
