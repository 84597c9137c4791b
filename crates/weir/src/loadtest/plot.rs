//! `--plot`: latency over time and the latency distribution, as one SVG.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::report::Report;

/// Draws the report's timeline (mean and max latency per second) above the latency
/// distribution (latency by percentile, log-scaled tail).
pub(crate) fn draw(path: &Path, report: &Report, hist: &Histogram<u64>) -> Result<(), String> {
    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(360);

    let secs = report.timeline.len().max(1) as f64;
    let ymax = report.timeline.iter().map(|t| t.3).fold(1.0_f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption("latency over time (ms)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..secs, 0.0..ymax)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("second").y_desc("ms").draw().map_err(|e| e.to_string())?;
    let mean: Vec<(f64, f64)> = report.timeline.iter().enumerate().map(|(i, t)| (i as f64, t.2)).collect();
    let max: Vec<(f64, f64)> = report.timeline.iter().enumerate().map(|(i, t)| (i as f64, t.3)).collect();
    chart
        .draw_series(LineSeries::new(mean, &BLUE))
        .map_err(|e| e.to_string())?
        .label("mean")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
    chart
        .draw_series(LineSeries::new(max, &RED))
        .map_err(|e| e.to_string())?
        .label("max")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RED));
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| e.to_string())?;

    // x = "number of nines" of the percentile, so the tail gets room: 0 = p0, 1 = p90, 2 = p99, 3 = p99.9.
    let points: Vec<(f64, f64)> = (0..=400)
        .map(|i| {
            let nines = f64::from(i) / 100.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, hist.value_at_quantile(q.min(1.0)) as f64 / 1000.0)
        })
        .collect();
    let ymax = points.iter().map(|p| p.1).fold(1.0_f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency distribution (ms by percentile)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..4.0, 0.0..ymax)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_label_formatter(&|x: &f64| match x.round() as i64 {
            0 => "p0".into(),
            1 => "p90".into(),
            2 => "p99".into(),
            3 => "p99.9".into(),
            _ => "p99.99".into(),
        })
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    chart.draw_series(LineSeries::new(points, &BLUE)).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
