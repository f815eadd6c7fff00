//! Proves the peer harness (tests/peers/) on its own: a real Prosody (p.test)
//! and a real ejabberd (e.test) federate with each other through the test
//! DNS and certificates, once with SASL EXTERNAL (test CA trusted by both,
//! dialback off) and once with dialback (self-signed certificates, no CA).
//! alice@p.test subscribes to bob@e.test, bob approves, and a message from
//! alice reaches bob. Everything fedrouter's interop tests reuse is exercised.

mod peers;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use fedrouter::xml::Stanza;
use peers::proc::tail;
use peers::{Dns, Ejabberd, EjabberdOpts, PeerCerts, Prosody, ProsodyOpts, Record};
use testkit::client::{Client, ClientError};

const P_DOMAIN: &str = "p.test";
const E_DOMAIN: &str = "e.test";
const P_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const E_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Test CA trusted by both, `s2s_secure_auth`, no dialback.
    External,
    /// Self-signed certificates, no trusted CA, dialback.
    Dialback,
}

struct Peers {
    certs: PeerCerts,
    dns: Dns,
    prosody: Prosody,
    ejabberd: Ejabberd,
    _dir: tempfile::TempDir,
}

async fn start_peers(mode: Mode) -> Peers {
    let certs = PeerCerts::new();
    let (p_cert, e_cert) = match mode {
        Mode::External => (certs.issue(P_DOMAIN), certs.issue(E_DOMAIN)),
        Mode::Dialback => (
            PeerCerts::self_signed(P_DOMAIN),
            PeerCerts::self_signed(E_DOMAIN),
        ),
    };
    let trust = (mode == Mode::External).then(|| certs.ca_pem.clone());
    let secure = mode == Mode::External;

    let dns_addr = peers::free_dns_addr(DNS_IP);
    let mut p_opts = ProsodyOpts::new(P_DOMAIN, P_IP, dns_addr, p_cert);
    p_opts.trust_ca = trust.clone();
    p_opts.secure_auth = secure;
    let records = vec![
        Record::xmpp_server(P_DOMAIN, P_DOMAIN, p_opts.s2s_port),
        Record::a(P_DOMAIN, P_IP),
        // ejabberd's s2s port is picked below; its SRV record is added then.
        Record::a(E_DOMAIN, E_IP),
    ];
    let hosts = records
        .iter()
        .filter_map(|r| match r {
            Record::A { name, ip } => Some((name.clone(), *ip)),
            _ => None,
        })
        .collect();
    let mut e_opts = EjabberdOpts::new(E_DOMAIN, E_IP, dns_addr, hosts, e_cert);
    e_opts.trust_ca = trust;
    e_opts.secure_auth = secure;
    let mut records = records;
    records.push(Record::xmpp_server(E_DOMAIN, E_DOMAIN, e_opts.s2s_port));

    let mut dir = peers::peer_dir("peer-dns-", None);
    peers::maybe_keep(&mut dir, "dns");
    let dns = Dns::start(dir.path(), dns_addr, &records);
    let (prosody, ejabberd) = tokio::join!(Prosody::start(p_opts), Ejabberd::start(e_opts));
    Peers {
        certs,
        dns,
        prosody,
        ejabberd,
        _dir: dir,
    }
}

fn text(s: &Stanza) -> String {
    String::from_utf8_lossy(s.bytes()).into_owned()
}

/// Receives until a stanza's text contains all of `needles`.
async fn expect(c: &mut Client, what: &str, needles: &[&str]) -> Result<Stanza, String> {
    c.recv_until(|s| {
        let t = text(s);
        needles.iter().all(|n| t.contains(n))
    })
    .await
    .map_err(|e: ClientError| format!("{} waiting for {what}: {e}", c.jid))
}

async fn scenario(p: &Peers, mode: Mode) -> Result<(), String> {
    let ca = (mode == Mode::External).then_some(&p.certs.ca_der);
    let mut alice = peers::connect(p.prosody.c2s_addr(), "alice@p.test", "alice-pw", ca).await;
    let mut bob = peers::connect(p.ejabberd.c2s_addr(), "bob@e.test", "bob-pw", ca).await;
    for c in [&mut alice, &mut bob] {
        // Roster first: Prosody only delivers subscription stanzas and
        // roster pushes to "interested" resources.
        c.iq(
            "r1",
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await
        .map_err(|e| format!("roster get: {e}"))?;
        c.send("<presence/>").await.map_err(|e| e.to_string())?;
    }

    let t = Instant::now();
    alice
        .send("<presence to='bob@e.test' type='subscribe'/>")
        .await
        .map_err(|e| e.to_string())?;
    expect(
        &mut bob,
        "the subscription request",
        &["type='subscribe'", "alice@p.test"],
    )
    .await
    .map_err(|e| {
        format!("bob got no subscription request from alice@p.test (p.test → e.test s2s): {e}")
    })?;
    eprintln!("{mode:?}: subscribe p.test → e.test in {:?}", t.elapsed());

    let t = Instant::now();
    bob.send("<presence to='alice@p.test' type='subscribed'/>")
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut alice, "the approval", &["subscribed", "bob@e.test"])
        .await
        .map_err(|e| format!("alice got no approval from bob@e.test (e.test → p.test s2s): {e}"))?;
    eprintln!("{mode:?}: subscribed e.test → p.test in {:?}", t.elapsed());

    let t = Instant::now();
    let body = format!("hello bob, from p.test ({mode:?})");
    alice
        .send(format!(
            "<message to='bob@e.test' type='chat' id='m1'><body>{body}</body></message>"
        ))
        .await
        .map_err(|e| e.to_string())?;
    let m = expect(&mut bob, "alice's message", &["<message", &body])
        .await
        .map_err(|e| format!("bob did not get alice's message: {e}"))?;
    let from = m.from().map(|f| f.into_owned()).unwrap_or_default();
    if !from.starts_with("alice@p.test") {
        return Err(format!(
            "message from {from:?}, not alice@p.test: {}",
            text(&m)
        ));
    }
    eprintln!("{mode:?}: message p.test → e.test in {:?}", t.elapsed());
    Ok(())
}

