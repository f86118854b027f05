//! The one place where the server meets the engine crates (`flags-core`, `flags-eval`): building
//! a served [`Snapshot`] from raw file data, checking items against the model, and evaluating.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use flags_core::{
    Context, ContextError, EvalDetail, Flag, FlagData, InMemoryKillSet, InMemoryOverrides,
    Operator, Reason, Segment, VariationOrRollout,
};
use flags_eval::{CompiledData, Evaluator};
use sha2::{Digest, Sha256};

use crate::source::file::{Problem, RawData};
use crate::source::versions::{Change, Kind};

/// One immutable, compiled generation of served data, with the JSON forms the SDK endpoints send
/// prepared once so that requests and streams only copy bytes.
pub struct Snapshot {
    data: CompiledData,
    generation: u64,
    digest: String,
    latest_all: Bytes,
    put_event: String,
    shapes: HashMap<String, FlagShape>,
    flag_count: usize,
    segment_count: usize,
}

/// What OFREP needs to know about a flag to name a reason (static, split) that LaunchDarkly's
/// reasons do not carry.
#[derive(Debug, Clone, Default)]
struct FlagShape {
    /// No targets, rules or prerequisites, and a fixed fallthrough variation.
    is_static: bool,
    fallthrough_is_rollout: bool,
    rule_is_rollout: Vec<bool>,
}

/// A change rendered as an SSE event (`patch` or `delete`) with its JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemEvent {
    /// `patch` or `delete`.
    pub event: &'static str,
    /// The event's JSON data.
    pub data: String,
}

/// Why raw data could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Items do not fit the flag or segment model; every problem is listed.
    #[error("{}", problems_text(.0))]
    Invalid(Vec<Problem>),
    /// The engine refused the data as a whole.
    #[error("cannot compile flag data: {0}")]
    Compile(String),
}

fn problems_text(problems: &[Problem]) -> String {
    let shown: Vec<String> = problems.iter().take(5).map(ToString::to_string).collect();
    let mut text = shown.join("; ");
    if problems.len() > 5 {
        text.push_str(&format!("; and {} more", problems.len() - 5));
    }
    text
}

