//! The admin route handlers. Each turns HTTP into one store call (two for merge patches and
//! `If-Match: *`) and the store's answer back into HTTP.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flags_store::{
    AdminStore, ApiKey, ApiKeyKind, AuditQuery, EnvironmentUpdate, ListFilter, NewApiKey,
    NewEnvironment, OverrideKey, SegmentTargetsUpdate, StoreError, StoredFlag, StoredSegment,
    validate,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::AdminState;
use super::auth::Principal;
use super::openapi::openapi_document;
use super::patch::merge_patch;
use super::problem::Problem;
use super::transfer::{Warning, export_env, import_document};

type Answer = Result<Response, Problem>;

/// Audit entries returned when the request names no limit.
const DEFAULT_AUDIT_LIMIT: usize = 100;
/// The most audit entries one request returns.
const MAX_AUDIT_LIMIT: usize = 1000;

// ------------------------------------------------------------------ request parts

/// A JSON request body; anything unreadable or not JSON is a 400 problem.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody, Problem> {
        read_json(request, state).await.map(JsonBody)
    }
}

/// A JSON merge patch body: `Content-Type: application/merge-patch+json` is required, so a
/// client that meant to send a whole document is not silently treated as patching.
pub struct MergePatchBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for MergePatchBody {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<MergePatchBody, Problem> {
        let media_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        if media_type.as_deref() != Some("application/merge-patch+json") {
            return Err(Problem::unsupported_media_type(
                "application/merge-patch+json (RFC 7386)",
            ));
        }
        read_json(request, state).await.map(MergePatchBody)
    }
}

async fn read_json<S: Send + Sync>(request: Request, state: &S) -> Result<Value, Problem> {
    let bytes = Bytes::from_request(request, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                r.status(),
                "payload-too-large",
                "the request body is too large",
            )
        } else {
            Problem::new(
                r.status(),
                "unreadable-body",
                format!("cannot read the request body: {r}"),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::invalid("", "a JSON request body is required"));
    }
    serde_json::from_slice(&bytes).map_err(Problem::malformed_json)
}

/// Reads a typed body, naming the field path of the first problem.
fn from_body<T: DeserializeOwned>(value: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Problem::invalid(path, e.into_inner().to_string())
    })
}

/// What `If-Match` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precondition {
    /// No `If-Match`.
    Absent,
    /// `If-Match: *`: the item must exist, whatever its version.
    Exists,
    /// `If-Match: "<version>"`.
    Version(u64),
    /// An entity tag this server never issues, which matches nothing.
    Never,
}

impl Precondition {
    fn from_headers(headers: &HeaderMap) -> Result<Precondition, Problem> {
        let Some(value) = headers.get(header::IF_MATCH) else {
            return Ok(Precondition::Absent);
        };
        let value = value
            .to_str()
            .map_err(|_| Problem::invalid("If-Match", "the header is not ASCII"))?
            .trim();
        if value == "*" {
            return Ok(Precondition::Exists);
        }
        // A list of tags matches when any does; this server's tags are versions.
        let mut result = Precondition::Never;
        for tag in value.split(',') {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            let tag = tag
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(tag);
            if let Ok(version) = tag.parse::<u64>()
                && result == Precondition::Never
            {
                result = Precondition::Version(version);
            }
        }
        Ok(result)
    }

    fn given(self) -> bool {
        self != Precondition::Absent
    }
}

// ------------------------------------------------------------------ flags and segments alike

/// Flags and segments share every route shape; this says which one a route is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Flag,
    Segment,
}

/// A stored flag or segment as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    key: String,
    version: u64,
    archived: bool,
    updated_at: u64,
    doc: Value,
    /// In the answers of writes only, and only when there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<Warning>,
}

impl Item {
    /// A flag as a write answers it: with the warnings about it.
    fn written_flag(flag: StoredFlag) -> Item {
        let warnings = flag.warnings();
        Item::from(flag).with_warnings(warnings)
    }

