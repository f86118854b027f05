//! Behaviour of `TtlCache` under a manual clock: expiry and jitter, stale fallback, cached
//! "not found", single-flight loading, cancellation, and the size bound.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flags_cache::{
    CacheConfig, ConfigError, Freshness, JitterRng, Lookup, ManualClock, OverrideKey,
    OverrideKeyRef, TtlCache,
};
use futures_util::FutureExt;

#[derive(Debug, PartialEq)]
struct Down(&'static str);

type Cache = TtlCache<String, u32, Down, ManualClock>;

fn cache(ttl: Duration, jitter: f64, max_entries: usize) -> (Cache, ManualClock) {
    let clock = ManualClock::new();
    let config = CacheConfig {
        ttl,
        jitter,
        max_entries,
    };
    let cache = TtlCache::with_clock(config, clock.clone(), JitterRng::seeded(5)).unwrap();
    (cache, clock)
}

/// Runs a lookup whose loader is ready at once, so the lookup finishes in one poll.
fn now<T>(future: impl Future<Output = T>) -> T {
    future
        .now_or_never()
        .expect("a lookup with a ready loader finished in one poll")
}

fn ok(value: u32) -> impl FnOnce() -> std::future::Ready<Result<Option<u32>, Down>> {
    move || std::future::ready(Ok(Some(value)))
}

fn not_found() -> impl FnOnce() -> std::future::Ready<Result<Option<u32>, Down>> {
    || std::future::ready(Ok(None))
}

fn fail() -> impl FnOnce() -> std::future::Ready<Result<Option<u32>, Down>> {
    || std::future::ready(Err(Down("source unreachable")))
}

fn lookup(value: Option<u32>, freshness: Freshness) -> Lookup<u32> {
    Lookup { value, freshness }
}

#[test]
fn entries_are_fresh_until_exactly_their_ttl_without_jitter() {
    let (cache, clock) = cache(Duration::from_secs(5), 0.0, 100);
    assert_eq!(
        now(cache.get_or_refresh("k", ok(1))).unwrap(),
        lookup(Some(1), Freshness::Loaded)
    );
    clock.advance(Duration::from_secs(5) - Duration::from_nanos(1));
    assert_eq!(
        now(cache.get_or_refresh("k", ok(2))).unwrap(),
        lookup(Some(1), Freshness::Fresh)
    );
    clock.advance(Duration::from_nanos(1));
    assert_eq!(
        cache.peek("k"),
        Some(lookup(Some(1), Freshness::Stale)),
        "expired at exactly the TTL"
    );
    assert_eq!(
        now(cache.get_or_refresh("k", ok(2))).unwrap(),
        lookup(Some(2), Freshness::Loaded)
    );
}

#[test]
fn jittered_ttls_spread_over_the_whole_window_and_never_leave_it() {
    // 10 s ± 20 %: every entry expires somewhere in [8 s, 12 s).
    let (cache, clock) = cache(Duration::from_secs(10), 0.2, 1000);
    for key in 0..500 {
        cache.insert(key.to_string(), Some(key));
    }
    let fresh_count = || {
        (0..500)
            .filter(|key| cache.peek(&key.to_string()).unwrap().freshness == Freshness::Fresh)
            .count()
    };
    let check = |at_ms: u64, expected: &dyn Fn(usize) -> bool, what: &str| {
        clock.advance(Duration::from_millis(at_ms) - clock.elapsed());
        let fresh = fresh_count();
        assert!(
            expected(fresh),
            "at {at_ms} ms: {fresh} fresh, expected {what}"
        );
    };
    check(7_999, &|n| n == 500, "all");
    check(8_100, &|n| n < 500, "a few expired just after 8 s");
    check(9_000, &|n| (300..450).contains(&n), "about 3/4");
    check(10_000, &|n| (200..300).contains(&n), "about half");
    check(11_000, &|n| (50..200).contains(&n), "about 1/4");
    check(11_900, &|n| n > 0, "a few still fresh just before 12 s");
    check(12_000, &|n| n == 0, "none");
}

#[test]
fn a_failed_refresh_serves_the_stale_value_and_tries_again_next_time() {
    let (cache, clock) = cache(Duration::from_secs(1), 0.0, 100);
    now(cache.get_or_refresh("k", ok(1))).unwrap();
    clock.advance(Duration::from_secs(30));
    let calls = AtomicUsize::new(0);
    let failing = || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err(Down("source unreachable")))
    };
    assert_eq!(
        now(cache.get_or_refresh("k", failing)).unwrap(),
        lookup(Some(1), Freshness::Stale)
    );
    assert!(now(cache.get_or_refresh("k", failing)).unwrap().is_stale());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a failure does not renew the TTL"
    );

    assert_eq!(
        now(cache.get_or_refresh("k", ok(3))).unwrap(),
        lookup(Some(3), Freshness::Loaded)
    );
    assert_eq!(
        now(cache.get_or_refresh("k", fail())).unwrap(),
        lookup(Some(3), Freshness::Fresh)
    );
}

