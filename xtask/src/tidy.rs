//! `cargo xtask tidy`: repository conventions that the compiler and clippy do not check.
//!
//! The same checks run as the `repository_is_tidy` test, so `cargo test` enforces them too.
//! Loading (reading files) is kept apart from checking (pure functions over parsed manifests and
//! sources), so each check is unit-tested on small in-memory fixtures.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::Path;

use anyhow::{Context as _, bail};
use toml::{Table, Value};

/// Crates under `crates/` that nothing depends on, so they need no `[workspace.dependencies]`
/// entry: `flags-bench` only holds benchmarks.
const UNDECLARED_OK: &[&str] = &["flags-bench"];

/// The crates that are never published: the server, its benchmarks, the repository automation
/// and the helpers the tests share. Every other crate is a library that is published on
/// crates.io, so it must be publishable and carry what crates.io shows about it.
const UNPUBLISHED: &[&str] = &[
    "flagd",
    "flags-bench",
    "xtask",
    "flags-test-support",
    "flags-typed-example",
];

/// The crates.io category slugs the published crates may use. crates.io refuses an unknown slug
/// only at publish time, so a misspelt one is caught here; add a slug from
/// <https://crates.io/category_slugs> when a crate needs it.
const CATEGORIES: &[&str] = &[
    "algorithms",
    "asynchronous",
    "caching",
    "concurrency",
    "config",
    "data-structures",
    "database",
    "development-tools::build-utils",
    "encoding",
    "parser-implementations",
    "web-programming",
    "web-programming::http-server",
];

/// crates.io's limit on both keywords and categories.
const MAX_KEYWORDS: usize = 5;

/// Which workspace crates each crate may depend on through normal and build dependencies;
/// dev-dependencies are free, since tests may use anything. Lower layers know nothing of the ones above them: the
/// vocabulary knows no engine, the engine no store, and no library knows the server. A crate
/// without a row is a problem, so each new crate is given its place when it is added; a row may
/// come before its crate does.
///
/// docs/ARCHITECTURE.md shows the same table under "Layering", as [`render_layers`] writes it,
/// and tidy checks that the two agree.
const LAYERS: &[(&str, Allowed)] = &[
    ("flags-core", Allowed::Only(&[])),
    ("flags-eval", Allowed::Only(&["flags-core"])),
    ("flags-wire", Allowed::Only(&["flags-core"])),
    (
        "flags-data",
        Allowed::Only(&["flags-core", "flags-eval", "flags-wire"]),
    ),
    ("flags-cache", Allowed::Only(&[])),
    (
        "flags-store",
        Allowed::Only(&["flags-core", "flags-eval", "flags-wire", "flags-data"]),
    ),
    (
        "flags-store-postgres",
        Allowed::Only(&["flags-core", "flags-store"]),
    ),
    (
        "flags-store-redis",
        Allowed::Only(&["flags-core", "flags-eval", "flags-store"]),
    ),
    ("flags-test-support", Allowed::Only(&[])),
    ("flags-events", Allowed::Only(&[])),
    ("flags-export", Allowed::Only(&["flags-events"])),
    (
        "flags-sdk",
        Allowed::Only(&[
            "flags-core",
            "flags-eval",
            "flags-wire",
            "flags-data",
            "flags-cache",
            "flags-events",
        ]),
    ),
    ("flags-proto", Allowed::Only(&[])),
    ("flags-descriptor", Allowed::Only(&[])),
    ("flags-codegen", Allowed::Only(&["flags-descriptor"])),
    (
        "flags-sdk-grpc",
        Allowed::Only(&["flags-sdk", "flags-proto"]),
    ),
    (
        "flags-typed-example",
        Allowed::Only(&["flags-sdk", "flags-codegen"]),
    ),
    ("flagd", Allowed::Any),
    ("flags-bench", Allowed::Only(&["flags-core", "flags-eval"])),
    ("xtask", Allowed::Only(&["flags-codegen", "flags-proto"])),
];

/// The workspace crates one crate may depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    /// Only these.
    Only(&'static [&'static str]),
    /// Any of them: the server sits on top of everything.
    Any,
}

/// Where the layering table is shown, relative to the root.
const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

/// The only packages `flags-core` may depend on (normal dependencies). Everything else depends on
/// it, so whatever it pulls in, every backend, the SDK and the server pay for. `serde_path_to_error`
/// is there so load errors can name the full field path.
const CORE_ALLOWED: &[&str] = &["serde", "serde_json", "serde_path_to_error", "thiserror"];

/// Packages that must not reach `flags-core` even transitively: async runtimes, HTTP stacks and
/// database clients. The vocabulary crate does no I/O.
const CORE_FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "futures",
    "mio",
    "axum",
    "axum-core",
    "hyper",
    "http",
    "tower",
    "reqwest",
    "sqlx",
    "postgres",
    "tokio-postgres",
    "redis",
    "async-nats",
];

/// Packages that only generate code. They belong in build scripts and tools, never in what an
/// application runs: the crates in [`RUNTIME_ONLY`] must not reach them through normal or build
/// dependencies, directly, through other workspace crates, or through third-party ones.
const CODEGEN_PACKAGES: &[&str] = &[
    "flags-codegen",
    "protox",
    "protox-parse",
    "prost-build",
    "tonic-build",
    "tonic-prost-build",
];

/// The crates an application links to evaluate flags, kept free of [`CODEGEN_PACKAGES`]: the
/// vocabulary, the SDK that generated typed clients run over, its gRPC source, and the server,
/// which reads descriptor sets at run time through flags-descriptor rather than the generator.
const RUNTIME_ONLY: &[&str] = &["flags-core", "flags-sdk", "flags-sdk-grpc", "flagd"];

/// Packages of gRPC: its runtime, protobuf, and the crates built on them (not HTTP/2 itself,
/// which the SDK's HTTP client speaks too).
/// Only the applications that evaluate over gRPC link them (through flags-sdk-grpc), so the
/// in-process SDK and the vocabulary stay free of them.
const GRPC_PACKAGES: &[&str] = &[
    "tonic",
    "tonic-prost",
    "prost",
    "flags-proto",
    "flags-sdk-grpc",
];

/// TLS stacks that need more than a C compiler to build: aws-lc-rs (rustls' default provider,
/// built with CMake) and OpenSSL (a system library and its headers). TLS in this workspace is
/// rustls on ring, so a dependency's default features that switch one of these on is caught
/// here rather than on the next machine without CMake.
const FOREIGN_TLS_PACKAGES: &[&str] = &[
    "aws-lc-rs",
    "aws-lc-sys",
    "aws-lc-fips-sys",
    "openssl",
    "openssl-sys",
    "native-tls",
];

/// Packages some crates must never reach through normal or build dependencies, directly,
/// through other workspace crates, or through third-party ones.
struct KeptOut {
    /// The crates kept free of them.
    crates: &'static [&'static str],
    /// The packages.
    packages: &'static [&'static str],
    /// What the packages are, as a problem names them.
    what: &'static str,
    /// Where they belong instead.
    belongs: &'static str,
}

const KEPT_OUT: &[KeptOut] = &[
    KeptOut {
        crates: RUNTIME_ONLY,
        packages: CODEGEN_PACKAGES,
        what: "code generation",
        belongs: "build scripts only",
    },
    KeptOut {
        crates: &["flags-core", "flags-sdk"],
        packages: GRPC_PACKAGES,
        what: "gRPC",
        belongs: "flags-sdk-grpc and flagd only",
    },
    KeptOut {
        crates: RUNTIME_ONLY,
        packages: FOREIGN_TLS_PACKAGES,
        what: "a TLS stack that needs CMake or OpenSSL",
        belongs: "no crate here: TLS is rustls on ring",
    },
];

