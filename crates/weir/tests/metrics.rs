//! Prometheus metrics on the admin listener, with conventional names and config-bounded labels.

mod common;

use common::*;

#[tokio::test]
async fn metrics_count_requests_latency_health_and_version() {
    let up = named("ok").await;
    let dead = dead_port();
    let ups = upstream_yaml(
        "app",
        "round_robin",
        &[(up.port(), 1), (dead, 1)],
        "    health_check:\n      passive: { consecutive_failures: 1, ejection_time: 60s }\n",
    );
    let weir = Weir::start(&config(
        "  - { name: api, match: { path: { prefix: /api } }, upstream: app, retries: { attempts: 2 } }",
        &ups,
    ));
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..5 {
        assert_eq!(c.text("/api/x").await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(c.text("/nothing").await.0, 404);
    }
    // A request is counted once its response is out, so the client may read the last answer
    // a moment before the counter moves: read until it has, for a second at most.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let text = loop {
        let (status, body) = get(weir.admin, "/metrics", &[]).await;
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body).into_owned();
        let counted = text.lines().any(|l| l == "weir_requests_total{route=\"\",status_class=\"4xx\"} 3")
            && text.lines().any(|l| l == "weir_requests_total{route=\"api\",status_class=\"2xx\"} 5");
        if counted || std::time::Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let has = |line: &str| text.lines().any(|l| l == line);
    assert!(has("weir_requests_total{route=\"api\",status_class=\"2xx\"} 5"), "{text}");
    assert!(has("weir_requests_total{route=\"\",status_class=\"4xx\"} 3"), "unmatched requests: {text}");
    assert!(has("weir_request_duration_seconds_count{route=\"api\"} 5"), "{text}");
    assert!(text.contains("weir_upstream_request_duration_seconds_bucket{le=\"0.005\",upstream=\"app\"}"), "{text}");
    assert!(
        has(&format!("weir_upstream_healthy{{upstream=\"app\",endpoint=\"127.0.0.1:{}\"}} 1", up.port())),
        "{text}"
    );
    assert!(
        has(&format!("weir_upstream_healthy{{upstream=\"app\",endpoint=\"127.0.0.1:{dead}\"}} 0")),
        "ejected endpoint: {text}"
    );
    assert!(has("weir_config_version 1"), "{text}");
    assert!(has("weir_requests_in_flight 0"), "{text}");
    // weir_plugin_errors_total appears once a plugin fails; empty families print nothing.
    for family in ["weir_upstream_pool_wait_seconds", "weir_upstream_pool_connections"] {
        assert!(text.contains(&format!("# TYPE {family}")), "{family}: {text}");
    }
    // Request data never becomes a label.
    assert!(!text.contains("/nothing") && !text.contains("/api/x"));
}
