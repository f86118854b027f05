//! The checks every store runs before it writes, written once over the model so every backend
//! rejects exactly the same things.
//!
//! Three kinds of check, matching three [`StoreError`] variants:
//! - shape ([`prepare_flag`], [`prepare_segment`]): the document parses and is internally
//!   consistent (variation indexes in range, known operators, valid context kinds); errors are
//!   [`StoreError::Invalid`] with the field path.
//! - references ([`ReferenceCheck`]): every prerequisite and segment named exists and is live,
//!   prerequisite variations exist, and no prerequisite or segment cycle appears; errors are
//!   [`StoreError::Unresolved`]. The check is a small state machine that asks the backend for
//!   the items it needs level by level, so a database backend can fetch them inside its write
//!   transaction without this module doing any I/O.
//! - dependents ([`flag_dependents`], [`segment_dependents`], [`check_variations_still_used`]):
//!   what would break if an item went away or lost variations; errors are
//!   [`StoreError::HasDependents`] or [`StoreError::Unresolved`].

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::{BatchError, Dependent, ImportItem, Override, SegmentTargetsUpdate, StoreError};
use flags_core::ItemKind;
use flags_core::context::validate_kind;
use flags_core::{Clause, Flag, Operator, Rollout, Segment, SegmentTarget};

/// The longest key of an environment, flag or segment. Keys appear in URLs and in change
/// notifications, which databases limit in size.
pub const MAX_KEY_LEN: usize = 256;

/// The longest context key an override may name (change notifications carry it).
pub const MAX_CONTEXT_KEY_LEN: usize = 1024;

/// The version check of every versioned write: `current` is the item's version (`None` when it
/// does not exist). With `required` (puts), `expected: None` means "create" and conflicts with an
/// existing item; otherwise `None` accepts whatever version the item has.
pub fn check_expected_version(
    current: Option<u64>,
    expected: Option<u64>,
    required: bool,
) -> Result<(), StoreError> {
    match (current, expected) {
        (Some(v), Some(e)) if v == e => Ok(()),
        (Some(_), None) if !required => Ok(()),
        (Some(v), _) => Err(StoreError::Conflict {
            current_version: Some(v),
        }),
        (None, Some(_)) => Err(StoreError::Conflict {
            current_version: None,
        }),
        (None, None) => Ok(()),
    }
}

/// Sets the `version` inside a stored document (archiving bumps the version without otherwise
/// touching the document).
pub fn restamp_version(doc: &Value, version: u64) -> Value {
    let mut doc = doc.clone();
    if let Value::Object(map) = &mut doc {
        map.insert("version".to_owned(), Value::from(version));
    }
    doc
}

/// Checks an environment, flag or segment key: 1 to [`MAX_KEY_LEN`] bytes of letters, digits,
/// `.`, `_` and `-` (LaunchDarkly's key alphabet, safe in URL paths unescaped).
pub fn check_key(what: &str, key: &str) -> Result<(), StoreError> {
    let why = if key.is_empty() {
        "must not be empty"
    } else if key.len() > MAX_KEY_LEN {
        "is longer than 256 characters"
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "may only hold letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(StoreError::invalid(
        "key",
        format!("{what} key {key:?} {why}"),
    ))
}

/// Checks the context of an override: a valid context kind and a non-empty key.
pub fn check_override_context(context_kind: &str, context_key: &str) -> Result<(), StoreError> {
    validate_kind(context_kind).map_err(|e| StoreError::invalid("contextKind", e.to_string()))?;
    if context_key.is_empty() {
        return Err(StoreError::invalid("contextKey", "must not be empty"));
    }
    if context_key.len() > MAX_CONTEXT_KEY_LEN {
        return Err(StoreError::invalid(
            "contextKey",
            "is longer than 1024 characters",
        ));
    }
    Ok(())
}

/// Checks the shape of a flag document written under `key` and stamps it with `key` and
/// `version`. Returns the document to store and the parsed flag.
pub fn prepare_flag(key: &str, doc: Value, version: u64) -> Result<(Value, Flag), StoreError> {
    check_key("flag", key)?;
    let doc = stamp(key, doc, version, "flag")?;
    let flag = Flag::from_json_value(doc.clone())?;
    check_flag_shape(&flag)?;
    Ok((doc, flag))
}

