//! The conformance suite every [`AdminStore`] must pass, run by each backend's tests.
//!
//! Each case is an async function over `&dyn AdminStore` that creates its own environments
//! (with [`fresh_env`]), so cases may share a store. They need no particular runtime; a backend
//! runs them with [`store_conformance_tests!`](crate::store_conformance_tests), which makes one
//! `#[test]` per case:
//!
//! ```text
//! fn run(name: &str, case: flags_store::conformance::Case) {
//!     let store = MyStore::new();
//!     my_runtime::block_on(case(&store));
//! }
//! flags_store::store_conformance_tests!(run);
//! ```
//!
//! A case waits on a subscription for changes it just made, so a runner should bound each
//! case's time: a store that never delivers then fails instead of hanging.

#![allow(clippy::unwrap_used, clippy::panic)] // Assertions are the point of this module.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use serde_json::{Value, json};

use crate::{
    Actor, AdminStore, ApiKeyKind, AuditAction, AuditItemKind, AuditQuery, BatchError, Change,
    ChangeKind, Dependent, EnvironmentUpdate, FlagOverride, ImportItem, ImportOutcome, LastChange,
    ListFilter, NewApiKey, NewEnvironment, OverrideKey, SegmentTargetsUpdate, StoreError,
    hash_secret,
};
use flags_core::ItemKind;

/// One conformance case.
pub type Case = for<'a> fn(&'a dyn AdminStore) -> CaseFuture<'a>;

/// The future a [`Case`] returns.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Every case, by name (the same list [`store_conformance_tests!`](crate::store_conformance_tests)
/// expands).
pub const CASES: &[(&str, Case)] = &[
    ("environments", environments),
    (
        "environment_names_and_colours",
        environment_names_and_colours,
    ),
    (
        "updating_an_environment_is_a_change",
        updating_an_environment_is_a_change,
    ),
    ("flag_versions_and_if_match", flag_versions_and_if_match),
    (
        "flag_validation_names_the_field",
        flag_validation_names_the_field,
    ),
    (
        "unresolved_references_are_refused",
        unresolved_references_are_refused,
    ),
    (
        "warnings_do_not_refuse_a_write",
        warnings_do_not_refuse_a_write,
    ),
    (
        "dependents_block_delete_and_archive",
        dependents_block_delete_and_archive,
    ),
    ("deletion_leaves_a_tombstone", deletion_leaves_a_tombstone),
    ("archive_and_unarchive", archive_and_unarchive),
    ("segments_and_target_batches", segments_and_target_batches),
    ("kill_and_unkill", kill_and_unkill),
    ("overrides_are_validated", overrides_are_validated),
    (
        "audit_log_has_exactly_the_applied_writes",
        audit_log_has_exactly_the_applied_writes,
    ),
    ("api_keys", api_keys),
    (
        "flag_last_changes_are_each_flags_newest_entry",
        flag_last_changes_are_each_flags_newest_entry,
    ),
    ("snapshot_and_changes_since", snapshot_and_changes_since),
    (
        "snapshot_holds_every_override",
        snapshot_holds_every_override,
    ),
    (
        "subscription_delivers_changes",
        subscription_delivers_changes,
    ),
    (
        "creating_an_environment_is_a_change",
        creating_an_environment_is_a_change,
    ),
    ("import_is_all_or_nothing", import_is_all_or_nothing),
    ("import_reports_progress", import_reports_progress),
    (
        "keys_no_item_can_have_are_invalid",
        keys_no_item_can_have_are_invalid,
    ),
    (
        "text_with_nul_is_invalid_where_it_would_be_kept",
        text_with_nul_is_invalid_where_it_would_be_kept,
    ),
    (
        "racing_writers_apply_or_conflict",
        racing_writers_apply_or_conflict,
    ),
    ("big_segment_members", big_segment_members),
];

/// Expands to one `#[test]` per conformance case, each calling `$run(name, case)`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($run:path) => {
        $crate::store_conformance_tests!(@cases $run:
            environments,
            environment_names_and_colours,
            updating_an_environment_is_a_change,
            flag_versions_and_if_match,
            flag_validation_names_the_field,
            unresolved_references_are_refused,
            warnings_do_not_refuse_a_write,
            dependents_block_delete_and_archive,
            deletion_leaves_a_tombstone,
            archive_and_unarchive,
            segments_and_target_batches,
            kill_and_unkill,
            overrides_are_validated,
            audit_log_has_exactly_the_applied_writes,
            api_keys,
            flag_last_changes_are_each_flags_newest_entry,
            snapshot_and_changes_since,
            snapshot_holds_every_override,
            subscription_delivers_changes,
            creating_an_environment_is_a_change,
            import_is_all_or_nothing,
            import_reports_progress,
            keys_no_item_can_have_are_invalid,
            text_with_nul_is_invalid_where_it_would_be_kept,
            racing_writers_apply_or_conflict,
            big_segment_members,
        );
    };
    (@cases $run:path: $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $run(stringify!($case), $crate::conformance::$case);
            }
        )*
    };
}

/// Creates an environment with a key no other case uses, and returns the key.
pub async fn fresh_env(store: &dyn AdminStore) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let key = format!("conf-{n}-{nanos}");
    store
        .create_environment(&actor(), &key, "Conformance")
        .await
        .unwrap();
    key
}

fn actor() -> Actor {
    Actor {
        key_id: Some(7),
        name: "conformance".to_owned(),
    }
}

fn bool_flag() -> Value {
    json!({"on": true, "variations": [true, false], "offVariation": 1,
           "fallthrough": {"variation": 0}, "salt": "s"})
}

fn with_prereq(prereq: &str, variation: usize) -> Value {
    let mut doc = bool_flag();
    doc["prerequisites"] = json!([{"key": prereq, "variation": variation}]);
    doc
}

fn with_segment_rule(segment: &str) -> Value {
    let mut doc = bool_flag();
    doc["rules"] = json!([{"id": "r0", "variation": 0,
        "clauses": [{"attribute": "", "op": "segmentMatch", "values": [segment]}]}]);
    doc
}

fn segment_with_rule(segment: &str) -> Value {
    json!({"rules": [{"clauses": [{"attribute": "", "op": "segmentMatch", "values": [segment]}]}]})
}

fn dep(kind: ItemKind, key: &str) -> Dependent {
    Dependent {
        kind,
        key: key.to_owned(),
    }
}

/// Shows an error as its variant and message, for one-line assertions.
fn describe<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => {
            let variant = match &e {
                StoreError::NotFound { .. } => "NotFound",
                StoreError::Conflict { .. } => "Conflict",
                StoreError::AlreadyExists { .. } => "AlreadyExists",
                StoreError::Invalid { .. } => "Invalid",
                StoreError::Unresolved { .. } => "Unresolved",
                StoreError::HasDependents { .. } => "HasDependents",
                StoreError::Unavailable { .. } => "Unavailable",
                StoreError::Internal { .. } => "Internal",
            };
            format!("{variant}: {e}")
        }
    }
}

fn blocked<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Vec<Dependent> {
    match result {
        Err(StoreError::HasDependents { dependents }) => dependents,
        other => panic!("expected dependents, got {}", describe(other)),
    }
}

fn conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Option<u64> {
    match result {
        Err(StoreError::Conflict { current_version }) => current_version,
        other => panic!("expected a conflict, got {}", describe(other)),
    }
}

async fn audit_count(store: &dyn AdminStore, env: &str) -> usize {
    store
        .audit_log(&AuditQuery::env(env, 10_000))
        .await
        .unwrap()
        .len()
}

/// Environments: create, read, list, duplicates and bad keys.
pub fn environments(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let a = fresh_env(store).await;
        let b = fresh_env(store).await;
        let got = store.get_environment(&a).await.unwrap();
        assert_eq!(
            (got.key.as_str(), got.name.as_str()),
            (a.as_str(), "Conformance")
        );
        assert!(got.created_at > 1_600_000_000_000, "created_at is Unix ms");
        let keys: Vec<String> = store
            .list_environments()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert!(keys.contains(&a) && keys.contains(&b));
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted: {keys:?}");

        let again = store.create_environment(&actor(), &a, "Again").await;
        assert!(describe(again).starts_with("AlreadyExists: "));
        let bad = store.create_environment(&actor(), "no spaces", "x").await;
        assert!(describe(bad).starts_with("Invalid: key: "));
        let missing = "conf-missing-env";
        assert!(describe(store.get_environment(missing).await).starts_with("NotFound: "));
        let put = store
            .put_flag(&actor(), missing, "f", bool_flag(), None)
            .await;
        assert!(describe(put).starts_with("NotFound: environment"));
        assert!(describe(store.snapshot(missing).await).starts_with("NotFound: "));

        let log = store.audit_log(&AuditQuery::env(&a, 10)).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].item_kind, log[0].action, log[0].item_key.as_str()),
            (AuditItemKind::Environment, AuditAction::Create, a.as_str())
        );
    })
}

