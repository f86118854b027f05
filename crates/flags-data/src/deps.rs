//! Which flags a change can affect.
//!
//! A flag's result depends on its own data, on its prerequisites (recursively) and on the
//! segments its rules match with `segmentMatch`, which may match further segments in turn. The
//! index keeps the reverse edges (item → the flags and segments that name it), so the flags a
//! changed item may affect are found by walking those edges, without scanning every flag.

use std::collections::{BTreeSet, HashMap, HashSet};

use flags_core::{Flag, ItemKind, Segment};

pub(crate) type Item = (ItemKind, String);

/// What a flag names directly: its prerequisites and the segments its rules match.
pub(crate) fn flag_refs(flag: &Flag) -> Vec<Item> {
    flag.prerequisite_keys()
        .map(|k| (ItemKind::Flag, k.to_owned()))
        .chain(
            flag.segment_refs()
                .map(|k| (ItemKind::Segment, k.to_owned())),
        )
        .collect()
}

/// What a segment names directly: the segments its rules match.
pub(crate) fn segment_refs(segment: &Segment) -> Vec<Item> {
    segment
        .segment_refs()
        .map(|k| (ItemKind::Segment, k.to_owned()))
        .collect()
}

/// The reverse references between the flags and segments of one snapshot.
///
/// Only items that reference something have an entry, so an environment of flags without
/// prerequisites or segment rules holds an empty index. It is updated item by item as a
/// snapshot's changes are applied.
///
/// ```
/// use flags_core::{Flag, ItemKind};
/// use flags_data::DependencyIndex;
///
/// let flag = |json| Flag::from_json_value(json).unwrap();
/// let mut index = DependencyIndex::default();
/// index.set_flag(&flag(serde_json::json!({"key": "checkout", "prerequisites": [{"key": "payments", "variation": 0}]})));
/// index.set_flag(&flag(serde_json::json!({"key": "payments", "rules": [{"clauses": [{"op": "segmentMatch", "values": ["beta"]}]}]})));
/// let affected = index.affected_flags([(ItemKind::Segment, "beta")]);
/// assert_eq!(affected.into_iter().collect::<Vec<_>>(), ["checkout", "payments"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DependencyIndex {
    /// Item → what it names directly (prerequisites, matched segments), to undo on change.
    refs: HashMap<Item, Vec<Item>>,
    /// Item → the flags and segments that name it directly.
    dependents: HashMap<Item, BTreeSet<Item>>,
}

