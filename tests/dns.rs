//! SRV resolution (`fedrouter::dns::Resolver::resolve_s2s`) against a real
//! name server on loopback (`testkit::dns::TestDns`): priority order,
//! XEP-0368 direct TLS records, the A/AAAA fallback, "." targets and failed
//! queries. The resolver's pure parts (RFC 2782 weighting, Happy Eyeballs,
//! timeouts) keep their unit tests in `src/dns.rs`.

use std::net::{Ipv4Addr, Ipv6Addr};

use fedrouter::dns::{DnsError, Resolver, Target};
use testkit::dns::TestDns;

async fn setup() -> (TestDns, Resolver) {
    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let r = Resolver::new(&[dns.addr()]).unwrap();
    (dns, r)
}

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, last)
}

fn summary(ts: &[Target]) -> Vec<(String, u16, bool)> {
    ts.iter()
        .map(|t| (t.host.clone(), t.port, t.direct_tls))
        .collect()
}

#[tokio::test]
async fn srv_targets_come_in_priority_order_with_their_addresses() {
    let (dns, r) = setup().await;
    dns.add_srv("_xmpp-server._tcp.a.test", 20, 0, 5300, "late.a.test");
    dns.add_srv("_xmpp-server._tcp.a.test", 10, 5, 5269, "early.a.test");
    dns.add_a("late.a.test", v4(2));
    dns.add_a("early.a.test", v4(1));
    dns.add_aaaa(
        "early.a.test",
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    );
    let ts = r.resolve_s2s("a.test").await.unwrap();
    assert_eq!(
        summary(&ts),
        vec![
            ("early.a.test".into(), 5269, false),
            ("late.a.test".into(), 5300, false)
        ]
    );
    assert_eq!(
        ts[0].addrs,
        vec![
            "[2001:db8::1]:5269".parse().unwrap(),
            "192.0.2.1:5269".parse().unwrap()
        ]
    );
    assert_eq!(ts[1].addrs, vec!["192.0.2.2:5300".parse().unwrap()]);
}

#[tokio::test]
async fn xmpps_and_xmpp_records_are_merged_by_priority() {
    let (dns, r) = setup().await;
    dns.add_srv("_xmpps-server._tcp.a.test", 5, 0, 5270, "tls.a.test");
    dns.add_srv("_xmpps-server._tcp.a.test", 30, 0, 443, "backup.a.test");
    dns.add_srv("_xmpp-server._tcp.a.test", 10, 0, 5269, "plain.a.test");
    for (host, i) in [("tls.a.test", 1), ("backup.a.test", 2), ("plain.a.test", 3)] {
        dns.add_a(host, v4(i));
    }
    let ts = r.resolve_s2s("A.test.").await.unwrap();
    assert_eq!(
        summary(&ts),
        vec![
            ("tls.a.test".into(), 5270, true),
            ("plain.a.test".into(), 5269, false),
            ("backup.a.test".into(), 443, true),
        ]
    );
}

#[tokio::test]
async fn without_srv_records_the_domain_itself_is_used_on_5269_with_starttls() {
    let (dns, r) = setup().await;
    dns.add_a("a.test", v4(7));
    let ts = r.resolve_s2s("a.test").await.unwrap();
    assert_eq!(
        ts,
        vec![Target {
            host: "a.test".into(),
            port: 5269,
            direct_tls: false,
            addrs: vec!["192.0.2.7:5269".parse().unwrap()],
        }]
    );
}

#[tokio::test]
async fn a_dot_target_means_no_service_and_no_fallback() {
    let (dns, r) = setup().await;
    dns.add_srv("_xmpp-server._tcp.a.test", 0, 0, 0, ".");
    dns.add_a("a.test", v4(7));
    assert_eq!(
        r.resolve_s2s("a.test").await,
        Err(DnsError::NoService("a.test".into()))
    );
    // "." on the direct-TLS name only rules out direct TLS ...
    dns.add_srv("_xmpps-server._tcp.b.test", 0, 0, 0, ".");
    dns.add_srv("_xmpp-server._tcp.b.test", 0, 0, 5269, "xmpp.b.test");
    dns.add_a("xmpp.b.test", v4(8));
    let ts = r.resolve_s2s("b.test").await.unwrap();
    assert_eq!(summary(&ts), vec![("xmpp.b.test".into(), 5269, false)]);
    // ... but still forbids the A fallback (XEP-0368 §5).
    dns.add_srv("_xmpps-server._tcp.c.test", 0, 0, 0, ".");
    dns.add_a("c.test", v4(9));
    assert_eq!(
        r.resolve_s2s("c.test").await,
        Err(DnsError::NoService("c.test".into()))
    );
}

#[tokio::test]
async fn an_unknown_domain_is_not_found() {
    let (_dns, r) = setup().await;
    assert_eq!(
        r.resolve_s2s("nowhere.test").await,
        Err(DnsError::NotFound("nowhere.test".into()))
    );
}

#[tokio::test]
async fn srv_targets_without_addresses_are_skipped_and_none_at_all_is_not_found() {
    let (dns, r) = setup().await;
    dns.add_srv("_xmpp-server._tcp.a.test", 0, 0, 5269, "gone.a.test");
    dns.add_srv("_xmpp-server._tcp.a.test", 1, 0, 5269, "here.a.test");
    dns.add_a("here.a.test", v4(1));
    let ts = r.resolve_s2s("a.test").await.unwrap();
    assert_eq!(summary(&ts), vec![("here.a.test".into(), 5269, false)]);
    dns.add_srv("_xmpp-server._tcp.b.test", 0, 0, 5269, "gone.b.test");
    assert_eq!(
        r.resolve_s2s("b.test").await,
        Err(DnsError::NotFound("b.test".into()))
    );
}

#[tokio::test]
async fn a_failed_srv_query_is_an_error_not_a_fallback() {
    let (dns, r) = setup().await;
    dns.add_servfail("_xmpp-server._tcp.a.test");
    dns.add_a("a.test", v4(7));
    let err = r.resolve_s2s("a.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Other(_)), "{err:?}");
}

#[tokio::test]
async fn one_failed_srv_query_does_not_hide_the_other_names_records() {
    let (dns, r) = setup().await;
    dns.add_servfail("_xmpps-server._tcp.a.test");
    dns.add_srv("_xmpp-server._tcp.a.test", 0, 0, 5269, "xmpp.a.test");
    dns.add_a("xmpp.a.test", v4(1));
    let ts = r.resolve_s2s("a.test").await.unwrap();
    assert_eq!(summary(&ts), vec![("xmpp.a.test".into(), 5269, false)]);
}
