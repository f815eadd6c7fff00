//! `compare`: fedrouter, Prosody and ejabberd side by side under the same
//! load. Starts each server in turn on loopback with an equivalent
//! configuration (see `targets.rs`), provisions the same users through the
//! server's own tools, runs the same `loadtest` scenarios against it, stops
//! it, and prints one table with the ratios. Run through
//! `loadtest/compare.sh`, which installs and builds what it needs.
//!
//! `--check` only proves the setup: each server starts, `lt1` signs in over
//! c2s, and a message to `c1@r1.<suffix>` makes the server look up
//! `_xmpp-server._tcp.r1.<suffix>` in a DNS at `--dns-listen` and connect
//! to `--s2s-listen`.
//!
//! Every process it starts is stopped at the end, on error, and on
//! SIGINT/SIGTERM.

#[path = "../../../../tests/peers/mod.rs"]
mod peers;
mod table;
mod targets;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use loadtest::render::json::Summary;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use targets::{Env, Kind, Server};

/// The load generator's side: its DNS and its s2s listener.
const LOADTEST_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 10, 100);

#[derive(Parser, Debug)]
#[command(
    name = "compare",
    about = "Runs the same loadtest scenarios against fedrouter, Prosody and ejabberd on loopback and prints one table"
)]
struct Args {
    /// Servers, in order (the first is the one the ratios are for).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        env = "COMPARE_SERVERS",
        default_value = "fedrouter,prosody,ejabberd"
    )]
    servers: Vec<Kind>,
    /// Scenarios, in order.
    #[arg(long, value_delimiter = ',', env = "COMPARE_SCENARIOS",
          default_value = "im,presence,connect",
          value_parser = ["im", "presence", "connect", "soak"])]
    scenarios: Vec<String>,
    /// Only check the setup (start, sign in, DNS and outbound s2s), no load.
    #[arg(long)]
    check: bool,

    /// im: local users.
    #[arg(long, env = "COMPARE_IM_USERS", default_value_t = 10)]
    im_users: usize,
    /// im: remote contacts in all.
    #[arg(long, env = "COMPARE_IM_CONTACTS", default_value_t = 100)]
    im_contacts: usize,
    /// im: remote domains.
    #[arg(long, env = "COMPARE_IM_DOMAINS", default_value_t = 10)]
    im_domains: usize,
    /// im: messages in all.
    #[arg(long, env = "COMPARE_IM_MESSAGES", default_value_t = 20_000)]
    im_messages: u64,
    /// presence: federated contacts of the one local user.
    #[arg(long, env = "COMPARE_PRESENCE_CONTACTS", default_value_t = 1_000)]
    presence_contacts: usize,
    /// presence: remote domains the contacts are spread over.
    #[arg(long, env = "COMPARE_PRESENCE_DOMAINS", default_value_t = 10)]
    presence_domains: usize,
    /// presence: updates.
    #[arg(long, env = "COMPARE_PRESENCE_UPDATES", default_value_t = 5)]
    presence_updates: u64,
    /// connect: remote domains connecting at once.
    #[arg(long, env = "COMPARE_CONNECT_DOMAINS", default_value_t = 20)]
    connect_domains: usize,
    /// connect: local c2s sessions at once.
    #[arg(long, env = "COMPARE_CONNECT_SESSIONS", default_value_t = 200)]
    connect_sessions: usize,
    /// soak: duration.
    #[arg(long, env = "COMPARE_SOAK_DURATION", default_value = "20s")]
    soak_duration: String,
    /// More arguments for every loadtest run (e.g. `--loadtest-arg=--quiet`).
    #[arg(long, allow_hyphen_values = true)]
    loadtest_arg: Vec<String>,
    /// Upper bound for one loadtest run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "600s")]
    scenario_timeout: Duration,

    /// Local users are `<prefix><n>`, all with `--password`.
    #[arg(long, default_value = "lt")]
    user_prefix: String,
    #[arg(long, default_value = "loadtest")]
    password: String,
    #[arg(long, default_value = "lt.test")]
    remote_suffix: String,
    /// The load generator's s2s listener (default: a free port on 127.0.10.100).
    #[arg(long)]
    s2s_listen: Option<SocketAddr>,
    /// The load generator's DNS (default: a port free for UDP and TCP on
    /// 127.0.10.100).
    #[arg(long)]
    dns_listen: Option<SocketAddr>,
    /// JSON reports, logs of failed runs and the table go here.
    #[arg(long, env = "COMPARE_OUT", default_value = "target/compare")]
    out: PathBuf,
    /// The binaries (default: next to this one, i.e. target/release/).
    #[arg(long)]
    loadtest: Option<PathBuf>,
    #[arg(long)]
    fedrouter: Option<PathBuf>,
}

