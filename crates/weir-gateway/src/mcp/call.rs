//! One call in flight and the stream that carries its answer: each message forwarded as it
//! comes, keep-alive comments while the server is quiet, the stream closed after `idle`
//! without a message.
//!
//! For a sessionful client every event carries an id (`KEY-SEQ`, after a priming event), so
//! a client whose stream broke resumes it with `Last-Event-ID` on a GET to this gateway
//! within [`RESUME_WINDOW`] and gets what it missed, then the rest. A client that does not
//! come back, that cancels (`notifications/cancelled`), or, for a stateless client, that
//! closes its stream, cancels the server's request: Weir tells the server so.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::McpRoute;
use super::federation::{Reply, Scope};
use super::server::Answer;
use super::wire::{self, Code};

/// How long a broken stream waits for its client to resume it.
pub const RESUME_WINDOW: Duration = Duration::from_secs(30);
/// How many events a stream keeps for a client that resumes.
const REPLAY: usize = 64;

/// What a call's stream is told from outside.
#[derive(Debug)]
pub enum Control {
    /// A client resumed: send the events after `after` to `to`, then the rest.
    Resume {
        /// The last event the client had.
        after: u64,
        /// The new stream.
        to: mpsc::Sender<Bytes>,
    },
    /// The client cancelled the request.
    Cancel,
}

/// A resumable call as the route finds it: whose session it is, and how to reach it.
#[derive(Clone, Debug)]
pub struct Handle {
    /// The session the call runs in (only that session may resume or cancel it).
    pub sid: Arc<str>,
    /// Its stream's controls.
    pub control: mpsc::Sender<Control>,
}

/// The key of request `id` in session `sid`; its events' ids are `KEY-SEQ` in hex and decimal.
pub fn key(sid: &str, id: &Value) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    sid.hash(&mut h);
    id.to_string().hash(&mut h);
    h.finish()
}

/// The call key and sequence number of an event id Weir gave.
pub fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (k, seq) = id.split_once('-')?;
    Some((u64::from_str_radix(k, 16).ok()?, seq.parse().ok()?))
}

/// One call in flight.
pub(super) struct Call {
    pub(super) route: Arc<McpRoute>,
    pub(super) scope: Scope,
    pub(super) server: usize,
    pub(super) tool: String,
    pub(super) started: Instant,
    /// Weir's id for the request (and its progress token).
    pub(super) up_id: Value,
    /// The client's id for it.
    pub(super) id: Value,
    /// The client's progress token, given back on progress notifications.
    pub(super) token: Option<Value>,
    /// A tool call (counted in the tool metrics).
    pub(super) metered: bool,
}

impl Call {
    /// `m` as the client should see it: its own request id back.
    fn restore(&self, mut m: Value) -> Value {
        if let (Some(token), Some(t)) = (&self.token, m.pointer_mut("/params/progressToken"))
            && *t == self.up_id
        {
            *t = token.clone();
        }
        if m.get("method").is_some()
            && let (Some(theirs), Scope::Session(sid, _)) = (m.get("id").cloned(), &self.scope)
        {
            // The server asks the client something (sampling, elicitation): the client gets
            // an id of Weir's, whose answer goes back to this server under the server's id.
            let ours = json!(format!("weir-ask-{}-{}", self.server, fastrand::u64(..)));
            self.route.asked.insert((sid.clone(), ours.to_string()), (self.server, theirs));
            m["id"] = ours;
            return m;
        }
        if m.get("id") == Some(&self.up_id) {
            m["id"] = self.id.clone();
            // The stateless revision's results say they are complete.
            if matches!(self.scope, Scope::Stateless)
                && let Some(r) = m.get_mut("result").and_then(Value::as_object_mut)
            {
                r.entry("resultType").or_insert_with(|| json!("complete"));
            }
        }
        m
    }

    fn record(&self, outcome: &'static str) {
        if !self.metered {
            return;
        }
        let server = &self.route.servers[self.server].name;
        let took = self.started.elapsed().as_secs_f64();
        self.route.metrics.mcp_call(&self.route.route, server, &self.tool, outcome, Some(took));
    }

