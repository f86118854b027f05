//! The data source's status, in the spirit of LaunchDarkly's `DataSourceStatusProvider`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::listen::{Listener, ListenerId, Listeners};

/// What the data source is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSourceState {
    /// Not yet connected and no data received.
    Initializing,
    /// Connected, and the data is current.
    Valid,
    /// Was working, or tried to, and is not now; the last data keeps serving.
    Interrupted,
    /// Stopped for good: closed, offline, or refused for a reason retrying cannot fix (a
    /// rejected SDK key).
    Off,
}

impl DataSourceState {
    /// The state's name, as it is printed: `Initializing`, `Valid`, `Interrupted`, `Off`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DataSourceState::Initializing => "Initializing",
            DataSourceState::Valid => "Valid",
            DataSourceState::Interrupted => "Interrupted",
            DataSourceState::Off => "Off",
        }
    }
}

/// What kind of failure interrupted the data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSourceErrorKind {
    /// The connection failed or was cut (refused, reset, timed out, went silent).
    NetworkError,
    /// The server answered with an HTTP error status.
    ErrorResponse,
    /// The server sent data that could not be read.
    InvalidData,
    /// A flag file could not be read or has errors.
    FileError,
}

/// The last failure of the data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// What kind of failure.
    pub kind: DataSourceErrorKind,
    /// The HTTP status, for [`DataSourceErrorKind::ErrorResponse`].
    pub status_code: Option<u16>,
    /// What happened, for people.
    pub message: String,
    /// When it happened.
    pub time: SystemTime,
}

/// The data source's state, since when, and its last failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSourceStatus {
    /// The current state.
    pub state: DataSourceState,
    /// When the state last changed. An `Interrupted` source that fails again keeps its `since`.
    pub since: SystemTime,
    /// The most recent failure, if there was one, kept after recovery.
    pub last_error: Option<ErrorInfo>,
}

/// Reads and watches the data source's status. Cheap to clone.
#[derive(Clone)]
pub struct DataSourceStatusProvider {
    inner: Arc<StatusInner>,
}

pub(crate) struct StatusInner {
    status: Mutex<DataSourceStatus>,
    /// When the source last heard from flagd: a stream's answer or event, a poll's answer.
    contact: Mutex<Option<SystemTime>>,
    /// Failures reported since flagd last answered.
    failures: AtomicU32,
    listeners: Listeners<DataSourceStatus>,
}

impl DataSourceStatusProvider {
    pub(crate) fn new(listener_capacity: usize) -> DataSourceStatusProvider {
        DataSourceStatusProvider {
            inner: Arc::new(StatusInner {
                status: Mutex::new(DataSourceStatus {
                    state: DataSourceState::Initializing,
                    since: SystemTime::now(),
                    last_error: None,
                }),
                contact: Mutex::new(None),
                failures: AtomicU32::new(0),
                listeners: Listeners::new(listener_capacity),
            }),
        }
    }

    /// The current status.
    pub fn status(&self) -> DataSourceStatus {
        self.lock().clone()
    }

