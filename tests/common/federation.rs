//! Two real fedrouter daemons, a.test and b.test, federating on loopback:
//! found through a test DNS server, with CA-signed certificates (SASL
//! EXTERNAL) or self-signed ones (dialback).

use std::net::Ipv4Addr;

use testkit::ca::{TestCa, self_signed};
use testkit::dns::TestDns;
use testkit::proxy::CutProxy;

use super::{FEDERATION_ALLOWED, TestServer};

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    /// CA-signed certificates, trusted on both sides.
    SaslExternal,
    /// Self-signed certificates nobody trusts.
    Dialback,
}

pub struct Federation {
    pub dns: TestDns,
    pub a: TestServer,
    pub b: TestServer,
    /// With [`federation_via_proxy`]: what a.test reaches b.test through.
    pub proxy: Option<CutProxy>,
    _dir: tempfile::TempDir,
}

pub async fn federation(mode: Mode, gateway: &str) -> Federation {
    federation_with(mode, gateway, false).await
}

/// a.test reaches b.test's STARTTLS listener only through a [`CutProxy`]
/// (b.test's SRV record names the proxy's port); b.test reaches a.test
/// directly.
pub async fn federation_via_proxy(mode: Mode, gateway: &str) -> Federation {
    build(mode, gateway, false, true, "").await
}

/// `b_s2s` goes into b.test's `[s2s]` only; `proxied` as
/// [`federation_via_proxy`].
pub async fn federation_custom(
    mode: Mode,
    gateway: &str,
    b_s2s: &str,
    proxied: bool,
) -> Federation {
    build(mode, gateway, false, proxied, b_s2s).await
}

/// `direct_tls`: each server is published only as `_xmpps-server` (XEP-0368)
/// pointing at its Direct TLS listener.
pub async fn federation_with(mode: Mode, gateway: &str, direct_tls: bool) -> Federation {
    build(mode, gateway, direct_tls, false, "").await
}

async fn build(
    mode: Mode,
    gateway: &str,
    direct_tls: bool,
    proxied: bool,
    b_s2s: &str,
) -> Federation {
    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("test DNS");
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("fedrouter test CA");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let mut servers = Vec::new();
    for d in ["a.test", "b.test"] {
        let leaf = match mode {
            Mode::SaslExternal => ca.issue(&[d]),
            Mode::Dialback => self_signed(&[d]),
        };
        let (cert, key) = leaf.write(dir.path(), d);
        let trust = match mode {
            Mode::SaslExternal => format!("[tls]\nca_file = \"{}\"\n", ca_path.display()),
            Mode::Dialback => "[tls]\n".to_string(),
        };
        let extra = format!(
            "{trust}[[tls.certificate]]\ndomain = \"{d}\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [s2s]\nlisten = [\"127.0.0.1:0\"]\ndirect_tls_listen = [\"127.0.0.1:0\"]\ndns_nameservers = [\"{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
             unlisted_domains = \"allow\"\n{}{FEDERATION_ALLOWED}{gateway}",
            cert.display(),
            key.display(),
            dns.addr(),
            if d == "b.test" { b_s2s } else { "" },
        );
        servers.push(TestServer::start_domain(d, "", &extra).await);
    }
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    let proxy = match proxied {
        true => Some(CutProxy::start(b.daemon.s2s_addrs[0]).await.expect("proxy")),
        false => None,
    };
    for s in [&a, &b] {
        let host = format!("xmpp.{}", s.domain);
        let (service, port) = if direct_tls {
            ("_xmpps-server", s.daemon.s2s_direct_tls_addrs[0].port())
        } else {
            match (&proxy, s.domain == "b.test") {
                (Some(p), true) => ("_xmpp-server", p.addr().port()),
                _ => ("_xmpp-server", s.daemon.s2s_addrs[0].port()),
            }
        };
        dns.add_srv(&format!("{service}._tcp.{}", s.domain), 10, 5, port, &host);
        dns.add_a(&host, Ipv4Addr::LOCALHOST);
    }
    Federation {
        dns,
        a,
        b,
        proxy,
        _dir: dir,
    }
}
