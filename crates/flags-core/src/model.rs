//! The LaunchDarkly server-side flag and segment data model, field for field.
//!
//! These types are the wire form: they deserialize whatever LaunchDarkly's SDKs accept and
//! serialize to JSON those SDKs accept. They hold no compiled state; `flags-eval` compiles them.
//!
//! Loading is lenient where the SDKs are lenient (unknown fields are ignored, `null` is read as the
//! field's default, unknown operators and rollout kinds are kept) and strict where the SDKs
//! cannot read the data at all (a string where an array belongs), in which case [`LoadError`]
//! names the full field path.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::DEFAULT_KIND;
use crate::error::LoadError;

/// One feature flag in LaunchDarkly's server-side JSON form.
///
/// Variation indexes are `usize`. LaunchDarkly SDKs load a negative index and report the flag as
/// malformed when it is used; to keep that behaviour such an index is held in two's complement
/// (`-1` as `usize::MAX`, `-2` as `usize::MAX - 1`, ...; out of range for every flag), written
/// back as the same negative number, and shown as written by [`written_variation_index`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    /// The flag key. A flag inside [`FlagData`] that lacks one takes its map key.
    #[serde(default, deserialize_with = "nullable")]
    pub key: String,
    /// Version; a store keeps the highest version it has seen.
    #[serde(default, deserialize_with = "nullable")]
    pub version: u64,
    /// Whether targeting is on. When off, the off variation is served.
    #[serde(default, deserialize_with = "nullable")]
    pub on: bool,
    /// Prerequisite flags, checked in order after `on`.
    #[serde(default, deserialize_with = "nullable")]
    pub prerequisites: Vec<Prerequisite>,
    /// Salt for percentage rollouts.
    #[serde(default, deserialize_with = "nullable")]
    pub salt: String,
    /// User-kind individual targets (the pre-context form).
    #[serde(default, deserialize_with = "nullable")]
    pub targets: Vec<Target>,
    /// Individual targets for any context kind, checked in order.
    #[serde(default, deserialize_with = "nullable")]
    pub context_targets: Vec<Target>,
    /// Targeting rules, checked in order after targets.
    #[serde(default, deserialize_with = "nullable")]
    pub rules: Vec<FlagRule>,
    /// What to serve when targeting is on and nothing else matched.
    #[serde(default, deserialize_with = "nullable")]
    pub fallthrough: VariationOrRollout,
    /// The variation served when the flag is off; `None` serves the caller's default.
    #[serde(
        default,
        deserialize_with = "opt_variation_index::deserialize",
        serialize_with = "opt_variation_index::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub off_variation: Option<usize>,
    /// The values the flag can take.
    #[serde(default, deserialize_with = "nullable")]
    pub variations: Vec<Value>,
    /// Which client-side SDKs may see this flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_side_availability: Option<ClientSideAvailability>,
    /// Whether full feature events are sent for every evaluation.
    #[serde(default, deserialize_with = "nullable")]
    pub track_events: bool,
    /// Whether full feature events are sent for fallthrough evaluations.
    #[serde(default, deserialize_with = "nullable")]
    pub track_events_fallthrough: bool,
    /// Debug events are sent until this Unix time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_events_until_date: Option<u64>,
    /// A tombstone: the flag was deleted at this version.
    #[serde(default, deserialize_with = "nullable")]
    pub deleted: bool,
    /// Whether this flag is left out of summary events.
    #[serde(default, deserialize_with = "nullable")]
    pub exclude_from_summaries: bool,
    /// One in this many evaluation events is kept (0 and 1 keep all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_ratio: Option<u64>,
    /// Migration flag settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationSettings>,
}

/// Client-side availability of a flag.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientSideAvailability {
    /// Visible to mobile-key SDKs.
    #[serde(default, deserialize_with = "nullable")]
    pub using_mobile_key: bool,
    /// Visible to environment-id (JavaScript) SDKs.
    #[serde(default, deserialize_with = "nullable")]
    pub using_environment_id: bool,
}

/// Settings of a migration flag.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSettings {
    /// One in this many migration operations is consistency-checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_ratio: Option<u64>,
}

