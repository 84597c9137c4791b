//! Hot reload, rejection of bad files, state that survives reloads, canary splits and
//! graceful shutdown, through the real binary and a watched file.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::*;

fn two_routes(a: u16, b: u16, extra_route: &str) -> String {
    let routes = format!(
        "  - {{ name: a, match: {{ path: {{ prefix: /a }} }}, upstream: a }}\n  - {{ name: b, match: {{ path: {{ prefix: /b }} }}, upstream: b }}\n{extra_route}"
    );
    let ups = format!(
        "{}{}",
        upstream_yaml("a", "round_robin", &[(a, 1)], ""),
        upstream_yaml("b", "round_robin", &[(b, 1)], "")
    );
    config(routes.trim_end(), &ups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_request() {
    let (a, b) = (named("A").await, named("B").await);
    let weir = Weir::start(&two_routes(a.port(), b.port(), ""));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for w in 0..4 {
        let (failures, done, stop, addr) = (failures.clone(), done.clone(), stop.clone(), weir.addr);
        load.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            while !stop.load(SeqCst) {
                let path = if w % 2 == 0 { "/a/x" } else { "/b/y" };
                match c.try_send("GET", path, &[], bytes::Bytes::new()).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                        done.fetch_add(1, SeqCst);
                    }
                    Ok(r) => {
                        eprintln!("status {}", r.status());
                        failures.fetch_add(1, SeqCst);
                    }
                    Err(e) => {
                        eprintln!("error {e}");
                        failures.fetch_add(1, SeqCst);
                        c = Client::connect(addr).await;
                    }
                }
            }
        }));
    }
    let before = weir.version().await;
    for i in 1..=50u64 {
        // Each version changes an unrelated route, so upstreams a and b are kept.
        let extra = format!("  - {{ name: r{i}, match: {{ path: {{ exact: /only/{i} }} }}, upstream: a }}\n");
        weir.write_config(&two_routes(a.port(), b.port(), &extra));
        weir.wait_version(before + i, Duration::from_secs(5)).await;
    }
    stop.store(true, SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(failures.load(SeqCst), 0, "requests failed during reloads");
    assert!(done.load(SeqCst) > 200, "load ran: {}", done.load(SeqCst));
    // Pools survived every reload: still the connections of the first version.
    assert!(
        a.conns.load(SeqCst) <= 2 && b.conns.load(SeqCst) <= 2,
        "pools were rebuilt: {} {}",
        a.conns.load(SeqCst),
        b.conns.load(SeqCst)
    );
}

#[tokio::test]
async fn invalid_file_is_rejected_with_paths_and_old_config_serves() {
    let (a, b) = (named("A").await, named("B").await);
    let weir = Weir::start(&two_routes(a.port(), b.port(), ""));
    let v1 = weir.version().await;
    let bad =
        two_routes(a.port(), b.port(), "  - { name: broken, match: { path: { regex: \"(\" } }, upstream: nowhere }\n");
    weir.write_config(&bad);
    assert!(weir.wait_log("config rejected", Duration::from_secs(3)).await, "no rejection logged");
    let paths = weir.wait_log("routes[2].match.path.regex", Duration::from_secs(1)).await;
    assert!(paths, "{:?}", weir.proc.logs.lock().unwrap());
    assert!(weir.wait_log("routes[2].upstream", Duration::from_secs(1)).await, "every error is reported");
    assert_eq!(weir.version().await, v1);
    assert_eq!(get(weir.addr, "/a", &[]).await.1, "A");
    // A good file after a bad one applies.
    weir.write_config(&two_routes(b.port(), a.port(), ""));
    weir.wait_version(v1 + 1, Duration::from_secs(5)).await;
    assert_eq!(get(weir.addr, "/a", &[]).await.1, "B");
}

