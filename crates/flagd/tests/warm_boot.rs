//! Warm boot: a flagd that cannot reach its source at start (the database, the flag files, the
//! upstream) serves what an earlier flagd wrote into Redis, says it is stale in `/readyz`, and
//! moves to the source's data as soon as the source answers.

#![allow(clippy::unwrap_used)]

mod common;
mod root_support;

use std::sync::Arc;

use common::FlagDir;
use flags_store::AdminStore;
use flags_test_support::{PgCluster, redis};
use root_support::*;
use serde_json::{Value, json};

async fn open(url: &str) -> Arc<dyn AdminStore> {
    flagd::open_database(url).await.unwrap()
}

async fn redis_len(hash: &str) -> usize {
    let mut connection = redis::Client::open(redis().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("HLEN")
        .arg(hash)
        .query_async(&mut connection)
        .await
        .unwrap()
}

fn root_config(database: &str, template: &str) -> flagd::Config {
    let mut config = flagd::Config::for_tests(Vec::new());
    config.database_url = Some(database.to_owned());
    config.redis.url = Some(redis().url().to_owned());
    config.redis.prefix = Some(template.to_owned());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_started_while_the_database_is_down_serves_what_redis_holds() {
    let cluster = PgCluster::start_new();
    let store = open(&cluster.url()).await;
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    put_flag(&*store, "production", "g", bool_flag("g", true)).await;
    store
        .set_killed(&actor(), "production", "g", true)
        .await
        .unwrap();
    let base = redis().unique_prefix("flagd-warm-root");
    let template = format!("{base}:{{env}}");
    let client = reqwest::Client::new();

    // A first flagd writes the environment into Redis, and the key once it has checked it.
    let first = flagd::start(root_config(&cluster.url(), &template))
        .await
        .unwrap();
    let (status, body) = evaluate(&client, &first.url(), &key, "f").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!(true)),
        "{body}"
    );
    until("the environment and the key in Redis", || async {
        redis_len(&format!("{base}:production:features")).await == 2
            && redis_len(&format!("{base}:$flagd:sdk_keys")).await == 1
    })
    .await;
    first.shutdown().await.unwrap();

    // The database goes down, and a flagd starts.
    drop(store);
    cluster.stop();
    let second = flagd::start(root_config(&cluster.url(), &template))
        .await
        .unwrap();
    let response = client
        .get(format!("{}/readyz", second.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "stale data is served");
    let ready: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(ready["status"], "STALE", "{ready}");
    assert_eq!(ready["source"], "redis", "{ready}");
    assert_eq!(
        ready["environments"]["production"]["stale"], true,
        "{ready}"
    );
    assert_eq!(ready["environments"]["production"]["flags"], 2, "{ready}");
    let (status, body) = evaluate(&client, &second.url(), &key, "f").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!(true)),
        "{body}"
    );
    // The kill was written in the flag, as SDKs get it.
    let (status, body) = evaluate(&client, &second.url(), &key, "g").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!(false)),
        "{body}"
    );
    assert_eq!(body["reason"]["kind"], "OFF", "{body}");
    // A key never seen cannot be checked while the database is down.
    let unseen = "flagd-sdk-0000000000000000000000000000000000000000000";
    assert_eq!(evaluate(&client, &second.url(), unseen, "f").await.0, 503);
    let mut stream = Stream::open(&client, &second.url(), &key).await;
    let put = stream.next().await;
    assert_eq!(put.event, "put");
    assert_eq!(
        put.data["data"]["flags"]["f"]["fallthrough"]["variation"],
        0
    );

    // The database comes back with a change: the data from it replaces Redis's, and streams
    // start again from it.
    cluster.start();
    let writer = open(&cluster.url()).await;
    put_flag(&*writer, "production", "f", bool_flag("f", false)).await;
    until("SERVING from the database", || async {
        let ready = readyz(&client, &second.url()).await;
        ready["status"] == "SERVING" && ready["environments"]["production"]["stale"] == false
    })
    .await;
    // A put (the reset), then, if the change came after the load, the change as a patch.
    let mut put = false;
    loop {
        let event = stream.next().await;
        put |= event.event == "put";
        let f = match event.event.as_str() {
            "put" => event.data["data"]["flags"]["f"].clone(),
            "patch" if event.data["path"] == "/flags/f" => event.data["data"].clone(),
            _ => continue,
        };
        if f["fallthrough"]["variation"] == 1 {
            break;
        }
    }
    assert!(put, "streams start again from the database's data");
    let (_, body) = evaluate(&client, &second.url(), &key, "f").await;
    assert_eq!(body["value"], false, "{body}");
    second.shutdown().await.unwrap();
}

