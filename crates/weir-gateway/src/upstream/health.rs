//! Background work per upstream: active HTTP probes and idle-connection sweeps.
//!
//! Probes use their own short-lived connections so they neither consume pool permits nor
//! hide a broken pooled connection. State changes are logged; balancers read the result
//! through atomics and never wait on a probe.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use http::{Request, header};
use tokio::task::JoinHandle;
use weir_config::spec::ActiveHealthSpec;

use super::{Endpoint, Members};
use crate::body::UpstreamBody;
use crate::tls::UpstreamTls;

/// Closes idle connections past their idle timeout or lifetime, about twice per timeout, on
/// the endpoints `members` holds at each sweep; ends with the upstream.
pub(super) fn spawn_sweeper(members: Weak<ArcSwap<Members>>, idle_timeout: Duration) -> JoinHandle<()> {
    let every = (idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(members) = members.upgrade() else { return };
            for e in members.load().endpoints() {
                e.pool().sweep();
            }
        }
    })
}

/// Probes one endpoint every `interval`; flips it down after `unhealthy_threshold` failures
/// in a row and up after `healthy_threshold` successes in a row.
pub(super) fn spawn_prober(
    upstream: Arc<str>,
    ep: Arc<Endpoint>,
    spec: ActiveHealthSpec,
    tls: Option<UpstreamTls>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(spec.interval.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        loop {
            tick.tick().await;
            let healthy = probe(&ep, &spec, tls.as_ref()).await;
            if healthy {
                ok_run += 1;
                fail_run = 0;
            } else {
                fail_run += 1;
                ok_run = 0;
            }
            if !ep.is_active_up() && ok_run >= spec.healthy_threshold && ep.set_active_up(true) {
                tracing::info!(%upstream, endpoint = %ep.label(), "endpoint healthy again");
            } else if ep.is_active_up() && fail_run >= spec.unhealthy_threshold && ep.set_active_up(false) {
                tracing::warn!(%upstream, endpoint = %ep.label(), failures = fail_run, "endpoint down: health checks failing");
            }
        }
    })
}

async fn probe(ep: &Endpoint, spec: &ActiveHealthSpec, tls: Option<&UpstreamTls>) -> bool {
    let timeout = spec.timeout.get();
    let attempt = async {
        let mut sender = ep.connect_spawned(timeout, tls, false).await.ok()?;
        let req = Request::get(spec.path.as_str())
            .header(header::HOST, ep.label().as_ref())
            .header(header::USER_AGENT, "weir-health-check")
            .header(header::CONNECTION, "close")
            .body(UpstreamBody::Empty)
            .ok()?;
        let rsp = sender.send_request(req).await.ok()?;
        Some(rsp.status().is_success() || rsp.status().is_redirection())
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
