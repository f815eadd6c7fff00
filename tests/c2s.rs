//! Local users end to end: the real daemon on loopback with real TLS,
//! driven by XMPP clients over sockets.

mod common;

use common::*;
use fedrouter::error::{StreamCondition, StreamError};
use testkit::client::{ClientError, Mechanism};

async fn subscribe_both_ways(
    alice: &mut testkit::client::Client,
    bob: &mut testkit::client::Client,
) {
    let (a, b) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    alice
        .send(format!("<presence to='{b}' type='subscribe'/>"))
        .await
        .unwrap();
    expect(bob, "alice's subscribe", |s| {
        is_presence_from(s, &a, Some("subscribe"))
    })
    .await;
    bob.send(format!("<presence to='{a}' type='subscribed'/>"))
        .await
        .unwrap();
    bob.send(format!("<presence to='{a}' type='subscribe'/>"))
        .await
        .unwrap();
    expect(alice, "bob's subscribe", |s| {
        is_presence_from(s, &b, Some("subscribe"))
    })
    .await;
    alice
        .send(format!("<presence to='{b}' type='subscribed'/>"))
        .await
        .unwrap();
}

/// Alice and bob, online, each subscribed to the other's presence.
async fn online_and_subscribed_both_ways(
    server: &TestServer,
) -> (testkit::client::Client, testkit::client::Client) {
    server.add_user("alice", "wonderland");
    server.add_user("bob", "builder");
    let mut alice = server.client("alice", "wonderland").await;
    let mut bob = server.client("bob", "builder").await;
    alice.send("<presence/>").await.unwrap();
    bob.send("<presence/>").await.unwrap();
    subscribe_both_ways(&mut alice, &mut bob).await;
    (alice, bob)
}

