//! Server configuration: a plain deserializable struct, read from a YAML file, then overridden by
//! `FLAGD_*` environment variables, then by command-line flags. It only describes; the runtime
//! objects are built from it by `crate::server`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flags_store_postgres::redact_url;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The port flagd listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8013";

/// Everything `flagd serve` can be told. Its `Debug` hides the secrets: SDK keys, the admin key,
/// the database URL's password, and exporter settings (only their kinds show).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8013`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address of the gRPC evaluation service (`127.0.0.1:8014`; port 0 picks a free port);
    /// without it flagd serves no gRPC.
    pub grpc_listen: Option<SocketAddr>,
    /// Flag files (LaunchDarkly file-data-source format, JSON or YAML), merged.
    pub files: Vec<PathBuf>,
    /// SDK keys accepted on evaluation and SDK endpoints; empty means no key is required.
    pub sdk_keys: Vec<String>,
    /// How file changes are noticed.
    pub reload: ReloadConfig,
    /// Request protection and streaming.
    pub http: HttpConfig,
    /// Log filter in `tracing` syntax, e.g. `info` or `flagd=debug,info`.
    pub log: String,
    /// How log lines are written: `text` for people, `json` (one object per line) for log
    /// collectors.
    pub log_format: LogFormat,
    /// One line per answered request at info level (method, path, status, latency): on
    /// unless turned off here or by the log filter (`flagd::request=off`).
    pub request_log: bool,
    /// Start even when a flag file named does not exist, serving nothing from it until it
    /// appears; without it a missing file is a start-up error.
    pub allow_missing: bool,
    /// Root mode: serve every environment of this PostgreSQL database
    /// (`postgres://user@host/db`) instead of flag files.
    pub database_url: Option<String>,
    /// Root mode: the first admin key, accepted by the admin API without being stored.
    pub admin_key: Option<String>,
    /// Root mode: how long a sign-in to the web UI (`/ui`) lasts, in seconds.
    pub ui_session_ttl_secs: u64,
    /// Root mode: how the database's changes are followed.
    pub sync: SyncConfig,
    /// Analytics events: exporters, and whether flagd's own evaluations are events too.
    pub events: EventsConfig,
    /// Redis that every served environment is written into, in LaunchDarkly's layout.
    pub redis: RedisConfig,
    /// Proxy mode: the flagd whose data is served here.
    pub upstream: UpstreamConfig,
    /// An encoded `google.protobuf.FileDescriptorSet` declaring typed flags (see
    /// `docs/descriptors.md`): their compiled defaults become the last fallback of evaluation
    /// and their types are checked on writes and file loads. Followed like flag files (the
    /// `reload` settings), and read again at once on `SIGHUP`.
    pub descriptors: Option<PathBuf>,
    /// TLS on the HTTP and gRPC ports.
    pub tls: TlsConfig,
}

/// TLS on flagd's ports: a certificate and its key, both or neither. The files are followed
/// as flag files are (the `reload` settings), so a renewed certificate serves new connections
/// without a restart (see `docs/deploy.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first; without it (and `key`)
    /// flagd serves plain HTTP and gRPC.
    pub cert: Option<PathBuf>,
    /// PEM private key of the certificate (PKCS#8, RSA or EC).
    pub key: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO target: message key=value`, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields beside them.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected text or json"
            )),
        }
    }
}

/// Proxy mode: another flagd (a root, or a proxy itself) followed over its SDK stream, whose
/// data this one serves on every API. pbflags' cache settings are read here; those that cannot
/// apply to data pushed on a stream are accepted and said to have no effect (see
/// `docs/proxy.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The upstream's base URL (`http://root:8013`); without it flagd is not a proxy. The
    /// first of `sdk_keys` is presented to it.
    pub url: Option<String>,
    /// How long one request to the upstream may take before it counts as failed (a poll, or
    /// the answer to a stream's request), in milliseconds.
    pub fetch_timeout_ms: u64,
    /// While the stream is down, the upstream's `/sdk/latest-all` is polled at most this often,
    /// in milliseconds. The data is never dropped, however old.
    pub flag_ttl_ms: u64,
    /// Spread of the polling interval, in percent of it, so proxies do not poll in step.
    pub jitter_percent: u8,
    /// Base of the stream's reconnect backoff (1x, 2x, 4x, 8x of it, with jitter), in
    /// milliseconds.
    pub reconnect_base_ms: u64,
    /// No effect: kills arrive inside the flags, on the stream, as soon as they are made.
    pub kill_ttl_ms: Option<u64>,
    /// No effect: overrides arrive inside the flags, on the stream.
    pub override_ttl_ms: Option<u64>,
    /// No effect: every override of the environment is held, as the flags carry them.
    pub override_max_entries: Option<u64>,
}

