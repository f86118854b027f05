//! The compiled form of flags and segments: everything evaluation needs, prepared once.
//!
//! Nothing here rejects data that LaunchDarkly's SDKs tolerate. A regex that does not compile, a
//! date or version that does not parse, or a value of the wrong type for its operator simply
//! never matches, so such values are dropped from the compiled operator. Things the SDKs report
//! as malformed when reached (an invalid attribute reference, a rollout without buckets) are
//! kept as explicit markers and reported at evaluation time, exactly when they are reached.

use crate::hash::StrMap;
use flags_core::context::DEFAULT_KIND;
use flags_core::{AttrRef, Clause, Flag, Operator, RolloutKind, Segment, Value};
use regex::Regex;

use crate::bucket::{BucketPrefix, below};
use crate::ops::{self, Timestamp, parse_semver, parse_timestamp, short_eq};

/// Up to this many strings are compared one by one; larger lists are hashed.
const SMALL_SET: usize = 8;

/// A compiled flag.
#[derive(Debug)]
pub(crate) struct CFlag {
    /// The result when it cannot depend on the context: the flag is off, or it has nothing but a
    /// fixed fallthrough.
    pub constant: Option<Constant>,
    /// The off variation ([`NO_VARIATION`] when the flag has none).
    pub off: u32,
    /// The flag is on and has no prerequisites, targets or rules: it serves its fallthrough,
    /// and its evaluation can reach no other flag or segment.
    pub only_fallthrough: bool,
    pub prerequisites: Box<[CPrereq]>,
    pub targets: Box<[TargetGroup]>,
    pub rules: Box<[CRule]>,
    pub fallthrough: Outcome,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Constant {
    Off,
    Fallthrough(u32),
}

/// How many attribute values one flag evaluation keeps (see [`CClause::slot`]).
pub(crate) const SLOTS: usize = 8;

/// A clause whose attribute value is not kept.
pub(crate) const NO_SLOT: u8 = u8::MAX;

/// Gives the clauses of a flag's rules on custom attributes a slot per distinct (kind,
/// attribute), for the first [`SLOTS`] such pairs.
fn assign_slots(rules: &mut [CRule]) {
    let mut seen: Vec<(Kind, Box<str>)> = Vec::new();
    for clause in rules.iter_mut().flat_map(|r| r.clauses.iter_mut()) {
        let ClauseAttr::Custom(name) = &clause.attr else {
            continue;
        };
        let at = seen
            .iter()
            .position(|(k, n)| *k == clause.kind && n == name)
            .or_else(|| {
                (seen.len() < SLOTS).then(|| {
                    seen.push((clause.kind.clone(), name.clone()));
                    seen.len() - 1
                })
            });
        if let Some(at) = at {
            clause.slot = u8::try_from(at).unwrap_or(NO_SLOT);
        }
    }
}

/// A variation index that names no variation: serve no value (the caller's default).
pub(crate) const NO_VARIATION: u32 = u32::MAX;

/// A variation index as compiled. Indexes are checked against the variations when served, so an
/// index too large for `u32` becomes one that is out of range for any flag, never
/// [`NO_VARIATION`].
pub(crate) fn variation_index(v: usize) -> u32 {
    u32::try_from(v).map_or(NO_VARIATION - 1, |v| v.min(NO_VARIATION - 1))
}

#[derive(Debug)]
pub(crate) struct CPrereq {
    pub key: Box<str>,
    pub variation: usize,
}

/// Individual targets of one context kind: key → (position of its target list, variation).
/// Keeping the position lets a multi-kind context get the first matching list, as LaunchDarkly
/// checks lists in order.
#[derive(Debug)]
pub(crate) struct TargetGroup {
    pub kind: Kind,
    pub keys: StrMap<(u32, u32)>,
}

#[derive(Debug)]
pub(crate) struct CRule {
    pub clauses: Box<[CClause]>,
    pub outcome: Outcome,
}

/// What a rule or the fallthrough serves.
#[derive(Debug)]
pub(crate) enum Outcome {
    Fixed(u32),
    Rollout(CRollout),
    /// Neither a variation nor a rollout with buckets: malformed when reached.
    Malformed,
}

#[derive(Debug)]
pub(crate) struct CRollout {
    pub experiment: bool,
    pub kind: Kind,
    /// `None` when the reference is invalid (malformed when reached).
    pub bucket_by: Option<AttrRef>,
    /// `bucket_by` is the context key, the usual case, read without an attribute lookup.
    pub by_key: bool,
    /// `kind` is `user`.
    pub user: bool,
    /// `"{flag key}.{salt}."`, or `"{seed}."` when the rollout has a seed.
    pub prefix: BucketPrefix,
    /// (variation, bound, untracked): the bucket's cumulative upper limit, accumulated in f32
    /// exactly as LaunchDarkly does, as a bound on the bucketing hash (see
    /// [`crate::bucket::below`]).
    pub buckets: Box<[(u32, u64, bool)]>,
}

#[derive(Debug)]
pub(crate) struct CClause {
    pub kind: Kind,
    /// `kind` is `user`, the kind almost every clause tests, whose context the evaluation looks
    /// up once rather than per clause.
    pub user: bool,
    /// For a clause of a flag rule on a custom attribute: where one evaluation of the flag keeps
    /// the attribute's value once it has looked it up, so the flag's other clauses on the same
    /// attribute do not look again ([`NO_SLOT`] for none).
    pub slot: u8,
    pub attr: ClauseAttr,
    pub negate: bool,
    pub op: COp,
}

#[derive(Debug)]
#[repr(u8)]
pub(crate) enum ClauseAttr {
    /// A top-level attribute other than the built-ins (`kind`, `key`, `name`, `anonymous`): the
    /// common case, looked up directly among the context's custom attributes.
    Custom(Box<str>),
    /// A built-in attribute or a path into nested objects (boxed: rare, and large).
    Ref(Box<AttrRef>),
    /// A `segmentMatch` clause: the attribute is not consulted.
    Segment,
    /// The `kind` attribute: matches against every kind of the context.
    Kind,
    /// An invalid or empty reference: malformed when reached.
    Invalid,
}

/// A compiled operator. The explicit tag makes dispatch one byte compare.
#[derive(Debug)]
#[repr(u8)]
pub(crate) enum COp {
    In(InSet),
    StartsWith(Box<[Box<str>]>),
    EndsWith(Box<[Box<str>]>),
    Contains(Box<[Box<str>]>),
    Matches(Box<[Regex]>),
    Numeric(ops::Cmp, Box<[f64]>),
    Date(ops::Cmp, Box<[Timestamp]>),
    SemVer(ops::Cmp, Box<[semver::Version]>),
    Segment(Box<[Box<str>]>),
    /// An unknown operator: never matches (before negation).
    Never,
}

/// The values of an `in` clause, by JSON type (`in` is type-strict; numbers compare as f64).
#[derive(Debug, Default)]
pub(crate) struct InSet {
    pub strings: StrSet,
    pub has_true: bool,
    pub has_false: bool,
    pub has_null: bool,
    /// Numbers, arrays and objects: rare in `in` clauses, so kept apart to keep clauses small.
    pub rest: Option<Box<InRest>>,
}

/// The values of an `in` clause other than strings, booleans and null.
#[derive(Debug, Default)]
pub(crate) struct InRest {
    pub numbers: Box<[f64]>,
    /// Arrays and objects, compared structurally.
    pub others: Box<[Value]>,
}

/// A set of strings: a short list compared directly, or a hash set.
#[derive(Debug)]
pub(crate) enum StrSet {
    Small(SmallSet),
    Large(StrMap<()>),
}

/// A few strings. Those of up to 8 bytes are held packed into a word with their length (see
/// [`pack`]), so testing one is two integer compares with nothing to dereference; longer ones
/// are compared as strings.
#[derive(Debug, Default)]
pub(crate) struct SmallSet {
    short: Box<[(u64, usize)]>,
    long: Box<[Box<str>]>,
}

/// Up to 8 bytes as one word: together with the length, different strings give different
/// words. Overlapping loads from both ends, so no byte-by-byte loop and no `memcpy`.
#[inline(always)]
fn pack(s: &[u8]) -> u64 {
    let n = s.len();
    let word4 = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u64::from(u32::from_le_bytes(w))
    };
    match n {
        0 => 0,
        1..=3 => u64::from(s[0]) | (u64::from(s[n / 2]) << 8) | (u64::from(s[n - 1]) << 16),
        _ => word4(0) | (word4(n - 4) << 32),
    }
}

