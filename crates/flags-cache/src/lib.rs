//! `flags-cache`: the small pieces every flagd source of data shares, whatever its backend.
//!
//! - [`Backoff`]: how long to wait before the next attempt after consecutive failures (1x, 2x
//!   for 1–2, 4x for 3–5, 8x for 6 or more), with optional jitter.
//! - [`HealthTracker`]: `CONNECTING` until the first success, `SERVING`, and `DEGRADED` after
//!   3 consecutive failures, with a serializable [`HealthReport`] for `/readyz`.
//! - [`TtlCache`]: a concurrent cache with per-entry TTL jitter, stale fallback when the loader
//!   fails, single-flight loading, a size bound and cached "not found" answers; it backs
//!   per-entity override lookups keyed by [`OverrideKey`].
//! - [`Clock`] and [`JitterRng`]: time and randomness that tests can control.
//!
//! It is not a source of data: it opens no network connection, talks to no database and knows
//! nothing of HTTP or of the flag model. The caller brings the loader; this crate decides when
//! to call it and what to serve when it fails. Its only async piece is the wait for another
//! caller's load (tokio's `OnceCell`); it spawns no tasks and needs no running runtime.
//!
//! ```
//! use std::time::Duration;
//! use flags_cache::{Backoff, HealthStatus, HealthTracker};
//!
//! let backoff = Backoff::new(Duration::from_millis(500));
//! let health = HealthTracker::new();
//! assert_eq!(health.status(), HealthStatus::Connecting);
//!
//! health.record_success();
//! assert_eq!(health.status(), HealthStatus::Serving);
//! for _ in 0..3 {
//!     health.record_failure("connection refused");
//! }
//! // Still serving the last good data, but degraded, and waiting 4x the base before retrying.
//! assert_eq!(health.status(), HealthStatus::Degraded);
//! assert_eq!(health.next_delay(&backoff), Duration::from_secs(2));
//! assert_eq!(health.report().last_error.as_deref(), Some("connection refused"));
//! ```

#![warn(missing_docs)]

// The README's example runs as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod backoff;
mod cache;
mod clock;
mod health;
mod key;
mod rng;

pub use backoff::Backoff;
pub use cache::{CacheConfig, Freshness, Lookup, TtlCache};
pub use clock::{Clock, ManualClock, SystemClock};
pub use health::{DEGRADED_AFTER_FAILURES, HealthReport, HealthStatus, HealthTracker};
pub use key::{OverrideKey, OverrideKeyParts, OverrideKeyRef};
pub use rng::JitterRng;

/// A setting that cannot work, reported when a [`Backoff`] or [`TtlCache`] is built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A jitter fraction outside `[0, 1)`, or NaN: a delay or TTL could reach zero or go negative.
    #[error("jitter fraction must be at least 0 and below 1, got {fraction}")]
    JitterOutOfRange {
        /// The fraction that was given.
        fraction: f64,
    },
    /// A cache bounded to no entries at all, which could never answer from itself.
    #[error("a cache must be allowed at least one entry (max_entries = 0)")]
    ZeroCapacity,
}
