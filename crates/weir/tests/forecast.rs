//! Predictive scaling end to end: gateways (a Python grpcio client, from the published
//! `.proto`) report a synthetic daily load with time compressed (a "day" of six seconds);
//! the control plane learns it and its desired replica count reaches the day's peak before
//! the load does, on the API and as `weir_fleet_desired_replicas` in `/metrics`.

mod common;

use std::time::{Duration, Instant};

use common::fleet::Cp;

const DAY_S: f64 = 6.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desired_replica_count_rises_ahead_of_a_daily_peak() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--forecast-step",
        "250ms",
        "--forecast-season",
        "6s",
        "--forecast-horizon",
        "1s",
        "--scale-down-stabilization",
        "1s",
        "--gateway-capacity",
        "100",
        "--forecast-group-label",
        "pool",
    ];
    let cp = Cp::start(dir.path(), 0, &flags);
    let (script, proto) = common::python_paths("synthetic_reports.py");
    let mut reports = common::python()
        .args([script, proto, cp.grpc.to_string()])
        .args(["3", &DAY_S.to_string(), "3.5"])
        .spawn()
        .expect("python3 with grpcio runs");
    // (seconds since the first report, requests/s observed, desired replicas)
    let mut samples: Vec<(f64, f64, u64)> = Vec::new();
    let mut first: Option<Instant> = None;
    while reports.try_wait().unwrap().is_none() {
        let (_, v) = cp.call("GET", "/api/v1/forecast", None).await;
        if let Some(g) = v.as_array().and_then(|a| a.iter().find(|g| g["group"] == "web")) {
            let t0 = *first.get_or_insert_with(Instant::now);
            let observed = g["observed"].as_f64().unwrap();
            samples.push((t0.elapsed().as_secs_f64(), observed, g["desired_replicas"].as_u64().unwrap()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reports.wait().unwrap().success());
    let need = |rps: f64| (rps / 100.0).ceil() as u64;
    // The third day: the model has seen two.
    let day3: Vec<&(f64, f64, u64)> = samples.iter().filter(|s| (2.0 * DAY_S..3.0 * DAY_S).contains(&s.0)).collect();
    let peak = day3.iter().map(|s| need(s.1)).max().unwrap();
    let night = day3.iter().map(|s| need(s.1)).min().unwrap();
    assert!(peak >= night + 3, "the day's load spans several replicas: {night}..{peak}");
    let load_at = day3.iter().find(|s| need(s.1) >= peak).unwrap().0;
    let desired_at = day3.iter().find(|s| s.2 >= peak).map(|s| s.0);
    assert!(
        desired_at.is_some_and(|t| t + 0.25 <= load_at),
        "{peak} replicas were desired at {desired_at:?} s, the load needed them at {load_at:.2} s: {day3:?}"
    );
    let rsp = metrics_text(&cp).await;
    assert!(rsp.contains("# TYPE weir_fleet_desired_replicas gauge"), "{rsp}");
    assert!(rsp.contains("weir_fleet_desired_replicas{group=\"web\"} "), "{rsp}");
}

async fn metrics_text(cp: &Cp) -> String {
    let (status, body) = common::get(cp.api, "/metrics", &[]).await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}
