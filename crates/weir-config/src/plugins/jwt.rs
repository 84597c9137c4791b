//! `jwt-auth` configuration.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::error::Errors;

/// JSON Web Token authentication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthConfig {
    /// Verification keys given in the config.
    #[serde(default)]
    pub keys: Vec<JwtKey>,
    /// A JWKS document to fetch keys from, refreshed in the background.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the JWKS is refreshed. Default 5m.
    #[serde(default)]
    pub jwks_refresh: Option<HumanDuration>,
    /// A token with an unknown `kid` refetches the JWKS at most this often. Default 10s.
    #[serde(default)]
    pub jwks_min_refetch: Option<HumanDuration>,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values (any one).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Claims that must be present (besides `exp`).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`. Default 60s.
    #[serde(default)]
    pub leeway: Option<HumanDuration>,
    /// Where the token is read; the first source that has one wins. Default `Authorization: Bearer`.
    #[serde(default)]
    pub token_from: Vec<TokenSource>,
    /// Claims sent upstream as headers, e.g. `{ sub: x-user-id }`.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Verified tokens remembered (until they expire). Default 10000; 0 turns the cache off.
    #[serde(default = "default_cache")]
    pub cache_size: u64,
}

fn default_cache() -> u64 {
    10_000
}

/// Where a token can be found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer(crate::spec::Empty),
    /// A header holding the bare token.
    Header(String),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

/// One verification key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// Algorithm: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    pub alg: String,
    /// Key id; a token with a `kid` is only checked against keys with that id.
    #[serde(default)]
    pub kid: Option<String>,
    /// Shared secret (HS*).
    #[serde(default)]
    pub secret: Option<String>,
    /// Public key in PEM, inline.
    #[serde(default)]
    pub pem: Option<String>,
    /// Public key in PEM, from a file.
    #[serde(default)]
    pub pem_file: Option<String>,
}

/// Algorithms accepted in `alg`.
pub const JWT_ALGS: [&str; 13] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "ES512",
];

impl JwtAuthConfig {
    pub(crate) fn check(&self, errs: &mut Errors, at: &str) {
        if self.keys.is_empty() && self.jwks_url.is_none() {
            errs.push(at, "give `keys`, a `jwks_url`, or both");
        }
        for (i, k) in self.keys.iter().enumerate() {
            let p = format!("{at}.keys[{i}]");
            if !JWT_ALGS[..12].contains(&k.alg.as_str()) {
                errs.push(
                    format!("{p}.alg"),
                    format!("unsupported algorithm {:?} (use one of {})", k.alg, JWT_ALGS[..12].join(", ")),
                );
                continue;
            }
            let hmac = k.alg.starts_with("HS");
            let sources = [k.secret.is_some(), k.pem.is_some(), k.pem_file.is_some()].iter().filter(|b| **b).count();
            match (hmac, k.secret.is_some(), sources) {
                (true, true, 1) if k.secret.as_ref().is_some_and(|s| s.len() < 16) => {
                    errs.push(format!("{p}.secret"), "HMAC secrets must be at least 16 bytes");
                }
                (true, true, 1) => {}
                (true, _, _) => errs.push(p, format!("{} needs exactly a `secret`", k.alg)),
                (false, false, 1) => {}
                (false, _, _) => errs.push(p, format!("{} needs exactly one of `pem` or `pem_file`", k.alg)),
            }
        }
        if let Some(u) = &self.jwks_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            errs.push(format!("{at}.jwks_url"), "must be an http:// or https:// URL");
        }
        for (claim, header) in &self.forward_claims {
            super::check_header_name(errs, &format!("{at}.forward_claims.{claim}"), header);
        }
    }
}
