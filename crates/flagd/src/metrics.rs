//! Prometheus metrics, held per server (not in a global registry) so every test app counts alone.
//!
//! Label values are bounded: HTTP routes are the matched route templates, never raw paths; flag
//! labels only ever name flags that exist in the served data; event kinds are LaunchDarkly's
//! known kinds or `other`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, RwLock};

use axum::http::{Method, StatusCode};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    grpc_requests: Family<GrpcLabels, Counter>,
    grpc_duration: Family<GrpcMethodLabels, Histogram>,
    evaluations: Family<EvalLabels, Counter>,
    streams_open: Gauge,
    connections_open: Gauge,
    stream_resyncs: Counter,
    reloads: Counter,
    reload_errors: Counter,
    events_received: Family<KindLabels, Counter>,
    flags_loaded: Gauge,
    redis_writes: Counter,
    redis_rewrites: Counter,
    redis_write_errors: Counter,
    segments_loaded: Gauge,
    last_reload_success: Gauge<f64, AtomicU64>,
    /// Evaluation counters already created, by flag then reason, so that counting an
    /// evaluation builds no label strings once its series exists.
    evaluation_handles: RwLock<HashMap<Box<str>, ReasonCounters, ahash::RandomState>>,
    /// Where the exporters' numbers are read at each scrape, once exporters run.
    export_source: Arc<OnceLock<ExportSource>>,
}

/// One exporter's numbers, as the exporter scheduler keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSeries {
    /// The exporter's name (never a secret).
    pub exporter: String,
    /// Events handed to it.
    pub received: u64,
    /// Events it delivered.
    pub exported: u64,
    /// Events offered again after a failed export.
    pub retried: u64,
    /// Events written to its spool.
    pub spooled: u64,
    /// Events dropped (spool full, or a destination that refused them for good).
    pub dropped: u64,
    /// Events waiting in memory.
    pub queue_depth: u64,
    /// Events waiting in its spool.
    pub spool_records: u64,
    /// Size of its spool, in bytes.
    pub spool_bytes: u64,
}

/// Reads every exporter's numbers.
pub type ExportSource = Box<dyn Fn() -> Vec<ExportSeries> + Send + Sync>;

/// Writes the exporters' numbers at each scrape, read from the scheduler then, so they cost
/// nothing between scrapes.
struct ExportCollector(Arc<OnceLock<ExportSource>>);

impl std::fmt::Debug for ExportCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExporterLabels {
    exporter: String,
}

