//! The write side of a session or link: one task per socket draining a bounded
//! queue of [`Frame`]s. Everything queued when the task wakes is written
//! with vectored writes (one syscall, or one TLS record run, per wakeup),
//! so a burst of stanzas costs one write rather than one per stanza.
//!
//! The queue is our own rather than tokio's mpsc: that one allocates its
//! first block of 32 slots (5.4 KiB of `Frame`s) when created and keeps it,
//! which was the largest single cost of an idle session. Ours holds nothing
//! while empty.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::events::Metrics;
use crate::xml::{Frame, StanzaKind};

/// Most frames gathered into one write.
const BATCH_FRAMES: usize = 128;
/// Most slices handed to one `write_vectored` call (IOV_MAX is 1024).
const MAX_IOV: usize = 256;

/// How much a writer queue holds before it refuses more: a count of
/// frames and a sum of their bytes, whichever is reached first. The byte
/// cap is what bounds memory (a frame may be a 512 KiB stanza); an empty
/// queue always takes one frame, however large, so a stanza the framer
/// admitted can always be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

impl QueueLimits {
    /// Bounded by count only, for tests of ordering and wakeups.
    pub const fn frames(frames: usize) -> QueueLimits {
        QueueLimits {
            frames,
            bytes: usize::MAX,
        }
    }
}

/// The most of a queue's `limit` (frames or bytes) that presence may fill:
/// three quarters. The last quarter is kept for messages and IQs, so under
/// pressure presence is shed first and a message finds room after it.
pub const fn presence_share(limit: usize) -> usize {
    limit - limit / 4
}

/// A bounded queue of frames: many senders (shards, the session), one
/// receiver (the writer task). Same contract as tokio's bounded mpsc.
pub fn queue(limits: QueueLimits) -> (Queue, QueueReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            bytes: 0,
            rx_waker: None,
            rx_closed: false,
            sender_waiting: false,
            pushed: 0,
            marks: Vec::new(),
            popped: 0,
            sm: None,
            keep_open: false,
        }),
        capacity: limits.frames.max(1),
        max_bytes: limits.bytes.max(1),
        senders: AtomicUsize::new(1),
        written: AtomicU64::new(0),
        marked: AtomicBool::new(false),
        sm_on: AtomicBool::new(false),
        space: Notify::new(),
    });
    (Queue(shared.clone()), QueueReceiver(shared))
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    max_bytes: usize,
    senders: AtomicUsize,
    /// Frames the writer task has written to the socket.
    written: AtomicU64,
    /// `State::marks` is not empty: the writer takes the lock to fire them.
    marked: AtomicBool,
    /// Stream Management is on: the writer asks for acks.
    sm_on: AtomicBool,
    /// Senders waiting in [`Queue::send`] for room.
    space: Notify,
}

struct State {
    frames: VecDeque<Frame>,
    /// Sum of the lengths of `frames`.
    bytes: usize,
    rx_waker: Option<Waker>,
    rx_closed: bool,
    /// A sender found the queue full and waits on `space`.
    sender_waiting: bool,
    /// Frames ever queued.
    pushed: u64,
    /// [`Queue::when_written`] waiters: fired once the writer has written
    /// this many frames.
    marks: Vec<(u64, oneshot::Sender<()>)>,
    /// Frames ever taken by the writer.
    popped: u64,
    /// XEP-0198 Stream Management, once enabled.
    sm: Option<Sm>,
    /// The queue outlives its writer (a session that may be resumed): it
    /// keeps taking frames when the writer is gone.
    keep_open: bool,
}

/// Stream Management on a queue: the stanzas handed to the writer and not
/// yet acknowledged by the peer, which count against the queue's limits
/// like unwritten ones, and go back to the owner with them.
struct Sm {
    /// Frames taken at or after this index are counted.
    start: u64,
    unacked: VecDeque<Frame>,
    unacked_bytes: usize,
    /// Stanzas handed to the writer, mod 2^32 (our `h`).
    sent: u32,
    /// The peer's last `h`.
    acked: u32,
    /// An `<r/>` is out and unanswered.
    requested: bool,
}

/// The peer acknowledged more stanzas than were sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckTooHigh {
    pub h: u32,
    pub sent: u32,
}

impl AckTooHigh {
    /// XEP-0198's application-specific stream error condition for it.
    pub fn element(&self) -> String {
        format!(
            "<handled-count-too-high xmlns='urn:xmpp:sm:3' h='{}' send-count='{}'/>",
            self.h, self.sent
        )
    }
}

const SM_REQUEST: &[u8] = b"<r xmlns='urn:xmpp:sm:3'/>";

impl State {
    /// Bookkeeping for a frame the writer takes.
    fn taken(&mut self, f: &Frame) {
        let idx = self.popped;
        self.popped += 1;
        if let Some(sm) = &mut self.sm
            && idx >= sm.start
            && f.is_stanza()
        {
            sm.unacked.push_back(f.clone());
            sm.unacked_bytes += f.len();
            sm.sent = sm.sent.wrapping_add(1);
        }
    }

