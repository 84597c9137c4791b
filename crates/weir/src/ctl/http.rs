//! JSON calls to the admin API, one request per connection (`weir ctl` makes one or two).

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use weir_gateway::oneshot::{self, OneShotError};

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    /// `http://host:port`.
    pub(crate) server: String,
    pub(crate) token: Option<String>,
    /// CA (PEM file) to trust for an `https://` server, instead of the system roots.
    pub(crate) cacert: Option<String>,
}

/// A call that did not get an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error(
        "cannot reach the control plane at {server}: {source} (is `weir control-plane` running? set --server or WEIR_SERVER)"
    )]
    Unreachable { server: String, source: OneShotError },
    #[error("{source} (does --cacert or WEIR_CACERT name the CA that signed the control plane's certificate?)")]
    Tls { source: OneShotError },
    #[error("talking to {server}: {source}")]
    Http { server: String, source: OneShotError },
}

impl Api {
    /// Sends `method path` with an optional JSON body; returns the status and JSON answer.
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), CallError> {
        let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default())).unwrap_or_default();
        self.send(method, path, "application/json", bytes).await
    }

    /// Sends `method path` with a body of `content_type`; returns the status and JSON answer.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<(u16, Value), CallError> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", content_type)];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let method = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
        // `--wait` can hold an apply open; the server bounds that, this only guards a hang.
        let deadline = Duration::from_secs(600);
        let answer = oneshot::request_trusting(method, &url, &headers, bytes, deadline, self.cacert.as_deref()).await;
        let (status, body) = answer.map_err(|source| match source {
            OneShotError::Connect(..) | OneShotError::Url(..) => {
                CallError::Unreachable { server: self.server.clone(), source }
            }
            OneShotError::Tls(..) => CallError::Tls { source },
            _ => CallError::Http { server: self.server.clone(), source },
        })?;
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        Ok((status.as_u16(), json))
    }
}
