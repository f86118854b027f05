//! `cargo xtask fuzz`: runs the fuzz targets in `fuzz/` for a bounded time each.
//!
//! The targets are cargo-fuzz's (libFuzzer, with AddressSanitizer), so they build only on a
//! nightly toolchain; this runs `cargo +nightly fuzz`, installing cargo-fuzz when it is missing.
//! It is a search, not a test: `ci` does not run it, and what it finds becomes an ordinary
//! regression test in the crate at fault.
//!
//! Each target starts from its committed seeds (`fuzz/seeds/<target>`, read only) and from the
//! corpus earlier runs grew, kept under the target directory (`<target>/fuzz/corpus/<target>`),
//! so the repository stays clean and later runs start where earlier ones stopped. Inputs that
//! crash, time out or run out of memory go to cargo-fuzz's `fuzz/artifacts/<target>/`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use toml::Table;

use crate::{cargo, positive, show};

/// How long each target runs unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 60;

/// The longest one input may run before libFuzzer reports it as a timeout. libFuzzer's own
/// default (20 minutes) would let one slow input take a whole run; no parser here needs more
/// than milliseconds for an input of the sizes libFuzzer makes.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// The cargo-fuzz release installed when it is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The toolchain the targets build with: sanitizers and coverage instrumentation need nightly.
const TOOLCHAIN: &str = "+nightly";

/// Where the fuzz project is, relative to the root.
const FUZZ_DIR: &str = "fuzz";

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [TARGET...]";

/// Runs the targets named in `args` (every target when none is named), each for the time given.
pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let known = targets(&root.join(FUZZ_DIR).join("Cargo.toml"))?;
    let options = Options::parse(args, &known)?;
    ensure_cargo_fuzz(root)?;

    let work = crate::target_dir(root)?.join("fuzz");
    let build_dir = work.to_string_lossy().into_owned();
    run_fuzz_command(
        root,
        &["build", "--target-dir", &build_dir],
        "the fuzz targets do not build",
    )?;

    let mut outcomes = Vec::new();
    for target in &options.targets {
        println!("\n==> fuzz {target} for {} s", options.seconds.as_secs());
        outcomes.push(run_target(root, &work, target, options.seconds)?);
    }

    println!("\nfuzz: {} s per target", options.seconds.as_secs());
    for outcome in &outcomes {
        println!("  {}", outcome.summary(root));
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz: {} found problems; reproduce one with `cargo {TOOLCHAIN} fuzz run <TARGET> \
             <ARTIFACT>`, then fix it with a regression test in the crate at fault",
            failed.join(", ")
        );
    }
    println!("fuzz: no target found a problem");
    Ok(())
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Options {
    seconds: Duration,
    targets: Vec<String>,
}

impl Options {
    /// `--seconds N` and target names, each of which must be one of `known`; no name means all.
    fn parse(args: &[&str], known: &[String]) -> anyhow::Result<Options> {
        let mut seconds = DEFAULT_SECONDS;
        let mut targets = Vec::new();
        let mut rest = args.iter();
        while let Some(&arg) = rest.next() {
            match arg {
                "--seconds" => {
                    let value = rest.next().context("--seconds needs a value")?;
                    seconds = positive("--seconds", value)?;
                }
                _ if arg.starts_with('-') => bail!("unknown option {arg}; {USAGE}"),
                _ if known.iter().any(|k| k == arg) => {
                    if !targets.iter().any(|t| t == arg) {
                        targets.push(arg.to_owned());
                    }
                }
                _ => bail!(
                    "no fuzz target {arg:?}; the targets are {}",
                    known.join(", ")
                ),
            }
        }
        if targets.is_empty() {
            targets = known.to_vec();
        }
        Ok(Options {
            seconds: Duration::from_secs(seconds),
            targets,
        })
    }
}

/// The fuzz targets: the `[[bin]]`s of the fuzz project's manifest, in its order.
fn targets(manifest: &Path) -> anyhow::Result<Vec<String>> {
    let text = fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let table: Table = text
        .parse()
        .with_context(|| format!("cannot parse {}", manifest.display()))?;
    let names = bin_names(&table);
    if names.is_empty() {
        bail!("{} declares no fuzz targets", manifest.display());
    }
    Ok(names)
}

