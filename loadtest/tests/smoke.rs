//! Each scenario, briefly, against the real daemon (library entry point)
//! on loopback: our remote domains reach it over real s2s with STARTTLS and
//! dialback through our own DNS answers, our local users over c2s with
//! STARTTLS and SCRAM. Any lost, duplicated, misdelivered or bounced
//! message fails the run.

use std::net::SocketAddr;
use std::time::Duration;

use fedrouter::config::Config;
use fedrouter::{Daemon, admin};
use loadtest::args::{Auth, Output, Target};

const DOMAIN: &str = "localhost";

struct Site {
    daemon: Daemon,
    _dir: tempfile::TempDir,
    target: Target,
}

/// A port free for both UDP and TCP on 127.0.0.1 (for the DNS the daemon
/// must be told about before the load generator binds it).
fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn site(users: usize, extra: &str) -> Site {
    fedrouter::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = format!(
        "[server]\ndomains = [\"{DOMAIN}\"]\ndata_dir = \"{}\"\nworkers = 2\n\
         [gateway]\nc2s_rate_limit = 0\n\
         [c2s]\nlisten = [\"127.0.0.1:0\"]\nconnection_limit_per_ip = 10000\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [s2s]\nlisten = [\"127.0.0.1:0\"]\nmax_unauthenticated_per_ip = 200\ndns_nameservers = [\"{dns}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
         unlisted_domains = \"allow\"\nunlisted_partner_type = \"federated\"\n\
         [[access_policy]]\nname = \"global\"\nenable_federation_access = true\n\
         enable_xmpp_access = true\n{extra}",
        dir.path().join("data").display()
    );
    let path = dir.path().join("fedrouter.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
    let daemon = fedrouter::start(config).await.unwrap();
    for i in 1..=users {
        let jid = admin::user_jid(&format!("lt{i}@{DOMAIN}"), &[DOMAIN.to_string()]).unwrap();
        admin::add_user(
            &*daemon.store,
            &jid,
            "loadtest",
            daemon.config.c2s.scram_iterations,
        )
        .unwrap();
    }
    let target = Target {
        label: "fedrouter".into(),
        domain: DOMAIN.into(),
        c2s: daemon.c2s_addrs[0],
        s2s: daemon.s2s_addrs[0],
        user_prefix: "lt".into(),
        password: "loadtest".into(),
        remote_suffix: "lt.test".into(),
        s2s_listen: "127.0.0.1:0".parse().unwrap(),
        dns_listen: Some(dns),
        auth: Auth::Dialback,
        ca_dir: None,
        target_pid: Some(std::process::id()),
        source_ips: vec![],
        connect_concurrency: 16,
    };
    Site {
        daemon,
        _dir: dir,
        target,
    }
}

fn output() -> Output {
    Output {
        json: None,
        report: None,
        quiet: true,
    }
}

fn check(r: &loadtest::report::Report) {
    assert!(r.ok, "run failed: {:?}\n{}", r.failures, r.to_table());
    assert_eq!(
        r.counts.get("lost").copied().unwrap_or(0),
        0,
        "{}",
        r.to_table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn im_both_ways_loses_nothing() {
    let s = site(4, "").await;
    let a = loadtest::args::ImArgs {
        target: s.target.clone(),
        output: output(),
        users: 4,
        contacts: 12,
        domains: 3,
        direction: loadtest::args::Direction::Both,
        messages: 3_000,
        rate: 0,
        window: 64,
        duration: Duration::from_secs(60),
        drain: Duration::from_secs(10),
        body_bytes: 50,
    };
    let r = loadtest::im::run(&a, false).await.unwrap();
    check(&r);
    assert_eq!(r.counts["sent"], 3_000);
    assert_eq!(r.counts["received"], 3_000);
    assert_eq!(r.latencies[0].histogram.len(), 3_000);
    s.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_every_contact() {
    let s = site(2, "").await;
    let a = loadtest::args::PresenceArgs {
        target: s.target.clone(),
        output: output(),
        users: 2,
        contacts: 300,
        domains: 5,
        updates: 3,
        update_timeout: Duration::from_secs(20),
    };
    let r = loadtest::presence::run(&a, false).await.unwrap();
    check(&r);
    assert_eq!(r.counts["received"], 2 * 300 * 3, "{}", r.to_table());
    assert_eq!(r.latencies[0].histogram.len(), 3);
    s.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_storm_comes_up() {
    let s = site(50, "").await;
    let a = loadtest::args::ConnectArgs {
        target: s.target.clone(),
        output: output(),
        domains: 10,
        sessions: 50,
        hold: Duration::from_millis(200),
        timeout: Duration::from_secs(60),
    };
    let r = loadtest::connect::run(&a, false).await.unwrap();
    check(&r);
    assert_eq!(r.counts["sessions_up"], 50, "{}", r.to_table());
    assert_eq!(r.counts["domains_up"], 10, "{}", r.to_table());
    assert!(
        r.figures
            .iter()
            .any(|f| f.name == "target RSS per connection")
    );
    s.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_keeps_everything() {
    let s = site(4, "").await;
    let a = loadtest::args::SoakArgs {
        target: s.target.clone(),
        output: output(),
        users: 4,
        contacts: 40,
        domains: 4,
        rate: 500,
        presence_every: Duration::from_millis(250),
        duration: Duration::from_secs(3),
        drain: Duration::from_secs(10),
    };
    let r = loadtest::soak::run(&a, false).await.unwrap();
    check(&r);
    assert!(r.counts["received"] > 1000, "{}", r.to_table());
    assert!(r.counts["presence_received"] >= 10 * 10, "{}", r.to_table());
    // The daemon runs in this process: its RSS and CPU were sampled.
    assert!(
        r.timeline.iter().any(|s| s.rss_bytes.is_some()),
        "{}",
        r.to_table()
    );
    s.daemon.shutdown().await;
}

/// The binary end to end: flags, the JSON file, the HTML page, the exit
/// status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_json_and_html() {
    let s = site(2, "").await;
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("im.json");
    let html = out.path().join("report");
    let t = &s.target;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"));
    cmd.args(["im", "--label", "fedrouter", "--domain", DOMAIN])
        .args(["--c2s", &t.c2s.to_string(), "--s2s", &t.s2s.to_string()])
        .args(["--s2s-listen", "127.0.0.1:0"])
        .args(["--dns-listen", &t.dns_listen.unwrap().to_string()])
        .args(["--target-pid", &std::process::id().to_string()])
        .args(["--users", "2", "--contacts", "4", "--domains", "2"])
        .args(["--messages", "500", "--quiet"])
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&html);
    let o = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("loadtest finished within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("delivery"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let sum = loadtest::render::Summary::from_json(&v).unwrap();
    assert!(sum.ok);
    assert_eq!(sum.counts["received"], 500);
    assert_eq!(sum.counts["lost"], 0);
    assert_eq!(sum.latencies["delivery"].count, 500);
    let page = std::fs::read_to_string(html.join("index.html")).unwrap();
    assert!(page.contains("<svg"), "no plot in the page");
    s.daemon.shutdown().await;
}

/// Our domains authenticate with SASL EXTERNAL, with certificates from the
/// CA `loadtest ca` writes and the daemon trusts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn im_in_over_sasl_external() {
    let ca = tempfile::tempdir().unwrap();
    loadtest::remote::Material::write_new(ca.path(), "lt.test").unwrap();
    let extra = format!(
        "[tls]\nca_file = \"{}\"\n",
        ca.path().join("ca.pem").display()
    );
    let mut s = site(2, &extra).await;
    s.target.auth = Auth::External;
    s.target.ca_dir = Some(ca.path().to_path_buf());
    let a = loadtest::args::ImArgs {
        target: s.target.clone(),
        output: output(),
        users: 2,
        contacts: 4,
        domains: 2,
        direction: loadtest::args::Direction::In,
        messages: 500,
        rate: 0,
        window: 64,
        duration: Duration::from_secs(60),
        drain: Duration::from_secs(10),
        body_bytes: 10,
    };
    let r = loadtest::im::run(&a, false).await.unwrap();
    check(&r);
    // With --auth external our streams require SASL and refuse dialback,
    // so every stream that carried a message authenticated by EXTERNAL.
    assert_eq!(r.counts["received"], 500);
    s.daemon.shutdown().await;
}

/// The fedrouter binary built beside this test (`cargo test --workspace`
/// builds it with the daemon's own integration tests).
fn fedrouter_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("fedrouter");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --bin fedrouter)",
        bin.display()
    );
    bin
}

/// `loadtest chaos` against the real binary with `s2s.durable_queue`: it
/// is SIGKILLed twice in the middle of the run and restarted; every
/// message it acknowledged reaches the remote domains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_durable_queue_loses_no_acknowledged_message_across_sigkills() {
    fedrouter::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = fedrouter::storage::RedbStore::open(&data).unwrap();
        for i in 1..=4 {
            let jid = admin::user_jid(&format!("lt{i}@{DOMAIN}"), &[DOMAIN.to_string()]).unwrap();
            admin::add_user(&store, &jid, "loadtest", 4096).unwrap();
        }
    }
    let port = |_: ()| free_port();
    let (c2s, s2s, dns) = (port(()), port(()), port(()));
    let text = format!(
        "[server]\ndomains = [\"{DOMAIN}\"]\ndata_dir = \"{}\"\nworkers = 2\n\
         [gateway]\nc2s_rate_limit = 0\n\
         [c2s]\nlisten = [\"127.0.0.1:{c2s}\"]\n\
         [metrics]\nlisten = \"\"\n\
         [s2s]\nlisten = [\"127.0.0.1:{s2s}\"]\ndns_nameservers = [\"127.0.0.1:{dns}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
         unlisted_domains = \"allow\"\nunlisted_partner_type = \"federated\"\ndurable_queue = true\n\
         [[access_policy]]\nname = \"global\"\nenable_federation_access = true\nenable_xmpp_access = true\n",
        data.display()
    );
    let cfg = dir.path().join("fedrouter.toml");
    std::fs::write(&cfg, text).unwrap();
    let target = Target {
        label: "fedrouter".into(),
        domain: DOMAIN.into(),
        c2s: format!("127.0.0.1:{c2s}").parse().unwrap(),
        s2s: format!("127.0.0.1:{s2s}").parse().unwrap(),
        user_prefix: "lt".into(),
        password: "loadtest".into(),
        remote_suffix: "lt.test".into(),
        s2s_listen: "127.0.0.1:0".parse().unwrap(),
        dns_listen: Some(format!("127.0.0.1:{dns}").parse().unwrap()),
        auth: Auth::Dialback,
        ca_dir: None,
        target_pid: None,
        source_ips: vec![],
        connect_concurrency: 4,
    };
    let a = loadtest::args::ChaosArgs {
        target,
        output: output(),
        target_cmd: vec![
            fedrouter_bin().display().to_string(),
            "--config".into(),
            cfg.display().to_string(),
            "run".into(),
        ],
        kill_target_after: 1_500,
        kills: 2,
        users: 4,
        contacts: 40,
        domains: 4,
        messages: 6_000,
        window: 100,
        duration: Duration::from_secs(120),
        drain: Duration::from_secs(30),
    };
    let r = loadtest::chaos::run(&a, false).await.unwrap();
    eprintln!("{}", r.to_table());
    check(&r);
    assert_eq!(r.counts.get("kills").copied(), Some(2), "{}", r.to_table());
    assert_eq!(r.counts.get("acknowledged").copied(), Some(6_000));
}
