//! Live reload against a real filesystem: in-place writes, editors' atomic renames, Kubernetes
//! `..data` symlink swaps, delete-then-recreate, polling without inotify, and bad edits that
//! keep the last good data while `/readyz` and the metrics say what went wrong.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use common::*;
use flagd::RunningServer;
use serde_json::{Value, json};

fn color(value: &str) -> String {
    json!({"flagValues": {"color": value}, "flags": {"other": {"on": true, "variations": [1], "fallthrough": {"variation": 0}}}})
        .to_string()
}

/// Starts a server whose file watch is what notices changes (the poll is too slow to matter).
async fn watched_server(files: Vec<PathBuf>) -> RunningServer {
    let mut config = test_config(files);
    config.reload.poll_interval_ms = 60_000;
    // Some start before their file exists.
    config.allow_missing = true;
    flagd::start(config).await.unwrap()
}

/// The served value of the simple flag `color`, if any data is served.
fn served_color(server: &RunningServer) -> Option<Value> {
    let snapshot = server.state().store.snapshot()?;
    let data: Value = serde_json::from_slice(&snapshot.latest_all()).unwrap();
    Some(data["flags"]["color"]["variations"][0].clone())
}

async fn wait_for_color(server: &RunningServer, expected: &str) {
    eventually(&format!("color {expected}"), || async {
        (served_color(server)? == expected).then_some(())
    })
    .await;
}

