//! `sprout bench serve --plot FILE.svg`: end-to-end latency and time-to-first-token percentiles
//! (p50/p90/p99) and throughput against concurrency, one panel each, as an SVG file.

use std::path::Path;

use anyhow::{Context, Result};
use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;
use serde_json::Value;

/// Size of the whole figure in pixels (three panels side by side).
const FIGURE_PX: (u32, u32) = (1500, 480);

/// One concurrency level of a sweep, as plotted: percentiles in milliseconds (NaN when the run
/// measured none, e.g. TTFT without streaming).
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    /// Concurrent clients.
    pub concurrency: usize,
    /// End-to-end latency p50, p90, p99 (ms).
    pub e2e_ms: [f64; 3],
    /// Time to first token p50, p90, p99 (ms).
    pub ttft_ms: [f64; 3],
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Generated tokens per second, all requests together.
    pub output_tokens_per_s: f64,
}

impl SweepPoint {
    /// Reads one level out of a load test report (`sprout_server::bench::run`'s JSON).
    pub fn from_report(concurrency: usize, report: &Value) -> SweepPoint {
        let ms = |key: &str| {
            ["p50", "p90", "p99"].map(|p| report[key][p].as_f64().map_or(f64::NAN, |s| s * 1e3))
        };
        SweepPoint {
            concurrency,
            e2e_ms: ms("e2e_s"),
            ttft_ms: ms("ttft_s"),
            requests_per_s: report["requests_per_s"].as_f64().unwrap_or(f64::NAN),
            output_tokens_per_s: report["output_tokens_per_s"].as_f64().unwrap_or(f64::NAN),
        }
    }
}

/// Writes the plot of `points` (sorted by concurrency here) to `path`.
pub fn write_svg(path: &Path, points: &[SweepPoint], title: &str) -> Result<()> {
    let svg = render_svg(points, title)?;
    std::fs::write(path, svg).with_context(|| {
        format!(
            "writing the plot to {} (does its directory exist and is it writable?)",
            path.display()
        )
    })
}

/// The plot as SVG text.
pub fn render_svg(points: &[SweepPoint], title: &str) -> Result<String> {
    anyhow::ensure!(
        !points.is_empty(),
        "nothing to plot: no concurrency level ran"
    );
    let mut points = points.to_vec();
    points.sort_by_key(|p| p.concurrency);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, FIGURE_PX).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 20))?;
        let panels = root.split_evenly((1, 3));
        let axis = ConcurrencyAxis::new(&points);
        let e2e = |i: usize| move |p: &SweepPoint| p.e2e_ms[i];
        let ttft = |i: usize| move |p: &SweepPoint| p.ttft_ms[i];
        latency_panel(
            &panels[0],
            "end-to-end latency",
            &axis,
            &points,
            &[
                ("e2e p50", e2e(0)),
                ("e2e p90", e2e(1)),
                ("e2e p99", e2e(2)),
            ],
        )?;
        latency_panel(
            &panels[1],
            "time to first token",
            &axis,
            &points,
            &[
                ("TTFT p50", ttft(0)),
                ("TTFT p90", ttft(1)),
                ("TTFT p99", ttft(2)),
            ],
        )?;
        throughput_panel(&panels[2], &axis, &points)?;
        root.present()?;
    }
    Ok(svg)
}

/// Colours of the three percentile series and of the two throughput series.
const SERIES_COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
];

/// The x axis: concurrency on a log2 scale (1, 4, 16 evenly spaced), a tick and label at each
/// level run and nowhere else.
#[derive(Clone)]
struct ConcurrencyAxis {
    levels: Vec<usize>,
    lo: f64,
    hi: f64,
}

impl ConcurrencyAxis {
    fn new(points: &[SweepPoint]) -> ConcurrencyAxis {
        let levels: Vec<usize> = points.iter().map(|p| p.concurrency.max(1)).collect();
        let xs: Vec<f64> = levels.iter().map(|&c| x_of(c)).collect();
        let (min, max) = xs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let pad = ((max - min) * 0.08).max(0.5);
        ConcurrencyAxis {
            levels,
            lo: min - pad,
            hi: max + pad,
        }
    }

