//! Analytics events in flagd: what SDKs post to `/bulk` and, when asked, flagd's own evaluations
//! (native API and OFREP), turned into records and handed to the exporters.
//!
//! Request handlers only build records and hand them over ([`RecordSink::submit`] never waits
//! on I/O); the exporter scheduler (`flags-export`) owns delivery, retries and the spool.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flags_core::{BigSegmentsStatus, Context, EvalDetail, Reason};
use flags_events::{
    ANONYMOUS_USER, FeatureRecord, JsonText, Metadata, Record, SdkEvent, USER, into_records,
};
use serde_json::Value;

use crate::config::{EventsConfig, Sampling};

/// `source` of the records of flagd's own evaluations.
pub const SOURCE_SERVER: &str = "SERVER";
/// `source` of the records of events SDKs sent.
pub const SOURCE_SDK: &str = "SDK";

/// Where records go: the exporter scheduler in a running server, a list in tests.
pub trait RecordSink: Send + Sync {
    /// Takes `records` for export. Returns at once: no I/O, no lock held during I/O.
    fn submit(&self, records: Vec<Record>);

    /// Takes `records` once the sink has room for them without dropping older ones, waiting
    /// at most `patience`; for producers that can wait. By default, at once.
    fn submit_when_room(&self, records: Vec<Record>, patience: Duration) -> BoxFuture<'_> {
        let _ = patience;
        self.submit(records);
        Box::pin(std::future::ready(()))
    }
}

/// What [`RecordSink::submit_when_room`] returns.
pub type BoxFuture<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

impl RecordSink for flags_export::Scheduler {
    fn submit(&self, records: Vec<Record>) {
        flags_export::Scheduler::submit(self, records);
    }

    fn submit_when_room(&self, records: Vec<Record>, patience: Duration) -> BoxFuture<'_> {
        Box::pin(flags_export::Scheduler::submit_when_room(
            self, records, patience,
        ))
    }
}

/// How long a `/bulk` post waits for the exporters to have room for its events, at most,
/// before they are queued anyway (and the oldest queued dropped, counted). SDKs post from a
/// background thread and wait longer than this for an answer.
pub const BULK_PATIENCE: Duration = Duration::from_secs(2);

/// Builds every configured exporter and starts the scheduler that feeds them, with its numbers
/// reported in `metrics`. `Ok(None)` when no exporter is configured.
pub(crate) async fn start_exporters(
    config: &EventsConfig,
    metrics: &crate::metrics::Metrics,
) -> Result<Option<flags_export::Scheduler>, String> {
    if config.exporters.is_empty() {
        if config.server_evaluations != Sampling::Off {
            tracing::warn!(
                "events.server_evaluations is set but no exporter is configured; \
                 flagd's own evaluations are not kept"
            );
        }
        return Ok(None);
    }
    let mut exporters = Vec::with_capacity(config.exporters.len());
    for (i, spec) in config.exporters.iter().enumerate() {
        let at = |e: flags_export::ConfigError| format!("events.exporters[{i}]: {e}");
        let exporter = flags_export::ExporterConfig::from_parts(&spec.kind, &spec.settings)
            .map_err(at)?
            .build()
            .await
            .map_err(at)?;
        exporters.push(exporter);
    }
    let scheduler = flags_export::Scheduler::start(
        flags_export::SchedulerConfig {
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            max_events_in_memory: config.max_events_in_memory,
            spool_dir: config.spool_dir.clone(),
            max_spool_bytes: config.max_spool_bytes,
            retry: flags_export::Backoff::default(),
        },
        exporters,
    )
    .map_err(|e| e.to_string())?;
    let stats = scheduler.clone();
    metrics.export_from(Box::new(move || {
        stats
            .stats()
            .into_iter()
            .map(|s| crate::metrics::ExportSeries {
                exporter: s.name,
                received: s.received,
                exported: s.exported,
                retried: s.retried,
                spooled: s.spooled,
                dropped: s.dropped,
                queue_depth: s.queue_depth,
                spool_records: s.spool_records,
                spool_bytes: s.spool_bytes,
            })
            .collect()
    }));
    for stats in scheduler.stats() {
        tracing::info!(exporter = %stats.name, spooled = stats.spool_records, "exporting events");
    }
    Ok(Some(scheduler))
}

