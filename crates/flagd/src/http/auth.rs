//! SDK keys. When any key is configured, evaluation and SDK routes require one in
//! `Authorization: KEY` (LaunchDarkly SDKs), `Authorization: Bearer KEY` or `X-API-Key: KEY`
//! (OFREP); anything else gets 401 with no body.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

/// Middleware: 401 without a body unless the request carries an accepted key.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.keys.allows(request.headers()) {
        next.run(request).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
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
