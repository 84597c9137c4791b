//! `weir gateway`: a data-plane-only gateway fed by one or more control planes.
//!
//! Where it listens is its own (`--listen`, so several gateways share a host); routes,
//! upstreams, plugins and consumers are pushed. It cold-starts from its persisted last good
//! snapshot when no control plane answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_config::spec::TracingSpec;
use weir_gateway::Gateway;
use weir_gateway::admin::AdminState;
use weir_gateway::sync::{self, SyncOptions};

use crate::standalone::{control_runtime, drain, read_flag_file, serve_until_signal, start_admin, start_workers};
use crate::upgrade::{self, UpgradeArgs};

/// How a gateway (or an adapter) reaches its control planes: token, heartbeat, TLS.
#[derive(Debug, clap::Args)]
pub(crate) struct Link {
    /// Bearer token the control planes require.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Heartbeat interval until the control plane asks for another.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) heartbeat_interval: Duration,
    /// CA certificate (PEM) that signed the control planes' certificate; needed for `https://`
    /// control-plane URLs.
    #[arg(long)]
    control_plane_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) to present to control planes that require mutual TLS.
    #[arg(long, requires = "control_plane_key")]
    control_plane_cert: Option<PathBuf>,
    /// The private key (PEM) of `--control-plane-cert`.
    #[arg(long, requires = "control_plane_cert")]
    control_plane_key: Option<PathBuf>,
}

/// Arguments of `weir gateway`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Control-plane gRPC URLs, tried in turn (comma-separated or repeated).
    #[arg(long = "control-plane", value_delimiter = ',', default_value = "http://127.0.0.1:18000")]
    control_planes: Vec<String>,
    /// A client listener, `[NAME=]ADDR` (repeatable). A pushed `Listener` resource of the same
    /// NAME gives its TLS and limits. Unnamed ones are called `main`, `main-2`, ….
    #[arg(long, required = true, value_parser = parse_listen)]
    listen: Vec<(Option<String>, SocketAddr)>,
    /// Admin endpoints (`/healthz`, `/readyz`, `/stats`, `/metrics`).
    #[arg(long)]
    admin_address: Option<SocketAddr>,
    /// Where the last good snapshot is kept (for starts without a control plane).
    #[arg(long, default_value = "weir-state")]
    state_dir: PathBuf,
    /// This gateway's id in the registry (default: host name and first listen port).
    #[arg(long)]
    id: Option<String>,
    /// A label for the registry, `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    link: Link,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    #[command(flatten)]
    upgrade: UpgradeArgs,
    /// Export a span per request to this OTLP/gRPC collector (e.g. `http://127.0.0.1:4317`).
    #[arg(long, env = "WEIR_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// With `--otlp-endpoint`: the share of requests traced when the caller sent no sampling
    /// decision (0 to 1).
    #[arg(long, default_value_t = 0.01, requires = "otlp_endpoint")]
    trace_sample_ratio: f64,
    /// With `--otlp-endpoint`: the spans' `service.name`.
    #[arg(long, default_value = "weir", requires = "otlp_endpoint")]
    trace_service_name: String,
}

/// The TLS config for `https://` control planes, or why there is none.
pub(crate) fn control_plane_tls(
    urls: &[String],
    args: &Link,
) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let https = urls.iter().any(|u| u.starts_with("https://"));
    let Some(ca) = &args.control_plane_ca else {
        return if https {
            Err("https:// control-plane URLs need --control-plane-ca (the CA that signed their certificate)".into())
        } else {
            Ok(None)
        };
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_flag_file(ca)?));
    if let (Some(cert), Some(key)) = (&args.control_plane_cert, &args.control_plane_key) {
        tls = tls.identity(Identity::from_pem(read_flag_file(cert)?, read_flag_file(key)?));
    }
    Ok(Some(tls))
}

pub(crate) fn parse_listen(s: &str) -> Result<(Option<String>, SocketAddr), String> {
    let (name, addr) = match s.split_once('=') {
        Some((n, a)) => (Some(n.to_owned()), a),
        None => (None, s),
    };
    addr.parse().map(|a| (name, a)).map_err(|e| format!("{addr:?}: {e} (expected [NAME=]IP:PORT)"))
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

/// Waits until a first config is applied: a successor serves before its predecessor drains.
async fn first_config(gw: &Gateway, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while gw.snapshot().version == 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "gateway".into(), |h| h.trim().to_owned())
}

/// `--listen` flags with their names: unnamed ones are `main`, `main-2`, ….
pub(crate) fn named_listeners(flags: &[(Option<String>, SocketAddr)]) -> Vec<(String, SocketAddr)> {
    let mut unnamed = 0;
    flags
        .iter()
        .map(|(name, addr)| {
            let name = name.clone().unwrap_or_else(|| {
                unnamed += 1;
                if unnamed == 1 { "main".into() } else { format!("main-{unnamed}") }
            });
            (name, *addr)
        })
        .collect()
}

pub(crate) fn run(args: Args) -> ExitCode {
    let listen = named_listeners(&args.listen);
    let id = args.id.clone().unwrap_or_else(|| format!("{}-{}", host_name(), listen[0].1.port()));
    let tls = match control_plane_tls(&args.control_planes, &args.link) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut opts = SyncOptions {
        control_planes: args.control_planes.clone(),
        gateway_id: id.clone(),
        labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        listen,
        admin: None,
        state_dir: args.state_dir.clone(),
        heartbeat_interval: args.link.heartbeat_interval,
        token: args.link.token.clone(),
        tls,
        tracing: args.otlp_endpoint.clone().map(|otlp_endpoint| TracingSpec {
            otlp_endpoint,
            sample_ratio: args.trace_sample_ratio.clamp(0.0, 1.0),
            service_name: args.trace_service_name.clone(),
        }),
    };
    let rt = match control_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let (pool, workers) = match start_workers(args.workers) {
            Ok(w) => w,
            Err(code) => return code,
        };
        let mut predecessor = match upgrade::take_over(&args.upgrade).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let gw = Gateway::new(pool);
        gw.on_release(Arc::new(crate::release_memory));
        if let Some(p) = &mut predecessor {
            gw.inherit(p.listeners());
        }
        let stop = CancellationToken::new();
        let admin_state = Arc::new(AdminState::default());
        let mut admin = None;
        if let Some(a) = args.admin_address {
            let inherited = predecessor.as_mut().and_then(|p| p.take_admin(a));
            match start_admin(a, inherited, &gw, &admin_state, &stop).await {
                Ok(s) => {
                    opts.admin = s.local_addr().ok();
                    admin = Some((a, s));
                }
                Err(code) => return code,
            }
        }
        tracing::info!(gateway = %id, workers, control_planes = ?args.control_planes, "gateway started; waiting for config");
        let source = tokio::spawn(sync::run(gw.clone(), opts, stop.clone()));
        if predecessor.is_some() && !first_config(&gw, args.upgrade.timeout()).await {
            eprintln!("no config within {:?} (from the control planes or the state dir); the running process keeps serving", args.upgrade.timeout());
            return ExitCode::FAILURE;
        }
        serve_until_signal(&args.upgrade, predecessor, &gw, admin).await;
        drain(&gw, &admin_state, &stop, args.drain_timeout).await;
        source.abort();
        ExitCode::SUCCESS
    })
}
