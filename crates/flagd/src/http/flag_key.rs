//! The flag key of the single-flag evaluation routes, read from the request's path.
//!
//! axum's `Path` extractor deserializes the routed parameter into a new `String` through serde;
//! the key is also the path after the route's fixed prefix, so it is decoded from there instead,
//! borrowed when it has no escapes. Anything unusual (a path without the prefix, escapes that do
//! not decode to UTF-8) goes to the `Path` extractor, so its answers stay axum's.

use std::borrow::Cow;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The path of `POST /v1/evaluate/{flagKey}` before the key.
pub(super) const NATIVE_ONE: &str = "/v1/evaluate/";
/// The path of `POST /ofrep/v1/evaluate/flags/{key}` before the key.
pub(super) const OFREP_ONE: &str = "/ofrep/v1/evaluate/flags/";

/// The flag key as axum's `Path` extractor reads it, or its rejection: for the requests
/// [`decode`] leaves alone.
pub(super) async fn extract(parts: &mut Parts, state: &AppState) -> Result<String, Response> {
    match Path::<String>::from_request_parts(parts, state).await {
        Ok(Path(key)) => Ok(key),
        Err(rejection) => Err(rejection.into_response()),
    }
}

/// The segment of `path` after `prefix`, percent-decoded as axum's router decodes a path
/// parameter (with the same `percent-encoding` crate: `%XX` with two hex digits is a byte, any
/// other `%` stays); `None` when `path` does not continue `prefix` with one non-empty segment,
/// or the bytes are not UTF-8.
pub(super) fn decode<'a>(path: &'a str, prefix: &str) -> Option<Cow<'a, str>> {
    let raw = path.strip_prefix(prefix)?;
    if raw.is_empty() {
        return None;
    }
    // One pass for the usual key, with nothing to decode (and already UTF-8).
    if !raw.bytes().any(|b| b == b'/' || b == b'%') {
        return Some(Cow::Borrowed(raw));
    }
    if raw.contains('/') {
        return None;
    }
    percent_encoding::percent_decode_str(raw).decode_utf8().ok()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// What axum's router and `Path` extractor make of `uri` on `{prefix}{key}`: the key, or
    /// `None` for a request they do not route or reject.
    async fn axum_key(prefix: &str, uri: &str) -> Option<String> {
        let app: Router = Router::new().route(
            &format!("{prefix}{{key}}"),
            post(|Path(key): Path<String>| async move { key }),
        );
        let request = Request::post(uri).body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        if response.status() != StatusCode::OK {
            return None;
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Some(String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn keys_decode_as_axum_decodes_them() {
        let keys = [
            "flag-125",
            "a%2Fb%20c",
            "a%2fb",
            "100%25",
            "%C3%BC%E2%82%AC",
            "%",
            "a%",
            "a%2",
            "%zz",
            "%2G",
            "+plus+",
            "x%00y",
            "%FF",
            "%C3",
            "caf%C3%A9?q=%2F",
            "a/b",
            "",
            "a%2F/",
        ];
        for prefix in [NATIVE_ONE, OFREP_ONE] {
            for key in keys {
                let uri = format!("{prefix}{key}");
                let expected = axum_key(prefix, &uri).await;
                let path = uri.split('?').next().unwrap();
                let ours = decode(path, prefix).map(Cow::into_owned);
                // Declining (`None`) sends the request to the extractor, which rejects it.
                assert_eq!(ours, expected, "{uri}");
            }
        }
        assert_eq!(
            decode("/v1/evaluate/a%2Fb%20c", NATIVE_ONE).as_deref(),
            Some("a/b c")
        );
        assert_eq!(decode("/v1/evaluate/%FF", NATIVE_ONE), None);
        assert!(matches!(
            decode("/v1/evaluate/plain", NATIVE_ONE),
            Some(Cow::Borrowed("plain"))
        ));
    }
}
