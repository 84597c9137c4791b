//! A config kept as typed resources and patched in place, so one changed route among ten
//! thousand costs one schema check, one parse and one cross-field pass, not a full reparse.
//!
//! Owns: checking a single resource against its kind's JSON Schema and parsing it (errors
//! carry `Route/api.…` paths), keeping each kind's list in declaration order, and undoing a
//! patch that turned out invalid. The control plane and the gateway's control-plane client
//! both keep one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ValidConfig;
use crate::error::Errors;
use crate::error::{ConfigError, ConfigErrors};
use crate::package::{ModuleError, ModuleRef, Package, PackageSpec};
use crate::plugins::{Consumer, PluginSpec};
use crate::registrations::Registrations;
use crate::resources::{Kind, ResourceIndex};
use crate::spec::{ConfigSpec, ListenerSpec, RegistrationSpec, RouteSpec, UpstreamSpec};
use crate::validate::{RoutePlugins, checked, takes_registrations};

/// One parsed resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Typed {
    /// A listener.
    Listener(ListenerSpec),
    /// An upstream.
    Upstream(UpstreamSpec),
    /// A route.
    Route(RouteSpec),
    /// A global plugin.
    Plugin(PluginSpec),
    /// A consumer.
    Consumer(Consumer),
    /// A plugin package.
    Package(PackageSpec),
    /// A registered endpoint.
    Registration(RegistrationSpec),
}

/// Schema errors of `body`, each with its JSON pointer and whether it is a missing required
/// field (which no removal repairs).
fn schema_errors(
    validator: Option<&jsonschema::Validator>,
    label: &str,
    body: &Value,
) -> (Vec<ConfigError>, Vec<(String, bool)>) {
    let Some(v) = validator else { return (Vec::new(), Vec::new()) };
    v.iter_errors(body)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let required = matches!(e.kind(), jsonschema::error::ValidationErrorKind::Required { .. });
            let err = ConfigError {
                path: match crate::error::pointer_to_path(&pointer) {
                    p if p.is_empty() => label.to_owned(),
                    p => format!("{label}.{p}"),
                },
                message: crate::messages::humanize(&e),
            };
            (err, (pointer, required))
        })
        .unzip()
}

/// Checks `body` against `T`'s schema and parses it; on schema errors, also `T` read with the
/// offending fields left out, when that reads (for cross-field checks in the same pass).
fn check_and_parse<T: JsonSchema + DeserializeOwned>(
    validator: &'static OnceLock<Option<jsonschema::Validator>>,
    label: &str,
    body: &Value,
) -> Result<T, (ConfigErrors, Option<Box<T>>)> {
    let v = validator.get_or_init(|| {
        let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
        jsonschema::validator_for(&schema).ok()
    });
    let (errs, offending) = schema_errors(v.as_ref(), label, body);
    if errs.is_empty() {
        return serde_json::from_value(body.clone()).map_err(|e| (ConfigErrors::one(label, e.to_string()), None));
    }
    let mut rest = body.clone();
    let repaired = offending.iter().all(|(p, required)| !required && crate::remove_field(&mut rest, p));
    Err((ConfigErrors(errs), repaired.then(|| serde_json::from_value(rest).ok().map(Box::new)).flatten()))
}

/// Checks one resource's body against its kind's schema and parses it.
pub fn parse_resource(kind: Kind, name: &str, body: &Value) -> Result<Typed, ConfigErrors> {
    parse_resource_or_rest(kind, name, body).map_err(|(e, _)| e)
}