impl Default for UpstreamConfig {
    fn default() -> UpstreamConfig {
        UpstreamConfig {
            url: None,
            fetch_timeout_ms: 10_000,
            flag_ttl_ms: 30_000,
            jitter_percent: 10,
            reconnect_base_ms: 1000,
            kill_ttl_ms: None,
            override_ttl_ms: None,
            override_max_entries: None,
        }
    }
}

impl UpstreamConfig {
    /// The settings given that have no effect on a proxy, by name.
    pub fn without_effect(&self) -> Vec<&'static str> {
        [
            ("kill_ttl_ms", self.kill_ttl_ms.is_some()),
            ("override_ttl_ms", self.override_ttl_ms.is_some()),
            ("override_max_entries", self.override_max_entries.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

/// Redis in LaunchDarkly's persistent-store layout, written with every environment's served
/// data (kills and overrides folded in, as SDKs receive it on the stream), so that LaunchDarkly
/// SDKs in daemon mode read what flagd serves.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`; without it nothing is written.
    pub url: Option<String>,
    /// The key prefix; `{env}` stands for the environment key. Default: LaunchDarkly's,
    /// `launchdarkly`, in file mode, and `launchdarkly:{env}` in root mode.
    pub prefix: Option<String>,
}

impl RedisConfig {
    /// The prefix template: `prefix`, or by default LaunchDarkly's, `launchdarkly`, in file and
    /// proxy mode and `launchdarkly:{env}` in root mode.
    pub fn template(&self, root_mode: bool) -> String {
        self.prefix.clone().unwrap_or_else(|| {
            let default = flags_store_redis::DEFAULT_PREFIX;
            if root_mode {
                format!("{default}:{{env}}")
            } else {
                default.to_owned()
            }
        })
    }
}

/// The Redis prefix of environment `env` under a prefix `template` (`{env}` standing for the
/// environment key).
pub fn env_prefix(template: &str, env: &str) -> String {
    template.replace("{env}", env)
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("files", &self.files)
            .field("sdk_keys", &Redacted::keys(&self.sdk_keys))
            .field("reload", &self.reload)
            .field("http", &self.http)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("request_log", &self.request_log)
            .field("allow_missing", &self.allow_missing)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("admin_key", &self.admin_key.as_ref().map(|_| Redacted::One))
            .field("ui_session_ttl_secs", &self.ui_session_ttl_secs)
            .field("sync", &self.sync)
            .field("events", &self.events)
            .field("redis", &self.redis)
            .field("upstream", &self.upstream)
            .field("descriptors", &self.descriptors)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Analytics events: where the events SDKs post to `/bulk` go, and whether flagd's own
/// evaluations (native API, OFREP) are exported too.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// flagd's own evaluations as events: `off` (the default), `all`, or a sample rate between
    /// 0 and 1.
    pub server_evaluations: Sampling,
    /// Where events go; each item has a `kind` (`file`, `postgres`, `redis`, `nats`,
    /// `webhook`) and that exporter's settings. None: events are checked, counted and dropped.
    pub exporters: Vec<ExporterSpec>,
    /// Bulk exporters (files, PostgreSQL) get a batch at least this often, in milliseconds.
    pub flush_interval_ms: u64,
    /// Events held in memory per exporter before they go to the spool (or, without one, the
    /// oldest are dropped and counted).
    pub max_events_in_memory: usize,
    /// Directory of the on-disk spool (one subdirectory per exporter), where events wait while
    /// their destination is down; replayed after a restart. None: memory only.
    pub spool_dir: Option<PathBuf>,
    /// Size bound of each exporter's spool, in bytes; past it the oldest events are dropped
    /// and counted.
    pub max_spool_bytes: u64,
    /// At shutdown, how long exporters get to deliver what is held before the rest is spooled,
    /// in milliseconds.
    pub shutdown_timeout_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            server_evaluations: Sampling::Off,
            exporters: Vec::new(),
            flush_interval_ms: 5_000,
            max_events_in_memory: 100_000,
            spool_dir: None,
            max_spool_bytes: 1 << 30,
            shutdown_timeout_ms: 30_000,
        }
    }
}

