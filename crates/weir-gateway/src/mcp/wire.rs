//! The MCP wire as Weir reads and writes it: JSON-RPC messages, their error codes, the
//! protocol revisions and their headers, and Server-Sent Events framing in both directions.

use bytes::Bytes;
use serde_json::{Value, json};

/// The sessionful revision (`initialize`, `Mcp-Session-Id`).
pub const SESSIONFUL: &str = "2025-11-25";
/// The stateless revision (routing headers, no session).
pub const STATELESS: &str = "2026-07-28";
/// Revisions of the handshake era a client may name in `MCP-Protocol-Version`.
pub const HANDSHAKE: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", SESSIONFUL];
/// `_meta` keys of the stateless revision's envelope.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The client's capabilities in the envelope.
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// The client's name and version in the envelope.
pub const META_CLIENT: &str = "io.modelcontextprotocol/clientInfo";

/// `MCP-Protocol-Version`.
pub const VERSION_HEADER: &str = "mcp-protocol-version";
/// `Mcp-Session-Id`.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// `Mcp-Method`.
pub const METHOD_HEADER: &str = "mcp-method";
/// `Mcp-Name`.
pub const NAME_HEADER: &str = "mcp-name";

/// JSON-RPC and MCP error codes Weir answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The body is not JSON.
    Parse = -32700,
    /// Not a request Weir can take (a batch, no session).
    InvalidRequest = -32600,
    /// No such method.
    MethodNotFound = -32601,
    /// Bad or missing parameters.
    InvalidParams = -32602,
    /// Weir's own failure (no server answered).
    Internal = -32603,
    /// A tool limit is spent (implementation-defined server error).
    Limited = -32000,
    /// A routing header does not match the body (stateless revision).
    HeaderMismatch = -32020,
    /// The client asked for a revision Weir does not speak.
    UnsupportedVersion = -32022,
}

/// A JSON-RPC error answer to `id` (`null` when the request had none).
pub fn error(id: &Value, code: Code, message: &str) -> Value {
    error_with(id, code, message, None)
}

/// A JSON-RPC error answer with `data` (e.g. the URI of a resource not found).
pub fn error_with(id: &Value, code: Code, message: &str, data: Option<Value>) -> Value {
    let mut v = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code as i64, "message": message}});
    if let Some(d) = data {
        v["error"]["data"] = d;
    }
    v
}

/// An event-stream comment that keeps a quiet stream open.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\r\n\r\n";

/// `notifications/tools/list_changed` as an event, for a session's or legacy client's stream.
pub fn tools_changed() -> Bytes {
    sse_event(&json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}))
}

/// A JSON-RPC result answer to `id`.
pub fn result(id: &Value, result: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A request or notification as the client sent it.
#[derive(Debug)]
pub struct Message {
    /// `None` for a notification.
    pub id: Option<Value>,
    /// The method.
    pub method: String,
    /// Its parameters (`{}` when absent).
    pub params: Value,
}

impl Message {
    /// Reads one message; `Err` is the code and message to answer with.
    pub fn parse(body: &[u8]) -> Result<Self, (Code, &'static str)> {
        let v: Value = serde_json::from_slice(body).map_err(|_| (Code::Parse, "Parse error: the body is not JSON"))?;
        let Value::Object(mut o) = v else {
            return Err((Code::InvalidRequest, "Body must be a single JSON-RPC request or notification object"));
        };
        let Some(Value::String(method)) = o.remove("method") else {
            return Err((Code::InvalidRequest, "Body must be a single JSON-RPC request or notification object"));
        };
        let params = o.remove("params").unwrap_or_else(|| json!({}));
        Ok(Self { id: o.remove("id"), method, params })
    }

    /// `params.name` (tools/call, prompts/get) or `params.uri` (resources/read).
    pub fn routed_name(&self) -> Option<&str> {
        let key = if self.method == "resources/read" { "uri" } else { "name" };
        self.params.get(key).and_then(Value::as_str)
    }

    /// `params._meta[key]`.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.params.get("_meta").and_then(|m| m.get(key))
    }
}

/// A client's answer to a server's request (an id and a result or error, no method), if
/// `body` is one.
pub fn response(body: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let answer =
        v.get("method").is_none() && v.get("id").is_some() && (v.get("result").is_some() || v.get("error").is_some());
    answer.then_some(v)
}