/// [`parse_resource`], and on schema errors also the resource with the offending fields left
/// out, when that reads: cross-field checks can then run on it in the same pass.
pub fn parse_resource_or_rest(
    kind: Kind,
    name: &str,
    body: &Value,
) -> Result<Typed, (ConfigErrors, Option<Box<Typed>>)> {
    static LISTENER: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    static UPSTREAM: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    static ROUTE: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    static PLUGIN: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    static CONSUMER: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    static PACKAGE: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    static REGISTRATION: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    let label = format!("{kind}/{name}");
    let label = label.as_str();
    type Rest = (ConfigErrors, Option<Box<Typed>>);
    fn typed<T>(r: Result<T, (ConfigErrors, Option<Box<T>>)>, f: fn(T) -> Typed) -> Result<Typed, Rest> {
        r.map(f).map_err(|(e, rest)| (e, rest.map(|t| Box::new(f(*t)))))
    }
    match kind {
        Kind::Listener => typed::<ListenerSpec>(check_and_parse(&LISTENER, label, body), Typed::Listener),
        Kind::Upstream => typed::<UpstreamSpec>(check_and_parse(&UPSTREAM, label, body), Typed::Upstream),
        Kind::Route => typed::<RouteSpec>(check_and_parse(&ROUTE, label, body), Typed::Route),
        Kind::Plugin => typed::<PluginSpec>(check_and_parse(&PLUGIN, label, body), Typed::Plugin),
        Kind::Consumer => typed::<Consumer>(check_and_parse(&CONSUMER, label, body), Typed::Consumer),
        Kind::Registration => {
            typed::<RegistrationSpec>(check_and_parse(&REGISTRATION, label, body), Typed::Registration)
        }
        Kind::Package => {
            // A package's own checks are about its files: no partial package is worth checking.
            let spec: PackageSpec = check_and_parse(&PACKAGE, label, body).map_err(|(e, _)| (e, None))?;
            spec.check(&format!("{label}.")).map_err(|e| (e, None))?;
            Ok(Typed::Package(spec))
        }
    }
}

/// A resource as it was before a patch: kind, name, and its order and value if it existed.
type Replaced = (Kind, String, Option<(u64, Typed)>);

/// What a patch replaced, to undo it.
#[derive(Debug, Default)]
pub struct Undo(Vec<Replaced>);

/// A whole config as typed lists in declaration order.
#[derive(Clone, Debug, Default)]
pub struct Assembly {
    /// Everything but packages and registrations (`spec.registrations` stays empty).
    spec: Arc<ConfigSpec>,
    /// `Package` resources (a standalone file lists package directories instead).
    packages: Vec<PackageSpec>,
    /// `Registration` resources, indexed (they change far more often than the rest).
    registrations: Registrations,
    /// Per kind, the declaration order of each entry (parallel to the spec's lists).
    orders: [Vec<u64>; Kind::ALL.len()],
    /// What changed since the last config validated, and what that validation produced.
    since: Since,
}

/// What changed since the last successful validation.
#[derive(Clone, Debug, Default)]
struct Since {
    /// The last validation's products, for a check of registrations only.
    last: Option<LastChecked>,
    /// Anything but a registration changed (listeners, tracing included).
    config: bool,
    /// Registrations set or removed, by name.
    registrations: BTreeSet<String>,
    /// The upstreams those registrations belong or belonged to.
    upstreams: BTreeSet<String>,
}

/// What a full validation found that a check of registrations alone reuses.
#[derive(Clone, Debug)]
struct LastChecked {
    route_plugins: Arc<RoutePlugins>,
    packages: Vec<Arc<Package>>,
    /// Whether each upstream takes registrations.
    takes: HashMap<String, bool>,
}

/// What differs between a validated config and the one the same [`Assembly`] validated
/// before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    /// Only registrations: the endpoints of these upstreams (everything else is the same).
    Endpoints(Vec<String>),
    /// Anything may have changed (or nothing was validated before).
    Config,
}

macro_rules! each_list {
    ($spec:expr, $kind:expr, |$list:ident| $body:expr) => {
        match $kind {
            Kind::Listener => {
                let $list = &mut $spec.listeners;
                $body
            }
            Kind::Upstream => {
                let $list = &mut $spec.upstreams;
                $body
            }
            Kind::Route => {
                let $list = &mut $spec.routes;
                $body
            }
            Kind::Plugin => {
                let $list = &mut $spec.plugins;
                $body
            }
            Kind::Consumer => {
                let $list = &mut $spec.consumers;
                $body
            }
            Kind::Registration => {
                let $list = &mut $spec.registrations;
                $body
            }
            Kind::Package => unreachable!("packages are kept beside the spec"),
        }
    };
}

