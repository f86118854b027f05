//! Logging, and traces for an OpenTelemetry collector.
//!
//! [`init_tracer`] installs flagd's `tracing` subscriber. Without an OTLP endpoint in the
//! environment it is exactly the log subscriber flagd has always had: one `fmt` layer behind
//! the `--log` filter, which disables the request and store spans (they are at debug level), so
//! no span is built and no OpenTelemetry code runs on any request. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, a second layer
//! turns those spans into OpenTelemetry spans, batched on a thread of their own and sent over
//! OTLP; the log layer keeps its own filter, so the log reads as before.
//!
//! Spans: one per HTTP request, named `{METHOD} {route}` (`POST /v1/evaluate/{flagKey}`), with
//! the route, method and status, the environment the request was served from, and for a
//! single-flag evaluation the flag key and the reason kind of its answer; a `traceparent`
//! header makes it a child of the caller's span. Every store call (PostgreSQL, Redis
//! big-segment memberships, admin writes, the SDK-key lookups behind the key cache) is a child
//! span of the request that made it, named `store.{operation}` (the decorators of
//! `telemetry::store`); background work (root mode's sync loop) makes store spans of its own.
//! The attributes are listed in `docs/tracing.md`.
//!
//! [`Telemetry`] is the guard: dropping it (or [`Telemetry::shutdown`]) exports the spans still
//! queued, after the server has answered its last request.

mod store;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::LogFormat;

pub(crate) use store::{TracedMembers, TracedStore};

/// The target of request spans. It is `tower_http`'s (as are their name, level and fields),
/// so log filters written for `tower_http::trace` keep working.
pub(crate) const REQUEST_TARGET: &str = "tower_http::trace::make_span";

/// The target of store-call spans.
pub(crate) const STORE_TARGET: &str = "flagd::store";

/// The `service.name` of flagd's spans unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// names another.
pub const DEFAULT_SERVICE_NAME: &str = "flagd";

/// How long the spans still queued at shutdown get to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether spans are exported. Set once, when the exporting subscriber is installed; request
/// handlers read it before doing anything for a collector, so without one they do nothing more
/// than this load.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// What the standard OpenTelemetry environment variables ask of flagd's tracing: whether to
/// export, and what to call the service. The exporter reads the rest of them itself
/// (`OTEL_EXPORTER_OTLP_PROTOCOL`, `_HEADERS`, `_TIMEOUT`, ...), and the SDK the sampler
/// (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`) and batching (`OTEL_BSP_*`) ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct TracingConfig {
    /// Export spans over OTLP: an endpoint is named, and neither `OTEL_SDK_DISABLED=true` nor
    /// `OTEL_TRACES_EXPORTER=none` turns it off.
    pub export: bool,
    /// The service name to set, when the environment names none (`None`: it does, and the SDK
    /// reads it from there).
    pub service_name: Option<String>,
}

