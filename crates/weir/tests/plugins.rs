//! The filter chain and built-in plugins through the real binary: phases and short-circuits,
//! concurrency inside a phase, key-auth, ip-restriction, local rate limits, CORS, request ids,
//! header edits and rewrites, and config errors with paths.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::body::Incoming;
use hyper::{Request, Response};

/// An upstream that echoes the path and selected request headers into its body.
async fn echo() -> Upstream {
    upstream_fn(|req: Request<Incoming>| async move {
        let h = req.headers();
        let pick = |n: &str| h.get(n).map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
        let body = serde_json::json!({
            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
            "consumer": pick("x-consumer"),
            "api_key": pick("x-api-key"),
            "request_id": pick("x-request-id"),
            "added": pick("x-added"),
            "removed": pick("x-remove-me"),
        });
        Response::new(full(body.to_string()))
    })
    .await
}

fn with_plugins(port: u16, route_plugins: &str, global: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - {{ name: public, address: 127.0.0.1:0 }}\n{global}routes:\n  - name: api\n    upstream: app\n    plugins:\n{route_plugins}\nupstreams:\n{}",
        upstream_yaml("app", "round_robin", &[(port, 1)], "")
    )
}

async fn json(weir: &Weir, path: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, serde_json::Value) {
    let rsp = request(weir.addr, "GET", path, headers).await;
    let (status, h) = (rsp.status().as_u16(), rsp.headers().clone());
    let body = http_body_util::BodyExt::collect(rsp.into_body()).await.unwrap().to_bytes();
    (status, h, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn key_auth_identifies_consumers_and_forwards_them() {
    let up = echo().await;
    // alice's key as plain text, bob's as its SHA-256 ("bob-secret-key").
    let plugins = "      - name: key-auth\n        config:\n          consumers:\n            - { name: alice, key: alice-secret-key }\n            - { name: bob, key_sha256: \"2656fecc42e5ed2e72a2a5f2d92068d8c7bfe8f9af4c62895a25dcb6f5bbb64b\" }\n";
    let weir = Weir::start(&with_plugins(up.port(), plugins, ""));
    let (s, h, v) = json(&weir, "/x", &[]).await;
    assert_eq!(s, 401);
    assert_eq!(h["www-authenticate"], "Key realm=\"weir\"");
    assert_eq!(v["reason"], "unauthenticated");
    assert_eq!(json(&weir, "/x", &[("x-api-key", "wrong-key-123")]).await.0, 401);
    let (s, _, v) = json(&weir, "/x", &[("x-api-key", "alice-secret-key")]).await;
    assert_eq!(s, 200);
    assert_eq!(v["consumer"], "alice");
    assert_eq!(v["api_key"], "", "the key is not forwarded upstream");
    let (s, _, v) = json(&weir, "/x", &[("x-api-key", "bob-secret-key")]).await;
    assert_eq!((s, v["consumer"].as_str()), (200, Some("bob")), "hashed keys work");
}

#[tokio::test]
async fn ip_restriction_allows_and_denies_by_cidr() {
    let up = echo().await;
    let weir = Weir::start(&with_plugins(
        up.port(),
        "      - { name: ip-restriction, config: { deny: [127.0.0.0/8] } }\n",
        "",
    ));
    let (s, _, v) = json(&weir, "/", &[]).await;
    assert_eq!((s, v["reason"].as_str()), (403, Some("ip_denied")));
    let weir = Weir::start(&with_plugins(
        up.port(),
        "      - { name: ip-restriction, config: { allow: [127.0.0.1/32, \"::1\"] } }\n",
        "",
    ));
    assert_eq!(json(&weir, "/", &[]).await.0, 200);
}

#[tokio::test]
async fn local_rate_limit_per_consumer_with_headers_and_429() {
    let up = echo().await;
    let plugins = "      - name: key-auth\n        config: { consumers: [{ name: alice, key: alice-secret-key }, { name: bob, key: bob-secret-key }] }\n      - { name: rate-limit, config: { requests: 3, window: 10s, key: { consumer: {} } } }\n";
    let weir = Weir::start(&with_plugins(up.port(), plugins, ""));
    for i in 0..3 {
        let (s, h, _) = json(&weir, "/", &[("x-api-key", "alice-secret-key")]).await;
        assert_eq!(s, 200);
        assert_eq!(h["ratelimit-limit"], "3");
        assert_eq!(h["ratelimit-remaining"], (2 - i).to_string().as_str());
    }
    let (s, h, v) = json(&weir, "/", &[("x-api-key", "alice-secret-key")]).await;
    assert_eq!((s, v["reason"].as_str()), (429, Some("rate_limited")));
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=4).contains(&retry), "retry-after {retry}");
    // Another consumer has its own bucket; authentication ran first.
    assert_eq!(json(&weir, "/", &[("x-api-key", "bob-secret-key")]).await.0, 200);
    assert_eq!(json(&weir, "/", &[]).await.0, 401, "authn runs before the rate limit");
}