/// Checks the shape of a segment document; see [`prepare_flag`].
pub fn prepare_segment(
    key: &str,
    doc: Value,
    version: u64,
) -> Result<(Value, Segment), StoreError> {
    check_key("segment", key)?;
    let doc = stamp(key, doc, version, "segment")?;
    let segment = Segment::from_json_value(doc.clone())?;
    check_segment_shape(&segment)?;
    Ok((doc, segment))
}

/// A flag or segment of an import whose shape has been checked.
#[derive(Debug, Clone)]
pub struct PreparedItem {
    /// Its key.
    pub key: String,
    /// The document, stamped with `key` and with `version` 0 until [`PreparedItem::stamp`].
    pub doc: Value,
    /// The parsed document.
    pub parsed: Parsed,
}

/// A parsed flag or segment.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// A flag.
    Flag(Flag),
    /// A segment.
    Segment(Segment),
}

impl PreparedItem {
    /// Flag or segment.
    pub fn kind(&self) -> ItemKind {
        match self.parsed {
            Parsed::Flag(_) => ItemKind::Flag,
            Parsed::Segment(_) => ItemKind::Segment,
        }
    }

    /// Sets the version the item will be stored at, in the document and the parsed form.
    pub fn stamp(&mut self, version: u64) {
        self.doc = restamp_version(&self.doc, version);
        match &mut self.parsed {
            Parsed::Flag(flag) => flag.version = version,
            Parsed::Segment(segment) => segment.version = version,
        }
    }

    /// The references to check before the item is stored.
    pub fn reference_check(&self) -> ReferenceCheck {
        match &self.parsed {
            Parsed::Flag(flag) => ReferenceCheck::for_flag(flag),
            Parsed::Segment(segment) => ReferenceCheck::for_segment(segment),
        }
    }
}

/// Checks the shape of every item of an import ([`prepare_flag`], [`prepare_segment`]) before
/// anything is written; the first refusal names its item.
pub fn prepare_import(items: Vec<ImportItem>) -> Result<Vec<PreparedItem>, BatchError> {
    items
        .into_iter()
        .map(|item| {
            let ImportItem { kind, key, doc } = item;
            let prepared = match kind {
                ItemKind::Flag => prepare_flag(&key, doc, 0).map(|(doc, f)| (doc, Parsed::Flag(f))),
                ItemKind::Segment => {
                    prepare_segment(&key, doc, 0).map(|(doc, s)| (doc, Parsed::Segment(s)))
                }
            };
            match prepared {
                Ok((doc, parsed)) => Ok(PreparedItem { key, doc, parsed }),
                Err(e) => Err(BatchError::item(kind, &key, e)),
            }
        })
        .collect()
}

/// Whether a stored document equals one being written under `key`, ignoring the `version` the
/// store sets and a `key` the new document may leave out.
pub fn same_document(stored: &Value, new: &Value, key: &str) -> bool {
    let normalize = |doc: &Value| {
        let mut doc = doc.clone();
        if let Value::Object(map) = &mut doc {
            map.remove("version");
            map.insert("key".to_owned(), Value::String(key.to_owned()));
        }
        doc
    };
    normalize(stored) == normalize(new)
}

/// Sets `key` and `version` in a document after checking it is an object whose own `key`, if
/// any, agrees, and that it is not a tombstone.
fn stamp(key: &str, doc: Value, version: u64, what: &str) -> Result<Value, StoreError> {
    let Value::Object(mut map) = doc else {
        return Err(StoreError::invalid(
            "",
            format!("a {what} must be a JSON object"),
        ));
    };
    match map.get("key") {
        None | Some(Value::Null) => {}
        Some(Value::String(own)) if own == key => {}
        Some(Value::String(own)) => {
            return Err(StoreError::invalid(
                "key",
                format!("the document's key {own:?} differs from {key:?} in the path"),
            ));
        }
        Some(_) => return Err(StoreError::invalid("key", "expected a string")),
    }
    if map.get("deleted") == Some(&Value::Bool(true)) {
        return Err(StoreError::invalid(
            "deleted",
            format!("a stored {what} cannot be a deletion marker; delete it instead"),
        ));
    }
    map.insert("key".to_owned(), Value::String(key.to_owned()));
    map.insert("version".to_owned(), Value::from(version));
    Ok(Value::Object(map))
}

