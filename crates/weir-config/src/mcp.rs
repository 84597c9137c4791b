//! MCP routes as operators write them: the Model Context Protocol servers a route federates,
//! how their tool names are exposed, which callers may use which tools, and the key that
//! seals session ids. Checks on these live in [`check`]; the gateway's `mcp` module runs them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::error::Errors;

/// `mcp:` of a route: Weir answers MCP itself and federates these servers behind the route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpSpec {
    /// The MCP servers behind the route; their tools are listed together.
    pub servers: Vec<McpServerSpec>,
    /// How tool names are exposed to clients.
    #[serde(default)]
    pub names: NamePolicy,
    /// Key (at least 32 bytes) that seals session ids. Give every replica the same key so a
    /// session continues on any of them and survives a restart; without one, each gateway
    /// process makes its own and its sessions end with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// Which tools callers may see and call.
    #[serde(default)]
    pub tools: ToolPolicySpec,
    /// How long one server may take to answer a list call; a slower or failing server is left
    /// out of that answer (its tools come back when it does). Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_timeout: Option<HumanDuration>,
    /// A tool call's stream that carries nothing for this long is closed. Default 5m. The
    /// route's `timeout` never cuts a live stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<HumanDuration>,
    /// Origins (`https://app.example.com`) whose browser pages may call this endpoint. A
    /// request with an `Origin` that is neither listed nor the endpoint's own (the `Host` it
    /// was sent to) gets 403, as the MCP transport spec asks against DNS rebinding. Requests
    /// without `Origin` (agents, not browsers) are not affected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Weir as an OAuth 2.1 resource server for this endpoint, as the MCP authorization spec
    /// asks: bearer tokens for `resource` only, and protected resource metadata that tells
    /// clients where to get them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<McpAuthSpec>,
}

/// OAuth 2.1 resource-server settings of an MCP route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpAuthSpec {
    /// This endpoint's canonical URL, e.g. `https://mcp.example.com/mcp`: a token's `aud`
    /// must name it, and its metadata is served at
    /// `/.well-known/oauth-protected-resource/mcp`.
    pub resource: String,
    /// Authorization servers that issue tokens for it (listed in the metadata).
    pub authorization_servers: Vec<String>,
    /// Scopes a token must carry (its `scope` claim, space-separated, or `scp` list); a token
    /// without them gets 403 `insufficient_scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// How tokens are verified, as the `jwt-auth` plugin takes it (`keys` or `jwks_url`,
    /// `issuer`, …); the audience is always `resource`.
    pub verify: crate::plugins::JwtAuthConfig,
}

impl McpAuthSpec {
    /// Where its metadata is served: `/.well-known/oauth-protected-resource` and the path of
    /// `resource` (RFC 9728).
    pub fn metadata_path(&self) -> String {
        let rest = self.resource.split_once("://").map_or("", |(_, r)| r);
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        format!("/.well-known/oauth-protected-resource{}", path.trim_end_matches('/'))
    }

    /// The metadata's full URL, for `WWW-Authenticate`.
    pub fn metadata_url(&self) -> String {
        let (scheme, rest) = self.resource.split_once("://").unwrap_or(("https", &self.resource));
        let authority = rest.split('/').next().unwrap_or("");
        format!("{scheme}://{authority}{}", self.metadata_path())
    }
}

/// One MCP server behind a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerSpec {
    /// Its name: the prefix of its tools' names (`NAME__tool`) and a metrics label.
    pub name: String,
    /// Its Streamable HTTP endpoint, e.g. `http://127.0.0.1:9000/mcp` (or `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A command Weir starts and supervises, speaking MCP on its stdin and stdout, e.g.
    /// `[python3, server.py]` (or `url`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The protocol revision it speaks; `auto` asks it (`server/discover`), falls back to the
    /// `initialize` handshake, and tries the legacy HTTP+SSE transport (an event stream at
    /// `url`) when `url` takes no POST.
    #[serde(default)]
    pub era: McpEra,
    /// For an `https://` URL: the CA to trust (default: the system's), the name to verify,
    /// a client certificate, as an upstream's `tls` takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::spec::UpstreamTlsSpec>,
    /// Headers sent to this server on every request (its own credentials). The client's
    /// `Authorization` is never passed on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// An MCP protocol revision, as servers speak it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum McpEra {
    /// Ask the server.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Sessionful Streamable HTTP: `initialize`, `Mcp-Session-Id`.
    #[serde(rename = "2025-11-25")]
    Sessionful,
    /// Stateless: no `initialize`, routing headers that match the body.
    #[serde(rename = "2026-07-28")]
    Stateless,
    /// The legacy HTTP+SSE transport: `url` is the server's event stream (e.g.
    /// `http://127.0.0.1:9000/sse`), and messages go where its `endpoint` event says.
    #[serde(rename = "2024-11-05")]
    Legacy,
}

