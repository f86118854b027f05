//! Attribute references: `name`, or a `/`-path like `/address/city` with `~0` for `~` and `~1`
//! for `/`.

use std::fmt;

use serde_json::Value;

/// A parsed reference to a context attribute, possibly a path into nested objects.
///
/// A string that does not start with `/` names a top-level attribute literally (so `a/b` is one
/// attribute called `a/b`). A string starting with `/` is a path whose components are object
/// property names; `~1` stands for `/` and `~0` for `~`. Paths never index into arrays.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrRef {
    raw: String,
    components: Box<[String]>,
    builtin: Builtin,
}

/// Which built-in attribute the first component names, decided once when the reference is made
/// so that lookups need no name comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Builtin {
    None,
    Kind,
    Key,
    Name,
    Anonymous,
}

impl Builtin {
    fn of(name: &str) -> Builtin {
        match name {
            "kind" => Builtin::Kind,
            "key" => Builtin::Key,
            "name" => Builtin::Name,
            "anonymous" => Builtin::Anonymous,
            _ => Builtin::None,
        }
    }
}

/// Why an attribute reference is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttrRefError {
    /// The reference is the empty string.
    #[error("attribute reference is empty")]
    Empty,
    /// A `/`-path has an empty component (`/`, `//a`, `/a/`).
    #[error("attribute reference has an empty path component")]
    EmptyComponent,
    /// A `~` is followed by something other than `0` or `1`.
    #[error("attribute reference has an invalid escape (only ~0 and ~1 are allowed)")]
    InvalidEscape,
}

impl AttrRef {
    /// Parses an attribute reference (a plain name, or a `/`-path).
    pub fn parse(s: &str) -> Result<AttrRef, AttrRefError> {
        if s.is_empty() {
            return Err(AttrRefError::Empty);
        }
        let Some(path) = s.strip_prefix('/') else {
            return Ok(AttrRef::new(s.to_owned(), Box::new([s.to_owned()])));
        };
        let mut components = Vec::new();
        for part in path.split('/') {
            if part.is_empty() {
                return Err(AttrRefError::EmptyComponent);
            }
            components.push(unescape(part)?);
        }
        Ok(AttrRef::new(s.to_owned(), components.into_boxed_slice()))
    }

    /// A reference to the top-level attribute with exactly this name (no path syntax), as used
    /// by clauses without a context kind and by legacy user private attribute names.
    pub fn from_literal(name: &str) -> Result<AttrRef, AttrRefError> {
        if name.is_empty() {
            return Err(AttrRefError::Empty);
        }
        let raw = if name.starts_with('/') {
            // Keep `raw` a valid path that names the same attribute.
            let mut r = String::with_capacity(name.len() + 2);
            r.push('/');
            r.push_str(&name.replace('~', "~0").replace('/', "~1"));
            r
        } else {
            name.to_owned()
        };
        Ok(AttrRef::new(raw, Box::new([name.to_owned()])))
    }

    fn new(raw: String, components: Box<[String]>) -> AttrRef {
        let builtin = components.first().map_or(Builtin::None, |c| Builtin::of(c));
        AttrRef {
            raw,
            components,
            builtin,
        }
    }

    #[inline]
    pub(crate) fn builtin(&self) -> Builtin {
        self.builtin
    }

    /// Whether a top-level attribute `name` is one a context holds apart from its custom
    /// attributes: `kind`, `key`, `name` or `anonymous`.
    pub fn is_builtin_name(name: &str) -> bool {
        Builtin::of(name) != Builtin::None
    }

    /// The reference as written (a path for literals that start with `/`).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The unescaped path components; never empty.
    #[inline]
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The first (top-level) component.
    #[inline]
    pub fn first(&self) -> &str {
        self.components.first().map_or("", String::as_str)
    }

    /// Whether the reference is one top-level attribute name.
    #[inline]
    pub fn is_top_level(&self) -> bool {
        self.components.len() == 1
    }

    /// Follows the remaining components (after the first) into nested objects of `value`.
    pub fn descend<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        let mut cur = value;
        for c in self.components.iter().skip(1) {
            cur = cur.as_object()?.get(c.as_str())?;
        }
        Some(cur)
    }
}

impl fmt::Display for AttrRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn unescape(part: &str) -> Result<String, AttrRefError> {
    if !part.contains('~') {
        return Ok(part.to_owned());
    }
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(AttrRefError::InvalidEscape),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&[&str], AttrRefError>) {
        let got = AttrRef::parse(input);
        match (got, expected) {
            (Ok(r), Ok(want)) => {
                assert_eq!(r.components(), want, "components of {input:?}");
                assert_eq!(r.as_str(), input);
            }
            (Err(e), Err(want)) => assert_eq!(e, want, "error for {input:?}"),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_references() {
        check("name", Ok(&["name"]));
        check("a/b", Ok(&["a/b"]));
        check("a~b", Ok(&["a~b"]));
        check("/name", Ok(&["name"]));
        check("/a/b", Ok(&["a", "b"]));
        check("/a~1b", Ok(&["a/b"]));
        check("/a~0b", Ok(&["a~b"]));
        check("/a~01", Ok(&["a~1"]));
        check("/attr1/2", Ok(&["attr1", "2"]));
        check("", Err(AttrRefError::Empty));
        check("/", Err(AttrRefError::EmptyComponent));
        check("///", Err(AttrRefError::EmptyComponent));
        check("/a/", Err(AttrRefError::EmptyComponent));
        check("/a~", Err(AttrRefError::InvalidEscape));
        check("/a~b", Err(AttrRefError::InvalidEscape));
    }

    #[test]
    fn literal_names_are_not_paths() {
        let r = AttrRef::from_literal("/attr/a").unwrap();
        assert_eq!(r.components(), ["/attr/a"]);
        assert_eq!(r.as_str(), "/~1attr~1a");
        assert_eq!(AttrRef::parse(r.as_str()).unwrap(), r);
        assert_eq!(AttrRef::from_literal(""), Err(AttrRefError::Empty));
    }

    #[test]
    fn descends_objects_not_arrays() {
        let v = serde_json::json!({"b": {"c": 1}, "arr": [1, 2]});
        let r = AttrRef::parse("/a/b/c").unwrap();
        assert_eq!(r.descend(&v), Some(&serde_json::json!(1)));
        let r = AttrRef::parse("/a/arr/0").unwrap();
        assert_eq!(r.descend(&v), None);
    }
}