/// Environments carry a name and an optional colour: set when created or later, the colour
/// `#rrggbb` stored in lower case, each update audited with the fields before and after, an
/// update that changes nothing writing nothing, and bad values refused naming the field.
pub fn environment_names_and_colours(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let plain = fresh_env(store).await;
        let got = store.get_environment(&plain).await.unwrap();
        assert_eq!(got.color, None);

        let key = format!("{plain}-colored");
        let new = NewEnvironment {
            key: key.clone(),
            name: "Production".to_owned(),
            color: Some("#D73A49".to_owned()),
        };
        let created = store.create_environment_with(&actor(), &new).await.unwrap();
        assert_eq!(
            (created.name.as_str(), created.color.as_deref()),
            ("Production", Some("#d73a49"))
        );
        assert_eq!(store.get_environment(&key).await.unwrap(), created);
        let listed = store.list_environments().await.unwrap();
        assert!(listed.contains(&created), "{listed:?}");
        let created_entry = &store.audit_log(&AuditQuery::env(&key, 10)).await.unwrap()[0];
        assert_eq!(
            created_entry.after.as_ref().unwrap()["color"],
            json!("#d73a49")
        );

        // Refused creations, each naming its field; nothing is created.
        let refused = [
            ("red", "Invalid: color: must be a colour like #d73a49"),
            ("#d73a4", "Invalid: color: must be a colour like #d73a49"),
        ];
        for (color, expected) in refused {
            let bad = NewEnvironment {
                key: format!("{plain}-bad"),
                name: "Bad".to_owned(),
                color: Some(color.to_owned()),
            };
            let created = store.create_environment_with(&actor(), &bad).await;
            assert_eq!(describe(created), expected);
        }
        let blank = store
            .create_environment(&actor(), &format!("{plain}-bad"), " ")
            .await;
        assert_eq!(describe(blank), "Invalid: name: must not be blank");
        let missing = store.get_environment(&format!("{plain}-bad")).await;
        assert!(describe(missing).starts_with("NotFound: "));

        // Updates: the colour, then the name, then clearing the colour.
        let update = |name: Option<&str>, color: Option<Option<&str>>| EnvironmentUpdate {
            name: name.map(str::to_owned),
            color: color.map(|c| c.map(str::to_owned)),
        };
        let updated = store
            .update_environment(&actor(), &plain, &update(None, Some(Some("#0366D6"))))
            .await
            .unwrap();
        assert_eq!(updated.color.as_deref(), Some("#0366d6"));
        assert_eq!(updated.name, "Conformance", "the name is kept");
        assert_eq!(updated.created_at, got.created_at);
        let renamed = store
            .update_environment(&actor(), &plain, &update(Some("Staging"), None))
            .await
            .unwrap();
        assert_eq!(
            (renamed.name.as_str(), renamed.color.as_deref()),
            ("Staging", Some("#0366d6")),
            "the colour is kept"
        );
        assert_eq!(store.get_environment(&plain).await.unwrap(), renamed);
        let cleared = store
            .update_environment(&actor(), &plain, &update(None, Some(None)))
            .await
            .unwrap();
        assert_eq!(cleared.color, None);
        assert_eq!(store.get_environment(&plain).await.unwrap(), cleared);

        // Nothing changes: nothing is written.
        let audit_before = audit_count(store, &plain).await;
        for same in [update(None, None), update(Some("Staging"), Some(None))] {
            let same = store.update_environment(&actor(), &plain, &same).await;
            assert_eq!(same.unwrap(), cleared);
        }
        // Refused updates name the field, and change nothing.
        let refusals = [
            (update(Some(""), None), "Invalid: name: must not be blank"),
            (
                update(Some("X"), Some(Some("blue"))),
                "Invalid: color: must be a colour like #d73a49",
            ),
        ];
        for (bad, expected) in refusals {
            let refused = store.update_environment(&actor(), &plain, &bad).await;
            assert_eq!(describe(refused), expected);
        }
        assert_eq!(store.get_environment(&plain).await.unwrap(), cleared);
        assert_eq!(audit_count(store, &plain).await, audit_before);
        let unknown = store
            .update_environment(&actor(), "conf-missing-env", &update(Some("X"), None))
            .await;
        assert!(describe(unknown).starts_with("NotFound: environment"));

        // The audit log: each applied update, with the public fields before and after.
        let log = store.audit_log(&AuditQuery::env(&plain, 10)).await.unwrap();
        let seen: Vec<(AuditItemKind, AuditAction, &str)> = log
            .iter()
            .map(|e| (e.item_kind, e.action, e.item_key.as_str()))
            .collect();
        let env_update = (
            AuditItemKind::Environment,
            AuditAction::Update,
            plain.as_str(),
        );
        let env_create = (
            AuditItemKind::Environment,
            AuditAction::Create,
            plain.as_str(),
        );
        assert_eq!(seen, [env_update, env_update, env_update, env_create]);
        let fields = |value: &Option<Value>| {
            let value = value.as_ref().unwrap();
            (
                value["name"].clone(),
                value.get("color").cloned(),
                value["key"].clone(),
            )
        };
        let first = &log[2];
        assert_eq!(
            fields(&first.before),
            (json!("Conformance"), None, json!(plain))
        );
        assert_eq!(
            fields(&first.after),
            (json!("Conformance"), Some(json!("#0366d6")), json!(plain))
        );
        let last = &log[0];
        assert_eq!(
            fields(&last.before),
            (json!("Staging"), Some(json!("#0366d6")), json!(plain))
        );
        assert_eq!(fields(&last.after), (json!("Staging"), None, json!(plain)));
        assert_eq!(last.actor, actor());
    })
}

/// Updating an environment records an `EnvironmentUpdated` change of that environment and
/// delivers it to subscribers, so whatever shows the environment hears of it; an update that
/// changes nothing, or is refused, records nothing.
pub fn updating_an_environment_is_a_change(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let cursor = store.snapshot(&env).await.unwrap().cursor;
        let mut sub = store.subscribe().await.unwrap();
        let recolor = EnvironmentUpdate {
            name: None,
            color: Some(Some("#28a745".to_owned())),
        };
        store
            .update_environment(&actor(), &env, &recolor)
            .await
            .unwrap();
        // Changes nothing, then refused: neither is announced.
        store
            .update_environment(&actor(), &env, &recolor)
            .await
            .unwrap();
        let refused = EnvironmentUpdate {
            name: Some(" ".to_owned()),
            color: None,
        };
        assert!(
            store
                .update_environment(&actor(), &env, &refused)
                .await
                .is_err()
        );
        store
            .put_flag(&actor(), &env, "f", bool_flag(), None)
            .await
            .unwrap();

        let mut got = Vec::new();
        while got.len() < 2 {
            let change = sub.next().await.unwrap();
            // A store shared with other cases may deliver their changes too.
            if change.env == env {
                got.push(change);
            }
        }
        let seen: Vec<(&str, &ChangeKind, u64)> = got
            .iter()
            .map(|c| (c.key.as_str(), &c.kind, c.version))
            .collect();
        assert_eq!(
            seen,
            [
                (env.as_str(), &ChangeKind::EnvironmentUpdated, 0),
                ("f", &ChangeKind::Flag { deleted: false }, 1),
            ]
        );
        assert_eq!(store.changes_since(&env, cursor).await.unwrap(), got);
        // A follower that loads the environment afresh starts after the update.
        assert_eq!(store.snapshot(&env).await.unwrap().cursor, got[1].seq);
    })
}

/// Versions start at 1 and bump per write; `expected_version` works like `If-Match`.
pub fn flag_versions_and_if_match(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let mut doc = bool_flag();
        doc["_custom"] = json!({"kept": [1, 2]});
        doc["version"] = json!(42);
        let created = store
            .put_flag(&actor(), &env, "f", doc.clone(), None)
            .await
            .unwrap();
        assert_eq!((created.key.as_str(), created.version), ("f", 1));
        assert!(!created.archived);
        let mut expected = doc.clone();
        expected["key"] = json!("f");
        expected["version"] = json!(1);
        assert_eq!(
            created.doc, expected,
            "stored as written, key and version set"
        );
        assert_eq!(store.get_flag(&env, "f").await.unwrap(), created);
        assert_eq!(created.to_flag().unwrap().version, 1);

        // Creating again without a version: the flag exists.
        assert_eq!(
            conflict(store.put_flag(&actor(), &env, "f", bool_flag(), None).await),
            Some(1)
        );
        let replaced = store
            .put_flag(&actor(), &env, "f", bool_flag(), Some(1))
            .await
            .unwrap();
        assert_eq!(replaced.version, 2);
        assert_eq!(replaced.doc["version"], json!(2));
        // A stale version.
        assert_eq!(
            conflict(
                store
                    .put_flag(&actor(), &env, "f", bool_flag(), Some(1))
                    .await
            ),
            Some(2)
        );
        // A version for a flag that does not exist.
        assert_eq!(
            conflict(
                store
                    .put_flag(&actor(), &env, "g", bool_flag(), Some(1))
                    .await
            ),
            None
        );
        assert!(describe(store.get_flag(&env, "g").await).starts_with("NotFound: "));
        // The document may carry its own key if it agrees.
        let mut keyed = bool_flag();
        keyed["key"] = json!("g");
        assert_eq!(
            store
                .put_flag(&actor(), &env, "g", keyed, None)
                .await
                .unwrap()
                .version,
            1
        );

        let list = store
            .list_flags(&env, &ListFilter::default())
            .await
            .unwrap();
        let keys: Vec<&str> = list.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["f", "g"]);
        let prefixed = store
            .list_flags(
                &env,
                &ListFilter {
                    archived: None,
                    key_prefix: Some("g".to_owned()),
                },
            )
            .await
            .unwrap();
        assert_eq!(prefixed.len(), 1);
        assert_eq!(prefixed[0].key, "g");
        assert!(describe(store.get_flag(&env, "nope").await).starts_with("NotFound: "));
    })
}

/// Malformed documents are refused with the field path, and nothing is stored.
pub fn flag_validation_names_the_field(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let cases = [
            (json!("flag"), "Invalid: a flag must be a JSON object"),
            (
                json!({"variations": [1], "rules": [{"clauses": [{"values": "x"}]}]}),
                "Invalid: rules[0].clauses[0].values: expected an array, found string \"x\"",
            ),
            (
                json!({"variations": [1, 2], "fallthrough": {"variation": 2}}),
                "Invalid: fallthrough.variation: variation 2 does not exist (the flag has 2)",
            ),
            (
                json!({"key": "other"}),
                "Invalid: key: the document's key \"other\" differs from \"f\" in the path",
            ),
            (
                json!({"variations": [1], "rules": [{"variation": 0,
                    "clauses": [{"attribute": "a", "op": "sometimes", "values": []}]}]}),
                "Invalid: rules[0].clauses[0].op: unknown operator \"sometimes\"",
            ),
        ];
        for (doc, want) in cases {
            let got = describe(store.put_flag(&actor(), &env, "f", doc.clone(), None).await);
            assert_eq!(got, want, "for {doc}");
        }
        let bad_key = store
            .put_flag(&actor(), &env, "a/b", bool_flag(), None)
            .await;
        assert!(describe(bad_key).starts_with("Invalid: key: flag key \"a/b\""));
        assert!(describe(store.get_flag(&env, "f").await).starts_with("NotFound: "));
        assert_eq!(audit_count(store, &env).await, 1, "only the environment's");

        // A valid replace, then an invalid one: the valid one stays.
        store
            .put_flag(&actor(), &env, "f", bool_flag(), None)
            .await
            .unwrap();
        let bad = store
            .put_flag(&actor(), &env, "f", json!({"targets": 3}), Some(1))
            .await;
        assert!(describe(bad).starts_with("Invalid: targets: "));
        assert_eq!(store.get_flag(&env, "f").await.unwrap().version, 1);

        let segment = store
            .put_segment(&actor(), &env, "s", json!({"included": "bob"}), None)
            .await;
        assert_eq!(
            describe(segment),
            "Invalid: included: expected an array, found string \"bob\""
        );
    })
}

/// What the checks only warn about is stored as written, and the stored item (as written and as
/// read back) names each warning with its path.
pub fn warnings_do_not_refuse_a_write(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let shown = |problems: Vec<flags_core::Problem>| {
            problems.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        let mut doc = bool_flag();
        doc["rules"] = json!([{"id": "r0", "variation": 0, "clauses": [
            {"attribute": "email", "op": "matches", "values": [".*@example\\.com", "("]},
        ]}]);
        doc["fallthrough"] = json!({"rollout": {"variations": [
            {"variation": 0, "weight": 30000}, {"variation": 1, "weight": 30000},
        ]}});
        let written = store
            .put_flag(&actor(), &env, "f", doc.clone(), None)
            .await
            .unwrap();
        let expected = [
            "warning: fallthrough.rollout.variations: weights add up to 60000, not 100000",
            "warning: rules[0].clauses[0].values[1]: invalid regular expression: unclosed group",
        ];
        assert_eq!(shown(written.warnings()), expected);
        let read = store.get_flag(&env, "f").await.unwrap();
        assert_eq!(shown(read.warnings()), expected);
        assert!(flags_core::Flag::from_json_value(read.doc).is_ok());

        let segment = json!({"rules": [{"clauses": [
            {"attribute": "version", "op": "semVerLessThan", "values": ["2", "two"]},
        ]}]});
        let written = store
            .put_segment(&actor(), &env, "s", segment, None)
            .await
            .unwrap();
        assert_eq!(
            shown(written.warnings()),
            [
                "warning: rules[0].clauses[0].values[1]: invalid semantic version: expected MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]"
            ]
        );
        let update = SegmentTargetsUpdate {
            add_included: vec!["bob".to_owned()],
            ..SegmentTargetsUpdate::default()
        };
        let updated = store
            .update_segment_targets(&actor(), &env, "s", &update, None)
            .await
            .unwrap();
        assert_eq!(shown(updated.warnings()).len(), 1, "still there");
        assert!(
            store
                .put_flag(&actor(), &env, "g", bool_flag(), None)
                .await
                .unwrap()
                .warnings()
                .is_empty()
        );
    })
}

