//! Whether a clause value can ever match under its operator, decided by the same parsing that
//! compilation uses, so a checker built on it cannot disagree with evaluation.
//!
//! Compilation keeps tolerating unusable values (LaunchDarkly's SDKs do: the value simply never
//! matches); this only says which ones those are, and why, for tools that want to warn about
//! them (`flagd validate`, the admin API).

use flags_core::{Operator, Value};

use crate::compile::compile_regex;
use crate::ops::{parse_semver, parse_timestamp};

/// Why a clause value never matches under its operator. Its text is the message to show, after
/// the value's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnusableValue {
    /// A `matches` value that is not a string or is not a regular expression; the reason says
    /// which.
    #[error("invalid regular expression: {0}")]
    Regex(String),
    /// A `before` or `after` value that is neither an RFC 3339 date-time string nor a number of
    /// Unix milliseconds.
    #[error(
        "invalid date: expected an RFC 3339 date-time (like 2024-01-31T12:00:00Z) or Unix milliseconds"
    )]
    Date,
    /// A `semVerEqual`, `semVerLessThan` or `semVerGreaterThan` value that is not a string in
    /// the lenient semantic-version form evaluation accepts (`1`, `1.2`, `1.2.3-beta+build`).
    #[error("invalid semantic version: expected MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]")]
    SemVer,
}

/// Checks one value of a clause with operator `op`: `Ok` when evaluation can use it, or why it
/// never matches. Only the operators that parse their values (`matches`, `before`, `after` and
/// the semantic-version ones) can refuse a value; any value is usable by the others.
pub fn check_clause_value(op: &Operator, value: &Value) -> Result<(), UnusableValue> {
    match op {
        Operator::Matches => match value {
            Value::String(pattern) => compile_regex(pattern)
                .map(drop)
                .map_err(|e| UnusableValue::Regex(regex_reason(&e))),
            other => Err(UnusableValue::Regex(format!(
                "expected a string, found {}",
                json_type(other)
            ))),
        },
        Operator::Before | Operator::After => match parse_timestamp(value) {
            Some(_) => Ok(()),
            None => Err(UnusableValue::Date),
        },
        Operator::SemVerEqual | Operator::SemVerLessThan | Operator::SemVerGreaterThan => {
            match value.as_str().and_then(parse_semver) {
                Some(_) => Ok(()),
                None => Err(UnusableValue::SemVer),
            }
        }
        _ => Ok(()),
    }
}

/// The regex crate's reason on one line. A syntax error is several lines (the pattern, a caret
/// under the fault, then `error: ...`), of which the last says what is wrong.
fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    match text
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
    {
        Some(reason) => reason.to_owned(),
        None => text.lines().map(str::trim).collect::<Vec<_>>().join(" "),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{CompiledData, evaluate};

    fn check(op: &str, value: Value) -> Result<(), String> {
        check_clause_value(&Operator::parse(op), &value).map_err(|e| e.to_string())
    }

    #[test]
    fn unusable_values_say_why() {
        let cases = [
            ("matches", json!("^a.*"), Ok(())),
            (
                "matches",
                json!("("),
                Err("invalid regular expression: unclosed group"),
            ),
            (
                "matches",
                json!(3),
                Err("invalid regular expression: expected a string, found a number"),
            ),
            ("before", json!("2024-01-31T12:00:00Z"), Ok(())),
            ("after", json!(1_706_702_400_000_i64), Ok(())),
            (
                "before",
                json!("2024-01-31"),
                Err(
                    "invalid date: expected an RFC 3339 date-time (like 2024-01-31T12:00:00Z) or Unix milliseconds",
                ),
            ),
            (
                "after",
                json!(true),
                Err(
                    "invalid date: expected an RFC 3339 date-time (like 2024-01-31T12:00:00Z) or Unix milliseconds",
                ),
            ),
            ("semVerEqual", json!("1"), Ok(())),
            ("semVerLessThan", json!("1.2"), Ok(())),
            ("semVerGreaterThan", json!("1.2.3-beta.1+build"), Ok(())),
            (
                "semVerEqual",
                json!("v1.2.3"),
                Err(
                    "invalid semantic version: expected MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]",
                ),
            ),
            (
                "semVerEqual",
                json!(1),
                Err(
                    "invalid semantic version: expected MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]",
                ),
            ),
            ("in", json!({"any": "thing"}), Ok(())),
            ("lessThan", json!("not a number"), Ok(())),
            ("madeUp", json!("("), Ok(())),
        ];
        for (op, value, want) in cases {
            assert_eq!(
                check(op, value.clone()),
                want.map_err(str::to_owned),
                "{op} {value}"
            );
        }
    }

    /// A value the check calls unusable never matches, even the very string it names, and one
    /// it accepts does match that string: the check and evaluation agree.
    #[test]
    fn the_check_agrees_with_evaluation() {
        let cases = [
            ("matches", json!("("), json!("(")),
            ("matches", json!("a+"), json!("aa")),
            ("semVerEqual", json!("v1.2.3"), json!("v1.2.3")),
            ("semVerEqual", json!("1.2"), json!("1.2.0")),
            ("before", json!("2024-01-31"), json!(0)),
            ("before", json!("2024-01-31T00:00:00Z"), json!(0)),
            ("after", json!(1000), json!(2000)),
        ];
        for (op, clause_value, context_value) in cases {
            let data = CompiledData::from_json_str(
                &json!({"flags": {"f": {
                    "key": "f", "on": true, "variations": [false, true],
                    "fallthrough": {"variation": 0},
                    "rules": [{"variation": 1, "clauses": [
                        {"attribute": "a", "op": op, "values": [clause_value]}
                    ]}]
                }}})
                .to_string(),
            )
            .unwrap();
            let context = flags_core::Context::from_json(
                &json!({"kind": "user", "key": "k", "a": context_value}),
            )
            .unwrap();
            let matched = evaluate(&data, "f", &context).value == Some(&json!(true));
            let usable = check(op, clause_value.clone()).is_ok();
            assert_eq!(
                matched, usable,
                "{op} {clause_value} against {context_value}"
            );
        }
    }
}
