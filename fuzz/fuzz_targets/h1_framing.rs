//! Differential framing of pipelined HTTP/1.1 requests: the fast path (`h1::request::parse`
//! and `h1::chunked::Chunked`) against a reference written here from RFC 9112 §6 and §7.1 on
//! top of httparse, over one arbitrary byte stream.
//!
//! Input: two bytes choosing a split point, then the stream. Both sides walk the stream the
//! way a connection does: parse a head at the current offset, follow its body (`Content-Length`
//! bytes, or chunked framing to its end), then the next head at the offset after that.
//!
//! The property, for every message: the two sides never disagree on where it ends. Either the
//! fast path refuses it (`Refuse`, `Handoff`, a chunk error: the walk stops there), or the
//! reference does, or both accept it with the same head length and body framing, and the same
//! offset for the next message. A refusal only ends the walk if it comes no later than the
//! other side's end of the message: a side that reads past the point where the other one ended
//! the message, and refuses only later, disagrees on framing (for the fast path that is
//! smuggling: it would have relayed the next request's bytes as body before refusing).
//!
//! Also asserted:
//! - the fast path never serves a head the reference considers malformed or ambiguous (more
//!   than one `Content-Length`, an invalid one, `Content-Length` with `Transfer-Encoding`, a
//!   `Transfer-Encoding` other than exactly one `chunked`, `Transfer-Encoding` in HTTP/1.0);
//! - the chunked decoder fed the body in two parts, split at the chosen point, ends at the same
//!   byte (or fails the same way) as when fed it whole, and takes no bytes after its end;
//! - a head parsed from a prefix of the buffer cut inside it is `Partial`, and from a prefix
//!   that holds it whole is the same head;
//! - nothing panics.
#![no_main]

use weir_gateway::h1::chunked::{ChunkError, Chunked};
use weir_gateway::h1::request::{self, Framing, Limits, Parsed};

/// Far above the inputs libFuzzer makes, so limits do not hide framing.
const LIMITS: Limits = Limits { max_head: 1 << 20, max_uri: 1 << 20 };

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [a, b, stream @ ..] = data else { return };
    let seed = usize::from(u16::from_le_bytes([*a, *b]));
    let mut fields = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let rest = &stream[at..];
        let reference = reference::head(rest);
        let head = match request::parse(rest, LIMITS, &mut fields) {
            Parsed::Head(h) => h,
            Parsed::Partial => {
                let whole = matches!(reference, reference::Head::Ok { .. } | reference::Head::Refused(_));
                assert!(!whole, "fast path wants more of a head the reference has whole: {reference:?}");
                return;
            }
            Parsed::Refuse(_) | Parsed::Handoff => return,
        };
        let (ref_len, ref_body) = match reference {
            reference::Head::Ok { len, body } => (len, body),
            other => panic!("fast path served a head the reference refuses: {other:?} (framing {:?})", head.framing),
        };
        assert_eq!(head.len, ref_len, "head length");
        assert!(head.len > 0 && head.len <= rest.len());
        head_prefix(rest, seed % (rest.len() + 1), head.len, head.framing);
        let body = &rest[head.len..];
        let body_len = match (head.framing, ref_body) {
            (Framing::None, reference::Body::Length(0)) => 0,
            (Framing::Length(n), reference::Body::Length(m)) if n == m => match usize::try_from(n) {
                Ok(n) if n <= body.len() => n,
                _ => return, // the stream ends inside the body
            },
            (Framing::Chunked, reference::Body::Chunked) => match chunked(body, seed % (body.len() + 1)) {
                Some(n) => n,
                None => return,
            },
            (fast, reference) => panic!("framing: fast path {fast:?}, reference {reference:?}"),
        };
        at += head.len + body_len;
    }
});

/// Heads parsed from prefixes of `rest` cut at `cut`: `Partial` inside the head, the same head
/// once it is whole.
fn head_prefix(rest: &[u8], cut: usize, len: usize, framing: Framing) {
    let mut fields = Vec::new();
    match request::parse(&rest[..cut], LIMITS, &mut fields) {
        Parsed::Partial if cut < len => {}
        Parsed::Head(h) if cut >= len => assert_eq!((h.len, h.framing), (len, framing), "head from a prefix"),
        other => panic!("head from a prefix of {cut} bytes (whole head {len}): {other:?}"),
    }
}

/// Follows the chunked body at the start of `body` with both sides; the body's length when
/// both end it (at the same byte), `None` when the walk stops.
fn chunked(body: &[u8], cut: usize) -> Option<usize> {
    let whole = fast_chunked(body, body.len());
    assert_eq!(whole, fast_chunked(body, cut), "chunked decoder fed in two parts at {cut}");
    match (whole, reference::chunked_end(body)) {
        (Ok(Some(n)), reference::Chunk::End(m)) => {
            assert_eq!(n, m, "chunked body end");
            Some(n)
        }
        // The reference must have refused before the fast path's end, not read past it.
        (Ok(Some(n)), _) => {
            let before = reference::chunked_end(&body[..n]);
            assert!(
                matches!(before, reference::Chunk::Invalid(_)),
                "fast path ended the body at {n}, reference: {before:?}"
            );
            None
        }
        // The fast path must have refused before the reference's end, not read past it.
        (whole, reference::Chunk::End(m)) => {
            let before = fast_chunked(&body[..m], m);
            assert!(
                before.is_err(),
                "reference ended the body at {m}, fast path: {whole:?}, on the first {m} bytes {before:?}"
            );
            None
        }
        _ => None,
    }
}