trait Named {
    fn name(&self) -> &str;
}
impl Named for ListenerSpec {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for UpstreamSpec {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for RouteSpec {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for PluginSpec {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for Consumer {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for RegistrationSpec {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for PackageSpec {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Removes `name` from a list and its parallel orders; returns its order and value.
fn take<T: Named>(list: &mut Vec<T>, orders: &mut Vec<u64>, name: &str) -> Option<(u64, T)> {
    let i = list.iter().position(|x| x.name() == name)?;
    Some((orders.remove(i), list.remove(i)))
}

/// Inserts keeping the orders ascending (equal orders keep insertion order).
fn put<T>(list: &mut Vec<T>, orders: &mut Vec<u64>, order: u64, value: T) {
    let i = orders.partition_point(|o| *o <= order);
    orders.insert(i, order);
    list.insert(i, value);
}

impl Assembly {
    /// Builds from parsed resources in any order (each kind is sorted by declaration order).
    pub fn from_typed(items: impl IntoIterator<Item = (u64, Typed)>) -> Self {
        let mut items: Vec<(u64, Typed)> = items.into_iter().collect();
        items.sort_by_key(|(o, _)| *o);
        let mut a = Self::default();
        let mut spec = ConfigSpec::default();
        for (order, t) in items {
            let kind = match &t {
                Typed::Listener(_) => Kind::Listener,
                Typed::Upstream(_) => Kind::Upstream,
                Typed::Route(_) => Kind::Route,
                Typed::Plugin(_) => Kind::Plugin,
                Typed::Consumer(_) => Kind::Consumer,
                Typed::Package(_) => Kind::Package,
                Typed::Registration(_) => Kind::Registration,
            };
            if kind != Kind::Registration {
                a.orders[kind as usize].push(order);
            }
            match t {
                Typed::Listener(v) => spec.listeners.push(v),
                Typed::Upstream(v) => spec.upstreams.push(v),
                Typed::Route(v) => spec.routes.push(v),
                Typed::Plugin(v) => spec.plugins.push(v),
                Typed::Consumer(v) => spec.consumers.push(v),
                Typed::Package(v) => a.packages.push(v),
                Typed::Registration(v) => {
                    a.registrations.set(&v.name.clone(), Some(v));
                }
            }
        }
        a.spec = Arc::new(spec);
        a
    }

    /// The spec as it stands.
    pub fn spec(&self) -> &ConfigSpec {
        &self.spec
    }

    /// Sets (`Some`) or removes (`None`) a resource; returns what it replaced. `typed` must
    /// be of the same kind.
    pub fn set(&mut self, kind: Kind, name: &str, order: u64, typed: Option<Typed>) -> Option<(u64, Typed)> {
        if kind == Kind::Registration {
            return self.set_registration(name, typed);
        }
        self.since.config = true;
        let orders = &mut self.orders[kind as usize];
        if kind == Kind::Package {
            let old = take(&mut self.packages, orders, name).map(|(o, v)| (o, Typed::Package(v)));
            if let Some(Typed::Package(v)) = typed {
                put(&mut self.packages, orders, order, v);
            }
            return old;
        }
        let spec = Arc::make_mut(&mut self.spec);
        let old = each_list!(spec, kind, |list| take(list, orders, name).map(|(o, v)| (o, Typed::from(v))));
        if let Some(t) = typed {
            match t {
                Typed::Listener(v) => put(&mut spec.listeners, orders, order, v),
                Typed::Upstream(v) => put(&mut spec.upstreams, orders, order, v),
                Typed::Route(v) => put(&mut spec.routes, orders, order, v),
                Typed::Plugin(v) => put(&mut spec.plugins, orders, order, v),
                Typed::Consumer(v) => put(&mut spec.consumers, orders, order, v),
                Typed::Registration(_) | Typed::Package(_) => {}
            }
        }
        old
    }

    /// [`Assembly::set`] for a registration (kept in its index, not the spec).
    fn set_registration(&mut self, name: &str, typed: Option<Typed>) -> Option<(u64, Typed)> {
        let new = match typed {
            Some(Typed::Registration(r)) => Some(r),
            _ => None,
        };
        if let Some(r) = &new {
            self.since.upstreams.insert(r.upstream.clone());
        }
        let old = self.registrations.set(name, new);
        if let Some(o) = &old {
            self.since.upstreams.insert(o.upstream.clone());
        }
        self.since.registrations.insert(name.to_owned());
        old.map(|o| (0, Typed::Registration(o)))
    }

    /// [`Assembly::set`], remembering what to put back in `undo`.
    pub fn set_undoable(&mut self, undo: &mut Undo, kind: Kind, name: &str, order: u64, typed: Option<Typed>) {
        let old = self.set(kind, name, order, typed);
        undo.0.push((kind, name.to_owned(), old));
    }

    /// Puts back everything `undo` recorded, newest first.
    pub fn undo(&mut self, undo: Undo) {
        for (kind, name, old) in undo.0.into_iter().rev() {
            match old {
                Some((order, t)) => self.set(kind, &name, order, Some(t)),
                None => self.set(kind, &name, 0, None),
            };
        }
    }

