//! The flat records exporters write: one per evaluation (`feature`), per tracked goal
//! (`custom`), and per summary counter (`summary`). Evaluations take go-feature-flag's
//! `FeatureEvent` shape, so tools built for its exports read flagd's.
//!
//! A record is built for every evaluation flagd exports, so its fields are kept cheap to make
//! and to free: words that take a few fixed values (`contextKind`, `source`) are static
//! strings, numbers stay numbers until they are written (`variation`, `version`), and the
//! metadata is a struct rather than a JSON map. They are written as the JSON below either way.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::input::{EventContext, SdkEvent};

/// `contextKind` of an anonymous context.
pub const ANONYMOUS_USER: &str = "anonymousUser";

/// `contextKind` of any other context.
pub const USER: &str = "user";

/// `variation` of an evaluation that served the application's default.
pub const SDK_DEFAULT: &str = "SdkDefault";

/// Text that is nearly always one of a few fixed words, so it costs no allocation then.
pub type Word = Cow<'static, str>;

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
    pub context_kind: Word,
    /// The context key: of the `user` kind when the context has one, else of its first kind.
    pub user_key: String,
    /// When the evaluation happened, in Unix milliseconds.
    pub creation_date: u64,
    /// The flag key.
    pub key: String,
    /// The variation index served; written as a string, `SdkDefault` when the default was
    /// served (`None`).
    #[serde(with = "variation_text")]
    pub variation: Option<usize>,
    /// The value served.
    pub value: Value,
    /// Whether the application's default was served (no variation).
    pub default: bool,
    /// The flag's version; written as a string, empty when the flag was unknown (`None`).
    #[serde(with = "version_text")]
    pub version: Option<u64>,
    /// Where the evaluation happened: `SERVER` for flagd's own, `SDK` for events SDKs sent.
    pub source: Word,
    /// Who it was for and why; see [`Metadata`].
    pub metadata: Metadata,
}

/// A tracked goal or metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomRecord {
    /// As in [`FeatureRecord::context_kind`].
    pub context_kind: Word,
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
    pub source: Word,
    /// `contextKeys`, and `environment` once flagd knows it.
    pub metadata: Metadata,
}

/// The `metadata` of a `feature` or `custom` record, written as a JSON object with its keys
/// in this order; absent ones are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// `contextKeys`: the key of every kind of the context, `{kind: key}`, sorted by kind.
    #[serde(with = "keys_object")]
    pub context_keys: Vec<(String, String)>,
    /// `debug: true` when an SDK sent the event as `debug` (its flag's debugging window).
    #[serde(default, skip_serializing_if = "is_false")]
    pub debug: bool,
    /// `defaultValue`: the default the application passed (which may be `null`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub default_value: Option<Value>,
    /// `environment`: the flagd environment the record came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Arc<str>>,
    /// `prereqOf`: the flag this one was evaluated as a prerequisite of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prereq_of: Option<String>,
    /// `reason`: why this value was served, as LaunchDarkly's evaluation reasons read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<JsonText>,
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
    /// As in [`FeatureRecord::variation`].
    #[serde(with = "variation_text")]
    pub variation: Option<usize>,
    /// The value served.
    pub value: Value,
    /// As in [`FeatureRecord::version`].
    #[serde(with = "version_text")]
    pub version: Option<u64>,
    /// How many evaluations in the period.
    pub count: u64,
    /// The default the application passed.
    pub default: Value,
    /// The context kinds the flag was evaluated for.
    pub context_kinds: Vec<String>,
    /// As in [`FeatureRecord::source`].
    pub source: Word,
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
    /// Labels the application set, and `environment` once flagd knows it.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub labels: Map<String, Value>,
    /// As in [`FeatureRecord::source`].
    pub source: Word,
}

/// A JSON value kept as its compact text, written out as it is: a reason is made once per
/// exported evaluation and only ever written, so it is not built as a tree, walked and freed.
///
/// Shared: a clone is a reference count, so one reason can be kept for many records.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonText(Arc<str>);