/// The fast path's decoder over `body`, fed in two parts split at `cut`: where the body ends
/// (`None`: not within `body`).
fn fast_chunked(body: &[u8], cut: usize) -> Result<Option<usize>, ChunkError> {
    let mut c = Chunked::default();
    let mut used = 0;
    for part in [&body[..cut], &body[cut..]] {
        let was_done = c.is_done();
        let n = c.feed(part)?;
        assert!(n <= part.len());
        if was_done {
            assert_eq!(n, 0, "decoder took bytes after the body's end");
        } else if !c.is_done() {
            assert_eq!(n, part.len(), "decoder left bytes without ending the body");
        }
        used += n;
    }
    Ok(c.is_done().then_some(used))
}

/// The reference: framing decided here from RFC 9112, sharing nothing with weir but httparse's
/// head parser.
mod reference {
    /// Header slots; more fields than this is a refusal.
    const SLOTS: usize = 128;

    /// What the reference makes of the head at the start of a buffer.
    #[derive(Debug)]
    #[allow(dead_code, reason = "the fields are for panic messages")]
    pub enum Head {
        /// Not a whole head yet.
        Partial,
        /// httparse refuses the head.
        Malformed(httparse::Error),
        /// The framing is ambiguous or invalid (RFC 9112 §6.1, §6.3): must be refused.
        Refused(&'static str),
        /// A head of `len` bytes, and how its body is delimited.
        Ok { len: usize, body: Body },
    }

    /// How a request body is delimited (RFC 9112 §6.3).
    #[derive(Clone, Copy, Debug)]
    pub enum Body {
        /// This many bytes (0: no body, rule 7).
        Length(u64),
        /// Chunked framing, to the end of its trailer section.
        Chunked,
    }

