//! `cargo xtask bench-redis`: how soon a change of a flag reaches Redis when flagd writes what
//! it serves there (`--redis-url`), in release.
//!
//! It starts a throwaway `redis-server` of its own on a free port (nothing else's data is
//! touched), writes an environment of 10,000 generated flags (by default) as one flag file and
//! one more flag, `bench-live`, as a second file, and starts flagd in file mode over both with
//! `--redis-url`. It waits for the first whole write (`$inited` and every flag in the hash),
//! opens a `GET /all` stream, then rewrites the small file N times, each time with a new value
//! of `bench-live`, and times three things from each write: until the stream carries the flag's
//! `patch` (flagd published the change), until `HGET {prefix}:features bench-live` answers the
//! new value (polled every 0.2 ms), and the difference of the two, which is the change → Redis
//! latency of the mirror itself, the stream being its peer that follows the same change feed.
//! Reloading the flag files (debounce, reading 10,000 flags) is in the first two and not in the
//! third. It prints p50/p99/max and the load average, and the number of whole rewrites flagd
//! made (one: every change is written item by item).
//!
//! Everything talks to 127.0.0.1 only, every wait has a deadline, and flagd and Redis are
//! stopped when the run ends for any reason. This is a measurement, not a test: it fails only
//! when the measurement cannot be made.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::bench_root::{flag_file, follow_sse, ms, spread};
use super::{listening_addr, load_average, metric_sum, on_path, release_flagd, show, terminate};

/// The target of the issue that asked for this benchmark: change → Redis, p99.
const P99_TARGET: Duration = Duration::from_millis(50);
/// The flag the changes go to.
const LIVE_FLAG: &str = "bench-live";
/// The key prefix flagd writes under.
const PREFIX: &str = "bench";
/// Time for flagd to start and write everything the first time.
const START_DEADLINE: Duration = Duration::from_secs(120);
/// Time for one change to reach the stream and Redis.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between two `HGET`s (the resolution of the Redis measurement).
const POLL_GAP: Duration = Duration::from_micros(200);
/// Pause between changes, so each is measured on a quiet flagd (more than the debounce).
const CHANGE_GAP: Duration = Duration::from_millis(100);
/// flagd's debounce of file events, shortened: it is in the write → stream and write → Redis
/// times, not in change → Redis.
const DEBOUNCE_MS: &str = "10";

/// `cargo xtask bench-redis [options]`.
pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    if matches!(args, ["--help" | "-h" | "help"]) {
        print!("{HELP}");
        return Ok(());
    }
    let options = Options::parse(args)?;
    if !on_path("redis-server") {
        bail!("redis-server is not installed (apt-get install -y redis-server)");
    }
    let flagd = release_flagd(root, "bench-redis")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure(&options, &flagd))
}

const HELP: &str = "\
Usage: cargo xtask bench-redis [--flags N] [--changes N]

Builds flagd in release and measures how soon a changed flag reaches Redis when flagd writes
what it serves there (--redis-url): a throwaway redis-server, flagd in file mode over N
generated flags plus one flag in a file of its own, which is rewritten --changes times. Times
from each write to flagd's SSE stream, to Redis, and from the stream to Redis (p50/p99/max).

Defaults: --flags 10000 --changes 200
";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    flags: usize,
    changes: usize,
}

impl Options {
    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        let mut options = Options {
            flags: 10_000,
            changes: 200,
        };
        for pair in super::option_pairs(args) {
            let (name, value) = pair?;
            match name {
                "--flags" => options.flags = super::positive(name, value)?,
                "--changes" => options.changes = super::positive(name, value)?,
                _ => bail!("unknown option {name} (see `cargo xtask bench-redis --help`)"),
            }
        }
        Ok(options)
    }
}

