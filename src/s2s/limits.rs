//! The connection slots of `[gateway]`: `connection_limit` over every s2s
//! link, and the per-partner limit over all of one `[[partner]]` entry's
//! domains, inbound and outbound together; and the dialback
//! verifications in flight over all inbound streams
//! (`s2s.max_pending_dialback_total`).
//!
//! Counting only: which limit applies and which partner a domain belongs
//! to are the caller's to say (from the policy in force), so a reload is
//! seen on the next acquire.

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

#[derive(Default)]
pub struct Slots {
    /// Open s2s connections, both directions.
    connections: AtomicUsize,
    /// Open links per partner key.
    per_partner: DashMap<String, usize>,
    /// Dialback verifications in flight, over all inbound streams.
    dialback: AtomicUsize,
}

impl Slots {
    /// Takes a connection slot; false when `limit` are taken.
    pub fn acquire_connection(&self, limit: usize) -> bool {
        bounded_increment(&self.connections, limit)
    }

    pub fn release_connection(&self) {
        saturating_decrement(&self.connections);
    }

    /// Takes one of `limit` in-flight dialback verifications.
    pub fn acquire_dialback(&self, limit: usize) -> bool {
        bounded_increment(&self.dialback, limit)
    }

    pub fn release_dialback(&self) {
        saturating_decrement(&self.dialback);
    }

    /// Takes one of `limit` slots of the partner counted under `key`.
    pub fn acquire_partner(&self, key: &str, limit: usize) -> bool {
        let mut e = self.per_partner.entry(key.to_owned()).or_insert(0);
        if *e >= limit {
            return false;
        }
        *e += 1;
        true
    }

    pub fn release_partner(&self, key: &str) {
        if let Some(mut e) = self.per_partner.get_mut(key) {
            *e = e.saturating_sub(1);
        }
        self.per_partner.remove_if(key, |_, n| *n == 0);
    }

    /// Links open under `key` now.
    pub fn partner_links(&self, key: &str) -> usize {
        self.per_partner.get(key).map(|n| *n).unwrap_or(0)
    }
}

fn bounded_increment(n: &AtomicUsize, limit: usize) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < limit).then_some(n + 1)
    })
    .is_ok()
}

fn saturating_decrement(n: &AtomicUsize) {
    let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        Some(n.saturating_sub(1))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_stop_at_the_limit_and_come_back() {
        let s = Slots::default();
        assert!(s.acquire_connection(2));
        assert!(s.acquire_connection(2));
        assert!(!s.acquire_connection(2));
        s.release_connection();
        assert!(s.acquire_connection(2));
        // Releasing more than was taken never wraps.
        for _ in 0..5 {
            s.release_connection();
        }
        assert!(s.acquire_connection(1));
        assert!(!s.acquire_connection(1));
    }

    #[test]
    fn dialback_verifications_stop_at_the_limit_and_come_back() {
        let s = Slots::default();
        assert!(s.acquire_dialback(1));
        assert!(!s.acquire_dialback(1));
        s.release_dialback();
        s.release_dialback();
        assert!(s.acquire_dialback(1));
    }

    #[test]
    fn partner_slots_count_per_key_and_forget_empty_keys() {
        let s = Slots::default();
        assert!(s.acquire_partner("a.example", 1));
        assert!(!s.acquire_partner("a.example", 1));
        assert!(s.acquire_partner("b.example", 1));
        assert_eq!(s.partner_links("a.example"), 1);
        s.release_partner("a.example");
        assert_eq!(s.partner_links("a.example"), 0);
        assert!(!s.per_partner.contains_key("a.example"));
        s.release_partner("never.example");
        assert!(s.acquire_partner("a.example", 1));
    }
}
