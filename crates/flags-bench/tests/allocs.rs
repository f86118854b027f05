//! flagd's evaluation hot path must not touch the heap (STYLE.md: "evaluation ... allocates
//! nothing on the hot path"). Every benchmark fixture is evaluated under a counting allocator and
//! must allocate nothing, result and its drop included, both by the engine and through
//! flags-sdk's typed variation calls, with analytics events off and on. The peer is measured
//! too, as a check that the counter sees the allocations an evaluator does make.
#![allow(clippy::unwrap_used)]

mod sdks;

use std::hint::black_box;

use flags_bench::{FlagdSide, PeerSide, fixtures};
use flags_test_support::alloc_count::per_call;
use sdks::OurSdk;

flags_test_support::count_allocations!();

#[test]
fn flagd_evaluation_allocates_nothing() {
    for fixture in fixtures() {
        let flagd = FlagdSide::new(&fixture).unwrap();
        let evaluator = flagd.evaluator();
        let stats = per_call(100, || {
            black_box(evaluator.evaluate(black_box(flagd.flag_key), black_box(&flagd.context)));
        })
        .unwrap();
        assert_eq!(stats.allocations, 0.0, "{}: {stats:?}", fixture.name);
    }
}

#[test]
fn sdk_variation_allocates_nothing_but_a_returned_string() {
    for fixture in fixtures() {
        let sdk = OurSdk::new(&fixture).unwrap();
        if sdk.is_bool() {
            let stats = per_call(1000, || {
                black_box(black_box(&sdk).bool_variation());
            })
            .unwrap();
            assert_eq!(stats.allocations, 0.0, "{}: {stats:?}", fixture.name);
        } else {
            // `str_variation` returns an owned `String`, so the served value is copied into one
            // allocation of its own length; nothing else may allocate.
            let stats = per_call(1000, || {
                black_box(black_box(&sdk).str_variation());
            })
            .unwrap();
            let served = sdk.str_variation().len();
            assert_eq!(stats.allocations, 1.0, "{}: {stats:?}", fixture.name);
            assert_eq!(stats.bytes, served as f64, "{}: {stats:?}", fixture.name);
        }
    }
}

/// With analytics events on, each evaluation is recorded: the event holds shared copies of the
/// context and flag key that the calling thread keeps from one call to the next (see flags-sdk's
/// `events/recent.rs`), so once a thread has seen the context and flag, recording a boolean
/// evaluation allocates nothing either. The first call for a new context copies it once, and a
/// thread's two event buffers (see `events/staging.rs`) grow while it first pushes as many
/// events between two passes of the processor as it will: warm means after two such passes.
#[test]
fn sdk_variation_with_events_on_allocates_nothing_once_warm() {
    let sink = sdks::events_sink();
    for fixture in fixtures() {
        let sdk = OurSdk::with_events(&fixture, &sink).unwrap();
        if !sdk.is_bool() {
            continue;
        }
        for _ in 0..2 {
            for _ in 0..1001 {
                black_box(black_box(&sdk).bool_variation());
            }
            sdk.client.flush();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            // The processor has taken every event off the thread's buffer once it sent them
            // all (an evaluation with prerequisites records one event for each).
            while {
                let stats = sdk.client.event_stats();
                stats.sent + stats.dropped < stats.created
            } {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the events were never sent"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let stats = per_call(1000, || {
            black_box(black_box(&sdk).bool_variation());
        })
        .unwrap();
        assert_eq!(stats.allocations, 0.0, "{}: {stats:?}", fixture.name);
        let recorded = sdk.client.event_stats();
        assert!(
            recorded.created >= 3 * 1001,
            "{}: {recorded:?}",
            fixture.name
        );
    }
}

#[test]
fn the_counter_sees_the_peers_allocations() {
    // LaunchDarkly's evaluator builds two hash sets per call, so a counter reading zero here
    // would mean the measurement above is blind.
    let fixture = flags_bench::plain_bool();
    let peer = PeerSide::new(&fixture).unwrap();
    let stats = per_call(100, || {
        black_box(peer.evaluate());
    })
    .unwrap();
    assert!(stats.allocations >= 1.0, "{stats:?}");
}
