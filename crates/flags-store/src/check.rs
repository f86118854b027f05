//! The checks of flag data, written once for every caller: what `flagd validate` and a file
//! reload report about flag files, and what every store runs before it writes a flag or
//! segment. The same problem gets the same field path and message wherever it is found.
//!
//! Each check reports a [`Finding`]: which [`Check`] found it, the field path inside the item
//! (`rules[0].clauses[1].values[0]`) and the message. How bad a finding is depends on what the
//! data is for ([`Purpose`]), and [`Check::severity`] is the one table of it:
//!
//! | check                               | [`Purpose::Write`]          | [`Purpose::File`] |
//! |-------------------------------------|-----------------------------|-------------------|
//! | refusing (most of them)             | error: the write is refused | warning           |
//! | advisory ([`Check::is_advisory`])   | warning                     | warning           |
//!
//! The two purposes differ deliberately. A store never stores what it cannot stand behind, while a
//! flag file loads whatever LaunchDarkly's SDKs load (evaluation tolerates all of it), so a file
//! that loaded before these checks existed still loads; only errors of the model itself (a field
//! of the wrong type) stop a file, and those are not checks here.
//!
//! The entry points:
//! - [`flag`] and [`segment`]: one item on its own (key, shape, variation indexes, operators,
//!   context kinds, clause values).
//! - [`document`]: the text of an item's JSON document as written, unknown fields included
//!   (what a store keeps as it is).
//! - [`ReferenceCheck`]: what an item names (prerequisites, segments) and the cycles it closes,
//!   against the other items, with no I/O of its own, so a database can answer it inside its
//!   write transaction.
//! - [`data`]: all of the above for a whole set of flags and segments, as flag files hold them.
//!
//! Checks that depend on other items are all refusing, so the warnings of a write depend on the
//! written document alone ([`crate::StoredFlag::warnings`]).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use flags_core::context::validate_kind;
use flags_core::{
    Clause, Flag, FlagData, ItemKind, Operator, Problem, Rollout, Segment, Severity,
    written_variation_index,
};
use flags_eval::check_clause_value;
use serde_json::Value;

use crate::{Dependent, StoreError};

pub use crate::fields::{unknown_flag_fields, unknown_segment_fields};

/// What checked data is for, which decides how bad a finding is ([`Check::severity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// Flag files, served in file mode and checked by `flagd validate`: every finding is a
    /// warning, and the files load as LaunchDarkly's SDKs would load them.
    File,
    /// A write to a store: a refusing finding refuses the write; advisory ones are warnings
    /// that the write answers with.
    Write,
}

/// Which check found a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// A flag, segment or environment key that is empty, longer than [`MAX_KEY_LEN`] bytes,
    /// outside the key alphabet (letters, digits, `.`, `_`, `-`), or `.` or `..`.
    Key,
    /// A NUL character in a string or field name of a document. LaunchDarkly's SDKs read it,
    /// but PostgreSQL keeps it in neither `text` nor `jsonb`, so no store takes it.
    Nul,
    /// A flag without variations: it can serve nothing but its callers' defaults. Advisory.
    NoVariations,
    /// A field of a document that the flag or segment model does not have, so reading the
    /// document drops it: usually a misspelling. Advisory; see [`unknown_flag_fields`].
    UnknownField,
    /// A variation index of the flag that is negative or names no variation it has.
    VariationIndex,
    /// A flag that is on without a fallthrough variation or rollout.
    Fallthrough,
    /// A flag that is off without a fallthrough variation or rollout: it cannot be turned on as
    /// it is. Advisory.
    FallthroughWhenOff,
    /// A rule without a variation or rollout.
    RuleOutcome,
    /// A rollout without variations.
    EmptyRollout,
    /// A negative rollout weight.
    NegativeWeight,
    /// Rollout weights that do not add up to 100000: contexts in the gap get the last bucket's
    /// variation. Advisory.
    WeightSum,
    /// An invalid context kind (of a target, rollout, clause or segment target).
    ContextKind,
    /// A prerequisite without a flag key.
    PrerequisiteKey,
    /// A segment rule weight outside 0 to 100000.
    SegmentRuleWeight,
    /// A clause operator flagd does not know; the clause never matches.
    UnknownOperator,
    /// A `segmentMatch` value that is not a segment key (a string).
    SegmentKeyType,
    /// A clause value that never matches under its operator: an invalid regular expression,
    /// date or semantic version ([`flags_eval::check_clause_value`]). Advisory: LaunchDarkly's
    /// SDKs tolerate it.
    ClauseValue,
    /// A prerequisite naming a flag that does not exist (or is archived).
    UnknownFlag,
    /// A prerequisite naming a variation its flag does not have.
    PrerequisiteVariation,
    /// A `segmentMatch` naming a segment that does not exist (or is archived).
    UnknownSegment,
    /// Prerequisites that lead back to where they start.
    PrerequisiteCycle,
    /// `segmentMatch` clauses of segments that lead back to where they start.
    SegmentCycle,
}

impl Check {
    /// How bad a finding of this check is for data meant for `purpose`.
    pub fn severity(self, purpose: Purpose) -> Severity {
        match purpose {
            // Files load what they always loaded; see the module documentation.
            Purpose::File => Severity::Warning,
            Purpose::Write if self.is_advisory() => Severity::Warning,
            Purpose::Write => Severity::Error,
        }
    }

    /// Whether the check only advises (a warning for every purpose) rather than refuses a
    /// write.
    pub fn is_advisory(self) -> bool {
        matches!(
            self,
            Check::NoVariations
                | Check::UnknownField
                | Check::FallthroughWhenOff
                | Check::WeightSum
                | Check::ClauseValue
        )
    }