impl Args {
    fn users_needed(&self) -> usize {
        let mut n = 1;
        for s in &self.scenarios {
            n = n.max(match s.as_str() {
                "im" => self.im_users,
                "connect" => self.connect_sessions,
                // soak's default; presence uses one user.
                "soak" => 20,
                _ => 1,
            });
        }
        n
    }

    fn max_domains(&self) -> usize {
        self.im_domains
            .max(self.presence_domains)
            .max(self.connect_domains)
            .max(10)
    }

    /// The scenario's own arguments.
    fn scenario_args(&self, scenario: &str) -> Vec<String> {
        let v = |xs: &[(&str, String)]| {
            xs.iter()
                .flat_map(|(k, v)| [format!("--{k}"), v.clone()])
                .collect()
        };
        match scenario {
            "im" => v(&[
                ("users", self.im_users.to_string()),
                ("contacts", self.im_contacts.to_string()),
                ("domains", self.im_domains.to_string()),
                ("messages", self.im_messages.to_string()),
            ]),
            "presence" => v(&[
                ("users", "1".into()),
                ("contacts", self.presence_contacts.to_string()),
                ("domains", self.presence_domains.to_string()),
                ("updates", self.presence_updates.to_string()),
            ]),
            "connect" => v(&[
                ("domains", self.connect_domains.to_string()),
                ("sessions", self.connect_sessions.to_string()),
            ]),
            "soak" => v(&[("duration", self.soak_duration.clone())]),
            _ => Vec::new(),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("compare: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        // The work runs in a task, so that a signal can abort it: aborting
        // drops the running server, whose Drop stops its processes.
        let work = tokio::spawn(drive(args));
        let abort = work.abort_handle();
        tokio::select! {
            r = work => match r {
                Ok(Ok(code)) => code,
                Ok(Err(e)) => {
                    eprintln!("compare: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("compare: {e}");
                    ExitCode::FAILURE
                }
            },
            sig = shutdown_signal() => {
                eprintln!("compare: {sig}: stopping the servers");
                abort.abort();
                // The abort completes once the task's drop (stopping the
                // servers, a few seconds at most) has run.
                while !abort.is_finished() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ExitCode::from(130)
            }
        }
    })
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// A binary next to this one (target/release/NAME), unless given.
fn sibling(given: &Option<PathBuf>, name: &str) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let p = exe.with_file_name(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found (cargo build --release -p fedrouter -p loadtest)",
            p.display()
        ))
    }
}