fn check_flag_shape(flag: &Flag) -> Result<(), StoreError> {
    let n = flag.variations.len();
    let index = |path: String, v: usize| check_index(path, v, n);
    if let Some(off) = flag.off_variation {
        index("offVariation".to_owned(), off)?;
    }
    match (&flag.fallthrough.variation, &flag.fallthrough.rollout) {
        (Some(v), _) => index("fallthrough.variation".to_owned(), *v)?,
        (None, Some(rollout)) => check_rollout("fallthrough.rollout", rollout, n)?,
        (None, None) if flag.on => {
            return Err(StoreError::invalid(
                "fallthrough",
                "a flag that is on needs a fallthrough variation or rollout",
            ));
        }
        (None, None) => {}
    }
    for (i, target) in flag.targets.iter().enumerate() {
        index(format!("targets[{i}].variation"), target.variation)?;
    }
    for (i, target) in flag.context_targets.iter().enumerate() {
        index(format!("contextTargets[{i}].variation"), target.variation)?;
        check_context_kind(
            &format!("contextTargets[{i}].contextKind"),
            &target.context_kind,
        )?;
    }
    for (i, prereq) in flag.prerequisites.iter().enumerate() {
        if prereq.key.is_empty() {
            return Err(StoreError::invalid(
                format!("prerequisites[{i}].key"),
                "must not be empty",
            ));
        }
        if prereq.variation == usize::MAX {
            return Err(StoreError::invalid(
                format!("prerequisites[{i}].variation"),
                "must not be negative",
            ));
        }
    }
    for (i, rule) in flag.rules.iter().enumerate() {
        match (&rule.variation, &rule.rollout) {
            (Some(v), _) => index(format!("rules[{i}].variation"), *v)?,
            (None, Some(rollout)) => check_rollout(&format!("rules[{i}].rollout"), rollout, n)?,
            (None, None) => {
                return Err(StoreError::invalid(
                    format!("rules[{i}]"),
                    "a rule needs a variation or a rollout",
                ));
            }
        }
        check_clauses(&format!("rules[{i}]"), &rule.clauses)?;
    }
    Ok(())
}

fn check_segment_shape(segment: &Segment) -> Result<(), StoreError> {
    for (field, targets) in [
        ("includedContexts", &segment.included_contexts),
        ("excludedContexts", &segment.excluded_contexts),
    ] {
        for (i, target) in targets.iter().enumerate() {
            check_context_kind(&format!("{field}[{i}].contextKind"), &target.context_kind)?;
        }
    }
    for (i, rule) in segment.rules.iter().enumerate() {
        if let Some(weight) = rule.weight
            && !(0..=100_000).contains(&weight)
        {
            return Err(StoreError::invalid(
                format!("rules[{i}].weight"),
                "must be between 0 and 100000",
            ));
        }
        check_clauses(&format!("rules[{i}]"), &rule.clauses)?;
    }
    Ok(())
}

fn check_index(path: String, index: usize, variations: usize) -> Result<(), StoreError> {
    if index == usize::MAX {
        Err(StoreError::invalid(path, "must not be negative"))
    } else if index >= variations {
        Err(StoreError::invalid(
            path,
            format!("variation {index} does not exist (the flag has {variations})"),
        ))
    } else {
        Ok(())
    }
}

fn check_rollout(path: &str, rollout: &Rollout, variations: usize) -> Result<(), StoreError> {
    if rollout.variations.is_empty() {
        return Err(StoreError::invalid(
            format!("{path}.variations"),
            "a rollout needs at least one variation",
        ));
    }
    for (j, bucket) in rollout.variations.iter().enumerate() {
        check_index(
            format!("{path}.variations[{j}].variation"),
            bucket.variation,
            variations,
        )?;
        if bucket.weight < 0 {
            return Err(StoreError::invalid(
                format!("{path}.variations[{j}].weight"),
                "must not be negative",
            ));
        }
    }
    check_context_kind(&format!("{path}.contextKind"), &rollout.context_kind)
}

