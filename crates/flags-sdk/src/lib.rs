//! `flags-sdk`: evaluate flags in-process, in nanoseconds, from data that flagd keeps current.
//!
//! A [`Client`] holds one immutable snapshot of LaunchDarkly-format flags and segments (the
//! same `flags-data` snapshot flagd serves from) and swaps it whole on every update, so
//! evaluations never wait on updates and take no lock. Its data comes from
//! - flagd's stream (`GET /all`, the default): a `put`, then `patch`es and `delete`s, with
//!   reconnects that back off, and a fresh `put` after each;
//! - polling flagd's `GET /sdk/latest-all`, with ETags;
//! - flag files in the format flagd reads, reloaded when they change;
//! - fixed data, or none at all (offline).
//!
//! Through any outage the client keeps the data it last had. It tells the application what
//! changes: [`FlagTracker`] for flag configuration changes (including flags affected through a
//! prerequisite or segment, transitively) and for changes of one flag's value for one context,
//! [`DataSourceStatusProvider`] for the connection, [`BigSegmentStoreStatusProvider`] for a
//! big-segment store. [`openfeature::Provider`] makes the client an OpenFeature provider.
//!
//! Every evaluation is recorded for flagd's `/bulk` in LaunchDarkly's event format (summaries,
//! full events for tracked flags and experiments, `index` events once per context, goals from
//! [`Client::track`], metrics of the client's own calls to flagd), through an
//! [`EventProcessor`] whose queue drops and counts rather than ever blocking an evaluation.
//!
//! Kills and per-entity overrides made in flagd reach the client inside the flag data (a killed
//! flag is served off, an override as a target placed first), so the client answers exactly as
//! flagd does.
//!
//! ```
//! use flags_core::{Context, FlagData};
//! use flags_sdk::Client;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data: FlagData = serde_json::from_str(
//!     r#"{"flags": {"dark-mode": {"key": "dark-mode", "version": 1, "on": true,
//!         "variations": [false, true], "fallthrough": {"variation": 1}}}}"#,
//! )?;
//! let client = Client::builder("sdk-key").data(data).build()?;
//! let context = Context::user("user-1")?;
//! assert!(client.bool_variation(&context, "dark-mode", false));
//! assert!(!client.bool_variation(&context, "no-such-flag", false));
//! client.close();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

// The README's examples run as doctests too, so they cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod big_segments;
mod client;
mod config;
mod data;
mod detail;
mod events;
mod flags_state;
mod inner;
mod listen;
pub mod openfeature;
mod source;
mod status;
mod test_data;
mod tracker;
pub mod typed;

pub use big_segments::{
    BigSegmentStoreStatus, BigSegmentStoreStatusProvider, BigSegmentsConfig,
    InMemoryBigSegmentStore,
};
pub use client::{Client, ClientBuilder, FlagTracker};
pub use config::{BuildError, DEFAULT_BASE_URL, DataSource, EventsConfig, PollingFallback};
pub use data::{DataHook, DataUpdate};
pub use detail::Detail;
pub use events::{CloseReport, EvaluationEvent, EventProcessor, EventStats};
pub use flags_state::{AllFlagsState, FlagState, FlagsStateOptions};
pub use listen::{Listener, ListenerId, RecvError};
pub use status::{
    DataSourceErrorKind, DataSourceState, DataSourceStatus, DataSourceStatusProvider, ErrorInfo,
};
pub use test_data::TestData;
pub use tracker::{FlagChangeEvent, FlagValueChangeEvent};

/// Re-exported so applications name contexts, reasons and evaluation errors without another
/// dependency.
pub use flags_core::{Context, ErrorKind, Reason};
