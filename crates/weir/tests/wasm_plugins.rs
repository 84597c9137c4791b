//! proxy-wasm plugin packages through the real binary: plugins written against the public
//! proxy-wasm Rust SDK (`plugins/examples/`, built for wasm32-wasip1 here) edit headers,
//! answer locally, rewrite bodies, read their configuration, call out, share data, tick,
//! export metrics and read properties; misbehaving ones (trap, endless loop, memory hog,
//! refused configuration) harm only their own requests under both failure policies; a
//! rebuilt package is a hot update that loses no request.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::plugins::{package, package_with, wasm};
use common::*;
use hyper::body::Incoming;
use hyper::{Request, Response};

/// A config with `packages`, a route `api` with `plugins` (YAML list items, 6 spaces in), a
/// plugin-free route `plain` on /plain, and `extra` upstreams.
fn plugin_config(packages: &[&Path], port: u16, plugins: &str, extra: &str) -> String {
    let pk: Vec<String> = packages.iter().map(|p| format!("\"{}\"", p.display())).collect();
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - {{ name: public, address: 127.0.0.1:0 }}\nplugin_packages: [{}]\nroutes:\n  - name: plain\n    match: {{ path: {{ prefix: /plain }} }}\n    upstream: app\n  - name: api\n    upstream: app\n    plugins:\n{plugins}\nupstreams:\n{}{extra}",
        pk.join(", "),
        upstream_yaml("app", "round_robin", &[(port, 1)], "")
    )
}

async fn head_of(weir: &Weir, path: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    let rsp = request(weir.addr, "GET", path, headers).await;
    let (s, h) = (rsp.status().as_u16(), rsp.headers().clone());
    let body = http_body_util::BodyExt::collect(rsp.into_body()).await.unwrap().to_bytes();
    (s, h, String::from_utf8_lossy(&body).into_owned())
}

/// An upstream that also sets a response header for plugins to remove.
async fn app() -> Upstream {
    upstream_fn(|req: Request<Incoming>| async move {
        let mut rsp = Response::new(full("hello from upstream"));
        for (k, v) in req.headers() {
            if let Ok(n) = http::HeaderName::try_from(format!("x-seen-{k}")) {
                rsp.headers_mut().append(n, v.clone());
            }
        }
        rsp.headers_mut().insert("x-internal", http::HeaderValue::from_static("secret"));
        rsp
    })
    .await
}

#[tokio::test]
async fn header_plugin_edits_both_ways_and_answers_401_itself() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("header-edit", dir.path());
    let plugins = "      - name: header-edit\n        config:\n          require: x-api-key\n          request: { add: { x-added: \"yes\" }, set: { x-api-key: hidden }, remove: [x-drop] }\n          response: { add: { x-plugin: header-edit }, remove: [x-internal] }\n";
    let weir = Weir::start(&plugin_config(&[&pkg], up.port(), plugins, ""));

    let (s, h, body) = head_of(&weir, "/x", &[]).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(h["content-type"], "application/json");
    assert!(body.contains("missing x-api-key"), "{body}");

    let (s, h, body) = head_of(&weir, "/x", &[("x-api-key", "k"), ("x-drop", "1")]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, "hello from upstream");
    assert_eq!(h["x-seen-x-added"], "yes");
    assert_eq!(h["x-seen-x-api-key"], "hidden", "replaced before it left the gateway");
    assert!(h.get("x-seen-x-drop").is_none(), "removed before it left the gateway");
    assert_eq!(h["x-plugin"], "header-edit");
    assert!(h.get("x-internal").is_none(), "response header removed by the plugin");
    assert_eq!(get(weir.addr, "/plain", &[]).await.0, 200, "a route without the plugin is untouched");
}

