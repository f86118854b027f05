//! Where the cache and the health tracker get the time from.
//!
//! Both need two clocks: a monotonic one for "how long ago" (TTL expiry, time since the last
//! contact), which never jumps when the wall clock is set, and the wall clock for timestamps that
//! leave the process (`last_success_unix_ms`). [`ManualClock`] moves both by hand, so tests step
//! through expiry without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Monotonic time, for measuring intervals.
    fn now(&self) -> Instant;
    /// Wall-clock time, for timestamps shown to people and other processes.
    fn system_now(&self) -> SystemTime;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to, for tests.
///
/// Clones share one time, so a test keeps a clone and advances the clock that a cache or tracker
/// it handed the other clone reads. The monotonic and wall clocks advance together.
#[derive(Debug, Clone)]
pub struct ManualClock {
    shared: Arc<ManualState>,
}

#[derive(Debug)]
struct ManualState {
    start: Instant,
    system_start: SystemTime,
    /// Nanoseconds advanced since `start`; a `u64` holds 584 years.
    offset_nanos: AtomicU64,
}

impl ManualClock {
    /// The wall-clock reading of [`ManualClock::new`]: 2023-11-14T22:13:20Z, a fixed instant so
    /// tests can assert exact Unix timestamps.
    pub const DEFAULT_START_UNIX_SECS: u64 = 1_700_000_000;

    /// A clock whose wall-clock reading starts at [`ManualClock::DEFAULT_START_UNIX_SECS`].
    pub fn new() -> Self {
        Self::starting_at(UNIX_EPOCH + Duration::from_secs(Self::DEFAULT_START_UNIX_SECS))
    }

    /// A clock whose wall-clock reading starts at `system_start`.
    pub fn starting_at(system_start: SystemTime) -> Self {
        Self {
            shared: Arc::new(ManualState {
                start: Instant::now(),
                system_start,
                offset_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Moves both clocks forward by `by` (saturating after 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // `fetch_update` with a closure that always returns `Some` cannot fail.
        let _ =
            self.shared
                .offset_nanos
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |offset| {
                    Some(offset.saturating_add(by))
                });
    }

    /// How far the clock has been advanced in total.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.shared.offset_nanos.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.shared.start + self.elapsed()
    }

    fn system_now(&self) -> SystemTime {
        self.shared.system_start + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = ManualClock::new();
        let other = clock.clone();
        let (t0, s0) = (clock.now(), clock.system_now());
        assert_eq!(clock.now(), t0);
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1500));
        assert_eq!(
            clock.system_now().duration_since(s0).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            s0.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_secs(ManualClock::DEFAULT_START_UNIX_SECS)
        );
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
    }
}
