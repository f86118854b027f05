//! The OpenAPI 3.1 document of the admin API, built from [`ROUTES`] (paths, methods, bodies,
//! statuses) and the schemas below, so it describes exactly the routes the router serves.

use serde_json::{Map, Value, json};

use super::routes::{Body, Op, ROUTES, Route};

/// The OpenAPI 3.1 document served at `/api/v1/openapi.json`.
pub fn openapi_document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        if let Value::Object(item) = item {
            item.insert(route.method.as_lower().to_owned(), operation(route));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "flagd admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Environments, flags and segments (LaunchDarkly's JSON model), the kill set, per-context overrides, the audit log and API keys. Every operation except this document needs `Authorization: Bearer <admin key>`. Errors are RFC 9457 problem documents. Versioned items carry `ETag: \"<version>\"`; replacing one needs `If-Match`.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"adminKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The bootstrap admin key (`--admin-key` / `FLAGD_ADMIN_KEY`) or a stored admin key. A key scoped to one environment may only use that environment.",
                },
            },
            "schemas": schemas(),
            "responses": {
                "Problem": {
                    "description": "An RFC 9457 problem document.",
                    "content": {"application/problem+json": {"schema": schema_ref("Problem")}},
                },
            },
        },
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn operation(route: &Route) -> Value {
    let mut op = Map::new();
    op.insert("operationId".to_owned(), json!(operation_id(route.op)));
    op.insert("summary".to_owned(), json!(route.summary));
    op.insert("tags".to_owned(), json!(["admin"]));
    let mut parameters: Vec<Value> = path_params(route.path)
        .map(|name| {
            json!({
                "name": name, "in": "path", "required": true,
                "schema": {"type": "string"},
            })
        })
        .collect();
    for (name, description) in route.query {
        parameters.push(json!({
            "name": name, "in": "query", "required": false,
            "description": description, "schema": {"type": "string"},
        }));
    }
    if route.if_match {
        parameters.push(json!({
            "name": "If-Match", "in": "header", "required": false,
            "description": "`\"<version>\"` (or `*`): the write applies only to that version; 412 otherwise. Required to replace an item that exists (428 without it).",
            "schema": {"type": "string"},
        }));
    }
    if !parameters.is_empty() {
        op.insert("parameters".to_owned(), Value::Array(parameters));
    }
    if let Some(body) = route.body {
        let (media, name) = match body {
            Body::Json(name) => ("application/json", name),
            Body::MergePatch(name) => ("application/merge-patch+json", name),
            Body::NdJson(name) => ("application/x-ndjson", name),
        };
        op.insert(
            "requestBody".to_owned(),
            json!({"required": true, "content": {media: {"schema": schema_ref(name)}}}),
        );
    }
    let mut responses = Map::new();
    let success = |status: u16| {
        let mut response = json!({"description": success_description(status)});
        if let Some(schema) = route.ok.1 {
            response["content"] = json!({"application/json": {"schema": schema_ref(schema)}});
        }
        if route.etag {
            response["headers"] = json!({"ETag": {
                "description": "The item's version, quoted.",
                "schema": {"type": "string"},
            }});
        }
        response
    };
    responses.insert(route.ok.0.to_string(), success(route.ok.0));
    if matches!(route.op, Op::PutFlag | Op::PutSegment) {
        responses.insert("201".to_owned(), success(201));
    }
    let mut errors = route.errors.to_vec();
    if route.op != Op::OpenApi {
        errors.extend([400, 401, 403, 503]);
    }
    if route.body.is_some() {
        errors.push(413);
    }
    errors.sort_unstable();
    errors.dedup();
    for status in errors {
        responses.insert(
            status.to_string(),
            json!({"$ref": "#/components/responses/Problem"}),
        );
    }
    op.insert("responses".to_owned(), Value::Object(responses));
    if route.op == Op::OpenApi {
        op.insert("security".to_owned(), json!([]));
    }
    Value::Object(op)
}

fn success_description(status: u16) -> &'static str {
    match status {
        201 => "Created.",
        204 => "Done; no body.",
        _ => "OK.",
    }
}

/// The `{name}` placeholders of a path, in order.
pub(super) fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
}

