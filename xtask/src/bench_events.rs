//! `cargo xtask bench-events`: analytics events per second on a release build of flagd, from the
//! first `POST /bulk` until `/metrics` shows every record exported, with no exporter (the
//! ceiling: parsing and counting only), into JSON-lines files, and into PostgreSQL.
//!
//! The launcher builds `flagd` and this xtask in release, then runs the release xtask's hidden
//! `bench-events measure` pinned to core 1. That process creates a throwaway database, and for
//! each run starts a fresh flagd pinned to core 0, posts the generated payloads over a few
//! connections, waits until the exporter has delivered every record, stops flagd and checks
//! that the destination holds exactly the records expected. Repeats go round the cases. It prints
//! a markdown table and whether the target was met.
//!
//! Everything talks to 127.0.0.1 only (and to the PostgreSQL server given). Every child process
//! runs under `timeout` and every wait has a deadline. This is a measurement, not a test: it
//! fails only when the measurement cannot be made, or when records went missing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::body::Bytes;
use serde_json::json;
use tokio::time::Instant;

use super::bench_http::{Pinned, median, wait_ready};
use super::bench_root::Database;
use super::events_payload::{payload, records_of};
use super::{cargo, load_average, metric_sum, on_path, run_command, show, target_dir};

/// The cores flagd runs on, and the one the client runs on.
const LOAD_CORE: &str = "1";
/// Distinct payloads, posted in turn: enough variety of keys and dates, built once.
const DISTINCT_PAYLOADS: usize = 16;
/// The issue's target for the JSON-lines file exporter, in events per second.
const FILE_TARGET: f64 = 500_000.0;
/// flagd's flush interval during the runs: the clock stops when the last record is exported, so
/// this only shortens the wait for the last partial batch (the default is 5 s).
const FLUSH_INTERVAL_MS: &str = "100";
/// Time for one run, from the first post until every record is exported.
const RUN_DEADLINE: Duration = Duration::from_secs(300);
/// The PostgreSQL server used when `--postgres` and `$FLAGD_TEST_POSTGRES_URL` are not given.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `cargo xtask bench-events [options]`, and the hidden `measure` step.
pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["measure", rest @ ..] => measure(&Options::parse(rest)?),
        // One generated payload, for profiling the server by hand.
        ["payload", path] => Ok(std::fs::write(
            path,
            payload(0, Options::default().batch).to_string(),
        )?),
        ["--help" | "-h" | "help"] => {
            print!("{HELP}");
            Ok(())
        }
        rest => launch(root, &Options::parse(rest)?),
    }
}

const HELP: &str = "\
Usage: cargo xtask bench-events [--events N] [--repeats N] [--batch N] [--connections N]
                                [--postgres URL]

Builds flagd in release and measures, on loopback, with flagd pinned to core 0 and the client on
core 1, events per second from the first POST /bulk until /metrics shows every record exported:
with no exporter (parse and count only), into JSON-lines files (--export-dir), and into a
throwaway PostgreSQL database created on the server of --postgres (default
$FLAGD_TEST_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/postgres) and dropped at the
end. Each payload holds --batch LaunchDarkly events (feature, custom and summary events; a
summary makes one record per counter). Needs taskset, timeout and psql, and two cores.
`cargo xtask bench-events payload PATH` writes one payload.

Defaults: --events 2000000 --repeats 3 --batch 1000 --connections 4
";

/// What to run; the same options travel from the launcher to `measure`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    events: usize,
    repeats: usize,
    batch: usize,
    connections: usize,
    /// A PostgreSQL URL; its database name is replaced by the throwaway database's.
    postgres: String,
    /// The release flagd binary (`measure` only; the launcher passes it).
    flagd: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            events: 2_000_000,
            repeats: 3,
            batch: 1000,
            connections: 4,
            postgres: std::env::var("FLAGD_TEST_POSTGRES_URL")
                .ok()
                .filter(|url| !url.is_empty())
                .unwrap_or_else(|| DEFAULT_POSTGRES.to_owned()),
            flagd: None,
        }
    }
}

