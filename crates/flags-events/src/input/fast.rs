//! The direct reader of `/bulk` bodies: the events deserialized straight from the JSON text,
//! with no `serde_json::Value` tree of the whole body in between.
//!
//! It reads only the bodies it is sure of. On anything else (a body that is not an array of
//! objects, invalid JSON, a field of an unexpected type, a missing field, a field named twice in
//! one object) it gives up, and [`parse_bulk`](super::parse_bulk) reads the body again with the
//! tree reader, [`parse_bulk_tree`](super::parse_bulk_tree), whose result is the one returned.
//! Errors are therefore the tree reader's by construction, and on every body this reader does
//! read, the two must give the same events (the tests compare them).
//!
//! Each event object is read once, in any field order: every field any kind has is kept in
//! [`EventFields`] as it comes, and the event is built when the object ends, from the fields its
//! kind reads. Values that stay JSON (`value`, `default`, `reason`, `data`, `context`, `user`,
//! and a summary's defaults and counter values) are deserialized as `Value` by serde_json, as in
//! the tree. Fields no kind reads are decoded and dropped ([`Skip`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{
    ContextEvent, Counter, CustomEvent, EventContext, FeatureEvent, FlagSummary, Metric,
    MetricsEvent, SdkEvent, SummaryEvent,
};

#[cfg(test)]
mod tests;

/// The events of `body`, or `None` when this reader leaves the body to the tree reader.
pub(crate) fn parse_bulk_fast(body: &[u8]) -> Option<Vec<SdkEvent>> {
    // One UTF-8 check of the whole body, rather than serde_json's of each string and key
    // (which `from_slice` makes and `from_str` does not need): every string lies between two
    // ASCII quotes of valid UTF-8, so it is valid too, and escapes are checked as they are
    // decoded either way. A body that is not UTF-8 is not JSON; the tree reader says why.
    let text = std::str::from_utf8(body).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let events = de.deserialize_seq(Events).ok()?;
    // Only whitespace may follow the array, as `serde_json::from_slice` requires.
    de.end().ok()?;
    Some(events)
}

/// The error that makes [`parse_bulk_fast`] give up; its text is never shown.
fn give_up<E: de::Error>() -> E {
    E::custom("left to the tree reader")
}

/// The top-level array.
struct Events;

impl<'de> Visitor<'de> for Events {
    type Value = Vec<SdkEvent>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::new();
        while let Some(event) = seq.next_element_seed(Event)? {
            events.push(event);
        }
        Ok(events)
    }
}

/// One event object.
struct Event;

