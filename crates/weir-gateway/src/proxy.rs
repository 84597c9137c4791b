//! The request path, stated once: checks → route → pick → connection → send → stream back.
//!
//! Owns: the per-request pipeline and its failover (connect errors retry on another endpoint;
//! 5xx retries too when the request is idempotent and has no body), passive health feedback,
//! and the mapping of failures to [`ProxyError`]. Allocation on this path is limited to what
//! hyper needs per message and the `X-Forwarded-For` value.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use tokio::time::Instant;
use weir_config::spec::UpstreamProtocol;

use crate::body::{BodyLimit, Buffered, GatewayBody, Lease, UpstreamBody};
use crate::error::ProxyError;
use crate::filter::{FilterCx, LogEntry};
use crate::headers;
use crate::otel::{RequestSpan, SpanEnd, TRACEPARENT};
use crate::retry::{Retry, idempotent};
use crate::router::{RequestView, Route, Target};
use crate::snapshot::Snapshot;
use crate::sniff::Verdicts;
use crate::upgrade;
use crate::upstream::pool::AcquireError;
use crate::upstream::{Endpoint, PickCx, Tried, Upstream};
use crate::view::{Fields, strip_port};

/// The live config, swapped atomically on reload.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// What the connection knows about a request.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// Longest URI accepted (414 beyond).
    pub max_uri_length: usize,
    /// Framing verdicts of the raw HTTP/1.1 heads (see [`crate::sniff`]), one per request.
    pub verdicts: Option<Verdicts>,
    /// The client's IP as a header value, formatted once per connection for
    /// `X-Forwarded-For` (formatting an address per request cost more than the rest of the
    /// forwarding headers together).
    pub client_header: HeaderValue,
}

impl ConnInfo {
    /// What a connection from `client` knows.
    pub fn new(client: SocketAddr, proto: &'static str, max_uri_length: usize, verdicts: Option<Verdicts>) -> Self {
        let client_header = HeaderValue::try_from(client.ip().to_string()).unwrap_or(HeaderValue::from_static(""));
        Self { client, proto, max_uri_length, verdicts, client_header }
    }
}

/// Serves one request; never fails (errors become JSON, or gRPC-shaped, responses).
pub async fn handle(snap: Arc<Snapshot>, conn: ConnInfo, req: Request<Incoming>) -> Response<GatewayBody> {
    let started = Instant::now();
    let in_flight = snap.metrics.in_flight();
    in_flight.inc();
    // Only configs with an access log pay for keeping the request line.
    let line = (snap.access_log || snap.tracer.is_some())
        .then(|| (req.method().clone(), req.uri().clone(), declared_length(req.headers())));
    let mut trace = Trace::default();
    let client = conn.client;
    let grpc = is_grpc(req.headers());
    // Awaited here rather than in a helper: each level of async nesting copies the (large)
    // inner future once more per request.
    let rsp = match proxy(&snap, conn, req, &mut trace, started).await {
        Ok(rsp) => rsp,
        Err(e) => error_response(e, grpc),
    };
    in_flight.dec();
    let took = started.elapsed();
    let m = trace.route.as_ref().map_or(&snap.unmatched, |r| &r.metrics);
    m.record(rsp.status().as_u16(), took.as_secs_f64());
    let mcp = rsp.extensions().get::<crate::mcp::Called>();
    if let (Some((method, uri, bytes_in)), Some(route)) = (&line, &trace.route)
        && route.chain.has_log()
    {
        let entry = LogEntry {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            route: &route.name,
            upstream: trace.upstream.as_deref(),
            endpoint: trace.endpoint.as_deref(),
            method: method.as_str(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()),
            status: rsp.status().as_u16(),
            latency_ms: took.as_secs_f64() * 1e3,
            bytes_in: bytes_in.unwrap_or(0),
            bytes_out: declared_length(rsp.headers()).unwrap_or(0),
            consumer: trace.consumer.as_deref(),
            request_id: trace.request_id.as_ref().and_then(|v| v.to_str().ok()),
            client: &client.ip().to_string(),
            mcp_method: mcp.map(|c| c.method.as_str()),
            mcp_name: mcp.and_then(|c| c.name.as_deref()),
        };
        route.chain.log(&entry);
    }
    if let (Some(span), Some((method, uri, _)), Some(route)) = (trace.span.take(), &line, &trace.route) {
        span.finish(&SpanEnd {
            route: &route.name,
            method: method.as_str(),
            path: uri.path(),
            upstream: trace.upstream.as_deref(),
            endpoint: trace.endpoint.as_deref(),
            status: rsp.status().as_u16(),
            retries: trace.tries.saturating_sub(1),
            client: client.ip(),
            mcp: mcp.map(|c| (c.method.as_str(), c.name.as_deref())),
        });
    }
    rsp
}

