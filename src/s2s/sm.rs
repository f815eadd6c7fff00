//! XEP-0198 Stream Management on the receiving side of federation
//! streams, across connections.
//!
//! An inbound stream that a sending server enabled with `resume='true'`
//! keeps its count of handled stanzas (`h`) here, under an unguessable id,
//! so that when its connection dies the sender can open a new stream,
//! authenticate the same domain pair, and `<resume previd/>`: it learns
//! exactly which stanzas arrived and resends only the rest. Fedrouter
//! never sends stanzas on a stream it did not open, so this side has no
//! queue to replay: the count is the whole state.
//!
//! A resumption can come while the old connection still looks alive here
//! (the sender saw it die first). The new stream takes the count over
//! under its lock, and from then on the old stream may not handle one
//! more stanza: its `h` can no longer move behind the new one's back.
//!
//! Beside it, [`RecentIds`]: a sender that could not resume resends what
//! was not acknowledged, and may so send again what we handled. Messages
//! that carry a XEP-0359 `origin-id` are recognised and dropped the second
//! time.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Inbound streams whose counts are kept at once; past it, streams are
/// enabled without resumption.
const MAX_RESUMABLE: usize = 10_000;
/// Recent `origin-id`s remembered per sending domain.
const RECENT_IDS: usize = 2048;
/// Sending domains whose recent ids are remembered at once.
const RECENT_DOMAINS: usize = 1024;

struct Counts {
    h: u32,
    /// The stream that counts now (its [`super::inbound`] id).
    owner: u64,
    /// The domain pair the stream authenticated when it was enabled.
    remote: String,
    local: String,
    /// When the owner's connection ended, if it did.
    detached: Option<Instant>,
}

/// One inbound stream's Stream Management counts.
pub struct InboundSm {
    /// The resumption id, when resumption was granted.
    id: Option<String>,
    counts: Arc<Mutex<Counts>>,
    owner: u64,
}

