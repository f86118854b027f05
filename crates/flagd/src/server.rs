//! Building the runtime from a [`Config`] and running it: the shared [`AppState`] in its
//! [`Mode`], the file source and its watcher or root mode's sync loop, the listener, and
//! graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use flags_store::{AdminStore, ChangeFeed, KeyStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::backend;
use crate::config::Config;
use crate::keys::StoreKeys;
use crate::root::{RootHealth, RootSync};
use crate::source::{FileSource, ReloadOutcome};
use crate::state::{AppState, Mode};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Root mode: the store could not be set up.
    #[error("cannot use the database: {0}")]
    Store(String),
}

/// A server started by [`start`]: its address, its state, and the handle to stop it.
pub struct RunningServer {
    addr: SocketAddr,
    state: AppState,
    source: Option<Arc<FileSource>>,
    server: JoinHandle<std::io::Result<()>>,
    watcher: Option<JoinHandle<()>>,
    sync: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The address actually bound (the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state (store, metrics, kill set...).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The file source, when files are configured.
    pub fn source(&self) -> Option<&Arc<FileSource>> {
        self.source.as_ref()
    }

    /// Stops accepting connections, ends SSE streams, lets in-flight requests finish, and
    /// returns once everything has stopped.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.state.shutdown.trigger();
        self.wait().await
    }

    /// Waits until the server stops (after someone fires [`AppState::shutdown`]).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = match self.server.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Some(watcher) = self.watcher {
            // The watcher stops on the same signal; a join error only means it panicked.
            let _ = watcher.await;
        }
        if let Some(sync) = self.sync {
            // As the watcher.
            let _ = sync.await;
        }
        result
    }
}

/// Loads the configured files, binds the listener and starts serving in the background.
///
/// A bad or missing flag file does not stop the start: the server answers 503 on `/readyz`
/// and evaluation routes until a good file appears. Bind `127.0.0.1:0` to get a free port and
/// read it from [`RunningServer::local_addr`] — that is how tests start it.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    if let Some(url) = &config.database_url {
        if !config.files.is_empty() {
            return Err(StartError::Store(
                "serve either flag files or a database, not both".to_owned(),
            ));
        }
        let store = backend::open_lazy(url).map_err(|e| StartError::Store(e.to_string()))?;
        return start_with_store(config, store).await;
    }
    let (listener, addr) = bind(&config).await?;
    let state = AppState::new(&config);
    let mut source = None;
    let mut watcher = None;
    if !config.files.is_empty() {
        let file_source = Arc::new(FileSource::new(
            config.files.clone(),
            Arc::clone(&state.store),
            Arc::clone(&state.metrics),
        ));
        // Watch first, then read: a change between the two is then seen by the watch.
        let task = Arc::clone(&file_source).watch(config.reload.clone(), state.shutdown.clone());
        let first = Arc::clone(&file_source);
        let outcome = tokio::task::spawn_blocking(move || first.reload()).await;
        if let Ok(ReloadOutcome::Failed(message)) = &outcome {
            tracing::error!(error = %message, "serving no data until the flag files are fixed");
        }
        watcher = Some(tokio::spawn(task));
        source = Some(file_source);
    }
    let router = crate::http::app(state.clone());
    Ok(serve(listener, addr, state, router, source, watcher, None))
}

/// Root mode: serves every environment of `store`, kept current from its change feed, with SDK
/// keys checked against it. Everything is loaded before this returns when the store is
/// reachable; when it is not, the server starts anyway (`/readyz` says `CONNECTING`) and keeps
/// trying with backoff.
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn AdminStore>,
) -> Result<RunningServer, StartError> {
    let (listener, addr) = bind(&config).await?;
    let keys = StoreKeys::new(Arc::clone(&store) as Arc<dyn KeyStore>)
        .map_err(|e| StartError::Store(e.to_string()))?;
    let health = Arc::new(RootHealth::default());
    let state = AppState::with_mode(
        &config,
        Mode::Root {
            keys: Arc::new(keys),
            health: Arc::clone(&health),
        },
    );
    let mut sync = RootSync::new(
        Arc::clone(&store) as Arc<dyn ChangeFeed>,
        Arc::clone(&state.envs),
        health,
        config.sync.timing(),
    );
    let first = match sync.connect().await {
        Ok(subscription) => Some(subscription),
        Err(e) => {
            tracing::error!(error = %e, "the store is unreachable; serving nothing until it answers");
            None
        }
    };
    let task = sync.spawn(first, state.shutdown.clone());
    let admin = crate::admin::admin_router(crate::admin::AdminState {
        store,
        bootstrap_admin_key: config.admin_key.clone(),
    });
    let router = crate::http::app_with_admin(state.clone(), Some(admin));
    Ok(serve(listener, addr, state, router, None, None, Some(task)))
}

/// Connects to the database at `url` (its scheme picks the backend) and applies the schema
/// migrations that have not run.
pub async fn open_database(url: &str) -> Result<Arc<dyn AdminStore>, StartError> {
    backend::open(url)
        .await
        .map_err(|e| StartError::Store(e.to_string()))
}

async fn bind(config: &Config) -> Result<(TcpListener, SocketAddr), StartError> {
    // Bind first: a taken port should fail before anything else is started.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    Ok((listener, addr))
}

fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    router: crate::http::App,
    source: Option<Arc<FileSource>>,
    watcher: Option<JoinHandle<()>>,
    sync: Option<JoinHandle<()>>,
) -> RunningServer {
    let shutdown = state.shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
    });
    RunningServer {
        addr,
        state,
        source,
        server,
        watcher,
        sync,
    }
}

/// Starts a server on a free loopback port serving `files`, with the short intervals of
/// [`Config::for_tests`]. Its address is [`RunningServer::url`]; stop it with
/// [`RunningServer::shutdown`].
pub async fn spawn_for_test(files: Vec<PathBuf>) -> Result<RunningServer, StartError> {
    start(Config::for_tests(files)).await
}
