//! The three plots of the HTML report, drawn by plotters' SVG backend into
//! strings: latency by percentile, throughput over time, and the target's
//! RSS (and CPU) over time. The data each plot shows is computed by a plain
//! function, tested on its own; drawing is kept to one helper.

use plotters::prelude::*;

use crate::report::{Latency, Sample};

/// What stands where a plot would: the SVG, or a sentence saying why there
/// is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Plot {
    Svg(String),
    Note(String),
}

/// One line of a plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const SIZE: (u32, u32) = (760, 380);
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The x axis of the latency plot counts "nines": x = -log10(1 - q), so
/// 0 is the minimum, 1 is p90, 2 is p99, 3 is p99.9 and 4 is p99.99, and
/// the tail gets as much room as the body.
pub const MAX_NINES: f64 = 4.0;

/// The percentile a position on the nines axis stands for, as a label.
pub fn nines_label(x: f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.ceil() as i32 - 2).max(0) as usize;
    format!("{pct:.decimals$}%")
}

/// A histogram's latency (ms) against its percentile on the nines axis,
/// from the minimum to p99.99.
pub fn percentile_curve(latency: &Latency) -> Series {
    const STEPS: usize = 200;
    let h = &latency.histogram;
    let points = (0..=STEPS)
        .map(|i| {
            let x = MAX_NINES * i as f64 / STEPS as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    Series {
        name: latency.name.clone(),
        points,
    }
}

/// Sent and received per second at each sample, each count divided by the
/// time since the previous sample (the first since the start).
pub fn rates(timeline: &[Sample]) -> [Series; 2] {
    let mut sent = Vec::new();
    let mut received = Vec::new();
    let mut prev = 0.0;
    for s in timeline {
        let dt = s.t - prev;
        prev = s.t;
        if dt > 0.0 {
            sent.push((s.t, s.sent as f64 / dt));
            received.push((s.t, s.received as f64 / dt));
        }
    }
    [
        Series {
            name: "sent/s".into(),
            points: sent,
        },
        Series {
            name: "received/s".into(),
            points: received,
        },
    ]
}

/// The target's RSS in MiB and CPU in percent over time, each only where
/// it was sampled.
pub fn resources(timeline: &[Sample]) -> (Series, Series) {
    let rss = timeline
        .iter()
        .filter_map(|s| Some((s.t, s.rss_bytes? as f64 / (1024.0 * 1024.0))))
        .collect();
    let cpu = timeline
        .iter()
        .filter_map(|s| Some((s.t, s.cpu_percent?)))
        .collect();
    (
        Series {
            name: "RSS (MiB)".into(),
            points: rss,
        },
        Series {
            name: "CPU (%)".into(),
            points: cpu,
        },
    )
}

pub fn latency_plot(latencies: &[Latency]) -> Plot {
    let series: Vec<Series> = latencies
        .iter()
        .filter(|l| !l.histogram.is_empty())
        .map(percentile_curve)
        .collect();
    if series.is_empty() {
        return Plot::Note("No latency was recorded.".into());
    }
    let axes = Axes {
        legend: SeriesLabelPosition::UpperLeft,
        x_desc: "percentile",
        y_desc: "latency (ms)",
        x_label: Some(&|x: &f64| nines_label(*x)),
        x_range: (0.0, MAX_NINES),
    };
    draw(&axes, &series, None)
}

pub fn throughput_plot(timeline: &[Sample]) -> Plot {
    let series = rates(timeline);
    if series[0].points.is_empty() {
        return Plot::Note("No timeline was sampled.".into());
    }
    let axes = Axes {
        legend: SeriesLabelPosition::LowerRight,
        x_desc: "time (s)",
        y_desc: "stanzas per second",
        x_label: None,
        x_range: time_range(timeline),
    };
    draw(&axes, &series, None)
}

pub fn resources_plot(timeline: &[Sample]) -> Plot {
    let (rss, cpu) = resources(timeline);
    if rss.points.is_empty() && cpu.points.is_empty() {
        return Plot::Note(
            "No target process was sampled (no target PID given), so RSS and CPU are unknown."
                .into(),
        );
    }
    let axes = Axes {
        legend: SeriesLabelPosition::LowerRight,
        x_desc: "time (s)",
        y_desc: "RSS (MiB)",
        x_label: None,
        x_range: time_range(timeline),
    };
    let cpu = (!cpu.points.is_empty()).then_some(("CPU (%)", cpu));
    draw(&axes, std::slice::from_ref(&rss), cpu.as_ref())
}

struct Axes<'a> {
    /// Where the legend stands clear of the lines.
    legend: SeriesLabelPosition,
    x_desc: &'a str,
    y_desc: &'a str,
    x_label: Option<&'a dyn Fn(&f64) -> String>,
    x_range: (f64, f64),
}

/// An axis value without trailing zeros: `2`, `2.5`, `90,000`.
fn tick(v: &f64) -> String {
    if v.abs() >= 100.0 {
        return super::figure(v.round());
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Time axes start where the measured phase did.
fn time_range(timeline: &[Sample]) -> (f64, f64) {
    let end = timeline.iter().map(|s| s.t).fold(0.0, f64::max);
    (0.0, if end > 0.0 { end } else { 1.0 })
}

/// Values on the y axis start at zero (a rate or a size read against zero
/// is not misread) and leave a little room at the top.
fn y_range(series: &[Series]) -> (f64, f64) {
    let hi = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    (0.0, if hi > 0.0 { hi * 1.05 } else { 1.0 })
}

/// Lines on one chart, with an optional second series on its own right
/// axis (CPU beside RSS).
fn draw(axes: &Axes, series: &[Series], right: Option<&(&str, Series)>) -> Plot {
    let mut svg = String::new();
    match draw_into(&mut svg, axes, series, right) {
        Ok(()) => Plot::Svg(svg),
        Err(e) => Plot::Note(format!("The plot could not be drawn: {e}")),
    }
}

fn draw_into(
    svg: &mut String,
    axes: &Axes,
    series: &[Series],
    right: Option<&(&str, Series)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (x0, x1) = axes.x_range;
    let (y0, y1) = y_range(series);

    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(80);
    if right.is_some() {
        builder.right_y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1, y0..y1)?
        .set_secondary_coord(
            x0..x1,
            0.0..right.map_or(1.0, |(_, s)| y_range(std::slice::from_ref(s)).1),
        );

    let mut mesh = chart.configure_mesh();
    mesh.x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15));
    if let Some(f) = axes.x_label {
        mesh.x_labels(5).x_label_formatter(f);
    }
    mesh.draw()?;

    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(line(s, colour))?
            .label(s.name.as_str())
            .legend(legend_mark(colour));
    }
    if let Some((desc, s)) = right {
        chart
            .configure_secondary_axes()
            .y_desc(*desc)
            .y_label_formatter(&tick)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        let colour = COLOURS[series.len() % COLOURS.len()];
        chart
            .draw_secondary_series(line(s, colour))?
            .label(s.name.as_str())
            .legend(legend_mark(colour));
    }
    chart
        .configure_series_labels()
        .position(axes.legend.clone())
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

fn line<DB: DrawingBackend>(s: &Series, colour: RGBColor) -> LineSeries<DB, (f64, f64)> {
    LineSeries::new(s.points.iter().copied(), colour.stroke_width(2))
}

fn legend_mark(colour: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixture::sample_report;

    #[test]
    fn the_nines_axis_is_labelled_in_percent() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(4.0), "99.99%");
    }

    #[test]
    fn ticks_drop_trailing_zeros() {
        assert_eq!(tick(&2.0), "2");
        assert_eq!(tick(&2.5), "2.5");
        assert_eq!(tick(&0.126), "0.13");
        assert_eq!(tick(&90_000.0), "90,000");
        assert_eq!(tick(&0.0), "0");
    }

    #[test]
    fn the_percentile_curve_climbs_from_minimum_to_tail() {
        let r = sample_report();
        let c = percentile_curve(&r.latencies[0]);
        assert_eq!(c.points.first(), Some(&(0.0, 0.001)));
        let (x, y) = *c.points.last().unwrap();
        assert_eq!(x, MAX_NINES);
        assert_eq!(y, 1.0);
        let at_p99 = c.points.iter().find(|p| p.0 == 2.0).unwrap().1;
        assert_eq!(at_p99, 0.99);
        assert!(c.points.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn rates_divide_each_count_by_its_interval() {
        let tl = |t, sent, received| Sample {
            t,
            sent,
            received,
            ..Sample::default()
        };
        let [sent, received] = rates(&[tl(0.5, 50, 40), tl(1.0, 100, 100), tl(1.0, 1, 1)]);
        assert_eq!(sent.points, [(0.5, 100.0), (1.0, 200.0)]);
        assert_eq!(received.points, [(0.5, 80.0), (1.0, 200.0)]);
    }

    #[test]
    fn resources_are_shown_in_mebibytes_and_percent_where_sampled() {
        let timeline = [
            Sample {
                t: 1.0,
                rss_bytes: Some(3 << 20),
                cpu_percent: Some(12.5),
                ..Sample::default()
            },
            Sample {
                t: 2.0,
                ..Sample::default()
            },
        ];
        let (rss, cpu) = resources(&timeline);
        assert_eq!(rss.points, [(1.0, 3.0)]);
        assert_eq!(cpu.points, [(1.0, 12.5)]);
    }

    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    #[test]
    fn plots_are_svg_with_their_legends() {
        let r = sample_report();
        let Plot::Svg(svg) = latency_plot(&r.latencies) else {
            panic!("no latency plot");
        };
        assert!(svg.starts_with("<svg"));
        assert!(has_text(&svg, "delivery"));
        assert!(has_text(&svg, "99.9%"), "{svg}");
        let Plot::Svg(svg) = throughput_plot(&r.timeline) else {
            panic!("no throughput plot");
        };
        assert!(has_text(&svg, "received/s"));
        let Plot::Svg(svg) = resources_plot(&r.timeline) else {
            panic!("no resources plot");
        };
        assert!(has_text(&svg, "RSS (MiB)"));
    }

    #[test]
    fn without_data_a_plot_is_a_note() {
        assert!(matches!(latency_plot(&[]), Plot::Note(_)));
        assert!(matches!(throughput_plot(&[]), Plot::Note(_)));
        let Plot::Note(n) = resources_plot(&[Sample::default()]) else {
            panic!("a plot of nothing");
        };
        assert!(n.contains("no target PID"));
    }
}
