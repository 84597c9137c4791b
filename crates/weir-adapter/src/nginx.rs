//! nginx: a revision rendered as one `nginx.conf`.
//!
//! Owns: the mapping from Weir's model to nginx directives. Routes keep Weir's precedence
//! exactly: nginx's own location order (exact, longest prefix, first regex) cannot express
//! it, so one `map` tries every route's conditions (host, method, path, headers, query) as
//! one regular expression over a composite key, in [`weir_config::precedence::order`], and
//! the matching route's named location does the proxying. Upstreams become `upstream`
//! blocks (with a shared `zone`, so weights hold across workers); canary splits
//! `split_clients`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use weir_config::ValidConfig;
use weir_config::plugins::{HeaderOps, PluginConfig};
use weir_config::precedence;
use weir_config::resources::{Kind, ResourceKey};
use weir_config::spec::{ConfigSpec, HashKeySpec, LbPolicy, ListenerSpec, RouteSpec, UpstreamProtocol, UpstreamSpec};
use weir_proto::v1;

use crate::render::{Refusals, Rendered, endpoints, host_port, host_regex, ms, path_regex, route_key, upstream_key};
use crate::{Context, Proxy};

/// nginx, run from `binary`.
#[derive(Clone, Debug)]
pub struct Nginx {
    /// The nginx binary.
    pub binary: PathBuf,
}

/// What a route's named location is called.
fn location(route: &str) -> String {
    format!("@route.{route}")
}

/// A string as an nginx quoted token.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "${weir_dollar}"))
}

/// A regex as an nginx quoted token (no variables are expanded in `map` regexes).
fn quote_regex(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `x-canary` as the nginx variable `$http_x_canary`, or `None` when nginx has no variable
/// for that name.
fn header_var(name: &str) -> Option<String> {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        .then(|| format!("$http_{}", name.to_ascii_lowercase().replace('-', "_")))
}

fn arg_var(name: &str) -> Option<String> {
    name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_').then(|| format!("$arg_{name}"))
}

/// The header and query names any route matches on: the composite key's extra fields.
struct KeyFields {
    headers: Vec<String>,
    query: Vec<String>,
}

impl KeyFields {
    fn of(routes: &[RouteSpec]) -> Self {
        let headers: BTreeSet<String> =
            routes.iter().flat_map(|r| r.matches.headers.keys().map(|h| h.to_ascii_lowercase())).collect();
        let query: BTreeSet<String> = routes.iter().flat_map(|r| r.matches.query.keys().cloned()).collect();
        Self { headers: headers.into_iter().collect(), query: query.into_iter().collect() }
    }

    /// `$host\n$request_method\n$weir_path\n$http_a\n$arg_b`.
    fn source(&self) -> String {
        let mut fields = vec!["$host".to_owned(), "$request_method".into(), "$weir_path".into()];
        fields.extend(self.headers.iter().filter_map(|h| header_var(h)));
        fields.extend(self.query.iter().filter_map(|q| arg_var(q)));
        // `\n` in a quoted nginx string is a newline: the fields' separator.
        format!("\"{}\"", fields.join("\\n"))
    }

    /// The regex one placed route matches the key with.
    fn regex(&self, r: &RouteSpec, host: &precedence::HostMatch) -> String {
        const ANY: &str = "[^\\n]*";
        let m = &r.matches;
        let mut parts = vec![host_regex(host).unwrap_or_else(|| ANY.into())];
        parts.push(if m.methods.is_empty() {
            ANY.into()
        } else {
            format!("(?:{})", m.methods.iter().map(|x| regex::escape(x)).collect::<Vec<_>>().join("|"))
        });
        parts.push(path_regex(m.path.as_ref()).unwrap_or_else(|| ANY.into()));
        for h in &self.headers {
            let want = m.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(h)).map(|(_, v)| regex::escape(v));
            parts.push(want.unwrap_or_else(|| ANY.into()));
        }
        for q in &self.query {
            parts.push(m.query.get(q).map_or_else(|| ANY.into(), |v| regex::escape(v)));
        }
        format!("~^{}$", parts.join("\\n"))
    }
}

