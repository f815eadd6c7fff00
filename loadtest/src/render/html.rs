//! The HTML report: one self-contained page (inline CSS and SVG, no
//! script, nothing fetched) with the tables of [`Report::to_table`] and the
//! three plots. Every piece of text from the report is escaped here.

use std::path::{Path, PathBuf};

use super::Grid;
use super::plot::{self, Plot};
use crate::report::Report;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:60em;color:#222}\
table{border-collapse:collapse;margin:1em 0}\
th,td{padding:.2em .8em;border-bottom:1px solid #ddd}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
td.l,th.l{text-align:left}\
.ok{color:#196619}.failed{color:#b00}\
figure{margin:2em 0}figcaption{font-weight:bold;margin-bottom:.5em}\
.note{color:#666;font-style:italic}";

/// Text made safe for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Grid {
    fn to_html(&self) -> String {
        let class = |i: usize| if self.left.contains(&i) { "l" } else { "n" };
        let mut out = String::from("<table>\n<tr>");
        for (i, h) in self.header.iter().enumerate() {
            out.push_str(&format!("<th class=\"{}\">{}</th>", class(i), escape(h)));
        }
        out.push_str("</tr>\n");
        for row in &self.rows {
            out.push_str("<tr>");
            for (i, cell) in row.iter().enumerate() {
                out.push_str(&format!("<td class=\"{}\">{}</td>", class(i), escape(cell)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
        out
    }
}

fn figure(caption: &str, plot: Plot) -> String {
    let body = match plot {
        // plotters escapes the text it draws into the SVG.
        Plot::Svg(svg) => svg,
        Plot::Note(note) => format!("<p class=\"note\">{}</p>", escape(&note)),
    };
    format!(
        "<figure>\n<figcaption>{}</figcaption>\n{body}\n</figure>\n",
        escape(caption)
    )
}

impl Report {
    /// The whole page as a string.
    pub fn to_html(&self) -> String {
        let title = escape(&self.title());
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
             <h1>{title}</h1>\n<p>Measured for {:.2} s.</p>\n",
            self.elapsed.as_secs_f64()
        );
        if self.ok {
            out.push_str("<p class=\"ok\"><strong>OK</strong></p>\n");
        } else {
            out.push_str(
                "<p class=\"failed\"><strong>FAILED</strong></p>\n<ul class=\"failed\">\n",
            );
            for f in &self.failures {
                out.push_str(&format!("<li>{}</li>\n", escape(f)));
            }
            out.push_str("</ul>\n");
        }
        for grid in self.grids() {
            out.push_str(&grid.to_html());
        }
        out.push_str(&figure(
            "Latency by percentile",
            plot::latency_plot(&self.latencies),
        ));
        out.push_str(&figure(
            "Throughput over time",
            plot::throughput_plot(&self.timeline),
        ));
        out.push_str(&figure(
            "Target RSS and CPU over time",
            plot::resources_plot(&self.timeline),
        ));
        out.push_str("</body>\n</html>\n");
        out
    }

    /// Writes the page to `dir/index.html`, creating `dir` if need be, and
    /// returns the file's path.
    pub fn write_html(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("index.html");
        std::fs::write(&path, self.to_html())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixture::sample_report;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_page_has_the_tables_and_three_plots() {
        let html = sample_report().to_html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<h1>loadtest im → fedrouter  (users=100)</h1>"));
        assert!(html.contains("<td class=\"l\">messages/s</td><td class=\"n\">81,235</td>"));
        assert!(html.contains("<td class=\"n\">0.999</td>"));
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("<p class=\"ok\">"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn text_from_the_report_is_escaped() {
        let mut r = sample_report();
        r.target = "<b>x</b>".into();
        r.fail("lost <3> & more");
        r.count("<kind>", 1);
        let html = r.to_html();
        assert!(!html.contains("<b>x</b>"));
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(html.contains("<li>lost &lt;3&gt; &amp; more</li>"));
        assert!(html.contains("&lt;kind&gt;"));
    }

    #[test]
    fn a_run_without_samples_says_so_instead_of_plotting() {
        let mut r = sample_report();
        r.timeline.clear();
        let html = r.to_html();
        assert_eq!(html.matches("<svg").count(), 1);
        assert!(html.contains("no target PID"));
    }

    #[test]
    fn write_html_creates_the_directory_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("run-1");
        let path = sample_report().write_html(&sub).unwrap();
        assert_eq!(path, sub.join("index.html"));
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.ends_with("</html>\n"));
    }
}