#[tokio::test]
async fn two_users_subscribe_see_each_other_come_and_go_and_exchange_1000_messages_in_order() {
    let server = TestServer::start().await;
    let (mut alice, mut bob) = online_and_subscribed_both_ways(&server).await;

    // Both rosters now say `both`.
    let r = alice
        .iq(
            "r1",
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await
        .unwrap();
    assert!(
        text(&r).contains("subscription='both'"),
        "alice's roster: {}",
        text(&r)
    );

    // Each sees the other online: bob re-announces and alice hears it.
    bob.send("<presence><status>building</status></presence>")
        .await
        .unwrap();
    let p = expect(&mut alice, "bob's presence", |s| {
        is_presence_from(s, &format!("bob@{DOMAIN}/"), None)
    })
    .await;
    assert!(text(&p).contains("building"));

    // 1,000 messages, in order, none lost.
    let to = bob.jid.bare().to_string();
    exchange_in_order(&mut alice, &mut bob, &to, "n", 1000).await;

    // Bob goes offline: alice sees it; bob comes back: alice sees that too.
    bob.close().await.unwrap();
    expect(&mut alice, "bob unavailable", |s| {
        is_presence_from(s, &format!("bob@{DOMAIN}/"), Some("unavailable"))
    })
    .await;
    let mut bob = server.client("bob", "builder").await;
    bob.send("<presence/>").await.unwrap();
    expect(&mut alice, "bob available again", |s| {
        is_presence_from(s, &format!("bob@{DOMAIN}/"), None)
    })
    .await;
    // And bob, probing at login, learns that alice is online.
    expect(&mut bob, "alice's presence from the probe", |s| {
        is_presence_from(s, &format!("alice@{DOMAIN}/"), None)
    })
    .await;
}

#[tokio::test]
async fn a_message_to_an_offline_user_is_stored_and_delivered_at_login() {
    let server = TestServer::start().await;
    server.add_user("alice", "a-pass");
    server.add_user("carol", "c-pass");
    let mut alice = server.client("alice", "a-pass").await;
    for i in 0..3 {
        alice
            .send(format!("<message to='carol@{DOMAIN}' type='chat'><body>while you were out {i}</body></message>"))
            .await
            .unwrap();
    }
    // A ping round trip orders us after the messages' routing.
    alice
        .iq(
            "p",
            "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await
        .unwrap();
    let mut carol = server.client("carol", "c-pass").await;
    carol.send("<presence/>").await.unwrap();
    for i in 0..3 {
        let m = expect(&mut carol, "an offline message", |s| s.name() == "message").await;
        assert_eq!(
            body(&m).as_deref(),
            Some(format!("while you were out {i}").as_str())
        );
        assert!(
            text(&m).contains("urn:xmpp:delay"),
            "offline messages carry a delay stamp: {}",
            text(&m)
        );
    }
    // Delivered once: a second login finds nothing.
    carol.close().await.unwrap();
    let mut carol = server.client("carol", "c-pass").await;
    carol.send("<presence/>").await.unwrap();
    carol
        .iq(
            "p2",
            "<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await
        .unwrap();
    alice
        .send(format!(
            "<message to='carol@{DOMAIN}'><body>live</body></message>"
        ))
        .await
        .unwrap();
    let m = expect(&mut carol, "the live message", |s| s.name() == "message").await;
    assert_eq!(
        body(&m).as_deref(),
        Some("live"),
        "the stored messages were not delivered twice"
    );
}

#[tokio::test]
async fn roster_pushes_reach_every_resource() {
    let server = TestServer::start().await;
    server.add_user("dave", "d");
    let mut home = server.client_with_resource("dave", "d", "home").await;
    let mut work = server.client_with_resource("dave", "d", "work").await;
    home.send(
        "<iq type='set' id='set1'><query xmlns='jabber:iq:roster'><item jid='erin@example.net' name='Erin'><group>Friends</group></item></query></iq>",
    )
    .await
    .unwrap();
    // The requester gets both the result and the push, in either order.
    let (mut result, mut pushed) = (false, false);
    while !(result && pushed) {
        let s = home.recv().await.expect("result and push");
        if s.id().as_deref() == Some("set1") {
            assert_eq!(s.type_().as_deref(), Some("result"), "{}", text(&s));
            result = true;
        } else if s.name() == "iq" && s.type_().as_deref() == Some("set") {
            assert!(
                text(&s).contains("erin@example.net") && text(&s).contains("Friends"),
                "{}",
                text(&s)
            );
            pushed = true;
        }
    }
    let push = expect(&mut work, "a roster push", |s| {
        s.name() == "iq" && s.type_().as_deref() == Some("set")
    })
    .await;
    let t = text(&push);
    assert!(
        t.contains("erin@example.net") && t.contains("Friends"),
        "push to work: {t}"
    );
    let r = work
        .iq(
            "get1",
            "<iq type='get' id='get1'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await
        .unwrap();
    assert!(text(&r).contains("name='Erin'"), "{}", text(&r));
    // Removal is pushed to both as well.
    home.send(
        "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='erin@example.net' subscription='remove'/></query></iq>",
    )
    .await
    .unwrap();
    for c in [&mut home, &mut work] {
        expect(c, "the removal push", |s| {
            text(s).contains("subscription='remove'")
        })
        .await;
    }
}

#[tokio::test]
async fn a_stanza_with_a_forged_from_never_reaches_anyone_as_forged() {
    let server = TestServer::start().await;
    server.add_user("alice", "a");
    server.add_user("bob", "b");
    server.add_user("mallory", "m");
    let mut bob = server.client("bob", "b").await;
    bob.send("<presence/>").await.unwrap();
    let mut mallory = server.client("mallory", "m").await;
    mallory
        .send(format!(
            "<message from='alice@{DOMAIN}/x' to='bob@{DOMAIN}'><body>forged</body></message>"
        ))
        .await
        .unwrap();
    let err = mallory.conn.expect_stream_error().await.unwrap();
    assert_eq!(err.condition, StreamCondition::InvalidFrom);
    // What bob receives next is alice's real message, not the forgery.
    let mut alice = server.client("alice", "a").await;
    alice
        .send(format!(
            "<message to='bob@{DOMAIN}'><body>real</body></message>"
        ))
        .await
        .unwrap();
    let m = expect(&mut bob, "a message", |s| s.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("real"));
    assert!(m.from().unwrap().starts_with(&format!("alice@{DOMAIN}/")));
}

#[tokio::test]
async fn messages_to_unknown_users_bounce_with_service_unavailable() {
    let server = TestServer::start().await;
    server.add_user("alice", "a");
    let mut alice = server.client("alice", "a").await;
    alice
        .send(format!(
            "<message to='nobody@{DOMAIN}' id='x1'><body>hi</body></message>"
        ))
        .await
        .unwrap();
    let e = expect(&mut alice, "the bounce", |s| s.name() == "message").await;
    assert_eq!(e.type_().as_deref(), Some("error"));
    assert_eq!(e.id().as_deref(), Some("x1"));
    assert!(text(&e).contains("service-unavailable"), "{}", text(&e));
}

#[tokio::test]
async fn the_server_answers_ping_and_disco_and_refuses_unknown_iqs() {
    let server = TestServer::start().await;
    server.add_user("alice", "a");
    let mut alice = server.client("alice", "a").await;
    let r = alice
        .iq(
            "p",
            &format!("<iq type='get' id='p' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"),
        )
        .await
        .unwrap();
    assert_eq!(r.type_().as_deref(), Some("result"));
    let r = alice
        .iq("d", &format!("<iq type='get' id='d' to='{DOMAIN}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
        .await
        .unwrap();
    assert!(
        text(&r).contains("urn:xmpp:ping") && text(&r).contains("category='server'"),
        "{}",
        text(&r)
    );
    let r = alice
        .iq(
            "v",
            &format!("<iq type='get' id='v' to='{DOMAIN}'><query xmlns='jabber:iq:version'/></iq>"),
        )
        .await
        .unwrap();
    assert_eq!(r.type_().as_deref(), Some("error"));
    assert!(text(&r).contains("service-unavailable"));
}

#[tokio::test]
async fn a_second_session_for_the_same_resource_replaces_the_first_with_conflict() {
    let server = TestServer::start().await;
    server.add_user("alice", "a");
    let mut first = server.client_with_resource("alice", "a", "phone").await;
    let second = server.client_with_resource("alice", "a", "phone").await;
    let err = first.conn.expect_stream_error().await.unwrap();
    assert_eq!(err.condition, StreamCondition::Conflict);
    assert_eq!(second.jid.resource(), "phone");
}

#[tokio::test]
async fn plain_over_tls_works_and_a_wrong_password_is_refused() {
    let server = TestServer::start().await;
    server.add_user("alice", "correct horse");
    let mut cfg = server.config("alice", "correct horse");
    cfg.mechanism = Mechanism::Plain;
    testkit::client::Client::connect(&cfg)
        .await
        .expect("PLAIN over TLS");
    let mut bad = server.config("alice", "wrong");
    for m in [
        Mechanism::Plain,
        Mechanism::Scram(fedrouter::stream::scram::ScramHash::Sha256),
    ] {
        bad.mechanism = m;
        match testkit::client::Client::connect(&bad).await {
            Err(ClientError::Auth(reason)) => {
                assert!(reason.contains("not-authorized"), "{reason}")
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a wrong password was accepted with {m:?}"),
        }
    }
}

#[tokio::test]
async fn scram_sha1_is_offered_and_works() {
    let server = TestServer::start().await;
    server.add_user("alice", "pencil");
    let mut cfg = server.config("alice", "pencil");
    cfg.mechanism = Mechanism::Scram(fedrouter::stream::scram::ScramHash::Sha1);
    testkit::client::Client::connect(&cfg)
        .await
        .expect("SCRAM-SHA-1");
}

#[tokio::test]
async fn a_message_to_a_bare_jid_goes_to_the_highest_priority_resource() {
    let server = TestServer::start().await;
    server.add_user("alice", "a");
    server.add_user("bob", "b");
    let mut low = server.client_with_resource("bob", "b", "low").await;
    let mut high = server.client_with_resource("bob", "b", "high").await;
    low.send("<presence><priority>1</priority></presence>")
        .await
        .unwrap();
    high.send("<presence><priority>5</priority></presence>")
        .await
        .unwrap();
    // Make sure both presences were processed before the message is sent.
    expect(&mut low, "own presence echo of high", |s| {
        is_presence_from(s, &format!("bob@{DOMAIN}/high"), None)
    })
    .await;
    let mut alice = server.client("alice", "a").await;
    alice
        .send(format!(
            "<message to='bob@{DOMAIN}' type='chat'><body>to the best</body></message>"
        ))
        .await
        .unwrap();
    let m = expect(&mut high, "the message", |s| s.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("to the best"));
    // A full-JID message reaches exactly that resource.
    alice
        .send(format!(
            "<message to='bob@{DOMAIN}/low' type='chat'><body>to low</body></message>"
        ))
        .await
        .unwrap();
    let m = expect(&mut low, "the full-JID message", |s| s.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("to low"));
}

#[tokio::test]
async fn a_contact_that_unsubscribes_no_longer_gets_presence_updates() {
    let server = TestServer::start().await;
    let (mut alice, mut bob) = online_and_subscribed_both_ways(&server).await;
    // A broadcast that reaches bob (the shard now knows alice's audience).
    alice
        .send("<presence><status>first</status></presence>")
        .await
        .unwrap();
    expect(&mut bob, "alice's first update", |s| {
        is_presence_from(s, &format!("alice@{DOMAIN}/"), None) && text(s).contains("first")
    })
    .await;
    // Bob stops listening; alice's next update must not reach him. A
    // directed presence after it (the same path through alice's shard, so
    // it cannot overtake) marks how far bob has to look.
    bob.send(format!(
        "<presence to='alice@{DOMAIN}' type='unsubscribe'/>"
    ))
    .await
    .unwrap();
    expect(&mut alice, "bob's unsubscribe", |s| {
        is_presence_from(s, &format!("bob@{DOMAIN}"), Some("unsubscribe"))
    })
    .await;
    alice
        .send("<presence><status>second</status></presence>")
        .await
        .unwrap();
    alice
        .send(format!(
            "<presence to='bob@{DOMAIN}'><status>marker</status></presence>"
        ))
        .await
        .unwrap();
    let mut leaked = false;
    expect(&mut bob, "alice's marker presence", |s| {
        leaked |= text(s).contains("second");
        text(s).contains("marker")
    })
    .await;
    assert!(!leaked, "bob got alice's presence after unsubscribing");
}

/// An admin command through the running daemon's control socket (a
/// blocking client, so off the test's runtime thread).
async fn control(server: &TestServer, words: &[&str]) -> String {
    let data = server.daemon.config.server.data_dir.clone();
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        fedrouter::control::request(&data, &refs)
            .expect("control socket")
            .expect("the daemon answers")
            .expect("the command succeeds")
    })
    .await
    .expect("control client")
}

/// The SASL condition of a refused sign-in.
fn refusal(r: Result<testkit::client::Client, ClientError>) -> String {
    match r {
        Err(ClientError::Auth(reason)) => reason,
        Err(e) => panic!("unexpected error: {e}"),
        Ok(c) => panic!("{} signed in", c.jid),
    }
}

const SCRAM: Mechanism = Mechanism::Scram(fedrouter::stream::scram::ScramHash::Sha256);

/// Polls (bounded) until `local` signs in from `from`: the throttle's
/// window has ended.
async fn signs_in_again(server: &TestServer, from: &str, local: &str, password: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match server.sign_in_from(from, local, password, SCRAM).await {
            Ok(_) => return,
            Err(ClientError::Auth(r)) if r.contains("temporary-auth-failure") => {}
            Err(e) => panic!("{local}: {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{local} still throttled after {TIMEOUT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A server with these failed-login limits in a 3 s window, and users
/// alice (`right`) and bob (`b`).
async fn throttling_server(per_account: u32, per_ip: u32) -> TestServer {
    let server = TestServer::start_with_c2s(
        &format!(
            "max_auth_failures_per_account = {per_account}\nmax_auth_failures_per_ip = {per_ip}\n\
             auth_failure_window = 3\n"
        ),
        "",
    )
    .await;
    server.add_user("alice", "right");
    server.add_user("bob", "b");
    server
}

async fn throttled_total(server: &TestServer) -> f64 {
    let text = server.scrape().await;
    metric(&text, "fedrouter_auth_total", &[("result", "throttled")])
}

#[tokio::test]
async fn failed_logins_throttle_the_account_from_every_address_until_the_window_ends() {
    let server = throttling_server(3, 100).await;
    let before = throttled_total(&server).await;
    // Three wrong passwords, each on its own connection, by both mechanisms.
    for (i, m) in [SCRAM, Mechanism::Plain, SCRAM].into_iter().enumerate() {
        let r = server.sign_in_from("127.0.0.1", "alice", "wrong", m).await;
        assert!(refusal(r).contains("not-authorized"), "attempt {i}");
    }
    // Now even the right password is refused, from another address too.
    for (from, m) in [("127.0.0.1", SCRAM), ("127.0.0.2", Mechanism::Plain)] {
        let r = server.sign_in_from(from, "alice", "right", m).await;
        let reason = refusal(r);
        assert!(
            reason.contains("temporary-auth-failure"),
            "{from}: {reason}"
        );
    }
    // Another account from the same address is unaffected.
    server
        .sign_in_from("127.0.0.1", "bob", "b", SCRAM)
        .await
        .expect("bob is not throttled");
    let after = throttled_total(&server).await;
    assert!(after >= before + 2.0, "throttled {before} -> {after}");
    // After the window, alice signs in again.
    signs_in_again(&server, "127.0.0.2", "alice", "right").await;
}

#[tokio::test]
async fn failed_logins_throttle_the_address_for_every_account_but_not_other_addresses() {
    let server = throttling_server(100, 3).await;
    // Unknown users count against the address as well.
    for user in ["alice", "nobody", "carol"] {
        let r = server.sign_in_from("127.0.0.3", user, "wrong", SCRAM).await;
        assert!(refusal(r).contains("not-authorized"), "{user}");
    }
    let r = server.sign_in_from("127.0.0.3", "bob", "b", SCRAM).await;
    assert!(refusal(r).contains("temporary-auth-failure"));
    server
        .sign_in_from("127.0.0.4", "bob", "b", SCRAM)
        .await
        .expect("another address is unaffected");
    server
        .sign_in_from("127.0.0.4", "alice", "right", Mechanism::Plain)
        .await
        .expect("the account itself is not throttled");
    signs_in_again(&server, "127.0.0.3", "bob", "b").await;
}

#[tokio::test]
async fn new_passwords_get_the_configured_iterations_and_old_4096_ones_still_sign_in() {
    use fedrouter::jid::BareJid;
    use fedrouter::stream::scram::{Credentials, ScramHash};
    let server = TestServer::start_with_c2s("scram_iterations = 5000\n", "").await;
    let store = &server.daemon.store;
    // An account stored before the default went up, with 4096 iterations.
    let old = BareJid::parse("old@localhost").unwrap();
    store
        .create_account(&old, &Credentials::from_password("pw", 4096).unwrap())
        .unwrap();
    for m in [
        Mechanism::Scram(ScramHash::Sha256),
        Mechanism::Scram(ScramHash::Sha1),
        Mechanism::Plain,
    ] {
        server
            .sign_in_from("127.0.0.1", "old", "pw", m)
            .await
            .unwrap_or_else(|e| panic!("{m:?}: {e}"));
    }
    assert_eq!(
        store.credentials(&old).unwrap().unwrap().sha256.iterations,
        4096
    );
    // Added and changed through the running daemon's control socket.
    let pw = fedrouter::control::encode_password("new");
    control(&server, &["user-add", "new@localhost", &pw]).await;
    control(&server, &["user-passwd", "old@localhost", &pw]).await;
    for user in ["new", "old"] {
        let jid = BareJid::parse(&format!("{user}@localhost")).unwrap();
        let creds = store.credentials(&jid).unwrap().unwrap();
        assert_eq!(
            (creds.sha1.iterations, creds.sha256.iterations),
            (5000, 5000),
            "{user}"
        );
        server
            .sign_in_from("127.0.0.1", user, "new", SCRAM)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
    }
}

// ---- connection caps and the idle timeout (issue 9 item 5) ----

/// A raw connection from `from` (127.0.0.x): the stream error the daemon
/// answers it with at once, or `None` when it is let in (it waits for our
/// stream header and says nothing).
async fn refused_from(server: &TestServer, from: &str) -> Option<StreamError> {
    let mut c = testkit::client::Connection::tcp_from(
        server.addr(),
        Some(from.parse().expect("loopback")),
        std::time::Duration::from_millis(500),
    )
    .await
    .expect("connect");
    match c.expect_stream_error().await {
        Ok(e) => Some(e),
        Err(ClientError::Timeout) => None,
        Err(e) => panic!("from {from}: {e}"),
    }
}

#[tokio::test]
async fn client_connections_over_the_global_or_per_ip_cap_get_resource_constraint() {
    let server =
        TestServer::start_with_c2s("connection_limit = 4\nconnection_limit_per_ip = 2\n", "").await;
    server.add_user("alice", "pw");
    let sign_in =
        |from: &'static str| server.sign_in_from(from, "alice", "pw", Mechanism::BestScram);
    let mut held = vec![
        sign_in("127.0.0.2").await.unwrap(),
        sign_in("127.0.0.2").await.unwrap(),
    ];
    let e = refused_from(&server, "127.0.0.2")
        .await
        .expect("over the per-IP cap");
    assert_eq!(e.condition, StreamCondition::ResourceConstraint, "{e}");
    held.push(sign_in("127.0.0.3").await.unwrap());
    held.push(sign_in("127.0.0.4").await.unwrap());
    let e = refused_from(&server, "127.0.0.5")
        .await
        .expect("over the global cap");
    assert_eq!(e.condition, StreamCondition::ResourceConstraint, "{e}");
    // A closed session gives its slot back.
    held.pop().expect("held").close().await.unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while sign_in("127.0.0.5").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let m = server.scrape().await;
    for event in [
        "c2s_connection_limit_reached",
        "c2s_connection_limit_per_ip_reached",
    ] {
        assert!(event_count(&m, event) >= 1.0, "{event}: {m}");
    }
}

fn is_idle_ping(s: &fedrouter::xml::Stanza) -> bool {
    s.name() == "iq"
        && s.type_().as_deref() == Some("get")
        && std::str::from_utf8(s.bytes()).is_ok_and(|t| t.contains("urn:xmpp:ping"))
}

#[tokio::test]
async fn a_silent_client_is_pinged_after_idle_timeout_and_closed_when_it_does_not_answer() {
    let server = TestServer::start_with_c2s("idle_timeout = 1\n", "").await;
    server.add_user("alice", "pw");
    let mut alice = server.client("alice", "pw").await;
    let silent_since = tokio::time::Instant::now();
    let ping = alice.recv().await.expect("a ping");
    assert!(
        is_idle_ping(&ping),
        "{}",
        String::from_utf8_lossy(ping.bytes())
    );
    let e = match alice.recv().await {
        Err(ClientError::Stream(e)) => e,
        other => panic!("expected a stream error, got {other:?}"),
    };
    let waited = silent_since.elapsed();
    assert_eq!(e.condition, StreamCondition::ConnectionTimeout, "{e}");
    assert!(
        waited >= std::time::Duration::from_millis(1800)
            && waited < std::time::Duration::from_secs(5),
        "closed after {waited:?}, expected about 2 s (idle_timeout twice)"
    );
}

#[tokio::test]
async fn a_client_that_answers_the_idle_ping_stays_connected() {
    let server = TestServer::start_with_c2s("idle_timeout = 1\n", "").await;
    server.add_user("alice", "pw");
    let mut alice = server.client("alice", "pw").await;
    // Three rounds: 3 s, well past the 2 s an unanswered ping gets.
    for _ in 0..3 {
        let ping = alice.recv().await.expect("a ping");
        assert!(
            is_idle_ping(&ping),
            "{}",
            String::from_utf8_lossy(ping.bytes())
        );
        let id = ping.id().unwrap_or_default().into_owned();
        alice
            .send(format!("<iq type='result' id='{id}'/>"))
            .await
            .unwrap();
    }
    let pong = alice
        .iq(
            "p1",
            "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await
        .expect("still connected");
    assert_eq!(pong.type_().as_deref(), Some("result"));
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_once_a_write_makes_no_progress_for_write_timeout() {
    // Bob's 16 MiB must not be slowed by read shaping (64 s at the default
    // 256 KiB/s): only alice's side is under test.
    let server = TestServer::start_domain(
        DOMAIN,
        "write_timeout = 1\n",
        "[gateway]\nc2s_rate_limit = 0\n",
    )
    .await;
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let alice = server.client("alice", "pw").await;
    let to = alice.jid.to_string();
    let mut bob = server.client("bob", "pw").await;
    let before = server.scrape().await;
    let timed_out = |m: &str| event_count(m, "write_timed_out");
    // 16 MiB for alice, far more than the loopback socket buffers hold,
    // in few enough stanzas that her session's queue never fills: only the
    // socket write can stall.
    let body = "x".repeat(400 * 1024);
    for i in 0..40 {
        bob.send(format!(
            "<message to='{to}' id='m{i}' type='chat'><body>{body}</body></message>"
        ))
        .await
        .unwrap();
    }
    let sent = tokio::time::Instant::now();
    let deadline = sent + TIMEOUT;
    loop {
        let m = server.scrape().await;
        if timed_out(&m) > timed_out(&before) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write timed out: {m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And the connection is closed: reading it all reaches the end.
    let (mut io, _) = alice.into_parts();
    let mut sink = vec![0u8; 1 << 20];
    let drained = tokio::time::timeout(TIMEOUT, async {
        use tokio::io::AsyncReadExt;
        loop {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "alice's connection was never closed");
}
