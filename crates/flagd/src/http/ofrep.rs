//! OFREP, the OpenFeature Remote Evaluation Protocol (`service/openapi.yaml` of
//! open-feature/protocol).
//!
//! Context mapping: `targetingKey` becomes the LaunchDarkly key. A context with a `kind` is read
//! as LaunchDarkly context JSON (so multi-kind contexts work); any other context is a `user`
//! context carrying the remaining attributes. The variant is the variation index as a string,
//! as LaunchDarkly's own OpenFeature providers do.
//!
//! With a descriptor set, a declared flag that would serve no value (missing, failed, off
//! without an off variation, or no data yet) answers with its compiled default: reason
//! `DEFAULT`, no variant, and `metadata` `{"source":"COMPILED_DEFAULT","reasonKind":KIND}`
//! (with `errorKind` for an error); the bulk answer includes the declared flags the data lacks.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flags_core::context::{MaybeObject, Members};
use flags_core::{BigSegmentStore, Context, ErrorKind, EvalDetail, Reason};
use serde::Serialize;
use serde_json::{Value, json};

use super::answer::{self, Metadata, OfrepItem};
use super::body::ContextBody;
use super::error::ApiError;
use super::scan;
use super::{etag_matches, not_modified};
use crate::engine::{self, Snapshot};
use crate::env::Env;
use crate::evaluate;
use crate::state::AppState;

/// An OFREP error: `errorCode` and `errorDetails`, with the status it is answered with.
#[derive(Debug)]
struct OfrepError {
    status: StatusCode,
    code: &'static str,
    details: String,
}

impl OfrepError {
    fn new(status: StatusCode, code: &'static str, details: impl Into<String>) -> OfrepError {
        OfrepError {
            status,
            code,
            details: details.into(),
        }
    }

    fn parse(details: impl Into<String>) -> OfrepError {
        OfrepError::new(StatusCode::BAD_REQUEST, "PARSE_ERROR", details)
    }

    fn invalid_context(details: impl Into<String>) -> OfrepError {
        OfrepError::new(StatusCode::BAD_REQUEST, "INVALID_CONTEXT", details)
    }

    fn targeting_key_missing() -> OfrepError {
        OfrepError::new(
            StatusCode::BAD_REQUEST,
            "TARGETING_KEY_MISSING",
            "the context has no targetingKey (or key) to identify it",
        )
    }

    fn not_ready() -> OfrepError {
        OfrepError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "PROVIDER_NOT_READY",
            "no flag data has been loaded yet",
        )
    }

    /// The single-flag form, which names the flag.
    fn for_flag(self, key: &str) -> Response {
        let body = Failure {
            key: Some(key),
            error_code: self.code,
            error_details: self.details,
        };
        (self.status, Json(body)).into_response()
    }

    /// The bulk form, without a key.
    fn bulk(self) -> Response {
        let body = Failure {
            key: None,
            error_code: self.code,
            error_details: self.details,
        };
        (self.status, Json(body)).into_response()
    }
}

/// A successful evaluation. `value` and `variant` are absent when the flag serves no variation
/// (off without an off variation): `null` is no valid OFREP value, and providers read a missing
/// value as "use the caller's default" (open-feature/protocol ADR 0006), keeping the reason.
struct Success<'a> {
    key: &'a str,
    value: Option<&'a Value>,
    reason: &'static str,
    /// The variation index, which OFREP writes as a string.
    variant: Option<usize>,
    metadata: Metadata,
}

#[derive(Serialize)]
struct Failure<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(rename = "errorCode")]
    error_code: &'static str,
    #[serde(rename = "errorDetails")]
    error_details: String,
}

/// Why a request could not be read: an OFREP error, or a body that could not even be received
/// (too large, connection trouble), which OFREP has no code for.
enum RequestError {
    Ofrep(OfrepError),
    Body(ApiError),
}

/// Reads the request body, `{"context": {...}}`, into a LaunchDarkly context.
fn read_context(body: Result<Bytes, ApiError>) -> Result<Context, RequestError> {
    read_request(body).and_then(|c| to_ld_context(c).map_err(RequestError::Ofrep))
}