fn refuse_route(r: &RouteSpec, plugins: &[(String, PluginConfig)], no: &mut Refusals) {
    let key = route_key(&r.name);
    if r.mcp.is_some() {
        no.refuse(&key, "mcp", "nginx cannot terminate MCP: serve this route from a Weir gateway");
    }
    for h in r.matches.headers.keys() {
        if header_var(h).is_none() {
            no.refuse(&key, &format!("match.headers.{h}"), "nginx has no variable for this header name");
        }
    }
    for q in r.matches.query.keys() {
        if arg_var(q).is_none() {
            no.refuse(&key, &format!("match.query.{q}"), "nginx has no variable for this query parameter name");
        }
    }
    for (name, p) in plugins {
        let why = match p {
            PluginConfig::Headers(h) if !h.request.add.is_empty() => {
                Some("nginx cannot append a request header to one the client sent: use `set`")
            }
            PluginConfig::Headers(_) | PluginConfig::IpRestriction(_) | PluginConfig::RequestId(_) => None,
            PluginConfig::AccessLog(a) if matches!(a.sink, weir_config::plugins::AccessLogSink::File { .. }) => None,
            PluginConfig::AccessLog(_) => Some("nginx writes access logs to files only"),
            PluginConfig::Wasm(_) => Some("nginx cannot run proxy-wasm plugins"),
            _ => Some("the nginx adapter cannot express this plugin"),
        };
        if let Some(why) = why {
            no.refuse(&key, &format!("plugins.{name}"), why);
        }
    }
}

fn refuse_upstream(u: &UpstreamSpec, no: &mut Refusals) {
    let key = upstream_key(&u.name);
    if u.discovery.as_ref().is_some_and(|d| d.dns.is_some()) {
        no.refuse(&key, "discovery.dns", "nginx (open source) resolves upstream names only when it loads its config");
    }
    if u.protocol != UpstreamProtocol::Http1 {
        no.refuse(&key, "protocol", "nginx proxies HTTP/1.1 to upstreams only (gRPC needs grpc_pass)");
    }
    if u.tls.as_ref().is_some_and(|t| t.client_cert.is_some()) {
        no.refuse(&key, "tls.client_cert", "the nginx adapter does not push client certificates");
    }
}

fn upstream(out: &mut Rendered, cfg: &ValidConfig, u: &UpstreamSpec) {
    out.about(Some(upstream_key(&u.name)));
    out.line(1, format!("upstream {} {{", u.name));
    out.line(2, format!("zone {} 64k;", u.name));
    let lb = &u.load_balancer;
    match (lb.policy, &lb.hash_key) {
        (LbPolicy::LeastConnections, _) => out.line(2, "least_conn;"),
        (LbPolicy::P2cEwma, _) => out.line(2, "random two least_conn;"),
        (LbPolicy::ConsistentHash, Some(HashKeySpec::Header(h))) => {
            let var = header_var(h).unwrap_or_else(|| "$remote_addr".into());
            out.line(2, format!("hash {var} consistent;"));
        }
        (LbPolicy::ConsistentHash, _) => out.line(2, "hash $remote_addr consistent;"),
        (LbPolicy::RoundRobin | LbPolicy::WeightedRoundRobin, _) => {}
    }
    let weighted = lb.policy != LbPolicy::RoundRobin;
    let passive = u.health_check.as_ref().and_then(|h| h.passive.as_ref());
    let eps = endpoints(cfg, u);
    for (host, port, weight) in &eps {
        let mut s = format!("server {}", host_port(host, *port));
        if weighted && *weight != 1 {
            s += &format!(" weight={}", weight.max(&1));
        }
        match passive {
            Some(p) => {
                let secs = p.ejection_time.get().as_secs_f64().ceil().max(1.0);
                s += &format!(" max_fails={} fail_timeout={secs}s", p.consecutive_failures);
            }
            None => s += " max_fails=0",
        }
        s += &format!(" max_conns={};", u.pool.max_connections);
        if *weight == 0 {
            s = s.replace(';', " down;");
        }
        out.line(2, s);
    }
    if eps.is_empty() {
        // nginx wants a server; this one refuses every request (502), as an empty upstream does.
        out.line(2, "server 127.0.0.1:1 down;");
    }
    out.line(2, format!("keepalive {};", u.pool.max_idle.max(1)));
    out.line(2, format!("keepalive_timeout {};", ms(u.pool.idle_timeout.get())));
    out.line(2, format!("keepalive_time {};", ms(u.pool.max_lifetime.get())));
    out.line(1, "}");
}

