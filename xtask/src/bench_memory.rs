//! `cargo xtask bench-memory`: how much memory a release `flagd serve --file` holds for a big flag
//! file, and how much more it needs while it reloads the whole file.
//!
//! It writes a generated flag file (20,000 flags by default, each with a five-key target list,
//! two rules of two clauses and a 50/50 rollout; about 16 MB) into the target directory, starts
//! flagd on it, waits for `/readyz`, lets it settle and reads `VmRSS` from `/proc/PID/status`:
//! the steady figure. It then resets the peak (`VmHWM`, through `/proc/PID/clear_refs`), replaces
//! the file by one where every flag's content changed (written aside, then renamed over it), and
//! waits until `/readyz` reports the next generation. The reload's peak is `VmHWM` when the reset
//! worked, and in any case the highest `VmRSS` seen by a thread sampling it every millisecond.
//!
//! It runs twice on fresh processes: once with the data alone, and once the way SDKs use it,
//! with `GET /sdk/latest-all` requested and a `GET /all` stream open (whose `put` and, on reload,
//! 20,000 `patch` events it reads), `latest-all` being requested again after the reload.
//!
//! Everything talks to 127.0.0.1 only, every wait has a deadline, and the server is stopped
//! (SIGTERM, then SIGKILL) when a run ends for any reason. This is a measurement, not a test: it
//! fails only when the measurement cannot be made.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::bench_http::COUNTRIES;
use super::bench_root::SseParser;
use super::events_payload::mix;
use super::{listening_addr, load_average, release_flagd, show, target_dir, terminate};

/// Targets from the issue that asked for this benchmark.
const STEADY_RATIO_TARGET: f64 = 8.0;
const PEAK_RATIO_TARGET: f64 = 1.5;

/// Time for flagd to print its address and load the file, or to reload it.
const LOAD_DEADLINE: Duration = Duration::from_secs(120);
/// How often the sampling thread reads `VmRSS`.
const SAMPLE_GAP: Duration = Duration::from_millis(1);

/// `cargo xtask bench-memory [options]`, and `flag-file PATH [--edit N]`.
pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["--help" | "-h" | "help"] => {
            print!("{HELP}");
            return Ok(());
        }
        // The generated file alone, for profiling by hand.
        ["flag-file", path, rest @ ..] => {
            let mut options = Options::parse(&[])?;
            let mut edit = 0;
            for pair in crate::option_pairs(rest) {
                match pair? {
                    ("--edit", value) => edit = value.parse().context("--edit: not a number")?,
                    ("--flags", value) => options.flags = crate::positive("--flags", value)?,
                    (other, _) => {
                        bail!("unknown option {other} (see cargo xtask bench-memory --help)")
                    }
                }
            }
            return Ok(std::fs::write(
                path,
                serde_json::to_vec(&flag_file(options.flags, edit))?,
            )?);
        }
        _ => {}
    }
    let options = Options::parse(args)?;
    let flagd = release_flagd(root, "bench-memory")?;
    let target = target_dir(root)?;
    let dir = target.join("bench-memory");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for sdk in [false, true] {
        runs.push(runtime.block_on(measure(&options, &flagd, &dir, sdk))?);
    }
    print!("{}", render(&options, &runs));
    Ok(())
}

const HELP: &str = "\
Usage: cargo xtask bench-memory [--flags N] [--settle-ms N]

Builds flagd in release and measures the resident memory of `flagd serve --file` on a generated
flag file (written to <target>/bench-memory/flags.json): once loaded and settled, and at its peak
while it reloads the file with every flag changed. It runs with the data alone, then with
`/sdk/latest-all` requested and an SDK stream (`GET /all`) open. Targets: steady resident memory
at most 8 times the file's size, reload peak at most 1.5 times the steady figure.
`cargo xtask bench-memory flag-file PATH [--edit N] [--flags N]` writes the generated file alone
(edit N changes every flag's content).

Defaults: --flags 20000 --settle-ms 1000
";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    flags: usize,
    settle: Duration,
}

impl Options {
    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        let mut options = Options {
            flags: 20_000,
            settle: Duration::from_millis(1_000),
        };
        for pair in crate::option_pairs(args) {
            let (name, value) = pair?;
            match name {
                "--flags" => options.flags = crate::positive(name, value)?,
                "--settle-ms" => {
                    options.settle = Duration::from_millis(crate::positive(name, value)?);
                }
                other => bail!("unknown option {other} (see cargo xtask bench-memory --help)"),
            }
        }
        Ok(options)
    }
}

