//! Built-in plugin configurations: their serde shapes, JSON Schemas and checks.
//!
//! Owns: the vocabulary of `plugins: [{ name, config }]` on routes and at the top level, and
//! validating each `config` against its plugin's schema with errors that carry the path
//! (`routes[2].plugins[0].config.consumers[1].key: …`).
//! Does not own: what the plugins do (see `weir-gateway`'s `filter` module).

mod accesslog;
mod cors;
mod headers;
mod ip;
mod jwt;
mod keyauth;
mod misc;
mod ratelimit;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use accesslog::{AccessLogConfig, AccessLogSink};
pub use cors::CorsConfig;
pub use headers::{HeaderOps, HeadersConfig, RewriteConfig};
pub use ip::{IpRestrictionConfig, parse_cidr};
pub use jwt::{JWT_ALGS, JwtAuthConfig, JwtKey, TokenSource};
pub use keyauth::{Consumer, KeyAuthConfig};
pub use misc::{FaultAbort, FaultConfig, RequestIdConfig};
pub use ratelimit::{OnRedisError, RateLimitConfig, RateLimitKey, RateLimitPolicy};

use crate::error::Errors;

/// One plugin instance: a built-in name and its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Plugin name, e.g. `key-auth` (`weir plugins list` shows them all).
    pub name: String,
    /// The plugin's configuration, checked against its schema (`weir plugins schema NAME`).
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// A built-in plugin's configuration, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum PluginConfig {
    /// `request-id`.
    RequestId(RequestIdConfig),
    /// `headers`.
    Headers(HeadersConfig),
    /// `rewrite`.
    Rewrite(RewriteConfig),
    /// `cors`.
    Cors(CorsConfig),
    /// `ip-restriction`.
    IpRestriction(IpRestrictionConfig),
    /// `key-auth`.
    KeyAuth(KeyAuthConfig),
    /// `jwt-auth`.
    JwtAuth(JwtAuthConfig),
    /// `rate-limit`.
    RateLimit(RateLimitConfig),
    /// `fault`.
    Fault(FaultConfig),
    /// `access-log`.
    AccessLog(AccessLogConfig),
    /// A plugin package (proxy-wasm), by its metadata name.
    Wasm(WasmConfig),
}

/// A package plugin's use on a route: which package, and its `config` (already checked
/// against the package's schema).
#[derive(Clone, Debug, PartialEq)]
pub struct WasmConfig {
    /// The package.
    pub package: std::sync::Arc<crate::package::Package>,
    /// Its configuration, handed to the plugin's `on_configure` as JSON.
    pub config: serde_json::Value,
}

/// A built-in plugin: name, one-line description, schema.
#[derive(Debug)]
pub struct Builtin {
    /// Name used in configs.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Its phase in the filter chain.
    pub phase: &'static str,
    schema: fn() -> serde_json::Value,
}

impl Builtin {
    /// The JSON Schema of its `config`.
    pub fn schema(&self) -> serde_json::Value {
        (self.schema)()
    }
}

fn schema_of<T: JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default()
}

/// Every built-in plugin, in phase order.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "cors",
        description: "answer CORS preflights and add CORS response headers",
        phase: "cors",
        schema: schema_of::<CorsConfig>,
    },
    Builtin {
        name: "request-id",
        description: "propagate or generate a request id, upstream and in the response",
        phase: "access",
        schema: schema_of::<RequestIdConfig>,
    },
    Builtin {
        name: "ip-restriction",
        description: "allow or deny clients by CIDR",
        phase: "access",
        schema: schema_of::<IpRestrictionConfig>,
    },
    Builtin {
        name: "jwt-auth",
        description: "verify JWTs (HS/RS/PS/ES/EdDSA, inline, PEM or JWKS keys), forward claims, cache verified tokens",
        phase: "authn",
        schema: schema_of::<JwtAuthConfig>,
    },
    Builtin {
        name: "key-auth",
        description: "authenticate API keys of named consumers (keys kept hashed)",
        phase: "authn",
        schema: schema_of::<KeyAuthConfig>,
    },
    Builtin {
        name: "rate-limit",
        description: "limit requests per key in a window (GCRA), locally",
        phase: "rate_limit",
        schema: schema_of::<RateLimitConfig>,
    },
    Builtin {
        name: "fault",
        description: "inject delays or aborts (chaos testing)",
        phase: "transform",
        schema: schema_of::<FaultConfig>,
    },
    Builtin {
        name: "access-log",
        description: "one JSON line per request to stdout, a file or an HTTP collector (batched, never blocking)",
        phase: "log",
        schema: schema_of::<AccessLogConfig>,
    },
    Builtin {
        name: "headers",
        description: "add, set or remove request and response headers",
        phase: "transform",
        schema: schema_of::<HeadersConfig>,
    },
    Builtin {
        name: "rewrite",
        description: "strip a path prefix or rewrite the path with a regex",
        phase: "transform",
        schema: schema_of::<RewriteConfig>,
    },
];

