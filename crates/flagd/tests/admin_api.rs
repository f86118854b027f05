//! The admin API (`flagd::admin`) through `admin_router(...).oneshot(...)` over the in-memory
//! store: every route, every status rule, key scopes, the audit trail, import/export and the
//! OpenAPI document's coverage of the router.

#![allow(clippy::unwrap_used)]

mod admin_common;

use flags_store::KeyStore;
use std::collections::BTreeSet;
use std::sync::Arc;

use admin_common::*;
use axum::http::StatusCode;
use flagd::admin::{
    AdminState, ImportError, ROUTES, admin_router, export_env, import_document, import_file,
    openapi_document,
};
use flags_store::{Actor, AdminStore, AuditQuery, MemoryStore};
use serde_json::{Value, json};

fn memory_app() -> (Api, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let app = admin_router(AdminState {
        store: store.clone(),
        bootstrap_admin_key: Some(BOOTSTRAP.to_owned()),
        big_segments: None,
    });
    (Api::new(app), store)
}

/// An app with environments `prod` and `staging`.
async fn with_envs() -> (Api, Arc<MemoryStore>) {
    let (api, store) = memory_app();
    for env in ["prod", "staging"] {
        let r = api
            .post("/environments", json!({"key": env, "name": env}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    (api, store)
}

fn flag(variations: Value) -> Value {
    json!({
        "on": true, "variations": variations, "offVariation": 0,
        "fallthrough": {"variation": 0},
    })
}

// ------------------------------------------------------------------ auth

#[tokio::test]
async fn missing_or_unknown_keys_are_401_problems() {
    let (api, _store) = with_envs().await;
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let r = api.request("GET", "/environments", auth, None, &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        r.assert_problem("unauthorized");
    }
}

#[tokio::test]
async fn sdk_keys_are_refused_and_env_keys_stay_in_their_environment() {
    let (api, _store) = with_envs().await;
    let sdk = api.create_key("prod", "sdk", "app").await;
    let r = api.as_key(&sdk).get("/environments/prod").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    r.assert_problem("forbidden");

    let admin = api.create_key("prod", "admin", "prod-admin").await;
    let scoped = api.as_key(&admin);
    assert_eq!(
        scoped.get("/environments/prod").await.status,
        StatusCode::OK
    );
    assert_eq!(
        scoped.get("/environments/prod/flags").await.status,
        StatusCode::OK
    );
    for path in [
        "/environments/staging",
        "/environments/staging/flags",
        "/environments/staging/flags/x",
        "/environments/staging/audit",
    ] {
        let r = scoped.get(path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        r.assert_problem("forbidden");
    }
    let r = scoped
        .put("/environments/staging/flags/x", flag(json!([1])), &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Environment-wide powers need a key for every environment.
    let r = scoped
        .post("/environments", json!({"key": "dev", "name": "dev"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = scoped.post("/keys", json!({"name": "global"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // It sees only its own environment and its keys.
    let r = scoped.get("/environments").await;
    assert_eq!(keys_of(&r.body["items"], "key"), ["prod"]);
    let r = scoped.get("/keys").await;
    assert!(
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["env"] == "prod")
    );
    // It can work in its environment, and the audit log names it.
    let r = scoped
        .put("/environments/prod/flags/x", flag(json!([1])), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = api.get("/environments/prod/audit?flag=x").await;
    assert_eq!(r.body["items"][0]["actor"]["name"], "prod-admin");
    assert_eq!(r.body["items"][0]["actor"]["keyId"], admin.id);
}

#[tokio::test]
async fn revoked_keys_are_401_and_global_keys_work_everywhere() {
    let (api, _store) = with_envs().await;
    let r = api.post("/keys", json!({"name": "ops"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["kind"], "admin");
    assert_eq!(r.body["env"], Value::Null);
    let secret = r.body["key"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_u64().unwrap();
    let ops = api.with_auth(&secret);
    assert_eq!(
        ops.get("/environments/staging").await.status,
        StatusCode::OK
    );
    let r = ops.post("/environments", json!({"key": "dev"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["name"], "dev");

    // An SDK key cannot be global.
    let r = api.post("/keys", json!({"name": "x", "kind": "sdk"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["errors"][0]["path"], "kind");

    // Listing never shows secrets.
    let r = api.get("/keys").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.text.contains(&secret));
    assert!(
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none())
    );

    let r = api.delete(&format!("/keys/{id}"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["revoked"], true);
    let r = ops.get("/environments/staging").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.delete("/keys/999", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let r = api.delete("/keys/abc", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn env_admin_keys_revoke_only_their_environments_keys() {
    let (api, _store) = with_envs().await;
    let prod = api.create_key("prod", "admin", "prod-admin").await;
    let staging_sdk = api.create_key("staging", "sdk", "staging-app").await;
    let prod_sdk = api.create_key("prod", "sdk", "prod-app").await;
    let scoped = api.as_key(&prod);
    let r = scoped
        .delete(&format!("/keys/{}", staging_sdk.id), &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = scoped.delete(&format!("/keys/{}", prod_sdk.id), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn created_keys_show_their_secret_once_and_validate_the_body() {
    let (api, store) = with_envs().await;
    let r = api
        .post(
            "/environments/prod/keys",
            json!({"kind": "sdk", "name": "web"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let secret = r.body["key"].as_str().unwrap();
    assert!(secret.starts_with("flagd-sdk-"), "{secret}");
    assert_eq!(r.body["env"], "prod");
    assert_eq!(r.body["name"], "web");
    let stored = store.authenticate(secret).await.unwrap().unwrap();
    assert_eq!(stored.id, r.body["id"].as_u64().unwrap());

    let r = api
        .post(
            "/environments/prod/keys",
            json!({"kind": "root", "name": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["errors"][0]["path"], "kind");
    let r = api
        .post(
            "/environments/nope/keys",
            json!({"kind": "sdk", "name": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

// ------------------------------------------------------------------ environments

#[tokio::test]
async fn environments_are_created_listed_and_read() {
    let (api, _store) = memory_app();
    let r = api
        .post(
            "/environments",
            json!({"key": "prod", "name": "Production"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["key"], "prod");
    assert_eq!(r.body["name"], "Production");
    assert_eq!(r.header("location"), Some("/api/v1/environments/prod"));

    let r = api.post("/environments", json!({"key": "prod"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    r.assert_problem("already-exists");

    let r = api
        .post("/environments", json!({"key": "bad key!", "name": "x"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    r.assert_problem("invalid");
    let r = api.post("/environments", json!({"name": "x"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["detail"].as_str().unwrap().contains("key"), "{r:?}");
    let r = api
        .post("/environments", json!({"key": "x", "colour": "red"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = api.get("/environments").await;
    assert_eq!(keys_of(&r.body["items"], "key"), ["prod"]);
    assert_eq!(api.get("/environments/prod").await.status, StatusCode::OK);
    let r = api.get("/environments/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.assert_problem("not-found");
}

#[tokio::test]
async fn environments_have_a_display_colour_and_may_be_changed() {
    let (api, store) = memory_app();
    let mut changes = flags_store::ChangeFeed::subscribe(store.as_ref())
        .await
        .unwrap();
    environments_have_a_display_colour(&api).await;
    // Replicas hear of each applied change.
    let mut updates = Vec::new();
    while updates.len() < 4 {
        let change = changes.next().await.unwrap();
        if change.kind == flags_store::ChangeKind::EnvironmentUpdated {
            updates.push(change.key);
        }
    }
    assert_eq!(updates, ["staging", "staging", "staging", "prod"]);
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let (api, _store) = with_envs().await;
    for body in ["{", "", "[1,", "nul"] {
        let r = api
            .raw(
                "PUT",
                "/environments/prod/flags/f",
                body,
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.body["status"], 400);
    }
    let r = api.raw("POST", "/environments", "{\"key\":", &[]).await;
    r.assert_problem("malformed-json");
}

// ------------------------------------------------------------------ flags: versions

#[tokio::test]
async fn put_creates_then_needs_if_match_to_replace() {
    let (api, _store) = with_envs().await;
    let path = "/environments/prod/flags/checkout";
    let r = api.put(path, flag(json!([false, true])), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["archived"], false);
    assert_eq!(r.body["doc"]["key"], "checkout");
    assert_eq!(r.body["doc"]["version"], 1);
    assert_eq!(r.body["doc"]["variations"], json!([false, true]));

    let r = api.get(path).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.body["doc"]["on"], true);

    // Replacing without If-Match: 428, naming the version to send.
    let replacement = flag(json!([false, true, null]));
    let r = api.put(path, replacement.clone(), &[]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
    r.assert_problem("precondition-required");
    assert_eq!(r.body["currentVersion"], 1);
    // Stale: 412.
    let r = api
        .put(path, replacement.clone(), &[("if-match", "\"7\"")])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    r.assert_problem("precondition-failed");
    assert_eq!(r.body["currentVersion"], 1);
    let r = api
        .put(path, replacement.clone(), &[("if-match", "\"abc\"")])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    // Current: 200 and the next version.
    let r = api
        .put(path, replacement.clone(), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(r.body["doc"]["variations"], json!([false, true, null]));
    // `*` replaces whatever version exists.
    let r = api
        .put(path, replacement.clone(), &[("if-match", "*")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("etag"), Some("\"3\""));
    // If-Match on a flag that does not exist: 412.
    let r = api
        .put(
            "/environments/prod/flags/other",
            replacement.clone(),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = api
        .put(
            "/environments/prod/flags/other",
            replacement,
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        api.get("/environments/prod/flags/other").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invalid_flags_are_400_naming_the_field_and_nothing_is_stored() {
    let (api, _store) = with_envs().await;
    let cases = [
        (
            json!({"on": true, "variations": [1, 2], "fallthrough": {"variation": 2}}),
            "fallthrough.variation",
        ),
        (
            json!({"variations": [1], "fallthrough": {"variation": 0},
                   "rules": [{"clauses": [{"attribute": "a", "op": "in", "values": 3}], "variation": 0}]}),
            "rules[0].clauses[0].values",
        ),
        (
            json!({"key": "other", "variations": [1], "fallthrough": {"variation": 0}}),
            "key",
        ),
    ];
    for (doc, path) in cases {
        let r = api
            .put("/environments/prod/flags/f", doc.clone(), &[])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{doc}: {r:?}");
        r.assert_problem("invalid");
        assert_eq!(r.body["errors"][0]["path"], path, "{doc}: {r:?}");
        assert!(r.body["errors"][0]["message"].is_string());
    }
    let r = api.put("/environments/prod/flags/f", json!([1]), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = api.get("/environments/prod/flags").await;
    assert_eq!(r.body["items"], json!([]));
    // A missing environment is 404.
    let r = api
        .put("/environments/nope/flags/f", flag(json!([1])), &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unresolved_references_are_422() {
    let (api, _store) = with_envs().await;
    let mut needs_a = flag(json!([false, true]));
    needs_a["prerequisites"] = json!([{"key": "a", "variation": 1}]);
    let r = api
        .put("/environments/prod/flags/b", needs_a.clone(), &[])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    r.assert_problem("unresolved");

    let mut uses_segment = flag(json!([false, true]));
    uses_segment["rules"] = json!([{"clauses": [{"attribute": "key", "op": "segmentMatch", "values": ["beta"]}], "variation": 1}]);
    let r = api
        .put("/environments/prod/flags/c", uses_segment, &[])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A cycle: a needs b, b needs a.
    let r = api
        .put(
            "/environments/prod/flags/a",
            flag(json!([false, true])),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = api.put("/environments/prod/flags/b", needs_a, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let mut needs_b = flag(json!([false, true]));
    needs_b["prerequisites"] = json!([{"key": "b", "variation": 1}]);
    let r = api
        .put(
            "/environments/prod/flags/a",
            needs_b,
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    assert!(
        r.body["detail"].as_str().unwrap().contains("cycle"),
        "{r:?}"
    );
}

/// A write the checks only warn about is stored, and its answer lists each warning with the
/// path and message `flagd validate` gives for the same problem in a file.
#[tokio::test]
async fn writes_answer_with_their_warnings() {
    let (api, _store) = with_envs().await;
    let path = "/environments/prod/flags/f";
    let mut doc = flag(json!([false, true]));
    doc["fallthrough"] = json!({"rollout": {"variations": [{"variation": 0, "weight": 60000}]}});
    doc["rules"] = json!([{"variation": 1, "clauses": [
        {"attribute": "email", "op": "matches", "values": ["(unclosed"]}]}]);
    let r = api.put(path, doc.clone(), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let expected = json!([
        {"path": "fallthrough.rollout.variations", "message": "weights add up to 60000, not 100000"},
        {"path": "rules[0].clauses[0].values[0]", "message": "invalid regular expression: unclosed group"},
    ]);
    assert_eq!(r.body["warnings"], expected);

    // The same document in a flag file.
    let mut in_file = doc.clone();
    in_file["key"] = json!("f");
    let raw = flags_wire::file::RawData {
        flags: [("f".to_owned(), flags_wire::file::raw_item(&in_file))]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let from_file: Vec<Value> = flagd::validate::check(&raw)
        .into_iter()
        .map(|p| json!({"path": p.path.strip_prefix("flags.f.").unwrap(), "message": p.message}))
        .collect();
    assert_eq!(Value::from(from_file), expected);

    // Reads show the item alone; each write answers with what is left to warn about.
    let r = api.get(path).await;
    assert!(r.body.get("warnings").is_none(), "{r:?}");
    let r = api
        .patch(path, json!({"rules": []}), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.body["warnings"][0]["path"],
        "fallthrough.rollout.variations"
    );
    assert_eq!(r.body["warnings"].as_array().unwrap().len(), 1);
    let r = api
        .patch(path, json!({"fallthrough": {"variation": 0}}), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.body.get("warnings").is_none(), "{r:?}");

    let segment = "/environments/prod/segments/s";
    let r = api
        .put(
            segment,
            json!({"rules": [{"clauses": [{"attribute": "born", "op": "after", "values": ["yesterday"]}]}]}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let date = json!([{"path": "rules[0].clauses[0].values[0]",
        "message": "invalid date: expected an RFC 3339 date-time (like 2024-01-31T12:00:00Z) or Unix milliseconds"}]);
    assert_eq!(r.body["warnings"], date);
    let r = api
        .post(
            &format!("{segment}/targets"),
            json!({"included": {"add": ["bob"]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["warnings"], date);
}

#[tokio::test]
async fn merge_patch_changes_fields_and_honours_if_match() {
    let (api, _store) = with_envs().await;
    let path = "/environments/prod/flags/f";
    let mut doc = flag(json!(["a", "b"]));
    doc["salt"] = json!("pepper");
    doc["trackEvents"] = json!(true);
    api.put(path, doc, &[]).await;

    let r = api
        .patch(
            path,
            json!({"on": false, "salt": null, "offVariation": 1}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(r.body["doc"]["on"], false);
    assert_eq!(r.body["doc"]["offVariation"], 1);
    assert!(r.body["doc"].get("salt").is_none());
    assert_eq!(r.body["doc"]["trackEvents"], true);

    let r = api
        .patch(path, json!({"on": true}), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = api
        .patch(path, json!({"on": true}), &[("if-match", "\"2\"")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["version"], 3);

    // A patch that leaves an invalid flag is refused with the field path.
    let r = api.patch(path, json!({"offVariation": 9}), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["errors"][0]["path"], "offVariation");
    // A patch that changes nothing writes nothing.
    let r = api.patch(path, json!({"on": true}), &[]).await;
    assert_eq!(r.body["version"], 3);

    // The merge-patch media type is required.
    let r = api
        .raw(
            "PATCH",
            path,
            r#"{"on":false}"#,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    r.assert_problem("unsupported-media-type");
    let r = api
        .patch("/environments/prod/flags/none", json!({"on": true}), &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_refuses_while_dependents_exist_and_lists_them() {
    let (api, _store) = with_envs().await;
    api.put(
        "/environments/prod/flags/base",
        flag(json!([false, true])),
        &[],
    )
    .await;
    for dependent in ["z-child", "a-child"] {
        let mut doc = flag(json!([false, true]));
        doc["prerequisites"] = json!([{"key": "base", "variation": 1}]);
        let r = api
            .put(&format!("/environments/prod/flags/{dependent}"), doc, &[])
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = api.delete("/environments/prod/flags/base", &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    r.assert_problem("has-dependents");
    assert_eq!(
        r.body["dependents"],
        json!([{"kind": "flag", "key": "a-child"}, {"kind": "flag", "key": "z-child"}])
    );
    let r = api
        .post("/environments/prod/flags/base/archive", json!(null))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    for child in ["a-child", "z-child"] {
        let r = api
            .delete(&format!("/environments/prod/flags/{child}"), &[])
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
    let r = api
        .delete("/environments/prod/flags/base", &[("if-match", "\"9\"")])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = api
        .delete("/environments/prod/flags/base", &[("if-match", "\"1\"")])
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/environments/prod/flags/base").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete("/environments/prod/flags/base", &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Created again, it continues from the tombstone's version.
    let r = api
        .put("/environments/prod/flags/base", flag(json!([1])), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body["version"].as_u64().unwrap() > 1, "{r:?}");
}

#[tokio::test]
async fn list_filters_and_convenience_routes() {
    let (api, _store) = with_envs().await;
    for key in ["checkout-a", "checkout-b", "search"] {
        api.put(
            &format!("/environments/prod/flags/{key}"),
            flag(json!([false, true])),
            &[],
        )
        .await;
    }
    let r = api
        .post("/environments/prod/flags/checkout-b/off", json!(null))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["doc"]["on"], false);
    assert_eq!(r.header("etag"), Some("\"2\""));
    // Already off: nothing written.
    let r = api
        .post("/environments/prod/flags/checkout-b/off", json!(null))
        .await;
    assert_eq!(r.body["version"], 2);
    let r = api
        .post("/environments/prod/flags/checkout-b/on", json!(null))
        .await;
    assert_eq!(r.body["doc"]["on"], true);
    assert_eq!(r.body["version"], 3);
    let r = api
        .request(
            "POST",
            "/environments/prod/flags/checkout-b/off",
            Some(&bearer(BOOTSTRAP)),
            None,
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);

    let r = api
        .post("/environments/prod/flags/search/archive", json!(null))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["archived"], true);

    let list = |query: &'static str| {
        let api = &api;
        async move {
            let r = api.get(&format!("/environments/prod/flags{query}")).await;
            assert_eq!(r.status, StatusCode::OK, "{query}");
            keys_of(&r.body["items"], "key")
        }
    };
    assert_eq!(list("").await, ["checkout-a", "checkout-b", "search"]);
    assert_eq!(list("?archived=true").await, ["search"]);
    assert_eq!(list("?archived=false").await, ["checkout-a", "checkout-b"]);
    assert_eq!(list("?q=checkout-").await, ["checkout-a", "checkout-b"]);
    assert_eq!(list("?q=s&archived=false").await, Vec::<String>::new());
    let r = api.get("/environments/prod/flags?archived=maybe").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["errors"][0]["path"], "archived");
    assert_eq!(
        api.get("/environments/nope/flags").await.status,
        StatusCode::NOT_FOUND
    );

    let r = api
        .post("/environments/prod/flags/search/unarchive", json!(null))
        .await;
    assert_eq!(r.body["archived"], false);
    assert_eq!(list("?archived=true").await, Vec::<String>::new());
    let r = api
        .post("/environments/prod/flags/none/on", json!(null))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

// ------------------------------------------------------------------ segments

#[tokio::test]
async fn segments_crud_targets_and_dependents() {
    let (api, _store) = with_envs().await;
    let path = "/environments/prod/segments/beta";
    let r = api
        .put(path, json!({"included": ["alice"], "salt": "s"}), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(
        api.put(path, json!({}), &[]).await.status,
        StatusCode::PRECONDITION_REQUIRED
    );
    assert_eq!(
        api.put(path, json!({}), &[("if-match", "\"5\"")])
            .await
            .status,
        StatusCode::PRECONDITION_FAILED
    );

    let r = api
        .post(
            &format!("{path}/targets"),
            json!({"included": {"add": ["bob", "carol"], "remove": ["alice"]}, "excluded": {"add": ["eve"]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["doc"]["included"], json!(["bob", "carol"]));
    assert_eq!(r.body["doc"]["excluded"], json!(["eve"]));
    assert_eq!(r.header("etag"), Some("\"2\""));
    let r = api
        .post(
            &format!("{path}/targets"),
            json!({"contextKind": "org", "included": {"add": ["acme"]}}),
        )
        .await;
    assert_eq!(
        r.body["doc"]["includedContexts"],
        json!([{"contextKind": "org", "values": ["acme"]}])
    );
    let r = api
        .post(
            &format!("{path}/targets"),
            json!({"included": {"put": ["x"]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = api
        .request(
            "POST",
            &format!("{path}/targets"),
            Some(&bearer(BOOTSTRAP)),
            Some(json!({"included": {"add": ["zed"]}})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);

    let r = api.patch(path, json!({"salt": "t"}), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["doc"]["salt"], "t");
    assert_eq!(r.body["doc"]["included"], json!(["bob", "carol"]));

    let r = api.get("/environments/prod/segments?q=be").await;
    assert_eq!(keys_of(&r.body["items"], "key"), ["beta"]);

    let mut uses = flag(json!([false, true]));
    uses["rules"] = json!([{"clauses": [{"attribute": "key", "op": "segmentMatch", "values": ["beta"]}], "variation": 1}]);
    assert_eq!(
        api.put("/environments/prod/flags/gated", uses, &[])
            .await
            .status,
        StatusCode::CREATED
    );
    let r = api.delete(path, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body["dependents"],
        json!([{"kind": "flag", "key": "gated"}])
    );
    let r = api.post(&format!("{path}/archive"), json!(null)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    api.delete("/environments/prod/flags/gated", &[]).await;
    let r = api.post(&format!("{path}/archive"), json!(null)).await;
    assert_eq!(r.body["archived"], true);
    let r = api.post(&format!("{path}/unarchive"), json!(null)).await;
    assert_eq!(r.body["archived"], false);
    assert_eq!(api.delete(path, &[]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(path).await.status, StatusCode::NOT_FOUND);
}

// ------------------------------------------------------------------ kill set and overrides

#[tokio::test]
async fn kill_and_unkill() {
    let (api, store) = with_envs().await;
    api.put("/environments/prod/flags/f", flag(json!([1, 2])), &[])
        .await;
    let path = "/environments/prod/flags/f/kill";
    let r = api
        .request("PUT", path, Some(&bearer(BOOTSTRAP)), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.body,
        json!({"flag": "f", "killed": true, "changed": true})
    );
    let r = api
        .request("PUT", path, Some(&bearer(BOOTSTRAP)), None, &[])
        .await;
    assert_eq!(r.body["changed"], false);
    assert_eq!(store.killed_flags("prod").await.unwrap(), ["f"]);
    let r = api.get("/environments/prod/killed").await;
    assert_eq!(r.body, json!({"killed": ["f"]}));
    let r = api.delete(path, &[]).await;
    assert_eq!(
        r.body,
        json!({"flag": "f", "killed": false, "changed": true})
    );
    assert!(store.killed_flags("prod").await.unwrap().is_empty());
    let r = api
        .request(
            "PUT",
            "/environments/prod/flags/nope/kill",
            Some(&bearer(BOOTSTRAP)),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn overrides_set_list_and_remove() {
    let (api, _store) = with_envs().await;
    api.put(
        "/environments/prod/flags/f",
        flag(json!(["a", "b", "c"])),
        &[],
    )
    .await;
    let path = "/environments/prod/flags/f/overrides/user/alice";
    let r = api.put(path, json!({"variation": 2}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.body,
        json!({"contextKind": "user", "contextKey": "alice", "variation": 2, "previous": null})
    );
    let r = api.put(path, json!({"variation": 1}), &[]).await;
    assert_eq!(r.body["previous"], 2);
    api.put(
        "/environments/prod/flags/f/overrides/org/acme",
        json!({"variation": 0}),
        &[],
    )
    .await;
    let r = api.get("/environments/prod/flags/f/overrides").await;
    assert_eq!(
        r.body["items"],
        json!([
            {"contextKind": "org", "contextKey": "acme", "variation": 0},
            {"contextKind": "user", "contextKey": "alice", "variation": 1},
        ])
    );
    // A variation the flag does not have, a bad body, a bad kind, a missing flag.
    let r = api.put(path, json!({"variation": 3}), &[]).await;
    assert!(
        [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].contains(&r.status),
        "{r:?}"
    );
    let r = api.put(path, json!({"variation": -1}), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["errors"][0]["path"], "variation");
    let r = api
        .put(
            "/environments/prod/flags/f/overrides/kind/x",
            json!({"variation": 0}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let r = api
        .put(
            "/environments/prod/flags/none/overrides/user/x",
            json!({"variation": 0}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("/environments/prod/flags/none/overrides")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(api.delete(path, &[]).await.status, StatusCode::NO_CONTENT);
    let r = api.delete(path, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.assert_problem("not-found");
    let r = api.get("/environments/prod/flags/f/overrides").await;
    assert_eq!(keys_of(&r.body["items"], "contextKey"), ["acme"]);
}

// ------------------------------------------------------------------ audit

#[tokio::test]
async fn audit_shows_exactly_the_applied_writes_with_their_actor() {
    let (api, _store) = with_envs().await;
    let admin = api.create_key("prod", "admin", "alice-laptop").await;
    let alice = api.as_key(&admin);
    let path = "/environments/prod/flags/f";
    assert_eq!(
        api.put(path, flag(json!([1, 2])), &[]).await.status,
        StatusCode::CREATED
    );
    // Refused writes leave no trace.
    assert_eq!(
        alice.put(path, flag(json!([1])), &[]).await.status,
        StatusCode::PRECONDITION_REQUIRED
    );
    assert_eq!(
        alice
            .put(path, flag(json!([1])), &[("if-match", "\"9\"")])
            .await
            .status,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        alice
            .patch(path, json!({"offVariation": 7}), &[])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        alice.patch(path, json!({"on": false}), &[]).await.status,
        StatusCode::OK
    );
    // No-ops leave no trace either.
    alice.post(&format!("{path}/off"), json!(null)).await;
    alice
        .request(
            "PUT",
            &format!("{path}/kill"),
            Some(&bearer(&admin.secret)),
            None,
            &[],
        )
        .await;
    alice
        .request(
            "PUT",
            &format!("{path}/kill"),
            Some(&bearer(&admin.secret)),
            None,
            &[],
        )
        .await;
    alice
        .put(
            &format!("{path}/overrides/user/bob"),
            json!({"variation": 1}),
            &[],
        )
        .await;
    api.put("/environments/prod/flags/other", flag(json!([1])), &[])
        .await;

    let r = api.get("/environments/prod/audit?flag=f").await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.body["items"].as_array().unwrap();
    let summary: Vec<(String, String)> = items
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("set_override", "alice-laptop"),
        ("kill", "alice-laptop"),
        ("replace", "alice-laptop"),
        ("create", "bootstrap"),
    ];
    assert_eq!(
        summary,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{items:#?}"
    );
    assert_eq!(items[0]["actor"]["keyId"], admin.id);
    assert_eq!(items[3]["actor"]["keyId"], Value::Null);
    assert_eq!(items[2]["before"]["on"], true);
    assert_eq!(items[2]["after"]["on"], false);

    let r = api.get("/environments/prod/audit?limit=2").await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["itemKey"], "other");
    let older = items[1]["id"].as_u64().unwrap();
    let r = api
        .get(&format!(
            "/environments/prod/audit?flag=f&before={older}&limit=1"
        ))
        .await;
    assert_eq!(r.body["items"][0]["action"], "kill");

    for bad in ["limit=0", "limit=abc", "limit=100000", "before=x"] {
        let r = api.get(&format!("/environments/prod/audit?{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        api.get("/environments/nope/audit").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_whole_audit_log_shows_actions_of_no_environment() {
    let (api, _store) = with_envs().await;
    let r = api.post("/keys", json!({"name": "ops"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let ops_id = r.body["id"].as_u64().unwrap();
    let ops_secret = r.body["key"].as_str().unwrap().to_owned();
    let ops = api.with_auth(&ops_secret);
    let r = api.delete(&format!("/keys/{ops_id}"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    api.put("/environments/prod/flags/f", flag(json!([1])), &[])
        .await;

    // Newest first: the flag, the key's revocation and creation (tied to no environment), then
    // the environments' creations.
    let r = api.get("/audit").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let summary: Vec<(Value, Value, Value, Value)> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["env"].clone(),
                e["itemKind"].clone(),
                e["itemKey"].clone(),
                e["action"].clone(),
            )
        })
        .collect();
    let id = json!(ops_id.to_string());
    assert_eq!(
        summary,
        [
            (json!("prod"), json!("flag"), json!("f"), json!("create")),
            (Value::Null, json!("api_key"), id.clone(), json!("revoke")),
            (Value::Null, json!("api_key"), id, json!("create")),
            (
                json!("staging"),
                json!("environment"),
                json!("staging"),
                json!("create")
            ),
            (
                json!("prod"),
                json!("environment"),
                json!("prod"),
                json!("create")
            ),
        ]
    );
    assert_eq!(r.body["items"][1]["actor"]["name"], "bootstrap");
    assert!(!r.body.to_string().contains(&ops_secret), "no secrets");

    // Paging, as for an environment's log.
    let r = api.get("/audit?limit=2").await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let oldest = items[1]["id"].as_u64().unwrap();
    let r = api.get(&format!("/audit?before={oldest}&limit=1")).await;
    assert_eq!(r.body["items"][0]["action"], "create");
    assert_eq!(r.body["items"][0]["itemKind"], "api_key");
    let r = api.get("/audit?limit=0").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    r.assert_problem("invalid");

    // It spans environments: a key limited to one gets 403, a revoked one 401.
    let prod_admin = api.create_key("prod", "admin", "prod-admin").await;
    let r = api.as_key(&prod_admin).get("/audit").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    r.assert_problem("forbidden");
    assert_eq!(ops.get("/audit").await.status, StatusCode::UNAUTHORIZED);

    // The OpenAPI document lists it, with its paging parameters.
    let doc = openapi_document();
    let params: Vec<&str> = doc["paths"]["/audit"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(params, ["limit", "before"]);
}

// ------------------------------------------------------------------ outages

#[tokio::test]
async fn an_unavailable_store_is_a_503_with_retry_after() {
    let (api, store) = with_envs().await;
    store.set_available(false);
    let r = api
        .put("/environments/prod/flags/f", flag(json!([1])), &[])
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    r.assert_problem("unavailable");
    assert_eq!(
        r.body["detail"],
        "the database is unavailable; writes are refused until it returns"
    );
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);
    // Stored keys cannot be checked either.
    let r = api.with_auth("flagd-admin-0000").get("/environments").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    store.set_available(true);
    let r = api
        .put("/environments/prod/flags/f", flag(json!([1])), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

/// While the store is down, a stored key cannot be checked (503 with `Retry-After`), but a
/// string that is no flagd key can: it is refused with 401 without asking the store.
#[tokio::test]
async fn a_key_check_without_the_store_is_a_503_unless_the_key_is_plainly_wrong() {
    let (api, store) = with_envs().await;
    store.set_available(false);
    for wrong in ["wrong", "flagd-admin", "sdk-1234"] {
        let r = api.with_auth(wrong).get("/environments").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{wrong}: {r:?}");
        r.assert_problem("unauthorized");
    }
    for unknown in ["admin", "sdk"].map(|kind| format!("flagd-{kind}-{}", "0".repeat(64))) {
        let r = api.with_auth(&unknown).get("/environments").await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{unknown}: {r:?}"
        );
        r.assert_problem("unavailable");
        assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);
    }
    store.set_available(true);
}

// ------------------------------------------------------------------ what no store can hold

#[tokio::test]
async fn nul_and_dot_keys_are_refused_with_the_field_path() {
    let (api, _store) = memory_app();
    nul_and_dot_keys_are_refused(&api).await;
}

// ------------------------------------------------------------------ import and export

#[tokio::test]
async fn import_then_export_round_trips() {
    let (api, store) = with_envs().await;
    let fixture = rich_fixture();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flags.json");
    std::fs::write(&file, serde_json::to_string_pretty(&fixture).unwrap()).unwrap();
    let actor = Actor::named("import");

    let report = import_file(store.as_ref(), "prod", &file, &actor)
        .await
        .unwrap();
    let flag_count = fixture["flags"].as_object().unwrap().len()
        + fixture["flagValues"].as_object().unwrap().len();
    assert_eq!(report.flags_created.len(), flag_count);
    assert_eq!(
        report.segments_created.len(),
        fixture["segments"].as_object().unwrap().len()
    );

    // Every document comes back exactly as written, with the key and first version stamped;
    // `flagValues` come back as the simple flags they stand for.
    let exported = export_env(store.as_ref(), "prod").await.unwrap();
    let stamp = |key: &str, doc: &Value| {
        let mut doc = doc.clone();
        doc["key"] = json!(key);
        doc["version"] = json!(1);
        doc
    };
    let mut expected_flags = serde_json::Map::new();
    for (key, doc) in fixture["flags"].as_object().unwrap() {
        expected_flags.insert(key.clone(), stamp(key, doc));
    }
    for (key, value) in fixture["flagValues"].as_object().unwrap() {
        let simple = json!({"on": true, "variations": [value], "fallthrough": {"variation": 0}});
        expected_flags.insert(key.clone(), stamp(key, &simple));
    }
    let mut expected_segments = serde_json::Map::new();
    for (key, doc) in fixture["segments"].as_object().unwrap() {
        expected_segments.insert(key.clone(), stamp(key, doc));
    }
    assert_eq!(exported["flags"], Value::Object(expected_flags));
    assert_eq!(exported["segments"], Value::Object(expected_segments));
    assert_eq!(exported.as_object().unwrap().len(), 2);

    // Importing the same file again changes nothing.
    let again = import_file(store.as_ref(), "prod", &file, &actor)
        .await
        .unwrap();
    assert!(again.flags_created.is_empty() && again.flags_replaced.is_empty());
    assert_eq!(again.flags_unchanged.len(), flag_count);
    assert_eq!(export_env(store.as_ref(), "prod").await.unwrap(), exported);

    // The export imported elsewhere exports identically (through the HTTP routes this time).
    let r = api
        .post("/environments/staging/import", exported.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["flagsCreated"].as_array().unwrap().len(), flag_count);
    let r = api.get("/environments/staging/export").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, exported);

    // Archived items are not served, so they are not exported.
    api.post("/environments/staging/flags/live-edit/archive", json!(null))
        .await;
    let r = api.get("/environments/staging/export").await;
    assert!(r.body["flags"].get("live-edit").is_none());
    assert!(r.body["flags"].get("bool-targets").is_some());

    // The audit log names the importer.
    let r = api.get("/environments/prod/audit?flag=bool-targets").await;
    assert_eq!(r.body["items"][0]["actor"]["name"], "import");
}

/// An import stores items the checks only warn about, and its report lists the warnings as
/// `flagd validate` prints them for the same file.
#[tokio::test]
async fn imports_report_the_warnings_validate_gives() {
    let (api, _store) = with_envs().await;
    let file = json!({
        "flags": {
            "z": {"on": true, "variations": [1, 2], "fallthrough": {"variation": 0},
                  "rules": [{"variation": 1, "clauses": [
                      {"attribute": "v", "op": "semVerEqual", "values": ["1.2", "latest"]}]}]},
            "a": {"on": false, "variations": [1, 2], "offVariation": 0},
        },
        "segments": {"s": {"rules": [{"clauses": [
            {"attribute": "email", "op": "matches", "values": ["*"]}]}]}},
        "flagValues": {"plain": true},
    });
    let r = api.post("/environments/prod/import", file.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["flagsCreated"], json!(["a", "plain", "z"]));

    let (raw, problems) = flags_wire::file::merge_files(&[flags_wire::file::FileContents {
        path: "flags.json".into(),
        bytes: Ok(file.to_string().into_bytes()),
    }]);
    assert!(problems.is_empty(), "{problems:?}");
    let from_validate: Vec<Value> = flagd::validate::check(&raw)
        .into_iter()
        .map(|p| json!({"path": p.path, "message": p.message}))
        .collect();
    assert_eq!(r.body["warnings"], Value::from(from_validate));
    assert_eq!(
        r.body["warnings"],
        json!([
            {"path": "flags.a.fallthrough",
             "message": "a flag needs a fallthrough variation or rollout before it is turned on"},
            {"path": "flags.z.rules[0].clauses[0].values[1]",
             "message": "invalid semantic version: expected MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]"},
            {"path": "segments.s.rules[0].clauses[0].values[0]",
             "message": "invalid regular expression: repetition operator missing expression"},
        ])
    );
}

#[tokio::test]
async fn import_reports_bad_files_and_refused_items() {
    let (_api, store) = with_envs().await;
    let dir = tempfile::tempdir().unwrap();
    let actor = Actor::named("import");

    let missing = dir.path().join("missing.json");
    let err = import_file(store.as_ref(), "prod", &missing, &actor)
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Read { .. }), "{err}");

    let not_a_file = dir.path().join("list.json");
    std::fs::write(&not_a_file, "[1, 2]").unwrap();
    let err = import_file(store.as_ref(), "prod", &not_a_file, &actor)
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Format { .. }), "{err}");

    let bad_flag = dir.path().join("bad.yaml");
    std::fs::write(
        &bad_flag,
        "flags:\n  broken:\n    variations: [a]\n    fallthrough: {variation: 4}\n",
    )
    .unwrap();
    let err = import_file(store.as_ref(), "prod", &bad_flag, &actor)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("flag broken: "), "{err}");
    assert!(err.to_string().contains("fallthrough.variation"), "{err}");

    let err = import_file(store.as_ref(), "nope", &bad_flag, &actor)
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Store { .. }), "{err}");

    // A good file for an environment that does not exist: the environment's error, said once.
    let good = dir.path().join("good.json");
    std::fs::write(&good, r#"{"flagValues": {"simple": true}}"#).unwrap();
    let err = import_file(store.as_ref(), "nope", &good, &actor)
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Environment(_)), "{err}");
    assert_eq!(err.to_string(), r#"environment "nope" not found"#);
}

#[tokio::test]
async fn an_import_with_one_bad_flag_stores_nothing() {
    let (api, store) = with_envs().await;
    let mut file = rich_fixture();
    // Last in the import's order, so every other item would have been written before it.
    file["flags"]["zz-broken"] = json!({"variations": ["a"], "fallthrough": {"variation": 4}});
    let empty = json!({"flags": {}, "segments": {}});

    let r = api.post("/environments/prod/import", file.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    r.assert_problem("invalid");
    assert_eq!(
        r.body["errors"][0]["path"],
        "flags.zz-broken.fallthrough.variation"
    );
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.starts_with("flag zz-broken: "), "{detail}");
    assert_eq!(api.get("/environments/prod/export").await.body, empty);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    let actor = Actor::named("import");
    let err = import_file(store.as_ref(), "prod", &path, &actor)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("flag zz-broken: fallthrough.variation: "),
        "{message}"
    );
    assert_eq!(export_env(store.as_ref(), "prod").await.unwrap(), empty);
    // Only the environment's creation is in its audit log.
    let log = store
        .audit_log(&AuditQuery::env("prod", 100))
        .await
        .unwrap();
    assert_eq!(log.len(), 1, "{log:?}");

    // Without the bad flag, the same file goes in whole.
    file["flags"].as_object_mut().unwrap().remove("zz-broken");
    let report = import_document(store.as_ref(), "prod", file.clone(), &actor)
        .await
        .unwrap();
    assert_eq!(
        report.flags_created.len(),
        file["flags"].as_object().unwrap().len() + file["flagValues"].as_object().unwrap().len()
    );
}

// ------------------------------------------------------------------ the OpenAPI document

#[tokio::test]
async fn openapi_document_describes_exactly_the_routes_the_router_serves() {
    let (api, _store) = with_envs().await;
    // It is served, without a key.
    let r = api.request("GET", "/openapi.json", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = openapi_document();
    assert_eq!(r.body, doc);
    assert_eq!(doc["openapi"], "3.1.0");

    // The document's operations are exactly the declared routes.
    let declared: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.as_lower().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(declared.len(), ROUTES.len(), "a route is declared twice");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
        }
    }
    assert_eq!(documented, declared);

    // Every `$ref` resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for reference in refs {
        let pointer = reference.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "dangling {reference}");
    }

    // Every declared route is served by the router (a route it lacks answers the `no-route` or
    // `method-not-allowed` problem), and the router serves nothing undeclared.
    for route in ROUTES {
        let path = route
            .path
            .replace("{env}", "prod")
            .replace("{key}", "k")
            .replace("{contextKind}", "user")
            .replace("{contextKey}", "u")
            .replace("{id}", "1");
        let r = api
            .request(
                route.method.to_http().as_str(),
                &path,
                Some(&bearer(BOOTSTRAP)),
                Some(json!({})),
                &[],
            )
            .await;
        let unrouted = ["no-route", "method-not-allowed"]
            .map(|kind| json!(format!("urn:flagd:problem:{kind}")))
            .contains(&r.body["type"]);
        assert!(
            !unrouted,
            "{:?} {} is not routed: {r:?}",
            route.method, route.path
        );
    }
    for (method, path, kind) in [
        ("GET", "/nope", "no-route"),
        ("GET", "/environments/prod/flags/k/nope", "no-route"),
        ("POST", "/environments/prod/flags", "method-not-allowed"),
        ("PUT", "/environments/prod", "method-not-allowed"),
        (
            "GET",
            "/environments/prod/flags/k/kill",
            "method-not-allowed",
        ),
    ] {
        let r = api
            .request(method, path, Some(&bearer(BOOTSTRAP)), None, &[])
            .await;
        r.assert_problem(kind);
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

// ------------------------------------------------------------------ racing writers

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_either_apply_on_the_version_they_read_or_get_412() {
    let (api, _store) = with_envs().await;
    let path = "/environments/prod/flags/hot";
    api.put(path, flag(json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])), &[])
        .await;
    let writers = 16;
    let mut applied = 0;
    for round in 0..3 {
        let version = api.get(path).await.body["version"].as_u64().unwrap();
        let etag = format!("\"{version}\"");
        let tasks: Vec<_> = (0..writers)
            .map(|i| {
                let api = api.clone();
                let etag = etag.clone();
                tokio::spawn(async move {
                    let mut doc = flag(json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
                    doc["offVariation"] = json!(i % 10);
                    doc["salt"] = json!(format!("round-{round}-writer-{i}"));
                    api.put(path, doc, &[("if-match", etag.as_str())]).await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            let r = task.await.unwrap();
            match r.status {
                StatusCode::OK => {
                    won += 1;
                    assert_eq!(r.body["version"], version + 1);
                }
                StatusCode::PRECONDITION_FAILED => {
                    r.assert_problem("precondition-failed");
                    assert_eq!(r.body["currentVersion"], version + 1);
                }
                other => panic!("unexpected {other}: {r:?}"),
            }
        }
        assert_eq!(
            won, 1,
            "round {round}: exactly one writer applies on version {version}"
        );
        applied += won;
    }
    // The audit log holds the creation and exactly the applied replacements.
    let r = api.get("/environments/prod/audit?flag=hot").await;
    let actions: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), applied + 1, "{actions:?}");
    assert!(actions[..applied].iter().all(|a| *a == "replace"));
    assert_eq!(actions[applied], "create");
}

#[tokio::test]
async fn imports_may_exceed_the_default_body_limit_other_writes_may_not() {
    let (api, _store) = with_envs().await;
    let padding = "x".repeat(1200);
    let flags: serde_json::Map<String, Value> = (0..2500)
        .map(|i| {
            let mut doc = flag(json!([false, true]));
            doc["salt"] = json!(format!("{i}-{padding}"));
            (format!("flag-{i}"), doc)
        })
        .collect();
    let file = json!({ "flags": flags });
    assert!(file.to_string().len() > 3_000_000);
    let r = api.post("/environments/prod/import", file).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body["detail"]);
    assert_eq!(r.body["flagsCreated"].as_array().unwrap().len(), 2500);

    let mut huge = flag(json!([false, true]));
    huge["salt"] = json!("y".repeat(3_000_000));
    let r = api.put("/environments/prod/flags/huge", huge, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    r.assert_problem("payload-too-large");
}
