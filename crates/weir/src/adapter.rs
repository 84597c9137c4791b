//! `weir adapter nginx|haproxy`: a gateway that is not Weir, driven by the control plane.
//!
//! The adapter registers with the control planes like a gateway (kind `nginx` or `haproxy`),
//! renders each revision into the proxy's configuration in `--config-dir`, checks it with the
//! proxy, swaps it in and reloads the proxy gracefully (starting it when it does not run),
//! and ACKs once the proxy serves it, or NACKs naming what the proxy cannot express. The proxy
//! runs on its own: it keeps its last config when the adapter or the control plane stops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use weir_adapter::{Context, Driven, Proxy};
use weir_gateway::sync::{self, SyncOptions};

use crate::fleet::{Link, control_plane_tls, host_name, named_listeners, parse_label, parse_listen};

/// Which proxy to drive.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Drive nginx: render `nginx.conf`, `nginx -t`, reload with SIGHUP.
    Nginx {
        /// The nginx binary.
        #[arg(long, default_value = "nginx")]
        nginx_bin: PathBuf,
        #[command(flatten)]
        args: Args,
    },
    /// Drive HAProxy (master-worker): render `haproxy.cfg`, `haproxy -c`, reload with SIGUSR2.
    Haproxy {
        /// The haproxy binary.
        #[arg(long, default_value = "haproxy")]
        haproxy_bin: PathBuf,
        #[command(flatten)]
        args: Args,
    },
}

/// What every adapter takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Control-plane gRPC URLs, tried in turn (comma-separated or repeated).
    #[arg(long = "control-plane", value_delimiter = ',', default_value = "http://127.0.0.1:18000")]
    control_planes: Vec<String>,
    /// The proxy's configuration, certificates, pid file, error log and the last snapshot.
    #[arg(long)]
    config_dir: PathBuf,
    /// A client listener of the proxy, `[NAME=]ADDR` (repeatable); a pushed `Listener`
    /// resource of the same NAME gives its TLS and limits.
    #[arg(long, required = true, value_parser = parse_listen)]
    listen: Vec<(Option<String>, SocketAddr)>,
    /// Where the proxy answers the adapter (the config it serves, its counters). Loopback.
    #[arg(long, default_value = "127.0.0.1:9902")]
    status_address: SocketAddr,
    /// Worker processes (nginx) or threads (HAProxy); default one per core.
    #[arg(long)]
    workers: Option<usize>,
    /// This member's id in the registry (default: KIND-HOST-PORT of the first listener).
    #[arg(long)]
    id: Option<String>,
    /// A label for the registry, `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    #[command(flatten)]
    link: Link,
}

pub(crate) fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::Nginx { nginx_bin, args } => drive(weir_adapter::nginx::Nginx { binary: nginx_bin }, &args),
        Command::Haproxy { haproxy_bin, args } => drive(weir_adapter::haproxy::Haproxy { binary: haproxy_bin }, &args),
    }
}

fn drive<P: Proxy>(proxy: P, args: &Args) -> ExitCode {
    let dir = match std::path::absolute(&args.config_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("--config-dir {}: {e}", args.config_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let listen = named_listeners(&args.listen);
    let id = args.id.clone().unwrap_or_else(|| format!("{}-{}-{}", P::KIND, host_name(), listen[0].1.port()));
    let tls = match control_plane_tls(&args.control_planes, &args.link) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = Context { dir: dir.clone(), status: args.status_address, workers: args.workers };
    let target = match Driven::new(proxy, ctx) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot prepare {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let opts = SyncOptions {
        control_planes: args.control_planes.clone(),
        gateway_id: id.clone(),
        labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        listen,
        admin: None,
        state_dir: dir.join("state"),
        heartbeat_interval: args.link.heartbeat_interval,
        token: args.link.token.clone(),
        tls,
        tracing: None,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let stop = CancellationToken::new();
        tracing::info!(adapter = %id, kind = P::KIND, dir = %dir.display(), control_planes = ?opts.control_planes, "adapter started");
        let source = tokio::spawn(sync::run_target(target, opts, stop.clone()));
        crate::standalone::wait_for_signal().await;
        stop.cancel();
        let _ = source.await;
        tracing::info!("adapter stopped; the proxy keeps serving its last config");
        ExitCode::SUCCESS
    })
}
