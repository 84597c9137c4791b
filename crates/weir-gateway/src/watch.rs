//! The file config source of standalone mode: load, then watch and re-apply on change.
//!
//! Watches the file's directory rather than the file, so editors that save by rename and
//! Kubernetes ConfigMaps that swap a symlink are both seen, and every plugin package directory
//! the config lists, so a rebuilt `plugin.wasm` is a hot update. A change is applied whole or
//! not at all: an invalid file or package is logged with every error and its path, and the
//! running config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_config::{ConfigErrors, ValidConfig};

use crate::gateway::{ApplyError, Gateway};

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{path}: {rendered}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: ConfigErrors,
        /// The errors, each with its line and column in the file.
        rendered: String,
    },
    /// The config is valid but could not be applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The file could not be watched.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The file.
        path: PathBuf,
        /// What notify said.
        source: notify::Error,
    },
}

/// Reads and validates a config file, with the plugin packages it lists.
pub fn load_file(path: &Path) -> Result<(String, ValidConfig), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
    let cfg = crate::packages::load_config(&text, base_dir(path)).map_err(|errors| LoadError::Invalid {
        path: path.into(),
        rendered: errors.render(&text),
        errors,
    })?;
    Ok((text, cfg))
}

/// The directory a config file's relative paths start from.
fn base_dir(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Applies `path` on every change until `stop` is cancelled. `applied` is the config already
/// running, so an unchanged save is not a new version.
pub async fn watch_file(
    path: PathBuf,
    gw: Arc<Gateway>,
    mut applied: ValidConfig,
    stop: CancellationToken,
) -> Result<(), LoadError> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let recheck = tx.clone();
    let name = path.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let relevant =
            ev.is_ok_and(|ev| ev.kind.is_create() || ev.kind.is_modify() || ev.kind.is_remove() || ev.kind.is_other());
        if relevant {
            // Full channel = a reload is already pending; the events coalesce.
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| LoadError::Watch { path: path.clone(), source })?;
    let dir = base_dir(&path);
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| LoadError::Watch { path: path.clone(), source })?;
    let mut packages = Vec::new();
    watch_packages(&mut watcher, &applied, &mut packages);
    tracing::info!(path = %path.display(), "watching config file");
    // A save between the first read and the watch would otherwise wait for the next one: read
    // once more now (an unchanged file is no new version).
    let _ = recheck.try_send(());
    let _ = name;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            got = rx.recv() => if got.is_none() { return Ok(()) },
        }
        // Let a burst of writes settle so a half-written file is rarely seen.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while rx.try_recv().is_ok() {}
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            continue; // mid-swap; the next event brings the new file
        };
        match crate::packages::load_config(&text, dir) {
            Ok(cfg) if cfg == applied => {}
            Ok(cfg) => match gw.apply(&cfg).await {
                Ok(version) => {
                    tracing::info!(version, path = %path.display(), "config applied");
                    watch_packages(&mut watcher, &cfg, &mut packages);
                    applied = cfg;
                }
                Err(e) => {
                    tracing::error!(error = %e, serving = gw.snapshot().version, "config rejected; still serving the previous version")
                }
            },
            Err(errors) => {
                for e in errors.iter() {
                    tracing::error!(path = %e.path, "{}", e.message);
                }
                tracing::error!(
                    errors = errors.len(),
                    serving = gw.snapshot().version,
                    file = %path.display(),
                    "config rejected; still serving the previous version (run `weir validate -c FILE`)"
                );
            }
        }
    }
}

/// Watches the directory of every package `cfg` uses that is not watched yet.
fn watch_packages(watcher: &mut impl Watcher, cfg: &ValidConfig, watched: &mut Vec<PathBuf>) {
    for dir in cfg.packages().iter().filter_map(|p| p.dir.as_ref()) {
        if watched.contains(dir) {
            continue;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => watched.push(dir.clone()),
            Err(e) => {
                tracing::warn!(package = %dir.display(), error = %e, "cannot watch plugin package; edits to it need a config change")
            }
        }
    }
}
