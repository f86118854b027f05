//! Where the server meets the data layer: building a served [`Snapshot`] from flag files,
//! checking flag data, and reading OpenFeature's reasons off a flag's shape.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use flags_core::{Flag, FlagData, Operator, Reason, Segment, VariationOrRollout};
pub use flags_data::{DataError, ItemChange, Ops, Snapshot, Update};
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

/// Reads versioned raw data into the model, compiles it, and renders the stream events for
/// `changes`, plus the warnings about the data (see [`check`]). Errors stop the build;
/// warnings do not.
pub fn build(
    raw: &RawData,
    generation: u64,
    changes: &[ItemChange],
) -> Result<(Snapshot, Vec<ItemEvent>, Vec<Problem>), BuildError> {
    let (data, problems) = to_model(raw);
    if !problems.is_empty() {
        return Err(BuildError::Invalid(problems));
    }
    let warnings = warnings(raw, &data);
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
    let flag = snapshot.flag(flag_key);
    match reason {
        Reason::Off { .. } => "DISABLED",
        Reason::TargetMatch { .. } => "TARGETING_MATCH",
        Reason::RuleMatch { rule_index, .. } => {
            let split = flag
                .and_then(|f| f.rules.get(*rule_index))
                .is_some_and(|r| r.rollout.is_some());
            if split { "SPLIT" } else { "TARGETING_MATCH" }
        }
        // The context was checked against other flags: targeting, not a default.
        Reason::PrerequisiteFailed { .. } => "TARGETING_MATCH",
        Reason::Fallthrough { .. } => match flag {
            Some(f) if f.fallthrough.rollout.is_some() => "SPLIT",
            Some(f) if is_static(f) => "STATIC",
            _ => "DEFAULT",
        },
        Reason::Error { .. } => "ERROR",
    }
}

/// No targets, rules or prerequisites, and a fixed fallthrough variation.
fn is_static(flag: &Flag) -> bool {
    flag.targets.is_empty()
        && flag.context_targets.is_empty()
        && flag.rules.is_empty()
        && flag.prerequisites.is_empty()
        && flag.fallthrough.rollout.is_none()
        && flag.fallthrough.variation.is_some()
}

/// Every problem of merged raw data: model errors, then warnings about things that load but
/// cannot work (variation indexes out of range, missing prerequisites or segments, cycles).
pub fn check(raw: &RawData) -> Vec<Problem> {
    let (data, mut problems) = to_model(raw);
    problems.extend(warnings(raw, &data));
    problems
}

