//! One running instance of a plugin: its store, its root context and the callbacks it
//! exports. Every call runs under the plugin's CPU deadline and memory cap; a call that traps,
//! runs out of time or memory breaks the instance for good (the embedder builds a new one).

use std::time::Duration;

use wasmtime::{Instance as Wasm, Store, TypedFunc, WasmParams, WasmResults};

use crate::abi::Action;
use crate::cpu;
use crate::host::HostState;
use crate::plugin::Plugin;
use crate::stream::{CallResponse, HttpCall, Stream};

/// Calls `f` under the CPU deadline of `ticks`; a failure sets `broken`.
fn call<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    broken: &mut bool,
    ticks: u64,
    cap: Duration,
    f: &TypedFunc<P, R>,
    args: P,
) -> Result<R, Fault> {
    store.set_epoch_deadline(ticks);
    store.data_mut().cpu_mark = None;
    f.call(&mut *store, args).map_err(|e| {
        *broken = true;
        classify(store, cap, &e)
    })
}

/// Why a callback did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The plugin trapped (a panic, `unreachable`, a bad memory access …).
    #[error("the plugin trapped: {0}")]
    Trap(String),
    /// It ran past its CPU limit.
    #[error("the plugin ran past its CPU limit of {0:?}")]
    Cpu(Duration),
    /// It tried to grow past its memory limit.
    #[error("the plugin tried to grow past its memory limit of {0} bytes")]
    Memory(usize),
    /// `on_vm_start` or `on_configure` returned false.
    #[error("the plugin refused its configuration ({0} returned false)")]
    Refused(&'static str),
    /// An export has the wrong signature for ABI 0.2.1.
    #[error("the plugin exports {0} with a signature ABI 0.2.1 does not have")]
    Signature(&'static str),
    /// An earlier fault broke this instance.
    #[error("the instance is broken by an earlier fault")]
    Broken,
}

type F<P, R> = Option<TypedFunc<P, R>>;

/// The callbacks a module exports (all optional).
struct Callbacks {
    create: F<(i32, i32), ()>,
    vm_start: F<(i32, i32), i32>,
    configure: F<(i32, i32), i32>,
    tick: F<i32, ()>,
    queue_ready: F<(i32, i32), ()>,
    request_headers: F<(i32, i32, i32), i32>,
    request_body: F<(i32, i32, i32), i32>,
    request_trailers: F<(i32, i32), i32>,
    response_headers: F<(i32, i32, i32), i32>,
    response_body: F<(i32, i32, i32), i32>,
    response_trailers: F<(i32, i32), i32>,
    call_response: F<(i32, i32, i32, i32, i32), ()>,
    log: F<i32, ()>,
    done: F<i32, i32>,
    delete: F<i32, ()>,
}

fn export<P: WasmParams, R: WasmResults>(
    i: &Wasm,
    s: &mut Store<HostState>,
    name: &'static str,
) -> Result<F<P, R>, Fault> {
    match i.get_func(&mut *s, name) {
        None => Ok(None),
        Some(f) => f.typed(&*s).map(Some).map_err(|_| Fault::Signature(name)),
    }
}

impl Callbacks {
    fn of(i: &Wasm, s: &mut Store<HostState>) -> Result<Self, Fault> {
        Ok(Self {
            create: export(i, s, "proxy_on_context_create")?,
            vm_start: export(i, s, "proxy_on_vm_start")?,
            configure: export(i, s, "proxy_on_configure")?,
            tick: export(i, s, "proxy_on_tick")?,
            queue_ready: export(i, s, "proxy_on_queue_ready")?,
            request_headers: export(i, s, "proxy_on_request_headers")?,
            request_body: export(i, s, "proxy_on_request_body")?,
            request_trailers: export(i, s, "proxy_on_request_trailers")?,
            response_headers: export(i, s, "proxy_on_response_headers")?,
            response_body: export(i, s, "proxy_on_response_body")?,
            response_trailers: export(i, s, "proxy_on_response_trailers")?,
            call_response: export(i, s, "proxy_on_http_call_response")?,
            log: export(i, s, "proxy_on_log")?,
            done: export(i, s, "proxy_on_done")?,
            delete: export(i, s, "proxy_on_delete")?,
        })
    }
}

/// A started instance with its root context.
pub struct Instance {
    store: Store<HostState>,
    cb: Callbacks,
    root: u32,
    next: u32,
    ticks: u64,
    cpu: Duration,
    broken: bool,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("plugin", &self.store.data().plugin).field("broken", &self.broken).finish()
    }
}

