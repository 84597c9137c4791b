//! What one instance's store holds: the plugin's identity, its shared state, the stream lent
//! for the current callback, and the limits that keep a plugin from harming the gateway.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use crate::shared::Shared;
use crate::stream::{CallResponse, HttpCall, Stream};

/// The store data of one instance.
pub(crate) struct HostState {
    /// The plugin's name (`plugin_name`, log lines).
    pub(crate) plugin: Arc<str>,
    /// `plugin_root_id`: the root context the module should create (SDKs that register
    /// several by name, such as AssemblyScript's, look it up).
    pub(crate) root_id: Arc<str>,
    /// State shared by the plugin's instances.
    pub(crate) shared: Arc<Shared>,
    /// This instance's number among them (a queue's owner).
    pub(crate) instance: u64,
    /// `VM_CONFIGURATION`, readable in `on_vm_start`.
    pub(crate) vm_config: Arc<[u8]>,
    /// `PLUGIN_CONFIGURATION`, readable in `on_configure`.
    pub(crate) plugin_config: Arc<[u8]>,
    /// Which configuration buffer the current callback may read.
    pub(crate) configuring: bool,
    /// The stream lent for this callback (empty outside stream callbacks).
    pub(crate) stream: Stream,
    /// The context the lent stream belongs to (0: none).
    pub(crate) lent: u32,
    /// The root context.
    pub(crate) root: u32,
    /// The answer `on_http_call_response` may read.
    pub(crate) call_response: Option<CallResponse>,
    /// Callouts dispatched outside a stream (from `on_tick`, `on_configure`).
    pub(crate) root_calls: Vec<HttpCall>,
    /// Next callout token.
    pub(crate) next_token: u32,
    /// `proxy_set_tick_period_milliseconds`.
    pub(crate) tick: Option<Duration>,
    /// The module's memory and allocator, once instantiated.
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<i32, i32>>,
    /// Bytes of linear memory the instance may grow to.
    pub(crate) memory_limit: usize,
    /// Set when the instance tried to grow past `memory_limit`.
    pub(crate) memory_exceeded: bool,
    /// Bytes being handed to the plugin (kept to save an allocation per call).
    pub(crate) scratch: Vec<u8>,
    /// The thread's CPU clock when the current call first ran a cap of wall time.
    pub(crate) cpu_mark: Option<Duration>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState").field("plugin", &self.plugin).field("lent", &self.lent).finish_non_exhaustive()
    }
}

impl HostState {
    pub(crate) fn new(plugin: Arc<str>, root_id: Arc<str>, shared: Arc<Shared>, memory_limit: usize) -> Self {
        Self {
            plugin,
            root_id,
            instance: shared.new_instance(),
            shared,
            vm_config: Arc::from(&b""[..]),
            plugin_config: Arc::from(&b""[..]),
            configuring: false,
            stream: Stream::default(),
            lent: 0,
            root: 0,
            call_response: None,
            root_calls: Vec::new(),
            next_token: 1,
            tick: None,
            memory: None,
            alloc: None,
            memory_limit,
            memory_exceeded: false,
            cpu_mark: None,
            scratch: Vec::new(),
        }
    }

    /// A fresh callout token.
    pub(crate) fn token(&mut self) -> u32 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1);
        t
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            wasmtime::bail!("plugin memory limit of {} bytes reached", self.memory_limit);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}