impl Snapshot {
    /// Reads versioned raw data into the model, compiles it and prepares its JSON forms, plus
    /// the SSE events for `changes`, and the warnings about the data (see [`check`]). Errors
    /// stop the build; warnings do not.
    pub fn build(
        raw: &RawData,
        generation: u64,
        changes: &[Change],
    ) -> Result<(Snapshot, Vec<ItemEvent>, Vec<Problem>), BuildError> {
        let (data, problems) = to_model(raw);
        if !problems.is_empty() {
            return Err(BuildError::Invalid(problems));
        }
        let warnings = warnings(raw, &data);
        let latest_all =
            serde_json::to_vec(&data).map_err(|e| BuildError::Compile(e.to_string()))?;
        let digest = hex_digest(&latest_all);
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            let path = format!("/{}/{}", change.kind.section(), change.key);
            let event = if change.deleted {
                let data = serde_json::json!({"path": path, "version": change.version});
                ItemEvent {
                    event: "delete",
                    data: data.to_string(),
                }
            } else {
                let item = match change.kind {
                    Kind::Flag => data.flags.get(&change.key).map(serde_json::to_string),
                    Kind::Segment => data.segments.get(&change.key).map(serde_json::to_string),
                };
                let Some(Ok(item)) = item else {
                    return Err(BuildError::Compile(format!(
                        "changed item {path} is missing"
                    )));
                };
                // Written by hand so `path` comes first and the item keeps its field order.
                let path = serde_json::Value::String(path);
                ItemEvent {
                    event: "patch",
                    data: format!(r#"{{"path":{path},"data":{item}}}"#),
                }
            };
            events.push(event);
        }
        let shapes = data
            .flags
            .iter()
            .map(|(k, f)| (k.clone(), FlagShape::of(f)))
            .collect();
        let flag_count = data.flags.len();
        let segment_count = data.segments.len();
        let compiled =
            CompiledData::compile(data).map_err(|e| BuildError::Compile(e.to_string()))?;
        let mut put_event = String::with_capacity(latest_all.len() + 24);
        put_event.push_str(r#"{"path":"/","data":"#);
        put_event.push_str(std::str::from_utf8(&latest_all).unwrap_or("{}"));
        put_event.push('}');
        let snapshot = Snapshot {
            data: compiled,
            generation,
            digest,
            latest_all: Bytes::from(latest_all),
            put_event,
            shapes,
            flag_count,
            segment_count,
        };
        Ok((snapshot, events, warnings))
    }

    /// Increases by one with every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A hex SHA-256 prefix of the `latest-all` JSON: equal data, equal digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// `{"flags":{...},"segments":{...}}` as served by `/sdk/latest-all`.
    pub fn latest_all(&self) -> Bytes {
        self.latest_all.clone()
    }

    /// The data of the SSE `put` event: `{"path":"/","data":{...}}`.
    pub fn put_event(&self) -> &str {
        &self.put_event
    }

    /// Number of live flags.
    pub fn flag_count(&self) -> usize {
        self.flag_count
    }

    /// Number of live segments.
    pub fn segment_count(&self) -> usize {
        self.segment_count
    }

    /// Evaluates one flag. Unknown flags give `ERROR`/`FLAG_NOT_FOUND`.
    pub fn evaluate<'a>(
        &'a self,
        ops: &'a Ops,
        flag_key: &str,
        context: &Context,
    ) -> EvalDetail<'a> {
        self.evaluator(ops).evaluate(flag_key, context)
    }

    /// Evaluates every flag, in key order.
    pub fn evaluate_all<'a>(
        &'a self,
        ops: &'a Ops,
        context: &Context,
    ) -> Vec<(&'a str, EvalDetail<'a>)> {
        self.evaluator(ops).evaluate_all(context).collect()
    }

    fn evaluator<'a>(&'a self, ops: &'a Ops) -> Evaluator<'a> {
        Evaluator::new(&self.data)
            .with_kill_set(&ops.kill_set)
            .with_overrides(&ops.overrides)
    }

    /// The OpenFeature reason for a result of this snapshot's flag `flag_key`.
    pub fn openfeature_reason(&self, flag_key: &str, reason: &Reason<'_>) -> &'static str {
        let shape = self.shapes.get(flag_key);
        match reason {
            Reason::Off { .. } => "DISABLED",
            Reason::TargetMatch { .. } => "TARGETING_MATCH",
            Reason::RuleMatch { rule_index, .. } => {
                let split = shape
                    .and_then(|s| s.rule_is_rollout.get(*rule_index))
                    .copied()
                    .unwrap_or(false);
                if split { "SPLIT" } else { "TARGETING_MATCH" }
            }
            // The context was checked against other flags: targeting, not a default.
            Reason::PrerequisiteFailed { .. } => "TARGETING_MATCH",
            Reason::Fallthrough { .. } => match shape {
                Some(s) if s.fallthrough_is_rollout => "SPLIT",
                Some(s) if s.is_static => "STATIC",
                _ => "DEFAULT",
            },
            Reason::Error { .. } => "ERROR",
        }
    }
}

impl FlagShape {
    fn of(flag: &Flag) -> FlagShape {
        FlagShape {
            is_static: flag.targets.is_empty()
                && flag.context_targets.is_empty()
                && flag.rules.is_empty()
                && flag.prerequisites.is_empty()
                && flag.fallthrough.rollout.is_none()
                && flag.fallthrough.variation.is_some(),
            fallthrough_is_rollout: flag.fallthrough.rollout.is_some(),
            rule_is_rollout: flag.rules.iter().map(|r| r.rollout.is_some()).collect(),
        }
    }
}

/// The operations layer's in-memory state: killed flags and per-entity overrides. Empty in file
/// mode; admin APIs fill them in later. Every change bumps [`Ops::generation`], which is part of
/// the OFREP bulk ETag, so clients never keep a cached answer from before a kill.
#[derive(Debug, Default)]
pub struct Ops {
    kill_set: InMemoryKillSet,
    overrides: InMemoryOverrides,
    generation: AtomicU64,
}

