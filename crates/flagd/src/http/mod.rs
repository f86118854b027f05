//! The HTTP surface: routes, protection, and the only place that knows status codes.
//!
//! Every request passes, outermost first: tracing, then metrics (every answer, labelled by route
//! template), then per route: SDK-key check, concurrency limit (429), time limit (408), body
//! limit (413). SSE streams skip the limits; health and metrics routes skip all of them. The
//! per-route steps and the metrics run inside one wrapper around each handler (`Endpoint`),
//! not as layers: axum clones a route's layer stack and boxes each layer's future on every
//! request, and these steps need neither. The SDK-key check costs nothing when no key is
//! configured.
//!
//! The service is [`App`]: `POST`s to the four evaluation routes go straight to their
//! `Endpoint`, every other request through the axum router. The router holds the same
//! endpoints, so a request it routes there (a flag key that does not decode, say) is answered as
//! before; the direct dispatch only skips the route table, the path parameters and the boxed
//! route future, which cost the hot routes about as much as evaluating a flag.
//!
//! The router records each route as it is given it ([`App::routes`]), and `GET /openapi.json`
//! describes that list (`openapi`), so the document covers what this instance serves in its
//! mode, the admin API included in root mode.

mod answer;
pub(crate) mod auth;
mod body;
pub(crate) mod error;
mod flag_key;
mod health;
mod native;
mod ofrep;
mod openapi;
mod scan;
mod sdk;

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on, post};
use axum::serve::{IncomingStream, Listener};
use bytes::Bytes;
use flags_core::{BigSegmentStore, Context as LdContext};
use futures_util::FutureExt;
use futures_util::future::Either;
use tower::Service;
use tracing::{Instrument, Span};

use crate::big_segments::BigSegments;
use crate::env::Env;
use crate::metrics::{Metrics, RouteMetrics};
use crate::state::AppState;
use crate::telemetry;
use auth::SelectedEnv;
use body::read_body;
use error::ApiError;
pub use openapi::ServedRoute;

/// The label of answers that matched no route.
const UNMATCHED: &str = "unmatched";

/// What a route checks before its handler runs.
#[derive(Clone, Copy)]
enum Guard {
    /// Nothing (health and metrics).
    Open,
    /// The SDK key only (SSE streams).
    Key,
    /// The SDK key, then the concurrency and time limits, then this body limit.
    Limited { max_body: usize },
}

/// The handlers of the hot evaluation routes. Each answers a request whose body has already been
/// read, synchronously: evaluation never waits, so the body is the request's only wait.
#[derive(Clone, Copy)]
enum Direct {
    NativeOne,
    NativeAll,
    OfrepOne,
    OfrepAll,
}

impl Direct {
    /// The path before the flag key, for the single-flag routes.
    fn key_prefix(self) -> Option<&'static str> {
        match self {
            Direct::NativeOne => Some(flag_key::NATIVE_ONE),
            Direct::OfrepOne => Some(flag_key::OFREP_ONE),
            Direct::NativeAll | Direct::OfrepAll => None,
        }
    }

    /// Answers the request. `key` is the flag key of a single-flag route; `big` holds the
    /// memberships big segments may ask for.
    fn answer(
        self,
        state: &AppState,
        env: &Env,
        parts: &Parts,
        key: &str,
        body: Result<Bytes, ApiError>,
        big: Option<&dyn BigSegmentStore>,
    ) -> Response {
        match self {
            Direct::NativeOne => native::evaluate_one(state, env, key, body, big),
            Direct::NativeAll => native::evaluate_all(state, env, body, big),
            Direct::OfrepOne => ofrep::evaluate_one(state, env, key, body, big),
            Direct::OfrepAll => ofrep::evaluate_all(state, env, &parts.headers, body, big),
        }
    }

    /// The context the route's handler will read from `body`, if it reads one.
    fn context_of(self, body: &Bytes) -> Option<LdContext> {
        match self {
            Direct::NativeOne | Direct::NativeAll => native::read_context(Ok(body.clone())).ok(),
            Direct::OfrepOne | Direct::OfrepAll => ofrep::context_of(body.clone()),
        }
    }

    /// [`Direct::answer`] for an environment that serves big segments: the memberships of the
    /// context's keys are fetched first (cache first), then the request is answered as usual.
    async fn answer_with_big_segments(
        self,
        state: &AppState,
        env: &Env,
        parts: &Parts,
        key: &str,
        body: Result<Bytes, ApiError>,
        big: &BigSegments,
    ) -> Response {
        let context = body.as_ref().ok().and_then(|b| self.context_of(b));
        let Some(context) = context else {
            // The handler answers the error.
            return self.answer(state, env, parts, key, body, None);
        };
        let prefetched = big.prefetch(&env.key, &context).await;
        self.answer(state, env, parts, key, body, Some(&prefetched))
    }
}

