//! An MCP server that is a command Weir starts: newline-delimited JSON-RPC on its stdin and
//! stdout, one process per server per gateway, shared by every client (Weir's own request ids
//! and progress tokens keep their messages apart). Weir starts it when first needed, says
//! `initialize` once, and starts it again after it exits (at most once a second); a call in
//! flight when it dies ends as unavailable.

use std::process::Stdio as Piped;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use super::link::Waiters;
use super::server::ServerError;
use super::wire;

/// A supervised stdio server.
#[derive(Debug)]
pub struct Stdio {
    name: String,
    command: Vec<String>,
    running: tokio::sync::Mutex<Option<Running>>,
    last_start: Mutex<Option<Instant>>,
}

#[derive(Debug)]
struct Running {
    child: Child,
    stdin: ChildStdin,
    /// This process's waiters: a new process starts with none.
    waiters: Waiters,
}

impl Stdio {
    /// The server `name` run as `command`.
    pub fn new(name: &str, command: &[String]) -> Self {
        Self {
            name: name.to_owned(),
            command: command.to_vec(),
            running: tokio::sync::Mutex::default(),
            last_start: Mutex::new(None),
        }
    }

    /// Sends `msg`; its answer and progress (keyed by `id`) arrive on the returned channel.
    pub async fn send(&self, msg: &Value, id: Option<&str>) -> Result<mpsc::Receiver<Value>, ServerError> {
        let mut line = serde_json::to_vec(msg).unwrap_or_default();
        line.push(b'\n');
        let mut running = self.running.lock().await;
        if running.as_mut().is_none_or(|r| r.child.try_wait().ok().flatten().is_some()) {
            *running = Some(self.start().await?);
        }
        let r = running.as_mut().ok_or_else(|| ServerError::Unreachable("not running".into()))?;
        let rx = match id {
            Some(id) => r.waiters.expect(id),
            None => mpsc::channel(1).1,
        };
        if let Err(e) = r.stdin.write_all(&line).await {
            *running = None;
            return Err(ServerError::Unreachable(format!("its stdin closed: {e}")));
        }
        Ok(rx)
    }

    /// Starts the process, reads its stdout in a task, and says `initialize`.
    async fn start(&self) -> Result<Running, ServerError> {
        let wait = self.last_start.lock().map(|t| Duration::from_secs(1).saturating_sub(t.elapsed()));
        if let Some(w) = wait.filter(|w| !w.is_zero()) {
            tokio::time::sleep(w).await;
        }
        *self.last_start.lock() = Some(Instant::now());
        let (program, args) = self.command.split_first().ok_or(ServerError::Unreachable("no command".into()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Piped::piped())
            .stdout(Piped::piped())
            .stderr(Piped::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ServerError::Unreachable(format!("cannot start {program:?}: {e}")))?;
        tracing::info!(server = %self.name, pid = child.id(), "started an MCP stdio server");
        let stdout = child.stdout.take().ok_or(ServerError::Unreachable("no stdout".into()))?;
        let mut stdin = child.stdin.take().ok_or(ServerError::Unreachable("no stdin".into()))?;
        let waiters = Waiters::default();
        tokio::spawn(read(BufReader::new(stdout), waiters.clone(), self.name.clone()));
        let id = "weir-init";
        let mut rx = waiters.expect(id);
        let init = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
            "protocolVersion": wire::SESSIONFUL, "capabilities": {},
            "clientInfo": {"name": "weir", "version": env!("CARGO_PKG_VERSION")}}});
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        for m in [&init, &done] {
            let mut line = serde_json::to_vec(m).unwrap_or_default();
            line.push(b'\n');
            if m == &done {
                let answered = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
                if !matches!(answered, Ok(Some(ref a)) if a.get("result").is_some()) {
                    return Err(ServerError::Garbled("initialize was not answered"));
                }
            }
            stdin.write_all(&line).await.map_err(|e| ServerError::Unreachable(e.to_string()))?;
        }
        Ok(Running { child, stdin, waiters })
    }
}

/// Routes each line the process writes to whoever waits for it; at the end (the process
/// exited) every waiter is let go.
async fn read(mut out: BufReader<tokio::process::ChildStdout>, waiters: Waiters, name: String) {
    let mut line = String::new();
    loop {
        line.clear();
        match out.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Ok(m) = serde_json::from_str::<Value>(&line) {
            waiters.deliver(m).await;
        }
    }
    tracing::warn!(server = %name, "an MCP stdio server exited; it is started again when next needed");
    waiters.release();
}
