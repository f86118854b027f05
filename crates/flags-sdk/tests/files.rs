//! The client over flag files, with no network: initialisation, a reload reaching change and
//! value listeners, changes reaching exactly the flags that depend on them, a broken file
//! keeping the last data, and `close` ending every listener.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use flags_sdk::{Client, Context, DataSource, DataSourceState, RecvError};
use serde_json::{Value, json};

fn write(path: &Path, doc: &Value) {
    // Written aside and renamed, so the client never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `a` uses segment `s`; `b` has `a` as a prerequisite; `c` has `b`; `d` stands alone.
fn doc(segment_user: &str, d_value: bool) -> Value {
    let flag = |key: &str, extra: Value| {
        let mut f = json!({"key": key, "version": 1, "on": true, "variations": [false, true],
                           "offVariation": 0, "fallthrough": {"variation": 0}});
        f.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        f
    };
    json!({
        "flags": {
            "a": flag("a", json!({"rules": [{"id": "r", "variation": 1, "clauses": [
                {"attribute": "", "op": "segmentMatch", "values": ["s"]}]}]})),
            "b": flag("b", json!({"prerequisites": [{"key": "a", "variation": 1}],
                                   "fallthrough": {"variation": 1}})),
            "c": flag("c", json!({"prerequisites": [{"key": "b", "variation": 1}],
                                   "fallthrough": {"variation": 1}})),
            "d": flag("d", json!({"fallthrough": {"variation": usize::from(d_value)}})),
        },
        "segments": {"s": {"key": "s", "version": 1, "included": [segment_user]}}
    })
}

async fn files_client(path: &Path) -> Client {
    let client = Client::builder("k")
        .data_source(DataSource::Files {
            paths: vec![path.to_path_buf()],
            reload_interval: Duration::from_millis(20),
        })
        .build()
        .unwrap();
    assert!(client.wait_for_initialization(Duration::from_secs(5)).await);
    client
}

/// Every flag change event that arrives within `quiet` of the last one.
async fn changes(
    listener: &mut flags_sdk::Listener<flags_sdk::FlagChangeEvent>,
) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let first = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("no change event")
        .unwrap();
    keys.insert(first.key);
    while let Ok(Ok(event)) =
        tokio::time::timeout(Duration::from_millis(200), listener.recv()).await
    {
        keys.insert(event.key);
    }
    keys
}

#[tokio::test]
async fn changes_reach_exactly_the_flags_that_depend_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    write(&path, &doc("alice", false));
    let client = files_client(&path).await;
    let alice = Context::user("alice").unwrap();
    assert!(
        client.bool_variation(&alice, "c", false),
        "through a, b and c"
    );
    assert_eq!(
        client.data_source_status_provider().status().state,
        DataSourceState::Valid
    );
    let tracker = client.flag_tracker();
    let mut flags = tracker.add_flag_change_listener();
    let mut c_for_alice = tracker.add_flag_value_change_listener("c", alice.clone(), json!(null));

    // The segment changes: a uses it, b and c through prerequisites; d does not.
    write(&path, &doc("bob", false));
    assert_eq!(
        changes(&mut flags).await,
        BTreeSet::from(["a".into(), "b".into(), "c".into()])
    );
    let change = tokio::time::timeout(Duration::from_secs(5), c_for_alice.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (change.old_value, change.new_value),
        (json!(true), json!(false))
    );
    assert!(!client.bool_variation(&alice, "c", true));

    // d alone changes: nothing else is told, and c's value listener hears nothing.
    write(&path, &doc("bob", true));
    assert_eq!(changes(&mut flags).await, BTreeSet::from(["d".into()]));
    assert_eq!(c_for_alice.try_recv(), Ok(None));
}

#[tokio::test]
async fn a_broken_file_keeps_the_last_data_and_close_ends_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    write(&path, &doc("alice", true));
    let client = files_client(&path).await;
    let status = client.data_source_status_provider();
    let mut statuses = status.add_status_listener();
    let mut flags = client.flag_tracker().add_flag_change_listener();
    let alice = Context::user("alice").unwrap();

    std::fs::write(&path, "{ not json").unwrap();
    let interrupted = tokio::time::timeout(Duration::from_secs(5), statuses.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(interrupted.state, DataSourceState::Interrupted);
    assert!(interrupted.last_error.is_some());
    assert!(
        client.bool_variation(&alice, "d", false),
        "the last data serves"
    );

    client.close();
    assert_eq!(status.status().state, DataSourceState::Off);
    assert_eq!(flags.recv().await, Err(RecvError::Closed));
    assert!(
        client.bool_variation(&alice, "d", false),
        "and still serves after close"
    );
}

#[tokio::test]
async fn offline_counts_as_initialised_and_serves_defaults() {
    let offline = Client::builder("k")
        .data_source(DataSource::Offline)
        .build()
        .unwrap();
    assert!(offline.wait_for_initialization(Duration::ZERO).await);
    let user = Context::user("u").unwrap();
    assert_eq!(offline.str_variation(&user, "any", "dflt".into()), "dflt");
    assert_eq!(
        offline.data_source_status_provider().status().state,
        DataSourceState::Off
    );
}
