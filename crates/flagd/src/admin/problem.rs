//! Admin API errors as RFC 9457 problem details (`application/problem+json`), and the one place
//! where [`StoreError`]s become HTTP statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flags_store::{Dependent, StoreError};
use serde_json::{Map, Value, json};

/// The media type of every admin error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client is asked to wait when the store is unavailable.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// An admin API error, answered as a problem document. Boxed, so that `Result<_, Problem>` stays
/// as small as the success value on the happy path.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem(Box<ProblemDetails>);

/// What a [`Problem`] says.
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemDetails {
    /// The HTTP status.
    pub status: StatusCode,
    /// The last segment of the problem's `type` URI (`not-found`); stable for clients.
    pub kind: &'static str,
    /// What happened, safe to show to the caller.
    pub detail: String,
    /// Field-level errors (`{"path", "message"}`), for validation problems.
    pub errors: Vec<(String, String)>,
    /// Items that still refer to the one being removed.
    pub dependents: Vec<Dependent>,
    /// The item's current version, for version conflicts.
    pub current_version: Option<u64>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl std::ops::Deref for Problem {
    type Target = ProblemDetails;
    fn deref(&self) -> &ProblemDetails {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemDetails {
        &mut self.0
    }
}

impl Problem {
    /// A problem with no extension members.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem(Box::new(ProblemDetails {
            status,
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            dependents: Vec::new(),
            current_version: None,
            retry_after: None,
        }))
    }

    /// With `errors` set.
    fn with_errors(mut self, errors: Vec<(String, String)>) -> Problem {
        self.errors = errors;
        self
    }

    /// With `currentVersion` set.
    fn with_current_version(mut self, version: Option<u64>) -> Problem {
        self.current_version = version;
        self
    }

    /// 400: a field of the request is wrong; `path` names it (empty for the whole body).
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Problem {
        let path = path.into();
        let message = message.into();
        let detail = if path.is_empty() {
            message.clone()
        } else {
            format!("{path}: {message}")
        };
        Problem::new(StatusCode::BAD_REQUEST, "invalid", detail).with_errors(vec![(path, message)])
    }

    /// 400: the body is not JSON.
    pub fn malformed_json(detail: impl std::fmt::Display) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            format!("the request body is not valid JSON: {detail}"),
        )
    }

    /// 401: no key, or a key that is not known (or revoked).
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403: a known key that may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 428: replacing an item that exists needs `If-Match`.
    pub fn precondition_required(current_version: u64) -> Problem {
        Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition-required",
            format!(
                "the item exists (version {current_version}); send If-Match: \"{current_version}\" to replace it"
            ),
        )
        .with_current_version(Some(current_version))
    }

    /// 415: a body of the wrong media type.
    pub fn unsupported_media_type(expected: &str) -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("the request body must be {expected}"),
        )
    }

    /// 503 with `Retry-After`: the store cannot answer now.
    pub fn unavailable() -> Problem {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable; writes are refused until it returns",
        );
        problem.retry_after = Some(UNAVAILABLE_RETRY_AFTER_SECS);
        problem
    }

    /// Maps a store error. `if_match` says whether the request carried `If-Match`, which decides
    /// between 412 (the client's precondition failed) and 409 (a race it did not guard against).
    pub fn from_store(error: StoreError, if_match: bool) -> Problem {
        match error {
            StoreError::NotFound { what } => Problem::not_found(format!("{what} not found")),
            StoreError::Conflict { current_version } => {
                let (status, kind) = if if_match {
                    (StatusCode::PRECONDITION_FAILED, "precondition-failed")
                } else {
                    (StatusCode::CONFLICT, "version-conflict")
                };
                let detail = match current_version {
                    Some(v) => format!(
                        "the item changed meanwhile: its current version is {v}; read it again and retry"
                    ),
                    None => "the item does not exist (any more)".to_owned(),
                };
                Problem::new(status, kind, detail).with_current_version(current_version)
            }
            StoreError::AlreadyExists { what } => Problem::new(
                StatusCode::CONFLICT,
                "already-exists",
                format!("{what} already exists"),
            ),
            StoreError::Invalid { path, message } => Problem::invalid(path, message),
            StoreError::Unresolved { message } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "unresolved", message)
            }
            StoreError::HasDependents { dependents } => {
                let names: Vec<String> = dependents.iter().map(ToString::to_string).collect();
                let mut problem = Problem::new(
                    StatusCode::CONFLICT,
                    "has-dependents",
                    format!("still referenced by {}", names.join(", ")),
                );
                problem.dependents = dependents;
                problem
            }
            StoreError::Unavailable { source } => {
                tracing::warn!(error = %source, "admin store unavailable");
                Problem::unavailable()
            }
            // `Internal`, and any kind of error this server does not know of yet. The detail may
            // name tables or queries: log it, answer generically.
            error => {
                tracing::error!(error = %error, "admin store failure");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the store failed; see the server log",
                )
            }
        }
    }

    /// The problem document.
    pub fn to_json(&self) -> Value {
        let mut doc = Map::new();
        doc.insert(
            "type".to_owned(),
            Value::String(format!("urn:flagd:problem:{}", self.kind)),
        );
        doc.insert(
            "title".to_owned(),
            Value::String(self.status.canonical_reason().unwrap_or("Error").to_owned()),
        );
        doc.insert("status".to_owned(), Value::from(self.status.as_u16()));
        doc.insert("detail".to_owned(), Value::String(self.detail.clone()));
        if !self.errors.is_empty() {
            let errors = self
                .errors
                .iter()
                .map(|(path, message)| json!({"path": path, "message": message}))
                .collect();
            doc.insert("errors".to_owned(), Value::Array(errors));
        }
        if !self.dependents.is_empty() {
            let dependents = self
                .dependents
                .iter()
                .map(|d| json!({"kind": d.kind, "key": d.key}))
                .collect();
            doc.insert("dependents".to_owned(), Value::Array(dependents));
        }
        if let Some(v) = self.current_version {
            doc.insert("currentVersion".to_owned(), Value::from(v));
        }
        Value::Object(doc)
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        Problem::from_store(error, false)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.to_json().to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(etag) = self
            .current_version
            .and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok())
        {
            headers.insert(header::ETAG, etag);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use flags_core::ItemKind;
    use flags_store::{Dependent, StoreError};

    use super::*;

    #[track_caller]
    fn check(error: StoreError, if_match: bool, status: u16, kind: &str) -> Value {
        let problem = Problem::from_store(error, if_match);
        assert_eq!(problem.status.as_u16(), status);
        assert_eq!(problem.kind, kind);
        let doc = problem.to_json();
        assert_eq!(doc["status"], status);
        assert_eq!(doc["type"], format!("urn:flagd:problem:{kind}"));
        doc
    }

    #[test]
    fn store_errors_map_to_statuses() {
        check(StoreError::not_found("flag \"x\""), false, 404, "not-found");
        let stale = || StoreError::Conflict {
            current_version: Some(4),
        };
        let doc = check(stale(), true, 412, "precondition-failed");
        assert_eq!(doc["currentVersion"], 4);
        check(stale(), false, 409, "version-conflict");
        check(
            StoreError::AlreadyExists {
                what: "environment \"p\"".to_owned(),
            },
            false,
            409,
            "already-exists",
        );
        let doc = check(
            StoreError::invalid("rules[0].clauses[1].op", "unknown operator"),
            false,
            400,
            "invalid",
        );
        assert_eq!(
            doc["errors"],
            json!([{"path": "rules[0].clauses[1].op", "message": "unknown operator"}])
        );
        assert_eq!(doc["detail"], "rules[0].clauses[1].op: unknown operator");
        check(StoreError::unresolved("cycle"), false, 422, "unresolved");
        let doc = check(
            StoreError::HasDependents {
                dependents: vec![Dependent {
                    kind: ItemKind::Segment,
                    key: "s".to_owned(),
                }],
            },
            false,
            409,
            "has-dependents",
        );
        assert_eq!(doc["dependents"], json!([{"kind": "segment", "key": "s"}]));
        assert_eq!(doc["detail"], "still referenced by segment s");
        let unavailable = Problem::from_store(StoreError::unavailable("connection refused"), false);
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(unavailable.retry_after.is_some());
        // Internal details (queries, table names) stay in the log.
        let doc = check(
            StoreError::internal("relation \"flags\" does not exist"),
            false,
            500,
            "internal",
        );
        assert!(
            !doc["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("relation")
        );
    }
}