    pub fn head(buf: &[u8]) -> Head {
        let mut slots = [httparse::EMPTY_HEADER; SLOTS];
        let mut req = httparse::Request::new(&mut slots);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Head::Partial,
            Err(e) => return Head::Malformed(e),
        };
        let mut lengths = Vec::new();
        let mut codings = Vec::new();
        for h in req.headers.iter() {
            let value = ows_trim(h.value);
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths.push(value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                codings.push(value);
            }
        }
        let body = if !codings.is_empty() {
            // §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            if req.version != Some(1) {
                return Head::Refused("Transfer-Encoding in HTTP/1.0");
            }
            // §6.3 rule 3: with both, the message may be an attempt at smuggling.
            if !lengths.is_empty() {
                return Head::Refused("Content-Length and Transfer-Encoding");
            }
            // §6.3 rule 4 asks for chunked last; a gateway accepts exactly one `chunked` and
            // nothing else, so no coding is applied twice or left for the next hop to guess.
            if codings.len() != 1 || !codings[0].eq_ignore_ascii_case(b"chunked") {
                return Head::Refused("Transfer-Encoding other than exactly chunked");
            }
            Body::Chunked
        } else {
            match lengths[..] {
                [] => Body::Length(0),
                // §6.3 rule 5: refused even when the values agree.
                [_, _, ..] => return Head::Refused("more than one Content-Length"),
                [v] => match decimal(v) {
                    Some(n) => Body::Length(n),
                    None => return Head::Refused("invalid Content-Length"),
                },
            }
        };
        Head::Ok { len, body }
    }

    /// `Content-Length = 1*DIGIT` (RFC 9110 §8.6), as a u64.
    fn decimal(v: &[u8]) -> Option<u64> {
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        v.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    }

    fn ows_trim(mut v: &[u8]) -> &[u8] {
        while let [b' ' | b'\t', r @ ..] = v {
            v = r;
        }
        while let [r @ .., b' ' | b'\t'] = v {
            v = r;
        }
        v
    }

    /// Where a chunked body ends.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Chunk {
        /// Just after its final CRLF, this many bytes in.
        End(usize),
        /// The bytes end first.
        Incomplete,
        /// Not RFC 9112 §7.1 chunked framing.
        Invalid(&'static str),
    }

    /// Runs out of input: [`Chunk::Incomplete`].
    struct Short;

    enum Stop {
        Short,
        Invalid(&'static str),
    }

    impl From<Short> for Stop {
        fn from(_: Short) -> Self {
            Stop::Short
        }
    }

    /// A cursor over the body.
    struct Cur<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl Cur<'_> {
        fn peek(&self) -> Result<u8, Short> {
            self.b.get(self.i).copied().ok_or(Short)
        }

        /// Takes one byte if `f` accepts it.
        fn take(&mut self, f: impl Fn(u8) -> bool) -> Result<bool, Short> {
            let ok = f(self.peek()?);
            self.i += usize::from(ok);
            Ok(ok)
        }

        /// `1*` of bytes `f` accepts; how many.
        fn many(&mut self, f: impl Fn(u8) -> bool) -> Result<usize, Short> {
            let start = self.i;
            while self.take(&f)? {}
            Ok(self.i - start)
        }

        fn expect(&mut self, byte: u8, why: &'static str) -> Result<(), Stop> {
            if self.take(|b| b == byte)? { Ok(()) } else { Err(Stop::Invalid(why)) }
        }

        fn crlf(&mut self) -> Result<(), Stop> {
            self.expect(b'\r', "CRLF expected")?;
            self.expect(b'\n', "LF expected after CR")
        }

        /// `BWS` followed by `byte`: both taken if `byte` is there, neither otherwise.
        fn bws_then(&mut self, byte: u8) -> Result<bool, Short> {
            let start = self.i;
            self.many(is_ws)?;
            if self.take(|b| b == byte)? {
                return Ok(true);
            }
            self.i = start;
            Ok(false)
        }

        fn token(&mut self, why: &'static str) -> Result<(), Stop> {
            if self.many(is_tchar)? == 0 { Err(Stop::Invalid(why)) } else { Ok(()) }
        }
    }

    /// RFC 9112 §7.1, on the bytes after a head:
    ///
    /// ```text
    /// chunked-body    = *chunk last-chunk trailer-section CRLF
    /// chunk           = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
    /// chunk-size      = 1*HEXDIG
    /// last-chunk      = 1*("0") [ chunk-ext ] CRLF
    /// chunk-data      = 1*OCTET ; a sequence of chunk-size octets
    /// chunk-ext       = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    /// chunk-ext-name  = token
    /// chunk-ext-val   = token / quoted-string
    /// trailer-section = *( field-line CRLF )
    /// field-line      = field-name ":" OWS field-value OWS
    /// ```
    pub fn chunked_end(body: &[u8]) -> Chunk {
        let mut c = Cur { b: body, i: 0 };
        match chunks(&mut c) {
            Ok(()) => Chunk::End(c.i),
            Err(Stop::Short) => Chunk::Incomplete,
            Err(Stop::Invalid(why)) => Chunk::Invalid(why),
        }
    }

    fn chunks(c: &mut Cur<'_>) -> Result<(), Stop> {
        loop {
            let mut size = 0u64;
            let mut digits = 0;
            while let Some(d) = (c.peek()? as char).to_digit(16) {
                size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(d)))
                    .ok_or(Stop::Invalid("chunk size overflows"))?;
                digits += 1;
                c.i += 1;
            }
            if digits == 0 {
                return Err(Stop::Invalid("chunk-size expected"));
            }
            while c.bws_then(b';')? {
                c.many(is_ws)?;
                c.token("chunk-ext-name expected")?;
                if c.bws_then(b'=')? {
                    c.many(is_ws)?;
                    if c.peek()? == b'"' {
                        quoted_string(c)?;
                    } else {
                        c.token("chunk-ext-val expected")?;
                    }
                }
            }
            c.crlf()?;
            if size == 0 {
                break;
            }
            let left = (c.b.len() - c.i) as u64;
            if left < size {
                return Err(Stop::Short);
            }
            c.i += size as usize;
            c.crlf()?;
        }
        // trailer-section CRLF
        loop {
            if c.peek()? == b'\r' {
                return c.crlf();
            }
            c.token("field-name expected")?;
            c.expect(b':', "':' expected after field-name")?;
            // OWS field-value OWS: field-vchar, SP and HTAB in any order.
            c.many(|b| is_ws(b) || is_vchar(b) || b >= 0x80)?;
            c.crlf()?;
        }
    }

    /// `quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE` (RFC 9110 §5.6.4).
    fn quoted_string(c: &mut Cur<'_>) -> Result<(), Stop> {
        c.expect(b'"', "DQUOTE expected")?;
        loop {
            match c.peek()? {
                b'"' => {
                    c.i += 1;
                    return Ok(());
                }
                b'\\' => {
                    c.i += 1;
                    if !c.take(|b| is_ws(b) || is_vchar(b) || b >= 0x80)? {
                        return Err(Stop::Invalid("invalid quoted-pair"));
                    }
                }
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80.. => c.i += 1,
                _ => return Err(Stop::Invalid("invalid qdtext")),
            }
        }
    }

    fn is_ws(b: u8) -> bool {
        b == b' ' || b == b'\t'
    }

    fn is_vchar(b: u8) -> bool {
        (0x21..=0x7e).contains(&b)
    }

    /// `tchar` (RFC 9110 §5.6.2).
    fn is_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }
}
