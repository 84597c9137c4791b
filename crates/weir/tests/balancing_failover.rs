//! Balancing, pools and failover through the real binary: smooth WRR order, pool limits,
//! retries to another endpoint, passive ejection, active checks, and 502/503/504 bodies.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use common::*;
use hyper::body::Incoming;
use hyper::{Request, Response};

#[tokio::test]
async fn smooth_weighted_round_robin_interleaves_3_to_1() {
    let (a, b) = (named("a").await, named("b").await);
    let ups = upstream_yaml("app", "weighted_round_robin", &[(a.port(), 3), (b.port(), 1)], "");
    let weir = Weir::start_with(&config("  - { name: all, upstream: app }", &ups), &["--workers", "1"]);
    let mut c = Client::connect(weir.addr).await;
    let mut seq = String::new();
    for _ in 0..40 {
        seq.push_str(&c.text("/").await.1);
    }
    for cycle in seq.as_bytes().chunks(4) {
        assert_eq!(cycle.iter().filter(|&&x| x == b'a').count(), 3, "{seq}");
        assert_ne!(cycle, b"aaab", "bursty: {seq}");
    }
}

#[tokio::test]
async fn least_connections_avoids_the_busy_endpoint() {
    // The slow endpoint holds every request until the gate closes, so it stays busy for as long
    // as the test needs.
    let (slow, gate) = gated("slow").await;
    let fast = named("fast").await;
    let ups = upstream_yaml("app", "least_connections", &[(slow.port(), 1), (fast.port(), 1)], "");
    let weir = Weir::start(&config("  - { name: all, upstream: app }", &ups));
    // Occupy the slow endpoint: send requests one at a time until one is held there. Each is
    // settled (held by the slow endpoint, or already answered by the fast one) before the next.
    let addr = weir.addr;
    let mut pending = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while slow.hits.load(SeqCst) == 0 {
        assert!(pending.len() < 10, "least_connections never picked the slow endpoint");
        let p = tokio::spawn(async move { get(addr, "/", &[]).await });
        while slow.hits.load(SeqCst) == 0 && !p.is_finished() {
            assert!(tokio::time::Instant::now() < deadline, "request neither reached slow nor finished");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pending.push(p);
    }
    // With a request in flight on the slow endpoint, the rest must go to the idle fast one; one
    // sent to the slow endpoint would hang on the gate, hence the timeout.
    let mut c = Client::connect(weir.addr).await;
    for i in 0..10 {
        let got = tokio::time::timeout(Duration::from_secs(5), c.text("/")).await;
        let body = got.map_or_else(|_| "(no answer: held by the busy endpoint)".to_owned(), |(_, body)| body);
        assert_eq!(body, "fast", "request {i}");
    }
    gate.close();
    for p in pending {
        assert_eq!(p.await.unwrap().0, 200);
    }
    assert_eq!(slow.hits.load(SeqCst), 1, "only the held request reached the slow endpoint");
}

#[tokio::test]
async fn pool_caps_connections_and_requests_wait_instead_of_failing() {
    let up = upstream_fn(|_| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Response::new(full("ok"))
    })
    .await;
    let ups = upstream_yaml(
        "app",
        "round_robin",
        &[(up.port(), 1)],
        "    pool: { max_connections: 2, max_idle: 2, acquire_timeout: 5s }\n",
    );
    let weir = Weir::start(&config("  - { name: all, upstream: app }", &ups));
    let watch = common::PeakWatch::start(up.open.clone());
    let addr = weir.addr;
    let all: Vec<_> = (0..10).map(|_| tokio::spawn(async move { get(addr, "/", &[]).await.0 })).collect();
    for r in all {
        assert_eq!(r.await.unwrap(), 200, "a full pool makes requests wait, not fail");
    }
    let peak = watch.stop();
    assert!(peak <= 2, "upstream saw {peak} connections");
    assert_eq!(up.conns.load(SeqCst), 2);
    let stats = weir.stats().await;
    let pool = &stats["upstreams"]["app"]["endpoints"][0]["pool"];
    assert!(pool["waited"].as_u64().unwrap() >= 5, "{pool}");
    assert!(pool["reused"].as_u64().unwrap() >= 8, "{pool}");
}

