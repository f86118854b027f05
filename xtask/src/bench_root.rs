//! `cargo xtask bench-root`: flagd's root mode on PostgreSQL, in release: how long a replica takes
//! to load a big environment and how much memory it holds, and how long an admin write at one
//! replica takes to reach a second replica's evaluation endpoint and an SDK stream on it.
//!
//! It creates a throwaway database on the machine's PostgreSQL (127.0.0.1:5432 by default, trust
//! auth, user postgres), creates an environment and an SDK key through a first replica's admin
//! API, seeds the environment with `flagd import` (10,000 flags and 1,000 segments by default),
//! then starts two fresh replicas, A and B, timing each until `/readyz` serves every flag. It
//! opens a `GET /all` stream on B, then writes through A's admin API (`PUT .../flags/{key}` with
//! `If-Match`, and every fifth write a `PUT` or `DELETE .../kill`), and after each answer times
//! until B's stream carries the flag's `patch` and until B's `/v1/evaluate` answers the new
//! value, both measured at once. It prints p50/p99 and the load average, and drops the database.
//!
//! Everything talks to 127.0.0.1 only, every wait has a deadline, and the servers are stopped
//! (SIGTERM, then SIGKILL) when the run ends for any reason. This is a measurement, not a test:
//! it fails only when the measurement cannot be made.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{listening_addr, load_average, on_path, release_flagd, run_command, show, terminate};

/// The environment written to.
const ENV: &str = "production";
/// The bootstrap admin key the replicas accept.
const ADMIN_KEY: &str = "bench-root-admin";
/// Flags the writes go to (bool flags, besides the generated ones), in turn.
const WRITE_FLAGS: usize = 10;
/// Every this many writes, one is a kill or unkill instead of a flag replacement.
const KILL_EVERY: usize = 5;

/// Targets from the issue that asked for this benchmark.
const VISIBLE_P99_TARGET: Duration = Duration::from_millis(100);
const START_TARGET: Duration = Duration::from_secs(2);
const RSS_TARGET_KIB: u64 = 200 * 1024;

/// Time for a replica to print its address and load everything.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// Time for one write to become visible at B.
const VISIBLE_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between two polls of B's evaluation endpoint (the resolution of that measurement).
const POLL_GAP: Duration = Duration::from_millis(1);
/// Pause between writes, so each is measured on a quiet replica.
const WRITE_GAP: Duration = Duration::from_millis(20);

/// `cargo xtask bench-root [options]`.
pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["--help" | "-h" | "help"] => {
            print!("{HELP}");
            return Ok(());
        }
        // The generated environment alone, as a flag file, for profiling by hand.
        ["flag-file", path] => {
            let options = Options::parse(&[])?;
            let file = flag_file(options.flags, options.segments);
            return Ok(std::fs::write(path, serde_json::to_vec(&file)?)?);
        }
        _ => {}
    }
    let options = Options::parse(args)?;
    for tool in ["psql"] {
        if !on_path(tool) {
            bail!("{tool} is not installed (apt-get install -y postgresql-client)");
        }
    }
    let flagd = release_flagd(root, "bench-root")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure(&options, &flagd))
}

const HELP: &str = "\
Usage: cargo xtask bench-root [--flags N] [--segments N] [--writes N] [--server URL] [--logs DIR]

Builds flagd in release and measures root mode on a throwaway PostgreSQL database: start-up time
and resident memory of a replica loading the environment, and the time from an admin write at
replica A to B's SDK stream and to B's evaluation endpoint (p50/p99). Needs psql and a
PostgreSQL server accepting the postgres user without a password. The replicas log to DIR
(flagd-A.log, flagd-B.log) when given; FLAGD_LOG=info,flagd::root=debug adds each batch's
apply time. `cargo xtask bench-root flag-file PATH` writes the generated environment alone.

Defaults: --flags 10000 --segments 1000 --writes 1000 --server postgres://postgres@127.0.0.1:5432
";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    flags: usize,
    segments: usize,
    writes: usize,
    /// The server, without a database name.
    server: String,
    /// Where the replicas' logs go (a temporary directory when not given).
    logs: Option<std::path::PathBuf>,
}

