//! Bounded queues against the real daemon: a client that does not read is
//! closed as a slow consumer instead of holding the daemon's memory, and
//! what cannot be queued is answered, never silently lost.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// A queue of one largest stanza, so the tests fill it quickly; shaping
/// off, so the floods arrive flat out.
const SMALL_QUEUES: &str =
    "[gateway]\nmax_stanza_size = 65536\nsession_queue_bytes = 65536\nc2s_rate_limit = 0\n";

fn slow_consumers(scrape: &str) -> f64 {
    metric(
        scrape,
        "fedrouter_dropped_total",
        &[("reason", "slow_consumer")],
    )
}

#[tokio::test]
async fn a_client_flooding_pings_without_reading_is_closed_as_a_slow_consumer() {
    let server = TestServer::start_with(SMALL_QUEUES).await;
    server.add_user("alice", "wonderland");
    let mut alice = server.client("alice", "wonderland").await;
    let batch: String = (0..1000)
        .map(|i| format!("<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>"))
        .collect();

    // Flood until the daemon says it closed the session. Before, the
    // session waited for room in its own full writer queue forever.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut batches = 0u32;
    loop {
        if batches.is_multiple_of(20) && slow_consumers(&server.scrape().await) >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flooding client was not closed after {batches} batches of 1000 pings"
        );
        // A write that blocks means the daemon no longer reads: wait for the
        // close instead.
        let _ = tokio::time::timeout(Duration::from_millis(200), alice.send(&batch)).await;
        batches += 1;
    }

    // The connection ends: the pongs still in the socket buffers, then the
    // close, within a bounded wait.
    alice.set_timeout(Duration::from_secs(15));
    let end = loop {
        match alice.recv().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        is_closed(&end)
            || matches!(&end, testkit::client::ClientError::Stream(e)
                if e.condition == fedrouter::error::StreamCondition::ResourceConstraint),
        "the slow consumer's connection ended with {end:?}"
    );
    let scrape = server.scrape().await;
    assert_eq!(slow_consumers(&scrape), 1.0);
    assert!(
        metric(
            &scrape,
            "fedrouter_stream_errors_total",
            &[("condition", "resource-constraint")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_client_sending_faster_than_c2s_rate_limit_is_slowed_down_not_disconnected() {
    const RATE: usize = 64 * 1024;
    let server = TestServer::start_with(&format!("[gateway]\nc2s_rate_limit = {RATE}\n")).await;
    server.add_user("alice", "wonderland");
    server.add_user("bob", "builder");
    let mut bob = server.client("bob", "builder").await;
    bob.send("<presence/>").await.expect("bob's presence");
    let mut alice = server.client("alice", "wonderland").await;
    bob.set_timeout(Duration::from_secs(30));

    // Four times the rate, of which one second's worth is the burst.
    let body = "y".repeat(RATE - 256);
    let started = Instant::now();
    for i in 0..4 {
        alice
            .send(format!(
                "<message to='bob@{DOMAIN}' id='r{i}' type='chat'><body>{body}</body></message>"
            ))
            .await
            .expect("alice writes");
    }
    for i in 0..4 {
        let id = format!("r{i}");
        let m = expect(&mut bob, "alice's message", |s| {
            s.name() == "message" && s.id().as_deref() == Some(id.as_str())
        })
        .await;
        assert_eq!(body_len(&m), RATE - 256);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "4 x {RATE} B at {RATE} B/s with a one-second burst took only {took:?}"
    );
    // Slowed, not refused: alice is still connected and answered.
    let pong = alice
        .iq(
            "after",
            "<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await
        .expect("alice still connected");
    assert_eq!(pong.type_().as_deref(), Some("result"));
}

fn body_len(s: &fedrouter::xml::Stanza) -> usize {
    body(s).map_or(0, |b| b.len())
}

/// A daemon with user alice/wonderland, and DNS that sends `silent.test`
/// to a server that accepts TCP and never says a word. `server_extra` goes
/// in `[server]`, `gateway` in `[gateway]`.
async fn silent_domain_site(
    server_extra: &str,
    gateway: &str,
) -> (
    TestServer,
    testkit::dns::TestDns,
    testkit::s2s::SilentServer,
) {
    use std::net::Ipv4Addr;
    let dns = testkit::dns::TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("test DNS");
    let silent = testkit::s2s::SilentServer::start().await.unwrap();
    dns.add_srv(
        "_xmpp-server._tcp.silent.test",
        10,
        5,
        silent.addr().port(),
        "xmpp.silent.test",
    );
    dns.add_a("xmpp.silent.test", Ipv4Addr::LOCALHOST);
    let server = TestServer::start_domain(
        DOMAIN,
        server_extra,
        &format!(
            "[s2s]\nlisten = [\"127.0.0.1:0\"]\ndns_nameservers = [\"{}\"]\n\
             allow_private_targets = [\"127.0.0.0/8\"]\nunlisted_domains = \"allow\"\n\
             unlisted_partner_type = \"federated\"\n\
             [gateway]\nstream_establishment_timeout = 60\n{gateway}{FEDERATION_ALLOWED}",
            dns.addr()
        ),
    )
    .await;
    server.add_user("alice", "wonderland");
    (server, dns, silent)
}

/// A graceful stop answers what waits for a remote domain with
/// `remote-server-timeout`, and only then closes the sender's session, with
/// `<system-shutdown/>`.
#[tokio::test]
async fn a_graceful_stop_bounces_what_waits_for_a_remote_domain_then_closes_with_system_shutdown() {
    let (server, _dns, _silent) = silent_domain_site("shutdown_grace = 10\n", "").await;
    let mut alice = server.client("alice", "wonderland").await;
    for i in 0..3 {
        alice
            .send(format!(
                "<message to='bob@silent.test' id='w{i}' type='chat'><body>{i}</body></message>"
            ))
            .await
            .unwrap();
    }
    sync(&mut alice).await;
    let TestServer { daemon, .. } = server;
    let stop = tokio::spawn(daemon.shutdown());
    let mut bounced = Vec::new();
    let end = loop {
        match alice.recv().await {
            Ok(s) if s.name() == "message" && s.type_().as_deref() == Some("error") => {
                assert!(text(&s).contains("remote-server-timeout"), "{}", text(&s));
                bounced.push(s.id().unwrap_or_default().to_string());
            }
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(bounced, ["w0", "w1", "w2"]);
    assert!(
        matches!(&end, testkit::client::ClientError::Stream(e)
            if e.condition == fedrouter::error::StreamCondition::SystemShutdown),
        "{end:?}"
    );
    tokio::time::timeout(TIMEOUT, stop)
        .await
        .expect("shutdown within its grace")
        .unwrap();
}

/// A remote domain whose server accepts TCP and never says a word: what a
/// local user sends it waits in the domain's queue (`s2s_queue_bytes`,
/// here 16 KiB). Presence may fill only three quarters of it, so the
/// messages sent after a presence flood still find room; what finds none
/// is answered with `resource-constraint`, and everything shed is counted.
#[tokio::test]
async fn a_silent_remote_domain_sheds_presence_before_messages_and_answers_the_overflow_with_resource_constraint()
 {
    let (server, _dns, _silent) = silent_domain_site(
        "",
        "max_stanza_size = 16384\ns2s_queue_bytes = 16384\nc2s_rate_limit = 0\n",
    )
    .await;
    let mut alice = server.client("alice", "wonderland").await;
    let shed = |scrape: &str, kind: &str| {
        metric(
            scrape,
            "fedrouter_shed_total",
            &[("queue", "s2s"), ("kind", kind)],
        )
    };
    let before = server.scrape().await;

    // 20 directed presences of about 1 KiB: some 12 fit in three quarters.
    let status = "s".repeat(1000);
    let mut flood = String::new();
    for i in 0..20 {
        flood.push_str(&format!(
            "<presence to='bob@silent.test' id='p{i}'><status>{status}</status></presence>"
        ));
    }
    alice.send(&flood).await.expect("presence flood");
    // Directed presence reaches federation through the sender's shard,
    // messages straight from the session: wait until the presence is in.
    let deadline = Instant::now() + TIMEOUT;
    while shed(&server.scrape().await, "presence") - shed(&before, "presence") < 5.0 {
        assert!(
            Instant::now() < deadline,
            "presence past three quarters of the queue was not shed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then ten messages of the same size: the first ones take the last
    // quarter, the last ones find the queue full.
    let body = "m".repeat(1000);
    let mut msgs = String::new();
    for i in 0..10 {
        msgs.push_str(&format!(
            "<message to='bob@silent.test' id='m{i}' type='chat'><body>{body}</body></message>"
        ));
    }
    alice.send(&msgs).await.expect("messages");

    // Bounces come back in the order the domain's queue refused them; the
    // last message is always refused.
    let mut refused = Vec::new();
    while !refused.contains(&"m9".to_string()) {
        let e = expect(&mut alice, "a bounced message", |s| {
            s.name() == "message" && s.type_().as_deref() == Some("error")
        })
        .await;
        assert!(
            text(&e).contains("resource-constraint")
                && (text(&e).contains("type=\"wait\"") || text(&e).contains("type='wait'")),
            "{}",
            text(&e)
        );
        refused.push(e.id().unwrap_or_default().to_string());
    }
    for kept in ["m0", "m1", "m2"] {
        assert!(
            !refused.iter().any(|r| r == kept),
            "{kept} was refused although presence may fill only three quarters: {refused:?}"
        );
    }
    let after = server.scrape().await;
    assert_eq!(
        shed(&after, "message") - shed(&before, "message"),
        refused.len() as f64,
        "every refused message is counted"
    );
}
