//! Version numbers for file data.
//!
//! LaunchDarkly SDKs ignore a `patch` or `delete` whose version is not newer than what they hold,
//! and flag files rarely carry versions (or people forget to bump them). So every item's served
//! version is kept across reloads and bumped whenever its content changes, never going below
//! the version written in the file. Deleted items keep a tombstone so that a flag deleted and
//! later re-added comes back with a version above its deletion.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use sha2::{Digest, Sha256};

use flags_core::ItemKind;
use flags_data::ItemChange as Change;
use flags_wire::file::{RawData, RawItem};

#[derive(Debug, Clone, PartialEq)]
struct ItemState {
    /// A hash of the item without its `version`, to detect real changes: equal JSON values
    /// (whatever their layout or key order in the file) hash alike.
    content: [u8; 16],
    /// The version written in the file, if any.
    file_version: Option<u64>,
    /// The version we serve (or, when deleted, the tombstone's version).
    served: u64,
    deleted: bool,
}

/// Served versions of every item seen so far, including tombstones.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    flags: HashMap<String, ItemState>,
    segments: HashMap<String, ItemState>,
}

impl Versions {
    /// No history: every item starts at its file version (or 1).
    pub fn new() -> Versions {
        Versions::default()
    }

    /// Gives every item of `data` its served version (see [`Versions::served`]) and lists what
    /// changed since the data this state was last updated with. The state is returned rather
    /// than updated so a reload that fails later leaves it untouched.
    pub fn assign(&self, data: &RawData) -> (Versions, Vec<Change>) {
        let mut next = self.clone();
        let mut changes = Vec::new();
        assign_section(&mut next, ItemKind::Flag, &data.flags, &mut changes);
        assign_section(&mut next, ItemKind::Segment, &data.segments, &mut changes);
        (next, changes)
    }

    /// The version served for a live item.
    pub fn served(&self, kind: ItemKind, key: &str) -> Option<u64> {
        let items = match kind {
            ItemKind::Flag => &self.flags,
            ItemKind::Segment => &self.segments,
        };
        items
            .get(key)
            .filter(|item| !item.deleted)
            .map(|item| item.served)
    }

    fn section(&mut self, kind: ItemKind) -> &mut HashMap<String, ItemState> {
        match kind {
            ItemKind::Flag => &mut self.flags,
            ItemKind::Segment => &mut self.segments,
        }
    }
}

fn assign_section(
    state: &mut Versions,
    kind: ItemKind,
    items: &BTreeMap<String, RawItem>,
    changes: &mut Vec<Change>,
) {
    let seen = state.section(kind);
    for (key, item) in items {
        let (content, file_version) = split_version(item);
        let served = match seen.get(key) {
            Some(prev)
                if !prev.deleted
                    && prev.content == content
                    && prev.file_version == file_version =>
            {
                prev.served
            }
            Some(prev) => {
                let served = file_version.unwrap_or(0).max(prev.served + 1);
                changes.push(Change {
                    kind,
                    key: key.clone(),
                    version: served,
                    deleted: false,
                });
                served
            }
            None => {
                let served = file_version.unwrap_or(1).max(1);
                changes.push(Change {
                    kind,
                    key: key.clone(),
                    version: served,
                    deleted: false,
                });
                served
            }
        };
        let now = ItemState {
            content,
            file_version,
            served,
            deleted: false,
        };
        match seen.get_mut(key) {
            Some(slot) => *slot = now,
            None => {
                seen.insert(key.clone(), now);
            }
        }
    }
    for (key, prev) in seen.iter_mut() {
        if prev.deleted || items.contains_key(key) {
            continue;
        }
        prev.deleted = true;
        prev.served += 1;
        changes.push(Change {
            kind,
            key: key.clone(),
            version: prev.served,
            deleted: true,
        });
    }
    // HashMap order is arbitrary; events go out in key order so streams are reproducible.
    changes.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
}

