//! One MCP server behind a route, as Weir's client: which revision it speaks (asked once with
//! `server/discover`, falling back to the `initialize` handshake, then to the legacy HTTP+SSE
//! transport), its sessions, and one exchange at a time whose answer is read as JSON or as an
//! event stream, message by message.
//!
//! Requests are built fresh from the server's own settings: nothing of the client's request
//! (its `Authorization` least of all) reaches the server. Request ids are Weir's own, so two
//! clients sharing a server session never collide; answers get the client's id back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use weir_config::mcp::{McpEra, McpServerSpec};

use super::wire::{self, SseReader};

/// Why a server gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No connection, or it broke.
    #[error("cannot reach it: {0}")]
    Unreachable(String),
    /// It did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// It answered with an HTTP error.
    #[error("it answered HTTP {0}")]
    Status(StatusCode),
    /// The session Weir held with it is gone (HTTP 404).
    #[error("its session ended")]
    SessionGone,
    /// What it sent is not MCP.
    #[error("its answer is not MCP: {0}")]
    Garbled(&'static str),
}

/// The revision a server was found to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// `initialize`, sessions.
    Sessionful,
    /// Routing headers, no sessions.
    Stateless,
    /// HTTP+SSE (2024-11-05): one event stream per server, messages posted beside it.
    Legacy,
}

/// A server and Weir's client for it.
#[derive(Debug)]
pub struct Server {
    /// Its name (the prefix of its tools).
    pub name: String,
    url: http::Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    configured: McpEra,
    era: OnceCell<Era>,
    /// A stateless server that also takes the handshake (its `server/discover` lists a
    /// handshake-era version): sessionful clients get sessions with it, so it can ask them
    /// things (sampling, elicitation) and keep per-session state (log level, subscriptions).
    dual: std::sync::atomic::AtomicBool,
    /// The session used for clients that have none of their own (stateless clients).
    shared: Mutex<Option<String>>,
    client: McpClient,
    ids: AtomicU64,
    /// Deadline for a list call or a handshake.
    pub quick: Duration,
    /// Set for a server Weir runs itself (`command`).
    stdio: Option<super::stdio::Stdio>,
    /// Weir's client for it should it speak the legacy transport (`url` servers).
    legacy: Option<super::legacy::Legacy>,
}

/// Weir's HTTP client for MCP servers: plain `http://`, or `https://` on the server's `tls`.
pub type McpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client for a server at `url` with these `tls` settings (the system's roots when none).
/// Only an `https://` server gets a TLS config: the system's roots are read for it alone.
fn client(url: &str, tls: Option<&weir_config::spec::UpstreamTlsSpec>) -> Result<McpClient, crate::tls::TlsError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.enforce_http(false);
    let cfg = match url.starts_with("https://") {
        true => crate::tls::client_config(tls.unwrap_or(&Default::default()), false)?,
        // Never used for TLS (the URL and any endpoint on its origin are http://); trusting
        // nothing, it would fail closed.
        false => crate::tls::untrusting_client_config()?,
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(without_alpn(cfg)).https_or_http();
    let https = match tls.and_then(|t| t.sni.clone()) {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name)
                .map_err(|e| crate::tls::TlsError::File { path: "sni".into(), reason: e.to_string() })?;
            let fixed = hyper_rustls::FixedServerNameResolver::new(name);
            https.with_server_name_resolver(fixed).enable_http1().wrap_connector(http)
        }
        None => https.enable_http1().wrap_connector(http),
    };
    Ok(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(https))
}

/// The connector offers its own ALPN (it refuses a config that has some).
fn without_alpn(mut cfg: rustls::ClientConfig) -> rustls::ClientConfig {
    cfg.alpn_protocols.clear();
    cfg
}

/// The messages of one answer, as they arrive.
#[derive(Debug)]
pub struct Answer {
    body: Option<Incoming>,
    /// A stdio server's messages for this request.
    chan: Option<tokio::sync::mpsc::Receiver<Value>>,
    sse: Option<SseReader>,
    queued: std::collections::VecDeque<Value>,
    /// The `Mcp-Session-Id` the server gave, if any.
    pub session: Option<String>,
    /// Whether it streams (an event stream) rather than answering once (JSON).
    pub streaming: bool,
}