    /// When the data source last heard from flagd (a stream's answer or event, a poll's
    /// answer, 304 included), if it ever did. A connected stream that is merely quiet is in
    /// contact although this time does not move: read it together with the state.
    pub fn last_contact(&self) -> Option<SystemTime> {
        *self
            .inner
            .contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many failures in a row the source has met since flagd last answered (0 while it
    /// answers): a stream that would not connect, a poll that failed, each counts once.
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Records that flagd answered.
    pub(crate) fn contact(&self) {
        self.inner.failures.store(0, Ordering::Relaxed);
        *self
            .inner
            .contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(SystemTime::now());
    }

    /// A listener that receives every status change from now on.
    pub fn add_status_listener(&self) -> Listener<DataSourceStatus> {
        self.inner.listeners.add()
    }

    /// Removes a listener; returns whether it was registered.
    pub fn remove_status_listener(&self, id: ListenerId) -> bool {
        self.inner.listeners.remove(id)
    }

    /// Moves to `state`, recording `error` if given. An `Interrupted` report while still
    /// `Initializing` stays `Initializing` (LaunchDarkly's rule: interruptions are of a source
    /// that had worked or is retrying after it did). Listeners hear only real changes.
    pub(crate) fn update(&self, state: DataSourceState, error: Option<ErrorInfo>) {
        let changed = {
            let mut status = self.lock();
            if status.state == DataSourceState::Off {
                return;
            }
            let state = match (&status.state, state) {
                (DataSourceState::Initializing, DataSourceState::Interrupted) => {
                    DataSourceState::Initializing
                }
                (_, state) => state,
            };
            let new_state = state != status.state;
            if new_state {
                status.state = state;
                status.since = SystemTime::now();
            }
            let new_error = error.is_some();
            if let Some(error) = error {
                let _ =
                    (self.inner.failures)
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
                status.last_error = Some(error);
            }
            (new_state || new_error).then(|| status.clone())
        };
        if let Some(status) = changed {
            self.inner.listeners.send(&status);
        }
    }

    /// Turns the source off for good and ends every listener.
    pub(crate) fn shut(&self, error: Option<ErrorInfo>) {
        self.update(DataSourceState::Off, error);
        self.inner.listeners.close();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DataSourceStatus> {
        self.inner
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for DataSourceStatusProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSourceStatusProvider")
            .field("status", &self.status())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn network(message: &str) -> ErrorInfo {
        ErrorInfo {
            kind: DataSourceErrorKind::NetworkError,
            status_code: None,
            message: message.to_owned(),
            time: SystemTime::now(),
        }
    }

    #[test]
    fn failures_before_the_first_data_stay_initializing() {
        let provider = DataSourceStatusProvider::new(8);
        let mut l = provider.add_status_listener();
        provider.update(DataSourceState::Interrupted, Some(network("refused")));
        let status = provider.status();
        assert_eq!(status.state, DataSourceState::Initializing);
        assert_eq!(status.last_error.unwrap().message, "refused");
        assert_eq!(
            l.try_recv().unwrap().unwrap().state,
            DataSourceState::Initializing
        );
    }

    #[test]
    fn interrupted_keeps_its_since_and_off_is_final() {
        let provider = DataSourceStatusProvider::new(8);
        provider.update(DataSourceState::Valid, None);
        provider.update(DataSourceState::Interrupted, Some(network("a")));
        let since = provider.status().since;
        provider.update(DataSourceState::Interrupted, Some(network("b")));
        let status = provider.status();
        assert_eq!(status.since, since);
        assert_eq!(status.last_error.unwrap().message, "b");
        provider.shut(None);
        provider.update(DataSourceState::Valid, None);
        assert_eq!(provider.status().state, DataSourceState::Off);
    }

    #[test]
    fn listeners_hear_only_changes() {
        let provider = DataSourceStatusProvider::new(8);
        let mut l = provider.add_status_listener();
        provider.update(DataSourceState::Valid, None);
        provider.update(DataSourceState::Valid, None);
        assert_eq!(l.try_recv().unwrap().unwrap().state, DataSourceState::Valid);
        assert_eq!(l.try_recv().unwrap(), None);
    }

    #[test]
    fn failures_count_until_flagd_answers() {
        let provider = DataSourceStatusProvider::new(8);
        assert_eq!(provider.consecutive_failures(), 0);
        provider.update(DataSourceState::Interrupted, Some(network("a")));
        provider.update(DataSourceState::Interrupted, Some(network("b")));
        provider.update(DataSourceState::Interrupted, None);
        assert_eq!(provider.consecutive_failures(), 2);
        provider.contact();
        assert_eq!(provider.consecutive_failures(), 0);
        provider.update(DataSourceState::Interrupted, Some(network("c")));
        assert_eq!(provider.consecutive_failures(), 1);
    }
}