impl Default for StrSet {
    fn default() -> Self {
        StrSet::Small(SmallSet::default())
    }
}

impl StrSet {
    fn new(items: Vec<Box<str>>) -> StrSet {
        if items.len() <= SMALL_SET {
            let (short, long): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| i.len() <= 8);
            StrSet::Small(SmallSet {
                short: short
                    .iter()
                    .map(|i| (pack(i.as_bytes()), i.len()))
                    .collect(),
                long: long.into_boxed_slice(),
            })
        } else {
            StrSet::Large(items.into_iter().map(|k| (k, ())).collect())
        }
    }

    #[inline(always)]
    pub fn contains(&self, s: &str) -> bool {
        match self {
            StrSet::Small(set) => {
                let n = s.len();
                if n <= 8 {
                    let w = pack(s.as_bytes());
                    for &(iw, il) in set.short.iter() {
                        if il == n && iw == w {
                            return true;
                        }
                    }
                    false
                } else {
                    long_contains(&set.long, s)
                }
            }
            StrSet::Large(set) => large_contains(set, s),
        }
    }
}

#[inline(never)]
fn long_contains(items: &[Box<str>], s: &str) -> bool {
    items.iter().any(|i| short_eq(i.as_bytes(), s.as_bytes()))
}

#[inline(never)]
fn large_contains(set: &StrMap<()>, s: &str) -> bool {
    set.contains_key(s)
}

