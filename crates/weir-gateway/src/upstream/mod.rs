//! Upstreams: named endpoint sets with a balancer, pools and health checking.
//!
//! Owns: compiling an [`UpstreamSpec`] into a live [`Upstream`] whose background work (active
//! probes, idle sweeps) lives exactly as long as it does. Reload keeps an `Upstream` whose spec
//! did not change, so its pools and health state survive (see [`crate::snapshot`]); one whose
//! spec changed keeps each endpoint that remains ([`Upstream::start_after`]).

pub mod balancer;
mod endpoint;
mod health;
pub mod pool;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use weir_config::spec::{EndpointSpec, UpstreamProtocol, UpstreamSpec};

use crate::metrics::UpstreamMetrics;
use crate::tls::{self, TlsError, UpstreamTls};

pub use balancer::{Balancer, PickCx, Tried};
pub use endpoint::{Driver, Endpoint};
use pool::PoolLimits;

/// A live upstream.
#[derive(Debug)]
pub struct Upstream {
    name: Arc<str>,
    /// Kept to decide, on reload, whether this upstream can be reused as is. For an upstream
    /// that discovers its endpoints, the declared spec: no endpoints.
    spec: UpstreamSpec,
    /// The endpoints balanced over now. Discovery and registrations replace them in place
    /// ([`Upstream::set_endpoints`]): the snapshot, its routes and every other upstream stay.
    members: Arc<ArcSwap<Members>>,
    limits: PoolLimits,
    connect_timeout: Duration,
    /// `(consecutive_failures, ejection_time)` when passive checks are on.
    passive: Option<(u32, Duration)>,
    /// The idle sweep, aborted when the upstream is dropped.
    sweeper: JoinHandle<()>,
    protocol: UpstreamProtocol,
    tls: Option<UpstreamTls>,
    metrics: UpstreamMetrics,
}

/// The endpoints of an upstream at one moment, with their balancer.
#[derive(Debug)]
pub struct Members {
    /// What they were built from, in order.
    specs: Vec<EndpointSpec>,
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    /// Per endpoint, its active health probe (none when active checks are off); shared with
    /// the members an endpoint was kept from, so a kept endpoint keeps its probe's rhythm.
    probes: Vec<Arc<Task>>,
}

/// A background task, aborted when the last holder lets go.
#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Members {
    /// No endpoints (every pick fails).
    fn empty() -> Self {
        let balancer = Balancer::RoundRobin(std::sync::atomic::AtomicUsize::new(0));
        Self { specs: Vec::new(), endpoints: Vec::new(), balancer, probes: Vec::new() }
    }

    /// Its endpoints, in order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The weight these members give endpoint `i` (their spec's, not the endpoint's own,
    /// which it may have kept from an earlier weight).
    pub fn weight(&self, i: usize) -> u32 {
        self.specs.get(i).map_or(1, |e| e.weight.max(1))
    }
}

impl Upstream {
    /// Builds an upstream and starts its background tasks (needs a Tokio runtime). Fails only
    /// when its TLS files cannot be loaded.
    pub fn start(spec: &UpstreamSpec, metrics: UpstreamMetrics) -> Result<Self, TlsError> {
        Self::start_after(spec, &spec.load_balancer.endpoints, metrics, None)
    }

