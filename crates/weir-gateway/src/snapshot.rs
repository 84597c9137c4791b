//! The immutable, compiled form of one config version, and reconciliation across versions.
//!
//! Owns: turning a [`ValidConfig`] into a [`Snapshot`] (router with resolved targets,
//! upstreams) while reusing every upstream whose spec did not change, so its pools and health
//! state survive a reload. The request path reads a snapshot and never mutates it.

use std::collections::HashMap;
use std::sync::Arc;

use weir_config::ValidConfig;

use weir_config::plugins::PluginConfig;

use crate::filter::{Chain, Filter};
use crate::metrics::{Metrics, RouteMetrics};
use crate::router::{Router, Target};
use crate::upstream::Upstream;

/// One compiled config version.
#[derive(Debug)]
pub struct Snapshot {
    /// Monotonic version, 1 for the first config applied.
    pub version: u64,
    /// Routes in precedence order.
    pub router: Router,
    /// Upstreams by name.
    pub upstreams: HashMap<Arc<str>, Arc<Upstream>>,
    /// Each route's plugins with their compiled filters, kept so an unchanged plugin keeps
    /// its state (rate-limit buckets) across reloads.
    filters: HashMap<String, Vec<(PluginConfig, Arc<Filter>)>>,
    /// Where request metrics go.
    pub metrics: Arc<Metrics>,
    /// Metric handles for requests no route matched.
    pub unmatched: RouteMetrics,
    /// Whether any route has an access log (otherwise requests skip keeping their line).
    pub access_log: bool,
}

impl Default for Snapshot {
    /// The empty snapshot served before the first config: every request is a 404.
    fn default() -> Self {
        let metrics = Arc::new(Metrics::new());
        Self {
            version: 0,
            router: Router::default(),
            upstreams: HashMap::new(),
            filters: HashMap::new(),
            unmatched: metrics.unmatched(),
            metrics,
            access_log: false,
        }
    }
}

impl Snapshot {
    /// Compiles `cfg`, reusing unchanged upstreams from `prev`. Needs a Tokio runtime (it
    /// starts health-check tasks for new upstreams). Fails only when a file the config names
    /// (TLS material, JWT keys) cannot be used: `(what, why)`.
    pub fn compile(
        cfg: &ValidConfig,
        prev: Option<&Snapshot>,
        version: u64,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, (String, String)> {
        let spec = cfg.spec();
        let mut upstreams: HashMap<Arc<str>, Arc<Upstream>> = HashMap::with_capacity(spec.upstreams.len());
        for u in &spec.upstreams {
            let kept = prev.and_then(|p| p.upstreams.get(u.name.as_str())).filter(|old| old.spec() == u).cloned();
            let up = match kept {
                Some(k) => k,
                None => Arc::new(
                    Upstream::start(u, metrics.upstream(&u.name))
                        .map_err(|e| (format!("upstream {:?}", u.name), e.to_string()))?,
                ),
            };
            upstreams.insert(up.name().clone(), up);
        }
        let mut filters = HashMap::new();
        let mut chains = Vec::with_capacity(spec.routes.len());
        for (i, r) in spec.routes.iter().enumerate() {
            let previous = prev.and_then(|p| p.filters.get(&r.name));
            let mut mine: Vec<(PluginConfig, Arc<Filter>)> = Vec::new();
            for (_, c) in cfg.route_plugins(i) {
                let kept = previous.and_then(|v| v.iter().find(|(pc, _)| pc == c)).map(|(_, f)| f.clone());
                let f = match kept {
                    Some(f) => f,
                    None => Arc::new(Filter::new(c, &r.name, metrics).map_err(|e| (format!("route {:?}", r.name), e))?),
                };
                mine.push((c.clone(), f));
            }
            chains.push(Chain::new(mine.iter().map(|(_, f)| f.clone()).collect()));
            filters.insert(r.name.clone(), mine);
        }
        let mut chains = chains.into_iter();
        let router = Router::new(&spec.routes, |_, r| {
            let chain = chains.next().unwrap_or_default();
            (target(r, &upstreams), chain, metrics.route(&r.name))
        });
        let access_log = filters.values().flatten().any(|(c, _)| matches!(c, PluginConfig::AccessLog(_)));
        Ok(Self {
            version,
            router,
            upstreams,
            filters,
            metrics: metrics.clone(),
            unmatched: metrics.unmatched(),
            access_log,
        })
    }
}

fn target(r: &weir_config::spec::RouteSpec, upstreams: &HashMap<Arc<str>, Arc<Upstream>>) -> Target {
    match &r.upstream {
        Some(name) => Target::One(upstreams[name.as_str()].clone()),
        None => {
            let backends: Vec<_> = r
                .backends
                .iter()
                .filter(|b| b.weight > 0)
                .map(|b| (upstreams[b.upstream.as_str()].clone(), b.weight))
                .collect();
            let total = backends.iter().map(|(_, w)| w).sum();
            Target::Split { backends, total }
        }
    }
}
