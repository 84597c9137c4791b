//! The event streams an MCP endpoint holds open beside its calls: a sessionful client's GET
//! (server-initiated messages: `list_changed`, keep-alives), its resumption of a call's stream
//! with `Last-Event-ID`, its cancellation of a call, and a stateless client's
//! `subscriptions/listen`.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use serde_json::{Value, json};

use super::answers::{allow_only, event_stream, missing_session, rpc_error, session_not_found, with_session};
use super::federation::Scope;
use super::wire::{self, Code};
use super::{McpRoute, call};
use crate::body::GatewayBody;

impl McpRoute {
    /// A stateless client's `subscriptions/listen`: the acknowledgement first, then
    /// `tools/list_changed` (the one kind Weir announces, when asked for), each tagged with the
    /// subscription's id.
    pub(super) fn subscribe(&self, id: &Value, params: &Value) -> tokio::sync::mpsc::Receiver<Bytes> {
        let tools = params.pointer("/notifications/toolsListChanged") == Some(&Value::Bool(true));
        let meta = json!({"io.modelcontextprotocol/subscriptionId": id});
        let honored = if tools { json!({"toolsListChanged": true}) } else { json!({}) };
        let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": honored, "_meta": meta}});
        let changed =
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"_meta": meta}});
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // A fresh channel has room for its first event.
        let _ = tx.try_send(wire::sse_event(&ack));
        tokio::spawn(self.listen(tx, tools.then(|| wire::sse_event(&changed))));
        rx
    }

    /// A sessionful client's `notifications/cancelled`: the streamed call it names stops.
    pub(super) fn cancel(&self, scope: &Scope, params: &Value) {
        let (Scope::Session(sid, _), Some(id)) = (scope, params.get("requestId")) else { return };
        if let Some(h) = self.calls.get(&call::key(sid, id)).filter(|h| *h.sid == **sid) {
            let _ = h.control.try_send(call::Control::Cancel);
        }
    }

    /// GET with `Last-Event-ID`: the broken stream of a call in this session, from the
    /// event after that one.
    pub(super) fn resume(&self, sid: &str, last: &str) -> Response<GatewayBody> {
        let handle = call::parse_event_id(last)
            .and_then(|(key, seq)| Some((self.calls.get(&key).filter(|h| &*h.sid == sid)?, seq)));
        let Some((h, after)) = handle else {
            let why = "Bad Request: no stream to resume with that Last-Event-ID (it ended, or runs on another replica)";
            return rpc_error(StatusCode::BAD_REQUEST, &Value::Null, Code::InvalidRequest, why, None);
        };
        let (to, rx) = tokio::sync::mpsc::channel(16);
        if h.control.try_send(call::Control::Resume { after, to }).is_err() {
            return rpc_error(StatusCode::CONFLICT, &Value::Null, Code::InvalidRequest, "the stream is busy", None);
        }
        with_session(event_stream(rx), sid)
    }

    /// GET: the session's stream of server-initiated messages: `tools/list_changed` when a
    /// server's tools come or go or the route's servers change, keep-alive comments between.
    pub(super) fn get(&self, headers: &HeaderMap, path: &str) -> Response<GatewayBody> {
        if headers.get(wire::VERSION_HEADER).and_then(|v| v.to_str().ok()) == Some(wire::STATELESS) {
            return allow_only();
        }
        let wants_events =
            headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
        if wants_events && !headers.contains_key(wire::SESSION_HEADER) {
            // No session to listen on: a client of the legacy HTTP+SSE transport.
            return self.open_legacy(path);
        }
        let Some(sid) = headers.get(wire::SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return missing_session();
        };
        if self.open(sid).is_none() {
            return session_not_found();
        }
        if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
            return self.resume(sid, last);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(self.listen(tx, Some(wire::tools_changed())));
        with_session(event_stream(rx), sid)
    }

    /// Feeds a stream of server-initiated messages until it closes: `changed` whenever the
    /// tools may have changed (never, if `None`), keep-alive comments between.
    pub(super) fn listen(
        &self,
        tx: tokio::sync::mpsc::Sender<Bytes>,
        changed: Option<Bytes>,
    ) -> impl Future<Output = ()> + use<> {
        let every = self.keepalive;
        let mut changes = self.changes.subscribe();
        changes.mark_unchanged();
        async move {
            loop {
                let send = tokio::select! {
                    () = tx.closed() => return,
                    r = changes.changed(), if changed.is_some() => match (r, &changed) {
                        (Ok(()), Some(c)) => c.clone(),
                        _ => return,
                    },
                    () = tokio::time::sleep(every) => Bytes::from_static(wire::KEEP_ALIVE),
                };
                if tx.send(send).await.is_err() {
                    return;
                }
            }
        }
    }
}
