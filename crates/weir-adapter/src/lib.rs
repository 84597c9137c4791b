//! The adaptation layer (seed 2.1): one control plane drives gateways that are not Weir.
//!
//! Owns: rendering a revision's typed config ([`weir_config::ValidConfig`], the same model Weir
//! gateways compile) into a proxy's native configuration ([`nginx`], [`haproxy`]), refusing
//! with the resource's path what that proxy cannot express, and driving the proxy ([`driven`]):
//! check the new file with the proxy itself, swap it in atomically, reload gracefully, and
//! report a revision applied only once the proxy serves it.
//!
//! An adapter speaks the control-plane protocol through the gateway's own sync code
//! ([`weir_gateway::sync::run_target`]): it registers like a gateway (kind `nginx` or
//! `haproxy`), receives the same snapshots and deltas, ACKs and NACKs.

pub mod driven;
pub mod haproxy;
pub mod nginx;
pub mod render;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use driven::Driven;
use render::Rendered;
use weir_config::ValidConfig;
use weir_proto::v1;

/// Where a rendered config lives and what it needs to know of its surroundings.
#[derive(Clone, Debug)]
pub struct Context {
    /// The adapter's directory (absolute): the config, certificates, pid file, logs.
    pub dir: PathBuf,
    /// Where the proxy answers the adapter (the served config's hash, its counters);
    /// loopback only.
    pub status: SocketAddr,
    /// Worker processes (`None`: one per core).
    pub workers: Option<usize>,
}

impl Context {
    /// A path under the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A proxy Weir can drive: how to render for it and how to run it.
pub trait Proxy: Send + Sync + 'static {
    /// The kind in the capability descriptor (`nginx`).
    const KIND: &'static str;
    /// The config file's name in the directory.
    const FILE: &'static str;
    /// What it can express (the descriptor's `features`; docs/adapters.md explains each).
    const FEATURES: &'static [&'static str];
    /// Renders `cfg`; the status answer must carry `hash` (see [`Rendered::hash`]).
    fn render(&self, cfg: &ValidConfig, ctx: &Context) -> Result<Rendered, Vec<v1::ErrorDetail>>;
    /// The binary.
    fn binary(&self) -> &Path;
    /// A command that checks `file` without touching what runs.
    fn check(&self, file: &Path, ctx: &Context) -> Command;
    /// A command that starts the proxy on the directory's config (it detaches).
    fn start(&self, ctx: &Context) -> Command;
    /// The signal that makes the running proxy re-read its config gracefully.
    fn reload_signal(&self) -> rustix::process::Signal;
    /// The line numbers a failed check names, with each message.
    fn check_errors(&self, output: &str) -> Vec<(Option<usize>, String)>;
    /// Whether worker `pid`, from before a reload, may still accept new connections (then
    /// the reload has not fully taken). By default only the status answers count.
    fn still_accepting(&self, pid: u32) -> bool {
        let _ = pid;
        false
    }
    /// Requests served and 5xx answers since the proxy started, from its status answer.
    fn counters(&self, ctx: &Context) -> impl Future<Output = Option<(u64, u64)>> + Send;
}
