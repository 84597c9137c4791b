//! Upstream response heads: one httparse pass, framing decided by RFC 9112 §6.3.
//!
//! Owns: whether a response has a body and how it is delimited, whether the upstream
//! connection can be reused after it, and refusing what an edge proxy must not relay (both
//! `Content-Length` and `Transfer-Encoding`, repeated or malformed lengths, `101` that was not
//! asked for). Interim `1xx` responses are reported so the caller skips them.

use std::mem::MaybeUninit;

use super::request::{Framing, MAX_FIELDS, content_length, eq_lower, framing_name};
use crate::view::{FieldSpan, Span};

/// A response head from the upstream.
#[derive(Debug)]
pub struct RspHead {
    /// Bytes of the head.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: Span,
    /// Body framing; `until_close` when neither length nor chunked.
    pub framing: Framing,
    /// The body runs until the upstream closes.
    pub until_close: bool,
    /// The upstream closes after this response (`Connection: close`, HTTP/1.0).
    pub close: bool,
    /// `Connection` names other headers (they are not forwarded).
    pub connection_names: bool,
}

/// What the bytes so far hold.
#[derive(Debug)]
pub enum RspParsed {
    /// Not a whole head yet.
    Partial,
    /// An interim 1xx response of this many bytes, to skip.
    Interim(usize),
    /// A final response head.
    Head(RspHead),
}

/// Parses the response head at the start of `buf` to a request that `bodiless` (HEAD) says
/// has no response body; `fields` gets its fields.
pub fn parse(
    buf: &[u8],
    bodiless: bool,
    max_head: usize,
    fields: &mut Vec<FieldSpan>,
) -> Result<RspParsed, &'static str> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut rsp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut rsp, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return Err("response head too large"),
        Ok(httparse::Status::Partial) => return Ok(RspParsed::Partial),
        Err(_) => return Err("malformed response head"),
    };
    let (Some(status), Some(version)) = (rsp.code, rsp.version) else { return Err("malformed status line") };
    if status == 101 {
        return Err("unexpected 101 Switching Protocols");
    }
    if (100..200).contains(&status) {
        return Ok(RspParsed::Interim(len));
    }
    fields.clear();
    let (mut lengths, mut length, mut encodings, mut chunked) = (0u32, None, 0u32, false);
    let (mut close, mut keep_alive, mut connection_names) = (false, false, false);
    for h in rsp.headers.iter() {
        let value = h.value.trim_ascii();
        fields.push(FieldSpan { name: Span::within(buf, h.name.as_bytes()), value: Span::within(buf, value) });
        let name = h.name.as_bytes();
        // By length first: most names are none of these and cost one comparison.
        match name.len() {
            14 if eq_lower(name, b"content-length") => {
                lengths += 1;
                length = Some(content_length(value).ok_or("invalid Content-Length")?);
            }
            17 if eq_lower(name, b"transfer-encoding") => {
                encodings += 1;
                chunked = value.rsplit(|&b| b == b',').next().is_some_and(|t| eq_lower(t.trim_ascii(), b"chunked"));
            }
            10 if eq_lower(name, b"connection") => {
                for t in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if eq_lower(t, b"close") {
                        close = true;
                    } else if eq_lower(t, b"keep-alive") {
                        keep_alive = true;
                    } else if framing_name(t) {
                        return Err("Connection names a framing header");
                    } else if !t.is_empty() {
                        connection_names = true;
                    }
                }
            }
            _ => {}
        }
    }
    if lengths > 1 || (lengths > 0 && encodings > 0) || encodings > 1 {
        return Err("ambiguous response framing");
    }
    let no_body = bodiless || status == 204 || status == 304;
    let (framing, until_close) = match (no_body, encodings > 0, chunked, length) {
        (true, ..) => (Framing::None, false),
        (false, true, true, _) => (Framing::Chunked, false),
        // A transfer coding that does not end in chunked: the body runs until close.
        (false, true, false, _) | (false, false, _, None) => (Framing::None, true),
        (false, false, _, Some(0)) => (Framing::None, false),
        (false, false, _, Some(n)) => (Framing::Length(n), false),
    };
    Ok(RspParsed::Head(RspHead {
        len,
        status,
        reason: Span::within(buf, rsp.reason.unwrap_or("").as_bytes()),
        framing,
        until_close,
        close: close || until_close || (version == 0 && !keep_alive),
        connection_names,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8], bodiless: bool) -> Result<RspParsed, &'static str> {
        parse(raw, bodiless, 8192, &mut Vec::new())
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let Ok(RspParsed::Head(h)) = head(ok, false) else { panic!() };
        assert_eq!((h.status, h.framing, h.close, h.len), (200, Framing::Length(2), false, ok.len() - 2));
        assert_eq!(h.reason.of(ok), b"OK");
        let Ok(RspParsed::Head(h)) = head(ok, true) else { panic!() };
        assert_eq!(h.framing, Framing::None);
        let no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n";
        assert!(matches!(head(no_content, false), Ok(RspParsed::Head(RspHead { framing: Framing::None, .. }))));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert!(matches!(head(chunked, false), Ok(RspParsed::Head(RspHead { framing: Framing::Chunked, .. }))));
        let close = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert!(matches!(head(close, false), Ok(RspParsed::Head(RspHead { until_close: true, close: true, .. }))));
        assert!(matches!(head(b"HTTP/1.1 100 Continue\r\n\r\n", false), Ok(RspParsed::Interim(25))));
        assert!(matches!(head(b"HTTP/1.1 200 OK\r\n", false), Ok(RspParsed::Partial)));
    }

    #[test]
    fn ambiguous_responses_are_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(head(bad, false).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
