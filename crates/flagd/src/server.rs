//! Building the runtime from a [`Config`] and running it: the shared [`AppState`] in its
//! [`Mode`], the file source and its watcher or root mode's sync loop, the listeners (HTTP, and
//! gRPC when configured), and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flags_store::{AdminStore, ChangeFeed, KeyStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::backend;
use crate::big_segments::{self, BigSegments, RedisMirror};
use crate::config::{Config, ReloadConfig};
use crate::descriptors::{DescriptorWatcher, TypedStore};
use crate::events::Events;
use crate::keys::StoreKeys;
use crate::redis_mirror;
use crate::root::{RootHealth, RootSync};
use crate::source::{FileSource, ReloadOutcome};
use crate::state::{AppState, Mode};
use crate::telemetry::{TracedMembers, TracedStore};
use crate::tls::{Tls, TlsError};

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
    /// The gRPC services could not be built.
    #[error("cannot serve gRPC: {0}")]
    Grpc(String),
    /// An event exporter's configuration cannot work.
    #[error("cannot export events: {0}")]
    Events(String),
    /// More than one source of data was given.
    #[error("serve one of flag files, a database or an upstream, not several")]
    Sources,
    /// A flag file named does not exist, and `allow_missing` is off.
    #[error(
        "flag file {} does not exist (pass --allow-missing to start anyway and serve it once it appears)",
        .0.display()
    )]
    MissingFile(PathBuf),
    /// Proxy mode could not start.
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    /// The TLS certificate and key cannot be used.
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A server started by [`start`]: its address, its state, and the handle to stop it.
pub struct RunningServer {
    addr: SocketAddr,
    grpc: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
    state: AppState,
    source: Option<Arc<FileSource>>,
    server: JoinHandle<std::io::Result<()>>,
    watcher: Option<JoinHandle<()>>,
    sync: Option<JoinHandle<()>>,
    descriptors: Option<JoinHandle<()>>,
    exporters: Option<Exporters>,
    /// With TLS on, the task following the certificate and key files.
    tls: Option<JoinHandle<()>>,
}

/// The running exporters, and how long they get at shutdown.
#[derive(Clone)]
pub struct Exporters {
    scheduler: flags_export::Scheduler,
    grace: Duration,
}

impl Exporters {
    /// Exports what is held until the grace period passes, spools the rest, and logs what
    /// happened. Safe to call again: a second call only reports.
    pub async fn shutdown(&self) {
        let report = self.scheduler.shutdown(self.grace).await;
        let dropped = report.dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "events dropped at shutdown (see the exporters' log lines)"
            );
        }
    }

    /// How long [`Exporters::shutdown`] may take.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

impl RunningServer {
    /// The address actually bound (the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the gRPC service is bound to (the real port when the configuration said
    /// 0), when `grpc_listen` is set.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|(addr, _)| *addr)
    }

    /// `http://ADDR`, or `https://ADDR` with TLS on, for clients.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The shared state (store, metrics, kill set...).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The event exporters, when any are configured.
    pub fn exporters(&self) -> Option<Exporters> {
        self.exporters.clone()
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

    /// Waits until the server stops (after someone fires [`AppState::shutdown`]), then lets the
    /// exporters deliver what they hold (or spool it) within their grace period.
    pub async fn wait(self) -> std::io::Result<()> {
        let mut result = match self.server.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Some((_, grpc)) = self.grpc {
            // It stops on the same signal, once its calls in flight are answered.
            let grpc = grpc.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            result = result.and(grpc);
        }
        if let Some(watcher) = self.watcher {
            // The watcher stops on the same signal; a join error only means it panicked.
            let _ = watcher.await;
        }
        if let Some(sync) = self.sync {
            // As the watcher.
            let _ = sync.await;
        }
        if let Some(descriptors) = self.descriptors {
            // As the watcher.
            let _ = descriptors.await;
        }
        if let Some(tls) = self.tls {
            // As the watcher.
            let _ = tls.await;
        }
        if let Mode::Proxy { upstream } = &self.state.mode {
            let upstream = Arc::clone(upstream);
            // Closing joins nothing that blocks for long, but it is not async.
            let _ = tokio::task::spawn_blocking(move || upstream.close()).await;
        }
        // Every request has been answered: nothing more will be submitted.
        if let Some(exporters) = &self.exporters {
            exporters.shutdown().await;
        }
        result
    }
}

