//! Cross-field validation: names, references, patterns and limits.
//!
//! Owns: every check that the JSON Schema cannot express. Reports all problems at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{ConfigErrors, Errors};
use crate::package::Package;
use crate::plugins::{self, PluginConfig};
use crate::registrations::Registrations;
use crate::spec::{ConfigSpec, HealthCheckSpec, MatchSpec, PathMatch, PoolSpec, RouteSpec, UpstreamSpec};

/// A config that passed every check. The only way to get one is [`validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct ValidConfig {
    /// Shared so a caller that patches a config in place (see [`crate::assembly`]) validates
    /// it without a copy.
    spec: Arc<ConfigSpec>,
    /// Per route (same order as `spec.routes`): its effective plugins, parsed. Shared, so a
    /// change of registrations only reuses them.
    route_plugins: Arc<RoutePlugins>,
    /// The plugin packages `plugin_packages` names, as read by the caller.
    packages: Vec<Arc<Package>>,
    /// The registered endpoints: a file's `registrations`, or the `Registration` resources
    /// an [`crate::assembly::Assembly`] keeps beside its spec (then `spec.registrations` is
    /// empty).
    registrations: Registrations,
}

/// Per route, its effective plugins as `(name, config)`.
pub(crate) type RoutePlugins = Vec<Vec<(String, PluginConfig)>>;

impl ValidConfig {
    /// The effective plugins of route `i`: the top-level ones the route does not override,
    /// then its own, as `(name, config)`.
    pub fn route_plugins(&self, i: usize) -> &[(String, PluginConfig)] {
        self.route_plugins.get(i).map_or(&[], Vec::as_slice)
    }

    /// The plugin packages the config uses.
    pub fn packages(&self) -> &[Arc<Package>] {
        &self.packages
    }

    /// The registered endpoints (see [`Registrations::endpoints`]).
    pub fn registrations(&self) -> &Registrations {
        &self.registrations
    }

    /// A config from what a full validation found and registrations checked against it.
    pub(crate) fn from_parts(
        spec: Arc<ConfigSpec>,
        route_plugins: Arc<RoutePlugins>,
        packages: Vec<Arc<Package>>,
        registrations: Registrations,
    ) -> Self {
        Self { spec, route_plugins, packages, registrations }
    }

    /// Every route's plugins, shared.
    pub(crate) fn shared_route_plugins(&self) -> &Arc<RoutePlugins> {
        &self.route_plugins
    }

    /// The validated spec.
    pub fn spec(&self) -> &ConfigSpec {
        &self.spec
    }

    /// Gives the spec back.
    pub fn into_spec(self) -> ConfigSpec {
        Arc::try_unwrap(self.spec).unwrap_or_else(|shared| (*shared).clone())
    }
}

/// Checks a parsed config and reports every problem with its path.
pub fn validate(spec: ConfigSpec) -> Result<ValidConfig, ConfigErrors> {
    validate_shared(Arc::new(spec))
}

/// [`validate`] for a spec that is shared (it is not copied).
pub fn validate_shared(spec: Arc<ConfigSpec>) -> Result<ValidConfig, ConfigErrors> {
    validate_with_packages(spec, Vec::new())
}

/// [`validate_shared`] with the plugin packages `spec.plugin_packages` names, read by the
/// caller (this crate does no I/O): routes may then use them by name.
pub fn validate_with_packages(spec: Arc<ConfigSpec>, packages: Vec<Arc<Package>>) -> Result<ValidConfig, ConfigErrors> {
    let registrations = Registrations::from_specs(&spec.registrations);
    let mut errs = Errors::default();
    check_registrations(&mut errs, &spec);
    checked(spec, packages, registrations, errs)
}

