//! The end-of-run verdict: the seed's table (metric, threshold, measured, pass/fail),
//! percentiles, status codes and failure kinds, as text and as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::runner::Stats;
use super::scenario::Scenario;

/// One SLA line.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    pub metric: &'static str,
    pub threshold: String,
    pub measured: String,
    pub pass: bool,
}

/// Everything measured, as written to `--output`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub target: String,
    pub elapsed_secs: f64,
    pub requests: u64,
    pub responses: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub tps: f64,
    pub target_rps: Option<f64>,
    pub latency_ms: Latency,
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub failures: std::collections::BTreeMap<String, u64>,
    pub bytes: u64,
    pub checks: Vec<Check>,
    pub pass: bool,
    /// The window the throughput is judged over: after the ramp-up, to the end.
    pub steady: Steady,
    /// The SLA's thresholds, as numbers (for the plot's lines).
    pub sla: SlaLines,
    /// Per second of the run.
    pub timeline: Vec<Second>,
}

/// The scenario's SLA thresholds that are set.
#[derive(Debug, Default, Serialize)]
pub(crate) struct SlaLines {
    pub avg_latency_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub min_tps: Option<f64>,
}

/// One second of the run (requests by their intended start).
#[derive(Debug, Serialize)]
pub(crate) struct Second {
    pub second: u64,
    pub completed: u64,
    pub errors: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The steady state: the seconds after the ramp-up.
#[derive(Debug, Serialize)]
pub(crate) struct Steady {
    /// First second of the window (the ramp-up's length, rounded up).
    pub from_second: u64,
    /// Seconds in it.
    pub seconds: u64,
    /// Responses per second in it.
    pub tps: f64,
}

/// Latency summary in milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

/// The per-second view: counts from the timeline, percentiles from each second's histogram.
fn seconds(stats: &Stats, hists: &[hdrhistogram::Histogram<u32>]) -> Vec<Second> {
    let q =
        |i: usize, p: f64| hists.get(i).filter(|h| !h.is_empty()).map_or(0.0, |h| ms(h.value_at_quantile(p) as f64));
    stats
        .timeline
        .iter()
        .enumerate()
        .map(|(i, &(n, e, sum, max))| Second {
            second: i as u64,
            completed: n,
            errors: e,
            mean_ms: if n == 0 { 0.0 } else { ms(sum as f64 / n as f64) },
            p50_ms: q(i, 0.5),
            p99_ms: q(i, 0.99),
            max_ms: ms(max as f64),
        })
        .collect()
}

/// Throughput after the ramp-up: a run that ramps for 2 s of 6 is judged on its last 4.
fn steady(s: &Scenario, timeline: &[Second], elapsed: Duration) -> Steady {
    let from = s.ramp_up().as_secs_f64().ceil() as u64;
    let end = (elapsed.as_secs_f64().floor() as u64).max(from + 1);
    let done: u64 = timeline.iter().filter(|t| t.second >= from && t.second < end).map(|t| t.completed).sum();
    let secs = end - from;
    Steady { from_second: from, seconds: secs, tps: done as f64 / secs as f64 }
}

impl Report {
    pub(crate) fn build(
        s: &Scenario,
        stats: &Stats,
        hists: &[hdrhistogram::Histogram<u32>],
        elapsed: Duration,
    ) -> Self {
        let h = &stats.hist;
        let failures: u64 = stats.failures.values().sum();
        let requests = stats.responses + failures;
        let secs = elapsed.as_secs_f64().max(1e-9);
        let error_rate = if requests == 0 { 0.0 } else { stats.errors as f64 / requests as f64 };
        let tps = stats.responses as f64 / secs;
        let latency = Latency {
            mean: ms(h.mean()),
            p50: ms(h.value_at_quantile(0.5) as f64),
            p90: ms(h.value_at_quantile(0.9) as f64),
            p99: ms(h.value_at_quantile(0.99) as f64),
            p999: ms(h.value_at_quantile(0.999) as f64),
            max: ms(h.max() as f64),
        };
        let mut checks = Vec::new();
        let latency_check = |metric, limit: Option<weir_config::HumanDuration>, measured: f64| {
            limit.map(|t| Check {
                metric,
                threshold: format!("<= {t}"),
                measured: format!("{measured:.2}ms"),
                pass: measured <= t.get().as_secs_f64() * 1e3,
            })
        };
        checks.extend(latency_check("average latency", s.sla.avg_latency, latency.mean));
        checks.extend(latency_check("p99 latency", s.sla.p99, latency.p99));
        if let Some(r) = s.sla.error_rate {
            checks.push(Check {
                metric: "error rate",
                threshold: format!("<= {:.3}%", r * 100.0),
                measured: format!("{:.3}%", error_rate * 100.0),
                pass: error_rate <= r,
            });
        }
        let timeline = seconds(stats, hists);
        let steady = steady(s, &timeline, elapsed);
        if let Some(t) = s.sla.min_tps {
            // Judged where the rate was meant to hold: after the ramp-up, if there is one.
            let (metric, measured) =
                if steady.from_second > 0 { ("TPS after ramp-up", steady.tps) } else { ("throughput (TPS)", tps) };
            checks.push(Check {
                metric,
                threshold: format!(">= {t}"),
                measured: format!("{measured:.1}"),
                pass: measured >= t,
            });
        }
        let pass = checks.iter().all(|c| c.pass);
        Self {
            target: s.target.clone(),
            elapsed_secs: secs,
            requests,
            responses: stats.responses,
            errors: stats.errors,
            error_rate,
            tps,
            target_rps: s.target_rps,
            latency_ms: latency,
            statuses: stats.statuses.clone(),
            failures: stats.failures.iter().map(|(k, v)| (format!("{k:?}").to_lowercase(), *v)).collect(),
            bytes: stats.bytes,
            checks,
            pass,
            steady,
            sla: SlaLines {
                avg_latency_ms: s.sla.avg_latency.map(|t| t.get().as_secs_f64() * 1e3),
                p99_ms: s.sla.p99.map(|t| t.get().as_secs_f64() * 1e3),
                min_tps: s.sla.min_tps,
            },
            timeline,
        }
    }

