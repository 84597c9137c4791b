//! Several MCP servers as one: their tools listed together under exposed names, calls routed
//! to the owning server, and a server that is down or slow left out of a list (logged and
//! counted) while the others answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use weir_config::mcp::NamePolicy;

use super::McpRoute;
use super::call::Call;
use super::policy::Caller;
use super::server::{Answer, ServerError};
use super::session::Session;
use super::wire::Code;

/// Where a request runs: in a client's sealed session, or without one.
#[derive(Clone, Debug)]
pub enum Scope {
    /// A sessionful client's session (its id and what it stands for).
    Session(String, Session),
    /// A stateless client.
    Stateless,
}

/// Separates a server's name from its tool's in exposed names.
pub const SEPARATOR: &str = "__";

/// What a list federates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `tools/list`, `tools/call`.
    Tools,
    /// `prompts/list`, `prompts/get`.
    Prompts,
    /// `resources/list`, `resources/read`.
    Resources,
    /// `resources/templates/list`.
    Templates,
}

impl Kind {
    /// The list method.
    pub fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::Templates => "resources/templates/list",
        }
    }

    /// The result's array.
    pub fn key(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::Templates => "resourceTemplates",
        }
    }

    /// The field that names an item.
    fn id_field(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::Templates => "uriTemplate",
        }
    }

    /// Whether items are exposed under `SERVER__` names (a resource keeps its URI).
    fn prefixed(self) -> bool {
        matches!(self, Self::Tools | Self::Prompts)
    }
}

/// A kept list: the server, the kind, and the client session a private one was asked in.
pub type ListKey = (usize, Kind, Option<String>);

/// How many pages of a list Weir follows per server.
const MAX_PAGES: usize = 10;

impl McpRoute {
    /// The session to use with server `i` for `scope` (`None`: a stateless server).
    async fn session_for(&self, scope: &Scope, i: usize, renew: bool) -> Result<Option<String>, ServerError> {
        let srv = &self.servers[i];
        if !srv.has_sessions(matches!(scope, Scope::Session(..))).await? {
            return Ok(None);
        }
        match scope {
            Scope::Stateless => srv.shared_session(renew).await.map(Some),
            Scope::Session(id, s) => {
                if let Some(up) = s.upstream.get(&srv.name).filter(|_| !renew) {
                    return Ok(Some(up.clone()));
                }
                // A server that was down when the session began (or whose session ended):
                // a session of its own for this client, kept on this gateway.
                let key = (id.clone(), i);
                if !renew && let Some(up) = self.late.get(&key) {
                    return Ok(Some(up));
                }
                let up = srv.initialize(&json!({})).await?;
                self.late.insert(key, up.clone());
                Ok(Some(up))
            }
        }
    }

    /// Sends `msg` to server `i`, starting a new session once when the old one has ended.
    pub(super) async fn send(&self, scope: &Scope, i: usize, msg: &Value) -> Result<Answer, ServerError> {
        let srv = &self.servers[i];
        let era = srv.era_for(matches!(scope, Scope::Session(..))).await?;
        let session = self.session_for(scope, i, false).await?;
        match srv.exchange(msg, era, session.as_deref()).await {
            Err(ServerError::SessionGone) => {
                let session = self.session_for(scope, i, true).await?;
                srv.exchange(msg, era, session.as_deref()).await
            }
            other => other,
        }
    }

    /// Every item of `kind` of every answering server, under exposed names; tools only when
    /// `caller` may use them.
    pub(super) async fn list(&self, kind: Kind, scope: &Scope, caller: &Caller) -> Vec<Value> {
        let lists = join_all((0..self.servers.len()).map(|i| async move {
            let srv = &self.servers[i];
            match tokio::time::timeout(srv.quick, self.list_of(kind, scope, i)).await {
                Ok(Ok(tools)) => Some(tools),
                Ok(Err(e)) => self.unavailable(i, &e.to_string()),
                Err(_) => self.unavailable(i, &format!("no list within {:?}", srv.quick)),
            }
        }))
        .await;
        let mut map = HashMap::new();
        let mut out = Vec::new();
        for (i, tools) in lists.into_iter().enumerate() {
            for mut t in tools.into_iter().flatten() {
                let field = kind.id_field();
                let Some(own) = t.get(field).and_then(Value::as_str).map(str::to_owned) else { continue };
                let exposed = match self.names {
                    _ if !kind.prefixed() => own.clone(),
                    NamePolicy::FirstWins if !map.contains_key(&own) => own.clone(),
                    _ => format!("{}{SEPARATOR}{own}", self.servers[i].name),
                };
                if map.contains_key(&exposed) || (kind == Kind::Tools && !self.policy.permits(&exposed, caller)) {
                    continue;
                }
                t[field] = json!(exposed);
                map.insert(exposed, (i, own));
                out.push(t);
            }
        }
        let mut seen = self.names_seen.write();
        let before = seen.insert(kind, map).unwrap_or_default();
        let now = &seen[&kind];
        let changed = before.len() != now.len() || before.keys().any(|k| !now.contains_key(k));
        drop(seen);
        if kind == Kind::Tools && !before.is_empty() && changed {
            self.announce();
        }
        out
    }

