//! The running data plane: the live snapshot, the listeners, and applying a new config.
//!
//! Owns: [`Gateway::apply`], the one way a config takes effect (bind new listeners, compile,
//! swap atomically, close removed listeners), and [`Gateway::shutdown`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_config::ValidConfig;

use crate::proxy::SharedSnapshot;
use crate::server::{self, ServeOptions};
use crate::snapshot::Snapshot;
use crate::workers::Workers;

/// Binds a listening socket with a backlog fit for bursts of connections.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    let l = sock.listen(4096)?.into_std()?;
    Ok(l)
}

/// Why a config could not be applied. The previous config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A new listener's address could not be bound.
    #[error("listener {name:?} cannot bind {address}: {source} (is another process using the port?)")]
    Bind {
        /// Listener name.
        name: String,
        /// Address it asked for.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct RunningListener {
    local: SocketAddr,
    stop: CancellationToken,
    /// One accept loop per worker.
    tasks: Vec<JoinHandle<()>>,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    state: SharedSnapshot,
    /// Keyed by (name, configured address): a listener whose pair is unchanged keeps running.
    listeners: Mutex<HashMap<(String, SocketAddr), RunningListener>>,
    /// Serialises `apply` so versions and listener sets never interleave.
    apply_lock: tokio::sync::Mutex<()>,
    opts: ServeOptions,
    workers: Workers,
}

impl Gateway {
    /// A gateway with no config yet (every request gets 404 until the first apply).
    pub fn new(opts: ServeOptions, workers: Workers) -> Arc<Self> {
        Arc::new(Self {
            state: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            listeners: Mutex::new(HashMap::new()),
            apply_lock: tokio::sync::Mutex::new(()),
            opts,
            workers,
        })
    }

    /// The live snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Bound addresses of the listeners, by name.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = self.listeners.lock().iter().map(|((n, _), l)| (n.clone(), l.local)).collect();
        v.sort();
        v
    }

    /// Applies a validated config atomically and returns its version. On error nothing
    /// changes.
    pub async fn apply(&self, cfg: &ValidConfig) -> Result<u64, ApplyError> {
        let _serial = self.apply_lock.lock().await;
        let wanted: HashMap<(String, SocketAddr), ()> =
            cfg.spec().listeners.iter().map(|l| ((l.name.clone(), l.address), ())).collect();
        let mut fresh = Vec::new();
        for l in &cfg.spec().listeners {
            let key = (l.name.clone(), l.address);
            if self.listeners.lock().contains_key(&key) {
                continue;
            }
            let listener = bind(l.address).map_err(|source| ApplyError::Bind {
                name: l.name.clone(),
                address: l.address,
                source,
            })?;
            fresh.push((key, listener));
        }
        let prev = self.state.load_full();
        let version = prev.version + 1;
        let next = Snapshot::compile(cfg, Some(&prev), version);
        self.state.store(Arc::new(next));

        let mut running = self.listeners.lock();
        for ((name, address), listener) in fresh {
            let local = listener.local_addr().unwrap_or(address);
            let stop = CancellationToken::new();
            let mut tasks = Vec::new();
            for h in self.workers.handles() {
                let Ok(sock) = listener.try_clone() else { continue };
                let (name, state, opts, stop) =
                    (Arc::<str>::from(name.as_str()), self.state.clone(), self.opts, stop.clone());
                tasks.push(h.spawn(async move {
                    match TcpListener::from_std(sock) {
                        Ok(l) => server::serve(l, name, state, opts, stop).await,
                        Err(e) => tracing::error!(listener = %name, error = %e, "cannot register listener"),
                    }
                }));
            }
            tracing::info!(listener = %name, address = %local, workers = tasks.len(), "listener bound");
            running.insert((name, address), RunningListener { local, stop, tasks });
        }
        running.retain(|key, l| {
            let keep = wanted.contains_key(key);
            if !keep {
                tracing::info!(listener = %key.0, address = %l.local, "listener removed by config");
                l.stop.cancel();
            }
            keep
        });
        Ok(version)
    }

    /// Stops accepting on every listener and waits up to `deadline` for in-flight requests
    /// to finish. Returns whether every connection drained in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let all: Vec<RunningListener> = self.listeners.lock().drain().map(|(_, l)| l).collect();
        for l in &all {
            l.stop.cancel();
        }
        let drain = futures_util::future::join_all(all.into_iter().flat_map(|l| l.tasks));
        tokio::time::timeout(deadline, drain).await.is_ok()
    }
}