/// Unknown or archived prerequisites and segments, out-of-range prerequisite variations and
/// cycles are refused.
pub fn unresolved_references_are_refused(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let unknown = store
            .put_flag(&actor(), &env, "a", with_prereq("ghost", 0), None)
            .await;
        assert_eq!(
            describe(unknown),
            "Unresolved: prerequisites[0].key: unknown or archived flag \"ghost\""
        );
        let unknown_segment = store
            .put_flag(&actor(), &env, "a", with_segment_rule("nobody"), None)
            .await;
        assert_eq!(
            describe(unknown_segment),
            "Unresolved: rules[0].clauses[0].values[0]: unknown or archived segment \"nobody\""
        );

        store
            .put_flag(&actor(), &env, "c", bool_flag(), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &env, "b", with_prereq("c", 0), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &env, "a", with_prereq("b", 1), None)
            .await
            .unwrap();
        let out_of_range = store
            .put_flag(&actor(), &env, "d", with_prereq("c", 2), None)
            .await;
        assert_eq!(
            describe(out_of_range),
            "Unresolved: prerequisites[0].variation: flag \"c\" has no variation 2 (it has 2)"
        );
        // c -> a would close a -> b -> c -> a.
        let cycle = store
            .put_flag(&actor(), &env, "c", with_prereq("a", 0), Some(1))
            .await;
        assert_eq!(
            describe(cycle),
            "Unresolved: prerequisites[0].key: prerequisite cycle: c -> a -> b -> c"
        );
        let own = store
            .put_flag(&actor(), &env, "c", with_prereq("c", 0), Some(1))
            .await;
        assert_eq!(
            describe(own),
            "Unresolved: prerequisites[0].key: prerequisite cycle: c -> c"
        );
        assert_eq!(store.get_flag(&env, "c").await.unwrap().version, 1);

        // Segment cycles.
        store
            .put_segment(&actor(), &env, "s3", json!({}), None)
            .await
            .unwrap();
        store
            .put_segment(&actor(), &env, "s2", segment_with_rule("s3"), None)
            .await
            .unwrap();
        store
            .put_segment(&actor(), &env, "s1", segment_with_rule("s2"), None)
            .await
            .unwrap();
        let seg_cycle = store
            .put_segment(&actor(), &env, "s3", segment_with_rule("s1"), Some(1))
            .await;
        assert_eq!(
            describe(seg_cycle),
            "Unresolved: rules[0].clauses[0].values[0]: segment cycle: s3 -> s1 -> s2 -> s3"
        );
        let unknown_nested = store
            .put_segment(&actor(), &env, "s4", segment_with_rule("s9"), None)
            .await;
        assert!(describe(unknown_nested).starts_with("Unresolved: rules[0].clauses[0].values[0]"));
        store
            .put_flag(&actor(), &env, "uses-s1", with_segment_rule("s1"), None)
            .await
            .unwrap();
        // 1 environment + c, b, a + s3, s2, s1 + uses-s1.
        assert_eq!(audit_count(store, &env).await, 8);
    })
}

/// Deleting or archiving what live items refer to is refused, listing them.
pub fn dependents_block_delete_and_archive(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        store
            .put_flag(&actor(), &env, "base", bool_flag(), None)
            .await
            .unwrap();
        for key in ["y", "x"] {
            store
                .put_flag(&actor(), &env, key, with_prereq("base", 0), None)
                .await
                .unwrap();
        }
        let deps = blocked(store.delete_flag(&actor(), &env, "base", None).await);
        assert_eq!(deps, [dep(ItemKind::Flag, "x"), dep(ItemKind::Flag, "y")]);
        let err = store
            .delete_flag(&actor(), &env, "base", None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "still referenced by flag x, flag y");
        let deps = blocked(
            store
                .set_flag_archived(&actor(), &env, "base", true, None)
                .await,
        );
        assert_eq!(deps.len(), 2);

        // Segments are referenced by flag rules and by other segments.
        store
            .put_segment(&actor(), &env, "s", json!({}), None)
            .await
            .unwrap();
        store
            .put_segment(&actor(), &env, "t", segment_with_rule("s"), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &env, "f", with_segment_rule("s"), None)
            .await
            .unwrap();
        let deps = blocked(store.delete_segment(&actor(), &env, "s", None).await);
        assert_eq!(
            deps,
            [dep(ItemKind::Flag, "f"), dep(ItemKind::Segment, "t")]
        );
        blocked(
            store
                .set_segment_archived(&actor(), &env, "s", true, None)
                .await,
        );

        // A stale version conflicts before anything else.
        assert_eq!(
            conflict(store.delete_flag(&actor(), &env, "x", Some(9)).await),
            Some(1)
        );
        // Once the dependents are gone (an archived one does not count), deleting works.
        store
            .delete_flag(&actor(), &env, "x", Some(1))
            .await
            .unwrap();
        store
            .set_flag_archived(&actor(), &env, "y", true, None)
            .await
            .unwrap();
        store
            .delete_flag(&actor(), &env, "base", None)
            .await
            .unwrap();
        assert!(describe(store.get_flag(&env, "base").await).starts_with("NotFound: "));
        assert!(
            describe(store.delete_flag(&actor(), &env, "base", None).await)
                .starts_with("NotFound: ")
        );
        // The archived dependent now names a missing prerequisite, so it cannot come back.
        let back = store
            .set_flag_archived(&actor(), &env, "y", false, None)
            .await;
        assert_eq!(
            describe(back),
            "Unresolved: prerequisites[0].key: unknown or archived flag \"base\""
        );
    })
}

/// A deleted flag leaves a version behind; re-creating it continues from there.
pub fn deletion_leaves_a_tombstone(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        store
            .put_flag(&actor(), &env, "f", bool_flag(), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &env, "f", bool_flag(), Some(1))
            .await
            .unwrap();
        store.set_killed(&actor(), &env, "f", true).await.unwrap();
        let pin = OverrideKey {
            flag_key: "f".to_owned(),
            context_kind: "user".to_owned(),
            context_key: "bob".to_owned(),
        };
        store.set_override(&actor(), &env, &pin, 1).await.unwrap();
        let cursor = store.snapshot(&env).await.unwrap().cursor;

        store
            .delete_flag(&actor(), &env, "f", Some(2))
            .await
            .unwrap();
        let changes = store.changes_since(&env, cursor).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (
                changes[0].key.as_str(),
                changes[0].version,
                &changes[0].kind
            ),
            ("f", 3, &ChangeKind::Flag { deleted: true })
        );
        assert!(
            store
                .list_flags(&env, &ListFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.snapshot(&env).await.unwrap().flags.is_empty());
        // The kill and the override went with it.
        assert!(store.killed_flags(&env).await.unwrap().is_empty());
        assert_eq!(store.get_override(&env, &pin).await.unwrap(), None);

        assert_eq!(
            conflict(
                store
                    .put_flag(&actor(), &env, "f", bool_flag(), Some(3))
                    .await
            ),
            None,
            "a deleted flag does not exist"
        );
        let again = store
            .put_flag(&actor(), &env, "f", bool_flag(), None)
            .await
            .unwrap();
        assert_eq!(again.version, 4);
        assert!(store.killed_flags(&env).await.unwrap().is_empty());
        assert_eq!(store.get_override(&env, &pin).await.unwrap(), None);

        store
            .put_segment(&actor(), &env, "s", json!({}), None)
            .await
            .unwrap();
        store
            .delete_segment(&actor(), &env, "s", Some(1))
            .await
            .unwrap();
        let s = store
            .put_segment(&actor(), &env, "s", json!({}), None)
            .await
            .unwrap();
        assert_eq!(s.version, 3);
    })
}

/// Archived items are kept, listed by filter, bump the version, and cannot be referenced.
pub fn archive_and_unarchive(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        store
            .put_flag(&actor(), &env, "old", bool_flag(), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &env, "new", bool_flag(), None)
            .await
            .unwrap();
        assert_eq!(
            conflict(
                store
                    .set_flag_archived(&actor(), &env, "old", true, Some(5))
                    .await
            ),
            Some(1)
        );
        let archived = store
            .set_flag_archived(&actor(), &env, "old", true, Some(1))
            .await
            .unwrap();
        assert!(archived.archived);
        assert_eq!(archived.version, 2);
        assert_eq!(archived.doc["version"], json!(2));
        let before = audit_count(store, &env).await;
        let same = store
            .set_flag_archived(&actor(), &env, "old", true, None)
            .await
            .unwrap();
        assert_eq!(
            same.version, 2,
            "archiving an archived flag changes nothing"
        );
        assert_eq!(audit_count(store, &env).await, before);

        let keys =
            |flags: Vec<crate::StoredFlag>| flags.into_iter().map(|f| f.key).collect::<Vec<_>>();
        let filter = |archived| ListFilter {
            archived,
            key_prefix: None,
        };
        assert_eq!(
            keys(store.list_flags(&env, &filter(Some(true))).await.unwrap()),
            ["old"]
        );
        assert_eq!(
            keys(store.list_flags(&env, &filter(Some(false))).await.unwrap()),
            ["new"]
        );
        assert_eq!(
            keys(store.list_flags(&env, &filter(None)).await.unwrap()),
            ["new", "old"]
        );
        let snapshot = store.snapshot(&env).await.unwrap();
        assert_eq!(snapshot.flags.len(), 2, "archived flags are in snapshots");
        let served = snapshot.to_flag_data().unwrap();
        assert_eq!(served.flags.keys().collect::<Vec<_>>(), ["new"]);

        let refers = store
            .put_flag(&actor(), &env, "dep", with_prereq("old", 0), None)
            .await;
        assert_eq!(
            describe(refers),
            "Unresolved: prerequisites[0].key: unknown or archived flag \"old\""
        );
        // Replacing an archived flag keeps it archived.
        let replaced = store
            .put_flag(&actor(), &env, "old", bool_flag(), Some(2))
            .await
            .unwrap();
        assert!(replaced.archived);
        assert_eq!(replaced.version, 3);
        let back = store
            .set_flag_archived(&actor(), &env, "old", false, Some(3))
            .await
            .unwrap();
        assert!(!back.archived);
        assert_eq!(back.version, 4);
        store
            .put_flag(&actor(), &env, "dep", with_prereq("old", 0), None)
            .await
            .unwrap();

        store
            .put_segment(&actor(), &env, "seg", json!({}), None)
            .await
            .unwrap();
        let seg = store
            .set_segment_archived(&actor(), &env, "seg", true, None)
            .await
            .unwrap();
        assert!(seg.archived);
        assert_eq!(seg.version, 2);
        let refers = store
            .put_flag(&actor(), &env, "f", with_segment_rule("seg"), None)
            .await;
        assert!(describe(refers).starts_with("Unresolved: "));
        assert_eq!(
            store
                .list_segments(&env, &filter(Some(true)))
                .await
                .unwrap()
                .len(),
            1
        );
        let log = store
            .audit_log(&AuditQuery::flag(&env, "old", 10))
            .await
            .unwrap();
        let actions: Vec<AuditAction> = log.iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [
                AuditAction::Unarchive,
                AuditAction::Replace,
                AuditAction::Archive,
                AuditAction::Create
            ]
        );
        assert_eq!(log[2].before, Some(json!({"archived": false})));
        assert_eq!(log[2].after, Some(json!({"archived": true})));
    })
}

