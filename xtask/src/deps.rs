//! `cargo xtask deps`: the official third-party clients that flagd's integration tests drive,
//! and the browser that drives the admin web UI.
//!
//! The versions are pinned in `crates/flagd/tests/clients/` (`requirements.txt`, `package.json`
//! and its `package-lock.json`) and `crates/flagd/tests/ui/` (`package.json` and its
//! `package-lock.json`: Playwright's driver without browsers, and axe-core), and installed under
//! the target directory: `<target>/third-party/venv`, `<target>/third-party/node/node_modules`
//! and `<target>/third-party/ui/node_modules`. Each install ends by writing a stamp (a hash of
//! its manifests and of the interpreter's version); a matching stamp skips the install, so this
//! is cheap enough to run before every test run.
//!
//! The browser is the system's Chromium (`/usr/bin/chromium`), installed from Debian's packages
//! when it is missing. Playwright's own browser download is never used: it fetches builds from
//! outside any package registry, and a distribution's Chromium gets its security updates with
//! the rest of the system.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::run_command;

/// Where the pinned client manifests live, relative to the repository root.
const CLIENTS_DIR: &str = "crates/flagd/tests/clients";

/// Where the browser tests' pinned npm manifests live, relative to the repository root.
const UI_TESTS_DIR: &str = "crates/flagd/tests/ui";

/// The browser the UI tests launch (`crates/flagd/tests/ui_browser.rs` looks for it there).
const CHROMIUM: &str = "/usr/bin/chromium";

/// The stamp file inside each install directory.
const STAMP: &str = ".flagd-deps-stamp";

/// Installs whatever is missing or out of date.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let clients = root.join(CLIENTS_DIR);
    let third_party = crate::target_dir(root)?.join("third-party");
    python_clients(&clients, &third_party.join("venv"))?;
    npm_packages(
        "Node clients",
        &clients,
        &third_party.join("node"),
        &[
            "@launchdarkly/node-server-sdk",
            "@openfeature/server-sdk",
            "@openfeature/ofrep-provider",
        ],
    )?;
    npm_packages(
        "browser test packages",
        &root.join(UI_TESTS_DIR),
        &third_party.join("ui"),
        &["playwright-core", "axe-core"],
    )?;
    chromium()
}

fn python_clients(clients: &Path, venv: &Path) -> anyhow::Result<()> {
    let requirements = clients.join("requirements.txt");
    let stamp = stamp(
        std::slice::from_ref(&requirements),
        &["python3", "--version"],
    )?;
    if is_current(venv, &stamp) && venv.join("bin/python").is_file() {
        println!("deps: Python clients are up to date in {}", venv.display());
        return Ok(());
    }
    println!(
        "deps: installing the Python clients into {}",
        venv.display()
    );
    // A fresh venv every time, so that packages dropped from the requirements do not linger.
    if venv.exists() {
        fs::remove_dir_all(venv).with_context(|| format!("cannot remove {}", venv.display()))?;
    }
    run_command(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    let python = venv.join("bin/python");
    run_command(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-input", "-r"])
            .arg(&requirements),
    )?;
    // Fail here, with a clear message, rather than in the middle of a test.
    run_command(Command::new(&python).args([
        "-c",
        "import ldclient, ldclient.integrations, redis, openfeature, \
         openfeature.contrib.provider.ofrep, grpc, grpc_health.v1.health_pb2_grpc, \
         grpc_reflection.v1alpha.reflection_pb2_grpc, grpc_tools.protoc",
    ]))?;
    write_stamp(venv, &stamp)
}

/// Installs the npm packages pinned by `package.json` and `package-lock.json` in `manifests`
/// into `dir/node_modules`, then loads each of `modules` there so that a broken install fails
/// here rather than in a test.
fn npm_packages(what: &str, manifests: &Path, dir: &Path, modules: &[&str]) -> anyhow::Result<()> {
    let manifests = [
        manifests.join("package.json"),
        manifests.join("package-lock.json"),
    ];
    let stamp = stamp(&manifests, &["node", "--version"])?;
    if is_current(dir, &stamp) && dir.join("node_modules").is_dir() {
        println!("deps: the {what} are up to date in {}", dir.display());
        return Ok(());
    }
    println!("deps: installing the {what} into {}", dir.display());
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // An install that stops half-way must not look finished.
    remove_stamp(dir)?;
    for manifest in &manifests {
        let name = manifest.file_name().unwrap_or_default();
        fs::copy(manifest, dir.join(name))
            .with_context(|| format!("cannot copy {} to {}", manifest.display(), dir.display()))?;
    }
    // `npm ci` installs exactly what the lock file says and replaces any older node_modules.
    run_command(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir),
    )?;
    let names: Vec<String> = modules.iter().map(|m| format!("'{m}'")).collect();
    run_command(
        Command::new("node")
            .arg("-e")
            .arg(format!(
                "for (const m of [{}]) require(m)",
                names.join(", ")
            ))
            .current_dir(dir),
    )?;
    write_stamp(dir, &stamp)
}

/// Installs Debian's `chromium` when [`CHROMIUM`] is missing. Only root can, and only where
/// `apt-get` exists; anywhere else this says what to install.
fn chromium() -> anyhow::Result<()> {
    let chromium = Path::new(CHROMIUM);
    if chromium.is_file() {
        println!("deps: Chromium is installed at {CHROMIUM}");
        return Ok(());
    }
    let how = "the browser tests of the admin UI need it; install Debian's \
               `chromium` package as root (`apt-get install --no-install-recommends chromium`)";
    if !crate::is_root() {
        bail!("{CHROMIUM} is missing, and only root can install it: {how}");
    }
    if !crate::on_path("apt-get") {
        bail!("{CHROMIUM} is missing, and there is no apt-get here to install it: {how}");
    }
    println!("deps: {CHROMIUM} is missing; installing Debian's chromium");
    // The package lists may be older than the archive (or absent on a fresh machine).
    let apt = |args: &[&str]| {
        run_command(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    apt(&["update"]).context("cannot update the package lists for chromium")?;
    apt(&["install", "-y", "--no-install-recommends", "chromium"])
        .with_context(|| format!("cannot install chromium: {how}"))?;
    if !chromium.is_file() {
        bail!("`apt-get install chromium` succeeded, but {CHROMIUM} is still missing: {how}");
    }
    Ok(())
}

/// A hash of the manifests' names and contents and of the interpreter's version: an upgraded
/// interpreter can break a venv as surely as a changed pin.
fn stamp(manifests: &[PathBuf], version_command: &[&str]) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for manifest in manifests {
        let text =
            fs::read(manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
        hasher.update(manifest.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(&text);
    }
    let [program, args @ ..] = version_command else {
        anyhow::bail!("no version command given");
    };
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{program}`: the client tests need it installed"))?;
    hasher.update(&output.stdout);
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(format!("sha256:{hex}\n"))
}

fn is_current(dir: &Path, stamp: &str) -> bool {
    fs::read_to_string(dir.join(STAMP)).is_ok_and(|found| found == stamp)
}

fn write_stamp(dir: &Path, stamp: &str) -> anyhow::Result<()> {
    let path = dir.join(STAMP);
    fs::write(&path, stamp).with_context(|| format!("cannot write {}", path.display()))
}

fn remove_stamp(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(STAMP);
    match fs::remove_file(&path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}