#[test]
fn a_failure_with_nothing_cached_returns_the_error() {
    let (cache, _clock) = cache(Duration::from_secs(1), 0.0, 100);
    let error = now(cache.get_or_refresh("k", fail())).unwrap_err();
    assert_eq!(*error, Down("source unreachable"));
    assert_eq!(cache.peek("k"), None, "errors are not cached");

    now(cache.get_or_refresh("k", ok(1))).unwrap();
    assert!(cache.invalidate("k"));
    assert!(
        now(cache.get_or_refresh("k", fail())).is_err(),
        "invalidating drops the stale fallback too"
    );
}

#[test]
fn not_found_is_cached_and_served_stale_like_any_answer() {
    let (cache, clock) = cache(Duration::from_secs(1), 0.0, 100);
    assert_eq!(
        now(cache.get_or_refresh("k", not_found())).unwrap(),
        lookup(None, Freshness::Loaded)
    );
    assert_eq!(
        now(cache.get_or_refresh("k", ok(9))).unwrap(),
        lookup(None, Freshness::Fresh),
        "the loader is not asked again while \"not found\" is fresh"
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        now(cache.get_or_refresh("k", fail())).unwrap(),
        lookup(None, Freshness::Stale)
    );
}

#[test]
fn override_keys_are_looked_up_by_borrowed_str_triples() {
    let clock = ManualClock::new();
    let cache: TtlCache<OverrideKey, usize, Down, ManualClock> =
        TtlCache::with_clock(CacheConfig::default(), clock, JitterRng::seeded(1)).unwrap();
    let (flag, kind, key) = (String::from("checkout"), "user", "u-1");
    let query = OverrideKeyRef::new(&flag, kind, key);
    let loaded = now(cache.get_or_refresh(query.as_query(), || {
        std::future::ready(Ok::<_, Down>(Some(2)))
    }));
    assert_eq!(
        loaded.unwrap(),
        Lookup {
            value: Some(2),
            freshness: Freshness::Loaded
        }
    );
    assert_eq!(
        cache.peek(OverrideKeyRef::new("checkout", "user", "u-1").as_query()),
        Some(Lookup {
            value: Some(2),
            freshness: Freshness::Fresh
        })
    );
    assert_eq!(
        cache.peek(OverrideKeyRef::new("checkout", "org", "u-1").as_query()),
        None
    );
    cache.insert(OverrideKey::new("checkout", "org", "o-1"), None);
    assert_eq!(
        cache.peek(OverrideKeyRef::new("checkout", "org", "o-1").as_query()),
        Some(Lookup {
            value: None,
            freshness: Freshness::Fresh
        })
    );
}

/// 50 callers miss on one key at once. The loader does not finish until all 50 have started
/// and then some, so without single flight every caller would run it.
async fn fifty_concurrent_misses(
    outcome: Result<Option<u32>, Down>,
) -> (usize, Vec<Result<Lookup<u32>, Arc<Down>>>) {
    const CALLERS: usize = 50;
    let cache = Arc::new(cache(Duration::from_secs(60), 0.1, 100).0);
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let outcome = Arc::new(std::sync::Mutex::new(Some(outcome)));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, calls, started, outcome) = (
                Arc::clone(&cache),
                Arc::clone(&calls),
                Arc::clone(&started),
                Arc::clone(&outcome),
            );
            tokio::spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                cache
                    .get_or_refresh("shared", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        while started.load(Ordering::SeqCst) < CALLERS {
                            tokio::task::yield_now().await;
                        }
                        // Time for the last callers to reach the cache after starting.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let taken = outcome.lock().unwrap().take();
                        taken.unwrap_or(Err(Down("the loader ran twice")))
                    })
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    (calls.load(Ordering::SeqCst), results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_load() {
    let (calls, results) = fifty_concurrent_misses(Ok(Some(7))).await;
    assert_eq!(calls, 1);
    for result in results {
        assert_eq!(result.unwrap(), lookup(Some(7), Freshness::Loaded));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_failure() {
    let (calls, results) = fifty_concurrent_misses(Err(Down("refused"))).await;
    assert_eq!(calls, 1);
    let errors: Vec<Arc<Down>> = results.into_iter().map(Result::unwrap_err).collect();
    assert_eq!(*errors[0], Down("refused"));
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])));
}