/// Every check but the registrations' (the caller's, already in `errs`).
pub(crate) fn checked(
    spec: Arc<ConfigSpec>,
    packages: Vec<Arc<Package>>,
    registrations: Registrations,
    mut errs: Errors,
) -> Result<ValidConfig, ConfigErrors> {
    let mut seen = HashSet::new();
    for (i, p) in packages.iter().enumerate() {
        if !seen.insert(p.meta.name.as_str()) {
            errs.push(format!("plugin_packages[{i}]"), format!("a second package named {:?}", p.meta.name));
        }
    }
    check_tracing(&mut errs, &spec);
    check_listeners(&mut errs, &spec.listeners);
    let mut upstreams = HashSet::new();
    for (i, u) in spec.upstreams.iter().enumerate() {
        if !upstreams.insert(u.name.as_str()) {
            errs.push(format!("upstreams[{i}].name"), format!("duplicate upstream name {:?}", u.name));
        }
        check_upstream(&mut errs, &format!("upstreams[{i}]"), u);
    }
    let mut routes = HashSet::new();
    for (i, r) in spec.routes.iter().enumerate() {
        if !routes.insert(r.name.as_str()) {
            errs.push(format!("routes[{i}].name"), format!("duplicate route name {:?}", r.name));
        }
        check_route(&mut errs, &format!("routes[{i}]"), r, &upstreams);
    }
    let mut consumers = HashSet::new();
    for (i, c) in spec.consumers.iter().enumerate() {
        check_name(&mut errs, || format!("consumers[{i}].name"), &c.name);
        if !consumers.insert(c.name.as_str()) {
            errs.push(format!("consumers[{i}].name"), format!("duplicate consumer name {:?}", c.name));
        }
        c.check(&mut errs, &format!("consumers[{i}]"));
    }
    let mut global: Vec<(String, PluginConfig)> = spec
        .plugins
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            plugins::check(&mut errs, &format!("plugins[{i}]"), p, &packages).map(|c| (p.name.clone(), c))
        })
        .collect();
    for (i, (_, c)) in global.iter_mut().enumerate() {
        use_top_level_consumers(&mut errs, &format!("plugins[{i}]"), c, &spec);
    }
    let mut route_plugins = Vec::with_capacity(spec.routes.len());
    for (i, r) in spec.routes.iter().enumerate() {
        let own: Vec<(String, PluginConfig)> = r
            .plugins
            .iter()
            .enumerate()
            .filter_map(|(j, p)| {
                plugins::check(&mut errs, &format!("routes[{i}].plugins[{j}]"), p, &packages)
                    .map(|c| (p.name.clone(), c))
            })
            .collect();
        let mut own = own;
        for (j, (_, c)) in own.iter_mut().enumerate() {
            use_top_level_consumers(&mut errs, &format!("routes[{i}].plugins[{j}]"), c, &spec);
        }
        let mut all: Vec<(String, PluginConfig)> =
            global.iter().filter(|(n, _)| !own.iter().any(|(o, _)| o == n)).cloned().collect();
        all.extend(own);
        route_plugins.push(all);
    }
    errs.finish()?;
    Ok(ValidConfig { spec, route_plugins: Arc::new(route_plugins), packages, registrations })
}

/// The collector's address must be a URL.
fn check_tracing(errs: &mut Errors, spec: &ConfigSpec) {
    if let Some(t) = &spec.tracing
        && !(t.otlp_endpoint.starts_with("http://") || t.otlp_endpoint.starts_with("https://"))
    {
        errs.push(
            "tracing.otlp_endpoint",
            format!("{:?} is not a URL: write http://HOST:4317 (or https://)", t.otlp_endpoint),
        );
    }
}

/// Listener names, TLS, limits and addresses.
fn check_listeners(errs: &mut Errors, listeners: &[crate::spec::ListenerSpec]) {
    let mut names = HashSet::new();
    for (i, l) in listeners.iter().enumerate() {
        check_name(errs, || format!("listeners[{i}].name"), &l.name);
        if !names.insert(l.name.as_str()) {
            errs.push(format!("listeners[{i}].name"), format!("duplicate listener name {:?}", l.name));
        }
    }
    for (i, l) in listeners.iter().enumerate() {
        if let Some(tls) = &l.tls
            && tls.certificates.is_empty()
        {
            errs.push(format!("listeners[{i}].tls.certificates"), "give at least one certificate");
        }
        let lim = &l.limits;
        if lim.max_connections == 0 {
            errs.push(format!("listeners[{i}].limits.max_connections"), "must be at least 1");
        }
        if lim.max_header_size.get() < 1024 {
            errs.push(format!("listeners[{i}].limits.max_header_size"), "must be at least 1KiB");
        }
        if lim.header_read_timeout.get().is_zero() || lim.idle_timeout.get().is_zero() {
            errs.push(format!("listeners[{i}].limits"), "timeouts must be greater than 0");
        }
    }
    let mut addrs = HashSet::new();
    for (i, l) in listeners.iter().enumerate() {
        // Port 0 asks the kernel for any free port: such listeners never collide.
        if l.address.port() != 0 && !addrs.insert(l.address) {
            errs.push(format!("listeners[{i}].address"), format!("address {} is used by another listener", l.address));
        }
    }
}

