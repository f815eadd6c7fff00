//! The side-by-side table: per scenario, the shared renderer
//! (`loadtest::render::table::compare_table`: a column per server, ratio
//! columns where > 1 means fedrouter did better), plus what the renderer
//! cannot show — runs that produced no report at all, and why runs failed.

use loadtest::render::json::Summary;
use loadtest::render::table::compare_table;

/// One scenario run against one server.
pub struct Run {
    pub server: String,
    pub scenario: String,
    /// The report read back from the loadtest's JSON, or why there is none.
    pub report: Result<Summary, String>,
}

/// The whole comparison as text: `header` lines, then a table per scenario
/// with `baseline` (fedrouter) as the ratios' reference, then every
/// failure.
pub fn render(header: &[String], baseline: &str, runs: &[Run]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in runs {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let mut out = String::new();
    for h in header {
        out.push_str(h);
        out.push('\n');
    }
    for sc in scenarios {
        let of_scenario = || runs.iter().filter(move |r| r.scenario == sc);
        let reports: Vec<(String, Summary)> = of_scenario()
            .filter_map(|r| Some((r.server.clone(), r.report.as_ref().ok()?.clone())))
            .collect();
        out.push('\n');
        if reports.is_empty() {
            out.push_str(&format!("scenario {sc}\n\n"));
        } else {
            out.push_str(&compare_table(&reports, baseline));
        }
        for r in of_scenario() {
            if let Err(e) = &r.report {
                out.push_str(&format!("{}: no report: {e}\n", r.server));
            }
        }
    }
    let failures: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let s = r.report.as_ref().ok()?;
            (!s.ok).then(|| {
                format!(
                    "  {} {}: {}",
                    r.server,
                    r.scenario,
                    if s.failures.is_empty() {
                        "not ok".to_string()
                    } else {
                        s.failures.join("; ")
                    }
                )
            })
        })
        .collect();
    if !failures.is_empty() {
        out.push_str("\nruns that did not meet their contract:\n");
        out.push_str(&failures.join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rate: f64, p99_us: u64, lost: u64) -> Summary {
        let v = serde_json::json!({
            "scenario": "im", "target": "t", "elapsed_s": 1.0, "ok": lost == 0,
            "figures": {"delivered": {"value": rate, "unit": "msg/s"}},
            "latencies": {"delivery": {"count": 10, "min_us": 1, "mean_us": 50.0,
                "p50_us": 100, "p90_us": 200, "p99_us": p99_us, "p999_us": p99_us,
                "max_us": p99_us}},
            "counts": {"sent": 10, "lost": lost},
            "failures": if lost > 0 { vec!["3 messages lost"] } else { vec![] },
        });
        Summary::from_json(&v).expect("a summary")
    }

    #[test]
    fn the_table_shows_every_run_with_ratios_and_says_why_runs_failed() {
        let runs = vec![
            Run {
                server: "fedrouter".into(),
                scenario: "im".into(),
                report: Ok(summary(10_000.0, 1_000, 0)),
            },
            Run {
                server: "prosody".into(),
                scenario: "im".into(),
                report: Ok(summary(1_000.0, 4_000, 3)),
            },
            Run {
                server: "prosody".into(),
                scenario: "connect".into(),
                report: Err("exited with 1".into()),
            },
        ];
        let t = render(&["header line".into()], "fedrouter", &runs);
        let line = |needle: &str| {
            t.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in\n{t}"))
                .to_string()
        };
        assert!(t.starts_with("header line\n"), "{t}");
        assert!(line("delivered").contains("10.0×"), "{t}");
        assert!(line("delivery p99").contains("4.00×"), "{t}");
        assert!(t.contains("scenario connect"), "{t}");
        assert!(t.contains("prosody: no report: exited with 1"), "{t}");
        assert!(t.contains("prosody im: 3 messages lost"), "{t}");
    }
}
