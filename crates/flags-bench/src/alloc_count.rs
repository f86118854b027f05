//! Counting heap allocations per evaluation.
//!
//! [`CountingAllocator`] wraps the system allocator and counts, per thread, every allocation and
//! reallocation with its size. A binary opts in with
//! `#[global_allocator] static A: CountingAllocator = CountingAllocator;` and then asks
//! [`per_call`] for the average over many calls. Counting per thread keeps the numbers clean when
//! the test harness or criterion has other threads allocating at the same time.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A global allocator that forwards to [`System`] and counts what the current thread allocates.
pub struct CountingAllocator;

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
