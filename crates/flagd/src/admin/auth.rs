//! Admin authentication: `Authorization: Bearer <admin key>`, either the bootstrap key or a
//! stored admin key, and the environment scope of stored keys.

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flags_store::{Actor, ApiKey, ApiKeyKind, secret_kind, validate};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AdminState;
use super::problem::Problem;

/// Who is calling: the actor recorded in the audit log and the environment the key is limited
/// to. Handlers receive it as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Recorded as the author of writes.
    pub actor: Actor,
    /// The one environment the key may use; `None` for all.
    pub env: Option<String>,
}

impl Principal {
    /// Whether the key may use `env`.
    pub fn allows_env(&self, env: &str) -> bool {
        self.env.as_deref().is_none_or(|scope| scope == env)
    }

    /// 403 unless the key may use `env`.
    pub fn check_env(&self, env: &str) -> Result<(), Problem> {
        if self.allows_env(env) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this admin key is limited to environment {:?}",
                self.env.as_deref().unwrap_or_default()
            )))
        }
    }

    /// 403 unless the key is for every environment (creating environments or global keys).
    pub fn check_global(&self) -> Result<(), Problem> {
        match &self.env {
            None => Ok(()),
            Some(scope) => Err(Problem::forbidden(format!(
                "this admin key is limited to environment {scope:?}; this needs a key for every environment"
            ))),
        }
    }
}

/// Middleware on every authenticated admin route: 401 without a known key, 403 for an SDK key
/// or a key scoped to another environment than the route's `{env}`, 503 with `Retry-After`
/// when the store cannot say whether a key is known, and 400 naming the parameter for a path
/// parameter that nothing stored can match ([`check_path`]); otherwise the handler runs with a
/// [`Principal`] extension.
pub async fn require_admin(
    State(state): State<AdminState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match authenticate(&state, request.headers()).await {
        Ok(principal) => principal,
        Err(problem) => return problem.into_response(),
    };
    if let Ok(params) = &params {
        for (name, value) in params {
            if name == "env"
                && let Err(problem) = principal.check_env(value)
            {
                return problem.into_response();
            }
        }
        let route = request.extensions().get::<MatchedPath>();
        if let Err(problem) = check_path(route.map_or("", MatchedPath::as_str), params) {
            return problem.into_response();
        }
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Checks the keys a route's path names, with the store's own checks, so every route refuses
/// a key no item can have (or one with NUL, which no database can be asked about) alike and
/// names the parameter as the route does: `{env}`, `{key}` (a flag or a segment, by the
/// route), `{contextKind}` and `{contextKey}`.
fn check_path(route: &str, params: &RawPathParams) -> Result<(), Problem> {
    let item = if route.contains("/segments/{key}") {
        "segment"
    } else {
        "flag"
    };
    let (mut context_kind, mut context_key) = (None, None);
    for (name, value) in params {
        match name {
            "env" => validate::check_env(value)?,
            "key" => validate::check_lookup_key("key", item, value)?,
            "contextKind" => context_kind = Some(value),
            "contextKey" => context_key = Some(value),
            _ => {}
        }
    }
    if let (Some(kind), Some(key)) = (context_kind, context_key) {
        validate::check_override_context(kind, key)?;
    }
    Ok(())
}

async fn authenticate(state: &AdminState, headers: &HeaderMap) -> Result<Principal, Problem> {
    let Some(value) = headers.get("authorization") else {
        return Err(Problem::unauthorized(
            "send an admin key in Authorization: Bearer <key>",
        ));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Problem::unauthorized("the Authorization header must be Bearer <key>"))?;
    authenticate_secret(state, secret).await
}

/// Who `secret` is: the bootstrap key or a stored admin key; refused as the admin API refuses
/// it (401 unknown or revoked, 403 an SDK key, 503 the store did not answer). The web UI asks
/// this again on every request of a session, so a revoked key ends its sessions.
pub(crate) async fn authenticate_secret(
    state: &AdminState,
    secret: &str,
) -> Result<Principal, Problem> {
    if let Some(bootstrap) = state
        .bootstrap_admin_key
        .as_deref()
        .filter(|k| !k.is_empty())
    {
        // Comparing digests takes the same time whatever the lengths and contents.
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let expected: [u8; 32] = Sha256::digest(bootstrap.as_bytes()).into();
        if bool::from(presented.ct_eq(&expected)) {
            return Ok(Principal {
                actor: Actor::named("bootstrap"),
                env: None,
            });
        }
    }
    // A string no store can hold is refused without asking one, so a wrong key gets its 401
    // while the database is down too.
    if secret_kind(secret).is_none() {
        return Err(unknown_key());
    }
    match state.store.authenticate(secret).await {
        Ok(Some(key)) => principal_for(&key),
        Ok(None) => Err(unknown_key()),
        // Whatever kept the store from answering, the key is neither accepted nor refused:
        // the caller is asked to come back, as SDK routes ask.
        Err(e) => {
            tracing::warn!(error = %e, "cannot check an admin key: the store did not answer");
            Err(Problem::unavailable())
        }
    }
}

fn unknown_key() -> Problem {
    Problem::unauthorized("unknown or revoked key")
}

fn principal_for(key: &ApiKey) -> Result<Principal, Problem> {
    if key.revoked {
        return Err(unknown_key());
    }
    match key.kind {
        ApiKeyKind::Admin => Ok(Principal {
            actor: Actor::key(key),
            env: key.env.clone(),
        }),
        ApiKeyKind::Sdk => Err(Problem::forbidden(
            "an SDK key cannot use the admin API; use an admin key",
        )),
    }
}