    fn outcome(m: &Value) -> &'static str {
        let failed = m.get("error").is_some() || m.pointer("/result/isError") == Some(&Value::Bool(true));
        if failed { "error" } else { "ok" }
    }

    /// A server's one-message answer.
    pub(super) async fn once(self, answer: Answer) -> Reply {
        match answer.response(&self.up_id).await {
            Ok(m) => {
                self.record(Self::outcome(&m));
                Reply::Json(self.restore(m))
            }
            Err(e) => {
                self.record("unavailable");
                Reply::Error(self.id.clone(), Code::Internal, format!("the MCP server's answer broke: {e}"))
            }
        }
    }

    /// The client's stream of a server's streamed answer, fed by a task.
    pub(super) fn stream(self, answer: Answer) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(16);
        let (control_tx, control) = mpsc::channel(1);
        let (key, prime) = match &self.scope {
            Scope::Session(sid, s) => {
                let key = key(sid, &self.id);
                self.route.calls.insert(key, Handle { sid: sid.as_str().into(), control: control_tx });
                (Some(key), s.version.as_str() >= wire::SESSIONFUL)
            }
            Scope::Stateless => (None, false),
        };
        tokio::spawn(self.run(answer, Feed::new(tx, key), control, prime));
        rx
    }

    async fn run(self, mut answer: Answer, mut feed: Feed, mut control: mpsc::Receiver<Control>, prime: bool) {
        if prime {
            feed.prime().await;
        }
        let mut outcome = self.pump(&mut answer, &mut feed, &mut control).await;
        if outcome != "cancelled" {
            // Answered while its client was away: keep it for a resume.
            outcome = feed.linger(&mut control).await.unwrap_or(outcome);
        }
        if matches!(outcome, "cancelled" | "idle") {
            self.cancel_upstream(answer).await;
        }
        self.record(outcome);
        if let Some(k) = feed.key {
            self.route.calls.invalidate(&k);
        }
    }

    /// Forwards the server's messages until its answer; `cancelled` when the client went
    /// and cannot come back (or did not in time), or cancelled.
    async fn pump(&self, answer: &mut Answer, feed: &mut Feed, control: &mut mpsc::Receiver<Control>) -> &'static str {
        let (idle, keepalive) = (self.route.idle, self.route.keepalive);
        let mut quiet = Duration::ZERO;
        loop {
            let next = tokio::select! {
                m = answer.next() => m,
                () = feed.closed() => {
                    if !feed.park() {
                        return "cancelled";
                    }
                    continue;
                }
                Some(c) = control.recv() => match c {
                    Control::Resume { after, to } => {
                        feed.resume(after, to).await;
                        continue;
                    }
                    Control::Cancel => return "cancelled",
                },
                () = feed.expiry() => return "cancelled",
                () = tokio::time::sleep(keepalive) => {
                    quiet += keepalive;
                    if quiet >= idle || !feed.deliver(Bytes::from_static(wire::KEEP_ALIVE)).await {
                        return if quiet >= idle { "idle" } else { "cancelled" };
                    }
                    continue;
                }
            };
            quiet = Duration::ZERO;
            match next {
                Ok(Some(m)) => {
                    let last = m.get("id") == Some(&self.up_id);
                    let outcome = Self::outcome(&m);
                    if !feed.send(&self.restore(m)).await {
                        return "cancelled";
                    }
                    if last {
                        return outcome;
                    }
                }
                Ok(None) | Err(_) => {
                    let why = "the MCP server's answer broke off (it stopped or went away)";
                    feed.send(&wire::error(&self.id, Code::Internal, why)).await;
                    return "unavailable";
                }
            }
        }
    }

    /// Tells the server the request is cancelled (best effort), then lets its answer go.
    async fn cancel_upstream(&self, answer: Answer) {
        drop(answer);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": self.up_id, "reason": "the client went away or cancelled"}});
        let quick = self.route.servers[self.server].quick;
        let _ = tokio::time::timeout(quick, self.route.send(&self.scope, self.server, &note)).await;
    }
}

/// The client's side of a call's stream: the events sent (kept for a resume when the call
/// is resumable) and where they go now.
struct Feed {
    to: Option<mpsc::Sender<Bytes>>,
    /// Set when the call is resumable.
    key: Option<u64>,
    seq: u64,
    kept: VecDeque<(u64, Bytes)>,
    /// When the client went, while it may still resume.
    parked: Option<tokio::time::Instant>,
}

impl Feed {
    fn new(to: mpsc::Sender<Bytes>, key: Option<u64>) -> Self {
        Self { to: Some(to), key, seq: 0, kept: VecDeque::new(), parked: None }
    }

    /// The priming event: an id and no data, so the client can resume before any message.
    async fn prime(&mut self) {
        if let Some(k) = self.key {
            self.deliver(Bytes::from(format!("id: {k:016x}-0\r\ndata: \r\n\r\n"))).await;
        }
    }

    /// Sends one message as the next event; false when the client is gone for good.
    async fn send(&mut self, m: &Value) -> bool {
        let Some(k) = self.key else { return self.deliver(wire::sse_event(m)).await };
        self.seq += 1;
        let event = wire::sse_event_with_id(m, &format!("{k:016x}-{}", self.seq));
        if self.kept.len() == REPLAY {
            self.kept.pop_front();
        }
        self.kept.push_back((self.seq, event.clone()));
        self.deliver(event).await
    }

    /// Hands `bytes` to the client's stream; false when it is gone and cannot come back.
    async fn deliver(&mut self, bytes: Bytes) -> bool {
        if let Some(to) = &self.to
            && to.send(bytes).await.is_ok()
        {
            return true;
        }
        self.park()
    }

    /// The client's stream closed: wait for a resume when the call is resumable (true).
    fn park(&mut self) -> bool {
        self.to = None;
        if self.key.is_some() && self.parked.is_none() {
            self.parked = Some(tokio::time::Instant::now());
        }
        self.key.is_some()
    }

    /// A resumed client: the events after `after` again, then the rest as they come.
    async fn resume(&mut self, after: u64, to: mpsc::Sender<Bytes>) {
        self.parked = None;
        for (_, event) in self.kept.iter().filter(|(seq, _)| *seq > after) {
            if to.send(event.clone()).await.is_err() {
                self.park();
                return;
            }
        }
        self.to = Some(to);
    }

    /// Resolves when the client's stream closes (never while none is attached).
    async fn closed(&self) {
        match &self.to {
            Some(to) => to.closed().await,
            None => std::future::pending().await,
        }
    }

    /// Resolves when a parked stream has waited out its window.
    async fn expiry(&self) {
        match self.parked {
            Some(t) => tokio::time::sleep_until(t + RESUME_WINDOW).await,
            None => std::future::pending().await,
        }
    }

    /// After the answer: a client that went away before it arrived may still resume and
    /// get it. `Some("cancelled")` when the client cancelled meanwhile.
    async fn linger(&mut self, control: &mut mpsc::Receiver<Control>) -> Option<&'static str> {
        while self.parked.is_some() {
            tokio::select! {
                c = control.recv() => match c {
                    Some(Control::Resume { after, to }) => self.resume(after, to).await,
                    Some(Control::Cancel) => return Some("cancelled"),
                    None => return None,
                },
                () = self.expiry() => return None,
            }
        }
        None
    }
}