#[tokio::test]
async fn cors_preflight_needs_no_credentials_and_actual_requests_get_headers() {
    let up = echo().await;
    let plugins = "      - { name: key-auth, config: { consumers: [{ name: alice, key: alice-secret-key }] } }\n      - { name: cors, config: { allow_origins: [\"https://app.example\"], max_age: 10m } }\n";
    let weir = Weir::start(&with_plugins(up.port(), plugins, ""));
    let rsp = request(
        weir.addr,
        "OPTIONS",
        "/x",
        &[("origin", "https://app.example"), ("access-control-request-method", "POST")],
    )
    .await;
    assert_eq!(rsp.status(), 204, "preflight answered before key-auth");
    assert_eq!(rsp.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(rsp.headers()["access-control-max-age"], "600");
    let rsp = request(
        weir.addr,
        "OPTIONS",
        "/x",
        &[("origin", "https://evil.example"), ("access-control-request-method", "POST")],
    )
    .await;
    assert_eq!(rsp.status(), 403);
    let (s, h, _) = json(&weir, "/x", &[("origin", "https://app.example"), ("x-api-key", "alice-secret-key")]).await;
    assert_eq!(s, 200);
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
}

#[tokio::test]
async fn request_id_headers_and_rewrite_from_global_and_route_plugins() {
    let up = echo().await;
    let global = "plugins:\n  - { name: request-id }\n  - { name: headers, config: { response: { set: { x-served-by: global } } } }\n";
    let plugins = "      - { name: headers, config: { request: { add: { x-added: \"yes\" }, remove: [x-remove-me] }, response: { set: { x-served-by: weir }, remove: [x-internal] } } }\n      - { name: rewrite, config: { strip_prefix: /api } }\n";
    let weir = Weir::start(&with_plugins(up.port(), plugins, global));
    let (s, h, v) = json(&weir, "/api/users/7?page=2", &[("x-remove-me", "secret")]).await;
    assert_eq!(s, 200);
    assert_eq!(v["path"], "/users/7?page=2");
    assert_eq!(v["added"], "yes");
    assert_eq!(v["removed"], "");
    let id = v["request_id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "generated id");
    assert_eq!(h["x-request-id"], id, "same id upstream and in the response");
    assert_eq!(h["x-served-by"], "weir", "a route plugin replaces the global one of the same name");
    // An incoming id is kept.
    let weir_re = Weir::start(&with_plugins(
        up.port(),
        "      - { name: rewrite, config: { regex: \"^/v1/(.*)$\", replacement: \"/api/$1\" } }\n",
        "",
    ));
    assert_eq!(
        json(&weir_re, "/v1/orders/9?x=1", &[]).await.2["path"],
        "/api/orders/9?x=1",
        "regex rewrite keeps the query"
    );
    let (_, h, v) = json(&weir, "/api/x", &[("x-request-id", "abc-123")]).await;
    assert_eq!((v["request_id"].as_str(), h["x-request-id"].to_str().ok()), (Some("abc-123"), Some("abc-123")));
}

#[tokio::test]
async fn filters_in_one_phase_run_concurrently_and_can_short_circuit() {
    let up = echo().await;
    // Two independent 1 s waits in the same phase: about 1 s added, not 2 s.
    let plugins = "      - { name: fault, config: { delay: 1s } }\n      - { name: fault, config: { delay: 1s } }\n";
    let weir = Weir::start(&with_plugins(up.port(), plugins, ""));
    let mut c = Client::connect(weir.addr).await;
    c.text("/warm").await;
    let started = Instant::now();
    assert_eq!(c.text("/").await.0, 200);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(1800), "took {took:?}");
    // A filter can answer by itself.
    let weir =
        Weir::start(&with_plugins(up.port(), "      - { name: fault, config: { abort: { status: 503 } } }\n", ""));
    let (s, _, v) = json(&weir, "/", &[]).await;
    assert_eq!((s, v["reason"].as_str()), (503, Some("fault_injected")));
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 2, "aborted request never reached the upstream");
}

#[test]
fn plugin_config_errors_carry_their_path() {
    let yaml = with_plugins(
        1,
        "      - { name: key-auth, config: { consumers: [{ name: a, key: short }, { name: b }] } }\n      - { name: rate-limit, config: { requests: 0, window: 1s, colour: red } }\n      - { name: nope }\n",
        "plugins:\n  - { name: ip-restriction, config: { allow: [10.0.0.0/33] } }\n",
    );
    let errs = weir_config_errors(&yaml);
    for path in [
        "plugins[0].config.allow[0]",
        "routes[0].plugins[0].config.consumers[0].key",
        "routes[0].plugins[0].config.consumers[1]",
        "routes[0].plugins[1].config",
        "routes[0].plugins[2].name",
    ] {
        assert!(errs.contains(path), "missing {path} in:\n{errs}");
    }
}

