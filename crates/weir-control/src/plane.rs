//! The control plane's core: validated changes to the store, and news of each revision.
//!
//! Owns: turning edits into a revision (validate the whole resulting config with the same
//! `weir-config` code a gateway runs, then commit, then announce), dry runs, and rollback
//! (the resources of an earlier revision, applied as a new revision).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use weir_config::ConfigErrors;
use weir_config::assembly::{Assembly, Typed, Undo, parse_resource_or_rest};
use weir_config::package::ModuleError;
use weir_config::resources::Kind;

use crate::forecast::{ForecastSettings, Forecaster, GroupForecast, Reading};
use crate::leases::Leases;
use crate::registry::Registry;
use crate::store::{CaughtUp, Change, Key, Op, State, Store, StoreError};
use weir_config::spec::RegistrationSpec;

/// Why a change was not made. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// The resulting config would be invalid; every error with its path.
    #[error("invalid config ({} errors)", .0.len())]
    Invalid(ConfigErrors),
    /// A request that names something wrong (kind, name mismatch, revision).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing by that name.
    #[error("{0}")]
    NotFound(String),
    /// Not now: something in progress (a rollout) must end first.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One resource's fate in an apply.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// `created`, `configured`, `unchanged` or `deleted`.
    pub result: Op,
    /// The fields before (dry runs only, for diffs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The fields after (dry runs only, for diffs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// The result of an apply.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    /// The revision now current (unchanged when nothing changed or on a dry run).
    pub revision: u64,
    /// Whether a new revision was made.
    pub changed: bool,
    /// Whether this was only a check.
    pub dry_run: bool,
    /// Per resource, in the order given.
    pub results: Vec<Outcome>,
    /// Gateways that had not applied the revision when the wait ended (with `wait`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_gateways: Option<Vec<String>>,
}

/// The store and the typed config it holds, changed together under one lock.
#[derive(Debug)]
struct Inner {
    store: Store,
    /// The current config, typed, patched per change (validating one change among ten
    /// thousand resources re-checks only what changed against its schema).
    assembly: Assembly,
}

/// The control plane.
#[derive(Debug)]
pub struct ControlPlane {
    inner: RwLock<Inner>,
    /// Gateways.
    pub registry: Registry,
    /// Deadlines of registered endpoints (a store only this process uses).
    pub leases: Leases,
    /// On a shared store: since when this control plane has held the election for singleton
    /// jobs.
    elected_at: parking_lot::Mutex<Option<std::time::Instant>>,
    revision: watch::Sender<u64>,
    /// Revisions the history keeps (see [`Self::trim_history`]).
    history_limit: std::sync::atomic::AtomicU64,
    /// Each group's load forecast and desired replicas.
    forecast: parking_lot::Mutex<Forecaster>,
    /// The rollout in progress, or the last one (see [`crate::rollout`]).
    pub(crate) rollout: parking_lot::Mutex<Option<crate::rollout::Rollout>>,
    /// Bumped when a rollout starts or ends: the streams recompute what each gateway gets.
    pub(crate) rollout_changed: watch::Sender<u64>,
    /// Rollout transitions (start, verdict, promote, abort) one at a time.
    pub(crate) rollout_ops: tokio::sync::Mutex<()>,
}

/// The most revisions one trim folds (the rest wait for the next round).
const TRIM_AT_ONCE: u64 = 100;

/// Revisions the history keeps unless told otherwise (`--history-limit`).
pub const DEFAULT_HISTORY_LIMIT: u64 = 1000;

/// What a registration did.
#[derive(Clone, Debug, Serialize)]
pub struct Registered {
    /// The registration's name.
    pub name: String,
    /// `created`, `configured` (weight or ttl changed) or `unchanged` (renewed).
    pub result: Op,
    /// The revision now current.
    pub revision: u64,
    /// Milliseconds until it is dropped unless renewed.
    pub ttl_ms: u64,
}

impl ControlPlane {
    /// A control plane over `store`; gateways are down after `heartbeat_timeout` of silence.
    pub fn new(store: Store, heartbeat_timeout: Duration) -> Arc<Self> {
        let rev = store.state().revision;
        let assembly = assembled(store.state());
        let shared = store.shared_gateways();
        let plane = Arc::new(Self {
            inner: RwLock::new(Inner { store, assembly }),
            registry: Registry::new(heartbeat_timeout, shared),
            leases: Leases::default(),
            elected_at: parking_lot::Mutex::new(None),
            revision: watch::Sender::new(rev),
            history_limit: DEFAULT_HISTORY_LIMIT.into(),
            forecast: parking_lot::Mutex::new(Forecaster::new(ForecastSettings::default())),
            rollout: parking_lot::Mutex::new(None),
            rollout_changed: watch::Sender::new(0),
            rollout_ops: tokio::sync::Mutex::new(()),
        });
        plane.load_rollout();
        plane
    }