/// Runs every check on the repository at `root`, printing each problem.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let problems = check_repository(root)?;
    if problems.is_empty() {
        println!("tidy: ok");
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    bail!("tidy: {} problem(s)", problems.len())
}

/// Every problem found in the repository at `root`, as `path: what is wrong` lines. An error
/// means the repository could not be read at all.
pub fn check_repository(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let workspace = load(root, &mut problems)?;
    problems.extend(check(&workspace));
    Ok(problems)
}

/// What the checks look at, read from disk once.
struct Workspace {
    /// The root `Cargo.toml`.
    manifest: Table,
    /// `Cargo.lock`, when there is one.
    lock: Option<Table>,
    /// The crates under `crates/`, then `xtask`.
    crates: Vec<Crate>,
    /// Every `.rs` file of those crates: (path relative to the root, text).
    sources: Vec<(String, String)>,
    /// The layering table to check against ([`LAYERS`], or a test's own).
    layers: &'static [(&'static str, Allowed)],
    /// `docs/ARCHITECTURE.md`, when it could be read.
    architecture: Option<String>,
}

struct Crate {
    /// Directory relative to the root with `/` separators: `crates/flags-core`, `xtask`.
    dir: String,
    manifest: Table,
    /// `src/lib.rs`, when the crate has a library.
    lib_rs: Option<String>,
    /// The names of the files directly in the crate's directory (`Cargo.toml`, `README.md`).
    files: BTreeSet<String>,
}

