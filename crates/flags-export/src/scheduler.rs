//! The scheduler: one queue and one task per exporter, fed by [`Scheduler::submit`].
//!
//! `submit` only appends a shared chunk of records to each exporter's queue, under a lock that
//! is never held across I/O or an `.await`, and wakes the exporter's task. Each task owns its
//! exporter's whole pipeline, in this order of age: the batch in flight, then the spool on
//! disk (oldest segment first), then the queue in memory. While a batch is being exported or
//! waits out a retry backoff, the task keeps the queue within `max_events_in_memory` by moving
//! it, whole and in order, to the end of the spool; everything spooled is exported before the
//! queue that came after it.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flags_events::Record;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::exporter::Exporter;
use crate::spool::{self, End, Spool};

/// How the scheduler batches, bounds and retries. A plain value: flagd builds it from its
/// configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// How long a bulk exporter's records wait for more to join their batch. Default 10 s.
    pub flush_interval: Duration,
    /// Per exporter: the records kept in memory, besides the batch being exported. A bulk
    /// exporter gets a batch as soon as this many are queued; past it, while the exporter is
    /// busy or failing, the queue moves to the spool (or, without one, the oldest are dropped).
    /// Also the largest batch an exporter gets. Default 100,000.
    pub max_events_in_memory: usize,
    /// Where each exporter's spool lives (a directory per exporter, created as needed). `None`:
    /// no disk, and records past the memory bound are dropped, oldest first, and counted.
    pub spool_dir: Option<PathBuf>,
    /// Per exporter: the most bytes its spool may hold; past it the oldest records are dropped
    /// and counted. Default 1 GiB.
    pub max_spool_bytes: u64,
    /// Waits between attempts after a retryable failure.
    pub retry: Backoff,
}

/// Exponential backoff: `base`, then twice as long after each failure, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait. Default 100 ms.
    pub base: Duration,
    /// The longest wait. Default 30 s.
    pub max: Duration,
}

/// One exporter's counters, as plain numbers for metrics. Every count is of records. At any
/// quiet moment `received + replayed-from-an-earlier-run = exported + dropped + queue_depth +
/// spool_records`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExporterStats {
    /// [`Exporter::name`].
    pub name: String,
    /// Submitted to this exporter.
    pub received: u64,
    /// Delivered.
    pub exported: u64,
    /// Offered again after a retryable failure (a batch of 100 retried twice counts 200).
    pub retried: u64,
    /// Written to the spool.
    pub spooled: u64,
    /// Read back from the spool to be exported, including what an earlier run left.
    pub replayed: u64,
    /// Lost, and logged: past the memory bound without a spool, past the spool's bound,
    /// refused by the exporter as permanent failures, unreadable in the spool, or submitted
    /// after shutdown.
    pub dropped: u64,
    /// Held in memory: queued, or in the batch being exported.
    pub queue_depth: u64,
    /// Held in the spool, including a segment being replayed.
    pub spool_records: u64,
    /// The spool's size on disk.
    pub spool_bytes: u64,
}

/// What [`Scheduler::shutdown`] did, per exporter, so that nothing is lost silently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// One entry per exporter, in the order they were given to [`Scheduler::start`].
    pub exporters: Vec<ExporterReport>,
}

/// One exporter's part of a [`ShutdownReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExporterReport {
    /// [`Exporter::name`].
    pub name: String,
    /// Records exported during the shutdown.
    pub exported: u64,
    /// Records written to the spool during the shutdown, because the deadline passed first.
    pub spooled: u64,
    /// Records dropped during the shutdown (no spool, a full spool, permanent failures).
    pub dropped: u64,
    /// Records left in the spool for the next start.
    pub left_in_spool: u64,
    /// Whether the deadline passed before everything was exported.
    pub deadline_passed: bool,
    /// The counters at the end.
    pub stats: ExporterStats,
}

