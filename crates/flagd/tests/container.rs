//! The container image: the repository's `Dockerfile` builds, the container answers `/healthz`,
//! serves the example flag file it ships, reports healthy through its own `HEALTHCHECK`
//! (`flagd health`), and runs as a user other than root.
//!
//! The image is built for real, from the Dockerfile as it stands, with BuildKit's cache mounts
//! keeping the cargo registry and target directory between runs, so a second run compiles only
//! what changed. Where the Dockerfile's base images (`rust:1.95-bookworm`,
//! `debian:bookworm-slim`) are neither present nor pullable (a machine without access to Docker
//! Hub), the test makes local stand-ins and passes them through the Dockerfile's own `ARG`s:
//! the runtime is a Debian bookworm `minbase` made by `debootstrap`; the builder is that plus
//! gcc, make and the C library's headers, with this machine's Rust toolchain (the one
//! `rust-toolchain.toml` pins) and its CA store, so cargo reaches crates.io as the host does.
//! Stand-ins are made once and kept, named `flagd-standin/...`.
//!
//! Without a `docker` command at all the test says so and checks nothing; a `docker` whose
//! daemon does not answer, or that cannot build with BuildKit, is a failure that says what to
//! install or start.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flags_test_support::wait::Poll;

/// The Dockerfile's default base images, as its `ARG`s name them.
const RUST_IMAGE: &str = "rust:1.95-bookworm";
const RUNTIME_IMAGE: &str = "debian:bookworm-slim";

/// The Debian release of both base images, and where debootstrap gets it.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

/// The port the image serves on.
const PORT: &str = "8013/tcp";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `command`, failing the test with its output when it fails.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A `docker` client that answers and can build with BuildKit.
struct Docker {
    program: PathBuf,
}

