//! flagd writing what it serves into Redis in LaunchDarkly's layout: every flag and segment as
//! served, rewritten when the flag file changes, and written again after Redis lost it.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::FlagDir;
use flags_test_support::redis;
use serde_json::{Value, json};

fn prefix() -> String {
    redis().unique_prefix("flagd-mirror-test")
}

fn flags(on: bool) -> String {
    json!({
        "flags": {
            "checkout": {"on": on, "variations": [false, true], "fallthrough": {"variation": 1},
                "offVariation": 0, "version": 1},
            "banner": {"on": true, "variations": ["a", "b"], "fallthrough": {"variation": 0},
                "rules": [{"id": "r", "variation": 1, "clauses": [{"contextKind": "user",
                    "attribute": "key", "op": "segmentMatch", "values": ["beta"]}]}]}
        },
        "segments": {"beta": {"included": ["alice"]}}
    })
    .to_string()
}

async fn connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A hash as LaunchDarkly's SDKs read it: key → parsed item.
async fn hash(name: &str) -> BTreeMap<String, Value> {
    let raw: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(name)
        .query_async(&mut connection().await)
        .await
        .unwrap();
    raw.into_iter()
        .map(|(k, v): (String, String)| (k, serde_json::from_str(&v).unwrap()))
        .collect()
}

/// Waits until `done` holds of `{prefix}:features`, or fails after ten seconds.
async fn until_features(prefix: &str, what: &str, done: impl Fn(&BTreeMap<String, Value>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let features = hash(&format!("{prefix}:features")).await;
        if done(&features) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: Redis holds {features:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_data_is_written_to_redis_and_kept_current() {
    let dir = FlagDir::new();
    let file = dir.write("flags.json", &flags(true));
    let prefix = prefix();
    let mut config = common::test_config(vec![file]);
    config.redis.url = Some(redis().url().to_owned());
    config.redis.prefix = Some(prefix.clone());
    let server = flagd::start(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());

    until_features(&prefix, "the first write", |f| f.len() == 2).await;
    // Exactly what SDKs get from flagd's own SDK endpoint.
    let body = reqwest::get(format!("{base}/sdk/latest-all"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let served: Value = serde_json::from_slice(&body).unwrap();
    let features = hash(&format!("{prefix}:features")).await;
    for (key, item) in served["flags"].as_object().unwrap() {
        assert_eq!(&features[key], item, "flag {key}");
    }
    let segments = hash(&format!("{prefix}:segments")).await;
    assert_eq!(segments["beta"], served["segments"]["beta"]);
    let inited: bool = redis::cmd("EXISTS")
        .arg(format!("{prefix}:$inited"))
        .query_async(&mut connection().await)
        .await
        .unwrap();
    assert!(inited);

    // An edit reaches Redis.
    let before = features["checkout"]["version"].as_u64().unwrap();
    dir.write_atomic("flags.json", &flags(false));
    until_features(&prefix, "the edit", |f| f["checkout"]["on"] == json!(false)).await;
    let after = hash(&format!("{prefix}:features")).await["checkout"]["version"]
        .as_u64()
        .unwrap();
    assert!(after > before, "{before} -> {after}");

    // Redis losing the data: the next change writes everything again.
    redis::cmd("DEL")
        .arg(format!("{prefix}:features"))
        .arg(format!("{prefix}:segments"))
        .query_async::<()>(&mut connection().await)
        .await
        .unwrap();
    dir.write_atomic("flags.json", &flags(true));
    until_features(&prefix, "the rewrite", |f| {
        f.len() == 2 && f["checkout"]["on"] == json!(true)
    })
    .await;
    server.shutdown().await.unwrap();
}
