//! What a client's evaluations, data sources and listeners share: the data, the status, and
//! the signals that start and stop the client. The public face is [`crate::Client`].

use flags_core::{Context, ErrorKind, EvalDetail, FlagData};
use flags_data::Snapshot;
use flags_eval::Evaluator;
use serde_json::Value;
use tokio::sync::watch;

use crate::big_segments::{BigSegmentStoreStatusProvider, BigSegments};
use crate::data::{Changed, Data};
use crate::detail::{Detail, FromValue, typed};
use crate::events::{CloseReport, EventProcessor};
use crate::status::{DataSourceState, DataSourceStatusProvider, ErrorInfo};
use crate::tracker::Tracker;

/// The state behind every clone of a client, and what its data sources write to.
pub(crate) struct Inner {
    /// Analytics events, when the client sends them.
    pub(crate) events: Option<EventProcessor>,
    pub(crate) data: Data,
    pub(crate) tracker: Tracker,
    pub(crate) status: DataSourceStatusProvider,
    pub(crate) big_segments: Option<BigSegments>,
    pub(crate) big_segment_status: BigSegmentStoreStatusProvider,
    pub(crate) initialized: watch::Sender<bool>,
    /// Set once waiting for the first data is over: it came, or the source stopped for good.
    pub(crate) settled: watch::Sender<bool>,
    pub(crate) closed: watch::Sender<bool>,
    pub(crate) thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Inner {
    pub(crate) fn close(&self) -> CloseReport {
        self.stop();
        self.events
            .as_ref()
            .map(EventProcessor::close_in_time)
            .unwrap_or_default()
    }

    /// [`Inner::close`] without waiting for the last events: for the drop of the last client
    /// handle, which must not block (its events are still sent, within `close_timeout`, from
    /// the processor's own thread).
    pub(crate) fn close_in_background(&self) {
        self.stop();
        if let Some(events) = &self.events {
            events.close_in_background();
        }
    }

    fn stop(&self) {
        if self.closed.send_replace(true) {
            return;
        }
        self.settled.send_replace(true);
        self.status.shut(None);
        self.tracker.close();
        if let Some(big) = &self.big_segments {
            big.close();
        }
        let thread = self.lock_thread().take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            // The thread only waits for `closed`; a panic there has nothing left to report.
            let _ = thread.join();
        }
    }

    /// An evaluator over `snapshot` with the big-segment store, if any.
    #[inline]
    pub(crate) fn evaluator<'a>(&'a self, snapshot: &'a Snapshot) -> Evaluator<'a> {
        let evaluator = Evaluator::new(snapshot.compiled());
        match &self.big_segments {
            Some(store) => evaluator.with_big_segments(store),
            None => evaluator,
        }
    }

    #[inline]
    pub(crate) fn variation<T: FromValue>(&self, context: &Context, key: &str, default: T) -> T {
        let guard = self.data.load();
        let Some(snapshot) = guard.as_ref() else {
            if let Some(events) = &self.events {
                events.push_default_evaluation_event(key, context, default.to_value());
            }
            return default;
        };
        let evaluator = self.evaluator(snapshot);
        let detail = match &self.events {
            None => evaluator.evaluate(key, context),
            Some(events) => recorded(events, &evaluator, context, key, &default, false),
        };
        match detail.value {
            Some(value) => T::from_value(value).unwrap_or(default),
            None => default,
        }
    }

    pub(crate) fn detail<T: FromValue>(
        &self,
        context: &Context,
        key: &str,
        default: T,
    ) -> Detail<T> {
        let guard = self.data.load();
        let Some(snapshot) = guard.as_ref() else {
            if let Some(events) = &self.events {
                let detail = EvalDetail::error(ErrorKind::ClientNotReady);
                let value = default.to_value();
                events.record(
                    context,
                    key,
                    None,
                    &detail,
                    value.clone(),
                    value,
                    true,
                    None,
                );
            }
            return Detail::error(default, ErrorKind::ClientNotReady);
        };
        let evaluator = self.evaluator(snapshot);
        let detail = match &self.events {
            None => evaluator.evaluate(key, context),
            Some(events) => recorded(events, &evaluator, context, key, &default, true),
        };
        typed(detail, default)
    }

