//! Stanzas routed through the shard actors: a producer hands message
//! envelopes to `Router::route` (the session's call), shards deliver them
//! to the writer queues of 100 bound sessions, and the clock stops when
//! every queue has received its share. Measures the shard hop plus
//! delivery, without sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fedrouter::events::Metrics;
use fedrouter::jid::{BareJid, FullJid, Jid};
use fedrouter::router::{Envelope, Router};
use fedrouter::storage::{MemStore, Store, StoreWriter};
use fedrouter::xml::Stanza;
use tokio::sync::Notify;

mod support;

const USERS: usize = 100;

struct Setup {
    router: Router,
    targets: Vec<(FullJid, Stanza)>,
    from: Jid,
    received: Arc<AtomicU64>,
    notify: Arc<Notify>,
}

async fn setup() -> Setup {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let writer = StoreWriter::spawn(store.clone());
    let config = fedrouter::config::Config::default_embedded();
    let policy =
        fedrouter::policy::PolicyHandle::new(fedrouter::policy::Policy::from_config(&config));
    let router = Router::start(
        2,
        vec!["localhost".into()],
        store,
        writer,
        Metrics::get(),
        policy,
        Default::default(),
    );
    let received = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let mut targets = Vec::new();
    for i in 0..USERS {
        let bare = BareJid::parse(&format!("user{i}@localhost")).unwrap();
        let (jid, mut rx) = support::bind(&router, &bare, "r", i as u64).await;
        let (received, notify) = (received.clone(), notify.clone());
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                std::hint::black_box(f);
                received.fetch_add(1, Ordering::Release);
                notify.notify_one();
            }
        });
        let body = "x".repeat(180);
        let stanza = Stanza::parse(Bytes::from(format!(
            "<message to='{jid}' type='chat' id='m{i}'><body>{body}</body></message>"
        )))
        .unwrap();
        targets.push((jid, stanza));
    }
    let from = Jid::parse("sender@localhost/bench").unwrap();
    Setup {
        router,
        targets,
        from,
        received,
        notify,
    }
}

fn routing(c: &mut Criterion) {
    let rt = support::runtime();
    let s = rt.block_on(setup());
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(1));
    g.bench_function("message_through_shards_to_session_queue", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let s = &s;
            async move {
                let start_count = s.received.load(Ordering::Acquire);
                let t = Instant::now();
                for i in 0..iters {
                    let (to, stanza) = &s.targets[i as usize % USERS];
                    s.router
                        .route(Envelope::new(
                            stanza.clone(),
                            s.from.clone(),
                            Jid::Full(to.clone()),
                        ))
                        .await;
                }
                let (mut seen, mut progress) = (0, Instant::now());
                while seen < start_count + iters {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(10), s.notify.notified()).await;
                    let now = s.received.load(Ordering::Acquire);
                    if now > seen {
                        (seen, progress) = (now, Instant::now());
                    }
                    // A refused message must fail the bench, not hang it.
                    assert!(
                        progress.elapsed() < Duration::from_secs(10),
                        "{seen} of {} messages reached the sessions, none for 10 s",
                        start_count + iters
                    );
                }
                t.elapsed()
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = routing
}
criterion_main!(benches);