impl Options {
    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        let mut options = Options::default();
        for pair in crate::option_pairs(args) {
            let (name, value) = pair?;
            let number = || crate::positive::<usize>(name, value);
            match name {
                "--events" => options.events = number()?,
                "--repeats" => options.repeats = number()?,
                "--batch" => options.batch = number()?,
                "--connections" => options.connections = number()?,
                "--postgres" => options.postgres = value.to_owned(),
                "--flagd" => options.flagd = Some(PathBuf::from(value)),
                other => bail!("unknown option {other} (see cargo xtask bench-events --help)"),
            }
        }
        if options.events % options.batch != 0 {
            bail!(
                "--events {} is not a multiple of --batch {}",
                options.events,
                options.batch
            );
        }
        server_of(&options.postgres)?;
        Ok(options)
    }

    /// The options as arguments for `measure` (without `--flagd`).
    fn to_args(&self) -> Vec<String> {
        [
            ("--events", self.events.to_string()),
            ("--repeats", self.repeats.to_string()),
            ("--batch", self.batch.to_string()),
            ("--connections", self.connections.to_string()),
            ("--postgres", self.postgres.clone()),
        ]
        .into_iter()
        .flat_map(|(name, value)| [name.to_owned(), value])
        .collect()
    }

    /// An upper bound on the whole measurement, for `timeout`.
    fn budget(&self) -> Duration {
        let runs = (self.repeats * CASES.len()) as u64;
        Duration::from_secs(runs * (RUN_DEADLINE.as_secs() + 30) + 120)
    }
}

/// The server part of a PostgreSQL URL (`postgres://user@host:port`), without its database.
fn server_of(url: &str) -> anyhow::Result<&str> {
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .with_context(|| format!("{url}: not a postgres:// URL"))?;
    if rest.contains('?') {
        bail!("{url}: a URL with parameters is not supported here");
    }
    let host_len = rest.find('/').unwrap_or(rest.len());
    Ok(&url[..url.len() - rest.len() + host_len])
}

// ------------------------------------------------------------------------------ launcher

fn launch(root: &Path, options: &Options) -> anyhow::Result<()> {
    for tool in ["taskset", "timeout", "psql"] {
        if !on_path(tool) {
            bail!("{tool} is not installed");
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 {
        bail!(
            "the benchmark pins flagd and the client to separate cores; this machine offers {cores}"
        );
    }
    eprintln!("bench-events: building flagd and xtask in release");
    // Two builds, as bench-http does, so the measured flagd is exactly what `-p flagd` builds.
    for package in ["flagd", "xtask"] {
        run_command(
            cargo()
                .args(["build", "--quiet", "--release", "-p", package])
                .current_dir(root),
        )?;
    }
    let release = target_dir(root)?.join("release");
    let mut measure = Command::new("timeout");
    measure
        .arg("--foreground")
        .arg("--kill-after=10")
        .arg(format!("{}s", options.budget().as_secs()))
        .args(["taskset", "-c", LOAD_CORE])
        .arg(release.join("xtask"))
        .args(["bench-events", "measure", "--flagd"])
        .arg(release.join("flagd"))
        .args(options.to_args());
    run_command(&mut measure)
}

// ------------------------------------------------------------------------------ measuring

/// Where the records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// No exporter: `/bulk` parses and counts the events, and builds no records.
    Intake,
    /// `--export-dir`: JSON-lines files.
    File,
    /// A `kind: postgres` exporter into a table of the throwaway database.
    Postgres,
}

const CASES: [Case; 3] = [Case::Intake, Case::File, Case::Postgres];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Intake => "intake only: no exporter (parse and count)",
            Case::File => "JSON-lines files (`--export-dir`)",
            Case::Postgres => "PostgreSQL (`kind: postgres`)",
        }
    }
}

/// One run of one case.
#[derive(Debug)]
struct Run {
    /// From the first post until the last record was exported (for intake only: until the
    /// last post was answered).
    elapsed: Duration,
    /// Until the last post was answered.
    posted: Duration,
    /// Records that went through the exporter's spool on disk.
    spooled: u64,
    /// flagd's peak resident memory (`VmHWM`), in KiB.
    peak_rss_kib: u64,
}