/// Loads the configured files, binds the listener and starts serving in the background.
///
/// A flag file that does not exist stops the start, unless `allow_missing` is set; a bad one
/// does not: the server answers 503 on `/readyz` and evaluation routes until a good file
/// appears. Bind `127.0.0.1:0` to get a free port and read it from
/// [`RunningServer::local_addr`] — that is how tests start it.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let sources = [
        !config.files.is_empty(),
        config.database_url.is_some(),
        config.upstream.url.is_some(),
    ];
    if sources.into_iter().filter(|given| *given).count() > 1 {
        return Err(StartError::Sources);
    }
    if !config.allow_missing
        && let Some(missing) = config.files.iter().find(|path| !path.exists())
    {
        return Err(StartError::MissingFile(missing.clone()));
    }
    warn_about_keys(&config);
    if config.upstream.url.is_some() {
        return start_proxy(config).await;
    }
    if let Some(url) = &config.database_url {
        let store = backend::open_lazy(url).map_err(|e| StartError::Store(e.to_string()))?;
        return start_with_store(config, store).await;
    }
    let listeners = bind(&config).await?;
    let mut state = AppState::new(&config);
    let exporters = start_events(&config, &mut state).await?;
    // Before the files, so that their first load is checked against the declared types.
    let descriptors = start_descriptors(&config, &mut state).await;
    let mut source = None;
    let mut watcher = None;
    if !config.files.is_empty() {
        let mut file_source = FileSource::new(
            config.files.clone(),
            Arc::clone(&state.store),
            Arc::clone(&state.metrics),
        )
        .warn_deletes_over(config.reload.warn_delete_percent);
        if let Some(declared) = &state.descriptors {
            file_source = file_source.checked_against(Arc::clone(declared));
        }
        let file_source = Arc::new(file_source);
        // Watch first, then read: a change between the two is then seen by the watch.
        let task = Arc::clone(&file_source).watch(config.reload.clone(), state.shutdown.clone());
        let first = Arc::clone(&file_source);
        let outcome = tokio::task::spawn_blocking(move || first.reload()).await;
        if let Ok(ReloadOutcome::Failed(message)) = &outcome {
            tracing::error!(error = %message, "serving no data until the flag files are fixed");
            warm_default(&config, &state, false).await;
        }
        watcher = Some(tokio::spawn(task));
        source = Some(file_source);
    }
    start_redis(&config, &state, false);
    state.big_segments = file_big_segments(&config)?;
    let router = crate::http::app(state.clone());
    let background = Background {
        source,
        watcher,
        descriptors,
        exporters,
        ..Background::default()
    };
    serve(listeners, state, router, background)
}

