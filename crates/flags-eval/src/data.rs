//! The compiled, immutable snapshot of flags and segments.

use std::sync::Arc;

use crate::hash::StrMap;
use flags_core::{Flag, FlagData, LoadError, Reason, Segment, Value};

use crate::compile::{CFlag, CSegment};

/// Flag data that cannot be compiled.
///
/// Compilation itself accepts everything LaunchDarkly's SDKs accept; this error arises only when
/// the input cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// The JSON could not be read as flag data (the message names the field path).
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// One compiled flag: the flag's served JSON, plus everything evaluation needs precomputed.
///
/// The model is not kept: its JSON text is smaller, is what the SDK endpoints send, and reads
/// back into the model exactly ([`CompiledFlag::to_flag`]) when something needs the whole flag.
#[derive(Debug)]
pub struct CompiledFlag {
    key: Box<str>,
    version: u64,
    deleted: bool,
    on: bool,
    /// Whether each rule, then the fallthrough, names a rollout (OpenFeature calls its
    /// result a split), and whether the flag is static; see the accessors.
    shape: Shape,
    json: Box<str>,
    variations: Box<[Value]>,
    pub(crate) c: CFlag,
}

/// Facts about a flag's shape that are not needed to evaluate it, but to describe a result.
#[derive(Debug, Default)]
struct Shape {
    /// Each rule's id, whether it serves a rollout, and whether it asks for full events.
    rules: Box<[(Box<str>, bool, bool)]>,
    split_fallthrough: bool,
    is_static: bool,
    events: EventSettings,
}

/// What a flag asks of an SDK's analytics events, as LaunchDarkly's data model says it.
#[derive(Debug, Default, Clone, Copy)]
struct EventSettings {
    track_events: bool,
    track_events_fallthrough: bool,
    debug_events_until_date: Option<u64>,
    exclude_from_summaries: bool,
}

impl CompiledFlag {
    /// Compiles one flag.
    pub fn compile(flag: Flag) -> CompiledFlag {
        let c = CFlag::compile(&flag);
        // The model serializes infallibly: string keys, and no non-finite floats from JSON.
        let json = serde_json::to_string(&flag)
            .unwrap_or_default()
            .into_boxed_str();
        let shape = Shape {
            rules: Box::default(),
            split_fallthrough: flag.fallthrough.rollout.is_some(),
            is_static: flag.targets.is_empty()
                && flag.context_targets.is_empty()
                && flag.rules.is_empty()
                && flag.prerequisites.is_empty()
                && flag.fallthrough.rollout.is_none()
                && flag.fallthrough.variation.is_some(),
            events: EventSettings {
                track_events: flag.track_events,
                track_events_fallthrough: flag.track_events_fallthrough,
                debug_events_until_date: flag.debug_events_until_date,
                exclude_from_summaries: flag.exclude_from_summaries,
            },
        };
        let Flag {
            key,
            version,
            deleted,
            on,
            variations,
            rules,
            ..
        } = flag;
        let rules = rules
            .into_iter()
            .map(|r| (r.id.into_boxed_str(), r.rollout.is_some(), r.track_events))
            .collect();
        CompiledFlag {
            key: key.into_boxed_str(),
            version,
            deleted,
            on,
            shape: Shape { rules, ..shape },
            json,
            variations: variations.into_boxed_slice(),
            c,
        }
    }

    /// The flag as served, as JSON text (LaunchDarkly's flag format, served version included).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The flag's model, read back from its JSON.
    pub fn to_flag(&self) -> Flag {
        // The text was written from a model, so it reads back; a default is unreachable.
        Flag::from_json_str(&self.json).unwrap_or_default()
    }

    /// The flag key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The flag version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether this is a deletion tombstone.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// Whether targeting is on.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// The values the flag can take.
    pub fn variations(&self) -> &[Value] {
        &self.variations
    }

    /// The id of rule `index`, empty when the rule has none or there is no such rule.
    pub fn rule_id(&self, index: usize) -> &str {
        self.shape.rules.get(index).map_or("", |(id, _, _)| id)
    }

    /// Whether rule `index` serves a percentage rollout.
    pub fn rule_is_rollout(&self, index: usize) -> bool {
        self.shape
            .rules
            .get(index)
            .is_some_and(|&(_, rollout, _)| rollout)
    }

