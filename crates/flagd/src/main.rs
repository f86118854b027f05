//! The `flagd` binary: parses the command line and runs the library.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use flagd::cli::{
    Cli, Command, DatabaseArgs, ExportArgs, HealthArgs, ImportArgs, ServeArgs, SyncArgs,
    ValidateArgs,
};

/// jemalloc, for memory that stays close to what flagd holds across reloads: see the library's
/// `memory` module.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long in-flight requests get to finish after a stop signal before the process exits anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Serve(args) => report(serve(&args)),
        Command::Migrate(args) => report(migrate(&args)),
        Command::Import(args) => report(import(&args)),
        Command::Export(args) => report(export(&args)),
        Command::Sync(args) => report(sync(&args)),
        Command::Manage(command) => flagd::manage::run(&command),
        Command::Health(args) => health(&args),
    }
}

/// Prints the status of one GET (or why there was none) and exits 0 for a 2xx, 1 otherwise.
fn health(args: &HealthArgs) -> ExitCode {
    let env = std::env::vars().collect();
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| flagd::probe::default_url(&env));
    let limit = Duration::from_millis(args.timeout_ms);
    let answer = block_on(async { Ok(flagd::probe::probe(&url, args.insecure, limit).await) });
    match answer {
        Ok(Ok(status)) => {
            println!("{url}: {status}");
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Ok(Err(error)) => {
            eprintln!("flagd: {error}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("flagd: {}", chain_text(&error));
            ExitCode::from(1)
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flagd: {}", chain_text(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, `outer: inner`, as `{:#}` shows them, but without a cause that
/// the message before it already ends with (errors that show their source in their own
/// message), so nothing is said twice.
fn chain_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if text.is_empty() {
            text = said;
        } else if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
    }
    text
}

/// Runs `body` on a small runtime (the database commands do a handful of queries).
fn block_on<T>(body: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(body)
}

fn database_url(args: &DatabaseArgs) -> anyhow::Result<String> {
    let env = std::env::vars().collect();
    args.url(&env)
        .context("no database: pass --database URL (or set FLAGD_DATABASE_URL)")
}

fn migrate(args: &DatabaseArgs) -> anyhow::Result<()> {
    let url = database_url(args)?;
    block_on(async {
        flagd::open_database(&url).await?;
        println!("migrations applied");
        Ok(())
    })
}

fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let url = database_url(&args.database)?;
    block_on(async {
        let store = flagd::open_database(&url).await?;
        let actor = flags_store::Actor::named("import");
        let display = flagd::progress::ImportDisplay::for_stderr(&args.file);
        let show = |step| display.show(step);
        let result =
            flagd::admin::import_file_with_progress(&*store, &args.env, &args.file, &actor, &show)
                .await;
        display.finish();
        let report = result?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            for warning in &report.warnings {
                eprintln!("warning: {}: {}", warning.path, warning.message);
            }
            println!("{}", report.summary(&args.env));
        }
        Ok(())
    })
}

fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let url = database_url(&args.database)?;
    block_on(async {
        let store = flagd::open_database(&url).await?;
        let document = flagd::admin::export_env(&*store, &args.env).await?;
        println!("{}", serde_json::to_string_pretty(&document)?);
        Ok(())
    })
}

fn sync(args: &SyncArgs) -> anyhow::Result<()> {
    use flagd::descriptors::{Registry, sync};
    let url = database_url(&args.database)?;
    let path = args.descriptors.display();
    let bytes = std::fs::read(&args.descriptors).with_context(|| format!("cannot read {path}"))?;
    let registry = Registry::from_descriptor_set(&bytes).with_context(|| path.to_string())?;
    block_on(async {
        let store = flagd::open_database(&url).await?;
        let actor = flags_store::Actor::named(sync::SYNC_ACTOR);
        let report = sync::sync(&*store, &args.env, &registry, &actor).await?;
        println!("{}", report.summary());
        Ok(())
    })
}

fn validate(args: &ValidateArgs) -> ExitCode {
    let report = flagd::validate::validate(&args.paths);
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. piped into `head`) is not worth a panic; the exit code still tells.
    for problem in &report.problems {
        let _ = writeln!(out, "{problem}");
    }
    let _ = writeln!(out, "{}", report.summary());
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let config = args.resolve(&env)?;
    if config.files.is_empty() && config.database_url.is_none() && config.upstream.url.is_none() {
        anyhow::bail!(
            "no flag files to serve: pass --file PATH (or set files in --config, or FLAGD_FILES), \
             --database URL, or --upstream URL"
        );
    }
    let tracing = flagd::telemetry::TracingConfig::from_env(&env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Inside the runtime: the OTLP exporter's gRPC transport keeps its connection there.
    let telemetry = {
        let _runtime = runtime.enter();
        flagd::telemetry::init_tracer(&flagd::telemetry::LogSettings::of(&config), &tracing)?
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        let stop = stop_signal().context("cannot install signal handlers")?;
        let server = flagd::start(config).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {}", server.local_addr())?;
            if let Some(grpc) = server.grpc_addr() {
                writeln!(out, "grpc listening on {grpc}")?;
            }
            out.flush()?;
        }
        tracing::info!(addr = %server.local_addr(), grpc = ?server.grpc_addr(), "flagd serving");
        let shutdown = server.state().shutdown.clone();
        let exporters = server.exporters();
        let stopped = server.wait();
        tokio::pin!(stopped);
        tokio::select! {
            result = &mut stopped => return result.context("server failed"),
            () = stop => {}
        }
        tracing::info!("stopping: finishing requests in flight and ending streams");
        shutdown.trigger();
        // The exporters' own grace period comes after the requests' drain.
        let limit = DRAIN_TIMEOUT + exporters.as_ref().map_or(Duration::ZERO, |e| e.grace());
        match tokio::time::timeout(limit, stopped).await {
            Ok(result) => result.context("server failed"),
            Err(_) => {
                tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; exiting anyway");
                // Whatever the exporters still hold is spooled (or counted) before the exit.
                if let Some(exporters) = exporters {
                    exporters.shutdown().await;
                }
                Ok(())
            }
        }
    });
    // The last spans go to the collector once every request has been answered, while the
    // runtime that the gRPC transport runs on is still there.
    telemetry.shutdown();
    // Anything still running (connections past the drain timeout) is dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed by this call,
/// not when the future is first polled, so a signal sent right after `listening on` is printed
/// is not lost to the default action (which would kill the process without draining).
#[cfg(unix)]
fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
