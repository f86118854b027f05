//! `xtask`: repository automation for flagd, run as `cargo xtask <command>`.
//!
//! Plain Rust instead of shell scripts, so that a developer's machine and CI run exactly the same
//! steps. It is not part of the product and nothing depends on it.

mod bench_events;
mod bench_grpc;
mod bench_http;
mod bench_memory;
mod bench_redis;
mod bench_root;
mod bench_ui;
mod ci;
mod codegen;
mod deps;
mod events_payload;
mod fuzz;
mod tidy;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, anyhow, bail};

const HELP: &str = "\
Usage: cargo xtask <command>

Commands:
  tidy    Check repository conventions: crate metadata, lints, docs, the crates' layering
  deps    Install the third-party test clients (Python venv, npm packages) under the target dir,
          and Chromium for the admin UI's browser tests
  ci      Run the whole test pipeline: services, fmt, clippy, cargo deny, deps, tests
  codegen  Generate crates/flags-proto from proto/ (prost messages, tonic stubs, descriptor set);
           with --check, only say whether what is checked in is current
  bench-http  Measure flagd's HTTP throughput against a bare axum floor, and SSE fan-out
  bench-grpc  Measure gRPC Evaluate and BulkEvaluate throughput next to the HTTP API's
  bench-root  Measure root mode on PostgreSQL: start-up, memory, and write-to-replica latency
  bench-ui  Weigh and time the admin UI's flag list (10,000 flags) in Chromium, with a cold cache
  bench-redis  Measure how soon a changed flag reaches Redis through flagd's --redis-url
  bench-memory  Measure file mode's resident memory on a big flag file, steady and while reloading
  bench-events  Measure events/s from POST /bulk through the exporters: none, JSON-lines files, PostgreSQL
  fuzz    Run the fuzz targets in fuzz/ on nightly, 60 s each: [--seconds N] [TARGET...]
  help    Print this message
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tidy"] => tidy::run(&root),
        ["deps"] => deps::run(&root),
        ["ci"] => ci::run(&root),
        ["codegen"] => codegen::run(&root),
        ["codegen", "--check"] => codegen::check(&root),
        ["bench-http", rest @ ..] => bench_http::run(&root, rest),
        ["bench-grpc", rest @ ..] => bench_grpc::run(&root, rest),
        ["bench-root", rest @ ..] => bench_root::run(&root, rest),
        ["bench-ui", rest @ ..] => bench_ui::run(&root, rest),
        ["bench-memory", rest @ ..] => bench_memory::run(&root, rest),
        ["bench-redis", rest @ ..] => bench_redis::run(&root, rest),
        ["bench-events", rest @ ..] => bench_events::run(&root, rest),
        ["fuzz", rest @ ..] => fuzz::run(&root, rest),
        [] | ["help" | "--help" | "-h"] => {
            print!("{HELP}");
            Ok(())
        }
        _ => {
            eprint!("{HELP}");
            Err(anyhow!(
                "unknown command line: cargo xtask {}",
                args.join(" ")
            ))
        }
    };
    // Printed by hand rather than returned from `main`, so that a RUST_BACKTRACE set for the
    // tests does not bury the one line that matters under a backtrace of the xtask itself.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs of a bench command's arguments; an error for a name without a value.
fn option_pairs<'a>(
    args: &'a [&'a str],
) -> impl Iterator<Item = anyhow::Result<(&'a str, &'a str)>> + 'a {
    let mut rest = args.iter();
    std::iter::from_fn(move || {
        let name = *rest.next()?;
        Some(
            rest.next()
                .map(|value| (name, *value))
                .with_context(|| format!("{name} needs a value")),
        )
    })
}

/// The value of option `name` as a whole number of at least 1.
fn positive<T>(name: &str, value: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr + PartialEq + From<u8>,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let n: T = value
        .parse()
        .with_context(|| format!("{name} {value}: not a whole number"))?;
    if n == T::from(0) {
        bail!("{name} must be at least 1");
    }
    Ok(n)
}

/// The repository root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    // Cargo sets CARGO_MANIFEST_DIR at run time too (`cargo run`, `cargo test`); the compile-time
    // value is the fallback for a binary started by hand.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else `<root>/target`.
fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    match std::env::var_os("CARGO_TARGET_DIR") {
        // Cargo reads a relative CARGO_TARGET_DIR against the current directory; so do we.
        Some(dir) if !dir.is_empty() => {
            std::path::absolute(&dir).context("cannot resolve CARGO_TARGET_DIR")
        }
        _ => Ok(root.join("target")),
    }
}

/// Builds flagd in release for the benchmark `bench` and returns the binary's path.
fn release_flagd(root: &Path, bench: &str) -> anyhow::Result<PathBuf> {
    eprintln!("{bench}: building flagd in release");
    run_command(
        cargo()
            .args(["build", "--quiet", "--release", "-p", "flagd"])
            .current_dir(root),
    )?;
    Ok(target_dir(root)?.join("release").join("flagd"))
}

/// Asks `child` to stop with SIGTERM, as a service manager would, and waits up to `patience`
/// for it; returns whether it stopped.
fn terminate(child: &mut std::process::Child, patience: std::time::Duration) -> bool {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let step = std::time::Duration::from_millis(50);
    let deadline = std::time::Instant::now() + patience;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// A `cargo` command: the same cargo that started us, when known.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Runs a command to completion with inherited output, failing when it fails.
fn run_command(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = show(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Whether `program` can be found on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Whether this process runs as root, which installing system packages needs.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.status.success() && output.stdout.trim_ascii() == b"0")
}

/// A command as a person would type it, for messages.
fn show(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    let args = cmd.get_args().map(|arg| {
        let arg = arg.to_string_lossy();
        if arg.is_empty() {
            "\"\"".to_owned()
        } else {
            arg.into_owned()
        }
    });
    std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The address a started server prints as its first line on stdout, `listening on ADDR`, read
/// within `deadline`. The rest of its stdout is drained, so the server never blocks on a full
/// pipe. `name` and `shown` (the command line) go into the errors.
fn listening_addr(
    stdout: std::process::ChildStdout,
    deadline: std::time::Duration,
    name: &str,
    shown: &str,
) -> anyhow::Result<std::net::SocketAddr> {
    use std::io::{BufRead, BufReader};
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = line_tx.send(lines.next());
        for _ in lines {}
    });
    let line = match line_rx.recv_timeout(deadline) {
        Ok(Some(Ok(line))) => line,
        Ok(_) => bail!("{name} exited without printing its address (`{shown}`)"),
        Err(_) => bail!("{name} printed no address within {deadline:?}"),
    };
    line.strip_prefix("listening on ")
        .and_then(|a| a.trim().parse().ok())
        .with_context(|| format!("{name} printed {line:?} instead of `listening on ADDR`"))
}

/// The sum of every sample of metric `name` (a whole number) in Prometheus' text format, or of
/// those whose labels include `label` (`("exporter", "file:/tmp/x")`); 0 when there are none.
/// `/proc/loadavg`'s three averages, to say how busy the machine was during a benchmark.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn metric_sum(text: &str, name: &str, label: Option<(&str, &str)>) -> u64 {
    let wanted = label.map(|(key, value)| format!("{key}=\"{value}\""));
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.rsplit_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let matches = wanted
                .as_deref()
                .is_none_or(|wanted| labels.split(',').any(|l| l == wanted));
            // Counters are whole numbers; a fractional sample would be another metric's.
            matches.then(|| value.trim().parse::<u64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_samples_are_summed_by_name_and_label() {
        let text = "# TYPE flagd_export_exported counter\n\
                    flagd_export_exported_total{exporter=\"file:/tmp/a\"} 7\n\
                    flagd_export_exported_total{exporter=\"postgres:x/y\"} 5\n\
                    flagd_export_exported_total_other 100\n\
                    flagd_events_received_total{kind=\"feature\"} 3\n\
                    flagd_events_received_total{kind=\"custom\"} 4\n\
                    flagd_flags 350\n";
        assert_eq!(metric_sum(text, "flagd_export_exported_total", None), 12);
        let file = Some(("exporter", "file:/tmp/a"));
        assert_eq!(metric_sum(text, "flagd_export_exported_total", file), 7);
        assert_eq!(metric_sum(text, "flagd_events_received_total", None), 7);
        assert_eq!(metric_sum(text, "flagd_flags", None), 350);
        assert_eq!(metric_sum(text, "flagd_missing_total", None), 0);
    }
}