#[tokio::test]
async fn idle_timeout_and_max_lifetime_close_connections() {
    let up = named("ok").await;
    let ups = upstream_yaml(
        "app",
        "round_robin",
        &[(up.port(), 1)],
        "    pool: { max_idle: 4, idle_timeout: 300ms, max_lifetime: 1s }\n",
    );
    let weir = Weir::start(&config("  - { name: all, upstream: app }", &ups));
    assert_eq!(get(weir.addr, "/", &[]).await.0, 200);
    assert_eq!(up.open.load(SeqCst), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while up.open.load(SeqCst) != 0 {
        assert!(tokio::time::Instant::now() < deadline, "idle connection not closed after idle_timeout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // max_lifetime: keep a connection busy every 100 ms for 2.5 s; it is replaced at least twice.
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..25 {
        assert_eq!(c.text("/").await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up.conns.load(SeqCst) >= 3, "conns {}", up.conns.load(SeqCst));
}

#[tokio::test]
async fn connect_errors_and_idempotent_5xx_fail_over_to_another_endpoint() {
    let good = named("good").await;
    let failing = upstream_fn(|_| async { Response::builder().status(503).body(full("busy")).unwrap() }).await;
    let dead = dead_port();
    let ups = upstream_yaml("app", "round_robin", &[(dead, 1), (failing.port(), 1), (good.port(), 1)], "");
    let weir = Weir::start(&config("  - { name: all, upstream: app, retries: { attempts: 3 } }", &ups));
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..12 {
        assert_eq!(c.text("/").await, (200, "good".to_owned()));
    }
    // A POST with a body is not retried on 5xx: the upstream may have acted on it.
    let mut saw_503 = false;
    for _ in 0..6 {
        let rsp = c.try_send("POST", "/", &[], bytes::Bytes::from_static(b"order")).await.unwrap();
        saw_503 |= rsp.status() == 503;
    }
    assert!(saw_503, "non-idempotent requests must not be retried on 5xx");
}

#[tokio::test]
async fn passive_ejection_then_active_checks_find_down_and_recovery() {
    let sick = Arc::new(AtomicBool::new(true));
    let flaky = {
        let sick = sick.clone();
        upstream_fn(move |req: Request<Incoming>| {
            let sick = sick.load(SeqCst);
            async move {
                let status = if sick { 500 } else { 200 };
                let body = if req.uri().path() == "/healthz" { "hc" } else { "flaky" };
                Response::builder().status(status).body(full(body)).unwrap()
            }
        })
        .await
    };
    let good = named("good").await;
    let hc = "    health_check:\n      active: { path: /healthz, interval: 100ms, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2 }\n      passive: { consecutive_failures: 2, ejection_time: 300ms }\n";
    let ups = upstream_yaml("app", "round_robin", &[(flaky.port(), 1), (good.port(), 1)], hc);
    let weir = Weir::start(&config("  - { name: all, upstream: app }", &ups));
    // Active checks mark it down within a few intervals.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let s = weir.stats().await;
        if s["upstreams"]["app"]["endpoints"][0]["active_up"] == false {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never marked down: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..10 {
        assert_eq!(c.text("/").await, (200, "good".to_owned()), "down endpoint gets no traffic");
    }
    // Recovery: probes succeed twice in a row and it takes traffic again.
    sick.store(false, SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (_, body) = c.text("/").await;
        if body == "flaky" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn passive_ejection_alone_removes_a_failing_endpoint() {
    let bad = upstream_fn(|_| async { Response::builder().status(502).body(full("bad")).unwrap() }).await;
    let good = named("good").await;
    let hc = "    health_check:\n      passive: { consecutive_failures: 2, ejection_time: 10s }\n";
    let ups = upstream_yaml("app", "round_robin", &[(bad.port(), 1), (good.port(), 1)], hc);
    let weir = Weir::start(&config("  - { name: all, upstream: app }", &ups));
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..6 {
        c.text("/").await;
    }
    let hits_before = bad.hits.load(SeqCst);
    for _ in 0..10 {
        assert_eq!(c.text("/").await.1, "good");
    }
    assert_eq!(bad.hits.load(SeqCst), hits_before, "ejected endpoint got traffic");
    assert_eq!(weir.stats().await["upstreams"]["app"]["endpoints"][0]["ejected"], true);
}

#[tokio::test]
async fn failures_map_to_502_503_504_with_json_bodies() {
    let slow = upstream_fn(|_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("late"))
    })
    .await;
    // A "server" that answers garbage.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gport = garbage.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = garbage.accept().await.unwrap();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
            });
        }
    });
    let routes = "  - { name: slow, match: { path: { prefix: /slow } }, upstream: slow, timeout: 200ms }\n  - { name: garbage, match: { path: { prefix: /garbage } }, upstream: garbage }\n  - { name: down, match: { path: { prefix: /down } }, upstream: down }";
    let ups = [
        upstream_yaml("slow", "round_robin", &[(slow.port(), 1)], ""),
        upstream_yaml("garbage", "round_robin", &[(gport, 1)], ""),
        upstream_yaml(
            "down",
            "round_robin",
            &[(dead_port(), 1)],
            "    health_check:\n      active: { interval: 50ms, unhealthy_threshold: 1 }\n",
        ),
    ]
    .join("");
    let weir = Weir::start(&config(routes, &ups));
    let check = |status: u16, body: &[u8], want: u16, reason: &str, route: &str| {
        assert_eq!(status, want, "{}", String::from_utf8_lossy(body));
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["reason"], reason, "{v}");
        assert_eq!(v["route"], route, "{v}");
    };
    let (s, b) = get(weir.addr, "/slow", &[]).await;
    check(s, &b, 504, "upstream_timeout", "slow");
    let (s, b) = get(weir.addr, "/garbage", &[]).await;
    check(s, &b, 502, "bad_upstream", "garbage");
    // Wait for the active check to mark the dead endpoint down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = weir.stats().await;
        if s["upstreams"]["down"]["endpoints"][0]["active_up"] == false {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never marked down: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, b) = get(weir.addr, "/down", &[]).await;
    check(s, &b, 503, "no_healthy_endpoint", "down");
}