    /// Replaces the whole listener list (a gateway's own listeners).
    pub fn set_listeners(&mut self, listeners: Vec<ListenerSpec>) {
        if self.spec.listeners == listeners {
            return;
        }
        self.since.config = true;
        self.orders[Kind::Listener as usize] = (0..listeners.len() as u64).collect();
        Arc::make_mut(&mut self.spec).listeners = listeners;
    }

    /// Sets the tracing settings (a gateway's own, like its listeners).
    pub fn set_tracing(&mut self, tracing: Option<crate::spec::TracingSpec>) {
        if self.spec.tracing != tracing {
            self.since.config = true;
            Arc::make_mut(&mut self.spec).tracing = tracing;
        }
    }

    /// Cross-field validation of the whole config, without copying it. Errors name the
    /// resource (`Route/api.upstream`). Any `Package` must have its module from `module`.
    pub fn validate(&mut self) -> Result<ValidConfig, ConfigErrors> {
        self.validate_with(|m| {
            Err(ModuleError::Missing { sha256: m.sha256.clone(), hint: "this check has no module store" })
        })
    }

    /// [`Assembly::validate`], taking each package's module bytes from `module` (the caller's
    /// store, which checked them against the hash); a module it lacks is an error at
    /// `Package/NAME.module`.
    pub fn validate_with(
        &mut self,
        module: impl Fn(&ModuleRef) -> Result<Arc<[u8]>, ModuleError>,
    ) -> Result<ValidConfig, ConfigErrors> {
        self.validate_changes(module).map(|(cfg, _)| cfg)
    }

    /// [`Assembly::validate_with`], also saying what changed since the config validated
    /// before. When only registrations changed, only they are checked (against the upstreams
    /// they name): the cost of a registration does not grow with the config.
    pub fn validate_changes(
        &mut self,
        module: impl Fn(&ModuleRef) -> Result<Arc<[u8]>, ModuleError>,
    ) -> Result<(ValidConfig, Changed), ConfigErrors> {
        if !self.since.config
            && let Some(last) = &self.since.last
        {
            let mut errs = Errors::default();
            for name in &self.since.registrations {
                if let Some(r) = self.registrations.get(name) {
                    let takes = |u: &str| last.takes.get(u).copied();
                    self.registrations.check(&mut errs, &format!("Registration/{name}"), r, takes);
                }
            }
            errs.finish()?;
            let cfg = ValidConfig::from_parts(
                self.spec.clone(),
                last.route_plugins.clone(),
                last.packages.clone(),
                self.registrations.clone(),
            );
            self.since.registrations.clear();
            let upstreams = std::mem::take(&mut self.since.upstreams).into_iter().collect();
            return Ok((cfg, Changed::Endpoints(upstreams)));
        }
        let takes = takes_registrations(&self.spec);
        let cfg = self.validate_all(module, &takes)?;
        self.since = Since {
            last: Some(LastChecked {
                route_plugins: cfg.shared_route_plugins().clone(),
                packages: cfg.packages().to_vec(),
                takes,
            }),
            ..Since::default()
        };
        Ok((cfg, Changed::Config))
    }

    /// Every check of the whole config.
    fn validate_all(
        &self,
        module: impl Fn(&ModuleRef) -> Result<Arc<[u8]>, ModuleError>,
        takes: &HashMap<String, bool>,
    ) -> Result<ValidConfig, ConfigErrors> {
        let mut errs = Vec::new();
        let mut packages = Vec::with_capacity(self.packages.len());
        for p in &self.packages {
            match module(&p.module) {
                Ok(wasm) => packages.push(Arc::new(p.with_module(wasm))),
                Err(e) => errs.push(ConfigError { path: format!("Package/{}.module", p.name), message: e.to_string() }),
            }
        }
        let mut reg_errs = Errors::default();
        for r in self.registrations.iter() {
            let at = format!("Registration/{}", r.name);
            self.registrations.check(&mut reg_errs, &at, r, |u| takes.get(u).copied());
        }
        // The index has no order: errors are listed by path.
        reg_errs.sort();
        let checked = checked(self.spec.clone(), packages, self.registrations.clone(), reg_errs)
            .map_err(|e| self.index().relabel(e));
        ConfigErrors::after(errs, checked)
    }

    /// The registered endpoints.
    pub fn registrations(&self) -> &Registrations {
        &self.registrations
    }

    /// The `Package` resources, in declaration order.
    pub fn packages(&self) -> &[PackageSpec] {
        &self.packages
    }

