//! Analytics events: what the client evaluated, tracked and identified, and how its own calls to
//! flagd went, delivered to flagd's `/bulk` in LaunchDarkly's event format.
//!
//! Pushing an event puts it in a bounded buffer of the calling thread's own and returns: it never
//! blocks and never waits on a lock held during I/O (the buffer's lock is shared only with the
//! worker's swap), and when the buffer is full the event is dropped and counted. A worker on a
//! thread of its own swaps the buffers out, counts every evaluation into the period's
//! summary, writes the events that go out in full (tracked flags, rules and experiments, debug
//! windows, goals, identifies, metrics) with private attributes redacted, indexes each context
//! the first time it is seen, and at each flush hands a payload to one of `num_flush_workers`
//! deliveries.

mod outbox;
mod recent;
mod redact;
mod send;
mod staging;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flags_core::{Context, EvalDetail, Reason};
use flags_eval::CompiledFlag;
use flags_events::{Metric, MetricsEvent};
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};

use crate::config::{BuildError, EventsConfig, trim_url};
use outbox::{Input, Outbox, Taken};
use redact::Redactor;
use send::{Delivery, Sender};
use staging::{Pushed, Staging};

/// Counts of the events pushed to a processor.
///
/// Every push is `created` once, and ends up `sent` (its payload was accepted), `dropped` (no
/// room in the queue or the payload, its payload failed twice or was refused, or the processor
/// had stopped) or still held. Index and summary events are derived from pushed ones and are
/// not counted apart: an evaluation counts as sent when the summary that counted it is. While
/// the processor runs the counts are a moment's view; once it is closed they are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventStats {
    /// Events pushed.
    pub created: u64,
    /// Events delivered.
    pub sent: u64,
    /// Events lost.
    pub dropped: u64,
    /// Events whose payload was sent a second time.
    pub retried: u64,
}

/// What [`EventProcessor::close`] could not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloseReport {
    /// Events pushed and neither delivered nor already counted as dropped when the deadline
    /// came: `created - sent - dropped`.
    pub undelivered: u64,
}

/// One evaluation to record, as [`EventProcessor::push_evaluation_event`] takes it.
#[derive(Debug, Clone)]
pub struct EvaluationEvent {
    /// When, in Unix milliseconds (made by [`EvaluationEvent::new`] from the kernel's coarse
    /// clock on Linux, which is within a few milliseconds).
    pub creation_date: u64,
    /// Who it was evaluated for.
    pub context: Arc<Context>,
    /// The flag key.
    pub flag_key: Arc<str>,
    /// The flag's version; `None` when the flag was not found.
    pub version: Option<u64>,
    /// The variation served; `None` when the default was.
    pub variation: Option<usize>,
    /// The value served.
    pub value: Value,
    /// The default the application passed.
    pub default: Value,
    /// The reason, sent with a full event (the application asked for details, or the
    /// evaluation is an experiment's).
    pub reason: Option<Reason<'static>>,
    /// Sent as a full `feature` event, not only counted in the summary.
    pub track_events: bool,
    /// Also sent as a `debug` event until then (Unix milliseconds).
    pub debug_events_until_date: Option<u64>,
    /// Not counted in the summary.
    pub exclude_from_summaries: bool,
    /// The flag this one was evaluated as a prerequisite of.
    pub prereq_of: Option<Arc<str>>,
}

impl EvaluationEvent {
    /// An evaluation of `flag_key` that served `value` (no variation, version or tracking yet:
    /// set the fields that apply), created now.
    pub fn new(
        context: Arc<Context>,
        flag_key: &str,
        value: Value,
        default: Value,
    ) -> EvaluationEvent {
        EvaluationEvent {
            creation_date: now_millis(),
            context,
            flag_key: recent::key(flag_key),
            version: None,
            variation: None,
            value,
            default,
            reason: None,
            track_events: false,
            debug_events_until_date: None,
            exclude_from_summaries: false,
            prereq_of: None,
        }
    }
}

/// Delivers analytics events to flagd's `/bulk`. Cheap to clone; every clone is the same
/// processor.
#[derive(Clone)]
pub struct EventProcessor {
    shared: Arc<Shared>,
    /// Closes the processor when the last clone goes; the worker holds `shared` only.
    _last: Arc<CloseOnDrop>,
}

struct CloseOnDrop(EventProcessorRef);

/// The processor without the guard, so the guard can close it.
struct EventProcessorRef(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        close_in_background(&self.0.0);
    }
}

impl std::fmt::Debug for EventProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProcessor")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The most events a thread's buffer gathers before its push wakes the worker (unless half
/// the queue is less). A batch this size, about 200 KB, is still in the pushing core's cache
/// when the worker hands the emptied buffer back; ten times more spilled out of it, and every
/// push then wrote to memory the core had to fetch first.
const WAKE_BATCH: usize = 1024;

