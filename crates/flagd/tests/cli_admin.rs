//! The management commands of the `flagd` binary (`flagd env|key|flag`) against real
//! PostgreSQL, in the database and through a running root-mode flagd's admin API, and `flagd
//! import`'s progress on a pseudo-terminal and on a pipe.
//!
//! Each test makes its own database on `flags_test_support::postgres()` and drops it.

#![allow(clippy::unwrap_used)]

mod root_support;

use std::path::Path;
use std::process::Stdio;

use flags_store::AuditQuery;
use flags_test_support::postgres;
use flags_test_support::process::{FlagdProcess, flagd_command};
use root_support::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flagd");

/// What a finished `flagd` said.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stdout, after checking the command succeeded.
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:?}");
        assert_eq!(self.stderr, "", "{self:?}");
        &self.stdout
    }

    /// Stdout as JSON, after checking the command succeeded.
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Checks the command failed with `code` and said `message` (one line) on stderr alone.
    #[track_caller]
    fn failed(&self, code: i32, message: &str) {
        assert_eq!(
            (self.code, self.stderr.as_str(), self.stdout.as_str()),
            (code, format!("flagd: {message}\n").as_str(), ""),
            "{self:?}"
        );
    }
}

/// Runs `flagd` with `args` after the connection options `via`, as user `tester`, with `stdin`
/// as its standard input.
fn flagd_in(via: &[&str], args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = flagd_command(BIN);
    command
        .args(args)
        .args(via)
        .env("USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn flagd(via: &[&str], args: &[&str]) -> Run {
    flagd_in(via, args, None)
}

/// `--database URL`.
fn database(url: &str) -> Vec<&str> {
    vec!["--database", url]
}

/// `--admin-url URL --admin-key KEY` for `server`.
fn admin_api<'a>(server: &'a str, key: &'a str) -> Vec<&'a str> {
    vec!["--admin-url", server, "--admin-key", key]
}

/// Writes `text` to `name` in `dir`; returns the path.
fn file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A boolean flag in YAML that serves `true` when on and `false` when off.
const DARK_MODE_YAML: &str = "\
on: true
variations: [true, false]
offVariation: 1
fallthrough: {variation: 0}
salt: dark-mode
";

/// The actors of the environment's audit entries, oldest first.
async fn audit_actors(url: &str, env: &str) -> Vec<String> {
    let store = flagd::open_database(url).await.unwrap();
    let entries = store.audit_log(&AuditQuery::env(env, 100)).await.unwrap();
    entries.into_iter().rev().map(|e| e.actor.name).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn set_up_an_environment_in_the_database() {
    let db = postgres().create_database();
    let url = db.url();
    let via = database(url);
    let dir = tempfile::tempdir().unwrap();

    let run = flagd(&via, &["env", "create", "prod", "--name", "Production"]);
    assert_eq!(run.ok(), "created environment \"prod\" (Production)\n");
    let listed = flagd(&via, &["env", "list"]);
    let lines: Vec<&str> = listed.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{listed:?}");
    assert!(
        lines[0].starts_with("KEY   NAME        CREATED"),
        "{listed:?}"
    );
    assert!(lines[1].starts_with("prod  Production  "), "{listed:?}");
    let listed = flagd(&via, &["env", "list", "--json"]).json();
    assert_eq!(listed["items"][0]["key"], "prod");
    assert_eq!(listed["items"][0]["name"], "Production");
    assert_eq!(listed["items"][0].get("color"), None);

    // Display colours: set when created or later, kept in lower case, removed on request.
    let run = flagd(&via, &["env", "create", "dev", "--color", "#0366D6"]);
    assert_eq!(run.ok(), "created environment \"dev\", colour #0366d6\n");
    let run = flagd(&via, &["env", "set", "prod", "--color", "#D73A49"]);
    assert_eq!(
        run.ok(),
        "environment \"prod\" (Production), colour #d73a49\n"
    );
    let run = flagd(
        &via,
        &["env", "set", "dev", "--name", "Development", "--json"],
    )
    .json();
    assert_eq!(
        (&run["key"], &run["name"], &run["color"]),
        (&json!("dev"), &json!("Development"), &json!("#0366d6"))
    );
    let run = flagd(&via, &["env", "set", "dev", "--no-color"]);
    assert_eq!(run.ok(), "environment \"dev\" (Development)\n");
    let listed = flagd(&via, &["env", "list"]);
    let lines: Vec<&str> = listed.ok().lines().collect();
    assert!(lines[0].ends_with("  COLOR"), "{listed:?}");
    assert!(
        lines[1].starts_with("dev   Development  ") && lines[1].ends_with("  -"),
        "{listed:?}"
    );
    assert!(lines[2].ends_with("  #d73a49"), "{listed:?}");
    let actions = {
        let store = flagd::open_database(url).await.unwrap();
        let entries = store.audit_log(&AuditQuery::env("dev", 100)).await.unwrap();
        entries
            .iter()
            .map(|e| format!("{} by {}", e.action.as_str(), e.actor.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        actions,
        [
            "update by cli:tester",
            "update by cli:tester",
            "create by cli:tester"
        ]
    );
    // Refused: a colour that is none (before connecting), nothing to change, both ways of
    // setting the colour, an unknown environment, a blank name.
    let unreachable = ["--database", "postgres://127.0.0.1:1/none"];
    let run = flagd(&unreachable, &["env", "set", "dev", "--color", "red"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("must be a colour like #d73a49"),
        "{run:?}"
    );
    let run = flagd(&unreachable, &["env", "create", "x", "--color", "#abc"]);
    assert!(
        run.stderr.contains("must be a colour like #d73a49"),
        "{run:?}"
    );
    for args in [
        &["env", "set", "dev"][..],
        &["env", "set", "dev", "--color", "#000000", "--no-color"],
    ] {
        let run = flagd(&unreachable, args);
        assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{run:?}");
    }
    flagd(&via, &["env", "set", "nope", "--name", "x"]).failed(1, "environment \"nope\" not found");
    flagd(&via, &["env", "set", "dev", "--name", " "]).failed(2, "name: must not be blank");

    // Keys: the secret is shown once, and never listed.
    let sdk = flagd(
        &via,
        &[
            "key", "create", "--name", "web", "--kind", "sdk", "--env", "prod",
        ],
    );
    let text = sdk.ok();
    assert!(
        text.starts_with("created sdk key 1 \"web\" for environment \"prod\"\n"),
        "{text}"
    );
    let sdk_secret = text.lines().last().unwrap().to_owned();
    let admin = flagd(
        &via,
        &[
            "key", "create", "--name", "ops", "--kind", "admin", "--json",
        ],
    )
    .json();
    assert_eq!(admin["kind"], "admin");
    assert_eq!(admin["env"], Value::Null);
    let admin_secret = admin["key"].as_str().unwrap().to_owned();
    for args in [&["key", "list"][..], &["key", "list", "--json"][..]] {
        let listed = flagd(&via, args);
        for secret in [&sdk_secret, &admin_secret] {
            assert!(!listed.ok().contains(secret.as_str()), "{listed:?}");
        }
    }
    let listed = flagd(&via, &["key", "list"]);
    let lines: Vec<&str> = listed.ok().lines().collect();
    assert!(
        lines[0].starts_with("ID  NAME  KIND   ENV   CREATED"),
        "{listed:?}"
    );
    assert!(
        lines[1].starts_with("1   web   sdk    prod  "),
        "{listed:?}"
    );
    assert!(lines[1].ends_with("  live"), "{listed:?}");
    assert!(
        lines[2].starts_with("2   ops   admin  *     "),
        "{listed:?}"
    );

    // A flag from a YAML file; the SDK key evaluates it on a server over the same database.
    let flag_file = file(dir.path(), "dark-mode.yaml", DARK_MODE_YAML);
    let put = flagd(
        &via,
        &["flag", "put", "prod", "dark-mode", "--file", &flag_file],
    );
    assert_eq!(
        put.ok(),
        "created flag \"dark-mode\" in environment \"prod\": now at version 1\n"
    );
    let got = flagd(&via, &["flag", "get", "prod", "dark-mode", "--json"]).json();
    assert_eq!(
        (
            &got["key"],
            &got["version"],
            &got["archived"],
            &got["killed"]
        ),
        (&json!("dark-mode"), &json!(1), &json!(false), &json!(false))
    );
    assert_eq!(got["doc"]["variations"], json!([true, false]));
    let shown = flagd(&via, &["flag", "get", "prod", "dark-mode"]);
    assert!(
        shown.ok().starts_with(
            "flag:      dark-mode\nenv:       prod\nversion:   1\narchived:  no\nkilled:    no\n"
        ),
        "{shown:?}"
    );

    let mut server = flagd_command(BIN);
    server.args(["serve", "--listen", "127.0.0.1:0", "--database", url]);
    let server = FlagdProcess::spawn(server);
    let client = reqwest::Client::new();
    let base = server.url();
    until("the server to serve the flag", || async {
        evaluate(&client, &base, &sdk_secret, "dark-mode").await.1["value"] == true
    })
    .await;

    // Kill: the off variation, everywhere; unkill: the targeting again.
    let killed = flagd(&via, &["flag", "kill", "prod", "dark-mode"]);
    assert_eq!(
        killed.ok(),
        "killed flag \"dark-mode\" in environment \"prod\": it serves its off variation \
         everywhere\n"
    );
    until("the kill to be served", || async {
        let body = evaluate(&client, &base, &sdk_secret, "dark-mode").await.1;
        body["value"] == false && body["reason"]["killed"] == true
    })
    .await;
    let again = flagd(&via, &["flag", "kill", "prod", "dark-mode", "--json"]).json();
    assert_eq!(
        again,
        json!({"flag": "dark-mode", "killed": true, "changed": false})
    );
    let got = flagd(&via, &["flag", "get", "prod", "dark-mode", "--json"]).json();
    assert_eq!(got["killed"], true);
    let listed = flagd(&via, &["flag", "list", "prod"]);
    let lines: Vec<&str> = listed.ok().lines().collect();
    assert!(
        lines[1].starts_with("dark-mode  1        live   killed  "),
        "{listed:?}"
    );
    let unkilled = flagd(&via, &["flag", "unkill", "prod", "dark-mode"]);
    assert_eq!(
        unkilled.ok(),
        "unkilled flag \"dark-mode\" in environment \"prod\": its targeting applies again\n"
    );
    until("the unkill to be served", || async {
        evaluate(&client, &base, &sdk_secret, "dark-mode").await.1["value"] == true
    })
    .await;

    // Versioned writes: without --if-version, whatever the version; with it, only that one.
    let off = file(
        dir.path(),
        "off.json",
        &json!({"on": false, "variations": [true, false], "offVariation": 1,
                "fallthrough": {"variation": 0}})
        .to_string(),
    );
    let put = flagd(&via, &["flag", "put", "prod", "dark-mode", "--file", &off]);
    assert_eq!(
        put.ok(),
        "replaced flag \"dark-mode\" in environment \"prod\": now at version 2\n"
    );
    let stale = flagd(
        &via,
        &[
            "flag",
            "put",
            "prod",
            "dark-mode",
            "--file",
            &flag_file,
            "--if-version",
            "1",
        ],
    );
    stale.failed(
        2,
        "flag \"dark-mode\" in environment \"prod\" is at version 2, not 1",
    );
    let put = flagd_in(
        &via,
        &[
            "flag",
            "put",
            "prod",
            "dark-mode",
            "--file",
            "-",
            "--if-version",
            "2",
            "--json",
        ],
        Some(DARK_MODE_YAML),
    )
    .json();
    assert_eq!(put["version"], 3);
    assert_eq!(put["doc"]["on"], true);

    // Revoked: the SDK key stops working.
    let revoked = flagd(&via, &["key", "revoke", "1"]);
    assert_eq!(
        revoked.ok(),
        "revoked sdk key 1 \"web\" for environment \"prod\"\n"
    );
    until("the revoked key to be refused", || async {
        evaluate(&client, &base, &sdk_secret, "dark-mode").await.0 == 401
    })
    .await;
    let listed = flagd(&via, &["key", "list", "--json"]).json();
    assert_eq!(listed["items"][0]["revoked"], true);

    // Every write is the user's at the shell.
    let actors = audit_actors(url, "prod").await;
    assert!(!actors.is_empty());
    assert!(actors.iter().all(|a| a == "cli:tester"), "{actors:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_route_gives_the_same_answers() {
    let db = postgres().create_database();
    let url = db.url();
    let mut server = flagd_command(BIN);
    server.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database",
        url,
        "--admin-key",
        "boot-key",
    ]);
    let server = FlagdProcess::spawn(server);
    let base = server.url();
    let api = admin_api(&base, "boot-key");
    let store = database(url);
    let dir = tempfile::tempdir().unwrap();

    let created = flagd(&api, &["env", "create", "staging"]);
    assert_eq!(created.ok(), "created environment \"staging\"\n");
    let set = flagd(&api, &["env", "set", "staging", "--color", "#28A745"]);
    assert_eq!(set.ok(), "environment \"staging\", colour #28a745\n");
    let set = flagd(
        &api,
        &["env", "set", "staging", "--no-color", "--name", "Staging"],
    );
    assert_eq!(set.ok(), "environment \"staging\" (Staging)\n");
    let set = flagd(&api, &["env", "set", "staging", "--color", "#28a745"]);
    assert_eq!(
        set.ok(),
        "environment \"staging\" (Staging), colour #28a745\n"
    );
    flagd(&api, &["env", "set", "nope", "--name", "x"]).failed(1, "environment \"nope\" not found");
    flagd(&api, &["env", "set", "staging", "--name", " "]).failed(2, "name: must not be blank");
    let sdk = flagd(
        &api,
        &[
            "key", "create", "--name", "web", "--kind", "sdk", "--env", "staging", "--json",
        ],
    )
    .json();
    let sdk_secret = sdk["key"].as_str().unwrap().to_owned();
    let flag_file = file(dir.path(), "dark-mode.yaml", DARK_MODE_YAML);
    let put = flagd(
        &api,
        &["flag", "put", "staging", "dark-mode", "--file", &flag_file],
    );
    assert_eq!(
        put.ok(),
        "created flag \"dark-mode\" in environment \"staging\": now at version 1\n"
    );
    let put = flagd(
        &api,
        &["flag", "put", "staging", "dark-mode", "--file", &flag_file],
    );
    assert_eq!(
        put.ok(),
        "replaced flag \"dark-mode\" in environment \"staging\": now at version 2\n"
    );
    let killed = flagd(&api, &["flag", "kill", "staging", "dark-mode"]);
    assert!(killed.ok().starts_with("killed flag"), "{killed:?}");
    let client = reqwest::Client::new();
    until("the kill to be served", || async {
        evaluate(&client, &base, &sdk_secret, "dark-mode").await.1["reason"]["killed"] == true
    })
    .await;

    // Every read prints the same through either route.
    for args in [
        &["env", "list"][..],
        &["env", "list", "--json"],
        &["key", "list"],
        &["key", "list", "--json"],
        &["flag", "get", "staging", "dark-mode"],
        &["flag", "get", "staging", "dark-mode", "--json"],
        &["flag", "list", "staging"],
        &["flag", "list", "staging", "--json"],
    ] {
        let (through_api, in_database) = (flagd(&api, args), flagd(&store, args));
        assert_eq!(through_api.ok(), in_database.ok(), "{args:?}");
    }

    // And so does every error.
    let broken = file(
        dir.path(),
        "broken.json",
        r#"{"variations": [true, false], "fallthrough": {"variation": 5}}"#,
    );
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["flag", "get", "nope", "dark-mode"],
            1,
            "environment \"nope\" not found",
        ),
        (
            &["flag", "get", "staging", "nope"],
            1,
            "flag \"nope\" in environment \"staging\" not found",
        ),
        (
            &[
                "flag",
                "put",
                "staging",
                "dark-mode",
                "--file",
                &flag_file,
                "--if-version",
                "1",
            ],
            2,
            "flag \"dark-mode\" in environment \"staging\" is at version 2, not 1",
        ),
        (
            &["flag", "put", "staging", "x", "--file", &broken],
            2,
            "fallthrough.variation: variation 5 does not exist (the flag has 2)",
        ),
        (&["key", "revoke", "99"], 1, "API key 99 not found"),
    ];
    for (args, code, message) in cases {
        flagd(&api, args).failed(code, message);
        flagd(&store, args).failed(code, message);
    }
    flagd(&api, &["env", "create", "staging"]).failed(2, "environment \"staging\" already exists");

    // The admin API records the key's name; the database route, the user's.
    flagd(&store, &["flag", "unkill", "staging", "dark-mode"]).ok();
    let actors = audit_actors(url, "staging").await;
    assert_eq!(actors.last().map(String::as_str), Some("cli:tester"));
    assert!(
        actors[..actors.len() - 1].iter().all(|a| a == "bootstrap"),
        "{actors:?}"
    );

    // A key the admin API does not know.
    flagd(&admin_api(&base, "wrong"), &["env", "list"]).failed(
        2,
        "the admin API refused the key (HTTP 401): unknown or revoked key",
    );
    drop(server);
    let gone = flagd(&api, &["env", "list"]);
    assert_eq!(gone.code, 2, "{gone:?}");
    assert!(
        gone.stderr.starts_with(&format!(
            "flagd: cannot reach flagd at {base}/api/v1/environments: "
        )),
        "{gone:?}"
    );
}

#[test]
fn errors_that_need_no_data_are_said_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // Neither way to the data, and both.
    flagd(&[], &["env", "list"]).failed(
        2,
        "nowhere to work: pass --database URL (or set FLAGD_DATABASE_URL) to work in the \
         database, or --admin-url URL with --admin-key KEY (or set FLAGD_ADMIN_URL and \
         FLAGD_ADMIN_KEY) to work through a running flagd",
    );
    flagd(
        &[
            "--database",
            "postgres://127.0.0.1:1/none",
            "--admin-url",
            "http://127.0.0.1:1",
        ],
        &["env", "list"],
    )
    .failed(2, "pass either --database or --admin-url, not both");
    // A document that is not one, before the (unreachable) database is tried.
    let not_json = file(dir.path(), "flag.json", "{\"on\": tru");
    let run = flagd(
        &["--database", "postgres://127.0.0.1:1/none"],
        &["flag", "put", "p", "f", "--file", &not_json],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!("flagd: {not_json}: ")),
        "{run:?}"
    );
    let list = file(dir.path(), "list.yaml", "- 1\n- 2\n");
    let run = flagd(
        &["--database", "postgres://127.0.0.1:1/none"],
        &["flag", "put", "p", "f", "--file", &list],
    );
    assert!(run.stderr.contains("expected a flag document"), "{run:?}");
    flagd(
        &["--database", "postgres://127.0.0.1:1/none"],
        &["key", "create", "--name", "n", "--kind", "sdk"],
    )
    .failed(
        2,
        "an SDK key selects one environment; name it with --env ENV",
    );
}

