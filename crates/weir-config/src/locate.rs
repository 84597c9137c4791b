//! Where a config path is in its YAML text (`routes[0].timeout` → line 7, column 5), so
//! errors can say where to look.
//!
//! Owns: walking the YAML events of the first document (granit-parser, the parser serde-saphyr
//! reads with) and naming each node with the path errors use. A mapping value is placed at its
//! key, and a path the text lacks (a missing field) at its nearest ancestor that it has.

use std::collections::HashMap;

use granit_parser::{Event, Parser};

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// Where each node of a YAML document is.
#[derive(Debug, Default)]
pub struct Positions(HashMap<String, Position>);

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

/// The path of the next node under the innermost collection (the document itself: `""`).
fn next_path(stack: &mut [Frame]) -> String {
    match stack.last_mut() {
        None => String::new(),
        Some(Frame::Map { path, key }) => join(path, key.take().as_deref().unwrap_or("")),
        Some(Frame::Seq { path, next }) => {
            *next += 1;
            format!("{path}[{}]", *next - 1)
        }
    }
}

/// One document's node positions and its scalar values, by path.
#[derive(Default)]
struct Document {
    at: HashMap<String, Position>,
    values: HashMap<String, String>,
}

/// Walks the documents of `text` (stopping at the first YAML error), handing each one over.
fn documents(text: &str, mut each: impl FnMut(Document) -> bool) {
    let mut doc = Document::default();
    let mut stack: Vec<Frame> = Vec::new();
    for next in Parser::new_from_str(text) {
        let Ok((event, span)) = next else { break };
        let at = Position { line: span.start.line(), column: span.start.col() + 1 };
        match event {
            Event::DocumentEnd => {
                stack.clear();
                if !each(std::mem::take(&mut doc)) {
                    return;
                }
            }
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { path, key: key @ None }) = stack.last_mut() {
                    doc.at.entry(join(path, &value)).or_insert(at);
                    *key = Some(value.into_owned());
                    continue;
                }
                let path = next_path(&mut stack);
                doc.at.entry(path.clone()).or_insert(at);
                doc.values.insert(path, value.into_owned());
            }
            Event::MappingStart(..) => {
                let path = next_path(&mut stack);
                doc.at.entry(path.clone()).or_insert(at);
                stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = next_path(&mut stack);
                doc.at.entry(path.clone()).or_insert(at);
                stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Alias(_) => {
                doc.at.entry(next_path(&mut stack)).or_insert(at);
            }
            _ => {}
        }
    }
    if !doc.at.is_empty() {
        each(doc);
    }
}

impl Positions {
    /// The positions of the first document in `text` (none when it is not YAML).
    pub fn of(text: &str) -> Self {
        let mut out = HashMap::new();
        documents(text, |d| {
            out = d.at;
            false
        });
        Self(out)
    }

    /// The positions in a file of resources, by the paths the control plane's errors use
    /// (`Route/api.timeout`): documents that are one resource (`kind:` and `name:` on top),
    /// and documents shaped like a standalone file, whose lists' items go by their `name`.
    pub fn of_resources(text: &str) -> Self {
        let mut out = HashMap::new();
        documents(text, |d| {
            if let (Some(kind), Some(name)) = (d.values.get("kind"), d.values.get("name")) {
                for (path, at) in &d.at {
                    let key = if path.is_empty() { format!("{kind}/{name}") } else { format!("{kind}/{name}.{path}") };
                    out.entry(key).or_insert(*at);
                }
                return true;
            }
            for kind in crate::resources::Kind::ALL {
                let list = kind.plural();
                for (path, at) in &d.at {
                    let Some(rest) = path.strip_prefix(list).filter(|r| r.starts_with('[')) else { continue };
                    let Some(close) = rest.find(']') else { continue };
                    let (item, tail) = rest.split_at(close + 1);
                    let Some(name) = d.values.get(&format!("{list}{item}.name")) else { continue };
                    out.entry(format!("{kind}/{name}{tail}")).or_insert(*at);
                }
            }
            true
        });
        Self(out)
    }

    /// Where `path` is, or its nearest ancestor (`routes[0].match.path.prefix` →
    /// `routes[0].match` when the text stops there).
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(at) = self.0.get(p) {
                return Some(*at);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_documents_and_standalone_lists_are_found_by_kind_and_name() {
        let text = "kind: Route\nname: api\ntimeout: 5 seconds\n---\nroutes:\n  - name: web\n    upstream: nope\nupstreams:\n  - name: u\n    load_balancer: { endpoints: [] }\n";
        let at = Positions::of_resources(text);
        assert_eq!(at.find("Route/api.timeout"), Some(Position { line: 3, column: 1 }));
        assert_eq!(at.find("Route/web.upstream"), Some(Position { line: 7, column: 5 }));
        assert_eq!(at.find("Upstream/u.load_balancer.endpoints"), Some(Position { line: 10, column: 22 }));
        assert_eq!(at.find("Route/web.match.path"), at.find("Route/web"), "a missing field at its nearest ancestor");
        assert_eq!(at.find("Route/other.x"), None);
    }

    #[test]
    fn paths_are_found_at_their_keys_and_list_items() {
        let text = "listeners:\n  - { name: a, address: 1.2.3.4:80 }\nroutes:\n  - name: r\n    match:\n      path: { prefix: api }\n    timeout: 5 seconds\n";
        let p = Positions::of(text);
        assert_eq!(p.find("routes[0].timeout"), Some(Position { line: 7, column: 5 }));
        assert_eq!(p.find("routes[0].match.path.prefix"), Some(Position { line: 6, column: 15 }));
        assert_eq!(p.find("listeners[0].address"), Some(Position { line: 2, column: 16 }));
        // A field the text lacks: its parent.
        assert_eq!(p.find("routes[0].upstream"), Some(Position { line: 4, column: 5 }));
        assert_eq!(p.find("nowhere"), None);
        assert_eq!(Positions::of("{ not yaml").find("x"), None);
    }
}