/// Why the scheduler did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting cannot work.
    #[error("invalid exporter scheduler configuration: {0}")]
    Invalid(String),
    /// `start` was called outside a tokio runtime.
    #[error("the exporter scheduler needs a tokio runtime")]
    NoRuntime,
    /// An exporter's spool could not be opened.
    #[error("cannot open the spool of exporter {exporter} in {}: {source}", dir.display())]
    Spool {
        /// [`Exporter::name`].
        exporter: String,
        /// The spool's directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Feeds every exporter from a queue of its own. Cheap to clone: clones share the queues.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            flush_interval: Duration::from_secs(10),
            max_events_in_memory: 100_000,
            spool_dir: None,
            max_spool_bytes: 1 << 30,
            retry: Backoff::default(),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before attempt `failures + 1`.
    fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.max)
    }
}

impl ShutdownReport {
    /// Records dropped during the shutdown, over all exporters.
    pub fn dropped(&self) -> u64 {
        self.exporters.iter().map(|e| e.dropped).sum()
    }
}

impl Scheduler {
    /// Starts one task per exporter on the current tokio runtime. Each first replays what its
    /// spool holds from an earlier run.
    pub fn start(
        config: SchedulerConfig,
        exporters: Vec<Arc<dyn Exporter>>,
    ) -> Result<Scheduler, StartError> {
        if config.max_events_in_memory == 0 {
            return Err(StartError::Invalid(
                "max_events_in_memory must be at least 1".to_owned(),
            ));
        }
        if config.flush_interval.is_zero() || config.retry.base.is_zero() {
            return Err(StartError::Invalid(
                "flush_interval and the retry backoff must be longer than zero".to_owned(),
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let mut names = std::collections::HashSet::new();
        for exporter in &exporters {
            if !names.insert(exporter.name().to_owned()) {
                return Err(StartError::Invalid(format!(
                    "two exporters are named {:?}; names key metrics and spools, so they must differ",
                    exporter.name()
                )));
            }
        }
        let mut workers = Vec::with_capacity(exporters.len());
        for exporter in exporters {
            let name = exporter.name().to_owned();
            let spool = match &config.spool_dir {
                None => None,
                Some(root) => {
                    let dir = root.join(spool::dir_name(&name));
                    let spool = Spool::open(dir.clone(), &name, config.max_spool_bytes).map_err(
                        |source| StartError::Spool {
                            exporter: name.clone(),
                            dir,
                            source,
                        },
                    )?;
                    Some(spool)
                }
            };
            let bound = config.max_events_in_memory;
            let lane = Arc::new(Lane {
                bulk: exporter.is_bulk(),
                bound,
                // With a spool, the task moves the queue to disk; this cap only guards memory
                // against a disk too slow to keep up.
                cap: if spool.is_some() {
                    bound
                        .saturating_mul(4)
                        .max(bound.saturating_add(SPILL_HEADROOM))
                } else {
                    bound
                },
                spooling: spool.is_some(),
                inbox: Mutex::new(Inbox::default()),
                wake: tokio::sync::Notify::new(),
                room: tokio::sync::Notify::new(),
                counters: Counters::default(),
                name,
            });
            if let Some(spool) = &spool {
                lane.counters.sync_spool(spool);
            }
            workers.push(Worker {
                lane,
                exporter,
                spool: spool.map(|s| Arc::new(Mutex::new(s))),
                flush_interval: config.flush_interval,
                retry: config.retry,
            });
        }
        let lanes = workers.iter().map(|w| Arc::clone(&w.lane)).collect();
        let handles = workers
            .into_iter()
            .map(|worker| runtime.spawn(worker.run()))
            .collect();
        Ok(Scheduler {
            inner: Arc::new(Inner {
                lanes,
                handles: Mutex::new(Some(handles)),
            }),
        })
    }

    /// Hands `records` to every exporter. Never blocks, never does I/O and never waits on a
    /// lock held during I/O: it appends one shared chunk to each exporter's queue (dropping
    /// that queue's oldest records, counted, if it is past its bound) and wakes its task.
    pub fn submit(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let chunk = Arc::new(records);
        for lane in &self.inner.lanes {
            lane.push(Arc::clone(&chunk));
        }
    }

    /// [`Scheduler::submit`], once every exporter's queue is within the memory bound, or once
    /// `patience` has passed. For producers that can wait, such as an SDK's `/bulk` post (its
    /// events are taken before it is answered): a burst faster than an exporter is slowed to
    /// its pace, rather than spilled to its spool (which costs a write and a read) or dropped.
    /// A destination that is down still has its queue moved to the spool as it grows, which
    /// makes room. It waits on the exporters' tasks taking records, never on I/O of its own.
    pub async fn submit_when_room(&self, records: Vec<Record>, patience: Duration) {
        let deadline = Instant::now() + patience;
        for lane in &self.inner.lanes {
            while lane.is_full() {
                // Made before the check, so a take between the two still wakes it.
                let room = lane.room.notified();
                if !lane.is_full() {
                    break;
                }
                if tokio::time::timeout_at(deadline, room).await.is_err() {
                    break;
                }
            }
        }
        self.submit(records);
    }

    /// Every exporter's counters, in the order they were given to [`Scheduler::start`].
    pub fn stats(&self) -> Vec<ExporterStats> {
        self.inner.lanes.iter().map(|lane| lane.stats()).collect()
    }

    /// Exports everything held, in memory and in the spool, until `grace` has passed; then
    /// spools what is left (drops it, counted, without a spool), closes every exporter and
    /// reports what happened. Records submitted afterwards are dropped and counted. A second
    /// call only reports the counters.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let deadline = Instant::now() + grace;
        let before: Vec<ExporterStats> = self.stats();
        for lane in &self.inner.lanes {
            lane.close(deadline);
        }
        let handles = lock(&self.inner.handles).take().unwrap_or_default();
        let mut ends = vec![TaskEnd::default(); self.inner.lanes.len()];
        for (handle, end) in handles.into_iter().zip(&mut ends) {
            match handle.await {
                Ok(e) => *end = e,
                Err(error) => tracing::error!(%error, "an exporter task failed"),
            }
        }
        let exporters = self
            .inner
            .lanes
            .iter()
            .zip(before)
            .zip(ends)
            .map(|((lane, before), end)| {
                let stats = lane.stats();
                ExporterReport {
                    name: lane.name.clone(),
                    exported: stats.exported - before.exported,
                    spooled: stats.spooled - before.spooled,
                    dropped: stats.dropped - before.dropped,
                    left_in_spool: stats.spool_records,
                    deadline_passed: end.deadline_passed,
                    stats,
                }
            })
            .collect();
        let report = ShutdownReport { exporters };
        for e in &report.exporters {
            tracing::info!(
                exporter = %e.name,
                exported = e.exported,
                spooled = e.spooled,
                dropped = e.dropped,
                left_in_spool = e.left_in_spool,
                deadline_passed = e.deadline_passed,
                "exporter shut down"
            );
        }
        report
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("exporters", &self.stats())
            .finish()
    }
}

struct Inner {
    lanes: Vec<Arc<Lane>>,
    handles: Mutex<Option<Vec<JoinHandle<TaskEnd>>>>,
}

impl Drop for Inner {
    /// Dropped without a shutdown: the tasks spool what they hold (or count it as dropped)
    /// rather than run on with no one to stop them.
    fn drop(&mut self) {
        for lane in &self.lanes {
            lane.close(Instant::now());
        }
    }
}

/// How a task ended.
#[derive(Debug, Clone, Copy, Default)]
struct TaskEnd {
    deadline_passed: bool,
}

/// With a spool, how many records past the memory bound a queue may hold while its task moves
/// them to disk, at the least (four times the bound when that is more): a burst of submissions
/// faster than the disk is spooled whole rather than dropped, and memory stays bounded (about
/// 100 MB at 1 KB a record) when the disk cannot keep up at all.
const SPILL_HEADROOM: usize = 100_000;

/// What `submit` and an exporter's task share.
struct Lane {
    name: String,
    bulk: bool,
    bound: usize,
    cap: usize,
    /// Whether a spool takes what passes the memory bound.
    spooling: bool,
    inbox: Mutex<Inbox>,
    wake: tokio::sync::Notify,
    /// Told when the task takes records out of the queue, for submitters waiting for room.
    room: tokio::sync::Notify,
    counters: Counters,
}

#[derive(Default)]
struct Inbox {
    chunks: VecDeque<Chunk>,
    len: usize,
    /// Set by shutdown: later records are dropped, and the task stops once it holds nothing.
    deadline: Option<Instant>,
}

/// Records shared by every exporter's queue, from `start` on for this one.
struct Chunk {
    records: Arc<Vec<Record>>,
    start: usize,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    exported: AtomicU64,
    retried: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    dropped: AtomicU64,
    queued: AtomicU64,
    in_flight: AtomicU64,
    spool_records: AtomicU64,
    spool_bytes: AtomicU64,
    /// Dropped by `submit` and not logged yet: the task logs them, so that the request path
    /// writes no log lines.
    unlogged_drops: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these locks; if one did, the queue is still consistent
    // (every update completes before the guard drops), so keep going.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Chunk {
    fn len(&self) -> usize {
        self.records.len() - self.start
    }

    fn slice(&self) -> &[Record] {
        &self.records[self.start..]
    }
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn sync_spool(&self, spool: &Spool) {
        self.spool_records.store(spool.records(), Ordering::Relaxed);
        self.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
    }
}

impl Lane {
    fn push(&self, records: Arc<Vec<Record>>) {
        let n = records.len();
        Counters::add(&self.counters.received, n as u64);
        let mut inbox = lock(&self.inbox);
        if inbox.deadline.is_some() {
            drop(inbox);
            Counters::add(&self.counters.dropped, n as u64);
            tracing::warn!(
                exporter = %self.name,
                records = n,
                "records submitted after shutdown began were dropped"
            );
            return;
        }
        inbox.chunks.push_back(Chunk { records, start: 0 });
        inbox.len += n;
        // With a spool the records just submitted are always taken (the task spills them to
        // disk); only a backlog the spool has not kept up with, older than them, is dropped.
        // So memory stays within the cap plus one submission, and a submission larger than
        // the cap is not lost while the disk has room.
        let limit = if self.spooling {
            self.cap.saturating_add(n)
        } else {
            self.cap
        };
        let mut dropped = 0;
        while inbox.len > limit {
            let over = inbox.len - limit;
            let Some(front) = inbox.chunks.front_mut() else {
                break;
            };
            let take = over.min(front.len());
            front.start += take;
            if front.len() == 0 {
                inbox.chunks.pop_front();
            }
            inbox.len -= take;
            dropped += take;
        }
        let len = inbox.len;
        drop(inbox);
        self.counters.queued.store(len as u64, Ordering::Relaxed);
        if dropped > 0 {
            Counters::add(&self.counters.dropped, dropped as u64);
            Counters::add(&self.counters.unlogged_drops, dropped as u64);
        }
        // A bulk lane's task sleeps without a timer while its queue is empty: the first
        // records wake it to arm the flush timer, later ones only once a batch is full.
        let was_empty = len <= n;
        if !self.bulk || was_empty || len >= self.bound || dropped > 0 {
            self.wake.notify_one();
        }
    }

    fn queued(&self) -> usize {
        lock(&self.inbox).len
    }

    /// Records that the task took records out, leaving `len`, and wakes the submitters
    /// waiting for room.
    fn shrank_to(&self, len: usize) {
        self.counters.queued.store(len as u64, Ordering::Relaxed);
        self.room.notify_waiters();
    }

    /// Whether the queue holds the memory bound or more.
    fn is_full(&self) -> bool {
        self.counters.queued.load(Ordering::Relaxed) >= self.bound as u64
    }

    fn deadline(&self) -> Option<Instant> {
        lock(&self.inbox).deadline
    }

    fn close(&self, deadline: Instant) {
        let mut inbox = lock(&self.inbox);
        if inbox.deadline.is_none() {
            inbox.deadline = Some(deadline);
        }
        drop(inbox);
        self.wake.notify_one();
    }

    /// Takes the oldest records, about `limit` of them: whole chunks while they fit, or part of
    /// the first one when it alone is larger.
    fn take(&self, limit: usize) -> Batch {
        let mut inbox = lock(&self.inbox);
        let first = match inbox.chunks.front_mut() {
            None => return Batch::Owned(Vec::new()),
            Some(front) if front.len() > limit => {
                let range = front.start..front.start + limit;
                front.start += limit;
                let records = Arc::clone(&front.records);
                inbox.len -= limit;
                let len = inbox.len;
                drop(inbox);
                self.shrank_to(len);
                return Batch::Shared { records, range };
            }
            Some(_) => inbox.chunks.pop_front(),
        };
        let mut chunks: Vec<Chunk> = first.into_iter().collect();
        let mut taken = chunks.iter().map(Chunk::len).sum::<usize>();
        while let Some(next) = inbox.chunks.front() {
            if taken + next.len() > limit {
                break;
            }
            taken += next.len();
            chunks.extend(inbox.chunks.pop_front());
        }
        inbox.len -= taken;
        let len = inbox.len;
        drop(inbox);
        self.shrank_to(len);
        if let [only] = chunks.as_slice() {
            return Batch::Shared {
                records: Arc::clone(&only.records),
                range: only.start..only.records.len(),
            };
        }
        // Several chunks make one batch. A chunk no other exporter still holds is moved;
        // one that is shared is cloned.
        let mut records = Vec::with_capacity(taken);
        for chunk in chunks {
            match Arc::try_unwrap(chunk.records) {
                Ok(mut owned) => records.extend(owned.drain(chunk.start..)),
                Err(shared) => records.extend_from_slice(&shared[chunk.start..]),
            }
        }
        Batch::Owned(records)
    }

    /// Takes the whole queue.
    fn take_all(&self) -> Vec<Chunk> {
        let mut inbox = lock(&self.inbox);
        inbox.len = 0;
        let chunks = std::mem::take(&mut inbox.chunks).into();
        drop(inbox);
        self.shrank_to(0);
        chunks
    }

    fn stats(&self) -> ExporterStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ExporterStats {
            name: self.name.clone(),
            received: get(&c.received),
            exported: get(&c.exported),
            retried: get(&c.retried),
            spooled: get(&c.spooled),
            replayed: get(&c.replayed),
            dropped: get(&c.dropped),
            queue_depth: get(&c.queued) + get(&c.in_flight),
            spool_records: get(&c.spool_records),
            spool_bytes: get(&c.spool_bytes),
        }
    }
}

/// Records handed to one export.
enum Batch {
    Shared {
        records: Arc<Vec<Record>>,
        range: Range<usize>,
    },
    Owned(Vec<Record>),
}

impl Batch {
    fn as_slice(&self) -> &[Record] {
        match self {
            Batch::Shared { records, range } => &records[range.clone()],
            Batch::Owned(records) => records,
        }
    }