/// A compiled segment.
#[derive(Debug)]
pub(crate) struct CSegment {
    pub included: StrSet,
    pub excluded: StrSet,
    pub included_contexts: Box<[(Kind, StrSet)]>,
    pub excluded_contexts: Box<[(Kind, StrSet)]>,
    pub rules: Box<[CSegmentRule]>,
    /// For big segments: the member kind and the store reference `{key}.g{generation}`
    /// (`None` reference when the generation is unknown).
    pub big: Option<(Box<str>, Option<Box<str>>)>,
}

#[derive(Debug)]
pub(crate) struct CSegmentRule {
    pub clauses: Box<[CClause]>,
    /// `None`: every context matching the clauses is a member. Otherwise the weight as a bound
    /// on the bucketing hash (see [`crate::bucket::below`]).
    pub weight: Option<u64>,
    pub kind: Kind,
    /// `None` when the reference is invalid (malformed when reached).
    pub bucket_by: Option<AttrRef>,
    /// `bucket_by` is the context key.
    pub by_key: bool,
    /// `"{segment key}.{salt}."`.
    pub prefix: BucketPrefix,
}

impl CFlag {
    pub fn compile(flag: &Flag) -> CFlag {
        let mut c = CFlag {
            constant: None,
            off: flag.off_variation.map_or(NO_VARIATION, variation_index),
            only_fallthrough: false,
            prerequisites: flag
                .prerequisites
                .iter()
                .map(|p| CPrereq {
                    key: p.key.as_str().into(),
                    variation: p.variation,
                })
                .collect(),
            targets: compile_targets(flag),
            rules: flag
                .rules
                .iter()
                .map(|r| CRule {
                    clauses: r.clauses.iter().map(compile_clause).collect(),
                    outcome: compile_outcome(flag, r.variation, r.rollout.as_ref()),
                })
                .collect(),
            fallthrough: compile_outcome(
                flag,
                flag.fallthrough.variation,
                flag.fallthrough.rollout.as_ref(),
            ),
        };
        assign_slots(&mut c.rules);
        c.only_fallthrough =
            flag.on && c.prerequisites.is_empty() && c.targets.is_empty() && c.rules.is_empty();
        c.constant = if !flag.on {
            Some(Constant::Off)
        } else if let (true, true, true, Outcome::Fixed(v)) = (
            c.prerequisites.is_empty(),
            c.targets.is_empty(),
            c.rules.is_empty(),
            &c.fallthrough,
        ) {
            Some(Constant::Fallthrough(*v))
        } else {
            None
        };
        c
    }
}

/// A context kind as compiled: `user`, the kind nearly everything names, takes no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Other(Box<str>),
}

impl Kind {
    /// The kind named by `kind`, the default kind when empty.
    fn new(kind: &str) -> Kind {
        match kind_or_default(kind) {
            DEFAULT_KIND => Kind::User,
            other => Kind::Other(other.into()),
        }
    }
}

impl std::ops::Deref for Kind {
    type Target = str;

    #[inline(always)]
    fn deref(&self) -> &str {
        match self {
            Kind::User => DEFAULT_KIND,
            Kind::Other(kind) => kind,
        }
    }
}

fn kind_or_default(kind: &str) -> &str {
    if kind.is_empty() { DEFAULT_KIND } else { kind }
}

