//! The host side of one HTTP context: its header maps, bodies, properties and what the plugin
//! asked for (a local response, callouts, resumption). The embedder owns a [`Stream`] between
//! callbacks and lends it to the instance for each one, so a paused request costs the instance
//! nothing and many streams share one instance.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A header map as the plugin sees it: ordered `(name, value)` pairs, pseudo-headers
/// (`:method`, `:path`, `:authority`, `:scheme`, `:status`) included. Names are matched without
/// regard to case and handed to the plugin lower-case; a peer's names are kept as sent and
/// lower-cased only if the plugin reads the whole map. Every name a plugin changes is
/// remembered (lower-case), so the embedder applies exactly the changes.
///
/// Names and values live back to back in one buffer, and the names changed are spans of it
/// too, so a map kept from request to request ([`Fields::clear`]) fills and records edits
/// without allocating.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    buf: Vec<u8>,
    pairs: Vec<Pair>,
    /// Lower-case names changed since the last [`Fields::forget_changes`], as spans of `buf`.
    touched: Vec<(u32, u32)>,
}

/// Where one pair's name and value are in the buffer.
#[derive(Clone, Copy, Debug)]
struct Pair {
    name: (u32, u32),
    value: (u32, u32),
}

/// A map whose buffers grew past this many bytes is not kept for the next request.
const KEEP_BYTES: usize = 16 << 10;

impl Fields {
    /// A map of these pairs, as a peer sent them.
    pub fn new(pairs: Vec<(String, Vec<u8>)>) -> Self {
        let mut f = Self::default();
        for (k, v) in pairs {
            f.push(&k, &v);
        }
        f
    }

    /// Empties the map for the next request, keeping its buffers unless they grew large.
    pub fn clear(&mut self) {
        if self.buf.capacity() > KEEP_BYTES || self.pairs.capacity() > KEEP_BYTES / 16 {
            *self = Self::default();
            return;
        }
        self.buf.clear();
        self.pairs.clear();
        self.touched.clear();
    }

    /// The capacities of its buffers (bytes, pairs), for tests.
    #[cfg(test)]
    pub(crate) fn capacities(&self) -> (usize, usize) {
        (self.buf.capacity(), self.pairs.capacity())
    }

    /// Makes room for `pairs` more pairs of `bytes` bytes.
    pub fn reserve(&mut self, pairs: usize, bytes: usize) {
        self.buf.reserve(bytes);
        self.pairs.reserve(pairs);
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

    fn put_lower(&mut self, name: &[u8]) -> (u32, u32) {
        let n = self.put(name);
        self.buf[n.0 as usize..].make_ascii_lowercase();
        n
    }

    /// Appends a pair the plugin made; its name is stored lower-case.
    fn append(&mut self, name: &[u8], value: &[u8]) -> (u32, u32) {
        let n = self.put_lower(name);
        let value = self.put(value);
        self.pairs.push(Pair { name: n, value });
        n
    }

    /// Appends a pair as it came from the peer (not a change).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.push_raw(name.as_bytes(), value);
    }

    /// [`Fields::push`] for a name as raw bytes.
    pub fn push_raw(&mut self, name: &[u8], value: &[u8]) {
        let name = self.put(name);
        let value = self.put(value);
        self.pairs.push(Pair { name, value });
    }

    /// [`Fields::push`] for a value in parts (`:path` as path, `?`, query), written as one.
    pub fn push_parts(&mut self, name: &str, parts: &[&[u8]]) {
        let n = self.put(name.as_bytes());
        let at = self.buf.len();
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        let value = (at as u32, (self.buf.len() - at) as u32);
        self.pairs.push(Pair { name: n, value });
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The map as the ABI serializes it (count, lengths, then each name lower-case and value,
    /// each followed by a NUL), appended to `out`.
    pub fn serialize_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.serialized_len());
        out.extend_from_slice(&(self.pairs.len() as u32).to_le_bytes());
        for p in &self.pairs {
            out.extend_from_slice(&p.name.1.to_le_bytes());
            out.extend_from_slice(&p.value.1.to_le_bytes());
        }
        for p in &self.pairs {
            out.extend(self.slice(p.name).iter().map(u8::to_ascii_lowercase));
            out.push(0);
            out.extend_from_slice(self.slice(p.value));
            out.push(0);
        }
    }

