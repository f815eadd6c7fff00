//! ejabberd 23.01 (Debian) as a test peer.
//!
//! Gotchas encoded here:
//! - Everything private: `ejabberdctl --config-dir DIR/conf --spool
//!   DIR/spool --logs DIR/logs`. `ejabberdctl` sources
//!   `conf/ejabberdctl.cfg` and sets `ERL_INETRC=conf/inetrc` itself (an
//!   `ERL_INETRC` in the environment is overridden), so both live there.
//! - Runs as `ejabberd` via `setpriv` (as root, `ejabberdctl` would `su`,
//!   which stays as a parent); `HOME=DIR` so the Erlang cookie is private.
//! - No epmd at all: `ERL_DIST_PORT=<free port>` in ejabberdctl.cfg makes
//!   ejabberdctl pass `-erl_epmd_port P -start_epmd false` to the node and
//!   `-dist_listen false` to its control clients; `-kernel
//!   inet_dist_use_interface {127,0,0,1}` keeps the distribution port on
//!   loopback. The node name is unique per instance.
//! - `ejabberdctl foreground` runs erl as a child (no `exec`), and
//!   `erl_child_setup` starts its own session: [`super::proc::PeerProcess`]
//!   stops the group and every descendant.
//! - DNS: the `inetrc` sets `{nameserver, {IP,...}, PORT}` (the test DNS;
//!   SRV goes through Erlang's resolver) *after* `{resolv_conf, ""}` — that
//!   line resets the nameserver list, so in the other order ejabberd has no
//!   nameserver, never asks the test DNS, falls back to `p.test:5269` and logs
//!   "Failed to establish outbound s2s connection e.test -> p.test:
//!   Connection failed: connection refused". Also `{lookup, [file, dns]}`
//!   (else `native`, i.e. libc, for A/AAAA), and
//!   `{host, {127,0,0,1}, ["localhost"]}` — without the latter,
//!   `ejabberdctl register` fails with "Failed RPC connection to the node
//!   …: nodedown" (the node name's host cannot be resolved). For lookups
//!   that go through libc (`native`), the node runs under `unshare --mount
//!   --propagation private` with private files bind-mounted over
//!   `/etc/hosts` (localhost + the A records) and `/etc/resolv.conf`.
//! - Listeners bound to the peer's address with `ip:`, `backlog: 1024`
//!   (default 5). `certfiles` holds cert+key combined in one PEM.
//! - Secure mode: `s2s_use_starttls: required`, `s2s_cafile` = the test CA,
//!   and no `mod_s2s_dialback` (so only SASL EXTERNAL can authenticate).
//!   Dialback mode: `s2s_use_starttls: required` (TLS with untrusted certs),
//!   no `s2s_cafile`, `mod_s2s_dialback` on.
//! - Users: `ejabberdctl register user domain password` (~0.5 s: it starts
//!   a hidden Erlang node).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::certs::CertPair;
use super::proc::{PeerProcess, run_checked};
use super::{chown_r, free_port, maybe_keep, must_be_root, peer_dir, set_mode, sock, write};

const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct EjabberdOpts {
    pub domain: String,
    pub ip: Ipv4Addr,
    pub c2s_port: u16,
    pub s2s_port: u16,
    /// The test DNS (see [`super::Dns`]); must be an IPv4 address.
    pub dns: SocketAddr,
    /// Names for the private `/etc/hosts` (libc lookups), normally
    /// `dns.a_records()`.
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// PEM of the CA trusted for s2s; None: none configured.
    pub trust_ca: Option<String>,
    /// true: STARTTLS required, certificates verified against `trust_ca`,
    /// no dialback (SASL EXTERNAL only). false: dialback allowed.
    pub secure_auth: bool,
    pub cert: CertPair,
    /// YAML appended at the top level of ejabberd.yml.
    pub extra_config: String,
    /// YAML lines appended under `modules:` (indented two spaces), e.g.
    /// `"  mod_admin_extra: {}\n"` for `ejabberdctl get_offline_count`.
    pub extra_modules: String,
    /// `shaper_rules: max_user_sessions` (ejabberd's default is 10); None:
    /// `infinity`, for load tests with many resources per user.
    pub max_user_sessions: Option<u32>,
}

impl EjabberdOpts {
    /// Secure mode without a trusted CA (set `trust_ca`), free ports on `ip`.
    pub fn new(
        domain: &str,
        ip: Ipv4Addr,
        dns: SocketAddr,
        hosts: Vec<(String, Ipv4Addr)>,
        cert: CertPair,
    ) -> EjabberdOpts {
        EjabberdOpts {
            domain: domain.to_string(),
            ip,
            c2s_port: free_port(ip),
            s2s_port: free_port(ip),
            dns,
            hosts,
            trust_ca: None,
            secure_auth: true,
            cert,
            extra_config: String::new(),
            extra_modules: String::new(),
            max_user_sessions: Some(10),
        }
    }
}

pub struct Ejabberd {
    pub opts: EjabberdOpts,
    proc: Option<PeerProcess>,
    dir: tempfile::TempDir,
}

