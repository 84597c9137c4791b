//! Staged rollouts (S6.2): a revision goes first to a canary subset of the gateways for a
//! bake time while the others stay on the revision before; the canary's runtime reports are
//! compared with the rest, and the revision is promoted to every gateway when healthy, or
//! rolled back (a new revision with the previous resources) with the measured reason.
//!
//! Owns: the rollout record (kept in the store, so a restarted control plane resumes it),
//! choosing the canary (a share of the gateways up, or those matching a label selector),
//! which revision each gateway is held at, and the verdict from the reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::plane::PlaneError;
use crate::registry::GatewayView;

/// Which gateways take the new revision first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Canary {
    /// This share of the gateways up (rounded down, at least one), by id order.
    Percent(u32),
    /// The gateways whose labels include all of these.
    Selector(BTreeMap<String, String>),
}

/// How a rollout goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// The canary.
    pub canary: Canary,
    /// How long the canary serves the revision before it is promoted.
    pub bake_ms: u64,
    /// The canary's share of 5xx answers above which the revision is rolled back (0..1).
    pub max_error_rate: f64,
    /// How much slower than the rest the canary's p99 may be (0.2: 20 %), if checked.
    pub max_p99_increase: Option<f64>,
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The canary serves the revision; the others wait.
    Baking,
    /// Every gateway was given the revision.
    Promoted,
    /// The canary failed; the previous resources were applied again.
    RolledBack,
    /// An operator stopped it; the previous resources were applied again.
    Aborted,
}

/// One rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The revision rolled out.
    pub revision: u64,
    /// The revision every other gateway stays on meanwhile.
    pub stable: u64,
    /// The canary gateways.
    pub canary: Vec<String>,
    /// How it goes.
    pub spec: RolloutSpec,
    /// When it started (Unix milliseconds).
    pub started_at_ms: u64,
    /// Where it is.
    pub phase: Phase,
    /// Why it ended as it did (the measured figures).
    pub reason: Option<String>,
    /// When it ended.
    pub ended_at_ms: Option<u64>,
    /// The revision that put the previous resources back (rolled back or aborted).
    pub rolled_back_to: Option<u64>,
}

/// What the reports say of a baking rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Keep baking.
    Wait,
    /// Healthy through the bake: promote.
    Promote(String),
    /// Roll back, for this reason.
    Fail(String),
}

impl Rollout {
    /// Whether `gateway` is held at the stable revision now.
    pub fn holds(&self, gateway: &str) -> bool {
        self.phase == Phase::Baking && !self.canary.iter().any(|c| c == gateway)
    }
}

