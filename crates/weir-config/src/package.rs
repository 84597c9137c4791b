//! Plugin packages: the vocabulary of a package directory (`metadata.yaml`,
//! `config.schema.json`, `plugin.wasm`) and the checks on its metadata and schema.
//!
//! Owns: [`PackageMeta`] and its rules, [`Package`], a package as read by the caller (this
//! crate does no I/O; the gateway and the CLI read the files and hand them here), and
//! [`PackageSpec`], a package as the control plane stores and pushes it (the module by hash).
//! Does not own: compiling or running the module (`weir-wasm`).

use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigErrors, Errors};
use crate::{ByteSize, HumanDuration};

/// `metadata.yaml` of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageMeta {
    /// The name routes use for it (`plugins: [{ name: … }]`): lower-case letters, digits, `-`.
    pub name: String,
    /// Its version (semver, e.g. `1.2.0`).
    pub version: String,
    /// Who wrote it.
    #[serde(default)]
    pub author: String,
    /// What it does, in one line.
    #[serde(default)]
    pub description: String,
    /// The filter-chain phase it runs in.
    pub phase: PackagePhase,
    /// Order within the phase: higher runs first (built-ins of the phase run before any package).
    #[serde(default)]
    pub priority: i32,
    /// What a request gets when the plugin fails (trap, CPU or memory limit, open breaker).
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Whether it reads or rewrites request or response bodies (its routes then buffer them).
    #[serde(default)]
    pub reads_bodies: bool,
    /// Whether it reads or edits trailers without reading bodies: its routes stream bodies
    /// through hyper, which hands it each message's trailers as they pass (a plugin that reads
    /// bodies gets trailers anyway). Off by default, so a route whose plugins read only heads
    /// keeps the HTTP/1.1 fast path.
    #[serde(default)]
    pub reads_trailers: bool,
    /// The root id its instances are given (`plugin_root_id`), for SDKs that register root
    /// contexts by name (AssemblyScript's); empty by default, as in Envoy.
    #[serde(default)]
    pub root_id: String,
    /// Resource caps for each instance.
    #[serde(default)]
    pub limits: PackageLimits,
    /// When a plugin that keeps failing stops being called.
    #[serde(default)]
    pub breaker: BreakerSettings,
}

/// The circuit breaker of a package: `failures` within `window` open it for `cooldown`, then
/// one request tries the plugin again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Failures that open it.
    pub failures: u32,
    /// The window they are counted in.
    pub window: HumanDuration,
    /// How long it stays open.
    pub cooldown: HumanDuration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            window: HumanDuration(std::time::Duration::from_secs(30)),
            cooldown: HumanDuration(std::time::Duration::from_secs(10)),
        }
    }
}

/// The phases a package may run in (the built-in chain's, less CORS and logging).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PackagePhase {
    /// With request ids and IP rules.
    Access,
    /// Authentication.
    Authn,
    /// Rate limiting.
    RateLimit,
    /// Header and path edits.
    Transform,
}

/// What a failing plugin means for the request in hand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Answer 503 (the safe choice for authentication and policy plugins).
    #[default]
    FailClosed,
    /// Skip the plugin and go on.
    FailOpen,
}

/// Caps on one instance of a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PackageLimits {
    /// CPU time one callback may use (CPU time, not wall time: a descheduled callback is not
    /// charged for the wait); a runaway callback is stopped within twice this.
    pub cpu: HumanDuration,
    /// Linear memory one instance may grow to.
    pub memory: ByteSize,
    /// How long a paused request (waiting on a callout) may wait for the plugin.
    pub pause: HumanDuration,
}

impl Default for PackageLimits {
    fn default() -> Self {
        Self {
            cpu: HumanDuration(std::time::Duration::from_millis(10)),
            memory: ByteSize(64 << 20),
            pause: HumanDuration(std::time::Duration::from_secs(5)),
        }
    }
}

