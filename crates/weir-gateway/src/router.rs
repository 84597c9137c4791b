//! Route matching.
//!
//! Owns: compiling `spec::RouteSpec`s into a [`Router`] and choosing the most specific route
//! for a request. Precedence is decided once at compile time by [`precedence::order`] (most
//! specific first, ties to the route declared first), the order the adapters render too.
//!
//! The first entry whose conditions all hold wins. Matching allocates nothing.
//!
//! Does not own: what happens after the match (see [`crate::proxy`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use weir_config::precedence::{self, HostMatch};
use weir_config::spec::{PathMatch, RouteSpec, UpstreamProtocol};

use crate::filter::Chain;
use crate::metrics::RouteMetrics;
use crate::upstream::Upstream;

/// Where a route sends traffic.
#[derive(Debug)]
pub enum Target {
    /// One upstream.
    One(Arc<Upstream>),
    /// A weighted split (canary); weights sum to `total` > 0.
    Split {
        /// `(upstream, weight)` pairs.
        backends: Vec<(Arc<Upstream>, u32)>,
        /// Sum of the weights.
        total: u32,
    },
    /// Weir answers MCP itself and federates the route's MCP servers.
    Mcp(Arc<crate::mcp::McpRoute>),
}

impl Target {
    /// Whether both send to the very same upstream objects with the same weights.
    pub fn same_upstreams(&self, other: &Target) -> bool {
        match (self, other) {
            (Self::One(a), Self::One(b)) => Arc::ptr_eq(a, b),
            (Self::Split { backends: a, .. }, Self::Split { backends: b, .. }) => {
                a.len() == b.len() && a.iter().zip(b).all(|((x, wx), (y, wy))| Arc::ptr_eq(x, y) && wx == wy)
            }
            (Self::Mcp(a), Self::Mcp(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Every upstream it may send to.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        let (one, split) = match self {
            Self::One(u) => (Some(u), &[][..]),
            Self::Split { backends, .. } => (None, backends.as_slice()),
            Self::Mcp(_) => (None, &[][..]),
        };
        one.into_iter().chain(split.iter().map(|(u, _)| u))
    }

    /// The upstream for this request (a weighted random draw for splits). MCP routes are
    /// answered before an upstream is chosen (`proxy`), and never take the fast path.
    pub fn choose(&self) -> &Arc<Upstream> {
        match self {
            Self::One(u) => u,
            Self::Mcp(_) => unreachable!("an MCP route has no upstream to choose"),
            Self::Split { backends, total } => {
                let mut r = fastrand::u32(..*total);
                for (u, w) in backends {
                    if r < *w {
                        return u;
                    }
                    r -= w;
                }
                &backends[backends.len() - 1].0
            }
        }
    }
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: Arc<str>,
    /// Where it sends traffic.
    pub target: Target,
    /// Per-attempt deadline for response headers.
    pub timeout: Duration,
    /// Attempts in total, the first included.
    pub attempts: u32,
    /// Largest request body accepted (413 beyond).
    pub max_body_size: Option<u64>,
    /// The route's filters (plugins), by phase.
    pub chain: Chain,
    /// Metric handles.
    pub metrics: RouteMetrics,
    /// Every upstream it may send to is plain HTTP/1.1, so the fast path can serve it (else
    /// hyper serves the whole route, and a split keeps its weights).
    pub plain_http1: bool,
    path: PathPat,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
    query: Vec<(String, String)>,
}

#[derive(Debug)]
enum PathPat {
    Any,
    Exact(String),
    Prefix(String),
    Template(Vec<Option<String>>),
    Regex(Regex),
}

#[derive(Debug)]
struct Entry {
    host: HostMatch,
    route: Arc<Route>,
}

pub use crate::view::RequestView;

/// All routes of a snapshot, in precedence order.
#[derive(Debug, Default)]
pub struct Router {
    entries: Vec<Entry>,
    /// With many routes: entries whose path is exact, by that path (indexes ascending), so
    /// ten thousand exact routes cost one hash lookup instead of a scan.
    exact: HashMap<Box<str>, Vec<u32>>,
    /// With many routes: every other entry's index, ascending.
    others: Vec<u32>,
}

/// Below this many entries a straight scan beats hashing the path.
const INDEX_FROM: usize = 32;

impl Router {
    /// Compiles routes; `resolve` gives each (by index) its target and filter chain. Specs
    /// must have passed validation.
    pub fn new(specs: &[RouteSpec], mut resolve: impl FnMut(usize, &RouteSpec) -> Arc<Route>) -> Self {
        let routes: Vec<Arc<Route>> = specs.iter().enumerate().map(|(i, spec)| resolve(i, spec)).collect();
        let entries: Vec<Entry> = precedence::order(specs)
            .into_iter()
            .map(|p| Entry { host: p.host, route: routes[p.route].clone() })
            .collect();
        let (mut exact, mut others) = (HashMap::<Box<str>, Vec<u32>>::new(), Vec::new());
        if entries.len() >= INDEX_FROM {
            for (i, e) in entries.iter().enumerate() {
                match &e.route.path {
                    PathPat::Exact(p) => exact.entry(p.as_str().into()).or_default().push(i as u32),
                    _ => others.push(i as u32),
                }
            }
        }
        Self { entries, exact, others }
    }

    /// The most specific route that matches, if any.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        if self.entries.len() < INDEX_FROM {
            return self.find_linear(req);
        }
        let hit = |i: u32| {
            let e = &self.entries[i as usize];
            host_matches(&e.host, req.host) && e.route.matches(req)
        };
        // The first matching entry in precedence order: the best exact-path candidate, unless
        // a non-exact entry before it matches.
        let exact = self.exact.get(req.path).and_then(|ix| ix.iter().copied().find(|&i| hit(i)));
        let limit = exact.unwrap_or(u32::MAX);
        let first = self.others.iter().copied().take_while(|&i| i < limit).find(|&i| hit(i));
        first.or(exact).map(|i| &self.entries[i as usize].route)
    }

    /// [`Router::find`] by scanning every entry.
    fn find_linear(&self, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        self.entries.iter().find(|e| host_matches(&e.host, req.host) && e.route.matches(req)).map(|e| &e.route)
    }

    /// Number of (route, host) entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Route {
    /// Compiles one route (its matchers) around its resolved target, chain and metrics.
    pub fn compile(spec: &RouteSpec, target: Target, chain: Chain, metrics: RouteMetrics) -> Route {
        compile_route(spec, target, chain, metrics)
    }
}

fn compile_route(spec: &RouteSpec, target: Target, chain: Chain, metrics: RouteMetrics) -> Route {
    let m = &spec.matches;
    let path = match &m.path {
        None => PathPat::Any,
        Some(PathMatch::Exact(p)) => PathPat::Exact(p.clone()),
        Some(PathMatch::Prefix(p)) if p == "/" => PathPat::Any,
        Some(PathMatch::Prefix(p)) => PathPat::Prefix(p.clone()),
        Some(PathMatch::Template(t)) => {
            PathPat::Template(t.split('/').skip(1).map(|s| (!s.starts_with('{')).then(|| s.to_owned())).collect())
        }
        // Validation compiled this regex already; an impossible failure matches nothing.
        Some(PathMatch::Regex(r)) => PathPat::Regex(
            Regex::new(&format!("^(?:{r})$"))
                .unwrap_or_else(|_| Regex::new("[^\\s\\S]").unwrap_or_else(|_| unreachable!())),
        ),
    };
    // Buffering a body for a plugin, or handing trailers to one, is hyper's path; the fast
    // path streams bodies and their trailers as they are.
    let plain_http1 = !matches!(target, Target::Mcp(_))
        && !chain.reads_bodies()
        && !chain.streams_trailers()
        && target.upstreams().all(|u| u.protocol() == UpstreamProtocol::Http1 && u.tls().is_none());
    Route {
        name: spec.name.as_str().into(),
        plain_http1,
        target,
        timeout: spec.timeout.map_or(Duration::from_secs(30), |t| t.get()),
        attempts: spec.retries.as_ref().map_or(1, |r| r.attempts.max(1)),
        max_body_size: spec.max_body_size.map(weir_config::ByteSize::get),
        chain,
        metrics,
        path,
        methods: m.methods.iter().filter_map(|s| Method::from_bytes(s.as_bytes()).ok()).collect(),
        headers: m
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((HeaderName::try_from(k.as_str()).ok()?, HeaderValue::try_from(v.as_str()).ok()?))
            })
            .collect(),
        query: m.query.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn host_matches(pat: &HostMatch, host: Option<&str>) -> bool {
    match (pat, host) {
        (HostMatch::Any, _) => true,
        (_, None) => false,
        (HostMatch::Exact(h), Some(got)) => got.eq_ignore_ascii_case(h),
        (HostMatch::Wildcard(suffix), Some(got)) => {
            got.len() > suffix.len()
                && got.is_char_boundary(got.len() - suffix.len())
                && got[got.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

impl Route {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path_matches(req.path)
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && self.headers.iter().all(|(k, v)| req.headers.values(k.as_str()).any(|got| got == v.as_bytes()))
            && self.query.iter().all(|(k, v)| query_has(req.query, k, v))
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            PathPat::Any => true,
            PathPat::Exact(p) => path == p,
            PathPat::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (p.ends_with('/') || path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
            PathPat::Template(segs) => {
                // Origin-form paths start with '/'; anything else (e.g. `*`) never matches.
                let Some(rest) = path.strip_prefix('/') else { return false };
                let mut got = rest.split('/');
                segs.iter().all(|want| match (want, got.next()) {
                    (_, None) => false,
                    (None, Some(seg)) => !seg.is_empty(),
                    (Some(lit), Some(seg)) => seg == lit,
                }) && got.next().is_none()
            }
            PathPat::Regex(re) => re.is_match(path),
        }
    }
}

fn query_has(query: Option<&str>, key: &str, value: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| match pair.split_once('=') {
            Some((k, v)) => k == key && v == value,
            None => pair == key && value.is_empty(),
        })
    })
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
