//! Every client gets the same answer: a root-mode flagd over real PostgreSQL, with killed,
//! overridden and ordinary flags, asked through each of its doors.
//!
//! For every flag and context the test compares flagd's native API (`/v1/evaluate/{flag}`),
//! OFREP (`/ofrep/v1/evaluate/flags/{key}`), and what a LaunchDarkly SDK computes: the flag data
//! of the stream (`/all`: the `put`, then every `patch` and `delete` applied as an SDK applies
//! them, a newer version replacing an older one) and of a poll (`/sdk/latest-all`), each
//! evaluated with flags-eval's plain evaluator, which knows nothing of kills or overrides, and
//! this project's Rust SDK following the stream and polling, each a real client. Value
//! and variation must be equal everywhere, and the reason kind too where there is one. The
//! answers that matter are also checked against what they must be, so that the clients cannot
//! agree on a wrong one. Kills and overrides are set and changed through the admin API, and the
//! comparison runs again after each round of changes.

#![allow(clippy::unwrap_used)]

mod root_support;

use std::collections::BTreeMap;

use flags_core::Context;
use flags_eval::CompiledData;
use flags_test_support::postgres;
use root_support::*;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "same-answer-admin";

/// A flag of three string variations: `fallthrough` by default, `off` (index 2) when off.
fn flag(key: &str, fields: Value) -> Value {
    let mut doc = json!({
        "key": key, "on": true, "salt": key,
        "variations": ["fallthrough", "targeted", "off"], "offVariation": 2,
        "fallthrough": {"variation": 0}
    });
    for (field, value) in fields.as_object().unwrap() {
        doc[field] = value.clone();
    }
    doc
}

fn flags() -> Vec<(&'static str, Value)> {
    let targeted = json!({
        "targets": [{"values": ["alice", "carol"], "variation": 1}],
        "contextTargets": [
            {"contextKind": "org", "values": ["acme"], "variation": 1},
            {"contextKind": "user", "values": [], "variation": 1}
        ],
        "rules": [{"id": "fr", "variation": 2, "clauses": [
            {"attribute": "country", "op": "in", "values": ["FR"]}]}]
    });
    vec![
        ("ordinary", flag("ordinary", targeted.clone())),
        ("overridden", flag("overridden", targeted.clone())),
        ("killed", flag("killed", targeted.clone())),
        (
            "killed-without-off-variation",
            json!({"key": "killed-without-off-variation", "on": true, "salt": "k",
                "variations": [true, false], "fallthrough": {"variation": 0}}),
        ),
        (
            "killed-and-overridden",
            flag("killed-and-overridden", json!({})),
        ),
        // Serves `targeted` to everyone but `blocked`.
        (
            "gate",
            flag(
                "gate",
                json!({"fallthrough": {"variation": 1},
                    "targets": [{"values": ["blocked"], "variation": 0}]}),
            ),
        ),
        (
            "behind-gate",
            flag(
                "behind-gate",
                json!({"prerequisites": [{"key": "gate", "variation": 1}]}),
            ),
        ),
        (
            "behind-killed",
            flag(
                "behind-killed",
                json!({"prerequisites": [{"key": "killed", "variation": 0}]}),
            ),
        ),
    ]
}

fn contexts() -> Vec<Value> {
    vec![
        json!({"kind": "user", "key": "alice"}),
        json!({"kind": "user", "key": "bob", "country": "FR"}),
        json!({"kind": "user", "key": "carol"}),
        json!({"kind": "user", "key": "dave"}),
        json!({"kind": "user", "key": "blocked"}),
        json!({"kind": "org", "key": "acme"}),
        json!({"kind": "org", "key": "initech"}),
        json!({"kind": "device", "key": "d1"}),
        json!({"kind": "multi", "user": {"key": "dave"}, "org": {"key": "acme"}}),
        json!({"kind": "multi", "user": {"key": "alice"}, "org": {"key": "initech"}}),
        json!({"kind": "multi", "org": {"key": "initech"}, "user": {"key": "bob"}}),
        json!({"kind": "multi", "user": {"key": "carol"}, "device": {"key": "d1"}}),
    ]
}

