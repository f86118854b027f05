//! Heap allocations per evaluation, flagd against LaunchDarkly's own Rust evaluator.
//!
//! Prints one row per fixture with allocations (including reallocations) and bytes per
//! evaluation, measured in the optimised bench profile. Run with
//! `cargo bench -p flags-bench --bench allocs`; `tests/allocs.rs` holds flagd to zero.

use std::hint::black_box;

use flags_bench::{FlagdSide, PeerSide, fixtures};
use flags_test_support::alloc_count::{AllocStats, per_call};

flags_test_support::count_allocations!();

const ROUNDS: u32 = 1000;

fn main() {
    println!(
        "{:<20} {:>13} {:>13} {:>12} {:>12}",
        "case", "flagd allocs", "peer allocs", "flagd bytes", "peer bytes"
    );
    for fixture in fixtures() {
        // A fixture the engines cannot load, or a missing allocator, is a broken measurement,
        // not a result to report.
        let (flagd, peer) = match (FlagdSide::new(&fixture), PeerSide::new(&fixture)) {
            (Ok(flagd), Ok(peer)) => (flagd, peer),
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
        println!(
            "{:<20} {:>13} {:>13} {:>12} {:>12}",
            fixture.name, ours.allocations, theirs.allocations, ours.bytes, theirs.bytes
        );
    }
}
