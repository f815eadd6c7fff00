//! The `presence` scenario: each local user has C federated contacts over
//! D remote domains subscribed to its presence (set up over s2s first);
//! then, round by round, every user sends one presence update and the
//! clock runs until each contact has it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::args::PresenceArgs;
use crate::presence_track::{ID_PREFIX, PresenceTracker};
use crate::progress::Progress;
use crate::report::{Latency, Report};
use crate::sampler;
use crate::stamp;
use crate::tracker::{Tracker, new_histogram};
use crate::world::{Trackers, World};

pub async fn run(a: &PresenceArgs, show_progress: bool) -> anyhow::Result<Report> {
    let t = &a.target;
    let users = a.users.max(1);
    let domains = a.domains.max(1);
    let per_user = a.contacts.max(1);
    let expected = (users * per_user) as u64;
    let pres = Arc::new(PresenceTracker::new(users as u64, per_user as u64));
    let trackers = Trackers {
        msgs: Arc::new(Tracker::new(0, 1, 1)),
        pres: pres.clone(),
    };
    let mut report = Report::new("presence", &t.label);
    report.param("users", users);
    report.param("contacts_per_user", per_user);
    report.param("domains", domains);
    report.param("updates", a.updates);
    report.param("auth", format!("{:?}", t.auth).to_lowercase());

    let world = World::setup(t, users, domains, true, trackers, show_progress).await?;
    world
        .subscribe_contacts(
            t,
            per_user,
            users * per_user,
            Duration::from_secs(300),
            show_progress,
        )
        .await?;

    let sent = Arc::new(AtomicU64::new(0));
    let timeline = sampler::spawn_timeline(
        t.target_pid,
        Duration::from_secs(1),
        sent.clone(),
        pres.received.clone(),
    );
    let progress = Progress::new("presence", Some(a.updates), show_progress);
    let mut complete = new_histogram();
    let mut busy = Duration::ZERO;
    let mut incomplete = 0u64;
    let mut lost = 0u64;
    for n in 0..a.updates {
        pres.start_round(n);
        let t0 = stamp::now_ns();
        for (i, s) in world.sessions.iter().enumerate() {
            s.writer.send(format!(
                "<presence id='{ID_PREFIX}{n}'><status>loadtest update {n} of user {}</status></presence>",
                i + 1
            ));
            sent.fetch_add(1, Ordering::Relaxed);
        }
        let end = tokio::time::Instant::now() + a.update_timeout;
        while pres.round_received.load(Ordering::Relaxed) < expected
            && tokio::time::Instant::now() < end
        {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let got = pres.round_received.load(Ordering::Relaxed);
        let last = pres.last_arrival_ns.load(Ordering::Relaxed).max(t0);
        let took = Duration::from_nanos(last - t0);
        busy += took;
        if got < expected {
            incomplete += 1;
            lost += expected - got;
        } else {
            complete.saturating_record((took.as_micros() as u64).max(1));
        }
        progress.inc(1);
    }
    progress.finish();
    report.timeline = timeline.finish().await;
    let received = pres.received.load(Ordering::Relaxed);
    report.elapsed = busy;
    report.figure(
        "presence delivered",
        received as f64 / busy.as_secs_f64().max(1e-9),
        "stanzas/s",
    );
    if !complete.is_empty() {
        report.figure(
            "update reached all contacts, median",
            complete.value_at_quantile(0.5) as f64 / 1000.0,
            "ms",
        );
    }
    report.latencies.push(Latency {
        name: "update_complete".into(),
        histogram: complete,
    });
    report.latencies.push(Latency {
        name: "delivery".into(),
        histogram: pres.histogram(),
    });
    report.count("updates", a.updates * users as u64);
    report.count("expected", expected * a.updates);
    report.count("received", received);
    report.count("lost", lost);
    report.count("incomplete_updates", incomplete);
    report.count("duplicate", pres.duplicate.load(Ordering::Relaxed));
    report.count("misdelivered", pres.misdelivered.load(Ordering::Relaxed));
    report.count("stale", pres.stale.load(Ordering::Relaxed));
    if lost > 0 {
        report.fail(format!(
            "{incomplete} updates did not reach every contact within {:?} ({lost} deliveries missing)",
            a.update_timeout
        ));
    }
    for k in ["duplicate", "misdelivered"] {
        if report.counts[k] > 0 {
            report.fail(format!("{k}: {}", report.counts[k]));
        }
    }
    world.close().await;
    Ok(report)
}