fn check_clauses(path: &str, clauses: &[Clause]) -> Result<(), StoreError> {
    for (j, clause) in clauses.iter().enumerate() {
        let at = format!("{path}.clauses[{j}]");
        if let Operator::Unknown(op) = &clause.op {
            return Err(StoreError::invalid(
                format!("{at}.op"),
                format!("unknown operator {op:?}"),
            ));
        }
        check_context_kind(&format!("{at}.contextKind"), &clause.context_kind)?;
        if clause.op == Operator::SegmentMatch {
            for (k, value) in clause.values.iter().enumerate() {
                if !value.is_string() {
                    return Err(StoreError::invalid(
                        format!("{at}.values[{k}]"),
                        "a segmentMatch value must be a segment key (a string)",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// An empty kind means `user`; any other must be a valid context kind.
fn check_context_kind(path: &str, kind: &str) -> Result<(), StoreError> {
    if kind.is_empty() {
        return Ok(());
    }
    validate_kind(kind).map_err(|e| StoreError::invalid(path, e.to_string()))
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

fn flag_segment_refs(flag: &Flag) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    for (i, rule) in flag.rules.iter().enumerate() {
        segment_refs(&format!("rules[{i}]"), &rule.clauses, &mut refs);
    }
    refs
}

fn segment_segment_refs(segment: &Segment) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    for (i, rule) in segment.rules.iter().enumerate() {
        segment_refs(&format!("rules[{i}]"), &rule.clauses, &mut refs);
    }
    refs
}

/// Checks that what a flag or segment refers to resolves, without doing any I/O itself.
///
/// The backend creates the check for the item being written, then repeatedly asks
/// [`ReferenceCheck::wanted`] which live items to look up, supplies each (`None` when it is
/// missing or archived) and finally calls [`ReferenceCheck::finish`]:
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
/// It walks prerequisites (for a flag) or nested segments (for a segment) level by level to
/// find cycles through the item being written; the stored data is free of cycles, so any new
/// cycle passes through it. One round of lookups per level of nesting.
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
    /// The root's direct references, checked for existence (and variation range) when
    /// supplied: key → (path in the root document, required variation).
    direct_flags: HashMap<String, Vec<(String, usize)>>,
    direct_segments: HashMap<String, String>,
    error: Option<StoreError>,
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
    /// The check for a flag being written: its prerequisites and the segments its rules name.
    pub fn for_flag(flag: &Flag) -> ReferenceCheck {
        let mut check = ReferenceCheck::new(ItemKind::Flag, &flag.key);
        for (i, prereq) in flag.prerequisites.iter().enumerate() {
            let path = format!("prerequisites[{i}].key");
            if prereq.key == flag.key {
                check.fail(format!("{path}: prerequisite cycle: {0} -> {0}", flag.key));
                continue;
            }
            check
                .direct_flags
                .entry(prereq.key.clone())
                .or_default()
                .push((path, prereq.variation));
            check.want_flag(&prereq.key, None);
        }
        for (key, path) in flag_segment_refs(flag) {
            check.direct_segments.entry(key.clone()).or_insert(path);
            check.want_segment(&key, None);
        }
        check
    }

    /// The check for a segment being written: the segments its rules name.
    pub fn for_segment(segment: &Segment) -> ReferenceCheck {
        let mut check = ReferenceCheck::new(ItemKind::Segment, &segment.key);
        for (key, path) in segment_segment_refs(segment) {
            if key == segment.key {
                check.fail(format!("{path}: segment cycle: {0} -> {0}", segment.key));
                continue;
            }
            check.direct_segments.entry(key.clone()).or_insert(path);
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
            error: None,
        }
    }

    /// The live items to look up next; `None` when the check has all it needs.
    pub fn wanted(&mut self) -> Option<Wanted> {
        if self.error.is_some()
            || (self.pending_flags.is_empty() && self.pending_segments.is_empty())
        {
            return None;
        }
        Some(Wanted {
            flags: std::mem::take(&mut self.pending_flags),
            segments: std::mem::take(&mut self.pending_segments),
        })
    }

    /// Supplies a flag asked for: the live flag, or `None` if it is missing or archived.
    pub fn supply_flag(&mut self, key: &str, flag: Option<&Flag>) {
        if let Some(uses) = self.direct_flags.get(key) {
            let Some((path, _)) = uses.first() else {
                return;
            };
            let Some(found) = flag else {
                let message = format!("{path}: unknown or archived flag {key:?}");
                self.fail(message);
                return;
            };
            for (path, variation) in uses {
                if *variation >= found.variations.len() {
                    let message = format!(
                        "{}: flag {key:?} has no variation {variation} (it has {})",
                        path.replace(".key", ".variation"),
                        found.variations.len()
                    );
                    self.fail(message);
                    return;
                }
            }
        }
        // Only a flag being written walks prerequisites; deeper levels look for a way back.
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
                self.fail(format!("prerequisite cycle: {}", chain.join(" -> ")));
                return;
            }
            self.want_flag(&prereq.key, Some(key));
        }
    }

    /// Supplies a segment asked for: the live segment, or `None` if missing or archived.
    pub fn supply_segment(&mut self, key: &str, segment: Option<&Segment>) {
        if let Some(path) = self.direct_segments.get(key)
            && segment.is_none()
        {
            let message = format!("{path}: unknown or archived segment {key:?}");
            self.fail(message);
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
                self.fail(format!("segment cycle: {}", chain.join(" -> ")));
                return;
            }
            self.want_segment(&next, Some(key));
        }
    }

    /// The outcome, once [`ReferenceCheck::wanted`] has returned `None`.
    pub fn finish(self) -> Result<(), StoreError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
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

    fn fail(&mut self, message: String) {
        if self.error.is_none() {
            self.error = Some(StoreError::unresolved(message));
        }
    }
}

/// The live flags among `flags` that name `key` as a prerequisite, sorted.
pub fn flag_dependents<'a>(key: &str, flags: impl IntoIterator<Item = &'a Flag>) -> Vec<Dependent> {
    let mut found = BTreeSet::new();
    for flag in flags {
        if flag.key != key && flag.prerequisites.iter().any(|p| p.key == key) {
            found.insert(Dependent {
                kind: ItemKind::Flag,
                key: flag.key.clone(),
            });
        }
    }
    found.into_iter().collect()
}

/// The flags and segments among those given whose rules name segment `key`, sorted (flags
/// first).
pub fn segment_dependents<'a>(
    key: &str,
    flags: impl IntoIterator<Item = &'a Flag>,
    segments: impl IntoIterator<Item = &'a Segment>,
) -> Vec<Dependent> {
    let mut found = BTreeSet::new();
    for flag in flags {
        if flag_segment_refs(flag).iter().any(|(k, _)| k == key) {
            found.insert(Dependent {
                kind: ItemKind::Flag,
                key: flag.key.clone(),
            });
        }
    }
    for segment in segments {
        if segment.key != key && segment_segment_refs(segment).iter().any(|(k, _)| k == key) {
            found.insert(Dependent {
                kind: ItemKind::Segment,
                key: segment.key.clone(),
            });
        }
    }
    found.into_iter().collect()
}

