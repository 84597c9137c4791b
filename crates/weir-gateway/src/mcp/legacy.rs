//! A server of the legacy HTTP+SSE transport (revision 2024-11-05): Weir opens its event
//! stream (GET), learns from the first `endpoint` event where to post messages, and reads
//! every answer from that stream. The stream is the session, so one per server per gateway is
//! shared by every client, as with a stdio server; it is opened when first needed, says
//! `initialize` once, and is opened again after it ends. A call in flight when it ends ends
//! as unavailable.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::link::Waiters;
use super::server::ServerError;
use super::wire::{self, SseReader};

/// How long the stream may take to name its endpoint.
const ENDPOINT_WAIT: Duration = Duration::from_secs(5);

/// Weir's client for one legacy server.
#[derive(Debug)]
pub struct Legacy {
    name: String,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: super::server::McpClient,
    open: tokio::sync::Mutex<Option<Open>>,
}

/// An open stream and where its messages go.
#[derive(Debug)]
struct Open {
    endpoint: Uri,
    waiters: Waiters,
    /// Closed when the stream ends.
    ended: mpsc::Sender<()>,
}

impl Open {
    fn alive(&self) -> bool {
        !self.ended.is_closed()
    }
}

impl Legacy {
    /// The server `name` whose event stream is at `url`.
    pub fn new(
        name: &str,
        url: Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        client: super::server::McpClient,
    ) -> Self {
        Self { name: name.to_owned(), url, headers, client, open: tokio::sync::Mutex::default() }
    }

    /// Whether `url` serves the legacy transport: its event stream names an endpoint.
    pub async fn probe(&self) -> bool {
        let mut open = self.open.lock().await;
        if open.as_ref().is_some_and(Open::alive) {
            return true;
        }
        match self.connect().await {
            Ok(o) => {
                *open = Some(o);
                true
            }
            Err(_) => false,
        }
    }

    /// Sends `msg`; its answer and progress (keyed by `id`) arrive on the returned channel.
    pub async fn send(
        &self,
        msg: &Value,
        id: Option<&str>,
        quick: Duration,
    ) -> Result<mpsc::Receiver<Value>, ServerError> {
        let mut open = self.open.lock().await;
        if !open.as_ref().is_some_and(Open::alive) {
            *open = Some(self.connect().await?);
        }
        let o = open.as_ref().ok_or_else(|| ServerError::Unreachable("not open".into()))?;
        let rx = match id {
            Some(id) => o.waiters.expect(id),
            None => mpsc::channel(1).1,
        };
        let (endpoint, waiters) = (o.endpoint.clone(), o.waiters.clone());
        if let Err(e) = self.post(&endpoint, msg, quick).await {
            // Said on a stream that no longer takes messages: open another next time.
            *open = None;
            waiters.release();
            return Err(e);
        }
        Ok(rx)
    }

