//! The admin API over the real `PostgresStore`: a smaller run of the rules `admin_api.rs` checks
//! over the in-memory store, so the HTTP mapping is known to hold for the store flagd really
//! uses (versions, 428/412, dependents, 422, stored keys and their scopes, the audit log,
//! import/export).
//!
//! Each test creates a database of its own on `flags_test_support::postgres()` (the server the
//! test command names, else a throwaway one) and drops it afterwards.

#![allow(clippy::unwrap_used)]

mod admin_common;

use flags_store::ChangeFeed;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use admin_common::*;
use axum::http::StatusCode;
use flagd::admin::{AdminState, admin_router, export_env, import_document};
use flags_store::{Actor, AdminStore, MemoryStore};
use flags_store_postgres::{PostgresConfig, PostgresStore};
use flags_test_support::postgres;
use serde_json::json;

/// How long one test may take; a hung database call fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `test` against a migrated store on a fresh database, then drops the database whether
/// the test passed or not.
async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<PostgresStore>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = postgres().create_database();
    let store = PostgresStore::connect(db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let store = Arc::new(store);
    let outcome = tokio::spawn(tokio::time::timeout(LIMIT, test(Arc::clone(&store)))).await;
    store.close().await;
    drop(db);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the test did not finish within {LIMIT:?}"),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

fn api_over(store: Arc<PostgresStore>) -> Api {
    Api::new(admin_router(AdminState {
        store,
        bootstrap_admin_key: Some(BOOTSTRAP.to_owned()),
        big_segments: None,
    }))
}

fn flag(variations: serde_json::Value) -> serde_json::Value {
    json!({
        "on": true, "variations": variations, "offVariation": 0,
        "fallthrough": {"variation": 0},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_over_postgres_keeps_every_status_rule() {
    with_postgres(|store| async move {
        let api = api_over(store);
        for env in ["prod", "staging"] {
            let r = api.post("/environments", json!({"key": env})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        }
        assert_eq!(
            api.post("/environments", json!({"key": "prod"}))
                .await
                .status,
            StatusCode::CONFLICT
        );

        // Create, then replace only with the current version.
        let path = "/environments/prod/flags/base";
        let r = api.put(path, flag(json!([false, true])), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        assert_eq!(r.header("etag"), Some("\"1\""));
        let r = api.put(path, flag(json!([false, true])), &[]).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
        let r = api
            .put(path, flag(json!([false, true])), &[("if-match", "\"3\"")])
            .await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(r.body["currentVersion"], 1);
        let r = api
            .put(
                path,
                flag(json!([false, true, "x"])),
                &[("if-match", "\"1\"")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.header("etag"), Some("\"2\""));
        let r = api.patch(path, json!({"on": false}), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["doc"]["on"], false);
        assert_eq!(r.body["version"], 3);

        // Validation, references and dependents.
        let r = api
            .put(
                "/environments/prod/flags/bad",
                json!({"variations": [1], "fallthrough": {"variation": 3}}),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body["errors"][0]["path"], "fallthrough.variation");
        let mut child = flag(json!([false, true]));
        child["prerequisites"] = json!([{"key": "missing", "variation": 1}]);
        let r = api
            .put("/environments/prod/flags/child", child.clone(), &[])
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        child["prerequisites"] = json!([{"key": "base", "variation": 1}]);
        let r = api.put("/environments/prod/flags/child", child, &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let r = api.delete(path, &[]).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.body["dependents"],
            json!([{"kind": "flag", "key": "child"}])
        );

        // Segments, kill, overrides.
        let r = api
            .put(
                "/environments/prod/segments/beta",
                json!({"included": ["a"]}),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = api
            .post(
                "/environments/prod/segments/beta/targets",
                json!({"included": {"add": ["b"], "remove": ["a"]}}),
            )
            .await;
        assert_eq!(r.body["doc"]["included"], json!(["b"]));
        let r = api
            .request(
                "PUT",
                "/environments/prod/flags/base/kill",
                Some(&bearer(BOOTSTRAP)),
                None,
                &[],
            )
            .await;
        assert_eq!(r.body["changed"], true);
        let r = api
            .put(
                "/environments/prod/flags/base/overrides/user/alice",
                json!({"variation": 1}),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");

        // Stored keys: scopes, SDK keys refused, revocation.
        let prod_admin = api.create_key("prod", "admin", "prod-admin").await;
        let sdk = api.create_key("prod", "sdk", "app").await;
        let scoped = api.as_key(&prod_admin);
        assert_eq!(
            scoped.get("/environments/prod/flags").await.status,
            StatusCode::OK
        );
        assert_eq!(
            scoped.get("/environments/staging/flags").await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            api.as_key(&sdk).get("/environments/prod").await.status,
            StatusCode::FORBIDDEN
        );
        let r = scoped
            .post("/environments/prod/flags/child/off", json!(null))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = api.delete(&format!("/keys/{}", prod_admin.id), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            scoped.get("/environments/prod").await.status,
            StatusCode::UNAUTHORIZED
        );

        // The audit log of `child`: who did what, newest first.
        let r = api.get("/environments/prod/audit?flag=child").await;
        let entries: Vec<(String, String)> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["actor"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("replace".to_owned(), "prod-admin".to_owned()),
                ("create".to_owned(), "bootstrap".to_owned()),
            ]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_export_over_postgres_match_the_memory_store() {
    with_postgres(|store| async move {
        let api = api_over(Arc::clone(&store));
        for env in ["prod", "copy"] {
            api.post("/environments", json!({"key": env})).await;
        }
        let fixture = rich_fixture();
        let actor = Actor::named("import");
        import_document(store.as_ref(), "prod", fixture.clone(), &actor)
            .await
            .unwrap();
        let exported = export_env(store.as_ref(), "prod").await.unwrap();

        // The same file through the in-memory store exports the same documents.
        let memory = MemoryStore::new();
        AdminStore::create_environment(&memory, &actor, "prod", "prod")
            .await
            .unwrap();
        import_document(&memory, "prod", fixture, &actor)
            .await
            .unwrap();
        assert_eq!(export_env(&memory, "prod").await.unwrap(), exported);

        // Exported, imported elsewhere, exported again: identical.
        let r = api
            .post("/environments/copy/import", exported.clone())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let r = api.get("/environments/copy/export").await;
        assert_eq!(r.body, exported);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_one_bad_flag_stores_nothing_in_postgres() {
    with_postgres(|store| async move {
        let api = api_over(Arc::clone(&store));
        api.post("/environments", json!({"key": "prod"})).await;
        let mut file = rich_fixture();
        file["flags"]["zz-broken"] = json!({"variations": ["a"], "fallthrough": {"variation": 4}});
        let r = api.post("/environments/prod/import", file.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
        assert_eq!(
            r.body["errors"][0]["path"],
            "flags.zz-broken.fallthrough.variation"
        );
        // A reference that only fails while writing, after other items were written in the
        // same transaction: still nothing is stored.
        file["flags"]["zz-broken"] = json!({"variations": [true, false], "offVariation": 0,
            "fallthrough": {"variation": 0}, "prerequisites": [{"key": "missing", "variation": 0}]});
        let actor = Actor::named("import");
        let err = import_document(store.as_ref(), "prod", file.clone(), &actor)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("flag zz-broken: "), "{err}");
        let empty = json!({"flags": {}, "segments": {}});
        assert_eq!(export_env(store.as_ref(), "prod").await.unwrap(), empty);
        let snapshot = store.snapshot("prod").await.unwrap();
        let changes = store.changes_since("prod", 0).await.unwrap();
        assert_eq!(changes.len(), 1, "only the creation: {changes:?}");
        assert!(snapshot.flags.is_empty() && snapshot.segments.is_empty());

        file["flags"].as_object_mut().unwrap().remove("zz-broken");
        import_document(store.as_ref(), "prod", file, &actor)
            .await
            .unwrap();
        assert!(!store.snapshot("prod").await.unwrap().flags.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_have_a_display_colour_in_postgres() {
    with_postgres(|store| async move {
        environments_have_a_display_colour(&api_over(store)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_and_dot_keys_are_refused_with_the_field_path_in_postgres() {
    with_postgres(|store| async move {
        nul_and_dot_keys_are_refused(&api_over(store)).await;
    })
    .await;
}

/// A server whose database is missing (dropped, or not created yet) cannot check a stored key:
/// the answer is 503 with `Retry-After`, as for a database that is down, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_a_503_with_retry_after_even_for_a_wrong_key() {
    let db = postgres().create_database();
    let url = db.url().to_owned();
    drop(db);
    let store = Arc::new(PostgresStore::connect_lazy_migrated(&PostgresConfig::new(&url)).unwrap());
    let api = api_over(Arc::clone(&store));
    let unknown = format!("flagd-admin-{}", "0".repeat(64));
    for api in [api.with_auth(&unknown), api.clone()] {
        let r = api.get("/environments").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
        r.assert_problem("unavailable");
        assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);
    }
    // A string that is no flagd key is refused without the store.
    let r = api.with_auth("wrong").get("/environments").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    r.assert_problem("unauthorized");
    store.close().await;
}