fn lock(c: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

impl InboundSm {
    /// Counts one stanza received; false when the stream was resumed
    /// elsewhere (the stanza must then not be handled here).
    pub fn count(&self) -> bool {
        let mut c = lock(&self.counts);
        if c.owner != self.owner {
            return false;
        }
        c.h = c.h.wrapping_add(1);
        true
    }

    /// Stanzas handled since `<enable/>`, mod 2^32.
    pub fn h(&self) -> u32 {
        lock(&self.counts).h
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// Why a `<resume/>` is refused (`<failed><item-not-found/></failed>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeRefused {
    /// Unknown or expired id.
    Unknown,
    /// The id belongs to a stream of another domain pair.
    NotYours,
}

impl ResumeRefused {
    pub fn label(self) -> &'static str {
        match self {
            ResumeRefused::Unknown => "unknown",
            ResumeRefused::NotYours => "not-yours",
        }
    }
}

/// A resumption granted: the counts, and the stream that held them if it
/// is still alive (to be closed).
pub struct Resumed {
    pub sm: InboundSm,
    pub h: u32,
    pub previous: Option<u64>,
}

/// The resumable inbound streams, by id.
#[derive(Default)]
pub struct Registry {
    streams: DashMap<String, Arc<Mutex<Counts>>>,
}

impl Registry {
    /// `<enable/>` on the stream `owner`, authenticated for `remote` →
    /// `local`. With `resume`, an id comes with it (unless the registry
    /// is full).
    pub fn enable(
        &self,
        owner: u64,
        remote: &str,
        local: &str,
        resume: bool,
        timeout: Duration,
    ) -> InboundSm {
        let counts = Arc::new(Mutex::new(Counts {
            h: 0,
            owner,
            remote: remote.to_string(),
            local: local.to_string(),
            detached: None,
        }));
        let mut id = None;
        if resume {
            if self.streams.len() >= MAX_RESUMABLE {
                self.sweep(timeout);
            }
            if self.streams.len() < MAX_RESUMABLE
                && let Ok(new) = crate::random::hex(16)
            {
                self.streams.insert(new.clone(), counts.clone());
                id = Some(new);
            }
        }
        InboundSm { id, counts, owner }
    }

    /// `<resume previd/>` on the stream `owner`, which authenticated
    /// `authenticated` (remote, local) pairs.
    pub fn resume(
        &self,
        previd: &str,
        owner: u64,
        authenticated: &[(String, String)],
        timeout: Duration,
    ) -> Result<Resumed, ResumeRefused> {
        let counts = self
            .streams
            .get(previd)
            .map(|e| e.value().clone())
            .ok_or(ResumeRefused::Unknown)?;
        let mut c = lock(&counts);
        if c.detached.is_some_and(|at| at.elapsed() > timeout) {
            drop(c);
            self.streams.remove(previd);
            return Err(ResumeRefused::Unknown);
        }
        if !authenticated
            .iter()
            .any(|(r, l)| *r == c.remote && *l == c.local)
        {
            return Err(ResumeRefused::NotYours);
        }
        let previous = c.detached.is_none().then_some(c.owner);
        c.owner = owner;
        c.detached = None;
        let h = c.h;
        drop(c);
        Ok(Resumed {
            sm: InboundSm {
                id: Some(previd.to_string()),
                counts,
                owner,
            },
            h,
            previous,
        })
    }

    /// The stream's connection ended: its counts wait `timeout` for a
    /// resumption.
    pub fn detach(&self, sm: &InboundSm, timeout: Duration) {
        if sm.id.is_none() {
            return;
        }
        {
            let mut c = lock(&sm.counts);
            if c.owner == sm.owner {
                c.detached = Some(Instant::now());
            }
        }
        if self.streams.len() > MAX_RESUMABLE / 2 {
            self.sweep(timeout);
        }
    }

    /// The stream closed cleanly: its counts are not kept for resumption.
    pub fn remove(&self, sm: &InboundSm) {
        let Some(id) = &sm.id else {
            return;
        };
        // The count's lock is let go first: the map's shard lock is never
        // taken while holding it (sweep takes them the other way round).
        let mine = lock(&sm.counts).owner == sm.owner;
        if mine {
            self.streams.remove(id);
        }
    }

    /// Forgets counts that waited longer than `timeout`.
    fn sweep(&self, timeout: Duration) {
        self.streams
            .retain(|_, c| lock(c).detached.is_none_or(|at| at.elapsed() <= timeout));
    }

    /// Counts kept now (live and detached).
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// The last [`RECENT_IDS`] `origin-id`s per sending domain (hashed with a
/// per-process key together with the sender's JID, so one sender cannot
/// suppress another's messages).
#[derive(Default)]
pub struct RecentIds {
    domains: DashMap<String, Window>,
    key: RandomState,
}

#[derive(Default)]
struct Window {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentIds {
    /// Records `origin_id` from `from` (a JID of `domain`); false if it
    /// was recorded already (a duplicate).
    pub fn first_time(&self, domain: &str, from: &str, origin_id: &str) -> bool {
        let h = self.key.hash_one((from, origin_id));
        if !self.domains.contains_key(domain) && self.domains.len() >= RECENT_DOMAINS {
            // Bounded: the oldest knowledge goes first, all at once.
            self.domains.clear();
        }
        let mut w = self.domains.entry(domain.to_string()).or_default();
        if !w.seen.insert(h) {
            return false;
        }
        w.order.push_back(h);
        if w.order.len() > RECENT_IDS
            && let Some(old) = w.order.pop_front()
        {
            w.seen.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(300);

    fn pair() -> Vec<(String, String)> {
        vec![("a.example".into(), "b.example".into())]
    }

    #[test]
    fn a_resumed_stream_takes_the_count_over_and_the_old_one_may_not_count_on() {
        let reg = Registry::default();
        let old = reg.enable(1, "a.example", "b.example", true, T);
        assert!(old.count() && old.count());
        let id = old.id().unwrap().to_string();
        let r = reg.resume(&id, 2, &pair(), T).ok().unwrap();
        assert_eq!((r.h, r.previous), (2, Some(1)));
        assert!(!old.count(), "the old stream handles nothing more");
        assert!(r.sm.count());
        assert_eq!(r.sm.h(), 3);
        reg.detach(&old, T);
        // The old stream going away does not detach the new owner.
        let again = reg.resume(&id, 3, &pair(), T).ok().unwrap();
        assert_eq!((again.h, again.previous), (3, Some(2)));
    }

    #[test]
    fn only_the_same_domain_pair_may_resume_and_unknown_ids_fail() {
        let reg = Registry::default();
        let sm = reg.enable(1, "a.example", "b.example", true, T);
        let id = sm.id().unwrap().to_string();
        let other = vec![("evil.example".to_string(), "b.example".to_string())];
        assert_eq!(
            reg.resume(&id, 2, &other, T).err(),
            Some(ResumeRefused::NotYours)
        );
        assert_eq!(
            reg.resume("nope", 2, &pair(), T).err(),
            Some(ResumeRefused::Unknown)
        );
        assert!(
            reg.enable(3, "a.example", "b.example", false, T)
                .id()
                .is_none()
        );
    }

    #[test]
    fn detached_counts_expire_after_the_timeout() {
        let reg = Registry::default();
        let sm = reg.enable(1, "a.example", "b.example", true, T);
        let id = sm.id().unwrap().to_string();
        reg.detach(&sm, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            reg.resume(&id, 2, &pair(), Duration::ZERO).err(),
            Some(ResumeRefused::Unknown)
        );
        assert!(reg.is_empty());
    }

    #[test]
    fn an_origin_id_is_new_once_per_sender_and_the_window_is_bounded() {
        let r = RecentIds::default();
        assert!(r.first_time("a.example", "u@a.example/x", "m1"));
        assert!(!r.first_time("a.example", "u@a.example/x", "m1"));
        assert!(r.first_time("a.example", "v@a.example/x", "m1"));
        for i in 0..RECENT_IDS {
            r.first_time("a.example", "u@a.example/x", &format!("n{i}"));
        }
        assert!(
            r.first_time("a.example", "u@a.example/x", "m1"),
            "forgotten"
        );
        assert!(r.domains.get("a.example").unwrap().order.len() <= RECENT_IDS);
    }
}
