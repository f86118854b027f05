//! Child processes in tests: `flagd` itself, and the reading of a child's output.
//!
//! The caller passes the path of the `flagd` binary (`env!("CARGO_BIN_EXE_flagd")`, which only
//! flagd's own tests can name), so this crate does not depend on flagd.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::wait::{DEADLINE, Poll};

/// How long a `flagd serve` may take to say where it listens: generous, since a debug build
/// on a busy machine can be slow to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A command that runs the `flagd` binary at `bin`, with a clean environment
/// ([`clean_env`]).
pub fn flagd_command(bin: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(bin);
    clean_env(&mut command);
    command
}

/// Removes from `command`'s environment what would change how flagd or a client behaves in a
/// test: flagd's own `FLAGD_*` settings, OpenTelemetry's `OTEL_*` ones (a collector the
/// developer's shell names), and proxies that would send loopback traffic elsewhere.
pub fn clean_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("FLAGD_")
            || name.starts_with("OTEL_")
            || name.to_ascii_lowercase().ends_with("_proxy")
        {
            command.env_remove(name.as_ref());
        }
    }
    command.env("NO_PROXY", "127.0.0.1,localhost")
}

/// A running `flagd serve` and the address it listens on; killed when dropped. Its log (what
/// it writes to stderr) is kept and printed if the test fails while the process runs.
pub struct FlagdProcess {
    child: Child,
    addr: String,
    grpc_addr: Option<String>,
    log: Arc<Mutex<String>>,
}

impl FlagdProcess {
    /// Starts `command`, a `flagd serve` that listens on a free port (`--listen 127.0.0.1:0`),
    /// and waits until it says where: flagd prints `listening on ADDR` as its first line on
    /// stdout once it accepts connections, and, when given `--grpc-listen`, `grpc listening on
    /// ADDR` as its second. Standard input is closed and stdout is read to its end, so flagd
    /// never blocks on a full pipe.
    pub fn spawn(mut command: Command) -> FlagdProcess {
        let grpc = command.get_args().any(|arg| arg == "--grpc-listen");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()));
        let log = collected(child.stderr.take().expect("stderr is piped"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (first_tx, first_rx) = mpsc::channel();
        let said = if grpc { 2 } else { 1 };
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().take(said) {
                let Ok(line) = line else { break };
                let _ = first_tx.send(line);
            }
            for _ in lines {}
        });
        let mut process = FlagdProcess {
            child,
            addr: String::new(),
            grpc_addr: None,
            log,
        };
        let first = first_rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "flagd said nothing on stdout ({e}); its log:\n{}",
                process.log()
            )
        });
        process.addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "flagd's first line is {first:?}, not `listening on ADDR`; its log:\n{}",
                    process.log()
                )
            })
            .to_owned();
        if grpc {
            let second = first_rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|e| {
                panic!(
                    "flagd did not say where gRPC listens ({e}); its log:\n{}",
                    process.log()
                )
            });
            let addr = second
                .strip_prefix("grpc listening on ")
                .unwrap_or_else(|| {
                    panic!(
                        "flagd's second line is {second:?}, not `grpc listening on ADDR`; its \
                     log:\n{}",
                        process.log()
                    )
                });
            process.grpc_addr = Some(addr.to_owned());
        }
        process
    }

    /// The address of flagd's gRPC service, `127.0.0.1:PORT`, when started with
    /// `--grpc-listen`.
    pub fn grpc_addr(&self) -> Option<&str> {
        self.grpc_addr.as_deref()
    }

    /// The address flagd listens on, `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id, to send signals to.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What flagd wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits for the process to exit, failing the test after [`DEADLINE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(DEADLINE)
    }

    /// Waits for the process to exit, failing the test after `limit` (for a stop that has
    /// much to finish first).
    pub fn wait_exit_within(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        Poll::new()
            .within(limit)
            .blocking_until_some("flagd to exit", || {
                child
                    .try_wait()
                    .unwrap_or_else(|e| panic!("cannot wait for flagd: {e}"))
            })
    }
}

impl Drop for FlagdProcess {
    fn drop(&mut self) {
        if thread::panicking() && self.child.try_wait().ok().flatten().is_none() {
            eprintln!("flagd's log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills the process when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends each line of `reader` through the returned channel, from a thread of its own.
pub fn lines_of(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects everything `reader` writes, from a thread of its own, to show when a test fails.
pub fn collected(reader: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let mut text = sink.lock().unwrap_or_else(PoisonError::into_inner);
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}