    fn index(&self) -> ResourceIndex {
        let s = &self.spec;
        ResourceIndex::from_names([
            s.listeners.iter().map(|x| x.name.clone()).collect(),
            s.upstreams.iter().map(|x| x.name.clone()).collect(),
            s.routes.iter().map(|x| x.name.clone()).collect(),
            s.plugins.iter().map(|x| x.name.clone()).collect(),
            s.consumers.iter().map(|x| x.name.clone()).collect(),
            self.packages.iter().map(|x| x.name.clone()).collect(),
            Vec::new(),
        ])
    }
}

impl From<ListenerSpec> for Typed {
    fn from(v: ListenerSpec) -> Self {
        Typed::Listener(v)
    }
}
impl From<UpstreamSpec> for Typed {
    fn from(v: UpstreamSpec) -> Self {
        Typed::Upstream(v)
    }
}
impl From<RouteSpec> for Typed {
    fn from(v: RouteSpec) -> Self {
        Typed::Route(v)
    }
}
impl From<PluginSpec> for Typed {
    fn from(v: PluginSpec) -> Self {
        Typed::Plugin(v)
    }
}
impl From<Consumer> for Typed {
    fn from(v: Consumer) -> Self {
        Typed::Consumer(v)
    }
}

impl From<RegistrationSpec> for Typed {
    fn from(v: RegistrationSpec) -> Self {
        Typed::Registration(v)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(name: &str, up: &str) -> Typed {
        parse_resource(Kind::Route, name, &json!({"name": name, "upstream": up})).unwrap()
    }

    #[test]
    fn patches_keep_declaration_order_and_undo_restores() {
        let mut a = Assembly::default();
        let up = json!({"name": "u", "load_balancer": {"endpoints": [{"address": "127.0.0.1", "port": 1}]}});
        a.set(Kind::Upstream, "u", 1, Some(parse_resource(Kind::Upstream, "u", &up).unwrap()));
        a.set(Kind::Route, "b", 3, Some(route("b", "u")));
        a.set(Kind::Route, "a", 2, Some(route("a", "u")));
        assert!(a.validate().is_ok());
        let names = |a: &Assembly| a.spec().routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), ["a", "b"]);

        let mut undo = Undo::default();
        a.set_undoable(&mut undo, Kind::Route, "a", 2, Some(route("a", "missing")));
        a.set_undoable(&mut undo, Kind::Route, "b", 3, None);
        let errs = a.validate().unwrap_err();
        assert_eq!(errs.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["Route/a.upstream"]);
        a.undo(undo);
        assert_eq!(names(&a), ["a", "b"]);
        assert!(a.validate().is_ok());
    }

    fn registration(name: &str, up: &str, port: u16) -> Typed {
        let body = json!({"name": name, "upstream": up, "address": "127.0.0.1", "port": port});
        parse_resource(Kind::Registration, name, &body).unwrap()
    }

