//! Evaluating a flag whose rule matches a big segment, as flagd's request path does it: the
//! context's membership is fetched first ([`BigSegments::prefetch`], cache first), then the flag
//! is evaluated against it. The peer is the same flag shape over a plain segment, which needs no
//! fetch, evaluated in the same run.
//!
//! - `plain_segment`: the peer.
//! - `big_hit`: the same context every time, so its membership comes from the cache.
//! - `big_miss_memory`: a different context every time, out of more than the cache holds, read
//!   from the in-memory store: the cost of a miss without any I/O.
//! - `big_miss_postgres`: the same over PostgreSQL, a round trip per evaluation (a database of
//!   its own on the server the tests use: the machine's on 127.0.0.1:5432, or a throwaway
//!   cluster when none answers).
//!
//! Each miss case prints how many store queries it made per evaluation, so a run where the
//! cache answered some of them shows it.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use flagd::BigSegments;
use flags_core::{BigSegmentMembership, BigSegmentsStatus, Context};
use flags_eval::{CompiledData, Evaluator};
use flags_store::{
    Actor, AdminStore, BigSegmentMembers, MemberChange, MemberOp, MemberUpload, MemoryBigSegments,
    StoreError,
};
use flags_store_postgres::PostgresStore;
use serde_json::json;

/// Members of the big segment: ten times the membership cache, so cycling through them misses.
const MEMBERS: usize = 1_000_000;

const ENV: &str = "bench";

fn data() -> CompiledData {
    let rule = |segment: &str| {
        json!({"on": true, "salt": "s", "variations": [false, true], "offVariation": 0,
            "fallthrough": {"variation": 0},
            "rules": [{"id": "r0", "variation": 1,
                "clauses": [{"attribute": "key", "op": "segmentMatch", "values": [segment]}]}]})
    };
    let value = json!({
        "flags": {"gate-small": rule("small"), "gate-big": rule("big")},
        "segments": {
            "small": {"key": "small", "version": 1, "included": ["user-1"]},
            "big": {"key": "big", "version": 1, "unbounded": true, "generation": 1}
        }
    });
    match CompiledData::from_json_str(&value.to_string()) {
        Ok(data) => data,
        Err(e) => panic!("the bench's flags do not compile: {e}"),
    }
}

fn context(key: &str) -> Context {
    match Context::user(key) {
        Ok(context) => context,
        Err(e) => panic!("{e}"),
    }
}

/// Counts the membership queries that reach the store under the cache.
struct Counted {
    inner: Arc<dyn BigSegmentMembers>,
    queries: AtomicU64,
}

#[async_trait::async_trait]
impl BigSegmentMembers for Counted {
    async fn begin_upload(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        fresh: bool,
    ) -> Result<Box<dyn MemberUpload>, StoreError> {
        self.inner
            .begin_upload(env, segment, generation, fresh)
            .await
    }

    async fn memberships(
        &self,
        env: &str,
        context_hashes: &[String],
    ) -> Result<Vec<(String, BigSegmentMembership)>, StoreError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.inner.memberships(env, context_hashes).await
    }

    async fn synchronized_on(&self, env: &str) -> Result<Option<u64>, StoreError> {
        self.inner.synchronized_on(env).await
    }

    async fn set_synchronized_on(&self, env: &str, unix_ms: u64) -> Result<(), StoreError> {
        self.inner.set_synchronized_on(env, unix_ms).await
    }

    async fn clear_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
    ) -> Result<(), StoreError> {
        self.inner.clear_generation(env, segment, generation).await
    }

    async fn copy_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        into: &mut dyn MemberUpload,
    ) -> Result<u64, StoreError> {
        self.inner
            .copy_generation(env, segment, generation, into)
            .await
    }
}

/// Fills `store` with [`MEMBERS`] members of generation 1 of `big` (`user-0` …), every tenth
/// excluded, and marks it synchronized now.
async fn fill(store: &dyn BigSegmentMembers) -> Result<(), StoreError> {
    let mut upload = store.begin_upload(ENV, "big", 1, true).await?;
    let mut chunk = Vec::with_capacity(10_000);
    for i in 0..MEMBERS {
        let op = if i % 10 == 0 {
            MemberOp::Exclude
        } else {
            MemberOp::Include
        };
        chunk.push(MemberChange::for_key(op, &format!("user-{i}")));
        if chunk.len() == chunk.capacity() {
            upload.apply(&chunk).await?;
            chunk.clear();
        }
    }
    upload.apply(&chunk).await?;
    upload
        .commit(None)
        .await
        .map_err(flags_store::UploadError::into_store_error)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    store.set_synchronized_on(ENV, now).await
}