/// The built-in named `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// Parses one plugin's config, reporting schema violations and semantic problems at `at`
/// (the plugin's own path, e.g. `routes[1].plugins[0]`).
pub(crate) fn check(
    errs: &mut Errors,
    at: &str,
    p: &PluginSpec,
    packages: &[std::sync::Arc<crate::package::Package>],
) -> Option<PluginConfig> {
    let Some(b) = builtin(&p.name) else {
        if let Some(pkg) = packages.iter().find(|k| k.meta.name == p.name) {
            return against_schema(errs, at, &pkg.schema, &p.config)
                .then(|| PluginConfig::Wasm(WasmConfig { package: pkg.clone(), config: p.config.clone() }));
        }
        let known: Vec<_> =
            BUILTINS.iter().map(|b| b.name).chain(packages.iter().map(|k| k.meta.name.as_str())).collect();
        errs.push(
            format!("{at}.name"),
            format!(
                "unknown plugin {:?} (known: {}); a package must be listed in `plugin_packages`",
                p.name,
                known.join(", ")
            ),
        );
        return None;
    };
    if !against_schema(errs, at, &b.schema(), &p.config) {
        return None;
    }
    let cfg = &p.config;
    let parsed = match b.name {
        "cors" => typed(errs, at, cfg).map(PluginConfig::Cors),
        "request-id" => typed(errs, at, cfg).map(PluginConfig::RequestId),
        "ip-restriction" => typed(errs, at, cfg).map(PluginConfig::IpRestriction),
        "key-auth" => typed(errs, at, cfg).map(PluginConfig::KeyAuth),
        "jwt-auth" => typed(errs, at, cfg).map(PluginConfig::JwtAuth),
        "rate-limit" => typed(errs, at, cfg).map(PluginConfig::RateLimit),
        "fault" => typed(errs, at, cfg).map(PluginConfig::Fault),
        "access-log" => typed(errs, at, cfg).map(PluginConfig::AccessLog),
        "headers" => typed(errs, at, cfg).map(PluginConfig::Headers),
        "rewrite" => typed(errs, at, cfg).map(PluginConfig::Rewrite),
        _ => None,
    }?;
    let at = format!("{at}.config");
    match &parsed {
        PluginConfig::IpRestriction(c) => c.check(errs, &at),
        PluginConfig::KeyAuth(c) => c.check(errs, &at),
        PluginConfig::JwtAuth(c) => c.check(errs, &at),
        PluginConfig::RateLimit(c) => c.check(errs, &at),
        PluginConfig::Headers(c) => c.check(errs, &at),
        PluginConfig::Rewrite(c) => c.check(errs, &at),
        PluginConfig::Fault(c) => c.check(errs, &at),
        PluginConfig::AccessLog(c) => c.check(errs, &at),
        PluginConfig::Cors(_) | PluginConfig::RequestId(_) | PluginConfig::Wasm(_) => {}
    }
    Some(parsed)
}

/// Checks `config` against `schema`, each violation at its path under `{at}.config` (under
/// `config` when `at` is empty).
pub(crate) fn against_schema(
    errs: &mut Errors,
    at: &str,
    schema: &serde_json::Value,
    config: &serde_json::Value,
) -> bool {
    let Ok(v) = jsonschema::validator_for(schema) else { return true };
    let base = if at.is_empty() { "config".to_owned() } else { format!("{at}.config") };
    let mut ok = true;
    for e in v.iter_errors(config) {
        ok = false;
        let inner = crate::error::pointer_to_path(&e.instance_path().to_string());
        let path = if inner.is_empty() { base.clone() } else { format!("{base}.{inner}") };
        errs.push(path, crate::messages::humanize(&e));
    }
    ok
}

fn typed<T: serde::de::DeserializeOwned>(errs: &mut Errors, at: &str, v: &serde_json::Value) -> Option<T> {
    match serde_json::from_value(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.push(format!("{at}.config"), e.to_string());
            None
        }
    }
}

/// Checks an HTTP header name as written in a config.
pub(crate) fn check_header_name(errs: &mut Errors, at: &str, name: &str) {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        errs.push(at, format!("invalid header name {name:?}"));
    }
}