/// The warnings of data that loaded: things that cannot work as written.
fn warnings(raw: &RawData, data: &FlagData) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut warn = |file: Option<&PathBuf>, path: String, message: String| {
        problems.push(Problem::warning(file.map(PathBuf::as_path), path, message));
    };
    for (key, flag) in &data.flags {
        let file = raw.flag_origin.get(key);
        let at = format!("flags.{key}");
        let n = flag.variations.len();
        if n == 0 {
            warn(
                file,
                format!("{at}.variations"),
                "the flag has no variations".to_owned(),
            );
        }
        let mut index = |path: String, i: usize| {
            if i >= n && n > 0 {
                warn(
                    file,
                    path,
                    format!(
                        "variation index {} is out of range (the flag has {n} variations)",
                        flags_core::written_variation_index(i)
                    ),
                );
            }
        };
        if let Some(off) = flag.off_variation {
            index(format!("{at}.offVariation"), off);
        }
        for (i, t) in flag.targets.iter().enumerate() {
            index(format!("{at}.targets[{i}].variation"), t.variation);
        }
        for (i, t) in flag.context_targets.iter().enumerate() {
            index(format!("{at}.contextTargets[{i}].variation"), t.variation);
        }
        check_variation_or_rollout(
            &flag.fallthrough,
            n,
            &format!("{at}.fallthrough"),
            file,
            &mut warn,
        );
        for (i, rule) in flag.rules.iter().enumerate() {
            let rule_at = format!("{at}.rules[{i}]");
            check_variation_or_rollout(&rule.variation_or_rollout(), n, &rule_at, file, &mut warn);
            for (j, clause) in rule.clauses.iter().enumerate() {
                check_clause(
                    clause,
                    &data.segments,
                    &format!("{rule_at}.clauses[{j}]"),
                    file,
                    &mut warn,
                );
            }
        }
        for (i, prereq) in flag.prerequisites.iter().enumerate() {
            let path = format!("{at}.prerequisites[{i}]");
            match data.flags.get(&prereq.key) {
                None => warn(
                    file,
                    format!("{path}.key"),
                    format!("prerequisite flag {:?} does not exist", prereq.key),
                ),
                Some(p) if prereq.variation >= p.variations.len() => warn(
                    file,
                    format!("{path}.variation"),
                    format!(
                        "variation index {} is out of range (flag {:?} has {} variations)",
                        flags_core::written_variation_index(prereq.variation),
                        prereq.key,
                        p.variations.len()
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    for (key, segment) in &data.segments {
        let file = raw.segment_origin.get(key);
        for (i, rule) in segment.rules.iter().enumerate() {
            for (j, clause) in rule.clauses.iter().enumerate() {
                let path = format!("segments.{key}.rules[{i}].clauses[{j}]");
                check_clause(clause, &data.segments, &path, file, &mut warn);
            }
        }
    }
    for cycle in prerequisite_cycles(&data.flags) {
        let file = raw.flag_origin.get(&cycle[0]);
        warn(
            file,
            format!("flags.{}.prerequisites", cycle[0]),
            format!("prerequisite cycle: {}", cycle.join(" -> ")),
        );
    }
    problems
}

fn check_variation_or_rollout(
    vr: &VariationOrRollout,
    n: usize,
    at: &str,
    file: Option<&PathBuf>,
    warn: &mut impl FnMut(Option<&PathBuf>, String, String),
) {
    match (&vr.variation, &vr.rollout) {
        (Some(i), _) => {
            if *i >= n && n > 0 {
                warn(
                    file,
                    format!("{at}.variation"),
                    format!(
                        "variation index {} is out of range (the flag has {n} variations)",
                        flags_core::written_variation_index(*i)
                    ),
                );
            }
        }
        (None, Some(rollout)) => {
            if rollout.variations.is_empty() {
                warn(
                    file,
                    format!("{at}.rollout.variations"),
                    "the rollout has no variations".to_owned(),
                );
            }
            let mut total = 0i64;
            for (j, wv) in rollout.variations.iter().enumerate() {
                total = total.saturating_add(wv.weight);
                if wv.variation >= n && n > 0 {
                    warn(
                        file,
                        format!("{at}.rollout.variations[{j}].variation"),
                        format!(
                            "variation index {} is out of range (the flag has {n} variations)",
                            flags_core::written_variation_index(wv.variation)
                        ),
                    );
                }
            }
            if !rollout.variations.is_empty() && total != 100_000 {
                warn(
                    file,
                    format!("{at}.rollout.variations"),
                    format!("weights add up to {total}, not 100000"),
                );
            }
        }
        (None, None) => warn(
            file,
            at.to_owned(),
            "needs a variation or a rollout".to_owned(),
        ),
    }
}

fn check_clause(
    clause: &flags_core::Clause,
    segments: &BTreeMap<String, Segment>,
    at: &str,
    file: Option<&PathBuf>,
    warn: &mut impl FnMut(Option<&PathBuf>, String, String),
) {
    match &clause.op {
        Operator::SegmentMatch => {
            for (k, v) in clause.values.iter().enumerate() {
                match v.as_str() {
                    Some(s) if segments.contains_key(s) => {}
                    Some(s) => warn(
                        file,
                        format!("{at}.values[{k}]"),
                        format!("segment {s:?} does not exist"),
                    ),
                    None => warn(
                        file,
                        format!("{at}.values[{k}]"),
                        "segment keys must be strings".to_owned(),
                    ),
                }
            }
        }
        Operator::Unknown(op) => {
            warn(
                file,
                format!("{at}.op"),
                format!("unknown operator {op:?}; the clause never matches"),
            );
        }
        _ => {}
    }
}

/// Each prerequisite cycle once, as the list of keys along it (first key repeated at the end).
fn prerequisite_cycles(flags: &BTreeMap<String, Flag>) -> Vec<Vec<String>> {
    let mut cycles = Vec::new();
    let mut done: HashSet<&str> = HashSet::new();
    for start in flags.keys() {
        let mut stack: Vec<&str> = Vec::new();
        visit(start, flags, &mut stack, &mut done, &mut cycles);
    }
    cycles
}

fn visit<'a>(
    key: &'a str,
    flags: &'a BTreeMap<String, Flag>,
    stack: &mut Vec<&'a str>,
    done: &mut HashSet<&'a str>,
    cycles: &mut Vec<Vec<String>>,
) {
    if let Some(pos) = stack.iter().position(|k| *k == key) {
        let mut cycle: Vec<String> = stack[pos..].iter().map(|k| (*k).to_owned()).collect();
        cycle.push(key.to_owned());
        cycles.push(cycle);
        return;
    }
    if done.contains(key) {
        return;
    }
    let Some(flag) = flags.get(key) else { return };
    stack.push(key);
    for prereq in &flag.prerequisites {
        visit(&prereq.key, flags, stack, done, cycles);
    }
    stack.pop();
    done.insert(key);
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

    fn raw(flags: serde_json::Value) -> RawData {
        let flags = flags
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        RawData {
            flags,
            ..RawData::default()
        }
    }

    #[test]
    fn events_name_the_path_first() {
        let mut data = raw(json!({"f": {"key": "f", "on": true, "variations": [1]}}));
        let (versions, _) = Versions::new().assign(&mut data);
        let mut next = raw(json!({"f": {"key": "f", "on": false, "variations": [1]}}));
        let (_, changes) = versions.assign(&mut next);
        let (_, events, warnings) = build(&next, 2, &changes).unwrap();
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

        let (_, changes) = versions.assign(&mut raw(json!({})));
        let (_, events, _) = build(&raw(json!({})), 2, &changes).unwrap();
        assert_eq!(events[0].event, "delete");
        assert_eq!(events[0].data, r#"{"path":"/flags/f","version":2}"#);
    }

    #[test]
    fn openfeature_reasons_follow_the_flag_shape() {
        let mut data = raw(json!({
            "static": {"on": true, "variations": [1], "fallthrough": {"variation": 0}},
            "targeted": {"on": true, "variations": [1], "fallthrough": {"variation": 0},
                         "targets": [{"values": ["x"], "variation": 0}]},
            "split": {"on": true, "variations": [1], "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 100000}]}}}
        }));
        let (_, changes) = Versions::new().assign(&mut data);
        let (snapshot, _, _) = build(&data, 1, &changes).unwrap();
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
