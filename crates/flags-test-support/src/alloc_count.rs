//! Counting heap allocations, so "this path allocates nothing" is measured, not assumed.
//!
//! [`CountingAllocator`] forwards to the system allocator and counts, per thread, every
//! allocation and reallocation with its size. Counting per thread keeps the numbers clean while
//! the test harness or criterion allocates on other threads. A global allocator can only be
//! chosen by the final binary, so each test or bench binary that counts installs it itself, with
//! one line at its top level:
//!
//! ```
//! flags_test_support::count_allocations!();
//!
//! fn main() {
//!     let (count, buffer) = flags_test_support::alloc_count::allocations(|| vec![0_u8; 16]);
//!     assert_eq!((count, buffer.len()), (1, 16));
//! }
//! ```
//!
//! [`allocations`] counts what a closure allocates, and [`per_call`] averages over many calls
//! and refuses to answer in a binary that forgot the line above.
#![allow(unsafe_code)] // A global allocator is `unsafe impl`; this one only forwards to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Installs [`CountingAllocator`] as the global allocator of the binary it is written in.
#[macro_export]
macro_rules! count_allocations {
    () => {
        #[global_allocator]
        static COUNTING_ALLOCATOR: $crate::alloc_count::CountingAllocator =
            $crate::alloc_count::CountingAllocator;
    };
}

/// A global allocator that forwards to [`System`] and counts what the current thread allocates.
pub struct CountingAllocator;

/// Allocations (plus reallocations) the current thread made while `f` ran, and `f`'s result.
pub fn allocations<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (ALLOCATIONS.with(Cell::get) - before, result)
}

/// Average heap activity of one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocStats {
    /// Allocations plus reallocations per call.
    pub allocations: f64,
    /// Bytes requested per call (a reallocation counts its new size).
    pub bytes: f64,
}

/// [`per_call`] was used in a binary that does not install [`CountingAllocator`], where every
/// count would read zero and prove nothing.
#[derive(Debug, thiserror::Error)]
#[error("CountingAllocator is not the global allocator of this binary")]
pub struct NotInstalled;

/// Calls `f` once to settle lazy initialisation, then `rounds` times while counting, and returns
/// the averages per call.
pub fn per_call(rounds: u32, mut f: impl FnMut()) -> Result<AllocStats, NotInstalled> {
    let before = snapshot();
    std::hint::black_box(Box::new(0_u64));
    if snapshot().0 == before.0 {
        return Err(NotInstalled);
    }
    f();
    let (allocations0, bytes0) = snapshot();
    for _ in 0..rounds {
        f();
    }
    let (allocations1, bytes1) = snapshot();
    let rounds = f64::from(rounds.max(1));
    // Counts stay far below 2^52 in any run, so the conversion to f64 is exact.
    #[allow(clippy::cast_precision_loss)]
    let per = |n: u64| n as f64 / rounds;
    Ok(AllocStats {
        allocations: per(allocations1 - allocations0),
        bytes: per(bytes1 - bytes0),
    })
}

thread_local! {
    // Const-initialised and without destructors, so touching them never allocates (which would
    // recurse into the allocator).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn snapshot() -> (u64, u64) {
    (ALLOCATIONS.with(Cell::get), BYTES.with(Cell::get))
}

fn record(size: usize) {
    // `try_with` because a thread may still allocate while its thread-locals are being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    let _ = BYTES.try_with(|n| n.set(n.get() + size as u64));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `CountingAllocator` upholds exactly the contract `System` does; counting touches only
// const-initialised thread-locals, which neither allocate nor unwind.
unsafe impl GlobalAlloc for CountingAllocator {
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
