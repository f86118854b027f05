//! The flat records exporters write: one per evaluation (`feature`), per tracked goal
//! (`custom`), and per summary counter (`summary`). Evaluations take go-feature-flag's
//! `FeatureEvent` shape, so tools built for its exports read flagd's.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::input::{EventContext, SdkEvent};

/// `contextKind` of an anonymous context.
pub const ANONYMOUS_USER: &str = "anonymousUser";

/// `variation` of an evaluation that served the application's default.
pub const SDK_DEFAULT: &str = "SdkDefault";

/// One exported record, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
#[non_exhaustive]
pub enum Record {
    /// An evaluation.
    #[serde(rename = "feature")]
    Feature(FeatureRecord),
    /// A goal or metric the application tracked.
    #[serde(rename = "custom")]
    Custom(CustomRecord),
    /// One counter of a summary: how often one variation of one version was served.
    #[serde(rename = "summary")]
    Summary(SummaryRecord),
    /// One measurement of an SDK's call to flagd.
    #[serde(rename = "metrics")]
    Metrics(MetricsRecord),
}

impl Record {
    /// The record's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Feature(_) => "feature",
            Record::Custom(_) => "custom",
            Record::Summary(_) => "summary",
            Record::Metrics(_) => "metrics",
        }
    }

    /// The record's `creationDate`, in Unix milliseconds.
    pub fn creation_date(&self) -> u64 {
        match self {
            Record::Feature(r) => r.creation_date,
            Record::Custom(r) => r.creation_date,
            Record::Summary(r) => r.creation_date,
            Record::Metrics(r) => r.creation_date,
        }
    }
}

/// An evaluation, in go-feature-flag's `FeatureEvent` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureRecord {
    /// `anonymousUser` when the context is anonymous, else `user` (go-feature-flag's two
    /// values; the LaunchDarkly context kinds are in `metadata.contextKeys`).
    pub context_kind: String,
    /// The context key: of the `user` kind when the context has one, else of its first kind.
    pub user_key: String,
    /// When the evaluation happened, in Unix milliseconds.
    pub creation_date: u64,
    /// The flag key.
    pub key: String,
    /// The variation index served, as a string; `SdkDefault` when the default was served.
    pub variation: String,
    /// The value served.
    pub value: Value,
    /// Whether the application's default was served (no variation).
    pub default: bool,
    /// The flag's version, as a string; empty when the flag was unknown.
    pub version: String,
    /// Where the evaluation happened: `SERVER` for flagd's own, `SDK` for events SDKs sent.
    pub source: String,
    /// `contextKeys` (kind → key), and when present `reason`, `prereqOf`, `debug: true` and
    /// `defaultValue` (the default the application passed).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// A tracked goal or metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomRecord {
    /// As in [`FeatureRecord::context_kind`].
    pub context_kind: String,
    /// As in [`FeatureRecord::user_key`].
    pub user_key: String,
    /// When it was tracked, in Unix milliseconds.
    pub creation_date: u64,
    /// The event (goal) key.
    pub key: String,
    /// The metric value, for numeric metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Data the application attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// As in [`FeatureRecord::source`].
    pub source: String,
    /// `contextKeys` (kind → key).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// One counter of a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryRecord {
    /// The end of the summary's period, in Unix milliseconds.
    pub creation_date: u64,
    /// The start of the period, in Unix milliseconds.
    pub start_date: u64,
    /// The flag key.
    pub key: String,
    /// The variation, as a string; `SdkDefault` when the default was served.
    pub variation: String,
    /// The value served.
    pub value: Value,
    /// The flag's version, as a string; empty when the flag was unknown.
    pub version: String,
    /// How many evaluations in the period.
    pub count: u64,
    /// The default the application passed.
    pub default: Value,
    /// The context kinds the flag was evaluated for.
    pub context_kinds: Vec<String>,
    /// As in [`FeatureRecord::source`].
    pub source: String,
}

/// One measurement of an SDK's call to flagd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsRecord {
    /// When, in Unix milliseconds.
    pub creation_date: u64,
    /// `latency` (milliseconds), `size` (bytes), `timeoutError` or `internalError` (counts).
    pub metric: String,
    /// Which call of the SDK: `poll`, `stream`, `events`, ...
    pub api: String,
    /// The measurement, in the metric's unit.
    pub value: f64,
    /// Labels the application set.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub labels: Map<String, Value>,
    /// As in [`FeatureRecord::source`].
    pub source: String,
}

