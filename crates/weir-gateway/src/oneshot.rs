//! One HTTP/1.1 request on a fresh connection, for the few calls Weir makes itself: JWKS
//! fetches, access-log batches, `weir ctl`. Plain HTTP or HTTPS (system roots, or a given CA),
//! a deadline over the whole exchange, the body read in full.
//!
//! hyper's pooled client (hyper-util legacy) would do, but these calls are rare, want no
//! pool or background tasks, and share the TLS setup of upstreams.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Why the exchange failed (no answer at all).
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    /// The URL cannot be used.
    #[error("bad URL {0:?}: {1}")]
    Url(String, String),
    /// No TCP connection.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The TLS setup or handshake failed (an untrusted certificate, usually).
    #[error("TLS with {0} failed: {1}")]
    Tls(String, String),
    /// The HTTP exchange broke.
    #[error("{0}")]
    Http(String),
    /// The deadline passed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Sends `method url` with `headers` and `body`; returns the status and the whole body.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    deadline: Duration,
) -> Result<(StatusCode, Bytes), OneShotError> {
    request_trusting(method, url, headers, body, deadline, None).await
}

/// [`request`], trusting only the CA in the PEM file `ca` for `https://` when given.
pub async fn request_trusting(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    deadline: Duration,
    ca: Option<&str>,
) -> Result<(StatusCode, Bytes), OneShotError> {
    let uri: http::Uri =
        url.parse().map_err(|e: http::uri::InvalidUri| OneShotError::Url(url.into(), e.to_string()))?;
    let host =
        uri.host().ok_or_else(|| OneShotError::Url(url.into(), "no host".into()))?.trim_matches(['[', ']']).to_owned();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") | None => false,
        Some(other) => return Err(OneShotError::Url(url.into(), format!("scheme {other:?}: use http or https"))),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().map_or(host.clone(), |a| a.as_str().to_owned());
    let mut req = Request::builder().method(method).uri(uri.path_and_query().map_or("/", |p| p.as_str()));
    req = req.header(header::HOST, authority.as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| OneShotError::Http(e.to_string()))?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| OneShotError::Connect(authority.clone(), e.to_string()))?;
        let rsp = if https {
            let spec = weir_config::spec::UpstreamTlsSpec { ca: ca.map(str::to_owned), ..Default::default() };
            let tls = crate::tls::upstream_tls(&spec, false)
                .map_err(|e| OneShotError::Tls(authority.clone(), e.to_string()))?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| OneShotError::Url(url.into(), e.to_string()))?;
            let stream = tls
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| OneShotError::Tls(authority.clone(), e.to_string()))?;
            send(TokioIo::new(stream), req).await?
        } else {
            send(TokioIo::new(tcp), req).await?
        };
        let status = rsp.status();
        let body = rsp.into_body().collect().await.map_err(|e| OneShotError::Http(e.to_string()))?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(deadline, work).await.map_err(|_| OneShotError::Timeout(deadline))?
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<http::Response<hyper::body::Incoming>, OneShotError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| OneShotError::Http(e.to_string()))?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| OneShotError::Http(e.to_string()))
}
