//! `flags-eval`: the pure evaluation engine.
//!
//! Flags and segments are compiled once ([`CompiledData::compile`]): regexes compiled, dates and
//! versions parsed, `in` lists and target lists hashed, attribute references parsed. Evaluation
//! ([`Evaluator`]) then follows LaunchDarkly's server-side semantics exactly, under flagd's
//! operations layer (kill set, then per-entity overrides, then the flag's rules), and does not
//! allocate on the hot path. It does no I/O and knows nothing of where data comes from; it
//! depends on `flags-core` plus hashing, regex and semver crates.
//!
//! ```
//! use flags_core::{Context, InMemoryKillSet, Reason};
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
//! // The operations layer comes first: a killed flag serves its off variation (here none, so
//! // the caller's default).
//! let killed = InMemoryKillSet::new();
//! killed.insert("dark-mode");
//! let detail = Evaluator::new(&data).with_kill_set(&killed).evaluate("dark-mode", &context);
//! assert_eq!(detail.value, None);
//! assert!(detail.reason.is_killed());
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

pub use big_segments::big_segment_hash;
pub use bucket::bucket;
pub use clause_value::{UnusableValue, check_clause_value};
pub use data::{CompileError, CompiledData, CompiledFlag, CompiledSegment};
pub use evaluator::{Evaluator, evaluate, is_experiment};
