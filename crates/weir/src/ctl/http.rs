//! A small JSON-over-HTTP/1.1 client for the admin API (one connection per call; `weir ctl`
//! makes one or two calls per run, so no pool).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    /// `http://host:port`.
    pub(crate) server: String,
    pub(crate) token: Option<String>,
}

/// A call that did not get an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("{0}")]
    Url(String),
    #[error(
        "cannot reach the control plane at {server}: {source} (is `weir control-plane` running? set --server or WEIR_SERVER)"
    )]
    Connect { server: String, source: std::io::Error },
    #[error("talking to {server}: {reason}")]
    Http { server: String, reason: String },
}

impl Api {
    fn authority(&self) -> Result<&str, CallError> {
        self.server
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .ok_or_else(|| CallError::Url(format!("--server {:?} must start with http://", self.server)))
    }

    /// Sends `method path` with an optional JSON body; returns the status and JSON answer.
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), CallError> {
        let authority = self.authority()?;
        let http_err = |reason: String| CallError::Http { server: self.server.clone(), reason };
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|source| CallError::Connect { server: self.server.clone(), source })?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| http_err(e.to_string()))?;
        tokio::spawn(conn);
        let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default())).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority)
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(bytes)).map_err(|e| http_err(e.to_string()))?;
        let rsp = send.send_request(req).await.map_err(|e| http_err(e.to_string()))?;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await.map_err(|e| http_err(e.to_string()))?.to_bytes();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        Ok((status, json))
    }
}
