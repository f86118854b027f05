//! Listener channels: each listener has a bounded queue of its own, so a listener that stops
//! reading never blocks the SDK or any other listener. When its queue is full the oldest events
//! give way, and the listener is told how many it missed before it sees the next one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

/// Events a listener's queue holds before the oldest give way.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Names a listener, for removing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

impl ListenerId {
    fn next() -> ListenerId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ListenerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Why [`Listener::recv`] gave no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The listener fell behind and this many events were dropped; the next call returns the
    /// oldest event still queued.
    #[error("the listener fell behind and missed {0} events")]
    Missed(u64),
    /// The listener was removed or the client closed; no more events will come.
    #[error("the listener was removed or the client closed")]
    Closed,
}

/// The receiving end of one listener.
#[derive(Debug)]
pub struct Listener<T> {
    id: ListenerId,
    rx: broadcast::Receiver<T>,
}

impl<T: Clone> Listener<T> {
    /// This listener's id, for `remove_*`.
    pub fn id(&self) -> ListenerId {
        self.id
    }

    /// The next event, waiting for it.
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => RecvError::Missed(n),
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<T>, RecvError> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(RecvError::Missed(n)),
            Err(broadcast::error::TryRecvError::Closed) => Err(RecvError::Closed),
        }
    }

    /// The next event, blocking this thread until it comes. Not for use inside an async task.
    pub fn blocking_recv(&mut self) -> Result<T, RecvError> {
        self.rx.blocking_recv().map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => RecvError::Missed(n),
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }
}

/// The sending side: every registered listener, each with its own queue.
pub(crate) struct Listeners<T> {
    senders: Mutex<Senders<T>>,
    capacity: usize,
}

struct Senders<T> {
    list: Vec<(ListenerId, broadcast::Sender<T>)>,
    /// Set by [`Listeners::close`]: a listener added afterwards is ended at once, since no
    /// event will ever come to it.
    closed: bool,
}

impl<T: Clone> Listeners<T> {
    pub(crate) fn new(capacity: usize) -> Listeners<T> {
        Listeners {
            senders: Mutex::new(Senders {
                list: Vec::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn add(&self) -> Listener<T> {
        let (tx, rx) = broadcast::channel(self.capacity);
        let id = ListenerId::next();
        let mut senders = self.lock();
        // Once closed, `tx` is dropped here, and the receiver sees `Closed`.
        if !senders.closed {
            senders.list.push((id, tx));
        }
        Listener { id, rx }
    }

    /// Removes a listener; its receiver sees what is queued, then [`RecvError::Closed`].
    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        let list = &mut self.lock().list;
        let before = list.len();
        list.retain(|(i, _)| *i != id);
        list.len() != before
    }

    /// Queues `event` for every listener; never waits. Listeners whose receiver was dropped are
    /// forgotten.
    pub(crate) fn send(&self, event: &T) {
        self.lock()
            .list
            .retain(|(_, tx)| tx.send(event.clone()).is_ok());
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().list.is_empty()
    }

    /// Ends every listener, and every one added from now on.
    pub(crate) fn close(&self) {
        let mut senders = self.lock();
        senders.list.clear();
        senders.closed = true;
    }

    /// Whether [`Listeners::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Senders<T>> {
        // A panic elsewhere while the list was held leaves it whole: go on with it.
        self.senders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_the_oldest_and_says_how_many() {
        let listeners = Listeners::new(4);
        let mut slow = listeners.add();
        let mut fast = listeners.add();
        for i in 0..10 {
            listeners.send(&i);
            assert_eq!(fast.try_recv().unwrap(), Some(i));
        }
        assert_eq!(slow.try_recv(), Err(RecvError::Missed(6)));
        let rest: Vec<_> = std::iter::from_fn(|| slow.try_recv().unwrap()).collect();
        assert_eq!(rest, [6, 7, 8, 9], "in order, newest kept");
    }

    #[test]
    fn a_removed_listener_drains_then_closes() {
        let listeners = Listeners::new(4);
        let mut l = listeners.add();
        listeners.send(&1);
        assert!(listeners.remove(l.id()));
        assert!(!listeners.remove(l.id()));
        listeners.send(&2);
        assert_eq!(l.try_recv(), Ok(Some(1)));
        assert_eq!(l.try_recv(), Err(RecvError::Closed));
    }

    #[test]
    fn a_listener_added_after_close_ends_at_once() {
        let listeners = Listeners::new(4);
        let mut before = listeners.add();
        listeners.close();
        let mut after = listeners.add();
        listeners.send(&1);
        assert_eq!(before.try_recv(), Err(RecvError::Closed));
        assert_eq!(after.try_recv(), Err(RecvError::Closed));
        assert!(listeners.is_empty());
    }

    #[test]
    fn dropped_receivers_are_forgotten() {
        let listeners = Listeners::new(4);
        drop(listeners.add());
        listeners.send(&1);
        assert!(listeners.is_empty());
    }
}
