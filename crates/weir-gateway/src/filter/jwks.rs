//! JWKS for `jwt-auth`: fetch over HTTP(S), keep the last good key set, refresh in the
//! background, and refetch on an unknown `kid` at most once per `jwks_min_refetch` (10 s).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
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
    let headers = [("user-agent", "weir-jwks")];
    let (status, body) =
        crate::oneshot::request(http::Method::GET, url, &headers, Bytes::new(), Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
    if status.is_success() { Ok(body) } else { Err(format!("HTTP {status}")) }
}
