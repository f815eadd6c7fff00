//! XEP-0198 between two real fedrouter daemons: a.test reaches b.test
//! through a relay the test cuts in the middle of a flood, as when the
//! network path or b.test's socket dies. The outbound stream keeps every
//! stanza until b.test acknowledges it, resumes the lost stream on the
//! next connection, learns exactly what b.test handled, and resends only
//! the rest: b.test's user gets every message once, in order.

mod common;

use std::time::Duration;

use common::federation::*;
use common::*;
use testkit::client::Client;

const FLOOD: usize = 10_000;

/// Both daemons of a test share the process's event counters, and so do
/// tests running at once: these run one at a time, and count both
/// daemons' events together.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until `n` relayed connections were accepted.
async fn wait_connections(fed: &Federation, n: usize) {
    let proxy = fed.proxy.as_ref().unwrap();
    tokio::time::timeout(TIMEOUT, async {
        while proxy.connections() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a.test never reconnected ({n} connections)"));
}

async fn users(fed: &Federation) -> (Client, Client) {
    fed.a.add_user("alice", "a-pw");
    fed.b.add_user("bob", "b-pw");
    let mut alice = fed.a.client("alice", "a-pw").await;
    let mut bob = fed.b.client("bob", "b-pw").await;
    alice.send("<presence/>").await.unwrap();
    bob.send("<presence/>").await.unwrap();
    add_contact(&mut alice, "bob@b.test").await;
    add_contact(&mut bob, "alice@a.test").await;
    (alice, bob)
}

/// Bob reads messages from alice until `m{n-1}`; each must be the next in
/// order. Cuts the relay when `cut_at` says so.
async fn receive_in_order(bob: &mut Client, fed: &Federation, n: usize, cut_at: &[usize]) {
    let mut next = 0;
    let mut cuts = 0;
    while next < n {
        let s = bob
            .recv()
            .await
            .unwrap_or_else(|e| panic!("after {next} of {n} messages: {e}"));
        if s.name() != "message" {
            continue;
        }
        let got = body(&s).unwrap_or_default();
        assert_eq!(got, format!("m{next}"), "lost, duplicated or out of order");
        next += 1;
        if cut_at.contains(&next) {
            fed.proxy.as_ref().unwrap().cut();
            cuts += 1;
            // The next cut hits the resumed stream, not the dead one.
            if cuts < cut_at.len() {
                wait_connections(fed, cuts + 1).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_across_a_federation_link_cut_twice_arrives_exactly_once_and_in_order() {
    let _serial = SERIAL.lock().await;
    let fed = federation_via_proxy(Mode::SaslExternal, "").await;
    let (mut alice, mut bob) = users(&fed).await;
    // The stream is up and Stream Management on before the flood.
    exchange_in_order(&mut alice, &mut bob, "bob@b.test", "warm", 1).await;
    let a_before = fed.a.scrape().await;
    let b_before = fed.b.scrape().await;

    let send = async {
        for i in 0..FLOOD {
            alice
                .send(format!(
                    "<message to='bob@b.test' type='chat' id='m{i}'><body>m{i}</body></message>"
                ))
                .await
                .unwrap();
        }
    };
    let receive = receive_in_order(&mut bob, &fed, FLOOD, &[2_500, 6_000]);
    tokio::join!(send, receive);

    // Nothing more follows: a marker sent now is the next message.
    alice
        .send("<message to='bob@b.test' type='chat'><body>end</body></message>")
        .await
        .unwrap();
    let m = expect(&mut bob, "the end marker", |s| s.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("end"), "a duplicate came late");

    let a = fed.a.scrape().await;
    let b = fed.b.scrape().await;
    let moved = |after: &str, before: &str, e: &str| event_count(after, e) - event_count(before, e);
    assert!(
        fed.proxy.as_ref().unwrap().connections() >= 3,
        "both cuts were followed by a new connection"
    );
    // Each cut with stanzas unacknowledged is followed by a resumption (a
    // cut that found everything acknowledged has nothing to resume).
    let resumed = moved(&a, &a_before, "s2s_sm_out_resumed");
    assert!(resumed >= 1.0, "a.test resumed after the cuts");
    assert_eq!(moved(&b, &b_before, "s2s_sm_resumed"), resumed);
    assert_eq!(moved(&a, &a_before, "s2s_sm_out_resume_failed"), 0.0);
    assert!(moved(&a, &a_before, "s2s_sm_acks_received") >= 1.0);
    assert_eq!(metric(&a, "fedrouter_bounced_total", &[]), 0.0);
}

/// b.test with `s2s.stream_management = false` offers no `<sm/>` and
/// enables none: a.test sends no `<enable/>` and federates as before.
#[tokio::test]
async fn a_peer_without_stream_management_gets_no_enable_and_federates_as_before() {
    let _serial = SERIAL.lock().await;
    let before = event_counts().await;
    let fed = federation_custom(Mode::Dialback, "", "stream_management = false\n", false).await;
    let (mut alice, mut bob) = users(&fed).await;
    exchange_in_order(&mut alice, &mut bob, "bob@b.test", "x", 100).await;
    let a = fed.a.scrape().await;
    let moved = |e: &str| event_count(&a, e) - event_count(&before, e);
    // a.test sent no <enable/> (b.test would have refused it), and b.test,
    // with Stream Management off, enables none on its own stream.
    assert_eq!(moved("s2s_sm_out_enabled"), 0.0);
    assert_eq!(moved("s2s_sm_out_refused"), 0.0);
    assert_eq!(moved("s2s_sm_enabled"), 0.0);
}

/// The process's event counters before a test's daemons start.
async fn event_counts() -> String {
    let probe = TestServer::start().await;
    probe.scrape().await
}
