//! Endpoints from DNS (`upstreams[].discovery.dns`).
//!
//! Owns: one resolver task per discovering upstream, started, restarted and stopped as configs
//! change; the last good answer of each (kept while DNS fails); and handing a changed answer to
//! the serving upstream, which takes it in place ([`crate::upstream::Upstream::set_endpoints`]):
//! every endpoint that stays keeps its state, nothing else is rebuilt.
//! Lookups go through hickory-resolver, which also caches within a record's TTL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use weir_config::ValidConfig;
use weir_config::spec::{DnsDiscoverySpec, DnsRecord, EndpointSpec, UpstreamSpec};

use crate::gateway::Gateway;

/// The last good answer per discovering upstream, by upstream name.
pub(crate) type Found = HashMap<String, Vec<EndpointSpec>>;

/// How long the first lookup of a new upstream may hold up the config that adds it.
const FIRST_LOOKUP: Duration = Duration::from_secs(2);

/// How many first lookups of a config run at once.
const FIRST_LOOKUPS_AT_ONCE: usize = 32;

/// How long one query waits for the server at most.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one query waits at least, however short `min_ttl` is.
const LOOKUP_TIMEOUT_MIN: Duration = Duration::from_millis(100);

/// The resolver tasks and their answers.
#[derive(Debug, Default)]
pub(crate) struct Discovery {
    found: Mutex<Found>,
    watches: Mutex<HashMap<String, Watch>>,
}

#[derive(Debug)]
struct Watch {
    spec: DnsDiscoverySpec,
    task: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Discovery {
    /// The answers to build a snapshot with.
    pub(crate) fn found(&self) -> Found {
        self.found.lock().clone()
    }

    /// Makes the running watches those `cfg` declares: new ones are looked up once now (so the
    /// config starts with its endpoints), changed ones restart, dropped ones stop.
    pub(crate) async fn sync(&self, cfg: &ValidConfig, gateway: &Weak<Gateway>) {
        let wanted: HashMap<&str, &DnsDiscoverySpec> = cfg
            .spec()
            .upstreams
            .iter()
            .filter_map(|u| u.discovery.as_ref()?.dns.as_ref().map(|d| (u.name.as_str(), d)))
            .collect();
        // A watch whose settings changed restarts, but its last good answer stays until the
        // new one answers.
        self.watches.lock().retain(|name, w| wanted.get(name.as_str()).is_some_and(|s| **s == w.spec));
        self.found.lock().retain(|name, _| wanted.contains_key(name.as_str()));
        let new: Vec<(&str, &DnsDiscoverySpec)> =
            wanted.into_iter().filter(|(name, _)| !self.watches.lock().contains_key(*name)).collect();
        // First lookups together, within one budget: the caller holds the apply lock.
        let firsts = new.iter().map(|(name, spec)| async move {
            let resolver = resolver(spec);
            let first = tokio::time::timeout(FIRST_LOOKUP, lookup(&resolver, spec)).await;
            let wait = match first {
                Ok(Ok(answer)) => {
                    tracing::info!(upstream = name, endpoints = answer.endpoints.len(), "endpoints discovered");
                    self.found.lock().insert((*name).to_owned(), answer.endpoints);
                    bounded(answer.ttl, spec)
                }
                Ok(Err(e)) => failed(name, spec, &e.to_string()),
                Err(_) => failed(name, spec, "no answer within 2s"),
            };
            (resolver, wait)
        });
        // A bounded number at a time: a thousand upstreams asking at once drop answers at the
        // server. `buffered` keeps their order.
        let started: Vec<_> = futures_util::StreamExt::collect(futures_util::StreamExt::buffered(
            futures_util::stream::iter(firsts.collect::<Vec<_>>()),
            FIRST_LOOKUPS_AT_ONCE,
        ))
        .await;
        for ((name, spec), (resolver, wait)) in new.into_iter().zip(started) {
            let task = tokio::spawn(watch(name.to_owned(), spec.clone(), resolver, wait, gateway.clone()));
            self.watches.lock().insert(name.to_owned(), Watch { spec: spec.clone(), task });
        }
    }

    /// Stops every watch and forgets every answer (no config serves).
    pub(crate) fn clear(&self) {
        self.watches.lock().clear();
        self.found.lock().clear();
    }

    /// Records `endpoints` for `upstream`; whether they differ from the last answer.
    fn update(&self, upstream: &str, endpoints: &[EndpointSpec]) -> bool {
        let mut found = self.found.lock();
        if found.get(upstream).is_some_and(|old| old == endpoints) {
            return false;
        }
        found.insert(upstream.to_owned(), endpoints.to_vec());
        true
    }
}

/// The resolver of one upstream: its `server`, or the system's configuration.
fn resolver(spec: &DnsDiscoverySpec) -> TokioResolver {
    let provider = TokioConnectionProvider::default();
    let builder = match spec.server {
        Some(s) => {
            let servers = NameServerConfigGroup::from_ips_clear(&[s.ip()], s.port(), true);
            TokioResolver::builder_with_config(ResolverConfig::from_parts(None, vec![], servers), provider)
        }
        None => TokioResolver::builder(provider).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the system's DNS configuration; using its defaults");
            TokioResolver::builder_with_config(ResolverConfig::default(), TokioConnectionProvider::default())
        }),
    };
    let mut builder = builder;
    let o = builder.options_mut();
    // A dead server is noticed in seconds, not the library's 10 (5s × 2), and retried on
    // the watch's own schedule; /etc/hosts is not a discovery source. A query (UDP) that got
    // lost is asked again after about `min_ttl`, not a whole second: an upstream that follows
    // its record closely should not fall a second behind for one dropped packet.
    o.timeout = spec.min_ttl.get().clamp(LOOKUP_TIMEOUT_MIN, LOOKUP_TIMEOUT);
    o.attempts = 1;
    o.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    builder.build()
}

