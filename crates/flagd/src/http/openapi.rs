//! The OpenAPI 3.1 document of everything one flagd answers over HTTP, served at
//! `GET /openapi.json` in every mode: the native evaluation API, OFREP, the LaunchDarkly SDK
//! endpoints, health and metrics, the document itself, and in root mode the admin API under
//! `/api/v1`.
//!
//! The document is made once, when the router is built, from the routes the router was given
//! ([`super::App::routes`]): each is described here, or for the admin API by the operation of
//! the admin document ([`crate::admin::openapi_document`]), so the two documents cannot drift.
//! A route described nowhere is left out, which the tests catch. What the document says about
//! keys is this instance's: no key when none is configured, a configured key in file and proxy
//! mode, a stored SDK key of one environment in root mode (with its 403 and 503 answers).

use axum::http::Method;
use serde_json::{Map, Value, json};

use crate::state::{AppState, Mode};

/// One route the service answers: a method and a path template (`{name}` marks a parameter,
/// as in OpenAPI).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServedRoute {
    /// The method the route answers.
    pub method: Method,
    /// The path template, as the router was given it (the admin API's with its `/api/v1`).
    pub path: String,
}

/// Where the server serves the admin API (root mode).
pub(super) const ADMIN_PREFIX: &str = "/api/v1";

/// Where the server serves this document.
pub(super) const DOCUMENT_PATH: &str = "/openapi.json";

/// The document describing `served`, as `state`'s server answers them.
pub(super) fn document(state: &AppState, served: &[ServedRoute]) -> Value {
    let instance = Instance::of(state);
    let admin = served
        .iter()
        .any(|route| admin_path(&route.path).is_some())
        .then(crate::admin::openapi_document);
    let mut paths = Map::new();
    for route in served {
        let method = route.method.as_str().to_ascii_lowercase();
        let operation = match (admin_path(&route.path), &admin) {
            (Some(path), Some(admin)) => admin_operation(admin, &method, path),
            _ => operation(instance, &route.method, &route.path),
        };
        // A route described nowhere is left out, and the tests name it.
        let Some(operation) = operation else { continue };
        if let Value::Object(item) = paths.entry(route.path.clone()).or_insert_with(|| json!({})) {
            item.insert(method, operation);
        }
    }
    let mut components = json!({
        "schemas": schemas(instance),
        "responses": responses(instance.keys),
        "headers": headers(),
        "securitySchemes": security_schemes(instance),
    });
    if let Some(admin) = &admin {
        for part in ["schemas", "responses", "securitySchemes"] {
            if let (Some(Value::Object(ours)), Some(Value::Object(theirs))) = (
                components.get_mut(part),
                admin.pointer(&format!("/components/{part}")),
            ) {
                for (name, value) in theirs {
                    ours.entry(name.clone()).or_insert_with(|| value.clone());
                }
            }
        }
    }
    let mut tags = vec![
        json!({"name": "evaluation", "description": "flagd's native evaluation API: LaunchDarkly contexts in, LaunchDarkly evaluation details out."}),
        json!({"name": "ofrep", "description": "The OpenFeature Remote Evaluation Protocol, for OpenFeature SDKs and their OFREP providers."}),
        json!({"name": "sdk", "description": "The endpoints LaunchDarkly's server-side SDKs use (polling, streaming, events), so an official SDK with its base, stream and events URIs pointed at flagd works unchanged."}),
        json!({"name": "health", "description": "Liveness, readiness, Prometheus metrics and this document: for operators and tools, with no key."}),
    ];
    if admin.is_some() {
        tags.push(json!({"name": "admin", "description": "The admin API (root mode): environments, flags, segments, the kill set, overrides, the audit log and API keys. Errors are RFC 9457 problem documents."}));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "flagd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": instance.description(),
        },
        "tags": tags,
        "paths": paths,
        "components": components,
    })
}

/// The admin API's own path of `path`, when `path` is one of its routes.
fn admin_path(path: &str) -> Option<&str> {
    path.strip_prefix(ADMIN_PREFIX)
        .filter(|rest| rest.starts_with('/'))
}

/// The admin document's operation for `method` on its `path`, which needs the admin key unless
/// it says otherwise (its document sets the key for all operations at its top level, which this
/// document does not).
fn admin_operation(admin: &Value, method: &str, path: &str) -> Option<Value> {
    let mut operation = admin.get("paths")?.get(path)?.get(method)?.clone();
    if let Value::Object(map) = &mut operation {
        map.entry("security")
            .or_insert_with(|| json!([{"adminKey": []}]));
    }
    Some(operation)
}

/// What the document says depends on: how SDK keys are checked, and which `/readyz` body the
/// mode answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instance {
    keys: Keys,
    mode: ModeKind,
}

/// How the evaluation and SDK routes check keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// No key is configured: nothing is checked.
    Open,
    /// The keys given with `--sdk-key` (file and proxy mode).
    Configured,
    /// Stored SDK keys, each of one environment, which it selects (root mode).
    Stored,
}

/// Which mode the server runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeKind {
    File,
    Root,
    Proxy,
}

impl Instance {
    fn of(state: &AppState) -> Instance {
        let mode = match state.mode {
            Mode::File { .. } => ModeKind::File,
            Mode::Root { .. } => ModeKind::Root,
            Mode::Proxy { .. } => ModeKind::Proxy,
        };
        let keys = match mode {
            ModeKind::Root => Keys::Stored,
            _ if state.keys.required() => Keys::Configured,
            _ => Keys::Open,
        };
        Instance { keys, mode }
    }