/// The context a single-flag evaluation makes of `body`, if it makes one: for the fuzz target
/// (see [`crate::fuzzing`]), which has no use for the error.
pub(super) fn context_of(body: Bytes) -> Option<Context> {
    read_context(Ok(body)).ok()
}

/// Reads the request body, `{"context": {...}}`, and returns the context's members (an empty
/// object when there is no context).
fn read_request(body: Result<Bytes, ApiError>) -> Result<MaybeObject, RequestError> {
    // A body that is too large or unreadable is not an OFREP parse error; answer it plainly.
    let bytes = body.map_err(RequestError::Body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // OFREP allows an empty request; it has no context and so no targeting key.
        return Ok(MaybeObject::Object(Members::default()));
    }
    match ContextBody::parse(&bytes) {
        Err(e) => Err(RequestError::Ofrep(OfrepError::parse(format!(
            "request body is not valid JSON: {e}"
        )))),
        Ok(ContextBody::NotAnObject) => Err(RequestError::Ofrep(OfrepError::parse(
            "request body must be a JSON object with a \"context\" field",
        ))),
        Ok(ContextBody::Object(context)) => {
            Ok(context.unwrap_or(MaybeObject::Object(Members::default())))
        }
    }
}

/// Maps an OpenFeature evaluation context to a LaunchDarkly context.
fn to_ld_context(context: MaybeObject) -> Result<Context, OfrepError> {
    let MaybeObject::Object(mut ld) = context else {
        return Err(OfrepError::invalid_context("context must be a JSON object"));
    };
    let targeting_key = match ld.remove("targetingKey") {
        None | Some(Value::Null) => None,
        Some(key @ Value::String(_)) => Some(key),
        Some(_) => return Err(OfrepError::invalid_context("targetingKey must be a string")),
    };
    let is_multi = ld.get("kind").and_then(Value::as_str) == Some("multi");
    if !ld.contains_key("kind") {
        ld.insert("kind", Value::String(scan::spare_string("user")));
    }
    if !is_multi {
        if let Some(key) = targeting_key {
            ld.insert("key", key);
        }
        match ld.get("key") {
            None | Some(Value::Null) => return Err(OfrepError::targeting_key_missing()),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(OfrepError::targeting_key_missing());
            }
            _ => {}
        }
    }
    Context::from_members(ld).map_err(|e| OfrepError::invalid_context(e.to_string()))
}

/// The OFREP answer for one evaluation result, or for its compiled default `default` when the
/// result serves no value and the flag is declared.
fn item<'a>(
    snapshot: &Snapshot,
    key: &'a str,
    detail: &'a EvalDetail<'a>,
    default: Option<&'a Value>,
) -> Result<Success<'a>, OfrepError> {
    if let Some(default) = default {
        return Ok(compiled_default(key, &detail.reason, default));
    }
    if let Reason::Error { error_kind } = &detail.reason {
        return Err(match error_kind {
            ErrorKind::FlagNotFound => OfrepError::new(
                StatusCode::NOT_FOUND,
                "FLAG_NOT_FOUND",
                format!("flag {key:?} not found"),
            ),
            other => OfrepError::new(
                StatusCode::BAD_REQUEST,
                "GENERAL",
                format!("flag {key:?} could not be evaluated: {}", other.as_str()),
            ),
        });
    }
    // A variant names the value served; with no value there is nothing for it to name.
    let variant = detail.value.and(detail.variation_index);
    Ok(Success {
        key,
        value: detail.value,
        reason: engine::openfeature_reason(snapshot, key, &detail.reason),
        variant,
        metadata: Metadata::Empty,
    })
}

/// A declared flag's compiled default, served in place of an evaluation that gave no value
/// (for `reason`): OpenFeature's `DEFAULT` reason, no variant, and in the metadata the source
/// and LaunchDarkly's reason.
fn compiled_default<'a>(key: &'a str, reason: &Reason<'_>, default: &'a Value) -> Success<'a> {
    let error_kind = match reason {
        Reason::Error { error_kind } => Some(error_kind.as_str()),
        _ => None,
    };
    Success {
        key,
        value: Some(default),
        reason: "DEFAULT",
        variant: None,
        metadata: Metadata::CompiledDefault {
            reason_kind: reason.kind_str(),
            error_kind,
        },
    }
}

