//! Heavy, synchronous work of an export (encoding a large batch, freeing it) kept from
//! stalling the runtime thread that also serves requests.

/// Whether `tokio::task::block_in_place` may be used here: on a multi-thread runtime it hands
/// the thread's other tasks to another worker while the current one works, so the work and
/// request handling share the CPU rather than one waiting for the other. Elsewhere (a
/// current-thread runtime, as in most tests) work runs in place.
pub(crate) fn can_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Frees `value` on a blocking thread: a delivered batch of 100,000 records takes tens of
/// milliseconds to free, which the runtime thread should spend on requests.
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    if tokio::runtime::Handle::try_current().is_ok() {
        drop(tokio::task::spawn_blocking(move || drop(value)));
    }
}
