//! The gateway registry: who registered, what they can do, what they serve, whether they live.
//!
//! Owns: checking a gateway's capability descriptor, each gateway's applied revision, last
//! heartbeat, last NACK and runtime report, and the up/down verdict (a gateway silent for
//! longer than the heartbeat timeout is down). Wakes waiters whenever a gateway reports.
//! On a shared store the gateways of every control plane are listed too ([`shared`]).

mod shared;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use weir_proto::v1;

pub use shared::{Published, Record, SharedRecords};

/// A refused registration.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DescriptorError {
    /// Which field.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Checks a capability descriptor; every problem is reported.
pub fn check_descriptor(r: &v1::Register) -> Vec<DescriptorError> {
    let mut errs = Vec::new();
    let mut bad = |path: &str, message: String| errs.push(DescriptorError { path: path.into(), message });
    let id_ok = !r.gateway_id.is_empty()
        && r.gateway_id.len() <= 128
        && r.gateway_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !id_ok {
        bad(
            "gateway_id",
            format!("{:?} is not a valid id: use 1-128 letters, digits, '-', '_', '.', ':'", r.gateway_id),
        );
    }
    if !matches!(r.kind.as_str(), "" | "weir" | "nginx" | "haproxy") {
        bad("kind", format!("unknown gateway kind {:?}: use weir, nginx or haproxy", r.kind));
    }
    if r.version.is_empty() {
        bad("version", "give the gateway's software version".into());
    }
    for (i, p) in r.plugins.iter().enumerate() {
        if p.name.is_empty() {
            bad(&format!("plugins[{i}].name"), "empty plugin name".into());
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&p.config_schema) {
            bad(&format!("plugins[{i}].config_schema"), format!("not JSON: {e}"));
        }
    }
    errs
}

/// The last NACK a gateway sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NackRecord {
    /// The revision it refused.
    pub revision: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// `path: message` per error.
    pub errors: Vec<String>,
}

/// Runtime figures from the last heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Requests per second since the previous heartbeat.
    pub requests_per_second: f64,
    /// Share of 5xx responses, 0..1.
    pub error_rate: f64,
    /// p99 duration in milliseconds.
    pub p99_ms: f64,
    /// Requests served since start.
    pub requests_total: u64,
    /// Requests being served when the heartbeat was sent.
    pub in_flight: u64,
}

/// One gateway as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayView {
    /// `up` or `down`.
    pub status: &'static str,
    /// Milliseconds since its last heartbeat (or registration).
    pub last_heartbeat_ms_ago: u64,
    /// What the control plane it is connected to knows of it.
    #[serde(flatten)]
    pub gateway: Record,
}

#[derive(Debug)]
struct Entry {
    desc: v1::Register,
    connected: bool,
    /// Bumped on every (re)connection, so an old stream's goodbye does not mark a new one.
    session: u64,
    applied: u64,
    last_seen: Instant,
    /// `last_seen` on the wall clock (Unix milliseconds), which other control planes compare.
    seen_at_ms: u64,
    /// Changed since last shared with the other control planes.
    dirty: bool,
    last_nack: Option<NackRecord>,
    report: Report,
    down_logged: bool,
    /// Plugin modules it fetched (kept across its reconnections).
    modules_sent: u64,
}

