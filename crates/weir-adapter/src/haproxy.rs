//! HAProxy: a revision rendered as one `haproxy.cfg`, run in master-worker mode.
//!
//! Owns: the mapping from Weir's model to HAProxy sections. Each listener is a `frontend`
//! whose `use_backend` rules are Weir's routes in [`weir_config::precedence::order`] (HAProxy
//! takes the first rule whose condition holds, so the precedence carries over as it is). Each
//! route is a `backend` with its upstream's servers, balancing, health checks and the route's
//! timeout, retries and plugins; a canary split is one backend per upstream, chosen by one
//! random draw per request.

use std::path::{Path, PathBuf};
use std::process::Command;

use weir_config::ValidConfig;
use weir_config::plugins::{HeaderOps, PluginConfig};
use weir_config::precedence::{self, HostMatch};
use weir_config::resources::{Kind, ResourceKey};
use weir_config::spec::{ConfigSpec, HashKeySpec, LbPolicy, ListenerSpec, PathMatch, RouteSpec, UpstreamSpec};
use weir_proto::v1;

use crate::render::{
    Refusals, Rendered, endpoints, host_port, ms, path_regex, route_key, route_upstreams, upstream_key,
};
use crate::{Context, Proxy};

/// HAProxy, run from `binary`.
#[derive(Clone, Debug)]
pub struct Haproxy {
    /// The haproxy binary.
    pub binary: PathBuf,
}

/// A word as a single-quoted HAProxy argument (nothing inside is interpreted).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The backend of route `r` towards `upstream` (a split has one per upstream).
fn backend(r: &RouteSpec, upstream: &str) -> String {
    if r.upstream.is_some() { format!("route.{}", r.name) } else { format!("route.{}.{upstream}", r.name) }
}

/// The condition of one placed route: every predicate, ANDed.
fn condition(r: &RouteSpec, host: &HostMatch) -> String {
    let m = &r.matches;
    let mut c = Vec::new();
    match host {
        HostMatch::Any => {}
        HostMatch::Exact(h) => c.push(format!("{{ req.hdr(host),field(1,:),lower -m str {} }}", quote(h))),
        HostMatch::Wildcard(s) => c.push(format!("{{ req.hdr(host),field(1,:),lower -m end {} }}", quote(s))),
    }
    if !m.methods.is_empty() {
        c.push(format!("{{ method {} }}", m.methods.join(" ")));
    }
    match (&m.path, path_regex(m.path.as_ref())) {
        (Some(PathMatch::Exact(p)), _) => c.push(format!("{{ path -m str {} }}", quote(p))),
        (_, Some(re)) => c.push(format!("{{ path -m reg {} }}", quote(&format!("^{re}$")))),
        (_, None) => {}
    }
    for (k, v) in &m.headers {
        c.push(format!("{{ req.fhdr({}) -m str {} }}", k.to_ascii_lowercase(), quote(v)));
    }
    for (k, v) in &m.query {
        c.push(format!("{{ url_param({k}) -m str {} }}", quote(v)));
    }
    c.join(" ")
}

fn use_backends(out: &mut Rendered, spec: &ConfigSpec) {
    for p in precedence::order(&spec.routes) {
        let r = &spec.routes[p.route];
        out.about(Some(route_key(&r.name)));
        let cond = condition(r, &p.host);
        let ups = route_upstreams(spec, r);
        let total: u64 = ups.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut upto = 0;
        for (n, (u, w)) in ups.iter().enumerate() {
            upto += u64::from(*w);
            let mut rule = format!("use_backend {}", backend(r, &u.name));
            let mut parts = vec![cond.clone()];
            if n + 1 < ups.len() {
                parts.push(format!("{{ var(txn.dice) -m int lt {} }}", upto * 10_000 / total.max(1)));
            }
            let parts: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
            if !parts.is_empty() {
                rule += &format!(" if {}", parts.join(" "));
            }
            out.line(1, rule);
        }
    }
}

