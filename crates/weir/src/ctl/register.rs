//! `weir ctl register` and `deregister`: a service's endpoint in an upstream that takes
//! registrations, kept alive by renewing it within its ttl.
//!
//! Owns: the registration call, the renewal loop of `--keep` (every third of the ttl, so one
//! lost renewal does not drop the endpoint) and the deregistration when that loop is stopped.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use weir_config::HumanDuration;
use weir_config::spec::RegistrationSpec;

use super::http::Api;

type Error = Box<dyn std::error::Error>;

/// What `register` was asked for.
pub(super) struct Registration {
    pub(super) upstream: String,
    pub(super) endpoint: SocketAddr,
    pub(super) weight: u32,
    pub(super) ttl: String,
    pub(super) keep: bool,
}

/// Registers (or renews) once; with `keep`, renews until SIGINT or SIGTERM, then deregisters.
pub(super) async fn register(api: &Api, r: Registration) -> Result<ExitCode, Error> {
    let ttl: HumanDuration =
        serde_json::from_value(Value::String(r.ttl.clone())).map_err(|e| format!("--ttl {:?}: {e}", r.ttl))?;
    let path = format!("/api/v1/upstreams/{}/registrations", r.upstream);
    let body = json!({"address": r.endpoint.ip(), "port": r.endpoint.port(), "weight": r.weight, "ttl": r.ttl});
    let (status, v) = api.call("POST", &path, Some(&body)).await?;
    if !(200..300).contains(&status) {
        return Ok(super::print::applied(status, &v));
    }
    let name = v["name"].as_str().unwrap_or_default().to_owned();
    println!("registration/{name} {} (ttl {ttl})", v["result"].as_str().unwrap_or(""));
    if !r.keep {
        return Ok(ExitCode::SUCCESS);
    }
    let (mut int, mut term) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    let mut every = tokio::time::interval((ttl.get() / 3).max(Duration::from_millis(100)));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {
                match api.call("POST", &path, Some(&body)).await {
                    Ok((s, _)) if (200..300).contains(&s) => {}
                    Ok((s, v)) => eprintln!("renewal refused ({s}): {v}; trying again"),
                    Err(e) => eprintln!("renewal failed: {e}; trying again"),
                }
            }
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    deregister(api, &r.upstream, r.endpoint).await
}

/// Removes the registration of `endpoint` in `upstream`.
pub(super) async fn deregister(api: &Api, upstream: &str, endpoint: SocketAddr) -> Result<ExitCode, Error> {
    let name = RegistrationSpec::name_for(upstream, endpoint.ip(), endpoint.port());
    let (status, v) = api.call("DELETE", &format!("/api/v1/registrations/{name}"), None).await?;
    Ok(super::print::applied(status, &v))
}