/// A gateway whose stream closed is forgotten after this long without news.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// All gateways registered since start (those gone for [`FORGET_AFTER`] are forgotten).
#[derive(Debug)]
pub struct Registry {
    gateways: Mutex<BTreeMap<String, Entry>>,
    timeout: Duration,
    changed: Notify,
    sessions: std::sync::atomic::AtomicU64,
    /// This control plane's name in the records it shares (its gRPC address).
    node: OnceLock<String>,
    /// Every control plane's records, on a shared store.
    shared: Option<SharedRecords>,
    /// Gateways forgotten since last shared.
    forgotten: Mutex<Vec<String>>,
}

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    /// A registry that calls a gateway down after `timeout` without a heartbeat; on a shared
    /// store, `shared` follows the records of every control plane's gateways.
    pub fn new(timeout: Duration, shared: Option<SharedRecords>) -> Self {
        Self {
            gateways: Mutex::default(),
            timeout,
            changed: Notify::new(),
            sessions: Default::default(),
            node: OnceLock::new(),
            shared,
            forgotten: Mutex::default(),
        }
    }

    /// Names this control plane in the records it shares (once; later calls are ignored).
    pub fn set_node(&self, node: String) {
        let _ = self.node.set(node);
    }

    fn node(&self) -> &str {
        self.node.get().map_or("", String::as_str)
    }

    /// Records a (re)registered gateway; returns its session number.
    pub fn register(&self, desc: v1::Register) -> u64 {
        let session = self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let id = desc.gateway_id.clone();
        let applied = desc.applied_revision;
        let mut g = self.gateways.lock();
        let last_nack = g.get(&id).and_then(|e| e.last_nack.clone());
        let modules_sent = g.get(&id).map_or(0, |e| e.modules_sent);
        g.insert(
            id,
            Entry {
                desc,
                connected: true,
                session,
                applied,
                last_seen: Instant::now(),
                seen_at_ms: now_ms(),
                dirty: true,
                last_nack,
                report: Report::default(),
                down_logged: false,
                modules_sent,
            },
        );
        drop(g);
        self.changed.notify_waiters();
        session
    }

    fn with(&self, id: &str, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.gateways.lock().get_mut(id) {
            e.last_seen = Instant::now();
            e.seen_at_ms = now_ms();
            e.dirty = true;
            f(e);
        }
        self.changed.notify_waiters();
    }

    /// The gateway applied `revision`.
    pub fn ack(&self, id: &str, revision: u64) {
        self.with(id, |e| {
            e.applied = e.applied.max(revision);
            e.last_nack = e.last_nack.take().filter(|n| n.revision > revision);
        });
    }

    /// The gateway refused `revision` and serves `applied`.
    pub fn nack(&self, id: &str, n: &v1::Nack) {
        let errors = n.errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
        self.with(id, |e| {
            e.applied = n.applied_revision;
            e.last_nack = Some(NackRecord { revision: n.revision, at_ms: now_ms(), errors });
        });
    }

    /// The gateway fetched a plugin module.
    pub fn module_sent(&self, id: &str) {
        if let Some(e) = self.gateways.lock().get_mut(id) {
            e.modules_sent += 1;
            e.dirty = true;
        }
    }

    /// A heartbeat.
    pub fn heartbeat(&self, id: &str, h: &v1::Heartbeat) {
        self.with(id, |e| {
            e.down_logged = false;
            e.applied = h.applied_revision;
            if let Some(r) = &h.report {
                e.report = Report {
                    requests_per_second: r.requests_per_second,
                    error_rate: r.error_rate,
                    p99_ms: r.p99_ms,
                    requests_total: r.requests_total,
                    in_flight: r.in_flight,
                };
            }
        });
    }

    /// The stream of session `session` ended.
    pub fn disconnected(&self, id: &str, session: u64) {
        if let Some(e) = self.gateways.lock().get_mut(id).filter(|e| e.session == session) {
            e.connected = false;
            e.dirty = true;
        }
        self.changed.notify_waiters();
    }

    fn is_up(&self, e: &Entry, now: Instant) -> bool {
        now.duration_since(e.last_seen) <= self.timeout
    }

    /// Every gateway, by id: this control plane's, and on a shared store every other's (a
    /// gateway known to several is shown as the one it is connected to, or last heard from).
    pub fn list(&self) -> Vec<GatewayView> {
        let now = Instant::now();
        let mut all: BTreeMap<String, (Record, u64)> = self
            .gateways
            .lock()
            .iter()
            .map(|(id, e)| (id.clone(), (self.record(id, e), now.duration_since(e.last_seen).as_millis() as u64)))
            .collect();
        if let Some(shared) = &self.shared {
            shared::merge(&mut all, &shared.borrow(), now_ms());
        }
        all.into_values()
            .map(|(gateway, ago)| GatewayView {
                status: if Duration::from_millis(ago) <= self.timeout { "up" } else { "down" },
                last_heartbeat_ms_ago: ago,
                gateway,
            })
            .collect()
    }

    fn record(&self, id: &str, e: &Entry) -> Record {
        Record {
            id: id.to_owned(),
            control_plane: self.node().to_owned(),
            connected: e.connected,
            kind: if e.desc.kind.is_empty() { "weir".into() } else { e.desc.kind.clone() },
            version: e.desc.version.clone(),
            labels: e.desc.labels.clone().into_iter().collect(),
            listen: e.desc.listen.clone(),
            admin: Some(e.desc.admin.clone()).filter(|a| !a.is_empty()),
            plugins: e.desc.plugins.iter().map(|p| p.name.clone()).collect(),
            protocols: e.desc.protocols.clone(),
            features: e.desc.features.clone(),
            applied_revision: e.applied,
            seen_at_ms: e.seen_at_ms,
            last_nack: e.last_nack.clone(),
            report: e.report.clone(),
            modules_sent: e.modules_sent,
        }
    }

    /// What changed since last called, to share with the other control planes: the records
    /// of gateways that reported or disconnected, and the ids of those forgotten.
    pub fn take_changes(&self) -> Published {
        if self.shared.is_none() {
            return Published::default();
        }
        let mut records = Vec::new();
        for (id, e) in self.gateways.lock().iter_mut().filter(|(_, e)| e.dirty) {
            e.dirty = false;
            records.push(self.record(id, e));
        }
        Published { records, forgotten: std::mem::take(&mut *self.forgotten.lock()) }
    }

    /// The gateways an outer load balancer may send traffic to: up, connected, and serving a
    /// revision. Each with its listeners by name, its admin address and labels.
    pub fn ready(&self) -> Vec<serde_json::Value> {
        let listeners = |g: &Record| -> BTreeMap<String, String> {
            g.listen.iter().filter_map(|l| l.split_once('=')).map(|(n, a)| (n.to_owned(), a.to_owned())).collect()
        };
        self.list()
            .into_iter()
            .filter(|g| g.status == "up" && g.gateway.connected && g.gateway.applied_revision > 0)
            .map(|GatewayView { gateway: g, .. }| {
                serde_json::json!({
                    "id": g.id, "listen": listeners(&g), "admin": g.admin,
                    "applied_revision": g.applied_revision, "labels": g.labels,
                })
            })
            .collect()
    }

    /// Prometheus HTTP service discovery (`http_sd_configs`): a target group per gateway that is
    /// up and serves an admin address, labelled `__meta_weir_*` (its id, version, applied
    /// revision, and each of its labels as `__meta_weir_label_NAME`).
    pub fn prometheus_targets(&self) -> Vec<serde_json::Value> {
        self.list()
            .into_iter()
            .filter(|g| g.status == "up")
            .filter_map(|GatewayView { gateway: g, .. }| {
                let admin = g.admin.clone()?;
                let mut labels = BTreeMap::from([
                    ("__meta_weir_gateway_id".to_owned(), g.id.clone()),
                    ("__meta_weir_version".to_owned(), g.version.clone()),
                    ("__meta_weir_applied_revision".to_owned(), g.applied_revision.to_string()),
                ]);
                for (k, v) in &g.labels {
                    labels.insert(format!("__meta_weir_label_{}", label_name(k)), v.clone());
                }
                Some(serde_json::json!({"targets": [admin], "labels": labels}))
            })
            .collect()
    }

    /// Takes back changes that could not be shared, to share them next time.
    pub fn retry(&self, p: Published) {
        let mut g = self.gateways.lock();
        for r in &p.records {
            if let Some(e) = g.get_mut(&r.id) {
                e.dirty = true;
            }
        }
        self.forgotten.lock().extend(p.forgotten.into_iter().filter(|id| !g.contains_key(id)));
    }

    /// Logs each gateway the first time it is seen down, and forgets gateways gone (stream
    /// closed) for longer than [`FORGET_AFTER`]; call periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut g = self.gateways.lock();
        for (id, e) in g.iter_mut() {
            if !e.down_logged && !self.is_up(e, now) {
                e.down_logged = true;
                tracing::warn!(gateway = %id, silent_for = ?now.duration_since(e.last_seen), "gateway down: no heartbeat within the timeout");
            }
        }
        let mut forgotten = self.forgotten.lock();
        g.retain(|id, e| {
            let keep = e.connected || now.duration_since(e.last_seen) < FORGET_AFTER;
            if !keep {
                tracing::info!(gateway = %id, "forgetting a gateway gone for good");
                if self.shared.is_some() {
                    forgotten.push(id.clone());
                }
            }
            keep
        });
    }

    /// Waits until every gateway that is up and connected (to any control plane, on a shared
    /// store) has applied or refused `revision`, or `within` passes. Returns the ids still
    /// pending.
    pub async fn wait_applied(&self, revision: u64, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut shared = self.shared.clone();
        loop {
            let notified = self.changed.notified();
            let pending: Vec<String> = self
                .list()
                .into_iter()
                .filter(|g| g.gateway.connected && g.status == "up")
                .filter(|g| {
                    let (applied, nack) = (g.gateway.applied_revision, g.gateway.last_nack.as_ref());
                    applied < revision && nack.is_none_or(|n| n.revision < revision)
                })
                .map(|g| g.gateway.id)
                .collect();
            if pending.is_empty() || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            let others = async {
                match shared.as_mut() {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            let _ = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    () = notified => {}
                    () = others => {}
                }
            })
            .await;
        }
    }
}

/// `name` as a Prometheus label name: letters, digits and `_` (others become `_`).
fn label_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}