async fn measure(options: &Options, flagd: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let redis = RedisServer::start(dir.path())?;
    let big = dir.path().join("flags.json");
    let live = dir.path().join("live.json");
    std::fs::write(&big, serde_json::to_vec(&flag_file(options.flags, 1_000))?)?;
    std::fs::write(&live, live_file(0).to_string())?;
    let total = options.flags + 10 + 1;

    let started = std::time::Instant::now();
    let server = Flagd::start(flagd, &[&big, &live], &redis.url(), dir.path())?;
    let client = redis::Client::open(redis.url().as_str())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let features = format!("{PREFIX}:features");
    loop {
        let (inited, held): (bool, usize) = redis::pipe()
            .exists(format!("{PREFIX}:$inited"))
            .hlen(&features)
            .query_async(&mut connection)
            .await?;
        if inited && held == total {
            break;
        }
        if started.elapsed() > START_DEADLINE {
            bail!("flagd did not write {total} flags into Redis (it holds {held})");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_write = started.elapsed();

    let http = reqwest::Client::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(follow(http.clone(), format!("{}/all", server.base()), tx));
    // The stream's `put` comes first; the changes after it.
    loop {
        match tokio::time::timeout(START_DEADLINE, rx.recv()).await {
            Ok(Some(Ok((name, _, _)))) if name == "put" => break,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => bail!("the stream failed: {e}"),
            Ok(None) | Err(_) => bail!("no put on the stream"),
        }
    }

    let load_start = load_average();
    let (mut to_stream, mut to_redis, mut stream_to_redis) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=options.changes {
        let value = format!("value-{i}");
        let staging = live.with_extension("json.new");
        std::fs::write(&staging, live_file(i).to_string())?;
        let written = Instant::now();
        std::fs::rename(&staging, &live)?;
        let in_redis = loop {
            let json: Option<String> = redis::cmd("HGET")
                .arg(&features)
                .arg(LIVE_FLAG)
                .query_async(&mut connection)
                .await?;
            if json.is_some_and(|j| j.contains(&format!("\"{value}\""))) {
                break Instant::now();
            }
            if written.elapsed() > CHANGE_DEADLINE {
                bail!("change {i} did not reach Redis within {CHANGE_DEADLINE:?}");
            }
            tokio::time::sleep(POLL_GAP).await;
        };
        let on_stream = loop {
            let left = CHANGE_DEADLINE.saturating_sub(written.elapsed());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(Ok((name, data, at)))) => {
                    if name == "patch" && data.contains(&format!("\"{value}\"")) {
                        break at;
                    }
                }
                Ok(Some(Err(e))) => bail!("the stream failed: {e}"),
                Ok(None) | Err(_) => bail!("change {i} did not reach the stream"),
            }
        };
        to_stream.push(on_stream - written);
        to_redis.push(in_redis - written);
        // Signed: Redis may answer before the stream's patch is read.
        stream_to_redis
            .push((in_redis - written).as_secs_f64() - (on_stream - written).as_secs_f64());
        tokio::time::sleep(CHANGE_GAP).await;
    }
    let load_end = load_average();
    let metrics = http
        .get(format!("{}/metrics", server.base()))
        .send()
        .await?
        .text()
        .await?;
    let rewrites = metric_sum(&metrics, "flagd_redis_rewrites_total", None);
    let writes = metric_sum(&metrics, "flagd_redis_writes_total", None);

    let (s50, s99, smax) = spread(&to_stream);
    let (r50, r99, rmax) = spread(&to_redis);
    stream_to_redis.sort_by(f64::total_cmp);
    let at = |q: f64| stream_to_redis[((stream_to_redis.len() - 1) as f64 * q).round() as usize];
    let signed = |s: f64| format!("{:.1} ms", s * 1000.0);
    println!(
        "bench-redis: {} flags + {LIVE_FLAG}, {} changes, flagd's first whole write {} after start",
        options.flags,
        options.changes,
        ms(first_write)
    );
    println!(
        "  write -> SSE patch      p50 {}  p99 {}  max {}",
        ms(s50),
        ms(s99),
        ms(smax)
    );
    println!(
        "  write -> Redis (HGET)   p50 {}  p99 {}  max {}",
        ms(r50),
        ms(r99),
        ms(rmax)
    );
    println!(
        "  change -> Redis (Redis - SSE)  p50 {}  p99 {}  max {}",
        signed(at(0.5)),
        signed(at(0.99)),
        signed(at(1.0))
    );
    let worst = Duration::from_secs_f64(at(0.99).max(0.0));
    println!(
        "  target change -> Redis p99 < {}: {}",
        ms(P99_TARGET),
        if worst < P99_TARGET { "yes" } else { "NO" }
    );
    println!("  flagd wrote into Redis {writes} times, {rewrites} of them whole");
    println!("  load average: {load_start} at the first change, {load_end} at the last");
    drop(server);
    drop(redis);
    Ok(())
}

/// The small flag file: `bench-live`, serving `value-{i}`.
fn live_file(i: usize) -> Value {
    json!({"flags": {LIVE_FLAG: {
        "key": LIVE_FLAG, "on": true, "variations": [format!("value-{i}"), "other"],
        "offVariation": 1, "fallthrough": {"variation": 0}, "salt": LIVE_FLAG
    }}})
}

/// A stream event (name, first bytes of data, when it arrived), or why the stream ended.
type Seen = Result<(String, String, Instant), String>;

/// Follows `GET /all`, sending every event.
async fn follow(client: reqwest::Client, url: String, tx: mpsc::UnboundedSender<Seen>) {
    let on_event = |name, data, at| tx.send(Ok((name, data, at))).is_ok();
    let ended = match follow_sse(&client, &url, None, on_event).await {
        Ok(()) => "the server closed the stream".to_owned(),
        Err(e) => format!("{e:#}"),
    };
    let _ = tx.send(Err(ended));
}

/// A throwaway `redis-server` on a free port, without persistence, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(dir: &Path) -> anyhow::Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let shown = show(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let server = RedisServer { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("`{shown}` did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// flagd in file mode over `files`, writing into Redis, stopped on drop.
struct Flagd {
    child: Child,
    addr: SocketAddr,
}

impl Flagd {
    fn start(flagd: &Path, files: &[&Path], redis: &str, dir: &Path) -> anyhow::Result<Flagd> {
        let log = std::fs::File::create(dir.join("flagd.log"))?;
        let mut cmd = Command::new(flagd);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(["--redis-url", redis, "--redis-prefix", PREFIX])
            .env("FLAGD_RELOAD_DEBOUNCE_MS", DEBOUNCE_MS)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for file in files {
            cmd.arg("--file").arg(file);
        }
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
        Ok(Flagd { child, addr })
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Flagd {
    fn drop(&mut self) {
        if terminate(&mut self.child, Duration::from_secs(5)) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_have_defaults_and_refuse_what_they_do_not_know() {
        assert_eq!(
            Options::parse(&[]).unwrap(),
            Options {
                flags: 10_000,
                changes: 200
            }
        );
        assert_eq!(
            Options::parse(&["--flags", "5", "--changes", "3"]).unwrap(),
            Options {
                flags: 5,
                changes: 3
            }
        );
        assert!(Options::parse(&["--flags", "0"]).is_err());
        assert!(Options::parse(&["--nope", "1"]).is_err());
    }

    #[test]
    fn each_change_serves_a_value_of_its_own() {
        assert_ne!(live_file(1), live_file(2));
        assert_eq!(live_file(3)["flags"][LIVE_FLAG]["variations"][0], "value-3");
    }
}
