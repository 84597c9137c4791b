//! The control-plane config source: a gateway's end of the `weir.v1.ConfigSync` stream.
//!
//! Owns: cold start from the persisted snapshot, connecting to one of several control
//! planes with jittered exponential backoff, registering with a capability descriptor,
//! applying each received revision atomically to a [`Target`] (then ACK and persist) or
//! refusing it (NACK with every error, old config keeps serving), and heartbeats with a
//! runtime report. Plugin modules are fetched by [`modules`].
//!
//! The target is this process's [`Gateway`] ([`GatewayTarget`]) or a proxy Weir drives
//! through an adapter (`weir-adapter`: nginx, HAProxy), so every kind of gateway speaks the
//! protocol through this one implementation.

pub mod modules;
mod report;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use weir_proto::v1::{self, config_request, config_response};

use weir_config::ValidConfig;
use weir_config::assembly::Changed;

use crate::gateway::Gateway;
use state::{Received, Resources};

/// What a control plane's revisions are applied to: this process's gateway, or a proxy that
/// an adapter drives.
pub trait Target: Send + 'static {
    /// Fills in the part of the capability descriptor that depends on the kind of gateway:
    /// `kind`, `version`, `plugins`, `protocols`, `features`.
    fn describe(&self, d: &mut v1::Register);
    /// Makes `cfg` (the config at `revision`) what serves, or says why it cannot (the NACK's
    /// errors, each with the path of what it is about); what served before serves on then.
    /// `changed` says how `cfg` differs from the config applied before it (a target may
    /// apply it whole regardless).
    fn apply(
        &mut self,
        cfg: ValidConfig,
        revision: u64,
        changed: &Changed,
    ) -> impl Future<Output = Result<(), Vec<v1::ErrorDetail>>> + Send;
    /// The runtime figures since the previous heartbeat.
    fn report(&mut self) -> impl Future<Output = v1::RuntimeReport> + Send;
}

/// The gateway of this process as a [`Target`].
#[derive(Debug)]
pub struct GatewayTarget {
    gw: Arc<Gateway>,
    reporter: report::Reporter,
}

impl GatewayTarget {
    /// Applies revisions to `gw`.
    pub fn new(gw: Arc<Gateway>) -> Self {
        Self { gw, reporter: report::Reporter::default() }
    }
}

impl Target for GatewayTarget {
    fn describe(&self, d: &mut v1::Register) {
        d.kind = "weir".into();
        d.version = env!("CARGO_PKG_VERSION").into();
        d.plugins = weir_config::plugins::BUILTINS
            .iter()
            .map(|b| v1::PluginCapability {
                name: b.name.into(),
                phase: b.phase.into(),
                config_schema: b.schema().to_string(),
            })
            .collect();
        d.protocols = ["http1", "h2", "h2c", "grpc", "websocket", "tls"].map(String::from).to_vec();
    }

    async fn apply(&mut self, cfg: ValidConfig, _revision: u64, changed: &Changed) -> Result<(), Vec<v1::ErrorDetail>> {
        if let Changed::Endpoints(upstreams) = changed {
            self.gw.apply_endpoints(&cfg, upstreams).await;
            return Ok(());
        }
        self.gw.apply(&cfg).await.map(drop).map_err(|e| {
            let (path, message) = match &e {
                crate::ApplyError::Bind { name, .. } | crate::ApplyError::Tls { name, .. } => {
                    let key =
                        weir_config::resources::ResourceKey::new(weir_config::resources::Kind::Listener, name.as_str());
                    (key.to_string(), e.to_string())
                }
                crate::ApplyError::Compile(c) => (c.path(), c.cause.to_string()),
            };
            vec![v1::ErrorDetail { path, message }]
        })
    }

    async fn report(&mut self) -> v1::RuntimeReport {
        let m = self.gw.metrics();
        self.reporter.report(m.overall().read(), m.in_flight_now())
    }
}

/// How a gateway finds and talks to its control planes.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Control-plane gRPC URLs (`http://host:18000`), tried in turn.
    pub control_planes: Vec<String>,
    /// This gateway's id in the registry.
    pub gateway_id: String,
    /// Labels for the registry.
    pub labels: BTreeMap<String, String>,
    /// This gateway's listeners: name and address.
    pub listen: Vec<(String, SocketAddr)>,
    /// Its admin address as bound (for the control plane's service discovery).
    pub admin: Option<SocketAddr>,
    /// Where the last good snapshot is kept.
    pub state_dir: PathBuf,
    /// Heartbeat interval until the control plane says otherwise.
    pub heartbeat_interval: Duration,
    /// Bearer token for the control planes, if they require one.
    pub token: Option<String>,
    /// TLS (trust roots, and a client certificate for mutual TLS) for `https://` URLs.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// This gateway's own tracing settings (not pushed: each gateway names its collector).
    pub tracing: Option<weir_config::spec::TracingSpec>,
}

