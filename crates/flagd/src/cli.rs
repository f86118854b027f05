//! The command line: `flagd serve`, `flagd validate` and the database subcommands, and how
//! flags, environment and the configuration file combine into one [`Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use flags_store_postgres::redact_url;

use crate::config::{Config, ConfigError, LogFormat, Redacted, Sampling};

const ABOUT: &str = "A self-hosted feature-flag server for LaunchDarkly-format flag data.";

const LONG_ABOUT: &str = "\
A self-hosted feature-flag server for LaunchDarkly-format flag data.

flagd serves flags and segments from flag files (LaunchDarkly's file-data-source format,
{\"flags\":{},\"segments\":{},\"flagValues\":{}}, in JSON or YAML) and reloads them when they
change. Clients evaluate flags through:
  - the native API      POST /v1/evaluate/{flagKey}, POST /v1/evaluate
  - OFREP (OpenFeature) POST /ofrep/v1/evaluate/flags/{key}, POST /ofrep/v1/evaluate/flags
  - LaunchDarkly SDKs   GET /sdk/latest-all, GET /all (stream), POST /bulk, POST /diagnostic
and it reports on GET /healthz, GET /readyz and GET /metrics.";

const SERVE_AFTER_HELP: &str = "\
Settings come from the --config file, then FLAGD_* environment variables, then flags (each
overriding the one before). Environment variables (lists are comma-separated):
  FLAGD_CONFIG, FLAGD_LISTEN, FLAGD_GRPC_LISTEN, FLAGD_FILES, FLAGD_SDK_KEYS, FLAGD_LOG,
  FLAGD_LOG_FORMAT, FLAGD_REQUEST_LOG, FLAGD_ALLOW_MISSING,
  FLAGD_RELOAD_WATCH, FLAGD_RELOAD_DEBOUNCE_MS, FLAGD_RELOAD_POLL_INTERVAL_MS,
  FLAGD_HTTP_MAX_BODY_BYTES, FLAGD_HTTP_MAX_EVENTS_BODY_BYTES, FLAGD_HTTP_REQUEST_TIMEOUT_MS,
  FLAGD_HTTP_MAX_CONCURRENCY, FLAGD_HTTP_RETRY_AFTER_SECS, FLAGD_HTTP_STREAM_KEEPALIVE_MS,
  FLAGD_HTTP_STREAM_BUFFER, FLAGD_DATABASE_URL, FLAGD_ADMIN_KEY, FLAGD_UI_SESSION_TTL_SECS,
  FLAGD_SYNC_POLL_INTERVAL_MS, FLAGD_SYNC_BACKOFF_BASE_MS, FLAGD_EXPORT_DIR,
  FLAGD_EVENTS_SERVER_EVALUATIONS, FLAGD_EVENTS_FLUSH_INTERVAL_MS, FLAGD_EVENTS_MAX_IN_MEMORY,
  FLAGD_EVENTS_SPOOL_DIR, FLAGD_EVENTS_MAX_SPOOL_BYTES, FLAGD_REDIS_URL, FLAGD_REDIS_PREFIX,
  FLAGD_DESCRIPTORS, FLAGD_TLS_CERT, FLAGD_TLS_KEY
The configuration file is YAML with the same names: listen, grpc_listen, files, sdk_keys, log,
log_format, request_log, allow_missing,
reload.{watch,debounce_ms,poll_interval_ms}, http.{max_body_bytes,...}, database_url,
admin_key, ui_session_ttl_secs, sync.{poll_interval_ms,backoff_base_ms,big_segments_refresh_ms}, events.{exporters,server_evaluations,
spool_dir,...}, redis.{url,prefix}, descriptors, tls.{cert,key}; exporters are listed under events.exporters, each with a kind (file,
postgres, redis, nats, webhook) and its settings (see docs/events.md).

With --tls-cert and --tls-key (both, or neither) the HTTP port and the gRPC port speak TLS only,
with that PEM certificate chain and key; a renewed pair written over the files serves new
connections within seconds, and a bad one is refused with a warning while the old one keeps
serving (see docs/deploy.md). PostgreSQL and Redis URLs may ask for TLS themselves
(`?sslmode=require`, `rediss://`), trusting the system's CA certificates.

With --descriptors, the typed flags a protobuf descriptor set declares give their compiled
defaults as the last fallback of evaluation and their types to check writes and flag files
(see docs/descriptors.md); the file is followed like flag files and read again on SIGHUP.

With --database (root mode) flagd serves every environment of the database; each SDK key
selects its environment, and the admin API is under /api/v1.

The first line on standard output is `listening on ADDR` (useful with --listen 127.0.0.1:0);
with --grpc-listen, the second is `grpc listening on ADDR`. The gRPC service
(flags.v1.FlagEvaluatorService, grpc.health.v1 and server reflection) takes the same SDK keys,
in the `authorization` metadata entry.
SIGTERM or Ctrl-C stops accepting connections, ends streams and finishes requests in flight.

Example:
  flagd serve --file examples/flags.yaml --listen 0.0.0.0:8013";

const SYNC_AFTER_HELP: &str = "\
Creates each declared flag the environment lacks (off, its off variation and fallthrough serving
the compiled default; bool flags get [false, true], others their supported values or the default
alone), writes the description, tags and declaration of the ones it has without touching their
variations or targeting, and archives the flags it created earlier that are no longer declared
(never one it did not create). A declared type or layer that differs from the stored flag's is
refused, with nothing written. Prints one line of counts. See docs/descriptors.md.

