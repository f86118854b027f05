//! The override cache's hot path, a fresh hit, next to moka's synchronous cache and a bare
//! dashmap lookup on the same keys and hasher.
//!
//! Run with `cargo bench -p flags-cache --bench cache`. Every side holds the same 1000 override
//! keys and is looked up in borrowed form (three `&str`s) cycling through all of them, so no
//! side allocates a key. The bare dashmap is the floor: one hash and one shard read lock, with
//! no expiry check.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dashmap::DashMap;
use flags_cache::{CacheConfig, JitterRng, OverrideKey, OverrideKeyRef, SystemClock, TtlCache};
use futures_util::FutureExt;

const KEYS: usize = 1000;

#[derive(Debug)]
struct Down;

/// The same (flag, kind, key) triples for every side: 20 flags, users spread over them.
fn triples() -> Vec<(String, String, String)> {
    (0..KEYS)
        .map(|n| {
            (
                format!("flag-{:02}", n % 20),
                "user".to_owned(),
                format!("user-{n:04}"),
            )
        })
        .collect()
}

fn fresh_hit(c: &mut Criterion) {
    let triples = triples();
    let owned = || {
        triples
            .iter()
            .enumerate()
            .map(|(n, (flag, kind, key))| (OverrideKey::new(flag, kind, key), n % 3))
    };
    let config = CacheConfig {
        ttl: Duration::from_secs(3600),
        jitter: 0.1,
        max_entries: 10_000,
    };

    let ours: TtlCache<OverrideKey, usize, Down> =
        match TtlCache::with_clock(config, SystemClock, JitterRng::seeded(1)) {
            Ok(cache) => cache,
            Err(e) => panic!("{e}"),
        };
    let moka: moka::sync::Cache<OverrideKey, usize, ahash::RandomState> =
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(3600))
            .build_with_hasher(ahash::RandomState::new());
    let floor: DashMap<OverrideKey, usize, ahash::RandomState> =
        DashMap::with_hasher(ahash::RandomState::new());
    for (key, variation) in owned() {
        ours.insert(key.clone(), Some(variation));
        moka.insert(key.clone(), variation);
        floor.insert(key, variation);
    }
    // Apply moka's buffered writes so every timed lookup is a hit.
    moka.run_pending_tasks();

    let queries: Vec<OverrideKeyRef<'_>> = triples
        .iter()
        .map(|(flag, kind, key)| OverrideKeyRef::new(flag, kind, key))
        .collect();
    // Every side must answer every key, or the comparison would time misses.
    for query in &queries {
        let hit = ours.peek(query.as_query()).and_then(|lookup| lookup.value);
        assert_eq!(hit, moka.get(query.as_query()));
        assert_eq!(hit, floor.get(query.as_query()).map(|v| *v));
        assert!(hit.is_some());
    }

    let mut group = c.benchmark_group("cache_fresh_hit");
    let mut next = queries.iter().cycle();
    group.bench_function("flags_cache_get_or_refresh", |b| {
        b.iter(|| {
            let query = black_box(next.next().map(OverrideKeyRef::as_query));
            let lookup = query.and_then(|query| {
                ours.get_or_refresh(query, || async { Err(Down) })
                    .now_or_never()
            });
            black_box(lookup)
        })
    });
    let mut next = queries.iter().cycle();
    group.bench_function("flags_cache_peek", |b| {
        b.iter(|| {
            let query = black_box(next.next().map(OverrideKeyRef::as_query));
            black_box(query.and_then(|query| ours.peek(query)))
        })
    });
    let mut next = queries.iter().cycle();
    group.bench_function("moka_sync_get", |b| {
        b.iter(|| {
            let query = black_box(next.next().map(OverrideKeyRef::as_query));
            black_box(query.and_then(|query| moka.get(query)))
        })
    });
    let mut next = queries.iter().cycle();
    group.bench_function("dashmap_get_floor", |b| {
        b.iter(|| {
            let query = black_box(next.next().map(OverrideKeyRef::as_query));
            black_box(query.and_then(|query| floor.get(query).map(|v| *v)))
        })
    });
    group.finish();
}

criterion_group!(benches, fresh_hit);
criterion_main!(benches);