impl Answer {
    /// The next message; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Value>, ServerError> {
        loop {
            if let Some(v) = self.queued.pop_front() {
                return Ok(Some(v));
            }
            if let Some(c) = self.chan.as_mut() {
                return Ok(c.recv().await);
            }
            let Some(body) = self.body.as_mut() else { return Ok(None) };
            let Some(frame) = body.frame().await else {
                self.body = None;
                continue;
            };
            let frame = frame.map_err(|e| ServerError::Unreachable(e.to_string()))?;
            let Ok(data) = frame.into_data() else { continue };
            match &mut self.sse {
                Some(r) => self.queued.extend(r.push(&data).map_err(|_| ServerError::Garbled("an endless event"))?),
                None => return Err(ServerError::Garbled("a JSON answer read as a stream")),
            }
        }
    }

    /// Reads until the answer to `id` (other messages are dropped).
    pub async fn response(mut self, id: &Value) -> Result<Value, ServerError> {
        while let Some(m) = self.next().await? {
            if m.get("id") == Some(id) && (m.get("result").is_some() || m.get("error").is_some()) {
                return Ok(m);
            }
        }
        Err(ServerError::Garbled("the stream ended without an answer"))
    }
}

impl Server {
    /// Weir's client for `spec`; `quick` bounds list calls and handshakes. Fails when its
    /// `tls` settings make no client config.
    pub fn new(spec: &McpServerSpec, quick: Duration) -> Result<Self, crate::tls::TlsError> {
        let headers: Vec<(HeaderName, HeaderValue)> = spec
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((HeaderName::try_from(k.as_str()).ok()?, HeaderValue::try_from(v.as_str()).ok()?))
            })
            .collect();
        let client = client(spec.url.as_deref().unwrap_or(""), spec.tls.as_ref())?;
        let url: http::Uri = spec.url.as_deref().and_then(|u| u.parse().ok()).unwrap_or_default();
        let stdio = (!spec.command.is_empty()).then(|| super::stdio::Stdio::new(&spec.name, &spec.command));
        Ok(Self {
            name: spec.name.clone(),
            legacy: stdio
                .is_none()
                .then(|| super::legacy::Legacy::new(&spec.name, url.clone(), headers.clone(), client.clone())),
            url,
            stdio,
            headers,
            configured: spec.era,
            era: OnceCell::new(),
            dual: std::sync::atomic::AtomicBool::new(false),
            shared: Mutex::new(None),
            client,
            ids: AtomicU64::new(1),
            quick,
        })
    }

    /// A fresh request id of Weir's.
    pub fn next_id(&self) -> Value {
        json!(format!("weir-{}", self.ids.fetch_add(1, Ordering::Relaxed)))
    }

    /// The revision it speaks, asked once (a server that cannot be reached is asked again
    /// next time).
    pub async fn era(&self) -> Result<Era, ServerError> {
        if self.stdio.is_some() {
            return Ok(Era::Sessionful);
        }
        match self.configured {
            McpEra::Sessionful => return Ok(Era::Sessionful),
            McpEra::Stateless => return Ok(Era::Stateless),
            McpEra::Legacy => return Ok(Era::Legacy),
            McpEra::Auto => {}
        }
        self.era
            .get_or_try_init(|| async {
                let id = self.next_id();
                let discover = json!({"jsonrpc": "2.0", "id": id, "method": "server/discover", "params": {}});
                match self.exchange(&discover, Era::Stateless, None).await {
                    Ok(a) => match a.response(&id).await {
                        Ok(m) if m.get("result").is_some() => {
                            let versions = m.pointer("/result/supportedVersions").and_then(Value::as_array);
                            let listed =
                                versions.is_some_and(|v| v.iter().any(|v| wire::HANDSHAKE.iter().any(|h| v == h)));
                            // Servers that serve both on one endpoint may list only the new
                            // one: a handshake, ended at once, tells.
                            let dual = listed || self.try_handshake().await;
                            self.dual.store(dual, Ordering::Relaxed);
                            Ok(Era::Stateless)
                        }
                        Ok(_) | Err(ServerError::Garbled(_)) => Ok(Era::Sessionful),
                        Err(e) => Err(e),
                    },
                    // A URL that takes no POST may be a legacy event stream.
                    Err(ServerError::Status(s)) if s.is_client_error() && self.speaks_legacy().await => Ok(Era::Legacy),
                    Err(ServerError::Status(_) | ServerError::Garbled(_)) => Ok(Era::Sessionful),
                    Err(e) => Err(e),
                }
            })
            .await
            .copied()
    }

    async fn speaks_legacy(&self) -> bool {
        match &self.legacy {
            Some(l) => l.probe().await,
            None => false,
        }
    }

    /// Whether a server found stateless also takes `initialize` (the session is ended).
    async fn try_handshake(&self) -> bool {
        match self.initialize(&json!({})).await {
            Ok(session) => {
                self.end(&session).await;
                true
            }
            Err(_) => false,
        }
    }

    /// The revision to speak for a client of the sessionful revision (`sessionful`) or not.
    pub async fn era_for(&self, sessionful: bool) -> Result<Era, ServerError> {
        match self.era().await? {
            Era::Stateless if sessionful && self.dual.load(Ordering::Relaxed) => Ok(Era::Sessionful),
            era => Ok(era),
        }
    }

    /// Starts a session (sessionful servers): `initialize` with the client's `capabilities`,
    /// then `notifications/initialized`.
    pub async fn initialize(&self, capabilities: &Value) -> Result<String, ServerError> {
        let id = self.next_id();
        let init = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
            "protocolVersion": wire::SESSIONFUL,
            "capabilities": capabilities,
            "clientInfo": {"name": "weir", "version": env!("CARGO_PKG_VERSION")},
        }});
        let a = self.exchange(&init, Era::Sessionful, None).await?;
        let session = a.session.clone().ok_or(ServerError::Garbled("initialize gave no Mcp-Session-Id"))?;
        let m = a.response(&id).await?;
        if m.get("result").is_none() {
            return Err(ServerError::Garbled("initialize was refused"));
        }
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.exchange(&done, Era::Sessionful, Some(&session)).await?;
        Ok(session)
    }

    /// The session for clients without one of their own, started when first needed;
    /// `renew` replaces one the server has ended.
    pub async fn shared_session(&self, renew: bool) -> Result<String, ServerError> {
        if !renew && let Some(s) = self.shared.lock().clone() {
            return Ok(s);
        }
        let s = self.initialize(&json!({})).await?;
        *self.shared.lock() = Some(s.clone());
        Ok(s)
    }

    /// Ends a session (best effort).
    pub async fn end(&self, session: &str) {
        let req = self.request(Method::DELETE, Era::Sessionful, Some(session), None, Bytes::new());
        let _ = tokio::time::timeout(self.quick, self.client.request(req)).await;
    }

    /// Whether Weir holds sessions with it for a client of the sessionful revision or not
    /// (sessionful HTTP servers; a stdio server's process is its one session).
    pub async fn has_sessions(&self, sessionful: bool) -> Result<bool, ServerError> {
        Ok(self.stdio.is_none() && self.era_for(sessionful).await? == Era::Sessionful)
    }

    /// Sends `msg` to a server whose answers come out of band (stdio, legacy event stream);
    /// a request's answer (and its progress, when it asked for some) arrive as a stream of
    /// messages.
    async fn exchange_linked(&self, msg: &Value) -> Result<Answer, ServerError> {
        let id = msg.get("id").and_then(Value::as_str);
        let msg = envelope(msg, Era::Sessionful);
        let chan = match (&self.stdio, &self.legacy) {
            (Some(stdio), _) => stdio.send(&msg, id).await?,
            (None, Some(legacy)) => legacy.send(&msg, id, self.quick).await?,
            (None, None) => return Err(ServerError::Unreachable("no transport".into())),
        };
        let streaming = msg.pointer("/params/_meta/progressToken").is_some();
        let chan = Some(chan).filter(|_| id.is_some());
        Ok(Answer { body: None, chan, sse: None, queued: Default::default(), session: None, streaming })
    }

    /// Sends `msg` in `era` (with `session` when sessionful); the answer's messages follow.
    pub async fn exchange(&self, msg: &Value, era: Era, session: Option<&str>) -> Result<Answer, ServerError> {
        if self.stdio.is_some() || era == Era::Legacy {
            return self.exchange_linked(msg).await;
        }
        let routing = (era == Era::Stateless).then(|| routing_headers(msg)).flatten();
        let body = Bytes::from(serde_json::to_vec(&envelope(msg, era)).unwrap_or_default());
        let req = self.request(Method::POST, era, session, routing, body);
        let rsp = tokio::time::timeout(self.quick.max(Duration::from_secs(30)), self.client.request(req))
            .await
            .map_err(|_| ServerError::Timeout(self.quick.max(Duration::from_secs(30))))?
            .map_err(|e| ServerError::Unreachable(format!("{e:?}")))?;
        let status = rsp.status();
        if status == StatusCode::NOT_FOUND && session.is_some() {
            return Err(ServerError::SessionGone);
        }
        let session = rsp.headers().get(wire::SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let sse = rsp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if status == StatusCode::ACCEPTED {
            return Ok(Answer {
                body: None,
                chan: None,
                sse: None,
                queued: Default::default(),
                session,
                streaming: false,
            });
        }
        if sse && status.is_success() {
            let body = Some(rsp.into_body());
            return Ok(Answer {
                body,
                chan: None,
                sse: Some(SseReader::default()),
                queued: Default::default(),
                session,
                streaming: true,
            });
        }
        // A JSON answer, or a JSON-RPC error with a 4xx status (stateless servers map codes
        // to statuses): read it whole, bounded.
        let bytes = http_body_util::Limited::new(rsp.into_body(), wire::MAX_EVENT)
            .collect()
            .await
            .map_err(|_| ServerError::Garbled("an answer too large or cut short"))?
            .to_bytes();
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.get("jsonrpc").is_some() => {
                Ok(Answer { body: None, chan: None, sse: None, queued: [v].into(), session, streaming: false })
            }
            _ if !status.is_success() => Err(ServerError::Status(status)),
            _ => Err(ServerError::Garbled("a body that is not JSON-RPC")),
        }
    }

    fn request(
        &self,
        method: Method,
        era: Era,
        session: Option<&str>,
        routing: Option<(String, Option<String>)>,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(method)
            .uri(self.url.clone())
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header(header::CONTENT_TYPE, "application/json");
        match era {
            Era::Stateless => b = b.header(wire::VERSION_HEADER, wire::STATELESS),
            Era::Sessionful if session.is_some() => b = b.header(wire::VERSION_HEADER, wire::SESSIONFUL),
            Era::Sessionful | Era::Legacy => {}
        }
        if let Some(s) = session {
            b = b.header(wire::SESSION_HEADER, s);
        }
        if let Some((m, name)) = routing {
            b = b.header(wire::METHOD_HEADER, m);
            if let Some(n) = name {
                b = b.header(wire::NAME_HEADER, n);
            }
        }
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        b.body(Full::new(body)).unwrap_or_default()
    }
}