    /// Whether the check depends on other items ([`ReferenceCheck`]); a store refuses such a
    /// write as [`StoreError::Unresolved`] rather than [`StoreError::Invalid`].
    pub fn is_reference(self) -> bool {
        matches!(
            self,
            Check::UnknownFlag
                | Check::PrerequisiteVariation
                | Check::UnknownSegment
                | Check::PrerequisiteCycle
                | Check::SegmentCycle
        )
    }
}

/// One problem a check found in one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check that found it.
    pub check: Check,
    /// The field path inside the item (`rules[0].clauses[1].values[0]`), empty for the item as
    /// a whole.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl Finding {
    fn new(check: Check, path: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            check,
            path: path.into(),
            message: message.into(),
        }
    }

    /// How bad it is for data meant for `purpose`.
    pub fn severity(&self, purpose: Purpose) -> Severity {
        self.check.severity(purpose)
    }

    /// The finding as a [`Problem`] of the item itself (its path as it is).
    pub fn to_problem(&self, purpose: Purpose, file: Option<&Path>) -> Problem {
        Problem::new(self.severity(purpose), file, &self.path, &self.message)
    }

    /// The store's error for a write it refuses: [`StoreError::Unresolved`] for checks that
    /// depend on other items, [`StoreError::Invalid`] for the others.
    pub fn into_store_error(self) -> StoreError {
        if !self.check.is_reference() {
            StoreError::invalid(self.path, self.message)
        } else if self.path.is_empty() {
            StoreError::unresolved(self.message)
        } else {
            StoreError::unresolved(format!("{}: {}", self.path, self.message))
        }
    }
}

/// What a write makes of its findings: the first that refuses it, as the store's error, or else
/// the warnings.
pub fn for_write(findings: Vec<Finding>) -> Result<Vec<Finding>, StoreError> {
    if let Some(i) = findings
        .iter()
        .position(|f| f.severity(Purpose::Write) == Severity::Error)
    {
        let mut findings = findings;
        return Err(findings.swap_remove(i).into_store_error());
    }
    Ok(findings)
}

/// A finding of one item of a set ([`data`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFinding {
    /// Flag or segment.
    pub kind: ItemKind,
    /// Its key.
    pub key: String,
    /// The finding, with its path inside the item.
    pub finding: Finding,
}

impl ItemFinding {
    /// The path in a flag file: `flags.KEY.PATH` or `segments.KEY.PATH`.
    pub fn path(&self) -> String {
        let section = self.kind.section();
        if self.finding.path.is_empty() {
            format!("{section}.{}", self.key)
        } else {
            format!("{section}.{}.{}", self.key, self.finding.path)
        }
    }

    /// The finding as a [`Problem`], located by [`ItemFinding::path`] and `file`.
    pub fn to_problem(&self, purpose: Purpose, file: Option<&Path>) -> Problem {
        Problem::new(
            self.finding.severity(purpose),
            file,
            self.path(),
            &self.finding.message,
        )
    }
}

/// The longest key of an environment, flag or segment. Keys appear in URLs and in change
/// notifications, which databases limit in size.
pub const MAX_KEY_LEN: usize = 256;

/// Checks an environment, flag or segment key (`what` names which, for the message): 1 to
/// [`MAX_KEY_LEN`] bytes of letters, digits, `.`, `_` and `-` (LaunchDarkly's key alphabet,
/// safe in URL paths unescaped), and neither `.` nor `..`, which URL paths resolve away. The
/// finding's path is `key`.
pub fn key(what: &str, key: &str) -> Option<Finding> {
    let why = if key.is_empty() {
        "must not be empty"
    } else if key.len() > MAX_KEY_LEN {
        "is longer than 256 characters"
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "may only hold letters, digits, '.', '_' and '-'"
    } else if key == "." || key == ".." {
        "cannot be used: URL paths treat \".\" and \"..\" as steps, not names"
    } else {
        return None;
    };
    Some(Finding::new(
        Check::Key,
        "key",
        format!("{what} key {key:?} {why}"),
    ))
}

/// What is wrong with text that holds NUL.
const NUL_MESSAGE: &str = "holds a NUL character (\\u0000), which cannot be stored";

/// Checks text that a store keeps or looks up as it is (a name, a context key): anything but
/// NUL ([`Check::Nul`]). The finding's path is `path`.
pub fn text(path: &str, text: &str) -> Option<Finding> {
    text.contains('\0')
        .then(|| Finding::new(Check::Nul, path, NUL_MESSAGE))
}

/// Every NUL character in the strings and field names of an item's JSON document, in document
/// order, each at the path of the value that holds it (`variations[0]`, `_meta.note`). The
/// document's own `key` is left to [`key`], which refuses more than NUL.
///
/// [`flag`] and [`segment`] see only the model, which drops the fields it does not know; a store
/// keeps the document as written, so this walks the document itself.
pub fn document(doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    match doc {
        Value::Object(map) => {
            for (field, value) in map {
                if field != "key" || !value.is_string() {
                    text_of(&mut out, field_path("", field), field, value);
                }
            }
        }
        other => text_of(&mut out, String::new(), "", other),
    }
    out
}

/// The NUL findings of `value` at `path`, whose field name is `field` (empty for array
/// elements and the whole document).
fn text_of(out: &mut Vec<Finding>, path: String, field: &str, value: &Value) {
    if field.contains('\0') {
        out.push(Finding::new(
            Check::Nul,
            path.clone(),
            format!("the field name {NUL_MESSAGE}"),
        ));
    }
    match value {
        Value::String(text) if text.contains('\0') => {
            out.push(Finding::new(Check::Nul, path, NUL_MESSAGE));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                text_of(out, format!("{path}[{i}]"), "", item);
            }
        }
        Value::Object(map) => {
            for (name, item) in map {
                text_of(out, field_path(&path, name), name, item);
            }
        }
        _ => {}
    }
}

