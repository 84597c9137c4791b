//! Precedence and predicate tests for the router.
use crate::view::Fields;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::filter::Chain;
use crate::upstream::Upstream;

const ROUTES: &str = r#"
routes:
  - { name: catch-all, upstream: u }
  - { name: regex, match: { path: { regex: "/orders/[0-9]+" } }, upstream: u }
  - { name: prefix, match: { path: { prefix: /orders } }, upstream: u }
  - { name: prefix-long, match: { path: { prefix: /orders/archive } }, upstream: u }
  - { name: template, match: { path: { template: "/orders/{id}/items" } }, upstream: u }
  - { name: exact, match: { path: { exact: /orders/42 } }, upstream: u }
  - { name: canary, match: { path: { prefix: /orders }, headers: { x-canary: "true" } }, upstream: u }
  - { name: post-only, match: { path: { prefix: /orders }, methods: [POST] }, upstream: u }
  - { name: debug, match: { path: { prefix: /orders }, query: { debug: "1" } }, upstream: u }
  - { name: wild, match: { hosts: ["*.shop.example"] }, upstream: u }
  - { name: exact-host, match: { hosts: ["api.shop.example"] }, upstream: u }
  - { name: first-tie, match: { path: { prefix: /tie } }, upstream: u }
  - { name: second-tie, match: { path: { prefix: /tie } }, upstream: u }
upstreams:
  - { name: u, load_balancer: { endpoints: [{ address: 127.0.0.1, port: 1 }] } }
"#;

fn router() -> Router {
    let cfg = weir_config::load_yaml(ROUTES).unwrap();
    let u = Arc::new(Upstream::start(&cfg.spec().upstreams[0], Default::default()).unwrap());
    Router::new(&cfg.spec().routes, |_, s| {
        Arc::new(Route::compile(s, Target::One(u.clone()), Chain::default(), Default::default()))
    })
}

