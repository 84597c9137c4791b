//! `headers` and `rewrite` configurations.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::check_header_name;
use crate::error::Errors;

/// Header edits for one direction; applied in the order remove, set, add.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers appended (kept alongside existing values).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Headers replaced (or created).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderOps {
    fn check(&self, errs: &mut Errors, at: &str) {
        for (k, v) in self.add.iter().chain(&self.set) {
            check_header_name(errs, &format!("{at}.{k}"), k);
            if v.bytes().any(|b| b < 0x20 && b != b'\t') {
                errs.push(format!("{at}.{k}"), "header values cannot contain control characters");
            }
        }
        for (i, k) in self.remove.iter().enumerate() {
            check_header_name(errs, &format!("{at}.remove[{i}]"), k);
        }
    }
}

/// Request and response header edits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Edits to the request sent upstream.
    #[serde(default)]
    pub request: HeaderOps,
    /// Edits to the response sent to the client.
    #[serde(default)]
    pub response: HeaderOps,
}

impl HeadersConfig {
    pub(crate) fn check(&self, errs: &mut Errors, at: &str) {
        self.request.check(errs, &format!("{at}.request"));
        self.response.check(errs, &format!("{at}.response"));
    }
}

/// Path rewriting before the request goes upstream (the query string is kept).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// Remove this prefix from the path (`/api/users` → `/users` with `/api`).
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Replace the first match of `regex` in the path with `replacement` (`$1` refers to groups).
    #[serde(default)]
    pub regex: Option<String>,
    /// Replacement for `regex`.
    #[serde(default)]
    pub replacement: Option<String>,
}

impl RewriteConfig {
    pub(crate) fn check(&self, errs: &mut Errors, at: &str) {
        if let Some(p) = &self.strip_prefix
            && !p.starts_with('/')
        {
            errs.push(format!("{at}.strip_prefix"), format!("{p:?} must start with '/'"));
        }
        match (&self.regex, &self.replacement) {
            (Some(re), Some(_)) => {
                if let Err(e) = regex::Regex::new(re) {
                    let last = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
                    errs.push(format!("{at}.regex"), format!("invalid regex {re:?}: {last}"));
                }
            }
            (None, None) => {}
            _ => errs.push(at, "give both `regex` and `replacement`, or neither"),
        }
        if self.strip_prefix.is_none() && self.regex.is_none() {
            errs.push(at, "give `strip_prefix` or `regex` + `replacement`");
        }
    }
}
