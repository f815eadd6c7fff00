//! IP networks in CIDR form and the address classes federation must not
//! be steered into: loopback, private, link-local and the like. Pure
//! values, no I/O; the configuration parses [`IpNet`]s and `dns` judges
//! the addresses a remote domain's records name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The address a client or peer is counted under: IPv4 as is (and
/// IPv4-mapped IPv6 as IPv4), IPv6 by its /64, the block one host usually
/// holds.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// An IP network in CIDR form (`10.0.0.0/8`, `::1/128`); a bare address
/// is the network of that one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `addr/prefix`; refused when the prefix is too long for the family or
    /// `addr` has bits set past it (`10.0.0.1/8` is a typo for something).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("the prefix /{prefix} is longer than {max} bits"));
        }
        let net = IpNet { addr, prefix };
        if net.masked(addr) != addr {
            let base = IpNet {
                addr: net.masked(addr),
                prefix,
            };
            return Err(format!(
                "{addr}/{prefix} has host bits set: write {base} for the network"
            ));
        }
        Ok(net)
    }

    /// Whether `ip` is in this network; an IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<IpNet, String> {
        let bad =
            || format!("`{s}` is not a network: expected CIDR such as 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpNet::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Loopback, RFC 1918, link-local, unspecified ("this network", 0/8),
/// unique-local (fc00::/7), broadcast and multicast addresses, and
/// IPv4-mapped IPv6 forms of them: nothing a federation peer on the
/// internet is reached at.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.octets()[0] == 0
                || a.is_broadcast()
                || a.is_multicast()
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                || first & 0xfe00 == 0xfc00
                || first & 0xffc0 == 0xfe80
                || a.is_multicast()
        }
    }
}

/// Whether the daemon may connect to `ip` for a remote domain.
pub fn may_connect(ip: IpAddr, allowed: &[IpNet]) -> bool {
    !is_private(ip) || allowed.iter().any(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_rfc1918_link_local_unspecified_and_unique_local_are_private() {
        for a in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_private(ip(a)), "{a}");
        }
        for a in [
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "192.169.0.1",
            "100.64.0.1",
            "2001:db8::1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "fec0::1",
        ] {
            assert!(!is_private(ip(a)), "{a}");
        }
    }

    #[test]
    fn a_network_contains_its_addresses_and_their_ipv4_mapped_forms() {
        let n: IpNet = "127.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("127.0.0.1")) && n.contains(ip("127.9.9.9")));
        assert!(n.contains(ip("::ffff:127.0.0.1")));
        assert!(!n.contains(ip("128.0.0.1")) && !n.contains(ip("::1")));
        let one: IpNet = "::1".parse().unwrap();
        assert_eq!(one.to_string(), "::1/128");
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("10.0.0.1")) && !all.contains(ip("fd00::1")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fc00::1")));
    }

    #[test]
    fn a_network_with_host_bits_or_a_long_prefix_or_garbage_is_refused() {
        let e = "10.0.0.1/8".parse::<IpNet>().unwrap_err();
        assert!(e.contains("write 10.0.0.0/8"), "{e}");
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("::/129".parse::<IpNet>().is_err());
        assert!("localhost/8".parse::<IpNet>().is_err());
        assert!("10.0.0.0/x".parse::<IpNet>().is_err());
    }
}
