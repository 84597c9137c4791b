//! Host behaviour the SDKs depend on, driven by small `.wat` modules: status codes, edits the
//! embedder sees, imports checked before anything runs, and the CPU and memory caps.

use std::sync::Arc;
use std::time::Duration;

use crate::{Action, Fault, Fields, Limits, LoadError, Plugin, Runtime, Shared, Status, Stream};

/// A module with a bump allocator, the ABI marker and `body` as `on_request_headers`.
fn module(imports: &str, body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  {imports}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)
  (data (i32.const 0) "x-absent")
  (data (i32.const 16) "x-new")
  (data (i32.const 32) "v1")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body})
  {extra})"#
    );
    wat::parse_str(text).unwrap()
}

fn plugin(rt: &Runtime, wasm: &[u8], limits: Limits) -> Result<Plugin, LoadError> {
    Plugin::compile(rt, "t", wasm, Arc::new(Shared::default()), limits)
}

const IMPORTS: &str = r#"
  (import "env" "proxy_remove_header_map_value" (func $rm (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $set (param i32 i32 i32 i32 i32) (result i32)))"#;

#[test]
fn statuses_are_what_the_sdks_expect() {
    let rt = Runtime::new().unwrap();
    // Each call's status goes to memory at 1000 + 4*i; the test reads them back.
    let body = r#"
    (i32.store (i32.const 1000) (call $rm (i32.const 0) (i32.const 0) (i32.const 8)))
    (i32.store (i32.const 1004) (call $get (i32.const 0) (i32.const 0) (i32.const 8) (i32.const 2000) (i32.const 2004)))
    (i32.store (i32.const 1008) (call $rm (i32.const 99) (i32.const 0) (i32.const 8)))
    (i32.store (i32.const 1012) (call $set (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 32) (i32.const 2)))
    (i32.store (i32.const 1016) (call $rm (i32.const 0) (i32.const 70000) (i32.const 8)))
    (i32.store (i32.const 1020) (call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 2000) (i32.const 2004)))
    i32.const 0"#;
    let p = plugin(&rt, &module(IMPORTS, body, ""), Limits::default()).unwrap();
    let mut i = p.start(b"", b"").unwrap();
    let id = i.open().unwrap();
    let mut s = Stream::default();
    s.request_headers = Fields::new(vec![(":path".into(), b"/".to_vec())]);
    assert_eq!(i.on_request_headers(id, &mut s, true), Ok(Action::Continue));
    let st = i.memory_at(1000, 24);
    let word = |n: usize| i32::from_le_bytes([st[n * 4], st[n * 4 + 1], st[n * 4 + 2], st[n * 4 + 3]]);
    assert_eq!(word(0), Status::Ok as i32, "removing an absent header is OK (the Rust SDK panics otherwise)");
    assert_eq!(word(1), Status::NotFound as i32);
    assert_eq!(word(2), Status::BadArgument as i32, "unknown map type");
    assert_eq!(word(3), Status::Ok as i32);
    assert_eq!(word(4), Status::InvalidMemoryAccess as i32);
    assert_eq!(word(5), Status::Ok as i32, "the header just set is found");
    let got = i.memory_at(2000, 8);
    let (ptr, len) =
        (u32::from_le_bytes(got[0..4].try_into().unwrap()), u32::from_le_bytes(got[4..8].try_into().unwrap()));
    assert_eq!(i.memory_at(ptr as usize, len as usize), b"v1", "values are copied into the plugin's memory");
    let changes: Vec<(&[u8], Vec<&[u8]>)> = s.request_headers.changes().map(|(n, v)| (n, v.collect())).collect();
    assert_eq!(changes.len(), 1, "only x-new changed: {changes:?}");
    assert_eq!(changes[0].0, b"x-new");
    assert_eq!(changes[0].1, vec![&b"v1"[..]]);
}

#[test]
fn unknown_imports_are_refused_by_name_before_anything_runs() {
    let rt = Runtime::new().unwrap();
    let imports = r#"(import "env" "proxy_teleport" (func (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))"#;
    let e = plugin(&rt, &module(imports, "i32.const 0", ""), Limits::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LoadError::Imports(_)));
    assert!(msg.contains("env.proxy_teleport") && msg.contains("wasi_snapshot_preview1.sock_accept"), "{msg}");
}

#[test]
fn modules_that_are_not_plugins_are_refused() {
    let rt = Runtime::new().unwrap();
    let bare = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    assert!(plugin(&rt, &bare, Limits::default()).unwrap_err().to_string().contains("not a proxy-wasm plugin"));
    let old =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_1_0")))"#).unwrap();
    assert!(plugin(&rt, &old, Limits::default()).unwrap_err().to_string().contains("0.1.0"));
    assert!(matches!(plugin(&rt, b"not wasm", Limits::default()), Err(LoadError::Compile(_))));
}

#[test]
fn an_endless_loop_is_interrupted_and_breaks_only_its_instance() {
    let rt = Runtime::new().unwrap();
    let body = "(loop $l (br $l)) i32.const 0";
    let limits = Limits { cpu: Duration::from_millis(20), ..Limits::default() };
    let p = plugin(&rt, &module("", body, ""), limits).unwrap();
    let mut i = p.start(b"", b"").unwrap();
    let id = i.open().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(i.on_request_headers(id, &mut Stream::default(), true), Err(Fault::Cpu(Duration::from_millis(20))));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(i.is_broken());
    assert_eq!(i.open(), Err(Fault::Broken));
    let mut fresh = p.start(b"", b"").unwrap();
    assert!(fresh.open().is_ok(), "another instance of the same plugin is unaffected");
}

