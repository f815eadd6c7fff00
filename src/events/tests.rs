//! Metric names, labels and help texts are an interface (dashboards and
//! tests/metrics.rs read them): these tests pin them, and check that an
//! event moves its counter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    with_local_recorder,
};

use super::counter::{EventCounters, EventName};
use super::*;

/// Records what is registered and described, as `name{k=v,…}` and
/// name → help.
#[derive(Default)]
struct Names {
    keys: Mutex<BTreeSet<String>>,
    help: Mutex<BTreeMap<String, String>>,
}

impl Names {
    fn key(&self, key: &Key) {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let k = format!("{}{{{}}}", key.name(), labels.join(","));
        self.keys.lock().unwrap().insert(k);
    }
    fn describe(&self, name: KeyName, help: SharedString) {
        let (n, h) = (name.as_str().to_string(), help.to_string());
        self.help.lock().unwrap().insert(n, h);
    }
}

impl Recorder for Names {
    fn describe_counter(&self, name: KeyName, _: Option<Unit>, help: SharedString) {
        self.describe(name, help);
    }
    fn describe_gauge(&self, name: KeyName, _: Option<Unit>, help: SharedString) {
        self.describe(name, help);
    }
    fn describe_histogram(&self, name: KeyName, _: Option<Unit>, help: SharedString) {
        self.describe(name, help);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.key(key);
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.key(key);
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.key(key);
        Histogram::noop()
    }
}

#[test]
fn the_daemon_metrics_keep_their_names_labels_and_help() {
    let rec = Names::default();
    with_local_recorder(&rec, || drop(Metrics::register()));
    let keys = rec.keys.into_inner().unwrap();
    let mut expected: BTreeSet<String> = [
        "fedrouter_sessions{kind=c2s}",
        "fedrouter_connections{kind=c2s}",
        "fedrouter_bytes_total{dir=in}",
        "fedrouter_bytes_total{dir=out}",
        "fedrouter_route_seconds{}",
        "fedrouter_offline_messages_total{event=stored}",
        "fedrouter_offline_messages_total{event=acknowledged}",
        "fedrouter_offline_messages_total{event=delivered}",
        "fedrouter_offline_messages_total{event=refused}",
        "fedrouter_auth_total{result=success}",
        "fedrouter_auth_total{result=failure}",
        "fedrouter_auth_total{result=throttled}",
        "fedrouter_dropped_total{reason=presence_queue_full}",
        "fedrouter_dropped_total{reason=slow_consumer}",
        "fedrouter_bounced_total{}",
        "fedrouter_policy_refusals_total{reason=unlisted_domain,dir=out}",
        "fedrouter_policy_refusals_total{reason=unlisted_domain,dir=in}",
        "fedrouter_policy_refusals_total{reason=access_policy,dir=out}",
        "fedrouter_policy_refusals_total{reason=access_policy,dir=in}",
        "fedrouter_policy_refusals_total{reason=unverified_message,dir=in}",
        "fedrouter_policy_refusals_total{reason=unverified_subscribe,dir=in}",
        "fedrouter_policy_refusals_total{reason=unverified_other,dir=in}",
        "fedrouter_user_limit_refusals_total{limit=max_roster_items}",
        "fedrouter_user_limit_refusals_total{limit=max_inbound_subscriptions_per_domain}",
        "fedrouter_user_limit_refusals_total{limit=max_directed_presence}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for dir in ["in", "out"] {
        for kind in ["message", "presence", "iq", "other"] {
            expected.insert(format!("fedrouter_stanzas_total{{dir={dir},kind={kind}}}"));
        }
    }
    for queue in ["session", "shard", "s2s", "store"] {
        for kind in ["message", "presence", "iq", "other"] {
            expected.insert(format!("fedrouter_shed_total{{queue={queue},kind={kind}}}"));
        }
    }
    for c in StreamCondition::ALL {
        expected.insert(format!(
            "fedrouter_stream_errors_total{{condition={}}}",
            c.as_str()
        ));
    }
    assert_eq!(keys, expected);
    let help = rec.help.into_inner().unwrap();
    let expected_help = [
        (
            "fedrouter_sessions",
            "Authenticated, bound sessions by kind",
        ),
        (
            "fedrouter_connections",
            "Open connections by kind, authenticated or not",
        ),
        ("fedrouter_stanzas_total", "Stanzas by direction and kind"),
        (
            "fedrouter_shed_total",
            "Stanzas a full queue could not take, by queue and kind (messages and IQ requests are answered with resource-constraint)",
        ),
        (
            "fedrouter_bytes_total",
            "Bytes read from and written to sockets",
        ),
        (
            "fedrouter_route_seconds",
            "Time from a stanza being framed to it being queued for its target",
        ),
        (
            "fedrouter_stream_errors_total",
            "Stream errors sent, by condition",
        ),
        (
            "fedrouter_offline_messages_total",
            "Offline messages by event",
        ),
        (
            "fedrouter_auth_total",
            "SASL authentication attempts by result",
        ),
        (
            "fedrouter_dropped_total",
            "Stanzas dropped under load, by reason",
        ),
        (
            "fedrouter_bounced_total",
            "Stanzas answered with an error instead of delivered",
        ),
        (
            "fedrouter_user_limit_refusals_total",
            "Requests refused by a [user_limits] cap, by limit",
        ),
    ];
    let expected_help: BTreeMap<String, String> = expected_help
        .iter()
        .map(|(n, h)| (n.to_string(), h.to_string()))
        .collect();
    assert_eq!(help, expected_help);
}

