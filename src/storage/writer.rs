//! [`StoreWriter`]: every write to the store goes through one OS thread,
//! which commits whatever has queued up in one transaction (group commit).
//! Under load many actors' writes share one fsync; when idle a write commits
//! alone, at once.
//!
//! Requests run strictly in submission order. Write submissions are merged
//! into a batch in that order; a `read_offline` ends the batch it meets, so
//! it sees every write submitted before it and none after.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::{JoinHandle, ThreadId};

use super::{OfflineMessage, Store, StoreError, WriteOp};
use crate::events;
use crate::jid::BareJid;

/// A batch stops taking submissions once it holds this many ops (a single
/// larger submission is still committed whole).
pub const MAX_BATCH_OPS: usize = 512;

/// Bytes of submissions waiting for the writer thread (offline stanzas
/// mostly) beyond which [`StoreWriter::try_submit`] refuses: a flood to
/// offline storage faster than the disk takes it must not grow memory.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// What a submission holds in memory while it waits, roughly: stanza
/// bytes plus a flat cost per op for the JIDs and the boxing.
fn weight(ops: &[WriteOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            WriteOp::PushOffline { stanza, .. } | WriteOp::JournalOut { stanza, .. } => {
                stanza.len() + 128
            }
            WriteOp::ForgetOut { ids } => ids.len() * 8 + 64,
            _ => 256,
        })
        .sum()
}

pub type WriteDone = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
pub type ReadDone = Box<dyn FnOnce(Result<Vec<OfflineMessage>, StoreError>) + Send>;

enum Request {
    Write {
        ops: Vec<WriteOp>,
        done: Option<WriteDone>,
        /// [`weight`] of `ops`, given back to `pending` once committed.
        bytes: usize,
    },
    Read {
        user: BareJid,
        done: ReadDone,
    },
}

