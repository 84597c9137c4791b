//! Client-facing listeners: accept, serve HTTP/1.1 with keep-alive and upgrades, drain.
//!
//! Owns: the accept loop of one listener and the connections it spawns, and their graceful
//! end: when the listener's token is cancelled it stops accepting, asks every connection to
//! finish its in-flight request and close, and returns once they have (or the caller's
//! deadline passes).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::{self, ConnInfo, SharedSnapshot};

/// Per-listener HTTP settings.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A client must send a full request head within this time (slowloris guard).
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { header_read_timeout: Duration::from_secs(30) }
    }
}

/// Accepts on `listener` until `stop` is cancelled, then drains its connections.
pub async fn serve(
    listener: TcpListener,
    name: Arc<str>,
    state: SharedSnapshot,
    opts: ServeOptions,
    stop: CancellationToken,
) {
    let conns = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays up.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (state, stop) = (state.clone(), stop.clone());
        conns.spawn(async move {
            let info = ConnInfo { client, proto: "http" };
            let svc = service_fn(move |req| {
                // One atomic load per request; the snapshot lives until the response is built.
                let snap = state.load_full();
                async move { Ok::<_, Infallible>(proxy::handle(snap, info, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_read_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    // Finish the request in flight, then close instead of keeping alive.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%client, error = %e, "connection closed with error");
            }
        });
    }
    drop(listener);
    tracing::info!(listener = %name, "listener closed; draining connections");
    conns.close();
    conns.wait().await;
}
