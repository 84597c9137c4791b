//! A real OTLP/gRPC receiver for a test (tests/python/otlp_receiver.py, on grpcio and
//! opentelemetry-proto): the spans a gateway exports, as JSON.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The receiver process and the spans it has printed.
pub struct Receiver {
    child: Child,
    pub port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    pub fn start() -> Receiver {
        let python = std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/otlp_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with grpcio and opentelemetry-proto (scripts/deps.sh installs them)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let port = first.strip_prefix("port ").and_then(|p| p.parse().ok()).unwrap_or_else(|| {
            panic!("the OTLP receiver did not start ({first:?}): pip install grpcio opentelemetry-proto")
        });
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Receiver { child, port, spans }
    }

    /// Waits until `n` spans have arrived, then returns them all.
    pub async fn wait_spans(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.spans.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} of {n} spans arrived: {got:#?}", got.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The spans so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.spans.lock().unwrap().len()
    }
}