    fn description(self) -> String {
        let mode = match self.mode {
            ModeKind::File => "file mode: one environment, read from flag files",
            ModeKind::Proxy => "proxy mode: one environment, followed from an upstream flagd",
            ModeKind::Root => {
                "root mode: every environment of a database, each selected by the SDK key a request presents; the admin API is under `/api/v1`"
            }
        };
        let keys = match self.keys {
            Keys::Open => "This server checks no SDK key: none is configured.",
            Keys::Configured => {
                "The evaluation and SDK routes need one of the configured SDK keys, in `Authorization` (the bare key, as LaunchDarkly's SDKs send it, or `Bearer KEY`) or in `X-API-Key`."
            }
            Keys::Stored => {
                "The evaluation and SDK routes need a stored SDK key of one environment, in `Authorization` (the bare key, as LaunchDarkly's SDKs send it, or `Bearer KEY`) or in `X-API-Key`; the key selects the environment served. The admin API needs an admin key as `Authorization: Bearer KEY`."
            }
        };
        format!(
            "The HTTP API of this flagd, in {mode}. {keys} Health, readiness, metrics and this document need no key. Errors of the native and SDK routes are `{{\"error\": CODE, \"message\": TEXT}}`; OFREP errors carry `errorCode` and `errorDetails`."
        )
    }
}

