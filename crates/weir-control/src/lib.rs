//! Weir's control plane: it stores what operators declare and pushes it to every gateway.
//!
//! Owns: the resource store ([`store`], redb), the gateway registry ([`registry`]), validated
//! changes and rollback ([`plane`]), the gRPC `ConfigSync` stream ([`push`]) and the admin
//! REST API ([`api`], [`openapi`]). Never depends on `weir-gateway`: the two meet in
//! `weir-config` (what a config is) and `weir-proto` (the wire).

pub mod api;
pub mod forecast;
pub mod https;
pub mod leases;
pub mod openapi;
pub mod plane;
pub mod push;
pub mod registry;
pub mod rollout;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use plane::ControlPlane;

/// Compares in time independent of where the strings differ (bearer tokens).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How [`serve`] serves.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Bearer token every admin call and gateway stream must carry.
    pub token: Option<String>,
    /// Heartbeat interval asked of gateways.
    pub heartbeat_interval: Duration,
    /// gRPC over TLS (and mutual TLS when the config has a client CA).
    pub grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    /// The admin API over TLS.
    pub admin_tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("grpc_tls", &self.grpc_tls.is_some())
            .field("admin_tls", &self.admin_tls.is_some())
            .finish()
    }
}

/// Serves the gRPC push service and the admin API on the given listeners until `stop`. With a
/// token, both require it (`Authorization: Bearer TOKEN`).
pub async fn serve(
    plane: Arc<ControlPlane>,
    grpc: TcpListener,
    admin: TcpListener,
    opts: ServeOptions,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let ServeOptions { token, heartbeat_interval, grpc_tls: tls, admin_tls } = opts;
    let node = grpc.local_addr().map(|a| a.to_string()).unwrap_or_default();
    plane.registry.set_node(node.clone());
    let svc = push::SyncService::new(plane.clone(), node, heartbeat_interval, token.clone()).into_server();
    let grpc_stop = stop.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let grpc_task = tokio::spawn(
        builder
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc),
                grpc_stop.cancelled_owned(),
            ),
    );
    tokio::spawn(plane.clone().follow(stop.clone()));
    let sweeper = {
        let (plane, stop) = (plane.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            while stop.run_until_cancelled(tick.tick()).await.is_some() {
                plane.registry.sweep();
                plane.share_gateways().await;
                plane.expire_registrations().await;
                plane.trim_history().await;
                plane.rollout_tick().await;
            }
        })
    };
    // Several readings per forecast step, whatever the step.
    let forecaster = {
        let (plane, stop) = (plane.clone(), stop.clone());
        tokio::spawn(async move {
            let every = (plane.forecast_step() / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
            let mut tick = tokio::time::interval(every);
            while stop.run_until_cancelled(tick.tick()).await.is_some() {
                plane.forecast_tick(registry::now_ms());
            }
        })
    };
    let app = api::router(plane, token);
    match admin_tls {
        Some(tls) => https::serve(admin, app, tls, stop).await,
        None => axum::serve(admin, app).with_graceful_shutdown(stop.cancelled_owned()).await?,
    }
    sweeper.abort();
    forecaster.abort();
    grpc_task.await??;
    Ok(())
}