/// The server's event intake: a sink (none when no exporter is configured) and the sampling
/// of its own evaluations.
pub struct Events {
    sink: Option<Arc<dyn RecordSink>>,
    /// Keep an evaluation when a uniform draw in `0..u64::MAX` is below this (0: none).
    threshold: u64,
}

impl Events {
    /// No exporter: nothing is kept.
    pub fn off() -> Events {
        Events {
            sink: None,
            threshold: 0,
        }
    }

    /// Records go to `sink`; flagd's own evaluations are kept as `sampling` says.
    pub fn new(sink: Arc<dyn RecordSink>, sampling: Sampling) -> Events {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let threshold = match sampling {
            Sampling::Off => 0,
            Sampling::All => u64::MAX,
            Sampling::Rate(rate) => (rate * u64::MAX as f64) as u64,
        };
        Events {
            sink: Some(sink),
            threshold,
        }
    }

    /// Whether any evaluation may be kept; when not, handlers skip building records at all.
    #[inline]
    pub fn samples_evaluations(&self) -> bool {
        self.threshold != 0
    }

    /// Whether to keep one evaluation.
    #[inline]
    fn keep(&self) -> bool {
        match self.threshold {
            0 => false,
            u64::MAX => true,
            threshold => next_random() < threshold,
        }
    }

    /// The record of one of flagd's own evaluations of `flag` (of `version` when it exists) in
    /// environment `env`, if sampling keeps it.
    pub fn evaluation(
        &self,
        env: &Arc<str>,
        flag: &str,
        version: Option<u64>,
        context: &Context,
        detail: &EvalDetail<'_>,
    ) -> Option<Record> {
        if !self.keep() {
            return None;
        }
        Some(evaluation_record(
            env,
            flag,
            version,
            context,
            detail,
            unix_millis(),
        ))
    }

    /// Hands `records` to the exporters (nothing happens without any).
    pub fn submit(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        if let Some(sink) = &self.sink {
            sink.submit(records);
        }
    }

    /// Takes the events an SDK posted to `/bulk` for environment `env`, once the exporters
    /// have room for them (waiting at most [`BULK_PATIENCE`]).
    pub async fn bulk(&self, env: &Arc<str>, events: Vec<SdkEvent>) {
        let Some(sink) = &self.sink else {
            return;
        };
        let mut records = into_records(events, SOURCE_SDK);
        if records.is_empty() {
            return;
        }
        for record in &mut records {
            tag_environment(record, env);
        }
        sink.submit_when_room(records, BULK_PATIENCE).await;
    }
}

/// Adds `metadata.environment` (`labels.environment` of metrics) to the records that carry
/// metadata.
fn tag_environment(record: &mut Record, env: &Arc<str>) {
    match record {
        Record::Feature(r) => r.metadata.environment = Some(Arc::clone(env)),
        Record::Custom(r) => r.metadata.environment = Some(Arc::clone(env)),
        Record::Metrics(r) => {
            r.labels
                .insert("environment".to_owned(), Value::from(&**env));
        }
        _ => {}
    }
}

