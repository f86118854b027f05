//! The one list of admin routes. The router and the OpenAPI document are both built from it.

/// An HTTP method of an admin route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    /// The lowercase name, as OpenAPI path items use it.
    pub fn as_lower(self) -> &'static str {
        match self {
            Get => "get",
            Post => "post",
            Put => "put",
            Patch => "patch",
            Delete => "delete",
        }
    }

    /// The `http` method.
    pub fn to_http(self) -> axum::http::Method {
        match self {
            Get => axum::http::Method::GET,
            Post => axum::http::Method::POST,
            Put => axum::http::Method::PUT,
            Patch => axum::http::Method::PATCH,
            Delete => axum::http::Method::DELETE,
        }
    }
}

/// What a route does; each has exactly one handler.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    OpenApi,
    CreateEnvironment,
    ListEnvironments,
    GetEnvironment,
    UpdateEnvironment,
    ExportEnvironment,
    ImportEnvironment,
    ListFlags,
    GetFlag,
    PutFlag,
    PatchFlag,
    DeleteFlag,
    FlagOn,
    FlagOff,
    ArchiveFlag,
    UnarchiveFlag,
    ListSegments,
    GetSegment,
    PutSegment,
    PatchSegment,
    DeleteSegment,
    ArchiveSegment,
    UnarchiveSegment,
    UpdateSegmentTargets,
    UploadMembers,
    GetMembership,
    KillFlag,
    UnkillFlag,
    ListKilled,
    ListOverrides,
    SetOverride,
    RemoveOverride,
    Audit,
    GlobalAudit,
    CreateEnvKey,
    CreateGlobalKey,
    ListKeys,
    RevokeKey,
}

