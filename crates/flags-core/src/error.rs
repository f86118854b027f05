//! Errors of loading flag data.

use std::fmt;

/// Flag or segment data that cannot be read at all (wrong JSON types, bad syntax).
///
/// Displays as `path: message`, e.g.
/// `flags.checkout.rules[2].clauses[0].values: expected an array, found a string`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    path: String,
    message: String,
}

impl LoadError {
    /// A load error at `path` (empty for the document itself).
    pub fn new(path: String, message: String) -> LoadError {
        LoadError { path, message }
    }

    /// The field path, e.g. `flags.checkout.rules[2].clauses[0].values` (empty for the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong at that path.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error seen from a document that holds the item under `section.key`
    /// (`flags.checkout` + `rules[0]` gives `flags.checkout.rules[0]`).
    pub fn within(self, section: &str, key: &str) -> LoadError {
        let path = if self.path.is_empty() {
            format!("{section}.{key}")
        } else {
            format!("{section}.{key}.{}", self.path)
        };
        LoadError { path, ..self }
    }

    pub(crate) fn from_path_error(e: &serde_path_to_error::Error<serde_json::Error>) -> LoadError {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        LoadError {
            path,
            message: friendly_message(e.inner()),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Rewrites serde's Rust-flavoured messages ("invalid type: string \"x\", expected a sequence")
/// in JSON terms ("expected an array, found string \"x\""), keeping any line and column.
fn friendly_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let (body, position) = match full.find(" at line ") {
        Some(i) if e.line() > 0 => (
            &full[..i],
            format!(" (line {}, column {})", e.line(), e.column()),
        ),
        _ => (full.as_str(), String::new()),
    };
    let rewritten = if let Some(rest) = body.strip_prefix("invalid type: ") {
        match rest.split_once(", expected ") {
            Some((found, expected)) => {
                format!(
                    "expected {}, found {}",
                    json_expected(expected),
                    json_found(found)
                )
            }
            None => body.to_owned(),
        }
    } else if let Some(rest) = body.strip_prefix("invalid value: ") {
        match rest.split_once(", expected ") {
            Some((found, expected)) => {
                format!(
                    "expected {}, found {}",
                    json_expected(expected),
                    json_found(found)
                )
            }
            None => body.to_owned(),
        }
    } else {
        body.to_owned()
    };
    rewritten + &position
}

fn json_expected(expected: &str) -> &str {
    match expected {
        "a sequence" => "an array",
        "a map" => "an object",
        "a boolean" => "a boolean",
        "a string" => "a string",
        "u64" | "u32" | "u16" | "u8" | "usize" => "a non-negative integer",
        "i64" | "i32" | "i16" | "i8" | "isize" => "an integer",
        "f64" | "f32" => "a number",
        e if e.starts_with("struct ") => "an object",
        e => e,
    }
}

fn json_found(found: &str) -> String {
    if found == "sequence" {
        "an array".to_owned()
    } else if found == "map" {
        "an object".to_owned()
    } else if let Some(rest) = found.strip_prefix("floating point ") {
        format!("number {}", rest.trim_matches('`'))
    } else if let Some(rest) = found.strip_prefix("integer ") {
        format!("number {}", rest.trim_matches('`'))
    } else {
        found.to_owned()
    }
}