fn frontend(out: &mut Rendered, spec: &ConfigSpec, l: &ListenerSpec, ctx: &Context) {
    out.about(Some(ResourceKey::new(Kind::Listener, l.name.as_str())));
    out.line(0, format!("frontend listener.{}", l.name));
    let mut bind = format!("bind {}", l.address);
    if let Some(tls) = &l.tls {
        bind += " ssl";
        for c in &tls.certificates {
            let pem = format!("{}\n{}\n", pem_of(&c.cert), pem_of(&c.key));
            let path = ctx.path(&format!("certs/{}.pem", crate::render::short_hash(pem.as_bytes())));
            bind += &format!(" crt {}", quote(&path.to_string_lossy()));
            out.files.push((path, pem.into_bytes()));
        }
    }
    out.line(1, bind);
    let lim = &l.limits;
    out.line(1, format!("maxconn {}", lim.max_connections));
    out.line(1, format!("timeout client {}", ms(lim.idle_timeout.get())));
    out.line(1, format!("timeout http-request {}", ms(lim.header_read_timeout.get())));
    out.line(1, format!("timeout http-keep-alive {}", ms(lim.idle_timeout.get())));
    out.line(1, "option forwardfor");
    let proto = if l.tls.is_some() { "https" } else { "http" };
    out.line(1, format!("http-request set-header X-Forwarded-Proto {proto}"));
    out.line(1, "http-request set-header X-Forwarded-Host %[req.hdr(host)] if { req.hdr(host) -m found }");
    out.line(1, "http-request add-header Via '1.1 weir-haproxy'");
    if spec.routes.iter().any(|r| r.upstream.is_none()) {
        out.line(1, "http-request set-var(txn.dice) rand(10000)");
    }
    use_backends(out, spec);
    out.about(None);
    out.line(1, "default_backend weir.noroute");
}

/// PEM text, read from the file when a path is given.
fn pem_of(value: &str) -> String {
    if weir_config::spec::CertificateSpec::is_inline(value) {
        value.trim().to_owned()
    } else {
        std::fs::read_to_string(value).map(|s| s.trim().to_owned()).unwrap_or_default()
    }
}

fn balance(out: &mut Rendered, u: &UpstreamSpec) {
    let lb = &u.load_balancer;
    let how = match (lb.policy, &lb.hash_key) {
        (LbPolicy::LeastConnections, _) => "leastconn".to_owned(),
        (LbPolicy::P2cEwma, _) => "random(2)".into(),
        (LbPolicy::ConsistentHash, Some(HashKeySpec::Header(h))) => format!("hdr({h})"),
        (LbPolicy::ConsistentHash, _) => "source".into(),
        (LbPolicy::RoundRobin | LbPolicy::WeightedRoundRobin, _) => "roundrobin".into(),
    };
    out.line(1, format!("balance {how}"));
    if lb.policy == LbPolicy::ConsistentHash {
        out.line(1, "hash-type consistent");
    }
}