/// A prerequisite: flag `key` must be on and evaluate to `variation`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prerequisite {
    /// The prerequisite flag's key.
    #[serde(default, deserialize_with = "nullable")]
    pub key: String,
    /// The variation index it must return.
    #[serde(default, with = "variation_index")]
    pub variation: usize,
}

/// An individual target list: contexts of `context_kind` with these keys get `variation`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The context kind; empty means `user`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub context_kind: String,
    /// Context keys.
    #[serde(default, deserialize_with = "nullable")]
    pub values: Vec<String>,
    /// The variation index served to them.
    #[serde(default, with = "variation_index")]
    pub variation: usize,
}

/// A targeting rule: when all clauses match, serve a variation or a rollout.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagRule {
    /// A stable rule id, reported in `RULE_MATCH` reasons.
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    /// A fixed variation (LaunchDarkly keeps it inline in the rule object).
    #[serde(
        default,
        deserialize_with = "opt_variation_index::deserialize",
        serialize_with = "opt_variation_index::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub variation: Option<usize>,
    /// A percentage rollout, used when `variation` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// All must match (an empty list matches everything).
    #[serde(default, deserialize_with = "nullable")]
    pub clauses: Vec<Clause>,
    /// Whether full feature events are sent when this rule matches.
    #[serde(default, deserialize_with = "nullable")]
    pub track_events: bool,
}

impl FlagRule {
    /// The rule's outcome as a [`VariationOrRollout`].
    pub fn variation_or_rollout(&self) -> VariationOrRollout {
        VariationOrRollout {
            variation: self.variation,
            rollout: self.rollout.clone(),
        }
    }
}

/// A fixed variation or a percentage rollout (fallthrough and rules).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariationOrRollout {
    /// A fixed variation index.
    #[serde(
        default,
        deserialize_with = "opt_variation_index::deserialize",
        serialize_with = "opt_variation_index::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub variation: Option<usize>,
    /// A rollout, used when `variation` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// A percentage rollout or experiment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `rollout` or `experiment`.
    #[serde(default, deserialize_with = "nullable")]
    pub kind: RolloutKind,
    /// The context kind to bucket by; empty means `user`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub context_kind: String,
    /// Buckets, in order; weights are out of 100000.
    #[serde(default, deserialize_with = "nullable")]
    pub variations: Vec<WeightedVariation>,
    /// The attribute to bucket by (default `key`; experiments always use `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
    /// A seed that replaces the flag key and salt in the bucketing hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
}

/// The kind of a rollout. Unknown kinds are read as plain rollouts, as the SDKs do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RolloutKind {
    /// A plain percentage rollout.
    #[default]
    Rollout,
    /// An experiment: tracked buckets report `inExperiment`.
    Experiment,
}

impl Serialize for RolloutKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            RolloutKind::Rollout => "rollout",
            RolloutKind::Experiment => "experiment",
        })
    }
}

impl<'de> Deserialize<'de> for RolloutKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(if s == "experiment" {
            RolloutKind::Experiment
        } else {
            RolloutKind::Rollout
        })
    }
}

/// One bucket of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedVariation {
    /// The variation index served from this bucket.
    #[serde(default, with = "variation_index")]
    pub variation: usize,
    /// The bucket's width, out of 100000.
    #[serde(default, deserialize_with = "nullable")]
    pub weight: i64,
    /// An experiment bucket that is not tracked (`inExperiment` stays false).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub untracked: bool,
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Clause {
    /// The context kind the attribute is read from. When empty the kind is `user` and
    /// `attribute` is a plain attribute name, not a `/`-path.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub context_kind: String,
    /// The attribute name or reference.
    #[serde(default, deserialize_with = "nullable")]
    pub attribute: String,
    /// The operator.
    #[serde(default, deserialize_with = "nullable")]
    pub op: Operator,
    /// Values compared with the attribute; the clause matches when any matches.
    #[serde(default, deserialize_with = "nullable")]
    pub values: Vec<Value>,
    /// Inverts the result (but a missing attribute still does not match).
    #[serde(default, deserialize_with = "nullable")]
    pub negate: bool,
}