    /// Registers an endpoint, or renews its registration: a new or changed one is a revision
    /// (validated like any change: its upstream must take registrations); an unchanged one only
    /// moves its deadline, so heartbeats cost no revision.
    pub async fn register(self: &Arc<Self>, r: RegistrationSpec) -> Result<Registered, PlaneError> {
        let key = Key::new(Kind::Registration, r.name.clone());
        let body = serde_json::to_value(&r).map_err(|e| PlaneError::BadRequest(e.to_string()))?;
        // Renewed before it is stored, so the elected expiry never finds it stored and unleased.
        self.renew_shared(&r).await?;
        let same = self.read(|s| s.resources.get(&key).is_some_and(|st| st.body == body));
        let (result, revision) = if same {
            (Op::Unchanged, self.read(|s| s.revision))
        } else {
            let applied = self.apply(vec![(key, Some(body))], format!("register {}", r.name), None).await?;
            (applied.results.first().map_or(Op::Unchanged, |o| o.result), applied.revision)
        };
        self.leases.renew(&r.name, r.ttl.get(), std::time::Instant::now());
        Ok(Registered { name: r.name, result, revision, ttl_ms: r.ttl.get().as_millis() as u64 })
    }

    /// Renews `r` where every control plane sees it (a no-op on a store only this one uses).
    async fn renew_shared(self: &Arc<Self>, r: &RegistrationSpec) -> Result<(), PlaneError> {
        let (this, name, ttl) = (self.clone(), r.name.clone(), r.ttl.get());
        tokio::task::spawn_blocking(move || this.inner.read().store.renew_registration(&name, ttl))
            .await
            .map_err(StoreError::from_msg)?
            .map_err(PlaneError::Store)
    }

    /// Deletes, as one revision, the registrations not renewed within their ttl. On a shared
    /// store (etcd) only the elected control plane does, from the leases there.
    pub async fn expire_registrations(self: &Arc<Self>) {
        let now = std::time::Instant::now();
        let leader = self.inner.read().store.leader();
        let expired = match leader {
            // From the typed registrations, under the read lock: no copy of every name.
            None => {
                let inner = self.inner.read();
                let live = inner.assembly.registrations().iter().map(|r| (r.name.as_str(), r.ttl.get()));
                self.leases.expired(live, now, true)
            }
            Some(l) if !*l.borrow() => {
                *self.elected_at.lock() = None;
                return;
            }
            Some(_) => {
                let live: Vec<(String, Duration)> =
                    self.inner.read().assembly.registrations().iter().map(|r| (r.name.clone(), r.ttl.get())).collect();
                self.expired_in_store(&live, now).await
            }
        };
        if expired.is_empty() {
            return;
        }
        for n in &expired {
            tracing::info!(registration = %n, "registration not renewed within its ttl; removing it");
        }
        let edits = expired.iter().map(|n| (Key::new(Kind::Registration, n.clone()), None)).collect();
        match self.apply(edits, "registrations expired".into(), None).await {
            Ok(_) => self.leases.forget(&expired),
            Err(e) => tracing::warn!(error = %e, "cannot remove expired registrations; trying again"),
        }
    }

    /// Keeps the history to the last `--history-limit` revisions, folding older ones into the
    /// base. On a shared store only the elected control plane trims.
    pub async fn trim_history(self: &Arc<Self>) {
        let limit = self.history_limit.load(std::sync::atomic::Ordering::Relaxed);
        // Never past a baking rollout's stable revision: its gateways are held there.
        let stable = self.rollout().filter(|r| r.phase == crate::rollout::Phase::Baking).map(|r| r.stable);
        let (due, leader, keep) = {
            let inner = self.inner.read();
            let st = inner.store.state();
            let keep = stable.map_or(limit, |s| limit.max(st.revision.saturating_sub(s)));
            (st.revision.saturating_sub(st.history_base) > keep, inner.store.leader(), keep)
        };
        if !due || leader.is_some_and(|l| !*l.borrow()) {
            return;
        }
        let this = self.clone();
        let done = tokio::task::spawn_blocking(move || this.inner.write().store.trim(keep, TRIM_AT_ONCE)).await;
        match done.map_err(StoreError::from_msg).and_then(|r| r) {
            Ok(base) => tracing::debug!(base, "trimmed the history"),
            Err(e) => tracing::warn!(error = %e, "cannot trim the history; trying again"),
        }
    }

