//! Real XMPP servers (Debian's Prosody 0.12 and ejabberd 23.01) as isolated,
//! per-test federation peers on loopback, plus the DNS and certificates they
//! need. Use from an integration test with `mod peers;`.
//!
//! Requirements: root (the servers run as their own system users through
//! `setpriv`, and ejabberd in a private mount namespace), and the packages
//! from `tests/install-peers.sh` (run by `tests/run.sh`). Nothing of the
//! system is changed: every file lives in a temporary directory per peer.
//!
//! # API
//! - [`PeerCerts`] (`certs.rs`): a private test CA. `PeerCerts::new()`,
//!   `.issue(domain) -> CertPair` (SANs `DNS:d`, `DNS:*.d`, xmppAddr `d`; EKU
//!   serverAuth+clientAuth), `PeerCerts::self_signed(domain)`, `.ca_pem`,
//!   `.ca_der` (for `TlsTrust::Roots`).
//! - [`Dns`] (`dns.rs`): `Dns::start(dir, listen, &[Record])` runs dnsmasq on
//!   `listen` (UDP+TCP) answering only `Record::Srv`/`Record::A` (helpers
//!   `Record::xmpp_server(domain, target, port)`, `Record::a(name, ip)`);
//!   everything else under `.test` is NXDOMAIN. `.log()` shows every query.
//! - [`Prosody`] (`prosody.rs`): `ProsodyOpts::new(domain, ip, dns, cert)`
//!   (free ports picked on `ip`; fields `trust_ca`, `secure_auth`, `c2s_port`,
//!   `s2s_port`, `extra_config`, `extra_modules`, `log_level` can be
//!   changed), `Prosody::start(opts).await` (returns once c2s and s2s
//!   accept), `.register(user, pw)`, `.register_many(&[(user, pw)])` (one
//!   `prosodyctl shell` for all), `.c2s_addr()`,
//!   `.s2s_addr()`, `.log()`, `.stop()`, `.restart().await`; stopped on Drop.
//! - [`Ejabberd`] (`ejabberd.rs`): the same shape with `EjabberdOpts` (plus
//!   `hosts`: the names its libc resolver must find, normally
//!   `dns.a_records()`; `max_user_sessions`; `register_many` through one
//!   XEP-0227 file and `ejabberdctl import_piefxis`). No traffic shapers.
//! - Helpers here: [`free_port`], [`free_dns_addr`], [`connect`] (a
//!   `testkit::client::Client` that picks the best SASL mechanism the
//!   server offers), [`peer_dir`].
//!
//! Set `PEERS_KEEP=1` to keep the temporary directories (configs, logs) of
//! a run for inspection; their paths are printed.
//!
//! # Facts that matter (found the hard way)
//! - Each peer gets its own loopback address *and* free ports, so tests can
//!   run in parallel; the SRV records carry the ports.
//! - Certificates (`certs.rs`): validity must stay under ~49 days or
//!   ejabberd 23.01's `pkix` crashes (Erlang timer overflow) and its c2s then
//!   refuses STARTTLS; and an `xmppAddr` SAN in an s2s initiator's
//!   certificate crashes ejabberd's `ejabberd_s2s_in`
//!   (`xmpp_stream_pkix:get_cert_domains/1`, badarg in `'++'`). Whoever
//!   replaces this CA with `testkit::ca::TestCa` must keep both.
//! - Prosody (`prosody.rs`): unbound `forward` + `local-zone`, runs as
//!   `prosody`, absolute config path, `s2s_secure_auth`; it only delivers
//!   subscription requests and roster pushes to resources that fetched the
//!   roster, so clients do a roster get before their initial presence.
//! - ejabberd (`ejabberd.rs`): `ejabberdctl foreground` does not `exec`
//!   erl, so the pid we spawn is a bash whose child is beam.smp, and
//!   `erl_child_setup` makes its own session: stop = SIGTERM to the group and
//!   all descendants; epmd-less distribution with `ERL_DIST_PORT`; in the
//!   `inetrc`, `{nameserver,…}` must come after `{resolv_conf, ""}` and
//!   `localhost` must be named, or ejabberdctl cannot reach the node.
//!   With `{lookup, [file, dns]}` ejabberd asks the test DNS for everything
//!   (the A record of an SRV target comes in the answer's additional
//!   section); the private /etc/hosts under `unshare` only backs up libc.
//! - c2s SASL: Prosody 0.12 (internal_hashed) offers SCRAM-SHA-1 and PLAIN,
//!   ejabberd 23.01 (scram storage) SCRAM-SHA-1 and PLAIN; [`connect`] copes.
//! - Evidence of the s2s authentication used: ejabberd logs one line per
//!   direction, `Accepted inbound s2s EXTERNAL authentication p.test ->
//!   e.test` / `Accepted outbound s2s dialback authentication e.test ->
//!   p.test`; Prosody logs `SASL EXTERNAL with e.test succeeded` or `SASL
//!   EXTERNAL failed, falling back to dialback`.
//! - Costs: dnsmasq starts in ~10 ms, Prosody in ~0.3 s, ejabberd in ~1.2 s
//!   (first start creates its Mnesia tables); `ejabberdctl register` ~0.5 s;
//!   `register_many` a few seconds for any number; stop ~0.1–0.5 s each. tests/peer_harness.rs runs both modes in ~6–8 s.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod dns;
pub mod ejabberd;
pub mod proc;
pub mod prosody;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedrouter::stream::scram::ScramHash;
use testkit::client::{Client, ClientConfig, ClientError, Mechanism, TlsTrust};