/// One round of operations-layer changes through the admin API: (method, path under the
/// environment, body).
type Round = Vec<(reqwest::Method, String, Value)>;

fn pin(
    flag: &str,
    kind: &str,
    key: &str,
    variation: Option<usize>,
) -> (reqwest::Method, String, Value) {
    let path = format!("/flags/{flag}/overrides/{kind}/{key}");
    match variation {
        Some(v) => (reqwest::Method::PUT, path, json!({"variation": v})),
        None => (reqwest::Method::DELETE, path, Value::Null),
    }
}

fn kill(flag: &str, killed: bool) -> (reqwest::Method, String, Value) {
    let method = if killed {
        reqwest::Method::PUT
    } else {
        reqwest::Method::DELETE
    };
    (method, format!("/flags/{flag}/kill"), json!({}))
}

/// The answers that must come out of a round, whichever client is asked: (flag, context index,
/// variation index, reason kind).
type Expected = Vec<(&'static str, usize, Option<usize>, &'static str)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_the_same_answer_for_killed_overridden_and_ordinary_flags() {
    let db = postgres().create_database();
    let store = flagd::open_database(db.url()).await.unwrap();
    let sdk = env_with_key(&*store, "production").await;
    for (key, doc) in flags() {
        put_flag(&*store, "production", key, doc).await;
    }
    let mut config = flagd::Config::for_tests(Vec::new());
    config.database_url = Some(db.url().to_owned());
    config.admin_key = Some(ADMIN_KEY.to_owned());
    let server = flagd::start(config).await.unwrap();
    let client = Client {
        http: reqwest::Client::new(),
        base: server.url(),
        sdk,
    };
    let mut stream = SdkStream::open(&client).await;
    let rust_sdks = rust_sdks(&client).await;
    client.compare_all(&stream, &rust_sdks).await;

    let rounds: Vec<(Round, Expected)> = vec![
        (
            vec![
                kill("killed", true),
                kill("killed-without-off-variation", true),
                kill("killed-and-overridden", true),
                pin("killed-and-overridden", "user", "alice", Some(1)),
                // Overrides beat the flag's own targets and rules, for users and other kinds.
                pin("overridden", "user", "bob", Some(1)),
                pin("overridden", "user", "alice", Some(0)),
                pin("overridden", "org", "initech", Some(2)),
                pin("overridden", "device", "d1", Some(1)),
                // An override of the flag a prerequisite names changes what it serves...
                pin("gate", "user", "dave", Some(0)),
                // ... but comes after the flag's own prerequisites.
                pin("behind-gate", "user", "blocked", Some(1)),
            ],
            vec![
                ("killed", 0, Some(2), "OFF"),
                ("killed", 1, Some(2), "OFF"),
                ("killed-without-off-variation", 3, None, "OFF"),
                ("killed-and-overridden", 0, Some(2), "OFF"),
                ("behind-killed", 3, Some(2), "PREREQUISITE_FAILED"),
                ("overridden", 1, Some(1), "TARGET_MATCH"),
                ("overridden", 0, Some(0), "TARGET_MATCH"),
                ("overridden", 2, Some(1), "TARGET_MATCH"),
                ("overridden", 6, Some(2), "TARGET_MATCH"),
                ("overridden", 7, Some(1), "TARGET_MATCH"),
                // Of a multi-kind context: an override of any kind before the flag's targets.
                ("overridden", 9, Some(2), "TARGET_MATCH"),
                ("overridden", 10, Some(2), "TARGET_MATCH"),
                ("overridden", 8, Some(1), "TARGET_MATCH"),
                ("behind-gate", 3, Some(2), "PREREQUISITE_FAILED"),
                ("behind-gate", 4, Some(2), "PREREQUISITE_FAILED"),
                ("behind-gate", 2, Some(0), "FALLTHROUGH"),
                ("ordinary", 0, Some(1), "TARGET_MATCH"),
                ("ordinary", 1, Some(2), "RULE_MATCH"),
                ("ordinary", 3, Some(0), "FALLTHROUGH"),
            ],
        ),
        (
            vec![
                kill("killed", false),
                kill("killed-and-overridden", false),
                pin("overridden", "user", "bob", None),
                pin("overridden", "user", "alice", Some(2)),
                pin("gate", "user", "dave", None),
            ],
            vec![
                ("killed", 0, Some(1), "TARGET_MATCH"),
                ("killed-and-overridden", 0, Some(1), "TARGET_MATCH"),
                ("killed-and-overridden", 3, Some(0), "FALLTHROUGH"),
                ("behind-killed", 3, Some(0), "FALLTHROUGH"),
                ("overridden", 1, Some(2), "RULE_MATCH"),
                ("overridden", 0, Some(2), "TARGET_MATCH"),
                ("behind-gate", 3, Some(0), "FALLTHROUGH"),
                ("killed-without-off-variation", 3, None, "OFF"),
            ],
        ),
    ];
    for (number, (round, expected)) in rounds.into_iter().enumerate() {
        let before = stream.versions();
        for (method, path, body) in &round {
            client.admin(method.clone(), path, body).await;
        }
        // flagd applies changes in commit order, so once a write made after the round is
        // served, the whole round is.
        let marker = format!("round-{number}");
        put_flag(
            &*store,
            "production",
            "marker",
            flag("marker", json!({"salt": marker})),
        )
        .await;
        until("the round to be served", || async {
            client.latest_all().await["flags"]["marker"]["salt"] == marker.as_str()
        })
        .await;
        // The stream carries each change as a newer version of its flag, as SDKs require.
        let latest = client.latest_all().await;
        while stream.data() != latest {
            stream.next().await;
        }
        for (method, path, _) in &round {
            let flag = path.split('/').nth(2).unwrap();
            assert!(
                stream.versions()[flag] > before[flag],
                "{method} {path} did not raise the served version of {flag}"
            );
        }
        for (who, sdk) in &rust_sdks {
            until(
                &format!("the Rust SDK ({who}) to hold what is served"),
                || async {
                    let served = client.latest_all().await;
                    rust_sdk_versions(sdk) == served_versions(&served)
                },
            )
            .await;
        }
        let answers = client.compare_all(&stream, &rust_sdks).await;
        for (flag, context, variation, kind) in expected {
            let answer = &answers[&(flag, context)];
            assert_eq!(
                (
                    answer["variationIndex"].as_u64().map(|v| v as usize),
                    answer["reason"]["kind"].as_str()
                ),
                (variation, Some(kind)),
                "{flag} for {}: {answer}",
                contexts()[context]
            );
        }
    }

    // The overrides travel as targets placed first, in the form every SDK reads alike.
    let served = &client.latest_all().await["flags"]["overridden"];
    assert_eq!(
        served["contextTargets"],
        json!([
            {"contextKind": "device", "values": ["d1"], "variation": 1},
            {"contextKind": "org", "values": ["initech"], "variation": 2},
            {"contextKind": "user", "values": [], "variation": 2},
            {"contextKind": "org", "values": ["acme"], "variation": 1},
            {"contextKind": "user", "values": [], "variation": 1}
        ]),
        "{served}"
    );
    assert_eq!(
        served["targets"],
        json!([
            {"values": ["alice"], "variation": 2},
            {"values": ["carol"], "variation": 1}
        ]),
        "{served}"
    );
    server.shutdown().await.unwrap();
}