    /// Keeps at most `limit` revisions in the history (at least 1).
    pub fn set_history_limit(&self, limit: u64) {
        self.history_limit.store(limit.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Forecasts with `settings` from now on (the history learned so far is dropped).
    pub fn set_forecast(&self, settings: ForecastSettings) {
        *self.forecast.lock() = Forecaster::new(settings);
    }

    /// The forecast's sampling step.
    pub fn forecast_step(&self) -> Duration {
        self.forecast.lock().settings().step
    }

    /// Takes the fleet's current reports into the forecast (at `now_ms`, Unix milliseconds).
    pub fn forecast_tick(&self, now_ms: u64) {
        let gateways = self.registry.list();
        let readings = gateways.iter().map(|g| Reading {
            labels: &g.gateway.labels,
            up: g.status == "up",
            requests_per_second: g.gateway.report.requests_per_second,
        });
        self.forecast.lock().tick(now_ms, readings);
    }

    /// Every group's forecast and desired replicas.
    pub fn forecasts(&self) -> Vec<GroupForecast> {
        self.forecast.lock().groups()
    }

    /// Shares with the other control planes (on a shared store) what changed about this one's
    /// gateways; what cannot be written now is tried again next time.
    pub async fn share_gateways(self: &Arc<Self>) {
        let changes = self.registry.take_changes();
        if changes.is_empty() {
            return;
        }
        let writes = changes
            .records
            .iter()
            .filter_map(|r| Some((r.id.clone(), serde_json::to_vec(r).ok()?, r.connected)))
            .collect();
        let (this, forgotten) = (self.clone(), changes.forgotten.clone());
        let done = tokio::task::spawn_blocking(move || this.inner.read().store.share_gateways(writes, forgotten)).await;
        if let Err(e) = done.map_err(StoreError::from_msg).and_then(|r| r) {
            tracing::warn!(error = %e, "cannot share this control plane's gateways with the others; trying again");
            self.registry.retry(changes);
        }
    }

    /// Of `live`, those whose lease in the shared store is gone. One stored while no control
    /// plane was up to renew it gets one ttl from this one's election.
    async fn expired_in_store(self: &Arc<Self>, live: &[(String, Duration)], now: std::time::Instant) -> Vec<String> {
        let elected = *self.elected_at.lock().get_or_insert(now);
        let this = self.clone();
        let read = tokio::task::spawn_blocking(move || this.inner.read().store.leased_registrations()).await;
        let leased = match read.map_err(StoreError::from_msg).and_then(|r| r) {
            Ok(Some(l)) => l,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the registrations' leases; trying again");
                return Vec::new();
            }
        };
        live.iter().filter(|(n, ttl)| !leased.contains(n) && now >= elected + *ttl).map(|(n, _)| n.clone()).collect()
    }

    /// Reads the current state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(self.inner.read().store.state())
    }

