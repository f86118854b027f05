//! Heap allocations per evaluation, flagd against LaunchDarkly's own Rust evaluator.
//!
//! A counting global allocator wraps the system allocator; each fixture is evaluated once to
//! settle any lazy initialisation, then `ROUNDS` times while counting. Allocations (including
//! reallocations) and bytes are reported per evaluation as a table on stdout. Run with
//! `cargo bench -p flags-bench --bench allocs`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use flags_bench::{FlagdSide, PeerSide, fixtures};

fn main() {
    println!(
        "{:<20} {:>14} {:>14} {:>18} {:>18}",
        "case", "flagd allocs", "peer allocs", "flagd bytes", "peer bytes"
    );
    for fixture in fixtures() {
        // A fixture the engines cannot load is a broken benchmark, not a result to report.
        let flagd = match FlagdSide::new(&fixture) {
            Ok(side) => side,
            Err(e) => panic!("{e}"),
        };
        let peer = match PeerSide::new(&fixture) {
            Ok(side) => side,
            Err(e) => panic!("{e}"),
        };
        let evaluator = flagd.evaluator();
        let ours = per_evaluation(|| {
            black_box(evaluator.evaluate(black_box(flagd.flag_key), black_box(&flagd.context)));
        });
        let theirs = per_evaluation(|| {
            black_box(peer.evaluate());
        });
        println!(
            "{:<20} {:>14} {:>14} {:>18} {:>18}",
            fixture.name,
            fmt(ours.0),
            fmt(theirs.0),
            fmt(ours.1),
            fmt(theirs.1)
        );
    }
}

const ROUNDS: u64 = 1000;

/// Allocation count and bytes per call of `f`, averaged over `ROUNDS` calls after one warm-up.
fn per_evaluation(mut f: impl FnMut()) -> (f64, f64) {
    f();
    let (count0, bytes0) = snapshot();
    for _ in 0..ROUNDS {
        f();
    }
    let (count1, bytes1) = snapshot();
    // The counters are far below 2^52, so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let per = |n: u64| n as f64 / ROUNDS as f64;
    (per(count1 - count0), per(bytes1 - bytes0))
}

fn fmt(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}

fn snapshot() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::SeqCst),
        BYTES.load(Ordering::SeqCst),
    )
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `Counting`
// upholds exactly the contract `System` does; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged, see the impl comment.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged, see the impl comment.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: forwarded unchanged, see the impl comment.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged, see the impl comment.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn record(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
}