#[tokio::test]
async fn a_waiting_caller_takes_over_when_the_loading_one_is_cancelled() {
    let (cache, _clock) = cache(Duration::from_secs(60), 0.0, 100);
    let mut loading = Box::pin(cache.get_or_refresh("k", std::future::pending));
    assert!(futures_util::poll!(&mut loading).is_pending());
    let mut waiting = Box::pin(cache.get_or_refresh("k", ok(2)));
    assert!(
        futures_util::poll!(&mut waiting).is_pending(),
        "the second caller waits for the first one's load"
    );
    drop(loading);
    let taken_over = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert_eq!(
        taken_over.unwrap().unwrap(),
        lookup(Some(2), Freshness::Loaded)
    );
    assert_eq!(cache.peek("k"), Some(lookup(Some(2), Freshness::Fresh)));
}

#[test]
fn lookups_are_send_so_servers_can_spawn_them() {
    fn assert_send<T: Send>(_: &T) {}
    let (cache, _clock) = cache(Duration::from_secs(1), 0.0, 10);
    let lookup = cache.get_or_refresh("k", ok(1));
    assert_send(&lookup);
    let overrides: TtlCache<OverrideKey, usize, Down> =
        TtlCache::new(CacheConfig::default()).unwrap();
    let query = OverrideKeyRef::new("f", "user", "u");
    let lookup = overrides.get_or_refresh(query.as_query(), || async { Ok(Some(1)) });
    assert_send(&lookup);
}

#[test]
fn the_size_bound_holds_under_any_number_of_keys() {
    let (cache, clock) = cache(Duration::from_secs(10), 0.2, 32);
    for key in 0..1000_u32 {
        now(cache.get_or_refresh(&key.to_string(), ok(key))).unwrap();
        assert!(cache.len() <= 32, "{} entries after key {key}", cache.len());
        clock.advance(Duration::from_millis(7));
    }
    assert!(cache.len() >= 30, "eviction keeps the cache nearly full");
}

#[test]
fn a_full_cache_evicts_expired_entries_first() {
    let (cache, clock) = cache(Duration::from_secs(10), 0.0, 8);
    for key in 0..4 {
        cache.insert(format!("old{key}"), Some(key));
    }
    clock.advance(Duration::from_secs(11));
    for key in 0..4 {
        cache.insert(format!("new{key}"), Some(key));
    }
    assert_eq!(cache.len(), 8);
    cache.insert("one more".to_owned(), Some(9));
    assert_eq!(cache.len(), 5, "the four expired entries made room");
    for key in 0..4 {
        assert_eq!(cache.peek(&format!("old{key}")), None);
        assert!(cache.peek(&format!("new{key}")).is_some());
    }
}

#[test]
fn a_full_cache_of_fresh_entries_evicts_the_least_recently_written() {
    // Capacity 32 evicts 32/16 = 2 at a time.
    let (cache, clock) = cache(Duration::from_secs(60), 0.0, 32);
    for key in 0..32_u32 {
        cache.insert(key.to_string(), Some(key));
        clock.advance(Duration::from_millis(1));
    }
    // Rewriting key 0 makes it the newest, so 1 and 2 are now the oldest.
    cache.insert("0".to_owned(), Some(100));
    assert_eq!(cache.len(), 32);
    cache.insert("new".to_owned(), Some(0));
    assert_eq!(cache.len(), 31);
    let gone: Vec<u32> = (0..32)
        .filter(|key| cache.peek(&key.to_string()).is_none())
        .collect();
    assert_eq!(gone, [1, 2]);
    assert_eq!(cache.peek("0"), Some(lookup(Some(100), Freshness::Fresh)));
}

#[test]
fn a_cache_of_one_entry_keeps_the_latest() {
    let (cache, _clock) = cache(Duration::from_secs(60), 0.0, 1);
    cache.insert("a".to_owned(), Some(1));
    cache.insert("a".to_owned(), Some(2));
    cache.insert("b".to_owned(), Some(3));
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.peek("b"), Some(lookup(Some(3), Freshness::Fresh)));
}

