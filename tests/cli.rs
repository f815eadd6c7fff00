//! The `fedrouter` binary as an operator uses it: run, check-config, and
//! user administration both against a running daemon and a stopped one.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::TIMEOUT;
use testkit::client::{Client, ClientConfig, ClientError};

const BIN: &str = env!("CARGO_BIN_EXE_fedrouter");

struct Running {
    child: Child,
    c2s: SocketAddr,
    /// The first s2s listener, when the configuration has one.
    s2s: Option<SocketAddr>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `fedrouter run` and waits (bounded) for its c2s address in the log.
fn run_daemon(cwd: &Path, config: Option<&Path>) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .env_remove("FEDROUTER_CONFIG")
        .env("RUST_LOG", "info");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .arg("run")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn fedrouter");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut c2s, mut s2s) = (None, None);
        let first_word = |rest: &str| rest.split_whitespace().next().map(str::to_string);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("c2s listening addr=").nth(1) {
                c2s = first_word(rest);
            }
            if let Some(rest) = line.split("s2s listening addr=").nth(1) {
                s2s = s2s.or_else(|| first_word(rest));
            }
            if line.contains("fedrouter is running") {
                let _ = tx.send((c2s.take().unwrap_or_default(), s2s.take()));
            }
        }
    });
    let (c2s, s2s) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the daemon did not report its c2s address");
    Running {
        child,
        c2s: c2s.parse().expect("address"),
        s2s: s2s.map(|a| a.parse().expect("address")),
    }
}

