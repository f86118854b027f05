//! Request helpers for the admin API tests: an [`Api`] that sends requests through the router
//! with a given key, and the answers as status, headers and JSON.

#![allow(dead_code, clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The bootstrap admin key the test apps accept.
pub const BOOTSTRAP: &str = "test-bootstrap-admin-key";

/// `Bearer <secret>`.
pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// The `field` of every object in a JSON array.
pub fn keys_of(items: &Value, field: &str) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap().to_owned())
        .collect()
}

/// The client-test fixture without its deliberately malformed flag (which the store rightly
/// refuses), as JSON.
pub fn rich_fixture() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/rich-flags.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut doc: Value = serde_norway::from_str(&text).unwrap();
    doc["flags"].as_object_mut().unwrap().remove("malformed");
    doc
}

/// A created API key.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: u64,
    pub secret: String,
}

/// An answer.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON; `Null` when empty.
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Checks that this is an RFC 9457 problem document of the given kind whose `status`
    /// member matches the HTTP status.
    #[track_caller]
    pub fn assert_problem(&self, kind: &str) {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(
            self.body["type"],
            format!("urn:flagd:problem:{kind}"),
            "{self:?}"
        );
        assert_eq!(self.body["status"], self.status.as_u16(), "{self:?}");
        assert!(self.body["title"].is_string(), "{self:?}");
        assert!(self.body["detail"].is_string(), "{self:?}");
    }
}

/// The admin router and the key requests carry.
#[derive(Clone)]
pub struct Api {
    pub app: Router,
    pub auth: String,
}

impl Api {
    /// Requests carry the bootstrap key.
    pub fn new(app: Router) -> Api {
        Api {
            app,
            auth: bearer(BOOTSTRAP),
        }
    }

    /// The same router, with requests carrying `secret`.
    pub fn with_auth(&self, secret: &str) -> Api {
        Api {
            app: self.app.clone(),
            auth: bearer(secret),
        }
    }

    pub fn as_key(&self, key: &Key) -> Api {
        self.with_auth(&key.secret)
    }

    /// Creates a key in `env` with the bootstrap key.
    pub async fn create_key(&self, env: &str, kind: &str, name: &str) -> Key {
        let r = Api::new(self.app.clone())
            .post(
                &format!("/environments/{env}/keys"),
                serde_json::json!({"kind": kind, "name": name}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        Key {
            id: r.body["id"].as_u64().unwrap(),
            secret: r.body["key"].as_str().unwrap().to_owned(),
        }
    }

    /// Sends a request; `auth` is the whole `Authorization` value, `body` is sent as JSON.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        let has_content_type = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_content_type {
            builder = builder.header("content-type", "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        send(&self.app, builder.body(body).unwrap()).await
    }

    /// Sends a raw body with this Api's key.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", &self.auth);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        send(
            &self.app,
            builder.body(Body::from(body.to_owned())).unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, Some(&self.auth), None, &[]).await
    }

    /// POST with a JSON body (`null` sends no body).
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        let body = (!body.is_null()).then_some(body);
        self.request("POST", path, Some(&self.auth), body, &[])
            .await
    }

    pub async fn put(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Resp {
        self.request("PUT", path, Some(&self.auth), Some(body), headers)
            .await
    }

    /// PATCH with a merge patch.
    pub async fn patch(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Resp {
        let mut all = vec![("content-type", "application/merge-patch+json")];
        all.extend_from_slice(headers);
        self.request("PATCH", path, Some(&self.auth), Some(body), &all)
            .await
    }

    pub async fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("DELETE", path, Some(&self.auth), None, headers)
            .await
    }
}

async fn send(app: &Router, request: Request<Body>) -> Resp {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    Resp {
        status,
        headers,
        text,
        body,
    }
}