    /// Runs `f` on the store.
    pub(crate) fn with_store<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.inner.read().store)
    }

    /// The resources as they were at `revision` (for gateways a rollout holds there).
    pub async fn state_at(self: &Arc<Self>, revision: u64) -> Result<State, PlaneError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.with_store(|s| s.state_at(revision)))
            .await
            .map_err(|e| PlaneError::Store(StoreError::from_msg(e)))?
            .map_err(PlaneError::Store)
    }

    /// Wakes on every new revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Follows commits that other control planes make to a shared store (etcd): each is
    /// taken into this one's state and pushed to its gateways. Returns at once for a store
    /// only this process writes.
    pub async fn follow(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let Some(mut latest) = self.inner.read().store.followed() else { return };
        loop {
            tokio::select! {
                changed = latest.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
            // Until it worked: a store that is briefly unreachable must not leave this control
            // plane (and its gateways) behind until the next commit.
            let mut wait = Duration::from_millis(200);
            loop {
                let newest = *latest.borrow_and_update();
                if newest <= self.inner.read().store.state().revision {
                    break;
                }
                let this = self.clone();
                match tokio::task::spawn_blocking(move || this.catch_up()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, retry_in = ?wait, "cannot read the shared store's new revisions")
                    }
                    Err(e) => tracing::error!(error = %e, "catching up failed"),
                }
                if stop.run_until_cancelled(tokio::time::sleep(wait)).await.is_none() {
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Takes the store's newer revisions into the state and the typed config, and announces
    /// the last one.
    fn catch_up(&self) -> Result<(), StoreError> {
        let mut guard = self.inner.write();
        self.take_newer(&mut guard)
    }

    fn take_newer(&self, inner: &mut Inner) -> Result<(), StoreError> {
        let revs = match inner.store.catch_up()? {
            CaughtUp::Revisions(revs) => revs,
            CaughtUp::Reloaded(revision) => {
                inner.assembly = assembled(inner.store.state());
                self.take_stored_rollout(&inner.store.doc(crate::rollout::DOC));
                tracing::warn!(
                    revision,
                    "revisions this control plane had not seen were trimmed from the history; read the whole state again"
                );
                self.revision.send_replace(revision);
                return Ok(());
            }
        };
        for rev in &revs {
            for c in &rev.changes {
                let order = c.after.as_ref().map_or(0, |s| s.order);
                inner.assembly.set(c.kind, &c.name, order, c.after.as_ref().and_then(typed_or_skip));
            }
        }
        if let Some(last) = revs.last() {
            tracing::info!(revision = last.revision, cause = %last.cause, "took a revision committed by another control plane");
            // A staged revision holds gateways here too: read the rollout before announcing it.
            if revs.iter().any(|r| r.cause == crate::rollout::STAGED_CAUSE || r.cause.starts_with("rollback")) {
                self.take_stored_rollout(&inner.store.doc(crate::rollout::DOC));
            }
            self.revision.send_replace(last.revision);
        }
        Ok(())
    }

    /// The history, newest first. Off the async threads: a shared store answers over the
    /// network.
    pub async fn history(self: &Arc<Self>, limit: usize) -> Result<Vec<crate::store::Revision>, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.inner.read().store.history(limit))
            .await
            .map_err(StoreError::from_msg)?
    }

    /// Applies `edits` (a `None` body deletes) as one revision, after validating the whole
    /// config they lead to. With `dry_run`, only reports what would change.
    pub async fn apply(
        self: &Arc<Self>,
        edits: Vec<(Key, Option<Value>)>,
        cause: String,
        dry_run: Option<DryRun>,
    ) -> Result<Applied, PlaneError> {
        for (Key { kind, name }, body) in &edits {
            if let Some(b) = body {
                check_body(*kind, name, b)?;
            }
        }
        let this = self.clone();
        // Validation and redb commits (fsync) take milliseconds; keep them off the async threads.
        let applied = tokio::task::spawn_blocking(move || this.apply_blocking(&edits, &cause, dry_run.as_ref()))
            .await
            .map_err(|e| PlaneError::Store(StoreError::from_msg(e)))??;
        Ok(applied)
    }

    fn apply_blocking(
        &self,
        edits: &[(Key, Option<Value>)],
        cause: &str,
        dry_run: Option<&DryRun>,
    ) -> Result<Applied, PlaneError> {
        let mut guard = self.inner.write();
        // A shared store may have moved on (another control plane committed): start from its
        // latest revision, and if one still slips in between, catch up and try again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.take_newer(&mut guard)?;
            match self.apply_once(&mut guard, edits, cause, dry_run) {
                Err(PlaneError::Store(e)) if e.is_conflict() && attempts < 3 => {
                    tracing::debug!(error = %e, "lost a commit race; catching up and trying again");
                }
                other => return other,
            }
        }
    }

    fn apply_once(
        &self,
        inner: &mut Inner,
        edits: &[(Key, Option<Value>)],
        cause: &str,
        dry: Option<&DryRun>,
    ) -> Result<Applied, PlaneError> {
        let dry_run = dry.is_some();
        let pending: &[String] = dry.map_or(&[], |d| &d.pending_modules);
        let t0 = std::time::Instant::now();
        let state = inner.store.state();
        let plan = state.plan(edits, state.revision + 1);
        let mut undo = Undo::default();
        let store = &inner.store;
        let checked = match patch(&mut inner.assembly, &mut undo, &plan) {
            Ok(()) => inner.assembly.validate_with(|m| stored_module(store, m, pending)).map(drop),
            // Every error in one pass: the cross-field ones of the rest too, when it reads.
            Err((schema, true)) => match inner.assembly.validate_with(|m| stored_module(store, m, pending)) {
                Ok(_) => Err(schema),
                Err(more) => Err(weir_config::merge_errors(schema, more)),
            },
            Err((schema, false)) => Err(schema),
        };
        tracing::debug!(validate_us = t0.elapsed().as_micros() as u64, edits = edits.len(), "validated");
        if let Err(errs) = checked {
            inner.assembly.undo(undo);
            return Err(PlaneError::Invalid(errs));
        }
        let results = plan
            .iter()
            .map(|c| Outcome {
                kind: c.kind.to_string(),
                name: c.name.clone(),
                result: c.op,
                before: dry_run
                    .then(|| state.resources.get(&Key::new(c.kind, c.name.clone())).map(|s| s.body.clone()))
                    .flatten(),
                after: dry_run.then(|| c.after.as_ref().map(|s| s.body.clone())).flatten(),
            })
            .collect();
        let revision = state.revision;
        if dry_run {
            inner.assembly.undo(undo);
            return Ok(Applied { revision, changed: false, dry_run, results, pending_gateways: None });
        }
        let committed = match inner.store.commit(plan, cause) {
            Ok(c) => c,
            Err(e) => {
                inner.assembly.undo(undo);
                return Err(e.into());
            }
        };
        // Announced under the lock, so revisions are announced in order and a caller that
        // goes away mid-apply cannot leave a committed revision unannounced.
        if let Some(rev) = committed {
            self.revision.send_replace(rev);
        }
        Ok(Applied {
            revision: committed.unwrap_or(revision),
            changed: committed.is_some(),
            dry_run,
            results,
            pending_gateways: None,
        })
    }

    /// Stores a plugin module (off the async threads); returns its sha256 and whether it was
    /// new. A `Package` resource may then name it.
    pub async fn put_module(self: &Arc<Self>, bytes: Vec<u8>) -> Result<(String, bool), StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.inner.read().store.put_module(&bytes))
            .await
            .map_err(StoreError::from_msg)?
    }

    /// The module with this sha256, if stored.
    pub async fn module(self: &Arc<Self>, sha256: String) -> Result<Option<Arc<[u8]>>, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.inner.read().store.module(&sha256))
            .await
            .map_err(StoreError::from_msg)?
    }

    /// Makes the resources what they were right after revision `to`, as a new revision.
    pub async fn rollback(self: &Arc<Self>, to: u64, dry_run: bool) -> Result<Applied, PlaneError> {
        let this = self.clone();
        let edits = tokio::task::spawn_blocking(move || this.rollback_edits(to))
            .await
            .map_err(|e| PlaneError::Store(StoreError::from_msg(e)))??;
        self.apply(edits, format!("rollback to {to}"), dry_run.then(DryRun::default)).await
    }

    /// The edits that turn the latest state (others' commits included) into the one at `to`.
    fn rollback_edits(&self, to: u64) -> Result<Vec<(Key, Option<Value>)>, PlaneError> {
        let mut guard = self.inner.write();
        self.take_newer(&mut guard)?;
        let store = &guard.store;
        let current = store.state();
        if to == 0 || to > current.revision {
            return Err(PlaneError::BadRequest(format!(
                "no revision {to}: revisions run from 1 to {} (`weir ctl history` lists them)",
                current.revision
            )));
        }
        let old = store.state_at(to).map_err(|e| {
            if e.is_trimmed() {
                PlaneError::BadRequest(format!("cannot roll back: {e}; `weir ctl history` lists what is kept"))
            } else {
                PlaneError::Store(e)
            }
        })?;
        // Registrations are the services' own, not config: a rollback leaves them as they are.
        let config = |k: &Key| k.kind != Kind::Registration;
        let mut edits: Vec<(Key, Option<Value>)> = current
            .resources
            .keys()
            .filter(|k| config(k) && !old.resources.contains_key(*k))
            .map(|k| (k.clone(), None))
            .collect();
        edits.extend(
            old.ordered()
                .into_iter()
                .filter(|s| s.kind != Kind::Registration)
                .map(|s| (Key::new(s.kind, s.name.clone()), Some(s.body.clone()))),
        );
        Ok(edits)
    }
}

