//! Waiting for something to happen: poll a condition until it holds, and fail the test with
//! what was awaited once a deadline passes.
//!
//! Tests wait for conditions, never for fixed times, so a fast machine is not slowed down and a
//! slow one does not fail by chance. [`DEADLINE`] is generous: only a broken build waits that
//! long.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long anything asynchronous may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` every 10 ms until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    Poll::new().until_some(what, check).await
}

/// Polls `check` every 2 ms until it holds, failing the test after [`DEADLINE`]; returns how
/// long it took. The short interval keeps that time within a few milliseconds of the truth.
pub async fn until<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    Poll::new()
        .every(Duration::from_millis(2))
        .until(what, check)
        .await
}

/// How to poll: for at most `within`, every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    within: Duration,
    every: Duration,
}

impl Default for Poll {
    fn default() -> Poll {
        Poll::new()
    }
}

impl Poll {
    /// At most [`DEADLINE`], every 10 ms.
    pub const fn new() -> Poll {
        Poll {
            within: DEADLINE,
            every: Duration::from_millis(10),
        }
    }

    /// Gives up after `limit` instead.
    pub const fn within(self, limit: Duration) -> Poll {
        Poll {
            within: limit,
            ..self
        }
    }

    /// Checks every `interval` instead.
    pub const fn every(self, interval: Duration) -> Poll {
        Poll {
            every: interval,
            ..self
        }
    }

    /// Polls `check` until it holds; returns how long that took.
    pub async fn until<F, Fut>(self, what: &str, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = tokio::time::Instant::now();
        self.until_some(what, || {
            let done = check();
            async move { done.await.then_some(()) }
        })
        .await;
        started.elapsed()
    }

    /// Polls `check` until it returns `Some`, and returns what it returned.
    pub async fn until_some<T, F, Fut>(self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        // Tokio's clock, so a test that pauses time still reaches its deadline.
        let started = tokio::time::Instant::now();
        loop {
            if let Some(value) = check().await {
                return value;
            }
            self.give_up_after(started.elapsed(), what);
            tokio::time::sleep(self.every).await;
        }
    }

    /// Like [`Poll::until_some`], for code without an async runtime: sleeps the thread between
    /// checks.
    pub fn blocking_until_some<T>(self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(value) = check() {
                return value;
            }
            self.give_up_after(started.elapsed(), what);
            std::thread::sleep(self.every);
        }
    }

    fn give_up_after(self, elapsed: Duration, what: &str) {
        assert!(
            elapsed < self.within,
            "timed out after {:?} waiting for {what}",
            self.within
        );
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn blocking_polls_until_the_condition_holds() {
        let calls = Cell::new(0);
        let value = Poll::new()
            .every(Duration::from_millis(1))
            .blocking_until_some("the third call", || {
                calls.set(calls.get() + 1);
                (calls.get() == 3).then_some("done")
            });
        assert_eq!((value, calls.get()), ("done", 3));
    }

    #[test]
    fn a_condition_that_never_holds_fails_naming_what_was_awaited() {
        let outcome = std::panic::catch_unwind(|| {
            Poll::new()
                .within(Duration::from_millis(20))
                .every(Duration::from_millis(5))
                .blocking_until_some("a miracle", || None::<()>)
        });
        let panic = outcome.unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert_eq!(message, "timed out after 20ms waiting for a miracle");
    }

    #[tokio::test]
    async fn async_polls_until_the_condition_holds() {
        let mut calls = 0;
        let took = Poll::new()
            .every(Duration::from_millis(1))
            .until("the fifth call", || {
                calls += 1;
                let done = calls == 5;
                async move { done }
            })
            .await;
        assert_eq!(calls, 5);
        assert!(took < DEADLINE, "{took:?}");
    }
}