    fn unavailable(&self, i: usize, why: &str) -> Option<Vec<Value>> {
        let name = &self.servers[i].name;
        tracing::warn!(route = %self.route, server = %name, reason = why, "an MCP server did not answer; its tools are left out");
        self.metrics.mcp_unavailable(&self.route, name);
        None
    }

    /// Server `i`'s items of `kind`: from the cache while the server's `ttlMs` holds, else
    /// asked (every page), and kept when the server allows.
    async fn list_of(&self, kind: Kind, scope: &Scope, i: usize) -> Result<Vec<Value>, ServerError> {
        let key = self.list_key(kind, scope, i).await;
        let shared = (i, kind, None);
        for k in [&shared, &key] {
            if let Some((until, items)) = self.lists.get(k)
                && Instant::now() < until
            {
                return Ok(items.to_vec());
            }
        }
        let (items, ttl) = self.fetch_list(kind, scope, i).await?;
        if let Some((ttl, public)) = ttl {
            // A public answer serves everyone; a private one, only whom it was asked for.
            let k = if public { shared } else { key };
            self.lists.insert(k, (Instant::now() + ttl, Arc::from(items.as_slice())));
        }
        Ok(items)
    }

    /// Whose list a private answer is: the server, the kind, and the client session it was
    /// asked in (`None` when Weir asked in its own name: a stateless or shared-session request,
    /// or a server Weir holds no sessions with).
    async fn list_key(&self, kind: Kind, scope: &Scope, i: usize) -> ListKey {
        let own = match scope {
            Scope::Session(sid, _) if self.servers[i].has_sessions(true).await.unwrap_or(false) => Some(sid.clone()),
            _ => None,
        };
        (i, kind, own)
    }