/// A hash of the item without `version`, and the version the file gave (a non-integer
/// `version` is left in the content so the model reports it).
fn split_version(item: &RawItem) -> ([u8; 16], Option<u64>) {
    let mut content: Value = serde_json::from_str(item.get()).unwrap_or(Value::Null);
    let mut file_version = None;
    if let Value::Object(object) = &mut content {
        if let Some(v) = object.get("version").and_then(Value::as_u64) {
            file_version = Some(v);
            object.remove("version");
        } else if object.get("version").is_some_and(Value::is_null) {
            object.remove("version");
        }
    }
    // Object keys serialize sorted, so equal values give equal bytes.
    let bytes = serde_json::to_vec(&content).unwrap_or_default();
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&Sha256::digest(&bytes)[..16]);
    (hash, file_version)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use flags_wire::file::raw_item;

    fn data(flags: &[(&str, Value)]) -> RawData {
        RawData {
            flags: flags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), raw_item(v)))
                .collect(),
            ..RawData::default()
        }
    }

    fn served(versions: &Versions, key: &str) -> Option<u64> {
        versions.served(ItemKind::Flag, key)
    }

    fn change(key: &str, version: u64, deleted: bool) -> Change {
        Change {
            kind: ItemKind::Flag,
            key: key.to_owned(),
            version,
            deleted,
        }
    }

    #[test]
    fn versions_start_at_one_or_the_file_version() {
        let d = data(&[("a", json!({"on":true})), ("b", json!({"version": 7}))]);
        let (v, changes) = Versions::new().assign(&d);
        assert_eq!(changes, vec![change("a", 1, false), change("b", 7, false)]);
        assert_eq!((served(&v, "a"), served(&v, "b")), (Some(1), Some(7)));
    }

    #[test]
    fn unchanged_items_keep_their_version_and_changed_ones_bump() {
        let (v1, _) = Versions::new().assign(&data(&[
            ("a", json!({"on":true, "variations": [1, 2]})),
            ("b", json!({})),
        ]));
        // The same values in another order and layout are no change.
        let text = r#"{ "variations" : [1,2],"on":true }"#;
        let mut same = data(&[("b", json!({}))]);
        same.flags
            .insert("a".to_owned(), serde_json::from_str(text).unwrap());
        assert_eq!(v1.assign(&same).1, vec![]);
        let d = data(&[("a", json!({"on":false})), ("b", json!({}))]);
        let (v2, changes) = v1.assign(&d);
        assert_eq!(changes, vec![change("a", 2, false)]);
        assert_eq!(served(&v2, "b"), Some(1));
        // A file version below the served one does not take the version backwards.
        let d = data(&[
            ("a", json!({"on":true, "version": 1})),
            ("b", json!({"version": 10})),
        ]);
        let (_, changes) = v2.assign(&d);
        assert_eq!(changes, vec![change("a", 3, false), change("b", 10, false)]);
    }

    #[test]
    fn deletions_leave_tombstones_and_readding_goes_above_them() {
        let (v1, _) = Versions::new().assign(&data(&[("a", json!({})), ("b", json!({}))]));
        let (v2, changes) = v1.assign(&data(&[("b", json!({}))]));
        assert_eq!(changes, vec![change("a", 2, true)]);
        assert_eq!(served(&v2, "a"), None, "a tombstone is not served");
        let (v3, changes) = v2.assign(&data(&[("b", json!({}))]));
        assert!(
            changes.is_empty(),
            "a tombstone is reported once: {changes:?}"
        );
        let d = data(&[("a", json!({})), ("b", json!({}))]);
        let (v4, changes) = v3.assign(&d);
        assert_eq!(changes, vec![change("a", 3, false)]);
        assert_eq!(served(&v4, "a"), Some(3));
    }

    #[test]
    fn flags_and_segments_are_separate() {
        let d = RawData {
            flags: [("x".to_owned(), raw_item(&json!({})))].into(),
            segments: [("x".to_owned(), raw_item(&json!({})))].into(),
            ..RawData::default()
        };
        let (_, changes) = Versions::new().assign(&d);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].kind, ItemKind::Flag);
        assert_eq!(changes[1].kind, ItemKind::Segment);
    }
}