fn measure(options: &Options) -> anyhow::Result<()> {
    let flagd = options
        .flagd
        .clone()
        .context("measure needs --flagd PATH (run `cargo xtask bench-events`)")?;
    let dir = tempfile::Builder::new()
        .prefix("flagd-bench-events-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(measure_all(options, &flagd, dir.path()))?;
    print!("{}", report.markdown());
    Ok(())
}

async fn measure_all(options: &Options, flagd: &Path, dir: &Path) -> anyhow::Result<Report> {
    let flag_path = dir.join("flags.json");
    std::fs::write(&flag_path, r#"{"flags":{},"segments":{}}"#)?;
    let payloads: Vec<(Bytes, u64)> = (0..DISTINCT_PAYLOADS)
        .map(|seed| {
            let value = payload(seed, options.batch);
            let records = records_of(&value);
            (Bytes::from(value.to_string()), records)
        })
        .collect();
    let posts = options.events / options.batch;
    let records: u64 = (0..posts).map(|i| payloads[i % DISTINCT_PAYLOADS].1).sum();
    let payload_bytes = payloads[0].0.len();
    let db = Database::create(server_of(&options.postgres)?, "flagd_bench_events")?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let load_start = load_average();
    let mut runs: Vec<(Case, Run)> = Vec::new();
    // Repeats go round the cases, so that a noisy minute spreads over every case.
    for repeat in 1..=options.repeats {
        for case in CASES {
            eprintln!(
                "bench-events: run {repeat}/{}: {}",
                options.repeats,
                case.name()
            );
            let target = Target {
                flagd,
                flag_path: &flag_path,
                dir: &dir.join(format!("run-{repeat}-{case:?}")),
                db: &db,
                table: &format!("bench_events_{repeat}"),
            };
            let run = run_case(options, &client, case, &target, &payloads, posts, records).await?;
            runs.push((case, run));
        }
    }
    drop(db);
    Ok(Report {
        options: options.clone(),
        records,
        payload_bytes,
        runs,
        load_start,
        load_end: load_average(),
    })
}

/// Where one run's flagd reads and writes.
struct Target<'a> {
    flagd: &'a Path,
    flag_path: &'a Path,
    /// A directory of this run's own, for its configuration and its files.
    dir: &'a Path,
    db: &'a Database,
    /// The PostgreSQL case's table.
    table: &'a str,
}

async fn run_case(
    options: &Options,
    client: &reqwest::Client,
    case: Case,
    target: &Target<'_>,
    payloads: &[(Bytes, u64)],
    posts: usize,
    records: u64,
) -> anyhow::Result<Run> {
    std::fs::create_dir_all(target.dir)?;
    let flag_arg = target.flag_path.display().to_string();
    let export_dir = target.dir.join("events");
    let export_arg = export_dir.display().to_string();
    let config_path = target.dir.join("flagd.yaml");
    let config_arg = config_path.display().to_string();
    let mut args = vec![
        "serve",
        "--file",
        &flag_arg,
        "--listen",
        "127.0.0.1:0",
        "--log",
        "warn",
    ];
    let exporter = match case {
        Case::Intake => None,
        Case::File => {
            args.extend(["--export-dir", &export_arg]);
            Some("file:")
        }
        Case::Postgres => {
            // JSON is YAML, and needs no quoting rules of its own.
            let spec = json!({"kind": "postgres", "url": target.db.url, "table": target.table});
            let config = json!({"events": {"exporters": [spec]}});
            std::fs::write(&config_path, config.to_string())?;
            args.extend(["--config", &config_arg]);
            Some("postgres:")
        }
    };
    // With a spool, a burst faster than the destination waits on disk instead of being dropped
    // past the memory bound (flagd's default keeps no spool).
    let spool_arg = target.dir.join("spool").display().to_string();
    let envs = [
        ("FLAGD_EVENTS_FLUSH_INTERVAL_MS", FLUSH_INTERVAL_MS),
        ("FLAGD_EVENTS_SPOOL_DIR", &spool_arg),
    ];
    let (flagd, addr) =
        Pinned::spawn("flagd", target.flagd, &args, &envs, options.budget(), false)?;
    let base = format!("http://{addr}");
    wait_ready(client, &base).await?;
    if let Some(kind) = exporter {
        // The run's one exporter, whose name (`file:DIR`, `postgres:URL/TABLE`) flagd makes;
        // the sums below read every exporter's series, so there must be no other.
        let text = metrics(client, &base).await?;
        let names = text
            .lines()
            .filter(|l| l.starts_with("flagd_export_received_total{"))
            .count();
        let ours = format!("flagd_export_received_total{{exporter=\"{kind}");
        if names != 1 || !text.contains(&ours) {
            bail!("flagd should run one {kind} exporter:\n{text}");
        }
    }

    let started = Instant::now();
    post_all(client, &base, payloads, posts, options.connections).await?;
    let posted = started.elapsed();
    let deadline = started + RUN_DEADLINE;
    let mut spooled = 0;
    let text = metrics(client, &base).await?;
    let received = metric_sum(&text, "flagd_events_received_total", None);
    if received != options.events as u64 {
        bail!(
            "flagd counted {received} events received of the {} posted",
            options.events
        );
    }
    let elapsed = match &exporter {
        None => posted,
        Some(exporter) => loop {
            let text = metrics(client, &base).await?;
            let exported = metric_sum(&text, "flagd_export_exported_total", None);
            let dropped = metric_sum(&text, "flagd_export_dropped_total", None);
            if dropped > 0 {
                bail!("{exporter} dropped {dropped} records");
            }
            if exported >= records {
                let elapsed = started.elapsed();
                if exported > records {
                    bail!("{exporter} exported {exported} records; {records} were expected");
                }
                spooled = metric_sum(&text, "flagd_export_spooled_total", None);
                break elapsed;
            }
            if Instant::now() > deadline {
                bail!(
                    "{exporter} exported {exported} of {records} records within {RUN_DEADLINE:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        },
    };
    let peak_rss_kib = flagd.memory_kib("VmHWM")?;
    // A graceful stop completes the open file, so that every line is in a finished file.
    drop(flagd);
    match case {
        Case::Intake => {}
        Case::File => {
            let lines = jsonl_lines(&export_dir)?;
            if lines != records {
                bail!("the files hold {lines} lines; {records} records were expected");
            }
        }
        Case::Postgres => {
            let rows = psql_value(
                &target.db.url,
                &format!("SELECT count(*) FROM {}", target.table),
            )?;
            if rows != records.to_string() {
                bail!(
                    "{} holds {rows} rows; {records} records were expected",
                    target.table
                );
            }
        }
    }
    Ok(Run {
        elapsed,
        posted,
        spooled,
        peak_rss_kib,
    })
}

/// Posts `posts` payloads (taking `payloads` in turn) over `connections` connections; each
/// must be answered `202`.
async fn post_all(
    client: &reqwest::Client,
    base: &str,
    payloads: &[(Bytes, u64)],
    posts: usize,
    connections: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let payloads: Arc<Vec<Bytes>> = Arc::new(payloads.iter().map(|p| p.0.clone()).collect());
    let url = format!("{base}/bulk");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, next, payloads, url) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&payloads),
            url.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= posts {
                    return anyhow::Ok(());
                }
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(payloads[i % payloads.len()].clone())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await?;
                let status = response.status();
                if status != reqwest::StatusCode::ACCEPTED {
                    bail!("POST /bulk answered {status}: {}", response.text().await?);
                }
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

async fn metrics(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// Lines in the finished JSON-lines files of `dir`, each checked to be one JSON object.
fn jsonl_lines(dir: &Path) -> anyhow::Result<u64> {
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            bail!("{} was left unfinished", path.display());
        }
        if !name.ends_with(".jsonl") {
            continue;
        }
        let text = std::fs::read(&path)?;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if !line.starts_with(b"{") || !line.ends_with(b"}") {
                bail!("{}: a line that is not a JSON object", path.display());
            }
            lines += 1;
        }
    }
    Ok(lines)
}

/// The one value `sql` selects in the database at `url`, as psql prints it.
fn psql_value(url: &str, sql: &str) -> anyhow::Result<String> {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-q",
        "-t",
        "-A",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        url,
        "-c",
        sql,
    ])
    .stdin(Stdio::null());
    let shown = show(&cmd);
    let output = cmd
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