/// A package, its module in hand.
#[derive(Clone, Debug, PartialEq)]
pub struct Package {
    /// The directory it was read from; `None` when a control plane pushed it.
    pub dir: Option<PathBuf>,
    /// Its metadata.
    pub meta: PackageMeta,
    /// The JSON Schema of its `config`.
    pub schema: serde_json::Value,
    /// The module's bytes.
    pub wasm: Arc<[u8]>,
    /// sha256 of the module, lower-case hex: its identity across reloads and the fleet.
    pub sha256: String,
}

impl PackageMeta {
    /// Parses `metadata.yaml` and checks it, every problem with its field.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| ConfigErrors::one("", format!("not valid YAML: {e}")))?;
        let meta: Self = serde_json::from_value(value).map_err(|e| ConfigErrors::one("", e.to_string()))?;
        let mut errs = Errors::default();
        meta.check(&mut errs, "");
        errs.finish()?;
        Ok(meta)
    }

    /// The rules the types cannot state, each problem at `at` + its field.
    fn check(&self, errs: &mut Errors, at: &str) {
        let mut bad = |field: &str, why: String| errs.push(format!("{at}{field}"), why);
        if let Err(why) = check_name(&self.name) {
            bad("name", why);
        }
        let semver = self.version.split('.').count() == 3
            && self
                .version
                .split(['.', '-', '+'])
                .take(3)
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !semver {
            bad("version", format!("{:?} is not a version; write MAJOR.MINOR.PATCH, e.g. 1.0.0", self.version));
        }
        if self.limits.cpu.0.is_zero() || self.limits.cpu.0 > std::time::Duration::from_secs(1) {
            bad("limits.cpu", "give a CPU cap between 1ms and 1s".into());
        }
        if self.breaker.failures == 0 {
            bad("breaker.failures", "give at least 1 failure".into());
        }
        if self.limits.memory.0 < (1 << 20) {
            bad("limits.memory", "give at least 1MiB of memory".into());
        }
    }
}

/// A package as a control plane stores and pushes it (`kind: Package`): metadata and schema
/// inline, the module by its sha256 (uploaded once, fetched by each gateway that lacks it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// The package's name: its metadata's name.
    pub name: String,
    /// `metadata.yaml`.
    pub metadata: PackageMeta,
    /// `config.schema.json`.
    pub schema: serde_json::Value,
    /// The module.
    pub module: ModuleRef,
}

/// A module by content: its sha256 and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleRef {
    /// sha256 of `plugin.wasm`, 64 lower-case hex digits.
    pub sha256: String,
    /// Its length in bytes.
    pub size: u64,
}

/// Why the bytes of a module a package names are not at hand.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// Bytes are held, but not as many as the package declares.
    #[error("size says {declared} bytes but module {sha256} has {actual}")]
    Size {
        /// The module.
        sha256: String,
        /// `module.size`.
        declared: u64,
        /// What is held.
        actual: u64,
    },
    /// Nothing is held under that hash; `hint` says how to get it there.
    #[error("no module with sha256 {sha256} is held here; {hint}")]
    Missing {
        /// The module.
        sha256: String,
        /// What to do, in plain words.
        hint: &'static str,
    },
    /// Fetching or reading it failed.
    #[error("cannot get module {sha256}: {reason}")]
    Unavailable {
        /// The module.
        sha256: String,
        /// Why.
        reason: String,
    },
}

impl ModuleError {
    /// [`ModuleError::Size`] when `actual` is not what `m` declares.
    pub fn check_size(m: &ModuleRef, actual: usize) -> Result<(), Self> {
        match actual as u64 == m.size {
            true => Ok(()),
            false => Err(Self::Size { sha256: m.sha256.clone(), declared: m.size, actual: actual as u64 }),
        }
    }
}

