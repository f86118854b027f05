//! Moving an environment's flags and segments in and out as a LaunchDarkly flag file
//! (`{"flags":{},"segments":{},"flagValues":{}}`): `flagd import` / `flagd export` and the
//! import/export routes.
//!
//! Round trip: exporting an environment and importing the file into an empty environment gives
//! an environment that exports to the same file. Importing a file stores each document as
//! written, with its `key` and `version` set by the store; items already equal to the file's
//! are left alone (no new version, no audit entry), so importing the same file twice is a no-op.
//! An import is all or nothing: one refused item and nothing of the file is stored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use flags_core::ItemKind;
use flags_store::{Actor, AdminStore, ImportItem, ImportOutcome, ListFilter, StoreError};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::problem::Problem;
use flags_wire::file::{parse_document, simple_flag};

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// Flags created, by key.
    pub flags_created: Vec<String>,
    /// Flags replaced.
    pub flags_replaced: Vec<String>,
    /// Flags already equal to the file's.
    pub flags_unchanged: Vec<String>,
    /// Segments created.
    pub segments_created: Vec<String>,
    /// Segments replaced.
    pub segments_replaced: Vec<String>,
    /// Segments already equal to the file's.
    pub segments_unchanged: Vec<String>,
    /// What the checks warn about in the file's items, which were stored anyway, located as
    /// `flagd validate` locates them (`flags.KEY.rules[0]...`); flags by key, then segments.
    /// Left out of the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

impl ImportReport {
    /// One line of counts for a person: `imported into "prod": 1200 flags (1000 created, 150
    /// replaced, 50 unchanged), 30 segments (30 created, 0 replaced, 0 unchanged), 3 warnings`.
    pub fn summary(&self, env: &str) -> String {
        let counts = |noun: &str, created: &[String], replaced: &[String], unchanged: &[String]| {
            let total = created.len() + replaced.len() + unchanged.len();
            format!(
                "{} ({} created, {} replaced, {} unchanged)",
                plural(total, noun),
                created.len(),
                replaced.len(),
                unchanged.len()
            )
        };
        format!(
            "imported into {env:?}: {}, {}, {}",
            counts(
                "flag",
                &self.flags_created,
                &self.flags_replaced,
                &self.flags_unchanged
            ),
            counts(
                "segment",
                &self.segments_created,
                &self.segments_replaced,
                &self.segments_unchanged
            ),
            plural(self.warnings.len(), "warning"),
        )
    }
}

/// `1 flag`, `2 flags`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Where an import is, for a progress display: the steps come in this order, each with counts
/// that only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportStep {
    /// Reading and parsing the file.
    Reading,
    /// Checking the documents for what to warn about: `done` of `total` items.
    Checking {
        /// Items checked so far.
        done: usize,
        /// Items in the file (`flagValues` entries count as flags).
        total: usize,
    },
    /// Writing the items in one transaction: `done` of `total` applied, none committed until
    /// the last.
    Writing {
        /// Items applied so far.
        done: usize,
        /// Items in the file.
        total: usize,
    },
}

/// What an import tells of its progress; `&|_| {}` for nothing.
pub type ImportProgress<'a> = &'a (dyn Fn(ImportStep) + Send + Sync);

/// Something the checks found in a written item that does not refuse the write (an invalid
/// regular expression, date or version in a clause, weights that do not add up), with the
/// message `flagd validate` gives for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The field path: inside the item in the answers of item writes, inside the file in an
    /// import report.
    pub path: String,
    /// What may not work as meant.
    pub message: String,
}

/// Why an import failed. Nothing of the file is stored then; the error names the item that
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a LaunchDarkly flag file.
    #[error("{message}")]
    Format {
        /// What is wrong, with the field path.
        message: String,
    },
    /// The store refused the import as a whole (the environment does not exist, the store is
    /// down), whose error says so itself.
    #[error(transparent)]
    Environment(StoreError),
    /// The store refused an item.
    #[error("{item}: {source}")]
    Store {
        /// `flag checkout` or `segment beta`.
        item: String,
        /// The store's answer.
        #[source]
        source: StoreError,
    },
}

