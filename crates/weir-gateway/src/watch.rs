//! The file config source of standalone mode: load, then watch and re-apply on change.
//!
//! Watches the file's directory rather than the file, so editors that save by rename and
//! Kubernetes ConfigMaps that swap a symlink are both seen. A change is applied whole or not
//! at all: an invalid file is logged with every error and its path, and the running config
//! keeps serving.

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
    #[error("{path}: {errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: ConfigErrors,
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

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<(String, ValidConfig), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
    let cfg = weir_config::load_yaml(&text).map_err(|errors| LoadError::Invalid { path: path.into(), errors })?;
    Ok((text, cfg))
}

/// Applies `path` on every change until `stop` is cancelled. `applied` is the text of the
/// config already running, so an unchanged save is not a new version.
pub async fn watch_file(
    path: PathBuf,
    gw: Arc<Gateway>,
    mut applied: String,
    stop: CancellationToken,
) -> Result<(), LoadError> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
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
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| LoadError::Watch { path: path.clone(), source })?;
    tracing::info!(path = %path.display(), "watching config file");
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
        if text == applied {
            continue;
        }
        match weir_config::load_yaml(&text) {
            Ok(cfg) => match gw.apply(&cfg).await {
                Ok(version) => {
                    tracing::info!(version, path = %path.display(), "config applied");
                    applied = text;
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