/// A clause operator. Unknown operators are kept and never match, as in LaunchDarkly's SDKs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Operator {
    /// Equal to one of the values (type-strict).
    #[default]
    In,
    /// String ends with.
    EndsWith,
    /// String starts with.
    StartsWith,
    /// Regular-expression match.
    Matches,
    /// String contains.
    Contains,
    /// Numeric `<`.
    LessThan,
    /// Numeric `<=`.
    LessThanOrEqual,
    /// Numeric `>`.
    GreaterThan,
    /// Numeric `>=`.
    GreaterThanOrEqual,
    /// Date before.
    Before,
    /// Date after.
    After,
    /// Semantic version equal.
    SemVerEqual,
    /// Semantic version less than.
    SemVerLessThan,
    /// Semantic version greater than.
    SemVerGreaterThan,
    /// Context is in one of the segments named by the values.
    SegmentMatch,
    /// An operator this version does not know; never matches.
    Unknown(String),
}

impl Operator {
    /// The operator's name as it appears in JSON.
    pub fn as_str(&self) -> &str {
        match self {
            Operator::In => "in",
            Operator::EndsWith => "endsWith",
            Operator::StartsWith => "startsWith",
            Operator::Matches => "matches",
            Operator::Contains => "contains",
            Operator::LessThan => "lessThan",
            Operator::LessThanOrEqual => "lessThanOrEqual",
            Operator::GreaterThan => "greaterThan",
            Operator::GreaterThanOrEqual => "greaterThanOrEqual",
            Operator::Before => "before",
            Operator::After => "after",
            Operator::SemVerEqual => "semVerEqual",
            Operator::SemVerLessThan => "semVerLessThan",
            Operator::SemVerGreaterThan => "semVerGreaterThan",
            Operator::SegmentMatch => "segmentMatch",
            Operator::Unknown(s) => s,
        }
    }

    /// Parses an operator name; unknown names give [`Operator::Unknown`].
    pub fn parse(s: &str) -> Operator {
        match s {
            "in" => Operator::In,
            "endsWith" => Operator::EndsWith,
            "startsWith" => Operator::StartsWith,
            "matches" => Operator::Matches,
            "contains" => Operator::Contains,
            "lessThan" => Operator::LessThan,
            "lessThanOrEqual" => Operator::LessThanOrEqual,
            "greaterThan" => Operator::GreaterThan,
            "greaterThanOrEqual" => Operator::GreaterThanOrEqual,
            "before" => Operator::Before,
            "after" => Operator::After,
            "semVerEqual" => Operator::SemVerEqual,
            "semVerLessThan" => Operator::SemVerLessThan,
            "semVerGreaterThan" => Operator::SemVerGreaterThan,
            "segmentMatch" => Operator::SegmentMatch,
            other => Operator::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Operator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Operator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OpVisitor;
        impl de::Visitor<'_> for OpVisitor {
            type Value = Operator;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Operator, E> {
                Ok(Operator::parse(v))
            }
        }
        d.deserialize_str(OpVisitor)
    }
}

/// A user segment (a reusable set of contexts).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// The segment key. A segment inside [`FlagData`] that lacks one takes its map key.
    #[serde(default, deserialize_with = "nullable")]
    pub key: String,
    /// Version; a store keeps the highest version it has seen.
    #[serde(default, deserialize_with = "nullable")]
    pub version: u64,
    /// User keys that are members.
    #[serde(default, deserialize_with = "nullable")]
    pub included: Vec<String>,
    /// User keys that are not members (checked after `included`).
    #[serde(default, deserialize_with = "nullable")]
    pub excluded: Vec<String>,
    /// Member keys of other context kinds.
    #[serde(default, deserialize_with = "nullable")]
    pub included_contexts: Vec<SegmentTarget>,
    /// Excluded keys of other context kinds.
    #[serde(default, deserialize_with = "nullable")]
    pub excluded_contexts: Vec<SegmentTarget>,
    /// Salt for rule weights.
    #[serde(default, deserialize_with = "nullable")]
    pub salt: String,
    /// Rules, any of which makes a context a member.
    #[serde(default, deserialize_with = "nullable")]
    pub rules: Vec<SegmentRule>,
    /// A big segment whose membership lives in a big-segment store.
    #[serde(default, deserialize_with = "nullable")]
    pub unbounded: bool,
    /// The context kind of a big segment's members (default `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unbounded_context_kind: Option<String>,
    /// The big segment's generation, part of its store reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// A tombstone: the segment was deleted at this version.
    #[serde(default, deserialize_with = "nullable")]
    pub deleted: bool,
}

