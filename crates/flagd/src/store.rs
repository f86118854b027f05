//! The served data: the current [`Snapshot`] (swapped atomically), the change feed that SSE
//! streams follow, and the health of the source that fills it.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::broadcast;

use crate::engine::{ItemEvent, Snapshot};

/// Consecutive failed loads after which a source with data reports `DEGRADED`.
pub const DEGRADED_AFTER: u32 = 3;

/// The changes of one reload, ready to send on streams.
#[derive(Debug)]
pub struct Batch {
    /// The generation of the snapshot these changes lead to.
    pub generation: u64,
    /// `patch` and `delete` events, in key order.
    pub events: Vec<ItemEvent>,
}

/// The health of the data source, as `/readyz` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// When data was last loaded successfully.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The error of the most recent load, if it failed (cleared by the next success).
    pub last_error: Option<String>,
    /// When that load failed.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Failed loads since the last success.
    pub consecutive_failures: u32,
    /// Warnings about the served data (it loads, but something in it cannot work).
    pub warnings: Vec<String>,
}

/// Formats a time as RFC 3339 with millisecond precision, the way `/readyz` shows it.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Holder of the current snapshot and its change feed.
pub struct Store {
    current: ArcSwapOption<Snapshot>,
    changes: broadcast::Sender<Arc<Batch>>,
    status: Mutex<SourceStatus>,
}

impl Store {
    /// An empty store whose change feed keeps at most `buffer` batches per slow subscriber.
    pub fn new(buffer: usize) -> Store {
        let (changes, _) = broadcast::channel(buffer.max(1));
        Store {
            current: ArcSwapOption::empty(),
            changes,
            status: Mutex::new(SourceStatus::default()),
        }
    }

    /// The current snapshot, or None before the first successful load.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Follows changes. Subscribe before reading [`Store::snapshot`]: batches whose generation
    /// is not above the snapshot's are already in it.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.changes.subscribe()
    }

    /// Makes `snapshot` current and tells every stream what changed. The swap happens before
    /// the send so a stream that sees the batch can always read data at least that new.
    pub fn publish(&self, snapshot: Snapshot, events: Vec<ItemEvent>) {
        let generation = snapshot.generation();
        self.current.store(Some(Arc::new(snapshot)));
        // A send error only means no stream is listening.
        let _ = self.changes.send(Arc::new(Batch { generation, events }));
    }

    /// Records a successful load (whether or not anything changed).
    pub fn record_success(&self, warnings: Vec<String>) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.last_success_at = Some(Utc::now());
        status.last_error = None;
        status.last_error_at = None;
        status.consecutive_failures = 0;
        status.warnings = warnings;
    }

    /// Records a failed load; the current snapshot stays.
    pub fn record_failure(&self, error: String) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.last_error = Some(error);
        status.last_error_at = Some(Utc::now());
        status.consecutive_failures = status.consecutive_failures.saturating_add(1);
    }

    /// A copy of the source's health.
    pub fn status(&self) -> SourceStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