impl From<ImportError> for Problem {
    fn from(error: ImportError) -> Problem {
        match error {
            ImportError::Read { .. } => Problem::new(
                StatusCode::BAD_REQUEST,
                "unreadable-file",
                error.to_string(),
            ),
            ImportError::Format { message } => Problem::invalid("", message),
            ImportError::Environment(source) => Problem::from_store(source, false),
            ImportError::Store { item, source } => {
                let mut problem = Problem::from_store(source, false);
                problem.detail = format!("{item}: {}", problem.detail);
                for (path, _) in &mut problem.errors {
                    *path = item_path(&item, path);
                }
                problem
            }
        }
    }
}

/// `flags.checkout.rules[0]` from `flag checkout` and `rules[0]`.
fn item_path(item: &str, path: &str) -> String {
    let prefix = match item.split_once(' ') {
        Some(("flag", key)) => format!("flags.{key}"),
        Some(("segment", key)) => format!("segments.{key}"),
        _ => return path.to_owned(),
    };
    if path.is_empty() {
        prefix
    } else {
        format!("{prefix}.{path}")
    }
}

/// Imports a LaunchDarkly flag file (JSON or YAML, as `flagd serve --file` reads) into `env`,
/// which must exist. See [`import_document`].
pub async fn import_file(
    store: &dyn AdminStore,
    env: &str,
    path: &Path,
    actor: &Actor,
) -> Result<ImportReport, ImportError> {
    import_file_with_progress(store, env, path, actor, &|_| {}).await
}

/// [`import_file`], telling `progress` of each step as it goes (`flagd import` draws it).
pub async fn import_file_with_progress(
    store: &dyn AdminStore,
    env: &str,
    path: &Path,
    actor: &Actor,
    progress: ImportProgress<'_>,
) -> Result<ImportReport, ImportError> {
    progress(ImportStep::Reading);
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    let doc = parse_document(path, &bytes).map_err(|p| ImportError::Format {
        message: p.to_string(),
    })?;
    import_document_with_progress(store, env, doc, actor, progress).await
}

/// Imports a parsed LaunchDarkly flag file into `env`: every segment, then every flag (each
/// after what it refers to), created or replaced; `flagValues` entries become simple flags.
/// Items of the environment that the file does not name are left alone.
///
/// It is one [`AdminStore::import`]: every document is checked first, then all are written in
/// one transaction, so a file with one bad item stores nothing and the error names that item.
pub async fn import_document(
    store: &dyn AdminStore,
    env: &str,
    doc: Value,
    actor: &Actor,
) -> Result<ImportReport, ImportError> {
    import_document_with_progress(store, env, doc, actor, &|_| {}).await
}

/// [`import_document`], telling `progress` how many items are checked, then written.
pub async fn import_document_with_progress(
    store: &dyn AdminStore,
    env: &str,
    doc: Value,
    actor: &Actor,
    progress: ImportProgress<'_>,
) -> Result<ImportReport, ImportError> {
    let (mut flags, mut segments) = split_file(doc)?;
    let mut items = Vec::with_capacity(flags.len() + segments.len());
    for key in dependency_order(&segments, segment_refs) {
        if let Some(doc) = segments.remove(&key) {
            items.push(ImportItem {
                kind: ItemKind::Segment,
                key,
                doc,
            });
        }
    }
    for key in dependency_order(&flags, prerequisite_refs) {
        if let Some(doc) = flags.remove(&key) {
            items.push(ImportItem {
                kind: ItemKind::Flag,
                key,
                doc,
            });
        }
    }
    let keys: Vec<(ItemKind, String)> = items
        .iter()
        .map(|item| (item.kind, item.key.clone()))
        .collect();
    let total = items.len();
    let warnings = file_warnings(&items, &|done| {
        progress(ImportStep::Checking { done, total });
    });
    progress(ImportStep::Writing { done: 0, total });
    let written = |done| progress(ImportStep::Writing { done, total });
    let outcomes = store
        .import_with_progress(actor, env, items, &written)
        .await
        .map_err(|e| match e.item {
            Some((kind, key)) => ImportError::Store {
                item: match kind {
                    ItemKind::Flag => format!("flag {key}"),
                    ItemKind::Segment => format!("segment {key}"),
                },
                source: e.source,
            },
            None => ImportError::Environment(e.source),
        })?;
    let mut report = ImportReport::default();
    for ((kind, key), outcome) in keys.into_iter().zip(outcomes) {
        let list = match (kind, outcome) {
            (ItemKind::Flag, ImportOutcome::Created) => &mut report.flags_created,
            (ItemKind::Flag, ImportOutcome::Replaced) => &mut report.flags_replaced,
            (ItemKind::Flag, ImportOutcome::Unchanged) => &mut report.flags_unchanged,
            (ItemKind::Segment, ImportOutcome::Created) => &mut report.segments_created,
            (ItemKind::Segment, ImportOutcome::Replaced) => &mut report.segments_replaced,
            (ItemKind::Segment, ImportOutcome::Unchanged) => &mut report.segments_unchanged,
        };
        list.push(key);
    }
    for list in [
        &mut report.flags_created,
        &mut report.flags_replaced,
        &mut report.flags_unchanged,
        &mut report.segments_created,
        &mut report.segments_replaced,
        &mut report.segments_unchanged,
    ] {
        list.sort();
    }
    report.warnings = warnings;
    Ok(report)
}

