//! Chunked framing (RFC 9112 §7.1), validated as the bytes pass: the fast path forwards a
//! chunked body as it came and this decoder says where it ends, or that it is malformed.
//!
//! Strict by design, since the next hop may read a lenient stream differently: sizes are hex
//! digits only (no `0x`, sign or space), at most 15 of them; every line ends in CRLF (no bare
//! LF or CR); extensions are `;` and visible text; trailer lines are visible text. Anything
//! else is an error, never a guess.

/// Longest chunk-size line, extensions included.
const MAX_LINE: u32 = 4096;
/// Longest trailer section.
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading size digits; `digits` so far.
    Size { digits: u8 },
    /// In an extension, until CR.
    Ext,
    /// After the CR of a size line.
    SizeLf,
    /// Inside chunk data.
    Data(u64),
    /// After data: expecting CR.
    DataCr,
    /// After data's CR: expecting LF.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
    /// The body ended.
    Done,
}

/// Why a chunked body is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(pub &'static str);

/// A chunked decoder that only validates and counts.
#[derive(Clone, Copy, Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    /// Bytes of the current line or trailer section, for the limits.
    line: u32,
    /// Data bytes seen.
    data: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Self { state: State::Size { digits: 0 }, size: 0, line: 0, data: 0 }
    }
}

impl Chunked {
    /// Whether the last chunk and trailers were seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes seen so far (the body's decoded length).
    pub fn data_len(&self) -> u64 {
        self.data
    }

    /// Follows `bytes`; returns how many belong to the body (all of them unless it ended
    /// inside `bytes`).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Done {
                return Ok(i);
            }
            if let State::Data(left) = self.state {
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                self.data += take;
                self.state = if take == left { State::DataCr } else { State::Data(left - take) };
                continue;
            }
            self.step(bytes[i])?;
            i += 1;
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if digits < 15 => {
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size * 16 + u64::from(d);
                    State::Size { digits: digits + 1 }
                }
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => return Err(ChunkError("chunk size too large")),
                b';' if digits > 0 => {
                    self.line = 0;
                    State::Ext
                }
                b'\r' if digits > 0 => State::SizeLf,
                _ => return Err(ChunkError("invalid chunk size")),
            },
            State::Ext => match b {
                b'\r' => State::SizeLf,
                b'\t' | b' '..=b'~' | 0x80..=0xff => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    State::Ext
                }
                _ => return Err(ChunkError("invalid chunk extension")),
            },
            State::SizeLf if b == b'\n' => {
                let size = std::mem::take(&mut self.size);
                if size == 0 {
                    self.line = 0;
                    State::TrailerStart
                } else {
                    State::Data(size)
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf | State::SizeLf if b == b'\n' => State::Size { digits: 0 },
            State::TrailerStart if b == b'\r' => State::EndLf,
            State::EndLf if b == b'\n' => State::Done,
            State::TrailerStart | State::Trailer => match b {
                b'\r' => State::TrailerLf,
                b'\t' | b' '..=b'~' | 0x80..=0xff => {
                    self.line += 1;
                    if self.line > MAX_TRAILERS {
                        return Err(ChunkError("trailers too long"));
                    }
                    State::Trailer
                }
                _ => return Err(ChunkError("invalid trailer")),
            },
            State::TrailerLf if b == b'\n' => State::TrailerStart,
            State::SizeLf | State::DataLf | State::TrailerLf | State::EndLf => {
                return Err(ChunkError("bare CR"));
            }
            State::DataCr => return Err(ChunkError("chunk data longer than its size")),
            State::Data(_) | State::Done => return Ok(()),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<(usize, bool), ChunkError> {
        let mut c = Chunked::default();
        let n = c.feed(bytes)?;
        Ok((n, c.is_done()))
    }

    #[test]
    fn finds_the_end_across_any_split() {
        let body = b"5\r\nhello\r\nA;name=v\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        assert_eq!(run(body), Ok((end, true)));
        for cut in 0..body.len() {
            let mut c = Chunked::default();
            let a = c.feed(&body[..cut]).unwrap();
            let b = c.feed(&body[cut..]).unwrap();
            assert_eq!(a + b, end, "split at {cut}");
            assert!(c.is_done());
            assert_eq!(c.data_len(), 15);
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [
            &b"0x5\r\nhello\r\n0\r\n\r\n"[..],
            b"-5\r\nhello\r\n",
            b"ffffffffffffffffff\r\n",
            b"5\r\nhelloEXTRA\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b" 5\r\nhello\r\n",
            b"5 \r\nhello\r\n",
            b"\r\n",
            b"0\r\nX: a\nb\r\n\r\n",
            b"0\r\n\n",
            b"5;a\0\r\n",
        ] {
            assert!(run(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
