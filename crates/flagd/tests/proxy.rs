//! Proxy mode: a flagd following another over its SDK stream serves the same data on every API
//! (kills and overrides included), passes changes on down a chain, and keeps serving the last
//! data through an upstream restart and a long outage.

#![allow(clippy::unwrap_used)]

mod common;
mod root_support;

use std::sync::Arc;
use std::time::Duration;

use common::FlagDir;
use flags_store::{AdminStore, MemoryStore, OverrideKey};
use root_support::*;
use serde_json::{Value, json};

/// A proxy of `upstream`, presenting `key`, with short retry and polling intervals.
async fn proxy(upstream: &str, key: &str) -> flagd::RunningServer {
    let mut config = flagd::Config::for_tests(Vec::new());
    config.upstream.url = Some(upstream.to_owned());
    config.sdk_keys = vec![key.to_owned()];
    config.upstream.reconnect_base_ms = 50;
    config.upstream.flag_ttl_ms = 200;
    config.upstream.fetch_timeout_ms = 2000;
    flagd::start(config).await.unwrap()
}

async fn latest_all(client: &reqwest::Client, base: &str, key: &str) -> Value {
    let body = client
        .get(format!("{base}/sdk/latest-all"))
        .header("authorization", key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// `POST /v1/evaluate/{flag}` for user `user`; the body.
async fn evaluate_for(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    flag: &str,
    user: &str,
) -> Value {
    let response = client
        .post(format!("{base}/v1/evaluate/{flag}"))
        .header("authorization", key)
        .header("content-type", "application/json")
        .body(json!({"context": {"kind": "user", "key": user}}).to_string())
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null)
}

/// Waits until the evaluation of `flag` for `user` at `base` has `value`.
async fn until_value(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    flag: &str,
    user: &str,
    value: Value,
) {
    let what = format!("{flag} = {value} for {user} at {base}");
    until(&what, || async {
        evaluate_for(client, base, key, flag, user).await["value"] == value
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_serves_the_roots_data_and_passes_every_change_on() {
    let store = Arc::new(MemoryStore::new());
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    put_flag(&*store, "production", "g", bool_flag("g", true)).await;
    let root = start(store.clone()).await;
    let first = proxy(&root.url(), &key).await;
    let second = proxy(&first.url(), &key).await;
    let client = reqwest::Client::new();

    // The same data at the end of the chain as at the root, on every API.
    let served = latest_all(&client, &root.url(), &key).await;
    assert_eq!(latest_all(&client, &second.url(), &key).await, served);
    let body = evaluate_for(&client, &second.url(), &key, "f", "u1").await;
    assert_eq!(body["value"], true, "{body}");
    assert_eq!(body["reason"]["kind"], "FALLTHROUGH", "{body}");
    let ofrep = client
        .post(format!("{}/ofrep/v1/evaluate/flags/f", second.url()))
        .header("authorization", &key)
        .header("content-type", "application/json")
        .body(json!({"context": {"targetingKey": "u1"}}).to_string())
        .send()
        .await
        .unwrap();
    let ofrep: Value = serde_json::from_slice(&ofrep.bytes().await.unwrap()).unwrap();
    assert_eq!(ofrep["value"], true, "{ofrep}");
    // A wrong key is refused by the proxy itself.
    let refused = client
        .post(format!("{}/v1/evaluate/f", second.url()))
        .header("authorization", "not-the-key")
        .header("content-type", "application/json")
        .body(json!({"context": {"kind": "user", "key": "u1"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let ready = readyz(&client, &second.url()).await;
    assert_eq!(ready["status"], "SERVING", "{ready}");
    assert_eq!(ready["source"], "upstream", "{ready}");
    assert_eq!(ready["secondsSinceLastContact"], 0, "{ready}");
    assert_eq!(ready["consecutiveFailures"], 0, "{ready}");
    assert_eq!(ready["flags"], 2, "{ready}");

    // A stream at the end of the chain sees each change as a patch.
    let mut stream = Stream::open(&client, &second.url(), &key).await;
    assert_eq!(stream.next().await.event, "put");
    put_flag(&*store, "production", "f", bool_flag("f", false)).await;
    let patch = stream.next_for("/flags/f").await;
    assert_eq!(patch.event, "patch");
    assert_eq!(patch.data["data"]["fallthrough"]["variation"], 1);
    until_value(&client, &second.url(), &key, "f", "u1", json!(false)).await;

    // Kills and overrides come along, in the flags as SDKs get them.
    store
        .set_killed(&actor(), "production", "g", true)
        .await
        .unwrap();
    until_value(&client, &second.url(), &key, "g", "u1", json!(false)).await;
    let body = evaluate_for(&client, &second.url(), &key, "g", "u1").await;
    assert_eq!(body["reason"]["kind"], "OFF", "{body}");
    let pin = OverrideKey {
        flag_key: "f".into(),
        context_kind: "user".into(),
        context_key: "pinned".into(),
    };
    store
        .set_override(&actor(), "production", &pin, 0)
        .await
        .unwrap();
    until_value(&client, &second.url(), &key, "f", "pinned", json!(true)).await;
    let body = evaluate_for(&client, &second.url(), &key, "f", "pinned").await;
    assert_eq!(body["reason"]["kind"], "TARGET_MATCH", "{body}");
    assert_eq!(
        evaluate_for(&client, &second.url(), &key, "f", "other").await["value"],
        false
    );

    // A deletion too.
    store
        .delete_flag(&actor(), "production", "g", None)
        .await
        .unwrap();
    // The kill's patch of g came first.
    while stream.next_for("/flags/g").await.event != "delete" {}
    until("the deletion", || async {
        latest_all(&client, &second.url(), &key).await["flags"]
            .get("g")
            .is_none()
    })
    .await;
    assert_eq!(
        latest_all(&client, &second.url(), &key).await,
        latest_all(&client, &root.url(), &key).await
    );

    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
    root.shutdown().await.unwrap();
}

fn flags(value: &str) -> String {
    let colours = ["red", "green", "blue"];
    let variation = colours.iter().position(|c| *c == value).unwrap();
    json!({"flags": {"colour": {"on": true, "variations": colours,
        "fallthrough": {"variation": variation}}}})
    .to_string()
}

/// A file-mode root on `port` (0: a free one) requiring `key`.
async fn file_root(dir: &FlagDir, port: u16, key: &str) -> flagd::RunningServer {
    let mut config = flagd::Config::for_tests(vec![dir.path("flags.json")]);
    config.listen.set_port(port);
    config.sdk_keys = vec![key.to_owned()];
    flagd::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_data_serves_through_a_long_outage_and_an_upstream_restart() {
    let key = "sdk-proxy-test";
    let dir = FlagDir::new();
    dir.write("flags.json", &flags("red"));
    let root = file_root(&dir, 0, key).await;
    let port = root.local_addr().port();
    let first = proxy(&root.url(), key).await;
    let second = proxy(&first.url(), key).await;
    let client = reqwest::Client::new();
    until_value(&client, &second.url(), key, "colour", "u", json!("red")).await;
    let mut stream = Stream::open(&client, &second.url(), key).await;
    assert_eq!(stream.next().await.event, "put");

    // The root goes away: both proxies keep serving and say they are degraded, counting the
    // time since they last heard from their upstream.
    root.shutdown().await.unwrap();
    until("the first proxy notices", || async {
        readyz(&client, &first.url()).await["status"] == "DEGRADED"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ready = readyz(&client, &first.url()).await;
    assert_eq!(ready["status"], "DEGRADED", "{ready}");
    assert!(
        ready["secondsSinceLastContact"].as_u64().unwrap() >= 2,
        "{ready}"
    );
    assert!(ready["lastError"].is_string(), "{ready}");
    assert!(
        ready["consecutiveFailures"].as_u64().unwrap() >= 1,
        "{ready}"
    );
    for proxy in [&first, &second] {
        let body = evaluate_for(&client, &proxy.url(), key, "colour", "u").await;
        assert_eq!(body["value"], "red", "{body}");
        let status = client
            .get(format!("{}/readyz", proxy.url()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200, "a proxy with data is ready");
    }

    // It comes back, on the same address, with other data (and, being a fresh file-mode
    // root, versions that start again): the chain serves it, and the stream gets a put.
    dir.write("flags.json", &flags("blue"));
    let root = file_root(&dir, port, key).await;
    until_value(&client, &second.url(), key, "colour", "u", json!("blue")).await;
    loop {
        let event = stream.next().await;
        if event.event == "put" {
            assert_eq!(
                event.data["data"]["flags"]["colour"]["fallthrough"]["variation"],
                2
            );
            break;
        }
    }
    until("the first proxy recovers", || async {
        readyz(&client, &first.url()).await["status"] == "SERVING"
    })
    .await;
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
    root.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_proxy_without_a_key_or_with_two_sources_does_not_start() {
    let mut config = flagd::Config::for_tests(Vec::new());
    config.upstream.url = Some("http://127.0.0.1:9".to_owned());
    let error = flagd::start(config.clone()).await.err().unwrap();
    assert!(error.to_string().contains("SDK key"), "{error}");
    config.sdk_keys = vec!["k".to_owned()];
    config.database_url = Some("postgres://localhost/x".to_owned());
    let error = flagd::start(config).await.err().unwrap();
    assert!(error.to_string().contains("not several"), "{error}");
}

#[tokio::test]
async fn a_proxy_whose_upstream_never_answered_is_not_ready() {
    let mut config = flagd::Config::for_tests(Vec::new());
    // Nothing listens on the discard port.
    config.upstream.url = Some("http://127.0.0.1:9".to_owned());
    config.upstream.fetch_timeout_ms = 200;
    config.sdk_keys = vec!["k".to_owned()];
    let server = flagd::start(config).await.unwrap();
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/readyz", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let ready: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(ready["status"], "CONNECTING", "{ready}");
    assert_eq!(ready["secondsSinceLastContact"], Value::Null, "{ready}");
    server.shutdown().await.unwrap();
}
