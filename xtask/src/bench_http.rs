//! `cargo xtask bench-http`: HTTP load on a release build of flagd, compared in the same run with
//! a floor (a bare axum handler answering a constant body), and SSE fan-out with many streams.
//!
//! The launcher builds `flagd` and this xtask in release, then runs the release xtask's hidden
//! `bench-http measure` pinned to core 1. That process writes a generated 350-flag file to a
//! temporary directory, starts flagd, a second flagd exporting every evaluation, a third
//! exporting a span per request over OTLP to a sink that this process runs (and, with
//! `--baseline-flagd PATH`, another flagd binary to compare with), a proxy of the first
//! (`--upstream`), and the floor (`bench-http floor-server`) pinned to core 0, drives each
//! with `wrk` from core 1, then opens SSE streams on `/all`, rewrites the flag file
//! and times every stream's `patch`. It prints a markdown table and whether the targets were met.
//!
//! Everything talks to 127.0.0.1 only. Every child process runs under `timeout`, so even a run
//! that is killed outright leaves nothing running for long, and every wait has a deadline.
//! This is a measurement, not a test: it fails only when the measurement cannot be made.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use axum::response::IntoResponse as _;
use futures_util::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::events_payload::mix;
use super::{cargo, listening_addr, on_path, run_command, show, target_dir, terminate};

/// Flags in the generated file.
pub(crate) const FLAG_COUNT: usize = 350;
/// Segments in the generated file.
const SEGMENT_COUNT: usize = 20;
/// The flag of the single-flag cases: a string flag whose third rule matches the bench context,
/// so each evaluation checks three rules (five clauses) first.
pub(crate) const SINGLE_FLAG: usize = 125;
/// The flag whose rollout each fan-out edit changes.
const EDITED_FLAG: usize = 0;
/// The core the servers run on, and the one the load generators and the stream client run on.
pub(crate) const SERVER_CORE: &str = "0";
pub(crate) const LOAD_CORE: &str = "1";
/// The floor's only route.
const FLOOR_PATH: &str = "/floor";
/// The SDK key the proxy presents upstream and requires of its clients. Every request carries
/// it; the root and the floor require none and ignore it.
const PROXY_KEY: &str = "bench-proxy-key";

/// Targets from the issue that asked for this benchmark.
const SINGLE_RATIO_TARGET: f64 = 0.70;
/// Single-flag req/s with every evaluation exported, as a share of the same without events.
const EVENTS_RATIO_TARGET: f64 = 0.95;
/// Single-flag req/s of a proxy, as a share of the root's it follows.
const PROXY_RATIO_TARGET: f64 = 0.95;
/// Single-flag req/s of flagd without an OTLP endpoint, as a share of the baseline binary's
/// (`--baseline-flagd`): "tracing off costs nothing measurable", where runs of one case on this
/// benchmark differ by a few percent.
const TRACING_OFF_RATIO_TARGET: f64 = 0.97;
const FANOUT_P99_TARGET: Duration = Duration::from_millis(200);
const RSS_TARGET_KIB: u64 = 100 * 1024;

/// Time for a server to print its address, become ready, or for all streams to open.
const START_DEADLINE: Duration = Duration::from_secs(30);
const OPEN_DEADLINE: Duration = Duration::from_secs(60);
/// Time for every stream to see one edit.
const EDIT_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between edits, well past flagd's 50 ms reload debounce, so edits never overlap.
const EDIT_GAP: Duration = Duration::from_millis(500);
/// Time for the exporter of the flagd with events to deliver every evaluation after a run.
const EXPORT_DEADLINE: Duration = Duration::from_secs(60);
/// Time for the traced flagd's last spans to reach the sink after a run: past the batch
/// processor's default 5 s delay.
const SPANS_DEADLINE: Duration = Duration::from_secs(15);

/// `cargo xtask bench-http [options]`, and the hidden `measure` and `floor-server` steps.
pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["floor-server", rest @ ..] => floor_server(rest),
        ["measure", rest @ ..] => measure(&Options::parse(rest)?),
        // The generated flag file alone, for profiling the server by hand.
        ["flag-file", path] => Ok(std::fs::write(
            path,
            serde_json::to_vec_pretty(&flag_file(0))?,
        )?),
        ["--help" | "-h" | "help"] => {
            print!("{HELP}");
            Ok(())
        }
        rest => launch(root, &Options::parse(rest)?),
    }
}

const HELP: &str = "\
Usage: cargo xtask bench-http [--duration SECS] [--threads N] [--connections N] [--repeats N]
                              [--streams N] [--edits N] [--baseline-flagd PATH]
                              [--only tracing]

Builds flagd in release and measures, on loopback, with the server pinned to core 0 and the load
on core 1: a bare axum floor, single-flag and bulk evaluation (native and OFREP) with wrk, the
single-flag cases again with every evaluation exported as an event, through a proxy, and with a
span per request exported over OTLP to a sink the benchmark runs, then SSE fan-out of flag-file
edits to many `GET /all` streams and flagd's resident memory.
With --baseline-flagd, the single-flag cases also load that flagd binary (say, a release build
of a commit before a change), as the peer of the one built here without tracing.
With --only tracing, just the floor and the single-flag cases of tracing off, on and the
baseline run (no events, proxy or fan-out), so more rounds fit in a quiet spell.
Needs wrk (apt-get install -y wrk), taskset, timeout and prlimit, and two cores.

Defaults: --duration 10 --threads 1 --connections 32 --repeats 3 --streams 1000 --edits 10
";

/// What to run; the same options travel from the launcher to `measure`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    duration_secs: u64,
    threads: u32,
    connections: u32,
    repeats: usize,
    streams: usize,
    edits: u32,
    /// The release flagd binary (`measure` only; the launcher passes it).
    flagd: Option<PathBuf>,
    /// Another flagd binary to load with the single-flag cases.
    baseline: Option<PathBuf>,
    /// `--only tracing`: just the floor and the single-flag cases of flagd with tracing off and
    /// on (and the baseline), without events, proxy or fan-out, so that more rounds fit in the
    /// quiet minutes of a shared machine.
    tracing_only: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            duration_secs: 10,
            threads: 1,
            connections: 32,
            repeats: 3,
            streams: 1000,
            edits: 10,
            flagd: None,
            baseline: None,
            tracing_only: false,
        }
    }
}

impl Options {
    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        let mut options = Options::default();
        for pair in crate::option_pairs(args) {
            let (name, value) = pair?;
            let number = || crate::positive::<u64>(name, value);
            match name {
                "--duration" => options.duration_secs = number()?,
                "--threads" => options.threads = u32::try_from(number()?)?,
                "--connections" => options.connections = u32::try_from(number()?)?,
                "--repeats" => options.repeats = usize::try_from(number()?)?,
                "--streams" => options.streams = usize::try_from(number()?)?,
                "--edits" => options.edits = u32::try_from(number()?)?,
                "--flagd" => options.flagd = Some(PathBuf::from(value)),
                "--baseline-flagd" => options.baseline = Some(PathBuf::from(value)),
                "--only" if value == "tracing" => options.tracing_only = true,
                "--only" => bail!("--only takes `tracing`, not {value:?}"),
                other => bail!("unknown option {other} (see cargo xtask bench-http --help)"),
            }
        }
        Ok(options)
    }

    /// The options as arguments for `measure` (without `--flagd`).
    fn to_args(&self) -> Vec<String> {
        let baseline = self
            .baseline
            .as_ref()
            .map(|path| ("--baseline-flagd", path.display().to_string()));
        [
            ("--duration", self.duration_secs.to_string()),
            ("--threads", self.threads.to_string()),
            ("--connections", self.connections.to_string()),
            ("--repeats", self.repeats.to_string()),
            ("--streams", self.streams.to_string()),
            ("--edits", self.edits.to_string()),
        ]
        .into_iter()
        .chain(baseline)
        .chain(self.tracing_only.then(|| ("--only", "tracing".to_owned())))
        .flat_map(|(name, value)| [name.to_owned(), value])
        .collect()
    }

    /// An upper bound on the whole measurement: every child gets this long before `timeout`
    /// ends it, whatever happens to the process that started it.
    fn budget(&self) -> Duration {
        let wrk_runs = self.repeats as u64 * CASES.len() as u64;
        let load = wrk_runs * (self.duration_secs + 10);
        let export_waits =
            self.repeats as u64 * 2 * (EXPORT_DEADLINE.as_secs() + SPANS_DEADLINE.as_secs());
        let fan_out = OPEN_DEADLINE.as_secs()
            + u64::from(self.edits) * (EDIT_DEADLINE + EDIT_GAP).as_secs().max(1);
        Duration::from_secs(load + export_waits + fan_out + 180)
    }
}