impl<'de> DeserializeSeed<'de> for Event {
    type Value = SdkEvent;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SdkEvent, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Event {
    type Value = SdkEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SdkEvent, A::Error> {
        let mut at = EventFields::default();
        let mut seen = Seen::default();
        while let Some(field) = map.next_key::<EventField>()? {
            seen.first(field.place())?;
            match field {
                EventField::Kind => at.kind = map.next_value()?,
                EventField::CreationDate => at.creation_date = whole(&mut map)?,
                EventField::Key => at.key = map.next_value()?,
                EventField::Version => at.version = whole(&mut map)?,
                EventField::Variation => at.variation = whole(&mut map)?,
                EventField::Value => at.value = Some(map.next_value()?),
                EventField::Default => at.default = Some(map.next_value()?),
                EventField::Reason => at.reason = Some(map.next_value()?),
                EventField::Context => at.context = Some(map.next_value()?),
                EventField::ContextKeys => at.context_keys = map.next_value()?,
                EventField::User => at.user = Some(map.next_value()?),
                EventField::UserKey => at.user_key = map.next_value()?,
                EventField::PrereqOf => at.prereq_of = map.next_value()?,
                EventField::Data => at.data = Some(map.next_value()?),
                EventField::MetricValue => at.metric_value = map.next_value()?,
                EventField::Metric => at.metric = map.next_value()?,
                EventField::Api => at.api = map.next_value()?,
                EventField::Labels => at.labels = map.next_value()?,
                EventField::StartDate => at.start_date = whole(&mut map)?,
                EventField::EndDate => at.end_date = whole(&mut map)?,
                EventField::Features => at.features = map.next_value::<Option<Features>>()?,
                EventField::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        at.build().ok_or_else(give_up)
    }
}

/// The fields of one event object that some kind reads, as read: strings, numbers and objects
/// already of their type (`None` when absent or `null`, which every kind reads alike), and
/// JSON values as they were (`None` when absent, so that a kind can tell `null` apart).
#[derive(Default)]
struct EventFields {
    kind: Option<Kind>,
    creation_date: Option<u64>,
    key: Option<String>,
    version: Option<u64>,
    variation: Option<u64>,
    value: Option<Value>,
    default: Option<Value>,
    reason: Option<Value>,
    context: Option<Value>,
    context_keys: Option<BTreeMap<String, String>>,
    user: Option<Value>,
    user_key: Option<String>,
    prereq_of: Option<String>,
    data: Option<Value>,
    metric_value: Option<f64>,
    metric: Option<String>,
    api: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    start_date: Option<u64>,
    end_date: Option<u64>,
    features: Option<Features>,
}

impl EventFields {
    /// The event, as [`parse_event`](super::parse_event) makes it from the same fields; `None`
    /// where it would report a problem.
    fn build(self) -> Option<SdkEvent> {
        let kind = self.kind?;
        Some(match kind {
            Kind::Feature | Kind::Debug => SdkEvent::Feature(FeatureEvent {
                creation_date: self.creation_date?,
                key: self.key?,
                version: self.version,
                variation: self
                    .variation
                    .map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
                value: self.value.unwrap_or(Value::Null),
                default: self.default.unwrap_or(Value::Null),
                reason: self.reason.filter(|v| !v.is_null()),
                context: context(self.context, self.context_keys, self.user, self.user_key)?,
                prereq_of: self.prereq_of,
                debug: matches!(kind, Kind::Debug),
            }),
            Kind::Custom => SdkEvent::Custom(CustomEvent {
                creation_date: self.creation_date?,
                key: self.key?,
                context: context(self.context, self.context_keys, self.user, self.user_key)?,
                data: self.data.filter(|v| !v.is_null()),
                metric_value: self.metric_value,
            }),
            Kind::Identify | Kind::Index => {
                let event = ContextEvent {
                    creation_date: self.creation_date?,
                    context: self.context.filter(Value::is_object)?,
                };
                if matches!(kind, Kind::Identify) {
                    SdkEvent::Identify(event)
                } else {
                    SdkEvent::Index(event)
                }
            }
            Kind::Summary => SdkEvent::Summary(SummaryEvent {
                start_date: self.start_date?,
                end_date: self.end_date?,
                features: self.features.map(|f| f.0).unwrap_or_default(),
            }),
            Kind::Metrics => {
                let metric = Metric::from_name(&self.metric?)?;
                let value = match self.value {
                    Some(Value::Number(n)) => n.as_f64().unwrap_or_default(),
                    Some(_) => return None,
                    None if matches!(metric, Metric::TimeoutError | Metric::InternalError) => 1.0,
                    None => return None,
                };
                SdkEvent::Metrics(MetricsEvent {
                    creation_date: self.creation_date?,
                    metric,
                    api: self.api?,
                    value,
                    labels: self.labels.unwrap_or_default(),
                })
            }
            Kind::Other(kind) => SdkEvent::Other { kind },
        })
    }
}

/// An event's `kind`, told as it is read: only a kind read no further is kept as text.
enum Kind {
    Feature,
    Debug,
    Custom,
    Identify,
    Index,
    Summary,
    Metrics,
    Other(String),
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;

        impl Visitor<'_> for Name {
            type Value = Kind;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event kind")
            }

            fn visit_str<E: de::Error>(self, kind: &str) -> Result<Kind, E> {
                Ok(match kind {
                    "feature" => Kind::Feature,
                    "debug" => Kind::Debug,
                    "custom" => Kind::Custom,
                    "identify" => Kind::Identify,
                    "index" => Kind::Index,
                    "summary" => Kind::Summary,
                    "metrics" => Kind::Metrics,
                    other => Kind::Other(other.to_owned()),
                })
            }
        }

        deserializer.deserialize_str(Name)
    }
}

