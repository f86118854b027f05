//! `xtask`: repository automation for flagd, run as `cargo xtask <command>`.
//!
//! Plain Rust instead of shell scripts, so that a developer's machine and CI run exactly the same
//! steps. It is not part of the product and nothing depends on it.

mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;

const HELP: &str = "\
Usage: cargo xtask <command>

Commands:
  tidy    Check repository conventions: crate metadata, lints, docs, flags-core's dependencies
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
