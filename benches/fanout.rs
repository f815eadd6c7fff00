//! Presence fan-out to federation: one local user with 10,000 remote
//! contacts (subscription both) over 100 remote domains sends one presence
//! update; it goes through the real daemon (`fedrouter::start`): the user's
//! shard, `Router`, `S2sRouter::send` with its policy checks (half the
//! domains are listed federated partners, half are unlisted domains allowed
//! as public_verified, which get the status note stripped), the per-domain
//! outbound actors and their batched writers. Each domain's stream is "up"
//! over an in-memory sink instead of a TLS socket: the daemon is started
//! with `testkit::link::MemoryConnector`, so each outbound actor's link is
//! a sink. The clock stops when the sinks have received all 10,000
//! stanzas.
//!
//! `message_to_remote_through_s2s` is the single-stanza variant: one message
//! to a remote contact through `Router::route` (which hands remote targets
//! straight to federation, no shard), the s2s send path and the writer.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fedrouter::jid::{BareJid, FullJid, Jid};
use fedrouter::roster::{RosterItem, Subscription};
use fedrouter::router::{Envelope, FromSession};
use fedrouter::storage::WriteOp;
use fedrouter::stream::scram::Credentials;
use fedrouter::xml::Stanza;
use testkit::link::MemoryConnector;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

mod support;

const DOMAINS: usize = 100;
const CONTACTS: usize = 10_000;
const LOCAL: &str = "example.org";
/// Messages per remote domain the routing bench has on its way at once.
const IN_FLIGHT: u64 = 1000;

/// Counts the stanzas written to it, and wakes the bench when the expected
/// total is reached. The writer hands each frame's slices whole (this sink
/// never writes short), and of a frame's slices only the first starts with
/// `<`: the others are spliced attributes or the rest of the stanza after
/// its element name (which starts with a space, `>` or `/`). Cheaper than
/// searching the bytes, which would cost more than the send path itself.
struct Sink {
    stanzas: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    done: Arc<Notify>,
}