    /// Whether a frame of `len` bytes fits under these limits: below the
    /// frame cap, and within the byte cap unless nothing is held (an
    /// empty queue takes a frame of any size).
    fn takes(&self, len: usize, capacity: usize, max_bytes: usize) -> bool {
        let (frames, bytes, any) = self.held();
        frames < capacity && (!any || bytes.saturating_add(len) <= max_bytes)
    }

    /// Frames queued, and bytes held: queued, and sent but not
    /// acknowledged. Unacknowledged stanzas count in bytes only: they
    /// include what is in flight (socket buffers, the peer's backlog),
    /// which a frame count sized for a writer's backlog would cap at a
    /// fraction of a fast link's bandwidth-delay product.
    /// Also whether anything at all is held (an empty queue takes a frame
    /// of any size).
    fn held(&self) -> (usize, usize, bool) {
        match &self.sm {
            Some(sm) => (
                self.frames.len(),
                self.bytes + sm.unacked_bytes,
                !self.frames.is_empty() || !sm.unacked.is_empty(),
            ),
            None => (self.frames.len(), self.bytes, !self.frames.is_empty()),
        }
    }
}

impl Shared {
    /// Held only for a push or a pop, never across an await; nothing is left
    /// half-updated by a panic while it is held.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fires the marks the writer has passed.
    fn fire(&self, st: &mut State) {
        let written = self.written.load(Ordering::SeqCst);
        let (done, left): (Vec<_>, Vec<_>) = std::mem::take(&mut st.marks)
            .into_iter()
            .partition(|(at, _)| *at <= written);
        st.marks = left;
        for (_, tx) in done {
            let _ = tx.send(());
        }
        if st.marks.is_empty() {
            self.marked.store(false, Ordering::SeqCst);
        }
    }

    /// Puts `frames` (not written) back at the head of the queue, in
    /// order. The receiver is going away: nothing will pop them but
    /// [`Queue::take_unwritten`].
    fn unwrite(&self, frames: Vec<Frame>) {
        let mut st = self.lock();
        if st.sm.is_some() {
            // Taken frames are kept as unacknowledged already.
            return;
        }
        for f in frames.into_iter().rev() {
            st.bytes += f.len();
            st.frames.push_front(f);
        }
    }

    /// Under Stream Management, whether to ask the peer for an ack now:
    /// stanzas are unacknowledged and no request is out.
    fn ack_request_due(&self) -> bool {
        if !self.sm_on.load(Ordering::Acquire) {
            return false;
        }
        let mut st = self.lock();
        match &mut st.sm {
            Some(sm) if !sm.requested && !sm.unacked.is_empty() => {
                sm.requested = true;
                true
            }
            _ => false,
        }
    }

    /// The writer task wrote `n` more frames.
    fn wrote(&self, n: u64) {
        self.written.fetch_add(n, Ordering::SeqCst);
        if self.marked.load(Ordering::SeqCst) {
            let mut st = self.lock();
            self.fire(&mut st);
        }
    }
}

/// The sending side; cloned for every holder.
pub struct Queue(Arc<Shared>);

