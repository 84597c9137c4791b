//! `weir loadtest` against real local servers: rate accuracy, exact counts, the traffic mix,
//! SLA verdicts and exit codes, keep-alive off, HTTP/2 over TLS, and the JSON and SVG outputs.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::*;
use hyper::body::Incoming;
use hyper::{Request, Response};

fn loadtest(scenario: &str, extra: &[&str]) -> (i32, String, serde_json::Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scenario.yaml");
    std::fs::write(&file, scenario).unwrap();
    let report = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("loadtest")
        .arg(&file)
        .arg("--output")
        .arg(&report)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let json = std::fs::read_to_string(&report).map(|t| serde_json::from_str(&t).unwrap()).unwrap_or_default();
    (out.status.code().unwrap_or(-1), stdout, json, dir)
}

/// [`loadtest`] with `--plot`, off the async threads; also returns the SVG.
async fn loadtest_plotted(scenario: String) -> (i32, String, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("plot.svg");
    let svg_arg = svg.to_str().unwrap().to_owned();
    let (code, out, report, _d) =
        tokio::task::spawn_blocking(move || loadtest(&scenario, &["--plot", &svg_arg])).await.unwrap();
    (code, out, report, std::fs::read_to_string(&svg).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_rate_is_accurate_and_counts_match_the_server() {
    let up = named("ok").await;
    let scenario = format!(
        "target: http://{}\nrequests: [{{ path: /x }}]\nconnections: 32\nduration: 5s\ntarget_rps: 2000\nsla: {{ error_rate: 0%, min_tps: 1800 }}\n",
        up.addr
    );
    let (code, out, report, _d) = tokio::task::spawn_blocking(move || loadtest(&scenario, &[])).await.unwrap();
    assert_eq!(code, 0, "{out}");
    let tps = report["tps"].as_f64().unwrap();
    assert!((1800.0..=2040.0).contains(&tps), "achieved {tps} rps: {out}");
    assert_eq!(report["requests"].as_u64().unwrap(), up.hits.load(SeqCst) as u64, "client and server counts differ");
    assert_eq!(report["requests"], 10_000);
    assert!(out.contains("throughput (TPS)") && out.contains("PASS"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_sla_exits_1_and_names_the_failed_line() {
    let slow = upstream_fn(|_| async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Response::new(full("slow"))
    })
    .await;
    let scenario = format!(
        "target: http://{}\nrequests: [{{ path: / }}]\nconnections: 8\nduration: 1s\ntarget_rps: 100\nsla: {{ p99: 10ms, error_rate: 1% }}\n",
        slow.addr
    );
    let (code, out, report, _d) = tokio::task::spawn_blocking(move || loadtest(&scenario, &[])).await.unwrap();
    assert_eq!(code, 1, "{out}");
    let p99_line = out.lines().find(|l| l.starts_with("p99 latency")).unwrap_or_default();
    assert!(p99_line.ends_with("FAIL"), "{out}");
    let err_line = out.lines().find(|l| l.starts_with("error rate")).unwrap_or_default();
    assert!(err_line.ends_with("PASS"), "{out}");
    assert_eq!(report["pass"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_mix_is_exact_and_plot_is_drawn() {
    let gets = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let (g, p) = (gets.clone(), posts.clone());
    let up = upstream_fn(move |req: Request<Incoming>| {
        let (g, p) = (g.clone(), p.clone());
        async move {
            let is_post = req.method() == "POST";
            let ok = if is_post {
                let ct = req.headers().get("content-type").cloned();
                let body = http_body_util::BodyExt::collect(req.into_body()).await.unwrap().to_bytes();
                p.fetch_add(1, SeqCst);
                body == r#"{"item":1}"# && ct.is_some_and(|c| c == "application/json")
            } else {
                g.fetch_add(1, SeqCst);
                req.uri().path().starts_with("/products/")
            };
            Response::builder().status(if ok { 200 } else { 400 }).body(full("")).unwrap()
        }
    })
    .await;
    let scenario = format!(
        r#"target: http://{}
requests:
  - {{ weight: 7, method: GET, path: "/products/{{n}}" }}
  - {{ weight: 3, method: POST, path: /orders, body: '{{"item":1}}', headers: {{ content-type: application/json }} }}
threads: 4
rampUp: 200ms
duration: 1s
targetRps: 1000
sla: {{ error_rate: 0% }}
"#,
        up.addr
    );
    let (code, out, report, plot) = loadtest_plotted(scenario).await;
    assert_eq!(code, 0, "{out}");
    let total = report["requests"].as_u64().unwrap();
    assert_eq!(total as usize, gets.load(SeqCst) + posts.load(SeqCst));
    assert_eq!(report["statuses"]["200"].as_u64(), Some(total), "every request well-formed: {out}");
    let share = posts.load(SeqCst) as f64 / total as f64;
    assert!((share - 0.3).abs() < 0.01, "POST share {share}");
    assert!(plot.contains("<svg") && plot.contains("latency per second"), "svg drawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_is_judged_after_the_ramp_up_and_the_plot_shows_the_run_over_time() {
    let up = named("ok").await;
    // 2 s of ramp in a 4 s run at 2,000/s: 1,500/s over the whole run, 2,000/s once ramped.
    let scenario = format!(
        "target: http://{}\nrequests: [{{ path: /x }}]\nconnections: 32\nrampUp: 2s\nduration: 4s\ntargetRps: 2000\n\
         sla: {{ min_tps: 1900, p99: 500ms, avg_latency: 200ms }}\n",
        up.addr
    );
    let (code, out, report, plot) = loadtest_plotted(scenario).await;
    assert_eq!(code, 0, "the steady rate meets min_tps: {out}");
    assert!(report["tps"].as_f64().unwrap() < 1700.0, "the whole run's rate includes the ramp: {out}");
    assert_eq!(report["steady"]["from_second"], 2);
    assert!(report["steady"]["tps"].as_f64().unwrap() >= 1900.0, "{out}");
    assert!(out.contains("after the 2s ramp-up"), "the report says which window it judged: {out}");
    assert!(out.contains("TPS after ramp-up"), "{out}");
    let seconds = report["timeline"].as_array().unwrap();
    assert_eq!(seconds.len(), 4, "{seconds:?}");
    assert!(seconds.iter().all(|t| t["p99_ms"].as_f64() >= t["p50_ms"].as_f64() && t["p50_ms"].as_f64() > Some(0.0)));
    let ramped: Vec<u64> = seconds.iter().map(|t| t["completed"].as_u64().unwrap()).collect();
    assert!(ramped[0] < ramped[3], "the ramp shows in the per-second counts: {ramped:?}");
    for want in
        ["weir loadtest scenario.yaml", "throughput", "SLA min 1900/s", "SLA p99 500 ms", "SLA average 200 ms", "p50"]
    {
        assert!(plot.contains(want), "the plot lacks {want:?}");
    }
    // SVG text is written on a line of its own.
    for tick in ["p90", "p99.9", "p99.99"] {
        assert_eq!(plot.matches(&format!(">\n{tick}\n<")).count(), 1, "percentile tick {tick} once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_off_opens_a_connection_per_request() {
    let up = named("ok").await;
    let scenario = format!(
        "target: http://{}\nrequests: [{{ path: / }}]\nconnections: 4\nduration: 1s\ntarget_rps: 200\nkeep_alive: false\n",
        up.addr
    );
    let (code, out, report, _d) = tokio::task::spawn_blocking(move || loadtest(&scenario, &[])).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["requests"], 200);
    assert_eq!(up.conns.load(SeqCst), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_with_insecure() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let h2_requests = Arc::new(AtomicUsize::new(0));
    let seen = h2_requests.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else { return };
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    if req.version() == http::Version::HTTP_2 {
                        seen.fetch_add(1, SeqCst);
                    }
                    async { Ok::<_, std::convert::Infallible>(Response::new(full("h2"))) }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let scenario = format!(
        "target: https://localhost:{port}\nrequests: [{{ path: / }}]\nprotocol: http2\nconnections: 4\nduration: 1s\ntarget_rps: 200\nsla: {{ error_rate: 0% }}\n"
    );
    let s2 = scenario.clone();
    let (code, out, report, _d) =
        tokio::task::spawn_blocking(move || loadtest(&scenario, &["--insecure"])).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["requests"], 200);
    assert_eq!(h2_requests.load(SeqCst), 200, "all requests over HTTP/2");
    // Without --insecure the self-signed certificate is refused.
    let (code, out, _, _d) = tokio::task::spawn_blocking(move || loadtest(&s2, &[])).await.unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("connect"), "{out}");
}