/// The native API's answer to an evaluation in `env` with `body` (`{"context": ...}`): what
/// `POST /v1/evaluate/{flag_key}` answers, or `POST /v1/evaluate` without a flag key, once the
/// route has picked `env` by its SDK key. For callers that pick the environment themselves (the
/// web UI's evaluate page), so that they show exactly what the API answers.
pub(crate) async fn evaluate_native(
    state: &AppState,
    env: &Env,
    flag_key: Option<&str>,
    body: Bytes,
) -> Response {
    let (which, key) = match flag_key {
        Some(key) => (Direct::NativeOne, key),
        None => (Direct::NativeAll, ""),
    };
    // The native handlers read nothing of the request but its body.
    let (parts, ()) = Request::new(()).into_parts();
    match crate::evaluate::big_segments(state, env) {
        Some(big) => {
            which
                .answer_with_big_segments(state, env, &parts, key, Ok(body), big)
                .await
        }
        None => which.answer(state, env, &parts, key, Ok(body), None),
    }
}

/// Where a single-flag route finds its flag key once the body has been read.
enum KeySource {
    /// No key: a route over all flags.
    None,
    /// The path after this prefix ([`flag_key::decode`]).
    Path(&'static str),
    /// A path that does not decode, read by axum's `Path` extractor.
    Extracted(String),
}

/// One route's protection and metrics, made once when the router is built.
struct Endpoint {
    state: AppState,
    /// The route template, which names the request's span.
    route: &'static str,
    metrics: RouteMetrics,
    guard: Guard,
}

impl Endpoint {
    fn new(state: &AppState, route: &'static str, guard: Guard) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            state: state.clone(),
            route,
            metrics: state.metrics.route(route),
            guard,
        })
    }

    /// Runs `handler` behind the route's guard, traces the request and counts the answer.
    async fn serve<F, Fut>(&self, request: Request, handler: F) -> Response
    where
        F: FnOnce(Request, Option<Arc<Env>>) -> Fut,
        Fut: Future<Output = Response>,
    {
        let started = Instant::now();
        let method = request.method().clone();
        let uri = requests_logged().then(|| request.uri().clone());
        let span = request_span(
            request.method(),
            request.uri(),
            request.version(),
            request.headers(),
            self.route,
        );
        let response = self
            .guarded(request, handler)
            .instrument(span.clone())
            .await;
        self.finish(&span, &method, uri.as_ref(), &response, started);
        response
    }

    async fn guarded<F, Fut>(&self, mut request: Request, handler: F) -> Response
    where
        F: FnOnce(Request, Option<Arc<Env>>) -> Fut,
        Fut: Future<Output = Response>,
    {
        if let Guard::Open = self.guard {
            return handler(request, None).await;
        }
        let selected = match self.check_key(request.headers()).await {
            Ok(selected) => selected,
            Err(response) => return response,
        };
        telemetry::record_environment(&selected.as_deref().unwrap_or(&self.state.default_env).key);
        let Guard::Limited { max_body } = self.guard else {
            return handler(request, selected).await;
        };
        // A permit is taken without waiting: a saturated server answers at once rather than
        // queue.
        let Ok(_permit) = self.state.limiter.try_acquire() else {
            return self.too_many_requests();
        };
        // axum's body extractors find the limit in the request.
        DefaultBodyLimit::max(max_body).apply(&mut request);
        // The time limit runs from here.
        let deadline = tokio::time::Instant::now() + self.state.http.request_timeout();
        within(deadline, pin!(handler(request, selected)))
            .await
            .unwrap_or_else(request_timeout)
    }

    /// Counts `response` and writes the trace events of its end, and its line in the request
    /// log when `uri` is given (the log is on).
    fn finish(
        &self,
        span: &Span,
        method: &Method,
        uri: Option<&Uri>,
        response: &Response,
        started: Instant,
    ) {
        let latency = started.elapsed();
        self.metrics
            .record(method, response.status(), latency.as_secs_f64());
        trace_response(span, response.status(), latency);
        if let Some(uri) = uri {
            log_request(method, uri, response.status(), latency);
        }
    }

    /// The SDK-key check: the environment a root-mode key selects, or the answer refusing it.
    async fn check_key(&self, headers: &HeaderMap) -> Result<Option<Arc<Env>>, Response> {
        // Root mode may wait for the store. That wait is boxed: in place, its future would
        // enlarge every request's future, which is allocated and moved for each request.
        // In file mode the configured keys decide at once, as `check_key` would.
        if !self.state.mode.is_root() {
            if self.state.keys.allows(headers) {
                Ok(None)
            } else {
                Err(auth::unauthorized(headers))
            }
        } else {
            Box::pin(auth::check_key(&self.state, headers)).await
        }
    }

    /// 429, for a request over the concurrency limit.
    fn too_many_requests(&self) -> Response {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "too many concurrent requests; retry later",
        );
        error.retry_after = Some(self.state.http.retry_after_secs);
        error.into_response()
    }
}