impl std::fmt::Debug for EventsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsConfig")
            .field("server_evaluations", &self.server_evaluations)
            .field(
                "exporters",
                &self
                    .exporters
                    .iter()
                    .map(|e| e.kind.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("max_events_in_memory", &self.max_events_in_memory)
            .field("spool_dir", &self.spool_dir)
            .field("max_spool_bytes", &self.max_spool_bytes)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .finish()
    }
}

/// One configured exporter: its `kind` and its own settings, checked when the server starts
/// (an unknown kind or setting is an error naming it).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ExporterSpec {
    /// `file`, `postgres`, `redis`, `nats` or `webhook`.
    pub kind: String,
    /// The exporter's settings, as written.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl ExporterSpec {
    /// The JSON-lines file exporter writing into `dir`, which `--export-dir` configures.
    pub fn jsonl_files(dir: &Path) -> ExporterSpec {
        let mut settings = serde_json::Map::new();
        settings.insert(
            "dir".to_owned(),
            serde_json::Value::from(dir.to_string_lossy().into_owned()),
        );
        settings.insert("format".to_owned(), serde_json::Value::from("jsonl"));
        ExporterSpec {
            kind: "file".to_owned(),
            settings,
        }
    }
}

/// Which of flagd's own evaluations become events.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Sampling {
    /// None (the default): only SDKs' events are exported.
    #[default]
    Off,
    /// Every evaluation.
    All,
    /// Each evaluation with this probability, between 0 and 1.
    Rate(f64),
}

impl Sampling {
    /// Reads `off`, `all`, or a rate between 0 and 1 (`0` is `off`, `1` is `all`).
    pub fn parse(text: &str) -> Result<Sampling, String> {
        match text.trim() {
            "off" | "false" | "none" => Ok(Sampling::Off),
            "all" | "true" => Ok(Sampling::All),
            other => match other.parse::<f64>() {
                Ok(rate) => Sampling::from_rate(rate),
                Err(_) => Err(format!(
                    "expected off, all, or a sample rate between 0 and 1, found {other:?}"
                )),
            },
        }
    }

    fn from_rate(rate: f64) -> Result<Sampling, String> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("a sample rate is between 0 and 1, found {rate}"));
        }
        Ok(if rate == 0.0 {
            Sampling::Off
        } else if rate == 1.0 {
            Sampling::All
        } else {
            Sampling::Rate(rate)
        })
    }
}

impl std::fmt::Display for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sampling::Off => f.write_str("off"),
            Sampling::All => f.write_str("all"),
            Sampling::Rate(rate) => write!(f, "{rate}"),
        }
    }
}

impl Serialize for Sampling {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Sampling::Rate(rate) => serializer.serialize_f64(*rate),
            other => serializer.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Sampling {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Sampling, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Rate(f64),
            Word(String),
        }
        let parsed = match Raw::deserialize(deserializer)? {
            Raw::Flag(false) => Ok(Sampling::Off),
            Raw::Flag(true) => Ok(Sampling::All),
            Raw::Rate(rate) => Sampling::from_rate(rate),
            Raw::Word(word) => Sampling::parse(&word),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// How a secret shows in `Debug` output.
pub(crate) enum Redacted {
    /// One secret.
    One,
    /// This many secrets.
    Many(usize),
}

impl Redacted {
    /// A list of secrets, by count.
    pub(crate) fn keys(keys: &[String]) -> Redacted {
        Redacted::Many(keys.len())
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Redacted::One => f.write_str("<redacted>"),
            Redacted::Many(n) => write!(f, "<{n} redacted>"),
        }
    }
}

/// Root mode: how the database's changes are followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Interval of the catch-up poll that backs up change notifications, in milliseconds.
    pub poll_interval_ms: u64,
    /// Base of the reconnect backoff (waits are 1x, 2x, 4x, 8x of it), in milliseconds.
    pub backoff_base_ms: u64,
    /// How often big segments' `synchronized_on` is written again while the store answers, in
    /// milliseconds; LaunchDarkly's SDKs call big segments stale once it is 2 minutes old.
    pub big_segments_refresh_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            poll_interval_ms: 5000,
            backoff_base_ms: 1000,
            big_segments_refresh_ms: 30_000,
        }
    }
}

/// Timing of the sync loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTiming {
    /// Catch-up poll interval (a backstop for missed notifications, and a health probe).
    pub poll_interval: Duration,
    /// Base of the reconnect backoff.
    pub backoff_base: Duration,
}

