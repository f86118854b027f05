//! flagd driven by real third-party clients: the official LaunchDarkly server-side SDKs for
//! Python and Node, and OpenFeature with the OFREP providers for Python and Node.
//!
//! Each test starts the real `flagd` binary on a free port with an SDK key and a temporary copy
//! of `clients/rich-flags.yaml`, runs one client script from `clients/` (a JSON plan on stdin,
//! JSON lines on stdout) and compares what the client saw with flagd's own answers over HTTP.
//! The LaunchDarkly SDKs evaluate flags themselves, so they are an independent check of flagd's
//! evaluator as well as of its streaming, polling and event endpoints. The root-mode tests run
//! `flagd serve --database` over a PostgreSQL database of their own instead, with flags killed
//! and overridden through the admin API: the SDKs must give the answers flagd gives, kills and
//! overrides included, and see an override set while they run. The daemon-mode test has the
//! Python SDK read flags from the Redis flagd writes into (`--redis-url`) instead of from flagd,
//! through an edit of the flag file and a Redis that is stopped and comes back empty. Python's
//! grpcio checks flagd's gRPC service: health, reflection, and evaluations equal to HTTP's. The
//! clients are the ones
//! `cargo xtask deps` installs under the target directory; without them these tests fail and say
//! so rather than pass without having run.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flags_test_support::process::{
    FlagdProcess, KillOnDrop, clean_env, collected, flagd_command, lines_of,
};
use flags_test_support::wait::Poll;
use flags_test_support::{RedisServer, TestDatabase, postgres};
use serde_json::{Value, json};

/// The key file-mode flagd requires; every client must present it in the header format it uses.
const SDK_KEY: &str = "sdk-third-party-test-key";

/// The admin key of root-mode flagd.
const ADMIN_KEY: &str = "third-party-admin";

/// The value clients pass as their default, so that a served default is recognisable.
const DEFAULT: &str = "caller-default";

/// A flag that does not exist, evaluated alongside the real ones.
const UNKNOWN_FLAG: &str = "no-such-flag";

/// Upper bound for a script to finish: only a broken build waits this long, since everything
/// normally takes a second or two.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// How soon a client must see an edit of the flag file, measured from the write.
const PROPAGATION_LIMIT: f64 = 1.0;

/// The line of the fixture that the edit tests change, and what they change it to.
const LIVE_EDIT_BEFORE: &str = "fallthrough: {variation: 0} # live-edit marker";
const LIVE_EDIT_AFTER: &str = "fallthrough: {variation: 1} # live-edit marker";