/// The exporter's settings that it reads itself and quietly replaces by its default when it
/// was not built for what they say: the values it was built for, and how to say them.
const BUILT_IN: [(&str, &[&str], &str); 4] = [
    (
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        &["http/protobuf", "grpc"],
        "http/protobuf or grpc",
    ),
    (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        &["http/protobuf", "grpc"],
        "http/protobuf or grpc",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        &["none"],
        "none (no compression is built in)",
    ),
    (
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        &["none"],
        "none (no compression is built in)",
    ),
];

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `--log` is not a valid filter.
    #[error("invalid log filter {filter:?}")]
    LogFilter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        source: tracing_subscriber::filter::ParseError,
    },
    /// `OTEL_TRACES_EXPORTER` names an exporter flagd does not have.
    #[error(
        "OTEL_TRACES_EXPORTER={0:?} is not supported: flagd exports traces over OTLP (`otlp`), or not at all (`none`)"
    )]
    Exporter(String),
    /// A protocol or compression the exporter is not built with, which it would otherwise
    /// replace by its default without a word.
    #[error("{variable}={value:?} is not supported: flagd's OTLP exporter takes {supported}")]
    Unsupported {
        /// The variable.
        variable: &'static str,
        /// What it says.
        value: String,
        /// What it may say.
        supported: &'static str,
    },
    /// The OTLP exporter refused its configuration (a bad endpoint or protocol).
    #[error("cannot export traces")]
    Otlp(#[from] opentelemetry_otlp::ExporterBuildError),
    /// Another subscriber is already installed.
    #[error("cannot install the log subscriber")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

impl TracingConfig {
    /// Reads the standard variables from `env` (the process environment, as a map, so tests
    /// need not change their own).
    pub fn from_env(env: &HashMap<String, String>) -> Result<TracingConfig, TelemetryError> {
        let set = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter = set("OTEL_TRACES_EXPORTER").map(str::to_ascii_lowercase);
        let wanted = match exporter.as_deref() {
            None | Some("otlp") => true,
            Some("none") => false,
            Some(other) => return Err(TelemetryError::Exporter(other.to_owned())),
        };
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        let export = endpoint && wanted && !disabled;
        if export {
            for (variable, values, supported) in BUILT_IN {
                if let Some(value) = set(variable)
                    && !values.iter().any(|v| v.eq_ignore_ascii_case(value))
                {
                    return Err(TelemetryError::Unsupported {
                        variable,
                        value: value.to_owned(),
                        supported,
                    });
                }
            }
        }
        let named = set("OTEL_SERVICE_NAME").is_some()
            || set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
                attributes
                    .split(',')
                    .any(|pair| pair.split('=').next().map(str::trim) == Some("service.name"))
            });
        Ok(TracingConfig {
            export,
            service_name: (!named).then(|| DEFAULT_SERVICE_NAME.to_owned()),
        })
    }
}

/// The target of the one line logged per answered request.
pub(crate) const REQUEST_LOG_TARGET: &str = "flagd::request";

/// `seconds` in milliseconds, to the microsecond: what the request log writes.
pub(crate) fn millis(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e3
}

/// How flagd logs: the filter, the format and whether each request is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// An `EnvFilter` directive such as `info` or `flagd=debug,info`.
    pub filter: String,
    /// Text or JSON lines.
    pub format: LogFormat,
    /// One info line per answered request (target `flagd::request`).
    pub requests: bool,
}

impl LogSettings {
    /// The log settings of `config`.
    pub fn of(config: &crate::config::Config) -> LogSettings {
        LogSettings {
            filter: config.log.clone(),
            format: config.log_format,
            requests: config.request_log,
        }
    }

    /// The filter, with the request log turned off when it is not wanted (a filter's most
    /// specific directive wins, so this one does whatever `filter` says of `flagd`).
    fn env_filter(&self) -> Result<EnvFilter, TelemetryError> {
        let directives = if self.requests {
            self.filter.clone()
        } else {
            format!("{},{REQUEST_LOG_TARGET}=off", self.filter)
        };
        EnvFilter::try_new(&directives).map_err(|source| TelemetryError::LogFilter {
            filter: self.filter.clone(),
            source,
        })
    }

    /// The layer that writes log lines to `writer`, in this format.
    fn layer<S>(&self, writer: NonBlocking) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let layer = fmt::layer().with_writer(writer);
        match self.format {
            LogFormat::Text => Box::new(layer.with_ansi(std::io::stderr().is_terminal())),
            // One flat object per line: the event's fields beside `timestamp`, `level`,
            // `target` and `message`, without the spans around it (the request's fields are
            // on its own line).
            LogFormat::Json => Box::new(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            ),
        }
    }
}

