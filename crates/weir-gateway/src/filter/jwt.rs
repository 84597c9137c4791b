//! `jwt-auth`: verify JSON Web Tokens, forward chosen claims, cache verified tokens.
//!
//! Keys come from the config (inline or PEM files) and from a JWKS URL refreshed in the
//! background. Verified tokens are cached until they expire (seed ch. 1: "cache to avoid
//! repeated authentication"), so a hot token costs one hash lookup, not a signature check.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use moka::sync::Cache;
use serde_json::{Map, Value};
use weir_config::plugins::{JwtAuthConfig, TokenSource};

use super::BuildError;
use super::jwks::Jwks;
use super::{Effects, Outcome, reply};
use crate::view::{RequestView, visible_text};

/// A verification key.
#[derive(Clone)]
pub(super) struct KeyEntry {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
}

/// Claims of a verified token.
#[derive(Debug)]
struct Verified {
    /// Shared with every request that presents the token (no copy per request).
    claims: Arc<Map<String, Value>>,
    /// Unix seconds; the cache forgets the token then.
    exp: u64,
}

struct UntilExpiry;

impl moka::Expiry<String, Arc<Verified>> for UntilExpiry {
    fn expire_after_create(&self, _: &String, v: &Arc<Verified>, _: std::time::Instant) -> Option<Duration> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Some(Duration::from_secs(v.exp.saturating_sub(now)))
    }
}

/// A compiled `jwt-auth` filter.
pub struct JwtAuth {
    keys: Vec<KeyEntry>,
    jwks: Option<Arc<Jwks>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    issuer: Option<String>,
    audiences: Vec<String>,
    required: Vec<String>,
    leeway: u64,
    sources: Vec<TokenSource>,
    forward: Vec<(String, HeaderName)>,
    cache: Option<Cache<String, Arc<Verified>>>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth").field("keys", &self.keys.len()).field("jwks", &self.jwks).finish_non_exhaustive()
    }
}

impl Drop for JwtAuth {
    fn drop(&mut self) {
        if let Some(t) = &self.refresher {
            t.abort();
        }
    }
}

fn key_from_config(
    index: usize,
    alg: Algorithm,
    secret: Option<&str>,
    pem: Option<&[u8]>,
) -> Result<DecodingKey, BuildError> {
    use Algorithm::*;
    let parsed = match (alg, secret, pem) {
        (HS256 | HS384 | HS512, Some(s), _) => Ok(DecodingKey::from_secret(s.as_bytes())),
        (RS256 | RS384 | RS512 | PS256 | PS384 | PS512, _, Some(p)) => DecodingKey::from_rsa_pem(p),
        (ES256 | ES384, _, Some(p)) => DecodingKey::from_ec_pem(p),
        (EdDSA, _, Some(p)) => DecodingKey::from_ed_pem(p),
        _ => return Err(BuildError::NoKey { index, alg: format!("{alg:?}") }),
    };
    parsed.map_err(|error| BuildError::Key { index, error })
}