fn bin_names(manifest: &Table) -> Vec<String> {
    manifest
        .get("bin")
        .and_then(|bins| bins.as_array())
        .into_iter()
        .flatten()
        .filter_map(|bin| bin.get("name")?.as_str())
        .map(str::to_owned)
        .collect()
}

/// Installs cargo-fuzz unless `cargo fuzz` already runs.
fn ensure_cargo_fuzz(root: &Path) -> anyhow::Result<()> {
    let installed = nightly_cargo(root)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return Ok(());
    }
    println!(
        "cargo-fuzz is missing; installing cargo-fuzz@{CARGO_FUZZ_VERSION} (once per machine)"
    );
    // Built in cargo's own temporary directory, as `ci` installs cargo-deny.
    crate::run_command(
        cargo()
            .args(["install", "--locked"])
            .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"))
            .env_remove("CARGO_TARGET_DIR"),
    )
}

/// `cargo +nightly`, run at the root. The `cargo` on `PATH` is rustup's, which understands
/// `+nightly`; the one that started us (`$CARGO`) is the pinned toolchain's own and would not.
fn nightly_cargo(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(TOOLCHAIN).current_dir(root);
    // Set by rustup for the pinned toolchain that runs us; `+nightly` outranks it anyway, but
    // nothing below should see it.
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// Runs `cargo +nightly fuzz <args>` with inherited output, failing with `what` when it fails.
fn run_fuzz_command(root: &Path, args: &[&str], what: &str) -> anyhow::Result<()> {
    let mut cmd = nightly_cargo(root);
    cmd.arg("fuzz").args(args);
    crate::run_command(&mut cmd).with_context(|| what.to_owned())
}

/// How one target's run ended.
struct Outcome {
    target: String,
    /// libFuzzer's count of inputs run and of the seconds it ran them for, when it got to the
    /// end of its time; else the time the whole command took.
    runs: Option<u64>,
    elapsed: Duration,
    /// Whether libFuzzer (and cargo-fuzz around it) exited successfully.
    exited_ok: bool,
    /// Inputs written to the artifact directory during the run.
    new_artifacts: Vec<PathBuf>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.exited_ok && self.new_artifacts.is_empty()
    }

    fn summary(&self, root: &Path) -> String {
        let runs = self
            .runs
            .map_or_else(|| "? runs".to_owned(), |n| format!("{n} runs"));
        let head = format!(
            "{:<10} {runs} in {:.0} s",
            self.target,
            self.elapsed.as_secs_f64()
        );
        if self.passed() {
            return format!("{head}: ok");
        }
        if self.new_artifacts.is_empty() {
            return format!("{head}: FAILED without leaving an input (see its output above)");
        }
        let artifacts: Vec<String> = self
            .new_artifacts
            .iter()
            .map(|path| {
                path.strip_prefix(root)
                    .unwrap_or(path)
                    .display()
                    .to_string()
            })
            .collect();
        format!("{head}: FOUND {}", artifacts.join(", "))
    }
}