/// Installs flagd's subscriber: the log as `log` says, written to stderr, and, when `config`
/// says so, the span exporter. Call it once, inside the tokio runtime that serves (the gRPC
/// transport runs its connection there), and keep the guard until the server has stopped.
pub fn init_tracer(log: &LogSettings, config: &TracingConfig) -> Result<Telemetry, TelemetryError> {
    let filter = log.env_filter()?;
    // Lines are handed to a thread that writes them to stderr, buffered: as many as are queued
    // in one write, and each at once when no more follow. A full queue (128k lines) holds the
    // logging thread back rather than lose lines.
    let (writer, log_guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("flagd-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    if !config.export {
        // Exactly the subscriber flagd has without tracing (what `fmt().with_env_filter()`
        // builds): the filter is global, so a span or event it disables costs one comparison
        // with the maximum level at its call site.
        tracing_subscriber::registry()
            .with(log.layer(writer))
            .with(filter)
            .try_init()?;
        return Ok(Telemetry {
            provider: None,
            _log: log_guard,
        });
    }
    let provider = tracer_provider(config)?;
    let tracer = provider.tracer("flagd");
    // Each layer filters for itself: the log as `--log` says, spans as `span_filter` says.
    let log_layer = log.layer(writer).with_filter(filter);
    let span_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Only what a collector shows: no source locations, thread or level attributes, and no
        // timing of each poll (`busy_ns`/`idle_ns`), which costs two clock reads per poll.
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        // Nothing in flagd reads OpenTelemetry's own current context; the spans' parents come
        // from the tracing spans.
        .with_context_activation(false)
        .with_filter(span_filter());
    tracing_subscriber::registry()
        .with(log_layer)
        .with(span_layer)
        .try_init()?;
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Telemetry {
        provider: Some(provider),
        _log: log_guard,
    })
}

