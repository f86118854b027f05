//! `flagd sync --descriptors FILE.pb --database URL --env ENV` against real PostgreSQL: declared
//! flags created, described and left alone when unchanged, hand-made targeting kept, flags it
//! created archived when no longer declared and brought back when declared again, flags it did
//! not create never archived, and type or layer changes refused with nothing written.
//!
//! Each test makes its own database on `flags_test_support::postgres()` and drops it.

#![allow(clippy::unwrap_used)]

mod descriptor_support;

use std::path::Path;

use descriptor_support::{descriptor_set, replace, shop};
use flags_store::{Actor, AdminStore, ListFilter, StoredFlag};
use flags_test_support::postgres;
use flags_test_support::process::flagd_command;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_flagd");

/// Runs `flagd sync` of the set at `pb` into `env`: success, stdout, stderr.
fn sync(pb: &Path, url: &str, env: &str) -> (bool, String, String) {
    let output = flagd_command(BIN)
        .arg("sync")
        .arg("--descriptors")
        .arg(pb)
        .args(["--database", url, "--env", env])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Syncs and checks the one line it prints.
#[track_caller]
fn synced(pb: &Path, url: &str, counts: &str) {
    let (ok, stdout, stderr) = sync(pb, url, "production");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, format!("{counts}\n"), "{stderr}");
}

/// Every flag of production, archived ones too, by key.
async fn stored(store: &dyn AdminStore) -> Vec<StoredFlag> {
    store
        .list_flags("production", &ListFilter::default())
        .await
        .unwrap()
}

fn doc<'a>(flags: &'a [StoredFlag], key: &str) -> &'a StoredFlag {
    flags.iter().find(|f| f.key == key).unwrap()
}

#[test]
fn sync_follows_the_declarations_and_refuses_type_and_layer_changes() {
    let db = postgres().create_database();
    let url = db.url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(async {
        let store = flagd::open_database(url).await.unwrap();
        store
            .create_environment(&Actor::named("test"), "production", "Production")
            .await
            .unwrap();
        store
    });
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("flags.pb");

    // Every declared flag is created, serving its compiled default.
    replace(&pb, &descriptor_set(&shop(50)));
    synced(
        &pb,
        url,
        "4 created, 0 updated, 0 unchanged, 0 archived, 0 unarchived",
    );
    let flags = runtime.block_on(stored(&*store));
    let express = &doc(&flags, "checkout.express").doc;
    assert_eq!(
        (
            &express["on"],
            &express["variations"],
            &express["offVariation"],
            &express["fallthrough"]
        ),
        (
            &json!(false),
            &json!([false, true]),
            &json!(1),
            &json!({"variation": 1})
        ),
        "{express}"
    );
    assert_eq!(express["description"], json!("One-click checkout"));
    assert_eq!(
        express["tags"],
        json!(["feature:checkout", "owner:payments-team"])
    );
    assert_eq!(
        express["_declared"],
        json!({"type": "bool", "layer": "user", "feature": "shop.Checkout",
               "file": "shop/flags.proto", "default": true, "createdBy": "flagd sync"})
    );
    let max_items = &doc(&flags, "checkout.max_items").doc;
    assert_eq!(max_items["variations"], json!([10, 50, 100]));
    assert_eq!(max_items["offVariation"], json!(1));
    assert_eq!(
        doc(&flags, "checkout.ratio").doc["variations"],
        json!([0.5])
    );
    assert_eq!(
        doc(&flags, "checkout.theme").doc["variations"],
        json!(["light", "dark"])
    );

    synced(
        &pb,
        url,
        "0 created, 0 updated, 4 unchanged, 0 archived, 0 unarchived",
    );

    // Targeting set by hand, and a flag made by hand.
    runtime.block_on(async {
        let actor = Actor::named("test");
        let current = store
            .get_flag("production", "checkout.max_items")
            .await
            .unwrap();
        let mut edited = current.doc.clone();
        edited["on"] = json!(true);
        edited["fallthrough"] = json!({"variation": 2});
        store
            .put_flag(
                &actor,
                "production",
                "checkout.max_items",
                edited,
                Some(current.version),
            )
            .await
            .unwrap();
        let hand_made = json!({"on": true, "variations": [1], "fallthrough": {"variation": 0}});
        store
            .put_flag(&actor, "production", "hand.made", hand_made, None)
            .await
            .unwrap();
    });

    // `ratio` is no longer declared, and `express` says something else.
    let without_ratio = shop(50)
        .replace(
            "double ratio = 4 [(flags.flag) = { default: { double_value: { value: 0.5 } } }];",
            "",
        )
        .replace("One-click checkout", "Checkout in one click");
    replace(&pb, &descriptor_set(&without_ratio));
    synced(
        &pb,
        url,
        "0 created, 1 updated, 2 unchanged, 1 archived, 0 unarchived",
    );
    let flags = runtime.block_on(stored(&*store));
    assert!(doc(&flags, "checkout.ratio").archived);
    assert!(!doc(&flags, "hand.made").archived, "sync did not create it");
    let express = &doc(&flags, "checkout.express").doc;
    assert_eq!(express["description"], json!("Checkout in one click"));
    let max_items = &doc(&flags, "checkout.max_items").doc;
    assert_eq!(
        (&max_items["on"], &max_items["fallthrough"]),
        (&json!(true), &json!({"variation": 2})),
        "targeting is left alone"
    );

    // Declared again: brought back.
    replace(&pb, &descriptor_set(&shop(50)));
    synced(
        &pb,
        url,
        "0 created, 1 updated, 3 unchanged, 0 archived, 1 unarchived",
    );
    let before = runtime.block_on(stored(&*store));
    assert!(!doc(&before, "checkout.ratio").archived);

    // A type change, a layer change and a new flag together: refused, nothing written.
    let changed = shop(50)
        .replace("int64 max_items", "string max_items")
        .replace(
            "default: { int64_value: { value: 50 } }\n    supported_values: { int64_values: [10, 50, 100, 50] }",
            "",
        )
        .replace("layer: \"user\"", "layer: \"org\"")
        .replace(
            "double ratio = 4",
            "bool brand_new = 5 [(flags.flag) = {}];\n  double ratio = 4",
        );
    replace(&pb, &descriptor_set(&changed));
    let (ok, stdout, stderr) = sync(&pb, url, "production");
    assert!(!ok, "{stdout}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "flagd: 2 declared flag(s) conflict with the stored ones; nothing was written:\n  \
         flag checkout.express: it is declared with layer \"org\", but was synced with layer \
         \"user\"; a flag's layer cannot change: declare a new field (a new flag) instead, or \
         delete the stored flag first\n  \
         flag checkout.max_items: it is declared string, but was synced as int64; a flag's type \
         cannot change: declare a new field (a new flag) instead, or delete the stored flag \
         first\n"
    );
    let after = runtime.block_on(stored(&*store));
    assert_eq!(after, before, "nothing was written");

    // A missing environment, a file that is no descriptor set.
    replace(&pb, &descriptor_set(&shop(50)));
    let (ok, _, stderr) = sync(&pb, url, "staging");
    assert!(!ok);
    assert_eq!(stderr, "flagd: environment \"staging\" not found\n");
    replace(&pb, b"junk");
    let (ok, _, stderr) = sync(&pb, url, "production");
    assert!(!ok);
    assert!(
        stderr.starts_with(&format!(
            "flagd: {}: not a usable descriptor set",
            pb.display()
        )),
        "{stderr}"
    );
}
