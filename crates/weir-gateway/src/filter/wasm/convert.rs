//! Between the gateway's request and response types and the plugin's view of them: header
//! maps with pseudo-headers, a plugin's changes as the chain's [`Effects`], its local response
//! as a response.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use weir_wasm::{Fields, LocalResponse};

use crate::body::GatewayBody;
use crate::filter::Effects;
use crate::view::{Edits, RequestView};

/// The request as a plugin sees it: `:method`, `:path` (with the query), `:authority`,
/// `:scheme`, then every header.
pub(super) fn request_fields(req: &RequestView<'_>, scheme: &str) -> Fields {
    let (mut n, mut bytes) = (4, req.path.len() + req.query.map_or(0, str::len) + 64);
    req.headers.each(|k, v| {
        n += 1;
        bytes += k.len() + v.len();
    });
    // Room for the plugin's own edits too.
    let mut f = Fields::with_capacity(n + 4, bytes + 256);
    f.push(":method", req.method.as_str().as_bytes());
    let path = match req.query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.to_owned(),
    };
    f.push(":path", path.as_bytes());
    f.push(":authority", req.host.unwrap_or_default().as_bytes());
    f.push(":scheme", scheme.as_bytes());
    req.headers.each(|k, v| {
        if !k.eq_ignore_ascii_case(b"host") {
            f.push_raw(k, v);
        }
    });
    f
}

/// The plugin's request-header changes as effects for the chain to apply.
pub(super) fn request_effects(fields: &mut Fields) -> Effects {
    let mut e = Effects::default();
    for (name, values) in fields.take_changes() {
        match name.as_str() {
            ":path" => e.path = values.first().map(|v| String::from_utf8_lossy(v).into_owned()),
            ":authority" => {
                if let Some(v) = values.first().and_then(|v| HeaderValue::from_bytes(v).ok()) {
                    e.set.push((http::header::HOST, v));
                }
            }
            n if n.starts_with(':') => {
                tracing::debug!(header = n, "a plugin's change to this pseudo-header is ignored")
            }
            n => header_change(n, &values, &mut e.remove, &mut e.set, &mut e.add),
        }
    }
    e
}

fn header_change(
    name: &str,
    values: &[&[u8]],
    remove: &mut Vec<HeaderName>,
    set: &mut Vec<(HeaderName, HeaderValue)>,
    add: &mut Vec<(HeaderName, HeaderValue)>,
) {
    let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
        tracing::warn!(header = name, "a plugin set an invalid header name; ignored");
        return;
    };
    let mut vals = values.iter().filter_map(|v| HeaderValue::from_bytes(v).ok());
    match vals.next() {
        None => remove.push(n),
        Some(first) => {
            set.push((n.clone(), first));
            add.extend(vals.map(|v| (n.clone(), v)));
        }
    }
}

/// The response as a plugin sees it, from fields where they lie: `:status`, then each field
/// `each` yields.
pub(super) fn response_fields_from(status: StatusCode, each: impl Fn(&mut dyn FnMut(&[u8], &[u8]))) -> Fields {
    let (mut n, mut bytes) = (1, 0);
    each(&mut |k, v| {
        n += 1;
        bytes += k.len() + v.len();
    });
    let mut f = Fields::with_capacity(n + 4, bytes + 256);
    f.push(":status", status.as_str().as_bytes());
    each(&mut |k, v| f.push_raw(k, v));
    f
}

/// Trailers as a plugin sees them: every field, no pseudo-headers.
pub(super) fn fields_of(map: &HeaderMap) -> Fields {
    let bytes = map.iter().map(|(k, v)| k.as_str().len() + v.len()).sum::<usize>();
    let mut f = Fields::with_capacity(map.len() + 4, bytes + 256);
    for (k, v) in map {
        f.push_raw(k.as_str().as_bytes(), v.as_bytes());
    }
    f
}

/// The plugin's response-header changes as edits for the head writer.
pub(super) fn response_edits(fields: &mut Fields) -> Edits {
    let mut e = Edits::default();
    for (name, values) in fields.take_changes() {
        if !name.starts_with(':') {
            header_change(&name, &values, &mut e.remove, &mut e.set, &mut e.add);
        }
    }
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
