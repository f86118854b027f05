//! `flags-eval`: the pure evaluation engine.
//!
//! Flags and segments are compiled once ([`CompiledData::compile`]): regexes compiled, dates and
//! versions parsed, `in` lists and target lists hashed, attribute references parsed. Evaluation
//! ([`Evaluator`]) then follows LaunchDarkly's server-side semantics exactly, and nothing else:
//! flagd's operations layer (kills and per-context overrides) reaches the engine inside the
//! served flags (`flags-data`), as it reaches LaunchDarkly's SDKs, so both evaluate the same
//! data. It does not allocate on the hot path. It does no I/O and knows nothing of where data
//! comes from; it depends on `flags-core` plus hashing, regex and semver crates.
//!
//! ```
//! use flags_core::{Context, Reason};
//! use flags_eval::{CompiledData, Evaluator};
//! use serde_json::json;
//!
//! let data = CompiledData::from_json_str(r#"{"flags": {"dark-mode": {
//!     "on": true, "variations": [false, true], "fallthrough": {"variation": 0},
//!     "rules": [{"id": "pro", "variation": 1,
//!                "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}]}]
//! }}}"#)?;
//! let context = Context::from_json(&json!({"kind": "user", "key": "user-1", "plan": "pro"}))?;
//!
//! let detail = Evaluator::new(&data).evaluate("dark-mode", &context);
//! assert_eq!(detail.value, Some(&json!(true)));
//! assert!(matches!(detail.reason, Reason::RuleMatch { rule_index: 0, .. }));
//!
//! // An unknown flag is an error, and the caller's default is served.
//! let detail = Evaluator::new(&data).evaluate("light-mode", &context);
//! assert_eq!(detail.value, None);
//! assert!(detail.is_error());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

// The README's example runs as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod big_segments;
mod bucket;
mod clause_value;
mod compile;
mod data;
mod evaluator;
mod hash;
mod ops;

pub use big_segments::{big_segment_hash, big_segment_ref};
pub use bucket::bucket;
pub use clause_value::{UnusableValue, check_clause_value};
pub use data::{CompileError, CompiledData, CompiledFlag, CompiledSegment};
pub use evaluator::{Evaluator, PrerequisiteEval, evaluate, is_experiment};
