//! `rate-limit` with `policy: redis`: one GCRA per key in Redis, exact across gateways.
//!
//! The check is one Lua script (atomic on the Redis server, clocked by Redis' own `TIME`, so
//! gateway clocks never disagree). Redis is asked with a short deadline; when it cannot answer,
//! `on_redis_error` decides: `allow` lets the request through, `deny` answers 503.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::BuildError;

/// GCRA: the key stores the theoretical arrival time (TAT) in ms. Returns
/// `{allowed (0|1), retry_after_ms, remaining}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = period * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + period
if new_tat - window > now then
  return {0, new_tat - window - now, 0}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now))
return {1, 0, math.floor((now + window - new_tat) / period)}
";

/// What Redis said.
#[derive(Debug, Clone, Copy)]
pub(super) enum Verdict {
    /// Allowed; how many more fit now.
    Allowed { remaining: u32 },
    /// Refused; when to retry.
    Refused { retry_after: Duration },
}

/// A Redis-backed limiter.
pub(super) struct RedisLimiter {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    script: Script,
    prefix: String,
    period_ms: u64,
    limit: u32,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisLimiter({})", self.prefix)
    }
}

impl RedisLimiter {
    /// A limiter of `limit` per `window` at `url`; keys are namespaced by `prefix`.
    pub(super) fn new(url: &str, prefix: String, limit: u32, window: Duration) -> Result<Self, BuildError> {
        let client = redis::Client::open(url).map_err(|error| BuildError::RedisUrl { url: url.to_owned(), error })?;
        let period_ms = (window.as_millis() as u64 / u64::from(limit.max(1))).max(1);
        Ok(Self { client, conn: OnceCell::new(), script: Script::new(GCRA), prefix, period_ms, limit })
    }

    /// Asks Redis, with a 250 ms deadline.
    pub(super) async fn check(&self, key: &str) -> Result<Verdict, String> {
        let work = async {
            let conn = self
                .conn
                .get_or_try_init(|| async {
                    let cfg = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Duration::from_millis(250))
                        .set_response_timeout(Duration::from_millis(250))
                        .set_number_of_retries(1);
                    ConnectionManager::new_with_config(self.client.clone(), cfg).await
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut conn = conn.clone();
            let full_key = format!("{}:{key}", self.prefix);
            let (allowed, retry_ms, remaining): (u8, u64, u32) = self
                .script
                .key(full_key)
                .arg(self.period_ms)
                .arg(self.limit)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(if allowed == 1 {
                Verdict::Allowed { remaining }
            } else {
                Verdict::Refused { retry_after: Duration::from_millis(retry_ms) }
            })
        };
        tokio::time::timeout(Duration::from_millis(300), work).await.map_err(|_| "redis timed out".to_owned())?
    }
}
