//! Runs a scenario: one task per connection, an open-loop schedule shared by all of them.
//!
//! Open loop (`target_rps`): request `i` has an intended start time fixed by the schedule,
//! whichever connection takes it; latency is measured from that intended time, so a server
//! that stalls is charged for the requests it delayed (no coordinated omission). Closed loop
//! (no `target_rps`): every connection sends back to back, and connections join evenly over
//! the ramp-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::client::{Conn, Dialer, Failure};
use super::scenario::{Scenario, intended_offset};

/// Latencies are recorded in microseconds up to this.
const MAX_MICROS: u64 = 3_600_000_000;

/// Per second of the run, the latencies of all connections (for p50/p99 over time). Each
/// connection fills its current second's histogram alone and adds it here when its second
/// changes, so the lock is taken about once per connection per second, never per request.
pub(crate) type Seconds = Arc<Mutex<Vec<Histogram<u32>>>>;

/// A histogram of one second's latencies: two significant digits, up to a minute (later
/// ones count as a minute).
fn second_hist() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 60_000_000, 2).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// What one connection measured; merged at the end (and peeked at by the progress bar).
#[derive(Debug)]
pub(crate) struct Stats {
    pub hist: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub failures: BTreeMap<Failure, u64>,
    /// Requests that got a response (any status).
    pub responses: u64,
    /// Transport failures plus 5xx responses.
    pub errors: u64,
    pub bytes: u64,
    /// Per second of the run: (completed, errors, latency sum µs, latency max µs).
    pub timeline: Vec<(u64, u64, u64, u64)>,
    /// This connection's current second and its latencies, bound for `seconds`.
    current: Option<(usize, Histogram<u32>)>,
    seconds: Option<Seconds>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| unreachable!("valid bounds")),
            statuses: BTreeMap::new(),
            failures: BTreeMap::new(),
            responses: 0,
            errors: 0,
            bytes: 0,
            timeline: Vec::new(),
            current: None,
            seconds: None,
        }
    }

    /// Stats of one connection that also add each second's latencies to `seconds`.
    pub(crate) fn with_seconds(seconds: Seconds) -> Self {
        Self { seconds: Some(seconds), ..Self::new() }
    }

    /// Adds the current second's latencies to the shared per-second histograms.
    pub(crate) fn flush_second(&mut self) {
        let (Some((second, h)), Some(all)) = (self.current.take(), &self.seconds) else { return };
        let mut all = all.lock();
        if all.len() <= second {
            all.resize_with(second + 1, second_hist);
        }
        let _ = all[second].add(&h);
    }

    fn record_second(&mut self, second: usize, us: u64) {
        if self.seconds.is_none() {
            return;
        }
        if self.current.as_ref().is_some_and(|(s, _)| *s != second) {
            self.flush_second();
        }
        let (_, h) = self.current.get_or_insert_with(|| (second, second_hist()));
        let _ = h.record(us.min(60_000_000));
    }

    fn record(&mut self, second: usize, latency: Duration, outcome: Result<(u16, u64), Failure>) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS).clamp(1, MAX_MICROS);
        let failed = match outcome {
            Ok((status, bytes)) => {
                let _ = self.hist.record(us);
                self.record_second(second, us);
                *self.statuses.entry(status).or_default() += 1;
                self.responses += 1;
                self.bytes += bytes;
                status >= 500
            }
            Err(f) => {
                *self.failures.entry(f).or_default() += 1;
                true
            }
        };
        self.errors += u64::from(failed);
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, (0, 0, 0, 0));
        }
        let t = &mut self.timeline[second];
        t.0 += 1;
        t.1 += u64::from(failed);
        t.2 += us;
        t.3 = t.3.max(us);
    }

    pub(crate) fn merge(&mut self, o: &Stats) {
        let _ = self.hist.add(&o.hist);
        for (k, v) in &o.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &o.failures {
            *self.failures.entry(*k).or_default() += v;
        }
        self.responses += o.responses;
        self.errors += o.errors;
        self.bytes += o.bytes;
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize(o.timeline.len(), (0, 0, 0, 0));
        }
        for (a, b) in self.timeline.iter_mut().zip(&o.timeline) {
            *a = (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3.max(b.3));
        }
    }
}