    /// The value of `key` for `context` in `snapshot`, or `default`.
    pub(crate) fn value_in(
        &self,
        snapshot: &Snapshot,
        key: &str,
        context: &Context,
        default: &Value,
    ) -> Value {
        let detail: EvalDetail<'_> = self.evaluator(snapshot).evaluate(key, context);
        detail.value.unwrap_or(default).clone()
    }

    /// Replaces all data: the data source is `Valid` and the client initialised from here on.
    /// The status comes first, so whoever wakes on initialisation finds it `Valid` already.
    pub(crate) fn put(&self, data: FlagData) -> Result<(), flags_data::DataError> {
        let changed = self.data.replace(data)?;
        self.report(DataSourceState::Valid, None);
        self.initialized.send_replace(true);
        self.settled.send_replace(true);
        if let Some(changed) = changed {
            self.changed(&changed);
        }
        Ok(())
    }

    /// Replaces all data without reporting on the source (a fallback poll while the stream is
    /// down, which stays `Interrupted`); the client counts as initialised from here on.
    pub(crate) fn refresh(&self, data: FlagData) -> Result<(), flags_data::DataError> {
        let changed = self.data.replace(data)?;
        self.initialized.send_replace(true);
        self.settled.send_replace(true);
        if let Some(changed) = changed {
            self.changed(&changed);
        }
        Ok(())
    }

    /// Applies patches and deletes.
    pub(crate) fn apply(
        &self,
        updates: Vec<flags_data::Update>,
    ) -> Result<(), flags_data::DataError> {
        if let Some(changed) = self.data.apply(updates)? {
            self.changed(&changed);
        }
        Ok(())
    }

    fn changed(&self, changed: &Changed) {
        self.tracker
            .notify(changed, |snapshot, key, context, default| {
                self.value_in(snapshot, key, context, default)
            });
    }

    pub(crate) fn report(&self, state: DataSourceState, error: Option<ErrorInfo>) {
        self.status.update(state, error);
    }

    /// Turns the data source off for good (a rejected key).
    pub(crate) fn give_up(&self, error: ErrorInfo) {
        self.status.shut(Some(error));
        self.settled.send_replace(true);
    }

    pub(crate) fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    pub(crate) fn lock_thread(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<std::thread::JoinHandle<()>>> {
        self.thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Evaluates `key` for `context` and records the evaluation, and every prerequisite evaluated on
/// the way, as LaunchDarkly's SDKs do. A value that is not a `T` is recorded, and returned, as
/// `WRONG_TYPE` serving the default.
#[inline]
fn recorded<'s, T: FromValue>(
    events: &EventProcessor,
    evaluator: &Evaluator<'s>,
    context: &Context,
    key: &str,
    default: &T,
    with_reasons: bool,
) -> EvalDetail<'s> {
    let Some(flag) = evaluator.data().flag(key) else {
        let detail = EvalDetail::error(ErrorKind::FlagNotFound);
        let value = default.to_value();
        events.record(
            context,
            key,
            None,
            &detail,
            value.clone(),
            value,
            with_reasons,
            None,
        );
        return detail;
    };
    let detail = evaluator.evaluate_flag_observed(flag, context, &mut |p| {
        let value = p.detail.value.cloned().unwrap_or(Value::Null);
        let parent = Some(p.prerequisite_of.key());
        events.record(
            context,
            p.flag.key(),
            Some(p.flag),
            &p.detail,
            value,
            Value::Null,
            with_reasons,
            parent,
        );
    });
    let detail = match detail.value {
        Some(value) if !T::fits(value) => EvalDetail::error(ErrorKind::WrongType),
        _ => detail,
    };
    let default = default.to_value();
    let value = detail.value.cloned().unwrap_or_else(|| default.clone());
    events.record(
        context,
        key,
        Some(flag),
        &detail,
        value,
        default,
        with_reasons,
        None,
    );
    detail
}
