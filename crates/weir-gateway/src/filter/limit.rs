//! `rate-limit` with `policy: local`: GCRA per key through `governor`.
//!
//! Every response that passed the limiter carries `RateLimit-Limit`, `-Remaining` and `-Reset`
//! (IETF draft-ietf-httpapi-ratelimit-headers); a refused one gets 429 with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use weir_config::plugins::{OnRedisError, RateLimitConfig, RateLimitKey, RateLimitPolicy};

use super::BuildError;
use super::redis_limit::{RedisLimiter, Verdict};
use super::{Effects, FilterCx, Outcome, reply};
use crate::view::RequestView;

/// What a request is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Ip(IpAddr),
    Text(Bytes),
    None,
}

type Limiter = RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Where the counts live.
#[derive(Debug)]
enum Counts {
    /// In this process; `sweeper` forgets idle keys so memory stays bounded by active clients.
    Local { limiter: Arc<Limiter>, sweeper: tokio::task::JoinHandle<()> },
    /// In Redis, shared by every gateway.
    Redis { limiter: Box<RedisLimiter>, on_error: OnRedisError, errors: Counter },
}

/// A compiled `rate-limit` filter.
#[derive(Debug)]
pub struct RateLimit {
    counts: Counts,
    key: RateLimitKey,
    header: Option<HeaderName>,
    requests: u32,
    /// Time for one request's worth of quota to come back.
    period: Duration,
    limit_value: HeaderValue,
}

impl Drop for RateLimit {
    fn drop(&mut self) {
        if let Counts::Local { sweeper, .. } = &self.counts {
            sweeper.abort();
        }
    }
}

/// A local keyed GCRA limiter and the task that sweeps its idle keys.
fn local(quota: Quota, window: Duration) -> Counts {
    let limiter = Arc::new(RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>());
    let weak: Weak<Limiter> = Arc::downgrade(&limiter);
    let every = window.clamp(Duration::from_secs(1), Duration::from_secs(60));
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(l) = weak.upgrade() else { return };
            l.retain_recent();
            l.shrink_to_fit();
        }
    });
    Counts::Local { limiter, sweeper }
}

impl RateLimit {
    pub(crate) fn new(c: &RateLimitConfig, route: &str, errors: Counter) -> Result<Self, BuildError> {
        let requests = NonZeroU32::new(c.requests).unwrap_or(NonZeroU32::MIN);
        let period = (c.window.get() / requests.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(requests)).allow_burst(requests);
        let header = match &c.key {
            RateLimitKey::Header(h) => HeaderName::try_from(h.as_str()).ok(),
            _ => None,
        };
        let counts = match (c.policy, &c.redis_url) {
            (RateLimitPolicy::Redis, Some(url)) => Counts::Redis {
                limiter: Box::new(RedisLimiter::new(
                    url,
                    format!("weir:rl:{route}:{}:{}", requests.get(), c.window.get().as_millis()),
                    requests.get(),
                    c.window.get(),
                )?),
                on_error: c.on_redis_error,
                errors,
            },
            _ => local(quota, c.window.get()),
        };
        Ok(Self {
            counts,
            key: c.key.clone(),
            header,
            requests: requests.get(),
            period,
            limit_value: HeaderValue::from(requests.get()),
        })
    }

    fn key(&self, req: &RequestView<'_>, cx: &FilterCx) -> Key {
        match &self.key {
            RateLimitKey::ClientIp(_) => Key::Ip(cx.client),
            RateLimitKey::Header(_) => match self.header.as_ref().and_then(|h| req.header(h)) {
                Some(v) => Key::Text(Bytes::copy_from_slice(v)),
                None => Key::None,
            },
            RateLimitKey::Consumer(_) => match &cx.consumer {
                Some(c) => Key::Text(Bytes::copy_from_slice(c.as_bytes())),
                None => Key::None,
            },
            RateLimitKey::Claim(name) => match cx.claims.as_ref().and_then(|c| c.get(name.as_str())) {
                Some(serde_json::Value::String(s)) => Key::Text(Bytes::copy_from_slice(s.as_bytes())),
                Some(v) => Key::Text(Bytes::from(v.to_string())),
                None => Key::None,
            },
        }
    }

