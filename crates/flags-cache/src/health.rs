//! The health of one source of data, as `/readyz` reports it.

use std::fmt::Display;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};

/// Consecutive failures after which a source that has served data counts as degraded.
pub const DEGRADED_AFTER_FAILURES: u32 = 3;

/// Where a source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum HealthStatus {
    /// No attempt has succeeded yet, so there is no data to serve, stale or not.
    Connecting,
    /// The last attempt succeeded, or fewer than [`DEGRADED_AFTER_FAILURES`] have failed since.
    Serving,
    /// At least [`DEGRADED_AFTER_FAILURES`] attempts in a row have failed since the last
    /// success; the last good data is still served.
    Degraded,
}

/// A point-in-time view of a [`HealthTracker`], serialized into `/readyz` answers as
/// `{"status":"SERVING","consecutive_failures":0,"last_success_unix_ms":...,
/// "seconds_since_last_contact":...,"last_error":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Where the source stands now.
    pub status: HealthStatus,
    /// Failures since the last success (or since the start, before any).
    pub consecutive_failures: u32,
    /// Wall-clock time of the last success, in Unix milliseconds; `None` before the first.
    pub last_success_unix_ms: Option<u64>,
    /// Whole seconds since the last success, on the monotonic clock; `None` before the first.
    pub seconds_since_last_contact: Option<u64>,
    /// The message of the most recent failure, kept after recovery so an operator can still see
    /// what went wrong last; `consecutive_failures` says whether it is current.
    pub last_error: Option<String>,
}

/// Counts a source's successes and failures and turns them into a [`HealthStatus`].
///
/// A source calls [`record_success`](Self::record_success) or
/// [`record_failure`](Self::record_failure) once per attempt (a poll, a reconnect, a load) and
/// asks [`next_delay`](Self::next_delay) how long to wait before the next one. "Contact" means a
/// successful attempt: a failed one reached nothing usable.
#[derive(Debug)]
pub struct HealthTracker<C = SystemClock> {
    clock: C,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    last_success: Option<Instant>,
    last_success_unix_ms: Option<u64>,
    last_error: Option<String>,
    last_error_unix_ms: Option<u64>,
}

impl HealthTracker<SystemClock> {
    /// A tracker on the system clock, in [`HealthStatus::Connecting`].
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }
}

impl Default for HealthTracker<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> HealthTracker<C> {
    /// A tracker reading time from `clock`, in [`HealthStatus::Connecting`].
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// An attempt succeeded: the failure streak ends and the source serves.
    pub fn record_success(&self) {
        let now = self.clock.now();
        let unix_ms = unix_ms(&self.clock);
        let mut state = self.lock();
        state.consecutive_failures = 0;
        state.last_success = Some(now);
        state.last_success_unix_ms = Some(unix_ms);
    }

    /// An attempt failed with `error`, whose `Display` text is kept as the last error.
    pub fn record_failure(&self, error: impl Display) {
        let message = error.to_string();
        let unix_ms = unix_ms(&self.clock);
        let mut state = self.lock();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        state.last_error = Some(message);
        state.last_error_unix_ms = Some(unix_ms);
    }

    /// The current status.
    pub fn status(&self) -> HealthStatus {
        status_of(&self.lock())
    }

