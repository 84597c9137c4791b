//! MCP routes end to end, with the Python SDK's real client and servers (mcp 2.x): clients of
//! either revision reach servers of either revision through one federated endpoint, a tool's
//! progress arrives as it happens, denied tools are hidden and refused, the client's token
//! never reaches a server, a session continues on another replica and after a restart, and a
//! server that dies drops out of the list and comes back.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{Client, Weir, python, python_paths, run_python, wait_until};
use http_body_util::BodyExt;
use serde_json::{Value, json};

const KEY: &str = "0123456789abcdef0123456789abcdef-test";
const SECRET: &str = "an-hs256-secret-of-the-mcp-test";

/// A fixture MCP server (tests/python/mcp_server.py).
struct Fixture {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    path: &'static str,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn start(name: &str, only: &str, port: u16) -> Fixture {
        Self::spawn(name, &["--only", only], port, "/mcp")
    }

    /// A server of the legacy HTTP+SSE transport (2024-11-05), its event stream at /sse.
    fn sse(name: &str, port: u16) -> Fixture {
        Self::spawn(name, &["--sse"], port, "/sse")
    }

    fn spawn(name: &str, args: &[&str], port: u16, path: &'static str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let (script, _) = python_paths("mcp_server.py");
        let mut child = python()
            .args([&script, "--name", name, "--port", &port.to_string()])
            .args(args)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/deps.sh installs the mcp SDK)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).unwrap_or_else(|| {
            panic!("the fixture printed no port ({line:?}): pip install 'mcp==2.3.0'");
        });
        Fixture { child, port, log, path, _dir: dir }
    }

    /// Every request it received: (method, headers).
    fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.path)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(servers: &[(&str, &Fixture)], extra: &str) -> String {
    let list: String =
        servers.iter().map(|(n, f)| format!("        - {{ name: {n}, url: \"{}\" }}\n", f.url())).collect();
    format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:0 }}\nadmin: {{ address: 127.0.0.1:0 }}\nroutes:\n  - name: tools\n    match: {{ path: {{ exact: /mcp }} }}\n    mcp:\n      session_key: \"{KEY}\"\n      list_timeout: 2s\n      servers:\n{list}{extra}"
    )
}

fn token(role: &str) -> String {
    signed(&json!({"sub": "agent-7", "role": role, "exp": 4_000_000_000u64}))
}

