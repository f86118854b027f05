//! Where the server meets the data layer: building a served [`Snapshot`] from flag files,
//! checking flag data, and reading OpenFeature's reasons off a flag's shape.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use flags_core::{FlagData, ItemKind, Reason};
pub use flags_data::{DataError, ItemChange, Ops, Snapshot, Update};
use flags_store::check::{ItemFinding, Purpose, SetCheck};
use flags_wire::file::{Problem, RawData, RawItem, read_flag, read_segment, to_model};
pub use flags_wire::stream::ItemEvent;
use sha2::{Digest, Sha256};

/// Why raw data could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Items do not fit the flag or segment model; every problem is listed.
    #[error("{}", problems_text(.0))]
    Invalid(Vec<Problem>),
    /// The engine refused the data as a whole.
    #[error(transparent)]
    Data(#[from] DataError),
}

fn problems_text(problems: &[Problem]) -> String {
    let shown: Vec<String> = problems.iter().take(5).map(ToString::to_string).collect();
    let mut text = shown.join("; ");
    if problems.len() > 5 {
        text.push_str(&format!("; and {} more", problems.len() - 5));
    }
    text
}

/// What [`build`] made of a file load.
#[derive(Debug)]
pub struct Built {
    /// The new snapshot, or `None` when no item changed (the current one stays).
    pub snapshot: Option<Snapshot>,
    /// The stream events of the changes.
    pub events: Vec<ItemEvent>,
    /// What the checks found that does not stop the data (see [`check`]).
    pub warnings: Vec<Problem>,
}

/// Turns merged raw data into the snapshot that follows `current` (from nothing when `None`):
/// every item is read into the model with its served version (`served`, where it gives one)
/// and checked, and the changed items (`changes`) are applied to `current`, so unchanged items
/// keep their compiled form, shared with it. Errors stop the build; warnings do not.
///
/// Items are read, checked and compiled one at a time, and the raw text of each goes as it is
/// read: a reload holds the current snapshot, the new one, and one item in between.
pub fn build<F>(
    raw: RawData,
    served: F,
    current: Option<&Snapshot>,
    generation: u64,
    changes: &[ItemChange],
) -> Result<Built, BuildError>
where
    F: Fn(ItemKind, &str) -> Option<u64>,
{
    let empty;
    let (base, whole) = match current {
        Some(current) => (current, false),
        None => {
            empty = Snapshot::from_models(FlagData::default(), 0)?;
            (&empty, true)
        }
    };
    let mut reader = Reader {
        flags: raw.flags.into_iter(),
        segments: raw.segments.into_iter(),
        flag_origin: raw.flag_origin,
        segment_origin: raw.segment_origin,
        changed: changes
            .iter()
            .filter(|c| !c.deleted)
            .map(|c| (c.kind, c.key.as_str()))
            .collect(),
        deleted: changes.iter().filter(|c| c.deleted),
        whole,
        served,
        problems: Vec::new(),
        checks: SetCheck::default(),
    };
    let applied = base.apply(generation, &mut reader)?;
    if !reader.problems.is_empty() {
        return Err(BuildError::Invalid(reader.problems));
    }
    let snapshot = match applied {
        Some(applied) => Some(applied.snapshot),
        // Nothing to apply to nothing: an empty file.
        None if whole => Some(Snapshot::from_models(FlagData::default(), generation)?),
        None => None,
    };
    let events = match &snapshot {
        Some(snapshot) => events(snapshot, changes)?,
        None => Vec::new(),
    };
    let lookup = snapshot.as_ref().unwrap_or(base);
    let warnings = reader
        .checks
        .finish(
            |key| lookup.flag(key).map(Cow::Owned),
            |key| lookup.segment(key).map(Cow::Owned),
        )
        .iter()
        .map(|found| {
            let origins = match found.kind {
                ItemKind::Flag => &reader.flag_origin,
                ItemKind::Segment => &reader.segment_origin,
            };
            let file = origins.get(&found.key).map(PathBuf::as_path);
            found.to_problem(Purpose::File, file)
        })
        .collect();
    Ok(Built {
        snapshot,
        events,
        warnings,
    })
}