impl Ejabberd {
    /// Writes the configuration and starts ejabberd; returns once its c2s and
    /// s2s ports accept (bounded, 60 s; panics with the logs otherwise).
    pub async fn start(opts: EjabberdOpts) -> Ejabberd {
        must_be_root();
        let mut dir = peer_dir(&format!("peer-ejabberd-{}-", opts.domain), None);
        maybe_keep(&mut dir, &format!("ejabberd {}", opts.domain));
        let d = dir.path().to_path_buf();
        for sub in ["conf", "spool", "logs"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let conf = d.join("conf");
        let certfile = write(&conf, "cert.pem", &opts.cert.combined_pem());
        let cafile = opts
            .trust_ca
            .as_ref()
            .map(|pem| write(&conf, "ca.pem", pem));

        let std::net::IpAddr::V4(dns_ip) = opts.dns.ip() else {
            panic!("the test DNS must be on IPv4 for ejabberd's inetrc");
        };
        let o = dns_ip.octets();
        write(
            &conf,
            "inetrc",
            &format!(
                "{{resolv_conf, \"\"}}.\n{{hosts_file, \"\"}}.\n\
                 {{nameserver, {{{},{},{},{}}}, {}}}.\n\
                 {{host, {{127,0,0,1}}, [\"localhost\"]}}.\n\
                 {{lookup, [file, dns]}}.\n",
                o[0],
                o[1],
                o[2],
                o[3],
                opts.dns.port()
            ),
        );
        let dist_port = free_port(Ipv4Addr::LOCALHOST);
        write(
            &conf,
            "ejabberdctl.cfg",
            &format!(
                "ERLANG_NODE=ejabberd_{dist_port}@localhost\n\
                 ERL_DIST_PORT={dist_port}\n\
                 ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {{127,0,0,1}}\"\n\
                 EJABBERD_BYPASS_WARNINGS=true\n"
            ),
        );
        write(
            &conf,
            "ejabberd.yml",
            &config_yaml(&opts, &certfile, cafile.as_deref()),
        );

        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (name, ip) in &opts.hosts {
            hosts.push_str(&format!("{ip} {name}\n"));
        }
        write(&d, "hosts", &hosts);
        write(
            &d,
            "resolv.conf",
            "# private to this ejabberd: nothing answers here, /etc/hosts does\n\
             nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        );
        // A private cookie, so ejabberdctl and the node agree from the start.
        let cookie = write(
            &d,
            ".erlang.cookie",
            &format!("PEERS{:X}{}", dist_port, std::process::id()),
        );
        write(
            &d,
            "run.sh",
            &format!(
                "set -e\n\
                 mount --bind {dir}/hosts /etc/hosts\n\
                 mount --bind {dir}/resolv.conf /etc/resolv.conf\n\
                 exec setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
                 env HOME={dir} /usr/sbin/ejabberdctl --config-dir {dir}/conf \
                 --spool {dir}/spool --logs {dir}/logs foreground\n",
                dir = d.display()
            ),
        );
        chown_r(&d, "ejabberd");
        set_mode(&cookie, 0o400);
        let mut e = Ejabberd {
            opts,
            proc: None,
            dir,
        };
        e.launch().await;
        e
    }

    async fn launch(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh"])
            .arg(d.join("run.sh"))
            .current_dir(d);
        let mut proc = PeerProcess::spawn(
            &format!("ejabberd {}", self.opts.domain),
            cmd,
            &d.join("stdout.log"),
        );
        let logs = d.join("logs");
        let log = || {
            format!(
                "{}{}",
                std::fs::read_to_string(logs.join("ejabberd.log")).unwrap_or_default(),
                std::fs::read_to_string(logs.join("error.log")).unwrap_or_default()
            )
        };
        proc.wait_accepting(self.c2s_addr(), START_TIMEOUT, log)
            .await;
        proc.wait_accepting(self.s2s_addr(), START_TIMEOUT, log)
            .await;
        self.proc = Some(proc);
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=ejabberd",
            "--regid=ejabberd",
            "--init-groups",
            "env",
        ])
        .arg(format!("HOME={}", d.display()))
        .arg("/usr/sbin/ejabberdctl")
        .arg("--config-dir")
        .arg(d.join("conf"))
        .arg("--spool")
        .arg(d.join("spool"))
        .arg("--logs")
        .arg(d.join("logs"))
        .args(args)
        .current_dir(d);
        cmd
    }

    /// Runs `ejabberdctl ARGS` against this node (bounded, 30 s); returns
    /// its output, panics on failure.
    pub fn ctl_run(&self, args: &[&str]) -> String {
        run_checked(
            &format!("ejabberdctl {}", args.join(" ")),
            self.ctl(args),
            Duration::from_secs(30),
        )
    }

    /// [`Ejabberd::ctl_run`] without the panic (e.g. to poll a node that is
    /// still starting).
    pub fn ctl_try(&self, args: &[&str]) -> Result<String, String> {
        super::proc::run_bounded(
            &format!("ejabberdctl {}", args.join(" ")),
            self.ctl(args),
            Duration::from_secs(30),
        )
    }