fn compile_targets(flag: &Flag) -> Box<[TargetGroup]> {
    let mut groups: Vec<TargetGroup> = Vec::new();
    for (order, (kind, values, variation)) in flag.target_lists().enumerate() {
        let order = u32::try_from(order).unwrap_or(u32::MAX);
        let group = match groups.iter_mut().position(|g| &*g.kind == kind) {
            Some(i) => &mut groups[i],
            None => {
                groups.push(TargetGroup {
                    kind: Kind::new(kind),
                    keys: StrMap::default(),
                });
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        for v in values {
            // The first list that names a key wins, as lists are checked in order.
            group
                .keys
                .insert_if_absent(v.as_str().into(), (order, variation_index(variation)));
        }
    }
    groups.retain(|g| !g.keys.is_empty());
    for group in &mut groups {
        group.keys.shrink_to_fit();
    }
    groups.into_boxed_slice()
}

fn compile_outcome(
    flag: &Flag,
    variation: Option<usize>,
    rollout: Option<&flags_core::Rollout>,
) -> Outcome {
    if let Some(v) = variation {
        return Outcome::Fixed(variation_index(v));
    }
    let Some(r) = rollout else {
        return Outcome::Malformed;
    };
    if r.variations.is_empty() {
        return Outcome::Malformed;
    }
    let experiment = r.kind == RolloutKind::Experiment;
    let mut sum = 0f32;
    let buckets = r
        .variations
        .iter()
        .map(|wv| {
            // Accumulated in f32 exactly as LaunchDarkly does, so boundaries agree bit for bit.
            sum += wv.weight as f32 / 100_000.0;
            (variation_index(wv.variation), below(sum), wv.untracked)
        })
        .collect();
    let bucket_by = if experiment {
        AttrRef::from_literal("key").ok()
    } else {
        bucket_by_ref(r.bucket_by.as_deref(), &r.context_kind)
    };
    Outcome::Rollout(CRollout {
        experiment,
        kind: Kind::new(&r.context_kind),
        by_key: is_key(bucket_by.as_ref()),
        user: kind_or_default(&r.context_kind) == DEFAULT_KIND,
        bucket_by,
        prefix: BucketPrefix::new(&flag.key, &flag.salt, r.seed),
        buckets,
    })
}

/// Whether a bucketing reference names the context key.
fn is_key(attr: Option<&AttrRef>) -> bool {
    attr.is_some_and(|a| matches!(a.components(), [c] if c == "key"))
}

/// `bucketBy` is a plain attribute name when no context kind is given, and an attribute
/// reference otherwise; absent means `key`.
fn bucket_by_ref(bucket_by: Option<&str>, context_kind: &str) -> Option<AttrRef> {
    match bucket_by {
        None | Some("") => AttrRef::from_literal("key").ok(),
        Some(b) if context_kind.is_empty() => AttrRef::from_literal(b).ok(),
        Some(b) => AttrRef::parse(b).ok(),
    }
}

pub(crate) fn compile_clause(c: &Clause) -> CClause {
    // Without a context kind the attribute is a plain name (the pre-context form); with one it
    // is an attribute reference.
    let attr = if c.op == Operator::SegmentMatch {
        ClauseAttr::Segment
    } else if c.attribute == "kind" {
        ClauseAttr::Kind
    } else {
        let parsed = if c.context_kind.is_empty() {
            AttrRef::from_literal(&c.attribute)
        } else {
            AttrRef::parse(&c.attribute)
        };
        match parsed {
            Ok(r) => match r.components() {
                [name] if !AttrRef::is_builtin_name(name) => {
                    ClauseAttr::Custom(name.as_str().into())
                }
                _ => ClauseAttr::Ref(Box::new(r)),
            },
            Err(_) => ClauseAttr::Invalid,
        }
    };
    let kind = kind_or_default(&c.context_kind);
    CClause {
        kind: Kind::new(kind),
        user: kind == DEFAULT_KIND,
        slot: NO_SLOT,
        attr,
        negate: c.negate,
        op: compile_op(&c.op, &c.values),
    }
}

fn strings(values: &[Value]) -> Box<[Box<str>]> {
    values
        .iter()
        .filter_map(Value::as_str)
        .map(Into::into)
        .collect()
}

fn compile_op(op: &Operator, values: &[Value]) -> COp {
    match op {
        Operator::In => COp::In(compile_in(values)),
        Operator::StartsWith => COp::StartsWith(strings(values)),
        Operator::EndsWith => COp::EndsWith(strings(values)),
        Operator::Contains => COp::Contains(strings(values)),
        Operator::Matches => COp::Matches(
            values
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|s| compile_regex(s).ok())
                .collect(),
        ),
        Operator::LessThan => numeric(ops::Cmp::Lt, values),
        Operator::LessThanOrEqual => numeric(ops::Cmp::Le, values),
        Operator::GreaterThan => numeric(ops::Cmp::Gt, values),
        Operator::GreaterThanOrEqual => numeric(ops::Cmp::Ge, values),
        Operator::Before => COp::Date(
            ops::Cmp::Lt,
            values.iter().filter_map(parse_timestamp).collect(),
        ),
        Operator::After => COp::Date(
            ops::Cmp::Gt,
            values.iter().filter_map(parse_timestamp).collect(),
        ),
        Operator::SemVerEqual => semver_op(ops::Cmp::Eq, values),
        Operator::SemVerLessThan => semver_op(ops::Cmp::Lt, values),
        Operator::SemVerGreaterThan => semver_op(ops::Cmp::Gt, values),
        Operator::SegmentMatch => COp::Segment(strings(values)),
        Operator::Unknown(_) => COp::Never,
    }
}

/// Compiles the pattern of a `matches` clause; [`crate::check_clause_value`] uses it too, so
/// what it reports as unusable is exactly what evaluation drops.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(pattern)
}

