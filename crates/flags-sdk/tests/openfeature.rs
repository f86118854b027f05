//! The OpenFeature provider through the `open-feature` crate's own client API: values of every
//! type, context mapping (targeting key, kind, attributes, multi-kind), error codes, reasons
//! and the provider status as the data source moves.

#![allow(clippy::unwrap_used)]

use flags_test_support::wait::until;

use std::time::Duration;

use flags_core::FlagData;
use flags_sdk::openfeature::Provider;
use flags_sdk::{Client, DataSource};
use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationErrorCode, EvaluationReason,
    OpenFeature, StructValue,
};
use serde_json::json;

fn data() -> FlagData {
    serde_json::from_value(json!({
        "flags": {
            "bool": {"key": "bool", "version": 1, "on": true, "variations": [false, true],
                     "fallthrough": {"variation": 0},
                     "targets": [{"values": ["alice"], "variation": 1}]},
            "int": {"key": "int", "version": 1, "on": true, "variations": [1, 42],
                    "fallthrough": {"variation": 1}},
            "float": {"key": "float", "version": 1, "on": true, "variations": [0.5, 2.5],
                      "fallthrough": {"variation": 1}},
            "string": {"key": "string", "version": 1, "on": false, "offVariation": 1,
                       "variations": ["a", "b"], "fallthrough": {"variation": 0}},
            "object": {"key": "object", "version": 1, "on": true,
                       "variations": [{"limit": 10, "tags": ["x"]}],
                       "fallthrough": {"variation": 0}},
            "by-plan": {"key": "by-plan", "version": 1, "on": true,
                        "variations": ["free", "pro"], "fallthrough": {"variation": 0},
                        "rules": [{"id": "pro-orgs", "variation": 1, "clauses": [
                            {"contextKind": "org", "attribute": "plan", "op": "in",
                             "values": ["pro"]}]}]},
            "by-email": {"key": "by-email", "version": 1, "on": true,
                         "variations": [false, true], "fallthrough": {"variation": 0},
                         "rules": [{"id": "staff", "variation": 1, "clauses": [
                             {"attribute": "email", "op": "endsWith",
                              "values": ["@example.com"]}]}]},
        }
    }))
    .unwrap()
}

async fn client_named(name: &str, client: Client) -> open_feature::Client {
    let mut api = OpenFeature::singleton_mut().await;
    api.set_named_provider(name, Provider::new(client)).await;
    api.create_named_client(name)
}

fn user(key: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(key)
}

#[tokio::test]
async fn values_of_every_type_with_variant_and_reason() {
    let client = Client::builder("k").data(data()).build().unwrap();
    let of = client_named("types", client).await;
    let bob = user("bob");

    let detail = of
        .get_bool_details("bool", Some(&user("alice")), None)
        .await
        .unwrap();
    assert!(detail.value);
    assert_eq!(detail.variant.as_deref(), Some("1"));
    assert_eq!(detail.reason, Some(EvaluationReason::TargetingMatch));
    assert!(!of.get_bool_value("bool", Some(&bob), None).await.unwrap());

    assert_eq!(of.get_int_value("int", Some(&bob), None).await.unwrap(), 42);
    assert!((of.get_float_value("float", Some(&bob), None).await.unwrap() - 2.5).abs() < 1e-9);
    let detail = of
        .get_string_details("string", Some(&bob), None)
        .await
        .unwrap();
    assert_eq!(detail.value, "b");
    assert_eq!(detail.reason, Some(EvaluationReason::Disabled));
    let detail = of.get_int_details("int", Some(&bob), None).await.unwrap();
    assert_eq!(detail.reason, Some(EvaluationReason::Default));

    let object: StructValue = of
        .get_struct_value("object", Some(&bob), None)
        .await
        .unwrap();
    assert_eq!(object.fields["limit"], open_feature::Value::Int(10));
    assert_eq!(
        object.fields["tags"],
        open_feature::Value::Array(vec![open_feature::Value::String("x".into())])
    );
}

