//! Driving a proxy: a revision's config rendered, checked by the proxy itself, swapped in
//! atomically and reloaded gracefully, and reported applied only once the proxy serves it.
//!
//! Owns: the [`Target`] an adapter hands to the sync code. Which config a proxy serves is
//! known from its status listener (the adapter's own loopback endpoint in the rendered
//! config, answering the config's hash), never assumed: an unchanged config is not reloaded
//! (an adapter restart re-syncs without touching the proxy), and a reload that the proxy did
//! not take is a NACK, with the previous file put back.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weir_config::ValidConfig;
use weir_config::assembly::Changed;
use weir_gateway::sync::Target;
use weir_proto::v1;

use crate::{Context, Proxy};

/// How long a reloaded or started proxy may take to serve the new config.
const SERVE_WITHIN: Duration = Duration::from_secs(10);

/// A proxy driven by an adapter.
#[derive(Debug)]
pub struct Driven<P> {
    proxy: P,
    ctx: Context,
    /// Requests and 5xx answers at the previous report, and when.
    prev: Option<(u64, u64, Instant)>,
    /// The proxy's version line (`nginx/1.22.1`).
    version: String,
}

/// Why a revision did not become what the proxy serves.
#[derive(Debug, thiserror::Error)]
enum DriveError {
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot run {binary}: {source} (is it installed? see --{kind}-bin)")]
    Run { binary: String, kind: &'static str, source: std::io::Error },
    #[error("{0}")]
    Proxy(String),
}

impl DriveError {
    fn detail(&self, file: &str) -> v1::ErrorDetail {
        v1::ErrorDetail { path: file.to_owned(), message: self.to_string() }
    }
}

impl<P: Proxy> Driven<P> {
    /// Drives `proxy` from `ctx.dir` (created if missing).
    pub fn new(proxy: P, ctx: Context) -> std::io::Result<Self> {
        std::fs::create_dir_all(ctx.path("certs"))?;
        std::fs::create_dir_all(ctx.path("tmp"))?;
        let version = version_of(proxy.binary()).unwrap_or_else(|| P::KIND.to_owned());
        Ok(Self { proxy, ctx, prev: None, version })
    }

    /// Whether the proxy answers its status listener with `hash`.
    async fn serves(&self, hash: &str) -> bool {
        get(self.ctx.status, "/weir-status").await.is_some_and(|h| h.trim() == hash)
    }

    fn pid(&self) -> Option<rustix::process::Pid> {
        let file = self.ctx.path(&format!("{}.pid", P::KIND));
        let pid: i32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        let pid = rustix::process::Pid::from_raw(pid)?;
        rustix::process::test_kill_process(pid).is_ok().then_some(pid)
    }

    /// Checks `text` with the proxy; errors name the resource of the line they are about.
    async fn check(&self, new: &Path, rendered: &crate::render::Rendered) -> Result<(), Vec<v1::ErrorDetail>> {
        let out = tokio::process::Command::from(self.proxy.check(new, &self.ctx)).output().await.map_err(|e| {
            let err = DriveError::Run { binary: self.proxy.binary().display().to_string(), kind: P::KIND, source: e };
            vec![err.detail(P::FILE)]
        })?;
        if out.status.success() {
            return Ok(());
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        let mut errs: Vec<v1::ErrorDetail> = self
            .proxy
            .check_errors(&text)
            .into_iter()
            .map(|(line, msg)| v1::ErrorDetail {
                path: line.and_then(|n| rendered.owner_of(n)).map_or_else(|| P::FILE.to_owned(), ToString::to_string),
                message: format!("{} refused the rendered config: {msg}", P::KIND),
            })
            .collect();
        if errs.is_empty() {
            errs.push(
                DriveError::Proxy(format!("{} refused the rendered config: {}", P::KIND, text.trim())).detail(P::FILE),
            );
        }
        Err(errs)
    }

    /// Signals the running proxy to reload, or starts it.
    async fn reload_or_start(&self) -> Result<&'static str, DriveError> {
        if let Some(pid) = self.pid() {
            rustix::process::kill_process(pid, self.proxy.reload_signal())
                .map_err(|e| DriveError::Proxy(format!("cannot signal {} (pid {pid:?}): {e}", P::KIND)))?;
            return Ok("reloaded");
        }
        let out = tokio::process::Command::from(self.proxy.start(&self.ctx)).output().await.map_err(|e| {
            DriveError::Run { binary: self.proxy.binary().display().to_string(), kind: P::KIND, source: e }
        })?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(DriveError::Proxy(format!("{} did not start: {why}", P::KIND)));
        }
        Ok("started")
    }

    /// The proxy's worker processes (children of its master) now.
    fn workers(&self) -> Vec<u32> {
        self.pid().map_or_else(Vec::new, |p| children(p.as_raw_nonzero().get().unsigned_abs()))
    }

    /// Waits until new connections get the config `hash` only: three answers in a row from
    /// it, and none of the workers from before the reload still accepting.
    async fn wait_serving(&self, hash: &str, old_workers: &[u32]) -> bool {
        let deadline = Instant::now() + SERVE_WITHIN;
        let mut in_a_row = 0;
        while Instant::now() < deadline {
            in_a_row = if self.serves(hash).await { in_a_row + 1 } else { 0 };
            if in_a_row >= 3 && old_workers.iter().all(|&pid| !self.proxy.still_accepting(pid)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(if in_a_row > 0 { 2 } else { 10 })).await;
        }
        false
    }

