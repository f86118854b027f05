//! Request bodies of the evaluation routes, `{"context": {...}}`, read straight from the bytes:
//! the context's members go into the [`flags_core::Context`] without a `serde_json::Value` tree
//! of the body being built first and copied again.
//!
//! What counts as an error is exactly what reading the body as a `Value` would find: every
//! member other than `context` is still read as a `Value` (and dropped), and a repeated
//! `context` keeps the last one, as a `serde_json::Map` does.

use std::fmt;

use flags_core::context::MaybeObject;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request body that is valid JSON.
#[derive(Debug, PartialEq)]
pub(super) enum ContextBody {
    /// Not an object.
    NotAnObject,
    /// An object, with its `context` member when it has one.
    Object(Option<MaybeObject>),
}

impl ContextBody {
    /// Reads a body; the error is the JSON syntax error.
    pub(super) fn parse(bytes: &[u8]) -> Result<ContextBody, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl<'de> Deserialize<'de> for ContextBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ContextBody, D::Error> {
        d.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = ContextBody;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContextBody, A::Error> {
        let mut context = None;
        while let Some(IsContext(is_context)) = map.next_key()? {
            if is_context {
                context = Some(map.next_value::<MaybeObject>()?);
            } else {
                map.next_value::<Value>()?;
            }
        }
        Ok(ContextBody::Object(context))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ContextBody, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(ContextBody::NotAnObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ContextBody, E> {
        Ok(ContextBody::NotAnObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ContextBody, E> {
        Ok(ContextBody::NotAnObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<ContextBody, E> {
        Ok(ContextBody::NotAnObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ContextBody, E> {
        Ok(ContextBody::NotAnObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<ContextBody, E> {
        Ok(ContextBody::NotAnObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<ContextBody, E> {
        Ok(ContextBody::NotAnObject)
    }
}

/// A member name, compared with `context` without being kept.
struct IsContext(bool);

impl<'de> Deserialize<'de> for IsContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IsContext, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = IsContext;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<IsContext, E> {
                Ok(IsContext(name == "context"))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

/// A variation index written as a JSON string (OFREP's `variant`), without an allocation.
#[derive(Debug, Clone, Copy)]
pub(super) struct IndexString(pub usize);

impl Serialize for IndexString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use flags_core::context::Members;
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> MaybeObject {
        match value {
            Value::Object(map) => MaybeObject::Object(Members::from(map)),
            _ => MaybeObject::Other,
        }
    }

    #[test]
    fn reads_what_a_value_would() {
        let cases = [
            (
                r#"{"context": {"key": "a", "x": [1]}}"#,
                ContextBody::Object(Some(object(json!({"key": "a", "x": [1]})))),
            ),
            (
                r#"{"context": 1, "other": {"a": [true]}}"#,
                ContextBody::Object(Some(MaybeObject::Other)),
            ),
            (
                r#"{"context": {"key": "a"}, "context": {"key": "b"}}"#,
                ContextBody::Object(Some(object(json!({"key": "b"})))),
            ),
            (r#"{"other": null}"#, ContextBody::Object(None)),
            ("{}", ContextBody::Object(None)),
            (
                r#"{"context": null}"#,
                ContextBody::Object(Some(MaybeObject::Other)),
            ),
            ("[1, 2]", ContextBody::NotAnObject),
            ("\"x\"", ContextBody::NotAnObject),
            ("null", ContextBody::NotAnObject),
            ("3.5", ContextBody::NotAnObject),
        ];
        for (text, expected) in cases {
            assert_eq!(
                ContextBody::parse(text.as_bytes()).unwrap(),
                expected,
                "{text}"
            );
        }
        // Syntax errors are reported with the message a `Value` parse gives.
        for text in [
            "",
            "{",
            r#"{"context": {"key": "a"}} x"#,
            r#"{"other": 1e999}"#,
            r#"{"context": {"k": tru}}"#,
            "[1,]",
        ] {
            let ours = ContextBody::parse(text.as_bytes()).unwrap_err().to_string();
            let theirs = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn writes_variants_as_strings() {
        assert_eq!(serde_json::to_string(&IndexString(12)).unwrap(), "\"12\"");
    }
}
