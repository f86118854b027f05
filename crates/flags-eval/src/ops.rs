//! Clause operators on single values, with LaunchDarkly's type rules: strings only for the
//! string operators, numbers only for the numeric ones, RFC 3339 strings or Unix milliseconds for
//! dates, and lenient semantic versions (`1` and `1.2` are accepted).

use std::cmp::Ordering;

use flags_core::Value;
use semver::{BuildMetadata, Prerelease, Version};

use crate::compile::{COp, InSet};

/// String equality that compares short strings inline rather than calling `memcmp`, which
/// dominates the cost of the string operators on typical short values.
#[inline(always)]
pub(crate) fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Compare overlapping machine words from both ends: two loads per side for any length up
    // to 16, no loop and no call.
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        8..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        _ => a == b,
    }
}

#[inline(always)]
fn word4(s: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u32::from_ne_bytes(w)
}

#[inline(always)]
fn word8(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_ne_bytes(w)
}

#[inline(always)]
fn starts_with(s: &str, p: &str) -> bool {
    s.len() >= p.len() && short_eq(&s.as_bytes()[..p.len()], p.as_bytes())
}

#[inline]
fn ends_with(s: &str, p: &str) -> bool {
    s.len() >= p.len() && short_eq(&s.as_bytes()[s.len() - p.len()..], p.as_bytes())
}

/// A comparison an operator makes between the context value and a clause value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Cmp {
    #[inline]
    fn holds(self, o: Ordering) -> bool {
        match self {
            Cmp::Lt => o == Ordering::Less,
            Cmp::Le => o != Ordering::Greater,
            Cmp::Gt => o == Ordering::Greater,
            Cmp::Ge => o != Ordering::Less,
            Cmp::Eq => o == Ordering::Equal,
        }
    }

    #[inline]
    fn holds_f64(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => a == b,
        }
    }
}

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timestamp(i64, u32);

/// Reads a date: an RFC 3339 string with date, time and offset, or Unix milliseconds.
pub(crate) fn parse_timestamp(v: &Value) -> Option<Timestamp> {
    match v {
        Value::Number(n) => {
            let ms = n.as_f64()?;
            if !ms.is_finite() {
                return None;
            }
            let secs = (ms / 1000.0).floor();
            if secs < i64::MIN as f64 || secs > i64::MAX as f64 {
                return None;
            }
            // Sub-millisecond digits of a number are kept to the nanosecond.
            let nanos = ((ms - secs * 1000.0) * 1_000_000.0)
                .round()
                .clamp(0.0, 999_999_999.0);
            Some(Timestamp(secs as i64, nanos as u32))
        }
        Value::String(s) => parse_rfc3339(s),
        _ => None,
    }
}

fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    // RFC 3339 needs a full date, the `T` separator, a time and an offset.
    if s.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let dt = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(Timestamp(dt.timestamp(), dt.timestamp_subsec_nanos()))
}

/// Parses a semantic version, accepting a missing minor or patch (`1`, `1.2`, `1.2-beta`).
pub(crate) fn parse_semver(s: &str) -> Option<Version> {
    let end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(end);
    let mut parts = [0u64; 3];
    for (count, part) in core.split('.').enumerate() {
        if count == 3 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if part.len() > 1 && part.starts_with('0') {
            return None;
        }
        parts[count] = part.parse().ok()?;
    }
    let mut v = Version::new(parts[0], parts[1], parts[2]);
    if rest.is_empty() {
        return Some(v);
    }
    let (pre, build) = match rest.find('+') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if let Some(p) = pre.strip_prefix('-') {
        v.pre = Prerelease::new(p).ok().filter(|p| !p.is_empty())?;
    } else if !pre.is_empty() {
        return None;
    }
    if let Some(b) = build {
        v.build = BuildMetadata::new(b).ok().filter(|b| !b.is_empty())?;
    }
    Some(v)
}

