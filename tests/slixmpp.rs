//! Interoperability with a standard client library: slixmpp (installed by
//! the README test command) signs in over STARTTLS with SCRAM-SHA-256 and
//! chats with a user of our own client.

mod common;

use std::process::Stdio;

use common::*;

#[tokio::test]
async fn slixmpp_signs_in_with_scram_sha_256_over_starttls_and_chats() {
    let server = TestServer::start().await;
    server.add_user("alice", "py-secret");
    server.add_user("bob", "rs-secret");
    let mut bob = server.client("bob", "rs-secret").await;
    bob.send("<presence/>").await.unwrap();
    let ca = server
        .daemon
        .config
        .server
        .data_dir
        .join("certs/localhost.crt");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/slixmpp_chat.py");
    let count = 50;
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(format!("alice@{DOMAIN}"))
        .arg("py-secret")
        .arg("127.0.0.1")
        .arg(server.addr().port().to_string())
        .arg(&ca)
        .arg(format!("bob@{DOMAIN}"))
        .arg(count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (run the README test command, which installs slixmpp)");
    for i in 0..count {
        let m = expect(&mut bob, "a message from slixmpp", |s| {
            s.name() == "message"
        })
        .await;
        assert_eq!(body(&m).as_deref(), Some(format!("py{i}").as_str()));
        let from = m.from().unwrap().into_owned();
        assert!(from.starts_with(&format!("alice@{DOMAIN}/")), "{from}");
        bob.send(format!(
            "<message to='{from}' type='chat'><body>rs{i}</body></message>"
        ))
        .await
        .unwrap();
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("slixmpp did not finish")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK SCRAM-SHA-256"),
        "slixmpp: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// slixmpp's XEP-0198 plugin enables Stream Management with resumption,
/// receives messages, has its TCP connection cut without a stream close,
/// and resumes on a new connection: every message arrives exactly once, in
/// order (the script checks), half of them sent while it was away.
#[tokio::test]
async fn slixmpp_resumes_a_cut_stream_management_session_and_gets_every_message_once_in_order() {
    use tokio::io::AsyncBufReadExt;
    let server = TestServer::start().await;
    server.add_user("carol", "py-secret");
    server.add_user("alice", "rs-secret");
    let mut alice = server.client("alice", "rs-secret").await;
    let ca = server
        .daemon
        .config
        .server
        .data_dir
        .join("certs/localhost.crt");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/slixmpp_sm.py");
    let count = 40;
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(format!("carol@{DOMAIN}"))
        .arg("py-secret")
        .arg("127.0.0.1")
        .arg(server.addr().port().to_string())
        .arg(&ca)
        .arg(count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (run the README test command, which installs slixmpp)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async move || {
        tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("slixmpp said nothing for 30 s")
            .unwrap()
            .unwrap_or_default()
    };
    assert_eq!(next_line().await, "READY");
    let send = async |alice: &mut testkit::client::Client, range: std::ops::Range<usize>| {
        for i in range {
            alice
                .send(format!(
                    "<message to='carol@{DOMAIN}' type='chat'><body>sm{i}</body></message>"
                ))
                .await
                .unwrap();
        }
    };
    send(&mut alice, 0..count / 2 + 3).await;
    assert_eq!(next_line().await, "CUT");
    // The rest while carol's session waits to be resumed.
    send(&mut alice, count / 2 + 3..count).await;
    let last = next_line().await;
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("slixmpp did not finish")
        .unwrap();
    assert!(
        out.status.success() && last == "OK resumed",
        "slixmpp: {last}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = server.scrape().await;
    assert!(event_count(&m, "c2s_sm_resumed") >= 1.0, "{m}");
}
