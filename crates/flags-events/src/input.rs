//! LaunchDarkly's server-side event format, as SDKs post it to `/bulk`: a JSON array of event
//! objects, each with a `kind`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

mod fast;

pub(crate) use fast::parse_bulk_fast;

/// One event as an SDK sent it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SdkEvent {
    /// `feature` (an evaluation the flag asked to track in full) or `debug` (the same, sent
    /// while the flag's debugging window is open).
    Feature(FeatureEvent),
    /// `custom`: a goal or metric the application tracked.
    Custom(CustomEvent),
    /// `identify`: the application announced a context.
    Identify(ContextEvent),
    /// `index`: the first sight of a context in a flush, so that summaries can name it.
    Index(ContextEvent),
    /// `summary`: counts of evaluations per flag, variation and version between two flushes.
    Summary(SummaryEvent),
    /// `metrics`: how an SDK's own calls to flagd went (flagd's SDK sends these; LaunchDarkly's
    /// do not).
    Metrics(MetricsEvent),
    /// A kind read no further (`migration_op`, `diagnostic`, and kinds of later SDKs).
    Other {
        /// The event's `kind`.
        kind: String,
    },
}

impl SdkEvent {
    /// The event's `kind`, as sent.
    pub fn kind(&self) -> &str {
        match self {
            SdkEvent::Feature(f) if f.debug => "debug",
            SdkEvent::Feature(_) => "feature",
            SdkEvent::Custom(_) => "custom",
            SdkEvent::Identify(_) => "identify",
            SdkEvent::Index(_) => "index",
            SdkEvent::Summary(_) => "summary",
            SdkEvent::Metrics(_) => "metrics",
            SdkEvent::Other { kind } => kind,
        }
    }
}

impl SdkEvent {
    /// The event as an SDK writes it in a `/bulk` body, which [`parse_event`] reads back as
    /// this event; `None` for [`SdkEvent::Other`], whose fields were not kept.
    pub fn to_json(&self) -> Option<Value> {
        let mut out = Map::new();
        out.insert("kind".to_owned(), Value::from(self.kind()));
        match self {
            SdkEvent::Feature(f) => {
                out.insert("creationDate".to_owned(), Value::from(f.creation_date));
                out.insert("key".to_owned(), Value::from(f.key.as_str()));
                if let Some(version) = f.version {
                    out.insert("version".to_owned(), Value::from(version));
                }
                if let Some(variation) = f.variation {
                    out.insert("variation".to_owned(), Value::from(variation));
                }
                out.insert("value".to_owned(), f.value.clone());
                out.insert("default".to_owned(), f.default.clone());
                if let Some(reason) = &f.reason {
                    out.insert("reason".to_owned(), reason.clone());
                }
                if let Some(parent) = &f.prereq_of {
                    out.insert("prereqOf".to_owned(), Value::from(parent.as_str()));
                }
                f.context.write(&mut out);
            }
            SdkEvent::Custom(c) => {
                out.insert("creationDate".to_owned(), Value::from(c.creation_date));
                out.insert("key".to_owned(), Value::from(c.key.as_str()));
                c.context.write(&mut out);
                if let Some(data) = &c.data {
                    out.insert("data".to_owned(), data.clone());
                }
                if let Some(metric) = c.metric_value {
                    out.insert("metricValue".to_owned(), Value::from(metric));
                }
            }
            SdkEvent::Identify(e) | SdkEvent::Index(e) => {
                out.insert("creationDate".to_owned(), Value::from(e.creation_date));
                out.insert("context".to_owned(), e.context.clone());
            }
            SdkEvent::Summary(s) => return Some(s.to_json()),
            SdkEvent::Metrics(m) => return Some(m.to_json()),
            SdkEvent::Other { .. } => return None,
        }
        Some(Value::Object(out))
    }
}

/// Who an event is about: the whole context (with private attributes already redacted by the
/// SDK), or only its keys by kind (`contextKeys`, which SDKs send when the context went out in
/// an `index` event).
#[derive(Debug, Clone, PartialEq)]
pub enum EventContext {
    /// The context's JSON, in LaunchDarkly's context format (or a legacy user object).
    Full(Value),
    /// `{kind: key}` for each kind of the context.
    Keys(BTreeMap<String, String>),
}

