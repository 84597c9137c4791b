//! Between the gateway's request and response types and the plugin's view of them: header
//! maps with pseudo-headers, a plugin's changes as the chain's [`Effects`], its local response
//! as a response.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use weir_wasm::{Fields, LocalResponse};

use crate::body::GatewayBody;
use crate::filter::Effects;
use crate::view::{Edits, RequestView};

/// Fills `f` with the request as a plugin sees it: `:method`, `:path` (with the query),
/// `:authority`, `:scheme`, then every header.
pub(super) fn request_fields(req: &RequestView<'_>, scheme: &str, f: &mut Fields) {
    f.clear();
    // The map is kept from request to request: this reserves only the first time.
    f.reserve(16, 512);
    f.push(":method", req.method.as_str().as_bytes());
    match req.query {
        Some(q) => f.push_parts(":path", &[req.path.as_bytes(), b"?", q.as_bytes()]),
        None => f.push(":path", req.path.as_bytes()),
    }
    f.push(":authority", req.host.unwrap_or_default().as_bytes());
    f.push(":scheme", scheme.as_bytes());
    req.headers.each(|k, v| {
        if !k.eq_ignore_ascii_case(b"host") {
            f.push_raw(k, v);
        }
    });
}

/// Header names a plugin's edits used, kept per worker: a plugin sets the same few names on
/// every request, and a cached name is a reference count, not a parse and an allocation.
#[derive(Debug, Default)]
pub(super) struct Names(Vec<HeaderName>);

impl Names {
    const MAX: usize = 32;

    /// `name` (lower-case) as a `HeaderName`, if it is a valid one.
    fn get(&mut self, name: &[u8]) -> Option<HeaderName> {
        if let Some(n) = self.0.iter().find(|n| n.as_str().as_bytes() == name) {
            return Some(n.clone());
        }
        let n = HeaderName::from_bytes(name).ok()?;
        if self.0.len() < Self::MAX {
            self.0.push(n.clone());
        }
        Some(n)
    }
}

/// The plugin's request-header changes as effects for the chain to apply.
pub(super) fn request_effects(fields: &mut Fields, names: &mut Names) -> Effects {
    let mut e = Effects::default();
    for (name, mut values) in fields.changes() {
        match name {
            b":path" => e.path = values.next().map(|v| String::from_utf8_lossy(v).into_owned()),
            b":authority" => {
                if let Some(v) = values.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
                    e.set.push((http::header::HOST, v));
                }
            }
            n if n.starts_with(b":") => {
                tracing::debug!(header = %String::from_utf8_lossy(n), "a plugin's change to this pseudo-header is ignored")
            }
            n => header_change(names, n, values, &mut e.remove, &mut e.set, &mut e.add),
        }
    }
    fields.forget_changes();
    e
}

fn header_change<'a>(
    names: &mut Names,
    name: &[u8],
    values: impl Iterator<Item = &'a [u8]>,
    remove: &mut Vec<HeaderName>,
    set: &mut Vec<(HeaderName, HeaderValue)>,
    add: &mut Vec<(HeaderName, HeaderValue)>,
) {
    let Some(n) = names.get(name) else {
        tracing::warn!(header = %String::from_utf8_lossy(name), "a plugin set an invalid header name; ignored");
        return;
    };
    let mut vals = values.filter_map(|v| HeaderValue::from_bytes(v).ok());
    match vals.next() {
        None => remove.push(n),
        Some(first) => {
            set.push((n.clone(), first));
            add.extend(vals.map(|v| (n.clone(), v)));
        }
    }
}

/// Fills `f` with the response as a plugin sees it, from fields where they lie: `:status`,
/// then each field `each` yields.
pub(super) fn response_fields_from(status: StatusCode, each: impl Fn(&mut dyn FnMut(&[u8], &[u8])), f: &mut Fields) {
    f.clear();
    f.reserve(16, 512);
    f.push(":status", status.as_str().as_bytes());
    each(&mut |k, v| f.push_raw(k, v));
}

/// Fills `f` with trailers as a plugin sees them: every field, no pseudo-headers.
pub(super) fn fields_of(map: &HeaderMap, f: &mut Fields) {
    f.clear();
    let bytes = map.iter().map(|(k, v)| k.as_str().len() + v.len()).sum::<usize>();
    f.reserve(map.len() + 4, bytes + 256);
    for (k, v) in map {
        f.push_raw(k.as_str().as_bytes(), v.as_bytes());
    }
}

/// The plugin's response-header changes as edits for the head writer.
pub(super) fn response_edits(fields: &mut Fields, names: &mut Names) -> Edits {
    let mut e = Edits::default();
    for (name, values) in fields.changes() {
        if !name.starts_with(b":") {
            header_change(names, name, values, &mut e.remove, &mut e.set, &mut e.add);
        }
    }
    fields.forget_changes();
    e
}

/// Applies a plugin's response-header edits to `headers`.
pub(super) fn apply_edits(e: Edits, headers: &mut HeaderMap) {
    for n in e.remove {
        headers.remove(n);
    }
    for (k, v) in e.set {
        headers.insert(k, v);
    }
    for (k, v) in e.add {
        headers.append(k, v);
    }
}

/// The response a plugin answered with.
pub(super) fn local_response(l: LocalResponse) -> Response<GatewayBody> {
    let mut rsp = Response::new(GatewayBody::full(Bytes::from(l.body)));
    *rsp.status_mut() = StatusCode::from_u16(l.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in l.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(&k), HeaderValue::from_bytes(&v)) {
            rsp.headers_mut().append(k, v);
        }
    }
    rsp
}
