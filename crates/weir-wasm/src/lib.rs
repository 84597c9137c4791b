//! A proxy-wasm 0.2.1 host on wasmtime, knowing nothing of the gateway that embeds it.
//!
//! Owns: compiling a module and checking it against the host ([`Plugin::compile`]); starting
//! instances ([`Plugin::start`]) and calling their callbacks under a CPU deadline (epoch
//! interruption) and a memory cap ([`Limits`]); every ABI 0.2.1 host function and the WASI
//! preview1 calls the SDKs import; the state one plugin's instances share ([`Shared`]: data
//! with compare-and-swap, queues, metrics).
//!
//! The embedder owns the request: it fills a [`Stream`] (headers with pseudo-headers,
//! properties), lends it to an instance for each callback, and reads back what the plugin did
//! (changed fields, a [`LocalResponse`], [`HttpCall`]s to send, resumption).

mod abi;
mod calls;
mod cpu;
mod host;
mod instance;
mod plugin;
mod shared;
mod stream;
#[cfg(test)]
mod tests;

pub use abi::{Action, MetricKind, Status, deserialize_pairs, serialize_pairs};
pub use cpu::{CpuClock, thread_cpu_time};
pub use instance::{Fault, Instance};
pub use plugin::{Limits, LoadError, Plugin, Runtime};
pub use shared::{MetricValue, Shared};
pub use stream::{CallResponse, Fields, HttpCall, LocalResponse, Properties, Stream, StreamState};