    #[test]
    fn a_change_of_registrations_only_is_checked_alone_and_says_whose_endpoints_moved() {
        let mut a = Assembly::default();
        let taking = json!({"name": "svc", "discovery": {"registry": {}}});
        let other = json!({"name": "plain", "load_balancer": {"endpoints": [{"address": "127.0.0.1", "port": 1}]}});
        a.set(Kind::Upstream, "svc", 1, Some(parse_resource(Kind::Upstream, "svc", &taking).unwrap()));
        a.set(Kind::Upstream, "plain", 2, Some(parse_resource(Kind::Upstream, "plain", &other).unwrap()));
        a.set(Kind::Route, "r", 3, Some(route("r", "plain")));
        a.set(Kind::Registration, "x", 4, Some(registration("x", "svc", 10)));
        let (cfg, changed) = a.validate_changes(|_| unreachable!()).unwrap();
        assert_eq!(changed, Changed::Config, "the first validation is whole");
        assert_eq!(cfg.registrations().endpoints("svc").len(), 1);
        assert!(a.spec().registrations.is_empty(), "registrations are kept beside the spec");

        a.set(Kind::Registration, "y", 5, Some(registration("y", "svc", 11)));
        let (cfg, changed) = a.validate_changes(|_| unreachable!()).unwrap();
        assert_eq!(changed, Changed::Endpoints(vec!["svc".into()]));
        assert_eq!(cfg.registrations().endpoints("svc").len(), 2);
        assert_eq!(cfg.route_plugins(0), &[], "the rest is the last validation's");

        // Wrong ones are refused with the paths a whole validation gives, and undone.
        for (bad, path) in [
            (registration("z", "plain", 12), "Registration/z.upstream"),
            (registration("z", "nowhere", 12), "Registration/z.upstream"),
            (registration("z", "svc", 10), "Registration/z"),
        ] {
            let mut undo = Undo::default();
            a.set_undoable(&mut undo, Kind::Registration, "z", 6, Some(bad));
            let quick = a.validate_changes(|_| unreachable!()).unwrap_err();
            let takes = takes_registrations(a.spec());
            let whole = a.clone().validate_all(|_| unreachable!(), &takes).unwrap_err();
            assert_eq!(quick.iter().map(|e| &e.path).collect::<Vec<_>>(), [path]);
            // A whole validation also names the registration `z` collides with.
            assert!(quick.iter().all(|e| whole.iter().any(|w| w == e)), "{quick:?} vs {whole:?}");
            a.undo(undo);
        }
        let (_, changed) = a.validate_changes(|_| unreachable!()).unwrap();
        // Every upstream the refused ones named was touched, in name order.
        assert_eq!(changed, Changed::Endpoints(vec!["nowhere".into(), "plain".into(), "svc".into()]));

        // A change of anything else is whole again; so is one of the gateway's own listeners.
        a.set(Kind::Registration, "x", 4, None);
        a.set(Kind::Route, "r", 3, Some(route("r", "svc")));
        assert_eq!(a.validate_changes(|_| unreachable!()).unwrap().1, Changed::Config);
        a.set_tracing(None);
        a.set_listeners(Vec::new());
        assert_eq!(
            a.validate_changes(|_| unreachable!()).unwrap().1,
            Changed::Endpoints(vec![]),
            "the same listeners change nothing"
        );
    }

    fn package(name: &str, sha: &str) -> Value {
        json!({"name": name, "metadata": {"name": name, "version": "1.0.0", "phase": "transform"},
               "schema": {"type": "object"}, "module": {"sha256": sha, "size": 3}})
    }

    #[test]
    fn packages_are_checked_and_need_their_module() {
        let sha = "ab".repeat(32);
        let mut bad = package("tagger", "XYZ");
        bad["metadata"]["version"] = json!("one");
        bad["metadata"]["name"] = json!("other");
        let e = parse_resource(Kind::Package, "tagger", &bad).unwrap_err();
        let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["Package/tagger.name", "Package/tagger.metadata.version", "Package/tagger.module.sha256"],
            "{e}"
        );

        let mut a = Assembly::default();
        a.set(
            Kind::Package,
            "tagger",
            1,
            Some(parse_resource(Kind::Package, "tagger", &package("tagger", &sha)).unwrap()),
        );
        let up = json!({"name": "u", "load_balancer": {"endpoints": [{"address": "127.0.0.1", "port": 1}]}});
        a.set(Kind::Upstream, "u", 2, Some(parse_resource(Kind::Upstream, "u", &up).unwrap()));
        let r = json!({"name": "r", "upstream": "u", "plugins": [{"name": "tagger", "config": {}}]});
        a.set(Kind::Route, "r", 3, Some(parse_resource(Kind::Route, "r", &r).unwrap()));
        let missing = |m: &ModuleRef| Err(ModuleError::Missing { sha256: m.sha256.clone(), hint: "upload it" });
        let e = a.validate_with(missing).unwrap_err();
        let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths[0], "Package/tagger.module", "{e}");
        let cfg = a.validate_with(|m| Ok(Arc::from(m.sha256.as_bytes()))).unwrap();
        assert_eq!(cfg.packages()[0].meta.name, "tagger");
        assert_eq!(cfg.packages()[0].dir, None);
        assert_eq!(a.packages().len(), 1);
        a.set(Kind::Package, "tagger", 0, None);
        assert!(a.packages().is_empty());
        assert!(a.validate_with(missing).unwrap_err().to_string().contains("tagger"));
    }

    #[test]
    fn a_resource_is_schema_checked_alone_with_its_name_in_the_path() {
        let e = parse_resource(Kind::Route, "r", &json!({"name": "r", "upstream": 5, "timeout": "soon"})).unwrap_err();
        let paths: Vec<_> = e.iter().map(|e| e.path.clone()).collect();
        assert!(
            paths.contains(&"Route/r.upstream".to_owned()) && paths.contains(&"Route/r.timeout".to_owned()),
            "{paths:?}"
        );
    }
}