    fn allowed(&self, remaining: u32) -> Outcome {
        let reset = self.period.as_secs_f64() * f64::from(self.requests - remaining.min(self.requests));
        Outcome::Continue(Effects {
            response: vec![
                (LIMIT, self.limit_value.clone()),
                (REMAINING, HeaderValue::from(remaining)),
                (RESET, HeaderValue::from(reset.ceil() as u64)),
            ],
            ..Effects::default()
        })
    }

    fn refused(&self, wait: Duration) -> Outcome {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut rsp = reply(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "rate limit exceeded; retry later");
        let h = rsp.headers_mut();
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        h.insert(LIMIT, self.limit_value.clone());
        h.insert(REMAINING, HeaderValue::from(0u32));
        h.insert(RESET, HeaderValue::from(secs));
        Outcome::Respond(rsp)
    }

    pub(super) async fn on_request(&self, req: &RequestView<'_>, cx: &FilterCx) -> Outcome {
        match self.admit(&self.key(req, cx)).await {
            Admit::Allowed { remaining } => self.allowed(remaining),
            Admit::Refused { wait } => self.refused(wait),
            Admit::Unavailable { deny: false } => Outcome::done(),
            Admit::Unavailable { deny: true } => Outcome::Respond(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limit_unavailable",
                "rate limiter unavailable",
            )),
        }
    }

    /// Counts one request under `key`.
    pub(crate) async fn admit(&self, key: &Key) -> Admit {
        let limiter = match &self.counts {
            Counts::Local { limiter, .. } => limiter,
            Counts::Redis { limiter: redis, on_error, errors } => {
                let text = match key {
                    Key::Ip(ip) => ip.to_string(),
                    Key::Text(b) => String::from_utf8_lossy(b).into_owned(),
                    Key::None => String::new(),
                };
                return match redis.check(&text).await {
                    Ok(Verdict::Allowed { remaining }) => Admit::Allowed { remaining },
                    Ok(Verdict::Refused { retry_after }) => Admit::Refused { wait: retry_after },
                    Err(e) => {
                        errors.inc();
                        tracing::warn!(error = %e, "rate-limit: Redis unavailable");
                        Admit::Unavailable { deny: *on_error == OnRedisError::Deny }
                    }
                };
            }
        };
        match limiter.check_key(key) {
            Ok(snap) => Admit::Allowed { remaining: snap.remaining_burst_capacity() },
            Err(not_until) => Admit::Refused { wait: not_until.wait_time_from(DefaultClock::default().now()) },
        }
    }

    /// The key of `scope` (an MCP tool) for a caller known by its IP, consumer and claims:
    /// each scope counts apart.
    pub(crate) fn scoped_key(&self, scope: &str, caller: &crate::mcp::policy::Caller) -> Key {
        let who = match &self.key {
            RateLimitKey::ClientIp(_) => caller.client.map(|ip| ip.to_string()).unwrap_or_default(),
            RateLimitKey::Header(_) => String::new(),
            RateLimitKey::Consumer(_) => caller.consumer.as_deref().unwrap_or("").to_owned(),
            RateLimitKey::Claim(name) => match caller.claims.as_ref().and_then(|c| c.get(name.as_str())) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            },
        };
        Key::Text(Bytes::from(format!("{scope}\n{who}")))
    }
}

/// What counting one request said.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Let through; this many are left in the window.
    Allowed {
        /// Requests left.
        remaining: u32,
    },
    /// Over the limit until `wait` has passed.
    Refused {
        /// Until the next request would pass.
        wait: Duration,
    },
    /// Redis did not answer; `deny` says whether to refuse.
    Unavailable {
        /// `on_redis_error: deny`.
        deny: bool,
    },
}