/// The updates of a file load, read from its raw items one at a time as the snapshot asks for
/// them: each item is read into the model, checked, and passed on when it changed.
struct Reader<'a, F, D> {
    flags: std::collections::btree_map::IntoIter<String, RawItem>,
    segments: std::collections::btree_map::IntoIter<String, RawItem>,
    flag_origin: BTreeMap<String, PathBuf>,
    segment_origin: BTreeMap<String, PathBuf>,
    changed: HashSet<(ItemKind, &'a str)>,
    deleted: D,
    /// Every item is new (there is no current snapshot).
    whole: bool,
    served: F,
    problems: Vec<Problem>,
    checks: SetCheck,
}

impl<'a, F, D> Iterator for Reader<'a, F, D>
where
    F: Fn(ItemKind, &str) -> Option<u64>,
    D: Iterator<Item = &'a ItemChange>,
{
    type Item = Update;

    fn next(&mut self) -> Option<Update> {
        for (key, item) in self.flags.by_ref() {
            let file = self.flag_origin.get(&key).map(PathBuf::as_path);
            let read = read_flag(&key, &item, file);
            drop(item);
            let mut flag = match read {
                Ok(flag) => flag,
                Err(problem) => {
                    self.problems.push(problem);
                    continue;
                }
            };
            if let Some(version) = (self.served)(ItemKind::Flag, &key) {
                flag.version = version;
            }
            if flag.key.is_empty() {
                flag.key.clone_from(&key);
            }
            self.checks.add_flag(&flag);
            if self.whole || self.changed.contains(&(ItemKind::Flag, key.as_str())) {
                return Some(Update::Flag(flag));
            }
        }
        for (key, item) in self.segments.by_ref() {
            let file = self.segment_origin.get(&key).map(PathBuf::as_path);
            let read = read_segment(&key, &item, file);
            drop(item);
            let mut segment = match read {
                Ok(segment) => segment,
                Err(problem) => {
                    self.problems.push(problem);
                    continue;
                }
            };
            if let Some(version) = (self.served)(ItemKind::Segment, &key) {
                segment.version = version;
            }
            if segment.key.is_empty() {
                segment.key.clone_from(&key);
            }
            self.checks.add_segment(&segment);
            if self.whole || self.changed.contains(&(ItemKind::Segment, key.as_str())) {
                return Some(Update::Segment(segment));
            }
        }
        let gone = self.deleted.next()?;
        let (key, version) = (gone.key.clone(), gone.version);
        Some(match gone.kind {
            ItemKind::Flag => Update::DeleteFlag { key, version },
            ItemKind::Segment => Update::DeleteSegment { key, version },
        })
    }
}

/// The stream events of `changes`, which led to `snapshot`.
pub fn events(snapshot: &Snapshot, changes: &[ItemChange]) -> Result<Vec<ItemEvent>, DataError> {
    changes
        .iter()
        .map(|change| {
            snapshot.event_for(change).ok_or_else(|| {
                DataError::Compile(format!(
                    "changed item /{}/{} is missing",
                    change.kind.section(),
                    change.key
                ))
            })
        })
        .collect()
}

/// The OpenFeature reason for a result of `snapshot`'s flag `flag_key`: LaunchDarkly's reasons
/// do not say whether a flag is static or a split, so that is read off the flag.
pub fn openfeature_reason(
    snapshot: &Snapshot,
    flag_key: &str,
    reason: &Reason<'_>,
) -> &'static str {
    let flag = snapshot.compiled_flag(flag_key);
    match reason {
        Reason::Off { .. } => "DISABLED",
        Reason::TargetMatch { .. } => "TARGETING_MATCH",
        Reason::RuleMatch { rule_index, .. } => {
            if flag.is_some_and(|f| f.rule_is_rollout(*rule_index)) {
                "SPLIT"
            } else {
                "TARGETING_MATCH"
            }
        }
        // The context was checked against other flags: targeting, not a default.
        Reason::PrerequisiteFailed { .. } => "TARGETING_MATCH",
        Reason::Fallthrough { .. } => match flag {
            Some(f) if f.fallthrough_is_rollout() => "SPLIT",
            Some(f) if f.is_static() => "STATIC",
            _ => "DEFAULT",
        },
        Reason::Error { .. } => "ERROR",
    }
}