async fn client(weir: &Weir, mode: &str, token: &str, calls: &[(&str, Value)]) -> Value {
    let mut args = vec!["--url".into(), weir.url("/mcp"), "--mode".into(), mode.into(), "--token".into(), token.into()];
    for (tool, a) in calls {
        args.extend(["--call".into(), (*tool).into(), a.to_string()]);
    }
    run_python("mcp_client.py", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_either_revision_reach_servers_of_either_revision_through_one_endpoint() {
    // `math` speaks only the handshake revision, `next` only the stateless one.
    let (math, next) = (Fixture::start("math", "legacy", 0), Fixture::start("next", "modern", 0));
    let logs = tempfile::tempdir().unwrap();
    let access = logs.path().join("access.log");
    let policy = format!(
        "      tools:\n        deny: [\"*__wipe\"]\n        rules:\n          - {{ tools: [\"*__whoami\"], claims: {{ role: admin }} }}\n        limits:\n          - {{ tools: [\"*__add\"], rate: {{ requests: 2, window: 1h, key: {{ consumer: {{}} }} }} }}\n    plugins:\n      - name: jwt-auth\n        config:\n          keys: [{{ alg: HS256, secret: {SECRET} }}]\n      - {{ name: access-log, config: {{ sink: {{ file: {{ path: \"{}\" }} }} }} }}\n",
        access.display()
    );
    let weir = Weir::start(&config(&[("math", &math), ("next", &next)], &policy));
    let calls = [
        ("math__add", json!({"a": 2, "b": 3})),
        ("next__slow", json!({"steps": 5, "interval_ms": 200})),
        ("math__slow", json!({"steps": 3, "interval_ms": 200})),
        ("next__wipe", json!({})),
        ("math__whoami", json!({})),
    ];
    for mode in ["legacy", "2026-07-28"] {
        let out = client(&weir, mode, &token("user"), &calls).await;
        let want = if mode == "legacy" { "2025-11-25" } else { "2026-07-28" };
        assert_eq!(out["version"], want, "{out}");
        let tools: Vec<&str> = out["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(
            tools,
            ["math__add", "math__slow", "next__add", "next__slow"],
            "denied and ruled-out tools are hidden: {out}"
        );
        let c = &out["calls"];
        assert_eq!(c[0]["text"], "5", "{out}");
        for (i, steps, server) in [(1, 5, "next"), (2, 3, "math")] {
            assert_eq!(c[i]["text"], format!("{server} done after {steps} steps"), "{out}");
            let p: Vec<f64> = c[i]["progress"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(p.len(), steps, "every progress notification arrives: {out}");
            // Incrementally: the first long before the answer, then one every ~200 ms.
            assert!(p[0] < 0.15, "the first progress arrives at once, not buffered: {p:?}");
            for w in p.windows(2) {
                assert!(w[1] - w[0] > 0.1, "progress arrives as it happens: {p:?}");
            }
        }
        for i in [3, 4] {
            assert_eq!(c[i]["error"]["code"], -32602, "refused: {out}");
        }
    }
    // Without a token, the route's jwt-auth answers before MCP does.
    let mut http = Client::connect(weir.addr).await;
    let rsp = http
        .try_send("POST", "/mcp", &[("content-type", "application/json")], Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 401);
    // Neither server ever saw the client's token; each was spoken to in its own revision.
    for (f, versioned) in [(&math, "mcp-session-id"), (&next, "mcp-method")] {
        let reqs = f.requests();
        assert!(!reqs.is_empty());
        assert!(reqs.iter().all(|r| r["headers"].get("authorization").is_none()), "a token leaked: {reqs:?}");
        assert!(reqs.iter().any(|r| r["headers"].get(versioned).is_some()), "{reqs:?}");
    }
    let (_, metrics) = common::get(weir.admin, "/metrics", &[]).await;
    let metrics = String::from_utf8_lossy(&metrics);
    let line = |tool: &str, outcome: &str| {
        format!(
            "weir_mcp_tool_calls_total{{route=\"tools\",server=\"{}\",tool=\"{tool}\",outcome=\"{outcome}\"}} 2",
            &tool[..4]
        )
    };
    for (tool, outcome) in
        [("math__add", "ok"), ("next__slow", "ok"), ("next__wipe", "refused"), ("math__whoami", "refused")]
    {
        assert!(metrics.contains(&line(tool, outcome)), "{}\n{metrics}", line(tool, outcome));
    }
    assert!(
        metrics.contains(
            "weir_mcp_tool_call_duration_seconds_count{route=\"tools\",server=\"next\",tool=\"next__slow\"} 2"
        )
    );
    // Two calls of math__add per caller an hour: the third is refused, and only that tool's
    // count is spent (next__add has its own; lists and initialize never counted).
    let out = client(
        &weir,
        "legacy",
        &token("user"),
        &[("math__add", json!({"a": 1, "b": 1})), ("next__add", json!({"a": 1, "b": 1}))],
    )
    .await;
    assert_eq!(out["calls"][0]["error"]["code"], -32000, "{out}");
    assert!(
        out["calls"][0]["error"]["message"].as_str().unwrap().contains("rate limit exceeded for math__add"),
        "{out}"
    );
    assert_eq!(out["calls"][1]["text"], "2", "{out}");
    // The access log says which MCP method and tool each request was.
    wait_until("the access log has the calls", Duration::from_secs(5), || async {
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        text.contains(r#""mcp_method":"tools/call","mcp_name":"next__slow""#)
            && text.contains(r#""mcp_method":"tools/list""#)
    })
    .await;
    // An admin may use the tools the rule holds back.
    let out = client(&weir, "2026-07-28", &token("admin"), &[("math__whoami", json!({}))]).await;
    assert_eq!(out["calls"][0]["text"], "math", "{out}");
}

/// POSTs one JSON-RPC message in the handshake revision; returns status, session id, body.
async fn post(addr: SocketAddr, session: Option<&str>, msg: Value) -> (u16, Option<String>, String) {
    let mut c = Client::connect(addr).await;
    let mut headers = vec![("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
    if let Some(s) = session {
        headers.extend([("mcp-session-id", s), ("mcp-protocol-version", "2025-11-25")]);
    }
    let rsp = c.try_send("POST", "/mcp", &headers, Bytes::from(msg.to_string())).await.unwrap();
    let status = rsp.status().as_u16();
    let sid = rsp.headers().get("mcp-session-id").map(|v| v.to_str().unwrap().to_owned());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, sid, String::from_utf8_lossy(&body).into_owned())
}

/// How many sessions were begun with `f` (an `initialize` carries no session or version header).
fn initializes(f: &Fixture) -> usize {
    let h = |r: &Value, name: &str| r["headers"].get(name).is_some();
    f.requests()
        .iter()
        .filter(|r| r["method"] == "POST" && !h(r, "mcp-session-id") && !h(r, "mcp-protocol-version"))
        .count()
}

fn whoami(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "math__whoami", "arguments": {}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_continues_on_another_replica_and_after_a_restart() {
    let math = Fixture::start("math", "legacy", 0);
    let yaml = config(&[("math", &math)], "");
    let (a, b) = (Weir::start(&yaml), Weir::start(&yaml));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let (status, sid, body) = post(a.addr, None, init.clone()).await;
    assert_eq!(status, 200, "{body}");
    let sid = sid.expect("initialize hands out a session id");
    assert!(body.contains("\"protocolVersion\":\"2025-11-25\""), "{body}");
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post(a.addr, Some(&sid), done).await.0, 202);
    // The other replica continues the session: the id carries the upstream session.
    let sessions_before = initializes(&math);
    let (status, echoed, body) = post(b.addr, Some(&sid), whoami(2)).await;
    assert_eq!((status, echoed.as_deref()), (200, Some(sid.as_str())), "{body}");
    assert!(body.contains("\"text\":\"math\""), "{body}");
    let sessions_after = initializes(&math);
    assert_eq!(sessions_before, sessions_after, "no new upstream session was begun");
    // So does a restarted gateway.
    drop(a);
    let a = Weir::start(&yaml);
    let (status, _, body) = post(a.addr, Some(&sid), whoami(3)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"text\":\"math\""), "{body}");
    // A forged or unknown id is not a session.
    let mut forged = sid.clone();
    forged.replace_range(forged.len() - 2.., if sid.ends_with("AA") { "BB" } else { "AA" });
    assert_eq!(post(b.addr, Some(&forged), whoami(4)).await.0, 404);
    let (status, _, body) = post(b.addr, None, whoami(5)).await;
    assert_eq!(status, 400, "no session id: {body}");
    // The server's own session ends (it restarts): Weir begins a new one for this client.
    let port = math.port;
    drop(math);
    let math = Fixture::start("math", "legacy", port);
    let (status, _, body) = post(b.addr, Some(&sid), whoami(6)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"text\":\"math\""), "{body}");
    assert_eq!(initializes(&math), 1, "a new session was begun");
    let (status, sid2, _) = post(b.addr, None, init).await;
    assert_eq!(status, 200);
    let sid2 = sid2.unwrap();
    assert!(post(a.addr, Some(&sid2), whoami(7)).await.2.contains("\"text\":\"math\""));
    // DELETE ends it, with the server too.
    let mut c = Client::connect(b.addr).await;
    let rsp = c.try_send("DELETE", "/mcp", &[("mcp-session-id", &sid2)], Bytes::new()).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(post(b.addr, Some(&sid2), whoami(8)).await.0, 404);
    assert!(math.requests().iter().any(|r| r["method"] == "DELETE"), "the server's session was ended");
    // The stateless revision: routing headers must say what the body says.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "math__whoami", "arguments": {}, "_meta": meta}});
    for (method, name, status, code) in [
        ("tools/call", "math__whoami", 200, None::<i64>),
        ("tools/list", "math__whoami", 400, Some(-32020)),
        ("tools/call", "math__add", 400, Some(-32020)),
    ] {
        let mut c = Client::connect(b.addr).await;
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", method),
            ("mcp-name", name),
        ];
        let rsp = c.try_send("POST", "/mcp", &headers, Bytes::from(call.to_string())).await.unwrap();
        assert_eq!(rsp.status(), status, "{method} {name}");
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        let Some(code) = code else {
            // The answer (JSON or one event) carries the call's id and the tool's text.
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("\"id\":9") && text.contains("\"text\":\"math\""), "{text}");
            continue;
        };
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["id"], 9, "errors carry the request's id: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_drops_out_of_the_list_and_comes_back() {
    let (math, next) = (Fixture::start("math", "both", 0), Fixture::start("next", "both", 0));
    let weir = Weir::start(&config(&[("math", &math), ("next", &next)], ""));
    let names = |out: &Value| {
        out["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let out = client(&weir, "2026-07-28", "x", &[]).await;
    assert_eq!(names(&out).len(), 8, "{out}");
    let port = next.port;
    drop(next);
    // The dead server's tools drop out; the other's still answer.
    let out = client(
        &weir,
        "2026-07-28",
        "x",
        &[("math__add", json!({"a": 1, "b": 1})), ("next__add", json!({"a": 1, "b": 1}))],
    )
    .await;
    assert_eq!(names(&out), ["math__add", "math__slow", "math__whoami", "math__wipe"], "{out}");
    assert_eq!(out["calls"][0]["text"], "2", "{out}");
    assert!(out["calls"][1]["error"].is_object() || out["calls"][1]["is_error"] == true, "{out}");
    assert!(weir.wait_log("its tools are left out", Duration::from_secs(5)).await, "{}", weir.logs());
    let (_, metrics) = common::get(weir.admin, "/metrics", &[]).await;
    assert!(
        String::from_utf8_lossy(&metrics)
            .contains("weir_mcp_server_unavailable_total{route=\"tools\",server=\"next\"}")
    );
    // Back on its port: its tools come back.
    let _next = Fixture::start("next", "both", port);
    wait_until("the restarted server's tools are listed again", Duration::from_secs(10), || async {
        names(&client(&weir, "2026-07-28", "x", &[]).await).len() == 8
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stalls_is_left_out_within_the_list_timeout() {
    let (math, next) = (Fixture::start("math", "both", 0), Fixture::start("next", "both", 0));
    let weir = Weir::start(&config(&[("math", &math), ("next", &next)], ""));
    let count = |out: &Value| out["tools"].as_array().unwrap().len();
    assert_eq!(count(&client(&weir, "2026-07-28", "x", &[]).await), 8);
    // Stopped, `next` accepts connections and never answers: the list waits for it only its
    // 2 s list_timeout, and the other server's tools still come.
    let signal = |sig: &str| std::process::Command::new("kill").args([sig, &next.child.id().to_string()]).status();
    assert!(signal("-STOP").unwrap().success());
    let started = std::time::Instant::now();
    let out = client(&weir, "2026-07-28", "x", &[("math__add", json!({"a": 2, "b": 2}))]).await;
    assert_eq!(count(&out), 4, "{out}");
    assert_eq!(out["calls"][0]["text"], "4", "{out}");
    assert!(started.elapsed() < Duration::from_secs(10), "one stall costs one list_timeout: {:?}", started.elapsed());
    assert!(signal("-CONT").unwrap().success());
    wait_until("the resumed server's tools are listed again", Duration::from_secs(10), || async {
        count(&client(&weir, "2026-07-28", "x", &[]).await) == 8
    })
    .await;
}

fn signed(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_is_an_oauth_resource_server() {
    let math = Fixture::start("math", "both", 0);
    let auth = format!(
        "      auth:\n        resource: https://mcp.test/mcp\n        authorization_servers: [https://idp.test]\n        scopes: [tools]\n        verify: {{ keys: [{{ alg: HS256, secret: {SECRET} }}], issuer: https://idp.test }}\n"
    );
    let weir = Weir::start(&config(&[("math", &math)], &auth));
    let metadata_url = "https://mcp.test/.well-known/oauth-protected-resource/mcp";
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let attempt = |token: Option<String>| {
        let init = init.clone();
        async move {
            let mut c = Client::connect(weir.addr).await;
            let bearer = token.map(|t| format!("Bearer {t}"));
            let mut headers =
                vec![("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
            if let Some(b) = &bearer {
                headers.push(("authorization", b));
            }
            let rsp = c.try_send("POST", "/mcp", &headers, Bytes::from(init.to_string())).await.unwrap();
            let challenge = rsp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
            (rsp.status().as_u16(), challenge.unwrap_or_default())
        }
    };
    // No token: 401, pointing at the metadata, which Weir serves.
    let (status, challenge) = attempt(None).await;
    assert_eq!(status, 401);
    assert!(challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")), "{challenge}");
    let (status, body) = common::get(weir.addr, "/.well-known/oauth-protected-resource/mcp", &[]).await;
    assert_eq!(status, 200);
    let meta: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(meta["resource"], "https://mcp.test/mcp");
    assert_eq!(meta["authorization_servers"], json!(["https://idp.test"]));
    let exp = 4_000_000_000u64;
    // A token for another resource, or from another issuer: 401 invalid_token.
    for claims in [
        json!({"sub": "a", "iss": "https://idp.test", "aud": "https://other.test/mcp", "scope": "tools", "exp": exp}),
        json!({"sub": "a", "iss": "https://evil.test", "aud": "https://mcp.test/mcp", "scope": "tools", "exp": exp}),
    ] {
        let (status, challenge) = attempt(Some(signed(&claims))).await;
        assert_eq!(status, 401);
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
    // The right audience without the scope: 403 insufficient_scope, naming the scope.
    let (status, challenge) = attempt(Some(signed(
        &json!({"sub": "a", "iss": "https://idp.test", "aud": "https://mcp.test/mcp", "scope": "read", "exp": exp}),
    )))
    .await;
    assert_eq!(status, 403);
    assert!(challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"tools\""), "{challenge}");
    // A good token: the SDK's client works, and the server never sees the token.
    let good = signed(
        &json!({"sub": "a", "iss": "https://idp.test", "aud": "https://mcp.test/mcp", "scope": "read tools", "exp": exp}),
    );
    for mode in ["legacy", "2026-07-28"] {
        let out = client(&weir, mode, &good, &[("math__add", json!({"a": 20, "b": 22}))]).await;
        assert_eq!(out["calls"][0]["text"], "42", "{out}");
    }
    assert!(math.requests().iter().all(|r| r["headers"].get("authorization").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_and_a_stdio_server_federate_and_a_killed_one_comes_back() {
    let math = Fixture::start("math", "both", 0);
    let (script, _) = python_paths("mcp_server.py");
    let py = std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into());
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("calls.jsonl");
    let stdio = format!(
        "        - {{ name: files, command: [\"{py}\", \"{script}\", --name, files-stdio, --stdio, --log, \"{}\"] }}\n",
        mark.display()
    );
    let yaml = config(&[("math", &math)], "").replace("      servers:\n", &format!("      servers:\n{stdio}"));
    let weir = Weir::start(&yaml);
    // The process starts on first use; under load Python's start can outlast the first list.
    wait_until("the stdio server's tools are listed", Duration::from_secs(20), || async {
        client(&weir, "2026-07-28", "x", &[]).await["tools"].as_array().unwrap().len() == 8
    })
    .await;
    let out = client(
        &weir,
        "2026-07-28",
        "x",
        &[("files__slow", json!({"steps": 3, "interval_ms": 200})), ("files__whoami", json!({}))],
    )
    .await;
    assert_eq!(out["tools"].as_array().unwrap().len(), 8, "{out}");
    let p = out["calls"][0]["progress"].as_array().unwrap().clone();
    assert_eq!(p.len(), 3, "progress from a stdio server arrives too: {out}");
    assert!(p[0].as_f64().unwrap() < 0.15 && p[2].as_f64().unwrap() > 0.3, "as it happens: {p:?}");
    assert_eq!(out["calls"][1]["text"], "files-stdio", "{out}");
    // Kill the stdio server while one of its tools runs: that call fails, the other server's
    // calls still answer, and the next use starts it again.
    let run = tokio::spawn({
        let url = weir.url("/mcp");
        async move {
            let args = [
                "--url",
                &url,
                "--mode",
                "legacy",
                "--call",
                "files__slow",
                r#"{"steps": 20, "interval_ms": 200}"#,
                "--call",
                "math__add",
                r#"{"a": 1, "b": 1}"#,
            ];
            run_python("mcp_client.py", args.iter().map(|s| (*s).to_owned()).collect()).await
        }
    });
    wait_until("the long call runs on the stdio server", Duration::from_secs(20), || async {
        std::fs::read_to_string(&mark).unwrap_or_default().contains("\"steps\": 20")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-f", "--", "--name files-stdio --stdio --log"])
        .status()
        .unwrap();
    assert!(killed.success(), "the stdio server was running");
    let out = run.await.unwrap();
    assert!(out["calls"][0]["error"].is_object(), "the call in flight fails: {out}");
    let progress = out["calls"][0]["progress"].as_array().unwrap().len();
    assert!(progress < 15, "at once, not at the end of its 20 steps: {out}");
    assert_eq!(out["calls"][1]["text"], "2", "{out}");
    assert!(weir.wait_log("an MCP stdio server exited", Duration::from_secs(5)).await, "{}", weir.logs());
    let out = client(&weir, "2026-07-28", "x", &[("files__whoami", json!({}))]).await;
    assert_eq!(out["calls"][0]["text"], "files-stdio", "started again: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_http_sse_servers_serve_clients_of_either_revision_and_come_back() {
    // `old` is declared legacy; `auto`'s transport is found by asking.
    let (old, auto, math) = (Fixture::sse("old", 0), Fixture::sse("auto", 0), Fixture::start("math", "both", 0));
    let declared = format!("        - {{ name: old, url: \"{}\", era: \"2024-11-05\" }}\n", old.url());
    let yaml = config(&[("auto", &auto), ("math", &math)], "")
        .replace("      servers:\n", &format!("      servers:\n{declared}"));
    let weir = Weir::start(&yaml);
    let calls = [
        ("old__add", json!({"a": 2, "b": 3})),
        ("old__slow", json!({"steps": 3, "interval_ms": 200})),
        ("auto__whoami", json!({})),
    ];
    // A client of the legacy transport too: its event stream is the route's path.
    for mode in ["legacy", "2026-07-28", "sse"] {
        let out = client(&weir, mode, "x", &calls).await;
        assert_eq!(out["tools"].as_array().unwrap().len(), 12, "three servers' tools: {out}");
        let c = &out["calls"];
        assert_eq!(c[0]["text"], "5", "{out}");
        assert_eq!(c[1]["text"], "old done after 3 steps", "{out}");
        let p: Vec<f64> = c[1]["progress"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(p.len(), 3, "progress comes through the legacy stream: {out}");
        assert!(p[0] < 0.15 && p[2] - p[0] > 0.3, "as it happens: {p:?}");
        assert_eq!(c[2]["text"], "auto", "{out}");
    }
    // The server saw an event stream (GET) and posted messages, never the client's headers.
    let reqs = old.requests();
    assert!(reqs.iter().any(|r| r["method"] == "GET"), "{reqs:?}");
    assert!(reqs.iter().filter(|r| r["method"] == "POST").count() >= 4, "{reqs:?}");
    assert!(
        weir.logs().matches("opened a legacy MCP event stream").count() == 2,
        "one stream per server: {}",
        weir.logs()
    );
    // Its stream ends with it: its tools drop out; back on its port, it is opened again.
    let port = old.port;
    drop(old);
    let out = client(&weir, "2026-07-28", "x", &[("math__add", json!({"a": 1, "b": 1}))]).await;
    assert_eq!(out["tools"].as_array().unwrap().len(), 8, "{out}");
    assert_eq!(out["calls"][0]["text"], "2", "{out}");
    let _old = Fixture::sse("old", port);
    wait_until("the restarted legacy server is listed again", Duration::from_secs(10), || async {
        let out = client(&weir, "legacy", "x", &[("old__add", json!({"a": 4, "b": 4}))]).await;
        out["calls"][0]["text"] == "8"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_control_plane_pushes_is_announced_to_open_sessions() {
    use common::fleet::{Cp, Gw};
    let (math, next) = (Fixture::start("math", "both", 0), Fixture::start("next", "both", 0));
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &config(&[("math", &math)], ""));
    let gw = Gw::start("gw1", &cp.grpc_url(), &dir.path().join("gw1"), "127.0.0.1:0");
    let addr = gw.listen_addr();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let sid = loop {
        // 404 until the pushed route is installed.
        if let (200, Some(sid), _) = post(addr, None, init.clone()).await {
            break Some(sid);
        }
        assert!(tokio::time::Instant::now() < deadline, "the pushed MCP route never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sid = sid.unwrap();
    assert_eq!(post(addr, Some(&sid), list.clone()).await.2.matches("\"name\":").count(), 4);
    let headers =
        [("mcp-session-id", sid.as_str()), ("accept", "text/event-stream"), ("mcp-protocol-version", "2025-11-25")];
    let mut c = Client::connect(addr).await;
    let mut stream = c.try_send("GET", "/mcp", &headers, Bytes::new()).await.unwrap().into_body();
    // The operator adds a server through the control plane: the open stream hears of it.
    cp.apply(dir.path(), &config(&[("math", &math), ("next", &next)], ""));
    assert!(stream_until(&mut stream, "notifications/tools/list_changed", Duration::from_secs(10)).await);
    assert_eq!(post(addr, Some(&sid), list).await.2.matches("\"name\":").count(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_server_is_reached_with_the_ca_it_names_and_refused_without() {
    let pki = tempfile::tempdir().unwrap();
    let ca = common::pki::ca("mcp test ca");
    let (cert, key) = common::pki::write_pair(pki.path(), "server", &common::pki::leaf(&ca, &["mcp.test"]));
    let ca_file = pki.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let math = Fixture::spawn("math", &["--tls", &cert, &key], 0, "/mcp");
    let url = format!("https://127.0.0.1:{}/mcp", math.port);
    let server = |tls: &str| {
        let yaml = config(&[], "")
            .replace("      servers:\n", &format!("      servers:\n        - {{ name: math, url: \"{url}\"{tls} }}\n"));
        Weir::start(&yaml)
    };
    let trusting = server(&format!(", tls: {{ ca: \"{}\", sni: mcp.test }}", ca_file.display()));
    let out = client(&trusting, "2026-07-28", "x", &[("math__add", json!({"a": 2, "b": 3}))]).await;
    assert_eq!(out["calls"][0]["text"], "5", "over TLS, verified against the CA: {out}");
    // Without the CA (the system's roots), the certificate is not trusted: no tools.
    let doubting = server("");
    let out = client(&doubting, "2026-07-28", "x", &[]).await;
    assert_eq!(out["tools"].as_array().unwrap().len(), 0, "{out}");
    assert!(doubting.wait_log("its tools are left out", Duration::from_secs(5)).await, "{}", doubting.logs());
}

/// The headers of a POST in session `sid` that takes JSON or an event stream back.
fn posting(sid: &str) -> [(&'static str, &str); 4] {
    [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-session-id", sid),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_outlasts_the_route_timeout_with_keep_alives_and_a_silent_one_is_cut() {
    let math = Fixture::start("math", "both", 0);
    let yaml =
        config(&[("math", &math)], "").replace("    mcp:\n", "    timeout: 1s\n    mcp:\n      idle_timeout: 3s\n");
    let weir = Weir::start(&yaml);
    let sid = initialize(weir.addr).await;
    let session = posting(&sid);
    let slow = |id: u64, steps: u64, interval_ms: u64| {
        Bytes::from(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "math__slow", "arguments": {"steps": steps, "interval_ms": interval_ms},
                "_meta": {"progressToken": format!("p{id}")}}})
            .to_string(),
        )
    };
    // Progress every 2.5 s for 7.5 s: past the route's 1 s timeout, quiet under the 3 s idle
    // cut, with keep-alive comments in the gaps.
    let mut c = Client::connect(weir.addr).await;
    let mut body = c.try_send("POST", "/mcp", &session, slow(1, 3, 2500)).await.unwrap().into_body();
    let mut seen = String::new();
    let done = |t: &str| t.contains("math done after 3 steps");
    assert!(read_until(&mut body, &mut seen, Duration::from_secs(15), done).await, "{seen}");
    assert!(seen.matches(": keep-alive").count() >= 3, "keep-alives between the progress: {seen}");
    // 5 s without a word: the stream is cut at the idle timeout, before the answer.
    let mut c = Client::connect(weir.addr).await;
    let mut body = c.try_send("POST", "/mcp", &session, slow(2, 2, 5000)).await.unwrap().into_body();
    let started = std::time::Instant::now();
    let mut seen = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(f)) = body.frame().await {
            seen.push_str(&String::from_utf8_lossy(f.data_ref().map_or(&[][..], |d| d)));
        }
    });
    assert!(ended.await.is_ok(), "the silent stream is closed");
    let took = started.elapsed();
    assert!(!seen.contains("math done"), "cut before the answer: {seen}");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(5), "at the idle timeout: {took:?}");
    let (_, metrics) = common::get(weir.admin, "/metrics", &[]).await;
    assert!(
        String::from_utf8_lossy(&metrics).contains(
            "weir_mcp_tool_calls_total{route=\"tools\",server=\"math\",tool=\"math__slow\",outcome=\"idle\"} 1"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mcp_call_is_a_span_named_after_its_method_and_tool() {
    let receiver = common::otlp::Receiver::start();
    let math = Fixture::start("math", "both", 0);
    let tracing = format!("tracing: {{ otlp_endpoint: \"http://127.0.0.1:{}\", sample_ratio: 1.0 }}\n", receiver.port);
    let weir = Weir::start(&format!("{tracing}{}", config(&[("math", &math)], "")));
    let out = client(&weir, "2026-07-28", "x", &[("math__add", json!({"a": 1, "b": 2}))]).await;
    assert_eq!(out["calls"][0]["text"], "3", "{out}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let call = loop {
        let spans = receiver.spans();
        if let Some(s) = spans.iter().find(|s| s["attributes"]["mcp.method.name"] == "tools/call") {
            break s.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no tools/call span: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(call["name"], "tools/call math__add", "{call}");
    assert_eq!(call["attributes"]["gen_ai.tool.name"], "math__add", "{call}");
    assert_eq!(call["attributes"]["http.route"], "tools", "{call}");
    let list = receiver.spans();
    assert!(
        list.iter().any(|s| s["attributes"]["mcp.method.name"] == "tools/list"),
        "the list is a span too: {list:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_limit_in_redis_is_one_count_across_replicas() {
    let r = common::redis::redis().await;
    let math = Fixture::start("math", "both", 0);
    let limits = format!(
        "      tools:\n        limits:\n          - {{ tools: [\"*__add\"], rate: {{ requests: 3, window: 1h, policy: redis, redis_url: \"redis://127.0.0.1:{}\", key: {{ client_ip: {{}} }} }} }}\n",
        r.port
    );
    let yaml = config(&[("math", &math)], &limits);
    let (a, b) = (Weir::start(&yaml), Weir::start(&yaml));
    let add = [("math__add", json!({"a": 1, "b": 1}))];
    let whoami = [("math__whoami", json!({}))];
    // Three calls admitted in all, whichever replica takes them; the fourth is refused.
    for (i, weir) in [&a, &b, &a].into_iter().enumerate() {
        let out = client(weir, "2026-07-28", "x", &add).await;
        assert_eq!(out["calls"][0]["text"], "2", "call {i}: {out}");
    }
    let out = client(&b, "2026-07-28", "x", &add).await;
    assert_eq!(out["calls"][0]["error"]["code"], -32000, "the shared count is spent: {out}");
    // Only that tool: another still answers on either replica.
    for weir in [&a, &b] {
        assert_eq!(client(weir, "2026-07-28", "x", &whoami).await["calls"][0]["text"], "math");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_the_server_lets_be_kept_is_asked_once_while_it_holds() {
    let kept = Fixture::spawn("kept", &["--list-ttl", "60000", "--list-scope", "public"], 0, "/mcp");
    let fresh = Fixture::start("fresh", "both", 0);
    let weir = Weir::start(&config(&[("kept", &kept), ("fresh", &fresh)], ""));
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}});
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ];
    for _ in 0..4 {
        let rsp =
            Client::connect(weir.addr).await.try_send("POST", "/mcp", &headers, Bytes::from(list.to_string())).await;
        let body = rsp.unwrap().into_body().collect().await.unwrap().to_bytes();
        assert_eq!(String::from_utf8_lossy(&body).matches("\"name\":").count(), 8, "both servers' tools");
    }
    let asked = |f: &Fixture| f.requests().iter().filter(|r| r["headers"]["mcp-method"] == "tools/list").count();
    assert_eq!(asked(&kept), 1, "a list with ttlMs is kept while it holds");
    assert_eq!(asked(&fresh), 4, "a list without one is asked each time");
}

/// Reads an event stream's frames into `seen` until `done` holds (false when `within` passes).
async fn read_until(
    body: &mut hyper::body::Incoming,
    seen: &mut String,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => seen.push_str(&String::from_utf8_lossy(f.data_ref().map_or(&[][..], |d| d))),
            _ => return false,
        }
    }
    true
}

/// The `id:` of each event in `text`, in order.
fn event_ids(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("id: ")).map(|l| l.trim().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_resumes_with_last_event_id_and_a_cancelled_call_stops() {
    let math = Fixture::start("math", "both", 0);
    let weir = Weir::start(&config(&[("math", &math)], ""));
    let sid = initialize(weir.addr).await;
    let session = posting(&sid);
    let slow = |id: u64, steps: u64| {
        Bytes::from(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "math__slow", "arguments": {"steps": steps, "interval_ms": 200},
                "_meta": {"progressToken": format!("p{id}")}}})
            .to_string(),
        )
    };
    // The stream breaks after two progress events.
    let mut c = Client::connect(weir.addr).await;
    let rsp = c.try_send("POST", "/mcp", &session, slow(1, 6)).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();
    let mut before = String::new();
    let two = |t: &str| t.matches("notifications/progress").count() >= 2;
    assert!(read_until(&mut body, &mut before, Duration::from_secs(5), two).await, "{before}");
    let ids = event_ids(&before);
    assert!(ids.len() >= 3 && ids[0].ends_with("-0"), "a priming event, then ids on every event: {before}");
    let last = ids.last().unwrap().clone();
    drop((body, c));
    // A GET with the last id seen gets the rest: each event once, then the answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = Client::connect(weir.addr).await;
    let resume = [&session[1..], &[("last-event-id", last.as_str())]].concat();
    let rsp = c.try_send("GET", "/mcp", &resume, Bytes::new()).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let mut after = String::new();
    let answered = |t: &str| t.contains("math done after 6 steps");
    assert!(read_until(&mut rsp.into_body(), &mut after, Duration::from_secs(5), answered).await, "{after}");
    let progress = before.matches("notifications/progress").count() + after.matches("notifications/progress").count();
    assert_eq!(progress, 6, "no event lost or repeated:\n{before}\n--\n{after}");
    assert!(event_ids(&after).iter().all(|i| !ids.contains(i)), "{after}");
    // An id no stream has: 400, said plainly.
    let unknown = [&session[1..], &[("last-event-id", "00000000000000ff-3")]].concat();
    let rsp = Client::connect(weir.addr).await.try_send("GET", "/mcp", &unknown, Bytes::new()).await.unwrap();
    assert_eq!(rsp.status(), 400);
    // A cancelled call's stream ends at once, not after its 50 steps.
    let mut c = Client::connect(weir.addr).await;
    let rsp = c.try_send("POST", "/mcp", &session, slow(2, 50)).await.unwrap();
    let mut body = rsp.into_body();
    let mut seen = String::new();
    assert!(read_until(&mut body, &mut seen, Duration::from_secs(5), |t| t.contains("notifications/progress")).await);
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}});
    let rsp =
        Client::connect(weir.addr).await.try_send("POST", "/mcp", &session, Bytes::from(cancel.to_string())).await;
    assert_eq!(rsp.unwrap().status(), 202);
    let ended = tokio::time::timeout(Duration::from_secs(3), async { while let Some(Ok(_)) = body.frame().await {} });
    assert!(ended.await.is_ok(), "the cancelled call's stream ends");
    let (_, metrics) = common::get(weir.admin, "/metrics", &[]).await;
    assert!(
        String::from_utf8_lossy(&metrics).contains(
            "weir_mcp_tool_calls_total{route=\"tools\",server=\"math\",tool=\"math__slow\",outcome=\"cancelled\"} 1"
        ),
        "{}",
        String::from_utf8_lossy(&metrics)
    );
}

/// A sessionful client's `initialize` over plain HTTP; the session id Weir gives.
async fn initialize(addr: SocketAddr) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let (status, sid, body) = post(addr, None, init).await;
    assert_eq!(status, 200, "{body}");
    sid.expect("initialize hands out a session id")
}

/// Reads an event stream until `needle` arrives (or `within` passes).
async fn stream_until(body: &mut hyper::body::Incoming, needle: &str, within: Duration) -> bool {
    read_until(body, &mut String::new(), within, |seen| seen.contains(needle)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_the_servers_is_announced_on_the_session_stream() {
    let (math, next) = (Fixture::start("math", "both", 0), Fixture::start("next", "both", 0));
    let weir = Weir::start(&config(&[("math", &math)], ""));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let (status, sid, body) = post(weir.addr, None, init).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"listChanged\":true"), "{body}");
    let sid = sid.unwrap();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    assert_eq!(post(weir.addr, Some(&sid), list.clone()).await.2.matches("\"name\":").count(), 4);
    let mut c = Client::connect(weir.addr).await;
    let headers =
        [("mcp-session-id", sid.as_str()), ("accept", "text/event-stream"), ("mcp-protocol-version", "2025-11-25")];
    let rsp = c.try_send("GET", "/mcp", &headers, Bytes::new()).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["content-type"], "text/event-stream");
    let mut stream = rsp.into_body();
    // A stateless client listens with `subscriptions/listen`: acknowledged first.
    let listen = json!({"jsonrpc": "2.0", "id": "sub-1", "method": "subscriptions/listen", "params": {
        "notifications": {"toolsListChanged": true, "promptsListChanged": true},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}});
    let stateless = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "subscriptions/listen"),
    ];
    let mut c2 = Client::connect(weir.addr).await;
    let rsp = c2.try_send("POST", "/mcp", &stateless, Bytes::from(listen.to_string())).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let mut listening = rsp.into_body();
    let mut heard = String::new();
    let acked = |t: &str| t.contains("notifications/subscriptions/acknowledged");
    assert!(read_until(&mut listening, &mut heard, Duration::from_secs(5), acked).await, "{heard}");
    assert!(
        heard.contains(r#""notifications":{"toolsListChanged":true}"#),
        "only what Weir announces is honored: {heard}"
    );
    // The operator adds a server: the open session stream hears of it, and the list has it.
    weir.write_config(&config(&[("math", &math), ("next", &next)], ""));
    assert!(
        stream_until(&mut stream, "notifications/tools/list_changed", Duration::from_secs(10)).await,
        "list_changed after a reload: {}",
        weir.logs()
    );
    let changed = |t: &str| t.contains("notifications/tools/list_changed");
    assert!(read_until(&mut listening, &mut heard, Duration::from_secs(5), changed).await, "{heard}");
    assert!(heard.contains(r#""io.modelcontextprotocol/subscriptionId":"sub-1""#), "tagged: {heard}");
    assert_eq!(post(weir.addr, Some(&sid), list.clone()).await.2.matches("\"name\":").count(), 8);
    // A server going away is announced too (found when the tools are next listed).
    drop(next);
    assert_eq!(post(weir.addr, Some(&sid), list).await.2.matches("\"name\":").count(), 4);
    assert!(stream_until(&mut stream, "notifications/tools/list_changed", Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_resources_are_federated_too() {
    let (math, next) = (Fixture::start("math", "legacy", 0), Fixture::start("next", "modern", 0));
    let weir = Weir::start(&config(&[("math", &math), ("next", &next)], ""));
    for mode in ["legacy", "2026-07-28"] {
        let url = weir.url("/mcp");
        let args = [
            "--url",
            &url,
            "--mode",
            mode,
            "--catalog",
            "--get",
            "math__greet",
            r#"{"who": "ann"}"#,
            "--get",
            "next__greet",
            r#"{"who": "bo"}"#,
            "--read",
            "fixture://next/readme",
            "--read",
            "fixture://math/items/7",
        ];
        let out = run_python("mcp_client.py", args.iter().map(|s| (*s).to_owned()).collect()).await;
        assert_eq!(out["prompts"], json!(["math__greet", "next__greet"]), "{out}");
        assert_eq!(out["resources"], json!(["fixture://math/readme", "fixture://next/readme"]), "{out}");
        assert_eq!(out["templates"], json!(["fixture://math/items/{item}", "fixture://next/items/{item}"]), "{out}");
        assert_eq!(out["got"], json!(["Hello ann from math", "Hello bo from next"]), "{out}");
        assert_eq!(out["read"], json!(["readme of next", "math item 7"]), "{out}");
    }
}