/// Segments: create, replace, and batches of individual keys.
pub fn segments_and_target_batches(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let created = store
            .put_segment(
                &actor(),
                &env,
                "beta",
                json!({"included": ["a"], "salt": "x"}),
                None,
            )
            .await
            .unwrap();
        assert_eq!(created.version, 1);
        assert_eq!(created.doc["key"], json!("beta"));
        assert_eq!(
            conflict(
                store
                    .put_segment(&actor(), &env, "beta", json!({}), None)
                    .await
            ),
            Some(1)
        );

        let add = SegmentTargetsUpdate {
            add_included: vec!["b".to_owned(), "c".to_owned(), "a".to_owned()],
            add_excluded: vec!["z".to_owned()],
            ..SegmentTargetsUpdate::default()
        };
        let updated = store
            .update_segment_targets(&actor(), &env, "beta", &add, Some(1))
            .await
            .unwrap();
        assert_eq!(updated.version, 2);
        assert_eq!(updated.doc["included"], json!(["a", "b", "c"]));
        assert_eq!(updated.doc["excluded"], json!(["z"]));
        assert_eq!(updated.doc["salt"], json!("x"), "other fields kept");
        assert_eq!(updated.to_segment().unwrap().included, ["a", "b", "c"]);

        // Nothing to do: no version, no audit entry.
        let before = audit_count(store, &env).await;
        let same = store
            .update_segment_targets(&actor(), &env, "beta", &add, None)
            .await
            .unwrap();
        assert_eq!(same.version, 2);
        assert_eq!(audit_count(store, &env).await, before);
        assert_eq!(
            conflict(
                store
                    .update_segment_targets(&actor(), &env, "beta", &add, Some(1))
                    .await
            ),
            Some(2)
        );

        let remove = SegmentTargetsUpdate {
            remove_included: vec!["a".to_owned(), "c".to_owned(), "nobody".to_owned()],
            remove_excluded: vec!["z".to_owned()],
            ..SegmentTargetsUpdate::default()
        };
        let removed = store
            .update_segment_targets(&actor(), &env, "beta", &remove, None)
            .await
            .unwrap();
        assert_eq!(removed.version, 3);
        assert_eq!(removed.doc["included"], json!(["b"]));
        assert_eq!(removed.doc["excluded"], json!([]));

        let orgs = SegmentTargetsUpdate {
            context_kind: Some("org".to_owned()),
            add_included: vec!["acme".to_owned()],
            add_excluded: vec!["evil".to_owned()],
            ..SegmentTargetsUpdate::default()
        };
        let with_orgs = store
            .update_segment_targets(&actor(), &env, "beta", &orgs, None)
            .await
            .unwrap();
        assert_eq!(
            with_orgs.doc["includedContexts"],
            json!([{"contextKind": "org", "values": ["acme"]}])
        );
        assert_eq!(
            with_orgs.doc["excludedContexts"],
            json!([{"contextKind": "org", "values": ["evil"]}])
        );
        let bad_kind = SegmentTargetsUpdate {
            context_kind: Some("kind".to_owned()),
            add_included: vec!["x".to_owned()],
            ..SegmentTargetsUpdate::default()
        };
        let bad = store
            .update_segment_targets(&actor(), &env, "beta", &bad_kind, None)
            .await;
        assert!(describe(bad).starts_with("Invalid: contextKind: "));
        let missing = store
            .update_segment_targets(&actor(), &env, "nope", &add, None)
            .await;
        assert!(describe(missing).starts_with("NotFound: "));

        let log = store
            .audit_log(&AuditQuery {
                item: Some((AuditItemKind::Segment, "beta".to_owned())),
                ..AuditQuery::env(&env, 10)
            })
            .await
            .unwrap();
        assert_eq!(log.len(), 4, "create and three target updates");
        assert_eq!(log[0].action, AuditAction::UpdateTargets);
        assert_eq!(log[2].before.as_ref().unwrap()["included"], json!(["a"]));
        assert_eq!(
            log[2].after.as_ref().unwrap()["included"],
            json!(["a", "b", "c"])
        );
    })
}

/// The kill set: kill and unkill are idempotent and recorded once each.
pub fn kill_and_unkill(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        for key in ["b", "a"] {
            store
                .put_flag(&actor(), &env, key, bool_flag(), None)
                .await
                .unwrap();
        }
        let cursor = store.snapshot(&env).await.unwrap().cursor;
        assert!(store.set_killed(&actor(), &env, "b", true).await.unwrap());
        assert!(!store.set_killed(&actor(), &env, "b", true).await.unwrap());
        assert!(store.set_killed(&actor(), &env, "a", true).await.unwrap());
        assert_eq!(store.killed_flags(&env).await.unwrap(), ["a", "b"]);
        assert_eq!(store.snapshot(&env).await.unwrap().killed, ["a", "b"]);
        assert!(store.set_killed(&actor(), &env, "b", false).await.unwrap());
        assert!(!store.set_killed(&actor(), &env, "b", false).await.unwrap());
        assert_eq!(store.killed_flags(&env).await.unwrap(), ["a"]);
        let missing = store.set_killed(&actor(), &env, "ghost", true).await;
        assert!(describe(missing).starts_with("NotFound: "));
        // Kills do not bump the flag's version.
        assert_eq!(store.get_flag(&env, "b").await.unwrap().version, 1);

        let kinds: Vec<(String, ChangeKind)> = store
            .changes_since(&env, cursor)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.key, c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("b".to_owned(), ChangeKind::Kill { killed: true }),
                ("a".to_owned(), ChangeKind::Kill { killed: true }),
                ("b".to_owned(), ChangeKind::Kill { killed: false }),
            ]
        );
        let log = store
            .audit_log(&AuditQuery::flag(&env, "b", 10))
            .await
            .unwrap();
        let actions: Vec<AuditAction> = log.iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [AuditAction::Unkill, AuditAction::Kill, AuditAction::Create]
        );
        assert_eq!(log[1].after, Some(json!({"killed": true})));
    })
}

/// Overrides: validated against the flag, recorded, and kept consistent with it.
pub fn overrides_are_validated(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let mut three = bool_flag();
        three["variations"] = json!(["a", "b", "c"]);
        store
            .put_flag(&actor(), &env, "f", three, None)
            .await
            .unwrap();
        let pin = |kind: &str, key: &str| OverrideKey {
            flag_key: "f".to_owned(),
            context_kind: kind.to_owned(),
            context_key: key.to_owned(),
        };
        assert_eq!(
            store
                .set_override(&actor(), &env, &pin("user", "bob"), 2)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .set_override(&actor(), &env, &pin("org", "acme"), 0)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store.get_override(&env, &pin("user", "bob")).await.unwrap(),
            Some(2)
        );
        assert_eq!(
            store
                .get_override(&env, &pin("user", "alice"))
                .await
                .unwrap(),
            None
        );
        let listed = store.list_overrides(&env, "f").await.unwrap();
        let listed: Vec<(&str, &str, usize)> = listed
            .iter()
            .map(|o| (o.context_kind.as_str(), o.context_key.as_str(), o.variation))
            .collect();
        assert_eq!(listed, [("org", "acme", 0), ("user", "bob", 2)]);

        let out_of_range = store
            .set_override(&actor(), &env, &pin("user", "bob"), 3)
            .await;
        assert_eq!(
            describe(out_of_range),
            "Invalid: variation: flag \"f\" has no variation 3 (it has 3)"
        );
        let bad_kind = store
            .set_override(&actor(), &env, &pin("multi", "bob"), 0)
            .await;
        assert!(describe(bad_kind).starts_with("Invalid: contextKind: "));
        let empty_key = store
            .set_override(&actor(), &env, &pin("user", ""), 0)
            .await;
        assert_eq!(
            describe(empty_key),
            "Invalid: contextKey: must not be empty"
        );
        let no_flag = OverrideKey {
            flag_key: "ghost".to_owned(),
            ..pin("user", "bob")
        };
        assert!(
            describe(store.set_override(&actor(), &env, &no_flag, 0).await)
                .starts_with("NotFound: ")
        );

        // Setting the same variation again writes nothing.
        let before = audit_count(store, &env).await;
        assert_eq!(
            store
                .set_override(&actor(), &env, &pin("user", "bob"), 2)
                .await
                .unwrap(),
            Some(2)
        );
        assert_eq!(audit_count(store, &env).await, before);

        // The flag cannot drop a variation an override uses.
        let shrink = store
            .put_flag(&actor(), &env, "f", bool_flag(), Some(1))
            .await;
        assert!(
            describe(shrink).starts_with("Unresolved: variations: the override of user \"bob\"")
        );

        assert_eq!(
            store
                .remove_override(&actor(), &env, &pin("user", "bob"))
                .await
                .unwrap(),
            Some(2)
        );
        assert_eq!(
            store
                .remove_override(&actor(), &env, &pin("user", "bob"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store.get_override(&env, &pin("user", "bob")).await.unwrap(),
            None
        );
        let log = store
            .audit_log(&AuditQuery::flag(&env, "f", 10))
            .await
            .unwrap();
        let actions: Vec<AuditAction> = log.iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [
                AuditAction::RemoveOverride,
                AuditAction::SetOverride,
                AuditAction::SetOverride,
                AuditAction::Create
            ]
        );
        assert_eq!(
            log[0].before,
            Some(json!({"contextKind": "user", "contextKey": "bob", "variation": 2}))
        );
        assert_eq!(log[0].after, None);
        // Now the flag may shrink.
        store
            .put_flag(&actor(), &env, "f", bool_flag(), Some(1))
            .await
            .unwrap();
    })
}

/// The audit log holds one entry per applied write, with actor, before and after; failed
/// writes leave none; entries outlive deletion; queries filter, page and come newest first.
pub fn audit_log_has_exactly_the_applied_writes(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let other = fresh_env(store).await;
        let a1 = store
            .put_flag(&actor(), &env, "f", bool_flag(), None)
            .await
            .unwrap();
        let _ = store
            .put_flag(&actor(), &env, "f", bool_flag(), None)
            .await
            .unwrap_err();
        let _ = store
            .put_flag(&actor(), &env, "f", json!({"on": "yes"}), Some(1))
            .await
            .unwrap_err();
        let mut off = bool_flag();
        off["on"] = json!(false);
        let someone = Actor {
            key_id: None,
            name: "bootstrap".to_owned(),
        };
        let a2 = store
            .put_flag(&someone, &env, "f", off, Some(1))
            .await
            .unwrap();
        store
            .put_flag(&actor(), &env, "g", bool_flag(), None)
            .await
            .unwrap();
        store.delete_flag(&actor(), &env, "f", None).await.unwrap();
        store
            .put_flag(&actor(), &other, "f", bool_flag(), None)
            .await
            .unwrap();

        let log = store
            .audit_log(&AuditQuery::flag(&env, "f", 100))
            .await
            .unwrap();
        let actions: Vec<AuditAction> = log.iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [
                AuditAction::Delete,
                AuditAction::Replace,
                AuditAction::Create
            ],
            "exactly the applied writes, newest first, surviving deletion"
        );
        assert!(log.windows(2).all(|w| w[0].id > w[1].id));
        assert!(log.iter().all(|e| e.env.as_deref() == Some(env.as_str())
            && e.item_kind == AuditItemKind::Flag
            && e.item_key == "f"));
        assert_eq!(log[2].before, None);
        assert_eq!(log[2].after.as_ref(), Some(&a1.doc));
        assert_eq!(log[1].before.as_ref(), Some(&a1.doc));
        assert_eq!(log[1].after.as_ref(), Some(&a2.doc));
        assert_eq!(log[1].actor, someone);
        assert_eq!(log[2].actor, actor());
        assert_eq!(log[0].before.as_ref(), Some(&a2.doc));
        assert_eq!(log[0].after, None);
        assert!(log[0].at >= log[2].at);

        let whole = store.audit_log(&AuditQuery::env(&env, 100)).await.unwrap();
        assert_eq!(whole.len(), 5, "environment, f x3, g");
        let newest_two = store.audit_log(&AuditQuery::env(&env, 2)).await.unwrap();
        assert_eq!(newest_two, whole[..2]);
        let older = store
            .audit_log(&AuditQuery {
                before_id: Some(whole[1].id),
                ..AuditQuery::env(&env, 100)
            })
            .await
            .unwrap();
        assert_eq!(older, whole[2..]);
        let everywhere = store
            .audit_log(&AuditQuery {
                env: None,
                ..AuditQuery::flag(&env, "f", 100)
            })
            .await
            .unwrap();
        assert!(everywhere.len() >= 4, "both environments' flag f");
        assert!(
            everywhere
                .iter()
                .any(|e| e.env.as_deref() == Some(other.as_str()))
        );
    })
}

