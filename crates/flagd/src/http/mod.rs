//! The HTTP surface: routes, protection layers, and the only place that knows status codes.
//!
//! Layers, outermost first: tracing, metrics (every answer, labelled by route template), then per
//! route group: SDK-key check, concurrency limit (429), timeout (408), body limit (413). SSE
//! streams skip the limit and the timeout; health and metrics routes skip all of them.

pub mod auth;
pub mod error;
mod health;
mod native;
mod ofrep;
mod sdk;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use crate::server::AppState;
use error::ApiError;

/// The route template of a request, stored on its response so the outer metrics layer (which
/// runs before routing) can label it.
#[derive(Clone)]
struct RouteTemplate(String);

/// The router with every route and layer, over `state`. Tests drive it with
/// `tower::ServiceExt::oneshot` without a socket.
pub fn app(state: AppState) -> Router {
    let max_body = state.http.max_body_bytes;
    let max_events_body = state.http.max_events_body_bytes;
    let evaluation = Router::new()
        .route("/v1/evaluate/{flagKey}", post(native::evaluate_one))
        .route("/v1/evaluate", post(native::evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_one))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_all))
        .route("/ofrep/v1/configuration", get(ofrep::configuration))
        .route("/sdk/latest-all", get(sdk::latest_all))
        .layer(DefaultBodyLimit::max(max_body));
    let events = Router::new()
        .route("/bulk", post(sdk::bulk_events))
        .route("/diagnostic", post(sdk::diagnostic_event))
        .layer(DefaultBodyLimit::max(max_events_body));
    let limited = evaluation
        .merge(events)
        .route_layer(middleware::from_fn_with_state(state.clone(), limit))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let streams =
        Router::new()
            .route("/all", get(sdk::stream))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_key,
            ));
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));
    let routes = Router::new()
        .merge(limited)
        .merge(streams)
        .merge(open)
        .route_layer(middleware::from_fn(tag_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    // The outer layers wrap the routed service once. `Router::layer` would wrap every route
    // instead, and axum clones a route's boxed layer stack (one allocation per layer, and again
    // inside each middleware) on every request; around the router, the clone is one Arc.
    let outer = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn_with_state(state, record_metrics))
        .service(routes);
    Router::new().fallback_service(outer)
}

async fn tag_route(path: MatchedPath, request: Request, next: Next) -> Response {
    let template = RouteTemplate(path.as_str().to_owned());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(template);
    response
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or("unmatched", |r| r.0.as_str());
    state.metrics.http_request(
        route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The concurrency limit (429), then the time limit (408). One middleware rather than two,
/// because each route layer costs allocations on every request (see [`app`]).
async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A permit is taken without waiting: a saturated server answers at once rather than queue.
    let Ok(_permit) = state.limiter.clone().try_acquire_owned() else {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "too many concurrent requests; retry later",
        );
        error.retry_after = Some(state.http.retry_after_secs);
        return error.into_response();
    };
    match tokio::time::timeout(state.http.request_timeout(), next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "the request took too long (a slow request body?)",
        )
        .into_response(),
    }
}

async fn not_found(request: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
    .into_response()
}

async fn method_not_allowed(matched: Option<MatchedPath>, request: Request) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response();
    // The path did match a route; label the answer with its template rather than "unmatched".
    if let Some(path) = matched {
        response
            .extensions_mut()
            .insert(RouteTemplate(path.as_str().to_owned()));
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

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
}
