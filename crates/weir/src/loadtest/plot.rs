//! `--plot`: one SVG a person reads: throughput per second, latency percentiles per second and
//! the latency distribution, with the SLA's thresholds drawn as lines and a title naming the
//! scenario and its target.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::Report;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: its caption, and room for the axis labels.
fn panel<'a, 'b>(area: &'a Area<'b>, caption: &str, x: f64, y: f64) -> Result<Chart<'a, 'b>, String> {
    ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x, 0.0..y)
        .map_err(err)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A dashed horizontal line at `y` across `0..x_end`, labelled in the legend.
fn threshold<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    y: f64,
    x_end: f64,
    label: String,
    color: RGBColor,
) -> Result<(), String> {
    let style = color.stroke_width(1);
    chart
        .draw_series(DashedLineSeries::new(vec![(0.0, y), (x_end, y)], 6, 4, style))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
    Ok(())
}

/// Draws the report into `path`; `scenario` names the run in the title.
pub(crate) fn draw(path: &Path, report: &Report, hist: &Histogram<u64>, scenario: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (960, 1020)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let name =
        scenario.file_name().map_or_else(|| scenario.display().to_string(), |n| n.to_string_lossy().into_owned());
    let verdict = if report.checks.is_empty() {
        String::new()
    } else if report.pass {
        " — SLA met".into()
    } else {
        " — SLA MISSED".into()
    };
    let root =
        root.titled(&format!("weir loadtest {name} → {}{verdict}", report.target), ("sans-serif", 22)).map_err(err)?;
    let (top, rest) = root.split_vertically(320);
    let (middle, bottom) = rest.split_vertically(340);
    throughput(&top, report)?;
    latency_over_time(&middle, report)?;
    distribution(&bottom, hist)?;
    root.present().map_err(err)
}

fn throughput(area: &Area<'_>, r: &Report) -> Result<(), String> {
    let secs = r.timeline.len().max(1) as f64;
    let rates: Vec<(f64, f64)> = r.timeline.iter().map(|t| (t.second as f64 + 0.5, t.completed as f64)).collect();
    let top =
        [rates.iter().map(|p| p.1).fold(1.0, f64::max), r.sla.min_tps.unwrap_or(0.0), r.target_rps.unwrap_or(0.0)]
            .into_iter()
            .fold(1.0, f64::max)
            * 1.15;
    let mut chart = panel(area, "throughput (responses per second)", secs, top)?;
    chart.configure_mesh().x_desc("second").y_desc("req/s").draw().map_err(err)?;
    chart
        .draw_series(LineSeries::new(rates, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("responses/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
    if let Some(t) = r.target_rps {
        threshold(&mut chart, t, secs, format!("target {t:.0}/s"), GREEN)?;
    }
    if let Some(t) = r.sla.min_tps {
        threshold(
            &mut chart,
            t,
            secs,
            format!("SLA min {t:.0}/s (judged after second {})", r.steady.from_second),
            RED,
        )?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).border_style(BLACK).draw().map_err(err)
}

fn latency_over_time(area: &Area<'_>, r: &Report) -> Result<(), String> {
    let secs = r.timeline.len().max(1) as f64;
    let at = |f: fn(&super::report::Second) -> f64| -> Vec<(f64, f64)> {
        r.timeline.iter().filter(|t| t.completed > 0).map(|t| (t.second as f64 + 0.5, f(t))).collect()
    };
    let (p50, p99, max) = (at(|t| t.p50_ms), at(|t| t.p99_ms), at(|t| t.max_ms));
    let top = p99
        .iter()
        .map(|p| p.1)
        .chain(r.sla.p99_ms)
        .chain(r.sla.avg_latency_ms)
        .fold(1.0, f64::max)
        .max(max.iter().map(|p| p.1).fold(0.0, f64::max).min(p99.iter().map(|p| p.1).fold(1.0, f64::max) * 3.0))
        * 1.15;
    let mut chart = panel(area, "latency per second (ms)", secs, top)?;
    chart.configure_mesh().x_desc("second").y_desc("ms").draw().map_err(err)?;
    for (points, label, color) in [(p50, "p50", BLUE), (p99, "p99", MAGENTA), (max, "max", RGBColor(160, 160, 160))] {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
    }
    if let Some(t) = r.sla.p99_ms {
        threshold(&mut chart, t, secs, format!("SLA p99 {t:.0} ms"), RED)?;
    }
    if let Some(t) = r.sla.avg_latency_ms {
        threshold(&mut chart, t, secs, format!("SLA average {t:.0} ms"), RGBColor(230, 120, 0))?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).border_style(BLACK).draw().map_err(err)
}

/// Latency by percentile, x = "number of nines" so the tail gets room: 0 = p0, 1 = p90,
/// 2 = p99, 3 = p99.9, 4 = p99.99; one tick (and one label) per whole number.
fn distribution(area: &Area<'_>, hist: &Histogram<u64>) -> Result<(), String> {
    let points: Vec<(f64, f64)> = (0..=400)
        .map(|i| {
            let nines = f64::from(i) / 100.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, hist.value_at_quantile(q.min(1.0)) as f64 / 1000.0)
        })
        .collect();
    let top = points.iter().map(|p| p.1).fold(1.0_f64, f64::max) * 1.1;
    let mut chart = panel(area, "latency distribution (ms by percentile)", 4.0, top)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_labels(5)
        // Only whole numbers of nines are named: a tick between them would repeat a name.
        .x_label_formatter(&|x: &f64| match (x.fract() == 0.0).then_some(*x as i64) {
            Some(0) => "p0".into(),
            Some(1) => "p90".into(),
            Some(2) => "p99".into(),
            Some(3) => "p99.9".into(),
            Some(4) => "p99.99".into(),
            _ => String::new(),
        })
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2))).map_err(err)?;
    Ok(())
}
