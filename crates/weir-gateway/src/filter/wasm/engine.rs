//! The process's one wasm engine and what outlives a plugin version: compiled modules shared by
//! every route that uses the same package (by sha256, held weakly, so an old version's module
//! is freed with its last filter), and each plugin's shared state (data, queues, metrics) by
//! name, kept across hot updates.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use weir_config::package::Package;
use weir_wasm::{Limits, LoadError, Plugin, Runtime, Shared};

use crate::filter::PackageFailure;

/// The engine, its epoch thread, and the caches.
#[derive(Debug)]
pub(crate) struct Engine {
    runtime: Runtime,
    modules: Mutex<HashMap<String, Weak<Plugin>>>,
    shared: Mutex<HashMap<String, Arc<Shared>>>,
}

static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();

/// The engine, started when the first plugin is loaded.
pub(crate) fn engine() -> Result<&'static Engine, String> {
    ENGINE
        .get_or_init(|| {
            let runtime = Runtime::new().map_err(|e| e.to_string())?;
            Ok(Engine { runtime, modules: Mutex::default(), shared: Mutex::default() })
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl Engine {
    /// The compiled module of `pkg`, compiled now unless a live filter already has it.
    pub(crate) fn plugin(&self, pkg: &Package) -> Result<Arc<Plugin>, LoadError> {
        let key = format!("{}:{:?}:{}", pkg.sha256, pkg.meta.limits, pkg.meta.root_id);
        if let Some(p) = self.modules.lock().get(&key).and_then(Weak::upgrade) {
            return Ok(p);
        }
        let limits = Limits { cpu: pkg.meta.limits.cpu.0, memory: pkg.meta.limits.memory.0 as usize };
        let shared = self.shared(&pkg.meta.name);
        let p = Arc::new(
            Plugin::compile(&self.runtime, &pkg.meta.name, &pkg.wasm, shared, limits)?.with_root_id(&pkg.meta.root_id),
        );
        let mut m = self.modules.lock();
        m.retain(|_, w| w.strong_count() > 0);
        m.insert(key, Arc::downgrade(&p));
        Ok(p)
    }

    /// The state plugin `name` shares across its instances and versions.
    pub(crate) fn shared(&self, name: &str) -> Arc<Shared> {
        self.shared.lock().entry(name.to_owned()).or_default().clone()
    }

    /// Every plugin's shared state, for `/metrics`.
    pub(crate) fn all_shared(&self) -> Vec<(String, Arc<Shared>)> {
        self.shared.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Checks a package the way registration does, without a gateway: compiles the module, checks
/// its imports and exports, and starts a canary instance configured with `config`.
pub fn check_package(pkg: &Package, config: &serde_json::Value) -> Result<(), PackageFailure> {
    let e = engine().map_err(PackageFailure::Engine)?;
    let p = e.plugin(pkg).map_err(|e| PackageFailure::Load(e.to_string()))?;
    let cfg = serde_json::to_vec(config).unwrap_or_default();
    p.start(b"", &cfg).map(drop).map_err(|f| PackageFailure::Start(f.to_string()))
}

/// Compiles a package's module and checks its imports and exports, without starting it (for
/// a package whose configuration is not known yet).
pub fn compile_package(pkg: &Package) -> Result<(), PackageFailure> {
    engine().map_err(PackageFailure::Engine)?.plugin(pkg).map(drop).map_err(|e| PackageFailure::Load(e.to_string()))
}

/// Prometheus text for every metric plugins defined (`weir_plugin_metric{plugin,name}`).
pub fn encode_metrics(out: &mut String) {
    // A gateway that never loaded a plugin never starts the engine.
    let Some(Ok(e)) = ENGINE.get() else { return };
    let all = e.all_shared();
    if all.iter().all(|(_, s)| s.metrics().is_empty()) {
        return;
    }
    out.push_str("# HELP weir_plugin_metric A metric a wasm plugin defined (proxy_define_metric).\n");
    out.push_str("# TYPE weir_plugin_metric gauge\n");
    for (plugin, s) in all {
        for m in s.metrics() {
            let name = m.name.replace(['\\', '"', '\n'], "_");
            let _ = writeln!(out, "weir_plugin_metric{{plugin=\"{plugin}\",name=\"{name}\"}} {}", m.value);
        }
    }
}