/// The record of one evaluation, in the shape SDKs' `feature` events take once exported.
pub fn evaluation_record(
    env: &Arc<str>,
    flag: &str,
    version: Option<u64>,
    context: &Context,
    detail: &EvalDetail<'_>,
    at: u64,
) -> Record {
    let singles = context.contexts();
    let anonymous = !singles.is_empty() && singles.iter().all(|c| c.anonymous());
    let user_key = singles
        .iter()
        .find(|c| c.kind() == USER)
        .or_else(|| singles.first())
        .map(|c| c.key().to_owned())
        .unwrap_or_default();
    let mut context_keys: Vec<(String, String)> = singles
        .iter()
        .map(|single| (single.kind().to_owned(), single.key().to_owned()))
        .collect();
    context_keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let served = detail.value.is_some();
    Record::Feature(FeatureRecord {
        context_kind: (if anonymous { ANONYMOUS_USER } else { USER }).into(),
        user_key,
        creation_date: at,
        key: flag.to_owned(),
        variation: detail.variation_index.filter(|_| served),
        value: detail.value.cloned().unwrap_or(Value::Null),
        default: !served,
        version,
        source: SOURCE_SERVER.into(),
        metadata: Metadata {
            context_keys,
            environment: Some(Arc::clone(env)),
            reason: reason_text(detail),
            ..Metadata::default()
        },
    })
}

/// The reason of `detail` as JSON text. Consecutive evaluations on a thread mostly give the
/// same reason (the same flag, rule and outcome), so the last one's text is kept and shared.
fn reason_text(detail: &EvalDetail<'_>) -> Option<JsonText> {
    type Last = Option<(Reason<'static>, Option<BigSegmentsStatus>, JsonText)>;
    thread_local! {
        static LAST: RefCell<Last> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((reason, status, text)) = &*last
            && detail.reason == *reason
            && detail.big_segments_status == *status
        {
            return Some(text.clone());
        }
        let text = JsonText::of(&detail.reason_json())?;
        *last = Some((
            detail.reason.clone().into_owned(),
            detail.big_segments_status,
            text.clone(),
        ));
        Some(text)
    })
}

