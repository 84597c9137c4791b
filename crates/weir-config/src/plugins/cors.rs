//! `cors` configuration.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

/// Cross-origin resource sharing. Preflights (`OPTIONS` with `Access-Control-Request-Method`)
/// are answered by Weir without reaching authentication or the upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins, exact (`https://app.example`) or `*`. Default `*`.
    #[serde(default = "star")]
    pub allow_origins: Vec<String>,
    /// Allowed methods. Default GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD.
    #[serde(default = "methods")]
    pub allow_methods: Vec<String>,
    /// Allowed request headers; empty reflects what the preflight asks for.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long browsers may cache a preflight.
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
    /// Allow credentials (the origin is then echoed, never `*`).
    #[serde(default)]
    pub allow_credentials: bool,
}

fn star() -> Vec<String> {
    vec!["*".into()]
}

fn methods() -> Vec<String> {
    ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"].map(String::from).to_vec()
}