/// What happened to one received revision.
enum Outcome {
    Applied,
    Refused(Vec<v1::ErrorDetail>),
}

/// The gateway's sync state across sessions.
struct Syncer<T> {
    target: T,
    opts: SyncOptions,
    /// What the control plane sent last.
    received: Received,
    /// The modules of the packages received.
    modules: modules::Modules,
    /// The revision the gateway serves (0: none).
    applied: u64,
    /// Whether `received` is what runs (false after a NACK).
    received_runs: bool,
    /// Whether what `received` held before its last delta is what runs: only then may the
    /// delta be applied as a change of it ([`Changed`]).
    base_runs: bool,
    /// The copy on disk of what runs.
    disk: state::Disk,
}

impl<T: Target> Syncer<T> {
    /// Validates and applies `self.received`.
    async fn apply_received(&mut self) -> Outcome {
        let t0 = std::time::Instant::now();
        // A change relative to what runs only if the config received before is what runs.
        let ran = std::mem::replace(&mut self.base_runs, false);
        self.received_runs = false;
        let modules = &self.modules;
        let (cfg, changed) = match self
            .received
            .to_config(&self.opts.listen, self.opts.tracing.as_ref(), |m| modules.resolve(m))
        {
            Ok((c, changed)) if ran => (c, changed),
            Ok((c, _)) => (c, Changed::Config),
            Err(errs) => {
                return Outcome::Refused(
                    errs.iter().map(|e| v1::ErrorDetail { path: e.path.clone(), message: e.message.clone() }).collect(),
                );
            }
        };
        let t1 = std::time::Instant::now();
        if let Err(errors) = self.target.apply(cfg, self.received.resources.revision, &changed).await {
            return Outcome::Refused(errors);
        }
        tracing::debug!(
            validate_us = (t1 - t0).as_micros() as u64,
            apply_us = t1.elapsed().as_micros() as u64,
            "timings of the applied revision"
        );
        self.applied = self.received.resources.revision;
        self.received_runs = true;
        let keep: std::collections::HashSet<&str> =
            self.received.packages().iter().map(|p| p.module.sha256.as_str()).collect();
        self.modules.retain(&keep);
        self.disk.save(&self.received);
        Outcome::Applied
    }

    fn applied_revision(&self) -> u64 {
        self.applied
    }

    fn descriptor(&self) -> v1::Register {
        let mut d = v1::Register {
            gateway_id: self.opts.gateway_id.clone(),
            labels: self.opts.labels.clone().into_iter().collect(),
            applied_revision: self.applied_revision(),
            listen: self.opts.listen.iter().map(|(n, a)| format!("{n}={a}")).collect(),
            admin: self.opts.admin.map(|a| a.to_string()).unwrap_or_default(),
            ..v1::Register::default()
        };
        self.target.describe(&mut d);
        d
    }
}

/// Runs the config source of this process's gateway until `stop` (see [`run_target`]).
pub async fn run(gw: Arc<Gateway>, opts: SyncOptions, stop: CancellationToken) {
    run_target(GatewayTarget::new(gw), opts, stop).await;
}

/// Runs the config source of `target` until `stop`: cold-starts from the persisted snapshot
/// if there is one, then keeps a stream to a control plane open, reconnecting as needed.
pub async fn run_target<T: Target>(target: T, opts: SyncOptions, stop: CancellationToken) {
    let (disk, saved) = state::Disk::open(&opts.state_dir);
    let mut s = Syncer {
        target,
        modules: modules::Modules::new(&opts.state_dir),
        opts,
        received: Received::default(),
        applied: 0,
        received_runs: false,
        base_runs: false,
        disk,
    };
    if let Some(saved) = saved {
        s.received = Received::new(saved);
        // The modules of its packages were kept beside it.
        for p in s.received.packages() {
            s.modules.has(&p.module.sha256);
        }
        match s.apply_received().await {
            Outcome::Applied => tracing::info!(
                revision = s.applied,
                dir = %s.opts.state_dir.display(),
                "serving the persisted snapshot until a control plane answers"
            ),
            Outcome::Refused(errs) => {
                tracing::warn!(errors = ?errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>(), "the persisted snapshot cannot be applied; waiting for a control plane");
                s.received = Received::default();
            }
        }
    }
    let mut backoff = Backoff::default();
    let mut next = 0usize;
    loop {
        let url = s.opts.control_planes[next % s.opts.control_planes.len()].clone();
        next += 1;
        let ended = session(&mut s, &url, &stop, &mut backoff).await;
        match ended {
            Ok(()) => {
                // What runs is what a restart without a control plane should serve.
                let _ = tokio::task::spawn_blocking(move || s.disk.finish()).await;
                return;
            }
            Err(e) => tracing::warn!(control_plane = %url, error = %e, "control-plane stream ended; reconnecting"),
        }
        let wait = backoff.next();
        tracing::debug!(?wait, "backing off before the next control plane");
        if stop.run_until_cancelled(tokio::time::sleep(wait)).await.is_none() {
            return;
        }
    }
}