    /// The length of [`Fields::serialize_into`]'s output.
    pub fn serialized_len(&self) -> usize {
        crate::abi::serialized_len(self.iter())
    }

    /// All pairs, in order (names as stored: a peer's as sent, the plugin's lower-case).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        self.pairs.iter().map(|p| (self.slice(p.name), self.slice(p.value)))
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_raw(name.as_bytes())
    }

    /// [`Fields::get`] for a name as raw bytes.
    pub fn get_raw(&self, name: &[u8]) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// Every value of `name`.
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.values(name.as_bytes())
    }

    fn values<'a, 'n>(&'a self, name: &'n [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.pairs.iter().filter(move |p| self.name_of(p).eq_ignore_ascii_case(name)).map(|p| self.slice(p.value))
    }

    fn drop_name(&mut self, name: &[u8]) -> bool {
        let before = self.pairs.len();
        let buf = &self.buf;
        self.pairs.retain(|p| !buf[p.name.0 as usize..(p.name.0 + p.name.1) as usize].eq_ignore_ascii_case(name));
        self.pairs.len() != before
    }

    /// Replaces every value of `name` with `value`.
    pub fn set(&mut self, name: &str, value: &[u8]) {
        self.set_raw(name.as_bytes(), value);
    }

    /// [`Fields::set`] for a name as raw bytes.
    pub fn set_raw(&mut self, name: &[u8], value: &[u8]) {
        self.drop_name(name);
        let n = self.append(name, value);
        self.touch(n);
    }

    /// Adds a value of `name`.
    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.add_raw(name.as_bytes(), value);
    }

    /// [`Fields::add`] for a name as raw bytes.
    pub fn add_raw(&mut self, name: &[u8], value: &[u8]) {
        let n = self.append(name, value);
        self.touch(n);
    }

    /// Removes every value of `name` (absent is fine).
    pub fn remove(&mut self, name: &str) {
        self.remove_raw(name.as_bytes());
    }

    /// [`Fields::remove`] for a name as raw bytes.
    pub fn remove_raw(&mut self, name: &[u8]) {
        if self.drop_name(name) && !self.is_touched(name) {
            let n = self.put_lower(name);
            self.touched.push(n);
        }
    }

    /// Replaces the whole map.
    pub fn replace(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        let old: Vec<Vec<u8>> = self.pairs.iter().map(|p| self.slice(p.name).to_vec()).collect();
        for name in old {
            if !self.is_touched(&name) {
                let n = self.put_lower(&name);
                self.touched.push(n);
            }
        }
        self.pairs.clear();
        for (k, v) in pairs {
            let n = self.append(&k, &v);
            self.touch(n);
        }
    }

    fn is_touched(&self, name: &[u8]) -> bool {
        self.touched.iter().any(|t| self.slice(*t).eq_ignore_ascii_case(name))
    }

    /// Records the name at span `n` (lower-case already) as changed.
    fn touch(&mut self, n: (u32, u32)) {
        if !self.is_touched(self.slice(n)) {
            self.touched.push(n);
        }
    }

    /// Names the plugin changed since the last [`Fields::forget_changes`], each with its values
    /// now (none: removed).
    pub fn changes(&self) -> impl Iterator<Item = (&[u8], impl Iterator<Item = &[u8]> + '_)> + '_ {
        self.touched.iter().map(|t| {
            let name = self.slice(*t);
            (name, self.values(name))
        })
    }

    /// Forgets the changes [`Fields::changes`] lists.
    pub fn forget_changes(&mut self) {
        self.touched.clear();
    }

    /// Whether the plugin changed anything since the last [`Fields::forget_changes`].
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

/// A body buffer that grew past this is not kept for the next request.
const KEEP_BODY: usize = 16 << 10;

impl Stream {
    /// Empties it for the next request on the same instance, keeping its buffers (unless they
    /// grew large), so a request's context costs no allocation for its maps.
    pub fn reset(&mut self) {
        let s = &mut *self.0;
        for f in [&mut s.request_headers, &mut s.request_trailers, &mut s.response_headers, &mut s.response_trailers] {
            f.clear();
        }
        for b in [&mut s.request_body, &mut s.response_body] {
            if b.capacity() > KEEP_BODY {
                *b = Vec::new();
            } else {
                b.clear();
            }
        }
        s.body_changed = false;
        s.properties = Properties::default();
        s.local = None;
        s.calls.clear();
        s.resumed = false;
        s.closed = false;
    }
}
