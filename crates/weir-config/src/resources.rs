//! A config as a set of named resources, the unit the control plane stores and pushes.
//!
//! Owns: the resource kinds, reading multi-document YAML (`kind: Route` documents or whole
//! standalone files) into resources, and mapping error paths (`routes[3].upstream`) back to
//! the resource they are about (`Route/api.upstream`). Assembling resources into one config
//! is [`crate::assembly`]'s.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::error::{ConfigError, ConfigErrors};

/// The kinds of resource, in the order a config is assembled from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A listener (settings only, in fleet mode: each gateway picks its own addresses).
    Listener,
    /// A set of endpoints.
    Upstream,
    /// A route.
    Route,
    /// A plugin applied to every route (its name is the plugin's name).
    Plugin,
    /// A named caller with credentials.
    Consumer,
    /// A plugin package (metadata, schema, module by sha256) that routes use by name.
    Package,
    /// An endpoint a service registered for an upstream.
    Registration,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] =
        [Kind::Listener, Kind::Upstream, Kind::Route, Kind::Plugin, Kind::Consumer, Kind::Package, Kind::Registration];

    /// `Route`, as in `kind: Route`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Listener => "Listener",
            Kind::Upstream => "Upstream",
            Kind::Route => "Route",
            Kind::Plugin => "Plugin",
            Kind::Consumer => "Consumer",
            Kind::Package => "Package",
            Kind::Registration => "Registration",
        }
    }

    /// `routes`: the key of the list in a standalone file, and the API collection name.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Listener => "listeners",
            Kind::Upstream => "upstreams",
            Kind::Route => "routes",
            Kind::Plugin => "plugins",
            Kind::Consumer => "consumers",
            Kind::Package => "packages",
            Kind::Registration => "registrations",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a kind.
#[derive(Debug, thiserror::Error)]
#[error("unknown kind {0:?}: use Listener, Upstream, Route, Plugin, Consumer, Package or Registration")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;
    /// Accepts `Route`, `route` and `routes`.
    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s) || k.plural().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// A resource's identity, written `Kind/name` (`Route/orders`): the key the control plane
/// stores, pushes and names in errors.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// Kind.
    pub kind: Kind,
    /// Name, unique within its kind.
    pub name: String,
}

impl ResourceKey {
    /// The key of `name` of `kind`.
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Self { kind, name: name.into() }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Text that is not `Kind/name`.
#[derive(Debug, thiserror::Error)]
pub enum BadKey {
    /// No `/`.
    #[error("{0:?} is not KIND/NAME")]
    Shape(String),
    /// The kind is not one.
    #[error(transparent)]
    Kind(#[from] UnknownKind),
}

impl FromStr for ResourceKey {
    type Err = BadKey;
    fn from_str(s: &str) -> Result<Self, BadKey> {
        let (kind, name) = s.split_once('/').ok_or_else(|| BadKey::Shape(s.to_owned()))?;
        Ok(Self { kind: kind.parse()?, name: name.to_owned() })
    }
}

impl serde::Serialize for ResourceKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ResourceKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One resource: its kind, name and fields exactly as in a standalone file's list entry
/// (so `body["name"] == name`).
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Kind.
    pub kind: Kind,
    /// Name, unique within its kind.
    pub name: String,
    /// The fields, as JSON.
    pub body: Value,
}

/// Top-level keys of a standalone file that the control plane does not keep: each gateway
/// decides them locally.
pub const LOCAL_ONLY_KEYS: [&str; 2] = ["admin", "tracing"];

/// The top-level key of a standalone file that lists package directories. Reading them is I/O,
/// so [`parse_documents`] leaves them to the caller ([`package_dirs`]), which turns each into
/// a `Package` resource.
pub const PACKAGE_DIRS_KEY: &str = "plugin_packages";

fn split_value(doc: &Value) -> Result<Vec<Resource>, ConfigErrors> {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    let Some(obj) = doc.as_object() else {
        return Err(ConfigErrors::one("", "expected a mapping"));
    };
    for key in obj.keys() {
        let known = LOCAL_ONLY_KEYS.contains(&key.as_str()) || key == PACKAGE_DIRS_KEY;
        if !known && !Kind::ALL.iter().any(|k| k.plural() == key) {
            errs.push(ConfigError { path: key.clone(), message: format!("unknown top-level key {key:?}") });
        }
    }
    for kind in Kind::ALL {
        let Some(list) = obj.get(kind.plural()) else { continue };
        let Some(items) = list.as_array() else {
            errs.push(ConfigError { path: kind.plural().into(), message: "expected a list".into() });
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            match item.get("name").and_then(Value::as_str) {
                Some(name) => out.push(Resource { kind, name: name.to_owned(), body: item.clone() }),
                None => errs.push(ConfigError {
                    path: format!("{}[{i}].name", kind.plural()),
                    message: "every entry needs a `name`".into(),
                }),
            }
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(ConfigErrors(errs)) }
}

/// Reads YAML with one or more documents. Each document is either a whole standalone config
/// (`routes:`, `upstreams:` …) or one resource (`kind: Route`, `name: …`, then its fields).
/// Errors carry `doc N` in their path when there is more than one document.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ConfigErrors> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ConfigErrors::one("", format!("not valid YAML: {e}")))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let many = docs.len() > 1;
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (n, doc) in docs.into_iter().enumerate() {
        let prefix = if many { format!("doc {}: ", n + 1) } else { String::new() };
        match parse_document(doc) {
            Ok(r) => out.extend(r),
            Err(e) => errs.extend(e.0.into_iter().map(|mut e| {
                e.path = format!("{prefix}{}", e.path);
                e
            })),
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(ConfigErrors(errs)) }
}

/// The package directories the standalone documents in `text` list under
/// [`PACKAGE_DIRS_KEY`], as written (relative to the file).
pub fn package_dirs(text: &str) -> Result<Vec<String>, ConfigErrors> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ConfigErrors::one("", format!("not valid YAML: {e}")))?;
    let mut dirs = Vec::new();
    for doc in docs.iter().filter(|d| d.get("kind").is_none()) {
        let Some(list) = doc.get(PACKAGE_DIRS_KEY) else { continue };
        let items = list.as_array().ok_or_else(|| ConfigErrors::one(PACKAGE_DIRS_KEY, "expected a list"))?;
        for (i, item) in items.iter().enumerate() {
            let dir = item
                .as_str()
                .ok_or_else(|| ConfigErrors::one(format!("{PACKAGE_DIRS_KEY}[{i}]"), "expected a directory"))?;
            dirs.push(dir.to_owned());
        }
    }
    Ok(dirs)
}

