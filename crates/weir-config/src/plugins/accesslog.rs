//! `access-log` configuration.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::error::Errors;

/// One JSON line per request, to stdout, a file, or batched to an HTTP collector. Logging
/// never blocks a request: when the sink falls behind, entries are dropped and counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Where entries go.
    pub sink: AccessLogSink,
    /// Entries buffered in memory before new ones are dropped. Default 10000.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
}

fn default_buffer() -> usize {
    10_000
}

/// An access-log destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AccessLogSink {
    /// Standard output.
    Stdout(crate::spec::Empty),
    /// A file, appended to.
    File {
        /// The file's path.
        path: String,
    },
    /// POST batches of newline-delimited JSON to a collector.
    Http {
        /// Collector URL (`http://…`).
        url: String,
        /// Entries per batch at most. Default 100.
        #[serde(default = "default_batch")]
        batch_size: usize,
        /// A partial batch is sent after this long. Default 1s.
        #[serde(default)]
        flush_interval: Option<HumanDuration>,
    },
}

fn default_batch() -> usize {
    100
}

impl AccessLogConfig {
    pub(crate) fn check(&self, errs: &mut Errors, at: &str) {
        if self.buffer == 0 {
            errs.push(format!("{at}.buffer"), "must be at least 1");
        }
        if let AccessLogSink::Http { url, batch_size, .. } = &self.sink {
            if !url.starts_with("http://") {
                errs.push(format!("{at}.sink.http.url"), "must be an http:// URL");
            }
            if *batch_size == 0 {
                errs.push(format!("{at}.sink.http.batch_size"), "must be at least 1");
            }
        }
    }
}