fn numeric(cmp: ops::Cmp, values: &[Value]) -> COp {
    COp::Numeric(cmp, values.iter().filter_map(Value::as_f64).collect())
}

fn semver_op(cmp: ops::Cmp, values: &[Value]) -> COp {
    COp::SemVer(
        cmp,
        values
            .iter()
            .filter_map(Value::as_str)
            .filter_map(parse_semver)
            .collect(),
    )
}

fn compile_in(values: &[Value]) -> InSet {
    let mut set = InSet::default();
    let mut strs = Vec::new();
    let mut nums = Vec::new();
    let mut others = Vec::new();
    for v in values {
        match v {
            Value::String(s) => strs.push(s.as_str().into()),
            Value::Number(n) => nums.extend(n.as_f64()),
            Value::Bool(true) => set.has_true = true,
            Value::Bool(false) => set.has_false = true,
            Value::Null => set.has_null = true,
            other => others.push(other.clone()),
        }
    }
    set.strings = StrSet::new(strs);
    if !nums.is_empty() || !others.is_empty() {
        set.rest = Some(Box::new(InRest {
            numbers: nums.into_boxed_slice(),
            others: others.into_boxed_slice(),
        }));
    }
    set
}

impl CSegment {
    pub fn compile(s: &Segment) -> CSegment {
        let targets = |list: &[flags_core::SegmentTarget]| -> Box<[(Kind, StrSet)]> {
            list.iter()
                .map(|t| {
                    let keys = t.values.iter().map(|v| v.as_str().into()).collect();
                    (Kind::new(&t.context_kind), StrSet::new(keys))
                })
                .collect()
        };
        let big = s.unbounded.then(|| {
            let kind: Box<str> =
                kind_or_default(s.unbounded_context_kind.as_deref().unwrap_or("")).into();
            let reference = s
                .generation
                .map(|g| crate::big_segments::big_segment_ref(&s.key, g).into_boxed_str());
            (kind, reference)
        });
        CSegment {
            included: StrSet::new(s.included.iter().map(|k| k.as_str().into()).collect()),
            excluded: StrSet::new(s.excluded.iter().map(|k| k.as_str().into()).collect()),
            included_contexts: targets(&s.included_contexts),
            excluded_contexts: targets(&s.excluded_contexts),
            rules: s
                .rules
                .iter()
                .map(|r| {
                    let kind = r.rollout_context_kind.as_deref().unwrap_or("");
                    CSegmentRule {
                        clauses: r.clauses.iter().map(compile_clause).collect(),
                        weight: r.weight.map(|w| below(w as f32 / 100_000.0)),
                        kind: Kind::new(kind),
                        bucket_by: bucket_by_ref(r.bucket_by.as_deref(), kind),
                        by_key: is_key(bucket_by_ref(r.bucket_by.as_deref(), kind).as_ref()),
                        prefix: BucketPrefix::new(&s.key, &s.salt, None),
                    }
                })
                .collect(),
            big,
        }
    }
}