impl Instance {
    pub(crate) fn start(p: &Plugin, vm_config: &[u8], config: &[u8]) -> Result<Self, Fault> {
        let mut host = HostState::new(p.name.clone(), p.root_id.clone(), p.shared.clone(), p.limits.memory);
        host.vm_config = vm_config.into();
        host.plugin_config = config.into();
        let mut store = Store::new(&p.engine, host);
        store.limiter(|h| h as &mut dyn wasmtime::ResourceLimiter);
        let (clock, cap) = (p.cpu_clock.clone(), p.limits.cpu);
        store.epoch_deadline_callback(move |mut cx| Ok(cpu::on_deadline(&mut cx.data_mut().cpu_mark, clock(), cap)));
        let ticks = cpu::ticks(cap);
        store.set_epoch_deadline(ticks);
        let wasm = p.pre.instantiate(&mut store).map_err(|e| classify(&store, p.limits.cpu, &e))?;
        let memory = wasm.get_memory(&mut store, "memory");
        let alloc = export(&wasm, &mut store, "proxy_on_memory_allocate")
            .transpose()
            .or_else(|| export(&wasm, &mut store, "malloc").transpose())
            .transpose()?;
        store.data_mut().memory = memory;
        store.data_mut().alloc = alloc;
        let cb = Callbacks::of(&wasm, &mut store)?;
        let mut me = Self { store, cb, root: 1, next: 2, ticks, cpu: p.limits.cpu, broken: false };
        for entry in ["_initialize", "_start"] {
            if let Some(f) = export::<(), ()>(&wasm, &mut me.store, entry)? {
                call(&mut me.store, &mut me.broken, me.ticks, me.cpu, &f, ())?;
                break;
            }
        }
        me.store.data_mut().root = me.root;
        me.store.data_mut().configuring = true;
        let started = me.configure(vm_config.len(), config.len());
        me.store.data_mut().configuring = false;
        started.map(|()| me)
    }

    fn configure(&mut self, vm_len: usize, cfg_len: usize) -> Result<(), Fault> {
        let root = self.root as i32;
        self.run(|c| &c.create, (root, 0))?;
        if self.run(|c| &c.vm_start, (root, vm_len as i32))? == Some(0) {
            return Err(Fault::Refused("on_vm_start"));
        }
        if self.run(|c| &c.configure, (root, cfg_len as i32))? == Some(0) {
            return Err(Fault::Refused("on_configure"));
        }
        Ok(())
    }

    /// Calls the callback `pick` names under the CPU deadline; a failure breaks the instance.
    /// The callback is borrowed, not cloned: a clone costs a type-registry reference count.
    fn run<P: WasmParams, R: WasmResults>(
        &mut self,
        pick: impl FnOnce(&Callbacks) -> &F<P, R>,
        args: P,
    ) -> Result<Option<R>, Fault> {
        if self.broken {
            return Err(Fault::Broken);
        }
        let Some(f) = pick(&self.cb) else { return Ok(None) };
        call(&mut self.store, &mut self.broken, self.ticks, self.cpu, f, args).map(Some)
    }

    /// Lends `s` to the instance as context `id` for the length of `f`.
    fn lend<T>(&mut self, id: u32, s: &mut Stream, f: impl FnOnce(&mut Self) -> T) -> T {
        let h = self.store.data_mut();
        std::mem::swap(&mut h.stream, s);
        h.lent = id;
        let r = f(self);
        let h = self.store.data_mut();
        h.lent = 0;
        std::mem::swap(&mut h.stream, s);
        r
    }

    /// Whether a fault broke it.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Opens an HTTP context under the root context.
    pub fn open(&mut self) -> Result<u32, Fault> {
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(2);
        let root = self.root as i32;
        self.run(|c| &c.create, (id as i32, root))?;
        Ok(id)
    }

    /// `proxy_on_request_headers`.
    pub fn on_request_headers(&mut self, id: u32, s: &mut Stream, end: bool) -> Result<Action, Fault> {
        let n = s.request_headers.len() as i32;
        self.lend(id, s, |me| me.run(|c| &c.request_headers, (id as i32, n, end as i32))).map(action)
    }

    /// `proxy_on_request_body` with the body buffered so far.
    pub fn on_request_body(&mut self, id: u32, s: &mut Stream, end: bool) -> Result<Action, Fault> {
        let n = s.request_body.len() as i32;
        self.lend(id, s, |me| me.run(|c| &c.request_body, (id as i32, n, end as i32))).map(action)
    }