    /// [`Upstream::start`] with `endpoints` (the spec's, or those discovered), for a changed
    /// spec of `prev`: each endpoint `prev` also has, at the same address with the same pool
    /// settings, is kept as it is (its pooled connections, health, latency EWMA and ejection
    /// state, and the requests in flight on it), with the new weight held by the new
    /// balancer; new endpoints start cold; dropped ones finish what they carry as the old
    /// upstream is released. A change of protocol, TLS or health check starts every endpoint
    /// anew.
    pub fn start_after(
        spec: &UpstreamSpec,
        endpoints: &[EndpointSpec],
        metrics: UpstreamMetrics,
        prev: Option<&Upstream>,
    ) -> Result<Self, TlsError> {
        let tls = match &spec.tls {
            Some(t) => Some(tls::upstream_tls(t, spec.protocol != UpstreamProtocol::Http1)?),
            None => None,
        };
        let p = &spec.pool;
        let limits = PoolLimits {
            max_connections: p.max_connections as usize,
            max_idle: p.max_idle as usize,
            idle_timeout: p.idle_timeout.get(),
            max_lifetime: p.max_lifetime.get(),
            acquire_timeout: p.acquire_timeout.get(),
        };
        // A changed health check starts the endpoints anew: a kept one would keep the up/down
        // verdict of probes that no longer run.
        let prev = prev.filter(|p| {
            p.spec.protocol == spec.protocol && p.spec.tls == spec.tls && p.spec.health_check == spec.health_check
        });
        let hc = spec.health_check.as_ref();
        let passive = hc.and_then(|h| h.passive.as_ref()).map(|p| (p.consecutive_failures, p.ejection_time.get()));
        let members = Arc::new(ArcSwap::from_pointee(Members::empty()));
        let sweeper = health::spawn_sweeper(Arc::downgrade(&members), limits.idle_timeout);
        let up = Self {
            name: spec.name.as_str().into(),
            spec: spec.clone(),
            members,
            limits,
            connect_timeout: spec.connect_timeout.get(),
            passive,
            sweeper,
            protocol: spec.protocol,
            tls,
            metrics,
        };
        // Kept endpoints come from `prev`; probes start anew (they are `prev`'s tasks).
        let kept = prev.map(|p| p.members.load_full());
        up.members.store(Arc::new(up.members_for(endpoints, kept.as_deref(), false)));
        Ok(up)
    }

    /// Members for `specs`, keeping the endpoints of `old` at the same address (and their
    /// probes, with `keep_probes`).
    fn members_for(&self, specs: &[EndpointSpec], old: Option<&Members>, keep_probes: bool) -> Members {
        let active = self.spec.health_check.as_ref().and_then(|h| h.active.as_ref());
        let (mut endpoints, mut probes) = (Vec::with_capacity(specs.len()), Vec::new());
        for e in specs {
            let at =
                old.and_then(|o| Some((o, o.endpoints.iter().position(|k| k.is(&e.address, e.port, &self.limits))?)));
            let endpoint = match at {
                Some((o, i)) => o.endpoints[i].clone(),
                None => Arc::new(
                    Endpoint::new(&e.address, e.port, e.weight, self.limits.clone())
                        .with_pool_wait(self.metrics.pool_wait.clone()),
                ),
            };
            if let Some(active) = active {
                let kept = at.filter(|_| keep_probes).and_then(|(o, i)| o.probes.get(i).cloned());
                probes.push(kept.unwrap_or_else(|| {
                    let tls = self.tls.clone();
                    Arc::new(Task(health::spawn_prober(self.name.clone(), endpoint.clone(), active.clone(), tls)))
                }));
            }
            endpoints.push(endpoint);
        }
        let weights: Vec<u32> = specs.iter().map(|e| e.weight).collect();
        let lb = &self.spec.load_balancer;
        let balancer = Balancer::weighted(lb.policy, lb.hash_key.as_ref(), &endpoints, &weights);
        Members { specs: specs.to_vec(), endpoints, balancer, probes }
    }

    /// Makes `specs` the endpoints balanced over, in place: each endpoint that stays keeps
    /// its connections, health, probe and in-flight requests; new ones start cold; removed
    /// ones finish what they carry. Requests already past their pick keep the endpoint they
    /// picked. Returns whether anything changed. Costs O(endpoints of this upstream).
    pub fn set_endpoints(&self, specs: &[EndpointSpec]) -> bool {
        let old = self.members.load_full();
        if old.specs == specs {
            return false;
        }
        self.members.store(Arc::new(self.members_for(specs, Some(&old), true)));
        true
    }

    /// Metric handles.
    pub fn metrics(&self) -> &UpstreamMetrics {
        &self.metrics
    }

    /// The protocol spoken to the endpoints.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// TLS towards the endpoints, if any.
    pub fn tls(&self) -> Option<&UpstreamTls> {
        self.tls.as_ref()
    }

    /// The upstream's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// Its endpoints now.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// TCP connect deadline.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Passive ejection policy.
    pub fn passive(&self) -> Option<(u32, Duration)> {
        self.passive
    }

    /// Picks an endpoint for one attempt: its index among the members now, and it.
    pub fn pick(&self, cx: &PickCx<'_>, tried: Tried) -> Option<(usize, Arc<Endpoint>)> {
        let m = self.members.load();
        let i = m.balancer.pick(&m.endpoints, cx, tried)?;
        Some((i, m.endpoints[i].clone()))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}
