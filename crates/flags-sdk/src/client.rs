//! The client: evaluation over the current snapshot, and the background task that keeps it
//! current.

use std::sync::Arc;
use std::time::Duration;

use flags_core::{Context, FlagData};
use serde_json::Value;
use tokio::sync::watch;

use crate::big_segments::{BigSegmentStoreStatusProvider, BigSegments};
use crate::config::{
    BuildError, Config, DataSource, EventsConfig, EventsMode, HookSlot, PollingFallback, trim_url,
};
use crate::data::{Data, DataUpdate};
use crate::detail::Detail;
use crate::events::{CloseReport, EventProcessor, EventStats};
use crate::flags_state::{AllFlagsState, FlagsStateOptions};
use crate::inner::Inner;
use crate::listen::{Listener, ListenerId};
use crate::source;
use crate::status::DataSourceStatusProvider;
use crate::tracker::{FlagChangeEvent, FlagValueChangeEvent, Tracker};

/// Sets up a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    config: Config,
}

impl ClientBuilder {
    /// flagd's address for every service (streaming, polling, events): the usual setting.
    pub fn base_url(mut self, url: &str) -> ClientBuilder {
        let url = trim_url(url);
        self.config.stream_url.clone_from(&url);
        self.config.poll_url.clone_from(&url);
        self.config.events_url = url;
        self.config.events_url_given = true;
        self
    }

    /// The address of the streaming service (`/all`), when it differs from the base URL.
    pub fn stream_url(mut self, url: &str) -> ClientBuilder {
        self.config.stream_url = trim_url(url);
        self
    }

    /// The address of the polling service (`/sdk/latest-all`).
    pub fn poll_url(mut self, url: &str) -> ClientBuilder {
        self.config.poll_url = trim_url(url);
        self
    }

    /// The address analytics events are sent to (`/bulk` under it). Giving it (or
    /// [`ClientBuilder::base_url`]) turns events on for every data source, unless
    /// [`ClientBuilder::events_enabled`] says otherwise.
    pub fn events_url(mut self, url: &str) -> ClientBuilder {
        self.config.events_url = trim_url(url);
        self.config.events_url_given = true;
        self
    }

    /// How analytics events are queued, summarized, redacted and flushed
    /// ([`EventsConfig`]'s defaults otherwise).
    pub fn events(mut self, config: EventsConfig) -> ClientBuilder {
        self.config.events = config;
        self
    }

    /// Sends analytics events, or not. Without this, a client sends them when its data comes
    /// from flagd (streaming or polling) or when an events or base URL was given, and not when
    /// it reads files, fixed or test data, or is offline.
    pub fn events_enabled(mut self, enabled: bool) -> ClientBuilder {
        self.config.events_mode = if enabled {
            EventsMode::On
        } else {
            EventsMode::Off
        };
        self
    }

    /// Where data comes from (default: streaming).
    pub fn data_source(mut self, source: DataSource) -> ClientBuilder {
        self.config.data_source = source;
        self
    }

    /// Serves fixed data and never changes it ([`DataSource::Fixed`]).
    pub fn data(self, data: FlagData) -> ClientBuilder {
        self.data_source(DataSource::Fixed(Arc::new(data)))
    }

    /// Events a listener's queue holds before the oldest give way (default 1024).
    pub fn listener_capacity(mut self, capacity: usize) -> ClientBuilder {
        self.config.listener_capacity = capacity.max(1);
        self
    }

    /// How long connecting to flagd may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long a poll of `/sdk/latest-all`, or a stream's wait for its answer, may take
    /// (default 30 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.fetch_timeout = timeout;
        self
    }

    /// Streaming: while the stream is down, poll `/sdk/latest-all` between reconnection
    /// attempts, at most once per `fallback.interval` (off by default, as in LaunchDarkly's
    /// SDKs). The data stays current through an outage of the stream alone.
    pub fn polling_fallback(mut self, fallback: PollingFallback) -> ClientBuilder {
        self.config.polling_fallback = Some(fallback);
        self
    }

    /// Calls `hook` with every change of the client's data, in order ([`DataHook`](crate::DataHook)).
    pub fn on_data(mut self, hook: impl Fn(&DataUpdate) + Send + Sync + 'static) -> ClientBuilder {
        self.config.data_hook = Some(HookSlot(Arc::new(hook)));
        self
    }

    /// Evaluates big (unbounded) segments with this store and settings.
    pub fn big_segments(mut self, config: crate::BigSegmentsConfig) -> ClientBuilder {
        self.config.big_segments = Some(config);
        self
    }

    /// Starts the client. Returns at once: the data source connects in the background (on the
    /// current tokio runtime if there is one, else on a thread of the client's own). Use
    /// [`Client::wait_for_initialization`] to wait for the first data.
    pub fn build(self) -> Result<Client, BuildError> {
        Client::start(self.config)
    }
}