/// What the request path learned about a request, for metrics and the access log.
#[derive(Debug, Default)]
struct Trace {
    route: Option<Arc<Route>>,
    upstream: Option<Arc<str>>,
    endpoint: Option<Arc<str>>,
    consumer: Option<Arc<str>>,
    request_id: Option<HeaderValue>,
    /// The request's span, when sampled.
    span: Option<Box<RequestSpan>>,
    /// Endpoints picked.
    tries: u32,
}

impl Trace {
    /// Whether the access log or a span wants the upstream, endpoint and caller.
    fn wants_detail(&self, route: &Route) -> bool {
        route.chain.has_log() || self.span.is_some()
    }
}

/// The response for a request that failed before or while being proxied (JSON, or
/// gRPC-shaped for gRPC callers), logged by how much it concerns the operator.
pub(crate) fn error_response(e: ProxyError, grpc: bool) -> Response<GatewayBody> {
    match &e {
        ProxyError::NoRoute
        | ProxyError::BadRequest(_)
        | ProxyError::UriTooLong
        | ProxyError::PayloadTooLarge { .. } => {
            tracing::debug!(error = %e, "request refused");
        }
        _ => tracing::warn!(route = e.route(), reason = e.reason(), error = %e, "request failed"),
    }
    if grpc { e.into_grpc_response() } else { e.into_response() }
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The request's host without port: the `Host` header, else the URI authority.
fn host_of<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    let raw = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| uri.host())?;
    strip_port(raw)
}