Example:
  flagd sync --descriptors flags.pb --database postgres://localhost/flagd --env production";

const IMPORT_AFTER_HELP: &str = "\
Creates or replaces every flag and segment of the file in one transaction: all of them or, when
one is refused, none (the error names it). Items equal to the stored ones are left alone.

While it runs, standard error shows its progress: a bar on a terminal, otherwise a line as each
step starts (reading, checking, writing) and every tenth of a large one. At the end it prints one
line of counts (with --json, the full report instead), and each warning on standard error.

Example:
  flagd import --file flags.yaml --env production --database postgres://localhost/flagd
  imported into \"production\": 120 flags (100 created, 15 replaced, 5 unchanged), 3 segments \
(3 created, 0 replaced, 0 unchanged), 0 warnings";

const VALIDATE_AFTER_HELP: &str = "\
Prints each problem as `FILE: FIELD.PATH: message`, then a summary. Exits 0 when nothing is
wrong, 1 when anything is, including warnings about data that `serve` would load but that cannot
work as written (a variation index out of range, a prerequisite or segment that does not exist,
a prerequisite cycle, an unknown operator, a regular expression, date or version that never
matches). The messages are those the admin API gives for the same problems.";

/// `flagd`'s command line.
#[derive(Debug, Parser)]
#[command(name = "flagd", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve flag files over HTTP, reloading them when they change.
    #[command(after_long_help = SERVE_AFTER_HELP)]
    Serve(Box<ServeArgs>),
    /// Check flag files and print every problem with its field path.
    #[command(after_long_help = VALIDATE_AFTER_HELP)]
    Validate(ValidateArgs),
    /// Apply the database schema migrations that have not run yet, then exit.
    Migrate(DatabaseArgs),
    /// Import a LaunchDarkly flag file into an environment of the database.
    #[command(after_long_help = IMPORT_AFTER_HELP)]
    Import(ImportArgs),
    /// Print an environment of the database as a LaunchDarkly flag file (JSON).
    Export(ExportArgs),
    /// Create and update an environment's flags from the typed flags a descriptor set declares.
    #[command(after_long_help = SYNC_AFTER_HELP)]
    Sync(SyncArgs),
    /// `env`, `key` and `flag`: environments, API keys and flags, in the database or through a
    /// running flagd's admin API.
    #[command(flatten)]
    Manage(crate::manage::ManageCommand),
    /// GET a running flagd's /healthz and exit 0 if it answers 2xx, 1 otherwise (for container
    /// health checks where there is no curl).
    Health(HealthArgs),
}

