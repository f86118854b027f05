//! How long a source waits before its next attempt, given how many in a row have failed.

use std::time::Duration;

use crate::ConfigError;
use crate::rng::JitterRng;

/// Retry spacing for a polling or reconnecting source.
///
/// The delay is the base interval times a step that grows with consecutive failures: 1x with no
/// failure, 2x after 1–2, 4x after 3–5 and 8x after 6 or more. It stops at 8x so a source that
/// was down for an hour still notices recovery within eight intervals. An optional jitter
/// fraction `j` scales each delay by a factor drawn uniformly from `[1 - j, 1 + j)`, so replicas
/// that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    jitter: f64,
    rng: JitterRng,
}

impl Backoff {
    /// A backoff over `base` without jitter.
    pub fn new(base: Duration) -> Self {
        Self {
            base,
            jitter: 0.0,
            rng: JitterRng::from_entropy(),
        }
    }

    /// Adds `±fraction` jitter drawn from `rng`; `fraction` must be in `[0, 1)`.
    pub fn with_jitter(self, fraction: f64, rng: JitterRng) -> Result<Self, ConfigError> {
        Ok(Self {
            jitter: check_jitter(fraction)?,
            rng,
            ..self
        })
    }

    /// The base interval.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The step for `consecutive_failures`: 1, 2, 4 or 8.
    pub fn multiplier(consecutive_failures: u32) -> u32 {
        match consecutive_failures {
            0 => 1,
            1..=2 => 2,
            3..=5 => 4,
            _ => 8,
        }
    }

    /// The delay before the next attempt, without jitter (saturating at `Duration::MAX`).
    pub fn nominal_delay(&self, consecutive_failures: u32) -> Duration {
        self.base
            .saturating_mul(Self::multiplier(consecutive_failures))
    }

    /// The delay before the next attempt, with jitter when configured.
    pub fn delay(&self, consecutive_failures: u32) -> Duration {
        let nominal = self.nominal_delay(consecutive_failures);
        if self.jitter == 0.0 {
            return nominal;
        }
        scale(nominal, 1.0 + self.rng.symmetric(self.jitter))
    }
}

/// Accepts a jitter fraction in `[0, 1)`: at 1 or above a delay or TTL could reach zero or go
/// negative, and NaN would poison every delay.
pub(crate) fn check_jitter(fraction: f64) -> Result<f64, ConfigError> {
    if (0.0..1.0).contains(&fraction) {
        Ok(fraction)
    } else {
        Err(ConfigError::JitterOutOfRange { fraction })
    }
}

/// `duration * factor` for a factor in `(0, 2)`, saturating instead of panicking when the
/// product does not fit.
pub(crate) fn scale(duration: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(consecutive_failures: u32, expected_multiplier: u32) {
        let backoff = Backoff::new(Duration::from_millis(500));
        assert_eq!(
            Backoff::multiplier(consecutive_failures),
            expected_multiplier,
            "multiplier after {consecutive_failures} failures"
        );
        assert_eq!(
            backoff.delay(consecutive_failures),
            Duration::from_millis(500) * expected_multiplier,
            "delay after {consecutive_failures} failures"
        );
    }

    #[test]
    fn steps_1x_2x_4x_8x() {
        check(0, 1);
        check(1, 2);
        check(2, 2);
        check(3, 4);
        check(4, 4);
        check(5, 4);
        check(6, 8);
        check(7, 8);
        check(100, 8);
        check(u32::MAX, 8);
    }

    #[test]
    fn jittered_delays_stay_within_the_fraction_and_use_all_of_it() {
        let backoff = Backoff::new(Duration::from_secs(1))
            .with_jitter(0.25, JitterRng::seeded(1))
            .unwrap();
        for failures in [0, 1, 3, 6] {
            let nominal = backoff.nominal_delay(failures);
            let low = nominal.mul_f64(0.75);
            let high = nominal.mul_f64(1.25);
            let delays: Vec<Duration> = (0..2000).map(|_| backoff.delay(failures)).collect();
            assert!(
                delays.iter().all(|d| (low..=high).contains(d)),
                "{failures} failures: a delay left {low:?}..={high:?}"
            );
            let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
            assert!(*min < nominal.mul_f64(0.76), "{failures}: min {min:?}");
            assert!(*max > nominal.mul_f64(1.24), "{failures}: max {max:?}");
        }
    }

    #[test]
    fn jitter_is_reproducible_from_the_seed() {
        let delays = |seed| {
            let backoff = Backoff::new(Duration::from_secs(1))
                .with_jitter(0.5, JitterRng::seeded(seed))
                .unwrap();
            (0..5).map(|n| backoff.delay(n)).collect::<Vec<_>>()
        };
        assert_eq!(delays(9), delays(9));
        assert_ne!(delays(9), delays(10));
    }

    #[test]
    fn jitter_fraction_must_be_in_zero_to_one() {
        let with = |fraction| {
            Backoff::new(Duration::from_secs(1))
                .with_jitter(fraction, JitterRng::seeded(0))
                .map(|b| b.delay(0))
        };
        assert_eq!(with(0.0), Ok(Duration::from_secs(1)));
        assert!(with(0.999).is_ok());
        for bad in [1.0, 1.5, -0.1, f64::NAN, f64::INFINITY] {
            let err = with(bad).unwrap_err();
            assert!(err.to_string().contains("jitter fraction"), "{bad}: {err}");
        }
    }

    #[test]
    fn huge_bases_saturate_instead_of_panicking() {
        let backoff = Backoff::new(Duration::MAX)
            .with_jitter(0.5, JitterRng::seeded(3))
            .unwrap();
        assert_eq!(backoff.nominal_delay(6), Duration::MAX);
        for failures in 0..10 {
            assert!(backoff.delay(failures) >= Duration::MAX.mul_f64(0.5));
        }
    }
}