#[tokio::test]
async fn timers_tick_and_shared_data_counts_them() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("hello", dir.path());
    let weir = Weir::start(&plugin_config(&[&pkg], up.port(), "      - name: hello\n", ""));
    let ticks = |h: &http::HeaderMap| -> u64 {
        let v = h["x-hello"].to_str().unwrap().to_owned();
        v.rsplit('=').next().unwrap().parse().unwrap()
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, h, _) = head_of(&weir, "/", &[]).await;
    assert_eq!(s, 200);
    let first = ticks(&h);
    assert!(first > 0, "ticks ran: {h:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, h, _) = head_of(&weir, "/", &[]).await;
    assert!(ticks(&h) > first, "ticks keep running");
    assert!(weir.logs_contain("hello from the plugin's VM"), "proxy_log reaches Weir's log");
}

#[tokio::test]
async fn body_plugin_rewrites_the_response_body_and_its_length_or_answers_itself() {
    let up = upstream_fn(|req: Request<Incoming>| async move {
        Response::new(full(if req.uri().path() == "/secret" { "the secret" } else { "hello from upstream" }))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("body", dir.path());
    let plugins = "      - name: body\n        config: { from: upstream, to: the plugin, deny: secret }\n";
    let weir = Weir::start(&plugin_config(&[&pkg], up.port(), plugins, ""));
    let (s, h, body) = head_of(&weir, "/", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(body, "hello from the plugin");
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    // A local response from the response body callback replaces the upstream's response.
    let (s, h, body) = head_of(&weir, "/secret", &[]).await;
    assert_eq!((s, body.as_str()), (403, "{\"error\":\"denied by the body plugin\"}"));
    assert_eq!(h["content-type"], "application/json");
}

#[tokio::test]
async fn body_plugin_rewrites_the_request_body_before_the_upstream_sees_it_or_answers_itself() {
    let seen = Arc::new(AtomicUsize::new(0));
    let hits = seen.clone();
    let echo = upstream_fn(move |req: Request<Incoming>| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::Relaxed);
            let len = req.headers().get("content-length").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            let body = http_body_util::BodyExt::collect(req.into_body()).await.unwrap().to_bytes();
            Response::new(full(format!("{len}:{}", String::from_utf8_lossy(&body))))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("body", dir.path());
    let plugins = "      - name: body\n        config: { from: upstream, to: the plugin, deny: secret }\n";
    let weir = Weir::start(&plugin_config(&[&pkg], echo.port(), plugins, ""));
    let mut c = Client::connect(weir.addr).await;
    let rsp = c.try_send("POST", "/", &[], bytes::Bytes::from_static(b"ping upstream")).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let body = http_body_util::BodyExt::collect(rsp.into_body()).await.unwrap().to_bytes();
    assert_eq!(&body[..], b"15:ping the plugin", "the upstream got the rewritten body with its new length");
    // A local response from the request body callback: the upstream never sees the request.
    let rsp = c.try_send("POST", "/", &[], bytes::Bytes::from_static(b"tell the secret")).await.unwrap();
    assert_eq!(rsp.status(), 403);
    let body = http_body_util::BodyExt::collect(rsp.into_body()).await.unwrap().to_bytes();
    assert_eq!(&body[..], b"{\"error\":\"denied by the body plugin\"}");
    assert_eq!(seen.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn an_assemblyscript_plugin_on_its_own_sdk_runs_unmodified() {
    // solo-io's AssemblyScript runtime: ABI 0.2.0, WASI preview 0 imports, a root context
    // found by `plugin_root_id` (the package's `root_id`), the configuration read as text.
    let up = app().await;
    let pkg = common::plugins::assemblyscript("tag");
    let plugins = "      - name: as-tag\n        config: { greeting: hi }\n";
    let weir = Weir::start(&plugin_config(&[&pkg], up.port(), plugins, ""));
    let (s, h, body) = head_of(&weir, "/x", &[]).await;
    assert_eq!((s, body.as_str()), (200, "hello from upstream"));
    assert_eq!(h["x-assemblyscript"], r#"{"greeting":"hi"}"#);
}

#[tokio::test]
async fn auth_callout_allows_or_denies_through_an_upstream() {
    let up = app().await;
    let authz = upstream_fn(|req: Request<Incoming>| async move {
        let ok = req.uri().path() == "/check" && req.headers().get("authorization").is_some_and(|v| v == "Bearer good");
        let mut rsp = Response::new(full(if ok { "alice" } else { "no" }));
        if !ok {
            *rsp.status_mut() = http::StatusCode::FORBIDDEN;
        }
        rsp
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("auth-callout", dir.path());
    let plugins = "      - name: auth-callout\n        config: { upstream: authz, path: /check }\n";
    let extra = upstream_yaml("authz", "round_robin", &[(authz.port(), 1)], "");
    let weir = Weir::start(&plugin_config(&[&pkg], up.port(), plugins, &extra));
    let (s, h, body) = head_of(&weir, "/", &[("authorization", "Bearer good")]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(h["x-seen-x-auth-user"], "alice", "the plugin forwarded what the callout said");
    let (s, _, body) = head_of(&weir, "/", &[("authorization", "Bearer bad")]).await;
    assert_eq!((s, body.as_str()), (403, "{\"error\":\"denied\"}"));
    assert_eq!(authz.hits.load(Ordering::SeqCst), 2);
    // Callouts go out on the endpoint's pooled connections: one after another, they share
    // them (at most one per worker) instead of dialing each time.
    for _ in 0..8 {
        assert_eq!(head_of(&weir, "/", &[("authorization", "Bearer good")]).await.0, 200);
    }
    assert_eq!(authz.hits.load(Ordering::SeqCst), 10);
    assert!(
        authz.conns.load(Ordering::SeqCst) <= 2,
        "{} connections for 10 callouts",
        authz.conns.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn shared_counter_metric_and_properties() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("counter", dir.path());
    let weir = Weir::start(&plugin_config(&[&pkg], up.port(), "      - name: counter\n", ""));
    let mut seen = Vec::new();
    for _ in 0..6 {
        // A fresh connection each time: both workers' instances share one counter.
        let (s, h, _) = head_of(&weir, "/p?q=1", &[]).await;
        assert_eq!(s, 200);
        assert_eq!(h["x-request-number"], h["x-seen-x-request-number"]);
        seen.push(h["x-request-number"].to_str().unwrap().parse::<u32>().unwrap());
        let props = h["x-seen"].to_str().unwrap().to_owned();
        assert!(props.starts_with("route=api method=GET path=/p?q=1 plugin=counter source=127.0.0.1:"), "{props}");
    }
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    let (_, metrics) = get(weir.admin, "/metrics", &[]).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("weir_plugin_metric{plugin=\"counter\",name=\"counter_requests_total\"} 6"), "{metrics}");
    // Each request enqueued its path; the registering root context heard of every item
    // (`on_queue_ready`, whichever worker enqueued it) and counted them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h, _) = head_of(&weir, "/q", &[]).await;
        let queued: u32 = h["x-queued"].to_str().unwrap().parse().unwrap();
        let number: u32 = h["x-request-number"].to_str().unwrap().parse().unwrap();
        // This request's own item may not have been delivered yet; every earlier one must be.
        if queued + 1 >= number {
            assert!(queued <= number, "{queued} items counted from {number} requests");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {queued} of {} queued items delivered", number - 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A package of `misbehave` with `policy`, `mode`, and a breaker that never opens unless asked.
fn misbehaving(dir: &Path, policy: &str, breaker: &str) -> std::path::PathBuf {
    let p = policy.to_owned();
    let b = breaker.to_owned();
    package_with("misbehave", dir, move |m| {
        m.replace("failure_policy: fail_closed", &format!("failure_policy: {p}"))
            + &format!("limits: {{ cpu: 20ms, memory: 8MiB }}\nbreaker: {b}\n")
    })
}

#[tokio::test]
async fn misbehaving_plugins_fail_only_their_requests_under_both_policies() {
    let up = app().await;
    for policy in ["fail_closed", "fail_open"] {
        for mode in ["trap", "spin", "hog"] {
            let dir = tempfile::tempdir().unwrap();
            let pkg = misbehaving(dir.path(), policy, "{ failures: 1000 }");
            let plugins = format!("      - name: misbehave\n        config: {{ mode: {mode}, on: header }}\n");
            let weir = Weir::start(&plugin_config(&[&pkg], up.port(), &plugins, ""));
            for round in 0..2 {
                let started = Instant::now();
                let (s, _, body) = head_of(&weir, "/", &[("x-misbehave", "1")]).await;
                let took = started.elapsed();
                match policy {
                    "fail_closed" => {
                        assert_eq!(s, 503, "{mode}/{policy}: {body}");
                        assert!(body.contains("plugin_failed"), "{body}");
                    }
                    _ => assert_eq!((s, body.as_str()), (200, "hello from upstream"), "{mode}/{policy}"),
                }
                assert!(took < Duration::from_secs(2), "{mode}: the plugin was stopped ({took:?})");
                // The trapped instance is replaced: the next request is served by a new one.
                let (s, h, _) = head_of(&weir, "/", &[]).await;
                assert_eq!(s, 200, "{mode}/{policy} round {round}");
                assert_eq!(h["x-seen-x-behaved"], "yes", "the rebuilt instance runs the plugin");
                assert_eq!(get(weir.addr, "/plain", &[]).await.0, 200);
            }
            let (_, metrics) = get(weir.admin, "/metrics", &[]).await;
            let kind = match mode {
                "trap" => "trap",
                "spin" => "cpu",
                _ => "memory",
            };
            let line = format!("weir_plugin_faults_total{{plugin=\"misbehave\",kind=\"{kind}\"}} 2");
            assert!(String::from_utf8_lossy(&metrics).contains(&line), "{mode}: {line}");
        }
    }
}

#[tokio::test]
async fn a_plugin_that_keeps_failing_trips_its_breaker_then_recovers() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = misbehaving(dir.path(), "fail_closed", "{ failures: 2, window: 10s, cooldown: 1s }");
    let plugins = "      - name: misbehave\n        config: { mode: trap, on: header }\n";
    let weir = Weir::start(&plugin_config(&[&pkg], up.port(), plugins, ""));
    for _ in 0..2 {
        assert_eq!(get(weir.addr, "/", &[("x-misbehave", "1")]).await.0, 503);
    }
    let (s, _, body) = head_of(&weir, "/", &[]).await;
    assert_eq!(s, 503, "open: even good requests get the failure policy: {body}");
    assert!(weir.wait_log("plugin circuit breaker opened", Duration::from_secs(2)).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (s, h, _) = head_of(&weir, "/", &[]).await;
    assert_eq!(s, 200, "half-open: one trial, and it succeeds");
    assert_eq!(h["x-seen-x-behaved"], "yes");
    assert_eq!(get(weir.addr, "/", &[]).await.0, 200, "closed again");
    let (_, metrics) = get(weir.admin, "/metrics", &[]).await;
    assert!(String::from_utf8_lossy(&metrics).contains("weir_plugin_breaker_trips_total{plugin=\"misbehave\"} 1"));
}

#[tokio::test]
async fn a_plugin_whose_configure_fails_is_refused_and_the_old_config_keeps_serving() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("misbehave", dir.path());
    let good = "      - name: misbehave\n        config: { mode: none }\n";
    let bad = "      - name: misbehave\n        config: { mode: refuse }\n";
    // At start: refused with the reason, nothing served.
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, plugin_config(&[&pkg], up.port(), bad, "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["standalone", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("misbehave") && err.contains("on_configure returned false"), "{err}");
    // On reload: refused, the running version keeps serving.
    let weir = Weir::start(&plugin_config(&[&pkg], up.port(), good, ""));
    let v = weir.version().await;
    weir.write_config(&plugin_config(&[&pkg], up.port(), bad, ""));
    assert!(weir.wait_log("on_configure returned false", Duration::from_secs(10)).await);
    assert_eq!(weir.version().await, v);
    assert_eq!(get(weir.addr, "/", &[]).await.0, 200);
}

#[tokio::test]
async fn validate_reports_plugin_config_errors_with_paths() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("body", dir.path());
    let cfg = dir.path().join("weir.yaml");
    let plugins = "      - name: body\n        config: { from: 1 }\n      - name: nope\n";
    std::fs::write(&cfg, plugin_config(&[&pkg], 9, plugins, "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["validate", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Each with its line and column in the file, in plain words.
    assert!(err.contains("routes[1].plugins[0].config.from (line 13, column 19): expected a string, got 1"), "{err}");
    assert!(
        err.contains("routes[1].plugins[0].config (line 13, column 9): missing \"to\": it is required here"),
        "{err}"
    );
    assert!(err.contains("routes[1].plugins[1].name (line 14, column 9): unknown plugin \"nope\""), "{err}");
    assert!(err.contains("body"), "packages are listed among the known plugins: {err}");
}

/// Appends a custom section: a different module (new sha256) that behaves the same.
fn variant(wasm: &[u8], n: u32) -> Vec<u8> {
    let name = b"weir-test";
    let payload = n.to_le_bytes();
    let mut out = wasm.to_vec();
    out.push(0);
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hot_updates_under_load_lose_no_request() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = package("header-edit", dir.path());
    let plugins = |v: u32| {
        format!("      - name: header-edit\n        config: {{ response: {{ set: {{ x-version: \"{v}\" }} }} }}\n")
    };
    let weir = Weir::start(&plugin_config(&[&pkg], up.port(), &plugins(0), ""));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, addr) = (stop.clone(), ok.clone(), failures.clone(), weir.addr);
        load.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let outcome = match c.try_send("GET", "/", &[], bytes::Bytes::new()).await {
                    Ok(r) if r.status() == 200 => match http_body_util::BodyExt::collect(r.into_body()).await {
                        Ok(_) => Ok(()),
                        Err(e) => Err(format!("body: {e:?}")),
                    },
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(format!("request: {e:?}")),
                };
                match outcome {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.lock().unwrap().push(e);
                        c = Client::connect(addr).await;
                    }
                }
            }
        }));
    }
    let base = wasm("header-edit");
    // The level: after a few updates, once the allocator has what a reload needs.
    let mut level = 0;
    for v in 1..=50u32 {
        if v == 6 {
            level = settled_rss(&weir).await;
        }
        // A new module (recompiled) and a new configuration, both through the file watcher.
        let tmp = pkg.join("plugin.wasm.tmp");
        std::fs::write(&tmp, variant(&base, v)).unwrap();
        std::fs::rename(&tmp, pkg.join("plugin.wasm")).unwrap();
        weir.write_config(&plugin_config(&[&pkg], up.port(), &plugins(v), ""));
        // Generous: each update recompiles the module, in a debug build, beside other tests.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, h, _) = head_of(&weir, "/", &[]).await;
            if h.get("x-version").is_some_and(|x| x == v.to_string().as_str()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "update {v} never served (serving {:?}): {}",
                h.get("x-version"),
                weir.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failures) = (ok.load(Ordering::Relaxed), failures.lock().unwrap().clone());
    assert!(failures.is_empty(), "{} failed of {}: {failures:?}\n{}", failures.len(), ok + failures.len(), weir.logs());
    assert!(ok > 100, "load ran throughout: {ok}");
    // A version kept alive would cost its module and instances, well over a MiB each.
    let grown = settled_rss(&weir).await.saturating_sub(level);
    assert!(grown < 8 * 1024, "45 updates grew RSS by {grown} KiB: old versions are not released");
}

/// RSS once the last replaced config has been released and its memory handed back.
async fn settled_rss(weir: &Weir) -> u64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    weir.rss_kib()
}

#[tokio::test]
async fn plugins_new_writes_a_project_that_builds_into_a_valid_package() {
    let dir = tempfile::tempdir().unwrap();
    let proj = dir.path().join("shout");
    let weir = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(args).output().unwrap();
    let out = weir(&["plugins", "new", "shout", "--dir", proj.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Built with the examples' target directory, so their dependencies are reused.
    common::plugins::built();
    let target = common::plugins::examples_dir().join("target");
    let build = std::process::Command::new(proj.join("build.sh")).env("CARGO_TARGET_DIR", &target).output().unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let out = weir(&["plugins", "validate", proj.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("valid package shout v0.1.0"), "{text}");
    let out = weir(&["plugins", "list", "--dir", proj.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("key-auth") && text.contains("shout") && text.contains("v0.1.0"), "{text}");
    // A broken package: every file's problem at once.
    std::fs::write(proj.join("metadata.yaml"), "name: Shout\nversion: x\nphase: transform\n").unwrap();
    std::fs::write(proj.join("config.schema.json"), "{ not json").unwrap();
    std::fs::remove_file(proj.join("plugin.wasm")).unwrap();
    let out = weir(&["plugins", "validate", proj.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for needle in ["metadata.yaml: name", "metadata.yaml: version", "config.schema.json", "plugin.wasm"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // Not a proxy-wasm module at all: refused before anything runs.
    std::fs::write(proj.join("metadata.yaml"), "name: shout\nversion: 1.0.0\nphase: transform\n").unwrap();
    std::fs::write(proj.join("config.schema.json"), "{}").unwrap();
    std::fs::write(proj.join("plugin.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let out = weir(&["plugins", "validate", proj.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a proxy-wasm plugin"));
}

/// An HTTP/2 (prior knowledge) upstream that answers `body` with trailers: `grpc-status: 0`,
/// a value that names `upstream`, and each request trailer it got back as `x-got-NAME`.
async fn h2c_with_trailers() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use http_body_util::{BodyExt, StreamBody};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let got = req.into_body().collect().await.unwrap();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert("x-note", "from upstream".parse().unwrap());
                    for (k, v) in got.trailers().into_iter().flatten() {
                        trailers.insert(http::HeaderName::try_from(format!("x-got-{k}")).unwrap(), v.clone());
                    }
                    let frames = vec![
                        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(
                            b"body from upstream",
                        ))),
                        Ok(hyper::body::Frame::trailers(trailers)),
                    ];
                    Ok::<_, std::convert::Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(
                        frames,
                    ))))
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Sends `ping` with a trailer `x-sig` over HTTP/2 through Weir, whose one route runs the
/// `body` example (its metadata edited by `meta`) in front of [`h2c_with_trailers`]; returns
/// the response body and trailers.
async fn body_plugin_with_trailers(meta: impl Fn(String) -> String) -> (bytes::Bytes, http::HeaderMap) {
    use http_body_util::{BodyExt, StreamBody};
    let (up, _task) = h2c_with_trailers().await;
    let dir = tempfile::tempdir().unwrap();
    let pkg = package_with("body", dir.path(), meta);
    let plugins = "      - name: body\n        config: { from: upstream, to: the plugin }\n";
    let yaml = plugin_config(&[&pkg], up.port(), plugins, "").replace(
        &format!("endpoints: [{{ address: 127.0.0.1, port: {}, weight: 1 }}]\n", up.port()),
        &format!("endpoints: [{{ address: 127.0.0.1, port: {}, weight: 1 }}]\n    protocol: h2c\n", up.port()),
    );
    assert!(yaml.contains("protocol: h2c"), "{yaml}");
    let weir = Weir::start(&yaml);
    // gRPC-style: HTTP/2 to Weir, a body with trailers each way.
    let stream = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut sent = http::HeaderMap::new();
    sent.insert("x-sig", "signed by upstream".parse().unwrap());
    let frames = vec![
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(b"ping"))),
        Ok(hyper::body::Frame::trailers(sent)),
    ];
    let req = Request::post(format!("http://{}/rpc", weir.addr))
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let rsp = h2.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let got = rsp.into_body().collect().await.unwrap();
    let trailers = got.trailers().cloned().expect("the response kept its trailers");
    (got.to_bytes(), trailers)
}

/// What the `body` plugin did to trailers: both directions passed through it.
fn assert_trailers_edited(trailers: &http::HeaderMap) {
    assert_eq!(trailers["grpc-status"], "0");
    // The response trailers passed through the plugin…
    assert_eq!(trailers["x-note"], "from the plugin");
    let names = trailers["x-body-trailers"].to_str().unwrap();
    assert!(names.contains("grpc-status") && names.contains("x-note"), "{names}");
    // …and so did the request's, before the upstream saw them.
    assert_eq!(trailers["x-got-x-sig"], "signed by the plugin");
}

#[tokio::test]
async fn a_plugin_that_reads_bodies_sees_and_edits_request_and_response_trailers() {
    let (body, trailers) = body_plugin_with_trailers(|m| m).await;
    assert_eq!(body, "body from the plugin");
    assert_trailers_edited(&trailers);
}

#[tokio::test]
async fn a_plugin_that_reads_only_trailers_edits_them_while_bodies_stream() {
    let (body, trailers) = body_plugin_with_trailers(|m| {
        assert!(m.contains("reads_bodies: true"), "{m}");
        m.replace("reads_bodies: true", "reads_trailers: true")
    })
    .await;
    assert_eq!(body, "body from upstream", "the body streamed past the plugin, which reads no bodies");
    assert_trailers_edited(&trailers);
}

/// The `body` example, its metadata edited by `meta`, in front of an HTTP/1.1 upstream that
/// answers chunked with a declared trailer; an HTTP/1.1 client that accepts trailers asks it.
/// Returns the response as received, lower-cased.
async fn body_plugin_over_http1(meta: impl Fn(String) -> String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An HTTP/1.1 upstream that answers every request chunked, with a trailer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let rsp = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-note\r\n\r\n12\r\nbody from upstream\r\n0\r\nx-note: from upstream\r\n\r\n";
                let _ = s.write_all(rsp.as_bytes()).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let pkg = package_with("body", dir.path(), meta);
    let plugins = "      - name: body\n        config: { from: upstream, to: the plugin }\n";
    let weir = Weir::start(&plugin_config(&[&pkg], port, plugins, ""));
    let mut c = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    c.write_all(b"GET /rpc HTTP/1.1\r\nhost: weir\r\nte: trailers\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await.unwrap().unwrap();
    String::from_utf8_lossy(&got).to_ascii_lowercase()
}

#[tokio::test]
async fn trailers_reach_plugins_and_http1_clients() {
    // Streamed: the upstream's declared trailer, edited by the plugin.
    let got = body_plugin_over_http1(|m| m.replace("reads_bodies: true", "reads_trailers: true")).await;
    let (head, body) = got.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {got:?}"));
    assert!(head.starts_with("http/1.1 200") && head.contains("transfer-encoding: chunked"), "{got}");
    assert!(head.contains("\r\ntrailer: x-note"), "the upstream's declaration is kept: {got}");
    assert!(body.contains("body from upstream"), "the body streamed past the plugin: {got}");
    assert!(body.contains("\r\nx-note: from the plugin\r\n"), "the plugin edited the upstream's trailer: {got}");
    // Buffered: every trailer the plugin leaves is declared, its own too.
    let got = body_plugin_over_http1(|m| m).await;
    let (head, body) = got.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {got:?}"));
    assert!(body.contains("body from the plugin"), "{got}");
    assert!(head.contains("\r\ntrailer: "), "{got}");
    assert!(body.contains("\r\nx-note: from the plugin\r\n"), "{got}");
    assert!(body.contains("\r\nx-body-trailers: x-note\r\n"), "the plugin's own trailer is declared and sent: {got}");
}