/// The bytes of a module a `Package` names, checked against its declared size. A dry run's
/// `pending` modules (to be uploaded before the real apply) pass with no bytes: nothing here
/// reads them, and the gateways compile them.
fn stored_module(
    store: &Store,
    m: &weir_config::package::ModuleRef,
    pending: &[String],
) -> Result<Arc<[u8]>, ModuleError> {
    match store.module(&m.sha256) {
        Ok(None) if pending.contains(&m.sha256) => Ok(Arc::from(&[][..])),
        Ok(Some(bytes)) => ModuleError::check_size(m, bytes.len()).map(|()| bytes),
        Ok(None) => Err(ModuleError::Missing {
            sha256: m.sha256.clone(),
            hint: "upload the package with `weir ctl apply -f DIR` (or PUT /api/v1/modules/SHA256)",
        }),
        Err(e) => Err(ModuleError::Unavailable { sha256: m.sha256.clone(), reason: e.to_string() }),
    }
}

/// What a dry run may assume.
#[derive(Clone, Debug, Default)]
pub struct DryRun {
    /// Modules the caller has checked and will upload before applying for real (by sha256):
    /// a `Package` naming one is checked as if it were stored, and nothing is uploaded.
    pub pending_modules: Vec<String>,
}

/// A body must be a mapping whose `name` (if given) is the resource's name.
fn check_body(kind: Kind, name: &str, body: &Value) -> Result<(), PlaneError> {
    let Some(obj) = body.as_object() else {
        return Err(PlaneError::BadRequest(format!("{kind}/{name}: the body must be a JSON object")));
    };
    match obj.get("name").and_then(Value::as_str) {
        Some(n) if n == name => Ok(()),
        Some(n) => Err(PlaneError::BadRequest(format!("{kind}/{name}: the body names {n:?}; names must match"))),
        None => Err(PlaneError::BadRequest(format!("{kind}/{name}: the body needs `name: {name}`"))),
    }
}