/// Root mode: serves every environment of `store`, kept current from its change feed, with SDK
/// keys checked against it. Everything is loaded before this returns when the store is
/// reachable; when it is not, the server starts anyway (`/readyz` says `CONNECTING`) and keeps
/// trying with backoff.
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn AdminStore>,
) -> Result<RunningServer, StartError> {
    let listeners = bind(&config).await?;
    // Every call to the store, whoever makes it, is a span (see `telemetry::store`).
    let system = config
        .database_url
        .as_deref()
        .and_then(|url| backend::Backend::of(url).ok())
        .map(backend::Backend::system_name);
    let store = TracedStore::wrap(store, system);
    let mut keys = StoreKeys::new(Arc::clone(&store) as Arc<dyn KeyStore>)
        .map_err(|e| StartError::Store(e.to_string()))?;
    if let Some(ledger) = key_ledger(&config).await {
        keys = keys.with_ledger(ledger);
    }
    let health = Arc::new(RootHealth::default());
    let mut state = AppState::with_mode(
        &config,
        Mode::Root {
            keys: Arc::new(keys),
            health: Arc::clone(&health),
        },
    );
    let exporters = start_events(&config, &mut state).await?;
    let descriptors = start_descriptors(&config, &mut state).await;
    let mut sync = RootSync::new(
        Arc::clone(&store) as Arc<dyn ChangeFeed>,
        Arc::clone(&state.envs),
        health,
        config.sync.timing(),
    )
    .explained_by(config.database_url.clone())
    .notifying(state.changes.clone());
    let first = match sync.connect().await {
        Ok(subscription) => Some(subscription),
        Err(e) => {
            tracing::error!(error = sync.describe(&e).await, "the store is unreachable");
            warm_root(&config, &state).await;
            None
        }
    };
    let task = sync.spawn(first, state.shutdown.clone());
    start_redis(&config, &state, true);
    if let Some(members) = store.big_segment_members() {
        let mirror = config.redis.url.clone().map(|url| {
            let template = config.redis.template(true);
            RedisMirror::new(url, template)
        });
        let big = BigSegments::with_mirror(members, mirror)
            .map_err(|e| StartError::Store(e.to_string()))?;
        let big = Arc::new(big);
        drop(big_segments::spawn_refresh(
            Arc::clone(&big),
            Arc::clone(&state.envs),
            Duration::from_millis(config.sync.big_segments_refresh_ms),
            state.shutdown.clone(),
        ));
        state.big_segments = Some(big);
    }
    // Admin writes of declared flags must match the declared types.
    let admin_store = match &state.descriptors {
        Some(declared) => Arc::new(TypedStore::new(store, Arc::clone(declared))),
        None => store,
    };
    let admin_state = crate::admin::AdminState {
        store: admin_store,
        bootstrap_admin_key: config.admin_key.clone(),
        big_segments: state.big_segments.clone(),
    };
    let admin = crate::admin::admin_router(admin_state.clone());
    let ui = crate::ui::ui_router(crate::ui::UiState {
        admin: admin_state,
        app: state.clone(),
        sessions: Arc::new(crate::ui::Sessions::new(Duration::from_secs(
            config.ui_session_ttl_secs.max(1),
        ))),
        secure: config.tls.cert.is_some(),
    });
    let router = crate::http::app_with_ui(state.clone(), Some(admin), Some(ui));
    let background = Background {
        sync: Some(task),
        descriptors,
        exporters,
        ..Background::default()
    };
    serve(listeners, state, router, background)
}

/// Proxy mode: serves the data of the flagd at `upstream.url`, followed over its stream. The
/// server starts at once; `/readyz` says `CONNECTING` until the first data arrives, and the
/// last data keeps serving, however long the upstream is gone.
async fn start_proxy(config: Config) -> Result<RunningServer, StartError> {
    let listeners = bind(&config).await?;
    let url = config.upstream.url.clone().unwrap_or_default();
    for name in config.upstream.without_effect() {
        tracing::warn!(
            setting = name,
            "upstream.{name} has no effect in proxy mode: kills and overrides arrive inside the flags, on the stream"
        );
    }
    let default_env = Arc::new(crate::env::Env::new(
        crate::env::DEFAULT_ENV,
        config.http.stream_buffer,
    ));
    let upstream = crate::proxy::Upstream::start(
        &config.upstream,
        &url,
        config.sdk_keys.first().map(String::as_str),
        Arc::clone(&default_env),
    )?;
    let upstream = Arc::new(upstream);
    let mut state = AppState::with_env(
        &config,
        Mode::Proxy {
            upstream: Arc::clone(&upstream),
        },
        default_env,
    );
    let exporters = start_events(&config, &mut state).await?;
    let descriptors = start_descriptors(&config, &mut state).await;
    if !upstream
        .wait_for_data(Duration::from_millis(config.upstream.fetch_timeout_ms))
        .await
    {
        tracing::error!(upstream = url, "the upstream has not answered");
        warm_default(&config, &state, false).await;
    }
    start_redis(&config, &state, false);
    let router = crate::http::app(state.clone());
    let background = Background {
        descriptors,
        exporters,
        ..Background::default()
    };
    serve(listeners, state, router, background)
}

/// Reads the descriptor set of `descriptors`, when one is configured, into `state` and follows
/// it: as flag files are followed, and read again at once on `SIGHUP`. A bad or missing file
/// does not stop the start: the registry stays empty (no compiled defaults, no declared types)
/// and `/readyz` says why until a good file appears.
async fn start_descriptors(config: &Config, state: &mut AppState) -> Option<JoinHandle<()>> {
    let path = config.descriptors.clone()?;
    let watcher = Arc::new(DescriptorWatcher::new(path));
    // Watch first, then read: a change between the two is then seen by the watch.
    let task = Arc::clone(&watcher).watch(
        config.reload.clone(),
        hangups(&state.shutdown),
        state.shutdown.clone(),
    );
    let first = Arc::clone(&watcher);
    // A failure is logged by the watcher, and shown on /readyz.
    let _ = tokio::task::spawn_blocking(move || first.reload()).await;
    state.descriptors = Some(watcher);
    Some(tokio::spawn(task))
}