/// After both peers restarted: accounts survived, and messages cross the
/// federation both ways on new s2s connections.
async fn after_restart(p: &Peers) -> Result<(), String> {
    let ca = Some(&p.certs.ca_der);
    let mut alice = peers::connect(p.prosody.c2s_addr(), "alice@p.test", "alice-pw", ca).await;
    let mut bob = peers::connect(p.ejabberd.c2s_addr(), "bob@e.test", "bob-pw", ca).await;
    for c in [&mut alice, &mut bob] {
        c.send("<presence/>").await.map_err(|e| e.to_string())?;
    }
    let t = Instant::now();
    alice
        .send("<message to='bob@e.test' type='chat'><body>again, bob</body></message>")
        .await
        .map_err(|e| e.to_string())?;
    expect(
        &mut bob,
        "alice's message after restart",
        &["<message", "again, bob"],
    )
    .await?;
    bob.send("<message to='alice@p.test' type='chat'><body>hi alice</body></message>")
        .await
        .map_err(|e| e.to_string())?;
    expect(
        &mut alice,
        "bob's message after restart",
        &["<message", "hi alice"],
    )
    .await?;
    eprintln!("restart: messages both ways in {:?}", t.elapsed());
    Ok(())
}

fn dump(p: &Peers) -> String {
    format!(
        "\n===== prosody log (tail) =====\n{}\n===== ejabberd log (tail) =====\n{}\n===== dns log (tail) =====\n{}",
        tail(&p.prosody.log(), 80),
        tail(&p.ejabberd.log(), 60),
        tail(&p.dns.log(), 30)
    )
}

async fn run(mode: Mode) {
    let t0 = Instant::now();
    let mut p = start_peers(mode).await;
    eprintln!("{mode:?}: peers up in {:?}", t0.elapsed());
    p.prosody.register("alice", "alice-pw");
    p.ejabberd.register("bob", "bob-pw");
    let result = tokio::time::timeout(Duration::from_secs(45), scenario(&p, mode))
        .await
        .unwrap_or_else(|_| Err("scenario timed out after 45 s".into()));
    if let Err(e) = result {
        panic!("{mode:?}: {e}{}", dump(&p));
    }
    // The federation used the intended authentication, in both directions
    // (ejabberd logs one line per direction).
    let how = match mode {
        Mode::External => "EXTERNAL",
        Mode::Dialback => "dialback",
    };
    let lines = [
        format!("Accepted inbound s2s {how} authentication p.test -> e.test"),
        format!("Accepted outbound s2s {how} authentication e.test -> p.test"),
    ];
    // ejabberd's logger writes asynchronously: on a loaded machine the
    // lines land a little after the stanzas did. Wait for them (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut elog = p.ejabberd.log();
    while !lines.iter().all(|l| elog.contains(l.as_str())) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        elog = p.ejabberd.log();
    }
    for line in lines {
        assert!(
            elog.contains(&line),
            "{mode:?}: ejabberd never logged {line:?}{}",
            dump(&p)
        );
    }
    if mode == Mode::External {
        let plog = p.prosody.log();
        assert!(
            plog.contains("SASL EXTERNAL with e.test succeeded")
                && !plog.contains("falling back to dialback"),
            "{mode:?}: Prosody did not use SASL EXTERNAL alone{}",
            dump(&p)
        );
    }
    if mode == Mode::Dialback {
        // The bulk paths the load comparison provisions its users with.
        let many: Vec<(String, String)> = (1..=3)
            .map(|n| (format!("lt{n}"), format!("pw &'<{n}>")))
            .collect();
        p.prosody.register_many(&many);
        p.ejabberd.register_many(&many);
        peers::connect(p.prosody.c2s_addr(), "lt3@p.test", "pw &'<3>", None).await;
        peers::connect(p.ejabberd.c2s_addr(), "lt3@e.test", "pw &'<3>", None).await;
    }
    if mode == Mode::External {
        // restart() keeps data and ports, and the peers federate again.
        let t = Instant::now();
        tokio::join!(p.prosody.restart(), p.ejabberd.restart());
        eprintln!("{mode:?}: both peers restarted in {:?}", t.elapsed());
        let result = tokio::time::timeout(Duration::from_secs(30), after_restart(&p))
            .await
            .unwrap_or_else(|_| Err("after restart: timed out after 30 s".into()));
        if let Err(e) = result {
            panic!("{mode:?}: {e}{}", dump(&p));
        }
    }
    eprintln!("{mode:?}: done in {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_and_ejabberd_federate_with_sasl_external() {
    run(Mode::External).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_and_ejabberd_federate_with_dialback() {
    run(Mode::Dialback).await;
}
