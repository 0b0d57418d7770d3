//! SVG plots of a simulation: WAF over time, erase-count histogram, latency CDFs, and the
//! latency tail (1 − CDF, log–log). Each carries the run's configuration.

use std::path::Path;

use anyhow::{Context, Result};
use lightnvm_workload::SimReport;
use plotters::prelude::*;

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}

/// Writes every plot into `dir`; `config` is printed under each title.
pub fn write_all(dir: &Path, r: &SimReport, config: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    waf(&dir.join("waf.svg"), r, config)?;
    erase_histogram(&dir.join("erase_counts.svg"), r, config)?;
    latency_cdf(&dir.join("latency_cdf.svg"), r, config)?;
    latency_tail(&dir.join("latency_tail.svg"), r, config)?;
    Ok(())
}

/// Draws the legend box of `chart`'s labeled series.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// A short line of `style` for a series' legend entry.
fn legend_mark<S: Into<ShapeStyle>>(style: S) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    let style = style.into();
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}

/// A white SVG canvas with the configuration line at its foot; returns the area above it.
fn canvas<'a>(
    path: &'a Path,
    config: &str,
) -> Result<DrawingArea<SVGBackend<'a>, plotters::coord::Shift>> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, foot) = root.split_vertically(496);
    foot.draw_text(config, &("sans-serif", 12).into_text_style(&foot), (10, 4))
        .map_err(err)?;
    Ok(top)
}

fn waf(path: &Path, r: &SimReport, config: &str) -> Result<()> {
    let root = canvas(path, config)?;
    let xmax = r.waf_series.last().map_or(1, |p| p.0).max(1) as f64;
    let ymax = r.waf_series.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    // WAF above; user and GC throughput over the same host writes below (with device time).
    let (upper, lower) = if r.throughput_series.is_empty() {
        (root.clone(), None)
    } else {
        let (u, l) = root.split_vertically(280);
        (u, Some(l))
    };
    let mut chart = ChartBuilder::on(&upper)
        .caption("Write amplification (user + GC) / user", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("host sectors written (measured phase)")
        .y_desc("WAF")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            r.waf_series.iter().map(|&(x, y)| (x as f64, y)),
            &BLUE,
        ))
        .map_err(err)?;
    if let Some(lower) = lower {
        let tmax = r
            .throughput_series
            .iter()
            .map(|p| p.1.max(p.2))
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&lower)
            .caption("Throughput (simulated time)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax, 0f64..tmax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("host sectors written (measured phase)")
            .y_desc("MiB/s")
            .draw()
            .map_err(err)?;
        for (name, color, pick) in [
            ("user (host writes)", BLUE, 0usize),
            ("GC (sectors moved)", RED, 1),
        ] {
            chart
                .draw_series(LineSeries::new(
                    r.throughput_series
                        .iter()
                        .map(move |&(x, u, g)| (x as f64, if pick == 0 { u } else { g })),
                    &color,
                ))
                .map_err(err)?
                .label(name)
                .legend(legend_mark(color));
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn erase_histogram(path: &Path, r: &SimReport, config: &str) -> Result<()> {
    let root = canvas(path, config)?;
    let xmax = r.erase_histogram.last().map_or(1, |p| p.0 + 1);
    let ymax = r.erase_histogram.iter().map(|p| p.1).max().unwrap_or(1) + 1;
    let mut chart = ChartBuilder::on(&root)
        .caption("Erase counts", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0u32..xmax).into_segmented(), 0u32..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("erase count")
        .y_desc("blocks")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                // No gap between bars: with hundreds of erase counts a bar is a pixel or two
                // wide, and the default margin would leave nothing of it.
                .margin(0)
                .style(BLUE.filled())
                .data(r.erase_histogram.iter().map(|&(e, n)| (e, n))),
        )
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Latencies below this are drawn at it on the CDF's log axis (a write that only fills a
/// page buffer completes at once: latency 0).
const CDF_FLOOR_US: f64 = 0.1;

fn latency_cdf(path: &Path, r: &SimReport, config: &str) -> Result<()> {
    let root = canvas(path, config)?;
    let all = || {
        r.latency_cdf_us
            .read
            .iter()
            .chain(&r.latency_cdf_us.write)
            .map(|p| p.0)
    };
    let xmax = all().fold(1.0, f64::max) * 1.5;
    let xmin = all()
        .filter(|&x| x > 0.0)
        .fold(f64::INFINITY, f64::min)
        .min(xmax / 10.0)
        .max(CDF_FLOOR_US)
        / 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency CDF", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "latency (us, log scale; smaller values, 0 included, at the left edge {xmin:.1})"
        ))
        .y_desc("fraction of requests")
        .draw()
        .map_err(err)?;
    for (name, pts, color) in [
        ("write", &r.latency_cdf_us.write, RED),
        ("read", &r.latency_cdf_us.read, BLUE),
    ] {
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, y)| (x.max(xmin), y)),
                &color,
            ))
            .map_err(err)?
            .label(name)
            .legend(legend_mark(color));
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

