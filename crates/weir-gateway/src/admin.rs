//! The admin listener: liveness, readiness and runtime state for operators and tests.
//!
//! `/healthz` answers 200 while the process runs; `/readyz` answers 200 once a config is
//! applied and 503 while draining; `/stats` shows the config version and, per endpoint,
//! health, load and pool counters as JSON.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::GatewayBody;
use crate::gateway::Gateway;

/// Shared admin state.
#[derive(Debug, Default)]
pub struct AdminState {
    /// Set when shutdown begins, so load balancers stop sending traffic.
    pub draining: AtomicBool,
}

/// Serves the admin API on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>, state: Arc<AdminState>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (gw, state) = (gw.clone(), state.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let rsp = route(&req, &gw, &state);
                async move { Ok::<_, Infallible>(rsp) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn route(req: &Request<Incoming>, gw: &Gateway, state: &AdminState) -> Response<GatewayBody> {
    let snap = gw.snapshot();
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.draining.load(Relaxed) => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" if snap.version == 0 => text(StatusCode::SERVICE_UNAVAILABLE, "no config yet\n"),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/stats" => json(&stats(gw)),
        "/metrics" => {
            let mut r = Response::new(GatewayBody::full(Bytes::from(gw.metrics().render(&snap))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /healthz, /readyz, /stats or /metrics\n"),
    }
}

/// The `/stats` document.
pub fn stats(gw: &Gateway) -> serde_json::Value {
    let snap = gw.snapshot();
    let mut ups = serde_json::Map::new();
    let mut names: Vec<_> = snap.upstreams.keys().collect();
    names.sort();
    for name in names {
        let members = snap.upstreams[name].members();
        let eps: Vec<_> = members
            .endpoints()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let p = e.pool();
                serde_json::json!({
                    "endpoint": e.label().as_ref(),
                    "weight": members.weight(i),
                    "available": e.is_available(),
                    "active_up": e.is_active_up(),
                    "ejected": e.is_ejected(),
                    "inflight": e.inflight(),
                    "ewma_micros": e.ewma_micros(),
                    "pool": {
                        "open": p.open(),
                        "idle": p.idle(),
                        "created": p.stats.created.load(Ordering::Relaxed),
                        "reused": p.stats.reused.load(Ordering::Relaxed),
                        "waited": p.stats.waited.load(Ordering::Relaxed),
                        "wait_micros": p.stats.wait_micros.load(Ordering::Relaxed),
                        "timeouts": p.stats.timeouts.load(Ordering::Relaxed),
                    }
                })
            })
            .collect();
        ups.insert(name.to_string(), serde_json::json!({ "endpoints": eps }));
    }
    let listeners: serde_json::Map<_, _> =
        gw.listener_addrs().into_iter().map(|(n, a)| (n, a.to_string().into())).collect();
    serde_json::json!({ "version": snap.version, "listeners": listeners, "upstreams": ups })
}

fn text(status: StatusCode, body: &'static str) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

fn json(v: &serde_json::Value) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::full(Bytes::from(v.to_string())));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}