/// Every problem of merged raw data: model errors, then the findings of the flag-data checks
/// (`flags_store::check`), which are warnings for files: things that load but cannot work as
/// written (variation indexes out of range, missing prerequisites or segments, cycles, clause
/// values that never match).
pub fn check(raw: &RawData) -> Vec<Problem> {
    let (data, mut problems) = to_model(raw);
    problems.extend(warnings(raw, &data));
    problems
}

/// The warnings of data that loaded, each with the file its item came from: the checks of the
/// model, then what a store would refuse in the items' text as written.
fn warnings(raw: &RawData, data: &FlagData) -> Vec<Problem> {
    flags_store::check::data(data)
        .iter()
        .chain(&text_findings(raw))
        .map(|found| {
            let origins = match found.kind {
                ItemKind::Flag => &raw.flag_origin,
                ItemKind::Segment => &raw.segment_origin,
            };
            let file = origins.get(&found.key).map(PathBuf::as_path);
            found.to_problem(Purpose::File, file)
        })
        .collect()
}

/// The NULs in the strings and field names of the items (`flags_store::check::document`),
/// which files may hold and no store takes. A NUL can only be written `\u0000` in JSON text,
/// so only an item whose text holds that is read again.
fn text_findings(raw: &RawData) -> Vec<ItemFinding> {
    let mut out = Vec::new();
    for (kind, items) in [
        (ItemKind::Flag, &raw.flags),
        (ItemKind::Segment, &raw.segments),
    ] {
        for (key, item) in items {
            if !item.get().contains("\\u0000") {
                continue;
            }
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(item.get()) else {
                continue;
            };
            let found = flags_store::check::document(&doc);
            out.extend(found.into_iter().map(|finding| ItemFinding {
                kind,
                key: key.clone(),
                finding,
            }));
        }
    }
    out
}

/// The fields of the items that the model does not have (misspellings, mostly), as warnings
/// located in their files: what `flagd validate` adds to [`check`], which a reload does not
/// pay for.
pub fn unknown_fields(raw: &RawData) -> Vec<Problem> {
    let mut out = Vec::new();
    for (kind, items, origins) in [
        (ItemKind::Flag, &raw.flags, &raw.flag_origin),
        (ItemKind::Segment, &raw.segments, &raw.segment_origin),
    ] {
        for (key, item) in items {
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(item.get()) else {
                continue;
            };
            let findings = match kind {
                ItemKind::Flag => flags_store::check::unknown_flag_fields(&doc),
                ItemKind::Segment => flags_store::check::unknown_segment_fields(&doc),
            };
            let file = origins.get(key).map(PathBuf::as_path);
            out.extend(findings.into_iter().map(|finding| {
                ItemFinding {
                    kind,
                    key: key.clone(),
                    finding,
                }
                .to_problem(Purpose::File, file)
            }));
        }
    }
    out
}