/// What pushers, the worker and deliveries share.
struct Shared {
    queue: Staging,
    /// The queue length at which a push wakes the worker early.
    wake_at: usize,
    /// A push already woke the worker since its last pass.
    woken: AtomicBool,
    wake: Notify,
    flush_requested: AtomicBool,
    closed: AtomicBool,
    /// flagd refused the key: nothing more is sent.
    refused: AtomicBool,
    /// Dropped before reaching the queue (full, closed or refused).
    dropped_at_push: AtomicU64,
    /// Taken off the queue by the worker.
    taken: AtomicU64,
    sent: AtomicU64,
    /// Dropped after the queue: no room in the outbox, or a payload given up.
    dropped: AtomicU64,
    retried: AtomicU64,
    /// Set by the worker once its last flush is over.
    done: Mutex<bool>,
    done_signal: std::sync::Condvar,
    /// Stops the worker's runtime, with whatever deliveries are still under way.
    stop: Notify,
    /// How long closing waits for the last deliveries by default.
    close_timeout: Duration,
    /// How long the closing worker waits for its last deliveries, in milliseconds: set by
    /// whoever closes, before the worker is told.
    close_within_ms: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl EventProcessor {
    /// Starts a processor that posts to `{events_url}/bulk` with `sdk_key`, on a thread of its
    /// own.
    pub fn start(
        sdk_key: &str,
        events_url: &str,
        config: EventsConfig,
    ) -> Result<EventProcessor, BuildError> {
        EventProcessor::start_with(sdk_key, events_url, config, Duration::from_secs(10))
    }

    pub(crate) fn start_with(
        sdk_key: &str,
        events_url: &str,
        config: EventsConfig,
        connect_timeout: Duration,
    ) -> Result<EventProcessor, BuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .user_agent(concat!("flags-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        let sender = Sender {
            http,
            url: format!("{}/bulk", trim_url(events_url)),
            sdk_key: sdk_key.to_owned(),
        };
        let capacity = config.queue_capacity.max(1);
        let shared = Arc::new(Shared {
            queue: Staging::new(capacity),
            wake_at: (capacity / 2).clamp(1, WAKE_BATCH),
            woken: AtomicBool::new(false),
            wake: Notify::new(),
            flush_requested: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            dropped_at_push: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            done: Mutex::new(false),
            done_signal: std::sync::Condvar::new(),
            stop: Notify::new(),
            close_timeout: config.close_timeout,
            close_within_ms: AtomicU64::new(millis(config.close_timeout)),
            thread: Mutex::new(None),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BuildError::Thread)?;
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("flags-sdk-events".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    tokio::select! {
                        () = run(Arc::clone(&worker), config, sender) => {}
                        () = worker.stop.notified() => {}
                    }
                });
            })
            .map_err(BuildError::Thread)?;
        *lock(&shared.thread) = Some(thread);
        Ok(EventProcessor {
            _last: Arc::new(CloseOnDrop(EventProcessorRef(Arc::clone(&shared)))),
            shared,
        })
    }

    /// Records one evaluation. Never blocks; a full queue drops it.
    #[inline]
    pub fn push_evaluation_event(&self, event: EvaluationEvent) {
        self.push(Input::Evaluation(event));
    }

    /// Records an evaluation that served the application's default without a flag to evaluate
    /// (not found, or no data yet).
    pub fn push_default_evaluation_event(&self, flag_key: &str, context: &Context, default: Value) {
        let event =
            EvaluationEvent::new(recent::context(context), flag_key, default.clone(), default);
        self.push_evaluation_event(event);
    }

    /// Records a goal: a `custom` event with the application's data and metric value.
    pub fn push_goal_event(
        &self,
        key: &str,
        context: &Context,
        data: Option<Value>,
        metric_value: Option<f64>,
    ) {
        self.push(Input::Custom {
            creation_date: now_millis(),
            context: recent::context(context),
            key: key.to_owned(),
            data,
            metric_value,
        });
    }

    /// Records that the application announced `context` (an `identify` event).
    pub fn push_identify_event(&self, context: &Context) {
        self.push(Input::Identify {
            creation_date: now_millis(),
            context: recent::context(context),
        });
    }

    /// Records how long a call of the SDK to flagd (`api`: `poll`, `stream`, ...) took.
    pub fn push_latency_metrics(&self, api: &str, latency: Duration) {
        self.push_metric(Metric::Latency, api, latency.as_secs_f64() * 1000.0);
    }

    /// Records how large an answer of flagd to the SDK was, in bytes.
    pub fn push_size_metrics(&self, api: &str, bytes: usize) {
        // Sizes stay far below 2^52 bytes, so the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        self.push_metric(Metric::Size, api, bytes as f64);
    }

    /// Records that a call of the SDK to flagd timed out.
    pub fn push_timeout_error_metrics(&self, api: &str) {
        self.push_metric(Metric::TimeoutError, api, 1.0);
    }

    /// Records that a call of the SDK to flagd failed for another reason.
    pub fn push_internal_error_metrics(&self, api: &str) {
        self.push_metric(Metric::InternalError, api, 1.0);
    }

    fn push_metric(&self, metric: Metric, api: &str, value: f64) {
        self.push(Input::Metrics(MetricsEvent {
            creation_date: now_millis(),
            metric,
            api: api.to_owned(),
            value,
            labels: Default::default(),
        }));
    }

    /// Asks for a flush now; returns at once.
    pub fn flush(&self) {
        self.shared.flush_requested.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// The counts so far.
    pub fn stats(&self) -> EventStats {
        stats(&self.shared)
    }

    /// Stops taking events, flushes what is held and waits up to `deadline` for the last
    /// deliveries; then stops the rest. Says how many events were not delivered. Blocks the
    /// calling thread (the processor runs on its own, so this may be called from async code).
    /// Later calls only report again.
    pub fn close(&self, deadline: Duration) -> CloseReport {
        close(&self.shared, deadline)
    }

    #[inline]
    fn push(&self, input: Input) {
        let s = &*self.shared;
        if s.closed.load(Ordering::Relaxed) || s.refused.load(Ordering::Relaxed) {
            s.dropped_at_push.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match s.queue.push(input) {
            Pushed::Full => {
                s.dropped_at_push.fetch_add(1, Ordering::Relaxed);
                s.wake_worker();
            }
            Pushed::Queued(len) if len >= s.wake_at => s.wake_worker(),
            Pushed::Queued(_) => {}
        }
    }

    /// [`EventProcessor::close`] with the configured `close_timeout`.
    pub(crate) fn close_in_time(&self) -> CloseReport {
        close(&self.shared, self.shared.close_timeout)
    }

    /// Closes without waiting: the worker sends what it holds within `close_timeout` on its own
    /// thread, then ends. For drops, which must not block.
    pub(crate) fn close_in_background(&self) {
        close_in_background(&self.shared);
    }

    /// Records an evaluation the client made. `flag` is `None` when there was none to evaluate.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        context: &Context,
        key: &str,
        flag: Option<&CompiledFlag>,
        detail: &EvalDetail<'_>,
        value: Value,
        default: Value,
        with_reasons: bool,
        prereq_of: Option<&str>,
    ) {
        let mut event = EvaluationEvent::new(recent::context(context), key, value, default);
        event.variation = detail.variation_index;
        event.prereq_of = prereq_of.map(recent::key);
        if let Some(flag) = flag {
            event.version = Some(flag.version());
            event.track_events = flag.requires_full_event(&detail.reason);
            event.debug_events_until_date = flag.debug_events_until_date();
            event.exclude_from_summaries = flag.exclude_from_summaries();
            if with_reasons || flag.is_experiment(&detail.reason) {
                event.reason = Some(detail.reason.clone().into_owned());
            }
        } else if with_reasons {
            event.reason = Some(detail.reason.clone().into_owned());
        }
        self.push_evaluation_event(event);
    }
}

