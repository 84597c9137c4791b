//! Package plugins (proxy-wasm) in the filter chain.
//!
//! Owns: one instance of a package per worker (started, checked and configured when the
//! filter is built, off the request path); an HTTP context per request that lives in the
//! request's [`FilterCx`] until the response is done (then `on_done`, `on_log`, `on_delete`,
//! on every path, by `Drop`); pauses resumed by callouts; the failure policy, the circuit
//! breaker and the rebuilding of a broken instance. The ABI itself is `weir-wasm`'s.

mod breaker;
mod callout;
mod convert;
mod engine;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use weir_config::package::{FailurePolicy, PackageMeta, PackagePhase};
use weir_config::plugins::WasmConfig;
use weir_wasm::{Action, Fault, Instance, Plugin, Stream};

pub use callout::Callouts;
pub use engine::{check_package, compile_package, encode_metrics};

use self::breaker::{Breaker, BreakerSpec, Gate};
use super::{BuildError, FilterCx, Outcome, PackageFailure, Phase, reply};
use crate::body::GatewayBody;
use crate::metrics::Metrics;
use crate::view::RequestView;

/// How many times a new instance is tried before the plugin is refused.
const START_ATTEMPTS: u32 = 3;

/// One worker's instance; `generation` changes whenever a broken instance is replaced, so a
/// paused request knows its context died with the old one.
#[derive(Debug, Default)]
struct Slot {
    instance: Option<Instance>,
    generation: u64,
    /// Streams of ended requests, emptied, for the next requests on this worker: a request's
    /// context then costs no allocation for its maps.
    spare: Vec<Stream>,
    /// Header names the plugin's edits used.
    names: convert::Names,
}

/// How many ended streams a worker keeps for reuse.
const SPARE_STREAMS: usize = 16;

/// A package plugin on one route.
#[derive(Debug)]
pub struct WasmFilter {
    name: Arc<str>,
    route: Arc<str>,
    meta: PackageMeta,
    plugin: Arc<Plugin>,
    config: Arc<[u8]>,
    slots: Box<[Mutex<Slot>]>,
    breaker: Breaker,
    callouts: Arc<Callouts>,
    faults: [Counter; 5],
    trips: Counter,
    /// Woken when an item is enqueued to a queue one of its instances registered; kept
    /// registered with the plugin's shared state for as long as the filter lives.
    queues: Arc<tokio::sync::Notify>,
    _queue_wake: QueueWake,
}

/// The registration [`WasmFilter::queues`] is woken through.
struct QueueWake(#[allow(dead_code, reason = "held for its registration")] Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for QueueWake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueWake")
    }
}

/// Why a request could not get through the plugin.
#[derive(Debug)]
enum Failure {
    Fault(Fault),
    Timeout,
    Stalled,
    Closed,
}

impl Failure {
    fn kind(&self) -> usize {
        match self {
            Self::Fault(Fault::Cpu(_)) => 1,
            Self::Fault(Fault::Memory(_)) => 2,
            Self::Fault(Fault::Refused(_)) => 3,
            Self::Timeout | Self::Stalled => 4,
            Self::Fault(_) | Self::Closed => 0,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fault(e) => e.fmt(f),
            Self::Timeout => f.write_str("the plugin paused the request past its pause limit"),
            Self::Stalled => f.write_str("the plugin paused the request with nothing to wait for"),
            Self::Closed => f.write_str("the plugin closed the stream"),
        }
    }
}

/// What the request phase ended with.
enum Verdict {
    Continue,
    Local(weir_wasm::LocalResponse),
}