fn weir_config_errors(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(["validate", "-c"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plugins_cli_lists_and_prints_schemas() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(["plugins", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    for p in ["cors", "request-id", "ip-restriction", "key-auth", "rate-limit", "fault", "headers", "rewrite"] {
        assert!(list.contains(p), "{list}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["plugins", "schema", "key-auth"])
        .output()
        .unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["consumers"].is_object(), "{schema}");
}

#[tokio::test]
async fn access_log_writes_json_lines_to_a_file() {
    let up = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let global = format!(
        "plugins:\n  - {{ name: request-id }}\n  - {{ name: access-log, config: {{ sink: {{ file: {{ path: \"{}\" }} }} }} }}\n",
        file.display()
    );
    let plugins = "      - { name: key-auth, config: { consumers: [{ name: alice, key: alice-secret-key }] } }\n";
    let weir = Weir::start(&with_plugins(up.port(), plugins, &global));
    assert_eq!(json(&weir, "/orders/1?x=2", &[("x-api-key", "alice-secret-key")]).await.0, 200);
    assert_eq!(json(&weir, "/orders/2", &[]).await.0, 401);
    let deadline = Instant::now() + Duration::from_secs(3);
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        // Only whole lines: the writer may be half-way through the next one.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        let lines: Vec<serde_json::Value> = whole.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = &lines[0];
    assert_eq!(ok["route"], "api");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/orders/1?x=2");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["consumer"], "alice");
    assert_eq!(ok["endpoint"], format!("127.0.0.1:{}", up.port()));
    assert_eq!(ok["request_id"].as_str().map(str::len), Some(32));
    assert!(ok["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["status"], 401);
}

#[tokio::test]
async fn access_log_http_sink_batches_and_never_blocks_when_down() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let up = echo().await;
    let batches = std::sync::Arc::new(AtomicUsize::new(0));
    let entries = std::sync::Arc::new(AtomicUsize::new(0));
    let largest = std::sync::Arc::new(AtomicUsize::new(0));
    let collector = {
        let (b, e, l) = (batches.clone(), entries.clone(), largest.clone());
        upstream_fn(move |req: Request<Incoming>| {
            let (b, e, l) = (b.clone(), e.clone(), l.clone());
            async move {
                let body = http_body_util::BodyExt::collect(req.into_body()).await.unwrap().to_bytes();
                let lines = String::from_utf8_lossy(&body).lines().count();
                b.fetch_add(1, SeqCst);
                e.fetch_add(lines, SeqCst);
                l.fetch_max(lines, SeqCst);
                Response::new(full(""))
            }
        })
        .await
    };
    let global = format!(
        "plugins:\n  - {{ name: access-log, config: {{ sink: {{ http: {{ url: \"http://{}/ingest\", batch_size: 10, flush_interval: 200ms }} }} }} }}\n",
        collector.addr
    );
    let weir = Weir::start(&with_plugins(up.port(), "      - { name: request-id }\n", &global));
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..25 {
        assert_eq!(c.text("/").await.0, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while entries.load(SeqCst) < 25 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entries.load(SeqCst), 25, "every entry arrives");
    // How many batches depends on timing (a slow run flushes more, smaller ones on the
    // interval); what holds is: never more than batch_size per request, so at least 3 of them,
    // and lines are batched (some request carries several).
    let (n, max) = (batches.load(SeqCst), largest.load(SeqCst));
    assert!(n >= 3, "25 entries in batches of at most 10 need at least 3 requests: {n}");
    assert!((2..=10).contains(&max), "batches of more than one line, at most batch_size (10): largest {max}");

    // Collector gone and a tiny buffer: requests still succeed; entries are dropped and counted.
    let dead = format!(
        "plugins:\n  - {{ name: access-log, config: {{ buffer: 1, sink: {{ http: {{ url: \"http://127.0.0.1:{}/ingest\", batch_size: 1000, flush_interval: 10s }} }} }} }}\n",
        dead_port()
    );
    let weir = Weir::start(&with_plugins(up.port(), "      - { name: request-id }\n", &dead));
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..2000 {
        assert_eq!(c.text("/").await.0, 200);
    }
    let (_, metrics) = get(weir.admin, "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&metrics);
    let dropped = text
        .lines()
        .find(|l| l.starts_with("weir_plugin_errors_total{plugin=\"access-log\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "drops are counted: {text}");
}