    /// Creates `user@domain` with `password` (`ejabberdctl register`).
    pub fn register(&self, user: &str, password: &str) {
        self.ctl_after_start(&["register", user, self.opts.domain.as_str(), password]);
    }

    /// [`Ejabberd::ctl_run`], retrying the one error of a node whose Mnesia
    /// tables do not exist yet (`no_exists`, right after start), a bounded
    /// number of times, once the previous attempt has returned.
    fn ctl_after_start(&self, args: &[&str]) {
        for _ in 0..20 {
            match self.ctl_try(args) {
                Ok(_) => return,
                Err(e) if e.contains("no_exists") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        self.ctl_run(args);
    }

    /// Creates many users of the domain at once: one XEP-0227 (PIEFXIS)
    /// file with every account, loaded by `ejabberdctl import_piefxis`,
    /// where `register` would start a hidden Erlang node per user (~0.5 s
    /// each). Passwords are given in the clear; ejabberd stores them as
    /// SCRAM (`auth_password_format: scram`).
    pub fn register_many(&self, users: &[(String, String)]) {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('\'', "&apos;")
                .replace('"', "&quot;")
        };
        let mut xml = format!(
            "<?xml version='1.0' encoding='UTF-8'?>\n\
             <server-data xmlns='urn:xmpp:pie:0'>\n<host jid='{}'>\n",
            esc(&self.opts.domain)
        );
        for (user, password) in users {
            xml.push_str(&format!(
                "<user name='{}' password='{}'/>\n",
                esc(user),
                esc(password)
            ));
        }
        xml.push_str("</host>\n</server-data>\n");
        let file = write(self.dir.path(), "register-many.xml", &xml);
        chown_r(&file, "ejabberd");
        let path = file.display().to_string();
        self.ctl_after_start(&["import_piefxis", path.as_str()]);
    }

    /// The Erlang VM's pid (`beam.smp`, a child of the `ejabberdctl`
    /// script we spawn), while it runs: the process whose RSS and CPU are
    /// ejabberd's.
    pub fn vm_pid(&self) -> Option<u32> {
        self.proc.as_ref()?.descendant_named("beam.smp")
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        sock(self.opts.ip, self.opts.c2s_port)
    }

    pub fn s2s_addr(&self) -> SocketAddr {
        sock(self.opts.ip, self.opts.s2s_port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// ejabberd.log, error.log and the VM's stdout/stderr.
    pub fn log(&self) -> String {
        let d = self.dir.path();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}--- error.log ---\n{}--- stdout ---\n{}",
            read(d.join("logs/ejabberd.log")),
            read(d.join("logs/error.log")),
            read(d.join("stdout.log"))
        )
    }

    /// Stops the node (SIGTERM to it and its descendants, bounded wait, then
    /// SIGKILL). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// Stops and starts again with the same configuration, data and ports.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// Starts a [`Ejabberd::stop`]ped node again with the same
    /// configuration, data and ports (the second half of
    /// [`Ejabberd::restart`], for tests that act while it is down). No-op if
    /// it runs.
    pub async fn start_again(&mut self) {
        if self.proc.is_none() {
            self.launch().await;
        }
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config_yaml(opts: &EjabberdOpts, certfile: &Path, cafile: Option<&Path>) -> String {
    let mut y = format!(
        r#"# generated by tests/peers/ejabberd.rs
hosts:
  - "{domain}"
loglevel: info
log_rotate_count: 0
certfiles:
  - "{certfile}"
s2s_use_starttls: required
s2s_dns_timeout: 5
s2s_dns_retries: 1
s2s_max_retry_delay: 5
outgoing_s2s_families: [ipv4]
outgoing_s2s_timeout: 10
negotiation_timeout: 30
listen:
  - port: {c2s}
    ip: "{ip}"
    module: ejabberd_c2s
    starttls_required: true
    backlog: 1024
    max_stanza_size: 262144
  - port: {s2s}
    ip: "{ip}"
    module: ejabberd_s2s_in
    backlog: 1024
    max_stanza_size: 524288
auth_method: internal
auth_password_format: scram
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  s2s:
    allow: all
s2s_access: s2s
# No traffic shapers at all: the listeners name none (their default), and
# the rules ejabberd's own example config would attach them by are pinned
# to none, so nothing throttles c2s or s2s (load tests measure the server,
# not its shaper).
shaper_rules:
  max_user_sessions: {max_sessions}
  c2s_shaper: none
  s2s_shaper: none
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_offline: {{}}
"#,
        domain = opts.domain,
        certfile = certfile.display(),
        c2s = opts.c2s_port,
        s2s = opts.s2s_port,
        ip = opts.ip,
        max_sessions = opts
            .max_user_sessions
            .map_or("infinity".to_string(), |n| n.to_string()),
    );
    if !opts.secure_auth {
        y.push_str("  mod_s2s_dialback: {}\n");
    }
    y.push_str(&opts.extra_modules);
    if let Some(ca) = cafile {
        y.push_str(&format!("s2s_cafile: \"{}\"\n", ca.display()));
    }
    y.push_str(&opts.extra_config);
    y.push('\n');
    y
}