fn stats(s: &Shared) -> EventStats {
    let queued = s.queue.len() as u64;
    let dropped_at_push = s.dropped_at_push.load(Ordering::Relaxed);
    EventStats {
        created: s.taken.load(Ordering::Acquire) + queued + dropped_at_push,
        sent: s.sent.load(Ordering::Acquire),
        dropped: s.dropped.load(Ordering::Acquire) + dropped_at_push,
        retried: s.retried.load(Ordering::Relaxed),
    }
}

/// See [`EventProcessor::close_in_background`].
fn close_in_background(s: &Shared) {
    if !s.closed.swap(true, Ordering::SeqCst) {
        s.wake.notify_one();
    }
    // Detached: the worker ends by itself once its last deliveries are over or timed out.
    drop(lock(&s.thread).take());
}

/// See [`EventProcessor::close`].
fn close(s: &Shared, deadline: Duration) -> CloseReport {
    if !s.closed.load(Ordering::SeqCst) {
        s.close_within_ms.store(millis(deadline), Ordering::SeqCst);
    }
    s.closed.store(true, Ordering::SeqCst);
    s.wake.notify_one();
    let thread = lock(&s.thread).take();
    if let Some(thread) = thread {
        let done = lock(&s.done);
        let _ = s
            .done_signal
            .wait_timeout_while(done, deadline, |done| !*done)
            .map(drop);
        // `notify_one` keeps the permit if the worker's runtime is not waiting yet.
        s.stop.notify_one();
        if thread.thread().id() != std::thread::current().id() {
            // The thread only runs the worker; a panic there has nothing left to report.
            let _ = thread.join();
        }
    }
    let stats = stats(s);
    CloseReport {
        undelivered: stats.created.saturating_sub(stats.sent + stats.dropped),
    }
}

