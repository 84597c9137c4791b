//! Route precedence: the one order in which routes are tried, shared by the gateway's router
//! and the adapters that render routes for nginx and HAProxy (so every kind of gateway picks
//! the same route for the same request).
//!
//! Owns: the sort. Most specific first:
//! 1. host: exact name > wildcard (longer suffix first) > no host condition;
//! 2. path: exact > template (more literal segments first) > prefix (longer first) > regex > none;
//! 3. more conditions on method, headers and query first;
//! 4. ties go to the route declared first.
//!
//! A route with several hosts is placed once per host.

use std::cmp::Reverse;

use crate::spec::{PathMatch, RouteSpec};

/// The host condition of one placed route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// No host condition.
    Any,
    /// This name exactly (lower case).
    Exact(String),
    /// Any name ending in this suffix, which keeps its leading dot (`.shop.example`), lower case.
    Wildcard(String),
}

impl HostMatch {
    /// Reads a `match.hosts` entry.
    pub fn of(host: &str) -> Self {
        match host.strip_prefix('*') {
            Some(suffix) => Self::Wildcard(suffix.to_ascii_lowercase()),
            None => Self::Exact(host.to_ascii_lowercase()),
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Any => (0, 0),
            Self::Wildcard(s) => (1, s.len()),
            Self::Exact(_) => (2, 0),
        }
    }
}

/// One route at its place in the order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Index of the route in the list given.
    pub route: usize,
    /// The host it is placed for.
    pub host: HostMatch,
}

fn path_rank(path: Option<&PathMatch>) -> (u8, usize) {
    match path {
        None => (0, 0),
        Some(PathMatch::Regex(r)) => (1, r.len()),
        Some(PathMatch::Prefix(p)) => (2, p.len()),
        Some(PathMatch::Template(t)) => (3, t.split('/').filter(|s| !s.starts_with('{')).count()),
        Some(PathMatch::Exact(p)) => (4, p.len()),
    }
}

/// Every route (once per host) in the order it is tried.
pub fn order(routes: &[RouteSpec]) -> Vec<Placed> {
    let mut keyed = Vec::with_capacity(routes.len());
    for (route, spec) in routes.iter().enumerate() {
        let m = &spec.matches;
        let path = path_rank(m.path.as_ref());
        let conditions = usize::from(!m.methods.is_empty()) + m.headers.len() + m.query.len();
        let hosts: Vec<HostMatch> =
            if m.hosts.is_empty() { vec![HostMatch::Any] } else { m.hosts.iter().map(|h| HostMatch::of(h)).collect() };
        for host in hosts {
            let key = (Reverse((host.rank(), path.0, path.1, conditions)), route);
            keyed.push((key, Placed { route, host }));
        }
    }
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, yaml: &str) -> RouteSpec {
        let mut r: RouteSpec = serde_saphyr::from_str(yaml).expect("route");
        r.name = name.into();
        r
    }

    #[test]
    fn most_specific_first_then_declaration_order() {
        let routes = vec![
            route("any", "name: x\nupstream: u"),
            route("regex", "name: x\nmatch: { path: { regex: '/a.*' } }\nupstream: u"),
            route("prefix", "name: x\nmatch: { path: { prefix: /a } }\nupstream: u"),
            route("longer", "name: x\nmatch: { path: { prefix: /a/b } }\nupstream: u"),
            route("header", "name: x\nmatch: { path: { prefix: /a }, headers: { x: '1' } }\nupstream: u"),
            route("template", "name: x\nmatch: { path: { template: '/a/{id}' } }\nupstream: u"),
            route("exact", "name: x\nmatch: { path: { exact: /a } }\nupstream: u"),
            route("hosts", "name: x\nmatch: { hosts: ['*.b.example', 'A.example'] }\nupstream: u"),
            route("any2", "name: x\nupstream: u"),
        ];
        let got: Vec<(&str, HostMatch)> =
            order(&routes).into_iter().map(|p| (routes[p.route].name.as_str(), p.host)).collect();
        let want = vec![
            ("hosts", HostMatch::Exact("a.example".into())),
            ("hosts", HostMatch::Wildcard(".b.example".into())),
            ("exact", HostMatch::Any),
            ("template", HostMatch::Any),
            ("longer", HostMatch::Any),
            ("header", HostMatch::Any),
            ("prefix", HostMatch::Any),
            ("regex", HostMatch::Any),
            ("any", HostMatch::Any),
            ("any2", HostMatch::Any),
        ];
        assert_eq!(got, want);
    }
}
