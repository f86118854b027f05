//! `flags-eval`: the pure evaluation engine.
//!
//! Flags and segments are validated and compiled once; evaluation then cannot fail on syntax and
//! does not allocate on the hot path. Depends on `flags-core` only, plus hashing, regex and semver.