/// The records of `events`: one per `feature`/`debug` and `custom` event, one per summary
/// counter; `identify`, `index` and other kinds make none. `source` fills each record's
/// `source`.
pub fn to_records(events: &[SdkEvent], source: &str) -> Vec<Record> {
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        if makes_records(event) {
            push_records(event.clone(), source, &mut records);
        }
    }
    records
}

/// The same records as [`to_records`], moving the events' strings and values into them rather
/// than copying them: what `/bulk` uses, since it has no use for the events afterwards.
pub fn into_records(events: Vec<SdkEvent>, source: &str) -> Vec<Record> {
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        push_records(event, source, &mut records);
    }
    records
}

fn makes_records(event: &SdkEvent) -> bool {
    !matches!(
        event,
        SdkEvent::Identify(_) | SdkEvent::Index(_) | SdkEvent::Other { .. }
    )
}

/// Appends the records of one event to `records`.
fn push_records(event: SdkEvent, source: &str, records: &mut Vec<Record>) {
    match event {
        SdkEvent::Feature(f) => {
            let (context_kind, user_key, mut metadata) = who(f.context);
            if let Some(reason) = f.reason {
                metadata.insert("reason".to_owned(), reason);
            }
            if let Some(parent) = f.prereq_of {
                metadata.insert("prereqOf".to_owned(), Value::String(parent));
            }
            if f.debug {
                metadata.insert("debug".to_owned(), Value::Bool(true));
            }
            metadata.insert("defaultValue".to_owned(), f.default);
            records.push(Record::Feature(FeatureRecord {
                context_kind,
                user_key,
                creation_date: f.creation_date,
                key: f.key,
                variation: variation(f.variation),
                value: f.value,
                default: f.variation.is_none(),
                version: version(f.version),
                source: source.to_owned(),
                metadata,
            }));
        }
        SdkEvent::Custom(c) => {
            let (context_kind, user_key, metadata) = who(c.context);
            records.push(Record::Custom(CustomRecord {
                context_kind,
                user_key,
                creation_date: c.creation_date,
                key: c.key,
                value: c.metric_value,
                data: c.data,
                source: source.to_owned(),
                metadata,
            }));
        }
        SdkEvent::Summary(s) => {
            for (key, flag) in s.features {
                for counter in flag.counters {
                    records.push(Record::Summary(SummaryRecord {
                        creation_date: s.end_date,
                        start_date: s.start_date,
                        key: key.clone(),
                        variation: variation(counter.variation),
                        value: counter.value,
                        version: version(counter.version),
                        count: counter.count,
                        default: flag.default.clone(),
                        context_kinds: flag.context_kinds.clone(),
                        source: source.to_owned(),
                    }));
                }
            }
        }
        SdkEvent::Metrics(m) => records.push(Record::Metrics(MetricsRecord {
            creation_date: m.creation_date,
            metric: m.metric.as_str().to_owned(),
            api: m.api,
            value: m.value,
            labels: m
                .labels
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
            source: source.to_owned(),
        })),
        SdkEvent::Identify(_) | SdkEvent::Index(_) | SdkEvent::Other { .. } => {}
    }
}

/// `contextKind`, `userKey` and the metadata naming every key of a context.
fn who(context: EventContext) -> (String, String, Map<String, Value>) {
    let kind = if context.is_anonymous() {
        ANONYMOUS_USER
    } else {
        "user"
    };
    let keys: Vec<(String, String)> = match context {
        EventContext::Keys(keys) => keys.into_iter().collect(),
        full @ EventContext::Full(_) => full.keys(),
    };
    let user_key = keys
        .iter()
        .find(|(kind, _)| kind == "user")
        .or_else(|| keys.first())
        .map(|(_, key)| key.clone())
        .unwrap_or_default();
    let mut metadata = Map::new();
    metadata.insert(
        "contextKeys".to_owned(),
        Value::Object(
            keys.into_iter()
                .map(|(kind, key)| (kind, Value::String(key)))
                .collect(),
        ),
    );
    (kind.to_owned(), user_key, metadata)
}

fn variation(variation: Option<usize>) -> String {
    variation.map_or_else(|| SDK_DEFAULT.to_owned(), |v| v.to_string())
}

fn version(version: Option<u64>) -> String {
    version.map(|v| v.to_string()).unwrap_or_default()
}