/// `flagd health` arguments.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The URL to GET [default: http://127.0.0.1:PORT/healthz, PORT from FLAGD_LISTEN, else
    /// 8013]. An https URL's certificate is checked against the system's CA store.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// With https, do not check the server's certificate (the connection is still encrypted):
    /// for probing flagd's own TLS port, whose certificate names the service, not 127.0.0.1.
    #[arg(long)]
    pub insecure: bool,
    /// Give up after this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub timeout_ms: u64,
}

/// Where the database is, for the database subcommands. Its `Debug` hides the URL's password.
#[derive(Default, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (`postgres://user@host/db`) [env: FLAGD_DATABASE_URL].
    #[arg(long = "database", value_name = "URL")]
    pub database: Option<String>,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("database", &self.database.as_deref().map(redact_url))
            .finish()
    }
}

impl DatabaseArgs {
    /// The URL from the flag, else from `FLAGD_DATABASE_URL` in `env`.
    pub fn url(&self, env: &HashMap<String, String>) -> Option<String> {
        self.database
            .clone()
            .or_else(|| env.get("FLAGD_DATABASE_URL").cloned())
            .filter(|url| !url.trim().is_empty())
    }
}

/// `flagd import` arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The flag file (LaunchDarkly format, JSON or YAML).
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// The environment to import into (it must exist).
    #[arg(long, value_name = "KEY")]
    pub env: String,
    /// Print the full report as JSON (every key by outcome, and the warnings) instead of one
    /// line of counts.
    #[arg(long)]
    pub json: bool,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `flagd sync` arguments.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The descriptor set: an encoded FileDescriptorSet, written with its imports (`protoc
    /// --include_imports --descriptor_set_out=FILE.pb`, or protox).
    #[arg(long, value_name = "FILE.pb")]
    pub descriptors: PathBuf,
    /// The environment to sync (it must exist).
    #[arg(long, value_name = "KEY")]
    pub env: String,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `flagd export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The environment to export.
    #[arg(long, value_name = "KEY")]
    pub env: String,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `flagd serve` options; each overrides the configuration file and the environment. Its
/// `Debug` hides the secrets, as [`Config`]'s does.
#[derive(Default, Args)]
pub struct ServeArgs {
    /// YAML configuration file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Flag file to serve (JSON or YAML); repeat to merge several.
    #[arg(long = "file", short = 'f', value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8013; port 0 picks a free port].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the gRPC evaluation service, e.g. 127.0.0.1:8014 (port 0 picks a free
    /// port) [default: no gRPC].
    #[arg(long = "grpc-listen", value_name = "ADDR")]
    pub grpc_listen: Option<SocketAddr>,
    /// SDK key that clients must present; repeat for several. Prefer FLAGD_SDK_KEYS, which
    /// does not show in the process list.
    #[arg(long = "sdk-key", value_name = "KEY")]
    pub sdk_keys: Vec<String>,
    /// Log filter, e.g. `info` or `flagd=debug,info` [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// How log lines are written: `text`, or `json` for log collectors [default: text].
    #[arg(long = "log-format", value_name = "text|json")]
    pub log_format: Option<LogFormat>,
    /// One info line per answered request (method, path, status, latency) [default: true].
    #[arg(long = "request-log", value_name = "true|false")]
    pub request_log: Option<bool>,
    /// Start even when a --file does not exist yet, serving it once it appears.
    #[arg(long = "allow-missing")]
    pub allow_missing: bool,
    /// Interval of the content check that backs up the file watch, in milliseconds [default: 1000].
    #[arg(long, value_name = "MS")]
    pub poll_interval_ms: Option<u64>,
    /// Quiet time after a file event before reloading, in milliseconds [default: 50].
    #[arg(long, value_name = "MS")]
    pub debounce_ms: Option<u64>,
    /// Interval of SSE keep-alive comments, in milliseconds [default: 15000].
    #[arg(long, value_name = "MS")]
    pub keepalive_ms: Option<u64>,
    /// Root mode: serve every environment of this PostgreSQL database instead of flag files;
    /// migrations run at start.
    #[arg(long = "database", value_name = "URL")]
    pub database: Option<String>,
    /// Root mode: the first admin key for the admin API under /api/v1. Prefer
    /// FLAGD_ADMIN_KEY, which does not show in the process list.
    #[arg(long = "admin-key", value_name = "KEY")]
    pub admin_key: Option<String>,
    /// Root mode: how long a sign-in to the web UI at /ui lasts, in seconds [default: 28800].
    #[arg(long = "ui-session-ttl", value_name = "SECS")]
    pub ui_session_ttl_secs: Option<u64>,
    /// Export analytics events (SDKs' `/bulk` posts, and flagd's own evaluations when
    /// --server-evaluations says so) as JSON-lines files into this directory; the shortcut for
    /// a `file` exporter under `events.exporters` in the configuration file.
    #[arg(long = "export-dir", value_name = "DIR")]
    pub export_dir: Option<PathBuf>,
    /// Which of flagd's own evaluations (native API, OFREP) become events: `off`, `all`, or a
    /// sample rate between 0 and 1 [default: off].
    #[arg(long = "server-evaluations", value_name = "off|all|RATE", value_parser = Sampling::parse)]
    pub server_evaluations: Option<Sampling>,
    /// Write every served environment into this Redis in LaunchDarkly's layout, for
    /// LaunchDarkly SDKs in daemon mode. Prefer FLAGD_REDIS_URL when it holds a password.
    #[arg(long = "redis-url", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Key prefix in Redis; `{env}` stands for the environment [default: launchdarkly in file
    /// mode, launchdarkly:{env} in root mode].
    #[arg(long = "redis-prefix", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,
    /// Proxy mode: follow the flagd at this URL over its SDK stream and serve its data on
    /// every API, presenting the first --sdk-key to it; the last data keeps serving when it
    /// is gone.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstream: Option<String>,
    /// Typed flags declared in protobuf: an encoded FileDescriptorSet (`protoc
    /// --include_imports --descriptor_set_out`), whose compiled defaults are the last fallback
    /// and whose types writes must match; read again on SIGHUP.
    #[arg(long = "descriptors", value_name = "FILE.pb")]
    pub descriptors: Option<PathBuf>,
    /// Serve HTTP and gRPC over TLS with this PEM certificate chain (the server's certificate
    /// first); needs --tls-key. Reloaded when the file changes.
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, RSA or EC). Reloaded when the file changes.
    #[arg(long = "tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("config", &self.config)
            .field("files", &self.files)
            .field("listen", &self.listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("sdk_keys", &Redacted::keys(&self.sdk_keys))
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("request_log", &self.request_log)
            .field("allow_missing", &self.allow_missing)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("debounce_ms", &self.debounce_ms)
            .field("keepalive_ms", &self.keepalive_ms)
            .field("database", &self.database.as_deref().map(redact_url))
            .field("admin_key", &self.admin_key.as_ref().map(|_| Redacted::One))
            .field("ui_session_ttl_secs", &self.ui_session_ttl_secs)
            .field("export_dir", &self.export_dir)
            .field("server_evaluations", &self.server_evaluations)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("upstream", &self.upstream)
            .field("descriptors", &self.descriptors)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

/// `flagd validate` arguments.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Flag files to check together, as `serve` would merge them.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
}

