//! The plain-text forms: one run as a table ([`Report::to_table`]) and one
//! scenario across targets side by side ([`compare_table`]). No colours:
//! the text goes to files and pipes as often as to a terminal.

use super::json::{LatencySummary, Summary};
use super::{Grid, figure, ms, thousands};
use crate::report::Report;

impl Report {
    /// A readable table: header, figures, latency percentiles (ms), counts
    /// by kind, and a verdict line.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{}\nmeasured for {:.2} s\n",
            self.title(),
            self.elapsed.as_secs_f64()
        );
        for grid in self.grids() {
            out.push('\n');
            out.push_str(&grid.to_text());
        }
        out.push('\n');
        if self.ok {
            out.push_str("OK\n");
        } else {
            out.push_str("FAILED\n");
            for f in &self.failures {
                out.push_str(&format!("  - {f}\n"));
            }
        }
        out
    }

    /// `loadtest im → fedrouter  (users=100 …)`.
    pub(crate) fn title(&self) -> String {
        let mut out = format!("loadtest {} → {}", self.scenario, self.target);
        if !self.params.is_empty() {
            let params: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push_str(&format!("  ({})", params.join(" ")));
        }
        out
    }

    /// The figures, the latencies and the counts, each as a grid (left out
    /// when the scenario has none).
    pub(crate) fn grids(&self) -> Vec<Grid> {
        let mut grids = Vec::new();
        if !self.figures.is_empty() {
            let mut g = Grid::new(&["figure", "value", "unit"]);
            g.left.push(2);
            for f in &self.figures {
                g.rows
                    .push(vec![f.name.clone(), figure(f.value), f.unit.clone()]);
            }
            grids.push(g);
        }
        if !self.latencies.is_empty() {
            let mut g = Grid::new(&["latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"]);
            for l in &self.latencies {
                // The same reduction as the JSON, so the two never disagree.
                let s = LatencySummary::of(&l.histogram);
                let mut row = vec![l.name.clone(), thousands(s.count)];
                for us in [s.p50_us, s.p90_us, s.p99_us, s.p999_us, s.max_us] {
                    row.push(if s.count == 0 {
                        "-".to_string()
                    } else {
                        ms(us as f64)
                    });
                }
                g.rows.push(row);
            }
            grids.push(g);
        }
        if !self.counts.is_empty() {
            let mut g = Grid::new(&["count", "n"]);
            for (k, n) in &self.counts {
                g.rows.push(vec![k.clone(), thousands(*n)]);
            }
            grids.push(g);
        }
        grids
    }
}

/// Which way a figure is better, judged from its unit: rates (`…/s`) are
/// better higher; durations and sizes are better lower. Any other unit
/// gets no ratio, since the table cannot know what a bigger number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    pub fn from_unit(unit: &str) -> Option<Better> {
        let u = unit.trim();
        if u.ends_with("/s") {
            return Some(Better::Higher);
        }
        const LOWER: [&str; 14] = [
            "ns", "µs", "us", "ms", "s", "min", "B", "bytes", "KiB", "MiB", "GiB", "kB", "KB", "MB",
        ];
        LOWER.contains(&u).then_some(Better::Lower)
    }
}

/// A ratio where > 1 means the baseline did better.
fn ratio(better: Option<Better>, baseline: Option<f64>, other: Option<f64>) -> String {
    let (Some(better), Some(b), Some(o)) = (better, baseline, other) else {
        return "-".to_string();
    };
    let r = match better {
        Better::Higher => b / o,
        Better::Lower => o / b,
    };
    if !r.is_finite() {
        return "-".to_string();
    }
    let decimals = if r < 10.0 {
        2
    } else if r < 100.0 {
        1
    } else {
        0
    };
    format!("{r:.decimals$}×")
}

