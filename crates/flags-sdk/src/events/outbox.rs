//! What the processor's worker does with each event it takes off the queue, with no I/O: count
//! evaluations into the summary, write the events that go out in full, index contexts the first
//! time they are seen, and hand over a payload at each flush.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use flags_core::Context;
use flags_events::{
    ContextEvent, CustomEvent, Evaluation, EventContext, FeatureEvent, MetricsEvent, SdkEvent,
    Summarizer,
};
use lru::LruCache;
use serde_json::Value;

use super::EvaluationEvent;
use super::redact::Redactor;

/// One event as it waits in the queue.
pub(crate) enum Input {
    Evaluation(EvaluationEvent),
    Custom {
        creation_date: u64,
        context: Arc<Context>,
        key: String,
        data: Option<Value>,
        metric_value: Option<f64>,
    },
    Identify {
        creation_date: u64,
        context: Arc<Context>,
    },
    Metrics(MetricsEvent),
}

/// The events of the next payload.
pub(crate) struct Outbox {
    events: Vec<SdkEvent>,
    capacity: usize,
    summary: Summarizer,
    /// Pushed events this outbox accounts for: sent with its payload, or dropped with it.
    carried: u64,
    /// Fully-qualified keys of the contexts already sent in an `index` or `identify` event.
    seen: LruCache<String, ()>,
    /// The context noticed last: evaluations come in runs for one context, and the same shared
    /// copy of it (see `recent`), so most lookups end here.
    last_seen: Option<Arc<Context>>,
    redactor: Redactor,
}

/// One payload for `/bulk`.
#[derive(Debug)]
pub(crate) struct Payload {
    pub(crate) body: Vec<u8>,
    /// The pushed events it accounts for.
    pub(crate) carried: u64,
}

/// What became of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// In the outbox (or its summary).
    Held,
    /// The outbox was full.
    Dropped,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, context_keys: usize, redactor: Redactor) -> Outbox {
        Outbox {
            events: Vec::new(),
            capacity: capacity.max(1),
            summary: Summarizer::new(),
            carried: 0,
            seen: LruCache::new(NonZeroUsize::new(context_keys).unwrap_or(NonZeroUsize::MIN)),
            last_seen: None,
            redactor,
        }
    }

    /// Events waiting, the summary not included.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.summary.is_empty()
    }

    /// Forgets which contexts were indexed, as LaunchDarkly's SDKs do every
    /// `contextKeysFlushInterval`, so a long-lived context is indexed again now and then.
    pub(crate) fn forget_contexts(&mut self) {
        self.seen.clear();
        self.last_seen = None;
    }

    /// Takes one input; `now` (Unix milliseconds) decides whether a debug window is open.
    pub(crate) fn take(&mut self, input: Input, now: u64) -> Taken {
        let mut out: [Option<SdkEvent>; 3] = [None, None, None];
        match input {
            Input::Evaluation(e) => {
                if !e.exclude_from_summaries {
                    self.summary.count(
                        Evaluation {
                            at: e.creation_date,
                            flag: &e.flag_key,
                            version: e.version,
                            variation: e.variation,
                            value: &e.value,
                            default: &e.default,
                        },
                        e.context.kinds(),
                    );
                }
                out[0] = self.index(&e.context, e.creation_date);
                let debug = e.debug_events_until_date.is_some_and(|until| until > now);
                if e.track_events || debug {
                    let feature = |context, debug| {
                        SdkEvent::Feature(FeatureEvent {
                            creation_date: e.creation_date,
                            key: e.flag_key.to_string(),
                            version: e.version,
                            variation: e.variation,
                            value: e.value.clone(),
                            default: e.default.clone(),
                            reason: e.reason.as_ref().and_then(|r| serde_json::to_value(r).ok()),
                            context,
                            prereq_of: e.prereq_of.as_deref().map(str::to_owned),
                            debug,
                        })
                    };
                    if e.track_events {
                        out[1] = Some(feature(EventContext::Keys(keys(&e.context)), false));
                    }
                    if debug {
                        let context = self.redactor.context_json(&e.context);
                        out[2] = Some(feature(EventContext::Full(context), true));
                    }
                }
            }
            Input::Custom {
                creation_date,
                context,
                key,
                data,
                metric_value,
            } => {
                out[0] = self.index(&context, creation_date);
                out[1] = Some(SdkEvent::Custom(CustomEvent {
                    creation_date,
                    key,
                    context: EventContext::Full(self.redactor.context_json(&context)),
                    data,
                    metric_value,
                }));
            }
            Input::Identify {
                creation_date,
                context,
            } => {
                // An identified context needs no index event of its own later.
                self.index(&context, creation_date);
                out[0] = Some(SdkEvent::Identify(ContextEvent {
                    creation_date,
                    context: self.redactor.context_json(&context),
                }));
            }
            Input::Metrics(m) => out[0] = Some(SdkEvent::Metrics(m)),
        }
        let count = out.iter().flatten().count();
        if self.events.len() + count > self.capacity {
            if let Some(SdkEvent::Index(_) | SdkEvent::Identify(_)) = &out[0] {
                // Not sent, so not seen: the context's next event indexes it.
                self.forget_last();
            }
            return Taken::Dropped;
        }
        self.events.extend(out.into_iter().flatten());
        self.carried += 1;
        Taken::Held
    }

    fn forget_last(&mut self) {
        if let Some(last) = self.last_seen.take() {
            self.seen.pop(last.fully_qualified_key().as_ref());
        }
    }

    /// An `index` event for `context` if it was not seen lately.
    fn index(&mut self, context: &Arc<Context>, creation_date: u64) -> Option<SdkEvent> {
        if self
            .last_seen
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, context))
        {
            return None;
        }
        self.last_seen = Some(Arc::clone(context));
        let key = context.fully_qualified_key();
        if self.seen.get(key.as_ref()).is_some() {
            return None;
        }
        self.seen.put(key.into_owned(), ());
        Some(SdkEvent::Index(ContextEvent {
            creation_date,
            context: self.redactor.context_json(context),
        }))
    }

    /// The period's payload (its events, then its summary), and an empty outbox; `None` when
    /// there is nothing to send.
    pub(crate) fn flush(&mut self) -> Option<Payload> {
        if self.is_empty() {
            return None;
        }
        let mut events: Vec<Value> = self.events.drain(..).filter_map(|e| e.to_json()).collect();
        if let Some(summary) = self.summary.take() {
            events.push(summary.to_json());
        }
        let carried = std::mem::take(&mut self.carried);
        // A `Vec<Value>` always serializes.
        let body = serde_json::to_vec(&events).unwrap_or_default();
        Some(Payload { body, carried })
    }
}