/// The provider that batches finished spans and sends them over OTLP, on the transport
/// `OTEL_EXPORTER_OTLP_PROTOCOL` (or `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`) names
/// (`http/protobuf` unless it says `grpc`).
fn tracer_provider(config: &TracingConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().build()?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    if let Some(name) = &config.service_name {
        resource = resource.with_service_name(name.clone());
    }
    // The batch processor reads OTEL_BSP_* and the sampler OTEL_TRACES_SAMPLER(_ARG).
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// What the span layer takes: request and store spans, and warnings and errors, which become
/// events of the span they happen in (an error also marks it failed).
fn span_filter() -> Targets {
    Targets::new()
        .with_target(REQUEST_TARGET, LevelFilter::DEBUG)
        .with_target(STORE_TARGET, LevelFilter::DEBUG)
        // The request's own start and end events repeat what the span says.
        .with_target("tower_http::trace", LevelFilter::OFF)
        .with_default(LevelFilter::WARN)
}

/// The guard of [`init_tracer`]: exports what is still queued when dropped.
#[must_use = "dropping the guard stops exporting spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Writes out the log lines still queued when dropped, after the spans.
    _log: WorkerGuard,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued (waiting up to 5 s for the collector) and stops
    /// exporting. Blocks: call it outside async code, once the server has stopped.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        EXPORTING.store(false, Ordering::Relaxed);
        if let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(error = %e, "spans still queued at shutdown may not have been exported");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Whether spans are exported (see [`EXPORTING`]).
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The span of one request: `tower_http`'s (target [`REQUEST_TARGET`], name `request`, debug
/// level, fields `method`, `uri` and `version`), so log filters and formats stay as they were,
/// with room for what a collector shows. One call site per shape, so both are disabled
/// together by the log's filter; the values are given at creation, which costs the span layer
/// one visit instead of one per field recorded later.
macro_rules! request_span {
    ($method:expr, $uri:expr, $version:expr, $name:expr, $kind:expr, $http_method:expr, $route:expr) => {
        tracing::debug_span!(
            target: REQUEST_TARGET,
            "request",
            method = %$method,
            uri = %$uri,
            version = ?$version,
            otel.name = $name,
            otel.kind = $kind,
            otel.status_code = tracing::field::Empty,
            http.request.method = $http_method,
            http.route = $route,
            http.response.status_code = tracing::field::Empty,
            flagd.environment = tracing::field::Empty,
            feature_flag.key = tracing::field::Empty,
            flagd.reason.kind = tracing::field::Empty,
            flagd.flag.count = tracing::field::Empty,
        )
    };
}

/// The span of one request to `route` (its template). Without an exporter the collector's
/// fields stay empty, and the log leaves empty fields out. With one, the span is what a
/// collector expects of a server span: named `{METHOD} {route}`, with its method and route,
/// and the child of the caller's span when the request carries a W3C `traceparent`.
pub(crate) fn request_span(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    route: &str,
) -> Span {
    use tracing::field::Empty;
    if !exporting() {
        return request_span!(method, uri, version, Empty, Empty, Empty, Empty);
    }
    let span = request_span!(
        method,
        uri,
        version,
        tracing::field::display(format_args!("{method} {route}")),
        "server",
        method.as_str(),
        route
    );
    // The parent is fixed when the span is first entered, which the caller does next.
    if headers.contains_key(TRACEPARENT) {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        if parent.span().span_context().is_valid() {
            // Fails only when the span layer is missing, which `exporting` rules out.
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// W3C Trace Context's header.
const TRACEPARENT: &str = "traceparent";

/// Records the answer's status on a request span; a 5xx answer marks the span failed, as
/// OpenTelemetry's HTTP conventions say for servers.
pub(crate) fn end_request(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Records the environment that serves the current request, on its span.
pub(crate) fn record_environment(env: &str) {
    if exporting() {
        Span::current().record("flagd.environment", env);
    }
}

/// Records a single-flag evaluation's flag key and reason kind on the current request's span.
pub(crate) fn record_evaluation(flag_key: &str, reason_kind: &'static str) {
    if exporting() {
        let span = Span::current();
        span.record("feature_flag.key", flag_key);
        span.record("flagd.reason.kind", reason_kind);
    }
}

/// Records how many flags a bulk evaluation answered for, on the current request's span.
pub(crate) fn record_bulk(flags: usize) {
    if exporting() {
        Span::current().record("flagd.flag.count", flags);
    }
}

/// A request's headers, as OpenTelemetry's propagators read them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<TracingConfig, TelemetryError> {
        let env = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TracingConfig::from_env(&env)
    }

    fn check(vars: &[(&str, &str)], export: bool, service_name: Option<&str>) {
        let config = config(vars).unwrap();
        assert_eq!(config.export, export, "{vars:?}");
        assert_eq!(config.service_name.as_deref(), service_name, "{vars:?}");
    }

    #[test]
    fn the_standard_variables_turn_export_on_and_off() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        check(&[], false, Some("flagd"));
        check(&[endpoint], true, Some("flagd"));
        check(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")],
            false,
            Some("flagd"),
        );
        check(
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/v1/traces")],
            true,
            Some("flagd"),
        );
        check(
            &[endpoint, ("OTEL_SDK_DISABLED", "TRUE")],
            false,
            Some("flagd"),
        );
        check(
            &[endpoint, ("OTEL_SDK_DISABLED", "false")],
            true,
            Some("flagd"),
        );
        check(
            &[endpoint, ("OTEL_TRACES_EXPORTER", "none")],
            false,
            Some("flagd"),
        );
        check(
            &[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")],
            true,
            Some("flagd"),
        );
        let error = config(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(error.to_string().contains("\"zipkin\""), "{error}");
    }

    #[test]
    fn a_protocol_or_compression_that_is_not_built_in_is_refused() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        for accepted in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "HTTP/PROTOBUF"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ] {
            check(&[endpoint, accepted], true, Some("flagd"));
        }
        for refused in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd"),
        ] {
            let error = config(&[endpoint, refused]).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!("{}=", refused.0)),
                "{error}"
            );
        }
        // Without an endpoint nothing is exported, so nothing is checked.
        check(
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            false,
            Some("flagd"),
        );
    }

    #[test]
    fn a_service_name_from_the_environment_wins() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        check(&[endpoint, ("OTEL_SERVICE_NAME", "flags-eu")], true, None);
        check(
            &[
                endpoint,
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "team=core, service.name=flags-eu",
                ),
            ],
            true,
            None,
        );
        check(
            &[
                endpoint,
                ("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=x"),
            ],
            true,
            Some("flagd"),
        );
    }

    #[test]
    fn a_traceparent_is_read_from_the_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let parent = TraceContextPropagator::new().extract(&Headers(&headers));
        let context = parent.span().span_context().clone();
        assert!(context.is_valid());
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context.is_remote());
        let none = TraceContextPropagator::new().extract(&Headers(&HeaderMap::new()));
        assert!(!none.span().span_context().is_valid());
    }
}