impl SyncConfig {
    /// As the sync loop takes it.
    pub fn timing(&self) -> SyncTiming {
        SyncTiming {
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            backoff_base: Duration::from_millis(self.backoff_base_ms),
        }
    }
}

/// How file changes are noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the files' directories with inotify (off for filesystems that do not support it;
    /// polling still notices changes).
    pub watch: bool,
    /// Quiet time after a filesystem event before the files are read, in milliseconds.
    pub debounce_ms: u64,
    /// How long a file written in place (not replaced by a rename) must go unmodified before it
    /// is loaded, so that it is not read while its writer pauses half-way, in milliseconds. The
    /// content poll waits the same way.
    pub settle_ms: u64,
    /// Interval of the content-hash check that backs up the filesystem watch, in milliseconds.
    pub poll_interval_ms: u64,
    /// A reload that deletes more than this share of the flags, in percent, is logged as a
    /// warning.
    pub warn_delete_percent: u8,
}

/// Request protection and streaming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes (evaluation requests).
    pub max_body_bytes: usize,
    /// Largest accepted analytics-event payload (`/bulk`, `/diagnostic`), in bytes.
    pub max_events_body_bytes: usize,
    /// Time limit for one request, in milliseconds (SSE streams are exempt).
    pub request_timeout_ms: u64,
    /// Requests handled at once before answering 429 (SSE streams and health checks are exempt).
    pub max_concurrency: usize,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_secs: u64,
    /// Interval of SSE keep-alive comments, in milliseconds.
    pub stream_keepalive_ms: u64,
    /// Change batches held for a slow stream before it is resynchronised with a fresh `put`.
    pub stream_buffer: usize,
    /// SDK streams (`GET /all`) open at once; one more is answered 503 with `Retry-After`.
    pub max_streams: usize,
    /// Time an evaluation request gets to send its body, from its start, in milliseconds.
    pub body_read_timeout_ms: u64,
    /// Time a connection gets to send a request's headers, in milliseconds. It also bounds how
    /// long a kept-alive connection may sit idle between requests.
    pub header_read_timeout_ms: u64,
    /// Connections held open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// At shutdown, how long flagd keeps answering on open connections (each answer telling
    /// the client to close) before it stops accepting and closes idle connections, in
    /// milliseconds. A client that reuses a kept-alive connection just then gets an answer, not
    /// a dropped connection.
    pub shutdown_drain_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: default_listen(),
            grpc_listen: None,
            files: Vec::new(),
            sdk_keys: Vec::new(),
            reload: ReloadConfig::default(),
            http: HttpConfig::default(),
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            request_log: true,
            allow_missing: false,
            database_url: None,
            admin_key: None,
            ui_session_ttl_secs: 8 * 60 * 60,
            sync: SyncConfig::default(),
            events: EventsConfig::default(),
            redis: RedisConfig::default(),
            upstream: UpstreamConfig::default(),
            descriptors: None,
            tls: TlsConfig::default(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8013))
}

impl Default for ReloadConfig {
    fn default() -> ReloadConfig {
        ReloadConfig {
            watch: true,
            debounce_ms: 50,
            settle_ms: 500,
            warn_delete_percent: 50,
            poll_interval_ms: 1000,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            max_body_bytes: 1024 * 1024,
            max_events_body_bytes: 10 * 1024 * 1024,
            request_timeout_ms: 10_000,
            max_concurrency: 1024,
            retry_after_secs: 1,
            stream_keepalive_ms: 15_000,
            stream_buffer: 64,
            max_streams: 5_000,
            body_read_timeout_ms: 2_000,
            header_read_timeout_ms: 5_000,
            max_connections: 10_000,
            shutdown_drain_ms: 500,
        }
    }
}

impl ReloadConfig {
    /// The debounce as a duration.
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    /// The settle time as a duration.
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }

    /// The poll interval as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

impl HttpConfig {
    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The keep-alive interval as a duration.
    pub fn stream_keepalive(&self) -> Duration {
        Duration::from_millis(self.stream_keepalive_ms)
    }

    /// The body-read timeout as a duration.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// The header-read timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The shutdown drain as a duration.
    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_millis(self.shutdown_drain_ms)
    }
}

/// Why the configuration could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An environment variable has a value of the wrong form.
    #[error("invalid value {value:?} for {name}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

