//! Summaries: counts of evaluations per flag, variation and version between two flushes, as
//! LaunchDarkly's SDKs send them in `summary` events. Counting an evaluation of a flag already
//! seen allocates nothing.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::input::{Counter, FlagSummary, SummaryEvent};

/// Counts evaluations until [`Summarizer::take`] hands the period's summary over.
#[derive(Debug, Default)]
pub struct Summarizer {
    start_date: u64,
    end_date: u64,
    flags: HashMap<String, Counts>,
}

#[derive(Debug)]
struct Counts {
    default: Value,
    context_kinds: Vec<String>,
    /// (variation, version, value served, count); a flag has few, so a list is fastest.
    counters: Vec<(Option<usize>, Option<u64>, Value, u64)>,
}

/// One evaluation to count.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'a> {
    /// When, in Unix milliseconds.
    pub at: u64,
    /// The flag key.
    pub flag: &'a str,
    /// The flag's version; `None` when the flag was not found.
    pub version: Option<u64>,
    /// The variation served, if any.
    pub variation: Option<usize>,
    /// The value served.
    pub value: &'a Value,
    /// The default the application passed.
    pub default: &'a Value,
}

impl Summarizer {
    /// An empty summarizer.
    pub fn new() -> Summarizer {
        Summarizer::default()
    }

    /// Counts one evaluation for a context of these kinds.
    pub fn count<'k>(
        &mut self,
        e: Evaluation<'_>,
        context_kinds: impl IntoIterator<Item = &'k str>,
    ) {
        if self.flags.is_empty() {
            (self.start_date, self.end_date) = (e.at, e.at);
        } else {
            self.start_date = self.start_date.min(e.at);
            self.end_date = self.end_date.max(e.at);
        }
        let counts = match self.flags.get_mut(e.flag) {
            Some(counts) => counts,
            None => self
                .flags
                .entry(e.flag.to_owned())
                .or_insert_with(|| Counts {
                    default: e.default.clone(),
                    context_kinds: Vec::new(),
                    counters: Vec::new(),
                }),
        };
        for kind in context_kinds {
            if !counts.context_kinds.iter().any(|k| k == kind) {
                counts.context_kinds.push(kind.to_owned());
            }
        }
        match counts
            .counters
            .iter_mut()
            .find(|(variation, version, _, _)| *variation == e.variation && *version == e.version)
        {
            Some((_, _, _, count)) => *count += 1,
            None => counts
                .counters
                .push((e.variation, e.version, e.value.clone(), 1)),
        }
    }

    /// Whether nothing was counted since the last [`Summarizer::take`].
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// The period's summary, and a fresh period; `None` when nothing was counted.
    pub fn take(&mut self) -> Option<SummaryEvent> {
        if self.flags.is_empty() {
            return None;
        }
        let flags = std::mem::take(&mut self.flags);
        let mut features = BTreeMap::new();
        for (key, counts) in flags {
            let mut context_kinds = counts.context_kinds;
            context_kinds.sort();
            features.insert(
                key,
                FlagSummary {
                    default: counts.default,
                    context_kinds,
                    counters: counts
                        .counters
                        .into_iter()
                        .map(|(variation, version, value, count)| Counter {
                            value,
                            variation,
                            version,
                            count,
                            unknown: version.is_none(),
                        })
                        .collect(),
                },
            );
        }
        let summary = SummaryEvent {
            start_date: self.start_date,
            end_date: self.end_date,
            features,
        };
        *self = Summarizer::default();
        Some(summary)
    }
}

impl SummaryEvent {
    /// The event as LaunchDarkly's SDKs send it in a `/bulk` body.
    pub fn to_json(&self) -> Value {
        let features: serde_json::Map<String, Value> = self
            .features
            .iter()
            .map(|(key, flag)| {
                let counters: Vec<Value> = flag
                    .counters
                    .iter()
                    .map(|c| {
                        let mut counter = json!({"value": c.value, "count": c.count});
                        if let Some(variation) = c.variation {
                            counter["variation"] = json!(variation);
                        }
                        if let Some(version) = c.version {
                            counter["version"] = json!(version);
                        }
                        if c.unknown {
                            counter["unknown"] = json!(true);
                        }
                        counter
                    })
                    .collect();
                (
                    key.clone(),
                    json!({"default": flag.default, "contextKinds": flag.context_kinds,
                           "counters": counters}),
                )
            })
            .collect();
        json!({"kind": "summary", "startDate": self.start_date, "endDate": self.end_date,
               "features": features})
    }
}
