//! Plugin packages when Weir is built without the `wasm` feature: the types the chain names,
//! uninhabited, so a config that uses a package is refused with a clear reason.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use weir_config::package::Package;
use weir_config::plugins::WasmConfig;

use super::{BuildError, FilterCx, Outcome, PackageFailure, Phase};
use crate::metrics::Metrics;
use crate::upstream::Upstream;
use crate::view::RequestView;

/// No upstreams to call: nothing can call out.
#[derive(Debug, Default)]
pub struct Callouts;

impl Callouts {
    /// Nothing to publish.
    pub fn set(&self, _: &HashMap<Arc<str>, Arc<Upstream>>) {}
}

/// Never built.
#[derive(Debug)]
pub enum WasmFilter {}

impl WasmFilter {
    pub(crate) fn new(cfg: &WasmConfig, _: &str, _: &Metrics, _: &Arc<Callouts>) -> Result<Arc<Self>, BuildError> {
        Err(BuildError::Package { name: cfg.package.meta.name.to_string(), reason: PackageFailure::Unsupported })
    }

    pub(crate) fn phase(&self) -> Phase {
        match *self {}
    }

    pub(crate) fn priority(&self) -> i32 {
        match *self {}
    }

    pub(crate) fn reads_bodies(&self) -> bool {
        match *self {}
    }

    pub(crate) fn reads_trailers(&self) -> bool {
        match *self {}
    }

    pub(crate) async fn on_request(self: &Arc<Self>, _: &RequestView<'_>, _: &FilterCx) -> Outcome {
        match **self {}
    }
}

/// Never created.
#[derive(Debug)]
pub enum WasmCtx {}

impl WasmCtx {
    pub(crate) fn on_request_trailers(&self, _: &mut HeaderMap) {
        match *self {}
    }

    pub(crate) fn on_response_trailers(&self, _: &mut HeaderMap) {
        match *self {}
    }

    pub(crate) fn on_response(&self, _: StatusCode, _: &mut HeaderMap) {
        match *self {}
    }

    pub(crate) fn response_edits(&self, _: StatusCode, _: impl Fn(&mut dyn FnMut(&[u8], &[u8]))) -> crate::view::Edits {
        match *self {}
    }

    pub(crate) fn on_response_body(&self, _: Bytes) -> Result<Bytes, Box<http::Response<crate::body::GatewayBody>>> {
        match *self {}
    }

    pub(crate) fn on_request_body(&self, _: Bytes) -> Result<Bytes, Box<http::Response<crate::body::GatewayBody>>> {
        match *self {}
    }

    pub(crate) fn reads_bodies(&self) -> bool {
        match *self {}
    }

    pub(crate) fn reads_trailers(&self) -> bool {
        match *self {}
    }
}

/// Always refused.
pub fn compile_package(_: &Package) -> Result<(), PackageFailure> {
    Err(PackageFailure::Unsupported)
}

/// Refuses: nothing can run a package.
pub fn check_package(_: &Package, _: &serde_json::Value) -> Result<(), PackageFailure> {
    Err(PackageFailure::Unsupported)
}

/// No plugin metrics.
pub fn encode_metrics(_: &mut String) {}
