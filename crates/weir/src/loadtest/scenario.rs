//! The load-test scenario file (seed section 4.4): traffic mix, load shape and SLA.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use weir_config::HumanDuration;

/// A scenario as written in YAML. Seed-style names (`threads`, `rampUp`, `targetRps`) are
/// accepted as aliases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scenario {
    /// Base URL: `http://host:port` or `https://host:port`.
    pub target: String,
    /// Request templates, picked by weight.
    pub requests: Vec<RequestTemplate>,
    /// Concurrent connections (the seed's threads).
    #[serde(default = "default_connections", alias = "threads")]
    pub connections: u32,
    /// Time over which the rate (or the number of active connections) climbs to full.
    #[serde(default, alias = "rampUp")]
    pub ramp_up: Option<HumanDuration>,
    /// Total run time, ramp-up included.
    pub duration: HumanDuration,
    /// Open-loop target rate; absent = as fast as the connections go.
    #[serde(default, alias = "targetRps")]
    pub target_rps: Option<f64>,
    /// `http1` (default) or `http2`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Reuse connections (default true).
    #[serde(default = "yes", alias = "keepAlive")]
    pub keep_alive: bool,
    /// Per-request deadline (default 10s).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Thresholds; a miss makes the run exit 1.
    #[serde(default)]
    pub sla: Sla,
}

fn default_connections() -> u32 {
    16
}
fn yes() -> bool {
    true
}

/// Wire protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 (ALPN over TLS, prior knowledge over plain TCP).
    Http2,
}

/// One kind of request in the mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestTemplate {
    /// Relative weight in the mix (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Method (default GET).
    #[serde(default = "get")]
    pub method: String,
    /// Path and query; `{n}` is replaced by the request's sequence number.
    pub path: String,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}
fn get() -> String {
    "GET".into()
}

/// SLA thresholds; each is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sla {
    /// Mean latency at most this.
    #[serde(default, alias = "avgLatency")]
    pub avg_latency: Option<HumanDuration>,
    /// 99th percentile at most this.
    #[serde(default)]
    pub p99: Option<HumanDuration>,
    /// Failed requests (transport errors and 5xx) at most this fraction; `0.5%` or `0.005`.
    #[serde(default, alias = "errorRate", deserialize_with = "percent")]
    pub error_rate: Option<f64>,
    /// Completed requests per second at least this.
    #[serde(default, alias = "minTps")]
    pub min_tps: Option<f64>,
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(f64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Num(n)) => Ok(Some(n)),
        Some(Raw::Text(s)) => {
            let t = s.trim();
            let v = match t.strip_suffix('%') {
                Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
                None => t.parse::<f64>(),
            };
            v.map(Some).map_err(|_| serde::de::Error::custom(format!("invalid rate {s:?}: write e.g. 0.5% or 0.005")))
        }
    }
}

impl Scenario {
    /// Parses and checks a scenario, reporting every problem.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let s: Scenario = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut errs = Vec::new();
        if !(s.target.starts_with("http://") || s.target.starts_with("https://")) {
            errs.push(format!("target: {:?} must start with http:// or https://", s.target));
        }
        if s.requests.is_empty() {
            errs.push("requests: give at least one request".into());
        }
        for (i, r) in s.requests.iter().enumerate() {
            if !r.path.starts_with('/') {
                errs.push(format!("requests[{i}].path: {:?} must start with '/'", r.path));
            }
            if http::Method::from_bytes(r.method.as_bytes()).is_err() {
                errs.push(format!("requests[{i}].method: invalid method {:?}", r.method));
            }
        }
        if s.requests.iter().all(|r| r.weight == 0) {
            errs.push("requests: at least one weight must be above 0".into());
        }
        if s.connections == 0 {
            errs.push("connections: must be at least 1".into());
        }
        if s.duration.get().is_zero() {
            errs.push("duration: must be greater than 0".into());
        }
        if s.ramp_up().ge(&s.duration.get()) {
            errs.push("ramp_up: must be shorter than duration".into());
        }
        if s.target_rps.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            errs.push("target_rps: must be a positive number".into());
        }
        if errs.is_empty() { Ok(s) } else { Err(errs.join("\n")) }
    }

    /// Ramp-up time (zero when absent).
    pub(crate) fn ramp_up(&self) -> Duration {
        self.ramp_up.map_or(Duration::ZERO, HumanDuration::get)
    }

    /// Per-request deadline.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout.map_or(Duration::from_secs(10), HumanDuration::get)
    }
}

/// When request number `i` (0-based) should start, for an open-loop `rate` that climbs
/// linearly over `ramp`: the inverse of the cumulative count `N(t)`.
pub(crate) fn intended_offset(i: u64, rate: f64, ramp: Duration) -> Duration {
    let n = i as f64;
    let r = ramp.as_secs_f64();
    let during_ramp = rate * r / 2.0;
    let t = if r > 0.0 && n < during_ramp { (2.0 * n * r / rate).sqrt() } else { r + (n - during_ramp) / rate };
    Duration::from_secs_f64(t.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_shape_and_seed_aliases_parse() {
        let s = Scenario::parse(
            r#"
target: http://127.0.0.1:8080
requests:
  - { weight: 7, method: GET, path: "/products/{n}" }
  - { weight: 3, method: POST, path: /orders, body: '{"item":1}', headers: { content-type: application/json } }
connections: 64
ramp_up: 10s
duration: 60s
target_rps: 1500
sla: { avg_latency: 200ms, p99: 500ms, error_rate: 0.5%, min_tps: 1400 }
"#,
        )
        .unwrap();
        assert_eq!(s.sla.error_rate, Some(0.005));
        let seed = Scenario::parse(
            "target: http://x:1\nrequests: [{ path: / }]\nthreads: 200\nrampUp: 60s\nduration: 10m\ntargetRps: 1500\n",
        )
        .unwrap();
        assert_eq!((seed.connections, seed.target_rps), (200, Some(1500.0)));
        assert!(Scenario::parse("target: ftp://x\nrequests: []\nduration: 1s\n").unwrap_err().lines().count() >= 2);
    }

    #[test]
    fn schedule_is_linear_after_ramp() {
        let ramp = Duration::from_secs(2);
        // 100 rps, 2 s ramp: 100 requests during the ramp, then one every 10 ms.
        assert_eq!(intended_offset(100, 100.0, ramp), Duration::from_secs(2));
        let a = intended_offset(200, 100.0, ramp).as_secs_f64();
        assert!((a - 3.0).abs() < 1e-9);
        // Slow start: the first quarter of the ramp's requests take half of the ramp.
        let q = intended_offset(25, 100.0, ramp).as_secs_f64();
        assert!((q - 1.0).abs() < 1e-9, "{q}");
        let flat = intended_offset(10, 100.0, Duration::ZERO).as_secs_f64();
        assert!((flat - 0.1).abs() < 1e-9, "{flat}");
    }
}
