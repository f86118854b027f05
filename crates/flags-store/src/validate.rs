//! What every store runs around a write, written once over the model so every backend refuses
//! exactly the same things. The checks of the flag data itself live in [`crate::check`], shared
//! with flag files; this module adds what only a write has:
//! - documents ([`prepare_flag`], [`prepare_segment`]): the document is an object whose `key`
//!   agrees with the one written, it parses, and the data checks find nothing that refuses it;
//!   errors are [`StoreError::Invalid`] with the field path.
//! - references: [`check::ReferenceCheck`], whose findings are
//!   [`StoreError::Unresolved`].
//! - dependents ([`flag_dependents`], [`segment_dependents`], [`check_variations_still_used`]):
//!   what would break if an item went away or lost variations; errors are
//!   [`StoreError::HasDependents`] or [`StoreError::Unresolved`].
//! - versions, keys of environments and overrides, and segment target edits.
//! - the arguments of every operation ([`check_env`], [`check_item`], [`check_override_key`],
//!   [`check_list`], [`check_audit_query`], [`check_new_environment`],
//!   [`check_environment_update`], [`check_new_api_key`]):
//!   a key no item can have and text with NUL, which PostgreSQL cannot even be asked about,
//!   are [`StoreError::Invalid`] with the argument's name as the path, from every backend and
//!   before anything is read.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::check::{self, ReferenceCheck, flag_segment_refs, for_write, segment_segment_refs};
use crate::{
    AuditItemKind, AuditQuery, BatchError, Dependent, Environment, EnvironmentUpdate, ImportItem,
    ListFilter, NewApiKey, NewEnvironment, Override, OverrideKey, SegmentTargetsUpdate, StoreError,
};
use flags_core::ItemKind;
use flags_core::context::validate_kind;
use flags_core::{Flag, Segment, SegmentTarget};

/// The longest context key an override may name (change notifications carry it).
pub const MAX_CONTEXT_KEY_LEN: usize = 1024;

/// The longest context kind an override may name: overrides are indexed by kind and key
/// together, and an index entry has a size limit.
pub const MAX_CONTEXT_KIND_LEN: usize = 256;

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

/// Checks an environment, flag or segment key to create ([`check::key`]); the error's path is
/// `key`.
pub fn check_key(what: &str, key: &str) -> Result<(), StoreError> {
    match check::key(what, key) {
        Some(finding) => Err(finding.into_store_error()),
        None => Ok(()),
    }
}

/// Checks a key argument that names an existing environment, flag or segment; `path` names the
/// argument in the error (`env`, `key`, `flagKey`). It refuses what [`check::key`] refuses,
/// since no item has such a key (and a database cannot even be asked about one with NUL),
/// except `.` and `..`: items an earlier flagd stored under them stay reachable, to be served,
/// read, archived and deleted.
pub fn check_lookup_key(path: &str, what: &str, key: &str) -> Result<(), StoreError> {
    if key == "." || key == ".." {
        return Ok(());
    }
    match check::key(what, key) {
        Some(finding) => Err(StoreError::invalid(path, finding.message)),
        None => Ok(()),
    }
}

/// Checks text that a store keeps or compares as it is (a name, a context key, a key prefix):
/// anything but NUL ([`check::text`]).
pub fn check_text(path: &str, text: &str) -> Result<(), StoreError> {
    match check::text(path, text) {
        Some(finding) => Err(finding.into_store_error()),
        None => Ok(()),
    }
}

/// Checks the environment an operation names; the error's path is `env`.
pub fn check_env(env: &str) -> Result<(), StoreError> {
    check_lookup_key("env", "environment", env)
}

/// Checks the arguments of an operation on one flag or segment of an environment: `env`, then
/// `key`.
pub fn check_item(env: &str, kind: ItemKind, key: &str) -> Result<(), StoreError> {
    check_env(env)?;
    let what = match kind {
        ItemKind::Flag => "flag",
        ItemKind::Segment => "segment",
    };
    check_lookup_key("key", what, key)
}

/// Checks an environment to create: its `key`, `name` ([`check_environment_name`]) and
/// `color` ([`environment_color`]). Returns it as it is stored: the colour in lower case.
pub fn check_new_environment(new: &NewEnvironment) -> Result<NewEnvironment, StoreError> {
    check_key("environment", &new.key)?;
    check_environment_name(&new.name)?;
    Ok(NewEnvironment {
        color: new.color.as_deref().map(environment_color).transpose()?,
        ..new.clone()
    })
}

