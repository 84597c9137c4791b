//! What a gateway received from its control plane, turned into a config it can apply, and
//! the copy it keeps on disk.
//!
//! Owns: the resource map at the last received revision (snapshots replace it, deltas patch
//! it), assembling it with the gateway's own listeners into a [`ValidConfig`] (the same
//! validation a file gets), and persisting the last good one atomically (write + rename) so
//! the gateway cold-starts without its control plane.

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
        for r in &d.removed {
            let k = key(&r.kind, &r.name)?;
            self.resources.items.remove(&k);
            self.set(&k, None);
        }
        for r in &d.upserted {
            let (k, h) = held(r)?;
            self.set(&k, Some(&h));
            self.resources.items.insert(k, h);
        }
        self.resources.revision = d.revision;
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

/// The file that holds the last good resources.
pub fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.json")
}

/// Reads the persisted resources, if any.
pub fn load(dir: &Path) -> Option<Resources> {
    let path = snapshot_path(dir);
    let text = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable persisted snapshot");
            None
        }
    }
}

/// Writes the resources atomically (a reader never sees half a file).
pub fn save(dir: &Path, r: &Resources) -> std::io::Result<()> {
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
