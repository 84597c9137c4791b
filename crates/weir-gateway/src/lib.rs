//! Weir's data plane.
//!
//! Handles: client listeners (an in-place HTTP/1.1 fast path, hyper for HTTP/2 and the rare
//! HTTP/1.1 forms, keep-alive, upgrades), route matching, canary splits,
//! load balancing, pooled upstream connections, active and passive health checking, failover
//! and retries, hot reload from a watched file, graceful drain, and the admin endpoints.
//!
//! Does NOT contain: config parsing and validation (`weir-config`), the control plane, or the
//! CLI (`weir`).

pub mod admin;
pub mod body;
mod discovery;
pub mod error;
pub mod filter;
pub mod gateway;
pub mod h1;
pub mod handover;
pub mod headers;
pub mod io;
pub mod mcp;
pub mod metrics;
pub mod oneshot;
pub mod otel;
pub mod packages;
pub mod proxy;
pub mod retry;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod sniff;
pub mod sync;
pub mod tls;
mod upgrade;
pub mod upstream;
pub mod view;
pub mod watch;
pub mod workers;

pub use gateway::{ApplyError, Gateway, ReleaseHook};
pub use server::ServeOptions;
pub use workers::Workers;