/// Checks an update of an environment: `env`, then the `name` and `color` it sets, as
/// [`check_new_environment`] checks them. Returns it as it is stored: the colour in lower case.
pub fn check_environment_update(
    env: &str,
    update: &EnvironmentUpdate,
) -> Result<EnvironmentUpdate, StoreError> {
    check_env(env)?;
    if let Some(name) = &update.name {
        check_environment_name(name)?;
    }
    let color = match &update.color {
        Some(Some(color)) => Some(Some(environment_color(color)?)),
        other => other.clone(),
    };
    Ok(EnvironmentUpdate {
        name: update.name.clone(),
        color,
    })
}

/// Applies a checked update ([`check_environment_update`]) to an environment; returns whether
/// anything changed, so that an update that changes nothing is not written.
pub fn apply_environment_update(env: &mut Environment, update: &EnvironmentUpdate) -> bool {
    let mut changed = false;
    if let Some(name) = &update.name
        && *name != env.name
    {
        env.name.clone_from(name);
        changed = true;
    }
    if let Some(color) = &update.color
        && *color != env.color
    {
        env.color.clone_from(color);
        changed = true;
    }
    changed
}

/// Checks an environment's name: not blank, and without NUL. People tell environments apart
/// by it.
pub fn check_environment_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::invalid("name", "must not be blank"));
    }
    check_text("name", name)
}

/// An environment's colour as it is stored: `#rrggbb` in lower case, from `#rrggbb` in either
/// case. Anything else (a colour name, `#rgb`, no `#`) is [`StoreError::Invalid`] at `color`.
pub fn environment_color(color: &str) -> Result<String, StoreError> {
    match color.strip_prefix('#') {
        Some(hex) if hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(color.to_ascii_lowercase())
        }
        _ => Err(StoreError::invalid(
            "color",
            "must be a colour like #d73a49",
        )),
    }
}

/// Checks the arguments of a list of flags or segments: `env`, then the `keyPrefix`, which may
/// be any text but NUL (a prefix no key has lists nothing).
pub fn check_list(env: &str, filter: &ListFilter) -> Result<(), StoreError> {
    check_env(env)?;
    match &filter.key_prefix {
        Some(prefix) => check_text("keyPrefix", prefix),
        None => Ok(()),
    }
}

/// Checks the override an operation names: `env`, `flagKey`, then the context
/// ([`check_override_context`]).
pub fn check_override_key(env: &str, key: &OverrideKey) -> Result<(), StoreError> {
    check_env(env)?;
    check_lookup_key("flagKey", "flag", &key.flag_key)?;
    check_override_context(&key.context_kind, &key.context_key)
}

/// Checks the context of an override: a valid context kind of at most
/// [`MAX_CONTEXT_KIND_LEN`] bytes, and a key of 1 to [`MAX_CONTEXT_KEY_LEN`] bytes without NUL.
/// The key may otherwise hold anything, as a context key may.
pub fn check_override_context(context_kind: &str, context_key: &str) -> Result<(), StoreError> {
    validate_kind(context_kind).map_err(|e| StoreError::invalid("contextKind", e.to_string()))?;
    if context_kind.len() > MAX_CONTEXT_KIND_LEN {
        return Err(StoreError::invalid(
            "contextKind",
            "is longer than 256 characters",
        ));
    }
    if context_key.is_empty() {
        return Err(StoreError::invalid("contextKey", "must not be empty"));
    }
    if context_key.len() > MAX_CONTEXT_KEY_LEN {
        return Err(StoreError::invalid(
            "contextKey",
            "is longer than 1024 characters",
        ));
    }
    check_text("contextKey", context_key)
}

/// Checks an audit query: its `env`, and the `item` key, which is a key of its kind (or an API
/// key's id).
pub fn check_audit_query(query: &AuditQuery) -> Result<(), StoreError> {
    if let Some(env) = &query.env {
        check_env(env)?;
    }
    match &query.item {
        Some((AuditItemKind::ApiKey, id)) => check_text("item", id),
        Some((kind, key)) => check_lookup_key("item", kind.as_str(), key),
        None => Ok(()),
    }
}

