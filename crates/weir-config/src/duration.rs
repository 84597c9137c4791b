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

/// Written in the units the schema's pattern accepts (`1d2h`, `1m30s`, `250ms`), so what is
/// serialized always reads back (humantime's own form writes `days` and `months`).
impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u128); 7] = [
            ("d", 86_400_000_000_000),
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ];
        let mut left = self.0.as_nanos();
        if left == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in UNITS {
            if left >= size {
                write!(f, "{}{unit}", left / size)?;
                left %= size;
            }
        }
        Ok(())
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
    fn what_is_written_reads_back_and_matches_the_schema() {
        let schema = serde_json::to_value(schemars::schema_for!(HumanDuration)).unwrap();
        let check = jsonschema::validator_for(&schema).unwrap();
        for d in [0, 1, 999, 1_000_000, 1_500_000_000, 90_000_000_000, 86_400_000_000_000 * 40 + 7] {
            let h = HumanDuration(Duration::from_nanos(d));
            let v = serde_json::to_value(h).unwrap();
            assert!(check.is_valid(&v), "{v} does not match the schema");
            assert_eq!(serde_json::from_value::<HumanDuration>(v).unwrap(), h);
        }
        assert_eq!(HumanDuration(Duration::from_millis(90_250)).to_string(), "1m30s250ms");
    }

    #[test]
    fn parses_common_forms() {
        for (s, d) in [("100ms", 100), ("5s", 5000), ("10m", 600_000), ("1m30s", 90_000)] {
            let v: HumanDuration = serde_json::from_value(serde_json::json!(s)).unwrap();
            assert_eq!(v.get(), Duration::from_millis(d), "{s}");
        }
        assert!(serde_json::from_value::<HumanDuration>(serde_json::json!("5 parsecs")).is_err());
    }
}