fn fedrouter(cwd: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .current_dir(cwd)
        .env_remove("FEDROUTER_CONFIG")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `fedrouter user add` with the configuration `config`; must succeed.
fn add_user(cwd: &Path, config: &str, jid: &str, password: &str) {
    let (ok, _, err) = fedrouter(
        cwd,
        &[
            "--config",
            config,
            "user",
            "add",
            jid,
            "--password",
            password,
        ],
        None,
    );
    assert!(ok, "{err}");
}

async fn sign_in(addr: SocketAddr, jid: &str, password: &str) -> Result<Client, ClientError> {
    let mut cfg = ClientConfig::new(addr, jid, password);
    cfg.timeout = TIMEOUT;
    Client::connect(&cfg).await
}

#[tokio::test]
async fn users_are_managed_while_the_daemon_runs_and_sign_in_with_scram_sha_256() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedrouter.toml");
    std::fs::write(
        &cfg,
        "[server]\ndomains = [\"localhost\"]\ndata_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n[s2s]\nlisten = [\"127.0.0.1:0\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let daemon = run_daemon(dir.path(), Some(&cfg));

    let (ok, out, err) = fedrouter(
        dir.path(),
        &[
            "--config",
            c,
            "user",
            "add",
            "alice@localhost",
            "--password",
            "s3cret",
        ],
        None,
    );
    assert!(ok, "user add failed: {err}");
    assert!(out.contains("added alice@localhost"), "{out}");
    // That went through the control socket, in a directory only the
    // daemon's user may enter.
    use std::os::unix::fs::PermissionsExt;
    let control_dir = dir.path().join("data").join("control");
    let mode = std::fs::metadata(&control_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    assert!(control_dir.join("control.sock").exists());
    let (ok, _, err) = fedrouter(
        dir.path(),
        &[
            "--config",
            c,
            "user",
            "add",
            "alice@localhost",
            "--password",
            "x",
        ],
        None,
    );
    assert!(
        !ok && err.contains("already exists"),
        "duplicate add: {err}"
    );
    let (ok, _, err) = fedrouter(
        dir.path(),
        &[
            "--config",
            c,
            "user",
            "add",
            "eve@elsewhere.example",
            "--password",
            "x",
        ],
        None,
    );
    assert!(
        !ok && err.contains("does not serve"),
        "foreign domain: {err}"
    );

    let client = sign_in(daemon.c2s, "alice@localhost", "s3cret")
        .await
        .expect("alice signs in with SCRAM-SHA-256");
    assert!(client.conn.is_tls(), "the session runs over STARTTLS");

    // The password from standard input, as a script would pass it.
    let (ok, out, err) = fedrouter(
        dir.path(),
        &["--config", c, "user", "passwd", "alice@localhost"],
        Some("n3w-pass\n"),
    );
    assert!(ok, "passwd: {err}");
    assert!(out.contains("password changed"), "{out}");
    assert!(
        sign_in(daemon.c2s, "alice@localhost", "s3cret")
            .await
            .is_err(),
        "the old password still works"
    );
    sign_in(daemon.c2s, "alice@localhost", "n3w-pass")
        .await
        .expect("the new password works");

    let (ok, out, _) = fedrouter(dir.path(), &["--config", c, "user", "list"], None);
    assert!(ok && out.lines().any(|l| l == "alice@localhost"), "{out}");
    let (ok, _, err) = fedrouter(
        dir.path(),
        &["--config", c, "user", "remove", "alice@localhost"],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        sign_in(daemon.c2s, "alice@localhost", "n3w-pass")
            .await
            .is_err(),
        "a removed user signed in"
    );

    // With the daemon stopped, the CLI opens the store itself.
    drop(daemon);
    let (ok, out, err) = fedrouter(
        dir.path(),
        &[
            "--config",
            c,
            "user",
            "add",
            "bob@localhost",
            "--password",
            "b",
        ],
        None,
    );
    assert!(ok, "offline add: {err}");
    assert!(out.contains("added bob@localhost"));
    let daemon = run_daemon(dir.path(), Some(&cfg));
    sign_in(daemon.c2s, "bob@localhost", "b")
        .await
        .expect("bob, added offline, signs in");
}

#[test]
fn check_config_names_the_file_line_and_key_of_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[server]\ndomains = [\"localhost\"]\n\n[gateway]\nkeep_alive_intervall = 30\n",
    )
    .unwrap();
    let (ok, _, err) = fedrouter(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "check-config"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("bad.toml"), "names the file: {err}");
    assert!(err.contains(":5"), "names the line: {err}");
    assert!(err.contains("keep_alive_intervall"), "names the key: {err}");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\ndomains = [\"localhost\"]\n").unwrap();
    let (ok, out, err) = fedrouter(
        dir.path(),
        &["--config", good.to_str().unwrap(), "check-config"],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("valid"));
}

#[tokio::test]
async fn the_binary_runs_on_its_embedded_defaults() {
    // No configuration at all: domain localhost on 127.0.0.1:5222, a
    // generated certificate and the store under ./data.
    let dir = tempfile::tempdir().unwrap();
    let daemon = run_daemon(dir.path(), None);
    assert_eq!(daemon.c2s, "127.0.0.1:5222".parse().unwrap());
    assert!(
        dir.path().join("data/certs/localhost.crt").exists(),
        "a self-signed certificate was generated"
    );
    let (ok, _, err) = fedrouter(
        dir.path(),
        &["user", "add", "alice@localhost", "--password", "pw"],
        None,
    );
    assert!(ok, "{err}");
    sign_in(daemon.c2s, "alice@localhost", "pw")
        .await
        .expect("sign in on the defaults");
}

#[tokio::test]
async fn partners_and_reload_work_against_the_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedrouter.toml");
    let base = "[server]\ndomains = [\"localhost\"]\ndata_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n\
                [s2s]\nlisten = [\"127.0.0.1:0\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(
        &cfg,
        format!("{base}[[partner]]\ndomain = \"one.example\"\npartner_type = \"federated\"\n"),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    // Not running: the table comes from the file.
    let (ok, out, err) = fedrouter(dir.path(), &["--config", c, "partners"], None);
    assert!(ok, "{err}");
    assert!(
        out.contains("one.example") && out.contains("federated") && out.contains("not running"),
        "{out}"
    );
    assert!(out.contains("negotiation mode"), "{out}");

    let daemon = run_daemon(dir.path(), Some(&cfg));
    let (ok, out, err) = fedrouter(dir.path(), &["--config", c, "partners"], None);
    assert!(ok, "{err}");
    assert!(
        out.contains("one.example") && out.contains("state"),
        "live state: {out}"
    );

    // An invalid file is refused with its error, by `reload` and by SIGHUP,
    // and the running configuration stays in force. (`partners` is asked
    // through a second, valid file naming the same data directory.)
    let other = dir.path().join("other.toml");
    std::fs::write(&other, base).unwrap();
    let o = other.to_str().unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{base}[[partner]]\ndomain = \"two.example\"\ntls_negotiation = \"not_supported\"\n"
        ),
    )
    .unwrap();
    let (ok, _, err) = fedrouter(dir.path(), &["--config", c, "reload"], None);
    assert!(!ok, "an invalid configuration was accepted");
    assert!(
        err.contains("partner[0]")
            && err.contains("two.example")
            && err.contains("SASL must have TLS"),
        "{err}"
    );
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(daemon.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, out, err) = fedrouter(dir.path(), &["--config", o, "partners"], None);
    assert!(ok, "{err}");
    assert!(
        out.contains("one.example") && !out.contains("two.example"),
        "the old configuration stays: {out}"
    );

    // A valid one takes effect, and a local session survives it.
    fedrouter(
        dir.path(),
        &[
            "--config",
            o,
            "user",
            "add",
            "alice@localhost",
            "--password",
            "pw",
        ],
        None,
    );
    let mut alice = sign_in(daemon.c2s, "alice@localhost", "pw").await.unwrap();
    std::fs::write(
        &cfg,
        format!("{base}[[partner]]\ndomain = \"two.example\"\n"),
    )
    .unwrap();
    let (ok, out, err) = fedrouter(dir.path(), &["--config", c, "reload"], None);
    assert!(ok, "{err}");
    assert!(out.contains("reloaded"), "{out}");
    let (_, out, _) = fedrouter(dir.path(), &["--config", c, "partners"], None);
    assert!(
        out.contains("two.example") && !out.contains("one.example"),
        "{out}"
    );
    let r = alice
        .iq(
            "p",
            "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await
        .expect("the local session survived the reload");
    assert_eq!(r.type_().as_deref(), Some("result"));
}

