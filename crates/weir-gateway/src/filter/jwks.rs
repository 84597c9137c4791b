//! JWKS for `jwt-auth`: fetch over HTTP(S), keep the last good key set, refresh in the
//! background, and refetch on an unknown `kid` at most once per `jwks_min_refetch` (10 s).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::jwt::KeyEntry;

/// Fetched keys and the fetch throttle.
pub(super) struct Jwks {
    url: String,
    keys: ArcSwap<Vec<KeyEntry>>,
    /// When the last on-demand refetch ran, to rate-limit them.
    last_refetch: Mutex<Option<Instant>>,
    min_refetch: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Jwks({}, {} keys)", self.url, self.keys.load().len())
    }
}

impl Jwks {
    pub(super) fn new(url: String, min_refetch: Duration) -> Arc<Self> {
        Arc::new(Self { url, keys: ArcSwap::from_pointee(Vec::new()), last_refetch: Mutex::new(None), min_refetch })
    }

    pub(super) fn keys(&self) -> Arc<Vec<KeyEntry>> {
        self.keys.load_full()
    }

    /// Fetches now; on failure the current keys stay.
    pub(super) async fn refresh(&self) {
        match fetch(&self.url).await.and_then(|b| parse(&b)) {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS refreshed");
                self.keys.store(Arc::new(keys));
            }
            Err(e) => tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the last good key set"),
        }
    }

    /// An on-demand refetch (unknown `kid`), at most once per `min_refetch`. Returns whether it ran.
    pub(super) async fn refetch_throttled(&self) -> bool {
        {
            let mut last = self.last_refetch.lock();
            if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.refresh().await;
        true
    }
}

fn parse(body: &[u8]) -> Result<Vec<KeyEntry>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        let Some(alg) = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok()) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
        out.push(KeyEntry { kid: jwk.common.key_id.clone(), alg, key });
    }
    Ok(out)
}

/// GET `url` (http or https with the system's CAs) with a 5 s deadline.
async fn fetch(url: &str) -> Result<Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let host = uri.host().ok_or("URL has no host")?.trim_matches(['[', ']']).to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let req = http::Request::get(path)
            .header(http::header::HOST, uri.authority().map_or(host.as_str(), |a| a.as_str()))
            .header(http::header::USER_AGENT, "weir-jwks")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let rsp = if https {
            let spec = weir_config::spec::UpstreamTlsSpec::default();
            let tls = crate::tls::upstream_tls(&spec, false).map_err(|e| e.to_string())?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let stream = tls.connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
            send(TokioIo::new(stream), req).await?
        } else {
            send(TokioIo::new(tcp), req).await?
        };
        if !rsp.status().is_success() {
            return Err(format!("HTTP {}", rsp.status()));
        }
        let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(body)
    };
    tokio::time::timeout(Duration::from_secs(5), work).await.map_err(|_| "timed out".to_owned())?
}

async fn send<I>(io: I, req: http::Request<Empty<Bytes>>) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
}