/// `path.field`, with a NUL in the name written as JSON writes it, so the path stays text.
fn field_path(path: &str, field: &str) -> String {
    let field = field.replace('\0', "\\u0000");
    if path.is_empty() {
        field
    } else {
        format!("{path}.{field}")
    }
}

/// Every finding of a flag on its own, in document order as far as a refusing write goes: the
/// first refusing finding is the one a store reports.
pub fn flag(flag: &Flag) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(key("flag", &flag.key));
    let n = flag.variations.len();
    if n == 0 {
        out.push(Finding::new(
            Check::NoVariations,
            "variations",
            "the flag has no variations",
        ));
    }
    if let Some(off) = flag.off_variation {
        index(&mut out, "offVariation".to_owned(), off, n);
    }
    match (&flag.fallthrough.variation, &flag.fallthrough.rollout) {
        (Some(v), _) => index(&mut out, "fallthrough.variation".to_owned(), *v, n),
        (None, Some(rollout)) => rollout_of(&mut out, "fallthrough.rollout", rollout, n),
        (None, None) if flag.on => out.push(Finding::new(
            Check::Fallthrough,
            "fallthrough",
            "a flag that is on needs a fallthrough variation or rollout",
        )),
        (None, None) => out.push(Finding::new(
            Check::FallthroughWhenOff,
            "fallthrough",
            "a flag needs a fallthrough variation or rollout before it is turned on",
        )),
    }
    for (i, target) in flag.targets.iter().enumerate() {
        index(
            &mut out,
            format!("targets[{i}].variation"),
            target.variation,
            n,
        );
    }
    for (i, target) in flag.context_targets.iter().enumerate() {
        index(
            &mut out,
            format!("contextTargets[{i}].variation"),
            target.variation,
            n,
        );
        context_kind(
            &mut out,
            format!("contextTargets[{i}].contextKind"),
            &target.context_kind,
        );
    }
    for (i, prereq) in flag.prerequisites.iter().enumerate() {
        if prereq.key.is_empty() {
            out.push(Finding::new(
                Check::PrerequisiteKey,
                format!("prerequisites[{i}].key"),
                "must not be empty",
            ));
        }
        if written_variation_index(prereq.variation) < 0 {
            out.push(negative_index(format!("prerequisites[{i}].variation")));
        }
    }
    for (i, rule) in flag.rules.iter().enumerate() {
        match (&rule.variation, &rule.rollout) {
            (Some(v), _) => index(&mut out, format!("rules[{i}].variation"), *v, n),
            (None, Some(r)) => rollout_of(&mut out, &format!("rules[{i}].rollout"), r, n),
            (None, None) => out.push(Finding::new(
                Check::RuleOutcome,
                format!("rules[{i}]"),
                "a rule needs a variation or a rollout",
            )),
        }
        clauses(&mut out, &format!("rules[{i}]"), &rule.clauses);
    }
    out
}

/// Every finding of a segment on its own; see [`flag`].
pub fn segment(segment: &Segment) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(key("segment", &segment.key));
    for (field, targets) in [
        ("includedContexts", &segment.included_contexts),
        ("excludedContexts", &segment.excluded_contexts),
    ] {
        for (i, target) in targets.iter().enumerate() {
            context_kind(
                &mut out,
                format!("{field}[{i}].contextKind"),
                &target.context_kind,
            );
        }
    }
    for (i, rule) in segment.rules.iter().enumerate() {
        if let Some(weight) = rule.weight
            && !(0..=100_000).contains(&weight)
        {
            out.push(Finding::new(
                Check::SegmentRuleWeight,
                format!("rules[{i}].weight"),
                "must be between 0 and 100000",
            ));
        }
        clauses(&mut out, &format!("rules[{i}]"), &rule.clauses);
    }
    out
}

/// Every finding of a whole set of flags and segments, as flag files hold them: each item's
/// own findings, then what its references find, item by item in key order (flags first); a
/// cycle is reported once, by the first of its items, after all the rest.
pub fn data(data: &FlagData) -> Vec<ItemFinding> {
    let mut set = SetCheck::default();
    for flag in data.flags.values() {
        set.add_flag(flag);
    }
    for segment in data.segments.values() {
        set.add_segment(segment);
    }
    set.finish(
        |key| data.flags.get(key).map(Cow::Borrowed),
        |key| data.segments.get(key).map(Cow::Borrowed),
    )
}

/// [`data`] for a set whose items arrive one at a time and need not stay in memory together:
/// add each item (flags first, each kind in key order), then [`SetCheck::finish`] answers the
/// references from wherever the set ends up, a compiled snapshot say. Only the items that name
/// others are remembered in between, and of those only what their references need.
#[derive(Debug, Default)]
pub struct SetCheck {
    items: Vec<Pending>,
}

#[derive(Debug)]
struct Pending {
    kind: ItemKind,
    key: String,
    own: Vec<Finding>,
    references: ReferenceCheck,
}

impl SetCheck {
    /// Checks a flag of the set.
    pub fn add_flag(&mut self, flag: &Flag) {
        self.add(
            ItemKind::Flag,
            &flag.key,
            self::flag(flag),
            ReferenceCheck::for_flag(flag),
        );
    }

    /// Checks a segment of the set.
    pub fn add_segment(&mut self, segment: &Segment) {
        let references = ReferenceCheck::for_segment(segment);
        self.add(
            ItemKind::Segment,
            &segment.key,
            self::segment(segment),
            references,
        );
    }

    fn add(&mut self, kind: ItemKind, key: &str, own: Vec<Finding>, references: ReferenceCheck) {
        let asks = !references.pending_flags.is_empty()
            || !references.pending_segments.is_empty()
            || !references.findings.is_empty();
        if own.is_empty() && !asks {
            return;
        }
        self.items.push(Pending {
            kind,
            key: key.to_owned(),
            own,
            references,
        });
    }

