//! The failed-login throttle shared by every client session: failures are
//! counted per account and per source address, across connections, and
//! once either count reaches its limit within the window, further attempts
//! are refused (`<temporary-auth-failure/>`, at once: a throttled client
//! never holds a connection waiting) until that window ends.
//!
//! Windows are fixed: the first failure opens one, and attempts refused by
//! the throttle are not failures, so a guesser gets at most the limit per
//! window. IPv6 addresses are counted per /64, the block one host usually
//! has. Memory is bounded: each table holds at most `capacity` entries;
//! when full, expired entries go first, then the oldest window.
//!
//! This module owns the counting; it must not know SASL. Time is tokio's.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::jid::BareJid;

/// Entries per table (accounts, addresses) at most: about 100 bytes each.
pub const CAPACITY: usize = 50_000;

/// What a throttled attempt was counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Account,
    Address,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Address => "address",
        }
    }
}

/// The limits, from `[c2s]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_account: u32,
    pub per_address: u32,
    pub window: Duration,
    pub capacity: usize,
}

pub struct LoginThrottle {
    limits: Limits,
    accounts: Mutex<Table<BareJid>>,
    addresses: Mutex<Table<IpAddr>>,
}

/// A recorded failure that reached a limit just now (once per window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engaged {
    pub scope: Scope,
    pub subject: String,
}

impl LoginThrottle {
    pub fn new(limits: Limits) -> LoginThrottle {
        LoginThrottle {
            limits,
            accounts: Mutex::new(Table::default()),
            addresses: Mutex::new(Table::default()),
        }
    }

    pub fn window(&self) -> Duration {
        self.limits.window
    }

    /// `None` when `user`, from `ip`, may try a password now; else what
    /// the attempt is throttled on.
    pub fn check(&self, ip: IpAddr, user: &BareJid) -> Option<Scope> {
        self.check_at(ip, user, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, user: &BareJid, now: Instant) -> Option<Scope> {
        let l = &self.limits;
        if lock(&self.addresses).over(&address_key(ip), now, l.per_address, l.window) {
            return Some(Scope::Address);
        }
        if lock(&self.accounts).over(user, now, l.per_account, l.window) {
            return Some(Scope::Account);
        }
        None
    }

    /// Counts a failed attempt from `ip`, against `user` too when the
    /// attempt named a valid account. Returns the limits it reached.
    pub fn failed(&self, ip: IpAddr, user: Option<&BareJid>) -> Vec<Engaged> {
        self.failed_at(ip, user, Instant::now())
    }

    fn failed_at(&self, ip: IpAddr, user: Option<&BareJid>, now: Instant) -> Vec<Engaged> {
        let l = &self.limits;
        let mut engaged = Vec::new();
        let key = address_key(ip);
        if lock(&self.addresses).record(key, now, l.window, l.capacity) == l.per_address {
            engaged.push(Engaged {
                scope: Scope::Address,
                subject: key.to_string(),
            });
        }
        if let Some(u) = user
            && lock(&self.accounts).record(u.clone(), now, l.window, l.capacity) == l.per_account
        {
            engaged.push(Engaged {
                scope: Scope::Account,
                subject: u.to_string(),
            });
        }
        engaged
    }

    /// Entries held (accounts, addresses), for tests of the bound.
    pub fn entries(&self) -> (usize, usize) {
        (
            lock(&self.accounts).map.len(),
            lock(&self.addresses).map.len(),
        )
    }
}

/// A poisoned lock only means a panic elsewhere mid-update of a counter;
/// the counts are still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

use crate::net::address_key;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
}

struct Table<K> {
    map: HashMap<K, Entry>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            map: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn over(&self, key: &K, now: Instant, max: u32, window: Duration) -> bool {
        self.map
            .get(key)
            .is_some_and(|e| now < e.since + window && e.failures >= max)
    }

    /// Counts one failure; returns the count in the current window.
    fn record(&mut self, key: K, now: Instant, window: Duration, capacity: usize) -> u32 {
        if !self.map.contains_key(&key) && self.map.len() >= capacity {
            self.make_room(now, window);
        }
        let e = self.map.entry(key).or_insert(Entry {
            failures: 0,
            since: now,
        });
        if now >= e.since + window {
            *e = Entry {
                failures: 0,
                since: now,
            };
        }
        e.failures = e.failures.saturating_add(1);
        e.failures
    }

