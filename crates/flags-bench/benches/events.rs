//! Analytics events: flags-sdk's event processor, and the variation call with events on and
//! off, beside LaunchDarkly's Rust server SDK (`launchdarkly-server-sdk` 3.2.0) with its events
//! on. Both SDKs send their events to the same local sink, which answers `202` as flagd's
//! `/bulk` does (`tests/sdks/mod.rs`).
//!
//! - `events_push/{1t,2t}`: one `push_evaluation_event` (the event made as the client makes
//!   it: shared context and flag key, the time), by one thread, and by two threads started
//!   together (the pair's wall time divided by all their pushes, as in `benches/sdk.rs`). After
//!   each, the processor's counts say how many pushes found the queue full.
//! - `events_summary/...`: counting one evaluation into a summary, for a flag already counted,
//!   and rotating over 10 flags of 2 variations each.
//! - `events_variation_{1t,2t}/...`: `bool_variation` on the `plain_bool` case through flags-sdk
//!   with events off and on, and through LaunchDarkly's SDK with events on.
//! - `bulk_parse/{fast,reference}`: reading a `/bulk` body of 1,000 events of the shape
//!   `cargo xtask bench-events` posts ([`bulk_payload`]), and freeing them: `fast` is
//!   `flags_events::parse_bulk`, which reads the events straight from the JSON; `reference` parses
//!   the body into a `serde_json::Value` and reads each event out of it with
//!   `flags_events::parse_event`, as `parse_bulk` did before (and still does for the bodies its
//!   direct reader leaves). Criterion reports time per event (the throughput is 1,000 elements).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flags_events::{Evaluation, EventError, SdkEvent, Summarizer};
use flags_sdk::{Context, EvaluationEvent, EventProcessor, EventsConfig};
use serde_json::Value;

#[path = "../tests/sdks/mod.rs"]
mod sdks;

// The generator of the xtask's payloads, shared by path (it needs only serde_json).
#[path = "../../../xtask/src/events_payload.rs"]
#[allow(dead_code)]
mod events_payload;

use sdks::{OurSdk, TheirSdk};

/// Runs `work` `iters` times on each of `threads` threads started together; the wall time
/// divided by every call.
fn on_threads(threads: usize, iters: u64, work: &(dyn Fn() + Sync)) -> Duration {
    let start = Barrier::new(threads + 1);
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                for _ in 0..iters {
                    work();
                }
            });
        }
        start.wait();
        let began = Instant::now();
        // The scope joins the threads when it ends; the time is taken after.
        began
    })
    .elapsed()
        / u32::try_from(threads).unwrap_or(1)
}

fn push(c: &mut Criterion) {
    let sink = sdks::events_sink();
    let processor = EventProcessor::start("bench-sdk-key", &sink, EventsConfig::default())
        .unwrap_or_else(|e| panic!("event processor: {e}"));
    let context = Arc::new(Context::user("bench-user").unwrap_or_else(|e| panic!("{e}")));
    let mut group = c.benchmark_group("events_push");
    for threads in [1, 2] {
        let before = processor.stats();
        group.bench_function(format!("{threads}t"), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, &|| {
                    let mut event = EvaluationEvent::new(
                        Arc::clone(&context),
                        black_box("bench-flag"),
                        Value::Bool(true),
                        Value::Bool(false),
                    );
                    event.version = Some(1);
                    event.variation = Some(1);
                    processor.push_evaluation_event(event);
                })
            });
        });
        let after = processor.stats();
        let created = after.created - before.created;
        let dropped = after.dropped - before.dropped;
        println!(
            "events_push/{threads}t: {created} pushed, {dropped} dropped ({:.1}%)",
            100.0 * dropped as f64 / created.max(1) as f64
        );
    }
    group.finish();
    let report = processor.close(Duration::from_secs(10));
    println!("events_push: {:?}, {report:?}", processor.stats());
}

