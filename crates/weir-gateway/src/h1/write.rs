//! Writing heads: the upstream request head and the client's response head, each in one pass
//! into a reused buffer.
//!
//! Owns the proxy-hop header rules on the fast path (RFC 9110 §7.6, as `crate::headers` does
//! for hyper): hop-by-hop fields and the ones `Connection` names are dropped, the filters'
//! [`Edits`] applied, `X-Forwarded-For`/`-Proto`/`-Host` and `Via` added. `Content-Length`
//! and `Transfer-Encoding: chunked` pass unchanged, because the body passes unchanged.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::request::{ReqHead, eq_lower};
use super::response::RspHead;
use crate::view::{Edits, FieldSpan};

/// What a field means to the hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Forwarded as is.
    Other,
    /// Never crosses a proxy.
    Hop,
    /// `X-Forwarded-For`: appended to.
    Xff,
    /// `X-Forwarded-Proto`: replaced.
    Xfp,
    /// `X-Forwarded-Host`: kept, and not added.
    Xfh,
}

/// Compares by length first: most names are none of these and cost one comparison.
fn class(name: &[u8]) -> Class {
    let is = |n: &[u8]| eq_lower(name, n);
    match name.len() {
        2 if is(b"te") => Class::Hop,
        7 if is(b"trailer") || is(b"upgrade") => Class::Hop,
        10 if is(b"connection") || is(b"keep-alive") => Class::Hop,
        15 if is(b"x-forwarded-for") => Class::Xff,
        16 if is(b"proxy-connection") || is(b"x-forwarded-host") => {
            if is(b"x-forwarded-host") {
                Class::Xfh
            } else {
                Class::Hop
            }
        }
        17 if is(b"x-forwarded-proto") => Class::Xfp,
        18 if is(b"proxy-authenticate") => Class::Hop,
        19 if is(b"proxy-authorization") => Class::Hop,
        _ => Class::Other,
    }
}

/// Whether a `Connection` field of `fields` names `name`.
fn named_by_connection(buf: &[u8], fields: &[FieldSpan], name: &[u8]) -> bool {
    fields
        .iter()
        .filter(|f| eq_lower(f.name.of(buf), b"connection"))
        .any(|f| f.value.of(buf).split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(name)))
}

/// Consecutive kept lines of the original head, copied in one piece.
#[derive(Debug, Default)]
struct Run {
    start: usize,
    end: usize,
}