fn servers(out: &mut Rendered, cfg: &ValidConfig, u: &UpstreamSpec) {
    let health = u.health_check.as_ref();
    let active = health.and_then(|h| h.active.as_ref());
    let passive = health.and_then(|h| h.passive.as_ref());
    if let Some(a) = active {
        out.line(1, format!("option httpchk GET {}", a.path));
        out.line(1, "http-check expect status 200-399");
        out.line(1, format!("timeout check {}", ms(a.timeout.get())));
        let (inter, fall, rise) = (ms(a.interval.get()), a.unhealthy_threshold, a.healthy_threshold);
        out.line(1, format!("default-server inter {inter} fall {fall} rise {rise}"));
    } else if let Some(p) = passive {
        // Passive only: an ejected server is probed (TCP) back in after the ejection time.
        out.line(1, format!("default-server inter {} fall 1 rise 1", ms(p.ejection_time.get())));
    }
    let mut opts = format!(" pool-max-conn {} pool-purge-delay {}", u.pool.max_idle, ms(u.pool.idle_timeout.get()));
    if active.is_some() || passive.is_some() {
        opts += " check";
    }
    if let Some(p) = passive {
        opts += &format!(" observe layer7 error-limit {} on-error mark-down", p.consecutive_failures);
    }
    if let Some(t) = &u.tls {
        opts += if t.insecure_skip_verify { " ssl verify none" } else { " ssl verify required" };
        match &t.ca {
            Some(ca) => opts += &format!(" ca-file {}", quote(ca)),
            None if !t.insecure_skip_verify => opts += " ca-file @system-ca",
            None => {}
        }
        if let Some(sni) = &t.sni {
            opts += &format!(" sni str({sni})");
        }
    }
    let weighted = u.load_balancer.policy != LbPolicy::RoundRobin;
    let eps = endpoints(cfg, u);
    // HAProxy weights go to 256: larger ones are scaled, keeping their ratios.
    let top = eps.iter().map(|e| e.2).max().unwrap_or(1).max(1);
    let scale = |w: u32| if top <= 256 { w } else { (u64::from(w) * 256 / u64::from(top)).max(1) as u32 };
    for (n, (host, port, weight)) in eps.iter().enumerate() {
        let w = if weighted { scale(*weight) } else { u32::from(*weight > 0) };
        out.line(
            1,
            format!("server e{n} {} weight {w} maxconn {}{opts}", host_port(host, *port), u.pool.max_connections),
        );
    }
}

fn header_edits(out: &mut Rendered, ops: &HeaderOps, dir: &str) {
    for h in &ops.remove {
        out.line(1, format!("http-{dir} del-header {}", quote(h)));
    }
    for (h, v) in &ops.set {
        out.line(1, format!("http-{dir} set-header {} {}", quote(h), quote(&v.replace('%', "%%"))));
    }
    for (h, v) in &ops.add {
        out.line(1, format!("http-{dir} add-header {} {}", quote(h), quote(&v.replace('%', "%%"))));
    }
}

fn plugins(out: &mut Rendered, plugins: &[(String, PluginConfig)]) {
    for (_, p) in plugins {
        match p {
            PluginConfig::IpRestriction(ip) => {
                if !ip.deny.is_empty() {
                    out.line(1, format!("http-request deny deny_status 403 if {{ src {} }}", ip.deny.join(" ")));
                }
                if !ip.allow.is_empty() {
                    out.line(1, format!("http-request deny deny_status 403 if !{{ src {} }}", ip.allow.join(" ")));
                }
            }
            PluginConfig::Headers(h) => {
                header_edits(out, &h.request, "request");
                header_edits(out, &h.response, "response");
            }
            PluginConfig::RequestId(r) => {
                let h = quote(&r.header);
                let keep = if r.trust_incoming {
                    format!(" unless {{ req.hdr({}) -m found }}", r.header)
                } else {
                    String::new()
                };
                out.line(1, format!("http-request set-header {h} %[uuid]{keep}"));
                if r.response {
                    out.line(1, format!("http-request set-var(txn.request_id) req.hdr({})", r.header));
                    out.line(1, format!("http-response set-header {h} %[var(txn.request_id)]"));
                }
            }
            _ => {}
        }
    }
}

fn route_backend(out: &mut Rendered, cfg: &ValidConfig, i: usize, r: &RouteSpec, u: &UpstreamSpec) {
    out.about(Some(route_key(&r.name)));
    out.line(0, format!("backend {}", backend(r, &u.name)));
    let timeout = r.timeout.map_or(std::time::Duration::from_secs(30), |t| t.get());
    out.line(1, format!("timeout server {}", ms(timeout)));
    match r.retries.as_ref().map_or(1, |x| x.attempts.max(1)) {
        1 => out.line(1, "retries 0"),
        n => {
            out.line(1, format!("retries {}", n - 1));
            out.line(1, "option redispatch 1");
            out.line(1, "retry-on conn-failure empty-response response-timeout 502 503 504");
        }
    }
    if let Some(max) = r.max_body_size {
        out.line(1, format!("http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {} }}", max.get()));
    }
    plugins(out, cfg.route_plugins(i));
    out.about(Some(upstream_key(&u.name)));
    out.line(1, format!("timeout connect {}", ms(u.connect_timeout.get())));
    balance(out, u);
    servers(out, cfg, u);
}

