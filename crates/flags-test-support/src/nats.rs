//! NATS for tests: the JetStream-enabled server a test binary uses.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::guardian::{self, Guardian};

/// The variable that names the server to use.
const URL_VARIABLE: &str = "FLAGD_TEST_NATS_URL";

/// The server tried when [`URL_VARIABLE`] is not set.
const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How long a throwaway server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The NATS server of this test binary: the one at `$FLAGD_TEST_NATS_URL` (default
/// `nats://127.0.0.1:4222`) when it answers with JetStream enabled, and otherwise a throwaway
/// `nats-server -js` on a free port with its store in a directory of its own, started on the
/// first call and stopped when the binary exits. Every test of the binary shares it, so tests
/// use streams and subjects of their own.
///
/// Panics, saying what to install, when nothing answers and `nats-server` is not installed.
pub fn nats() -> &'static Nats {
    static SERVER: OnceLock<Nats> = OnceLock::new();
    SERVER.get_or_init(Nats::find_or_start)
}

/// A NATS server with JetStream that tests may use.
pub struct Nats {
    url: String,
    /// The throwaway server and its guardian, when no server answered. Never dropped: the
    /// guardian stops the server when the test process ends.
    throwaway: Option<(Child, Guardian)>,
}

impl Nats {
    fn find_or_start() -> Nats {
        guardian::named_or_throwaway(
            "NATS",
            URL_VARIABLE,
            DEFAULT_URL,
            answers,
            |url| Nats {
                url,
                throwaway: None,
            },
            start_throwaway,
            |nats| nats.url.clone(),
        )
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is a throwaway server of this binary rather than the one the test command
    /// named.
    pub fn is_throwaway(&self) -> bool {
        self.throwaway.is_some()
    }
}

fn start_throwaway(why: &str) -> Nats {
    // Debian installs it in /usr/sbin, which is not on every user's PATH.
    let packaged = Path::new("/usr/sbin/nats-server");
    let program = guardian::on_path("nats-server")
        .or_else(|| guardian::is_executable(packaged).then(|| packaged.to_owned()));
    let Some(program) = program else {
        panic!(
            "{why}, and none can be started: `nats-server` is not on PATH. Install the NATS \
             server (Debian/Ubuntu: `apt-get install nats-server`; macOS: `brew install \
             nats-server`; elsewhere the release binary of the NATS project), or set \
             {URL_VARIABLE} to a server with JetStream enabled. `cargo xtask ci` installs it \
             when it can."
        );
    };
    let mut failures = Vec::new();
    // The free port may be taken before the server binds it; then another one is tried.
    for _ in 0..5 {
        let port = guardian::free_port();
        match start_on(&program, port) {
            Ok(throwaway) => {
                return Nats {
                    url: format!("nats://127.0.0.1:{port}"),
                    throwaway: Some(throwaway),
                };
            }
            Err(e) => failures.push(e),
        }
    }
    panic!(
        "{why}, and a throwaway nats-server did not start: {}",
        failures.join("\n")
    );
}

/// Starts `nats-server` with JetStream on `port`, storing in a directory of its own, and waits
/// until it answers.
fn start_on(program: &Path, port: u16) -> Result<(Child, Guardian), String> {
    let dir = guardian::scratch_dir("nats");
    let log = dir.join("log");
    let mut child = Command::new(program)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .arg("-sd")
        .arg(dir.join("store"))
        .arg("-l")
        .arg(&log)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let stop = ["kill".into(), OsString::from(child.id().to_string())];
    let guardian = Guardian::spawn(&dir, &stop);
    let url = format!("nats://127.0.0.1:{port}");
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

/// Whether the NATS server at `url` greets with an `INFO` that says JetStream is enabled; why
/// not, if not. A server without JetStream cannot store what the tests publish.
fn answers(url: &str) -> Result<(), String> {
    let (host, port) = host_and_port(url).ok_or_else(|| format!("not a NATS URL: {url}"))?;
    let mut stream = guardian::accepts(&host, port).ok_or("nothing accepts connections there")?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // The server speaks first: one `INFO {json}\r\n` line.
    let mut greeting = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !greeting.ends_with(b"\r\n") && greeting.len() < 64 * 1024 {
        let read = stream.read(&mut buffer).map_err(|e| e.to_string())?;
        if read == 0 {
            break;
        }
        greeting.extend_from_slice(&buffer[..read]);
    }
    let greeting = String::from_utf8_lossy(&greeting);
    if !greeting.starts_with("INFO ") {
        return Err(format!("it greeted with {:?}", greeting.trim_end()));
    }
    if greeting.contains("\"jetstream\":true") {
        Ok(())
    } else {
        Err("it runs without JetStream (start it with -js)".to_owned())
    }
}

/// The host and port of `nats://[user[:password]@]host[:port]` (or without the scheme).
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let rest = match url.split_once("://") {
        Some(("nats", rest)) => rest,
        Some(_) => return None,
        None => url,
    };
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 address: `[::1]:4222`.
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
        None => 4222,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_read_from_the_url() {
        let cases = [
            ("nats://127.0.0.1:4222", Some(("127.0.0.1", 4222))),
            ("nats://localhost", Some(("localhost", 4222))),
            ("nats://tok@n.example:7422", Some(("n.example", 7422))),
            ("nats://u:p@[::1]:4223", Some(("::1", 4223))),
            ("127.0.0.1:5000", Some(("127.0.0.1", 5000))),
            ("redis://127.0.0.1:4222", None),
            ("nats://h:port", None),
        ];
        for (url, expected) in cases {
            let expected = expected.map(|(host, port)| (host.to_owned(), port));
            assert_eq!(host_and_port(url), expected, "{url}");
        }
    }
}