/// flagd's HTTP doors, with an SDK key.
struct Client {
    http: reqwest::Client,
    base: String,
    sdk: String,
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.sdk)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
        )
    }

    async fn latest_all(&self) -> Value {
        let response = self
            .http
            .get(format!("{}/sdk/latest-all", self.base))
            .header("authorization", &self.sdk)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: &Value) {
        let mut request = self
            .http
            .request(
                method.clone(),
                format!("{}/api/v1/environments/production{path}", self.base),
            )
            .header("authorization", format!("Bearer {ADMIN_KEY}"));
        if !body.is_null() {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{method} {path}: {:?}",
            response.status()
        );
    }

    /// Asks every door about every flag and context and fails on the first disagreement;
    /// returns the native answers by (flag, context index).
    async fn compare_all(
        &self,
        stream: &SdkStream,
        rust_sdks: &[(&str, flags_sdk::Client)],
    ) -> BTreeMap<(&'static str, usize), Value> {
        let streamed = compile(&stream.data());
        let polled = compile(&self.latest_all().await);
        let mut answers = BTreeMap::new();
        for (flag, _) in flags() {
            for (index, context) in contexts().iter().enumerate() {
                let (status, native) = self
                    .post(&format!("/v1/evaluate/{flag}"), json!({"context": context}))
                    .await;
                assert_eq!(status, 200, "{native}");
                let said = |who: &str, answer: &Value| {
                    format!("{flag} for {context}: native {native}, {who} {answer}")
                };
                for (who, data) in [("stream", &streamed), ("poll", &polled)] {
                    let sdk = sdk_answer(data, flag, context);
                    assert_eq!(sdk["value"], native["value"], "{}", said(who, &sdk));
                    assert_eq!(
                        sdk["variationIndex"],
                        native["variationIndex"],
                        "{}",
                        said(who, &sdk)
                    );
                    assert_eq!(
                        sdk["reason"]["kind"],
                        native["reason"]["kind"],
                        "{}",
                        said(who, &sdk)
                    );
                }
                let sdk_context = Context::from_json(context).unwrap();
                for (who, sdk) in rust_sdks {
                    let detail = sdk.json_variation_detail(&sdk_context, flag, Value::Null);
                    let answer = json!({
                        "value": detail.value,
                        "variationIndex": detail.variation_index,
                        "reason": {"kind": detail.reason.kind_str()},
                    });
                    let who = format!("Rust SDK ({who})");
                    assert_eq!(answer["value"], native["value"], "{}", said(&who, &answer));
                    assert_eq!(
                        answer["variationIndex"],
                        native["variationIndex"],
                        "{}",
                        said(&who, &answer)
                    );
                    assert_eq!(
                        answer["reason"]["kind"],
                        native["reason"]["kind"],
                        "{}",
                        said(&who, &answer)
                    );
                }
                let (status, ofrep) = self
                    .post(
                        &format!("/ofrep/v1/evaluate/flags/{flag}"),
                        json!({"context": ofrep_context(context)}),
                    )
                    .await;
                assert_eq!(status, 200, "{}", said("OFREP", &ofrep));
                let variant = native["variationIndex"]
                    .as_u64()
                    .map(|v| json!(v.to_string()));
                assert_eq!(
                    (&ofrep["value"], &ofrep["variant"]),
                    (&native["value"], &variant.unwrap_or(Value::Null)),
                    "{}",
                    said("OFREP", &ofrep)
                );
                // These flags have no rollouts, so no answer is a split.
                let reasons: &[&str] = match native["reason"]["kind"].as_str().unwrap() {
                    "OFF" => &["DISABLED"],
                    "TARGET_MATCH" | "RULE_MATCH" | "PREREQUISITE_FAILED" => &["TARGETING_MATCH"],
                    "FALLTHROUGH" => &["STATIC", "DEFAULT"],
                    _ => &["ERROR"],
                };
                let reason = ofrep["reason"].as_str().unwrap_or_default();
                assert!(reasons.contains(&reason), "{}", said("OFREP", &ofrep));
                answers.insert((flag, index), native);
            }
        }
        answers
    }
}

