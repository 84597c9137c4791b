//! The strict recognizer of HTTP/1.1 request heads: one httparse pass over the bytes in the
//! connection's buffer, kept as spans of it.
//!
//! Owns: deciding, per head, whether the fast path serves it ([`Parsed::Head`]), refuses it
//! ([`Parsed::Refuse`]: anything ambiguous, the smuggling shapes of RFC 9112 §6.3 and §3.2) or
//! leaves it to hyper ([`Parsed::Handoff`]: HTTP/2, upgrades, `Expect`, absolute-form and the
//! other rare valid forms). It is the smuggling guard of HTTP/1.1: every head is parsed once.

use std::mem::MaybeUninit;

use http::Method;

use crate::view::{FieldSpan, Span};

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head the fast path serves.
#[derive(Debug)]
pub struct ReqHead {
    /// Bytes of the head, its final empty line included (and any empty lines before it).
    pub len: usize,
    /// Method.
    pub method: Method,
    /// The request target (origin-form: path and query).
    pub target: Span,
    /// Length of the path part of `target`.
    pub path_len: u32,
    /// The `Host` value.
    pub host: Span,
    /// Body framing.
    pub framing: Framing,
    /// The client asked to close after this request.
    pub close: bool,
    /// `Connection` names other headers (they are not forwarded).
    pub connection_names: bool,
}

impl ReqHead {
    /// The path, without query.
    pub fn path(&self) -> Span {
        Span { at: self.target.at, len: self.path_len }
    }

    /// The query, if any (without `?`).
    pub fn query(&self) -> Option<Span> {
        (self.path_len < self.target.len)
            .then(|| Span { at: self.target.at + self.path_len + 1, len: self.target.len - self.path_len - 1 })
    }
}

/// Why a head is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400, with what was wrong.
    BadRequest(&'static str),
    /// 431: the head is over the listener's `max_header_size`.
    HeadTooLarge,
    /// 414: the URI is over the listener's `max_uri_length`.
    UriTooLong,
}

/// What the recognizer made of the bytes so far.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A head the fast path serves.
    Head(ReqHead),
    /// Refused: answer and close.
    Refuse(Refusal),
    /// Valid, but for hyper: replay the bytes read so far.
    Handoff,
}

/// Limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest head, in bytes.
    pub max_head: usize,
    /// Longest URI.
    pub max_uri: usize,
}

/// Most header fields in one head (httparse's slots; more is 431).
pub const MAX_FIELDS: usize = 100;

const PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Parses the head at the start of `buf`; on [`Parsed::Head`], `fields` holds its fields.
pub fn parse(buf: &[u8], limits: Limits, fields: &mut Vec<FieldSpan>) -> Parsed {
    let probe = &buf[..buf.len().min(PREFACE.len())];
    if PREFACE.starts_with(probe) {
        return if probe.len() == PREFACE.len() { Parsed::Handoff } else { Parsed::Partial };
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head => return Parsed::Refuse(Refusal::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refuse(Refusal::HeadTooLarge),
        Err(_) => return Parsed::Refuse(Refusal::BadRequest("malformed request head")),
    };
    if len > limits.max_head {
        return Parsed::Refuse(Refusal::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Refuse(Refusal::BadRequest("malformed request line"));
    };
    if method == "CONNECT" {
        return Parsed::Refuse(Refusal::BadRequest("CONNECT is not supported"));
    }
    if target.len() > limits.max_uri {
        return Parsed::Refuse(Refusal::UriTooLong);
    }
    // Absolute-form, `OPTIONS *` and HTTP/1.0 (whose keep-alive and framing rules differ)
    // are valid but rare: hyper serves them.
    if !target.starts_with('/') || version == 0 {
        return Parsed::Handoff;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Refuse(Refusal::BadRequest("invalid method"));
    };
    fields.clear();
    let mut f = Fold::default();
    for h in req.headers.iter() {
        let value = h.value.trim_ascii();
        fields.push(FieldSpan { name: Span::within(buf, h.name.as_bytes()), value: Span::within(buf, value) });
        if let Err(why) = f.field(h.name.as_bytes(), value, buf) {
            return Parsed::Refuse(Refusal::BadRequest(why));
        }
    }
    match f.finish() {
        Err(why) => Parsed::Refuse(Refusal::BadRequest(why)),
        Ok(None) => Parsed::Handoff,
        Ok(Some(framing)) => {
            let target_span = Span::within(buf, target.as_bytes());
            let path_len = memchr::memchr(b'?', target.as_bytes()).unwrap_or(target.len()) as u32;
            Parsed::Head(ReqHead {
                len,
                method,
                target: target_span,
                path_len,
                host: f.host.unwrap_or_default(),
                framing,
                close: f.close,
                connection_names: f.connection_names,
            })
        }
    }
}

/// What the fields of one head say about framing and the connection.
#[derive(Debug, Default)]
struct Fold {
    lengths: u32,
    length: Option<u64>,
    encodings: u32,
    chunked: bool,
    hosts: u32,
    host: Option<Span>,
    close: bool,
    connection_upgrade: bool,
    connection_names: bool,
    websocket: bool,
    expect: bool,
}

impl Fold {
    fn field(&mut self, name: &[u8], value: &[u8], buf: &[u8]) -> Result<(), &'static str> {
        match name.len() {
            4 if eq_lower(name, b"host") => {
                self.hosts += 1;
                self.host = Some(Span::within(buf, value));
            }
            6 if eq_lower(name, b"expect") => self.expect = true,
            7 if eq_lower(name, b"upgrade") => {
                self.websocket |= value.split(|&b| b == b',').any(|t| eq_lower(t.trim_ascii(), b"websocket"));
            }
            10 if eq_lower(name, b"connection") => {
                for t in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if eq_lower(t, b"close") {
                        self.close = true;
                    } else if eq_lower(t, b"upgrade") {
                        self.connection_upgrade = true;
                    } else if framing_name(t) {
                        // Dropping a framing field named here would desync the next hop.
                        return Err("Connection names a framing header");
                    } else if !eq_lower(t, b"keep-alive") && !t.is_empty() {
                        self.connection_names = true;
                    }
                }
            }
            14 if eq_lower(name, b"content-length") => {
                self.lengths += 1;
                self.length = Some(content_length(value).ok_or("invalid Content-Length")?);
            }
            17 if eq_lower(name, b"transfer-encoding") => {
                self.encodings += 1;
                self.chunked = eq_lower(value, b"chunked");
            }
            _ => {}
        }
        Ok(())
    }

    /// The framing; `None` when hyper should serve the request.
    fn finish(&self) -> Result<Option<Framing>, &'static str> {
        if self.lengths > 1 {
            return Err("more than one Content-Length");
        }
        if self.encodings > 0 && self.lengths > 0 {
            return Err("both Content-Length and Transfer-Encoding");
        }
        if self.encodings > 1 || (self.encodings == 1 && !self.chunked) {
            return Err("Transfer-Encoding other than a single chunked");
        }
        if self.hosts != 1 {
            return Err(if self.hosts == 0 { "missing Host" } else { "more than one Host" });
        }
        if self.expect || (self.websocket && self.connection_upgrade) {
            return Ok(None);
        }
        Ok(Some(match (self.chunked, self.length) {
            (true, _) => Framing::Chunked,
            (false, Some(0) | None) => Framing::None,
            (false, Some(n)) => Framing::Length(n),
        }))
    }
}

/// `Content-Length`, `Transfer-Encoding` and `Host`: never removed on the way, because the
/// fast path forwards the body as framed and the next hop routes by `Host`.
pub fn framing_name(t: &[u8]) -> bool {
    eq_lower(t, b"content-length") || eq_lower(t, b"transfer-encoding") || eq_lower(t, b"host")
}

