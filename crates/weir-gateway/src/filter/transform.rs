//! Transform-phase filters: `fault`, `headers`, `rewrite`.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use weir_config::plugins::{FaultConfig, HeaderOps, HeadersConfig, RewriteConfig};

use super::{Effects, Outcome, header_pair, reply};
use crate::view::RequestView;

/// `fault`: delay and/or abort.
#[derive(Debug)]
pub struct Fault {
    delay: Option<Duration>,
    abort: Option<(StatusCode, f64)>,
}

impl Fault {
    pub(super) fn new(c: &FaultConfig) -> Self {
        Self {
            delay: c.delay.map(|d| d.get()),
            abort: c.abort.as_ref().and_then(|a| Some((StatusCode::from_u16(a.status).ok()?, a.percent / 100.0))),
        }
    }

    pub(super) async fn on_request(&self) -> Outcome {
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        match self.abort {
            Some((status, share)) if fastrand::f64() < share => {
                Outcome::Respond(reply(status, "fault_injected", "fault injected by the fault plugin"))
            }
            _ => Outcome::done(),
        }
    }
}

#[derive(Debug, Default)]
struct Ops {
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Ops {
    fn new(o: &HeaderOps) -> Self {
        Self {
            add: o.add.iter().filter_map(|(k, v)| header_pair(k, v)).collect(),
            set: o.set.iter().filter_map(|(k, v)| header_pair(k, v)).collect(),
            remove: o.remove.iter().filter_map(|k| HeaderName::try_from(k.as_str()).ok()).collect(),
        }
    }
}

/// `headers`: request edits before the upstream, response edits after.
#[derive(Debug)]
pub struct Headers {
    request: Ops,
    response: Ops,
}

impl Headers {
    pub(super) fn new(c: &HeadersConfig) -> Self {
        Self { request: Ops::new(&c.request), response: Ops::new(&c.response) }
    }

    pub(super) fn on_request(&self) -> Outcome {
        let r = &self.request;
        Outcome::Continue(Effects {
            set: r.set.clone(),
            add: r.add.clone(),
            remove: r.remove.clone(),
            ..Effects::default()
        })
    }

    pub(super) fn on_response(&self, h: &mut HeaderMap) {
        let r = &self.response;
        for n in &r.remove {
            h.remove(n);
        }
        for (k, v) in &r.set {
            h.insert(k.clone(), v.clone());
        }
        for (k, v) in &r.add {
            h.append(k.clone(), v.clone());
        }
    }
}

/// `rewrite`: strip a prefix, or regex-replace the path; the query is kept.
#[derive(Debug)]
pub struct Rewrite {
    strip_prefix: Option<String>,
    regex: Option<(Regex, String)>,
}

impl Rewrite {
    pub(super) fn new(c: &RewriteConfig) -> Self {
        Self {
            strip_prefix: c.strip_prefix.clone(),
            regex: match (&c.regex, &c.replacement) {
                (Some(r), Some(with)) => Regex::new(r).ok().map(|re| (re, with.clone())),
                _ => None,
            },
        }
    }

    pub(super) fn on_request(&self, req: &RequestView<'_>) -> Outcome {
        let mut path = req.path.to_owned();
        if let Some(p) = &self.strip_prefix
            && let Some(rest) = path.strip_prefix(p.trim_end_matches('/'))
            && (rest.is_empty() || rest.starts_with('/'))
        {
            path = if rest.is_empty() { "/".into() } else { rest.to_owned() };
        }
        if let Some((re, with)) = &self.regex {
            path = re.replace(&path, with.as_str()).into_owned();
        }
        if let Some(q) = req.query {
            path.push('?');
            path.push_str(q);
        }
        Outcome::Continue(Effects { path: Some(path), ..Effects::default() })
    }
}
