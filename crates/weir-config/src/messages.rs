//! Schema violations in words an operator acts on, instead of JSON Schema's own
//! (`"5 seconds" is not valid under any of the schemas listed in the 'anyOf' keyword`).
//!
//! Owns: turning a `jsonschema` error into one sentence: for `anyOf`/`oneOf`, the reason of the
//! alternative that came closest (an optional field's "or null" is never it); durations and
//! sizes by name with examples; unknown and missing fields by name.

use jsonschema::ValidationError;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

/// Short JSON for a value in a message (long values are cut).
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 { format!("{}…", s.chars().take(57).collect::<String>()) } else { s }
}

fn type_name(k: &TypeKind) -> String {
    let one = |t: &jsonschema::JsonType| match t.to_string().as_str() {
        "object" => "a mapping".to_owned(),
        "array" => "a list".to_owned(),
        "integer" => "a whole number".to_owned(),
        "number" => "a number".to_owned(),
        "boolean" => "true or false".to_owned(),
        "string" => "a string".to_owned(),
        other => other.to_owned(),
    };
    match k {
        TypeKind::Single(t) => one(t),
        TypeKind::Multiple(ts) => ts.iter().map(|t| one(&t)).collect::<Vec<_>>().join(" or "),
    }
}

/// Whether an alternative failed only for not being null (the `None` of an optional field).
fn only_not_null(errors: &[ValidationError<'_>]) -> bool {
    errors
        .iter()
        .all(|e| matches!(e.kind(), ValidationErrorKind::Type { kind: TypeKind::Single(t) } if t.to_string() == "null"))
}

/// The alternative of an `anyOf`/`oneOf` that came closest: null aside, one whose type the
/// value has (it failed for its form, not its kind), then the fewest errors.
fn closest<'e, 'a>(context: &'e [Vec<ValidationError<'a>>]) -> Option<&'e ValidationError<'a>> {
    let wrong_type =
        |alt: &[ValidationError<'_>]| alt.iter().all(|e| matches!(e.kind(), ValidationErrorKind::Type { .. }));
    context
        .iter()
        .filter(|alt| !alt.is_empty() && !only_not_null(alt))
        .min_by_key(|alt| (wrong_type(alt), alt.len()))?
        .first()
}

/// The fields each alternative requires, when every alternative failed for lacking them or
/// for an unknown field: the shape is wrong, and the answer is the list of shapes.
fn shapes(context: &[Vec<ValidationError<'_>>]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for alt in context {
        let mut req = None;
        for e in alt {
            match e.kind() {
                ValidationErrorKind::Required { property } => req = property.as_str().map(str::to_owned),
                ValidationErrorKind::AdditionalProperties { .. } => {}
                _ => return None,
            }
        }
        names.push(req?);
    }
    Some(names)
}

/// A field the schema does not know, found at its own path.
pub(crate) fn unknown_field(name: &str) -> String {
    format!("unknown field {name:?}: check the spelling (`weir schema` lists every field)")
}

/// One sentence for `e`.
pub(crate) fn humanize(e: &ValidationError<'_>) -> String {
    let value = e.instance();
    match e.kind() {
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            if let Some(names) = shapes(context).filter(|n| !n.is_empty()) {
                return format!("expected one of the forms {}: write exactly one of them", names.join(", "));
            }
            match closest(context) {
                Some(inner) => humanize(inner),
                None => format!("{} is not one of the allowed forms", shown(value)),
            }
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            format!("{} fits more than one form; give only one of them", shown(value))
        }
        ValidationErrorKind::Pattern { pattern } if pattern.contains("ns|us|ms") => {
            format!("{} is not a duration; write 5s, 250ms or 1m", shown(value))
        }
        ValidationErrorKind::Pattern { pattern } if pattern.contains("[kKmMgG]") => {
            format!("{} is not a size; write 512KiB, 1MiB or a number of bytes", shown(value))
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("{} does not have the expected form (pattern {pattern})", shown(value))
        }
        ValidationErrorKind::Type { kind } => {
            format!("expected {}, got {}", type_name(kind), shown(value))
        }
        ValidationErrorKind::Required { property } => {
            format!("missing {}: it is required here", shown(property))
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let names: Vec<String> = unexpected.iter().map(|u| format!("{u:?}")).collect();
            format!(
                "unknown field{} {}: check the spelling (`weir schema` lists every field)",
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            )
        }
        ValidationErrorKind::Enum { options } => {
            let opts: Vec<String> = options.as_array().into_iter().flatten().map(shown).collect();
            format!("{} is not one of {}", shown(value), opts.join(", "))
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn first(schema: &Value, value: &Value) -> String {
        let v = jsonschema::validator_for(schema).unwrap();
        let e = v.iter_errors(value).next().unwrap();
        humanize(&e)
    }

    #[test]
    fn optional_durations_sizes_and_shapes_read_plainly() {
        let duration = json!({"type": "string", "pattern": "^[0-9]+(ns|us|ms|s|m|h|d)$"});
        let optional = json!({"anyOf": [duration, {"type": "null"}]});
        assert_eq!(first(&optional, &json!("5 seconds")), "\"5 seconds\" is not a duration; write 5s, 250ms or 1m");
        let size = json!({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+[kKmMgG]?$"}]});
        assert!(first(&size, &json!("big")).contains("is not a size"));
        let forms = json!({"oneOf": [
            {"type": "object", "required": ["prefix"], "additionalProperties": false, "properties": {"prefix": {}}},
            {"type": "object", "required": ["exact"], "additionalProperties": false, "properties": {"exact": {}}},
        ]});
        assert_eq!(
            first(&forms, &json!({"prefx": "/a"})),
            "expected one of the forms prefix, exact: write exactly one of them"
        );
        let obj = json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false});
        assert!(first(&obj, &json!({"b": 1})).starts_with("unknown field \"b\""));
        assert_eq!(first(&json!({"type": "integer"}), &json!("x")), "expected a whole number, got \"x\"");
    }
}
