//! The resource store: every resource at the current revision, and the history of changes.
//!
//! Owns: the revision counter (it only grows, also across restarts and rollbacks), tombstones
//! for deltas, replaying the history to the state at an earlier revision, and the current
//! state in memory, so reads and deltas never wait on the backend; and plugin modules by
//! sha256 (content-addressed: stored once, never changed, kept across revisions so a rollback
//! finds them). Persistence is a backend's:
//! an embedded redb file ([`redb`]: one process), or etcd ([`etcd`]: several control planes
//! share it; each follows the others' commits).
//! Does not own: validation (see [`crate::plane`]).

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod etcd_fleet;
#[cfg(feature = "etcd")]
mod etcd_jobs;
mod redb;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sha2::Digest as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_config::resources::Kind;

/// Where an etcd store is.
#[derive(Clone, Debug)]
pub struct EtcdSpec {
    /// Client URLs (`http://127.0.0.1:2379`), any of which may answer.
    pub endpoints: Vec<String>,
    /// Key prefix, so several Weir fleets (or other programs) can share one etcd.
    pub prefix: String,
    /// TLS, for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// The limits etcd was started with: a revision that would exceed them is refused before
    /// anything is written.
    pub limits: EtcdLimits,
}

/// etcd's request limits, as its flags of the same names set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdLimits {
    /// Operations in one transaction (`--max-txn-ops`, 128 by default).
    pub max_txn_ops: usize,
    /// Bytes in one request (`--max-request-bytes`, 1.5 MiB by default).
    pub max_request_bytes: usize,
}

impl Default for EtcdLimits {
    fn default() -> Self {
        Self { max_txn_ops: 128, max_request_bytes: 1536 << 10 }
    }
}

/// TLS to etcd: the CA its members' certificates are checked against and, for an etcd that
/// requires client certificates (`--client-cert-auth`), this control plane's own (PEM).
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA certificate(s).
    pub ca: Vec<u8>,
    /// The client certificate chain and its private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls").field("client_certificate", &self.identity.is_some()).finish_non_exhaustive()
    }
}

/// A store that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(String, Fault);

/// What kind of store failure, for the HTTP status it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The store or the way to it failed (500).
    Broken,
    /// Another control plane committed first (409).
    Conflict,
    /// The change is larger than the store takes at once (413).
    TooLarge,
    /// The store is out of reach for now (503): nothing was written, try again later.
    Unavailable,
    /// A revision older than the history keeps was asked for.
    Trimmed,
}

impl StoreError {
    /// A store error with this message.
    pub fn from_msg(e: impl std::fmt::Display) -> Self {
        Self(e.to_string(), Fault::Broken)
    }

    fn from(e: impl std::fmt::Display) -> Self {
        Self(e.to_string(), Fault::Broken)
    }

    /// Another control plane committed first; catching up and trying again may succeed.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn conflict(e: impl std::fmt::Display) -> Self {
        Self(e.to_string(), Fault::Conflict)
    }

    /// A change the store cannot take in one piece.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn too_large(e: impl std::fmt::Display) -> Self {
        Self(e.to_string(), Fault::TooLarge)
    }

    /// The store cannot be reached now (etcd down, or without a leader).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    fn unavailable(e: impl std::fmt::Display) -> Self {
        Self(e.to_string(), Fault::Unavailable)
    }

    /// Whether a revision asked for was trimmed from the history.
    pub fn is_trimmed(&self) -> bool {
        self.1 == Fault::Trimmed
    }

    /// Whether the store was out of reach: the same call may succeed later.
    pub fn is_unavailable(&self) -> bool {
        self.1 == Fault::Unavailable
    }

    /// Whether this is a lost race with another control plane (see [`Store::commit`]).
    pub fn is_conflict(&self) -> bool {
        self.1 == Fault::Conflict
    }

    /// Whether the change was too large for the store to take at once.
    pub fn is_too_large(&self) -> bool {
        self.1 == Fault::TooLarge
    }
}

/// A resource's kind and name.
pub type Key = weir_config::resources::ResourceKey;

/// One stored resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Kind (`Route`…).
    #[serde(with = "kind_serde")]
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// Revision at which it last changed.
    pub version: u64,
    /// Creation order (route ties are broken by it).
    pub order: u64,
    /// Fields.
    pub body: Value,
}

