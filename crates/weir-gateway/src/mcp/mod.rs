//! MCP routes: Weir terminates the Model Context Protocol on the client's side, in either
//! revision (the sessionful 2025-11-25 with `initialize` and `Mcp-Session-Id`, or the
//! stateless 2026-07-28 with routing headers), and speaks each server's own revision on the
//! other, so a client of either era reaches a server of either era.
//!
//! Owns: the HTTP side of an MCP endpoint (POST, GET, DELETE; the era of each request; the
//! stateless revision's header checks; sealed session ids). [`federation`] lists and calls
//! across servers, [`server`] is the client for one server ([`legacy`] for HTTP+SSE servers,
//! [`stdio`] for servers that are commands, both sharing [`link`]), [`call`] carries a call's
//! stream (resumption, cancellation), `streams` the GET and listen streams, [`sse_clients`]
//! the legacy transport's clients, [`policy`] decides tool access, [`session`] seals ids,
//! `answers` builds the HTTP answers, [`wire`] holds the message and event-stream formats.

mod answers;
pub mod auth;
pub mod call;
pub mod federation;
pub mod legacy;
pub mod link;
pub mod policy;
pub mod server;
pub mod session;
pub mod sse_clients;
pub mod stdio;
mod streams;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use parking_lot::RwLock;
use serde_json::{Value, json};
use weir_config::mcp::{McpSpec, NamePolicy};

use crate::body::GatewayBody;
use crate::filter::BuildError;
use crate::metrics::Metrics;
use answers::{
    accepted, allow_only, event_stream, json_response, missing_session, plain, respond, rpc_error, session_not_found,
    with_session,
};
use federation::{Kind, Reply, Scope};
use policy::{Caller, Policy};
use server::Server;
use session::{Sealer, Session};
use wire::{Code, Message};

/// Largest request body an MCP endpoint reads.
const MAX_REQUEST: usize = 4 << 20;

/// What an MCP request asked, for the access log and the request's span (a response
/// extension).
#[derive(Clone, Debug)]
pub struct Called {
    /// The JSON-RPC method.
    pub method: String,
    /// The tool, prompt or resource it named.
    pub name: Option<String>,
}

/// Exposed name to (server index, the server's own name).
type Owners = HashMap<String, (usize, String)>;

/// A compiled MCP route.
pub struct McpRoute {
    /// What it was built from (an unchanged spec keeps the route, its sessions and caches).
    pub spec: McpSpec,
    route: Arc<str>,
    servers: Vec<Arc<Server>>,
    sealer: Sealer,
    policy: Policy,
    names: NamePolicy,
    /// Per kind, exposed name to (server, the server's own name), from the last list.
    names_seen: RwLock<HashMap<federation::Kind, Owners>>,
    /// Upstream sessions begun after the client's id was sealed, by (client session, server).
    late: moka::sync::Cache<(String, usize), String>,
    /// Sessions a client ended here (DELETE).
    ended: moka::sync::Cache<String, ()>,
    /// Streamed calls of sessionful clients, by [`call::key`]: to resume or cancel them.
    calls: moka::sync::Cache<u64, call::Handle>,
    /// Requests servers made of sessionful clients during calls, by (session, the id Weir
    /// gave the client): the server and the id it gave.
    asked: moka::sync::Cache<(String, String), (usize, Value)>,
    /// Servers' lists kept as long as their `ttlMs` allows, by (server, kind, client session
    /// when asked in one): until when, and the items.
    lists: moka::sync::Cache<federation::ListKey, (std::time::Instant, Arc<[Value]>)>,
    /// Legacy HTTP+SSE clients' open streams, by the key their endpoint names.
    legacy_clients: moka::sync::Cache<String, Arc<sse_clients::Open>>,
    metrics: Arc<Metrics>,
    /// `auth`: bearer tokens checked as a resource server.
    guard: Option<auth::Guard>,
    /// `tools.limits`: the tools each counts, and its counts.
    limits: Vec<(Vec<String>, crate::filter::limit::RateLimit)>,
    idle: Duration,
    keepalive: Duration,
    /// Bumped when the set of tools may have changed; session streams announce it. Shared
    /// with the route this one replaces, so streams opened before a reload hear of it.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Built to replace a route with other settings: announce once it serves.
    replaced: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for McpRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpRoute").field("route", &self.route).field("servers", &self.servers).finish_non_exhaustive()
    }
}