#[test]
fn settings_that_cannot_work_are_rejected() {
    let check = |jitter: f64, max_entries: usize, expected: Option<ConfigError>| {
        let config = CacheConfig {
            ttl: Duration::from_secs(1),
            jitter,
            max_entries,
        };
        let built = Cache::with_clock(config, ManualClock::new(), JitterRng::seeded(0));
        assert_eq!(
            built.err(),
            expected,
            "jitter {jitter}, max_entries {max_entries}"
        );
    };
    check(0.0, 1, None);
    check(0.5, 10, None);
    check(
        1.0,
        10,
        Some(ConfigError::JitterOutOfRange { fraction: 1.0 }),
    );
    check(
        -0.5,
        10,
        Some(ConfigError::JitterOutOfRange { fraction: -0.5 }),
    );
    check(0.1, 0, Some(ConfigError::ZeroCapacity));
    assert_eq!(
        ConfigError::ZeroCapacity.to_string(),
        "a cache must be allowed at least one entry (max_entries = 0)"
    );
}

#[test]
fn a_ttl_past_what_instant_holds_never_expires() {
    let (cache, clock) = cache(Duration::MAX, 0.5, 10);
    now(cache.get_or_refresh("k", ok(1))).unwrap();
    clock.advance(Duration::from_secs(3600 * 24 * 365 * 100));
    assert_eq!(
        now(cache.get_or_refresh("k", ok(2))).unwrap(),
        lookup(Some(1), Freshness::Fresh)
    );
}

mod properties {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Get { key: u8, fail: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0_u64..4_000).prop_map(Op::Advance),
            (0_u8..4, any::<bool>()).prop_map(|(key, fail)| Op::Get { key, fail }),
        ]
    }

    proptest! {
        /// Whatever the timing, an answer marked fresh is never older than TTL + jitter, an
        /// answer younger than TTL - jitter is always served fresh, and every answer is either
        /// the latest successful load or, when marked loaded, a load made just now.
        #[test]
        fn fresh_answers_are_never_older_than_ttl_plus_jitter(
            jitter in 0.0_f64..0.9,
            seed in any::<u64>(),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let ttl = Duration::from_secs(2);
            let clock = ManualClock::new();
            let config = CacheConfig { ttl, jitter, max_entries: 16 };
            let cache: TtlCache<u8, Duration, Down, ManualClock> =
                TtlCache::with_clock(config, clock.clone(), JitterRng::seeded(seed)).unwrap();
            let longest = ttl.mul_f64(1.0 + jitter);
            let shortest = ttl.mul_f64(1.0 - jitter);
            // When each key was last loaded successfully.
            let mut loaded_at: HashMap<u8, Duration> = HashMap::new();
            for op in ops {
                match op {
                    Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                    Op::Get { key, fail } => {
                        let t = clock.elapsed();
                        let result = now(cache.get_or_refresh(&key, || {
                            std::future::ready(if fail { Err(Down("down")) } else { Ok(Some(t)) })
                        }));
                        let age = loaded_at.get(&key).map(|&at| t - at);
                        match result {
                            Ok(Lookup { value: Some(stamp), freshness: Freshness::Fresh }) => {
                                prop_assert_eq!(Some(stamp), loaded_at.get(&key).copied());
                                prop_assert!(t - stamp <= longest, "fresh at age {:?}", t - stamp);
                            }
                            Ok(Lookup { value: Some(stamp), freshness: Freshness::Loaded }) => {
                                prop_assert!(!fail);
                                prop_assert_eq!(stamp, t);
                                prop_assert!(age.is_none_or(|age| age >= shortest),
                                    "reloaded at age {:?}", age);
                                loaded_at.insert(key, t);
                            }
                            Ok(Lookup { value: Some(stamp), freshness: Freshness::Stale }) => {
                                prop_assert!(fail);
                                prop_assert_eq!(Some(stamp), loaded_at.get(&key).copied());
                                prop_assert!(t - stamp >= shortest, "stale at age {:?}", t - stamp);
                            }
                            Ok(other) => prop_assert!(false, "unexpected {:?}", other),
                            Err(error) => {
                                prop_assert!(fail);
                                prop_assert_eq!(&*error, &Down("down"));
                                prop_assert!(age.is_none(), "error despite a cached value");
                            }
                        }
                    }
                }
            }
        }
    }
}