#[tokio::test]
async fn user_import_adds_many_users_from_standard_input_whether_the_daemon_runs_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedrouter.toml");
    std::fs::write(
        &cfg,
        "[server]\ndomains = [\"localhost\"]\ndata_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n[s2s]\nlisten = [\"127.0.0.1:0\"]\n[metrics]\nlisten = \"\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let import =
        |input: &str| fedrouter(dir.path(), &["--config", c, "user", "import"], Some(input));

    // Stopped: straight into the store. A bad line stops it before anything is added.
    let (ok, _, err) = import("lt1@localhost pw one\nnot a jid@ x\n");
    assert!(!ok && err.contains("line 2"), "a bad line is named: {err}");
    let (ok, out, err) = import("# users\nlt1@localhost pw one\n\nlt2@localhost pw2\n");
    assert!(ok, "import while stopped: {err}");
    assert!(out.contains("imported 2 users"), "{out}");

    // Running: through the control socket; an existing user stops it.
    let daemon = run_daemon(dir.path(), Some(&cfg));
    let (ok, out, err) = import("lt3@localhost pw3\nlt4@localhost pw4\n");
    assert!(ok, "import while running: {err}");
    assert!(out.contains("imported 2 users"), "{out}");
    let (ok, _, err) = import("lt5@localhost pw5\nlt1@localhost again\n");
    assert!(
        !ok && err.contains("already exists") && err.contains("1 of 2"),
        "{err}"
    );

    for (jid, pw) in [
        ("lt1@localhost", "pw one"),
        ("lt2@localhost", "pw2"),
        ("lt3@localhost", "pw3"),
        ("lt5@localhost", "pw5"),
    ] {
        sign_in(daemon.c2s, jid, pw)
            .await
            .unwrap_or_else(|e| panic!("{jid} signs in: {e}"));
    }
    let (ok, out, _) = fedrouter(dir.path(), &["--config", c, "user", "list"], None);
    assert!(ok && out.lines().count() == 5, "{out}");
}