fn operation_id(op: Op) -> String {
    // `CreateEnvironment` → `createEnvironment`.
    let name = format!("{op:?}");
    let mut chars = name.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

fn schemas() -> Value {
    let item = |doc: &str| {
        json!({
            "type": "object",
            "required": ["key", "version", "archived", "updatedAt", "doc"],
            "properties": {
                "key": {"type": "string"},
                "version": {"type": "integer", "minimum": 1},
                "archived": {"type": "boolean"},
                "updatedAt": {"type": "integer", "description": "Unix milliseconds."},
                "doc": schema_ref(doc),
                "warnings": {
                    "type": "array",
                    "description": "In the answers of writes, when there are any: what the checks found that does not refuse the write (an invalid regular expression, date or version in a clause, weights that do not add up to 100000), each naming the field path, with the message `flagd validate` gives for it.",
                    "items": schema_ref("Warning"),
                },
            },
        })
    };
    let list = |of: &str| {
        json!({
            "type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": schema_ref(of)}},
        })
    };
    let key_changes = json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "add": {"type": "array", "items": {"type": "string"}},
            "remove": {"type": "array", "items": {"type": "string"}},
        },
    });
    let api_key_properties = json!({
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "kind": {"enum": ["sdk", "admin"]},
        "env": {"type": ["string", "null"], "description": "The one environment it may use; null for all."},
        "createdAt": {"type": "integer"},
        "revoked": {"type": "boolean"},
    });
    let color = json!({
        "type": "string", "pattern": "^#[0-9A-Fa-f]{6}$",
        "description": "The colour people see the environment in, `#rrggbb` (stored in lower case); absent when none was chosen.",
    });
    let mut created_key_properties = api_key_properties.clone();
    created_key_properties["key"] = json!({"type": "string", "description": "The secret. Shown this once; only its hash is stored."});
    json!({
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "description": "`urn:flagd:problem:<kind>`: invalid, malformed-json, unauthorized, forbidden, not-found, version-conflict, precondition-failed, precondition-required, already-exists, unresolved, has-dependents, unsupported-media-type, payload-too-large, no-route, method-not-allowed, unreadable-body, unavailable, internal, not-unbounded (member uploads to a segment that is not a big one), unsupported (a store that keeps no big-segment members)."},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {
                    "type": "array",
                    "description": "Validation problems, each naming the field path (`rules[2].clauses[0].values`).",
                    "items": {
                        "type": "object", "required": ["path", "message"],
                        "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
                "dependents": {
                    "type": "array",
                    "description": "Items that still refer to the one being deleted or archived.",
                    "items": {
                        "type": "object", "required": ["kind", "key"],
                        "properties": {"kind": {"enum": ["flag", "segment"]}, "key": {"type": "string"}},
                    },
                },
                "currentVersion": {"type": "integer", "description": "For version conflicts: the item's version now."},
            },
        },
        "OpenApiDocument": {"type": "object", "description": "This document."},
        "Warning": {
            "type": "object", "required": ["path", "message"],
            "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
        },
        "NewEnvironment": {
            "type": "object", "required": ["key"], "additionalProperties": false,
            "properties": {
                "key": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
                "name": {"type": "string", "description": "The display name; not blank. Defaults to the key."},
                "color": color,
            },
        },
        "EnvironmentPatch": {
            "type": "object", "additionalProperties": false,
            "description": "The members to change; those left out are kept.",
            "properties": {
                "name": {"type": "string", "description": "The display name; not blank."},
                "color": {
                    "type": ["string", "null"], "pattern": "^#[0-9A-Fa-f]{6}$",
                    "description": "The colour, `#rrggbb`; null removes it.",
                },
            },
        },
        "Environment": {
            "type": "object", "required": ["key", "name", "createdAt"],
            "properties": {
                "key": {"type": "string"},
                "name": {"type": "string", "description": "The display name."},
                "color": color,
                "createdAt": {"type": "integer", "description": "Unix milliseconds."},
            },
        },
        "EnvironmentList": list("Environment"),
        "LaunchDarklyFlag": {
            "type": "object",
            "description": "A LaunchDarkly server-side flag (`on`, `variations`, `offVariation`, `fallthrough`, `targets`, `contextTargets`, `rules`, `prerequisites`, `salt`, ...). `key` may be left out; `version` is set by the server.",
        },
        "LaunchDarklySegment": {
            "type": "object",
            "description": "A LaunchDarkly segment (`included`, `excluded`, `includedContexts`, `excludedContexts`, `rules`, `salt`, ...). `key` may be left out; `version` is set by the server.",
        },
        "StoredFlag": item("LaunchDarklyFlag"),
        "StoredFlagList": list("StoredFlag"),
        "StoredSegment": item("LaunchDarklySegment"),
        "StoredSegmentList": list("StoredSegment"),
        "SegmentTargetsUpdate": {
            "type": "object", "additionalProperties": false,
            "description": "Removals apply before additions. Without `contextKind` the keys go to `included`/`excluded`; with one, to that kind's entry of `includedContexts`/`excludedContexts`.",
            "properties": {
                "contextKind": {"type": "string"},
                "included": key_changes,
                "excluded": key_changes,
            },
        },
        "FlagFile": {
            "type": "object",
            "description": "A LaunchDarkly flag file.",
            "properties": {
                "flags": {"type": "object", "additionalProperties": schema_ref("LaunchDarklyFlag")},
                "segments": {"type": "object", "additionalProperties": schema_ref("LaunchDarklySegment")},
                "flagValues": {"type": "object", "description": "Imports only: key → the one value a simple flag serves."},
            },
        },
        "ImportReport": {
            "type": "object",
            "properties": {
                "flagsCreated": {"type": "array", "items": {"type": "string"}},
                "flagsReplaced": {"type": "array", "items": {"type": "string"}},
                "flagsUnchanged": {"type": "array", "items": {"type": "string"}},
                "segmentsCreated": {"type": "array", "items": {"type": "string"}},
                "segmentsReplaced": {"type": "array", "items": {"type": "string"}},
                "segmentsUnchanged": {"type": "array", "items": {"type": "string"}},
                "warnings": {
                    "type": "array",
                    "description": "When there are any: what the checks found in the file's items that does not refuse the import, each naming its path in the file (`flags.KEY.rules[0].clauses[1].values[0]`), as `flagd validate` does.",
                    "items": schema_ref("Warning"),
                },
            },
        },
        "MemberLine": {
            "type": "object", "required": ["op", "key"], "additionalProperties": false,
            "description": "One line of a member upload. Blank lines are skipped. A later line about the same key overrides an earlier one.",
            "properties": {
                "op": {"enum": ["include", "exclude", "remove"]},
                "key": {"type": "string", "minLength": 1, "description": "The context key (of the segment's `unboundedContextKind`, `user` by default)."},
            },
        },
        "MemberUploadReport": {
            "type": "object",
            "required": ["lines", "included", "excluded", "removed", "generation", "replaced"],
            "properties": {
                "lines": {"type": "integer", "description": "Lines that held an operation (blank lines are not counted)."},
                "included": {"type": "integer"},
                "excluded": {"type": "integer"},
                "removed": {"type": "integer"},
                "generation": {"type": "integer", "description": "The generation the lines were written to, which the segment now serves."},
                "replaced": {"type": "boolean", "description": "Whether the upload replaced the whole membership (`?replace=true`)."},
            },
        },
        "Membership": {
            "type": "object", "required": ["contextKey", "segment", "generation", "member"],
            "properties": {
                "contextKey": {"type": "string"},
                "segment": {"type": "string"},
                "generation": {"type": ["integer", "null"], "description": "The segment's current generation; null before its first upload."},
                "member": {"enum": ["included", "excluded", "none"]},
            },
        },
        "KillState": {
            "type": "object", "required": ["flag", "killed", "changed"],
            "properties": {
                "flag": {"type": "string"},
                "killed": {"type": "boolean"},
                "changed": {"type": "boolean", "description": "False when it already was in that state."},
            },
        },
        "KilledList": {
            "type": "object", "required": ["killed"],
            "properties": {"killed": {"type": "array", "items": {"type": "string"}}},
        },
        "OverrideRequest": {
            "type": "object", "required": ["variation"], "additionalProperties": false,
            "properties": {"variation": {"type": "integer", "minimum": 0}},
        },
        "Override": {
            "type": "object", "required": ["contextKind", "contextKey", "variation"],
            "properties": {
                "contextKind": {"type": "string"},
                "contextKey": {"type": "string"},
                "variation": {"type": "integer"},
                "previous": {"type": ["integer", "null"], "description": "Set answers only: the variation it had."},
            },
        },
        "OverrideList": list("Override"),
        "AuditEntry": {
            "type": "object",
            "required": ["id", "itemKind", "itemKey", "action", "actor", "at"],
            "properties": {
                "id": {"type": "integer"},
                "env": {"type": ["string", "null"]},
                "itemKind": {"enum": ["environment", "flag", "segment", "api_key"]},
                "itemKey": {"type": "string"},
                "action": {"enum": ["create", "update", "replace", "archive", "unarchive", "delete", "update_targets", "kill", "unkill", "set_override", "remove_override", "revoke"]},
                "actor": {
                    "type": "object",
                    "properties": {"keyId": {"type": ["integer", "null"]}, "name": {"type": "string"}},
                },
                "before": {},
                "after": {},
                "at": {"type": "integer", "description": "Unix milliseconds."},
            },
        },
        "AuditList": list("AuditEntry"),
        "NewEnvironmentKey": {
            "type": "object", "required": ["kind", "name"], "additionalProperties": false,
            "properties": {"kind": {"enum": ["sdk", "admin"]}, "name": {"type": "string"}},
        },
        "NewGlobalKey": {
            "type": "object", "required": ["name"], "additionalProperties": false,
            "properties": {"kind": {"const": "admin"}, "name": {"type": "string"}},
        },
        "ApiKey": {"type": "object", "properties": api_key_properties},
        "ApiKeyList": list("ApiKey"),
        "CreatedKey": {"type": "object", "required": ["key", "id"], "properties": created_key_properties},
    })
}
