//! Every observable event of the daemon in one place: each one writes its
//! log line and moves its metric, so names and labels are reviewed here
//! (vector's `internal_events` habit).
//!
//! Metric handles are registered once, when [`Metrics::new`] runs, and kept;
//! the hot path only increments held handles (≈6 ns) and never looks a
//! metric up by name.

use std::sync::{Arc, OnceLock};

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::StreamCondition;
use crate::xml::StanzaKind;

/// Label values of `kind` for stanza counters.
const KINDS: [&str; 4] = ["message", "presence", "iq", "other"];

fn kind_index(k: StanzaKind) -> usize {
    match k {
        StanzaKind::Message => 0,
        StanzaKind::Presence => 1,
        StanzaKind::Iq => 2,
        StanzaKind::Other => 3,
    }
}

/// Held metric handles.
pub struct Metrics {
    pub c2s_sessions: Gauge,
    pub c2s_connections: Gauge,
    stanzas_in: [Counter; 4],
    stanzas_out: [Counter; 4],
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub route_seconds: Histogram,
    stream_errors: Vec<(StreamCondition, Counter)>,
    pub offline_stored: Counter,
    pub offline_delivered: Counter,
    pub offline_refused: Counter,
    pub auth_success: Counter,
    pub auth_failure: Counter,
    pub presence_dropped: Counter,
    pub slow_consumer_closed: Counter,
    pub stanzas_bounced: Counter,
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder. The `metrics` crate has one global
/// recorder, so every daemon started in this process (tests start several)
/// shares it.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let latency = [
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .expect("bucket list is not empty");
        match builder.install_recorder() {
            Ok(h) => h,
            // Another recorder is already installed (a test harness or an
            // embedding program): render ours anyway, it just stays empty.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();

impl Metrics {
    /// The shared handle set (registered once per process).
    pub fn get() -> Arc<Metrics> {
        METRICS
            .get_or_init(|| {
                prometheus();
                Arc::new(Metrics::register())
            })
            .clone()
    }

    fn register() -> Metrics {
        describe_gauge!(
            "fedrouter_sessions",
            "Authenticated, bound sessions by kind"
        );
        describe_gauge!(
            "fedrouter_connections",
            "Open connections by kind, authenticated or not"
        );
        describe_counter!("fedrouter_stanzas_total", "Stanzas by direction and kind");
        describe_counter!(
            "fedrouter_bytes_total",
            "Bytes read from and written to sockets"
        );
        describe_histogram!(
            "fedrouter_route_seconds",
            "Time from a stanza being framed to it being queued for its target"
        );
        describe_counter!(
            "fedrouter_stream_errors_total",
            "Stream errors sent, by condition"
        );
        describe_counter!(
            "fedrouter_offline_messages_total",
            "Offline messages by event"
        );
        describe_counter!(
            "fedrouter_auth_total",
            "SASL authentication attempts by result"
        );
        describe_counter!(
            "fedrouter_dropped_total",
            "Stanzas dropped under load, by reason"
        );
        describe_counter!(
            "fedrouter_bounced_total",
            "Stanzas answered with an error instead of delivered"
        );
        let per_kind = |dir: &'static str| {
            KINDS.map(|k| counter!("fedrouter_stanzas_total", "dir" => dir, "kind" => k))
        };
        Metrics {
            c2s_sessions: gauge!("fedrouter_sessions", "kind" => "c2s"),
            c2s_connections: gauge!("fedrouter_connections", "kind" => "c2s"),
            stanzas_in: per_kind("in"),
            stanzas_out: per_kind("out"),
            bytes_in: counter!("fedrouter_bytes_total", "dir" => "in"),
            bytes_out: counter!("fedrouter_bytes_total", "dir" => "out"),
            route_seconds: histogram!("fedrouter_route_seconds"),
            stream_errors: StreamCondition::ALL
                .iter()
                .map(|c| {
                    (
                        *c,
                        counter!("fedrouter_stream_errors_total", "condition" => c.as_str()),
                    )
                })
                .collect(),
            offline_stored: counter!("fedrouter_offline_messages_total", "event" => "stored"),
            offline_delivered: counter!("fedrouter_offline_messages_total", "event" => "delivered"),
            offline_refused: counter!("fedrouter_offline_messages_total", "event" => "refused"),
            auth_success: counter!("fedrouter_auth_total", "result" => "success"),
            auth_failure: counter!("fedrouter_auth_total", "result" => "failure"),
            presence_dropped: counter!("fedrouter_dropped_total", "reason" => "presence_queue_full"),
            slow_consumer_closed: counter!("fedrouter_dropped_total", "reason" => "slow_consumer"),
            stanzas_bounced: counter!("fedrouter_bounced_total"),
        }
    }

    #[inline]
    pub fn stanza_in(&self, k: StanzaKind) {
        self.stanzas_in[kind_index(k)].increment(1);
    }

    #[inline]
    pub fn stanza_out(&self, k: StanzaKind) {
        self.stanzas_out[kind_index(k)].increment(1);
    }

    /// A stream error we send: one log line and one count.
    pub fn stream_error(
        &self,
        cond: StreamCondition,
        peer: &dyn std::fmt::Display,
        text: Option<&str>,
    ) {
        tracing::info!(condition = cond.as_str(), %peer, text, "stream error sent");
        if let Some((_, c)) = self.stream_errors.iter().find(|(k, _)| *k == cond) {
            c.increment(1);
        }
    }
}
