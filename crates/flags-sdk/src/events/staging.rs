//! The processor's queue: one small buffer per pushing thread, which the worker swaps out whole.
//!
//! A single shared queue makes every push write the same cache lines the worker writes as it
//! takes events, so with the worker draining on another core each push waits on a line moving
//! between cores. Here a push locks a mutex only its own thread and, once per pass, the worker
//! touch (uncontended, it stays in the pushing core's cache) and appends to a `Vec`; the worker
//! takes each buffer in one swap. No lock is ever held while anything else happens, and a full
//! buffer drops the event.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::outbox::Input;

/// Identifies a processor's queue in the threads' lists of buffers.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's buffer in each queue it pushed to.
    static BUFFERS: RefCell<Vec<(u64, Arc<Buffer>)>> = const { RefCell::new(Vec::new()) };
}

/// One thread's pending events.
struct Buffer {
    items: Mutex<Vec<Input>>,
    /// The emptied vector the worker swaps in next.
    spare: Mutex<Vec<Input>>,
    /// Set when the queue is gone, so the thread forgets the buffer.
    retired: AtomicBool,
}

/// Per-thread buffers of events, each holding at most `capacity`.
pub(crate) struct Staging {
    id: u64,
    capacity: usize,
    buffers: Mutex<Vec<Arc<Buffer>>>,
}

/// What one push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued; the thread's buffer now holds this many.
    Queued(usize),
    /// The thread's buffer was full: the item was dropped.
    Full,
}

impl Staging {
    /// A queue whose per-thread buffers hold at most `capacity` events each.
    pub(crate) fn new(capacity: usize) -> Staging {
        Staging {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            capacity: capacity.max(1),
            buffers: Mutex::new(Vec::new()),
        }
    }

    /// Appends `item` to this thread's buffer, unless it is full.
    #[inline]
    pub(crate) fn push(&self, item: Input) -> Pushed {
        BUFFERS.with(|buffers| {
            let mut buffers = buffers.borrow_mut();
            let buffer = match buffers.iter().find(|(id, _)| *id == self.id) {
                Some((_, buffer)) => buffer,
                None => {
                    self.register(&mut buffers);
                    &buffers[buffers.len() - 1].1
                }
            };
            let mut items = lock(&buffer.items);
            if items.len() >= self.capacity {
                return Pushed::Full;
            }
            items.push(item);
            Pushed::Queued(items.len())
        })
    }

    /// Makes this thread's buffer, on its first push.
    #[cold]
    fn register(&self, buffers: &mut Vec<(u64, Arc<Buffer>)>) {
        // The buffers of queues since gone are forgotten here.
        buffers.retain(|(_, buffer)| !buffer.retired.load(Ordering::Relaxed));
        let buffer = Arc::new(Buffer {
            items: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
        });
        lock(&self.buffers).push(Arc::clone(&buffer));
        buffers.push((self.id, buffer));
    }

    /// Takes every buffered event, oldest first per thread, into `into`. Buffers of threads
    /// that have ended are forgotten once empty.
    pub(crate) fn drain_into(&self, into: &mut Vec<Input>) {
        let buffers: Vec<Arc<Buffer>> = {
            let mut buffers = lock(&self.buffers);
            // Held only here, not by a thread's list any more: the thread is gone.
            buffers.retain(|b| Arc::strong_count(b) > 1 || !lock(&b.items).is_empty());
            buffers.clone()
        };
        for buffer in buffers {
            // Two vectors per thread take turns: the worker swaps the full one for the spare,
            // empties it and keeps it as the next spare, capacity and all. Once both have grown
            // to what the thread pushes between two passes, nobody allocates.
            let mut full = std::mem::take(&mut *lock(&buffer.spare));
            std::mem::swap(&mut full, &mut *lock(&buffer.items));
            into.append(&mut full);
            *lock(&buffer.spare) = full;
        }
    }

    /// Items waiting in every buffer.
    pub(crate) fn len(&self) -> usize {
        lock(&self.buffers)
            .iter()
            .map(|b| lock(&b.items).len())
            .sum()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for buffer in lock(&self.buffers).iter() {
            buffer.retired.store(true, Ordering::Relaxed);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