/// The typed config of every stored resource (those that no longer parse are skipped).
fn assembled(state: &State) -> Assembly {
    Assembly::from_typed(state.ordered().into_iter().filter_map(|s| Some((s.order, typed_or_skip(s)?))))
}

/// A stored resource, typed; one that no longer parses (stored by another version, say) is
/// logged and left out rather than stopping the control plane.
fn typed_or_skip(s: &crate::store::Stored) -> Option<Typed> {
    parse_stored(s.kind, &s.name, &s.body)
        .map_err(|e| {
            tracing::error!(resource = %format!("{}/{}", s.kind, s.name), errors = ?e, "a stored resource does not parse; leaving it out");
        })
        .ok()
}

/// Parses a stored resource. A `Listener` may leave out `address`: each gateway listens where
/// its own `--listen` says, so here it stands for "any port" (`0.0.0.0:0`, which never
/// conflicts with another listener).
fn parse_stored(kind: Kind, name: &str, body: &Value) -> Result<Typed, (ConfigErrors, Option<Box<Typed>>)> {
    if kind == Kind::Listener && body.get("address").is_none() && body.is_object() {
        let mut body = body.clone();
        body["address"] = Value::String("0.0.0.0:0".into());
        return parse_resource_or_rest(kind, name, &body);
    }
    parse_resource_or_rest(kind, name, body)
}

/// Patches the changes of `plan` into `assembly`. A resource that fails its schema is
/// reported, and patched in with the offending fields left out when that reads; `Err` holds
/// the schema errors and whether every failing resource was patched that way (then the
/// cross-field checks can run on the whole and report in the same pass).
fn patch(assembly: &mut Assembly, undo: &mut Undo, plan: &[Change]) -> Result<(), (ConfigErrors, bool)> {
    let mut errs = Vec::new();
    let mut whole = true;
    for c in plan.iter().filter(|c| c.op != Op::Unchanged) {
        match &c.after {
            Some(s) => match parse_stored(c.kind, &c.name, &s.body) {
                Ok(t) => assembly.set_undoable(undo, c.kind, &c.name, s.order, Some(t)),
                Err((e, rest)) => {
                    errs.extend(e.0);
                    whole &= rest.is_some();
                    if let Some(t) = rest {
                        assembly.set_undoable(undo, c.kind, &c.name, s.order, Some(*t));
                    }
                }
            },
            None => assembly.set_undoable(undo, c.kind, &c.name, 0, None),
        }
    }
    if errs.is_empty() { Ok(()) } else { Err((ConfigErrors(errs), whole)) }
}
