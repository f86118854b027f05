//! Root mode over the in-memory store: the SDK key picks the environment, writes reach
//! evaluation and streams, kills win and reach streams at once, and an outage keeps the last
//! data serving until the store returns and flagd catches up.

#![allow(clippy::unwrap_used)]

mod root_support;

use flags_store::ChangeFeed;
use flags_store::KeyStore;
use std::sync::Arc;

use flags_store::{AdminStore, ApiKeyKind, MemoryStore, NewApiKey, OverrideKey};
use root_support::*;
use serde_json::json;

#[tokio::test]
async fn the_sdk_key_picks_the_environment() {
    let store = Arc::new(MemoryStore::new());
    let prod = env_with_key(&*store, "production").await;
    let dev = env_with_key(&*store, "development").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    put_flag(&*store, "development", "f", bool_flag("f", false)).await;
    let admin = store
        .create_api_key(
            &actor(),
            &NewApiKey {
                name: "admin".into(),
                kind: ApiKeyKind::Admin,
                env: None,
            },
        )
        .await
        .unwrap()
        .secret;
    let server = start(store.clone()).await;
    let (client, base) = (reqwest::Client::new(), server.url());

    let (status, body) = evaluate(&client, &base, &prod, "f").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (status, body) = evaluate(&client, &base, &dev, "f").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!(false)),
        "{body}"
    );
    assert_eq!(evaluate(&client, &base, "nope", "f").await.0, 401);
    assert_eq!(evaluate(&client, &base, &admin, "f").await.0, 403);
    let status = client
        .post(format!("{base}/v1/evaluate/f"))
        .header("content-type", "application/json")
        .body(json!({"context": {"kind": "user", "key": "u"}}).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401, "no key at all");

    let ready = readyz(&client, &base).await;
    assert_eq!(ready["status"], "SERVING", "{ready}");
    assert_eq!(ready["environments"]["production"]["flags"], 1, "{ready}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn writes_reach_evaluation_and_streams() {
    let store = Arc::new(MemoryStore::new());
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", false)).await;
    let server = start(store.clone()).await;
    let (client, base) = (reqwest::Client::new(), server.url());
    let mut stream = Stream::open(&client, &base, &key).await;
    let put = stream.next().await;
    assert_eq!(put.event, "put");
    assert_eq!(
        put.data["data"]["flags"]["f"]["fallthrough"]["variation"],
        1
    );

    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    let patch = stream.next_for("/flags/f").await;
    assert_eq!(patch.event, "patch");
    assert_eq!(patch.data["data"]["fallthrough"]["variation"], 0);
    let (_, body) = evaluate(&client, &base, &key, "f").await;
    assert_eq!(body["value"], true, "{body}");

    // A new flag, an override, and a deletion.
    put_flag(&*store, "production", "g", bool_flag("g", true)).await;
    let patch = stream.next_for("/flags/g").await;
    assert_eq!(patch.event, "patch");
    let version = patch.data["data"]["version"].as_u64().unwrap();
    let pin = OverrideKey {
        flag_key: "g".into(),
        context_kind: "user".into(),
        context_key: "u1".into(),
    };
    store
        .set_override(&actor(), "production", &pin, 1)
        .await
        .unwrap();
    // SDKs get the override as a target placed first, in a newer version of the flag.
    let patch = stream.next_for("/flags/g").await;
    assert_eq!(patch.event, "patch");
    assert!(patch.data["data"]["version"].as_u64().unwrap() > version);
    assert_eq!(
        patch.data["data"]["targets"],
        json!([{"values": ["u1"], "variation": 1}])
    );
    assert_eq!(
        patch.data["data"]["contextTargets"],
        json!([{"contextKind": "user", "values": [], "variation": 1}])
    );
    until("the override", || async {
        let (_, body) = evaluate(&client, &base, &key, "g").await;
        body["value"] == false && body["reason"]["override"] == true
    })
    .await;
    store
        .delete_flag(&actor(), "production", "g", None)
        .await
        .unwrap();
    let delete = stream.next_for("/flags/g").await;
    assert_eq!(delete.event, "delete");
    assert_eq!(evaluate(&client, &base, &key, "g").await.0, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_kill_wins_reaches_streams_at_once_and_unkill_restores() {
    let store = Arc::new(MemoryStore::new());
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    let pin = OverrideKey {
        flag_key: "f".into(),
        context_kind: "user".into(),
        context_key: "u1".into(),
    };
    store
        .set_override(&actor(), "production", &pin, 0)
        .await
        .unwrap();
    let server = start(store.clone()).await;
    let (client, base) = (reqwest::Client::new(), server.url());
    let etag = |client: reqwest::Client, base: String, key: String| async move {
        client
            .post(format!("{base}/ofrep/v1/evaluate/flags"))
            .header("authorization", key)
            .header("content-type", "application/json")
            .body(json!({"context": {"targetingKey": "u1"}}).to_string())
            .send()
            .await
            .unwrap()
            .headers()["etag"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let before = etag(client.clone(), base.clone(), key.clone()).await;
    let mut stream = Stream::open(&client, &base, &key).await;
    let put = stream.next().await;
    let served_version = put.data["data"]["flags"]["f"]["version"].as_u64().unwrap();

    store
        .set_killed(&actor(), "production", "f", true)
        .await
        .unwrap();
    let patch = stream.next_for("/flags/f").await;
    assert_eq!(patch.data["data"]["on"], false, "SDKs see the flag off");
    assert!(patch.data["data"]["version"].as_u64().unwrap() > served_version);
    let (_, body) = evaluate(&client, &base, &key, "f").await;
    assert_eq!(body["value"], false, "the kill beats the override: {body}");
    assert_eq!(body["reason"], json!({"kind": "OFF", "killed": true}));
    assert_ne!(
        etag(client.clone(), base.clone(), key.clone()).await,
        before
    );

    store
        .set_killed(&actor(), "production", "f", false)
        .await
        .unwrap();
    let patch = stream.next_for("/flags/f").await;
    assert_eq!(patch.data["data"]["on"], true);
    let (_, body) = evaluate(&client, &base, &key, "f").await;
    assert_eq!(body["value"], true, "{body}");
    assert_eq!(body["reason"]["override"], true, "{body}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_outage_keeps_the_last_data_and_recovery_catches_up() {
    let store = Arc::new(MemoryStore::new());
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    let server = start(store.clone()).await;
    let (client, base) = (reqwest::Client::new(), server.url());
    let mut stream = Stream::open(&client, &base, &key).await;
    stream.next().await;

    store.set_available(false);
    until("DEGRADED", || async {
        readyz(&client, &base).await["status"] == "DEGRADED"
    })
    .await;
    let ready = readyz(&client, &base).await;
    assert!(ready["secondsSinceLastContact"].is_u64(), "{ready}");
    assert!(
        ready["consecutiveFailures"].as_u64().unwrap() >= 3,
        "{ready}"
    );
    let (status, body) = evaluate(&client, &base, &key, "f").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!(true)),
        "{body}"
    );

    store.set_available(true);
    put_flag(&*store, "production", "f", bool_flag("f", false)).await;
    let patch = stream.next_for("/flags/f").await;
    assert_eq!(patch.data["data"]["fallthrough"]["variation"], 1);
    until("SERVING again", || async {
        readyz(&client, &base).await["status"] == "SERVING"
    })
    .await;
    let (_, body) = evaluate(&client, &base, &key, "f").await;
    assert_eq!(body["value"], false, "{body}");
    server.shutdown().await.unwrap();
}

/// While the store is down, an SDK key never seen before cannot be checked: 503 with
/// `Retry-After`, as the admin API answers. A string that is no flagd key needs no store: 401.
#[tokio::test]
async fn an_sdk_key_the_store_cannot_check_is_a_503_with_retry_after() {
    let store = Arc::new(MemoryStore::new());
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    let server = start(store.clone()).await;
    let (client, base) = (reqwest::Client::new(), server.url());
    assert_eq!(evaluate(&client, &base, &key, "f").await.0, 200);

    store.set_available(false);
    let unseen = format!("flagd-sdk-{}", "0".repeat(64));
    for path in ["/sdk/latest-all", "/ofrep/v1/configuration"] {
        let response = client
            .get(format!("{base}{path}"))
            .header("authorization", &unseen)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 503, "{path}");
        let retry_after = response.headers()["retry-after"].to_str().unwrap();
        assert!(retry_after.parse::<u64>().unwrap() > 0, "{path}");
    }
    assert_eq!(evaluate(&client, &base, &unseen, "f").await.0, 503);
    assert_eq!(evaluate(&client, &base, "wrong", "f").await.0, 401);
    // A key seen before keeps working on its cached answer.
    assert_eq!(evaluate(&client, &base, &key, "f").await.0, 200);
    store.set_available(true);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_writes_reach_evaluation() {
    let store = Arc::new(MemoryStore::new());
    let config = flagd::Config {
        admin_key: Some("root-admin".to_owned()),
        ..flagd::Config::for_tests(Vec::new())
    };
    let server = flagd::start_with_store(config, store.clone())
        .await
        .unwrap();
    let (client, base) = (reqwest::Client::new(), server.url());
    let admin = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        client
            .request(method, format!("{base}/api/v1{path}"))
            .header("authorization", "Bearer root-admin")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let created = admin(
        reqwest::Method::POST,
        "/environments",
        json!({"key": "production", "name": "Production"}),
    )
    .await
    .unwrap();
    assert!(created.status().is_success(), "{:?}", created.status());
    let answer = admin(
        reqwest::Method::POST,
        "/environments/production/keys",
        json!({"kind": "sdk", "name": "app"}),
    )
    .await
    .unwrap();
    assert!(answer.status().is_success(), "{:?}", answer.status());
    let answer: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    let sdk = answer["key"].as_str().unwrap().to_owned();
    let put = admin(
        reqwest::Method::PUT,
        "/environments/production/flags/f",
        bool_flag("f", true),
    )
    .await
    .unwrap();
    assert!(put.status().is_success(), "{:?}", put.status());
    until("the admin write at the evaluation endpoint", || async {
        evaluate(&client, &base, &sdk, "f").await.1["value"] == true
    })
    .await;
    let kill = admin(
        reqwest::Method::PUT,
        "/environments/production/flags/f/kill",
        json!({}),
    )
    .await
    .unwrap();
    assert!(kill.status().is_success(), "{:?}", kill.status());
    until("the kill", || async {
        evaluate(&client, &base, &sdk, "f").await.1["reason"]["killed"] == true
    })
    .await;
    // Admin answers are counted under the admin routes' templates; a path under the admin API
    // that matches none of them is counted as unmatched, not under its own path.
    let unknown = admin(reqwest::Method::GET, "/no-such-route/x1", json!({}))
        .await
        .unwrap();
    assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"flagd_http_requests_total{route="/api/v1/environments",method="POST",status="201"} 1"#,
        r#"flagd_http_requests_total{route="/api/v1/environments/{env}/flags/{key}",method="PUT",status="201"} 1"#,
        r#"flagd_http_requests_total{route="/api/v1/environments/{env}/flags/{key}/kill",method="PUT",status="200"} 1"#,
        r#"flagd_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert!(!metrics.contains("no-such-route"), "{metrics}");
    server.shutdown().await.unwrap();
}

/// The version SDKs get for flag `f` from a replica's stream `put`.
async fn put_version(client: &reqwest::Client, base: &str, key: &str) -> u64 {
    let mut stream = Stream::open(client, base, key).await;
    let put = stream.next().await;
    assert_eq!(put.event, "put");
    put.data["data"]["flags"]["f"]["version"].as_u64().unwrap()
}

/// Flag `f` as a replica's stream `put` serves it.
async fn stream_flag(client: &reqwest::Client, base: &str, key: &str) -> serde_json::Value {
    let mut stream = Stream::open(client, base, key).await;
    let put = stream.next().await;
    assert_eq!(put.event, "put");
    put.data["data"]["flags"]["f"].clone()
}

#[tokio::test]
async fn served_versions_never_go_back_across_kills_overrides_replicas_and_restarts() {
    let store = Arc::new(MemoryStore::new());
    let key = env_with_key(&*store, "production").await;
    let stored = put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    let a = start(store.clone()).await;
    let client = reqwest::Client::new();
    assert_eq!(
        put_version(&client, &a.url(), &key).await,
        stored,
        "a flag never killed is served at its store version"
    );
    let mut stream = Stream::open(&client, &a.url(), &key).await;
    stream.next().await;

    // Kill, unkill, kill: each must raise the served version, although the store's stays.
    let mut seen = stored;
    for killed in [true, false, true] {
        store
            .set_killed(&actor(), "production", "f", killed)
            .await
            .unwrap();
        let patch = stream.next_for("/flags/f").await;
        assert_eq!(patch.data["data"]["on"], !killed);
        let version = patch.data["data"]["version"].as_u64().unwrap();
        assert!(version > seen, "{version} after {seen}");
        seen = version;
    }
    // So must setting, changing and removing an override, which SDKs get as a target.
    let pin = |context_key: &str| OverrideKey {
        flag_key: "f".into(),
        context_kind: "user".into(),
        context_key: context_key.into(),
    };
    for (context_key, variation) in [
        ("u1", Some(1)),
        ("u2", Some(1)),
        ("u1", Some(0)),
        ("u2", None),
    ] {
        match variation {
            Some(v) => {
                store
                    .set_override(&actor(), "production", &pin(context_key), v)
                    .await
            }
            None => {
                store
                    .remove_override(&actor(), "production", &pin(context_key))
                    .await
            }
        }
        .unwrap();
        let patch = stream.next_for("/flags/f").await;
        let version = patch.data["data"]["version"].as_u64().unwrap();
        assert!(version > seen, "{version} after {seen}");
        seen = version;
    }
    let served = stream_flag(&client, &a.url(), &key).await;
    assert_eq!(
        served["targets"],
        json!([{"values": ["u1"], "variation": 0}])
    );
    assert_eq!(
        store.get_flag("production", "f").await.unwrap().version,
        stored
    );

    // A replica started now (or this one after a restart) serves the same version for the
    // same data, not the store's lower one, the same document and the same digest.
    let b = start(store.clone()).await;
    assert_eq!(put_version(&client, &b.url(), &key).await, seen);
    assert_eq!(stream_flag(&client, &b.url(), &key).await, served);
    let digest =
        |ready: serde_json::Value| ready["environments"]["production"]["dataDigest"].clone();
    assert_eq!(
        digest(readyz(&client, &a.url()).await),
        digest(readyz(&client, &b.url()).await)
    );

    // A write after the toggles goes above every version served before, on both replicas.
    let mut stream_b = Stream::open(&client, &b.url(), &key).await;
    stream_b.next().await;
    put_flag(&*store, "production", "f", bool_flag("f", false)).await;
    let on_a = stream.next_for("/flags/f").await.data["data"]["version"]
        .as_u64()
        .unwrap();
    let on_b = stream_b.next_for("/flags/f").await.data["data"]["version"]
        .as_u64()
        .unwrap();
    assert!(on_a > seen, "{on_a} after {seen}");
    assert_eq!(on_a, on_b);
    // Still killed and overridden: the operations layer outlives the write.
    let (_, body) = evaluate(&client, &b.url(), &key, "f").await;
    assert_eq!(body["reason"]["killed"], true, "{body}");
    let served = stream_flag(&client, &b.url(), &key).await;
    assert_eq!(
        served["targets"],
        json!([{"values": ["u1"], "variation": 0}])
    );
    assert_eq!(served["fallthrough"], json!({"variation": 1}));

    // Deleting reports a tombstone above the last version, and re-creating goes above that.
    store
        .delete_flag(&actor(), "production", "f", None)
        .await
        .unwrap();
    let delete = stream.next_for("/flags/f").await;
    assert_eq!(delete.event, "delete");
    let tombstone = delete.data["version"].as_u64().unwrap();
    assert!(tombstone > on_a, "{tombstone} after {on_a}");
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    let patch = stream.next_for("/flags/f").await;
    assert_eq!(patch.event, "patch");
    assert!(patch.data["data"]["version"].as_u64().unwrap() > tombstone);
    assert_eq!(
        patch.data["data"]["on"], true,
        "the kill went with the deletion"
    );
    assert_eq!(
        patch.data["data"]["targets"],
        json!([]),
        "so did the overrides"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_new_environment_is_served_from_its_notification() {
    let store = Arc::new(MemoryStore::new());
    env_with_key(&*store, "production").await;
    // With an hour between polls, only the change feed can announce the new environment.
    let mut config = flagd::Config::for_tests(Vec::new());
    config.sync.poll_interval_ms = 3_600_000;
    let server = flagd::start_with_store(config, store.clone())
        .await
        .unwrap();
    let (client, base) = (reqwest::Client::new(), server.url());
    until("the first environment", || async {
        readyz(&client, &base).await["environments"]["production"].is_object()
    })
    .await;

    let key = env_with_key(&*store, "staging").await;
    put_flag(&*store, "staging", "f", bool_flag("f", true)).await;
    let took = until("the new environment's flag", || async {
        let (status, body) = evaluate(&client, &base, &key, "f").await;
        status == 200 && body["value"] == true
    })
    .await;
    println!("new environment served after {took:?}");
    server.shutdown().await.unwrap();
}
