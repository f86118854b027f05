//! Where the server meets the data layer: building a served [`Snapshot`] from flag files,
//! checking flag data, and reading OpenFeature's reasons off a flag's shape.

use std::path::PathBuf;

use flags_core::{FlagData, ItemKind, Reason};
pub use flags_data::{DataError, ItemChange, Ops, Snapshot, Update};
use flags_store::check::Purpose;
use flags_wire::file::{Problem, RawData, to_model};
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

/// Reads raw data into the model with each item's served version (`served`, where it gives
/// one), compiles it, and renders the stream events for `changes`, plus the warnings about the
/// data (see [`check`]). Errors stop the build; warnings do not.
///
/// The raw items are dropped once read, before anything is compiled, so a big file is held in
/// at most two forms at a time.
pub fn build(
    mut raw: RawData,
    served: impl Fn(ItemKind, &str) -> Option<u64>,
    generation: u64,
    changes: &[ItemChange],
) -> Result<(Snapshot, Vec<ItemEvent>, Vec<Problem>), BuildError> {
    let (mut data, problems) = to_model(&raw);
    if !problems.is_empty() {
        return Err(BuildError::Invalid(problems));
    }
    raw.flags = Default::default();
    raw.segments = Default::default();
    for (key, flag) in &mut data.flags {
        if let Some(version) = served(ItemKind::Flag, key) {
            flag.version = version;
        }
    }
    for (key, segment) in &mut data.segments {
        if let Some(version) = served(ItemKind::Segment, key) {
            segment.version = version;
        }
    }
    let warnings = warnings(&raw, &data);
    let snapshot = Snapshot::from_models(data, generation)?;
    let events = events(&snapshot, changes)?;
    Ok((snapshot, events, warnings))
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

/// The warnings of data that loaded, each with the file its item came from.
fn warnings(raw: &RawData, data: &FlagData) -> Vec<Problem> {
    flags_store::check::data(data)
        .iter()
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

    #[test]
    fn events_name_the_path_first() {
        let data = raw(json!({"f": {"key": "f", "on": true, "variations": [1]}}));
        let (versions, _) = Versions::new().assign(&data);
        let next = raw(json!({"f": {"key": "f", "on": false, "variations": [1]}}));
        let (second, changes) = versions.assign(&next);
        let served = |kind, key: &str| second.served(kind, key);
        let (_, events, warnings) = build(next, served, 2, &changes).unwrap();
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
            warnings.len(),
            1,
            "a flag without a fallthrough is worth a warning: {warnings:?}"
        );

        let (emptied, changes) = versions.assign(&raw(json!({})));
        let served = |kind, key: &str| emptied.served(kind, key);
        let (_, events, _) = build(raw(json!({})), served, 2, &changes).unwrap();
        assert_eq!(events[0].event, "delete");
        assert_eq!(events[0].data, r#"{"path":"/flags/f","version":2}"#);
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
        let (versions, changes) = Versions::new().assign(&data);
        let served = |kind, key: &str| versions.served(kind, key);
        let (snapshot, _, _) = build(data, served, 1, &changes).unwrap();
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
