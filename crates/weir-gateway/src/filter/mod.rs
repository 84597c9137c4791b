//! The filter chain: built-in plugins run in fixed phases around the proxy.
//!
//! Phase order is part of the API and written only here:
//! `Cors → Access → Authn → RateLimit → Transform`, then the upstream, then response edits.
//! CORS comes first so preflights never need credentials; rate limiting comes after
//! authentication so limits can be per consumer.
//!
//! Filters in one phase do not see each other's changes, so they run concurrently: each reads
//! the request as the previous phase left it and returns its [`Effects`] (or a response that
//! short-circuits the chain); the effects are applied in declaration order once the whole
//! phase is done. A phase with two filters that each wait on I/O costs the longer wait, not
//! the sum.

mod access;
mod auth;
mod build;
mod jwks;
pub(crate) mod jwt;
pub(crate) mod limit;
mod log;
mod redis_limit;
mod transform;
#[cfg(feature = "wasm")]
pub mod wasm;
/// Without the `wasm` feature: the same names, and no plugin ever loads.
#[cfg(not(feature = "wasm"))]
#[path = "wasm_off.rs"]
pub mod wasm;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use weir_config::plugins::PluginConfig;

pub use build::{BuildError, PackageFailure};
pub use log::LogEntry;

use crate::body::GatewayBody;
use crate::metrics::Metrics;
use crate::view::{Edits, Fields, RequestView, strip_port};

/// Where a filter runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// CORS preflights and headers.
    Cors,
    /// Request ids, IP allow/deny.
    Access,
    /// Who is calling.
    Authn,
    /// Rate limits.
    RateLimit,
    /// Faults, header edits, path rewrites.
    Transform,
}

/// What a request-phase filter wants done to the request.
#[derive(Debug, Default)]
pub struct Effects {
    /// Headers to set on the upstream request.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers to append on the upstream request.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Headers to remove from the upstream request.
    pub remove: Vec<HeaderName>,
    /// The caller, once authenticated.
    pub consumer: Option<Arc<str>>,
    /// New path (and query) for the upstream request.
    pub path: Option<String>,
    /// Headers to add to the response, whoever produces it.
    pub response: Vec<(HeaderName, HeaderValue)>,
    /// Claims of a verified JWT.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// A plugin's HTTP context, kept for the response and the end of the request.
    pub wasm: Option<Arc<wasm::WasmCtx>>,
}

/// A request filter's verdict.
#[derive(Debug)]
pub enum Outcome {
    /// Go on, with these changes.
    Continue(Effects),
    /// Answer now with this response.
    Respond(Response<GatewayBody>),
}

impl Outcome {
    fn done() -> Self {
        Self::Continue(Effects::default())
    }
}

/// Per-request state the filters share.
#[derive(Debug)]
pub struct FilterCx {
    /// The client's address.
    pub client: IpAddr,
    /// The client's address and port.
    pub source: SocketAddr,
    /// The authenticated caller.
    pub consumer: Option<Arc<str>>,
    /// Headers added to the response.
    pub response: Vec<(HeaderName, HeaderValue)>,
    /// Claims of a verified JWT, for claim-keyed rate limits.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// Plugin HTTP contexts of this request, in the order they ran; ended when it is dropped.
    pub wasm: Vec<Arc<wasm::WasmCtx>>,
}

/// The plugin contexts of one request that read trailers, held by a streamed body so its
/// trailers reach them as they pass. A response body holds them, so they end with it; a
/// request body only refers to them, because an upstream may answer before it has read the
/// whole request, and the contexts must not wait for an idle connection to be reused.
#[derive(Debug)]
pub enum TrailerPlugins {
    /// A request's, in request order.
    Request(Vec<std::sync::Weak<wasm::WasmCtx>>),
    /// A response's, in reverse.
    Response(Vec<Arc<wasm::WasmCtx>>),
}