/// A flagd client: evaluates flags in-process from data that its data source keeps current.
/// Cheap to clone; every clone is the same client.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Closes the client when the last clone goes; the background tasks hold `inner` only.
    _last: Arc<CloseOnDrop>,
}

struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close_in_background();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("status", &self.inner.status.status().state)
            .field("initialized", &self.initialized())
            .finish()
    }
}

/// Registers change listeners on a client. Cheap to clone.
#[derive(Clone)]
pub struct FlagTracker {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for FlagTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagTracker").finish_non_exhaustive()
    }
}

impl FlagTracker {
    /// A listener told of every flag whose configuration changes from now on, including flags
    /// affected through a changed prerequisite or segment, transitively.
    pub fn add_flag_change_listener(&self) -> Listener<FlagChangeEvent> {
        self.inner.tracker.add_flag_listener()
    }

    /// Removes a flag change listener; returns whether it was registered.
    pub fn remove_flag_change_listener(&self, id: ListenerId) -> bool {
        self.inner.tracker.remove_flag_listener(id)
    }

    /// A listener told when the value of flag `key` for `context` changes. The value is
    /// evaluated now (`default` if the flag is missing or fails) and again whenever the flag's
    /// configuration changes; an event is sent only when the value differs.
    pub fn add_flag_value_change_listener(
        &self,
        key: &str,
        context: Context,
        default: Value,
    ) -> Listener<FlagValueChangeEvent> {
        let inner = &self.inner;
        inner
            .tracker
            .add_value_listener(key, context, default, |key, context, default| {
                match inner.data.snapshot() {
                    Some(snapshot) => inner.value_in(&snapshot, key, context, default),
                    None => default.clone(),
                }
            })
    }

    /// Removes a value change listener; returns whether it was registered.
    pub fn remove_flag_value_change_listener(&self, id: ListenerId) -> bool {
        self.inner.tracker.remove_value_listener(id)
    }
}

impl Client {
    /// A builder for a client presenting `sdk_key` to flagd.
    pub fn builder(sdk_key: &str) -> ClientBuilder {
        ClientBuilder {
            config: Config::new(sdk_key.to_owned()),
        }
    }