fn summary(c: &mut Criterion) {
    let mut group = c.benchmark_group("events_summary");
    let values = [Value::Bool(false), Value::Bool(true)];
    let default = Value::Bool(false);
    let flags: Vec<String> = (0..10).map(|i| format!("flag-{i}")).collect();
    let mut summarizer = Summarizer::new();
    group.bench_function("count_one_flag", |b| {
        b.iter(|| {
            summarizer.count(
                Evaluation {
                    at: 1_700_000_000_000,
                    flag: black_box("flag-0"),
                    version: Some(3),
                    variation: Some(1),
                    value: &values[1],
                    default: &default,
                },
                ["user"],
            );
        });
    });
    let mut summarizer = Summarizer::new();
    let mut i = 0usize;
    group.bench_function("count_10_flags", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            summarizer.count(
                Evaluation {
                    at: 1_700_000_000_000,
                    flag: black_box(&flags[i % 10]),
                    version: Some(3),
                    variation: Some(i % 2),
                    value: &values[i % 2],
                    default: &default,
                },
                ["user"],
            );
        });
    });
    group.finish();
    black_box(summarizer.take());
}

fn variation(c: &mut Criterion) {
    let fixture = flags_bench::fixtures()
        .into_iter()
        .find(|f| f.name == "plain_bool")
        .unwrap_or_else(|| panic!("no plain_bool fixture"));
    let sink = sdks::events_sink();
    let off = OurSdk::new(&fixture).unwrap_or_else(|e| panic!("{e}"));
    let on = OurSdk::with_events(&fixture, &sink).unwrap_or_else(|e| panic!("{e}"));
    let theirs = TheirSdk::with_events(&fixture, &sink).unwrap_or_else(|e| panic!("{e}"));
    for sdk in [&off, &on] {
        assert_eq!(&sdk.answer(), sdk.expected());
    }
    assert_eq!(&theirs.answer(), theirs.expected());
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("events_variation_{threads}t"));
        let mut bench = |name: &str, eval: &(dyn Fn() + Sync)| {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| on_threads(threads, iters, eval))
            });
        };
        bench("flags_sdk_events_off", &|| {
            black_box(black_box(&off).bool_variation());
        });
        bench("flags_sdk_events_on", &|| {
            black_box(black_box(&on).bool_variation());
        });
        bench("launchdarkly_sdk_events_on", &|| {
            black_box(black_box(&theirs).bool_variation());
        });
        group.finish();
    }
    let stats = on.client.event_stats();
    println!("events_variation: flags-sdk {stats:?}");
}

/// A `/bulk` body of 1,000 events exactly as `cargo xtask bench-events` posts them (seed 0): in
/// every fifty, forty `feature` events (contexts as `contextKeys`, one in four of two kinds; a
/// `RULE_MATCH` reason for a third, `FALLTHROUGH` for the others), nine `custom` events (some
/// with a metric value, some with data) and one `summary` of three flags with four counters in
/// all. About 197 KB.
fn bulk_payload() -> Vec<u8> {
    events_payload::payload(0, 1000).to_string().into_bytes()
}

/// `/bulk` reading as it was before the direct reader: the body into a `Value`, then each event
/// out of it.
fn parse_bulk_tree(body: &[u8]) -> Result<Vec<SdkEvent>, EventError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    let Value::Array(events) = value else {
        return Err(EventError::NotAnArray("not an array"));
    };
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| flags_events::parse_event(index, event))
        .collect()
}

fn bulk_parse(c: &mut Criterion) {
    let body = bulk_payload();
    let events = flags_events::parse_bulk(&body).unwrap_or_else(|e| panic!("payload: {e}"));
    assert_eq!(events.len(), 1000);
    assert_eq!(parse_bulk_tree(&body), Ok(events));
    println!("bulk_parse: 1000 events, {} bytes", body.len());
    let mut group = c.benchmark_group("bulk_parse");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("fast", |b| {
        b.iter(|| flags_events::parse_bulk(black_box(&body)))
    });
    group.bench_function("reference", |b| {
        b.iter(|| parse_bulk_tree(black_box(&body)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = push, summary, variation, bulk_parse
}
criterion_main!(benches);
