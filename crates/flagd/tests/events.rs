//! Analytics events through a real `flagd serve`: SDK events posted to `/bulk` and flagd's own
//! evaluations reaching the JSON-lines file exporter (`--export-dir`), a graceful stop exporting
//! a million events in flight, events spooled while a webhook is down surviving a SIGKILL and
//! arriving after the restart, and the exporters' numbers in `/metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flags_test_support::process::{FlagdProcess, flagd_command};
use flags_test_support::wait::Poll;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flagd");

const FLAGS: &str = r#"{"flags": {
  "checkout": {"key": "checkout", "version": 7, "on": true, "variations": [false, true],
               "offVariation": 0, "fallthrough": {"variation": 1}, "salt": "s"}
}}"#;

/// A flag file in a directory of its own, with the directory events are exported to.
struct Dirs {
    _root: tempfile::TempDir,
    flags: PathBuf,
    export: PathBuf,
    spool: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::tempdir().unwrap();
        let flags = root.path().join("flags.json");
        std::fs::write(&flags, FLAGS).unwrap();
        let export = root.path().join("export");
        let spool = root.path().join("spool");
        Dirs {
            flags,
            export,
            spool,
            _root: root,
        }
    }
}

fn serve(args: &[&str], env: &[(&str, &str)]) -> FlagdProcess {
    let mut command = flagd_command(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .args(args)
        .envs(env.iter().copied());
    FlagdProcess::spawn(command)
}

/// Runs one request on a runtime of its own, so tests stay plain threads.
fn block<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn post(flagd: &FlagdProcess, path: &str, body: &Value) -> u16 {
    block(async {
        http()
            .post(format!("{}{path}", flagd.url()))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

fn metrics(flagd: &FlagdProcess) -> String {
    block(async {
        http()
            .get(format!("{}/metrics", flagd.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

/// The value of one series in a scrape, 0 when absent.
fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn sigterm(flagd: &FlagdProcess) {
    let status = Command::new("kill")
        .args(["-TERM", &flagd.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `count` custom events, each with a distinct `key` (`goal-{i}`), as one `/bulk` payload.
fn customs(from: usize, count: usize) -> Value {
    Value::Array(
        (from..from + count)
            .map(|i| {
                json!({"kind": "custom", "creationDate": 1_700_000_000_000_u64 + i as u64,
                       "key": format!("goal-{i}"), "contextKeys": {"user": format!("u{}", i % 97)},
                       "metricValue": i as f64})
            })
            .collect(),
    )
}

#[test]
fn sdk_events_and_flagds_own_evaluations_reach_the_file_exporter() {
    let dirs = Dirs::new();
    let flagd = serve(
        &[
            "--file",
            dirs.flags.to_str().unwrap(),
            "--export-dir",
            dirs.export.to_str().unwrap(),
            "--server-evaluations",
            "all",
        ],
        &[("FLAGD_EVENTS_FLUSH_INTERVAL_MS", "50")],
    );
    let payload = json!([
        {"kind": "index", "creationDate": 1, "context": {"kind": "user", "key": "alice"}},
        {"kind": "feature", "creationDate": 2, "key": "checkout", "version": 7, "variation": 1,
         "value": true, "default": false, "contextKeys": {"user": "alice"},
         "reason": {"kind": "FALLTHROUGH"}},
        {"kind": "custom", "creationDate": 3, "key": "purchase", "metricValue": 12.5,
         "contextKeys": {"user": "alice"}},
        {"kind": "summary", "startDate": 1, "endDate": 4, "features": {"checkout": {
            "default": false, "contextKinds": ["user"],
            "counters": [{"value": true, "variation": 1, "version": 7, "count": 40}]}}},
        {"kind": "metrics", "creationDate": 5, "metric": "latency", "api": "poll", "value": 3.5}
    ]);
    assert_eq!(post(&flagd, "/bulk", &payload), 202);
    let context = json!({"context": {"kind": "user", "key": "bob", "anonymous": true}});
    assert_eq!(post(&flagd, "/v1/evaluate/checkout", &context), 200);
    assert_eq!(
        post(
            &flagd,
            "/ofrep/v1/evaluate/flags/checkout",
            &json!({"context": {"targetingKey": "carol"}})
        ),
        200
    );

    let records = Poll::new()
        .within(Duration::from_secs(10))
        .blocking_until_some("every record in the export", || {
            let records = common::exported_records(&dirs.export);
            (records.len() >= 6).then_some(records)
        });
    let by_kind = |kind: &str, source: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["kind"] == kind && r["source"] == source)
            .collect()
    };
    let feature = by_kind("feature", "SDK");
    assert_eq!(feature.len(), 1, "{records:#?}");
    assert_eq!(
        (
            &feature[0]["userKey"],
            &feature[0]["variation"],
            &feature[0]["version"],
            &feature[0]["value"]
        ),
        (&json!("alice"), &json!("1"), &json!("7"), &json!(true))
    );
    assert_eq!(feature[0]["metadata"]["environment"], "default");
    let custom = by_kind("custom", "SDK");
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0]["value"], 12.5);
    let summary = by_kind("summary", "SDK");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["count"], 40);
    assert_eq!(by_kind("metrics", "SDK").len(), 1);
    let server = by_kind("feature", "SERVER");
    let users: BTreeSet<_> = server
        .iter()
        .map(|r| {
            (
                r["userKey"].as_str().unwrap(),
                r["contextKind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        users,
        BTreeSet::from([("bob", "anonymousUser"), ("carol", "user")]),
        "{records:#?}"
    );
    for record in &server {
        assert_eq!(
            (&record["key"], &record["variation"], &record["version"]),
            (&json!("checkout"), &json!("1"), &json!("7"))
        );
        assert_eq!(record["metadata"]["reason"]["kind"], "FALLTHROUGH");
    }
    assert_eq!(records.len(), 6, "nothing else: {records:#?}");

    let text = metrics(&flagd);
    let name = format!("file:{}", dirs.export.display());
    assert_eq!(
        series(
            &text,
            &format!(r#"flagd_export_exported_total{{exporter="{name}"}}"#)
        ),
        6,
        "{text}"
    );
}

#[test]
fn a_graceful_stop_exports_a_million_events_in_flight() {
    const PER_POST: usize = 10_000;
    const POSTS: usize = 100;
    let dirs = Dirs::new();
    let mut flagd = serve(
        &[
            "--file",
            dirs.flags.to_str().unwrap(),
            "--export-dir",
            dirs.export.to_str().unwrap(),
        ],
        // Nothing is flushed on a timer before the stop: every event is in flight at SIGTERM.
        &[
            ("FLAGD_EVENTS_FLUSH_INTERVAL_MS", "3600000"),
            ("FLAGD_EVENTS_MAX_IN_MEMORY", "2000000"),
        ],
    );
    for post_index in 0..POSTS {
        let status = post(&flagd, "/bulk", &customs(post_index * PER_POST, PER_POST));
        assert_eq!(status, 202);
    }
    sigterm(&flagd);
    let status = flagd.wait_exit_within(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{}", flagd.log());
    let records = common::exported_records(&dirs.export);
    assert_eq!(records.len(), POSTS * PER_POST);
    let distinct: BTreeSet<&str> = records.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(distinct.len(), POSTS * PER_POST, "each event exactly once");
}

/// A webhook receiver that answers 200 and keeps every event it was sent.
struct Receiver {
    events: Arc<Mutex<Vec<Value>>>,
    runtime: tokio::runtime::Runtime,
}

impl Receiver {
    /// Listens on `addr` (port 0: a free one).
    fn start(addr: SocketAddr) -> Receiver {
        use axum::routing::post;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = Arc::clone(&events);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: axum::body::Bytes| {
                let kept = Arc::clone(&kept);
                async move {
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    kept.lock()
                        .unwrap()
                        .extend(body["events"].as_array().unwrap().iter().cloned());
                    axum::http::StatusCode::OK
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver { events, runtime }
    }
}

/// A port nothing listens on, for now.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn events_spooled_while_a_webhook_is_down_survive_a_sigkill() {
    const EVENTS: usize = 5_000;
    let dirs = Dirs::new();
    let hook = free_port();
    let config = dirs.spool.with_extension("yaml");
    std::fs::write(
        &config,
        format!(
            "events:\n  spool_dir: {}\n  max_events_in_memory: 100\n  exporters:\n    - kind: webhook\n      url: http://{hook}/hook\n",
            dirs.spool.display()
        ),
    )
    .unwrap();
    let args = [
        "--file",
        dirs.flags.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let flagd = serve(&args, &[]);
    for i in 0..EVENTS / 500 {
        assert_eq!(post(&flagd, "/bulk", &customs(i * 500, 500)), 202);
    }
    let name = format!(
        r#"exporter="{}""#,
        flags_export::WebhookSettings::new(format!("http://{hook}/hook")).name()
    );
    let spooled = Poll::new()
        .within(Duration::from_secs(10))
        .blocking_until_some("the events past the memory bound to be spooled", || {
            let text = metrics(&flagd);
            let spooled = series(&text, &format!("flagd_export_spool_records{{{name}}}"));
            let queued = series(&text, &format!("flagd_export_queue_depth{{{name}}}"));
            // What is not in the spool is the batch being retried and the queue behind it.
            (spooled + queued == EVENTS as u64 && queued <= 200).then_some(spooled)
        });
    let killed = Command::new("kill")
        .args(["-KILL", &flagd.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(flagd);

    let receiver = Receiver::start(hook);
    let flagd = serve(&args, &[]);
    let received = Poll::new()
        .within(Duration::from_secs(20))
        .blocking_until_some("the spooled events at the webhook", || {
            let events = receiver.events.lock().unwrap().clone();
            (events.len() as u64 >= spooled).then_some(events)
        });
    let keys: BTreeMap<&str, usize> = received.iter().fold(BTreeMap::new(), |mut keys, e| {
        *keys.entry(e["key"].as_str().unwrap()).or_default() += 1;
        keys
    });
    assert!(
        keys.values().all(|&n| n == 1),
        "an event arrived twice: {keys:?}"
    );
    assert!(keys.keys().all(|k| k.starts_with("goal-")));
    let text = metrics(&flagd);
    assert_eq!(
        series(&text, &format!("flagd_export_spool_records{{{name}}}")),
        0,
        "{text}"
    );
    drop(receiver.runtime);
}
