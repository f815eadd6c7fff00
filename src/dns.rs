//! Where to connect for a remote domain (RFC 6120 §3.2, XEP-0368) and how
//! (RFC 8305 Happy Eyeballs). Owns DNS only: no TLS, no stream logic.
//!
//! Resolution: `_xmpps-server._tcp.D` (direct TLS) and `_xmpp-server._tcp.D`
//! (STARTTLS) are asked concurrently and merged as one SRV set (XEP-0368:
//! "all priorities and weights are mixed"): ascending priority, RFC 2782
//! weighted random order within a priority. The connection type plays no
//! part in the order, so the operator's weights decide; equal weights are a
//! coin toss. Every target is resolved to AAAA and A.
//!
//! - Neither SRV name exists (NXDOMAIN or no records): A/AAAA of D on 5269,
//!   STARTTLS. Nothing for D either: [`DnsError::NotFound`].
//! - A target of "." is "service not provided". On `_xmpp-server` it
//!   forbids the A/AAAA fallback; on `_xmpps-server` it only says "no
//!   direct TLS" and XEP-0368 says to use `_xmpp-server`, again without
//!   the A/AAAA fallback. So: "." and no usable record on the other name
//!   gives [`DnsError::NoService`].
//! - A failed SRV query (SERVFAIL, timeout) is never read as "no SRV": that
//!   would silently move traffic to D:5269 whenever the DNS hiccups. When
//!   the other name produced records those are used (and the failure
//!   logged); otherwise the error is returned, as Prosody does.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::events;

mod private;

pub use private::public_targets;

/// The RFC 6120 fallback port when a domain publishes no SRV records.
pub const DEFAULT_S2S_PORT: u16 = 5269;
/// Per-query timeout and tries (RFC 8305 asks for no more than a few s).
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
const QUERY_ATTEMPTS: usize = 2;
/// RFC 8305 §5 "Connection Attempt Delay".
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// One place to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// SRV target (or the domain itself on fallback), no trailing dot.
    pub host: String,
    pub port: u16,
    /// XEP-0368: TLS from the first byte; otherwise STARTTLS.
    pub direct_tls: bool,
    /// AAAA addresses first, then A, deduplicated.
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The domain has no records at all (remote-server-not-found).
    #[error("{0}: domain not found")]
    NotFound(String),
    /// SRV target "." (the domain says it does not federate).
    #[error("{0}: the domain offers no XMPP server-to-server service")]
    NoService(String),
    /// No answer in time, or the name servers were unreachable
    /// (remote-server-timeout; worth retrying).
    #[error("{0}: DNS timeout")]
    Timeout(String),
    /// SERVFAIL, REFUSED, a malformed name, and the like.
    #[error("{0}")]
    Other(String),
}

/// An async SRV/A/AAAA resolver with hickory's TTL cache. Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// What one SRV name said.
enum SrvAnswer {
    /// Usable records (target not ".").
    Records(Vec<(u16, u16, u16, String)>),
    /// The name exists with target "." only.
    NoService,
    /// NXDOMAIN or no SRV records.
    Absent,
}