/// The warnings of the items of a file, as the store would answer their writes, with paths in
/// the file; flags by key, then segments by key. `checked` hears how many items are done.
fn file_warnings(items: &[ImportItem], checked: &dyn Fn(usize)) -> Vec<Warning> {
    let mut sorted: Vec<&ImportItem> = items.iter().collect();
    sorted.sort_by_key(|item| (item.kind == ItemKind::Segment, &item.key));
    checked(0);
    let mut warnings = Vec::new();
    for (n, item) in sorted.into_iter().enumerate() {
        let item_name = match item.kind {
            ItemKind::Flag => format!("flag {}", item.key),
            ItemKind::Segment => format!("segment {}", item.key),
        };
        warnings.extend(item.warnings().into_iter().map(|problem| Warning {
            path: item_path(&item_name, &problem.path),
            message: problem.message,
        }));
        checked(n + 1);
    }
    warnings
}

/// The live (not archived) flags and segments of `env` as a LaunchDarkly flag file
/// (`{"flags":{key: doc},"segments":{key: doc}}`), documents exactly as stored. The kill set and
/// overrides are not part of that format and are not exported.
pub async fn export_env(store: &dyn AdminStore, env: &str) -> Result<Value, StoreError> {
    store.get_environment(env).await?;
    let live = ListFilter {
        archived: Some(false),
        key_prefix: None,
    };
    let flags: Map<String, Value> = store
        .list_flags(env, &live)
        .await?
        .into_iter()
        .map(|f| (f.key, f.doc))
        .collect();
    let segments: Map<String, Value> = store
        .list_segments(env, &live)
        .await?
        .into_iter()
        .map(|s| (s.key, s.doc))
        .collect();
    Ok(json!({ "flags": flags, "segments": segments }))
}

type Items = BTreeMap<String, Value>;

/// The flags (with `flagValues` turned into flags) and segments of a file.
fn split_file(doc: Value) -> Result<(Items, Items), ImportError> {
    let format = |message: String| ImportError::Format { message };
    let Value::Object(mut top) = doc else {
        return Err(format(
            "expected an object with \"flags\", \"segments\" and \"flagValues\"".to_owned(),
        ));
    };
    if let Some(name) = top
        .keys()
        .find(|k| !matches!(k.as_str(), "flags" | "segments" | "flagValues"))
    {
        return Err(format(format!(
            "{name}: unknown top-level field (expected \"flags\", \"segments\" or \"flagValues\")"
        )));
    }
    let mut section = |name: &str| -> Result<Items, ImportError> {
        match top.remove(name) {
            None | Some(Value::Null) => Ok(Items::new()),
            Some(Value::Object(map)) => Ok(map.into_iter().collect()),
            Some(_) => Err(format(format!("{name}: expected an object"))),
        }
    };
    let mut flags = section("flags")?;
    let segments = section("segments")?;
    for (key, value) in section("flagValues")? {
        if flags.contains_key(&key) {
            return Err(format(format!(
                "flagValues.{key}: duplicate flag key {key:?}: also under \"flags\""
            )));
        }
        let flag = simple_flag(&key, value);
        flags.insert(key, flag);
    }
    Ok((flags, segments))
}

