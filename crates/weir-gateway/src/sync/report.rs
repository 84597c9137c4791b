//! The runtime report a gateway sends with each heartbeat: requests/s, error rate, p99.
//!
//! Owns: reading the totals out of the gateway's own OpenMetrics text once per heartbeat,
//! and the difference from the previous heartbeat. Reading the rendered text keeps the
//! request path free of any extra counter; the cost is one render per heartbeat.

use std::collections::BTreeMap;
use std::time::Instant;

use weir_proto::v1::RuntimeReport;

/// Totals read from one render.
#[derive(Clone, Debug, Default, PartialEq)]
struct Totals {
    requests: u64,
    errors: u64,
    in_flight: u64,
    /// Cumulative count per bucket upper bound (seconds), summed over routes.
    buckets: BTreeMap<u64, u64>,
}

fn value(line: &str) -> Option<f64> {
    line.rsplit(' ').next()?.parse().ok()
}

fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}=\""))? + name.len() + 2;
    line[at..].split('"').next()
}

fn totals(text: &str) -> Totals {
    let mut t = Totals::default();
    for line in text.lines() {
        if line.starts_with("weir_requests_total{") {
            let v = value(line).unwrap_or(0.0) as u64;
            t.requests += v;
            if label(line, "status_class") == Some("5xx") {
                t.errors += v;
            }
        } else if line.starts_with("weir_request_duration_seconds_bucket{") {
            let le = label(line, "le").and_then(|l| l.parse::<f64>().ok()).unwrap_or(f64::INFINITY);
            // Micro-seconds as the key keeps the map ordered without float keys.
            let key = if le.is_finite() { (le * 1e6) as u64 } else { u64::MAX };
            *t.buckets.entry(key).or_default() += value(line).unwrap_or(0.0) as u64;
        } else if line.starts_with("weir_requests_in_flight ") {
            t.in_flight = value(line).unwrap_or(0.0).max(0.0) as u64;
        }
    }
    t
}

/// Turns successive renders into reports.
#[derive(Debug)]
pub(super) struct Reporter {
    prev: Totals,
    at: Instant,
}

impl Default for Reporter {
    fn default() -> Self {
        Self { prev: Totals::default(), at: Instant::now() }
    }
}

impl Reporter {
    /// The report for the time since the previous call, from the current metrics text.
    pub(super) fn report(&mut self, metrics_text: &str) -> RuntimeReport {
        let now = Instant::now();
        let cur = totals(metrics_text);
        let secs = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let reqs = cur.requests.saturating_sub(self.prev.requests);
        let errs = cur.errors.saturating_sub(self.prev.errors);
        // p99 over the interval: the first bucket whose count reaches 99 % of the requests.
        let deltas: Vec<(u64, u64)> = cur
            .buckets
            .iter()
            .map(|(le, c)| (*le, c.saturating_sub(*self.prev.buckets.get(le).unwrap_or(&0))))
            .collect();
        let total = deltas.last().map_or(0, |(_, c)| *c);
        let want = (total as f64 * 0.99).ceil() as u64;
        let p99 = deltas
            .iter()
            .find(|(_, c)| total > 0 && *c >= want)
            .map_or(0.0, |(le, _)| if *le == u64::MAX { f64::INFINITY } else { *le as f64 / 1000.0 });
        let report = RuntimeReport {
            requests_per_second: reqs as f64 / secs,
            error_rate: if reqs == 0 { 0.0 } else { errs as f64 / reqs as f64 },
            p99_ms: if p99.is_finite() { p99 } else { -1.0 },
            requests_total: cur.requests,
            in_flight: cur.in_flight,
        };
        self.prev = cur;
        self.at = now;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rates_errors_and_p99_from_the_metrics_text() {
        let mut r = Reporter::default();
        let text = "weir_requests_total{route=\"a\",status_class=\"2xx\"} 98\n\
                    weir_requests_total{route=\"b\",status_class=\"5xx\"} 2\n\
                    weir_request_duration_seconds_bucket{le=\"0.001\",route=\"a\"} 50\n\
                    weir_request_duration_seconds_bucket{le=\"0.01\",route=\"a\"} 98\n\
                    weir_request_duration_seconds_bucket{le=\"0.1\",route=\"a\"} 98\n\
                    weir_request_duration_seconds_bucket{le=\"+Inf\",route=\"a\"} 98\n\
                    weir_request_duration_seconds_bucket{le=\"0.001\",route=\"b\"} 0\n\
                    weir_request_duration_seconds_bucket{le=\"0.01\",route=\"b\"} 0\n\
                    weir_request_duration_seconds_bucket{le=\"0.1\",route=\"b\"} 2\n\
                    weir_request_duration_seconds_bucket{le=\"+Inf\",route=\"b\"} 2\n\
                    weir_requests_in_flight 3\n";
        let rep = r.report(text);
        assert_eq!(rep.requests_total, 100);
        assert!((rep.error_rate - 0.02).abs() < 1e-9);
        assert_eq!(rep.p99_ms, 100.0);
        assert_eq!(rep.in_flight, 3);
        // Nothing new: zero rate, no p99.
        let rep = r.report(text);
        assert_eq!((rep.requests_per_second, rep.p99_ms), (0.0, 0.0));
    }
}
