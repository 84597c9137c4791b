//! Protocol upgrades (WebSocket): relay the handshake, then splice the two connections.
//!
//! Upgraded connections never come from or return to the pool: the upstream connection is
//! dialed for the tunnel and closes with it.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{GatewayBody, Lease, UpstreamBody};
use crate::error::ProxyError;
use crate::headers;
use crate::proxy::ConnInfo;
use crate::router::Route;
use crate::upstream::{PickCx, Tried, Upstream};

/// Sends the upgrade request to one endpoint; on `101` splices client and upstream.
pub(crate) async fn tunnel(
    route: &Route,
    upstream: &Arc<Upstream>,
    conn: ConnInfo,
    req: Request<UpstreamBody>,
    downstream: OnUpgrade,
) -> Result<Response<GatewayBody>, ProxyError> {
    let cx = PickCx { client_ip: conn.client.ip(), headers: crate::view::Fields::Map(req.headers()) };
    let (_, ep) = upstream.pick(&cx, Tried::default()).ok_or_else(|| ProxyError::NoHealthyEndpoint {
        route: route.name.clone(),
        upstream: upstream.name().clone(),
    })?;
    let lease = Lease::new(ep.clone());
    let mut sender = ep.connect_spawned(upstream.connect_timeout(), upstream.tls(), true).await.map_err(|e| {
        ep.record_failure(upstream.passive());
        ProxyError::Connect { route: route.name.clone(), endpoint: ep.label().clone(), reason: e.to_string() }
    })?;
    let bad =
        |reason: String| ProxyError::BadUpstream { route: route.name.clone(), endpoint: ep.label().clone(), reason };
    let mut rsp = match tokio::time::timeout(route.timeout, sender.send_request(req)).await {
        Err(_) => {
            return Err(ProxyError::UpstreamTimeout {
                route: route.name.clone(),
                endpoint: ep.label().clone(),
                after: route.timeout,
            });
        }
        Ok(r) => r.map_err(|e| bad(e.to_string()))?,
    };
    if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream declined; relay its answer as a normal response.
        let (mut rp, inner) = rsp.into_parts();
        headers::strip_hop_by_hop(&mut rp.headers, false);
        return Ok(Response::from_parts(rp, GatewayBody::Proxied { inner, lease: Some(lease) }));
    }
    ep.record_success();
    let upstream_io = hyper::upgrade::on(&mut rsp);
    let label = ep.label().clone();
    tokio::spawn(async move {
        let _lease = lease;
        match tokio::try_join!(downstream, upstream_io) {
            Ok((d, u)) => {
                let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut u).await {
                    tracing::debug!(endpoint = %label, error = %e, "tunnel closed");
                }
            }
            Err(e) => tracing::debug!(endpoint = %label, error = %e, "upgrade failed"),
        }
    });
    let (mut rp, _) = rsp.into_parts();
    headers::strip_hop_by_hop(&mut rp.headers, true);
    Ok(Response::from_parts(rp, GatewayBody::empty()))
}
