//! The Prometheus endpoint is real and its counters move with traffic.

mod common;

use common::*;

#[tokio::test]
async fn scraping_metrics_shows_the_counters_move() {
    let server = TestServer::start().await;
    server.add_user("alice", "a");
    server.add_user("bob", "b");
    let before = server.scrape().await;
    assert!(
        before.starts_with("HTTP/1.1 200"),
        "{}",
        &before[..before.len().min(200)]
    );
    let msgs_before = metric(
        &before,
        "fedrouter_stanzas_total",
        &[("dir", "in"), ("kind", "message")],
    );
    let offline_before = metric(
        &before,
        "fedrouter_offline_messages_total",
        &[("event", "stored")],
    );
    let errors_before = metric(
        &before,
        "fedrouter_stream_errors_total",
        &[("condition", "not-well-formed")],
    );

    let mut alice = server.client("alice", "a").await;
    let mut bob = server.client("bob", "b").await;
    bob.send("<presence/>").await.unwrap();
    for i in 0..10 {
        alice
            .send(format!(
                "<message to='bob@{DOMAIN}'><body>{i}</body></message>"
            ))
            .await
            .unwrap();
    }
    for _ in 0..10 {
        expect(&mut bob, "a message", |s| s.name() == "message").await;
    }
    alice
        .send(format!(
            "<message to='nobody-home@{DOMAIN}'><body>x</body></message>"
        ))
        .await
        .unwrap();
    server.add_user("carol", "c");
    alice
        .send(format!(
            "<message to='carol@{DOMAIN}'><body>x</body></message>"
        ))
        .await
        .unwrap();
    alice
        .iq(
            "p",
            "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await
        .unwrap();
    let mut raw = server.raw().await;
    raw.send_raw("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><a></b>").await.unwrap();
    raw.expect_stream_error().await.unwrap();

    // The offline message is counted once committed to disk.
    let stored = |t: &str| {
        metric(
            t,
            "fedrouter_offline_messages_total",
            &[("event", "stored")],
        )
    };
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let after = loop {
        let after = server.scrape().await;
        if stored(&after) >= offline_before + 1.0 {
            break after;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the offline message was never counted as stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let msgs_after = metric(
        &after,
        "fedrouter_stanzas_total",
        &[("dir", "in"), ("kind", "message")],
    );
    assert!(
        msgs_after >= msgs_before + 12.0,
        "messages in: {msgs_before} -> {msgs_after}"
    );
    assert!(
        metric(
            &after,
            "fedrouter_stream_errors_total",
            &[("condition", "not-well-formed")]
        ) >= errors_before + 1.0
    );
    assert!(
        metric(&after, "fedrouter_sessions", &[("kind", "c2s")]) >= 2.0,
        "two sessions are online"
    );
    assert!(metric(&after, "fedrouter_bytes_total", &[("dir", "in")]) > 0.0);
    assert!(
        after.contains("fedrouter_route_seconds_bucket{"),
        "the routing histogram has real buckets"
    );
}
