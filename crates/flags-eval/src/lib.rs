//! `flags-eval`: the pure evaluation engine.
//!
//! Flags and segments are compiled once ([`CompiledData::compile`]): regexes compiled, dates and
//! versions parsed, `in` lists and target lists hashed, attribute references parsed. Evaluation
//! ([`Evaluator`]) then follows LaunchDarkly's server-side semantics exactly, under flagd's
//! operations layer (kill set, then per-entity overrides, then the flag's rules), and does not
//! allocate on the hot path. It does no I/O and knows nothing of where data comes from; it
//! depends on `flags-core` plus hashing, regex and semver crates.

#![warn(missing_docs)]

mod big_segments;
mod bucket;
mod compile;
mod data;
mod evaluator;
mod hash;
mod ops;

pub use big_segments::big_segment_hash;
pub use bucket::bucket;
pub use data::{CompileError, CompiledData, CompiledFlag, CompiledSegment};
pub use evaluator::{Evaluator, evaluate, is_experiment};
