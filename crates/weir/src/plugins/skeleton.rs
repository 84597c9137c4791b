//! `weir plugins new NAME`: a Rust project on the proxy-wasm SDK whose build is a valid
//! package (the same layout the examples under `plugins/examples/` use).

use std::path::Path;
use std::process::ExitCode;

const LIB: &str = r#"//! __NAME__: a Weir plugin package on the proxy-wasm Rust SDK.
//!
//! Adds a response header from its configuration: `{"header": "x-__NAME__", "value": "hello"}`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Clone, serde::Deserialize)]
#[serde(default)]
struct Config {
    header: String,
    value: String,
}

impl Default for Config {
    fn default() -> Self {
        Self { header: "x-__NAME__".into(), value: "hello".into() }
    }
}

#[derive(Default)]
struct Root {
    cfg: Config,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        if raw.is_empty() {
            return true;
        }
        match serde_json::from_slice(&raw) {
            Ok(c) => {
                self.cfg = c;
                true
            }
            Err(e) => {
                log::error!("bad configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { cfg: self.cfg.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    cfg: Config,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header(&self.cfg.header, Some(&self.cfg.value));
        Action::Continue
    }
}
"#;

const CARGO: &str = r#"[package]
name = "__CRATE__"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
proxy-wasm = "0.2.5"
log = "0.4"
serde = { version = "1", features = ["derive"] }
serde_json = "1"

[profile.release]
lto = true
opt-level = 3
codegen-units = 1
panic = "abort"
strip = "debuginfo"

# A project of its own, even inside another workspace.
[workspace]
"#;

const META: &str = "name: __NAME__
version: 0.1.0
author: ''
description: Adds a response header
# access | authn | rate_limit | transform
phase: transform
# Higher runs first within the phase.
priority: 0
# fail_closed answers 503 when the plugin fails; fail_open skips it.
failure_policy: fail_open
# true: the route buffers bodies for on_request_body / on_response_body (and trailers).
reads_bodies: false
# true: trailers reach on_*_trailers while bodies stream (implied by reads_bodies).
reads_trailers: false
";

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "header": { "type": "string", "pattern": "^[a-z0-9-]+$" },
    "value": { "type": "string" }
  }
}
"#;

const BUILD: &str = "#!/bin/sh
# Builds plugin.wasm; then `weir plugins validate .` checks the package.
set -e
cd \"$(dirname \"$0\")\"
cargo build --target wasm32-wasip1 --release
cp \"${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/__CRATE__.wasm\" plugin.wasm
";

const README: &str = "# __NAME__

A Weir plugin package: `metadata.yaml`, `config.schema.json`, and `plugin.wasm` built from
`src/lib.rs` with the proxy-wasm Rust SDK.

    rustup target add wasm32-wasip1
    ./build.sh
    weir plugins validate .

Use it from a config:

    plugin_packages: [path/to/__NAME__]
    routes:
      - name: api
        match: { path: { prefix: / } }
        upstream: app
        plugins:
          - name: __NAME__
            config: { header: x-__NAME__, value: hello }
";

pub(super) fn write(name: &str, dir: &Path) -> ExitCode {
    if let Err(why) = weir_config::package::check_name(name) {
        eprintln!("{why}");
        return ExitCode::FAILURE;
    }
    if dir.exists() {
        eprintln!("{} exists already; choose another --dir", dir.display());
        return ExitCode::FAILURE;
    }
    match files(name, dir) {
        Ok(()) => {
            println!(
                "wrote {}: build it with {}/build.sh, then `weir plugins validate {}`",
                dir.display(),
                dir.display(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn files(name: &str, dir: &Path) -> std::io::Result<()> {
    let krate = name.replace('-', "_");
    let fill = |t: &str| t.replace("__NAME__", name).replace("__CRATE__", &krate);
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("src/lib.rs"), fill(LIB))?;
    std::fs::write(dir.join("Cargo.toml"), fill(CARGO))?;
    std::fs::write(dir.join("metadata.yaml"), fill(META))?;
    std::fs::write(dir.join("config.schema.json"), SCHEMA)?;
    std::fs::write(dir.join("README.md"), fill(README))?;
    std::fs::write(dir.join(".gitignore"), "/target\nplugin.wasm\n")?;
    let build = dir.join("build.sh");
    std::fs::write(&build, fill(BUILD))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&build, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