    /// Whether the fallthrough serves a percentage rollout.
    pub fn fallthrough_is_rollout(&self) -> bool {
        self.shape.split_fallthrough
    }

    /// Whether the flag has no targets, rules or prerequisites and a fixed fallthrough
    /// variation: when on, it serves one value to everyone.
    pub fn is_static(&self) -> bool {
        self.shape.is_static
    }

    /// Whether an evaluation that gave `reason` is sent as a full `feature` event, not only
    /// counted in a summary, as LaunchDarkly's SDKs decide it: the flag has `trackEvents`, or the
    /// evaluation is an experiment's, or the matched rule (the fallthrough) tracks events.
    pub fn requires_full_event(&self, reason: &Reason<'_>) -> bool {
        self.shape.events.track_events || self.is_experiment(reason)
    }

    /// [`is_experiment`](crate::is_experiment) for this flag: the evaluation is in an
    /// experiment, or the matched rule (the fallthrough) tracks events. LaunchDarkly's SDKs then
    /// send the reason with the event even when the application did not ask for it.
    pub fn is_experiment(&self, reason: &Reason<'_>) -> bool {
        experiment(reason, self.shape.events.track_events_fallthrough, |i| {
            self.shape.rules.get(i).is_some_and(|&(_, _, track)| track)
        })
    }

    /// Until when (Unix milliseconds) evaluations are also sent as `debug` events.
    pub fn debug_events_until_date(&self) -> Option<u64> {
        self.shape.events.debug_events_until_date
    }

    /// Whether evaluations of this flag are left out of summary events.
    pub fn exclude_from_summaries(&self) -> bool {
        self.shape.events.exclude_from_summaries
    }
}

/// One compiled segment: its served JSON, plus what evaluation needs.
#[derive(Debug)]
pub struct CompiledSegment {
    key: Box<str>,
    version: u64,
    deleted: bool,
    json: Box<str>,
    pub(crate) c: CSegment,
}

impl CompiledSegment {
    /// Compiles one segment.
    pub fn compile(segment: Segment) -> CompiledSegment {
        let c = CSegment::compile(&segment);
        let json = serde_json::to_string(&segment)
            .unwrap_or_default()
            .into_boxed_str();
        CompiledSegment {
            key: segment.key.into_boxed_str(),
            version: segment.version,
            deleted: segment.deleted,
            json,
            c,
        }
    }

    /// The segment as served, as JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The segment's model, read back from its JSON.
    pub fn to_segment(&self) -> Segment {
        Segment::from_json_str(&self.json).unwrap_or_default()
    }

    /// The segment key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The segment version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether this is a deletion tombstone.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// Whether this is a big (`unbounded`) segment, whose members a big-segment store holds.
    pub fn is_unbounded(&self) -> bool {
        self.c.big.is_some()
    }
}

/// An immutable compiled snapshot of an environment's flags and segments.
///
/// Items are held behind `Arc`, so deriving a new snapshot from an old one (upsert, delete)
/// copies pointers, not flags. Deleted items stay as tombstones so that stale updates are refused.
#[derive(Debug, Clone, Default)]
pub struct CompiledData {
    flags: StrMap<Arc<CompiledFlag>>,
    segments: StrMap<Arc<CompiledSegment>>,
}

impl CompiledData {
    /// Compiles flag data: regexes, dates, versions, sets and attribute references are all
    /// prepared here, once.
    pub fn compile(data: FlagData) -> Result<CompiledData, CompileError> {
        let mut out = CompiledData::default();
        for (key, mut flag) in data.flags {
            if flag.key.is_empty() {
                flag.key.clone_from(&key);
            }
            out.flags
                .insert(key.into_boxed_str(), Arc::new(CompiledFlag::compile(flag)));
        }
        for (key, mut segment) in data.segments {
            if segment.key.is_empty() {
                segment.key.clone_from(&key);
            }
            out.segments.insert(
                key.into_boxed_str(),
                Arc::new(CompiledSegment::compile(segment)),
            );
        }
        Ok(out)
    }

