//! Memory under a flood to a client that never reads, alone in its test
//! binary: the daemon runs in this process, and both its RSS and its
//! metrics are the process's, which other tests would disturb.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// The test process's resident memory (the daemon runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// How many messages of `sent` are accounted for: queued to a session,
/// stored offline, or answered to the sender with an error.
struct Tally {
    queued_to_sessions: f64,
    stored_offline: f64,
    errors: f64,
}

const MESSAGES: usize = 400;
const MESSAGE_BYTES: usize = 512 * 1024 - 512;
/// Measured: the test process peaks at 114–140 MiB (25 MiB before the
/// flood; 64 MiB of it is offline writes waiting for the disk, the store
/// writer's cap). The bound leaves room for allocator noise; without the
/// caps the process would hold the whole 200 MiB flood.
const RSS_BOUND: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_sent_512_kib_messages_flat_out_and_memory_stays_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start_with("[gateway]\nc2s_rate_limit = 0\n").await;
    server.add_user("alice", "wonderland");
    server.add_user("bob", "builder");
    // Bob signs in, is available (so messages go to his session), and
    // never reads again.
    let mut bob = server.client("bob", "builder").await;
    bob.send("<presence/>").await.expect("bob's presence");
    let alice = server.client("alice", "wonderland").await;
    let (io, mut framer) = alice.into_parts();
    let (mut rd, mut wr) = tokio::io::split(io);

    let before = rss();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    // Alice reads what comes back: the errors for what could not be queued.
    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = tokio::spawn({
        let errors = errors.clone();
        async move {
            loop {
                while let Ok(Some(ev)) = framer.next() {
                    if let fedrouter::xml::FramerEvent::Stanza(s) = ev
                        && s.name() == "message"
                        && s.type_().as_deref() == Some("error")
                    {
                        assert!(
                            text(&s).contains("resource-constraint") || {
                                let raw = String::from_utf8_lossy(s.bytes());
                                raw.contains("resource-constraint")
                            },
                            "a refused message is answered with resource-constraint: {}",
                            String::from_utf8_lossy(s.bytes())
                        );
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                let mut buf = framer.read_buf();
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }
    });

    let body = "x".repeat(MESSAGE_BYTES);
    let started = Instant::now();
    for i in 0..MESSAGES {
        let m = format!(
            "<message to='bob@{DOMAIN}' id='m{i}' type='chat'><body>{body}</body></message>"
        );
        tokio::time::timeout(Duration::from_secs(60), wr.write_all(m.as_bytes()))
            .await
            .expect("the daemon keeps reading from the sender")
            .expect("write");
    }
    wr.flush().await.expect("flush");
    let flood = started.elapsed();

    // Every message is accounted for, within a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(120);
    let tally = loop {
        let scrape = server.scrape().await;
        let bounced = metric(&scrape, "fedrouter_bounced_total", &[]);
        let t = Tally {
            // Each bounce is a message queued to alice's session too.
            queued_to_sessions: metric(
                &scrape,
                "fedrouter_stanzas_total",
                &[("dir", "out"), ("kind", "message")],
            ) - bounced,
            stored_offline: metric(
                &scrape,
                "fedrouter_offline_messages_total",
                &[("event", "stored")],
            ),
            errors: bounced,
        };
        let received = errors.load(std::sync::atomic::Ordering::Relaxed) as f64;
        if t.queued_to_sessions + t.stored_offline + t.errors >= MESSAGES as f64
            && received == bounced
        {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "messages unaccounted for: {} queued, {} offline, {} bounced ({received} errors \
             received) of {MESSAGES}",
            t.queued_to_sessions,
            t.stored_offline,
            t.errors
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sampler.abort();
    reader.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "flood of {MESSAGES} x {MESSAGE_BYTES} B in {flood:?}: rss before {} MiB, peak {} MiB; \
         {} queued, {} offline, {} errors",
        before >> 20,
        peak >> 20,
        tally.queued_to_sessions,
        tally.stored_offline,
        tally.errors
    );
    assert_eq!(
        tally.queued_to_sessions + tally.stored_offline + tally.errors,
        MESSAGES as f64,
        "each message is counted once"
    );
    assert!(
        tally.errors > 0.0,
        "the sender is told when offline storage cannot keep up"
    );
    assert!(
        tally.queued_to_sessions < MESSAGES as f64,
        "bob's queue is bounded: most messages could not be queued to him"
    );
    assert!(
        peak < RSS_BOUND,
        "peak RSS {} MiB over the bound {} MiB",
        peak >> 20,
        RSS_BOUND >> 20
    );
}
