//! XEP-0198 Stream Management on client streams, against the real daemon:
//! the feature is offered after authentication, `<enable/>` starts the
//! counts, `<r/>` and `<a/>` go both ways, and what the client did not
//! acknowledge when its connection dies is delivered again, never lost.

mod common;

use common::*;
use testkit::client::Client;

const SM: &str = "urn:xmpp:sm:3";

/// The next element named `name` (skipping the server's `<r/>` requests
/// and anything else).
async fn next_named(c: &mut Client, name: &str) -> fedrouter::xml::Stanza {
    expect(c, name, |s| s.name() == name).await
}

#[tokio::test]
async fn unacknowledged_messages_of_a_cut_stream_management_session_are_delivered_at_the_next_login()
 {
    let server = TestServer::start().await;
    server.add_user("alice", "a-pass");
    server.add_user("carol", "c-pass");
    let mut carol = server.client("carol", "c-pass").await;
    carol.send("<presence/>").await.unwrap();
    // Without resumption: the session ends with its connection.
    carol.send(format!("<enable xmlns='{SM}'/>")).await.unwrap();
    // Stanzas the server sent since <enabled/>: what our h counts.
    let mut handled = 0u32;
    let is_stanza = |s: &fedrouter::xml::Stanza| matches!(s.name(), "message" | "presence" | "iq");
    loop {
        let s = carol.recv().await.unwrap();
        if s.name() == "enabled" {
            break;
        }
    }
    // Our own count: one stanza since <enable/>.
    carol
        .send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await
        .unwrap();
    carol.send(format!("<r xmlns='{SM}'/>")).await.unwrap();
    let a = loop {
        let s = carol.recv().await.unwrap();
        if is_stanza(&s) {
            handled += 1;
        }
        if s.name() == "a" {
            break s;
        }
    };
    assert!(
        text(&a).contains("h='1'") || text(&a).contains("h=\"1\""),
        "{}",
        text(&a)
    );

    let mut alice = server.client("alice", "a-pass").await;
    for i in 0..5 {
        alice
            .send(format!(
                "<message to='carol@{DOMAIN}' type='chat'><body>sm {i}</body></message>"
            ))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let mut h_after_two = 0;
    while got.len() < 5 {
        let s = carol.recv().await.expect("carol reads");
        if is_stanza(&s) {
            handled += 1;
        }
        if s.name() == "message" {
            got.push(body(&s).unwrap_or_default());
        }
        if got.len() == 2 && h_after_two == 0 {
            h_after_two = handled;
        }
    }
    assert_eq!(got, (0..5).map(|i| format!("sm {i}")).collect::<Vec<_>>());
    // She acknowledges everything up to the second message, then her
    // connection is cut.
    carol
        .send(format!("<a xmlns='{SM}' h='{h_after_two}'/>"))
        .await
        .unwrap();
    // Three are still unacknowledged: the server asks again at once (which
    // also shows it took the ack in before the cut).
    next_named(&mut carol, "r").await;
    drop(carol);

    // The next session gets the three she never acknowledged, in order.
    let mut carol = server.client("carol", "c-pass").await;
    carol.send("<presence/>").await.unwrap();
    let mut again = Vec::new();
    while again.len() < 3 {
        let m = expect(&mut carol, "an unacknowledged message", |s| {
            s.name() == "message"
        })
        .await;
        again.push(body(&m).unwrap_or_default());
    }
    assert_eq!(again, ["sm 2", "sm 3", "sm 4"]);
}

#[tokio::test]
async fn stream_management_is_offered_after_authentication_and_refused_before_bind() {
    let server = TestServer::start().await;
    server.add_user("carol", "c-pass");
    let (mut raw, features) = Client::authenticated(&server.config("carol", "c-pass"))
        .await
        .unwrap();
    assert!(features.child("sm", SM).is_some(), "{features:?}");
    raw.send_raw(format!("<enable xmlns='{SM}'/>"))
        .await
        .unwrap();
    let failed = raw.recv().await.unwrap();
    assert_eq!(failed.name(), "failed", "{}", text(&failed));
    assert!(
        text(&failed).contains("unexpected-request"),
        "{}",
        text(&failed)
    );
}

#[tokio::test]
async fn an_ack_for_more_than_was_sent_ends_the_stream() {
    let server = TestServer::start().await;
    server.add_user("carol", "c-pass");
    let mut carol = server.client("carol", "c-pass").await;
    carol.send(format!("<enable xmlns='{SM}'/>")).await.unwrap();
    next_named(&mut carol, "enabled").await;
    carol
        .send(format!("<a xmlns='{SM}' h='7'/>"))
        .await
        .unwrap();
    let end = loop {
        match carol.recv().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&end, testkit::client::ClientError::Stream(e)
            if e.condition == fedrouter::error::StreamCondition::UndefinedCondition),
        "{end:?}"
    );
}