/// One message as an SSE event.
pub fn sse_event(msg: &Value) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"event: message\r\ndata: ");
    // A serialized Value has no raw newlines, so one `data:` line holds it.
    serde_json::to_writer(&mut out, msg).unwrap_or_default();
    out.extend_from_slice(b"\r\n\r\n");
    Bytes::from(out)
}

/// One message as an SSE event with an id, for a client that may resume the stream.
pub fn sse_event_with_id(msg: &Value, id: &str) -> Bytes {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&sse_event(msg));
    Bytes::from(out)
}

/// Reads the messages of an event stream as chunks arrive; lines may end in `\r\n`, `\n` or
/// `\r`, and events without `data` (priming events, comments) are skipped.
#[derive(Debug, Default)]
pub struct SseReader {
    buf: Vec<u8>,
    data: Vec<u8>,
    /// The `event:` of the event being read.
    event: Vec<u8>,
    /// The last `id:` seen.
    pub last_id: Option<String>,
    /// The data of the last `endpoint` event: where a legacy HTTP+SSE server (2024-11-05)
    /// takes the messages of this stream's session.
    pub endpoint: Option<String>,
}

/// Past this, an event that never ends is refused rather than buffered.
pub const MAX_EVENT: usize = 4 << 20;

/// An event grew past [`MAX_EVENT`].
#[derive(Debug, thiserror::Error)]
#[error("an event stream event is over 4 MiB")]
pub struct EventTooLarge;

impl SseReader {
    /// Feeds a chunk; returns the messages it completed, or `Err` when an event grows past
    /// [`MAX_EVENT`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Value>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(rel) = self.buf[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = start + rel;
            let line = self.buf[start..end].to_vec();
            let mut next = end + 1;
            if self.buf[end] == b'\r' {
                match self.buf.get(next) {
                    Some(b'\n') => next += 1,
                    None => break,
                    _ => {}
                }
            }
            start = next;
            self.line(&line, &mut out);
        }
        self.buf.drain(..start);
        if self.buf.len() + self.data.len() > MAX_EVENT {
            return Err(EventTooLarge);
        }
        Ok(out)
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Value>) {
        if line.is_empty() {
            if self.event == b"endpoint" {
                self.endpoint = std::str::from_utf8(&self.data).ok().map(|d| d.trim().to_owned());
            } else if !self.data.is_empty()
                && let Ok(v) = serde_json::from_slice(&self.data)
            {
                out.push(v);
            }
            self.data.clear();
            self.event.clear();
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return,
            Some(i) => (&line[..i], line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..])),
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
            b"id" => self.last_id = std::str::from_utf8(value).ok().map(str::to_owned),
            b"event" => value.clone_into(&mut self.event),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let text = b"id: 1\r\ndata: \r\nretry: 500\r\n\r\n: ping\r\n\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\nevent: message\ndata: {\"b\":\ndata: 2}\n\n";
        for cut in 1..text.len() {
            let mut r = SseReader::default();
            let mut got = r.push(&text[..cut]).unwrap();
            got.extend(r.push(&text[cut..]).unwrap());
            assert_eq!(got, vec![json!({"a": 1}), json!({"b": 2})], "cut at {cut}");
            assert_eq!(r.last_id.as_deref(), Some("1"));
        }
    }

    #[test]
    fn a_legacy_servers_endpoint_event_is_kept_apart() {
        let mut r = SseReader::default();
        let got = r.push(
            b"event: endpoint\r\ndata: /messages/?session_id=ab12\r\n\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\n",
        );
        assert_eq!(got.unwrap(), vec![json!({"a": 1})]);
        assert_eq!(r.endpoint.as_deref(), Some("/messages/?session_id=ab12"));
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut r = SseReader::default();
        assert!(r.push(b"data: ").is_ok());
        assert!(r.push(&vec![b'x'; MAX_EVENT + 1]).is_err());
    }

    #[test]
    fn messages_are_read_strictly() {
        assert_eq!(Message::parse(b"[1]").unwrap_err().0, Code::InvalidRequest);
        assert_eq!(Message::parse(b"{").unwrap_err().0, Code::Parse);
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x"}}"#).unwrap();
        assert_eq!((m.method.as_str(), m.routed_name()), ("tools/call", Some("x")));
        assert_eq!(m.id, Some(json!(3)));
    }
}
