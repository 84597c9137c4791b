//! Reading plugin packages from disk: a config's `plugin_packages` directories, each with
//! `metadata.yaml`, `config.schema.json` and `plugin.wasm`, checked and hashed, so the config
//! can be validated against them (`weir-config` does no I/O).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_config::package::{Package, PackageMeta, check_schema};
use weir_config::{ConfigError, ConfigErrors, ValidConfig};

/// Reads and checks the package in `dir`; every problem carries the file it is in.
pub fn read_package(dir: &Path) -> Result<Package, ConfigErrors> {
    let file = |name: &str| dir.join(name);
    let read = |name: &str| {
        std::fs::read(file(name))
            .map_err(|e| ConfigErrors::one(name, format!("cannot read {}: {e}", file(name).display())))
    };
    let mut errors = Vec::new();
    fn within(f: &'static str, e: ConfigErrors) -> impl Iterator<Item = ConfigError> {
        e.0.into_iter().map(move |c| ConfigError {
            path: if c.path.is_empty() { f.to_owned() } else { format!("{f}: {}", c.path) },
            message: c.message,
        })
    }
    let meta = read("metadata.yaml").and_then(|b| PackageMeta::parse(&String::from_utf8_lossy(&b)));
    let schema = read("config.schema.json").and_then(|b| {
        let v: serde_json::Value =
            serde_json::from_slice(&b).map_err(|e| ConfigErrors::one("", format!("not valid JSON: {e}")))?;
        check_schema(&v).map(|()| v)
    });
    let wasm = read("plugin.wasm").map_err(|e| {
        let hint = "build it first (cargo build --target wasm32-wasip1 --release) and copy the .wasm here";
        ConfigErrors::one("plugin.wasm", format!("{}; {hint}", e.0[0].message))
    });
    let (meta, schema, wasm) = match (meta, schema, wasm) {
        (Ok(m), Ok(s), Ok(w)) => (m, s, w),
        (m, s, w) => {
            errors.extend(m.err().into_iter().flat_map(|e| within("metadata.yaml", e)));
            errors.extend(s.err().into_iter().flat_map(|e| within("config.schema.json", e)));
            errors.extend(w.err().into_iter().flat_map(|e| e.0));
            return Err(ConfigErrors(errors));
        }
    };
    let sha256 = sha256_hex(&wasm);
    Ok(Package { dir: Some(dir.to_owned()), meta, schema, wasm: Arc::from(wasm), sha256 })
}

/// Parses a config, reads the packages it lists (relative to `base`), and validates it with
/// them: every error of every step, each at its path.
pub fn load_config(text: &str, base: &Path) -> Result<ValidConfig, ConfigErrors> {
    match weir_config::parse_yaml_or_rest(text) {
        Ok(spec) => with_packages(spec, base),
        // Schema errors, and what the rest of the file gets wrong besides.
        Err((errs, rest)) => Err(weir_config::every_error(errs, rest, |spec| with_packages(spec, base))),
    }
}

/// Reads the packages `spec` lists and validates it with them.
fn with_packages(spec: weir_config::ConfigSpec, base: &Path) -> Result<ValidConfig, ConfigErrors> {
    let mut packages = Vec::new();
    let mut errors = Vec::new();
    for (i, dir) in spec.plugin_packages.iter().enumerate() {
        match read_package(&resolve(base, dir)) {
            Ok(p) => packages.push(Arc::new(p)),
            Err(e) => errors.extend(e.0.into_iter().map(|c| ConfigError {
                path: format!("plugin_packages[{i}]"),
                message: format!("{dir}/{}: {}", c.path, c.message),
            })),
        }
    }
    ConfigErrors::after(errors, weir_config::validate_with_packages(Arc::new(spec), packages))
}

/// `dir` relative to the config file's directory, unless absolute.
pub fn resolve(base: &Path, dir: &str) -> PathBuf {
    let p = Path::new(dir);
    if p.is_absolute() { p.to_owned() } else { base.join(p) }
}

/// The sha256 of a module, lower-case hex: how packages and the control plane name it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
