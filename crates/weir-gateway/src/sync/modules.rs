//! The plugin modules a gateway holds for the `Package` resources it received.
//!
//! Owns: fetching each module it lacks from its control plane once (`GetModule`, by sha256),
//! refusing bytes that do not match their hash, keeping modules in memory and under
//! `STATE_DIR/modules/` (so a cold start without a control plane still has them), and
//! dropping those no package names any more.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use weir_config::package::{ModuleError, ModuleRef, is_sha256};

use crate::packages::sha256_hex;

/// Modules by sha256.
#[derive(Debug, Default)]
pub struct Modules {
    /// `STATE_DIR/modules`.
    dir: PathBuf,
    held: HashMap<String, Arc<[u8]>>,
    /// Why the last fetch of a module failed, for the NACK.
    failed: HashMap<String, String>,
}

impl Modules {
    /// Modules kept under `state_dir/modules`.
    pub fn new(state_dir: &std::path::Path) -> Self {
        Self { dir: state_dir.join("modules"), ..Self::default() }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.wasm"))
    }

    /// Whether the module is held (in memory, or on disk with the right hash).
    pub fn has(&mut self, sha256: &str) -> bool {
        if self.held.contains_key(sha256) {
            return true;
        }
        if !is_sha256(sha256) {
            return false;
        }
        match std::fs::read(self.path(sha256)) {
            Ok(bytes) if sha256_hex(&bytes) == sha256 => {
                self.held.insert(sha256.to_owned(), Arc::from(bytes));
                true
            }
            Ok(_) => {
                tracing::warn!(module = %sha256, "a kept module does not match its hash; fetching it again");
                false
            }
            Err(_) => false,
        }
    }

    /// Takes fetched bytes, if they are what `sha256` names; keeps a copy on disk.
    pub fn insert(&mut self, sha256: &str, bytes: Vec<u8>) -> Result<(), String> {
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(format!("the control plane sent a module whose sha256 is {actual}, not {sha256}; refused"));
        }
        if let Err(e) = write_atomic(&self.dir, &self.path(sha256), &bytes) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot keep a module on disk; a cold start will fetch it again");
        }
        self.failed.remove(sha256);
        self.held.insert(sha256.to_owned(), Arc::from(bytes));
        Ok(())
    }

    /// Records why a module could not be fetched.
    pub fn fetch_failed(&mut self, sha256: &str, why: String) {
        self.failed.insert(sha256.to_owned(), why);
    }

    /// The bytes of a module a package names, or why there are none.
    pub fn resolve(&self, m: &ModuleRef) -> Result<Arc<[u8]>, ModuleError> {
        match self.held.get(&m.sha256) {
            Some(b) => ModuleError::check_size(m, b.len()).map(|()| b.clone()),
            None => Err(match self.failed.get(&m.sha256) {
                Some(why) => ModuleError::Unavailable {
                    sha256: m.sha256.clone(),
                    reason: format!("fetching it from the control plane failed: {why}"),
                },
                None => ModuleError::Missing {
                    sha256: m.sha256.clone(),
                    hint: "it was not received from the control plane",
                },
            }),
        }
    }

    /// Forgets (in memory and on disk) every module not in `keep`.
    pub fn retain(&mut self, keep: &HashSet<&str>) {
        self.held.retain(|sha, _| keep.contains(sha.as_str()));
        self.failed.retain(|sha, _| keep.contains(sha.as_str()));
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            let stem = name.to_str().and_then(|n| n.strip_suffix(".wasm"));
            if stem.is_some_and(|s| !keep.contains(s)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_checked_kept_on_disk_and_dropped_when_unused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"\0asm\x01\0\0\0".to_vec();
        let sha = sha256_hex(&bytes);
        let mut m = Modules::new(dir.path());
        assert!(!m.has(&sha));
        assert!(m.insert(&"0".repeat(64), bytes.clone()).unwrap_err().contains("refused"));
        m.insert(&sha, bytes.clone()).unwrap();
        let r = ModuleRef { sha256: sha.clone(), size: bytes.len() as u64 };
        assert_eq!(&*m.resolve(&r).unwrap(), bytes.as_slice());
        // A cold start finds it on disk.
        let mut again = Modules::new(dir.path());
        assert!(again.has(&sha));
        // A tampered copy is not taken.
        std::fs::write(dir.path().join("modules").join(format!("{sha}.wasm")), b"evil").unwrap();
        assert!(!Modules::new(dir.path()).has(&sha));
        again.retain(&HashSet::new());
        assert!(again.resolve(&r).is_err());
        assert!(!dir.path().join("modules").join(format!("{sha}.wasm")).exists());
    }
}
