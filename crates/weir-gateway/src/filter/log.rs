//! `access-log`: one JSON line per request, written off the request path.
//!
//! The request path only formats the line and `try_send`s it into a bounded channel; a task
//! writes to stdout or a file, or POSTs batches to a collector. When the channel is full (the
//! sink is down or slow) the entry is dropped and counted in
//! `weir_plugin_errors_total{plugin="access-log"}`: logging never blocks or fails a request.

use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use weir_config::plugins::{AccessLogConfig, AccessLogSink};

/// What one access-log line says.
#[derive(Debug, serde::Serialize)]
pub struct LogEntry<'a> {
    /// RFC 3339 UTC.
    pub time: String,
    /// Route name, empty when none matched.
    pub route: &'a str,
    /// Upstream name.
    pub upstream: Option<&'a str>,
    /// `host:port` of the endpoint that answered.
    pub endpoint: Option<&'a str>,
    /// Method.
    pub method: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    /// Status sent.
    pub status: u16,
    /// Time to response headers, in ms.
    pub latency_ms: f64,
    /// Request body length when declared.
    pub bytes_in: u64,
    /// Response body length when declared.
    pub bytes_out: u64,
    /// The authenticated caller.
    pub consumer: Option<&'a str>,
    /// The request id, when one was set.
    pub request_id: Option<&'a str>,
    /// The client's address.
    pub client: &'a str,
    /// On MCP routes: the JSON-RPC method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<&'a str>,
    /// On MCP routes: the tool, prompt or resource it named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_name: Option<&'a str>,
}

/// Where the request path hands lines.
#[derive(Debug)]
enum Tx {
    /// To the HTTP shipping task.
    Task(mpsc::Sender<String>),
    /// To a writer thread for stdout and files: plain buffered writes, flushed every 100 ms,
    /// instead of tokio::fs, which would hop to the blocking pool for every line.
    Thread(std::sync::mpsc::SyncSender<String>),
}

/// A compiled `access-log` filter.
#[derive(Debug)]
pub struct AccessLog {
    tx: Tx,
    dropped: Counter,
    /// Flushes what is queued and ends when the filter (the sender) is dropped.
    _writer: Option<tokio::task::JoinHandle<()>>,
}

impl AccessLog {
    pub(super) fn new(c: &AccessLogConfig, dropped: Counter) -> Self {
        if let AccessLogSink::Http { .. } = c.sink {
            let (tx, rx) = mpsc::channel(c.buffer);
            let writer = tokio::spawn(write(c.sink.clone(), rx, dropped.clone()));
            return Self { tx: Tx::Task(tx), dropped, _writer: Some(writer) };
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(c.buffer);
        let sink = c.sink.clone();
        let lost = dropped.clone();
        let spawned =
            std::thread::Builder::new().name("weir-access-log".into()).spawn(move || write_blocking(&sink, &rx, &lost));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access log writer; entries will be dropped");
        }
        Self { tx: Tx::Thread(tx), dropped, _writer: None }
    }

    /// Queues one entry; never waits.
    pub(crate) fn log(&self, e: &LogEntry<'_>) {
        let Ok(line) = serde_json::to_string(e) else { return };
        let sent = match &self.tx {
            Tx::Task(t) => t.try_send(line).is_ok(),
            Tx::Thread(t) => t.try_send(line).is_ok(),
        };
        if !sent {
            self.dropped.inc();
        }
    }
}

/// The stdout and file writer thread; ends when the filter is dropped.
fn write_blocking(sink: &AccessLogSink, rx: &std::sync::mpsc::Receiver<String>, dropped: &Counter) {
    use std::io::Write;
    let mut out: Box<dyn Write> = match sink {
        AccessLogSink::File { path } => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Box::new(std::io::BufWriter::with_capacity(64 * 1024, f)),
            Err(e) => {
                tracing::error!(%path, error = %e, "access log file cannot be opened; entries will be dropped");
                while rx.recv().is_ok() {
                    dropped.inc();
                }
                return;
            }
        },
        _ => Box::new(std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout())),
    };
    // Drain every 50 ms rather than block on each line: a blocked reader would have to be
    // woken (a futex call) for every request.
    loop {
        std::thread::park_timeout(Duration::from_millis(50));
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.write_all(b"\n");
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
    }
}

async fn write(sink: AccessLogSink, mut rx: mpsc::Receiver<String>, dropped: Counter) {
    match sink {
        // Served by `write_blocking`.
        AccessLogSink::Stdout(_) | AccessLogSink::File { .. } => drop(rx),
        AccessLogSink::Http { url, batch_size, flush_interval } => {
            let every = flush_interval.map_or(Duration::from_secs(1), |d| d.get());
            let mut batch = Vec::with_capacity(batch_size);
            loop {
                let deadline = tokio::time::sleep(every);
                tokio::pin!(deadline);
                while batch.len() < batch_size {
                    tokio::select! {
                        got = rx.recv() => match got {
                            Some(l) => batch.push(l),
                            None => break,
                        },
                        () = &mut deadline => break,
                    }
                }
                if !batch.is_empty() {
                    let body = batch.join("\n") + "\n";
                    if let Err(e) = post(&url, body).await {
                        tracing::warn!(%url, entries = batch.len(), error = %e, "access log batch not delivered; dropped");
                        dropped.inc_by(batch.len() as u64);
                    }
                    batch.clear();
                }
                if rx.is_closed() && rx.is_empty() {
                    return;
                }
            }
        }
    }
}

async fn post(url: &str, body: String) -> Result<(), String> {
    let headers = [("content-type", "application/x-ndjson")];
    let (status, _) =
        crate::oneshot::request(http::Method::POST, url, &headers, Bytes::from(body), Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
    if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
}
