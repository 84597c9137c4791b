//! OpenTelemetry tracing through the real binary, exported to a real OTLP/gRPC receiver (the
//! collector protocol from the opentelemetry-proto package, served by Python grpcio): one span
//! per request with its route, upstream, endpoint, status and retries; the caller's W3C trace
//! context continued and passed on to the upstream; sampling by ratio.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::otlp::Receiver;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn traced(port: u16, ratio: f64, routes: &str, upstreams: &str) -> String {
    format!(
        "{}tracing: {{ otlp_endpoint: \"http://127.0.0.1:{port}\", sample_ratio: {ratio}, service_name: edge }}\n",
        config(routes, upstreams)
    )
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The `traceparent` the upstream saw (the `named` upstream echoes headers as `x-seen-*`).
fn seen_traceparent(rsp: &hyper::Response<hyper::body::Incoming>) -> Option<String> {
    rsp.headers().get("x-seen-traceparent").map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_sampled_caller_gets_a_span_with_route_upstream_endpoint_status_and_retries() {
    let receiver = Receiver::start();
    let app = named("app").await;
    let dead = dead_port();
    // Round robin over a dead endpoint and a live one: some requests retry once.
    let ups = upstream_yaml("app", "round_robin", &[(dead, 1), (app.port(), 1)], "");
    let weir =
        Weir::start(&traced(receiver.port, 0.0, "  - { name: api, upstream: app, retries: { attempts: 2 } }", &ups));
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let mut upstream_parents = Vec::new();
    for _ in 0..2 {
        let rsp = request(weir.addr, "GET", "/orders/7?x=1", &[("traceparent", &caller)]).await;
        assert_eq!(rsp.status(), 200);
        let tp = seen_traceparent(&rsp).expect("the upstream got a traceparent");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!((parts[0], parts[1], parts[3]), ("00", CALLER_TRACE, "01"), "same trace, sampled: {tp}");
        assert_ne!(parts[2], CALLER_SPAN, "the gateway's span is the upstream's parent");
        upstream_parents.push(parts[2].to_owned());
    }
    let spans = receiver.wait_spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let mut retried = 0;
    for s in &spans {
        assert_eq!(s["service"], "edge");
        assert_eq!(s["trace_id"], CALLER_TRACE);
        assert_eq!(s["parent_span_id"], CALLER_SPAN, "the caller's span is the gateway span's parent");
        assert!(upstream_parents.contains(&s["span_id"].as_str().unwrap().to_owned()), "{s}");
        assert_eq!(s["kind"], 2, "SPAN_KIND_SERVER");
        assert_eq!(s["name"], "GET api");
        let a = &s["attributes"];
        assert_eq!(a["http.route"], "api");
        assert_eq!(a["http.request.method"], "GET");
        assert_eq!(a["url.path"], "/orders/7");
        assert_eq!(a["http.response.status_code"], 200);
        assert_eq!(a["weir.upstream"], "app");
        assert_eq!(a["weir.endpoint"], format!("127.0.0.1:{}", app.port()), "the endpoint that answered");
        assert_eq!(a["client.address"], "127.0.0.1");
        retried += usize::from(a["weir.retries"] == 1);
        assert!(s["end"].as_u64() >= s["start"].as_u64());
    }
    // Round robin starts one of the two (or both, as the retry takes a turn too) on the dead
    // endpoint.
    assert!(retried >= 1, "no span counted the retry: {spans:#?}");
    // A caller that says "not sampled" is not traced, and its context passes on untouched.
    let unsampled = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00");
    let rsp = request(weir.addr, "GET", "/", &[("traceparent", &unsampled)]).await;
    assert_eq!(seen_traceparent(&rsp).as_deref(), Some(unsampled.as_str()));
    // Ratio 0 and no caller context: nothing recorded, nothing added.
    let rsp = request(weir.addr, "GET", "/", &[]).await;
    assert_eq!(seen_traceparent(&rsp), None);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.count(), 2, "{:#?}", receiver.spans());
}

#[tokio::test]
async fn the_ratio_samples_requests_and_http2_requests_are_traced_too() {
    let receiver = Receiver::start();
    let app = named("app").await;
    let ups = upstream_yaml("app", "round_robin", &[(app.port(), 1)], "");
    let weir = Weir::start(&traced(receiver.port, 0.5, "  - { name: api, upstream: app }", &ups));
    let mut c = Client::connect(weir.addr).await;
    let mut with_context = 0;
    for _ in 0..200 {
        let rsp = c.send("GET", "/", &[]).await;
        with_context += usize::from(seen_traceparent(&rsp).is_some());
        let _ = rsp.into_body().collect().await;
    }
    // Binomial(200, 0.5): 100 ± 7; outside 60..140 is a broken sampler, not bad luck.
    assert!((60..=140).contains(&with_context), "{with_context} of 200 sampled at 0.5");
    let spans = receiver.wait_spans(with_context).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.count(), with_context, "one span per request that carried a context upstream");
    assert!(spans.iter().all(|s| s["parent_span_id"] == "" && s["attributes"]["http.route"] == "api"));
    // HTTP/2 (prior knowledge) goes through hyper's path: the same span and context.
    let stream = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let req = hyper::Request::get(format!("http://{}/h2", weir.addr))
        .header("traceparent", &caller)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let rsp = h2.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let tp = seen_traceparent(&rsp).expect("the upstream got a traceparent over HTTP/2 too");
    assert!(tp.starts_with(&format!("00-{CALLER_TRACE}-")) && !tp.contains(CALLER_SPAN), "{tp}");
    let spans = receiver.wait_spans(with_context + 1).await;
    let h2_span = spans.iter().find(|s| s["trace_id"] == CALLER_TRACE).expect("the HTTP/2 request's span");
    assert_eq!(h2_span["attributes"]["url.path"], "/h2");
    assert_eq!(h2_span["span_id"], tp.split('-').nth(2).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_gateway_traces_to_the_collector_its_own_flags_name() {
    let receiver = Receiver::start();
    let app = named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let cp = fleet::Cp::start(dir.path(), 0, &[]);
    cp.apply_one_route(dir.path(), "pushed", app.port());
    let otlp = format!("http://127.0.0.1:{}", receiver.port);
    let gw = fleet::Gw::start_with(
        "gw1",
        &cp.grpc_url(),
        &dir.path().join("gw"),
        "127.0.0.1:0",
        &["--otlp-endpoint", &otlp, "--trace-sample-ratio", "0", "--trace-service-name", "edge-gw"],
    );
    let addr = gw.listen_addr();
    gw.wait_serves(addr, "/", "app", Duration::from_secs(10)).await;
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let rsp = request(addr, "GET", "/fleet", &[("traceparent", &caller)]).await;
    assert!(seen_traceparent(&rsp).is_some_and(|t| t.contains(CALLER_TRACE)));
    let spans = receiver.wait_spans(1).await;
    let s = spans.iter().find(|s| s["attributes"]["url.path"] == "/fleet").expect("the traced request's span");
    assert_eq!((s["service"].as_str(), s["attributes"]["http.route"].as_str()), (Some("edge-gw"), Some("pushed")));
}