/// A `key-auth` that lists no consumers of its own authenticates the top-level ones.
fn use_top_level_consumers(errs: &mut Errors, at: &str, c: &mut PluginConfig, spec: &ConfigSpec) {
    if let PluginConfig::KeyAuth(k) = c
        && k.consumers.is_empty()
    {
        if spec.consumers.is_empty() {
            errs.push(format!("{at}.config.consumers"), "give consumers here or in the top-level `consumers`");
        }
        k.consumers.clone_from(&spec.consumers);
    }
}

/// Paths are built only when there is an error (validating 10 000 routes should not format
/// 40 000 strings).
fn check_name(errs: &mut Errors, path: impl FnOnce() -> String, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        errs.push(path(), format!("invalid name {name:?}: use 1-63 letters, digits, '-', '_' or '.'"));
    }
}

/// An unknown upstream, with the names that are defined.
fn undefined(name: &str, upstreams: &HashSet<&str>) -> String {
    let mut known: Vec<&str> = upstreams.iter().copied().collect();
    known.sort_unstable();
    match known.as_slice() {
        [] => format!("upstream {name:?} is not defined in `upstreams` (none is)"),
        k if k.len() <= 8 => format!("upstream {name:?} is not defined in `upstreams` (defined: {})", k.join(", ")),
        k => format!(
            "upstream {name:?} is not defined in `upstreams` ({} are; `weir ctl get upstreams` lists them)",
            k.len()
        ),
    }
}

fn check_route(errs: &mut Errors, at: &str, r: &RouteSpec, upstreams: &HashSet<&str>) {
    check_name(errs, || format!("{at}.name"), &r.name);
    check_match(errs, at, &r.matches);
    if let Some(m) = &r.mcp {
        if r.upstream.is_some() || !r.backends.is_empty() {
            errs.push(at, "an `mcp` route names its servers under `mcp`: drop `upstream` and `backends`");
        }
        crate::mcp::check(errs, at, m);
        return;
    }
    match (&r.upstream, r.backends.is_empty()) {
        (Some(_), false) => errs.push(at, "give either `upstream` or `backends`, not both"),
        (None, true) => errs.push(at, "a route needs an `upstream` (or weighted `backends`, or `mcp` servers)"),
        (Some(u), true) => {
            if !upstreams.contains(u.as_str()) {
                errs.push(format!("{at}.upstream"), undefined(u, upstreams));
            }
        }
        (None, false) => {
            for (j, b) in r.backends.iter().enumerate() {
                if !upstreams.contains(b.upstream.as_str()) {
                    errs.push(format!("{at}.backends[{j}].upstream"), undefined(&b.upstream, upstreams));
                }
            }
            if r.backends.iter().all(|b| b.weight == 0) {
                errs.push(format!("{at}.backends"), "at least one backend needs a weight above 0");
            }
        }
    }
    if let Some(t) = r.timeout
        && t.get().is_zero()
    {
        errs.push(format!("{at}.timeout"), "must be greater than 0");
    }
    if let Some(rt) = &r.retries
        && !(1..=10).contains(&rt.attempts)
    {
        errs.push(format!("{at}.retries.attempts"), "must be between 1 and 10 (1 = no retry)");
    }
}