/// Carol, online with Stream Management and resumption enabled: her
/// client, her full JID, and the server's `<enabled/>`.
async fn resumable_carol(
    server: &TestServer,
) -> (Client, fedrouter::jid::FullJid, fedrouter::xml::Stanza) {
    let mut carol = server.client("carol", "c-pass").await;
    let jid = carol.jid.clone();
    carol.send("<presence/>").await.unwrap();
    carol
        .send(format!("<enable xmlns='{SM}' resume='true'/>"))
        .await
        .unwrap();
    let enabled = next_named(&mut carol, "enabled").await;
    (carol, jid, enabled)
}

/// The text of attribute `name` in an element's serialisation.
fn attr(s: &fedrouter::xml::Stanza, name: &str) -> Option<String> {
    let t = text(s);
    for q in ['\'', '"'] {
        let key = format!("{name}={q}");
        if let Some(i) = t.find(&key) {
            let rest = &t[i + key.len()..];
            return rest.find(q).map(|j| rest[..j].to_string());
        }
    }
    None
}

#[tokio::test]
async fn a_cut_session_is_resumed_on_a_new_connection_with_every_unacknowledged_message_once_in_order()
 {
    let server = TestServer::start().await;
    server.add_user("alice", "a-pass");
    server.add_user("carol", "c-pass");
    let (mut carol, jid, enabled) = resumable_carol(&server).await;
    let id = attr(&enabled, "id").expect("a resumption id");
    assert_eq!(attr(&enabled, "resume").as_deref(), Some("true"));
    assert_eq!(attr(&enabled, "max").as_deref(), Some("300"));

    let mut alice = server.client("alice", "a-pass").await;
    let send = |i: usize| format!("<message to='{jid}' type='chat'><body>r {i}</body></message>");
    for i in 0..3 {
        alice.send(send(i)).await.unwrap();
    }
    let mut handled = 0u32;
    let mut h_after_first = None;
    let mut got = Vec::new();
    while got.len() < 3 {
        let s = carol.recv().await.unwrap();
        if matches!(s.name(), "message" | "presence" | "iq") {
            handled += 1;
        }
        if s.name() == "message" {
            got.push(body(&s).unwrap_or_default());
            h_after_first.get_or_insert(handled);
        }
    }
    let h = h_after_first.unwrap();
    carol
        .send(format!("<a xmlns='{SM}' h='{h}'/>"))
        .await
        .unwrap();
    // Cut, without closing the stream; two more arrive meanwhile.
    drop(carol);
    for i in 3..5 {
        alice.send(send(i)).await.unwrap();
    }
    sync(&mut alice).await;

    let (mut conn, _features) = Client::authenticated(&server.config("carol", "c-pass"))
        .await
        .unwrap();
    conn.send_raw(format!("<resume xmlns='{SM}' previd='{id}' h='{h}'/>"))
        .await
        .unwrap();
    let mut carol = Client {
        conn,
        jid: jid.clone(),
    };
    let resumed = next_named(&mut carol, "resumed").await;
    assert_eq!(attr(&resumed, "previd").as_deref(), Some(id.as_str()));
    let mut again = Vec::new();
    while again.len() < 4 {
        let s = match carol.recv().await {
            Ok(s) => s,
            Err(e) => panic!("got {again:?}, then {e:?}"),
        };
        if s.name() == "message" {
            again.push(body(&s).unwrap_or_default());
        }
    }
    assert_eq!(
        again,
        ["r 1", "r 2", "r 3", "r 4"],
        "each unacknowledged one once, in order"
    );
    // The resumed session is the same one: it still sends and receives.
    carol
        .send(format!(
            "<message to='{}' type='chat'><body>back</body></message>",
            alice.jid
        ))
        .await
        .unwrap();
    let m = next_named(&mut alice, "message").await;
    assert_eq!(body(&m).as_deref(), Some("back"));
    assert_eq!(m.from().as_deref(), Some(jid.to_string().as_str()));
}