struct Shared {
    /// `None` once shut down. Submitters hold the read lock while sending,
    /// so after `shutdown` takes it no request can slip in behind the flush
    /// and be dropped without its callback.
    tx: RwLock<Option<Sender<Request>>>,
    depth: Arc<AtomicUsize>,
    /// Bytes of write submissions not yet committed.
    pending: Arc<AtomicUsize>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl Shared {
    fn shutdown(&self) {
        let tx = self
            .tx
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(tx);
        // From a callback on the writer thread itself, joining would deadlock;
        // the thread exits on its own once the queue is drained.
        if std::thread::current().id() == self.thread_id {
            return;
        }
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            events::store::StoreWriterPanicked.emit();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Clone-able handle to the writer thread. Dropping the last handle flushes
/// the queue and stops the thread, as [`shutdown`](Self::shutdown) does.
#[derive(Clone)]
pub struct StoreWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

impl StoreWriter {
    /// Starts the writer on an OS thread named `fedrouter-store`.
    ///
    /// # Panics
    /// If the OS refuses to create a thread, as `std::thread::spawn` does.
    pub fn spawn(store: Arc<dyn Store>) -> StoreWriter {
        let (tx, rx) = channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let pending = Arc::new(AtomicUsize::new(0));
        let thread_depth = depth.clone();
        let thread_pending = pending.clone();
        let handle = std::thread::Builder::new()
            .name("fedrouter-store".into())
            .spawn(move || run(&*store, &rx, &thread_depth, &thread_pending))
            .expect("cannot spawn the store writer thread");
        StoreWriter {
            shared: Arc::new(Shared {
                tx: RwLock::new(Some(tx)),
                depth,
                pending,
                thread_id: handle.thread().id(),
                thread: Mutex::new(Some(handle)),
            }),
        }
    }

    /// Queues writes; they are committed together with whatever else is
    /// queued. Never blocks. `done`, if given, runs exactly once on the
    /// writer thread after the commit: `Ok(())` if every op took effect,
    /// otherwise the first refusal (`QuotaExceeded`, `NotFound`; the
    /// submission's other ops still committed) or the transaction's error
    /// (nothing of the submission committed). Keep it short: it delays the
    /// next batch. After shutdown it runs at once with [`StoreError::Closed`].
    pub fn submit(&self, ops: Vec<WriteOp>, done: Option<WriteDone>) {
        let bytes = weight(&ops);
        self.shared.pending.fetch_add(bytes, Ordering::Relaxed);
        self.send(Request::Write { ops, done, bytes });
    }

    /// [`submit`](Self::submit), unless more than `max_bytes` of
    /// submissions already wait: then the ops come back, for the caller
    /// to refuse what they carry. Something is always taken when nothing
    /// waits.
    // The refused ops come back by value, as a channel's try_send does.
    #[allow(clippy::result_large_err)]
    pub fn try_submit(
        &self,
        ops: Vec<WriteOp>,
        done: Option<WriteDone>,
        max_bytes: usize,
    ) -> Result<(), Vec<WriteOp>> {
        let bytes = weight(&ops);
        let before = self.shared.pending.fetch_add(bytes, Ordering::Relaxed);
        if before > 0 && before + bytes > max_bytes {
            self.shared.pending.fetch_sub(bytes, Ordering::Relaxed);
            return Err(ops);
        }
        self.send(Request::Write { ops, done, bytes });
        Ok(())
    }

    /// Bytes of write submissions not yet committed.
    pub fn pending_bytes(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Submits and awaits the commit.
    pub async fn commit(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            ops,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Reads the user's offline messages (removing nothing), after every
    /// write submitted before this call. `done` runs exactly once, on the
    /// writer thread.
    pub fn read_offline(&self, user: BareJid, done: ReadDone) {
        self.send(Request::Read { user, done });
    }

    /// Requests submitted and not yet started.
    pub fn queue_depth(&self) -> usize {
        self.shared.depth.load(Ordering::Relaxed)
    }

    /// Executes everything already queued, then stops the thread; waits for
    /// that unless called from a callback on the writer thread. Later
    /// submissions fail with [`StoreError::Closed`]. Idempotent.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    fn send(&self, req: Request) {
        let refused = {
            let guard = self
                .shared
                .tx
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            match guard.as_ref() {
                Some(tx) => {
                    self.shared.depth.fetch_add(1, Ordering::Relaxed);
                    match tx.send(req) {
                        Ok(()) => None,
                        // Only if the thread died from a panic in the store.
                        Err(e) => {
                            self.shared.depth.fetch_sub(1, Ordering::Relaxed);
                            Some(e.0)
                        }
                    }
                }
                None => Some(req),
            }
        };
        // Outside the lock: the callback may submit again.
        if let Some(req) = refused {
            if let Request::Write { bytes, .. } = &req {
                self.shared.pending.fetch_sub(*bytes, Ordering::Relaxed);
            }
            fail(req, StoreError::Closed);
        }
    }
}

fn fail(req: Request, e: StoreError) {
    match req {
        Request::Write { done, .. } => {
            if let Some(done) = done {
                call(move || done(Err(e)));
            }
        }
        Request::Read { done, .. } => call(move || done(Err(e))),
    }
}

/// Runs a caller's callback; a panic in one must not kill the writer and
/// with it every later callback.
fn call(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        events::store::StoreCallbackPanicked.emit();
    }
}

fn run(store: &dyn Store, rx: &Receiver<Request>, depth: &AtomicUsize, pending: &AtomicUsize) {
    let recv = |r: Request| {
        depth.fetch_sub(1, Ordering::Relaxed);
        r
    };
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => recv(r),
                // Every sender is gone and the queue is drained.
                Err(_) => return,
            },
        };
        match first {
            Request::Read { user, done } => {
                let r = guarded(|| store.read_offline(&user));
                call(move || done(r));
            }
            Request::Write { ops, done, bytes } => {
                let mut batch = vec![(ops, done)];
                let mut n_ops = batch[0].0.len();
                let mut batch_bytes = bytes;
                while n_ops < MAX_BATCH_OPS {
                    match rx.try_recv() {
                        Ok(Request::Write { ops, done, bytes }) => {
                            depth.fetch_sub(1, Ordering::Relaxed);
                            n_ops += ops.len();
                            batch_bytes += bytes;
                            batch.push((ops, done));
                        }
                        Ok(read) => {
                            // Runs after this batch, before anything newer.
                            carried = Some(recv(read));
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                commit_batch(store, batch);
                pending.fetch_sub(batch_bytes, Ordering::Relaxed);
            }
        }
    }
}

/// A panicking store is reported as an error to the callers waiting on it.
fn guarded<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        events::store::StorePanicked.emit();
        Err(StoreError::Backend(Arc::from(Box::<
            dyn std::error::Error + Send + Sync,
        >::from(
            "store panicked"
        ))))
    })
}