/// What one revision changed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Revision {
    /// The revision number.
    pub revision: u64,
    /// Unix milliseconds when it was committed.
    pub time_ms: u64,
    /// Who or what made it (`apply`, `rollback to 3`…).
    pub cause: String,
    /// Each change.
    pub changes: Vec<Change>,
}

/// One change in a revision: the resource after it, or `None` when deleted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    /// Kind.
    #[serde(with = "kind_serde")]
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// `created`, `configured` or `deleted`.
    pub op: Op,
    /// The resource after the change (absent for deletes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Stored>,
}

/// What happened to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// It did not exist.
    Created,
    /// Its fields changed.
    Configured,
    /// It was removed.
    Deleted,
    /// Nothing changed.
    Unchanged,
}

/// The in-memory state.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Current revision.
    pub revision: u64,
    /// Next creation order.
    next_order: u64,
    /// Every live resource.
    pub resources: BTreeMap<Key, Stored>,
    /// Deleted resources and the revision that deleted them (for deltas).
    pub tombstones: HashMap<Key, u64>,
    /// The history holds the revisions after this one: older ones were folded into a base
    /// (see [`Store::trim`]), so the state can be rebuilt back to this revision, not before.
    pub history_base: u64,
    /// The keys each of the latest revisions changed, oldest first, with no gap since the
    /// state was loaded: a delta for a gateway that is a few revisions behind looks at what
    /// changed, not at every resource.
    recent: std::collections::VecDeque<(u64, Vec<Key>)>,
}

/// How many revisions [`State`] remembers the changed keys of.
const RECENT: usize = 1024;

impl State {
    /// Live resources of every kind, each kind in creation order.
    pub fn ordered(&self) -> Vec<&Stored> {
        let mut v: Vec<&Stored> = self.resources.values().collect();
        v.sort_by_key(|s| (s.kind, s.order));
        v
    }

    /// What to send a gateway that has `base`: resources changed after it and keys removed
    /// after it.
    pub fn delta_since(&self, base: u64) -> (Vec<&Stored>, Vec<&Key>) {
        let (mut up, gone): (Vec<&Stored>, Vec<&Key>) = match self.recent_since(base) {
            Some(keys) => {
                let up = keys.iter().filter_map(|k| self.resources.get(*k)).filter(|s| s.version > base).collect();
                let gone = keys.into_iter().filter(|k| self.tombstones.get(*k).is_some_and(|r| *r > base)).collect();
                (up, gone)
            }
            None => (
                self.resources.values().filter(|s| s.version > base).collect(),
                self.tombstones.iter().filter(|(_, r)| **r > base).map(|(k, _)| k).collect(),
            ),
        };
        up.sort_by_key(|s| (s.kind, s.order));
        (up, gone)
    }

    /// Every key changed after `base`, when the recent revisions cover all of them.
    fn recent_since(&self, base: u64) -> Option<std::collections::BTreeSet<&Key>> {
        let first = self.recent.front()?.0;
        if first > base + 1 || self.recent.back()?.0 != self.revision {
            return None;
        }
        Some(self.recent.iter().filter(|(r, _)| *r > base).flat_map(|(_, keys)| keys).collect())
    }

    /// Applies `edits` (`None` deletes) and returns the changes at `revision`, without
    /// committing anything. Unchanged edits are reported as [`Op::Unchanged`].
    pub fn plan(&self, edits: &[(Key, Option<Value>)], revision: u64) -> Vec<Change> {
        let mut next_order = self.next_order;
        let mut seen: HashMap<&Key, usize> = HashMap::new();
        let mut out: Vec<Change> = Vec::new();
        for (key, body) in edits {
            let before = self.resources.get(key);
            let change = match (before, body) {
                (None, None) => Change { kind: key.kind, name: key.name.clone(), op: Op::Unchanged, after: None },
                (Some(_), None) => Change { kind: key.kind, name: key.name.clone(), op: Op::Deleted, after: None },
                (Some(b), Some(v)) if b.body == *v => {
                    Change { kind: key.kind, name: key.name.clone(), op: Op::Unchanged, after: Some(b.clone()) }
                }
                (b, Some(v)) => {
                    let order = b.map_or_else(
                        || {
                            next_order += 1;
                            next_order
                        },
                        |b| b.order,
                    );
                    let op = if b.is_some() { Op::Configured } else { Op::Created };
                    let after =
                        Stored { kind: key.kind, name: key.name.clone(), version: revision, order, body: v.clone() };
                    Change { kind: key.kind, name: key.name.clone(), op, after: Some(after) }
                }
            };
            // A later edit of the same key in one batch wins.
            match seen.get(key) {
                Some(&i) => out[i] = change,
                None => {
                    seen.insert(key, out.len());
                    out.push(change);
                }
            }
        }
        out
    }

