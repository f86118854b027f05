//! Typed evaluation results.

use flags_core::{BigSegmentsStatus, ErrorKind, EvalDetail, Reason};
use serde_json::Value;

/// The result of a typed evaluation: the value served (the caller's default on any error), the
/// variation it came from, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Detail<T> {
    /// The value: the flag's variation, or the default given to the call.
    pub value: T,
    /// The variation index, when a variation was served.
    pub variation_index: Option<usize>,
    /// Why: LaunchDarkly's reason kinds (`OFF`, `FALLTHROUGH`, `TARGET_MATCH`, `RULE_MATCH`,
    /// `PREREQUISITE_FAILED`, `ERROR`).
    pub reason: Reason<'static>,
    /// How the big-segment store was, when the evaluation asked it.
    pub big_segments_status: Option<BigSegmentsStatus>,
}

impl<T> Detail<T> {
    /// The default with an `ERROR` reason.
    pub(crate) fn error(default: T, kind: ErrorKind) -> Detail<T> {
        Detail {
            value: default,
            variation_index: None,
            reason: Reason::Error { error_kind: kind },
            big_segments_status: None,
        }
    }

    /// Whether the default was served because of an error.
    pub fn is_error(&self) -> bool {
        matches!(self.reason, Reason::Error { .. })
    }

    /// The reason with the big-segment status inside it, as LaunchDarkly's SDKs serialize it.
    pub fn reason_json(&self) -> Value {
        let mut reason = serde_json::to_value(&self.reason).unwrap_or(Value::Null);
        if let (Some(status), Value::Object(map)) = (self.big_segments_status, &mut reason) {
            map.insert(
                "bigSegmentsStatus".to_owned(),
                serde_json::to_value(status).unwrap_or(Value::Null),
            );
        }
        reason
    }
}

/// Reads a variation as `T`, or says it is the wrong type; and writes a default back as a value,
/// for analytics events.
pub(crate) trait FromValue: Sized {
    fn from_value(value: &Value) -> Option<Self>;

    fn to_value(&self) -> Value;

    /// Whether `value` reads as a `T`, without making one.
    fn fits(value: &Value) -> bool {
        Self::from_value(value).is_some()
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<bool> {
        value.as_bool()
    }

    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<String> {
        value.as_str().map(str::to_owned)
    }

    fn to_value(&self) -> Value {
        Value::String(self.clone())
    }

    fn fits(value: &Value) -> bool {
        value.is_string()
    }
}

impl FromValue for i64 {
    /// Any number: a fraction is truncated toward zero, as LaunchDarkly's SDKs do.
    fn from_value(value: &Value) -> Option<i64> {
        match value {
            Value::Number(n) => n.as_i64().or_else(|| {
                #[allow(clippy::cast_possible_truncation)]
                n.as_f64().map(|f| f as i64)
            }),
            _ => None,
        }
    }

    fn to_value(&self) -> Value {
        Value::from(*self)
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Option<f64> {
        value.as_f64()
    }

    fn to_value(&self) -> Value {
        Value::from(*self)
    }
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Option<Value> {
        Some(value.clone())
    }

    fn to_value(&self) -> Value {
        self.clone()
    }

    fn fits(_: &Value) -> bool {
        true
    }
}

/// The typed detail of an engine result: the value as `T` when it is one, else the default
/// with `WRONG_TYPE`; the default with the engine's reason when no variation was served.
pub(crate) fn typed<T: FromValue>(detail: EvalDetail<'_>, default: T) -> Detail<T> {
    let value = match detail.value {
        None => default,
        Some(value) => match T::from_value(value) {
            Some(v) => v,
            None => return Detail::error(default, ErrorKind::WrongType),
        },
    };
    Detail {
        value,
        variation_index: detail.variation_index,
        reason: detail.reason.into_owned(),
        big_segments_status: detail.big_segments_status,
    }
}