/// 408, for a request whose handling outlived the time limit.
fn request_timeout() -> Response {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "REQUEST_TIMEOUT",
        "the request took too long (a slow request body?)",
    )
    .into_response()
}

/// The span of one request ([`telemetry::request_span`]: as `tower_http`'s default
/// `TraceLayer` makes it, so log filters and formats stay as they were), with its event that
/// the request has started. `route` is the route's template.
fn request_span(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    route: &str,
) -> Span {
    let span = telemetry::request_span(method, uri, version, headers, route);
    span.in_scope(|| {
        tracing::debug!(
            target: "tower_http::trace::on_request",
            "started processing request"
        );
    });
    span
}

/// Runs `work` under a time limit: `None` once `deadline` has passed. Most work (a request
/// whose body has already arrived) finishes on its first poll, so the timer, a trip through the
/// runtime's timer wheel and a larger future, is only set, boxed, for work that waits. The work
/// is pinned by the caller, so that this future does not hold a second copy of it.
async fn within<F: Future>(
    deadline: tokio::time::Instant,
    mut work: Pin<&mut F>,
) -> Option<F::Output> {
    let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(done) => Some(done),
        Poll::Pending => Box::pin(tokio::time::timeout_at(deadline, work)).await.ok(),
    }
}

/// The events `tower_http`'s default `TraceLayer` writes when a request starts and ends: every
/// answer at debug level, and 5xx answers as failures at error level.
fn trace_response(span: &Span, status: StatusCode, latency: Duration) {
    if telemetry::exporting() {
        telemetry::end_request(span, status);
    }
    let _entered = span.enter();
    let latency = Millis(latency);
    tracing::debug!(
        target: "tower_http::trace::on_response",
        %latency,
        status = i32::from(status.as_u16()),
        "finished processing request"
    );
    if status.is_server_error() {
        tracing::error!(
            target: "tower_http::trace::on_failure",
            classification = %format_args!("Status code: {status}"),
            %latency,
            "response failed"
        );
    }
}

