//! Arbitrary requests against a router with every kind of match: no panic, and the chosen
//! route always satisfies its own host and path conditions.
#![no_main]

use std::sync::{Arc, OnceLock};

use weir_gateway::filter::Chain;
use weir_gateway::router::{RequestView, Route, Router, Target};
use weir_gateway::upstream::Upstream;
use weir_gateway::view::Fields;

const CONFIG: &str = r#"
routes:
  - { name: exact, match: { path: { exact: /a/b } }, upstream: u }
  - { name: prefix, match: { path: { prefix: /a } }, upstream: u }
  - { name: template, match: { path: { template: "/u/{id}/x" } }, upstream: u }
  - { name: regex, match: { path: { regex: "/r/[0-9]+" } }, upstream: u }
  - { name: host, match: { hosts: ["api.example.com", "*.shop.example"] }, upstream: u }
  - { name: hdr, match: { headers: { x-canary: "true" }, query: { debug: "1" }, methods: [GET, POST] }, upstream: u }
upstreams:
  - { name: u, load_balancer: { endpoints: [{ address: 127.0.0.1, port: 1 }] } }
"#;

fn router() -> &'static Router {
    static R: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    &R.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cfg = weir_config::load_yaml(CONFIG).unwrap();
        let _g = rt.enter();
        let u = Arc::new(Upstream::start(&cfg.spec().upstreams[0], Default::default()).unwrap());
        let r = Router::new(&cfg.spec().routes, |_, s| {
            Arc::new(Route::compile(s, Target::One(u.clone()), Chain::default(), Default::default()))
        });
        drop(_g);
        (rt, r)
    })
    .1
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let method = http::Method::from_bytes(parts.next().unwrap_or("GET").as_bytes()).unwrap_or(http::Method::GET);
    let host = parts.next().filter(|h| !h.is_empty());
    let target = parts.next().unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut headers = http::HeaderMap::new();
    if let Some(v) = parts.next().and_then(|v| http::HeaderValue::from_str(v).ok()) {
        headers.insert("x-canary", v);
    }
    let view = RequestView { method: &method, host, path, query, headers: Fields::Map(&headers) };
    if let Some(route) = router().find(&view) {
        match &*route.name {
            "exact" => assert_eq!(path, "/a/b"),
            "regex" => assert!(path.starts_with("/r/")),
            "template" => assert!(path.starts_with("/u/")),
            "host" => assert!(host.is_some()),
            _ => {}
        }
    }
});
