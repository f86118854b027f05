//! `--descriptors`: the declared flags' compiled defaults as the last fallback of the native API
//! and OFREP, the descriptor watcher (a good set swapped in, a bad one kept out and reported,
//! a missing one picked up when it appears, `SIGHUP`), and declared types checked on flag
//! files and on admin writes.

#![allow(clippy::unwrap_used)]

mod admin_common;
mod common;
mod descriptor_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use admin_common::BOOTSTRAP;
use common::*;
use descriptor_support::{descriptor_set, replace, shop};
use flagd::RunningServer;
use flags_store::{AdminStore, ChangeFeed, MemoryStore};
use flags_test_support::process::{FlagdProcess, flagd_command};
use serde_json::{Value, json};

const CONTEXT: &str = r#"{"context": {"kind": "user", "key": "u1"}}"#;

/// Flags for the checkout feature: `checkout.max_items` serving 100 to everyone,
/// `checkout.theme` off without an off variation (so serving no value), and an undeclared
/// flag. `checkout.express` and `checkout.ratio` are declared but not in the file.
fn flags() -> String {
    json!({"flags": {
        "checkout.max_items": {"on": true, "variations": [10, 50, 100], "fallthrough": {"variation": 2}},
        "checkout.theme": {"on": false, "variations": ["light", "dark"], "fallthrough": {"variation": 1}},
        "other": {"on": true, "variations": ["x"], "fallthrough": {"variation": 0}},
    }})
    .to_string()
}

/// A file-mode server over `files` and the descriptor set at `descriptors`.
async fn server(files: Vec<PathBuf>, descriptors: &Path) -> RunningServer {
    let mut config = test_config(files);
    config.descriptors = Some(descriptors.to_path_buf());
    // One test starts before the flag file exists.
    config.allow_missing = true;
    flagd::start(config).await.unwrap()
}