    /// A segment as a write answers it: with the warnings about it.
    fn written_segment(segment: StoredSegment) -> Item {
        let warnings = segment.warnings();
        Item::from(segment).with_warnings(warnings)
    }

    fn with_warnings(mut self, problems: Vec<flags_core::Problem>) -> Item {
        self.warnings = problems
            .into_iter()
            .map(|p| Warning {
                path: p.path,
                message: p.message,
            })
            .collect();
        self
    }
}

impl From<StoredFlag> for Item {
    fn from(f: StoredFlag) -> Item {
        Item {
            key: f.key,
            version: f.version,
            archived: f.archived,
            updated_at: f.updated_at,
            doc: f.doc,
            warnings: Vec::new(),
        }
    }
}

impl From<StoredSegment> for Item {
    fn from(s: StoredSegment) -> Item {
        Item {
            key: s.key,
            version: s.version,
            archived: s.archived,
            updated_at: s.updated_at,
            doc: s.doc,
            warnings: Vec::new(),
        }
    }
}

async fn get_item(
    store: &dyn AdminStore,
    kind: Kind,
    env: &str,
    key: &str,
) -> Result<Item, StoreError> {
    Ok(match kind {
        Kind::Flag => store.get_flag(env, key).await?.into(),
        Kind::Segment => store.get_segment(env, key).await?.into(),
    })
}

async fn put_item(
    state: &AdminState,
    principal: &Principal,
    kind: Kind,
    (env, key): (&str, &str),
    doc: Value,
    expected: Option<u64>,
) -> Result<Item, StoreError> {
    let (store, actor) = (&state.store, &principal.actor);
    Ok(match kind {
        Kind::Flag => Item::written_flag(store.put_flag(actor, env, key, doc, expected).await?),
        Kind::Segment => {
            Item::written_segment(store.put_segment(actor, env, key, doc, expected).await?)
        }
    })
}

fn item_answer(status: StatusCode, item: &Item) -> Response {
    let mut response = (status, Json(item)).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", item.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The expected version for writes where no `If-Match` means "whatever version it has".
async fn expected_or_any(
    state: &AdminState,
    kind: Kind,
    env: &str,
    key: &str,
    precondition: Precondition,
) -> Result<Option<u64>, Problem> {
    match precondition {
        Precondition::Absent => Ok(None),
        Precondition::Version(v) => Ok(Some(v)),
        Precondition::Exists => Ok(Some(current_version(state, kind, env, key).await?)),
        Precondition::Never => Err(never_matches()),
    }
}

async fn current_version(
    state: &AdminState,
    kind: Kind,
    env: &str,
    key: &str,
) -> Result<u64, Problem> {
    match get_item(state.store.as_ref(), kind, env, key).await {
        Ok(item) => Ok(item.version),
        Err(StoreError::NotFound { .. }) => Err(Problem::from_store(
            StoreError::Conflict {
                current_version: None,
            },
            true,
        )),
        Err(e) => Err(e.into()),
    }
}

fn never_matches() -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
        "If-Match names no version of this item (entity tags here are \"<version>\")",
    )
}

async fn list(state: &AdminState, kind: Kind, env: &str, query: ListQuery) -> Answer {
    if let Some(prefix) = &query.q {
        validate::check_text("q", prefix)?;
    }
    let filter = ListFilter {
        archived: match query.archived.as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err(Problem::invalid("archived", "expected true or false")),
        },
        key_prefix: query.q.filter(|q| !q.is_empty()),
    };
    let items: Vec<Item> = match kind {
        Kind::Flag => state
            .store
            .list_flags(env, &filter)
            .await?
            .into_iter()
            .map(Item::from)
            .collect(),
        Kind::Segment => state
            .store
            .list_segments(env, &filter)
            .await?
            .into_iter()
            .map(Item::from)
            .collect(),
    };
    Ok(Json(json!({ "items": items })).into_response())
}

async fn get_one(state: &AdminState, kind: Kind, env: &str, key: &str) -> Answer {
    let item = get_item(state.store.as_ref(), kind, env, key).await?;
    Ok(item_answer(StatusCode::OK, &item))
}

