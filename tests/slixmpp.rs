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
