//! What every request handler shares: the served environments, the mode flagd runs in, limits,
//! metrics and the stop signal.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{Config, HttpConfig};
use crate::engine::Ops;
use crate::env::{DEFAULT_ENV, Env, Environments};
use crate::events::Events;
use crate::keys::{SdkKeys, StoreKeys};
use crate::metrics::Metrics;
use crate::root::RootHealth;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Where the served data comes from, with what only that mode has.
#[derive(Clone)]
#[non_exhaustive]
pub enum Mode {
    /// One environment (`DEFAULT_ENV`) read from flag files, reloaded when they change.
    File {
        /// The flag files served, for `/readyz`.
        files: Arc<Vec<PathBuf>>,
    },
    /// Every environment of a store, each selected by the SDK key a request presents.
    Root {
        /// SDK keys checked against the store.
        keys: Arc<StoreKeys>,
        /// The health of the store connection, for `/readyz`.
        health: Arc<RootHealth>,
    },
    /// One environment (`DEFAULT_ENV`) followed from an upstream flagd.
    Proxy {
        /// The upstream connection, for `/readyz`.
        upstream: Arc<crate::proxy::Upstream>,
    },
}

impl Mode {
    /// Whether requests are served from a store's environments.
    pub fn is_root(&self) -> bool {
        matches!(self, Mode::Root { .. })
    }
}

/// Everything request handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The served data and its change feed (of the file-mode environment, `DEFAULT_ENV`).
    pub store: Arc<Store>,
    /// Kill set and overrides consulted before flag rules (of `DEFAULT_ENV`).
    pub ops: Arc<Ops>,
    /// The environment served when no key selects one: file mode's only environment, holding
    /// `store` and `ops` above.
    pub default_env: Arc<Env>,
    /// Every environment served; in file mode just [`AppState::default_env`].
    pub envs: Arc<Environments>,
    /// File or root mode.
    pub mode: Mode,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// Limits and stream settings.
    pub http: Arc<HttpConfig>,
    /// Accepted SDK keys of file mode (none: no key required).
    pub keys: Arc<SdkKeys>,
    /// Permits for concurrently handled requests.
    pub limiter: Arc<Semaphore>,
    /// Permits for open SDK streams (`GET /all`).
    pub streams: Arc<Semaphore>,
    /// Fires when the server stops; streams end on it.
    pub shutdown: Shutdown,
    /// Where analytics events go (nowhere until exporters are configured).
    pub events: Arc<Events>,
    /// How writing into Redis goes, when `redis.url` is set.
    pub redis: Option<Arc<crate::redis_mirror::RedisHealth>>,
    /// Where big segments' memberships come from; `None`: nowhere, so big segments report
    /// `NOT_CONFIGURED`.
    pub big_segments: Option<Arc<crate::big_segments::BigSegments>>,
    /// The typed flags a descriptor set declares (`--descriptors`), whose compiled defaults
    /// are the last fallback of evaluation; `None` without one.
    pub descriptors: Option<Arc<crate::descriptors::DescriptorWatcher>>,
    /// The store's changes as root mode serves them, for the web UI's live pages (nothing is
    /// sent in the other modes).
    pub changes: crate::root::ChangeNotices,
}

impl AppState {
    /// File-mode state for `config` with an empty store (nothing is read here).
    pub fn new(config: &Config) -> AppState {
        AppState::with_mode(
            config,
            Mode::File {
                files: Arc::new(config.files.clone()),
            },
        )
    }

    /// State for `config` in `mode`, with an empty default environment.
    pub fn with_mode(config: &Config, mode: Mode) -> AppState {
        let default_env = Arc::new(Env::new(DEFAULT_ENV, config.http.stream_buffer));
        AppState::with_env(config, mode, default_env)
    }

    /// State for `config` in `mode`, serving `default_env` (which a proxy's upstream fills).
    pub fn with_env(config: &Config, mode: Mode, default_env: Arc<Env>) -> AppState {
        let envs = Arc::new(Environments::new(config.http.stream_buffer));
        envs.insert(Arc::clone(&default_env));
        AppState {
            store: Arc::clone(&default_env.store),
            ops: Arc::clone(&default_env.ops),
            default_env,
            envs,
            mode,
            metrics: Arc::new(Metrics::new()),
            http: Arc::new(config.http.clone()),
            keys: Arc::new(SdkKeys::new(&config.sdk_keys)),
            limiter: Arc::new(Semaphore::new(config.http.max_concurrency)),
            streams: Arc::new(Semaphore::new(config.http.max_streams)),
            shutdown: Shutdown::new(),
            events: Arc::new(Events::off()),
            redis: config.redis.url.as_ref().map(|_| Arc::default()),
            big_segments: None,
            descriptors: None,
            changes: crate::root::ChangeNotices::new(),
        }
    }
}