impl EventContext {
    /// The context's keys by kind: `[("user", "alice")]`, or one pair per kind of a multi-kind
    /// context. A legacy user (no `kind`) is of kind `user`.
    pub fn keys(&self) -> Vec<(String, String)> {
        match self {
            EventContext::Keys(keys) => keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            EventContext::Full(context) => match context.get("kind").and_then(Value::as_str) {
                Some("multi") => context
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(kind, _)| *kind != "kind")
                    .filter_map(|(kind, single)| {
                        let key = single.get("key")?.as_str()?;
                        Some((kind.clone(), key.to_owned()))
                    })
                    .collect(),
                kind => context
                    .get("key")
                    .and_then(Value::as_str)
                    .map(|key| vec![(kind.unwrap_or("user").to_owned(), key.to_owned())])
                    .unwrap_or_default(),
            },
        }
    }

    /// Writes `context` (a full context) or `contextKeys` into an event object.
    fn write(&self, event: &mut Map<String, Value>) {
        match self {
            EventContext::Full(context) => {
                event.insert("context".to_owned(), context.clone());
            }
            EventContext::Keys(keys) => {
                let keys = keys
                    .iter()
                    .map(|(kind, key)| (kind.clone(), Value::from(key.as_str())))
                    .collect();
                event.insert("contextKeys".to_owned(), Value::Object(keys));
            }
        }
    }

    /// Whether the context says it is anonymous (every kind of it, for a multi-kind context).
    /// Only a full context can say so.
    pub fn is_anonymous(&self) -> bool {
        let EventContext::Full(context) = self else {
            return false;
        };
        let anonymous = |single: &Value| single.get("anonymous") == Some(&Value::Bool(true));
        if context.get("kind").and_then(Value::as_str) == Some("multi") {
            let mut singles = context
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(kind, _)| *kind != "kind")
                .peekable();
            singles.peek().is_some() && singles.all(|(_, single)| anonymous(single))
        } else {
            anonymous(context)
        }
    }
}

/// A `feature` or `debug` event.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureEvent {
    /// When the evaluation happened, in Unix milliseconds.
    pub creation_date: u64,
    /// The flag key.
    pub key: String,
    /// The flag's version, when the flag existed.
    pub version: Option<u64>,
    /// The variation served, when one was.
    pub variation: Option<usize>,
    /// The value served.
    pub value: Value,
    /// The default the application passed.
    pub default: Value,
    /// Why, when the SDK was asked to send reasons.
    pub reason: Option<Value>,
    /// Who it was evaluated for.
    pub context: EventContext,
    /// The flag this one was a prerequisite of, if it was evaluated as one.
    pub prereq_of: Option<String>,
    /// Sent as `debug`.
    pub debug: bool,
}

/// A `custom` event.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomEvent {
    /// When it was tracked, in Unix milliseconds.
    pub creation_date: u64,
    /// The event (goal) key.
    pub key: String,
    /// Who it is about.
    pub context: EventContext,
    /// Data the application attached.
    pub data: Option<Value>,
    /// The metric value, for numeric metrics.
    pub metric_value: Option<f64>,
}

/// An `identify` or `index` event.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextEvent {
    /// When, in Unix milliseconds.
    pub creation_date: u64,
    /// The context, redacted by the SDK.
    pub context: Value,
}

/// A `summary` event.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryEvent {
    /// The start of the period, in Unix milliseconds.
    pub start_date: u64,
    /// The end of the period, in Unix milliseconds.
    pub end_date: u64,
    /// The counters of each flag evaluated in the period.
    pub features: BTreeMap<String, FlagSummary>,
}

/// One flag's counters in a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagSummary {
    /// The default the application passed.
    pub default: Value,
    /// The context kinds it was evaluated for.
    pub context_kinds: Vec<String>,
    /// One counter per (variation, version) served.
    pub counters: Vec<Counter>,
}