/// Fetches each module the received packages name that this gateway lacks; a failure is
/// kept for the NACK that validation will then send.
async fn fetch_modules<T: Target>(
    s: &mut Syncer<T>,
    client: &mut v1::config_sync_client::ConfigSyncClient<tonic::transport::Channel>,
) {
    let wanted: Vec<String> = s.received.packages().iter().map(|p| p.module.sha256.clone()).collect();
    for sha256 in wanted {
        if s.modules.has(&sha256) {
            continue;
        }
        let req =
            authorized(&s.opts, v1::ModuleRequest { sha256: sha256.clone(), gateway_id: s.opts.gateway_id.clone() });
        let got = match req {
            Err(e) => Err(e.to_string()),
            Ok(req) => match client.get_module(req).await {
                Ok(rsp) => s.modules.insert(&sha256, rsp.into_inner().wasm),
                Err(status) => Err(status.message().to_owned()),
            },
        };
        match got {
            Ok(()) => tracing::info!(module = %sha256, "fetched a plugin module from the control plane"),
            Err(why) => {
                tracing::warn!(module = %sha256, error = %why, "cannot fetch a plugin module");
                s.modules.fetch_failed(&sha256, why);
            }
        }
    }
}

/// A call to the control plane, with the bearer token when there is one.
fn authorized<T>(opts: &SyncOptions, msg: T) -> Result<tonic::Request<T>, BoxError> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = &opts.token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse()?);
    }
    Ok(req)
}

/// Exponential backoff from 100 ms to 5 s with full jitter over the upper half.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let cap = (100u64 << self.attempt.min(6)).min(5_000);
        self.attempt += 1;
        Duration::from_millis(cap / 2 + fastrand::u64(0..=cap / 2))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One stream's life. `Ok` means stop was requested.
async fn session<T: Target>(
    s: &mut Syncer<T>,
    url: &str,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), BoxError> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let tls = s.opts.tls.clone().ok_or_else(|| BoxError::from("https:// needs a CA (--control-plane-ca)"))?;
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect().await?;
    let mut client = v1::config_sync_client::ConfigSyncClient::new(channel).max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel::<v1::ConfigRequest>(16);
    let send = |m: config_request::Msg| v1::ConfigRequest { msg: Some(m) };
    tx.send(send(config_request::Msg::Register(s.descriptor()))).await?;
    let request = authorized(&s.opts, ReceiverStream::new(rx))?;
    let mut inbound = client.sync_config(request).await?.into_inner();
    let mut heartbeat = tokio::time::interval(s.opts.heartbeat_interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = heartbeat.tick() => {
                let report = s.target.report().await;
                let hb = v1::Heartbeat { applied_revision: s.applied_revision(), report: Some(report) };
                tx.send(send(config_request::Msg::Heartbeat(hb))).await?;
            }
            m = inbound.message() => {
                let Some(m) = m? else { return Err("the control plane closed the stream".into()) };
                let revision = match m.msg {
                    Some(config_response::Msg::Registered(r)) => {
                        tracing::info!(control_plane = %r.control_plane, url, "registered with the control plane");
                        backoff.reset();
                        if r.heartbeat_interval_ms > 0 {
                            heartbeat = tokio::time::interval(Duration::from_millis(r.heartbeat_interval_ms));
                        }
                        continue;
                    }
                    Some(config_response::Msg::Rejected(r)) => {
                        let errs: Vec<String> = r.errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
                        return Err(format!("registration refused: {}", errs.join("; ")).into());
                    }
                    Some(config_response::Msg::Snapshot(snap)) => {
                        // From here `received` is not what runs until it is applied.
                        (s.received_runs, s.base_runs) = (false, false);
                        s.received = Received::new(Resources::from_snapshot(&snap)?);
                        if snap.revision == 0 {
                            // Nothing declared yet: stay unready rather than serve 404s.
                            tracing::info!("the control plane holds no config yet; waiting");
                            continue;
                        }
                        snap.revision
                    }
                    Some(config_response::Msg::Delta(d)) => {
                        s.base_runs = std::mem::replace(&mut s.received_runs, false);
                        s.received.apply_delta(&d)?;
                        d.revision
                    }
                    None => continue,
                };
                fetch_modules(s, &mut client).await;
                let reply = match s.apply_received().await {
                    Outcome::Applied => {
                        tracing::info!(revision, "applied revision from the control plane");
                        config_request::Msg::Ack(v1::Ack { revision })
                    }
                    Outcome::Refused(errors) => {
                        tracing::warn!(revision, serving = s.applied_revision(),
                            errors = ?errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>(),
                            "refused revision (NACK); the previous config keeps serving");
                        config_request::Msg::Nack(v1::Nack { revision, applied_revision: s.applied_revision(), errors })
                    }
                };
                tx.send(send(reply)).await?;
            }
        }
    }
}
