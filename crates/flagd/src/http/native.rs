//! The native evaluation API: LaunchDarkly contexts in, LaunchDarkly evaluation details out.
//!
//! `POST /v1/evaluate/{flagKey}` → `{"key","value","variationIndex","reason"}` (404 with an
//! `ERROR`/`FLAG_NOT_FOUND` reason for an unknown flag); `POST /v1/evaluate` →
//! `{"flags":{KEY:{"value","variationIndex","reason"}}}`. Both take `{"context": <LD context>}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flags_core::context::MaybeObject;
use flags_core::{
    BigSegmentStore, Context, ContextError, ErrorKind, EvalDetail, Reason, ReasonJson,
};

use super::answer;
use super::body::ContextBody;
use super::error::ApiError;
use super::scan;
use crate::engine::Snapshot;
use crate::env::Env;
use crate::metrics::UNKNOWN_FLAG;
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
    let detail = snapshot.evaluate_with(&env.ops, flag_key, &context, big);
    let not_found = matches!(
        detail.reason,
        Reason::Error {
            error_kind: ErrorKind::FlagNotFound
        }
    );
    let label = if not_found { UNKNOWN_FLAG } else { flag_key };
    state.metrics.evaluation(label, detail.reason.kind_str());
    export_evaluations(state, env, &snapshot, &context, [(flag_key, &detail)]);
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
    let results = snapshot.evaluate_all_with(&env.ops, &context, big);
    for (key, detail) in &results {
        state.metrics.evaluation(key, detail.reason.kind_str());
    }
    export_evaluations(
        state,
        env,
        &snapshot,
        &context,
        results.iter().map(|(key, detail)| (*key, detail)),
    );
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

/// Hands flagd's own evaluations to the exporters, as many as the configured sampling keeps
/// (nothing at all is built when it keeps none).
pub(super) fn export_evaluations<'a, 'd: 'a>(
    state: &AppState,
    env: &Env,
    snapshot: &Snapshot,
    context: &Context,
    evaluations: impl IntoIterator<Item = (&'a str, &'a EvalDetail<'d>)>,
) {
    if !state.events.samples_evaluations() {
        return;
    }
    let records: Vec<_> = evaluations
        .into_iter()
        .filter_map(|(key, detail)| {
            let version = snapshot.compiled_flag(key).map(|flag| flag.version());
            state
                .events
                .evaluation(&env.key, key, version, context, detail)
        })
        .collect();
    state.events.submit(records);
}
