//! The CLI as operators use it: `validate` exit codes and messages, `schema`, `--help`.

use std::process::Command;

fn weir(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn validate_reports_every_error_with_its_path_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/weir.yaml");
    let (code, out) = weir(&["validate", "-c", good]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid"), "{out}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listeners: [{ name: public, address: 127.0.0.1:8080 }]\nroutes:\n  - { name: a, upstream: nowhere, match: { path: { regex: \"(\" } } }\n  - { name: a, upstream: u }\nupstreams:\n  - { name: u, load_balancer: { endpoints: [{ address: 127.0.0.1, port: 0 }] } }\n",
    )
    .unwrap();
    let (code, out) = weir(&["validate", "-c", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    for path in [
        "routes[0].match.path.regex",
        "routes[0].upstream",
        "routes[1].name",
        "upstreams[0].load_balancer.endpoints[0].port",
    ] {
        assert!(out.contains(path), "missing {path}: {out}");
    }
    let (code, out) = weir(&["validate", "-c", "/nonexistent/weir.yaml"]);
    assert_eq!(code, 1);
    assert!(out.contains("cannot read"), "{out}");
}

#[test]
fn schema_is_json_schema_and_every_command_has_help() {
    let (code, out) = weir(&["schema"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["properties"]["routes"].is_object(), "{v}");
    for cmd in [
        &["--help"][..],
        &["standalone", "--help"],
        &["validate", "--help"],
        &["loadtest", "--help"],
        &["echo-server", "--help"],
        &["schema", "--help"],
    ] {
        let (code, out) = weir(cmd);
        assert_eq!(code, 0, "{cmd:?}: {out}");
        assert!(out.contains("Usage"), "{cmd:?}: {out}");
    }
}

#[test]
fn standalone_refuses_an_invalid_file_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "routes: [{ name: x }]\n").unwrap();
    let (code, out) = weir(&["standalone", "-c", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("routes[0]") && out.contains("weir validate"), "{out}");
}