#[tokio::test]
async fn resuming_an_unknown_or_another_users_session_fails_and_the_stream_may_bind() {
    let server = TestServer::start().await;
    server.add_user("carol", "c-pass");
    server.add_user("mallory", "m-pass");
    let mut carol = server.client("carol", "c-pass").await;
    carol
        .send(format!("<enable xmlns='{SM}' resume='true'/>"))
        .await
        .unwrap();
    let id = attr(&next_named(&mut carol, "enabled").await, "id").unwrap();
    for (previd, user, pw) in [
        ("nope", "carol", "c-pass"),
        (id.as_str(), "mallory", "m-pass"),
    ] {
        let (mut conn, _) = Client::authenticated(&server.config(user, pw))
            .await
            .unwrap();
        conn.send_raw(format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>"))
            .await
            .unwrap();
        let failed = conn.recv().await.unwrap();
        assert_eq!(failed.name(), "failed", "{}", text(&failed));
        assert!(
            text(&failed).contains("item-not-found"),
            "{}",
            text(&failed)
        );
        conn.send_raw(
            "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        )
        .await
        .unwrap();
        let bound = conn.recv().await.unwrap();
        assert!(text(&bound).contains("<jid>"), "{}", text(&bound));
    }
    // Carol's own session was not disturbed.
    carol
        .iq(
            "still",
            "<iq type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_session_not_resumed_within_resume_timeout_hands_its_unacknowledged_messages_to_offline_storage()
 {
    let server = TestServer::start_with_c2s("resume_timeout = 1\n", "").await;
    server.add_user("alice", "a-pass");
    server.add_user("carol", "c-pass");
    let (mut carol, jid, enabled) = resumable_carol(&server).await;
    assert_eq!(attr(&enabled, "max").as_deref(), Some("1"));
    let mut alice = server.client("alice", "a-pass").await;
    for i in 0..3 {
        alice
            .send(format!(
                "<message to='{jid}' type='chat'><body>t {i}</body></message>"
            ))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        next_named(&mut carol, "message").await;
    }
    let before = server.scrape().await;
    drop(carol);
    // Waits for the daemon to give the session up.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while event_count(&server.scrape().await, "c2s_sm_resume_expired")
        <= event_count(&before, "c2s_sm_resume_expired")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the detached session was never given up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut carol = server.client("carol", "c-pass").await;
    carol.send("<presence/>").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = next_named(&mut carol, "message").await;
        got.push(body(&m).unwrap_or_default());
    }
    assert_eq!(got, ["t 0", "t 1", "t 2"]);
}

#[tokio::test]
async fn the_clients_max_shortens_the_resumption_wait_and_never_lengthens_it() {
    let server = TestServer::start_with_c2s("resume_timeout = 60\n", "").await;
    server.add_user("carol", "c-pass");
    for (asked, granted) in [("5", "5"), ("600", "60"), ("0", "1")] {
        let mut carol = server.client("carol", "c-pass").await;
        carol
            .send(format!(
                "<enable xmlns='{SM}' resume='true' max='{asked}'/>"
            ))
            .await
            .unwrap();
        let enabled = next_named(&mut carol, "enabled").await;
        assert_eq!(
            attr(&enabled, "max").as_deref(),
            Some(granted),
            "max='{asked}'"
        );
    }
}
