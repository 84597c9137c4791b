//! Prometheus metrics (S2.7), served by the admin listener at `/metrics`.
//!
//! Labels come from the config (route, upstream, endpoint names), never from request data, so
//! cardinality is bounded by the config. Per-request work is atomics only: each compiled route
//! and upstream holds its own pre-resolved metric handles.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::snapshot::Snapshot;

/// Seconds: 0.5 ms … 10 s.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    upstream: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    upstream: String,
    endpoint: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginFault {
    plugin: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpTool {
    route: String,
    server: String,
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpToolOutcome {
    route: String,
    server: String,
    tool: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpServer {
    route: String,
    server: String,
}

/// All of Weir's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    upstream_duration: Family<UpstreamLabel, Histogram, fn() -> Histogram>,
    pool_wait: Family<UpstreamLabel, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    healthy: Family<EndpointLabel, Gauge>,
    pool_connections: Family<PoolLabel, Gauge>,
    config_version: Gauge,
    plugin_errors: Family<PluginLabel, Counter>,
    plugin_faults: Family<PluginFault, Counter>,
    plugin_breaker_trips: Family<PluginLabel, Counter>,
    mcp_calls: Family<McpToolOutcome, Counter>,
    mcp_duration: Family<McpTool, Histogram, fn() -> Histogram>,
    mcp_unavailable: Family<McpServer, Counter>,
    overall: Arc<Overall>,
}

/// Totals over every route, for the heartbeat's runtime report: requests, 5xx and a latency
/// histogram with the same buckets. Hand-written with plain atomics because the per-route
/// families would have to be rendered to be summed (10 000 routes: 170 000 lines a second),
/// and prometheus-client's histogram neither exposes its buckets nor avoids a mutex.
#[derive(Debug, Default)]
pub struct Overall {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Per bucket of [`BUCKETS`] plus one for `+Inf`; not cumulative.
    buckets: [AtomicU64; BUCKETS.len() + 1],
}

/// A reading of [`Overall`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OverallCounts {
    /// Requests answered.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Cumulative counts by upper bound in seconds (the last is `+Inf`).
    pub buckets: Vec<(f64, u64)>,
}

impl Overall {
    fn record(&self, status: u16, seconds: f64) {
        self.requests.fetch_add(1, Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Relaxed);
        }
        let i = BUCKETS.partition_point(|b| *b < seconds);
        self.buckets[i].fetch_add(1, Relaxed);
    }

    /// The counts now.
    pub fn read(&self) -> OverallCounts {
        let mut sum = 0;
        let buckets = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(le, c)| {
                sum += c.load(Relaxed);
                (le, sum)
            })
            .collect();
        OverallCounts { requests: self.requests.load(Relaxed), errors: self.errors.load(Relaxed), buckets }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weir");
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(histogram),
            upstream_duration: Family::new_with_constructor(histogram),
            pool_wait: Family::new_with_constructor(histogram),
            in_flight: Gauge::default(),
            healthy: Family::default(),
            pool_connections: Family::default(),
            config_version: Gauge::default(),
            plugin_errors: Family::default(),
            plugin_faults: Family::default(),
            plugin_breaker_trips: Family::default(),
            mcp_calls: Family::default(),
            mcp_duration: Family::new_with_constructor(histogram),
            mcp_unavailable: Family::default(),
            overall: Arc::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "Requests answered, by route and status class", m.requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route",
            m.duration.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Time for an upstream to send response headers",
            m.upstream_duration.clone(),
        );
        registry.register(
            "upstream_pool_wait_seconds",
            "Time requests waited for a pooled connection",
            m.pool_wait.clone(),
        );
        registry.register("requests_in_flight", "Requests being served", m.in_flight.clone());
        registry.register("upstream_healthy", "1 when the endpoint may take traffic", m.healthy.clone());
        registry.register(
            "upstream_pool_connections",
            "Pooled upstream connections by state",
            m.pool_connections.clone(),
        );
        registry.register("config_version", "Version of the config being served", m.config_version.clone());
        registry.register("plugin_errors", "Internal plugin failures, by plugin", m.plugin_errors.clone());
        registry.register(
            "plugin_faults",
            "Wasm plugin calls that failed, by plugin and kind (trap, cpu, memory, refused, timeout)",
            m.plugin_faults.clone(),
        );
        registry.register(
            "plugin_breaker_trips",
            "Times a wasm plugin's circuit breaker opened",
            m.plugin_breaker_trips.clone(),
        );
        registry.register(
            "mcp_tool_calls",
            "MCP tool calls, by route, server, tool and outcome (ok, error, refused, unavailable)",
            m.mcp_calls.clone(),
        );
        registry.register(
            "mcp_tool_call_duration_seconds",
            "Time from an MCP tool call to its last message, by route, server and tool",
            m.mcp_duration.clone(),
        );
        registry.register(
            "mcp_server_unavailable",
            "Times an MCP server behind a route failed to answer a list or handshake",
            m.mcp_unavailable.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts one MCP tool call and, unless it was refused, its duration.
    pub fn mcp_call(&self, route: &str, server: &str, tool: &str, outcome: &'static str, seconds: Option<f64>) {
        let (route, server, tool) = (route.to_owned(), server.to_owned(), tool.to_owned());
        if let Some(s) = seconds {
            let key = McpTool { route: route.clone(), server: server.clone(), tool: tool.clone() };
            self.mcp_duration.get_or_create(&key).observe(s);
        }
        self.mcp_calls.get_or_create(&McpToolOutcome { route, server, tool, outcome }).inc();
    }

    /// Counts an MCP server that did not answer.
    pub fn mcp_unavailable(&self, route: &str, server: &str) {
        self.mcp_unavailable.get_or_create(&McpServer { route: route.to_owned(), server: server.to_owned() }).inc();
    }

    /// Handles for one route.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let class = |c| self.requests.get_or_create(&RouteStatus { route: route.to_owned(), status_class: c }).clone();
        RouteMetrics {
            by_class: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            duration: self.duration.get_or_create(&RouteLabel { route: route.to_owned() }).clone(),
            overall: self.overall.clone(),
        }
    }

    /// Totals over every route.
    pub fn overall(&self) -> &Overall {
        &self.overall
    }

    /// Requests being served now.
    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }

    /// Handles for requests no route matched.
    pub fn unmatched(&self) -> RouteMetrics {
        self.route("")
    }

    /// Handles for one upstream.
    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        let l = UpstreamLabel { upstream: upstream.to_owned() };
        UpstreamMetrics {
            duration: self.upstream_duration.get_or_create(&l).clone(),
            pool_wait: self.pool_wait.get_or_create(&l).clone(),
        }
    }

    /// The in-flight gauge.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The failure counter of `plugin`.
    pub fn plugin_error_counter(&self, plugin: &str) -> Counter {
        self.plugin_errors.get_or_create(&PluginLabel { plugin: plugin.to_owned() }).clone()
    }

    /// The counter of `plugin`'s faults of `kind`.
    pub fn plugin_fault_counter(&self, plugin: &str, kind: &'static str) -> Counter {
        self.plugin_faults.get_or_create(&PluginFault { plugin: plugin.to_owned(), kind }).clone()
    }

    /// The counter of `plugin`'s circuit-breaker trips.
    pub fn plugin_breaker_counter(&self, plugin: &str) -> Counter {
        self.plugin_breaker_trips.get_or_create(&PluginLabel { plugin: plugin.to_owned() }).clone()
    }

    /// Counts an internal failure of `plugin`.
    pub fn plugin_error(&self, plugin: &str) {
        self.plugin_errors.get_or_create(&PluginLabel { plugin: plugin.to_owned() }).inc();
    }

    /// The text exposition, with gauges refreshed from `snap`.
    pub fn render(&self, snap: &Snapshot) -> String {
        self.config_version.set(i64::try_from(snap.version).unwrap_or(i64::MAX));
        // Endpoints removed by a reload disappear from the output.
        self.healthy.clear();
        self.pool_connections.clear();
        for (name, u) in &snap.upstreams {
            for e in u.members().endpoints() {
                let (upstream, endpoint) = (name.to_string(), e.label().to_string());
                self.healthy
                    .get_or_create(&EndpointLabel { upstream: upstream.clone(), endpoint: endpoint.clone() })
                    .set(i64::from(e.is_available()));
                let p = e.pool();
                for (state, n) in [("open", p.open()), ("idle", p.idle())] {
                    self.pool_connections
                        .get_or_create(&PoolLabel { upstream: upstream.clone(), endpoint: endpoint.clone(), state })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // Metrics wasm plugins defined go before the OpenMetrics end marker.
        let eof = out.ends_with("# EOF\n");
        if eof {
            out.truncate(out.len() - "# EOF\n".len());
        }
        crate::filter::wasm::encode_metrics(&mut out);
        if eof {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// Pre-resolved metric handles of one route.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    duration: Histogram,
    overall: Arc<Overall>,
}

impl Default for RouteMetrics {
    /// Unregistered handles (tests, tools).
    fn default() -> Self {
        Self { by_class: Default::default(), duration: histogram(), overall: Arc::default() }
    }
}

impl RouteMetrics {
    /// Records one answered request.
    pub fn record(&self, status: u16, seconds: f64) {
        let i = usize::from((status / 100).clamp(1, 5) - 1);
        self.by_class[i].inc();
        self.duration.observe(seconds);
        self.overall.record(status, seconds);
    }
}

/// Pre-resolved metric handles of one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    /// Upstream response-header latency.
    pub duration: Histogram,
    /// Time spent waiting for a pooled connection.
    pub pool_wait: Histogram,
}

impl Default for UpstreamMetrics {
    fn default() -> Self {
        Self { duration: histogram(), pool_wait: histogram() }
    }
}