/// Now, in Unix milliseconds.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A uniform draw from a per-thread xorshift generator: sampling needs speed, not secrecy.
fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// A non-zero seed that differs between threads and runs.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(unix_millis());
    hasher.finish() | 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use flags_core::{ErrorKind, Reason};
    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Record>>);

    impl RecordSink for Collect {
        fn submit(&self, records: Vec<Record>) {
            self.0.lock().unwrap().extend(records);
        }
    }

    #[test]
    fn sampling_reads_words_and_rates_and_names_bad_ones() {
        for (text, expected) in [
            ("off", Sampling::Off),
            ("all", Sampling::All),
            ("0", Sampling::Off),
            ("1", Sampling::All),
            ("0.25", Sampling::Rate(0.25)),
        ] {
            assert_eq!(Sampling::parse(text).unwrap(), expected, "{text}");
        }
        assert_eq!(
            Sampling::parse("1.5").unwrap_err(),
            "a sample rate is between 0 and 1, found 1.5"
        );
        assert_eq!(
            Sampling::parse("some").unwrap_err(),
            "expected off, all, or a sample rate between 0 and 1, found \"some\""
        );
        let yaml: Vec<Sampling> = serde_norway::from_str("[off, all, false, true, 0.5]").unwrap();
        assert_eq!(
            yaml,
            [
                Sampling::Off,
                Sampling::All,
                Sampling::Off,
                Sampling::All,
                Sampling::Rate(0.5)
            ]
        );
    }

    #[test]
    fn an_evaluation_record_names_the_context_variation_version_and_environment() {
        let context = Context::from_json(&json!({"kind": "multi",
            "org": {"key": "acme"}, "user": {"key": "alice", "anonymous": true}}))
        .unwrap();
        let value = json!("green");
        let detail = EvalDetail {
            value: Some(&value),
            variation_index: Some(2),
            reason: Reason::Fallthrough {
                in_experiment: false,
            },
            big_segments_status: None,
        };
        let record = evaluation_record(&"prod".into(), "color", Some(4), &context, &detail, 17);
        expect_test::expect![[r#"{"kind":"feature","contextKind":"user","userKey":"alice","creationDate":17,"key":"color","variation":"2","value":"green","default":false,"version":"4","source":"SERVER","metadata":{"contextKeys":{"org":"acme","user":"alice"},"environment":"prod","reason":{"kind":"FALLTHROUGH"}}}"#]]
        .assert_eq(&serde_json::to_string(&record).unwrap());

        let anonymous = Context::from_json(&json!({"key": "x", "anonymous": true})).unwrap();
        let missing = EvalDetail::error(ErrorKind::FlagNotFound);
        let Record::Feature(record) =
            evaluation_record(&"default".into(), "nope", None, &anonymous, &missing, 18)
        else {
            panic!();
        };
        assert_eq!(
            (
                &*record.context_kind,
                record.variation,
                record.default,
                record.version
            ),
            (ANONYMOUS_USER, None, true, None)
        );
    }

    #[test]
    fn each_record_gets_its_own_reason_though_the_last_is_reused() {
        let context = Context::user("u").unwrap();
        let value = json!(true);
        let detail = |reason, big_segments_status| EvalDetail {
            value: Some(&value),
            variation_index: Some(0),
            reason,
            big_segments_status,
        };
        let rule = |i: usize| Reason::RuleMatch {
            rule_index: i,
            rule_id: format!("r{i}").into(),
            in_experiment: false,
        };
        let cases = [
            (
                detail(rule(0), None),
                r#"{"kind":"RULE_MATCH","ruleIndex":0,"ruleId":"r0"}"#,
            ),
            (
                detail(rule(0), None),
                r#"{"kind":"RULE_MATCH","ruleIndex":0,"ruleId":"r0"}"#,
            ),
            (
                detail(rule(1), None),
                r#"{"kind":"RULE_MATCH","ruleIndex":1,"ruleId":"r1"}"#,
            ),
            (
                detail(rule(1), Some(BigSegmentsStatus::Stale)),
                r#"{"kind":"RULE_MATCH","ruleIndex":1,"ruleId":"r1","bigSegmentsStatus":"STALE"}"#,
            ),
            (detail(Reason::OFF, None), r#"{"kind":"OFF"}"#),
            (
                detail(rule(0), None),
                r#"{"kind":"RULE_MATCH","ruleIndex":0,"ruleId":"r0"}"#,
            ),
        ];
        for (detail, expected) in cases {
            let Record::Feature(record) =
                evaluation_record(&"e".into(), "f", Some(1), &context, &detail, 1)
            else {
                panic!();
            };
            assert_eq!(record.metadata.reason.unwrap().as_str(), expected);
        }
    }

    #[test]
    fn sampling_keeps_about_its_share_and_off_keeps_none() {
        let context = Context::user("u").unwrap();
        let detail = EvalDetail::error(ErrorKind::FlagNotFound);
        let kept = |sampling| {
            let events = Events::new(Arc::new(Collect::default()), sampling);
            (0..10_000)
                .filter(|_| {
                    events
                        .evaluation(&"e".into(), "f", None, &context, &detail)
                        .is_some()
                })
                .count()
        };
        assert_eq!(kept(Sampling::Off), 0);
        assert_eq!(kept(Sampling::All), 10_000);
        let quarter = kept(Sampling::Rate(0.25));
        // 10,000 draws at p = 0.25: the standard deviation is about 43.
        assert!((2_200..2_800).contains(&quarter), "{quarter}");
        assert!(!Events::off().samples_evaluations());
    }

    #[tokio::test]
    async fn bulk_events_become_sdk_records_of_their_environment() {
        let sink = Arc::new(Collect::default());
        let events = Events::new(Arc::clone(&sink) as Arc<dyn RecordSink>, Sampling::Off);
        let body = json!([{"kind": "custom", "creationDate": 5, "key": "buy",
                           "contextKeys": {"user": "u"}},
                          {"kind": "index", "creationDate": 5, "context": {"key": "u"}}]);
        let parsed = flags_events::parse_bulk(body.to_string().as_bytes()).unwrap();
        events.bulk(&"staging".into(), parsed).await;
        let records = sink.0.lock().unwrap();
        assert_eq!(records.len(), 1, "index events make no record");
        let Record::Custom(custom) = &records[0] else {
            panic!("{:?}", records[0]);
        };
        assert_eq!(custom.source, SOURCE_SDK);
        assert_eq!(custom.metadata.environment.as_deref(), Some("staging"));
    }
}
