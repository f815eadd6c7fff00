//! The three servers under comparison, started on loopback with equivalent
//! configurations and provisioned through their own tools.
//!
//! What "equivalent" means here (the README's comparison section repeats
//! it): STARTTLS required on c2s and s2s with a leaf from one test CA;
//! SCRAM for clients (each server's best: fedrouter SCRAM-SHA-256, Prosody
//! and ejabberd SCRAM-SHA-1); s2s with dialback allowed and no certificate
//! verification required for the load generator's domains, whose names
//! come from the load generator's DNS; no traffic shapers or rate limits
//! (ejabberd's `c2s_shaper`/`s2s_shaper` pinned to `none`, no session cap;
//! Prosody without mod_limits); offline storage on in all three (fedrouter
//! always has it; mod_offline in the others) and no archive, carbons or
//! CSI anywhere; logging at `info`.
//!
//! Prosody and ejabberd come from the integration tests' harness
//! (`tests/peers/`); fedrouter runs as the release binary, as an operator
//! would run it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::peers::proc::{PeerProcess, run_checked, tail};
use crate::peers::{self, Ejabberd, EjabberdOpts, PeerCerts, Prosody, ProsodyOpts};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Fedrouter,
    Prosody,
    Ejabberd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fedrouter => "fedrouter",
            Kind::Prosody => "prosody",
            Kind::Ejabberd => "ejabberd",
        }
    }

    /// The server's own XMPP domain (its local users live there).
    pub fn domain(self) -> String {
        format!("{}.test", self.name())
    }

    /// Each server on its own loopback address, so one's lingering
    /// connections never meet the next one's ports.
    fn ip(self) -> Ipv4Addr {
        match self {
            Kind::Fedrouter => Ipv4Addr::new(127, 0, 10, 1),
            Kind::Prosody => Ipv4Addr::new(127, 0, 10, 2),
            Kind::Ejabberd => Ipv4Addr::new(127, 0, 10, 3),
        }
    }

    /// The version under test, for the table's header.
    pub fn version(self, fedrouter_bin: &Path) -> String {
        let out = match self {
            Kind::Fedrouter => Command::new(fedrouter_bin).arg("--version").output(),
            Kind::Prosody | Kind::Ejabberd => Command::new("dpkg-query")
                .args(["-W", "-f", "${Version}", self.name()])
                .output(),
        };
        out.ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "?".into())
    }
}

/// What every server is configured against: the load generator's side.
pub struct Env {
    pub certs: PeerCerts,
    /// Where the load generator serves DNS (SRV and A for its domains).
    pub dns: SocketAddr,
    /// Where the load generator accepts the servers' outbound s2s.
    pub s2s_listen: SocketAddr,
    /// The load generator's domains are `r1.<suffix>` … `r<max_domains>.<suffix>`.
    pub remote_suffix: String,
    pub max_domains: usize,
    pub fedrouter_bin: PathBuf,
}

impl Env {
    /// The names the load generator's DNS answers with A records (for
    /// ejabberd's private /etc/hosts, which backs up its libc lookups).
    fn hosts(&self) -> Vec<(String, Ipv4Addr)> {
        let std::net::IpAddr::V4(ip) = self.s2s_listen.ip() else {
            panic!("--s2s-listen must be IPv4");
        };
        let mut h = vec![(format!("s2s.{}", self.remote_suffix), ip)];
        h.extend((1..=self.max_domains).map(|n| (format!("r{n}.{}", self.remote_suffix), ip)));
        h
    }
}

/// A running server.
pub enum Server {
    Fedrouter(Box<Fedrouter>),
    Prosody(Box<Prosody>),
    Ejabberd(Box<Ejabberd>),
}

impl Server {
    /// Starts `kind` and returns once its c2s and s2s listeners accept.
    /// Panics (with the server's log) if it does not come up.
    pub async fn start(kind: Kind, env: &Env) -> Server {
        let domain = kind.domain();
        let cert = env.certs.issue(&domain);
        match kind {
            Kind::Fedrouter => Server::Fedrouter(Box::new(Fedrouter::start(env, cert).await)),
            Kind::Prosody => {
                let mut o = ProsodyOpts::new(&domain, kind.ip(), env.dns, cert);
                // Dialback allowed, the load generator's certificates unchecked.
                o.secure_auth = false;
                o.log_level = "info".into();
                o.extra_modules = vec!["offline".into()];
                o.extra_config = "network_backend = \"epoll\"\n".into();
                Server::Prosody(Box::new(Prosody::start(o).await))
            }
            Kind::Ejabberd => {
                let mut o =
                    EjabberdOpts::new(&domain, kind.ip(), env.dns, env.hosts(), cert.clone());
                o.secure_auth = false;
                o.max_user_sessions = None;
                Server::Ejabberd(Box::new(Ejabberd::start(o).await))
            }
        }
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        match self {
            Server::Fedrouter(f) => f.c2s,
            Server::Prosody(p) => p.c2s_addr(),
            Server::Ejabberd(e) => e.c2s_addr(),
        }
    }