    /// The concurrency whose tick is nearest `x`, as the tick's label.
    fn label(&self, x: f64) -> String {
        self.levels
            .iter()
            .min_by(|a, b| (x_of(**a) - x).abs().total_cmp(&(x_of(**b) - x).abs()))
            .map_or_else(String::new, |c| c.to_string())
    }
}

impl Ranged for ConcurrencyAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value - self.lo) / (self.hi - self.lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            // No light grid lines between levels.
            return Vec::new();
        }
        self.levels.iter().map(|&c| x_of(c)).collect()
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for ConcurrencyAxis {
    fn format_ext(&self, value: &f64) -> String {
        self.label(*value)
    }
}

/// Where concurrency `c` sits on the x axis.
fn x_of(c: usize) -> f64 {
    (c.max(1) as f64).log2()
}

/// The top of a y axis that shows `values` (finite ones) with some headroom.
fn y_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 {
        max * 1.15
    } else {
        1.0
    }
}

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One panel of latency percentile series (ms) against concurrency; levels without a value
/// (NaN) are left out of their series.
fn latency_panel<F: Fn(&SweepPoint) -> f64>(
    area: &Panel<'_>,
    caption: &str,
    axis: &ConcurrencyAxis,
    points: &[SweepPoint],
    series: &[(&str, F)],
) -> Result<()> {
    let top = y_top(series.iter().flat_map(|(_, f)| points.iter().map(f)));
    let any = series
        .iter()
        .any(|(_, f)| points.iter().any(|p| f(p).is_finite()));
    let caption = if any {
        format!("{caption} (ms)")
    } else {
        format!("{caption}: not measured")
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(axis.clone(), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("concurrency")
        .y_desc("ms")
        .draw()?;
    for ((name, f), color) in series.iter().zip(SERIES_COLORS) {
        let line: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| f(p).is_finite())
            .map(|p| (x_of(p.concurrency), f(p)))
            .collect();
        if line.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            line.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )?;
    }
    if any {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// Output tokens/s (left axis) and requests/s (right axis) against concurrency.
fn throughput_panel(area: &Panel<'_>, axis: &ConcurrencyAxis, points: &[SweepPoint]) -> Result<()> {
    let tokens_top = y_top(points.iter().map(|p| p.output_tokens_per_s));
    let requests_top = y_top(points.iter().map(|p| p.requests_per_s));
    let mut chart = ChartBuilder::on(area)
        .caption("throughput", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(axis.clone(), 0f64..tokens_top)?
        .set_secondary_coord(axis.clone(), 0f64..requests_top);
    chart
        .configure_mesh()
        .x_desc("concurrency")
        .y_desc("output tokens/s")
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("requests/s")
        .draw()?;
    let line = |f: fn(&SweepPoint) -> f64| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter(|p| f(p).is_finite())
            .map(|p| (x_of(p.concurrency), f(p)))
            .collect()
    };
    let (tokens_color, requests_color) = (SERIES_COLORS[0], SERIES_COLORS[2]);
    let tokens = line(|p| p.output_tokens_per_s);
    chart
        .draw_series(LineSeries::new(
            tokens.clone(),
            tokens_color.stroke_width(2),
        ))?
        .label("output tokens/s")
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], tokens_color.stroke_width(2))
        });
    chart.draw_series(
        tokens
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 3, tokens_color.filled())),
    )?;
    let requests = line(|p| p.requests_per_s);
    chart
        .draw_secondary_series(LineSeries::new(
            requests.clone(),
            requests_color.stroke_width(2),
        ))?
        .label("requests/s (right axis)")
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], requests_color.stroke_width(2))
        });
    chart.draw_secondary_series(
        requests
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 3, requests_color.filled())),
    )?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(concurrency: usize, scale: f64) -> SweepPoint {
        SweepPoint {
            concurrency,
            e2e_ms: [100.0 * scale, 150.0 * scale, 210.0 * scale],
            ttft_ms: [10.0 * scale, 15.0 * scale, 21.0 * scale],
            requests_per_s: 2.0 * scale,
            output_tokens_per_s: 120.0 * scale,
        }
    }

    /// The text of every `<text>` element, in order.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|rest| {
                let body = &rest[rest.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    /// The polylines' point lists, as (x, y) pixel pairs.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("<polyline")
            .skip(1)
            .filter_map(|rest| {
                let start = rest.find("points=\"")? + 8;
                let end = start + rest[start..].find('"')?;
                Some(
                    rest[start..end]
                        .split_whitespace()
                        .filter_map(|pair| {
                            let (x, y) = pair.split_once(',')?;
                            Some((x.parse().ok()?, y.parse().ok()?))
                        })
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn plot_has_axes_series_and_the_concurrency_labels() {
        // Out of order on purpose: the plot sorts by concurrency.
        let points = [point(16, 4.0), point(1, 1.0), point(4, 2.0)];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.svg");
        write_svg(&path, &points, "sprout bench serve").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg") || svg.contains("<svg "),
            "{svg:.200}"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        let texts = texts(&svg);
        for label in [
            "sprout bench serve",
            "concurrency",
            "ms",
            "output tokens/s",
            "requests/s",
            "e2e p50",
            "e2e p90",
            "e2e p99",
            "TTFT p50",
            "TTFT p99",
            "output tokens/s",
            "requests/s (right axis)",
        ] {
            assert!(
                texts.iter().any(|t| t == label),
                "no {label:?} in {texts:?}"
            );
        }
        // Each of the three x axes labels exactly the levels run.
        for level in ["1", "4", "16"] {
            let n = texts.iter().filter(|t| *t == level).count();
            assert!(n >= 3, "level {level} labelled {n} times in {texts:?}");
        }
        assert!(!texts.iter().any(|t| t == "2" || t == "8"), "{texts:?}");
        // Series lines: 3 e2e + 3 TTFT + 2 throughput with 3 points each, plus one short
        // legend stroke per series.
        let lines = polylines(&svg);
        let full: Vec<_> = lines.iter().filter(|l| l.len() == 3).collect();
        assert_eq!(full.len(), 8, "{lines:?}");
        // Latency grows with concurrency here, so every series climbs (SVG y points down) and
        // runs left to right in concurrency order.
        for line in &full {
            assert!(line[0].0 < line[1].0 && line[1].0 < line[2].0, "{line:?}");
            assert!(line[0].1 > line[2].1, "{line:?}");
        }
    }

    #[test]
    fn missing_ttft_is_left_out_and_said() {
        let mut points = vec![point(1, 1.0), point(8, 2.0)];
        for p in &mut points {
            p.ttft_ms = [f64::NAN; 3];
        }
        let svg = render_svg(&points, "no stream").unwrap();
        let texts = texts(&svg);
        assert!(
            texts
                .iter()
                .any(|t| t == "time to first token: not measured"),
            "{texts:?}"
        );
        assert!(!texts.iter().any(|t| t == "TTFT p50"), "{texts:?}");
        // Two-point series (3 e2e, 2 throughput), each climbing; axes, ticks and the legend's
        // strokes are two-point polylines too, but flat or upright.
        let lines = polylines(&svg);
        let slanted = |l: &&Vec<(f64, f64)>| l[0].0 != l[1].0 && l[0].1 != l[1].1;
        let series = lines
            .iter()
            .filter(|l| l.len() == 2)
            .filter(slanted)
            .count();
        assert_eq!(series, 3 + 2, "{lines:?}");
    }

    #[test]
    fn from_report_reads_seconds_as_milliseconds() {
        let report = serde_json::json!({
            "requests_per_s": 3.5, "output_tokens_per_s": 200.0,
            "e2e_s": {"p50": 0.5, "p90": 0.75, "p99": 1.0, "n": 4},
            "ttft_s": {"p50": null, "p90": null, "p99": null, "n": 0},
        });
        let p = SweepPoint::from_report(4, &report);
        assert_eq!(p.e2e_ms, [500.0, 750.0, 1000.0]);
        assert!(p.ttft_ms.iter().all(|v| v.is_nan()));
        assert_eq!((p.requests_per_s, p.output_tokens_per_s), (3.5, 200.0));
        assert!(render_svg(&[], "empty").is_err());
    }
}