async fn put(
    state: &AdminState,
    principal: &Principal,
    kind: Kind,
    (env, key): (&str, &str),
    headers: &HeaderMap,
    doc: Value,
) -> Answer {
    let precondition = Precondition::from_headers(headers)?;
    let expected = match precondition {
        Precondition::Absent => None,
        Precondition::Version(v) => Some(v),
        Precondition::Exists => Some(current_version(state, kind, env, key).await?),
        Precondition::Never => return Err(never_matches()),
    };
    match put_item(state, principal, kind, (env, key), doc, expected).await {
        Ok(item) => {
            let status = if expected.is_none() {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(item_answer(status, &item))
        }
        // Replacing what exists must say which version it replaces.
        Err(StoreError::Conflict {
            current_version: Some(v),
        }) if !precondition.given() => Err(Problem::precondition_required(v)),
        Err(e) => Err(Problem::from_store(e, precondition.given())),
    }
}

async fn patch(
    state: &AdminState,
    principal: &Principal,
    kind: Kind,
    (env, key): (&str, &str),
    headers: &HeaderMap,
    patch: &Value,
) -> Answer {
    let precondition = Precondition::from_headers(headers)?;
    let current = get_item(state.store.as_ref(), kind, env, key).await?;
    check_precondition(precondition, current.version)?;
    let mut doc = current.doc.clone();
    merge_patch(&mut doc, patch);
    // The store sets the version; a patch cannot (and need not) change it.
    if let Value::Object(map) = &mut doc {
        map.remove("version");
    }
    if doc == without_version(&current.doc) {
        return Ok(item_answer(StatusCode::OK, &current));
    }
    let item = put_item(
        state,
        principal,
        kind,
        (env, key),
        doc,
        Some(current.version),
    )
    .await
    .map_err(|e| Problem::from_store(e, precondition.given()))?;
    Ok(item_answer(StatusCode::OK, &item))
}

fn without_version(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Value::Object(map) = &mut doc {
        map.remove("version");
    }
    doc
}

/// Checks `If-Match` against a version just read.
fn check_precondition(precondition: Precondition, current: u64) -> Result<(), Problem> {
    match precondition {
        Precondition::Absent | Precondition::Exists => Ok(()),
        Precondition::Version(v) if v == current => Ok(()),
        Precondition::Version(_) => Err(Problem::from_store(
            StoreError::Conflict {
                current_version: Some(current),
            },
            true,
        )),
        Precondition::Never => Err(never_matches()),
    }
}

async fn delete(
    state: &AdminState,
    principal: &Principal,
    kind: Kind,
    (env, key): (&str, &str),
    headers: &HeaderMap,
) -> Answer {
    let precondition = Precondition::from_headers(headers)?;
    let expected = expected_or_any(state, kind, env, key, precondition).await?;
    let actor = &principal.actor;
    let result = match kind {
        Kind::Flag => state.store.delete_flag(actor, env, key, expected).await,
        Kind::Segment => state.store.delete_segment(actor, env, key, expected).await,
    };
    result.map_err(|e| Problem::from_store(e, precondition.given()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_archived(
    state: &AdminState,
    principal: &Principal,
    kind: Kind,
    (env, key): (&str, &str),
    headers: &HeaderMap,
    archived: bool,
) -> Answer {
    let precondition = Precondition::from_headers(headers)?;
    let expected = expected_or_any(state, kind, env, key, precondition).await?;
    let actor = &principal.actor;
    let result: Result<Item, StoreError> = match kind {
        Kind::Flag => state
            .store
            .set_flag_archived(actor, env, key, archived, expected)
            .await
            .map(Item::written_flag),
        Kind::Segment => state
            .store
            .set_segment_archived(actor, env, key, archived, expected)
            .await
            .map(Item::written_segment),
    };
    let item = result.map_err(|e| Problem::from_store(e, precondition.given()))?;
    Ok(item_answer(StatusCode::OK, &item))
}

async fn set_on(
    state: &AdminState,
    principal: &Principal,
    (env, key): (&str, &str),
    headers: &HeaderMap,
    on: bool,
) -> Answer {
    patch(
        state,
        principal,
        Kind::Flag,
        (env, key),
        headers,
        &json!({ "on": on }),
    )
    .await
}

// ------------------------------------------------------------------ handlers: misc

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

/// Any path the admin API does not have: a problem document, like every other admin error.
pub async fn no_route() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-route",
        "the admin API has no such path; see /api/v1/openapi.json",
    )
}

/// A path the admin API has, with a method it does not serve there.
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "the admin API does not serve this method on this path; see /api/v1/openapi.json",
    )
}

