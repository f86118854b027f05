//! Applying changes against building the result whole.

use std::collections::BTreeMap;

use flags_core::{Flag, FlagData, ItemKind};
use serde_json::json;

use crate::{Applied, ItemChange, Snapshot, Update};

fn flag(key: &str, version: u64, variation: usize) -> Flag {
    Flag::from_json_value(json!({
        "key": key, "version": version, "on": true, "variations": [true, false],
        "fallthrough": {"variation": variation}
    }))
    .unwrap()
}

fn models(flags: &[Flag]) -> FlagData {
    FlagData {
        flags: flags.iter().map(|f| (f.key.clone(), f.clone())).collect(),
        segments: BTreeMap::new(),
    }
}

#[test]
fn applying_changes_equals_building_the_result_whole() {
    let base: Vec<Flag> = (0..10).map(|i| flag(&format!("f{i}"), 1, 0)).collect();
    let start = Snapshot::from_models(models(&base), 1).unwrap();
    // A small batch and a big one must both agree with a snapshot built from the end result.
    for count in [3, 69] {
        let mut updates = vec![Update::DeleteFlag {
            key: "f0".into(),
            version: 2,
        }];
        let mut expected: Vec<Flag> = base[1..].to_vec();
        for i in 0..count {
            let key = format!("n{i:03}");
            updates.push(Update::Flag(flag(&key, 1, 1)));
            expected.push(flag(&key, 1, 1));
        }
        updates.push(Update::Flag(flag("f1", 2, 1)));
        expected[0] = flag("f1", 2, 1);
        // Stale: not newer than what is held.
        updates.push(Update::Flag(flag("f2", 1, 1)));
        let Applied {
            snapshot: applied,
            changed,
        } = start.apply(2, updates).unwrap().unwrap();
        let whole = Snapshot::from_models(models(&expected), 2).unwrap();
        assert_eq!(applied.digest(), whole.digest(), "{count} changes");
        assert_eq!(applied.latest_all(), whole.latest_all(), "{count} changes");
        assert_eq!(applied.flag_count(), whole.flag_count());
        assert_eq!(changed.len(), count + 2, "the stale update did not apply");
        assert_eq!(
            changed[0],
            ItemChange {
                kind: ItemKind::Flag,
                key: "f0".into(),
                version: 2,
                deleted: true
            }
        );
        assert_eq!(
            changed[count + 1],
            ItemChange {
                kind: ItemKind::Flag,
                key: "f1".into(),
                version: 2,
                deleted: false
            }
        );
        let patch = applied.event_for(&changed[count + 1]).unwrap();
        assert!(
            patch
                .data
                .starts_with(r#"{"path":"/flags/f1","data":{"key":"f1","version":2"#),
            "{}",
            patch.data
        );
        assert_ne!(applied.digest(), start.digest());
        // The deletion's tombstone refuses an older version of the flag.
        assert!(
            applied
                .apply(3, vec![Update::Flag(flag("f0", 1, 0))])
                .unwrap()
                .is_none()
        );
    }
    let put = start.put_event();
    assert!(
        put.starts_with(r#"{"path":"/","data":{"flags":{"f0":"#),
        "{put}"
    );
}
