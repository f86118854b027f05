//! A fresh hit allocates nothing when the key is looked up in its borrowed form.
//!
//! This binary installs a global allocator that counts, per thread, every allocation, so the
//! hit path's promise is measured rather than assumed.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use flags_cache::{CacheConfig, Freshness, OverrideKey, OverrideKeyRef, TtlCache};
use futures_util::FutureExt;

flags_test_support::count_allocations!();

/// Allocations made by `rounds` calls of `f`.
fn allocations(rounds: u32, mut f: impl FnMut()) -> u64 {
    let (count, ()) = flags_test_support::alloc_count::allocations(|| {
        for _ in 0..rounds {
            f();
        }
    });
    count
}

#[derive(Debug)]
struct Down;

fn config() -> CacheConfig {
    CacheConfig {
        ttl: Duration::from_secs(3600),
        ..CacheConfig::default()
    }
}

#[test]
fn a_fresh_override_hit_allocates_nothing() {
    let cache: TtlCache<OverrideKey, usize, Down> = TtlCache::new(config()).unwrap();
    for n in 0..100 {
        cache.insert(
            OverrideKey::new("checkout", "user", &format!("u-{n}")),
            Some(n % 3),
        );
    }
    let (flag, kind) = ("checkout", "user");
    let context_key = String::from("u-42");
    let hit = || {
        let query = OverrideKeyRef::new(black_box(flag), black_box(kind), black_box(&context_key));
        let lookup = cache
            .get_or_refresh(query.as_query(), || async { Err(Down) })
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(lookup.freshness, Freshness::Fresh);
        black_box(lookup);
    };
    hit();
    assert_eq!(allocations(1000, hit), 0);

    // The counter works: a miss builds an owned key, which allocates.
    let miss = || {
        let query = OverrideKeyRef::new("checkout", "user", "nobody");
        cache.invalidate(query.as_query());
        let _ = cache
            .get_or_refresh(query.as_query(), || async { Ok(None) })
            .now_or_never();
    };
    assert!(allocations(10, miss) > 0);
}

#[test]
fn a_fresh_string_hit_allocates_nothing() {
    let cache: TtlCache<String, u64, Down> = TtlCache::new(config()).unwrap();
    cache.insert("flag-key".to_owned(), Some(7));
    let hit = || {
        let lookup = cache
            .get_or_refresh(black_box("flag-key"), || async { Err(Down) })
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(lookup.value, Some(7));
        black_box(lookup);
    };
    hit();
    assert_eq!(allocations(1000, hit), 0);
    let peek = || {
        black_box(cache.peek(black_box("flag-key")));
    };
    assert_eq!(allocations(1000, peek), 0);
}
