//! The configuration model exactly as operators write it (YAML or JSON).
//!
//! Owns: the serde shape of a Weir config, its defaults and its JSON Schema.
//! Does not own: cross-field checks (see [`crate::validate`]) or any runtime form.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::plugins::{Consumer, PluginSpec};
use crate::size::ByteSize;

/// A whole Weir configuration: listeners, routes and upstreams.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSpec>,
    /// Where the gateway accepts client traffic.
    #[serde(default)]
    pub listeners: Vec<ListenerSpec>,
    /// Routes, matched by precedence (most specific first, then declaration order).
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Named sets of endpoints that routes send traffic to.
    #[serde(default)]
    pub upstreams: Vec<UpstreamSpec>,
    /// Plugins applied to every route (a route's own plugin of the same name replaces it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginSpec>,
    /// Named callers and their API keys, for every `key-auth` plugin that lists none of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    /// Endpoints registered for upstreams that take registrations (`discovery: { registry: {} }`).
    /// Services register themselves through the control plane (`weir ctl register`, REST), which
    /// drops a registration not renewed within its `ttl`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registrations: Vec<RegistrationSpec>,
    /// Plugin package directories (`metadata.yaml`, `config.schema.json`, `plugin.wasm`),
    /// relative to the config file; routes use a package by its metadata name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_packages: Vec<String>,
    /// OpenTelemetry spans for requests, exported over OTLP/gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

/// OpenTelemetry tracing: one span per request, sampled, exported over OTLP/gRPC, with the W3C
/// `traceparent` passed on to upstreams.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingSpec {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// The share of requests traced when the caller sent no sampling decision, 0 to 1. A
    /// `traceparent` that says sampled is always traced, one that says not sampled never is.
    #[serde(default = "default_sample_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: f64,
    /// The spans' `service.name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_sample_ratio() -> f64 {
    0.01
}

fn default_service_name() -> String {
    "weir".into()
}

/// The admin listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    /// Address to bind, e.g. `127.0.0.1:9901`.
    pub address: SocketAddr,
}

/// A client-facing listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Address to bind, e.g. `0.0.0.0:8080`.
    pub address: SocketAddr,
    /// Terminate TLS here (HTTP/2 is offered through ALPN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsSpec>,
    /// Protection against slow, huge or too many clients.
    #[serde(default)]
    pub limits: ListenerLimits,
}

/// TLS for a listener: certificates chosen by SNI; the first is the default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsSpec {
    /// Certificate chains and keys (PEM files). SNI names come from the certificates; files are
    /// reloaded when they change.
    pub certificates: Vec<CertificateSpec>,
}

/// One certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// PEM file with the certificate chain, leaf first; or the PEM text itself (containing
    /// `-----BEGIN`), which is how a control plane pushes certificates to gateways.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1); or the PEM text itself.
    pub key: String,
}

impl CertificateSpec {
    /// Whether a `cert` or `key` value is PEM text rather than a file path.
    pub fn is_inline(value: &str) -> bool {
        value.contains("-----BEGIN")
    }
}

/// Per-listener limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// Open client connections at most; further clients wait in the accept queue. Default 10000.
    #[serde(default = "default_max_client_connections")]
    pub max_connections: u32,
    /// Request head (request line + headers) at most this large, else 431. Default 64KiB.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: ByteSize,
    /// Request URI at most this long, else 414. Default 8KiB.
    #[serde(default = "default_max_uri_length")]
    pub max_uri_length: ByteSize,
    /// A client must send a full request head within this time (slowloris guard). Default 30s.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// Connections with no bytes moving in either direction are closed after this. Default 60s.
    #[serde(default = "default_client_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// HTTP/2 streams open at once per connection. Default 128.
    #[serde(default = "default_max_streams")]
    pub max_concurrent_streams: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_client_connections(),
            max_header_size: default_max_header_size(),
            max_uri_length: default_max_uri_length(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_client_idle_timeout(),
            max_concurrent_streams: default_max_streams(),
        }
    }
}

fn default_max_client_connections() -> u32 {
    10_000
}
fn default_max_header_size() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_max_uri_length() -> ByteSize {
    ByteSize(8 * 1024)
}
fn default_header_read_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_client_idle_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_max_streams() -> u32 {
    128
}