/// The figures of one run, in KiB (the file's size in bytes).
#[derive(Debug, Clone)]
struct Run {
    sdk: bool,
    file_bytes: u64,
    steady: u64,
    /// `VmHWM` since the reset, when the reset worked.
    peak_hwm: Option<u64>,
    /// The highest sampled `VmRSS` during the reload.
    peak_sampled: u64,
    after: u64,
    samples: usize,
    reload: Duration,
}

impl Run {
    fn peak(&self) -> u64 {
        self.peak_hwm.unwrap_or(0).max(self.peak_sampled)
    }

    fn steady_ratio(&self) -> f64 {
        self.steady as f64 * 1024.0 / self.file_bytes as f64
    }

    fn peak_ratio(&self) -> f64 {
        self.peak() as f64 / self.steady as f64
    }
}

async fn measure(options: &Options, flagd: &Path, dir: &Path, sdk: bool) -> anyhow::Result<Run> {
    let file = dir.join("flags.json");
    let file_bytes = write_atomically(&file, &flag_file(options.flags, 0))?;
    let what = if sdk {
        "with latest-all and a stream"
    } else {
        "data alone"
    };
    eprintln!(
        "bench-memory: {what}: {} flags, {:.1} MB",
        options.flags,
        file_bytes as f64 / 1e6
    );
    let client = reqwest::Client::builder().no_proxy().build()?;
    let server = Server::start(flagd, &file, dir)?;
    let base = server.base();
    let generation = server.wait_generation(&client, 1, options.flags).await?;

    let stream = if sdk {
        latest_all(&client, &base).await?;
        let patches = Arc::new(AtomicUsize::new(0));
        let (put_tx, put_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(follow(
            client.clone(),
            format!("{base}/all"),
            put_tx,
            Arc::clone(&patches),
        ));
        tokio::time::timeout(LOAD_DEADLINE, put_rx)
            .await
            .context("the stream sent no put")?
            .context("the stream ended before its put")?;
        Some((task, patches))
    } else {
        None
    };
    tokio::time::sleep(options.settle).await;
    let steady = server.memory_kib("VmRSS")?;

    let reset = server.reset_peak();
    if let Err(e) = &reset {
        eprintln!("bench-memory: cannot reset VmHWM ({e:#}); the peak is sampled only");
    }
    let sampler = Sampler::start(server.pid());
    let started = std::time::Instant::now();
    write_atomically(&file, &flag_file(options.flags, 1))?;
    server
        .wait_generation(&client, generation + 1, options.flags)
        .await?;
    if let Some((_, patches)) = &stream {
        latest_all(&client, &base).await?;
        let deadline = tokio::time::Instant::now() + LOAD_DEADLINE;
        while patches.load(Ordering::Relaxed) < options.flags {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the stream carried {} patches of {} within {LOAD_DEADLINE:?}",
                    patches.load(Ordering::Relaxed),
                    options.flags
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let reload = started.elapsed();
    tokio::time::sleep(options.settle).await;
    let (peak_sampled, samples) = sampler.stop();
    let peak_hwm = match reset {
        Ok(()) => Some(server.memory_kib("VmHWM")?),
        Err(_) => None,
    };
    let after = server.memory_kib("VmRSS")?;
    if let Some((task, _)) = stream {
        task.abort();
    }
    drop(server);
    Ok(Run {
        sdk,
        file_bytes,
        steady,
        peak_hwm,
        peak_sampled,
        after,
        samples,
        reload,
    })
}

/// Writes `value` as JSON next to `path`, then renames it over `path`, so the server never reads
/// a half-written file. Returns the size.
fn write_atomically(path: &Path, value: &Value) -> anyhow::Result<u64> {
    let bytes = serde_json::to_vec(value)?;
    let aside = path.with_extension("json.new");
    std::fs::write(&aside, &bytes).with_context(|| format!("cannot write {}", aside.display()))?;
    std::fs::rename(&aside, path)
        .with_context(|| format!("cannot rename {} over {}", aside.display(), path.display()))?;
    Ok(bytes.len() as u64)
}

/// `GET /sdk/latest-all`, read whole. File mode without configured SDK keys needs none.
async fn latest_all(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let url = format!("{base}/sdk/latest-all");
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("GET {url} answered {status}");
    }
    if !body.starts_with(b"{\"flags\":{") {
        bail!("GET {url} answered something other than the flag data");
    }
    Ok(())
}

/// Follows `GET /all`: tells `put` when the first `put` arrived, then counts `patch` events.
async fn follow(
    client: reqwest::Client,
    url: String,
    put: tokio::sync::oneshot::Sender<()>,
    patches: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let response = client
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("GET {url} answered {}", response.status());
    }
    let mut put = Some(put);
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    while let Some(chunk) = body.next().await {
        for (name, _) in parser.push(&chunk?) {
            match name.as_str() {
                "put" => {
                    if let Some(put) = put.take() {
                        let _ = put.send(());
                    }
                }
                "patch" => {
                    patches.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A thread reading a process's `VmRSS` every [`SAMPLE_GAP`], keeping the highest.
struct Sampler {
    stop: Arc<AtomicBool>,
    highest: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<usize>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let highest = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, highest) = (Arc::clone(&stop), Arc::clone(&highest));
            std::thread::spawn(move || {
                let path = format!("/proc/{pid}/status");
                let mut samples = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|status| proc_status_kib(&status, "VmRSS"))
                    {
                        highest.fetch_max(rss, Ordering::Relaxed);
                        samples += 1;
                    }
                    std::thread::sleep(SAMPLE_GAP);
                }
                samples
            })
        };
        Sampler {
            stop,
            highest,
            thread,
        }
    }

    /// The highest `VmRSS` seen and the number of samples.
    fn stop(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or(0);
        (self.highest.load(Ordering::Relaxed), samples)
    }
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

// ------------------------------------------------------------------------------ the server

/// A release `flagd serve --file` process; stopped when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(flagd: &Path, file: &Path, dir: &Path) -> anyhow::Result<Server> {
        let log_path = dir.join("flagd.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(flagd);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--file"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let shown = show(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        server.addr = listening_addr(stdout, LOAD_DEADLINE, "flagd", &shown)?;
        Ok(server)
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` serves `flags` flags at generation `at_least` or later; returns the
    /// generation.
    async fn wait_generation(
        &self,
        client: &reqwest::Client,
        at_least: u64,
        flags: usize,
    ) -> anyhow::Result<u64> {
        let url = format!("{}/readyz", self.base());
        let deadline = tokio::time::Instant::now() + LOAD_DEADLINE;
        loop {
            let ready: Value = match client.get(&url).send().await {
                Ok(response) => serde_json::from_slice(&response.bytes().await?)?,
                Err(_) => Value::Null,
            };
            if let Some(generation) = ready["generation"].as_u64()
                && generation >= at_least
                && ready["flags"].as_u64() == Some(flags as u64)
            {
                if ready["status"] != "SERVING" {
                    bail!("flagd is not serving: {ready}");
                }
                return Ok(generation);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "flagd did not serve generation {at_least} within {LOAD_DEADLINE:?}: {ready}"
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A memory figure from `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
    fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        proc_status_kib(&status, field).with_context(|| format!("no {field} in {path}"))
    }

    /// Resets `VmHWM` to the current `VmRSS`.
    fn reset_peak(&self) -> anyhow::Result<()> {
        let path = format!("/proc/{}/clear_refs", self.pid());
        std::fs::write(&path, "5").with_context(|| format!("cannot write {path}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if terminate(&mut self.child, Duration::from_secs(5)) {
            return;
        }
        eprintln!("bench-memory: flagd did not stop; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------ report

fn render(options: &Options, runs: &[Run]) -> String {
    let mut out = String::new();
    let file_bytes = runs.first().map_or(0, |r| r.file_bytes);
    let _ = writeln!(
        out,
        "\nflagd serve --file: {} flags, {:.1} MB of JSON ({file_bytes} bytes); load average {}; \
         {} cores\n",
        options.flags,
        file_bytes as f64 / 1e6,
        load_average(),
        std::thread::available_parallelism().map_or(1, usize::from),
    );
    let _ = writeln!(
        out,
        "| run | steady RSS | / file | reload peak | / steady | RSS after reload | reload | \
         steady <= {STEADY_RATIO_TARGET}x file | peak <= {PEAK_RATIO_TARGET}x steady |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|---|");
    for run in runs {
        let peak = match run.peak_hwm {
            Some(hwm) => format!(
                "{} (VmHWM {}, sampled {})",
                mib(run.peak()),
                mib(hwm),
                mib(run.peak_sampled)
            ),
            None => format!("{} (sampled)", mib(run.peak())),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1}x | {peak} | {:.2}x | {} | {:.2} s | {} | {} |",
            if run.sdk {
                "with latest-all and a stream"
            } else {
                "data alone"
            },
            mib(run.steady),
            run.steady_ratio(),
            run.peak_ratio(),
            mib(run.after),
            run.reload.as_secs_f64(),
            verdict(run.steady_ratio() <= STEADY_RATIO_TARGET),
            verdict(run.peak_ratio() <= PEAK_RATIO_TARGET),
        );
    }
    let samples: Vec<String> = runs.iter().map(|r| r.samples.to_string()).collect();
    let _ = writeln!(
        out,
        "\nVmRSS samples during the reloads: {}",
        samples.join(", ")
    );
    out
}

fn verdict(met: bool) -> &'static str {
    if met { "yes" } else { "NO" }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ------------------------------------------------------------------------------ the data

/// An identifier shaped like LaunchDarkly's rule ids (a UUID), derived from `n`.
fn uuid(n: u64) -> String {
    let (a, b) = (mix(n), mix(n ^ 0x5555_5555));
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// The benchmark's flag file: `flags` flags and no segments. `edit` changes the content of every
/// flag (its salt and a rule's values) and nothing else.
fn flag_file(flags: usize, edit: u32) -> Value {
    let flags: Map<String, Value> = (0..flags).map(|i| (flag_key(i), flag(i, edit))).collect();
    json!({"flags": flags, "segments": {}})
}

fn flag_key(i: usize) -> String {
    format!("flag-{i:05}")
}

/// One flag: a string flag with a five-key target list, two rules of two clauses each and a
/// 50/50 rollout in the fallthrough.
fn flag(i: usize, edit: u32) -> Value {
    let key = flag_key(i);
    let n = i as u64;
    let r = mix(n);
    let targeted: Vec<String> = (0..5)
        .map(|u| format!("user-{:012x}", mix(n * 5 + u) >> 16))
        .collect();
    let countries: Vec<&str> = (0..3)
        .map(|c| COUNTRIES[((r >> (c * 4)) % 8) as usize])
        .collect();
    json!({
        "key": key,
        "on": true,
        "salt": format!("{key}-salt-{edit}"),
        "variations": ["control", "treatment-a", "treatment-b"],
        "offVariation": 0,
        "targets": [{"values": targeted, "variation": 1}],
        "rules": [
            {
                "id": uuid(n * 2),
                "clauses": [
                    {"attribute": "country", "op": "in", "values": countries},
                    {"attribute": "plan", "op": "in", "values": ["enterprise", format!("plan-{}", (r >> 20) % 5 + u64::from(edit))]}
                ],
                "variation": 2
            },
            {
                "id": uuid(n * 2 + 1),
                "clauses": [
                    {"attribute": "email", "op": "endsWith", "values": [format!("@customer-{}.example.com", r % 1000)]},
                    {"attribute": "appVersion", "op": "semVerGreaterThan", "values": [format!("{}.{}.0", 1 + (r >> 8) % 4, (r >> 12) % 20)]}
                ],
                "variation": 1
            }
        ],
        "fallthrough": {"rollout": {"variations": [
            {"variation": 0, "weight": 50_000},
            {"variation": 1, "weight": 50_000}
        ]}},
        "trackEvents": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_deterministic_and_an_edit_changes_every_flag() {
        let first = flag_file(50, 0);
        assert_eq!(first, flag_file(50, 0));
        let edited = flag_file(50, 1);
        let (a, b) = (
            first["flags"].as_object().unwrap(),
            edited["flags"].as_object().unwrap(),
        );
        assert_eq!(a.len(), 50);
        assert!(a.keys().eq(b.keys()));
        assert!(a.values().zip(b.values()).all(|(x, y)| x != y));
    }

    #[test]
    fn every_flag_loads_and_evaluates_without_error() {
        let text = serde_json::to_string(&flag_file(20, 0)).unwrap();
        let data = flags_eval::CompiledData::from_json_str(&text).unwrap();
        let context = flags_core::Context::from_json(&json!({
            "kind": "user", "key": "someone", "country": "DE", "plan": "enterprise"
        }))
        .unwrap();
        for i in 0..20 {
            let detail = flags_eval::evaluate(&data, &flag_key(i), &context);
            assert!(detail.value.is_some(), "{i}: {detail:?}");
        }
    }

    #[test]
    fn options_parse_and_reject_nonsense() {
        let options = Options::parse(&["--flags", "20", "--settle-ms", "5"]).unwrap();
        assert_eq!(options.flags, 20);
        assert_eq!(options.settle, Duration::from_millis(5));
        assert!(Options::parse(&["--flags", "0"]).is_err());
        assert!(Options::parse(&["--nope", "1"]).is_err());
    }

    #[test]
    fn status_figures_are_read() {
        let status = "Name:\tflagd\nVmHWM:\t  123456 kB\nVmRSS:\t   654 kB\n";
        assert_eq!(proc_status_kib(status, "VmHWM"), Some(123_456));
        assert_eq!(proc_status_kib(status, "VmRSS"), Some(654));
        assert_eq!(proc_status_kib(status, "VmSwap"), None);
    }
}