/// Runs one target for `seconds`, passing libFuzzer's output through and noting what it found.
fn run_target(
    root: &Path,
    work: &Path,
    target: &str,
    seconds: Duration,
) -> anyhow::Result<Outcome> {
    let corpus = work.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    let seeds = root.join(FUZZ_DIR).join("seeds").join(target);
    let artifacts = root.join(FUZZ_DIR).join("artifacts").join(target);
    let before = files_in(&artifacts);

    let mut cmd = nightly_cargo(root);
    cmd.args(["fuzz", "run", target, "--target-dir"])
        .arg(work)
        // libFuzzer adds what it finds to the first directory only.
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={}", seconds.as_secs()))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    let shown = show(&cmd);
    println!("{shown}");
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    // libFuzzer reports on stderr: passed through as it comes, and read for its final count.
    let mut done = None;
    if let Some(stderr) = child.stderr.take() {
        let mut out = std::io::stderr().lock();
        for line in BufReader::new(stderr).lines() {
            let line = line.with_context(|| format!("cannot read the output of `{shown}`"))?;
            done = done.or_else(|| runs_done(&line));
            let _ = writeln!(out, "{line}");
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{shown}`"))?;
    let after = files_in(&artifacts);
    Ok(Outcome {
        target: target.to_owned(),
        runs: done.map(|(runs, _)| runs),
        // Without the build that `cargo fuzz run` may start with.
        elapsed: done.map_or_else(|| started.elapsed(), |(_, seconds)| seconds),
        exited_ok: status.success(),
        new_artifacts: after.difference(&before).cloned().collect(),
    })
}

/// The inputs run and the time taken, from libFuzzer's closing `Done N runs in S second(s)`.
fn runs_done(line: &str) -> Option<(u64, Duration)> {
    let (runs, seconds) = line
        .strip_prefix("Done ")?
        .strip_suffix(" second(s)")?
        .split_once(" runs in ")?;
    Some((
        runs.parse().ok()?,
        Duration::from_secs(seconds.parse().ok()?),
    ))
}

/// The files directly in `dir` (none when it does not exist).
fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["eval_body", "context", "flag_json"]
            .map(str::to_owned)
            .to_vec()
    }

    fn check(args: &[&str], expected: Result<(u64, &[&str]), &str>) {
        match (Options::parse(args, &known()), expected) {
            (Ok(options), Ok((seconds, targets))) => {
                assert_eq!(options.seconds, Duration::from_secs(seconds), "{args:?}");
                assert_eq!(options.targets, targets, "{args:?}");
            }
            (Err(e), Err(message)) => assert_eq!(e.to_string(), message, "{args:?}"),
            (got, _) => panic!("{args:?}: {got:?}"),
        }
    }

    #[test]
    fn options_name_the_time_and_the_targets() {
        check(&[], Ok((60, &["eval_body", "context", "flag_json"])));
        check(
            &["--seconds", "300"],
            Ok((300, &["eval_body", "context", "flag_json"])),
        );
        check(
            &["flag_json", "--seconds", "5", "context", "flag_json"],
            Ok((5, &["flag_json", "context"])),
        );
        check(&["--seconds"], Err("--seconds needs a value"));
        check(&["--seconds", "0"], Err("--seconds must be at least 1"));
        check(&["--seconds", "x"], Err("--seconds x: not a whole number"));
        check(
            &["--time", "5"],
            Err("unknown option --time; usage: cargo xtask fuzz [--seconds N] [TARGET...]"),
        );
        check(
            &["flagjson"],
            Err("no fuzz target \"flagjson\"; the targets are eval_body, context, flag_json"),
        );
    }

    #[test]
    fn targets_are_the_manifests_bins() {
        let manifest: Table =
            "[package]\nname = \"f\"\n\n[[bin]]\nname = \"a\"\npath = \"a.rs\"\n\n\
                               [[bin]]\nname = \"b\"\npath = \"b.rs\"\n"
                .parse()
                .unwrap();
        assert_eq!(bin_names(&manifest), ["a", "b"]);
        assert!(bin_names(&Table::new()).is_empty());
    }

    /// The real manifest, so that a target added without a `[[bin]]` (or the other way round)
    /// is noticed by `cargo test`, not by the next fuzz run.
    #[test]
    fn every_target_has_a_source_and_seeds() {
        let root = crate::project_root();
        let fuzz = root.join(FUZZ_DIR);
        let names = targets(&fuzz.join("Cargo.toml")).unwrap();
        let sources: BTreeSet<String> = fs::read_dir(fuzz.join("fuzz_targets"))
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                path.file_stem().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(
            names.iter().cloned().collect::<BTreeSet<_>>(),
            sources,
            "fuzz/Cargo.toml's [[bin]]s against fuzz/fuzz_targets/"
        );
        for name in &names {
            let seeds = fuzz.join("seeds").join(name);
            assert!(
                !files_in(&seeds).is_empty(),
                "{} has no seeds",
                seeds.display()
            );
        }
    }

    #[test]
    fn final_count_is_read_from_libfuzzers_output() {
        assert_eq!(
            runs_done("Done 1918623 runs in 301 second(s)"),
            Some((1_918_623, Duration::from_secs(301)))
        );
        for line in [
            "#2\tINITED cov: 1 ft: 1 corp: 1/1b",
            "stat::number_of_executed_units: 123456",
            "Done many runs in 3 second(s)",
            "Done 5 runs in 3 seconds",
        ] {
            assert_eq!(runs_done(line), None, "{line}");
        }
    }
}