fn big_segment_eval(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("{e}"),
    };
    let data = data();
    let evaluator = Evaluator::new(&data);
    let one = context("user-1");
    let contexts: Vec<Context> = (0..MEMBERS)
        .map(|i| context(&format!("user-{i}")))
        .collect();

    let memory: Arc<dyn BigSegmentMembers> = Arc::new(MemoryBigSegments::new());
    let database = flags_test_support::postgres().create_database();
    let postgres: Arc<dyn BigSegmentMembers> = runtime.block_on(async {
        let store = match PostgresStore::connect(database.url()).await {
            Ok(store) => store,
            Err(e) => panic!("cannot connect to {}: {e}", database.url()),
        };
        if let Err(e) = store.migrate().await {
            panic!("{e}");
        }
        if let Err(e) = store
            .create_environment(&Actor::named("bench"), ENV, ENV)
            .await
        {
            panic!("{e}");
        }
        Arc::new(store)
    });
    for store in [&memory, &postgres] {
        if let Err(e) = runtime.block_on(fill(store.as_ref())) {
            panic!("cannot fill the store: {e}");
        }
        // A benchmark of wrong answers measures nothing: an included and an excluded member.
        let big = match BigSegments::new(Arc::clone(store)) {
            Ok(big) => big,
            Err(e) => panic!("{e}"),
        };
        for (key, expected) in [("user-1", true), ("user-0", false)] {
            let context = context(key);
            let prefetched = runtime.block_on(big.prefetch(ENV, &context));
            let detail = evaluator
                .with_big_segments(&prefetched)
                .evaluate("gate-big", &context);
            assert_eq!(
                (
                    detail.value.and_then(serde_json::Value::as_bool),
                    detail.big_segments_status
                ),
                (Some(expected), Some(BigSegmentsStatus::Healthy)),
                "{key}"
            );
        }
    }

    let mut group = c.benchmark_group("big_segment_eval");
    group.bench_function("plain_segment", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(evaluator.evaluate(black_box("gate-small"), black_box(&one)))
                .value
                .and_then(serde_json::Value::as_bool)
        });
    });

    let cached = match BigSegments::new(Arc::clone(&memory)) {
        Ok(big) => big,
        Err(e) => panic!("{e}"),
    };
    group.bench_function("big_hit", |b| {
        b.to_async(&runtime).iter(|| async {
            let prefetched = cached.prefetch(ENV, black_box(&one)).await;
            let detail = evaluator
                .with_big_segments(&prefetched)
                .evaluate(black_box("gate-big"), &one);
            black_box(detail.value.and_then(serde_json::Value::as_bool))
        });
    });

    for (name, store) in [
        ("big_miss_memory", &memory),
        ("big_miss_postgres", &postgres),
    ] {
        let counted = Arc::new(Counted {
            inner: Arc::clone(store),
            queries: AtomicU64::new(0),
        });
        let big = match BigSegments::new(Arc::clone(&counted) as Arc<dyn BigSegmentMembers>) {
            Ok(big) => big,
            Err(e) => panic!("{e}"),
        };
        let next = AtomicU64::new(0);
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let context = &contexts[(i as usize) % contexts.len()];
                let prefetched = big.prefetch(ENV, context).await;
                let detail = evaluator
                    .with_big_segments(&prefetched)
                    .evaluate(black_box("gate-big"), context);
                black_box(detail.value.and_then(serde_json::Value::as_bool))
            });
        });
        let evaluations = next.load(Ordering::Relaxed).max(1);
        let queries = counted.queries.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let per = queries as f64 / evaluations as f64;
        println!("{name}: {queries} store queries in {evaluations} evaluations ({per:.3} each)");
    }
    group.finish();
    drop(postgres);
    drop(database);
}

criterion_group!(benches, big_segment_eval);
criterion_main!(benches);