async fn drive(args: Args) -> Result<ExitCode, String> {
    let fedrouter_bin = sibling(&args.fedrouter, "fedrouter")?;
    let loadtest_bin = sibling(&args.loadtest, "loadtest")?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let env = std::sync::Arc::new(Env {
        certs: peers::PeerCerts::new(),
        dns: args
            .dns_listen
            .unwrap_or_else(|| peers::free_dns_addr(LOADTEST_IP)),
        s2s_listen: args
            .s2s_listen
            .unwrap_or_else(|| peers::sock(LOADTEST_IP, peers::free_port(LOADTEST_IP))),
        remote_suffix: args.remote_suffix.clone(),
        max_domains: args.max_domains(),
        fedrouter_bin,
    });
    let users: Vec<(String, String)> = (1..=args.users_needed())
        .map(|n| (format!("{}{n}", args.user_prefix), args.password.clone()))
        .collect();

    let mut runs = Vec::new();
    let mut header = vec![format!(
        "loadtest comparison on {} ({} CPUs), loopback, TLS everywhere, s2s by dialback",
        hostname(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )];
    let mut all_ok = true;
    for &kind in &args.servers {
        header.push(format!(
            "  {:<10} {}",
            kind.name(),
            kind.version(&env.fedrouter_bin)
        ));
        let t = Instant::now();
        eprintln!("== {}: starting", kind.name());
        // In its own task, so that a server that does not come up (the
        // harness panics, after stopping what it started) fails only its
        // own column.
        let starting = tokio::spawn({
            let env = env.clone();
            async move { Server::start(kind, &env).await }
        });
        let mut server = match starting.await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("== {}: did not start: {e}", kind.name());
                all_ok = false;
                runs.extend(failed_runs(
                    kind,
                    &args.scenarios,
                    "the server did not start",
                ));
                continue;
            }
        };
        eprintln!(
            "== {}: up in {:.1?} (c2s {}, s2s {}, pid {:?})",
            kind.name(),
            t.elapsed(),
            server.c2s_addr(),
            server.s2s_addr(),
            server.pid()
        );
        let t = Instant::now();
        // The servers' tools block (seconds); a signal takes effect after.
        let provision = tokio::task::block_in_place(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.provision(&users)))
        });
        if let Err(p) = provision {
            eprintln!(
                "== {}: provisioning failed: {}",
                kind.name(),
                panic_text(&p)
            );
            eprintln!("{}", server.log_tail(40));
            all_ok = false;
            server.stop();
            runs.extend(failed_runs(kind, &args.scenarios, "provisioning failed"));
            continue;
        }
        eprintln!(
            "== {}: {} users provisioned in {:.1?}",
            kind.name(),
            users.len(),
            t.elapsed()
        );

        if args.check {
            let r = check(&server, kind, &env, &args).await;
            match &r {
                Ok(msg) => eprintln!("== {}: check ok: {msg}", kind.name()),
                Err(e) => {
                    all_ok = false;
                    eprintln!(
                        "== {}: check FAILED: {e}\n{}",
                        kind.name(),
                        server.log_tail(40)
                    );
                }
            }
        } else {
            for sc in &args.scenarios {
                let run = run_scenario(&server, kind, sc, &env, &args, &loadtest_bin).await;
                if let Err(e) = &run.report {
                    eprintln!("== {} {sc}: {e}", kind.name());
                    all_ok = false;
                    let log = args.out.join(format!("{}-{sc}.server.log", kind.name()));
                    let _ = std::fs::write(&log, server.log_tail(500));
                }
                runs.push(run);
            }
        }
        let t = Instant::now();
        server.stop();
        eprintln!("== {}: stopped in {:.1?}", kind.name(), t.elapsed());
    }
    if args.check {
        return Ok(if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let baseline = args.servers.first().map_or("fedrouter", |k| k.name());
    let text = table::render(&header, baseline, &runs);
    let _ = std::fs::write(args.out.join("table.txt"), &text);
    println!("\n{text}");
    eprintln!(
        "reports: {out}/<server>-<scenario>.json and .txt; this table: {out}/table.txt",
        out = args.out.display()
    );
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Table entries for scenarios that could not run on `kind`.
fn failed_runs(kind: Kind, scenarios: &[String], why: &str) -> Vec<table::Run> {
    scenarios
        .iter()
        .map(|sc| table::Run {
            server: kind.name().to_string(),
            scenario: sc.clone(),
            report: Err(why.to_string()),
        })
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this machine".into())
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// One `loadtest SCENARIO` run against `server`; its JSON report.
async fn run_scenario(
    server: &Server,
    kind: Kind,
    scenario: &str,
    env: &Env,
    args: &Args,
    loadtest_bin: &Path,
) -> table::Run {
    let json = args.out.join(format!("{}-{scenario}.json", kind.name()));
    let _ = std::fs::remove_file(&json);
    let mut cmd = tokio::process::Command::new(loadtest_bin);
    cmd.arg(scenario)
        .args(["--label", kind.name(), "--domain", &kind.domain()])
        .arg("--c2s")
        .arg(server.c2s_addr().to_string())
        .arg("--s2s")
        .arg(server.s2s_addr().to_string())
        .args(["--user-prefix", &args.user_prefix])
        .args(["--password", &args.password])
        .args(["--remote-suffix", &args.remote_suffix])
        .arg("--s2s-listen")
        .arg(env.s2s_listen.to_string())
        .arg("--dns-listen")
        .arg(env.dns.to_string())
        .args(["--auth", "dialback"])
        .arg("--json")
        .arg(&json)
        .args(args.scenario_args(scenario))
        .args(&args.loadtest_arg)
        .kill_on_drop(true);
    if let Some(pid) = server.pid() {
        cmd.arg("--target-pid").arg(pid.to_string());
    }
    // The loadtest's own table goes to a file (the JSON carries the same),
    // so that the comparison table is what the terminal ends with; its
    // stderr (progress bar, errors) stays on the terminal.
    let log = args.out.join(format!("{}-{scenario}.txt", kind.name()));
    match std::fs::File::create(&log) {
        Ok(f) => {
            cmd.stdout(f);
        }
        Err(e) => eprintln!("== {}: {e}; loadtest output stays here", log.display()),
    }
    eprintln!("== {} {scenario}: {:?}", kind.name(), cmd.as_std());
    let started = Instant::now();
    let result = match cmd.spawn() {
        Err(e) => Err(format!("spawn {}: {e}", loadtest_bin.display())),
        Ok(mut child) => match tokio::time::timeout(args.scenario_timeout, child.wait()).await {
            Err(_) => {
                let _ = child.kill().await;
                Err(format!("timed out after {:?}", args.scenario_timeout))
            }
            Ok(Err(e)) => Err(format!("wait: {e}")),
            Ok(Ok(status)) => {
                // A failed contract still writes its report (ok = false);
                // only a run without one is a failure of the run itself.
                std::fs::read_to_string(&json)
                    .map_err(|e| format!("{status}, no report {}: {e}", json.display()))
                    .and_then(|t| {
                        serde_json::from_str::<Value>(&t)
                            .and_then(|v| Summary::from_json(&v))
                            .map_err(|e| format!("{}: {e}", json.display()))
                    })
            }
        },
    };
    if let Ok(s) = &result {
        eprintln!(
            "== {} {scenario}: {} in {:.1?} (table: {})",
            kind.name(),
            if s.ok { "ok" } else { "NOT OK" },
            started.elapsed(),
            log.display()
        );
    }
    table::Run {
        server: kind.name().to_string(),
        scenario: scenario.to_string(),
        report: result,
    }
}

/// `--check`: `lt1` signs in, sends to `c1@r1.<suffix>`, and the server
/// finds the load generator's s2s listener through the DNS at
/// `--dns-listen` (played here by `testkit::dns::TestDns`) and
/// opens a stream to it.
async fn check(server: &Server, kind: Kind, env: &Env, args: &Args) -> Result<String, String> {
    use testkit::dns::TestDns;
    let dns = TestDns::start(env.dns)
        .await
        .map_err(|e| format!("test DNS on {}: {e}", env.dns))?;
    let std::net::IpAddr::V4(s2s_ip) = env.s2s_listen.ip() else {
        return Err("--s2s-listen must be IPv4".into());
    };
    let target = format!("s2s.{}", args.remote_suffix);
    dns.add_a(&target, s2s_ip);
    for n in 1..=env.max_domains {
        let d = format!("r{n}.{}", args.remote_suffix);
        dns.add_srv(
            &format!("_xmpp-server._tcp.{d}"),
            0,
            0,
            env.s2s_listen.port(),
            &target,
        );
        dns.add_a(&d, s2s_ip);
    }
    let listener = tokio::net::TcpListener::bind(env.s2s_listen)
        .await
        .map_err(|e| format!("s2s listener {}: {e}", env.s2s_listen))?;

    // The last user too: provisioning created them all.
    let last = format!(
        "{}{}@{}",
        args.user_prefix,
        args.users_needed(),
        kind.domain()
    );
    peers::connect(server.c2s_addr(), &last, &args.password, None).await;
    let jid = format!("{}1@{}", args.user_prefix, kind.domain());
    let t = Instant::now();
    let mut client = peers::connect(server.c2s_addr(), &jid, &args.password, None).await;
    let login = t.elapsed();
    let contact = format!("c1@r1.{}", args.remote_suffix);
    client
        .send(format!(
            "<message to='{contact}' type='chat' id='check1'><body>check</body></message>"
        ))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let t = Instant::now();
    let (mut sock, from) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .map_err(|_| {
            format!(
                "no connection to {} within 20 s after a message to {contact}",
                env.s2s_listen
            )
        })?
        .map_err(|e| format!("accept: {e}"))?;
    // The stream header names the domains: ours as `to`, the server's as `from`.
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let header = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
            .await
            .map_err(|_| "no stream header within 10 s".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if n == 0 || text.contains("<stream:stream") && text.contains('>') {
            break text;
        }
    };
    let to = "r1.".to_string() + &args.remote_suffix;
    if !header.contains(&format!("to='{to}'")) && !header.contains(&format!("to=\"{to}\"")) {
        return Err(format!("the stream from {from} is not for {to}: {header}"));
    }
    Ok(format!(
        "{last} and {jid} signed in ({login:.0?}); {contact} resolved through {} and reached at {} from {from} in {:.0?}",
        env.dns,
        env.s2s_listen,
        t.elapsed()
    ))
}