/// Hex of the first 16 bytes of SHA-256: long enough that distinct data never collide in
/// practice, short enough for an ETag.
pub fn hex_digest(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::source::versions::Versions;
    use flags_core::Severity;

    fn raw(flags: serde_json::Value) -> RawData {
        let flags = flags
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), flags_wire::file::raw_item(v)))
            .collect();
        RawData {
            flags,
            ..RawData::default()
        }
    }

    /// Builds `data` after `before` (from nothing when `None`), as a file reload does.
    fn load(
        versions: &Versions,
        before: Option<&Snapshot>,
        data: RawData,
        generation: u64,
    ) -> (Versions, Built) {
        let (next, changes) = versions.assign(&data);
        let served = |kind, key: &str| next.served(kind, key);
        let built = build(data, served, before, generation, &changes).unwrap();
        (next, built)
    }

    #[test]
    fn events_name_the_path_first() {
        let (first, built) = load(
            &Versions::new(),
            None,
            raw(json!({"f": {"key": "f", "on": true, "variations": [1]}})),
            1,
        );
        let one = built.snapshot.unwrap();
        let next = raw(json!({"f": {"key": "f", "on": false, "variations": [1]}}));
        let (_, built) = load(&first, Some(&one), next, 2);
        let events = built.events;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "patch");
        assert!(
            events[0]
                .data
                .starts_with(r#"{"path":"/flags/f","data":{"key":"f","version":2,"on":false"#),
            "{}",
            events[0].data
        );
        assert_eq!(
            built.warnings.len(),
            1,
            "a flag without a fallthrough is worth a warning: {:?}",
            built.warnings
        );

        let (_, built) = load(&first, Some(&one), raw(json!({})), 2);
        assert_eq!(built.events[0].event, "delete");
        assert_eq!(built.events[0].data, r#"{"path":"/flags/f","version":2}"#);
        assert_eq!(built.snapshot.unwrap().flag_count(), 0);
    }

    #[test]
    fn a_reload_compiles_only_what_changed() {
        let flag =
            |on: bool| json!({"on": on, "variations": [1, 2], "fallthrough": {"variation": 0}});
        let (first, built) = load(
            &Versions::new(),
            None,
            raw(json!({"a": flag(true), "b": flag(true)})),
            1,
        );
        let one = built.snapshot.unwrap();
        let (second, built) = load(
            &first,
            Some(&one),
            raw(json!({"a": flag(false), "b": flag(true)})),
            2,
        );
        let two = built.snapshot.unwrap();
        let item = |s: &Snapshot, key: &str| std::ptr::from_ref(s.compiled_flag(key).unwrap());
        assert_eq!(
            item(&one, "b"),
            item(&two, "b"),
            "an unchanged flag is shared"
        );
        assert_ne!(item(&one, "a"), item(&two, "a"));
        assert_eq!((two.generation(), two.flag("a").unwrap().version), (2, 2));

        // The same items again, laid out otherwise: nothing to publish.
        let (_, built) = load(
            &second,
            Some(&two),
            raw(json!({"b": flag(true), "a": flag(false)})),
            3,
        );
        assert!(built.snapshot.is_none() && built.events.is_empty());

        // A bad item stops the load, whatever else changed.
        let bad = raw(json!({"a": flag(true), "b": {"on": "yes"}}));
        let (changes_of, changes) = second.assign(&bad);
        let served = |kind, key: &str| changes_of.served(kind, key);
        let err = build(bad, served, Some(&two), 3, &changes).unwrap_err();
        assert!(err.to_string().starts_with("flags.b.on: "), "{err}");
    }

    /// One write to a store, and the item as a flag file holds it.
    type Write = (ItemKind, &'static str, serde_json::Value);

    /// Applies `writes` to a fresh store (each must succeed but the last) and returns what the
    /// last one answered: its error, or its warnings, as `path: message`.
    async fn store_answer(writes: &[Write]) -> (Severity, Vec<String>) {
        use flags_store::{Actor, AdminStore, ChangeFeed, MemoryStore};
        let store = MemoryStore::new();
        let actor = Actor::named("test");
        store.create_environment(&actor, "e", "e").await.unwrap();
        let (last, before) = writes.split_last().unwrap();
        let put = async |(kind, key, doc): &Write| match kind {
            ItemKind::Flag => {
                let version = store.get_flag("e", key).await.ok().map(|f| f.version);
                let stored = store.put_flag(&actor, "e", key, doc.clone(), version).await;
                stored.map(|f| f.warnings())
            }
            ItemKind::Segment => {
                let version = store.get_segment("e", key).await.ok().map(|s| s.version);
                let stored = store
                    .put_segment(&actor, "e", key, doc.clone(), version)
                    .await;
                stored.map(|s| s.warnings())
            }
        };
        for write in before {
            put(write).await.unwrap();
        }
        match put(last).await {
            Ok(warnings) => (
                Severity::Warning,
                warnings
                    .iter()
                    .map(|w| format!("{}: {}", w.path, w.message))
                    .collect(),
            ),
            Err(e) => (Severity::Error, vec![e.to_string()]),
        }
    }

    /// The flag file holding what `writes` leave behind (a later write of a key wins).
    fn file_of(writes: &[Write]) -> RawData {
        let mut raw = RawData::default();
        for (kind, key, doc) in writes {
            let mut doc = doc.clone();
            doc["key"] = json!(key);
            let items = match kind {
                ItemKind::Flag => &mut raw.flags,
                ItemKind::Segment => &mut raw.segments,
            };
            items.insert((*key).to_owned(), flags_wire::file::raw_item(&doc));
        }
        raw
    }

    /// Every check gives the same path and message for the same problem, whether `flagd
    /// validate` (and a reload) finds it in a file or a store refuses or warns about a write;
    /// only the severity differs, as `flags_store::check` says.
    #[tokio::test]
    async fn files_and_store_writes_report_a_problem_alike() {
        use ItemKind::{Flag as F, Segment as S};
        let flag = |patch: serde_json::Value| {
            let mut doc = json!({"on": true, "variations": [true, false], "offVariation": 1,
                "fallthrough": {"variation": 0}});
            for (field, value) in patch.as_object().unwrap() {
                doc[field] = value.clone();
            }
            doc
        };
        let clause = |op: &str, values: serde_json::Value| {
            flag(json!({"rules": [{"variation": 0, "clauses": [
                {"attribute": "a", "op": op, "values": values}]}]}))
        };
        let prereq = |key: &str, variation: i64| {
            flag(json!({"prerequisites": [{"key": key, "variation": variation}]}))
        };
        let nests =
            |key: &str| json!({"rules": [{"clauses": [{"op": "segmentMatch", "values": [key]}]}]});
        let (error, warning) = (Severity::Error, Severity::Warning);
        let cases: Vec<(Vec<Write>, Severity, &str)> = vec![
            (
                vec![(F, "a b", flag(json!({})))],
                error,
                "key: flag key \"a b\" may only hold letters, digits, '.', '_' and '-'",
            ),
            (
                vec![(F, "f", json!({"fallthrough": {"variation": null}}))],
                warning,
                "variations: the flag has no variations",
            ),
            (
                vec![(F, "f", flag(json!({"offVariation": 5})))],
                error,
                "offVariation: variation 5 does not exist (the flag has 2)",
            ),
            (
                vec![(
                    F,
                    "f",
                    flag(json!({"targets": [{"values": ["a"], "variation": -1}]})),
                )],
                error,
                "targets[0].variation: must not be negative",
            ),
            (
                vec![(F, "f", flag(json!({"fallthrough": {}})))],
                error,
                "fallthrough: a flag that is on needs a fallthrough variation or rollout",
            ),
            (
                vec![(F, "f", flag(json!({"on": false, "fallthrough": {}})))],
                warning,
                "fallthrough: a flag needs a fallthrough variation or rollout before it is turned on",
            ),
            (
                vec![(F, "f", flag(json!({"rules": [{"clauses": []}]})))],
                error,
                "rules[0]: a rule needs a variation or a rollout",
            ),
            (
                vec![(
                    F,
                    "f",
                    flag(json!({"fallthrough": {"rollout": {"variations": []}}})),
                )],
                error,
                "fallthrough.rollout.variations: a rollout needs at least one variation",
            ),
            (
                vec![(
                    F,
                    "f",
                    flag(json!({"fallthrough": {"rollout": {"variations": [
                    {"variation": 0, "weight": 100001}, {"variation": 1, "weight": -1}]}}})),
                )],
                error,
                "fallthrough.rollout.variations[1].weight: must not be negative",
            ),
            (
                vec![(
                    F,
                    "f",
                    flag(json!({"fallthrough": {"rollout": {"variations": [
                    {"variation": 0, "weight": 60000}]}}})),
                )],
                warning,
                "fallthrough.rollout.variations: weights add up to 60000, not 100000",
            ),
            (
                vec![(
                    F,
                    "f",
                    flag(json!({"contextTargets": [
                    {"contextKind": "multi", "values": ["a"], "variation": 0}]})),
                )],
                error,
                "contextTargets[0].contextKind: context kind \"multi\" is invalid: \"multi\" is only allowed as the kind of a multi-kind context",
            ),
            (
                vec![(F, "f", prereq("", 0))],
                error,
                "prerequisites[0].key: must not be empty",
            ),
            (
                vec![(S, "s", json!({"rules": [{"weight": -1, "clauses": []}]}))],
                error,
                "rules[0].weight: must be between 0 and 100000",
            ),
            (
                vec![(F, "f", clause("sometimes", json!(["x"])))],
                error,
                "rules[0].clauses[0].op: unknown operator \"sometimes\"",
            ),
            (
                vec![(F, "f", clause("segmentMatch", json!([7])))],
                error,
                "rules[0].clauses[0].values[0]: a segmentMatch value must be a segment key (a string)",
            ),
            (
                vec![(F, "f", clause("matches", json!(["a+", "(unclosed"])))],
                warning,
                "rules[0].clauses[0].values[1]: invalid regular expression: unclosed group",
            ),
            (
                vec![(
                    F,
                    "f",
                    clause("before", json!([1700000000000_i64, "2024-01-31"])),
                )],
                warning,
                "rules[0].clauses[0].values[1]: invalid date: expected an RFC 3339 date-time (like 2024-01-31T12:00:00Z) or Unix milliseconds",
            ),
            (
                vec![(
                    F,
                    "f",
                    clause("semVerGreaterThan", json!(["1", "1.2", "1.2.x"])),
                )],
                warning,
                "rules[0].clauses[0].values[2]: invalid semantic version: expected MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]",
            ),
            (
                vec![(F, "f", prereq("ghost", 0))],
                error,
                "prerequisites[0].key: unknown or archived flag \"ghost\"",
            ),
            (
                vec![(F, "c", flag(json!({}))), (F, "f", prereq("c", 5))],
                error,
                "prerequisites[0].variation: flag \"c\" has no variation 5 (it has 2)",
            ),
            (
                vec![(F, "f", clause("segmentMatch", json!(["nobody"])))],
                error,
                "rules[0].clauses[0].values[0]: unknown or archived segment \"nobody\"",
            ),
            (
                vec![
                    (F, "a", flag(json!({}))),
                    (F, "b", prereq("a", 0)),
                    (F, "a", prereq("b", 0)),
                ],
                error,
                "prerequisites[0].key: prerequisite cycle: a -> b -> a",
            ),
            (
                vec![
                    (S, "s1", json!({})),
                    (S, "s2", nests("s1")),
                    (S, "s1", nests("s2")),
                ],
                error,
                "rules[0].clauses[0].values[0]: segment cycle: s1 -> s2 -> s1",
            ),
        ];
        for (writes, severity, want) in cases {
            let (kind, key, _) = writes.last().unwrap();
            let from_store = store_answer(&writes).await;
            assert_eq!(
                (from_store.0, from_store.1.contains(&want.to_owned())),
                (severity, true),
                "the store's answer for {want:?}: {from_store:?}"
            );
            let in_file = format!("warning: {}.{key}.{want}", kind.section());
            let from_file: Vec<String> = check(&file_of(&writes))
                .iter()
                .map(ToString::to_string)
                .collect();
            assert!(
                from_file.contains(&in_file),
                "the file's problems lack {in_file:?}: {from_file:?}"
            );
        }
    }

    #[test]
    fn openfeature_reasons_follow_the_flag_shape() {
        let data = raw(json!({
            "static": {"on": true, "variations": [1], "fallthrough": {"variation": 0}},
            "targeted": {"on": true, "variations": [1], "fallthrough": {"variation": 0},
                         "targets": [{"values": ["x"], "variation": 0}]},
            "split": {"on": true, "variations": [1], "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 100000}]}}}
        }));
        let (_, built) = load(&Versions::new(), None, data, 1);
        let snapshot = built.snapshot.unwrap();
        let fallthrough = Reason::Fallthrough {
            in_experiment: false,
        };
        assert_eq!(
            openfeature_reason(&snapshot, "static", &fallthrough),
            "STATIC"
        );
        assert_eq!(
            openfeature_reason(&snapshot, "targeted", &fallthrough),
            "DEFAULT"
        );
        assert_eq!(
            openfeature_reason(&snapshot, "split", &fallthrough),
            "SPLIT"
        );
        assert_eq!(
            openfeature_reason(&snapshot, "static", &Reason::Off { killed: true }),
            "DISABLED"
        );
        let prerequisite = Reason::PrerequisiteFailed {
            prerequisite_key: "p".into(),
        };
        assert_eq!(
            openfeature_reason(&snapshot, "static", &prerequisite),
            "TARGETING_MATCH"
        );
    }
}
