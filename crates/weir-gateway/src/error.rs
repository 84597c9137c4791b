//! Errors of the request path, each mapped to one HTTP status and one bounded metric label.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::GatewayBody;

/// Why Weir answered a request itself instead of relaying the upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched the request.
    #[error("no route matches the request")]
    NoRoute,
    /// Every endpoint of the chosen upstream is down or ejected.
    #[error("no healthy endpoint in upstream {upstream}")]
    NoHealthyEndpoint {
        /// Route that was matched.
        route: Arc<str>,
        /// Upstream whose endpoints are all down.
        upstream: Arc<str>,
    },
    /// The pool stayed at `max_connections` for longer than its `acquire_timeout`.
    #[error("upstream {upstream} has no free connection (pool at max_connections)")]
    PoolExhausted {
        /// Route that was matched.
        route: Arc<str>,
        /// Upstream whose pool is full.
        upstream: Arc<str>,
    },
    /// A TCP connection to the endpoint could not be made.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// Route that was matched.
        route: Arc<str>,
        /// `host:port` of the endpoint.
        endpoint: Arc<str>,
        /// What the OS said.
        reason: String,
    },
    /// The upstream did not send response headers within the route's timeout.
    #[error("upstream {endpoint} did not answer within {after:?}")]
    UpstreamTimeout {
        /// Route that was matched.
        route: Arc<str>,
        /// `host:port` of the endpoint.
        endpoint: Arc<str>,
        /// The route's timeout.
        after: Duration,
    },
    /// The upstream broke the protocol or the connection.
    #[error("bad response from upstream {endpoint}: {reason}")]
    BadUpstream {
        /// Route that was matched.
        route: Arc<str>,
        /// `host:port` of the endpoint.
        endpoint: Arc<str>,
        /// What went wrong.
        reason: String,
    },
    /// The request cannot be proxied as sent.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request URI is longer than the listener allows.
    #[error("request URI too long")]
    UriTooLong,
    /// The request body is larger than the route allows.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// Route that was matched.
        route: Arc<str>,
        /// The route's `max_body_size`.
        limit: u64,
    },
}

impl ProxyError {
    /// The status Weir answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoHealthyEndpoint { .. } | Self::PoolExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::BadUpstream { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The gRPC status code for gRPC clients (grpc/doc/http-grpc-status-mapping.md).
    pub fn grpc_status(&self) -> u8 {
        match self {
            Self::NoRoute => 12, // UNIMPLEMENTED
            Self::NoHealthyEndpoint { .. } | Self::Connect { .. } | Self::BadUpstream { .. } => 14, // UNAVAILABLE
            Self::PoolExhausted { .. } | Self::PayloadTooLarge { .. } => 8, // RESOURCE_EXHAUSTED
            Self::UpstreamTimeout { .. } => 4, // DEADLINE_EXCEEDED
            Self::BadRequest(_) | Self::UriTooLong => 3, // INVALID_ARGUMENT
        }
    }

    /// A trailers-only gRPC response (HTTP 200, `grpc-status`, `grpc-message`).
    pub fn into_grpc_response(self) -> Response<GatewayBody> {
        let mut rsp = Response::new(GatewayBody::empty());
        let h = rsp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(u16::from(self.grpc_status())));
        // grpc-message is percent-encoded; our messages are ASCII, so encode what is not safe.
        let msg: String = self
            .to_string()
            .bytes()
            .map(|b| {
                if b.is_ascii_graphic() && b != b'%' || b == b' ' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::try_from(msg) {
            h.insert("grpc-message", v);
        }
        rsp
    }

    /// A short, bounded reason, used as a metric label and in the JSON body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            Self::PoolExhausted { .. } => "pool_exhausted",
            Self::Connect { .. } => "connect_failed",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::BadUpstream { .. } => "bad_upstream",
            Self::BadRequest(_) => "bad_request",
            Self::UriTooLong => "uri_too_long",
            Self::PayloadTooLarge { .. } => "payload_too_large",
        }
    }

    /// The route the error happened on, if one was matched.
    pub fn route(&self) -> Option<&str> {
        match self {
            Self::NoRoute | Self::BadRequest(_) | Self::UriTooLong => None,
            Self::PayloadTooLarge { route, .. }
            | Self::NoHealthyEndpoint { route, .. }
            | Self::PoolExhausted { route, .. }
            | Self::Connect { route, .. }
            | Self::UpstreamTimeout { route, .. }
            | Self::BadUpstream { route, .. } => Some(route),
        }
    }

    /// The JSON response: `{"status":503,"reason":"…","route":"…","message":"…"}`.
    pub fn into_response(self) -> Response<GatewayBody> {
        let body = serde_json::json!({
            "status": self.status().as_u16(),
            "reason": self.reason(),
            "route": self.route(),
            "message": self.to_string(),
        });
        let mut rsp = Response::new(GatewayBody::full(Bytes::from(body.to_string())));
        *rsp.status_mut() = self.status();
        rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(self, Self::BadRequest(_)) {
            // After a request we could not frame or trust, the connection is not reused.
            rsp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        rsp
    }
}
