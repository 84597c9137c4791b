//! The request view: one read-only look at a request head, shared by the router, the filters
//! and the balancer, whichever parser produced the head.
//!
//! Owns: [`RequestView`] (method, path, query, host, header lookup by name), [`Fields`] (the
//! headers behind it: hyper's `HeaderMap`, or the fast path's slices of its read buffer with
//! the filters' [`Edits`] laid over them) and [`Edits`] itself, the list of header and path
//! changes a filter chain made, applied when the upstream head is written.
//!
//! Does not own: parsing (hyper, or [`crate::h1`]) or writing heads.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// Where some bytes of a head lie in the connection's read buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte.
    pub at: u32,
    /// Length.
    pub len: u32,
}

impl Span {
    /// The bytes of `buf` this span covers (empty if out of range).
    pub fn of(self, buf: &[u8]) -> &[u8] {
        let start = self.at as usize;
        buf.get(start..start + self.len as usize).unwrap_or(&[])
    }

    /// The span of `part`, a slice of `buf`.
    pub fn within(buf: &[u8], part: &[u8]) -> Self {
        let at = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        Self { at: at as u32, len: part.len() as u32 }
    }
}

/// One header field of a head parsed in place: its name and value (without surrounding
/// whitespace) as spans of the head.
#[derive(Clone, Copy, Debug, Default)]
pub struct FieldSpan {
    /// The name as sent (any case).
    pub name: Span,
    /// The value.
    pub value: Span,
}

/// Header and path changes made by filters, to apply when the upstream head is written.
#[derive(Debug, Default)]
pub struct Edits {
    /// Headers set: they replace every field of the same name.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Headers removed (fields of the original head; later adds still count).
    pub remove: Vec<HeaderName>,
    /// New path and query.
    pub path: Option<String>,
}

impl Edits {
    /// No edits (a shared empty list).
    pub fn none() -> &'static Edits {
        &NO_EDITS
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty() && self.path.is_none()
    }

    /// Clears the edits for the next request, keeping their allocations.
    pub fn clear(&mut self) {
        if self.is_empty() {
            return;
        }
        self.set.clear();
        self.add.clear();
        self.remove.clear();
        self.path = None;
    }

    /// Removes every field named `name`.
    pub fn remove(&mut self, name: HeaderName) {
        self.set.retain(|(k, _)| *k != name);
        self.add.retain(|(k, _)| *k != name);
        if !self.remove.contains(&name) {
            self.remove.push(name);
        }
    }

    /// Sets `name` to `value`, replacing every field of that name.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.add.retain(|(k, _)| *k != name);
        match self.set.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.set.push((name, value)),
        }
    }

    /// Appends a field.
    pub fn add(&mut self, name: HeaderName, value: HeaderValue) {
        self.add.push((name, value));
    }

    /// Whether a field of the original head named `name` is hidden (removed or set).
    pub fn hides(&self, name: &str) -> bool {
        self.remove.iter().any(|n| name.eq_ignore_ascii_case(n.as_str()))
            || self.set.iter().any(|(n, _)| name.eq_ignore_ascii_case(n.as_str()))
    }
}

/// The headers behind a [`RequestView`].
#[derive(Clone, Copy, Debug)]
pub enum Fields<'a> {
    /// hyper's parsed headers (HTTP/2, and HTTP/1.1 handed to hyper).
    Map(&'a HeaderMap),
    /// The fast path's fields, with the chain's edits so far laid over them.
    Raw {
        /// The bytes the spans point into.
        head: &'a [u8],
        /// The head's fields, in order.
        fields: &'a [FieldSpan],
        /// Changes made by earlier filter phases.
        edits: &'a Edits,
    },
}

static NO_EDITS: Edits = Edits { set: Vec::new(), add: Vec::new(), remove: Vec::new(), path: None };

impl<'a> Fields<'a> {
    /// Raw fields with no edits.
    pub fn raw(head: &'a [u8], fields: &'a [FieldSpan]) -> Self {
        Self::Raw { head, fields, edits: &NO_EDITS }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&'a [u8]> {
        self.values(name.as_str()).next()
    }

    /// The first value of the header named `name` (any case).
    pub fn get_str(&self, name: &str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// Every value of the header named `name` (any case), in order.
    pub fn values<'n>(&self, name: &'n str) -> Values<'a, 'n> {
        match *self {
            Self::Map(m) => Values::Map(m.get_all(name).iter()),
            Self::Raw { head, fields, edits } => {
                if let Some((_, v)) = edits.set.iter().find(|(k, _)| k.as_str().eq_ignore_ascii_case(name)) {
                    // Set replaces the original fields; appends after it follow.
                    return Values::Raw { head, fields: &[], edits, name, first: Some(v.as_bytes()), i: 0 };
                }
                let fields = if edits.hides(name) { &[] } else { fields };
                Values::Raw { head, fields, edits, name, first: None, i: 0 }
            }
        }
    }

    /// Whether any field is named `name`.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// Calls `f` with every visible field, `(name, value)`: the original fields not hidden by
    /// edits, then the edits' sets and appends.
    pub fn each(&self, mut f: impl FnMut(&'a [u8], &'a [u8])) {
        match *self {
            Self::Map(m) => m.iter().for_each(|(k, v)| f(k.as_str().as_bytes(), v.as_bytes())),
            Self::Raw { head, fields, edits } => {
                for fs in fields {
                    let name = fs.name.of(head);
                    if !std::str::from_utf8(name).is_ok_and(|n| edits.hides(n)) {
                        f(name, fs.value.of(head));
                    }
                }
                for (k, v) in edits.set.iter().chain(&edits.add) {
                    f(k.as_str().as_bytes(), v.as_bytes());
                }
            }
        }
    }
}