/// Keys named by `prerequisites[].key`.
fn prerequisite_refs(doc: &Value) -> Vec<String> {
    doc.get("prerequisites")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("key").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// Segment keys named by `segmentMatch` clauses of `rules`.
fn segment_refs(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for rule in doc
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for clause in rule
            .get("clauses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if clause.get("op").and_then(Value::as_str) == Some("segmentMatch") {
                out.extend(
                    clause
                        .get("values")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned),
                );
            }
        }
    }
    out
}

/// The keys of `items` ordered so that each comes after the items of the file it refers to.
/// A cycle is left for the store to reject, with its own message.
fn dependency_order(items: &Items, refs: fn(&Value) -> Vec<String>) -> Vec<String> {
    fn visit(
        key: &str,
        items: &Items,
        refs: fn(&Value) -> Vec<String>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(key.to_owned()) {
            return;
        }
        if let Some(doc) = items.get(key) {
            for dep in refs(doc) {
                if items.contains_key(&dep) {
                    visit(&dep, items, refs, seen, out);
                }
            }
            out.push(key.to_owned());
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for key in items.keys() {
        visit(key, items, refs, &mut seen, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_summary_counts_each_outcome() {
        let keys = |n: usize| (0..n).map(|i| format!("k{i}")).collect::<Vec<_>>();
        let report = ImportReport {
            flags_created: keys(1000),
            flags_replaced: keys(150),
            flags_unchanged: keys(50),
            segments_created: keys(1),
            warnings: vec![
                Warning {
                    path: "flags.a.rules[0]".to_owned(),
                    message: "m".to_owned(),
                };
                3
            ],
            ..ImportReport::default()
        };
        assert_eq!(
            report.summary("prod"),
            "imported into \"prod\": 1200 flags (1000 created, 150 replaced, 50 unchanged), \
             1 segment (1 created, 0 replaced, 0 unchanged), 3 warnings"
        );
        let one = ImportReport {
            flags_unchanged: keys(1),
            warnings: report.warnings[..1].to_vec(),
            ..ImportReport::default()
        };
        assert_eq!(
            one.summary("p"),
            "imported into \"p\": 1 flag (0 created, 0 replaced, 1 unchanged), \
             0 segments (0 created, 0 replaced, 0 unchanged), 1 warning"
        );
    }

    #[tokio::test]
    async fn progress_goes_through_checking_then_writing() {
        let store = flags_store::MemoryStore::new();
        let actor = Actor::named("test");
        store.create_environment(&actor, "p", "p").await.unwrap();
        let file = json!({
            "flagValues": {"a": true, "b": 2},
            "segments": {"s": {"included": ["u"]}}
        });
        let steps = std::sync::Mutex::new(Vec::new());
        let record = |step| steps.lock().unwrap().push(step);
        let report = import_document_with_progress(&store, "p", file, &actor, &record)
            .await
            .unwrap();
        assert_eq!(report.flags_created, ["a", "b"]);
        let checking = |done| ImportStep::Checking { done, total: 3 };
        let writing = |done| ImportStep::Writing { done, total: 3 };
        assert_eq!(
            *steps.lock().unwrap(),
            [
                checking(0),
                checking(1),
                checking(2),
                checking(3),
                writing(0),
                writing(1),
                writing(2),
                writing(3),
            ]
        );
    }

    #[test]
    fn prerequisites_come_first() {
        let items: Items = [
            (
                "a".to_owned(),
                json!({"prerequisites": [{"key": "c", "variation": 0}]}),
            ),
            ("b".to_owned(), json!({})),
            (
                "c".to_owned(),
                json!({"prerequisites": [{"key": "b", "variation": 0}, {"key": "zz"}]}),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(dependency_order(&items, prerequisite_refs), ["b", "c", "a"]);
    }

    #[test]
    fn nested_segments_come_first() {
        let items: Items = [
            (
                "outer".to_owned(),
                json!({"rules": [{"clauses": [{"op": "segmentMatch", "values": ["z-inner"]}]}]}),
            ),
            ("z-inner".to_owned(), json!({})),
        ]
        .into_iter()
        .collect();
        assert_eq!(dependency_order(&items, segment_refs), ["z-inner", "outer"]);
    }
}
