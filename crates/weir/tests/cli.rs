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

#[test]
fn the_example_stops_before_starting_anything_when_a_port_it_needs_is_taken() {
    // Held (or already taken by something else): either way the script must refuse to start.
    let _held = std::net::TcpListener::bind("127.0.0.1:9901");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/run.sh");
    let out = Command::new(script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is taken") && err.contains("stop it"), "{err}");
    assert!(!err.contains("Compiling"), "nothing was built or started: {err}");
}

/// `weir validate` on each broken config under `tests/golden/validate/` prints exactly the
/// `.txt` beside it: every error of the file in one pass, with its path, line and column, in
/// plain words. `WEIR_BLESS=1` rewrites the `.txt` files from what it prints now.
#[test]
fn validate_messages_match_their_golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/validate");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "{cases:?}");
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    let mut wrong = Vec::new();
    for case in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["validate", "-c", &case])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{case} should be refused");
        let got = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let golden = dir.join(case.replace(".yaml", ".txt"));
        if bless {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            wrong.push(format!("{case}:\n--- want\n{want}--- got\n{got}"));
        }
        assert!(!got.contains("anyOf") && !got.contains("oneOf"), "{case}: JSON Schema jargon in {got}");
    }
    assert!(wrong.is_empty(), "(WEIR_BLESS=1 rewrites the golden files)\n{}", wrong.join("\n"));
}
