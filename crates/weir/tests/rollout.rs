//! Staged rollouts with real processes: a control plane and three gateways. A revision whose
//! route answers 500 goes to the gateway labelled `ring=canary` only and is rolled back within
//! the bake, the two others never serving it; a good one goes to a third of the fleet, then
//! to all three once baked, also across a control-plane restart in the middle.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{Cp, Gw};
use common::load::Load;
use common::{full, named, upstream_fn, wait_until};

fn app(port: u16) -> String {
    format!(
        "upstreams:\n- {{ name: app, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {port} }}] }} }}\nroutes:\n- {{ name: app, upstream: app }}\n"
    )
}

fn fleet(cp: &Cp, dir: &std::path::Path) -> Vec<Gw> {
    (1..=3)
        .map(|i| {
            let labels: &[&str] = if i == 1 { &["--label", "ring=canary"] } else { &[] };
            Gw::start_with(&format!("gw-{i}"), &cp.grpc_url(), &dir.join(format!("gw{i}")), "127.0.0.1:0", labels)
        })
        .collect()
}

/// Three gateways serving `app` on `port`, which answers `body`; with their addresses.
async fn serving(cp: &Cp, dir: &std::path::Path, port: u16, body: &str) -> (Vec<Gw>, Vec<std::net::SocketAddr>) {
    let gws = fleet(cp, dir);
    cp.apply(dir, &app(port));
    let addrs: Vec<_> = gws.iter().map(Gw::listen_addr).collect();
    for (g, a) in gws.iter().zip(&addrs) {
        g.wait_serves(*a, "/", body, Duration::from_secs(20)).await;
    }
    (gws, addrs)
}

async fn rollout(cp: &Cp) -> serde_json::Value {
    cp.call("GET", "/api/v1/rollout", None).await.1
}

fn ctl_apply(cp: &Cp, dir: &std::path::Path, yaml: &str, flags: &[&str]) -> std::process::Output {
    let f = dir.join(format!("staged-{}.yaml", Instant::now().elapsed().as_nanos()));
    std::fs::write(&f, yaml).unwrap();
    let mut args = vec!["apply", "-f", f.to_str().unwrap()];
    args.extend_from_slice(flags);
    cp.ctl(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_canary_selected_by_label_is_rolled_back_within_the_bake() {
    let good = named("good").await;
    let bad = upstream_fn(|_req| async {
        let mut r = hyper::Response::new(full("bad"));
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    let (gws, addrs) = serving(&cp, dir.path(), good.port(), "good").await;
    let loads: Vec<Load> = addrs.iter().map(|a| Load::paced(*a, 2, Duration::from_millis(5))).collect();
    let out = ctl_apply(&cp, dir.path(), &app(bad.port()), &["--canary-selector", "ring=canary", "--bake", "30s"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let started = Instant::now();
    wait_until("the failing rollout is rolled back", Duration::from_secs(30), || async {
        rollout(&cp).await["phase"] == "rolled_back"
    })
    .await;
    let r = rollout(&cp).await;
    assert!(started.elapsed() < Duration::from_secs(20), "rolled back only after {:?}: {r}", started.elapsed());
    assert_eq!(r["canary"], serde_json::json!(["gw-1"]), "{r}");
    assert!(r["reason"].as_str().unwrap().contains("error rate"), "{r}");
    let took = r["ended_at_ms"].as_u64().unwrap() - r["started_at_ms"].as_u64().unwrap();
    eprintln!("the failing rollout was rolled back {took} ms after it started");
    let back = r["rolled_back_to"].as_u64().unwrap();
    for g in &gws {
        wait_until(&format!("{} applies {back}", g.id), Duration::from_secs(10), || async {
            cp.gateway(&g.id).await["applied_revision"] == back
        })
        .await;
    }
    for (g, a) in gws.iter().zip(&addrs) {
        g.wait_serves(*a, "/", "good", Duration::from_secs(10)).await;
    }
    let mut loads = loads.into_iter();
    let (_, canary_failures) = loads.next().unwrap().finish().await;
    assert!(!canary_failures.is_empty(), "the canary served the failing revision");
    for (i, l) in loads.enumerate() {
        let (seen, failures) = l.finish().await;
        assert!(failures.is_empty() && !seen.is_empty(), "gw-{} served the canary revision: {failures:?}", i + 2);
        assert!(seen.iter().all(|b| b == "good"), "gw-{}: {seen:?}", i + 2);
    }
    let status = cp.ctl(&["rollout", "status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("rolled_back") && text.contains("error rate"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_good_revision_reaches_a_third_then_everyone_even_across_a_restart() {
    let (one, two) = (named("one").await, named("two").await);
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    let (gws, addrs) = serving(&cp, dir.path(), one.port(), "one").await;
    let stable = cp.revision().await;
    let out = ctl_apply(&cp, dir.path(), &app(two.port()), &["--canary", "34%", "--bake", "10s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rev = cp.revision().await;
    let r = rollout(&cp).await;
    assert_eq!((r["phase"].as_str(), r["canary"].as_array().map(Vec::len)), (Some("baking"), Some(1)), "{r}");
    let canary = r["canary"][0].as_str().unwrap().to_owned();
    // The canary serves the revision; the other two stay where they were.
    for (g, a) in gws.iter().zip(&addrs) {
        let want = if g.id == canary { "two" } else { "one" };
        g.wait_serves(*a, "/", want, Duration::from_secs(10)).await;
    }
    // No other change while it bakes.
    let refused = ctl_apply(&cp, dir.path(), &app(one.port()), &[]);
    assert!(!refused.status.success(), "an apply during the bake was taken");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("rolling out"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // A control plane restarted in the middle resumes the rollout from the store.
    let grpc_port = cp.grpc.port();
    drop(cp);
    let cp = Cp::start(dir.path(), grpc_port, &[]);
    assert_eq!(rollout(&cp).await["phase"], "baking");
    for g in gws.iter().filter(|g| g.id != canary) {
        wait_until(&format!("{} reconnects", g.id), Duration::from_secs(15), || async {
            cp.gateway(&g.id).await["status"] == "up"
        })
        .await;
        assert_eq!(cp.gateway(&g.id).await["applied_revision"], stable, "{} is held at the stable revision", g.id);
    }
    wait_until("the rollout is promoted after the bake", Duration::from_secs(20), || async {
        rollout(&cp).await["phase"] == "promoted"
    })
    .await;
    for (g, a) in gws.iter().zip(&addrs) {
        g.wait_serves(*a, "/", "two", Duration::from_secs(10)).await;
        assert_eq!(cp.gateway(&g.id).await["applied_revision"], rev);
    }
    let r = rollout(&cp).await;
    assert!(r["reason"].as_str().unwrap().starts_with("baked 10 s"), "{r}");
    let after_bake = r["ended_at_ms"].as_u64().unwrap() - r["started_at_ms"].as_u64().unwrap() - 10_000;
    eprintln!("rollout decided {after_bake} ms after the bake");
    assert!(after_bake < 2000, "decided {after_bake} ms after the bake: {r}");
}