/// A message for each `SIGHUP` the process receives, until `shutdown`. Installing the handler
/// replaces the signal's default action (ending the process).
#[cfg(unix)]
fn hangups(shutdown: &crate::shutdown::Shutdown) -> Option<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            tracing::warn!(%error, "cannot handle SIGHUP; the descriptor set is still followed");
            return None;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let shutdown = shutdown.clone();
    drop(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                received = hangup.recv() => match received {
                    Some(()) => {
                        tracing::info!("SIGHUP: reading the descriptor set again");
                        // One pending request is enough: the read sees the latest file.
                        let _ = tx.try_send(());
                    }
                    None => break,
                },
            }
        }
    }));
    Some(rx)
}

#[cfg(not(unix))]
fn hangups(_shutdown: &crate::shutdown::Shutdown) -> Option<tokio::sync::mpsc::Receiver<()>> {
    None
}

/// Says at start what the admin key settings will not do: an admin key outside root mode
/// opens nothing (there is no admin API), and root mode without one has an admin API that only
/// keys already stored in the database open.
fn warn_about_keys(config: &Config) {
    match (&config.database_url, &config.admin_key) {
        (None, Some(_)) => tracing::warn!(
            "--admin-key (FLAGD_ADMIN_KEY) has no effect here: the admin API is served only \
             with --database"
        ),
        (Some(_), None) => tracing::warn!(
            "no --admin-key (FLAGD_ADMIN_KEY): the admin API accepts only admin keys already \
             stored in the database; create one with `flagd key create` or set an admin key"
        ),
        _ => {}
    }
}

/// File and proxy mode, when the source gave nothing at start: serves what Redis holds for the
/// default environment, as stale, if `redis.url` is set and it holds something.
async fn warm_default(config: &Config, state: &AppState, root_mode: bool) {
    let Some(url) = &config.redis.url else {
        tracing::error!("serving nothing until the source answers");
        return;
    };
    let prefix =
        crate::config::env_prefix(&config.redis.template(root_mode), crate::env::DEFAULT_ENV);
    match crate::warm::serve_env(url, &prefix, &state.default_env).await {
        Ok(Some(flags)) => {
            tracing::warn!(
                prefix,
                flags,
                "serving what Redis holds until the source answers"
            );
        }
        Ok(None) => tracing::error!(
            prefix,
            "Redis holds nothing either; serving nothing until the source answers"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot read Redis either; serving nothing until the source answers")
        }
    }
}

/// Root mode, when the store could not be reached at start: serves every environment Redis
/// holds, as stale, if `redis.url` is set.
async fn warm_root(config: &Config, state: &AppState) {
    let Some(url) = &config.redis.url else {
        tracing::error!("serving nothing until the store answers");
        return;
    };
    match crate::warm::serve_all(url, &config.redis.template(true), &state.envs).await {
        Ok(0) => tracing::error!(
            "Redis holds no environment either; serving nothing until the store answers"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read Redis either; serving nothing until the store answers")
        }
    }
}

/// Root mode with `redis.url`: the SDK keys remembered in Redis, for a start while the store is
/// down. `None`, with a warning, when Redis cannot be read now.
async fn key_ledger(config: &Config) -> Option<Arc<crate::keys::KeyLedger>> {
    let url = config.redis.url.as_ref()?;
    let name = crate::warm::key_table_name(&config.redis.template(true));
    let opened = match flags_store_redis::KeyTable::connect(url, &name).await {
        Ok(table) => crate::keys::KeyLedger::open(table).await,
        Err(e) => Err(e),
    };
    match opened {
        Ok(ledger) => Some(Arc::new(ledger)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the SDK keys remembered in Redis; keys are not remembered there until restart");
            None
        }
    }
}