fn load(root: &Path, problems: &mut Vec<String>) -> anyhow::Result<Workspace> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))
        .context("cannot read the root Cargo.toml")?
        .parse::<Table>()
        .context("cannot parse the root Cargo.toml")?;

    let lock = match fs::read_to_string(root.join("Cargo.lock")) {
        Ok(text) => match text.parse::<Table>() {
            Ok(lock) => Some(lock),
            Err(err) => {
                problems.push(format!("Cargo.lock: cannot parse: {err}"));
                None
            }
        },
        Err(_) => None,
    };

    let mut dirs = Vec::new();
    let crates_dir = root.join("crates");
    if crates_dir.is_dir() {
        for entry in fs::read_dir(&crates_dir).context("cannot list crates/")? {
            let entry = entry.context("cannot list crates/")?;
            if entry.path().is_dir() {
                dirs.push(format!("crates/{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    dirs.sort();
    dirs.push("xtask".to_owned());

    let mut crates = Vec::new();
    let mut sources = Vec::new();
    for dir in dirs {
        let path = root.join(&dir);
        let manifest = match fs::read_to_string(path.join("Cargo.toml")) {
            Ok(text) => text.parse::<Table>(),
            Err(_) => {
                problems.push(format!(
                    "{dir}: no Cargo.toml (the workspace takes every crates/* as a member)"
                ));
                continue;
            }
        };
        let manifest = match manifest {
            Ok(manifest) => manifest,
            Err(err) => {
                problems.push(format!("{dir}/Cargo.toml: cannot parse: {err}"));
                continue;
            }
        };
        let lib_rs = fs::read_to_string(path.join("src/lib.rs")).ok();
        let mut files = BTreeSet::new();
        for entry in fs::read_dir(&path).with_context(|| format!("cannot list {dir}"))? {
            let entry = entry.with_context(|| format!("cannot list {dir}"))?;
            if entry.path().is_file() {
                files.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        collect_sources(root, &path, &mut sources, problems)?;
        crates.push(Crate {
            dir,
            manifest,
            lib_rs,
            files,
        });
    }

    let architecture = match fs::read_to_string(root.join(ARCHITECTURE)) {
        Ok(text) => Some(text),
        Err(err) => {
            problems.push(format!("{ARCHITECTURE}: cannot read: {err}"));
            None
        }
    };

    Ok(Workspace {
        manifest,
        lock,
        crates,
        sources,
        layers: LAYERS,
        architecture,
    })
}

fn collect_sources(
    root: &Path,
    dir: &Path,
    sources: &mut Vec<(String, String)>,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            // Build output and hidden directories hold no sources of ours.
            if name != "target" && !name.starts_with('.') {
                collect_sources(root, &path, sources, problems)?;
            }
        } else if name.ends_with(".rs") {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            match fs::read_to_string(&path) {
                Ok(text) => sources.push((relative, text)),
                Err(err) => problems.push(format!("{relative}: cannot read: {err}")),
            }
        }
    }
    Ok(())
}

fn check(ws: &Workspace) -> Vec<String> {
    let mut problems = Vec::new();
    for krate in &ws.crates {
        check_package(ws, krate, &mut problems);
        check_dependencies_inherited(krate, &mut problems);
        check_test_only_dependencies(ws, krate, &mut problems);
        check_lib_doc(ws, krate, &mut problems);
    }
    check_declared(ws, &mut problems);
    check_layering(ws, &mut problems);
    check_layering_documented(ws, &mut problems);
    check_core_dependencies(ws, &mut problems);
    check_kept_out(ws, &mut problems);
    check_test_attributes(ws, &mut problems);
    problems
}

/// Name, description, licence, publishing (with what crates.io shows, for a published crate) and
/// lints of one crate.
fn check_package(ws: &Workspace, krate: &Crate, problems: &mut Vec<String>) {
    let at = format!("{}/Cargo.toml", krate.dir);
    let Some(name) = package_name(krate) else {
        problems.push(format!("{at}: no [package] name"));
        return;
    };
    if let Some(dir_name) = krate.dir.strip_prefix("crates/")
        && dir_name != name
    {
        problems.push(format!(
            "{at}: package `{name}` should be named after its directory `{dir_name}`"
        ));
    }
    match inherited(ws, krate, "description") {
        Some(Value::String(text)) if !text.trim().is_empty() => {}
        _ => problems.push(format!(
            "{at}: no `description` (say in one sentence what the crate is)"
        )),
    }
    if inherited(ws, krate, "license").and_then(Value::as_str) != Some("Apache-2.0") {
        problems.push(format!(
            "{at}: licence should be Apache-2.0 (`license.workspace = true`)"
        ));
    }
    if UNPUBLISHED.contains(&name) {
        if is_publishable(ws, krate) {
            problems.push(format!(
                "{at}: `{name}` is never published: set `publish = false`"
            ));
        }
    } else if is_publishable(ws, krate) {
        check_published_metadata(ws, krate, problems);
    } else {
        problems.push(format!(
            "{at}: library crates are published: remove `publish = false` (only {} keep it)",
            UNPUBLISHED.join(", ")
        ));
    }
    let lints_inherited = krate
        .manifest
        .get("lints")
        .and_then(|lints| lints.get("workspace"))
        .and_then(Value::as_bool)
        == Some(true);
    if !lints_inherited {
        problems.push(format!(
            "{at}: no `[lints] workspace = true` (the workspace lints apply to every crate)"
        ));
    }
}

/// What crates.io shows about a published crate: where its code is, its README, and how to find
/// it. Cargo itself warns about none of these being missing.
fn check_published_metadata(ws: &Workspace, krate: &Crate, problems: &mut Vec<String>) {
    let at = format!("{}/Cargo.toml", krate.dir);
    match inherited(ws, krate, "repository") {
        Some(Value::String(url)) if !url.trim().is_empty() => {}
        _ => problems.push(format!(
            "{at}: no `repository` (`repository.workspace = true`)"
        )),
    }
    match inherited(ws, krate, "readme").and_then(Value::as_str) {
        None => problems.push(format!(
            "{at}: no `readme` (`readme = \"README.md\"`: what the crate is, an example, a link \
             to the project)"
        )),
        Some(readme) if !krate.files.contains(readme) => problems.push(format!(
            "{at}: readme `{readme}` is not a file in {} (the package holds only its own \
             directory)",
            krate.dir
        )),
        Some(_) => {}
    }
    let keywords = string_list(ws, krate, "keywords");
    match &keywords {
        None => problems.push(format!("{at}: no `keywords` (up to {MAX_KEYWORDS})")),
        Some(keywords) if keywords.is_empty() || keywords.len() > MAX_KEYWORDS => problems.push(
            format!("{at}: `keywords` should have 1 to {MAX_KEYWORDS} entries"),
        ),
        Some(_) => {}
    }
    for keyword in keywords.iter().flatten() {
        if !is_valid_keyword(keyword) {
            problems.push(format!(
                "{at}: keyword `{keyword}` is not accepted by crates.io (up to 20 ASCII letters, \
                 digits, `-`, `_` or `+`, starting with a letter or digit)"
            ));
        }
    }
    let categories = string_list(ws, krate, "categories");
    match &categories {
        None => problems.push(format!("{at}: no `categories` (up to {MAX_KEYWORDS})")),
        Some(categories) if categories.is_empty() || categories.len() > MAX_KEYWORDS => problems
            .push(format!(
                "{at}: `categories` should have 1 to {MAX_KEYWORDS} entries"
            )),
        Some(_) => {}
    }
    for category in categories.iter().flatten() {
        if !CATEGORIES.contains(&category.as_str()) {
            problems.push(format!(
                "{at}: category `{category}` is not one of {} (add a crates.io slug to \
                 CATEGORIES in xtask/src/tidy.rs)",
                CATEGORIES.join(", ")
            ));
        }
    }
}

/// Whether cargo would publish the crate: `publish` is unset, `true` or a non-empty list of
/// registries.
fn is_publishable(ws: &Workspace, krate: &Crate) -> bool {
    match inherited(ws, krate, "publish") {
        Some(Value::Boolean(publish)) => *publish,
        Some(Value::Array(registries)) => !registries.is_empty(),
        _ => true,
    }
}

/// A `[package]` field that is a list of strings; `None` when it is missing or not such a list.
fn string_list(ws: &Workspace, krate: &Crate, field: &str) -> Option<Vec<String>> {
    inherited(ws, krate, field)?
        .as_array()?
        .iter()
        .map(|value| value.as_str().map(str::to_owned))
        .collect()
}

/// crates.io's rule for a keyword.
fn is_valid_keyword(keyword: &str) -> bool {
    keyword.len() <= 20
        && keyword
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphanumeric())
        && keyword
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+'))
}

/// Versions and features live once in the root `[workspace.dependencies]`; crates inherit them.
fn check_dependencies_inherited(krate: &Crate, problems: &mut Vec<String>) {
    for (section, deps) in dependency_tables(&krate.manifest) {
        for (name, spec) in deps {
            let inherits = spec.get("workspace").and_then(Value::as_bool) == Some(true);
            if !inherits {
                problems.push(format!(
                    "{}/Cargo.toml: [{section}] `{name}` should be `{name}.workspace = true` \
                     (declare it in the root [workspace.dependencies])",
                    krate.dir
                ));
            }
        }
    }
}

/// A workspace dependency declared by path alone (no `version`) is test-only: `cargo package`
/// drops it from a published manifest, which is right for a dev-dependency and breaks any other.
fn check_test_only_dependencies(ws: &Workspace, krate: &Crate, problems: &mut Vec<String>) {
    let Some(declared) = workspace_dependencies(ws) else {
        return;
    };
    for (section, deps) in dependency_tables(&krate.manifest) {
        if section.ends_with("dev-dependencies") {
            continue;
        }
        for name in deps.keys() {
            let test_only = declared
                .get(name)
                .is_some_and(|spec| spec.get("path").is_some() && spec.get("version").is_none());
            if test_only {
                problems.push(format!(
                    "{}/Cargo.toml: [{section}] `{name}` is declared without a version, so it is \
                     test-only: use it under [dev-dependencies]",
                    krate.dir
                ));
            }
        }
    }
}

/// The crate's `//!` header, and for a published library the lint that keeps it documented.
fn check_lib_doc(ws: &Workspace, krate: &Crate, problems: &mut Vec<String>) {
    let Some(lib_rs) = &krate.lib_rs else {
        return;
    };
    let opens_with_doc = lib_rs
        .lines()
        .next()
        .is_some_and(|line| line.starts_with("//!"));
    if !opens_with_doc {
        problems.push(format!(
            "{}/src/lib.rs: should open with a `//!` comment saying what the crate is and is not",
            krate.dir
        ));
    }
    let published = package_name(krate).is_some_and(|name| !UNPUBLISHED.contains(&name))
        && is_publishable(ws, krate);
    let lints_missing_docs = lib_rs.lines().any(|line| {
        matches!(
            line.trim(),
            "#![warn(missing_docs)]" | "#![deny(missing_docs)]" | "#![forbid(missing_docs)]"
        )
    });
    if published && !lints_missing_docs {
        problems.push(format!(
            "{}/src/lib.rs: a published library documents every public item: add \
             `#![warn(missing_docs)]`",
            krate.dir
        ));
    }
}

/// Every library crate under `crates/` is declared once in the root `[workspace.dependencies]`,
/// so other crates depend on it with `name.workspace = true`.
fn check_declared(ws: &Workspace, problems: &mut Vec<String>) {
    let declared = workspace_dependencies(ws);
    for krate in &ws.crates {
        let Some(name) = package_name(krate) else {
            continue;
        };
        if !krate.dir.starts_with("crates/") || UNDECLARED_OK.contains(&name) {
            continue;
        }
        let path = declared
            .and_then(|deps| deps.get(name))
            .map(|spec| spec.get("path").and_then(Value::as_str));
        match path {
            None => problems.push(format!(
                "Cargo.toml: [workspace.dependencies] lacks \
                 `{name} = {{ path = \"{}\", version = \"0.1.0\" }}`",
                krate.dir
            )),
            Some(path) if path != Some(krate.dir.as_str()) => problems.push(format!(
                "Cargo.toml: [workspace.dependencies] `{name}` should have path = \"{}\"",
                krate.dir
            )),
            Some(_) => {}
        }
    }
}

/// Every crate has a row in the layering table, and its normal dependencies on other workspace
/// crates are the ones its row allows.
fn check_layering(ws: &Workspace, problems: &mut Vec<String>) {
    let members: BTreeSet<&str> = ws.crates.iter().filter_map(package_name).collect();
    for krate in &ws.crates {
        let Some(name) = package_name(krate) else {
            continue;
        };
        let at = format!("{}/Cargo.toml", krate.dir);
        let Some(allowed) = layer(ws, name) else {
            problems.push(format!(
                "{at}: `{name}` has no row in the layering table (LAYERS in xtask/src/tidy.rs, \
                 shown in {ARCHITECTURE}): give it one that says which crates it may depend on"
            ));
            continue;
        };
        let Allowed::Only(allowed) = allowed else {
            continue;
        };
        for (section, deps) in dependency_tables(&krate.manifest) {
            if is_dev_section(&section) {
                continue;
            }
            for (key, spec) in deps {
                let package = real_package_name(ws, key, spec);
                if members.contains(package) && !allowed.contains(&package) {
                    problems.push(format!(
                        "{at}: [{section}] `{name}` may not depend on `{package}`; the layering \
                         allows it: {}",
                        describe_allowed(Allowed::Only(allowed))
                    ));
                }
            }
        }
    }
}

/// The row of `name` in the workspace's layering table.
fn layer(ws: &Workspace, name: &str) -> Option<Allowed> {
    ws.layers
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .map(|(_, allowed)| *allowed)
}

/// What a row allows, in words: `` `flags-core`, `flags-eval` ``, or no or any workspace crate.
fn describe_allowed(allowed: Allowed) -> String {
    match allowed {
        Allowed::Any => "any workspace crate".to_owned(),
        Allowed::Only([]) => "no workspace crate".to_owned(),
        Allowed::Only(names) => names
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The layering table as docs/ARCHITECTURE.md shows it: one row per crate, in the table's order.
fn render_layers(layers: &[(&str, Allowed)]) -> String {
    let mut table =
        String::from("| Crate | May depend on (normal and build dependencies) |\n| --- | --- |\n");
    for (name, allowed) in layers {
        table.push_str(&format!("| `{name}` | {} |\n", describe_allowed(*allowed)));
    }
    table
}

/// docs/ARCHITECTURE.md shows the layering table exactly as [`render_layers`] writes it, so the
/// documented layering is the enforced one.
fn check_layering_documented(ws: &Workspace, problems: &mut Vec<String>) {
    let Some(architecture) = &ws.architecture else {
        return;
    };
    let table = render_layers(ws.layers);
    if !architecture.contains(&table) {
        problems.push(format!(
            "{ARCHITECTURE}: the table under \"Layering\" differs from LAYERS in \
             xtask/src/tidy.rs; it should read:\n{table}"
        ));
    }
}

/// `flags-core` depends only on `CORE_ALLOWED`, and nothing in `CORE_FORBIDDEN` reaches it.
fn check_core_dependencies(ws: &Workspace, problems: &mut Vec<String>) {
    let Some(core) = ws
        .crates
        .iter()
        .find(|krate| package_name(krate) == Some("flags-core"))
    else {
        return;
    };
    let mut direct = BTreeSet::new();
    for (section, deps) in dependency_tables(&core.manifest) {
        if !section.ends_with("dependencies") || section.ends_with("-dependencies") {
            continue;
        }
        for (key, spec) in deps {
            let package = real_package_name(ws, key, spec);
            if !CORE_ALLOWED.contains(&package) {
                problems.push(format!(
                    "{}/Cargo.toml: flags-core may depend only on {}; found `{package}`",
                    core.dir,
                    CORE_ALLOWED.join(", ")
                ));
            }
            direct.insert(package.to_owned());
        }
    }
    if let Some(lock) = &ws.lock {
        for (forbidden, chain) in forbidden_in_closure(lock, &direct, CORE_FORBIDDEN) {
            problems.push(format!(
                "{}/Cargo.toml: flags-core pulls in `{forbidden}` through {chain}",
                core.dir
            ));
        }
    }
}

/// No crate reaches the packages [`KEPT_OUT`] keeps from it. Workspace crates are followed
/// through their manifests' normal and build dependencies (their lock entries would add their
/// dev-dependencies), third-party ones through `Cargo.lock`.
fn check_kept_out(ws: &Workspace, problems: &mut Vec<String>) {
    for rule in KEPT_OUT {
        check_kept_out_of(ws, rule, problems);
    }
}

fn check_kept_out_of(ws: &Workspace, rule: &KeptOut, problems: &mut Vec<String>) {
    let KeptOut {
        crates,
        packages: kept_out,
        what,
        belongs,
    } = rule;
    let members: BTreeMap<&str, &Crate> = ws
        .crates
        .iter()
        .filter_map(|krate| package_name(krate).map(|name| (name, krate)))
        .collect();
    for name in *crates {
        let Some(start) = members.get(name) else {
            continue;
        };
        // Workspace crates reached, each with the chain that reaches it, and the third-party
        // packages they name.
        let mut reached: BTreeMap<&str, String> = BTreeMap::from([(*name, (*name).to_owned())]);
        let mut queue = VecDeque::from([*start]);
        let mut third_party = BTreeSet::new();
        while let Some(krate) = queue.pop_front() {
            let here = reached[package_name(krate).unwrap_or_default()].clone();
            for (section, deps) in dependency_tables(&krate.manifest) {
                if is_dev_section(&section) {
                    continue;
                }
                for (key, spec) in deps {
                    let package = real_package_name(ws, key, spec);
                    let chain = format!("{here} -> {package}");
                    if kept_out.contains(&package) {
                        problems.push(format!(
                            "{}/Cargo.toml: {name} pulls in {what} (`{package}`) \
                             through {chain}; it belongs in {belongs}",
                            start.dir
                        ));
                    }
                    match members.get(package) {
                        Some(member) if !reached.contains_key(package) => {
                            reached.insert(package, chain);
                            queue.push_back(member);
                        }
                        Some(_) => {}
                        None => {
                            third_party.insert(package.to_owned());
                        }
                    }
                }
            }
        }
        if let Some(lock) = &ws.lock {
            for (package, chain) in forbidden_in_closure(lock, &third_party, kept_out) {
                problems.push(format!(
                    "{}/Cargo.toml: {name} pulls in {what} (`{package}`) through \
                     {chain}; it belongs in {belongs}",
                    start.dir
                ));
            }
        }
    }
}

/// Whether a dependency table (as [`dependency_tables`] labels it) holds dev-dependencies.
fn is_dev_section(section: &str) -> bool {
    section.ends_with("dev-dependencies")
}

/// Tests that are skipped, or that pass by panicking, cannot catch a regression.
fn check_test_attributes(ws: &Workspace, problems: &mut Vec<String>) {
    // Built at run time so this file does not report itself.
    let rules = [
        (
            format!("#[{}", "ignore"),
            "a test that does not run cannot fail; make it fast instead",
        ),
        (
            format!("#[{}", "should_panic"),
            "return or match the error and assert on it instead",
        ),
    ];
    for (path, text) in &ws.sources {
        for (index, line) in text.lines().enumerate() {
            for (pattern, advice) in &rules {
                if line.trim_start().starts_with(pattern.as_str()) {
                    problems.push(format!(
                        "{path}:{}: `{pattern}]` is not allowed: {advice}",
                        index + 1
                    ));
                }
            }
        }
    }
}

fn package_name(krate: &Crate) -> Option<&str> {
    krate
        .manifest
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(Value::as_str)
}

/// A `[package]` field, following `field.workspace = true` to `[workspace.package]`.
fn inherited<'a>(ws: &'a Workspace, krate: &'a Crate, field: &str) -> Option<&'a Value> {
    let value = krate.manifest.get("package")?.get(field)?;
    if value.get("workspace").and_then(Value::as_bool) == Some(true) {
        ws.manifest.get("workspace")?.get("package")?.get(field)
    } else {
        Some(value)
    }
}

fn workspace_dependencies(ws: &Workspace) -> Option<&Table> {
    ws.manifest
        .get("workspace")?
        .get("dependencies")?
        .as_table()
}

/// The dependency tables of a manifest with a label for messages: `dependencies`,
/// `dev-dependencies`, `build-dependencies`, and the same under each `[target.'cfg(..)']`.
fn dependency_tables(manifest: &Table) -> Vec<(String, &Table)> {
    const KINDS: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];
    let mut tables = Vec::new();
    for kind in KINDS {
        if let Some(deps) = manifest.get(kind).and_then(Value::as_table) {
            tables.push((kind.to_owned(), deps));
        }
    }
    if let Some(targets) = manifest.get("target").and_then(Value::as_table) {
        for (target, table) in targets {
            for kind in KINDS {
                if let Some(deps) = table.get(kind).and_then(Value::as_table) {
                    tables.push((format!("target.'{target}'.{kind}"), deps));
                }
            }
        }
    }
    tables
}

/// The package a dependency key names, following `package = "..."` renames, also through the
/// workspace declaration it inherits.
fn real_package_name<'a>(ws: &'a Workspace, key: &'a str, spec: &'a Value) -> &'a str {
    if let Some(package) = spec.get("package").and_then(Value::as_str) {
        return package;
    }
    workspace_dependencies(ws)
        .and_then(|deps| deps.get(key))
        .and_then(|declared| declared.get("package"))
        .and_then(Value::as_str)
        .unwrap_or(key)
}

/// Packages of `forbidden` reachable from `direct` through `Cargo.lock`, each with the chain
/// that reaches it (`serde_json -> foo -> tokio`). The lock file records for each package every
/// dependency the workspace resolved (optional ones included when any crate enables them), so
/// this may over-report but never misses one.
fn forbidden_in_closure(
    lock: &Table,
    direct: &BTreeSet<String>,
    forbidden: &[&str],
) -> Vec<(String, String)> {
    type Node = (String, String);
    let mut packages: BTreeMap<Node, Vec<String>> = BTreeMap::new();
    for package in lock
        .get("package")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(version)) = (
            package.get("name").and_then(Value::as_str),
            package.get("version").and_then(Value::as_str),
        ) else {
            continue;
        };
        let deps = package
            .get("dependencies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        packages.insert((name.to_owned(), version.to_owned()), deps);
    }
    // A lock entry names a dependency as `name`, or `name version` when several versions exist.
    let resolve = |dep: &str| -> Vec<Node> {
        let mut parts = dep.split_whitespace();
        let name = parts.next().unwrap_or_default();
        let version = parts.next();
        packages
            .keys()
            .filter(|(n, v)| n == name && version.is_none_or(|version| version == v))
            .cloned()
            .collect()
    };

    let mut parent: BTreeMap<Node, Option<Node>> = BTreeMap::new();
    let mut queue = VecDeque::new();
    for name in direct {
        for node in resolve(name) {
            if parent.insert(node.clone(), None).is_none() {
                queue.push_back(node);
            }
        }
    }
    let mut found = Vec::new();
    let mut reported = BTreeSet::new();
    while let Some(node) = queue.pop_front() {
        if forbidden.contains(&node.0.as_str()) && reported.insert(node.0.clone()) {
            let mut chain = vec![node.0.clone()];
            let mut at = &node;
            while let Some(Some(up)) = parent.get(at) {
                chain.push(up.0.clone());
                at = up;
            }
            chain.reverse();
            found.push((node.0.clone(), chain.join(" -> ")));
        }
        for dep in packages.get(&node).into_iter().flatten() {
            for next in resolve(dep) {
                if !parent.contains_key(&next) {
                    parent.insert(next.clone(), Some(node.clone()));
                    queue.push_back(next);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real repository passes every check.
    #[test]
    fn repository_is_tidy() {
        let problems = check_repository(&crate::project_root()).unwrap();
        assert!(
            problems.is_empty(),
            "`cargo xtask tidy` found {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    const ROOT: &str = r#"
[workspace]
members = ["crates/*", "xtask"]

[workspace.package]
license = "Apache-2.0"
repository = "https://example.invalid/flagd"

[workspace.dependencies]
flags-core = { path = "crates/flags-core", version = "0.1.0" }
flags-app = { path = "crates/flags-app", version = "0.1.0" }
flags-testing = { path = "crates/flags-testing" }
serde = "1"
tokio = "1"
runtime = { package = "tokio", version = "1" }
"#;

    const DOC: &str = "//! A fixture crate.\n\n#![warn(missing_docs)]\n";

    /// A tidy manifest: a published library's, or for the crates that are never published, one
    /// with `publish = false` and no crates.io metadata.
    fn manifest(name: &str, deps: &str) -> String {
        let publishing = if UNPUBLISHED.contains(&name) {
            "publish = false"
        } else {
            "repository.workspace = true\nreadme = \"README.md\"\n\
             keywords = [\"feature-flags\"]\ncategories = [\"config\"]"
        };
        format!(
            r#"
[package]
name = "{name}"
description = "A fixture crate."
license.workspace = true
{publishing}

{deps}

[lints]
workspace = true
"#
        )
    }

    /// The fixture's layering: `flags-app` above `flags-core`, and `xtask` above everything.
    const LAYERS_FIXTURE: &[(&str, Allowed)] = &[
        ("flags-core", Allowed::Only(&[])),
        ("flags-app", Allowed::Only(&["flags-core"])),
        ("flags-bench", Allowed::Only(&["flags-core"])),
        ("flags-new", Allowed::Only(&[])),
        ("xtask", Allowed::Any),
    ];

    /// An architecture document that shows `layers`.
    fn architecture(layers: &[(&str, Allowed)]) -> String {
        format!(
            "# Architecture\n\n## Layering\n\n{}\nLower layers know nothing of higher ones.\n",
            render_layers(layers)
        )
    }

    struct Fixture {
        root: String,
        lock: Option<String>,
        crates: Vec<(String, String, Option<String>)>,
        sources: Vec<(String, String)>,
        layers: &'static [(&'static str, Allowed)],
        architecture: Option<String>,
    }

    impl Fixture {
        /// A small workspace that passes every check.
        fn tidy() -> Fixture {
            Fixture {
                root: ROOT.to_owned(),
                lock: None,
                crates: vec![
                    (
                        "crates/flags-app".to_owned(),
                        manifest(
                            "flags-app",
                            "[dependencies]\nflags-core.workspace = true\ntokio.workspace = true",
                        ),
                        Some(DOC.to_owned()),
                    ),
                    (
                        "crates/flags-core".to_owned(),
                        manifest("flags-core", "[dependencies]\nserde.workspace = true"),
                        Some(DOC.to_owned()),
                    ),
                    ("xtask".to_owned(), manifest("xtask", ""), None),
                ],
                sources: vec![(
                    "crates/flags-core/src/lib.rs".to_owned(),
                    format!("{DOC}#[test]\nfn works() {{}}\n"),
                )],
                layers: LAYERS_FIXTURE,
                architecture: Some(architecture(LAYERS_FIXTURE)),
            }
        }

        fn with_crate(mut self, dir: &str, manifest: &str, lib_rs: Option<&str>) -> Fixture {
            self.crates.retain(|(d, _, _)| d != dir);
            self.crates.push((
                dir.to_owned(),
                manifest.to_owned(),
                lib_rs.map(str::to_owned),
            ));
            self
        }

        fn problems(self) -> Vec<String> {
            let ws = Workspace {
                manifest: self.root.parse().unwrap(),
                lock: self.lock.map(|lock| lock.parse().unwrap()),
                crates: self
                    .crates
                    .into_iter()
                    .map(|(dir, manifest, lib_rs)| Crate {
                        dir,
                        manifest: manifest.parse().unwrap(),
                        lib_rs,
                        files: ["Cargo.toml", "README.md"].map(str::to_owned).into(),
                    })
                    .collect(),
                sources: self.sources,
                layers: self.layers,
                architecture: self.architecture,
            };
            check(&ws)
        }
    }

    /// Asserts that exactly the `expected` problems are found, each given by a part of its text.
    #[track_caller]
    fn check_problems(fixture: Fixture, expected: &[&str]) {
        let problems = fixture.problems();
        let matches = problems.len() == expected.len()
            && problems
                .iter()
                .zip(expected)
                .all(|(problem, part)| problem.contains(part));
        assert!(
            matches,
            "expected problems containing {expected:#?}\nfound {problems:#?}"
        );
    }

    #[test]
    fn tidy_fixture_has_no_problems() {
        check_problems(Fixture::tidy(), &[]);
    }

    #[test]
    fn missing_description_is_reported() {
        let manifest = manifest("flags-app", "").replace("description = \"A fixture crate.\"", "");
        let fixture = Fixture::tidy().with_crate("crates/flags-app", &manifest, Some(DOC));
        check_problems(fixture, &["crates/flags-app/Cargo.toml: no `description`"]);

        let manifest = manifest.replace("[package]", "[package]\ndescription = \" \"");
        let fixture = Fixture::tidy().with_crate("crates/flags-app", &manifest, Some(DOC));
        check_problems(fixture, &["crates/flags-app/Cargo.toml: no `description`"]);
    }

    #[test]
    fn missing_workspace_lints_are_reported() {
        let manifest = manifest("xtask", "").replace("[lints]\nworkspace = true\n", "");
        let fixture = Fixture::tidy().with_crate("xtask", &manifest, None);
        check_problems(
            fixture,
            &["xtask/Cargo.toml: no `[lints] workspace = true`"],
        );
    }

    #[test]
    fn licence_is_checked() {
        let manifest =
            manifest("flags-app", "").replace("license.workspace = true", "license = \"MIT\"");
        let fixture = Fixture::tidy().with_crate("crates/flags-app", &manifest, Some(DOC));
        check_problems(
            fixture,
            &["crates/flags-app/Cargo.toml: licence should be Apache-2.0"],
        );
    }

    #[test]
    fn libraries_are_published_and_the_other_crates_are_not() {
        let library = manifest("flags-app", "").replace("[package]", "[package]\npublish = false");
        let tool = manifest("xtask", "").replace("publish = false", "");
        let no_registry =
            manifest("flags-core", "").replace("[package]", "[package]\npublish = []");
        let fixture = Fixture::tidy()
            .with_crate("crates/flags-app", &library, Some(DOC))
            .with_crate("xtask", &tool, None)
            .with_crate("crates/flags-core", &no_registry, Some(DOC));
        check_problems(
            fixture,
            &[
                "crates/flags-app/Cargo.toml: library crates are published: remove `publish = \
                 false` (only flagd, flags-bench, xtask, flags-test-support, flags-typed-example keep it)",
                "xtask/Cargo.toml: `xtask` is never published: set `publish = false`",
                "crates/flags-core/Cargo.toml: library crates are published",
            ],
        );

        // `publish` inherited from the workspace counts the same.
        let mut fixture = Fixture::tidy().with_crate(
            "crates/flags-bench",
            &manifest("flags-bench", "").replace("publish = false", "publish.workspace = true"),
            None,
        );
        check_problems(
            fixture,
            &["crates/flags-bench/Cargo.toml: `flags-bench` is never"],
        );
        fixture = Fixture::tidy().with_crate(
            "crates/flags-bench",
            &manifest("flags-bench", "").replace("publish = false", "publish.workspace = true"),
            None,
        );
        fixture.root = ROOT.replace(
            "[workspace.package]",
            "[workspace.package]\npublish = false",
        );
        check_problems(fixture, &[]);
    }

    #[test]
    fn published_crates_carry_what_crates_io_shows() {
        let manifest = manifest("flags-app", "")
            .replace("repository.workspace = true\n", "")
            .replace("readme = \"README.md\"\n", "")
            .replace(
                "keywords = [\"feature-flags\"]",
                "keywords = [\"a\", \"b\", \"c\", \"d\", \"feature flags\", \"-f\"]",
            )
            .replace("[\"config\"]", "[\"config\", \"feature-flags\"]");
        let fixture = Fixture::tidy().with_crate("crates/flags-app", &manifest, Some(DOC));
        check_problems(
            fixture,
            &[
                "crates/flags-app/Cargo.toml: no `repository`",
                "crates/flags-app/Cargo.toml: no `readme`",
                "crates/flags-app/Cargo.toml: `keywords` should have 1 to 5 entries",
                "keyword `feature flags` is not accepted by crates.io",
                "keyword `-f` is not accepted by crates.io",
                "category `feature-flags` is not one of algorithms, asynchronous,",
            ],
        );

        let manifest = self::manifest("flags-app", "")
            .replace("\"README.md\"", "\"../../README.md\"")
            .replace("keywords = [\"feature-flags\"]\n", "")
            .replace("[\"config\"]", "[]");
        let fixture = Fixture::tidy().with_crate("crates/flags-app", &manifest, Some(DOC));
        check_problems(
            fixture,
            &[
                "crates/flags-app/Cargo.toml: readme `../../README.md` is not a file in \
                 crates/flags-app",
                "crates/flags-app/Cargo.toml: no `keywords`",
                "crates/flags-app/Cargo.toml: `categories` should have 1 to 5 entries",
            ],
        );
    }

    #[test]
    fn package_named_unlike_its_directory_is_reported() {
        let fixture =
            Fixture::tidy().with_crate("crates/flags-app", &manifest("flags-ap", ""), Some(DOC));
        check_problems(
            fixture,
            &[
                "package `flags-ap` should be named after its directory `flags-app`",
                "lacks `flags-ap = { path = \"crates/flags-app\"",
                "`flags-ap` has no row in the layering table",
            ],
        );
    }

    #[test]
    fn lib_without_doc_comment_is_reported() {
        for lib_rs in [
            "pub fn f() {}\n",
            "// A plain comment is not documentation.\n",
            "#![allow(missing_docs)]\n//! Documentation after an attribute.\n",
            "\n//! Documentation after a blank line.\n",
            "",
        ] {
            let lib_rs = format!("{lib_rs}\n#![warn(missing_docs)]\n");
            let fixture = Fixture::tidy().with_crate(
                "crates/flags-core",
                &manifest("flags-core", ""),
                Some(&lib_rs),
            );
            check_problems(
                fixture,
                &["crates/flags-core/src/lib.rs: should open with a `//!` comment"],
            );
        }
    }

    #[test]
    fn published_library_without_the_missing_docs_lint_is_reported() {
        let fixture = Fixture::tidy().with_crate(
            "crates/flags-core",
            &manifest("flags-core", ""),
            Some("//! Documented.\n#![allow(missing_docs)]\n"),
        );
        check_problems(
            fixture,
            &["crates/flags-core/src/lib.rs: a published library documents every public item"],
        );

        let fixture = Fixture::tidy()
            .with_crate(
                "crates/flags-core",
                &manifest("flags-core", ""),
                Some("//! Documented.\n  #![deny(missing_docs)]\n"),
            )
            .with_crate(
                "crates/flags-bench",
                &manifest("flags-bench", ""),
                Some("//! Never published.\n"),
            );
        check_problems(fixture, &[]);
    }

    #[test]
    fn crate_without_library_needs_no_doc_comment() {
        let fixture = Fixture::tidy().with_crate("xtask", &manifest("xtask", ""), None);
        check_problems(fixture, &[]);
    }

    #[test]
    fn undeclared_crate_is_reported_except_bench_only_crates() {
        let fixture = Fixture::tidy()
            .with_crate("crates/flags-new", &manifest("flags-new", ""), Some(DOC))
            .with_crate("crates/flags-bench", &manifest("flags-bench", ""), None);
        check_problems(
            fixture,
            &[
                "Cargo.toml: [workspace.dependencies] lacks `flags-new = { path = \"crates/flags-new\"",
            ],
        );
    }

    #[test]
    fn declaration_with_wrong_path_is_reported() {
        let mut fixture = Fixture::tidy();
        fixture.root = ROOT.replace("path = \"crates/flags-app\"", "path = \"flags-app\"");
        check_problems(
            fixture,
            &["`flags-app` should have path = \"crates/flags-app\""],
        );
    }

    #[test]
    fn dependency_not_inherited_from_workspace_is_reported() {
        let deps = "[dependencies]\nserde = \"1\"\n\n[target.'cfg(unix)'.dev-dependencies]\n\
                    tokio = { version = \"1\" }";
        let fixture =
            Fixture::tidy().with_crate("crates/flags-app", &manifest("flags-app", deps), Some(DOC));
        check_problems(
            fixture,
            &[
                "crates/flags-app/Cargo.toml: [dependencies] `serde` should be `serde.workspace = true`",
                "[target.'cfg(unix)'.dev-dependencies] `tokio` should be `tokio.workspace = true`",
            ],
        );
    }

    #[test]
    fn test_only_crate_outside_dev_dependencies_is_reported() {
        let deps = "[dependencies]\nflags-testing.workspace = true\n\n\
                    [target.'cfg(unix)'.build-dependencies]\nflags-testing.workspace = true\n\n\
                    [dev-dependencies]\nflags-testing.workspace = true";
        let fixture =
            Fixture::tidy().with_crate("crates/flags-app", &manifest("flags-app", deps), Some(DOC));
        check_problems(
            fixture,
            &[
                "crates/flags-app/Cargo.toml: [dependencies] `flags-testing` is declared without \
                 a version",
                "[target.'cfg(unix)'.build-dependencies] `flags-testing` is declared without",
            ],
        );
    }

    #[test]
    fn dependency_outside_the_layering_is_reported() {
        let deps = "[dependencies]\nflags-app.workspace = true\nserde.workspace = true\n\n\
                    [target.'cfg(unix)'.dependencies]\nflags-core.workspace = true\n\
                    flags-bench.workspace = true\n\n\
                    [dev-dependencies]\nflags-app.workspace = true";
        let fixture =
            Fixture::tidy().with_crate("crates/flags-bench", &manifest("flags-bench", deps), None);
        check_problems(
            fixture,
            &[
                "crates/flags-bench/Cargo.toml: [dependencies] `flags-bench` may not depend on \
                 `flags-app`; the layering allows it: `flags-core`",
                "[target.'cfg(unix)'.dependencies] `flags-bench` may not depend on `flags-bench`",
            ],
        );
    }

    #[test]
    fn crate_that_may_depend_on_anything_is_not_limited() {
        let deps = "[dependencies]\nflags-app.workspace = true\nflags-core.workspace = true";
        let fixture = Fixture::tidy().with_crate("xtask", &manifest("xtask", deps), None);
        check_problems(fixture, &[]);
    }

    #[test]
    fn crate_without_a_layer_is_reported() {
        const LAYERS: &[(&str, Allowed)] = &[
            ("flags-core", Allowed::Only(&[])),
            ("flags-app", Allowed::Only(&["flags-core"])),
            // A row for a crate that does not exist yet is fine.
            ("flags-later", Allowed::Only(&["flags-core"])),
        ];
        let mut fixture = Fixture::tidy();
        fixture.layers = LAYERS;
        fixture.architecture = Some(architecture(LAYERS));
        check_problems(
            fixture,
            &[
                "xtask/Cargo.toml: `xtask` has no row in the layering table (LAYERS in \
               xtask/src/tidy.rs, shown in docs/ARCHITECTURE.md)",
            ],
        );
    }

    #[test]
    fn layering_table_is_rendered_for_the_docs() {
        let expected = "\
| Crate | May depend on (normal and build dependencies) |
| --- | --- |
| `flags-core` | no workspace crate |
| `flags-app` | `flags-core` |
| `flags-bench` | `flags-core` |
| `flags-new` | no workspace crate |
| `xtask` | any workspace crate |
";
        assert_eq!(render_layers(LAYERS_FIXTURE), expected);
    }

    #[test]
    fn documented_layering_that_differs_is_reported() {
        let mut fixture = Fixture::tidy();
        fixture.architecture = fixture.architecture.map(|doc| {
            doc.replace(
                "| `flags-app` | `flags-core` |",
                "| `flags-app` | `flags-core`, `flags-new` |",
            )
        });
        check_problems(
            fixture,
            &[
                "docs/ARCHITECTURE.md: the table under \"Layering\" differs from LAYERS in \
               xtask/src/tidy.rs; it should read:\n| Crate |",
            ],
        );

        // Without the document (reported when it is read), there is nothing to compare.
        let mut fixture = Fixture::tidy();
        fixture.architecture = None;
        check_problems(fixture, &[]);
    }

    #[test]
    fn core_depending_outside_its_allow_list_is_reported() {
        let deps = "[dependencies]\nserde.workspace = true\ntokio.workspace = true\n\
                    [dev-dependencies]\nflags-app.workspace = true";
        let fixture = Fixture::tidy().with_crate(
            "crates/flags-core",
            &manifest("flags-core", deps),
            Some(DOC),
        );
        check_problems(
            fixture,
            &[
                "crates/flags-core/Cargo.toml: flags-core may depend only on serde, serde_json, \
               serde_path_to_error, thiserror; found `tokio`",
            ],
        );
    }

    #[test]
    fn core_dependency_renamed_in_the_workspace_is_seen_through() {
        let deps = "[target.'cfg(unix)'.dependencies]\nruntime.workspace = true";
        let fixture = Fixture::tidy().with_crate(
            "crates/flags-core",
            &manifest("flags-core", deps),
            Some(DOC),
        );
        check_problems(fixture, &["found `tokio`"]);
    }

    const LOCK: &str = r#"
version = 4

[[package]]
name = "flags-core"
version = "0.1.0"
dependencies = ["serde", "tokio"]

[[package]]
name = "serde"
version = "1.0.0"
dependencies = ["serde_derive"]

[[package]]
name = "serde_derive"
version = "1.0.0"
dependencies = ["mio 0.8.0"]

[[package]]
name = "mio"
version = "0.8.0"

[[package]]
name = "mio"
version = "1.0.0"

[[package]]
name = "tokio"
version = "1.0.0"
"#;

    #[test]
    fn forbidden_crate_reached_through_the_lock_file_is_reported() {
        let mut fixture = Fixture::tidy();
        fixture.lock = Some(LOCK.to_owned());
        check_problems(
            fixture,
            &[
                "crates/flags-core/Cargo.toml: flags-core pulls in `mio` through \
               serde -> serde_derive -> mio",
            ],
        );
    }

    #[test]
    fn dev_dependencies_of_core_are_not_followed_through_the_lock_file() {
        // flags-core's own lock entry lists its dev-dependencies too (here tokio); only the
        // normal dependencies from its manifest are followed.
        let mut fixture = Fixture::tidy();
        fixture.lock = Some(LOCK.replace("dependencies = [\"mio 0.8.0\"]", ""));
        check_problems(fixture, &[]);
    }

    #[test]
    fn build_dependencies_keep_to_the_layering_too() {
        let deps = "[dependencies]\nserde.workspace = true\n\n\
                    [build-dependencies]\nflags-app.workspace = true";
        let fixture = Fixture::tidy().with_crate(
            "crates/flags-core",
            &manifest("flags-core", deps),
            Some(DOC),
        );
        check_problems(
            fixture,
            &["[build-dependencies] `flags-core` may not depend on `flags-app`"],
        );
    }

    #[test]
    fn code_generation_reaching_a_runtime_crate_is_reported() {
        // flags-core depends on flags-app only to be reached through it; the layering problem
        // is beside the point.
        const LAYERS: &[(&str, Allowed)] = &[
            ("flags-core", Allowed::Any),
            ("flags-app", Allowed::Only(&["flags-core"])),
            ("xtask", Allowed::Any),
        ];
        let core = "[dependencies]\nserde.workspace = true\nflags-app.workspace = true";
        let app = "[build-dependencies]\nprotox.workspace = true\n\n\
                   [dev-dependencies]\nprost-build.workspace = true";
        let mut fixture = Fixture::tidy()
            .with_crate(
                "crates/flags-core",
                &manifest("flags-core", core),
                Some(DOC),
            )
            .with_crate("crates/flags-app", &manifest("flags-app", app), Some(DOC));
        fixture
            .root
            .push_str("protox = \"0.10\"\nprost-build = \"0.14\"\n");
        fixture.layers = LAYERS;
        fixture.architecture = Some(architecture(LAYERS));
        // And a third-party crate that pulls in prost-build, through the lock file.
        fixture.lock = Some(
            LOCK.replace(
                "dependencies = [\"mio 0.8.0\"]",
                "dependencies = [\"prost-build\"]",
            ) + "\n[[package]]\nname = \"prost-build\"\nversion = \"0.14.0\"\n",
        );
        check_problems(
            fixture,
            &[
                "crates/flags-core/Cargo.toml: flags-core may depend only on serde",
                "crates/flags-core/Cargo.toml: flags-core pulls in code generation (`protox`) \
                 through flags-core -> flags-app -> protox; it belongs in build scripts only",
                "crates/flags-core/Cargo.toml: flags-core pulls in code generation \
                 (`prost-build`) through serde -> serde_derive -> prost-build",
            ],
        );
    }

    #[test]
    fn grpc_reaching_the_vocabulary_is_reported() {
        let core = "[dependencies]\nserde.workspace = true\ntonic.workspace = true";
        let mut fixture = Fixture::tidy().with_crate(
            "crates/flags-core",
            &manifest("flags-core", core),
            Some(DOC),
        );
        fixture.root.push_str("tonic = \"0.14\"\n");
        check_problems(
            fixture,
            &[
                "crates/flags-core/Cargo.toml: flags-core may depend only on serde",
                "crates/flags-core/Cargo.toml: flags-core pulls in gRPC (`tonic`) through \
                 flags-core -> tonic; it belongs in flags-sdk-grpc and flagd only",
            ],
        );
    }

    #[test]
    fn a_tls_stack_needing_cmake_reaching_a_runtime_crate_is_reported() {
        let core = "[dependencies]\nserde.workspace = true";
        let mut fixture = Fixture::tidy().with_crate(
            "crates/flags-core",
            &manifest("flags-core", core),
            Some(DOC),
        );
        // A third-party crate whose features switch on aws-lc-rs, seen through the lock file.
        fixture.lock = Some(
            LOCK.replace(
                "dependencies = [\"mio 0.8.0\"]",
                "dependencies = [\"aws-lc-rs\"]",
            ) + "\n[[package]]\nname = \"aws-lc-rs\"\nversion = \"1.13.0\"\n",
        );
        check_problems(
            fixture,
            &[
                "crates/flags-core/Cargo.toml: flags-core pulls in a TLS stack that needs CMake or \
               OpenSSL (`aws-lc-rs`) through serde -> serde_derive -> aws-lc-rs",
            ],
        );
    }

    #[test]
    fn skipped_and_panicking_tests_are_reported() {
        let mut fixture = Fixture::tidy();
        let ignore = format!("#[{}", "ignore");
        let should_panic = format!("#[{}", "should_panic");
        fixture.sources.push((
            "crates/flags-app/tests/api.rs".to_owned(),
            format!(
                "#[test]\n{ignore}]\nfn slow() {{}}\n\n#[test]\n    {should_panic}(expected = \"x\")]\n\
                 fn panics() {{}}\n// {ignore}] in a comment is fine\n"
            ),
        ));
        check_problems(
            fixture,
            &[
                "crates/flags-app/tests/api.rs:2: `#[ignore]` is not allowed",
                "crates/flags-app/tests/api.rs:6: `#[should_panic]` is not allowed",
            ],
        );
    }

    /// Loading from disk finds crates, sources and missing files, end to end.
    #[test]
    fn repository_on_disk_is_loaded_and_checked() {
        let root = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("Cargo.toml", ROOT);
        write("crates/flags-core/Cargo.toml", &manifest("flags-core", ""));
        write("crates/flags-core/src/lib.rs", "pub struct Flag;\n");
        write("crates/flags-app/Cargo.toml", &manifest("flags-app", ""));
        write("crates/flags-app/README.md", "# flags-app\n");
        write("crates/flags-app/src/lib.rs", DOC);
        write(
            "crates/flags-app/target/debug/build/out.rs",
            &format!("#[{}]\n", "ignore"),
        );
        write("crates/flags-half/src/lib.rs", DOC);
        write(
            "xtask/Cargo.toml",
            &manifest("xtask", "[dependencies]\nanyhow = \"1\""),
        );
        write("xtask/src/main.rs", "fn main() {}\n");
        write("docs/ARCHITECTURE.md", &architecture(LAYERS));

        let problems = check_repository(&root);
        fs::remove_dir_all(&root).unwrap();
        let problems = problems.unwrap();
        let expected = [
            "crates/flags-half: no Cargo.toml",
            "crates/flags-core/Cargo.toml: readme `README.md` is not a file in crates/flags-core",
            "crates/flags-core/src/lib.rs: should open with a `//!` comment",
            "crates/flags-core/src/lib.rs: a published library documents every public item",
            "xtask/Cargo.toml: [dependencies] `anyhow` should be `anyhow.workspace = true`",
            "crates/flags-app/Cargo.toml: `flags-app` has no row in the layering table",
        ];
        assert!(
            problems.len() == expected.len()
                && problems.iter().zip(expected).all(|(p, e)| p.contains(e)),
            "found {problems:#?}"
        );
    }
}