/// Whether the request log is on: the log filter lets its info lines through. As cheap as a
/// disabled event, so a request reads nothing for the log when it is off.
#[inline]
fn requests_logged() -> bool {
    tracing::enabled!(target: telemetry::REQUEST_LOG_TARGET, tracing::Level::INFO)
}

/// The request log's line for one answered request: `answered method=GET path=/healthz
/// status=200 latency_ms=0.04`. The path only: queries can carry what does not belong in logs.
fn log_request(method: &Method, uri: &Uri, status: StatusCode, latency: Duration) {
    tracing::info!(
        target: telemetry::REQUEST_LOG_TARGET,
        method = %method,
        path = %uri.path(),
        status = status.as_u16(),
        latency_ms = telemetry::millis(latency.as_secs_f64()),
        "answered"
    );
}

/// A latency as `tower_http` writes it: whole milliseconds.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// An evaluation route: its endpoint and which handler serves it.
#[derive(Clone)]
struct DirectRoute {
    endpoint: Arc<Endpoint>,
    which: Direct,
    max_body: usize,
}

impl DirectRoute {
    /// A route limited as every evaluation route is, reading at most `max_body` bytes of body.
    fn new(state: &AppState, route: &'static str, max_body: usize, which: Direct) -> DirectRoute {
        DirectRoute {
            endpoint: Endpoint::new(state, route, Guard::Limited { max_body }),
            which,
            max_body,
        }
    }

    /// Serves `request` as [`Endpoint::serve`] serves a handler: traced, then the SDK key, the
    /// concurrency limit, the body under the time limit, and the answer, which is counted. Written
    /// flat rather than as nested `async fn`s: this future is allocated for every request, and
    /// each level of nesting would hold and move its own copy of the request.
    ///
    /// `key_decodes` says the caller has seen the path decode to a flag key ([`Hot::route`]).
    fn serve(
        self,
        request: Request,
        key_decodes: bool,
    ) -> impl Future<Output = Response> + Send + 'static {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        let span = request_span(
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            self.endpoint.route,
        );
        // The request's parts are held once, by this block.
        async move {
            let response = self
                .answer(&mut parts, body, started, key_decodes)
                .instrument(span.clone())
                .await;
            let uri = requests_logged().then_some(&parts.uri);
            self.endpoint
                .finish(&span, &parts.method, uri, &response, started);
            response
        }
    }

    /// The guarded part of [`DirectRoute::serve`]: everything but the tracing and the counting.
    async fn answer(
        &self,
        parts: &mut Parts,
        body: Body,
        started: Instant,
        key_decodes: bool,
    ) -> Response {
        let endpoint = &*self.endpoint;
        let state = &endpoint.state;
        let selected = match endpoint.check_key(&parts.headers).await {
            Ok(selected) => selected,
            Err(response) => return response,
        };
        let key = match self.which.key_prefix() {
            None => KeySource::None,
            Some(prefix) if key_decodes || flag_key::decode(parts.uri.path(), prefix).is_some() => {
                KeySource::Path(prefix)
            }
            // Only a request the router sent here; boxed, as it is rare.
            Some(_) => match Box::pin(flag_key::extract(parts, state)).await {
                Ok(key) => KeySource::Extracted(key),
                Err(rejection) => return rejection,
            },
        };
        // The body is the only wait. It must arrive within the body-read time (and the request's
        // time limit), both from the request's start, and it is read before a concurrency
        // permit is taken: a client slow to send its body holds no permit that evaluations
        // need, and is cut off long before the request limit.
        let limit = state
            .http
            .request_timeout()
            .min(state.http.body_read_timeout());
        let deadline = tokio::time::Instant::from_std(started) + limit;
        let Some(body) = within(deadline, pin!(read_body(body, self.max_body))).await else {
            return request_timeout();
        };
        // A permit is taken without waiting, as for every limited route; it covers the answer.
        let Ok(_permit) = state.limiter.try_acquire() else {
            return endpoint.too_many_requests();
        };
        let env = selected.as_deref().unwrap_or(&state.default_env);
        telemetry::record_environment(&env.key);
        let decoded;
        let key = match &key {
            KeySource::None => "",
            KeySource::Path(prefix) => {
                // A path seen to decode, here or by the front service.
                decoded = flag_key::decode(parts.uri.path(), prefix);
                decoded.as_deref().unwrap_or_default()
            }
            KeySource::Extracted(key) => key,
        };
        match crate::evaluate::big_segments(state, env) {
            Some(big) => {
                // Boxed: only environments serving big segments wait here, and in place the
                // wait would enlarge every request's future.
                let deadline =
                    tokio::time::Instant::from_std(started) + state.http.request_timeout();
                let (which, parts) = (self.which, &*parts);
                Box::pin(async move {
                    let answer = which.answer_with_big_segments(state, env, parts, key, body, big);
                    within(deadline, pin!(answer))
                        .await
                        .unwrap_or_else(request_timeout)
                })
                .await
            }
            None => self.which.answer(state, env, parts, key, body, None),
        }
    }

    /// The route for the router, for the requests [`App`] does not dispatch itself.
    fn method_router(&self) -> MethodRouter {
        let route = self.clone();
        post(move |request: Request| route.clone().serve(request, false))
    }
}

