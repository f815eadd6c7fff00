//! How a [`Report`](crate::report::Report) is shown: a plain-text table
//! ([`table`]), JSON and the [`Summary`] a comparison reads
//! back ([`json`]), and a self-contained HTML page with SVG plots
//! ([`html`], [`plot`]). This module owns the number formats they share;
//! it never measures anything and never touches a socket.

pub mod html;
pub mod json;
pub mod plot;

pub mod table;

pub use json::{FigureSummary, LatencySummary, Summary};
pub use table::compare_table;

/// A latency given in microseconds, written in milliseconds with as many
/// decimals as carry meaning: three below 1 ms (so microseconds still
/// show), fewer as the value grows.
pub fn ms(us: f64) -> String {
    let v = us / 1000.0;
    if !v.is_finite() {
        return "-".to_string();
    }
    let decimals = match v.abs() {
        a if a < 1.0 => 3,
        a if a < 10.0 => 2,
        a if a < 1000.0 => 1,
        _ => 0,
    };
    format!("{v:.decimals$}")
}

/// An integer with thin thousands separators (`1,234,567`), so that large
/// counts can be read at a glance.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A headline figure: large values as separated integers, small ones with
/// the decimals that matter.
pub fn figure(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    let a = v.abs();
    if a >= 1000.0 || (v.fract() == 0.0 && a < 1e15) {
        let s = thousands(a.round() as u64);
        return if v < 0.0 { format!("-{s}") } else { s };
    }
    let decimals = if a >= 10.0 { 1 } else { 3 };
    format!("{v:.decimals$}")
}

/// A table before it is drawn, as text ([`Grid::to_text`]) or as HTML
/// (`html`), so both show the same cells.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Grid {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Columns aligned left (names, units); the others are numbers and
    /// align right.
    pub left: Vec<usize>,
}

impl Grid {
    pub fn new<S: ToString>(header: &[S]) -> Grid {
        Grid {
            header: header.iter().map(ToString::to_string).collect(),
            rows: Vec::new(),
            left: vec![0],
        }
    }

    /// Each column as wide as its widest cell, a rule under the header.
    pub fn to_text(&self) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = " ".repeat(w - cell.chars().count());
                if i > 0 {
                    s.push_str("  ");
                }
                if self.left.contains(&i) {
                    s.push_str(cell);
                    s.push_str(&pad);
                } else {
                    s.push_str(&pad);
                    s.push_str(cell);
                }
            }
            s.truncate(s.trim_end().len());
            s.push('\n');
            s
        };
        let mut out = line(&self.header);
        let rule: usize = widths.iter().sum::<usize>() + 2 * n.saturating_sub(1);
        out.push_str(&"-".repeat(rule));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use crate::report::{Latency, Report, Sample};

    /// A small IM run with one latency, a NaN figure and one sample.
    pub fn sample_report() -> Report {
        let mut r = Report::new("im", "fedrouter");
        r.param("users", 100);
        r.elapsed = Duration::from_secs(10);
        r.figure("messages/s", 81_234.5, "msg/s");
        r.figure("broken", f64::NAN, "x");
        let mut h = Histogram::<u64>::new(3).unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        r.latencies.push(Latency {
            name: "delivery".into(),
            histogram: h,
        });
        r.count("sent", 1000);
        r.count("lost", 0);
        r.timeline.push(Sample {
            t: 1.0,
            sent: 500,
            received: 499,
            rss_bytes: Some(1 << 20),
            cpu_percent: None,
        });
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_below_a_millisecond_keep_microseconds() {
        assert_eq!(ms(412.0), "0.412");
        assert_eq!(ms(1.0), "0.001");
        assert_eq!(ms(1234.0), "1.23");
        assert_eq!(ms(12_345.0), "12.3");
        assert_eq!(ms(2_500_000.0), "2500");
        assert_eq!(ms(f64::NAN), "-");
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn figures_show_the_decimals_that_matter() {
        assert_eq!(figure(81_234.4), "81,234");
        assert_eq!(figure(42.0), "42");
        assert_eq!(figure(12.34), "12.3");
        assert_eq!(figure(0.5), "0.500");
        assert_eq!(figure(-2500.0), "-2,500");
        assert_eq!(figure(f64::INFINITY), "-");
    }

    #[test]
    fn text_grids_align_names_left_and_numbers_right() {
        let mut g = Grid::new(&["name", "µs"]);
        g.rows.push(vec!["a".into(), "1".into()]);
        g.rows.push(vec!["longer".into(), "1000".into()]);
        assert_eq!(
            g.to_text(),
            "name      µs\n------------\na          1\nlonger  1000\n"
        );
    }
}
