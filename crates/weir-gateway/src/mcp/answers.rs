//! The HTTP answers an MCP endpoint gives: a reply as JSON or an event stream, JSON-RPC errors
//! with the status each revision wants, and the plain refusals.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::federation::Reply;
use super::wire::{self, Code};
use crate::body::GatewayBody;

pub(super) fn respond(reply: Reply, stateless: bool) -> Response<GatewayBody> {
    match reply {
        Reply::Json(v) => json_response(StatusCode::OK, &v),
        Reply::Stream(rx) => event_stream(rx),
        Reply::SessionGone => session_not_found(),
        Reply::Error(id, code, why) => rpc_error(error_status(stateless, code), &id, code, &why, None),
        Reply::ErrorWith(id, code, why, data) => rpc_error(error_status(stateless, code), &id, code, &why, Some(data)),
    }
}

/// The stateless revision maps error codes to statuses; the sessionful one answers 200.
pub(super) fn error_status(stateless: bool, code: Code) -> StatusCode {
    match (stateless, code) {
        (false, _) | (true, Code::Internal) => StatusCode::OK,
        (true, Code::MethodNotFound) => StatusCode::NOT_FOUND,
        (true, _) => StatusCode::BAD_REQUEST,
    }
}

pub(super) fn json_response(status: StatusCode, v: &Value) -> Response<GatewayBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(GatewayBody::full(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_default()
}

pub(super) fn rpc_error(
    status: StatusCode,
    id: &Value,
    code: Code,
    why: &str,
    data: Option<Value>,
) -> Response<GatewayBody> {
    json_response(status, &wire::error_with(id, code, why, data))
}

pub(super) fn session_not_found() -> Response<GatewayBody> {
    rpc_error(StatusCode::NOT_FOUND, &Value::Null, Code::InvalidRequest, "Session not found", None)
}

/// 400: a sessionful request without `Mcp-Session-Id`.
pub(super) fn missing_session() -> Response<GatewayBody> {
    rpc_error(StatusCode::BAD_REQUEST, &Value::Null, Code::InvalidRequest, "Bad Request: Missing session ID", None)
}

/// 202 with no body: a notification or a client's answer, taken.
pub(super) fn accepted() -> Response<GatewayBody> {
    Response::builder().status(StatusCode::ACCEPTED).body(GatewayBody::empty()).unwrap_or_default()
}

/// `rsp` with the session id it belongs to.
pub(super) fn with_session(mut rsp: Response<GatewayBody>, sid: &str) -> Response<GatewayBody> {
    if let Ok(v) = HeaderValue::try_from(sid) {
        rsp.headers_mut().insert(wire::SESSION_HEADER, v);
    }
    rsp
}

pub(super) fn event_stream(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<GatewayBody> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache, no-transform")
        .header("x-accel-buffering", "no")
        .body(GatewayBody::Stream(rx))
        .unwrap_or_default()
}

pub(super) fn allow_only() -> Response<GatewayBody> {
    Response::builder()
        .status(StatusCode::METHOD_NOT_ALLOWED)
        .header(header::ALLOW, "GET, POST, DELETE")
        .body(GatewayBody::empty())
        .unwrap_or_default()
}

pub(super) fn plain(status: StatusCode, why: &str) -> Response<GatewayBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(GatewayBody::full(why.to_owned()))
        .unwrap_or_default()
}
