//! Fleet harness: real `weir control-plane` and `weir gateway` processes, `weir ctl`, and a
//! JSON client for the admin API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A `weir` process whose stderr is collected line by line.
pub struct Proc {
    pub child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(args: &[&str], cwd: &Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let tag = args.first().copied().unwrap_or("").to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("WEIR_TEST_LOGS").is_some() {
                    eprintln!("{tag}| {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, logs }
    }

    /// Waits for a log line containing `needle` (searching from line `from`); returns it.
    pub fn wait_line_from(&self, from: usize, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.logs.lock().unwrap().iter().skip(from).find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line {needle:?} within {within:?}:\n{}",
                self.logs.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_line(&self, needle: &str, within: Duration) -> String {
        self.wait_line_from(0, needle, within)
    }

    pub fn log_len(&self) -> usize {
        self.logs.lock().unwrap().len()
    }

    pub fn wait_addr(&self, needle: &str) -> SocketAddr {
        let line = self.wait_line(needle, Duration::from_secs(30));
        super::field(&line, "address").unwrap().parse().unwrap()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running control plane.
pub struct Cp {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub api: SocketAddr,
}

impl Cp {
    /// Starts one with its store in `dir`, gRPC on `grpc_port` (0: any).
    pub fn start(dir: &Path, grpc_port: u16, extra: &[&str]) -> Cp {
        let grpc = format!("127.0.0.1:{grpc_port}");
        let mut args = vec!["control-plane", "--grpc-address", &grpc, "--admin-address", "127.0.0.1:0"];
        if !extra.contains(&"--store") {
            args.extend(["--store", "redb:cp.redb"]);
        }
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args, dir);
        let grpc = proc.wait_addr("grpc bound");
        let api = proc.wait_addr("admin api bound");
        Cp { proc, grpc, api }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn server(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Runs `weir ctl --server … ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("ctl")
            .arg("--server")
            .arg(self.server())
            .args(args)
            .output()
            .unwrap()
    }

    /// `weir ctl apply -f` with `yaml`, asserting success; returns stdout.
    pub fn apply(&self, dir: &Path, yaml: &str) -> String {
        let f = dir.join(format!("apply-{}.yaml", std::process::id() as u128 * 1000 + rand_suffix()));
        std::fs::write(&f, yaml).unwrap();
        let out = self.ctl(&["apply", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "ctl apply failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Applies one upstream `app` on 127.0.0.1:`port` and one catch-all route `route` to it.
    pub fn apply_one_route(&self, dir: &Path, route: &str, port: u16) -> String {
        self.apply(
            dir,
            &format!(
                "upstreams:\n- {{ name: app, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {port} }}] }} }}\nroutes:\n- {{ name: {route}, upstream: app }}\n"
            ),
        )
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        call(self.api, method, path, body, None).await
    }

    /// The names of the registrations it stores, sorted.
    pub async fn registrations(&self) -> Vec<String> {
        let (_, v) = self.call("GET", "/api/v1/registrations", None).await;
        let mut names: Vec<String> =
            v.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        names
    }

    pub async fn revision(&self) -> u64 {
        self.call("GET", "/api/v1/revision", None).await.1["revision"].as_u64().unwrap()
    }

    pub async fn gateway(&self, id: &str) -> Value {
        let (_, v) = self.call("GET", "/api/v1/gateways", None).await;
        v.as_array().unwrap().iter().find(|g| g["id"] == id).cloned().unwrap_or(Value::Null)
    }
}

fn rand_suffix() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u128::from(N.fetch_add(1, Ordering::Relaxed))
}

/// One JSON call to an admin API.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap())).unwrap_or_default();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cp")
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let rsp = send.send_request(req.body(Full::new(bytes)).unwrap()).await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A running `weir gateway`.
pub struct Gw {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub id: String,
    pub cwd: PathBuf,
}

impl Gw {
    /// Starts gateway `id` in `cwd` (its state dir is `cwd/state`), listening on `listen`.
    pub fn start(id: &str, cp_urls: &str, cwd: &Path, listen: &str) -> Gw {
        Self::start_with(id, cp_urls, cwd, listen, &[])
    }

    pub fn start_with(id: &str, cp_urls: &str, cwd: &Path, listen: &str, extra: &[&str]) -> Gw {
        std::fs::create_dir_all(cwd).unwrap();
        let mut args = vec!["gateway", "--id", id, "--control-plane", cp_urls, "--listen", listen];
        args.extend(["--admin-address", "127.0.0.1:0", "--state-dir", "state", "--workers", "1"]);
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args, cwd);
        let admin = proc.wait_addr("admin bound");
        Gw { proc, admin, id: id.to_owned(), cwd: cwd.to_owned() }
    }

    /// The client listener's address, once a config bound it.
    pub fn listen_addr(&self) -> SocketAddr {
        let line = self.proc.wait_line("listener bound", Duration::from_secs(30));
        super::field(&line, "address").unwrap().parse().unwrap()
    }

    /// Waits until `path` answers `want` (status 200 and body), polling every 5 ms.
    pub async fn wait_serves(&self, addr: SocketAddr, path: &str, want: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let (status, body) = super::get(addr, path, &[]).await;
            if status == 200 && body == want.as_bytes() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{}: {path} still answers {status} {:?} after {within:?}",
                self.id,
                String::from_utf8_lossy(&body)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
