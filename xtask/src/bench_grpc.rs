//! `cargo xtask bench-grpc`: gRPC `Evaluate` and `BulkEvaluate` throughput of a release flagd,
//! next to its HTTP API's single-flag and bulk evaluations, in the same run against the same
//! server.
//!
//! The launcher builds `flagd` and this xtask in release, then runs the release xtask's hidden
//! `bench-grpc measure` pinned to core 1. That process writes bench-http's generated 350-flag
//! file, starts one flagd with `--grpc-listen` pinned to core 0, and loads it from core 1: HTTP
//! with `wrk`, gRPC with the load generator here (no `ghz` is packaged by the registries this
//! project uses): a tonic client keeping a fixed number of calls in flight over a few HTTP/2
//! connections on a single-threaded runtime, as wrk keeps its connections busy from one thread.
//! Repeats go round all cases; the table shows medians.
//!
//! Everything talks to 127.0.0.1 only; every child runs under `timeout`. This is a measurement,
//! not a test: it fails only when the measurement cannot be made.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use flags_proto::v1::flag_evaluator_service_client::FlagEvaluatorServiceClient;
use flags_proto::v1::{
    BulkEvaluateRequest, EvaluateRequest, EvaluationContext, ReasonKind, evaluation_context,
};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::bench_http::{
    FLAG_COUNT, LOAD_CORE, Pinned, SINGLE_FLAG, WrkLoad, flag_file, flag_key, median, micros,
    native_body, native_context, run_wrk_with, wait_ready, wrk_script,
};
use super::{cargo, on_path, run_command, target_dir};

const HELP: &str = "\
Usage: cargo xtask bench-grpc [--duration SECS] [--connections N] [--in-flight N] [--repeats N]

Builds flagd in release and measures, on loopback, with flagd pinned to core 0 and the load on
core 1: HTTP single-flag and bulk evaluation with wrk (-t1 -c<in-flight>), and gRPC Evaluate and
BulkEvaluate with a tonic load generator keeping <in-flight> calls in flight over <connections>
HTTP/2 connections. Needs wrk (apt-get install -y wrk), taskset and timeout, and two cores.

Defaults: --duration 10 --connections 4 --in-flight 32 --repeats 3
";

/// What to run; the same options travel from the launcher to `measure`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    duration_secs: u64,
    connections: usize,
    in_flight: usize,
    repeats: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            duration_secs: 10,
            connections: 4,
            in_flight: 32,
            repeats: 3,
        }
    }
}

impl Options {
    fn parse(args: &[&str]) -> anyhow::Result<(Options, Option<String>)> {
        let mut options = Options::default();
        let mut flagd = None;
        for pair in crate::option_pairs(args) {
            let (name, value) = pair?;
            let number = || crate::positive::<u64>(name, value);
            match name {
                "--duration" => options.duration_secs = number()?,
                "--connections" => options.connections = usize::try_from(number()?)?,
                "--in-flight" => options.in_flight = usize::try_from(number()?)?,
                "--repeats" => options.repeats = usize::try_from(number()?)?,
                "--flagd" => flagd = Some(value.to_owned()),
                other => bail!("unknown option {other} (see cargo xtask bench-grpc --help)"),
            }
        }
        if options.in_flight < options.connections {
            bail!("--in-flight must be at least --connections");
        }
        Ok((options, flagd))
    }

    fn to_args(&self) -> Vec<String> {
        [
            ("--duration", self.duration_secs),
            ("--connections", self.connections as u64),
            ("--in-flight", self.in_flight as u64),
            ("--repeats", self.repeats as u64),
        ]
        .into_iter()
        .flat_map(|(name, value)| [name.to_owned(), value.to_string()])
        .collect()
    }

    /// An upper bound on the whole measurement, for `timeout`.
    fn budget(&self) -> Duration {
        let runs = self.repeats as u64 * CASES.len() as u64;
        Duration::from_secs(runs * (self.duration_secs + 15) + 120)
    }
}

/// `cargo xtask bench-grpc [options]`, and the hidden `measure` step.
pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["--help" | "-h" | "help"] => {
            print!("{HELP}");
            Ok(())
        }
        ["measure", rest @ ..] => {
            let (options, flagd) = Options::parse(rest)?;
            let flagd =
                flagd.context("measure needs --flagd PATH (run `cargo xtask bench-grpc`)")?;
            measure(&options, Path::new(&flagd))
        }
        rest => launch(root, &Options::parse(rest)?.0),
    }
}

