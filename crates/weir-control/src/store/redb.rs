//! The embedded backend: one redb file, one write transaction per revision. Only one process
//! may open it. Trimming folds the oldest history entries into the `base` table (the
//! resources as they were at `meta.base`) in one transaction.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Revision, State, StoreError, Stored, loaded, resource_key};

const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The resources at revision `meta.base`, which the history starts after.
const BASE: TableDefinition<&str, &[u8]> = TableDefinition::new("base");
/// Plugin modules by sha256.
const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");
/// Control-plane records that are not config (the rollout), by name.
const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");

/// A redb file.
#[derive(Debug)]
pub(super) struct Redb(Database);

impl Redb {
    /// Opens (or creates) the file and loads the state in it.
    pub(super) fn open(path: &Path) -> Result<(Self, State), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(StoreError::from)?;
        }
        let db = Database::create(path).map_err(|e| StoreError::from(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(StoreError::from)?;
        {
            tx.open_table(RESOURCES).map_err(StoreError::from)?;
            tx.open_table(HISTORY).map_err(StoreError::from)?;
            tx.open_table(META).map_err(StoreError::from)?;
            tx.open_table(MODULES).map_err(StoreError::from)?;
            tx.open_table(BASE).map_err(StoreError::from)?;
            tx.open_table(DOCS).map_err(StoreError::from)?;
        }
        tx.commit().map_err(StoreError::from)?;
        let rx = db.begin_read().map_err(StoreError::from)?;
        let meta = rx.open_table(META).map_err(StoreError::from)?;
        let revision = meta.get("revision").map_err(StoreError::from)?.map_or(0, |v| v.value());
        let next_order = meta.get("order").map_err(StoreError::from)?.map_or(0, |v| v.value());
        let base = meta.get("base").map_err(StoreError::from)?.map_or(0, |v| v.value());
        let table = rx.open_table(RESOURCES).map_err(StoreError::from)?;
        let mut resources = Vec::new();
        for row in table.iter().map_err(StoreError::from)? {
            let (_, v) = row.map_err(StoreError::from)?;
            resources.push(serde_json::from_slice::<Stored>(v.value()).map_err(StoreError::from)?);
        }
        drop((meta, table, rx));
        Ok((Self(db), loaded(revision, next_order, base, resources)))
    }

    /// Writes revision `rev` (its resources, its history entry, the counters) in one
    /// transaction.
    pub(super) fn commit(&mut self, rev: &Revision, order: u64) -> Result<(), StoreError> {
        let tx = self.0.begin_write().map_err(StoreError::from)?;
        {
            let mut res = tx.open_table(RESOURCES).map_err(StoreError::from)?;
            for c in &rev.changes {
                let key = resource_key(c.kind, &c.name);
                match &c.after {
                    Some(s) => {
                        let bytes = serde_json::to_vec(s).map_err(StoreError::from)?;
                        res.insert(key.as_str(), bytes.as_slice()).map_err(StoreError::from)?;
                    }
                    None => {
                        res.remove(key.as_str()).map_err(StoreError::from)?;
                    }
                }
            }
            let mut hist = tx.open_table(HISTORY).map_err(StoreError::from)?;
            let bytes = serde_json::to_vec(rev).map_err(StoreError::from)?;
            hist.insert(rev.revision, bytes.as_slice()).map_err(StoreError::from)?;
            let mut meta = tx.open_table(META).map_err(StoreError::from)?;
            meta.insert("revision", rev.revision).map_err(StoreError::from)?;
            meta.insert("order", order).map_err(StoreError::from)?;
        }
        tx.commit().map_err(StoreError::from)
    }

    /// Stores a module (one transaction; a module is never changed once stored).
    pub(super) fn put_module(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let tx = self.0.begin_write().map_err(StoreError::from)?;
        tx.open_table(MODULES).map_err(StoreError::from)?.insert(sha256, bytes).map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)
    }

    /// Writes the record `name`.
    pub(super) fn put_doc(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let tx = self.0.begin_write().map_err(StoreError::from)?;
        tx.open_table(DOCS).map_err(StoreError::from)?.insert(name, bytes).map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)
    }

    /// The record `name`, if written.
    pub(super) fn doc(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rx = self.0.begin_read().map_err(StoreError::from)?;
        let table = rx.open_table(DOCS).map_err(StoreError::from)?;
        Ok(table.get(name).map_err(StoreError::from)?.map(|v| v.value().to_vec()))
    }

    /// The module stored under `sha256`, if any.
    pub(super) fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rx = self.0.begin_read().map_err(StoreError::from)?;
        let table = rx.open_table(MODULES).map_err(StoreError::from)?;
        Ok(table.get(sha256).map_err(StoreError::from)?.map(|v| v.value().to_vec()))
    }

    /// Every revision, newest first, at most `limit`.
    pub(super) fn history(&self, limit: usize) -> Result<Vec<Revision>, StoreError> {
        let rx = self.0.begin_read().map_err(StoreError::from)?;
        let hist = rx.open_table(HISTORY).map_err(StoreError::from)?;
        let mut out = Vec::new();
        for row in hist.iter().map_err(StoreError::from)?.rev().take(limit) {
            let (_, v) = row.map_err(StoreError::from)?;
            out.push(serde_json::from_slice(v.value()).map_err(StoreError::from)?);
        }
        Ok(out)
    }

    /// The base revision, the resources at it, and the revisions after it up to `at`, oldest
    /// first, read in one transaction.
    pub(super) fn base_and_history(&self, at: u64) -> Result<(u64, Vec<Stored>, Vec<Revision>), StoreError> {
        let rx = self.0.begin_read().map_err(StoreError::from)?;
        let meta = rx.open_table(META).map_err(StoreError::from)?;
        let base = meta.get("base").map_err(StoreError::from)?.map_or(0, |v| v.value());
        let mut resources = Vec::new();
        for row in rx.open_table(BASE).map_err(StoreError::from)?.iter().map_err(StoreError::from)? {
            let (_, v) = row.map_err(StoreError::from)?;
            resources.push(serde_json::from_slice(v.value()).map_err(StoreError::from)?);
        }
        let hist = rx.open_table(HISTORY).map_err(StoreError::from)?;
        let mut revs = Vec::new();
        for row in hist.range(base + 1..=at.max(base)).map_err(StoreError::from)? {
            let (_, v) = row.map_err(StoreError::from)?;
            revs.push(serde_json::from_slice(v.value()).map_err(StoreError::from)?);
        }
        Ok((base, resources, revs))
    }

    /// Folds the history up to revision `upto` into the base, in one transaction; returns the
    /// new base.
    pub(super) fn trim(&mut self, upto: u64) -> Result<u64, StoreError> {
        let tx = self.0.begin_write().map_err(StoreError::from)?;
        {
            let mut meta = tx.open_table(META).map_err(StoreError::from)?;
            let base = meta.get("base").map_err(StoreError::from)?.map_or(0, |v| v.value());
            let mut table = tx.open_table(BASE).map_err(StoreError::from)?;
            let mut hist = tx.open_table(HISTORY).map_err(StoreError::from)?;
            for r in base + 1..=upto {
                let Some(bytes) = hist.remove(r).map_err(StoreError::from)? else { continue };
                let rev: Revision = serde_json::from_slice(bytes.value()).map_err(StoreError::from)?;
                drop(bytes);
                for c in &rev.changes {
                    let key = resource_key(c.kind, &c.name);
                    match &c.after {
                        Some(s) => {
                            let v = serde_json::to_vec(s).map_err(StoreError::from)?;
                            table.insert(key.as_str(), v.as_slice()).map_err(StoreError::from)?;
                        }
                        None => {
                            table.remove(key.as_str()).map_err(StoreError::from)?;
                        }
                    }
                }
            }
            meta.insert("base", upto.max(base)).map_err(StoreError::from)?;
        }
        tx.commit().map_err(StoreError::from)?;
        Ok(upto)
    }
}