    fn into_chunk(self) -> Chunk {
        match self {
            Batch::Shared { records, range } if range.end == records.len() => Chunk {
                records,
                start: range.start,
            },
            Batch::Shared { records, range } => Chunk {
                records: Arc::new(records[range].to_vec()),
                start: 0,
            },
            Batch::Owned(records) => Chunk {
                records: Arc::new(records),
                start: 0,
            },
        }
    }
}

/// How an attempt to deliver a batch ended.
enum Delivery {
    /// Exported, or refused for good (and counted as dropped).
    Done,
    /// The shutdown deadline passed first; the batch is still held.
    DeadlinePassed,
}

/// One exporter's task.
struct Worker {
    lane: Arc<Lane>,
    exporter: Arc<dyn Exporter>,
    spool: Option<Arc<Mutex<Spool>>>,
    flush_interval: Duration,
    retry: Backoff,
}

impl Worker {
    async fn run(self) -> TaskEnd {
        let bound = self.lane.bound;
        let mut next_flush = Instant::now() + self.flush_interval;
        let mut deadline_passed = false;
        loop {
            self.log_drops();
            if self.lane.deadline().is_some_and(|d| Instant::now() >= d) {
                deadline_passed = !self.holds_nothing();
                break;
            }
            // The spool is older than the queue: replay it first.
            if let Some(loaded) = self.load_oldest().await {
                let batch = Batch::Owned(loaded.records);
                let outcome = self.deliver(&batch).await;
                let seq = loaded.seq;
                match outcome {
                    Delivery::Done => {
                        crate::offload::drop_later(batch);
                        self.with_spool(move |spool| spool.remove(seq)).await;
                    }
                    Delivery::DeadlinePassed => {
                        self.with_spool(|spool| {
                            spool.release();
                            Ok(())
                        })
                        .await;
                        deadline_passed = true;
                        break;
                    }
                }
                continue;
            }
            let closing = self.lane.deadline().is_some();
            let queued = self.lane.queued();
            let now = Instant::now();
            if queued == 0 && now >= next_flush {
                // Idle through a whole interval: the next records start a fresh one.
                next_flush = now + self.flush_interval;
            }
            let due = !self.lane.bulk || closing || queued >= bound || now >= next_flush;
            if queued > 0 && due {
                let batch = self.lane.take(bound);
                let n = batch.as_slice().len() as u64;
                self.lane.counters.in_flight.store(n, Ordering::Relaxed);
                let outcome = self.deliver(&batch).await;
                self.lane.counters.in_flight.store(0, Ordering::Relaxed);
                if now >= next_flush {
                    next_flush = Instant::now() + self.flush_interval;
                }
                if let Delivery::DeadlinePassed = outcome {
                    // Older than anything spooled since it was taken: it goes in front.
                    self.spool_or_drop(vec![batch.into_chunk()], End::Front)
                        .await;
                    deadline_passed = true;
                    break;
                }
                crate::offload::drop_later(batch);
                continue;
            }
            if closing {
                break;
            }
            let flush_at = (self.lane.bulk && queued > 0).then_some(next_flush);
            let notified = self.lane.wake.notified();
            tokio::select! {
                () = notified => {}
                () = until(flush_at) => {}
            }
        }
        // Whatever is still queued (only when the deadline passed) goes after the spool.
        let rest = self.lane.take_all();
        if !rest.is_empty() {
            self.spool_or_drop(rest, End::Back).await;
        }
        self.log_drops();
        let close_by = self
            .lane
            .deadline()
            .unwrap_or_else(Instant::now)
            .max(Instant::now() + Duration::from_secs(1));
        match tokio::time::timeout_at(close_by, self.exporter.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(exporter = %self.lane.name, %error, "closing the exporter failed");
            }
            Err(_) => tracing::warn!(exporter = %self.lane.name, "closing the exporter timed out"),
        }
        TaskEnd { deadline_passed }
    }

