//! Heap allocations per evaluation: flagd's engine against LaunchDarkly's own Rust evaluator,
//! and flags-sdk against LaunchDarkly's Rust server SDK through their typed variation calls.
//!
//! Prints one row per fixture with allocations (including reallocations) and bytes per
//! evaluation, measured in the optimised bench profile. Run with
//! `cargo bench -p flags-bench --bench allocs`; `tests/allocs.rs` holds flagd and flags-sdk to
//! zero (but for the `String` that `str_variation` returns).

use std::hint::black_box;

use flags_bench::{FlagdSide, PeerSide, fixtures};
use flags_test_support::alloc_count::{AllocStats, per_call};

#[path = "../tests/sdks/mod.rs"]
mod sdks;

use sdks::{OurSdk, TheirSdk};

flags_test_support::count_allocations!();

const ROUNDS: u32 = 1000;

fn main() {
    println!(
        "{:<20} {:>13} {:>13} {:>12} {:>12} {:>16} {:>16} {:>16} {:>16}",
        "case",
        "flagd allocs",
        "peer allocs",
        "flagd bytes",
        "peer bytes",
        "flags-sdk allocs",
        "LD SDK allocs",
        "flags-sdk bytes",
        "LD SDK bytes"
    );
    for fixture in fixtures() {
        // A fixture the engines cannot load, or a missing allocator, is a broken measurement,
        // not a result to report.
        let (flagd, peer) = match (FlagdSide::new(&fixture), PeerSide::new(&fixture)) {
            (Ok(flagd), Ok(peer)) => (flagd, peer),
            (Err(e), _) | (_, Err(e)) => panic!("{e}"),
        };
        let (our_sdk, their_sdk) = match (OurSdk::new(&fixture), TheirSdk::new(&fixture)) {
            (Ok(ours), Ok(theirs)) => (ours, theirs),
            (Err(e), _) | (_, Err(e)) => panic!("{e}"),
        };
        let evaluator = flagd.evaluator();
        let measure = |f: &mut dyn FnMut()| match per_call(ROUNDS, f) {
            Ok(stats) => stats,
            Err(e) => panic!("{e}"),
        };
        let ours: AllocStats = measure(&mut || {
            black_box(evaluator.evaluate(black_box(flagd.flag_key), black_box(&flagd.context)));
        });
        let theirs = measure(&mut || {
            black_box(peer.evaluate());
        });
        let (our_calls, their_calls) = if our_sdk.is_bool() {
            (
                measure(&mut || {
                    black_box(black_box(&our_sdk).bool_variation());
                }),
                measure(&mut || {
                    black_box(black_box(&their_sdk).bool_variation());
                }),
            )
        } else {
            (
                measure(&mut || {
                    black_box(black_box(&our_sdk).str_variation());
                }),
                measure(&mut || {
                    black_box(black_box(&their_sdk).str_variation());
                }),
            )
        };
        println!(
            "{:<20} {:>13} {:>13} {:>12} {:>12} {:>16} {:>16} {:>16} {:>16}",
            fixture.name,
            ours.allocations,
            theirs.allocations,
            ours.bytes,
            theirs.bytes,
            our_calls.allocations,
            their_calls.allocations,
            our_calls.bytes,
            their_calls.bytes
        );
    }
}
