//! SVG plots of a simulation: WAF over time, erase-count histogram, latency CDFs.

use std::path::Path;

use anyhow::{Context, Result};
use lightnvm_workload::SimReport;
use plotters::prelude::*;

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e}")
}

pub fn write_all(dir: &Path, r: &SimReport) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    waf(&dir.join("waf.svg"), r)?;
    erase_histogram(&dir.join("erase_counts.svg"), r)?;
    latency_cdf(&dir.join("latency_cdf.svg"), r)?;
    Ok(())
}

fn waf(path: &Path, r: &SimReport) -> Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xmax = r.waf_series.last().map_or(1, |p| p.0).max(1) as f64;
    let ymax = r.waf_series.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
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
    root.present().map_err(err)?;
    Ok(())
}

fn erase_histogram(path: &Path, r: &SimReport) -> Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
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
                .style(BLUE.filled())
                .data(r.erase_histogram.iter().map(|&(e, n)| (e, n))),
        )
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn latency_cdf(path: &Path, r: &SimReport) -> Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xmax = r
        .latency_cdf_us
        .read
        .iter()
        .chain(&r.latency_cdf_us.write)
        .map(|p| p.0)
        .fold(1.0, f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency CDF", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..xmax, 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (us)")
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
            .draw_series(LineSeries::new(pts.iter().copied(), &color))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