/// Semantic-version precedence: build metadata does not count.
fn semver_precedence(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

/// JSON equality with numbers compared as f64 (so `1` equals `1.0`).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

impl InSet {
    #[inline]
    fn contains(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => self.strings.contains(s),
            Value::Number(n) => match (&self.rest, n.as_f64()) {
                (Some(rest), Some(f)) => rest.numbers.contains(&f),
                _ => false,
            },
            Value::Bool(true) => self.has_true,
            Value::Bool(false) => self.has_false,
            Value::Null => self.has_null,
            other => self
                .rest
                .as_ref()
                .is_some_and(|rest| rest.others.iter().any(|o| json_eq(o, other))),
        }
    }
}

impl COp {
    /// Whether one (non-array) context value matches any clause value. Segment matching is
    /// handled by the evaluator and never reaches here.
    ///
    /// The common string operators are handled inline; everything else (other types, regexes,
    /// numbers, dates, versions) goes to [`COp::matches_other`], out of line, so this stays small
    /// enough to inline into the clause loop.
    #[inline(always)]
    pub(crate) fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (COp::In(set), Value::String(s)) => set.strings.contains(s),
            (COp::StartsWith(vals), Value::String(s)) => {
                for p in vals.iter() {
                    if starts_with(s, p) {
                        return true;
                    }
                }
                false
            }
            _ => self.matches_other(v),
        }
    }

    /// Whether any element of an array attribute matches.
    #[inline(never)]
    pub(crate) fn matches_any(&self, items: &[Value]) -> bool {
        items.iter().any(|item| self.matches(item))
    }

    #[inline(never)]
    fn matches_other(&self, v: &Value) -> bool {
        match self {
            COp::In(set) => set.contains(v),
            COp::StartsWith(vals) => v
                .as_str()
                .is_some_and(|s| vals.iter().any(|p| starts_with(s, p))),
            COp::EndsWith(vals) => v
                .as_str()
                .is_some_and(|s| vals.iter().any(|p| ends_with(s, p))),
            COp::Contains(vals) => v
                .as_str()
                .is_some_and(|s| vals.iter().any(|p| s.contains(&**p))),
            COp::Matches(res) => v
                .as_str()
                .is_some_and(|s| res.iter().any(|r| r.is_match(s))),
            COp::Numeric(cmp, nums) => match v {
                Value::Number(n) => n
                    .as_f64()
                    .is_some_and(|a| nums.iter().any(|b| cmp.holds_f64(a, *b))),
                _ => false,
            },
            COp::Date(cmp, times) => {
                parse_timestamp(v).is_some_and(|a| times.iter().any(|b| cmp.holds(a.cmp(b))))
            }
            COp::SemVer(cmp, versions) => v
                .as_str()
                .and_then(parse_semver)
                .is_some_and(|a| versions.iter().any(|b| cmp.holds(semver_precedence(&a, b)))),
            COp::Segment(_) | COp::Never => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_clause;
    use flags_core::Clause;
    use serde_json::json;

    /// One operator check: `context_value op clause_values` should be `expected`.
    fn check(op: &str, context_value: Value, clause_values: Value, expected: bool) {
        let clause: Clause =
            serde_json::from_value(json!({"attribute": "a", "op": op, "values": clause_values}))
                .unwrap();
        let c = compile_clause(&clause);
        assert_eq!(
            c.op.matches(&context_value),
            expected,
            "{context_value} {op} {clause_values} should be {expected}"
        );
    }

    #[test]
    fn equality() {
        check("in", json!("x"), json!(["y", "x"]), true);
        check("in", json!("x"), json!(["y"]), false);
        check("in", json!(1), json!([1.0]), true);
        check("in", json!(1.5), json!([1, 1.5]), true);
        check("in", json!(true), json!([1]), false);
        check("in", json!(1), json!([true]), false);
        check("in", json!("1"), json!([1]), false);
        check("in", json!(false), json!([false]), true);
        check("in", json!({"a": [1]}), json!([{"a": [1.0]}]), true);
        check("in", json!([1]), json!([[1], 2]), true);
        let many: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        check("in", json!("k99"), json!(many), true);
        check("in", json!("k100"), json!(many), false);
    }

    #[test]
    fn strings() {
        check("startsWith", json!("abc"), json!(["ab"]), true);
        check("startsWith", json!("abc"), json!(["bc"]), false);
        check("endsWith", json!("abc"), json!(["bc"]), true);
        check("contains", json!("abc"), json!(["b"]), true);
        check("contains", json!(1), json!(["1"]), false);
        check("startsWith", json!("1"), json!([1]), false);
        check("matches", json!("hello world"), json!(["^hello"]), true);
        check("matches", json!("hello"), json!(["(unclosed", "l+"]), true);
        check("matches", json!("hello"), json!(["(unclosed"]), false);
        check("matches", json!(5), json!(["5"]), false);
    }

    #[test]
    fn numbers() {
        check("lessThan", json!(1), json!([2]), true);
        check("lessThan", json!(2), json!([2]), false);
        check("lessThanOrEqual", json!(2), json!([2.0]), true);
        check("greaterThan", json!(3), json!([2]), true);
        check("greaterThanOrEqual", json!(2), json!([2]), true);
        check("greaterThan", json!("3"), json!([2]), false);
        check("lessThan", json!(1), json!(["2"]), false);
    }

    #[test]
    fn dates() {
        check(
            "before",
            json!("2017-12-06T00:00:00.000-07:00"),
            json!([1512543601000_i64]),
            true,
        );
        check(
            "before",
            json!(1512543600000_i64),
            json!(["2017-12-06T07:00:00Z"]),
            false,
        );
        check(
            "after",
            json!("2017-12-06T07:00:01Z"),
            json!(["2017-12-06T00:00:00.000-07:00"]),
            true,
        );
        check(
            "after",
            json!("2017-12-06T07:00:00.000001Z"),
            json!(["2017-12-06T07:00:00Z"]),
            true,
        );
        check(
            "before",
            json!("2017-12-06"),
            json!([1512543601000_i64]),
            false,
        );
        check(
            "before",
            json!("1512543600000"),
            json!([1512543601000_i64]),
            false,
        );
        check("before", json!(true), json!([1512543601000_i64]), false);
        check(
            "after",
            json!(1512543601000_i64),
            json!(["bad", 1512543600000_i64]),
            true,
        );
    }

    #[test]
    fn semantic_versions() {
        check("semVerEqual", json!("2.0.0"), json!(["2.0.0"]), true);
        check("semVerEqual", json!("2"), json!(["2.0.0"]), true);
        check("semVerEqual", json!("2.1"), json!(["2.1.0"]), true);
        check("semVerEqual", json!("2.0.0+build"), json!(["2.0.0"]), true);
        check("semVerEqual", json!("2-rc1"), json!(["2.0.0-rc1"]), true);
        check("semVerLessThan", json!("2.0.0-rc1"), json!(["2.0.0"]), true);
        check(
            "semVerLessThan",
            json!("2.0.0-rc.2"),
            json!(["2.0.0-rc.10"]),
            true,
        );
        check("semVerGreaterThan", json!("2.0.1"), json!(["2.0.0"]), true);
        check("semVerEqual", json!("02.0.0"), json!(["2.0.0"]), false);
        check("semVerEqual", json!("v2.0.0"), json!(["2.0.0"]), false);
        check("semVerEqual", json!("2.0.0.0"), json!(["2.0.0"]), false);
        check("semVerEqual", json!("2.0.0-"), json!(["2.0.0"]), false);
        check("semVerEqual", json!(2), json!(["2.0.0"]), false);
    }

    #[test]
    fn unknown_operators_never_match() {
        check("madeUp", json!("x"), json!(["x"]), false);
    }
}