#[test]
fn the_s2s_metrics_keep_their_names() {
    let rec = Names::default();
    with_local_recorder(&rec, || drop(S2sMetrics::new()));
    let keys = rec.keys.into_inner().unwrap();
    let expected: BTreeSet<String> = [
        "fedrouter_s2s_dns_seconds{}",
        "fedrouter_s2s_connect_seconds{}",
        "fedrouter_s2s_tls_seconds{}",
        "fedrouter_s2s_negotiation_seconds{}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys, expected);
    let help = rec.help.into_inner().unwrap();
    let names: Vec<&str> = help.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "fedrouter_s2s_auth_total",
            "fedrouter_s2s_bounces_total",
            "fedrouter_s2s_connections",
            "fedrouter_s2s_failures_total",
            "fedrouter_s2s_queue",
        ]
    );
}

#[test]
fn the_events_family_has_one_bounded_series_per_event_name() {
    let rec = Names::default();
    with_local_recorder(&rec, || drop(EventCounters::register()));
    let keys = rec.keys.into_inner().unwrap();
    assert_eq!(keys.len(), EventName::ALL.len(), "names are unique");
    for e in EventName::ALL {
        let label = e.as_str();
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{label}"
        );
        assert!(keys.contains(&format!("fedrouter_events_total{{event={label}}}")));
    }
    let help = rec.help.into_inner().unwrap();
    assert_eq!(
        help.get("fedrouter_events_total").map(String::as_str),
        Some("Events logged by the daemon, by event name")
    );
}

#[test]
fn the_audit_log_keeps_its_drop_counter() {
    let rec = Names::default();
    with_local_recorder(&rec, || drop(store::AuditMetrics::register()));
    let keys = rec.keys.into_inner().unwrap();
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        ["fedrouter_dropped_total{reason=audit_queue_full}"]
    );
}

/// The value of `fedrouter_events_total{event="…"}` in the process-wide
/// scrape (0 before its first registration).
fn scraped(event: EventName) -> f64 {
    let needle = format!("fedrouter_events_total{{event=\"{}\"}} ", event.as_str());
    prometheus()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn emitting_an_event_moves_its_counter_in_the_scrape() {
    // Other tests emit events in parallel, so counts only ever grow by at
    // least ours.
    let before = scraped(EventName::SrvTargetEmpty);
    dns::SrvTargetEmpty {
        host: "xmpp.b.test",
    }
    .emit();
    dns::SrvTargetEmpty {
        host: "xmpp.b.test",
    }
    .emit();
    assert!(scraped(EventName::SrvTargetEmpty) >= before + 2.0);

    let before = scraped(EventName::ConfigWarning);
    daemon::ConfigWarning {
        warning: &"a warning",
    }
    .emit();
    assert!(scraped(EventName::ConfigWarning) >= before + 1.0);

    let before = scraped(EventName::Listening);
    daemon::Listening {
        listener: daemon::Listener::S2s { direct_tls: true },
        addr: "127.0.0.1:5269".parse().unwrap(),
    }
    .emit();
    assert!(scraped(EventName::Listening) >= before + 1.0);
}
