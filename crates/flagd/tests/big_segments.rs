//! Big segments end to end in root mode, over the real PostgreSQL and Redis: a million members
//! uploaded through the admin API as one streamed NDJSON body, evaluated through the native
//! API and OFREP with `bigSegmentsStatus`, the membership read back, the same sets in Redis in
//! LaunchDarkly's layout, a bad line storing nothing, the 404 and 409 answers, `?replace=true`
//! switching generations, `synchronized_on` kept fresh, and this project's SDK reading the
//! Redis copy agreeing with flagd.

#![allow(clippy::unwrap_used)]

mod root_support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flags_eval::big_segment_hash;
use flags_store::AdminStore;
use flags_test_support::{RedisServer, postgres, redis};
use root_support::*;
use serde_json::{Value, json};

const ADMIN: &str = "Bearer bigseg-admin";
const MEMBERS: usize = 1_000_000;

struct Setup {
    base: String,
    sdk_key: String,
    store: Arc<dyn AdminStore>,
    /// The Redis prefix of environment `prod`.
    prefix: String,
    client: reqwest::Client,
    redis_url: String,
    _server: flagd::RunningServer,
    _db: flags_test_support::TestDatabase,
}

async fn setup() -> Setup {
    setup_on(redis().url()).await
}

/// flagd in root mode over a new database, copying big segments into the Redis at `redis_url`.
async fn setup_on(redis_url: &str) -> Setup {
    let db = postgres().create_database();
    let store = flagd::open_database(db.url()).await.unwrap();
    let sdk_key = env_with_key(store.as_ref(), "prod").await;
    store
        .put_segment(&actor(), "prod", "big", json!({"unbounded": true}), None)
        .await
        .unwrap();
    store
        .put_segment(&actor(), "prod", "small", json!({"included": ["a"]}), None)
        .await
        .unwrap();
    put_flag(
        store.as_ref(),
        "prod",
        "f",
        json!({"on": true, "variations": [false, true], "fallthrough": {"variation": 0},
            "offVariation": 0, "rules": [{"id": "r0", "variation": 1, "clauses": [{
                "contextKind": "user", "attribute": "key", "op": "segmentMatch",
                "values": ["big"]}]}]}),
    )
    .await;
    let base_prefix = redis().unique_prefix("flagd-bigseg");
    let mut config = flagd::Config::for_tests(Vec::new());
    config.database_url = Some(db.url().to_owned());
    config.admin_key = Some("bigseg-admin".to_owned());
    config.redis.url = Some(redis_url.to_owned());
    config.redis.prefix = Some(format!("{base_prefix}:{{env}}"));
    let server = flagd::start(config).await.unwrap();
    Setup {
        base: format!("http://{}", server.local_addr()),
        sdk_key,
        store,
        prefix: format!("{base_prefix}:prod"),
        client: reqwest::Client::new(),
        redis_url: redis_url.to_owned(),
        _server: server,
        _db: db,
    }
}

impl Setup {
    async fn upload(&self, segment: &str, query: &str, body: reqwest::Body) -> (u16, Value) {
        let response = self
            .client
            .post(format!(
                "{}/api/v1/environments/prod/segments/{segment}/members{query}",
                self.base
            ))
            .header("authorization", ADMIN)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, json_of(response).await.unwrap_or(Value::Null))
    }

    async fn member(&self, context_key: &str) -> Value {
        let response = self
            .client
            .get(format!(
                "{}/api/v1/environments/prod/segments/big/members/{context_key}",
                self.base
            ))
            .header("authorization", ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        json_of(response).await.unwrap()
    }

    async fn evaluate(&self, user: &str) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/evaluate/f", self.base))
            .header("authorization", &self.sdk_key)
            .body(json!({"context": {"kind": "user", "key": user}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        json_of(response).await.unwrap()
    }

    async fn ofrep(&self, user: &str) -> Value {
        let response = self
            .client
            .post(format!("{}/ofrep/v1/evaluate/flags/f", self.base))
            .header("authorization", &self.sdk_key)
            .body(json!({"context": {"targetingKey": user}}).to_string())
            .send()
            .await
            .unwrap();
        json_of(response).await.unwrap()
    }

    /// Waits until the native API answers `user` with `value`.
    async fn until_value(&self, user: &str, value: bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self.evaluate(user).await;
            if answer["value"] == json!(value) {
                return answer;
            }
            assert!(Instant::now() < deadline, "{user}: {answer}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn redis_connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn smembers(&self, key: String) -> Vec<String> {
        let mut members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.redis_connection().await)
            .await
            .unwrap();
        members.sort();
        members
    }

    async fn redis_synchronized_on(&self) -> Option<u64> {
        let text: Option<String> = redis::cmd("GET")
            .arg(format!("{}:big_segments_synchronized_on", self.prefix))
            .query_async(&mut self.redis_connection().await)
            .await
            .unwrap();
        text.map(|t| t.parse().unwrap())
    }

    /// Counts the keys matching `pattern`.
    async fn count_keys(&self, pattern: &str) -> usize {
        let mut connection = self.redis_connection().await;
        let (mut cursor, mut count) = (0u64, 0usize);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut connection)
                .await
                .unwrap();
            count += keys.len();
            if next == 0 {
                return count;
            }
            cursor = next;
        }
    }
}

