//! Clients of the legacy HTTP+SSE transport (2024-11-05): a GET without a session that
//! accepts an event stream opens one, whose first event names where to post (this path with
//! `?session_id=KEY`). Each message posted there is accepted (202) and answered on the
//! stream, progress included. `initialize` seals a session like any other, which the stream
//! keeps; the stream itself lives on the replica that opened it, so a load balancer must keep
//! a legacy client on one replica (hashing on the `session_id` query parameter does).

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use super::federation::{Reply, Scope};
use super::policy::Caller;
use super::wire::{self, Code, Message};
use super::{McpRoute, event_stream, plain};
use crate::body::GatewayBody;

/// The query parameter that names a legacy client's stream.
const PARAM: &str = "session_id";

/// A legacy client's open stream.
#[derive(Debug)]
pub struct Open {
    to: mpsc::Sender<Bytes>,
    /// The sealed session its `initialize` began.
    sid: Mutex<Option<String>>,
}

/// The stream key a legacy client's POST names, if it names one.
pub fn stream_key(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix(PARAM)?.strip_prefix('='))
}

impl McpRoute {
    /// Opens a legacy client's stream at `path`: the endpoint event first, then the answers
    /// to what it posts, `list_changed` and keep-alives.
    pub(super) fn open_legacy(&self, path: &str) -> Response<GatewayBody> {
        let key: String = super::session::random::<16>().iter().map(|b| format!("{b:02x}")).collect();
        let (to, rx) = mpsc::channel(16);
        let endpoint = format!("event: endpoint\r\ndata: {path}?{PARAM}={key}\r\n\r\n");
        // A fresh channel has room for its first event.
        let _ = to.try_send(Bytes::from(endpoint));
        self.legacy_clients.insert(key.clone(), Arc::new(Open { to: to.clone(), sid: Mutex::new(None) }));
        let listen = self.listen(to, Some(wire::tools_changed()));
        let streams = self.legacy_clients.clone();
        tokio::spawn(async move {
            listen.await;
            streams.invalidate(&key);
        });
        event_stream(rx)
    }

    /// A message a legacy client posted to its stream `key`: 202, and the answer on the stream.
    pub(super) async fn post_legacy(
        self: &Arc<Self>,
        key: &str,
        msg: Message,
        caller: &Caller,
    ) -> Response<GatewayBody> {
        let Some(open) = self.legacy_clients.get(key) else {
            return plain(StatusCode::NOT_FOUND, "no such session: open the event stream (GET) again");
        };
        let id = msg.id.clone().unwrap_or(Value::Null);
        let answer = if msg.method == "initialize" {
            let (sid, answer) = self.begin(&id, &msg).await;
            *open.sid.lock() = Some(sid);
            Some(Reply::Json(answer))
        } else {
            let sid = open.sid.lock().clone();
            match sid.and_then(|sid| Some((self.open(&sid)?, sid))) {
                Some((s, sid)) => self.reply(&Scope::Session(sid, s), msg, caller).await,
                None => Some(Reply::Error(id, Code::InvalidRequest, "the session is not initialized".into())),
            }
        };
        if let Some(reply) = answer {
            forward(reply, open.to.clone());
        }
        Response::builder().status(StatusCode::ACCEPTED).body(GatewayBody::full("Accepted")).unwrap_or_default()
    }
}

/// Puts `reply` on a legacy client's stream: one event, or a call's events as they come.
fn forward(reply: Reply, to: mpsc::Sender<Bytes>) {
    let event = match reply {
        Reply::Json(v) => wire::sse_event(&v),
        Reply::Error(id, code, why) => wire::sse_event(&wire::error(&id, code, &why)),
        Reply::ErrorWith(id, code, why, data) => wire::sse_event(&wire::error_with(&id, code, &why, Some(data))),
        Reply::SessionGone => wire::sse_event(&wire::error(&Value::Null, Code::InvalidRequest, "Session not found")),
        Reply::Stream(mut rx) => {
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    if to.send(event).await.is_err() {
                        return;
                    }
                }
            });
            return;
        }
    };
    tokio::spawn(async move { to.send(event).await });
}
