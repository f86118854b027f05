//! SDK keys. When any key is configured, evaluation and SDK routes require one in
//! `Authorization: KEY` (LaunchDarkly SDKs), `Authorization: Bearer KEY` or `X-API-Key: KEY`
//! (OFREP); anything else gets 401 with no body.
//!
//! In root mode (over a database) every request needs a stored SDK key scoped to one
//! environment, and that key picks the environment the request is served from. Answers of the
//! store are cached briefly ([`StoreKeys`]) so the hot path does not reach the database.

use std::sync::Arc;

use crate::admin::UNAVAILABLE_RETRY_AFTER_SECS;
use crate::env::Env;
use crate::keys::{KeyDecision, presented_key};
use crate::state::{AppState, Mode};
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

/// Checks the request's key: 401 without a body unless it carries an accepted key. In root
/// mode the key must be a stored SDK key of one environment (else 401, or 403 for an admin key
/// or an all-environment key, or 503 with `Retry-After` when the store cannot tell, as the
/// admin API answers then), and that environment is returned. In file mode nothing is
/// selected, and with no key configured nothing is checked.
pub(crate) async fn check_key(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<Env>>, Response> {
    let Mode::Root {
        keys: store_keys, ..
    } = &state.mode
    else {
        return if state.keys.allows(headers) {
            Ok(None)
        } else {
            Err(StatusCode::UNAUTHORIZED.into_response())
        };
    };
    let Some(secret) = presented_key(headers).filter(|k| !k.is_empty()) else {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    };
    match store_keys.decide(secret).await {
        KeyDecision::Env(env) => Ok(Some(state.envs.get_or_create(&env))),
        KeyDecision::Unknown => Err(StatusCode::UNAUTHORIZED.into_response()),
        KeyDecision::Forbidden => Err(StatusCode::FORBIDDEN.into_response()),
        KeyDecision::Unavailable => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER_SECS)],
        )
            .into_response()),
    }
}
