//! Liveness, readiness and metrics: `GET /healthz`, `GET /readyz`, `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::readiness::{self, Readiness, SourceState};
use crate::state::{AppState, Mode};
use crate::store::rfc3339;

/// The `/readyz` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ready {
    status: &'static str,
    flags: Option<usize>,
    segments: Option<usize>,
    generation: Option<u64>,
    data_digest: Option<String>,
    last_reload_at: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    consecutive_failures: u32,
    warnings: Vec<String>,
    files: Vec<String>,
    /// The data served was read from Redis at start, the files giving nothing.
    stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<crate::redis_mirror::RedisReady>,
    /// The descriptor set, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    descriptors: Option<crate::descriptors::DescriptorStatus>,
}

/// Alive: the process answers.
pub(super) async fn healthz() -> Response {
    Json(json!({"status": "OK"})).into_response()
}

/// Ready when data is loaded: 200 `SERVING` (or `DEGRADED` after repeated failed reloads, still
/// serving the last good data), 503 `CONNECTING` before any data. Always reports the last
/// reload error and when it happened.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let files = match &state.mode {
        Mode::Root { health, .. } => return root_readyz(&state, health),
        Mode::Proxy { upstream } => return proxy_readyz(&state, upstream),
        Mode::File { files } => files,
    };
    let readiness = readiness::of(&state);
    let error = state.store.health().current_error();
    let health = state.store.health().report();
    let snapshot = state.store.snapshot();
    let stale = state.store.is_warm();
    let body = Ready {
        status: readiness.state.label(),
        flags: snapshot.as_ref().map(|s| s.flag_count()),
        segments: snapshot.as_ref().map(|s| s.segment_count()),
        generation: snapshot.as_ref().map(|s| s.generation()),
        data_digest: snapshot.as_ref().map(|s| s.digest().to_owned()),
        last_reload_at: health.last_success_unix_ms.map(rfc3339),
        last_error_at: error.as_ref().map(|(_, at)| rfc3339(*at)),
        last_error: error.map(|(message, _)| message),
        consecutive_failures: health.consecutive_failures,
        warnings: state.store.warnings(),
        files: files.iter().map(|f| f.display().to_string()).collect(),
        stale,
        redis: state.redis.as_ref().map(|r| r.report()),
        descriptors: descriptors(&state),
    };
    (code_of(readiness), Json(body)).into_response()
}

/// Where the descriptor set stands (the one in use, and why the file's latest content is not
/// when it is bad), when one is configured. A bad set does not make flagd unready: the last
/// good one, or none, stays in use.
fn descriptors(state: &AppState) -> Option<crate::descriptors::DescriptorStatus> {
    state.descriptors.as_ref().map(|d| d.status())
}

/// 200 when data is served, 503 before.
fn code_of(readiness: Readiness) -> StatusCode {
    if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Prometheus text exposition (OpenMetrics flavour, which Prometheus reads natively).
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// Proxy mode: the upstream's health (`CONNECTING` before any data, `SERVING` while its stream
/// is up, `DEGRADED` with the seconds since it last answered while the last data keeps
/// serving, `DOWN` when it refused the key) and the data served.
fn proxy_readyz(state: &AppState, upstream: &crate::proxy::Upstream) -> Response {
    let readiness = readiness::of(state);
    let report = upstream.report();
    let snapshot = state.store.snapshot();
    let stale = readiness.state == SourceState::Stale;
    let mut body = json!({
        "status": readiness.state.label(),
        "stale": stale,
        "source": if stale { "redis" } else { "upstream" },
        "upstream": report.url,
        "secondsSinceLastContact": report.seconds_since_last_contact,
        "lastError": report.last_error,
        "consecutiveFailures": report.consecutive_failures,
        "flags": snapshot.as_ref().map(|s| s.flag_count()),
        "segments": snapshot.as_ref().map(|s| s.segment_count()),
        "generation": snapshot.as_ref().map(|s| s.generation()),
        "dataDigest": snapshot.as_ref().map(|s| s.digest().to_owned()),
    });
    if let Some(redis) = &state.redis {
        body["redis"] = json!(redis.report());
    }
    if let Some(status) = descriptors(state) {
        body["descriptors"] = json!(status);
    }
    (code_of(readiness), Json(body)).into_response()
}

/// One environment in the root-mode `/readyz` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvReady {
    flags: Option<usize>,
    segments: Option<usize>,
    generation: Option<u64>,
    data_digest: Option<String>,
    killed: Vec<String>,
    /// Read from Redis at start, the store being unreachable; replaced when it answers.
    stale: bool,
}

/// Root mode: the health of the store connection (`CONNECTING` before the first load, then
/// `SERVING`, or `DEGRADED` after 3 failures in a row while the last data keeps serving), the
/// seconds since the store last answered, and each environment's data.
fn root_readyz(state: &AppState, health: &crate::root::RootHealth) -> Response {
    let readiness = readiness::of(state);
    let report = health.report();
    let stale = readiness.state == SourceState::Stale;
    let environments: serde_json::Map<String, serde_json::Value> = state
        .envs
        .all()
        .into_iter()
        .filter(|env| &*env.key != crate::env::DEFAULT_ENV || env.store.snapshot().is_some())
        .map(|env| {
            let snapshot = env.store.snapshot();
            let ready = EnvReady {
                flags: snapshot.as_ref().map(|s| s.flag_count()),
                segments: snapshot.as_ref().map(|s| s.segment_count()),
                generation: snapshot.as_ref().map(|s| s.generation()),
                data_digest: snapshot.as_ref().map(|s| s.digest().to_owned()),
                killed: env.ops.killed(),
                stale: env.store.is_warm(),
            };
            (env.key.to_string(), json!(ready))
        })
        .collect();
    let status = if stale {
        json!("STALE")
    } else {
        json!(report.status)
    };
    let mut body = json!({
        "status": status,
        "source": if stale { "redis" } else { "database" },
        "secondsSinceLastContact": report.seconds_since_last_contact,
        "lastSuccessUnixMs": report.last_success_unix_ms,
        "consecutiveFailures": report.consecutive_failures,
        "lastError": report.last_error,
        "environments": environments,
    });
    if let Some(redis) = &state.redis {
        body["redis"] = json!(redis.report());
    }
    if let Some(status) = descriptors(state) {
        body["descriptors"] = json!(status);
    }
    (code_of(readiness), Json(body)).into_response()
}