    pub fn s2s_addr(&self) -> SocketAddr {
        match self {
            Server::Fedrouter(f) => f.s2s,
            Server::Prosody(p) => p.s2s_addr(),
            Server::Ejabberd(e) => e.s2s_addr(),
        }
    }

    /// The process whose RSS and CPU the load generator samples.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Server::Fedrouter(f) => f.proc.pid(),
            Server::Prosody(p) => p.pid(),
            Server::Ejabberd(e) => e.vm_pid(),
        }
    }

    /// Creates `users` (name, password) in the server's domain through the
    /// server's own bulk path: `fedrouter user import`, `prosodyctl shell`,
    /// `ejabberdctl import_piefxis`.
    pub fn provision(&self, users: &[(String, String)]) {
        match self {
            Server::Fedrouter(f) => f.import(users),
            Server::Prosody(p) => p.register_many(users),
            Server::Ejabberd(e) => e.register_many(users),
        }
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        match self {
            Server::Fedrouter(f) => tail(&f.proc.log(), lines),
            Server::Prosody(p) => tail(&p.log(), lines),
            Server::Ejabberd(e) => tail(&e.log(), lines),
        }
    }

    /// Stops the server (bounded; SIGKILL after a grace period).
    pub fn stop(&mut self) {
        match self {
            Server::Fedrouter(f) => f.proc.stop(),
            Server::Prosody(p) => p.stop(),
            Server::Ejabberd(e) => e.stop(),
        }
    }
}

/// `fedrouter run` from the release build, with its configuration, store
/// and log in a temporary directory. Stopped on drop.
pub struct Fedrouter {
    proc: PeerProcess,
    config: PathBuf,
    bin: PathBuf,
    c2s: SocketAddr,
    s2s: SocketAddr,
    dir: tempfile::TempDir,
}

impl Fedrouter {
    async fn start(env: &Env, cert: peers::CertPair) -> Fedrouter {
        let kind = Kind::Fedrouter;
        let domain = kind.domain();
        let mut dir = peers::peer_dir("compare-fedrouter-", None);
        peers::maybe_keep(&mut dir, "fedrouter");
        let d = dir.path();
        std::fs::write(d.join("cert.pem"), &cert.cert_pem).expect("write cert");
        std::fs::write(d.join("key.pem"), &cert.key_pem).expect("write key");
        let c2s = peers::sock(kind.ip(), peers::free_port(kind.ip()));
        let s2s = peers::sock(kind.ip(), peers::free_port(kind.ip()));
        // Unlisted domains allowed as `federated`: the load generator's
        // contacts are on nobody's roster, and this is the partner type under
        // which their subscription requests and messages get through, as
        // they do on Prosody and ejabberd by default.
        let text = format!(
            r#"# generated by loadtest/src/bin/compare
[server]
domains = ["{domain}"]
data_dir = "data"

[[tls.certificate]]
domain = "{domain}"
cert = "cert.pem"
key = "key.pem"

[c2s]
listen = ["{c2s}"]
require_tls = true
# Every simulated client comes from loopback.
connection_limit = 1000000
connection_limit_per_ip = 1000000

[s2s]
listen = ["{s2s}"]
dns_nameservers = ["{dns}"]
allow_private_targets = ["127.0.0.0/8"]
unlisted_domains = "allow"
unlisted_partner_type = "federated"
max_unauthenticated = 100000
max_unauthenticated_per_ip = 100000

[[access_policy]]
name = "global"
enable_federation_access = true
enable_xmpp_access = true

[metrics]
listen = ""

[log]
level = "info"
"#,
            dns = env.dns,
        );
        let config = d.join("fedrouter.toml");
        std::fs::write(&config, text).expect("write fedrouter.toml");
        let mut cmd = Command::new(&env.fedrouter_bin);
        cmd.arg("--config")
            .arg(&config)
            .arg("run")
            .env_remove("FEDROUTER_CONFIG")
            .env_remove("RUST_LOG")
            .current_dir(d);
        let mut proc = PeerProcess::spawn("fedrouter", cmd, &d.join("fedrouter.log"));
        proc.wait_accepting(c2s, Duration::from_secs(30), String::new)
            .await;
        proc.wait_accepting(s2s, Duration::from_secs(30), String::new)
            .await;
        Fedrouter {
            proc,
            config,
            bin: env.fedrouter_bin.clone(),
            c2s,
            s2s,
            dir,
        }
    }

    /// `fedrouter user import`, through the running daemon's control socket.
    fn import(&self, users: &[(String, String)]) {
        let domain = Kind::Fedrouter.domain();
        let lines: String = users
            .iter()
            .map(|(u, p)| format!("{u}@{domain} {p}\n"))
            .collect();
        let input = self.dir.path().join("users.txt");
        std::fs::write(&input, lines).expect("write users.txt");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("exec \"$0\" --config \"$1\" user import < \"$2\"")
            .arg(&self.bin)
            .arg(&self.config)
            .arg(&input)
            .stdin(Stdio::null());
        run_checked(
            &format!("fedrouter user import: {} users", users.len()),
            cmd,
            Duration::from_secs(60 + users.len() as u64 / 20),
        );
    }
}
