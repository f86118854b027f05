//! `flags-core`: the shared vocabulary of flagd.
//!
//! Values, contexts, the LaunchDarkly server-side flag and segment model, evaluation results, and
//! the small traits that join the engine, the stores and the server. It does no I/O and knows
//! nothing of tokio, axum, sqlx or redis; it does not evaluate flags (that is `flags-eval`).
//!
//! ```
//! use flags_core::{Context, EvalDetail, Flag, Reason};
//! use serde_json::json;
//!
//! // A flag in LaunchDarkly's server-side JSON form; a malformed one names the bad field.
//! let flag = Flag::from_json_value(json!({
//!     "key": "dark-mode", "version": 3, "on": true,
//!     "variations": [false, true], "fallthrough": {"variation": 1}
//! }))?;
//! assert_eq!(flag.variations.len(), 2);
//! assert!(Flag::from_json_value(json!({"variations": "on"})).is_err());
//!
//! // A context, in the multi-kind form or the legacy user form.
//! let context = Context::from_json(&json!({"kind": "user", "key": "user-1", "plan": "pro"}))?;
//! assert_eq!(context.key(), Some("user-1"));
//!
//! // A result, written as LaunchDarkly's SDKs write it.
//! let detail = EvalDetail::variation(&flag.variations[1], 1, Reason::FALLTHROUGH);
//! assert_eq!(
//!     serde_json::to_value(&detail)?,
//!     json!({"value": true, "variationIndex": 1, "reason": {"kind": "FALLTHROUGH"}})
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

// The README's example runs as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod attr;
pub mod context;
mod error;
pub mod eval;
pub mod memory;
pub mod model;
pub mod problem;
pub mod traits;

pub use serde_json::Value;

pub use context::{AttrRef, AttrRefError, Context, ContextError, SingleContext};
pub use error::LoadError;
pub use eval::{BigSegmentsStatus, ErrorKind, EvalDetail, OwnedEvalDetail, Reason, ReasonJson};
pub use memory::{InMemoryKillSet, InMemoryOverrides};
pub use model::*;
pub use problem::{Problem, Severity};
pub use traits::{
    BigSegmentMembership, BigSegmentStore, BigSegmentStoreError, BigSegmentStoreMetadata, ItemKind,
    KillSet, OverrideLookup,
};
