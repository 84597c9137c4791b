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

impl Positions {
    /// The positions of the first document in `text` (none when it is not YAML).
    pub fn of(text: &str) -> Self {
        let mut out = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut documents = 0;
        for next in Parser::new_from_str(text) {
            let Ok((event, span)) = next else { break };
            let at = Position { line: span.start.line(), column: span.start.col() + 1 };
            match event {
                Event::DocumentStart(..) => {
                    documents += 1;
                    if documents > 1 {
                        break;
                    }
                }
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key: key @ None }) = stack.last_mut() {
                        out.entry(join(path, &value)).or_insert(at);
                        *key = Some(value.into_owned());
                        continue;
                    }
                    out.entry(next_path(&mut stack)).or_insert(at);
                }
                Event::MappingStart(..) => {
                    let path = next_path(&mut stack);
                    out.entry(path.clone()).or_insert(at);
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = next_path(&mut stack);
                    out.entry(path.clone()).or_insert(at);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Alias(_) => {
                    out.entry(next_path(&mut stack)).or_insert(at);
                }
                _ => {}
            }
        }
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