    fn commit(&mut self, rev: &Revision) {
        // Remembered only while the revisions follow one another.
        if self.recent.back().is_some_and(|(r, _)| *r + 1 != rev.revision) {
            self.recent.clear();
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((rev.revision, rev.changes.iter().map(|c| Key::new(c.kind, c.name.clone())).collect()));
        self.revision = rev.revision;
        for c in &rev.changes {
            let key = Key::new(c.kind, c.name.clone());
            match &c.after {
                Some(s) => {
                    self.next_order = self.next_order.max(s.order);
                    self.tombstones.remove(&key);
                    self.resources.insert(key, s.clone());
                }
                None => {
                    self.resources.remove(&key);
                    self.tombstones.insert(key, rev.revision);
                }
            }
        }
    }
}

/// Where a store keeps its data.
#[derive(Debug)]
enum Backend {
    Redb(redb::Redb),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::Etcd>),
}

/// The store: a backend plus the state in memory.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    state: State,
    /// Modules read or written so far, by sha256.
    modules: Mutex<HashMap<String, Arc<[u8]>>>,
}

/// The sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Opens (or creates) a redb store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let (db, state) = redb::Redb::open(path)?;
        Ok(Self { backend: Backend::Redb(db), state, modules: Mutex::default() })
    }

    /// Connects to etcd and loads the state kept under the spec's prefix.
    #[cfg(feature = "etcd")]
    pub fn open_etcd(spec: &EtcdSpec) -> Result<Self, StoreError> {
        let (db, state) = etcd::Etcd::open(spec)?;
        Ok(Self { backend: Backend::Etcd(Box::new(db)), state, modules: Mutex::default() })
    }

    /// Without the `etcd` feature: says how to get it.
    #[cfg(not(feature = "etcd"))]
    pub fn open_etcd(_: &EtcdSpec) -> Result<Self, StoreError> {
        Err(StoreError::from(
            "this weir was built without etcd support: rebuild with `cargo build --release --features etcd` (needs protoc)",
        ))
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// For a shared store, a channel that announces the store's latest revision as other
    /// control planes commit (see [`Self::catch_up`]); `None` for a store only this process
    /// writes.
    pub fn followed(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match &self.backend {
            Backend::Redb(_) => None,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => Some(e.followed()),
        }
    }

    /// For a shared store, whether this control plane is the one elected to run the fleet's
    /// singleton jobs (registration expiry); `None` for a store only this process writes.
    pub fn leader(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        match &self.backend {
            Backend::Redb(_) => None,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => Some(e.leader()),
        }
    }

    /// For a shared store, renews registration `name` for `ttl` where every control plane sees
    /// it (an etcd lease). Nothing to do on a store only this process uses.
    pub fn renew_registration(&self, name: &str, ttl: std::time::Duration) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(_) => {
                let _ = (name, ttl);
                Ok(())
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.renew_registration(name, ttl),
        }
    }

    /// For a shared store, the registrations renewed within their ttl through any control
    /// plane; `None` where only this process renews (it keeps the deadlines itself).
    pub fn leased_registrations(&self) -> Result<Option<std::collections::HashSet<String>>, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(None),
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.leased_registrations().map(Some),
        }
    }

    /// For a shared store, every control plane's gateway records (see
    /// [`crate::registry::Record`]); `None` where this control plane's gateways are all.
    pub fn shared_gateways(&self) -> Option<crate::registry::SharedRecords> {
        match &self.backend {
            Backend::Redb(_) => None,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => Some(e.shared_gateways()),
        }
    }

    /// For a shared store, writes this control plane's gateway records (id, JSON, whether
    /// connected here) and deletes those of gateways it forgot. Nothing to do otherwise.
    pub fn share_gateways(
        &self,
        writes: Vec<(String, Vec<u8>, bool)>,
        forgotten: Vec<String>,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(_) => {
                let _ = (writes, forgotten);
                Ok(())
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.share_gateways(writes, forgotten),
        }
    }

    /// Brings the state up to the store's latest revision (commits by other control planes).
    /// When revisions it never saw were trimmed meanwhile, it reads the whole state again.
    pub fn catch_up(&mut self) -> Result<CaughtUp, StoreError> {
        let revs: Vec<Revision> = match &self.backend {
            Backend::Redb(_) => Vec::new(),
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.history_after(self.state.revision)?,
        };
        if revs.first().is_some_and(|r| r.revision > self.state.revision + 1) {
            #[cfg(feature = "etcd")]
            if let Backend::Etcd(e) = &mut self.backend {
                let fresh = e.load()?;
                self.state = replaced(&self.state, fresh);
                return Ok(CaughtUp::Reloaded(self.state.revision));
            }
        }
        for rev in &revs {
            self.state.commit(rev);
        }
        Ok(CaughtUp::Revisions(revs))
    }

    /// Commits the changes that are not [`Op::Unchanged`] as the next revision; returns it, or
    /// `None` when nothing changed.
    pub fn commit(&mut self, changes: Vec<Change>, cause: &str) -> Result<Option<u64>, StoreError> {
        let changes: Vec<Change> = changes.into_iter().filter(|c| c.op != Op::Unchanged).collect();
        if changes.is_empty() {
            return Ok(None);
        }
        let revision = self.state.revision + 1;
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let rev = Revision { revision, time_ms, cause: cause.to_owned(), changes };
        let order = rev.changes.iter().filter_map(|c| c.after.as_ref().map(|s| s.order)).max().unwrap_or(0);
        let order = order.max(self.state.next_order);
        match &mut self.backend {
            Backend::Redb(db) => db.commit(&rev, order)?,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.commit(&rev, order)?,
        }
        self.state.commit(&rev);
        Ok(Some(revision))
    }

    /// Stores a module under its sha256 unless it is there already; returns the hash and
    /// whether it was new.
    pub fn put_module(&self, bytes: &[u8]) -> Result<(String, bool), StoreError> {
        let sha = sha256_hex(bytes);
        if self.module(&sha)?.is_some() {
            return Ok((sha, false));
        }
        match &self.backend {
            Backend::Redb(db) => db.put_module(&sha, bytes)?,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.put_module(&sha, bytes)?,
        }
        self.modules.lock().insert(sha.clone(), Arc::from(bytes));
        Ok((sha, true))
    }

    /// The module with this sha256, if stored (by this control plane or, on a shared store,
    /// by another). Bytes that do not match their hash are an error, never returned.
    pub fn module(&self, sha256: &str) -> Result<Option<Arc<[u8]>>, StoreError> {
        if let Some(m) = self.modules.lock().get(sha256) {
            return Ok(Some(m.clone()));
        }
        let found = match &self.backend {
            Backend::Redb(db) => db.module(sha256)?,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.module(sha256)?,
        };
        let Some(bytes) = found else { return Ok(None) };
        if sha256_hex(&bytes) != sha256 {
            return Err(StoreError::from(format!("the stored module {sha256} does not match its hash")));
        }
        let bytes: Arc<[u8]> = Arc::from(bytes);
        self.modules.lock().insert(sha256.to_owned(), bytes.clone());
        Ok(Some(bytes))
    }

    /// Writes the control-plane record `name` (not config: never pushed, no revision).
    pub fn put_doc(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(db) => db.put_doc(name, bytes),
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.put_doc(name, bytes),
        }
    }

    /// The control-plane record `name`, if written.
    pub fn doc(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Redb(db) => db.doc(name),
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.doc(name),
        }
    }

    /// Every revision, newest first, at most `limit`.
    pub fn history(&self, limit: usize) -> Result<Vec<Revision>, StoreError> {
        match &self.backend {
            Backend::Redb(db) => db.history(limit),
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.history(limit),
        }
    }

    /// The resources as they were right after revision `at`: the base the history was
    /// trimmed to, and the history after it replayed. Before the base it cannot be rebuilt.
    pub fn state_at(&self, at: u64) -> Result<State, StoreError> {
        let (base, resources, revs) = match &self.backend {
            Backend::Redb(db) => db.base_and_history(at)?,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.base_and_history(at)?,
        };
        if at < base {
            return Err(StoreError(
                format!("revision {at} was trimmed from the history: the oldest kept is {base} (--history-limit)"),
                Fault::Trimmed,
            ));
        }
        let mut state = loaded(base, 0, base, resources);
        for rev in &revs {
            state.commit(rev);
        }
        Ok(state)
    }

    /// Folds the oldest revisions into the base until at most `keep` remain after it, at most
    /// `most` per call; returns the new base. A shared store is trimmed by one control plane:
    /// the elected one (see [`Self::leader`]).
    pub fn trim(&mut self, keep: u64, most: u64) -> Result<u64, StoreError> {
        let base = self.state.history_base;
        let upto = self.state.revision.saturating_sub(keep.max(1)).min(base + most);
        if upto <= base {
            return Ok(base);
        }
        let reached = match &mut self.backend {
            Backend::Redb(db) => db.trim(upto)?,
            #[cfg(feature = "etcd")]
            Backend::Etcd(e) => e.trim(base, upto)?,
        };
        self.state.history_base = reached;
        Ok(reached)
    }
}

