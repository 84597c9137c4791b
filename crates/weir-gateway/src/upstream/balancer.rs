//! The five balancing policies of seed section 2.3 (and then some).
//!
//! Owns: choosing one available endpoint of an upstream per attempt, skipping endpoints that
//! are down, ejected, or already tried by this request. Per-request cost is a scan of the
//! endpoint list and atomics; only smooth weighted round robin takes a (tiny) lock, because
//! nginx's algorithm updates every endpoint's current weight together.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use http::HeaderName;
use parking_lot::Mutex;
use weir_config::spec::{HashKeySpec, LbPolicy};

use super::Endpoint;

/// Endpoints a request already tried, as a bitmask over endpoint indexes (mod 64).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tried(u64);

impl Tried {
    /// Marks index `i` tried.
    pub fn add(&mut self, i: usize) {
        self.0 |= 1 << (i % 64);
    }

    fn has(self, i: usize) -> bool {
        self.0 & (1 << (i % 64)) != 0
    }
}

/// What a request offers for hashing.
#[derive(Clone, Copy, Debug)]
pub struct PickCx<'a> {
    /// The client's IP.
    pub client_ip: IpAddr,
    /// The request headers.
    pub headers: crate::view::Fields<'a>,
}

/// A compiled balancing policy for one upstream's endpoint list.
#[derive(Debug)]
pub enum Balancer {
    /// Each available endpoint in turn.
    RoundRobin(AtomicUsize),
    /// nginx's smooth weighted round robin: current weights, one per endpoint, and the
    /// configured ones.
    Smooth(Mutex<Vec<i64>>, Box<[u32]>),
    /// Fewest in flight relative to weight (the configured ones); ties rotate.
    LeastConnections(AtomicUsize, Box<[u32]>),
    /// A ring of virtual nodes.
    ConsistentHash {
        /// `(point, endpoint index)`, sorted by point.
        ring: Vec<(u64, usize)>,
        /// Header hashed on; `None` hashes the client IP.
        header: Option<HeaderName>,
    },
    /// Power of two random choices, scored by latency EWMA × (in flight + 1).
    P2cEwma,
}

/// Virtual nodes per unit of weight on the hash ring.
const VNODES_PER_WEIGHT: u32 = 100;

impl Balancer {
    /// Compiles `policy` for `endpoints`, each with the weight it was created with.
    pub fn new(policy: LbPolicy, hash_key: Option<&HashKeySpec>, endpoints: &[Arc<Endpoint>]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
        Self::weighted(policy, hash_key, endpoints, &weights)
    }

    /// Compiles `policy` for `endpoints` with `weights` (one each, at least 1). The weights
    /// are the balancer's own, not the endpoints': an endpoint kept across a reload is shared
    /// with the upstream still serving, which keeps its weights until it is replaced.
    pub fn weighted(
        policy: LbPolicy,
        hash_key: Option<&HashKeySpec>,
        endpoints: &[Arc<Endpoint>],
        weights: &[u32],
    ) -> Self {
        let weights: Box<[u32]> = (0..endpoints.len()).map(|i| weights.get(i).copied().unwrap_or(1).max(1)).collect();
        match policy {
            LbPolicy::RoundRobin => Self::RoundRobin(AtomicUsize::new(0)),
            LbPolicy::WeightedRoundRobin => Self::Smooth(Mutex::new(vec![0; endpoints.len()]), weights),
            LbPolicy::LeastConnections => Self::LeastConnections(AtomicUsize::new(0), weights),
            LbPolicy::P2cEwma => Self::P2cEwma,
            LbPolicy::ConsistentHash => {
                let mut ring = Vec::new();
                for (i, e) in endpoints.iter().enumerate() {
                    let n = weights[i].saturating_mul(VNODES_PER_WEIGHT).min(10_000);
                    for v in 0..n {
                        ring.push((hash_parts(e.label().as_bytes(), v), i));
                    }
                }
                ring.sort_unstable();
                let header = match hash_key {
                    Some(HashKeySpec::Header(h)) => HeaderName::try_from(h.as_str()).ok(),
                    _ => None,
                };
                Self::ConsistentHash { ring, header }
            }
        }
    }

    /// Picks an available endpoint not in `tried`, or `None` when there is none.
    pub fn pick(&self, eps: &[Arc<Endpoint>], cx: &PickCx<'_>, tried: Tried) -> Option<usize> {
        let n = eps.len();
        let ok = |i: usize| !tried.has(i) && eps[i].is_available();
        match self {
            Self::RoundRobin(next) => {
                let start = next.fetch_add(1, Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
            }
            Self::Smooth(current, weights) => {
                let mut cw = current.lock();
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in 0..n {
                    if !ok(i) {
                        continue;
                    }
                    let w = i64::from(weights[i]);
                    cw[i] += w;
                    total += w;
                    if best.is_none_or(|b| cw[i] > cw[b]) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    cw[b] -= total;
                }
                best
            }
            Self::LeastConnections(next, weights) => {
                let start = next.fetch_add(1, Relaxed);
                let mut best: Option<usize> = None;
                for i in (0..n).map(|k| (start + k) % n).filter(|&i| ok(i)) {
                    // inflight/weight compared without division.
                    let better = best.is_none_or(|b| {
                        u64::from(eps[i].inflight()) * u64::from(weights[b])
                            < u64::from(eps[b].inflight()) * u64::from(weights[i])
                    });
                    if better {
                        best = Some(i);
                    }
                }
                best
            }
            Self::ConsistentHash { ring, header } => {
                if ring.is_empty() {
                    return None;
                }
                let h = match header.as_ref().and_then(|h| cx.headers.get(h)) {
                    Some(v) => hash_parts(v, 0),
                    None => hash_ip(cx.client_ip),
                };
                let start = ring.partition_point(|&(p, _)| p < h);
                (0..ring.len()).map(|k| ring[(start + k) % ring.len()].1).find(|&i| ok(i))
            }
            Self::P2cEwma => {
                let score = |i: usize| eps[i].ewma_micros().saturating_mul(u64::from(eps[i].inflight()) + 1);
                if n >= 2 {
                    let a = fastrand::usize(..n);
                    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                    match (ok(a), ok(b)) {
                        (true, true) => return Some(if score(b) < score(a) { b } else { a }),
                        (true, false) => return Some(a),
                        (false, true) => return Some(b),
                        (false, false) => {}
                    }
                }
                (0..n).filter(|&i| ok(i)).min_by_key(|&i| score(i))
            }
        }
    }
}

/// FNV-1a over `bytes` and `salt`, then a splitmix64 finaliser to spread the bits. Written
/// here because the ring must hash identically in every process and release (std's hasher
/// makes no such promise), and a few lines beat a dependency.
fn hash_parts(bytes: &[u8], salt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes.iter().chain(&salt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash_parts(&v4.octets(), 0),
        IpAddr::V6(v6) => hash_parts(&v6.octets(), 0),
    }
}

#[cfg(test)]
#[path = "balancer_tests.rs"]
mod tests;
