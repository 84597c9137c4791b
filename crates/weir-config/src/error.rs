//! Config errors: each one carries the path of the offending value.

use std::fmt;

/// One problem in a config, at a path such as `routes[2].match.path.regex`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is (`""` for the whole document).
    pub path: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every problem found in a config, in document order. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A single error at `path`.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError { path: path.into(), message: message.into() }])
    }

    /// The errors.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `result`, failed as well when `earlier` (errors found before it) is not empty: every
    /// error, the earlier first.
    pub fn after<T>(mut earlier: Vec<ConfigError>, result: Result<T, ConfigErrors>) -> Result<T, ConfigErrors> {
        match result {
            Ok(v) if earlier.is_empty() => Ok(v),
            Ok(_) => Err(Self(earlier)),
            Err(e) => {
                earlier.extend(e.0);
                Err(Self(earlier))
            }
        }
    }

    /// Always false: a `ConfigErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ConfigErrors {
    /// [`ConfigErrors`]' text, each path followed by where it is in `text` (the YAML they were
    /// found in): `routes[0].timeout (line 7, column 5): …`.
    pub fn render(&self, text: &str) -> String {
        let at = crate::locate::Positions::of(text);
        let n = self.0.len();
        let mut out = format!("{n} error{} in config", if n == 1 { "" } else { "s" });
        // In file order; errors with no place in the file last, as found.
        let mut placed: Vec<(Option<crate::locate::Position>, &ConfigError)> =
            self.0.iter().map(|e| ((!e.path.is_empty()).then(|| at.find(&e.path)).flatten(), e)).collect();
        placed.sort_by_key(|(p, _)| p.map_or((usize::MAX, 0), |p| (p.line, p.column)));
        for (p, e) in placed {
            out.push_str("\n  ");
            match (e.path.is_empty(), p) {
                (false, Some(p)) => {
                    out.push_str(&format!("{} (line {}, column {}): {}", e.path, p.line, p.column, e.message))
                }
                _ => out.push_str(&e.to_string()),
            }
        }
        out
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} error{} in config", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Collects errors while walking a config; paths are built with [`Errors::at`].
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError { path: path.into(), message: message.into() });
    }

    /// Orders the errors by path (for errors found in no particular order).
    pub(crate) fn sort(&mut self) {
        self.0.sort_by(|a, b| a.path.cmp(&b.path));
    }

    pub(crate) fn finish(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(ConfigErrors(self.0)) }
    }
}

/// Turns a JSON pointer (`/routes/2/match`) into a config path (`routes[2].match`).
pub(crate) fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pointers_become_paths() {
        assert_eq!(super::pointer_to_path("/routes/2/match/path"), "routes[2].match.path");
        assert_eq!(super::pointer_to_path(""), "");
    }
}