// ------------------------------------------------------------------------------ launcher

fn launch(root: &Path, options: &Options) -> anyhow::Result<()> {
    for tool in ["wrk", "taskset", "timeout", "prlimit"] {
        if !on_path(tool) {
            bail!(
                "{tool} is not installed{}",
                if tool == "wrk" {
                    " (apt-get update && apt-get install -y wrk)"
                } else {
                    ""
                }
            );
        }
    }
    let mut options = options.clone();
    if let Some(baseline) = &options.baseline {
        // Absolute, so the measuring process finds it wherever it runs.
        let found = std::fs::canonicalize(baseline)
            .ok()
            .filter(|path| path.is_file())
            .with_context(|| format!("--baseline-flagd {}: no such file", baseline.display()))?;
        options.baseline = Some(found);
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 {
        bail!(
            "the benchmark pins the server and the load to separate cores; this machine offers {cores}"
        );
    }
    eprintln!("bench-http: building flagd and xtask in release");
    // Two builds rather than one, so the measured flagd is exactly what `-p flagd` builds,
    // without features that only xtask's dependencies would unify into it.
    run_command(
        cargo()
            .args(["build", "--quiet", "--release", "-p", "flagd"])
            .current_dir(root),
    )?;
    run_command(
        cargo()
            .args(["build", "--quiet", "--release", "-p", "xtask"])
            .current_dir(root),
    )?;
    let release = target_dir(root)?.join("release");
    let mut measure = Command::new("timeout");
    measure
        .arg("--foreground")
        .arg("--kill-after=10")
        .arg(format!("{}s", options.budget().as_secs()))
        .args(["taskset", "-c", LOAD_CORE])
        .arg(release.join("xtask"))
        .args(["bench-http", "measure", "--flagd"])
        .arg(release.join("flagd"))
        .args(options.to_args());
    run_command(&mut measure)
}

// ------------------------------------------------------------------------------ the floor

/// `bench-http floor-server --listen ADDR --body FILE`: answers `POST /floor` with the file's
/// bytes as JSON, on the same kind of tokio runtime as flagd's binary. Prints `listening on ADDR`
/// first, like flagd, and exits when its standard input closes.
fn floor_server(args: &[&str]) -> anyhow::Result<()> {
    let (listen, body) = match args {
        ["--listen", listen, "--body", body] => (*listen, *body),
        _ => bail!("usage: bench-http floor-server --listen ADDR --body FILE"),
    };
    let listen: SocketAddr = listen.parse().context("--listen")?;
    let body = axum::body::Bytes::from(
        std::fs::read(body).with_context(|| format!("cannot read {body}"))?,
    );
    // The parent holds our standard input open; when it goes (however it goes), so do we.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {}", listener.local_addr()?)?;
            out.flush()?;
        }
        let app = axum::Router::new().route(
            FLOOR_PATH,
            axum::routing::post(move || {
                let body = body.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}

// ------------------------------------------------------------------------------ measuring

/// One wrk case: a POST with a fixed body to one of the servers.
struct Case {
    name: &'static str,
    server: Server,
    target: Target,
    body: fn() -> Value,
}

/// The server a case loads. Only one is loaded at a time; all run on the server core.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Floor,
    /// flagd with no exporter: evaluations make no events.
    Flagd,
    /// A second flagd on the same flag file that makes every evaluation an event and exports it
    /// to JSON-lines files (`--export-dir DIR --server-evaluations all`).
    FlagdEvents,
    /// A flagd in proxy mode following [`Server::Flagd`] (`--upstream URL --sdk-key KEY`).
    Proxy,
    /// The same binary as [`Server::Flagd`] with `OTEL_EXPORTER_OTLP_ENDPOINT` set: every
    /// request is a span, exported over OTLP/HTTP to a sink this process runs.
    FlagdTraced,
    /// The `--baseline-flagd` binary, run as [`Server::Flagd`] is (skipped without one).
    Baseline,
}

impl Server {
    /// Whether `--only tracing` keeps this server's cases.
    fn measures_tracing(self) -> bool {
        matches!(
            self,
            Server::Floor | Server::Flagd | Server::FlagdTraced | Server::Baseline
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Floor,
    NativeOne,
    OfrepOne,
    NativeAll,
    OfrepAll,
}

const CASES: [Case; 13] = [
    Case {
        name: "floor: bare axum handler, constant body",
        server: Server::Floor,
        target: Target::Floor,
        body: native_body,
    },
    Case {
        name: "native, one flag",
        server: Server::Flagd,
        target: Target::NativeOne,
        body: native_body,
    },
    Case {
        name: "OFREP, one flag",
        server: Server::Flagd,
        target: Target::OfrepOne,
        body: ofrep_body,
    },
    Case {
        name: "native, one flag, every evaluation exported",
        server: Server::FlagdEvents,
        target: Target::NativeOne,
        body: native_body,
    },
    Case {
        name: "OFREP, one flag, every evaluation exported",
        server: Server::FlagdEvents,
        target: Target::OfrepOne,
        body: ofrep_body,
    },
    Case {
        name: "native, one flag, through a proxy",
        server: Server::Proxy,
        target: Target::NativeOne,
        body: native_body,
    },
    Case {
        name: "OFREP, one flag, through a proxy",
        server: Server::Proxy,
        target: Target::OfrepOne,
        body: ofrep_body,
    },
    Case {
        name: "native, one flag, a span per request exported over OTLP",
        server: Server::FlagdTraced,
        target: Target::NativeOne,
        body: native_body,
    },
    Case {
        name: "OFREP, one flag, a span per request exported over OTLP",
        server: Server::FlagdTraced,
        target: Target::OfrepOne,
        body: ofrep_body,
    },
    Case {
        name: "native, one flag, baseline binary",
        server: Server::Baseline,
        target: Target::NativeOne,
        body: native_body,
    },
    Case {
        name: "OFREP, one flag, baseline binary",
        server: Server::Baseline,
        target: Target::OfrepOne,
        body: ofrep_body,
    },
    Case {
        name: "native, all 350 flags",
        server: Server::Flagd,
        target: Target::NativeAll,
        body: native_body,
    },
    Case {
        name: "OFREP bulk, all 350 flags",
        server: Server::Flagd,
        target: Target::OfrepAll,
        body: ofrep_body,
    },
];

impl Target {
    fn path(self) -> String {
        match self {
            Target::Floor => FLOOR_PATH.to_owned(),
            Target::NativeOne => format!("/v1/evaluate/{}", flag_key(SINGLE_FLAG)),
            Target::OfrepOne => format!("/ofrep/v1/evaluate/flags/{}", flag_key(SINGLE_FLAG)),
            Target::NativeAll => "/v1/evaluate".to_owned(),
            Target::OfrepAll => "/ofrep/v1/evaluate/flags".to_owned(),
        }
    }
}

fn measure(options: &Options) -> anyhow::Result<()> {
    let flagd = options
        .flagd
        .clone()
        .context("measure needs --flagd PATH (run `cargo xtask bench-http`)")?;
    raise_open_files_limit(options.streams)?;
    let dir = tempfile::Builder::new()
        .prefix("flagd-bench-http-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let flag_path = dir.path().join("flags.json");
    std::fs::write(&flag_path, serde_json::to_vec_pretty(&flag_file(0))?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(measure_all(options, &flagd, dir.path(), &flag_path))?;
    print!("{}", report.markdown(options));
    Ok(())
}

async fn measure_all(
    options: &Options,
    flagd_bin: &Path,
    dir: &Path,
    flag_path: &Path,
) -> anyhow::Result<Report> {
    let budget = options.budget();
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let flag_arg = flag_path.display().to_string();
    let serve = [
        "serve",
        "--file",
        &flag_arg,
        "--listen",
        "127.0.0.1:0",
        "--log",
        "warn",
    ];
    let (flagd, flagd_addr) = Pinned::spawn("flagd", flagd_bin, &serve, &[], budget, false)?;
    let flagd_url = format!("http://{flagd_addr}");
    wait_ready(&client, &flagd_url).await?;

    // The same server with every evaluation exported to JSON-lines files, the exporter's
    // defaults left as they are.
    let export_dir = dir.join("events");
    let export_arg = export_dir.display().to_string();
    let mut serve_events = serve.to_vec();
    serve_events.extend(["--export-dir", &export_arg, "--server-evaluations", "all"]);
    let events = if options.tracing_only {
        None
    } else {
        let (events_flagd, events_addr) = Pinned::spawn(
            "flagd with events",
            flagd_bin,
            &serve_events,
            &[],
            budget,
            false,
        )?;
        let events_url = format!("http://{events_addr}");
        wait_ready(&client, &events_url).await?;
        Some((events_flagd, events_url))
    };
    let exporter = format!("file:{export_arg}");

    // The same server again with a span per request, sent over OTLP/HTTP to a sink that this
    // process runs on the load core (it only counts what it receives). The batch processor
    // keeps its defaults.
    let sink = OtlpSink::start().await?;
    let (traced_flagd, traced_addr) = Pinned::spawn(
        "flagd with tracing",
        flagd_bin,
        &serve,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &sink.url),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
        budget,
        false,
    )?;
    let traced_url = format!("http://{traced_addr}");
    wait_ready(&client, &traced_url).await?;

    // The peer binary, run exactly as the first flagd.
    let baseline = match &options.baseline {
        Some(path) => {
            let (baseline, addr) =
                Pinned::spawn("baseline flagd", path, &serve, &[], budget, false)?;
            let url = format!("http://{addr}");
            wait_ready(&client, &url).await?;
            Some((baseline, url))
        }
        None => None,
    };

    // A proxy of the first flagd: the same data, taken from its stream.
    let proxy = if options.tracing_only {
        None
    } else {
        let (proxy, proxy_addr) = Pinned::spawn(
            "proxy",
            flagd_bin,
            &[
                "serve",
                "--upstream",
                &flagd_url,
                "--sdk-key",
                PROXY_KEY,
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
            ],
            &[],
            budget,
            false,
        )?;
        let proxy_url = format!("http://{proxy_addr}");
        wait_ready(&client, &proxy_url).await?;
        Some((proxy, proxy_url))
    };

    // The floor answers exactly the bytes flagd answers for the single-flag case.
    let (status, answer) = post(&client, &flagd_url, Target::NativeOne, native_body()).await?;
    if status != 200 {
        bail!("flagd answered {status} to the single-flag case: {answer}");
    }
    let floor_body = dir.join("floor-body.json");
    std::fs::write(&floor_body, &answer)?;
    let floor_body = floor_body.display().to_string();
    let self_exe = std::env::current_exe()?;
    let (floor, floor_addr) = Pinned::spawn(
        "floor",
        &self_exe,
        &[
            "bench-http",
            "floor-server",
            "--listen",
            "127.0.0.1:0",
            "--body",
            &floor_body,
        ],
        &[],
        budget,
        true,
    )?;
    let floor_url = format!("http://{floor_addr}");

    let mut cases = Vec::new();
    for case in &CASES {
        if options.tracing_only
            && !(case.server.measures_tracing()
                && matches!(
                    case.target,
                    Target::Floor | Target::NativeOne | Target::OfrepOne
                ))
        {
            continue;
        }
        let base = match case.server {
            Server::Floor => &floor_url,
            Server::Flagd => &flagd_url,
            Server::FlagdTraced => &traced_url,
            Server::FlagdEvents => match started(&events) {
                Some(url) => url,
                None => continue,
            },
            Server::Proxy => match started(&proxy) {
                Some(url) => url,
                None => continue,
            },
            Server::Baseline => match started(&baseline) {
                Some(url) => url,
                None => continue,
            },
        };
        let (status, answer) = post(&client, base, case.target, (case.body)()).await?;
        check_answer(case.target, status, &answer)?;
        let script = dir.join(format!("case-{}.lua", cases.len()));
        std::fs::write(&script, wrk_script(&(case.body)().to_string())?)?;
        cases.push(CaseResult {
            name: case.name,
            server: case.server,
            target: case.target,
            url: format!("{base}{}", case.target.path()),
            script,
            answer_bytes: answer.len(),
            runs: Vec::new(),
        });
    }
    // Repeats go round all cases rather than case after case, so that a noisy minute on a shared
    // machine spreads over every case instead of skewing one ratio.
    let mut export = None;
    let mut traced = None;
    for repeat in 1..=options.repeats {
        for case in &mut cases {
            eprintln!(
                "bench-http: run {repeat}/{}: {}",
                options.repeats, case.name
            );
            let (script, url) = (case.script.clone(), case.url.clone());
            let wrk_options = options.clone();
            let run =
                tokio::task::spawn_blocking(move || run_wrk(&wrk_options, &script, &url)).await??;
            case.runs.push(run);
            if let (Server::FlagdEvents, Some((_, events_url))) = (case.server, &events) {
                // The exporter catches up before the next case, so that its tail never runs
                // into another case's load, and so that a case cannot measure an idle exporter.
                export = Some(wait_exported(&client, events_url, &exporter).await?);
            }
            if case.server == Server::FlagdTraced {
                // Likewise for the spans, which the batch processor sends every 5 s at most.
                let seen = wait_traced(&client, &traced_url, &sink).await?;
                traced = Some(match traced {
                    Some(before) => Traced::latest(before, seen),
                    None => seen,
                });
            }
        }
    }
    drop(floor);
    drop(events);
    drop(traced_flagd);
    drop(baseline);
    drop(proxy);

    let fan_out = if options.tracing_only {
        None
    } else {
        eprintln!("bench-http: fan-out to {} streams", options.streams);
        Some(fan_out(options, &client, &flagd, &flagd_url, dir, flag_path).await?)
    };
    drop(flagd);
    if !options.tracing_only && export.is_none() {
        bail!("no case loaded the flagd with events");
    }
    let traced = traced.context("no case loaded the flagd with tracing")?;
    Ok(Report {
        cases,
        fan_out,
        export,
        traced,
        baseline: options.baseline.clone(),
    })
}

/// What the traced flagd had sent by the end of its last case.
#[derive(Debug, Clone, Copy)]
struct Traced {
    /// Requests it answered (`flagd_http_requests_total`): each is one span.
    requests: u64,
    /// Spans the sink received, and in how many exports.
    spans: u64,
    exports: u64,
    /// Time from the end of a wrk run until the sink had every span, the longest of all
    /// (`None`: some never came; the batch processor dropped them).
    catch_up: Option<Duration>,
}

impl Traced {
    /// The counts of `now`, with the longest wait of both.
    fn latest(before: Traced, now: Traced) -> Traced {
        Traced {
            catch_up: before.catch_up.zip(now.catch_up).map(|(a, b)| a.max(b)),
            ..now
        }
    }
}

/// Waits until the sink has one span per request the traced flagd at `base` has answered, or
/// [`SPANS_DEADLINE`] has passed (the batch processor drops spans when its queue is full, and
/// those never come), then reads the numbers.
async fn wait_traced(
    client: &reqwest::Client,
    base: &str,
    sink: &OtlpSink,
) -> anyhow::Result<Traced> {
    let started = Instant::now();
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .text()
            .await?;
        // Answered requests, the scrapes before this one included (each is a span too).
        let requests = crate::metric_sum(&text, "flagd_http_requests_total", None);
        let (spans, exports) = sink.counts();
        let caught_up = spans >= requests;
        if caught_up || started.elapsed() > SPANS_DEADLINE {
            return Ok(Traced {
                requests,
                spans,
                exports,
                catch_up: caught_up.then(|| started.elapsed()),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An OTLP/HTTP receiver that decodes every export and counts its spans, then forgets them,
/// as a collector that drops everything would. Runs on the measuring process's runtime.
struct OtlpSink {
    url: String,
    /// Spans and exports received.
    counts: Arc<Mutex<(u64, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpSink {
    async fn start() -> anyhow::Result<OtlpSink> {
        use prost::Message as _;
        let counts = Arc::new(Mutex::new((0, 0)));
        let counted = Arc::clone(&counts);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let counted = Arc::clone(&counted);
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return axum::http::StatusCode::BAD_REQUEST.into_response();
                    };
                    let spans: usize = request
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .map(|s| s.spans.len())
                        .sum();
                    {
                        let mut counts = counted.lock().unwrap_or_else(PoisonError::into_inner);
                        counts.0 += spans as u64;
                        counts.1 += 1;
                    }
                    let answer = ExportTraceServiceResponse::default().encode_to_vec();
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                        answer,
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench-http: the OTLP sink stopped: {e}");
            }
        });
        Ok(OtlpSink { url, counts, task })
    }

    fn counts(&self) -> (u64, u64) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the flagd with events had exported by the end of its last case.
#[derive(Debug)]
struct Exported {
    /// Evaluations it made (`flagd_evaluations_total`): each is one record.
    evaluations: u64,
    /// Records its file exporter delivered, and those that went through its spool.
    exported: u64,
    spooled: u64,
    /// Time from the end of a wrk run until every evaluation was exported, the longest of all.
    catch_up: Duration,
}

/// Waits until the exporter of the flagd at `base` has delivered one record per evaluation the
/// server made, then reads its numbers. Fails when records were dropped, or when it has not
/// caught up within [`EXPORT_DEADLINE`] (the flush interval is 5 s by default).
async fn wait_exported(
    client: &reqwest::Client,
    base: &str,
    exporter: &str,
) -> anyhow::Result<Exported> {
    let started = Instant::now();
    let label = ("exporter", exporter);
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .text()
            .await?;
        let evaluations = crate::metric_sum(&text, "flagd_evaluations_total", None);
        let exported = crate::metric_sum(&text, "flagd_export_exported_total", Some(label));
        let dropped = crate::metric_sum(&text, "flagd_export_dropped_total", Some(label));
        if dropped > 0 {
            bail!("the exporter {exporter} dropped {dropped} records");
        }
        if evaluations > 0 && exported >= evaluations {
            return Ok(Exported {
                evaluations,
                exported,
                spooled: crate::metric_sum(&text, "flagd_export_spooled_total", Some(label)),
                catch_up: started.elapsed(),
            });
        }
        if started.elapsed() > EXPORT_DEADLINE {
            bail!(
                "the exporter {exporter} delivered {exported} records of {evaluations} \
                 evaluations within {EXPORT_DEADLINE:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    target: Target,
    body: Value,
) -> anyhow::Result<(u16, String)> {
    let response = client
        .post(format!("{base}{}", target.path()))
        .header("content-type", "application/json")
        .header("authorization", PROXY_KEY)
        .body(body.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// Fails unless an answer is what the case means to measure, so that the load never times
/// error answers.
fn check_answer(target: Target, status: u16, answer: &str) -> anyhow::Result<()> {
    if status != 200 {
        bail!("{} answered {status}: {answer}", target.path());
    }
    let value: Value = serde_json::from_str(answer)
        .with_context(|| format!("{} answered no JSON: {answer}", target.path()))?;
    let ok = match target {
        Target::Floor | Target::NativeOne => value["reason"]["kind"] == "RULE_MATCH",
        Target::OfrepOne => value["reason"] == "TARGETING_MATCH",
        Target::NativeAll => value["flags"].as_object().is_some_and(|f| {
            f.len() == FLAG_COUNT && f.values().all(|e| e["reason"]["kind"] != "ERROR")
        }),
        Target::OfrepAll => value["flags"].as_array().is_some_and(|f| {
            f.len() == FLAG_COUNT && f.iter().all(|e| e.get("errorCode").is_none())
        }),
    };
    if !ok {
        bail!(
            "{} answered something unexpected: {answer:.300}",
            target.path()
        );
    }
    Ok(())
}

pub(crate) async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let ready = client
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("flagd was not ready within {START_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------------ wrk

/// What one wrk run measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WrkRun {
    pub(crate) requests_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}

/// A Lua script for wrk: a fixed POST, and a last line with the numbers in a form that is easy to
/// read back.
pub(crate) fn wrk_script(body: &str) -> anyhow::Result<String> {
    if body.contains("]==]") {
        bail!("the request body cannot be quoted for Lua");
    }
    Ok(format!(
        r#"-- Written by `cargo xtask bench-http`.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{PROXY_KEY}"
wrk.body = [==[{body}]==]
done = function(summary, latency, requests)
  io.write(string.format(
    "xtask-result requests=%.0f duration_us=%.0f p50_us=%.0f p99_us=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout))
end
"#
    ))
}

fn run_wrk(options: &Options, script: &Path, url: &str) -> anyhow::Result<WrkRun> {
    let load = WrkLoad {
        duration_secs: options.duration_secs,
        threads: options.threads,
        connections: options.connections,
    };
    run_wrk_with(load, script, url)
}

/// How wrk loads a server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WrkLoad {
    pub(crate) duration_secs: u64,
    pub(crate) threads: u32,
    pub(crate) connections: u32,
}

/// Runs wrk on the load core with `script` against `url`.
pub(crate) fn run_wrk_with(load: WrkLoad, script: &Path, url: &str) -> anyhow::Result<WrkRun> {
    let mut cmd = Command::new("timeout");
    cmd.arg("--foreground")
        .arg("--kill-after=5")
        .arg(format!("{}s", load.duration_secs + 30))
        .args(["taskset", "-c", LOAD_CORE, "wrk"])
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration_secs))
        .arg("-s")
        .arg(script)
        .arg(url);
    let shown = show(&cmd);
    let output = cmd
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&stdout).with_context(|| format!("`{shown}` printed:\n{stdout}"))
}

fn parse_wrk(stdout: &str) -> anyhow::Result<WrkRun> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("xtask-result "))
        .context("no result line")?;
    let get = |name: &str| -> anyhow::Result<f64> {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name} in the result line"))?
            .parse::<f64>()
            .with_context(|| format!("{name} is not a number"))
    };
    let requests = get("requests")?;
    let duration_us = get("duration_us")?;
    let errors: f64 = ["connect", "read", "write", "status", "timeout"]
        .iter()
        .map(|name| get(name))
        .sum::<anyhow::Result<f64>>()?;
    if errors > 0.0 {
        bail!("{errors} requests failed (errors or non-2xx answers); the numbers would mislead");
    }
    if requests < 1.0 || duration_us <= 0.0 {
        bail!("no requests completed");
    }
    Ok(WrkRun {
        requests_per_sec: requests / (duration_us / 1e6),
        p50_us: get("p50_us")?,
        p99_us: get("p99_us")?,
    })
}

// ------------------------------------------------------------------------------ fan-out

/// What the SSE fan-out measured.
#[derive(Debug)]
struct FanOut {
    streams: usize,
    edits: u32,
    /// Write-to-`patch` time of every (stream, edit) pair, sorted.
    samples: Vec<Duration>,
    /// From the first connection attempt until every stream had its `put`.
    open_all: Duration,
    rss_before_kib: u64,
    rss_with_streams_kib: u64,
    peak_rss_kib: u64,
    /// Anything that did not go as planned (missed or unexpected events).
    anomalies: Vec<String>,
}

/// What a stream task saw, stamped when the bytes arrived.
#[derive(Debug)]
struct Seen {
    stream: usize,
    at: Instant,
    what: What,
}

#[derive(Debug)]
enum What {
    Event(SseEvent),
    Ended(String),
}

async fn fan_out(
    options: &Options,
    client: &reqwest::Client,
    flagd: &Pinned,
    base: &str,
    dir: &Path,
    flag_path: &Path,
) -> anyhow::Result<FanOut> {
    let n = options.streams;
    let rss_before_kib = flagd.memory_kib("VmRSS")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Dropping the set at the end (or on an error) aborts every stream task.
    let mut tasks = tokio::task::JoinSet::new();
    let opened = Instant::now();
    for stream in 0..n {
        tasks.spawn(follow(
            client.clone(),
            format!("{base}/all"),
            stream,
            tx.clone(),
        ));
    }
    drop(tx);

    let mut has_put = vec![false; n];
    let mut puts = 0;
    let deadline = opened + OPEN_DEADLINE;
    while puts < n {
        let seen = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| {
                anyhow!("only {puts} of {n} streams had their put within {OPEN_DEADLINE:?}")
            })?
            .context("every stream ended")?;
        match seen.what {
            What::Event(event) if event.name == "put" && !has_put[seen.stream] => {
                has_put[seen.stream] = true;
                puts += 1;
            }
            What::Event(event) => bail!(
                "stream {} got a {} event before its put",
                seen.stream,
                event.name
            ),
            What::Ended(why) => bail!("stream {} ended before its put: {why}", seen.stream),
        }
    }
    let open_all = opened.elapsed();
    // Let the server settle (buffers of the put events freed) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with_streams_kib = flagd.memory_kib("VmRSS")?;

    let edited_path = format!("\"/flags/{}\"", flag_key(EDITED_FLAG));
    let mut samples = Vec::with_capacity(n * options.edits as usize);
    let mut anomalies = Vec::new();
    for edit in 1..=options.edits {
        let contents = serde_json::to_vec_pretty(&flag_file(edit))?;
        let staged = dir.join(".flags.json.new");
        std::fs::write(&staged, contents)?;
        // The clock starts when the new file appears under its name: an atomic rename, as
        // editors and deployment tools write files.
        let written = Instant::now();
        std::fs::rename(&staged, flag_path)?;
        let mut has_patch = vec![false; n];
        let mut patches = 0;
        while patches < n {
            let Ok(seen) = tokio::time::timeout_at(written + EDIT_DEADLINE, rx.recv()).await else {
                anomalies.push(format!(
                    "edit {edit}: {} streams saw no patch within {EDIT_DEADLINE:?}",
                    n - patches
                ));
                break;
            };
            let seen = seen.context("every stream ended")?;
            match seen.what {
                What::Event(event)
                    if event.name == "patch"
                        && event.data.contains(&edited_path)
                        && !has_patch[seen.stream] =>
                {
                    has_patch[seen.stream] = true;
                    patches += 1;
                    samples.push(seen.at.saturating_duration_since(written));
                }
                What::Event(event) => anomalies.push(format!(
                    "edit {edit}: stream {} got an unexpected {} event: {:.120}",
                    seen.stream, event.name, event.data
                )),
                What::Ended(why) => {
                    anomalies.push(format!("edit {edit}: stream {} ended: {why}", seen.stream));
                }
            }
        }
        tokio::time::sleep(EDIT_GAP).await;
    }
    let peak_rss_kib = flagd.memory_kib("VmHWM")?;
    tasks.abort_all();
    samples.sort_unstable();
    Ok(FanOut {
        streams: n,
        edits: options.edits,
        samples,
        open_all,
        rss_before_kib,
        rss_with_streams_kib,
        peak_rss_kib,
        anomalies,
    })
}

/// Follows one `GET /all` stream, reporting every event, and how it ended.
async fn follow(
    client: reqwest::Client,
    url: String,
    stream: usize,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let ended = match follow_events(&client, &url, stream, &tx).await {
        Ok(()) => "the server closed the stream".to_owned(),
        Err(e) => format!("{e:#}"),
    };
    let _ = tx.send(Seen {
        stream,
        at: Instant::now(),
        what: What::Ended(ended),
    });
}

async fn follow_events(
    client: &reqwest::Client,
    url: &str,
    stream: usize,
    tx: &mpsc::UnboundedSender<Seen>,
) -> anyhow::Result<()> {
    let response = client
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("GET /all answered {}", response.status());
    }
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let at = Instant::now();
        parser.push(&chunk, &mut events);
        for event in events.drain(..) {
            // The receiver only goes away when the measurement is over.
            if tx
                .send(Seen {
                    stream,
                    at,
                    what: What::Event(event),
                })
                .is_err()
            {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// One server-sent event: its name and the start of its data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    name: String,
    data: String,
}

/// A streaming `text/event-stream` reader that keeps only the first bytes of each line, so a
/// thousand streams receiving a large `put` at once cost little memory.
#[derive(Debug, Default)]
struct SseParser {
    line: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
    has_field: bool,
}

/// Bytes kept of each line: enough for the event name and a patch's path.
const SSE_LINE_KEEP: usize = 256;

impl SseParser {
    fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        while !chunk.is_empty() {
            let (part, rest, complete) = match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => (&chunk[..end], &chunk[end + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            let room = SSE_LINE_KEEP.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            if complete {
                self.end_line(out);
            }
            chunk = rest;
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.is_empty() {
            if std::mem::take(&mut self.has_field) {
                out.push(SseEvent {
                    name: self.name.take().unwrap_or_else(|| "message".to_owned()),
                    data: self.data.take().unwrap_or_default(),
                });
            }
            return;
        }
        if line.starts_with(b":") {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &line[line.len()..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let value = String::from_utf8_lossy(value).into_owned();
        match field {
            b"event" => {
                self.name = Some(value);
                self.has_field = true;
            }
            b"data" => {
                self.data.get_or_insert(value);
                self.has_field = true;
            }
            _ => {}
        }
    }
}

// ------------------------------------------------------------------------------ processes

/// A server started on the server core under `timeout`; stopped (and reaped) when dropped.
pub(crate) struct Pinned {
    name: &'static str,
    /// The `timeout` process.
    child: Child,
    /// The server itself (the child of `timeout`), for its memory figures.
    pid: u32,
    /// Held open for servers that exit when it closes.
    stdin: Option<ChildStdin>,
}

impl Pinned {
    /// Starts `program args` with `envs` added to its environment, and reads its
    /// `listening on ADDR` line.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        budget: Duration,
        keep_stdin: bool,
    ) -> anyhow::Result<(Pinned, SocketAddr)> {
        let mut cmd = Command::new("timeout");
        // A collector named in the caller's shell would turn tracing on where a case means it
        // to be off.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(name);
            }
        }
        cmd.arg("--foreground")
            .arg("--kill-after=5")
            .arg(format!("{}s", budget.as_secs()))
            .args(["taskset", "-c", SERVER_CORE])
            .arg(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(if keep_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let shown = show(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut pinned = Pinned {
            name,
            child,
            pid: 0,
            stdin,
        };
        let stdout = stdout.context("no stdout pipe")?;
        let addr = listening_addr(stdout, START_DEADLINE, name, &shown)?;
        pinned.pid = child_of(pinned.child.id())?;
        Ok((pinned, addr))
    }

    /// A memory figure of the server from `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
    pub(crate) fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("cannot read the status of {} ({})", self.name, self.pid))?;
        proc_status_kib(&status, field)
            .with_context(|| format!("no {field} in the status of {}", self.name))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // `timeout` passes SIGTERM on to the server, which then stops as it would in production.
        if terminate(&mut self.child, Duration::from_secs(10)) {
            return;
        }
        eprintln!("xtask: {} did not stop; killing it", self.name);
        if self.pid != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The only child of process `pid` (the server that `timeout` started).
fn child_of(pid: u32) -> anyhow::Result<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.split_whitespace()
        .next()
        .context("the server is not running")?
        .parse()
        .context("a process id that is not a number")
}

fn proc_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Raises this process's soft limit on open files (which flagd inherits) for `streams` sockets.
fn raise_open_files_limit(streams: usize) -> anyhow::Result<()> {
    let want = streams as u64 + 1024;
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let (soft, hard) =
        open_files_limit(&limits).context("no open-files line in /proc/self/limits")?;
    if soft >= want {
        return Ok(());
    }
    if hard < want {
        bail!(
            "{streams} streams need {want} open files, but the hard limit is {hard}: raise it \
             (ulimit -Hn) or pass a smaller --streams"
        );
    }
    run_command(
        Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={want}:{hard}")),
    )
}

/// Soft and hard limits from the `Max open files` line of `/proc/PID/limits`.
fn open_files_limit(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace().map(|n| {
        if n == "unlimited" {
            Some(u64::MAX)
        } else {
            n.parse().ok()
        }
    });
    Some((numbers.next()??, numbers.next()??))
}

// ------------------------------------------------------------------------------ report

struct CaseResult {
    name: &'static str,
    server: Server,
    target: Target,
    url: String,
    script: PathBuf,
    answer_bytes: usize,
    runs: Vec<WrkRun>,
}

struct Report {
    cases: Vec<CaseResult>,
    /// `None` with `--only tracing`, as is `export`.
    fan_out: Option<FanOut>,
    export: Option<Exported>,
    traced: Traced,
    baseline: Option<PathBuf>,
}

impl CaseResult {
    fn median_rps(&self) -> f64 {
        median(self.runs.iter().map(|r| r.requests_per_sec))
    }
}

impl Report {
    fn markdown(&self, options: &Options) -> String {
        let mut out = String::new();
        let floor = self
            .cases
            .iter()
            .find(|c| c.target == Target::Floor)
            .map_or(f64::NAN, CaseResult::median_rps);
        let _ = writeln!(
            out,
            "\n### Request load: `wrk -t{} -c{} -d{}s`, median of {} runs\n",
            options.threads, options.connections, options.duration_secs, options.repeats
        );
        let _ = writeln!(
            out,
            "| case | req/s | req/s, all runs | vs floor | p50 | p99 | answer bytes |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for case in &self.cases {
            let path = case.target.path();
            let name = if case.target == Target::Floor {
                case.name.to_owned()
            } else {
                format!("{} `POST {path}`", case.name)
            };
            let rps = case.median_rps();
            let all: Vec<String> = case
                .runs
                .iter()
                .map(|r| format!("{:.0}", r.requests_per_sec))
                .collect();
            let _ = writeln!(
                out,
                "| {name} | {rps:.0} | {} | {:.0}% | {} | {} | {} |",
                all.join(" / "),
                100.0 * rps / floor,
                micros(median(case.runs.iter().map(|r| r.p50_us))),
                micros(median(case.runs.iter().map(|r| r.p99_us))),
                case.answer_bytes
            );
        }
        if let Some(f) = &self.fan_out {
            let _ = writeln!(
                out,
                "\n### SSE fan-out: {} `GET /all` streams, {} edits of one flag\n",
                f.streams, f.edits
            );
            let _ = writeln!(
                out,
                "| samples | write → patch p50 | p99 | max | all streams open with their put | RSS before streams | RSS with streams | peak RSS |"
            );
            let _ = writeln!(
                out,
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                f.samples.len(),
                millis(percentile(&f.samples, 50.0)),
                millis(percentile(&f.samples, 99.0)),
                millis(f.samples.last().copied()),
                millis(Some(f.open_all)),
                mib(f.rss_before_kib),
                mib(f.rss_with_streams_kib),
                mib(f.peak_rss_kib),
            );
        }
        if let Some(e) = &self.export {
            let _ = writeln!(
                out,
                "\nThe flagd with events made {} evaluations and its file exporter delivered {} \
             records ({} through the spool); the longest wait after a run for the last of them \
             was {}.",
                e.evaluations,
                e.exported,
                e.spooled,
                millis(Some(e.catch_up))
            );
        }
        let t = &self.traced;
        let _ = writeln!(
            out,
            "\nThe flagd with tracing answered {} requests, one span each, and the OTLP sink \
             received {} spans in {} exports; {}.",
            t.requests,
            t.spans,
            t.exports,
            match t.catch_up {
                Some(wait) => format!(
                    "the longest wait after a run for the last of them was {}",
                    millis(Some(wait))
                ),
                None => format!(
                    "{} never came (dropped by the batch processor's full queue)",
                    t.requests.saturating_sub(t.spans)
                ),
            }
        );
        let _ = writeln!(out, "\n### Targets\n");
        for target in [Target::NativeOne, Target::OfrepOne] {
            let find = |server| {
                self.cases
                    .iter()
                    .find(|c| c.server == server && c.target == target)
            };
            let (Some(events), Some(plain)) = (find(Server::FlagdEvents), find(Server::Flagd))
            else {
                continue;
            };
            let ratio = events.median_rps() / plain.median_rps();
            let _ = writeln!(
                out,
                "- {} `POST {}`, every evaluation exported: {:.1}% of the req/s without events \
                 (target ≥ {:.0}%): {}",
                match target {
                    Target::NativeOne => "native",
                    _ => "OFREP",
                },
                target.path(),
                100.0 * ratio,
                100.0 * EVENTS_RATIO_TARGET,
                verdict(ratio >= EVENTS_RATIO_TARGET)
            );
        }
        for target in [Target::NativeOne, Target::OfrepOne] {
            let find = |server| {
                self.cases
                    .iter()
                    .find(|c| c.server == server && c.target == target)
            };
            let (Some(proxy), Some(root)) = (find(Server::Proxy), find(Server::Flagd)) else {
                continue;
            };
            let ratio = proxy.median_rps() / root.median_rps();
            let p50 = |case: &CaseResult| median(case.runs.iter().map(|r| r.p50_us));
            let _ = writeln!(
                out,
                "- {}: {:.1}% of the root's req/s, p50 {} against {} (target ≥ {:.0}%): {}",
                proxy.name,
                100.0 * ratio,
                micros(p50(proxy)),
                micros(p50(root)),
                100.0 * PROXY_RATIO_TARGET,
                verdict(ratio >= PROXY_RATIO_TARGET)
            );
        }
        for target in [Target::NativeOne, Target::OfrepOne] {
            let find = |server| {
                self.cases
                    .iter()
                    .find(|c| c.server == server && c.target == target)
            };
            let Some(off) = find(Server::Flagd) else {
                continue;
            };
            let p50 = |case: &CaseResult| median(case.runs.iter().map(|r| r.p50_us));
            if let (Some(baseline), Some(path)) = (find(Server::Baseline), &self.baseline) {
                let ratio = off.median_rps() / baseline.median_rps();
                let _ = writeln!(
                    out,
                    "- {}, tracing off (no OTLP endpoint): {:.1}% of the req/s of `{}` \
                     (by round: {}), p50 {} against {} (target ≥ {:.0}%): {}",
                    off.name,
                    100.0 * ratio,
                    path.display(),
                    by_round(off, baseline),
                    micros(p50(off)),
                    micros(p50(baseline)),
                    100.0 * TRACING_OFF_RATIO_TARGET,
                    verdict(ratio >= TRACING_OFF_RATIO_TARGET)
                );
            }
            if let Some(on) = find(Server::FlagdTraced) {
                let _ = writeln!(
                    out,
                    "- {}, a span per request exported over OTLP: {:.1}% of the req/s with \
                     tracing off (by round: {}), p50 {} against {} (no target: the price of \
                     tracing on)",
                    off.name,
                    100.0 * on.median_rps() / off.median_rps(),
                    by_round(on, off),
                    micros(p50(on)),
                    micros(p50(off)),
                );
            }
        }
        for case in &self.cases {
            if case.server == Server::Flagd
                && matches!(case.target, Target::NativeOne | Target::OfrepOne)
            {
                let ratio = case.median_rps() / floor;
                let _ = writeln!(
                    out,
                    "- {}: {:.0}% of the floor's req/s (target ≥ {:.0}%): {}",
                    case.name,
                    100.0 * ratio,
                    100.0 * SINGLE_RATIO_TARGET,
                    verdict(ratio >= SINGLE_RATIO_TARGET)
                );
            }
        }
        let Some(f) = &self.fan_out else {
            return out;
        };
        let p99 = percentile(&f.samples, 99.0);
        let _ = writeln!(
            out,
            "- {}-stream fan-out p99: {} (target < {} ms): {}",
            f.streams,
            millis(p99),
            FANOUT_P99_TARGET.as_millis(),
            verdict(f.anomalies.is_empty() && p99.is_some_and(|p| p < FANOUT_P99_TARGET))
        );
        let _ = writeln!(
            out,
            "- RSS with {} streams: {} (target < {}): {}",
            f.streams,
            mib(f.rss_with_streams_kib),
            mib(RSS_TARGET_KIB),
            verdict(f.rss_with_streams_kib < RSS_TARGET_KIB)
        );
        if !f.anomalies.is_empty() {
            let _ = writeln!(out, "\nDuring the fan-out:");
            for anomaly in &f.anomalies {
                let _ = writeln!(out, "- {anomaly}");
            }
        }
        out
    }
}

/// The URL of a server that may not have been started.
fn started(server: &Option<(Pinned, String)>) -> Option<&String> {
    server.as_ref().map(|(_, url)| url)
}

/// `case`'s req/s as a share of `peer`'s in each round, in order: rounds go through every case
/// in turn, so a pair of one round saw the same spell of the machine.
fn by_round(case: &CaseResult, peer: &CaseResult) -> String {
    let shares: Vec<String> = case
        .runs
        .iter()
        .zip(&peer.runs)
        .map(|(a, b)| format!("{:.0}%", 100.0 * a.requests_per_sec / b.requests_per_sec))
        .collect();
    shares.join(" / ")
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

pub(crate) fn micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn millis(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

// ------------------------------------------------------------------------------ the data

pub(crate) fn flag_key(i: usize) -> String {
    format!("flag-{i:03}")
}

fn segment_key(i: usize) -> String {
    format!("segment-{i:02}")
}

pub(crate) const COUNTRIES: [&str; 8] = ["DE", "FR", "GB", "US", "ES", "IT", "NL", "SE"];

/// The benchmark's flag file. Half the flags are booleans rolled out by percentage (with a few
/// targeted users; some off), three in ten are string flags with four rules (`in`, `endsWith`,
/// an array attribute, `semVerGreaterThan`, one rule a rollout), and two in ten match segments
/// (some with a prerequisite). `edit` changes only the rollout of [`EDITED_FLAG`].
pub(crate) fn flag_file(edit: u32) -> Value {
    let flags: Map<String, Value> = (0..FLAG_COUNT)
        .map(|i| (flag_key(i), flag(i, edit)))
        .collect();
    let segments: Map<String, Value> = (0..SEGMENT_COUNT)
        .map(|i| (segment_key(i), segment(i)))
        .collect();
    json!({"flags": flags, "segments": segments})
}

fn flag(i: usize, edit: u32) -> Value {
    let key = flag_key(i);
    let r = mix(i as u64);
    match i % 10 {
        0..=4 => {
            let weight = if i == EDITED_FLAG {
                10_000 + (u64::from(edit) * 1_000) % 90_000
            } else {
                (r % 101) * 1_000
            };
            let targeted: Vec<String> = (0..5)
                .map(|n| format!("user-{}", (r >> (n * 8)) % 10_000))
                .collect();
            json!({
                "key": key,
                "on": i % 17 != 16,
                "salt": format!("{key}-salt"),
                "variations": [false, true],
                "offVariation": 0,
                "targets": [{"values": targeted, "variation": 1}],
                "fallthrough": {"rollout": {"variations": [
                    {"variation": 0, "weight": 100_000 - weight},
                    {"variation": 1, "weight": weight}
                ]}}
            })
        }
        5..=7 => {
            let countries: Vec<&str> = (0..3)
                .map(|n| COUNTRIES[((r >> (n * 4)) % 8) as usize])
                .collect();
            json!({
                "key": key,
                "on": true,
                "salt": format!("{key}-salt"),
                "variations": ["control", "variant-a", "variant-b", "variant-c"],
                "offVariation": 0,
                "rules": [
                    {"id": "enterprise-in-region", "clauses": [
                        {"attribute": "country", "op": "in", "values": countries},
                        {"attribute": "plan", "op": "in", "values": ["enterprise"]}
                    ], "variation": 1},
                    {"id": "partner-domain", "clauses": [
                        {"attribute": "email", "op": "endsWith", "values": [format!("@partner-{}.example", i % 13)]}
                    ], "rollout": {"variations": [
                        {"variation": 1, "weight": 50_000},
                        {"variation": 2, "weight": 50_000}
                    ]}},
                    {"id": "beta-group", "clauses": [
                        {"attribute": "groups", "op": "in", "values": [format!("beta-{}", i % 7)]}
                    ], "variation": 3},
                    {"id": "new-app", "clauses": [
                        {"attribute": "appVersion", "op": "semVerGreaterThan", "values": [format!("3.{}.0", i % 10)]}
                    ], "variation": 2}
                ],
                "fallthrough": {"variation": 0}
            })
        }
        _ => {
            let mut flag = json!({
                "key": key,
                "on": true,
                "salt": format!("{key}-salt"),
                "variations": [false, true],
                "offVariation": 0,
                "rules": [
                    {"id": "in-segment", "clauses": [
                        {"attribute": "key", "op": "segmentMatch", "values": [segment_key(i % SEGMENT_COUNT)]}
                    ], "variation": 1},
                    {"id": "staff", "clauses": [
                        {"attribute": "email", "op": "endsWith", "values": ["@flagd.example"]}
                    ], "variation": 1}
                ],
                "fallthrough": {"rollout": {"variations": [
                    {"variation": 0, "weight": 90_000},
                    {"variation": 1, "weight": 10_000}
                ]}}
            });
            if i % 30 == 8 {
                // Depends on the boolean flag eight places before it.
                flag["prerequisites"] = json!([{"key": flag_key(i - 8), "variation": 1}]);
            }
            flag
        }
    }
}

fn segment(i: usize) -> Value {
    let key = segment_key(i);
    let included: Vec<String> = (0..100)
        .map(|n| format!("user-{}", mix((i * 1000 + n) as u64) % 100_000))
        .collect();
    json!({
        "key": key,
        "salt": format!("{key}-salt"),
        "included": included,
        "excluded": [format!("user-{i}")],
        "rules": [{"id": "enterprise-in-country", "clauses": [
            {"attribute": "plan", "op": "in", "values": ["enterprise"]},
            {"attribute": "country", "op": "in", "values": [COUNTRIES[i % COUNTRIES.len()]]}
        ]}]
    })
}

/// The context of every request, as a LaunchDarkly context.
pub(crate) fn native_context() -> Value {
    json!({
        "kind": "user",
        "key": "user-4242",
        "email": "user-4242@example.com",
        "country": "DE",
        "plan": "pro",
        "groups": [format!("beta-{}", SINGLE_FLAG % 7), "staff"],
        "appVersion": "2.7.1"
    })
}

pub(crate) fn native_body() -> Value {
    json!({"context": native_context()})
}

/// The same context as an OpenFeature evaluation context.
fn ofrep_body() -> Value {
    let mut context = native_context();
    if let Some(attributes) = context.as_object_mut() {
        attributes.remove("kind");
        if let Some(key) = attributes.remove("key") {
            attributes.insert("targetingKey".to_owned(), key);
        }
    }
    json!({"context": context})
}

#[cfg(test)]
mod tests {
    use flags_core::{Context, Reason};
    use flags_eval::{CompiledData, Evaluator};

    use super::*;

    fn compiled(edit: u32) -> CompiledData {
        CompiledData::from_json_str(&flag_file(edit).to_string()).unwrap()
    }

    #[test]
    fn the_flag_file_is_deterministic_and_edits_change_one_flag() {
        assert_eq!(flag_file(0), flag_file(0));
        let (before, after) = (flag_file(0), flag_file(1));
        let before = before["flags"].as_object().unwrap();
        let after = after["flags"].as_object().unwrap();
        assert_eq!(before.len(), FLAG_COUNT);
        let changed: Vec<&String> = before
            .keys()
            .filter(|key| before[*key] != after[*key])
            .collect();
        assert_eq!(changed, [&flag_key(EDITED_FLAG)]);
        assert_eq!(
            flag_file(0)["segments"].as_object().unwrap().len(),
            SEGMENT_COUNT
        );
    }

    #[test]
    fn every_flag_evaluates_without_error_and_the_mix_is_varied() {
        let data = compiled(0);
        let context = Context::from_json(&native_context()).unwrap();
        let evaluator = Evaluator::new(&data);
        let mut kinds = std::collections::BTreeMap::new();
        for (key, detail) in evaluator.evaluate_all(&context) {
            assert!(
                !matches!(detail.reason, Reason::Error { .. }),
                "{key}: {:?}",
                detail.reason
            );
            *kinds.entry(detail.reason.kind_str()).or_insert(0) += 1;
        }
        assert_eq!(kinds.values().sum::<usize>(), FLAG_COUNT);
        for kind in ["OFF", "FALLTHROUGH", "RULE_MATCH", "PREREQUISITE_FAILED"] {
            assert!(kinds.contains_key(kind), "no {kind} in {kinds:?}");
        }
    }

    #[test]
    fn the_single_flag_case_walks_three_rules() {
        let data = compiled(0);
        let context = Context::from_json(&native_context()).unwrap();
        let detail = Evaluator::new(&data).evaluate(&flag_key(SINGLE_FLAG), &context);
        assert!(
            matches!(detail.reason, Reason::RuleMatch { rule_index: 2, .. }),
            "{:?}",
            detail.reason
        );
        assert_eq!(detail.value, Some(&json!("variant-c")));
    }

    #[test]
    fn the_ofrep_body_carries_the_same_context() {
        assert_eq!(
            ofrep_body()["context"]["targetingKey"],
            native_context()["key"]
        );
        assert!(ofrep_body()["context"].get("kind").is_none());
        assert_eq!(
            ofrep_body()["context"]["groups"],
            native_context()["groups"]
        );
    }

    #[test]
    fn sse_events_are_read_across_any_chunking() {
        let text = ": keep-alive\n\nevent: put\ndata: {\"path\":\"/\",\"data\":{}}\n\n\
                    event:patch\r\ndata: {\"path\":\"/flags/flag-000\"}\r\n\r\ndata: x\n\n";
        let expected = vec![
            SseEvent {
                name: "put".to_owned(),
                data: r#"{"path":"/","data":{}}"#.to_owned(),
            },
            SseEvent {
                name: "patch".to_owned(),
                data: r#"{"path":"/flags/flag-000"}"#.to_owned(),
            },
            SseEvent {
                name: "message".to_owned(),
                data: "x".to_owned(),
            },
        ];
        let bytes = text.as_bytes();
        for size in 1..=bytes.len() {
            let mut parser = SseParser::default();
            let mut events = Vec::new();
            for chunk in bytes.chunks(size) {
                parser.push(chunk, &mut events);
            }
            assert_eq!(events, expected, "chunks of {size}");
        }
    }

    #[test]
    fn sse_lines_are_cut_to_their_start() {
        let long = format!("event: put\ndata: {}\n\n", "x".repeat(100_000));
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        parser.push(long.as_bytes(), &mut events);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "put");
        assert_eq!(events[0].data.len(), SSE_LINE_KEEP - "data: ".len());
    }

    #[test]
    fn wrk_results_are_read_and_failures_refused() {
        let ok = "Running 10s test\nxtask-result requests=50000 duration_us=10000000 p50_us=450 \
                  p99_us=1200 connect=0 read=0 write=0 status=0 timeout=0\n";
        assert_eq!(
            parse_wrk(ok).unwrap(),
            WrkRun {
                requests_per_sec: 5000.0,
                p50_us: 450.0,
                p99_us: 1200.0
            }
        );
        let failed = ok.replace("status=0", "status=3");
        let err = parse_wrk(&failed).unwrap_err().to_string();
        assert!(err.starts_with("3 requests failed"), "{err}");
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn the_wrk_script_posts_the_body() {
        let script = wrk_script(r#"{"context":{"key":"k"}}"#).unwrap();
        assert!(script.contains(r#"wrk.body = [==[{"context":{"key":"k"}}]==]"#));
        assert!(script.contains(r#"wrk.method = "POST""#));
        assert!(wrk_script("]==]").is_err());
    }

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
        let ms = |n: u64| Duration::from_millis(n);
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&samples, 50.0), Some(ms(50)));
        assert_eq!(percentile(&samples, 99.0), Some(ms(99)));
        assert_eq!(percentile(&samples, 100.0), Some(ms(100)));
        assert_eq!(percentile(&[ms(7)], 99.0), Some(ms(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn options_round_trip_and_reject_nonsense() {
        let options = Options::parse(&[
            "--duration",
            "2",
            "--streams",
            "50",
            "--baseline-flagd",
            "/opt/old/flagd",
        ])
        .unwrap();
        assert_eq!(options.duration_secs, 2);
        assert_eq!(options.streams, 50);
        assert_eq!(options.baseline, Some(PathBuf::from("/opt/old/flagd")));
        assert!(!options.tracing_only);
        let only = Options::parse(&["--only", "tracing"]).unwrap();
        assert!(only.tracing_only);
        let args = only.to_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(Options::parse(&args).unwrap(), only);
        assert!(Options::parse(&["--only", "events"]).is_err());
        let args = options.to_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(Options::parse(&args).unwrap(), options);
        assert!(Options::parse(&["--duration"]).is_err());
        assert!(Options::parse(&["--duration", "0"]).is_err());
        assert!(Options::parse(&["--duration", "ten"]).is_err());
        assert!(Options::parse(&["--bogus", "1"]).is_err());
        assert!(Options::default().budget() > Duration::from_secs(15 * 10));
    }

    #[test]
    fn proc_files_are_read() {
        let status = "Name:\tflagd\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(proc_status_kib(status, "VmRSS"), Some(12345));
        assert_eq!(proc_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(proc_status_kib(status, "VmSwap"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_limit(limits), Some((1024, 524_288)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(open_files_limit(unlimited), Some((u64::MAX, u64::MAX)));
    }
}
