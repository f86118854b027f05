//! How a [`Client`](crate::Client) is set up: where its data comes from and how it behaves.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flags_core::FlagData;

use crate::big_segments::BigSegmentsConfig;
use crate::listen::DEFAULT_CAPACITY;

/// flagd's default address, used for every service a builder is not given a URL for.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8013";

/// Where the client's flag data comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DataSource {
    /// The SSE stream of flagd's `GET /all` (LaunchDarkly's streaming protocol): a `put` with
    /// everything, then `patch` and `delete` events. The default.
    Streaming {
        /// Wait before the first reconnect; later ones back off from it (×2, ×4, ×8), with
        /// jitter. LaunchDarkly's default: 1 s.
        initial_reconnect_delay: Duration,
        /// A stream that sends nothing (not even its keep-alive comments) for this long is
        /// taken as dropped, and so is a request not answered within it. LaunchDarkly's
        /// default: 5 minutes.
        read_timeout: Duration,
    },
    /// `GET /sdk/latest-all` at an interval, with ETags so an unchanged answer costs a 304.
    Polling {
        /// Time between polls. LaunchDarkly's default: 30 s.
        interval: Duration,
    },
    /// Flag files in LaunchDarkly's file-data-source format (JSON or YAML), the format flagd
    /// serves, merged; read again when their content changes. No network.
    Files {
        /// The files, merged in order.
        paths: Vec<PathBuf>,
        /// How often the files are checked for changes.
        reload_interval: Duration,
    },
    /// Fixed data given by the application (tests, benchmarks, bootstrapping); never changes.
    Fixed(Arc<FlagData>),
    /// Data the application changes through a [`TestData`](crate::TestData) handle.
    TestData(crate::TestData),
    /// No data at all: every evaluation gives the caller's default. The client counts as
    /// initialised at once.
    Offline,
}

impl DataSource {
    /// Streaming with LaunchDarkly's defaults.
    pub fn streaming() -> DataSource {
        DataSource::Streaming {
            initial_reconnect_delay: Duration::from_secs(1),
            read_timeout: Duration::from_secs(300),
        }
    }

    /// Polling every `interval`.
    pub fn polling(interval: Duration) -> DataSource {
        DataSource::Polling { interval }
    }

    /// Flag files, checked for changes every second.
    pub fn files(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> DataSource {
        DataSource::Files {
            paths: paths.into_iter().map(Into::into).collect(),
            reload_interval: Duration::from_secs(1),
        }
    }
}

/// Settings gathered by a [`ClientBuilder`](crate::ClientBuilder).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub sdk_key: String,
    pub stream_url: String,
    pub poll_url: String,
    pub events_url: String,
    pub data_source: DataSource,
    pub listener_capacity: usize,
    pub connect_timeout: Duration,
    pub big_segments: Option<BigSegmentsConfig>,
    /// How long a poll (and a stream's wait for its answer) may take.
    pub fetch_timeout: Duration,
    /// Streaming only: poll `/sdk/latest-all` while the stream is down, at most this often.
    pub polling_fallback: Option<PollingFallback>,
    pub data_hook: Option<HookSlot>,
    pub events: EventsConfig,
    pub events_mode: EventsMode,
    /// `base_url` or `events_url` was given.
    pub events_url_given: bool,
}

/// Whether a client sends analytics events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventsMode {
    /// When its data comes from flagd (streaming, polling), or an events URL was given.
    Auto,
    On,
    Off,
}

impl Config {
    /// Whether this client sends events: a client that talks to flagd does, as LaunchDarkly's
    /// SDKs do; one fed from files, fixed or test data, or offline does only when told where
    /// to send them, as LaunchDarkly's offline mode sends none.
    pub(crate) fn sends_events(&self) -> bool {
        match self.events_mode {
            EventsMode::On => true,
            EventsMode::Off => false,
            EventsMode::Auto => {
                self.events_url_given
                    || matches!(
                        self.data_source,
                        DataSource::Streaming { .. } | DataSource::Polling { .. }
                    )
            }
        }
    }
}

impl Config {
    pub(crate) fn new(sdk_key: String) -> Config {
        Config {
            sdk_key,
            stream_url: DEFAULT_BASE_URL.to_owned(),
            poll_url: DEFAULT_BASE_URL.to_owned(),
            events_url: DEFAULT_BASE_URL.to_owned(),
            data_source: DataSource::streaming(),
            listener_capacity: DEFAULT_CAPACITY,
            connect_timeout: Duration::from_secs(10),
            big_segments: None,
            fetch_timeout: Duration::from_secs(30),
            polling_fallback: None,
            data_hook: None,
            events: EventsConfig::default(),
            events_mode: EventsMode::Auto,
            events_url_given: false,
        }
    }
}

/// How a streaming client keeps its data current while its stream is down: between two
/// reconnection attempts it polls `/sdk/latest-all`, at most once per `interval`, give or
/// take `jitter` (a fraction of it), so that many clients do not poll in step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollingFallback {
    /// The least time between two polls.
    pub interval: Duration,
    /// Spread of the interval, as a fraction between 0 and 1.
    pub jitter: f64,
}

/// A [`DataHook`](crate::DataHook) in the configuration, which is `Debug`.
#[derive(Clone)]
pub(crate) struct HookSlot(pub crate::DataHook);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataHook")
    }
}

/// `url` without trailing slashes, so paths can be appended.
pub(crate) fn trim_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The HTTP client could not be made.
    #[error("cannot create the HTTP client: {0}")]
    Http(String),
    /// The fixed data does not compile.
    #[error("{0}")]
    Data(#[from] flags_data::DataError),
    /// The background thread could not be started.
    #[error("cannot start the client's background thread: {0}")]
    Thread(std::io::Error),
}

/// How the event processor behaves. LaunchDarkly's defaults where it has the same knob.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Events each application thread's buffer holds between two passes of the worker (the
    /// worker is woken when one is half full), and the events (summary aside) one payload
    /// holds; past either, events are dropped and counted. Default 10 000.
    pub queue_capacity: usize,
    /// Payloads delivered at the same time. Default 5.
    pub num_flush_workers: usize,
    /// Time between flushes. Default 5 s.
    pub flush_interval: Duration,
    /// A payload of this many events is flushed without waiting for the interval. Default 1000.
    pub flush_size: usize,
    /// Contexts remembered as already sent in an `index` event. Default 1000.
    pub context_keys_capacity: usize,
    /// How often that memory is cleared, so long-lived contexts are indexed again. Default
    /// 5 minutes.
    pub context_keys_flush_interval: Duration,
    /// Every attribute but `kind`, `key` and `anonymous` is private. Default `false`.
    pub all_attributes_private: bool,
    /// Attribute references (`email`, `/address/street`) private in every context, besides
    /// those a context names itself.
    pub private_attributes: Vec<String>,
    /// How long closing the client waits for the last events to be delivered. Default 2 s.
    pub close_timeout: Duration,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            queue_capacity: 10_000,
            num_flush_workers: 5,
            flush_interval: Duration::from_secs(5),
            flush_size: 1000,
            context_keys_capacity: 1000,
            context_keys_flush_interval: Duration::from_secs(300),
            all_attributes_private: false,
            private_attributes: Vec::new(),
            close_timeout: Duration::from_secs(2),
        }
    }
}
