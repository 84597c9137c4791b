//! Header rules of a proxy hop (RFC 9110 §7.6): hop-by-hop removal and forwarding headers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 weir");

/// Headers that describe one connection, not the message, and never cross a proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including any the `Connection` header names. When `upgrade`
/// is set (a WebSocket handshake), `Connection: upgrade` and `Upgrade` are kept.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    // One pass over the message's few names (cheap comparisons) finds what is present, so a
    // message carrying none of them costs no hashed lookups; ten `remove`s per message did.
    const UPGRADE_BIT: u16 = 1 << 8; // just past the eight names of HOP_BY_HOP
    let mut present = 0u16;
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == name) {
            present |= 1 << i;
        } else if name == header::UPGRADE {
            present |= UPGRADE_BIT;
        }
    }
    // Bit 0 is `Connection`: remove the names it lists first.
    if present & 1 != 0 {
        remove_named_by_connection(h, upgrade);
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present & UPGRADE_BIT != 0 {
        h.remove(header::UPGRADE);
    }
}

/// Removes the headers that `Connection` names (`Connection: keep-alive, x-secret`).
fn remove_named_by_connection(h: &mut HeaderMap, upgrade: bool) {
    let mut values = h.get_all(header::CONNECTION).iter();
    let (first, more) = (values.next().cloned(), values.next().is_some());
    let remove = |h: &mut HeaderMap, v: &HeaderValue| {
        for token in v.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            // The usual tokens name no header to remove (`keep-alive` is removed anyway):
            // skip parsing them into header names.
            if token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("close") {
                continue;
            }
            if let Ok(n) = HeaderName::try_from(token)
                && !(upgrade && n == header::UPGRADE)
            {
                h.remove(n);
            }
        }
    };
    match (first, more) {
        // The usual single value (a cheap reference-counted clone): no list to build.
        (Some(v), false) => remove(h, &v),
        _ => {
            let all: Vec<HeaderValue> = h.get_all(header::CONNECTION).iter().cloned().collect();
            for v in &all {
                remove(h, v);
            }
        }
    }
}

/// Whether the request asks to switch to WebSocket, the one upgrade Weir tunnels. Other
/// upgrades (`h2c` above all, which would hand the client a raw tunnel past routing and
/// plugins) are stripped as hop-by-hop headers and the request proxied as it is.
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.get_all(header::UPGRADE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("websocket"))))
        && h.get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Sets `X-Forwarded-For` (appending `client`, the client's IP as a header value), `-Proto`,
/// `-Host` and `Via`.
pub fn add_forwarding(h: &mut HeaderMap, client: &HeaderValue, proto: &'static str) {
    let xff = match h.get(&X_FORWARDED_FOR) {
        // Appending needs new bytes; the usual first hop reuses the connection's value.
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + client.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if !h.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = h.get(header::HOST).cloned()
    {
        h.insert(X_FORWARDED_HOST, host);
    }
    h.append(header::VIA, VIA_VALUE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));

        // Several Connection headers, an Upgrade without a handshake, and a transfer-encoding.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("x-a"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-b, close"));
        for n in ["x-a", "x-b", "upgrade", "transfer-encoding", "proxy-connection", "x-kept"] {
            h.insert(n, HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-kept"]);

        // A WebSocket handshake keeps Upgrade and says `Connection: upgrade` only.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade, x-a"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-a", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");

        // Nothing to strip: untouched.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn forwarding_headers_append() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarding(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["via"], "1.1 weir");
    }
}
