//! The JSON form of a report, and the [`Summary`] a comparison tool reads
//! back from it. The field names are a contract with such tools: add
//! fields, never rename or remove one.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::report::Report;

/// What a comparison needs from one run: everything in the JSON but the
/// timeline. Figures and latencies keep the order the scenario gave them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub target: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub started_unix_ms: u64,
    pub elapsed_s: f64,
    pub figures: IndexMap<String, FigureSummary>,
    pub latencies: IndexMap<String, LatencySummary>,
    pub counts: BTreeMap<String, u64>,
    pub ok: bool,
    #[serde(default)]
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureSummary {
    /// JSON has no NaN: a figure that could not be computed is written as
    /// `null` and read back as NaN.
    #[serde(deserialize_with = "null_as_nan")]
    pub value: f64,
    pub unit: String,
}

/// A latency histogram reduced to the points a table shows, in
/// microseconds. All zero when `count` is zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    #[serde(deserialize_with = "null_as_nan")]
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary {
                count: 0,
                min_us: 0,
                mean_us: 0.0,
                p50_us: 0,
                p90_us: 0,
                p99_us: 0,
                p999_us: 0,
                max_us: 0,
            };
        }
        LatencySummary {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

impl Summary {
    /// Reads back what [`Report::to_json`] wrote (the timeline, if present,
    /// is ignored).
    pub fn from_json(v: &Value) -> Result<Summary, serde_json::Error> {
        Summary::deserialize(v)
    }
}

impl Report {
    /// The report without its timeline, in the shape [`Report::to_json`]
    /// writes and a comparison reads.
    pub fn summary(&self) -> Summary {
        Summary {
            scenario: self.scenario.clone(),
            target: self.target.clone(),
            params: self.params.clone(),
            started_unix_ms: self.started_unix_ms,
            elapsed_s: self.elapsed.as_secs_f64(),
            figures: self
                .figures
                .iter()
                .map(|f| {
                    let s = FigureSummary {
                        value: f.value,
                        unit: f.unit.clone(),
                    };
                    (f.name.clone(), s)
                })
                .collect(),
            latencies: self
                .latencies
                .iter()
                .map(|l| (l.name.clone(), LatencySummary::of(&l.histogram)))
                .collect(),
            counts: self.counts.clone(),
            ok: self.ok,
            failures: self.failures.clone(),
        }
    }

    /// The report as JSON. Field names are stable:
    ///
    /// ```text
    /// {
    ///   "scenario": "im",                  // im | presence | connect | soak
    ///   "target": "fedrouter",
    ///   "params": { "users": "100", … },   // strings, as shown in the header
    ///   "started_unix_ms": 1700000000000,
    ///   "elapsed_s": 10.0,                 // measured phase only
    ///   "figures": { "messages/s": { "value": 81234.0, "unit": "msg/s" }, … },
    ///   "latencies": { "delivery": { "count", "min_us", "mean_us", "p50_us",
    ///                  "p90_us", "p99_us", "p999_us", "max_us" }, … },
    ///   "counts": { "sent": 1000, "lost": 0, … },
    ///   "ok": true,
    ///   "failures": [ "…" ],
    ///   "timeline": [ { "t", "sent", "received", "rss_bytes", "cpu_percent" }, … ]
    /// }
    /// ```
    ///
    /// Objects keep the scenario's order. A value that is not a number
    /// (NaN) is `null`; so are `rss_bytes` and `cpu_percent` when no target
    /// process was sampled. [`Summary::from_json`] reads it back.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self.summary()).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            let timeline = serde_json::to_value(&self.timeline).unwrap_or(Value::Null);
            m.insert("timeline".to_string(), timeline);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixture::sample_report;

    #[test]
    fn json_uses_the_documented_field_names() {
        let v = sample_report().to_json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "scenario",
                "target",
                "params",
                "started_unix_ms",
                "elapsed_s",
                "figures",
                "latencies",
                "counts",
                "ok",
                "failures",
                "timeline"
            ]
        );
        assert_eq!(v["figures"]["messages/s"]["value"], 81_234.5);
        assert_eq!(v["figures"]["messages/s"]["unit"], "msg/s");
        assert_eq!(v["figures"]["broken"]["value"], Value::Null);
        let d = &v["latencies"]["delivery"];
        assert_eq!(d["count"], 1000);
        assert_eq!(d["min_us"], 1);
        assert_eq!(d["max_us"], 1000);
        assert_eq!(d["p50_us"], 500);
        assert_eq!(d["p999_us"], 999);
        assert_eq!(v["counts"]["lost"], 0);
        assert_eq!(v["timeline"][0]["rss_bytes"], 1 << 20);
        assert_eq!(v["timeline"][0]["cpu_percent"], Value::Null);
    }

    #[test]
    fn the_summary_reads_back_what_the_json_says() {
        let r = sample_report();
        let text = serde_json::to_string(&r.to_json()).unwrap();
        let back = Summary::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        let order: Vec<&str> = back.figures.keys().map(String::as_str).collect();
        assert_eq!(order, ["messages/s", "broken"]);
        assert!(back.figures["broken"].value.is_nan());
        assert_eq!(back.latencies, r.summary().latencies);
        assert_eq!(back.counts, r.counts);
        assert_eq!(back.elapsed_s, 10.0);
        assert!(back.ok);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        let s = LatencySummary::of(&Histogram::<u64>::new(3).unwrap());
        assert_eq!(s.count, 0);
        assert_eq!(s.max_us, 0);
        assert_eq!(s.mean_us, 0.0);
    }
}
