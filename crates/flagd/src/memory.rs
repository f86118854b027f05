//! How flagd's memory goes back to the system.
//!
//! The `flagd` binary allocates with jemalloc. A big reload builds a whole new generation of
//! compiled data while the old one still serves, then drops the old one: hundreds of thousands
//! of small allocations freed at once, interleaved with those of the new generation. glibc's
//! allocator keeps almost all of that (it returns only whole free pages at the top of its heap),
//! so a process stayed near its reload peak for good, and its steady figure carried the holes of
//! its first load. jemalloc groups allocations by size, so freed ones leave whole pages free,
//! and gives those back by itself after a while (its decay time); after a reload, flagd asks for
//! them back at once ([`release_free_pages`]).
//!
//! Measured with `cargo xtask bench-memory` (20,000 flags, 16.6 MB of JSON), glibc then jemalloc:
//! steady 114 -> 87 MiB, after a reload of every flag 161 -> 88 MiB; see docs/benchmarks.md.

/// Returns the allocator's free pages to the system now, rather than after its decay time.
/// Nothing happens where flagd does not use jemalloc, or in a process that allocates otherwise
/// (the library's own tests): jemalloc then has nothing to give back.
pub(crate) fn release_free_pages() {
    #[cfg(not(target_env = "msvc"))]
    {
        // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena at once.
        let name = c"arena.4096.purge";
        #[allow(unsafe_code)]
        // SAFETY: the name is a NUL-terminated mallctl name, and this control reads and writes
        // nothing: every other pointer is null and the length zero, as jemalloc documents.
        let _ = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
    }
}