    /// Every finding, as [`data`] orders them, with references answered by `flag_of` and
    /// `segment_of` (the live item of a key, or `None`).
    pub fn finish<'a>(
        self,
        mut flag_of: impl FnMut(&str) -> Option<Cow<'a, Flag>>,
        mut segment_of: impl FnMut(&str) -> Option<Cow<'a, Segment>>,
    ) -> Vec<ItemFinding> {
        let mut out = Vec::new();
        let mut cycles = Vec::new();
        let mut seen_cycles = BTreeSet::new();
        for Pending {
            kind,
            key,
            own,
            mut references,
        } in self.items
        {
            let item = |finding| ItemFinding {
                kind,
                key: key.clone(),
                finding,
            };
            out.extend(own.into_iter().map(item));
            while let Some(wanted) = references.wanted() {
                for wanted_key in &wanted.flags {
                    references.supply_flag(wanted_key, flag_of(wanted_key).as_deref());
                }
                for wanted_key in &wanted.segments {
                    references.supply_segment(wanted_key, segment_of(wanted_key).as_deref());
                }
            }
            for (finding, cycle) in references.findings {
                match cycle {
                    // Every item on a cycle finds it; the first (by key) reports it.
                    Some(members) => {
                        if seen_cycles.insert((kind, canonical_cycle(members))) {
                            cycles.push(item(finding));
                        }
                    }
                    None => out.push(item(finding)),
                }
            }
        }
        out.extend(cycles);
        out
    }
}

/// Checks that what a flag or segment refers to resolves, without doing any I/O itself.
///
/// The caller creates the check for the item being written, then repeatedly asks
/// [`ReferenceCheck::wanted`] which live items to look up, supplies each (`None` when it is
/// missing or archived) and finally calls [`ReferenceCheck::finish`] (a store: the first
/// finding refuses the write) or [`ReferenceCheck::findings`] (every finding):
///
/// ```text
/// let mut check = ReferenceCheck::for_flag(&flag);
/// while let Some(wanted) = check.wanted() {
///     for key in &wanted.flags { check.supply_flag(key, live_flag(key).as_ref()); }
///     for key in &wanted.segments { check.supply_segment(key, live_segment(key).as_ref()); }
/// }
/// check.finish()?;
/// ```
///
/// With every item at hand, [`ReferenceCheck::run`] does the loop.
///
/// It walks prerequisites (for a flag) or nested segments (for a segment) level by level to
/// find cycles through the item being checked. Stored data is free of cycles, so any new cycle
/// passes through the item being written; in a flag file, every item on a cycle finds it. One
/// round of lookups per level of nesting; each item is asked for once, so the walk ends even
/// when other cycles lie along the way.
#[derive(Debug)]
pub struct ReferenceCheck {
    root: Dependent,
    /// Keys asked for and not yet supplied.
    pending_flags: Vec<String>,
    pending_segments: Vec<String>,
    /// Every key asked for, with the key that led to it (`None`: the root itself names it),
    /// so a cycle can be reported as a path.
    parent_flag: HashMap<String, Option<String>>,
    parent_segment: HashMap<String, Option<String>>,
    /// The root's prerequisites, checked for existence and variation range when supplied:
    /// key → (index in `prerequisites`, required variation) of each use.
    direct_flags: HashMap<String, Vec<(usize, usize)>>,
    /// The segments the root names: key → the path of each use.
    direct_segments: HashMap<String, Vec<String>>,
    /// What was found, in order, each cycle with its keys (for [`data`] to report it once).
    findings: Vec<(Finding, Option<Vec<String>>)>,
}

/// The items a [`ReferenceCheck`] needs next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Flag keys to look up.
    pub flags: Vec<String>,
    /// Segment keys to look up.
    pub segments: Vec<String>,
}

impl ReferenceCheck {
    /// The check for a flag: its prerequisites and the segments its rules name.
    pub fn for_flag(flag: &Flag) -> ReferenceCheck {
        let mut check = ReferenceCheck::new(ItemKind::Flag, &flag.key);
        for (i, prereq) in flag.prerequisites.iter().enumerate() {
            // An empty key is a finding of the flag itself ([`flag`]).
            if prereq.key.is_empty() {
                continue;
            }
            if prereq.key == flag.key {
                let chain = vec![flag.key.clone(), flag.key.clone()];
                check.cycle(format!("prerequisites[{i}].key"), chain, true);
                continue;
            }
            check
                .direct_flags
                .entry(prereq.key.clone())
                .or_default()
                .push((i, prereq.variation));
            check.want_flag(&prereq.key, None);
        }
        for (key, path) in flag_segment_refs(flag) {
            check
                .direct_segments
                .entry(key.clone())
                .or_default()
                .push(path);
            check.want_segment(&key, None);
        }
        check
    }

    /// The check for a segment: the segments its rules name.
    pub fn for_segment(segment: &Segment) -> ReferenceCheck {
        let mut check = ReferenceCheck::new(ItemKind::Segment, &segment.key);
        for (key, path) in segment_segment_refs(segment) {
            if key == segment.key {
                let chain = vec![segment.key.clone(), segment.key.clone()];
                check.cycle(path, chain, false);
                continue;
            }
            check
                .direct_segments
                .entry(key.clone())
                .or_default()
                .push(path);
            check.want_segment(&key, None);
        }
        check
    }

    fn new(kind: ItemKind, key: &str) -> ReferenceCheck {
        ReferenceCheck {
            root: Dependent {
                kind,
                key: key.to_owned(),
            },
            pending_flags: Vec::new(),
            pending_segments: Vec::new(),
            parent_flag: HashMap::new(),
            parent_segment: HashMap::new(),
            direct_flags: HashMap::new(),
            direct_segments: HashMap::new(),
            findings: Vec::new(),
        }
    }

