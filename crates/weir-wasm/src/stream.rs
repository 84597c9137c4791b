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
///
/// Names and values live back to back in one buffer, so filling a map for a request costs two
/// allocations, not two per header.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    buf: Vec<u8>,
    pairs: Vec<Pair>,
    touched: Vec<String>,
}

/// Where one pair's name and value are in the buffer.
#[derive(Clone, Copy, Debug)]
struct Pair {
    name: (u32, u32),
    value: (u32, u32),
}

impl Fields {
    /// An empty map with room for `pairs` pairs of `bytes` bytes in all, so filling it does not
    /// grow its buffers.
    pub fn with_capacity(pairs: usize, bytes: usize) -> Self {
        Self { buf: Vec::with_capacity(bytes), pairs: Vec::with_capacity(pairs), touched: Vec::new() }
    }

    /// A map of these pairs; names are lower-cased.
    pub fn new(pairs: Vec<(String, Vec<u8>)>) -> Self {
        let mut f = Self::default();
        for (k, v) in pairs {
            f.push(&k, &v);
        }
        f
    }

    fn put(&mut self, bytes: &[u8]) -> (u32, u32) {
        let at = self.buf.len();
        self.buf.extend_from_slice(bytes);
        (at as u32, bytes.len() as u32)
    }

    fn slice(&self, (at, len): (u32, u32)) -> &[u8] {
        &self.buf[at as usize..(at + len) as usize]
    }

    fn name_of(&self, p: &Pair) -> &[u8] {
        self.slice(p.name)
    }

    fn append(&mut self, name: &[u8], value: &[u8]) {
        let n = self.put(name);
        self.buf[n.0 as usize..].make_ascii_lowercase();
        let value = self.put(value);
        self.pairs.push(Pair { name: n, value });
    }

    /// Appends a pair as it came from the peer (not a change).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.append(name.as_bytes(), value);
    }

    /// [`Fields::push`] for a name as raw bytes.
    pub fn push_raw(&mut self, name: &[u8], value: &[u8]) {
        self.append(name, value);
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// All pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        self.pairs.iter().map(|p| (self.slice(p.name), self.slice(p.value)))
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.all(name).next()
    }

    /// Every value of `name`.
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.pairs
            .iter()
            .filter(move |p| self.name_of(p).eq_ignore_ascii_case(name.as_bytes()))
            .map(|p| self.slice(p.value))
    }

    fn drop_name(&mut self, name: &[u8]) -> bool {
        let before = self.pairs.len();
        let buf = &self.buf;
        self.pairs.retain(|p| !buf[p.name.0 as usize..(p.name.0 + p.name.1) as usize].eq_ignore_ascii_case(name));
        self.pairs.len() != before
    }

    /// Replaces every value of `name` with `value`.
    pub fn set(&mut self, name: &str, value: &[u8]) {
        self.drop_name(name.as_bytes());
        self.append(name.as_bytes(), value);
        self.touch(name.to_ascii_lowercase());
    }

    /// Adds a value of `name`.
    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.append(name.as_bytes(), value);
        self.touch(name.to_ascii_lowercase());
    }

    /// Removes every value of `name` (absent is fine).
    pub fn remove(&mut self, name: &str) {
        if self.drop_name(name.as_bytes()) {
            self.touch(name.to_ascii_lowercase());
        }
    }

    /// Replaces the whole map.
    pub fn replace(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        let old: Vec<String> = self.iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect();
        for k in old {
            self.touch(k);
        }
        self.pairs.clear();
        for (k, v) in pairs {
            self.append(&k, &v);
            self.touch(String::from_utf8_lossy(&k).to_ascii_lowercase());
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
                let vals = self.all(&n).collect();
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

/// Host state of one HTTP context, lent to the instance for each callback. Boxed, so lending it
/// to a callback (and keeping it in a request's future) moves a pointer, not the state.
#[derive(Debug, Default)]
pub struct Stream(Box<StreamState>);

impl std::ops::Deref for Stream {
    type Target = StreamState;

    fn deref(&self) -> &StreamState {
        &self.0
    }
}

impl std::ops::DerefMut for Stream {
    fn deref_mut(&mut self) -> &mut StreamState {
        &mut self.0
    }
}

/// What a [`Stream`] holds.
#[derive(Debug, Default)]
pub struct StreamState {
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
