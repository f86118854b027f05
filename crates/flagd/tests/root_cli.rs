//! The database subcommands of the `flagd` binary against real PostgreSQL: `migrate`,
//! `import` then `export` (round trip), `serve --database` answering with the imported data, and
//! two `flagd serve` processes on one database converging after writes through either.

#![allow(clippy::unwrap_used)]

mod root_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use flags_store_postgres::PostgresStore;
use root_support::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flagd");
const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A fresh database, dropped on drop.
struct TestDb {
    name: String,
}

impl TestDb {
    fn create() -> TestDb {
        let name = format!(
            "flagd_t_cli_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        sql(&format!("CREATE DATABASE {name}"));
        TestDb { name }
    }

    fn url(&self) -> String {
        format!("{SERVER}/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        })
        .join();
    }
}

/// Runs one statement on the server's `postgres` database.
fn sql(statement: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = PostgresStore::connect(&format!("{SERVER}/postgres"))
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {SERVER} is needed for this test and is unreachable: {e}")
            });
        sqlx::query(statement).execute(admin.pool()).await.unwrap();
        admin.close().await;
    });
}

fn flagd(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("FLAGD_DATABASE_URL")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn migrate_import_export_and_serve() {
    let db = TestDb::create();
    let url = db.url();
    let (ok, stdout, stderr) = flagd(&["migrate", "--database", &url]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "migrations applied\n");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = runtime.block_on(async {
        let store = flagd::open_database(&url).await.unwrap();
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
        &url,
    ]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["flagsCreated"], json!(["f"]), "{report}");

    let (ok, stdout, stderr) = flagd(&["export", "--env", "production", "--database", &url]);
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

    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let body = runtime.block_on(async {
        evaluate(
            &reqwest::Client::new(),
            &format!("http://{addr}"),
            &key,
            "f",
        )
        .await
        .1
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(body["value"], true, "{body}");
}

/// A `flagd serve --database` process, killed on drop.
struct Replica {
    child: std::process::Child,
    base: String,
}

impl Replica {
    fn start(url: &str) -> Replica {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                url,
                "--admin-key",
                "cli-admin",
            ])
            .env_remove("FLAGD_DATABASE_URL")
            .env_remove("FLAGD_ADMIN_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().strip_prefix("listening on ").unwrap();
        Replica {
            base: format!("http://{addr}"),
            child,
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_processes_converge_after_writes_through_either() {
    let db = TestDb::create();
    let url = db.url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = runtime.block_on(async {
        let store = flagd::open_database(&url).await.unwrap();
        let key = env_with_key(&*store, "production").await;
        put_flag(&*store, "production", "f", bool_flag("f", true)).await;
        key
    });
    let replicas = [Replica::start(&url), Replica::start(&url)];
    let client = reqwest::Client::new();
    runtime.block_on(async {
        for replica in &replicas {
            until("the replica to serve the flag", || async {
                evaluate(&client, &replica.base, &key, "f").await.1["value"] == true
            })
            .await;
        }
        // Write through each process in turn; both must serve every write.
        for (round, writer) in [0, 1, 0, 1].into_iter().enumerate() {
            let value = round % 2 == 0;
            let flag_url = format!(
                "{}/api/v1/environments/production/flags/f",
                replicas[writer].base
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
                    evaluate(&client, &replica.base, &key, "f").await.1["value"] == !value
                })
                .await;
            }
        }
        // A kill through the second process reaches the first.
        let response = client
            .put(format!(
                "{}/api/v1/environments/production/flags/f/kill",
                replicas[1].base
            ))
            .header("authorization", "Bearer cli-admin")
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{:?}", response.status());
        until("the kill at the first process", || async {
            evaluate(&client, &replicas[0].base, &key, "f").await.1["reason"]["killed"] == true
        })
        .await;
    });
}