impl McpRoute {
    /// The route `name` for `spec`; fails when a tool limit or the token check cannot be
    /// built (the field under the route, and why).
    pub fn new(
        name: &str,
        spec: &McpSpec,
        metrics: &Arc<Metrics>,
        replaces: Option<&McpRoute>,
    ) -> Result<Self, (String, BuildError)> {
        let quick = spec.list_timeout.map_or(Duration::from_secs(5), |d| d.get());
        if spec.session_key.is_none() {
            tracing::warn!(
                route = name,
                "an MCP route has no session_key: its sessions end with this process and do not move between replicas"
            );
        }
        let idle = spec.idle_timeout.map_or(Duration::from_secs(300), |d| d.get());
        let mut limits = Vec::with_capacity(spec.tools.limits.len());
        for (i, l) in spec.tools.limits.iter().enumerate() {
            let counts = crate::filter::limit::RateLimit::new(
                &l.rate,
                &format!("{name}:mcp:{i}"),
                metrics.plugin_error_counter("mcp-tool-limit"),
            )
            .map_err(|e| (format!("mcp.tools.limits[{i}].rate"), e))?;
            limits.push((l.tools.clone(), counts));
        }
        let guard =
            spec.auth.as_ref().map(auth::Guard::new).transpose().map_err(|e| ("mcp.auth.verify".to_owned(), e))?;
        let mut servers = Vec::with_capacity(spec.servers.len());
        for (i, s) in spec.servers.iter().enumerate() {
            let server = Server::new(s, quick).map_err(|e| (format!("mcp.servers[{i}].tls"), BuildError::Tls(e)))?;
            servers.push(Arc::new(server));
        }
        Ok(Self {
            guard,
            spec: spec.clone(),
            route: name.into(),
            servers,
            sealer: Sealer::new(spec.session_key.as_deref()),
            policy: Policy::new(&spec.tools),
            names: spec.names,
            names_seen: RwLock::default(),
            late: moka::sync::Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(3600)).build(),
            ended: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(86_400)).build(),
            calls: moka::sync::Cache::new(100_000),
            asked: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(3600)).build(),
            legacy_clients: moka::sync::Cache::new(100_000),
            lists: moka::sync::Cache::new(10_000),
            metrics: metrics.clone(),
            limits,
            idle,
            // A keep-alive always goes out before the idle cut, however short the cut.
            keepalive: (idle / 2).min(Duration::from_secs(15)),
            changes: replaces.map_or_else(|| Arc::new(tokio::sync::watch::Sender::new(0)), |r| r.changes.clone()),
            replaced: std::sync::atomic::AtomicBool::new(replaces.is_some()),
        })
    }

    /// Called once the snapshot holding it serves: a route that replaced another tells the
    /// open session streams that the tools may have changed.
    pub fn serving(&self) {
        if self.replaced.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.announce();
        }
    }

    /// Tells every open session stream to list the tools again.
    fn announce(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// Where its protected resource metadata is served, when it checks tokens.
    pub fn metadata_path(&self) -> Option<String> {
        self.spec.auth.as_ref().map(weir_config::mcp::McpAuthSpec::metadata_path)
    }

    /// Its protected resource metadata (404 when it checks no tokens).
    pub fn metadata(&self) -> Response<GatewayBody> {
        match &self.guard {
            Some(g) => g.metadata(),
            None => plain(StatusCode::NOT_FOUND, "no metadata"),
        }
    }

    /// Answers one HTTP request to the endpoint.
    pub async fn serve(self: &Arc<Self>, parts: Parts, body: Incoming, mut caller: Caller) -> Response<GatewayBody> {
        if !self.origin_allowed(&parts) {
            let why = "Forbidden: this Origin may not call the MCP endpoint";
            return rpc_error(StatusCode::FORBIDDEN, &Value::Null, Code::InvalidRequest, why, None);
        }
        if let Some(g) = &self.guard {
            match g.check(&parts.headers).await {
                Ok(claims) => {
                    caller.consumer = claims.get("sub").and_then(Value::as_str).map(Arc::from).or(caller.consumer);
                    caller.claims = Some(claims);
                }
                Err(refused) => return refused,
            }
        }
        match parts.method {
            Method::POST => self.post(&parts, body, &caller).await,
            Method::GET => self.get(&parts.headers, parts.uri.path()),
            Method::DELETE => self.delete(&parts.headers).await,
            _ => allow_only(),
        }
    }

    /// A sessionful client's answer to a server's request: passed to that server; 202.
    async fn answered(&self, headers: &HeaderMap, answer: Value) -> Response<GatewayBody> {
        let Some(sid) = headers.get(wire::SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            let why = "Bad Request: an answer needs the session it belongs to";
            return rpc_error(StatusCode::BAD_REQUEST, &Value::Null, Code::InvalidRequest, why, None);
        };
        let Some(s) = self.open(sid) else { return session_not_found() };
        self.answer_server(&Scope::Session(sid.to_owned(), s), answer).await;
        accepted()
    }

    /// No `Origin`, the endpoint's own (scheme aside, the `Host` it was sent to), or a listed one.
    fn origin_allowed(&self, parts: &Parts) -> bool {
        let headers = &parts.headers;
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return headers.get(header::ORIGIN).is_none();
        };
        let own = origin.split_once("://").map(|(_, rest)| rest);
        // HTTP/2 has no Host field: the authority is in the URI.
        let host =
            headers.get(header::HOST).and_then(|v| v.to_str().ok()).or(parts.uri.authority().map(|a| a.as_str()));
        (own.is_some() && own == host) || self.spec.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    async fn post(self: &Arc<Self>, parts: &Parts, body: Incoming, caller: &Caller) -> Response<GatewayBody> {
        let headers = &parts.headers;
        let bytes = match http_body_util::Limited::new(body, MAX_REQUEST).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "the MCP request body is over 4 MiB or cut short"),
        };
        let msg = match Message::parse(&bytes) {
            Ok(m) => m,
            Err((Code::InvalidRequest, _)) if let Some(answer) = wire::response(&bytes) => {
                return self.answered(headers, answer).await;
            }
            Err((code, why)) => return rpc_error(StatusCode::BAD_REQUEST, &Value::Null, code, why, None),
        };
        let called = Called { method: msg.method.clone(), name: msg.routed_name().map(str::to_owned) };
        let legacy = sse_clients::stream_key(parts.uri.query()).filter(|_| !headers.contains_key(wire::SESSION_HEADER));
        let mut rsp = match legacy {
            Some(key) => self.post_legacy(key, msg, caller).await,
            None => self.answer(headers, msg, caller).await,
        };
        rsp.extensions_mut().insert(called);
        rsp
    }

    async fn answer(self: &Arc<Self>, headers: &HeaderMap, msg: Message, caller: &Caller) -> Response<GatewayBody> {
        let version = headers.get(wire::VERSION_HEADER).and_then(|v| v.to_str().ok());
        match version {
            None => self.sessionful(headers, msg, caller).await,
            Some(v) if wire::HANDSHAKE.contains(&v) => self.sessionful(headers, msg, caller).await,
            Some(wire::STATELESS) => self.stateless(headers, msg, caller).await,
            Some(v) => {
                let id = msg.id.unwrap_or(Value::Null);
                let data = json!({"supported": [wire::STATELESS, wire::SESSIONFUL], "requested": v});
                rpc_error(
                    StatusCode::BAD_REQUEST,
                    &id,
                    Code::UnsupportedVersion,
                    "Unsupported protocol version",
                    Some(data),
                )
            }
        }
    }

    /// The 2025-11-25 side: `initialize` seals a new session; everything else needs one.
    async fn sessionful(self: &Arc<Self>, headers: &HeaderMap, msg: Message, caller: &Caller) -> Response<GatewayBody> {
        let id = msg.id.clone().unwrap_or(Value::Null);
        if msg.method == "initialize" {
            return self.initialize(&id, &msg).await;
        }
        let Some(sid) = headers.get(wire::SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return missing_session();
        };
        let Some(s) = self.open(sid) else { return session_not_found() };
        let scope = Scope::Session(sid.to_owned(), s);
        with_session(self.dispatch(&scope, msg, caller).await, sid)
    }

    async fn initialize(&self, id: &Value, msg: &Message) -> Response<GatewayBody> {
        let (sid, answer) = self.begin(id, msg).await;
        with_session(json_response(StatusCode::OK, &answer), &sid)
    }

    /// Begins a session for `initialize`: its sealed id, and the answer.
    async fn begin(&self, id: &Value, msg: &Message) -> (String, Value) {
        let asked = msg.params.get("protocolVersion").and_then(Value::as_str).unwrap_or(wire::SESSIONFUL);
        let version = if wire::HANDSHAKE.contains(&asked) { asked } else { wire::SESSIONFUL };
        // The servers learn what the client can do (sampling, elicitation, roots).
        let capabilities = &msg.params.get("capabilities").cloned().unwrap_or_else(|| json!({}));
        // Every sessionful server gets its session now, so the sealed id carries them all and
        // any replica can continue; one that is down is begun later, when first needed.
        let begun = futures_util::future::join_all(self.servers.iter().map(|s| async move {
            match s.has_sessions(true).await {
                Ok(true) => s.initialize(capabilities).await.ok().map(|up| (s.name.clone(), up)),
                _ => None,
            }
        }))
        .await;
        let session = Session { version: version.to_owned(), upstream: begun.into_iter().flatten().collect() };
        let sid = self.sealer.seal(&session);
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": true}, "prompts": {}, "resources": {}},
            "serverInfo": {"name": "weir", "version": env!("CARGO_PKG_VERSION")},
        });
        (sid, wire::result(id, &result))
    }

    fn open(&self, sid: &str) -> Option<Session> {
        if self.ended.contains_key(sid) {
            return None;
        }
        self.sealer.open(sid)
    }

    /// The 2026-07-28 side: the routing headers must say what the body says.
    async fn stateless(self: &Arc<Self>, headers: &HeaderMap, msg: Message, caller: &Caller) -> Response<GatewayBody> {
        let id = msg.id.clone().unwrap_or(Value::Null);
        if let Err((code, why)) = check_routing(headers, &msg) {
            return rpc_error(StatusCode::BAD_REQUEST, &id, code, why, None);
        }
        self.dispatch(&Scope::Stateless, msg, caller).await
    }

    async fn dispatch(self: &Arc<Self>, scope: &Scope, msg: Message, caller: &Caller) -> Response<GatewayBody> {
        match self.reply(scope, msg, caller).await {
            Some(reply) => respond(reply, matches!(scope, Scope::Stateless)),
            None => accepted(),
        }
    }

    /// What Weir answers `msg` with; `None` for a notification.
    async fn reply(self: &Arc<Self>, scope: &Scope, msg: Message, caller: &Caller) -> Option<Reply> {
        let Some(id) = msg.id.clone() else {
            // Notifications end here (Weir speaks for itself to the servers); a cancellation
            // reaches the call it names.
            if msg.method == "notifications/cancelled" {
                self.cancel(scope, &msg.params);
            }
            return None;
        };
        let stateless = matches!(scope, Scope::Stateless);
        Some(match msg.method.as_str() {
            // Methods the stateless revision removed.
            "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe" if stateless => {
                Reply::Error(id.clone(), Code::MethodNotFound, "Method not found".into())
            }
            "ping" => Reply::Json(wire::result(&id, &json!({}))),
            "server/discover" if stateless => Reply::Json(wire::result(&id, &discover())),
            "subscriptions/listen" if stateless => Reply::Stream(self.subscribe(&id, &msg.params)),
            m @ ("tools/list" | "prompts/list" | "resources/list" | "resources/templates/list") => {
                let kind = match m {
                    "tools/list" => Kind::Tools,
                    "prompts/list" => Kind::Prompts,
                    "resources/list" => Kind::Resources,
                    _ => Kind::Templates,
                };
                let mut result = json!({kind.key(): self.list(kind, scope, caller).await});
                if stateless {
                    // What a caller sees depends on who it is (tool policy): never shared.
                    result["resultType"] = json!("complete");
                    result["ttlMs"] = json!(0);
                    result["cacheScope"] = json!("private");
                }
                Reply::Json(wire::result(&id, &result))
            }
            m @ "tools/call" => self.call(Kind::Tools, m, scope, caller, id, msg.params).await,
            m @ "prompts/get" => self.call(Kind::Prompts, m, scope, caller, id, msg.params).await,
            m @ ("resources/read" | "resources/subscribe" | "resources/unsubscribe") => {
                self.call(Kind::Resources, m, scope, caller, id, msg.params).await
            }
            "completion/complete" => self.complete(scope, caller, id, msg.params).await,
            "logging/setLevel" => self.set_level(scope, id, &msg.params).await,
            _ => Reply::Error(id.clone(), Code::MethodNotFound, "Method not found".into()),
        })
    }

    /// DELETE: ends the session here and with every server.
    async fn delete(&self, headers: &HeaderMap) -> Response<GatewayBody> {
        let Some(sid) = headers.get(wire::SESSION_HEADER).and_then(|v| v.to_str().ok()) else { return allow_only() };
        let Some(s) = self.open(sid) else { return session_not_found() };
        self.ended.insert(sid.to_owned(), ());
        for srv in &self.servers {
            if let Some(up) = s.upstream.get(&srv.name) {
                srv.end(up).await;
            }
        }
        Response::new(GatewayBody::empty())
    }
}