/// Keys of one context kind listed in a segment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentTarget {
    /// The context kind; empty means `user`.
    #[serde(default, deserialize_with = "nullable")]
    pub context_kind: String,
    /// Context keys.
    #[serde(default, deserialize_with = "nullable")]
    pub values: Vec<String>,
}

/// A segment rule: a context matching all clauses (and within `weight`) is a member.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRule {
    /// A rule id.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    /// All must match.
    #[serde(default, deserialize_with = "nullable")]
    pub clauses: Vec<Clause>,
    /// Only this share (out of 100000) of matching contexts are members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// The attribute to bucket by (default `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
    /// The context kind to bucket by (default `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_context_kind: Option<String>,
}

/// All flags and segments of an environment: `{"flags":{...},"segments":{...}}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FlagData {
    /// Flags by key.
    #[serde(default, deserialize_with = "nullable")]
    pub flags: BTreeMap<String, Flag>,
    /// Segments by key.
    #[serde(default, deserialize_with = "nullable")]
    pub segments: BTreeMap<String, Segment>,
}

impl FlagData {
    /// Reads flag data from a JSON value; errors name the field path.
    pub fn from_json_value(value: Value) -> Result<FlagData, LoadError> {
        let mut data: FlagData = from_value_with_path(value)?;
        data.fill_keys();
        Ok(data)
    }

    /// Reads flag data from JSON text; errors name the field path (and line and column).
    pub fn from_json_str(text: &str) -> Result<FlagData, LoadError> {
        let mut data: FlagData = from_str_with_path(text)?;
        data.fill_keys();
        Ok(data)
    }

    /// Gives every flag and segment without a key its map key.
    fn fill_keys(&mut self) {
        for (k, f) in &mut self.flags {
            if f.key.is_empty() {
                f.key.clone_from(k);
            }
        }
        for (k, s) in &mut self.segments {
            if s.key.is_empty() {
                s.key.clone_from(k);
            }
        }
    }
}

impl Flag {
    /// Reads one flag from a JSON value; errors name the field path.
    pub fn from_json_value(value: Value) -> Result<Flag, LoadError> {
        from_value_with_path(value)
    }

    /// Reads one flag from JSON text; errors name the field path.
    pub fn from_json_str(text: &str) -> Result<Flag, LoadError> {
        from_str_with_path(text)
    }

    /// The keys of the flags this flag names as prerequisites, in order (repeats kept).
    pub fn prerequisite_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.prerequisites.iter().map(|p| p.key.as_str())
    }

    /// The keys of the segments this flag's rules match with `segmentMatch`, in order (repeats
    /// kept; values that are not strings name no segment and are skipped).
    pub fn segment_refs(&self) -> impl Iterator<Item = &str> + '_ {
        self.rules
            .iter()
            .flat_map(|rule| rule.clauses.iter())
            .flat_map(Clause::segment_refs)
    }

    /// The individual target lists in the order LaunchDarkly checks them, each as (context
    /// kind, keys, variation), the kind spelled out (`user` where it is empty).
    ///
    /// Without `contextTargets` these are the `targets`, all of kind `user`. With them, each
    /// `contextTargets` entry in turn, where a `user` entry without values stands for the first
    /// `targets` list of its variation (and is skipped when there is none).
    pub fn target_lists(&self) -> impl Iterator<Item = (&str, &[String], usize)> + '_ {
        let is_user = |kind: &str| kind.is_empty() || kind == DEFAULT_KIND;
        // At most one of the two parts yields anything.
        let legacy = self
            .targets
            .iter()
            .filter(|_| self.context_targets.is_empty())
            .map(|t| (DEFAULT_KIND, t.values.as_slice(), t.variation));
        let by_kind = self.context_targets.iter().filter_map(move |ct| {
            if !is_user(&ct.context_kind) {
                return Some((ct.context_kind.as_str(), ct.values.as_slice(), ct.variation));
            }
            if !ct.values.is_empty() {
                return Some((DEFAULT_KIND, ct.values.as_slice(), ct.variation));
            }
            self.targets
                .iter()
                .find(|t| t.variation == ct.variation)
                .map(|t| (DEFAULT_KIND, t.values.as_slice(), ct.variation))
        });
        legacy.chain(by_kind)
    }
}