/// API keys: the secret is shown once and stored hashed; revoked keys stop working; scope.
pub fn api_keys(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let other = fresh_env(store).await;
        let sdk = store
            .create_api_key(
                &actor(),
                &NewApiKey {
                    name: "web".to_owned(),
                    kind: ApiKeyKind::Sdk,
                    env: Some(env.clone()),
                },
            )
            .await
            .unwrap();
        assert!(sdk.secret.starts_with("flagd-sdk-"));
        assert!(sdk.secret.len() >= 64);
        assert!(!format!("{sdk:?}").contains(&sdk.secret), "Debug hides it");
        assert_eq!(sdk.key.kind, ApiKeyKind::Sdk);
        assert_eq!(sdk.key.env.as_deref(), Some(env.as_str()));
        assert!(sdk.key.allows_env(&env) && !sdk.key.allows_env(&other));

        let admin = store
            .create_api_key(
                &actor(),
                &NewApiKey {
                    name: "ops".to_owned(),
                    kind: ApiKeyKind::Admin,
                    env: None,
                },
            )
            .await
            .unwrap();
        assert!(admin.secret.starts_with("flagd-admin-"));
        assert_ne!(admin.secret, sdk.secret);
        assert!(admin.key.allows_env(&env) && admin.key.allows_env(&other));

        assert_eq!(
            store.authenticate(&sdk.secret).await.unwrap(),
            Some(sdk.key.clone())
        );
        assert_eq!(
            store.authenticate(&admin.secret).await.unwrap(),
            Some(admin.key.clone())
        );
        assert_eq!(store.authenticate("flagd-sdk-guess").await.unwrap(), None);
        // The hash itself is not a secret that works.
        assert_eq!(
            store.authenticate(&hash_secret(&sdk.secret)).await.unwrap(),
            None
        );

        let listed = store.list_api_keys().await.unwrap();
        assert!(listed.contains(&sdk.key) && listed.contains(&admin.key));
        let listed_text = serde_json::to_string(&listed).unwrap();
        assert!(!listed_text.contains(&sdk.secret));

        let revoked = store.revoke_api_key(&actor(), sdk.key.id).await.unwrap();
        assert!(revoked.revoked && !revoked.allows_env(&env));
        assert_eq!(store.authenticate(&sdk.secret).await.unwrap(), None);
        let again = store.revoke_api_key(&actor(), sdk.key.id).await.unwrap();
        assert!(again.revoked);
        assert!(
            describe(store.revoke_api_key(&actor(), u64::MAX >> 2).await).starts_with("NotFound: ")
        );

        let unknown_env = store
            .create_api_key(
                &actor(),
                &NewApiKey {
                    name: "x".to_owned(),
                    kind: ApiKeyKind::Sdk,
                    env: Some("conf-no-such-env".to_owned()),
                },
            )
            .await;
        assert!(describe(unknown_env).starts_with("NotFound: "));
        let unnamed = store
            .create_api_key(
                &actor(),
                &NewApiKey {
                    name: " ".to_owned(),
                    kind: ApiKeyKind::Sdk,
                    env: None,
                },
            )
            .await;
        assert_eq!(describe(unnamed), "Invalid: name: must not be empty");

        // Audited under the key's environment, never with the secret or its hash.
        let log = store
            .audit_log(&AuditQuery {
                item: Some((AuditItemKind::ApiKey, sdk.key.id.to_string())),
                ..AuditQuery::env(&env, 10)
            })
            .await
            .unwrap();
        let actions: Vec<AuditAction> = log.iter().map(|e| e.action).collect();
        assert_eq!(actions, [AuditAction::Revoke, AuditAction::Create]);
        let all = store
            .audit_log(&AuditQuery {
                env: None,
                item: None,
                limit: 100_000,
                before_id: None,
            })
            .await
            .unwrap();
        let text = serde_json::to_string(&all).unwrap();
        for secret in [&sdk.secret, &admin.secret] {
            assert!(!text.contains(secret.as_str()));
            assert!(!text.contains(&hash_secret(secret)));
        }
        assert!(
            all.iter()
                .any(|e| e.item_key == admin.key.id.to_string() && e.env.is_none())
        );
    })
}

/// Each flag's last change is the newest audit entry about it in that environment: flag
/// writes, archiving, kills and overrides all count; segments, other environments and
/// refused writes do not; a deleted flag's last change is its deletion.
pub fn flag_last_changes_are_each_flags_newest_entry(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let other = fresh_env(store).await;
        assert!(store.flag_last_changes(&env).await.unwrap().is_empty());
        let who = |name: &str, id: u64| Actor {
            key_id: Some(id),
            name: name.to_owned(),
        };
        let (ada, bo, cy) = (who("ada", 1), who("bo", 2), who("cy", 3));
        for key in ["written", "killed", "pinned", "archived", "gone", "refused"] {
            store
                .put_flag(&ada, &env, key, bool_flag(), None)
                .await
                .unwrap();
        }
        store
            .put_flag(&bo, &env, "written", bool_flag(), Some(1))
            .await
            .unwrap();
        store.set_killed(&bo, &env, "killed", true).await.unwrap();
        // Killing a killed flag writes nothing, so it is not a change.
        store.set_killed(&cy, &env, "killed", true).await.unwrap();
        store
            .set_override(&cy, &env, &pin("pinned", "user", "u1"), 1)
            .await
            .unwrap();
        store
            .set_flag_archived(&bo, &env, "archived", true, None)
            .await
            .unwrap();
        store.delete_flag(&cy, &env, "gone", None).await.unwrap();
        let bad = json!({"variations": [true], "fallthrough": {"variation": 4}});
        assert!(
            store
                .put_flag(&cy, &env, "refused", bad, Some(1))
                .await
                .is_err()
        );
        // Neither segments nor other environments count.
        store
            .put_segment(&cy, &env, "written", json!({}), None)
            .await
            .unwrap();
        store
            .put_flag(&cy, &other, "written", bool_flag(), None)
            .await
            .unwrap();

        let last = store.flag_last_changes(&env).await.unwrap();
        let mut seen: Vec<(&str, &str, AuditAction)> = last
            .iter()
            .map(|(key, change)| (key.as_str(), change.actor.name.as_str(), change.action))
            .collect();
        seen.sort_unstable_by_key(|(key, ..)| *key);
        assert_eq!(
            seen,
            [
                ("archived", "bo", AuditAction::Archive),
                ("gone", "cy", AuditAction::Delete),
                ("killed", "bo", AuditAction::Kill),
                ("pinned", "cy", AuditAction::SetOverride),
                ("refused", "ada", AuditAction::Create),
                ("written", "bo", AuditAction::Replace),
            ]
        );
        // Each is exactly what the flag's own audit log shows first.
        for (key, change) in &last {
            let newest = store
                .audit_log(&AuditQuery::flag(&env, key, 1))
                .await
                .unwrap();
            assert_eq!(*change, LastChange::of(&newest[0]), "{key}");
        }
        assert_eq!(last["killed"].actor, bo);
        assert!(last["killed"].at > 1_600_000_000_000, "Unix ms");

        let elsewhere = store.flag_last_changes(&other).await.unwrap();
        assert_eq!(elsewhere.len(), 1);
        assert_eq!(elsewhere["written"].actor, cy);
        assert_eq!(elsewhere["written"].action, AuditAction::Create);
        let missing = store.flag_last_changes("conf-missing-env").await;
        assert!(describe(missing).starts_with("NotFound: environment"));
    })
}

/// Snapshots carry a cursor; `changes_since` returns later changes of that environment only,
/// in order.
pub fn snapshot_and_changes_since(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let other = fresh_env(store).await;
        let empty = store.snapshot(&env).await.unwrap();
        assert_eq!(empty.env, env);
        assert!(empty.flags.is_empty() && empty.segments.is_empty() && empty.killed.is_empty());
        assert!(
            store
                .changes_since(&env, empty.cursor)
                .await
                .unwrap()
                .is_empty()
        );

        store
            .put_segment(&actor(), &env, "s", json!({"included": ["u"]}), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &env, "b", with_segment_rule("s"), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &env, "a", bool_flag(), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &other, "x", bool_flag(), None)
            .await
            .unwrap();
        store.set_killed(&actor(), &env, "a", true).await.unwrap();

        let snap = store.snapshot(&env).await.unwrap();
        let keys: Vec<&str> = snap.flags.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(snap.segments.len(), 1);
        assert_eq!(snap.killed, ["a"]);
        let data = snap.to_flag_data().unwrap();
        assert_eq!(data.flags["b"].rules.len(), 1);
        assert_eq!(data.segments["s"].included, ["u"]);

        let all = store.changes_since(&env, empty.cursor).await.unwrap();
        let seen: Vec<(&str, &ChangeKind, u64)> = all
            .iter()
            .map(|c| (c.key.as_str(), &c.kind, c.version))
            .collect();
        assert_eq!(
            seen,
            [
                ("s", &ChangeKind::Segment { deleted: false }, 1),
                ("b", &ChangeKind::Flag { deleted: false }, 1),
                ("a", &ChangeKind::Flag { deleted: false }, 1),
                ("a", &ChangeKind::Kill { killed: true }, 1),
            ]
        );
        assert!(all.iter().all(|c| c.env == env));
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(
            snap.cursor, all[3].seq,
            "the cursor is the last change included"
        );
        assert!(
            store
                .changes_since(&env, snap.cursor)
                .await
                .unwrap()
                .is_empty()
        );
        let tail = store.changes_since(&env, all[1].seq).await.unwrap();
        assert_eq!(tail, all[2..]);

        store
            .put_flag(&actor(), &env, "a", bool_flag(), Some(1))
            .await
            .unwrap();
        let next = store.changes_since(&env, snap.cursor).await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].key.as_str(), next[0].version), ("a", 2));
        let elsewhere = store.changes_since(&other, 0).await.unwrap();
        assert_eq!(elsewhere.len(), 2);
        assert_eq!(elsewhere[0].kind, ChangeKind::EnvironmentCreated);
        assert_eq!(elsewhere[1].key, "x");
        assert_eq!(elsewhere[1].item_kind(), ItemKind::Flag);
    })
}

fn pin(flag: &str, kind: &str, key: &str) -> OverrideKey {
    OverrideKey {
        flag_key: flag.to_owned(),
        context_kind: kind.to_owned(),
        context_key: key.to_owned(),
    }
}