/// The environment variables read, with what they set. Lists are comma-separated.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("FLAGD_CONFIG", "configuration file (like --config)"),
    ("FLAGD_LISTEN", "listen"),
    ("FLAGD_GRPC_LISTEN", "grpc_listen"),
    ("FLAGD_FILES", "files (comma-separated)"),
    ("FLAGD_SDK_KEYS", "sdk_keys (comma-separated)"),
    ("FLAGD_LOG", "log"),
    ("FLAGD_LOG_FORMAT", "log_format (text or json)"),
    ("FLAGD_REQUEST_LOG", "request_log (true or false)"),
    ("FLAGD_ALLOW_MISSING", "allow_missing (true or false)"),
    ("FLAGD_DATABASE_URL", "database_url"),
    ("FLAGD_ADMIN_KEY", "admin_key"),
    ("FLAGD_UI_SESSION_TTL_SECS", "ui_session_ttl_secs"),
    ("FLAGD_REDIS_URL", "redis.url"),
    ("FLAGD_REDIS_PREFIX", "redis.prefix"),
    ("FLAGD_UPSTREAM", "upstream.url"),
    ("FLAGD_DESCRIPTORS", "descriptors"),
    ("FLAGD_TLS_CERT", "tls.cert"),
    ("FLAGD_TLS_KEY", "tls.key"),
    ("FLAGD_SYNC_POLL_INTERVAL_MS", "sync.poll_interval_ms"),
    ("FLAGD_SYNC_BACKOFF_BASE_MS", "sync.backoff_base_ms"),
    ("FLAGD_RELOAD_WATCH", "reload.watch (true or false)"),
    ("FLAGD_RELOAD_DEBOUNCE_MS", "reload.debounce_ms"),
    ("FLAGD_RELOAD_POLL_INTERVAL_MS", "reload.poll_interval_ms"),
    ("FLAGD_RELOAD_SETTLE_MS", "reload.settle_ms"),
    ("FLAGD_HTTP_MAX_BODY_BYTES", "http.max_body_bytes"),
    (
        "FLAGD_HTTP_MAX_EVENTS_BODY_BYTES",
        "http.max_events_body_bytes",
    ),
    ("FLAGD_HTTP_REQUEST_TIMEOUT_MS", "http.request_timeout_ms"),
    ("FLAGD_HTTP_MAX_CONCURRENCY", "http.max_concurrency"),
    ("FLAGD_HTTP_RETRY_AFTER_SECS", "http.retry_after_secs"),
    ("FLAGD_HTTP_STREAM_KEEPALIVE_MS", "http.stream_keepalive_ms"),
    ("FLAGD_HTTP_STREAM_BUFFER", "http.stream_buffer"),
    ("FLAGD_HTTP_MAX_STREAMS", "http.max_streams"),
    (
        "FLAGD_HTTP_BODY_READ_TIMEOUT_MS",
        "http.body_read_timeout_ms",
    ),
    (
        "FLAGD_HTTP_HEADER_READ_TIMEOUT_MS",
        "http.header_read_timeout_ms",
    ),
    ("FLAGD_HTTP_MAX_CONNECTIONS", "http.max_connections"),
    ("FLAGD_HTTP_SHUTDOWN_DRAIN_MS", "http.shutdown_drain_ms"),
    (
        "FLAGD_EVENTS_SERVER_EVALUATIONS",
        "events.server_evaluations (off, all or a rate)",
    ),
    ("FLAGD_EVENTS_FLUSH_INTERVAL_MS", "events.flush_interval_ms"),
    ("FLAGD_EVENTS_MAX_IN_MEMORY", "events.max_events_in_memory"),
    ("FLAGD_EVENTS_SPOOL_DIR", "events.spool_dir"),
    ("FLAGD_EVENTS_MAX_SPOOL_BYTES", "events.max_spool_bytes"),
    (
        "FLAGD_EXPORT_DIR",
        "a JSON-lines file exporter into this directory",
    ),
];

impl Config {
    /// A configuration for tests serving `files`: a free port on 127.0.0.1, a 20 ms debounce,
    /// a 100 ms poll and 200 ms keep-alives, so that tests wait for conditions, not for timers.
    pub fn for_tests(files: Vec<PathBuf>) -> Config {
        let mut config = Config {
            files,
            ..Config::default()
        };
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.reload.debounce_ms = 20;
        config.reload.settle_ms = 100;
        config.reload.poll_interval_ms = 100;
        config.http.stream_keepalive_ms = 200;
        config.http.shutdown_drain_ms = 0;
        config.sync.poll_interval_ms = 200;
        config.sync.backoff_base_ms = 100;
        config.sync.big_segments_refresh_ms = 500;
        config
    }

