//! Access-phase filters: `cors`, `request-id`, `ip-restriction`.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use weir_config::plugins::{CorsConfig, IpRestrictionConfig, RequestIdConfig, parse_cidr};

use super::{Effects, FilterCx, Outcome, reply};
use crate::body::GatewayBody;
use crate::view::RequestView;

/// `cors`: answers preflights itself and marks allowed cross-origin responses.
#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

impl Cors {
    pub(super) fn new(c: &CorsConfig) -> Self {
        let join = |v: &[String]| (!v.is_empty()).then(|| HeaderValue::try_from(v.join(", ")).ok()).flatten();
        Self {
            any_origin: c.allow_origins.iter().any(|o| o == "*"),
            origins: c.allow_origins.iter().filter_map(|o| HeaderValue::try_from(o.as_str()).ok()).collect(),
            methods: join(&c.allow_methods).unwrap_or(HeaderValue::from_static("GET")),
            headers: join(&c.allow_headers),
            expose: join(&c.expose_headers),
            max_age: c.max_age.and_then(|d| HeaderValue::try_from(d.get().as_secs().to_string()).ok()),
            credentials: c.allow_credentials,
        }
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        self.any_origin || self.origins.iter().any(|o| o == origin)
    }

    /// `*` when any origin is allowed without credentials, else the request's own origin.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials { HeaderValue::from_static("*") } else { origin.clone() }
    }

    pub(super) fn on_request(&self, req: &RequestView<'_>) -> Outcome {
        let Some(origin) = req.header(&header::ORIGIN).and_then(|v| HeaderValue::from_bytes(v).ok()) else {
            return Outcome::done();
        };
        let origin = &origin;
        let preflight = *req.method == Method::OPTIONS && req.has_header(&header::ACCESS_CONTROL_REQUEST_METHOD);
        if !self.allowed(origin) {
            return if preflight {
                Outcome::Respond(reply(StatusCode::FORBIDDEN, "cors_origin_denied", "origin not allowed"))
            } else {
                Outcome::done()
            };
        }
        let mut common = vec![
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin)),
            (header::VARY, HeaderValue::from_static("Origin")),
        ];
        if self.credentials {
            common.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
        if preflight {
            let mut rsp = Response::new(GatewayBody::empty());
            *rsp.status_mut() = StatusCode::NO_CONTENT;
            let h = rsp.headers_mut();
            for (k, v) in common {
                h.insert(k, v);
            }
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
            let asked =
                req.header(&header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|v| HeaderValue::from_bytes(v).ok());
            if let Some(v) = self.headers.clone().or(asked) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            if let Some(v) = &self.max_age {
                h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
            }
            return Outcome::Respond(rsp);
        }
        if let Some(v) = &self.expose {
            common.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone()));
        }
        Outcome::Continue(Effects { response: common, ..Effects::default() })
    }
}

/// `request-id`: one id per request, upstream and back.
#[derive(Debug)]
pub struct RequestId {
    header: HeaderName,
    trust_incoming: bool,
    response: bool,
}

impl RequestId {
    pub(super) fn new(c: &RequestIdConfig) -> Self {
        Self {
            header: HeaderName::try_from(c.header.as_str()).unwrap_or(HeaderName::from_static("x-request-id")),
            trust_incoming: c.trust_incoming,
            response: c.response,
        }
    }

    pub(super) fn on_request(&self, req: &RequestView<'_>) -> Outcome {
        let incoming = req
            .header(&self.header)
            .filter(|v| self.trust_incoming && !v.is_empty() && v.len() <= 200)
            .and_then(|v| HeaderValue::from_bytes(v).ok());
        let id = incoming.unwrap_or_else(|| {
            // 128 random bits, hex: unique enough to correlate logs, cheap to make.
            let v = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            HeaderValue::try_from(v).unwrap_or(HeaderValue::from_static("0"))
        });
        let mut e = Effects { set: vec![(self.header.clone(), id.clone())], ..Effects::default() };
        if self.response {
            e.response.push((self.header.clone(), id));
        }
        Outcome::Continue(e)
    }
}

/// `ip-restriction`: deny wins; with an allow list everyone else is denied.
#[derive(Debug)]
pub struct IpRestriction {
    allow: Vec<(IpAddr, u8)>,
    deny: Vec<(IpAddr, u8)>,
}

fn contains(net: &(IpAddr, u8), ip: IpAddr) -> bool {
    let ip = match (net.0, ip) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        _ => ip,
    };
    match (net.0, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(net.1)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(net.1)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl IpRestriction {
    pub(super) fn new(c: &IpRestrictionConfig) -> Self {
        Self {
            allow: c.allow.iter().filter_map(|s| parse_cidr(s)).collect(),
            deny: c.deny.iter().filter_map(|s| parse_cidr(s)).collect(),
        }
    }

    pub(super) fn on_request(&self, cx: &FilterCx) -> Outcome {
        let denied = self.deny.iter().any(|n| contains(n, cx.client))
            || (!self.allow.is_empty() && !self.allow.iter().any(|n| contains(n, cx.client)));
        if denied {
            Outcome::Respond(reply(StatusCode::FORBIDDEN, "ip_denied", "your address is not allowed"))
        } else {
            Outcome::done()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cidr_matching() {
        let net = weir_config::plugins::parse_cidr("10.1.0.0/16").unwrap();
        assert!(super::contains(&net, "10.1.200.3".parse().unwrap()));
        assert!(!super::contains(&net, "10.2.0.1".parse().unwrap()));
        assert!(super::contains(&net, "::ffff:10.1.0.9".parse().unwrap()), "v4-mapped v6");
        let all = weir_config::plugins::parse_cidr("0.0.0.0/0").unwrap();
        assert!(super::contains(&all, "192.0.2.1".parse().unwrap()));
        let v6 = weir_config::plugins::parse_cidr("2001:db8::/32").unwrap();
        assert!(super::contains(&v6, "2001:db8:1::1".parse().unwrap()));
    }
}