/// Characters a name may have where HAProxy takes it unquoted (sample fetch arguments).
const NAME: &str = "-_.";
/// And a path, on an `option httpchk` line.
const PATH: &str = "-_.~/%";

/// Refuses `value` unless it is letters, digits and `extra` (HAProxy would read anything else
/// as the next argument or a new line).
fn token(no: &mut Refusals, key: &ResourceKey, field: &str, value: &str, extra: &str) {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c)) {
        no.refuse(key, field, format!("{value:?}: the HAProxy adapter takes only letters, digits and {extra:?} here"));
    }
}

fn refuse(cfg: &ValidConfig, no: &mut Refusals) {
    let spec = cfg.spec();
    for u in &spec.upstreams {
        let key = upstream_key(&u.name);
        if u.discovery.as_ref().is_some_and(|d| d.dns.is_some()) {
            no.refuse(&key, "discovery.dns", "the HAProxy adapter does not render DNS discovery (resolvers)");
        }
        if u.protocol != weir_config::spec::UpstreamProtocol::Http1 {
            no.refuse(&key, "protocol", "the HAProxy adapter speaks HTTP/1.1 to upstreams only");
        }
        if u.tls.as_ref().is_some_and(|t| t.client_cert.is_some()) {
            no.refuse(&key, "tls.client_cert", "the HAProxy adapter does not push client certificates");
        }
    }
    for u in &spec.upstreams {
        let key = upstream_key(&u.name);
        if let Some(HashKeySpec::Header(h)) = &u.load_balancer.hash_key {
            token(no, &key, "load_balancer.hash_key.header", h, NAME);
        }
        if let Some(sni) = u.tls.as_ref().and_then(|t| t.sni.as_ref()) {
            token(no, &key, "tls.sni", sni, NAME);
        }
        if let Some(a) = u.health_check.as_ref().and_then(|h| h.active.as_ref()) {
            token(no, &key, "health_check.active.path", &a.path, PATH);
        }
    }
    for (i, r) in spec.routes.iter().enumerate() {
        let key = route_key(&r.name);
        if r.mcp.is_some() {
            no.refuse(&key, "mcp", "HAProxy cannot terminate MCP: serve this route from a Weir gateway");
        }
        for h in r.matches.headers.keys() {
            token(no, &key, &format!("match.headers.{h}"), h, NAME);
        }
        for q in r.matches.query.keys() {
            token(no, &key, &format!("match.query.{q}"), q, NAME);
        }
        for (_, p) in cfg.route_plugins(i) {
            if let PluginConfig::RequestId(rid) = p {
                token(no, &key, "plugins.request-id.header", &rid.header, NAME);
            }
        }
        for (name, p) in cfg.route_plugins(i) {
            let ok =
                matches!(p, PluginConfig::Headers(_) | PluginConfig::IpRestriction(_) | PluginConfig::RequestId(_));
            if !ok {
                no.refuse(
                    &key,
                    &format!("plugins.{name}"),
                    format!("the HAProxy adapter cannot express the {name} plugin"),
                );
            }
        }
    }
}

fn head(out: &mut Rendered, ctx: &Context) {
    out.line(0, "# Rendered by `weir adapter haproxy` from the control plane's config; do not edit:");
    out.line(0, "# the next revision replaces this file.");
    out.line(0, "global");
    out.line(1, format!("pidfile {}", quote(&ctx.path("haproxy.pid").to_string_lossy())));
    let sock = ctx.path("haproxy.sock");
    out.line(1, format!("stats socket {} mode 600 level admin expose-fd listeners", quote(&sock.to_string_lossy())));
    out.line(1, "hard-stop-after 30s");
    if let Some(n) = ctx.workers {
        out.line(1, format!("nbthread {n}"));
    }
    out.line(0, "defaults");
    out.line(1, "mode http");
    out.line(1, "timeout connect 1s");
    out.line(1, "timeout client 60s");
    out.line(1, "timeout server 30s");
    out.line(1, "option http-keep-alive");
    out.line(0, "backend weir.noroute");
    out.line(1, "http-request return status 404 content-type application/json string '{\"error\":\"no route matches this request\"}'");
    out.line(0, "frontend weir.status");
    out.line(1, format!("bind {}", ctx.status));
    out.line(1, "http-request return status 200 content-type text/plain string @HASH@ if { path /weir-status }");
    out.line(1, "stats enable");
    out.line(1, "stats uri /stats");
}

