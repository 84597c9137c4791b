//! What a gateway received from its control plane, turned into a config it can apply, and
//! the copy it keeps on disk.
//!
//! Owns: the resource map at the last received revision (snapshots replace it, deltas patch
//! it), assembling it with the gateway's own listeners into a [`ValidConfig`] (the same
//! validation a file gets), and persisting the last good one so the gateway cold-starts
//! without its control plane: a whole snapshot written atomically (write + rename), then each
//! applied delta appended to a log beside it, so a change costs what it changed on disk too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_config::assembly::{Assembly, Changed, Typed, parse_resource};
use weir_config::package::{ModuleError, ModuleRef, PackageSpec};
use weir_config::resources::{self, Kind, ResourceKey};
use weir_config::{ConfigError, ConfigErrors, ValidConfig};
use weir_proto::v1;

/// One received resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// Revision at which it last changed.
    pub version: u64,
    /// Declaration order.
    pub order: u64,
    /// Fields.
    pub body: Value,
}

/// The resources at one revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// The control plane's revision.
    pub revision: u64,
    /// By kind and name (`Kind/name` on disk). A persistent map: the copy taken to write it
    /// to disk shares it instead of copying every resource.
    pub items: imbl::OrdMap<ResourceKey, Held>,
}

/// A message that does not fit what the gateway holds.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A delta built on a revision the gateway does not have.
    #[error("delta from revision {base} but this gateway holds {held}; asking for a full snapshot")]
    Gap {
        /// The delta's base.
        base: u64,
        /// What the gateway holds.
        held: u64,
    },
    /// A resource that cannot be read.
    #[error("resource {0}: {1}")]
    Bad(String, String),
}

fn key(kind: &str, name: &str) -> Result<ResourceKey, StreamError> {
    let k: Kind = kind.parse().map_err(|e: resources::UnknownKind| StreamError::Bad(name.into(), e.to_string()))?;
    Ok(ResourceKey::new(k, name))
}

fn held(r: &v1::Resource) -> Result<(ResourceKey, Held), StreamError> {
    let body = serde_json::from_slice(&r.body).map_err(|e| StreamError::Bad(r.name.clone(), e.to_string()))?;
    Ok((key(&r.kind, &r.name)?, Held { version: r.version, order: r.order, body }))
}

impl Resources {
    /// Everything at a snapshot's revision.
    pub fn from_snapshot(s: &v1::Snapshot) -> Result<Self, StreamError> {
        let items = s.resources.iter().map(held).collect::<Result<_, _>>()?;
        Ok(Self { revision: s.revision, items })
    }
}

/// What the gateway received, kept both as JSON (to persist) and typed (to validate and
/// apply one change without re-reading the rest).
#[derive(Debug, Default)]
pub struct Received {
    /// The resources as received.
    pub resources: Resources,
    /// Everything but listeners, typed.
    assembly: Assembly,
    /// `Listener` resources by name: settings for this gateway's listeners of that name.
    listeners: BTreeMap<String, Value>,
    /// Resources that failed their schema here, by key.
    broken: BTreeMap<ResourceKey, ConfigErrors>,
    /// The last delta patched in, as the disk log keeps it (`None` after a whole snapshot).
    last_delta: Option<Logged>,
}

impl Received {
    /// Takes over a whole set of resources (a snapshot, or the persisted one).
    pub fn new(resources: Resources) -> Self {
        let mut r = Self { resources, ..Self::default() };
        let mut typed = Vec::with_capacity(r.resources.items.len());
        for (key, h) in &r.resources.items {
            let (kind, name) = (key.kind, key.name.as_str());
            if kind == Kind::Listener {
                r.listeners.insert(name.to_owned(), h.body.clone());
                continue;
            }
            match parse_resource(kind, name, &h.body) {
                Ok(t) => typed.push((h.order, t)),
                Err(e) => {
                    r.broken.insert(key.clone(), e);
                }
            }
        }
        r.assembly = Assembly::from_typed(typed);
        r
    }

    /// Patches in a delta; it must start from the revision held.
    pub fn apply_delta(&mut self, d: &v1::Delta) -> Result<(), StreamError> {
        if d.base_revision != self.resources.revision {
            return Err(StreamError::Gap { base: d.base_revision, held: self.resources.revision });
        }
        let mut logged = Logged { base: d.base_revision, revision: d.revision, ..Logged::default() };
        for r in &d.removed {
            let k = key(&r.kind, &r.name)?;
            self.resources.items.remove(&k);
            self.set(&k, None);
            logged.removed.push(k);
        }
        for r in &d.upserted {
            let (k, h) = held(r)?;
            self.set(&k, Some(&h));
            logged.upserted.push((k.clone(), h.clone()));
            self.resources.items.insert(k, h);
        }
        self.resources.revision = d.revision;
        self.last_delta = Some(logged);
        Ok(())
    }