fn held(flag: &str, kind: &str, key: &str, variation: usize) -> FlagOverride {
    FlagOverride {
        flag_key: flag.to_owned(),
        context_kind: kind.to_owned(),
        context_key: key.to_owned(),
        variation,
    }
}

/// A snapshot holds every override of its environment (archived flags' included, removed and
/// deleted flags' not), sorted by flag, context kind and context key, and agrees with
/// `list_overrides`.
pub fn snapshot_holds_every_override(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let other = fresh_env(store).await;
        assert!(store.snapshot(&env).await.unwrap().overrides.is_empty());
        for key in ["b", "a", "gone", "old"] {
            store
                .put_flag(&actor(), &env, key, bool_flag(), None)
                .await
                .unwrap();
        }
        store
            .put_flag(&actor(), &other, "a", bool_flag(), None)
            .await
            .unwrap();
        let writes = [
            (pin("b", "user", "zoe"), 1),
            (pin("b", "org", "acme"), 0),
            (pin("a", "user", "bob"), 1),
            (pin("a", "user", "amy"), 0),
            (pin("a", "user", "removed"), 1),
            (pin("gone", "user", "bob"), 1),
            (pin("old", "user", "bob"), 0),
        ];
        for (key, variation) in &writes {
            store
                .set_override(&actor(), &env, key, *variation)
                .await
                .unwrap();
        }
        store
            .set_override(&actor(), &env, &pin("a", "user", "bob"), 0)
            .await
            .unwrap();
        store
            .set_override(&actor(), &other, &pin("a", "user", "carl"), 1)
            .await
            .unwrap();
        store
            .remove_override(&actor(), &env, &pin("a", "user", "removed"))
            .await
            .unwrap();
        store
            .delete_flag(&actor(), &env, "gone", None)
            .await
            .unwrap();
        store
            .set_flag_archived(&actor(), &env, "old", true, None)
            .await
            .unwrap();

        let snap = store.snapshot(&env).await.unwrap();
        assert_eq!(
            snap.overrides,
            [
                held("a", "user", "amy", 0),
                held("a", "user", "bob", 0),
                held("b", "org", "acme", 0),
                held("b", "user", "zoe", 1),
                held("old", "user", "bob", 0),
            ]
        );
        let mut listed = Vec::new();
        for flag in &snap.flags {
            for o in store.list_overrides(&env, &flag.key).await.unwrap() {
                listed.push(held(
                    &flag.key,
                    &o.context_kind,
                    &o.context_key,
                    o.variation,
                ));
            }
        }
        assert_eq!(
            listed, snap.overrides,
            "the snapshot agrees with list_overrides"
        );
        assert!(
            store
                .changes_since(&env, snap.cursor)
                .await
                .unwrap()
                .is_empty(),
            "every override write is within the cursor"
        );
        assert_eq!(
            store.snapshot(&other).await.unwrap().overrides,
            [held("a", "user", "carl", 1)]
        );
    })
}

/// A subscription delivers every change committed after it started, in order, for every
/// environment.
pub fn subscription_delivers_changes(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let other = fresh_env(store).await;
        let created = store.snapshot(&env).await.unwrap().cursor;
        let mut sub = store.subscribe().await.unwrap();
        // A dropped subscription must not hold writes up.
        drop(store.subscribe().await.unwrap());

        store
            .put_flag(&actor(), &env, "f", bool_flag(), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &other, "g", bool_flag(), None)
            .await
            .unwrap();
        let pin = OverrideKey {
            flag_key: "f".to_owned(),
            context_kind: "user".to_owned(),
            context_key: "bob".to_owned(),
        };
        store.set_override(&actor(), &env, &pin, 1).await.unwrap();
        store.set_killed(&actor(), &env, "f", true).await.unwrap();
        store.delete_flag(&actor(), &env, "f", None).await.unwrap();

        let mut got: Vec<Change> = Vec::new();
        while got.len() < 5 {
            let change = sub.next().await.unwrap();
            // A store shared with other cases may deliver their changes too.
            if change.env == env || change.env == other {
                got.push(change);
            }
        }
        let seen: Vec<(&str, &str, &ChangeKind, u64)> = got
            .iter()
            .map(|c| (c.env.as_str(), c.key.as_str(), &c.kind, c.version))
            .collect();
        assert_eq!(
            seen,
            [
                (env.as_str(), "f", &ChangeKind::Flag { deleted: false }, 1),
                (other.as_str(), "g", &ChangeKind::Flag { deleted: false }, 1),
                (
                    env.as_str(),
                    "f",
                    &ChangeKind::Override {
                        context_kind: "user".to_owned(),
                        context_key: "bob".to_owned(),
                        variation: Some(1),
                    },
                    1
                ),
                (env.as_str(), "f", &ChangeKind::Kill { killed: true }, 1),
                (env.as_str(), "f", &ChangeKind::Flag { deleted: true }, 2),
            ]
        );
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
        // What the subscription delivered is what changes_since reports.
        let recorded = store.changes_since(&env, created).await.unwrap();
        let delivered: Vec<&Change> = got.iter().filter(|c| c.env == env).collect();
        assert_eq!(recorded.iter().collect::<Vec<_>>(), delivered);
    })
}

/// Creating an environment records a change of that environment and delivers it to
/// subscribers, so followers serve it without waiting for a poll; a refused creation records
/// nothing.
pub fn creating_an_environment_is_a_change(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let mut sub = store.subscribe().await.unwrap();
        let env = fresh_env(store).await;
        let announced = loop {
            let change = sub.next().await.unwrap();
            // A store shared with other cases may deliver their changes too.
            if change.env == env {
                break change;
            }
        };
        assert_eq!(
            (announced.key.as_str(), &announced.kind, announced.version),
            (env.as_str(), &ChangeKind::EnvironmentCreated, 0)
        );
        assert_eq!(
            store.changes_since(&env, 0).await.unwrap(),
            std::slice::from_ref(&announced),
            "the announced change is the recorded one"
        );
        let snap = store.snapshot(&env).await.unwrap();
        assert_eq!(
            snap.cursor, announced.seq,
            "a snapshot includes its creation"
        );

        let again = store.create_environment(&actor(), &env, "Again").await;
        assert!(describe(again).starts_with("AlreadyExists: "));
        store
            .put_flag(&actor(), &env, "f", bool_flag(), None)
            .await
            .unwrap();
        let next = loop {
            let change = sub.next().await.unwrap();
            if change.env == env {
                break change;
            }
        };
        assert_eq!(
            (next.key.as_str(), &next.kind),
            ("f", &ChangeKind::Flag { deleted: false }),
            "a refused creation announces nothing"
        );
        assert_eq!(store.changes_since(&env, 0).await.unwrap().len(), 2);
    })
}

fn import_item(kind: ItemKind, key: &str, doc: Value) -> ImportItem {
    ImportItem {
        kind,
        key: key.to_owned(),
        doc,
    }
}

/// The item and error of a refused import, for one-line assertions.
fn refused(result: Result<Vec<ImportOutcome>, BatchError>) -> (Option<(ItemKind, String)>, String) {
    match result {
        Err(BatchError { item, source }) => (item, describe::<()>(Err(source))),
        Ok(outcomes) => panic!("expected a refusal, got {outcomes:?}"),
    }
}

/// An import stores all of its items or none: a refused item (bad shape or unresolved
/// reference), wherever it is in the batch, leaves the environment, its audit log and its
/// changes as they were, and the error names it. An applied import writes what differs and
/// leaves equal items alone.
pub fn import_is_all_or_nothing(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        store
            .put_flag(&actor(), &env, "keep", bool_flag(), None)
            .await
            .unwrap();
        store
            .put_flag(&actor(), &env, "old", bool_flag(), None)
            .await
            .unwrap();
        store
            .set_flag_archived(&actor(), &env, "old", true, None)
            .await
            .unwrap();
        let before = store.snapshot(&env).await.unwrap();
        let audit_before = audit_count(store, &env).await;

        let mut changed = bool_flag();
        changed["salt"] = json!("new salt");
        let mut broken = bool_flag();
        broken["fallthrough"] = json!({"variation": 4});
        let good = || {
            vec![
                import_item(ItemKind::Segment, "s", json!({"included": ["u"]})),
                import_item(ItemKind::Flag, "uses-s", with_segment_rule("s")),
                import_item(ItemKind::Flag, "keep", changed.clone()),
            ]
        };

        // A bad shape, last in the batch: nothing is written, not even the items before it.
        let mut items = good();
        items.push(import_item(ItemKind::Flag, "broken", broken));
        let (item, error) = refused(store.import(&actor(), &env, items).await);
        assert_eq!(item, Some((ItemKind::Flag, "broken".to_owned())));
        assert!(
            error.starts_with("Invalid: fallthrough.variation: "),
            "{error}"
        );
        // An unresolved reference, found only while writing: the same.
        let mut items = good();
        items.push(import_item(
            ItemKind::Flag,
            "needs",
            with_prereq("missing", 0),
        ));
        let (item, error) = refused(store.import(&actor(), &env, items).await);
        assert_eq!(item, Some((ItemKind::Flag, "needs".to_owned())));
        assert!(error.starts_with("Unresolved: "), "{error}");
        let message = BatchError::item(ItemKind::Segment, "s", StoreError::unresolved("x"));
        assert_eq!(message.to_string(), "segment s: x");

        assert_eq!(store.snapshot(&env).await.unwrap(), before);
        assert_eq!(audit_count(store, &env).await, audit_before);
        assert!(
            store
                .changes_since(&env, before.cursor)
                .await
                .unwrap()
                .is_empty()
        );

        // Applied: created, replaced (the archived one stays archived) and unchanged.
        let mut items = good();
        items.push(import_item(ItemKind::Flag, "old", changed.clone()));
        items.push(import_item(ItemKind::Flag, "old", bool_flag()));
        let outcomes = store.import(&actor(), &env, items).await.unwrap();
        assert_eq!(
            outcomes,
            [
                ImportOutcome::Created,
                ImportOutcome::Created,
                ImportOutcome::Replaced,
                ImportOutcome::Replaced,
                ImportOutcome::Replaced,
            ]
        );
        let old = store.get_flag(&env, "old").await.unwrap();
        assert_eq!((old.version, old.archived), (4, true));
        assert_eq!(store.get_flag(&env, "keep").await.unwrap().version, 2);
        assert_eq!(store.get_segment(&env, "s").await.unwrap().version, 1);
        assert_eq!(audit_count(store, &env).await, audit_before + 5);
        let changes = store.changes_since(&env, before.cursor).await.unwrap();
        let seen: Vec<(&str, u64)> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.version))
            .collect();
        assert_eq!(
            seen,
            [("s", 1), ("uses-s", 1), ("keep", 2), ("old", 3), ("old", 4)]
        );

        // Importing what is stored changes nothing, whether or not a document names its key
        // and whatever version it carries.
        let cursor = store.snapshot(&env).await.unwrap().cursor;
        let mut same = changed.clone();
        same["key"] = json!("keep");
        same["version"] = json!(99);
        let again = vec![
            import_item(ItemKind::Segment, "s", json!({"included": ["u"]})),
            import_item(ItemKind::Flag, "keep", same),
            import_item(ItemKind::Flag, "old", bool_flag()),
        ];
        let outcomes = store.import(&actor(), &env, again).await.unwrap();
        assert_eq!(outcomes, [ImportOutcome::Unchanged; 3]);
        assert!(store.changes_since(&env, cursor).await.unwrap().is_empty());
        assert_eq!(audit_count(store, &env).await, audit_before + 5);

        let missing = store.import(&actor(), "conf-missing-env", good()).await;
        let (item, error) = refused(missing);
        assert_eq!(item, None);
        assert!(error.starts_with("NotFound: environment"), "{error}");
    })
}