fn parse_document(mut doc: Value) -> Result<Vec<Resource>, ConfigErrors> {
    let Some(obj) = doc.as_object_mut() else {
        return Err(ConfigErrors::one("", "expected a mapping"));
    };
    let Some(kind) = obj.remove("kind") else {
        return split_value(&doc);
    };
    let kind: Kind = kind
        .as_str()
        .ok_or_else(|| ConfigErrors::one("kind", "expected a string"))?
        .parse()
        .map_err(|e: UnknownKind| ConfigErrors::one("kind", e.to_string()))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ConfigErrors::one("name", format!("a {kind} needs a `name`")))?
        .to_owned();
    Ok(vec![Resource { kind, name, body: doc }])
}

/// Which resource sits at which index of an assembled config (see [`crate::assembly`]).
#[derive(Clone, Debug, Default)]
pub struct ResourceIndex {
    names: [Vec<String>; Kind::ALL.len()],
}

impl ResourceIndex {
    /// An index from each kind's names in list order (kinds in [`Kind::ALL`] order).
    pub fn from_names(names: [Vec<String>; Kind::ALL.len()]) -> Self {
        Self { names }
    }

    /// Rewrites `routes[3].upstream` to `Route/api.upstream`.
    pub fn relabel(&self, errs: ConfigErrors) -> ConfigErrors {
        ConfigErrors(
            errs.0
                .into_iter()
                .map(|mut e| {
                    e.path = self.relabel_path(&e.path);
                    e
                })
                .collect(),
        )
    }

    fn relabel_path(&self, path: &str) -> String {
        for kind in Kind::ALL {
            let Some(rest) = path.strip_prefix(kind.plural()).and_then(|r| r.strip_prefix('[')) else { continue };
            let Some((idx, tail)) = rest.split_once(']') else { continue };
            if let Some(name) = idx.parse::<usize>().ok().and_then(|i| self.names[kind as usize].get(i)) {
                return format!("{kind}/{name}{tail}");
            }
        }
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_directories_are_left_to_the_caller() {
        let file = "plugin_packages: [./a, /b]\nroutes: []\n---\nkind: Route\nname: r\nupstream: u\n";
        assert_eq!(package_dirs(file).unwrap(), ["./a", "/b"]);
        assert_eq!(parse_documents(file).unwrap().len(), 1);
        assert_eq!(package_dirs("plugin_packages: [1]\n").unwrap_err().0[0].path, "plugin_packages[0]");
        assert_eq!("packages".parse::<Kind>().unwrap(), Kind::Package);
    }

    #[test]
    fn standalone_and_kind_documents_read_alike() {
        let file = "upstreams:\n- name: u\n  load_balancer: {endpoints: [{address: 127.0.0.1, port: 1}]}\n\
                    routes:\n- name: r\n  upstream: u\n";
        let docs = "kind: Upstream\nname: u\nload_balancer: {endpoints: [{address: 127.0.0.1, port: 1}]}\n\
                    ---\nkind: route\nname: r\nupstream: u\n";
        let a = parse_documents(file).unwrap();
        let b = parse_documents(docs).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.iter().map(|r| (r.kind, r.name.as_str())).collect::<Vec<_>>(),
            [(Kind::Upstream, "u"), (Kind::Route, "r")]
        );
    }

    #[test]
    fn errors_name_the_resource_and_document() {
        let e = parse_documents("kind: Gadget\nname: x\n---\nkind: Route\n").unwrap_err();
        let msgs: Vec<_> = e.iter().map(|e| e.path.clone()).collect();
        assert_eq!(msgs, ["doc 1: kind", "doc 2: name"]);

        let errs = assembly("kind: Route\nname: r\nupstream: missing\n").validate().unwrap_err();
        assert!(errs.iter().any(|e| e.path == "Route/r.upstream"), "{errs:?}");
    }

    /// Documents as the control plane holds them: typed, in declaration order.
    fn assembly(text: &str) -> crate::assembly::Assembly {
        let parsed = parse_documents(text)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i as u64, crate::assembly::parse_resource(r.kind, &r.name, &r.body).unwrap()));
        crate::assembly::Assembly::from_typed(parsed)
    }

    #[test]
    fn a_file_split_into_resources_and_assembled_again_is_the_same_config() {
        let file = "upstreams:\n- name: u\n  load_balancer: {endpoints: [{address: 127.0.0.1, port: 1}]}\n\
                    routes:\n- name: b\n  upstream: u\n- name: a\n  upstream: u\n\
                    consumers:\n- name: alice\n  key: alice-key-123\n";
        let cfg = crate::load_yaml(file).unwrap();
        let back = assembly(file);
        assert_eq!(back.spec(), cfg.spec());
    }
}
