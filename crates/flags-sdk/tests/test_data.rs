//! `TestData`: changes the application makes reach every client built on it, through the same
//! path as a stream's events (listeners included).

#![allow(clippy::unwrap_used)]

use flags_core::{Flag, FlagData, Segment};
use flags_sdk::{Client, Context, DataSource, TestData};
use serde_json::json;

fn flag(key: &str, version: u64, extra: serde_json::Value) -> Flag {
    let mut doc = json!({"key": key, "version": version, "on": true,
                         "variations": [false, true], "fallthrough": {"variation": 0}});
    doc.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    Flag::from_json_value(doc).unwrap()
}

fn segment(version: u64, included: &[&str]) -> Segment {
    Segment::from_json_value(json!({"key": "s", "version": version, "included": included})).unwrap()
}

#[test]
fn changes_reach_every_client_and_its_listeners() {
    let mut data = FlagData::default();
    let uses_segment = json!({"rules": [{"id": "r", "variation": 1, "clauses": [
        {"attribute": "", "op": "segmentMatch", "values": ["s"]}]}]});
    data.flags.insert("a".into(), flag("a", 1, uses_segment));
    data.flags.insert("b".into(), flag("b", 1, json!({})));
    data.segments.insert("s".into(), segment(1, &[]));
    let source = TestData::new(data);
    let build = || {
        Client::builder("k")
            .data_source(DataSource::TestData(source.clone()))
            .build()
            .unwrap()
    };
    let (first, second) = (build(), build());
    let mut changes = first.flag_tracker().add_flag_change_listener();
    let alice = Context::user("alice").unwrap();
    assert!(!first.bool_variation(&alice, "a", true));

    source.update_segment(segment(2, &["alice"])).unwrap();
    assert!(first.bool_variation(&alice, "a", false));
    assert!(second.bool_variation(&alice, "a", false));
    assert_eq!(changes.try_recv().unwrap().unwrap().key, "a");
    assert_eq!(changes.try_recv(), Ok(None), "b does not use the segment");

    // Not newer than what the clients hold: ignored, as a stream's stale patch is.
    source.update_segment(segment(2, &[])).unwrap();
    assert!(first.bool_variation(&alice, "a", false));
    assert_eq!(changes.try_recv(), Ok(None));

    source.delete_flag("b", 5).unwrap();
    assert!(first.bool_variation_detail(&alice, "b", false).is_error());
    assert_eq!(changes.try_recv().unwrap().unwrap().key, "b");

    // A client built now starts from the source's current data; a dropped one is forgotten.
    drop(second);
    let late = build();
    assert!(late.bool_variation(&alice, "a", false));
    assert!(late.bool_variation_detail(&alice, "b", false).is_error());
}