/// The state after loading `resources` at `revision` with creation orders up to `next_order`.
fn loaded(revision: u64, next_order: u64, history_base: u64, resources: impl IntoIterator<Item = Stored>) -> State {
    let resources = resources.into_iter().map(|s| (Key::new(s.kind, s.name.clone()), s)).collect();
    State { revision, next_order, resources, tombstones: HashMap::new(), history_base, recent: Default::default() }
}

/// What catching up with a shared store did.
#[derive(Debug)]
pub enum CaughtUp {
    /// These revisions were applied, oldest first (none: nothing new).
    Revisions(Vec<Revision>),
    /// The revisions after this control plane's were trimmed from the history before it read
    /// them: the whole state was read again, at this revision.
    Reloaded(u64),
}

/// The state `fresh`, read whole, replacing `old`: keys gone since are tombstoned at the new
/// revision, so deltas to gateways still remove them.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
fn replaced(old: &State, mut fresh: State) -> State {
    let gone = old.resources.keys().chain(old.tombstones.keys()).filter(|k| !fresh.resources.contains_key(*k));
    let tombstones: HashMap<Key, u64> = gone
        .map(|k| {
            let at = if old.resources.contains_key(k) { fresh.revision } else { old.tombstones[k] };
            (k.clone(), at)
        })
        .collect();
    fresh.tombstones = tombstones;
    fresh.recent.clear();
    fresh
}

