//! Authentication filters: `key-auth`.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use weir_config::plugins::KeyAuthConfig;

use super::{Effects, Outcome, reply};
use crate::view::RequestView;

/// `key-auth`: API keys of named consumers, kept only as SHA-256 digests.
#[derive(Debug)]
pub struct KeyAuth {
    header: HeaderName,
    query: Option<String>,
    /// digest → consumer name.
    keys: HashMap<[u8; 32], Arc<str>>,
    hide: bool,
    forward: HeaderName,
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl KeyAuth {
    pub(super) fn new(c: &KeyAuthConfig) -> Self {
        let keys = c
            .consumers
            .iter()
            .filter_map(|cons| {
                let digest = match (&cons.key, &cons.key_sha256) {
                    (Some(k), _) => Sha256::digest(k.as_bytes()).into(),
                    (None, Some(h)) => hex32(h)?,
                    (None, None) => return None,
                };
                Some((digest, Arc::<str>::from(cons.name.as_str())))
            })
            .collect();
        Self {
            header: HeaderName::try_from(c.header.as_str()).unwrap_or(HeaderName::from_static("x-api-key")),
            query: c.query.clone(),
            keys,
            hide: c.hide_credentials,
            forward: HeaderName::try_from(c.forward_header.as_str()).unwrap_or(HeaderName::from_static("x-consumer")),
        }
    }

    fn key<'a>(&self, req: &RequestView<'a>) -> Option<&'a [u8]> {
        if let Some(v) = req.header(&self.header) {
            return Some(v);
        }
        let q = self.query.as_deref()?;
        req.query?.split('&').find_map(|p| p.strip_prefix(q)?.strip_prefix('=')).map(str::as_bytes)
    }

    pub(super) fn on_request(&self, req: &RequestView<'_>) -> Outcome {
        let deny = |msg: &str| {
            let mut rsp = reply(StatusCode::UNAUTHORIZED, "unauthenticated", msg);
            rsp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Key realm=\"weir\""));
            Outcome::Respond(rsp)
        };
        let Some(key) = self.key(req) else { return deny("missing API key") };
        let digest: [u8; 32] = Sha256::digest(key).into();
        let Some(consumer) = self.keys.get(&digest) else { return deny("invalid API key") };
        let mut e = Effects { consumer: Some(consumer.clone()), ..Effects::default() };
        if let Ok(v) = HeaderValue::try_from(&**consumer) {
            e.set.push((self.forward.clone(), v));
        }
        if self.hide {
            e.remove.push(self.header.clone());
        }
        Outcome::Continue(e)
    }
}
