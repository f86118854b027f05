//! Typed flags end to end: the client that `flags-codegen` generates from
//! `flags-typed-example`'s `proto/shop/flags.proto`, over a `flags_sdk::Client`, against the
//! real `flagd` binary. Every type is served from a flag file; a flag of another type and a
//! missing flag give their compiled defaults; a flag killed and a user overridden through the
//! admin API of root mode (file mode has no kill set or overrides) reach the typed client; and
//! a flagd that is stopped, or was never there, gives every compiled default, while a client
//! that had data keeps serving it through the outage.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::FlagDir;
use flags_sdk::{Client, DataSource};
use flags_test_support::postgres;
use flags_test_support::process::{FlagdProcess, flagd_command};
use flags_test_support::wait::{DEADLINE, eventually};
use flags_typed_example::flags::{CheckoutFlags, SearchFlags, checkout_flags, search_flags};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flagd");

/// The key the file-mode flagd requires.
const SDK_KEY: &str = "sdk-typed-flags-test-key";

/// The admin key of the root-mode flagd.
const ADMIN_KEY: &str = "typed-flags-admin";

/// A flag serving `variations[fallthrough]` to everyone, `variations[off]` when off, with
/// `extra` fields (targets) merged in.
fn flag(key: &str, variations: Value, fallthrough: usize, off: usize, extra: Value) -> Value {
    let mut flag = json!({
        "key": key, "version": 1, "on": true, "salt": key,
        "variations": variations,
        "offVariation": off,
        "fallthrough": {"variation": fallthrough},
    });
    if let (Value::Object(flag), Value::Object(extra)) = (&mut flag, extra) {
        flag.extend(extra);
    }
    flag
}