    /// Asks every page; with how long the server lets the answer be reused (the least
    /// `ttlMs` of its pages, when all give one) and whether across callers (`public`).
    async fn fetch_list(
        &self,
        kind: Kind,
        scope: &Scope,
        i: usize,
    ) -> Result<(Vec<Value>, Option<(Duration, bool)>), ServerError> {
        let srv = &self.servers[i];
        let mut items = Vec::new();
        let mut cursor = None;
        let mut ttl: Option<(Duration, bool)> = Some((Duration::MAX, true));
        for _ in 0..MAX_PAGES {
            let id = srv.next_id();
            let params = cursor.take().map_or_else(|| json!({}), |c: Value| json!({"cursor": c}));
            let msg = json!({"jsonrpc": "2.0", "id": id, "method": kind.method(), "params": params});
            let m = self.send(scope, i, &msg).await?.response(&id).await?;
            if m.pointer("/error/code") == Some(&json!(Code::MethodNotFound as i64)) {
                // A server without prompts or resources has none to list.
                return Ok((items, None));
            }
            let result = m.get("result").ok_or(ServerError::Garbled("a list was refused"))?;
            items.extend(result.get(kind.key()).and_then(Value::as_array).cloned().unwrap_or_default());
            let page = result.get("ttlMs").and_then(Value::as_u64).filter(|ms| *ms > 0).map(Duration::from_millis);
            let public = result.get("cacheScope").and_then(Value::as_str) == Some("public");
            ttl = ttl.zip(page).map(|((t, p), page)| (t.min(page), p && public));
            match result.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => break,
            }
        }
        Ok((items, ttl))
    }

    /// The server and own name of the item of `kind` exposed as `exposed`.
    async fn owner(&self, kind: Kind, scope: &Scope, caller: &Caller, exposed: &str) -> Option<(usize, String)> {
        let seen = |k: Kind| self.names_seen.read().get(&k).and_then(|m| m.get(exposed).cloned());
        if let Some(found) = seen(kind) {
            return Some(found);
        }
        if kind.prefixed()
            && self.names == NamePolicy::Prefix
            && let Some((server, own)) = exposed.split_once(SEPARATOR)
        {
            let i = self.servers.iter().position(|s| s.name == server)?;
            return Some((i, own.to_owned()));
        }
        // Not seen yet: list once to learn the names.
        self.list(kind, scope, caller).await;
        if kind == Kind::Resources && seen(kind).is_none() {
            // A URI a template makes: the server whose template's fixed start it has.
            self.list(Kind::Templates, scope, caller).await;
            let seen = self.names_seen.read();
            let templates = seen.get(&Kind::Templates)?;
            let (_, (i, _)) = templates
                .iter()
                .filter(|(t, _)| exposed.starts_with(t.split('{').next().unwrap_or(t)))
                .max_by_key(|(t, _)| t.split('{').next().map_or(0, str::len))?;
            return Some((*i, exposed.to_owned()));
        }
        seen(kind)
    }

    /// Runs `method` (`tools/call`, `prompts/get`, `resources/read`, `resources/subscribe`…)
    /// on the item of `kind` that `params` names, for the client's request `id`: a tool is
    /// refused when the caller may not use it or its limit is spent; otherwise the owning
    /// server's answer, streamed message by message.
    pub(super) async fn call(
        self: &Arc<Self>,
        kind: Kind,
        method: &str,
        scope: &Scope,
        caller: &Caller,
        id: Value,
        params: Value,
    ) -> Reply {
        let field = kind.id_field();
        let Some(exposed) = params.get(field).and_then(Value::as_str).map(str::to_owned) else {
            return Reply::Error(id, Code::InvalidParams, format!("{method} needs params.{field}"));
        };
        let tool = kind == Kind::Tools;
        let found = match !tool || self.policy.permits(&exposed, caller) {
            true => self.owner(kind, scope, caller, &exposed).await,
            false => None,
        };
        let Some((i, own)) = found else {
            let server = exposed.split_once(SEPARATOR).map_or("", |(s, _)| s);
            if tool {
                self.metrics.mcp_call(&self.route, server, &exposed, "refused", None);
            }
            if kind == Kind::Resources {
                return Reply::ErrorWith(id, Code::InvalidParams, "Resource not found".into(), json!({"uri": exposed}));
            }
            let what = if tool { "tool" } else { field };
            return Reply::Error(id, Code::InvalidParams, format!("Unknown {what}: {exposed}"));
        };
        if tool && let Some(why) = self.limited(&exposed, caller).await {
            self.metrics.mcp_call(&self.route, &self.servers[i].name, &exposed, "limited", None);
            return Reply::Error(id, Code::Limited, why);
        }
        let mut p = params;
        p[field] = json!(own);
        self.relay(scope, Target { server: i, exposed, metered: tool }, method, p, id).await
    }

    /// `completion/complete`: to the server that owns the prompt or resource template its
    /// `ref` names, under that server's own name.
    pub(super) async fn complete(
        self: &Arc<Self>,
        scope: &Scope,
        caller: &Caller,
        id: Value,
        mut params: Value,
    ) -> Reply {
        let (kind, at) = match params.pointer("/ref/type").and_then(Value::as_str) {
            Some("ref/prompt") => (Kind::Prompts, "/ref/name"),
            Some("ref/resource") => (Kind::Templates, "/ref/uri"),
            _ => return Reply::Error(id, Code::InvalidParams, "completion/complete needs params.ref".into()),
        };
        let Some(exposed) = params.pointer(at).and_then(Value::as_str).map(str::to_owned) else {
            return Reply::Error(id, Code::InvalidParams, format!("completion/complete needs params{at}"));
        };
        let Some((i, own)) = self.owner(kind, scope, caller, &exposed).await else {
            return Reply::Error(id, Code::InvalidParams, format!("Unknown reference: {exposed}"));
        };
        if let Some(v) = params.pointer_mut(at) {
            *v = json!(own);
        }
        self.relay(scope, Target { server: i, exposed, metered: false }, "completion/complete", params, id).await
    }

    /// `logging/setLevel`: said to every server (those that fail are left out); Weir answers.
    pub(super) async fn set_level(&self, scope: &Scope, id: Value, params: &Value) -> Reply {
        join_all((0..self.servers.len()).map(|i| async move {
            let srv = &self.servers[i];
            let up_id = srv.next_id();
            let msg = json!({"jsonrpc": "2.0", "id": up_id, "method": "logging/setLevel", "params": params});
            let said = async { self.send(scope, i, &msg).await?.response(&up_id).await };
            let _ = tokio::time::timeout(srv.quick, said).await;
        }))
        .await;
        Reply::Json(super::wire::result(&id, &json!({})))
    }

    /// Sends the client's request `id` to `to.server` as Weir's own request, and answers with
    /// what the server answers (once, or streamed).
    async fn relay(self: &Arc<Self>, scope: &Scope, to: Target, method: &str, mut p: Value, id: Value) -> Reply {
        let srv = &self.servers[to.server];
        let up_id = srv.next_id();
        // The server sees Weir's token, so clients sharing it never see each other's progress.
        let token = p.pointer_mut("/_meta/progressToken").map(|t| std::mem::replace(t, up_id.clone()));
        let msg = json!({"jsonrpc": "2.0", "id": up_id, "method": method, "params": p});
        let started = Instant::now();
        let answer = match self.send(scope, to.server, &msg).await {
            Ok(a) => a,
            Err(ServerError::SessionGone) => return Reply::SessionGone,
            Err(e) => {
                if to.metered {
                    let took = Some(started.elapsed().as_secs_f64());
                    self.metrics.mcp_call(&self.route, &srv.name, &to.exposed, "unavailable", took);
                }
                return Reply::Error(id, Code::Internal, format!("MCP server {:?} failed: {e}", srv.name));
            }
        };
        let call = Call {
            route: self.clone(),
            scope: scope.clone(),
            server: to.server,
            tool: to.exposed,
            started,
            up_id,
            id,
            token,
            metered: to.metered,
        };
        if answer.streaming { Reply::Stream(call.stream(answer)) } else { call.once(answer).await }
    }

    /// A client's answer to a request a server made during a call (sampling, elicitation):
    /// to that server, under the id the server gave it.
    pub(super) async fn answer_server(&self, scope: &Scope, mut m: Value) {
        let Scope::Session(sid, _) = scope else { return };
        let Some(id) = m.get("id").map(Value::to_string) else { return };
        let Some((i, theirs)) = self.asked.remove(&(sid.clone(), id)) else { return };
        m["id"] = theirs;
        let _ = tokio::time::timeout(self.servers[i].quick, self.send(scope, i, &m)).await;
    }
}