/// `at` is the route's path; errors go under its `.match`.
fn check_match(errs: &mut Errors, route: &str, m: &MatchSpec) {
    let at = format_args!("{route}.match");
    for (i, h) in m.hosts.iter().enumerate() {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        let ok = !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
        if !ok {
            errs.push(
                format!("{at}.hosts[{i}]"),
                format!("invalid host {h:?}: write a name like api.example.com or a wildcard like *.example.com"),
            );
        }
    }
    if let Some(p) = &m.path {
        let (kind, s) = match p {
            PathMatch::Exact(s) => ("exact", s),
            PathMatch::Prefix(s) => ("prefix", s),
            PathMatch::Template(s) => ("template", s),
            PathMatch::Regex(s) => ("regex", s),
        };
        let path = || format!("{route}.match.path.{kind}");
        match p {
            PathMatch::Regex(re) => {
                if let Err(e) = regex::Regex::new(re) {
                    let first = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
                    errs.push(path(), format!("invalid regex {re:?}: {first}"));
                }
            }
            _ if !s.starts_with('/') => errs.push(path(), format!("{s:?} must start with '/'")),
            PathMatch::Template(t) => check_template(errs, &path(), t),
            _ => {}
        }
    }
    for (i, meth) in m.methods.iter().enumerate() {
        if meth.is_empty() || !meth.bytes().all(|b| b.is_ascii_uppercase()) {
            errs.push(
                format!("{at}.methods[{i}]"),
                format!("invalid method {meth:?}: write it in upper case, e.g. GET"),
            );
        }
    }
    for name in m.headers.keys() {
        let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            errs.push(format!("{at}.headers.{name}"), format!("invalid header name {name:?}"));
        }
    }
}

fn check_template(errs: &mut Errors, path: &str, t: &str) {
    let mut seen = HashSet::new();
    for seg in t.split('/').skip(1) {
        let opens = seg.matches('{').count();
        let closes = seg.matches('}').count();
        if opens == 0 && closes == 0 {
            continue;
        }
        let whole = seg.len() > 2 && seg.starts_with('{') && seg.ends_with('}') && opens == 1 && closes == 1;
        if !whole {
            errs.push(path, format!("segment {seg:?}: a parameter must be a whole segment like {{id}}"));
        } else if !seen.insert(&seg[1..seg.len() - 1]) {
            errs.push(path, format!("parameter {seg} appears twice"));
        }
    }
}

/// The largest endpoint weight (the hash ring places 100 points per unit of weight).
const MAX_WEIGHT: u32 = 10_000;

/// Each registration of a file names an upstream that takes registrations, once per address
/// and port.
fn check_registrations(errs: &mut Errors, spec: &ConfigSpec) {
    if spec.registrations.is_empty() {
        return;
    }
    let takes = takes_registrations(spec);
    let (mut names, mut endpoints) = (HashSet::new(), HashSet::new());
    for (i, r) in spec.registrations.iter().enumerate() {
        let at = format!("registrations[{i}]");
        crate::registrations::check_one(errs, &at, r, |u| takes.get(u).copied());
        if !names.insert(r.name.as_str()) {
            errs.push(format!("{at}.name"), format!("duplicate registration name {:?}", r.name));
        }
        if !endpoints.insert((r.upstream.as_str(), r.address, r.port)) {
            errs.push(at, format!("{}:{} is registered twice for {:?}", r.address, r.port, r.upstream));
        }
    }
}

/// Whether each upstream takes registrations, by name.
pub(crate) fn takes_registrations(spec: &ConfigSpec) -> HashMap<String, bool> {
    spec.upstreams
        .iter()
        .map(|u| (u.name.clone(), u.discovery.as_ref().is_some_and(|d| d.registry.is_some())))
        .collect()
}

fn check_dns(errs: &mut Errors, at: &str, d: &crate::spec::DnsDiscoverySpec) {
    let name = d.name.trim_end_matches('.');
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        errs.push(format!("{at}.name"), format!("{:?} is not a DNS name", d.name));
    }
    match (d.record, d.port) {
        (crate::spec::DnsRecord::A, None | Some(0)) => {
            errs.push(format!("{at}.port"), "A records carry no port: give the endpoints' port (1-65535)")
        }
        (crate::spec::DnsRecord::Srv, Some(_)) => {
            errs.push(format!("{at}.port"), "SRV records carry their own ports: leave `port` out")
        }
        _ => {}
    }
    // Each gateway asks once per min_ttl while a record's TTL is shorter: 10ms bounds that to
    // 100 queries a second per upstream.
    if d.min_ttl.get() < std::time::Duration::from_millis(10) {
        errs.push(format!("{at}.min_ttl"), "must be at least 10ms");
    }
    if d.max_ttl.get() < d.min_ttl.get() {
        errs.push(format!("{at}.max_ttl"), format!("must be at least min_ttl ({})", d.min_ttl));
    }
    if d.max_ttl.get() > std::time::Duration::from_secs(86_400) {
        errs.push(format!("{at}.max_ttl"), "must be at most 24h");
    }
}

