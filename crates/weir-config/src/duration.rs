//! Human-readable durations (`250ms`, `5s`, `10m`) as they appear in config files.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way operators write them: `100ms`, `5s`, `1m 30s`, `10m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Seconds as a `HumanDuration`.
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// Milliseconds as a `HumanDuration`.
    pub const fn millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// The wrapped duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_duration(self.0), f)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e} (write e.g. 500ms, 5s, 10m)")))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as 250ms, 5s, 1m30s or 10m",
            "pattern": "^\\s*[0-9]+\\s*(ns|us|ms|s|m|h|d)(\\s*[0-9]+\\s*(ns|us|ms|s|m|h|d))*\\s*$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        for (s, d) in [("100ms", 100), ("5s", 5000), ("10m", 600_000), ("1m30s", 90_000)] {
            let v: HumanDuration = serde_json::from_value(serde_json::json!(s)).unwrap();
            assert_eq!(v.get(), Duration::from_millis(d), "{s}");
        }
        assert!(serde_json::from_value::<HumanDuration>(serde_json::json!("5 parsecs")).is_err());
    }
}