/// Checks that a flag being replaced still has every variation that others use: prerequisites
/// of the given (live) flags that name it, and its overrides.
pub fn check_variations_still_used<'a>(
    flag: &Flag,
    dependents: impl IntoIterator<Item = &'a Flag>,
    overrides: &[Override],
) -> Result<(), StoreError> {
    let n = flag.variations.len();
    for dependent in dependents {
        for prereq in &dependent.prerequisites {
            if prereq.key == flag.key && prereq.variation >= n {
                return Err(StoreError::unresolved(format!(
                    "variations: flag {:?} names variation {} of {:?} as a prerequisite, which \
                     would have only {n}",
                    dependent.key, prereq.variation, flag.key
                )));
            }
        }
    }
    if let Some(o) = overrides.iter().find(|o| o.variation >= n) {
        return Err(StoreError::unresolved(format!(
            "variations: the override of {} {:?} uses variation {}, which the flag would not \
             have (it would have {n}); remove the override first",
            o.context_kind, o.context_key, o.variation
        )));
    }
    Ok(())
}

/// Applies a batch of individual-key changes to a segment document. Returns whether the
/// document changed; the caller validates the result with [`prepare_segment`].
pub fn apply_targets_update(
    doc: &mut Value,
    update: &SegmentTargetsUpdate,
) -> Result<bool, StoreError> {
    if let Some(kind) = &update.context_kind {
        validate_kind(kind).map_err(|e| StoreError::invalid("contextKind", e.to_string()))?;
    }
    for (field, keys) in [
        ("addIncluded", &update.add_included),
        ("removeIncluded", &update.remove_included),
        ("addExcluded", &update.add_excluded),
        ("removeExcluded", &update.remove_excluded),
    ] {
        if let Some(i) = keys.iter().position(String::is_empty) {
            return Err(StoreError::invalid(
                format!("{field}[{i}]"),
                "a context key must not be empty",
            ));
        }
    }
    let Value::Object(map) = doc else {
        return Err(StoreError::invalid("", "a segment must be a JSON object"));
    };
    let mut changed = false;
    for (plain, contexts, remove, add) in [
        (
            "included",
            "includedContexts",
            &update.remove_included,
            &update.add_included,
        ),
        (
            "excluded",
            "excludedContexts",
            &update.remove_excluded,
            &update.add_excluded,
        ),
    ] {
        if remove.is_empty() && add.is_empty() {
            continue;
        }
        changed |= match &update.context_kind {
            None => edit_key_list(map, plain, remove, add)?,
            Some(kind) => edit_context_list(map, contexts, kind, remove, add)?,
        };
    }
    Ok(changed)
}