/// The canary among the gateways up: `None` when it would be empty.
pub fn choose(canary: &Canary, gateways: &[GatewayView]) -> Option<Vec<String>> {
    let mut up: Vec<&GatewayView> = gateways.iter().filter(|g| g.status == "up").collect();
    up.sort_by(|a, b| a.gateway.id.cmp(&b.gateway.id));
    let chosen: Vec<String> = match canary {
        Canary::Percent(p) => {
            // Rounded down, at least one: 34 % of three gateways is one.
            let n = (up.len() * (*p as usize) / 100).clamp(1, up.len().max(1));
            up.iter().take(n).map(|g| g.gateway.id.clone()).collect()
        }
        Canary::Selector(sel) => up
            .iter()
            .filter(|g| sel.iter().all(|(k, v)| g.gateway.labels.get(k) == Some(v)))
            .map(|g| g.gateway.id.clone())
            .collect(),
    };
    (!chosen.is_empty()).then_some(chosen)
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

/// The verdict on `r` at `now_ms`, from the gateways' last reports.
pub fn judge(r: &Rollout, gateways: &[GatewayView], now_ms: u64) -> Verdict {
    let (canary, rest): (Vec<&GatewayView>, Vec<&GatewayView>) =
        gateways.iter().filter(|g| g.status == "up").partition(|g| r.canary.contains(&g.gateway.id));
    for g in gateways.iter().filter(|g| r.canary.contains(&g.gateway.id)) {
        if let Some(n) = g.gateway.last_nack.as_ref().filter(|n| n.revision == r.revision) {
            return Verdict::Fail(format!("{} refused revision {}: {}", g.gateway.id, r.revision, n.errors.join("; ")));
        }
    }
    let serving: Vec<&&GatewayView> = canary.iter().filter(|g| g.gateway.applied_revision >= r.revision).collect();
    let rps: f64 = serving.iter().map(|g| g.gateway.report.requests_per_second).sum();
    let errors: f64 = serving.iter().map(|g| g.gateway.report.requests_per_second * g.gateway.report.error_rate).sum();
    let error_rate = if rps > 0.0 { errors / rps } else { 0.0 };
    if rps > 0.0 && error_rate > r.spec.max_error_rate {
        return Verdict::Fail(format!(
            "the canary's error rate is {} (at {rps:.1} req/s), over the {} allowed",
            pct(error_rate),
            pct(r.spec.max_error_rate)
        ));
    }
    let worst = |gs: &[&GatewayView]| gs.iter().map(|g| g.gateway.report.p99_ms).fold(0.0, f64::max);
    let (canary_p99, rest_p99) = (worst(&serving.iter().map(|g| **g).collect::<Vec<_>>()), worst(&rest));
    if let Some(max) = r.spec.max_p99_increase
        && rest_p99 > 0.0
        && canary_p99 > rest_p99 * (1.0 + max)
    {
        return Verdict::Fail(format!(
            "the canary's p99 is {canary_p99:.1} ms against {rest_p99:.1} ms on the rest, over the {} increase allowed",
            pct(max)
        ));
    }
    let baked = now_ms.saturating_sub(r.started_at_ms) >= r.spec.bake_ms;
    if baked && serving.len() < r.canary.len() {
        let missing: Vec<&str> =
            r.canary.iter().filter(|c| !serving.iter().any(|g| &g.gateway.id == *c)).map(String::as_str).collect();
        return Verdict::Fail(format!("{} did not serve revision {} within the bake", missing.join(", "), r.revision));
    }
    if baked {
        return Verdict::Promote(format!(
            "baked {} s on {}: error rate {}, p99 {canary_p99:.1} ms (rest {rest_p99:.1} ms)",
            r.spec.bake_ms / 1000,
            r.canary.join(", "),
            pct(error_rate)
        ));
    }
    Verdict::Wait
}

/// The store record a rollout is kept under.
pub(crate) const DOC: &str = "rollout";

/// The cause of a staged revision in the history: control planes that take it from a shared
/// store read the rollout record before pushing it.
pub(crate) const STAGED_CAUSE: &str = "apply (staged)";

impl crate::plane::ControlPlane {
    /// The rollout in progress or the last one, if any.
    pub fn rollout(&self) -> Option<Rollout> {
        self.rollout.lock().clone()
    }

    /// The revision `gateway` is held at while a rollout bakes without it.
    pub fn held_at(&self, gateway: &str) -> Option<u64> {
        self.rollout.lock().as_ref().filter(|r| r.holds(gateway)).map(|r| r.stable)
    }

    /// Wakes when a rollout starts or ends.
    pub fn subscribe_rollouts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rollout_changed.subscribe()
    }

    /// Refuses a config change while a rollout bakes.
    pub fn check_not_baking(&self) -> Result<(), PlaneError> {
        match self.rollout.lock().as_ref().filter(|r| r.phase == Phase::Baking) {
            Some(r) => Err(PlaneError::Conflict(format!(
                "revision {} is rolling out to {}: promote or abort it first (`weir ctl rollout promote|abort`)",
                r.revision,
                r.canary.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// Applies `edits` as a revision that goes to the canary first (see the module doc).
    pub async fn apply_staged(
        self: &Arc<Self>,
        edits: Vec<(crate::store::Key, Option<serde_json::Value>)>,
        spec: RolloutSpec,
    ) -> Result<crate::plane::Applied, PlaneError> {
        let _one_at_a_time = self.rollout_ops.lock().await;
        self.check_not_baking()?;
        let canary = choose(&spec.canary, &self.registry.list()).ok_or_else(|| {
            PlaneError::BadRequest(format!("no gateway that is up matches the canary {:?}", spec.canary))
        })?;
        let stable = self.read(|s| s.revision);
        // Held before the commit, so the others never see the new revision.
        let started_at_ms = crate::registry::now_ms();
        let pending = Rollout {
            revision: u64::MAX,
            stable,
            canary,
            spec,
            started_at_ms,
            phase: Phase::Baking,
            reason: None,
            ended_at_ms: None,
            rolled_back_to: None,
        };
        // Kept before the commit too: other control planes read it when they take the revision.
        self.persist_rollout(&pending);
        let previous = self.rollout.lock().replace(pending);
        let applied = match self.apply(edits, STAGED_CAUSE.into(), None).await {
            Ok(a) if a.changed => a,
            other => {
                *self.rollout.lock() = previous.clone();
                self.store_record(previous.as_ref());
                self.rollout_changed.send_modify(|g| *g += 1);
                return other;
            }
        };
        // Revisions are consecutive: the one before the commit is what the others keep, even if
        // another landed between the first read and the commit.
        let r = self.update_rollout(|r| {
            r.revision = applied.revision;
            r.stable = applied.revision - 1;
        });
        if let Some(r) = r {
            tracing::info!(revision = r.revision, stable, canary = ?r.canary, bake_ms = r.spec.bake_ms, "rollout started");
        }
        Ok(applied)
    }

    /// Changes the rollout, keeps it in the store and wakes the streams.
    fn update_rollout(&self, f: impl FnOnce(&mut Rollout)) -> Option<Rollout> {
        let r = {
            let mut guard = self.rollout.lock();
            let r = guard.as_mut()?;
            f(r);
            r.clone()
        };
        self.persist_rollout(&r);
        self.rollout_changed.send_modify(|g| *g += 1);
        Some(r)
    }

    fn persist_rollout(&self, r: &Rollout) {
        self.store_record(Some(r));
    }

    /// Writes the record (`null`: no rollout).
    fn store_record(&self, r: Option<&Rollout>) {
        let bytes = serde_json::to_vec(&r).unwrap_or_default();
        if let Err(e) = self.with_store(|s| s.put_doc(DOC, &bytes)) {
            tracing::warn!(error = %e, "cannot keep the rollout in the store; a restart would not resume it");
        }
    }

    /// Takes the rollout the store holds (a restart resumes it). A record still pending (the
    /// process stopped between writing it and committing, or the commit failed) holds nobody.
    pub(crate) fn load_rollout(&self) {
        self.take_stored_rollout(&self.with_store(|s| s.doc(DOC)));
        let pending = self.rollout.lock().as_ref().is_some_and(|r| r.revision == u64::MAX);
        if pending {
            tracing::warn!("dropping a rollout whose revision was never committed");
            *self.rollout.lock() = None;
            self.store_record(None);
        }
    }

    /// Takes the rollout record read from the store, waking the streams when it changed.
    pub(crate) fn take_stored_rollout(&self, read: &Result<Option<Vec<u8>>, crate::store::StoreError>) {
        let r = match read {
            Ok(Some(bytes)) => match serde_json::from_slice::<Option<Rollout>>(bytes) {
                Ok(r) => r,
                Err(e) => return tracing::warn!(error = %e, "ignoring a stored rollout that does not parse"),
            },
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "cannot read the stored rollout"),
        };
        let mut guard = self.rollout.lock();
        if guard.as_ref() == r.as_ref() {
            return;
        }
        if let Some(r) = r.as_ref().filter(|r| r.phase == Phase::Baking) {
            tracing::info!(revision = r.revision, canary = ?r.canary, "following a rollout");
        }
        *guard = r;
        drop(guard);
        self.rollout_changed.send_modify(|g| *g += 1);
    }

    /// Judges a baking rollout from the reports: promotes it or rolls it back. On a shared
    /// store every control plane follows the record and only the elected one judges.
    pub async fn rollout_tick(self: &Arc<Self>) {
        if let Some(elected) = self.with_store(crate::store::Store::leader) {
            if self.rollout().is_some_and(|r| r.phase == Phase::Baking) {
                let this = self.clone();
                if let Ok(read) = tokio::task::spawn_blocking(move || this.with_store(|s| s.doc(DOC))).await {
                    self.take_stored_rollout(&read);
                }
            }
            if !*elected.borrow() {
                return;
            }
        }
        let _one_at_a_time = self.rollout_ops.lock().await;
        let Some(r) = self.rollout().filter(|r| r.phase == Phase::Baking && r.revision != u64::MAX) else { return };
        match judge(&r, &self.registry.list(), crate::registry::now_ms()) {
            Verdict::Wait => {}
            Verdict::Promote(why) => {
                tracing::info!(revision = r.revision, reason = %why, "rollout promoted");
                self.end_rollout(Phase::Promoted, why, None);
            }
            Verdict::Fail(why) => {
                tracing::warn!(revision = r.revision, reason = %why, "rollout failed; rolling back");
                self.roll_back(Phase::RolledBack, why).await;
            }
        }
    }

    fn end_rollout(&self, phase: Phase, reason: String, rolled_back_to: Option<u64>) -> Option<Rollout> {
        self.update_rollout(|r| {
            r.phase = phase;
            r.reason = Some(reason);
            r.ended_at_ms = Some(crate::registry::now_ms());
            r.rolled_back_to = rolled_back_to;
        })
    }

    /// Puts the stable revision's resources back (the others stay held until it is in), then
    /// ends the rollout.
    async fn roll_back(self: &Arc<Self>, phase: Phase, reason: String) -> Option<Rollout> {
        let stable = self.rollout()?.stable;
        match self.rollback(stable, false).await {
            Ok(a) => self.end_rollout(phase, reason, Some(a.revision)),
            Err(e) => {
                tracing::error!(error = %e, "cannot roll the canary back; the rollout keeps baking");
                None
            }
        }
    }

    /// Promotes the baking rollout now.
    pub async fn promote(&self) -> Result<Rollout, PlaneError> {
        let _one_at_a_time = self.rollout_ops.lock().await;
        self.baking()?;
        self.end_rollout(Phase::Promoted, "promoted by an operator".into(), None)
            .ok_or_else(|| PlaneError::NotFound("no rollout".into()))
    }

    /// Rolls the baking rollout back now.
    pub async fn abort(self: &Arc<Self>) -> Result<Rollout, PlaneError> {
        let _one_at_a_time = self.rollout_ops.lock().await;
        self.baking()?;
        self.roll_back(Phase::Aborted, "aborted by an operator".into())
            .await
            .ok_or_else(|| PlaneError::Store(crate::store::StoreError::from_msg("the rollback could not be stored")))
    }

    fn baking(&self) -> Result<(), PlaneError> {
        match self.rollout() {
            Some(r) if r.phase == Phase::Baking => Ok(()),
            Some(r) => Err(PlaneError::BadRequest(format!(
                "the last rollout (revision {}) has ended: {:?}",
                r.revision, r.phase
            ))),
            None => Err(PlaneError::NotFound("no rollout has been started (`weir ctl apply --canary …`)".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Record, Report};

    fn gw(id: &str, applied: u64, rps: f64, errors: f64, p99: f64, labels: &[(&str, &str)]) -> GatewayView {
        GatewayView {
            status: "up",
            last_heartbeat_ms_ago: 0,
            gateway: Record {
                id: id.into(),
                control_plane: "cp".into(),
                connected: true,
                kind: "weir".into(),
                version: "1".into(),
                labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                listen: Vec::new(),
                admin: None,
                plugins: Vec::new(),
                protocols: Vec::new(),
                features: Vec::new(),
                applied_revision: applied,
                seen_at_ms: 0,
                last_nack: None,
                report: Report { requests_per_second: rps, error_rate: errors, p99_ms: p99, ..Report::default() },
                modules_sent: 0,
            },
        }
    }

    fn rollout(max_p99_increase: Option<f64>) -> Rollout {
        Rollout {
            revision: 5,
            stable: 4,
            canary: vec!["a".into()],
            spec: RolloutSpec { canary: Canary::Percent(34), bake_ms: 1000, max_error_rate: 0.01, max_p99_increase },
            started_at_ms: 0,
            phase: Phase::Baking,
            reason: None,
            ended_at_ms: None,
            rolled_back_to: None,
        }
    }

    #[test]
    fn the_canary_is_a_share_rounded_down_or_a_label_match() {
        let fleet = [
            gw("c", 4, 0.0, 0.0, 0.0, &[]),
            gw("a", 4, 0.0, 0.0, 0.0, &[("ring", "1")]),
            gw("b", 4, 0.0, 0.0, 0.0, &[]),
        ];
        assert_eq!(choose(&Canary::Percent(34), &fleet), Some(vec!["a".into()]));
        assert_eq!(choose(&Canary::Percent(67), &fleet), Some(vec!["a".into(), "b".into()]));
        assert_eq!(choose(&Canary::Percent(1), &fleet), Some(vec!["a".into()]));
        let sel = |k: &str, v: &str| Canary::Selector(BTreeMap::from([(k.to_owned(), v.to_owned())]));
        assert_eq!(choose(&sel("ring", "1"), &fleet), Some(vec!["a".into()]));
        assert_eq!(choose(&sel("ring", "2"), &fleet), None);
    }

    #[test]
    fn the_verdict_weighs_errors_p99_and_the_bake() {
        let healthy = [gw("a", 5, 100.0, 0.005, 12.0, &[]), gw("b", 4, 100.0, 0.0, 10.0, &[])];
        assert_eq!(judge(&rollout(None), &healthy, 500), Verdict::Wait);
        assert!(matches!(judge(&rollout(None), &healthy, 1000), Verdict::Promote(_)));
        let failing = [gw("a", 5, 100.0, 0.2, 12.0, &[]), gw("b", 4, 100.0, 0.0, 10.0, &[])];
        assert!(matches!(judge(&rollout(None), &failing, 10), Verdict::Fail(w) if w.contains("20.00 %")));
        // p99: 12 ms against 10 ms is 20 % slower.
        assert!(matches!(judge(&rollout(Some(0.1)), &healthy, 10), Verdict::Fail(w) if w.contains("p99")));
        assert_eq!(judge(&rollout(Some(0.3)), &healthy, 10), Verdict::Wait);
        // A canary that has not applied the revision by the end of the bake fails it.
        let behind = [gw("a", 4, 100.0, 0.0, 10.0, &[])];
        assert!(matches!(judge(&rollout(None), &behind, 1000), Verdict::Fail(w) if w.contains("did not serve")));
    }
}