#[tokio::test]
async fn sigterm_ends_the_daemon_within_shutdown_grace_while_a_thousand_peers_flood_db_verify_and_never_read()
 {
    use tokio::io::AsyncWriteExt;
    fedrouter::transport::raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedrouter.toml");
    std::fs::write(
        &cfg,
        "[server]\ndomains = [\"localhost\"]\ndata_dir = \"data\"\nshutdown_grace = 3\nwrite_timeout = 2\n\
         [c2s]\nlisten = [\"127.0.0.1:0\"]\n[s2s]\nlisten = [\"127.0.0.1:0\"]\n\
         max_unauthenticated = 200\nmax_unauthenticated_per_ip = 10\nmax_pre_auth_elements = 100\n\
         [metrics]\nlisten = \"\"\n",
    )
    .unwrap();
    let mut daemon = run_daemon(dir.path(), Some(&cfg));
    let s2s = daemon.s2s.expect("the daemon reported its s2s address");
    // 1,000 connections from ten addresses, each a stream header and 150
    // db:verify (past the element cap), never reading a byte of the answers.
    let mut flood = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='flood.test' to='localhost' version='1.0'>",
    );
    for i in 0..150 {
        flood.push_str(&format!(
            "<db:verify from='flood.test' to='localhost' id='f{i}'>{}</db:verify>",
            "k".repeat(64)
        ));
    }
    let flood: std::sync::Arc<[u8]> = flood.into_bytes().into();
    let mut floods = tokio::task::JoinSet::new();
    for c in 0..1000u32 {
        let flood = flood.clone();
        floods.spawn(async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::from(([127, 0, 0, 2 + (c % 10) as u8], 0)))
                .unwrap();
            let mut s = tokio::time::timeout(TIMEOUT, sock.connect(s2s))
                .await
                .expect("connect timed out")
                .expect("connect");
            // The daemon may close first, or stop reading: either is fine.
            let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&flood)).await;
            s
        });
    }
    let mut held = Vec::new();
    while let Some(s) = floods.join_next().await {
        held.push(s.expect("flood task"));
    }
    assert_eq!(held.len(), 1000);
    // The daemon still serves a local user through the flood.
    let (ok, _, err) = fedrouter(
        dir.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "user",
            "add",
            "alice@localhost",
            "--password",
            "pw",
        ],
        None,
    );
    assert!(ok, "{err}");
    sign_in(daemon.c2s, "alice@localhost", "pw")
        .await
        .expect("sign in during the flood");

    // SIGTERM with every flood socket open and unread: the daemon ends, and
    // cleanly, within shutdown_grace (3 s) plus 2 s.
    let pid = daemon.child.id();
    let started = std::time::Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = std::mem::replace(
        &mut daemon.child,
        Command::new("true").spawn().expect("spawn true"),
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let exit = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
        panic!("the daemon was still running 5 s after SIGTERM (pid {pid})")
    });
    let exit = exit.expect("wait");
    let took = started.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(exit.success(), "the daemon exited with {exit}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} to end the daemon (shutdown_grace 3 s)"
    );
    drop(held);
}

/// A crash (SIGKILL) after offline messages were read and written to the
/// user's socket, before the session confirmed them: the restarted daemon
/// still has every one of them.
#[tokio::test]
async fn offline_messages_read_when_the_daemon_is_killed_are_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedrouter.toml");
    std::fs::write(
        &cfg,
        "[server]\ndomains = [\"localhost\"]\ndata_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n\
         [s2s]\nlisten = []\n[metrics]\nlisten = \"\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    for (user, pw) in [("alice@localhost", "a-pass"), ("carol@localhost", "c-pass")] {
        add_user(dir.path(), c, user, pw);
    }
    let mut daemon = run_daemon(dir.path(), Some(&cfg));
    let mut alice = sign_in(daemon.c2s, "alice@localhost", "a-pass")
        .await
        .unwrap();
    for i in 0..5 {
        alice
            .send(format!(
                "<message to='carol@localhost' type='chat'><body>kept {i}</body></message>"
            ))
            .await
            .unwrap();
    }
    common::sync(&mut alice).await;
    let read_all = |mut carol: Client| async move {
        carol.send("<presence/>").await.unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            let m =
                common::expect(&mut carol, "an offline message", |s| s.name() == "message").await;
            got.push(common::body(&m).unwrap_or_default());
        }
        (carol, got)
    };
    let expected: Vec<String> = (0..5).map(|i| format!("kept {i}")).collect();
    let carol = sign_in(daemon.c2s, "carol@localhost", "c-pass")
        .await
        .unwrap();
    let (_carol, got) = read_all(carol).await;
    assert_eq!(got, expected);
    // Killed while the session is within its confirmation grace.
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();

    let daemon = run_daemon(dir.path(), Some(&cfg));
    let carol = sign_in(daemon.c2s, "carol@localhost", "c-pass")
        .await
        .unwrap();
    let (_carol, got) = read_all(carol).await;
    assert_eq!(got, expected, "every offline message survived the crash");
}

