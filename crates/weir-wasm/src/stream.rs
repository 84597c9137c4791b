//! The host side of one HTTP context: its header maps, bodies, properties and what the plugin
//! asked for (a local response, callouts, resumption). The embedder owns a [`Stream`] between
//! callbacks and lends it to the instance for each one, so a paused request costs the instance
//! nothing and many streams share one instance.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A header map as the plugin sees it: ordered `(name, value)` pairs, names lower-case,
/// pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`, `:status`) included.
/// Every name a plugin changes is remembered, so the embedder applies exactly the changes.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    pairs: Vec<(String, Vec<u8>)>,
    touched: Vec<String>,
}

impl Fields {
    /// A map of these pairs; names are lower-cased.
    pub fn new(pairs: Vec<(String, Vec<u8>)>) -> Self {
        Self { pairs, touched: Vec::new() }
    }

    /// Appends a pair as it came from the peer (not a change).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.pairs.push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// All pairs.
    pub fn pairs(&self) -> &[(String, Vec<u8>)] {
        &self.pairs
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.pairs.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// Replaces every value of `name` with `value`.
    pub fn set(&mut self, name: &str, value: &[u8]) {
        let name = name.to_ascii_lowercase();
        self.pairs.retain(|(k, _)| *k != name);
        self.pairs.push((name.clone(), value.to_vec()));
        self.touch(name);
    }

    /// Adds a value of `name`.
    pub fn add(&mut self, name: &str, value: &[u8]) {
        let name = name.to_ascii_lowercase();
        self.pairs.push((name.clone(), value.to_vec()));
        self.touch(name);
    }

    /// Removes every value of `name` (absent is fine).
    pub fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        let before = self.pairs.len();
        self.pairs.retain(|(k, _)| *k != name);
        if self.pairs.len() != before {
            self.touch(name);
        }
    }

    /// Replaces the whole map.
    pub fn replace(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        for (k, _) in std::mem::take(&mut self.pairs) {
            self.touch(k);
        }
        for (k, v) in pairs {
            let k = String::from_utf8_lossy(&k).to_ascii_lowercase();
            self.touch(k.clone());
            self.pairs.push((k, v));
        }
    }

    fn touch(&mut self, name: String) {
        if !self.touched.contains(&name) {
            self.touched.push(name);
        }
    }

    /// Names the plugin changed since the last call, with their values now (none: removed).
    pub fn take_changes(&mut self) -> Vec<(String, Vec<&[u8]>)> {
        let touched = std::mem::take(&mut self.touched);
        touched
            .into_iter()
            .map(|n| {
                let vals = self.pairs.iter().filter(|(k, _)| *k == n).map(|(_, v)| v.as_slice()).collect();
                (n, vals)
            })
            .collect()
    }

    /// Whether the plugin changed anything since the last [`Fields::take_changes`].
    pub fn changed(&self) -> bool {
        !self.touched.is_empty()
    }
}

/// What the embedder knows about the stream beyond its headers (the well-known properties).
#[derive(Clone, Debug, Default)]
pub struct Properties {
    /// The client's address.
    pub source: Option<SocketAddr>,
    /// The listener's address.
    pub destination: Option<SocketAddr>,
    /// `HTTP/1.1`, `HTTP/2`, …
    pub protocol: &'static str,
    /// The route that matched.
    pub route: Option<Arc<str>>,
    /// The upstream the route proxies to.
    pub cluster: Option<Arc<str>>,
    /// The response status, once known.
    pub response_code: Option<u16>,
    /// Properties the plugin set itself (`proxy_set_property`), by null-joined path.
    pub custom: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A local response a plugin asked for (`proxy_send_local_response`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u16,
    /// Why (`status_code_details`), for logs.
    pub details: String,
    /// Response headers.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// An HTTP callout a plugin dispatched (`proxy_http_call`), for the embedder to send.
#[derive(Clone, Debug)]
pub struct HttpCall {
    /// The token the plugin will be called back with.
    pub token: u32,
    /// The upstream (the SDKs' "cluster") it names.
    pub upstream: String,
    /// Request headers, pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Request body.
    pub body: Vec<u8>,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

/// A callout's answer; `None` headers is a failed call (timeout, unreachable).
#[derive(Clone, Debug, Default)]
pub struct CallResponse {
    /// Response headers with `:status`; empty when the call failed.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// Host state of one HTTP context, lent to the instance for each callback.
#[derive(Debug, Default)]
pub struct Stream {
    /// Request headers (read and edited in `on_request_headers`, read in `on_log`).
    pub request_headers: Fields,
    /// Request trailers.
    pub request_trailers: Fields,
    /// Response headers.
    pub response_headers: Fields,
    /// Response trailers.
    pub response_trailers: Fields,
    /// The request body seen so far (when the plugin reads bodies).
    pub request_body: Vec<u8>,
    /// The response body seen so far.
    pub response_body: Vec<u8>,
    /// Whether the plugin replaced part of a body.
    pub body_changed: bool,
    /// Well-known properties.
    pub properties: Properties,
    /// A local response, once asked for.
    pub local: Option<LocalResponse>,
    /// Callouts dispatched and not yet handed to the embedder.
    pub calls: Vec<HttpCall>,
    /// The plugin resumed the stream (`proxy_continue_stream`).
    pub resumed: bool,
    /// The plugin closed the stream (`proxy_close_stream`).
    pub closed: bool,
}
