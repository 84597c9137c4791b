//! The control plane's web dashboard in a real browser (headless chromium driven by selenium):
//! it lists the three gateways with the revision each serves, shows a failed rollout and why,
//! shows what a rollback would change, and its rollback button makes a new revision that the
//! gateways then serve.

mod common;

use std::time::Duration;

use common::fleet::{Cp, Gw};
use common::{named, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_the_fleet_and_rolls_back_with_a_click() {
    let (one, two) = (named("one").await, named("two").await);
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    let gws: Vec<Gw> = (1..=3)
        .map(|i| Gw::start(&format!("gw-{i}"), &cp.grpc_url(), &dir.path().join(format!("gw{i}")), "127.0.0.1:0"))
        .collect();
    cp.apply_one_route(dir.path(), "app", one.port());
    cp.apply_one_route(dir.path(), "app", two.port());
    let stable = cp.revision().await;
    // A rollout that fails: the canary cannot load the CA its upstream names, and NACKs.
    let bad = serde_json::json!({
        "resources": [{"kind": "Upstream", "name": "app", "body": {"name": "app",
            "load_balancer": {"endpoints": [{"address": "127.0.0.1", "port": two.port()}]},
            "tls": {"ca": "/nonexistent/ca.pem"}}}],
        "rollout": {"canary": {"percent": 34}, "bake_ms": 30_000, "max_error_rate": 0.01},
    });
    for g in &gws {
        g.wait_serves(g.listen_addr(), "/", "two", Duration::from_secs(20)).await;
    }
    let (status, v) = cp.call("POST", "/api/v1/apply", Some(&bad)).await;
    assert_eq!(status, 200, "{v}");
    wait_until("the failing rollout is rolled back", Duration::from_secs(15), || async {
        cp.call("GET", "/api/v1/rollout", None).await.1["phase"] == "rolled_back"
    })
    .await;
    let rev = cp.revision().await;
    assert_eq!(rev, stable + 2, "the rollout's revision, then the one putting the previous resources back");
    for g in &gws {
        g.wait_serves(g.listen_addr(), "/", "two", Duration::from_secs(20)).await;
    }
    wait_until("every gateway reports the revision", Duration::from_secs(10), || async {
        futures_util::future::join_all(gws.iter().map(|g| cp.gateway(&g.id)))
            .await
            .iter()
            .all(|v| v["applied_revision"] == rev)
    })
    .await;
    let shots = std::env::var("WEIR_SCREENSHOTS").map_or_else(|_| dir.path().join("shots"), Into::into);
    let args = [cp.server(), "3".into(), rev.to_string(), (stable - 1).to_string(), shots.display().to_string()];
    let v = common::run_python("dashboard.py", args.to_vec()).await;
    let mut ids: Vec<&str> = v["gateways"].as_array().unwrap().iter().map(|g| g[0].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["gw-1", "gw-2", "gw-3"], "{v}");
    assert_eq!(v["rollout_phase"], "rolled back", "{v}");
    assert!(v["rollout_reason"].as_str().unwrap().contains("refused revision"), "{v}");
    assert_eq!(v["new_revision"], rev + 1, "{v}");
    assert_eq!(cp.revision().await, rev + 1);
    for g in &gws {
        g.wait_serves(g.listen_addr(), "/", "one", Duration::from_secs(20)).await;
    }
    for shot in ["dashboard-fleet.png", "dashboard-resources.png", "dashboard-rollout.png", "dashboard-rollback.png"] {
        assert!(shots.join(shot).metadata().is_ok_and(|m| m.len() > 10_000), "{shot} was taken");
    }
}