/// The values of one header name, in order.
#[derive(Debug)]
pub enum Values<'a, 'n> {
    /// From a `HeaderMap`.
    Map(http::header::ValueIter<'a, HeaderValue>),
    /// From raw fields, then the edits' appends.
    Raw {
        /// The bytes the spans point into.
        head: &'a [u8],
        /// Original fields still to look at.
        fields: &'a [FieldSpan],
        /// Edits, for their appends.
        edits: &'a Edits,
        /// The name looked up.
        name: &'n str,
        /// A value set by a filter, returned first.
        first: Option<&'a [u8]>,
        /// Position in the edits' appends.
        i: usize,
    },
}

impl<'a> Iterator for Values<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Self::Map(it) => it.next().map(HeaderValue::as_bytes),
            Self::Raw { head, fields, edits, name, first, i } => {
                if let Some(v) = first.take() {
                    return Some(v);
                }
                while let Some((f, rest)) = fields.split_first() {
                    *fields = rest;
                    if f.name.of(head).eq_ignore_ascii_case(name.as_bytes()) {
                        return Some(f.value.of(head));
                    }
                }
                while let Some((k, v)) = edits.add.get(*i) {
                    *i += 1;
                    if k.as_str().eq_ignore_ascii_case(name) {
                        return Some(v.as_bytes());
                    }
                }
                None
            }
        }
    }
}

/// What the router, the filters and the balancer look at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Host without port, if the request named one.
    pub host: Option<&'a str>,
    /// Path without query.
    pub path: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// Headers.
    pub headers: Fields<'a>,
}

impl<'a> RequestView<'a> {
    /// The first value of header `name`.
    pub fn header(&self, name: &HeaderName) -> Option<&'a [u8]> {
        self.headers.get(name)
    }

    /// The first value of header `name`, if it is visible ASCII text.
    pub fn header_str(&self, name: &HeaderName) -> Option<&'a str> {
        visible_text(self.headers.get(name)?)
    }

    /// Whether header `name` is present.
    pub fn has_header(&self, name: &HeaderName) -> bool {
        self.headers.contains(name)
    }
}

/// A header value as text, if it is visible ASCII and tabs (what `HeaderValue::to_str`
/// accepts). Checks every byte without branching, so long values (tokens) vectorise.
pub fn visible_text(v: &[u8]) -> Option<&str> {
    let visible = v.iter().fold(true, |ok, &b| ok & ((b == b'\t') | (b.wrapping_sub(0x20) < 0x5f)));
    if visible { std::str::from_utf8(v).ok() } else { None }
}

/// The host without port: `example.com` of `example.com:8080`, `::1` of `[::1]:80`.
pub fn strip_port(raw: &str) -> Option<&str> {
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h);
    }
    // A byte scan from the end: hosts are short, and a general reverse search costs more.
    let b = raw.as_bytes();
    let digits = b.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    match b.len().checked_sub(digits + 1) {
        Some(colon) if b[colon] == b':' => Some(&raw[..colon]),
        _ => Some(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fields_with_edits_read_like_a_header_map() {
        let head = b"Host: a\r\nX-Id: 1\r\nx-id: 2\r\nX-Gone: g\r\n".as_slice();
        let mut fields = Vec::new();
        for line in head.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let colon = line.iter().position(|&b| b == b':').unwrap();
            let name = Span::within(head, &line[..colon]);
            let value = Span::within(head, line[colon + 1..].trim_ascii());
            fields.push(FieldSpan { name, value });
        }
        let id = HeaderName::from_static("x-id");
        let gone = HeaderName::from_static("x-gone");
        let new = HeaderName::from_static("x-new");
        let mut edits = Edits::default();
        let f = Fields::Raw { head, fields: &fields, edits: &edits };
        assert_eq!(f.values("x-id").collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(f.get(&HeaderName::from_static("host")), Some(b"a".as_slice()));
        edits.remove(gone.clone());
        edits.set(id, HeaderValue::from_static("9"));
        edits.add(new.clone(), HeaderValue::from_static("n"));
        edits.add(gone, HeaderValue::from_static("back"));
        let f = Fields::Raw { head, fields: &fields, edits: &edits };
        assert_eq!(f.values("x-id").collect::<Vec<_>>(), [b"9"]);
        assert_eq!(f.values("x-gone").collect::<Vec<_>>(), [b"back"]);
        assert_eq!(f.get(&new), Some(b"n".as_slice()));
        assert!(!f.contains(&HeaderName::from_static("x-absent")));
    }

    #[test]
    fn visible_text_is_what_to_str_accepts() {
        assert_eq!(visible_text(b"Bearer a.b\tc"), Some("Bearer a.b\tc"));
        for bad in [&b"a\x7f"[..], b"a\x00", b"\xc3\xa9", b"a\r"] {
            assert_eq!(visible_text(bad), None, "{bad:?}");
            assert_eq!(visible_text(bad).is_some(), HeaderValue::from_bytes(bad).is_ok_and(|h| h.to_str().is_ok()));
        }
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.example:8080"), Some("a.example"));
        assert_eq!(strip_port("[::1]:80"), Some("::1"));
        assert_eq!(strip_port("a.example"), Some("a.example"));
        assert_eq!(strip_port("a.example:"), Some("a.example"));
        assert_eq!(strip_port("a:b"), Some("a:b"));
        assert_eq!(strip_port("8080"), Some("8080"));
    }
}