    /// `proxy_on_request_trailers`.
    pub fn on_request_trailers(&mut self, id: u32, s: &mut Stream) -> Result<Action, Fault> {
        let n = s.request_trailers.len() as i32;
        self.lend(id, s, |me| me.run(|c| &c.request_trailers, (id as i32, n))).map(action)
    }

    /// `proxy_on_response_headers`.
    pub fn on_response_headers(&mut self, id: u32, s: &mut Stream, end: bool) -> Result<Action, Fault> {
        let n = s.response_headers.len() as i32;
        self.lend(id, s, |me| me.run(|c| &c.response_headers, (id as i32, n, end as i32))).map(action)
    }

    /// `proxy_on_response_body` with the body buffered so far.
    pub fn on_response_body(&mut self, id: u32, s: &mut Stream, end: bool) -> Result<Action, Fault> {
        let n = s.response_body.len() as i32;
        self.lend(id, s, |me| me.run(|c| &c.response_body, (id as i32, n, end as i32))).map(action)
    }

    /// `proxy_on_response_trailers`.
    pub fn on_response_trailers(&mut self, id: u32, s: &mut Stream) -> Result<Action, Fault> {
        let n = s.response_trailers.len() as i32;
        self.lend(id, s, |me| me.run(|c| &c.response_trailers, (id as i32, n))).map(action)
    }

    /// Hands a callout's answer to the plugin. `stream` is the context that dispatched it
    /// (`None` for calls from the root context).
    pub fn on_http_call_response(
        &mut self,
        stream: Option<(u32, &mut Stream)>,
        token: u32,
        rsp: CallResponse,
    ) -> Result<(), Fault> {
        let (nh, nb) = (rsp.headers.len() as i32, rsp.body.len() as i32);
        self.store.data_mut().call_response = Some(rsp);
        let root = self.root as i32;
        let args = (root, token as i32, nh, nb, 0);
        let r = match stream {
            Some((id, s)) => self.lend(id, s, |me| me.run(|c| &c.call_response, args)),
            None => self.run(|c| &c.call_response, args),
        };
        self.store.data_mut().call_response = None;
        r.map(drop)
    }

    /// Ends context `id`: `on_done`, `on_log`, `on_delete`.
    pub fn close(&mut self, id: u32, s: &mut Stream) -> Result<(), Fault> {
        self.lend(id, s, |me| {
            me.run(|c| &c.done, id as i32)?;
            me.run(|c| &c.log, id as i32)?;
            me.run(|c| &c.delete, id as i32).map(drop)
        })
    }

    /// `proxy_on_tick` on the root context.
    pub fn on_tick(&mut self) -> Result<(), Fault> {
        let root = self.root as i32;
        self.run(|c| &c.tick, root).map(drop)
    }

    /// `proxy_on_queue_ready` on the root context, once for each queue this instance
    /// registered that got an item since the last call (see [`crate::Shared::on_enqueue`]).
    pub fn on_queues_ready(&mut self) -> Result<(), Fault> {
        let (shared, me) = (self.store.data().shared.clone(), self.store.data().instance);
        for queue in shared.take_ready(me) {
            let root = self.root as i32;
            self.run(|c| &c.queue_ready, (root, queue as i32))?;
        }
        Ok(())
    }

    /// The tick period the plugin asked for.
    pub fn tick_period(&self) -> Option<Duration> {
        self.store.data().tick
    }

    /// Callouts dispatched outside any stream (from `on_tick`, `on_configure`).
    pub fn take_root_calls(&mut self) -> Vec<HttpCall> {
        std::mem::take(&mut self.store.data_mut().root_calls)
    }

    /// `len` bytes of the instance's memory at `at` (for host tests).
    #[cfg(test)]
    pub(crate) fn memory_at(&self, at: usize, len: usize) -> Vec<u8> {
        let m = self.store.data().memory.expect("a memory");
        m.data(&self.store)[at..at + len].to_vec()
    }

    /// Bytes of linear memory the instance holds.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory.map_or(0, |m| m.data_size(&self.store))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let h = self.store.data();
        h.shared.forget(h.instance);
    }
}

fn action(r: Option<i32>) -> Action {
    r.map_or(Action::Continue, Action::from_raw)
}

fn classify(store: &Store<HostState>, cpu: Duration, e: &wasmtime::Error) -> Fault {
    if store.data().memory_exceeded {
        return Fault::Memory(store.data().memory_limit);
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Fault::Cpu(cpu),
        _ => Fault::Trap(format!("{e:#}")),
    }
}
