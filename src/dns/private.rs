//! Which addresses a remote domain may send us to. A remote domain writes
//! its own DNS: pointing its SRV target (or A/AAAA) at 127.0.0.1, 10.0.0.5
//! or 169.254.169.254 would have the daemon connect into its own host or
//! network on that domain's behalf, and dialback lets anyone who sends a
//! `db:result` pick the domain. Such addresses are dropped unless the
//! operator allowed their network (`s2s.allow_private_targets`).
//!
//! Owns the filtering of resolved targets only; the caller decides what an
//! empty result means.

use std::net::SocketAddr;

use super::Target;
use crate::net::{IpNet, may_connect};

/// `targets` without the addresses it may not connect to (and without the
/// targets left with none), and the addresses dropped.
pub fn public_targets(targets: Vec<Target>, allowed: &[IpNet]) -> (Vec<Target>, Vec<SocketAddr>) {
    let mut dropped = Vec::new();
    let kept = targets
        .into_iter()
        .filter_map(|mut t| {
            t.addrs.retain(|a| {
                let ok = may_connect(a.ip(), allowed);
                if !ok {
                    dropped.push(*a);
                }
                ok
            });
            (!t.addrs.is_empty()).then_some(t)
        })
        .collect();
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_addresses_are_dropped_unless_an_allowed_network_covers_them() {
        let t = |host: &str, addrs: &[&str]| Target {
            host: host.into(),
            port: 5269,
            direct_tls: false,
            addrs: addrs.iter().map(|a| SocketAddr::new(ip(a), 5269)).collect(),
        };
        let targets = vec![
            t("inside.example", &["127.0.0.1", "10.0.0.7"]),
            t("mixed.example", &["::1", "2001:db8::5", "192.168.0.2"]),
        ];
        let (kept, dropped) = public_targets(targets.clone(), &[]);
        assert_eq!(kept, vec![t("mixed.example", &["2001:db8::5"])]);
        assert_eq!(dropped.len(), 4);
        let allowed = ["127.0.0.0/8".parse().unwrap()];
        let (kept, dropped) = public_targets(targets, &allowed);
        assert_eq!(
            kept,
            vec![
                t("inside.example", &["127.0.0.1"]),
                t("mixed.example", &["2001:db8::5"])
            ]
        );
        assert_eq!(dropped.len(), 3);
    }
}