fn check_upstream(errs: &mut Errors, at: &str, u: &UpstreamSpec) {
    check_name(errs, || format!("{at}.name"), &u.name);
    let lb = &u.load_balancer;
    match &u.discovery {
        None if lb.endpoints.is_empty() => errs.push(
            format!("{at}.load_balancer.endpoints"),
            "an upstream needs at least one endpoint (or `discovery` to find them)",
        ),
        None => {}
        Some(d) => {
            if !lb.endpoints.is_empty() {
                errs.push(
                    format!("{at}.load_balancer.endpoints"),
                    "give endpoints or `discovery`, not both: discovered endpoints replace the list",
                );
            }
            match (&d.dns, &d.registry) {
                (Some(dns), None) => check_dns(errs, &format!("{at}.discovery.dns"), dns),
                (None, Some(_)) => {}
                _ => errs.push(format!("{at}.discovery"), "give one source: `dns: {…}` or `registry: {}`"),
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, e) in lb.endpoints.iter().enumerate() {
        let ep = format!("{at}.load_balancer.endpoints[{i}]");
        if e.address.is_empty() || e.address.contains(char::is_whitespace) || e.address.contains('/') {
            errs.push(format!("{ep}.address"), format!("invalid address {:?}: write an IP or a host name", e.address));
        }
        if e.port == 0 {
            errs.push(format!("{ep}.port"), "must be between 1 and 65535");
        }
        if e.weight == 0 {
            errs.push(format!("{ep}.weight"), "must be at least 1 (remove the endpoint to take it out)");
        } else if e.weight > MAX_WEIGHT {
            errs.push(format!("{ep}.weight"), format!("must be at most {MAX_WEIGHT}"));
        }
        if !seen.insert((&e.address, e.port)) {
            errs.push(ep, format!("endpoint {}:{} is listed twice", e.address, e.port));
        }
    }
    if u.connect_timeout.get().is_zero() {
        errs.push(format!("{at}.connect_timeout"), "must be greater than 0");
    }
    check_pool(errs, &format!("{at}.pool"), &u.pool);
    if u.protocol == crate::spec::UpstreamProtocol::H2 && u.tls.is_none() {
        errs.push(format!("{at}.protocol"), "h2 needs `tls` (use h2c for HTTP/2 over plain TCP)");
    }
    if let Some(t) = &u.tls
        && t.client_cert.is_some() != t.client_key.is_some()
    {
        errs.push(format!("{at}.tls"), "give both client_cert and client_key, or neither");
    }
    if let Some(hc) = &u.health_check {
        check_health(errs, &format!("{at}.health_check"), hc);
    }
}

fn check_pool(errs: &mut Errors, at: &str, p: &PoolSpec) {
    if p.max_connections == 0 {
        errs.push(format!("{at}.max_connections"), "must be at least 1");
    }
    if p.max_idle > p.max_connections {
        errs.push(format!("{at}.max_idle"), format!("must not exceed max_connections ({})", p.max_connections));
    }
    for (name, d) in [("idle_timeout", p.idle_timeout), ("max_lifetime", p.max_lifetime)] {
        if d.get().is_zero() {
            errs.push(format!("{at}.{name}"), "must be greater than 0");
        }
    }
}

fn check_health(errs: &mut Errors, at: &str, hc: &HealthCheckSpec) {
    if let Some(a) = &hc.active {
        if !a.path.starts_with('/') {
            errs.push(format!("{at}.active.path"), format!("{:?} must start with '/'", a.path));
        }
        for (name, d) in [("interval", a.interval), ("timeout", a.timeout)] {
            if d.get().is_zero() {
                errs.push(format!("{at}.active.{name}"), "must be greater than 0");
            }
        }
        for (name, n) in [("healthy_threshold", a.healthy_threshold), ("unhealthy_threshold", a.unhealthy_threshold)] {
            if n == 0 {
                errs.push(format!("{at}.active.{name}"), "must be at least 1");
            }
        }
    }
    if let Some(p) = &hc.passive {
        if p.consecutive_failures == 0 {
            errs.push(format!("{at}.passive.consecutive_failures"), "must be at least 1");
        }
        if p.ejection_time.get().is_zero() {
            errs.push(format!("{at}.passive.ejection_time"), "must be greater than 0");
        }
    }
}