    fn start(config: Config) -> Result<Client, BuildError> {
        let status = DataSourceStatusProvider::new(config.listener_capacity);
        let (big_segments, big_segment_status) = match &config.big_segments {
            Some(c) => {
                let (b, s) = BigSegments::new(c.clone(), config.listener_capacity);
                (Some(b), s)
            }
            None => (None, BigSegmentStoreStatusProvider::not_configured()),
        };
        let events = if config.sends_events() {
            Some(EventProcessor::start_with(
                &config.sdk_key,
                &config.events_url,
                config.events.clone(),
                config.connect_timeout,
            )?)
        } else {
            None
        };
        let inner = Arc::new(Inner {
            events,
            data: Data::new(config.data_hook.clone().map(|HookSlot(hook)| hook)),
            tracker: Tracker::new(config.listener_capacity),
            status,
            big_segments,
            big_segment_status,
            initialized: watch::Sender::new(false),
            settled: watch::Sender::new(false),
            closed: watch::Sender::new(false),
            thread: std::sync::Mutex::new(None),
        });
        let client = Client {
            _last: Arc::new(CloseOnDrop(Arc::clone(&inner))),
            inner,
        };
        match &config.data_source {
            DataSource::Offline => {
                client.inner.initialized.send_replace(true);
                client.inner.settled.send_replace(true);
                client.inner.status.shut(None);
            }
            DataSource::Fixed(data) => {
                client.inner.put(FlagData::clone(data))?;
            }
            DataSource::TestData(source) => source.attach(&client.inner)?,
            _ => {}
        }
        let mut tasks = source::tasks(&config, Arc::clone(&client.inner))
            .map_err(|e| BuildError::Http(e.to_string()))?;
        if let Some(big) = client.inner.big_segments.clone() {
            let inner = Arc::clone(&client.inner);
            tasks.push(Box::pin(async move {
                loop {
                    big.poll().await;
                    if !source::sleep_unless_closed(&inner, big.poll_interval()).await {
                        return;
                    }
                }
            }));
        }
        if tasks.is_empty() {
            return Ok(client);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                for task in tasks {
                    handle.spawn(task);
                }
            }
            Err(_) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(BuildError::Thread)?;
                let mut closed = client.inner.closed.subscribe();
                let thread = std::thread::Builder::new()
                    .name("flags-sdk".to_owned())
                    .spawn(move || {
                        runtime.block_on(async move {
                            for task in tasks {
                                tokio::spawn(task);
                            }
                            let _ = closed.wait_for(|c| *c).await;
                        });
                    })
                    .map_err(BuildError::Thread)?;
                *client.inner.lock_thread() = Some(thread);
            }
        }
        Ok(client)
    }

    /// Waits up to `timeout` for the first data; returns whether the client has it. Returns
    /// `false` early when the data source stops for good first (a rejected key).
    pub async fn wait_for_initialization(&self, timeout: Duration) -> bool {
        let mut settled = self.inner.settled.subscribe();
        let _ = tokio::time::timeout(timeout, settled.wait_for(|s| *s)).await;
        self.initialized()
    }

    /// [`Client::wait_for_initialization`], blocking this thread. Not for use inside an async
    /// task.
    pub fn wait_for_initialization_blocking(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !*self.inner.settled.borrow() {
            if std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.initialized()
    }

    /// Whether the client has received data (or is offline).
    pub fn initialized(&self) -> bool {
        *self.inner.initialized.borrow()
    }

    /// The value of boolean flag `key` for `context`, or `default`.
    #[inline]
    pub fn bool_variation(&self, context: &Context, key: &str, default: bool) -> bool {
        self.inner.variation(context, key, default)
    }

    /// The value of string flag `key` for `context`, or `default`.
    pub fn str_variation(&self, context: &Context, key: &str, default: String) -> String {
        self.inner.variation(context, key, default)
    }

    /// The value of number flag `key` for `context` as an integer (a fraction is truncated
    /// toward zero), or `default`.
    pub fn int_variation(&self, context: &Context, key: &str, default: i64) -> i64 {
        self.inner.variation(context, key, default)
    }

    /// The value of number flag `key` for `context`, or `default`.
    pub fn float_variation(&self, context: &Context, key: &str, default: f64) -> f64 {
        self.inner.variation(context, key, default)
    }

    /// The value of flag `key` for `context`, whatever its type, or `default`.
    pub fn json_variation(&self, context: &Context, key: &str, default: Value) -> Value {
        self.inner.variation(context, key, default)
    }

    /// [`Client::bool_variation`] with the variation index and reason.
    pub fn bool_variation_detail(
        &self,
        context: &Context,
        key: &str,
        default: bool,
    ) -> Detail<bool> {
        self.inner.detail(context, key, default)
    }

    /// [`Client::str_variation`] with the variation index and reason.
    pub fn str_variation_detail(
        &self,
        context: &Context,
        key: &str,
        default: String,
    ) -> Detail<String> {
        self.inner.detail(context, key, default)
    }

    /// [`Client::int_variation`] with the variation index and reason.
    pub fn int_variation_detail(&self, context: &Context, key: &str, default: i64) -> Detail<i64> {
        self.inner.detail(context, key, default)
    }

    /// [`Client::float_variation`] with the variation index and reason.
    pub fn float_variation_detail(
        &self,
        context: &Context,
        key: &str,
        default: f64,
    ) -> Detail<f64> {
        self.inner.detail(context, key, default)
    }

    /// [`Client::json_variation`] with the variation index and reason.
    pub fn json_variation_detail(
        &self,
        context: &Context,
        key: &str,
        default: Value,
    ) -> Detail<Value> {
        self.inner.detail(context, key, default)
    }

    /// Every flag's value for `context`, in LaunchDarkly's bootstrap form for front ends.
    pub fn all_flags_state(&self, context: &Context, options: FlagsStateOptions) -> AllFlagsState {
        match self.inner.data.snapshot() {
            Some(snapshot) if self.initialized() => AllFlagsState::of(
                &snapshot,
                &self.inner.evaluator(&snapshot),
                context,
                options,
            ),
            _ => AllFlagsState::invalid(),
        }
    }

    /// Change listeners.
    pub fn flag_tracker(&self) -> FlagTracker {
        FlagTracker {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The data source's status and its listeners.
    pub fn data_source_status_provider(&self) -> DataSourceStatusProvider {
        self.inner.status.clone()
    }

    /// The big-segment store's status and its listeners.
    pub fn big_segment_store_status_provider(&self) -> BigSegmentStoreStatusProvider {
        self.inner.big_segment_status.clone()
    }

    /// Records a goal for `context`: a `custom` event named `key`, with the application's data
    /// and metric value (numeric metrics in experiments).
    pub fn track(
        &self,
        key: &str,
        context: &Context,
        data: Option<Value>,
        metric_value: Option<f64>,
    ) {
        if let Some(events) = &self.inner.events {
            events.push_goal_event(key, context, data, metric_value);
        }
    }

    /// Announces `context` to flagd (an `identify` event with its attributes, private ones
    /// redacted).
    pub fn identify(&self, context: &Context) {
        if let Some(events) = &self.inner.events {
            events.push_identify_event(context);
        }
    }

    /// Sends the events held so far without waiting for the flush interval; returns at once.
    pub fn flush(&self) {
        if let Some(events) = &self.inner.events {
            events.flush();
        }
    }

    /// The counts of the client's analytics events (all zero when events are off).
    pub fn event_stats(&self) -> EventStats {
        self.inner
            .events
            .as_ref()
            .map(EventProcessor::stats)
            .unwrap_or_default()
    }

    /// Stops the data source and ends every listener, then flushes the events held and waits up
    /// to [`EventsConfig::close_timeout`] for their delivery; says how many could not be
    /// delivered. Evaluations keep answering from the last data (and record nothing more).
    /// Returns once the client's own threads have finished. Dropping the last clone of the
    /// client closes it too, without waiting: the last events are sent from the processor's
    /// thread.
    pub fn close(&self) -> CloseReport {
        self.inner.close()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::pin::pin;

    use super::*;
    use crate::status::{DataSourceErrorKind, DataSourceState, ErrorInfo};

    /// A client whose data never comes: its only flag file does not exist.
    fn starved() -> Client {
        Client::builder("key")
            .data_source(DataSource::files(["/nonexistent/flags.json"]))
            .build()
            .unwrap()
    }

    fn rejected() -> ErrorInfo {
        source::error(
            DataSourceErrorKind::ErrorResponse,
            Some(401),
            "401".to_owned(),
        )
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn waiting_for_a_source_that_stopped_ends_at_once() {
        let client = starved();
        client.inner.give_up(rejected());
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            client.wait_for_initialization(LONG),
        );
        assert!(!waited.await.unwrap());
        assert!(!client.wait_for_initialization_blocking(LONG));
    }

    #[tokio::test]
    async fn waiting_ends_when_the_source_stops_or_the_client_closes() {
        for stop in [
            (|c: &Client| c.inner.give_up(rejected())) as fn(&Client),
            |c: &Client| {
                let _ = c.close();
            },
        ] {
            let client = starved();
            let mut wait = pin!(client.wait_for_initialization(LONG));
            assert!(futures_util::poll!(&mut wait).is_pending());
            stop(&client);
            let waited = tokio::time::timeout(Duration::from_secs(10), wait);
            assert!(!waited.await.unwrap());
        }
    }

    #[tokio::test]
    async fn waiting_for_data_that_comes_returns_true() {
        let client = starved();
        let mut wait = pin!(client.wait_for_initialization(LONG));
        assert!(futures_util::poll!(&mut wait).is_pending());
        client.inner.put(FlagData::default()).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .unwrap()
        );
        assert_eq!(
            client.data_source_status_provider().status().state,
            DataSourceState::Valid
        );
    }
}