/// The four evaluation routes, dispatched without the router; and the list of every route,
/// for [`App::routes`], kept here, in the `Arc` each clone of the service already shares, so
/// that it costs requests nothing.
struct Hot {
    native_one: DirectRoute,
    native_all: DirectRoute,
    ofrep_one: DirectRoute,
    ofrep_all: DirectRoute,
    routes: Vec<ServedRoute>,
}

impl Hot {
    /// The route a `POST` to `path` takes, when it is one of the evaluation routes and the
    /// router would send it there with its key decoded ([`flag_key::decode`] is how the
    /// handlers read the key).
    fn route(&self, path: &str) -> Option<&DirectRoute> {
        if path == "/v1/evaluate" {
            Some(&self.native_all)
        } else if path == "/ofrep/v1/evaluate/flags" {
            Some(&self.ofrep_all)
        } else if flag_key::decode(path, flag_key::NATIVE_ONE).is_some() {
            Some(&self.native_one)
        } else if flag_key::decode(path, flag_key::OFREP_ONE).is_some() {
            Some(&self.ofrep_one)
        } else {
            None
        }
    }
}

/// flagd's HTTP service: the evaluation routes served directly, everything else by the axum
/// router (see the module documentation). Serve it with `axum::serve`; tests drive it with
/// `tower::ServiceExt::oneshot` without a socket.
#[derive(Clone)]
pub struct App {
    router: Router,
    hot: Arc<Hot>,
}

impl App {
    /// Every route the service answers, method and path template (`{name}` for a parameter),
    /// in the order the router was given them: what `GET /openapi.json` describes.
    pub fn routes(&self) -> &[ServedRoute] {
        &self.hot.routes
    }
}

impl Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
        <Router as Service<Request>>::Future,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.method() == Method::POST
            && let Some(route) = self.hot.route(request.uri().path())
        {
            let route = route.clone();
            return Either::Left(Box::pin(route.serve(request, true).map(Ok)));
        }
        Either::Right(self.router.call(request))
    }
}

/// What `axum::serve` asks for each connection: the service itself.
impl<L: Listener> Service<IncomingStream<'_, L>> for App {
    type Response = App;
    type Error = Infallible;
    type Future = std::future::Ready<Result<App, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: IncomingStream<'_, L>) -> Self::Future {
        std::future::ready(Ok(self.clone()))
    }
}

/// A route served by an ordinary axum handler, which finds the selected environment with
/// [`auth::EnvOf`].
fn handler<H, T>(
    state: &AppState,
    route: &'static str,
    guard: Guard,
    method: MethodFilter,
    handler: H,
) -> MethodRouter
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let endpoint = Endpoint::new(state, route, guard);
    on(method, move |request: Request| {
        let endpoint = Arc::clone(&endpoint);
        let handler = handler.clone();
        async move {
            endpoint
                .serve(request, |mut request, selected| {
                    if let Some(env) = selected {
                        request.extensions_mut().insert(SelectedEnv(env));
                    }
                    handler.call(request, endpoint.state.clone())
                })
                .await
        }
    })
}

