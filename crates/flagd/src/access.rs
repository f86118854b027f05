//! Which environment an SDK key opens, for every protocol that serves evaluations (HTTP and
//! gRPC): the decision only, which each protocol answers in its own terms (HTTP statuses in
//! `http::auth`, gRPC codes in `grpc`).
//!
//! In file and proxy mode the configured keys decide (none configured: nothing is checked) and
//! the one environment is served. In root mode the key must be a stored SDK key of one
//! environment, and that environment is served; the store's answers are cached
//! ([`crate::keys::StoreKeys`]), so the hot path does not reach the database.

use std::sync::Arc;

use axum::http::HeaderMap;

use crate::env::Env;
use crate::keys::{KeyDecision, presented_key};
use crate::state::{AppState, Mode};

/// Why a request's key opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No key, or one that is not accepted.
    Unauthenticated,
    /// A key that exists but is not for evaluation (an admin key, an all-environment key).
    Forbidden,
    /// The store cannot tell now; the caller should retry later.
    Unavailable,
}

/// The environment the key in `headers` (`Authorization: KEY`, `Authorization: Bearer KEY` or
/// `X-API-Key: KEY`) opens: `Some` in root mode, `None` (the default environment) in the other
/// modes, or why it opens nothing.
pub(crate) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<Env>>, Refusal> {
    let Mode::Root {
        keys: store_keys, ..
    } = &state.mode
    else {
        return if state.keys.allows(headers) {
            Ok(None)
        } else {
            Err(Refusal::Unauthenticated)
        };
    };
    let Some(secret) = presented_key(headers).filter(|k| !k.is_empty()) else {
        return Err(Refusal::Unauthenticated);
    };
    match store_keys.decide(secret).await {
        KeyDecision::Env(env) => Ok(Some(state.envs.get_or_create(&env))),
        KeyDecision::Unknown => Err(Refusal::Unauthenticated),
        KeyDecision::Forbidden => Err(Refusal::Forbidden),
        KeyDecision::Unavailable => Err(Refusal::Unavailable),
    }
}
