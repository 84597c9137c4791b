//! Each renderer's output for real configs passes the real proxy's own check (`nginx -t`,
//! `haproxy -c`), and what a proxy cannot express is refused with the resource's path.

use std::path::Path;

use weir_adapter::haproxy::Haproxy;
use weir_adapter::nginx::Nginx;
use weir_adapter::{Context, Proxy};

fn ctx(dir: &Path) -> Context {
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    Context { dir: dir.to_owned(), status: "127.0.0.1:9".parse().unwrap(), workers: Some(1) }
}

fn example() -> weir_config::ValidConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/weir.yaml");
    weir_config::load_yaml(&std::fs::read_to_string(root).unwrap()).unwrap()
}

fn passes_check<P: Proxy>(p: &P, cfg: &weir_config::ValidConfig) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let rendered = p.render(cfg, &ctx).unwrap_or_else(|e| panic!("{} refused: {e:?}", P::KIND));
    for (path, bytes) in &rendered.files {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let file = dir.path().join(format!("{}.new", P::FILE));
    std::fs::write(&file, rendered.text().replace("@HASH@", &rendered.hash())).unwrap();
    let out = p.check(&file, &ctx).output().expect("the proxy runs (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "{} -t failed:\n{}\n{}",
        P::KIND,
        String::from_utf8_lossy(&out.stderr),
        rendered.text()
    );
}

#[test]
fn the_example_config_passes_nginx_and_haproxy_checks() {
    let cfg = example();
    passes_check(&Nginx { binary: "nginx".into() }, &cfg);
    passes_check(&Haproxy { binary: "haproxy".into() }, &cfg);
}

const TLS_AND_PLUGINS: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8443
plugins:
  - { name: request-id }
routes:
  - name: shop
    match: { hosts: ["*.shop.example", "Shop.example"], path: { template: "/items/{id}" }, methods: [GET], query: { v: "2" } }
    upstream: shop
    plugins:
      - { name: headers, config: { request: { set: { x-from: "gw $1 'q'" }, remove: [cookie] }, response: { add: { x-served: "yes" } } } }
      - { name: ip-restriction, config: { allow: [127.0.0.0/8, "::1"], deny: [127.0.0.2] } }
    retries: { attempts: 3 }
    max_body_size: 1MiB
  - name: re
    match: { path: { regex: "/r/[0-9]+" } }
    upstream: shop
upstreams:
  - name: shop
    load_balancer:
      policy: consistent_hash
      hash_key: { header: x-user }
      endpoints: [{ address: 127.0.0.1, port: 9001 }, { address: "::1", port: 9002, weight: 2 }]
    health_check: { passive: { consecutive_failures: 3, ejection_time: 1500ms } }
"#;

#[test]
fn hosts_templates_queries_plugins_and_hashing_pass_both_checks() {
    let cfg = weir_config::load_yaml(TLS_AND_PLUGINS).unwrap();
    passes_check(&Nginx { binary: "nginx".into() }, &cfg);
    passes_check(&Haproxy { binary: "haproxy".into() }, &cfg);
}

#[test]
fn what_a_proxy_cannot_express_is_refused_with_the_resource_path() {
    let yaml = r#"
listeners: [{ name: public, address: 127.0.0.1:8080 }]
routes:
  - name: secured
    upstream: api
    plugins: [{ name: jwt-auth, config: { keys: [{ alg: HS256, secret: s3cr3t-s3cr3t-s3cr3t }] } }]
  - name: grpc
    upstream: grpc
upstreams:
  - name: api
    load_balancer: { endpoints: [{ address: 127.0.0.1, port: 9001 }] }
  - name: grpc
    protocol: h2c
    load_balancer: { endpoints: [{ address: 127.0.0.1, port: 9002 }] }
"#;
    let cfg = weir_config::load_yaml(yaml).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let errs = Nginx { binary: "nginx".into() }.render(&cfg, &ctx(dir.path())).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["Upstream/grpc.protocol", "Route/secured.plugins.jwt-auth"], "{errs:?}");
    let errs = Haproxy { binary: "haproxy".into() }.render(&cfg, &ctx(dir.path())).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["Upstream/grpc.protocol", "Route/secured.plugins.jwt-auth"], "{errs:?}");
}

/// A TLS listener with `n` self-signed certificates (inline PEM, as a control plane pushes
/// them) and an upstream over TLS.
fn tls_yaml(n: usize) -> String {
    let mut certs = String::new();
    for i in 0..n {
        let c = rcgen::generate_simple_self_signed(vec![format!("host{i}.example")]).unwrap();
        let pem = |s: String| s.replace('\n', "\\n");
        certs += &format!(
            "        - {{ cert: \"{}\", key: \"{}\" }}\n",
            pem(c.cert.pem()),
            pem(c.signing_key.serialize_pem())
        );
    }
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:8443\n    tls:\n      certificates:\n{certs}routes: [{{ name: all, upstream: app }}]\nupstreams:\n  - {{ name: app, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: 9001 }}] }}, tls: {{ sni: app.internal, insecure_skip_verify: true }} }}\n"
    )
}

#[test]
fn tls_listeners_and_upstreams_pass_both_checks() {
    let two = weir_config::load_yaml(&tls_yaml(2)).unwrap();
    passes_check(&Haproxy { binary: "haproxy".into() }, &two);
    passes_check(&Nginx { binary: "nginx".into() }, &weir_config::load_yaml(&tls_yaml(1)).unwrap());
    // nginx serves one certificate per listener: a second is refused by its path.
    let dir = tempfile::tempdir().unwrap();
    let errs = Nginx { binary: "nginx".into() }.render(&two, &ctx(dir.path())).unwrap_err();
    assert_eq!(errs.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["Listener/public.tls.certificates"]);
}

#[test]
fn values_haproxy_would_read_as_syntax_are_refused_and_large_weights_are_scaled() {
    let yaml = r#"
listeners: [{ name: public, address: 127.0.0.1:8080 }]
routes:
  - name: odd
    match: { query: { "a b\nhttp-request deny": "1" } }
    upstream: heavy
upstreams:
  - name: heavy
    load_balancer:
      policy: weighted_round_robin
      endpoints: [{ address: 127.0.0.1, port: 9001, weight: 3000 }, { address: 127.0.0.1, port: 9002, weight: 1000 }]
"#;
    let cfg = weir_config::load_yaml(yaml).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let errs = Haproxy { binary: "haproxy".into() }.render(&cfg, &ctx(dir.path())).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].path.starts_with("Route/odd.match.query.a b"), "{errs:?}");
    let weighted =
        weir_config::load_yaml(&yaml.replace(r#"match: { query: { "a b\nhttp-request deny": "1" } }"#, "")).unwrap();
    passes_check(&Haproxy { binary: "haproxy".into() }, &weighted);
    let text = Haproxy { binary: "haproxy".into() }.render(&weighted, &ctx(dir.path())).unwrap();
    assert!(text.text().contains("weight 256 ") && text.text().contains("weight 85 "), "{}", text.text());
}