/// The query of flag and segment lists.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    archived: Option<String>,
    q: Option<String>,
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    query
        .map(|Query(q)| q)
        .map_err(|e| Problem::invalid("", format!("bad query string: {}", e.body_text())))
}

// ------------------------------------------------------------------ environments

/// The body of `POST /environments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnvironmentBody {
    key: String,
    name: Option<String>,
    color: Option<String>,
}

/// The body of `PATCH /environments/{env}`: a merge patch of the environment's `name` and
/// `color`. A member left out is kept; `"color": null` removes the colour, as a merge patch
/// removes a member; `"name": null` is refused, since an environment always has a name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentPatch {
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    color: Option<Option<String>>,
}

/// A member that is present, `null` included (`Some(None)` for an `Option`); an absent one is
/// the field's default, `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// `POST /environments`.
pub async fn create_environment(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody,
) -> Answer {
    principal.check_global()?;
    let body: NewEnvironmentBody = from_body(body)?;
    let new = NewEnvironment {
        name: body.name.unwrap_or_else(|| body.key.clone()),
        key: body.key,
        color: body.color,
    };
    let env = state
        .store
        .create_environment_with(&principal.actor, &new)
        .await?;
    let mut response = (StatusCode::CREATED, Json(&env)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/environments/{}", env.key)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /environments`: the ones the key may use.
pub async fn list_environments(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
) -> Answer {
    let mut envs = state.store.list_environments().await?;
    envs.retain(|e| principal.allows_env(&e.key));
    Ok(Json(json!({ "items": envs })).into_response())
}

/// `GET /environments/{env}`.
pub async fn get_environment(State(state): State<AdminState>, Path(env): Path<String>) -> Answer {
    Ok(Json(state.store.get_environment(&env).await?).into_response())
}

/// `PATCH /environments/{env}`: a key scoped to the environment may change it too.
pub async fn update_environment(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path(env): Path<String>,
    MergePatchBody(body): MergePatchBody,
) -> Answer {
    // A patch that is not an object would replace the environment whole (and serde would
    // read an array as the fields in order).
    if !body.is_object() {
        return Err(Problem::invalid(
            "",
            "the patch must be a JSON object of the members to change (name, color)",
        ));
    }
    let patch: EnvironmentPatch = from_body(body)?;
    let update = EnvironmentUpdate {
        name: patch.name,
        color: patch.color,
    };
    let env = state
        .store
        .update_environment(&principal.actor, &env, &update)
        .await?;
    Ok(Json(env).into_response())
}

/// `GET /environments/{env}/export`.
pub async fn export_environment(
    State(state): State<AdminState>,
    Path(env): Path<String>,
) -> Answer {
    Ok(Json(export_env(state.store.as_ref(), &env).await?).into_response())
}

/// `POST /environments/{env}/import`.
pub async fn import_environment(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path(env): Path<String>,
    JsonBody(body): JsonBody,
) -> Answer {
    let report = import_document(state.store.as_ref(), &env, body, &principal.actor).await?;
    Ok(Json(report).into_response())
}

// ------------------------------------------------------------------ flags or segments

/// Which of flags and segments a generic handler serves (`list::<Flags>`).
pub(super) trait Items: Send + Sync + 'static {
    /// The kind.
    const KIND: Kind;
}

/// The flag routes.
pub(super) struct Flags;

/// The segment routes.
pub(super) struct Segments;

impl Items for Flags {
    const KIND: Kind = Kind::Flag;
}

impl Items for Segments {
    const KIND: Kind = Kind::Segment;
}

/// `GET /environments/{env}/flags` and `.../segments`.
pub(super) async fn list_items<K: Items>(
    State(state): State<AdminState>,
    Path(env): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Answer {
    list(&state, K::KIND, &env, query(q)?).await
}

/// `GET /environments/{env}/flags/{key}` and `.../segments/{key}`.
pub(super) async fn get_one_item<K: Items>(
    State(state): State<AdminState>,
    Path((env, key)): Path<(String, String)>,
) -> Answer {
    get_one(&state, K::KIND, &env, &key).await
}

/// `PUT /environments/{env}/flags/{key}` and `.../segments/{key}`.
pub(super) async fn put_one_item<K: Items>(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(doc): JsonBody,
) -> Answer {
    put(&state, &principal, K::KIND, (&env, &key), &headers, doc).await
}

/// `PATCH /environments/{env}/flags/{key}` and `.../segments/{key}`.
pub(super) async fn patch_item<K: Items>(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    MergePatchBody(body): MergePatchBody,
) -> Answer {
    patch(&state, &principal, K::KIND, (&env, &key), &headers, &body).await
}

/// `DELETE /environments/{env}/flags/{key}` and `.../segments/{key}`.
pub(super) async fn delete_item<K: Items>(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    delete(&state, &principal, K::KIND, (&env, &key), &headers).await
}

/// `POST /environments/{env}/flags/{key}/archive` and `.../segments/{key}/archive`.
pub(super) async fn archive_item<K: Items>(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    set_archived(&state, &principal, K::KIND, (&env, &key), &headers, true).await
}

/// `POST /environments/{env}/flags/{key}/unarchive` and `.../segments/{key}/unarchive`.
pub(super) async fn unarchive_item<K: Items>(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    set_archived(&state, &principal, K::KIND, (&env, &key), &headers, false).await
}

// ------------------------------------------------------------------ flags

/// `POST /environments/{env}/flags/{key}/on`.
pub async fn flag_on(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    set_on(&state, &principal, (&env, &key), &headers, true).await
}

/// `POST /environments/{env}/flags/{key}/off`.
pub async fn flag_off(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    set_on(&state, &principal, (&env, &key), &headers, false).await
}

// ------------------------------------------------------------------ segments

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct KeyChanges {
    add: Vec<String>,
    remove: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct TargetsBody {
    context_kind: Option<String>,
    included: KeyChanges,
    excluded: KeyChanges,
}

/// `POST /environments/{env}/segments/{key}/targets`.
pub async fn update_segment_targets(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Answer {
    let precondition = Precondition::from_headers(&headers)?;
    let body: TargetsBody = from_body(body)?;
    let update = SegmentTargetsUpdate {
        context_kind: body.context_kind,
        add_included: body.included.add,
        remove_included: body.included.remove,
        add_excluded: body.excluded.add,
        remove_excluded: body.excluded.remove,
    };
    let expected = expected_or_any(&state, Kind::Segment, &env, &key, precondition).await?;
    let segment = state
        .store
        .update_segment_targets(&principal.actor, &env, &key, &update, expected)
        .await
        .map_err(|e| Problem::from_store(targets_body_path(e), precondition.given()))?;
    Ok(item_answer(StatusCode::OK, &Item::written_segment(segment)))
}

/// A store error about a [`SegmentTargetsUpdate`] field (`addIncluded[1]`), located in the
/// request body instead (`included.add[1]`).
fn targets_body_path(error: StoreError) -> StoreError {
    const FIELDS: [(&str, &str); 4] = [
        ("addIncluded", "included.add"),
        ("removeIncluded", "included.remove"),
        ("addExcluded", "excluded.add"),
        ("removeExcluded", "excluded.remove"),
    ];
    match error {
        StoreError::Invalid { path, message } => {
            let path = FIELDS
                .iter()
                .find_map(|(field, body)| {
                    path.strip_prefix(field)
                        .filter(|rest| rest.starts_with('['))
                        .map(|rest| format!("{body}{rest}"))
                })
                .unwrap_or(path);
            StoreError::Invalid { path, message }
        }
        other => other,
    }
}

// ------------------------------------------------------------------ kill set

async fn set_killed(
    state: &AdminState,
    principal: &Principal,
    (env, key): (&str, &str),
    killed: bool,
) -> Answer {
    let changed = state
        .store
        .set_killed(&principal.actor, env, key, killed)
        .await?;
    Ok(Json(json!({"flag": key, "killed": killed, "changed": changed})).into_response())
}

/// `PUT /environments/{env}/flags/{key}/kill`.
pub async fn kill_flag(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
) -> Answer {
    set_killed(&state, &principal, (&env, &key), true).await
}

/// `DELETE /environments/{env}/flags/{key}/kill`.
pub async fn unkill_flag(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
) -> Answer {
    set_killed(&state, &principal, (&env, &key), false).await
}

/// `GET /environments/{env}/killed`.
pub async fn list_killed(State(state): State<AdminState>, Path(env): Path<String>) -> Answer {
    let killed = state.store.killed_flags(&env).await?;
    Ok(Json(json!({ "killed": killed })).into_response())
}

// ------------------------------------------------------------------ overrides

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    variation: usize,
}

/// `GET /environments/{env}/flags/{key}/overrides`.
pub async fn list_overrides(
    State(state): State<AdminState>,
    Path((env, key)): Path<(String, String)>,
) -> Answer {
    // Listing a missing flag's overrides would answer an empty list; say it is missing instead.
    state.store.get_flag(&env, &key).await?;
    let items = state.store.list_overrides(&env, &key).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// `PUT /environments/{env}/flags/{key}/overrides/{contextKind}/{contextKey}`.
pub async fn set_override(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, flag_key, context_kind, context_key)): Path<(String, String, String, String)>,
    JsonBody(body): JsonBody,
) -> Answer {
    let body: OverrideBody = from_body(body)?;
    let key = OverrideKey {
        flag_key,
        context_kind,
        context_key,
    };
    let previous = state
        .store
        .set_override(&principal.actor, &env, &key, body.variation)
        .await?;
    Ok(Json(json!({
        "contextKind": key.context_kind,
        "contextKey": key.context_key,
        "variation": body.variation,
        "previous": previous,
    }))
    .into_response())
}

/// `DELETE /environments/{env}/flags/{key}/overrides/{contextKind}/{contextKey}`.
pub async fn remove_override(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, flag_key, context_kind, context_key)): Path<(String, String, String, String)>,
) -> Answer {
    let key = OverrideKey {
        flag_key,
        context_kind,
        context_key,
    };
    match state
        .store
        .remove_override(&principal.actor, &env, &key)
        .await?
    {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(Problem::not_found(format!(
            "no override of flag {:?} for {} {:?}",
            key.flag_key, key.context_kind, key.context_key
        ))),
    }
}

