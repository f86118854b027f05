//! Request bodies of the evaluation routes, `{"context": {...}}`, read straight from the bytes:
//! the context's members go into the [`flags_core::Context`] without a `serde_json::Value` tree
//! of the body being built first and copied again.
//!
//! What counts as an error is exactly what reading the body as a `Value` would find: every
//! member other than `context` is still read as a `Value` (and dropped), and a repeated
//! `context` keeps the last one, as a `serde_json::Map` does.

use std::fmt;

use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use flags_core::context::MaybeObject;
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::error::ApiError;
use super::scan;

/// Reads a request body of at most `limit` bytes, with the answers axum's `Bytes` extractor
/// gives under `DefaultBodyLimit` (413 past the limit, 400 when the body cannot be read), but
/// without the request extension and the boxed, limited body that route needs. A body that
/// arrives in one piece (the usual case) is not copied.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                format!("cannot read request body: Failed to buffer the request body: {e}"),
            )
        })?;
        total = total.saturating_add(chunk.len());
        if total > limit {
            return Err(ApiError::payload_too_large());
        }
        if let Some(joined) = &mut joined {
            joined.extend_from_slice(&chunk);
        } else if first.is_empty() {
            first = chunk;
        } else {
            let mut both = Vec::with_capacity(first.len() + chunk.len());
            both.extend_from_slice(&first);
            both.extend_from_slice(&chunk);
            joined = Some(both);
        }
    }
    Ok(joined.map_or(first, Bytes::from))
}

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
    ///
    /// A body that is UTF-8 as a whole (every valid one) is read as a `str`, so that its strings
    /// are not checked for UTF-8 again one by one; any other body is read as bytes, which fails
    /// with `serde_json`'s error for the first bad byte, as it always did. The usual body is
    /// read by [`scan::context_members`] without serde, to the same value; every other body, and
    /// every error, is `serde_json`'s.
    pub(super) fn parse(bytes: &[u8]) -> Result<ContextBody, serde_json::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => match scan::context_members(text) {
                Some(members) => Ok(ContextBody::Object(Some(MaybeObject::Object(members)))),
                None => serde_json::from_str(text),
            },
            Err(_) => serde_json::from_slice(bytes),
        }
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
        // A body that is not UTF-8 fails where reading it as bytes finds the bad byte.
        for bytes in [
            &b"{\"context\": {\"key\": \"\xff\"}}"[..],
            b"{\"context\": {\"key\": \"a\"}, \"x\": \"\xc3\"}",
            b"\xef\xbb\xbf{}",
        ] {
            let ours = ContextBody::parse(bytes).unwrap_err().to_string();
            let theirs = serde_json::from_slice::<Value>(bytes)
                .unwrap_err()
                .to_string();
            assert_eq!(ours, theirs, "{bytes:?}");
            assert!(!ours.is_empty());
        }
    }

    #[test]
    fn answers_as_serde_json_does() {
        for text in [
            r#"{"context":{"key":"a","groups":["x",1,true,null],"n":-3}}"#,
            r#"{"context": {"key": "a"}, "other": 1}"#,
            r#"{"context":{"key":"\u0061"}}"#,
            r#"{"context":{"n":1.5}}"#,
            r#"{"context":{"n":-0}}"#,
            "{\"context\":{\"k\":\"a\tb\"}}",
            r#"{"context":{"k":"a"}} x"#,
            r#"{"context":{"k":[1,]}}"#,
            r#"{"context":{"k":"a"}"#,
        ] {
            match (
                ContextBody::parse(text.as_bytes()),
                serde_json::from_str::<ContextBody>(text),
            ) {
                (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "{text}"),
                (Err(ours), Err(theirs)) => {
                    assert_eq!(ours.to_string(), theirs.to_string(), "{text}");
                }
                (ours, theirs) => panic!("{text}: {ours:?} against {theirs:?}"),
            }
        }
    }

    #[tokio::test]
    async fn bodies_are_read_whole_and_limited() {
        let chunks = |parts: &[&'static str]| {
            let parts: Vec<Result<Bytes, std::io::Error>> = parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                .collect();
            Body::from_stream(futures_util::stream::iter(parts))
        };
        assert_eq!(read_body(chunks(&["abc"]), 3).await.unwrap(), "abc");
        assert_eq!(
            read_body(chunks(&["ab", "", "c", "d"]), 4).await.unwrap(),
            "abcd"
        );
        assert_eq!(read_body(chunks(&[]), 0).await.unwrap(), "");
        let error = read_body(chunks(&["ab", "cd"]), 3).await.unwrap_err();
        assert_eq!(error, ApiError::payload_too_large());
        let failing = Body::from_stream(futures_util::stream::iter([
            Ok(Bytes::from_static(b"a")),
            Err(std::io::Error::other("connection reset")),
        ]));
        let error = read_body(failing, 10).await.unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error.message,
            "cannot read request body: Failed to buffer the request body: connection reset"
        );
    }
}