impl Queue {
    // tokio's contract: a refused frame comes back by value, not boxed.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, f: Frame) -> Result<(), TrySendError<Frame>> {
        self.push(f, false, false)
    }

    /// [`Queue::try_send`] for a stanza of `kind`: presence only into the
    /// [`presence_share`] of the queue.
    #[allow(clippy::result_large_err)]
    pub fn try_send_as(&self, f: Frame, kind: StanzaKind) -> Result<(), TrySendError<Frame>> {
        self.push(f, false, kind == StanzaKind::Presence)
    }

    #[allow(clippy::result_large_err)]
    fn push(&self, f: Frame, will_wait: bool, presence: bool) -> Result<(), TrySendError<Frame>> {
        // Outside the lock, which the writer task contends for.
        let len = f.len();
        let (capacity, max_bytes) = if presence {
            (
                presence_share(self.0.capacity),
                presence_share(self.0.max_bytes),
            )
        } else {
            (self.0.capacity, self.0.max_bytes)
        };
        let mut st = self.0.lock();
        if st.rx_closed {
            return Err(TrySendError::Closed(f));
        }
        if !st.takes(len, capacity, max_bytes) {
            st.sender_waiting |= will_wait;
            return Err(TrySendError::Full(f));
        }
        st.bytes += len;
        st.pushed += 1;
        st.frames.push_back(f);
        let waker = st.rx_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Takes the frames still queued and not yet taken by the writer: what
    /// a closed or dead connection never wrote, for its owner to keep
    /// (store offline, queue for the next link) or bounce. Under Stream
    /// Management, the stanzas sent and not acknowledged come first.
    pub fn take_unwritten(&self) -> Vec<Frame> {
        let mut st = self.0.lock();
        st.bytes = 0;
        let queued = std::mem::take(&mut st.frames);
        match &mut st.sm {
            Some(sm) => {
                sm.unacked_bytes = 0;
                let mut out: Vec<Frame> = std::mem::take(&mut sm.unacked).into();
                out.extend(queued);
                out
            }
            None => queued.into(),
        }
    }

    /// Turns XEP-0198 counting on: `enabled` (the `<enabled/>` answer) is
    /// queued, and every stanza queued after it is counted and kept until
    /// acknowledged. False if it was on already.
    pub fn enable_sm(&self, enabled: Frame) -> bool {
        let mut st = self.0.lock();
        if st.sm.is_some() || st.rx_closed {
            return false;
        }
        st.bytes += enabled.len();
        st.pushed += 1;
        st.frames.push_back(enabled);
        st.sm = Some(Sm {
            start: st.popped + st.frames.len() as u64,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            sent: 0,
            acked: 0,
            requested: false,
        });
        self.0.sm_on.store(true, Ordering::Release);
        let waker = st.rx_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// XEP-0198 on a resumed stream (the peer counts on from `h`): every
    /// stanza queued from now on is counted from `h` and kept until
    /// acknowledged. False if counting was on already.
    pub fn enable_sm_resumed(&self, h: u32) -> bool {
        let mut st = self.0.lock();
        if st.sm.is_some() || st.rx_closed {
            return false;
        }
        st.sm = Some(Sm {
            start: st.popped + st.frames.len() as u64,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            sent: h,
            acked: h,
            requested: false,
        });
        self.0.sm_on.store(true, Ordering::Release);
        true
    }

    /// The peer refused Stream Management (`<failed/>` to our
    /// `<enable/>`): counting stops, and the stanzas kept for its acks are
    /// let go, as written stanzas are without it.
    pub fn disable_sm(&self) {
        let mut st = self.0.lock();
        if st.sm.take().is_none() {
            return;
        }
        self.0.sm_on.store(false, Ordering::Release);
        let room = std::mem::take(&mut st.sender_waiting);
        drop(st);
        if room {
            self.0.space.notify_waiters();
        }
    }

    /// Under Stream Management, the peer's last `h` and our count of
    /// stanzas sent: `sent - acked` of them were not acknowledged.
    pub fn sm_position(&self) -> Option<(u32, u32)> {
        self.0.lock().sm.as_ref().map(|sm| (sm.acked, sm.sent))
    }

    /// The peer's `<a h='…'/>`: drops what it acknowledges. An `h` beyond
    /// what was sent is refused (XEP-0198 `<handled-count-too-high/>`).
    pub fn ack(&self, h: u32) -> Result<(), AckTooHigh> {
        let (waker, room) = {
            let mut guard = self.0.lock();
            let st = &mut *guard;
            let Some(sm) = &mut st.sm else {
                return Ok(());
            };
            let n = h.wrapping_sub(sm.acked) as usize;
            if n > sm.unacked.len() {
                return Err(AckTooHigh { h, sent: sm.sent });
            }
            for f in sm.unacked.drain(..n) {
                sm.unacked_bytes -= f.len();
            }
            sm.acked = h;
            sm.requested = false;
            // Stanzas written after our last <r/> are still unacknowledged:
            // ask again now, or the tail of a burst would wait for the
            // next traffic (and be sent twice if the link died meanwhile).
            let mut waker = None;
            if !sm.unacked.is_empty() && !st.rx_closed {
                sm.requested = true;
                let r = Frame::nonza(Bytes::from_static(SM_REQUEST));
                st.bytes += r.len();
                st.pushed += 1;
                st.frames.push_back(r);
                waker = st.rx_waker.take();
            }
            (waker, n > 0 && std::mem::take(&mut st.sender_waiting))
        };
        if let Some(w) = waker {
            w.wake();
        }
        if room {
            self.0.space.notify_waiters();
        }
        Ok(())
    }

    /// XEP-0198 resumption, on a queue whose writer is gone: the peer's
    /// `h` drops what it acknowledges, and `first` (the `<resumed/>`)
    /// then every stanza not acknowledged go back to the head of the
    /// queue, ahead of what was queued meanwhile, to be sent (and counted)
    /// again.
    pub fn resume(&self, h: u32, first: Frame) -> Result<(), AckTooHigh> {
        let mut st = self.0.lock();
        let st = &mut *st;
        let Some(sm) = &mut st.sm else {
            return Err(AckTooHigh { h, sent: 0 });
        };
        let n = h.wrapping_sub(sm.acked) as usize;
        if n > sm.unacked.len() {
            return Err(AckTooHigh { h, sent: sm.sent });
        }
        sm.unacked.drain(..n);
        let again = std::mem::take(&mut sm.unacked);
        sm.unacked_bytes = 0;
        (sm.acked, sm.sent, sm.requested) = (h, h, false);
        for f in again.into_iter().rev() {
            st.bytes += f.len();
            st.pushed += 1;
            st.frames.push_front(f);
        }
        st.bytes += first.len();
        st.pushed += 1;
        st.frames.push_front(first);
        Ok(())
    }

    /// The queue stays open when its writer goes: while a session may be
    /// resumed, it keeps taking what shards send, within its limits.
    pub fn keep_open(&self) {
        self.0.lock().keep_open = true;
    }

    /// Closes the queue for good, its writer gone (senders see it closed),
    /// and takes what it holds ([`Queue::take_unwritten`]).
    pub fn close_and_take(&self) -> Vec<Frame> {
        {
            let mut st = self.0.lock();
            st.keep_open = false;
            st.rx_closed = true;
        }
        self.take_unwritten()
    }

    /// Frames ever queued: a frame queued now is written once
    /// [`Queue::written`] reaches this.
    pub fn pushed(&self) -> u64 {
        self.0.lock().pushed
    }

    /// Frames the writer has written to the socket.
    pub fn written(&self) -> u64 {
        self.0.written.load(Ordering::SeqCst)
    }

    /// Stanzas sent and not acknowledged (0 without Stream Management).
    pub fn unacked(&self) -> usize {
        self.0.lock().sm.as_ref().map_or(0, |sm| sm.unacked.len())
    }

    /// Resolves once everything queued so far has been written to the
    /// socket (handed to the kernel, or to TLS and then the kernel); fails
    /// (the sender is dropped) if the writer stops first.
    pub fn when_written(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.0.lock();
        if st.rx_closed {
            return rx;
        }
        let at = st.pushed;
        if self.0.written.load(Ordering::SeqCst) >= at {
            let _ = tx.send(());
            return rx;
        }
        st.marks.push((at, tx));
        self.0.marked.store(true, Ordering::SeqCst);
        // The writer may have passed `at` before it could see the mark.
        self.0.fire(&mut st);
        rx
    }

    /// Resolves once the queue has room for a frame of `len` bytes (below
    /// its frame cap, and within its byte cap unless it is empty), or is
    /// closed.
    pub async fn room(&self, len: usize) {
        loop {
            let space = self.0.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut st = self.0.lock();
                if st.rx_closed || st.takes(len, self.0.capacity, self.0.max_bytes) {
                    return;
                }
                st.sender_waiting = true;
            }
            space.await;
        }
    }

    /// Waits for room, then queues.
    pub async fn send(&self, mut f: Frame) -> Result<(), SendError<Frame>> {
        loop {
            let space = self.0.space.notified();
            tokio::pin!(space);
            // Registered before the attempt, so room made after a failed
            // attempt is not missed.
            space.as_mut().enable();
            match self.push(f, true, false) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(SendError(back)),
                Err(TrySendError::Full(back)) => f = back,
            }
            space.await;
        }
    }
}

