//! Test harness: the real `weir` binary on port 0, real upstream servers, real clients.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod etcd;
pub mod fleet;
pub mod load;
pub mod otlp;
pub mod pki;
pub mod plugins;
pub mod raw_http;
pub mod redis;

pub type Body = BoxBody<Bytes, Infallible>;
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

pub fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

/// A running `weir standalone`.
pub struct Weir {
    pub proc: fleet::Proc,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn field(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    Some(line[at..].split_whitespace().next()?.trim_matches('"').to_owned())
}

impl Weir {
    /// Starts Weir on `yaml`, whose listener and admin use port 0.
    pub fn start(yaml: &str) -> Weir {
        Self::start_with(yaml, &[])
    }

    pub fn start_with(yaml: &str, extra: &[&str]) -> Weir {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("weir.yaml");
        std::fs::write(&config, yaml).unwrap();
        let config_arg = config.display().to_string();
        let mut args = vec!["standalone", "-c", config_arg.as_str()];
        if !extra.contains(&"--workers") {
            args.extend(["--workers", "2"]);
        }
        args.extend_from_slice(extra);
        let proc = fleet::Proc::spawn(&args, dir.path());
        let addr = proc.wait_addr("listener bound");
        let admin = proc.wait_addr("admin bound");
        Weir { proc, addr, admin, config, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Rewrites the config file atomically (write + rename, as editors do).
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub async fn stats(&self) -> serde_json::Value {
        let (status, body) = get(self.admin, "/stats", &[]).await;
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    pub async fn version(&self) -> u64 {
        self.stats().await["version"].as_u64().unwrap()
    }

    /// Waits until the running config version is at least `v`.
    pub async fn wait_version(&self, v: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.version().await < v {
            assert!(tokio::time::Instant::now() < deadline, "version {v} not applied within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines the process logged, for failure messages.
    pub fn logs(&self) -> String {
        let logs = self.proc.logs.lock().unwrap();
        logs.iter().skip(logs.len().saturating_sub(20)).cloned().collect::<Vec<_>>().join("\n")
    }

    pub fn logs_contain(&self, needle: &str) -> bool {
        self.proc.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits up to `within` for a log line containing `needle`; the lines are read from the
    /// child's pipe by another thread, so a line may land just after the event it reports.
    pub async fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.logs_contain(needle) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn sigterm(&self) {
        self.proc.signal("TERM");
    }
}

/// An in-process upstream HTTP/1.1 server on port 0.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests served.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub conns: Arc<AtomicUsize>,
    /// Connections open right now.
    pub open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

struct OpenGuard(Arc<AtomicUsize>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub async fn upstream_fn<F, Fut>(f: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    upstream_fn_at("127.0.0.1:0".parse().unwrap(), f).await
}

/// [`upstream_fn`] on `addr` (another loopback address, a port of your choosing).
pub async fn upstream_fn_at<F, Fut>(addr: SocketAddr, f: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |r| Box::pin(f(r)));
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (h, c, o) = (hits.clone(), conns.clone(), open.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let guard = OpenGuard(o.clone());
            let (handler, hits) = (handler.clone(), h.clone());
            tokio::spawn(async move {
                let _guard = guard;
                let svc = hyper::service::service_fn(move |req| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream { addr, hits, conns, open, task }
}

/// An upstream that holds every request until the returned gate closes, then answers `body`.
/// Closing a semaphore releases its waiters and makes later `acquire`s return at once, so no
/// wake-up can be lost (unlike `Notify::notify_waiters`).
pub async fn gated(body: &'static str) -> (Upstream, Arc<tokio::sync::Semaphore>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let up = upstream_fn(move |_| {
        let gate = g.clone();
        async move {
            let _ = gate.acquire().await;
            Response::new(full(body))
        }
    })
    .await;
    (up, gate)
}

/// An upstream that answers its `name` and echoes request headers as `x-seen-*`.
pub async fn named(name: &'static str) -> Upstream {
    named_at(name, "127.0.0.1:0".parse().unwrap()).await
}

/// [`named`] on `addr`.
pub async fn named_at(name: &'static str, addr: SocketAddr) -> Upstream {
    upstream_fn_at(addr, move |req: Request<Incoming>| async move {
        let mut rsp = Response::new(full(name));
        for (k, v) in req.headers() {
            if let Ok(n) = http::HeaderName::try_from(format!("x-seen-{k}")) {
                rsp.headers_mut().append(n, v.clone());
            }
        }
        rsp
    })
    .await
}

/// A port with nothing listening on it, for as long as the test process runs: connecting to it
/// is refused.
///
/// The port is held by a TCP socket that is bound but never listens. Binding and dropping a
/// listener would free the port, and another test (or process) could then take it and answer.
/// The sockets are kept in a static until the process exits: a few per test process, on
/// purpose.
pub fn dead_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    // Creating and binding a `TcpSocket` is synchronous and needs no runtime.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let port = socket.local_addr().unwrap().port();
    HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(socket);
    port
}

/// One request on a fresh connection; returns status and body.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Bytes) {
    let rsp = request(addr, "GET", path, headers).await;
    (rsp.status().as_u16(), rsp.into_body().collect().await.unwrap().to_bytes())
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut c = Client::connect(addr).await;
    c.send(method, path, headers).await
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
        tokio::spawn(conn);
        Client { sender, addr }
    }

    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
        self.try_send(method, path, headers, Bytes::new()).await.unwrap()
    }

    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> hyper::Result<Response<Incoming>> {
        let mut b = Request::builder().method(method).uri(path).header("host", self.addr.to_string());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.sender.ready().await?;
        self.sender.send_request(b.body(Full::new(body)).unwrap()).await
    }

    /// GET and read the whole body as a string.
    pub async fn text(&mut self, path: &str) -> (u16, String) {
        let rsp = self.send("GET", path, &[]).await;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Sends raw bytes and reads until the peer closes or `until` appears.
pub async fn raw(addr: SocketAddr, bytes: &[u8], until: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until(&mut s, until).await
}

pub async fn read_until(s: &mut TcpStream, until: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&out).contains(until) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A minimal config: one listener on port 0, admin on port 0, `routes` and `upstreams` YAML.
pub fn config(routes: &str, upstreams: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - {{ name: public, address: 127.0.0.1:0 }}\nroutes:\n{routes}\nupstreams:\n{upstreams}\n"
    )
}

/// YAML for an upstream named `name` over `ports`, with extra lines indented under it.
pub fn upstream_yaml(name: &str, policy: &str, ports: &[(u16, u32)], extra: &str) -> String {
    let eps: Vec<String> =
        ports.iter().map(|(p, w)| format!("{{ address: 127.0.0.1, port: {p}, weight: {w} }}")).collect();
    format!(
        "  - name: {name}\n    load_balancer:\n      policy: {policy}\n      endpoints: [{}]\n{extra}",
        eps.join(", ")
    )
}

/// Records the most connections an upstream had open at once, sampling every 5 ms.
pub struct PeakWatch {
    peak: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakWatch {
    pub fn start(open: Arc<AtomicUsize>) -> PeakWatch {
        let peak = Arc::new(AtomicUsize::new(0));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                p.fetch_max(open.load(Ordering::SeqCst), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        PeakWatch { peak, task }
    }

    /// Stops sampling and returns the peak.
    pub fn stop(self) -> usize {
        self.task.abort();
        self.peak.load(Ordering::SeqCst)
    }
}

/// A rustls client config (aws-lc-rs, safe defaults) that trusts only `root`.
pub fn tls_client_config(root: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Waits until `f` holds, checking every 50 ms; fails naming `what` after `within`.
pub async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, within: Duration, mut f: impl FnMut() -> F) {
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The interpreter for the Python clients (`WEIR_PYTHON`, else `python3`).
pub fn python() -> std::process::Command {
    std::process::Command::new(std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into()))
}

/// The path of a file under this crate's `tests/python`, and of the repository's `.proto` dir.
pub fn python_paths(script: &str) -> (String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    (format!("{root}/tests/python/{script}"), format!("{root}/../weir-proto/proto"))
}

/// Runs `tests/python/SCRIPT ARGS…` off the async threads; asserts it succeeded and returns
/// the JSON line it printed.
pub async fn run_python(script: &str, args: Vec<String>) -> serde_json::Value {
    let (path, _) = python_paths(script);
    let out = tokio::task::spawn_blocking(move || {
        python().arg(&path).args(&args).output().expect("python3 runs (scripts/deps.sh installs what it needs)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"))
}