    fn holds_nothing(&self) -> bool {
        let c = &self.lane.counters;
        self.lane.queued() == 0 && c.spool_records.load(Ordering::Relaxed) == 0
    }

    /// Exports `batch`, retrying with backoff while the failure is retryable and the deadline
    /// has not passed.
    async fn deliver(&self, batch: &Batch) -> Delivery {
        let records = batch.as_slice();
        let n = records.len() as u64;
        let mut failures = 0u32;
        loop {
            let exporter = Arc::clone(&self.exporter);
            let Some(result) = self.guard(exporter.export(records)).await else {
                return Delivery::DeadlinePassed;
            };
            match result {
                Ok(()) => {
                    Counters::add(&self.lane.counters.exported, n);
                    return Delivery::Done;
                }
                Err(error) if error.is_retryable() => {
                    failures += 1;
                    let wait = self.retry.delay(failures);
                    tracing::warn!(
                        exporter = %self.lane.name,
                        records = n,
                        failures,
                        retry_in_ms = wait.as_millis() as u64,
                        %error,
                        "export failed; keeping the batch and retrying"
                    );
                    if self.guard(tokio::time::sleep(wait)).await.is_none() {
                        return Delivery::DeadlinePassed;
                    }
                    Counters::add(&self.lane.counters.retried, n);
                }
                Err(error) => {
                    Counters::add(&self.lane.counters.dropped, n);
                    tracing::warn!(
                        exporter = %self.lane.name,
                        records = n,
                        %error,
                        "export failed for good; the batch is dropped"
                    );
                    return Delivery::Done;
                }
            }
        }
    }

