//! Our remote domains `r1.<suffix>` … `rN.<suffix>`: one listener that
//! accepts the target's outbound s2s streams for all of them (answering
//! its dialback verifications), optional DNS answers that send the target
//! there, and one outbound s2s stream per domain into the target.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fedrouter::stream::s2s::{Negotiate, PeerPolicy};
use fedrouter::xml::Stanza;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use testkit::ca::{LeafOptions, TestCa};
use testkit::dns::TestDns;
use testkit::s2s::{
    ListenerConfig, LoadOptions, PeerConfig, S2sListener, S2sPeer, random_secret, server_tls,
};

use crate::args::{Auth, Target};
use crate::conn::{self, IoStats, Stream};

/// Receives every stanza the target sends to any of our domains.
pub type Sink = Arc<dyn Fn(Stanza) + Send + Sync>;

/// The name of remote domain `i` (0-based).
pub fn domain_name(suffix: &str, i: usize) -> String {
    format!("r{}.{suffix}", i + 1)
}

/// The certificate our domains present: one leaf for `*.<suffix>`, from a
/// CA the target trusts when SASL EXTERNAL is wanted. Valid 30 days and
/// without xmppAddr SANs (ejabberd 23.01 fails on either).
pub struct Material {
    pub ca_pem: String,
    pub leaf: Arc<CertifiedKey>,
}

impl Material {
    pub fn generate(suffix: &str) -> (Material, String) {
        let ca = TestCa::new("loadtest CA");
        let leaf = ca.issue_with(LeafOptions {
            dns_names: vec![format!("*.{suffix}"), suffix.to_string()],
            xmpp_addrs: vec![],
            valid_days: Some(30),
            ..LeafOptions::default()
        });
        let m = Material {
            ca_pem: ca.cert_pem(),
            leaf: leaf.certified_key(),
        };
        (m, leaf.combined_pem())
    }

    /// Writes `ca.pem` and `leaf.pem` (certificate and key) into `dir`.
    pub fn write_new(dir: &Path, suffix: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let (m, leaf_pem) = Material::generate(suffix);
        std::fs::write(dir.join("ca.pem"), &m.ca_pem)?;
        std::fs::write(dir.join("leaf.pem"), leaf_pem)?;
        Ok(())
    }

    pub fn load(dir: &Path) -> anyhow::Result<Material> {
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem"))
            .with_context(|| format!("read {}/ca.pem", dir.display()))?;
        let leaf_path = dir.join("leaf.pem");
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf_path)
            .with_context(|| format!("read {}", leaf_path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("certificates in {}", leaf_path.display()))?;
        let key = PrivateKeyDer::from_pem_file(&leaf_path)
            .with_context(|| format!("private key in {}", leaf_path.display()))?;
        let signing = fedrouter::tls::provider()
            .key_provider
            .load_private_key(key)
            .context("unsupported private key")?;
        Ok(Material {
            ca_pem,
            leaf: Arc::new(CertifiedKey::new(certs, signing)),
        })
    }
}

pub struct Remote {
    pub names: Vec<String>,
    target: Target,
    listener: S2sListener,
    _dns: Option<TestDns>,
    secret: Arc<[u8]>,
    material: Material,
    pub stats: Arc<IoStats>,
}

impl Remote {
    /// Starts the listener (and DNS) for `domains` remote domains.
    pub async fn start(target: &Target, domains: usize, sink: Sink) -> anyhow::Result<Remote> {
        check_loopback(target.s2s_listen.ip(), "--s2s-listen")?;
        check_loopback(target.s2s.ip(), "--s2s")?;
        let material = match &target.ca_dir {
            Some(dir) => Material::load(dir)?,
            None => Material::generate(&target.remote_suffix).0,
        };
        let secret = random_secret();
        let names: Vec<String> = (0..domains)
            .map(|i| domain_name(&target.remote_suffix, i))
            .collect();
        let listener = S2sListener::start(ListenerConfig {
            domain: names.first().cloned().unwrap_or_default(),
            secret: secret.clone(),
            server_tls: server_tls(material.leaf.clone(), None),
            verifier: None,
            policy: PeerPolicy::open_federation(),
            timeout: Duration::from_secs(30),
            load: LoadOptions {
                bind: Some(target.s2s_listen),
                domain_suffix: Some(target.remote_suffix.clone()),
                trust_dialback: true,
                no_stream_management: false,
                sink: Some(sink),
            },
        })
        .await
        .with_context(|| format!("listen for s2s on {}", target.s2s_listen))?;
        let dns = match target.dns_listen {
            None => None,
            Some(addr) => {
                check_loopback(addr.ip(), "--dns-listen")?;
                let dns = TestDns::start(addr)
                    .await
                    .with_context(|| format!("serve DNS on {addr}"))?;
                let host = format!("s2s.{}", target.remote_suffix);
                let IpAddr::V4(ip) = listener.addr().ip() else {
                    bail!("--s2s-listen must be an IPv4 address when serving DNS");
                };
                dns.add_a(&host, ip);
                for n in &names {
                    dns.add_srv(
                        &format!("_xmpp-server._tcp.{n}"),
                        0,
                        0,
                        listener.addr().port(),
                        &host,
                    );
                    dns.add_a(n, ip);
                }
                Some(dns)
            }
        };
        Ok(Remote {
            names,
            target: target.clone(),
            listener,
            _dns: dns,
            secret,
            material,
            stats: Arc::new(IoStats::default()),
        })
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// Negotiates an outbound stream from domain `i` into the target
    /// (STARTTLS, then dialback or SASL EXTERNAL), and starts its tasks.
    /// What the target sends on it (errors, mostly) goes to `on_stanza`.
    pub async fn connect(
        &self,
        i: usize,
        on_stanza: impl FnMut(Stanza) + Send + 'static,
    ) -> anyhow::Result<Stream> {
        let peer = self.negotiate(i).await?;
        let (io, framer) = peer.into_parts();
        Ok(conn::spawn(io, framer, self.stats.clone(), on_stanza))
    }

    async fn negotiate(&self, i: usize) -> anyhow::Result<S2sPeer> {
        let mut cfg = PeerConfig::new(self.target.s2s, &self.names[i], &self.target.domain);
        cfg.secret = self.secret.clone();
        cfg.timeout = Duration::from_secs(60);
        match self.target.auth {
            Auth::Dialback => {}
            Auth::External => {
                cfg.cert = Some(self.material.leaf.clone());
                cfg.policy = PeerPolicy {
                    tls: Negotiate::Required,
                    sasl: Negotiate::Required,
                    dialback: false,
                };
            }
        }
        S2sPeer::connect(&cfg)
            .await
            .map_err(|e| anyhow::anyhow!("{}: s2s to {}: {e}", self.names[i], self.target.s2s))
    }
}

/// Everything stays on loopback.
pub fn check_loopback(ip: IpAddr, what: &str) -> anyhow::Result<()> {
    let ok = match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    };
    if !ok {
        bail!("{what} {ip}: loadtest only targets loopback (127.0.0.0/8, ::1)");
    }
    Ok(())
}

/// The first loopback address, for defaults.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