#[tokio::test]
async fn health_state_of_unchanged_upstreams_survives_reload() {
    let (a, b) = (named("A").await, named("B").await);
    let dead = dead_port();
    let hc = "    health_check:\n      passive: { consecutive_failures: 1, ejection_time: 60s }\n";
    let ups = format!(
        "{}{}",
        upstream_yaml("a", "round_robin", &[(dead, 1), (a.port(), 1)], hc),
        upstream_yaml("b", "round_robin", &[(b.port(), 1)], "")
    );
    let cfg = |extra: &str| {
        config(format!("  - {{ name: a, upstream: a, retries: {{ attempts: 2 }} }}\n{extra}").trim_end(), &ups)
    };
    let weir = Weir::start(&cfg(""));
    for _ in 0..4 {
        assert_eq!(get(weir.addr, "/", &[]).await.1, "A");
    }
    let before = weir.stats().await;
    assert_eq!(before["upstreams"]["a"]["endpoints"][0]["ejected"], true);
    // One idle connection per worker that served a request (the fast path pools per worker).
    let pooled = &before["upstreams"]["a"]["endpoints"][1]["pool"];
    assert!(pooled["idle"].as_u64().unwrap() >= 1, "{before}");
    weir.write_config(&cfg("  - { name: extra, match: { path: { exact: /x } }, upstream: b }\n"));
    weir.wait_version(2, Duration::from_secs(5)).await;
    let s = weir.stats().await;
    assert_eq!(s["upstreams"]["a"]["endpoints"][0]["ejected"], true, "ejection survived: {s}");
    let after = &s["upstreams"]["a"]["endpoints"][1]["pool"];
    assert_eq!(after["created"], pooled["created"], "pool survived: {s}");
    assert_eq!(after["idle"], pooled["idle"], "idle connections survived: {s}");
}