impl Clone for Queue {
    fn clone(&self) -> Queue {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Queue(self.0.clone())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waker = self.0.lock().rx_waker.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// The writer task's side.
pub struct QueueReceiver(Arc<Shared>);

impl QueueReceiver {
    /// The next frame, or `None` once every sender is gone and the queue is
    /// empty.
    pub async fn recv(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut st = self.0.lock();
        if let Some(f) = st.frames.pop_front() {
            st.bytes -= f.len();
            st.taken(&f);
            let room = std::mem::take(&mut st.sender_waiting);
            drop(st);
            if room {
                self.0.space.notify_waiters();
            }
            return Poll::Ready(Some(f));
        }
        // Idle: give the ring back (it grows again with the next burst).
        st.frames = VecDeque::new();
        if self.0.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(None);
        }
        match &mut st.rx_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub fn try_recv(&mut self) -> Result<Frame, TryRecvError> {
        let (f, room) = {
            let mut st = self.0.lock();
            let f = st.frames.pop_front();
            if let Some(f) = &f {
                st.bytes -= f.len();
                st.taken(f);
            }
            let room = f.is_some() && std::mem::take(&mut st.sender_waiting);
            (f, room)
        };
        if room {
            self.0.space.notify_waiters();
        }
        match f {
            Some(f) => Ok(f),
            None if self.0.senders.load(Ordering::Acquire) == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let frames = {
            let mut st = self.0.lock();
            st.rx_closed = !st.keep_open;
            // Nothing more will be written: every waiter hears so. The
            // frames stay for `take_unwritten` (bounded by the queue's
            // limits, freed with the last sender).
            std::mem::take(&mut st.marks)
        };
        drop(frames);
        self.0.space.notify_waiters();
    }
}

/// The session's side of its writer task.
pub struct Writer {
    pub queue: Queue,
    close: Option<oneshot::Sender<(Bytes, Duration)>>,
    task: Option<JoinHandle<()>>,
}

impl Writer {
    /// A writer for `io` taking from `queue`, whose previous writer is gone
    /// (a resumed session on its new connection).
    pub fn attach<W>(io: W, queue: &Queue, metrics: Arc<Metrics>) -> Writer
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        queue.0.lock().rx_closed = false;
        let rx = QueueReceiver(queue.0.clone());
        let (close_tx, close_rx) = oneshot::channel();
        let task = tokio::spawn(run(io, rx, close_rx, metrics));
        Writer {
            queue: queue.clone(),
            close: Some(close_tx),
            task: Some(task),
        }
    }

    pub fn spawn<W>(io: W, limits: QueueLimits, metrics: Arc<Metrics>) -> Writer
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = queue(limits);
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
    /// `timeout` for a peer that does not read; what was not written by
    /// then stays in the queue ([`Queue::take_unwritten`]), a frame the
    /// peer got only part of included.
    pub async fn close(&mut self, tail: Bytes, timeout: Duration) {
        if let Some(c) = self.close.take() {
            let _ = c.send((tail, timeout));
        }
        if let Some(t) = self.task.take() {
            // The task keeps the deadline itself; this is the backstop.
            let abort = t.abort_handle();
            if tokio::time::timeout(timeout + Duration::from_secs(1), t)
                .await
                .is_err()
            {
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

/// Frames popped from the queue for one write: their parts back to back,
/// and how many parts each frame has.
#[derive(Default)]
struct Batch {
    parts: Vec<Bytes>,
    /// Parts per frame; parts past them (a closing tail) are never given
    /// back.
    counts: Counts,
}

/// Parts per frame of a batch, inline up to [`BATCH_FRAMES`] (the write
/// path allocates nothing for them); a closing drain may hold more.
struct Counts {
    inline: [u8; BATCH_FRAMES],
    n: usize,
    more: Vec<u8>,
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            inline: [0; BATCH_FRAMES],
            n: 0,
            more: Vec::new(),
        }
    }
}

impl Counts {
    fn push(&mut self, c: u8) {
        match self.inline.get_mut(self.n) {
            Some(slot) => *slot = c,
            None => self.more.push(c),
        }
        self.n += 1;
    }

    fn len(&self) -> usize {
        self.n
    }

    fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        self.inline[..self.n.min(BATCH_FRAMES)]
            .iter()
            .chain(self.more.iter())
            .copied()
    }
}

impl Batch {
    fn push(&mut self, f: Frame) {
        let before = self.parts.len();
        self.parts.extend(f.into_parts());
        self.counts.push((self.parts.len() - before) as u8);
    }

    fn frames(&self) -> u64 {
        self.counts.len() as u64
    }

    /// The frames not wholly written when the write stopped at part
    /// `first`, rebuilt whole (a frame the peer got part of is of no use
    /// to it).
    fn unwritten(self, first: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut at = 0;
        let mut parts = self.parts.into_iter();
        for n in self.counts.iter() {
            let n = n as usize;
            let frame: Vec<Bytes> = parts.by_ref().take(n).collect();
            if at + n > first {
                out.push(Frame::from_parts(frame));
            }
            at += n;
        }
        out
    }
}

/// How far a write got: the first part not wholly written, and how much of
/// it was.
#[derive(Default)]
struct Progress {
    part: usize,
    offset: usize,
}

async fn run<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: QueueReceiver,
    mut close_rx: oneshot::Receiver<(Bytes, Duration)>,
    metrics: Arc<Metrics>,
) {
    // Set once a close is asked for: nothing is written past it.
    let mut deadline: Option<tokio::time::Instant> = None;
    // A close that came while a write was blocked: its tail goes next.
    let mut pending_tail: Option<Bytes> = None;
    loop {
        // Per wakeup, so an idle session keeps no batch allocated.
        let mut batch = Batch::default();
        let mut last = false;
        if let Some(tail) = pending_tail.take() {
            while let Ok(f) = rx.try_recv() {
                batch.push(f);
            }
            if !tail.is_empty() {
                batch.parts.push(tail);
            }
            last = true;
        } else {
            tokio::select! {
                biased;
                f = rx.recv() => match f {
                    Some(f) => {
                        batch.push(f);
                        while batch.counts.len() < BATCH_FRAMES {
                            match rx.try_recv() {
                                Ok(f) => batch.push(f),
                                Err(_) => break,
                            }
                        }
                        if rx.0.ack_request_due() {
                            batch.parts.push(Bytes::from_static(SM_REQUEST));
                        }
                    }
                    None => break,
                },
                close = &mut close_rx, if deadline.is_none() => {
                    while let Ok(f) = rx.try_recv() {
                        batch.push(f);
                    }
                    if let Ok((tail, linger)) = close {
                        deadline = Some(tokio::time::Instant::now() + linger);
                        if !tail.is_empty() {
                            batch.parts.push(tail);
                        }
                    }
                    last = true;
                }
            }
        }
        let mut progress = Progress::default();
        let done = {
            let write = write_all(&mut io, &batch.parts, &mut progress, &metrics);
            tokio::pin!(write);
            match deadline {
                Some(d) => tokio::time::timeout_at(d, write)
                    .await
                    .unwrap_or(Err(timed_out())),
                None => tokio::select! {
                    biased;
                    r = &mut write => r,
                    // A close while the peer is not reading: this write,
                    // then the rest and the tail, by the close's deadline.
                    close = &mut close_rx => {
                        let (tail, linger) = close.unwrap_or_default();
                        let d = tokio::time::Instant::now() + linger;
                        deadline = Some(d);
                        pending_tail = Some(tail);
                        tokio::time::timeout_at(d, write).await.unwrap_or(Err(timed_out()))
                    }
                },
            }
        };
        match done {
            Ok(()) => rx.0.wrote(batch.frames()),
            Err(_) => {
                // Given back, ahead of anything still queued, for the owner
                // to keep or bounce.
                rx.0.unwrite(batch.unwritten(progress.part));
                return;
            }
        }
        if last {
            break;
        }
    }
    let _ = io.shutdown().await;
}

fn timed_out() -> std::io::Error {
    std::io::ErrorKind::TimedOut.into()
}

/// Writes `parts` from `progress` on. `progress` moves only past bytes a
/// flush has pushed to the socket: a TLS stream takes more than the socket
/// will (its own buffer), and what sits there when a write times out never
/// reaches the peer, so it must count as unwritten.
async fn write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    parts: &[Bytes],
    progress: &mut Progress,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let (mut part, mut offset) = (progress.part, progress.offset);
    while part < parts.len() {
        let n = {
            let first = &parts[part][offset..];
            let slices: Vec<IoSlice<'_>> = std::iter::once(first)
                .chain(parts[part + 1..].iter().map(|b| &b[..]))
                .take(MAX_IOV)
                .map(IoSlice::new)
                .collect();
            io.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        metrics.bytes_out.increment(n as u64);
        let mut left = n;
        while left > 0 {
            let rest = parts[part].len() - offset;
            if rest <= left {
                left -= rest;
                part += 1;
                offset = 0;
            } else {
                offset += left;
                left = 0;
            }
        }
        io.flush().await?;
        (progress.part, progress.offset) = (part, offset);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &'static str) -> Frame {
        Bytes::from_static(s.as_bytes()).into()
    }

    #[tokio::test]
    async fn the_byte_cap_refuses_a_frame_that_would_pass_it_but_an_empty_queue_takes_any() {
        let (tx, mut rx) = queue(QueueLimits {
            frames: 100,
            bytes: 10,
        });
        tx.try_send(frame("0123456789abcdef"))
            .expect("an empty queue takes one oversize frame");
        assert!(matches!(
            tx.try_send(frame("x")),
            Err(TrySendError::Full(_))
        ));
        assert!(rx.recv().await.is_some());
        tx.try_send(frame("012345")).expect("room");
        tx.try_send(frame("0123")).expect("exactly at the cap");
        assert!(matches!(
            tx.try_send(frame("x")),
            Err(TrySendError::Full(_))
        ));
        assert!(rx.try_recv().is_ok());
        tx.try_send(frame("x"))
            .expect("the bytes of a received frame are given back");
        assert_eq!(rx.0.lock().bytes, 5);
    }

    #[tokio::test]
    async fn presence_fills_three_quarters_of_the_queue_and_the_rest_is_kept_for_messages() {
        let (tx, _rx) = queue(QueueLimits {
            frames: 100,
            bytes: 40,
        });
        for _ in 0..3 {
            tx.try_send_as(frame("0123456789"), StanzaKind::Presence)
                .expect("presence within its share");
        }
        assert!(
            matches!(
                tx.try_send_as(frame("x"), StanzaKind::Presence),
                Err(TrySendError::Full(_))
            ),
            "presence past 30 of 40 bytes"
        );
        tx.try_send_as(frame("0123456789"), StanzaKind::Message)
            .expect("a message takes the last quarter");
        assert!(matches!(
            tx.try_send_as(frame("x"), StanzaKind::Message),
            Err(TrySendError::Full(_))
        ));
        let (tx, _rx) = queue(QueueLimits::frames(4));
        for _ in 0..3 {
            tx.try_send_as(frame("p"), StanzaKind::Presence).unwrap();
        }
        assert!(tx.try_send_as(frame("p"), StanzaKind::Presence).is_err());
        tx.try_send_as(frame("m"), StanzaKind::Iq)
            .expect("the last frame is an IQ's");
    }

    #[tokio::test]
    async fn when_written_resolves_once_the_writer_has_written_what_was_queued_before_it() {
        let (client, mut server) = tokio::io::duplex(64);
        let w = Writer::spawn(client, QueueLimits::frames(16), Metrics::get());
        let q = w.queue.clone();
        assert!(q.when_written().await.is_ok(), "nothing queued: at once");
        // 100 bytes into a 64-byte pipe nobody reads: not written yet.
        q.try_send(frame("0123456789012345678901234567890123456789"))
            .unwrap();
        q.try_send(frame(
            "0123456789012345678901234567890123456789012345678901234567890",
        ))
        .unwrap();
        let mut marked = q.when_written();
        let after = q.when_written();
        q.try_send(frame("later")).unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut marked)
                .await
                .is_err(),
            "the peer has not taken the bytes"
        );
        let mut buf = vec![0u8; 101];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut buf)
            .await
            .unwrap();
        marked.await.expect("written once the peer read");
        after.await.expect("a second mark at the same place too");
        // A writer that stops (its socket gone) fails the marks left.
        drop(server);
        q.try_send(frame("lost")).unwrap();
        let lost = q.when_written();
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), lost)
            .await
            .expect("the mark is settled when the writer stops");
        assert!(r.is_err(), "nothing was written after the peer left");
        drop(w);
    }

    #[tokio::test]
    async fn a_close_by_deadline_gives_back_every_frame_not_wholly_written_in_order() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut w = Writer::spawn(client, QueueLimits::frames(16), Metrics::get());
        let q = w.queue.clone();
        let (a, b, c) = ("a".repeat(40), "b".repeat(40), "c".repeat(40));
        for f in [&a, &b, &c] {
            q.try_send(Bytes::from(f.clone()).into()).unwrap();
        }
        let marked = q.when_written();
        // The peer reads nothing: 64 bytes fit, a whole and 24 bytes of b.
        w.close(
            Bytes::from_static(b"</x>"),
            std::time::Duration::from_millis(200),
        )
        .await;
        let back: Vec<String> = q
            .take_unwritten()
            .iter()
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect();
        assert_eq!(
            back,
            vec![b.clone(), c.clone()],
            "b whole, though 24 bytes went"
        );
        assert!(marked.await.is_err(), "not everything was written");
        let mut got = vec![0u8; 64];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut got)
            .await
            .unwrap();
        assert_eq!(got, format!("{a}{}", &b[..24]).into_bytes());
    }

    #[tokio::test]
    async fn a_close_writes_what_is_queued_then_the_tail_and_gives_nothing_back() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut w = Writer::spawn(client, QueueLimits::frames(16), Metrics::get());
        let q = w.queue.clone();
        q.try_send(frame("<m1/>")).unwrap();
        q.try_send(frame("<m2/>")).unwrap();
        w.close(
            Bytes::from_static(b"</x>"),
            std::time::Duration::from_secs(5),
        )
        .await;
        assert!(q.take_unwritten().is_empty());
        let mut got = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut server, &mut got)
            .await
            .unwrap();
        assert_eq!(got, "<m1/><m2/></x>");
    }

    #[tokio::test]
    async fn stream_management_counts_stanzas_after_enabled_keeps_them_until_acked_and_gives_them_back()
     {
        let (tx, mut rx) = queue(QueueLimits {
            frames: 100,
            bytes: 1000,
        });
        tx.try_send(frame("<before/>")).unwrap();
        assert!(tx.enable_sm(Frame::nonza(Bytes::from_static(b"<enabled/>"))));
        assert!(!tx.enable_sm(Frame::nonza(Bytes::from_static(b"<enabled/>"))));
        for m in ["<m1/>", "<m2/>", "<m3/>"] {
            tx.try_send(frame(m)).unwrap();
        }
        tx.try_send(Frame::nonza(Bytes::from_static(b"<a h='0'/>")))
            .unwrap();
        for _ in 0..6 {
            rx.try_recv().unwrap();
        }
        // Neither <before/> (queued before <enabled/>) nor the nonzas count.
        assert_eq!(tx.unacked(), 3);
        assert!(rx.0.ack_request_due());
        assert!(!rx.0.ack_request_due(), "one request at a time");
        tx.ack(1).unwrap();
        assert_eq!(tx.unacked(), 2);
        // An answer that leaves stanzas unacknowledged asks again at once
        // (the tail of a burst is not left waiting for more traffic).
        let again = rx.try_recv().unwrap();
        assert_eq!(again.to_vec(), SM_REQUEST.to_vec());
        assert!(!again.is_stanza());
        assert!(!rx.0.ack_request_due(), "that request is the one out");
        assert_eq!(tx.ack(4), Err(AckTooHigh { h: 4, sent: 3 }));
        tx.ack(3).unwrap();
        assert!(
            rx.try_recv().is_err(),
            "nothing left unacknowledged: no request"
        );
        assert!(!rx.0.ack_request_due());
        tx.try_send(frame("<m4/>")).unwrap();
        rx.try_recv().unwrap();
        tx.try_send(frame("<m5/>")).unwrap();
        let back: Vec<_> = tx.take_unwritten().iter().map(|f| f.to_vec()).collect();
        assert_eq!(
            back,
            vec![b"<m4/>".to_vec(), b"<m5/>".to_vec()],
            "unacknowledged first, then unwritten"
        );
    }

    #[test]
    fn too_high_names_both_counts_in_xep_0198_form() {
        assert_eq!(
            AckTooHigh { h: 7, sent: 3 }.element(),
            "<handled-count-too-high xmlns='urn:xmpp:sm:3' h='7' send-count='3'/>"
        );
    }

    #[tokio::test]
    async fn the_stream_management_counts_wrap_at_two_to_the_thirty_second() {
        let (tx, mut rx) = queue(QueueLimits::frames(100));
        assert!(tx.enable_sm(Frame::nonza(Bytes::new())));
        rx.try_recv().unwrap();
        if let Some(sm) = &mut rx.0.lock().sm {
            (sm.sent, sm.acked) = (u32::MAX - 1, u32::MAX - 1);
        }
        for m in ["<m1/>", "<m2/>", "<m3/>"] {
            tx.try_send(frame(m)).unwrap();
            rx.try_recv().unwrap();
        }
        assert_eq!(rx.0.lock().sm.as_ref().map(|sm| sm.sent), Some(1));
        tx.ack(0).expect("h wrapped past 2^32 - 1 acknowledges two");
        assert_eq!(tx.unacked(), 1);
        assert_eq!(tx.ack(2), Err(AckTooHigh { h: 2, sent: 1 }));
        tx.ack(1).unwrap();
        assert_eq!(tx.unacked(), 0);
    }

    #[tokio::test]
    async fn unacknowledged_stanzas_count_against_the_queue_limits() {
        let (tx, mut rx) = queue(QueueLimits {
            frames: 100,
            bytes: 12,
        });
        assert!(tx.enable_sm(Frame::nonza(Bytes::new())));
        rx.try_recv().unwrap();
        tx.try_send(frame("<m1/>")).unwrap();
        tx.try_send(frame("<m2/>")).unwrap();
        rx.try_recv().unwrap();
        rx.try_recv().unwrap();
        assert!(
            matches!(tx.try_send(frame("<m3/>")), Err(TrySendError::Full(_))),
            "10 bytes unacknowledged: 5 more would pass 12"
        );
        tx.ack(2).unwrap();
        tx.try_send(frame("<m3/>")).expect("room once acknowledged");
    }

    #[tokio::test]
    async fn the_queue_delivers_in_order_and_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = queue(QueueLimits::frames(8));
        let tx2 = tx.clone();
        tx.try_send(frame("a")).expect("room");
        tx2.send(frame("b")).await.expect("room");
        drop(tx);
        drop(tx2);
        assert_eq!(rx.recv().await.map(|f| f.to_vec()), Some(b"a".to_vec()));
        assert_eq!(rx.try_recv().map(|f| f.to_vec()), Ok(b"b".to_vec()));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_try_send_and_makes_send_wait_for_room() {
        let (tx, mut rx) = queue(QueueLimits::frames(2));
        tx.try_send(frame("1")).expect("room");
        tx.try_send(frame("2")).expect("room");
        assert!(matches!(
            tx.try_send(frame("3")),
            Err(TrySendError::Full(_))
        ));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(frame("3")).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(rx.recv().await.is_some());
        assert!(waiting.await.expect("task"));
        assert_eq!(rx.recv().await.map(|f| f.to_vec()), Some(b"2".to_vec()));
        assert_eq!(rx.recv().await.map(|f| f.to_vec()), Some(b"3".to_vec()));
    }

    #[tokio::test]
    async fn senders_see_closed_once_the_writer_is_gone() {
        let (tx, rx) = queue(QueueLimits::frames(2));
        tx.try_send(frame("1")).expect("room");
        tx.try_send(frame("2")).expect("room");
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(frame("3")).await.is_err() }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(waiting.await.expect("task"), "a waiting send fails");
        assert!(matches!(
            tx.try_send(frame("4")),
            Err(TrySendError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn an_idle_queue_holds_no_ring() {
        let (tx, mut rx) = queue(QueueLimits::frames(4096));
        for _ in 0..100 {
            tx.try_send(frame("x")).expect("room");
        }
        while rx.try_recv().is_ok() {}
        let idle = tokio::time::timeout(std::time::Duration::from_millis(10), rx.recv()).await;
        assert!(idle.is_err(), "nothing to receive");
        assert_eq!(rx.0.lock().frames.capacity(), 0);
    }
}
