//! `weir standalone`: gateway + file config source in one process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_gateway::admin::{self, AdminState};
use weir_gateway::{Gateway, Workers, watch};

/// Arguments of `weir standalone`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The config file (YAML). Watched: saving it applies it.
    #[arg(short, long)]
    config: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

pub(crate) fn run(args: &Args) -> ExitCode {
    let (text, cfg) = match watch::load_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nhint: `weir validate -c {}` checks a file without starting", args.config.display());
            return ExitCode::FAILURE;
        }
    };
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    // The main thread runs the control side (file watch, admin, health checks); request
    // traffic runs on the worker threads.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let pool = match Workers::start(workers) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("cannot start {workers} worker threads: {e}");
                return ExitCode::FAILURE;
            }
        };
        let gw = Gateway::new(pool);
        let version = match gw.apply(&cfg).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(version, workers, config = %args.config.display(), "gateway started");
        let stop = CancellationToken::new();
        let admin_state = Arc::new(AdminState::default());
        if let Some(a) = &cfg.spec().admin {
            match TcpListener::bind(a.address).await {
                Ok(l) => {
                    let local = l.local_addr().unwrap_or(a.address);
                    tracing::info!(address = %local, "admin bound");
                    tokio::spawn(admin::serve(l, gw.clone(), admin_state.clone(), stop.clone()));
                }
                Err(e) => {
                    eprintln!("admin cannot bind {}: {e} (is another process using the port?)", a.address);
                    return ExitCode::FAILURE;
                }
            }
        }
        let watcher = tokio::spawn(watch::watch_file(args.config.clone(), gw.clone(), text, stop.clone()));
        wait_for_signal().await;
        tracing::info!(deadline = ?args.drain_timeout, "shutting down: draining in-flight requests");
        admin_state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        stop.cancel();
        let drained = gw.shutdown(args.drain_timeout).await;
        watcher.abort();
        if drained {
            tracing::info!("drained; bye");
        } else {
            tracing::warn!("drain deadline passed; closing remaining connections");
        }
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
