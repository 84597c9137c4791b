//! The running data plane: the live snapshot, the listeners, and applying a new config.
//!
//! Owns: [`Gateway::apply`], the one way a config takes effect (prepare new listeners and TLS,
//! compile, swap atomically, then start, restart or stop listeners), and
//! [`Gateway::shutdown`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::Watcher;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_config::ValidConfig;
use weir_config::spec::{EndpointSpec, ListenerSpec};

use crate::discovery::Discovery;
use crate::handover::{self, HandedSocket};
use crate::metrics::Metrics;
use crate::proxy::SharedSnapshot;
use crate::server::{self, ListenerCtx, ServeOptions};
use crate::snapshot::Snapshot;
use crate::tls::{self, ListenerTls, TlsError};
use crate::workers::Workers;

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
    /// A listener's certificates could not be loaded.
    #[error("listener {name:?}: {source}")]
    Tls {
        /// Listener name.
        name: String,
        /// What was wrong.
        source: TlsError,
    },
    /// A file the config names (upstream TLS material, JWT keys) could not be used.
    #[error(transparent)]
    Compile(#[from] crate::snapshot::CompileError),
}

/// Run once a replaced config is gone, its last request finished and its plugin instances
/// dropped: the binary's chance to have its allocator hand the freed memory back to the OS
/// (the library does not know which allocator that is).
pub type ReleaseHook = Arc<dyn Fn() + Send + Sync>;

/// The hook, shown by name in `Debug`.
#[derive(Clone)]
struct Release(ReleaseHook);

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReleaseHook")
    }
}

/// How long a replaced config is watched for its end before the hook is given up on (a
/// request streaming for longer keeps it alive).
const RELEASE_WATCH: Duration = Duration::from_secs(600);

/// Binds a listening socket with a backlog fit for bursts of connections.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)?.into_std()
}

#[derive(Debug)]
struct RunningListener {
    spec: ListenerSpec,
    local: SocketAddr,
    /// Kept so the accept loops can be restarted with new settings on the same socket.
    socket: std::net::TcpListener,
    stop: CancellationToken,
    /// One accept loop per worker.
    tasks: Vec<JoinHandle<()>>,
    /// Reloads certificates when their files change; dropped with the listener.
    _cert_watch: Option<notify::RecommendedWatcher>,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    state: SharedSnapshot,
    /// Keyed by (name, configured address): the socket of an unchanged pair is kept.
    listeners: Mutex<HashMap<(String, SocketAddr), RunningListener>>,
    /// Serialises `apply` so versions and listener sets never interleave.
    apply_lock: tokio::sync::Mutex<()>,
    workers: Workers,
    metrics: Arc<Metrics>,
    /// The upstreams plugin callouts may name, those of the snapshot serving.
    callouts: Arc<crate::filter::wasm::Callouts>,
    /// Listening sockets handed over by the process this one replaces, until a listener of the
    /// config takes each.
    inherited: Mutex<Vec<HandedSocket>>,
    /// Endpoints found by DNS, and the tasks that look them up.
    discovery: Discovery,
    /// The config serving, rebuilt with new answers when discovery finds a change.
    applied: Mutex<Option<ValidConfig>>,
    /// Run when a replaced config is released.
    release: Mutex<Option<Release>>,
    /// Itself, for the tasks it starts.
    me: Weak<Gateway>,
}

