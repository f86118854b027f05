//! Every HTTP route through `app(state).oneshot(...)`: status codes and exact JSON shapes.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use flagd::{AppState, Config};
use serde_json::{Value, json};

fn ctx(context: Value) -> String {
    json!({ "context": context }).to_string()
}

// ---------------------------------------------------------------- native API

#[tokio::test]
async fn native_single_flag_answers() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let cases = [
        (
            "bool-flag",
            json!({"kind": "user", "key": "targeted"}),
            json!({"key": "bool-flag", "value": true, "variationIndex": 1, "reason": {"kind": "TARGET_MATCH"}}),
        ),
        (
            "bool-flag",
            json!({"kind": "user", "key": "someone"}),
            json!({"key": "bool-flag", "value": false, "variationIndex": 0, "reason": {"kind": "FALLTHROUGH"}}),
        ),
        (
            "rule-flag",
            json!({"kind": "user", "key": "u", "country": "FR"}),
            json!({"key": "rule-flag", "value": 3, "variationIndex": 2,
                   "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "r0"}}),
        ),
        (
            "off-flag",
            json!({"kind": "user", "key": "u"}),
            json!({"key": "off-flag", "value": "y", "variationIndex": 1, "reason": {"kind": "OFF"}}),
        ),
        (
            "segment-flag",
            json!({"kind": "user", "key": "beta-user"}),
            json!({"key": "segment-flag", "value": true, "variationIndex": 1,
                   "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "seg"}}),
        ),
        (
            "static-flag",
            json!({"key": "legacy-user-without-kind"}),
            json!({"key": "static-flag", "value": {"color": "blue"}, "variationIndex": 0,
                   "reason": {"kind": "FALLTHROUGH"}}),
        ),
        (
            "org-flag",
            json!({"kind": "multi", "user": {"key": "u"}, "org": {"key": "acme"}}),
            json!({"key": "org-flag", "value": true, "variationIndex": 1,
                   "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "orgs"}}),
        ),
    ];
    for (flag, context, expected) in cases {
        let (status, body) = call(
            &app,
            post(&format!("/v1/evaluate/{flag}"), &ctx(context.clone())),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{flag} {context}");
        assert_eq!(body, expected, "{flag} {context}");
    }
}

/// Flag files and contexts may hold NUL in their strings, as LaunchDarkly's SDKs allow: only a
/// store refuses them, and evaluation never touches one.
#[tokio::test]
async fn nul_in_flag_data_and_contexts_evaluates() {
    let file = json!({"flags": {"f": {"on": true, "variations": ["a\u{0}", "b"],
        "targets": [{"values": ["u\u{0}"], "variation": 0}], "fallthrough": {"variation": 1}}}});
    let (app, _state, _source, _dir) = app_with(&file.to_string());
    let (status, body) = call(
        &app,
        post(
            "/v1/evaluate/f",
            &ctx(json!({"kind": "user", "key": "u\u{0}"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"], "a\u{0}");
    assert_eq!(body["reason"]["kind"], "TARGET_MATCH");
    let (status, body) = call(
        &app,
        post(
            "/ofrep/v1/evaluate/flags/f",
            &ctx(json!({"targetingKey": "v\u{0}", "name": "\u{0}"})),
        ),
    )
    .await;
    assert_eq!(
        (status, body["value"].clone()),
        (StatusCode::OK, json!("b"))
    );
}

#[tokio::test]
async fn native_unknown_flag_is_404_with_an_error_reason() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let (status, body) = call(
        &app,
        post(
            "/v1/evaluate/nope",
            &ctx(json!({"kind": "user", "key": "u"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"key": "nope", "value": null, "variationIndex": null,
               "reason": {"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"}})
    );
}

#[tokio::test]
async fn native_reason_carries_big_segment_status_like_the_sdks() {
    // LaunchDarkly's SDKs put bigSegmentsStatus inside the reason when a flag touches an
    // unbounded segment; with no big-segment store it is NOT_CONFIGURED.
    let flags = r#"{"flags": {"big": {"key": "big", "version": 1, "on": true,
        "variations": ["no", "yes"], "fallthrough": {"variation": 0},
        "rules": [{"id": "r", "variation": 1,
                   "clauses": [{"attribute": "", "op": "segmentMatch", "values": ["bigseg"]}]}]}},
        "segments": {"bigseg": {"key": "bigseg", "version": 1, "unbounded": true,
                                "generation": 2, "included": ["u1"]}}}"#;
    let (app, _state, _source, _dir) = app_with(flags);
    let (status, body) = call(
        &app,
        post(
            "/v1/evaluate/big",
            &ctx(json!({"kind": "user", "key": "u1"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"key": "big", "value": "no", "variationIndex": 0,
               "reason": {"kind": "FALLTHROUGH", "bigSegmentsStatus": "NOT_CONFIGURED"}})
    );
}

#[tokio::test]
async fn native_bad_requests_are_400_with_a_named_problem() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let cases = [
        (
            "{not json",
            "INVALID_JSON",
            "request body is not valid JSON: key must be a string at line 1 column 2",
        ),
        (
            "[1]",
            "INVALID_REQUEST",
            "request body must be a JSON object with a \"context\" field",
        ),
        (
            "{}",
            "INVALID_REQUEST",
            "request body is missing the \"context\" field",
        ),
        (
            r#"{"context":{"kind":"user","key":5}}"#,
            "INVALID_CONTEXT",
            "invalid context: context key must be a string",
        ),
        (
            r#"{"context":{"kind":"multi"}}"#,
            "INVALID_CONTEXT",
            "invalid context: context kind \"multi\" requires at least one context",
        ),
        (
            r#"{"context":"user-1"}"#,
            "INVALID_CONTEXT",
            "invalid context: context must be a JSON object",
        ),
    ];
    for (body, code, message) in cases {
        for uri in ["/v1/evaluate/bool-flag", "/v1/evaluate"] {
            let (status, answer) = call(&app, post(uri, body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}");
            assert_eq!(
                answer,
                json!({"error": code, "message": message}),
                "{uri} {body}"
            );
        }
    }
}

#[tokio::test]
async fn native_all_flags() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let (status, body) = call(
        &app,
        post(
            "/v1/evaluate",
            &ctx(json!({"kind": "user", "key": "targeted"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let flags = body["flags"].as_object().unwrap();
    let keys: Vec<&str> = flags.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "bool-flag",
            "off-flag",
            "org-flag",
            "rollout-flag",
            "rule-flag",
            "segment-flag",
            "static-flag"
        ]
    );
    assert_eq!(
        flags["bool-flag"],
        json!({"value": true, "variationIndex": 1, "reason": {"kind": "TARGET_MATCH"}})
    );
    for entry in flags.values() {
        let mut fields: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["reason", "value", "variationIndex"]);
    }
}

// ---------------------------------------------------------------- OFREP

#[tokio::test]
async fn ofrep_success_shape_and_reasons() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let cases = [
        (
            "bool-flag",
            json!({"targetingKey": "targeted"}),
            json!(true),
            "TARGETING_MATCH",
            "1",
        ),
        (
            "bool-flag",
            json!({"targetingKey": "someone"}),
            json!(false),
            "DEFAULT",
            "0",
        ),
        (
            "rule-flag",
            json!({"targetingKey": "u", "country": "FR"}),
            json!(3),
            "TARGETING_MATCH",
            "2",
        ),
        (
            "rule-flag",
            json!({"targetingKey": "u", "country": "DE"}),
            json!(2),
            "SPLIT",
            "1",
        ),
        (
            "off-flag",
            json!({"targetingKey": "u"}),
            json!("y"),
            "DISABLED",
            "1",
        ),
        (
            "static-flag",
            json!({"targetingKey": "u"}),
            json!({"color": "blue"}),
            "STATIC",
            "0",
        ),
        (
            "segment-flag",
            json!({"targetingKey": "beta-user"}),
            json!(true),
            "TARGETING_MATCH",
            "1",
        ),
        (
            "org-flag",
            json!({"kind": "org", "targetingKey": "acme"}),
            json!(true),
            "TARGETING_MATCH",
            "1",
        ),
        (
            "org-flag",
            json!({"kind": "multi", "user": {"key": "u"}, "org": {"key": "acme"}}),
            json!(true),
            "TARGETING_MATCH",
            "1",
        ),
    ];
    for (flag, context, value, reason, variant) in cases {
        let (status, body) = call(
            &app,
            post(
                &format!("/ofrep/v1/evaluate/flags/{flag}"),
                &ctx(context.clone()),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{flag} {context}");
        assert_eq!(
            body,
            json!({"key": flag, "value": value, "reason": reason, "variant": variant, "metadata": {}}),
            "{flag} {context}"
        );
    }
    // A percentage rollout in the fallthrough is a split, whichever bucket the context lands in.
    let (_, body) = call(
        &app,
        post(
            "/ofrep/v1/evaluate/flags/rollout-flag",
            &ctx(json!({"targetingKey": "x"})),
        ),
    )
    .await;
    assert_eq!(body["reason"], "SPLIT");
    assert!(body["value"] == "a" || body["value"] == "b", "{body}");
}

/// A flag that serves no variation (off, or killed, without an off variation) answers without
/// `value` and `variant`: `null` is no OFREP value and providers would report a type mismatch,
/// while a missing value makes them return the caller's default with the reason.
#[tokio::test]
async fn ofrep_omits_the_value_when_no_variation_is_served() {
    let flags = r#"{"flags": {
        "off-no-variation": {"on": false, "variations": [false, true], "fallthrough": {"variation": 1}},
        "on-no-off-variation": {"on": true, "variations": ["a", "b"], "fallthrough": {"variation": 1}}
    }}"#;
    let (app, _state, _source, _dir) = app_with(flags);
    let single = |flag: &'static str| {
        let app = app.clone();
        async move {
            call(
                &app,
                post(
                    &format!("/ofrep/v1/evaluate/flags/{flag}"),
                    &ctx(json!({"targetingKey": "u"})),
                ),
            )
            .await
        }
    };
    let (status, body) = single("off-no-variation").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"key": "off-no-variation", "reason": "DISABLED", "metadata": {}})
    );
    // Served normally while on. (Killed, it is served off and answers as the flag above; the
    // root-mode tests show it.)
    let (_, body) = single("on-no-off-variation").await;
    assert_eq!(body["value"], "b", "{body}");
    // The bulk form answers each flag the same way.
    let (status, _, body) = ofrep_bulk(&app, json!({"targetingKey": "u"}), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["flags"][0],
        json!({"key": "off-no-variation", "reason": "DISABLED", "metadata": {}})
    );
    assert_eq!(body["flags"][1]["value"], "b", "{body}");
    // The native API keeps LaunchDarkly's shape, where a missing variation is a null value.
    let (_, body) = call(
        &app,
        post(
            "/v1/evaluate/off-no-variation",
            &ctx(json!({"kind": "user", "key": "u"})),
        ),
    )
    .await;
    assert_eq!(
        body,
        json!({"key": "off-no-variation", "value": null, "variationIndex": null, "reason": {"kind": "OFF"}})
    );
}

#[tokio::test]
async fn ofrep_errors() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let cases = [
        (
            "nope",
            ctx(json!({"targetingKey": "u"})),
            StatusCode::NOT_FOUND,
            "FLAG_NOT_FOUND",
            "flag \"nope\" not found",
        ),
        (
            "bool-flag",
            "{oops".to_owned(),
            StatusCode::BAD_REQUEST,
            "PARSE_ERROR",
            "request body is not valid JSON: key must be a string at line 1 column 2",
        ),
        (
            "bool-flag",
            "[]".to_owned(),
            StatusCode::BAD_REQUEST,
            "PARSE_ERROR",
            "request body must be a JSON object with a \"context\" field",
        ),
        (
            "bool-flag",
            ctx(json!({"email": "a@b.c"})),
            StatusCode::BAD_REQUEST,
            "TARGETING_KEY_MISSING",
            "the context has no targetingKey (or key) to identify it",
        ),
        (
            "bool-flag",
            String::new(),
            StatusCode::BAD_REQUEST,
            "TARGETING_KEY_MISSING",
            "the context has no targetingKey (or key) to identify it",
        ),
        (
            "bool-flag",
            ctx(json!({"targetingKey": 7})),
            StatusCode::BAD_REQUEST,
            "INVALID_CONTEXT",
            "targetingKey must be a string",
        ),
        (
            "bool-flag",
            ctx(json!({"targetingKey": "u", "name": 5})),
            StatusCode::BAD_REQUEST,
            "INVALID_CONTEXT",
            "context attribute \"name\" must be a string",
        ),
    ];
    for (flag, body, status, code, details) in cases {
        let (got_status, answer) = call(
            &app,
            post(&format!("/ofrep/v1/evaluate/flags/{flag}"), &body),
        )
        .await;
        assert_eq!(got_status, status, "{flag} {body}");
        assert_eq!(
            answer,
            json!({"key": flag, "errorCode": code, "errorDetails": details}),
            "{flag} {body}"
        );
    }
    // The bulk form has no key.
    let (status, answer) = call(&app, post("/ofrep/v1/evaluate/flags", "{oops")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer,
        json!({"errorCode": "PARSE_ERROR",
               "errorDetails": "request body is not valid JSON: key must be a string at line 1 column 2"})
    );
}

async fn ofrep_bulk(
    app: &flagd::http::App,
    context: Value,
    if_none_match: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request =
        Request::post("/ofrep/v1/evaluate/flags").header("content-type", "application/json");
    if let Some(tag) = if_none_match {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    let response = send(app, request.body(Body::from(ctx(context))).unwrap()).await;
    let status = response.status();
    let etag = response
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, etag, body_json(response).await)
}

#[tokio::test]
async fn ofrep_bulk_etags() {
    let (app, _state, source, dir) = app_with(FLAGS);
    let user = json!({"targetingKey": "targeted"});
    let (status, etag, body) = ofrep_bulk(&app, user.clone(), None).await;
    assert_eq!(status, StatusCode::OK);
    let etag = etag.expect("an ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "{etag}"
    );
    let flags = body["flags"].as_array().unwrap();
    assert_eq!(flags.len(), 7);
    assert_eq!(
        flags[0],
        json!({"key": "bool-flag", "value": true, "reason": "TARGETING_MATCH", "variant": "1", "metadata": {}})
    );

    // Same data, same context: 304 with no body.
    let (status, again, body) = ofrep_bulk(&app, user.clone(), Some(&etag)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.as_deref(), Some(etag.as_str()));
    assert_eq!(body, Value::Null);

    // Another context: another tag, and the old one does not match.
    let (status, other, _) =
        ofrep_bulk(&app, json!({"targetingKey": "someone"}), Some(&etag)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(other.as_deref(), Some(etag.as_str()));

    // New data: another tag for the same context.
    dir.write("flags.json", &FLAGS.replace("\"x\", \"y\"", "\"x\", \"z\""));
    assert!(matches!(
        source.reload(),
        flagd::source::ReloadOutcome::Loaded { changes: 1 }
    ));
    let (status, changed, _) = ofrep_bulk(&app, user, Some(&etag)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(changed.as_deref(), Some(etag.as_str()));
}

#[tokio::test]
async fn ofrep_configuration() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let (status, body) = call(&app, get("/ofrep/v1/configuration")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "flagd");
    assert_eq!(
        body["capabilities"]["cacheInvalidation"]["polling"]["enabled"],
        true
    );
}

// ---------------------------------------------------------------- LaunchDarkly SDK endpoints

#[tokio::test]
async fn sdk_latest_all_with_etag() {
    let (app, _state, source, dir) = app_with(FLAGS);
    let response = send(&app, get("/sdk/latest-all")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let etag = response.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    let body = body_json(response).await;
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["flags", "segments"]
    );
    assert_eq!(body["flags"].as_object().unwrap().len(), 7);
    assert_eq!(body["flags"]["bool-flag"]["key"], "bool-flag");
    assert_eq!(
        body["flags"]["bool-flag"]["version"], 1,
        "synthesized version"
    );
    assert_eq!(
        body["flags"]["static-flag"]["variations"],
        json!([{"color": "blue"}])
    );
    assert_eq!(body["segments"]["beta"]["included"], json!(["beta-user"]));

    let conditional = Request::get("/sdk/latest-all")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    let response = send(&app, conditional).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(body_bytes(response).await.is_empty());

    dir.write(
        "flags.json",
        &FLAGS.replace("\"beta-user\"", "\"beta-user\", \"another\""),
    );
    source.reload();
    let conditional = Request::get("/sdk/latest-all")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    let response = send(&app, conditional).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(response.headers()[header::ETAG], etag.as_str());
    let body = body_json(response).await;
    assert_eq!(
        body["segments"]["beta"]["version"], 2,
        "the changed segment's version went up"
    );
    assert_eq!(
        body["flags"]["bool-flag"]["version"], 1,
        "unchanged flags keep theirs"
    );
}

#[tokio::test]
async fn sdk_events_are_accepted_and_counted() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let events = json!([
        {"kind": "index", "creationDate": 1, "context": {"kind": "user", "key": "u"}},
        {"kind": "feature", "creationDate": 2, "key": "bool-flag", "value": true,
         "contextKeys": {"user": "u"}},
        {"kind": "feature", "creationDate": 3, "key": "bool-flag", "value": true,
         "contextKeys": {"user": "u"}},
        {"kind": "summary", "startDate": 1, "endDate": 3, "features": {}},
        {"kind": "something-new"}
    ]);
    let response = send(&app, post("/bulk", &events.to_string())).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(body_bytes(response).await.is_empty());
    let response = send(
        &app,
        post("/diagnostic", r#"{"kind":"diagnostic-init","id":{}}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let metrics = String::from_utf8(body_bytes(send(&app, get("/metrics")).await).await).unwrap();
    for line in [
        r#"flagd_events_received_total{kind="feature"} 2"#,
        r#"flagd_events_received_total{kind="index"} 1"#,
        r#"flagd_events_received_total{kind="summary"} 1"#,
        r#"flagd_events_received_total{kind="other"} 1"#,
        r#"flagd_events_received_total{kind="diagnostic-init"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line}");
    }
}

#[tokio::test]
async fn sdk_bad_events_are_400() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let cases = [
        (
            "/bulk",
            "nope",
            "INVALID_JSON",
            "request body is not valid JSON: expected ident at line 1 column 2",
        ),
        (
            "/bulk",
            r#"{"kind":"feature"}"#,
            "INVALID_REQUEST",
            "expected a JSON array of events, found an object",
        ),
        (
            "/bulk",
            r#"[{"kind":"custom","key":"k","creationDate":1,"contextKeys":{"user":"u"}}, 3]"#,
            "INVALID_REQUEST",
            "[1]: expected an event object, found a number",
        ),
        (
            "/bulk",
            r#"[{"key":"x"}]"#,
            "INVALID_REQUEST",
            "[0].kind: missing",
        ),
        (
            "/bulk",
            r#"[{"kind":null}]"#,
            "INVALID_REQUEST",
            "[0].kind: expected a string, found null",
        ),
        (
            "/bulk",
            r#"[{"kind":"custom","key":"buy","creationDate":1,"contextKeys":{"user":"u"}},
                {"kind":"feature","key":"f","creationDate":"today"}]"#,
            "INVALID_REQUEST",
            "[1].creationDate: expected a whole number, found a string",
        ),
        (
            "/diagnostic",
            "[]",
            "INVALID_REQUEST",
            "expected a diagnostic event object, found an array",
        ),
        ("/diagnostic", "{}", "INVALID_REQUEST", "kind: missing"),
    ];
    for (uri, body, code, message) in cases {
        let (status, answer) = call(&app, post(uri, body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}");
        assert_eq!(
            answer,
            json!({"error": code, "message": message}),
            "{uri} {body}"
        );
    }
    // Nothing from a rejected payload was counted.
    let metrics = String::from_utf8(body_bytes(send(&app, get("/metrics")).await).await).unwrap();
    assert!(
        !metrics.contains(r#"flagd_events_received_total{kind="feature"}"#),
        "{metrics}"
    );
}

// ---------------------------------------------------------------- health and metrics

#[tokio::test]
async fn health_and_readiness() {
    let (app, _state, _source, dir) = app_with(FLAGS);
    let (status, body) = call(&app, get("/healthz")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "OK"})));

    let (status, body) = call(&app, get("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "SERVING");
    assert_eq!(body["flags"], 7);
    assert_eq!(body["segments"], 1);
    assert_eq!(body["generation"], 1);
    assert_eq!(body["lastError"], Value::Null);
    assert_eq!(body["consecutiveFailures"], 0);
    assert!(body["lastReloadAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["files"], json!([show(&dir.path("flags.json"))]));
}

#[tokio::test]
async fn nothing_served_before_data() {
    let state = AppState::new(&Config::default());
    let app = flagd::app(state);
    let (status, body) = call(&app, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "CONNECTING");
    let (status, body) = call(
        &app,
        post("/v1/evaluate/x", &ctx(json!({"kind": "user", "key": "u"}))),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["reason"],
        json!({"kind": "ERROR", "errorKind": "CLIENT_NOT_READY"})
    );
    let (status, body) = call(
        &app,
        post(
            "/ofrep/v1/evaluate/flags/x",
            &ctx(json!({"targetingKey": "u"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["errorCode"], "PROVIDER_NOT_READY");
    let response = send(&app, get("/sdk/latest-all")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let (status, _) = call(&app, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "alive even without data");
}

#[tokio::test]
async fn metrics_use_route_templates_and_bounded_flag_labels() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let user = ctx(json!({"kind": "user", "key": "targeted"}));
    call(&app, post("/v1/evaluate/bool-flag", &user)).await;
    call(&app, post("/v1/evaluate/bool-flag", &user)).await;
    call(&app, post("/v1/evaluate/no-such-flag-1", &user)).await;
    call(&app, post("/v1/evaluate/no-such-flag-2", &user)).await;
    call(&app, get("/no/such/route")).await;
    call(&app, post("/healthz", "")).await;
    let response = send(&app, get("/metrics")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(body_bytes(response).await).unwrap();
    for line in [
        r#"flagd_http_requests_total{route="/v1/evaluate/{flagKey}",method="POST",status="200"} 2"#,
        r#"flagd_http_requests_total{route="/v1/evaluate/{flagKey}",method="POST",status="404"} 2"#,
        r#"flagd_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"flagd_http_requests_total{route="/healthz",method="POST",status="405"} 1"#,
        r#"flagd_evaluations_total{flag="bool-flag",reason="TARGET_MATCH"} 2"#,
        r#"flagd_evaluations_total{flag="(unknown)",reason="ERROR"} 2"#,
        "flagd_reloads_total 1",
        "flagd_reload_errors_total 0",
        "flagd_streams_open 0",
        "flagd_flags 7",
        "flagd_segments 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        !text.contains("no-such-flag"),
        "raw flag keys from requests must not become labels"
    );
    assert!(
        !text.contains("/no/such/route"),
        "raw paths must not become labels"
    );
}

#[tokio::test]
async fn metrics_stay_the_same_size_whatever_clients_send() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let user = ctx(json!({"kind": "user", "key": "u"}));
    // Everything a client controls, many distinct values of each: methods, paths, flag keys
    // (known route, unknown flag), environment-ish paths and SDK routes with odd methods.
    let round = |i: usize| {
        let method = axum::http::Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        [
            Request::builder()
                .method(method.clone())
                .uri("/v1/evaluate/bool-flag")
                .body(Body::from(user.clone()))
                .unwrap(),
            Request::builder()
                .method(method)
                .uri(format!("/no/such/route/{i}"))
                .body(Body::empty())
                .unwrap(),
            post(&format!("/v1/evaluate/no-such-flag-{i}"), &user),
            post(&format!("/ofrep/v1/evaluate/flags/missing-{i}"), &user),
            get(&format!("/sdk/latest-all/{i}")),
        ]
    };
    let metrics_size = |app| async move {
        let text = String::from_utf8(body_bytes(send(app, get("/metrics")).await).await).unwrap();
        // Counter values grow in digits; the label sets are what must not grow.
        text.lines()
            .map(|l| {
                l.rsplit_once(' ')
                    .map_or(l, |(labels, _)| labels)
                    .to_owned()
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    for i in 0..20 {
        for request in round(i) {
            call(&app, request).await;
        }
    }
    // The scrape counts itself: its own series exists from the second scrape on.
    metrics_size(&app).await;
    let after_a_few = metrics_size(&app).await;
    for i in 20..2000 {
        for request in round(i) {
            call(&app, request).await;
        }
    }
    let after_many = metrics_size(&app).await;
    let new: Vec<_> = after_many.difference(&after_a_few).collect();
    assert!(
        new.is_empty(),
        "{} new series from client input, such as {:?}",
        new.len(),
        &new[..new.len().min(3)]
    );
    assert!(
        after_many.iter().any(|l| l.contains(r#"method="other""#)),
        "unknown methods are counted, under one label"
    );
}

// ---------------------------------------------------------------- protection

#[tokio::test]
async fn sdk_keys_are_required_when_configured() {
    let dir = FlagDir::new();
    let mut config = test_config(vec![dir.write("flags.json", FLAGS)]);
    config.sdk_keys = vec!["sdk-secret".to_owned(), "second-key".to_owned()];
    let (state, _source) = loaded_state(&config);
    let app = flagd::app(state);
    let body = ctx(json!({"kind": "user", "key": "u", "targetingKey": "u"}));
    let routes: [(&str, &str, &str); 9] = [
        ("POST", "/v1/evaluate/bool-flag", body.as_str()),
        ("POST", "/v1/evaluate", body.as_str()),
        ("POST", "/ofrep/v1/evaluate/flags/bool-flag", body.as_str()),
        ("POST", "/ofrep/v1/evaluate/flags", body.as_str()),
        ("GET", "/ofrep/v1/configuration", ""),
        ("GET", "/sdk/latest-all", ""),
        ("GET", "/all", ""),
        ("POST", "/bulk", "[]"),
        ("POST", "/diagnostic", r#"{"kind":"diagnostic"}"#),
    ];
    for (method, uri, body) in routes {
        let build = |header: Option<(&str, &str)>| {
            let mut request = Request::builder().method(method).uri(uri);
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            request.body(Body::from(body.to_owned())).unwrap()
        };
        for denied in [
            None,
            Some(("authorization", "wrong")),
            Some(("x-api-key", "sdk-secre")),
        ] {
            let response = send(&app, build(denied)).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {denied:?}"
            );
            let body: Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
            assert_eq!(body["error"], "UNAUTHORIZED", "{method} {uri}: {body}");
            let sent = if denied.is_some() {
                "the SDK key was not accepted"
            } else {
                "no SDK key was sent"
            };
            assert!(
                body["message"].as_str().unwrap().starts_with(sent),
                "{method} {uri}: {body}"
            );
        }
        for allowed in [
            ("authorization", "sdk-secret"),
            ("authorization", "Bearer second-key"),
            ("x-api-key", "sdk-secret"),
        ] {
            let response = send(&app, build(Some(allowed))).await;
            assert!(
                response.status().is_success(),
                "{method} {uri} {allowed:?}: {}",
                response.status()
            );
        }
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            send(&app, get(open)).await.status(),
            StatusCode::OK,
            "{open} needs no key"
        );
    }
}

#[tokio::test]
async fn large_bodies_are_413() {
    let dir = FlagDir::new();
    let mut config = test_config(vec![dir.write("flags.json", FLAGS)]);
    config.http.max_body_bytes = 200;
    config.http.max_events_body_bytes = 400;
    let (state, _source) = loaded_state(&config);
    let app = flagd::app(state);
    let big = ctx(json!({"kind": "user", "key": "u", "padding": "x".repeat(300)}));
    for uri in [
        "/v1/evaluate/bool-flag",
        "/v1/evaluate",
        "/ofrep/v1/evaluate/flags/bool-flag",
        "/ofrep/v1/evaluate/flags",
    ] {
        let (status, body) = call(&app, post(uri, &big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
        assert_eq!(
            body,
            json!({"error": "PAYLOAD_TOO_LARGE", "message": "request body is too large"})
        );
    }
    // Event payloads have their own, larger limit.
    let events = json!([{"kind": "custom", "key": "x".repeat(250), "creationDate": 1,
                         "contextKeys": {"user": "u"}}])
    .to_string();
    assert_eq!(
        call(&app, post("/bulk", &events)).await.0,
        StatusCode::ACCEPTED
    );
    let events = json!([{"kind": "custom", "key": "x".repeat(500)}]).to_string();
    assert_eq!(
        call(&app, post("/bulk", &events)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // The server still answers normally afterwards.
    let (status, _) = call(
        &app,
        post(
            "/v1/evaluate/bool-flag",
            &ctx(json!({"kind": "user", "key": "u"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// A request body with a multi-kind context of `kinds` kinds, `{"key": "x"}` each: 40,000 of
/// them make an 830 KB body, under the default 1 MiB body limit.
fn multi_kind_body(kinds: usize) -> String {
    let mut context = serde_json::Map::new();
    context.insert("kind".to_owned(), json!("multi"));
    for i in 0..kinds {
        context.insert(format!("k{i}"), json!({"key": "x"}));
    }
    ctx(Value::Object(context))
}

/// Sends `body` to the four evaluation routes and checks that each answers with `status` and,
/// for a 400, an `INVALID_CONTEXT` error with `details` in the route's own error shape.
async fn check_context_routes(
    app: &flagd::http::App,
    body: &str,
    status: StatusCode,
    details: &str,
) {
    let native =
        json!({"error": "INVALID_CONTEXT", "message": format!("invalid context: {details}")});
    let routes = [
        ("/v1/evaluate/bool-flag", native.clone()),
        ("/v1/evaluate", native),
        (
            "/ofrep/v1/evaluate/flags/bool-flag",
            json!({"key": "bool-flag", "errorCode": "INVALID_CONTEXT", "errorDetails": details}),
        ),
        (
            "/ofrep/v1/evaluate/flags",
            json!({"errorCode": "INVALID_CONTEXT", "errorDetails": details}),
        ),
    ];
    for (uri, refused) in routes {
        let (got, answer) = call(app, post(uri, body)).await;
        assert_eq!(got, status, "{uri}: {answer}");
        if status == StatusCode::BAD_REQUEST {
            assert_eq!(answer, refused, "{uri}");
        }
    }
}

#[tokio::test]
async fn contexts_past_the_size_limits_are_400_in_each_protocols_shape() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    // Kinds: a hundred are evaluated; past that, refused on their count.
    check_context_routes(&app, &multi_kind_body(100), StatusCode::OK, "").await;
    check_context_routes(
        &app,
        &multi_kind_body(101),
        StatusCode::BAD_REQUEST,
        "multi-kind context has 101 kinds, more than the limit of 100",
    )
    .await;
    let probe = multi_kind_body(40_000);
    assert!(probe.len() < 1024 * 1024, "{} bytes", probe.len());
    check_context_routes(
        &app,
        &probe,
        StatusCode::BAD_REQUEST,
        "multi-kind context has 40000 kinds, more than the limit of 100",
    )
    .await;
    // Custom attributes and arrays, in a flat context the request scanner reads.
    let attributes = |n: usize| {
        let mut context = serde_json::Map::new();
        context.insert("kind".to_owned(), json!("user"));
        context.insert("key".to_owned(), json!("u"));
        for i in 0..n {
            context.insert(format!("a{i}"), json!(i));
        }
        ctx(Value::Object(context))
    };
    check_context_routes(&app, &attributes(10_000), StatusCode::OK, "").await;
    check_context_routes(
        &app,
        &attributes(10_001),
        StatusCode::BAD_REQUEST,
        "context has 10001 custom attributes, more than the limit of 10000",
    )
    .await;
    let array = |n: usize| ctx(json!({"kind": "user", "key": "u", "groups": vec![1; n]}));
    check_context_routes(&app, &array(10_000), StatusCode::OK, "").await;
    check_context_routes(
        &app,
        &array(10_001),
        StatusCode::BAD_REQUEST,
        "context attribute \"groups\" contains an array of 10001 items, more than the limit of 10000",
    )
    .await;
    // The same limits hold for an OFREP context in OpenFeature's form, without a kind.
    let (status, answer) = call(
        &app,
        post(
            "/ofrep/v1/evaluate/flags/bool-flag",
            &ctx(json!({"targetingKey": "u", "groups": vec![1; 10_001]})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["errorCode"], "INVALID_CONTEXT");
}

#[tokio::test]
async fn saturation_is_429_with_retry_after() {
    let dir = FlagDir::new();
    let mut config = test_config(vec![dir.write("flags.json", FLAGS)]);
    config.http.max_concurrency = 2;
    config.http.retry_after_secs = 3;
    let (state, _source) = loaded_state(&config);
    let app = flagd::app(state.clone());
    // Two requests in flight (held as permits), so the next one is over the limit.
    let held = state.limiter.clone().try_acquire_many_owned(2).unwrap();
    let response = send(
        &app,
        post(
            "/v1/evaluate/bool-flag",
            &ctx(json!({"kind": "user", "key": "u"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    assert_eq!(body_json(response).await["error"], "TOO_MANY_REQUESTS");
    let response = send(
        &app,
        post(
            "/ofrep/v1/evaluate/flags",
            &ctx(json!({"targetingKey": "u"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // Streams and health checks do not count against the limit.
    assert_eq!(send(&app, get("/all")).await.status(), StatusCode::OK);
    assert_eq!(send(&app, get("/readyz")).await.status(), StatusCode::OK);
    drop(held);
    let response = send(
        &app,
        post(
            "/v1/evaluate/bool-flag",
            &ctx(json!({"kind": "user", "key": "u"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn slow_requests_time_out_with_408() {
    let dir = FlagDir::new();
    let mut config = test_config(vec![dir.write("flags.json", FLAGS)]);
    config.http.request_timeout_ms = 50;
    let (state, _source) = loaded_state(&config);
    let app = flagd::app(state);
    // A body that never finishes arriving.
    let stalled = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
    let request = Request::post("/v1/evaluate/bool-flag")
        .body(Body::from_stream(stalled))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), send(&app, request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(body_json(response).await["error"], "REQUEST_TIMEOUT");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_json() {
    let (app, _state, _source, _dir) = app_with(FLAGS);
    let (status, body) = call(&app, get("/v2/whatever")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "NOT_FOUND", "message": "no route for GET /v2/whatever"})
    );

    let response = send(&app, get("/v1/evaluate/bool-flag")).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "POST");
    assert_eq!(
        body_json(response).await,
        json!({"error": "METHOD_NOT_ALLOWED", "message": "method GET is not allowed on /v1/evaluate/bool-flag"})
    );
    let (status, _) = call(&app, post("/sdk/latest-all", "{}")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