    /// Failures since the last success (or since the start, before any).
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive_failures
    }

    /// Whole seconds since the last success; `None` before the first.
    pub fn seconds_since_last_contact(&self) -> Option<u64> {
        let last = self.lock().last_success?;
        Some(self.clock.now().saturating_duration_since(last).as_secs())
    }

    /// How long to wait before the next attempt under `backoff`, given the failures so far.
    pub fn next_delay(&self, backoff: &Backoff) -> Duration {
        backoff.delay(self.consecutive_failures())
    }

    /// The last failure's message and wall-clock time (Unix milliseconds) while it is current:
    /// `None` before any failure and once a success has followed it.
    pub fn current_error(&self) -> Option<(String, u64)> {
        let state = self.lock();
        match (&state.last_error, state.last_error_unix_ms) {
            (Some(message), Some(at)) if state.consecutive_failures > 0 => {
                Some((message.clone(), at))
            }
            _ => None,
        }
    }

    /// Everything at once, read under one lock so the fields agree with each other.
    pub fn report(&self) -> HealthReport {
        let now = self.clock.now();
        let state = self.lock();
        HealthReport {
            status: status_of(&state),
            consecutive_failures: state.consecutive_failures,
            last_success_unix_ms: state.last_success_unix_ms,
            seconds_since_last_contact: state
                .last_success
                .map(|last| now.saturating_duration_since(last).as_secs()),
            last_error: state.last_error.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few plain assignments that cannot panic halfway, so a poisoned lock
        // still guards consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn status_of(state: &State) -> HealthStatus {
    if state.last_success.is_none() {
        // Failures before the first success leave nothing stale to serve: still connecting.
        HealthStatus::Connecting
    } else if state.consecutive_failures >= DEGRADED_AFTER_FAILURES {
        HealthStatus::Degraded
    } else {
        HealthStatus::Serving
    }
}

fn unix_ms<C: Clock>(clock: &C) -> u64 {
    // A wall clock set before 1970 reads as 0 rather than failing the record.
    let since_epoch = clock
        .system_now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// One step of a source's life: an attempt's outcome, or time passing.
    #[derive(Clone, Copy)]
    enum Step {
        Up,
        Down,
        Wait(u64),
    }
    use Step::{Down, Up, Wait};

    /// Runs `steps` on a fresh tracker and compares the status, the failure count and the
    /// seconds since the last contact after each step with `expected`.
    fn check(steps: &[Step], expected: &[(HealthStatus, u32, Option<u64>)]) {
        assert_eq!(steps.len(), expected.len(), "one expectation per step");
        let clock = ManualClock::new();
        let tracker = HealthTracker::with_clock(clock.clone());
        assert_eq!(tracker.status(), Connecting);
        for (index, (step, want)) in steps.iter().zip(expected).enumerate() {
            match *step {
                Up => tracker.record_success(),
                Down => tracker.record_failure(format!("failure at step {index}")),
                Wait(secs) => clock.advance(Duration::from_secs(secs)),
            }
            let got = (
                tracker.status(),
                tracker.consecutive_failures(),
                tracker.seconds_since_last_contact(),
            );
            assert_eq!(got, *want, "after step {index}");
        }
    }

    use HealthStatus::{Connecting, Degraded, Serving};

    #[test]
    fn first_success_serves() {
        check(&[Up], &[(Serving, 0, Some(0))]);
    }

    #[test]
    fn failures_before_any_success_stay_connecting() {
        check(
            &[Down, Down, Down, Down, Up],
            &[
                (Connecting, 1, None),
                (Connecting, 2, None),
                (Connecting, 3, None),
                (Connecting, 4, None),
                (Serving, 0, Some(0)),
            ],
        );
    }

    #[test]
    fn degraded_after_exactly_three_failures_and_serving_on_the_next_success() {
        check(
            &[Up, Down, Down, Down, Down, Up],
            &[
                (Serving, 0, Some(0)),
                (Serving, 1, Some(0)),
                (Serving, 2, Some(0)),
                (Degraded, 3, Some(0)),
                (Degraded, 4, Some(0)),
                (Serving, 0, Some(0)),
            ],
        );
    }

    #[test]
    fn a_success_resets_the_streak() {
        check(
            &[Up, Down, Down, Up, Down, Down],
            &[
                (Serving, 0, Some(0)),
                (Serving, 1, Some(0)),
                (Serving, 2, Some(0)),
                (Serving, 0, Some(0)),
                (Serving, 1, Some(0)),
                (Serving, 2, Some(0)),
            ],
        );
    }

    #[test]
    fn contact_age_counts_from_the_last_success_only() {
        check(
            &[
                Up,
                Wait(10),
                Down,
                Wait(5),
                Down,
                Down,
                Wait(1),
                Up,
                Wait(2),
            ],
            &[
                (Serving, 0, Some(0)),
                (Serving, 0, Some(10)),
                (Serving, 1, Some(10)),
                (Serving, 1, Some(15)),
                (Serving, 2, Some(15)),
                (Degraded, 3, Some(15)),
                (Degraded, 3, Some(16)),
                (Serving, 0, Some(0)),
                (Serving, 0, Some(2)),
            ],
        );
    }

    #[test]
    fn next_delay_follows_the_failure_streak() {
        let tracker = HealthTracker::with_clock(ManualClock::new());
        let backoff = Backoff::new(Duration::from_secs(1));
        let mut delays = vec![tracker.next_delay(&backoff).as_secs()];
        for _ in 0..7 {
            tracker.record_failure("down");
            delays.push(tracker.next_delay(&backoff).as_secs());
        }
        tracker.record_success();
        delays.push(tracker.next_delay(&backoff).as_secs());
        assert_eq!(delays, [1, 2, 2, 4, 4, 4, 8, 8, 1]);
    }

    #[test]
    fn report_has_every_field_and_serializes_for_readyz() {
        let clock = ManualClock::new();
        let tracker = HealthTracker::with_clock(clock.clone());
        let report = tracker.report();
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({
                "status": "CONNECTING",
                "consecutive_failures": 0,
                "last_success_unix_ms": null,
                "seconds_since_last_contact": null,
                "last_error": null,
            })
        );

        clock.advance(Duration::from_millis(250));
        tracker.record_success();
        clock.advance(Duration::from_secs(42));
        for attempt in 1..=3 {
            tracker.record_failure(format_args!("connection refused (attempt {attempt})"));
        }
        let report = tracker.report();
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "DEGRADED",
                "consecutive_failures": 3,
                "last_success_unix_ms": 1_700_000_000_250_u64,
                "seconds_since_last_contact": 42,
                "last_error": "connection refused (attempt 3)",
            })
        );
        let back: HealthReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);

        // Recovery keeps the last error for the operator; the zero streak says it is old.
        tracker.record_success();
        let report = tracker.report();
        assert_eq!(report.status, Serving);
        assert_eq!(report.consecutive_failures, 0);
        assert_eq!(report.last_success_unix_ms, Some(1_700_000_042_250));
        assert_eq!(
            report.last_error.as_deref(),
            Some("connection refused (attempt 3)")
        );
    }

    #[test]
    fn the_current_error_is_the_last_failure_until_a_success() {
        let clock = ManualClock::new();
        let tracker = HealthTracker::with_clock(clock.clone());
        assert_eq!(tracker.current_error(), None);
        clock.advance(Duration::from_millis(5));
        tracker.record_failure("first");
        tracker.record_failure("second");
        assert_eq!(
            tracker.current_error(),
            Some(("second".to_owned(), 1_700_000_000_005))
        );
        tracker.record_success();
        assert_eq!(tracker.current_error(), None);
        assert_eq!(tracker.report().last_error.as_deref(), Some("second"));
    }
}
