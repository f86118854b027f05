//! SDK keys. When any key is configured, evaluation and SDK routes require one in
//! `Authorization: KEY` (LaunchDarkly SDKs), `Authorization: Bearer KEY` or `X-API-Key: KEY`
//! (OFREP); anything else gets 401 with no body.
//!
//! In root mode (over a database) every request needs a stored SDK key scoped to one
//! environment, and that key picks the environment the request is served from. Answers of the
//! store are cached briefly ([`StoreKeys`]) so the hot path does not reach the database.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flags_cache::{CacheConfig, TtlCache};
use flags_store::{ApiKey, ApiKeyKind, KeyStore, StoreError, hash_secret};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::env::Env;
use crate::server::AppState;

/// The accepted keys, kept as SHA-256 digests so that comparing takes the same time whatever
/// the length or content of the presented key.
#[derive(Debug, Default)]
pub struct SdkKeys {
    digests: Vec<[u8; 32]>,
}

impl SdkKeys {
    /// Accepts exactly these keys (empty strings are ignored).
    pub fn new(keys: &[String]) -> SdkKeys {
        SdkKeys {
            digests: keys
                .iter()
                .filter(|k| !k.is_empty())
                .map(|k| digest(k))
                .collect(),
        }
    }

    /// Whether any key is required.
    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether `candidate` is one of the keys. Every key is compared, in constant time.
    pub fn accepts(&self, candidate: &str) -> bool {
        let candidate = digest(candidate);
        let mut found = subtle::Choice::from(0);
        for key in &self.digests {
            found |= key.ct_eq(&candidate);
        }
        found.into()
    }

    /// Whether the request's headers carry an accepted key.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if !self.required() {
            return true;
        }
        presented_key(headers).is_some_and(|key| self.accepts(key))
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key the request presents, from `Authorization` (raw or `Bearer`) or `X-API-Key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        let key = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => value,
        };
        return Some(key);
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// How long a key's authentication is trusted before the store is asked again (before
/// jitter). Short, so a revoked key stops working within seconds.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// SDK keys checked against a store, with answers (including "no such key") cached for
/// [`KEY_CACHE_TTL`] ± 10 %. When the store is down, a key seen before keeps working on its
/// stale answer, so evaluation survives an outage like the data does.
pub struct StoreKeys {
    store: Arc<dyn KeyStore>,
    cache: TtlCache<String, ApiKey, StoreError>,
}

/// What a presented key may do, in root mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDecision {
    /// An SDK key for this environment.
    Env(String),
    /// No such (live) key.
    Unknown,
    /// A real key that may not evaluate: an admin key, or an SDK key for every environment.
    Forbidden,
    /// The store cannot be asked and nothing is cached.
    Unavailable,
}

impl StoreKeys {
    /// Keys checked against `store`.
    pub fn new(store: Arc<dyn KeyStore>) -> Result<StoreKeys, flags_cache::ConfigError> {
        let config = CacheConfig {
            ttl: KEY_CACHE_TTL,
            jitter: 0.1,
            max_entries: 10_000,
        };
        Ok(StoreKeys {
            store,
            cache: TtlCache::new(config)?,
        })
    }

    /// Decides what `secret` may do. Cached by the secret's hash, so secrets are not kept.
    pub async fn decide(&self, secret: &str) -> KeyDecision {
        let hashed = hash_secret(secret);
        let store = Arc::clone(&self.store);
        let owned = secret.to_owned();
        let lookup = self
            .cache
            .get_or_refresh(hashed.as_str(), || async move {
                store.authenticate(&owned).await
            })
            .await;
        match lookup {
            Ok(found) => match found.value {
                None => KeyDecision::Unknown,
                Some(key) if key.revoked => KeyDecision::Unknown,
                Some(ApiKey {
                    kind: ApiKeyKind::Sdk,
                    env: Some(env),
                    ..
                }) => KeyDecision::Env(env),
                Some(_) => KeyDecision::Forbidden,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot check an SDK key: the store is unavailable");
                KeyDecision::Unavailable
            }
        }
    }
}

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
/// or an all-environment key, or 503 when the store cannot tell), and that environment is
/// returned. In file mode nothing is selected, and with no key configured nothing is checked.
pub(crate) async fn check_key(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<Env>>, Response> {
    let Some(store_keys) = &state.store_keys else {
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
        KeyDecision::Unavailable => Err(StatusCode::SERVICE_UNAVAILABLE.into_response()),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn key_forms() {
        let keys = SdkKeys::new(&["sdk-1".to_owned(), "sdk-2".to_owned()]);
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("authorization", "sdk-1")], true),
            (&[("authorization", "Bearer sdk-2")], true),
            (&[("authorization", "bearer  sdk-1 ")], true),
            (&[("x-api-key", "sdk-2")], true),
            (&[("authorization", "sdk-3")], false),
            (&[("authorization", "Bearer")], false),
            (&[("authorization", "sdk-1x")], false),
            (&[("x-api-key", "")], false),
            (&[], false),
        ];
        for (pairs, expected) in cases {
            assert_eq!(keys.allows(&headers(pairs)), *expected, "{pairs:?}");
        }
        assert!(
            SdkKeys::new(&[]).allows(&HeaderMap::new()),
            "no keys configured: open"
        );
        assert!(
            !SdkKeys::new(&[String::new()]).required(),
            "an empty key is not a key"
        );
    }
}