/// One route: what it matches and where matching requests go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique name, used in errors, logs and metrics.
    pub name: String,
    /// What a request must look like to take this route. Empty matches everything.
    #[serde(default, rename = "match")]
    pub matches: MatchSpec,
    /// The upstream that serves this route (exclusive with `backends` and `mcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Weir answers the Model Context Protocol itself and federates these MCP servers
    /// (exclusive with `upstream` and `backends`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Box<crate::mcp::McpSpec>>,
    /// Weighted upstreams for a canary split, e.g. v1 90 / v2 10 (exclusive with `upstream`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendSpec>,
    /// Deadline for the upstream to send response headers, per attempt. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Retry policy. Default: one attempt, no retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetrySpec>,
    /// Request bodies larger than this get 413. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<ByteSize>,
    /// This route's plugins (`weir plugins list`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginSpec>,
}

/// Request predicates; all given ones must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Host names, exact (`api.example.com`) or wildcard (`*.shop.example`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path predicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Allowed methods (upper case). Empty allows every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Headers that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
}

/// How a route matches the request path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    /// The path equals this string.
    Exact(String),
    /// The path starts with this string, on a segment boundary (`/a` matches `/a` and `/a/b`, not `/ab`).
    Prefix(String),
    /// Segments with `{name}` parameters, e.g. `/users/{id}/orders`.
    Template(String),
    /// A regular expression that must match the whole path.
    Regex(String),
}

/// One weighted backend of a canary split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Upstream name.
    pub upstream: String,
    /// Relative weight (0 disables the backend).
    pub weight: u32,
}

/// Retry policy of a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Total attempts, the first included (1 = no retry). Retries go to another endpoint.
    pub attempts: u32,
}

/// A named set of endpoints with its balancing, pooling and health policies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Unique name, referenced by routes.
    pub name: String,
    /// Balancing policy and endpoints (the shape of the seed's section 2.3). May be left out
    /// with `discovery` (round robin over what it finds).
    #[serde(default)]
    pub load_balancer: LoadBalancerSpec,
    /// Connection pool limits per endpoint.
    #[serde(default)]
    pub pool: PoolSpec,
    /// Deadline for establishing a TCP connection. Default 1s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Active and passive health checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Protocol spoken to the endpoints. Default `http1`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the endpoints (HTTPS, mTLS). Verification is on unless `insecure_skip_verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsSpec>,
    /// Where the endpoints come from when they are not listed: DNS, re-resolved as records
    /// expire. `load_balancer.endpoints` is then left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoverySpec>,
}

/// A source of endpoints: give one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySpec {
    /// Endpoints from DNS records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDiscoverySpec>,
    /// Endpoints that services register with the control plane (`registrations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<Empty>,
}

/// One endpoint a service registered for an upstream. Named `UPSTREAM.ADDRESS-PORT` by
/// `weir ctl register`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSpec {
    /// Unique name.
    pub name: String,
    /// The upstream it serves (one with `discovery: { registry: {} }`).
    pub upstream: String,
    /// IP address.
    pub address: std::net::IpAddr,
    /// TCP port.
    pub port: u16,
    /// Relative weight. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// At the control plane: the registration is dropped unless renewed within this. Default 10s.
    #[serde(default = "default_registration_ttl")]
    pub ttl: HumanDuration,
}

impl RegistrationSpec {
    /// A registration as services send it: named by [`RegistrationSpec::name_for`], with the
    /// defaults (weight 1, ttl 10s) for what is left out.
    pub fn of(
        upstream: String,
        address: std::net::IpAddr,
        port: u16,
        weight: Option<u32>,
        ttl: Option<HumanDuration>,
    ) -> Self {
        Self {
            name: Self::name_for(&upstream, address, port),
            upstream,
            address,
            port,
            weight: weight.unwrap_or_else(default_weight),
            ttl: ttl.unwrap_or_else(default_registration_ttl),
        }
    }

    /// The name `weir ctl register` gives a registration.
    pub fn name_for(upstream: &str, address: std::net::IpAddr, port: u16) -> String {
        format!("{upstream}.{}-{port}", address.to_string().replace(':', "_"))
    }
}

fn default_registration_ttl() -> HumanDuration {
    HumanDuration::secs(10)
}