    /// Runs `fut` (an export, a backoff) while keeping the queue within its bound, until the
    /// shutdown deadline. `None`: the deadline passed first.
    async fn guard<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        loop {
            let deadline = self.lane.deadline();
            let notified = self.lane.wake.notified();
            tokio::select! {
                biased;
                out = &mut fut => return Some(out),
                () = until(deadline) => return None,
                () = notified => self.relieve().await,
            }
        }
    }

    /// Moves the queue to the spool once it is past the memory bound.
    async fn relieve(&self) {
        self.log_drops();
        if self.spool.is_some() && self.lane.queued() > self.lane.bound {
            let chunks = self.lane.take_all();
            self.spool_or_drop(chunks, End::Back).await;
        }
    }

    /// The oldest spooled segment that still holds readable records, counted as replayed.
    async fn load_oldest(&self) -> Option<spool::Loaded> {
        let spool = Arc::clone(self.spool.as_ref()?);
        loop {
            let from = Arc::clone(&spool);
            let loaded = tokio::task::spawn_blocking(move || lock(&from).load_oldest()).await;
            let loaded = match loaded {
                Ok(Ok(loaded)) => loaded?,
                Ok(Err(error)) => {
                    tracing::error!(exporter = %self.lane.name, %error, "cannot read the spool");
                    return None;
                }
                Err(error) => {
                    tracing::error!(exporter = %self.lane.name, %error, "reading the spool failed");
                    return None;
                }
            };
            let c = &self.lane.counters;
            Counters::add(&c.replayed, loaded.records.len() as u64);
            if loaded.lost > 0 {
                Counters::add(&c.dropped, loaded.lost);
                tracing::warn!(
                    exporter = %self.lane.name,
                    dropped = loaded.lost,
                    "records lost from a damaged spool segment"
                );
            }
            if !loaded.records.is_empty() {
                return Some(loaded);
            }
            // Nothing to export (all of it was damaged): the segment goes now.
            let seq = loaded.seq;
            self.with_spool(move |spool| spool.remove(seq)).await;
        }
    }

    /// Writes `chunks` to the spool at `end`, or, without a spool or when writing fails, counts
    /// them as dropped.
    async fn spool_or_drop(&self, chunks: Vec<Chunk>, end: End) {
        let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if n == 0 {
            return;
        }
        let c = &self.lane.counters;
        let Some(spool) = &self.spool else {
            Counters::add(&c.dropped, n);
            tracing::warn!(
                exporter = %self.lane.name,
                dropped = n,
                "no spool configured: records the exporter could not take were dropped"
            );
            return;
        };
        let spool = Arc::clone(spool);
        let written = tokio::task::spawn_blocking(move || {
            let encoded = spool::encode(chunks.iter().map(Chunk::slice));
            let mut spool = lock(&spool);
            let written = spool.write(encoded, end);
            Ok::<_, std::io::Error>((written?, spool.records(), spool.bytes()))
        })
        .await;
        match written {
            Ok(Ok((written, records, bytes))) => {
                Counters::add(&c.spooled, written.spooled);
                c.spool_records.store(records, Ordering::Relaxed);
                c.spool_bytes.store(bytes, Ordering::Relaxed);
                if written.dropped > 0 {
                    Counters::add(&c.dropped, written.dropped);
                    tracing::warn!(
                        exporter = %self.lane.name,
                        dropped = written.dropped,
                        "spool full: dropped the oldest records"
                    );
                }
            }
            Ok(Err(error)) => {
                Counters::add(&c.dropped, n);
                tracing::error!(
                    exporter = %self.lane.name,
                    dropped = n,
                    %error,
                    "cannot write to the spool; records dropped"
                );
            }
            Err(error) => {
                Counters::add(&c.dropped, n);
                tracing::error!(
                    exporter = %self.lane.name,
                    dropped = n,
                    %error,
                    "spooling failed; records dropped"
                );
            }
        }
    }

    /// Runs `f` on the spool off the runtime's threads, and refreshes the spool's counters.
    async fn with_spool(&self, f: impl FnOnce(&mut Spool) -> std::io::Result<()> + Send + 'static) {
        let Some(spool) = &self.spool else {
            return;
        };
        let spool = Arc::clone(spool);
        let done = tokio::task::spawn_blocking(move || {
            let mut spool = lock(&spool);
            let result = f(&mut spool);
            (result, spool.records(), spool.bytes())
        })
        .await;
        match done {
            Ok((result, records, bytes)) => {
                let c = &self.lane.counters;
                c.spool_records.store(records, Ordering::Relaxed);
                c.spool_bytes.store(bytes, Ordering::Relaxed);
                if let Err(error) = result {
                    tracing::error!(exporter = %self.lane.name, %error, "spool update failed");
                }
            }
            Err(error) => {
                tracing::error!(exporter = %self.lane.name, %error, "spool update failed");
            }
        }
    }

    fn log_drops(&self) {
        let dropped = self.lane.counters.unlogged_drops.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                exporter = %self.lane.name,
                dropped,
                "memory bound reached: dropped the oldest queued records"
            );
        }
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