impl Resolver {
    /// `nameservers` empty: the system configuration (`/etc/resolv.conf`).
    /// Otherwise exactly these servers over UDP and TCP, ports honoured.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Resolver, DnsError> {
        Self::with_timeout(nameservers, QUERY_TIMEOUT, QUERY_ATTEMPTS)
    }

    /// [`new`](Self::new) with a different per-query timeout and number of
    /// tries per query (tests, operators on slow links). A name that never
    /// answers costs about `timeout * attempts`.
    pub fn with_timeout(
        nameservers: &[SocketAddr],
        timeout: Duration,
        attempts: usize,
    ) -> Result<Resolver, DnsError> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| DnsError::Other(format!("system DNS configuration: {e}")))?
        } else {
            let servers = nameservers
                .iter()
                .map(|sa| {
                    let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
                    for c in &mut ns.connections {
                        c.port = sa.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = timeout;
        // hickory's `attempts` counts retries after the first try.
        opts.attempts = attempts.saturating_sub(1);
        let inner = builder
            .build()
            .map_err(|e| DnsError::Other(format!("building the DNS resolver: {e}")))?;
        Ok(Resolver { inner })
    }

    /// Where to connect for `domain`, best first; see the module docs.
    pub async fn resolve_s2s(&self, domain: &str) -> Result<Vec<Target>, DnsError> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        if d.is_empty() {
            return Err(DnsError::Other("empty domain".into()));
        }
        // An IP literal is a valid XMPP domainpart and needs no DNS.
        if let Ok(ip) = d
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![Target {
                host: d.clone(),
                port: DEFAULT_S2S_PORT,
                direct_tls: false,
                addrs: vec![SocketAddr::new(ip, DEFAULT_S2S_PORT)],
            }]);
        }
        let (tls_name, plain_name) = (
            format!("_xmpps-server._tcp.{d}."),
            format!("_xmpp-server._tcp.{d}."),
        );
        let (tls, plain) = tokio::join!(self.srv(&tls_name), self.srv(&plain_name));
        let mut records: Vec<(u16, u16, u16, String, bool)> = Vec::new();
        let mut failures = Vec::new();
        let mut no_service = false;
        for (answer, direct_tls) in [(tls, true), (plain, false)] {
            match answer {
                Ok(SrvAnswer::Records(rs)) => records.extend(
                    rs.into_iter()
                        .map(|(p, w, port, host)| (p, w, port, host, direct_tls)),
                ),
                Ok(SrvAnswer::NoService) => no_service = true,
                Ok(SrvAnswer::Absent) => {}
                Err(e) => failures.push(e),
            }
        }
        if records.is_empty() {
            if let Some(e) = failures.into_iter().next() {
                return Err(e);
            }
            if no_service {
                return Err(DnsError::NoService(d));
            }
            let addrs = self.addrs(&d, DEFAULT_S2S_PORT).await?;
            if addrs.is_empty() {
                return Err(DnsError::NotFound(d));
            }
            return Ok(vec![Target {
                host: d,
                port: DEFAULT_S2S_PORT,
                direct_tls: false,
                addrs,
            }]);
        }
        for e in &failures {
            events::dns::SrvLookupFailed {
                domain: &d,
                error: e,
            }
            .emit();
        }
        let ordered = rfc2782_order(records, &mut random_u64);
        let mut set = JoinSet::new();
        for (i, (_, _, port, host, direct_tls)) in ordered.into_iter().enumerate() {
            let me = self.clone();
            set.spawn(async move {
                let addrs = me.addrs(&host, port).await;
                (i, host, port, direct_tls, addrs)
            });
        }
        let mut resolved = Vec::new();
        let mut last_err = None;
        while let Some(joined) = set.join_next().await {
            let Ok((i, host, port, direct_tls, addrs)) = joined else {
                continue;
            };
            match addrs {
                Ok(addrs) if !addrs.is_empty() => resolved.push((
                    i,
                    Target {
                        host,
                        port,
                        direct_tls,
                        addrs,
                    },
                )),
                Ok(_) => events::dns::SrvTargetEmpty { host: &host }.emit(),
                Err(e) => {
                    events::dns::SrvTargetUnresolved {
                        host: &host,
                        error: &e,
                    }
                    .emit();
                    last_err = Some(e);
                }
            }
        }
        resolved.sort_by_key(|(i, _)| *i);
        if resolved.is_empty() {
            return Err(match last_err {
                Some(DnsError::Timeout(m)) => DnsError::Timeout(m),
                _ => {
                    events::dns::NoSrvTargetAddress { domain: &d }.emit();
                    DnsError::NotFound(d)
                }
            });
        }
        Ok(resolved.into_iter().map(|(_, t)| t).collect())
    }

    async fn srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
        let lookup = match self.inner.srv_lookup(name).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() => return Ok(SrvAnswer::Absent),
            Err(e) => return Err(map_err(name, e)),
        };
        let mut records = Vec::new();
        let mut dot = false;
        for r in lookup.answers() {
            if let RData::SRV(s) = &r.data {
                if s.target.is_root() {
                    dot = true;
                } else {
                    let host = s.target.to_ascii();
                    let host = host.trim_end_matches('.').to_ascii_lowercase();
                    records.push((s.priority, s.weight, s.port, host));
                }
            }
        }
        Ok(if !records.is_empty() {
            // RFC 2782 speaks of a *single* "." record; a "." mixed with
            // real targets is a broken zone, and the real targets win.
            SrvAnswer::Records(records)
        } else if dot {
            SrvAnswer::NoService
        } else {
            SrvAnswer::Absent
        })
    }

    /// AAAA then A addresses of `host` with `port`. `Ok(empty)` when the
    /// name has neither; an error only when a query failed.
    async fn addrs(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let (v6, v4) = tokio::join!(
            self.inner.ipv6_lookup(fqdn.as_str()),
            self.inner.ipv4_lookup(fqdn.as_str())
        );
        let mut out: Vec<SocketAddr> = Vec::new();
        let mut err = None;
        for res in [v6, v4] {
            match res {
                Ok(l) => {
                    for r in l.answers() {
                        let ip = match &r.data {
                            RData::AAAA(a) => IpAddr::V6(a.0),
                            RData::A(a) => IpAddr::V4(a.0),
                            _ => continue,
                        };
                        let sa = SocketAddr::new(ip, port);
                        if !out.contains(&sa) {
                            out.push(sa);
                        }
                    }
                }
                Err(e) if e.is_no_records_found() => {}
                Err(e) => err = Some(map_err(host, e)),
            }
        }
        match err {
            // One family answering is enough.
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}

fn map_err(name: &str, e: NetError) -> DnsError {
    let name = name.trim_end_matches('.');
    match e {
        NetError::Timeout => DnsError::Timeout(format!("{name}: no answer in time")),
        NetError::Io(_) | NetError::NoConnections | NetError::Busy => {
            DnsError::Timeout(format!("{name}: name servers unreachable ({e})"))
        }
        e if e.is_nx_domain() => DnsError::NotFound(name.to_string()),
        e => DnsError::Other(format!("{name}: {e}")),
    }
}

/// A random u64 without a `rand` dependency: SipHash under std's randomly
/// keyed `RandomState` over a counter. Good enough for load spreading.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// RFC 2782 ordering of `(priority, weight, …)` records: ascending
/// priority; within a priority, repeatedly pick a record with probability
/// proportional to its weight (weight-0 records first in the running sum,
/// so they are chosen rarely but not never).
fn rfc2782_order<T>(
    mut records: Vec<(u16, u16, u16, String, T)>,
    rng: &mut dyn FnMut() -> u64,
) -> Vec<(u16, u16, u16, String, T)> {
    records.sort_by_key(|r| (r.0, r.1 != 0));
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records;
    while !rest.is_empty() {
        let prio = rest[0].0;
        let n = rest.iter().take_while(|r| r.0 == prio).count();
        let mut group: Vec<_> = rest.drain(..n).collect();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|r| u64::from(r.1)).sum();
            let idx = if total == 0 {
                (rng() % group.len() as u64) as usize
            } else {
                let pick = rng() % (total + 1);
                let mut running = 0u64;
                group
                    .iter()
                    .position(|r| {
                        running += u64::from(r.1);
                        running >= pick
                    })
                    .unwrap_or(group.len() - 1)
            };
            out.push(group.remove(idx));
        }
    }
    out
}