/// File mode's big segments: read from the Redis at `redis.url`, under the prefix flagd writes
/// the flags under, when one is set (connected on first use, so Redis need not answer at
/// start); otherwise none, and big segments report `NOT_CONFIGURED`.
fn file_big_segments(config: &Config) -> Result<Option<Arc<BigSegments>>, StartError> {
    let Some(url) = &config.redis.url else {
        return Ok(None);
    };
    let prefix = crate::config::env_prefix(&config.redis.template(false), crate::env::DEFAULT_ENV);
    let members = big_segments::RedisMembers::new(url.clone(), prefix);
    let big = BigSegments::new(TracedMembers::wrap(Arc::new(members), Some("redis")))
        .map_err(|e| StartError::Store(e.to_string()))?;
    Ok(Some(Arc::new(big)))
}

/// Starts writing every environment into Redis when `redis.url` is set.
fn start_redis(config: &Config, state: &AppState, root_mode: bool) {
    if let (Some(url), Some(health)) = (&config.redis.url, &state.redis) {
        drop(redis_mirror::spawn(
            Arc::clone(&state.envs),
            url.clone(),
            config.redis.template(root_mode),
            (Arc::clone(health), Arc::clone(&state.metrics)),
            state.shutdown.clone(),
        ));
    }
}

/// Starts the configured exporters and points the state's event intake at them.
async fn start_events(
    config: &Config,
    state: &mut AppState,
) -> Result<Option<Exporters>, StartError> {
    let Some(scheduler) = crate::events::start_exporters(&config.events, &state.metrics)
        .await
        .map_err(StartError::Events)?
    else {
        return Ok(None);
    };
    state.events = Arc::new(Events::new(
        Arc::new(scheduler.clone()),
        config.events.server_evaluations,
    ));
    Ok(Some(Exporters {
        scheduler,
        grace: Duration::from_millis(config.events.shutdown_timeout_ms),
    }))
}

/// Connects to the database at `url` (its scheme picks the backend) and applies the schema
/// migrations that have not run.
pub async fn open_database(url: &str) -> Result<Arc<dyn AdminStore>, StartError> {
    backend::open(url)
        .await
        .map_err(|e| StartError::Store(e.to_string()))
}

/// The bound listeners: HTTP's, and gRPC's when `grpc_listen` is set; with TLS on, the
/// certificate they serve and how its files are followed.
struct Listeners {
    http: TcpListener,
    addr: SocketAddr,
    grpc: Option<(TcpListener, SocketAddr)>,
    tls: Option<(Tls, ReloadConfig)>,
}

async fn bind(config: &Config) -> Result<Listeners, StartError> {
    // Bind first: a taken port should fail before anything else is started.
    let (http, addr) = bind_one(config.listen).await?;
    let grpc = match config.grpc_listen {
        Some(addr) => Some(bind_one(addr).await?),
        None => None,
    };
    // Then the certificate: a bad one stops the start as a taken port does.
    let tls = Tls::from_config(&config.tls)?.map(|tls| (tls, config.reload.clone()));
    Ok(Listeners {
        http,
        addr,
        grpc,
        tls,
    })
}