/// An import with progress reports each item as it is applied, in order and to the last, and
/// stores what a plain import would; a refused one reports no further than the items before
/// the refusal and stores nothing.
pub fn import_reports_progress(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let items: Vec<ImportItem> = (0..5)
            .map(|n| import_item(ItemKind::Flag, &format!("f{n}"), bool_flag()))
            .collect();
        let seen = std::sync::Mutex::new(Vec::new());
        let record = |done: usize| seen.lock().unwrap().push(done);
        let outcomes = store
            .import_with_progress(&actor(), &env, items, &record)
            .await
            .unwrap();
        assert_eq!(outcomes, [ImportOutcome::Created; 5]);
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(store.snapshot(&env).await.unwrap().flags.len(), 5);

        seen.lock().unwrap().clear();
        let items = vec![
            import_item(ItemKind::Flag, "g0", bool_flag()),
            import_item(ItemKind::Flag, "g1", with_prereq("missing", 0)),
            import_item(ItemKind::Flag, "g2", bool_flag()),
        ];
        let result = store
            .import_with_progress(&actor(), &env, items, &record)
            .await;
        let (item, _) = refused(result);
        assert_eq!(item, Some((ItemKind::Flag, "g1".to_owned())));
        assert!(
            seen.lock().unwrap().iter().all(|&done| done <= 1),
            "{seen:?}"
        );
        assert!(store.get_flag(&env, "g0").await.is_err());
    })
}

/// The path of an [`StoreError::Invalid`], for one-line assertions.
#[track_caller]
fn invalid_at<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Invalid { path, .. }) => path,
        other => panic!("expected Invalid, got {}", describe(other)),
    }
}

/// Keys no item can have: one with NUL, which PostgreSQL cannot even be asked about, one
/// outside the key alphabet, and an empty one.
const NO_ITEM_KEYS: [&str; 3] = ["a\0b", "a/b", ""];

/// Every operation refuses a key that no environment, flag or segment can have as `Invalid`,
/// naming the argument, before it reads or writes anything. `.` and `..` are refused as new
/// keys (URL paths resolve them away) but looked up like any other, so items an earlier flagd
/// stored under them stay reachable.
pub fn keys_no_item_can_have_are_invalid(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let (a, env) = (&actor(), env.as_str());
        store
            .put_flag(a, env, "f", bool_flag(), None)
            .await
            .unwrap();
        store
            .put_segment(a, env, "s", json!({}), None)
            .await
            .unwrap();
        let audit_before = audit_count(store, env).await;
        let all = ListFilter::default();
        let targets = SegmentTargetsUpdate {
            add_included: vec!["u".to_owned()],
            ..SegmentTargetsUpdate::default()
        };
        let pin = |flag: &str| OverrideKey {
            flag_key: flag.to_owned(),
            context_kind: "user".to_owned(),
            context_key: "bob".to_owned(),
        };
        let new_key = |env: &str| NewApiKey {
            name: "k".to_owned(),
            kind: ApiKeyKind::Sdk,
            env: Some(env.to_owned()),
        };

        for bad in NO_ITEM_KEYS {
            let created = store.create_environment(a, bad, "x").await;
            assert_eq!(invalid_at(created), "key", "{bad:?}");
            // An environment argument.
            assert_eq!(invalid_at(store.get_environment(bad).await), "env");
            assert_eq!(invalid_at(store.snapshot(bad).await), "env");
            assert_eq!(invalid_at(store.changes_since(bad, 0).await), "env");
            assert_eq!(invalid_at(store.killed_flags(bad).await), "env");
            assert_eq!(invalid_at(store.list_flags(bad, &all).await), "env");
            assert_eq!(invalid_at(store.list_segments(bad, &all).await), "env");
            assert_eq!(invalid_at(store.get_flag(bad, "f").await), "env");
            let put = store.put_flag(a, bad, "f", bool_flag(), None).await;
            assert_eq!(invalid_at(put), "env");
            assert_eq!(
                invalid_at(store.create_api_key(a, &new_key(bad)).await),
                "env"
            );
            let audit = store.audit_log(&AuditQuery::env(bad, 10)).await;
            assert_eq!(invalid_at(audit), "env");
            assert_eq!(invalid_at(store.flag_last_changes(bad).await), "env");
            let renamed = EnvironmentUpdate {
                name: Some("x".to_owned()),
                color: None,
            };
            let updated = store.update_environment(a, bad, &renamed).await;
            assert_eq!(invalid_at(updated), "env");
            let import = store.import(a, bad, Vec::new()).await;
            let (item, error) = refused(import);
            assert_eq!(item, None);
            assert!(error.starts_with("Invalid: env: "), "{error}");

            // A flag or segment argument.
            assert_eq!(invalid_at(store.get_flag(env, bad).await), "key");
            assert_eq!(invalid_at(store.get_segment(env, bad).await), "key");
            let put = store.put_flag(a, env, bad, bool_flag(), None).await;
            assert_eq!(invalid_at(put), "key");
            let put = store.put_segment(a, env, bad, json!({}), None).await;
            assert_eq!(invalid_at(put), "key");
            let archive = store.set_flag_archived(a, env, bad, true, None).await;
            assert_eq!(invalid_at(archive), "key");
            let archive = store.set_segment_archived(a, env, bad, true, None).await;
            assert_eq!(invalid_at(archive), "key");
            assert_eq!(
                invalid_at(store.delete_flag(a, env, bad, None).await),
                "key"
            );
            assert_eq!(
                invalid_at(store.delete_segment(a, env, bad, None).await),
                "key"
            );
            let update = store
                .update_segment_targets(a, env, bad, &targets, None)
                .await;
            assert_eq!(invalid_at(update), "key");
            assert_eq!(invalid_at(store.set_killed(a, env, bad, true).await), "key");
            assert_eq!(invalid_at(store.list_overrides(env, bad).await), "key");
            let set = store.set_override(a, env, &pin(bad), 0).await;
            assert_eq!(invalid_at(set), "flagKey");
            assert_eq!(
                invalid_at(store.get_override(env, &pin(bad)).await),
                "flagKey"
            );
            let removed = store.remove_override(a, env, &pin(bad)).await;
            assert_eq!(invalid_at(removed), "flagKey");
            let audit = store.audit_log(&AuditQuery::flag(env, bad, 10)).await;
            assert_eq!(invalid_at(audit), "item");
            let import = store
                .import(a, env, vec![import_item(ItemKind::Flag, bad, bool_flag())])
                .await;
            let (item, error) = refused(import);
            assert_eq!(item, Some((ItemKind::Flag, bad.to_owned())));
            assert!(error.starts_with("Invalid: key: flag key "), "{error}");
        }
        for dots in [".", ".."] {
            let created = store.create_environment(a, dots, "x").await;
            assert_eq!(invalid_at(created), "key");
            let put = store.put_flag(a, env, dots, bool_flag(), None).await;
            assert_eq!(
                describe(put),
                format!(
                    "Invalid: key: flag key {dots:?} cannot be used: URL paths treat \".\" and \
                     \"..\" as steps, not names"
                )
            );
            let put = store.put_segment(a, env, dots, json!({}), None).await;
            assert_eq!(invalid_at(put), "key");
            let import = store
                .import(
                    a,
                    env,
                    vec![import_item(ItemKind::Segment, dots, json!({}))],
                )
                .await;
            let (item, error) = refused(import);
            assert_eq!(item, Some((ItemKind::Segment, dots.to_owned())));
            assert!(error.starts_with("Invalid: key: segment key "), "{error}");
            let missing = [
                describe(store.get_environment(dots).await),
                describe(store.snapshot(dots).await),
                describe(store.get_flag(env, dots).await),
                describe(store.delete_segment(a, env, dots, None).await),
                describe(store.set_killed(a, env, dots, true).await),
            ];
            for answer in missing {
                assert!(answer.starts_with("NotFound: "), "{dots:?}: {answer}");
            }
        }
        // Keys that merely contain dots are keys like any other.
        for fine in ["a.b", "..a", "a..", "..."] {
            store
                .put_flag(a, env, fine, bool_flag(), None)
                .await
                .unwrap();
        }
        assert_eq!(audit_count(store, env).await, audit_before + 4);
        let keys: Vec<String> = store
            .list_environments()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        for bad in NO_ITEM_KEYS.iter().chain(&[".", ".."]) {
            assert!(!keys.iter().any(|k| k == bad), "{bad:?}");
        }
    })
}

/// Text holding NUL, which PostgreSQL keeps in neither `text` nor `jsonb`, is refused as
/// `Invalid` at its path wherever a store would keep or look it up: in documents (their
/// unknown fields and field names too), names, context keys, segment target edits and key
/// prefixes. Any other text is kept as it is.
pub fn text_with_nul_is_invalid_where_it_would_be_kept(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        let env = fresh_env(store).await;
        let (a, env) = (&actor(), env.as_str());
        store
            .put_flag(a, env, "f", bool_flag(), None)
            .await
            .unwrap();
        store
            .put_segment(a, env, "s", json!({}), None)
            .await
            .unwrap();
        let audit_before = audit_count(store, env).await;
        let nul = "a\0b";
        let with = |field: &str, value: Value| {
            let mut doc = bool_flag();
            doc[field] = value;
            doc
        };
        let clause = |values: Value| json!([{"variation": 0, "clauses": [{"attribute": "a", "op": "in", "values": values}]}]);
        let held = "holds a NUL character (\\u0000), which cannot be stored";
        let named = format!("the field name {held}");
        let flags = [
            (with("variations", json!(["x", nul])), "variations[1]", held),
            (with("description", json!(nul)), "description", held),
            (
                with("rules", clause(json!(["x", {"deep": [nul]}]))),
                "rules[0].clauses[0].values[1].deep[0]",
                held,
            ),
            (
                with("rules", json!([{"id": nul, "variation": 0}])),
                "rules[0].id",
                held,
            ),
            (
                with("prerequisites", json!([{"key": nul, "variation": 0}])),
                "prerequisites[0].key",
                held,
            ),
            (
                with("_meta", json!({"a\u{0}b": 1})),
                "_meta.a\\u0000b",
                named.as_str(),
            ),
            (with("a\u{0}b", json!(1)), "a\\u0000b", named.as_str()),
        ];
        for (doc, path, message) in flags {
            let put = store.put_flag(a, env, "f", doc.clone(), Some(1)).await;
            assert_eq!(
                describe(put),
                format!("Invalid: {path}: {message}"),
                "{doc}"
            );
            let import = store
                .import(a, env, vec![import_item(ItemKind::Flag, "g", doc)])
                .await;
            let (item, error) = refused(import);
            assert_eq!(item, Some((ItemKind::Flag, "g".to_owned())));
            assert_eq!(error, format!("Invalid: {path}: {message}"));
        }
        let put = store
            .put_segment(a, env, "s", json!({"included": [nul]}), Some(1))
            .await;
        assert_eq!(invalid_at(put), "included[0]");
        let targets = SegmentTargetsUpdate {
            add_excluded: vec!["u".to_owned(), nul.to_owned()],
            ..SegmentTargetsUpdate::default()
        };
        let update = store
            .update_segment_targets(a, env, "s", &targets, None)
            .await;
        assert_eq!(invalid_at(update), "addExcluded[1]");

        // Overrides: the context key may hold anything but NUL; the kind is a kind.
        let pin = |kind: &str, key: &str| OverrideKey {
            flag_key: "f".to_owned(),
            context_kind: kind.to_owned(),
            context_key: key.to_owned(),
        };
        for (key, path) in [
            (pin("user", nul), "contextKey"),
            (pin(nul, "bob"), "contextKind"),
        ] {
            assert_eq!(invalid_at(store.set_override(a, env, &key, 0).await), path);
            assert_eq!(invalid_at(store.get_override(env, &key).await), path);
            assert_eq!(invalid_at(store.remove_override(a, env, &key).await), path);
        }
        let long_kind = pin(&"k".repeat(257), "bob");
        assert_eq!(
            describe(store.set_override(a, env, &long_kind, 0).await),
            "Invalid: contextKind: is longer than 256 characters"
        );
        let odd = pin(&"k".repeat(256), "ü ✓ /?#%00\u{1}");
        assert_eq!(store.set_override(a, env, &odd, 1).await.unwrap(), None);
        assert_eq!(store.get_override(env, &odd).await.unwrap(), Some(1));

        // Names and prefixes.
        let created = store.create_environment(a, "conf-nul-name", nul).await;
        assert_eq!(invalid_at(created), "name");
        let renamed = EnvironmentUpdate {
            name: Some(nul.to_owned()),
            color: None,
        };
        assert_eq!(
            invalid_at(store.update_environment(a, env, &renamed).await),
            "name"
        );
        let colored = EnvironmentUpdate {
            name: None,
            color: Some(Some(format!("#d73a4{nul}"))),
        };
        assert_eq!(
            invalid_at(store.update_environment(a, env, &colored).await),
            "color"
        );
        let named = |name: &str| NewApiKey {
            name: name.to_owned(),
            kind: ApiKeyKind::Admin,
            env: None,
        };
        assert_eq!(
            invalid_at(store.create_api_key(a, &named(nul)).await),
            "name"
        );
        let prefix = ListFilter {
            archived: None,
            key_prefix: Some(nul.to_owned()),
        };
        assert_eq!(
            invalid_at(store.list_flags(env, &prefix).await),
            "keyPrefix"
        );
        assert_eq!(
            invalid_at(store.list_segments(env, &prefix).await),
            "keyPrefix"
        );

        // Only the override was written.
        assert_eq!(audit_count(store, env).await, audit_before + 1);
        assert_eq!(store.get_flag(env, "f").await.unwrap().version, 1);
        assert!(matches!(
            store.get_environment("conf-nul-name").await,
            Err(StoreError::NotFound { .. })
        ));
    })
}