impl WasmFilter {
    /// Compiles (or reuses) the package's module and starts one configured instance per
    /// worker; any failure refuses the plugin, so the config that names it is not applied.
    pub(crate) fn new(
        cfg: &WasmConfig,
        route: &str,
        metrics: &Metrics,
        callouts: &Arc<Callouts>,
    ) -> Result<Arc<Self>, BuildError> {
        let pkg = &cfg.package;
        let name = pkg.meta.name.as_str();
        let failed = |reason| BuildError::Package { name: name.to_owned(), reason };
        let e = engine::engine().map_err(|e| failed(PackageFailure::Engine(e)))?;
        let plugin = e.plugin(pkg).map_err(|e| failed(PackageFailure::Load(e.to_string())))?;
        let config: Arc<[u8]> = serde_json::to_vec(&cfg.config).unwrap_or_default().into();
        let mut slots = Vec::new();
        for _ in 0..crate::workers::count().max(1) {
            let instance = start(&plugin, &config).map_err(|f| failed(PackageFailure::Start(f.to_string())))?;
            slots.push(Mutex::new(Slot { instance: Some(instance), ..Slot::default() }));
        }
        let b = &pkg.meta.breaker;
        let kinds = ["trap", "cpu", "memory", "refused", "timeout"];
        let queues = Arc::new(tokio::sync::Notify::new());
        let n = queues.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || n.notify_one());
        plugin.shared().on_enqueue(&wake);
        let me = Arc::new(Self {
            name: name.into(),
            route: route.into(),
            meta: pkg.meta.clone(),
            plugin,
            config,
            slots: slots.into(),
            breaker: Breaker::new(BreakerSpec { failures: b.failures, window: b.window.0, cooldown: b.cooldown.0 }),
            callouts: callouts.clone(),
            faults: kinds.map(|k| metrics.plugin_fault_counter(name, k)),
            trips: metrics.plugin_breaker_counter(name),
            queues,
            _queue_wake: QueueWake(wake),
        });
        me.start_ticks();
        me.start_queues();
        Ok(me)
    }

    /// The chain phase its metadata names.
    pub(crate) fn phase(&self) -> Phase {
        match self.meta.phase {
            PackagePhase::Access => Phase::Access,
            PackagePhase::Authn => Phase::Authn,
            PackagePhase::RateLimit => Phase::RateLimit,
            PackagePhase::Transform => Phase::Transform,
        }
    }

    /// Order within the phase (higher first).
    pub(crate) fn priority(&self) -> i32 {
        self.meta.priority
    }

    /// Whether it reads bodies (its route buffers the response body for it).
    pub(crate) fn reads_bodies(&self) -> bool {
        self.meta.reads_bodies
    }

    /// Whether it reads trailers (it does when it reads bodies).
    pub(crate) fn reads_trailers(&self) -> bool {
        self.meta.reads_trailers || self.meta.reads_bodies
    }

    /// Runs `on_request_headers` (and any callouts it pauses on) in a new HTTP context.
    pub(crate) async fn on_request(self: &Arc<Self>, req: &RequestView<'_>, cx: &FilterCx) -> Outcome {
        let gate = self.breaker.gate(Instant::now());
        if gate == Gate::Open {
            return self.policy();
        }
        let worker = crate::workers::current() % self.slots.len();
        let (generation, id, mut stream) = match self.open(worker) {
            Ok(v) => v,
            Err(f) => return self.failed(gate, &Failure::Fault(f)),
        };
        convert::request_fields(req, "http", &mut stream.request_headers);
        stream.properties.source = Some(cx.source);
        stream.properties.route = Some(self.route.clone());
        // The context exists before the first await, so a request dropped while it waits on a
        // callout still ends its context (Drop).
        let ctx = Arc::new(WasmCtx { filter: self.clone(), worker, generation, id, stream: Mutex::new(Some(stream)) });
        match self.request_phase(&ctx, cx).await {
            Ok(Verdict::Continue) => {
                self.breaker.success(gate);
                // Locks in the order every path takes: the stream, then the slot.
                let mut s = ctx.stream();
                let mut e = convert::request_effects(&mut s.request_headers, &mut self.slots[worker].lock().names);
                drop(s);
                e.wasm = Some(ctx);
                Outcome::Continue(e)
            }
            Ok(Verdict::Local(l)) => {
                self.breaker.success(gate);
                Outcome::Respond(convert::local_response(l))
            }
            Err(f) => self.failed(gate, &f),
        }
    }

    /// Opens a context on this worker's instance, rebuilding a broken one first; returns it
    /// with an empty stream for it.
    fn open(&self, worker: usize) -> Result<(u64, u32, Stream), Fault> {
        let mut slot = self.slots[worker].lock();
        if slot.instance.as_ref().is_none_or(Instance::is_broken) {
            slot.instance = None;
            slot.generation += 1;
            slot.instance = Some(start(&self.plugin, &self.config)?);
        }
        let inst = slot.instance.as_mut().expect("set above");
        let id = inst.open()?;
        let stream = slot.spare.pop().unwrap_or_default();
        Ok((slot.generation, id, stream))
    }

    /// Calls `f` on context `ctx`'s instance, if it is still the one the context lives in.
    fn with<T>(&self, ctx: &WasmCtx, f: impl FnOnce(&mut Instance) -> Result<T, Fault>) -> Result<T, Fault> {
        let mut slot = self.slots[ctx.worker].lock();
        if slot.generation != ctx.generation {
            return Err(Fault::Broken);
        }
        match slot.instance.as_mut() {
            Some(i) => f(i),
            None => Err(Fault::Broken),
        }
    }

    /// The request headers' callback, then each callout it pauses on until the plugin lets
    /// the request go on or answers it. The stream is locked only around each call, never
    /// across a wait.
    async fn request_phase(&self, ctx: &WasmCtx, cx: &FilterCx) -> Result<Verdict, Failure> {
        // A body or trailers may follow for a plugin that reads them.
        let end = !self.reads_trailers();
        let mut action = {
            let mut s = ctx.stream();
            self.with(ctx, |i| i.on_request_headers(ctx.id, &mut s, end)).map_err(Failure::Fault)?
        };
        let deadline = tokio::time::Instant::now() + self.meta.limits.pause.0;
        loop {
            let call = {
                let mut s = ctx.stream();
                if let Some(l) = s.local.take() {
                    return Ok(Verdict::Local(l));
                }
                if s.closed {
                    return Err(Failure::Closed);
                }
                if action == Action::Continue || s.resumed {
                    return Ok(Verdict::Continue);
                }
                s.calls.pop().ok_or(Failure::Stalled)?
            };
            let token = call.token;
            let rsp = tokio::time::timeout_at(deadline, self.callouts.send(call, cx.client))
                .await
                .map_err(|_| Failure::Timeout)?;
            let mut s = ctx.stream();
            self.with(ctx, |i| i.on_http_call_response(Some((ctx.id, &mut s)), token, rsp)).map_err(Failure::Fault)?;
            action = Action::Pause;
        }
    }

    /// Counts and logs a failure, then answers by the failure policy.
    fn failed(&self, gate: Gate, f: &Failure) -> Outcome {
        self.faults[f.kind()].inc();
        tracing::error!(plugin = %self.name, route = %self.route, error = %f, "plugin failed; applying its failure policy");
        if self.breaker.failure(gate, Instant::now()) {
            self.trips.inc();
            tracing::error!(
                plugin = %self.name,
                cooldown = ?self.meta.breaker.cooldown.0,
                "plugin circuit breaker opened: the plugin keeps failing and is not called until it cools down"
            );
        }
        self.policy()
    }

    fn policy(&self) -> Outcome {
        match self.closed_reply() {
            None => Outcome::done(),
            Some(rsp) => Outcome::Respond(rsp),
        }
    }

    /// Under `fail_closed`, the answer to a request the plugin failed (503, JSON).
    fn closed_reply(&self) -> Option<Response<GatewayBody>> {
        match self.meta.failure_policy {
            FailurePolicy::FailOpen => None,
            FailurePolicy::FailClosed => {
                Some(reply(StatusCode::SERVICE_UNAVAILABLE, "plugin_failed", &format!("plugin {} failed", self.name)))
            }
        }
    }

    /// Calls `on_tick` on every instance at the period the plugin asked for, until the filter
    /// is dropped.
    fn start_ticks(self: &Arc<Self>) {
        let period = self.slots[0].lock().instance.as_ref().and_then(Instance::tick_period);
        let (Some(period), Ok(rt)) = (period, tokio::runtime::Handle::try_current()) else { return };
        let me: Weak<Self> = Arc::downgrade(self);
        rt.spawn(async move {
            let mut every = tokio::time::interval(period.max(Duration::from_millis(1)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(me) = me.upgrade() else { return };
                me.tick().await;
            }
        });
    }

    /// Calls `on_queue_ready` on its instances whenever an item is enqueued to a queue one
    /// of them registered, until the filter is dropped.
    fn start_queues(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (me, wake): (Weak<Self>, _) = (Arc::downgrade(self), self.queues.clone());
        rt.spawn(async move {
            loop {
                wake.notified().await;
                let Some(me) = me.upgrade() else { return };
                me.on_root("on_queue_ready", Instance::on_queues_ready).await;
            }
        });
    }

    async fn tick(&self) {
        self.on_root("on_tick", Instance::on_tick).await;
    }

    /// Runs a root-context callback on every working instance, then the callouts it made.
    async fn on_root(&self, what: &str, f: fn(&mut Instance) -> Result<(), Fault>) {
        for slot in self.slots.iter() {
            let calls = {
                let mut s = slot.lock();
                let Some(i) = s.instance.as_mut().filter(|i| !i.is_broken()) else { continue };
                if let Err(e) = f(i) {
                    tracing::error!(plugin = %self.name, error = %e, "plugin {what} failed");
                }
                i.take_root_calls()
            };
            for call in calls {
                let token = call.token;
                let rsp = self.callouts.send(call, std::net::Ipv4Addr::LOCALHOST.into()).await;
                if let Some(i) = slot.lock().instance.as_mut() {
                    let _ = i.on_http_call_response(None, token, rsp);
                }
            }
        }
    }
}