// ------------------------------------------------------------------------------ report

struct Report {
    options: Options,
    records: u64,
    payload_bytes: usize,
    runs: Vec<(Case, Run)>,
    load_start: String,
    load_end: String,
}

impl Report {
    fn runs_of(&self, case: Case) -> impl Iterator<Item = &Run> {
        self.runs
            .iter()
            .filter(move |(c, _)| *c == case)
            .map(|(_, r)| r)
    }

    fn events_per_sec(&self, run: &Run) -> f64 {
        self.options.events as f64 / run.elapsed.as_secs_f64()
    }

    fn median_events_per_sec(&self, case: Case) -> f64 {
        median(self.runs_of(case).map(|r| self.events_per_sec(r)))
    }

    fn markdown(&self) -> String {
        let o = &self.options;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n### Events from `POST /bulk`: {} events ({} records) in payloads of {} ({} bytes), \
             {} connections, median of {} runs\n",
            o.events, self.records, o.batch, self.payload_bytes, o.connections, o.repeats
        );
        let _ = writeln!(
            out,
            "Load average {} at the start, {} at the end.\n",
            self.load_start, self.load_end
        );
        let _ = writeln!(
            out,
            "| case | events/s | records/s | events/s, all runs | vs intake only | posting alone | peak RSS | spooled |"
        );
        let _ = writeln!(
            out,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let ceiling = self.median_events_per_sec(Case::Intake);
        for case in CASES {
            let rate = self.median_events_per_sec(case);
            let all: Vec<String> = self
                .runs_of(case)
                .map(|r| format!("{:.0}", self.events_per_sec(r)))
                .collect();
            let posting = median(self.runs_of(case).map(|r| r.posted.as_secs_f64()));
            let peak = median(self.runs_of(case).map(|r| r.peak_rss_kib as f64));
            let spooled: u64 = self.runs_of(case).map(|r| r.spooled).max().unwrap_or(0);
            let _ = writeln!(
                out,
                "| {} | {rate:.0} | {:.0} | {} | {:.2}x | {:.2} s | {:.1} MiB | {spooled} |",
                case.name(),
                rate * self.records as f64 / o.events as f64,
                all.join(" / "),
                rate / ceiling,
                posting,
                peak / 1024.0,
            );
        }
        let file = self.median_events_per_sec(Case::File);
        let _ = writeln!(out, "\n### Targets\n");
        let _ = writeln!(
            out,
            "- JSON-lines file exporter: {file:.0} events/s end to end (target ≥ {FILE_TARGET:.0}): {}",
            if file >= FILE_TARGET { "met" } else { "MISSED" }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_as_the_records_counted() {
        for seed in [0, 1, 7] {
            let value = payload(seed, 1000);
            let events = flags_events::parse_bulk(value.to_string().as_bytes()).unwrap();
            assert_eq!(events.len(), 1000);
            let records = flags_events::to_records(&events, "SDK");
            assert_eq!(records.len() as u64, records_of(&value));
            // 800 feature, 180 custom, 20 summaries of four counters.
            assert_eq!(records_of(&value), 800 + 180 + 20 * 4);
        }
        assert_eq!(payload(3, 1000), payload(3, 1000));
        assert_ne!(payload(3, 1000), payload(4, 1000));
    }

    #[test]
    fn options_round_trip_and_reject_nonsense() {
        let options = Options::parse(&["--events", "5000", "--batch", "500"]).unwrap();
        assert_eq!((options.events, options.batch), (5000, 500));
        let args = options.to_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(Options::parse(&args).unwrap(), options);
        assert!(Options::parse(&["--events", "1500", "--batch", "1000"]).is_err());
        assert!(Options::parse(&["--events", "0"]).is_err());
        assert!(Options::parse(&["--postgres", "mysql://x/y"]).is_err());
        assert!(Options::parse(&["--bogus", "1"]).is_err());
    }

    #[test]
    fn postgres_urls_lose_their_database() {
        let url = "postgres://postgres:secret@127.0.0.1:5432/postgres";
        assert_eq!(
            server_of(url).unwrap(),
            "postgres://postgres:secret@127.0.0.1:5432"
        );
        assert_eq!(server_of("postgresql://h:1").unwrap(), "postgresql://h:1");
        assert!(server_of("postgres://h/db?sslmode=disable").is_err());
    }
}
