//! Cluster-wide rate limiting through a real Redis server: two Weir processes sharing one
//! Redis admit the configured limit together, and each fail mode holds when Redis dies.

mod common;

use std::time::Duration;

use common::redis::redis;
use common::*;

fn gateway(up: u16, redis: u16) -> Weir {
    // A 1 h window refills one request every 90 s, so no refill lands during the test and the
    // count admitted is exactly `requests`, however slow the machine.
    let rl = |mode: &str| {
        format!(
            "{{ name: rate-limit, config: {{ policy: redis, redis_url: \"redis://127.0.0.1:{redis}\", requests: 40, window: 1h, key: {{ header: x-client }}, on_redis_error: {mode} }} }}"
        )
    };
    let routes = format!(
        "  - {{ name: strict, match: {{ path: {{ prefix: /strict }} }}, upstream: app, plugins: [{}] }}\n  - {{ name: lenient, match: {{ path: {{ prefix: /lenient }} }}, upstream: app, plugins: [{}] }}",
        rl("deny"),
        rl("allow")
    );
    Weir::start(&config(&routes, &upstream_yaml("app", "round_robin", &[(up, 1)], "")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_limit_and_fail_modes_hold_without_redis() {
    let up = named("ok").await;
    let r = redis().await;
    let (a, b) = (gateway(up.port(), r.port), gateway(up.port(), r.port));
    let (mut ca, mut cb) = (Client::connect(a.addr).await, Client::connect(b.addr).await);
    let mut admitted = 0;
    for i in 0..100 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let rsp = c.send("GET", "/strict/x", &[("x-client", "tenant-1")]).await;
        match rsp.status().as_u16() {
            200 => admitted += 1,
            429 => assert!(rsp.headers().contains_key("retry-after")),
            s => panic!("status {s}"),
        }
    }
    assert_eq!(admitted, 40, "both gateways together admit exactly the limit");
    // Another key has its own budget.
    assert_eq!(ca.send("GET", "/strict/x", &[("x-client", "tenant-2")]).await.status(), 200);

    drop(r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rsp = ca.send("GET", "/strict/x", &[("x-client", "tenant-3")]).await;
    assert_eq!(rsp.status(), 503, "on_redis_error: deny");
    let rsp = cb.send("GET", "/lenient/x", &[("x-client", "tenant-3")]).await;
    assert_eq!(rsp.status(), 200, "on_redis_error: allow");
}