/// One scenario across targets, side by side: a row per headline figure
/// and for p50/p99/max of the first latency, a column per target, and per
/// target other than `baseline` a ratio column arranged so that > 1 always
/// means the baseline did better (baseline ÷ other for rates, other ÷
/// baseline for latencies, durations and sizes). Figures appear in the
/// baseline's order, then any only the others have. Without the baseline
/// among `reports`, no ratios are shown.
pub fn compare_table(reports: &[(String, Summary)], baseline: &str) -> String {
    let base = reports.iter().find(|(t, _)| t == baseline).map(|(_, s)| s);
    let others: Vec<&(String, Summary)> = if base.is_some() {
        reports.iter().filter(|(t, _)| t != baseline).collect()
    } else {
        Vec::new()
    };

    let mut header = vec![String::new()];
    header.extend(reports.iter().map(|(t, _)| t.clone()));
    header.extend(others.iter().map(|(t, _)| format!("vs {t}")));
    let mut grid = Grid::new(&header);

    // Row names in the baseline's order (or the first report's), then any
    // figure only another target reported.
    let ordered = base.into_iter().chain(reports.iter().map(|(_, s)| s));
    let mut figures: Vec<(String, String)> = Vec::new();
    for s in ordered {
        for (name, f) in &s.figures {
            if !figures.iter().any(|(n, _)| n == name) {
                figures.push((name.clone(), f.unit.clone()));
            }
        }
    }

    let value_row = |label: String,
                     better: Option<Better>,
                     get: &dyn Fn(&Summary) -> Option<f64>,
                     show: &dyn Fn(f64) -> String| {
        let mut row = vec![label];
        row.extend(
            reports
                .iter()
                .map(|(_, s)| get(s).map(show).unwrap_or("-".into())),
        );
        let b = base.and_then(get);
        row.extend(others.iter().map(|(_, s)| ratio(better, b, get(s))));
        row
    };
    for (name, unit) in &figures {
        let get = |s: &Summary| s.figures.get(name).map(|f| f.value);
        grid.rows.push(value_row(
            format!("{name} ({unit})"),
            Better::from_unit(unit),
            &get,
            &figure,
        ));
    }

    let latency = base
        .or(reports.first().map(|(_, s)| s))
        .and_then(|s| s.latencies.keys().next().cloned());
    if let Some(name) = &latency {
        type Pick = fn(&LatencySummary) -> u64;
        let picks: [(&str, Pick); 3] = [
            ("p50", |l| l.p50_us),
            ("p99", |l| l.p99_us),
            ("max", |l| l.max_us),
        ];
        for (label, pick) in picks {
            let get = |s: &Summary| {
                s.latencies
                    .get(name)
                    .filter(|l| l.count > 0)
                    .map(|l| pick(l) as f64)
            };
            grid.rows.push(value_row(
                format!("{name} {label} (ms)"),
                Some(Better::Lower),
                &get,
                &ms,
            ));
        }
    }

    let mut verdicts = vec!["verdict".to_string()];
    verdicts.extend(
        reports
            .iter()
            .map(|(_, s)| if s.ok { "OK" } else { "FAILED" }.to_string()),
    );
    grid.rows.push(verdicts);

    let scenario = reports
        .first()
        .map(|(_, s)| s.scenario.as_str())
        .unwrap_or("-");
    let mut out = format!("scenario {scenario}\n\n");
    out.push_str(&grid.to_text());
    if base.is_some() {
        out.push_str(&format!(
            "\nratios > 1 mean {baseline} is better (rates: {baseline} ÷ other; \
             latencies, durations, sizes: other ÷ {baseline})\n"
        ));
    } else {
        out.push_str(&format!(
            "\nno ratios: baseline {baseline} is not among the targets\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixture::sample_report;

    #[test]
    fn the_table_shows_header_figures_percentiles_counts_and_verdict() {
        let t = sample_report().to_table();
        assert!(t.starts_with("loadtest im → fedrouter  (users=100)\nmeasured for 10.00 s\n"));
        assert!(t.contains("messages/s  81,235  msg/s"), "{t}");
        assert!(t.contains("broken           -  x"), "{t}");
        // 1..=1000 µs: p50 = 500 µs, p90 = 900 µs, p99 = 990 µs,
        // p99.9 = 999 µs, max = 1 ms.
        assert!(
            t.contains("delivery      1,000  0.500  0.900  0.990  0.999  1.00"),
            "{t}"
        );
        assert!(t.contains("lost       0\n"), "{t}");
        assert!(t.ends_with("\nOK\n"), "{t}");
    }

    #[test]
    fn a_failed_run_lists_its_failures() {
        let mut r = sample_report();
        r.fail("3 messages lost");
        r.fail("1 misdelivered");
        assert!(
            r.to_table()
                .ends_with("\nFAILED\n  - 3 messages lost\n  - 1 misdelivered\n")
        );
    }

    #[test]
    fn an_empty_latency_shows_dashes() {
        let mut r = sample_report();
        r.latencies[0].histogram.reset();
        let t = r.to_table();
        assert!(
            t.contains("delivery          0    -    -    -      -    -\n"),
            "{t}"
        );
    }

    #[test]
    fn the_direction_of_better_follows_the_unit() {
        assert_eq!(Better::from_unit("msg/s"), Some(Better::Higher));
        assert_eq!(Better::from_unit("ms"), Some(Better::Lower));
        assert_eq!(Better::from_unit("KiB"), Some(Better::Lower));
        assert_eq!(Better::from_unit("sessions"), None);
    }

    fn summary(target: &str, rate: f64, p50_us: u64, ok: bool) -> (String, Summary) {
        let mut s = sample_report().summary();
        s.target = target.to_string();
        s.figures.shift_remove("broken");
        s.figures["messages/s"].value = rate;
        s.figures.insert(
            "sessions".into(),
            crate::render::FigureSummary {
                value: 10.0,
                unit: "sessions".into(),
            },
        );
        let l = &mut s.latencies["delivery"];
        l.p50_us = p50_us;
        l.p99_us = p50_us * 2;
        l.max_us = p50_us * 4;
        s.ok = ok;
        (target.to_string(), s)
    }

    #[test]
    fn comparison_ratios_above_one_mean_the_baseline_is_better() {
        let reports = [
            summary("fedrouter", 100_000.0, 500, true),
            summary("prosody", 10_000.0, 5_000, true),
            summary("ejabberd", 25_000.0, 1_000, false),
        ];
        let t = compare_table(&reports, "fedrouter");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "scenario im");
        assert!(lines[2].ends_with("fedrouter  prosody  ejabberd  vs prosody  vs ejabberd"));
        let row = |name: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no row {name} in\n{t}"))
                .split_whitespace()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
        };
        // Columns are read from the right: vs ejabberd, vs prosody,
        // ejabberd, prosody, fedrouter.
        assert_eq!(
            row("messages/s"),
            ["4.00×", "10.0×", "25,000", "10,000", "100,000"]
        );
        assert_eq!(
            row("delivery p50"),
            ["2.00×", "10.0×", "1.00", "5.00", "0.500"]
        );
        assert_eq!(
            row("delivery max"),
            ["2.00×", "10.0×", "4.00", "20.0", "2.00"]
        );
        // No direction for a count: values but no ratios.
        assert_eq!(row("sessions"), ["-", "-", "10", "10", "10"]);
        assert!(t.contains("verdict"));
        assert!(t.contains("OK       OK    FAILED"), "{t}");
        assert!(t.ends_with("ratios > 1 mean fedrouter is better (rates: fedrouter ÷ other; latencies, durations, sizes: other ÷ fedrouter)\n"));
    }

    #[test]
    fn a_comparison_without_its_baseline_shows_no_ratios() {
        let reports = [summary("prosody", 1.0, 1, true)];
        let t = compare_table(&reports, "fedrouter");
        assert!(!t.contains("vs "));
        assert!(t.ends_with("no ratios: baseline fedrouter is not among the targets\n"));
    }

    #[test]
    fn a_figure_missing_from_one_target_shows_a_dash() {
        let mut reports = vec![
            summary("fedrouter", 2.0, 1, true),
            summary("prosody", 1.0, 1, true),
        ];
        reports[1].1.figures.shift_remove("messages/s");
        let t = compare_table(&reports, "fedrouter");
        let row = t.lines().find(|l| l.starts_with("messages/s")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["messages/s", "(msg/s)", "2", "-", "-"]
        );
    }
}