// ------------------------------------------------------------------ audit

/// The query of the audit log.
#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    flag: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// The query of the whole audit log.
#[derive(Debug, Default, Deserialize)]
pub struct GlobalAuditParams {
    limit: Option<String>,
    before: Option<String>,
}

/// Reads the `limit` and `before` parameters of the audit routes.
fn audit_paging(
    limit: Option<&str>,
    before: Option<&str>,
) -> Result<(usize, Option<u64>), Problem> {
    let limit = match limit {
        None => DEFAULT_AUDIT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_AUDIT_LIMIT).contains(&n) => n,
            _ => {
                return Err(Problem::invalid(
                    "limit",
                    format!("expected a whole number from 1 to {MAX_AUDIT_LIMIT}"),
                ));
            }
        },
    };
    let before_id = match before {
        None => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| Problem::invalid("before", "expected an audit entry id"))?,
        ),
    };
    Ok((limit, before_id))
}

/// `GET /environments/{env}/audit`.
pub async fn audit(
    State(state): State<AdminState>,
    Path(env): Path<String>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Answer {
    let params = query(q)?;
    let (limit, before_id) = audit_paging(params.limit.as_deref(), params.before.as_deref())?;
    if let Some(flag) = &params.flag {
        validate::check_lookup_key("flag", "flag", flag)?;
    }
    // A missing environment is a 404, not an empty log.
    state.store.get_environment(&env).await?;
    let mut audit_query = match params.flag.as_deref() {
        Some(flag) => AuditQuery::flag(&env, flag, limit),
        None => AuditQuery::env(&env, limit),
    };
    audit_query.before_id = before_id;
    let items = state.store.audit_log(&audit_query).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// `GET /audit`: every entry, those of no environment (keys for every environment) included.
/// It spans environments, so it needs a key for every environment.
pub async fn global_audit(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    q: Result<Query<GlobalAuditParams>, QueryRejection>,
) -> Answer {
    principal.check_global()?;
    let params = query(q)?;
    let (limit, before_id) = audit_paging(params.limit.as_deref(), params.before.as_deref())?;
    let audit_query = AuditQuery {
        env: None,
        item: None,
        limit,
        before_id,
    };
    let items = state.store.audit_log(&audit_query).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

// ------------------------------------------------------------------ keys

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnvironmentKey {
    kind: ApiKeyKind,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGlobalKey {
    name: String,
    kind: Option<ApiKeyKind>,
}

fn created_key_answer(created: flags_store::CreatedApiKey) -> Answer {
    let mut body =
        serde_json::to_value(&created.key).map_err(|e| Problem::from(StoreError::internal(e)))?;
    if let Value::Object(map) = &mut body {
        map.insert("key".to_owned(), Value::String(created.secret));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /environments/{env}/keys`.
pub async fn create_env_key(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path(env): Path<String>,
    JsonBody(body): JsonBody,
) -> Answer {
    let new: NewEnvironmentKey = from_body(body)?;
    let created = state
        .store
        .create_api_key(
            &principal.actor,
            &NewApiKey {
                name: new.name,
                kind: new.kind,
                env: Some(env),
            },
        )
        .await?;
    created_key_answer(created)
}

/// `POST /keys`: an admin key for every environment.
pub async fn create_global_key(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody,
) -> Answer {
    principal.check_global()?;
    let new: NewGlobalKey = from_body(body)?;
    if new.kind.is_some_and(|k| k != ApiKeyKind::Admin) {
        return Err(Problem::invalid(
            "kind",
            "an SDK key selects one environment; create it under /environments/{env}/keys",
        ));
    }
    let created = state
        .store
        .create_api_key(
            &principal.actor,
            &NewApiKey {
                name: new.name,
                kind: ApiKeyKind::Admin,
                env: None,
            },
        )
        .await?;
    created_key_answer(created)
}

/// `GET /keys`: the keys the caller may see (an environment's admin key sees that
/// environment's keys).
pub async fn list_keys(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
) -> Answer {
    let mut keys = state.store.list_api_keys().await?;
    keys.retain(|k| visible_to(&principal, k));
    Ok(Json(json!({ "items": keys })).into_response())
}

fn visible_to(principal: &Principal, key: &ApiKey) -> bool {
    match (&principal.env, &key.env) {
        (None, _) => true,
        (Some(scope), Some(env)) => scope == env,
        (Some(_), None) => false,
    }
}

/// `DELETE /keys/{id}`.
pub async fn revoke_key(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Answer {
    let id: u64 = id
        .parse()
        .map_err(|_| Problem::invalid("id", "expected a key id (a whole number)"))?;
    if principal.env.is_some() {
        let keys = state.store.list_api_keys().await?;
        match keys.iter().find(|k| k.id == id) {
            None => return Err(Problem::not_found(format!("API key {id} not found"))),
            Some(key) if !visible_to(&principal, key) => {
                return Err(Problem::forbidden(
                    "this admin key may only revoke keys of its own environment",
                ));
            }
            Some(_) => {}
        }
    }
    let key = state.store.revoke_api_key(&principal.actor, id).await?;
    Ok(Json(key).into_response())
}
