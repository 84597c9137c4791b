//! The immutable, compiled form of one config version, and reconciliation across versions.
//!
//! Owns: turning a [`ValidConfig`] into a [`Snapshot`] (router with resolved targets,
//! upstreams) while reusing every upstream whose spec did not change, so its pools and health
//! state survive a reload. The request path reads a snapshot and never mutates it.

use std::collections::HashMap;
use std::sync::Arc;

use weir_config::ValidConfig;

use weir_config::plugins::PluginConfig;
use weir_config::resources::{Kind, ResourceKey};

use crate::discovery::Found;
use crate::filter::wasm::Callouts;
use crate::filter::{Chain, Filter};
use crate::metrics::{Metrics, RouteMetrics};
use crate::otel::Tracer;
use weir_config::spec::RouteSpec;

use crate::router::{Route, Router, Target};
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
    /// Per route, what the next version can reuse: see [`RouteState`].
    routes: HashMap<Arc<str>, Arc<RouteState>>,
    /// Where request metrics go.
    pub metrics: Arc<Metrics>,
    /// Metric handles for requests no route matched.
    pub unmatched: RouteMetrics,
    /// Whether any route has an access log (otherwise requests skip keeping their line).
    pub access_log: bool,
    /// Request spans, when `tracing:` is configured.
    pub tracer: Option<Arc<Tracer>>,
    /// MCP routes that check tokens, by the path of their protected resource metadata.
    pub well_known: HashMap<String, Arc<crate::mcp::McpRoute>>,
}

impl Default for Snapshot {
    /// The empty snapshot served before the first config: every request is a 404.
    fn default() -> Self {
        let metrics = Arc::new(Metrics::new());
        Self {
            version: 0,
            router: Router::default(),
            upstreams: HashMap::new(),
            routes: HashMap::new(),
            unmatched: metrics.unmatched(),
            metrics,
            access_log: false,
            tracer: None,
            well_known: HashMap::new(),
        }
    }
}

/// A config that passed validation but names something this gateway cannot use (a file that
/// is not there, a key that does not parse): which resource and field, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {cause}", self.path())]
pub struct CompileError {
    /// The resource (`None`: the gateway's own tracing settings).
    pub resource: Option<ResourceKey>,
    /// The field within it, e.g. `plugins.jwt-auth.keys[0].pem_file` (empty: the resource as
    /// a whole).
    pub field: String,
    /// What was wrong (boxed: errors travel through every `Result` of the apply path).
    pub cause: Box<CompileCause>,
}

