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

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_config::resources::{self, Kind};
use weir_config::{ConfigErrors, ValidConfig};
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
    /// By `Kind/name`.
    pub items: BTreeMap<String, Held>,
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

fn key(kind: &str, name: &str) -> Result<String, StreamError> {
    let k: Kind = kind.parse().map_err(|e: resources::UnknownKind| StreamError::Bad(name.into(), e.to_string()))?;
    Ok(format!("{k}/{name}"))
}

fn held(r: &v1::Resource) -> Result<(String, Held), StreamError> {
    let body = serde_json::from_slice(&r.body).map_err(|e| StreamError::Bad(r.name.clone(), e.to_string()))?;
    Ok((key(&r.kind, &r.name)?, Held { version: r.version, order: r.order, body }))
}

impl Resources {
    /// Everything at a snapshot's revision.
    pub fn from_snapshot(s: &v1::Snapshot) -> Result<Self, StreamError> {
        let items = s.resources.iter().map(held).collect::<Result<_, _>>()?;
        Ok(Self { revision: s.revision, items })
    }

    /// Patches in a delta; it must start from the revision held.
    pub fn apply_delta(&mut self, d: &v1::Delta) -> Result<(), StreamError> {
        if d.base_revision != self.revision {
            return Err(StreamError::Gap { base: d.base_revision, held: self.revision });
        }
        for r in &d.removed {
            self.items.remove(&key(&r.kind, &r.name)?);
        }
        for r in &d.upserted {
            let (k, h) = held(r)?;
            self.items.insert(k, h);
        }
        self.revision = d.revision;
        Ok(())
    }

    /// The config to run: the received resources plus this gateway's listeners. A listener
    /// takes its settings (TLS, limits) from the `Listener` resource of the same name, if
    /// any, and its address from the gateway's own flags.
    pub fn to_config(&self, listen: &[(String, SocketAddr)]) -> Result<ValidConfig, ConfigErrors> {
        let mut items: Vec<(Kind, u64, Value)> = Vec::with_capacity(self.items.len() + listen.len());
        let mut listener_bodies: BTreeMap<&str, &Value> = BTreeMap::new();
        for (k, h) in &self.items {
            let Some((kind, name)) = k.split_once('/') else { continue };
            let Ok(kind) = kind.parse::<Kind>() else { continue };
            if kind == Kind::Listener {
                listener_bodies.insert(name, &h.body);
            } else {
                items.push((kind, h.order, h.body.clone()));
            }
        }
        for (i, (name, addr)) in listen.iter().enumerate() {
            let mut body = listener_bodies.get(name.as_str()).map_or_else(|| serde_json::json!({}), |b| (*b).clone());
            body["name"] = Value::String(name.clone());
            body["address"] = Value::String(addr.to_string());
            items.push((Kind::Listener, i as u64, body));
        }
        items.sort_by_key(|(k, o, _)| (*k, *o));
        let (doc, index) = resources::assemble(items.iter().map(|(k, _, b)| (*k, b)));
        let spec = weir_config::parse_value(doc).map_err(|e| index.relabel(e))?;
        weir_config::validate(spec).map_err(|e| index.relabel(e))
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
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("snapshot.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(r)?)?;
    std::fs::rename(&tmp, snapshot_path(dir))
}