fn launch(root: &Path, options: &Options) -> anyhow::Result<()> {
    for tool in ["wrk", "taskset", "timeout"] {
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
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        bail!("the benchmark pins flagd and the load to separate cores; this machine has one");
    }
    eprintln!("bench-grpc: building flagd and xtask in release");
    // Two builds, so the measured flagd is exactly what `-p flagd` builds (xtask's tonic client
    // features do not reach it).
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
        .args(["bench-grpc", "measure", "--flagd"])
        .arg(release.join("flagd"))
        .args(options.to_args());
    run_command(&mut measure)
}

/// One case of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    HttpOne,
    GrpcEvaluate,
    HttpAll,
    GrpcBulk,
}

const CASES: [Case; 4] = [
    Case::HttpOne,
    Case::GrpcEvaluate,
    Case::HttpAll,
    Case::GrpcBulk,
];

impl Case {
    fn name(self) -> String {
        match self {
            Case::HttpOne => format!(
                "HTTP, one flag `POST /v1/evaluate/{}`",
                flag_key(SINGLE_FLAG)
            ),
            Case::GrpcEvaluate => format!("gRPC `Evaluate` of {}", flag_key(SINGLE_FLAG)),
            Case::HttpAll => format!("HTTP, all {FLAG_COUNT} flags `POST /v1/evaluate`"),
            Case::GrpcBulk => format!("gRPC `BulkEvaluate` of all {FLAG_COUNT} flags"),
        }
    }
}

/// What one run of one case measured.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    requests_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn measure(options: &Options, flagd_bin: &Path) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("flagd-bench-grpc-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let flag_path = dir.path().join("flags.json");
    std::fs::write(&flag_path, serde_json::to_vec_pretty(&flag_file(0))?)?;
    // A free port for gRPC: flagd prints only its HTTP address on the line Pinned reads.
    let grpc_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let flag_arg = flag_path.display().to_string();
    let grpc_arg = grpc_addr.to_string();
    let serve = [
        "serve",
        "--file",
        &flag_arg,
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        &grpc_arg,
        "--log",
        "warn",
    ];
    let (flagd, http_addr) =
        Pinned::spawn("flagd", flagd_bin, &serve, &[], options.budget(), false)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http_url = format!("http://{http_addr}");
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build()?;
        wait_ready(&client, &http_url).await
    })?;
    let one_script = dir.path().join("one.lua");
    std::fs::write(&one_script, wrk_script(&native_body().to_string())?)?;
    let channels = runtime.block_on(connect(grpc_addr, options.connections))?;
    runtime.block_on(check_answers(&channels[0]))?;

    let wrk = WrkLoad {
        duration_secs: options.duration_secs,
        threads: 1,
        connections: u32::try_from(options.in_flight)?,
    };
    let mut runs: Vec<(Case, Vec<Run>)> = CASES.iter().map(|c| (*c, Vec::new())).collect();
    for repeat in 1..=options.repeats {
        for (case, results) in &mut runs {
            eprintln!(
                "bench-grpc: run {repeat}/{}: {}",
                options.repeats,
                case.name()
            );
            let run = match case {
                Case::HttpOne | Case::HttpAll => {
                    let path = if *case == Case::HttpOne {
                        format!("/v1/evaluate/{}", flag_key(SINGLE_FLAG))
                    } else {
                        "/v1/evaluate".to_owned()
                    };
                    let wrk = run_wrk_with(wrk, &one_script, &format!("{http_url}{path}"))?;
                    Run {
                        requests_per_sec: wrk.requests_per_sec,
                        p50_us: wrk.p50_us,
                        p99_us: wrk.p99_us,
                    }
                }
                Case::GrpcEvaluate | Case::GrpcBulk => runtime.block_on(load(
                    &channels,
                    *case,
                    options.in_flight,
                    Duration::from_secs(options.duration_secs),
                ))?,
            };
            results.push(run);
        }
    }
    drop(flagd);
    print!("{}", report(options, &runs));
    Ok(())
}

/// `count` HTTP/2 connections to flagd's gRPC port.
async fn connect(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut channels = Vec::with_capacity(count);
    while channels.len() < count {
        match endpoint.connect().await {
            Ok(channel) => channels.push(channel),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context("cannot connect to flagd's gRPC port"),
        }
    }
    Ok(channels)
}