/// Edits a plain list of keys (`included`), keeping its order; returns whether it changed.
fn edit_key_list(
    map: &mut Map<String, Value>,
    field: &str,
    remove: &[String],
    add: &[String],
) -> Result<bool, StoreError> {
    let mut keys = read_keys(map.get(field), field)?;
    let changed = edit_keys(&mut keys, remove, add);
    if changed {
        map.insert(field.to_owned(), Value::from(keys));
    }
    Ok(changed)
}

/// Edits the `values` of the entry of `kind` in a context list (`includedContexts`), creating
/// the entry when adding and dropping it when emptied.
fn edit_context_list(
    map: &mut Map<String, Value>,
    field: &str,
    kind: &str,
    remove: &[String],
    add: &[String],
) -> Result<bool, StoreError> {
    let mut entries: Vec<SegmentTarget> = match map.get(field) {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| StoreError::invalid(field, e.to_string()))?,
    };
    let position = entries.iter().position(|e| e.context_kind == kind);
    let mut keys = position
        .map(|i| entries[i].values.clone())
        .unwrap_or_default();
    if !edit_keys(&mut keys, remove, add) {
        return Ok(false);
    }
    match (position, keys.is_empty()) {
        (Some(i), true) => {
            entries.remove(i);
        }
        (Some(i), false) => entries[i].values = keys,
        (None, _) => entries.push(SegmentTarget {
            context_kind: kind.to_owned(),
            values: keys,
        }),
    }
    let value =
        serde_json::to_value(&entries).map_err(|e| StoreError::invalid(field, e.to_string()))?;
    map.insert(field.to_owned(), value);
    Ok(true)
}

fn read_keys(value: Option<&Value>, field: &str) -> Result<Vec<String>, StoreError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|_| StoreError::invalid(field, "expected an array of strings")),
    }
}