/// Writers racing on one flag: each write applies on the version it read or conflicts, and
/// the audit log holds exactly the applied ones.
pub fn racing_writers_apply_or_conflict(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        const WRITERS: usize = 20;
        let env = fresh_env(store).await;
        store
            .put_flag(&actor(), &env, "hot", bool_flag(), None)
            .await
            .unwrap();
        let env_ref = env.as_str();
        let writers: Vec<CaseOutcome<'_>> = (0..WRITERS)
            .map(|i| -> CaseOutcome<'_> {
                Box::pin(async move {
                    let read = store.get_flag(env_ref, "hot").await.unwrap().version;
                    let mut doc = bool_flag();
                    doc["salt"] = json!(format!("writer-{i}"));
                    let who = Actor {
                        key_id: Some(i as u64),
                        name: format!("writer-{i}"),
                    };
                    match store.put_flag(&who, env_ref, "hot", doc, Some(read)).await {
                        Ok(stored) => {
                            assert_eq!(stored.version, read + 1, "applied on the version read");
                            Some((i, stored.version))
                        }
                        Err(StoreError::Conflict { current_version }) => {
                            assert!(current_version.is_some_and(|v| v > read));
                            None
                        }
                        Err(e) => panic!("writer {i}: {e}"),
                    }
                })
            })
            .collect();
        let outcomes = JoinAll::new(writers).await;
        let mut applied: Vec<(usize, u64)> = outcomes.into_iter().flatten().collect();
        assert!(!applied.is_empty(), "at least one writer wins");
        applied.sort_by_key(|(_, version)| *version);
        let versions: Vec<u64> = applied.iter().map(|(_, v)| *v).collect();
        let expected: Vec<u64> = (2..2 + applied.len() as u64).collect();
        assert_eq!(versions, expected, "one applied write per version");

        let flag = store.get_flag(&env, "hot").await.unwrap();
        assert_eq!(flag.version, 1 + applied.len() as u64);
        let log = store
            .audit_log(&AuditQuery::flag(&env, "hot", 1000))
            .await
            .unwrap();
        let replaces: Vec<String> = log
            .iter()
            .rev()
            .filter(|e| e.action == AuditAction::Replace)
            .map(|e| e.actor.name.clone())
            .collect();
        let winners: Vec<String> = applied.iter().map(|(i, _)| format!("writer-{i}")).collect();
        assert_eq!(
            replaces, winners,
            "the audit log has exactly the applied writes"
        );
        let last = winners.last().unwrap();
        assert_eq!(flag.doc["salt"], json!(last));
    })
}

type CaseOutcome<'a> = Pin<Box<dyn Future<Output = Option<(usize, u64)>> + Send + 'a>>;

/// Polls several futures on the current task until all finish, so the suite can race writers
/// without depending on a runtime to spawn them.
struct JoinAll<'a> {
    futures: Vec<Option<CaseOutcome<'a>>>,
    outputs: Vec<Option<Option<(usize, u64)>>>,
}

impl<'a> JoinAll<'a> {
    fn new(futures: Vec<CaseOutcome<'a>>) -> JoinAll<'a> {
        let outputs = futures.iter().map(|_| None).collect();
        JoinAll {
            futures: futures.into_iter().map(Some).collect(),
            outputs,
        }
    }
}

impl Future for JoinAll<'_> {
    type Output = Vec<Option<(usize, u64)>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut pending = false;
        for (slot, output) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(this.outputs.iter_mut().filter_map(Option::take).collect())
        }
    }
}

/// Big-segment memberships ([`AdminStore::big_segment_members`], when the store keeps them):
/// uploads become visible at their commit, the last change of a context in an upload wins, a
/// dropped upload stores nothing, a fresh upload replaces its generation, environments are
/// apart, a copy receives exactly what was stored, and a generation copies whole.
pub fn big_segment_members(store: &dyn AdminStore) -> CaseFuture<'_> {
    Box::pin(async move {
        use crate::{BigSegmentMembers, MemberChange, MemberOp, MemoryBigSegments};
        let Some(members) = store.big_segment_members() else {
            return;
        };
        let env = fresh_env(store).await;
        let other = fresh_env(store).await;
        let change = |op, key: &str| MemberChange::for_key(op, key);
        let hash = |key: &str| flags_eval::big_segment_hash(key);
        let look = |members: std::sync::Arc<dyn BigSegmentMembers>, env: String| async move {
            let keys = ["a", "b", "c", "d", "x", "y", "zz"];
            let hashes: Vec<String> = keys.iter().map(|k| hash(k)).collect();
            let found = members.memberships(&env, &hashes).await.unwrap();
            let mut seen: Vec<String> = Vec::new();
            for key in keys {
                if let Some((_, m)) = found.iter().find(|(h, _)| *h == hash(key)) {
                    let mut refs: Vec<String> = m
                        .included
                        .iter()
                        .map(|r| format!("+{r}"))
                        .chain(m.excluded.iter().map(|r| format!("-{r}")))
                        .collect();
                    refs.sort();
                    seen.push(format!("{key}:{}", refs.join(",")));
                }
            }
            seen
        };

        let mirror = std::sync::Arc::new(MemoryBigSegments::new());
        let mut upload = members.begin_upload(&env, "seg", 1, false).await.unwrap();
        upload
            .apply(&[
                change(MemberOp::Include, "a"),
                change(MemberOp::Include, "b"),
                change(MemberOp::Include, "c"),
                change(MemberOp::Exclude, "d"),
            ])
            .await
            .unwrap();
        upload
            .apply(&[
                change(MemberOp::Remove, "c"),
                change(MemberOp::Include, "d"),
            ])
            .await
            .unwrap();
        // Nothing shows before the commit.
        assert!(look(members.clone(), env.clone()).await.is_empty());
        let copy = mirror.begin_upload(&env, "seg", 1, false).await.unwrap();
        upload.commit(Some(copy)).await.unwrap();
        let expected = ["a:+seg.g1", "b:+seg.g1", "d:+seg.g1"];
        assert_eq!(look(members.clone(), env.clone()).await, expected);
        assert_eq!(look(mirror.clone(), env.clone()).await, expected);
        assert!(look(members.clone(), other.clone()).await.is_empty());

        // A second upload changes only what it names; the same upload again changes nothing.
        for _ in 0..2 {
            let mut upload = members.begin_upload(&env, "seg", 1, false).await.unwrap();
            upload
                .apply(&[
                    change(MemberOp::Exclude, "a"),
                    change(MemberOp::Remove, "b"),
                ])
                .await
                .unwrap();
            upload.commit(None).await.unwrap();
            assert_eq!(
                look(members.clone(), env.clone()).await,
                ["a:-seg.g1", "d:+seg.g1"]
            );
        }

        // A generation copied whole into another store lists exactly what this one does.
        let rebuilt = std::sync::Arc::new(MemoryBigSegments::new());
        let mut into = rebuilt.begin_upload(&env, "seg", 1, true).await.unwrap();
        let copied = members
            .copy_generation(&env, "seg", 1, into.as_mut())
            .await
            .unwrap();
        into.commit(None).await.unwrap();
        assert_eq!(copied, 2);
        assert_eq!(
            look(rebuilt.clone(), env.clone()).await,
            ["a:-seg.g1", "d:+seg.g1"]
        );
        let mut nothing = rebuilt.begin_upload(&env, "seg", 9, true).await.unwrap();
        assert_eq!(
            members
                .copy_generation(&env, "seg", 9, nothing.as_mut())
                .await
                .unwrap(),
            0
        );

        // An upload dropped before its commit stores nothing.
        let mut dropped = members.begin_upload(&env, "seg", 1, false).await.unwrap();
        dropped
            .apply(&[change(MemberOp::Include, "zz")])
            .await
            .unwrap();
        drop(dropped);
        assert_eq!(
            look(members.clone(), env.clone()).await,
            ["a:-seg.g1", "d:+seg.g1"]
        );

        // A fresh upload replaces its generation whole and leaves the others.
        for key in ["x", "y"] {
            let mut upload = members.begin_upload(&env, "seg", 2, true).await.unwrap();
            upload
                .apply(&[change(MemberOp::Include, key)])
                .await
                .unwrap();
            upload.commit(None).await.unwrap();
        }
        assert_eq!(
            look(members.clone(), env.clone()).await,
            ["a:-seg.g1", "d:+seg.g1", "y:+seg.g2"]
        );
        members.clear_generation(&env, "seg", 1).await.unwrap();
        assert_eq!(look(members.clone(), env.clone()).await, ["y:+seg.g2"]);

        assert_eq!(members.synchronized_on(&env).await.unwrap(), None);
        members
            .set_synchronized_on(&env, 1_700_000_000_123)
            .await
            .unwrap();
        assert_eq!(
            members.synchronized_on(&env).await.unwrap(),
            Some(1_700_000_000_123)
        );
        assert_eq!(members.synchronized_on(&other).await.unwrap(), None);
    })
}