impl Collector for ExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(source) = self.0.get() else {
            return Ok(());
        };
        let series = source();
        type Read = fn(&ExportSeries) -> u64;
        let counters: [(&str, &str, Read); 5] = [
            (
                "flagd_export_received",
                "Events handed to each exporter",
                |s| s.received,
            ),
            (
                "flagd_export_exported",
                "Events each exporter delivered",
                |s| s.exported,
            ),
            (
                "flagd_export_retried",
                "Events offered again to each exporter after a failed export",
                |s| s.retried,
            ),
            (
                "flagd_export_spooled",
                "Events each exporter's spool took while its destination was slow or down",
                |s| s.spooled,
            ),
            (
                "flagd_export_dropped",
                "Events each exporter lost: past its spool's bound, or refused for good",
                |s| s.dropped,
            ),
        ];
        for (name, help, read) in counters {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::<u64>::new(0).metric_type(),
            )?;
            for s in &series {
                let labels = ExporterLabels {
                    exporter: s.exporter.clone(),
                };
                ConstCounter::new(read(s)).encode(metric.encode_family(&labels)?)?;
            }
        }
        let gauges: [(&str, &str, Read); 3] = [
            (
                "flagd_export_queue_depth",
                "Events waiting in memory for each exporter",
                |s| s.queue_depth,
            ),
            (
                "flagd_export_spool_records",
                "Events waiting in each exporter's spool",
                |s| s.spool_records,
            ),
            (
                "flagd_export_spool_bytes",
                "Size of each exporter's spool, in bytes",
                |s| s.spool_bytes,
            ),
        ];
        for (name, help, read) in gauges {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstGauge::<i64>::new(0).metric_type(),
            )?;
            for s in &series {
                let labels = ExporterLabels {
                    exporter: s.exporter.clone(),
                };
                let value = i64::try_from(read(s)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The evaluation counters of one flag, by LaunchDarkly reason kind.
type ReasonCounters = Vec<(&'static str, Counter)>;

/// The metric handles of one route, made when the router is built so that a request finds its
/// series without building label strings. A series is still created on its first use, as
/// before: a route that never answered shows no series.
pub(crate) struct RouteMetrics {
    route: &'static str,
    requests: Family<HttpLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    duration: OnceLock<Histogram>,
    /// Request counters already created, by method label and status; a route answers few kinds.
    counters: RwLock<Vec<(&'static str, StatusCode, Counter)>>,
}

impl RouteMetrics {
    /// Counts one answer of this route and its time to the response head.
    pub(crate) fn record(&self, method: &Method, status: StatusCode, seconds: f64) {
        let method = method_label(method);
        self.duration
            .get_or_init(|| {
                self.durations
                    .get_or_create(&RouteLabels {
                        route: self.route.to_owned(),
                    })
                    .clone()
            })
            .observe(seconds);
        {
            // A poisoned lock only means a panic elsewhere mid-update; the list is still whole.
            // Counted under the read lock: the usual case creates nothing and clones nothing.
            let counters = self
                .counters
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, _, counter)) = counters
                .iter()
                .find(|(m, s, _)| *m == method && *s == status)
            {
                counter.inc();
                return;
            }
        }
        let counter = self
            .requests
            .get_or_create(&HttpLabels {
                route: self.route.to_owned(),
                method: method.to_owned(),
                status: status.as_u16().to_string(),
            })
            .clone();
        let mut counters = self
            .counters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !counters
            .iter()
            .any(|(m, s, _)| *m == method && *s == status)
        {
            counters.push((method, status, counter.clone()));
        }
        counter.inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvalLabels {
    flag: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// LaunchDarkly event kinds counted under their own name; anything else counts as `other` so a
/// client cannot create unbounded label values.
const KNOWN_EVENT_KINDS: &[&str] = &[
    "feature",
    "debug",
    "custom",
    "identify",
    "index",
    "summary",
    "metrics",
    "migration_op",
    "diagnostic-init",
    "diagnostic",
];

/// The `method` label of a request: the method's name for the methods HTTP defines, `other` for
/// any other token a client sends, so that clients cannot create label values.
pub(crate) fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// The `flag` label of evaluations of flags that do not exist.
pub const UNKNOWN_FLAG: &str = "(unknown)";

fn duration_histogram() -> Histogram {
    // 0.1 ms to ~3.3 s: evaluation requests sit at the bottom, slow clients at the top.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        let grpc_duration = Family::<GrpcMethodLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let evaluations = Family::<EvalLabels, Counter>::default();
        let streams_open = Gauge::default();
        let connections_open = Gauge::default();
        let stream_resyncs = Counter::default();
        let reloads = Counter::default();
        let reload_errors = Counter::default();
        let events_received = Family::<KindLabels, Counter>::default();
        let flags_loaded = Gauge::default();
        let redis_writes = Counter::default();
        let redis_rewrites = Counter::default();
        let redis_write_errors = Counter::default();
        let segments_loaded = Gauge::default();
        let last_reload_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "flagd_http_requests",
            "HTTP requests by matched route template, method and status code",
            http_requests.clone(),
        );
        registry.register(
            "flagd_http_request_duration_seconds",
            "Time to produce the response head, by matched route template",
            http_duration.clone(),
        );
        registry.register(
            "flagd_grpc_requests",
            "gRPC calls of the evaluation service by method and status code",
            grpc_requests.clone(),
        );
        registry.register(
            "flagd_grpc_request_duration_seconds",
            "Time to answer a gRPC call of the evaluation service, by method",
            grpc_duration.clone(),
        );
        registry.register(
            "flagd_evaluations",
            "Flag evaluations by flag key and LaunchDarkly reason kind",
            evaluations.clone(),
        );
        registry.register(
            "flagd_streams_open",
            "Open SSE streams",
            streams_open.clone(),
        );
        registry.register(
            "flagd_http_connections_open",
            "HTTP connections open, SSE streams included",
            connections_open.clone(),
        );
        registry.register(
            "flagd_stream_resyncs",
            "Streams that fell behind and were sent a fresh put",
            stream_resyncs.clone(),
        );
        registry.register(
            "flagd_reloads",
            "Successful loads of flag data",
            reloads.clone(),
        );
        registry.register(
            "flagd_reload_errors",
            "Loads of flag data that failed (the last good data kept serving)",
            reload_errors.clone(),
        );
        registry.register(
            "flagd_events_received",
            "Analytics events received from SDKs, by event kind",
            events_received.clone(),
        );
        registry.register(
            "flagd_flags",
            "Flags in the served data",
            flags_loaded.clone(),
        );
        registry.register(
            "flagd_redis_writes",
            "Writes into Redis (--redis-url): an environment's data whole, or the items of its changes",
            redis_writes.clone(),
        );
        registry.register(
            "flagd_redis_rewrites",
            "Environments' data written into Redis whole: at first, and again after a lagging \
             change feed or a Redis that failed or lost it",
            redis_rewrites.clone(),
        );
        registry.register(
            "flagd_redis_write_errors",
            "Failed attempts to write an environment's data into Redis",
            redis_write_errors.clone(),
        );
        registry.register(
            "flagd_segments",
            "Segments in the served data",
            segments_loaded.clone(),
        );
        registry.register(
            "flagd_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load",
            last_reload_success.clone(),
        );
        let export_source = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ExportCollector(Arc::clone(&export_source))));
        registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        Metrics {
            registry,
            http_requests,
            http_duration,
            grpc_requests,
            grpc_duration,
            evaluations,
            streams_open,
            connections_open,
            stream_resyncs,
            reloads,
            reload_errors,
            events_received,
            flags_loaded,
            redis_writes,
            redis_rewrites,
            redis_write_errors,
            segments_loaded,
            last_reload_success,
            evaluation_handles: RwLock::default(),
            export_source,
        }
    }

    /// Reports the exporters' numbers from `source` at every scrape from now on (set once,
    /// when the exporters start).
    pub(crate) fn export_from(&self, source: ExportSource) {
        // A second call would mean two schedulers for one server; the first keeps reporting.
        let _ = self.export_source.set(source);
    }

    /// The handles of the route `route` (a route template, or `unmatched`).
    pub(crate) fn route(&self, route: &'static str) -> RouteMetrics {
        RouteMetrics {
            route,
            requests: self.http_requests.clone(),
            durations: self.http_duration.clone(),
            duration: OnceLock::new(),
            counters: RwLock::default(),
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would mean a broken encoder, and an
        // empty answer is better than a panic in a scrape.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub(crate) fn http_request(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method_label(method).to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts one gRPC call of `method` (a method of the evaluation service) that ended with
    /// `code` (a gRPC status code's name) after `seconds`.
    pub(crate) fn grpc_request(&self, method: &'static str, code: &'static str, seconds: f64) {
        self.grpc_requests
            .get_or_create(&GrpcLabels { method, code })
            .inc();
        self.grpc_duration
            .get_or_create(&GrpcMethodLabels { method })
            .observe(seconds);
    }

    /// Counts one evaluation of `flag` (a flag of the served data, or [`UNKNOWN_FLAG`]) with
    /// the LaunchDarkly reason kind `reason`.
    pub(crate) fn evaluation(&self, flag: &str, reason: &'static str) {
        {
            // Counted under the read lock: the usual case creates nothing and clones nothing.
            let handles = self
                .evaluation_handles
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let known = handles
                .get(flag)
                .and_then(|reasons| reasons.iter().find(|(r, _)| *r == reason));
            if let Some((_, counter)) = known {
                counter.inc();
                return;
            }
        }
        let counter = self
            .evaluations
            .get_or_create(&EvalLabels {
                flag: flag.to_owned(),
                reason: reason.to_owned(),
            })
            .clone();
        let mut handles = self
            .evaluation_handles
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let reasons = handles.entry(flag.into()).or_default();
        if !reasons.iter().any(|(r, _)| *r == reason) {
            reasons.push((reason, counter.clone()));
        }
        counter.inc();
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub(crate) fn stream_opened(&self) {
        self.streams_open.inc();
    }

    pub(crate) fn stream_closed(&self) {
        self.streams_open.dec();
    }

    /// The items of an environment's changes were written into Redis.
    pub(crate) fn redis_written(&self) {
        self.redis_writes.inc();
    }

    /// An environment's data was written into Redis whole (which is a write too).
    pub(crate) fn redis_rewritten(&self) {
        self.redis_writes.inc();
        self.redis_rewrites.inc();
    }

    /// Writing an environment's data into Redis failed.
    pub(crate) fn redis_failed(&self) {
        self.redis_write_errors.inc();
    }

    pub(crate) fn stream_resync(&self) {
        self.stream_resyncs.inc();
    }

    pub(crate) fn reload_ok(&self, flags: usize, segments: usize, unix_seconds: f64) {
        self.reloads.inc();
        self.flags_loaded
            .set(i64::try_from(flags).unwrap_or(i64::MAX));
        self.segments_loaded
            .set(i64::try_from(segments).unwrap_or(i64::MAX));
        self.last_reload_success.set(unix_seconds);
    }

    pub(crate) fn reload_failed(&self) {
        self.reload_errors.inc();
    }

    pub(crate) fn event_received(&self, kind: &str) {
        let kind = if KNOWN_EVENT_KINDS.contains(&kind) {
            kind
        } else {
            "other"
        };
        self.events_received
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporters_numbers_are_read_at_each_scrape() {
        let m = Metrics::new();
        assert!(
            !m.encode().contains("flagd_export_"),
            "no exporter, no series"
        );
        let exported = Arc::new(AtomicU64::new(5));
        let read = Arc::clone(&exported);
        m.export_from(Box::new(move || {
            vec![ExportSeries {
                exporter: "file".to_owned(),
                received: 9,
                exported: read.load(std::sync::atomic::Ordering::Relaxed),
                dropped: 1,
                queue_depth: 3,
                spool_bytes: 4096,
                ..ExportSeries::default()
            }]
        }));
        exported.store(8, std::sync::atomic::Ordering::Relaxed);
        let text = m.encode();
        for line in [
            r#"flagd_export_received_total{exporter="file"} 9"#,
            r#"flagd_export_exported_total{exporter="file"} 8"#,
            r#"flagd_export_dropped_total{exporter="file"} 1"#,
            r#"flagd_export_queue_depth{exporter="file"} 3"#,
            r#"flagd_export_spool_bytes{exporter="file"} 4096"#,
            "# TYPE flagd_export_retried counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn encodes_labelled_counters() {
        let m = Metrics::new();
        m.http_request("/v1/evaluate/{flagKey}", &Method::POST, 200, 0.001);
        let route = m.route("/ofrep/v1/evaluate/flags/{key}");
        route.record(&Method::POST, StatusCode::OK, 0.001);
        route.record(&Method::POST, StatusCode::OK, 0.001);
        route.record(&Method::POST, StatusCode::NOT_FOUND, 0.001);
        m.evaluation("checkout", "FALLTHROUGH");
        m.evaluation("checkout", "FALLTHROUGH");
        m.evaluation("checkout", "OFF");
        m.event_received("feature");
        m.event_received("made-up");
        let text = m.encode();
        for line in [
            r#"flagd_http_requests_total{route="/v1/evaluate/{flagKey}",method="POST",status="200"} 1"#,
            r#"flagd_http_requests_total{route="/ofrep/v1/evaluate/flags/{key}",method="POST",status="200"} 2"#,
            r#"flagd_http_requests_total{route="/ofrep/v1/evaluate/flags/{key}",method="POST",status="404"} 1"#,
            r#"flagd_http_request_duration_seconds_count{route="/ofrep/v1/evaluate/flags/{key}"} 3"#,
            r#"flagd_evaluations_total{flag="checkout",reason="FALLTHROUGH"} 2"#,
            r#"flagd_evaluations_total{flag="checkout",reason="OFF"} 1"#,
            r#"flagd_events_received_total{kind="feature"} 1"#,
            r#"flagd_events_received_total{kind="other"} 1"#,
            "flagd_streams_open 0",
            "flagd_reloads_total 0",
            "flagd_reload_errors_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
