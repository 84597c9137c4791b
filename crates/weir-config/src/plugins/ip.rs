//! `ip-restriction` configuration.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Errors;

/// Allow or deny clients by address. Deny wins; with an allow list, everyone else is denied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// CIDRs or single addresses denied.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Parses `addr` or `addr/len`.
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<std::net::IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a: std::net::IpAddr = s.parse().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

impl IpRestrictionConfig {
    pub(crate) fn check(&self, errs: &mut Errors, at: &str) {
        for (list, name) in [(&self.allow, "allow"), (&self.deny, "deny")] {
            for (i, c) in list.iter().enumerate() {
                if parse_cidr(c).is_none() {
                    errs.push(
                        format!("{at}.{name}[{i}]"),
                        format!("invalid CIDR {c:?}: write e.g. 10.0.0.0/8 or 192.0.2.7"),
                    );
                }
            }
        }
        if self.allow.is_empty() && self.deny.is_empty() {
            errs.push(at, "give an `allow` or a `deny` list");
        }
    }
}
