//! Weir's configuration vocabulary, shared by the gateway, the control plane and the CLI.
//!
//! Handles: the config model ([`spec`]), parsing YAML/JSON into it, checking it against its
//! JSON Schema and against cross-field rules, and reporting *every* problem with its path
//! (`routes[2].match.path.regex: invalid regex …`).
//!
//! Does NOT contain: any I/O, async runtime or runtime (compiled) form of the config.

pub mod assembly;
pub mod duration;
mod error;
pub mod package;
pub mod plugins;
pub mod resources;
pub mod size;
pub mod spec;
mod validate;

use std::sync::OnceLock;

pub use duration::HumanDuration;
pub use error::{ConfigError, ConfigErrors};
pub use size::ByteSize;
pub use spec::ConfigSpec;
pub use validate::{ValidConfig, validate, validate_shared, validate_with_packages};

/// The JSON Schema of [`ConfigSpec`], as pretty JSON.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ConfigSpec)).unwrap_or_default()
}

fn schema_validator() -> Option<&'static jsonschema::Validator> {
    static V: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| jsonschema::validator_for(&json_schema()).ok()).as_ref()
}

/// Parses YAML (JSON is YAML too) into a spec, reporting every schema violation with its path.
pub fn parse_yaml(text: &str) -> Result<ConfigSpec, ConfigErrors> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| ConfigErrors::one("", format!("not valid YAML: {e}")))?;
    parse_value(value)
}

/// Checks a JSON document against the schema and reads it into a spec, reporting every
/// violation with its path.
pub fn parse_value(value: serde_json::Value) -> Result<ConfigSpec, ConfigErrors> {
    let value = if value.is_null() { serde_json::json!({}) } else { value };
    if let Some(v) = schema_validator() {
        let errs: Vec<ConfigError> = v
            .iter_errors(&value)
            .map(|e| ConfigError {
                path: error::pointer_to_path(&e.instance_path().to_string()),
                message: e.to_string(),
            })
            .collect();
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
    }
    serde_json::from_value(value).map_err(|e| ConfigErrors::one("", e.to_string()))
}

/// Parses and validates: the one entry point for file, API and stream sources.
pub fn load_yaml(text: &str) -> Result<ValidConfig, ConfigErrors> {
    validate(parse_yaml(text)?)
}
