//! The admin web UI at `/ui`: the page an on-call engineer or a product manager opens to see
//! what is live, change targeting, kill a flag and see who changed what.
//!
//! Served in PostgreSQL (root) mode only, from this module and the assets compiled into the
//! binary. Pages are rendered on the server ([`maud`]) as plain HTML forms that work without
//! JavaScript (post, then redirect to a page); `assets/app.js` only enhances them (live updates,
//! the rollout total, upload progress, confirmation dialogs). Nothing is loaded from elsewhere.
//!
//! The UI writes through the same [`flags_store::AdminStore`] the admin API uses, with the
//! signed-in key's [`Actor`](flags_store::Actor), so every change is validated, versioned and
//! audited exactly as one made through the API. It knows neither SQL nor the evaluation engine:
//! evaluations are asked of the same code the native API answers with.
//!
//! Sign-in takes an admin key, which stays on the server: the browser holds only a random
//! session id in an `HttpOnly`, `SameSite=Strict` cookie (the `session` module). Every change is a POST
//! carrying the session's CSRF token, and is refused when the request comes from another site.

// A refusal here is a whole page, made at most once per request: its size does not matter.
#![allow(clippy::result_large_err)]

mod assets;
mod audit;
mod diff;
mod editor;
mod evaluate;
mod flag;
mod flags;
mod layout;
mod live;
mod page;
mod segments;
mod session;
mod settings;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};

use crate::admin::AdminState;
use crate::state::AppState;

pub use session::Sessions;

/// What the UI's handlers share.
#[derive(Clone)]
pub struct UiState {
    /// The store and the bootstrap key, as the admin API has them.
    pub admin: AdminState,
    /// The served environments, for evaluations and live updates.
    pub app: AppState,
    /// Signed-in browsers.
    pub sessions: Arc<Sessions>,
    /// TLS is on: cookies are `Secure` and named with the `__Host-` prefix.
    pub secure: bool,
}

impl std::fmt::Debug for UiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiState")
            .field("admin", &self.admin)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

/// The UI's router, with paths relative to `/ui` (the server nests it there).
pub fn ui_router(state: UiState) -> Router {
    Router::new()
        .route("/", get(flags::home))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/assets/{name}", get(assets::serve))
        .route("/envs", post(flags::create_environment))
        .route("/envs/{env}/flags", get(flags::list).post(flags::create))
        .route(
            "/envs/{env}/flags/{key}/kill",
            get(flags::kill_confirmation).post(flags::kill),
        )
        .route("/envs/{env}/flags/{key}/unkill", post(flags::unkill))
        .route(
            "/envs/{env}/segments",
            get(segments::list).post(segments::create),
        )
        .route(
            "/envs/{env}/segments/{key}",
            get(segments::detail).post(segments::edit),
        )
        // Read as a stream, however long: no limit on the whole body.
        .route(
            "/envs/{env}/segments/{key}/members",
            post(segments::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/envs/{env}/evaluate", get(evaluate::page))
        .route(
            "/envs/{env}/settings",
            get(settings::page).post(settings::save),
        )
        .route("/envs/{env}/live", get(live::live))
        .route(
            "/envs/{env}/flags/{key}",
            get(flag::detail).post(flag::save_targeting),
        )
        .route("/envs/{env}/flags/{key}/json", post(flag::save_json))
        .route("/envs/{env}/flags/{key}/state", post(flag::set_on))
        .route(
            "/envs/{env}/flags/{key}/overrides",
            post(flag::add_override),
        )
        .route(
            "/envs/{env}/flags/{key}/overrides/remove",
            post(flag::remove_override),
        )
        .route("/envs/{env}/flags/{key}/audit", get(audit::flag_log))
        .route("/envs/{env}/audit", get(audit::env_log))
        .fallback(layout::not_found)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Headers on every answer of the UI: nothing from elsewhere runs or frames it, and pages are
/// never cached (assets set their own caching).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