/// What a stateless client learns from `server/discover`.
fn discover() -> Value {
    json!({
        // Both revisions are served on this endpoint; errors about versions list the same.
        "supportedVersions": [wire::STATELESS, wire::SESSIONFUL],
        "capabilities": {"tools": {"listChanged": true}, "prompts": {}, "resources": {}},
        "ttlMs": 0,
        "cacheScope": "private",
        "resultType": "complete",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "weir", "version": env!("CARGO_PKG_VERSION")}},
    })
}

/// The stateless revision's rule: `Mcp-Method`, `Mcp-Name` and the version header say what
/// the body says, once each.
fn check_routing(headers: &HeaderMap, msg: &Message) -> Result<(), (Code, &'static str)> {
    let one = |name: &str| {
        let mut all = headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (_, Some(_)) => Err((Code::HeaderMismatch, "a routing header appears more than once")),
            (v, None) => Ok(v.and_then(|v| v.to_str().ok()).map(str::trim)),
        }
    };
    if one(wire::METHOD_HEADER)? != Some(msg.method.as_str()) {
        return Err((Code::HeaderMismatch, "mcp-method header does not match the request body's method"));
    }
    let named = matches!(msg.method.as_str(), "tools/call" | "prompts/get" | "resources/read");
    if named && one(wire::NAME_HEADER)? != msg.routed_name() {
        return Err((Code::HeaderMismatch, "mcp-name header does not match the request body's 'name' parameter"));
    }
    if msg.id.is_some() {
        let Some(v) = msg.meta(wire::META_VERSION).and_then(Value::as_str) else {
            return Err((Code::InvalidParams, "params._meta must carry the protocol version and client capabilities"));
        };
        if v != wire::STATELESS {
            return Err((
                Code::HeaderMismatch,
                "mcp-protocol-version header does not match the request envelope's protocol version",
            ));
        }
        if msg.meta(wire::META_CAPABILITIES).is_none() {
            return Err((Code::InvalidParams, "params._meta must carry the client's capabilities"));
        }
    }
    Ok(())
}
