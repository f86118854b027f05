//! flagd writing what it serves into Redis in LaunchDarkly's layout: every flag and segment as
//! served, kills and overrides included, written whole at first, then item by item as the data
//! changes (deletions as tombstones), and whole again after Redis lost it.

#![allow(clippy::unwrap_used)]

mod common;
mod root_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::FlagDir;
use flags_store::{AdminStore, MemoryStore, OverrideKey};
use flags_test_support::{RedisServer, redis};
use root_support::*;
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
    let ready = get_json(&format!("{base}/readyz")).await;
    assert_eq!(ready["redis"]["status"], "OK", "{ready}");
    assert!(ready["redis"]["environments"]["default"]["lastWriteAt"].is_string());

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
    let metrics = get_text(&format!("{base}/metrics")).await;
    // The first write, the edit and the rewrite, at least (a reload that changes nothing
    // writes nothing).
    assert!(
        counter(&metrics, "flagd_redis_writes_total") >= 3,
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_serves_on_when_redis_does_not_answer() {
    let dir = FlagDir::new();
    let file = dir.write("flags.json", &flags(true));
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = common::test_config(vec![file]);
    config.redis.url = Some(format!("redis://127.0.0.1:{port}"));
    let server = flagd::start(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());

    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready = get_json(&format!("{base}/readyz")).await;
        if ready["redis"]["status"] == "DOWN" {
            break ready;
        }
        assert!(Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready["status"], "SERVING", "{ready}");
    assert!(
        ready["redis"]["environments"]["default"]["lastError"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{ready}"
    );
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/evaluate/checkout"))
        .header("Content-Type", "application/json")
        .body(r#"{"context":{"kind":"user","key":"u"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let metrics = get_text(&format!("{base}/metrics")).await;
    assert!(
        !metrics.contains("flagd_redis_write_errors_total 0\n"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_written_item_by_item_and_deletions_as_tombstones() {
    let dir = FlagDir::new();
    let file = dir.write("flags.json", &flags(true));
    let prefix = prefix();
    let mut config = common::test_config(vec![file]);
    config.redis.url = Some(redis().url().to_owned());
    config.redis.prefix = Some(prefix.clone());
    let server = flagd::start(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let features = format!("{prefix}:features");
    until_features(&prefix, "the first write", |f| f.len() == 2).await;

    // A field flagd never wrote: a whole rewrite would drop it, an item write leaves it.
    let planted = r#"{"key":"planted","version":1,"on":false,"variations":[true]}"#;
    redis::cmd("HSET")
        .arg(&features)
        .arg("planted")
        .arg(planted)
        .query_async::<()>(&mut connection().await)
        .await
        .unwrap();
    dir.write_atomic("flags.json", &flags(false));
    until_features(&prefix, "the edit", |f| f["checkout"]["on"] == json!(false)).await;
    let held = hash(&features).await;
    assert_eq!(held["planted"]["key"], "planted", "{held:#?}");
    // Exactly as served.
    let served = get_json(&format!("{base}/sdk/latest-all")).await;
    assert_eq!(held["checkout"], served["flags"]["checkout"]);
    assert_eq!(held["banner"], served["flags"]["banner"]);

    // A deleted flag becomes LaunchDarkly's tombstone, at a version above the flag's.
    let before = held["banner"]["version"].as_u64().unwrap();
    let mut without_banner: Value = serde_json::from_str(&flags(false)).unwrap();
    without_banner["flags"]
        .as_object_mut()
        .unwrap()
        .remove("banner");
    dir.write_atomic("flags.json", &without_banner.to_string());
    until_features(&prefix, "the deletion", |f| f["banner"]["deleted"] == true).await;
    let tombstone = &hash(&features).await["banner"];
    assert_eq!(tombstone["key"], "$deleted", "{tombstone}");
    assert!(
        tombstone["version"].as_u64().unwrap() > before,
        "{tombstone}"
    );

    let metrics = get_text(&format!("{base}/metrics")).await;
    assert_eq!(
        counter(&metrics, "flagd_redis_rewrites_total"),
        1,
        "{metrics}"
    );
    assert!(
        counter(&metrics, "flagd_redis_writes_total") >= 3,
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_overrides_reach_redis_as_sdks_receive_them() {
    let store = Arc::new(MemoryStore::new());
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    put_flag(&*store, "production", "g", bool_flag("g", true)).await;
    let base_prefix = prefix();
    let mut config = flagd::Config::for_tests(Vec::new());
    config.redis.url = Some(redis().url().to_owned());
    config.redis.prefix = Some(format!("{base_prefix}:{{env}}"));
    let server = flagd::start_with_store(config, store.clone())
        .await
        .unwrap();
    let base = server.url();
    let prefix = format!("{base_prefix}:production");
    until_features(&prefix, "the first write", |f| f.len() == 2).await;

    store
        .set_killed(&actor(), "production", "f", true)
        .await
        .unwrap();
    let pinned = OverrideKey {
        flag_key: "g".to_owned(),
        context_kind: "user".to_owned(),
        context_key: "pinned".to_owned(),
    };
    store
        .set_override(&actor(), "production", &pinned, 1)
        .await
        .unwrap();
    let features = format!("{prefix}:features");
    until("the kill and the override in Redis", || async {
        let f = hash(&features).await;
        f["f"]["on"] == false && f["g"].to_string().contains("pinned")
    })
    .await;
    // Exactly what the SDK endpoint serves, which is what streams send.
    let served: Value = serde_json::from_slice(
        &reqwest::Client::new()
            .get(format!("{base}/sdk/latest-all"))
            .header("authorization", &key)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let held = hash(&features).await;
    assert_eq!(held["f"], served["flags"]["f"]);
    assert_eq!(held["g"], served["flags"]["g"]);
    let metrics = get_text(&format!("{base}/metrics")).await;
    assert_eq!(
        counter(&metrics, "flagd_redis_rewrites_total"),
        1,
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

/// The value of an unlabelled counter in an OpenMetrics text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

async fn get_text(url: &str) -> String {
    let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn get_json(url: &str) -> Value {
    serde_json::from_str(&get_text(url).await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_restarts_empty_is_written_again_without_a_change() {
    let mut own = RedisServer::start_new();
    let dir = FlagDir::new();
    let file = dir.write("flags.json", &flags(true));
    let mut config = common::test_config(vec![file]);
    config.redis.url = Some(own.url());
    let server = flagd::start(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let status = || async { get_json(&format!("{base}/readyz")).await["redis"]["status"].clone() };
    let until = |want: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = status().await;
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis status {now}, waiting for {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    until("OK").await;

    own.stop();
    until("DOWN").await;
    assert_eq!(
        get_json(&format!("{base}/readyz")).await["status"],
        "SERVING"
    );

    // Back, empty, on the same port; the flag file has not changed.
    own.start();
    until("OK").await;
    let features: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg("launchdarkly:features")
        .query_async(
            &mut redis::Client::open(own.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        features.keys().collect::<Vec<_>>(),
        ["banner", "checkout"],
        "written again in full"
    );
    server.shutdown().await.unwrap();
}

/// Writes `vip` generation 3 into the Redis at `url` under `prefix` as LaunchDarkly's Relay
/// would: `alice` included, `bob` excluded, synchronized now.
async fn write_vip_members(url: &str, prefix: &str) {
    use flags_store_redis::{MemberOp, RedisBigSegments};
    let writer = RedisBigSegments::connect(url, prefix).await.unwrap();
    writer
        .apply("vip", 3, MemberOp::Include, &["alice"])
        .await
        .unwrap();
    writer
        .apply("vip", 3, MemberOp::Exclude, &["bob"])
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    writer
        .set_synchronized_on(u64::try_from(now.as_millis()).unwrap())
        .await
        .unwrap();
}

/// flagd in file mode serving `gate` (true for members of the big segment `vip`), reading big
/// segments from the Redis at `url` under `prefix`.
async fn big_segment_server(dir: &FlagDir, url: &str, prefix: &str) -> flagd::RunningServer {
    let flags = json!({
        "flags": {"gate": {"on": true, "variations": [false, true], "offVariation": 0,
            "fallthrough": {"variation": 0},
            "rules": [{"id": "r0", "variation": 1, "clauses": [{"contextKind": "user",
                "attribute": "key", "op": "segmentMatch", "values": ["vip"]}]}]}},
        // The segment's own lists are not read for a big segment.
        "segments": {"vip": {"unbounded": true, "generation": 3, "included": ["bob"]}}
    });
    let file = dir.write("flags.json", &flags.to_string());
    let mut config = common::test_config(vec![file]);
    config.redis.url = Some(url.to_owned());
    config.redis.prefix = Some(prefix.to_owned());
    flagd::start(config).await.unwrap()
}

/// `gate` for `user`: its value and reason.
async fn gate(server: &flagd::RunningServer, user: &str) -> (Value, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/evaluate/gate", server.local_addr()))
        .body(json!({"context": {"kind": "user", "key": user}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    (answer["value"].clone(), answer["reason"].clone())
}

fn member(status: &str) -> (Value, Value) {
    (
        json!(true),
        json!({"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "r0", "bigSegmentsStatus": status}),
    )
}

fn not_member(status: &str) -> (Value, Value) {
    (
        json!(false),
        json!({"kind": "FALLTHROUGH", "bigSegmentsStatus": status}),
    )
}

/// File mode with `--redis-url` evaluates big segments from Redis, written there by someone
/// else (as LaunchDarkly's Relay writes them), and says how fresh they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_evaluates_big_segments_from_redis() {
    let prefix = prefix();
    write_vip_members(redis().url(), &prefix).await;
    let dir = FlagDir::new();
    let server = big_segment_server(&dir, redis().url(), &prefix).await;
    assert_eq!(gate(&server, "alice").await, member("HEALTHY"));
    for user in ["bob", "carol"] {
        assert_eq!(gate(&server, user).await, not_member("HEALTHY"), "{user}");
    }
    server.shutdown().await.unwrap();
}

/// A Redis that does not answer when flagd starts is read once it does; meanwhile big
/// segments report `STORE_ERROR`, as an SDK's would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_reads_big_segments_from_a_redis_that_was_down_at_start() {
    let mut redis_server = RedisServer::start_new();
    redis_server.stop();
    let prefix = "relay".to_owned();
    let dir = FlagDir::new();
    let server = big_segment_server(&dir, &redis_server.url(), &prefix).await;
    assert_eq!(gate(&server, "alice").await, not_member("STORE_ERROR"));

    redis_server.start();
    write_vip_members(&redis_server.url(), &prefix).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = gate(&server, "alice").await;
        if answer == member("HEALTHY") {
            break;
        }
        assert!(Instant::now() < deadline, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await.unwrap();
}
