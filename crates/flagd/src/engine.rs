//! The one place where the server meets the engine crates (`flags-core`, `flags-eval`): building
//! a served [`Snapshot`] from raw file data, checking items against the model, and evaluating.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use flags_core::{
    Context, ContextError, EvalDetail, Flag, FlagData, InMemoryKillSet, InMemoryOverrides,
    Operator, Reason, Segment, VariationOrRollout,
};
use flags_eval::{CompiledData, CompiledFlag, CompiledSegment, Evaluator};
use sha2::{Digest, Sha256};

use crate::source::file::{Problem, RawData};
use crate::source::versions::{Change, Kind};

/// One immutable, compiled generation of served data.
///
/// A snapshot is either built whole ([`Snapshot::build`], [`Snapshot::from_models`]) or derived
/// from the previous one by [`Snapshot::apply`], which compiles only the changed items and shares
/// every other compiled item with its parent. The big JSON forms the SDK endpoints send
/// (`latest-all` and the stream's `put`) are rendered on first request and then kept, so a
/// change costs nothing in proportion to the environment's size until someone asks for them.
pub struct Snapshot {
    data: CompiledData,
    generation: u64,
    /// Wrapping sum of [`item_hash`] over every live item: updated per item, order-free.
    digest_sum: u128,
    digest: String,
    flag_count: usize,
    segment_count: usize,
    latest_all: OnceLock<Bytes>,
    put_event: OnceLock<String>,
}

/// One change of served data, for [`Snapshot::apply`]. Items carry their served version; an
/// update that is not newer than what the snapshot holds (tombstones included) is ignored.
#[derive(Debug, Clone)]
pub enum Update {
    /// Serve this flag (added or replaced).
    Flag(Flag),
    /// Serve this segment (added or replaced).
    Segment(Segment),
    /// Stop serving a flag; `version` is its tombstone's.
    DeleteFlag {
        /// The flag key.
        key: String,
        /// The tombstone's version.
        version: u64,
    },
    /// Stop serving a segment; `version` is its tombstone's.
    DeleteSegment {
        /// The segment key.
        key: String,
        /// The tombstone's version.
        version: u64,
    },
}

/// A change rendered as an SSE event (`patch` or `delete`) with its JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemEvent {
    /// `patch` or `delete`.
    pub event: &'static str,
    /// The event's JSON data.
    pub data: String,
}