/// The reason of a declared flag the data does not hold, or of any flag before data.
const NOT_FOUND: Reason<'static> = Reason::Error {
    error_kind: ErrorKind::FlagNotFound,
};

/// Appends to an ETag's input the big-segment memberships of the context's keys, sorted, and
/// the store's last update.
fn tag_memberships(tagged: &mut Vec<u8>, big: &dyn BigSegmentStore, context: &Context) {
    for single in context.contexts() {
        let hash = flags_eval::big_segment_hash(single.key());
        match big.membership(&hash) {
            Ok(Some(membership)) => {
                let mut refs: Vec<String> = membership
                    .included
                    .iter()
                    .map(|r| format!("+{r}"))
                    .chain(membership.excluded.iter().map(|r| format!("-{r}")))
                    .collect();
                refs.sort_unstable();
                tagged.extend_from_slice(format!("\n{hash}:{}", refs.join(",")).as_bytes());
            }
            Ok(None) => tagged.extend_from_slice(format!("\n{hash}:").as_bytes()),
            Err(_) => tagged.extend_from_slice(format!("\n{hash}!").as_bytes()),
        }
    }
    let synchronized = big.metadata().ok().and_then(|m| m.last_up_to_date);
    tagged.extend_from_slice(format!("\n{synchronized:?}").as_bytes());
}

/// `POST /ofrep/v1/evaluate/flags/{key}`, once the body has been read.
pub(super) fn evaluate_one(
    state: &AppState,
    env: &Env,
    key: &str,
    body: Result<Bytes, ApiError>,
    big: Option<&dyn BigSegmentStore>,
) -> Response {
    let context = match read_context(body) {
        Ok(context) => scan::Recycled::new(context),
        Err(RequestError::Ofrep(error)) => return error.for_flag(key),
        Err(RequestError::Body(error)) => return error.into_response(),
    };
    let Some(snapshot) = env.store.snapshot() else {
        let declared = evaluate::declared(state);
        let detail = EvalDetail::error(ErrorKind::ClientNotReady);
        if let Some(default) = evaluate::compiled_default(declared.as_deref(), key, &detail) {
            return success(compiled_default(key, &detail.reason, default));
        }
        return OfrepError::not_ready().for_flag(key);
    };
    let detail = evaluate::one(state, env, &snapshot, key, &context, big);
    let declared = detail
        .value
        .is_none()
        .then(|| evaluate::declared(state))
        .flatten();
    let default = evaluate::compiled_default(declared.as_deref(), key, &detail);
    match item(&snapshot, key, &detail, default) {
        Ok(answer) => success(answer),
        Err(error) => error.for_flag(key),
    }
}

fn success(success: Success<'_>) -> Response {
    answer::ofrep_success(
        success.key,
        success.value,
        success.reason,
        success.variant,
        success.metadata,
    )
}

