//! What flagd tells the people who run it: the log's formats and its request lines, what start
//! says about missing files, keys and an unreachable database, the JSON bodies of refused SDK
//! keys, the process and build metrics of every mode, and `flagd validate` naming the fields it
//! does not know.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use flags_store::{AdminStore, MemoryStore};
use flags_test_support::postgres;
use flags_test_support::process::{FlagdProcess, flagd_command};
use flags_test_support::wait::Poll;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flagd");

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/flags.yaml")
        .display()
        .to_string()
}

/// A port nothing listens on: bound, then let go.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `process`'s log holds `text`, and returns the log.
async fn log_with(process: &FlagdProcess, text: &str, within: Duration) -> String {
    Poll::new()
        .within(within)
        .until_some(&format!("the log to say {text:?}"), || async {
            let log = process.log();
            log.contains(text).then_some(log)
        })
        .await
}

async fn evaluate(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/evaluate/new-checkout"))
        .header("content-type", "application/json")
        .body(json!({"context": {"kind": "user", "key": "u1"}}).to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn json_logs_carry_one_line_per_request() {
    let mut command = flagd_command(BIN);
    command.args([
        "serve",
        "--file",
        &example(),
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    let flagd = FlagdProcess::spawn(command);
    assert_eq!(evaluate(&flagd.url()).await.status(), 200);
    log_with(&flagd, "flagd::request", Duration::from_secs(10)).await;
    // The start's line may come after the request's: requests are served as soon as flagd
    // listens.
    let log = log_with(&flagd, "flagd serving", Duration::from_secs(10)).await;
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
    }
    let request = lines
        .iter()
        .find(|line| line["target"] == "flagd::request")
        .unwrap();
    assert_eq!(request["level"], "INFO", "{request}");
    assert_eq!(request["method"], "POST", "{request}");
    assert_eq!(request["path"], "/v1/evaluate/new-checkout", "{request}");
    assert_eq!(request["status"], 200, "{request}");
    assert!(request["latency_ms"].as_f64().unwrap() >= 0.0, "{request}");
    // The start's own lines, fields flattened beside the message.
    let serving = lines
        .iter()
        .find(|line| line["message"] == "flagd serving")
        .unwrap();
    assert_eq!(serving["target"], "flagd", "{serving}");
    assert!(serving["addr"].is_string(), "{serving}");
}

#[tokio::test]
async fn the_request_log_can_be_turned_off() {
    let mut command = flagd_command(BIN);
    command.args([
        "serve",
        "--file",
        &example(),
        "--listen",
        "127.0.0.1:0",
        "--request-log",
        "false",
    ]);
    let quiet = FlagdProcess::spawn(command);
    let mut command = flagd_command(BIN);
    command
        .args(["serve", "--file", &example(), "--listen", "127.0.0.1:0"])
        .env("FLAGD_LOG_FORMAT", "text");
    let logged = FlagdProcess::spawn(command);
    for flagd in [&quiet, &logged] {
        assert_eq!(evaluate(&flagd.url()).await.status(), 200);
    }
    // Both answered; the one that logs requests has written its line by now, so the other
    // would have too.
    let line = log_with(&logged, "flagd::request", Duration::from_secs(10)).await;
    assert!(
        line.contains("method=POST path=/v1/evaluate/new-checkout status=200"),
        "{line}"
    );
    assert!(!quiet.log().contains("flagd::request"), "{}", quiet.log());
    assert!(quiet.log().contains("flagd serving"), "{}", quiet.log());
}

#[tokio::test]
async fn a_missing_flag_file_stops_the_start_unless_allowed() {
    let dir = FlagDir::new();
    let missing = dir.path("flags.json");
    let output = flagd_command(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--file"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "flagd: flag file {} does not exist (pass --allow-missing to start anyway and serve \
             it once it appears)\n",
            missing.display()
        )
    );

    let mut command = flagd_command(BIN);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-missing",
            "--file",
        ])
        .arg(&missing);
    let flagd = FlagdProcess::spawn(command);
    std::fs::write(&missing, r#"{"flagValues": {"late": true}}"#).unwrap();
    Poll::new()
        .within(Duration::from_secs(10))
        .until_some("the file to be served once it appears", || async {
            let ready = reqwest::get(format!("{}/readyz", flagd.url())).await.ok()?;
            (ready.status() == 200).then_some(())
        })
        .await;
}

#[tokio::test]
async fn an_admin_key_without_a_database_is_warned_about() {
    let mut command = flagd_command(BIN);
    command
        .args(["serve", "--file", &example(), "--listen", "127.0.0.1:0"])
        .env("FLAGD_ADMIN_KEY", "secret");
    let flagd = FlagdProcess::spawn(command);
    let log = log_with(&flagd, "has no effect", Duration::from_secs(10)).await;
    assert!(
        log.contains(
            "--admin-key (FLAGD_ADMIN_KEY) has no effect here: the admin API is served only with \
             --database"
        ),
        "{log}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_named_by_its_address() {
    let port = closed_port();
    let mut command = flagd_command(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(format!("postgres://flagd@127.0.0.1:{port}/flags"))
        .env("FLAGD_SYNC_BACKOFF_BASE_MS", "100")
        .env("FLAGD_ADMIN_KEY", "secret");
    let flagd = FlagdProcess::spawn(command);
    let refused = format!("connection refused at 127.0.0.1:{port}");
    let log = log_with(
        &flagd,
        "store unreachable; serving nothing until it answers",
        Duration::from_secs(30),
    )
    .await;
    assert!(
        log.lines()
            .any(|l| l.contains("the store is unreachable") && l.contains(&refused)),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("serving nothing until it answers") && l.contains(&refused)),
        "{log}"
    );
    assert!(!log.contains("pool timed out"), "{log}");
    assert!(!log.contains("serving the last data"), "{log}");
    // The one-shot commands say the same.
    let output = flagd_command(BIN)
        .args(["migrate", "--database"])
        .arg(format!("postgres://flagd@127.0.0.1:{port}/flags"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        format!("flagd: cannot use the database: cannot reach the database: {refused}\n")
    );
}

#[tokio::test]
async fn root_mode_starts_without_noise_and_asks_for_an_admin_key() {
    let db = postgres().create_database();
    for _ in 0..2 {
        let mut command = flagd_command(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--database"])
            .arg(db.url());
        let flagd = FlagdProcess::spawn(command);
        let log = log_with(&flagd, "flagd serving", Duration::from_secs(20)).await;
        assert!(!log.contains("already exists"), "{log}");
        assert!(!log.contains("sqlx::postgres::notice"), "{log}");
        assert!(
            log.contains("no --admin-key (FLAGD_ADMIN_KEY): the admin API accepts only admin keys"),
            "{log}"
        );
    }
}

#[tokio::test]
async fn refused_sdk_keys_are_told_which_header_to_send() {
    let mut config = test_config(vec![]);
    config.sdk_keys = vec!["right-key".to_owned()];
    let dir = FlagDir::new();
    config.files = vec![dir.write("flags.json", r#"{"flagValues": {"f": true}}"#)];
    let server = flagd::start(config).await.unwrap();
    let client = reqwest::Client::new();
    for path in [
        "/v1/evaluate/f",
        "/ofrep/v1/evaluate/flags/f",
        "/ofrep/v1/evaluate/flags",
    ] {
        for (key, says) in [
            (None, "no SDK key was sent"),
            (Some("wrong-key"), "the SDK key was not accepted"),
        ] {
            let mut request = client
                .post(format!("{}{path}", server.url()))
                .header("content-type", "application/json")
                .body(
                    json!({"context": {"kind": "user", "key": "u", "targetingKey": "u"}})
                        .to_string(),
                );
            if let Some(key) = key {
                request = request.header("authorization", key);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{path} {key:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            assert_eq!(body["error"], "UNAUTHORIZED", "{path}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.starts_with(says), "{path}: {message}");
            assert!(message.contains("Authorization: Bearer KEY"), "{message}");
        }
    }
    let accepted = client
        .post(format!("{}/v1/evaluate/f", server.url()))
        .header("authorization", "Bearer right-key")
        .header("content-type", "application/json")
        .body(json!({"context": {"kind": "user", "key": "u"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    server.shutdown().await.unwrap();
}

/// The metrics every mode exports about the process and the build.
async fn assert_process_metrics(url: &str, mode: &str) {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!("flagd_build_info{{version=\"{version}\"}} 1")),
        "{mode}: {text}"
    );
    for series in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_threads ",
        "process_start_time_seconds ",
    ] {
        let value: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .unwrap_or_else(|| panic!("{mode}: no {series}in {text}"))
            .trim()
            .parse()
            .unwrap();
        assert!(value >= 0.0, "{mode}: {series}{value}");
    }
}

#[tokio::test]
async fn every_mode_exports_process_and_build_metrics() {
    let dir = FlagDir::new();
    let mut config = test_config(vec![dir.write("flags.json", r#"{"flagValues": {"f": 1}}"#)]);
    config.sdk_keys = vec!["key".to_owned()];
    let file = flagd::start(config).await.unwrap();
    assert_process_metrics(&file.url(), "file").await;

    let store: Arc<dyn AdminStore> = Arc::new(MemoryStore::new());
    let root = flagd::start_with_store(test_config(Vec::new()), store)
        .await
        .unwrap();
    assert_process_metrics(&root.url(), "root").await;

    let mut config = test_config(Vec::new());
    config.upstream.url = Some(file.url());
    config.sdk_keys = vec!["key".to_owned()];
    let proxy = flagd::start(config).await.unwrap();
    assert_process_metrics(&proxy.url(), "proxy").await;
    for server in [proxy, root, file] {
        server.shutdown().await.unwrap();
    }
}

#[test]
fn validate_names_the_fields_it_does_not_know() {
    let dir = FlagDir::new();
    let file = dir.write(
        "flags.json",
        r#"{"flags": {"a": {"on": true, "variatons": [1, 2], "fallthrough": {"variation": 0}}}}"#,
    );
    let output = flagd_command(BIN)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let first = stdout.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "warning: {}: flags.a.variatons: unknown field \"variatons\", ignored (did you mean \
             \"variations\"?)",
            file.display()
        )
    );
}

/// The example configuration file reads, and says what it says.
#[test]
fn the_example_configuration_file_reads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flagd.yaml");
    let config = flagd::config::Config::from_yaml_file(&path).unwrap();
    let defaults = flagd::config::Config::default();
    assert_eq!(config.listen, defaults.listen);
    assert_eq!(config.grpc_listen, Some("127.0.0.1:8014".parse().unwrap()));
    assert_eq!(config.files, [Path::new("examples/flags.yaml")]);
    // Everything else it spells out is the default, as its comments say.
    assert_eq!(config.http, defaults.http);
    assert_eq!(config.reload, defaults.reload);
    assert_eq!(config.sync, defaults.sync);
    assert_eq!(config.log, defaults.log);
    assert_eq!(config.log_format, defaults.log_format);
    assert_eq!(config.request_log, defaults.request_log);
    assert_eq!(config.allow_missing, defaults.allow_missing);
}

/// The README lists every environment variable flagd reads.
#[test]
fn the_readme_lists_every_variable() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let mut names: Vec<&str> = flagd::config::ENV_VARS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    names.push("FLAGD_ADMIN_URL");
    for name in names {
        assert!(readme.contains(&format!("`{name}`")), "README lacks {name}");
    }
}