/// Checks a key to create: a `name` that is not blank and holds no NUL, and the `env` it is
/// limited to.
pub fn check_new_api_key(new: &NewApiKey) -> Result<(), StoreError> {
    if new.name.trim().is_empty() {
        return Err(StoreError::invalid("name", "must not be empty"));
    }
    check_text("name", &new.name)?;
    match &new.env {
        Some(env) => check_env(env),
        None => Ok(()),
    }
}

/// Checks the shape of a flag document written under `key` and stamps it with `key` and
/// `version`: the key, the document's text ([`check::document`]), then the flag it holds.
/// Returns the document to store and the parsed flag.
pub fn prepare_flag(key: &str, doc: Value, version: u64) -> Result<(Value, Flag), StoreError> {
    check_key("flag", key)?;
    let doc = stamp(key, doc, version, "flag")?;
    for_write(check::document(&doc))?;
    let flag = Flag::from_json_value(doc.clone())?;
    for_write(check::flag(&flag))?;
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
    for_write(check::document(&doc))?;
    let segment = Segment::from_json_value(doc.clone())?;
    for_write(check::segment(&segment))?;
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
        for (i, key) in keys.iter().enumerate() {
            let path = format!("{field}[{i}]");
            if key.is_empty() {
                return Err(StoreError::invalid(path, "a context key must not be empty"));
            }
            check_text(&path, key)?;
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
            Err("prerequisites[0].key: prerequisite cycle: c -> a -> b -> c".to_owned())
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
            Err("rules[0].clauses[0].values[0]: segment cycle: s3 -> s1 -> s2 -> s3".to_owned())
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
    fn environment_colours_are_six_hex_digits_stored_in_lower_case() {
        let check = |color: &str, expected: Result<&str, &str>| {
            let got = environment_color(color).map_err(|e| e.to_string());
            assert_eq!(
                got.as_deref(),
                expected.map_err(str::to_owned).as_deref(),
                "{color:?}"
            );
        };
        let refused = "color: must be a colour like #d73a49";
        check("#d73a49", Ok("#d73a49"));
        check("#D73A49", Ok("#d73a49"));
        check("#000000", Ok("#000000"));
        check("#aBcDeF", Ok("#abcdef"));
        for bad in [
            "",
            "#",
            "red",
            "d73a49",
            "#d73a4",
            "#d73a499",
            "#d73",
            "#g73a49",
            " #d73a49",
            "#d73a49 ",
            "#d73a4\0",
            "##73a49",
            "#\u{e9}73a4",
        ] {
            check(bad, Err(refused));
        }
    }

    #[test]
    fn environment_updates_change_only_what_they_name() {
        let mut env = Environment {
            key: "prod".into(),
            name: "Production".into(),
            color: None,
            created_at: 1,
        };
        let update = |name: Option<&str>, color: Option<Option<&str>>| {
            check_environment_update(
                "prod",
                &EnvironmentUpdate {
                    name: name.map(str::to_owned),
                    color: color.map(|c| c.map(str::to_owned)),
                },
            )
        };
        let mut apply =
            |name, color| apply_environment_update(&mut env, &update(name, color).unwrap());
        assert!(!apply(None, None));
        assert!(apply(None, Some(Some("#D73A49"))));
        assert!(
            !apply(Some("Production"), Some(Some("#d73a49"))),
            "the same again"
        );
        assert!(apply(Some("Prod"), None));
        assert_eq!(
            (env.name.as_str(), env.color.as_deref()),
            ("Prod", Some("#d73a49"))
        );
        let mut apply =
            |name, color| apply_environment_update(&mut env, &update(name, color).unwrap());
        assert!(apply(None, Some(None)));
        assert_eq!(env.color, None);

        let refused = |name, color| update(name, color).unwrap_err().to_string();
        assert_eq!(refused(Some(" "), None), "name: must not be blank");
        assert_eq!(
            refused(None, Some(Some("blue"))),
            "color: must be a colour like #d73a49"
        );
        assert!(refused(Some("a\0b"), None).starts_with("name: "));
        let bad_env = check_environment_update("a/b", &EnvironmentUpdate::default());
        assert!(bad_env.unwrap_err().to_string().starts_with("env: "));
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