impl TrailerPlugins {
    /// Hands `trailers` to each plugin: a request's in request order, a response's in reverse.
    pub fn apply(&self, trailers: &mut HeaderMap) {
        match self {
            Self::Request(ctxs) => {
                ctxs.iter().filter_map(std::sync::Weak::upgrade).for_each(|w| w.on_request_trailers(trailers))
            }
            Self::Response(ctxs) => ctxs.iter().rev().for_each(|w| w.on_response_trailers(trailers)),
        }
    }
}

impl FilterCx {
    /// The plugins of this request that read trailers, for its request (`request`) or its
    /// response body; `None` when there are none.
    pub fn trailer_plugins(&self, request: bool) -> Option<TrailerPlugins> {
        let ctxs = self.wasm.iter().filter(|w| w.reads_trailers());
        ctxs.clone().next()?;
        Some(if request {
            TrailerPlugins::Request(ctxs.map(Arc::downgrade).collect())
        } else {
            TrailerPlugins::Response(ctxs.cloned().collect())
        })
    }

    /// A context for a request from `client`.
    pub fn new(client: SocketAddr) -> Self {
        Self {
            client: client.ip(),
            source: client,
            consumer: None,
            response: Vec::new(),
            claims: None,
            wasm: Vec::new(),
        }
    }
}

/// One compiled built-in plugin.
#[derive(Debug)]
pub enum Filter {
    /// `cors`.
    Cors(access::Cors),
    /// `request-id`.
    RequestId(access::RequestId),
    /// `ip-restriction`.
    Ip(access::IpRestriction),
    /// `key-auth`.
    KeyAuth(auth::KeyAuth),
    /// `jwt-auth`.
    JwtAuth(jwt::JwtAuth),
    /// `rate-limit`.
    RateLimit(limit::RateLimit),
    /// `fault`.
    Fault(transform::Fault),
    /// `headers`.
    Headers(transform::Headers),
    /// `rewrite`.
    Rewrite(transform::Rewrite),
    /// `access-log` (runs after the response, never in a request phase).
    AccessLog(log::AccessLog),
    /// A plugin package (proxy-wasm).
    Wasm(Arc<wasm::WasmFilter>),
}

impl Filter {
    /// Compiles a validated plugin config; fails when a file it names is unusable or a
    /// package plugin does not load. `callouts` are the upstreams a package may call.
    pub fn new(
        cfg: &PluginConfig,
        route: &str,
        metrics: &Metrics,
        callouts: &Arc<wasm::Callouts>,
    ) -> Result<Self, BuildError> {
        Ok(match cfg {
            PluginConfig::Wasm(c) => Self::Wasm(wasm::WasmFilter::new(c, route, metrics, callouts)?),
            PluginConfig::Cors(c) => Self::Cors(access::Cors::new(c)),
            PluginConfig::RequestId(c) => Self::RequestId(access::RequestId::new(c)),
            PluginConfig::IpRestriction(c) => Self::Ip(access::IpRestriction::new(c)),
            PluginConfig::KeyAuth(c) => Self::KeyAuth(auth::KeyAuth::new(c)),
            PluginConfig::RateLimit(c) => {
                Self::RateLimit(limit::RateLimit::new(c, route, metrics.plugin_error_counter("rate-limit"))?)
            }
            PluginConfig::Fault(c) => Self::Fault(transform::Fault::new(c)),
            PluginConfig::Headers(c) => Self::Headers(transform::Headers::new(c)),
            PluginConfig::Rewrite(c) => Self::Rewrite(transform::Rewrite::new(c)),
            PluginConfig::AccessLog(c) => {
                Self::AccessLog(log::AccessLog::new(c, metrics.plugin_error_counter("access-log")))
            }
            PluginConfig::JwtAuth(c) => Self::JwtAuth(jwt::JwtAuth::new(c)?),
        })
    }