async fn readyz(server: &RunningServer) -> Value {
    let response = reqwest::get(format!("{}/readyz", server.url()))
        .await
        .unwrap();
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn in_place_write_reloads() {
    let dir = FlagDir::new();
    let server = watched_server(vec![dir.write("flags.json", &color("red"))]).await;
    assert_eq!(served_color(&server), Some(json!("red")));
    dir.write("flags.json", &color("green"));
    wait_for_color(&server, "green").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn atomic_rename_reloads_every_time() {
    let dir = FlagDir::new();
    let server = watched_server(vec![dir.write("flags.json", &color("red"))]).await;
    // A watch on the original inode would see only the first rename.
    for value in ["green", "blue", "violet"] {
        dir.write_atomic("flags.json", &color(value));
        wait_for_color(&server, value).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn kubernetes_symlink_swap_reloads() {
    let dir = FlagDir::new();
    // The layout a ConfigMap volume has: flags.json -> ..data/flags.json, ..data -> ..v1.
    std::fs::create_dir(dir.path("..v1")).unwrap();
    std::fs::write(dir.path("..v1/flags.json"), color("red")).unwrap();
    symlink("..v1", dir.path("..data")).unwrap();
    symlink("..data/flags.json", dir.path("flags.json")).unwrap();
    let server = watched_server(vec![dir.path("flags.json")]).await;
    assert_eq!(served_color(&server), Some(json!("red")));

    for (n, value) in [(2, "green"), (3, "blue")] {
        let version = format!("..v{n}");
        std::fs::create_dir(dir.path(&version)).unwrap();
        std::fs::write(dir.path(&format!("{version}/flags.json")), color(value)).unwrap();
        symlink(&version, dir.path("..data_tmp")).unwrap();
        std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).unwrap();
        std::fs::remove_dir_all(dir.path(&format!("..v{}", n - 1))).unwrap();
        wait_for_color(&server, value).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn delete_then_recreate_keeps_serving_and_recovers() {
    let dir = FlagDir::new();
    let path = dir.write("flags.json", &color("red"));
    let server = watched_server(vec![path.clone()]).await;
    std::fs::remove_file(&path).unwrap();
    let ready = eventually("the missing file to be reported", || async {
        let ready = readyz(&server).await;
        ready["lastError"].is_string().then_some(ready)
    })
    .await;
    assert_eq!(
        ready["status"], "SERVING",
        "one failure is not yet degraded"
    );
    let error = ready["lastError"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}: cannot read file: ", show(&path))),
        "{error}"
    );
    assert_eq!(
        served_color(&server),
        Some(json!("red")),
        "the last good data keeps serving"
    );

    dir.write("flags.json", &color("green"));
    wait_for_color(&server, "green").await;
    let ready = readyz(&server).await;
    assert_eq!(
        ready["lastError"],
        Value::Null,
        "a good load clears the error"
    );
    assert_eq!(ready["consecutiveFailures"], 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_edits_keep_the_last_good_data_and_say_why() {
    let dir = FlagDir::new();
    let path = dir.write("flags.json", &color("red"));
    let server = watched_server(vec![path.clone()]).await;
    dir.write(
        "flags.json",
        r#"{"flags": {"broken": {"on": true, "variations": [1], "rules": [{"clauses": [{"attribute": "a", "op": "in", "values": "x"}]}]}}}"#,
    );
    let ready = eventually("the bad edit to be reported", || async {
        let ready = readyz(&server).await;
        ready["lastError"].is_string().then_some(ready)
    })
    .await;
    assert_eq!(
        ready["lastError"],
        format!(
            "{}: flags.broken.rules[0].clauses[0].values: expected an array, found string \"x\"",
            show(&path)
        )
    );
    assert!(ready["lastErrorAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ready["consecutiveFailures"], 1);
    assert_eq!(served_color(&server), Some(json!("red")));

    let metrics = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "flagd_reload_errors_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "flagd_reloads_total 1"),
        "{metrics}"
    );

    // Repeated failures turn the status DEGRADED; data is still served.
    for text in ["{", "[]"] {
        dir.write("flags.json", text);
        let before = readyz(&server).await["consecutiveFailures"]
            .as_u64()
            .unwrap();
        eventually("another failure", || async {
            (readyz(&server).await["consecutiveFailures"]
                .as_u64()
                .unwrap()
                > before)
                .then_some(())
        })
        .await;
    }
    let ready = readyz(&server).await;
    assert_eq!(ready["consecutiveFailures"], 3);
    assert_eq!(ready["status"], "DEGRADED");
    let response = reqwest::get(format!("{}/readyz", server.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "degraded still serves");

    dir.write("flags.json", &color("blue"));
    wait_for_color(&server, "blue").await;
    assert_eq!(readyz(&server).await["status"], "SERVING");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_test_helper_serves_and_reloads() {
    let dir = FlagDir::new();
    let server = flagd::spawn_for_test(vec![dir.write("flags.json", &color("red"))])
        .await
        .unwrap();
    assert!(server.url().starts_with("http://127.0.0.1:"));
    dir.write_atomic("flags.json", &color("green"));
    wait_for_color(&server, "green").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn polling_notices_changes_without_a_watch() {
    let dir = FlagDir::new();
    let mut config = test_config(vec![dir.write("flags.json", &color("red"))]);
    config.reload.watch = false;
    config.reload.poll_interval_ms = 30;
    let server = flagd::start(config).await.unwrap();
    dir.write("flags.json", &color("green"));
    wait_for_color(&server, "green").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn several_files_merge_and_a_duplicate_across_files_is_refused() {
    let dir = FlagDir::new();
    let a = dir.write("a.json", &color("red"));
    let b = dir.write("b.yaml", "flagValues:\n  size: 3\n");
    let server = watched_server(vec![a.clone(), b.clone()]).await;
    let snapshot = server.state().store.snapshot().unwrap();
    assert_eq!(snapshot.flag_count(), 3);

    dir.write("b.yaml", "flagValues:\n  size: 3\n  color: blue\n");
    let ready = eventually("the duplicate to be reported", || async {
        let ready = readyz(&server).await;
        ready["lastError"].is_string().then_some(ready)
    })
    .await;
    assert_eq!(
        ready["lastError"],
        format!(
            "{}: flags.color: duplicate flag key \"color\": defined in both {} and {}",
            show(&b),
            show(&a),
            show(&b)
        )
    );
    assert_eq!(served_color(&server), Some(json!("red")));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_server_started_without_good_data_becomes_ready_when_the_file_appears() {
    let dir = FlagDir::new();
    let path = dir.path("later.json");
    let server = watched_server(vec![path.clone()]).await;
    let response = reqwest::get(format!("{}/readyz", server.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    dir.write("later.json", &color("red"));
    wait_for_color(&server, "red").await;
    let response = reqwest::get(format!("{}/readyz", server.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.shutdown().await.unwrap();
}