/// How the names of federated tools are exposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NamePolicy {
    /// Every tool as `SERVER__TOOL`: names never collide.
    #[default]
    Prefix,
    /// Bare names; when two servers offer the same name, the server listed first keeps it
    /// and the other's is prefixed.
    FirstWins,
}

/// Tool access. A tool is usable when `allow` is empty or matches it, no `deny` matches it,
/// and every rule that names it holds for the caller. Patterns match exposed names, with `*`
/// for any run of characters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicySpec {
    /// Tools that may be used (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Tools that may never be used; wins over `allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Tools only some callers may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ToolRuleSpec>,
    /// Rate limits on calls of some tools, counted per tool and caller (as `key` says). Only
    /// `tools/call` counts: `initialize` and lists never do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<ToolLimitSpec>,
}

/// A rate limit on calls of some tools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolLimitSpec {
    /// The tools it limits; each tool has its own count.
    pub tools: Vec<String>,
    /// The limit, as the `rate-limit` plugin takes it (`requests`, `window`, `key`, `policy`,
    /// `redis_url`, `on_redis_error`).
    pub rate: crate::plugins::RateLimitConfig,
}

/// Tools only callers that pass this rule may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolRuleSpec {
    /// The tools it governs.
    pub tools: Vec<String>,
    /// Consumers (from `key-auth`, or a JWT's consumer claim) that pass; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
    /// JWT claims that must hold, claim name to value (a list claim must contain the value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
}