    /// The phase it runs in.
    pub fn phase(&self) -> Phase {
        match self {
            Self::Cors(_) => Phase::Cors,
            Self::RequestId(_) | Self::Ip(_) => Phase::Access,
            Self::KeyAuth(_) | Self::JwtAuth(_) => Phase::Authn,
            Self::RateLimit(_) => Phase::RateLimit,
            Self::Fault(_) | Self::Headers(_) | Self::Rewrite(_) | Self::AccessLog(_) => Phase::Transform,
            Self::Wasm(f) => f.phase(),
        }
    }

    /// Order within a phase, higher first: built-ins run before packages of their phase.
    fn priority(&self) -> i32 {
        match self {
            Self::Wasm(f) => f.priority(),
            _ => i32::MAX,
        }
    }

    async fn on_request(&self, req: &RequestView<'_>, cx: &FilterCx) -> Outcome {
        match self {
            Self::Cors(f) => f.on_request(req),
            Self::RequestId(f) => f.on_request(req),
            Self::Ip(f) => f.on_request(cx),
            Self::KeyAuth(f) => f.on_request(req),
            Self::JwtAuth(f) => f.on_request(req).await,
            Self::RateLimit(f) => f.on_request(req, cx).await,
            Self::Fault(f) => f.on_request().await,
            Self::Headers(f) => f.on_request(),
            Self::Rewrite(f) => f.on_request(req),
            Self::AccessLog(_) => Outcome::done(),
            Self::Wasm(f) => f.on_request(req, cx).await,
        }
    }

    fn on_response(&self, headers: &mut HeaderMap) {
        if let Self::Headers(f) = self {
            f.on_response(headers);
        }
    }
}

/// A route's filters grouped by phase, in phase order.
#[derive(Debug, Default)]
pub struct Chain {
    phases: Vec<Vec<Arc<Filter>>>,
    /// `access-log` filters, run once the response is known.
    loggers: Vec<Arc<Filter>>,
    /// A filter edits response headers.
    edits_responses: bool,
    /// A built-in filter edits response headers (they work on a `HeaderMap`).
    builtins_edit_responses: bool,
    /// A plugin reads response bodies.
    reads_bodies: bool,
    /// A plugin reads trailers (and perhaps not bodies).
    reads_trailers: bool,
}

impl Chain {
    /// Groups `filters` by phase, keeping declaration order within a phase.
    pub fn new(filters: Vec<Arc<Filter>>) -> Self {
        let (loggers, mut filters): (Vec<_>, Vec<_>) =
            filters.into_iter().partition(|f| matches!(**f, Filter::AccessLog(_)));
        filters.sort_by_key(|f| (f.phase(), std::cmp::Reverse(f.priority())));
        let mut phases: Vec<Vec<Arc<Filter>>> = Vec::new();
        for f in filters {
            match phases.last_mut() {
                Some(p) if p[0].phase() == f.phase() => p.push(f),
                _ => phases.push(vec![f]),
            }
        }
        let builtins_edit_responses = phases.iter().flatten().any(|f| matches!(**f, Filter::Headers(_)));
        let edits_responses =
            builtins_edit_responses || phases.iter().flatten().any(|f| matches!(**f, Filter::Wasm(_)));
        let reads_bodies = phases.iter().flatten().any(|f| matches!(&**f, Filter::Wasm(w) if w.reads_bodies()));
        let reads_trailers = phases.iter().flatten().any(|f| matches!(&**f, Filter::Wasm(w) if w.reads_trailers()));
        Self { phases, loggers, edits_responses, builtins_edit_responses, reads_bodies, reads_trailers }
    }

    /// Whether an access log wants entries for this route.
    pub fn has_log(&self) -> bool {
        !self.loggers.is_empty()
    }

    /// Hands `entry` to every access log of the route.
    pub fn log(&self, entry: &LogEntry<'_>) {
        for f in &self.loggers {
            if let Filter::AccessLog(l) = &**f {
                l.log(entry);
            }
        }
    }

