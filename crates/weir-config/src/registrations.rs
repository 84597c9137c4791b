//! Registered endpoints, indexed by name and by upstream, and their checks.
//!
//! Owns: the registrations of a config kept beside its spec rather than in it. They change
//! with every service that registers or stops renewing, while the rest changes with operators,
//! so one added or removed endpoint must cost the same whatever the number of registrations:
//! recording it is O(log n) in persistent maps (a copy shares everything but the changed
//! path), checking it looks at its own upstream only, and a gateway reads the endpoints of the
//! one upstream it changed ([`Registrations::endpoints`]).

use std::net::IpAddr;

use crate::error::Errors;
use crate::spec::{EndpointSpec, RegistrationSpec};

/// One upstream's registered endpoints, ordered by address and port; the name disambiguates
/// two registrations of one endpoint (an invalid state a check reports).
type Members = imbl::OrdMap<(IpAddr, u16, String), u32>;

/// Every registration, by name and by upstream. Cloning shares the maps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registrations {
    by_name: imbl::HashMap<String, RegistrationSpec>,
    by_upstream: imbl::HashMap<String, Members>,
}

/// The highest weight a registration may carry.
const MAX_WEIGHT: u32 = 10_000;

impl Registrations {
    /// Indexes `specs` (a later one of the same name replaces an earlier one).
    pub fn from_specs<'a>(specs: impl IntoIterator<Item = &'a RegistrationSpec>) -> Self {
        let mut out = Self::default();
        for r in specs {
            out.set(&r.name.clone(), Some(r.clone()));
        }
        out
    }

    /// Sets (`Some`) or removes (`None`) the registration `name`; returns what it replaced.
    pub fn set(&mut self, name: &str, spec: Option<RegistrationSpec>) -> Option<RegistrationSpec> {
        let old = self.by_name.remove(name);
        if let Some(o) = &old
            && let Some(members) = self.by_upstream.get_mut(&o.upstream)
        {
            members.remove(&(o.address, o.port, o.name.clone()));
            if members.is_empty() {
                self.by_upstream.remove(&o.upstream);
            }
        }
        if let Some(r) = spec {
            self.by_upstream
                .entry(r.upstream.clone())
                .or_default()
                .insert((r.address, r.port, r.name.clone()), r.weight);
            self.by_name.insert(name.to_owned(), r);
        }
        old
    }

    /// The registration `name`.
    pub fn get(&self, name: &str) -> Option<&RegistrationSpec> {
        self.by_name.get(name)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every registration, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &RegistrationSpec> {
        self.by_name.values()
    }

    /// The endpoints registered for `upstream`, ordered by address and port, each once.
    pub fn endpoints(&self, upstream: &str) -> Vec<EndpointSpec> {
        let Some(members) = self.by_upstream.get(upstream) else { return Vec::new() };
        let mut out: Vec<EndpointSpec> = Vec::with_capacity(members.len());
        let mut last = None;
        for ((address, port, _), weight) in members {
            if last == Some((address, port)) {
                continue;
            }
            last = Some((address, port));
            out.push(EndpointSpec { address: address.to_string(), port: *port, weight: *weight });
        }
        out
    }

    /// Whether another registration has `r`'s endpoint for `r`'s upstream.
    fn registered_twice(&self, r: &RegistrationSpec) -> bool {
        let Some(members) = self.by_upstream.get(&r.upstream) else { return false };
        let from = (r.address, r.port, String::new());
        members.range(from..).take_while(|((a, p, _), _)| (*a, *p) == (r.address, r.port)).nth(1).is_some()
    }

    /// Checks registration `r` of these, reporting at `at` (`registrations[3]` in a file,
    /// `Registration/NAME` for a resource). `takes` says whether an upstream exists and takes
    /// registrations (`None`: no such upstream).
    pub(crate) fn check(
        &self,
        errs: &mut Errors,
        at: &str,
        r: &RegistrationSpec,
        takes: impl Fn(&str) -> Option<bool>,
    ) {
        check_one(errs, at, r, takes);
        if self.registered_twice(r) {
            errs.push(at.to_owned(), format!("{}:{} is registered twice for {:?}", r.address, r.port, r.upstream));
        }
    }
}

/// The checks of one registration on its own and against its upstream.
pub(crate) fn check_one(errs: &mut Errors, at: &str, r: &RegistrationSpec, takes: impl Fn(&str) -> Option<bool>) {
    let name_ok = !r.name.is_empty()
        && r.name.len() <= 128
        && r.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        errs.push(
            format!("{at}.name"),
            format!("invalid name {:?}: use 1-128 letters, digits, '-', '_' or '.'", r.name),
        );
    }
    match takes(&r.upstream) {
        None => errs.push(format!("{at}.upstream"), format!("upstream {:?} is not defined", r.upstream)),
        Some(false) => errs.push(
            format!("{at}.upstream"),
            format!("upstream {:?} takes no registrations: give it `discovery: {{ registry: {{}} }}`", r.upstream),
        ),
        Some(true) => {}
    }
    if r.port == 0 {
        errs.push(format!("{at}.port"), "must be between 1 and 65535");
    }
    if !(1..=MAX_WEIGHT).contains(&r.weight) {
        errs.push(format!("{at}.weight"), format!("must be between 1 and {MAX_WEIGHT}"));
    }
    if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600)).contains(&r.ttl.get()) {
        errs.push(format!("{at}.ttl"), "must be between 1s and 1h");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, upstream: &str, port: u16) -> RegistrationSpec {
        let r = RegistrationSpec::of(upstream.into(), "127.0.0.1".parse().unwrap(), port, None, None);
        RegistrationSpec { name: name.into(), ..r }
    }

    #[test]
    fn endpoints_follow_sets_and_removals_per_upstream() {
        let mut r = Registrations::from_specs(&[reg("a", "u", 2), reg("b", "u", 1), reg("c", "v", 1)]);
        assert_eq!(r.endpoints("u").iter().map(|e| e.port).collect::<Vec<_>>(), [1, 2]);
        let copy = r.clone();
        // Moving `a` to another upstream takes it out of the first.
        assert_eq!(r.set("a", Some(reg("a", "v", 3))).map(|o| o.upstream), Some("u".to_owned()));
        assert_eq!(r.endpoints("u").len(), 1);
        assert_eq!(r.endpoints("v").iter().map(|e| e.port).collect::<Vec<_>>(), [1, 3]);
        r.set("b", None);
        assert!(r.endpoints("u").is_empty() && r.get("b").is_none());
        assert_eq!(r.len(), 2);
        // The copy taken before is untouched.
        assert_eq!(copy.endpoints("u").len(), 2);
    }

    #[test]
    fn one_endpoint_registered_twice_is_reported_for_each_name_and_listed_once() {
        let r = Registrations::from_specs(&[reg("a", "u", 1), reg("b", "u", 1), reg("c", "u", 2)]);
        let mut errs = Errors::default();
        for name in ["a", "b", "c"] {
            r.check(&mut errs, &format!("Registration/{name}"), r.get(name).unwrap(), |_| Some(true));
        }
        let paths: Vec<String> = errs.finish().unwrap_err().iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, ["Registration/a", "Registration/b"]);
        assert_eq!(r.endpoints("u").len(), 2);
    }
}