fn context() -> EvaluationContext {
    EvaluationContext {
        context: Some(evaluation_context::Context::Json(
            native_context().to_string(),
        )),
    }
}

fn evaluate_request() -> EvaluateRequest {
    EvaluateRequest {
        flag_id: flag_key(SINGLE_FLAG),
        context: Some(context()),
        default_value: None,
    }
}

fn bulk_request() -> BulkEvaluateRequest {
    BulkEvaluateRequest {
        flag_ids: Vec::new(),
        context: Some(context()),
    }
}

/// Fails unless both calls answer what the cases mean to measure.
async fn check_answers(channel: &Channel) -> anyhow::Result<()> {
    let mut client = FlagEvaluatorServiceClient::new(channel.clone());
    let one = client.evaluate(evaluate_request()).await?.into_inner();
    let kind = one.reason.map(|r| r.kind());
    if one.value.is_none() || kind == Some(ReasonKind::Error) {
        bail!("Evaluate answered no value: {kind:?}");
    }
    let all = client.bulk_evaluate(bulk_request()).await?.into_inner();
    if all.evaluations.len() != FLAG_COUNT {
        bail!(
            "BulkEvaluate answered {} flags, not {FLAG_COUNT}",
            all.evaluations.len()
        );
    }
    Ok(())
}

/// Keeps `in_flight` calls of `case` going over `channels` for `duration`; every call must
/// succeed.
async fn load(
    channels: &[Channel],
    case: Case,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..in_flight {
        let mut client = FlagEvaluatorServiceClient::new(channels[worker % channels.len()].clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let sent = Instant::now();
                match case {
                    Case::GrpcEvaluate => {
                        client.evaluate(evaluate_request()).await?;
                    }
                    _ => {
                        client.bulk_evaluate(bulk_request()).await?;
                    }
                }
                latencies.push(sent.elapsed());
            }
            Ok::<_, tonic::Status>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done?.context("a call failed; the numbers would mislead")?);
    }
    let elapsed = started.elapsed();
    if latencies.is_empty() {
        bail!("no call completed");
    }
    latencies.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1].as_secs_f64() * 1e6
    };
    Ok(Run {
        requests_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: at(50.0),
        p99_us: at(99.0),
    })
}

fn report(options: &Options, runs: &[(Case, Vec<Run>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### gRPC and HTTP evaluation: {} s per run, {} in flight ({} HTTP/2 connections for \
         gRPC, `wrk -t1 -c{}` for HTTP), median of {} runs\n",
        options.duration_secs,
        options.in_flight,
        options.connections,
        options.in_flight,
        options.repeats
    );
    let _ = writeln!(
        out,
        "| case | req/s | req/s, all runs | vs HTTP | p50 | p99 |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    let median_of = |case: Case| {
        runs.iter()
            .find(|(c, _)| *c == case)
            .map_or(f64::NAN, |(_, r)| {
                median(r.iter().map(|r| r.requests_per_sec))
            })
    };
    for (case, results) in runs {
        let rps = median(results.iter().map(|r| r.requests_per_sec));
        let http = match case {
            Case::HttpOne | Case::GrpcEvaluate => median_of(Case::HttpOne),
            Case::HttpAll | Case::GrpcBulk => median_of(Case::HttpAll),
        };
        let all: Vec<String> = results
            .iter()
            .map(|r| format!("{:.0}", r.requests_per_sec))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {rps:.0} | {} | {:.0}% | {} | {} |",
            case.name(),
            all.join(" / "),
            100.0 * rps / http,
            micros(median(results.iter().map(|r| r.p50_us))),
            micros(median(results.iter().map(|r| r.p99_us))),
        );
    }
    let _ = writeln!(
        out,
        "\nLoad average after the run: {}",
        crate::load_average()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject_nonsense() {
        let (options, flagd) =
            Options::parse(&["--duration", "2", "--in-flight", "8", "--flagd", "/x"]).unwrap();
        assert_eq!(options.duration_secs, 2);
        assert_eq!(options.in_flight, 8);
        assert_eq!(flagd.as_deref(), Some("/x"));
        let args = options.to_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(Options::parse(&args).unwrap().0, options);
        assert!(Options::parse(&["--in-flight", "2", "--connections", "4"]).is_err());
        assert!(Options::parse(&["--nope", "1"]).is_err());
    }
}
