//! Offline storage against the real daemon: messages stay stored until a
//! session has them (written to its socket, and the session either still up
//! after a short grace or closed by the client itself), and a full quota is
//! answered, never silent.

mod common;

use std::time::Duration;

use common::*;
use testkit::client::Client;
use tokio::time::Instant;

fn offline(scrape: &str, event: &str) -> f64 {
    metric(
        scrape,
        "fedrouter_offline_messages_total",
        &[("event", event)],
    )
}

/// Sends `n` messages from `from` to carol and waits until they are routed
/// (a ping round trip orders us after them).
async fn send_to_carol(from: &mut Client, tag: &str, n: usize) {
    for i in 0..n {
        from.send(format!(
            "<message to='carol@{DOMAIN}' type='chat' id='{tag}{i}'><body>{tag} {i}</body></message>"
        ))
        .await
        .unwrap();
    }
    sync(from).await;
}

/// Carol signs in and sends her initial presence; returns once her shard
/// has processed it (and so read her offline messages): a round trip
/// through that shard has come back.
async fn carol_online(server: &TestServer) -> Client {
    let mut carol = server.client("carol", "c-pass").await;
    carol.send("<presence/>").await.unwrap();
    carol
        .iq(
            "r",
            "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await
        .unwrap();
    carol
}

/// Carol comes online and reads her messages up to a live one from alice,
/// which is queued behind whatever offline messages she had; returns the
/// bodies before it.
async fn carol_reads(server: &TestServer, alice: &mut Client) -> (Client, Vec<String>) {
    let mut carol = carol_online(server).await;
    alice
        .send(format!(
            "<message to='carol@{DOMAIN}/{}' type='chat' id='live'><body>live</body></message>",
            carol.jid.resource()
        ))
        .await
        .unwrap();
    let mut bodies = Vec::new();
    loop {
        let m = expect(&mut carol, "a message", |s| s.name() == "message").await;
        if m.id().as_deref() == Some("live") {
            return (carol, bodies);
        }
        bodies.push(body(&m).unwrap_or_default());
    }
}

#[tokio::test]
async fn offline_messages_outlive_a_cut_connection_and_are_deleted_once_a_session_survives_the_grace()
 {
    let server = TestServer::start().await;
    server.add_user("alice", "a-pass");
    server.add_user("carol", "c-pass");
    let mut alice = server.client("alice", "a-pass").await;
    send_to_carol(&mut alice, "m", 3).await;
    let expected = vec!["m 0", "m 1", "m 2"];

    // Carol receives them, and her connection is cut (no </stream:stream>)
    // before the grace is over: they stay stored.
    let (carol, got) = carol_reads(&server, &mut alice).await;
    assert_eq!(got, expected);
    drop(carol);

    // The next session gets them again, in order, and stays up.
    let before = server.scrape().await;
    let (_carol, got) = carol_reads(&server, &mut alice).await;
    assert_eq!(got, expected, "nothing lost by the cut connection");
    let deadline = Instant::now() + TIMEOUT;
    while offline(&server.scrape().await, "acknowledged") - offline(&before, "acknowledged") < 3.0 {
        assert!(
            Instant::now() < deadline,
            "the messages were not confirmed delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A session that survived the grace had them: a third one finds none.
    let (_carol2, got) = carol_reads(&server, &mut alice).await;
    assert!(
        got.is_empty(),
        "delivered twice after confirmation: {got:?}"
    );
}

#[tokio::test]
async fn a_full_offline_quota_answers_the_sender_with_resource_constraint_and_moves_the_metric() {
    let server = TestServer::start_with(
        "[gateway]\nmax_stanza_size = 10000\n\
         [storage]\noffline_max_messages_per_user = 2\noffline_max_bytes_per_user = 12000\n",
    )
    .await;
    server.add_user("alice", "a-pass");
    server.add_user("carol", "c-pass");
    let mut alice = server.client("alice", "a-pass").await;
    let before = server.scrape().await;
    // By count: the third of three small messages.
    send_to_carol(&mut alice, "m", 3).await;
    let e = expect(&mut alice, "the refusal", |s| {
        s.name() == "message" && s.type_().as_deref() == Some("error")
    })
    .await;
    assert_eq!(e.id().as_deref(), Some("m2"), "{}", text(&e));
    assert!(
        text(&e).contains("resource-constraint")
            && (text(&e).contains("'wait'") || text(&e).contains("\"wait\"")),
        "{}",
        text(&e)
    );
    assert_eq!(
        offline(&server.scrape().await, "refused") - offline(&before, "refused"),
        1.0
    );
    // Carol reads both and closes her stream herself: delivered, deleted.
    let (carol, got) = carol_reads(&server, &mut alice).await;
    assert_eq!(got, vec!["m 0", "m 1"]);
    carol.close().await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while offline(&server.scrape().await, "acknowledged") - offline(&before, "acknowledged") < 2.0 {
        assert!(Instant::now() < deadline, "a clean close did not confirm");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // By bytes: 7,000 fit in 12,000, a second 7,000 do not.
    let big = "b".repeat(7000);
    for id in ["b0", "b1"] {
        alice
            .send(format!(
                "<message to='carol@{DOMAIN}' id='{id}'><body>{big}</body></message>"
            ))
            .await
            .unwrap();
    }
    let e = expect(&mut alice, "the refusal by bytes", |s| {
        s.name() == "message" && s.type_().as_deref() == Some("error")
    })
    .await;
    assert_eq!(e.id().as_deref(), Some("b1"), "{}", text(&e));
    assert!(text(&e).contains("resource-constraint"), "{}", text(&e));
    assert_eq!(
        offline(&server.scrape().await, "refused") - offline(&before, "refused"),
        2.0
    );
}

/// A graceful stop with a client that has stopped reading: what its
/// session never wrote is stored offline, nothing is lost and nothing is
/// duplicated. The client gets what reached its socket; after a restart it
/// gets the rest, in order.
#[tokio::test]
async fn a_graceful_stop_stores_what_a_client_never_read_and_the_next_login_gets_the_rest_in_order()
{
    const N: usize = 4000;
    let server = TestServer::start_domain(
        DOMAIN,
        "shutdown_grace = 15\n",
        "[gateway]\nsession_queue_bytes = 33554432\nc2s_rate_limit = 0\n\
         [storage]\noffline_max_messages_per_user = 10000\noffline_max_bytes_per_user = 67108864\n",
    )
    .await;
    server.add_user("alice", "a-pass");
    server.add_user("carol", "c-pass");
    let mut carol = carol_online(&server).await;
    // Carol stops reading. 16 MB of messages: more than the sockets hold.
    let mut alice = server.client("alice", "a-pass").await;
    let pad = "p".repeat(4000);
    for chunk in 0..N / 100 {
        let batch: String = (chunk * 100..chunk * 100 + 100)
            .map(|i| {
                format!("<message to='carol@{DOMAIN}' type='chat'><body>{i} {pad}</body></message>")
            })
            .collect();
        alice.send(&batch).await.unwrap();
    }
    sync(&mut alice).await;

    let TestServer {
        daemon,
        dir,
        domain,
    } = server;
    let started = Instant::now();
    daemon.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(17),
        "shutdown took {:?}",
        started.elapsed()
    );

    // What reached carol's socket, read now, up to where it was cut.
    let index = |m: &fedrouter::xml::Stanza| -> usize {
        body(m)
            .and_then(|b| b.split(' ').next().map(str::to_string))
            .and_then(|n| n.parse().ok())
            .expect("a numbered body")
    };
    let mut got = Vec::new();
    carol.set_timeout(Duration::from_secs(10));
    while let Ok(s) = carol.recv().await {
        if s.name() == "message" {
            got.push(index(&s));
        }
    }
    let before_stop = got.len();
    eprintln!(
        "DEBUG before stop {before_stop} first {:?} last {:?}",
        got.first(),
        got.last()
    );
    assert!(before_stop < N, "the test needs messages left in the queue");

    // Restarted on the same data: the rest comes as offline messages.
    let config = fedrouter::config::Config::load(&dir.path().join("fedrouter.toml")).unwrap();
    let server = TestServer {
        daemon: fedrouter::start(config).await.unwrap(),
        dir,
        domain,
    };
    let mut carol = server.client("carol", "c-pass").await;
    carol.send("<presence/>").await.unwrap();
    while got.len() < N {
        let m = match tokio::time::timeout(Duration::from_secs(5), carol.recv()).await {
            Ok(Ok(m)) => m,
            other => {
                let missing: Vec<_> = (0..N).filter(|i| !got.contains(i)).collect();
                let mut sorted = got.clone();
                sorted.sort();
                sorted.dedup();
                panic!(
                    "DEBUG after restart got {} total ({} distinct); missing {missing:?}; {other:?}",
                    got.len(),
                    sorted.len()
                )
            }
        };
        if m.name() == "message" {
            got.push(index(&m));
        }
    }
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "{before_stop} before the stop, the rest after: each once, in order"
    );
}