/// Who a `feature` or `custom` event is about: `context`, else `contextKeys`, else a legacy
/// `user` object, else `userKey`, as the tree reader takes them.
fn context(
    context: Option<Value>,
    keys: Option<BTreeMap<String, String>>,
    user: Option<Value>,
    user_key: Option<String>,
) -> Option<EventContext> {
    match context {
        None | Some(Value::Null) => {}
        Some(context @ Value::Object(_)) => return Some(EventContext::Full(context)),
        Some(_) => return None,
    }
    if let Some(keys) = keys {
        return Some(EventContext::Keys(keys));
    }
    if let Some(user @ Value::Object(_)) = user {
        return Some(EventContext::Full(user));
    }
    let key = user_key?;
    Some(EventContext::Keys(BTreeMap::from([(
        "user".to_owned(),
        key,
    )])))
}

/// The fields of one object read so far, by their place in the object's field list: a field
/// named twice is left to the tree reader (whose map keeps the last).
#[derive(Default)]
struct Seen(u32);

impl Seen {
    fn first<E: de::Error>(&mut self, place: Option<u32>) -> Result<(), E> {
        let Some(place) = place else {
            return Ok(());
        };
        let bit = 1 << place;
        if self.0 & bit != 0 {
            return Err(give_up());
        }
        self.0 |= bit;
        Ok(())
    }
}

/// Declares a field-name enum read from an object's keys: each name maps to a variant, any
/// other key to `Other`. Keys are compared once decoded, so an escaped key is its name.
macro_rules! field_names {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        enum $name {
            $($variant,)*
            Other,
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Names;

                impl Visitor<'_> for Names {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a field name")
                    }

                    fn visit_str<E: de::Error>(self, name: &str) -> Result<$name, E> {
                        Ok(match name {
                            $($text => $name::$variant,)*
                            _ => $name::Other,
                        })
                    }
                }

                deserializer.deserialize_str(Names)
            }
        }

        impl $name {
            /// The field's place in the list, to tell a field named twice; `None` for the
            /// others, which may be many.
            fn place(self) -> Option<u32> {
                match self {
                    $name::Other => None,
                    named => Some(named as u32),
                }
            }
        }
    };
}

field_names! {
    /// The fields of an event object that some kind reads.
    EventField {
        Kind = "kind",
        CreationDate = "creationDate",
        Key = "key",
        Version = "version",
        Variation = "variation",
        Value = "value",
        Default = "default",
        Reason = "reason",
        Context = "context",
        ContextKeys = "contextKeys",
        User = "user",
        UserKey = "userKey",
        PrereqOf = "prereqOf",
        Data = "data",
        MetricValue = "metricValue",
        Metric = "metric",
        Api = "api",
        Labels = "labels",
        StartDate = "startDate",
        EndDate = "endDate",
        Features = "features",
    }
}

field_names! {
    /// The fields of one flag's entry in a summary's `features`.
    FlagField {
        Default = "default",
        ContextKinds = "contextKinds",
        Counters = "counters",
    }
}

field_names! {
    /// The fields of one counter of a summary.
    CounterField {
        Value = "value",
        Variation = "variation",
        Version = "version",
        Count = "count",
        Unknown = "unknown",
    }
}

/// A whole number ≥ 0 as the tree reader takes one (`optional_u64`): an integer, or a float
/// with no fraction below 1.8e19 (SDKs with a single number type send 3.0 for 3); `null` or
/// absent is `None`.
fn whole<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<u64>, A::Error> {
    Ok(map.next_value::<Option<Whole>>()?.map(|w| w.0))
}