/// Endpoints from DNS: A/AAAA records (each address at `port`) or SRV records (targets, ports
/// and weights; the lowest priority present), re-resolved when their TTL runs out (bounded by
/// `min_ttl` and `max_ttl`). While DNS fails, the last good answer keeps serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscoverySpec {
    /// The name to resolve, e.g. `app.internal` or `_http._tcp.app.internal` for SRV.
    pub name: String,
    /// `a` (A and AAAA) or `srv`. Default `a`.
    #[serde(default)]
    pub record: DnsRecord,
    /// The port of every address, for `record: a` (SRV records carry their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The DNS server to ask, `IP:PORT`. Default: the system's (`/etc/resolv.conf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<SocketAddr>,
    /// Re-resolve no sooner than this after an answer, whatever its TTL. Default 1s.
    #[serde(default = "default_min_ttl")]
    pub min_ttl: HumanDuration,
    /// Re-resolve no later than this. Default 5m.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: HumanDuration,
}

fn default_min_ttl() -> HumanDuration {
    HumanDuration::secs(1)
}

fn default_max_ttl() -> HumanDuration {
    HumanDuration::secs(300)
}

/// Which DNS records name the endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsRecord {
    /// A and AAAA records, each address at the configured port.
    #[default]
    A,
    /// SRV records: a target, port and weight each.
    Srv,
}

/// Protocol spoken to an upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 over TLS (requires `tls`), one multiplexed connection per endpoint.
    H2,
    /// HTTP/2 with prior knowledge over plain TCP (gRPC backends), one multiplexed connection per endpoint.
    H2c,
}

/// TLS towards an upstream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    /// Server name sent in SNI and verified in the certificate. Default: the endpoint address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// PEM file of CA certificates to trust. Default: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// PEM certificate chain presented to the upstream (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// PEM private key for `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Do not verify the upstream's certificate (tests only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration::secs(1)
}

/// Balancing policy and endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// The balancing algorithm. Default `round_robin`.
    #[serde(default)]
    pub policy: LbPolicy,
    /// What `consistent_hash` hashes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<HashKeySpec>,
    /// The endpoints (none when the upstream's `discovery` finds them).
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

/// Load-balancing algorithms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (nginx's algorithm).
    WeightedRoundRobin,
    /// The endpoint with the fewest requests in flight.
    LeastConnections,
    /// A hash ring keyed by a header or the client IP; stable under membership changes.
    ConsistentHash,
    /// Power of two choices by latency EWMA and load.
    P2cEwma,
}

/// What `consistent_hash` hashes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKeySpec {
    /// The value of this request header (requests without it hash on the client IP).
    Header(String),
    /// The client's IP address.
    ClientIp(Empty),
}

/// An empty mapping, `{}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// One endpoint of an upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// IP address or host name.
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// Relative weight for weighted policies. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Connection pool limits, per endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Open connections (busy + idle) at most. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Idle connections kept at most. Default 64.
    #[serde(default = "default_max_idle")]
    pub max_idle: u32,
    /// Idle connections are closed after this long. Default 60s.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Connections are not reused after this age. Default 10m.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: HumanDuration,
    /// How long a request waits for a connection when `max_connections` are busy. Default 5s.
    #[serde(default = "default_acquire_timeout")]
    pub acquire_timeout: HumanDuration,
}

impl Default for PoolSpec {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_idle: default_max_idle(),
            idle_timeout: default_idle_timeout(),
            max_lifetime: default_max_lifetime(),
            acquire_timeout: default_acquire_timeout(),
        }
    }
}

fn default_max_connections() -> u32 {
    1024
}
fn default_max_idle() -> u32 {
    64
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_max_lifetime() -> HumanDuration {
    HumanDuration::secs(600)
}
fn default_acquire_timeout() -> HumanDuration {
    HumanDuration::secs(5)
}

/// Health checking of an upstream's endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// Periodic HTTP probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthSpec>,
    /// Ejection on consecutive failures of real traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthSpec>,
}

/// Periodic HTTP probes: a 2xx/3xx answer is healthy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthSpec {
    /// Path probed with GET. Default `/healthz`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between probes. Default 2s.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Probe deadline. Default 1s.
    #[serde(default = "default_probe_timeout")]
    pub timeout: HumanDuration,
    /// Successes in a row that mark a down endpoint up. Default 2.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failures in a row that mark an up endpoint down. Default 3.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_health_path() -> String {
    "/healthz".into()
}
fn default_interval() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_probe_timeout() -> HumanDuration {
    HumanDuration::secs(1)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// Passive checks: eject an endpoint after consecutive failures of real requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthSpec {
    /// Failures in a row (connect errors, 5xx, timeouts) that eject. Default 5.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// How long an ejected endpoint stays out. Default 30s.
    #[serde(default = "default_ejection_time")]
    pub ejection_time: HumanDuration,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_ejection_time() -> HumanDuration {
    HumanDuration::secs(30)
}