/// How often one variation of one version was served in a summary's period.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    /// The value served.
    pub value: Value,
    /// The variation, when one was served.
    pub variation: Option<usize>,
    /// The flag's version (absent when the flag was unknown).
    pub version: Option<u64>,
    /// How many evaluations.
    pub count: u64,
    /// The flag was not found.
    pub unknown: bool,
}

/// A `metrics` event: one measurement of an SDK's call to flagd, or one failed call.
///
/// On the wire: `{"kind":"metrics","creationDate":MS,"metric":"latency","api":"poll",
/// "value":12.5,"labels":{"tag":"web"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsEvent {
    /// When, in Unix milliseconds.
    pub creation_date: u64,
    /// What was measured.
    pub metric: Metric,
    /// Which call: `poll`, `stream`, `events`, or another name the SDK gives.
    pub api: String,
    /// Milliseconds for [`Metric::Latency`], bytes for [`Metric::Size`], a count (usually 1)
    /// for the error counts.
    pub value: f64,
    /// Free-form labels the application set (a tag, a region).
    pub labels: BTreeMap<String, String>,
}

/// What a [`MetricsEvent`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// How long the call took (`latency`), in milliseconds.
    Latency,
    /// How large the answer was (`size`), in bytes.
    Size,
    /// The call timed out (`timeoutError`).
    TimeoutError,
    /// The call failed for another reason (`internalError`).
    InternalError,
}

impl Metric {
    /// The name on the wire and in exported records.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::Size => "size",
            Metric::TimeoutError => "timeoutError",
            Metric::InternalError => "internalError",
        }
    }

    /// The metric named `name`, if it is one of the four.
    pub fn from_name(name: &str) -> Option<Metric> {
        [
            Metric::Latency,
            Metric::Size,
            Metric::TimeoutError,
            Metric::InternalError,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

impl MetricsEvent {
    /// The event as flagd's SDK sends it in a `/bulk` body.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "kind": "metrics",
            "creationDate": self.creation_date,
            "metric": self.metric.as_str(),
            "api": self.api,
            "value": self.value,
            "labels": self.labels,
        })
    }
}

/// Why a `/bulk` body or one of its events could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The body is not JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The body is JSON but not an array of events.
    #[error("expected a JSON array of events, found {0}")]
    NotAnArray(&'static str),
    /// One field of one event is missing or of the wrong type (`field` is empty when the
    /// event itself is).
    #[error("[{index}]{}{field}: {problem}", if field.is_empty() { "" } else { "." })]
    Field {
        /// The event's index in the array.
        index: usize,
        /// The field, as it is named in the JSON.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Reads a `/bulk` body: every event, or the first problem, located by index and field.
pub fn parse_bulk(body: &[u8]) -> Result<Vec<SdkEvent>, EventError> {
    // The direct reader takes the bodies SDKs send; whatever it is not sure of, the tree reader
    // reads again from the start, so events and problems are always the tree reader's.
    match parse_bulk_fast(body) {
        Some(events) => Ok(events),
        None => parse_bulk_tree(body),
    }
}

/// The reference reader of a `/bulk` body: the whole body parsed into a `Value`, then each
/// event read out of it with [`parse_event`]. [`parse_bulk`] returns its result whenever the
/// direct reader gives up, and must otherwise return the same.
pub(crate) fn parse_bulk_tree(body: &[u8]) -> Result<Vec<SdkEvent>, EventError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    let Value::Array(events) = value else {
        return Err(EventError::NotAnArray(type_name(&value)));
    };
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| parse_event(index, event))
        .collect()
}

