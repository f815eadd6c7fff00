//! The `connect` scenario: D remote domains connect to the target and
//! authenticate at once (a reconnect storm) while S local sessions sign in
//! over STARTTLS + SCRAM; the clock runs until all are up. Then everything
//! is held idle and the target's RSS growth per connection is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::args::ConnectArgs;
use crate::local;
use crate::presence_track::PresenceTracker;
use crate::progress::Progress;
use crate::remote::Remote;
use crate::report::{Latency, Report};
use crate::sampler;
use crate::tracker::{Tracker, new_histogram};
use crate::world::Trackers;

pub async fn run(a: &ConnectArgs, show_progress: bool) -> anyhow::Result<Report> {
    let t = &a.target;
    let mut report = Report::new("connect", &t.label);
    report.param("domains", a.domains);
    report.param("sessions", a.sessions);
    report.param("auth", format!("{:?}", t.auth).to_lowercase());
    report.param("source_ips", t.source_ips.len().max(1));
    report.param("concurrency", t.connect_concurrency);

    let trackers = Trackers {
        msgs: Arc::new(Tracker::new(0, 1, 1)),
        pres: Arc::new(PresenceTracker::new(0, 1)),
    };
    let remote = Arc::new(Remote::start(t, a.domains, trackers.sink()).await?);
    let rss_before = t.target_pid.and_then(sampler::rss_bytes);
    let up = Arc::new(AtomicU64::new(0));
    let timeline = sampler::spawn_timeline(
        t.target_pid,
        Duration::from_secs(1),
        Arc::new(AtomicU64::new(0)),
        up.clone(),
    );
    let progress = Progress::new(
        "connecting",
        Some((a.sessions + a.domains) as u64),
        show_progress,
    );
    let started = Instant::now();
    let run = async {
        // The storm of domains, all at once.
        let mut doms = Vec::with_capacity(a.domains);
        for d in 0..a.domains {
            let remote = remote.clone();
            let up = up.clone();
            doms.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let r = remote.connect(d, |_| {}).await;
                if r.is_ok() {
                    up.fetch_add(1, Ordering::Relaxed);
                }
                (r, t0.elapsed())
            }));
        }
        let sessions = local::sign_in(t, 0..a.sessions, true, &progress).await;
        let mut domain_results = Vec::with_capacity(a.domains);
        for d in doms {
            domain_results.push(d.await);
        }
        (sessions, domain_results)
    };
    let (sessions, domain_results) = tokio::time::timeout(a.timeout, run)
        .await
        .map_err(|_| anyhow::anyhow!("not everything came up within {:?}", a.timeout))?;
    let sessions = sessions?;
    let all_up = started.elapsed();
    progress.finish();

    let mut session_hist = new_histogram();
    let mut domain_hist = new_histogram();
    let mut clients = Vec::with_capacity(sessions.len());
    let mut failures: Vec<String> = Vec::new();
    for (r, took) in sessions {
        match r {
            Ok(c) => {
                session_hist.saturating_record((took.as_micros() as u64).max(1));
                clients.push(c);
            }
            Err(e) => failures.push(e),
        }
    }
    let mut streams = Vec::new();
    for r in domain_results {
        match r {
            Ok((Ok(s), took)) => {
                domain_hist.saturating_record((took.as_micros() as u64).max(1));
                streams.push(s);
            }
            Ok((Err(e), _)) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(format!("domain task: {e}")),
        }
    }
    up.fetch_add(clients.len() as u64, Ordering::Relaxed);

    // Idle, then measure what the connections cost the target.
    tokio::time::sleep(a.hold).await;
    let rss_after = t.target_pid.and_then(sampler::rss_bytes);
    report.timeline = timeline.finish().await;
    report.elapsed = all_up;
    let n_up = clients.len() + streams.len();
    report.figure(
        "connections up",
        n_up as f64 / all_up.as_secs_f64().max(1e-9),
        "conn/s",
    );
    report.figure("time until all up", all_up.as_secs_f64(), "s");
    if let (Some(b), Some(a2)) = (rss_before, rss_after) {
        let per = a2.saturating_sub(b) as f64 / n_up.max(1) as f64;
        report.figure("target RSS per connection", per / 1024.0, "KiB");
        report.figure("target RSS", a2 as f64 / (1024.0 * 1024.0), "MiB");
    }
    report.latencies.push(Latency {
        name: "session_up".into(),
        histogram: session_hist,
    });
    report.latencies.push(Latency {
        name: "domain_up".into(),
        histogram: domain_hist,
    });
    report.count("sessions_up", clients.len() as u64);
    report.count("sessions_failed", (a.sessions - clients.len()) as u64);
    report.count("domains_up", streams.len() as u64);
    report.count("domains_failed", (a.domains - streams.len()) as u64);
    for f in failures.iter().take(5) {
        report.fail(f.clone());
    }
    if failures.len() > 5 {
        report.fail(format!("… and {} more failures", failures.len() - 5));
    }
    for s in streams {
        s.close().await;
    }
    drop(clients);
    Ok(report)
}