fn file_config(file: std::path::PathBuf, prefix: &str) -> flagd::Config {
    let mut config = flagd::Config::for_tests(vec![file]);
    config.redis.url = Some(redis().url().to_owned());
    config.redis.prefix = Some(prefix.to_owned());
    config
}

fn flags(value: bool) -> String {
    json!({"flags": {"f": {"on": true, "variations": [false, true],
        "fallthrough": {"variation": u8::from(value)}}}})
    .to_string()
}

async fn native(client: &reqwest::Client, base: &str, flag: &str) -> (u16, Value) {
    let response = client
        .post(format!("{base}/v1/evaluate/{flag}"))
        .header("content-type", "application/json")
        .body(json!({"context": {"kind": "user", "key": "u"}}).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_without_its_file_serves_what_redis_holds_until_the_file_appears() {
    let dir = FlagDir::new();
    let prefix = redis().unique_prefix("flagd-warm-file");
    let client = reqwest::Client::new();
    let written = dir.write("written.json", &flags(true));
    let first = flagd::start(file_config(written, &prefix)).await.unwrap();
    until("the data in Redis", || async {
        redis_len(&format!("{prefix}:features")).await == 1
    })
    .await;
    first.shutdown().await.unwrap();

    let mut config = file_config(dir.path("flags.json"), &prefix);
    config.allow_missing = true;
    let second = flagd::start(config).await.unwrap();
    let ready = readyz(&client, &second.url()).await;
    assert_eq!(ready["status"], "STALE", "{ready}");
    assert_eq!(ready["stale"], true, "{ready}");
    let (status, body) = native(&client, &second.url(), "f").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!(true)),
        "{body}"
    );

    dir.write_atomic("flags.json", &flags(false));
    until("the file's data", || async {
        native(&client, &second.url(), "f").await.1["value"] == false
    })
    .await;
    let ready = readyz(&client, &second.url()).await;
    assert_eq!(ready["status"], "SERVING", "{ready}");
    assert_eq!(ready["stale"], false, "{ready}");
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_whose_upstream_is_gone_at_start_serves_what_redis_holds() {
    let dir = FlagDir::new();
    let file = dir.write("flags.json", &flags(true));
    let key = "sdk-warm-proxy";
    let mut root_config = flagd::Config::for_tests(vec![file]);
    root_config.sdk_keys = vec![key.to_owned()];
    let root = flagd::start(root_config).await.unwrap();
    let prefix = redis().unique_prefix("flagd-warm-proxy");
    let proxy_config = |upstream: String| {
        let mut config = flagd::Config::for_tests(Vec::new());
        config.upstream.url = Some(upstream);
        config.upstream.fetch_timeout_ms = 300;
        config.sdk_keys = vec![key.to_owned()];
        config.redis.url = Some(redis().url().to_owned());
        config.redis.prefix = Some(prefix.clone());
        config
    };
    let proxy = flagd::start(proxy_config(root.url())).await.unwrap();
    until("the data in Redis", || async {
        redis_len(&format!("{prefix}:features")).await == 1
    })
    .await;
    let upstream = root.url();
    proxy.shutdown().await.unwrap();
    root.shutdown().await.unwrap();

    let proxy = flagd::start(proxy_config(upstream)).await.unwrap();
    let client = reqwest::Client::new();
    let ready = readyz(&client, &proxy.url()).await;
    assert_eq!(ready["status"], "STALE", "{ready}");
    let (status, body) = evaluate(&client, &proxy.url(), key, "f").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!(true)),
        "{body}"
    );
    proxy.shutdown().await.unwrap();
}
