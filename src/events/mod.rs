//! Every observable event of the daemon in one place: each one writes its
//! log line and moves its metric, so names and labels are reviewed here
//! (vector's `internal_events` habit). No other module calls `tracing` or
//! `metrics` (tests/architecture.rs checks it).
//!
//! An event is a struct in the module of its area ([`daemon`], [`store`],
//! [`dns`], [`pki`], [`tls`]; [`c2s`], [`s2s`], [`router`]) holding what
//! its line shows, borrowed where that is cheap, with `emit(self)`: it logs
//! at the event's level, message, fields and target (the module the line
//! came from, so log filters keep working), then counts. An event with a
//! metric of its own takes the held handles it moves (`emit(self, &Metrics)`);
//! the others count in `fedrouter_events_total{event}` ([`counter`]).
//!
//! Metric handles are registered once, when [`Metrics::get`] first runs, and kept;
//! the hot path only increments held handles (≈6 ns) and never looks a
//! metric up by name.

pub mod c2s;
pub mod counter;
pub mod daemon;
pub mod dns;
mod logging;
pub mod pki;
pub mod router;
pub mod s2s;
pub mod store;
pub mod tls;

pub use logging::init_logging;

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
    /// Offline messages deleted from storage as delivered.
    pub offline_acked: Counter,
    pub auth_success: Counter,
    pub auth_failure: Counter,
    /// Attempts refused by the failed-login throttle.
    pub auth_throttled: Counter,
    pub presence_dropped: Counter,
    pub slow_consumer_closed: Counter,
    /// Stanzas shed by a full queue, by queue and kind
    /// (see [`router::Shed`]).
    shed: [[Counter; 4]; 4],
    pub stanzas_bounced: Counter,
    /// Refusals by the federation policy, by reason.
    pub refused_unlisted_out: Counter,
    pub refused_unlisted_in: Counter,
    pub refused_access_out: Counter,
    pub refused_access_in: Counter,
    pub refused_unverified_message: Counter,
    pub refused_unverified_subscribe: Counter,
    pub refused_unverified_other: Counter,
    /// Requests refused by a `[user_limits]` cap.
    pub refused_roster_full: Counter,
    pub refused_inbound_subscriptions: Counter,
    pub refused_directed_presence: Counter,
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
            "fedrouter_shed_total",
            "Stanzas a full queue could not take, by queue and kind (messages and IQ requests are answered with resource-constraint)"
        );
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
        describe_counter!(
            "fedrouter_user_limit_refusals_total",
            "Requests refused by a [user_limits] cap, by limit"
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
            offline_acked: counter!("fedrouter_offline_messages_total", "event" => "acknowledged"),
            auth_success: counter!("fedrouter_auth_total", "result" => "success"),
            auth_failure: counter!("fedrouter_auth_total", "result" => "failure"),
            auth_throttled: counter!("fedrouter_auth_total", "result" => "throttled"),
            presence_dropped: counter!("fedrouter_dropped_total", "reason" => "presence_queue_full"),
            slow_consumer_closed: counter!("fedrouter_dropped_total", "reason" => "slow_consumer"),
            shed: router::ShedQueue::ALL.map(|q| {
                KINDS.map(|k| counter!("fedrouter_shed_total", "queue" => q.as_str(), "kind" => k))
            }),
            stanzas_bounced: counter!("fedrouter_bounced_total"),
            refused_unlisted_out: counter!("fedrouter_policy_refusals_total", "reason" => "unlisted_domain", "dir" => "out"),
            refused_unlisted_in: counter!("fedrouter_policy_refusals_total", "reason" => "unlisted_domain", "dir" => "in"),
            refused_access_out: counter!("fedrouter_policy_refusals_total", "reason" => "access_policy", "dir" => "out"),
            refused_access_in: counter!("fedrouter_policy_refusals_total", "reason" => "access_policy", "dir" => "in"),
            refused_unverified_message: counter!("fedrouter_policy_refusals_total", "reason" => "unverified_message", "dir" => "in"),
            refused_unverified_subscribe: counter!("fedrouter_policy_refusals_total", "reason" => "unverified_subscribe", "dir" => "in"),
            refused_unverified_other: counter!("fedrouter_policy_refusals_total", "reason" => "unverified_other", "dir" => "in"),
            refused_roster_full: counter!("fedrouter_user_limit_refusals_total", "limit" => "max_roster_items"),
            refused_inbound_subscriptions: counter!("fedrouter_user_limit_refusals_total", "limit" => "max_inbound_subscriptions_per_domain"),
            refused_directed_presence: counter!("fedrouter_user_limit_refusals_total", "limit" => "max_directed_presence"),
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

/// Server-to-server metrics. Per-domain series are labelled with the
/// remote domain only for configured partners, and `other` for everyone
/// else, so an open federation cannot explode the label set.
pub struct S2sMetrics {
    pub dns_seconds: Histogram,
    pub connect_seconds: Histogram,
    pub tls_seconds: Histogram,
    pub negotiation_seconds: Histogram,
}

impl Default for S2sMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl S2sMetrics {
    pub fn new() -> S2sMetrics {
        prometheus();
        describe_gauge!(
            "fedrouter_s2s_connections",
            "Server-to-server connections by remote domain, direction and state"
        );
        describe_gauge!(
            "fedrouter_s2s_queue",
            "Stanzas waiting for a server-to-server stream, by remote domain"
        );
        describe_counter!(
            "fedrouter_s2s_auth_total",
            "Server-to-server authentications by domain, method and result"
        );
        describe_counter!(
            "fedrouter_s2s_failures_total",
            "Failed outbound connection attempts by domain and stage"
        );
        describe_counter!(
            "fedrouter_s2s_bounces_total",
            "Stanzas bounced by the s2s layer, by domain and condition"
        );
        S2sMetrics {
            dns_seconds: histogram!("fedrouter_s2s_dns_seconds"),
            connect_seconds: histogram!("fedrouter_s2s_connect_seconds"),
            tls_seconds: histogram!("fedrouter_s2s_tls_seconds"),
            negotiation_seconds: histogram!("fedrouter_s2s_negotiation_seconds"),
        }
    }

    /// The label for a remote domain: itself if it is a listed partner in
    /// the policy in force (so a partner added by `fedrouter reload` gets
    /// its own series), `other` otherwise.
    pub fn label(policy: &crate::policy::Policy, remote: &str) -> String {
        match policy.partner(remote) {
            Some(p) if p.listed => remote.to_ascii_lowercase(),
            _ => "other".to_string(),
        }
    }

    pub fn domain(&self, policy: &crate::policy::Policy, remote: &str) -> DomainMetrics {
        DomainMetrics::new(Self::label(policy, remote), "out")
    }

    pub fn inbound(&self, policy: &crate::policy::Policy, remote: &str) -> DomainMetrics {
        DomainMetrics::new(Self::label(policy, remote), "in")
    }
}

/// Handles for one connection's domain label, held by its actor. Gauges
/// shared by several actors (the `other` label) move by increments only.
pub struct DomainMetrics {
    label: String,
    dir: &'static str,
    state: Option<(&'static str, Gauge)>,
    queue: Gauge,
    queued: usize,
    bounces: Vec<(crate::error::StanzaCondition, Counter)>,
}

impl DomainMetrics {
    fn new(label: String, dir: &'static str) -> DomainMetrics {
        DomainMetrics {
            queue: gauge!("fedrouter_s2s_queue", "domain" => label.clone()),
            label,
            dir,
            state: None,
            queued: 0,
            bounces: Vec::new(),
        }
    }

    /// Re-labels a connection: an inbound one once the peer's domain is
    /// known, any after a reload listed or unlisted its partner. The
    /// state and queue gauges move to the new label.
    pub fn relabel(&mut self, policy: &crate::policy::Policy, remote: &str) {
        let label = S2sMetrics::label(policy, remote);
        if label == self.label {
            return;
        }
        let state = self.state.as_ref().map(|(s, _)| *s);
        let queued = self.queued;
        self.set_state_opt(None);
        self.set_queue(0);
        self.label = label;
        self.queue = gauge!("fedrouter_s2s_queue", "domain" => self.label.clone());
        self.bounces.clear();
        self.set_queue(queued);
        self.set_state_opt(state);
    }

    pub fn set_state(&mut self, state: &'static str) {
        self.set_state_opt(Some(state));
    }

    fn set_state_opt(&mut self, state: Option<&'static str>) {
        if let Some((_, g)) = self.state.take() {
            g.decrement(1.0);
        }
        if let Some(s) = state {
            let g = gauge!("fedrouter_s2s_connections", "domain" => self.label.clone(), "dir" => self.dir, "state" => s);
            g.increment(1.0);
            self.state = Some((s, g));
        }
    }

    pub fn set_queue(&mut self, n: usize) {
        self.queue.increment(n as f64 - self.queued as f64);
        self.queued = n;
    }

    pub fn auth<M: s2s::AuthLabel>(&self, method: Option<M>, ok: bool) {
        let m = method.as_ref().map_or("none", M::auth_label);
        let r = if ok { "success" } else { "failure" };
        counter!("fedrouter_s2s_auth_total", "domain" => self.label.clone(), "dir" => self.dir, "method" => m, "result" => r)
            .increment(1);
    }

    pub fn failure(&self, stage: &'static str) {
        counter!("fedrouter_s2s_failures_total", "domain" => self.label.clone(), "stage" => stage)
            .increment(1);
    }

    pub fn bounce(&mut self, cond: crate::error::StanzaCondition) {
        if let Some((_, c)) = self.bounces.iter().find(|(k, _)| *k == cond) {
            c.increment(1);
            return;
        }
        let c = counter!("fedrouter_s2s_bounces_total", "domain" => self.label.clone(), "condition" => cond.as_str());
        c.increment(1);
        self.bounces.push((cond, c));
    }
}

impl Drop for DomainMetrics {
    fn drop(&mut self) {
        self.set_state_opt(None);
        self.set_queue(0);
    }
}

#[cfg(test)]
mod tests;
