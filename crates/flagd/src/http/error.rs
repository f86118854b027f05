//! The JSON error answer shared by every route that has no protocol-specific error shape:
//! `{"error": "CODE", "message": "what is wrong"}`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

/// An error answered as JSON with a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// A human-readable explanation, safe to show to the caller.
    pub message: String,
    /// Seconds for `Retry-After`, on 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the body is not JSON.
    pub fn invalid_json(detail: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
            format!("request body is not valid JSON: {detail}"),
        )
    }

    /// 400: the body is JSON of the wrong shape.
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// 400: the context is not a valid LaunchDarkly context.
    pub fn invalid_context(detail: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_CONTEXT",
            format!("invalid context: {detail}"),
        )
    }

    /// 503: no flag data has been loaded yet.
    pub fn not_ready() -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_READY",
                "no flag data has been loaded yet",
            )
        }
    }

    /// 503: as many SDK streams are open as the server takes.
    pub fn too_many_streams(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TOO_MANY_STREAMS",
                "the server holds as many streams as it takes; retry later",
            )
        }
    }

    /// 413: the body is over the route's limit.
    pub fn payload_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "request body is too large",
        )
    }

    /// The error for a body that could not be read (too large, or the connection failed).
    pub fn from_body_rejection(rejection: &BytesRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else {
            ApiError::new(
                rejection.status(),
                "INVALID_REQUEST",
                format!("cannot read request body: {rejection}"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Reads a request body as JSON.
pub fn parse_json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|r| ApiError::from_body_rejection(&r))?;
    serde_json::from_slice(&bytes).map_err(ApiError::invalid_json)
}