    /// The live items to look up next; `None` when the check has all it needs.
    pub fn wanted(&mut self) -> Option<Wanted> {
        if self.pending_flags.is_empty() && self.pending_segments.is_empty() {
            return None;
        }
        Some(Wanted {
            flags: std::mem::take(&mut self.pending_flags),
            segments: std::mem::take(&mut self.pending_segments),
        })
    }

    /// Answers every lookup from `flag` and `segment` (each giving the live item of a key, or
    /// `None`), flags first in each round; then the check is ready to finish.
    pub fn run<'a>(
        mut self,
        flag: impl Fn(&str) -> Option<&'a Flag>,
        segment: impl Fn(&str) -> Option<&'a Segment>,
    ) -> ReferenceCheck {
        while let Some(wanted) = self.wanted() {
            for key in &wanted.flags {
                self.supply_flag(key, flag(key));
            }
            for key in &wanted.segments {
                self.supply_segment(key, segment(key));
            }
        }
        self
    }

    /// Supplies a flag asked for: the live flag, or `None` if it is missing or archived.
    pub fn supply_flag(&mut self, key: &str, flag: Option<&Flag>) {
        if let Some(uses) = self.direct_flags.get(key) {
            let mut found_here = Vec::new();
            for &(i, variation) in uses {
                match flag {
                    None => found_here.push(Finding::new(
                        Check::UnknownFlag,
                        format!("prerequisites[{i}].key"),
                        format!("unknown or archived flag {key:?}"),
                    )),
                    // A negative index is a finding of the flag itself ([`flag`]).
                    Some(found)
                        if written_variation_index(variation) >= 0
                            && variation >= found.variations.len() =>
                    {
                        found_here.push(Finding::new(
                            Check::PrerequisiteVariation,
                            format!("prerequisites[{i}].variation"),
                            format!(
                                "flag {key:?} has no variation {variation} (it has {})",
                                found.variations.len()
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            self.findings
                .extend(found_here.into_iter().map(|f| (f, None)));
        }
        // Only a flag being checked walks prerequisites; deeper levels look for a way back.
        let Some(found) = flag else {
            return;
        };
        if self.root.kind != ItemKind::Flag {
            return;
        }
        for prereq in &found.prerequisites {
            if prereq.key == self.root.key {
                let mut chain = self.chain(key, true);
                chain.push(self.root.key.clone());
                // chain[1] is the root's own prerequisite that the cycle leaves by.
                let path = chain
                    .get(1)
                    .and_then(|first| self.direct_flags.get(first))
                    .and_then(|uses| uses.first());
                let path =
                    path.map_or_else(String::new, |(i, _)| format!("prerequisites[{i}].key"));
                self.cycle(path, chain, true);
                return;
            }
            self.want_flag(&prereq.key, Some(key));
        }
    }

    /// Supplies a segment asked for: the live segment, or `None` if missing or archived.
    pub fn supply_segment(&mut self, key: &str, segment: Option<&Segment>) {
        if let (Some(paths), None) = (self.direct_segments.get(key), segment) {
            let found_here: Vec<Finding> = paths
                .iter()
                .map(|path| {
                    Finding::new(
                        Check::UnknownSegment,
                        path.clone(),
                        format!("unknown or archived segment {key:?}"),
                    )
                })
                .collect();
            self.findings
                .extend(found_here.into_iter().map(|f| (f, None)));
            return;
        }
        let Some(found) = segment else {
            return;
        };
        if self.root.kind != ItemKind::Segment {
            return;
        }
        for (next, _) in segment_segment_refs(found) {
            if next == self.root.key {
                let mut chain = self.chain(key, false);
                chain.push(self.root.key.clone());
                let path = chain
                    .get(1)
                    .and_then(|first| self.direct_segments.get(first))
                    .and_then(|paths| paths.first());
                let path = path.cloned().unwrap_or_default();
                self.cycle(path, chain, false);
                return;
            }
            self.want_segment(&next, Some(key));
        }
    }

    /// The outcome for a store, once [`ReferenceCheck::wanted`] has returned `None`: the first
    /// finding refuses the write, as [`StoreError::Unresolved`].
    pub fn finish(self) -> Result<(), StoreError> {
        for_write(self.findings()).map(drop)
    }

    /// Every finding, in the order found, once [`ReferenceCheck::wanted`] has returned `None`.
    pub fn findings(self) -> Vec<Finding> {
        self.findings.into_iter().map(|(f, _)| f).collect()
    }

    fn want_flag(&mut self, key: &str, parent: Option<&str>) {
        if !self.parent_flag.contains_key(key) {
            self.parent_flag
                .insert(key.to_owned(), parent.map(str::to_owned));
            self.pending_flags.push(key.to_owned());
        }
    }

    fn want_segment(&mut self, key: &str, parent: Option<&str>) {
        if !self.parent_segment.contains_key(key) {
            self.parent_segment
                .insert(key.to_owned(), parent.map(str::to_owned));
            self.pending_segments.push(key.to_owned());
        }
    }

    /// The path from the root to `key`: `root -> a -> b -> key`.
    fn chain(&self, key: &str, flags: bool) -> Vec<String> {
        let parents = if flags {
            &self.parent_flag
        } else {
            &self.parent_segment
        };
        let mut chain = vec![key.to_owned()];
        let mut at = key;
        while let Some(Some(parent)) = parents.get(at) {
            chain.push(parent.clone());
            at = parent;
            // Parents form a tree (each key is recorded once), so this ends; the bound guards
            // against a bug turning it into a loop.
            if chain.len() > parents.len() + 1 {
                break;
            }
        }
        chain.push(self.root.key.clone());
        chain.reverse();
        chain
    }

    /// Records a cycle given as the keys along it, first key repeated at the end.
    fn cycle(&mut self, path: String, chain: Vec<String>, flags: bool) {
        let (check, what) = if flags {
            (Check::PrerequisiteCycle, "prerequisite")
        } else {
            (Check::SegmentCycle, "segment")
        };
        let message = format!("{what} cycle: {}", chain.join(" -> "));
        let mut members = chain;
        members.pop();
        self.findings
            .push((Finding::new(check, path, message), Some(members)));
    }
}

/// A cycle's keys (without the repeated first one) turned to start at the smallest, so every
/// item on it names the same cycle.
fn canonical_cycle(mut members: Vec<String>) -> Vec<String> {
    if let Some(start) = members
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.cmp(b.1))
        .map(|(i, _)| i)
    {
        members.rotate_left(start);
    }
    members
}

fn negative_index(path: String) -> Finding {
    Finding::new(Check::VariationIndex, path, "must not be negative")
}

/// A variation index of a flag with `n` variations.
fn index(out: &mut Vec<Finding>, path: String, index: usize, n: usize) {
    let written = written_variation_index(index);
    if written < 0 {
        out.push(negative_index(path));
    } else if index >= n {
        out.push(Finding::new(
            Check::VariationIndex,
            path,
            format!("variation {written} does not exist (the flag has {n})"),
        ));
    }
}

fn rollout_of(out: &mut Vec<Finding>, path: &str, rollout: &Rollout, n: usize) {
    if rollout.variations.is_empty() {
        out.push(Finding::new(
            Check::EmptyRollout,
            format!("{path}.variations"),
            "a rollout needs at least one variation",
        ));
    }
    let mut total = 0i64;
    for (j, bucket) in rollout.variations.iter().enumerate() {
        total = total.saturating_add(bucket.weight);
        index(
            out,
            format!("{path}.variations[{j}].variation"),
            bucket.variation,
            n,
        );
        if bucket.weight < 0 {
            out.push(Finding::new(
                Check::NegativeWeight,
                format!("{path}.variations[{j}].weight"),
                "must not be negative",
            ));
        }
    }
    context_kind(out, format!("{path}.contextKind"), &rollout.context_kind);
    if !rollout.variations.is_empty() && total != 100_000 {
        out.push(Finding::new(
            Check::WeightSum,
            format!("{path}.variations"),
            format!("weights add up to {total}, not 100000"),
        ));
    }
}

fn clauses(out: &mut Vec<Finding>, path: &str, clauses: &[Clause]) {
    for (j, clause) in clauses.iter().enumerate() {
        let at = format!("{path}.clauses[{j}]");
        if let Operator::Unknown(op) = &clause.op {
            out.push(Finding::new(
                Check::UnknownOperator,
                format!("{at}.op"),
                format!("unknown operator {op:?}"),
            ));
        }
        context_kind(out, format!("{at}.contextKind"), &clause.context_kind);
        for (k, value) in clause.values.iter().enumerate() {
            if clause.op == Operator::SegmentMatch && !value.is_string() {
                out.push(Finding::new(
                    Check::SegmentKeyType,
                    format!("{at}.values[{k}]"),
                    "a segmentMatch value must be a segment key (a string)",
                ));
            }
            if let Err(why) = check_clause_value(&clause.op, value) {
                out.push(Finding::new(
                    Check::ClauseValue,
                    format!("{at}.values[{k}]"),
                    why.to_string(),
                ));
            }
        }
    }
}

/// An empty kind means `user`; any other must be a valid context kind.
fn context_kind(out: &mut Vec<Finding>, path: String, kind: &str) {
    if kind.is_empty() {
        return;
    }
    if let Err(e) = validate_kind(kind) {
        out.push(Finding::new(Check::ContextKind, path, e.to_string()));
    }
}

/// The segment keys named by `segmentMatch` clauses, with the path of each.
fn segment_refs(path: &str, clauses: &[Clause], out: &mut Vec<(String, String)>) {
    for (j, clause) in clauses.iter().enumerate() {
        if clause.op != Operator::SegmentMatch {
            continue;
        }
        for (k, value) in clause.values.iter().enumerate() {
            if let Some(key) = value.as_str() {
                out.push((key.to_owned(), format!("{path}.clauses[{j}].values[{k}]")));
            }
        }
    }
}

/// The segments a flag's rules name, with the path of each.
pub(crate) fn flag_segment_refs(flag: &Flag) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    for (i, rule) in flag.rules.iter().enumerate() {
        segment_refs(&format!("rules[{i}]"), &rule.clauses, &mut refs);
    }
    refs
}

/// The segments a segment's rules name, with the path of each.
pub(crate) fn segment_segment_refs(segment: &Segment) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    for (i, rule) in segment.rules.iter().enumerate() {
        segment_refs(&format!("rules[{i}]"), &rule.clauses, &mut refs);
    }
    refs
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// The findings of a flag document, as `path: message` with `(warning)` after those that do
    /// not refuse a write.
    fn flag_findings(doc: Value) -> Vec<String> {
        let parsed = Flag::from_json_value(doc).unwrap();
        shown(flag(&parsed))
    }

    fn shown(findings: Vec<Finding>) -> Vec<String> {
        findings
            .iter()
            .map(|f| {
                let advisory = if f.check.is_advisory() {
                    " (warning)"
                } else {
                    ""
                };
                format!("{}: {}{advisory}", f.path, f.message)
            })
            .collect()
    }

    /// A flag with everything right, changed by `patch` (top-level fields replaced).
    fn good(patch: Value) -> Value {
        let mut doc = json!({"key": "f", "on": true, "variations": [true, false],
            "offVariation": 1, "fallthrough": {"variation": 0}});
        for (field, value) in patch.as_object().unwrap() {
            doc[field] = value.clone();
        }
        doc
    }

    fn rule(clause: Value) -> Value {
        json!([{"variation": 0, "clauses": [clause]}])
    }

    #[test]
    fn each_flag_check_names_its_field() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (good(json!({})), vec![]),
            (
                good(json!({"key": "a b"})),
                vec!["key: flag key \"a b\" may only hold letters, digits, '.', '_' and '-'"],
            ),
            (
                good(json!({"variations": [], "offVariation": null})),
                vec![
                    "variations: the flag has no variations (warning)",
                    "fallthrough.variation: variation 0 does not exist (the flag has 0)",
                ],
            ),
            (
                good(json!({"offVariation": 2, "targets": [{"values": ["a"], "variation": -1}]})),
                vec![
                    "offVariation: variation 2 does not exist (the flag has 2)",
                    "targets[0].variation: must not be negative",
                ],
            ),
            (
                good(json!({"fallthrough": null})),
                vec!["fallthrough: a flag that is on needs a fallthrough variation or rollout"],
            ),
            (
                good(json!({"on": false, "fallthrough": null})),
                vec![
                    "fallthrough: a flag needs a fallthrough variation or rollout before it is turned on (warning)",
                ],
            ),
            (
                good(json!({"rules": [{"clauses": []}]})),
                vec!["rules[0]: a rule needs a variation or a rollout"],
            ),
            (
                good(json!({"fallthrough": {"rollout": {"variations": []}}})),
                vec!["fallthrough.rollout.variations: a rollout needs at least one variation"],
            ),
            (
                good(
                    json!({"fallthrough": {"rollout": {"contextKind": "kind", "variations": [
                    {"variation": 0, "weight": 100001}, {"variation": 1, "weight": -1}]}}}),
                ),
                vec![
                    "fallthrough.rollout.variations[1].weight: must not be negative",
                    "fallthrough.rollout.contextKind: context kind \"kind\" is invalid: \"kind\" is not a valid kind",
                ],
            ),
            (
                good(json!({"rules": [{"rollout": {"variations": [
                    {"variation": 0, "weight": 50000}, {"variation": 1, "weight": 40000}]}}]})),
                vec!["rules[0].rollout.variations: weights add up to 90000, not 100000 (warning)"],
            ),
            (
                good(
                    json!({"contextTargets": [{"contextKind": "", "values": ["a"], "variation": 0}]}),
                ),
                vec![],
            ),
            (
                good(json!({"prerequisites": [{"key": "", "variation": -1}]})),
                vec![
                    "prerequisites[0].key: must not be empty",
                    "prerequisites[0].variation: must not be negative",
                ],
            ),
            (
                good(
                    json!({"rules": rule(json!({"attribute": "a", "op": "frob", "values": ["("]}))}),
                ),
                vec!["rules[0].clauses[0].op: unknown operator \"frob\""],
            ),
            (
                good(json!({"rules": rule(json!({"op": "segmentMatch", "values": ["s", 1]}))})),
                vec![
                    "rules[0].clauses[0].values[1]: a segmentMatch value must be a segment key (a string)",
                ],
            ),
            (
                good(
                    json!({"rules": rule(json!({"attribute": "a", "op": "matches", "values": ["ok", "[z-a]"]}))}),
                ),
                vec![
                    "rules[0].clauses[0].values[1]: invalid regular expression: invalid character class range, the start must be <= the end (warning)",
                ],
            ),
            (
                good(
                    json!({"rules": rule(json!({"attribute": "a", "op": "after", "values": [0, "yesterday"]}))}),
                ),
                vec![
                    "rules[0].clauses[0].values[1]: invalid date: expected an RFC 3339 date-time (like 2024-01-31T12:00:00Z) or Unix milliseconds (warning)",
                ],
            ),
            (
                good(
                    json!({"rules": rule(json!({"attribute": "a", "op": "semVerEqual", "values": ["1", "1.2", "1.2.3.4"]}))}),
                ),
                vec![
                    "rules[0].clauses[0].values[2]: invalid semantic version: expected MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD] (warning)",
                ],
            ),
        ];
        for (doc, want) in cases {
            assert_eq!(flag_findings(doc.clone()), want, "{doc}");
        }
    }

    #[test]
    fn keys_are_url_safe_names() {
        let long = "k".repeat(MAX_KEY_LEN + 1);
        let cases: &[(&str, Option<&str>)] = &[
            ("a-b_c.9", None),
            ("...", None),
            ("..a", None),
            (&long[1..], None),
            ("", Some("must not be empty")),
            (&long, Some("is longer than 256 characters")),
            (
                "a b",
                Some("may only hold letters, digits, '.', '_' and '-'"),
            ),
            (
                "a\0b",
                Some("may only hold letters, digits, '.', '_' and '-'"),
            ),
            (
                ".",
                Some("cannot be used: URL paths treat \".\" and \"..\" as steps, not names"),
            ),
            (
                "..",
                Some("cannot be used: URL paths treat \".\" and \"..\" as steps, not names"),
            ),
        ];
        for (k, why) in cases {
            let found = key("flag", k);
            let want = why.map(|why| format!("flag key {k:?} {why}"));
            assert_eq!(found.as_ref().map(|f| f.message.clone()), want, "{k:?}");
            assert!(found.is_none_or(|f| f.check == Check::Key && f.path == "key"));
        }
    }

    #[test]
    fn every_nul_of_a_document_is_found_at_its_path() {
        let check = |doc: Value, want: &[&str]| {
            let found: Vec<String> = document(&doc)
                .iter()
                .map(|f| {
                    assert_eq!(f.check, Check::Nul);
                    format!("{}: {}", f.path, f.message)
                })
                .collect();
            assert_eq!(found, want, "{doc}");
        };
        let held = "holds a NUL character (\\u0000), which cannot be stored";
        check(json!({"key": "f", "variations": ["a", {"b": ["c"]}]}), &[]);
        check(
            json!({"variations": ["a", "b\u{0}"]}),
            &[&format!("variations[1]: {held}")],
        );
        check(
            json!({"description": "\u{0}", "rules": [{"clauses": [{"values": [{"x\u{0}": "\u{0}"}]}]}]}),
            &[
                &format!("description: {held}"),
                &format!("rules[0].clauses[0].values[0].x\\u0000: the field name {held}"),
                &format!("rules[0].clauses[0].values[0].x\\u0000: {held}"),
            ],
        );
        // The key is the key check's: it refuses more than NUL.
        check(json!({"key": "a\u{0}"}), &[]);
        check(json!("\u{0}"), &[&format!(": {held}")]);
        assert_eq!(
            text("name", "a\u{0}").map(|f| f.path),
            Some("name".to_owned())
        );
        assert_eq!(text("name", "anything else: \u{1} ✓"), None);
    }

    #[test]
    fn each_segment_check_names_its_field() {
        let segment_findings = |doc: Value| shown(segment(&Segment::from_json_value(doc).unwrap()));
        assert_eq!(
            segment_findings(json!({"key": "s",
                "includedContexts": [{"contextKind": "multi", "values": ["a"]}],
                "rules": [{"weight": 100001, "clauses": [
                    {"attribute": "a", "op": "before", "values": ["2024-01-31"]}]}]})),
            [
                "includedContexts[0].contextKind: context kind \"multi\" is invalid: \"multi\" is only allowed as the kind of a multi-kind context",
                "rules[0].weight: must be between 0 and 100000",
                "rules[0].clauses[0].values[0]: invalid date: expected an RFC 3339 date-time (like 2024-01-31T12:00:00Z) or Unix milliseconds (warning)",
            ]
        );
    }

    #[test]
    fn severities_depend_on_the_purpose() {
        for check in [
            Check::VariationIndex,
            Check::UnknownFlag,
            Check::Key,
            Check::Nul,
        ] {
            assert_eq!(check.severity(Purpose::Write), Severity::Error);
            assert_eq!(check.severity(Purpose::File), Severity::Warning);
        }
        for check in [Check::WeightSum, Check::ClauseValue, Check::NoVariations] {
            assert_eq!(check.severity(Purpose::Write), Severity::Warning);
            assert_eq!(check.severity(Purpose::File), Severity::Warning);
        }
        let refusal = Finding::new(Check::UnknownSegment, "rules[0]", "gone");
        let warning = Finding::new(Check::WeightSum, "fallthrough", "odd");
        assert_eq!(
            for_write(vec![warning.clone()]).unwrap(),
            vec![warning.clone()]
        );
        let refused = for_write(vec![warning, refusal]).unwrap_err();
        assert!(matches!(refused, StoreError::Unresolved { .. }));
        assert_eq!(refused.to_string(), "rules[0]: gone");
    }

    fn data_of(flags: Value, segments: Value) -> FlagData {
        let mut data = FlagData::default();
        for (key, doc) in flags.as_object().unwrap() {
            let mut doc = doc.clone();
            doc["key"] = json!(key);
            data.flags
                .insert(key.clone(), Flag::from_json_value(doc).unwrap());
        }
        for (key, doc) in segments.as_object().unwrap() {
            let mut doc = doc.clone();
            doc["key"] = json!(key);
            data.segments
                .insert(key.clone(), Segment::from_json_value(doc).unwrap());
        }
        data
    }

    fn data_findings(set: &FlagData) -> Vec<String> {
        data(set)
            .iter()
            .map(|f| format!("{}: {}", f.path(), f.finding.message))
            .collect()
    }

    #[test]
    fn a_whole_set_reports_references_and_each_cycle_once() {
        let flag = |prereqs: Value| {
            json!({"on": true, "variations": [1, 2], "fallthrough": {"variation": 0},
                   "prerequisites": prereqs})
        };
        let seg_rule =
            |refs: Value| json!({"rules": [{"clauses": [{"op": "segmentMatch", "values": refs}]}]});
        let set = data_of(
            json!({
                "a": flag(json!([{"key": "b", "variation": 0}])),
                "b": flag(json!([{"key": "c", "variation": 0}, {"key": "gone", "variation": 0}])),
                "c": flag(json!([{"key": "a", "variation": 5}])),
                "d": flag(json!([{"key": "d", "variation": 0}])),
                "e": flag(json!([{"key": "a", "variation": 0}])),
            }),
            json!({"s1": seg_rule(json!(["s2"])), "s2": seg_rule(json!(["s1", "nope"]))}),
        );
        assert_eq!(
            data_findings(&set),
            [
                "flags.b.prerequisites[1].key: unknown or archived flag \"gone\"",
                "flags.c.prerequisites[0].variation: flag \"a\" has no variation 5 (it has 2)",
                "segments.s2.rules[0].clauses[0].values[1]: unknown or archived segment \"nope\"",
                "flags.a.prerequisites[0].key: prerequisite cycle: a -> b -> c -> a",
                "flags.d.prerequisites[0].key: prerequisite cycle: d -> d",
                "segments.s1.rules[0].clauses[0].values[0]: segment cycle: s1 -> s2 -> s1",
            ]
        );
    }

    /// The store's walk and the whole-set walk find the same cycle at the same path when it
    /// starts from the same item.
    #[test]
    fn a_store_write_and_a_set_agree_on_a_cycle() {
        let set = data_of(
            json!({
                "a": {"variations": [1], "prerequisites": [{"key": "b", "variation": 0}]},
                "b": {"variations": [1], "prerequisites": [{"key": "a", "variation": 0}]},
            }),
            json!({}),
        );
        let from_store = ReferenceCheck::for_flag(&set.flags["a"])
            .run(|k| set.flags.get(k), |k| set.segments.get(k))
            .finish()
            .unwrap_err()
            .to_string();
        let from_set = data(&set);
        let cycle = from_set
            .iter()
            .find(|f| f.finding.check == Check::PrerequisiteCycle)
            .unwrap();
        assert_eq!(
            from_store,
            format!("{}: {}", cycle.finding.path, cycle.finding.message)
        );
    }
}
