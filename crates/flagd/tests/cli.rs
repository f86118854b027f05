//! The `flagd` binary: `validate` output and exit codes, `--help`, and `serve` from start
//! (`listening on ADDR` first on stdout) to a clean exit on SIGTERM.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use flags_test_support::process::{FlagdProcess, flagd_command};
use flags_test_support::wait::until;

const BIN: &str = env!("CARGO_BIN_EXE_flagd");

fn flagd(args: &[&str]) -> Output {
    flagd_command(BIN).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/flags.yaml")
        .display()
        .to_string()
}

#[test]
fn validate_accepts_the_example() {
    let output = flagd(&["validate", &example()]);
    assert_eq!(stdout(&output), "OK: 1 file, 9 flags, 1 segment\n");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn validate_prints_every_problem_with_its_path() {
    let dir = FlagDir::new();
    let a = dir.write(
        "a.json",
        r#"{
          "flags": {
            "typo": {"on": "yes", "variations": [1]},
            "range": {"on": true, "variations": [1, 2], "offVariation": 5,
                      "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 60000}]}},
                      "prerequisites": [{"key": "missing", "variation": 0}],
                      "rules": [{"clauses": [{"attribute": "k", "op": "segmentMatch", "values": ["nope"]}], "variation": 1}]}
          },
          "flagValues": {"shared": 1}
        }"#,
    );
    let b = dir.write("b.yaml", "flagValues:\n  shared: 2\nflgs: {}\n");
    let missing = dir.path("missing.json");
    let output = Command::new(BIN)
        .args(["validate"])
        .args([&a, &b, &missing])
        .output()
        .unwrap();
    let (a, b, missing) = (show(&a), show(&b), show(&missing));
    let expected = [
        format!(
            "warning: {b}: flgs: unknown top-level field (expected \"flags\", \"segments\" or \"flagValues\"); it is ignored"
        ),
        format!("{b}: flags.shared: duplicate flag key \"shared\": defined in both {a} and {b}"),
        format!("{missing}: cannot read file: No such file or directory (os error 2)"),
        format!("{a}: flags.typo.on: expected a boolean, found string \"yes\""),
        format!(
            "warning: {a}: flags.range.offVariation: variation 5 does not exist (the flag has 2)"
        ),
        format!(
            "warning: {a}: flags.range.fallthrough.rollout.variations: weights add up to 60000, not 100000"
        ),
        format!(
            "warning: {a}: flags.range.prerequisites[0].key: unknown or archived flag \"missing\""
        ),
        format!(
            "warning: {a}: flags.range.rules[0].clauses[0].values[0]: unknown or archived segment \"nope\""
        ),
        "8 problems (3 errors, 5 warnings) in 3 files".to_owned(),
    ];
    assert_eq!(stdout(&output).lines().collect::<Vec<_>>(), expected);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn validate_fails_on_warnings_alone() {
    let dir = FlagDir::new();
    let path = dir.write(
        "flags.yaml",
        "flags:\n  loop-a:\n    on: true\n    variations: [x]\n    fallthrough: {variation: 0}\n    prerequisites: [{key: loop-b, variation: 0}]\n  loop-b:\n    on: true\n    variations: [x]\n    fallthrough: {variation: 0}\n    prerequisites: [{key: loop-a, variation: 0}]\n",
    );
    let output = flagd(&["validate", path.to_str().unwrap()]);
    let path = show(&path);
    assert_eq!(
        stdout(&output),
        format!(
            "warning: {path}: flags.loop-a.prerequisites[0].key: prerequisite cycle: loop-a -> loop-b -> loop-a\n\
             1 problem (0 errors, 1 warning) in 1 file\n"
        )
    );
    assert_eq!(output.status.code(), Some(1));
}

/// A NUL in a string loads (LaunchDarkly's SDKs take any string), but no store takes it, so
/// `validate` names each one as the admin API and `flagd import` would.
#[test]
fn validate_warns_about_text_no_store_takes() {
    let dir = FlagDir::new();
    let path = dir.write(
        "flags.yaml",
        "flags:\n  f:\n    on: true\n    variations: [\"a\\0\", b]\n    fallthrough: {variation: 0}\n\
         segments:\n  s:\n    included: [\"u\\0\"]\n",
    );
    let output = flagd(&["validate", path.to_str().unwrap()]);
    let path = show(&path);
    let held = "holds a NUL character (\\u0000), which cannot be stored";
    assert_eq!(
        stdout(&output).lines().collect::<Vec<_>>(),
        [
            format!("warning: {path}: flags.f.variations[0]: {held}"),
            format!("warning: {path}: segments.s.included[0]: {held}"),
            "2 problems (0 errors, 2 warnings) in 1 file".to_owned(),
        ]
    );
    assert_eq!(output.status.code(), Some(1));
}

/// Clause values evaluation can never use still load (LaunchDarkly's SDKs tolerate them), but
/// `validate` names each one, with the message the admin API gives for it.
#[test]
fn validate_warns_about_clause_values_that_never_match() {
    let dir = FlagDir::new();
    let path = dir.write(
        "flags.json",
        r#"{"flags": {"x": {"on": true, "variations": [false, true], "fallthrough": {"variation": 0},
            "rules": [{"variation": 1, "clauses": [
              {"attribute": "email", "op": "matches", "values": [".*@example\\.com"]},
              {"attribute": "email", "op": "matches", "values": ["[a-"]},
              {"attribute": "created", "op": "before", "values": [1700000000000, "2024-13-01T00:00:00Z"]},
              {"attribute": "version", "op": "semVerLessThan", "values": ["1", "1.2", "v2"]}
            ]}]}}}"#,
    );
    let output = flagd(&["validate", path.to_str().unwrap()]);
    let path = show(&path);
    assert_eq!(
        stdout(&output).lines().collect::<Vec<_>>(),
        [
            format!(
                "warning: {path}: flags.x.rules[0].clauses[1].values[0]: invalid regular expression: unclosed character class"
            ),
            format!(
                "warning: {path}: flags.x.rules[0].clauses[2].values[1]: invalid date: expected an RFC 3339 date-time (like 2024-01-31T12:00:00Z) or Unix milliseconds"
            ),
            format!(
                "warning: {path}: flags.x.rules[0].clauses[3].values[2]: invalid semantic version: expected MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]"
            ),
            "3 problems (0 errors, 3 warnings) in 1 file".to_owned(),
        ]
    );
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    let output = flagd(&["validate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("<PATH>..."));
    let output = flagd(&["serve"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "flagd: no flag files to serve: pass --file PATH (or set files in --config, or FLAGD_FILES), \
         --database URL, or --upstream URL\n"
    );
    let output = flagd(&["serve", "--file", "x.yaml", "--listen", "not-an-address"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = flagd(&["serve", "--file", &example(), "--listen", &addr]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "flagd: cannot listen on {addr}: Address already in use"
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing announced on stdout");
}

#[test]
fn help_reads_well() {
    let output = flagd(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    for needle in [
        "serve",
        "validate",
        "POST /v1/evaluate/{flagKey}",
        "/ofrep/v1/evaluate/flags",
        "GET /all",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
    let text = stdout(&flagd(&["serve", "--help"]));
    for needle in [
        "--file <PATH>",
        "--listen <ADDR>",
        "--sdk-key <KEY>",
        "FLAGD_LISTEN",
        "127.0.0.1:8013",
        "listening on ADDR",
    ] {
        assert!(
            text.contains(needle),
            "serve --help lacks {needle:?}:\n{text}"
        );
    }
}

/// A running `flagd serve`, killed on drop if the test did not stop it.
fn serve(args: &[&str], env: &[(&str, &str)]) -> FlagdProcess {
    let mut command = flagd_command(BIN);
    command
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .env("FLAGD_LOG", "warn");
    FlagdProcess::spawn(command)
}

#[tokio::test]
async fn serve_announces_its_address_and_stops_cleanly_on_sigterm() {
    let mut server = serve(&["--file", &example(), "--listen", "127.0.0.1:0"], &[]);
    let response = reqwest::get(format!("http://{}/readyz", server.addr()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap();
    assert!(body.contains(r#""status":"SERVING""#), "{body}");
    assert!(body.contains(r#""flags":9"#), "{body}");

    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "a SIGTERM stop is a clean exit");
}

#[tokio::test]
async fn serve_follows_an_upstream_flagd_in_proxy_mode() {
    let root = serve(
        &[
            "--file",
            &example(),
            "--listen",
            "127.0.0.1:0",
            "--sdk-key",
            "proxy-key",
        ],
        &[],
    );
    let upstream = format!("http://{}", root.addr());
    let proxy = serve(
        &["--upstream", &upstream, "--listen", "127.0.0.1:0"],
        &[("FLAGD_SDK_KEYS", "proxy-key")],
    );
    let body = reqwest::get(format!("http://{}/readyz", proxy.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains(r#""status":"SERVING""#), "{body}");
    assert!(body.contains(r#""source":"upstream""#), "{body}");
    assert!(body.contains(r#""flags":9"#), "{body}");
}

#[test]
fn a_sigterm_right_after_start_is_still_a_clean_stop() {
    // The handlers are installed before `listening on` is printed, so no signal can hit the
    // default action (an abrupt kill) after that line.
    let mut server = serve(&["--file", &example(), "--listen", "127.0.0.1:0"], &[]);
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[tokio::test]
async fn serve_takes_settings_from_config_then_env_then_flags() {
    let dir = FlagDir::new();
    let flags = dir.write("flags.json", FLAGS);
    let config = dir.write(
        "flagd.yaml",
        &format!(
            "listen: 127.0.0.1:1\nfiles: [{}]\nsdk_keys: [from-config]\n",
            flags.display()
        ),
    );
    // The config file's port is overridden by the flag; its key by the environment.
    let server = serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("FLAGD_SDK_KEYS", "from-env")],
    );
    let url = format!("http://{}/sdk/latest-all", server.addr());
    let client = reqwest::Client::new();
    let status = |key: &'static str| {
        let request = client.get(&url).header("authorization", key);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status("from-env").await, 200);
    assert_eq!(status("from-config").await, 401);
}

/// The first load of the flag files says when it starts (with the size read) and when it is
/// done (with the counts and the time it took); a reload, while the last data serves, only
/// says when it is done.
#[tokio::test]
async fn the_first_load_is_logged_when_it_starts_and_ends() {
    let dir = FlagDir::new();
    let flags: String = (0..1000)
        .map(|n| format!("\"f{n}\": {n}"))
        .collect::<Vec<_>>()
        .join(",");
    let text = format!("{{\"flagValues\": {{{flags}}}}}");
    let file = dir.write("flags.json", &text);
    let mut command = flagd_command(BIN);
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--poll-interval-ms",
        "50",
        "--file",
        file.to_str().unwrap(),
    ]);
    let server = FlagdProcess::spawn(command);
    let loaded = |n: usize| {
        let server = &server;
        move || async move { server.log().matches("flag data loaded").count() == n }
    };
    until("the first load to be logged", loaded(1)).await;
    dir.write_atomic("flags.json", r#"{"flagValues": {"only": true}}"#);
    until("the reload to be logged", loaded(2)).await;
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("loading flag files") || l.contains("flag data loaded"))
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    let first = format!("loading flag files files=1 bytes={}", text.len());
    assert!(lines[0].ends_with(&first), "{log}");
    assert!(lines[1].contains("flags=1000 segments=0"), "{log}");
    assert!(lines[1].contains(" ms="), "{log}");
    assert!(lines[2].contains("flags=1 segments=0"), "{log}");
    assert!(lines[2].contains(" ms="), "{log}");
}
