//! `cargo xtask deps`: the official third-party clients that flagd's integration tests drive.
//!
//! The versions are pinned in `crates/flagd/tests/clients/` (`requirements.txt`, `package.json`
//! and its `package-lock.json`) and installed under the target directory:
//! `<target>/third-party/venv` and `<target>/third-party/node/node_modules`. Each install ends by
//! writing a stamp (a hash of its manifests and of the interpreter's version); a matching stamp
//! skips the install, so this is cheap enough to run before every test run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::run_command;

/// Where the pinned client manifests live, relative to the repository root.
const CLIENTS_DIR: &str = "crates/flagd/tests/clients";

/// The stamp file inside each install directory.
const STAMP: &str = ".flagd-deps-stamp";

/// Installs whatever is missing or out of date.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let clients = root.join(CLIENTS_DIR);
    let third_party = crate::target_dir(root)?.join("third-party");
    python_clients(&clients, &third_party.join("venv"))?;
    node_clients(&clients, &third_party.join("node"))?;
    Ok(())
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

fn node_clients(clients: &Path, dir: &Path) -> anyhow::Result<()> {
    let manifests = [
        clients.join("package.json"),
        clients.join("package-lock.json"),
    ];
    let stamp = stamp(&manifests, &["node", "--version"])?;
    if is_current(dir, &stamp) && dir.join("node_modules").is_dir() {
        println!("deps: Node clients are up to date in {}", dir.display());
        return Ok(());
    }
    println!("deps: installing the Node clients into {}", dir.display());
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
    run_command(
        Command::new("node")
            .args([
                "-e",
                "for (const m of ['@launchdarkly/node-server-sdk', '@openfeature/server-sdk', \
             '@openfeature/ofrep-provider']) require(m)",
            ])
            .current_dir(dir),
    )?;
    write_stamp(dir, &stamp)
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