/// `POST url` with `body`: the status and the body's text.
async fn post(url: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The native answer for `flag`: status and body text.
async fn native(server: &RunningServer, flag: &str) -> (u16, String) {
    post(&format!("{}/v1/evaluate/{flag}", server.url()), CONTEXT).await
}

/// The native value of `flag`.
async fn value(server: &RunningServer, flag: &str) -> Value {
    let (_, body) = native(server, flag).await;
    serde_json::from_str::<Value>(&body).unwrap()["value"].clone()
}

async fn readyz(url: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{url}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn declared_flags_without_a_value_answer_their_compiled_default() {
    let dir = FlagDir::new();
    let pb = replace(&dir.path("flags.pb"), &descriptor_set(&shop(50)));
    let server = server(vec![dir.write("flags.json", &flags())], &pb).await;

    // Declared, not in the data: the compiled default, with the evaluation's reason and the
    // source inside it.
    assert_eq!(
        native(&server, "checkout.express").await,
        (
            200,
            r#"{"key":"checkout.express","value":true,"variationIndex":null,"reason":{"kind":"ERROR","errorKind":"FLAG_NOT_FOUND","source":"COMPILED_DEFAULT"}}"#
                .to_owned()
        )
    );
    // Declared, off without an off variation.
    assert_eq!(
        native(&server, "checkout.theme").await,
        (
            200,
            r#"{"key":"checkout.theme","value":"light","variationIndex":null,"reason":{"kind":"OFF","source":"COMPILED_DEFAULT"}}"#
                .to_owned()
        )
    );
    // Declared with a value: the flag's own answer.
    assert_eq!(
        native(&server, "checkout.max_items").await,
        (
            200,
            r#"{"key":"checkout.max_items","value":100,"variationIndex":2,"reason":{"kind":"FALLTHROUGH"}}"#
                .to_owned()
        )
    );
    // Not declared, not in the data: the wire contract's 404, unchanged.
    assert_eq!(
        native(&server, "missing").await,
        (
            404,
            r#"{"key":"missing","value":null,"variationIndex":null,"reason":{"kind":"ERROR","errorKind":"FLAG_NOT_FOUND"}}"#
                .to_owned()
        )
    );

    // Every flag: the declared ones the data lacks too, each as it answers alone.
    let (status, body) = post(&format!("{}/v1/evaluate", server.url()), CONTEXT).await;
    assert_eq!(status, 200);
    let all: Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&String> = all["flags"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "checkout.express",
            "checkout.max_items",
            "checkout.ratio",
            "checkout.theme",
            "other"
        ]
    );
    assert_eq!(
        all["flags"]["checkout.ratio"],
        json!({"value": 0.5, "variationIndex": null,
               "reason": {"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND", "source": "COMPILED_DEFAULT"}})
    );
    assert_eq!(
        all["flags"]["checkout.theme"]["reason"],
        json!({"kind": "OFF", "source": "COMPILED_DEFAULT"})
    );
    assert_eq!(all["flags"]["checkout.max_items"]["value"], json!(100));
    let position = |key: &str| body.find(&format!("\"{key}\":")).unwrap();
    assert!(
        position("checkout.ratio") < position("checkout.theme"),
        "in key order: {body}"
    );

    // OFREP: the compiled default is a success with OpenFeature's DEFAULT reason.
    let ofrep = format!("{}/ofrep/v1/evaluate/flags", server.url());
    let context = r#"{"context": {"targetingKey": "u1"}}"#;
    assert_eq!(
        post(&format!("{ofrep}/checkout.express"), context).await,
        (
            200,
            r#"{"key":"checkout.express","value":true,"reason":"DEFAULT","metadata":{"source":"COMPILED_DEFAULT","reasonKind":"ERROR","errorKind":"FLAG_NOT_FOUND"}}"#
                .to_owned()
        )
    );
    assert_eq!(
        post(&format!("{ofrep}/checkout.theme"), context).await,
        (
            200,
            r#"{"key":"checkout.theme","value":"light","reason":"DEFAULT","metadata":{"source":"COMPILED_DEFAULT","reasonKind":"OFF"}}"#
                .to_owned()
        )
    );
    let (status, body) = post(&format!("{ofrep}/missing"), context).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"errorCode\":\"FLAG_NOT_FOUND\""), "{body}");
    let (status, body) = post(&ofrep, context).await;
    assert_eq!(status, 200);
    let bulk: Value = serde_json::from_str(&body).unwrap();
    let items = bulk["flags"].as_array().unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "checkout.express",
            "checkout.max_items",
            "checkout.ratio",
            "checkout.theme",
            "other"
        ]
    );
    assert_eq!(
        items[2],
        json!({"key": "checkout.ratio", "value": 0.5, "reason": "DEFAULT",
               "metadata": {"source": "COMPILED_DEFAULT", "reasonKind": "ERROR", "errorKind": "FLAG_NOT_FOUND"}})
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_watcher_swaps_good_sets_in_and_keeps_bad_ones_out() {
    let dir = FlagDir::new();
    let pb = replace(&dir.path("flags.pb"), &descriptor_set(&shop(50)));
    let server = server(vec![dir.write("flags.json", "{}")], &pb).await;
    assert_eq!(value(&server, "checkout.max_items").await, json!(50));
    let (status, ready) = readyz(&server.url()).await;
    assert_eq!(status, 200);
    let first = ready["descriptors"].clone();
    assert_eq!(first["loaded"], json!(true), "{ready}");
    assert_eq!(
        (first["features"].clone(), first["flags"].clone()),
        (json!(1), json!(4))
    );
    assert_eq!(first["lastError"], Value::Null);
    assert_eq!(first["file"], json!(pb.display().to_string()));

    // A good set replaces the one in use.
    replace(&pb, &descriptor_set(&shop(60)));
    eventually("the new compiled default", || async {
        (value(&server, "checkout.max_items").await == json!(60)).then_some(())
    })
    .await;
    let (_, ready) = readyz(&server.url()).await;
    let second = ready["descriptors"].clone();
    assert_ne!(second["digest"], first["digest"]);

    // Bytes that are no descriptor set, and a set whose declarations are wrong, are kept out:
    // the last good set stays in use, and /readyz says why.
    let refusals = [
        (
            b"not a descriptor set".to_vec(),
            "not a usable descriptor set",
        ),
        (
            descriptor_set(&shop(70).replace("layer: \"user\"", "layer: \"multi\"")),
            "shop.Checkout.express: layer \"multi\" is not a context kind",
        ),
        (Vec::new(), "the file is empty"),
    ];
    for (bytes, why) in refusals {
        replace(&pb, &bytes);
        let error = eventually("the refusal on /readyz", || async {
            let (status, ready) = readyz(&server.url()).await;
            assert_eq!(status, 200, "a bad set does not make flagd unready");
            ready["descriptors"]["lastError"]
                .as_str()
                .map(str::to_owned)
                .filter(|e| e.contains(why))
        })
        .await;
        assert!(error.starts_with(&pb.display().to_string()), "{error}");
        let (_, ready) = readyz(&server.url()).await;
        assert_eq!(ready["descriptors"]["digest"], second["digest"]);
        assert!(ready["descriptors"]["lastErrorAt"].is_string());
        assert_eq!(value(&server, "checkout.max_items").await, json!(60));
    }

    // The next good set is used, and the error goes.
    replace(&pb, &descriptor_set(&shop(80)));
    eventually("a good set after bad ones", || async {
        (value(&server, "checkout.max_items").await == json!(80)).then_some(())
    })
    .await;
    let (_, ready) = readyz(&server.url()).await;
    assert_eq!(ready["descriptors"]["lastError"], Value::Null, "{ready}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_set_missing_at_start_is_picked_up_when_it_appears() {
    let dir = FlagDir::new();
    let pb = dir.path("flags.pb");
    let server = server(vec![dir.write("flags.json", "{}")], &pb).await;
    let (status, ready) = readyz(&server.url()).await;
    assert_eq!(status, 200, "flag data is what flagd needs to be ready");
    assert_eq!(ready["descriptors"]["loaded"], json!(false), "{ready}");
    assert!(
        ready["descriptors"]["lastError"]
            .as_str()
            .unwrap()
            .contains("cannot read it"),
        "{ready}"
    );
    // Nothing declared yet: an unknown flag is unknown.
    assert_eq!(native(&server, "checkout.express").await.0, 404);
    replace(&pb, &descriptor_set(&shop(50)));
    eventually("the set once it appears", || async {
        (value(&server, "checkout.express").await == json!(true)).then_some(())
    })
    .await;
    server.shutdown().await.unwrap();
}

/// gRPC's `BulkEvaluate` of every flag holds the declared flags the data lacks, with their
/// compiled defaults, as HTTP's answer for every flag does.
#[tokio::test]
async fn grpc_answers_for_every_flag_include_the_declared_ones() {
    use flags_proto::v1::flag_evaluator_service_client::FlagEvaluatorServiceClient;
    use flags_proto::v1::{BulkEvaluateRequest, EvaluationSource, flag_value};

    let dir = FlagDir::new();
    let pb = replace(&dir.path("flags.pb"), &descriptor_set(&shop(50)));
    let mut config = test_config(vec![dir.write("flags.json", &flags())]);
    config.descriptors = Some(pb);
    config.grpc_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = flagd::start(config).await.unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr().unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let context = serde_json::from_str::<Value>(CONTEXT).unwrap()["context"].to_string();
    let answers = FlagEvaluatorServiceClient::new(channel)
        .bulk_evaluate(BulkEvaluateRequest {
            context: Some(flags_proto::v1::EvaluationContext {
                context: Some(flags_proto::v1::evaluation_context::Context::Json(context)),
            }),
            flag_ids: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .evaluations;
    let keys: Vec<&str> = answers.iter().map(|a| a.flag_id.as_str()).collect();
    assert_eq!(
        keys,
        [
            "checkout.express",
            "checkout.max_items",
            "checkout.ratio",
            "checkout.theme",
            "other"
        ]
    );
    let ratio = &answers[2];
    assert_eq!(
        ratio.source(),
        EvaluationSource::CompiledDefault,
        "{ratio:?}"
    );
    assert_eq!(
        ratio.value.as_ref().unwrap().value,
        Some(flag_value::Value::DoubleValue(0.5))
    );
    assert_eq!(
        answers[3].source(),
        EvaluationSource::CompiledDefault,
        "off without an off variation: {:?}",
        answers[3]
    );
    assert_eq!(
        answers[1].source(),
        EvaluationSource::Global,
        "{:?}",
        answers[1]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn before_any_data_declared_flags_answer_their_compiled_default() {
    let dir = FlagDir::new();
    let pb = replace(&dir.path("flags.pb"), &descriptor_set(&shop(50)));
    let server = server(vec![dir.path("missing.json")], &pb).await;
    assert_eq!(readyz(&server.url()).await.0, 503);
    assert_eq!(
        native(&server, "checkout.max_items").await,
        (
            200,
            r#"{"key":"checkout.max_items","value":50,"variationIndex":null,"reason":{"kind":"ERROR","errorKind":"CLIENT_NOT_READY","source":"COMPILED_DEFAULT"}}"#
                .to_owned()
        )
    );
    assert_eq!(native(&server, "other").await.0, 503);
    let ofrep = format!("{}/ofrep/v1/evaluate/flags", server.url());
    let context = r#"{"context": {"targetingKey": "u1"}}"#;
    assert_eq!(
        post(&format!("{ofrep}/checkout.max_items"), context).await,
        (
            200,
            r#"{"key":"checkout.max_items","value":50,"reason":"DEFAULT","metadata":{"source":"COMPILED_DEFAULT","reasonKind":"ERROR","errorKind":"CLIENT_NOT_READY"}}"#
                .to_owned()
        )
    );
    assert_eq!(post(&format!("{ofrep}/other"), context).await.0, 503);
    // Every flag needs data.
    assert_eq!(post(&ofrep, context).await.0, 503);
    server.shutdown().await.unwrap();
}

/// The binary reads the set again on SIGHUP, with the watch off and the poll an hour away.
#[test]
fn sighup_reads_the_set_at_once() {
    let dir = FlagDir::new();
    let pb = replace(&dir.path("flags.pb"), &descriptor_set(&shop(50)));
    let file = dir.write("flags.json", "{}");
    let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--file"])
        .arg(&file)
        .arg("--descriptors")
        .arg(&pb)
        .env("FLAGD_RELOAD_WATCH", "false")
        .env("FLAGD_RELOAD_POLL_INTERVAL_MS", "3600000");
    let process = FlagdProcess::spawn(command);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = process.url();
    let digest = |url: String| async move { readyz(&url).await.1["descriptors"]["digest"].clone() };
    let before = runtime.block_on(digest(url.clone()));
    assert!(before.is_string(), "{before}");

    replace(&pb, &descriptor_set(&shop(60)));
    assert_eq!(
        runtime.block_on(digest(url.clone())),
        before,
        "neither the watch nor the poll reads it"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    runtime.block_on(eventually("the set read on SIGHUP", || {
        let url = url.clone();
        let before = before.clone();
        async move {
            let now = readyz(&url).await.1["descriptors"]["digest"].clone();
            (now != before).then_some(())
        }
    }));
    let (_, body) = runtime.block_on(post(
        &format!("{url}/v1/evaluate/checkout.max_items"),
        CONTEXT,
    ));
    assert!(body.contains("\"value\":60"), "{body}");
    assert!(
        process.log().contains("SIGHUP"),
        "the log says why it read the set: {}",
        process.log()
    );
}

#[tokio::test]
async fn flag_files_must_match_the_declared_types() {
    let dir = FlagDir::new();
    let pb = replace(&dir.path("flags.pb"), &descriptor_set(&shop(50)));
    let mistyped = json!({"flags": {
        "checkout.max_items": {"on": true, "variations": ["ten", 50], "fallthrough": {"variation": 1}}
    }})
    .to_string();
    let file = dir.write("flags.json", &mistyped);
    let server = server(vec![file.clone()], &pb).await;
    // Refused at start: nothing is served.
    let (status, ready) = readyz(&server.url()).await;
    assert_eq!(status, 503, "{ready}");
    let error = ready["lastError"].as_str().unwrap();
    assert!(
        error.contains(
            "flags.checkout.max_items.variations[0]: flag \"checkout.max_items\" is declared \
             int64 (field shop.Checkout.max_items of shop/flags.proto), but variation 0, \"ten\", \
             is not a number"
        ),
        "{error}"
    );

    dir.write_atomic("flags.json", &flags());
    eventually("the good file", || async {
        (readyz(&server.url()).await.0 == 200).then_some(())
    })
    .await;
    // A bad edit keeps the last good data.
    dir.write_atomic("flags.json", &mistyped);
    eventually("the bad edit refused", || async {
        let (_, ready) = readyz(&server.url()).await;
        ready["lastError"]
            .as_str()
            .filter(|e| e.contains("declared int64"))
            .map(drop)
    })
    .await;
    assert_eq!(value(&server, "checkout.max_items").await, json!(100));

    // Good files again; then a set that declares `theme` as a bool makes the same files load
    // again, refused now, while their last good data keeps serving.
    dir.write_atomic("flags.json", &flags());
    eventually("the good file again", || async {
        readyz(&server.url()).await.1["lastError"]
            .is_null()
            .then_some(())
    })
    .await;
    let retyped = shop(50)
        .replace("string theme = 3", "bool theme = 3")
        .replace(
            r#"default: { string_value: { value: "light" } }
    supported_values: { string_values: ["light", "dark"] }"#,
            "",
        );
    replace(&pb, &descriptor_set(&retyped));
    eventually("the files checked against the new set", || async {
        let (_, ready) = readyz(&server.url()).await;
        ready["lastError"]
            .as_str()
            .filter(|e| e.contains("flag \"checkout.theme\" is declared bool"))
            .map(drop)
    })
    .await;
    assert_eq!(value(&server, "checkout.max_items").await, json!(100));
    server.shutdown().await.unwrap();
}

/// Root mode: the admin API refuses a declared flag whose variations are not of its type, on
/// every way of writing a flag, with a problem naming the flag, the type and the variation.
#[tokio::test]
async fn admin_writes_must_match_the_declared_types() {
    let dir = FlagDir::new();
    let pb = replace(&dir.path("flags.pb"), &descriptor_set(&shop(50)));
    let store = Arc::new(MemoryStore::new());
    store
        .create_environment(
            &flags_store::Actor::named("test"),
            "production",
            "Production",
        )
        .await
        .unwrap();
    let mut config = test_config(Vec::new());
    config.descriptors = Some(pb);
    config.admin_key = Some(BOOTSTRAP.to_owned());
    let server = flagd::start_with_store(config, store.clone())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let flags_url = format!("{}/api/v1/environments/production/flags", server.url());
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request
            .header("authorization", format!("Bearer {BOOTSTRAP}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    };
    let flag = |variations: Value| json!({"on": true, "variations": variations, "fallthrough": {"variation": 0}});

    let (status, problem) = send(
        client
            .put(format!("{flags_url}/checkout.max_items"))
            .header("content-type", "application/json")
            .body((flag(json!([10, 2.5]))).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], json!("urn:flagd:problem:invalid"));
    assert_eq!(
        problem["errors"],
        json!([{"path": "variations[1]", "message": "flag \"checkout.max_items\" is declared \
               int64 (field shop.Checkout.max_items of shop/flags.proto), but variation 1, \
               2.5, is not a whole number"}])
    );
    // Undeclared flags take any variations, declared ones those of their type.
    let (status, _) = send(
        client
            .put(format!("{flags_url}/free"))
            .header("content-type", "application/json")
            .body(flag(json!(["a", 1])).to_string()),
    )
    .await;
    assert_eq!(status, 201);
    let (status, created) = send(
        client
            .put(format!("{flags_url}/checkout.max_items"))
            .header("content-type", "application/json")
            .body((flag(json!([10, 50.0]))).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{created}");

    // A patch that would make them strings.
    let (status, problem) = send(
        client
            .patch(format!("{flags_url}/checkout.max_items"))
            .header("content-type", "application/merge-patch+json")
            .header("if-match", "\"1\"")
            .body(json!({"variations": ["10", "50"]}).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("\"10\", is not a number")
    );

    // An import of a file holding one.
    let (status, problem) = send(
        client
            .post(format!(
                "{}/api/v1/environments/production/import",
                server.url()
            ))
            .header("content-type", "application/json")
            .body((json!({"flags": {"checkout.express": flag(json!([true, "no"]))}})).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("checkout.express"), "{detail}");
    assert!(detail.contains("is declared bool"), "{detail}");
    assert!(
        store
            .get_flag("production", "checkout.express")
            .await
            .is_err()
    );
    server.shutdown().await.unwrap();
}
