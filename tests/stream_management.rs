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
    carol
        .send(format!("<enable xmlns='{SM}' resume='true'/>"))
        .await
        .unwrap();
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
    let mut requested = false;
    let mut h_after_two = 0;
    while got.len() < 5 {
        let s = carol.recv().await.expect("carol reads");
        if is_stanza(&s) {
            handled += 1;
        }
        match s.name() {
            "message" => got.push(body(&s).unwrap_or_default()),
            "r" => requested = true,
            _ => {}
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
    carol
        .iq(
            "sync",
            "<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await
        .unwrap();
    if !requested {
        // The server asks for acks once it has sent stanzas.
        next_named(&mut carol, "r").await;
    }
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