impl Docker {
    /// The first `docker` on `PATH` whose daemon answers and that can build with BuildKit: one
    /// with the buildx plugin, or a client older than 23.0, which has BuildKit built in (a
    /// newer one without buildx cannot use it). `None` when there is no `docker` at all.
    fn find() -> Option<Docker> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let programs: Vec<PathBuf> = std::env::split_paths(&path)
            .map(|dir| dir.join("docker"))
            .filter(|p| p.is_file())
            .collect();
        if programs.is_empty() {
            return None;
        }
        let mut refused = Vec::new();
        for program in programs {
            let docker = Docker { program };
            match docker.usable() {
                Ok(()) => return Some(docker),
                Err(why) => refused.push(format!("{}: {why}", docker.program.display())),
            }
        }
        panic!(
            "no docker client here can build the image:\n{}\nStart the Docker daemon, or \
             install the buildx plugin (Debian: docker-buildx).",
            refused.join("\n")
        );
    }

    fn usable(&self) -> Result<(), String> {
        let version = self
            .command()
            .args([
                "version",
                "--format",
                "{{.Client.Version}} {{.Server.Version}}",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if !version.status.success() {
            return Err(format!(
                "the daemon does not answer: {}",
                String::from_utf8_lossy(&version.stderr).trim()
            ));
        }
        let buildx = self.command().args(["buildx", "version"]).output();
        if buildx.is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        let client = stdout(&version);
        let major: u32 = client
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major > 0 && major < 23 {
            Ok(())
        } else {
            Err(format!(
                "client {client} has no buildx plugin, so it cannot build with BuildKit"
            ))
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.env("DOCKER_BUILDKIT", "1");
        command
    }

    fn has_image(&self, name: &str) -> bool {
        self.command()
            .args(["image", "inspect", name])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `name` if it is here or can be pulled; otherwise the stand-in `make` makes (once).
    fn base_image(&self, name: &str, standin: &str, make: impl FnOnce(&Docker, &str)) -> String {
        if self.has_image(name) {
            return name.to_owned();
        }
        let pulled = self
            .command()
            .args(["pull", "--quiet", name])
            .output()
            .is_ok_and(|o| o.status.success());
        if pulled {
            return name.to_owned();
        }
        if !self.has_image(standin) {
            println!("{name} cannot be pulled here; making the stand-in {standin}");
            make(self, standin);
        }
        standin.to_owned()
    }

    /// Imports the directory `root` as the image `name`, with `env` set.
    fn import(&self, root: &Path, name: &str, env: &[&str]) {
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(root)
            .args(["-c", "."])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut import = self.command();
        import.arg("import");
        for variable in env {
            import.args(["--change", &format!("ENV {variable}")]);
        }
        import.args(["-", name]).stdin(tar.stdout.take().unwrap());
        run(&mut import);
        assert!(tar.wait().unwrap().success());
    }
}

/// A Debian `minbase` root with `packages` in a new directory under `scratch`.
fn debootstrap(scratch: &Path, packages: &[&str]) -> PathBuf {
    assert!(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|dir| dir.join("debootstrap").is_file()),
        "the base images cannot be pulled here, and making stand-ins needs debootstrap \
         (Debian: apt-get install debootstrap)"
    );
    let root = scratch.join("rootfs");
    let mut command = Command::new("debootstrap");
    command.arg("--variant=minbase");
    if !packages.is_empty() {
        command.arg(format!("--include={}", packages.join(",")));
    }
    command.arg(SUITE).arg(&root).arg(MIRROR);
    run(&mut command);
    root
}

/// The runtime stand-in: Debian's `minbase`, close to the slim image.
fn make_runtime(docker: &Docker, name: &str) {
    let scratch = scratch_dir();
    let root = debootstrap(scratch.path(), &[]);
    docker.import(&root, name, &[]);
}

/// The builder stand-in: `minbase` with what the official Rust image gives a build (gcc, make,
/// the C library's headers, CA certificates), this machine's CA store, and the toolchain
/// `rust-toolchain.toml` pins, laid out as that image lays it out.
fn make_builder(docker: &Docker, name: &str) {
    let scratch = scratch_dir();
    let root = debootstrap(
        scratch.path(),
        &["gcc", "libc6-dev", "make", "ca-certificates"],
    );
    // This machine's trust store, which may hold the CA of a proxy that stands between it and
    // crates.io.
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        root.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap();
    let sysroot = stdout(&run(Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(repo_root())));
    let sysroot = PathBuf::from(sysroot);
    let toolchain = sysroot.file_name().unwrap();
    let target = root.join("usr/local/rustup/toolchains").join(toolchain);
    std::fs::create_dir_all(&target).unwrap();
    for part in ["bin", "lib", "libexec"] {
        if sysroot.join(part).exists() {
            run(Command::new("cp")
                .arg("-a")
                .arg(sysroot.join(part))
                .arg(&target));
        }
    }
    let bin = root.join("usr/local/cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let inside = Path::new("/usr/local/rustup/toolchains").join(toolchain);
    for program in ["cargo", "rustc", "rustdoc"] {
        std::os::unix::fs::symlink(inside.join("bin").join(program), bin.join(program)).unwrap();
    }
    docker.import(
        &root,
        name,
        &[
            "PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "CARGO_HOME=/usr/local/cargo",
            "RUSTUP_HOME=/usr/local/rustup",
        ],
    );
}

/// A scratch directory on the same disk as the build cache (a root file system is too big
/// for a small `/tmp`).
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("flagd-standin-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// A container, removed when dropped; its image too.
struct Container<'a> {
    docker: &'a Docker,
    name: String,
    image: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(logs) = self.docker.command().args(["logs", &self.name]).output()
        {
            eprintln!(
                "the container's log:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        let _ = self
            .docker
            .command()
            .args(["rm", "--force", &self.name])
            .output();
        let _ = self.docker.command().args(["rmi", &self.image]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_builds_and_answers_healthz() {
    let Some(docker) = Docker::find() else {
        println!(
            "container test skipped: there is no `docker` command on PATH, so the image cannot \
             be built here"
        );
        return;
    };
    let started = Instant::now();
    let rust = docker.base_image(RUST_IMAGE, "flagd-standin/rust:1.95-bookworm", make_builder);
    let runtime = docker.base_image(
        RUNTIME_IMAGE,
        "flagd-standin/debian:bookworm-slim",
        make_runtime,
    );
    let bases = started.elapsed();

    let tag = format!("flagd-test:{}", std::process::id());
    let name = format!("flagd-test-{}", std::process::id());
    let building = Instant::now();
    run(docker
        .command()
        .args(["build", "--quiet", "--tag", &tag])
        .args(["--build-arg", &format!("RUST_IMAGE={rust}")])
        .args(["--build-arg", &format!("RUNTIME_IMAGE={runtime}")])
        .arg(repo_root()));
    let built = building.elapsed();

    let container = Container {
        docker: &docker,
        name: name.clone(),
        image: tag.clone(),
    };
    // The image's own HEALTHCHECK command, run every second rather than every ten.
    run(docker
        .command()
        .args(["run", "--detach", "--name", &name])
        .args(["--publish", "127.0.0.1::8013", "--health-interval", "1s"])
        .arg(&tag));
    let running = Instant::now();
    let published = stdout(&run(docker.command().args(["port", &name, PORT])));
    let addr = published.lines().next().unwrap().to_owned();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}");
    Poll::new()
        .within(Duration::from_secs(60))
        .every(Duration::from_millis(100))
        .until("the container to answer /healthz", || async {
            let answer = client.get(format!("{base}/healthz")).send().await;
            answer.is_ok_and(|a| a.status() == 200)
        })
        .await;
    let answered = running.elapsed();
    // The example flag file is served: QA users are targeted by `new-checkout`.
    let answer = client
        .post(format!("{base}/v1/evaluate/new-checkout"))
        .header("Content-Type", "application/json")
        .body(r#"{"context":{"kind":"user","key":"qa-alice"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["value"], true, "{answer}");

    let health = || {
        stdout(&run(docker.command().args([
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            &name,
        ])))
    };
    Poll::new()
        .within(Duration::from_secs(60))
        .every(Duration::from_millis(200))
        .blocking_until_some("the container's HEALTHCHECK to report healthy", || {
            (health() == "healthy").then_some(())
        });
    let healthy = running.elapsed();

    // Not root: the image says so, and so does the process.
    let user = stdout(&run(docker.command().args([
        "inspect",
        "--format",
        "{{.Config.User}}",
        &tag,
    ])));
    assert_eq!(user, "10001:10001");
    // `docker top` needs the PID column in what it asks ps for.
    let top = stdout(&run(docker.command().args([
        "top",
        &name,
        "-o",
        "pid,uid,comm",
    ])));
    let uids: Vec<&str> = top
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|uid| *uid == "10001"),
        "{top}"
    );
    drop(container);
    println!(
        "container test: base images {:.1}s, image build {:.1}s, /healthz after {:.1}s, \
         healthy after {:.1}s; {:.1}s in all",
        bases.as_secs_f64(),
        built.as_secs_f64(),
        answered.as_secs_f64(),
        healthy.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
