//! `cargo xtask bench-ui`: how heavy the admin web UI's flag list is, and how soon it is usable,
//! on an environment of 10,000 flags.
//!
//! It builds flagd in release, starts it in PostgreSQL mode on a throwaway database (the
//! machine's server, 127.0.0.1:5432 by default, trust auth, user postgres), creates the
//! environment and imports the flags through the admin API's import route in one request, and
//! waits until they are served. Then `crates/flagd/tests/ui/bench.mjs` loads
//! `/ui/envs/production/flags` in the system's Chromium N times, each in a new browser context
//! (an empty cache and a session of its own), and reports per load the bytes received (headers
//! included, compressed as sent) and the time from the navigation's start until both the `load`
//! event and app.js's `data-ready` mark. This prints the medians and spreads against the targets
//! as a markdown table.
//!
//! Chromium and the npm packages are the ones `cargo xtask deps` installs. Everything talks to
//! 127.0.0.1 only, every wait has a deadline, and the server is stopped when the run ends for
//! any reason. This is a measurement, not a test: it fails only when it cannot measure.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

use crate::bench_root::Database;
use crate::{listening_addr, load_average, on_path, release_flagd, show, terminate};

/// The environment measured.
const ENV: &str = "production";
/// The bootstrap admin key of the measured server.
const ADMIN_KEY: &str = "bench-ui-admin";
/// The browser `cargo xtask deps` installs.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The script that drives the browser, relative to the repository root.
const SCRIPT: &str = "crates/flagd/tests/ui/bench.mjs";

/// Targets from the issue that asked for the UI: bytes of one cold load of the flag list, and
/// its time to interactive.
const BYTES_TARGET: u64 = 300 * 1000;
const INTERACTIVE_TARGET: Duration = Duration::from_millis(500);

/// Time for the server to start and serve every imported flag.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// Time for the import request: the server's whole-request limit is raised to it, since
/// importing a big environment in one request is slower than any request it normally answers.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time for all the loads.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(600);

const HELP: &str = "\
Usage: cargo xtask bench-ui [--flags N] [--runs N] [--server URL]

Builds flagd in release, imports N flags into environment `production` of a throwaway
PostgreSQL database through the admin API, and loads the admin UI's flag list in Chromium
--runs times, each with an empty cache: the bytes received (headers included, as sent) and the
time to interactive (the `load` event and app.js bound), median and spread, against the targets
(< 300 KB, < 500 ms). Needs psql, a PostgreSQL server accepting the postgres user without a
password, and what `cargo xtask deps` installs (Chromium, playwright-core).

Defaults: --flags 10000 --runs 20 --server postgres://postgres@127.0.0.1:5432
";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    flags: usize,
    runs: usize,
    /// The server, without a database name.
    server: String,
}

impl Options {
    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        let mut options = Options {
            flags: 10_000,
            runs: 20,
            server: "postgres://postgres@127.0.0.1:5432".to_owned(),
        };
        for pair in crate::option_pairs(args) {
            let (name, value) = pair?;
            let number = || crate::positive::<usize>(name, value);
            match name {
                "--flags" => options.flags = number()?,
                "--runs" => options.runs = number()?,
                "--server" => options.server = value.trim_end_matches('/').to_owned(),
                other => bail!("unknown option {other} (see cargo xtask bench-ui --help)"),
            }
        }
        Ok(options)
    }
}