/// Whether `s` is a sha256 as Weir writes it: 64 lower-case hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl PackageSpec {
    /// The spec of a package read from disk.
    pub fn of(p: &Package) -> Self {
        Self {
            name: p.meta.name.clone(),
            metadata: p.meta.clone(),
            schema: p.schema.clone(),
            module: ModuleRef { sha256: p.sha256.clone(), size: p.wasm.len() as u64 },
        }
    }

    /// Checks what its types cannot: every problem, its path under `at` (`Package/x.`).
    pub fn check(&self, at: &str) -> Result<(), ConfigErrors> {
        let mut errs = Errors::default();
        if self.name != self.metadata.name {
            errs.push(
                format!("{at}name"),
                format!("{:?} differs from metadata.name {:?}; they must match", self.name, self.metadata.name),
            );
        }
        self.metadata.check(&mut errs, &format!("{at}metadata."));
        if let Err(e) = check_schema(&self.schema) {
            errs.push(format!("{at}schema"), e.0[0].message.clone());
        }
        if !is_sha256(&self.module.sha256) {
            errs.push(format!("{at}module.sha256"), "expected 64 lower-case hex digits (the sha256 of plugin.wasm)");
        }
        errs.finish()
    }

    /// The package, given its module's bytes (checked against the hash by whoever fetched them).
    pub fn with_module(&self, wasm: Arc<[u8]>) -> Package {
        Package {
            dir: None,
            meta: self.metadata.clone(),
            schema: self.schema.clone(),
            wasm,
            sha256: self.module.sha256.clone(),
        }
    }
}

/// Checks a package name: lower-case letters, digits and `-`, at most 64, not a built-in's.
pub fn check_name(name: &str) -> Result<(), String> {
    let pattern = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !pattern {
        return Err(format!("{name:?} is not a plugin name; use lower-case letters, digits and -"));
    }
    if crate::plugins::builtin(name).is_some() {
        return Err(format!("{name:?} is a built-in plugin; choose another name"));
    }
    Ok(())
}

/// Checks `config` against a package's `schema`: every violation, at its path under `config`.
pub fn check_config(schema: &serde_json::Value, config: &serde_json::Value) -> Result<(), ConfigErrors> {
    let mut errs = Errors::default();
    crate::plugins::against_schema(&mut errs, "", schema, config);
    errs.finish()
}

/// Checks that `schema` is a JSON Schema a config can be validated against.
pub fn check_schema(schema: &serde_json::Value) -> Result<(), ConfigErrors> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(ConfigErrors::one("", "the schema must be a JSON object"));
    }
    jsonschema::validator_for(schema)
        .map(drop)
        .map_err(|e| ConfigErrors::one("", format!("not a valid JSON Schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_with_defaults_parses() {
        let m = PackageMeta::parse("name: add-header\nversion: 1.2.3\nphase: transform\n").unwrap();
        assert_eq!(m.failure_policy, FailurePolicy::FailClosed);
        assert_eq!(m.limits, PackageLimits::default());
        assert!(!m.reads_bodies);
    }

    #[test]
    fn bad_metadata_reports_every_field() {
        let e = PackageMeta::parse("name: Bad_Name\nversion: one\nphase: transform\nlimits: {cpu: 0s}\n").unwrap_err();
        let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["name", "version", "limits.cpu"], "{e}");
        let e = PackageMeta::parse("name: cors\nversion: 1.0.0\nphase: transform\n").unwrap_err();
        assert!(e.to_string().contains("built-in"), "{e}");
        let e = PackageMeta::parse("name: x\nversion: 1.0.0\nphase: somewhere\n").unwrap_err();
        assert!(e.to_string().contains("somewhere"), "{e}");
    }

    #[test]
    fn configs_are_checked_against_the_package_schema_with_paths() {
        let schema = serde_json::json!({"type": "object", "properties": {"from": {"type": "string"}}});
        assert!(check_config(&schema, &serde_json::json!({"from": "x"})).is_ok());
        let e = check_config(&schema, &serde_json::json!({"from": 1})).unwrap_err();
        assert_eq!(e.0[0].path, "config.from", "{e}");
        assert!(check_name("shout").is_ok());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("key-auth").unwrap_err().contains("built-in"));
    }

    #[test]
    fn schemas_are_checked() {
        assert!(check_schema(&serde_json::json!({"type": "object"})).is_ok());
        assert!(check_schema(&serde_json::json!({"type": 12})).is_err());
        assert!(check_schema(&serde_json::json!("x")).is_err());
    }
}
