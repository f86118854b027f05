//! SDK keys: the fixed list of file mode, and root mode's keys checked against the store with
//! their answers cached. Which header carries a key is read here too; what a route does with
//! the decision is `http::auth`'s.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use flags_cache::{CacheConfig, Freshness, TtlCache};
use flags_store::{ApiKey, ApiKeyKind, KeyStore, StoreError, hash_secret, secret_kind};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
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
    ledger: Option<Arc<KeyLedger>>,
}

/// SDK keys remembered in Redis beside the data flagd writes there (only their hashes), so
/// that a flagd started while the store is down, serving what Redis holds, accepts the keys
/// that worked before. Kept current as keys are checked against the store: a key the store
/// accepts is recorded, one it no longer knows is forgotten.
pub struct KeyLedger {
    table: flags_store_redis::KeyTable,
    known: std::sync::RwLock<std::collections::HashMap<String, String>>,
}

impl KeyLedger {
    /// The ledger in `table`, starting from what it holds.
    pub async fn open(
        table: flags_store_redis::KeyTable,
    ) -> Result<KeyLedger, flags_store_redis::StoreError> {
        let known = table.all().await?.into_iter().collect();
        Ok(KeyLedger {
            table,
            known: std::sync::RwLock::new(known),
        })
    }

    fn env_of(&self, hash: &str) -> Option<String> {
        self.read().get(hash).cloned()
    }

    /// Records `hash` → `env` unless already known, in the background.
    fn remember(self: &Arc<Self>, hash: &str, env: &str) {
        {
            let mut known = self.write();
            if known.get(hash).is_some_and(|e| e == env) {
                return;
            }
            known.insert(hash.to_owned(), env.to_owned());
        }
        let (ledger, hash, env) = (Arc::clone(self), hash.to_owned(), env.to_owned());
        tokio::spawn(async move {
            if let Err(e) = ledger.table.remember(&hash, &env).await {
                tracing::warn!(error = %e, "cannot remember an SDK key in Redis");
            }
        });
    }

    /// Forgets `hash` if known, in the background.
    fn forget(self: &Arc<Self>, hash: &str) {
        if self.write().remove(hash).is_none() {
            return;
        }
        let (ledger, hash) = (Arc::clone(self), hash.to_owned());
        tokio::spawn(async move {
            if let Err(e) = ledger.table.forget(&hash).await {
                tracing::warn!(error = %e, "cannot forget an SDK key in Redis");
            }
        });
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<String, String>> {
        self.known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<String, String>> {
        self.known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
            ledger: None,
        })
    }

    /// Keeps `ledger` current, and answers from it when the store cannot be asked and the
    /// key is not cached.
    pub fn with_ledger(mut self, ledger: Arc<KeyLedger>) -> StoreKeys {
        self.ledger = Some(ledger);
        self
    }

    /// Decides what `secret` may do. Cached by the secret's hash, so secrets are not kept.
    pub async fn decide(&self, secret: &str) -> KeyDecision {
        // A string no store can hold is unknown without asking the store (which may be down)
        // and without taking a place in the cache.
        if secret_kind(secret).is_none() {
            return KeyDecision::Unknown;
        }
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
            Ok(found) => {
                let loaded = found.freshness == Freshness::Loaded;
                let decision = match found.value {
                    None => KeyDecision::Unknown,
                    Some(key) if key.revoked => KeyDecision::Unknown,
                    Some(ApiKey {
                        kind: ApiKeyKind::Sdk,
                        env: Some(env),
                        ..
                    }) => KeyDecision::Env(env),
                    Some(_) => KeyDecision::Forbidden,
                };
                if let (true, Some(ledger)) = (loaded, &self.ledger) {
                    match &decision {
                        KeyDecision::Env(env) => ledger.remember(&hashed, env),
                        _ => ledger.forget(&hashed),
                    }
                }
                decision
            }
            Err(e) => match self.ledger.as_ref().and_then(|l| l.env_of(&hashed)) {
                Some(env) => KeyDecision::Env(env),
                None => {
                    tracing::warn!(error = %e, "cannot check an SDK key: the store is unavailable");
                    KeyDecision::Unavailable
                }
            },
        }
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