/// `s2s.durable_queue`: messages a user sent to a remote domain that could
/// not be reached, and that the daemon acknowledged (XEP-0198 `<a h/>`),
/// survive SIGKILL: the restarted daemon sends every one of them, once and
/// in order, as soon as the domain answers.
#[tokio::test]
async fn with_durable_queue_acknowledged_messages_for_an_unreachable_domain_survive_sigkill() {
    use fedrouter::stream::s2s::PeerPolicy;
    use std::net::Ipv4Addr;
    use testkit::dns::TestDns;
    use testkit::s2s::{ListenerConfig, LoadOptions, S2sListener, random_secret, server_tls};

    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // r.test points at a port nobody listens on (yet).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    dns.add_srv("_xmpp-server._tcp.r.test", 10, 5, port, "xmpp.r.test");
    dns.add_a("xmpp.r.test", Ipv4Addr::LOCALHOST);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fedrouter.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndomains = [\"localhost\"]\ndata_dir = \"data\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n\
             [s2s]\nlisten = []\ndns_nameservers = [\"{}\"]\nallow_private_targets = [\"127.0.0.0/8\"]\n\
             unlisted_domains = \"allow\"\nunlisted_partner_type = \"federated\"\ndurable_queue = true\n\
             [gateway]\nstream_establishment_timeout = 120\n[metrics]\nlisten = \"\"\n{}",
            dns.addr(),
            common::FEDERATION_ALLOWED
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    add_user(dir.path(), c, "alice@localhost", "a-pass");

    let mut daemon = run_daemon(dir.path(), Some(&cfg));
    let mut alice = sign_in(daemon.c2s, "alice@localhost", "a-pass")
        .await
        .unwrap();
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>").await.unwrap();
    common::expect(&mut alice, "<enabled/>", |s| s.local_name() == "enabled").await;
    for i in 0..20 {
        alice
            .send(format!(
                "<message to='bob@r.test' type='chat' id='d{i}'><body>durable {i}</body></message>"
            ))
            .await
            .unwrap();
    }
    alice.send("<r xmlns='urn:xmpp:sm:3'/>").await.unwrap();
    let a = common::expect(&mut alice, "<a/>", |s| s.local_name() == "a").await;
    let a = common::text(&a);
    assert!(a.contains("h='20'") || a.contains("h=\"20\""), "{a}");
    // Acknowledged, waiting for r.test: killed.
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    drop(alice);

    // r.test comes up; the daemon starts again.
    let mut r = S2sListener::start(ListenerConfig {
        domain: "r.test".into(),
        secret: random_secret(),
        server_tls: server_tls(testkit::ca::self_signed(&["r.test"]).certified_key(), None),
        verifier: None,
        policy: PeerPolicy::open_federation(),
        timeout: TIMEOUT,
        load: LoadOptions {
            trust_dialback: true,
            ..Default::default()
        },
    })
    .await
    .unwrap();
    dns.clear();
    dns.add_srv(
        "_xmpp-server._tcp.r.test",
        10,
        5,
        r.addr().port(),
        "xmpp.r.test",
    );
    dns.add_a("xmpp.r.test", Ipv4Addr::LOCALHOST);
    let _daemon = run_daemon(dir.path(), Some(&cfg));
    let mut link = r
        .accept(Duration::from_secs(30))
        .await
        .expect("a stream to r.test");
    for i in 0..20 {
        let m = link.recv().await.unwrap();
        assert_eq!(
            common::body(&m),
            Some(format!("durable {i}")),
            "{}",
            common::text(&m)
        );
        assert!(
            m.from().is_some_and(|f| f.starts_with("alice@localhost/")),
            "{}",
            common::text(&m)
        );
    }
}