impl JsonText {
    /// `value` as compact JSON text; `None` if it does not serialize (a map with non-string
    /// keys).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Option<JsonText> {
        serde_json::to_string(value)
            .ok()
            .map(|text| JsonText(text.into()))
    }

    /// `value` as compact JSON text.
    pub fn from_value(value: &Value) -> JsonText {
        // Straight into a buffer: `Value`'s `Display` goes through a formatter, several
        // times slower.
        let mut text = Vec::with_capacity(64);
        drop(serde_json::to_writer(&mut text, value));
        JsonText(String::from_utf8_lossy(&text).into())
    }

    /// The text: compact JSON, no newline.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value the text holds.
    pub fn to_value(&self) -> Value {
        // The text was written by serde_json, so it reads back.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Value> for JsonText {
    fn from(value: &Value) -> JsonText {
        JsonText::from_value(value)
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(S::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<JsonText, D::Error> {
        // Read as a value and written compactly, whatever spacing the input had.
        Value::deserialize(d).map(|v| JsonText::from_value(&v))
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// A field that is present reads as `Some`, even when it is `null`: what was written as
/// `"defaultValue":null` reads back as it was.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `variation` as go-feature-flag writes it: a string, the index or `SdkDefault`.
mod variation_text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(v: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(index) => s.serialize_str(itoa::Buffer::new().format(*index)),
            None => s.serialize_str(super::SDK_DEFAULT),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        if text == super::SDK_DEFAULT {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            D::Error::custom(format!(
                "expected a variation index or {}, found {text:?}",
                super::SDK_DEFAULT
            ))
        })
    }
}

/// `version` as go-feature-flag writes it: a string, empty when there is none.
mod version_text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(version) => s.serialize_str(itoa::Buffer::new().format(*version)),
            None => s.serialize_str(""),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a version number, found {text:?}")))
    }
}

/// `contextKeys`: pairs in memory, a JSON object on the wire.
mod keys_object {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        keys: &[(String, String)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(keys.len()))?;
        for (kind, key) in keys {
            map.serialize_entry(kind, key)?;
        }
        map.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of context keys by kind")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(1));
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                // Sorted as records keep them, whatever order a store gave them back in.
                pairs.sort_unstable_by(|a: &(String, String), b| a.0.cmp(&b.0));
                Ok(pairs)
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// The records of `events`: one per `feature`/`debug` and `custom` event, one per summary
/// counter; `identify`, `index` and other kinds make none. `source` fills each record's
/// `source`.
pub fn to_records(events: &[SdkEvent], source: impl Into<Word>) -> Vec<Record> {
    let source = source.into();
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        if makes_records(event) {
            push_records(event.clone(), &source, &mut records);
        }
    }
    records
}

/// The same records as [`to_records`], moving the events' strings and values into them rather
/// than copying them: what `/bulk` uses, since it has no use for the events afterwards.
pub fn into_records(events: Vec<SdkEvent>, source: impl Into<Word>) -> Vec<Record> {
    let source = source.into();
    let mut records = Vec::with_capacity(events.len());
    for event in events {
        push_records(event, &source, &mut records);
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
fn push_records(event: SdkEvent, source: &Word, records: &mut Vec<Record>) {
    match event {
        SdkEvent::Feature(f) => {
            let (context_kind, user_key, context_keys) = who(f.context);
            records.push(Record::Feature(FeatureRecord {
                context_kind,
                user_key,
                creation_date: f.creation_date,
                key: f.key,
                variation: f.variation,
                value: f.value,
                default: f.variation.is_none(),
                version: f.version,
                source: source.clone(),
                metadata: Metadata {
                    context_keys,
                    debug: f.debug,
                    default_value: Some(f.default),
                    environment: None,
                    prereq_of: f.prereq_of,
                    reason: f.reason.as_ref().map(JsonText::from_value),
                },
            }));
        }
        SdkEvent::Custom(c) => {
            let (context_kind, user_key, context_keys) = who(c.context);
            records.push(Record::Custom(CustomRecord {
                context_kind,
                user_key,
                creation_date: c.creation_date,
                key: c.key,
                value: c.metric_value,
                data: c.data,
                source: source.clone(),
                metadata: Metadata {
                    context_keys,
                    ..Metadata::default()
                },
            }));
        }
        SdkEvent::Summary(s) => {
            for (key, flag) in s.features {
                for counter in flag.counters {
                    records.push(Record::Summary(SummaryRecord {
                        creation_date: s.end_date,
                        start_date: s.start_date,
                        key: key.clone(),
                        variation: counter.variation,
                        value: counter.value,
                        version: counter.version,
                        count: counter.count,
                        default: flag.default.clone(),
                        context_kinds: flag.context_kinds.clone(),
                        source: source.clone(),
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
            source: source.clone(),
        })),
        SdkEvent::Identify(_) | SdkEvent::Index(_) | SdkEvent::Other { .. } => {}
    }
}

/// `contextKind`, `userKey` and every key of a context by kind, sorted by kind.
fn who(context: EventContext) -> (Word, String, Vec<(String, String)>) {
    let kind = if context.is_anonymous() {
        ANONYMOUS_USER
    } else {
        USER
    };
    let mut keys: Vec<(String, String)> = match context {
        EventContext::Keys(keys) => keys.into_iter().collect(),
        full @ EventContext::Full(_) => full.keys(),
    };
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    keys.dedup_by(|later, earlier| later.0 == earlier.0);
    let user_key = keys
        .iter()
        .find(|(kind, _)| kind == USER)
        .or_else(|| keys.first())
        .map(|(_, key)| key.clone())
        .unwrap_or_default();
    (Cow::Borrowed(kind), user_key, keys)
}