    fn set(&mut self, key: &ResourceKey, h: Option<&Held>) {
        let (kind, name) = (key.kind, key.name.as_str());
        self.broken.remove(key);
        if kind == Kind::Listener {
            match h {
                Some(h) => self.listeners.insert(name.to_owned(), h.body.clone()),
                None => self.listeners.remove(name),
            };
            return;
        }
        let typed = match h.map(|h| parse_resource(kind, name, &h.body)) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                self.broken.insert(key.clone(), e);
                None
            }
            None => None,
        };
        self.assembly.set(kind, name, h.map_or(0, |h| h.order), typed);
    }

    /// The config to run: the received resources plus this gateway's listeners and tracing. A listener
    /// takes its settings (TLS, limits) from the `Listener` resource of the same name, if
    /// any, and its address from the gateway's own flags.
    /// Each `Package`'s module comes from `module`. Also says how it differs from the config
    /// this returned before ([`Changed`]).
    pub fn to_config(
        &mut self,
        listen: &[(String, SocketAddr)],
        tracing: Option<&weir_config::spec::TracingSpec>,
        module: impl Fn(&ModuleRef) -> Result<Arc<[u8]>, ModuleError>,
    ) -> Result<(ValidConfig, Changed), ConfigErrors> {
        let mut errs: Vec<ConfigError> = self.broken.values().flat_map(|e| e.iter().cloned()).collect();
        let mut listeners = Vec::with_capacity(listen.len());
        for (name, addr) in listen {
            let mut body = self.listeners.get(name).cloned().unwrap_or_else(|| serde_json::json!({}));
            body["name"] = Value::String(name.clone());
            body["address"] = Value::String(addr.to_string());
            match parse_resource(Kind::Listener, name, &body) {
                Ok(Typed::Listener(l)) => listeners.push(l),
                Ok(_) => {}
                Err(e) => errs.extend(e.0),
            }
        }
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        self.assembly.set_listeners(listeners);
        self.assembly.set_tracing(tracing.cloned());
        self.assembly.validate_changes(module)
    }

    /// The `Package` resources received.
    pub fn packages(&self) -> &[PackageSpec] {
        self.assembly.packages()
    }
}

/// A delta as the disk log keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Logged {
    base: u64,
    revision: u64,
    upserted: Vec<(ResourceKey, Held)>,
    removed: Vec<ResourceKey>,
}

impl Logged {
    fn apply_to(self, r: &mut Resources) {
        for k in &self.removed {
            r.items.remove(k);
        }
        for (k, h) in self.upserted {
            r.items.insert(k, h);
        }
        r.revision = self.revision;
    }
}

/// Deltas logged after a whole snapshot before the next whole one is written (which empties
/// the log), so a cold start replays at most this many.
const MAX_LOGGED: usize = 1000;

/// The last good resources on disk: `snapshot.json`, then `snapshot.log`, one delta per line.
/// Writes go, in order, to one thread of their own, off the async threads; a failed write
/// only costs the next cold start.
#[derive(Debug)]
pub struct Disk {
    tx: std::sync::mpsc::Sender<Write>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The revision the files hold once the writes sent are done (0: none).
    revision: u64,
    /// Deltas in the log after the whole snapshot.
    logged: usize,
}

#[derive(Debug)]
enum Write {
    Whole(Resources),
    Delta(Vec<u8>),
}

impl Disk {
    /// Reads what `dir` holds, if anything, and starts the writer.
    pub fn open(dir: &Path) -> (Self, Option<Resources>) {
        let loaded = load(dir);
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = dir.to_owned();
        let writer = std::thread::Builder::new()
            .name("weir-state".into())
            .spawn(move || write_all(&dir, &rx))
            .map_err(|e| tracing::warn!(error = %e, "cannot start the state writer; nothing will be persisted"))
            .ok();
        let (revision, logged) = loaded.as_ref().map_or((0, 0), |(r, n)| (r.revision, *n));
        (Self { tx, writer, revision, logged }, loaded.map(|(r, _)| r))
    }

    /// Keeps `r`, which now runs: its last delta appended to the log when it follows what the
    /// disk holds, else the whole of it (a copy that shares the map).
    pub fn save(&mut self, r: &Received) {
        let revision = r.resources.revision;
        let delta = r.last_delta.as_ref().filter(|d| d.base == self.revision && d.revision == revision);
        let line = delta.filter(|_| self.logged < MAX_LOGGED).and_then(|d| serde_json::to_vec(d).ok());
        let write = match line {
            Some(line) => {
                self.logged += 1;
                Write::Delta(line)
            }
            None => {
                self.logged = 0;
                Write::Whole(r.resources.clone())
            }
        };
        if self.tx.send(write).is_ok() {
            self.revision = revision;
        }
    }