/// The key of a resource in a backend (`Route/api`).
fn resource_key(kind: Kind, name: &str) -> String {
    format!("{kind}/{name}")
}

mod kind_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use weir_config::resources::Kind;

    pub(super) fn serialize<S: Serializer>(k: &Kind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(name: &str, up: &str) -> (Key, Option<Value>) {
        (Key::new(Kind::Route, name), Some(json!({"name": name, "upstream": up})))
    }

    #[test]
    fn modules_are_stored_once_by_hash_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.redb");
        let s = Store::open(&path).unwrap();
        let (sha, new) = s.put_module(b"\0asm one").unwrap();
        assert_eq!((sha.len(), new), (64, true));
        assert!(!s.put_module(b"\0asm one").unwrap().1, "stored once");
        assert_eq!(s.module(&"0".repeat(64)).unwrap(), None);
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(&*s.module(&sha).unwrap().unwrap(), b"\0asm one");
        assert_eq!(s.state().revision, 0, "a module is not a revision");
    }

    #[test]
    fn revisions_grow_persist_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.redb");
        let mut s = Store::open(&path).unwrap();
        let plan = s.state().plan(&[route("a", "x"), route("b", "x")], 1);
        assert_eq!(s.commit(plan, "apply").unwrap(), Some(1));
        // Same content again: no new revision.
        let plan = s.state().plan(&[route("a", "x")], 2);
        assert_eq!(plan[0].op, Op::Unchanged);
        assert_eq!(s.commit(plan, "apply").unwrap(), None);
        let plan = s.state().plan(&[route("a", "y"), (Key::new(Kind::Route, "b"), None)], 2);
        assert_eq!(s.commit(plan, "apply").unwrap(), Some(2));
        let (up, gone) = s.state().delta_since(1);
        assert_eq!((up.len(), gone.len()), (1, 1));
        drop(s);

        let s = Store::open(&path).unwrap();
        assert_eq!(s.state().revision, 2);
        assert_eq!(s.state().resources.len(), 1);
        let old = s.state_at(1).unwrap();
        assert_eq!(old.resources.len(), 2);
        assert_eq!(old.resources[&Key::new(Kind::Route, "a")].body["upstream"], "x");
        assert_eq!(s.history(10).unwrap().iter().map(|r| r.revision).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn a_trimmed_history_still_rebuilds_every_kept_revision_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.redb");
        let mut s = Store::open(&path).unwrap();
        // Revision r points route a at upstream u{r}; route r{r} is created at r and deleted at r+1.
        for r in 1..=10u64 {
            let mut edits = vec![route("a", &format!("u{r}")), route(&format!("r{r}"), "x")];
            if r > 1 {
                edits.push((Key::new(Kind::Route, format!("r{}", r - 1)), None));
            }
            let plan = s.state().plan(&edits, r);
            assert_eq!(s.commit(plan, "apply").unwrap(), Some(r));
        }
        assert_eq!(s.trim(3, 2).unwrap(), 2, "at most two revisions folded per call");
        assert_eq!(s.trim(3, 100).unwrap(), 7);
        assert_eq!(s.trim(3, 100).unwrap(), 7, "nothing more to fold");
        let check = |s: &Store| {
            for at in 7..=10u64 {
                let st = s.state_at(at).unwrap();
                assert_eq!(st.resources[&Key::new(Kind::Route, "a")].body["upstream"], format!("u{at}"));
                let names: Vec<&str> = st.resources.keys().map(|k| k.name.as_str()).collect();
                assert_eq!(names, ["a", &format!("r{at}")], "at {at}");
            }
            let err = s.state_at(6).unwrap_err().to_string();
            assert!(err.contains("trimmed") && err.contains("oldest kept is 7"), "{err}");
            assert_eq!(s.history(100).unwrap().iter().map(|r| r.revision).collect::<Vec<_>>(), [10, 9, 8]);
        };
        check(&s);
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.state().history_base, 7);
        check(&s);
    }

    #[test]
    fn a_state_read_again_tombstones_what_went_meanwhile() {
        let mut old = State::default();
        let plan = old.plan(&[route("a", "x"), route("b", "x"), route("c", "x")], 1);
        old.commit(&Revision { revision: 1, time_ms: 0, cause: String::new(), changes: plan });
        let plan = old.plan(&[(Key::new(Kind::Route, "c"), None)], 2);
        old.commit(&Revision { revision: 2, time_ms: 0, cause: String::new(), changes: plan });
        let mut fresh = old.clone();
        fresh.tombstones.clear();
        let plan = fresh.plan(&[(Key::new(Kind::Route, "b"), None), route("d", "x")], 9);
        fresh.commit(&Revision { revision: 9, time_ms: 0, cause: String::new(), changes: plan });
        fresh.tombstones.clear();
        let st = replaced(&old, fresh);
        let at = |n: &str| st.tombstones.get(&Key::new(Kind::Route, n)).copied();
        assert_eq!((at("b"), at("c"), at("a"), at("d")), (Some(9), Some(2), None, None));
        let (up, gone) = st.delta_since(2);
        assert_eq!((up.len(), gone.len()), (1, 1), "d added, b removed");
    }

    #[test]
    fn deltas_from_the_recent_revisions_are_those_of_a_scan_of_everything() {
        let mut st = State::default();
        let edits: Vec<Vec<(Key, Option<Value>)>> = vec![
            vec![route("a", "x"), route("b", "x"), route("c", "x")],
            vec![route("a", "y")],
            vec![(Key::new(Kind::Route, "b"), None), route("d", "x")],
            vec![route("b", "z")],
            vec![(Key::new(Kind::Route, "d"), None)],
        ];
        for (i, e) in edits.iter().enumerate() {
            let plan = st.plan(e, i as u64 + 1);
            st.commit(&Revision { revision: i as u64 + 1, time_ms: 0, cause: String::new(), changes: plan });
        }
        let mut scanned = st.clone();
        scanned.recent.clear();
        let names = |(up, gone): (Vec<&Stored>, Vec<&Key>)| {
            let mut gone: Vec<String> = gone.iter().map(|k| k.name.clone()).collect();
            gone.sort();
            (up.iter().map(|s| s.name.clone()).collect::<Vec<_>>(), gone)
        };
        for base in 0..=5 {
            assert_eq!(names(st.delta_since(base)), names(scanned.delta_since(base)), "from {base}");
        }
        assert!(st.recent_since(0).is_some(), "every revision is remembered");
        assert_eq!(names(st.delta_since(3)), (vec!["b".to_owned()], vec!["d".to_owned()]));
    }
}
