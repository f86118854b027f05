//! The admin REST API (`/api/v1`): environments, flags, segments, the kill set, overrides, the
//! audit log and API keys, over any [`AdminStore`]; plus [`import_file`] and [`export_env`] for
//! LaunchDarkly-format flag files.
//!
//! Every route is declared once, in [`ROUTES`]: the router is built from that table and so is the
//! OpenAPI document served at `/api/v1/openapi.json`, so the two cannot disagree. The store does
//! all validation (nothing invalid is ever stored); this module authenticates, checks a key's
//! scope, checks the keys a path or query names with the store's own checks (so each is refused
//! under the parameter's name), turns HTTP preconditions (`If-Match`) into expected versions,
//! and maps [`flags_store::StoreError`]s to RFC 9457 problem documents ([`Problem`]). It does
//! not know SQL and does not serve evaluations.

mod auth;
mod handlers;
mod members;
mod openapi;
mod patch;
mod problem;
mod routes;
mod transfer;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodFilter, MethodRouter, on};
use flags_store::AdminStore;

pub use auth::Principal;
pub(crate) use auth::authenticate_secret;
pub(crate) use members::{LineFormat, Report as MemberReport, upload_members};
pub use openapi::openapi_document;
pub use patch::merge_patch;
pub use problem::{PROBLEM_JSON, Problem, ProblemDetails, UNAVAILABLE_RETRY_AFTER_SECS};
pub use routes::{Method, Op, ROUTES, Route};
pub use transfer::{
    ImportError, ImportProgress, ImportReport, ImportStep, Warning, export_env, import_document,
    import_document_with_progress, import_file, import_file_with_progress,
};

/// The largest body `POST /environments/{env}/import` accepts (other routes keep axum's 2 MB).
pub const IMPORT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// What the admin routes share: the store and the bootstrap admin key.
#[derive(Clone)]
pub struct AdminState {
    /// Where everything lives.
    pub store: Arc<dyn AdminStore>,
    /// The admin key given on the command line (`--admin-key` / `FLAGD_ADMIN_KEY`), which works
    /// for every environment without being stored; `None` when only stored keys are accepted.
    pub bootstrap_admin_key: Option<String>,
    /// Where uploaded big-segment members are read back for evaluation and copied to Redis;
    /// `None`: uploads go to the store's own [`AdminStore::big_segment_members`], uncopied.
    pub big_segments: Option<Arc<crate::BigSegments>>,
}

impl std::fmt::Debug for AdminState {
    // Keeps the bootstrap key out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field(
                "bootstrap_admin_key",
                &self.bootstrap_admin_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// The admin API router, with paths relative to `/api/v1` (the server nests it there).
///
/// Every route except `GET /openapi.json` requires `Authorization: Bearer <admin key>`.
pub fn admin_router(state: AdminState) -> Router {
    let mut router = Router::new();
    for route in ROUTES.iter().filter(|r| r.op != Op::OpenApi) {
        router = router.route(route.path, method_router(route));
    }
    router = router.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_admin,
    ));
    // The description of the API is public: it holds no data and helps a caller find out how
    // to authenticate. Added after the layer, so the layer does not cover it.
    for route in ROUTES.iter().filter(|r| r.op == Op::OpenApi) {
        router = router.route(route.path, method_router(route));
    }
    router
        .fallback(handlers::no_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}

fn method_router(route: &Route) -> MethodRouter<AdminState> {
    use handlers as h;
    let filter = match route.method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Patch => MethodFilter::PATCH,
        Method::Delete => MethodFilter::DELETE,
    };
    match route.op {
        Op::OpenApi => on(filter, h::openapi),
        Op::CreateEnvironment => on(filter, h::create_environment),
        Op::ListEnvironments => on(filter, h::list_environments),
        Op::GetEnvironment => on(filter, h::get_environment),
        Op::UpdateEnvironment => on(filter, h::update_environment),
        Op::ExportEnvironment => on(filter, h::export_environment),
        // A whole environment in one body can outgrow the default 2 MB limit.
        Op::ImportEnvironment => {
            on(filter, h::import_environment).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT))
        }
        Op::ListFlags => on(filter, h::list_items::<h::Flags>),
        Op::GetFlag => on(filter, h::get_one_item::<h::Flags>),
        Op::PutFlag => on(filter, h::put_one_item::<h::Flags>),
        Op::PatchFlag => on(filter, h::patch_item::<h::Flags>),
        Op::DeleteFlag => on(filter, h::delete_item::<h::Flags>),
        Op::FlagOn => on(filter, h::flag_on),
        Op::FlagOff => on(filter, h::flag_off),
        Op::ArchiveFlag => on(filter, h::archive_item::<h::Flags>),
        Op::UnarchiveFlag => on(filter, h::unarchive_item::<h::Flags>),
        Op::ListSegments => on(filter, h::list_items::<h::Segments>),
        Op::GetSegment => on(filter, h::get_one_item::<h::Segments>),
        Op::PutSegment => on(filter, h::put_one_item::<h::Segments>),
        Op::PatchSegment => on(filter, h::patch_item::<h::Segments>),
        Op::DeleteSegment => on(filter, h::delete_item::<h::Segments>),
        Op::ArchiveSegment => on(filter, h::archive_item::<h::Segments>),
        Op::UnarchiveSegment => on(filter, h::unarchive_item::<h::Segments>),
        Op::UpdateSegmentTargets => on(filter, h::update_segment_targets),
        // Read as a stream, however long: no limit on the whole body.
        Op::UploadMembers => on(filter, members::upload).layer(DefaultBodyLimit::disable()),
        Op::GetMembership => on(filter, members::membership),
        Op::KillFlag => on(filter, h::kill_flag),
        Op::UnkillFlag => on(filter, h::unkill_flag),
        Op::ListKilled => on(filter, h::list_killed),
        Op::ListOverrides => on(filter, h::list_overrides),
        Op::SetOverride => on(filter, h::set_override),
        Op::RemoveOverride => on(filter, h::remove_override),
        Op::Audit => on(filter, h::audit),
        Op::GlobalAudit => on(filter, h::global_audit),
        Op::CreateEnvKey => on(filter, h::create_env_key),
        Op::CreateGlobalKey => on(filter, h::create_global_key),
        Op::ListKeys => on(filter, h::list_keys),
        Op::RevokeKey => on(filter, h::revoke_key),
    }
}