/// See [`whole`].
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Number;

        impl Visitor<'_> for Number {
            type Value = Whole;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number ≥ 0")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
                u64::try_from(v).map(Whole).map_err(|_| give_up())
            }

            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::float_cmp
            )]
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<Whole, E> {
                if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 {
                    Ok(Whole(f as u64))
                } else {
                    Err(give_up())
                }
            }
        }

        deserializer.deserialize_any(Number)
    }
}

/// A summary's `features`: each flag's counters by flag key.
struct Features(BTreeMap<String, FlagSummary>);

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Flags;

        impl<'de> Visitor<'de> for Flags {
            type Value = Features;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of flags")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Features, A::Error> {
                let mut features = BTreeMap::new();
                while let Some(flag) = map.next_key::<String>()? {
                    let summary = map.next_value::<Flag>()?;
                    if features.insert(flag, summary.0).is_some() {
                        return Err(give_up());
                    }
                }
                Ok(Features(features))
            }
        }

        deserializer.deserialize_map(Flags)
    }
}

/// One flag's entry in a summary.
struct Flag(FlagSummary);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;

        impl<'de> Visitor<'de> for Entry {
            type Value = Flag;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a flag's summary")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Flag, A::Error> {
                let mut seen = Seen::default();
                let (mut default, mut context_kinds, mut counters) = (None, None, None);
                while let Some(field) = map.next_key::<FlagField>()? {
                    seen.first(field.place())?;
                    match field {
                        FlagField::Default => default = Some(map.next_value()?),
                        FlagField::ContextKinds => context_kinds = map.next_value()?,
                        FlagField::Counters => {
                            counters = map.next_value::<Option<Vec<CounterIn>>>()?;
                        }
                        FlagField::Other => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(Flag(FlagSummary {
                    default: default.unwrap_or(Value::Null),
                    context_kinds: context_kinds.unwrap_or_default(),
                    counters: counters
                        .unwrap_or_default()
                        .into_iter()
                        .map(|c| c.0)
                        .collect(),
                }))
            }
        }

        deserializer.deserialize_map(Entry)
    }
}

/// One counter of a summary.
struct CounterIn(Counter);

impl<'de> Deserialize<'de> for CounterIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> Visitor<'de> for Fields {
            type Value = CounterIn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a counter")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CounterIn, A::Error> {
                let mut seen = Seen::default();
                let (mut value, mut variation, mut version, mut count) = (None, None, None, None);
                let mut unknown = false;
                while let Some(field) = map.next_key::<CounterField>()? {
                    seen.first(field.place())?;
                    match field {
                        CounterField::Value => value = Some(map.next_value()?),
                        CounterField::Variation => variation = whole(&mut map)?,
                        CounterField::Version => version = whole(&mut map)?,
                        CounterField::Count => count = whole(&mut map)?,
                        // Only `true` counts; any other value is read as `false`.
                        CounterField::Unknown => {
                            unknown = map.next_value::<Value>()? == Value::Bool(true);
                        }
                        CounterField::Other => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(CounterIn(Counter {
                    value: value.unwrap_or(Value::Null),
                    variation: variation.map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
                    version,
                    count: count.ok_or_else(give_up)?,
                    unknown,
                }))
            }
        }

        deserializer.deserialize_map(Fields)
    }
}

/// Any JSON value, decoded and dropped: a field no kind reads.
///
/// Not serde's `IgnoredAny`, which serde_json skips over without decoding: it lets through
/// strings that are not valid UTF-8 or hold a lone surrogate escape (`"\ud800"`), numbers out
/// of range (`1e400`) and nesting deeper than serde_json's recursion limit, all of which fail
/// when the body is parsed into a `Value`. Decoding them as `Value` does keeps the two readers
/// agreeing on which bodies are JSON.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}