fn header_edits(out: &mut Rendered, ops: &HeaderOps, response: bool, sets: &mut Vec<(String, String)>) {
    if response {
        for h in ops.remove.iter().chain(ops.set.keys()) {
            out.line(2, format!("proxy_hide_header {};", quote(h)));
        }
        for (h, v) in ops.set.iter().chain(&ops.add) {
            out.line(2, format!("add_header {} {} always;", quote(h), quote(v)));
        }
    } else {
        sets.retain(|(k, _)| !ops.remove.iter().chain(ops.set.keys()).any(|h| h.eq_ignore_ascii_case(k)));
        sets.extend(ops.remove.iter().map(|h| (h.clone(), "\"\"".into())));
        sets.extend(ops.set.iter().map(|(h, v)| (h.clone(), quote(v))));
    }
}

/// The request headers every route sets (a location's own `proxy_set_header` replaces the
/// inherited ones, so each route carries the whole set).
fn forwarded(tls: bool) -> Vec<(String, String)> {
    [
        ("Host", "$http_host"),
        ("Connection", "\"\""),
        ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        ("X-Forwarded-Proto", if tls { "https" } else { "http" }),
        ("X-Forwarded-Host", "$http_host"),
        ("Via", "\"1.1 weir-nginx\""),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec()
}

fn plugins(out: &mut Rendered, plugins: &[(String, PluginConfig)], sets: &mut Vec<(String, String)>) {
    for (_, p) in plugins {
        match p {
            PluginConfig::IpRestriction(ip) => {
                for d in &ip.deny {
                    out.line(2, format!("deny {d};"));
                }
                for a in &ip.allow {
                    out.line(2, format!("allow {a};"));
                }
                if !ip.allow.is_empty() {
                    out.line(2, "deny all;");
                }
            }
            PluginConfig::Headers(h) => {
                header_edits(out, &h.request, false, sets);
                header_edits(out, &h.response, true, sets);
            }
            PluginConfig::RequestId(r) => {
                let var = match header_var(&r.header) {
                    Some(h) if r.trust_incoming => format!("$weir_id{}", &h[5..]),
                    _ => "$request_id".to_owned(),
                };
                sets.retain(|(k, _)| !k.eq_ignore_ascii_case(&r.header));
                sets.push((r.header.clone(), var.clone()));
                if r.response {
                    out.line(2, format!("add_header {} {var} always;", quote(&r.header)));
                }
            }
            PluginConfig::AccessLog(a) => {
                if let weir_config::plugins::AccessLogSink::File { path } = &a.sink {
                    out.line(2, format!("access_log {} weir_json;", quote(path)));
                }
            }
            _ => {}
        }
    }
}

fn route(out: &mut Rendered, spec: &ConfigSpec, i: usize, r: &RouteSpec, cfg: &ValidConfig, tls: bool) {
    out.about(Some(route_key(&r.name)));
    out.line(1, format!("location {} {{", location(&r.name)));
    let timeout = ms(r.timeout.map_or(std::time::Duration::from_secs(30), |t| t.get()));
    out.line(2, format!("proxy_read_timeout {timeout};"));
    out.line(2, format!("proxy_send_timeout {timeout};"));
    let ups: Vec<&UpstreamSpec> = match &r.upstream {
        Some(u) => spec.upstreams.iter().filter(|x| &x.name == u).collect(),
        None => r.backends.iter().filter_map(|b| spec.upstreams.iter().find(|x| x.name == b.upstream)).collect(),
    };
    let connect = ups.iter().map(|u| u.connect_timeout.get()).max().unwrap_or(std::time::Duration::from_secs(1));
    out.line(2, format!("proxy_connect_timeout {};", ms(connect)));
    match r.retries.as_ref().map_or(1, |x| x.attempts.max(1)) {
        1 => out.line(2, "proxy_next_upstream off;"),
        n => {
            out.line(2, "proxy_next_upstream error timeout http_502 http_503 http_504;");
            out.line(2, format!("proxy_next_upstream_tries {n};"));
        }
    }
    let body = r.max_body_size.map_or_else(|| "0".to_owned(), |b| b.get().to_string());
    out.line(2, format!("client_max_body_size {body};"));
    let mut sets = forwarded(tls);
    plugins(out, cfg.route_plugins(i), &mut sets);
    for (k, v) in &sets {
        out.line(2, format!("proxy_set_header {} {v};", quote(k)));
    }
    let upstream_tls = ups.first().and_then(|u| u.tls.as_ref());
    let scheme = if upstream_tls.is_some() { "https" } else { "http" };
    if let Some(t) = upstream_tls {
        out.line(2, "proxy_ssl_server_name on;");
        if let Some(sni) = &t.sni {
            out.line(2, format!("proxy_ssl_name {};", quote(sni)));
        }
        out.line(2, format!("proxy_ssl_verify {};", if t.insecure_skip_verify { "off" } else { "on" }));
        // Default: the system's trust store (Debian's bundle path).
        let ca = t.ca.as_deref().unwrap_or("/etc/ssl/certs/ca-certificates.crt");
        if !t.insecure_skip_verify {
            out.line(2, format!("proxy_ssl_trusted_certificate {};", quote(ca)));
        }
    }
    match &r.upstream {
        Some(u) => out.line(2, format!("proxy_pass {scheme}://{u};")),
        None => out.line(2, format!("proxy_pass {scheme}://$weir_split_{i};")),
    }
    out.line(1, "}");
}

/// `split_clients` for each canary split: a weighted random draw per request, as Weir does.
fn splits(out: &mut Rendered, spec: &ConfigSpec) {
    for (i, r) in spec.routes.iter().enumerate().filter(|(_, r)| r.upstream.is_none()) {
        out.about(Some(route_key(&r.name)));
        let live: Vec<_> = r.backends.iter().filter(|b| b.weight > 0).collect();
        let total: u64 = live.iter().map(|b| u64::from(b.weight)).sum();
        out.line(1, format!("split_clients \"${{request_id}}\" $weir_split_{i} {{"));
        for (n, b) in live.iter().enumerate() {
            if n + 1 == live.len() {
                out.line(2, format!("* {};", b.upstream));
            } else {
                // nginx refuses 0 %: a tiny share gets the smallest it takes.
                let pct = (u64::from(b.weight) * 10_000 / total.max(1)).max(1);
                out.line(2, format!("{}.{:02}% {};", pct / 100, pct % 100, b.upstream));
            }
        }
        out.line(1, "}");
    }
}

/// For each header a `request-id` plugin trusts: the client's id, or a new one.
fn request_id_maps(out: &mut Rendered, cfg: &ValidConfig) {
    let headers: BTreeSet<String> = (0..cfg.spec().routes.len())
        .flat_map(|i| cfg.route_plugins(i).iter())
        .filter_map(|(_, p)| match p {
            PluginConfig::RequestId(r) if r.trust_incoming => header_var(&r.header),
            _ => None,
        })
        .collect();
    for h in headers {
        out.line(1, format!("map {h} $weir_id{} {{ \"\" $request_id; default {h}; }}", &h[5..]));
    }
}

fn routing_map(out: &mut Rendered, spec: &ConfigSpec) {
    let fields = KeyFields::of(&spec.routes);
    out.about(None);
    out.line(1, format!("map {} $weir_route {{", fields.source()));
    out.line(2, "default @noroute;");
    for p in precedence::order(&spec.routes) {
        let r = &spec.routes[p.route];
        out.about(Some(route_key(&r.name)));
        out.line(2, format!("{} {};", quote_regex(&fields.regex(r, &p.host)), location(&r.name)));
    }
    out.about(None);
    out.line(1, "}");
}

fn certificates(out: &mut Rendered, l: &ListenerSpec, ctx: &Context, no: &mut Refusals) {
    let Some(tls) = &l.tls else { return };
    let key = ResourceKey::new(Kind::Listener, l.name.as_str());
    if tls.certificates.len() > 1 {
        no.refuse(&key, "tls.certificates", "the nginx adapter serves one certificate per listener");
    }
    let Some(c) = tls.certificates.first() else { return };
    for (what, value) in [("ssl_certificate", &c.cert), ("ssl_certificate_key", &c.key)] {
        let path = if weir_config::spec::CertificateSpec::is_inline(value) {
            let p = ctx.path(&format!("certs/{}.pem", crate::render::short_hash(value.as_bytes())));
            out.files.push((p.clone(), value.as_bytes().to_vec()));
            p
        } else {
            PathBuf::from(value)
        };
        out.line(2, format!("{what} {};", quote(&path.to_string_lossy())));
    }
}

fn server(out: &mut Rendered, cfg: &ValidConfig, l: &ListenerSpec, ctx: &Context, no: &mut Refusals) {
    let spec = cfg.spec();
    out.about(Some(ResourceKey::new(Kind::Listener, l.name.as_str())));
    out.line(1, "server {");
    let ssl = if l.tls.is_some() { " ssl" } else { "" };
    out.line(2, format!("listen {}{ssl} backlog=4096;", l.address));
    out.line(2, "server_name _;");
    certificates(out, l, ctx, no);
    let lim = &l.limits;
    out.line(2, format!("client_header_timeout {};", ms(lim.header_read_timeout.get())));
    out.line(2, format!("keepalive_timeout {};", ms(lim.idle_timeout.get())));
    out.line(2, format!("large_client_header_buffers 4 {};", lim.max_header_size.get().max(1024)));
    out.line(2, "location / {");
    out.line(3, "error_page 418 = $weir_route;");
    out.line(3, "return 418;");
    out.line(2, "}");
    out.line(2, "location @noroute {");
    out.line(3, "default_type application/json;");
    out.line(3, "return 404 '{\"error\":\"no route matches this request\"}';");
    out.line(2, "}");
    for (i, r) in spec.routes.iter().enumerate() {
        let mut sub = Rendered::default();
        route(&mut sub, spec, i, r, cfg, l.tls.is_some());
        indent_into(out, &sub, 1);
    }
    out.about(None);
    out.line(1, "}");
}

/// Appends `sub`'s lines one level deeper, keeping their owners.
fn indent_into(out: &mut Rendered, sub: &Rendered, depth: usize) {
    for (n, line) in sub.text().lines().enumerate() {
        out.about(sub.owner_of(n + 1).cloned());
        out.line(depth, line);
    }
}

fn status(out: &mut Rendered, addr: SocketAddr) {
    out.about(None);
    out.line(1, "server {");
    out.line(2, format!("listen {addr};"));
    out.line(2, "location = /weir-status { return 200 \"@HASH@\"; }");
    out.line(2, "location = /stub_status { stub_status; }");
    out.line(1, "}");
}

fn head(out: &mut Rendered, ctx: &Context) {
    out.line(0, "# Rendered by `weir adapter nginx` from the control plane's config; do not edit:");
    out.line(0, "# the next revision replaces this file.");
    out.line(0, "daemon on;");
    match ctx.workers {
        Some(n) => out.line(0, format!("worker_processes {n};")),
        None => out.line(0, "worker_processes auto;"),
    }
    out.line(0, format!("pid {};", quote(&ctx.path("nginx.pid").to_string_lossy())));
    out.line(0, format!("error_log {} warn;", quote(&ctx.path("error.log").to_string_lossy())));
    out.line(0, "worker_shutdown_timeout 30s;");
    out.line(0, "events { worker_connections 4096; }");
    out.line(0, "http {");
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        out.line(1, format!("{t}_temp_path {};", quote(&ctx.path(&format!("tmp/{t}")).to_string_lossy())));
    }
    out.line(1, "access_log off;");
    out.line(1, "server_tokens off;");
    out.line(1, "proxy_http_version 1.1;");
    out.line(1, "proxy_buffering off;");
    out.line(1, "proxy_request_buffering off;");
    out.line(1, "geo $weir_dollar { default \"$\"; }");
    out.line(1, "map $request_uri $weir_path { \"~^(?<p>[^?]*)\" $p; }");
    out.line(1, "log_format weir_json escape=json '{\"time\":\"$time_iso8601\",\"method\":\"$request_method\",\"path\":\"$uri\",\"status\":$status,\"duration_ms\":$request_time,\"upstream\":\"$upstream_addr\"}';");
}