/// The service with every route and layer, over `state`.
pub fn app(state: AppState) -> App {
    app_with_admin(state, None)
}

/// [`app`], with `admin` (the admin API, made by [`crate::admin::admin_router`] from
/// [`crate::admin::ROUTES`]) nested under `/api/v1` inside the same tracing and metrics; its
/// answers are labelled with its own route templates.
pub fn app_with_admin(state: AppState, admin: Option<Router>) -> App {
    app_with_ui(state, admin, None)
}

/// [`app_with_admin`], with `ui` (the web UI, made by [`crate::ui::ui_router`]) nested under
/// `/ui`.
pub fn app_with_ui(state: AppState, admin: Option<Router>, ui: Option<Router>) -> App {
    let evaluation = Guard::Limited {
        max_body: state.http.max_body_bytes,
    };
    let max_body = state.http.max_body_bytes;
    let native_one = DirectRoute::new(
        &state,
        "/v1/evaluate/{flagKey}",
        max_body,
        Direct::NativeOne,
    );
    let native_all = DirectRoute::new(&state, "/v1/evaluate", max_body, Direct::NativeAll);
    let ofrep_one = DirectRoute::new(
        &state,
        "/ofrep/v1/evaluate/flags/{key}",
        max_body,
        Direct::OfrepOne,
    );
    let ofrep_all = DirectRoute::new(
        &state,
        "/ofrep/v1/evaluate/flags",
        max_body,
        Direct::OfrepAll,
    );
    let events = Guard::Limited {
        max_body: state.http.max_events_body_bytes,
    };
    let mut routes = Routes::new(&state);
    for route in [&native_one, &native_all, &ofrep_one, &ofrep_all] {
        routes.direct(route);
    }
    routes.get("/ofrep/v1/configuration", evaluation, ofrep::configuration);
    routes.get("/sdk/latest-all", evaluation, sdk::latest_all);
    routes.post("/bulk", events, sdk::bulk_events);
    routes.post("/diagnostic", events, sdk::diagnostic_event);
    routes.get("/all", Guard::Key, sdk::stream);
    routes.get("/healthz", Guard::Open, health::healthz);
    routes.get("/readyz", Guard::Open, health::readyz);
    routes.get("/metrics", Guard::Open, health::metrics);
    if admin.is_some() {
        // The admin router is built from this table, so it serves exactly these routes.
        for route in crate::admin::ROUTES {
            routes.served.push(ServedRoute {
                method: route.method.to_http(),
                path: format!("{}{}", openapi::ADMIN_PREFIX, route.path),
            });
        }
    }
    routes.document();
    let Routes {
        router,
        served: routes,
        ..
    } = routes;
    let fallback = Endpoint::new(&state, UNMATCHED, Guard::Open);
    let metrics = Arc::clone(&state.metrics);
    let mut router = router
        .fallback(move |request: Request| {
            let fallback = Arc::clone(&fallback);
            async move {
                fallback
                    .serve(request, |request, _| async move { not_found(&request) })
                    .await
            }
        })
        .method_not_allowed_fallback(move |matched: Option<MatchedPath>, request: Request| {
            method_not_allowed(Arc::clone(&metrics), matched, request)
        });
    if let Some(admin) = admin {
        // The admin API is not a hot path: one middleware around its router traces, labels and
        // counts its answers, including its own fallbacks.
        let admin = admin.layer(middleware::from_fn_with_state(state, record_admin));
        router = router.nest(openapi::ADMIN_PREFIX, admin);
    }
    if let Some(ui) = ui {
        // The UI's home is `/ui`; `/ui/` leads there too.
        router = router.nest("/ui", ui).route(
            "/ui/",
            axum::routing::get(|| async { axum::response::Redirect::permanent("/ui") }),
        );
    }
    App {
        router,
        hot: Arc::new(Hot {
            native_one,
            native_all,
            ofrep_one,
            ofrep_all,
            routes,
        }),
    }
}

