//! SDK keys on HTTP. When any key is configured, evaluation and SDK routes require one in
//! `Authorization: KEY` (LaunchDarkly SDKs), `Authorization: Bearer KEY` or `X-API-Key: KEY`
//! (OFREP); anything else gets 401 with a JSON body (`{"error": "UNAUTHORIZED", "message":
//! ...}`) that says whether a key was sent and where one goes.
//!
//! In root mode (over a database) every request needs a stored SDK key scoped to one
//! environment, and that key picks the environment the request is served from. The decision
//! is [`crate::access`]'s, shared with gRPC; this module answers it in HTTP statuses.

use std::sync::Arc;

use super::error::ApiError;
use crate::access::{self, Refusal};
use crate::admin::UNAVAILABLE_RETRY_AFTER_SECS;
use crate::env::Env;
use crate::keys::presented_key;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The environment a request was authenticated for, in root mode.
#[derive(Clone)]
pub(super) struct SelectedEnv(pub(super) Arc<Env>);

/// The environment a handler serves: the one the SDK key picked (root mode), or the only one
/// (file mode: an `Arc` clone, nothing more).
pub(crate) struct EnvOf(pub Arc<Env>);

impl FromRequestParts<AppState> for EnvOf {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<EnvOf, Response> {
        if let Some(selected) = parts.extensions.get::<SelectedEnv>() {
            return Ok(EnvOf(Arc::clone(&selected.0)));
        }
        Ok(EnvOf(Arc::clone(&state.default_env)))
    }
}

/// Checks the request's key: 401 ([`unauthorized`]) unless it carries an accepted key. In root
/// mode the key must be a stored SDK key of one environment (else 401, or 403 for an admin key
/// or an all-environment key, or 503 with `Retry-After` when the store cannot tell, as the
/// admin API answers then), and that environment is returned. In file mode nothing is
/// selected, and with no key configured nothing is checked.
pub(crate) async fn check_key(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<Env>>, Response> {
    access::authorize(state, headers)
        .await
        .map_err(|refusal| match refusal {
            Refusal::Unauthenticated => unauthorized(headers),
            Refusal::Forbidden => ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "this key cannot evaluate flags: admin keys and keys for every environment are \
                 for the admin API; send the SDK key of one environment",
            )
            .into_response(),
            Refusal::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER_SECS)],
            )
                .into_response(),
        })
}

/// 401: the request presents no key, or one that is not accepted; the body says which, and
/// where a key goes.
pub(crate) fn unauthorized(headers: &HeaderMap) -> Response {
    const WHERE: &str = "in the Authorization header (`Authorization: KEY` or `Authorization: \
                         Bearer KEY`) or in X-API-Key";
    let message = match presented_key(headers).filter(|key| !key.is_empty()) {
        None => format!("no SDK key was sent: send the environment's SDK key {WHERE}"),
        Some(_) => format!(
            "the SDK key was not accepted (unknown or revoked): send an SDK key of this \
             server {WHERE}"
        ),
    };
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
}
