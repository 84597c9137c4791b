//! The runtime report a gateway sends with each heartbeat: requests/s, error rate, p99.
//!
//! Owns: the difference between two readings of the gateway's overall totals
//! ([`crate::metrics::Overall`]), and the p99 of the interval from its histogram.

use std::time::Instant;

use weir_proto::v1::RuntimeReport;

use crate::metrics::OverallCounts;

/// Turns successive readings into reports.
#[derive(Debug)]
pub(super) struct Reporter {
    prev: OverallCounts,
    at: Instant,
}

impl Default for Reporter {
    fn default() -> Self {
        Self { prev: OverallCounts::default(), at: Instant::now() }
    }
}

impl Reporter {
    /// The report for the time since the previous call.
    pub(super) fn report(&mut self, cur: OverallCounts, in_flight: i64) -> RuntimeReport {
        let now = Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let reqs = cur.requests.saturating_sub(self.prev.requests);
        let errs = cur.errors.saturating_sub(self.prev.errors);
        // p99 over the interval: the first bucket whose count reaches 99 % of the requests.
        let deltas: Vec<(f64, u64)> = cur
            .buckets
            .iter()
            .enumerate()
            .map(|(i, (le, c))| (*le, c.saturating_sub(self.prev.buckets.get(i).map_or(0, |p| p.1))))
            .collect();
        let total = deltas.last().map_or(0, |(_, c)| *c);
        let want = (total as f64 * 0.99).ceil() as u64;
        let p99 = deltas.iter().find(|(_, c)| total > 0 && *c >= want).map_or(0.0, |(le, _)| le * 1000.0);
        let report = RuntimeReport {
            requests_per_second: reqs as f64 / secs,
            error_rate: if reqs == 0 { 0.0 } else { errs as f64 / reqs as f64 },
            // Past the last bucket: report -1 (unknown, above 10 s).
            p99_ms: if p99.is_finite() { p99 } else { -1.0 },
            requests_total: cur.requests,
            in_flight: in_flight.max(0) as u64,
        };
        self.prev = cur;
        self.at = now;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn rates_errors_and_p99_come_from_the_overall_totals() {
        let m = Metrics::new();
        let (a, b) = (m.route("a"), m.route("b"));
        for _ in 0..98 {
            a.record(200, 0.004);
        }
        b.record(503, 0.07);
        b.record(503, 0.07);
        let mut r = Reporter::default();
        let rep = r.report(m.overall().read(), 3);
        assert_eq!(rep.requests_total, 100);
        assert!((rep.error_rate - 0.02).abs() < 1e-9);
        assert_eq!(rep.p99_ms, 100.0);
        assert_eq!(rep.in_flight, 3);
        // Nothing new: zero rate, no p99.
        let rep = r.report(m.overall().read(), 0);
        assert_eq!((rep.requests_per_second, rep.p99_ms), (0.0, 0.0));
    }
}
