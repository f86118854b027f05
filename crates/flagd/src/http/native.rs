//! The native evaluation API: LaunchDarkly contexts in, LaunchDarkly evaluation details out.
//!
//! `POST /v1/evaluate/{flagKey}` → `{"key","value","variationIndex","reason"}` (404 with an
//! `ERROR`/`FLAG_NOT_FOUND` reason for an unknown flag); `POST /v1/evaluate` →
//! `{"flags":{KEY:{"value","variationIndex","reason"}}}`. Both take `{"context": <LD context>}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flags_core::context::MaybeObject;
use flags_core::{BigSegmentStore, Context, ContextError, ErrorKind, Reason, ReasonJson};

use super::answer;
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
        let reason = Reason::Error {
            error_kind: ErrorKind::ClientNotReady,
        };
        let reason = ReasonJson {
            reason: &reason,
            big_segments_status: None,
        };
        return answer::native_single(
            StatusCode::SERVICE_UNAVAILABLE,
            flag_key,
            None,
            None,
            &reason,
        );
    };
    let detail = evaluate::one(state, env, &snapshot, flag_key, &context, big);
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
    // In key order, as `evaluate_all` gives them.
    answer::native_all(results.iter().map(|(key, detail)| {
        (
            *key,
            detail.value,
            detail.variation_index,
            detail.reason_json(),
        )
    }))
}
