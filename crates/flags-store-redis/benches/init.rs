//! Writing flag data into Redis: flags per second through `RedisStore::init` (the whole data
//! set in one `MULTI`/`EXEC`, as flagd's `--redis-url` writes an environment at first and after
//! an outage) for 10,000 and 100,000 flags, against the floor: the same fields written with
//! plain `HSET`s, pipelined 10,000 fields a command, with no transaction and nothing else. Then
//! one changed flag written through `RedisStore::upsert_many` into 10,000 (what each change
//! costs flagd now) beside `init` of all 10,000 (what each change cost when flagd rewrote the
//! environment). Runs against the Redis the tests use.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flags_store_redis::{Item, Kind, RedisStore, Upserted};
use flags_test_support::redis;

const CHUNK: usize = 10_000;

/// A flag as flagd serves it: a rule with a clause, targets, the usual fields (about 500 bytes).
fn flag(i: usize, version: u64) -> Item {
    let key = format!("flag-{i:06}");
    let json = format!(
        r#"{{"key":"{key}","version":{version},"on":true,"prerequisites":[],"targets":[{{"values":["user-{i}"],"variation":1}}],"contextTargets":[],"rules":[{{"id":"rule-{i}","variation":1,"clauses":[{{"contextKind":"user","attribute":"country","op":"in","values":["FR","DE","BE"],"negate":false}}],"trackEvents":false}}],"fallthrough":{{"variation":0}},"offVariation":1,"variations":[true,false],"clientSideAvailability":{{"usingMobileKey":false,"usingEnvironmentId":false}},"salt":"{key}","trackEvents":false,"trackEventsFallthrough":false,"deleted":false}}"#
    );
    Item::new(key, version, json)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("flagd-bench-init-{}", std::process::id());
    let store = runtime
        .block_on(RedisStore::connect(redis().url(), &prefix))
        .unwrap();
    let client = redis::Client::open(redis().url()).unwrap();
    let mut raw = runtime
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let floor_hash = format!("{prefix}:floor");

    let mut group = c.benchmark_group("redis_init");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for flags in [10_000, 100_000] {
        let items: Vec<Item> = (0..flags).map(|i| flag(i, 1)).collect();
        group.throughput(Throughput::Elements(flags as u64));
        group.bench_function(format!("init_{flags}"), |b| {
            b.iter(|| runtime.block_on(store.init(&items, &[])).unwrap());
        });
        group.bench_function(format!("raw_hset_floor_{flags}"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut pipe = redis::pipe();
                    for chunk in items.chunks(CHUNK) {
                        let fields: Vec<(&str, &str)> = chunk
                            .iter()
                            .map(|item| (item.key.as_str(), item.json.as_str()))
                            .collect();
                        pipe.hset_multiple(&floor_hash, &fields).ignore();
                    }
                    pipe.query_async::<()>(&mut raw).await.unwrap();
                });
            });
        });
    }
    group.finish();

    // One change into an environment of 10,000 flags.
    let items: Vec<Item> = (0..10_000).map(|i| flag(i, 1)).collect();
    runtime.block_on(store.init(&items, &[])).unwrap();
    let mut group = c.benchmark_group("redis_change");
    group.sample_size(50);
    group.throughput(Throughput::Elements(1));
    let mut version = 1;
    group.bench_function("upsert_many_1_of_10000", |b| {
        b.iter_batched(
            || {
                version += 1;
                flag(42, version)
            },
            |item| {
                let written = runtime
                    .block_on(store.upsert_many(std::slice::from_ref(&item), &[]))
                    .unwrap();
                assert_eq!(written, Upserted::Written(1));
            },
            BatchSize::SmallInput,
        );
    });
    group.sample_size(10);
    group.bench_function("init_all_10000", |b| {
        b.iter(|| runtime.block_on(store.init(&items, &[])).unwrap());
    });
    group.finish();

    // Leave nothing behind.
    runtime.block_on(async {
        redis::cmd("DEL")
            .arg(store.hash(Kind::Features))
            .arg(store.hash(Kind::Segments))
            .arg(store.inited_key())
            .arg(&floor_hash)
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