    /// Adds the JSON-lines file exporter into `dir` (`--export-dir`), unless one is already
    /// configured for it.
    pub fn add_export_dir(&mut self, dir: &Path) {
        let spec = ExporterSpec::jsonl_files(dir);
        if !self.events.exporters.contains(&spec) {
            self.events.exporters.push(spec);
        }
    }

    /// Reads a YAML configuration file (missing fields take their defaults).
    pub fn from_yaml_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml_str(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Reads YAML configuration text; an empty document is the default configuration.
    pub fn from_yaml_str(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_norway::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `FLAGD_*` variables from `env` (pass `std::env::vars()` in production; tests pass
    /// their own map so they need not touch the process environment).
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.trim().parse().map_err(|e: T::Err| ConfigError::Env {
                name: name.to_owned(),
                value: value.to_owned(),
                message: e.to_string(),
            })
        }
        fn list(value: &str) -> impl Iterator<Item = String> + '_ {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        }
        for (name, value) in env {
            match name.as_str() {
                "FLAGD_LISTEN" => self.listen = num(name, value)?,
                "FLAGD_GRPC_LISTEN" => self.grpc_listen = Some(num(name, value)?),
                "FLAGD_FILES" => self.files = list(value).map(PathBuf::from).collect(),
                "FLAGD_SDK_KEYS" => self.sdk_keys = list(value).collect(),
                "FLAGD_LOG" => self.log = value.clone(),
                "FLAGD_LOG_FORMAT" => self.log_format = num(name, value)?,
                "FLAGD_REQUEST_LOG" => self.request_log = num(name, value)?,
                "FLAGD_ALLOW_MISSING" => self.allow_missing = num(name, value)?,
                "FLAGD_DATABASE_URL" => self.database_url = Some(value.clone()),
                "FLAGD_ADMIN_KEY" => self.admin_key = Some(value.clone()),
                "FLAGD_UI_SESSION_TTL_SECS" => self.ui_session_ttl_secs = num(name, value)?,
                "FLAGD_REDIS_URL" => self.redis.url = Some(value.clone()),
                "FLAGD_REDIS_PREFIX" => self.redis.prefix = Some(value.clone()),
                "FLAGD_UPSTREAM" => self.upstream.url = Some(value.clone()),
                "FLAGD_DESCRIPTORS" => self.descriptors = Some(PathBuf::from(value)),
                "FLAGD_TLS_CERT" => self.tls.cert = Some(PathBuf::from(value)),
                "FLAGD_TLS_KEY" => self.tls.key = Some(PathBuf::from(value)),
                "FLAGD_SYNC_POLL_INTERVAL_MS" => self.sync.poll_interval_ms = num(name, value)?,
                "FLAGD_SYNC_BACKOFF_BASE_MS" => self.sync.backoff_base_ms = num(name, value)?,
                "FLAGD_RELOAD_WATCH" => self.reload.watch = num(name, value)?,
                "FLAGD_RELOAD_DEBOUNCE_MS" => self.reload.debounce_ms = num(name, value)?,
                "FLAGD_RELOAD_POLL_INTERVAL_MS" => self.reload.poll_interval_ms = num(name, value)?,
                "FLAGD_RELOAD_SETTLE_MS" => self.reload.settle_ms = num(name, value)?,
                "FLAGD_HTTP_MAX_BODY_BYTES" => self.http.max_body_bytes = num(name, value)?,
                "FLAGD_HTTP_MAX_EVENTS_BODY_BYTES" => {
                    self.http.max_events_body_bytes = num(name, value)?
                }
                "FLAGD_HTTP_REQUEST_TIMEOUT_MS" => self.http.request_timeout_ms = num(name, value)?,
                "FLAGD_HTTP_MAX_CONCURRENCY" => self.http.max_concurrency = num(name, value)?,
                "FLAGD_HTTP_RETRY_AFTER_SECS" => self.http.retry_after_secs = num(name, value)?,
                "FLAGD_HTTP_STREAM_KEEPALIVE_MS" => {
                    self.http.stream_keepalive_ms = num(name, value)?
                }
                "FLAGD_HTTP_STREAM_BUFFER" => self.http.stream_buffer = num(name, value)?,
                "FLAGD_HTTP_MAX_STREAMS" => self.http.max_streams = num(name, value)?,
                "FLAGD_HTTP_BODY_READ_TIMEOUT_MS" => {
                    self.http.body_read_timeout_ms = num(name, value)?
                }
                "FLAGD_HTTP_HEADER_READ_TIMEOUT_MS" => {
                    self.http.header_read_timeout_ms = num(name, value)?
                }
                "FLAGD_HTTP_MAX_CONNECTIONS" => self.http.max_connections = num(name, value)?,
                "FLAGD_HTTP_SHUTDOWN_DRAIN_MS" => self.http.shutdown_drain_ms = num(name, value)?,
                "FLAGD_EVENTS_SERVER_EVALUATIONS" => {
                    self.events.server_evaluations =
                        Sampling::parse(value).map_err(|message| ConfigError::Env {
                            name: name.to_owned(),
                            value: value.to_owned(),
                            message,
                        })?;
                }
                "FLAGD_EVENTS_FLUSH_INTERVAL_MS" => {
                    self.events.flush_interval_ms = num(name, value)?
                }
                "FLAGD_EVENTS_MAX_IN_MEMORY" => {
                    self.events.max_events_in_memory = num(name, value)?
                }
                "FLAGD_EVENTS_SPOOL_DIR" => self.events.spool_dir = Some(PathBuf::from(value)),
                "FLAGD_EVENTS_MAX_SPOOL_BYTES" => self.events.max_spool_bytes = num(name, value)?,
                "FLAGD_EXPORT_DIR" => self.add_export_dir(Path::new(value)),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config {
            sdk_keys: vec!["sdk-secret-1".to_owned(), "sdk-secret-2".to_owned()],
            database_url: Some("postgres://flagd:db-s3cret@db.internal:5432/flags".to_owned()),
            admin_key: Some("admin-s3cret".to_owned()),
            ..Config::default()
        };
        for shown in [format!("{config:?}"), format!("{config:#?}")] {
            for secret in ["sdk-secret-1", "sdk-secret-2", "db-s3cret", "admin-s3cret"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(
                shown.contains("postgres://flagd:***@db.internal:5432/flags"),
                "{shown}"
            );
            assert!(shown.contains("<2 redacted>"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        let plain = format!("{:?}", Config::default());
        assert!(plain.contains("database_url: None") && plain.contains("admin_key: None"));
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn yaml_then_env() {
        let mut config = Config::from_yaml_str(
            "listen: 0.0.0.0:9000\ngrpc_listen: 0.0.0.0:9001\nfiles: [a.yaml]\nreload:\n  poll_interval_ms: 200\nhttp:\n  max_concurrency: 7\n",
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.grpc_listen.unwrap().to_string(), "0.0.0.0:9001");
        assert_eq!(Config::default().grpc_listen, None, "no gRPC unless asked");
        assert_eq!(
            config.reload.debounce_ms, 50,
            "unset fields keep their default"
        );
        config
            .apply_env(&env(&[
                ("FLAGD_LISTEN", "127.0.0.1:0"),
                ("FLAGD_GRPC_LISTEN", "127.0.0.1:8014"),
                ("FLAGD_SDK_KEYS", "k1, k2,"),
                ("FLAGD_HTTP_MAX_CONCURRENCY", "9"),
                ("UNRELATED", "x"),
            ]))
            .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:0");
        assert_eq!(config.grpc_listen.unwrap().to_string(), "127.0.0.1:8014");
        assert_eq!(config.sdk_keys, vec!["k1", "k2"]);
        assert_eq!(config.http.max_concurrency, 9);
        assert_eq!(config.files, vec![PathBuf::from("a.yaml")]);
        assert_eq!(config.reload.poll_interval_ms, 200);
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::default()
            .apply_env(&env(&[("FLAGD_HTTP_STREAM_BUFFER", "many")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value \"many\" for FLAGD_HTTP_STREAM_BUFFER: invalid digit found in string"
        );
        let err = Config::from_yaml_str("lisen: x\n").unwrap_err();
        assert!(err.contains("unknown field `lisen`"), "{err}");
        assert_eq!(Config::from_yaml_str("").unwrap(), Config::default());
    }

    #[test]
    fn root_mode_settings_from_yaml_and_env() {
        let mut config = Config::from_yaml_str(
            "database_url: postgres://db/flags\nsync:\n  poll_interval_ms: 700\n",
        )
        .unwrap();
        assert_eq!(config.database_url.as_deref(), Some("postgres://db/flags"));
        assert_eq!(config.sync.poll_interval_ms, 700);
        assert_eq!(config.sync.backoff_base_ms, 1000, "unset: the default");
        config
            .apply_env(&env(&[
                ("FLAGD_DATABASE_URL", "postgres://other/flags"),
                ("FLAGD_ADMIN_KEY", "secret"),
                ("FLAGD_SYNC_BACKOFF_BASE_MS", "250"),
            ]))
            .unwrap();
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://other/flags")
        );
        assert_eq!(config.admin_key.as_deref(), Some("secret"));
        let timing = config.sync.timing();
        assert_eq!(timing.backoff_base, Duration::from_millis(250));
        assert_eq!(timing.poll_interval, Duration::from_millis(700));
    }

    #[test]
    fn events_settings_from_yaml_env_and_the_export_dir_shortcut() {
        let mut config = Config::from_yaml_str(
            "events:\n  server_evaluations: 0.5\n  spool_dir: /var/spool/flagd\n  exporters:\n    - kind: webhook\n      url: http://hooks.internal/flagd\n      secret: hook-s3cret\n",
        )
        .unwrap();
        assert_eq!(config.events.server_evaluations, Sampling::Rate(0.5));
        assert_eq!(config.events.exporters[0].kind, "webhook");
        assert_eq!(
            config.events.exporters[0].settings["url"],
            "http://hooks.internal/flagd"
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("hook-s3cret"), "{shown}");
        assert!(shown.contains(r#"exporters: ["webhook"]"#), "{shown}");
        config
            .apply_env(&env(&[
                ("FLAGD_EVENTS_SERVER_EVALUATIONS", "all"),
                ("FLAGD_EXPORT_DIR", "/data/events"),
            ]))
            .unwrap();
        assert_eq!(config.events.server_evaluations, Sampling::All);
        config.add_export_dir(Path::new("/data/events"));
        assert_eq!(
            config.events.exporters.len(),
            2,
            "the same directory twice is one exporter"
        );
        assert_eq!(
            serde_json::to_value(&config.events.exporters[1]).unwrap(),
            serde_json::json!({"kind": "file", "dir": "/data/events", "format": "jsonl"})
        );
        let err = Config::default()
            .apply_env(&env(&[("FLAGD_EVENTS_SERVER_EVALUATIONS", "2")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value \"2\" for FLAGD_EVENTS_SERVER_EVALUATIONS: a sample rate is between 0 and 1, found 2"
        );
        let err = Config::from_yaml_str("events:\n  exporter: []\n").unwrap_err();
        assert!(err.contains("unknown field `exporter`"), "{err}");
    }

    #[test]
    fn the_example_events_configuration_reads_and_its_exporters_build() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/events.yaml");
        let config = Config::from_yaml_file(&path).unwrap();
        assert_eq!(config.events.server_evaluations, Sampling::All);
        assert_eq!(config.events.exporters.len(), 1);
        for spec in &config.events.exporters {
            flags_export::ExporterConfig::from_parts(&spec.kind, &spec.settings).unwrap();
        }
    }

    #[test]
    fn tls_settings_from_yaml_then_env() {
        let mut config =
            Config::from_yaml_str("tls:\n  cert: /etc/flagd/tls.crt\n  key: /etc/flagd/tls.key\n")
                .unwrap();
        assert_eq!(
            config.tls.cert.as_deref(),
            Some(Path::new("/etc/flagd/tls.crt"))
        );
        assert_eq!(
            config.tls.key.as_deref(),
            Some(Path::new("/etc/flagd/tls.key"))
        );
        config
            .apply_env(&env(&[("FLAGD_TLS_CERT", "/run/secrets/new.crt")]))
            .unwrap();
        assert_eq!(
            config.tls.cert.as_deref(),
            Some(Path::new("/run/secrets/new.crt"))
        );
        assert_eq!(
            config.tls.key.as_deref(),
            Some(Path::new("/etc/flagd/tls.key")),
            "the key the variables do not name stays"
        );
        config
            .apply_env(&env(&[("FLAGD_TLS_KEY", "/run/secrets/new.key")]))
            .unwrap();
        assert_eq!(
            config.tls.key.as_deref(),
            Some(Path::new("/run/secrets/new.key"))
        );
        assert_eq!(
            Config::default().tls,
            TlsConfig::default(),
            "no TLS unless asked"
        );
        let err = Config::from_yaml_str("tls:\n  certificate: x\n").unwrap_err();
        assert!(err.contains("unknown field `certificate`"), "{err}");
    }

    #[test]
    fn default_listen_matches_the_documented_one() {
        assert_eq!(Config::default().listen.to_string(), DEFAULT_LISTEN);
    }
}