    /// Whether a filter edits response headers (beyond the headers the request phases add).
    pub fn edits_responses(&self) -> bool {
        self.edits_responses
    }

    /// Whether a plugin reads response bodies (the route's responses are then buffered).
    pub fn reads_bodies(&self) -> bool {
        self.reads_bodies
    }

    /// Whether a plugin reads trailers while no plugin reads bodies: bodies then stream, and
    /// their trailers are handed to the plugins as they pass ([`TrailerPlugins`]).
    pub fn streams_trailers(&self) -> bool {
        self.reads_trailers && !self.reads_bodies
    }

    /// Hands a buffered response body to the plugins that read bodies; returns what to send,
    /// or a response that replaces the upstream's (a plugin answered itself).
    pub fn on_response_body(&self, mut body: Bytes, cx: &FilterCx) -> Result<Bytes, Box<Response<GatewayBody>>> {
        for w in cx.wasm.iter().rev().filter(|w| w.reads_bodies()) {
            body = w.on_response_body(body)?;
        }
        Ok(body)
    }

    /// Hands a buffered response's trailers to the plugins that read them, in the reverse of
    /// their request order, each seeing the last one's changes.
    pub fn on_response_trailers(&self, trailers: &mut HeaderMap, cx: &FilterCx) {
        for w in cx.wasm.iter().rev().filter(|w| w.reads_trailers()) {
            w.on_response_trailers(trailers);
        }
    }

    /// Hands a buffered request's trailers to the plugins that read them, in order.
    pub fn on_request_trailers(&self, trailers: &mut HeaderMap, cx: &FilterCx) {
        for w in cx.wasm.iter().filter(|w| w.reads_trailers()) {
            w.on_request_trailers(trailers);
        }
    }

    /// Hands a buffered request body to the plugins that read bodies; returns what to send,
    /// or the answer a plugin gave instead (the request then goes no further).
    pub fn on_request_body(&self, mut body: Bytes, cx: &FilterCx) -> Result<Bytes, Box<Response<GatewayBody>>> {
        for w in cx.wasm.iter().filter(|w| w.reads_bodies()) {
            body = w.on_request_body(body)?;
        }
        Ok(body)
    }

    /// Whether the chain has no filters (the common fast path).
    pub fn is_empty(&self) -> bool {
        self.phases.is_empty()
    }

    /// Runs the request phases; `Err` is a response that ends the request here.
    pub async fn on_request<H: Head>(&self, req: &mut H, cx: &mut FilterCx) -> Result<(), Response<GatewayBody>> {
        for phase in &self.phases {
            if let [only] = phase.as_slice() {
                // The usual phase of one filter: no list of outcomes to build.
                let o = only.on_request(&req.view(), cx).await;
                if let Some(rsp) = self.take(req, cx, o) {
                    return Err(rsp);
                }
                continue;
            }
            let (view, c) = (req.view(), &*cx);
            let outcomes = join_all(phase.iter().map(|f| f.on_request(&view, c))).await;
            for o in outcomes {
                if let Some(rsp) = self.take(req, cx, o) {
                    return Err(rsp);
                }
            }
        }
        Ok(())
    }

    /// Applies one filter's outcome; `Some` is the response that ends the request.
    fn take<H: Head>(&self, req: &mut H, cx: &mut FilterCx, o: Outcome) -> Option<Response<GatewayBody>> {
        match o {
            Outcome::Continue(e) => {
                apply(req, cx, e);
                None
            }
            Outcome::Respond(mut rsp) => {
                let status = rsp.status();
                self.on_response(status, rsp.headers_mut(), cx);
                Some(rsp)
            }
        }
    }

