//! What the throwaway servers share: choosing between the server the test command named and a
//! throwaway one ([`named_or_throwaway`]), a guardian that stops a server when the test process ends,
//! scratch directories, free ports, and running a server as an unprivileged user.
//!
//! A server kept in a `static` is never dropped: Rust runs no destructors at process exit. So
//! each throwaway server gets a guardian, a small `sh` whose standard input is a pipe that only
//! the test process holds open. The guardian reads that pipe to its end, which comes when the
//! test process exits, normally, by a panic or killed by a signal, because the kernel closes its
//! file descriptors then. The guardian then runs the server's stop command and removes the
//! server's directory. Rust opens its pipes close-on-exec, so no other child (the server
//! included) inherits the write end and keeps the pipe open. The guardian runs in a process
//! group of its own and ignores the terminal's signals, so a Ctrl-C that stops `cargo test`
//! does not stop the clean-up with it.

use std::ffi::{OsStr, OsString};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A guardian process: runs `stop` and removes `dir` once its pipe closes.
pub(crate) struct Guardian {
    child: Child,
    pipe: Option<ChildStdin>,
}

/// Waits for the end of standard input, then runs the stop command given as the arguments after
/// the directory, then removes the directory (when one is given).
const SCRIPT: &str = r#"trap '' HUP INT TERM QUIT
cat >/dev/null
dir=$1
shift
"$@" >/dev/null 2>&1
if [ -n "$dir" ]; then rm -rf -- "$dir"; fi
"#;

impl Guardian {
    /// Starts a guardian that will run `stop` and then remove `dir` (if not empty) once this
    /// process exits or [`Guardian::release`] is called.
    pub(crate) fn spawn(dir: &Path, stop: &[OsString]) -> Guardian {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("guardian")
            .arg(dir)
            .args(stop)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `sh` to guard a test server: {e}"));
        let pipe = child.stdin.take();
        Guardian { child, pipe }
    }

    /// Runs the clean-up now and waits for it to finish.
    pub(crate) fn release(mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

/// A new directory for one server under the temporary directory, named after this process so
/// concurrent test binaries never share one. The temporary directory, rather than the target
/// directory, because an unprivileged server user must be able to reach it and PostgreSQL's
/// socket path must stay short.
pub(crate) fn scratch_dir(kind: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "flagd-test-{kind}-{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A loopback port that was free a moment ago. Another process may take it before the server
/// binds it, so callers retry with a new one when a start fails.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on 127.0.0.1: {e}"))
}

/// A connection to `host:port`, if something there accepts one within a second.
pub(crate) fn accepts(host: &str, port: u16) -> Option<TcpStream> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    addrs
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(1)).ok())
}

/// The user a server runs as: this process's own, or, when this process is root (which
/// PostgreSQL refuses to run as), `postgres` if that user exists and else `nobody`. `dir` is
/// made theirs.
pub(crate) fn server_user(dir: &Path) -> Option<String> {
    let is_root = std::fs::metadata(dir).is_ok_and(|meta| meta.uid() == 0);
    if !is_root {
        return None;
    }
    let user = if command_succeeds(Command::new("id").args(["-u", "postgres"])) {
        "postgres"
    } else {
        "nobody"
    };
    let chowned = command_succeeds(Command::new("chown").arg("-R").arg(user).arg(dir));
    assert!(chowned, "cannot give {} to user {user}", dir.display());
    Some(user.to_owned())
}

/// `program` with `args`, run as `user` through `runuser` when one is given.
pub(crate) fn command_as(user: Option<&str>, program: &Path, args: &[&OsStr]) -> Vec<OsString> {
    let mut line = Vec::new();
    if let Some(user) = user {
        line.extend(["runuser", "-u", user, "--"].map(OsString::from));
    }
    line.push(program.as_os_str().to_owned());
    line.extend(args.iter().map(|arg| arg.to_os_string()));
    line
}

/// A `Command` for a command line from [`command_as`].
pub(crate) fn command(line: &[OsString]) -> Command {
    let mut command = Command::new(&line[0]);
    command.args(&line[1..]).stdin(Stdio::null());
    command
}

/// The path of the executable `name` in a directory of `$PATH`, if there is one.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
}

fn command_succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The server a test binary uses: the one at `$variable` (or `default` when it is unset or
/// empty) when `answers` says it does, else what `throwaway` starts, told why. `server` names
/// the kind of server in the messages; `url_of` reads the throwaway's URL for the note on
/// stderr that says which server the binary uses.
pub(crate) fn named_or_throwaway<T>(
    server: &str,
    variable: &str,
    default: &str,
    answers: impl FnOnce(&str) -> Result<(), String>,
    named: impl FnOnce(String) -> T,
    throwaway: impl FnOnce(&str) -> T,
    url_of: impl FnOnce(&T) -> String,
) -> T {
    let url = std::env::var(variable)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| default.to_owned());
    match answers(&url) {
        Ok(()) => named(url),
        Err(why) => {
            let started = throwaway(&format!("no {server} answers at {url} ({why})"));
            eprintln!(
                "no {server} answers at {url} ({why}); this test binary uses a throwaway server \
                 at {}",
                url_of(&started)
            );
            started
        }
    }
}