pub use certs::{CertPair, PeerCerts};
pub use dns::{Dns, Record};
pub use ejabberd::{Ejabberd, EjabberdOpts};
pub use prosody::{Prosody, ProsodyOpts};

/// A TCP port free on `ip` right now.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// An address on `ip` whose port is free for both UDP and TCP (for DNS).
pub fn free_dns_addr(ip: Ipv4Addr) -> SocketAddr {
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).expect("bind udp");
        let addr = udp.local_addr().expect("udp addr");
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// A temporary directory for one peer, owned by `owner` (a system user, or
/// None to leave it to root), world-traversable.
pub fn peer_dir(prefix: &str, owner: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    set_mode(dir.path(), 0o755);
    if let Some(user) = owner {
        chown_r(dir.path(), user);
    }
    dir
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// `chown -R user:user path`.
pub(crate) fn chown_r(path: &Path, user: &str) {
    let mut cmd = std::process::Command::new("chown");
    cmd.arg("-R").arg(format!("{user}:{user}")).arg(path);
    proc::run_checked("chown", cmd, Duration::from_secs(10));
}

/// Writes `text` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// Keeps the directory if `PEERS_KEEP` is set (prints where).
pub fn maybe_keep(dir: &mut tempfile::TempDir, what: &str) {
    if std::env::var_os("PEERS_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("{what}: keeping {}", dir.path().display());
    }
}

pub(crate) fn must_be_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the peer servers need root (setpriv to their users, unshare --mount)"
    );
}

/// Signs in to a peer's c2s with `testkit::client::Client`, trusting
/// `ca_der` (or anything, if None), with the best mechanism the server
/// offers: SCRAM-SHA-256, then SCRAM-SHA-1 (what Prosody 0.12 and ejabberd
/// 23.01 offer with hashed password storage), then PLAIN.
pub async fn connect(
    addr: SocketAddr,
    jid: &str,
    password: &str,
    ca_der: Option<&rustls::pki_types::CertificateDer<'static>>,
) -> Client {
    let mut last = None;
    for mech in [
        Mechanism::Scram(ScramHash::Sha256),
        Mechanism::Scram(ScramHash::Sha1),
        Mechanism::Plain,
    ] {
        let mut cfg = ClientConfig::new(addr, jid, password);
        cfg.trust = match ca_der {
            Some(der) => TlsTrust::Roots(vec![der.clone()]),
            None => TlsTrust::Insecure,
        };
        cfg.mechanism = mech;
        cfg.timeout = Duration::from_secs(15);
        match Client::connect(&cfg).await {
            Ok(c) => return c,
            Err(ClientError::Auth(m)) if m.contains("not offered") => last = Some(m),
            Err(e) => panic!("{jid} could not sign in at {addr} with {mech:?}: {e}"),
        }
    }
    panic!("{jid} at {addr}: no usable mechanism ({last:?})");
}

/// `ip` as an `IpAddr` socket address.
pub fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}