/// Removes then adds keys (no duplicates, order kept); returns whether anything changed.
fn edit_keys(keys: &mut Vec<String>, remove: &[String], add: &[String]) -> bool {
    let before = keys.len();
    keys.retain(|k| !remove.contains(k));
    let mut changed = keys.len() != before;
    for key in add {
        if !keys.contains(key) {
            keys.push(key.clone());
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flag(doc: Value) -> Flag {
        let key = doc["key"].as_str().unwrap_or("f").to_owned();
        prepare_flag(&key, doc, 1)
            .map(|(_, f)| f)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn shape_error(doc: Value) -> String {
        match prepare_flag("f", doc, 1) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        let cases = [
            (json!([]), "a flag must be a JSON object"),
            (
                json!({"key": "g"}),
                "key: the document's key \"g\" differs from \"f\" in the path",
            ),
            (
                json!({"deleted": true}),
                "deleted: a stored flag cannot be a deletion marker; delete it instead",
            ),
            (
                json!({"variations": [1], "offVariation": 1}),
                "offVariation: variation 1 does not exist (the flag has 1)",
            ),
            (
                json!({"variations": [1], "offVariation": -1}),
                "offVariation: must not be negative",
            ),
            (
                json!({"on": true, "variations": [1]}),
                "fallthrough: a flag that is on needs a fallthrough variation or rollout",
            ),
            (
                json!({"variations": [1], "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 1}, {"variation": 3}]}}}),
                "fallthrough.rollout.variations[1].variation: variation 3 does not exist (the flag has 1)",
            ),
            (
                json!({"variations": [1], "rules": [{"variation": 0}, {"clauses": []}]}),
                "rules[1]: a rule needs a variation or a rollout",
            ),
            (
                json!({"variations": [1], "rules": [{"variation": 0, "clauses": [{"attribute": "a", "op": "frob", "values": []}]}]}),
                "rules[0].clauses[0].op: unknown operator \"frob\"",
            ),
            (
                json!({"variations": [1], "rules": [{"variation": 0, "clauses": [{"op": "segmentMatch", "values": ["s", 3]}]}]}),
                "rules[0].clauses[0].values[1]: a segmentMatch value must be a segment key (a string)",
            ),
            (
                json!({"variations": [1], "targets": [{"values": ["a"], "variation": 2}]}),
                "targets[0].variation: variation 2 does not exist (the flag has 1)",
            ),
            (
                json!({"variations": [1], "contextTargets": [{"contextKind": "multi", "values": [], "variation": 0}]}),
                "contextTargets[0].contextKind: context kind \"multi\" is invalid: \"multi\" is only allowed as the kind of a multi-kind context",
            ),
            (
                json!({"rules": "x"}),
                "rules: expected an array, found string \"x\"",
            ),
            (
                json!({"variations": [true, false], "on": true, "fallthrough": {"variation": 1}}),
                "ok",
            ),
        ];
        for (doc, want) in cases {
            assert_eq!(shape_error(doc.clone()), want, "{doc}");
        }
        assert_eq!(
            prepare_flag("a b", json!({}), 1)
                .map(|_| ())
                .unwrap_err()
                .to_string(),
            "key: flag key \"a b\" may only hold letters, digits, '.', '_' and '-'"
        );
    }

    #[test]
    fn stamping_sets_key_and_version_and_keeps_unknown_fields() {
        let (doc, flag) = prepare_flag("f", json!({"version": 99, "_extra": [1]}), 7).unwrap();
        assert_eq!(doc, json!({"key": "f", "version": 7, "_extra": [1]}));
        assert_eq!((flag.key.as_str(), flag.version), ("f", 7));
    }

    /// Runs a reference check against an in-memory set of live items.
    fn resolve(check: ReferenceCheck, flags: &[Flag], segments: &[Segment]) -> Result<(), String> {
        let mut check = check;
        let mut rounds = 0;
        while let Some(wanted) = check.wanted() {
            rounds += 1;
            assert!(rounds < 100, "the check does not end");
            for key in &wanted.flags {
                check.supply_flag(key, flags.iter().find(|f| &f.key == key));
            }
            for key in &wanted.segments {
                check.supply_segment(key, segments.iter().find(|s| &s.key == key));
            }
        }
        check.finish().map_err(|e| e.to_string())
    }

    fn segment(doc: Value) -> Segment {
        let key = doc["key"].as_str().unwrap_or("s").to_owned();
        prepare_segment(&key, doc, 1).unwrap().1
    }

    fn seg_rule(refs: &[&str]) -> Value {
        json!([{"clauses": [{"op": "segmentMatch", "values": refs}]}])
    }

    #[test]
    fn references_resolve_or_name_what_is_missing() {
        let a = flag(
            json!({"key": "a", "variations": [1, 2], "prerequisites": [{"key": "b", "variation": 1}]}),
        );
        let b = flag(
            json!({"key": "b", "variations": [1, 2], "prerequisites": [{"key": "c", "variation": 0}]}),
        );
        let c = flag(json!({"key": "c", "variations": [1]}));
        let s = segment(json!({"key": "s"}));
        let live = [a.clone(), b.clone(), c.clone()];

        let new = flag(
            json!({"key": "n", "variations": [1], "prerequisites": [{"key": "a", "variation": 1}],
            "rules": [{"variation": 0, "clauses": [{"op": "segmentMatch", "values": ["s"]}]}]}),
        );
        assert_eq!(
            resolve(
                ReferenceCheck::for_flag(&new),
                &live,
                std::slice::from_ref(&s)
            ),
            Ok(())
        );
        assert_eq!(
            resolve(ReferenceCheck::for_flag(&new), &live, &[]),
            Err("rules[0].clauses[0].values[0]: unknown or archived segment \"s\"".to_owned())
        );
        let missing = flag(json!({"key": "n", "prerequisites": [{"key": "zz", "variation": 0}]}));
        assert_eq!(
            resolve(ReferenceCheck::for_flag(&missing), &live, &[]),
            Err("prerequisites[0].key: unknown or archived flag \"zz\"".to_owned())
        );
        let bad_variation =
            flag(json!({"key": "n", "prerequisites": [{"key": "c", "variation": 1}]}));
        assert_eq!(
            resolve(ReferenceCheck::for_flag(&bad_variation), &live, &[]),
            Err("prerequisites[0].variation: flag \"c\" has no variation 1 (it has 1)".to_owned())
        );

        // c -> a closes a -> b -> c -> a.
        let c_cycle = flag(
            json!({"key": "c", "variations": [1], "prerequisites": [{"key": "a", "variation": 0}]}),
        );
        assert_eq!(
            resolve(ReferenceCheck::for_flag(&c_cycle), &live, &[]),
            Err("prerequisite cycle: c -> a -> b -> c".to_owned())
        );
        let own = flag(
            json!({"key": "a", "variations": [1], "prerequisites": [{"key": "a", "variation": 0}]}),
        );
        assert_eq!(
            resolve(ReferenceCheck::for_flag(&own), &live, &[]),
            Err("prerequisites[0].key: prerequisite cycle: a -> a".to_owned())
        );
    }

    #[test]
    fn segment_cycles_are_found() {
        let s1 = segment(json!({"key": "s1", "rules": seg_rule(&["s2"])}));
        let s2 = segment(json!({"key": "s2", "rules": seg_rule(&["s3"])}));
        let s3 = segment(json!({"key": "s3"}));
        let live = [s1, s2, s3];
        let closing = segment(json!({"key": "s3", "rules": seg_rule(&["s1"])}));
        assert_eq!(
            resolve(ReferenceCheck::for_segment(&closing), &[], &live),
            Err("segment cycle: s3 -> s1 -> s2 -> s3".to_owned())
        );
        let own = segment(json!({"key": "s1", "rules": seg_rule(&["s1"])}));
        assert_eq!(
            resolve(ReferenceCheck::for_segment(&own), &[], &live),
            Err("rules[0].clauses[0].values[0]: segment cycle: s1 -> s1".to_owned())
        );
        let fine = segment(json!({"key": "s4", "rules": seg_rule(&["s1", "s2"])}));
        assert_eq!(
            resolve(ReferenceCheck::for_segment(&fine), &[], &live),
            Ok(())
        );
    }

    #[test]
    fn dependents_are_listed_sorted() {
        let a = flag(json!({"key": "a", "prerequisites": [{"key": "x", "variation": 0}]}));
        let b = flag(
            json!({"key": "b", "rules": [{"variation": 0, "clauses": [{"op": "segmentMatch", "values": ["s"]}]}], "variations": [1]}),
        );
        let t = segment(json!({"key": "t", "rules": seg_rule(&["s"])}));
        let names = |deps: Vec<Dependent>| deps.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(flag_dependents("x", [&b, &a])), ["flag a"]);
        assert_eq!(
            names(segment_dependents("s", [&a, &b], [&t])),
            ["flag b", "segment t"]
        );
        assert!(segment_dependents("t", [&a, &b], [&t]).is_empty());
    }

    #[test]
    fn shrinking_variations_respects_users() {
        let x = flag(json!({"key": "x", "variations": [1]}));
        let a = flag(json!({"key": "a", "prerequisites": [{"key": "x", "variation": 1}]}));
        assert!(check_variations_still_used(&x, [&a], &[]).is_err());
        let o = Override {
            context_kind: "user".into(),
            context_key: "bob".into(),
            variation: 2,
        };
        let x2 = flag(json!({"key": "x", "variations": [1, 2]}));
        assert!(check_variations_still_used(&x2, [&a], &[]).is_ok());
        assert!(check_variations_still_used(&x2, [&a], &[o]).is_err());
    }

    #[test]
    fn target_updates_edit_the_right_list() {
        let mut doc = json!({"key": "s", "included": ["a"], "rules": []});
        let update = SegmentTargetsUpdate {
            add_included: vec!["b".into(), "a".into()],
            add_excluded: vec!["z".into()],
            ..Default::default()
        };
        assert!(apply_targets_update(&mut doc, &update).unwrap());
        assert_eq!(
            doc,
            json!({"key": "s", "included": ["a", "b"], "excluded": ["z"], "rules": []})
        );
        assert!(
            !apply_targets_update(&mut doc, &update).unwrap(),
            "adding again changes nothing"
        );

        let org = SegmentTargetsUpdate {
            context_kind: Some("org".into()),
            add_included: vec!["o1".into()],
            ..Default::default()
        };
        assert!(apply_targets_update(&mut doc, &org).unwrap());
        assert_eq!(
            doc["includedContexts"],
            json!([{"contextKind": "org", "values": ["o1"]}])
        );
        let remove = SegmentTargetsUpdate {
            context_kind: Some("org".into()),
            remove_included: vec!["o1".into()],
            ..Default::default()
        };
        assert!(apply_targets_update(&mut doc, &remove).unwrap());
        assert_eq!(doc["includedContexts"], json!([]));

        let bad = SegmentTargetsUpdate {
            add_excluded: vec![String::new()],
            ..Default::default()
        };
        assert_eq!(
            apply_targets_update(&mut doc, &bad)
                .unwrap_err()
                .to_string(),
            "addExcluded[0]: a context key must not be empty"
        );
    }
}