    /// Reads and compiles LaunchDarkly JSON flag data (`{"flags":{...},"segments":{...}}`).
    pub fn from_json_str(text: &str) -> Result<CompiledData, CompileError> {
        CompiledData::compile(FlagData::from_json_str(text)?)
    }

    /// The live (not deleted) flag with this key.
    pub fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags
            .get(key)
            .map(Arc::as_ref)
            .filter(|f| !f.is_deleted())
    }

    /// The live segment with this key.
    pub fn segment(&self, key: &str) -> Option<&CompiledSegment> {
        self.segments
            .get(key)
            .map(Arc::as_ref)
            .filter(|s| !s.is_deleted())
    }

    /// The flag with this key, including a deletion tombstone.
    pub fn flag_or_tombstone(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags.get(key).map(Arc::as_ref)
    }

    /// The segment with this key, including a deletion tombstone.
    pub fn segment_or_tombstone(&self, key: &str) -> Option<&CompiledSegment> {
        self.segments.get(key).map(Arc::as_ref)
    }

    /// Every live flag, in no particular order.
    pub fn flags(&self) -> impl Iterator<Item = &CompiledFlag> + '_ {
        self.flags
            .values()
            .map(Arc::as_ref)
            .filter(|f| !f.is_deleted())
    }

    /// Every live segment, in no particular order.
    pub fn segments(&self) -> impl Iterator<Item = &CompiledSegment> + '_ {
        self.segments
            .values()
            .map(Arc::as_ref)
            .filter(|s| !s.is_deleted())
    }

    /// The number of live flags.
    pub fn flag_count(&self) -> usize {
        self.flags().count()
    }

    /// The live flags and segments as plain data (tombstones left out).
    pub fn flag_data(&self) -> FlagData {
        FlagData {
            flags: self
                .flags()
                .map(|f| (f.key().to_owned(), f.to_flag()))
                .collect(),
            segments: self
                .segments()
                .map(|s| (s.key().to_owned(), s.to_segment()))
                .collect(),
        }
    }

    /// A new snapshot with this flag added or replaced, or `None` when the snapshot already
    /// holds the same or a newer version (including a tombstone).
    pub fn upsert_flag(&self, flag: Flag) -> Result<Option<CompiledData>, CompileError> {
        if self.holds_flag(&flag.key, flag.version) {
            return Ok(None);
        }
        let mut next = self.clone();
        next.put_flag(flag)?;
        Ok(Some(next))
    }

    /// A new snapshot with this segment added or replaced, or `None` when stale.
    pub fn upsert_segment(&self, segment: Segment) -> Result<Option<CompiledData>, CompileError> {
        if self.holds_segment(&segment.key, segment.version) {
            return Ok(None);
        }
        let mut next = self.clone();
        next.put_segment(segment)?;
        Ok(Some(next))
    }

    /// A new snapshot with the flag replaced by a tombstone at `version`, or `None` when stale.
    pub fn delete_flag(&self, key: &str, version: u64) -> Option<CompiledData> {
        if self.holds_flag(key, version) {
            return None;
        }
        let mut next = self.clone();
        next.remove_flag(key, version);
        Some(next)
    }

    /// A new snapshot with the segment replaced by a tombstone at `version`, or `None` when stale.
    pub fn delete_segment(&self, key: &str, version: u64) -> Option<CompiledData> {
        if self.holds_segment(key, version) {
            return None;
        }
        let mut next = self.clone();
        next.remove_segment(key, version);
        Some(next)
    }

    /// Adds or replaces this flag in place; `false`, with nothing changed, when the data
    /// already holds the same or a newer version (including a tombstone). Applying a batch of
    /// changes to one copy this way copies the key index once, not once per change.
    pub fn put_flag(&mut self, flag: Flag) -> Result<bool, CompileError> {
        if self.holds_flag(&flag.key, flag.version) {
            return Ok(false);
        }
        let key: Box<str> = flag.key.as_str().into();
        self.flags
            .insert(key, Arc::new(CompiledFlag::compile(flag)));
        Ok(true)
    }

    /// Adds or replaces this segment in place; `false`, with nothing changed, when stale.
    pub fn put_segment(&mut self, segment: Segment) -> Result<bool, CompileError> {
        if self.holds_segment(&segment.key, segment.version) {
            return Ok(false);
        }
        let key: Box<str> = segment.key.as_str().into();
        self.segments
            .insert(key, Arc::new(CompiledSegment::compile(segment)));
        Ok(true)
    }

    /// Replaces the flag by a tombstone at `version` in place; `false` when stale.
    pub fn remove_flag(&mut self, key: &str, version: u64) -> bool {
        if self.holds_flag(key, version) {
            return false;
        }
        let tombstone = Flag {
            key: key.to_owned(),
            version,
            deleted: true,
            ..Flag::default()
        };
        self.flags
            .insert(key.into(), Arc::new(CompiledFlag::compile(tombstone)));
        true
    }

    /// Replaces the segment by a tombstone at `version` in place; `false` when stale.
    pub fn remove_segment(&mut self, key: &str, version: u64) -> bool {
        if self.holds_segment(key, version) {
            return false;
        }
        let tombstone = Segment {
            key: key.to_owned(),
            version,
            deleted: true,
            ..Segment::default()
        };
        self.segments
            .insert(key.into(), Arc::new(CompiledSegment::compile(tombstone)));
        true
    }

    /// Whether flag `key` is held (live or as a tombstone) at `version` or newer.
    fn holds_flag(&self, key: &str, version: u64) -> bool {
        self.flags
            .get(key)
            .is_some_and(|old| old.version() >= version)
    }

    /// Whether segment `key` is held (live or as a tombstone) at `version` or newer.
    fn holds_segment(&self, key: &str, version: u64) -> bool {
        self.segments
            .get(key)
            .is_some_and(|old| old.version() >= version)
    }
}