type Submission = (Vec<WriteOp>, Option<WriteDone>);

fn commit_batch(store: &dyn Store, batch: Vec<Submission>) {
    let mut ops = Vec::with_capacity(batch.iter().map(|(o, _)| o.len()).sum());
    let mut dones = Vec::with_capacity(batch.len());
    for (o, d) in batch {
        dones.push((o.len(), d));
        ops.extend(o);
    }
    match guarded(|| store.apply(&ops)) {
        Ok(results) => {
            let mut results = results.into_iter();
            for (n, done) in dones {
                let mut verdict = Ok(());
                for r in results.by_ref().take(n) {
                    if verdict.is_ok() {
                        verdict = r;
                    }
                }
                if let Some(done) = done {
                    call(move || done(verdict));
                }
            }
        }
        Err(e) if dones.len() == 1 => {
            if let Some((_, Some(done))) = dones.pop() {
                call(move || done(Err(e)));
            }
        }
        Err(e) => {
            // Nothing was written. Retry each submission alone, in order, so
            // that one poisoned submission does not fail its neighbours.
            events::store::StoreBatchFailed {
                error: &e,
                submissions: dones.len(),
            }
            .emit();
            let mut ops = ops.into_iter();
            for (n, done) in dones {
                let mine: Vec<WriteOp> = ops.by_ref().take(n).collect();
                commit_batch(store, vec![(mine, done)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{creds, jid, push};
    use crate::storage::{MemStore, OpResults};
    use std::sync::Barrier;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// Counts transactions; can hold the first one until released, so the
    /// queue fills deterministically behind it.
    struct Counting {
        inner: MemStore,
        applies: AtomicUsize,
        /// (signalled on entering apply, released by)
        gate: Mutex<Option<(Sender<()>, Receiver<()>)>>,
        fail_ops_containing: Option<&'static str>,
    }

    impl Counting {
        /// Arms the gate: the next apply signals and blocks until released.
        fn hold_next_apply(&self) -> (Receiver<()>, Sender<()>) {
            let (entered_tx, entered_rx) = channel();
            let (release_tx, release_rx) = channel();
            *self.gate.lock().unwrap() = Some((entered_tx, release_rx));
            (entered_rx, release_tx)
        }

        fn new() -> Counting {
            Counting {
                inner: MemStore::new().with_offline_limit(100_000),
                applies: AtomicUsize::new(0),
                gate: Mutex::new(None),
                fail_ops_containing: None,
            }
        }
    }

    impl Store for Counting {
        fn create_account(
            &self,
            u: &BareJid,
            c: &crate::storage::Credentials,
        ) -> Result<(), StoreError> {
            self.inner.create_account(u, c)
        }
        fn set_credentials(
            &self,
            u: &BareJid,
            c: &crate::storage::Credentials,
        ) -> Result<(), StoreError> {
            self.inner.set_credentials(u, c)
        }
        fn remove_account(&self, u: &BareJid) -> Result<(), StoreError> {
            self.inner.remove_account(u)
        }
        fn credentials(
            &self,
            u: &BareJid,
        ) -> Result<Option<crate::storage::Credentials>, StoreError> {
            self.inner.credentials(u)
        }
        fn list_accounts(&self) -> Result<Vec<BareJid>, StoreError> {
            self.inner.list_accounts()
        }
        fn roster(&self, u: &BareJid) -> Result<Vec<crate::roster::RosterItem>, StoreError> {
            self.inner.roster(u)
        }
        fn roster_item(
            &self,
            u: &BareJid,
            c: &str,
        ) -> Result<Option<crate::roster::RosterItem>, StoreError> {
            self.inner.roster_item(u, c)
        }
        fn offline_count(&self, u: &BareJid) -> Result<u64, StoreError> {
            self.inner.offline_count(u)
        }
        fn apply(&self, ops: &[WriteOp]) -> Result<OpResults, StoreError> {
            let gate = self.gate.lock().unwrap().take();
            if let Some((entered, release)) = gate {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            self.applies.fetch_add(1, Ordering::SeqCst);
            if let Some(bad) = self.fail_ops_containing {
                let poisoned = ops.iter().any(|op| {
                    matches!(op, WriteOp::PushOffline { stanza, .. } if stanza.as_ref() == bad.as_bytes())
                });
                if poisoned {
                    return Err(StoreError::Corrupt("poisoned".into()));
                }
            }
            self.inner.apply(ops)
        }
        fn read_offline(&self, u: &BareJid) -> Result<Vec<OfflineMessage>, StoreError> {
            self.inner.read_offline(u)
        }
        fn read_outbox(&self) -> Result<Vec<(u64, bytes::Bytes)>, StoreError> {
            self.inner.read_outbox()
        }
    }

    #[test]
    fn group_commit_batches_concurrent_submissions() {
        let store = Arc::new(Counting::new());
        let a = jid("a@x");
        store.create_account(&a, &creds()).unwrap();
        let (entered, release) = store.hold_next_apply();
        let w = StoreWriter::spawn(store.clone());

        // The first submission is held inside apply while the rest queue up.
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        w.submit(
            vec![push(&a, "first")],
            Some(Box::new(move |r| {
                r.unwrap();
                f.fetch_add(1, Ordering::SeqCst);
            })),
        );
        entered.recv().unwrap();
        let threads = 8;
        let per_thread = 125;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (w, a, fired, barrier) = (w.clone(), a.clone(), fired.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..per_thread {
                        let f = fired.clone();
                        w.submit(
                            vec![push(&a, &format!("{t}-{i}"))],
                            Some(Box::new(move |r| {
                                r.unwrap();
                                f.fetch_add(1, Ordering::SeqCst);
                            })),
                        );
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(w.queue_depth() >= 999, "depth {}", w.queue_depth());
        release.send(()).unwrap();
        w.shutdown();

        assert_eq!(fired.load(Ordering::SeqCst), 1001);
        // 1 held + ceil(1000 / 512) batches.
        assert_eq!(store.applies.load(Ordering::SeqCst), 3);
        assert_eq!(store.offline_count(&a).unwrap(), 1001);
        assert_eq!(w.queue_depth(), 0);
        // Each thread's own submissions kept their order.
        let msgs = store.take_offline(&a).unwrap();
        assert_eq!(msgs[0], "first");
        for t in 0..threads {
            let mine: Vec<_> = msgs
                .iter()
                .filter_map(|m| {
                    std::str::from_utf8(m)
                        .unwrap()
                        .strip_prefix(&format!("{t}-"))
                })
                .map(|i| i.parse::<usize>().unwrap())
                .collect();
            assert_eq!(mine, (0..per_thread).collect::<Vec<_>>());
        }
    }

    #[test]
    fn read_offline_sees_writes_submitted_before_it_and_not_after() {
        let store = Arc::new(Counting::new());
        let a = jid("a@x");
        store.create_account(&a, &creds()).unwrap();
        let (entered, release) = store.hold_next_apply();
        let w = StoreWriter::spawn(store.clone());
        w.submit(vec![push(&a, "1")], None);
        entered.recv().unwrap();
        w.submit(vec![push(&a, "2")], None);
        let (tx, rx) = channel();
        w.read_offline(a.clone(), Box::new(move |r| tx.send(r.unwrap()).unwrap()));
        w.submit(vec![push(&a, "3")], None);
        release.send(()).unwrap();
        let read: Vec<_> = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .into_iter()
            .map(|m| m.stanza)
            .collect();
        assert_eq!(read, vec!["1", "2"]);
        w.shutdown();
        assert_eq!(store.take_offline(&a).unwrap(), vec!["1", "2", "3"]);
    }

    #[test]
    fn shutdown_flushes_and_later_submissions_are_closed() {
        let store = Arc::new(Counting::new());
        let a = jid("a@x");
        store.create_account(&a, &creds()).unwrap();
        let w = StoreWriter::spawn(store.clone());
        for i in 0..100 {
            w.submit(vec![push(&a, &i.to_string())], None);
        }
        let w2 = w.clone();
        w.shutdown();
        assert_eq!(store.offline_count(&a).unwrap(), 100);
        let closed = Arc::new(AtomicBool::new(false));
        let c = closed.clone();
        w2.submit(
            vec![push(&a, "late")],
            Some(Box::new(move |r| {
                c.store(matches!(r, Err(StoreError::Closed)), Ordering::SeqCst)
            })),
        );
        assert!(closed.load(Ordering::SeqCst));
        w2.shutdown();
    }

    #[test]
    fn dropping_the_last_handle_flushes() {
        let store = Arc::new(Counting::new());
        let a = jid("a@x");
        store.create_account(&a, &creds()).unwrap();
        let w = StoreWriter::spawn(store.clone());
        let w2 = w.clone();
        w.submit(vec![push(&a, "1")], None);
        drop(w);
        w2.submit(vec![push(&a, "2")], None);
        drop(w2);
        assert_eq!(store.take_offline(&a).unwrap(), vec!["1", "2"]);
    }

    #[test]
    fn callbacks_report_refusals_per_submission() {
        let store = Arc::new(Counting::new());
        let a = jid("a@x");
        store.create_account(&a, &creds()).unwrap();
        let (entered, release) = store.hold_next_apply();
        let w = StoreWriter::spawn(store.clone());
        let (tx, rx) = channel();
        w.submit(vec![], None);
        entered.recv().unwrap();
        for (name, user) in [("ok", "a@x"), ("ghost", "nobody@x"), ("ok2", "a@x")] {
            let tx = tx.clone();
            w.submit(
                vec![push(&jid(user), name)],
                Some(Box::new(move |r| tx.send((name, r)).unwrap())),
            );
        }
        release.send(()).unwrap();
        let got: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert!(matches!(got[0], ("ok", Ok(()))));
        assert!(matches!(got[1], ("ghost", Err(StoreError::NotFound))));
        assert!(matches!(got[2], ("ok2", Ok(()))));
        assert!(rx.try_recv().is_err(), "a callback fired twice");
        drop(w);
    }

    #[test]
    fn a_failing_submission_does_not_fail_its_batch_neighbours() {
        let mut s = Counting::new();
        s.fail_ops_containing = Some("poison");
        let store = Arc::new(s);
        let a = jid("a@x");
        store.create_account(&a, &creds()).unwrap();
        let (entered, release) = store.hold_next_apply();
        let w = StoreWriter::spawn(store.clone());
        w.submit(vec![], None);
        entered.recv().unwrap();
        let (tx, rx) = channel();
        for name in ["before", "poison", "after"] {
            let tx = tx.clone();
            w.submit(
                vec![push(&a, name)],
                Some(Box::new(move |r| tx.send((name, r.is_ok())).unwrap())),
            );
        }
        release.send(()).unwrap();
        let got: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, [("before", true), ("poison", false), ("after", true)]);
        w.shutdown();
        assert_eq!(store.take_offline(&a).unwrap(), vec!["before", "after"]);
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_writer() {
        let store = Arc::new(Counting::new());
        let a = jid("a@x");
        store.create_account(&a, &creds()).unwrap();
        let w = StoreWriter::spawn(store.clone());
        w.submit(
            vec![push(&a, "1")],
            Some(Box::new(|_| panic!("callback bug"))),
        );
        let (tx, rx) = channel();
        w.submit(
            vec![push(&a, "2")],
            Some(Box::new(move |r| tx.send(r.is_ok()).unwrap())),
        );
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        w.shutdown();
    }

    #[test]
    fn shutdown_from_a_callback_does_not_deadlock() {
        let store = Arc::new(Counting::new());
        let a = jid("a@x");
        store.create_account(&a, &creds()).unwrap();
        let w = StoreWriter::spawn(store.clone());
        let w2 = w.clone();
        let (tx, rx) = channel();
        w.submit(
            vec![push(&a, "1")],
            Some(Box::new(move |_| {
                w2.shutdown();
                tx.send(()).unwrap();
            })),
        );
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        w.shutdown();
    }

    #[tokio::test]
    async fn commit_awaits_the_durable_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::storage::RedbStore::open(dir.path()).unwrap());
        let a = jid("a@x");
        store.create_account(&a, &creds()).unwrap();
        let w = StoreWriter::spawn(store.clone());
        w.commit(vec![push(&a, "hello")]).await.unwrap();
        assert_eq!(store.offline_count(&a).unwrap(), 1);
        assert!(matches!(
            w.commit(vec![push(&jid("ghost@x"), "x")]).await,
            Err(StoreError::NotFound)
        ));
        w.shutdown();
        assert!(matches!(
            w.commit(vec![push(&a, "late")]).await,
            Err(StoreError::Closed)
        ));
    }
}