impl Options {
    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        let mut options = Options {
            flags: 10_000,
            segments: 1_000,
            writes: 1_000,
            server: "postgres://postgres@127.0.0.1:5432".to_owned(),
            logs: None,
        };
        for pair in crate::option_pairs(args) {
            let (name, value) = pair?;
            let number = || crate::positive::<usize>(name, value);
            match name {
                "--flags" => options.flags = number()?,
                "--segments" => options.segments = number()?,
                "--writes" => options.writes = number()?,
                "--server" => options.server = value.trim_end_matches('/').to_owned(),
                "--logs" => options.logs = Some(std::path::PathBuf::from(value)),
                other => bail!("unknown option {other} (see cargo xtask bench-root --help)"),
            }
        }
        Ok(options)
    }
}

async fn measure(options: &Options, flagd: &Path) -> anyhow::Result<()> {
    let db = Database::create(&options.server, "flagd_bench")?;
    let temp = tempfile::tempdir()?;
    let dir = match &options.logs {
        Some(logs) => {
            std::fs::create_dir_all(logs)?;
            logs.clone()
        }
        None => temp.path().to_owned(),
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(4)
        .build()?;

    // A first replica migrates the schema and creates the environment and its SDK key.
    let sdk_key = {
        let setup = Replica::start("setup", flagd, &db.url, &dir)?;
        let base = setup.base();
        admin(
            &client,
            &base,
            "POST",
            "/environments",
            json!({"key": ENV, "name": "Production"}),
        )
        .await?;
        let answer = admin(
            &client,
            &base,
            "POST",
            &format!("/environments/{ENV}/keys"),
            json!({"kind": "sdk", "name": "bench"}),
        )
        .await?;
        answer["key"]
            .as_str()
            .context("the key answer has no key")?
            .to_owned()
    };

    let file = dir.join("flags.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&flag_file(options.flags, options.segments))?,
    )?;
    eprintln!(
        "bench-root: importing {} flags and {} segments",
        options.flags + WRITE_FLAGS,
        options.segments
    );
    let started = std::time::Instant::now();
    let mut import = Command::new(flagd);
    import
        .args(["import", "--database", &db.url, "--env", ENV, "--file"])
        .arg(&file)
        .stdout(Stdio::null());
    run_command(&mut import)?;
    let import_time = started.elapsed();
    let total_flags = options.flags + WRITE_FLAGS;

    // Start-up: two fresh replicas, one after the other.
    let mut starts = Vec::new();
    let a = Replica::start("A", flagd, &db.url, &dir)?;
    starts.push(a.wait_loaded(&client, total_flags).await?);
    let b = Replica::start("B", flagd, &db.url, &dir)?;
    starts.push(b.wait_loaded(&client, total_flags).await?);
    let rss_loaded = [a.memory_kib("VmRSS")?, b.memory_kib("VmRSS")?];
    let load_start = load_average();

    // Writes at A, seen at B.
    let (tx, mut events) = mpsc::unbounded_channel();
    let stream_url = format!("{}/all", b.base());
    let stream_task = tokio::spawn(follow(client.clone(), stream_url, sdk_key.clone(), tx));
    match tokio::time::timeout(START_DEADLINE, events.recv()).await {
        Ok(Some(Seen::Event { name, .. })) if name == "put" => {}
        Ok(Some(Seen::Event { name, .. })) => bail!("B's stream began with {name}, not put"),
        Ok(Some(Seen::Ended(why))) => bail!("B's stream ended: {why}"),
        Ok(None) => bail!("B's stream ended"),
        Err(_) => bail!("B's stream sent no put within {START_DEADLINE:?}"),
    }
    let mut flags: Vec<WriteFlag> = Vec::new();
    for i in 0..WRITE_FLAGS {
        let key = write_flag_key(i);
        let version = flag_version(&client, &a.base(), &key).await?;
        flags.push(WriteFlag {
            key,
            version,
            value: false,
            killed: false,
        });
    }
    eprintln!("bench-root: {} writes at A, timed at B", options.writes);
    let mut requests = Vec::with_capacity(options.writes);
    let mut to_stream = Vec::with_capacity(options.writes);
    let mut to_eval = Vec::with_capacity(options.writes);
    for i in 0..options.writes {
        let flag = &mut flags[i % WRITE_FLAGS];
        let sent = Instant::now();
        if i % KILL_EVERY == KILL_EVERY - 1 {
            flag.killed = !flag.killed;
            let method = if flag.killed { "PUT" } else { "DELETE" };
            let path = format!("/environments/{ENV}/flags/{}/kill", flag.key);
            admin(&client, &a.base(), method, &path, json!({})).await?;
        } else {
            flag.value = !flag.value;
            flag.version = put_flag(&client, &a.base(), flag).await?;
        }
        let acked = Instant::now();
        requests.push(acked - sent);
        let path = format!("/flags/{}", flag.key);
        let expect = Expect {
            value: flag.value && !flag.killed,
            killed: flag.killed,
        };
        let b_base = b.base();
        let (stream, eval) = tokio::join!(
            wait_patch(&mut events, &path),
            wait_eval(&client, &b_base, &sdk_key, &flag.key, expect),
        );
        to_stream.push(stream.with_context(|| format!("write {i} to {}", flag.key))? - acked);
        to_eval.push(eval.with_context(|| format!("write {i} to {}", flag.key))? - acked);
        tokio::time::sleep(WRITE_GAP).await;
    }
    stream_task.abort();
    let load_end = load_average();
    let peak = [a.memory_kib("VmHWM")?, b.memory_kib("VmHWM")?];
    let rss_end = [a.memory_kib("VmRSS")?, b.memory_kib("VmRSS")?];

    let report = Report {
        options: options.clone(),
        import_time,
        starts,
        rss_loaded,
        rss_end,
        peak,
        requests,
        to_stream,
        to_eval,
        load_start,
        load_end,
    };
    print!("{}", report.render());
    drop(a);
    drop(b);
    drop(db);
    Ok(())
}

/// One of the flags the writes go to, as the benchmark last wrote it.
struct WriteFlag {
    key: String,
    version: u64,
    value: bool,
    killed: bool,
}

/// What B's evaluation endpoint must answer once a write is visible.
#[derive(Debug, Clone, Copy)]
struct Expect {
    value: bool,
    killed: bool,
}

/// Replaces a write flag through the admin API with `If-Match`; returns its new version.
async fn put_flag(client: &reqwest::Client, base: &str, flag: &WriteFlag) -> anyhow::Result<u64> {
    let url = format!("{base}/api/v1/environments/{ENV}/flags/{}", flag.key);
    let response = client
        .put(&url)
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("if-match", format!("\"{}\"", flag.version))
        .header("content-type", "application/json")
        .body(bool_flag(&flag.key, flag.value).to_string())
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!(
            "PUT {url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let answer: Value = serde_json::from_slice(&body).context("the PUT answer is not JSON")?;
    answer["version"]
        .as_u64()
        .with_context(|| format!("the PUT answer has no version: {answer}"))
}

/// The stored version of a flag, from the admin API.
async fn flag_version(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<u64> {
    let url = format!("{base}/api/v1/environments/{ENV}/flags/{key}");
    let response = client
        .get(&url)
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let answer: Value = serde_json::from_slice(&response.bytes().await?)?;
    if !status.is_success() {
        bail!("GET {url} answered {status}: {answer}");
    }
    answer["version"]
        .as_u64()
        .with_context(|| format!("the flag answer has no version: {answer}"))
}

/// An admin API request with the bootstrap key; the JSON answer.
async fn admin(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let url = format!("{base}/api/v1{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let response = client
        .request(method.clone(), &url)
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        bail!(
            "{method} {url} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).with_context(|| format!("the answer to {method} {url}"))
}

/// When B's stream carries a `patch` of `path`.
async fn wait_patch(
    events: &mut mpsc::UnboundedReceiver<Seen>,
    path: &str,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + VISIBLE_DEADLINE;
    loop {
        let seen = tokio::time::timeout_at(deadline, events.recv())
            .await
            .with_context(|| format!("no patch of {path} within {VISIBLE_DEADLINE:?}"))?;
        match seen {
            Some(Seen::Event { name, data, at }) => {
                if name == "patch" && event_path(&data) == Some(path) {
                    return Ok(at);
                }
                if name == "put" {
                    bail!("B's stream was sent a fresh put: it fell behind");
                }
            }
            Some(Seen::Ended(why)) => bail!("B's stream ended: {why}"),
            None => bail!("B's stream ended"),
        }
    }
}

/// When B's evaluation endpoint answers as `expect` says (polled back to back).
async fn wait_eval(
    client: &reqwest::Client,
    base: &str,
    sdk_key: &str,
    flag: &str,
    expect: Expect,
) -> anyhow::Result<Instant> {
    let url = format!("{base}/v1/evaluate/{flag}");
    let body = json!({"context": {"kind": "user", "key": "bench-user"}}).to_string();
    let deadline = Instant::now() + VISIBLE_DEADLINE;
    loop {
        let response = client
            .post(&url)
            .header("authorization", sdk_key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let bytes = response.bytes().await?;
        let at = Instant::now();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let killed = answer["reason"]["killed"] == true;
        if killed == expect.killed && answer["value"] == expect.value {
            return Ok(at);
        }
        if at > deadline {
            bail!("{url} still answers {answer} after {VISIBLE_DEADLINE:?}");
        }
        // Back-to-back polling would take a core from the replica on a small machine.
        tokio::time::sleep(POLL_GAP).await;
    }
}

/// `"/flags/KEY"` from a patch's data, which starts with its path.
fn event_path(data: &str) -> Option<&str> {
    let rest = data.strip_prefix(r#"{"path":""#)?;
    Some(&rest[..rest.find('"')?])
}

enum Seen {
    Event {
        name: String,
        data: String,
        at: Instant,
    },
    Ended(String),
}

/// Follows `GET /all`, sending every event (its name and the first bytes of its data).
async fn follow(
    client: reqwest::Client,
    url: String,
    key: String,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let on_event = |name, data, at| tx.send(Seen::Event { name, data, at }).is_ok();
    let ended = match follow_sse(&client, &url, Some(&key), on_event).await {
        Ok(()) => "the server closed the stream".to_owned(),
        Err(e) => format!("{e:#}"),
    };
    let _ = tx.send(Seen::Ended(ended));
}

/// Reads the SSE stream of `GET url` (with `key` as `Authorization` when given), handing each
/// event's name, data and arrival time to `on_event` until it returns `false` or the stream
/// ends.
pub(crate) async fn follow_sse(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    mut on_event: impl FnMut(String, String, Instant) -> bool,
) -> anyhow::Result<()> {
    let mut request = client.get(url).header("accept", "text/event-stream");
    if let Some(key) = key {
        request = request.header("authorization", key);
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        bail!("GET /all answered {}", response.status());
    }
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let at = Instant::now();
        for (name, data) in parser.push(&chunk) {
            if !on_event(name, data, at) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A `text/event-stream` reader keeping only the first bytes of each line (the `put` of a big
/// environment is megabytes long; only event names and patch paths matter here).
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

const SSE_LINE_KEEP: usize = 512;

impl SseParser {
    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            let (part, rest, complete) = match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => (&chunk[..end], &chunk[end + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            let room = SSE_LINE_KEEP.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            if complete {
                let line = std::mem::take(&mut self.line);
                let line = line.strip_suffix(b"\r").unwrap_or(&line);
                if line.is_empty() {
                    if self.name.is_some() || self.data.is_some() {
                        out.push((
                            self.name.take().unwrap_or_else(|| "message".to_owned()),
                            self.data.take().unwrap_or_default(),
                        ));
                    }
                } else if let Some(value) = line.strip_prefix(b"event:") {
                    self.name = Some(String::from_utf8_lossy(value).trim().to_owned());
                } else if let Some(value) = line.strip_prefix(b"data:") {
                    let value = value.strip_prefix(b" ").unwrap_or(value);
                    self.data
                        .get_or_insert_with(|| String::from_utf8_lossy(value).into_owned());
                }
            }
            chunk = rest;
        }
        out
    }
}

// ------------------------------------------------------------------------------ processes

/// A throwaway database on the server, dropped (with its connections) on drop.
pub(crate) struct Database {
    server: String,
    name: String,
    pub(crate) url: String,
}

impl Database {
    /// A new database on `server` (a URL without a database name), named `prefix`, this
    /// process's id and the clock's low bits.
    pub(crate) fn create(server: &str, prefix: &str) -> anyhow::Result<Database> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let name = format!("{prefix}_{}_{:x}", std::process::id(), nanos & 0xffff_ffff);
        psql(server, &format!("CREATE DATABASE {name}"))?;
        Ok(Database {
            server: server.to_owned(),
            url: format!("{server}/{name}"),
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(e) = psql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("xtask: cannot drop database {}: {e:#}", self.name);
        }
    }
}

fn psql(server: &str, sql: &str) -> anyhow::Result<()> {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!("{server}/postgres"))
        .args(["-c", sql])
        .stdout(Stdio::null());
    run_command(&mut cmd)
}

/// A release `flagd serve --database` process; stopped when dropped.
struct Replica {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    started: std::time::Instant,
}

impl Replica {
    fn start(name: &'static str, flagd: &Path, url: &str, dir: &Path) -> anyhow::Result<Replica> {
        let log = std::fs::File::create(dir.join(format!("flagd-{name}.log")))?;
        let mut cmd = Command::new(flagd);
        cmd.args(["serve", "--database", url, "--listen", "127.0.0.1:0"])
            .env("FLAGD_ADMIN_KEY", ADMIN_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let shown = show(&cmd);
        let started = std::time::Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut replica = Replica {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            started,
        };
        replica.addr = listening_addr(stdout, START_DEADLINE, &format!("replica {name}"), &shown)?;
        Ok(replica)
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `/readyz` serves `flags` flags; the time since the process was started.
    async fn wait_loaded(
        &self,
        client: &reqwest::Client,
        flags: usize,
    ) -> anyhow::Result<Duration> {
        let url = format!("{}/readyz", self.base());
        loop {
            let ready: Value = match client.get(&url).send().await {
                Ok(response) => serde_json::from_slice(&response.bytes().await?)?,
                Err(_) => Value::Null,
            };
            if ready["status"] == "SERVING"
                && ready["environments"][ENV]["flags"].as_u64() == Some(flags as u64)
            {
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() > START_DEADLINE {
                bail!(
                    "replica {} is not serving {flags} flags: {ready}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A memory figure from `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
    fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in {path}"))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if terminate(&mut self.child, Duration::from_secs(5)) {
            return;
        }
        eprintln!("bench-root: replica {} did not stop; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------ report

struct Report {
    options: Options,
    import_time: Duration,
    starts: Vec<Duration>,
    rss_loaded: [u64; 2],
    rss_end: [u64; 2],
    peak: [u64; 2],
    requests: Vec<Duration>,
    to_stream: Vec<Duration>,
    to_eval: Vec<Duration>,
    load_start: String,
    load_end: String,
}

impl Report {
    fn render(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let _ = writeln!(
            out,
            "\nflagd root mode on PostgreSQL: {} flags + {WRITE_FLAGS} written ones, {} segments, \
             {} writes\nload average: {} before the writes, {} after; {} cores\n",
            o.flags,
            o.segments,
            o.writes,
            self.load_start,
            self.load_end,
            std::thread::available_parallelism().map_or(1, usize::from),
        );
        let _ = writeln!(out, "| measurement | p50 | p99 | max | target | met |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for (what, samples) in [
            ("admin write at A (request itself)", &self.requests),
            ("write acknowledged -> B's SDK stream", &self.to_stream),
            ("write acknowledged -> B's evaluation", &self.to_eval),
        ] {
            let (p50, p99, max) = spread(samples);
            let target = if samples == &self.requests {
                ("-".to_owned(), "-")
            } else {
                (
                    format!("p99 < {} ms", VISIBLE_P99_TARGET.as_millis()),
                    verdict(p99 < VISIBLE_P99_TARGET),
                )
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {} |",
                ms(p50),
                ms(p99),
                ms(max),
                target.0,
                target.1
            );
        }
        let slowest = self.starts.iter().max().copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "| start-up to serving (A, B) | {} | | | < {} s | {} |",
            self.starts
                .iter()
                .map(|d| ms(*d))
                .collect::<Vec<_>>()
                .join(", "),
            START_TARGET.as_secs(),
            verdict(slowest < START_TARGET),
        );
        let loaded = self.rss_loaded.iter().max().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "| resident memory once loaded (A, B) | {} | | | < {} MiB | {} |",
            self.rss_loaded.map(mib).join(", "),
            RSS_TARGET_KIB / 1024,
            verdict(loaded < RSS_TARGET_KIB),
        );
        let _ = writeln!(
            out,
            "| resident memory after the writes, peak (A, B) | {} ; peak {} | | | | |",
            self.rss_end.map(mib).join(", "),
            self.peak.map(mib).join(", "),
        );
        let _ = writeln!(
            out,
            "\nseeding with flagd import took {:.1} s",
            self.import_time.as_secs_f64()
        );
        out
    }
}

pub(crate) fn spread(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[i]
    };
    (at(0.5), at(0.99), at(1.0))
}

fn verdict(met: bool) -> &'static str {
    if met { "yes" } else { "NO" }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

// ------------------------------------------------------------------------------ data

fn write_flag_key(i: usize) -> String {
    format!("bench-write-{i:02}")
}

/// A bool flag serving `value` to everyone (and `false` when off or killed).
fn bool_flag(key: &str, value: bool) -> Value {
    json!({
        "key": key, "on": true, "variations": [false, true], "offVariation": 0,
        "fallthrough": {"variation": usize::from(value)}, "salt": key
    })
}

/// The seeded environment as a LaunchDarkly flag file: generated flags with targets, rules on
/// attributes and segments, rollouts and some prerequisites; segments with included keys and
/// rules; and the bool flags the writes go to.
pub(crate) fn flag_file(flags: usize, segments: usize) -> Value {
    let mut flag_map = Map::new();
    for i in 0..flags {
        flag_map.insert(format!("flag-{i:05}"), flag(i, segments));
    }
    for i in 0..WRITE_FLAGS {
        let key = write_flag_key(i);
        flag_map.insert(key.clone(), bool_flag(&key, false));
    }
    let segment_map: Map<String, Value> = (0..segments)
        .map(|i| (format!("segment-{i:04}"), segment(i)))
        .collect();
    json!({"flags": flag_map, "segments": segment_map})
}

fn flag(i: usize, segments: usize) -> Value {
    let key = format!("flag-{i:05}");
    let segment = format!("segment-{:04}", i % segments.max(1));
    let users: Vec<String> = (0..5).map(|u| format!("user-{}", i * 7 + u)).collect();
    let mut flag = json!({
        "key": key,
        "on": !i.is_multiple_of(10),
        "variations": ["control", "treatment-a", "treatment-b"],
        "offVariation": 0,
        "salt": key,
        "targets": [{"values": users, "variation": 1}],
        "rules": [
            {
                "id": format!("{key}-country"),
                "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR", "NL"]}],
                "variation": 2
            },
            {
                "id": format!("{key}-segment"),
                "clauses": [{"attribute": "key", "op": "segmentMatch", "values": [segment]}],
                "rollout": {"variations": [
                    {"variation": 1, "weight": 50_000},
                    {"variation": 2, "weight": 50_000}
                ]}
            },
            {
                "id": format!("{key}-email"),
                "clauses": [{"attribute": "email", "op": "endsWith", "values": ["@example.com"]}],
                "variation": 1
            }
        ],
        "fallthrough": {"rollout": {"variations": [
            {"variation": 0, "weight": 90_000},
            {"variation": 1, "weight": 10_000}
        ]}},
        "trackEvents": false
    });
    if i % 50 == 49
        && let Value::Object(object) = &mut flag
    {
        object.insert(
            "prerequisites".to_owned(),
            json!([{"key": format!("flag-{:05}", i - 1), "variation": 1}]),
        );
    }
    flag
}

fn segment(i: usize) -> Value {
    let key = format!("segment-{i:04}");
    let included: Vec<String> = (0..10).map(|u| format!("member-{}", i * 10 + u)).collect();
    json!({
        "key": key,
        "included": included,
        "excluded": [],
        "rules": [{
            "id": format!("{key}-plan"),
            "clauses": [{"attribute": "plan", "op": "in", "values": ["enterprise"]}]
        }],
        "salt": key
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_keeps_names_and_paths_of_split_events() {
        let mut parser = SseParser::default();
        let mut events = parser.push(b"event: put\ndata: {\"path\":\"/\",\"data\"");
        events.extend(
            parser.push(b":{}}\n\nevent: patch\ndata: {\"path\":\"/flags/a\",\"data\":{}}\n\n"),
        );
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].0, "put");
        assert_eq!(events[1].0, "patch");
        assert_eq!(event_path(&events[1].1), Some("/flags/a"));
    }

    #[test]
    fn options_parse_and_reject_zero() {
        let options = Options::parse(&["--flags", "20", "--writes", "3"]).unwrap();
        assert_eq!(
            (options.flags, options.segments, options.writes),
            (20, 1_000, 3)
        );
        assert!(Options::parse(&["--flags", "0"]).is_err());
        assert!(Options::parse(&["--nope", "1"]).is_err());
    }

    #[test]
    fn the_flag_file_has_every_item() {
        let file = flag_file(100, 10);
        assert_eq!(file["flags"].as_object().unwrap().len(), 100 + WRITE_FLAGS);
        assert_eq!(file["segments"].as_object().unwrap().len(), 10);
        assert_eq!(
            file["flags"]["flag-00049"]["prerequisites"][0]["key"],
            "flag-00048"
        );
    }
}