/// `POST /ofrep/v1/evaluate/flags`, once the body has been read.
pub(super) fn evaluate_all(
    state: &AppState,
    env: &Env,
    headers: &HeaderMap,
    body: Result<Bytes, ApiError>,
    big: Option<&dyn BigSegmentStore>,
) -> Response {
    // The context as given is part of the ETag; it is written before it is mapped.
    let mut context_json = Vec::new();
    let context = match read_request(body).and_then(|c| {
        if let MaybeObject::Object(members) = &c {
            // Serializing members into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut context_json, members);
        }
        to_ld_context(c).map_err(RequestError::Ofrep)
    }) {
        Ok(parsed) => scan::Recycled::new(parsed),
        Err(RequestError::Ofrep(error)) => return error.bulk(),
        Err(RequestError::Body(error)) => return error.into_response(),
    };
    let Some(snapshot) = env.store.snapshot() else {
        return OfrepError::not_ready().bulk();
    };
    let declared = evaluate::declared(state);
    // The tag covers the data, the kill set and overrides, the declared flags, and the
    // context, so it changes when any of them does; computing it first lets a matching client
    // skip the evaluation entirely.
    let mut tagged = Vec::with_capacity(64 + context_json.len());
    tagged.extend_from_slice(snapshot.digest().as_bytes());
    // Environments may hold equal data with different kills; the key keeps their tags apart.
    tagged.extend_from_slice(env.key.as_bytes());
    tagged.extend_from_slice(format!("\n{}\n", env.ops.generation()).as_bytes());
    if let Some(declared) = &declared {
        tagged.extend_from_slice(declared.digest().as_bytes());
        tagged.push(b'\n');
    }
    tagged.extend_from_slice(&context_json);
    if let Some(big) = big {
        // Memberships change without the data changing; what this answer read of them is
        // part of it.
        tag_memberships(&mut tagged, big, &context);
    }
    let etag = format!("\"{}\"", engine::hex_digest(&tagged));
    if etag_matches(headers, &etag) {
        return not_modified(&etag);
    }
    let results = evaluate::all(state, env, &snapshot, &context, big);
    let mut items: Vec<_> = results
        .iter()
        .map(|(key, detail)| {
            let default = evaluate::compiled_default(declared.as_deref(), key, detail);
            (*key, item(&snapshot, key, detail, default))
        })
        .collect();
    if let Some(declared) = &declared {
        // The declared flags the data lacks answer as each does on its own.
        items.extend(
            evaluate::declared_only(declared, &results)
                .into_iter()
                .map(|(key, default)| (key, Ok(compiled_default(key, &NOT_FOUND, default)))),
        );
        items.sort_by(|a, b| a.0.cmp(b.0));
    }
    let mut response = answer::ofrep_all(items.iter().map(|(key, item)| match item {
        Ok(success) => OfrepItem::Success {
            key: success.key,
            value: success.value,
            reason: success.reason,
            variant: success.variant,
            metadata: success.metadata,
        },
        Err(error) => OfrepItem::Failure {
            key,
            code: error.code,
            details: &error.details,
        },
    }));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// `GET /ofrep/v1/configuration`: what providers may rely on.
pub(super) async fn configuration() -> Response {
    Json(json!({
        "name": "flagd",
        "capabilities": {
            "cacheInvalidation": {"polling": {"enabled": true, "minPollingIntervalMs": 1000}},
            "flagEvaluation": {"supportedTypes": ["int", "float", "string", "boolean", "object"]}
        }
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn to_ld_context(value: Value) -> Result<Context, OfrepError> {
        super::to_ld_context(MaybeObject::deserialize(value).unwrap())
    }

    fn code(value: Value) -> &'static str {
        match to_ld_context(value) {
            Ok(_) => "OK",
            Err(e) => e.code,
        }
    }

    #[test]
    fn context_mapping() {
        let ctx = to_ld_context(json!({"targetingKey": "u1", "email": "a@b.c"})).unwrap();
        assert_eq!(ctx.kinds().collect::<Vec<_>>(), vec!["user"]);
        assert_eq!(ctx.key(), Some("u1"));
        let ctx =
            to_ld_context(json!({"targetingKey": "o1", "kind": "org", "name": "Acme"})).unwrap();
        assert_eq!(ctx.kinds().collect::<Vec<_>>(), vec!["org"]);
        assert_eq!(ctx.key(), Some("o1"));
        let ctx = to_ld_context(json!({
            "kind": "multi",
            "user": {"key": "u1"},
            "org": {"key": "o1"}
        }))
        .unwrap();
        assert!(ctx.is_multi());
        assert_eq!(
            code(json!({"key": "u2"})),
            "OK",
            "LaunchDarkly's providers also accept key"
        );
        assert_eq!(code(json!({})), "TARGETING_KEY_MISSING");
        assert_eq!(code(json!({"targetingKey": ""})), "TARGETING_KEY_MISSING");
        assert_eq!(code(json!({"kind": "org"})), "TARGETING_KEY_MISSING");
        assert_eq!(code(json!({"targetingKey": 5})), "INVALID_CONTEXT");
        assert_eq!(code(json!([1])), "INVALID_CONTEXT");
        assert_eq!(
            code(json!({"targetingKey": "u", "kind": "bad kind!"})),
            "INVALID_CONTEXT"
        );
        assert_eq!(code(json!({"kind": "multi"})), "INVALID_CONTEXT");
    }
}