/// `cargo xtask bench-ui [options]`.
pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    if let ["--help" | "-h" | "help"] = args {
        print!("{HELP}");
        return Ok(());
    }
    let options = Options::parse(args)?;
    if !on_path("psql") {
        bail!("psql is not installed (apt-get install -y postgresql-client)");
    }
    let modules = crate::target_dir(root)?.join("third-party/ui/node_modules");
    if !Path::new(CHROMIUM).is_file() || !modules.join("playwright-core").is_dir() {
        bail!(
            "{CHROMIUM} or {} is missing: run `cargo xtask deps`",
            modules.join("playwright-core").display()
        );
    }
    let flagd = release_flagd(root, "bench-ui")?;
    let db = Database::create(&options.server, "flagd_bench_ui")?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(&flagd, &db.url, &logs.path().join("flagd.log"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(seed(&server.base(), options.flags))
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", server.log_tail()))?;
    let load_before = load_average();
    let loads = browse(root, &server.base(), &modules, options.runs)
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", server.log_tail()))?;
    let report = Report {
        options,
        loads,
        load_before,
        load_after: load_average(),
    };
    print!("{}", report.render());
    drop(server);
    drop(db);
    Ok(())
}

/// Creates the environment, imports `flags` flags in one request, waits until all are served,
/// and checks that the server has the UI.
async fn seed(base: &str, flags: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(IMPORT_TIMEOUT)
        .build()?;
    admin(
        &client,
        base,
        "/environments",
        &json!({"key": ENV, "name": "Production"}),
    )
    .await?;
    eprintln!("bench-ui: importing {flags} flags through the admin API");
    let started = Instant::now();
    let report = admin(
        &client,
        base,
        &format!("/environments/{ENV}/import"),
        &flag_file(flags),
    )
    .await?;
    let created = report["flagsCreated"].as_array().map_or(0, Vec::len);
    eprintln!(
        "bench-ui: {created} flags created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if created != flags {
        bail!("the import created {created} flags of {flags}");
    }
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let ready: Value = match client.get(format!("{base}/readyz")).send().await {
            Ok(response) => serde_json::from_slice(&response.bytes().await?).unwrap_or_default(),
            Err(_) => Value::Null,
        };
        if ready["environments"][ENV]["flags"].as_u64() == Some(flags as u64) {
            break;
        }
        if Instant::now() > deadline {
            bail!("flagd does not serve {flags} flags within {START_DEADLINE:?}: {ready}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ui = client.get(format!("{base}/ui/sign-in")).send().await?;
    if ui.status() != reqwest::StatusCode::OK {
        bail!(
            "GET /ui/sign-in answered {}: this flagd has no admin UI to measure",
            ui.status()
        );
    }
    Ok(())
}

/// A POST of `body` to the admin API; the JSON answer, which must be a success.
async fn admin(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let url = format!("{base}/api/v1{path}");
    let response = client
        .post(&url)
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        bail!(
            "POST {url} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    serde_json::from_slice(&bytes).with_context(|| format!("the answer to POST {url}"))
}

/// Runs the browser script; one [`Load`] per line it prints.
fn browse(root: &Path, base: &str, modules: &Path, runs: usize) -> anyhow::Result<Vec<Load>> {
    eprintln!("bench-ui: {runs} cold loads of /ui/envs/{ENV}/flags in Chromium");
    let mut cmd = Command::new("node");
    cmd.arg(root.join(SCRIPT))
        .env("FLAGD_URL", base)
        .env("FLAGD_ADMIN_KEY", ADMIN_KEY)
        .env("FLAGD_ENV", ENV)
        .env("CHROMIUM", CHROMIUM)
        .env("RUNS", runs.to_string())
        .env("NODE_PATH", modules)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let shown = show(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{shown}` (is Node installed?)"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > SCRIPT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{shown}` did not finish within {SCRIPT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader of the script's output panicked"))??;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    let loads: Vec<Load> = output
        .lines()
        .map(Load::parse)
        .collect::<anyhow::Result<_>>()?;
    if loads.len() != runs {
        bail!("the script reported {} loads of {runs}", loads.len());
    }
    Ok(loads)
}

/// One cold load of the flag list, as the script measured it.
#[derive(Debug, Clone, PartialEq)]
struct Load {
    bytes: u64,
    requests: u64,
    rows: u64,
    load: Duration,
    ready: Duration,
    interactive: Duration,
}

impl Load {
    fn parse(line: &str) -> anyhow::Result<Load> {
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("not a load: {line:?}"))?;
        let count = |name: &str| {
            value[name]
                .as_u64()
                .with_context(|| format!("no {name} in {line}"))
        };
        let time = |name: &str| {
            value[name]
                .as_f64()
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                .with_context(|| format!("no {name} in {line}"))
        };
        Ok(Load {
            bytes: count("bytes")?,
            requests: count("requests")?,
            rows: count("rows")?,
            load: time("loadMs")?,
            ready: time("readyMs")?,
            interactive: time("interactiveMs")?,
        })
    }
}

// ------------------------------------------------------------------------------ the server

/// A release `flagd serve --database` whose log goes to a file; stopped when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(flagd: &Path, url: &str, log: &Path) -> anyhow::Result<Server> {
        let log_file = std::fs::File::create(log)?;
        let mut cmd = Command::new(flagd);
        cmd.args(["serve", "--database", url, "--listen", "127.0.0.1:0"])
            .args(["--log", "warn"])
            .env("FLAGD_ADMIN_KEY", ADMIN_KEY)
            .env(
                "FLAGD_HTTP_REQUEST_TIMEOUT_MS",
                IMPORT_TIMEOUT.as_millis().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let shown = show(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let addr = match listening_addr(stdout, START_DEADLINE, "flagd", &shown) {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Server {
            child,
            addr,
            log: log.to_owned(),
        })
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The end of the server's log, for an error.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        match lines.len() {
            0 => "flagd logged nothing at warn or above".to_owned(),
            n => format!(
                "flagd's log ends with:\n{}",
                lines[n.saturating_sub(20)..].join("\n")
            ),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !terminate(&mut self.child, Duration::from_secs(5)) {
            eprintln!("bench-ui: flagd did not stop; killing it");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------------------ report

struct Report {
    options: Options,
    loads: Vec<Load>,
    load_before: String,
    load_after: String,
}

impl Report {
    fn render(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let rows = self.loads.first().map_or(0, |l| l.rows);
        let requests = self.loads.first().map_or(0, |l| l.requests);
        let _ = writeln!(
            out,
            "\nflagd admin UI, /ui/envs/{ENV}/flags: {} flags in the environment, {rows} rows \
             shown, {requests} requests per load, {} cold loads\nload average: {} before, {} \
             after; {} cores\n",
            o.flags,
            o.runs,
            self.load_before,
            self.load_after,
            std::thread::available_parallelism().map_or(1, usize::from),
        );
        let _ = writeln!(out, "| measurement | median | min | max | target | met |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        let bytes: Vec<u64> = self.loads.iter().map(|l| l.bytes).collect();
        let (median, min, max) = spread(&bytes);
        let _ = writeln!(
            out,
            "| bytes received (headers included, as sent) | {} | {} | {} | < {} | {} |",
            kb(median),
            kb(min),
            kb(max),
            kb(BYTES_TARGET),
            verdict(median < BYTES_TARGET),
        );
        for (what, pick, target) in [
            (
                "time to interactive (load and app.js bound)",
                (|l: &Load| l.interactive) as fn(&Load) -> Duration,
                Some(INTERACTIVE_TARGET),
            ),
            ("time to the load event", |l: &Load| l.load, None),
            ("time to app.js bound", |l: &Load| l.ready, None),
        ] {
            let micros: Vec<u64> = self
                .loads
                .iter()
                .map(|l| u64::try_from(pick(l).as_micros()).unwrap_or(u64::MAX))
                .collect();
            let (median, min, max) = spread(&micros);
            let [median, min, max] = [median, min, max].map(Duration::from_micros);
            let (target, met) = match target {
                Some(target) => (
                    format!("< {} ms", target.as_millis()),
                    verdict(median < target),
                ),
                None => ("-".to_owned(), "-"),
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {target} | {met} |",
                crate::bench_root::ms(median),
                crate::bench_root::ms(min),
                crate::bench_root::ms(max),
            );
        }
        out
    }
}

/// The median, minimum and maximum of `samples` (the lower middle one for an even count).
fn spread(samples: &[u64]) -> (u64, u64, u64) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    match (sorted.first(), sorted.last()) {
        (Some(&min), Some(&max)) => (sorted[(sorted.len() - 1) / 2], min, max),
        _ => (0, 0, 0),
    }
}

fn kb(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "yes" } else { "NO" }
}

// ------------------------------------------------------------------------------ data

/// An environment of `flags` flags as a LaunchDarkly flag file, varied the way a real one is:
/// every kind of variation, some off, targets, rules and rollouts, a few tagged and described.
fn flag_file(flags: usize) -> Value {
    let flags: Map<String, Value> = (0..flags)
        .map(|i| (format!("flag-{i:05}"), flag(i)))
        .collect();
    json!({ "flags": flags })
}

fn flag(i: usize) -> Value {
    let key = format!("flag-{i:05}");
    let variations = match i % 4 {
        0 => json!([true, false]),
        1 => json!(["control", "treatment-a", "treatment-b"]),
        2 => json!([0, 10, 100]),
        _ => json!([{"theme": "light", "columns": 2}, {"theme": "dark", "columns": 3}]),
    };
    let last = if matches!(i % 4, 0 | 3) { 1 } else { 2 };
    let users: Vec<String> = (0..3).map(|u| format!("user-{}", i * 3 + u)).collect();
    json!({
        "key": key,
        "name": format!("Flag number {i}"),
        "description": format!("Generated flag {i} for the admin UI's page-weight benchmark"),
        "on": !i.is_multiple_of(5),
        "variations": variations,
        "offVariation": 0,
        "salt": key,
        "targets": [{"values": users, "variation": last}],
        "rules": [{
            "id": format!("{key}-country"),
            "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR", "NL"]}],
            "rollout": {"variations": [
                {"variation": 0, "weight": 25_000},
                {"variation": last, "weight": 75_000}
            ]}
        }],
        "fallthrough": {"variation": i % (last + 1)},
        "tags": if i.is_multiple_of(3) { json!(["checkout"]) } else { json!(["growth", "web"]) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_reject_zero() {
        let options = Options::parse(&["--flags", "20", "--runs", "3"]).unwrap();
        assert_eq!((options.flags, options.runs), (20, 3));
        assert!(Options::parse(&["--runs", "0"]).is_err());
        assert!(Options::parse(&["--nope", "1"]).is_err());
    }

    #[test]
    fn a_load_line_parses_and_a_broken_one_does_not() {
        let line = r#"{"run":1,"bytes":123456,"requests":4,"rows":50,"loadMs":210.5,"readyMs":230.25,"interactiveMs":230.25}"#;
        let load = Load::parse(line).unwrap();
        assert_eq!((load.bytes, load.requests, load.rows), (123_456, 4, 50));
        assert_eq!(load.interactive, Duration::from_micros(230_250));
        assert!(Load::parse(r#"{"bytes":1}"#).is_err());
        assert!(
            Load::parse(
                r#"{"bytes":1,"requests":1,"rows":1,"loadMs":-1,"readyMs":1,"interactiveMs":1}"#
            )
            .is_err()
        );
        assert!(Load::parse("bench-ui: progress").is_err());
    }

    #[test]
    fn the_report_gives_medians_against_the_targets() {
        let load = |bytes, ms: u64| Load {
            bytes,
            requests: 4,
            rows: 50,
            load: Duration::from_millis(ms - 10),
            ready: Duration::from_millis(ms),
            interactive: Duration::from_millis(ms),
        };
        let report = Report {
            options: Options::parse(&[]).unwrap(),
            loads: vec![load(120_000, 300), load(110_000, 900), load(400_000, 250)],
            load_before: "1.00 1.00 1.00".to_owned(),
            load_after: "2.00 1.00 1.00".to_owned(),
        };
        let text = report.render();
        assert!(
            text.contains("10000 flags in the environment, 50 rows shown, 4 requests"),
            "{text}"
        );
        assert!(
            text.contains("| bytes received (headers included, as sent) | 120.0 KB | 110.0 KB | 400.0 KB | < 300.0 KB | yes |"),
            "{text}"
        );
        assert!(
            text.contains("| time to interactive (load and app.js bound) | 300.0 ms | 250.0 ms | 900.0 ms | < 500 ms | yes |"),
            "{text}"
        );
        assert!(
            text.contains("| time to the load event | 290.0 ms |"),
            "{text}"
        );
    }

    #[test]
    fn the_median_is_the_middle_sample() {
        assert_eq!(spread(&[5, 1, 3]), (3, 1, 5));
        assert_eq!(spread(&[4, 1, 3, 2]), (2, 1, 4));
        assert_eq!(spread(&[]), (0, 0, 0));
    }

    #[test]
    fn the_flag_file_has_every_flag_and_each_is_valid_json_of_the_model() {
        let file = flag_file(40);
        let flags = file["flags"].as_object().unwrap();
        assert_eq!(flags.len(), 40);
        for (key, flag) in flags {
            assert_eq!(flag["key"], *key);
            let variations = flag["variations"].as_array().unwrap().len();
            let fallthrough = flag["fallthrough"]["variation"].as_u64().unwrap() as usize;
            assert!(fallthrough < variations, "{flag}");
            for weighted in flag["rules"][0]["rollout"]["variations"]
                .as_array()
                .unwrap()
            {
                assert!((weighted["variation"].as_u64().unwrap() as usize) < variations);
            }
        }
    }
}