impl Nginx {
    /// Renders `cfg` (see the module doc).
    pub fn render_config(cfg: &ValidConfig, ctx: &Context) -> Result<Rendered, Vec<v1::ErrorDetail>> {
        let spec = cfg.spec();
        let mut no = Refusals::default();
        for u in &spec.upstreams {
            refuse_upstream(u, &mut no);
        }
        for (i, r) in spec.routes.iter().enumerate() {
            refuse_route(r, cfg.route_plugins(i), &mut no);
        }
        let mut out = Rendered::default();
        head(&mut out, ctx);
        request_id_maps(&mut out, cfg);
        routing_map(&mut out, spec);
        splits(&mut out, spec);
        for u in &spec.upstreams {
            upstream(&mut out, cfg, u);
        }
        for l in &spec.listeners {
            server(&mut out, cfg, l, ctx, &mut no);
        }
        status(&mut out, ctx.status);
        out.about(None);
        out.line(0, "}");
        no.or(out)
    }
}

impl Proxy for Nginx {
    const KIND: &'static str = "nginx";
    const FILE: &'static str = "nginx.conf";
    const FEATURES: &'static [&'static str] = &[
        "route.hosts",
        "route.path",
        "route.methods",
        "route.headers",
        "route.query",
        "route.backends",
        "route.timeout",
        "route.retries",
        "route.max_body_size",
        "balancing.round_robin",
        "balancing.weighted_round_robin",
        "balancing.least_connections",
        "balancing.consistent_hash",
        "balancing.p2c_ewma~random-two-least-conn",
        "health.passive",
        "pool.keepalive",
        "listener.tls.one-certificate",
        "upstream.tls",
        "discovery.registry",
        "plugin.headers",
        "plugin.ip-restriction",
        "plugin.request-id",
        "plugin.access-log.file",
    ];

    fn render(&self, cfg: &ValidConfig, ctx: &Context) -> Result<Rendered, Vec<v1::ErrorDetail>> {
        Self::render_config(cfg, ctx)
    }

    fn binary(&self) -> &Path {
        &self.binary
    }

    fn check(&self, file: &Path, ctx: &Context) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("-t").arg("-q").arg("-c").arg(file).arg("-p").arg(&ctx.dir).arg("-e").arg(ctx.path("error.log"));
        c
    }

    fn start(&self, ctx: &Context) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("-c").arg(ctx.path(Self::FILE)).arg("-p").arg(&ctx.dir).arg("-e").arg(ctx.path("error.log"));
        c
    }

    fn reload_signal(&self) -> rustix::process::Signal {
        rustix::process::Signal::HUP
    }

    /// An old worker stops accepting once it shows `worker process is shutting down`.
    fn still_accepting(&self, pid: u32) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| !String::from_utf8_lossy(&c).contains("shutting down"))
    }

    /// `nginx: [emerg] unknown directive "x" in /dir/nginx.conf.new:12`.
    fn check_errors(&self, output: &str) -> Vec<(Option<usize>, String)> {
        output
            .lines()
            .filter(|l| l.contains("[emerg]") || l.contains("[alert]") || l.contains("[crit]"))
            .map(|l| {
                let msg = l.split_once("] ").map_or(l, |(_, m)| m).trim();
                let line = msg.rsplit_once(':').and_then(|(_, n)| n.trim().parse().ok());
                let msg = match line {
                    Some(_) => msg.rsplit_once(" in ").map_or(msg, |(m, _)| m),
                    None => msg,
                };
                (line, msg.to_owned())
            })
            .collect()
    }

    async fn counters(&self, ctx: &Context) -> Option<(u64, u64)> {
        let body = crate::driven::get(ctx.status, "/stub_status").await?;
        // "Active connections: 1 \nserver accepts handled requests\n 7 7 9 \n…"
        let line = body.lines().nth(2)?;
        let requests = line.split_whitespace().nth(2)?.parse().ok()?;
        Some((requests, 0))
    }
}