    /// Opens the stream, waits for its endpoint, reads it in a task, and says `initialize`.
    async fn connect(&self) -> Result<Open, ServerError> {
        let req = self.request(Method::GET, &self.url).header(header::ACCEPT, "text/event-stream");
        let req = req.body(Full::new(Bytes::new())).unwrap_or_default();
        let rsp = tokio::time::timeout(ENDPOINT_WAIT, self.client.request(req))
            .await
            .map_err(|_| ServerError::Timeout(ENDPOINT_WAIT))?
            .map_err(|e| ServerError::Unreachable(format!("{e:?}")))?;
        if rsp.status() != StatusCode::OK {
            return Err(ServerError::Status(rsp.status()));
        }
        let mut body = rsp.into_body();
        let mut sse = SseReader::default();
        let endpoint = tokio::time::timeout(ENDPOINT_WAIT, async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ServerError::Unreachable(e.to_string()))?;
                let Ok(data) = frame.into_data() else { continue };
                // Nothing is asked before the endpoint is known, so nothing earlier is awaited.
                sse.push(&data).map_err(|_| ServerError::Garbled("an endless event"))?;
                if let Some(e) = sse.endpoint.take() {
                    return Ok(e);
                }
            }
            Err(ServerError::Garbled("the event stream ended without naming its endpoint"))
        })
        .await
        .map_err(|_| ServerError::Garbled("the event stream named no endpoint"))??;
        let endpoint = self.resolve(&endpoint)?;
        let waiters = Waiters::default();
        // The task holds the receiver: the sender reads closed once the stream has ended.
        let (ended, alive) = mpsc::channel(1);
        tokio::spawn(read(body, sse, waiters.clone(), self.name.clone(), alive));
        let open = Open { endpoint, waiters, ended };
        self.initialize(&open).await?;
        tracing::info!(server = %self.name, endpoint = %open.endpoint, "opened a legacy MCP event stream");
        Ok(open)
    }

    /// `initialize` and `notifications/initialized` on a new stream.
    async fn initialize(&self, open: &Open) -> Result<(), ServerError> {
        let id = "weir-init";
        let mut rx = open.waiters.expect(id);
        let init = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
            "protocolVersion": wire::HANDSHAKE[0], "capabilities": {},
            "clientInfo": {"name": "weir", "version": env!("CARGO_PKG_VERSION")}}});
        self.post(&open.endpoint, &init, ENDPOINT_WAIT).await?;
        let answered = tokio::time::timeout(ENDPOINT_WAIT, rx.recv()).await;
        if !matches!(answered, Ok(Some(ref a)) if a.get("result").is_some()) {
            return Err(ServerError::Garbled("initialize was not answered"));
        }
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.post(&open.endpoint, &done, ENDPOINT_WAIT).await
    }

    /// Posts one message to the endpoint; the server accepts it (its answer comes on the stream).
    async fn post(&self, endpoint: &Uri, msg: &Value, quick: Duration) -> Result<(), ServerError> {
        let body = Bytes::from(serde_json::to_vec(msg).unwrap_or_default());
        let req = self.request(Method::POST, endpoint).header(header::CONTENT_TYPE, "application/json");
        let req = req.body(Full::new(body)).unwrap_or_default();
        let wait = quick.max(Duration::from_secs(5));
        let rsp = tokio::time::timeout(wait, self.client.request(req))
            .await
            .map_err(|_| ServerError::Timeout(wait))?
            .map_err(|e| ServerError::Unreachable(format!("{e:?}")))?;
        match rsp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(ServerError::SessionGone),
            s => Err(ServerError::Status(s)),
        }
    }

    /// A request to `uri` with the server's own `headers`.
    fn request(&self, method: Method, uri: &Uri) -> http::request::Builder {
        self.headers.iter().fold(Request::builder().method(method).uri(uri.clone()), |b, (k, v)| b.header(k, v))
    }

    /// The endpoint as an absolute URL on the stream's own origin (one elsewhere is refused:
    /// a server may not send Weir's messages to another host).
    fn resolve(&self, endpoint: &str) -> Result<Uri, ServerError> {
        let refused = ServerError::Garbled("the endpoint event named another origin or no URL");
        let uri: Uri = endpoint.parse().map_err(|_| ServerError::Garbled("the endpoint event is not a URL"))?;
        if uri.authority().is_some() {
            return if uri.authority() == self.url.authority() && uri.scheme() == self.url.scheme() {
                Ok(uri)
            } else {
                Err(refused)
            };
        }
        let path = uri.path_and_query().filter(|p| p.as_str().starts_with('/')).ok_or(refused)?;
        let mut parts = self.url.clone().into_parts();
        parts.path_and_query = Some(path.clone());
        Uri::from_parts(parts).map_err(|_| ServerError::Garbled("the endpoint event is not a URL"))
    }
}

/// Reads the stream's messages to their waiters; at its end every waiter is let go.
async fn read(
    mut body: hyper::body::Incoming,
    mut sse: SseReader,
    waiters: Waiters,
    name: String,
    _alive: mpsc::Receiver<()>,
) {
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else { continue };
        let Ok(messages) = sse.push(&data) else { break };
        for m in messages {
            waiters.deliver(m).await;
        }
    }
    tracing::warn!(server = %name, "a legacy MCP server's event stream ended; it is opened again when next needed");
    waiters.release();
}
