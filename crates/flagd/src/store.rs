//! The served data: the current [`Snapshot`] (swapped atomically), the change feed that SSE
//! streams follow, and the health of the source that fills it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, SecondsFormat, Utc};
use flags_cache::HealthTracker;
use tokio::sync::broadcast;

use crate::engine::{ItemEvent, Snapshot};

/// The changes of one reload, ready to send on streams.
#[derive(Debug)]
pub struct Batch {
    /// The generation of the snapshot these changes lead to.
    pub generation: u64,
    /// `patch` and `delete` events, in key order.
    pub events: Vec<ItemEvent>,
    /// Everything was replaced: followers start again from the snapshot (a stream sends a
    /// `put`), whatever the versions. `events` is then empty.
    pub reset: bool,
}

/// Formats Unix milliseconds as RFC 3339 with millisecond precision, the way `/readyz` shows
/// times.
pub fn rfc3339(unix_ms: u64) -> String {
    let time = i64::try_from(unix_ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_default();
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Holder of the current snapshot and its change feed.
pub struct Store {
    current: ArcSwapOption<Snapshot>,
    /// The snapshot served came from Redis at start, not from the source: stale until the
    /// source publishes.
    warm: AtomicBool,
    /// Whether the current snapshot serves a big segment, read by every evaluation request.
    big_segments: AtomicBool,
    changes: broadcast::Sender<Arc<Batch>>,
    health: HealthTracker,
    /// Warnings about the served data (it loads, but something in it cannot work).
    warnings: Mutex<Vec<String>>,
}

impl Store {
    /// An empty store whose change feed keeps at most `buffer` batches per slow subscriber.
    pub fn new(buffer: usize) -> Store {
        let (changes, _) = broadcast::channel(buffer.max(1));
        Store {
            current: ArcSwapOption::empty(),
            warm: AtomicBool::new(false),
            big_segments: AtomicBool::new(false),
            changes,
            health: HealthTracker::new(),
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// The current snapshot, or None before the first successful load.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Whether the current snapshot serves a big (`unbounded`) segment, so that evaluating
    /// may need memberships from a big-segment store.
    pub fn has_big_segments(&self) -> bool {
        self.big_segments.load(Ordering::Acquire)
    }

    /// Follows changes. Subscribe before reading [`Store::snapshot`]: batches whose generation
    /// is not above the snapshot's are already in it.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.changes.subscribe()
    }

    /// Makes `snapshot` current and tells every stream what changed. The swap happens before
    /// the send so a stream that sees the batch can always read data at least that new.
    pub fn publish(&self, snapshot: Snapshot, events: Vec<ItemEvent>) {
        self.publish_shared(Arc::new(snapshot), events);
    }

    /// [`Store::publish`] of a snapshot someone else holds too (a proxy's SDK client).
    pub fn publish_shared(&self, snapshot: Arc<Snapshot>, events: Vec<ItemEvent>) {
        self.swap_and_send(snapshot, events, false);
    }

    /// Makes `snapshot` current as a replacement of everything: every stream sends a `put` of
    /// it, which SDKs take whole even where versions went down (a proxy's upstream that came
    /// back with other data).
    pub fn publish_reset(&self, snapshot: Arc<Snapshot>) {
        self.swap_and_send(snapshot, Vec::new(), true);
    }

    /// Serves `snapshot`, read from Redis because the source cannot be reached at start, as
    /// stale data: only while nothing is served yet, so data from the source always wins.
    /// Returns whether it is served.
    pub fn publish_warm(&self, snapshot: Snapshot) -> bool {
        let generation = snapshot.generation();
        let big_segments = snapshot.has_big_segments();
        let previous = self
            .current
            .compare_and_swap(&None::<Arc<Snapshot>>, Some(Arc::new(snapshot)));
        if previous.is_some() {
            return false;
        }
        self.big_segments.store(big_segments, Ordering::Release);
        self.warm.store(true, Ordering::Release);
        let _ = self.changes.send(Arc::new(Batch {
            generation,
            events: Vec::new(),
            reset: true,
        }));
        true
    }

    /// Whether the data served came from Redis at start and the source has not published
    /// since.
    pub fn is_warm(&self) -> bool {
        self.warm.load(Ordering::Acquire)
    }

    fn swap_and_send(&self, snapshot: Arc<Snapshot>, events: Vec<ItemEvent>, reset: bool) {
        let generation = snapshot.generation();
        self.big_segments
            .store(snapshot.has_big_segments(), Ordering::Release);
        self.current.store(Some(snapshot));
        self.warm.store(false, Ordering::Release);
        // A send error only means no stream is listening.
        let _ = self.changes.send(Arc::new(Batch {
            generation,
            events,
            reset,
        }));
    }

    /// Records a successful load (whether or not anything changed) and the warnings about
    /// the data now served.
    pub fn record_success(&self, warnings: Vec<String>) {
        self.health.record_success();
        *self.warnings.lock().unwrap_or_else(PoisonError::into_inner) = warnings;
    }

    /// Records a failed load; the current snapshot stays.
    pub fn record_failure(&self, error: String) {
        self.health.record_failure(error);
    }

    /// The source's health: `CONNECTING` before the first load, then `SERVING`, or `DEGRADED`
    /// after repeated failures while the last good data keeps serving.
    pub fn health(&self) -> &HealthTracker {
        &self.health
    }

    /// The warnings of the last successful load.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