impl Shared {
    fn wake_worker(&self) {
        // Read first: past the threshold every push asks, and only the first needs to write.
        if !self.woken.load(Ordering::Relaxed) && !self.woken.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }
}

/// The worker: wakes on a flush tick, a flush request, a filling queue or closing; takes what is
/// queued; flushes when due.
async fn run(shared: Arc<Shared>, config: EventsConfig, sender: Sender) {
    let redactor = Redactor::new(config.all_attributes_private, &config.private_attributes);
    let mut outbox = Outbox::new(
        config.queue_capacity,
        config.context_keys_capacity,
        redactor,
    );
    let workers = config.num_flush_workers.max(1);
    let permits = Arc::new(Semaphore::new(workers));
    let sender = Arc::new(sender);
    let start = tokio::time::Instant::now();
    let mut flush_tick = tokio::time::interval_at(
        start + config.flush_interval,
        config.flush_interval.max(Duration::from_millis(1)),
    );
    let mut keys_tick = tokio::time::interval_at(
        start + config.context_keys_flush_interval,
        config
            .context_keys_flush_interval
            .max(Duration::from_millis(1)),
    );
    let mut warned_full = false;
    let mut taken = Vec::new();
    loop {
        let mut due = false;
        tokio::select! {
            () = shared.wake.notified() => {}
            _ = flush_tick.tick() => due = true,
            _ = keys_tick.tick() => outbox.forget_contexts(),
        }
        shared.woken.store(false, Ordering::Release);
        let now = now_millis();
        taken.clear();
        shared.queue.drain_into(&mut taken);
        for input in taken.drain(..) {
            if outbox.take(input, now) == Taken::Dropped {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                if !warned_full {
                    warned_full = true;
                    tracing::warn!(
                        "more events than queue_capacity ({}) wait to be sent; some are dropped",
                        config.queue_capacity
                    );
                }
            }
            shared.taken.fetch_add(1, Ordering::Release);
        }
        let closing = shared.closed.load(Ordering::SeqCst);
        due |= shared.flush_requested.swap(false, Ordering::Relaxed)
            || outbox.len() >= config.flush_size
            || closing;
        let within = Duration::from_millis(shared.close_within_ms.load(Ordering::SeqCst));
        let until = tokio::time::Instant::now() + within;
        if due {
            let permit = if closing {
                tokio::time::timeout_at(until, Arc::clone(&permits).acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                Arc::clone(&permits).try_acquire_owned().ok()
            };
            // No worker free: the events wait in the outbox for the next flush.
            if let Some(permit) = permit
                && let Some(payload) = outbox.flush()
            {
                let shared = Arc::clone(&shared);
                let sender = Arc::clone(&sender);
                tokio::spawn(async move {
                    deliver(&shared, &sender, payload).await;
                    drop(permit);
                });
            }
        }
        if closing {
            // Every permit back: every delivery is over (or the time to wait for them is).
            let all = u32::try_from(workers).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout_at(until, permits.acquire_many(all)).await;
            *lock(&shared.done) = true;
            shared.done_signal.notify_all();
            // The runtime ends with this, and deliveries still under way with it.
            return;
        }
    }
}

async fn deliver(shared: &Shared, sender: &Sender, payload: outbox::Payload) {
    let carried = payload.carried;
    if shared.refused.load(Ordering::Relaxed) {
        shared.dropped.fetch_add(carried, Ordering::Release);
        return;
    }
    let delivery = sender
        .deliver(&payload, || {
            shared.retried.fetch_add(carried, Ordering::Relaxed);
        })
        .await;
    match delivery {
        Delivery::Sent => shared.sent.fetch_add(carried, Ordering::Release),
        Delivery::Failed => shared.dropped.fetch_add(carried, Ordering::Release),
        Delivery::Refused => {
            if !shared.refused.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    url = sender.url,
                    "flagd refused the SDK key; no more events will be sent"
                );
            }
            shared.dropped.fetch_add(carried, Ordering::Release)
        }
    };
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Unix milliseconds now, as events record them.
///
/// On Linux from the kernel's coarse real-time clock, which it advances once a tick (every 1
/// to 4 ms): reading it is a load from the vDSO page, a few nanoseconds, where the precise
/// clock takes tens; and this runs on every evaluation with events on. Analytics keep
/// milliseconds, and a few of them of error changes no count.
#[cfg(target_os = "linux")]
fn now_millis() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let millis = u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000;
    seconds.saturating_mul(1000).saturating_add(millis)
}

/// Unix milliseconds now, as events record them.
#[cfg(not(target_os = "linux"))]
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
