//! What both renderers share: a text builder that remembers which resource each line came
//! from (so a line number in `nginx -t` or `haproxy -c` output names the resource), the
//! refusals a NACK carries, the path and host conditions as PCRE regular expressions, and the
//! content hash that says which config a proxy serves.

use std::fmt::Write as _;
use std::path::PathBuf;

use sha2::Digest as _;
use weir_config::ValidConfig;
use weir_config::precedence::HostMatch;
use weir_config::resources::{Kind, ResourceKey};
use weir_config::spec::{ConfigSpec, PathMatch, RouteSpec, UpstreamSpec};
use weir_proto::v1;

/// A rendered config: its text, the files it names (certificates), and where each line came from.
#[derive(Debug, Default)]
pub struct Rendered {
    text: String,
    owners: Vec<Option<ResourceKey>>,
    owner: Option<ResourceKey>,
    /// Files the config refers to (content-addressed, so writing them never changes what a
    /// running proxy reads): path and bytes.
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

impl Rendered {
    /// Lines from now on are about `key` (or about no resource).
    pub fn about(&mut self, key: Option<ResourceKey>) {
        self.owner = key;
    }

    /// Appends one line, indented by `depth` levels.
    pub fn line(&mut self, depth: usize, text: impl AsRef<str>) {
        for _ in 0..depth {
            self.text.push_str("    ");
        }
        self.text.push_str(text.as_ref());
        self.text.push('\n');
        self.owners.push(self.owner.clone());
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The resource line `n` (1-based) came from.
    pub fn owner_of(&self, n: usize) -> Option<&ResourceKey> {
        self.owners.get(n.checked_sub(1)?)?.as_ref()
    }

    /// Hex sha256 of the text and the files: equal hashes, equal behaviour.
    pub fn hash(&self) -> String {
        let mut h = sha2::Sha256::new();
        h.update(self.text.as_bytes());
        for (p, bytes) in &self.files {
            h.update(p.as_os_str().as_encoded_bytes());
            h.update(bytes);
        }
        hex(&h.finalize()[..12])
    }
}

/// What a renderer cannot express, each with the path of the resource (and field) it is about.
#[derive(Debug, Default)]
pub struct Refusals(Vec<v1::ErrorDetail>);

impl Refusals {
    /// Records that `field` of `key` (empty: the whole resource) cannot be expressed.
    pub fn refuse(&mut self, key: &ResourceKey, field: &str, message: impl Into<String>) {
        let path = if field.is_empty() { key.to_string() } else { format!("{key}.{field}") };
        self.0.push(v1::ErrorDetail { path, message: message.into() });
    }

    /// The refusals, or `ok` when there are none.
    pub fn or<T>(self, ok: T) -> Result<T, Vec<v1::ErrorDetail>> {
        if self.0.is_empty() { Ok(ok) } else { Err(self.0) }
    }
}

/// The key of route `name`.
pub fn route_key(name: &str) -> ResourceKey {
    ResourceKey::new(Kind::Route, name)
}

/// The key of upstream `name`.
pub fn upstream_key(name: &str) -> ResourceKey {
    ResourceKey::new(Kind::Upstream, name)
}

/// A PCRE matching `path` exactly as Weir's router does (whole path; `[^\n]` so that a
/// field never runs into the next one of a composite key). `None`: any path.
pub fn path_regex(path: Option<&PathMatch>) -> Option<String> {
    Some(match path? {
        PathMatch::Exact(p) => regex::escape(p),
        PathMatch::Prefix(p) if p == "/" => return None,
        PathMatch::Prefix(p) if p.ends_with('/') => format!("{}[^\\n]*", regex::escape(p)),
        PathMatch::Prefix(p) => format!("{}(?:/[^\\n]*)?", regex::escape(p)),
        PathMatch::Template(t) => t
            .split('/')
            .skip(1)
            .map(|seg| if seg.starts_with('{') { "/[^/\\n]+".to_owned() } else { format!("/{}", regex::escape(seg)) })
            .collect(),
        PathMatch::Regex(r) => format!("(?:{r})"),
    })
}

/// A PCRE for a host condition (`None`: any host).
pub fn host_regex(host: &HostMatch) -> Option<String> {
    match host {
        HostMatch::Any => None,
        HostMatch::Exact(h) => Some(regex::escape(h)),
        HostMatch::Wildcard(suffix) => Some(format!("[^\\n]+{}", regex::escape(suffix))),
    }
}

/// The endpoints of `u` as `(host, port, weight)`: listed, then registered with the control
/// plane.
pub fn endpoints(cfg: &ValidConfig, u: &UpstreamSpec) -> Vec<(String, u16, u32)> {
    let listed = u.load_balancer.endpoints.iter().map(|e| (e.address.clone(), e.port, e.weight));
    let registered = cfg.registrations().endpoints(&u.name).into_iter().map(|e| (e.address, e.port, e.weight));
    listed.chain(registered).collect()
}

/// `host:port`, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The upstreams route `r` sends to, with their weights (one, or a split's live backends).
pub fn route_upstreams<'a>(spec: &'a ConfigSpec, r: &RouteSpec) -> Vec<(&'a UpstreamSpec, u32)> {
    let find = |name: &str| spec.upstreams.iter().find(|u| u.name == name);
    match &r.upstream {
        Some(u) => find(u).map(|u| (u, 1)).into_iter().collect(),
        None => {
            r.backends.iter().filter(|b| b.weight > 0).filter_map(|b| Some((find(&b.upstream)?, b.weight))).collect()
        }
    }
}

/// A short hex sha256, for content-addressed file names.
pub fn short_hash(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes)[..10])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Milliseconds, the unit both proxies take everywhere (`30000ms`).
pub fn ms(d: std::time::Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(path: &PathMatch, candidate: &str) -> bool {
        let re = path_regex(Some(path)).unwrap_or_else(|| ".*".to_owned());
        regex::Regex::new(&format!("^{re}$")).unwrap().is_match(candidate)
    }

    #[test]
    fn path_regexes_match_as_the_router_does() {
        let prefix = || PathMatch::Prefix("/a.b".into());
        assert!(matches(&prefix(), "/a.b") && matches(&prefix(), "/a.b/c"));
        assert!(!matches(&prefix(), "/a.bc") && !matches(&prefix(), "/axb"));
        let tpl = || PathMatch::Template("/users/{id}/orders".into());
        assert!(matches(&tpl(), "/users/7/orders"));
        assert!(!matches(&tpl(), "/users//orders") && !matches(&tpl(), "/users/7/8/orders"));
        assert!(matches(&PathMatch::Exact("/x".into()), "/x") && !matches(&PathMatch::Exact("/x".into()), "/x/"));
        assert!(matches(&PathMatch::Prefix("/d/".into()), "/d/e") && !matches(&PathMatch::Prefix("/d/".into()), "/d"));
        assert!(!matches(&prefix(), "/a.b\nGET"));
    }

    #[test]
    fn each_line_knows_its_resource() {
        let mut r = Rendered::default();
        r.line(0, "http {");
        r.about(Some(route_key("orders")));
        r.line(1, "location @route.orders {");
        r.about(None);
        r.line(0, "}");
        assert_eq!(r.owner_of(2), Some(&route_key("orders")));
        assert_eq!(r.owner_of(1), None);
        assert_eq!(r.owner_of(3), None);
        assert!(r.text().contains("    location"));
        assert_eq!(r.hash().len(), 24);
    }
}
