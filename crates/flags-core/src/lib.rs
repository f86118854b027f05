//! `flags-core`: the shared vocabulary of flagd.
//!
//! Values, contexts, the LaunchDarkly server-side flag and segment model, evaluation results, and
//! the small traits that join the engine, the stores and the server. It does no I/O and knows
//! nothing of tokio, axum, sqlx or redis; it does not evaluate flags (that is `flags-eval`).

#![warn(missing_docs)]

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