#[test]
fn python_launchdarkly_sdk_streams_evaluates_like_flagd_and_sends_events() {
    let flagd = Flagd::start();
    flagd.assert_key_required();
    let flags = flagd.flag_keys();
    let contexts = contexts();
    let native = flagd.native_answers(&flags, &contexts);
    assert_fixture_is_rich(&native);

    let mut script = Script::start(
        Client::Python,
        "ld_python.py",
        &json!({
            "sdk_key": flagd.sdk_key,
            "base_uri": flagd.base_url(),
            "mode": "stream",
            "flags": flags,
            "contexts": contexts,
            "default": DEFAULT,
            "watch": live_edit_watch(),
            "events": {"track": 3, "metric_value": 9.5},
            "timeout": 20,
        }),
    );
    script.wait_ready();
    let written_at = flagd.edit_live_flag();
    let result = script.finish();

    assert_eq!(result["initialized"], true, "{result}");
    assert_matches_native("Python SDK", &flags, &contexts, &result, &native);
    assert_saw_edit("Python SDK (streaming)", &flagd, &result, written_at);

    // close() waits for delivery, so every event the SDK sent has been counted by now.
    let events = flagd.events_received();
    let count = |kind: &str| events.get(kind).copied().unwrap_or(0);
    assert_eq!(count("custom"), 3, "{events:?}");
    assert_eq!(count("identify"), 1, "{events:?}");
    assert_eq!(count("diagnostic-init"), 1, "{events:?}");
    assert!(count("summary") >= 1, "{events:?}");
    assert!(count("index") >= 1, "{events:?}");
    // `experiment` has trackEvents, so each evaluation of it is a full feature event.
    assert!(count("feature") >= contexts.len() as u64, "{events:?}");

    // The same events, exported: full records only for the flags that ask for them, summaries
    // for every evaluation, the custom events with their metric value.
    let records = Poll::new()
        .within(Duration::from_secs(10))
        .blocking_until_some("the SDK's events in the export", || {
            let records = flagd.exported();
            let customs = records.iter().filter(|r| r["kind"] == "custom").count();
            let summaries = records.iter().any(|r| r["kind"] == "summary");
            (customs == 3 && summaries).then_some(records)
        });
    let features: Vec<&Value> = records.iter().filter(|r| r["kind"] == "feature").collect();
    for feature in &features {
        assert!(
            feature["key"] == "experiment" || feature["key"] == "prereq-base",
            "only tracked flags have full events: {feature}"
        );
        assert_eq!(feature["source"], "SDK");
    }
    let experiment = features
        .iter()
        .filter(|r| r["key"] == "experiment" && r["metadata"].get("prereqOf").is_none())
        .count();
    assert_eq!(experiment, contexts.len(), "one full event per evaluation");
    for custom in records.iter().filter(|r| r["kind"] == "custom") {
        assert_eq!(custom["value"], 9.5, "{custom}");
    }
    let summarized = |flag: &str| -> u64 {
        records
            .iter()
            .filter(|r| r["kind"] == "summary" && r["key"] == flag)
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    // Neither a prerequisite nor the watched flag: evaluated exactly once per context.
    for flag in ["string-operators", "experiment", "float-flag", UNKNOWN_FLAG] {
        assert_eq!(
            summarized(flag),
            contexts.len() as u64,
            "{flag}: {:#?}",
            records
                .iter()
                .filter(|r| r["key"] == flag)
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn python_launchdarkly_sdk_in_daemon_mode_evaluates_from_redis_like_flagd() {
    const NAME: &str = "Python SDK (daemon mode, Redis)";
    let mut redis = RedisServer::start_new();
    // Not LaunchDarkly's default prefix, so the SDK finds the data only where flagd was told
    // to write it.
    let prefix = "flagd-daemon-test";
    let flagd = Flagd::start_with(&["--redis-url", &redis.url(), "--redis-prefix", prefix]);
    let flags = flagd.flag_keys();
    let contexts = contexts();
    let native = flagd.native_answers(&flags, &contexts);
    assert_fixture_is_rich(&native);
    flagd.wait_for_redis("OK");

    let mut daemon = Script::start_session(
        Client::Python,
        "ld_python_daemon.py",
        &json!({
            "redis_url": redis.url(),
            "prefix": prefix,
            "flags": flags,
            "contexts": contexts,
            "default": DEFAULT,
            "timeout": 60,
        }),
    );
    let first = daemon.next_document();
    assert_eq!(first["initialized"], true, "{first}");
    assert_matches_native(NAME, &flags, &contexts, &first, &native);

    // An edit of the flag file reaches Redis, and the SDK reads it there.
    daemon.send(&json!({"watch": live_edit_watch()}));
    daemon.wait_ready();
    let written_at = flagd.edit_live_flag();
    let seen = daemon.next_document();
    assert_saw_edit(NAME, &flagd, &seen, written_at);
    let edited = flagd.native_answers(&flags, &contexts);
    daemon.send(&json!({"evaluate": true}));
    assert_matches_native(NAME, &flags, &contexts, &daemon.next_document(), &edited);

    // Redis goes away: flagd serves on and says so. The file changes back meanwhile.
    redis.stop();
    flagd.wait_for_redis("DOWN");
    let (status, ready) = flagd.request(reqwest::Method::GET, "/readyz", None, None);
    assert!(ready.contains(r#""status":"SERVING""#), "{status} {ready}");
    flagd.write_flag_file(&fixture());
    Poll::new()
        .within(Duration::from_secs(10))
        .blocking_until_some("flagd serving the file again as it was", || {
            let answer = flagd.evaluate("live-edit", &live_edit_watch()["context"]);
            (answer["value"] == "before").then_some(())
        });
    assert_eq!(flagd.native_answers(&flags, &contexts), native);

    // Back, empty, on the same port: flagd writes everything again, and the same client
    // evaluates as flagd does.
    redis.start();
    flagd.wait_for_redis("OK");
    daemon.send(&json!({"evaluate": true}));
    assert_matches_native(NAME, &flags, &contexts, &daemon.next_document(), &native);
    daemon.send(&json!({"close": true}));
    assert_eq!(daemon.finish()["closed"], true);

    let metrics = flagd.metrics();
    // At start and after the outage; the edit was written item by item.
    assert_eq!(
        metric_value(&metrics, "flagd_redis_rewrites_total"),
        2,
        "{metrics}"
    );
    assert!(
        metric_value(&metrics, "flagd_redis_write_errors_total") >= 1,
        "{metrics}"
    );
}

/// Members of the big segment: every tenth user excluded, the others included.
const BIG_SEGMENT_MEMBERS: usize = 1_000_000;

#[test]
fn python_launchdarkly_sdk_reads_big_segments_from_redis_like_flagd() {
    const NAME: &str = "Python SDK (daemon mode, Redis big segments)";
    let redis = RedisServer::start_new();
    let flagd = Flagd::start_root_with(&[
        "--redis-url",
        &redis.url(),
        "--redis-prefix",
        "flagd-big:{env}",
    ]);
    flagd.admin(
        reqwest::Method::PUT,
        "/segments/big",
        &json!({"key": "big", "unbounded": true}),
    );
    flagd.admin(
        reqwest::Method::PUT,
        "/flags/big-gate",
        &json!({"key": "big-gate", "on": true, "variations": ["out", "in"],
            "offVariation": 0, "fallthrough": {"variation": 0}, "salt": "big-gate",
            "rules": [{"id": "members", "variation": 1, "clauses": [{"contextKind": "user",
                "attribute": "key", "op": "segmentMatch", "values": ["big"]}]}]}),
    );
    let mut ndjson = String::with_capacity(BIG_SEGMENT_MEMBERS * 40);
    for i in 0..BIG_SEGMENT_MEMBERS {
        let op = if i % 10 == 0 { "exclude" } else { "include" };
        ndjson.push_str(&format!("{{\"op\":\"{op}\",\"key\":\"user-{i}\"}}\n"));
    }
    let answer = flagd.upload_members("big", ndjson);
    assert_eq!(answer["lines"], BIG_SEGMENT_MEMBERS, "{answer}");
    let flags = vec!["big-gate".to_owned()];
    let contexts = vec![
        json!({"kind": "user", "key": "user-1"}),
        json!({"kind": "user", "key": "user-999999"}),
        json!({"kind": "user", "key": "user-10"}),
        json!({"kind": "user", "key": "not-a-member"}),
        json!({"kind": "org", "key": "user-1"}),
        json!({"kind": "multi", "user": {"key": "user-3"}, "org": {"key": "acme"}}),
    ];
    // flagd serves the segment's new generation before the SDK reads it from Redis.
    Poll::new()
        .within(Duration::from_secs(10))
        .blocking_until_some("flagd serving the upload", || {
            let answer = flagd.evaluate("big-gate", &contexts[0]);
            (answer["value"] == "in").then_some(())
        });
    let native = flagd.native_answers(&flags, &contexts);
    let reason = |i: usize| native[&("big-gate".to_owned(), i)]["reason"].clone();
    assert_eq!(reason(0)["kind"], "RULE_MATCH", "{}", reason(0));
    assert_eq!(reason(0)["bigSegmentsStatus"], "HEALTHY", "{}", reason(0));
    assert_eq!(reason(2)["kind"], "FALLTHROUGH", "excluded: {}", reason(2));
    assert_eq!(
        reason(3)["kind"],
        "FALLTHROUGH",
        "not listed: {}",
        reason(3)
    );
    assert_eq!(reason(3)["bigSegmentsStatus"], "HEALTHY", "{}", reason(3));

    let mut daemon = Script::start_session(
        Client::Python,
        "ld_python_daemon.py",
        &json!({
            "redis_url": redis.url(),
            "prefix": "flagd-big:production",
            "big_segments": true,
            "flags": flags,
            "contexts": contexts,
            "default": DEFAULT,
            "timeout": 60,
        }),
    );
    let first = daemon.next_document();
    assert_eq!(first["initialized"], true, "{first}");
    assert_matches_native(NAME, &flags, &contexts, &first, &native);
    daemon.send(&json!({"close": true}));
    assert_eq!(daemon.finish()["closed"], true);
}

#[test]
fn python_launchdarkly_sdk_polls_flagd() {
    let flagd = Flagd::start();
    let flags = flagd.flag_keys();
    let contexts = contexts();
    let native = flagd.native_answers(&flags, &contexts);

    let mut script = Script::start(
        Client::Python,
        "ld_python.py",
        &json!({
            "sdk_key": flagd.sdk_key,
            "base_uri": flagd.base_url(),
            "mode": "poll",
            "poll_interval": 0.1,
            "flags": flags,
            "contexts": contexts,
            "default": DEFAULT,
            "watch": live_edit_watch(),
            "timeout": 20,
        }),
    );
    script.wait_ready();
    // The SDK sends the ETag back, so a poll of unchanged data costs a 304 and no body. Wait
    // for one before editing, which also makes the edit land between two polls.
    let polls = |status: &str| latest_all_answers(&flagd.metrics(), status);
    let deadline = Instant::now() + Duration::from_secs(5);
    while polls("304") == 0 {
        assert!(Instant::now() < deadline, "no poll was answered 304");
        thread::sleep(Duration::from_millis(20));
    }
    let written_at = flagd.edit_live_flag();
    let result = script.finish();

    assert_eq!(result["initialized"], true, "{result}");
    assert_matches_native("Python SDK (polling)", &flags, &contexts, &result, &native);
    assert_saw_edit("Python SDK (polling)", &flagd, &result, written_at);
    // flag_keys() fetched once; the SDK at least twice: its first poll, and after the edit.
    assert!(polls("200") >= 3, "{}", flagd.metrics());
}

#[test]
fn node_launchdarkly_sdk_streams_evaluates_like_flagd() {
    let flagd = Flagd::start();
    let flags = flagd.flag_keys();
    // The Node SDK still reads the legacy user format (the Python SDK no longer does), so it
    // checks flagd's reading of those too.
    let mut contexts = contexts();
    contexts.extend(legacy_users());
    let native = flagd.native_answers(&flags, &contexts);

    let mut script = Script::start(
        Client::Node,
        "ld_node.js",
        &json!({
            "sdk_key": flagd.sdk_key,
            "base_uri": flagd.base_url(),
            "flags": flags,
            "contexts": contexts,
            "default": DEFAULT,
            "watch": live_edit_watch(),
            "timeout": 20,
        }),
    );
    script.wait_ready();
    let written_at = flagd.edit_live_flag();
    let result = script.finish();

    assert_eq!(result["initialized"], true, "{result}");
    assert_matches_native("Node SDK", &flags, &contexts, &result, &native);
    assert_saw_edit("Node SDK (streaming)", &flagd, &result, written_at);

    // The Node SDK's flush() resolves once its events are delivered; as in the Python test,
    // `experiment` makes a full feature event of each of its evaluations.
    let events = flagd.events_received();
    assert!(
        events.get("summary").copied().unwrap_or(0) >= 1,
        "{events:?}"
    );
    assert!(
        events.get("feature").copied().unwrap_or(0) >= contexts.len() as u64,
        "{events:?}"
    );
}

#[test]
fn python_openfeature_ofrep_provider_resolves_like_flagd() {
    let flagd = Flagd::start();
    let cases = ofrep_cases(false);
    let plan = json!({
        "sdk_key": flagd.sdk_key,
        "base_url": flagd.base_url(),
        "cases": cases,
        "timeout": 20,
    });
    let result = Script::start(Client::Python, "ofrep_python.py", &plan).finish();

    let results = result["results"].as_array().unwrap();
    assert_ofrep_matches(&flagd, "Python OFREP provider", &cases, results);
    // The typed getters must get the JSON number types they ask for: the provider rejects an
    // integer where a float was asked for, and the other way round.
    for (case, got) in cases.iter().zip(results) {
        match case["type"].as_str().unwrap() {
            "integer" => assert!(got["value"].is_i64(), "{case}: {got}"),
            "float" => assert!(got["value"].is_f64(), "{case}: {got}"),
            _ => {}
        }
    }
    // A provider without the key is turned away, and the application gets its default.
    let refused = &result["unauthenticated"];
    assert_eq!(refused["error_code"], "GENERAL", "{refused}");
    assert_eq!(refused["error_message"], "unauthorized", "{refused}");
    assert_eq!(refused["value"], cases[0]["default"], "{refused}");
}

#[test]
fn node_openfeature_ofrep_provider_resolves_like_flagd() {
    let flagd = Flagd::start();
    let cases = ofrep_cases(true);
    let plan = json!({
        "sdk_key": flagd.sdk_key,
        "base_url": flagd.base_url(),
        "cases": cases,
        "timeout": 20,
    });
    let result = Script::start(Client::Node, "ofrep_node.js", &plan).finish();
    assert_ofrep_matches(
        &flagd,
        "Node OFREP provider",
        &cases,
        result["results"].as_array().unwrap(),
    );
}

/// Python's grpcio against flagd's gRPC port: the standard health check, a reflection listing
/// through the `grpc_reflection.v1alpha` stubs, and `Evaluate` through stubs grpcio-tools
/// generates from `proto/` as the script runs, for every flag and context, each answered as
/// the HTTP API answers it.
#[test]
fn python_grpcio_checks_health_lists_services_and_evaluates_like_flagd() {
    let flagd = Flagd::start_with(&["--grpc-listen", "127.0.0.1:0"]);
    let flags = flagd.flag_keys();
    let contexts = contexts();
    let native = flagd.native_answers(&flags, &contexts);
    assert_fixture_is_rich(&native);
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let result = Script::start(
        Client::Python,
        "grpc_python.py",
        &json!({
            "target": flagd.process.grpc_addr().unwrap(),
            "sdk_key": flagd.sdk_key,
            "proto_dir": proto_dir,
            "flags": flags,
            "contexts": contexts,
            "timeout": 60,
        }),
    )
    .finish();

    assert_eq!(
        result["health"],
        json!({"": "SERVING", "flags.v1.FlagEvaluatorService": "SERVING"}),
        "{result}"
    );
    let services: Vec<&str> = result["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for service in [
        "flags.v1.FlagEvaluatorService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(&service), "{service} not in {services:?}");
    }
    let answers = result["answers"].as_array().unwrap();
    assert_eq!(answers.len(), flags.len() * contexts.len());
    for answer in answers {
        let flag = answer["flag"].as_str().unwrap().to_owned();
        let index = answer["context"].as_u64().unwrap() as usize;
        let expected = &native[&(flag.clone(), index)];
        let what = format!("{flag} for context {index}");
        assert_eq!(answer["value"], expected["value"], "{what}: value");
        assert_eq!(
            answer["variationIndex"], expected["variationIndex"],
            "{what}: variation"
        );
        assert_eq!(answer["reason"], expected["reason"], "{what}: reason");
        let source = if expected["reason"]["kind"] == "ERROR" || expected["value"].is_null() {
            "DEFAULT"
        } else {
            "GLOBAL"
        };
        assert_eq!(answer["source"], source, "{what}: source");
    }
    assert_eq!(
        result["unauthenticated"]["code"], "UNAUTHENTICATED",
        "{result}"
    );
    assert!(
        result["unauthenticated"]["details"]
            .as_str()
            .unwrap()
            .contains("`authorization` metadata entry"),
        "{result}"
    );
}

#[test]
fn python_launchdarkly_sdk_streams_kills_and_overrides_like_flagd_in_root_mode() {
    check_root_mode(
        "Python SDK (root mode, streaming)",
        Client::Python,
        "ld_python.py",
        Some("stream"),
    );
}

#[test]
fn python_launchdarkly_sdk_polls_kills_and_overrides_like_flagd_in_root_mode() {
    check_root_mode(
        "Python SDK (root mode, polling)",
        Client::Python,
        "ld_python.py",
        Some("poll"),
    );
}

#[test]
fn node_launchdarkly_sdk_streams_kills_and_overrides_like_flagd_in_root_mode() {
    check_root_mode(
        "Node SDK (root mode, streaming)",
        Client::Node,
        "ld_node.js",
        None,
    );
}

/// Runs one official LaunchDarkly SDK against root-mode flagd with [`root_flags`] killed and
/// overridden by [`ROOT_OPERATIONS`]: every evaluation must equal flagd's own (the reason's
/// kind and details included, flagd's labels aside), and an override set while the SDK runs
/// must reach it. `mode` is the Python script's `stream` or `poll`.
fn check_root_mode(name: &str, client: Client, script: &'static str, mode: Option<&str>) {
    let flagd = Flagd::start_root();
    flagd.assert_key_required();
    for &(method, path, variation) in ROOT_OPERATIONS {
        flagd.admin(
            method.parse().unwrap(),
            path,
            &variation.map_or(Value::Null, |v| json!({"variation": v})),
        );
    }
    // flagd applies changes in commit order: once the last is served, all are.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = flagd.get("/sdk/latest-all");
        let data: Value = serde_json::from_str(&body).unwrap();
        if data["flags"]["behind-gate"]["targets"] == json!([{"values": ["eve"], "variation": 1}]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the operations were never served: {data}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let flags = flagd.flag_keys();
    let contexts = contexts();
    let native = flagd.native_answers(&flags, &contexts);
    // The answers cover what the operations layer decides, so the comparison is about it.
    for (flag, index, label) in [
        ("killed", 0, "killed"),
        ("killed-without-off-variation", 0, "killed"),
        ("overridden", 1, "override"),
        ("overridden", 7, "override"),
        ("overridden", 9, "override"),
    ] {
        let reason = &native[&(flag.to_owned(), index)]["reason"];
        assert_eq!(
            reason[label], true,
            "{flag} for {}: {reason}",
            contexts[index]
        );
    }
    let failed = &native[&("behind-gate".to_owned(), 3)]["reason"];
    assert_eq!(
        failed["kind"], "PREREQUISITE_FAILED",
        "an override comes after prerequisites: {failed}"
    );

    let mut plan = json!({
        "sdk_key": flagd.sdk_key,
        "base_uri": flagd.base_url(),
        "flags": flags,
        "contexts": contexts,
        "default": DEFAULT,
        "watch": override_watch(),
        "timeout": 20,
    });
    if let Some(mode) = mode {
        plan["mode"] = json!(mode);
        plan["poll_interval"] = json!(0.1);
    }
    let mut script = Script::start(client, script, &plan);
    script.wait_ready();
    let written_at = unix_now();
    flagd.admin(
        reqwest::Method::PUT,
        "/flags/overridden/overrides/user/zed",
        &json!({"variation": 1}),
    );
    let result = script.finish();

    assert_eq!(result["initialized"], true, "{result}");
    assert_matches_native(name, &flags, &contexts, &result, &native);
    let watch = &result["watch"];
    assert_eq!(
        watch["seen"], true,
        "{name} never saw the override: {result}"
    );
    let elapsed = watch["seen_at"].as_f64().unwrap() - written_at;
    assert!(
        (0.0..PROPAGATION_LIMIT).contains(&elapsed),
        "{name} saw the override {elapsed:.3} s after it was set (limit {PROPAGATION_LIMIT} s)"
    );
    println!("{name} saw the override {elapsed:.3} s after it was set");
    let native = flagd.evaluate("overridden", &override_watch()["context"]);
    assert_eq!(native["reason"]["override"], true, "{native}");
    assert!(
        same_json(&watch["after"], &client_view(&native)),
        "after the override, {name}: {} but flagd: {native}",
        watch["after"]
    );
}

/// The flags of the root-mode tests, each of three string variations (`off` when off): some
/// the operations layer leaves alone, one overridden for contexts of several kinds, killed ones,
/// and prerequisites an override and a kill act on.
fn root_flags() -> Vec<(&'static str, Value)> {
    let flag = |key: &str, fields: Value| {
        let mut doc = json!({
            "key": key, "on": true, "salt": key,
            "variations": ["fallthrough", "targeted", "off"], "offVariation": 2,
            "fallthrough": {"variation": 0}
        });
        for (field, value) in fields.as_object().unwrap() {
            doc[field] = value.clone();
        }
        doc
    };
    let targeted = json!({
        "targets": [{"values": ["alice", "user-17"], "variation": 1}],
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
        ("killed", flag("killed", targeted)),
        (
            "killed-without-off-variation",
            json!({"key": "killed-without-off-variation", "on": true, "salt": "k",
                "variations": [true, false], "fallthrough": {"variation": 0}}),
        ),
        (
            "killed-and-overridden",
            flag("killed-and-overridden", json!({})),
        ),
        // Serves `targeted` to everyone but `eve`.
        (
            "gate",
            flag(
                "gate",
                json!({"fallthrough": {"variation": 1},
                "targets": [{"values": ["eve"], "variation": 0}]}),
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

/// The kills and overrides of the root-mode tests, through the admin API: (method, path under
/// the environment, override variation). `behind-gate`'s override comes last.
const ROOT_OPERATIONS: &[(&str, &str, Option<usize>)] = &[
    ("PUT", "/flags/killed/kill", None),
    ("PUT", "/flags/killed-without-off-variation/kill", None),
    ("PUT", "/flags/killed-and-overridden/kill", None),
    (
        "PUT",
        "/flags/killed-and-overridden/overrides/user/alice",
        Some(1),
    ),
    ("PUT", "/flags/overridden/overrides/user/bob", Some(1)),
    ("PUT", "/flags/overridden/overrides/user/alice", Some(0)),
    ("PUT", "/flags/overridden/overrides/org/initech", Some(2)),
    ("PUT", "/flags/overridden/overrides/device/dev-1", Some(1)),
    ("PUT", "/flags/gate/overrides/user/qa-1", Some(0)),
    ("PUT", "/flags/behind-gate/overrides/user/eve", Some(1)),
];

/// What the root-mode tests wait for: an override of `overridden` for `zed`, set while the
/// client runs, turning its value to "targeted".
fn override_watch() -> Value {
    json!({
        "flag": "overridden",
        "context": {"kind": "user", "key": "zed"},
        "expect": "targeted",
        "timeout": 5,
    })
}

/// The contexts every LaunchDarkly client evaluates every flag for: single contexts of several
/// kinds, multi-kind contexts, and attributes that hit each operator of the fixture (and some
/// that deliberately miss: a string age, an upper-case email, a missing kind).
fn contexts() -> Vec<Value> {
    vec![
        json!({"kind": "user", "key": "alice", "name": "Alice", "email": "alice@example.com",
               "country": "FR", "age": 34, "plan": "pro", "appVersion": "2.5.1",
               "createdAt": "2023-06-01T00:00:00Z", "groups": ["admins", "beta"],
               "address": {"city": "Paris", "zip": "75001"}}),
        json!({"kind": "user", "key": "bob"}),
        json!({"kind": "user", "key": "user-17", "anonymous": true, "age": 17, "score": 99.5,
               "createdAt": 1_600_000_000_000_i64, "appVersion": "1.2", "plan": "enterprise"}),
        json!({"kind": "user", "key": "eve", "name": "Dr. Eve", "email": "EVE@EXAMPLE.COM",
               "age": "42", "groups": ["beta"], "plan": "contractor",
               "_meta": {"privateAttributes": ["email"]}}),
        json!({"kind": "user", "key": "qa-1", "country": "US", "age": 42,
               "createdAt": "2022-07-01T00:00:00+02:00", "appVersion": "3"}),
        json!({"kind": "org", "key": "acme", "name": "Acme", "tier": "gold"}),
        json!({"kind": "org", "key": "globex", "name": "Globex", "tier": "silver"}),
        json!({"kind": "multi",
               "user": {"key": "dave", "country": "DE", "age": 65, "plan": "contractor"},
               "org": {"key": "initech", "name": "Initech", "tier": "bronze"}}),
        json!({"kind": "multi",
               "user": {"key": "frank", "country": "US", "email": "frank@example.com"},
               "org": {"key": "initech", "name": "Initech"}}),
        json!({"kind": "device", "key": "dev-1", "os": "ios", "osVersion": "17.1.0",
               "nickname": "phone"}),
        json!({"kind": "multi", "user": {"key": "alice", "country": "BE"},
               "device": {"key": "dev-2", "os": "ios", "osVersion": "16.4.0"}}),
    ]
}

/// Contexts in LaunchDarkly's legacy user format (no `kind`): built-in attributes at the top,
/// the rest under `custom`, private attributes in `privateAttributeNames`, and an empty key,
/// which the legacy format allows.
fn legacy_users() -> Vec<Value> {
    vec![
        json!({"key": "legacy-1", "country": "FR", "email": "x@example.com", "anonymous": true,
               "custom": {"groups": ["admins"], "age": 17, "appVersion": "1.0"}}),
        json!({"key": "qa-1", "name": "Dr. Legacy", "custom": {"tier": "gold"}}),
        json!({"key": "", "name": "empty-key legacy"}),
        json!({"key": "alice", "email": "alice@example.com", "privateAttributeNames": ["email"],
               "custom": {"address": {"city": "Paris"}}}),
    ]
}

/// What the edit tests wait for: `live-edit` turning from "before" to "after" for bob.
fn live_edit_watch() -> Value {
    json!({
        "flag": "live-edit",
        "context": {"kind": "user", "key": "bob"},
        "expect": "after",
        "timeout": 5,
    })
}

/// OpenFeature cases: every flag type, every OpenFeature reason flagd gives, a multi-kind
/// context passed through OFREP, and an unknown flag. Node has a single number type.
fn ofrep_cases(node: bool) -> Vec<Value> {
    let (integer, float) = if node {
        ("number", "number")
    } else {
        ("integer", "float")
    };
    vec![
        case(
            "bool-targets",
            "boolean",
            json!(false),
            json!({"targetingKey": "alice"}),
        ),
        case(
            "bool-targets",
            "boolean",
            json!(true),
            json!({"targetingKey": "bob"}),
        ),
        case(
            "string-operators",
            "string",
            json!(""),
            json!({"targetingKey": "user-1", "email": "u@example.com"}),
        ),
        case(
            "rollout-by-key",
            "string",
            json!(""),
            json!({"targetingKey": "carol"}),
        ),
        case(
            "off-flag",
            "string",
            json!(""),
            json!({"targetingKey": "carol"}),
        ),
        case(
            "prereq-met",
            "string",
            json!(""),
            json!({"targetingKey": "carol"}),
        ),
        case(
            "simple-string",
            "string",
            json!(""),
            json!({"targetingKey": "carol"}),
        ),
        case(
            "number-operators",
            integer,
            json!(-1),
            json!({"targetingKey": "carol", "age": 34}),
        ),
        case(
            "simple-number",
            integer,
            json!(-1),
            json!({"targetingKey": "carol"}),
        ),
        case(
            "float-flag",
            float,
            json!(-1.5),
            json!({"targetingKey": "carol", "country": "FR"}),
        ),
        case(
            "float-flag",
            float,
            json!(-1.5),
            json!({"targetingKey": "carol", "country": "DE"}),
        ),
        case(
            "json-config",
            "object",
            json!({}),
            json!({"targetingKey": "acme", "kind": "org", "tier": "gold"}),
        ),
        case(
            "json-config",
            "object",
            json!({}),
            json!({"kind": "multi", "user": {"key": "u", "country": "US"},
                   "org": {"key": "initech"}}),
        ),
        case(
            "simple-object",
            "object",
            json!({}),
            json!({"targetingKey": "carol"}),
        ),
        case(
            UNKNOWN_FLAG,
            "string",
            json!("fallback"),
            json!({"targetingKey": "carol"}),
        ),
    ]
}

/// Fails unless every evaluation of `result` equals flagd's native answer for the same flag and
/// context, listing every disagreement with both answers.
fn assert_matches_native(
    client: &str,
    flags: &[String],
    contexts: &[Value],
    result: &Value,
    native: &BTreeMap<(String, usize), Value>,
) {
    let mut disagreements = Vec::new();
    for flag in flags {
        let answers = result["evaluations"][flag.as_str()]
            .as_array()
            .unwrap_or_else(|| panic!("{client} gave no evaluations of {flag}: {result}"));
        assert_eq!(answers.len(), contexts.len(), "{client}: {flag}");
        for (index, (context, got)) in contexts.iter().zip(answers).enumerate() {
            let expected = client_view(&native[&(flag.clone(), index)]);
            if !same_json(got, &expected) {
                disagreements.push(format!(
                    "flag {flag}, context {context}:\n  {client}: {got}\n  flagd: {expected}"
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{client} and flagd disagree on {} of {} evaluations:\n{}",
        disagreements.len(),
        flags.len() * contexts.len(),
        disagreements.join("\n")
    );
}

/// What a LaunchDarkly SDK returns for a native answer: the same index and reason, and the
/// caller's default wherever flagd serves no variation (off without an off variation, errors).
/// flagd labels the reasons of its operations layer (`"killed": true`, `"override": true`),
/// which an SDK cannot know: the reason kind and the rest are LaunchDarkly's.
fn client_view(native: &Value) -> Value {
    let value = if native["variationIndex"].is_null() {
        assert!(
            native["value"].is_null(),
            "a value without an index: {native}"
        );
        json!(DEFAULT)
    } else {
        native["value"].clone()
    };
    let mut reason = native["reason"].clone();
    if let Some(reason) = reason.as_object_mut() {
        reason.remove("killed");
        reason.remove("override");
    }
    json!({
        "value": value,
        "variationIndex": native["variationIndex"],
        "reason": reason,
    })
}

/// JSON equality where numbers compare by value: JavaScript has one number type, so the Node
/// SDK hands back `2` for a variation written `2.0`. Python keeps the two apart, and so does
/// `assert_ofrep_matches`'s type check.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Fails unless the fixture still produces every kind of answer, so that the comparisons above
/// keep covering the whole evaluation model as the fixture changes.
fn assert_fixture_is_rich(native: &BTreeMap<(String, usize), Value>) {
    let mut seen = BTreeSet::new();
    for answer in native.values() {
        let reason = &answer["reason"];
        seen.insert(reason["kind"].as_str().unwrap().to_owned());
        if let Some(error) = reason["errorKind"].as_str() {
            seen.insert(format!("ERROR/{error}"));
        }
        if reason["inExperiment"] == true {
            seen.insert(format!("{}/inExperiment", reason["kind"].as_str().unwrap()));
        }
    }
    for wanted in [
        "OFF",
        "FALLTHROUGH",
        "TARGET_MATCH",
        "RULE_MATCH",
        "PREREQUISITE_FAILED",
        "ERROR/MALFORMED_FLAG",
        "ERROR/FLAG_NOT_FOUND",
        "FALLTHROUGH/inExperiment",
        "RULE_MATCH/inExperiment",
    ] {
        assert!(seen.contains(wanted), "no {wanted} answer; saw {seen:?}");
    }
}

/// Fails unless the client saw the edit within [`PROPAGATION_LIMIT`] of the write, and then
/// evaluates the edited flag as flagd does.
fn assert_saw_edit(client: &str, flagd: &Flagd, result: &Value, written_at: f64) {
    let watch = &result["watch"];
    assert_eq!(watch["seen"], true, "{client} never saw the edit: {result}");
    let elapsed = watch["seen_at"].as_f64().unwrap() - written_at;
    assert!(
        (0.0..PROPAGATION_LIMIT).contains(&elapsed),
        "{client} saw the edit {elapsed:.3} s after the write (limit {PROPAGATION_LIMIT} s)"
    );
    println!("{client} saw the edit {elapsed:.3} s after the write");
    let context = &live_edit_watch()["context"];
    let native = flagd.evaluate("live-edit", context);
    assert_eq!(native["value"], "after", "{native}");
    assert!(
        same_json(&watch["after"], &client_view(&native)),
        "after the edit, {client}: {} but flagd: {native}",
        watch["after"]
    );
}

/// Fails unless each OpenFeature resolution matches flagd's own OFREP answer for the case:
/// value, variant and reason on success; the error code and the caller's default otherwise.
fn assert_ofrep_matches(flagd: &Flagd, client: &str, cases: &[Value], results: &[Value]) {
    assert_eq!(results.len(), cases.len(), "{client}: {results:?}");
    for (case, got) in cases.iter().zip(results) {
        let flag = case["flag"].as_str().unwrap();
        let (status, body) = flagd.post(
            &format!("/ofrep/v1/evaluate/flags/{flag}"),
            &json!({"context": case["context"]}),
        );
        let answer: Value = serde_json::from_str(&body).unwrap();
        if status == 200 {
            assert!(got["error_code"].is_null(), "{client}, {case}: {got}");
            let expected = json!({
                "value": answer["value"],
                "variant": answer["variant"],
                "reason": answer["reason"],
            });
            let got_view = json!({
                "value": got["value"],
                "variant": got["variant"],
                "reason": got["reason"],
            });
            assert!(
                same_json(&got_view, &expected),
                "{client} and flagd's OFREP answer disagree on {case}:\n  \
                 {client}: {got}\n  flagd: {answer}"
            );
        } else {
            assert_eq!(status, 404, "{case}: {answer}");
            assert_eq!(answer["errorCode"], "FLAG_NOT_FOUND", "{case}: {answer}");
            assert_eq!(
                got["error_code"], "FLAG_NOT_FOUND",
                "{client}, {case}: {got}"
            );
            assert_eq!(got["reason"], "ERROR", "{client}, {case}: {got}");
            assert_eq!(got["value"], case["default"], "{client}, {case}: {got}");
        }
    }
    // Make sure the cases still reach every OpenFeature reason flagd gives.
    let reasons: BTreeSet<&str> = results
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    for wanted in [
        "TARGETING_MATCH",
        "DEFAULT",
        "SPLIT",
        "DISABLED",
        "STATIC",
        "ERROR",
    ] {
        assert!(
            reasons.contains(wanted),
            "{client}: no {wanted}; saw {reasons:?}"
        );
    }
}

fn case(flag: &str, kind: &str, default: Value, context: Value) -> Value {
    json!({"flag": flag, "type": kind, "default": default, "context": context})
}

/// How many `GET /sdk/latest-all` flagd answered with `status`, from its metrics.
fn latest_all_answers(metrics: &str, status: &str) -> u64 {
    let series = format!(
        r#"flagd_http_requests_total{{route="/sdk/latest-all",method="GET",status="{status}"}}"#
    );
    metric_value(metrics, &series)
}

/// The value of one Prometheus sample line, or 0 when the series does not exist yet.
fn metric_value(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A running `flagd serve`, with its SDK key required.
struct Flagd {
    process: FlagdProcess,
    source: Source,
    /// The key clients present.
    sdk_key: String,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// Where a running flagd takes its data from.
enum Source {
    /// A temporary copy of the fixture, which the edit tests rewrite.
    File {
        file: PathBuf,
        _dir: tempfile::TempDir,
    },
    /// A database of its own (root mode), changed through the admin API; dropped with it.
    Database { _db: TestDatabase },
}

impl Flagd {
    /// File mode over a temporary copy of the fixture, with [`SDK_KEY`] required.
    fn start() -> Flagd {
        Flagd::start_with(&[])
    }

    /// [`Flagd::start`] with more arguments for `flagd serve`.
    fn start_with(args: &[&str]) -> Flagd {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flags.yaml");
        std::fs::write(&file, fixture()).unwrap();
        let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .arg("--file")
            .arg(&file)
            .args(["--sdk-key", SDK_KEY])
            .arg("--export-dir")
            .arg(dir.path().join("events"))
            .env("FLAGD_EVENTS_FLUSH_INTERVAL_MS", "100")
            .args(args);
        let source = Source::File { file, _dir: dir };
        Flagd::spawn(command, source, SDK_KEY.to_owned())
    }

    /// Root mode over a new database holding [`root_flags`] in environment `production`, with
    /// the SDK key the store made for it required, and [`ADMIN_KEY`] for the admin API.
    fn start_root() -> Flagd {
        Flagd::start_root_with(&[])
    }

    /// [`Flagd::start_root`] with more arguments for `flagd serve`.
    fn start_root_with(args: &[&str]) -> Flagd {
        let db = postgres().create_database();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let sdk_key = runtime.block_on(async {
            use flags_store::{Actor, ApiKeyKind, NewApiKey};
            let store = flagd::open_database(db.url()).await.unwrap();
            let actor = Actor::named("third-party test");
            store
                .create_environment(&actor, "production", "Production")
                .await
                .unwrap();
            for (key, doc) in root_flags() {
                store
                    .put_flag(&actor, "production", key, doc, None)
                    .await
                    .unwrap();
            }
            let key = NewApiKey {
                name: "sdk".to_owned(),
                kind: ApiKeyKind::Sdk,
                env: Some("production".to_owned()),
            };
            store.create_api_key(&actor, &key).await.unwrap().secret
        });
        let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(["--database", db.url(), "--admin-key", ADMIN_KEY])
            .args(args);
        Flagd::spawn(command, Source::Database { _db: db }, sdk_key)
    }

    fn spawn(command: Command, source: Source, sdk_key: String) -> Flagd {
        let process = FlagdProcess::spawn(command);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Flagd {
            process,
            source,
            sdk_key,
            runtime,
            http,
        }
    }

    /// One admin API request of root mode, under `/api/v1/environments/production`, which must
    /// succeed.
    fn admin(&self, method: reqwest::Method, path: &str, body: &Value) {
        let path = format!("/api/v1/environments/production{path}");
        let auth = format!("Bearer {ADMIN_KEY}");
        let body = (!body.is_null()).then_some(body);
        let (status, answer) = self.request(method.clone(), &path, Some(&auth), body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
    }

    fn base_url(&self) -> String {
        self.process.url()
    }

    /// Uploads big-segment members (NDJSON) to `segment` of `production`; the answer.
    fn upload_members(&self, segment: &str, ndjson: String) -> Value {
        let url = format!(
            "{}/api/v1/environments/production/segments/{segment}/members",
            self.base_url()
        );
        let request = self
            .http
            .post(&url)
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .header("content-type", "application/x-ndjson")
            .timeout(Duration::from_secs(300))
            .body(ndjson);
        self.runtime.block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert_eq!(status, 200, "upload: {body}");
            serde_json::from_str(&body).unwrap()
        })
    }

    /// One request; `key` is sent as `Authorization: KEY` when given.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base_url());
        let mut request = self.http.request(method.clone(), &url);
        if let Some(key) = key {
            request = request.header("authorization", key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        self.runtime.block_on(async {
            let response = request.send().await.unwrap_or_else(|e| {
                panic!(
                    "{method} {path} failed: {e}; flagd's log:\n{}",
                    self.process.log()
                )
            });
            let status = response.status().as_u16();
            let bytes = response.bytes().await.unwrap();
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        })
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request(reqwest::Method::GET, path, Some(&self.sdk_key), None)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, String) {
        self.request(reqwest::Method::POST, path, Some(&self.sdk_key), Some(body))
    }

    /// Without the key, flagd answers 401: the clients' successes below mean their header
    /// format was accepted, not that nothing was checked.
    fn assert_key_required(&self) {
        let (status, _) = self.request(reqwest::Method::GET, "/sdk/latest-all", None, None);
        assert_eq!(status, 401);
        let (status, _) = self.request(
            reqwest::Method::GET,
            "/sdk/latest-all",
            Some("wrong-key"),
            None,
        );
        assert_eq!(status, 401);
    }

    /// Every flag flagd serves, plus one that does not exist.
    fn flag_keys(&self) -> Vec<String> {
        let (status, body) = self.get("/sdk/latest-all");
        assert_eq!(status, 200, "{body}");
        let data: Value = serde_json::from_str(&body).unwrap();
        let mut keys: Vec<String> = data["flags"].as_object().unwrap().keys().cloned().collect();
        if let Source::File { .. } = self.source {
            assert!(keys.len() >= 20, "the fixture did not load fully: {keys:?}");
        }
        keys.push(UNKNOWN_FLAG.to_owned());
        keys
    }

    /// `POST /v1/evaluate/{flag}` for one flag and context.
    fn evaluate(&self, flag: &str, context: &Value) -> Value {
        let (status, body) = self.post(
            &format!("/v1/evaluate/{flag}"),
            &json!({"context": context}),
        );
        let answer: Value = serde_json::from_str(&body).unwrap();
        let expected_status = if flag == UNKNOWN_FLAG { 404 } else { 200 };
        assert_eq!(status, expected_status, "{flag} for {context}: {body}");
        assert_eq!(answer["key"], flag, "{body}");
        answer
    }

    /// flagd's answer for every flag and context, keyed by flag and context index.
    fn native_answers(
        &self,
        flags: &[String],
        contexts: &[Value],
    ) -> BTreeMap<(String, usize), Value> {
        let mut answers = BTreeMap::new();
        for flag in flags {
            for (index, context) in contexts.iter().enumerate() {
                answers.insert((flag.clone(), index), self.evaluate(flag, context));
            }
        }
        answers
    }

    /// Rewrites the flag file atomically (a new file renamed over the old one, as editors and
    /// deployment tools do) with `live-edit` turned to "after". Returns when the write began, in
    /// seconds since the Unix epoch, to compare with the times the clients report.
    fn edit_live_flag(&self) -> f64 {
        let text = fixture();
        assert_eq!(
            text.matches(LIVE_EDIT_BEFORE).count(),
            1,
            "the fixture lost its marker"
        );
        let written_at = unix_now();
        self.write_flag_file(&text.replace(LIVE_EDIT_BEFORE, LIVE_EDIT_AFTER));
        written_at
    }

    /// Replaces the flag file atomically, as [`Flagd::edit_live_flag`] does.
    fn write_flag_file(&self, text: &str) {
        let Source::File { file, .. } = &self.source else {
            panic!("only a file-mode flagd has a flag file to edit");
        };
        let staging = file.with_extension("yaml.new");
        std::fs::write(&staging, text).unwrap();
        std::fs::rename(&staging, file).unwrap();
    }

    /// Waits until `/readyz` says writing into Redis is `status` (`OK`, `DOWN`).
    fn wait_for_redis(&self, status: &str) {
        Poll::new()
            .within(Duration::from_secs(20))
            .blocking_until_some(&format!("Redis writes {status} in /readyz"), || {
                let (_, body) = self.request(reqwest::Method::GET, "/readyz", None, None);
                let ready: Value = serde_json::from_str(&body).unwrap();
                (ready["redis"]["status"] == status).then_some(())
            });
    }

    fn metrics(&self) -> String {
        let (status, body) = self.request(reqwest::Method::GET, "/metrics", None, None);
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The records the JSON-lines file exporter has written so far (file mode only).
    fn exported(&self) -> Vec<Value> {
        let Source::File { _dir: dir, .. } = &self.source else {
            panic!("only file mode exports events here");
        };
        common::exported_records(&dir.path().join("events"))
    }

    /// `flagd_events_received_total` by event kind.
    fn events_received(&self) -> BTreeMap<String, u64> {
        let prefix = "flagd_events_received_total{kind=\"";
        self.metrics()
            .lines()
            .filter_map(|line| {
                let (kind, rest) = line.strip_prefix(prefix)?.split_once("\"}")?;
                Some((kind.to_owned(), rest.trim().parse().ok()?))
            })
            .collect()
    }
}

fn fixture() -> String {
    std::fs::read_to_string(clients_dir().join("rich-flags.yaml")).unwrap()
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// `<target>/third-party`, where `cargo xtask deps` installs the clients.
fn third_party_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("third-party")
}

#[derive(Clone, Copy)]
enum Client {
    Python,
    Node,
}

impl Client {
    /// The command that runs a script of this client, or a failure naming the fix.
    fn command(self) -> Command {
        let third_party = third_party_dir();
        match self {
            Client::Python => {
                let python = third_party.join("venv/bin/python");
                assert!(
                    python.is_file(),
                    "{} is missing: run `cargo xtask deps` to install the Python test clients",
                    python.display()
                );
                let mut command = Command::new(python);
                command.env("PYTHONDONTWRITEBYTECODE", "1");
                command
            }
            Client::Node => {
                let modules = third_party.join("node/node_modules");
                assert!(
                    modules.join("@launchdarkly/node-server-sdk").is_dir()
                        && modules.join("@openfeature/ofrep-provider").is_dir(),
                    "the Node test clients are missing from {}: run `cargo xtask deps`",
                    modules.display()
                );
                let mut command = Command::new("node");
                command.env("NODE_PATH", modules);
                command
            }
        }
    }
}

/// A running client script.
struct Script {
    name: &'static str,
    process: KillOnDrop,
    /// Kept open by a session ([`Script::start_session`]) for the commands sent later.
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    deadline: Instant,
}

impl Script {
    fn start(client: Client, name: &'static str, plan: &Value) -> Script {
        let mut script = Script::start_session(client, name, plan);
        // The whole plan is on stdin; its end tells the script so.
        drop(script.stdin.take());
        script
    }

    /// Starts a script that reads its plan as the first line on stdin and then further
    /// commands, one JSON line each, sent with [`Script::send`].
    fn start_session(client: Client, name: &'static str, plan: &Value) -> Script {
        let mut command = client.command();
        command
            .arg(clients_dir().join(name))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clean_env(&mut command);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {name} ({e}): install Python 3 and Node, then run `cargo xtask deps`"
            )
        });
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{plan}").unwrap();
        stdin.flush().unwrap();
        Script {
            name,
            stdin: Some(stdin),
            stdout: lines_of(child.stdout.take().unwrap()),
            stderr: collected(child.stderr.take().unwrap()),
            process: KillOnDrop(child),
            deadline: Instant::now() + PROCESS_TIMEOUT,
        }
    }

    /// The next JSON document the script writes.
    fn next_document(&mut self) -> Value {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let line = match self.stdout.recv_timeout(left) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => self.fail("timed out"),
            Err(RecvTimeoutError::Disconnected) => self.fail("ended without a result"),
        };
        serde_json::from_str(&line)
            .unwrap_or_else(|e| self.fail(&format!("wrote {line:?}, not JSON: {e}")))
    }

    /// Sends one command to a session.
    fn send(&mut self, command: &Value) {
        let Some(stdin) = self.stdin.as_mut() else {
            panic!("{} is not a session: its stdin is closed", self.name);
        };
        if let Err(e) = writeln!(stdin, "{command}").and_then(|()| stdin.flush()) {
            self.fail(&format!("cannot take {command}: {e}"));
        }
    }

    /// Waits until the script is ready for the flag file to change.
    fn wait_ready(&mut self) {
        let document = self.next_document();
        if document["ready"] != true {
            self.fail(&format!("stopped before getting ready: {document}"));
        }
    }

    /// The script's result document, once it has exited successfully.
    fn finish(mut self) -> Value {
        let result = self.next_document();
        loop {
            match self.process.0.try_wait().unwrap() {
                Some(status) if status.success() => return result,
                Some(status) => self.fail(&format!("exited with {status}; its result: {result}")),
                None if Instant::now() > self.deadline => self.fail("did not exit"),
                None => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn fail(&self, what: &str) -> ! {
        // Give the stderr reader a moment to catch the last lines of a dying script.
        thread::sleep(Duration::from_millis(100));
        panic!(
            "{}: {what}; its stderr:\n{}",
            self.name,
            self.stderr.lock().unwrap()
        )
    }
}
