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

/// Checks that `r` is a 400 problem whose first error is at `path`.
#[track_caller]
pub fn assert_invalid_at(r: &Resp, path: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    r.assert_problem("invalid");
    assert_eq!(r.body["errors"][0]["path"], path, "{r:?}");
}

/// What no store can hold is refused up front, over any store, with 400 and the field path:
/// NUL in path keys (`%00`), query parameters, names and JSON documents (unknown fields and
/// field names too), keys outside the key alphabet, and `.` and `..` as new keys. Nothing is
/// stored meanwhile, and context keys may still hold anything else. Creates environment
/// `prod`.
pub async fn nul_and_dot_keys_are_refused(api: &Api) {
    use serde_json::json;
    let r = api.post("/environments", json!({"key": "prod"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let flag = json!({"on": true, "variations": [true, false], "offVariation": 1,
        "fallthrough": {"variation": 0}});
    let r = api
        .put("/environments/prod/flags/f", flag.clone(), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = api
        .put("/environments/prod/segments/s", json!({}), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let audit_before = api.get("/audit").await.body["items"].clone();
    let nul = "a\u{0}b";

    // Environments: created, and named by the path.
    for key in [nul, ".", ".."] {
        let r = api.post("/environments", json!({"key": key})).await;
        assert_invalid_at(&r, "key");
    }
    let r = api
        .post("/environments", json!({"key": "named", "name": nul}))
        .await;
    assert_invalid_at(&r, "name");
    for route in ["", "/flags", "/segments", "/export", "/audit", "/killed"] {
        let r = api.get(&format!("/environments/a%00b{route}")).await;
        assert_invalid_at(&r, "env");
    }

    // Flags and segments named by the path, by every route that names one.
    for key in ["a%00b", "a%20b"] {
        let at = |route: &str| format!("/environments/prod/{route}").replace("{key}", key);
        let answers = [
            api.get(&at("flags/{key}")).await,
            api.put(&at("flags/{key}"), flag.clone(), &[]).await,
            api.patch(&at("flags/{key}"), json!({"on": false}), &[])
                .await,
            api.delete(&at("flags/{key}"), &[]).await,
            api.post(&at("flags/{key}/archive"), Value::Null).await,
            api.post(&at("flags/{key}/off"), Value::Null).await,
            api.put(&at("flags/{key}/kill"), Value::Null, &[]).await,
            api.get(&at("flags/{key}/overrides")).await,
            api.put(
                &at("flags/{key}/overrides/user/bob"),
                json!({"variation": 0}),
                &[],
            )
            .await,
            api.get(&at("segments/{key}")).await,
            api.put(&at("segments/{key}"), json!({}), &[]).await,
            api.post(
                &at("segments/{key}/targets"),
                json!({"included": {"add": ["u"]}}),
            )
            .await,
        ];
        for r in &answers {
            assert_invalid_at(r, "key");
        }
        let detail = answers[0].body["detail"].as_str().unwrap();
        assert!(detail.starts_with("key: flag key "), "{detail}");
        let detail = answers[9].body["detail"].as_str().unwrap();
        assert!(detail.starts_with("key: segment key "), "{detail}");
    }
    // `.` and `..` are refused as new keys; looked up, they name nothing here (an earlier
    // flagd may have stored them, so they are looked up like any other key).
    for key in [".", "%2E%2E"] {
        let at = |route: &str| format!("/environments/prod/{route}").replace("{key}", key);
        let r = api.put(&at("flags/{key}"), flag.clone(), &[]).await;
        assert_invalid_at(&r, "key");
        let r = api.put(&at("segments/{key}"), json!({}), &[]).await;
        assert_invalid_at(&r, "key");
        for r in [
            api.get(&at("flags/{key}")).await,
            api.delete(&at("segments/{key}"), &[]).await,
            api.put(&at("flags/{key}/kill"), Value::Null, &[]).await,
            api.get(&format!("/environments/{key}")).await,
        ] {
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
            r.assert_problem("not-found");
        }
    }

    // Overrides: the context key may hold anything but NUL.
    let r = api
        .put(
            "/environments/prod/flags/f/overrides/user/a%00b",
            json!({"variation": 0}),
            &[],
        )
        .await;
    assert_invalid_at(&r, "contextKey");
    let r = api
        .delete("/environments/prod/flags/f/overrides/user/a%00b", &[])
        .await;
    assert_invalid_at(&r, "contextKey");
    let r = api
        .put(
            "/environments/prod/flags/f/overrides/us%00er/bob",
            json!({"variation": 0}),
            &[],
        )
        .await;
    assert_invalid_at(&r, "contextKind");

    // Query parameters.
    let r = api.get("/environments/prod/flags?q=a%00").await;
    assert_invalid_at(&r, "q");
    let r = api.get("/environments/prod/audit?flag=a%00b").await;
    assert_invalid_at(&r, "flag");

    // Documents, at the path of the string or field name that holds NUL.
    let held = "holds a NUL character (\\u0000), which cannot be stored";
    let with = |field: &str, value: Value| {
        let mut doc = flag.clone();
        doc[field] = value;
        doc
    };
    for (doc, path) in [
        (with("variations", json!([true, nul])), "variations[1]"),
        (with("description", json!(nul)), "description"),
        (with("_meta", json!({"note": [nul]})), "_meta.note[0]"),
    ] {
        let r = api.put("/environments/prod/flags/g", doc, &[]).await;
        assert_invalid_at(&r, path);
        assert_eq!(r.body["detail"], format!("{path}: {held}"), "{r:?}");
    }
    let r = api
        .put(
            "/environments/prod/flags/g",
            with("_meta", json!({nul: 1})),
            &[],
        )
        .await;
    assert_invalid_at(&r, "_meta.a\\u0000b");
    let r = api
        .patch("/environments/prod/flags/f", json!({"name": nul}), &[])
        .await;
    assert_invalid_at(&r, "name");
    let r = api
        .put(
            "/environments/prod/segments/s",
            json!({"included": ["u", nul]}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_invalid_at(&r, "included[1]");
    let r = api
        .post(
            "/environments/prod/segments/s/targets",
            json!({"excluded": {"add": ["u", nul]}}),
        )
        .await;
    assert_invalid_at(&r, "excluded.add[1]");

    // Names of keys.
    let r = api
        .post(
            "/environments/prod/keys",
            json!({"kind": "sdk", "name": nul}),
        )
        .await;
    assert_invalid_at(&r, "name");
    let r = api.post("/keys", json!({"name": nul})).await;
    assert_invalid_at(&r, "name");

    // A flag file that file mode would serve, with NUL in a variation, is refused by name.
    for file in [
        json!({"flags": {"g": with("variations", json!([nul]))}}),
        json!({"flagValues": {"g": nul}}),
    ] {
        let r = api.post("/environments/prod/import", file).await;
        assert_invalid_at(&r, "flags.g.variations[0]");
        assert_eq!(
            r.body["detail"],
            format!("flag g: variations[0]: {held}"),
            "{r:?}"
        );
    }

    // Nothing was stored, and the API still works.
    assert_eq!(api.get("/audit").await.body["items"], audit_before);
    let r = api.get("/environments").await;
    assert_eq!(keys_of(&r.body["items"], "key"), ["prod"]);
    let r = api
        .put(
            "/environments/prod/flags/f/overrides/user/%C3%BC%20%2F%3F%23%2500",
            json!({"variation": 1}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["contextKey"], "ü /?#%00");
}

/// Environments carry a display name and colour: set when created (`POST /environments`) or
/// later (`PATCH /environments/{env}`, a merge patch: `"color": null` removes it), the colour
/// kept in lower case, bad values refused naming the field, a key scoped to the environment
/// allowed to change it and no other, and each applied change in the audit log with its actor.
/// Creates environments `prod` and `staging`.
pub async fn environments_have_a_display_colour(api: &Api) {
    use serde_json::json;
    let r = api
        .post(
            "/environments",
            json!({"key": "prod", "name": "Production", "color": "#D73A49"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(
        r.body,
        json!({"key": "prod", "name": "Production", "color": "#d73a49",
               "createdAt": r.body["createdAt"]})
    );
    let r = api.post("/environments", json!({"key": "staging"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert!(r.body.get("color").is_none(), "no colour, no member: {r:?}");
    for (body, path, detail) in [
        (
            json!({"key": "dev", "color": "red"}),
            "color",
            "color: must be a colour like #d73a49",
        ),
        (
            json!({"key": "dev", "color": "#d73a4"}),
            "color",
            "color: must be a colour like #d73a49",
        ),
        (
            json!({"key": "dev", "name": "  "}),
            "name",
            "name: must not be blank",
        ),
    ] {
        let r = api.post("/environments", body).await;
        assert_invalid_at(&r, path);
        assert_eq!(r.body["detail"], detail, "{r:?}");
    }
    assert_eq!(
        api.get("/environments/dev").await.status,
        StatusCode::NOT_FOUND
    );

    // Merge patches: members left out are kept.
    let at = "/environments/staging";
    let r = api.patch(at, json!({"color": "#28A745"}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        (&r.body["name"], &r.body["color"]),
        (&json!("staging"), &json!("#28a745"))
    );
    let r = api.patch(at, json!({"name": "Staging"}), &[]).await;
    assert_eq!(
        (&r.body["name"], &r.body["color"]),
        (&json!("Staging"), &json!("#28a745"))
    );
    assert_eq!(api.get(at).await.body, r.body);
    let listed = api.get("/environments").await.body["items"].clone();
    assert_eq!(listed[1], r.body);
    let r = api.patch(at, json!({"color": null}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body.get("color"), None, "{r:?}");
    assert_eq!(r.body["name"], "Staging");
    // Changing nothing is fine, and writes nothing.
    let r = api.patch(at, json!({"name": "Staging"}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = api.patch(at, json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    // Refusals.
    for (patch, path) in [
        (json!({"color": "green"}), "color"),
        (json!({"name": ""}), "name"),
        (json!({"name": null}), "name"),
        (json!({"color": 7}), "color"),
        (json!({"key": "other"}), ""),
        (json!(["name"]), ""),
    ] {
        let r = api.patch(at, patch.clone(), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{patch}: {r:?}");
        r.assert_problem("invalid");
        if !path.is_empty() {
            assert_eq!(r.body["errors"][0]["path"], path, "{patch}: {r:?}");
        }
    }
    let r = api
        .request(
            "PATCH",
            at,
            Some(&api.auth),
            Some(json!({"name": "x"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}");
    let r = api
        .patch("/environments/nope", json!({"name": "x"}), &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    r.assert_problem("not-found");
    let r = api
        .patch("/environments/a%00b", json!({"name": "x"}), &[])
        .await;
    assert_invalid_at(&r, "env");

    // A key scoped to `prod` changes `prod`, and only `prod`.
    let scoped = api.create_key("prod", "admin", "prod-admin").await;
    let scoped = api.as_key(&scoped);
    let r = scoped
        .patch("/environments/prod", json!({"color": "#0366d6"}), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["color"], "#0366d6");
    let r = scoped.patch(at, json!({"color": "#0366d6"}), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    r.assert_problem("forbidden");

    // The audit log: each applied change, with who made it and the fields before and after.
    let log = |env: &str| {
        let api = api.clone();
        let path = format!("/environments/{env}/audit");
        async move {
            let items = api.get(&path).await.body["items"].clone();
            items
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["itemKind"] == "environment")
                .map(|e| {
                    (
                        e["action"].as_str().unwrap().to_owned(),
                        e["actor"]["name"].as_str().unwrap().to_owned(),
                        e["before"].get("color").cloned(),
                        e["after"].get("color").cloned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let (update, create, boot) = (
        "update".to_owned(),
        "create".to_owned(),
        "bootstrap".to_owned(),
    );
    assert_eq!(
        log("staging").await,
        [
            (update.clone(), boot.clone(), Some(json!("#28a745")), None),
            (
                update.clone(),
                boot.clone(),
                Some(json!("#28a745")),
                Some(json!("#28a745"))
            ),
            (update.clone(), boot.clone(), None, Some(json!("#28a745"))),
            (create.clone(), boot.clone(), None, None),
        ]
    );
    assert_eq!(
        log("prod").await,
        [
            (
                update,
                "prod-admin".to_owned(),
                Some(json!("#d73a49")),
                Some(json!("#0366d6"))
            ),
            (create, boot, None, Some(json!("#d73a49"))),
        ]
    );
}
