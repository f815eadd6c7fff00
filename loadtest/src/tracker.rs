//! Bookkeeping of stamped messages: which arrived, where, how late, and
//! which never did. Shared by every reader of a run.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::stamp::{self, Stamp};

/// Stamps with this sender are warm-up traffic, counted apart.
pub const WARMUP: u32 = u32::MAX;

pub struct Tracker {
    pub total: u64,
    pub next_seq: AtomicU64,
    seen: Vec<AtomicU64>,
    pub sent: Arc<AtomicU64>,
    /// Delivered to the right recipient (first time).
    pub received: Arc<AtomicU64>,
    pub misdelivered: AtomicU64,
    pub duplicate: AtomicU64,
    pub bounced: AtomicU64,
    /// Stamped messages of no sender of ours, or out of range.
    pub foreign: AtomicU64,
    pub warmup: AtomicU64,
    pub last_arrival_ns: AtomicU64,
    hist: Mutex<Histogram<u64>>,
    /// Per sender: how many more it may have in flight.
    pub windows: Vec<Semaphore>,
}

impl Tracker {
    pub fn new(total: u64, senders: usize, window: usize) -> Tracker {
        Tracker {
            total,
            next_seq: AtomicU64::new(0),
            seen: (0..total.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            sent: Arc::default(),
            received: Arc::default(),
            misdelivered: AtomicU64::new(0),
            duplicate: AtomicU64::new(0),
            bounced: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            warmup: AtomicU64::new(0),
            last_arrival_ns: AtomicU64::new(0),
            hist: Mutex::new(new_histogram()),
            windows: (0..senders).map(|_| Semaphore::new(window)).collect(),
        }
    }

    /// A message carrying `st` reached recipient `at` (its index, when the
    /// receiving side could tell). An error bounce counts apart.
    pub fn arrive(&self, st: Stamp, at: Option<u32>, bounce: bool) {
        if st.sender == WARMUP {
            self.warmup.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if st.seq >= self.total {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (word, bit) = ((st.seq / 64) as usize, 1u64 << (st.seq % 64));
        if self.seen[word].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.duplicate.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // First sight of a message of ours: its sender may send another.
        if let Some(w) = self.windows.get(st.sender as usize) {
            w.add_permits(1);
        }
        if bounce {
            self.bounced.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if at != Some(st.recipient) {
            self.misdelivered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = stamp::now_ns();
        self.last_arrival_ns.fetch_max(now, Ordering::Relaxed);
        let us = now.saturating_sub(st.sent_ns) / 1000;
        if let Ok(mut h) = self.hist.lock() {
            h.saturating_record(us.max(1));
        }
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything sent has come back one way or another.
    pub fn settled(&self) -> bool {
        self.accounted() >= self.sent.load(Ordering::Relaxed)
    }

    pub fn accounted(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
            + self.misdelivered.load(Ordering::Relaxed)
            + self.bounced.load(Ordering::Relaxed)
    }

    /// Sent, never seen.
    pub fn lost(&self) -> u64 {
        self.sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.accounted())
    }

    pub fn histogram(&self) -> Histogram<u64> {
        self.hist
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| new_histogram())
    }

    /// Waits until settled or `limit` passed; true when settled.
    pub async fn drain(&self, limit: Duration) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while !self.settled() {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// Microseconds from 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(seq: u64, recipient: u32) -> Stamp {
        Stamp {
            sender: 0,
            recipient,
            seq,
            sent_ns: stamp::now_ns(),
        }
    }

    #[test]
    fn arrivals_are_sorted_by_kind() {
        let t = Tracker::new(10, 1, 4);
        t.sent.store(5, Ordering::Relaxed);
        t.arrive(st(0, 1), Some(1), false);
        t.arrive(st(0, 1), Some(1), false);
        t.arrive(st(1, 1), Some(2), false);
        t.arrive(st(2, 1), None, true);
        t.arrive(st(99, 1), Some(1), false);
        assert_eq!(t.received.load(Ordering::Relaxed), 1);
        assert_eq!(t.duplicate.load(Ordering::Relaxed), 1);
        assert_eq!(t.misdelivered.load(Ordering::Relaxed), 1);
        assert_eq!(t.bounced.load(Ordering::Relaxed), 1);
        assert_eq!(t.foreign.load(Ordering::Relaxed), 1);
        assert_eq!(t.lost(), 2);
        assert!(!t.settled());
        assert_eq!(t.histogram().len(), 1);
        // Each first arrival gave its window slot back; duplicates and
        // strangers did not.
        assert_eq!(t.windows[0].available_permits(), 4 + 3);
    }
}
