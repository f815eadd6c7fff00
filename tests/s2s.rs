//! Federation between two real fedrouter daemons on loopback, found
//! through a test DNS server, in each authentication mode, plus the
//! failure answers (no DNS records, a server that never speaks).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::federation::*;
use common::*;
use testkit::client::Client;

async fn chat_across(fed: &Federation, mode: Mode) {
    fed.a.add_user("alice", "a-pw");
    fed.b.add_user("bob", "b-pw");
    let mut alice: Client = fed.a.client("alice", "a-pw").await;
    let mut bob: Client = fed.b.client("bob", "b-pw").await;
    alice.send("<presence/>").await.unwrap();
    bob.send("<presence/>").await.unwrap();
    // Unlisted domains are public unverified partners: each user adds the
    // other first, or the other's requests would be dropped.
    add_contact(&mut alice, "bob@b.test").await;
    add_contact(&mut bob, "alice@a.test").await;

    // Subscriptions both ways, across the federation.
    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await
        .unwrap();
    expect(&mut bob, "alice's subscribe", |s| {
        is_presence_from(s, "alice@a.test", Some("subscribe"))
    })
    .await;
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await
        .unwrap();
    bob.send("<presence to='alice@a.test' type='subscribe'/>")
        .await
        .unwrap();
    expect(&mut alice, "bob's subscribe", |s| {
        is_presence_from(s, "bob@b.test", Some("subscribe"))
    })
    .await;
    alice
        .send("<presence to='bob@b.test' type='subscribed'/>")
        .await
        .unwrap();
    // Presence flows both ways once subscribed. The peers are public
    // unverified partners, so the personal note (<status/>) is removed on
    // the way out while the rest of the presence arrives.
    bob.send("<presence><show>chat</show><status>bob's note</status></presence>")
        .await
        .unwrap();
    let p = expect(&mut alice, "bob's presence", |s| {
        is_presence_from(s, "bob@b.test/", None) && text(s).contains("<show>chat</show>")
    })
    .await;
    assert!(
        !text(&p).contains("bob's note"),
        "status crossed to a public unverified partner: {}",
        text(&p)
    );
    alice
        .send("<presence><show>dnd</show><status>alice's note</status></presence>")
        .await
        .unwrap();
    let p = expect(&mut bob, "alice's presence", |s| {
        is_presence_from(s, "alice@a.test/", None) && text(s).contains("<show>dnd</show>")
    })
    .await;
    assert!(!text(&p).contains("alice's note"), "{}", text(&p));

    // 1,000 messages in order, none lost.
    exchange_in_order(&mut alice, &mut bob, "bob@b.test", "f", 1000).await;
    // And back.
    bob.send("<message to='alice@a.test' type='chat'><body>reply</body></message>")
        .await
        .unwrap();
    let m = expect(&mut alice, "bob's reply", |s| s.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("reply"));

    // Going offline is seen across the federation.
    bob.close().await.unwrap();
    expect(&mut alice, "bob unavailable", |s| {
        is_presence_from(s, "bob@b.test/", Some("unavailable"))
    })
    .await;

    // The metrics show the federated streams and how they authenticated.
    let m = fed.a.scrape().await;
    let method = match mode {
        Mode::SaslExternal => "sasl_external",
        Mode::Dialback => "dialback_tls",
    };
    assert!(
        metric(
            &m,
            "fedrouter_s2s_auth_total",
            &[("dir", "out"), ("method", method), ("result", "success")]
        ) >= 1.0,
        "{mode:?}: outbound auth by {method}:\n{}",
        m.lines()
            .filter(|l| l.contains("s2s"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metric(
            &m,
            "fedrouter_s2s_connections",
            &[("dir", "out"), ("state", "up")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn two_fedrouters_federate_with_starttls_and_sasl_external() {
    let fed = federation(Mode::SaslExternal, "").await;
    chat_across(&fed, Mode::SaslExternal).await;
}

#[tokio::test]
async fn two_fedrouters_federate_with_starttls_and_dialback_when_certificates_are_untrusted() {
    let fed = federation(Mode::Dialback, "").await;
    chat_across(&fed, Mode::Dialback).await;
}

#[tokio::test]
async fn two_fedrouters_federate_over_direct_tls_found_by_xmpps_server_records() {
    let fed = federation_with(Mode::SaslExternal, "", true).await;
    chat_across(&fed, Mode::SaslExternal).await;
}

#[tokio::test]
async fn a_stanza_to_a_domain_without_dns_records_bounces_with_remote_server_not_found() {
    let fed = federation(Mode::Dialback, "").await;
    fed.a.add_user("alice", "pw");
    let mut alice = fed.a.client("alice", "pw").await;
    alice
        .send("<message to='someone@nowhere.test' id='n1'><body>hello?</body></message>")
        .await
        .unwrap();
    let e = expect(&mut alice, "the bounce", |s| s.name() == "message").await;
    assert_eq!(e.type_().as_deref(), Some("error"));
    assert_eq!(e.id().as_deref(), Some("n1"));
    assert!(text(&e).contains("remote-server-not-found"), "{}", text(&e));
}

#[tokio::test]
async fn a_server_that_accepts_but_never_speaks_gets_remote_server_timeout() {
    let fed = federation(
        Mode::Dialback,
        "[gateway]\nstream_establishment_timeout = 2\n",
    )
    .await;
    // A TCP server that accepts and then says nothing, ever.
    let silent = testkit::s2s::SilentServer::start().await.unwrap();
    let port = silent.addr().port();
    fed.dns.add_srv(
        "_xmpp-server._tcp.silent.test",
        10,
        5,
        port,
        "xmpp.silent.test",
    );
    fed.dns.add_a("xmpp.silent.test", Ipv4Addr::LOCALHOST);
    fed.a.add_user("alice", "pw");
    let mut alice = fed.a.client("alice", "pw").await;
    let sent = tokio::time::Instant::now();
    alice
        .send("<message to='x@silent.test' id='t1'><body>anyone?</body></message>")
        .await
        .unwrap();
    let e = expect(&mut alice, "the bounce", |s| s.name() == "message").await;
    let waited = sent.elapsed();
    assert!(text(&e).contains("remote-server-timeout"), "{}", text(&e));
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(8),
        "bounced after {waited:?}, expected about stream_establishment_timeout (2 s)"
    );
    assert_eq!(silent.connections(), 1);
}

#[tokio::test]
async fn remote_contacts_are_re_probed_every_subscription_refresh_interval() {
    let fed = federation(
        Mode::SaslExternal,
        "[gateway]\nsubscription_refresh_interval = 1\n",
    )
    .await;
    fed.a.add_user("alice", "a-pw");
    fed.b.add_user("bob", "b-pw");
    let mut alice = fed.a.client("alice", "a-pw").await;
    let mut bob = fed.b.client("bob", "b-pw").await;
    add_contact(&mut alice, "bob@b.test").await;
    add_contact(&mut bob, "alice@a.test").await;
    bob.send("<presence/>").await.unwrap();
    alice.send("<presence/>").await.unwrap();
    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await
        .unwrap();
    expect(&mut bob, "alice's subscribe", |s| {
        is_presence_from(s, "alice@a.test", Some("subscribe"))
    })
    .await;
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await
        .unwrap();
    expect(&mut alice, "bob's approval", |s| {
        is_presence_from(s, "bob@b.test", Some("subscribed"))
    })
    .await;
    // Bob says nothing more, yet alice keeps hearing his presence: her
    // server re-probes him every second and his server answers.
    for round in 0..3 {
        expect(
            &mut alice,
            &format!("bob's presence, refresh {round}"),
            |s| is_presence_from(s, "bob@b.test/", None),
        )
        .await;
    }
}
