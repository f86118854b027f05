//! `cargo xtask ci`: the project's one test command.
//!
//! Runs every step CI runs, in order, each under a header, and stops at the first failure.
//! `.ci/run` calls only this, so a developer who runs `cargo xtask ci` runs exactly what CI runs.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::{on_path, run_command, show};

/// The cargo-deny release installed when `cargo deny` is missing: the newest one, which builds
/// with the pinned toolchain (its minimum Rust is 1.88).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// How long a service that was just started may take to accept connections.
const SERVICE_START_TIMEOUT: Duration = Duration::from_secs(20);

type Step<'a> = (&'static str, Box<dyn Fn() -> anyhow::Result<()> + 'a>);

pub fn run(root: &Path) -> anyhow::Result<()> {
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
            "cargo deny check licenses bans sources",
            Box::new(|| cargo_deny(root)),
        ),
        ("cargo xtask deps", Box::new(|| crate::deps::run(root))),
        (
            "cargo test --workspace",
            Box::new(|| run_command(cargo(root).args(["test", "--workspace"]))),
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

/// Starts PostgreSQL and Redis when nothing listens on their ports and their start commands are
/// installed. A service that cannot be started is reported, not fatal: the tests that need it
/// fail with their own message, and the others still run.
fn ensure_services() -> anyhow::Result<()> {
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
    Ok(())
}

fn ensure_service(name: &str, port: u16, program: &str, commands: Vec<Command>) {
    if listening(port) {
        println!("{name}: already listening on 127.0.0.1:{port}");
        return;
    }
    if !on_path(program) || commands.is_empty() {
        println!(
            "{name}: warning: nothing listens on 127.0.0.1:{port} and `{program}` cannot start \
             it here; tests that need {name} will fail"
        );
        return;
    }
    for mut cmd in commands {
        println!(
            "{name}: nothing listens on 127.0.0.1:{port}; running `{}`",
            show(&cmd)
        );
        if let Err(err) = run_command(&mut cmd) {
            println!("{name}: warning: {err:#}");
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
        "{name}: warning: still not listening on 127.0.0.1:{port}; tests that need {name} will fail"
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
