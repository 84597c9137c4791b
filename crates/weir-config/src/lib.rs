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
pub mod locate;
pub mod mcp;
mod messages;
pub mod package;
pub mod plugins;
pub mod precedence;
pub mod registrations;
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
    parse_yaml_or_rest(text).map_err(|(errs, _)| errs)
}

/// [`parse_yaml`], and on schema violations also the rest of the document: the spec read with
/// the offending values left out, when that reads (so cross-field checks can report their
/// problems in the same pass). A missing required field or a bad list item leaves no rest.
pub fn parse_yaml_or_rest(text: &str) -> Result<ConfigSpec, (ConfigErrors, Option<Box<ConfigSpec>>)> {
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| (ConfigErrors::one("", format!("not valid YAML: {e}")), None))?;
    parse_value_or_rest(value)
}

/// Checks a JSON document against the schema and reads it into a spec, reporting every
/// violation with its path.
pub fn parse_value(value: serde_json::Value) -> Result<ConfigSpec, ConfigErrors> {
    parse_value_or_rest(value).map_err(|(errs, _)| errs)
}

fn parse_value_or_rest(value: serde_json::Value) -> Result<ConfigSpec, (ConfigErrors, Option<Box<ConfigSpec>>)> {
    let mut value = if value.is_null() { serde_json::json!({}) } else { value };
    let mut errs = Vec::new();
    let mut offending = Vec::new();
    if let Some(v) = schema_validator() {
        for e in v.iter_errors(&value) {
            let pointer = e.instance_path().to_string();
            // Each unknown field at its own path (and line), so what else the mapping lacks is
            // still reported.
            if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = e.kind() {
                for key in unexpected {
                    let at = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                    errs.push(ConfigError { path: error::pointer_to_path(&at), message: messages::unknown_field(key) });
                    offending.push((at, false));
                }
                continue;
            }
            let required = matches!(e.kind(), jsonschema::error::ValidationErrorKind::Required { .. });
            errs.push(ConfigError { path: error::pointer_to_path(&pointer), message: messages::humanize(&e) });
            offending.push((pointer, required));
        }
    }
    if errs.is_empty() {
        return serde_json::from_value(value).map_err(|e| (ConfigErrors::one("", e.to_string()), None));
    }
    let repaired = offending.iter().all(|(p, required)| !required && remove_field(&mut value, p));
    let rest = repaired.then(|| serde_json::from_value(value).ok().map(Box::new)).flatten();
    Err((ConfigErrors(errs), rest))
}

/// Removes the mapping field at `pointer`; false when it is not one (the document itself or a
/// list item, whose removal would renumber its siblings).
pub(crate) fn remove_field(doc: &mut serde_json::Value, pointer: &str) -> bool {
    let Some((parent, key)) = pointer.rsplit_once('/') else { return false };
    let key = key.replace("~1", "/").replace("~0", "~");
    match doc.pointer_mut(parent) {
        Some(serde_json::Value::Object(m)) => {
            m.remove(&key);
            true
        }
        _ => false,
    }
}

/// Every error of a document at once: its schema violations, then the cross-field problems
/// `check` finds in the rest of it (those under a field already reported are left out).
pub fn every_error<T>(
    schema: ConfigErrors,
    rest: Option<Box<ConfigSpec>>,
    check: impl FnOnce(ConfigSpec) -> Result<T, ConfigErrors>,
) -> ConfigErrors {
    let Some(Err(more)) = rest.map(|r| check(*r)) else { return schema };
    merge_errors(schema, more)
}

/// Schema errors, then the cross-field errors `more` adds that are not under a field the
/// schema errors already name.
pub fn merge_errors(schema: ConfigErrors, more: ConfigErrors) -> ConfigErrors {
    let mut all = schema.0;
    let reported: Vec<String> = all.iter().map(|e| e.path.clone()).collect();
    let under = |p: &str, r: &str| p == r || p.starts_with(&format!("{r}.")) || p.starts_with(&format!("{r}["));
    all.extend(more.0.into_iter().filter(|e| !reported.iter().any(|r| under(&e.path, r))));
    ConfigErrors(all)
}

/// Parses and validates: the one entry point for file, API and stream sources.
pub fn load_yaml(text: &str) -> Result<ValidConfig, ConfigErrors> {
    match parse_yaml_or_rest(text) {
        Ok(spec) => validate(spec),
        Err((errs, rest)) => Err(every_error(errs, rest, validate)),
    }
}