/// Every flag of the example but `search.boost`, each serving something other than its
/// compiled default, and `checkout.payment_retries` a string where an int32 is declared.
fn example_flags() -> Value {
    let mut flags = serde_json::Map::new();
    for f in [
        flag(
            "checkout.express_enabled",
            json!([false, true]),
            1,
            0,
            json!({}),
        ),
        flag(
            "checkout.banner_text",
            json!(["Welcome", "Sale today"]),
            1,
            0,
            json!({}),
        ),
        flag("checkout.max_items", json!([50, 120]), 1, 0, json!({})),
        flag(
            "checkout.payment_retries",
            json!(["three"]),
            0,
            0,
            json!({}),
        ),
        flag(
            "checkout.discount_rate",
            json!([0.05, 0.125]),
            1,
            0,
            json!({}),
        ),
        flag(
            "checkout.payment_timeout",
            json!([2.5, 4.25]),
            1,
            0,
            json!({}),
        ),
        flag(
            "checkout.new_flow",
            json!([false, true]),
            0,
            0,
            json!({"targets": [{"values": ["bob"], "variation": 1}]}),
        ),
        flag(
            "checkout.theme",
            json!(["light", "dark"]),
            0,
            0,
            json!({"targets": [{"values": ["bob"], "variation": 1}]}),
        ),
        flag(
            "search.page_size",
            json!([20, 50]),
            0,
            0,
            json!({"contextTargets": [
                {"contextKind": "org", "values": ["acme"], "variation": 1}
            ]}),
        ),
        flag("search.recency_weight", json!([0.5, 0.75]), 1, 0, json!({})),
    ] {
        flags.insert(f["key"].as_str().unwrap().to_owned(), f);
    }
    Value::Object(flags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_is_served_from_a_flag_file_and_failures_give_compiled_defaults() {
    let dir = FlagDir::new();
    let file = dir.write("flags.json", &json!({"flags": example_flags()}).to_string());
    let mut command = flagd_command(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .args(["--sdk-key", SDK_KEY])
        .arg("--file")
        .arg(&file);
    let flagd = tokio::task::block_in_place(|| FlagdProcess::spawn(command));
    let url = flagd.url();
    let client = sdk_client(&url, SDK_KEY);
    assert!(client.wait_for_initialization(DEADLINE).await);
    let checkout = CheckoutFlags::new(client.clone());
    let search = SearchFlags::new(&client);

    assert!(checkout.express_enabled());
    assert_eq!(checkout.banner_text(), "Sale today");
    assert_eq!(checkout.max_items(), 120);
    assert_eq!(checkout.discount_rate(), 0.125);
    assert_eq!(checkout.payment_timeout(), 4.25);
    // By user: a target of the flag's own.
    assert!(checkout.new_flow("bob"));
    assert!(!checkout.new_flow("alice"));
    assert_eq!(checkout.theme("bob"), "dark");
    assert_eq!(checkout.theme("alice"), "light");
    // By organisation: an org context, not a user of the same key.
    assert_eq!(search.page_size("acme"), 50);
    assert_eq!(search.page_size("initech"), 20);
    assert_eq!(search.recency_weight("anyone"), 0.75);
    // A string where an int32 is declared, and a flag the file lacks: compiled defaults.
    assert_eq!(
        checkout.payment_retries(),
        checkout_flags::PAYMENT_RETRIES.default
    );
    assert_eq!(search.boost(), search_flags::BOOST.default);
    // An empty entity key makes no context: the compiled default.
    assert_eq!(checkout.theme(""), "light");

    // flagd stops: the client keeps serving what it had, as stale data comes before defaults.
    drop(flagd);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(checkout.max_items(), 120);
    assert_eq!(checkout.theme("bob"), "dark");

    // A client that starts while flagd is stopped never has data: every compiled default.
    let late = sdk_client(&url, SDK_KEY);
    assert!(
        !late
            .wait_for_initialization(Duration::from_millis(500))
            .await
    );
    assert_compiled_defaults(&late);
    late.close();
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagd_that_was_never_reachable_gives_every_compiled_default() {
    // A port that nothing listens on: bound, then given back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = sdk_client(&format!("http://127.0.0.1:{port}"), SDK_KEY);
    // Not initialised yet, and not after trying either.
    assert_compiled_defaults(&client);
    assert!(
        !client
            .wait_for_initialization(Duration::from_millis(500))
            .await
    );
    assert_compiled_defaults(&client);
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_and_a_per_user_override_reach_the_typed_client() {
    let db = postgres().create_database();
    let store = flagd::open_database(db.url()).await.unwrap();
    let actor = flags_store::Actor::named("typed flags test");
    store
        .create_environment(&actor, "production", "Production")
        .await
        .unwrap();
    for (key, doc) in example_flags().as_object().unwrap() {
        store
            .put_flag(&actor, "production", key, doc.clone(), None)
            .await
            .unwrap();
    }
    let new_key = flags_store::NewApiKey {
        name: "sdk".to_owned(),
        kind: flags_store::ApiKeyKind::Sdk,
        env: Some("production".to_owned()),
    };
    let sdk_key = store.create_api_key(&actor, &new_key).await.unwrap().secret;
    let mut command = flagd_command(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
        .args(["--database", db.url(), "--admin-key", ADMIN_KEY]);
    let flagd = tokio::task::block_in_place(|| FlagdProcess::spawn(command));
    let client = sdk_client(&flagd.url(), &sdk_key);
    assert!(client.wait_for_initialization(DEADLINE).await);
    let checkout = CheckoutFlags::new(client.clone());
    assert!(checkout.express_enabled());
    assert_eq!(checkout.max_items(), 120);
    assert_eq!(checkout.theme("carol"), "light");

    let http = reqwest::Client::new();
    admin(&http, &flagd, "/flags/checkout.express_enabled/kill", None).await;
    admin(&http, &flagd, "/flags/checkout.max_items/kill", None).await;
    admin(
        &http,
        &flagd,
        "/flags/checkout.theme/overrides/user/carol",
        Some(json!({"variation": 1})),
    )
    .await;

    // A killed flag serves its off variation, which here is the compiled default's value for
    // one flag and not for the other: the value comes from flagd, not from the fallback.
    eventually("the kills and the override to reach the client", || {
        let done = !checkout.express_enabled()
            && checkout.max_items() == 50
            && checkout.theme("carol") == "dark";
        async move { done.then_some(()) }
    })
    .await;
    let detail = client.int_variation_detail(
        &flags_sdk::Context::single(flags_sdk::typed::GLOBAL_KIND, flags_sdk::typed::GLOBAL_KEY)
            .unwrap(),
        "checkout.max_items",
        -1,
    );
    assert_eq!(
        (
            detail.value,
            detail.variation_index,
            detail.reason.kind_str()
        ),
        (50, Some(0), "OFF"),
        "the killed flag's value is its off variation, not a default"
    );
    // The override is for carol alone.
    assert_eq!(checkout.theme("dave"), "light");
    assert!(checkout.new_flow("bob"));
    client.close();
}

/// A `PUT` under `/api/v1/environments/production` with the admin key, which must succeed.
async fn admin(http: &reqwest::Client, flagd: &FlagdProcess, path: &str, body: Option<Value>) {
    let url = format!("{}/api/v1/environments/production{path}", flagd.url());
    let mut request = http
        .put(&url)
        .header("authorization", format!("Bearer {ADMIN_KEY}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "PUT {path}: {status} {text}");
}

/// Every method of both clients over `client` answers with its compiled default.
fn assert_compiled_defaults(client: &Client) {
    let checkout = CheckoutFlags::new(client);
    let search = SearchFlags::new(client);
    assert!(!checkout.express_enabled());
    assert_eq!(checkout.banner_text(), "Welcome");
    assert_eq!(checkout.max_items(), 50);
    assert_eq!(checkout.payment_retries(), 3);
    assert_eq!(checkout.discount_rate(), 0.05);
    assert_eq!(checkout.payment_timeout(), 2.5);
    assert!(!checkout.new_flow("bob"));
    assert_eq!(checkout.theme("bob"), "light");
    assert_eq!(search.page_size("acme"), 20);
    assert_eq!(search.recency_weight("bob"), 0.5);
    assert_eq!(search.boost(), 0.0);
}

/// A streaming client of the flagd at `url`, retrying quickly, without analytics events.
fn sdk_client(url: &str, key: &str) -> Client {
    Client::builder(key)
        .base_url(url)
        .data_source(DataSource::Streaming {
            initial_reconnect_delay: Duration::from_millis(100),
            read_timeout: Duration::from_secs(60),
        })
        .events_enabled(false)
        .build()
        .unwrap()
}
