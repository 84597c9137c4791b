//! The config contract of issue #2 parses, and bad configs report every error with its path.

const CONTRACT: &str = r#"
admin: { address: 127.0.0.1:9901 }
listeners:
  - { name: public, address: 127.0.0.1:8080 }
routes:
  - name: orders
    match:
      hosts: ["api.example.com", "*.shop.example"]
      path: { prefix: /orders }
      methods: [GET, POST]
      headers: { x-canary: "true" }
      query: { debug: "1" }
    upstream: orders
    timeout: 5s
    retries: { attempts: 2 }
upstreams:
  - name: orders
    load_balancer:
      policy: weighted_round_robin
      hash_key: { header: x-user }
      endpoints:
        - { address: 127.0.0.1, port: 9001, weight: 3 }
        - { address: 127.0.0.1, port: 9002, weight: 1 }
    pool: { max_connections: 1024, max_idle: 64, idle_timeout: 60s, max_lifetime: 10m }
    connect_timeout: 1s
    health_check:
      active: { path: /healthz, interval: 2s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 3 }
      passive: { consecutive_failures: 5, ejection_time: 30s }
"#;

#[test]
fn contract_shape_is_accepted() {
    let cfg = weir_config::load_yaml(CONTRACT).expect("contract config must validate");
    let spec = cfg.spec();
    assert_eq!(spec.routes[0].retries.as_ref().unwrap().attempts, 2);
    assert_eq!(spec.upstreams[0].load_balancer.endpoints[0].weight, 3);
    assert_eq!(spec.upstreams[0].pool.max_lifetime.get().as_secs(), 600);
}

#[test]
fn example_config_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/weir.yaml")).unwrap();
    weir_config::load_yaml(&text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn schema_errors_all_carry_paths() {
    let bad = CONTRACT
        .replace("port: 9002", "port: nine")
        .replace("policy: weighted_round_robin", "policy: fastest")
        .replace("timeout: 5s", "timeout: 5s\n    colour: blue");
    let errs = weir_config::load_yaml(&bad).unwrap_err();
    let text = errs.to_string();
    assert!(errs.len() >= 3, "{text}");
    assert!(text.contains("upstreams[0].load_balancer.endpoints[1].port"), "{text}");
    assert!(text.contains("upstreams[0].load_balancer.policy"), "{text}");
    assert!(text.contains("routes[0]") && text.contains("colour"), "{text}");
}

#[test]
fn semantic_errors_are_all_reported() {
    let bad = CONTRACT
        .replace("upstream: orders", "upstream: billing")
        .replace("{ prefix: /orders }", "{ regex: \"(\" }")
        .replace("max_idle: 64", "max_idle: 2048")
        .replace("attempts: 2", "attempts: 0");
    let errs = weir_config::load_yaml(&bad).unwrap_err();
    let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "upstreams[0].pool.max_idle",
            "routes[0].match.path.regex",
            "routes[0].upstream",
            "routes[0].retries.attempts"
        ],
        "{errs}"
    );
    assert!(errs.to_string().contains("\"billing\" is not defined"), "{errs}");
}

#[test]
fn yaml_syntax_errors_are_reported() {
    let errs = weir_config::load_yaml("routes: [ { name: a").unwrap_err();
    assert!(errs.to_string().contains("not valid YAML"), "{errs}");
}

#[test]
fn canary_backends_need_defined_upstreams() {
    let bad = CONTRACT
        .replace("upstream: orders", "backends: [{ upstream: orders, weight: 90 }, { upstream: v2, weight: 10 }]");
    let errs = weir_config::load_yaml(&bad).unwrap_err();
    assert_eq!(errs.0[0].path, "routes[0].backends[1].upstream", "{errs}");
}