fn find(r: &Router, method: &Method, host: Option<&str>, uri: &str, headers: &[(&'static str, &str)]) -> String {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let view = RequestView { method, host, path, query, headers: Fields::Map(&h) };
    r.find(&view).map_or_else(|| "<none>".into(), |r| r.name.to_string())
}

#[tokio::test]
async fn most_specific_path_wins() {
    let r = router();
    assert_eq!(find(&r, &Method::GET, None, "/orders/42", &[]), "exact");
    assert_eq!(find(&r, &Method::GET, None, "/orders/7/items", &[]), "template");
    assert_eq!(find(&r, &Method::GET, None, "/orders/archive/2020", &[]), "prefix-long");
    assert_eq!(find(&r, &Method::GET, None, "/orders/7", &[]), "prefix", "prefix outranks regex");
    assert_eq!(find(&r, &Method::GET, None, "/orders", &[]), "prefix");
    assert_eq!(find(&r, &Method::GET, None, "/ordersx", &[]), "catch-all", "prefix ends on a segment boundary");
    assert_eq!(find(&r, &Method::GET, None, "/orders/7/items/x", &[]), "prefix", "templates match whole paths");
}

#[tokio::test]
async fn extra_conditions_outrank_plain_routes_with_the_same_path() {
    let r = router();
    assert_eq!(find(&r, &Method::GET, None, "/orders/9", &[("x-canary", "true")]), "canary");
    assert_eq!(find(&r, &Method::GET, None, "/orders/9", &[("x-canary", "false")]), "prefix");
    assert_eq!(find(&r, &Method::POST, None, "/orders/9", &[]), "post-only");
    assert_eq!(find(&r, &Method::GET, None, "/orders/9?a=2&debug=1", &[]), "debug");
    assert_eq!(find(&r, &Method::GET, None, "/orders/9?debug=2", &[]), "prefix");
}

#[tokio::test]
async fn hosts_exact_then_wildcard_then_any() {
    let r = router();
    assert_eq!(find(&r, &Method::GET, Some("api.shop.example"), "/orders/42", &[]), "exact-host");
    assert_eq!(find(&r, &Method::GET, Some("API.Shop.Example"), "/x", &[]), "exact-host");
    assert_eq!(find(&r, &Method::GET, Some("eu.shop.example"), "/orders/42", &[]), "wild");
    assert_eq!(find(&r, &Method::GET, Some("shop.example"), "/orders/42", &[]), "exact", "wildcard needs a label");
    assert_eq!(find(&r, &Method::GET, Some("other.example"), "/nothing", &[]), "catch-all");
}

#[tokio::test]
async fn ties_go_to_the_route_declared_first() {
    let r = router();
    assert_eq!(find(&r, &Method::GET, None, "/tie/1", &[]), "first-tie");
}

#[tokio::test]
async fn nothing_matches_without_a_catch_all() {
    let cfg = weir_config::load_yaml(&ROUTES.replace("  - { name: catch-all, upstream: u }\n", "")).unwrap();
    let u = Arc::new(Upstream::start(&cfg.spec().upstreams[0], Default::default()).unwrap());
    let r = Router::new(&cfg.spec().routes, |_, s| {
        Arc::new(Route::compile(s, Target::One(u.clone()), Chain::default(), Default::default()))
    });
    assert_eq!(find(&r, &Method::GET, None, "/nope", &[]), "<none>");
}

#[tokio::test]
async fn the_exact_path_index_picks_what_a_scan_picks() {
    // Enough routes to switch the index on, with exact paths that collide with each other and
    // with the prefix, template, host and method routes above.
    let mut extra = String::new();
    for i in 0..40 {
        extra.push_str(&format!("  - {{ name: e{i}, match: {{ path: {{ exact: /e/{} }} }}, upstream: u }}\n", i % 20));
    }
    extra.push_str("  - { name: e-post, match: { path: { exact: /e/3 }, methods: [POST] }, upstream: u }\n");
    extra.push_str(
        "  - { name: e-host, match: { hosts: [api.shop.example], path: { exact: /orders/42 } }, upstream: u }\n",
    );
    extra.push_str(
        "  - { name: e-prefix, match: { path: { prefix: /e } , headers: { x-canary: \"true\" } }, upstream: u }\n",
    );
    let yaml = ROUTES.replace("upstreams:\n", &format!("{extra}upstreams:\n"));
    let cfg = weir_config::load_yaml(&yaml).unwrap();
    let u = Arc::new(Upstream::start(&cfg.spec().upstreams[0], Default::default()).unwrap());
    let r = Router::new(&cfg.spec().routes, |_, s| {
        Arc::new(Route::compile(s, Target::One(u.clone()), Chain::default(), Default::default()))
    });
    assert!(r.len() >= INDEX_FROM && !r.exact.is_empty());
    let h = HeaderMap::new();
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", HeaderValue::from_static("true"));
    let paths = ["/e/3", "/e/19", "/e/20", "/orders/42", "/orders/7/items", "/tie/1", "/", "/e", "*"];
    let mut checked = 0;
    for path in paths {
        for method in [Method::GET, Method::POST] {
            for host in [None, Some("api.shop.example"), Some("x.shop.example")] {
                for headers in [&h, &canary] {
                    let view = RequestView { method: &method, host, path, query: None, headers: Fields::Map(headers) };
                    let (a, b) = (r.find(&view).map(|r| r.name.clone()), r.find_linear(&view).map(|r| r.name.clone()));
                    assert_eq!(a, b, "{method} {host:?} {path}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 108);
    let view = RequestView { method: &Method::POST, host: None, path: "/e/3", query: None, headers: Fields::Map(&h) };
    assert_eq!(r.find(&view).map(|r| r.name.to_string()).as_deref(), Some("e-post"));
}

#[tokio::test]
async fn a_target_lists_every_upstream_it_may_send_to() {
    let cfg = weir_config::load_yaml(ROUTES).unwrap();
    let u = Arc::new(Upstream::start(&cfg.spec().upstreams[0], Default::default()).unwrap());
    assert_eq!(Target::One(u.clone()).upstreams().count(), 1);
    let split = Target::Split { backends: vec![(u.clone(), 9), (u.clone(), 1)], total: 10 };
    assert_eq!(split.upstreams().count(), 2);
    assert!(split.upstreams().all(|x| Arc::ptr_eq(x, &u)));
}