impl Segment {
    /// Reads one segment from a JSON value; errors name the field path.
    pub fn from_json_value(value: Value) -> Result<Segment, LoadError> {
        from_value_with_path(value)
    }

    /// Reads one segment from JSON text; errors name the field path.
    pub fn from_json_str(text: &str) -> Result<Segment, LoadError> {
        from_str_with_path(text)
    }

    /// The keys of the segments this segment's rules match with `segmentMatch` (nested
    /// segments), in order (repeats kept).
    pub fn segment_refs(&self) -> impl Iterator<Item = &str> + '_ {
        self.rules
            .iter()
            .flat_map(|rule| rule.clauses.iter())
            .flat_map(Clause::segment_refs)
    }
}

impl Clause {
    /// The segment keys a `segmentMatch` clause names; nothing for any other operator.
    pub fn segment_refs(&self) -> impl Iterator<Item = &str> + '_ {
        let values: &[Value] = if self.op == Operator::SegmentMatch {
            &self.values
        } else {
            &[]
        };
        values.iter().filter_map(Value::as_str)
    }
}

fn from_value_with_path<T: DeserializeOwned>(value: Value) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(value).map_err(|e| LoadError::from_path_error(&e))
}

fn from_str_with_path<T: DeserializeOwned>(text: &str) -> Result<T, LoadError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T =
        serde_path_to_error::deserialize(&mut de).map_err(|e| LoadError::from_path_error(&e))?;
    de.end()
        .map_err(|e| LoadError::new(String::new(), e.to_string()))?;
    Ok(value)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Reads `null` as the type's default, as LaunchDarkly's SDKs do.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A variation index as it was written in the flag JSON: the index itself, or the negative
/// number a negative index was written as (see [`Flag`]). Messages about an index should show
/// this, so that `"variation": -1` is reported as `-1`, not as `18446744073709551615`.
pub fn written_variation_index(index: usize) -> i64 {
    // Two's complement is exactly how a negative index is held, so the cast restores it.
    i64::try_from(index.cast_signed()).unwrap_or(-1)
}

/// Stands for an index that fits no `usize` even in two's complement (only possible where
/// `usize` is narrower than 64 bits); out of range for every flag.
const UNREPRESENTABLE_INDEX: usize = usize::MAX;

struct IndexVisitor;

impl de::Visitor<'_> for IndexVisitor {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer variation index")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
        Ok(usize::try_from(v).unwrap_or(UNREPRESENTABLE_INDEX))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
        Ok(isize::try_from(v).map_or(UNREPRESENTABLE_INDEX, isize::cast_unsigned))
    }
}

fn write_index<S: Serializer>(v: usize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(written_variation_index(v))
}

mod variation_index {
    use super::*;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        Ok(opt_variation_index::deserialize(d)?.unwrap_or_default())
    }

    pub(super) fn serialize<S: Serializer>(v: &usize, s: S) -> Result<S::Ok, S::Error> {
        write_index(*v, s)
    }
}

mod opt_variation_index {
    use super::*;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        struct OptVisitor;
        impl<'de> de::Visitor<'de> for OptVisitor {
            type Value = Option<usize>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer variation index")
            }
            fn visit_none<E: de::Error>(self) -> Result<Option<usize>, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Option<usize>, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
                d.deserialize_i64(IndexVisitor).map(Some)
            }
        }
        d.deserialize_option(OptVisitor)
    }

    #[allow(clippy::ref_option)] // serde's `serialize_with` hands us `&Option<usize>`.
    pub(super) fn serialize<S: Serializer>(v: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(i) => write_index(*i, s),
            None => s.serialize_none(),
        }
    }
}
