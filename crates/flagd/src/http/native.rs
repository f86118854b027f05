//! The native evaluation API: LaunchDarkly contexts in, LaunchDarkly evaluation details out.
//!
//! `POST /v1/evaluate/{flagKey}` → `{"key","value","variationIndex","reason"}` (404 with an
//! `ERROR`/`FLAG_NOT_FOUND` reason for an unknown flag); `POST /v1/evaluate` →
//! `{"flags":{KEY:{"value","variationIndex","reason"}}}`. Both take `{"context": <LD context>}`.
//!
//! With a descriptor set, a declared flag that would serve no value (missing, failed, off
//! without an off variation, or no data yet) answers 200 with its compiled default, no
//! variation index, and the evaluation's reason with `"source":"COMPILED_DEFAULT"` in it; the
//! answer for all flags includes the declared flags the data lacks, the same way.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flags_core::context::MaybeObject;
use flags_core::{
    BigSegmentStore, Context, ContextError, ErrorKind, EvalDetail, Reason, ReasonJson,
};
use serde_json::Value;

use super::answer::{self, Source};
use super::body::ContextBody;
use super::error::ApiError;
use super::scan;
use crate::env::Env;
use crate::evaluate;
use crate::state::AppState;

/// Reads `{"context": ...}` into a LaunchDarkly context.
pub(super) fn read_context(body: Result<Bytes, ApiError>) -> Result<Context, ApiError> {
    let bytes = body?;
    match ContextBody::parse(&bytes).map_err(ApiError::invalid_json)? {
        ContextBody::NotAnObject => Err(ApiError::invalid_request(
            "request body must be a JSON object with a \"context\" field",
        )),
        ContextBody::Object(None) => Err(ApiError::invalid_request(
            "request body is missing the \"context\" field",
        )),
        ContextBody::Object(Some(MaybeObject::Other)) => {
            Err(ApiError::invalid_context(ContextError::NotAnObject))
        }
        ContextBody::Object(Some(MaybeObject::Object(members))) => {
            Context::from_members(members).map_err(ApiError::invalid_context)
        }
    }
}

/// `POST /v1/evaluate/{flagKey}`, once the body has been read.
pub(super) fn evaluate_one(
    state: &AppState,
    env: &Env,
    flag_key: &str,
    body: Result<Bytes, ApiError>,
    big: Option<&dyn BigSegmentStore>,
) -> Response {
    let context = match read_context(body) {
        Ok(c) => scan::Recycled::new(c),
        Err(e) => return e.into_response(),
    };
    let Some(snapshot) = env.store.snapshot() else {
        let detail = EvalDetail::error(ErrorKind::ClientNotReady);
        let declared = evaluate::declared(state);
        if let Some(default) = evaluate::compiled_default(declared.as_deref(), flag_key, &detail) {
            return compiled_default(flag_key, default, &detail.reason_json());
        }
        return answer::native_single(
            StatusCode::SERVICE_UNAVAILABLE,
            flag_key,
            None,
            None,
            &detail.reason_json(),
            Source::Flag,
        );
    };
    let detail = evaluate::one(state, env, &snapshot, flag_key, &context, big);
    if detail.value.is_none() {
        let declared = evaluate::declared(state);
        if let Some(default) = evaluate::compiled_default(declared.as_deref(), flag_key, &detail) {
            return compiled_default(flag_key, default, &detail.reason_json());
        }
    }
    let not_found = evaluate::is_not_found(&detail);
    let status = if not_found {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    answer::native_single(
        status,
        flag_key,
        detail.value,
        detail.variation_index,
        &detail.reason_json(),
        Source::Flag,
    )
}

/// The answer serving a declared flag's compiled default: 200, no variation index, and the
/// evaluation's reason with `"source":"COMPILED_DEFAULT"`.
fn compiled_default(flag_key: &str, default: &Value, reason: &ReasonJson<'_, '_>) -> Response {
    answer::native_single(
        StatusCode::OK,
        flag_key,
        Some(default),
        None,
        reason,
        Source::CompiledDefault,
    )
}

/// `POST /v1/evaluate`, once the body has been read.
pub(super) fn evaluate_all(
    state: &AppState,
    env: &Env,
    body: Result<Bytes, ApiError>,
    big: Option<&dyn BigSegmentStore>,
) -> Response {
    let context = match read_context(body) {
        Ok(c) => scan::Recycled::new(c),
        Err(e) => return e.into_response(),
    };
    let Some(snapshot) = env.store.snapshot() else {
        return ApiError::not_ready().into_response();
    };
    let results = evaluate::all(state, env, &snapshot, &context, big);
    let Some(declared) = evaluate::declared(state) else {
        // In key order, as `evaluate_all` gives them.
        return answer::native_all(results.iter().map(|(key, detail)| {
            (
                *key,
                detail.value,
                detail.variation_index,
                detail.reason_json(),
                Source::Flag,
            )
        }));
    };
    // Declared flags answer with their compiled defaults where they serve no value, and those
    // the data lacks are added, so every flag answers as it does on its own.
    let mut entries: Vec<_> = results
        .iter()
        .map(
            |(key, detail)| match evaluate::compiled_default(Some(&declared), key, detail) {
                Some(default) => (
                    *key,
                    Some(default),
                    None,
                    detail.reason_json(),
                    Source::CompiledDefault,
                ),
                None => (
                    *key,
                    detail.value,
                    detail.variation_index,
                    detail.reason_json(),
                    Source::Flag,
                ),
            },
        )
        .collect();
    let not_found = ReasonJson {
        reason: &NOT_FOUND,
        big_segments_status: None,
    };
    entries.extend(
        evaluate::declared_only(&declared, &results)
            .into_iter()
            .map(|(key, default)| (key, Some(default), None, not_found, Source::CompiledDefault)),
    );
    entries.sort_by(|a, b| a.0.cmp(b.0));
    answer::native_all(entries.into_iter())
}

/// The reason of a declared flag the data does not hold.
const NOT_FOUND: Reason<'static> = Reason::Error {
    error_kind: ErrorKind::FlagNotFound,
};