impl Haproxy {
    /// Renders `cfg` (see the module doc).
    pub fn render_config(cfg: &ValidConfig, ctx: &Context) -> Result<Rendered, Vec<v1::ErrorDetail>> {
        let spec = cfg.spec();
        let mut no = Refusals::default();
        refuse(cfg, &mut no);
        let mut out = Rendered::default();
        head(&mut out, ctx);
        for l in &spec.listeners {
            frontend(&mut out, spec, l, ctx);
        }
        for (i, r) in spec.routes.iter().enumerate() {
            for (u, _) in route_upstreams(spec, r) {
                route_backend(&mut out, cfg, i, r, u);
            }
        }
        no.or(out)
    }
}

impl Proxy for Haproxy {
    const KIND: &'static str = "haproxy";
    const FILE: &'static str = "haproxy.cfg";
    const FEATURES: &'static [&'static str] = &[
        "route.hosts",
        "route.path",
        "route.methods",
        "route.headers",
        "route.query",
        "route.backends",
        "route.timeout",
        "route.retries",
        "route.max_body_size~content-length",
        "balancing.round_robin",
        "balancing.weighted_round_robin",
        "balancing.least_connections",
        "balancing.consistent_hash",
        "balancing.p2c_ewma~random(2)",
        "health.active",
        "health.passive",
        "pool.keepalive",
        "listener.tls",
        "upstream.tls",
        "discovery.registry",
        "plugin.headers",
        "plugin.ip-restriction",
        "plugin.request-id",
    ];

    fn render(&self, cfg: &ValidConfig, ctx: &Context) -> Result<Rendered, Vec<v1::ErrorDetail>> {
        Self::render_config(cfg, ctx)
    }

    fn binary(&self) -> &Path {
        &self.binary
    }

    fn check(&self, file: &Path, _ctx: &Context) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("-c").arg("-f").arg(file);
        c
    }

    fn start(&self, ctx: &Context) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("-W").arg("-D").arg("-f").arg(ctx.path(Self::FILE)).arg("-p").arg(ctx.path("haproxy.pid"));
        c
    }

    fn reload_signal(&self) -> rustix::process::Signal {
        rustix::process::Signal::USR2
    }

    /// `[ALERT]    (9) : config : parsing [/dir/haproxy.cfg.new:12] : unknown keyword …`.
    fn check_errors(&self, output: &str) -> Vec<(Option<usize>, String)> {
        output
            .lines()
            .filter(|l| l.contains("[ALERT]"))
            .map(|l| {
                let line = l.split_once(".new:").and_then(|(_, rest)| rest.split(']').next()?.parse().ok());
                let msg = l.rsplit_once("] : ").map_or(l, |(_, m)| m).trim();
                (line, msg.to_owned())
            })
            .collect()
    }

    async fn counters(&self, ctx: &Context) -> Option<(u64, u64)> {
        let csv = crate::driven::get(ctx.status, "/stats;csv").await?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (name, sv, req, e5) = (col("pxname")?, col("svname")?, col("req_tot")?, col("hrsp_5xx")?);
        let (mut requests, mut errors) = (0, 0);
        for row in lines.map(|l| l.split(',').collect::<Vec<_>>()) {
            if row.get(sv) == Some(&"FRONTEND") && row.get(name).is_some_and(|n| n.starts_with("listener.")) {
                requests += row.get(req).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                errors += row.get(e5).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        Some((requests, errors))
    }
}