    /// The human-readable summary.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{} requests in {:.2}s to {} ({} responses, {} errors)",
            self.requests, self.elapsed_secs, self.target, self.responses, self.errors
        );
        if let Some(r) = self.target_rps {
            let st = &self.steady;
            let _ = if st.from_second > 0 {
                writeln!(
                    out,
                    "target rate {r:.1}/s, achieved {:.1}/s after the {}s ramp-up (seconds {}-{}; {:+.2}%), {:.1}/s over the whole run",
                    st.tps,
                    st.from_second,
                    st.from_second,
                    st.from_second + st.seconds,
                    (st.tps / r - 1.0) * 100.0,
                    self.tps
                )
            } else {
                writeln!(
                    out,
                    "target rate {r:.1}/s, achieved {:.1}/s ({:+.2}%)",
                    self.tps,
                    (self.tps / r - 1.0) * 100.0
                )
            };
        }
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "latency ms: mean {:.2}  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.mean, l.p50, l.p90, l.p99, l.p999, l.max
        );
        let codes: Vec<String> = self.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(out, "status codes: {}", if codes.is_empty() { "none".into() } else { codes.join(", ") });
        if !self.failures.is_empty() {
            let f: Vec<String> = self.failures.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(out, "failures: {}", f.join(", "));
        }
        if !self.checks.is_empty() {
            let _ = writeln!(out, "\n{:<18} {:>14} {:>14}  result", "metric", "threshold", "measured");
            for c in &self.checks {
                let _ = writeln!(
                    out,
                    "{:<18} {:>14} {:>14}  {}",
                    c.metric,
                    c.threshold,
                    c.measured,
                    if c.pass { "PASS" } else { "FAIL" }
                );
            }
            let _ = writeln!(out, "\nSLA {}", if self.pass { "met" } else { "MISSED" });
        }
        out
    }
}
