//! Big-segment uploads into Redis: members per second through `RedisBigSegments::apply`
//! (hashing each context key, `SADD` to the inclusions and `SREM` from the exclusions, pipelined
//! 10,000 contexts a round trip), against the floor: the same number of `SADD`s of precomputed
//! keys, pipelined the same way, with nothing else. Runs against the Redis the tests use.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flags_eval::big_segment_hash;
use flags_store_redis::{MemberOp, RedisBigSegments};
use flags_test_support::redis;

const MEMBERS: usize = 100_000;
const CHUNK: usize = 10_000;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("flagd-bench-upload-{}", std::process::id());
    let store = runtime
        .block_on(RedisBigSegments::connect(redis().url(), &prefix))
        .unwrap();
    let keys: Vec<String> = (0..MEMBERS).map(|i| format!("user-{i:08}")).collect();
    let client = redis::Client::open(redis().url()).unwrap();
    let mut raw = runtime
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();

    let mut group = c.benchmark_group("big_segment_upload");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let mut generation = 0u64;
    group.bench_function("apply_include", |b| {
        b.iter_batched(
            || {
                generation += 1;
                generation
            },
            |generation| {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                runtime
                    .block_on(store.apply("bench", generation, MemberOp::Include, &refs))
                    .unwrap();
            },
            BatchSize::PerIteration,
        );
    });
    let hashed: Vec<String> = keys
        .iter()
        .map(|k| format!("{prefix}:floor:{}", big_segment_hash(k)))
        .collect();
    group.bench_function("raw_sadd_floor", |b| {
        b.iter_batched(
            || {
                generation += 1;
                format!("bench.g{generation}")
            },
            |reference| {
                runtime.block_on(async {
                    for chunk in hashed.chunks(CHUNK) {
                        let mut pipe = redis::pipe();
                        for key in chunk {
                            pipe.sadd(key, &reference).ignore();
                        }
                        pipe.query_async::<()>(&mut raw).await.unwrap();
                    }
                });
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
    // Leave nothing behind: every key under the bench's prefix.
    runtime.block_on(async {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut raw)
            .await
            .unwrap();
        for chunk in keys.chunks(CHUNK) {
            redis::cmd("DEL")
                .arg(chunk)
                .query_async::<()>(&mut raw)
                .await
                .unwrap();
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