/// Reads one event of a `/bulk` array (`index` locates its problems). The event's strings and
/// values move into the result rather than being copied.
pub fn parse_event(index: usize, event: Value) -> Result<SdkEvent, EventError> {
    let fields = match event {
        Value::Object(fields) => fields,
        other => {
            return Err(EventError::Field {
                index,
                field: String::new(),
                problem: format!("expected an event object, found {}", type_name(&other)),
            });
        }
    };
    let mut at = Fields { index, fields };
    let kind = at.string("kind")?;
    Ok(match kind.as_str() {
        "feature" | "debug" => SdkEvent::Feature(FeatureEvent {
            creation_date: at.date("creationDate")?,
            key: at.string("key")?,
            version: at.optional_u64("version")?,
            variation: at
                .optional_u64("variation")?
                .map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
            value: at.any("value"),
            default: at.any("default"),
            reason: at.take("reason").filter(|v| !v.is_null()),
            context: at.context()?,
            prereq_of: at.optional_string("prereqOf")?,
            debug: kind == "debug",
        }),
        "custom" => SdkEvent::Custom(CustomEvent {
            creation_date: at.date("creationDate")?,
            key: at.string("key")?,
            context: at.context()?,
            data: at.take("data").filter(|v| !v.is_null()),
            metric_value: at.optional_f64("metricValue")?,
        }),
        "identify" | "index" => {
            let event = ContextEvent {
                creation_date: at.date("creationDate")?,
                context: at.object("context")?,
            };
            if kind == "identify" {
                SdkEvent::Identify(event)
            } else {
                SdkEvent::Index(event)
            }
        }
        "summary" => SdkEvent::Summary(at.summary()?),
        "metrics" => SdkEvent::Metrics(at.metrics()?),
        _ => SdkEvent::Other { kind },
    })
}

/// The fields of one event, with its index for errors. Strings and values are taken out of it
/// as they are read; each field is read once.
struct Fields {
    index: usize,
    fields: Map<String, Value>,
}

impl Fields {
    fn take(&mut self, field: &str) -> Option<Value> {
        self.fields.remove(field)
    }

    fn problem(&self, field: &str, problem: impl Into<String>) -> EventError {
        EventError::Field {
            index: self.index,
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    fn wrong(&self, field: &str, expected: &str, found: &Value) -> EventError {
        self.problem(
            field,
            format!("expected {expected}, found {}", type_name(found)),
        )
    }

    fn string(&mut self, field: &str) -> Result<String, EventError> {
        match self.take(field) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.wrong(field, "a string", &other)),
            None => Err(self.problem(field, "missing")),
        }
    }