impl Run {
    /// Keeps field `f` of `buf`: extends the run when its line follows the run's, else
    /// flushes the run and starts a new one (a line not ending in CRLF is written anew).
    fn keep(&mut self, out: &mut Vec<u8>, buf: &[u8], f: &FieldSpan) {
        let start = f.name.at as usize;
        match line_end(buf, f) {
            Some(end) if self.end == start && self.start < self.end => self.end = end,
            Some(end) => {
                self.flush(out, buf);
                (self.start, self.end) = (start, end);
            }
            None => {
                self.flush(out, buf);
                field(out, f.name.of(buf), f.value.of(buf));
            }
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>, buf: &[u8]) {
        if self.start < self.end {
            out.extend_from_slice(&buf[self.start..self.end]);
        }
        (self.start, self.end) = (0, 0);
    }
}

/// Where the line of `f` ends, when it ends in CRLF right after its value (and whitespace).
fn line_end(buf: &[u8], f: &FieldSpan) -> Option<usize> {
    let mut i = (f.value.at + f.value.len) as usize;
    while matches!(buf.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    (buf.get(i..i + 2) == Some(b"\r\n")).then_some(i + 2)
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The client side of the hop, for the forwarding headers.
#[derive(Clone, Copy, Debug)]
pub struct Forwarding<'a> {
    /// The client's IP, as text.
    pub client: &'a [u8],
    /// `http` or `https`.
    pub proto: &'static str,
}

/// Writes the upstream request head for `head` (parsed from `buf`) into `out`.
pub fn request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ReqHead,
    fields: &[FieldSpan],
    edits: &Edits,
    fwd: Forwarding<'_>,
) {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    match edits.path.as_deref().filter(|p| valid_target(p)) {
        Some(p) => out.extend_from_slice(p.as_bytes()),
        None => out.extend_from_slice(head.target.of(buf)),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let edited = !edits.is_empty();
    let mut has_xff = false;
    let mut has_xfh = false;
    let mut run = Run::default();
    for f in fields {
        let name = f.name.of(buf);
        match class(name) {
            Class::Hop | Class::Xfp => continue,
            Class::Xff => {
                // Appended to below; several fields join into one list.
                has_xff = true;
                continue;
            }
            Class::Xfh => has_xfh = true,
            Class::Other => {}
        }
        if head.connection_names && named_by_connection(buf, fields, name) {
            continue;
        }
        if edited && !super::request::framing_name(name) && std::str::from_utf8(name).is_ok_and(|n| edits.hides(n)) {
            continue;
        }
        run.keep(out, buf, f);
    }
    run.flush(out, buf);
    for (k, v) in edits.set.iter().chain(&edits.add) {
        let name = k.as_str().as_bytes();
        // Framing and Host stay as the client sent them: the body passes unchanged.
        if !matches!(class(name), Class::Xfp | Class::Hop | Class::Xff) && !super::request::framing_name(name) {
            field(out, name, v.as_bytes());
        }
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if has_xff || edited {
        // The list as the filters left it (set, appended or removed), then the client.
        let view = crate::view::Fields::Raw { head: buf, fields, edits };
        for v in view.values("x-forwarded-for") {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(fwd.client);
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(fwd.proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !has_xfh {
        field(out, b"x-forwarded-host", head.host.of(buf));
    }
    out.extend_from_slice(b"via: 1.1 weir\r\n\r\n");
}

/// A rewritten target the request line can carry: origin-form, visible ASCII, no spaces.
fn valid_target(p: &str) -> bool {
    p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic())
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// Whether `edits` hide field `name` (framing fields never: the body passes unchanged).
fn hidden(edits: &Edits, name: &[u8]) -> bool {
    !edits.is_empty() && !super::request::framing_name(name) && std::str::from_utf8(name).is_ok_and(|n| edits.hides(n))
}

/// Writes the client's response head for the upstream's `head` (parsed from `buf`), with
/// `extra` fields from the filters and a plugin's `edits` applied in the same pass, closing
/// the connection after it when `close`.
pub fn response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RspHead,
    fields: &[FieldSpan],
    extra: &[(HeaderName, HeaderValue)],
    edits: &Edits,
    close: bool,
) {
    out.clear();
    status_line(out, head.status, head.reason.of(buf));
    let mut run = Run::default();
    for f in fields {
        let name = f.name.of(buf);
        if class(name) == Class::Hop
            || (head.connection_names && named_by_connection(buf, fields, name))
            || hidden(edits, name)
        {
            continue;
        }
        run.keep(out, buf, f);
    }
    run.flush(out, buf);
    for (k, v) in extra.iter().filter(|(k, _)| !hidden(edits, k.as_str().as_bytes())) {
        field(out, k.as_str().as_bytes(), v.as_bytes());
    }
    for (k, v) in edits.set.iter().chain(&edits.add) {
        let name = k.as_str().as_bytes();
        if class(name) != Class::Hop && !super::request::framing_name(name) {
            field(out, name, v.as_bytes());
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Calls `f` with each of the upstream's response fields that crosses the hop, as they lie in
/// `buf`.
pub fn each_forwarded(buf: &[u8], head: &RspHead, fields: &[FieldSpan], f: &mut dyn FnMut(&[u8], &[u8])) {
    for field in fields {
        let name = field.name.of(buf);
        if class(name) == Class::Hop || (head.connection_names && named_by_connection(buf, fields, name)) {
            continue;
        }
        f(name, field.value.of(buf));
    }
}

/// The upstream's response fields as a `HeaderMap`, for filters that edit response headers
/// (the rare path: most chains leave them alone).
pub fn response_map(buf: &[u8], head: &RspHead, fields: &[FieldSpan]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(fields.len());
    each_forwarded(buf, head, fields, &mut |name, value| {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(k, v);
        }
    });
    map
}

/// Writes a response head from a status and a `HeaderMap` (Weir's own answers, and proxied
/// responses whose headers a filter edited); `length` adds `Content-Length`.
pub fn map_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap, length: Option<usize>, close: bool) {
    out.clear();
    status_line(out, status.as_u16(), status.canonical_reason().unwrap_or("").as_bytes());
    for (k, v) in headers {
        if k == http::header::CONNECTION || (length.is_some() && k == http::header::CONTENT_LENGTH) {
            continue;
        }
        field(out, k.as_str().as_bytes(), v.as_bytes());
    }
    if let Some(n) = length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::request::{Limits, Parsed, parse};

    fn upstream_head(raw: &[u8], edits: &Edits) -> String {
        let mut fields = Vec::new();
        let Parsed::Head(h) = parse(raw, Limits { max_head: 8192, max_uri: 1024 }, &mut fields) else { panic!() };
        let mut out = Vec::new();
        request_head(&mut out, raw, &h, &fields, edits, Forwarding { client: b"10.0.0.9", proto: "http" });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hop_by_hop_goes_and_forwarding_comes() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: api\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\nX-Kept: k\r\n\r\n";
        let got = upstream_head(raw, &Edits::default());
        assert_eq!(
            got,
            "GET /a?b HTTP/1.1\r\nHost: api\r\nX-Kept: k\r\nx-forwarded-for: 1.1.1.1, 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: api\r\nvia: 1.1 weir\r\n\r\n"
        );
    }

    #[test]
    fn edits_apply_in_the_same_pass() {
        let raw = b"POST /old HTTP/1.1\r\nHost: api\r\nX-Drop: 1\r\nX-Set: old\r\nContent-Length: 2\r\n\r\nok";
        let mut e = Edits::default();
        e.remove(HeaderName::from_static("x-drop"));
        e.set(HeaderName::from_static("x-set"), HeaderValue::from_static("new"));
        e.add(HeaderName::from_static("x-add"), HeaderValue::from_static("a"));
        e.path = Some("/new?q=1".into());
        let got = upstream_head(raw, &e);
        assert!(
            got.starts_with("POST /new?q=1 HTTP/1.1\r\nHost: api\r\nContent-Length: 2\r\nx-set: new\r\nx-add: a\r\n"),
            "{got}"
        );
        assert!(!got.contains("old") && !got.contains("X-Drop"), "{got}");
        // A filter's X-Forwarded-For is the list the client's address is appended to.
        let mut e = Edits::default();
        e.set(HeaderName::from_static("x-forwarded-for"), HeaderValue::from_static("10.9.9.9"));
        let got = upstream_head(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n", &e);
        assert!(got.contains("x-forwarded-for: 10.9.9.9, 10.0.0.9\r\n") && !got.contains("1.1.1.1"), "{got}");
    }

    #[test]
    fn response_heads_drop_hop_by_hop() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok";
        let mut fields = Vec::new();
        let Ok(crate::h1::response::RspParsed::Head(h)) = crate::h1::response::parse(raw, false, 8192, &mut fields)
        else {
            panic!()
        };
        let mut out = Vec::new();
        response_head(&mut out, raw, &h, &fields, &[], Edits::none(), true);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nconnection: close\r\n\r\n");
    }
}
