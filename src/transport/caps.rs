//! Connection caps: how many connections of one kind may be open at once,
//! in all and from one address (IPv6 per /64). c2s counts its connections
//! here, inbound s2s its streams until they authenticate.
//!
//! Counting only: a refused connection is the caller's to answer and to
//! report. A slot is given back when its [`CapSlot`] is dropped, so no path
//! out of a session can leak one.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::net::address_key;

/// Which of the two limits refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    Total,
    PerIp,
}

pub struct ConnCaps {
    total: usize,
    per_ip: usize,
    open: AtomicUsize,
    by_ip: DashMap<IpAddr, usize>,
}

impl ConnCaps {
    pub fn new(total: u32, per_ip: u32) -> Arc<ConnCaps> {
        Arc::new(ConnCaps {
            total: total as usize,
            per_ip: per_ip as usize,
            open: AtomicUsize::new(0),
            by_ip: DashMap::new(),
        })
    }

    /// Takes a slot for a connection from `ip`, or says which limit is
    /// reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<CapSlot, Over> {
        let key = address_key(ip);
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.total).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Over::Total);
        }
        let mut e = self.by_ip.entry(key).or_insert(0);
        if *e >= self.per_ip {
            drop(e);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Over::PerIp);
        }
        *e += 1;
        Ok(CapSlot {
            caps: self.clone(),
            key,
        })
    }

    /// Slots taken now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn release(&self, key: IpAddr) {
        if let Some(mut e) = self.by_ip.get_mut(&key) {
            *e = e.saturating_sub(1);
        }
        self.by_ip.remove_if(&key, |_, n| *n == 0);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection's slot; dropping it gives the slot back.
pub struct CapSlot {
    caps: Arc<ConnCaps>,
    key: IpAddr,
}

impl Drop for CapSlot {
    fn drop(&mut self) {
        self.caps.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn one_address_stops_at_its_cap_while_others_still_get_in() {
        let caps = ConnCaps::new(10, 2);
        let a1 = caps.acquire(ip("127.0.0.2")).expect("first");
        let _a2 = caps.acquire(ip("127.0.0.2")).expect("second");
        assert_eq!(caps.acquire(ip("127.0.0.2")).err(), Some(Over::PerIp));
        let _b = caps.acquire(ip("127.0.0.3")).expect("another address");
        assert_eq!(caps.open(), 3);
        drop(a1);
        let _a3 = caps.acquire(ip("127.0.0.2")).expect("the slot came back");
    }

    #[test]
    fn the_total_cap_holds_over_all_addresses_and_ipv6_counts_per_64() {
        let caps = ConnCaps::new(3, 2);
        let slots: Vec<_> = ["2001:db8::1", "2001:db8::2", "192.0.2.1"]
            .iter()
            .map(|s| caps.acquire(ip(s)))
            .collect();
        assert!(slots.iter().all(|s| s.is_ok()));
        assert_eq!(caps.acquire(ip("192.0.2.2")).err(), Some(Over::Total));
        drop(slots);
        assert_eq!(caps.open(), 0);
        let _a = caps.acquire(ip("2001:db8::1")).expect("a");
        let _b = caps.acquire(ip("2001:db8::ffff")).expect("b");
        assert_eq!(
            caps.acquire(ip("2001:db8::1:2")).err(),
            Some(Over::PerIp),
            "the same /64"
        );
        assert!(caps.by_ip.len() == 1);
    }
}
