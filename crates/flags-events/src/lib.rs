//! `flags-events`: analytics events as flagd reads and exports them.
//!
//! - [`parse_bulk`] reads a `/bulk` body in LaunchDarkly's server-side event format (`feature`,
//!   `debug`, `custom`, `identify`, `index`, `summary`; other kinds are kept by name), so events
//!   from official SDKs and from flagd's own SDK are one stream; [`SdkEvent::to_json`] writes an
//!   event back as an SDK sends it. Every problem names the event's
//!   index and the field, `[3].creationDate: expected a whole number, found a string`.
//! - [`to_records`] (and [`into_records`], which moves rather than copies) turns events into
//!   the flat records exporters write: evaluations in go-feature-flag's `FeatureEvent` shape (`kind`, `contextKind`, `userKey`, `creationDate` in
//!   Unix milliseconds, `key`, `variation`, `value`, `default`, `version`, `source`,
//!   `metadata`), tracked goals as `custom`, one `summary` record per counter, and the SDK's
//!   `metrics` events (latency and size of its calls to flagd, timeout and error counts) as
//!   `metrics`. Each field is documented on [`FeatureRecord`], [`CustomRecord`],
//!   [`SummaryRecord`] and [`MetricsRecord`]; records read back with serde as they were written.
//! - [`Summarizer`] counts evaluations per flag, variation and version between two flushes and
//!   hands over the period's `summary` event, which [`SummaryEvent::to_json`] writes as SDKs
//!   send it (and [`parse_bulk`] reads back).
//!
//! No I/O: bytes in, records out.

#![warn(missing_docs)]

// The README's example runs as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod input;
mod json;
mod record;
mod summary;

pub use input::{
    ContextEvent, Counter, CustomEvent, EventContext, EventError, FeatureEvent, FlagSummary,
    Metric, MetricsEvent, SdkEvent, SummaryEvent, parse_bulk, parse_event,
};
pub use record::{
    ANONYMOUS_USER, CustomRecord, FeatureRecord, JsonText, Metadata, MetricsRecord, Record,
    SDK_DEFAULT, SummaryRecord, USER, Word, into_records, to_records,
};
pub use summary::{Evaluation, Summarizer};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