    fn optional_string(&mut self, field: &str) -> Result<Option<String>, EventError> {
        match self.take(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(field, "a string", &other)),
        }
    }

    fn date(&self, field: &str) -> Result<u64, EventError> {
        self.optional_u64(field)?
            .ok_or_else(|| self.problem(field, "missing"))
    }

    fn optional_u64(&self, field: &str) -> Result<Option<u64>, EventError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                // SDKs written in languages with one number type may send 3.0 for 3.
                None => match n.as_f64() {
                    #[allow(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        clippy::float_cmp
                    )]
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(Some(f as u64)),
                    _ => {
                        Err(self.problem(field, format!("expected a whole number ≥ 0, found {n}")))
                    }
                },
            },
            Some(other) => Err(self.wrong(field, "a whole number", other)),
        }
    }

    fn optional_f64(&self, field: &str) -> Result<Option<f64>, EventError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.wrong(field, "a number", other)),
        }
    }

    fn any(&mut self, field: &str) -> Value {
        self.take(field).unwrap_or(Value::Null)
    }

    fn object(&mut self, field: &str) -> Result<Value, EventError> {
        match self.take(field) {
            Some(v @ Value::Object(_)) => Ok(v),
            Some(other) => Err(self.wrong(field, "an object", &other)),
            None => Err(self.problem(field, "missing")),
        }
    }

    /// `context`, else `contextKeys`, else a legacy `user` or `userKey`.
    fn context(&mut self) -> Result<EventContext, EventError> {
        if let Some(context) = self.take("context").filter(|v| !v.is_null()) {
            return match context {
                Value::Object(_) => Ok(EventContext::Full(context)),
                other => Err(self.wrong("context", "an object", &other)),
            };
        }
        if let Some(keys) = self.take("contextKeys").filter(|v| !v.is_null()) {
            let keys = match keys {
                Value::Object(keys) => keys,
                other => return Err(self.wrong("contextKeys", "an object", &other)),
            };
            let mut out = BTreeMap::new();
            for (kind, key) in keys {
                let Value::String(key) = key else {
                    return Err(self.wrong(&format!("contextKeys.{kind}"), "a string", &key));
                };
                out.insert(kind, key);
            }
            return Ok(EventContext::Keys(out));
        }
        if self.fields.get("user").is_some_and(Value::is_object) {
            return Ok(EventContext::Full(self.any("user")));
        }
        if let Some(key) = self.optional_string("userKey")? {
            return Ok(EventContext::Keys(BTreeMap::from([(
                "user".to_owned(),
                key,
            )])));
        }
        Err(self.problem("context", "missing (nor contextKeys)"))
    }

    fn metrics(&mut self) -> Result<MetricsEvent, EventError> {
        let name = self.string("metric")?;
        let metric = Metric::from_name(&name).ok_or_else(|| {
            self.problem(
                "metric",
                format!("expected latency, size, timeoutError or internalError, found \"{name}\""),
            )
        })?;
        let value = match self.fields.get("value") {
            Some(Value::Number(n)) => n.as_f64().unwrap_or_default(),
            Some(other) => return Err(self.wrong("value", "a number", other)),
            None if matches!(metric, Metric::TimeoutError | Metric::InternalError) => 1.0,
            None => return Err(self.problem("value", "missing")),
        };
        let mut labels = BTreeMap::new();
        match self.take("labels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, label) in map {
                    let Value::String(label) = label else {
                        return Err(self.wrong(&format!("labels.{name}"), "a string", &label));
                    };
                    labels.insert(name, label);
                }
            }
            Some(other) => return Err(self.wrong("labels", "an object", &other)),
        }
        Ok(MetricsEvent {
            creation_date: self.date("creationDate")?,
            metric,
            api: self.string("api")?,
            value,
            labels,
        })
    }

    fn summary(&mut self) -> Result<SummaryEvent, EventError> {
        let start_date = self.date("startDate")?;
        let end_date = self.date("endDate")?;
        let mut features = BTreeMap::new();
        let raw = match self.take("features") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(other) => return Err(self.wrong("features", "an object", &other)),
        };
        for (flag, summary) in raw {
            let path = |field: &str| format!("features.{flag}.{field}");
            let Value::Object(summary) = summary else {
                return Err(self.wrong(&format!("features.{flag}"), "an object", &summary));
            };
            let mut at_flag = Fields {
                index: self.index,
                fields: summary,
            };
            let context_kinds = match at_flag.take("contextKinds") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(kinds)) => kinds
                    .into_iter()
                    .map(|k| match k {
                        Value::String(k) => Ok(k),
                        other => Err(self.wrong(&path("contextKinds[]"), "a string", &other)),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(self.wrong(&path("contextKinds"), "an array", &other)),
            };
            let mut counters = Vec::new();
            let raw_counters = match at_flag.take("counters") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(c)) => c,
                Some(other) => return Err(self.wrong(&path("counters"), "an array", &other)),
            };
            for (i, counter) in raw_counters.into_iter().enumerate() {
                let Value::Object(counter) = counter else {
                    return Err(self.wrong(
                        &path(&format!("counters[{i}]")),
                        "an object",
                        &counter,
                    ));
                };
                let mut at = Fields {
                    index: self.index,
                    fields: counter,
                };
                let relocate = |e: EventError| match e {
                    EventError::Field { field, problem, .. } => {
                        self.problem(&path(&format!("counters[{i}].{field}")), problem)
                    }
                    other => other,
                };
                counters.push(Counter {
                    value: at.any("value"),
                    variation: at
                        .optional_u64("variation")
                        .map_err(relocate)?
                        .map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
                    version: at.optional_u64("version").map_err(relocate)?,
                    count: at.date("count").map_err(relocate)?,
                    unknown: at.fields.get("unknown") == Some(&Value::Bool(true)),
                });
            }
            let default = at_flag.any("default");
            features.insert(
                flag,
                FlagSummary {
                    default,
                    context_kinds,
                    counters,
                },
            );
        }
        Ok(SummaryEvent {
            start_date,
            end_date,
            features,
        })
    }
}

/// The JSON type of a value, for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