impl Gateway {
    /// A gateway with no config yet (every request gets 404 until the first apply).
    pub fn new(workers: Workers) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            state: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            listeners: Mutex::new(HashMap::new()),
            apply_lock: tokio::sync::Mutex::new(()),
            workers,
            metrics: Arc::new(Metrics::new()),
            callouts: Arc::default(),
            inherited: Mutex::new(Vec::new()),
            discovery: Discovery::default(),
            applied: Mutex::new(None),
            release: Mutex::new(None),
            me: me.clone(),
        })
    }

    /// Runs `hook` each time a replaced config has been released.
    pub fn on_release(&self, hook: ReleaseHook) {
        *self.release.lock() = Some(Release(hook));
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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
    /// changes and the previous config keeps serving.
    pub async fn apply(&self, cfg: &ValidConfig) -> Result<u64, ApplyError> {
        let _serial = self.apply_lock.lock().await;
        // Prepare everything that can fail before anything changes.
        let mut prepared = Vec::new();
        for l in &cfg.spec().listeners {
            let key = (l.name.clone(), l.address);
            let existing = self.listeners.lock().get(&key).map(|r| (r.spec == *l, r.socket.try_clone()));
            let socket = match existing {
                Some((true, _)) => continue,
                Some((false, Ok(s))) => s,
                _ => self.inherited_or_bind(&l.name, l.address).map_err(|source| ApplyError::Bind {
                    name: l.name.clone(),
                    address: l.address,
                    source,
                })?,
            };
            let tls = match &l.tls {
                Some(t) => Some(
                    tls::listener_tls(&t.certificates)
                        .map_err(|source| ApplyError::Tls { name: l.name.clone(), source })?,
                ),
                None => None,
            };
            prepared.push((key, l.clone(), socket, tls));
        }
        self.discovery.sync(cfg, &self.me).await;
        let version = self.state.load().version + 1;
        if let Err(e) = self.install(cfg, version) {
            // The watches go back to what the serving config discovers.
            let old = self.applied.lock().clone();
            match old {
                Some(old) => self.discovery.sync(&old, &self.me).await,
                None => self.discovery.clear(),
            }
            return Err(e);
        }
        *self.applied.lock() = Some(cfg.clone());

        let wanted: HashMap<(String, SocketAddr), ()> =
            cfg.spec().listeners.iter().map(|l| ((l.name.clone(), l.address), ())).collect();
        let mut running = self.listeners.lock();
        for (key, spec, socket, tls) in prepared {
            if let Some(old) = running.remove(&key) {
                // Same socket, new settings: old loops drain, new loops take new clients.
                old.stop.cancel();
                tracing::info!(listener = %spec.name, "listener settings changed; restarting its accept loops");
            }
            let rl = self.start_listener(spec, socket, tls);
            running.insert(key, rl);
        }
        running.retain(|key, l| {
            let keep = wanted.contains_key(key);
            if !keep {
                tracing::info!(listener = %key.0, address = %l.local, "listener removed by config");
                l.stop.cancel();
            }
            keep
        });
        drop(running);
        // A handed socket no listener took would queue connections nobody accepts.
        for s in self.inherited.lock().drain(..) {
            tracing::info!(listener = %s.name, address = %s.address, "closing a handed-over socket the config no longer has");
        }
        Ok(version)
    }

    /// Compiles `cfg` over the serving snapshot, with the endpoints discovery found, and
    /// serves it as `version`.
    fn install(&self, cfg: &ValidConfig, version: u64) -> Result<(), ApplyError> {
        let prev = self.state.load_full();
        let found = self.discovery.found();
        let next = Snapshot::compile(cfg, Some(&prev), version, &found, &self.metrics, &self.callouts)?;
        self.callouts.set(&next.upstreams);
        let next = Arc::new(next);
        self.state.store(next.clone());
        next.serving();
        self.watch_release(Arc::downgrade(&prev));
        Ok(())
    }

    /// Runs the release hook once `old` is gone: requests in flight hold it until they end.
    fn watch_release(&self, old: Weak<Snapshot>) {
        let Some(Release(hook)) = self.release.lock().clone() else { return };
        tokio::spawn(async move {
            let step = Duration::from_millis(100);
            for _ in 0..RELEASE_WATCH.as_millis() / step.as_millis() {
                if old.strong_count() == 0 {
                    hook();
                    return;
                }
                tokio::time::sleep(step).await;
            }
        });
    }

    /// What discovery found changed: the serving config is rebuilt with it, as the same
    /// version (the config did not change). Only the upstreams whose answers changed are
    /// rebuilt, keeping the endpoints that stay.
    /// Gives `upstream` of the serving snapshot the endpoints DNS now answers, in place.
    pub(crate) async fn rediscovered(&self, upstream: &str, endpoints: &[EndpointSpec]) {
        // After an apply in progress, which may have started or stopped this watch.
        let _serial = self.apply_lock.lock().await;
        let snap = self.state.load();
        if let Some(u) =
            snap.upstreams.get(upstream).filter(|u| u.spec().discovery.as_ref().is_some_and(|d| d.dns.is_some()))
        {
            u.set_endpoints(endpoints);
        }
    }

    /// Applies `cfg` when it differs from the config applied before only in the registered
    /// endpoints of `upstreams`: those upstreams take their new endpoints in place; nothing
    /// else is compiled, so a registration costs the same whatever the size of the config.
    pub async fn apply_endpoints(&self, cfg: &ValidConfig, upstreams: &[String]) -> u64 {
        let _serial = self.apply_lock.lock().await;
        let snap = self.state.load();
        for name in upstreams {
            let Some(u) = snap.upstreams.get(name.as_str()) else { continue };
            if u.spec().discovery.as_ref().is_some_and(|d| d.registry.is_some()) {
                u.set_endpoints(&cfg.registrations().endpoints(name));
            }
        }
        *self.applied.lock() = Some(cfg.clone());
        snap.version
    }

    /// Endpoint discovery.
    pub(crate) fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Sockets handed over by a predecessor (see [`crate::handover`]): listeners of the next
    /// config at the same addresses accept on them instead of binding.
    pub fn inherit(&self, sockets: Vec<HandedSocket>) {
        self.inherited.lock().extend(sockets);
    }

    /// A copy of every listening socket, for a successor to take over.
    pub fn handed_sockets(&self) -> std::io::Result<Vec<HandedSocket>> {
        let running = self.listeners.lock();
        let mut out = Vec::with_capacity(running.len());
        for ((name, address), l) in running.iter() {
            out.push(HandedSocket { name: name.clone(), address: *address, socket: l.socket.try_clone()? });
        }
        Ok(out)
    }

    fn inherited_or_bind(&self, name: &str, address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
        match handover::take(&mut self.inherited.lock(), name, address) {
            Some(s) => {
                tracing::info!(listener = %name, %address, "listening on the socket handed over");
                s.set_nonblocking(true)?;
                Ok(s)
            }
            None => bind(address),
        }
    }

    fn start_listener(
        &self,
        spec: ListenerSpec,
        socket: std::net::TcpListener,
        tls: Option<ListenerTls>,
    ) -> RunningListener {
        let local = socket.local_addr().unwrap_or(spec.address);
        let cert_watch = tls.as_ref().and_then(|t| watch_certs(&spec.name, t));
        let ctx = Arc::new(ListenerCtx::new(spec.name.as_str().into(), ServeOptions::from_limits(&spec.limits), tls));
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for h in self.workers.handles() {
            let Ok(sock) = socket.try_clone() else { continue };
            let (ctx, state, stop) = (ctx.clone(), self.state.clone(), stop.clone());
            tasks.push(h.spawn(async move {
                match TcpListener::from_std(sock) {
                    Ok(l) => server::serve(l, ctx, state, stop).await,
                    Err(e) => tracing::error!(listener = %ctx.name, error = %e, "cannot register listener"),
                }
            }));
        }
        tracing::info!(listener = %spec.name, address = %local, tls = ctx.tls.is_some(), workers = tasks.len(), "listener bound");
        RunningListener { spec, local, socket, stop, tasks, _cert_watch: cert_watch }
    }

    /// Stops accepting on every listener and waits up to `deadline` for in-flight requests
    /// to finish. Returns whether every connection drained in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let all: Vec<RunningListener> = self.listeners.lock().drain().map(|(_, l)| l).collect();
        for l in &all {
            l.stop.cancel();
        }
        let drain = futures_util::future::join_all(all.into_iter().flat_map(|l| l.tasks));
        let drained = tokio::time::timeout(deadline, drain).await.is_ok();
        // The spans of the last requests, before the process goes (blocking: off this thread,
        // which the exporter's connection needs).
        if let Some(tracer) = self.snapshot().tracer.clone() {
            let _ = tokio::task::spawn_blocking(move || tracer.flush()).await;
        }
        drained
    }
}

/// Reloads a listener's certificates whenever one of their files (or its directory, for
/// Kubernetes secret symlink swaps) changes. Open connections keep their session.
fn watch_certs(name: &str, tls: &ListenerTls) -> Option<notify::RecommendedWatcher> {
    let resolver = tls.resolver.clone();
    let listener = name.to_owned();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            match resolver.reload() {
                Ok(()) => tracing::info!(%listener, "certificates reloaded"),
                Err(e) => tracing::warn!(%listener, error = %e, "certificate reload failed; keeping the current ones"),
            }
        }
    })
    .ok()?;
    let mut dirs: Vec<std::path::PathBuf> = tls
        .resolver
        .files()
        .filter_map(|f| {
            std::path::Path::new(f).parent().map(|p| if p.as_os_str().is_empty() { ".".into() } else { p.to_owned() })
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if let Err(e) = w.watch(&d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(listener = %name, dir = %d.display(), error = %e, "cannot watch certificate directory");
        }
    }
    Some(w)
}