impl JwtAuth {
    /// Compiles the filter; fails when a PEM key cannot be read or parsed.
    pub(crate) fn new(c: &JwtAuthConfig) -> Result<Self, BuildError> {
        let mut keys = Vec::new();
        for (index, k) in c.keys.iter().enumerate() {
            let alg: Algorithm = k.alg.parse().map_err(|_| BuildError::Algorithm { index, alg: k.alg.clone() })?;
            let pem = match (&k.pem, &k.pem_file) {
                (Some(p), _) => Some(p.as_bytes().to_vec()),
                (None, Some(f)) => {
                    Some(std::fs::read(f).map_err(|error| BuildError::PemFile { index, path: f.clone(), error })?)
                }
                _ => None,
            };
            let key = key_from_config(index, alg, k.secret.as_deref(), pem.as_deref())?;
            keys.push(KeyEntry { kid: k.kid.clone(), alg, key });
        }
        let min_refetch = c.jwks_min_refetch.map_or(Duration::from_secs(10), |d| d.get());
        let jwks = c.jwks_url.clone().map(|u| Jwks::new(u, min_refetch));
        let refresher = jwks.as_ref().map(|j| {
            let j = j.clone();
            let every = c.jwks_refresh.map_or(Duration::from_secs(300), |d| d.get()).max(Duration::from_secs(1));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    j.refresh().await;
                }
            })
        });
        Ok(Self {
            keys,
            jwks,
            refresher,
            issuer: c.issuer.clone(),
            audiences: c.audiences.clone(),
            required: c.required_claims.clone(),
            leeway: c.leeway.map_or(60, |d| d.get().as_secs()),
            sources: if c.token_from.is_empty() {
                vec![TokenSource::Bearer(Default::default())]
            } else {
                c.token_from.clone()
            },
            forward: c
                .forward_claims
                .iter()
                .filter_map(|(claim, h)| Some((claim.clone(), HeaderName::try_from(h.as_str()).ok()?)))
                .collect(),
            cache: (c.cache_size > 0)
                .then(|| Cache::builder().max_capacity(c.cache_size).expire_after(UntilExpiry).build()),
        })
    }

    fn token<'a>(&self, req: &RequestView<'a>) -> Option<&'a str> {
        self.sources.iter().find_map(|s| match s {
            TokenSource::Bearer(_) => {
                let v = req.header_str(&header::AUTHORIZATION)?;
                let (scheme, tok) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim())
            }
            TokenSource::Header(h) => visible_text(req.headers.get_str(h)?),
            TokenSource::Query(q) => req.query?.split('&').find_map(|p| p.strip_prefix(q.as_str())?.strip_prefix('=')),
            TokenSource::Cookie(name) => req
                .headers
                .values("cookie")
                .filter_map(visible_text)
                .find_map(|v| v.split(';').find_map(|c| c.trim().strip_prefix(name.as_str())?.strip_prefix('='))),
        })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        if self.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audiences);
        }
        v
    }

    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<KeyEntry> {
        let fetched = self.jwks.as_ref().map(|j| j.keys()).unwrap_or_default();
        self.keys
            .iter()
            .chain(fetched.iter())
            .filter(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
            .cloned()
            .collect()
    }

    async fn verify(&self, token: &str) -> Result<Arc<Verified>, String> {
        if let Some(v) = self.cache.as_ref().and_then(|c| c.get(token)) {
            return Ok(v);
        }
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let kid = header.kid.as_deref();
        let mut keys = self.candidates(kid, header.alg);
        if keys.is_empty()
            && let Some(j) = &self.jwks
            && j.refetch_throttled().await
        {
            keys = self.candidates(kid, header.alg);
        }
        if keys.is_empty() {
            return Err(match kid {
                Some(k) => format!("no {:?} key with kid {k:?}", header.alg),
                None => format!("no {:?} key configured", header.alg),
            });
        }
        let validation = self.validation(header.alg);
        let mut last = String::from("invalid token");
        for k in &keys {
            match decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => {
                    if let Some(missing) = self.required.iter().find(|c| !data.claims.contains_key(c.as_str())) {
                        return Err(format!("missing required claim {missing:?}"));
                    }
                    let exp = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
                    let v = Arc::new(Verified { claims: Arc::new(data.claims), exp });
                    if let Some(c) = &self.cache {
                        c.insert(token.to_owned(), v.clone());
                    }
                    return Ok(v);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// The claims of `token` once verified (signature, expiry, issuer, audience, required
    /// claims), or why not.
    pub(crate) async fn claims_of(&self, token: &str) -> Result<Arc<Map<String, Value>>, String> {
        self.verify(token).await.map(|v| v.claims.clone())
    }

    pub(super) async fn on_request(&self, req: &RequestView<'_>) -> Outcome {
        let deny = |why: &str| {
            let mut rsp = reply(StatusCode::UNAUTHORIZED, "unauthenticated", why);
            let desc: String = why.chars().filter(|c| *c != '"' && !c.is_control()).collect();
            if let Ok(v) = HeaderValue::try_from(format!(
                "Bearer realm=\"weir\", error=\"invalid_token\", error_description=\"{desc}\""
            )) {
                rsp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            Outcome::Respond(rsp)
        };
        let Some(token) = self.token(req) else {
            let mut rsp = reply(StatusCode::UNAUTHORIZED, "unauthenticated", "missing bearer token");
            rsp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"weir\""));
            return Outcome::Respond(rsp);
        };
        let verified = match self.verify(token).await {
            Ok(v) => v,
            Err(why) => return deny(&why),
        };
        let mut e = Effects::default();
        for (claim, h) in &self.forward {
            let text = match verified.claims.get(claim) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if let Ok(v) = HeaderValue::try_from(text) {
                e.set.push((h.clone(), v));
            }
        }
        if let Some(Value::String(sub)) = verified.claims.get("sub") {
            e.consumer = Some(sub.as_str().into());
        }
        e.claims = Some(verified.claims.clone());
        Outcome::Continue(e)
    }
}