/// What made a resource unusable here.
#[derive(Debug, thiserror::Error)]
pub enum CompileCause {
    /// An upstream's TLS material.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A plugin of a route.
    #[error(transparent)]
    Plugin(#[from] crate::filter::BuildError),
    /// The gateway's tracing settings.
    #[error(transparent)]
    Tracing(#[from] crate::otel::TracingError),
}

impl CompileError {
    fn upstream(name: &str, e: crate::tls::TlsError) -> Self {
        Self { resource: Some(ResourceKey::new(Kind::Upstream, name)), field: String::new(), cause: Box::new(e.into()) }
    }

    fn plugin(route: &str, plugin: &str, e: crate::filter::BuildError) -> Self {
        Self::in_route(route, format!("plugins.{plugin}"), e)
    }

    /// `e`, built from the config at `field` of `route`.
    fn in_route(route: &str, field: String, e: crate::filter::BuildError) -> Self {
        let sub = e.field();
        let field = if sub.is_empty() { field } else { format!("{field}.{sub}") };
        Self { resource: Some(ResourceKey::new(Kind::Route, route)), field, cause: Box::new(e.into()) }
    }

    /// `Route/api.plugins.jwt-auth.keys[0].pem_file`, as a NACK names it.
    pub fn path(&self) -> String {
        match &self.resource {
            None if self.field.is_empty() => "tracing".to_owned(),
            None => format!("tracing.{}", self.field),
            Some(k) if self.field.is_empty() => k.to_string(),
            Some(k) => format!("{k}.{}", self.field),
        }
    }
}

impl Snapshot {
    /// Called once it serves: MCP routes that replaced others announce it.
    pub fn serving(&self) {
        for st in self.routes.values() {
            if let Target::Mcp(m) = &st.route.target {
                m.serving();
            }
        }
    }

    /// Compiles `cfg`, reusing unchanged upstreams from `prev`. Needs a Tokio runtime (it
    /// starts health-check tasks for new upstreams). Fails only when a file the config names
    /// (TLS material, JWT keys) cannot be used, naming the resource it is about.
    pub fn compile(
        cfg: &ValidConfig,
        prev: Option<&Snapshot>,
        version: u64,
        found: &Found,
        metrics: &Arc<Metrics>,
        callouts: &Arc<Callouts>,
    ) -> Result<Self, CompileError> {
        let spec = cfg.spec();
        let mut upstreams: HashMap<Arc<str>, Arc<Upstream>> = HashMap::with_capacity(spec.upstreams.len());
        // Kept upstreams whose discovered endpoints changed: changed in place once nothing
        // can fail any more (a refused config changes nothing).
        let mut moved: Vec<(Arc<Upstream>, Vec<weir_config::spec::EndpointSpec>)> = Vec::new();
        for u in &spec.upstreams {
            let discovered = u.discovery.as_ref().map(|_| crate::discovery::endpoints(u, found, cfg));
            let endpoints = discovered.as_deref().unwrap_or(&u.load_balancer.endpoints);
            let old = prev.and_then(|p| p.upstreams.get(u.name.as_str()));
            let up = match old.filter(|old| old.spec() == u) {
                Some(k) => {
                    if let Some(eps) = discovered {
                        moved.push((k.clone(), eps));
                    }
                    k.clone()
                }
                None => Arc::new(
                    Upstream::start_after(u, endpoints, metrics.upstream(&u.name), old.map(|o| &**o))
                        .map_err(|e| CompileError::upstream(&u.name, e))?,
                ),
            };
            upstreams.insert(up.name().clone(), up);
        }
        let mut states: Vec<Arc<RouteState>> = Vec::with_capacity(spec.routes.len());
        for (i, r) in spec.routes.iter().enumerate() {
            let plugins = cfg.route_plugins(i);
            let old = prev.and_then(|p| p.routes.get(r.name.as_str()));
            let target = target(r, &upstreams, old.map(|o| &o.route.target), metrics)?;
            if let Some(old) = old.filter(|o| o.reusable(r, plugins, &target)) {
                states.push(old.clone());
                continue;
            }
            let previous = old.map(|o| &o.plugins);
            let mut mine: Vec<(PluginConfig, Arc<Filter>)> = Vec::with_capacity(plugins.len());
            for (name, c) in plugins {
                let kept = previous.and_then(|v| v.iter().find(|(pc, _)| pc == c)).map(|(_, f)| f.clone());
                let f = match kept {
                    Some(f) => f,
                    None => Arc::new(
                        Filter::new(c, &r.name, metrics, callouts)
                            .map_err(|e| CompileError::plugin(&r.name, name, e))?,
                    ),
                };
                mine.push((c.clone(), f));
            }
            let rm = old.map_or_else(|| metrics.route(&r.name), |o| o.metrics.clone());
            let chain = Chain::new(mine.iter().map(|(_, f)| f.clone()).collect());
            let route = Arc::new(Route::compile(r, target, chain, rm.clone()));
            states.push(Arc::new(RouteState { spec: r.clone(), plugins: mine, metrics: rm, route }));
        }
        let router = Router::new(&spec.routes, |i, _| states[i].route.clone());
        let routes: HashMap<Arc<str>, Arc<RouteState>> =
            states.into_iter().map(|st| (st.route.name.clone(), st)).collect();
        let access_log =
            routes.values().flat_map(|st| &st.plugins).any(|(c, _)| matches!(c, PluginConfig::AccessLog(_)));
        // Kept while its settings are: its queue and collector connection live on.
        let tracer = match &spec.tracing {
            None => None,
            Some(t) => match prev.and_then(|p| p.tracer.clone()).filter(|old| old.spec() == t) {
                Some(kept) => Some(kept),
                None => Some(Arc::new(Tracer::new(t).map_err(|e| CompileError {
                    resource: None,
                    field: "otlp_endpoint".to_owned(),
                    cause: Box::new(e.into()),
                })?)),
            },
        };
        let well_known = routes
            .values()
            .filter_map(|st| match &st.route.target {
                Target::Mcp(m) => Some((m.metadata_path()?, m.clone())),
                _ => None,
            })
            .collect();
        for (u, eps) in moved {
            u.set_endpoints(&eps);
        }
        Ok(Self {
            version,
            well_known,
            tracer,
            router,
            upstreams,
            routes,
            metrics: metrics.clone(),
            unmatched: metrics.unmatched(),
            access_log,
        })
    }
}

/// What one compiled route keeps for the next version: an unchanged route (same spec,
/// plugins and upstreams) is reused whole, so one changed route among ten thousand compiles
/// one route; a changed one still keeps its plugins' state (rate-limit buckets) and its
/// metric handles.
#[derive(Debug)]
struct RouteState {
    spec: RouteSpec,
    plugins: Vec<(PluginConfig, Arc<Filter>)>,
    metrics: RouteMetrics,
    route: Arc<Route>,
}

impl RouteState {
    fn reusable(&self, spec: &RouteSpec, plugins: &[(String, PluginConfig)], target: &Target) -> bool {
        self.spec == *spec
            && self.plugins.len() == plugins.len()
            && self.plugins.iter().zip(plugins).all(|((a, _), (_, b))| a == b)
            && self.route.target.same_upstreams(target)
    }
}

/// The MCP route an old target was, if it was one.
fn replaced(old: Option<&Target>) -> Option<&crate::mcp::McpRoute> {
    match old {
        Some(Target::Mcp(m)) => Some(m),
        _ => None,
    }
}

/// Where route `r` sends traffic; an MCP route keeps its previous compiled form (sessions,
/// server eras, learned names) while its `mcp` settings are unchanged.
fn target(
    r: &RouteSpec,
    upstreams: &HashMap<Arc<str>, Arc<Upstream>>,
    old: Option<&Target>,
    metrics: &Arc<Metrics>,
) -> Result<Target, CompileError> {
    if let Some(m) = &r.mcp {
        return Ok(match old {
            Some(Target::Mcp(kept)) if kept.spec == **m => Target::Mcp(kept.clone()),
            _ => Target::Mcp(Arc::new(
                crate::mcp::McpRoute::new(&r.name, m, metrics, replaced(old))
                    .map_err(|(i, e)| CompileError::in_route(&r.name, format!("mcp.tools.limits[{i}].rate"), e))?,
            )),
        });
    }
    Ok(match &r.upstream {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::BuildError;

    fn compile(yaml: &str) -> Result<Snapshot, CompileError> {
        let cfg = weir_config::validate(weir_config::parse_yaml(yaml).expect("parses")).expect("valid");
        let metrics = Arc::new(Metrics::new());
        Snapshot::compile(&cfg, None, 1, &Found::default(), &metrics, &Arc::default())
    }

    const BASE: &str = "
upstreams:
  - name: u
    load_balancer: { endpoints: [{ address: 127.0.0.1, port: 9 }] }
routes:
  - name: api
    match: { path: { prefix: /api } }
    upstream: u
    plugins:
";

    #[tokio::test]
    async fn an_unreadable_key_file_names_its_key() {
        let Err(e) = compile(&format!(
            "{BASE}      - name: jwt-auth\n        config:\n          keys:\n            - {{ alg: HS256, secret: sixteen-byte-secret }}\n            - {{ alg: RS256, pem_file: /nonexistent/weir-key.pem }}\n"
        )) else {
            panic!("compiled")
        };
        assert_eq!(e.path(), "Route/api.plugins.jwt-auth.keys[1].pem_file", "{e}");
        assert!(
            matches!(&*e.cause, CompileCause::Plugin(BuildError::PemFile { index: 1, path, .. }) if path == "/nonexistent/weir-key.pem"),
            "{e:?}"
        );
        assert!(e.to_string().contains("cannot read /nonexistent/weir-key.pem"), "{e}");
    }

    #[tokio::test]
    async fn key_material_that_does_not_parse_is_a_key_error() {
        let Err(e) = compile(&format!(
            "{BASE}      - name: jwt-auth\n        config:\n          keys:\n            - {{ alg: ES256, pem: \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\\n\" }}\n"
        )) else {
            panic!("compiled")
        };
        assert_eq!(e.path(), "Route/api.plugins.jwt-auth.keys[0]", "{e}");
        assert!(matches!(*e.cause, CompileCause::Plugin(BuildError::Key { index: 0, .. })), "{e:?}");
    }

    #[tokio::test]
    async fn a_usable_config_compiles() {
        let s = compile(&format!(
            "{BASE}      - name: jwt-auth\n        config:\n          keys: [{{ alg: HS256, secret: sixteen-byte-secret }}]\n"
        ));
        assert!(s.is_ok(), "{:?}", s.err());
    }
}