/// The description of `method` on `path` (a route outside the admin API), or `None` for a
/// route this document does not know.
fn operation(instance: Instance, method: &Method, path: &str) -> Option<Value> {
    let keys = instance.keys;
    let operation = match (method.as_str(), path) {
        ("POST", "/v1/evaluate/{flagKey}") => Operation::new(
            "evaluateFlag",
            "evaluation",
            "Evaluate one flag for a context",
        )
        .describe("The flag's value, variation index and LaunchDarkly reason for the context, with the kill set and overrides applied. With a descriptor set, a declared flag that would serve no value answers 200 with its compiled default, a null `variationIndex` and `\"source\":\"COMPILED_DEFAULT\"` in the reason.")
        .path_param("flagKey", "The flag key, percent-encoded.")
        .json_body(true, "EvaluationRequest")
        .answer(200, json_answer("The evaluation.", "Evaluation"))
        .answer(400, or_plain_text(json_answer("The body is not JSON (`INVALID_JSON`), not an object with a `context` (`INVALID_REQUEST`), or its context is not a valid LaunchDarkly context (`INVALID_CONTEXT`); or the flag key is not UTF-8 once percent-decoded (plain text).", "Error")))
        .answer(404, json_answer("No such flag: the reason is `ERROR` with `errorKind` `FLAG_NOT_FOUND`, and `value` and `variationIndex` are null.", "Evaluation"))
        .answer(503, json_answer("No flag data has been loaded yet: the reason is `ERROR` with `errorKind` `CLIENT_NOT_READY`.", "Evaluation"))
        .keyed(keys)
        .limited(true),
        ("POST", "/v1/evaluate") => Operation::new(
            "evaluateAllFlags",
            "evaluation",
            "Evaluate every flag for a context",
        )
        .describe("Every flag's value, variation index and reason for the context, by flag key in key order. With a descriptor set, declared flags that would serve no value, and declared flags the data lacks, answer with their compiled defaults.")
        .json_body(true, "EvaluationRequest")
        .answer(200, json_answer("Every flag's evaluation.", "AllEvaluations"))
        .answer(400, json_answer("The body is not JSON (`INVALID_JSON`), not an object with a `context` (`INVALID_REQUEST`), or its context is not a valid LaunchDarkly context (`INVALID_CONTEXT`).", "Error"))
        .answer(503, retry_after(json_answer("No flag data has been loaded yet (`NOT_READY`).", "Error")))
        .keyed(keys)
        .limited(true),
        ("POST", "/ofrep/v1/evaluate/flags/{key}") => Operation::new(
            "ofrepEvaluateFlag",
            "ofrep",
            "Evaluate one flag (OFREP)",
        )
        .describe("OFREP's single-flag evaluation. The variant is the variation index as a string; `value` and `variant` are absent when the flag serves no variation (off without an off variation), so that the provider serves the caller's default.")
        .path_param("key", "The flag key, percent-encoded.")
        .json_body(false, "OfrepRequest")
        .answer(200, json_answer("The evaluation.", "OfrepSuccess"))
        .answer(400, or_plain_text(or_body_error("`PARSE_ERROR` (the body is not a JSON object), `INVALID_CONTEXT`, `TARGETING_KEY_MISSING`, or `GENERAL` (the flag could not be evaluated, say a malformed flag), naming the flag; `{\"error\", \"message\"}` when the body could not be read; plain text when the flag key is not UTF-8 once percent-decoded.", "OfrepError")))
        .answer(404, json_answer("No such flag (`FLAG_NOT_FOUND`).", "OfrepError"))
        .answer(503, json_answer("No flag data has been loaded yet (`PROVIDER_NOT_READY`).", "OfrepError"))
        .keyed(keys)
        .limited(true),
        ("POST", "/ofrep/v1/evaluate/flags") => Operation::new(
            "ofrepEvaluateAllFlags",
            "ofrep",
            "Evaluate every flag (OFREP bulk evaluation)",
        )
        .describe("OFREP's bulk evaluation: every flag, in key order, each a success or an error naming the flag. The answer carries an `ETag` over the data, the kill set and overrides, the declared flags and the context; a request whose `If-None-Match` lists it gets 304 without an evaluation.")
        .header_param("If-None-Match", "ETags the caller holds (or `*`); weak tags match their strong form.")
        .json_body(false, "OfrepRequest")
        .answer(200, etag(json_answer("Every flag's evaluation.", "OfrepBulk")))
        .answer(304, etag(json!({"description": "The caller's answer is current; no body."})))
        .answer(400, or_body_error("`PARSE_ERROR` (the body is not a JSON object), `INVALID_CONTEXT` or `TARGETING_KEY_MISSING`, without a flag key; `{\"error\", \"message\"}` when the body could not be read.", "OfrepError"))
        .answer(503, json_answer("No flag data has been loaded yet (`PROVIDER_NOT_READY`).", "OfrepError"))
        .keyed(keys)
        .limited(true),
        ("GET", "/ofrep/v1/configuration") => Operation::new(
            "ofrepConfiguration",
            "ofrep",
            "What OFREP providers may rely on",
        )
        .describe("The provider configuration of OFREP: polling for changes (at most once a second) and the value types served.")
        .answer(200, json_answer("The configuration.", "OfrepConfiguration"))
        .keyed(keys)
        .limited(false),
        ("GET", "/sdk/latest-all") => Operation::new(
            "sdkLatestAll",
            "sdk",
            "Every flag and segment (LaunchDarkly SDK polling)",
        )
        .describe("The served flags and segments in LaunchDarkly's server-side model, kills and overrides placed inside the flags as SDKs understand them, with an `ETag` of the data; a request whose `If-None-Match` lists it gets 304.")
        .header_param("If-None-Match", "ETags the caller holds (or `*`); weak tags match their strong form.")
        .answer(200, etag(json_answer("All flags and segments.", "SdkData")))
        .answer(304, etag(json!({"description": "The caller's data is current; no body."})))
        .answer(503, retry_after(json_answer("No flag data has been loaded yet (`NOT_READY`).", "Error")))
        .keyed(keys)
        .limited(false),
        ("GET", "/all") => Operation::new(
            "sdkStream",
            "sdk",
            "Follow every change (LaunchDarkly SDK streaming)",
        )
        .describe("A server-sent event stream: a `put` with all data (`{\"path\":\"/\",\"data\":{\"flags\":{...},\"segments\":{...}}}`), then a `patch` per changed item (`{\"path\":\"/flags/KEY\",\"data\":{...}}`, or `/segments/KEY`) and a `delete` per removed one (`{\"path\":\"/flags/KEY\",\"version\":N}`). A client that falls too far behind gets a fresh `put`. A comment line keeps a quiet stream alive. Before any data the stream opens and sends its `put` when data arrives. Streams have no time limit and no concurrency limit but their own cap.")
        .answer(200, json!({
            "description": "The stream, until the server shuts down.",
            "content": {"text/event-stream": {"schema": {"type": "string", "description": "`event:` and `data:` lines, one JSON object per `data:` line."}}},
        }))
        .answer(503, retry_after(json_answer("As many streams are open as the server takes (`TOO_MANY_STREAMS`).", "Error")))
        .keyed(keys),
        ("POST", "/bulk") => Operation::new(
            "sdkBulkEvents",
            "sdk",
            "Hand in analytics events (LaunchDarkly SDK events)",
        )
        .describe("A JSON array of analytics events in LaunchDarkly's server-side format (and flagd SDKs' `metrics` events), checked whole and passed to the event exporters of the key's environment. One event flagd cannot read refuses the whole payload, naming the event and the field.")
        .json_body(true, "SdkEvents")
        .answer(202, json!({"description": "Accepted; no body."}))
        .answer(400, json_answer("The body is not JSON (`INVALID_JSON`), or not an array of events, or an event has a field of the wrong type (`INVALID_REQUEST`, naming it as `[3].creationDate`).", "Error"))
        .keyed(keys)
        .limited(true),
        ("POST", "/diagnostic") => Operation::new(
            "sdkDiagnosticEvent",
            "sdk",
            "Hand in a diagnostic event (LaunchDarkly SDK events)",
        )
        .describe("One diagnostic event object, which is counted by its `kind`.")
        .json_body(true, "DiagnosticEvent")
        .answer(202, json!({"description": "Accepted; no body."}))
        .answer(400, json_answer("The body is not JSON (`INVALID_JSON`), not an object, or its `kind` is missing or not a string (`INVALID_REQUEST`).", "Error"))
        .keyed(keys)
        .limited(true),
        ("GET", "/healthz") => Operation::new("healthz", "health", "Liveness: the process answers")
            .answer(200, json_answer("Alive.", "Alive")),
        ("GET", "/readyz") => Operation::new(
            "readyz",
            "health",
            "Readiness: whether flag data is served, and the source's health",
        )
        .describe("200 while data is served, whatever the source's state (`SERVING`; `DEGRADED`, `STALE` or, in proxy mode, `DOWN` while the last good data keeps serving); 503 before any data. The body has the same shape on both, and reports the last error.")
        .answer(200, json_answer("Data is served.", "Readiness"))
        .answer(503, json_answer("No data yet.", "Readiness")),
        ("GET", "/metrics") => Operation::new("metrics", "health", "Prometheus metrics")
            .answer(200, json!({
                "description": "The metrics in Prometheus text exposition, OpenMetrics 1.0.0 flavour (`application/openmetrics-text; version=1.0.0; charset=utf-8`).",
                "content": {"application/openmetrics-text": {"schema": {"type": "string"}}},
            })),
        ("GET", DOCUMENT_PATH) => Operation::new(
            "openApiDocument",
            "health",
            "This server's OpenAPI 3.1 document",
        )
        .answer(200, json!({
            "description": "This document.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        })),
        _ => return None,
    };
    Some(operation.0.into())
}

/// An operation being described.
struct Operation(Map<String, Value>);

impl Operation {
    fn new(id: &str, tag: &str, summary: &str) -> Operation {
        let mut map = Map::new();
        map.insert("operationId".to_owned(), json!(id));
        map.insert("summary".to_owned(), json!(summary));
        map.insert("tags".to_owned(), json!([tag]));
        map.insert("responses".to_owned(), json!({}));
        Operation(map)
    }

    fn describe(mut self, text: &str) -> Operation {
        self.0.insert("description".to_owned(), json!(text));
        self
    }

    fn parameter(mut self, parameter: Value) -> Operation {
        if let Value::Array(list) = self
            .0
            .entry("parameters")
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(parameter);
        }
        self
    }

    fn path_param(self, name: &str, description: &str) -> Operation {
        self.parameter(json!({
            "name": name, "in": "path", "required": true,
            "description": description, "schema": {"type": "string"},
        }))
    }

    fn header_param(self, name: &str, description: &str) -> Operation {
        self.parameter(json!({
            "name": name, "in": "header", "required": false,
            "description": description, "schema": {"type": "string"},
        }))
    }

    /// An `application/json` request body of component schema `schema`. flagd does not read
    /// the `Content-Type`: any body is read as JSON.
    fn json_body(mut self, required: bool, schema: &str) -> Operation {
        self.0.insert(
            "requestBody".to_owned(),
            json!({
                "required": required,
                "content": {"application/json": {"schema": schema_ref(schema)}},
            }),
        );
        self
    }

    fn answer(mut self, status: u16, response: Value) -> Operation {
        if let Some(Value::Object(responses)) = self.0.get_mut("responses") {
            responses.insert(status.to_string(), response);
        }
        self
    }

    /// The SDK-key check as this server makes it: nothing when no key is configured; else
    /// the key and its 401, and in root mode the 403 of a key that opens no environment and
    /// the 503 of a store that cannot tell.
    fn keyed(mut self, keys: Keys) -> Operation {
        if keys == Keys::Open {
            return self;
        }
        self.0.insert(
            "security".to_owned(),
            json!([{"sdkKey": []}, {"sdkKeyBearer": []}, {"sdkKeyHeader": []}]),
        );
        self = self.answer(401, response_ref("Unauthorized"));
        if keys != Keys::Stored {
            return self;
        }
        self = self.answer(403, response_ref("Forbidden"));
        if let Some(Value::Object(unavailable)) =
            self.0.get_mut("responses").and_then(|r| r.get_mut("503"))
        {
            // The route answers 503 of its own: say that the key check may too.
            let own = unavailable
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let both = format!("{own} {STORE_UNAVAILABLE}");
            unavailable.insert("description".to_owned(), json!(both));
            return self;
        }
        self.answer(503, response_ref("StoreUnavailable"))
    }

    /// The limits of a route that counts against the concurrency limit (429), and when it
    /// reads a body, the body and time limits (413, 408).
    fn limited(mut self, reads_body: bool) -> Operation {
        self = self.answer(429, response_ref("TooManyRequests"));
        if reads_body {
            self = self
                .answer(408, response_ref("RequestTimeout"))
                .answer(413, response_ref("PayloadTooLarge"));
        }
        self
    }
}

/// What a root-mode 503 adds when the route has a 503 of its own.
const STORE_UNAVAILABLE: &str = "Also, with no body and a `Retry-After`, when the store cannot tell now whether the SDK key is valid (root mode).";

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// A JSON answer of component schema `schema`.
fn json_answer(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": schema_ref(schema)}},
    })
}

