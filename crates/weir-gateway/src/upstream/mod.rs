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

use tokio::task::JoinHandle;
use weir_config::spec::{UpstreamProtocol, UpstreamSpec};

use crate::metrics::UpstreamMetrics;
use crate::tls::{self, TlsError, UpstreamTls};

pub use balancer::{Balancer, PickCx, Tried};
pub use endpoint::{Driver, Endpoint};
use pool::PoolLimits;

/// A live upstream.
#[derive(Debug)]
pub struct Upstream {
    name: Arc<str>,
    /// Kept to decide, on reload, whether this upstream can be reused as is.
    spec: UpstreamSpec,
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    connect_timeout: Duration,
    /// `(consecutive_failures, ejection_time)` when passive checks are on.
    passive: Option<(u32, Duration)>,
    /// Probe and sweep tasks, aborted when the upstream is dropped.
    tasks: Vec<JoinHandle<()>>,
    protocol: UpstreamProtocol,
    tls: Option<UpstreamTls>,
    metrics: UpstreamMetrics,
}

impl Upstream {
    /// Builds an upstream and starts its background tasks (needs a Tokio runtime). Fails only
    /// when its TLS files cannot be loaded.
    pub fn start(spec: &UpstreamSpec, metrics: UpstreamMetrics) -> Result<Self, TlsError> {
        Self::start_after(spec, metrics, None)
    }

    /// [`Upstream::start`] for a changed spec of `prev`: each endpoint `prev` also has, at the
    /// same address with the same pool settings, is kept as it is (its pooled connections,
    /// health, latency EWMA and ejection state, and the requests in flight on it), with the
    /// new weight held by the new balancer; new endpoints start cold; dropped ones finish
    /// what they carry as the old upstream is released. A change of protocol, TLS or health check starts every
    /// endpoint anew.
    pub fn start_after(
        spec: &UpstreamSpec,
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
        let lb = &spec.load_balancer;
        // A changed health check starts the endpoints anew: a kept one would keep the up/down
        // verdict of probes that no longer run.
        let prev = prev.filter(|p| {
            p.spec.protocol == spec.protocol && p.spec.tls == spec.tls && p.spec.health_check == spec.health_check
        });
        let endpoints: Vec<Arc<Endpoint>> = lb
            .endpoints
            .iter()
            .map(|e| {
                let kept = prev.and_then(|p| p.endpoints.iter().find(|o| o.is(&e.address, e.port, &limits)));
                match kept {
                    Some(k) => k.clone(),
                    None => Arc::new(
                        Endpoint::new(&e.address, e.port, e.weight, limits.clone())
                            .with_pool_wait(metrics.pool_wait.clone()),
                    ),
                }
            })
            .collect();
        let weights: Vec<u32> = lb.endpoints.iter().map(|e| e.weight).collect();
        let balancer = Balancer::weighted(lb.policy, lb.hash_key.as_ref(), &endpoints, &weights);
        let hc = spec.health_check.as_ref();
        let passive = hc.and_then(|h| h.passive.as_ref()).map(|p| (p.consecutive_failures, p.ejection_time.get()));
        let name: Arc<str> = spec.name.as_str().into();
        let mut tasks = vec![health::spawn_sweeper(endpoints.clone(), limits.idle_timeout)];
        if let Some(active) = hc.and_then(|h| h.active.as_ref()) {
            for e in &endpoints {
                tasks.push(health::spawn_prober(name.clone(), e.clone(), active.clone(), tls.clone()));
            }
        }
        Ok(Self {
            name,
            spec: spec.clone(),
            endpoints,
            balancer,
            connect_timeout: spec.connect_timeout.get(),
            passive,
            tasks,
            protocol: spec.protocol,
            tls,
            metrics,
        })
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

    /// Its endpoints, in config order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The weight this upstream gives endpoint `i` (its config's, not the endpoint's own,
    /// which a reload may have kept from an earlier weight).
    pub fn weight(&self, i: usize) -> u32 {
        self.spec.load_balancer.endpoints.get(i).map_or(1, |e| e.weight.max(1))
    }

    /// TCP connect deadline.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Passive ejection policy.
    pub fn passive(&self) -> Option<(u32, Duration)> {
        self.passive
    }

    /// Picks an endpoint for one attempt.
    pub fn pick(&self, cx: &PickCx<'_>, tried: Tried) -> Option<usize> {
        self.balancer.pick(&self.endpoints, cx, tried)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