/// The OpenFeature form of a LaunchDarkly context: OFREP reads a context with a `kind` as
/// LaunchDarkly JSON, its `targetingKey` being the key.
fn ofrep_context(context: &Value) -> Value {
    if context["kind"] == "multi" {
        return context.clone();
    }
    let mut ofrep = context.clone();
    let key = ofrep.as_object_mut().unwrap().remove("key").unwrap();
    ofrep["targetingKey"] = key;
    ofrep
}

/// This project's SDK, following the stream and polling, each initialised.
async fn rust_sdks(client: &Client) -> Vec<(&'static str, flags_sdk::Client)> {
    let mut sdks = Vec::new();
    for (who, source) in [
        ("stream", flags_sdk::DataSource::streaming()),
        (
            "poll",
            flags_sdk::DataSource::polling(std::time::Duration::from_millis(50)),
        ),
    ] {
        let sdk = flags_sdk::Client::builder(&client.sdk)
            .base_url(&client.base)
            .data_source(source)
            .build()
            .unwrap();
        assert!(
            sdk.wait_for_initialization(std::time::Duration::from_secs(10))
                .await,
            "the Rust SDK ({who}) did not initialise"
        );
        sdks.push((who, sdk));
    }
    sdks
}

/// The version of each flag a Rust SDK client holds.
fn rust_sdk_versions(sdk: &flags_sdk::Client) -> BTreeMap<String, u64> {
    let anyone = Context::user("anyone").unwrap();
    let state = sdk
        .all_flags_state(&anyone, flags_sdk::FlagsStateOptions::default())
        .to_json();
    state["$flagsState"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, flag)| (key.clone(), flag["version"].as_u64().unwrap()))
        .collect()
}

