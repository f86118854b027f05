//! Redis for tests: the server a test binary uses.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::guardian::{self, Guardian};

/// The variable that names the server to use.
const URL_VARIABLE: &str = "FLAGD_TEST_REDIS_URL";

/// The server tried when [`URL_VARIABLE`] is not set.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// How long a throwaway server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The Redis server of this test binary: the one at `$FLAGD_TEST_REDIS_URL` (default
/// `redis://127.0.0.1:6379`) when it answers `PING`, and otherwise a throwaway
/// `redis-server` without persistence on a free port, started on the first call and stopped when
/// the binary exits. Every test of the binary shares it.
///
/// Panics, saying what to install, when nothing answers and `redis-server` is not installed.
pub fn redis() -> &'static Redis {
    static SERVER: OnceLock<Redis> = OnceLock::new();
    SERVER.get_or_init(Redis::find_or_start)
}

/// A Redis server that tests may use.
pub struct Redis {
    url: String,
    /// The throwaway server and its guardian, when no server answered. Never dropped: the
    /// guardian stops the server when the test process ends.
    throwaway: Option<(Child, Guardian)>,
}

impl Redis {
    fn find_or_start() -> Redis {
        guardian::named_or_throwaway(
            "Redis",
            URL_VARIABLE,
            DEFAULT_URL,
            answers,
            |url| Redis {
                url,
                throwaway: None,
            },
            start_throwaway,
            |redis| redis.url.clone(),
        )
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A key prefix no other test, run or binary uses on a shared server: `{base}-{pid}-{n}`.
    pub fn unique_prefix(&self, base: &str) -> String {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        format!(
            "{base}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    }

    /// Whether this is a throwaway server of this binary rather than the one the test command
    /// named.
    pub fn is_throwaway(&self) -> bool {
        self.throwaway.is_some()
    }
}

/// A throwaway `redis-server` that one test owns and may stop and start again on the same
/// port, to see an outage and a Redis that comes back empty (it keeps nothing on disk). Stopped
/// when dropped, and by its guardian when the test process ends however it ends.
pub struct RedisServer {
    program: PathBuf,
    port: u16,
    running: Option<(Child, Guardian)>,
}

impl RedisServer {
    /// Starts a new server on a free port. Panics, saying what to install, when `redis-server`
    /// is not on `PATH`.
    pub fn start_new() -> RedisServer {
        let Some(program) = guardian::on_path("redis-server") else {
            panic!(
                "this test starts a Redis server of its own, and `redis-server` is not on PATH. \
                 Install Redis (Debian/Ubuntu: `apt-get install redis-server`; Fedora: `dnf \
                 install redis`; macOS: `brew install redis`). `cargo xtask ci` installs it \
                 when it can."
            );
        };
        let mut failures = Vec::new();
        // The free port may be taken before the server binds it; then another one is tried.
        for _ in 0..5 {
            let port = guardian::free_port();
            match start_on(&program, port) {
                Ok(running) => {
                    return RedisServer {
                        program,
                        port,
                        running: Some(running),
                    };
                }
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "a throwaway redis-server did not start: {}",
            failures.join("\n")
        );
    }

    /// The server's URL, the same across stops and starts.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server at once (killed, as a crash would), with everything it held.
    pub fn stop(&mut self) {
        if let Some((mut child, guardian)) = self.running.take() {
            let _ = child.kill();
            let _ = child.wait();
            guardian.release();
        }
    }

    /// Starts the server again, empty, on the same port, after [`RedisServer::stop`].
    pub fn start(&mut self) {
        self.stop();
        match start_on(&self.program, self.port) {
            Ok(running) => self.running = Some(running),
            Err(e) => panic!("cannot start redis-server again on port {}: {e}", self.port),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_throwaway(why: &str) -> Redis {
    let Some(program) = guardian::on_path("redis-server") else {
        panic!(
            "{why}, and none can be started: `redis-server` is not on PATH. Install Redis \
             (Debian/Ubuntu: `apt-get install redis-server`; Fedora: `dnf install redis`; \
             macOS: `brew install redis`), or set {URL_VARIABLE} to a server that answers. \
             `cargo xtask ci` installs it when it can."
        );
    };
    let mut failures = Vec::new();
    // The free port may be taken before the server binds it; then another one is tried.
    for _ in 0..5 {
        let port = guardian::free_port();
        match start_on(&program, port) {
            Ok(throwaway) => {
                return Redis {
                    url: format!("redis://127.0.0.1:{port}"),
                    throwaway: Some(throwaway),
                };
            }
            Err(e) => failures.push(e),
        }
    }
    panic!(
        "{why}, and a throwaway redis-server did not start: {}",
        failures.join("\n")
    );
}

/// Starts `redis-server` on `port` in a directory of its own, without snapshots or an
/// append-only file, and waits until it answers.
fn start_on(program: &Path, port: u16) -> Result<(Child, Guardian), String> {
    let dir = guardian::scratch_dir("redis");
    let log = dir.join("log");
    let mut child = Command::new(program)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(&log)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let stop = ["kill".into(), OsString::from(child.id().to_string())];
    let guardian = Guardian::spawn(&dir, &stop);
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if answers(&url).is_ok() {
            return Ok((child, guardian));
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || started.elapsed() > START_TIMEOUT {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            guardian.release();
            return Err(match exited {
                Some(status) => format!("it exited ({status}); its log:\n{log}"),
                None => {
                    format!("no answer on port {port} within {START_TIMEOUT:?}; its log:\n{log}")
                }
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the Redis at `url` answers `PING`; why not, if not.
fn answers(url: &str) -> Result<(), String> {
    let (host, port) = host_and_port(url).ok_or_else(|| format!("not a Redis URL: {url}"))?;
    let mut stream = guardian::accepts(&host, port).ok_or("nothing accepts connections there")?;
    let timeout = Some(Duration::from_secs(5));
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .and_then(|()| stream.write_all(b"PING\r\n"))
        .map_err(|e| e.to_string())?;
    let mut answer = [0_u8; 64];
    let read = stream.read(&mut answer).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer[..read]);
    if answer.starts_with("+PONG") {
        Ok(())
    } else {
        Err(format!("it answered PING with {:?}", answer.trim_end()))
    }
}

/// The host and port of `redis://[user[:password]@]host[:port][/db]`.
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("redis://")?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 address: `[::1]:6379`.
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 6379,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_read_from_the_url() {
        let cases = [
            ("redis://127.0.0.1:6379", Some(("127.0.0.1", 6379))),
            ("redis://localhost", Some(("localhost", 6379))),
            (
                "redis://:secret@cache.example:7000/2",
                Some(("cache.example", 7000)),
            ),
            ("redis://[::1]:6380", Some(("::1", 6380))),
            ("redis://[::1]", Some(("::1", 6379))),
            ("http://127.0.0.1:6379", None),
            ("redis://127.0.0.1:port", None),
        ];
        for (url, expected) in cases {
            let expected = expected.map(|(host, port)| (host.to_owned(), port));
            assert_eq!(host_and_port(url), expected, "{url}");
        }
    }
}