/// [`is_experiment`](crate::is_experiment) over what a flag says of its fallthrough and
/// rules, so the model and the compiled flag ([`CompiledFlag::requires_full_event`]) decide by one rule.
pub(crate) fn experiment(
    reason: &Reason<'_>,
    track_events_fallthrough: bool,
    rule_tracks: impl Fn(usize) -> bool,
) -> bool {
    if reason.in_experiment() {
        return true;
    }
    match reason {
        Reason::Fallthrough { .. } => track_events_fallthrough,
        Reason::RuleMatch { rule_index, .. } => rule_tracks(*rule_index),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_item_keeps_its_served_json_and_reads_back_its_model() {
        let flag = Flag::from_json_value(json!({
            "key": "f", "version": 7, "on": true, "salt": "s",
            "variations": ["a", {"b": [1, 2.5]}, null],
            "offVariation": 2,
            "rules": [
                {"id": "r0", "variation": 0, "clauses": [
                    {"attribute": "country", "op": "in", "values": ["nz"]}]},
                {"id": "r1", "clauses": [], "rollout": {"variations": [
                    {"variation": 0, "weight": 100000}]}}
            ],
            "fallthrough": {"variation": 1},
            "trackEvents": true
        }))
        .unwrap();
        let compiled = CompiledFlag::compile(flag.clone());
        assert_eq!(compiled.json(), serde_json::to_string(&flag).unwrap());
        assert_eq!(compiled.to_flag(), flag);
        assert_eq!((compiled.key(), compiled.version()), ("f", 7));
        assert!(compiled.is_on() && !compiled.is_deleted());
        assert_eq!(compiled.variations(), &flag.variations[..]);
        assert_eq!((compiled.rule_id(1), compiled.rule_id(2)), ("r1", ""));
        assert!(!compiled.rule_is_rollout(0) && compiled.rule_is_rollout(1));
        assert!(!compiled.fallthrough_is_rollout() && !compiled.is_static());

        let fixed = Flag::from_json_value(json!({
            "key": "g", "variations": [1], "fallthrough": {"variation": 0}
        }))
        .unwrap();
        assert!(CompiledFlag::compile(fixed).is_static());

        let segment = Segment::from_json_value(json!({
            "key": "s", "version": 3, "included": ["u"], "salt": "x"
        }))
        .unwrap();
        let compiled = CompiledSegment::compile(segment.clone());
        assert_eq!(compiled.json(), serde_json::to_string(&segment).unwrap());
        assert_eq!(compiled.to_segment(), segment);
    }
}