impl DependencyIndex {
    /// The index of a whole set of flags and segments.
    pub fn build<'a>(
        flags: impl IntoIterator<Item = &'a Flag>,
        segments: impl IntoIterator<Item = &'a Segment>,
    ) -> DependencyIndex {
        let mut index = DependencyIndex::default();
        for flag in flags {
            index.set_flag(flag);
        }
        for segment in segments {
            index.set_segment(segment);
        }
        index
    }

    /// Records `flag` as it now is, replacing what an earlier version of it referenced.
    pub fn set_flag(&mut self, flag: &Flag) {
        self.set((ItemKind::Flag, flag.key.clone()), flag_refs(flag));
    }

    /// Records `segment` as it now is, replacing what an earlier version of it referenced.
    pub fn set_segment(&mut self, segment: &Segment) {
        self.set(
            (ItemKind::Segment, segment.key.clone()),
            segment_refs(segment),
        );
    }

    /// Forgets what a deleted item referenced. Items that name it keep their edges: they still
    /// depend on it, and will be affected when it comes back.
    pub fn remove(&mut self, kind: ItemKind, key: &str) {
        self.set((kind, key.to_owned()), Vec::new());
    }

    pub(crate) fn set(&mut self, item: Item, mut refs: Vec<Item>) {
        refs.sort();
        refs.dedup();
        let old = if refs.is_empty() {
            self.refs.remove(&item)
        } else {
            self.refs.insert(item.clone(), refs.clone())
        };
        for target in old.unwrap_or_default() {
            if let Some(set) = self.dependents.get_mut(&target) {
                set.remove(&item);
                if set.is_empty() {
                    self.dependents.remove(&target);
                }
            }
        }
        for target in refs {
            self.dependents
                .entry(target)
                .or_default()
                .insert(item.clone());
        }
    }

    /// The flags whose result may change when the given items change: each changed flag
    /// itself, and every flag that reaches a changed item through prerequisites and segment
    /// matches, transitively. Sorted by key.
    pub fn affected_flags<'a>(
        &self,
        changed: impl IntoIterator<Item = (ItemKind, &'a str)>,
    ) -> BTreeSet<String> {
        let mut seen: HashSet<Item> = HashSet::new();
        let mut queue: Vec<Item> = changed
            .into_iter()
            .map(|(kind, key)| (kind, key.to_owned()))
            .collect();
        let mut flags = BTreeSet::new();
        while let Some(item) = queue.pop() {
            if !seen.insert(item.clone()) {
                continue;
            }
            if let Some(dependents) = self.dependents.get(&item) {
                queue.extend(dependents.iter().filter(|d| !seen.contains(*d)).cloned());
            }
            if item.0 == ItemKind::Flag {
                flags.insert(item.1);
            }
        }
        flags
    }

    /// The flags and segments that name `key` directly.
    pub fn direct_dependents(
        &self,
        kind: ItemKind,
        key: &str,
    ) -> impl Iterator<Item = (ItemKind, &str)> {
        self.dependents
            .get(&(kind, key.to_owned()))
            .into_iter()
            .flatten()
            .map(|(k, key)| (*k, key.as_str()))
    }

    /// Whether no item references another.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flag(key: &str, prereqs: &[&str], segments: &[&str]) -> Flag {
        let prerequisites: Vec<_> = prereqs
            .iter()
            .map(|k| json!({"key": k, "variation": 0}))
            .collect();
        let rules: Vec<_> = segments
            .iter()
            .map(|s| json!({"clauses": [{"op": "segmentMatch", "values": [s]}]}))
            .collect();
        Flag::from_json_value(json!({"key": key, "prerequisites": prerequisites, "rules": rules}))
            .unwrap()
    }

    fn segment(key: &str, nested: &[&str]) -> Segment {
        let rules: Vec<_> = nested
            .iter()
            .map(|s| json!({"clauses": [{"op": "segmentMatch", "values": [s]}]}))
            .collect();
        Segment::from_json_value(json!({"key": key, "rules": rules})).unwrap()
    }

    fn affected(index: &DependencyIndex, kind: ItemKind, key: &str) -> Vec<String> {
        index.affected_flags([(kind, key)]).into_iter().collect()
    }

    /// The reference answer: walk every flag's references from scratch.
    fn by_scanning(flags: &[Flag], segments: &[Segment], kind: ItemKind, key: &str) -> Vec<String> {
        fn reaches(
            item: (ItemKind, &str),
            target: (ItemKind, &str),
            flags: &[Flag],
            segments: &[Segment],
            seen: &mut HashSet<(ItemKind, String)>,
        ) -> bool {
            if item == target {
                return true;
            }
            if !seen.insert((item.0, item.1.to_owned())) {
                return false;
            }
            let next: Vec<(ItemKind, &str)> = match item.0 {
                ItemKind::Flag => flags
                    .iter()
                    .filter(|f| f.key == item.1)
                    .flat_map(|f| {
                        f.prerequisite_keys()
                            .map(|k| (ItemKind::Flag, k))
                            .chain(f.segment_refs().map(|k| (ItemKind::Segment, k)))
                    })
                    .collect(),
                ItemKind::Segment => segments
                    .iter()
                    .filter(|s| s.key == item.1)
                    .flat_map(|s| s.segment_refs().map(|k| (ItemKind::Segment, k)))
                    .collect(),
            };
            next.into_iter()
                .any(|n| reaches(n, target, flags, segments, seen))
        }
        let mut out: Vec<String> = flags
            .iter()
            .filter(|f| {
                reaches(
                    (ItemKind::Flag, &f.key),
                    (kind, key),
                    flags,
                    segments,
                    &mut HashSet::new(),
                )
            })
            .map(|f| f.key.clone())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn prerequisites_and_nested_segments_are_followed() {
        let flags = vec![
            flag("a", &["b"], &[]),
            flag("b", &[], &["s1"]),
            flag("c", &[], &["s2"]),
            flag("d", &[], &[]),
            flag("e", &["a"], &[]),
        ];
        let segments = vec![
            segment("s1", &["s2"]),
            segment("s2", &[]),
            segment("s3", &[]),
        ];
        let index = DependencyIndex::build(&flags, &segments);
        assert_eq!(
            affected(&index, ItemKind::Segment, "s2"),
            ["a", "b", "c", "e"]
        );
        assert_eq!(affected(&index, ItemKind::Flag, "b"), ["a", "b", "e"]);
        assert_eq!(affected(&index, ItemKind::Flag, "d"), ["d"]);
        assert!(affected(&index, ItemKind::Segment, "s3").is_empty());
        for (kind, key) in [
            (ItemKind::Segment, "s1"),
            (ItemKind::Segment, "s2"),
            (ItemKind::Flag, "a"),
            (ItemKind::Flag, "b"),
        ] {
            assert_eq!(
                affected(&index, kind, key),
                by_scanning(&flags, &segments, kind, key)
            );
        }
    }

    #[test]
    fn cycles_end() {
        let flags = vec![flag("a", &["b"], &[]), flag("b", &["a"], &[])];
        let segments = vec![segment("x", &["y"]), segment("y", &["x"])];
        let index = DependencyIndex::build(&flags, &segments);
        assert_eq!(affected(&index, ItemKind::Flag, "a"), ["a", "b"]);
        assert!(affected(&index, ItemKind::Segment, "x").is_empty());
    }

    #[test]
    fn updates_replace_old_edges_and_equal_a_fresh_build() {
        let mut index = DependencyIndex::build(
            &[flag("a", &["b"], &["s"]), flag("b", &[], &[])],
            &[segment("s", &["t"])],
        );
        index.set_flag(&flag("a", &[], &["t"]));
        index.set_segment(&segment("s", &[]));
        index.remove(ItemKind::Flag, "b");
        let fresh = DependencyIndex::build(&[flag("a", &[], &["t"])], &[segment("s", &[])]);
        assert_eq!(index, fresh);
        assert_eq!(affected(&index, ItemKind::Segment, "t"), ["a"]);
        assert_eq!(affected(&index, ItemKind::Flag, "b"), ["b"]);
    }

    proptest::proptest! {
        #[test]
        fn incremental_updates_match_a_rebuild_and_a_scan(
            edits in proptest::collection::vec((0usize..6, proptest::collection::vec(0usize..6, 0..3), proptest::collection::vec(0usize..4, 0..3), proptest::bool::ANY), 1..40)
        ) {
            let name = |prefix: &str, i: usize| format!("{prefix}{i}");
            let mut flags: std::collections::BTreeMap<String, Flag> = Default::default();
            let mut segments: std::collections::BTreeMap<String, Segment> = Default::default();
            let mut index = DependencyIndex::default();
            for (target, refs, segs, is_segment) in edits {
                if is_segment {
                    let key = name("s", target % 4);
                    let nested: Vec<String> = segs.iter().map(|s| name("s", *s)).collect();
                    let nested: Vec<&str> = nested.iter().map(String::as_str).collect();
                    let s = segment(&key, &nested);
                    index.set_segment(&s);
                    segments.insert(key, s);
                } else {
                    let key = name("f", target);
                    let prereqs: Vec<String> = refs.iter().map(|r| name("f", *r)).collect();
                    let prereqs: Vec<&str> = prereqs.iter().map(String::as_str).collect();
                    let segs: Vec<String> = segs.iter().map(|s| name("s", *s)).collect();
                    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                    let f = flag(&key, &prereqs, &segs);
                    index.set_flag(&f);
                    flags.insert(key, f);
                }
            }
            let flags: Vec<Flag> = flags.into_values().collect();
            let segments: Vec<Segment> = segments.into_values().collect();
            proptest::prop_assert_eq!(&index, &DependencyIndex::build(&flags, &segments));
            for i in 0..6 {
                let key = name("f", i);
                let got = affected(&index, ItemKind::Flag, &key);
                let mut want = by_scanning(&flags, &segments, ItemKind::Flag, &key);
                // A changed flag is affected even when it is not (yet) in the data.
                if !want.contains(&key) { want.push(key.clone()); want.sort(); }
                proptest::prop_assert_eq!(got, want);
            }
            for i in 0..4 {
                let key = name("s", i);
                proptest::prop_assert_eq!(
                    affected(&index, ItemKind::Segment, &key),
                    by_scanning(&flags, &segments, ItemKind::Segment, &key)
                );
            }
        }
    }
}