/// How a route's request body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `application/json` with this component schema.
    Json(&'static str),
    /// `application/merge-patch+json` (RFC 7386) against this component schema.
    MergePatch(&'static str),
    /// `application/x-ndjson`: one JSON value of this component schema per line, read as a
    /// stream.
    NdJson(&'static str),
}

/// One admin route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path relative to `/api/v1`, with `{param}` placeholders (axum and OpenAPI agree).
    pub path: &'static str,
    /// The handler.
    pub op: Op,
    /// One line for the OpenAPI summary.
    pub summary: &'static str,
    /// The request body, if any.
    pub body: Option<Body>,
    /// The success status and its body's component schema (`None`: no body).
    pub ok: (u16, Option<&'static str>),
    /// Whether the success answer carries an `ETag` with the item's version.
    pub etag: bool,
    /// Whether `If-Match` is read.
    pub if_match: bool,
    /// Query parameters: name, description.
    pub query: &'static [(&'static str, &'static str)],
    /// Error statuses besides 401, 403 and 503 (which every authenticated route can answer).
    pub errors: &'static [u16],
}

const fn route(method: Method, path: &'static str, op: Op, summary: &'static str) -> Route {
    Route {
        method,
        path,
        op,
        summary,
        body: None,
        ok: (200, None),
        etag: false,
        if_match: false,
        query: &[],
        errors: &[404],
    }
}

impl Route {
    const fn body(mut self, body: Body) -> Route {
        self.body = Some(body);
        self
    }
    const fn ok(mut self, status: u16, schema: Option<&'static str>) -> Route {
        self.ok = (status, schema);
        self
    }
    const fn etag(mut self) -> Route {
        self.etag = true;
        self
    }
    const fn if_match(mut self) -> Route {
        self.if_match = true;
        self
    }
    const fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Route {
        self.query = query;
        self
    }
    const fn errors(mut self, errors: &'static [u16]) -> Route {
        self.errors = errors;
        self
    }
}

use Method::{Delete, Get, Patch, Post, Put};

/// Statuses of a versioned write on an existing item.
const VERSIONED: &[u16] = &[400, 404, 409, 412, 422];
const LIST_QUERY: &[(&str, &str)] = &[
    (
        "archived",
        "`true`: archived items only; `false`: live items only; absent: both.",
    ),
    ("q", "Only keys starting with this text."),
];

/// Every admin route. `GET /openapi.json` is the only one that needs no key.
pub static ROUTES: &[Route] = &[
    route(
        Get,
        "/openapi.json",
        Op::OpenApi,
        "This API's OpenAPI 3.1 document",
    )
    .ok(200, Some("OpenApiDocument"))
    .errors(&[]),
    // Environments.
    route(
        Post,
        "/environments",
        Op::CreateEnvironment,
        "Create an environment",
    )
    .body(Body::Json("NewEnvironment"))
    .ok(201, Some("Environment"))
    .errors(&[400, 409]),
    route(
        Get,
        "/environments",
        Op::ListEnvironments,
        "List the environments the key may use",
    )
    .ok(200, Some("EnvironmentList"))
    .errors(&[]),
    route(
        Get,
        "/environments/{env}",
        Op::GetEnvironment,
        "Read an environment",
    )
    .ok(200, Some("Environment")),
    route(
        Patch,
        "/environments/{env}",
        Op::UpdateEnvironment,
        "Change an environment's name or colour with a JSON merge patch (RFC 7386)",
    )
    .body(Body::MergePatch("EnvironmentPatch"))
    .ok(200, Some("Environment"))
    .errors(&[400, 404, 415]),
    route(
        Get,
        "/environments/{env}/export",
        Op::ExportEnvironment,
        "Export the live flags and segments as a LaunchDarkly flag file",
    )
    .ok(200, Some("FlagFile")),
    route(
        Post,
        "/environments/{env}/import",
        Op::ImportEnvironment,
        "Create or replace flags and segments from a LaunchDarkly flag file",
    )
    .body(Body::Json("FlagFile"))
    .ok(200, Some("ImportReport"))
    .errors(&[400, 404, 409, 422]),
    // Flags.
    route(
        Get,
        "/environments/{env}/flags",
        Op::ListFlags,
        "List flags",
    )
    .query(LIST_QUERY)
    .ok(200, Some("StoredFlagList"))
    .errors(&[400, 404]),
    route(
        Get,
        "/environments/{env}/flags/{key}",
        Op::GetFlag,
        "Read a flag",
    )
    .ok(200, Some("StoredFlag"))
    .etag(),
    route(
        Put,
        "/environments/{env}/flags/{key}",
        Op::PutFlag,
        "Create a flag, or replace it (If-Match required when it exists); 201 on create",
    )
    .body(Body::Json("LaunchDarklyFlag"))
    .ok(200, Some("StoredFlag"))
    .etag()
    .if_match()
    .errors(&[400, 404, 409, 412, 422, 428]),
    route(
        Patch,
        "/environments/{env}/flags/{key}",
        Op::PatchFlag,
        "Change a flag with a JSON merge patch (RFC 7386)",
    )
    .body(Body::MergePatch("LaunchDarklyFlag"))
    .ok(200, Some("StoredFlag"))
    .etag()
    .if_match()
    .errors(&[400, 404, 409, 412, 415, 422]),
    route(
        Delete,
        "/environments/{env}/flags/{key}",
        Op::DeleteFlag,
        "Delete a flag (refused while other flags name it as a prerequisite)",
    )
    .ok(204, None)
    .if_match()
    .errors(&[404, 409, 412]),
    route(
        Post,
        "/environments/{env}/flags/{key}/on",
        Op::FlagOn,
        "Turn a flag on",
    )
    .ok(200, Some("StoredFlag"))
    .etag()
    .if_match()
    .errors(VERSIONED),
    route(
        Post,
        "/environments/{env}/flags/{key}/off",
        Op::FlagOff,
        "Turn a flag off",
    )
    .ok(200, Some("StoredFlag"))
    .etag()
    .if_match()
    .errors(VERSIONED),
    route(
        Post,
        "/environments/{env}/flags/{key}/archive",
        Op::ArchiveFlag,
        "Archive a flag: kept, no longer served",
    )
    .ok(200, Some("StoredFlag"))
    .etag()
    .if_match()
    .errors(VERSIONED),
    route(
        Post,
        "/environments/{env}/flags/{key}/unarchive",
        Op::UnarchiveFlag,
        "Serve an archived flag again",
    )
    .ok(200, Some("StoredFlag"))
    .etag()
    .if_match()
    .errors(VERSIONED),
    // Segments.
    route(
        Get,
        "/environments/{env}/segments",
        Op::ListSegments,
        "List segments",
    )
    .query(LIST_QUERY)
    .ok(200, Some("StoredSegmentList"))
    .errors(&[400, 404]),
    route(
        Get,
        "/environments/{env}/segments/{key}",
        Op::GetSegment,
        "Read a segment",
    )
    .ok(200, Some("StoredSegment"))
    .etag(),
    route(
        Put,
        "/environments/{env}/segments/{key}",
        Op::PutSegment,
        "Create a segment, or replace it (If-Match required when it exists); 201 on create",
    )
    .body(Body::Json("LaunchDarklySegment"))
    .ok(200, Some("StoredSegment"))
    .etag()
    .if_match()
    .errors(&[400, 404, 409, 412, 422, 428]),
    route(
        Patch,
        "/environments/{env}/segments/{key}",
        Op::PatchSegment,
        "Change a segment with a JSON merge patch (RFC 7386)",
    )
    .body(Body::MergePatch("LaunchDarklySegment"))
    .ok(200, Some("StoredSegment"))
    .etag()
    .if_match()
    .errors(&[400, 404, 409, 412, 415, 422]),
    route(
        Delete,
        "/environments/{env}/segments/{key}",
        Op::DeleteSegment,
        "Delete a segment (refused while flags or segments refer to it)",
    )
    .ok(204, None)
    .if_match()
    .errors(&[404, 409, 412]),
    route(
        Post,
        "/environments/{env}/segments/{key}/archive",
        Op::ArchiveSegment,
        "Archive a segment",
    )
    .ok(200, Some("StoredSegment"))
    .etag()
    .if_match()
    .errors(VERSIONED),
    route(
        Post,
        "/environments/{env}/segments/{key}/unarchive",
        Op::UnarchiveSegment,
        "Serve an archived segment again",
    )
    .ok(200, Some("StoredSegment"))
    .etag()
    .if_match()
    .errors(VERSIONED),
    route(
        Post,
        "/environments/{env}/segments/{key}/targets",
        Op::UpdateSegmentTargets,
        "Add and remove included and excluded keys in one write",
    )
    .body(Body::Json("SegmentTargetsUpdate"))
    .ok(200, Some("StoredSegment"))
    .etag()
    .if_match()
    .errors(VERSIONED),
    // Big-segment members.
    route(
        Post,
        "/environments/{env}/segments/{key}/members",
        Op::UploadMembers,
        "Include, exclude or remove contexts of a big (unbounded) segment: an NDJSON stream of any length, stored all or nothing",
    )
    .body(Body::NdJson("MemberLine"))
    .query(&[(
        "replace",
        "`true`: the upload lists the whole membership; it is written under the next generation, which the segment then switches to in one write.",
    )])
    .ok(200, Some("MemberUploadReport"))
    .errors(&[400, 404, 409]),
    route(
        Get,
        "/environments/{env}/segments/{key}/members/{contextKey}",
        Op::GetMembership,
        "Whether a context key is included in, excluded from or not listed in a big segment's current generation",
    )
    .ok(200, Some("Membership"))
    .errors(&[400, 404, 409]),
    // Kill set.
    route(
        Put,
        "/environments/{env}/flags/{key}/kill",
        Op::KillFlag,
        "Kill a flag: serve its off variation everywhere",
    )
    .ok(200, Some("KillState")),
    route(
        Delete,
        "/environments/{env}/flags/{key}/kill",
        Op::UnkillFlag,
        "Unkill a flag",
    )
    .ok(200, Some("KillState")),
    route(
        Get,
        "/environments/{env}/killed",
        Op::ListKilled,
        "List the killed flags",
    )
    .ok(200, Some("KilledList")),
    // Overrides.
    route(
        Get,
        "/environments/{env}/flags/{key}/overrides",
        Op::ListOverrides,
        "List a flag's overrides",
    )
    .ok(200, Some("OverrideList")),
    route(
        Put,
        "/environments/{env}/flags/{key}/overrides/{contextKind}/{contextKey}",
        Op::SetOverride,
        "Pin one context to a variation of a flag",
    )
    .body(Body::Json("OverrideRequest"))
    .ok(200, Some("Override"))
    .errors(&[400, 404, 422]),
    route(
        Delete,
        "/environments/{env}/flags/{key}/overrides/{contextKind}/{contextKey}",
        Op::RemoveOverride,
        "Remove an override",
    )
    .ok(204, None),
    // Audit.
    route(
        Get,
        "/environments/{env}/audit",
        Op::Audit,
        "Read the audit log, newest first",
    )
    .query(&[
        ("flag", "Only entries about this flag."),
        (
            "limit",
            "At most this many entries (default 100, at most 1000).",
        ),
        ("before", "Only entries older than this entry id (paging)."),
    ])
    .ok(200, Some("AuditList"))
    .errors(&[400, 404]),
    route(
        Get,
        "/audit",
        Op::GlobalAudit,
        "Read the whole audit log, newest first: every environment's entries and those tied to none (keys for every environment); needs a key for every environment",
    )
    .query(&[
        (
            "limit",
            "At most this many entries (default 100, at most 1000).",
        ),
        ("before", "Only entries older than this entry id (paging)."),
    ])
    .ok(200, Some("AuditList"))
    .errors(&[400]),
    // API keys.
    route(
        Post,
        "/environments/{env}/keys",
        Op::CreateEnvKey,
        "Create an SDK or admin key for one environment; the secret is shown once",
    )
    .body(Body::Json("NewEnvironmentKey"))
    .ok(201, Some("CreatedKey"))
    .errors(&[400, 404]),
    route(
        Post,
        "/keys",
        Op::CreateGlobalKey,
        "Create an admin key for every environment; the secret is shown once",
    )
    .body(Body::Json("NewGlobalKey"))
    .ok(201, Some("CreatedKey"))
    .errors(&[400]),
    route(
        Get,
        "/keys",
        Op::ListKeys,
        "List keys (never their secrets)",
    )
    .ok(200, Some("ApiKeyList"))
    .errors(&[]),
    route(Delete, "/keys/{id}", Op::RevokeKey, "Revoke a key").ok(200, Some("ApiKey")),
];
