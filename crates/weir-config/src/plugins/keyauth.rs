//! `key-auth` configuration.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Errors;

/// API-key authentication of named consumers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// Header carrying the key. Default `x-api-key`.
    #[serde(default = "default_header")]
    pub header: String,
    /// Query parameter also accepted for the key.
    #[serde(default)]
    pub query: Option<String>,
    /// The consumers and their keys. Empty: the top-level `consumers` of the config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    /// Remove the key before the request goes upstream. Default true.
    #[serde(default = "yes")]
    pub hide_credentials: bool,
    /// Header that tells the upstream who called. Default `x-consumer`.
    #[serde(default = "default_forward")]
    pub forward_header: String,
}

fn default_header() -> String {
    "x-api-key".into()
}
fn default_forward() -> String {
    "x-consumer".into()
}
fn yes() -> bool {
    true
}

/// A named caller. Give `key_sha256` (hex SHA-256 of the key) to keep keys out of the
/// config; a plain `key` is accepted too and is hashed when the config is loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Consumer name, forwarded upstream and used by `rate-limit` with `key: { consumer: {} }`.
    pub name: String,
    /// The key in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Hex SHA-256 of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
}

impl KeyAuthConfig {
    pub(crate) fn check(&self, errs: &mut Errors, at: &str) {
        super::check_header_name(errs, &format!("{at}.header"), &self.header);
        super::check_header_name(errs, &format!("{at}.forward_header"), &self.forward_header);
        for (i, c) in self.consumers.iter().enumerate() {
            c.check(errs, &format!("{at}.consumers[{i}]"));
        }
    }
}

impl Consumer {
    /// Checks one consumer's credentials (also used for the top-level `consumers`).
    pub(crate) fn check(&self, errs: &mut Errors, p: &str) {
        match (&self.key, &self.key_sha256) {
            (Some(k), None) if k.len() < 8 => errs.push(format!("{p}.key"), "keys must be at least 8 characters"),
            (Some(_), None) => {}
            (None, Some(h)) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                errs.push(format!("{p}.key_sha256"), "must be 64 hex digits (sha256sum of the key)");
            }
            (None, Some(_)) => {}
            _ => errs.push(p, "give exactly one of `key` or `key_sha256`"),
        }
    }
}
