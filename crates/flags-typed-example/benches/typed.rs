//! A typed flag call next to the plain SDK call that does the same work, in one run, on one
//! in-process `flags_sdk::Client` holding the example's flags.
//!
//! - `typed_<case>/typed`: the generated method (`checkout.max_items()`).
//! - `typed_<case>/plain`: `Client::int_variation` (or its kin) with the same key, default and
//!   context: for a global flag the one global context, made once; for a flag with a layer a
//!   context made from the entity's key on every call, as the typed method does.
//! - `typed_<case>/plain_prebuilt_context`, for flags with a layer: the plain call with a
//!   context the caller made once, to show what making the context costs.
//!
//! The setup checks that every call serves the flag's value rather than its default, so a
//! call that fell back cannot be timed as an evaluation. Run with
//! `cargo bench -p flags-typed-example --bench typed`; results go in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flags_core::{Context, FlagData};
use flags_sdk::Client;
use flags_sdk::typed::{GLOBAL_KEY, GLOBAL_KIND};
use flags_typed_example::flags::CheckoutFlags;
use serde_json::json;

fn client() -> Client {
    let flag = |key: &str, variations: serde_json::Value, extra: serde_json::Value| {
        let mut flag = json!({"key": key, "version": 1, "on": true, "salt": key,
            "variations": variations, "offVariation": 0, "fallthrough": {"variation": 1}});
        if let (Some(flag), Some(extra)) = (flag.as_object_mut(), extra.as_object()) {
            flag.extend(extra.clone());
        }
        flag
    };
    let data = json!({"flags": {
        "checkout.express_enabled": flag("checkout.express_enabled", json!([false, true]), json!({})),
        "checkout.max_items": flag("checkout.max_items", json!([50, 120]), json!({})),
        "checkout.banner_text": flag("checkout.banner_text", json!(["Welcome", "Sale today"]), json!({})),
        "checkout.new_flow": flag("checkout.new_flow", json!([false, true]),
            json!({"targets": [{"values": ["bob"], "variation": 1}],
                   "fallthrough": {"variation": 0}})),
    }});
    let data: FlagData = serde_json::from_value(data).expect("the bench's flags are valid");
    Client::builder("bench")
        .data(data)
        .build()
        .expect("an in-process client builds")
}

fn typed_next_to_plain(c: &mut Criterion) {
    let client = client();
    let checkout = CheckoutFlags::new(client.clone());
    let global = Context::single(GLOBAL_KIND, GLOBAL_KEY).expect("the global context is valid");
    let bob = Context::user("bob").expect("a user context is valid");

    // Both sides serve the flag's value, not a default.
    assert!(checkout.express_enabled());
    assert!(client.bool_variation(&global, "checkout.express_enabled", false));
    assert_eq!(checkout.max_items(), 120);
    assert_eq!(client.int_variation(&global, "checkout.max_items", 50), 120);
    assert_eq!(checkout.banner_text(), "Sale today");
    assert!(checkout.new_flow("bob"));
    assert!(client.bool_variation(&bob, "checkout.new_flow", false));

    let mut group = c.benchmark_group("typed_global_bool");
    group.bench_function("typed", |b| {
        b.iter(|| black_box(&checkout).express_enabled())
    });
    group.bench_function("plain", |b| {
        b.iter(|| {
            black_box(&client).bool_variation(
                black_box(&global),
                black_box("checkout.express_enabled"),
                false,
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("typed_global_int64");
    group.bench_function("typed", |b| b.iter(|| black_box(&checkout).max_items()));
    group.bench_function("plain", |b| {
        b.iter(|| {
            black_box(&client).int_variation(
                black_box(&global),
                black_box("checkout.max_items"),
                50,
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("typed_global_string");
    group.bench_function("typed", |b| b.iter(|| black_box(&checkout).banner_text()));
    group.bench_function("plain", |b| {
        b.iter(|| {
            black_box(&client).str_variation(
                black_box(&global),
                black_box("checkout.banner_text"),
                "Welcome".to_owned(),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("typed_user_bool");
    group.bench_function("typed", |b| {
        b.iter(|| black_box(&checkout).new_flow(black_box("bob")))
    });
    group.bench_function("plain", |b| {
        b.iter(|| match Context::single("user", black_box("bob")) {
            Ok(context) => {
                black_box(&client).bool_variation(&context, black_box("checkout.new_flow"), false)
            }
            Err(_) => false,
        })
    });
    group.bench_function("plain_prebuilt_context", |b| {
        b.iter(|| {
            black_box(&client).bool_variation(
                black_box(&bob),
                black_box("checkout.new_flow"),
                false,
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = typed_next_to_plain
}
criterion_main!(benches);