/// Checks what the types cannot: names, URLs, patterns and the key; errors go under `at`
/// (the route's path).
pub(crate) fn check(errs: &mut Errors, at: &str, m: &McpSpec) {
    if m.servers.is_empty() {
        errs.push(format!("{at}.mcp.servers"), "list at least one MCP server");
    }
    let mut seen = std::collections::HashSet::new();
    for (i, s) in m.servers.iter().enumerate() {
        let here = format!("{at}.mcp.servers[{i}]");
        let ok = !s.name.is_empty()
            && s.name.len() <= 32
            && s.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            errs.push(format!("{here}.name"), format!("invalid server name {:?}: use 1-32 a-z, 0-9 or '-'", s.name));
        }
        if !seen.insert(s.name.as_str()) {
            errs.push(format!("{here}.name"), format!("server {:?} is listed twice", s.name));
        }
        match (&s.url, s.command.is_empty()) {
            (Some(url), true) => {
                let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
                let authority = rest.map(|r| r.split('/').next().unwrap_or(""));
                if !authority.is_some_and(|a| !a.is_empty() && !a.contains(char::is_whitespace)) {
                    errs.push(
                        format!("{here}.url"),
                        "write an http:// or https:// URL, e.g. http://127.0.0.1:9000/mcp",
                    );
                }
                if s.tls.is_some() && !url.starts_with("https://") {
                    errs.push(format!("{here}.tls"), "`tls` is for an https:// URL");
                }
            }
            (None, false) => {}
            (Some(_), false) => errs.push(here.clone(), "give either `url` or `command`, not both"),
            (None, true) => errs.push(here.clone(), "give the server's `url`, or a `command` that runs it on stdio"),
        }
        for k in s.headers.keys() {
            let token =
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                errs.push(format!("{here}.headers"), format!("{k:?} is not a header name"));
            }
        }
    }
    for (i, o) in m.allowed_origins.iter().enumerate() {
        let ok = ["https://", "http://"]
            .iter()
            .any(|p| o.strip_prefix(p).is_some_and(|r| !r.is_empty() && !r.contains('/')));
        if !ok {
            errs.push(
                format!("{at}.mcp.allowed_origins[{i}]"),
                "write an origin: scheme and host, e.g. https://app.example.com",
            );
        }
    }
    if let Some(k) = &m.session_key
        && k.len() < 32
    {
        errs.push(format!("{at}.mcp.session_key"), "give at least 32 bytes (e.g. `openssl rand -hex 32`)");
    }
    for (field, d) in [("list_timeout", m.list_timeout), ("idle_timeout", m.idle_timeout)] {
        if d.is_some_and(|d| d.get().is_zero()) {
            errs.push(format!("{at}.mcp.{field}"), "must be greater than 0");
        }
    }
    for (i, r) in m.tools.rules.iter().enumerate() {
        if r.tools.is_empty() {
            errs.push(format!("{at}.mcp.tools.rules[{i}].tools"), "name the tools this rule governs");
        }
    }
    if let Some(a) = &m.auth {
        let ok = ["https://", "http://"].iter().any(|p| a.resource.strip_prefix(p).is_some_and(|r| !r.is_empty()));
        if !ok || a.resource.contains('#') {
            errs.push(format!("{at}.mcp.auth.resource"), "write this endpoint's URL, e.g. https://mcp.example.com/mcp");
        }
        if a.authorization_servers.is_empty() {
            errs.push(format!("{at}.mcp.auth.authorization_servers"), "name at least one authorization server");
        }
        a.verify.check(errs, &format!("{at}.mcp.auth.verify"));
    }
    for (i, l) in m.tools.limits.iter().enumerate() {
        let here = format!("{at}.mcp.tools.limits[{i}]");
        if l.tools.is_empty() {
            errs.push(format!("{here}.tools"), "name the tools this limit counts");
        }
        l.rate.check(errs, &format!("{here}.rate"));
        if matches!(l.rate.key, crate::plugins::RateLimitKey::Header(_)) {
            errs.push(format!("{here}.rate.key"), "a tool limit counts per client_ip, consumer or claim");
        }
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else { return rest.is_empty() };
    for p in parts {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn metadata_lives_beside_the_resource() {
        let a: super::McpAuthSpec = serde_json::from_value(serde_json::json!({
            "resource": "https://mcp.example.com/tools/mcp", "authorization_servers": ["https://idp"],
            "verify": {"keys": []}}))
        .unwrap();
        assert_eq!(a.metadata_path(), "/.well-known/oauth-protected-resource/tools/mcp");
        assert_eq!(a.metadata_url(), "https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp");
    }

    #[test]
    fn bad_mcp_routes_are_refused_with_every_path() {
        let yaml = r#"
routes:
  - name: tools
    upstream: u
    mcp:
      session_key: short
      servers:
        - { name: Math, url: "ftp://x" }
        - { name: two, url: "http://127.0.0.1:1/mcp", command: [x] }
        - { name: three }
      tools:
        limits:
          - { tools: [], rate: { requests: 0, window: 1m, key: { header: x-a } } }
upstreams:
  - { name: u, load_balancer: { endpoints: [{ address: 127.0.0.1, port: 1 }] } }
"#;
        let errs = crate::validate(crate::parse_yaml(yaml).unwrap()).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "routes[0]",
            "routes[0].mcp.servers[0].name",
            "routes[0].mcp.servers[0].url",
            "routes[0].mcp.servers[1]",
            "routes[0].mcp.servers[2]",
            "routes[0].mcp.session_key",
            "routes[0].mcp.tools.limits[0].tools",
            "routes[0].mcp.tools.limits[0].rate.requests",
            "routes[0].mcp.tools.limits[0].rate.key",
        ] {
            assert!(paths.contains(&want), "{want} missing from {errs}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob("math__*", "math__add"));
        assert!(glob("*", "x"));
        assert!(glob("a*c*e", "abcde"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("math__*", "files__add"));
        assert!(!glob("a*b*b", "ab"));
        assert!(glob("*add", "math__add"));
    }
}
