//! Weir's control-plane wire protocol: the `weir.v1.ConfigSync` service and its messages.
//!
//! Owns: the code generated from `proto/weir/v1/config.proto` (the file other languages
//! generate their clients from) and the resource kind names both ends agree on.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]

/// Generated messages and the client/server for `weir.v1.ConfigSync`.
pub mod v1 {
    tonic::include_proto!("weir.v1");
}

/// The `.proto` source, for `weir` to print and for clients in other languages.
pub const PROTO: &str = include_str!("../proto/weir/v1/config.proto");
