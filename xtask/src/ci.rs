//! `cargo xtask ci`: the project's one test command.
//!
//! Runs every step CI runs, in order, each under a header, and stops at the first failure.
//! `.ci/run` calls only this, so a developer who runs `cargo xtask ci` runs exactly what CI runs.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::{is_root, on_path, run_command, show};

/// The cargo-deny release installed when `cargo deny` is missing: the newest one, which builds
/// with the pinned toolchain (its minimum Rust is 1.88).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// How long a service that was just started may take to accept connections.
const SERVICE_START_TIMEOUT: Duration = Duration::from_secs(20);

/// The variables that tell the tests which servers to use (read by flags-test-support), and
/// the servers used when they are not set. A test binary that finds nothing answering there
/// starts a throwaway server of its own, so the tests never depend on these running.
const POSTGRES_URL_VARIABLE: &str = "FLAGD_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS_URL_VARIABLE: &str = "FLAGD_TEST_REDIS_URL";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

type Step<'a> = (&'static str, Box<dyn Fn() -> anyhow::Result<()> + 'a>);

pub fn run(root: &Path) -> anyhow::Result<()> {
    let postgres_url = url_from_env(POSTGRES_URL_VARIABLE, DEFAULT_POSTGRES_URL);
    let redis_url = url_from_env(REDIS_URL_VARIABLE, DEFAULT_REDIS_URL);
    let steps: Vec<Step<'_>> = vec![
        ("services: PostgreSQL and Redis", Box::new(ensure_services)),
        (
            "cargo fmt --all -- --check",
            Box::new(|| run_command(cargo(root).args(["fmt", "--all", "--", "--check"]))),
        ),
        (
            "cargo clippy --workspace --all-targets -- -D warnings",
            Box::new(|| {
                run_command(cargo(root).args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))
            }),
        ),
        (
            "cargo doc --workspace --no-deps (warnings denied)",
            Box::new(|| {
                run_command(
                    cargo(root)
                        .args(["doc", "--workspace", "--no-deps"])
                        .env("RUSTDOCFLAGS", "-D warnings"),
                )
            }),
        ),
        (
            "cargo deny check licenses bans sources",
            Box::new(|| cargo_deny(root)),
        ),
        ("cargo xtask deps", Box::new(|| crate::deps::run(root))),
        (
            "cargo test --workspace",
            Box::new(|| {
                run_command(
                    cargo(root)
                        .args(["test", "--workspace"])
                        .env(POSTGRES_URL_VARIABLE, &postgres_url)
                        .env(REDIS_URL_VARIABLE, &redis_url),
                )
            }),
        ),
    ];

    let started = Instant::now();
    let mut timings = Vec::new();
    for (index, (name, step)) in steps.iter().enumerate() {
        println!("\n==> [{}/{}] {name}", index + 1, steps.len());
        let step_started = Instant::now();
        let result = step();
        timings.push((*name, step_started.elapsed()));
        if let Err(err) = result {
            print_timings(&timings, started.elapsed());
            bail!("ci failed at `{name}`: {err:#}");
        }
    }
    print_timings(&timings, started.elapsed());
    println!("ci: all {} steps passed", steps.len());
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut cmd = crate::cargo();
    cmd.current_dir(root);
    cmd
}

fn print_timings(timings: &[(&str, Duration)], total: Duration) {
    println!("\nci: time per step");
    for (name, took) in timings {
        println!("{:>9.1}s  {name}", took.as_secs_f64());
    }
    println!("{:>9.1}s  total", total.as_secs_f64());
}

fn url_from_env(variable: &str, default: &str) -> String {
    std::env::var(variable)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Makes sure PostgreSQL's server programs, `redis-server` and `nats-server` are installed,
/// since the tests start throwaway servers with them when none answers (and the root-mode outage tests always
/// do). Missing ones are installed when this runs as root on Debian or Ubuntu; otherwise this
/// stops at once and says what to install.
///
/// It also starts the system's PostgreSQL and Redis when they are installed as services and
/// nothing listens on the default ports: one shared server is quicker than one per test binary.
/// That part is a convenience whose failure is only reported.
fn ensure_services() -> anyhow::Result<()> {
    ensure_server_programs()?;

    if std::env::var_os(POSTGRES_URL_VARIABLE).is_none() {
        let postgres = std::fs::read_dir("/etc/postgresql")
            .map(|entries| {
                let mut versions: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect();
                versions.sort();
                versions
            })
            .unwrap_or_default()
            .into_iter()
            .map(|version| {
                let mut cmd = Command::new("pg_ctlcluster");
                cmd.args(["--skip-systemctl-redirect", &version, "main", "start"]);
                cmd
            })
            .collect();
        ensure_service("PostgreSQL", 5432, "pg_ctlcluster", postgres);
    }

    if std::env::var_os(REDIS_URL_VARIABLE).is_none() {
        let mut redis = Command::new("redis-server");
        redis.args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
        ]);
        // No snapshots: test data is throwaway, and a read-only working directory must not matter.
        redis.args(["--save", ""]);
        ensure_service("Redis", 6379, "redis-server", vec![redis]);
    }
    ensure_docker_daemon();
    Ok(())
}

/// Starts the Docker daemon when it is installed but does not answer, as root, for the
/// container image's test; its log goes to `target/dockerd.log`. Only reported when it fails:
/// the test then says what is wrong.
fn ensure_docker_daemon() {
    let answers = || {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if answers() {
        println!("Docker: the daemon answers");
        return;
    }
    if !on_path("dockerd") || !is_root() {
        println!("Docker: the daemon does not answer, and it cannot be started here");
        return;
    }
    let log = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new("target").to_path_buf(), Into::into)
        .join("dockerd.log");
    let started = std::fs::File::create(&log).and_then(|out| {
        let err = out.try_clone()?;
        Command::new("setsid")
            .arg("dockerd")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
    });
    if let Err(e) = started {
        println!("Docker: cannot start dockerd: {e}");
        return;
    }
    println!("Docker: started dockerd (log: {})", log.display());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if answers() {
            println!("Docker: the daemon answers");
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "Docker: the daemon still does not answer; see {}",
        log.display()
    );
}

