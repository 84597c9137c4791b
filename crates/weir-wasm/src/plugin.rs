//! Compiling a plugin: the engine (cranelift, epoch interruption), the check of a module's
//! imports and exports against this host before anything runs, and the limits each of its
//! instances gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Engine, ExternType, InstancePre, Module};

use crate::calls::Host;
use crate::cpu::{CpuClock, thread_cpu_time};
use crate::host::HostState;
use crate::instance::{Fault, Instance};
use crate::shared::Shared;

/// How often the engine's epoch advances; CPU caps are measured in these ticks.
pub(crate) const TICK: Duration = Duration::from_millis(2);

/// The ABI versions this host speaks (exported by the module as a marker function).
const ABI: &[&str] = &["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"];

/// What every instance of a plugin may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// CPU time one callback may take before it is interrupted.
    pub cpu: Duration,
    /// Linear memory an instance may grow to.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { cpu: Duration::from_millis(10), memory: 64 << 20 }
    }
}

/// Why a module cannot be a plugin here.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not valid WebAssembly, or cranelift refused it.
    #[error("the module does not compile: {0}")]
    Compile(String),
    /// It imports functions this host does not define.
    #[error("the module imports what this host does not provide: {}", .0.join(", "))]
    Imports(Vec<String>),
    /// It does not speak proxy-wasm 0.2.x.
    #[error("{0}")]
    Abi(String),
    /// Its first instance failed to start or be configured.
    #[error("the plugin failed to start: {0}")]
    Start(Fault),
}

/// The engine all plugins compile for, with the thread that advances its epoch.
pub struct Runtime {
    engine: Engine,
    host: Arc<Host>,
    stop: Arc<AtomicBool>,
    cpu_clock: CpuClock,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("host", &self.host).finish_non_exhaustive()
    }
}

impl Runtime {
    /// An engine, its host functions, and its epoch ticker; CPU caps are measured on each
    /// thread's CPU clock.
    pub fn new() -> Result<Self, LoadError> {
        Self::with_cpu_clock(Arc::new(thread_cpu_time))
    }

    /// The same, with CPU time read from `cpu_clock` (tests hold it still or move it on).
    pub fn with_cpu_clock(cpu_clock: CpuClock) -> Result<Self, LoadError> {
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true)
            .parallel_compilation(false)
            .max_wasm_stack(512 << 10)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&cfg).map_err(|e| LoadError::Compile(e.to_string()))?;
        let host = Arc::new(Host::new(&engine).map_err(|e| LoadError::Compile(e.to_string()))?);
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("weir-wasm-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    e.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Compile(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self { engine, host, stop, cpu_clock })
    }

    /// Every host function, as `module.name`.
    pub fn host_functions(&self) -> impl Iterator<Item = String> + '_ {
        self.host.names.iter().map(|(m, n)| format!("{m}.{n}"))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Compiles a module on the calling thread.
///
/// Cranelift allocates tens of MiB while it compiles. On threads of their own (wasmtime's
/// parallel compilation), part of that memory stays with threads that exit or sit idle: the
/// allocator keeps pages holding the module's data for those threads, so each hot update left
/// the gateway a MiB or two larger. On the caller's thread it is all in one heap, which the
/// embedder can collect once the old version is released.
fn compile(engine: &Engine, wasm: &[u8]) -> Result<Module, LoadError> {
    Module::new(engine, wasm).map_err(|e| LoadError::Compile(format!("{e:#}")))
}

/// A compiled plugin, ready to be instantiated once per worker.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) name: Arc<str>,
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) limits: Limits,
    pub(crate) root_id: Arc<str>,
    pub(crate) cpu_clock: CpuClock,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("limits", &self.limits).finish()
    }
}

impl Plugin {
    /// Compiles `wasm` and checks it against the host: every import defined, a proxy-wasm
    /// 0.2.x ABI marker, a memory and an allocator exported. Nothing runs yet.
    pub fn compile(
        rt: &Runtime,
        name: &str,
        wasm: &[u8],
        shared: Arc<Shared>,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let module = compile(&rt.engine, wasm)?;
        check_imports(&rt.host, &module)?;
        check_exports(&module)?;
        let pre = rt.host.linker.instantiate_pre(&module).map_err(|e| LoadError::Imports(vec![format!("{e:#}")]))?;
        Ok(Self {
            name: Arc::from(name),
            engine: rt.engine.clone(),
            pre,
            shared,
            limits,
            root_id: Arc::from(""),
            cpu_clock: rt.cpu_clock.clone(),
        })
    }

    /// The root id its instances report (`plugin_root_id`; empty by default, as in Envoy).
    pub fn with_root_id(mut self, root_id: &str) -> Self {
        self.root_id = Arc::from(root_id);
        self
    }

    /// Starts an instance: `_initialize`, the root context, `on_vm_start` and `on_configure`
    /// with these configurations.
    pub fn start(&self, vm_config: &[u8], config: &[u8]) -> Result<Instance, Fault> {
        Instance::start(self, vm_config, config)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state its instances share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

fn check_imports(host: &Host, module: &Module) -> Result<(), LoadError> {
    let missing: Vec<String> = module
        .imports()
        .filter(|i| !(matches!(i.ty(), ExternType::Func(_)) && host.defines(i.module(), i.name())))
        .map(|i| format!("{}.{}", i.module(), i.name()))
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(LoadError::Imports(missing)) }
}

fn check_exports(module: &Module) -> Result<(), LoadError> {
    let has = |n: &str| module.get_export(n).is_some();
    if !ABI.iter().any(|a| has(a)) {
        let why = if has("proxy_abi_version_0_1_0") {
            "the module speaks proxy-wasm ABI 0.1.0; rebuild it with an SDK for 0.2.1".to_owned()
        } else {
            format!("the module is not a proxy-wasm plugin: it exports none of {}", ABI.join(", "))
        };
        return Err(LoadError::Abi(why));
    }
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(LoadError::Abi("the module exports no memory".into()));
    }
    if !has("proxy_on_memory_allocate") && !has("malloc") {
        return Err(LoadError::Abi("the module exports no allocator (proxy_on_memory_allocate or malloc)".into()));
    }
    Ok(())
}
