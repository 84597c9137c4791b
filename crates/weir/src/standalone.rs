//! `weir standalone`: gateway + file config source in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_gateway::admin::{self, AdminState};
use weir_gateway::{Gateway, Workers, watch};

use crate::upgrade::{self, UpgradeArgs};

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
    #[command(flatten)]
    upgrade: UpgradeArgs,
}

pub(crate) fn run(args: &Args) -> ExitCode {
    let (_text, cfg) = match watch::load_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nhint: `weir validate -c {}` checks a file without starting", args.config.display());
            return ExitCode::FAILURE;
        }
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
        let mut admin = None;
        if let Some(a) = &cfg.spec().admin {
            let inherited = predecessor.as_mut().and_then(|p| p.take_admin(a.address));
            match start_admin(a.address, inherited, &gw, &admin_state, &stop).await {
                Ok(s) => admin = Some((a.address, s)),
                Err(code) => return code,
            }
        }
        let watcher = tokio::spawn(watch::watch_file(args.config.clone(), gw.clone(), cfg.clone(), stop.clone()));
        serve_until_signal(&args.upgrade, predecessor, &gw, admin).await;
        drain(&gw, &admin_state, &stop, args.drain_timeout).await;
        watcher.abort();
        ExitCode::SUCCESS
    })
}

/// Tells a predecessor this process serves, serves the upgrade socket, and returns on SIGTERM,
/// SIGINT or once a successor has taken over.
pub(crate) async fn serve_until_signal(
    upgrade: &UpgradeArgs,
    predecessor: Option<upgrade::Predecessor>,
    gw: &Arc<Gateway>,
    admin: Option<(SocketAddr, std::net::TcpListener)>,
) {
    if let Some(p) = predecessor
        && let Err(e) = p.finish().await
    {
        // Both processes may be serving now; this one goes on, as a fresh start would.
        tracing::warn!(error = %e, "handover unfinished");
    }
    let handed_over = CancellationToken::new();
    tokio::spawn(upgrade::serve(upgrade.clone(), gw.clone(), admin, handed_over.clone()));
    tokio::select! {
        () = wait_for_signal() => {}
        () = handed_over.cancelled() => {}
    }
}

/// A file named by a command-line flag (a PEM certificate or key), or a message saying which.
pub(crate) fn read_flag_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A current-thread runtime for the control side (config source, admin, health checks);
/// request traffic runs on worker threads.
pub(crate) fn control_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Starts `n` worker threads (default: one per core).
pub(crate) fn start_workers(n: Option<usize>) -> Result<(Workers, usize), ExitCode> {
    let n = n.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    Workers::start(n).map(|w| (w, n)).map_err(|e| {
        eprintln!("cannot start {n} worker threads: {e}");
        ExitCode::FAILURE
    })
}

/// Serves the admin endpoints (`/healthz`, `/readyz`, `/stats`, `/metrics`) on the socket a
/// predecessor handed over, or binds `addr`. Returns a copy of the socket for a successor.
pub(crate) async fn start_admin(
    addr: SocketAddr,
    inherited: Option<std::net::TcpListener>,
    gw: &Arc<Gateway>,
    state: &Arc<AdminState>,
    stop: &CancellationToken,
) -> Result<std::net::TcpListener, ExitCode> {
    let bound = match inherited {
        Some(s) => Ok(s),
        None => std::net::TcpListener::bind(addr),
    };
    let listener = bound
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .and_then(|s| Ok((s.try_clone()?, TcpListener::from_std(s)?)));
    match listener {
        Ok((copy, l)) => {
            let local = l.local_addr().unwrap_or(addr);
            tracing::info!(address = %local, "admin bound");
            tokio::spawn(admin::serve(l, gw.clone(), state.clone(), stop.clone()));
            Ok(copy)
        }
        Err(e) => {
            eprintln!("admin cannot bind {addr}: {e} (is another process using the port?)");
            Err(ExitCode::FAILURE)
        }
    }
}

/// Marks the gateway draining, stops its config source and listeners, and waits for
/// in-flight requests up to `deadline`.
pub(crate) async fn drain(gw: &Gateway, admin: &AdminState, stop: &CancellationToken, deadline: Duration) {
    tracing::info!(?deadline, "shutting down: draining in-flight requests");
    admin.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    stop.cancel();
    if gw.shutdown(deadline).await {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!("drain deadline passed; closing remaining connections");
    }
}

pub(crate) async fn wait_for_signal() {
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
