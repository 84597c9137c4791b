//! How `weir ctl` prints answers: kubectl-style result lines, tables and diffs.

use std::process::ExitCode;

use serde_json::Value;

/// Prints an error answer (`error` and every `path: message`) and returns failure.
fn failed(status: u16, v: &Value) -> ExitCode {
    failed_in(status, v, None)
}

/// [`failed`], each error placed in `text` (the file applied) when its path is there:
/// `Route/api.timeout (line 3, column 1): …`.
fn failed_in(status: u16, v: &Value, text: Option<&str>) -> ExitCode {
    let msg = v.get("error").and_then(Value::as_str).map_or_else(|| v.to_string(), str::to_owned);
    eprintln!("error ({status}): {msg}");
    let at = text.map(weir_config::locate::Positions::of_resources);
    for e in v.get("errors").and_then(Value::as_array).into_iter().flatten() {
        let path = e["path"].as_str().unwrap_or("");
        let place = at
            .as_ref()
            .and_then(|a| a.find(path))
            .map_or_else(String::new, |p| format!(" (line {}, column {})", p.line, p.column));
        eprintln!("  {path}{place}: {}", e["message"].as_str().unwrap_or(""));
    }
    ExitCode::FAILURE
}

fn ok(status: u16) -> bool {
    (200..300).contains(&status)
}

/// `route/api created` per resource, then the revision and any gateways still pending.
pub(super) fn applied(status: u16, v: &Value) -> ExitCode {
    applied_from(status, v, None)
}

/// [`applied`] for a file applied: errors name their line in `text`.
pub(super) fn applied_from(status: u16, v: &Value, text: Option<&str>) -> ExitCode {
    if !ok(status) {
        return failed_in(status, v, text);
    }
    let suffix = if v["dry_run"].as_bool() == Some(true) { " (dry run)" } else { "" };
    for r in v["results"].as_array().into_iter().flatten() {
        println!(
            "{}/{} {}{suffix}",
            r["kind"].as_str().unwrap_or("").to_lowercase(),
            r["name"].as_str().unwrap_or(""),
            r["result"].as_str().unwrap_or("")
        );
    }
    if v["changed"].as_bool() == Some(true) {
        println!("revision {}", v["revision"]);
    }
    match v.get("pending_gateways").and_then(Value::as_array) {
        Some(p) if !p.is_empty() => {
            let ids: Vec<&str> = p.iter().filter_map(Value::as_str).collect();
            eprintln!("warning: not yet applied by: {} (see `weir ctl gateways`)", ids.join(", "));
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

fn pretty(v: Option<&Value>) -> String {
    v.filter(|v| !v.is_null()).map(|v| serde_json::to_string_pretty(v).unwrap_or_default() + "\n").unwrap_or_default()
}

/// A unified diff per resource that would change; exit 1 when any would.
pub(super) fn diff(status: u16, v: &Value) -> ExitCode {
    if !ok(status) {
        return failed(status, v);
    }
    let mut any = false;
    for r in v["results"].as_array().into_iter().flatten() {
        if r["result"] == "unchanged" {
            continue;
        }
        any = true;
        let name = format!("{}/{}", r["kind"].as_str().unwrap_or(""), r["name"].as_str().unwrap_or(""));
        let (before, after) = (pretty(r.get("before")), pretty(r.get("after")));
        let d = similar::TextDiff::from_lines(&before, &after);
        print!("{}", d.unified_diff().context_radius(3).header(&format!("a/{name}"), &format!("b/{name}")));
    }
    if any { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// A table of names and versions, or one resource as JSON.
pub(super) fn get(status: u16, v: &Value, one: bool) -> ExitCode {
    if !ok(status) {
        return failed(status, v);
    }
    if one {
        println!("{}", serde_json::to_string_pretty(&v["body"]).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    println!("{:<10} {:<40} {:>8}", "KIND", "NAME", "VERSION");
    for r in v.as_array().into_iter().flatten() {
        println!(
            "{:<10} {:<40} {:>8}",
            r["kind"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or(""),
            r["version"]
        );
    }
    ExitCode::SUCCESS
}

/// Revisions, newest first.
pub(super) fn history(status: u16, v: &Value) -> ExitCode {
    if !ok(status) {
        return failed(status, v);
    }
    println!("{:>8}  {:<24}  {:<16}  CHANGES", "REVISION", "TIME (UTC)", "CAUSE");
    for r in v.as_array().into_iter().flatten() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r["time_ms"].as_u64().unwrap_or(0));
        let changes: Vec<String> = r["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{}/{} {}",
                    c["kind"].as_str().unwrap_or(""),
                    c["name"].as_str().unwrap_or(""),
                    c["result"].as_str().unwrap_or("")
                )
            })
            .collect();
        let shown = if changes.len() > 4 {
            format!("{} … ({} changes)", changes[..4].join(", "), changes.len())
        } else {
            changes.join(", ")
        };
        println!(
            "{:>8}  {:<24}  {:<16}  {shown}",
            r["revision"],
            humantime::format_rfc3339_seconds(t).to_string(),
            r["cause"].as_str().unwrap_or("")
        );
    }
    ExitCode::SUCCESS
}

/// The gateway table.
pub(super) fn gateways(status: u16, v: &Value, raw: bool) -> ExitCode {
    if !ok(status) {
        return failed(status, v);
    }
    if raw {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<28} {:<7} {:<6} {:>8} {:>9} {:>9} {:>7} {:>8}  {:<21}  LAST NACK",
        "ID", "KIND", "STATUS", "APPLIED", "HEARTBEAT", "REQ/S", "ERR%", "P99(ms)", "CONTROL PLANE"
    );
    for g in v.as_array().into_iter().flatten() {
        let nack = g["last_nack"]
            .as_object()
            .map(|n| {
                format!(
                    "rev {}: {}",
                    n["revision"],
                    n["errors"].as_array().and_then(|e| e.first()).and_then(Value::as_str).unwrap_or("")
                )
            })
            .unwrap_or_default();
        println!(
            "{:<28} {:<7} {:<6} {:>8} {:>8}s {:>9.1} {:>7.2} {:>8.1}  {:<21}  {nack}",
            g["id"].as_str().unwrap_or(""),
            g["kind"].as_str().unwrap_or("weir"),
            g["status"].as_str().unwrap_or(""),
            g["applied_revision"],
            g["last_heartbeat_ms_ago"].as_u64().unwrap_or(0) / 1000,
            g["report"]["requests_per_second"].as_f64().unwrap_or(0.0),
            g["report"]["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
            g["report"]["p99_ms"].as_f64().unwrap_or(0.0),
            g["control_plane"].as_str().unwrap_or(""),
        );
    }
    ExitCode::SUCCESS
}
