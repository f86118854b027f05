//! The gRPC service (`--grpc-listen`) from its generated Rust client: every flag of the rich
//! fixture, for every test context, answered by `Evaluate` and `BulkEvaluate` exactly as the
//! HTTP API answers it (value, variation, reason), in file mode and in root mode over
//! PostgreSQL with flags killed and overridden; the operations-layer methods; SDK keys checked
//! as on HTTP; `grpc.health.v1` following `/readyz`; reflection listing the services; and a
//! stop that waits for nothing but calls in flight. A typed client that flags-codegen generates
//! from `grpc/checkout.proto` evaluates every type of flag over the port through
//! flags-sdk-grpc, killed and overridden flags included, and its compiled defaults once flagd
//! is gone.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::FlagDir;
use flags_proto::v1::flag_evaluator_service_client::FlagEvaluatorServiceClient;
use flags_proto::v1::{
    self, BulkEvaluateRequest, EntityRef, EvaluateRequest, EvaluateResponse, EvaluationContext,
    EvaluationSource, EvaluatorStatus, FlagValue, GetFlagStateRequest, GetKilledFlagsRequest,
    GetOverridesRequest, HealthRequest, ReasonKind, State, evaluation_context, flag_value,
};
use flags_sdk::typed::{FlagSource, FlagSpec};
use flags_sdk_grpc::GrpcFlagSource;
use flags_store::{Actor, AdminStore, KeyStore, MemoryStore, OverrideKey};
use flags_test_support::postgres;
use flags_test_support::wait::Poll;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The key file-mode flagd requires in these tests.
const SDK_KEY: &str = "sdk-grpc-test-key";