/// Installs what is missing of PostgreSQL's server programs, `redis-server` and `nats-server`,
/// or fails saying exactly what to install.
fn ensure_server_programs() -> anyhow::Result<()> {
    let missing = missing_programs();
    if missing.is_empty() {
        println!("PostgreSQL's server programs, redis-server and nats-server are installed");
        return Ok(());
    }
    let packages =
        |pick: fn(&Missing) -> &'static str| missing.iter().map(pick).collect::<Vec<_>>().join(" ");
    let debian = packages(|m| m.debian);
    if is_root() && on_path("apt-get") {
        println!("missing: {}; installing {debian}", describe(&missing));
        run_command(
            Command::new("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        run_command(
            Command::new("apt-get")
                .args(["install", "-y"])
                .args(debian.split(' '))
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        let still = missing_programs();
        if still.is_empty() {
            return Ok(());
        }
        bail!(
            "still missing after `apt-get install {debian}`: {}",
            describe(&still)
        );
    }
    bail!(
        "missing: {}. The tests start throwaway servers with them when none answers. Install \
         them (Debian/Ubuntu, as root: `apt-get install {debian}`; Fedora: `dnf install {}`; \
         macOS: `brew install {}`), then run this again",
        describe(&missing),
        packages(|m| m.fedora),
        packages(|m| m.homebrew),
    )
}

/// A program the tests need that is not installed, and the packages that have it.
struct Missing {
    what: &'static str,
    debian: &'static str,
    fedora: &'static str,
    homebrew: &'static str,
}

fn missing_programs() -> Vec<Missing> {
    let mut missing = Vec::new();
    if !postgres_programs_installed() {
        missing.push(Missing {
            what: "PostgreSQL's server programs (initdb, pg_ctl, postgres)",
            debian: "postgresql",
            fedora: "postgresql-server",
            homebrew: "postgresql",
        });
    }
    if !on_path("redis-server") {
        missing.push(Missing {
            what: "redis-server",
            debian: "redis-server",
            fedora: "redis",
            homebrew: "redis",
        });
    }
    // The event exporters' tests need JetStream, which the packaged server has (`-js`). Debian
    // installs it in /usr/sbin, which is not on every user's PATH; flags-test-support looks
    // there too.
    // The container image's test builds it with a Docker daemon (BuildKit built in), and makes
    // stand-ins for base images it cannot pull with debootstrap.
    if !on_path("dockerd") {
        missing.push(Missing {
            what: "dockerd",
            debian: "docker.io",
            fedora: "moby-engine",
            homebrew: "docker",
        });
    }
    if !on_path("debootstrap") {
        missing.push(Missing {
            what: "debootstrap",
            debian: "debootstrap",
            fedora: "debootstrap",
            homebrew: "debootstrap",
        });
    }
    if !on_path("nats-server") && !Path::new("/usr/sbin/nats-server").is_file() {
        missing.push(Missing {
            what: "nats-server",
            debian: "nats-server",
            fedora: "nats-server",
            homebrew: "nats-server",
        });
    }
    missing
}

fn describe(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(|m| m.what)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Whether initdb, pg_ctl and postgres are on `PATH` or together under
/// `/usr/lib/postgresql/*/bin` (where Debian and Ubuntu install them), which is where
/// flags-test-support looks for them.
fn postgres_programs_installed() -> bool {
    const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
    if PROGRAMS.iter().all(|program| on_path(program)) {
        return true;
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|entry| {
            let bin = entry.path().join("bin");
            PROGRAMS.iter().all(|program| bin.join(program).is_file())
        })
}

fn ensure_service(name: &str, port: u16, program: &str, commands: Vec<Command>) {
    if listening(port) {
        println!("{name}: already listening on 127.0.0.1:{port}");
        return;
    }
    if !on_path(program) || commands.is_empty() {
        println!(
            "{name}: nothing listens on 127.0.0.1:{port} and `{program}` cannot start it here; \
             each test binary that needs {name} starts a throwaway server"
        );
        return;
    }
    for mut cmd in commands {
        println!(
            "{name}: nothing listens on 127.0.0.1:{port}; running `{}`",
            show(&cmd)
        );
        if let Err(err) = run_command(&mut cmd) {
            println!("{name}: {err:#}");
        }
    }
    let deadline = Instant::now() + SERVICE_START_TIMEOUT;
    while Instant::now() < deadline {
        if listening(port) {
            println!("{name}: now listening on 127.0.0.1:{port}");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{name}: still not listening on 127.0.0.1:{port}; each test binary that needs {name} \
         starts a throwaway server"
    );
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// Licences, bans and sources only: advisories need the advisory database from the network.
fn cargo_deny(root: &Path) -> anyhow::Result<()> {
    let installed = cargo(root)
        .args(["deny", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        println!(
            "cargo-deny is missing; installing cargo-deny@{CARGO_DENY_VERSION} \
             (several minutes, once per machine)"
        );
        // Built in cargo's own temporary directory, so the project's target directory is not
        // locked for minutes by an unrelated release build.
        run_command(
            cargo(root)
                .args(["install", "--locked"])
                .arg(format!("cargo-deny@{CARGO_DENY_VERSION}"))
                .env_remove("CARGO_TARGET_DIR"),
        )?;
    }
    run_command(cargo(root).args(["deny", "check", "licenses", "bans", "sources"]))
}