/// A compiled request template.
#[derive(Debug)]
struct Template {
    method: Method,
    path: String,
    has_n: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// HTTP/1.1 bytes before the path (`GET `).
    h1_prefix: Vec<u8>,
    /// HTTP/1.1 bytes after the path: version, headers, body.
    h1_suffix: Vec<u8>,
}

/// Everything the connection tasks share.
#[derive(Debug)]
pub(crate) struct Plan {
    dialer: Dialer,
    authority: String,
    templates: Vec<Template>,
    /// Template index for each slot of one weight cycle (so the mix is exact).
    cycle: Vec<usize>,
    rate: Option<f64>,
    ramp: Duration,
    connections: u32,
    keep_alive: bool,
    timeout: Duration,
    pub start: Instant,
    pub end: Instant,
    next: AtomicU64,
    pub stop: AtomicBool,
}

impl Plan {
    pub(crate) fn new(s: &Scenario, dialer: Dialer, start: Instant) -> Result<Self, String> {
        let uri: http::Uri = s.target.parse().map_err(|e| format!("target: {e}"))?;
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut templates = Vec::new();
        let mut cycle = Vec::new();
        for (i, r) in s.requests.iter().enumerate() {
            let mut headers = Vec::new();
            for (k, v) in &r.headers {
                let name = HeaderName::try_from(k.as_str()).map_err(|e| format!("requests[{i}].headers.{k}: {e}"))?;
                let value = HeaderValue::try_from(v.as_str()).map_err(|e| format!("requests[{i}].headers.{k}: {e}"))?;
                headers.push((name, value));
            }
            if !s.keep_alive {
                headers.push((http::header::CONNECTION, HeaderValue::from_static("close")));
            }
            let body = Bytes::from(r.body.clone().unwrap_or_default());
            let mut suffix = format!(" HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
            for (k, v) in &headers {
                suffix.extend_from_slice(k.as_str().as_bytes());
                suffix.extend_from_slice(b": ");
                suffix.extend_from_slice(v.as_bytes());
                suffix.extend_from_slice(b"\r\n");
            }
            if !body.is_empty() || matches!(r.method.as_str(), "POST" | "PUT" | "PATCH") {
                suffix.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
            }
            suffix.extend_from_slice(b"\r\n");
            suffix.extend_from_slice(&body);
            templates.push(Template {
                method: Method::from_bytes(r.method.as_bytes()).map_err(|e| format!("requests[{i}].method: {e}"))?,
                has_n: r.path.contains("{n}"),
                path: r.path.clone(),
                headers,
                h1_prefix: format!("{} ", r.method).into_bytes(),
                h1_suffix: suffix,
                body,
            });
            cycle.extend(std::iter::repeat_n(i, r.weight as usize));
        }
        // Interleave the cycle so a 7:3 mix is not seven of one then three of the other.
        cycle.sort_by_key(|&t| t);
        let cycle = interleave(&cycle);
        Ok(Self {
            dialer,
            authority,
            templates,
            cycle,
            rate: s.target_rps,
            ramp: s.ramp_up(),
            connections: s.connections,
            keep_alive: s.keep_alive,
            timeout: s.timeout(),
            start,
            end: start + s.duration.get(),
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }

    fn template(&self, n: u64) -> &Template {
        &self.templates[self.cycle[(n % self.cycle.len() as u64) as usize]]
    }

    /// Renders request `n` as HTTP/1.1 bytes into `out`; returns whether it is a HEAD.
    pub(crate) fn render(&self, n: u64, out: &mut Vec<u8>) -> bool {
        let t = self.template(n);
        out.clear();
        out.extend_from_slice(&t.h1_prefix);
        if t.has_n {
            let mut parts = t.path.split("{n}");
            if let Some(first) = parts.next() {
                out.extend_from_slice(first.as_bytes());
            }
            for rest in parts {
                let mut num = itoa::Buffer::new();
                out.extend_from_slice(num.format(n).as_bytes());
                out.extend_from_slice(rest.as_bytes());
            }
        } else {
            out.extend_from_slice(t.path.as_bytes());
        }
        out.extend_from_slice(&t.h1_suffix);
        t.method == Method::HEAD
    }

    /// Request `n` for HTTP/2.
    pub(crate) fn request(&self, n: u64) -> Request<Full<Bytes>> {
        let t = self.template(n);
        let path = if t.has_n { t.path.replace("{n}", &n.to_string()) } else { t.path.clone() };
        let mut req = Request::new(Full::new(t.body.clone()));
        *req.method_mut() = t.method.clone();
        *req.uri_mut() = path.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
        let h = req.headers_mut();
        if let Ok(host) = HeaderValue::try_from(self.authority.as_str()) {
            h.insert(http::header::HOST, host);
        }
        for (k, v) in &t.headers {
            h.insert(k.clone(), v.clone());
        }
        req
    }
}

/// Spreads each template's slots evenly over the cycle (largest remainder first).
fn interleave(sorted: &[usize]) -> Vec<usize> {
    let n = sorted.len();
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for &t in sorted {
        *counts.entry(t).or_default() += 1;
    }
    let mut credit: Vec<(usize, i64, i64)> = counts.into_iter().map(|(t, c)| (t, 0, c as i64)).collect();
    let total = n as i64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        // Smooth weighted round robin over the templates.
        for c in &mut credit {
            c.1 += c.2;
        }
        let Some(best) = credit.iter_mut().max_by_key(|c| (c.1, std::cmp::Reverse(c.0))) else { break };
        best.1 -= total;
        out.push(best.0);
    }
    out
}

/// One connection's loop.
pub(crate) async fn connection(plan: Arc<Plan>, index: u32, stats: Arc<Mutex<Stats>>) {
    let mut conn: Option<Conn> = None;
    let mut scratch = Vec::with_capacity(512);
    if plan.rate.is_none() && !plan.ramp.is_zero() {
        let join = plan.start + plan.ramp.mul_f64(f64::from(index) / f64::from(plan.connections));
        tokio::time::sleep_until(join).await;
    }
    // One timer per connection, re-armed per request: no timer allocation per request.
    let deadline = tokio::time::sleep(plan.timeout);
    tokio::pin!(deadline);
    loop {
        if plan.stop.load(Relaxed) {
            break;
        }
        let n = plan.next.fetch_add(1, Relaxed);
        let intended = match plan.rate {
            Some(rate) => {
                let at = plan.start + intended_offset(n, rate, plan.ramp);
                if at >= plan.end {
                    break;
                }
                tokio::time::sleep_until(at).await;
                at
            }
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                now
            }
        };
        let second = intended.saturating_duration_since(plan.start).as_secs() as usize;
        let mut c = match conn.take() {
            Some(c) => c,
            None => match plan.dialer.connect().await {
                Ok(c) => c,
                Err(f) => {
                    stats.lock().record(second, intended.elapsed(), Err(f));
                    continue;
                }
            },
        };
        deadline.as_mut().reset(intended + plan.timeout);
        let outcome = tokio::select! {
            r = c.send(&plan, n, &mut scratch) => r,
            () = deadline.as_mut() => Err(Failure::Timeout),
        };
        let latency = intended.elapsed();
        let outcome = match outcome {
            Ok((status, bytes, reusable)) => {
                if reusable && plan.keep_alive {
                    conn = Some(c);
                }
                Ok((status, bytes))
            }
            Err(f) => Err(f),
        };
        stats.lock().record(second, latency, outcome);
    }
    stats.lock().flush_second();
}

#[cfg(test)]
mod tests {
    #[test]
    fn mix_is_exact_and_interleaved() {
        let cycle = super::interleave(&[0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(cycle.iter().filter(|&&t| t == 1).count(), 3);
        let longest_run = cycle.split(|&t| t == 1).map(<[usize]>::len).max().unwrap();
        assert!(longest_run <= 3, "{cycle:?}");
    }
}