#[test]
fn every_command_has_help_with_an_example() {
    for command in ["env", "key", "flag"] {
        let help = flagd(&[], &["help", command]);
        assert!(help.ok().contains("Exit codes: 0 done; 1"), "{help:?}");
    }
    for (command, action) in [
        ("env", "create"),
        ("env", "set"),
        ("env", "list"),
        ("key", "create"),
        ("key", "list"),
        ("key", "revoke"),
        ("flag", "get"),
        ("flag", "list"),
        ("flag", "put"),
        ("flag", "kill"),
        ("flag", "unkill"),
    ] {
        let help = flagd(&[], &[command, action, "--help"]);
        let example = format!("  flagd {command} {action} ");
        assert!(help.ok().contains(&example), "{help:?}");
        assert_eq!(flagd(&[], &["help", command, action]).ok(), help.ok());
    }
}

/// A flag file of `n` boolean flags.
fn many_flags(n: usize) -> String {
    let flags: serde_json::Map<String, Value> = (0..n)
        .map(|i| (format!("flag-{i}"), bool_flag(&format!("flag-{i}"), true)))
        .collect();
    json!({ "flags": flags }).to_string()
}

/// Text as a terminal would end up showing its last line: what follows the last line erase.
fn after_last_erase(text: &str) -> &str {
    text.rsplit("\u{1b}[2K").next().unwrap_or(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn import_shows_its_progress_on_a_terminal_and_on_a_pipe() {
    let db = postgres().create_database();
    let url = db.url();
    let store = flagd::open_database(url).await.unwrap();
    store
        .create_environment(&actor(), "prod", "prod")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flags = file(dir.path(), "flags.json", &many_flags(20_000));

    // On a pseudo-terminal (util-linux `script`): a bar redrawn in place, then the summary.
    let command = format!("'{BIN}' import --file '{flags}' --env prod --database '{url}'");
    let output = flagd_command("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `script` (util-linux) for a terminal: {e}"));
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("writing 20000 items"), "{shown}");
    assert!(shown.contains("checking 20000 items"), "{shown}");
    assert!(
        shown.contains("\r\u{1b}[2K") && shown.matches("writing 20000 items").count() > 1,
        "the bar is redrawn in place: {shown}"
    );
    assert!(shown.contains("(100%)"), "{shown}");
    assert!(!shown.contains("import: "), "no plain lines on a terminal");
    assert_eq!(
        after_last_erase(&shown).trim_end(),
        "imported into \"prod\": 20000 flags (20000 created, 0 replaced, 0 unchanged), \
         0 segments (0 created, 0 replaced, 0 unchanged), 0 warnings"
    );

    // On a pipe: plain lines, a tenth at a time, and the summary alone on stdout.
    let output = flagd_command(BIN)
        .args([
            "import",
            "--file",
            &flags,
            "--env",
            "prod",
            "--database",
            url,
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    );
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        "imported into \"prod\": 20000 flags (0 created, 0 replaced, 20000 unchanged), \
         0 segments (0 created, 0 replaced, 0 unchanged), 0 warnings\n"
    );
    assert!(!stderr.contains('\r'), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], format!("import: reading {flags}"), "{stderr}");
    assert_eq!(lines[1], "import: checking 20000 items", "{stderr}");
    for expected in [
        "import: checked 2000/20000 (10%)",
        "import: checked 20000/20000 (100%)",
        "import: writing 20000 items in one transaction",
        "import: written 2000/20000 (10%)",
        "import: written 10000/20000 (50%)",
        "import: written 20000/20000 (100%)",
    ] {
        assert!(lines.contains(&expected), "{expected:?} in {stderr}");
    }
    assert!(lines.iter().all(|l| l.starts_with("import: ")), "{stderr}");
}