/// Request smuggling and size checks that hyper leaves to us.
fn check_request(req: &Request<Incoming>, conn: &ConnInfo) -> Result<(), ProxyError> {
    // The verdict is this request's whatever happens next: popped first, so a request refused
    // for another reason cannot leave it to the next one on the connection.
    if req.version() <= Version::HTTP_11 && conn.verdicts.as_ref().and_then(|v| v.lock().pop_front()) == Some(true) {
        return Err(ProxyError::BadRequest(
            "ambiguous framing: duplicate Content-Length or Content-Length with Transfer-Encoding",
        ));
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    // RFC 9112 §3.2: exactly one Host on HTTP/1.1 (an absolute-form URI carries its own).
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if req.version() == Version::HTTP_11 && (hosts > 1 || (hosts == 0 && req.uri().authority().is_none())) {
        return Err(ProxyError::BadRequest("exactly one Host header is required"));
    }
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > conn.max_uri_length {
        return Err(ProxyError::UriTooLong);
    }
    let h = req.headers();
    if req.version() <= Version::HTTP_11 {
        let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
        if lengths.next().is_some() && (lengths.next().is_some() || h.contains_key(header::TRANSFER_ENCODING)) {
            return Err(ProxyError::BadRequest("conflicting Content-Length / Transfer-Encoding"));
        }
    }
    Ok(())
}

fn declared_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

async fn proxy(
    snap: &Snapshot,
    conn: ConnInfo,
    mut req: Request<Incoming>,
    trace: &mut Trace,
    started: Instant,
) -> Result<Response<GatewayBody>, ProxyError> {
    check_request(&req, &conn)?;
    if !snap.well_known.is_empty()
        && req.method() == Method::GET
        && let Some(m) = snap.well_known.get(req.uri().path())
    {
        return Ok(m.metadata());
    }
    let route = route_of(snap, &req)?;
    trace.route = Some(route.clone());
    if let Some(tracer) = &snap.tracer {
        trace.span = tracer.start(&Fields::Map(req.headers()), started);
    }
    if let (Some(limit), Some(len)) = (route.max_body_size, declared_length(req.headers()))
        && len > limit
    {
        return Err(ProxyError::PayloadTooLarge { route: route.name.clone(), limit });
    }
    if let Target::Mcp(mcp) = &route.target {
        return Ok(Box::pin(serve_mcp(&route, mcp, conn, req, trace)).await);
    }
    let upstream = route.target.choose().clone();
    let h2 = upstream.protocol() != UpstreamProtocol::Http1;
    let upgrade = !h2 && headers::wants_upgrade(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let mut fcx = FilterCx::new(conn.client);
    if !route.chain.is_empty()
        && let Err(rsp) = Box::pin(route.chain.on_request(&mut parts, &mut fcx)).await
    {
        return Ok(rsp);
    }
    if let Some(span) = &trace.span {
        parts.headers.insert(TRACEPARENT.clone(), span.traceparent().clone());
    }
    if trace.wants_detail(&route) {
        trace.consumer = fcx.consumer.clone();
        trace.request_id = parts.headers.get("x-request-id").cloned();
        trace.upstream = Some(upstream.name().clone());
    }
    upstream_head(&mut parts, &conn, &upstream, upgrade)?;
    if let Some(on_upgrade) = on_upgrade {
        let request = Request::from_parts(parts, UpstreamBody::Incoming(body));
        return Box::pin(upgrade::tunnel(&route, &upstream, conn, request, on_upgrade)).await;
    }
    let body = if route.chain.reads_bodies() && !fcx.wasm.is_empty() {
        match plugin_request_body(&route, &mut parts, body, &fcx).await? {
            Ok(body) => body,
            Err(answer) => return Ok(*answer),
        }
    } else if route.chain.streams_trailers()
        && let Some(plugins) = fcx.trailer_plugins(true)
    {
        UpstreamBody::Trailed(body, plugins, None)
    } else {
        UpstreamBody::Incoming(body)
    };
    attempts(&route, &upstream, &conn, parts, body, &fcx, trace).await
}

/// An MCP route: its plugins (authentication first), then Weir answers MCP itself.
async fn serve_mcp(
    route: &Route,
    mcp: &Arc<crate::mcp::McpRoute>,
    conn: ConnInfo,
    req: Request<Incoming>,
    trace: &mut Trace,
) -> Response<GatewayBody> {
    let (mut parts, body) = req.into_parts();
    let mut fcx = FilterCx::new(conn.client);
    if !route.chain.is_empty()
        && let Err(rsp) = Box::pin(route.chain.on_request(&mut parts, &mut fcx)).await
    {
        return rsp;
    }
    trace.consumer = fcx.consumer.clone();
    let caller = crate::mcp::policy::Caller {
        client: Some(conn.client.ip()),
        consumer: fcx.consumer.clone(),
        claims: fcx.claims.clone(),
    };
    mcp.serve(parts, body, caller).await
}

/// The route for `req`.
fn route_of(snap: &Snapshot, req: &Request<Incoming>) -> Result<Arc<Route>, ProxyError> {
    let uri = req.uri();
    let view = RequestView {
        method: req.method(),
        host: host_of(req.headers(), uri),
        path: uri.path(),
        query: uri.query(),
        headers: Fields::Map(req.headers()),
    };
    snap.router.find(&view).cloned().ok_or(ProxyError::NoRoute)
}

/// Turns the client's head into the upstream's: hop-by-hop headers out, forwarding headers
/// in, the URI and version of the upstream's protocol.
fn upstream_head(
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
    upstream: &Upstream,
    upgrade: bool,
) -> Result<(), ProxyError> {
    let host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| a.as_str().parse().ok()));
    let te_trailers = parts.headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    // Weir answers `Expect: 100-continue` itself when it starts reading the body.
    parts.headers.remove(header::EXPECT);
    if !parts.headers.contains_key(header::HOST)
        && let Some(h) = &host
    {
        parts.headers.insert(header::HOST, h.clone());
    }
    headers::add_forwarding(&mut parts.headers, &conn.client_header, conn.proto);
    if upstream.protocol() == UpstreamProtocol::Http1 {
        parts.uri = Uri::from(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
        parts.version = Version::HTTP_11;
        return Ok(());
    }
    // HTTP/2 carries the authority in the URI and `te: trailers` for gRPC.
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let scheme = if upstream.protocol() == UpstreamProtocol::H2 { "https" } else { "http" };
    let auth = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    parts.uri = format!("{scheme}://{auth}{path}").parse().map_err(|_| ProxyError::BadRequest("invalid authority"))?;
    parts.headers.remove(header::HOST);
    if te_trailers {
        parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    parts.version = Version::HTTP_2;
    Ok(())
}

/// A connection a request can go out on.
enum Link {
    /// The endpoint's multiplexed HTTP/2 connection.
    H2(hyper::client::conn::http2::SendRequest<UpstreamBody>),
    /// A pooled HTTP/1.1 connection, attached to the lease.
    H1,
}

/// A connection to `ep`: its HTTP/2 connection, or a pooled HTTP/1.1 one attached to `lease`.
async fn connect(ep: &Endpoint, upstream: &Upstream, route: &Route, lease: &mut Lease) -> Result<Link, ProxyError> {
    let connect_err = |e: std::io::Error| {
        ep.record_failure(upstream.passive());
        ProxyError::Connect { route: route.name.clone(), endpoint: ep.label().clone(), reason: e.to_string() }
    };
    if upstream.protocol() != UpstreamProtocol::Http1 {
        return ep.h2(upstream.connect_timeout(), upstream.tls()).await.map(Link::H2).map_err(connect_err);
    }
    match ep.pool().acquire(|| Box::pin(ep.dial(upstream.connect_timeout(), upstream.tls()))).await {
        Ok(c) => {
            lease.attach(c);
            Ok(Link::H1)
        }
        Err(AcquireError::Timeout) => {
            Err(ProxyError::PoolExhausted { route: route.name.clone(), upstream: upstream.name().clone() })
        }
        Err(AcquireError::Connect(e)) => Err(connect_err(e)),
    }
}

/// Sends the request to one endpoint after another, as the route's retry rules allow.
async fn attempts(
    route: &Route,
    upstream: &Upstream,
    conn: &ConnInfo,
    parts: http::request::Parts,
    body: UpstreamBody,
    fcx: &FilterCx,
    trace: &mut Trace,
) -> Result<Response<GatewayBody>, ProxyError> {
    let bodiless = http_body::Body::is_end_stream(&body);
    let limit = route.max_body_size.filter(|_| !bodiless).map(BodyLimit::new);
    let body = match (body, &limit) {
        (UpstreamBody::Incoming(b), Some(l)) => UpstreamBody::Limited(b, l.clone()),
        (UpstreamBody::Trailed(b, p, None), Some(l)) => UpstreamBody::Trailed(b, p, Some(l.clone())),
        (b, _) => b,
    };
    // hyper hands back a request it could not send, so the free attempt is always safe.
    let mut retry = Retry::new(route.attempts, bodiless && idempotent(&parts.method));
    let mut outgoing = Outgoing { parts: Some(parts), body: Some(body), unsent: None, bodiless, limit };
    let mut tried = Tried::default();
    let mut last_err = None;
    while retry.start() {
        let pick = {
            let headers = outgoing.headers();
            upstream.pick(&PickCx { client_ip: conn.client.ip(), headers: Fields::Map(headers) }, tried)
        };
        let Some((i, ep)) = pick else { break };
        let tried_before = tried;
        tried.add(i);
        trace.tries += 1;
        if trace.wants_detail(route) {
            trace.endpoint = Some(ep.label().clone());
        }
        let mut lease = Lease::new(ep.clone());
        let link = match connect(&ep, upstream, route, &mut lease).await {
            Ok(l) => l,
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        let Some(request) = outgoing.next(retry.retry_5xx()) else { break };
        let started = Instant::now();
        let sent = match (link, lease.conn_mut()) {
            (Link::H2(mut s), _) => tokio::time::timeout(route.timeout, s.try_send_request(request)).await,
            (Link::H1, Some(c)) => tokio::time::timeout(route.timeout, c.send(request)).await,
            (Link::H1, None) => break,
        };
        let bad = |reason: String| ProxyError::BadUpstream {
            route: route.name.clone(),
            endpoint: ep.label().clone(),
            reason,
        };
        match sent {
            Err(_) => {
                ep.record_failure(upstream.passive());
                let (route, endpoint, after) = (route.name.clone(), ep.label().clone(), route.timeout);
                return Err(ProxyError::UpstreamTimeout { route, endpoint, after });
            }
            Ok(Err(mut e)) => {
                if outgoing.limit.as_ref().is_some_and(BodyLimit::tripped) {
                    let limit = route.max_body_size.unwrap_or(0);
                    return Err(ProxyError::PayloadTooLarge { route: route.name.clone(), limit });
                }
                outgoing.unsent = e.take_message();
                if outgoing.unsent.is_some() && retry.stale() {
                    tried = tried_before;
                    continue;
                }
                ep.record_failure(upstream.passive());
                last_err = Some(bad(e.into_error().to_string()));
            }
            Ok(Ok(rsp)) => {
                let took = started.elapsed();
                ep.observe_latency(took);
                upstream.metrics().duration.observe(took.as_secs_f64());
                if !rsp.status().is_server_error() {
                    ep.record_success();
                } else {
                    ep.record_failure(upstream.passive());
                    if retry.retry_5xx() {
                        continue;
                    }
                }
                return respond(route, rsp, lease, fcx).await.map_err(bad);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| no_endpoint(route, upstream)))
}

/// The upstream's response as the client gets it: hop-by-hop fields gone, the chain's response
/// edits made, and its body streamed (holding `lease` until it ends), streamed past plugins
/// that read trailers, or buffered for plugins that read bodies.
async fn respond(
    route: &Route,
    rsp: Response<Incoming>,
    lease: Lease,
    fcx: &FilterCx,
) -> Result<Response<GatewayBody>, String> {
    let (mut rp, inner) = rsp.into_parts();
    // The trailers the upstream declares: HTTP/1.1 carries only declared ones.
    let declared: Vec<HeaderValue> = if route.chain.streams_trailers() {
        rp.headers.get_all(header::TRAILER).iter().cloned().collect()
    } else {
        Vec::new()
    };
    headers::strip_hop_by_hop(&mut rp.headers, false);
    for v in declared {
        rp.headers.append(header::TRAILER, v);
    }
    if !route.chain.is_empty() {
        route.chain.on_response(rp.status, &mut rp.headers, fcx);
    }
    let body = GatewayBody::Proxied { inner, lease: Some(lease) };
    if route.chain.reads_bodies() {
        return plugin_body(route, rp, body, fcx).await;
    }
    if route.chain.streams_trailers()
        && let Some(plugins) = fcx.trailer_plugins(false)
    {
        return Ok(Response::from_parts(rp, GatewayBody::Trailed(Box::new(body), plugins)));
    }
    Ok(Response::from_parts(rp, body))
}

/// The largest response body buffered for plugins that read bodies.
const MAX_PLUGIN_BODY: usize = 16 << 20;

/// Buffers a response body for the plugins that read bodies, and frames what they return (or
/// answers what a plugin sent instead).
async fn plugin_body(
    route: &Route,
    mut rp: http::response::Parts,
    body: GatewayBody,
    fcx: &FilterCx,
) -> Result<Response<GatewayBody>, String> {
    use http_body_util::BodyExt;
    let collected = http_body_util::Limited::new(body, MAX_PLUGIN_BODY)
        .collect()
        .await
        .map_err(|e| format!("response body for a plugin that reads bodies: {e}"))?;
    let mut trailers = collected.trailers().cloned();
    let out = match route.chain.on_response_body(collected.to_bytes(), fcx) {
        Ok(out) => out,
        Err(answer) => return Ok(*answer),
    };
    if let Some(t) = &mut trailers {
        route.chain.on_response_trailers(t, fcx);
    }
    reframe(&mut rp.headers, out.len(), trailers.is_some());
    if let Some(t) = &trailers {
        declare(&mut rp.headers, t);
    }
    Ok(Response::from_parts(rp, GatewayBody::Buffered(Buffered { data: Some(out), trailers })))
}

/// Declares `trailers` in a `Trailer` field: an HTTP/1.1 peer is sent only declared ones.
fn declare(headers: &mut HeaderMap, trailers: &HeaderMap) {
    let names: Vec<&str> = trailers.keys().map(http::HeaderName::as_str).collect();
    if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
        headers.insert(header::TRAILER, v);
    }
}

/// Frames a body a plugin may have rewritten: its length, not the original's framing; with
/// trailers, no length, so HTTP/1.1 chunks it (HTTP/2 carries trailers in its own frames).
fn reframe(headers: &mut HeaderMap, len: usize, trailers: bool) {
    headers.remove(header::TRANSFER_ENCODING);
    if trailers {
        headers.remove(header::CONTENT_LENGTH);
    } else {
        headers.insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
}

/// Buffers a request body for the plugins that read bodies, and frames what they return;
/// the inner `Err` is a plugin's own answer, which ends the request.
async fn plugin_request_body(
    route: &Route,
    parts: &mut http::request::Parts,
    body: Incoming,
    fcx: &FilterCx,
) -> Result<Result<UpstreamBody, Box<Response<GatewayBody>>>, ProxyError> {
    use http_body_util::BodyExt;
    let limit = route.max_body_size.map_or(MAX_PLUGIN_BODY, |m| (m as usize).min(MAX_PLUGIN_BODY));
    let collected = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => c,
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::PayloadTooLarge { route: route.name.clone(), limit: limit as u64 });
        }
        Err(_) => return Err(ProxyError::BadRequest("the client stopped sending its body")),
    };
    let mut trailers = collected.trailers().cloned();
    let out = match route.chain.on_request_body(collected.to_bytes(), fcx) {
        Ok(out) => out,
        Err(answer) => return Ok(Err(answer)),
    };
    if let Some(t) = &mut trailers {
        route.chain.on_request_trailers(t, fcx);
    }
    reframe(&mut parts.headers, out.len(), trailers.is_some());
    if trailers.is_some() && parts.version < http::Version::HTTP_2 {
        // HTTP/1.1 carries trailers only in chunked framing.
        parts.headers.insert(header::TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
    }
    Ok(Ok(match (out.is_empty(), trailers) {
        (true, None) => UpstreamBody::Empty,
        (_, trailers) => UpstreamBody::Buffered(Buffered { data: (!out.is_empty()).then_some(out), trailers }),
    }))
}

/// The request as it goes out, attempt after attempt.
struct Outgoing {
    parts: Option<http::request::Parts>,
    body: Option<UpstreamBody>,
    /// A request handed back unsent by a connection that closed under it.
    unsent: Option<Request<UpstreamBody>>,
    bodiless: bool,
    limit: Option<BodyLimit>,
}

impl Outgoing {
    fn headers(&self) -> &HeaderMap {
        static EMPTY: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
        match (&self.parts, &self.unsent) {
            (Some(p), _) => &p.headers,
            (None, Some(r)) => r.headers(),
            (None, None) => &EMPTY,
        }
    }

    /// The request for the next attempt: a request handed back unsent, a bodiless copy while
    /// 5xx answers may still be retried, else the request itself (once).
    fn next(&mut self, may_retry: bool) -> Option<Request<UpstreamBody>> {
        if let Some(r) = self.unsent.take() {
            return Some(r);
        }
        if may_retry {
            return self.parts.as_ref().map(copy_head);
        }
        let (p, b) = (self.parts.take()?, self.body.take()?);
        Some(Request::from_parts(p, if self.bodiless { UpstreamBody::Empty } else { b }))
    }
}

fn no_endpoint(route: &Route, upstream: &Upstream) -> ProxyError {
    ProxyError::NoHealthyEndpoint { route: route.name.clone(), upstream: upstream.name().clone() }
}

/// A bodiless copy of a request head, for an attempt that may be retried.
fn copy_head(p: &http::request::Parts) -> Request<UpstreamBody> {
    let mut r = Request::new(UpstreamBody::Empty);
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    r
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns.
    fn future_size<F, A, B, C, Fut>(_: &F) -> usize
    where
        F: Fn(A, B, C) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// hyper moves each request's future (into its in-flight slot, through `service_fn`), so
    /// its size is copied on every request. Rare, large states (dialing, TLS and HTTP/2
    /// handshakes, waiting on a full pool, tunnels, plugin phases) are boxed to keep it small;
    /// it was 9 KiB before they were.
    #[test]
    fn the_request_future_stays_small() {
        let size = future_size(&super::handle);
        eprintln!("request future: {size} bytes");
        assert!(size <= 6 * 1024, "the request future grew to {size} bytes: box the new rare path");
    }
}