/// The router being built, and every route it has been given, in order.
struct Routes<'a> {
    state: &'a AppState,
    router: Router,
    served: Vec<ServedRoute>,
}

impl<'a> Routes<'a> {
    fn new(state: &'a AppState) -> Routes<'a> {
        Routes {
            state,
            router: Router::new(),
            served: Vec::new(),
        }
    }

    /// Adds `route`, which answers `method` alone, at `path`.
    fn add(&mut self, method: Method, path: &str, route: MethodRouter) {
        self.router = std::mem::take(&mut self.router).route(path, route);
        self.served.push(ServedRoute {
            method,
            path: path.to_owned(),
        });
    }

    /// An evaluation route, for the requests [`App`] leaves to the router.
    fn direct(&mut self, route: &DirectRoute) {
        self.add(Method::POST, route.endpoint.route, route.method_router());
    }

    /// A `GET` route served by `h` behind `guard`.
    fn get<H, T>(&mut self, path: &'static str, guard: Guard, h: H)
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let route = handler(self.state, path, guard, MethodFilter::GET, h);
        self.add(Method::GET, path, route);
    }

    /// A `POST` route served by `h` behind `guard`.
    fn post<H, T>(&mut self, path: &'static str, guard: Guard, h: H)
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let route = handler(self.state, path, guard, MethodFilter::POST, h);
        self.add(Method::POST, path, route);
    }

    /// `GET /openapi.json`, the description of every route added so far and of itself: added
    /// last, once the list is whole. The document is written once, here; each request gets
    /// the same bytes.
    fn document(&mut self) {
        const PATH: &str = openapi::DOCUMENT_PATH;
        self.served.push(ServedRoute {
            method: Method::GET,
            path: PATH.to_owned(),
        });
        let document = Bytes::from(openapi::document(self.state, &self.served).to_string());
        let serve = move || {
            let document = document.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], document).into_response() }
        };
        let route = handler(self.state, PATH, Guard::Open, MethodFilter::GET, serve);
        self.router = std::mem::take(&mut self.router).route(PATH, route);
    }
}

/// Traces an admin API request, as every other route's, and counts its answer under its route
/// template.
async fn record_admin(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let uri = requests_logged().then(|| request.uri().clone());
    let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let span = request_span(
        request.method(),
        request.uri(),
        request.version(),
        request.headers(),
        route,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let latency = started.elapsed();
    state.metrics.http_request(
        route,
        &method,
        response.status().as_u16(),
        latency.as_secs_f64(),
    );
    trace_response(&span, response.status(), latency);
    if let Some(uri) = uri {
        log_request(&method, &uri, response.status(), latency);
    }
    response
}

fn not_found(request: &Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
    .into_response()
}

/// 405 on a route that exists; counted under the route's template.
async fn method_not_allowed(
    metrics: Arc<Metrics>,
    matched: Option<MatchedPath>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let span = request_span(
        request.method(),
        request.uri(),
        request.version(),
        request.headers(),
        route,
    );
    let response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response();
    let latency = started.elapsed();
    metrics.http_request(
        route,
        request.method(),
        response.status().as_u16(),
        latency.as_secs_f64(),
    );
    trace_response(&span, response.status(), latency);
    if requests_logged() {
        log_request(request.method(), request.uri(), response.status(), latency);
    }
    response
}

/// Whether `If-None-Match` lists `etag` (or `*`). Weak tags match their strong form, as the
/// weak comparison that RFC 9110 prescribes for `If-None-Match`.
fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|list| {
            list.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
        })
}