async fn json_of(response: reqwest::Response) -> Option<Value> {
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// An NDJSON body made as it is sent, `lines` lines of 10,000 at a time.
fn streamed(lines: usize, line: fn(usize) -> String) -> reqwest::Body {
    let chunks = (0..lines.div_ceil(10_000)).map(move |chunk| {
        let mut text = String::new();
        for i in chunk * 10_000..((chunk + 1) * 10_000).min(lines) {
            text.push_str(&line(i));
            text.push('\n');
        }
        Ok::<_, std::io::Error>(Bytes::from(text))
    });
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// Every tenth user is excluded, the others included.
fn million_line(i: usize) -> String {
    let op = if i % 10 == 9 { "exclude" } else { "include" };
    format!(r#"{{"op":"{op}","key":"user-{i}"}}"#)
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_members_are_uploaded_evaluated_and_mirrored() {
    let s = setup().await;
    // Served, and not configured until the first upload: the segment has no generation yet.
    let before = s.until_value("user-0", false).await;
    assert_eq!(
        before["reason"],
        json!({"kind": "FALLTHROUGH", "bigSegmentsStatus": "NOT_CONFIGURED"})
    );

    let started = Instant::now();
    let (status, report) = s.upload("big", "", streamed(MEMBERS, million_line)).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{report}");
    println!(
        "uploaded {MEMBERS} members in {took:?}: {:.0} members/s (PostgreSQL and the Redis copy)",
        MEMBERS as f64 / took.as_secs_f64()
    );
    assert_eq!(
        report,
        json!({"lines": MEMBERS, "included": 900_000, "excluded": 100_000, "removed": 0,
            "generation": 1, "replaced": false})
    );
    let stored = s.store.get_segment("prod", "big").await.unwrap();
    assert_eq!(stored.doc["generation"], 1);

    // The native API, once the segment's new generation is served.
    let included = s.until_value("user-0", true).await;
    assert_eq!(
        included,
        json!({"key": "f", "value": true, "variationIndex": 1, "reason": {"kind": "RULE_MATCH",
            "ruleIndex": 0, "ruleId": "r0", "bigSegmentsStatus": "HEALTHY"}})
    );
    assert_eq!(s.evaluate("user-999998").await["value"], true);
    for user in ["user-9", "user-999999", "stranger"] {
        let answer = s.evaluate(user).await;
        assert_eq!(
            answer["reason"],
            json!({"kind": "FALLTHROUGH", "bigSegmentsStatus": "HEALTHY"}),
            "{user}"
        );
        assert_eq!(answer["value"], false, "{user}");
    }
    // OFREP gives the same values.
    assert_eq!(s.ofrep("user-0").await["value"], true);
    assert_eq!(s.ofrep("user-9").await["value"], false);

    // The membership, read back.
    for (user, member) in [
        ("user-0", "included"),
        ("user-9", "excluded"),
        ("stranger", "none"),
    ] {
        assert_eq!(
            s.member(user).await,
            json!({"contextKey": user, "segment": "big", "generation": 1, "member": member})
        );
    }

    // The Redis copy holds the same sets, in LaunchDarkly's layout.
    let include = |user: &str| {
        format!(
            "{}:big_segment_include:{}",
            s.prefix,
            big_segment_hash(user)
        )
    };
    let exclude = |user: &str| {
        format!(
            "{}:big_segment_exclude:{}",
            s.prefix,
            big_segment_hash(user)
        )
    };
    assert_eq!(s.smembers(include("user-0")).await, ["big.g1"]);
    assert!(s.smembers(exclude("user-0")).await.is_empty());
    assert_eq!(s.smembers(exclude("user-9")).await, ["big.g1"]);
    assert!(s.smembers(include("user-9")).await.is_empty());
    assert_eq!(
        s.count_keys(&format!("{}:big_segment_include:*", s.prefix))
            .await,
        900_000
    );
    assert_eq!(
        s.count_keys(&format!("{}:big_segment_exclude:*", s.prefix))
            .await,
        100_000
    );
    let synchronized = s.redis_synchronized_on().await.unwrap();
    assert!(now_ms() - synchronized < 60_000, "{synchronized}");

    // This project's SDK over the Redis copy agrees with flagd.
    let sdk_store = flags_store_redis::RedisBigSegments::connect(redis().url(), &s.prefix)
        .await
        .unwrap();
    let client = flags_sdk::Client::builder(&s.sdk_key)
        .base_url(&s.base)
        .data_source(flags_sdk::DataSource::Streaming {
            initial_reconnect_delay: Duration::from_millis(100),
            read_timeout: Duration::from_secs(60),
        })
        .events_enabled(false)
        .big_segments(flags_sdk::BigSegmentsConfig::new(Arc::new(sdk_store)))
        .build()
        .unwrap();
    assert!(
        client
            .wait_for_initialization(Duration::from_secs(10))
            .await
    );
    for user in ["user-0", "user-9", "user-500000", "user-999999", "stranger"] {
        let context = flags_core::Context::user(user).unwrap();
        // The SDK's store answers synchronously from Redis: off the runtime's threads.
        let detail =
            tokio::task::block_in_place(|| client.bool_variation_detail(&context, "f", false));
        let reason = serde_json::to_value(flags_core::ReasonJson {
            reason: &detail.reason,
            big_segments_status: detail.big_segments_status,
        })
        .unwrap();
        let flagd = s.evaluate(user).await;
        assert_eq!(json!(detail.value), flagd["value"], "{user}");
        assert_eq!(reason, flagd["reason"], "{user}");
    }
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_store_nothing_and_wrong_segments_are_refused() {
    let s = setup().await;
    let body = "{\"op\":\"include\",\"key\":\"early\"}\n\n{\"op\":\"add\",\"key\":\"x\"}\n";
    let (status, problem) = s.upload("big", "", body.into()).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        problem["detail"],
        "line 3: unknown op \"add\"; use include, exclude or remove"
    );
    for (body, detail) in [
        ("{\"op\":\"include\"}", "line 1: \"key\" is missing"),
        (
            "\n{\"op\":\"include\",\"key\":\"a\"}\nnot json",
            "line 3: not an object like",
        ),
    ] {
        let (status, problem) = s.upload("big", "", body.into()).await;
        assert_eq!(status, 400, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().starts_with(detail),
            "{problem}"
        );
    }
    // Nothing was stored, and the segment has no generation yet.
    assert_eq!(s.member("early").await["member"], "none");
    assert!(
        s.store
            .get_segment("prod", "big")
            .await
            .unwrap()
            .doc
            .get("generation")
            .is_none()
    );

    let one = "{\"op\":\"include\",\"key\":\"a\"}";
    let (status, problem) = s.upload("missing", "", one.into()).await;
    assert_eq!(status, 404, "{problem}");
    let (status, problem) = s.upload("small", "", one.into()).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("is not a big segment"),
        "{problem}"
    );
    let (status, problem) = s.upload("big", "?replace=maybe", one.into()).await;
    assert_eq!(status, 400, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_switches_generation_and_synchronized_on_stays_fresh() {
    let s = setup().await;
    let first = "{\"op\":\"include\",\"key\":\"old-1\"}\n{\"op\":\"include\",\"key\":\"old-2\"}\n";
    let (status, report) = s.upload("big", "", first.into()).await;
    assert_eq!(status, 200, "{report}");
    s.until_value("old-1", true).await;

    // The same upload again changes nothing.
    let (status, report) = s.upload("big", "", first.into()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["generation"], 1);

    let (status, report) = s
        .upload(
            "big",
            "?replace=true",
            "{\"op\":\"include\",\"key\":\"new-1\"}".into(),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"lines": 1, "included": 1, "excluded": 0, "removed": 0, "generation": 2,
            "replaced": true})
    );
    assert_eq!(
        s.store.get_segment("prod", "big").await.unwrap().doc["generation"],
        2
    );
    s.until_value("new-1", true).await;
    s.until_value("old-1", false).await;
    assert_eq!(
        s.member("new-1").await,
        json!({"contextKey": "new-1", "segment": "big", "generation": 2, "member": "included"})
    );
    assert_eq!(s.member("old-2").await["member"], "none");
    let members = s.store.big_segment_members().unwrap();
    let old = members
        .memberships("prod", &[big_segment_hash("old-2")])
        .await
        .unwrap();
    assert!(
        old.is_empty(),
        "the replaced generation is deleted: {old:?}"
    );
    let include = format!(
        "{}:big_segment_include:{}",
        s.prefix,
        big_segment_hash("new-1")
    );
    assert_eq!(s.smembers(include).await, ["big.g2"]);

    // A store left alone for ten minutes is stale; flagd writes the time again on its own
    // (every 500 ms in tests), in PostgreSQL and in Redis, and answers turn healthy.
    let long_ago = now_ms() - 600_000;
    members.set_synchronized_on("prod", long_ago).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let in_store = members.synchronized_on("prod").await.unwrap().unwrap();
        let in_redis = s.redis_synchronized_on().await.unwrap();
        let answer = s.evaluate("new-1").await;
        if in_store > long_ago
            && now_ms() - in_redis < 5_000
            && answer["reason"]["bigSegmentsStatus"] == "HEALTHY"
        {
            break;
        }
        assert!(Instant::now() < deadline, "{in_store} {in_redis} {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_copy_is_built_again_after_it_missed_an_upload_or_redis_lost_it() {
    let mut redis_server = RedisServer::start_new();
    let s = setup_on(&redis_server.url()).await;
    let include = |key: &str| format!("{}:big_segment_include:{}", s.prefix, big_segment_hash(key));
    let exclude = |key: &str| format!("{}:big_segment_exclude:{}", s.prefix, big_segment_hash(key));
    let first = "{\"op\":\"include\",\"key\":\"a\"}\n{\"op\":\"include\",\"key\":\"b\"}\n\
                 {\"op\":\"exclude\",\"key\":\"c\"}\n";
    let (status, report) = s.upload("big", "", first.into()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(s.smembers(include("a")).await, ["big.g1"]);

    // Redis goes away; an upload made meanwhile is stored, not copied, and flagd answers from
    // the store.
    redis_server.stop();
    let second = "{\"op\":\"remove\",\"key\":\"a\"}\n{\"op\":\"include\",\"key\":\"d\"}\n";
    let (status, report) = s.upload("big", "", second.into()).await;
    assert_eq!(status, 200, "{report}");
    s.until_value("d", true).await;
    s.until_value("a", false).await;

    // Redis comes back empty (it keeps nothing on disk). Within a few rounds of the refresh
    // (every 500 ms in tests) it holds what the store holds, and `synchronized_on` again.
    redis_server.start();
    let expected = |members: [Vec<String>; 5], synchronized: Option<u64>| {
        members
            == [
                Vec::<String>::new(),
                vec!["big.g1".to_owned()],
                vec!["big.g1".to_owned()],
                vec!["big.g1".to_owned()],
                Vec::new(),
            ]
            && synchronized.is_some_and(|at| now_ms() - at < 5_000)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let members = [
            s.smembers(include("a")).await,
            s.smembers(include("b")).await,
            s.smembers(exclude("c")).await,
            s.smembers(include("d")).await,
            s.smembers(include("c")).await,
        ];
        let synchronized = s.redis_synchronized_on().await;
        if expected(members.clone(), synchronized) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{members:?} synchronized on {synchronized:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A membership the store does not list goes too, once Redis has lost `synchronized_on`
    // (written by someone else here, as a stand-in for a copy that drifted).
    let mut connection = s.redis_connection().await;
    redis::cmd("SADD")
        .arg(include("zz"))
        .arg("big.g1")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg(format!("{}:big_segments_synchronized_on", s.prefix))
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = s.smembers(include("zz")).await;
        let synchronized = s.redis_synchronized_on().await;
        if left.is_empty() && synchronized.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "{left:?} {synchronized:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.smembers(include("d")).await, ["big.g1"]);
}
