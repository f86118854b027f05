//! The database subcommands of the `flagd` binary against real PostgreSQL: `migrate`,
//! `import` then `export` (round trip), `serve --database` answering with the imported data, and
//! two `flagd serve` processes on one database converging after writes through either.
//!
//! Each test makes its own database on `flags_test_support::postgres()` and drops it.

#![allow(clippy::unwrap_used)]

mod root_support;

use flags_test_support::postgres;
use flags_test_support::process::{FlagdProcess, flagd_command};
use root_support::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flagd");

fn flagd(args: &[&str]) -> (bool, String, String) {
    let output = flagd_command(BIN).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn migrate_import_export_and_serve() {
    let db = postgres().create_database();
    let url = db.url();
    let (ok, stdout, stderr) = flagd(&["migrate", "--database", url]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "migrations applied\n");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = runtime.block_on(async {
        let store = flagd::open_database(url).await.unwrap();
        env_with_key(&*store, "production").await
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flags.json");
    let document = json!({
        "flags": {"f": bool_flag("f", true)},
        "segments": {"s": {"key": "s", "included": ["a"], "salt": "s"}}
    });
    std::fs::write(&file, document.to_string()).unwrap();
    let (ok, stdout, stderr) = flagd(&[
        "import",
        "--file",
        file.to_str().unwrap(),
        "--env",
        "production",
        "--database",
        url,
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["flagsCreated"], json!(["f"]), "{report}");

    let (ok, stdout, stderr) = flagd(&["export", "--env", "production", "--database", url]);
    assert!(ok, "{stderr}");
    let exported: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        exported["flags"]["f"]["fallthrough"],
        json!({"variation": 0})
    );
    assert_eq!(exported["segments"]["s"]["included"], json!(["a"]));

    let (ok, _, stderr) = flagd(&["export", "--env", "production"]);
    assert!(!ok);
    assert!(
        stderr.contains("no database: pass --database URL"),
        "{stderr}"
    );

    let mut command = flagd_command(BIN);
    command.args(["serve", "--listen", "127.0.0.1:0", "--database", url]);
    let server = FlagdProcess::spawn(command);
    let body = runtime.block_on(async {
        evaluate(&reqwest::Client::new(), &server.url(), &key, "f")
            .await
            .1
    });
    drop(server);
    assert_eq!(body["value"], true, "{body}");
}

/// A flag file that file mode serves but no store takes (a NUL in a string) is refused by
/// `flagd import`, naming the item and the field that holds it, and nothing of it is stored.
#[test]
fn import_refuses_text_no_store_takes_by_name() {
    let db = postgres().create_database();
    let url = db.url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = flagd::open_database(url).await.unwrap();
        env_with_key(&*store, "production").await;
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flags.json");
    let mut broken = bool_flag("f", true);
    broken["variations"] = json!(["a\u{0}", "b"]);
    let document = json!({"flags": {"ok": bool_flag("ok", true), "f": broken}});
    std::fs::write(&file, document.to_string()).unwrap();
    let (ok, stdout, stderr) = flagd(&[
        "import",
        "--file",
        file.to_str().unwrap(),
        "--env",
        "production",
        "--database",
        url,
    ]);
    assert!(!ok, "{stdout}");
    // The error is said once, last, after the steps the import got through.
    let error = "flagd: flag f: variations[0]: holds a NUL character (\\u0000), which cannot be \
                 stored";
    assert_eq!(stderr.lines().last(), Some(error), "{stderr}");
    assert_eq!(stderr.matches("flagd: ").count(), 1, "{stderr}");
    let (ok, stdout, stderr) = flagd(&["export", "--env", "production", "--database", url]);
    assert!(ok, "{stderr}");
    let exported: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(exported["flags"], json!({}));
}

/// A `flagd serve --database` process, killed on drop.
fn replica(url: &str) -> FlagdProcess {
    let mut command = flagd_command(BIN);
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database",
        url,
        "--admin-key",
        "cli-admin",
    ]);
    FlagdProcess::spawn(command)
}

#[test]
fn two_processes_converge_after_writes_through_either() {
    let db = postgres().create_database();
    let url = db.url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = runtime.block_on(async {
        let store = flagd::open_database(url).await.unwrap();
        let key = env_with_key(&*store, "production").await;
        put_flag(&*store, "production", "f", bool_flag("f", true)).await;
        key
    });
    let replicas = [replica(url), replica(url)];
    let client = reqwest::Client::new();
    runtime.block_on(async {
        for replica in &replicas {
            until("the replica to serve the flag", || async {
                evaluate(&client, &replica.url(), &key, "f").await.1["value"] == true
            })
            .await;
        }
        // Write through each process in turn; both must serve every write.
        for (round, writer) in [0, 1, 0, 1].into_iter().enumerate() {
            let value = round % 2 == 0;
            let flag_url = format!(
                "{}/api/v1/environments/production/flags/f",
                replicas[writer].url()
            );
            let current = client
                .get(&flag_url)
                .header("authorization", "Bearer cli-admin")
                .send()
                .await
                .unwrap();
            assert_eq!(current.status().as_u16(), 200);
            let etag = current.headers()["etag"].to_str().unwrap().to_owned();
            let response = client
                .put(&flag_url)
                .header("authorization", "Bearer cli-admin")
                .header("if-match", etag)
                .header("content-type", "application/json")
                .body(bool_flag("f", !value).to_string())
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{:?}", response.status());
            for replica in &replicas {
                until("both processes to converge", || async {
                    evaluate(&client, &replica.url(), &key, "f").await.1["value"] == !value
                })
                .await;
            }
        }
        // A kill through the second process reaches the first.
        let response = client
            .put(format!(
                "{}/api/v1/environments/production/flags/f/kill",
                replicas[1].url()
            ))
            .header("authorization", "Bearer cli-admin")
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{:?}", response.status());
        until("the kill at the first process", || async {
            evaluate(&client, &replicas[0].url(), &key, "f").await.1["reason"]["killed"] == true
        })
        .await;
    });
}

/// Loading an environment says when it starts and when it is done, with the counts and the
/// time it took: two lines, whatever its size.
#[test]
fn loading_an_environment_is_logged_when_it_starts_and_ends() {
    let db = postgres().create_database();
    let url = db.url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = flagd::open_database(url).await.unwrap();
        env_with_key(&*store, "production").await;
        for n in 0..3 {
            let key = format!("f{n}");
            put_flag(&*store, "production", &key, bool_flag(&key, true)).await;
        }
    });
    let mut command = flagd_command(BIN);
    command.args(["serve", "--listen", "127.0.0.1:0", "--database", url]);
    let server = FlagdProcess::spawn(command);
    runtime.block_on(until("the environment to be loaded", || async {
        server.log().contains("environment loaded")
    }));
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("env=\"production\""))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains("loading environment"), "{log}");
    assert!(lines[1].contains("environment loaded"), "{log}");
    assert!(lines[1].contains("flags=3 segments=0 ms="), "{log}");
}