/// The stats of `upstream`'s endpoint `label` (`127.0.0.1:PORT`).
fn endpoint<'a>(stats: &'a serde_json::Value, upstream: &str, port: u16) -> &'a serde_json::Value {
    let label = format!("127.0.0.1:{port}");
    let eps = stats["upstreams"][upstream]["endpoints"].as_array().unwrap();
    eps.iter().find(|e| e["endpoint"] == label.as_str()).unwrap_or_else(|| panic!("no {label} in {stats}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_that_remain_keep_their_state_when_the_set_changes() {
    let (a, b) = (named("A").await, named("B").await);
    let dead = dead_port();
    let hc = "    health_check:\n      passive: { consecutive_failures: 1, ejection_time: 60s }\n";
    let cfg = |eps: &[(u16, u32)]| {
        config("  - { name: a, upstream: a, retries: { attempts: 3 } }", &upstream_yaml("a", "round_robin", eps, hc))
    };
    let weir = Weir::start(&cfg(&[(dead, 1), (a.port(), 1)]));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (failures, stop, addr) = (failures.clone(), stop.clone(), weir.addr);
        load.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            while !stop.load(SeqCst) {
                match c.try_send("GET", "/", &[], bytes::Bytes::new()).await {
                    Ok(r) if r.status() == 200 => drop(http_body_util::BodyExt::collect(r.into_body()).await),
                    Ok(r) => failures.lock().unwrap().push(format!("status {}", r.status())),
                    Err(e) => {
                        failures.lock().unwrap().push(format!("error {e}"));
                        c = Client::connect(addr).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = weir.stats().await;
    assert_eq!(endpoint(&first, "a", dead)["ejected"], true, "{first}");
    let (conns, created) = (a.conns.load(SeqCst), endpoint(&first, "a", a.port())["pool"]["created"].clone());
    let v = weir.version().await;
    for i in 1..=50u64 {
        // B joins on odd versions and leaves on even ones; A's weight moves too.
        let eps: Vec<(u16, u32)> = match i % 2 {
            1 => vec![(dead, 1), (a.port(), 1 + i as u32 % 3), (b.port(), 1)],
            _ => vec![(dead, 1), (a.port(), 1)],
        };
        weir.write_config(&cfg(&eps));
        weir.wait_version(v + i, Duration::from_secs(5)).await;
        if i == 49 {
            let s = weir.stats().await;
            assert_eq!(endpoint(&s, "a", a.port())["weight"], 2, "the new weight applies: {s}");
        }
    }
    stop.store(true, SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{} requests failed while endpoints came and went: {failures:?}", failures.len());
    assert!(b.hits.load(SeqCst) > 0, "B served while it was in the set");
    let s = weir.stats().await;
    // The endpoints that stayed are the same endpoints: still ejected, still pooled.
    assert_eq!(endpoint(&s, "a", dead)["ejected"], true, "ejection survived 50 changes: {s}");
    let pool = &endpoint(&s, "a", a.port())["pool"];
    assert!(pool["reused"].as_u64().unwrap() > 100, "{s}");
    // Four clients, so at most four upstream connections at once; a rebuilt pool would dial
    // anew after each of the 50 changes.
    let (now, made) = (a.conns.load(SeqCst), pool["created"].as_u64().unwrap());
    assert!(now <= conns.max(4) + 4, "A accepted {conns} connections before the changes and {now} after");
    assert!(made <= created.as_u64().unwrap().max(4) + 4, "the pool dialled {made} (was {created})");
}

#[tokio::test]
async fn canary_split_is_within_two_percent_and_header_pins_v2() {
    let (v1, v2) = (named("v1").await, named("v2").await);
    let routes = "  - { name: canary-header, match: { headers: { x-canary: \"true\" } }, upstream: v2 }\n  - name: split\n    backends: [{ upstream: v1, weight: 90 }, { upstream: v2, weight: 10 }]";
    let ups = format!(
        "{}{}",
        upstream_yaml("v1", "round_robin", &[(v1.port(), 1)], ""),
        upstream_yaml("v2", "round_robin", &[(v2.port(), 1)], "")
    );
    let weir = Weir::start(&config(routes, &ups));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = weir.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut n2 = 0;
            for _ in 0..2500 {
                if c.text("/").await.1 == "v2" {
                    n2 += 1;
                }
            }
            n2
        }));
    }
    let mut n2 = 0;
    for t in tasks {
        n2 += t.await.unwrap();
    }
    let share = f64::from(n2) / 10_000.0;
    assert!((0.08..=0.12).contains(&share), "v2 got {share}");
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..50 {
        let rsp = c.send("GET", "/", &[("x-canary", "true")]).await;
        let body = http_body_util::BodyExt::collect(rsp.into_body()).await.unwrap().to_bytes();
        assert_eq!(body, "v2");
    }
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    // The upstream holds the request until the gate closes, so it is certainly still in flight
    // while the listener is checked, however slow the machine.
    let (slow, gate) = gated("finished").await;
    let weir = Weir::start(&config(
        "  - { name: all, upstream: app }",
        &upstream_yaml("app", "round_robin", &[(slow.port(), 1)], ""),
    ));
    let addr = weir.addr;
    let inflight = tokio::spawn(async move { get(addr, "/", &[]).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while slow.hits.load(SeqCst) != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the request never reached the upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    weir.sigterm();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "listener must stop accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The listener closed while the request was still in flight: the process is draining, not
    // gone (an exited process would also refuse, but would have cut the request).
    assert!(!inflight.is_finished(), "the in-flight request ended before the upstream answered");
    gate.close();
    let (status, body) = inflight.await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"finished"[..]));
    let mut weir = weir;
    let status = tokio::task::spawn_blocking(move || {
        let s = weir.proc.child.wait().unwrap();
        (s, weir)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn rate_limit_buckets_survive_changes_around_them_and_reset_only_with_their_own_config() {
    let (a, b) = (named("A").await, named("B").await);
    let cfg = |eps: &[(u16, u32)], timeout: &str, requests: u32| {
        let route = format!(
            "  - name: api\n    upstream: a\n    timeout: {timeout}\n    plugins:\n      - {{ name: rate-limit, config: {{ requests: {requests}, window: 60s }} }}"
        );
        config(&route, &upstream_yaml("a", "round_robin", eps, ""))
    };
    let weir = Weir::start(&cfg(&[(a.port(), 1)], "5s", 3));
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..3 {
        assert_eq!(c.text("/").await.0, 200);
    }
    assert_eq!(c.text("/").await.0, 429);
    // The route's upstream changes (an endpoint joins), then the route itself (its timeout):
    // the limiter is the same filter both times, so its bucket is still empty.
    weir.write_config(&cfg(&[(a.port(), 1), (b.port(), 1)], "5s", 3));
    weir.wait_version(2, Duration::from_secs(5)).await;
    assert_eq!(c.text("/").await.0, 429, "the bucket survived a change of the route's upstream");
    weir.write_config(&cfg(&[(a.port(), 1), (b.port(), 1)], "7s", 3));
    weir.wait_version(3, Duration::from_secs(5)).await;
    assert_eq!(c.text("/").await.0, 429, "the bucket survived a change of the route");
    // A new limit is a new limiter, with a full bucket.
    weir.write_config(&cfg(&[(a.port(), 1), (b.port(), 1)], "7s", 4));
    weir.wait_version(4, Duration::from_secs(5)).await;
    assert_eq!(c.text("/").await.0, 200, "a changed limit starts afresh");
}