impl ItemEvent {
    /// A `patch` of one item: `{"path":"/flags/KEY","data":{...}}`.
    fn patch(kind: Kind, key: &str, item: &impl serde::Serialize) -> Result<ItemEvent, BuildError> {
        let item = serde_json::to_string(item).map_err(|e| BuildError::Compile(e.to_string()))?;
        // Written by hand so `path` comes first and the item keeps its field order.
        let path = serde_json::Value::String(format!("/{}/{key}", kind.section()));
        Ok(ItemEvent {
            event: "patch",
            data: format!(r#"{{"path":{path},"data":{item}}}"#),
        })
    }

    /// A `delete` of one item: `{"path":"/flags/KEY","version":N}`.
    fn delete(kind: Kind, key: &str, version: u64) -> ItemEvent {
        let path = format!("/{}/{key}", kind.section());
        ItemEvent {
            event: "delete",
            data: serde_json::json!({"path": path, "version": version}).to_string(),
        }
    }
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
    /// Reads versioned raw data into the model, compiles it, and renders the SSE events for
    /// `changes`, plus the warnings about the data (see [`check`]). Errors stop the build;
    /// warnings do not.
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
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            if change.deleted {
                events.push(ItemEvent::delete(change.kind, &change.key, change.version));
                continue;
            }
            let event = match change.kind {
                Kind::Flag => data
                    .flags
                    .get(&change.key)
                    .map(|f| ItemEvent::patch(Kind::Flag, &change.key, f)),
                Kind::Segment => data
                    .segments
                    .get(&change.key)
                    .map(|s| ItemEvent::patch(Kind::Segment, &change.key, s)),
            };
            let Some(event) = event else {
                return Err(BuildError::Compile(format!(
                    "changed item /{}/{} is missing",
                    change.kind.section(),
                    change.key
                )));
            };
            events.push(event?);
        }
        let snapshot = Snapshot::from_models(data, generation)?;
        Ok((snapshot, events, warnings))
    }

    /// Compiles a whole set of flags and segments, each carrying its served version.
    pub fn from_models(data: FlagData, generation: u64) -> Result<Snapshot, BuildError> {
        let compiled =
            CompiledData::compile(data).map_err(|e| BuildError::Compile(e.to_string()))?;
        Ok(Snapshot::around(compiled, generation))
    }

    /// The snapshot of `data`, with its counts and digest worked out.
    fn around(data: CompiledData, generation: u64) -> Snapshot {
        let mut digest_sum = 0u128;
        let mut flag_count = 0;
        let mut segment_count = 0;
        for flag in data.flags() {
            digest_sum = digest_sum.wrapping_add(item_hash(Kind::Flag, flag.key(), flag.version()));
            flag_count += 1;
        }
        for segment in data.segments() {
            digest_sum =
                digest_sum.wrapping_add(item_hash(Kind::Segment, segment.key(), segment.version()));
            segment_count += 1;
        }
        Snapshot {
            data,
            generation,
            digest_sum,
            digest: format!("{digest_sum:032x}"),
            flag_count,
            segment_count,
            latest_all: OnceLock::new(),
            put_event: OnceLock::new(),
        }
    }

    /// A new generation with `updates` applied: only changed items are compiled, every other
    /// one is shared with `self`. Returns the events of the updates that took effect, in
    /// order, or `None` when none did (each was stale).
    pub fn apply(
        &self,
        generation: u64,
        updates: Vec<Update>,
    ) -> Result<Option<(Snapshot, Vec<ItemEvent>)>, BuildError> {
        // The first update copies `self`'s compiled data (its key index; compiled items are
        // shared); every update then changes that one copy in place.
        let mut derived: Option<CompiledData> = None;
        let mut digest_sum = self.digest_sum;
        let mut flag_count = self.flag_count;
        let mut segment_count = self.segment_count;
        let mut events = Vec::with_capacity(updates.len());
        for update in updates {
            let data = derived.get_or_insert_with(|| self.data.clone());
            match update {
                Update::Flag(flag) => {
                    let key = flag.key.clone();
                    let version = flag.version;
                    let old = live_flag(data, &key);
                    let event = ItemEvent::patch(Kind::Flag, &key, &flag)?;
                    if !data
                        .put_flag(flag)
                        .map_err(|e| BuildError::Compile(e.to_string()))?
                    {
                        continue;
                    }
                    match old {
                        Some(v) => {
                            digest_sum = digest_sum.wrapping_sub(item_hash(Kind::Flag, &key, v))
                        }
                        None => flag_count += 1,
                    }
                    digest_sum = digest_sum.wrapping_add(item_hash(Kind::Flag, &key, version));
                    events.push(event);
                }
                Update::Segment(segment) => {
                    let key = segment.key.clone();
                    let version = segment.version;
                    let old = live_segment(data, &key);
                    let event = ItemEvent::patch(Kind::Segment, &key, &segment)?;
                    if !data
                        .put_segment(segment)
                        .map_err(|e| BuildError::Compile(e.to_string()))?
                    {
                        continue;
                    }
                    match old {
                        Some(v) => {
                            digest_sum = digest_sum.wrapping_sub(item_hash(Kind::Segment, &key, v));
                        }
                        None => segment_count += 1,
                    }
                    digest_sum = digest_sum.wrapping_add(item_hash(Kind::Segment, &key, version));
                    events.push(event);
                }
                Update::DeleteFlag { key, version } => {
                    let old = live_flag(data, &key);
                    if !data.remove_flag(&key, version) {
                        continue;
                    }
                    if let Some(v) = old {
                        digest_sum = digest_sum.wrapping_sub(item_hash(Kind::Flag, &key, v));
                        flag_count -= 1;
                    }
                    events.push(ItemEvent::delete(Kind::Flag, &key, version));
                }
                Update::DeleteSegment { key, version } => {
                    let old = live_segment(data, &key);
                    if !data.remove_segment(&key, version) {
                        continue;
                    }
                    if let Some(v) = old {
                        digest_sum = digest_sum.wrapping_sub(item_hash(Kind::Segment, &key, v));
                        segment_count -= 1;
                    }
                    events.push(ItemEvent::delete(Kind::Segment, &key, version));
                }
            }
        }
        let Some(data) = derived.filter(|_| !events.is_empty()) else {
            return Ok(None);
        };
        let snapshot = Snapshot {
            data,
            generation,
            digest_sum,
            digest: format!("{digest_sum:032x}"),
            flag_count,
            segment_count,
            latest_all: OnceLock::new(),
            put_event: OnceLock::new(),
        };
        Ok(Some((snapshot, events)))
    }

    /// Increases with every published change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A hex digest of every live item's kind, key and served version: equal data, equal
    /// digest (served versions change whenever an item's content does). Kept per item, so it
    /// costs nothing per change.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// `{"flags":{...},"segments":{...}}` as served by `/sdk/latest-all`, rendered on first use.
    pub fn latest_all(&self) -> Bytes {
        self.latest_all
            .get_or_init(|| Bytes::from(self.render_latest_all()))
            .clone()
    }

    /// The data of the SSE `put` event: `{"path":"/","data":{...}}`, rendered on first use.
    pub fn put_event(&self) -> &str {
        self.put_event.get_or_init(|| {
            let all = self.latest_all();
            let mut put = String::with_capacity(all.len() + 24);
            put.push_str(r#"{"path":"/","data":"#);
            put.push_str(std::str::from_utf8(&all).unwrap_or("{}"));
            put.push('}');
            put
        })
    }

    fn render_latest_all(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct All<'a> {
            flags: BTreeMap<&'a str, &'a Flag>,
            segments: BTreeMap<&'a str, &'a Segment>,
        }
        let all = All {
            flags: self.data.flags().map(|f| (f.key(), f.raw())).collect(),
            segments: self.data.segments().map(|s| (s.key(), s.raw())).collect(),
        };
        // The model serializes infallibly (string keys, no non-finite floats from JSON input).
        serde_json::to_vec(&all).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot render the flag data as JSON");
            b"{\"flags\":{},\"segments\":{}}".to_vec()
        })
    }

    /// The served flag `key` (its model, with served version and `on`), if live.
    pub fn flag(&self, key: &str) -> Option<&Flag> {
        self.data.flag(key).map(CompiledFlag::raw)
    }

    /// The served segment `key`, if live.
    pub fn segment(&self, key: &str) -> Option<&Segment> {
        self.data.segment(key).map(CompiledSegment::raw)
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

    /// The OpenFeature reason for a result of this snapshot's flag `flag_key`: LaunchDarkly's
    /// reasons do not say whether a flag is static or a split, so that is read off the flag.
    pub fn openfeature_reason(&self, flag_key: &str, reason: &Reason<'_>) -> &'static str {
        let flag = self.flag(flag_key);
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

/// The version of the live flag `key`, if there is one.
fn live_flag(data: &CompiledData, key: &str) -> Option<u64> {
    data.flag(key).map(CompiledFlag::version)
}

/// The version of the live segment `key`, if there is one.
fn live_segment(data: &CompiledData, key: &str) -> Option<u64> {
    data.segment(key).map(CompiledSegment::version)
}

/// One item's share of the snapshot digest: the first 16 bytes of SHA-256 over its kind, key
/// and served version.
fn item_hash(kind: Kind, key: &str, version: u64) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(kind.section().as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    hasher.update([0]);
    hasher.update(version.to_le_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
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
            let (applied, events) = start.apply(2, updates).unwrap().unwrap();
            let whole = Snapshot::from_models(models(&expected), 2).unwrap();
            assert_eq!(applied.digest(), whole.digest(), "{count} changes");
            assert_eq!(applied.latest_all(), whole.latest_all(), "{count} changes");
            assert_eq!(applied.flag_count(), whole.flag_count());
            assert_eq!(events.len(), count + 2, "the stale update has no event");
            assert_eq!(events[0].data, r#"{"path":"/flags/f0","version":2}"#);
            assert!(
                events[count + 1]
                    .data
                    .starts_with(r#"{"path":"/flags/f1","data":{"key":"f1","version":2"#),
                "{}",
                events[count + 1].data
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
}
