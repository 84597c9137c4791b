//! etcd on loopback for the tests: one member or a cluster, every member killed on drop.
//! Members can be killed, paused and started again on their data, the leader found, and the
//! history compacted (through etcd's JSON gateway, with curl).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// TLS for clients: the member's certificate and key, and the CA both sides trust (paths);
/// clients must show a certificate.
pub struct EtcdTls<'a> {
    pub cert: &'a str,
    pub key: &'a str,
    pub ca: &'a str,
}

/// One member: how to start it, and the process while it runs.
pub struct Member {
    pub name: String,
    pub url: String,
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("member running").id()
    }
}

/// A running etcd.
pub struct Etcd {
    pub members: Vec<Member>,
    /// The first member's client URL.
    pub url: String,
    tls: Option<(String, String, String)>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd {
    /// One member in `dir`.
    pub fn start(dir: &Path) -> Etcd {
        Self::start_with(dir, 1, None)
    }

    /// `n` members in `dir`, serving clients as `tls` says when given; retries on other ports
    /// if one was taken meanwhile.
    pub fn start_with(dir: &Path, n: usize, tls: Option<&EtcdTls<'_>>) -> Etcd {
        for attempt in 0..3 {
            let mut etcd = Self::spawn(&dir.join(format!("etcd-{attempt}")), n, tls);
            if (0..n).all(|i| etcd.wait_healthy(i, Duration::from_secs(20))) {
                return etcd;
            }
            drop(etcd);
        }
        panic!("etcd did not start");
    }

    fn spawn(dir: &Path, n: usize, tls: Option<&EtcdTls<'_>>) -> Etcd {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let (name, url, peer_url) =
                    (format!("m{i}"), format!("{scheme}://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
                let data: PathBuf = dir.join(&name);
                let mut args: Vec<String> =
                    vec!["--name".into(), name.clone(), "--data-dir".into(), data.to_string_lossy().into_owned()];
                for (flag, v) in [
                    ("--listen-client-urls", &url),
                    ("--advertise-client-urls", &url),
                    ("--listen-peer-urls", &peer_url),
                    ("--initial-advertise-peer-urls", &peer_url),
                    ("--initial-cluster", &cluster.join(",")),
                ] {
                    args.extend([flag.to_owned(), v.clone()]);
                }
                if let Some(t) = tls {
                    args.extend(
                        ["--cert-file", t.cert, "--key-file", t.key, "--trusted-ca-file", t.ca].map(String::from),
                    );
                    args.push("--client-cert-auth".into());
                }
                Member { name, url, args, child: None }
            })
            .collect();
        let tls = tls.map(|t| (t.cert.to_owned(), t.key.to_owned(), t.ca.to_owned()));
        let mut etcd = Etcd { url: String::new(), members, tls };
        etcd.url = etcd.members[0].url.clone();
        for i in 0..n {
            etcd.restart(i);
        }
        etcd
    }

    /// Every member's client URL, comma-separated (as `--store etcd:` takes them).
    pub fn urls(&self) -> String {
        self.members.iter().map(|m| m.url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Starts member `i` (again, on its data).
    pub fn restart(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} is running", m.name);
        let child = Command::new("etcd")
            .args(&m.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (apt-get install etcd-server; scripts/deps.sh does)");
        m.child = Some(child);
    }

    /// Kills member `i` (SIGKILL), if it runs.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until member `i` says it is healthy (it has a leader); false after `within`.
    pub fn wait_healthy(&mut self, i: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let exited = self.members[i].child.as_mut().is_none_or(|c| c.try_wait().unwrap().is_some());
            if exited {
                return false;
            }
            let out = self.curl(&self.members[i].url, "/health", None);
            if out.contains("\"health\":\"true\"") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Runs curl on `url` + `path` (a POST of `body` when given); its output, or "".
    fn curl(&self, url: &str, path: &str, body: Option<&str>) -> String {
        let mut curl = Command::new("curl");
        if let Some((cert, key, ca)) = &self.tls {
            curl.args(["--cacert", ca, "--cert", cert, "--key", key]);
        }
        if let Some(b) = body {
            curl.args(["-X", "POST", "-d", b]);
        }
        let out = curl.args(["-s", "--max-time", "2", &format!("{url}{path}")]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }

    fn post(&self, path: &str, body: &str) -> serde_json::Value {
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.curl(&m.url, path, Some(body)))
                && v.get("header").is_some()
            {
                return v;
            }
        }
        panic!("no etcd member answered {path}");
    }

    /// The index of the member that leads now.
    pub fn leader(&self) -> usize {
        let leader = self.post("/v3/maintenance/status", "{}")["leader"].as_str().map(str::to_owned);
        for (i, m) in self.members.iter().enumerate().filter(|(_, m)| m.child.is_some()) {
            let v: serde_json::Value =
                serde_json::from_str(&self.curl(&m.url, "/v3/maintenance/status", Some("{}"))).unwrap_or_default();
            if v["header"]["member_id"].as_str().map(str::to_owned) == leader {
                return i;
            }
        }
        panic!("no running member leads");
    }

    /// Compacts the history up to the current revision; returns that revision.
    pub fn compact(&self) -> i64 {
        // A range over a key that is never written: only the header (the current revision) matters.
        let rev = self.post("/v3/kv/range", r#"{"key":"X19jb21wYWN0X18="}"#)["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse::<i64>().ok())
            .expect("etcd's revision");
        self.post("/v3/kv/compaction", &format!(r#"{{"revision":"{rev}","physical":true}}"#));
        rev
    }
}
