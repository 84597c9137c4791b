//! Cluster-wide rate limiting through a real Redis server: two Weir processes sharing one
//! Redis admit the configured limit together, and each fail mode holds when Redis dies.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago. Another process may take it before redis-server binds
/// it, so `redis()` retries with a new one when the server exits.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sends `PING` to `port` and reads one reply line; `Some(true)` for `+PONG`.
async fn ping(port: u16) -> Option<bool> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"PING\r\n").await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\r\n") {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(got.starts_with(b"+PONG"))
}

/// Whether a Redis server answers `PING` with `+PONG` on `port` (a server still loading says
/// `-LOADING`; a port taken by something else may never answer).
async fn pong(port: u16) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(2), ping(port)).await, Ok(Some(true)))
}

async fn redis() -> Redis {
    for _attempt in 0..3 {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it; apt-get install redis-server)");
        // Owned by the guard from here on, so it is killed and reaped whatever happens.
        let mut guard = Redis { child, port };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            // It exited: most likely the port was taken in the meantime; try another one.
            if guard.child.try_wait().unwrap().is_some() {
                break;
            }
            if pong(port).await {
                return guard;
            }
            assert!(tokio::time::Instant::now() < deadline, "redis-server on port {port} never answered PING");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("redis-server exited at start three times (ports taken?)");
}

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
