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
    /// Per second: completed, errors, mean latency ms, max latency ms.
    pub timeline: Vec<(u64, u64, f64, f64)>,
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

impl Report {
    pub(crate) fn build(s: &Scenario, stats: &Stats, elapsed: Duration) -> Self {
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
        if let Some(t) = s.sla.min_tps {
            checks.push(Check {
                metric: "throughput (TPS)",
                threshold: format!(">= {t}"),
                measured: format!("{tps:.1}"),
                pass: tps >= t,
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
            timeline: stats
                .timeline
                .iter()
                .map(|&(n, e, sum, max)| (n, e, if n == 0 { 0.0 } else { ms(sum as f64 / n as f64) }, ms(max as f64)))
                .collect(),
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
            let _ = writeln!(
                out,
                "target rate {r:.1}/s, achieved {:.1}/s ({:+.2}%)",
                self.tps,
                (self.tps / r - 1.0) * 100.0
            );
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