/// 304 Not Modified with the tag and no body.
fn not_modified(etag: &str) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(value) = etag.parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// See [`crate::fuzzing::read_evaluation_body`].
pub(crate) fn read_evaluation_body(bytes: &[u8]) -> Result<(), String> {
    let read = body::ContextBody::parse(bytes);
    let reference = serde_json::from_slice::<body::ContextBody>(bytes);
    let same = match (&read, &reference) {
        (Ok(read), Ok(reference)) => read == reference,
        (Err(read), Err(reference)) => read.to_string() == reference.to_string(),
        _ => false,
    };
    if !same {
        return Err(format!(
            "read as {read:?}, but serde_json alone reads {reference:?}"
        ));
    }
    // Each route then makes its context, which goes back to the spare buffers when dropped, as
    // at the end of a request.
    let body = Bytes::copy_from_slice(bytes);
    drop(native::read_context(Ok(body.clone())).map(scan::Recycled::new));
    drop(ofrep::context_of(body).map(scan::Recycled::new));
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::HeaderValue;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::source::FileSource;

    /// Status, headers that matter and body of `request` served by `service`.
    async fn answer<S>(service: S, method: &Method, uri: &str) -> (StatusCode, String, Vec<u8>)
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"context":{"kind":"user","key":"u1"}}"#))
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, body.to_vec())
    }

    #[tokio::test]
    async fn direct_dispatch_answers_exactly_as_the_router() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flags.json");
        std::fs::write(
            &file,
            r#"{"flagValues": {"plain": true, "a/b c": "slash", "café": 3}}"#,
        )
        .unwrap();
        let config = Config::for_tests(vec![file.clone()]);
        let state = AppState::new(&config);
        let source = FileSource::new(
            vec![file],
            Arc::clone(&state.store),
            Arc::clone(&state.metrics),
        );
        source.reload();
        let app = app(state);
        let mut dispatched = 0;
        for prefix in ["/v1/evaluate", "/ofrep/v1/evaluate/flags"] {
            for rest in [
                "",
                "/",
                "/plain",
                "/plain/",
                "/a%2Fb%20c",
                "/caf%C3%A9",
                "/missing",
                "/%FF",
                "/%",
                "/a/b",
                "//plain",
                "/plain?x=1",
                "?x=1",
            ] {
                let uri = format!("{prefix}{rest}");
                for method in [Method::POST, Method::GET, Method::PUT] {
                    if method == Method::POST
                        && app.hot.route(uri.split('?').next().unwrap()).is_some()
                    {
                        dispatched += 1;
                    }
                    let direct = answer(app.clone(), &method, &uri).await;
                    let routed = answer(app.router.clone(), &method, &uri).await;
                    assert_eq!(direct, routed, "{method} {uri}");
                }
            }
        }
        // Per prefix: the bulk route with and without a query, and the keys `plain` (with and
        // without a query), `a/b c`, `café`, `missing` and `%`.
        assert_eq!(dispatched, 16);
        let (status, _, body) = answer(app, &Method::POST, "/v1/evaluate/a%2Fb%20c").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains(r#""value":"slash""#)
        );
    }

    #[test]
    fn if_none_match_forms() {
        let check = |header: &'static str, expected: bool| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(header));
            assert_eq!(etag_matches(&h, "\"abc\""), expected, "{header}");
        };
        check("\"abc\"", true);
        check("W/\"abc\"", true);
        check("\"x\", \"abc\"", true);
        check("*", true);
        check("\"abcd\"", false);
        check("abc", false);
        assert!(!etag_matches(&HeaderMap::new(), "\"abc\""));
    }

    /// The future of an evaluation request is allocated for every request: it must stay within
    /// the sizes the allocator serves from its per-thread cache (glibc's ends at 1032 bytes), and
    /// hold the request once, not once per level of `async fn`.
    #[test]
    fn the_evaluation_future_stays_small() {
        let config = Config::for_tests(vec![]);
        let state = AppState::new(&config);
        let route = DirectRoute::new(&state, "/v1/evaluate/{flagKey}", 1024, Direct::NativeOne);
        let future = route
            .serve(Request::new(Body::empty()), true)
            .map(Ok::<Response, Infallible>);
        let size = size_of_val(&future);
        assert!(size <= 900, "the evaluation future grew to {size} bytes");
    }
}
