//! Bookkeeping of presence: subscriptions set up before the measurement,
//! then, round by round, which contacts saw the update and when.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use fedrouter::xml::{Stanza, StanzaKind};
use hdrhistogram::Histogram;

use crate::stamp;
use crate::tracker::new_histogram;

/// Presence updates carry `id='ltp-<round>'`.
pub const ID_PREFIX: &str = "ltp-";

struct Round {
    n: u64,
    started_ns: u64,
    seen: Vec<AtomicU64>,
}

pub struct PresenceTracker {
    /// Contacts per user: contact `g` belongs to user `g / per_user`.
    pub per_user: u64,
    pub contacts: u64,
    subscribed: Vec<AtomicU64>,
    pub subscribed_count: AtomicU64,
    round: Mutex<Option<Round>>,
    pub received: std::sync::Arc<AtomicU64>,
    pub round_received: AtomicU64,
    pub duplicate: AtomicU64,
    pub misdelivered: AtomicU64,
    pub stale: AtomicU64,
    pub last_arrival_ns: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

fn bitmap(n: u64) -> Vec<AtomicU64> {
    (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
}

fn set(bits: &[AtomicU64], i: u64) -> bool {
    let (w, b) = ((i / 64) as usize, 1u64 << (i % 64));
    bits.get(w)
        .is_some_and(|x| x.fetch_or(b, Ordering::Relaxed) & b == 0)
}

impl PresenceTracker {
    pub fn new(users: u64, per_user: u64) -> PresenceTracker {
        let contacts = users * per_user;
        PresenceTracker {
            per_user: per_user.max(1),
            contacts,
            subscribed: bitmap(contacts),
            subscribed_count: AtomicU64::new(0),
            round: Mutex::new(None),
            received: Default::default(),
            round_received: AtomicU64::new(0),
            duplicate: AtomicU64::new(0),
            misdelivered: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            last_arrival_ns: AtomicU64::new(0),
            hist: Mutex::new(new_histogram()),
        }
    }

    /// Starts round `n` (the previous one is over).
    pub fn start_round(&self, n: u64) {
        self.round_received.store(0, Ordering::Relaxed);
        if let Ok(mut r) = self.round.lock() {
            *r = Some(Round {
                n,
                started_ns: stamp::now_ns(),
                seen: bitmap(self.contacts),
            });
        }
    }

    /// A presence stanza the target sent to one of our contacts.
    pub fn on_stanza(&self, s: &Stanza) {
        if s.kind() != StanzaKind::Presence {
            return;
        }
        let Some(to) = s.to() else { return };
        let Some(g) = stamp::index_in(&to, "c").map(u64::from) else {
            return;
        };
        if g >= self.contacts {
            return;
        }
        match s.type_().as_deref() {
            Some("subscribed") if set(&self.subscribed, g) => {
                self.subscribed_count.fetch_add(1, Ordering::Relaxed);
            }
            None => self.on_update(s, g),
            _ => {}
        }
    }

    fn on_update(&self, s: &Stanza, g: u64) {
        let Some(id) = s.id() else { return };
        let Some(n) = id
            .strip_prefix(ID_PREFIX)
            .and_then(|x| x.parse::<u64>().ok())
        else {
            return;
        };
        let now = stamp::now_ns();
        let Ok(r) = self.round.lock() else { return };
        let Some(round) = r.as_ref() else { return };
        if round.n != n {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Contact g must belong to the user who sent the update.
        let from_user = s
            .from()
            .and_then(|f| {
                let local = f.split('@').next()?.to_string();
                local
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .parse::<u64>()
                    .ok()
            })
            .map(|u| u.saturating_sub(1));
        if from_user.is_some_and(|u| u != g / self.per_user) {
            self.misdelivered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !set(&round.seen, g) {
            self.duplicate.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let us = now.saturating_sub(round.started_ns) / 1000;
        drop(r);
        if let Ok(mut h) = self.hist.lock() {
            h.saturating_record(us.max(1));
        }
        self.last_arrival_ns.fetch_max(now, Ordering::Relaxed);
        self.round_received.fetch_add(1, Ordering::Relaxed);
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn histogram(&self) -> Histogram<u64> {
        self.hist
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| new_histogram())
    }
}
