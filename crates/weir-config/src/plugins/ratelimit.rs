//! `rate-limit` configuration.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::error::Errors;
use crate::spec::Empty;

/// Requests per key per window. 429 with `Retry-After` and `RateLimit-*` headers beyond it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `local` (per gateway process, GCRA) or `redis` (shared through a Redis server).
    #[serde(default)]
    pub policy: RateLimitPolicy,
    /// Requests allowed per window.
    pub requests: u32,
    /// The window.
    pub window: HumanDuration,
    /// What is limited. Default the client IP.
    #[serde(default)]
    pub key: RateLimitKey,
    /// `redis://host:port` for `policy: redis`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// With `policy: redis`, what to do when Redis is unreachable. Default `allow`.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
}

/// Where counts live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitPolicy {
    /// In this process.
    #[default]
    Local,
    /// In Redis, exact across gateway processes.
    Redis,
}

/// What a request is counted under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RateLimitKey {
    /// The client's IP.
    ClientIp(Empty),
    /// A request header's value (requests without it share one bucket).
    Header(String),
    /// The consumer found by an authentication plugin (anonymous requests share one bucket).
    Consumer(Empty),
    /// A JWT claim (needs `jwt-auth`).
    Claim(String),
}

impl Default for RateLimitKey {
    fn default() -> Self {
        Self::ClientIp(Empty {})
    }
}

/// Fail mode when Redis is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    /// Let requests through.
    #[default]
    Allow,
    /// Refuse them (503).
    Deny,
}

impl RateLimitConfig {
    pub(crate) fn check(&self, errs: &mut Errors, at: &str) {
        if self.requests == 0 {
            errs.push(format!("{at}.requests"), "must be at least 1");
        }
        if self.window.get().is_zero() {
            errs.push(format!("{at}.window"), "must be greater than 0");
        }
        match (self.policy, &self.redis_url) {
            (RateLimitPolicy::Redis, None) => errs.push(format!("{at}.redis_url"), "policy redis needs a redis_url"),
            (RateLimitPolicy::Redis, Some(u)) if !(u.starts_with("redis://") || u.starts_with("rediss://")) => {
                errs.push(format!("{at}.redis_url"), "must be a redis:// URL");
            }
            _ => {}
        }
    }
}