impl Ops {
    /// Kills a flag (it serves its off variation); returns whether it was newly killed.
    pub fn kill(&self, flag_key: &str) -> bool {
        let changed = self.kill_set.insert(flag_key);
        self.bump(changed);
        changed
    }

    /// Revives a killed flag; returns whether it was killed.
    pub fn revive(&self, flag_key: &str) -> bool {
        let changed = self.kill_set.remove(flag_key);
        self.bump(changed);
        changed
    }

    /// Pins a context to a variation of a flag; returns the previous pin.
    pub fn set_override(
        &self,
        flag_key: &str,
        context_kind: &str,
        context_key: &str,
        variation: usize,
    ) -> Option<usize> {
        let previous = self
            .overrides
            .insert(flag_key, context_kind, context_key, variation);
        self.bump(previous != Some(variation));
        previous
    }

    /// Removes one override; returns its variation.
    pub fn remove_override(
        &self,
        flag_key: &str,
        context_kind: &str,
        context_key: &str,
    ) -> Option<usize> {
        let previous = self.overrides.remove(flag_key, context_kind, context_key);
        self.bump(previous.is_some());
        previous
    }

    /// Removes every override of a flag (it was deleted).
    pub fn clear_flag(&self, flag_key: &str) {
        self.overrides.clear_flag(flag_key);
        self.bump(true);
    }

    /// The killed flags, sorted.
    pub fn killed(&self) -> Vec<String> {
        self.kill_set.keys()
    }

    /// Increases with every change of the kill set or the overrides.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self, changed: bool) {
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Reads a LaunchDarkly context from JSON.
pub fn parse_context(value: &serde_json::Value) -> Result<Context, ContextError> {
    Context::from_json(value)
}

/// Reads each raw item into the model, collecting every item's error with its full path.
fn to_model(raw: &RawData) -> (FlagData, Vec<Problem>) {
    let mut data = FlagData::default();
    let mut problems = Vec::new();
    for (key, value) in &raw.flags {
        match Flag::from_json_value(value.clone()) {
            Ok(flag) => {
                data.flags.insert(key.clone(), flag);
            }
            Err(e) => problems.push(item_problem(
                raw.flag_origin.get(key),
                "flags",
                key,
                e.path(),
                e.message(),
            )),
        }
    }
    for (key, value) in &raw.segments {
        match Segment::from_json_value(value.clone()) {
            Ok(segment) => {
                data.segments.insert(key.clone(), segment);
            }
            Err(e) => {
                problems.push(item_problem(
                    raw.segment_origin.get(key),
                    "segments",
                    key,
                    e.path(),
                    e.message(),
                ));
            }
        }
    }
    (data, problems)
}

fn item_problem(
    file: Option<&PathBuf>,
    section: &str,
    key: &str,
    inner: &str,
    message: &str,
) -> Problem {
    let path = if inner.is_empty() {
        format!("{section}.{key}")
    } else {
        format!("{section}.{key}.{inner}")
    };
    Problem::error(file.map(PathBuf::as_path), path, message)
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
        let (_, events, warnings) = Snapshot::build(&next, 2, &changes).unwrap();
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
        let (_, events, _) = Snapshot::build(&raw(json!({})), 2, &changes).unwrap();
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
        let (snapshot, _, _) = Snapshot::build(&data, 1, &changes).unwrap();
        let fallthrough = Reason::Fallthrough {
            in_experiment: false,
        };
        assert_eq!(
            snapshot.openfeature_reason("static", &fallthrough),
            "STATIC"
        );
        assert_eq!(
            snapshot.openfeature_reason("targeted", &fallthrough),
            "DEFAULT"
        );
        assert_eq!(snapshot.openfeature_reason("split", &fallthrough), "SPLIT");
        assert_eq!(
            snapshot.openfeature_reason("static", &Reason::Off { killed: true }),
            "DISABLED"
        );
        let prerequisite = Reason::PrerequisiteFailed {
            prerequisite_key: "p".into(),
        };
        assert_eq!(
            snapshot.openfeature_reason("static", &prerequisite),
            "TARGETING_MATCH"
        );
    }
}