#[test]
fn a_call_that_waits_for_the_cpu_is_not_charged_for_the_wait() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // The thread's CPU clock held still: the loop is descheduled, as on a busy machine.
    let used = Arc::new(AtomicU64::new(0));
    let u = used.clone();
    let rt = Runtime::with_cpu_clock(Arc::new(move || Duration::from_nanos(u.load(Ordering::Relaxed)))).unwrap();
    let cap = Duration::from_millis(10);
    let p = plugin(&rt, &module("", "(loop $l (br $l)) i32.const 0", ""), Limits { cpu: cap, ..Limits::default() })
        .unwrap();
    let mut i = p.start(b"", b"").unwrap();
    let id = i.open().unwrap();
    let call = std::thread::spawn(move || i.on_request_headers(id, &mut Stream::default(), true));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!call.is_finished(), "30 caps of wall time but no CPU used, and the call was stopped");
    // Now the thread has spent its cap, and the next deadline stops the call.
    used.store(1_000_000_000, Ordering::Relaxed);
    assert_eq!(call.join().unwrap(), Err(Fault::Cpu(cap)));
}

#[test]
fn growing_past_the_memory_cap_is_a_memory_fault() {
    let rt = Runtime::new().unwrap();
    let body = "(drop (memory.grow (i32.const 100))) unreachable";
    let limits = Limits { memory: 2 << 20, ..Limits::default() };
    let p = plugin(&rt, &module("", body, ""), limits).unwrap();
    let mut i = p.start(b"", b"").unwrap();
    let id = i.open().unwrap();
    assert_eq!(i.on_request_headers(id, &mut Stream::default(), true), Err(Fault::Memory(2 << 20)));
}

#[test]
fn a_refused_configuration_fails_the_start() {
    let rt = Runtime::new().unwrap();
    let extra = r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 0)"#;
    let p = plugin(&rt, &module("", "i32.const 0", extra), Limits::default()).unwrap();
    assert_eq!(p.start(b"", b"{}").unwrap_err(), Fault::Refused("on_configure"));
}

#[test]
fn local_responses_and_pauses_reach_the_embedder() {
    let rt = Runtime::new().unwrap();
    let imports = r#"(import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#;
    let body = r#"(drop (call $local (i32.const 401) (i32.const 0) (i32.const 0) (i32.const 32) (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 0))) i32.const 1"#;
    let p = plugin(&rt, &module(imports, body, ""), Limits::default()).unwrap();
    let mut i = p.start(b"", b"").unwrap();
    let id = i.open().unwrap();
    let mut s = Stream::default();
    assert_eq!(i.on_request_headers(id, &mut s, true), Ok(Action::Pause));
    let l = s.local.take().expect("a local response");
    assert_eq!((l.status, l.body.as_slice()), (401, &b"v1"[..]));
    i.close(id, &mut s).unwrap();
}

#[test]
fn a_map_kept_for_the_next_request_records_changes_anew_without_growing() {
    let mut f = Fields::default();
    for round in 0..3 {
        f.push(":path", b"/");
        f.push_raw(b"X-Seen", b"1");
        f.push_parts(":authority", &[b"a.example", b":", b"80"]);
        f.add_raw(b"X-Add", b"a");
        f.add("x-add", b"b");
        f.set_raw(b"x-seen", b"2");
        f.remove_raw(b"X-Gone");
        f.remove("x-seen");
        assert_eq!(f.get("x-SEEN"), None);
        assert_eq!(f.get(":authority"), Some(&b"a.example:80"[..]));
        let changes: Vec<(String, Vec<Vec<u8>>)> = f
            .changes()
            .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.map(<[u8]>::to_vec).collect()))
            .collect();
        assert_eq!(
            changes,
            vec![("x-add".into(), vec![b"a".to_vec(), b"b".to_vec()]), ("x-seen".into(), vec![])],
            "each changed name once, lower-case, with its values now; removing an absent name is no change"
        );
        f.forget_changes();
        assert!(!f.changed());
        let cap = f.capacities();
        f.clear();
        assert!(f.is_empty());
        if round > 0 {
            assert_eq!(f.capacities(), cap, "a cleared map keeps its buffers");
        }
    }
    f.push_raw(b"Content-Type", b"text/plain");
    f.push(":status", b"200");
    let mut out = Vec::new();
    f.serialize_into(&mut out);
    assert_eq!(out.len(), f.serialized_len());
    let pairs: [(&[u8], &[u8]); 2] = [(b"content-type", b"text/plain"), (b":status", b"200")];
    assert_eq!(out, crate::abi::serialize_pairs(pairs), "a peer's names reach the plugin lower-case");
    f.replace(vec![(b"X-Only".to_vec(), b"1".to_vec())]);
    let names: Vec<&[u8]> = f.changes().map(|(n, _)| n).collect();
    assert_eq!(names, [&b"content-type"[..], b":status", b"x-only"], "replacing changes every old and new name");
    f.clear();
    f.push_raw(b"x-big", &vec![b'a'; 20 << 10]);
    f.clear();
    assert_eq!(f.capacities().0, 0, "a map that grew large is not kept");
}

#[test]
fn a_reset_stream_is_empty_for_the_next_request() {
    let mut s = Stream::default();
    s.request_headers.add("x-a", b"1");
    s.response_body.extend_from_slice(b"body");
    s.local = Some(crate::stream::LocalResponse { status: 401, details: String::new(), headers: vec![], body: vec![] });
    s.resumed = true;
    s.properties.response_code = Some(200);
    s.reset();
    assert!(s.request_headers.is_empty() && !s.request_headers.changed());
    assert!(s.response_body.is_empty() && s.local.is_none() && !s.resumed);
    assert_eq!(s.properties.response_code, None);
}
