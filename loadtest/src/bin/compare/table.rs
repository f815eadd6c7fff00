//! The side-by-side table: one row per scenario figure, one column per
//! server, and how many times better fedrouter does than each other server.
//!
//! It reads the loadtest's JSON reports as `serde_json::Value` for now
//! (figures `{name: {value, unit}}`, latencies `{name: {count, p50_us, …}}`,
//! counts, ok); [`render`] is the one place to switch to
//! `loadtest::report::compare_table` once that lands.

use std::collections::BTreeSet;

use serde_json::Value;

/// One scenario run against one server.
pub struct Run {
    pub server: String,
    pub scenario: String,
    /// The JSON report, or why there is none.
    pub report: Result<Value, String>,
}

/// Which way is better for a figure: throughput up, times and sizes down.
fn higher_is_better(unit: &str) -> bool {
    unit.contains("/s")
}

/// The rows of one scenario: (label, unit, value per server), in order.
fn rows(
    scenario: &str,
    servers: &[String],
    runs: &[Run],
) -> Vec<(String, String, Vec<Option<f64>>)> {
    let report = |server: &str| {
        runs.iter()
            .find(|r| r.server == server && r.scenario == scenario)
            .and_then(|r| r.report.as_ref().ok())
    };
    let mut out: Vec<(String, String, Vec<Option<f64>>)> = Vec::new();
    let mut push = |label: String, unit: &str, get: &dyn Fn(&Value) -> Option<f64>| {
        if out.iter().any(|(l, _, _)| *l == label) {
            return;
        }
        let vals: Vec<Option<f64>> = servers.iter().map(|s| report(s).and_then(get)).collect();
        if vals.iter().any(Option::is_some) {
            out.push((label, unit.to_string(), vals));
        }
    };
    // Keys in the order the first server's report has them, then any others.
    let keys = |section: &str| -> Vec<String> {
        let mut seen = Vec::new();
        for s in servers {
            if let Some(Value::Object(m)) = report(s).and_then(|r| r.get(section)) {
                for k in m.keys() {
                    if !seen.contains(k) {
                        seen.push(k.clone());
                    }
                }
            }
        }
        seen
    };
    for name in keys("figures") {
        let unit = servers
            .iter()
            .find_map(|s| report(s)?.get("figures")?.get(&name)?.get("unit")?.as_str())
            .unwrap_or("")
            .to_string();
        let n = name.clone();
        push(name, &unit, &|r| {
            r.get("figures")?.get(&n)?.get("value")?.as_f64()
        });
    }
    for name in keys("latencies") {
        for q in ["p50", "p99", "p999", "max"] {
            let n = name.clone();
            push(format!("{name} {q}"), "ms", &move |r| {
                let us = r
                    .get("latencies")?
                    .get(&n)?
                    .get(format!("{q}_us"))?
                    .as_f64()?;
                Some(us / 1000.0)
            });
        }
    }
    // Counts that went wrong somewhere (lost, failed …); sent/received are
    // in the figures already.
    let counts: BTreeSet<String> = keys("counts").into_iter().collect();
    for name in counts {
        if matches!(name.as_str(), "sent" | "received") {
            continue;
        }
        let n = name.clone();
        let get = move |r: &Value| r.get("counts")?.get(&n)?.as_f64();
        let any_nonzero = servers
            .iter()
            .any(|s| report(s).and_then(&get).is_some_and(|v| v != 0.0));
        if any_nonzero {
            push(name, "count", &get);
        }
    }
    out
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// How many times better `base` (fedrouter) is than `other`.
fn advantage(base: Option<f64>, other: Option<f64>, unit: &str) -> String {
    let (Some(b), Some(o)) = (base, other) else {
        return "-".into();
    };
    if unit == "count" {
        return "-".into();
    }
    let r = if higher_is_better(unit) { b / o } else { o / b };
    if r.is_finite() {
        format!("{r:.1}×")
    } else {
        "-".into()
    }
}

/// The whole table, as text. `servers[0]` is the one the ratios are for
/// (fedrouter); `header` lines go above it.
pub fn render(header: &[String], servers: &[String], runs: &[Run]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in runs {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let mut head = vec!["scenario".to_string(), "figure".into(), "unit".into()];
    head.extend(servers.iter().cloned());
    let base = servers.first().cloned().unwrap_or_default();
    head.extend(servers.iter().skip(1).map(|s| format!("{base} vs {s}")));
    let mut table = vec![head];
    for sc in &scenarios {
        let status: Vec<String> = servers
            .iter()
            .map(
                |s| match runs.iter().find(|r| &r.server == s && r.scenario == *sc) {
                    None => "-".into(),
                    Some(Run { report: Err(_), .. }) => "FAILED".into(),
                    Some(Run { report: Ok(v), .. }) => {
                        if v.get("ok").and_then(Value::as_bool).unwrap_or(false) {
                            "ok".into()
                        } else {
                            "NOT OK".into()
                        }
                    }
                },
            )
            .collect();
        let mut row = vec![sc.to_string(), "result".into(), String::new()];
        row.extend(status);
        row.extend(servers.iter().skip(1).map(|_| String::new()));
        table.push(row);
        for (label, unit, vals) in rows(sc, servers, runs) {
            let mut row = vec![String::new(), label, unit.clone()];
            row.extend(vals.iter().map(|v| fmt_value(*v)));
            row.extend(vals.iter().skip(1).map(|v| advantage(vals[0], *v, &unit)));
            table.push(row);
        }
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for h in header {
        out.push_str(h);
        out.push('\n');
    }
    for (i, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let pad = widths[c] - cell.chars().count();
                if c < 3 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    let failures: Vec<String> = runs
        .iter()
        .filter_map(|r| match &r.report {
            Err(e) => Some(format!("{} {}: {e}", r.server, r.scenario)),
            Ok(v) => {
                let why: Vec<&str> = v
                    .get("failures")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                (!why.is_empty())
                    .then(|| format!("{} {}: {}", r.server, r.scenario, why.join("; ")))
            }
        })
        .collect();
    if !failures.is_empty() {
        out.push_str("\nnot ok:\n");
        for f in failures {
            out.push_str(&format!("  {f}\n"));
        }
    }
    out.push_str(&format!(
        "\n'{base} vs X': how many times better {base} does (throughput: {base}/X; times: X/{base}).\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rate: f64, p99_us: u64, lost: u64) -> Value {
        serde_json::json!({
            "ok": lost == 0,
            "figures": {"messages/s": {"value": rate, "unit": "msg/s"}},
            "latencies": {"delivery": {"count": 10, "p50_us": 100, "p90_us": 200,
                "p99_us": p99_us, "p999_us": p99_us, "max_us": p99_us}},
            "counts": {"sent": 10, "lost": lost},
            "failures": if lost > 0 { vec!["lost messages"] } else { vec![] },
        })
    }

    #[test]
    fn the_table_shows_each_server_and_fedrouters_advantage_either_way_round() {
        let servers = vec!["fedrouter".to_string(), "prosody".into()];
        let runs = vec![
            Run {
                server: "fedrouter".into(),
                scenario: "im".into(),
                report: Ok(report(10_000.0, 1_000, 0)),
            },
            Run {
                server: "prosody".into(),
                scenario: "im".into(),
                report: Ok(report(1_000.0, 4_000, 3)),
            },
            Run {
                server: "prosody".into(),
                scenario: "connect".into(),
                report: Err("exited with 1".into()),
            },
        ];
        let t = render(&[], &servers, &runs);
        let line = |needle: &str| {
            t.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in\n{t}"))
                .to_string()
        };
        assert!(line("messages/s").ends_with("10.0×"), "{t}");
        assert!(line("delivery p99").ends_with("4.0×"), "{t}");
        assert!(
            line("lost").contains(" 0 ") && line("lost").contains(" 3 "),
            "{t}"
        );
        assert!(line("result").contains("NOT OK"), "{t}");
        assert!(t.contains("prosody connect: exited with 1"), "{t}");
        assert!(t.contains("prosody im: lost messages"), "{t}");
    }
}