async fn bind_one(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// What runs beside the accept loop, each part present in the modes that have it.
#[derive(Default)]
struct Background {
    source: Option<Arc<FileSource>>,
    watcher: Option<JoinHandle<()>>,
    sync: Option<JoinHandle<()>>,
    descriptors: Option<JoinHandle<()>>,
    exporters: Option<Exporters>,
}

fn serve(
    listeners: Listeners,
    state: AppState,
    router: crate::http::App,
    background: Background,
) -> Result<RunningServer, StartError> {
    let Background {
        source,
        watcher,
        sync,
        descriptors,
        exporters,
    } = background;
    let limits = Connections::of(&state);
    let (http_tls, grpc_tls, tls_watch) = match &listeners.tls {
        Some((tls, reload)) => (
            Some(tls.http()),
            Some(tls.grpc()),
            Some(tokio::spawn(
                tls.watch(reload.clone(), state.shutdown.clone()),
            )),
        ),
        None => (None, None, None),
    };
    let grpc = match listeners.grpc {
        Some((listener, addr)) => {
            // Compiled defaults come from the descriptor set of `--descriptors`, if any.
            let routes =
                crate::grpc::routes(&state).map_err(|e| StartError::Grpc(e.to_string()))?;
            let tls = grpc_tls.map(|acceptor| (acceptor, limits.handshake_timeout));
            Some((addr, crate::grpc::spawn(listener, &state, routes, tls)))
        }
        None => None,
    };
    let shutdown = state.shutdown.clone();
    let metrics = Arc::clone(&state.metrics);
    let server = tokio::spawn(accept_loop(
        listeners.http,
        http_tls,
        router,
        limits,
        shutdown,
        metrics,
    ));
    Ok(RunningServer {
        addr: listeners.addr,
        grpc,
        state,
        source,
        server,
        watcher,
        sync,
        descriptors,
        exporters,
        tls: tls_watch,
    })
}

/// The largest request head (request line and headers) flagd reads: hyper's read buffer, which a
/// head must fit whole. Past it the answer is 431, whatever the way the bytes arrive.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How connections are held: see [`crate::config::HttpConfig`].
#[derive(Debug, Clone, Copy)]
struct Connections {
    header_read_timeout: Option<Duration>,
    /// With TLS on, the time a client gets to complete its handshake: the header-read timeout,
    /// or [`crate::tls::DEFAULT_HANDSHAKE_TIMEOUT`] when that is off.
    handshake_timeout: Duration,
    max: usize,
    drain: Duration,
}

impl Connections {
    fn of(state: &AppState) -> Connections {
        let http = &state.http;
        // Zero turns the timeout off rather than refusing every request.
        let header_read_timeout =
            (http.header_read_timeout_ms > 0).then(|| http.header_read_timeout());
        Connections {
            header_read_timeout,
            handshake_timeout: header_read_timeout.unwrap_or(crate::tls::DEFAULT_HANDSHAKE_TIMEOUT),
            max: http.max_connections.max(1),
            drain: http.shutdown_drain(),
        }
    }
}

/// Accepts connections until shutdown, each served by `app` on a task of its own.
///
/// Past `limits.max` open connections a new one is closed at once, before a byte is read, so
/// idle sockets cannot exhaust descriptors. Every connection must send a request's headers
/// within the header-read timeout, which hyper also applies to the wait between requests on a
/// kept-alive connection.
///
/// With `tls`, each connection's handshake runs on its own task within the handshake timeout,
/// holding a connection slot meanwhile, so a slow client never holds up the loop.
///
/// Shutdown comes in two steps. For the drain time flagd goes on accepting and answering, and
/// every answer says `Connection: close`, so clients move off their kept-alive connections
/// having had their answers; then it stops accepting, and each connection closes when its
/// requests in flight are answered (idle ones at once).
async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: crate::http::App,
    limits: Connections,
    shutdown: crate::shutdown::Shutdown,
    metrics: Arc<crate::metrics::Metrics>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use std::sync::atomic::{AtomicBool, Ordering};

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max));
    let draining = Arc::new(AtomicBool::new(false));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let drain_until = async {
        shutdown.wait().await;
        draining.store(true, Ordering::Relaxed);
        tokio::time::sleep(limits.drain).await;
    };
    tokio::pin!(drain_until);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut drain_until => break,
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::warn!(
                max = limits.max,
                "connection limit reached; closing a new connection"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let draining = Arc::clone(&draining);
        let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
            let mut app = app.clone();
            let draining = Arc::clone(&draining);
            async move {
                let mut response =
                    tower::Service::call(&mut app, request.map(axum::body::Body::new)).await?;
                if draining.load(Ordering::Relaxed) {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        // Taken now, so that shutdown waits for a connection still in its handshake too.
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        let tls = tls.clone();
        let metrics = Arc::clone(&metrics);
        metrics.connection_opened();
        tokio::spawn(async move {
            // A client that goes away mid-request, or fails its handshake, is its own business.
            match tls {
                None => {
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(connection).await;
                }
                Some(acceptor) => {
                    let handshake =
                        crate::tls::handshake(&acceptor, stream, limits.handshake_timeout);
                    if let Some(stream) = handshake.await {
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        let _ = watcher.watch(connection).await;
                    }
                }
            }
            metrics.connection_closed();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Waits after a failed accept. Errors of one connection (reset before it was accepted) are
/// retried at once; others (out of descriptors, say) after a pause, so the loop does not spin.
pub(crate) async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Starts a server on a free loopback port serving `files`, with the short intervals of
/// [`Config::for_tests`]. Its address is [`RunningServer::url`]; stop it with
/// [`RunningServer::shutdown`].
pub async fn spawn_for_test(files: Vec<PathBuf>) -> Result<RunningServer, StartError> {
    start(Config::for_tests(files)).await
}