/// `{kind: key}` for each kind of `context`.
fn keys(context: &Context) -> BTreeMap<String, String> {
    context
        .contexts()
        .iter()
        .map(|c| (c.kind().to_owned(), c.key().to_owned()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn outbox(capacity: usize) -> Outbox {
        Outbox::new(capacity, 2, Redactor::default())
    }

    fn evaluation(context: &Arc<Context>, flag: &str) -> EvaluationEvent {
        EvaluationEvent {
            version: Some(3),
            variation: Some(1),
            ..EvaluationEvent::new(Arc::clone(context), flag, json!(true), json!(false))
        }
    }

    fn kinds(payload: &Payload) -> Vec<String> {
        let events: Vec<Value> = serde_json::from_slice(&payload.body).unwrap();
        events
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    fn user(key: &str) -> Arc<Context> {
        Arc::new(Context::user(key).unwrap())
    }

    #[test]
    fn contexts_are_indexed_once_until_forgotten_or_evicted() {
        let mut o = outbox(100);
        let (a, b, c) = (user("a"), user("b"), user("c"));
        for context in [&a, &a, &b, &Arc::new(Context::user("a").unwrap())] {
            assert_eq!(
                o.take(Input::Evaluation(evaluation(context, "f")), 0),
                Taken::Held
            );
        }
        assert_eq!(kinds(&o.flush().unwrap()), ["index", "index", "summary"]);
        // Two keys fit: c evicts b, the least recently seen, so b is indexed again.
        for context in [&c, &b, &b] {
            o.take(Input::Evaluation(evaluation(context, "f")), 0);
        }
        assert_eq!(kinds(&o.flush().unwrap()), ["index", "index", "summary"]);
        o.forget_contexts();
        o.take(Input::Evaluation(evaluation(&a, "f")), 0);
        assert_eq!(kinds(&o.flush().unwrap()), ["index", "summary"]);
        assert!(o.flush().is_none());
    }

    #[test]
    fn full_and_debug_events_go_out_as_the_flag_asks() {
        let mut o = outbox(100);
        let a = user("a");
        o.take(Input::Evaluation(evaluation(&a, "summary-only")), 0);
        let tracked = EvaluationEvent {
            track_events: true,
            ..evaluation(&a, "tracked")
        };
        o.take(Input::Evaluation(tracked), 0);
        let debugged = EvaluationEvent {
            debug_events_until_date: Some(10),
            ..evaluation(&a, "debugged")
        };
        o.take(Input::Evaluation(debugged.clone()), 9);
        // A closed window sends nothing more.
        o.take(Input::Evaluation(debugged), 10);
        let excluded = EvaluationEvent {
            exclude_from_summaries: true,
            ..evaluation(&a, "excluded")
        };
        o.take(Input::Evaluation(excluded), 0);
        let payload = o.flush().unwrap();
        assert_eq!(payload.carried, 5);
        let events: Vec<Value> = serde_json::from_slice(&payload.body).unwrap();
        assert_eq!(kinds(&payload), ["index", "feature", "debug", "summary"]);
        assert_eq!(events[1]["contextKeys"], json!({"user": "a"}));
        assert_eq!(events[2]["context"], json!({"kind": "user", "key": "a"}));
        let counted: Vec<&String> = events[3]["features"].as_object().unwrap().keys().collect();
        assert_eq!(counted, ["debugged", "summary-only", "tracked"]);
        assert_eq!(events[3]["features"]["debugged"]["counters"][0]["count"], 2);
    }

    #[test]
    fn a_full_outbox_drops_what_does_not_fit_but_still_counts_it() {
        let mut o = outbox(2);
        let a = user("a");
        let tracked = || {
            Input::Evaluation(EvaluationEvent {
                track_events: true,
                ..evaluation(&a, "t")
            })
        };
        assert_eq!(o.take(tracked(), 0), Taken::Held);
        assert_eq!(o.take(tracked(), 0), Taken::Dropped);
        let payload = o.flush().unwrap();
        assert_eq!(payload.carried, 1);
        let events: Vec<Value> = serde_json::from_slice(&payload.body).unwrap();
        assert_eq!(events[2]["features"]["t"]["counters"][0]["count"], 2);
    }
}