/// Whether `b` equals `lower`, a lowercase literal of letters, digits and `-`, ignoring ASCII
/// case. For header names and the tokens of their values: there no other byte folds onto those
/// (a byte ORed with 0x20 is a lowercase letter only if it is a letter, and `-` only if it is
/// `-` or CR, which neither holds). Branch-free over the bytes, so a name costs a few
/// instructions instead of a case conversion per byte.
#[inline]
pub fn eq_lower(b: &[u8], lower: &[u8]) -> bool {
    b.len() == lower.len() && b.iter().zip(lower).fold(0u8, |acc, (x, y)| acc | ((x | 0x20) ^ y)) == 0
}

/// `1*DIGIT`, at most 18 digits (no overflow); signs, spaces and lists are refused.
pub fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 8192, max_uri: 1024 };

    fn verdict(raw: &[u8]) -> Parsed {
        parse(raw, LIMITS, &mut Vec::new())
    }

    fn refused(raw: &[u8]) -> bool {
        matches!(verdict(raw), Parsed::Refuse(Refusal::BadRequest(_)))
    }

    #[test]
    fn eq_lower_is_eq_ignore_ascii_case_on_every_byte_a_field_can_hold() {
        for lower in [&b"content-length"[..], b"transfer-encoding", b"keep-alive", b"close", b"te", b"x-forwarded-for"]
        {
            // Every byte but CR and LF (httparse refuses those in names and values), at each spot.
            for at in 0..lower.len() {
                for b in (0u8..=255).filter(|&b| b != b'\r' && b != b'\n') {
                    let mut v = lower.to_vec();
                    v[at] = b;
                    assert_eq!(eq_lower(&v, lower), v.eq_ignore_ascii_case(lower), "{:?} vs {:?}", v, lower);
                }
            }
            assert!(!eq_lower(&lower[1..], lower));
        }
    }

    #[test]
    fn the_common_head_is_served_in_place() {
        let raw = b"GET /a/b?x=1 HTTP/1.1\r\nHost: api.example:8080\r\nX-A: 1\r\n\r\nnext";
        let mut fields = Vec::new();
        let Parsed::Head(h) = parse(raw, LIMITS, &mut fields) else { panic!() };
        assert_eq!(h.len, raw.len() - 4);
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.target.of(raw), b"/a/b?x=1");
        assert_eq!(h.path().of(raw), b"/a/b");
        assert_eq!(h.query().unwrap().of(raw), b"x=1");
        assert_eq!(h.host.of(raw), b"api.example:8080");
        assert_eq!(h.framing, Framing::None);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[1].value.of(raw), b"1");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n",
        ] {
            assert!(refused(raw), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn valid_variants_keep_their_framing() {
        let tab = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tCHUNKED\r\n\r\n";
        assert!(matches!(verdict(tab), Parsed::Head(ReqHead { framing: Framing::Chunked, .. })));
        let zeros = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\n";
        assert!(matches!(verdict(zeros), Parsed::Head(ReqHead { framing: Framing::Length(5), .. })));
        let lf = b"GET / HTTP/1.1\nHost: a\n\n";
        assert!(matches!(verdict(lf), Parsed::Head(_)));
        let h2c = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n";
        assert!(matches!(verdict(h2c), Parsed::Head(ReqHead { connection_names: true, .. })));
    }

    #[test]
    fn rare_valid_forms_go_to_hyper() {
        for raw in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert!(matches!(verdict(raw), Parsed::Handoff), "{}", String::from_utf8_lossy(raw));
        }
        assert!(matches!(verdict(b"PRI * HT"), Parsed::Partial));
    }

    #[test]
    fn limits_answer_414_and_431() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(2000));
        assert!(matches!(verdict(long.as_bytes()), Parsed::Refuse(Refusal::UriTooLong)));
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "a".repeat(9000));
        assert!(matches!(verdict(big.as_bytes()), Parsed::Refuse(Refusal::HeadTooLarge)));
        let many: String = (0..120).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert!(matches!(verdict(many.as_bytes()), Parsed::Refuse(Refusal::HeadTooLarge)));
    }
}