impl Sink {
    fn count(&self, bufs: &[IoSlice<'_>]) {
        let n = bufs.iter().filter(|b| b.first() == Some(&b'<')).count() as u64;
        if n > 0 {
            let total = self.stanzas.fetch_add(n, Ordering::AcqRel) + n;
            if total >= self.target.load(Ordering::Acquire) {
                self.done.notify_one();
            }
        }
    }
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.count(&[IoSlice::new(buf)]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.count(bufs);
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn remote_domain(d: usize) -> String {
    format!("d{d}.example")
}

fn config(data_dir: &std::path::Path) -> fedrouter::config::Config {
    let mut toml = format!(
        r#"
[server]
domains = ["{LOCAL}"]
data_dir = "{}"
[c2s]
listen = []
[s2s]
listen = []
unlisted_domains = "allow"
unlisted_partner_type = "public_verified"
[metrics]
listen = ""
[log]
level = "off"
[[access_policy]]
name = "global"
enable_federation_access = true
enable_xmpp_access = true
"#,
        data_dir.display()
    );
    // Half the domains are listed partners (federated: the status note goes
    // through), half are unlisted (public_verified: it is stripped).
    for d in (0..DOMAINS).step_by(2) {
        toml.push_str(&format!(
            "[[partner]]\ndomain = \"{}\"\npartner_type = \"federated\"\nsupport_dialback_negotiation = false\n",
            remote_domain(d)
        ));
    }
    fedrouter::config::Config::from_toml_str(&toml, None).expect("bench config")
}

struct Setup {
    _dir: tempfile::TempDir,
    daemon: fedrouter::Daemon,
    user: FullJid,
    stanzas: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    done: Arc<Notify>,
}

impl Setup {
    /// Waits until the sinks have seen `n` stanzas in all.
    /// Waits until `n` stanzas in all have reached the sinks; panics when
    /// none arrives for 10 s (a stanza was shed or lost: the bench must
    /// fail, not hang).
    async fn wait_for(&self, n: u64) {
        self.target.store(n, Ordering::Release);
        let mut seen = self.stanzas.load(Ordering::Acquire);
        let mut progress = Instant::now();
        while seen < n {
            let _ = tokio::time::timeout(Duration::from_millis(100), self.done.notified()).await;
            let now = self.stanzas.load(Ordering::Acquire);
            if now > seen {
                (seen, progress) = (now, Instant::now());
            }
            assert!(
                progress.elapsed() < Duration::from_secs(10),
                "{seen} of {n} stanzas reached the remote domains, none for 10 s"
            );
        }
    }
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let stanzas = Arc::new(AtomicU64::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(Notify::new());
    let connector = {
        let (stanzas, target, done) = (stanzas.clone(), target.clone(), done.clone());
        MemoryConnector::new(move |_local: &str, _remote: &str| Sink {
            stanzas: stanzas.clone(),
            target: target.clone(),
            done: done.clone(),
        })
    };
    let daemon = fedrouter::start_with_connector(config(dir.path()), connector)
        .await
        .expect("start");
    let user_bare = BareJid::parse(&format!("alice@{LOCAL}")).unwrap();
    daemon
        .store
        .create_account(&user_bare, &Credentials::from_password("pw", 2).unwrap())
        .unwrap();
    let ops: Vec<WriteOp> = (0..CONTACTS)
        .map(|i| {
            let mut item = RosterItem::new(format!("c{i}@{}", remote_domain(i % DOMAINS)));
            item.subscription = Subscription::Both;
            item.listed = true;
            WriteOp::PutRosterItem {
                user: user_bare.clone(),
                item,
            }
        })
        .collect();
    let results = daemon.store.apply(&ops).unwrap();
    assert!(results.iter().all(Result::is_ok));

    let (user, mut rx) = support::bind(&daemon.router, &user_bare, "desk", 1).await;
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let s = Setup {
        _dir: dir,
        daemon,
        user,
        stanzas,
        target,
        done,
    };
    // Initial presence: it also probes every contact (10,000 probes), which
    // the measured updates do not. It also brings every domain's link up
    // (the stanzas wait in the actors' queues meanwhile), so the measured
    // updates find all 100 streams up, as before.
    s.send_presence().await;
    s.wait_for(2 * CONTACTS as u64).await;
    s
}

impl Setup {
    async fn send_presence(&self) {
        let stanza = Stanza::parse(Bytes::from_static(
            b"<presence><show>away</show><status>In a meeting until 3</status><priority>5</priority></presence>",
        ))
        .unwrap();
        let _ = self
            .daemon
            .router
            .shard(self.user.bare())
            .tell(FromSession {
                from: self.user.clone(),
                stanza,
            })
            .await;
    }
}

fn fanout(c: &mut Criterion) {
    let rt = support::runtime();
    let s = rt.block_on(setup());
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(CONTACTS as u64));
    g.bench_function("presence_to_10000_contacts_over_100_domains", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let s = &s;
            async move {
                let t = Instant::now();
                for _ in 0..iters {
                    let n = s.stanzas.load(Ordering::Acquire) + CONTACTS as u64;
                    s.send_presence().await;
                    s.wait_for(n).await;
                }
                t.elapsed()
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(1));
    let targets: Vec<(Jid, Stanza)> = (0..DOMAINS)
        .map(|d| {
            let to = Jid::parse(&format!("c{d}@{}", remote_domain(d))).unwrap();
            let body = "x".repeat(180);
            let stanza = Stanza::parse(Bytes::from(format!(
                "<message to='{to}' type='chat' id='m{d}'><body>{body}</body></message>"
            )))
            .unwrap();
            (to, stanza)
        })
        .collect();
    g.bench_function("message_to_remote_through_s2s", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (s, targets) = (&s, &targets);
            async move {
                let mut n = s.stanzas.load(Ordering::Acquire);
                let t = Instant::now();
                for i in 0..iters {
                    let (to, stanza) = &targets[i as usize % DOMAINS];
                    s.daemon
                        .router
                        .route(Envelope::new(
                            stanza.clone(),
                            Jid::Full(s.user.clone()),
                            to.clone(),
                        ))
                        .await;
                    // At most IN_FLIGHT per domain at once: a link's writer
                    // queue (4096 frames) would refuse the rest.
                    if (i + 1) % (IN_FLIGHT * DOMAINS as u64) == 0 {
                        n += IN_FLIGHT * DOMAINS as u64;
                        s.wait_for(n).await;
                    }
                }
                s.wait_for(n + iters % (IN_FLIGHT * DOMAINS as u64)).await;
                t.elapsed()
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4)).sample_size(20);
    targets = fanout
}
criterion_main!(benches);