    /// Waits for the writes sent so far.
    pub fn finish(mut self) {
        let (tx, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The writer thread: each write in turn until the sender is gone.
fn write_all(dir: &Path, rx: &std::sync::mpsc::Receiver<Write>) {
    let mut log: Option<std::fs::File> = None;
    for w in rx {
        let done = match w {
            Write::Whole(r) => {
                log = None;
                save(dir, &r).and_then(|()| match std::fs::remove_file(log_path(dir)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                })
            }
            Write::Delta(line) => append(dir, &mut log, &line),
        };
        if let Err(e) = done {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot persist the applied snapshot");
        }
    }
}

/// Appends one line to the log, opening it (owner-only) the first time.
fn append(dir: &Path, log: &mut Option<std::fs::File>, line: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = match log {
        Some(f) => f,
        None => log.insert(std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(log_path(dir))?),
    };
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line);
    buf.push(b'\n');
    f.write_all(&buf)
}

/// The file that holds the last good resources, whole.
pub fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.json")
}

/// The file of deltas applied after it.
fn log_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.log")
}

/// Reads the persisted resources, if any: the snapshot, then each logged delta that follows
/// it (a torn last line, or one that does not follow, ends the replay). Also says how many
/// deltas were replayed.
fn load(dir: &Path) -> Option<(Resources, usize)> {
    let path = snapshot_path(dir);
    let text = std::fs::read(&path).ok()?;
    let mut r: Resources = match serde_json::from_slice(&text) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable persisted snapshot");
            return None;
        }
    };
    let log = std::fs::read(log_path(dir)).unwrap_or_default();
    let mut replayed = 0;
    for line in log.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Logged>(line) {
            Ok(d) if d.base == r.revision => d.apply_to(&mut r),
            _ => break,
        }
        replayed += 1;
    }
    Some((r, replayed))
}

/// Writes the resources atomically (a reader never sees half a file).
fn save(dir: &Path, r: &Resources) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("snapshot.json.tmp");
    // Owner-only: the snapshot holds consumer keys and any private keys pushed inline.
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(&serde_json::to_vec(r)?)?;
    drop(f);
    std::fs::rename(&tmp, snapshot_path(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(base: u64, name: &str, port: u16, removed: &[&str]) -> v1::Delta {
        let body =
            serde_json::json!({"name": name, "load_balancer": {"endpoints": [{"address": "127.0.0.1", "port": port}]}});
        v1::Delta {
            revision: base + 1,
            base_revision: base,
            upserted: vec![v1::Resource {
                kind: "Upstream".into(),
                name: name.into(),
                version: base + 1,
                body: serde_json::to_vec(&body).unwrap(),
                order: 1,
            }],
            removed: removed.iter().map(|n| v1::ResourceKey { kind: "Upstream".into(), name: (*n).into() }).collect(),
        }
    }

    #[test]
    fn deltas_are_logged_after_a_whole_snapshot_and_replayed_on_a_cold_start() {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, none) = Disk::open(dir.path());
        assert!(none.is_none());
        let mut r = Received::new(Resources { revision: 1, ..Resources::default() });
        disk.save(&r);
        for (base, name, gone) in [(1, "a", &[][..]), (2, "b", &[]), (3, "c", &["a"])] {
            r.apply_delta(&delta(base, name, 10 + base as u16, gone)).unwrap();
            disk.save(&r);
        }
        disk.finish();
        let log = std::fs::read_to_string(dir.path().join("snapshot.log")).unwrap();
        assert_eq!(log.lines().count(), 3, "one line per delta: {log}");
        let (disk, loaded) = Disk::open(dir.path());
        assert_eq!(loaded.as_ref(), Some(&r.resources), "the snapshot and its deltas are what ran");
        assert_eq!((disk.revision, disk.logged), (4, 3));
        disk.finish();

        // A torn last line ends the replay there.
        let torn = format!("{log}{{\"base\":4,\"revis");
        std::fs::write(dir.path().join("snapshot.log"), torn).unwrap();
        assert_eq!(load(dir.path()).map(|(r, n)| (r.revision, n)), Some((4, 3)));
        // A delta that does not follow what the disk holds writes the whole again, and empties the log.
        let (mut disk, _) = Disk::open(dir.path());
        r.apply_delta(&delta(4, "d", 20, &[])).unwrap();
        r.resources.revision = 9;
        disk.save(&r);
        disk.finish();
        assert!(!dir.path().join("snapshot.log").exists());
        assert_eq!(load(dir.path()).map(|(r, n)| (r.revision, n)), Some((9, 0)));
    }
}