/// The evaluation service's name, as reflection and health know it.
const EVALUATOR: &str = "flags.v1.FlagEvaluatorService";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_answers_every_flag_as_the_http_api() {
    let flagd = FileFlagd::start().await;
    let mut grpc = flagd.client().await;
    let flags = flagd.http.flag_keys().await;
    let contexts = contexts();
    let mut kinds = BTreeSet::new();
    for flag in &flags {
        for context in &contexts {
            let http = flagd.http.evaluate(flag, context).await;
            let answer = grpc
                .evaluate(flagd.keyed(EvaluateRequest {
                    flag_id: flag.clone(),
                    context: Some(json_context(context)),
                    default_value: None,
                }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(answer.flag_id, *flag);
            assert_same(&answer, &http, &format!("Evaluate {flag} for {context}"));
            assert_eq!(
                answer.source(),
                expected_source(&answer),
                "{flag} {context}"
            );
            kinds.insert(answer.reason.unwrap().kind().as_str_name());
        }
    }
    // The fixture must keep exercising every kind of answer.
    for kind in [
        "REASON_KIND_OFF",
        "REASON_KIND_FALLTHROUGH",
        "REASON_KIND_TARGET_MATCH",
        "REASON_KIND_RULE_MATCH",
        "REASON_KIND_PREREQUISITE_FAILED",
        "REASON_KIND_ERROR",
    ] {
        assert!(kinds.contains(kind), "no {kind} among {kinds:?}");
    }

    // Every flag at once, in key order, as `POST /v1/evaluate` gives them.
    for context in &contexts {
        let http = flagd.http.evaluate_all(context).await;
        let answers = grpc
            .bulk_evaluate(flagd.keyed(BulkEvaluateRequest {
                flag_ids: Vec::new(),
                context: Some(json_context(context)),
            }))
            .await
            .unwrap()
            .into_inner()
            .evaluations;
        let keys: Vec<&str> = answers.iter().map(|a| a.flag_id.as_str()).collect();
        let http_keys: Vec<&str> = http.keys().map(String::as_str).collect();
        assert_eq!(keys, http_keys);
        for answer in &answers {
            assert_same(answer, &http[&answer.flag_id], "BulkEvaluate");
        }
    }

    // Flags named: in the order asked, unknown ones included, as single evaluations answer.
    let context = json!({"kind": "user", "key": "alice", "country": "FR"});
    let asked = vec![
        "string-operators".to_owned(),
        "no-such-flag".to_owned(),
        "bool-targets".to_owned(),
    ];
    let answers = grpc
        .bulk_evaluate(flagd.keyed(BulkEvaluateRequest {
            flag_ids: asked.clone(),
            context: Some(json_context(&context)),
        }))
        .await
        .unwrap()
        .into_inner()
        .evaluations;
    let keys: Vec<String> = answers.iter().map(|a| a.flag_id.clone()).collect();
    assert_eq!(keys, asked);
    for answer in &answers {
        let http = flagd.http.evaluate(&answer.flag_id, &context).await;
        assert_same(answer, &http, "BulkEvaluate of named flags");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_entities_and_bad_contexts() {
    let flagd = FileFlagd::start().await;
    let mut grpc = flagd.client().await;
    // An unknown flag serves the default given, from source DEFAULT, with HTTP's 404 reason.
    let default = FlagValue {
        value: Some(flag_value::Value::StringValue("fallback".into())),
    };
    let answer = grpc
        .evaluate(flagd.keyed(EvaluateRequest {
            flag_id: "no-such-flag".into(),
            context: Some(entity("user", "bob")),
            default_value: Some(default.clone()),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.value, Some(default));
    assert_eq!(answer.source(), EvaluationSource::Default);
    assert_eq!(answer.variation_index, None);
    let reason = answer.reason.unwrap();
    assert_eq!(reason.kind(), ReasonKind::Error);
    assert_eq!(reason.error_kind(), v1::ErrorKind::FlagNotFound);

    // An entity is the context of its kind and key, exactly as that JSON.
    for (kind, key) in [("user", "alice"), ("org", "acme"), ("device", "dev-1")] {
        let by_entity = grpc
            .evaluate(flagd.keyed(EvaluateRequest {
                flag_id: "bool-targets".into(),
                context: Some(entity(kind, key)),
                default_value: None,
            }))
            .await
            .unwrap()
            .into_inner();
        let http = flagd
            .http
            .evaluate("bool-targets", &json!({"kind": kind, "key": key}))
            .await;
        assert_same(&by_entity, &http, "an entity");
    }

    // A context HTTP refuses with 400 is INVALID_ARGUMENT, saying what is wrong.
    for (context, says) in [
        (None, "no context"),
        (Some(json_text("{\"kind\":\"user\"")), "not valid JSON"),
        (Some(json_text("{\"kind\":\"user\"}")), "invalid context"),
        (Some(json_text("[]")), "JSON object"),
        (Some(entity("multi", "x")), "invalid context.entity"),
    ] {
        let status = grpc
            .evaluate(flagd.keyed(EvaluateRequest {
                flag_id: "bool-targets".into(),
                context,
                default_value: None,
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }

    // GetFlagState of file data: on, off, and unknown.
    let state = |flag: &str| {
        let mut grpc = grpc.clone();
        let request = flagd.keyed(GetFlagStateRequest {
            flag_id: flag.to_owned(),
        });
        async move { grpc.get_flag_state(request).await }
    };
    let on = state("bool-targets").await.unwrap().into_inner();
    let flag = on.flag.unwrap();
    assert_eq!(flag.state(), State::Enabled);
    assert_eq!(
        flag.value.unwrap(),
        bool_value(false),
        "the fallthrough's value"
    );
    let served: Value = serde_json::from_str(&flag.flag_json).unwrap();
    assert_eq!(served["key"], "bool-targets");
    assert_eq!(served["version"], flag.version);
    assert!(!on.archived);
    let off = state("off-flag").await.unwrap().into_inner();
    assert_eq!(off.flag.unwrap().state(), State::Off);
    let missing = state("no-such-flag").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_as_on_http() {
    let flagd = FileFlagd::start().await;
    let mut grpc = flagd.client().await;
    let request = |key: Option<&str>| {
        let mut request = Request::new(EvaluateRequest {
            flag_id: "bool-targets".into(),
            context: Some(entity("user", "alice")),
            default_value: None,
        });
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("authorization", key.parse().unwrap());
        }
        request
    };
    for refused in [None, Some("wrong-key"), Some("Bearer wrong-key"), Some("")] {
        let status = grpc.evaluate(request(refused)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{refused:?}");
        assert!(
            status.message().contains("`authorization` metadata entry"),
            "{status:?}"
        );
        // HTTP says the same of the same key.
        let mut http = flagd
            .http
            .client
            .post(format!("{}/v1/evaluate/bool-targets", flagd.http.base))
            .body(json!({"context": {"kind": "user", "key": "alice"}}).to_string());
        if let Some(key) = refused {
            http = http.header("authorization", key);
        }
        assert_eq!(http.send().await.unwrap().status(), 401);
    }
    for accepted in [SDK_KEY.to_owned(), format!("Bearer {SDK_KEY}")] {
        let answer = grpc.evaluate(request(Some(&accepted))).await.unwrap();
        assert_eq!(answer.into_inner().value.unwrap(), bool_value(true));
    }
    // Every method of the service needs the key.
    let status = grpc
        .get_killed_flags(GetKilledFlagsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = grpc.health(HealthRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Health and reflection need none, as /readyz does not.
    let mut health = HealthClient::new(flagd.channel().await);
    let check = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(check.into_inner().status(), ServingStatus::Serving);
    assert!(list_services_v1(flagd.channel().await).await.len() > 1);
    // Calls are counted by method and code, evaluations as HTTP's are.
    let metrics = flagd
        .http
        .client
        .get(format!("{}/metrics", flagd.http.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"flagd_grpc_requests_total{method="Evaluate",code="UNAUTHENTICATED"} 4"#,
        r#"flagd_grpc_requests_total{method="Evaluate",code="OK"} 2"#,
        r#"flagd_evaluations_total{flag="bool-targets",reason="TARGET_MATCH"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_readyz() {
    // Serving data: SERVING everywhere, with the number of flags held.
    let flagd = FileFlagd::start().await;
    let mut health = HealthClient::new(flagd.channel().await);
    for service in ["", EVALUATOR] {
        let check = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        assert_eq!(check.into_inner().status(), ServingStatus::Serving);
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let mut grpc = flagd.client().await;
    let own = grpc
        .health(flagd.keyed(HealthRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.status(), EvaluatorStatus::Serving);
    assert_eq!(
        own.cached_flag_count as usize,
        flagd.http.flag_keys().await.len()
    );
    assert_eq!(own.consecutive_failures, 0);
    assert!(own.seconds_since_contact >= 0);

    // No data (the flag file does not exist): NOT_SERVING, as /readyz answers 503.
    let dir = FlagDir::new();
    let mut config = flagd::Config::for_tests(vec![dir.path("missing.yaml")]);
    config.allow_missing = true;
    config.grpc_listen = Some(loopback());
    let empty = flagd::start(config).await.unwrap();
    let readyz = reqwest::get(format!("{}/readyz", empty.url()))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let channel = connect(empty.grpc_addr().unwrap()).await;
    let mut health = HealthClient::new(channel.clone());
    let check = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(check.into_inner().status(), ServingStatus::NotServing);
    let mut grpc = FlagEvaluatorServiceClient::new(channel);
    let own = grpc.health(HealthRequest {}).await.unwrap().into_inner();
    assert_eq!(own.status(), EvaluatorStatus::Connecting);
    assert_eq!(own.seconds_since_contact, -1);
    assert!(own.consecutive_failures >= 1, "{own:?}");
    // A single evaluation serves the default given, as not ready; all flags cannot be listed.
    let default = bool_value(true);
    let answer = grpc
        .evaluate(EvaluateRequest {
            flag_id: "bool-targets".into(),
            context: Some(entity("user", "alice")),
            default_value: Some(default.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.value, Some(default));
    assert_eq!(answer.source(), EvaluationSource::Default);
    assert_eq!(
        answer.reason.unwrap().error_kind(),
        v1::ErrorKind::ClientNotReady
    );
    let status = grpc
        .bulk_evaluate(BulkEvaluateRequest {
            flag_ids: Vec::new(),
            context: Some(entity("user", "alice")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    // The file appears: SERVING, seen by a watch as a change.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: EVALUATOR.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::NotServing);
    dir.write_atomic("missing.yaml", &fixture());
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch to see flagd ready")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::Serving);
    // A stop ends the watch rather than wait for it.
    tokio::time::timeout(Duration::from_secs(10), empty.shutdown())
        .await
        .expect("flagd to stop with a watch open")
        .unwrap();
    let after = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch to end");
    assert!(!matches!(after, Some(Ok(_))), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    let flagd = FileFlagd::start().await;
    let v1 = list_services_v1(flagd.channel().await).await;
    let v1alpha = list_services_v1alpha(flagd.channel().await).await;
    for services in [&v1, &v1alpha] {
        for service in [
            EVALUATOR,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(services.contains(service), "{service} not in {services:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_mode_serves_kills_and_overrides_as_the_http_api() {
    let db = postgres().create_database();
    let store = flagd::open_database(db.url()).await.unwrap();
    let actor = Actor::named("grpc-test");
    store
        .create_environment(&actor, "production", "production")
        .await
        .unwrap();
    let sdk = store
        .create_api_key(
            &actor,
            &flags_store::NewApiKey {
                name: "grpc".into(),
                kind: flags_store::ApiKeyKind::Sdk,
                env: Some("production".into()),
            },
        )
        .await
        .unwrap()
        .secret;
    let flags = [
        (
            "ordinary",
            json!({"targets": [{"values": ["alice"], "variation": 1}],
                   "rules": [{"id": "fr", "variation": 2, "clauses": [
                       {"attribute": "country", "op": "in", "values": ["FR"]}]}]}),
        ),
        ("overridden", json!({})),
        ("killed", json!({})),
        (
            "killed-without-off-variation",
            json!({"offVariation": null}),
        ),
        (
            "behind-killed",
            json!({"prerequisites": [{"key": "killed", "variation": 0}]}),
        ),
    ];
    for (key, fields) in &flags {
        let mut doc = json!({"key": key, "on": true, "salt": key,
            "variations": ["fallthrough", "targeted", "off"], "offVariation": 2,
            "fallthrough": {"variation": 0}});
        for (field, value) in fields.as_object().unwrap() {
            doc[field] = value.clone();
        }
        if doc["offVariation"].is_null() {
            doc.as_object_mut().unwrap().remove("offVariation");
        }
        store
            .put_flag(&actor, "production", key, doc, None)
            .await
            .unwrap();
    }
    store
        .set_killed(&actor, "production", "killed", true)
        .await
        .unwrap();
    store
        .set_killed(&actor, "production", "killed-without-off-variation", true)
        .await
        .unwrap();
    for (kind, key, variation) in [("user", "bob", 1), ("org", "acme", 2)] {
        let pin = OverrideKey {
            flag_key: "overridden".into(),
            context_kind: kind.into(),
            context_key: key.into(),
        };
        store
            .set_override(&actor, "production", &pin, variation)
            .await
            .unwrap();
    }
    let mut config = flagd::Config::for_tests(Vec::new());
    config.grpc_listen = Some(loopback());
    let server = flagd::start_with_store(config, Arc::clone(&store))
        .await
        .unwrap();
    let http = Http::new(server.url(), &sdk);
    let channel = connect(server.grpc_addr().unwrap()).await;
    let mut grpc = FlagEvaluatorServiceClient::new(channel);

    let contexts = vec![
        json!({"kind": "user", "key": "alice"}),
        json!({"kind": "user", "key": "bob", "country": "FR"}),
        json!({"kind": "user", "key": "carol", "country": "FR"}),
        json!({"kind": "org", "key": "acme"}),
        json!({"kind": "multi", "user": {"key": "dave"}, "org": {"key": "acme"}}),
    ];
    let mut sources = BTreeMap::new();
    for (flag, _) in &flags {
        for context in &contexts {
            let expected = http.evaluate(flag, context).await;
            let answer = grpc
                .evaluate(with_key(
                    &sdk,
                    EvaluateRequest {
                        flag_id: (*flag).to_owned(),
                        context: Some(json_context(context)),
                        default_value: None,
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            assert_same(&answer, &expected, &format!("{flag} for {context}"));
            assert_eq!(answer.source(), expected_source(&answer));
            let key = context["key"].as_str().unwrap_or("multi").to_owned();
            sources.insert((flag.to_string(), key), answer.source());
        }
        let all = grpc
            .bulk_evaluate(with_key(
                &sdk,
                BulkEvaluateRequest {
                    flag_ids: Vec::new(),
                    context: Some(json_context(&contexts[1])),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let http_all = http.evaluate_all(&contexts[1]).await;
        assert_eq!(all.evaluations.len(), http_all.len());
        for answer in &all.evaluations {
            assert_same(answer, &http_all[&answer.flag_id], "root BulkEvaluate");
        }
    }
    let source = |flag: &str, key: &str| sources[&(flag.to_owned(), key.to_owned())];
    assert_eq!(source("killed", "alice"), EvaluationSource::Killed);
    assert_eq!(
        source("killed-without-off-variation", "alice"),
        EvaluationSource::Killed
    );
    assert_eq!(source("overridden", "bob"), EvaluationSource::Override);
    assert_eq!(source("overridden", "acme"), EvaluationSource::Override);
    assert_eq!(source("overridden", "alice"), EvaluationSource::Global);
    assert_eq!(source("ordinary", "alice"), EvaluationSource::Global);
    assert_eq!(source("behind-killed", "alice"), EvaluationSource::Global);

    // The operations layer, as the admin API set it.
    let killed = grpc
        .get_killed_flags(with_key(&sdk, GetKilledFlagsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .flag_ids;
    assert_eq!(killed, ["killed", "killed-without-off-variation"]);
    let overrides = grpc
        .get_overrides(with_key(
            &sdk,
            GetOverridesRequest {
                entity: Some(EntityRef {
                    kind: "org".into(),
                    key: "acme".into(),
                }),
                flag_ids: Vec::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .overrides;
    assert_eq!(overrides.len(), 1, "{overrides:?}");
    assert_eq!(overrides[0].flag_id, "overridden");
    assert_eq!(overrides[0].variation_index, 2);
    assert_eq!(
        overrides[0].value,
        Some(string_value("off")),
        "the variation's value"
    );
    let none = grpc
        .get_overrides(with_key(
            &sdk,
            GetOverridesRequest {
                entity: Some(EntityRef {
                    kind: "user".into(),
                    key: "bob".into(),
                }),
                flag_ids: vec!["ordinary".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(none.overrides.is_empty());
    let state = grpc
        .get_flag_state(with_key(
            &sdk,
            GetFlagStateRequest {
                flag_id: "killed".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .flag
        .unwrap();
    assert_eq!(state.state(), State::Killed);
    assert_eq!(state.value, Some(string_value("off")));
    let served: Value = serde_json::from_str(&state.flag_json).unwrap();
    assert_eq!(
        served["on"], false,
        "served as LaunchDarkly SDKs receive it"
    );

    // Keys: another environment's world is closed to a key that is not stored.
    let status = grpc
        .evaluate({
            let mut request = Request::new(EvaluateRequest {
                flag_id: "ordinary".into(),
                context: Some(entity("user", "alice")),
                default_value: None,
            });
            request
                .metadata_mut()
                .insert("authorization", "flagd-sdk-unknown".parse().unwrap());
            request
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let health = grpc
        .health(with_key(&sdk, HealthRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), EvaluatorStatus::Serving);
    assert_eq!(health.cached_flag_count, flags.len() as i32);

    // An archived flag is not served, and its state says why; a deleted one is not found.
    store
        .set_flag_archived(&actor, "production", "ordinary", true, None)
        .await
        .unwrap();
    store
        .delete_flag(&actor, "production", "overridden", None)
        .await
        .unwrap();
    let state_of = |flag: &str| {
        let request = with_key(
            &sdk,
            GetFlagStateRequest {
                flag_id: flag.into(),
            },
        );
        let mut grpc = grpc.clone();
        async move { grpc.get_flag_state(request).await }
    };
    let archived = Poll::new()
        .within(Duration::from_secs(10))
        .until_some("the archived flag to leave the served data", || async {
            state_of("ordinary")
                .await
                .ok()
                .map(|r| r.into_inner())
                .filter(|r| r.archived)
        })
        .await;
    assert_eq!(archived.flag, None);
    let deleted = Poll::new()
        .within(Duration::from_secs(10))
        .until_some("the deleted flag to go", || async {
            state_of("overridden").await.err()
        })
        .await;
    assert_eq!(deleted.code(), Code::NotFound, "{deleted:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_mode_serves_its_upstream_as_the_http_api() {
    let upstream = FileFlagd::start().await;
    let mut config = flagd::Config::for_tests(Vec::new());
    config.upstream.url = Some(upstream.server.url());
    config.sdk_keys = vec![SDK_KEY.to_owned()];
    config.upstream.reconnect_base_ms = 50;
    config.grpc_listen = Some(loopback());
    let proxy = flagd::start(config).await.unwrap();
    let http = Http::new(proxy.url(), SDK_KEY);
    let mut grpc = FlagEvaluatorServiceClient::new(connect(proxy.grpc_addr().unwrap()).await);
    let flags = http.flag_keys().await;
    assert_eq!(flags, upstream.http.flag_keys().await);
    let context = &contexts()[0];
    let answers = grpc
        .bulk_evaluate(with_key(
            SDK_KEY,
            BulkEvaluateRequest {
                flag_ids: Vec::new(),
                context: Some(json_context(context)),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .evaluations;
    assert_eq!(answers.len(), flags.len());
    for answer in &answers {
        let expected = upstream.http.evaluate(&answer.flag_id, context).await;
        assert_same(answer, &expected, "through a proxy");
    }
    let health = grpc
        .health(with_key(SDK_KEY, HealthRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), EvaluatorStatus::Serving);
    proxy.shutdown().await.unwrap();
}

/// The typed client flags-codegen generates from `grpc/checkout.proto`.
#[allow(dead_code)]
mod checkout {
    include!("grpc/checkout_flags.rs");
}

/// The checked-in client is what flags-codegen makes of the proto now; update it with
/// `UPDATE_EXPECT=1 cargo test -p flagd --test grpc`.
#[test]
fn the_typed_client_is_generated_from_its_proto() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc");
    let code = flags_codegen::Builder::new()
        .include(&dir)
        .generate(&["checkout.proto"])
        .unwrap();
    expect_test::expect_file!["grpc/checkout_flags.rs"].assert_eq(&code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_typed_client_evaluates_over_grpc() {
    let store = Arc::new(MemoryStore::new());
    let actor = Actor::named("typed");
    store
        .create_environment(&actor, "production", "production")
        .await
        .unwrap();
    let sdk = store
        .create_api_key(
            &actor,
            &flags_store::NewApiKey {
                name: "typed".into(),
                kind: flags_store::ApiKeyKind::Sdk,
                env: Some("production".into()),
            },
        )
        .await
        .unwrap()
        .secret;
    // Every value differs from the flag's compiled default, so a default cannot pass for it.
    let flags = [
        (
            "checkout.express_enabled",
            json!({"variations": [false, true], "fallthrough": {"variation": 0}}),
        ),
        (
            "checkout.banner",
            json!({"variations": ["summer-sale", "off"], "fallthrough": {"variation": 0}}),
        ),
        (
            "checkout.max_items",
            json!({"variations": [10, 50, 100], "fallthrough": {"variation": 1},
                   "contextTargets": [{"contextKind": "org", "values": ["acme"], "variation": 2}]}),
        ),
        (
            "checkout.retries",
            json!({"variations": [5, 7.9], "fallthrough": {"variation": 0},
                   "contextTargets": [
                       {"contextKind": "global", "values": ["global"], "variation": 1}]}),
        ),
        (
            "checkout.discount",
            json!({"variations": [0.1, 0.25], "fallthrough": {"variation": 0}}),
        ),
        (
            "checkout.provider_ratio",
            json!({"variations": [0.75, 0], "offVariation": 1, "fallthrough": {"variation": 0}}),
        ),
    ];
    for (key, fields) in flags {
        let mut doc = json!({"key": key, "on": true, "salt": key});
        for (field, value) in fields.as_object().unwrap() {
            doc[field] = value.clone();
        }
        store
            .put_flag(&actor, "production", key, doc, None)
            .await
            .unwrap();
    }
    store
        .set_killed(&actor, "production", "checkout.provider_ratio", true)
        .await
        .unwrap();
    let vip = OverrideKey {
        flag_key: "checkout.express_enabled".into(),
        context_kind: "user".into(),
        context_key: "vip".into(),
    };
    store
        .set_override(&actor, "production", &vip, 1)
        .await
        .unwrap();
    let mut config = flagd::Config::for_tests(Vec::new());
    config.grpc_listen = Some(loopback());
    let server = flagd::start_with_store(config, store).await.unwrap();
    let uri = format!("http://{}", server.grpc_addr().unwrap());
    let source = GrpcFlagSource::connect_lazy(&uri, &sdk).unwrap();
    let flags = checkout::CheckoutFlags::new(source.clone());

    assert!(!flags.express_enabled("anyone").await);
    assert!(flags.express_enabled("vip").await, "the override");
    assert_eq!(flags.banner().await, "summer-sale");
    assert_eq!(flags.max_items("acme").await, 100);
    assert_eq!(flags.max_items("globex").await, 50);
    // The global context is targeted, and 7.9 is read as 7, as the in-process client reads it.
    assert_eq!(flags.retries().await, 7);
    assert_eq!(flags.discount("anyone").await, 0.1);
    assert_eq!(
        flags.provider_ratio().await,
        0.0,
        "killed: its off variation"
    );
    assert_eq!(flags.undeployed().await, "compiled", "not in the data");
    assert!(
        flags.express_enabled("").await,
        "no entity: the compiled default"
    );
    // A flag read as another type than it has: the compiled default.
    static BANNER_AS_NUMBER: FlagSpec<i64> = FlagSpec {
        key: "checkout.banner",
        layer: None,
        default: -1,
    };
    assert_eq!(source.int64_flag(&BANNER_AS_NUMBER, None).await, -1);
    // A key flagd does not accept: compiled defaults.
    let refused = checkout::CheckoutFlags::new(
        GrpcFlagSource::connect_lazy(&uri, "flagd-sdk-not-a-key").unwrap(),
    );
    assert_eq!(refused.banner().await, "none");

    // flagd stops: every flag gives its compiled default, without waiting long.
    server.shutdown().await.unwrap();
    let started = std::time::Instant::now();
    assert!(flags.express_enabled("anyone").await);
    assert_eq!(flags.banner().await, "none");
    assert_eq!(flags.max_items("acme").await, 10);
    assert_eq!(flags.retries().await, 3);
    assert_eq!(flags.discount("anyone").await, 0.05);
    assert_eq!(flags.provider_ratio().await, 0.5);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A file-mode flagd with the rich fixture, an SDK key and gRPC on a free port.
struct FileFlagd {
    server: flagd::RunningServer,
    http: Http,
    _dir: FlagDir,
}

impl FileFlagd {
    async fn start() -> FileFlagd {
        let dir = FlagDir::new();
        let file = dir.write("flags.yaml", &fixture());
        let mut config = flagd::Config::for_tests(vec![file]);
        config.sdk_keys = vec![SDK_KEY.to_owned()];
        config.grpc_listen = Some(loopback());
        let server = flagd::start(config).await.unwrap();
        let http = Http::new(server.url(), SDK_KEY);
        FileFlagd {
            server,
            http,
            _dir: dir,
        }
    }

    async fn channel(&self) -> Channel {
        connect(self.server.grpc_addr().unwrap()).await
    }

    async fn client(&self) -> FlagEvaluatorServiceClient<Channel> {
        FlagEvaluatorServiceClient::new(self.channel().await)
    }

    /// `message` with the SDK key in its metadata.
    fn keyed<T>(&self, message: T) -> Request<T> {
        with_key(SDK_KEY, message)
    }
}

/// The HTTP API, asked with a key.
struct Http {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Http {
    fn new(base: String, key: &str) -> Http {
        Http {
            client: reqwest::Client::new(),
            base,
            key: key.to_owned(),
        }
    }

    /// `POST /v1/evaluate/{flag}`: the answer (200, or 404 for an unknown flag).
    async fn evaluate(&self, flag: &str, context: &Value) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/evaluate/{flag}", self.base))
            .header("authorization", &self.key)
            .body(json!({"context": context}).to_string())
            .send()
            .await
            .unwrap();
        assert!(
            matches!(response.status().as_u16(), 200 | 404),
            "{flag}: {}",
            response.status()
        );
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    /// `POST /v1/evaluate`: every flag's answer, by key.
    async fn evaluate_all(&self, context: &Value) -> BTreeMap<String, Value> {
        let body = self
            .client
            .post(format!("{}/v1/evaluate", self.base))
            .header("authorization", &self.key)
            .body(json!({"context": context}).to_string())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        serde_json::from_value(body["flags"].clone()).unwrap()
    }

    /// Every flag key served, sorted.
    async fn flag_keys(&self) -> Vec<String> {
        let all = self
            .client
            .get(format!("{}/sdk/latest-all", self.base))
            .header("authorization", &self.key)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let all: Value = serde_json::from_slice(&all).unwrap();
        all["flags"].as_object().unwrap().keys().cloned().collect()
    }
}

/// Checks that a gRPC answer says what the HTTP API's JSON answer says: the value, the
/// variation, and the reason field for field, the HTTP reason's `killed` and `override`
/// labels being gRPC's `source`.
fn assert_same(answer: &EvaluateResponse, http: &Value, what: &str) {
    let value = answer.value.as_ref().map_or(Value::Null, json_of);
    assert_eq!(value, http["value"], "{what}: value");
    assert_eq!(
        answer.variation_index.map(u64::from),
        http["variationIndex"].as_u64(),
        "{what}: variation"
    );
    let reason = answer.reason.as_ref().unwrap();
    let mut shown = serde_json::Map::new();
    let kind = reason
        .kind()
        .as_str_name()
        .trim_start_matches("REASON_KIND_");
    shown.insert("kind".into(), json!(kind));
    match reason.kind() {
        ReasonKind::Off if answer.source() == EvaluationSource::Killed => {
            shown.insert("killed".into(), json!(true));
        }
        ReasonKind::TargetMatch if answer.source() == EvaluationSource::Override => {
            shown.insert("override".into(), json!(true));
        }
        ReasonKind::RuleMatch => {
            shown.insert("ruleIndex".into(), json!(reason.rule_index));
            shown.insert("ruleId".into(), json!(reason.rule_id));
        }
        ReasonKind::PrerequisiteFailed => {
            shown.insert("prerequisiteKey".into(), json!(reason.prerequisite_key));
        }
        ReasonKind::Error => {
            let kind = reason.error_kind().as_str_name();
            shown.insert(
                "errorKind".into(),
                json!(kind.trim_start_matches("ERROR_KIND_")),
            );
        }
        _ => {}
    }
    if reason.in_experiment {
        shown.insert("inExperiment".into(), json!(true));
    }
    if reason.big_segments_status() != v1::BigSegmentsStatus::Unspecified {
        let status = reason.big_segments_status().as_str_name();
        shown.insert(
            "bigSegmentsStatus".into(),
            json!(status.trim_start_matches("BIG_SEGMENTS_STATUS_")),
        );
    }
    assert_eq!(Value::Object(shown), http["reason"], "{what}: reason");
}

/// What `source` must be, from the reason alone, with current data and no default given.
fn expected_source(answer: &EvaluateResponse) -> EvaluationSource {
    let reason = answer.reason.as_ref().unwrap();
    match reason.kind() {
        ReasonKind::Error => EvaluationSource::Default,
        _ if answer.source() == EvaluationSource::Killed => {
            assert_eq!(reason.kind(), ReasonKind::Off);
            EvaluationSource::Killed
        }
        _ if answer.source() == EvaluationSource::Override => {
            assert_eq!(reason.kind(), ReasonKind::TargetMatch);
            EvaluationSource::Override
        }
        _ if answer.value.is_none() => EvaluationSource::Default,
        _ => EvaluationSource::Global,
    }
}

/// `message` with `key` in the `authorization` metadata entry.
fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", key.parse().unwrap());
    request
}

/// A typed value back as the JSON it was served as.
fn json_of(value: &FlagValue) -> Value {
    match value.value.as_ref() {
        None => Value::Null,
        Some(flag_value::Value::BoolValue(b)) => json!(b),
        Some(flag_value::Value::StringValue(s)) => json!(s),
        Some(flag_value::Value::Int64Value(i)) => json!(i),
        Some(flag_value::Value::DoubleValue(d)) => json!(d),
        Some(flag_value::Value::JsonValue(text)) => serde_json::from_str(text).unwrap(),
    }
}

fn bool_value(b: bool) -> FlagValue {
    FlagValue {
        value: Some(flag_value::Value::BoolValue(b)),
    }
}

fn string_value(s: &str) -> FlagValue {
    FlagValue {
        value: Some(flag_value::Value::StringValue(s.to_owned())),
    }
}

fn json_context(context: &Value) -> EvaluationContext {
    json_text(&context.to_string())
}

fn json_text(text: &str) -> EvaluationContext {
    EvaluationContext {
        context: Some(evaluation_context::Context::Json(text.to_owned())),
    }
}

fn entity(kind: &str, key: &str) -> EvaluationContext {
    EvaluationContext {
        context: Some(evaluation_context::Context::Entity(EntityRef {
            kind: kind.to_owned(),
            key: key.to_owned(),
        })),
    }
}

/// The services reflection lists, over `grpc.reflection.v1`.
async fn list_services_v1(channel: Channel) -> BTreeSet<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a list of services: {other:?}"),
    }
}

/// The services reflection lists, over `grpc.reflection.v1alpha` (what older tools ask).
async fn list_services_v1alpha(channel: Channel) -> BTreeSet<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a list of services: {other:?}"),
    }
}

/// The test contexts: every kind of context the fixture's flags tell apart.
fn contexts() -> Vec<Value> {
    vec![
        json!({"kind": "user", "key": "alice", "name": "Alice", "email": "alice@example.com",
               "country": "FR", "age": 34, "plan": "pro", "appVersion": "2.5.1",
               "createdAt": "2023-06-01T00:00:00Z", "groups": ["admins", "beta"],
               "address": {"city": "Paris", "zip": "75001"}}),
        json!({"kind": "user", "key": "bob"}),
        json!({"kind": "user", "key": "user-17", "anonymous": true, "age": 17, "score": 99.5,
               "createdAt": 1_600_000_000_000_i64, "appVersion": "1.2", "plan": "enterprise"}),
        json!({"kind": "user", "key": "eve", "name": "Dr. Eve", "email": "EVE@EXAMPLE.COM",
               "age": "42", "groups": ["beta"], "plan": "contractor",
               "_meta": {"privateAttributes": ["email"]}}),
        json!({"kind": "user", "key": "qa-1", "country": "US", "age": 42,
               "createdAt": "2022-07-01T00:00:00+02:00", "appVersion": "3"}),
        json!({"kind": "org", "key": "acme", "name": "Acme", "tier": "gold"}),
        json!({"kind": "org", "key": "globex", "name": "Globex", "tier": "silver"}),
        json!({"kind": "multi",
               "user": {"key": "dave", "country": "DE", "age": 65, "plan": "contractor"},
               "org": {"key": "initech", "name": "Initech", "tier": "bronze"}}),
        json!({"kind": "device", "key": "dev-1", "os": "ios", "osVersion": "17.1.0"}),
        json!({"key": "legacy-1", "country": "FR", "custom": {"groups": ["admins"], "age": 17}}),
    ]
}

fn fixture() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/rich-flags.yaml"),
    )
    .unwrap()
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A channel to the gRPC service at `addr`, connected now.
async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    Poll::new()
        .within(Duration::from_secs(10))
        .until_some("the gRPC port to accept", || {
            let endpoint = endpoint.clone();
            async move { endpoint.connect().await.ok() }
        })
        .await
}