    /// When one plugin package is the only filter that edits this response's headers: runs its
    /// `on_response_headers` on the fields `each` yields (the upstream's, where they lie) plus
    /// those the request phases add, and returns its changes as edits, so the fast path writes
    /// the head in one pass without a `HeaderMap`. `None`: use [`Chain::on_response`].
    pub fn plugin_response_edits(
        &self,
        status: StatusCode,
        each: impl Fn(&mut dyn FnMut(&[u8], &[u8])),
        cx: &FilterCx,
    ) -> Option<crate::view::Edits> {
        let [w] = cx.wasm.as_slice() else { return None };
        if self.builtins_edit_responses {
            return None;
        }
        let all = |f: &mut dyn FnMut(&[u8], &[u8])| {
            each(f);
            for (k, v) in &cx.response {
                f(k.as_str().as_bytes(), v.as_bytes());
            }
        };
        Some(w.response_edits(status, all))
    }

    /// Response edits, for proxied and short-circuited responses alike; plugins see the
    /// response after the built-ins, in the reverse of their request order.
    pub fn on_response(&self, status: StatusCode, headers: &mut HeaderMap, cx: &FilterCx) {
        for (k, v) in &cx.response {
            headers.append(k.clone(), v.clone());
        }
        for f in self.phases.iter().flatten() {
            f.on_response(headers);
        }
        for w in cx.wasm.iter().rev() {
            w.on_response(status, headers);
        }
    }
}

/// A request head the chain reads through a [`RequestView`] and edits with [`Effects`].
pub trait Head: Send {
    /// The request as the phases so far left it.
    fn view(&self) -> RequestView<'_>;
    /// Applies one filter's header and path changes.
    fn edit(&mut self, e: &mut Effects);
}

/// hyper's request head (HTTP/2, and HTTP/1.1 requests the fast path hands to hyper).
impl Head for http::request::Parts {
    fn view(&self) -> RequestView<'_> {
        let host = self.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| self.uri.host());
        RequestView {
            method: &self.method,
            host: host.and_then(strip_port),
            path: self.uri.path(),
            query: self.uri.query(),
            headers: Fields::Map(&self.headers),
        }
    }

    fn edit(&mut self, e: &mut Effects) {
        for n in e.remove.drain(..) {
            self.headers.remove(n);
        }
        for (k, v) in e.set.drain(..) {
            self.headers.insert(k, v);
        }
        for (k, v) in e.add.drain(..) {
            self.headers.append(k, v);
        }
        if let Some(p) = e.path.take()
            && let Ok(pq) = http::uri::PathAndQuery::try_from(p)
        {
            let mut parts = self.uri.clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(u) = http::Uri::from_parts(parts) {
                self.uri = u;
            }
        }
    }
}

impl Edits {
    /// Folds one filter's changes into the list.
    pub fn apply(&mut self, e: &mut Effects) {
        for n in e.remove.drain(..) {
            self.remove(n);
        }
        for (k, v) in e.set.drain(..) {
            self.set(k, v);
        }
        for (k, v) in e.add.drain(..) {
            self.add(k, v);
        }
        if let Some(p) = e.path.take() {
            self.path = Some(p);
        }
    }
}

fn apply<H: Head>(req: &mut H, cx: &mut FilterCx, mut e: Effects) {
    req.edit(&mut e);
    if let Some(c) = e.consumer {
        cx.consumer = Some(c);
    }
    if let Some(c) = e.claims {
        cx.claims = Some(c);
    }
    cx.response.extend(e.response);
    if let Some(w) = e.wasm {
        cx.wasm.push(w);
    }
}

/// A JSON error response from a filter: `{"status":…,"reason":…,"message":…}`.
pub(crate) fn reply(status: StatusCode, reason: &'static str, message: &str) -> Response<GatewayBody> {
    let body = serde_json::json!({ "status": status.as_u16(), "reason": reason, "message": message });
    let mut rsp = Response::new(GatewayBody::full(Bytes::from(body.to_string())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}

/// Parses a header name and value from config (validated already; bad ones are skipped).
pub(crate) fn header_pair(k: &str, v: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((HeaderName::try_from(k).ok()?, HeaderValue::try_from(v).ok()?))
}
