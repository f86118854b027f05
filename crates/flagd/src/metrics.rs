//! Prometheus metrics, held per server (not in a global registry) so every test app counts alone.
//!
//! Label values are bounded: HTTP routes are the matched route templates, never raw paths; flag
//! labels only ever name flags that exist in the served data; event kinds are LaunchDarkly's
//! known kinds or `other`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    evaluations: Family<EvalLabels, Counter>,
    streams_open: Gauge,
    stream_resyncs: Counter,
    reloads: Counter,
    reload_errors: Counter,
    events_received: Family<KindLabels, Counter>,
    flags_loaded: Gauge,
    segments_loaded: Gauge,
    last_reload_success: Gauge<f64, AtomicU64>,
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
    "migration_op",
    "diagnostic-init",
    "diagnostic",
];

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
        let evaluations = Family::<EvalLabels, Counter>::default();
        let streams_open = Gauge::default();
        let stream_resyncs = Counter::default();
        let reloads = Counter::default();
        let reload_errors = Counter::default();
        let events_received = Family::<KindLabels, Counter>::default();
        let flags_loaded = Gauge::default();
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
            "flagd_segments",
            "Segments in the served data",
            segments_loaded.clone(),
        );
        registry.register(
            "flagd_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load",
            last_reload_success.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            evaluations,
            streams_open,
            stream_resyncs,
            reloads,
            reload_errors,
            events_received,
            flags_loaded,
            segments_loaded,
            last_reload_success,
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

    pub(crate) fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub(crate) fn evaluation(&self, flag: &str, reason: &str) {
        self.evaluations
            .get_or_create(&EvalLabels {
                flag: flag.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub(crate) fn stream_opened(&self) {
        self.streams_open.inc();
    }

    pub(crate) fn stream_closed(&self) {
        self.streams_open.dec();
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
    fn encodes_labelled_counters() {
        let m = Metrics::new();
        m.http_request("/v1/evaluate/{flagKey}", "POST", 200, 0.001);
        m.evaluation("checkout", "FALLTHROUGH");
        m.event_received("feature");
        m.event_received("made-up");
        let text = m.encode();
        for line in [
            r#"flagd_http_requests_total{route="/v1/evaluate/{flagKey}",method="POST",status="200"} 1"#,
            r#"flagd_evaluations_total{flag="checkout",reason="FALLTHROUGH"} 1"#,
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