    /// Drops expired windows; if none had expired, the oldest one.
    fn make_room(&mut self, now: Instant, window: Duration) {
        let before = self.map.len();
        self.map.retain(|_, e| now < e.since + window);
        if self.map.len() < before {
            return;
        }
        if let Some(oldest) = self
            .map
            .iter()
            .min_by_key(|(_, e)| e.since)
            .map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_account: u32, per_address: u32, capacity: usize) -> LoginThrottle {
        LoginThrottle::new(Limits {
            per_account,
            per_address,
            window: Duration::from_secs(60),
            capacity,
        })
    }

    fn jid(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A test clock: the throttle is driven with explicit instants.
    struct Clock(Instant);

    impl Clock {
        fn advance(&mut self, d: Duration) {
            self.0 += d;
        }
    }

    #[test]
    fn an_account_is_throttled_after_its_limit_from_any_address_until_the_window_ends() {
        let mut now = Clock(Instant::now());
        let t = throttle(3, 100, 100);
        let alice = jid("alice@example.org");
        for n in 1..=3 {
            assert_eq!(
                t.check_at(ip("192.0.2.1"), &alice, now.0),
                None,
                "attempt {n}"
            );
            let engaged = t.failed_at(ip(&format!("192.0.2.{n}")), Some(&alice), now.0);
            assert_eq!(engaged.is_empty(), n < 3, "attempt {n}: {engaged:?}");
        }
        assert_eq!(
            t.check_at(ip("198.51.100.7"), &alice, now.0),
            Some(Scope::Account)
        );
        assert_eq!(
            t.check_at(ip("192.0.2.1"), &jid("bob@example.org"), now.0),
            None
        );
        now.advance(Duration::from_secs(59));
        assert_eq!(
            t.check_at(ip("192.0.2.1"), &alice, now.0),
            Some(Scope::Account)
        );
        now.advance(Duration::from_secs(1));
        assert_eq!(t.check_at(ip("192.0.2.1"), &alice, now.0), None);
        // A new window starts from scratch.
        assert!(t.failed_at(ip("192.0.2.1"), Some(&alice), now.0).is_empty());
        assert_eq!(t.check_at(ip("192.0.2.1"), &alice, now.0), None);
    }

    #[test]
    fn an_address_is_throttled_for_every_account_and_ipv6_counts_per_64() {
        let now = Clock(Instant::now());
        let t = throttle(100, 2, 100);
        t.failed_at(ip("2001:db8::1"), None, now.0);
        let engaged = t.failed_at(ip("2001:db8::ffff:1"), Some(&jid("a@example.org")), now.0);
        assert_eq!(
            engaged,
            vec![Engaged {
                scope: Scope::Address,
                subject: "2001:db8::".into()
            }]
        );
        let anyone = jid("someone@example.org");
        assert_eq!(
            t.check_at(ip("2001:db8::99"), &anyone, now.0),
            Some(Scope::Address)
        );
        assert_eq!(t.check_at(ip("2001:db8:0:1::1"), &anyone, now.0), None);
        t.failed_at(ip("::ffff:192.0.2.9"), None, now.0);
        t.failed_at(ip("192.0.2.9"), None, now.0);
        assert_eq!(
            t.check_at(ip("192.0.2.9"), &anyone, now.0),
            Some(Scope::Address)
        );
    }

    #[test]
    fn the_tables_stay_within_their_capacity() {
        let mut now = Clock(Instant::now());
        let t = throttle(5, 1_000_000, 100);
        for i in 0..1000 {
            t.failed_at(
                ip("192.0.2.1"),
                Some(&jid(&format!("u{i}@example.org"))),
                now.0,
            );
            now.advance(Duration::from_millis(10));
        }
        assert_eq!(t.entries(), (100, 1));
        // The newest entries were kept.
        for _ in 0..4 {
            t.failed_at(ip("192.0.2.1"), Some(&jid("u999@example.org")), now.0);
        }
        assert_eq!(
            t.check_at(ip("192.0.2.2"), &jid("u999@example.org"), now.0),
            Some(Scope::Account)
        );
        // Expired windows make room before live ones are dropped.
        now.advance(Duration::from_secs(61));
        t.failed_at(ip("192.0.2.1"), Some(&jid("new@example.org")), now.0);
        assert_eq!(t.entries(), (1, 1));
    }
}