/// One answer: the endpoints and how long it holds.
#[derive(Debug)]
struct Answer {
    endpoints: Vec<EndpointSpec>,
    ttl: Duration,
}

async fn lookup(r: &TokioResolver, spec: &DnsDiscoverySpec) -> Result<Answer, ResolveError> {
    let now = Instant::now();
    let (mut endpoints, until) = match spec.record {
        DnsRecord::A => {
            let ips = r.lookup_ip(spec.name.as_str()).await?;
            let port = spec.port.unwrap_or_default();
            let eps = ips.iter().map(|ip| endpoint(SocketAddr::new(ip, port), 1)).collect();
            (eps, ips.valid_until())
        }
        DnsRecord::Srv => srv(r, spec).await?,
    };
    endpoints.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
    endpoints.dedup_by(|a, b| a.address == b.address && a.port == b.port);
    Ok(Answer { endpoints, ttl: until.saturating_duration_since(now) })
}

/// SRV records of the lowest priority present, each target resolved to its addresses.
async fn srv(r: &TokioResolver, spec: &DnsDiscoverySpec) -> Result<(Vec<EndpointSpec>, Instant), ResolveError> {
    let records = r.srv_lookup(spec.name.as_str()).await?;
    let mut until = records.as_lookup().valid_until();
    let best = records.iter().map(|s| s.priority()).min();
    let (mut eps, mut last_err) = (Vec::new(), None);
    for s in records.iter().filter(|s| Some(s.priority()) == best) {
        // One target that does not resolve drops out; the answer fails only if all do.
        match r.lookup_ip(s.target().clone()).await {
            Ok(ips) => {
                until = until.min(ips.valid_until());
                eps.extend(ips.iter().map(|ip| endpoint(SocketAddr::new(ip, s.port()), u32::from(s.weight()).max(1))));
            }
            Err(e) => {
                tracing::warn!(name = %spec.name, target = %s.target(), error = %e, "an SRV target does not resolve; left out");
                last_err = Some(e);
            }
        }
    }
    match last_err {
        Some(e) if eps.is_empty() => Err(e),
        _ => Ok((eps, until)),
    }
}

fn endpoint(addr: SocketAddr, weight: u32) -> EndpointSpec {
    EndpointSpec { address: addr.ip().to_string(), port: addr.port(), weight }
}

/// The record TTL within the upstream's bounds.
fn bounded(ttl: Duration, spec: &DnsDiscoverySpec) -> Duration {
    ttl.clamp(spec.min_ttl.get(), spec.max_ttl.get())
}

/// Logs a failed lookup; the next one is tried after `min_ttl`.
fn failed(upstream: &str, spec: &DnsDiscoverySpec, why: &str) -> Duration {
    tracing::warn!(upstream, name = %spec.name, error = why, "DNS lookup failed; the last good answer keeps serving");
    spec.min_ttl.get()
}

/// `wait` shortened by up to a tenth at random, so upstreams whose answers expire together
/// (all looked up when one config started them) drift apart instead of asking in bursts.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(1.0 - fastrand::f64() * 0.1)
}

/// Looks `spec` up again each time its answer expires; a changed answer goes to the upstream.
async fn watch(
    upstream: String,
    spec: DnsDiscoverySpec,
    resolver: TokioResolver,
    mut wait: Duration,
    gateway: Weak<Gateway>,
) {
    loop {
        tokio::time::sleep(jittered(wait)).await;
        wait = match lookup(&resolver, &spec).await {
            Ok(answer) => {
                let Some(g) = gateway.upgrade() else { return };
                if g.discovery().update(&upstream, &answer.endpoints) {
                    tracing::info!(upstream = %upstream, endpoints = answer.endpoints.len(), "discovered endpoints changed");
                    g.rediscovered(&upstream, &answer.endpoints).await;
                }
                bounded(answer.ttl, &spec)
            }
            Err(e) => failed(&upstream, &spec, &e.to_string()),
        };
    }
}

/// The endpoints discovery found for `u`: registered with the control plane (in `cfg`), or
/// from DNS (`found`); none yet is an empty set, answered 503.
pub(crate) fn endpoints(u: &UpstreamSpec, found: &Found, cfg: &ValidConfig) -> Vec<EndpointSpec> {
    if u.discovery.as_ref().is_some_and(|d| d.registry.is_some()) {
        cfg.registrations().endpoints(&u.name)
    } else {
        found.get(&u.name).cloned().unwrap_or_default()
    }
}