/// A JSON answer of the protocol's own error shape `schema`, or of [`crate::http::error`]'s
/// for a body that could not be read at all.
fn or_body_error(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"oneOf": [schema_ref(schema), schema_ref("Error")]}}},
    })
}

/// `response`, which may also be plain text: axum's own answer to a path parameter that does
/// not decode.
fn or_plain_text(mut response: Value) -> Value {
    response["content"]["text/plain"] = json!({"schema": {"type": "string"}});
    response
}

/// `response` with a `Retry-After` header.
fn retry_after(mut response: Value) -> Value {
    response["headers"] = json!({"Retry-After": {"$ref": "#/components/headers/RetryAfter"}});
    response
}

/// `response` with an `ETag` header.
fn etag(mut response: Value) -> Value {
    response["headers"] = json!({"ETag": {"$ref": "#/components/headers/ETag"}});
    response
}

fn headers() -> Value {
    json!({
        "RetryAfter": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 0},
        },
        "ETag": {
            "description": "A strong tag of the answer, quoted; send it back in `If-None-Match`.",
            "schema": {"type": "string"},
        },
    })
}

/// The shared answers: the limits', and the key check's as this server makes it (a component
/// no operation uses is left out).
fn responses(keys: Keys) -> Value {
    let mut responses = json!({
        "TooManyRequests": {
            "description": "As many requests are being answered as the server takes at once (`TOO_MANY_REQUESTS`); retry later.",
            "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
            "content": {"application/json": {"schema": schema_ref("Error")}},
        },
        "RequestTimeout": {
            "description": "The body did not arrive, or the answer was not ready, within the time limits (`REQUEST_TIMEOUT`).",
            "content": {"application/json": {"schema": schema_ref("Error")}},
        },
        "PayloadTooLarge": {
            "description": "The body is over the route's limit (`PAYLOAD_TOO_LARGE`).",
            "content": {"application/json": {"schema": schema_ref("Error")}},
        },
    });
    if keys != Keys::Open {
        responses["Unauthorized"] = json!({
            "description": "No SDK key, or one that is not accepted (`UNAUTHORIZED`); the message says which, and where a key goes.",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
            "content": {"application/json": {"schema": schema_ref("Error")}},
        });
    }
    if keys == Keys::Stored {
        responses["Forbidden"] = json!({
            "description": "The key exists but opens no environment for evaluation: an admin key, or a key for every environment (`FORBIDDEN`).",
            "content": {"application/json": {"schema": schema_ref("Error")}},
        });
        responses["StoreUnavailable"] = json!({
            "description": "The store cannot tell now whether the SDK key is valid; no body.",
            "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
        });
    }
    responses
}

fn security_schemes(instance: Instance) -> Value {
    if instance.keys == Keys::Open {
        return json!({});
    }
    let which = match instance.keys {
        Keys::Stored => {
            "A stored SDK key of one environment, which selects the environment served."
        }
        _ => "One of the SDK keys the server was given.",
    };
    json!({
        "sdkKey": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": format!("{which} The bare key as the whole header, as LaunchDarkly's SDKs send it."),
        },
        "sdkKeyBearer": {
            "type": "http", "scheme": "bearer",
            "description": format!("{which} `Authorization: Bearer KEY`."),
        },
        "sdkKeyHeader": {
            "type": "apiKey", "in": "header", "name": "X-API-Key",
            "description": format!("{which} As some OFREP providers send it."),
        },
    })
}