/// The version of each flag in a `latest-all` body.
fn served_versions(served: &Value) -> BTreeMap<String, u64> {
    served["flags"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, flag)| (key.clone(), flag["version"].as_u64().unwrap()))
        .collect()
}

fn compile(data: &Value) -> CompiledData {
    CompiledData::from_json_str(&data.to_string()).unwrap()
}

/// What an SDK holding `data` answers: the plain engine, which knows no kill set or override.
fn sdk_answer(data: &CompiledData, flag: &str, context: &Value) -> Value {
    let context = Context::from_json(context).unwrap();
    serde_json::to_value(flags_eval::evaluate(data, flag, &context)).unwrap()
}

/// The flag data an SDK following `/all` holds: the `put`, then each `patch` or `delete` that
/// is newer than what it holds (SDKs ignore the others).
struct SdkStream {
    stream: Stream,
    items: BTreeMap<(String, String), (u64, Option<Value>)>,
}

impl SdkStream {
    async fn open(client: &Client) -> SdkStream {
        let mut stream = Stream::open(&client.http, &client.base, &client.sdk).await;
        let put = stream.next().await;
        assert_eq!(put.event, "put");
        let mut items = BTreeMap::new();
        for section in ["flags", "segments"] {
            for (key, item) in put.data["data"][section].as_object().unwrap() {
                let version = item["version"].as_u64().unwrap();
                items.insert(
                    (section.to_owned(), key.clone()),
                    (version, Some(item.clone())),
                );
            }
        }
        SdkStream { stream, items }
    }

    /// Reads one event and applies it as an SDK does.
    async fn next(&mut self) {
        let event = self.stream.next().await;
        let path = event.data["path"].as_str().unwrap();
        let (section, key) = path.trim_start_matches('/').split_once('/').unwrap();
        let (version, item) = match event.event.as_str() {
            "patch" => (
                event.data["data"]["version"].as_u64().unwrap(),
                Some(event.data["data"].clone()),
            ),
            "delete" => (event.data["version"].as_u64().unwrap(), None),
            other => panic!("unexpected {other} event: {:?}", event.data),
        };
        let held = self
            .items
            .entry((section.to_owned(), key.to_owned()))
            .or_insert((0, None));
        if version > held.0 {
            *held = (version, item);
        }
    }

    /// `{"flags": {...}, "segments": {...}}` as held.
    fn data(&self) -> Value {
        let mut data = json!({"flags": {}, "segments": {}});
        for ((section, key), (_, item)) in &self.items {
            if let Some(item) = item {
                data[section][key] = item.clone();
            }
        }
        data
    }

    /// The version held of each flag.
    fn versions(&self) -> BTreeMap<String, u64> {
        self.items
            .iter()
            .filter(|((section, _), _)| section == "flags")
            .map(|((_, key), (version, _))| (key.clone(), *version))
            .collect()
    }
}
