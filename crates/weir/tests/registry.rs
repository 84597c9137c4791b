//! Endpoints that services register with the control plane: `weir ctl register` and the REST
//! call, kept by renewals and dropped within their ttl without them, reaching a gateway as
//! deltas that keep the endpoints that stay.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet::{Cp, Gw};
use common::{get, named, wait_until};
use serde_json::json;

/// Upstream `svc` taking registrations, route `/` to it; `fixed` is an ordinary upstream.
fn fleet_config(fixed: u16) -> String {
    format!(
        "upstreams:\n\
         - {{ name: svc, load_balancer: {{ policy: weighted_round_robin }}, discovery: {{ registry: {{}} }} }}\n\
         - {{ name: fixed, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {fixed} }}] }} }}\n\
         routes:\n\
         - {{ name: all, upstream: svc }}\n"
    )
}

/// A control plane holding [`fleet_config`] and its gateway `g`, with the gateway's client
/// address.
fn fleet(dir: &std::path::Path, fixed: u16) -> (Cp, Gw, std::net::SocketAddr) {
    let cp = Cp::start(dir, 0, &[]);
    cp.apply(dir, &fleet_config(fixed));
    let gw = Gw::start("g", &cp.grpc_url(), &dir.join("g"), "127.0.0.1:0");
    let addr = gw.listen_addr();
    (cp, gw, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_endpoints_serve_while_renewed_and_leave_within_their_ttl() {
    let (a, b, fixed) = (named("A").await, named("B").await, named("fixed").await);
    let dir = tempfile::tempdir().unwrap();
    let (cp, gw, addr) = fleet(dir.path(), fixed.port());
    assert_eq!(get(addr, "/", &[]).await.0, 503, "nothing registered yet");

    // A through the CLI, B through REST with a weight.
    let a_ep = format!("127.0.0.1:{}", a.port());
    let out = cp.ctl(&["register", "svc", &a_ep, "--ttl", "1s"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("registration/svc.127.0.0.1-{} created", a.port())),
        "{text}"
    );
    gw.wait_serves(addr, "/", "A", Duration::from_secs(5)).await;
    let b_body = json!({"address": "127.0.0.1", "port": b.port(), "weight": 3, "ttl": "1s"});
    let (status, v) = cp.call("POST", "/api/v1/upstreams/svc/registrations", Some(&b_body)).await;
    assert_eq!(status, 201, "{v}");
    let a_body = json!({"address": "127.0.0.1", "port": a.port(), "ttl": "1s"});
    let rev = cp.revision().await;
    // Renewals of A only, every 300 ms for 2.5 s: B leaves, A stays, and renewing makes no revision.
    let t0 = Instant::now();
    let mut saw_b = false;
    while t0.elapsed() < Duration::from_millis(2500) {
        let (status, v) = cp.call("POST", "/api/v1/upstreams/svc/registrations", Some(&a_body)).await;
        assert_eq!((status, v["result"].as_str()), (200, Some("unchanged")), "{v}");
        saw_b |= get(addr, "/", &[]).await.1 == "B";
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(saw_b, "B served while registered");
    assert_eq!(cp.registrations().await, [format!("svc.127.0.0.1-{}", a.port())]);
    assert_eq!(cp.revision().await, rev + 1, "only B's expiry made a revision");
    assert!(cp.proc.logs.lock().unwrap().iter().any(|l| l.contains("not renewed within its ttl")));
    for _ in 0..10 {
        assert_eq!(get(addr, "/", &[]).await.1, "A", "B left the gateway");
    }
    // A's pooled connections lived through B's arrival and departure.
    assert!(a.conns.load(std::sync::atomic::Ordering::SeqCst) <= 2, "A's pool was rebuilt");
    // No more renewals: A goes too.
    wait_until("A dropped", Duration::from_secs(3), || async { cp.registrations().await.is_empty() }).await;
    wait_until("the gateway has no endpoint", Duration::from_secs(3), || async { get(addr, "/", &[]).await.0 == 503 })
        .await;
}

#[tokio::test]
async fn register_keep_renews_until_stopped_then_deregisters() {
    let (a, fixed) = (named("A").await, named("fixed").await);
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &fleet_config(fixed.port()));
    let a_ep = format!("127.0.0.1:{}", a.port());
    let mut keep = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["ctl", "--server", &cp.server(), "register", "svc", &a_ep, "--ttl", "1s", "--keep"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let name = format!("svc.127.0.0.1-{}", a.port());
    wait_until("registered", Duration::from_secs(5), || async { cp.registrations().await == [name.clone()] }).await;
    // Three ttls later it is still there: the sidecar renews it. An `apply --prune` of the
    // config meanwhile leaves it alone: registrations are the services', not the file's.
    let file = dir.path().join("fleet.yaml");
    std::fs::write(&file, fleet_config(fixed.port())).unwrap();
    let out = cp.ctl(&["apply", "-f", file.to_str().unwrap(), "--prune"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cp.registrations().await, vec![name.clone()]);
    // Stopped, it deregisters at once rather than waiting for the ttl.
    Command::new("kill").args(["-TERM", &keep.id().to_string()]).status().unwrap();
    assert!(keep.wait().unwrap().success());
    assert!(cp.registrations().await.is_empty(), "deregistered on exit");

    // A ttl past an hour is refused, not stored (a lease that long is a leak).
    let body = json!({"address": "127.0.0.1", "port": 9, "ttl": "2h"});
    let (status, v) = cp.call("POST", "/api/v1/upstreams/svc/registrations", Some(&body)).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errors"][0]["path"], "Registration/svc.127.0.0.1-9.ttl", "{v}");
    assert!(v.to_string().contains("between 1s and 1h"), "{v}");
    // An upstream that takes no registrations refuses them, saying what to change.
    let body = json!({"address": "127.0.0.1", "port": 9});
    let (status, v) = cp.call("POST", "/api/v1/upstreams/fixed/registrations", Some(&body)).await;
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("takes no registrations"), "{v}");
}

#[tokio::test]
async fn a_python_grpcio_service_registers_renews_and_deregisters() {
    let (a, fixed) = (named("A").await, named("fixed").await);
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &fleet_config(fixed.port()));
    let rev = cp.revision().await;
    let proto = common::python_paths("").1;
    let v = common::run_python("register_endpoint.py", vec![proto, cp.grpc.to_string(), a.port().to_string()]).await;
    let name = format!("svc.127.0.0.1-{}", a.port());
    assert_eq!(v["first"], json!({"name": name, "result": "created", "revision": rev + 1, "ttl_ms": 5000}), "{v}");
    assert_eq!(v["renewed"]["result"], "unchanged", "a renewal is no revision: {v}");
    assert_eq!(v["renewed"]["revision"], rev + 1);
    assert_eq!(v["refused"]["code"], "INVALID_ARGUMENT", "{v}");
    assert!(v["refused"]["details"].as_str().unwrap().contains("takes no registrations"), "{v}");
    assert_eq!(v["deregistered"]["result"], "deleted");
    assert!(cp.registrations().await.is_empty());
    // Each change is in the history, with its cause.
    let (_, hist) = cp.call("GET", "/api/v1/history?limit=5", None).await;
    assert!(hist.to_string().contains("register"), "{hist}");
}

/// `/stats` of a gateway's admin listener.
async fn stats(gw: &Gw) -> serde_json::Value {
    let (status, body) = get(gw.admin, "/stats", &[]).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

/// Adding and removing a registered endpoint 50 times under load: no request fails, and the
/// gateway takes each change in place. Its snapshot is not rebuilt (the version stays, so no
/// route or upstream was compiled again), and the endpoint that stays keeps its pooled
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_coming_and_going_50_times_under_load_fails_nothing_and_rebuilds_nothing() {
    let (a, b, fixed) = (named("A").await, named("B").await, named("fixed").await);
    let dir = tempfile::tempdir().unwrap();
    let (cp, gw, addr) = fleet(dir.path(), fixed.port());
    let body = |port: u16| json!({"address": "127.0.0.1", "port": port, "ttl": "10m"});
    let (status, v) = cp.call("POST", "/api/v1/upstreams/svc/registrations", Some(&body(a.port()))).await;
    assert_eq!(status, 201, "{v}");
    gw.wait_serves(addr, "/", "A", Duration::from_secs(5)).await;
    let version = stats(&gw).await["version"].clone();
    let load = common::load::Load::start(addr, 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b_name = format!("svc.127.0.0.1-{}", b.port());
    for i in 0..50 {
        let (status, v) = if i % 2 == 0 {
            cp.call("POST", "/api/v1/upstreams/svc/registrations", Some(&body(b.port()))).await
        } else {
            cp.call("DELETE", &format!("/api/v1/registrations/{b_name}"), None).await
        };
        assert!(status == 200 || status == 201, "{v}");
        let rev = v["revision"].as_u64().unwrap();
        wait_until("the gateway applied the change", Duration::from_secs(5), || async {
            cp.gateway("g").await["applied_revision"].as_u64() >= Some(rev)
        })
        .await;
        let eps = stats(&gw).await["upstreams"]["svc"]["endpoints"].as_array().unwrap().len();
        assert_eq!(eps, if i % 2 == 0 { 2 } else { 1 }, "after change {i}");
    }
    let (seen, failures) = load.finish().await;
    assert!(failures.is_empty(), "{} requests failed while B came and went: {failures:?}", failures.len());
    assert!(seen.iter().any(|s| s == "B"), "B served while registered");
    let s = stats(&gw).await;
    assert_eq!(s["version"], version, "the snapshot was rebuilt: {s}");
    let a_label = format!("127.0.0.1:{}", a.port());
    let eps = s["upstreams"]["svc"]["endpoints"].as_array().unwrap();
    let pool = &eps.iter().find(|e| e["endpoint"] == a_label.as_str()).expect("A is registered")["pool"];
    assert!(pool["reused"].as_u64().unwrap() > 100, "{s}");
    // Four clients: a pool rebuilt by any of the 50 changes would have dialled A anew.
    assert!(pool["created"].as_u64().unwrap() <= 6, "A's pool was rebuilt: {s}");
    assert!(a.conns.load(std::sync::atomic::Ordering::SeqCst) <= 6, "A accepted more connections than clients");
}
