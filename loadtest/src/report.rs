//! What a scenario run produced. The scenarios fill a [`Report`]; how it is
//! shown (a human table, JSON, an HTML page with SVG plots, a comparison of
//! targets) lives in [`crate::render`].

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One scenario run against one target.
#[derive(Debug, Clone)]
pub struct Report {
    /// `im`, `presence`, `connect` or `soak`.
    pub scenario: String,
    /// A label for the target (`fedrouter`, `prosody`, `ejabberd`, or the
    /// address when no label was given).
    pub target: String,
    /// The scenario's parameters, shown in the header (users, contacts,
    /// domains, rate …).
    pub params: BTreeMap<String, String>,
    /// Wall-clock start (Unix milliseconds).
    pub started_unix_ms: u64,
    /// Measured phase only (setup excluded).
    pub elapsed: Duration,
    /// Headline figures, in order: e.g. `("messages/s", 81234.0, "msg/s")`.
    pub figures: Vec<Figure>,
    /// Latency distributions (microseconds), e.g. `delivery` for IM,
    /// `update_complete` for presence, `session_up` for connect.
    pub latencies: Vec<Latency>,
    /// Counts by kind: `sent`, `received`, `lost`, `misdelivered`,
    /// `duplicate`, `bounced`, `connect_failed`, … Zero entries are kept
    /// when they are part of the scenario's contract (so `lost = 0` shows).
    pub counts: BTreeMap<String, u64>,
    /// One sample per interval over the measured phase.
    pub timeline: Vec<Sample>,
    /// Whether the run met its contract (no loss, everything up …).
    pub ok: bool,
    /// Why not, when `ok` is false.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone)]
pub struct Latency {
    pub name: String,
    /// Values in microseconds.
    pub histogram: Histogram<u64>,
}

/// A point of the timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the measured phase began.
    pub t: f64,
    /// Stanzas sent by the load generator in this interval.
    pub sent: u64,
    /// Stanzas received (delivered) in this interval.
    pub received: u64,
    /// Target's resident set size, when a target PID is known.
    pub rss_bytes: Option<u64>,
    /// Target's CPU use over the interval, in percent of one core.
    pub cpu_percent: Option<f64>,
}

impl Report {
    pub fn new(scenario: &str, target: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            target: target.to_string(),
            params: BTreeMap::new(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            elapsed: Duration::ZERO,
            figures: Vec::new(),
            latencies: Vec::new(),
            counts: BTreeMap::new(),
            timeline: Vec::new(),
            ok: true,
            failures: Vec::new(),
        }
    }

    pub fn param(&mut self, k: &str, v: impl ToString) {
        self.params.insert(k.to_string(), v.to_string());
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
        });
    }

    pub fn count(&mut self, kind: &str, n: u64) {
        *self.counts.entry(kind.to_string()).or_default() += n;
    }

    pub fn fail(&mut self, why: impl Into<String>) {
        self.ok = false;
        self.failures.push(why.into());
    }
}