fn schemas(instance: Instance) -> Value {
    let nullable_count = json!({"type": ["integer", "null"], "minimum": 0});
    let nullable_text = json!({"type": ["string", "null"]});
    let status = json!({
        "enum": ["CONNECTING", "SERVING", "DEGRADED", "STALE", "DOWN"],
        "description": "`CONNECTING` before any data; `SERVING`; `DEGRADED` after 3 failed attempts in a row, still serving the last data; `STALE` serving what Redis held at start; `DOWN` (proxy mode) when the upstream refused the key.",
    });
    let redis = json!({
        "type": "object",
        "description": "With `--redis-url`: whether every environment's data is written into Redis (`OK`, `DOWN`, `CONNECTING`), and per environment when it last was.",
        "properties": {
            "status": {"enum": ["OK", "DOWN", "CONNECTING"]},
            "environments": {"type": "object"},
        },
    });
    let descriptors = json!({
        "type": "object",
        "description": "With `--descriptors`: the descriptor set in use, and why the file's latest content is not, when it is bad.",
        "properties": {
            "file": {"type": "string"},
            "loaded": {"type": "boolean"},
            "digest": nullable_text,
            "features": {"type": "integer"},
            "flags": {"type": "integer"},
            "loadedAt": nullable_text,
            "lastError": nullable_text,
            "lastErrorAt": nullable_text,
        },
    });
    let data = json!({
        "flags": nullable_count,
        "segments": nullable_count,
        "generation": nullable_count,
        "dataDigest": nullable_text,
    });
    let mut readiness = match instance.mode {
        ModeKind::File => json!({
            "type": "object",
            "required": ["status", "consecutiveFailures", "warnings", "files", "stale"],
            "properties": {
                "lastReloadAt": nullable_text,
                "lastError": nullable_text,
                "lastErrorAt": nullable_text,
                "consecutiveFailures": {"type": "integer", "minimum": 0},
                "warnings": {"type": "array", "items": {"type": "string"}},
                "files": {"type": "array", "items": {"type": "string"}},
                "stale": {"type": "boolean", "description": "The data served was read from Redis at start, the files giving nothing."},
            },
        }),
        ModeKind::Proxy => json!({
            "type": "object",
            "required": ["status", "stale", "source", "upstream", "consecutiveFailures"],
            "properties": {
                "stale": {"type": "boolean"},
                "source": {"enum": ["upstream", "redis"]},
                "upstream": {"type": "string", "description": "The upstream flagd's URL."},
                "secondsSinceLastContact": {"type": ["integer", "null"]},
                "lastError": nullable_text,
                "consecutiveFailures": {"type": "integer", "minimum": 0},
            },
        }),
        ModeKind::Root => json!({
            "type": "object",
            "required": ["status", "source", "consecutiveFailures", "environments"],
            "properties": {
                "source": {"enum": ["database", "redis"]},
                "secondsSinceLastContact": {"type": ["integer", "null"]},
                "lastSuccessUnixMs": {"type": ["integer", "null"]},
                "consecutiveFailures": {"type": "integer", "minimum": 0},
                "lastError": nullable_text,
                "environments": {
                    "type": "object",
                    "description": "Each environment served, by key.",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "flags": nullable_count,
                            "segments": nullable_count,
                            "generation": nullable_count,
                            "dataDigest": nullable_text,
                            "killed": {"type": "array", "items": {"type": "string"}},
                            "stale": {"type": "boolean"},
                        },
                    },
                },
            },
        }),
    };
    if let Some(Value::Object(properties)) = readiness.get_mut("properties") {
        properties.insert("status".to_owned(), status);
        properties.insert("redis".to_owned(), redis);
        properties.insert("descriptors".to_owned(), descriptors);
        if instance.mode != ModeKind::Root
            && let Value::Object(data) = data
        {
            properties.extend(data);
        }
    }
    let reason_kinds = [
        "OFF",
        "FALLTHROUGH",
        "TARGET_MATCH",
        "RULE_MATCH",
        "PREREQUISITE_FAILED",
        "ERROR",
    ];
    let error_kinds = [
        "CLIENT_NOT_READY",
        "FLAG_NOT_FOUND",
        "MALFORMED_FLAG",
        "USER_NOT_SPECIFIED",
        "WRONG_TYPE",
        "EXCEPTION",
    ];
    let evaluation_members = json!({
        "value": {"description": "The value served (any JSON); null when none is."},
        "variationIndex": {"type": ["integer", "null"], "minimum": 0},
        "reason": schema_ref("Reason"),
    });
    let mut evaluation = evaluation_members.clone();
    evaluation["key"] = json!({"type": "string"});
    json!({
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "A stable code: `INVALID_JSON`, `INVALID_REQUEST`, `INVALID_CONTEXT`, `NOT_READY`, `TOO_MANY_STREAMS`, `TOO_MANY_REQUESTS`, `REQUEST_TIMEOUT`, `PAYLOAD_TOO_LARGE`, `NOT_FOUND` (no such route), `METHOD_NOT_ALLOWED`."},
                "message": {"type": "string", "description": "What is wrong, safe to show."},
            },
        },
        "Context": {
            "type": "object",
            "description": "A LaunchDarkly context: one kind (`{\"kind\": \"user\", \"key\": \"u1\", ...attributes}`; a context without `kind` is a `user`) or several (`{\"kind\": \"multi\", \"user\": {\"key\": ...}, \"org\": {\"key\": ...}}`), with `anonymous`, `name` and `_meta.privateAttributes`.",
            "properties": {
                "kind": {"type": "string"},
                "key": {"type": "string"},
                "name": {"type": "string"},
                "anonymous": {"type": "boolean"},
                "_meta": {"type": "object"},
            },
        },
        "EvaluationRequest": {
            "type": "object",
            "required": ["context"],
            "properties": {"context": schema_ref("Context")},
        },
        "Reason": {
            "type": "object",
            "required": ["kind"],
            "description": "Why the value was served: LaunchDarkly's evaluation reason.",
            "properties": {
                "kind": {"enum": reason_kinds},
                "ruleIndex": {"type": "integer", "description": "`RULE_MATCH`: the rule's index."},
                "ruleId": {"type": "string", "description": "`RULE_MATCH`: the rule's id."},
                "prerequisiteKey": {"type": "string", "description": "`PREREQUISITE_FAILED`: the prerequisite that failed."},
                "errorKind": {"enum": error_kinds, "description": "`ERROR`: what went wrong."},
                "inExperiment": {"type": "boolean", "description": "The context is in an experiment."},
                "killed": {"type": "boolean", "description": "`OFF`: the flag is in the kill set."},
                "override": {"type": "boolean", "description": "`TARGET_MATCH`: an override pinned the context to the variation."},
                "bigSegmentsStatus": {"enum": ["HEALTHY", "STALE", "STORE_ERROR", "NOT_CONFIGURED"], "description": "When a big segment was consulted: the state of its store."},
                "source": {"const": "COMPILED_DEFAULT", "description": "The value is a declared flag's compiled default; the rest of the reason is the evaluation's that served no value."},
            },
        },
        "Evaluation": {
            "type": "object",
            "required": ["key", "value", "variationIndex", "reason"],
            "properties": evaluation,
        },
        "FlagEvaluation": {
            "type": "object",
            "required": ["value", "variationIndex", "reason"],
            "properties": evaluation_members,
        },
        "AllEvaluations": {
            "type": "object",
            "required": ["flags"],
            "properties": {"flags": {
                "type": "object",
                "description": "Each flag's evaluation, by flag key.",
                "additionalProperties": schema_ref("FlagEvaluation"),
            }},
        },
        "OfrepContext": {
            "type": "object",
            "description": "An OpenFeature evaluation context. `targetingKey` becomes the LaunchDarkly context key (`key` is taken too). A context with a `kind` is read as LaunchDarkly context JSON (so `\"kind\": \"multi\"` works); any other is a `user` context with the other members as attributes.",
            "properties": {"targetingKey": {"type": "string"}, "kind": {"type": "string"}},
        },
        "OfrepRequest": {
            "type": "object",
            "description": "An empty body, or one without `context`, is a context without a targeting key.",
            "properties": {"context": schema_ref("OfrepContext")},
        },
        "OfrepSuccess": {
            "type": "object",
            "required": ["key", "reason", "metadata"],
            "properties": {
                "key": {"type": "string"},
                "value": {"description": "The value served; absent when the flag serves no variation."},
                "reason": {"enum": ["STATIC", "DEFAULT", "TARGETING_MATCH", "SPLIT", "DISABLED"]},
                "variant": {"type": "string", "description": "The variation index, as a string; absent with `value`, and for a compiled default."},
                "metadata": {
                    "type": "object",
                    "description": "Empty, or for a declared flag's compiled default `{\"source\": \"COMPILED_DEFAULT\", \"reasonKind\": KIND}` with `errorKind` for an `ERROR`.",
                    "properties": {
                        "source": {"const": "COMPILED_DEFAULT"},
                        "reasonKind": {"enum": reason_kinds},
                        "errorKind": {"enum": error_kinds},
                    },
                },
            },
        },
        "OfrepError": {
            "type": "object",
            "required": ["errorCode", "errorDetails"],
            "properties": {
                "key": {"type": "string", "description": "The flag, on the single-flag route and in bulk answers."},
                "errorCode": {"enum": ["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL", "FLAG_NOT_FOUND", "PROVIDER_NOT_READY"]},
                "errorDetails": {"type": "string"},
            },
        },
        "OfrepBulk": {
            "type": "object",
            "required": ["flags"],
            "properties": {"flags": {
                "type": "array",
                "items": {"oneOf": [schema_ref("OfrepSuccess"), schema_ref("OfrepError")]},
            }},
        },
        "OfrepConfiguration": {
            "type": "object",
            "required": ["name", "capabilities"],
            "properties": {
                "name": {"type": "string"},
                "capabilities": {
                    "type": "object",
                    "properties": {
                        "cacheInvalidation": {"type": "object", "properties": {"polling": {
                            "type": "object",
                            "properties": {
                                "enabled": {"type": "boolean"},
                                "minPollingIntervalMs": {"type": "integer"},
                            },
                        }}},
                        "flagEvaluation": {"type": "object", "properties": {"supportedTypes": {
                            "type": "array", "items": {"type": "string"},
                        }}},
                    },
                },
            },
        },
        "SdkData": {
            "type": "object",
            "required": ["flags", "segments"],
            "properties": {
                "flags": {
                    "type": "object",
                    "description": "Each flag in LaunchDarkly's server-side model (`on`, `variations`, `offVariation`, `fallthrough`, `targets`, `contextTargets`, `rules`, `prerequisites`, `salt`, `version`, ...), by key.",
                    "additionalProperties": {"type": "object"},
                },
                "segments": {
                    "type": "object",
                    "description": "Each segment in LaunchDarkly's model, by key.",
                    "additionalProperties": {"type": "object"},
                },
            },
        },
        "SdkEvents": {
            "type": "array",
            "description": "Events in LaunchDarkly's server-side format: `feature`, `debug`, `custom`, `summary`, `identify`, `index`, and flagd SDKs' `metrics`; other kinds are counted and dropped.",
            "items": {
                "type": "object",
                "required": ["kind"],
                "properties": {
                    "kind": {"type": "string"},
                    "creationDate": {"type": "integer", "description": "Unix milliseconds."},
                },
            },
        },
        "DiagnosticEvent": {
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"type": "string", "description": "`diagnostic-init` or `diagnostic`."}},
        },
        "Alive": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "OK"}},
        },
        "Readiness": readiness,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::convert::Infallible;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{StatusCode, header};
    use axum::response::Response;
    use flags_store::{KeyStore, MemoryStore};
    use http_body_util::BodyExt;
    use tower::Service;

    use super::*;
    use crate::admin::{AdminState, admin_router};
    use crate::config::Config;
    use crate::http::{App, app, app_with_admin};
    use crate::keys::StoreKeys;
    use crate::root::RootHealth;

    /// The document `app` serves at `/openapi.json`, without a key.
    async fn served_document(app: &App) -> Value {
        let response = send(app, Method::GET, DOCUMENT_PATH).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn send(app: &App, method: Method, path: &str) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let mut app = app.clone();
        let response: Result<Response, Infallible> = app.call(request).await;
        response.unwrap()
    }

    /// Whether `response` is one of the router's answers for a path or method it does not
    /// serve: its own 404 and 405, or the admin API's problem documents for them.
    async fn unrouted(response: Response) -> Option<String> {
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Some("405".to_owned());
        }
        if status != StatusCode::NOT_FOUND {
            return None;
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let fallback = body["error"] == "NOT_FOUND" || body["type"] == "urn:flagd:problem:no-route";
        fallback.then(|| body.to_string())
    }

    /// The path of `template` with each parameter given a value.
    fn concrete(template: &str) -> String {
        template
            .split('/')
            .map(|part| {
                if part.starts_with('{') && part.ends_with('}') {
                    "x"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The document describes exactly the routes `app` was given, each with its method, with
    /// an operation id, a summary and a tag; every route it describes is served; and an
    /// OpenAPI 3.1 validator finds nothing wrong with it (references, path templates and
    /// their parameters, schemas, unique operation ids, unused components).
    async fn check_document(app: &App) -> Value {
        let document = served_document(app).await;
        assert_eq!(document["openapi"], "3.1.0");
        let routes: BTreeSet<(String, String)> = app
            .routes()
            .iter()
            .map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.clone()))
            .collect();
        assert_eq!(routes.len(), app.routes().len(), "a route is added twice");
        let mut documented = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                documented.insert((method.clone(), path.clone()));
                let id = operation["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                assert!(operation["summary"].is_string(), "{method} {path}");
                assert!(
                    operation["tags"].as_array().is_some_and(|t| !t.is_empty()),
                    "{method} {path} has no tag"
                );
                assert!(
                    operation["responses"]
                        .as_object()
                        .is_some_and(|r| !r.is_empty())
                );
            }
        }
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        assert!(undocumented.is_empty(), "not documented: {undocumented:?}");
        let unserved: Vec<_> = documented.difference(&routes).collect();
        assert!(unserved.is_empty(), "documented, not routed: {unserved:?}");
        for (method, path) in &documented {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let response = send(app, method.clone(), &concrete(path)).await;
            if let Some(answer) = unrouted(response).await {
                panic!("{method} {path} falls through to the router's fallback: {answer}");
            }
        }
        // The fallback checks above do tell an unrouted request.
        let response = send(app, Method::GET, "/v1/nothing-here").await;
        assert!(unrouted(response).await.is_some());
        let response = send(app, Method::GET, "/v1/evaluate").await;
        assert!(unrouted(response).await.is_some());
        if let Err(problems) = problems_of(&document) {
            panic!("the document is not valid OpenAPI 3.1: {problems}");
        }
        document
    }

    /// What an OpenAPI 3.1 validator (`roas`) finds wrong with `document`: it must read as
    /// the model, and pass every check, none turned off.
    fn problems_of(document: &Value) -> Result<(), String> {
        use roas::validation::Validate;
        let spec: roas::v3_1::spec::Spec =
            serde_json::from_value(document.clone()).map_err(|e| e.to_string())?;
        spec.validate(Default::default(), None)
            .map_err(|e| e.to_string())
    }

    fn file_mode(keys: &[&str]) -> App {
        let mut config = Config::for_tests(vec![]);
        config.sdk_keys = keys.iter().map(|k| (*k).to_owned()).collect();
        app(AppState::new(&config))
    }

    fn root_mode() -> App {
        let config = Config::for_tests(vec![]);
        let store = Arc::new(MemoryStore::new());
        let keys = StoreKeys::new(Arc::clone(&store) as Arc<dyn KeyStore>).unwrap();
        let state = AppState::with_mode(
            &config,
            Mode::Root {
                keys: Arc::new(keys),
                health: Arc::new(RootHealth::default()),
            },
        );
        let admin = admin_router(AdminState {
            store,
            bootstrap_admin_key: Some("admin".to_owned()),
            big_segments: None,
        });
        app_with_admin(state, Some(admin))
    }

    fn proxy_mode() -> App {
        let mut config = Config::for_tests(vec![]);
        config.sdk_keys = vec!["sdk-1".to_owned()];
        let env = Arc::new(crate::env::Env::new(
            crate::env::DEFAULT_ENV,
            config.http.stream_buffer,
        ));
        // Nothing answers there: the proxy stays `CONNECTING`, which is all the document needs.
        let upstream = crate::proxy::Upstream::start(
            &config.upstream,
            "http://127.0.0.1:9",
            Some("sdk-1"),
            Arc::clone(&env),
        )
        .unwrap();
        let mode = Mode::Proxy {
            upstream: Arc::new(upstream),
        };
        app(AppState::with_env(&config, mode, env))
    }

    fn operation_of<'a>(document: &'a Value, method: &str, path: &str) -> &'a Value {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        operation
    }

    #[tokio::test]
    async fn file_mode_documents_every_route_it_serves() {
        let app = file_mode(&[]);
        let document = check_document(&app).await;
        let paths = document["paths"].as_object().unwrap();
        for path in [
            "/v1/evaluate/{flagKey}",
            "/v1/evaluate",
            "/ofrep/v1/evaluate/flags/{key}",
            "/ofrep/v1/evaluate/flags",
            "/ofrep/v1/configuration",
            "/sdk/latest-all",
            "/all",
            "/bulk",
            "/diagnostic",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path}");
        }
        assert!(!paths.keys().any(|p| p.starts_with(ADMIN_PREFIX)));
        // Without a key configured, nothing asks for one.
        let evaluate = operation_of(&document, "post", "/v1/evaluate/{flagKey}");
        assert!(evaluate.get("security").is_none());
        assert!(evaluate["responses"].get("401").is_none());
        assert!(document["paths"]["/readyz"]["get"]["responses"]["200"]["content"].is_object());
        assert!(
            document["components"]["schemas"]["Readiness"]["properties"]
                .get("files")
                .is_some()
        );
    }

    #[tokio::test]
    async fn file_mode_with_keys_documents_the_key() {
        let app = file_mode(&["sdk-1"]);
        let document = check_document(&app).await;
        let evaluate = operation_of(&document, "post", "/ofrep/v1/evaluate/flags");
        assert_eq!(
            evaluate["security"],
            json!([{"sdkKey": []}, {"sdkKeyBearer": []}, {"sdkKeyHeader": []}])
        );
        let statuses: Vec<&str> = evaluate["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for status in ["200", "304", "400", "401", "408", "413", "429", "503"] {
            assert!(statuses.contains(&status), "{status} in {statuses:?}");
        }
        // Only stored keys can be forbidden.
        assert!(!statuses.contains(&"403"));
        assert_eq!(
            document["components"]["securitySchemes"]["sdkKey"]["name"],
            "Authorization"
        );
        // Health needs no key.
        assert!(
            operation_of(&document, "get", "/readyz")
                .get("security")
                .is_none()
        );
        let stream = operation_of(&document, "get", "/all");
        assert!(
            stream["responses"]["200"]["content"]
                .get("text/event-stream")
                .is_some()
        );
    }

    #[tokio::test]
    async fn proxy_mode_documents_its_own_readiness() {
        let app = proxy_mode();
        let document = check_document(&app).await;
        let readiness = &document["components"]["schemas"]["Readiness"]["properties"];
        assert!(readiness.get("upstream").is_some(), "{readiness}");
        assert!(readiness.get("files").is_none(), "{readiness}");
        let description = document["info"]["description"].as_str().unwrap();
        assert!(description.contains("proxy mode"), "{description}");
        let latest = operation_of(&document, "get", "/sdk/latest-all");
        assert!(latest["responses"].get("401").is_some());
    }

    #[tokio::test]
    async fn root_mode_documents_the_admin_api_too() {
        let app = root_mode();
        let document = check_document(&app).await;
        let admin = crate::admin::openapi_document();
        let admin_paths = admin["paths"].as_object().unwrap();
        assert_eq!(
            admin_paths.len(),
            crate::admin::ROUTES
                .iter()
                .map(|r| r.path)
                .collect::<BTreeSet<_>>()
                .len()
        );
        // Every admin operation, under its full path, as the admin document has it.
        for (path, item) in admin_paths {
            for (method, operation) in item.as_object().unwrap() {
                let ours = operation_of(&document, method, &format!("{ADMIN_PREFIX}{path}"));
                assert_eq!(ours["operationId"], operation["operationId"]);
                assert_eq!(ours["tags"], json!(["admin"]));
                let security = if path == "/openapi.json" {
                    json!([])
                } else {
                    json!([{"adminKey": []}])
                };
                assert_eq!(ours["security"], security, "{method} {path}");
            }
        }
        // The admin document's schemas are there, and none has the name of one of ours.
        let ours = schemas(Instance {
            keys: Keys::Stored,
            mode: ModeKind::Root,
        });
        for name in admin["components"]["schemas"].as_object().unwrap().keys() {
            assert!(ours.get(name).is_none(), "schema {name} is defined twice");
            assert!(document["components"]["schemas"].get(name).is_some());
        }
        // Stored keys: 403 for a key that opens no environment, and the store's 503.
        let evaluate = operation_of(&document, "post", "/v1/evaluate");
        assert!(evaluate["responses"].get("403").is_some());
        let unavailable = evaluate["responses"]["503"]["description"]
            .as_str()
            .unwrap();
        assert!(unavailable.contains("root mode"), "{unavailable}");
        let bulk = operation_of(&document, "post", "/bulk");
        assert_eq!(
            bulk["responses"]["503"],
            json!({"$ref": "#/components/responses/StoreUnavailable"})
        );
        assert!(
            document["components"]["schemas"]["Readiness"]["properties"]
                .get("environments")
                .is_some()
        );
        // The admin API's own document is still served where it was.
        let response = send(&app, Method::GET, "/api/v1/openapi.json").await;
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let served: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(served, admin);
    }

    /// The validator of [`check_document`] does find what is wrong with a document, so that
    /// its silence there means something.
    #[tokio::test]
    async fn the_validator_finds_a_broken_document() {
        let document = served_document(&file_mode(&["sdk-1"])).await;
        problems_of(&document).unwrap();
        let broken = |change: fn(&mut Value)| {
            let mut copy = document.clone();
            change(&mut copy);
            problems_of(&copy).unwrap_err()
        };
        type Change = fn(&mut Value);
        let cases: [(Change, &str); 5] = [
            // A path without its leading slash.
            (
                |d| d["paths"]["healthz"] = d["paths"]["/healthz"].clone(),
                "healthz",
            ),
            // A parameter in the body, OpenAPI 2's way.
            (
                |d| {
                    d["paths"]["/v1/evaluate/{flagKey}"]["post"]["parameters"][0]["in"] =
                        json!("body")
                },
                "body",
            ),
            // A schema of a type JSON Schema does not have.
            (
                |d| {
                    d["components"]["schemas"]["Alive"]["properties"]["status"] =
                        json!({"type": "text"})
                },
                "text",
            ),
            // A reference to a schema that is not there.
            (
                |d| {
                    d["components"]["schemas"]["Evaluation"]["properties"]["reason"] =
                        json!({"$ref": "#/components/schemas/Nope"})
                },
                "Nope",
            ),
            // A path parameter the operation does not declare.
            (
                |d| d["paths"]["/v1/evaluate/{flagKey}"]["post"]["parameters"] = json!([]),
                "flagKey",
            ),
        ];
        for (change, sign) in cases {
            let problems = broken(change);
            assert!(problems.contains(sign), "{sign} in {problems}");
        }
    }

    #[tokio::test]
    async fn a_route_without_a_description_is_left_out() {
        let config = Config::for_tests(vec![]);
        let state = AppState::new(&config);
        let served = [
            ServedRoute {
                method: Method::GET,
                path: "/healthz".to_owned(),
            },
            ServedRoute {
                method: Method::GET,
                path: "/not-described".to_owned(),
            },
            ServedRoute {
                method: Method::POST,
                path: "/healthz".to_owned(),
            },
        ];
        let document = document(&state, &served);
        assert_eq!(
            document["paths"],
            json!({"/healthz": {"get": operation(Instance::of(&state), &Method::GET, "/healthz").unwrap()}})
        );
    }
}
