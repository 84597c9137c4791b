//! The proxy-wasm 0.2.1 vocabulary: status codes, enums and the map serialization, exactly as
//! the spec's "Types" and "Serialization" sections give them.

/// `proxy_status_t`: what every host function returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The key, buffer, queue or metric does not exist.
    NotFound = 1,
    /// An argument is out of range (unknown map, buffer or metric type).
    BadArgument = 2,
    /// A property could not be serialized.
    SerializationFailure = 3,
    /// Input could not be parsed.
    ParseFailure = 4,
    /// A pointer or length lies outside the module's memory.
    InvalidMemoryAccess = 6,
    /// Nothing to dequeue.
    Empty = 7,
    /// Compare-and-swap value did not match.
    CasMismatch = 8,
    /// The host failed to carry out the call.
    InternalFailure = 10,
    /// The host does not support this call.
    Unimplemented = 12,
}

impl From<Status> for i32 {
    fn from(s: Status) -> i32 {
        s as i32
    }
}

/// A callback's verdict (`proxy_action_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on.
    Continue,
    /// Stop here until the plugin resumes the stream, answers it, or time runs out.
    Pause,
}

impl Action {
    pub(crate) fn from_raw(v: i32) -> Self {
        if v == 1 { Self::Pause } else { Self::Continue }
    }
}

/// `proxy_map_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    CallResponseHeaders,
    CallResponseTrailers,
}

impl MapType {
    pub(crate) fn from_raw(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::RequestHeaders,
            1 => Self::RequestTrailers,
            2 => Self::ResponseHeaders,
            3 => Self::ResponseTrailers,
            4 => Self::GrpcInitialMetadata,
            5 => Self::GrpcTrailingMetadata,
            6 => Self::CallResponseHeaders,
            7 => Self::CallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_buffer_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufferType {
    RequestBody,
    ResponseBody,
    DownstreamData,
    UpstreamData,
    CallResponseBody,
    GrpcMessage,
    VmConfiguration,
    PluginConfiguration,
    ForeignArguments,
}

impl BufferType {
    pub(crate) fn from_raw(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::RequestBody,
            1 => Self::ResponseBody,
            2 => Self::DownstreamData,
            3 => Self::UpstreamData,
            4 => Self::CallResponseBody,
            5 => Self::GrpcMessage,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            8 => Self::ForeignArguments,
            _ => return None,
        })
    }
}

/// `proxy_metric_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Recorded values (exported as their last value and count).
    Histogram,
}

impl MetricKind {
    pub(crate) fn from_raw(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::Counter,
            1 => Self::Gauge,
            2 => Self::Histogram,
            _ => return None,
        })
    }
}

/// `wasi_errno_t` values the preview1 calls return.
pub(crate) mod errno {
    pub(crate) const SUCCESS: i32 = 0;
    pub(crate) const BADF: i32 = 8;
    pub(crate) const FAULT: i32 = 21;
    pub(crate) const INVAL: i32 = 28;
    pub(crate) const NOSYS: i32 = 52;
    pub(crate) const NOTSUP: i32 = 58;
}

/// Serializes header pairs: count, then each key and value length, then each key and value
/// followed by a NUL.
pub fn serialize_pairs<'a, I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let mut out = Vec::new();
    serialize_pairs_into(pairs, &mut out);
    out
}

/// The length of the serialized pairs: the count, two lengths per pair, each key and value
/// with its NUL.
pub(crate) fn serialized_len<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    4 + pairs.into_iter().map(|(k, v)| k.len() + v.len() + 10).sum::<usize>()
}

/// [`serialize_pairs`] appended to `out`.
pub(crate) fn serialize_pairs_into<'a, I>(pairs: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let n = pairs.clone().into_iter().count();
    out.reserve(serialized_len(pairs.clone()));
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
}

/// Parses serialized pairs; `None` when the bytes are not a well-formed map. An empty input or
/// a single NUL is the empty map.
pub fn deserialize_pairs(b: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if b.len() <= 1 {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let w = b.get(at..at + 4)?;
        Some(u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
    };
    let n = word(0)?;
    let mut lens = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        lens.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + n.checked_mul(8)?;
    let mut out = Vec::with_capacity(lens.len());
    let mut take = |len: usize| -> Option<Vec<u8>> {
        let s = b.get(at..at.checked_add(len)?)?.to_vec();
        at += len + 1;
        Some(s)
    };
    for (kl, vl) in lens {
        let k = take(kl)?;
        let v = take(vl)?;
        out.push((k, v));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_as_the_spec_example() {
        let pairs: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"22")];
        let s = serialize_pairs(pairs.iter().copied());
        let mut want = vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        want.extend_from_slice(b"a\x001\x00b\x0022\x00");
        assert_eq!(s, want);
        let back = deserialize_pairs(&s).unwrap();
        assert_eq!(back, vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"22".to_vec())]);
    }

    #[test]
    fn malformed_maps_are_refused_and_empty_ones_accepted() {
        assert_eq!(deserialize_pairs(&[]), Some(vec![]));
        assert_eq!(deserialize_pairs(&[0]), Some(vec![]));
        assert_eq!(deserialize_pairs(&[5, 0, 0, 0, 1]), None);
        assert_eq!(deserialize_pairs(&[1, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0]), None);
    }
}