impl Drop for WasmFilter {
    /// Ends its queue task (which holds it only weakly).
    fn drop(&mut self) {
        self.queues.notify_one();
    }
}

/// Starts a configured instance, retrying a failed start with backoff.
fn start(plugin: &Plugin, config: &[u8]) -> Result<Instance, Fault> {
    let mut wait = Duration::from_millis(10);
    let mut last = None;
    for _ in 0..START_ATTEMPTS {
        match plugin.start(b"", config) {
            Ok(i) => return Ok(i),
            Err(f) => last = Some(f),
        }
        std::thread::sleep(wait);
        wait *= 4;
    }
    Err(last.unwrap_or(Fault::Broken))
}

/// A request's HTTP context in one plugin instance, from its request headers to its end.
#[derive(Debug)]
pub struct WasmCtx {
    filter: Arc<WasmFilter>,
    worker: usize,
    generation: u64,
    id: u32,
    /// Its stream; taken only when the context ends, to be reused.
    stream: Mutex<Option<Stream>>,
}

impl WasmCtx {
    /// Its stream, locked.
    fn stream(&self) -> parking_lot::MappedMutexGuard<'_, Stream> {
        parking_lot::MutexGuard::map(self.stream.lock(), |s| s.as_mut().expect("present until the context ends"))
    }

    /// `on_response_headers`; the plugin's changes are applied to `headers`.
    pub(crate) fn on_response(&self, status: StatusCode, headers: &mut HeaderMap) {
        let each = |f: &mut dyn FnMut(&[u8], &[u8])| {
            for (k, v) in headers.iter() {
                f(k.as_str().as_bytes(), v.as_bytes());
            }
        };
        let edits = self.response_edits(status, each);
        convert::apply_edits(edits, headers);
    }

    /// `on_response_headers` on the fields `each` yields; returns the plugin's changes.
    pub(crate) fn response_edits(
        &self,
        status: StatusCode,
        each: impl Fn(&mut dyn FnMut(&[u8], &[u8])),
    ) -> crate::view::Edits {
        let mut s = self.stream();
        convert::response_fields_from(status, each, &mut s.response_headers);
        s.properties.response_code = Some(status.as_u16());
        let end = !self.filter.reads_trailers();
        match self.filter.with(self, |i| i.on_response_headers(self.id, &mut s, end)) {
            Ok(_) => convert::response_edits(&mut s.response_headers, &mut self.filter.slots[self.worker].lock().names),
            Err(f) => {
                self.filter.faults[Failure::Fault(f.clone()).kind()].inc();
                tracing::error!(plugin = %self.filter.name, error = %f, "plugin on_response_headers failed; response left as is");
                crate::view::Edits::default()
            }
        }
    }

    /// `on_request_body` with the whole body; returns the body to send, or the plugin's own
    /// answer (`send_local_response`, or the failure policy's).
    pub(crate) fn on_request_body(&self, body: Bytes) -> Result<Bytes, Box<Response<GatewayBody>>> {
        self.body(body, true)
    }

    /// `on_response_body` with the whole (buffered, not yet sent) body; returns the body to
    /// send, or a response to send instead.
    pub(crate) fn on_response_body(&self, body: Bytes) -> Result<Bytes, Box<Response<GatewayBody>>> {
        self.body(body, false)
    }

    fn body(&self, body: Bytes, request: bool) -> Result<Bytes, Box<Response<GatewayBody>>> {
        let mut s = self.stream();
        // Into the stream's own buffer, kept from request to request.
        let buf = if request { &mut s.request_body } else { &mut s.response_body };
        buf.clear();
        buf.extend_from_slice(&body);
        s.body_changed = false;
        let r = self.filter.with(self, |i| {
            if request { i.on_request_body(self.id, &mut s, true) } else { i.on_response_body(self.id, &mut s, true) }
        });
        if let Some(l) = s.local.take() {
            return Err(Box::new(convert::local_response(l)));
        }
        match r {
            Ok(_) if s.body_changed => {
                Ok(Bytes::from(std::mem::take(if request { &mut s.request_body } else { &mut s.response_body })))
            }
            Ok(_) => Ok(body),
            Err(f) => {
                self.filter.faults[Failure::Fault(f.clone()).kind()].inc();
                tracing::error!(plugin = %self.filter.name, error = %f, "plugin body callback failed; applying its failure policy");
                self.filter.closed_reply().map_or(Ok(body), |r| Err(Box::new(r)))
            }
        }
    }

    /// `on_request_trailers`; the plugin's changes are applied to `trailers`.
    pub(crate) fn on_request_trailers(&self, trailers: &mut HeaderMap) {
        self.trailers(trailers, true);
    }

    /// `on_response_trailers`; the plugin's changes are applied to `trailers`.
    pub(crate) fn on_response_trailers(&self, trailers: &mut HeaderMap) {
        self.trailers(trailers, false);
    }

    fn trailers(&self, trailers: &mut HeaderMap, request: bool) {
        let mut s = self.stream();
        convert::fields_of(trailers, if request { &mut s.request_trailers } else { &mut s.response_trailers });
        let r = self.filter.with(self, |i| {
            if request { i.on_request_trailers(self.id, &mut s) } else { i.on_response_trailers(self.id, &mut s) }
        });
        match r {
            Ok(_) => {
                let changed = if request { &mut s.request_trailers } else { &mut s.response_trailers };
                let names = &mut self.filter.slots[self.worker].lock().names;
                convert::apply_edits(convert::response_edits(changed, names), trailers);
            }
            Err(f) => {
                self.filter.faults[Failure::Fault(f.clone()).kind()].inc();
                tracing::error!(plugin = %self.filter.name, error = %f, "plugin trailers callback failed; trailers left as they are");
            }
        }
    }

    /// Whether its plugin reads response bodies.
    pub(crate) fn reads_bodies(&self) -> bool {
        self.filter.meta.reads_bodies
    }

    /// Whether its plugin reads trailers.
    pub(crate) fn reads_trailers(&self) -> bool {
        self.filter.reads_trailers()
    }
}

impl Drop for WasmCtx {
    fn drop(&mut self) {
        let Some(mut s) = self.stream.get_mut().take() else { return };
        let mut slot = self.filter.slots[self.worker].lock();
        if slot.generation != self.generation {
            return;
        }
        if let Some(i) = slot.instance.as_mut()
            && let Err(f) = i.close(self.id, &mut s)
        {
            tracing::error!(plugin = %self.filter.name, error = %f, "plugin on_log/on_done failed");
        }
        if slot.spare.len() < SPARE_STREAMS {
            s.reset();
            slot.spare.push(s);
        }
    }
}
