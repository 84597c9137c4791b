//! `request-id` and `fault` configurations.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::error::Errors;

/// Request ids: propagate the client's or generate one; send it upstream and back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestIdConfig {
    /// Header name. Default `x-request-id`.
    #[serde(default = "default_header")]
    pub header: String,
    /// Keep an id the client sent (otherwise always generate). Default true.
    #[serde(default = "yes")]
    pub trust_incoming: bool,
    /// Echo the id in the response. Default true.
    #[serde(default = "yes")]
    pub response: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self { header: default_header(), trust_incoming: true, response: true }
    }
}

fn default_header() -> String {
    "x-request-id".into()
}
fn yes() -> bool {
    true
}

/// Fault injection: delay requests and/or abort a share of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Wait this long before going on.
    #[serde(default)]
    pub delay: Option<HumanDuration>,
    /// Answer with an error instead of proxying.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

/// An injected error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// Status to answer with.
    pub status: u16,
    /// Share of requests aborted, 0–100. Default 100.
    #[serde(default = "hundred")]
    pub percent: f64,
}

fn hundred() -> f64 {
    100.0
}

impl FaultConfig {
    pub(crate) fn check(&self, errs: &mut Errors, at: &str) {
        if let Some(a) = &self.abort {
            if !(200..=599).contains(&a.status) {
                errs.push(format!("{at}.abort.status"), "must be between 200 and 599");
            }
            if !(0.0..=100.0).contains(&a.percent) {
                errs.push(format!("{at}.abort.percent"), "must be between 0 and 100");
            }
        }
        if self.delay.is_none() && self.abort.is_none() {
            errs.push(at, "give a `delay`, an `abort`, or both");
        }
    }
}
