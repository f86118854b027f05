//! What the scheduler tests share: records numbered by `creationDate`, and an exporter that
//! fails, stalls or slows down on demand and remembers what it was given.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flags_events::{CustomRecord, Record};
use flags_export::{ExportError, Exporter, Scheduler};

/// Record number `i`: a goal whose `creationDate` is `i`.
pub fn record(i: u64) -> Record {
    Record::Custom(CustomRecord {
        context_kind: "".into(),
        user_key: String::new(),
        creation_date: i,
        key: String::new(),
        value: None,
        data: None,
        source: "".into(),
        metadata: flags_events::Metadata::default(),
    })
}

pub fn records(range: std::ops::Range<u64>) -> Vec<Record> {
    range.map(record).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Every export fails, retryably.
    Down,
    /// Every export fails for good.
    Refusing,
    /// Every export waits forever.
    Stuck,
    /// Every export takes this long.
    Slow(Duration),
}

pub struct TestExporter {
    name: String,
    bulk: bool,
    mode: Mutex<Mode>,
    seen: Mutex<Vec<u64>>,
    pub calls: AtomicU64,
}

impl TestExporter {
    pub fn new(name: &str, bulk: bool, mode: Mode) -> TestExporter {
        TestExporter {
            name: name.to_owned(),
            bulk,
            mode: Mutex::new(mode),
            seen: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The `creationDate` of every record exported, in order.
    pub fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }

    pub fn seen_len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[async_trait]
impl Exporter for TestExporter {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_bulk(&self) -> bool {
        self.bulk
    }

    async fn export(&self, records: &[Record]) -> Result<(), ExportError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Up => {}
            Mode::Down => return Err(ExportError::Retryable("destination down".to_owned())),
            Mode::Refusing => return Err(ExportError::Permanent("refused".to_owned())),
            Mode::Stuck => std::future::pending::<()>().await,
            Mode::Slow(d) => tokio::time::sleep(d).await,
        }
        self.seen
            .lock()
            .unwrap()
            .extend(records.iter().map(Record::creation_date));
        Ok(())
    }
}

/// Polls `done` until it holds; panics after `within`.
pub async fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Submits `range` in chunks of `chunk`, waiting while exporter `index` holds more than
/// `max_depth` in memory, as a producer that respects the queue depth metric would.
pub async fn submit_paced(
    scheduler: &Scheduler,
    index: usize,
    range: std::ops::Range<u64>,
    chunk: u64,
    max_depth: u64,
) {
    let mut at = range.start;
    while at < range.end {
        let end = (at + chunk).min(range.end);
        scheduler.submit(records(at..end));
        at = end;
        wait_until(Duration::from_secs(60), "the queue to drain", || {
            scheduler.stats()[index].queue_depth <= max_depth
        })
        .await;
    }
}