impl ServeArgs {
    /// The effective configuration: the configuration file (from `--config` or `FLAGD_CONFIG`),
    /// then `env`, then these flags.
    pub fn resolve(&self, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let path = self
            .config
            .clone()
            .or_else(|| env.get("FLAGD_CONFIG").map(PathBuf::from));
        let mut config = match path {
            Some(path) => Config::from_yaml_file(&path)?,
            None => Config::default(),
        };
        config.apply_env(env)?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(listen) = self.grpc_listen {
            config.grpc_listen = Some(listen);
        }
        if !self.files.is_empty() {
            config.files.clone_from(&self.files);
        }
        if !self.sdk_keys.is_empty() {
            config.sdk_keys.clone_from(&self.sdk_keys);
        }
        if let Some(log) = &self.log {
            config.log.clone_from(log);
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        if let Some(on) = self.request_log {
            config.request_log = on;
        }
        if self.allow_missing {
            config.allow_missing = true;
        }
        if let Some(ms) = self.poll_interval_ms {
            config.reload.poll_interval_ms = ms;
        }
        if let Some(ms) = self.debounce_ms {
            config.reload.debounce_ms = ms;
        }
        if let Some(ms) = self.keepalive_ms {
            config.http.stream_keepalive_ms = ms;
        }
        if let Some(url) = &self.database {
            config.database_url = Some(url.clone());
        }
        if let Some(key) = &self.admin_key {
            config.admin_key = Some(key.clone());
        }
        if let Some(secs) = self.ui_session_ttl_secs {
            config.ui_session_ttl_secs = secs;
        }
        if let Some(dir) = &self.export_dir {
            config.add_export_dir(dir);
        }
        if let Some(url) = &self.redis_url {
            config.redis.url = Some(url.clone());
        }
        if let Some(prefix) = &self.redis_prefix {
            config.redis.prefix = Some(prefix.clone());
        }
        if let Some(url) = &self.upstream {
            config.upstream.url = Some(url.clone());
        }
        if let Some(sampling) = self.server_evaluations {
            config.events.server_evaluations = sampling;
        }
        if let Some(path) = &self.descriptors {
            config.descriptors = Some(path.clone());
        }
        if let Some(path) = &self.tls_cert {
            config.tls.cert = Some(path.clone());
        }
        if let Some(path) = &self.tls_key {
            config.tls.key = Some(path.clone());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn argument_debug_output_hides_secrets() {
        let serve = Cli::try_parse_from([
            "flagd",
            "serve",
            "--database",
            "postgres://u:db-s3cret@h/d",
            "--admin-key",
            "admin-s3cret",
            "--sdk-key",
            "sdk-s3cret",
        ])
        .unwrap();
        let import = Cli::try_parse_from([
            "flagd",
            "import",
            "--env",
            "p",
            "--file",
            "f.json",
            "--database",
            "postgres://u:db-s3cret@h/d",
        ])
        .unwrap();
        for shown in [format!("{serve:?}"), format!("{import:?}")] {
            for secret in ["db-s3cret", "admin-s3cret", "sdk-s3cret"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("postgres://u:***@h/d"), "{shown}");
        }
    }

    #[test]
    fn flags_override_env_override_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "listen: 127.0.0.1:1111\nfiles: [from-file.yaml]\nsdk_keys: [file-key]\nlog: warn\n"
        )
        .unwrap();
        let env: HashMap<String, String> = [
            ("FLAGD_CONFIG", file.path().to_str().unwrap()),
            ("FLAGD_LISTEN", "127.0.0.1:2222"),
            ("FLAGD_GRPC_LISTEN", "127.0.0.1:2223"),
            ("FLAGD_SDK_KEYS", "env-key"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();

        let config = ServeArgs::default().resolve(&env).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:2222");
        assert_eq!(config.grpc_listen.unwrap().to_string(), "127.0.0.1:2223");
        assert_eq!(config.sdk_keys, vec!["env-key"]);
        assert_eq!(config.files, vec![PathBuf::from("from-file.yaml")]);
        assert_eq!(config.log, "warn");

        let cli = Cli::try_parse_from([
            "flagd",
            "serve",
            "--listen",
            "127.0.0.1:3333",
            "--grpc-listen",
            "127.0.0.1:3334",
            "--file",
            "a.json",
            "-f",
            "b.yaml",
            "--sdk-key",
            "k1",
            "--sdk-key",
            "k2",
            "--poll-interval-ms",
            "25",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        let config = args.resolve(&env).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:3333");
        assert_eq!(config.grpc_listen.unwrap().to_string(), "127.0.0.1:3334");
        assert_eq!(
            config.files,
            vec![PathBuf::from("a.json"), PathBuf::from("b.yaml")]
        );
        assert_eq!(config.sdk_keys, vec!["k1", "k2"]);
        assert_eq!(config.reload.poll_interval_ms, 25);
        assert_eq!(config.log, "warn");
    }

    #[test]
    fn redis_flags_and_variables_set_the_redis_settings() {
        let env = HashMap::from([
            (
                "FLAGD_REDIS_URL".to_owned(),
                "redis://:pw@cache:6379".to_owned(),
            ),
            ("FLAGD_REDIS_PREFIX".to_owned(), "from-env".to_owned()),
        ]);
        let cli = Cli::try_parse_from(["flagd", "serve", "--redis-prefix", "ld:{env}"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        let config = args.resolve(&env).unwrap();
        assert_eq!(config.redis.url.as_deref(), Some("redis://:pw@cache:6379"));
        assert_eq!(config.redis.prefix.as_deref(), Some("ld:{env}"));
        assert!(
            !format!("{config:?}").contains("pw@"),
            "the password is not shown"
        );
    }

    #[test]
    fn tls_flags_override_the_variables() {
        let env = HashMap::from([
            ("FLAGD_TLS_CERT".to_owned(), "/env/tls.crt".to_owned()),
            ("FLAGD_TLS_KEY".to_owned(), "/env/tls.key".to_owned()),
        ]);
        let cli = Cli::try_parse_from(["flagd", "serve", "--tls-cert", "/flag/tls.crt"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        let config = args.resolve(&env).unwrap();
        assert_eq!(config.tls.cert, Some(PathBuf::from("/flag/tls.crt")));
        assert_eq!(config.tls.key, Some(PathBuf::from("/env/tls.key")));
    }

    #[test]
    fn database_flags_and_subcommands() {
        let cli = Cli::try_parse_from([
            "flagd",
            "serve",
            "--database",
            "postgres://db/flags",
            "--admin-key",
            "k",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        let config = args.resolve(&HashMap::new()).unwrap();
        assert_eq!(config.database_url.as_deref(), Some("postgres://db/flags"));
        assert_eq!(config.admin_key.as_deref(), Some("k"));

        let cli = Cli::try_parse_from(["flagd", "export", "--env", "production"]).unwrap();
        let Command::Export(args) = cli.command else {
            panic!("expected export")
        };
        assert_eq!(args.env, "production");
        assert_eq!(args.database.url(&HashMap::new()), None);
        let env: HashMap<String, String> = [(
            "FLAGD_DATABASE_URL".to_owned(),
            "postgres://env/db".to_owned(),
        )]
        .into();
        assert_eq!(
            args.database.url(&env).as_deref(),
            Some("postgres://env/db"),
            "the environment fills in a missing --database"
        );
        assert!(
            Cli::try_parse_from(["flagd", "import", "--env", "p"]).is_err(),
            "--file is required"
        );
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let args = ServeArgs {
            config: Some(PathBuf::from("/no/such/flagd.yaml")),
            ..ServeArgs::default()
        };
        let err = args.resolve(&HashMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read configuration file /no/such/flagd.yaml"
        );
        let source = std::error::Error::source(&err).expect("the I/O error is kept as the source");
        assert!(
            source.to_string().starts_with("No such file or directory"),
            "{source}"
        );
    }
}