/// `Mcp-Method` and `Mcp-Name` for a stateless request.
fn routing_headers(msg: &Value) -> Option<(String, Option<String>)> {
    let method = msg.get("method")?.as_str()?.to_owned();
    let key = if method == "resources/read" { "uri" } else { "name" };
    let name = matches!(method.as_str(), "tools/call" | "prompts/get" | "resources/read")
        .then(|| msg.get("params").and_then(|p| p.get(key)).and_then(Value::as_str).map(str::to_owned))
        .flatten();
    Some((method, name))
}

/// `msg` with the `_meta` envelope its era wants: the stateless revision's three keys added,
/// or removed for a sessionful server.
fn envelope(msg: &Value, era: Era) -> Value {
    let mut msg = msg.clone();
    if msg.get("method").is_none() {
        return msg;
    }
    let Some(params) = msg.as_object_mut().map(|o| o.entry("params").or_insert_with(|| json!({}))) else {
        return msg;
    };
    let Some(params) = params.as_object_mut() else { return msg };
    let meta = params.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        match era {
            Era::Stateless => {
                meta.insert(wire::META_VERSION.into(), json!(wire::STATELESS));
                meta.entry(wire::META_CAPABILITIES).or_insert_with(|| json!({}));
                meta.entry(wire::META_CLIENT)
                    .or_insert_with(|| json!({"name": "weir", "version": env!("CARGO_PKG_VERSION")}));
            }
            Era::Sessionful | Era::Legacy => {
                meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
            }
        }
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
    msg
}
