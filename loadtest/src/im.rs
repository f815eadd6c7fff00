//! The `im` scenario: local users chat with contacts in our remote
//! domains (c2s in, s2s out) and the contacts answer (s2s in, c2s out),
//! flat out within a window per sender or at a target rate. Every message
//! carries a stamp; latency is measured from the stamp to the reader.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::args::{Direction, ImArgs};
use crate::conn::Writer;
use crate::presence_track::PresenceTracker;
use crate::progress::Progress;
use crate::report::{Latency, Report};
use crate::stamp::{self, Stamp};
use crate::tracker::{Tracker, WARMUP};
use crate::world::{Trackers, World, contact_jid};
use crate::{local, sampler};

/// One sending stream and whom it writes to: (from, to, recipient index).
pub struct Sender {
    pub writer: Writer,
    pub pairs: Vec<(Option<String>, String, u32)>,
}

/// Sends stamped messages round-robin over `pairs` until the tracker's
/// total is claimed or `deadline`, at `rate` messages/s (0 = as fast as
/// the window allows).
pub async fn run_sender(
    idx: u32,
    s: Sender,
    tracker: Arc<Tracker>,
    rate: f64,
    deadline: tokio::time::Instant,
    pad: Arc<Vec<u8>>,
) {
    const BATCH: u64 = 64;
    if s.pairs.is_empty() {
        return;
    }
    let window = &tracker.windows[idx as usize];
    let start = tokio::time::Instant::now();
    let mut k = 0usize;
    let mut sent_here = 0u64;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return;
        }
        let want = if rate > 0.0 {
            let due = (rate * (now - start).as_secs_f64()) as u64;
            let n = due.saturating_sub(sent_here).min(BATCH);
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            n
        } else {
            BATCH
        };
        let Ok(Ok(p)) = tokio::time::timeout_at(deadline, window.acquire()).await else {
            return;
        };
        p.forget();
        let mut n = 1u64;
        while n < want {
            match window.try_acquire() {
                Ok(p) => {
                    p.forget();
                    n += 1;
                }
                Err(_) => break,
            }
        }
        let base = tracker.next_seq.fetch_add(n, Ordering::Relaxed);
        if base >= tracker.total {
            return;
        }
        let n = n.min(tracker.total - base);
        buf.clear();
        for i in 0..n {
            let (from, to, recipient) = &s.pairs[k % s.pairs.len()];
            k += 1;
            let st = Stamp {
                sender: idx,
                recipient: *recipient,
                seq: base + i,
                sent_ns: stamp::now_ns(),
            };
            stamp::write_message(&mut buf, from.as_deref(), to, st, &pad);
        }
        tracker.sent.fetch_add(n, Ordering::Relaxed);
        sent_here += n;
        if !s.writer.send(buf.clone()) {
            return;
        }
    }
}

/// Sends one warm-up message from `w` to each `to`, so the target has its
/// s2s streams up before the clock starts, and waits for them.
pub async fn warm_up(
    tracker: &Tracker,
    w: &Writer,
    from: Option<&str>,
    to: &[(String, u32)],
    limit: Duration,
) -> anyhow::Result<()> {
    let before = tracker.warmup.load(Ordering::Relaxed);
    let mut buf = Vec::new();
    for (jid, r) in to {
        let st = Stamp {
            sender: WARMUP,
            recipient: *r,
            seq: 0,
            sent_ns: stamp::now_ns(),
        };
        stamp::write_message(&mut buf, from, jid, st, b"");
    }
    w.send(buf);
    let end = tokio::time::Instant::now() + limit;
    while tracker.warmup.load(Ordering::Relaxed) < before + to.len() as u64 {
        if tokio::time::Instant::now() >= end {
            anyhow::bail!(
                "warm-up: {} of {} messages arrived within {limit:?} (is the target routing \
                 our domains to {}?)",
                tracker.warmup.load(Ordering::Relaxed) - before,
                to.len(),
                "--s2s-listen"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

pub async fn run(a: &ImArgs, show_progress: bool) -> anyhow::Result<Report> {
    let t = &a.target;
    let users = a.users.max(1);
    let domains = a.domains.max(1);
    let contacts = a.contacts.max(1);
    let out = matches!(a.direction, Direction::Out | Direction::Both);
    let inn = matches!(a.direction, Direction::In | Direction::Both);
    let n_senders = (if out { users } else { 0 }) + (if inn { domains } else { 0 });
    let tracker = Arc::new(Tracker::new(a.messages, n_senders.max(1), a.window.max(1)));
    let mut report = Report::new("im", &t.label);
    report.param("users", users);
    report.param("contacts", contacts);
    report.param("domains", domains);
    report.param("direction", format!("{:?}", a.direction).to_lowercase());
    report.param("messages", a.messages);
    report.param(
        "rate",
        if a.rate == 0 {
            "max".to_string()
        } else {
            a.rate.to_string()
        },
    );
    report.param("window", a.window);
    report.param("body_bytes", a.body_bytes);
    report.param("auth", format!("{:?}", t.auth).to_lowercase());

    let trackers = Trackers {
        msgs: tracker.clone(),
        pres: Arc::new(PresenceTracker::new(0, 1)),
    };
    let world = World::setup(t, users, domains, inn, trackers, show_progress).await?;
    let plan = Plan {
        users,
        contacts,
        out,
        inn,
    };
    warm_all(t, &world, plan).await?;
    let senders = build_senders(t, &world, plan);

    // The measured phase.
    let progress = Progress::new("im", Some(a.messages), show_progress);
    let timeline = sampler::spawn_timeline(
        t.target_pid,
        Duration::from_secs(1),
        tracker.sent.clone(),
        tracker.received.clone(),
    );
    let pad = Arc::new(stamp::padding(a.body_bytes));
    let rate = a.rate as f64 / senders.len().max(1) as f64;
    let started = Instant::now();
    let start_ns = stamp::now_ns();
    let deadline = tokio::time::Instant::now() + a.duration;
    let mut tasks = Vec::new();
    for (idx, s) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(run_sender(
            idx as u32,
            s,
            tracker.clone(),
            rate,
            deadline,
            pad.clone(),
        )));
    }
    let mut all_sent = Box::pin(futures_join(tasks));
    loop {
        tokio::select! {
            _ = &mut all_sent => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                progress.set_position(tracker.received.load(Ordering::Relaxed));
            }
        }
    }
    let settled = tracker.drain(a.drain).await;
    progress.set_position(tracker.received.load(Ordering::Relaxed));
    progress.finish();
    let samples = timeline.finish().await;
    let end_ns = tracker
        .last_arrival_ns
        .load(Ordering::Relaxed)
        .max(start_ns + 1);
    let measured = Duration::from_nanos(end_ns - start_ns);
    let sent = tracker.sent.load(Ordering::Relaxed);
    let received = tracker.received.load(Ordering::Relaxed);
    report.elapsed = measured;
    report.figure(
        "delivered",
        received as f64 / measured.as_secs_f64(),
        "msg/s",
    );
    report.figure(
        "sent",
        sent as f64 / started.elapsed().as_secs_f64(),
        "msg/s",
    );
    report.latencies.push(Latency {
        name: "delivery".into(),
        histogram: tracker.histogram(),
    });
    report.count("sent", sent);
    report.count("received", received);
    report.count("lost", tracker.lost());
    report.count("misdelivered", tracker.misdelivered.load(Ordering::Relaxed));
    report.count("duplicate", tracker.duplicate.load(Ordering::Relaxed));
    report.count("bounced", tracker.bounced.load(Ordering::Relaxed));
    report.count("foreign", tracker.foreign.load(Ordering::Relaxed));
    report.timeline = samples;
    if !settled {
        report.fail(format!(
            "{} of {sent} messages never arrived within {:?} of the last send",
            tracker.lost(),
            a.drain
        ));
    }
    for k in ["misdelivered", "duplicate", "bounced", "foreign"] {
        if report.counts.get(k).copied().unwrap_or(0) > 0 {
            report.fail(format!("{k}: {}", report.counts[k]));
        }
    }
    if sent == 0 {
        report.fail("nothing was sent");
    }
    report.count("streams_ended", world.stats.ended.load(Ordering::Relaxed));
    world.close().await;
    Ok(report)
}

/// Who chats: `users` local users and `contacts` remote contacts, in
/// which directions.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub users: usize,
    pub contacts: usize,
    /// Local users send to remote contacts.
    pub out: bool,
    /// Remote contacts send to local users.
    pub inn: bool,
}