/// 1 − CDF against latency, both on log scales: the tail (p99, p99.9 and beyond) is visible.
fn latency_tail(path: &Path, r: &SimReport, config: &str) -> Result<()> {
    let c = &r.latency_cdf_us;
    tail_chart(
        path,
        config,
        &[
            ("write".into(), &c.write_tail, RED, 2),
            ("read".into(), &c.read_tail, BLUE, 2),
        ],
    )
}

/// A tail chart of labelled series (label, points, color, line width).
type TailSeries<'a> = (String, &'a Vec<(f64, f64)>, RGBColor, u32);

fn tail_chart(path: &Path, foot: &str, series: &[TailSeries]) -> Result<()> {
    let root = canvas(path, foot)?;
    // Latencies of 0 (writes absorbed by the buffer) have no place on a log axis.
    let all = || series.iter().flat_map(|s| s.1.iter()).filter(|p| p.0 > 0.0);
    let xmin = all().map(|p| p.0).fold(f64::MAX, f64::min);
    let xmin = if xmin == f64::MAX { 1.0 } else { xmin * 0.8 };
    let xmax = all().map(|p| p.0).fold(xmin * 10.0, f64::max) * 1.2;
    let ymin = all().map(|p| p.1).fold(1.0, f64::min) * 0.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency tail: fraction of requests slower than x",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin..xmax).log_scale(), (ymin..1.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (us, log)")
        .y_desc("1 - CDF (log)")
        .x_labels(8)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()
        .map_err(err)?;
    for (label, pts, color, width) in series {
        let pts: Vec<(f64, f64)> = pts.iter().copied().filter(|p| p.0 > 0.0).collect();
        if pts.is_empty() {
            continue;
        }
        let style = color.stroke_width(*width);
        chart
            .draw_series(LineSeries::new(pts, style))
            .map_err(err)?
            .label(label.clone())
            .legend(legend_mark(style));
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One earlier run for `sim --compare`: its name (the file's stem) and the series its JSON
/// report holds.
pub struct Run {
    pub name: String,
    pub read_tail: Vec<(f64, f64)>,
    pub write_tail: Vec<(f64, f64)>,
    pub waf_series: Vec<(f64, f64)>,
}

impl Run {
    /// Reads a `lightnvm sim --json` report.
    pub fn load(path: &Path) -> Result<Run> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let j: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not JSON", path.display()))?;
        let r = j.get("result").ok_or_else(|| {
            anyhow::anyhow!("{}: not a `lightnvm sim --json` report", path.display())
        })?;
        let pairs = |v: &serde_json::Value| -> Vec<(f64, f64)> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let c = &r["latency_cdf_us"];
        Ok(Run {
            name: path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into(),
            ),
            read_tail: pairs(&c["read_tail"]),
            write_tail: pairs(&c["write_tail"]),
            waf_series: pairs(&r["waf_series"]),
        })
    }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// `sim --compare`: the runs' latency tails and WAF series on shared axes.
pub fn compare(dir: &Path, runs: &[Run]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let foot = format!("runs: {}", names.join(", "));
    // Tails, log-log; reads thick, writes thin.
    let mut series = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        series.push((format!("{} read", r.name), &r.read_tail, color, 2));
        series.push((format!("{} write", r.name), &r.write_tail, color, 1));
    }
    tail_chart(&dir.join("latency_tail.svg"), &foot, &series)?;
    // WAF over the measured phase (x: fraction of it, runs of different lengths line up).
    let waf_path = dir.join("waf.svg");
    let root = canvas(&waf_path, &foot)?;
    let ymax = runs
        .iter()
        .flat_map(|r| r.waf_series.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("Write amplification (user + GC) / user", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1.0, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("fraction of the measured phase's host writes")
        .y_desc("WAF")
        .draw()
        .map_err(err)?;
    for (i, r) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let last = r.waf_series.last().map_or(1.0, |p| p.0).max(1.0);
        chart
            .draw_series(LineSeries::new(
                r.waf_series.iter().map(|&(x, y)| (x / last, y)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(r.name.clone())
            .legend(legend_mark(color));
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}