    /// Writes the files and the config beside the live one, checks it, swaps it in.
    async fn swap(&self, rendered: &crate::render::Rendered, text: &str) -> Result<(), Vec<v1::ErrorDetail>> {
        for (path, bytes) in &rendered.files {
            if !path.exists() {
                write_atomic(path, bytes).map_err(|e| vec![e.detail(P::FILE)])?;
            }
        }
        let new = self.ctx.path(&format!("{}.new", P::FILE));
        write_atomic(&new, text.as_bytes()).map_err(|e| vec![e.detail(P::FILE)])?;
        if let Err(errs) = self.check(&new, rendered).await {
            // Kept for whoever reads the NACK; the next render replaces it.
            let _ = std::fs::rename(&new, self.ctx.path(&format!("{}.rejected", P::FILE)));
            return Err(errs);
        }
        let live = self.ctx.path(P::FILE);
        if live.exists() {
            let _ = std::fs::copy(&live, self.ctx.path(&format!("{}.prev", P::FILE)));
        }
        std::fs::rename(&new, &live)
            .map_err(|e| vec![DriveError::Write { path: live.display().to_string(), source: e }.detail(P::FILE)])
    }

    /// Puts the previous file back after a reload that did not take.
    fn restore(&self) {
        let prev = self.ctx.path(&format!("{}.prev", P::FILE));
        if prev.exists() {
            let _ = std::fs::rename(prev, self.ctx.path(P::FILE));
        }
    }
}

impl<P: Proxy> Target for Driven<P> {
    fn describe(&self, d: &mut v1::Register) {
        d.kind = P::KIND.into();
        d.version = format!("{} (weir adapter {})", self.version, env!("CARGO_PKG_VERSION"));
        d.features = P::FEATURES.iter().map(|f| (*f).to_owned()).collect();
        d.protocols = vec!["http1".into(), "tls".into()];
        d.plugins = weir_config::plugins::BUILTINS
            .iter()
            .filter(|b| P::FEATURES.iter().any(|f| f.strip_prefix("plugin.").is_some_and(|p| p.starts_with(b.name))))
            .map(|b| v1::PluginCapability {
                name: b.name.into(),
                phase: b.phase.into(),
                config_schema: b.schema().to_string(),
            })
            .collect();
    }

    async fn apply(&mut self, cfg: ValidConfig, revision: u64, _changed: &Changed) -> Result<(), Vec<v1::ErrorDetail>> {
        let rendered = self.proxy.render(&cfg, &self.ctx)?;
        let hash = rendered.hash();
        if self.serves(&hash).await {
            tracing::info!(revision, config = %hash, "{} already serves this config; not reloading", P::KIND);
            return Ok(());
        }
        let text = rendered.text().replace("@HASH@", &hash);
        self.swap(&rendered, &text).await?;
        let t0 = Instant::now();
        let old_workers = self.workers();
        let how = self.reload_or_start().await.map_err(|e| {
            self.restore();
            vec![e.detail(P::FILE)]
        })?;
        if !self.wait_serving(&hash, &old_workers).await && !self.serves(&hash).await {
            self.restore();
            let log = self.ctx.path("error.log");
            let why = format!(
                "{} was {how} but did not serve the new config within {SERVE_WITHIN:?}; the previous file is back (see {})",
                P::KIND,
                log.display()
            );
            return Err(vec![DriveError::Proxy(why).detail(P::FILE)]);
        }
        tracing::info!(revision, config = %hash, serving_after_ms = t0.elapsed().as_millis() as u64, "{} {how}", P::KIND);
        Ok(())
    }

    async fn report(&mut self) -> v1::RuntimeReport {
        let Some((requests, errors)) = self.proxy.counters(&self.ctx).await else {
            return v1::RuntimeReport::default();
        };
        let now = Instant::now();
        let mut r = v1::RuntimeReport { requests_total: requests, ..v1::RuntimeReport::default() };
        if let Some((pr, pe, at)) = self.prev {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            let reqs = requests.saturating_sub(pr);
            r.requests_per_second = reqs as f64 / secs;
            r.error_rate = if reqs == 0 { 0.0 } else { errors.saturating_sub(pe) as f64 / reqs as f64 };
        }
        self.prev = Some((requests, errors, now));
        r
    }
}

/// Writes owner-only (pushed private keys land here; the proxies' masters read as the owner)
/// and renames, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DriveError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let err = |e| DriveError::Write { path: path.display().to_string(), source: e };
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

/// `nginx -v` / `haproxy -v`, first line, as `nginx/1.22.1`.
fn version_of(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary).arg("-v").output().ok()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let line = text.lines().next()?.trim();
    Some(
        line.strip_prefix("nginx version: ")
            .map_or_else(|| line.split(" - ").next().unwrap_or(line).to_owned(), String::from),
    )
}

/// The processes whose parent is `master` (a proxy's workers), in pid order.
pub fn children(master: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut kids: Vec<u32> = dir
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            (ppid == master).then_some(pid)
        })
        .collect();
    kids.sort_unstable();
    kids
}

/// The body of a 200 answer to `GET path` on the proxy's status listener (one second at most).
pub async fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let call = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: weir-adapter\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.split(' ').nth(1).filter(|c| *c == "200")?;
        Some(body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), call).await.ok()?
}
