//! The gateway registry: who registered, what they can do, what they serve, whether they live.
//!
//! Owns: checking a gateway's capability descriptor, each gateway's applied revision, last
//! heartbeat, last NACK and runtime report, and the up/down verdict (a gateway silent for
//! longer than the heartbeat timeout is down). Wakes waiters whenever a gateway reports.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;
use weir_proto::v1;

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
#[derive(Clone, Debug, Serialize)]
pub struct NackRecord {
    /// The revision it refused.
    pub revision: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// `path: message` per error.
    pub errors: Vec<String>,
}

/// Runtime figures from the last heartbeat.
#[derive(Clone, Debug, Default, Serialize)]
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
    /// Id from its descriptor.
    pub id: String,
    /// `up` or `down`.
    pub status: &'static str,
    /// Whether its stream is open now.
    pub connected: bool,
    /// Software version.
    pub version: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Where it listens.
    pub listen: Vec<String>,
    /// Its admin address (`/metrics`), if it serves one.
    pub admin: Option<String>,
    /// Plugins it runs.
    pub plugins: Vec<String>,
    /// Protocol adapters.
    pub protocols: Vec<String>,
    /// The revision it serves.
    pub applied_revision: u64,
    /// Milliseconds since its last heartbeat (or registration).
    pub last_heartbeat_ms_ago: u64,
    /// Its last NACK, if any since it last applied a revision.
    pub last_nack: Option<NackRecord>,
    /// Runtime figures.
    pub report: Report,
    /// Plugin modules it has fetched from this control plane (each one it lacked, once).
    pub modules_sent: u64,
}

#[derive(Debug)]
struct Entry {
    desc: v1::Register,
    connected: bool,
    /// Bumped on every (re)connection, so an old stream's goodbye does not mark a new one.
    session: u64,
    applied: u64,
    last_seen: Instant,
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
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    /// A registry that calls a gateway down after `timeout` without a heartbeat.
    pub fn new(timeout: Duration) -> Self {
        Self { gateways: Mutex::default(), timeout, changed: Notify::new(), sessions: Default::default() }
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
        }
        self.changed.notify_waiters();
    }

    fn is_up(&self, e: &Entry, now: Instant) -> bool {
        now.duration_since(e.last_seen) <= self.timeout
    }

    /// Every gateway, by id.
    pub fn list(&self) -> Vec<GatewayView> {
        let now = Instant::now();
        self.gateways
            .lock()
            .iter()
            .map(|(id, e)| GatewayView {
                id: id.clone(),
                status: if self.is_up(e, now) { "up" } else { "down" },
                connected: e.connected,
                version: e.desc.version.clone(),
                labels: e.desc.labels.clone().into_iter().collect(),
                listen: e.desc.listen.clone(),
                admin: Some(e.desc.admin.clone()).filter(|a| !a.is_empty()),
                plugins: e.desc.plugins.iter().map(|p| p.name.clone()).collect(),
                protocols: e.desc.protocols.clone(),
                applied_revision: e.applied,
                last_heartbeat_ms_ago: now.duration_since(e.last_seen).as_millis() as u64,
                last_nack: e.last_nack.clone(),
                report: e.report.clone(),
                modules_sent: e.modules_sent,
            })
            .collect()
    }

    /// The gateways an outer load balancer may send traffic to: up, connected, and serving a
    /// revision. Each with its listeners by name, its admin address and labels.
    pub fn ready(&self) -> Vec<serde_json::Value> {
        let listeners = |g: &GatewayView| -> BTreeMap<String, String> {
            g.listen.iter().filter_map(|l| l.split_once('=')).map(|(n, a)| (n.to_owned(), a.to_owned())).collect()
        };
        self.list()
            .into_iter()
            .filter(|g| g.status == "up" && g.connected && g.applied_revision > 0)
            .map(|g| {
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
            .filter_map(|g| {
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
        g.retain(|id, e| {
            let keep = e.connected || now.duration_since(e.last_seen) < FORGET_AFTER;
            if !keep {
                tracing::info!(gateway = %id, "forgetting a gateway gone for good");
            }
            keep
        });
    }

    /// Waits until every gateway that is up has applied or refused `revision`, or `within`
    /// passes. Returns the ids still pending.
    pub async fn wait_applied(&self, revision: u64, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            let now = Instant::now();
            let pending: Vec<String> = self
                .gateways
                .lock()
                .iter()
                .filter(|(_, e)| e.connected && self.is_up(e, now))
                .filter(|(_, e)| e.applied < revision && e.last_nack.as_ref().is_none_or(|n| n.revision < revision))
                .map(|(id, _)| id.clone())
                .collect();
            if pending.is_empty() || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

/// `name` as a Prometheus label name: letters, digits and `_` (others become `_`).
fn label_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}