/// RFC 8305 Happy Eyeballs: addresses interleaved IPv6/IPv4 (IPv6 first),
/// a new attempt every [`ATTEMPT_DELAY`] while earlier ones are pending (or
/// at once when one fails), the first connection wins and the rest are
/// dropped. `timeout` bounds the whole thing.
pub async fn connect_happy_eyeballs(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> io::Result<TcpStream> {
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no addresses to connect to",
        ));
    }
    let order = interleave(addrs);
    match tokio::time::timeout(timeout, race(order)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        )),
    }
}

/// IPv6, IPv4, IPv6, … (RFC 8305 §4), keeping the given order per family.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut v6 = addrs.iter().filter(|a| a.is_ipv6()).copied();
    let mut v4 = addrs.iter().filter(|a| a.is_ipv4()).copied();
    let mut out = Vec::with_capacity(addrs.len());
    loop {
        let (a, b) = (v6.next(), v4.next());
        if a.is_none() && b.is_none() {
            return out;
        }
        out.extend(a);
        out.extend(b);
    }
}

async fn race(order: Vec<SocketAddr>) -> io::Result<TcpStream> {
    // Dropping the JoinSet (on success or on the caller's timeout) aborts
    // the attempts still running.
    let mut attempts: JoinSet<io::Result<TcpStream>> = JoinSet::new();
    let mut next = order.into_iter();
    let mut last_err: Option<io::Error> = None;
    if let Some(a) = next.next() {
        attempts.spawn(TcpStream::connect(a));
    }
    loop {
        let delay = tokio::time::sleep(ATTEMPT_DELAY);
        tokio::select! {
            done = attempts.join_next() => match done {
                Some(Ok(Ok(stream))) => return Ok(stream),
                Some(Ok(Err(e))) => {
                    last_err = Some(e);
                    // A failure starts the next attempt at once (§5).
                    if let Some(a) = next.next() {
                        attempts.spawn(TcpStream::connect(a));
                    } else if attempts.is_empty() {
                        break;
                    }
                }
                Some(Err(join)) => last_err = Some(io::Error::other(join)),
                None => match next.next() {
                    Some(a) => { attempts.spawn(TcpStream::connect(a)); }
                    None => break,
                },
            },
            () = delay, if next.len() > 0 => {
                if let Some(a) = next.next() {
                    attempts.spawn(TcpStream::connect(a));
                }
            }
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("every connection attempt failed")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn an_ip_literal_domain_needs_no_dns() {
        let r = Resolver::new(&["127.0.0.1:9".parse().unwrap()]).unwrap();
        let ts = r.resolve_s2s("192.0.2.1").await.unwrap();
        assert_eq!(ts[0].addrs, vec!["192.0.2.1:5269".parse().unwrap()]);
        let ts = r.resolve_s2s("[2001:db8::1]").await.unwrap();
        assert_eq!(ts[0].addrs, vec!["[2001:db8::1]:5269".parse().unwrap()]);
    }

    #[tokio::test]
    async fn a_silent_name_server_is_a_timeout_within_the_configured_bounds() {
        // Bound but never answering, over UDP and TCP.
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let _tcp = TcpListener::bind(addr).await.ok();
        // new() uses 3 s x 2; the same logic, scaled down to keep the test short.
        let r = Resolver::with_timeout(&[addr], Duration::from_millis(500), 2).unwrap();
        let started = std::time::Instant::now();
        let err = r.resolve_s2s("a.test").await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, DnsError::Timeout(_)), "{err:?}");
        // Two tries of 500 ms, both SRV names concurrently.
        assert!(took >= Duration::from_millis(900), "{took:?}");
        assert!(took < Duration::from_millis(1800), "{took:?}");
    }

    #[tokio::test]
    async fn an_unreachable_name_server_is_a_timeout() {
        // Nothing listens on this port: refused at once, not a NotFound.
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let r = Resolver::with_timeout(
            &[SocketAddr::from(([127, 0, 0, 1], port))],
            Duration::from_millis(300),
            1,
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = r.resolve_s2s("a.test").await.unwrap_err();
        assert!(matches!(err, DnsError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// A deterministic "random" sequence.
    fn seq(values: &[u64]) -> impl FnMut() -> u64 + '_ {
        let mut i = 0;
        move || {
            let v = values[i % values.len()];
            i += 1;
            v
        }
    }

    fn rec(p: u16, w: u16, name: &str) -> (u16, u16, u16, String, ()) {
        (p, w, 5269, name.to_string(), ())
    }

    fn names(v: Vec<(u16, u16, u16, String, ())>) -> Vec<String> {
        v.into_iter().map(|r| r.3).collect()
    }

    #[test]
    fn rfc2782_picks_by_running_weight_sum_within_a_priority() {
        let recs = || {
            vec![
                rec(10, 60, "heavy"),
                rec(10, 40, "light"),
                rec(5, 0, "first"),
                rec(20, 0, "last"),
            ]
        };
        // total 100: 0..=60 selects heavy, 61..=100 light.
        assert_eq!(
            names(rfc2782_order(recs(), &mut seq(&[0, 30, 0, 0]))),
            ["first", "heavy", "light", "last"]
        );
        assert_eq!(
            names(rfc2782_order(recs(), &mut seq(&[0, 61, 0, 0]))),
            ["first", "light", "heavy", "last"]
        );
    }

    #[test]
    fn rfc2782_weights_shape_the_first_choice() {
        let mut heavy_first = 0;
        for _ in 0..2000 {
            let order = rfc2782_order(
                vec![rec(0, 90, "heavy"), rec(0, 10, "light")],
                &mut random_u64,
            );
            if order[0].3 == "heavy" {
                heavy_first += 1;
            }
        }
        assert!((1650..=1950).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn zero_weight_records_are_rarely_first_but_not_never() {
        let mut zero_first = 0;
        for _ in 0..2000 {
            let order = rfc2782_order(
                vec![rec(0, 100, "weighted"), rec(0, 0, "zero")],
                &mut random_u64,
            );
            if order[0].3 == "zero" {
                zero_first += 1;
            }
        }
        assert!(zero_first < 100, "{zero_first}");
    }

    #[test]
    fn addresses_are_interleaved_ipv6_first() {
        let a: Vec<SocketAddr> = ["1.1.1.1:1", "2.2.2.2:1", "[::1]:1", "[::2]:1", "3.3.3.3:1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<String> = interleave(&a).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            got,
            ["[::1]:1", "1.1.1.1:1", "[::2]:1", "2.2.2.2:1", "3.3.3.3:1"]
        );
    }

    #[tokio::test]
    async fn happy_eyeballs_moves_on_when_the_first_address_refuses() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_addr = open.local_addr().unwrap();
        let s = connect_happy_eyeballs(&[closed, open_addr], Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(s.peer_addr().unwrap(), open_addr);
    }

    #[tokio::test]
    async fn happy_eyeballs_reports_the_failure_when_nothing_listens() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = connect_happy_eyeballs(&[closed], Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let err = connect_happy_eyeballs(&[], Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// A listener whose accept queue is full, so that further SYNs are
    /// dropped and a connect to it hangs (Linux behaviour). Keep all three
    /// alive for the test.
    async fn stalled_listener() -> (TcpListener, Vec<TcpStream>, SocketAddr) {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        let listener = sock.listen(0).unwrap();
        let mut fill = Vec::new();
        // Backlog 0 admits one queued connection; queue until one hangs.
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fill.push(s),
                _ => break,
            }
        }
        (listener, fill, addr)
    }

    #[tokio::test]
    async fn happy_eyeballs_starts_the_next_attempt_after_250_ms_when_one_hangs() {
        let (_s, _fill, stalled) = stalled_listener().await;
        let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_addr = open.local_addr().unwrap();
        let started = std::time::Instant::now();
        let s = connect_happy_eyeballs(&[stalled, open_addr], Duration::from_secs(5))
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(s.peer_addr().unwrap(), open_addr);
        assert!(took >= Duration::from_millis(240), "{took:?}");
        // Far below the stalled SYN's own retry timers (1 s, 3 s, ...).
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn happy_eyeballs_gives_up_at_the_overall_timeout() {
        let (_s, _fill, stalled) = stalled_listener().await;
        let started = std::time::Instant::now();
        let err = connect_happy_eyeballs(&[stalled], Duration::from_millis(400))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
