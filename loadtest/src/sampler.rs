//! Watching the target while a scenario runs: [`ProcSampler`] reads a
//! process's RSS and CPU time from Linux's `/proc`, and [`spawn_timeline`]
//! turns it and the scenario's sent/received counters into the report's
//! timeline. It only reads; it never signals or otherwise touches the
//! target.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::report::Sample;

/// Clock ticks per second of `/proc/PID/stat`'s CPU times
/// (`sysconf(_SC_CLK_TCK)`). It is 100 on every Linux architecture the
/// load generator runs on; hard-coding it spares an unsafe libc call.
const TICKS_PER_SECOND: f64 = 100.0;

/// Samples one process. CPU is measured between consecutive samples, so
/// the first sample has none.
#[derive(Debug)]
pub struct ProcSampler {
    pid: u32,
    // CPU ticks are real time, so the interval must be real time too, even
    // under tokio's paused clock.
    last: Option<(std::time::Instant, u64)>,
}

impl ProcSampler {
    pub fn new(pid: u32) -> ProcSampler {
        ProcSampler { pid, last: None }
    }

    /// RSS in bytes, and CPU in percent of one core since the previous
    /// sample. `None` where the process (or `/proc`) cannot be read.
    pub fn sample(&mut self) -> (Option<u64>, Option<f64>) {
        let rss = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| parse_vm_rss(&s));
        let ticks = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| parse_cpu_ticks(&s));
        let now = std::time::Instant::now();
        let cpu = match (ticks, self.last) {
            (Some(t), Some((then, t0))) => {
                let wall = now.duration_since(then).as_secs_f64();
                (wall > 0.0).then(|| t.saturating_sub(t0) as f64 / TICKS_PER_SECOND / wall * 100.0)
            }
            _ => None,
        };
        self.last = ticks.map(|t| (now, t));
        (rss, cpu)
    }
}

/// `VmRSS:    12345 kB` from `/proc/PID/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next()? {
        "kB" => n.checked_mul(1024),
        _ => None,
    }
}

/// utime + stime (fields 14 and 15) from `/proc/PID/stat`. The command
/// name (field 2) is in parentheses and may itself hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is index 0
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A running timeline; [`TimelineHandle::finish`] stops it.
#[derive(Debug)]
pub struct TimelineHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Sample>>,
}

impl TimelineHandle {
    /// Stops sampling and returns the samples. The tail since the last
    /// sample is added when it is at least a quarter interval long; a
    /// shorter one would plot as a spike (the report's counts keep the
    /// totals either way).
    pub async fn finish(self) -> Vec<Sample> {
        // The task may already have ended if the runtime is shutting down;
        // then there is nothing to stop.
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Every `interval`, records how much `sent` and `received` grew, and the
/// RSS and CPU of `pid` when given. `t` counts from this call.
pub fn spawn_timeline(
    pid: Option<u32>,
    interval: Duration,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
) -> TimelineHandle {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut sampler = pid.map(ProcSampler::new);
        if let Some(s) = &mut sampler {
            // The baseline for the first interval's CPU.
            s.sample();
        }
        let mut ticker = tokio::time::interval_at(start + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut samples = Vec::new();
        let (mut last_sent, mut last_received, mut last_t) = (0, 0, 0.0);
        loop {
            let finishing = tokio::select! {
                // A tick that is due is recorded before a stop that came
                // with it.
                biased;
                _ = ticker.tick() => false,
                _ = &mut stopped => true,
            };
            let t = start.elapsed().as_secs_f64();
            if finishing && t - last_t < interval.as_secs_f64() / 4.0 {
                break;
            }
            let (s, r) = (
                sent.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed),
            );
            let (rss_bytes, cpu_percent) = sampler.as_mut().map_or((None, None), |p| p.sample());
            samples.push(Sample {
                t,
                sent: s.saturating_sub(last_sent),
                received: r.saturating_sub(last_received),
                rss_bytes,
                cpu_percent,
            });
            (last_sent, last_received, last_t) = (s, r, t);
            if finishing {
                break;
            }
        }
        samples
    });
    TimelineHandle { stop, task }
}

/// The resident set size of `pid` now, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    ProcSampler::new(pid).sample().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_the_status_file() {
        let status = "Name:\tfedrouter\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_a_command_name_with_spaces() {
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn sampling_this_process_gives_rss_then_cpu() {
        let mut s = ProcSampler::new(std::process::id());
        let (rss, cpu) = s.sample();
        assert!(rss.unwrap() > 0);
        assert_eq!(cpu, None, "no CPU without a previous sample");
        let until = std::time::Instant::now() + Duration::from_millis(50);
        while std::time::Instant::now() < until {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let (_, cpu) = s.sample();
        assert!(cpu.unwrap() >= 0.0);
    }

    #[test]
    fn a_process_that_is_gone_gives_nothing() {
        // PIDs are below 2^22 on Linux.
        let mut s = ProcSampler::new(u32::MAX);
        assert_eq!(s.sample(), (None, None));
    }

    #[tokio::test]
    async fn the_timeline_records_counter_deltas_and_this_process() {
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let handle = spawn_timeline(
            Some(std::process::id()),
            Duration::from_millis(40),
            sent.clone(),
            received.clone(),
        );
        for _ in 0..5 {
            sent.fetch_add(10, Ordering::Relaxed);
            received.fetch_add(7, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let samples = handle.finish().await;
        // 150 ms at 40 ms: three ticks and the tail, fewer on a starved runtime.
        assert!(samples.len() >= 2, "{samples:?}");
        assert!(samples.windows(2).all(|w| w[0].t < w[1].t));
        assert!(samples.iter().all(|s| s.rss_bytes.unwrap() > 0));
        assert!(samples.iter().all(|s| s.cpu_percent.is_some()));
        let sent_total: u64 = samples.iter().map(|s| s.sent).sum();
        let received_total: u64 = samples.iter().map(|s| s.received).sum();
        // All counting ended 30 ms before the finish, more than a quarter
        // interval, so the tail sample holds the rest.
        assert_eq!((sent_total, received_total), (50, 35));
    }

    #[tokio::test]
    async fn without_a_pid_the_timeline_has_counts_only() {
        let sent = Arc::new(AtomicU64::new(0));
        let handle = spawn_timeline(
            None,
            Duration::from_millis(10),
            sent.clone(),
            Arc::new(AtomicU64::new(0)),
        );
        sent.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(35)).await;
        let samples = handle.finish().await;
        assert!(!samples.is_empty());
        assert!(
            samples
                .iter()
                .all(|s| s.rss_bytes.is_none() && s.cpu_percent.is_none())
        );
        assert_eq!(samples.iter().map(|s| s.sent).sum::<u64>(), 1);
    }
}
