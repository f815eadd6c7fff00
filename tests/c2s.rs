//! Local users end to end: the real daemon on loopback with real TLS,
//! driven by XMPP clients over sockets.

mod common;

use common::*;
use fedrouter::error::StreamCondition;
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