/// Where a client's request goes: the owning server, and the name it was asked by.
struct Target {
    server: usize,
    exposed: String,
    /// A tool call (counted in the tool metrics).
    metered: bool,
}

impl McpRoute {
    /// Why `caller` may not call `tool` now, when a tool limit is spent.
    async fn limited(&self, tool: &str, caller: &Caller) -> Option<String> {
        use crate::filter::limit::Admit;
        for (tools, counts) in &self.limits {
            if !tools.iter().any(|g| weir_config::mcp::glob(g, tool)) {
                continue;
            }
            match counts.admit(&counts.scoped_key(tool, caller)).await {
                Admit::Allowed { .. } | Admit::Unavailable { deny: false } => {}
                Admit::Refused { wait } => {
                    let secs = wait.as_secs_f64().ceil().max(1.0);
                    return Some(format!("rate limit exceeded for {tool}; retry in {secs}s"));
                }
                Admit::Unavailable { deny: true } => return Some(format!("the rate limiter of {tool} is unavailable")),
            }
        }
        None
    }
}

/// What Weir answers a request with.
#[derive(Debug)]
pub enum Reply {
    /// One message.
    Json(Value),
    /// An event stream, fed by a task.
    Stream(tokio::sync::mpsc::Receiver<bytes::Bytes>),
    /// A JSON-RPC error.
    Error(Value, Code, String),
    /// A JSON-RPC error with `data` (e.g. the URI of a resource not found).
    ErrorWith(Value, Code, String, Value),
    /// The client's session with a server has ended: the client must start again (404).
    SessionGone,
}
