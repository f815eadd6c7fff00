//! The `soak` scenario: IM both ways at a steady rate plus a presence
//! update from one user (in turn) every interval, for a duration, sampling
//! the target's RSS and CPU. Fails on any loss.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::args::SoakArgs;
use crate::im::{Plan, build_senders, futures_join, run_sender, warm_all};
use crate::presence_track::{ID_PREFIX, PresenceTracker};
use crate::progress::Progress;
use crate::report::{Latency, Report};
use crate::tracker::Tracker;
use crate::world::{Trackers, World};
use crate::{sampler, stamp};

pub async fn run(a: &SoakArgs, show_progress: bool) -> anyhow::Result<Report> {
    let t = &a.target;
    let users = a.users.max(1);
    let domains = a.domains.max(1);
    let contacts = a.contacts.max(users);
    let per_user = contacts / users;
    let n_senders = users + domains;
    // Bounded in count as well as time: the rate for the whole duration.
    let total = a.rate.max(1) * a.duration.as_secs().max(1);
    let msgs = Arc::new(Tracker::new(total, n_senders, 1024));
    let pres = Arc::new(PresenceTracker::new(users as u64, per_user as u64));
    let trackers = Trackers {
        msgs: msgs.clone(),
        pres: pres.clone(),
    };
    let mut report = Report::new("soak", &t.label);
    report.param("users", users);
    report.param("contacts", contacts);
    report.param("domains", domains);
    report.param("rate", a.rate);
    report.param("presence_every", format!("{:?}", a.presence_every));
    report.param("duration", format!("{:?}", a.duration));

    let world = World::setup(t, users, domains, true, trackers, show_progress).await?;
    world
        .subscribe_contacts(
            t,
            per_user,
            users * per_user,
            Duration::from_secs(120),
            show_progress,
        )
        .await?;
    let plan = Plan {
        users,
        contacts,
        out: true,
        inn: true,
    };
    warm_all(t, &world, plan).await?;
    let senders = build_senders(t, &world, plan);

    let timeline = sampler::spawn_timeline(
        t.target_pid,
        Duration::from_secs(1),
        msgs.sent.clone(),
        msgs.received.clone(),
    );
    let progress = Progress::new("soak", Some(a.duration.as_secs()), show_progress);
    let pad = Arc::new(stamp::padding(100));
    let rate = a.rate as f64 / senders.len().max(1) as f64;
    let start_ns = stamp::now_ns();
    let deadline = tokio::time::Instant::now() + a.duration;
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(run_sender(
                i as u32,
                s,
                msgs.clone(),
                rate,
                deadline,
                pad.clone(),
            ))
        })
        .collect();
    let mut all_sent = Box::pin(futures_join(tasks));

    // Presence rounds: each must be complete by the next tick.
    let mut tick = tokio::time::interval(a.presence_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    let mut pres_lost = 0u64;
    let mut pres_sent = 0u64;
    let mut last_sec = 0u64;
    let mut sending = true;
    while sending {
        tokio::select! {
            _ = &mut all_sent => sending = false,
            _ = tick.tick() => {
                if round > 0 {
                    pres_lost += (per_user as u64)
                        .saturating_sub(pres.round_received.load(Ordering::Relaxed));
                }
                let u = (round as usize) % users;
                pres.start_round(round);
                world.sessions[u].writer.send(format!(
                    "<presence id='{ID_PREFIX}{round}'><status>soak {round}</status></presence>"
                ));
                pres_sent += 1;
                round += 1;
                let s = (stamp::now_ns() - start_ns) / 1_000_000_000;
                progress.inc(s - last_sec);
                last_sec = s;
            }
        }
    }
    let settled = msgs.drain(a.drain).await;
    // The last presence round gets the drain time too.
    if round > 0 {
        let end = tokio::time::Instant::now() + a.drain;
        while pres.round_received.load(Ordering::Relaxed) < per_user as u64
            && tokio::time::Instant::now() < end
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pres_lost += (per_user as u64).saturating_sub(pres.round_received.load(Ordering::Relaxed));
    }
    progress.finish();
    report.timeline = timeline.finish().await;
    let elapsed = Duration::from_nanos(stamp::now_ns() - start_ns);
    report.elapsed = elapsed;
    let sent = msgs.sent.load(Ordering::Relaxed);
    let received = msgs.received.load(Ordering::Relaxed);
    report.figure(
        "delivered",
        received as f64 / elapsed.as_secs_f64(),
        "msg/s",
    );
    if let Some(rss) = report.timeline.iter().filter_map(|s| s.rss_bytes).max() {
        report.figure("peak target RSS", rss as f64 / (1024.0 * 1024.0), "MiB");
    }
    let cpu: Vec<f64> = report
        .timeline
        .iter()
        .filter_map(|s| s.cpu_percent)
        .collect();
    if !cpu.is_empty() {
        report.figure(
            "mean target CPU",
            cpu.iter().sum::<f64>() / cpu.len() as f64,
            "%",
        );
    }
    report.latencies.push(Latency {
        name: "delivery".into(),
        histogram: msgs.histogram(),
    });
    report.latencies.push(Latency {
        name: "presence_delivery".into(),
        histogram: pres.histogram(),
    });
    report.count("sent", sent);
    report.count("received", received);
    report.count("lost", msgs.lost() + pres_lost);
    report.count("lost_messages", msgs.lost());
    report.count("lost_presence", pres_lost);
    report.count("presence_updates", pres_sent);
    report.count("presence_received", pres.received.load(Ordering::Relaxed));
    report.count(
        "misdelivered",
        msgs.misdelivered.load(Ordering::Relaxed) + pres.misdelivered.load(Ordering::Relaxed),
    );
    report.count(
        "duplicate",
        msgs.duplicate.load(Ordering::Relaxed) + pres.duplicate.load(Ordering::Relaxed),
    );
    report.count("bounced", msgs.bounced.load(Ordering::Relaxed));
    if !settled || pres_lost > 0 {
        report.fail(format!(
            "lost {} messages and {pres_lost} presence deliveries",
            msgs.lost()
        ));
    }
    for k in ["misdelivered", "duplicate", "bounced"] {
        if report.counts[k] > 0 {
            report.fail(format!("{k}: {}", report.counts[k]));
        }
    }
    world.close().await;
    Ok(report)
}