#[tokio::test]
async fn context_fields_become_attributes_and_kinds() {
    let client = Client::builder("k").data(data()).build().unwrap();
    let of = client_named("contexts", client).await;

    let staff = user("carol").with_custom_field("email", "carol@example.com");
    let detail = of
        .get_bool_details("by-email", Some(&staff), None)
        .await
        .unwrap();
    assert!(detail.value);
    assert_eq!(detail.reason, Some(EvaluationReason::TargetingMatch));
    let metadata = detail.flag_metadata;
    assert_eq!(
        metadata.values.get("ruleId"),
        Some(&open_feature::FlagMetadataValue::String("staff".into()))
    );

    // A single context of another kind.
    let org = user("acme")
        .with_custom_field("kind", "org")
        .with_custom_field("plan", "pro");
    assert_eq!(
        of.get_string_value("by-plan", Some(&org), None)
            .await
            .unwrap(),
        "pro"
    );

    // A multi-kind context: each structure field is one context, named by its kind.
    let multi = EvaluationContext::default()
        .with_custom_field("kind", "multi")
        .with_custom_field(
            "user",
            EvaluationContextFieldValue::new_struct(json!({"targetingKey": "dave"})),
        )
        .with_custom_field(
            "org",
            EvaluationContextFieldValue::new_struct(json!({"key": "acme", "plan": "pro"})),
        );
    assert_eq!(
        of.get_string_value("by-plan", Some(&multi), None)
            .await
            .unwrap(),
        "pro"
    );
    let free_org = EvaluationContext::default()
        .with_custom_field("kind", "multi")
        .with_custom_field(
            "org",
            EvaluationContextFieldValue::new_struct(json!({"key": "acme", "plan": "free"})),
        );
    assert_eq!(
        of.get_string_value("by-plan", Some(&free_org), None)
            .await
            .unwrap(),
        "free"
    );
}

#[tokio::test]
async fn errors_carry_openfeature_codes() {
    let client = Client::builder("k").data(data()).build().unwrap();
    let of = client_named("errors", client).await;
    let bob = user("bob");

    let e = of
        .get_bool_value("missing", Some(&bob), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::FlagNotFound);
    let e = of
        .get_bool_value("string", Some(&bob), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::TypeMismatch);
    let e = of
        .get_struct_value::<StructValue>("bool", Some(&bob), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::TypeMismatch);
    let e = of
        .get_bool_value("bool", Some(&EvaluationContext::default()), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::TargetingKeyMissing);
    let multi_without_key = EvaluationContext::default()
        .with_custom_field("kind", "multi")
        .with_custom_field(
            "org",
            EvaluationContextFieldValue::new_struct(json!({"plan": "x"})),
        );
    let e = of
        .get_bool_value("bool", Some(&multi_without_key), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::TargetingKeyMissing);
    let e = of
        .get_bool_value("bool", Some(&user("")), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::InvalidContext, "{e:?}");
}

#[tokio::test]
async fn status_follows_the_data_source() {
    // Nothing listens on this port: no data, so not ready, and evaluations say so.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let unreachable = Client::builder("k")
        .base_url(&format!("http://127.0.0.1:{closed_port}"))
        .build()
        .unwrap();
    let provider = Provider::new(unreachable).with_init_timeout(Duration::from_millis(50));
    assert_eq!(provider.status(), ProviderStatus::NotReady);
    let e = provider
        .resolve_bool_value("bool", &user("bob"))
        .await
        .unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::ProviderNotReady);

    // A flag file: ready once read, stale while the file is broken (the last data serves), and
    // ready again once it is fixed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    std::fs::write(&path, r#"{"flagValues": {"bool": true}}"#).unwrap();
    let client = Client::builder("k")
        .data_source(DataSource::Files {
            paths: vec![path.clone()],
            reload_interval: Duration::from_millis(20),
        })
        .build()
        .unwrap();
    let mut provider = Provider::new(client);
    provider.initialize(&EvaluationContext::default()).await;
    assert_eq!(provider.status(), ProviderStatus::Ready);
    std::fs::write(&path, "{ not json").unwrap();
    until("stale while the file is broken", || {
        std::future::ready(provider.status() == ProviderStatus::STALE)
    })
    .await;
    let still = provider
        .resolve_bool_value("bool", &user("bob"))
        .await
        .unwrap();
    assert!(still.value, "the last good data keeps serving");
    std::fs::write(&path, r#"{"flagValues": {"bool": false}}"#).unwrap();
    until("ready once the file is fixed", || {
        std::future::ready(provider.status() == ProviderStatus::Ready)
    })
    .await;
    let now = provider
        .resolve_bool_value("bool", &user("bob"))
        .await
        .unwrap();
    assert!(!now.value);
}

#[tokio::test]
async fn the_provider_names_itself() {
    let client = Client::builder("k").data(data()).build().unwrap();
    let provider = Provider::new(client);
    assert_eq!(provider.metadata().name, "flagd");
}