/// Warms up every path (one message per domain each way) so stream setup
/// stays out of the figures.
pub async fn warm_all(t: &crate::args::Target, world: &World, plan: Plan) -> anyhow::Result<()> {
    let Plan {
        users,
        contacts,
        out,
        inn,
    } = plan;
    let tracker = &world.trackers.msgs;
    let domains = world.domains;
    let (sessions, outbound) = (&world.sessions, &world.outbound);
    let limit = Duration::from_secs(60);
    if out {
        let to: Vec<(String, u32)> = (0..domains.min(contacts))
            .map(|j| (contact_jid(t, j, domains), j as u32))
            .collect();
        warm_up(tracker, &sessions[0].writer, None, &to, limit).await?;
    }
    if inn {
        for (d, s) in outbound.iter().enumerate() {
            let from = contact_jid(t, d, domains);
            let to = vec![(local::user_jid(t, d % users), (d % users) as u32)];
            warm_up(tracker, &s.writer, Some(&from), &to, limit).await?;
        }
    }

    Ok(())
}

/// Who talks to whom: each local user to its contacts (`j ≡ i mod users`),
/// each domain's contacts to their users (`j mod users`).
pub fn build_senders(t: &crate::args::Target, world: &World, plan: Plan) -> Vec<Sender> {
    let Plan {
        users,
        contacts,
        out,
        inn,
    } = plan;
    let domains = world.domains;
    let (sessions, outbound) = (&world.sessions, &world.outbound);
    let mut senders = Vec::new();
    if out {
        for (i, s) in sessions.iter().enumerate() {
            let mut pairs: Vec<(Option<String>, String, u32)> = (i..contacts)
                .step_by(users)
                .map(|j| (None, contact_jid(t, j, domains), j as u32))
                .collect();
            if pairs.is_empty() {
                let j = i % contacts;
                pairs.push((None, contact_jid(t, j, domains), j as u32));
            }
            senders.push(Sender {
                writer: s.writer.clone(),
                pairs,
            });
        }
    }
    if inn {
        for (d, s) in outbound.iter().enumerate() {
            let mut pairs: Vec<(Option<String>, String, u32)> = (d..contacts.max(domains))
                .step_by(domains)
                .map(|j| {
                    let u = j % users;
                    (
                        Some(contact_jid(t, j, domains)),
                        local::user_jid(t, u),
                        u as u32,
                    )
                })
                .collect();
            if pairs.is_empty() {
                pairs.push((Some(contact_jid(t, d, domains)), local::user_jid(t, 0), 0));
            }
            senders.push(Sender {
                writer: s.writer.clone(),
                pairs,
            });
        }
    }

    senders
}

/// Waits for every task (a panic in one is reported, not propagated).
pub async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        if let Err(e) = t.await {
            tracing::error!(error = %e, "a sender task failed");
        }
    }
}
