//! `flagd sync --descriptors FILE.pb --database URL --env ENV`: makes an environment's flags
//! follow a descriptor set's declarations.
//!
//! - A declared flag the environment lacks is created: variations from its type (`bool`:
//!   `[false, true]`; other types: the supported values, or the compiled default alone, the
//!   default added when it is not among them), off, with the off variation and the
//!   fallthrough serving the compiled default.
//! - A declared flag the environment has keeps its variations and targeting; only what the
//!   declaration describes is written: `description`, the `feature:` and `owner:` tags, and the
//!   `_declared` record (type, layer, feature, file, compiled default). An archived flag that
//!   sync created is brought back.
//! - A flag sync created (its `_declared` record says `"createdBy": "flagd sync"`) that is no
//!   longer declared is archived. Flags sync did not create are never archived.
//! - A declared type or layer that differs from the one recorded for the stored flag, or a
//!   stored variation that is not of the declared type, is a conflict: sync then writes nothing
//!   and names every conflict.
//!
//! Each write is one store write with the version read (so a flag changed meanwhile is not
//! overwritten: run sync again). See `docs/descriptors.md`.

use std::collections::BTreeMap;
use std::fmt;

use flags_store::{Actor, AdminStore, ListFilter, StoreError, StoredFlag};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{DeclaredFlag, FlagType, Registry};

/// The actor sync's writes are recorded under, and the mark of the flags it created.
pub const SYNC_ACTOR: &str = "flagd sync";

/// The member of a flag document where sync records the flag's declaration.
pub const DECLARED: &str = "_declared";

/// The tag prefixes sync manages; other tags are left as they are.
const MANAGED_TAGS: [&str; 2] = ["feature:", "owner:"];

/// What a sync did, flag keys by what happened to them, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Declared flags that did not exist.
    pub created: Vec<String>,
    /// Declared flags whose description, tags or record changed.
    pub updated: Vec<String>,
    /// Declared flags already as declared.
    pub unchanged: Vec<String>,
    /// Flags sync created that are no longer declared.
    pub archived: Vec<String>,
    /// Archived flags sync created that are declared again.
    pub unarchived: Vec<String>,
}

impl SyncReport {
    /// One line of counts: `2 created, 1 updated, 3 unchanged, 1 archived, 0 unarchived`.
    pub fn summary(&self) -> String {
        format!(
            "{} created, {} updated, {} unchanged, {} archived, {} unarchived",
            self.created.len(),
            self.updated.len(),
            self.unchanged.len(),
            self.archived.len(),
            self.unarchived.len()
        )
    }
}

/// A declaration that the stored flag of the same key cannot follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The flag.
    pub key: String,
    /// What differs, and what to do about it.
    pub message: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flag {}: {}", self.key, self.message)
    }
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Declarations conflict with stored flags; nothing was written.
    #[error("{}", conflicts_text(.0))]
    Conflicts(Vec<Conflict>),
    /// The environment could not be read; nothing was written.
    #[error(transparent)]
    Read(#[from] StoreError),
    /// A write failed; what was written before it stays (run sync again once the cause is
    /// fixed: it picks up where it stopped).
    #[error("flag {key}: {source} (written before it: {})", done.summary())]
    Write {
        /// The flag whose write failed.
        key: String,
        /// Why.
        #[source]
        source: StoreError,
        /// What was written before it.
        done: SyncReport,
    },
}

fn conflicts_text(conflicts: &[Conflict]) -> String {
    let mut text = format!(
        "{} declared flag(s) conflict with the stored ones; nothing was written:",
        conflicts.len()
    );
    for conflict in conflicts {
        text.push_str(&format!("\n  {conflict}"));
    }
    text
}

/// Which list of the report a write that succeeded goes into.
#[derive(Debug, Clone, Copy)]
enum Done {
    Created,
    Updated,
    Unarchived,
    Archived,
}

impl SyncReport {
    fn list(&mut self, done: Done) -> &mut Vec<String> {
        match done {
            Done::Created => &mut self.created,
            Done::Updated => &mut self.updated,
            Done::Unarchived => &mut self.unarchived,
            Done::Archived => &mut self.archived,
        }
    }
}

/// One write a sync makes.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Create {
        key: String,
        doc: Value,
    },
    Update {
        key: String,
        doc: Value,
        version: u64,
    },
    Unchanged {
        key: String,
    },
    Unarchive {
        key: String,
    },
    Archive {
        key: String,
        version: u64,
    },
}

/// Makes the flags of environment `env` of `store` follow `registry` (see the module's
/// comment), as `actor`. Conflicts are found before anything is written.
pub async fn sync(
    store: &dyn AdminStore,
    env: &str,
    registry: &Registry,
    actor: &Actor,
) -> Result<SyncReport, SyncError> {
    store.get_environment(env).await?;
    let stored = store.list_flags(env, &ListFilter::default()).await?;
    let steps = plan(registry, &stored).map_err(SyncError::Conflicts)?;
    let mut report = SyncReport::default();
    for step in steps {
        let (done, key, written) = match step {
            Step::Create { key, doc } => {
                let written = store.put_flag(actor, env, &key, doc, None).await;
                (Done::Created, key, written.map(drop))
            }
            Step::Update { key, doc, version } => {
                let written = store.put_flag(actor, env, &key, doc, Some(version)).await;
                (Done::Updated, key, written.map(drop))
            }
            Step::Unchanged { key } => {
                report.unchanged.push(key);
                continue;
            }
            Step::Unarchive { key } => {
                let written = store.set_flag_archived(actor, env, &key, false, None).await;
                (Done::Unarchived, key, written.map(drop))
            }
            Step::Archive { key, version } => {
                let written = store
                    .set_flag_archived(actor, env, &key, true, Some(version))
                    .await;
                (Done::Archived, key, written.map(drop))
            }
        };
        match written {
            Ok(()) => report.list(done).push(key),
            Err(source) => {
                return Err(SyncError::Write {
                    key,
                    source,
                    done: report,
                });
            }
        }
    }
    Ok(report)
}

/// The writes that make `stored` follow `registry`, in order: creates and updates (key
/// order), then unarchives, then archives; or every conflict.
fn plan(registry: &Registry, stored: &[StoredFlag]) -> Result<Vec<Step>, Vec<Conflict>> {
    let stored: BTreeMap<&str, &StoredFlag> = stored
        .iter()
        .map(|flag| (flag.key.as_str(), flag))
        .collect();
    let mut conflicts = Vec::new();
    let mut writes = Vec::new();
    let mut unarchives = Vec::new();
    for declared in registry.flags() {
        let key = declared.key.clone();
        let Some(flag) = stored.get(declared.key.as_str()) else {
            writes.push(Step::Create {
                doc: new_doc(declared),
                key,
            });
            continue;
        };
        if let Err(message) = check_stored(declared, flag) {
            conflicts.push(Conflict { key, message });
            continue;
        }
        let doc = described(declared, &flag.doc);
        if doc == flag.doc {
            writes.push(Step::Unchanged { key: key.clone() });
        } else {
            writes.push(Step::Update {
                key: key.clone(),
                doc,
                version: flag.version,
            });
        }
        if flag.archived && created_by_sync(&flag.doc) {
            unarchives.push(Step::Unarchive { key });
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let archives = stored
        .values()
        .filter(|flag| !flag.archived && created_by_sync(&flag.doc))
        .filter(|flag| registry.get(&flag.key).is_none())
        .map(|flag| Step::Archive {
            key: flag.key.clone(),
            version: flag.version,
        });
    Ok(writes
        .into_iter()
        .chain(unarchives)
        .chain(archives)
        .collect())
}

/// Whether the stored flag can follow the declaration: its recorded type and layer (when an
/// earlier sync recorded them) are the declared ones, and its variations are of the declared
/// type.
fn check_stored(declared: &DeclaredFlag, flag: &StoredFlag) -> Result<(), String> {
    let record = flag.doc.get(DECLARED);
    if let Some(recorded) = record
        .and_then(|r| r.get("type"))
        .and_then(Value::as_str)
        .filter(|recorded| FlagType::parse(recorded) != Some(declared.flag_type))
    {
        return Err(format!(
            "it is declared {}, but was synced as {recorded}; a flag's type cannot change: \
             declare a new field (a new flag) instead, or delete the stored flag first",
            declared.flag_type.name()
        ));
    }
    if let Some(recorded) = record.and_then(|r| r.get("layer")) {
        let recorded = recorded.as_str();
        if recorded != declared.layer.as_deref() {
            return Err(format!(
                "it is declared {}, but was synced {}; a flag's layer cannot change: declare \
                 a new field (a new flag) instead, or delete the stored flag first",
                layer_text(declared.layer.as_deref()),
                layer_text(recorded)
            ));
        }
    }
    if let Some(Value::Array(variations)) = flag.doc.get("variations") {
        declared
            .check_variations(variations)
            .map_err(|mismatch| format!("{}; fix its variations first", mismatch.message))?;
    }
    Ok(())
}

fn layer_text(layer: Option<&str>) -> String {
    match layer {
        Some(kind) => format!("with layer {kind:?}"),
        None => "global (without a layer)".to_owned(),
    }
}

/// Whether sync created the flag of `doc`.
fn created_by_sync(doc: &Value) -> bool {
    doc.get(DECLARED)
        .and_then(|r| r.get("createdBy"))
        .and_then(Value::as_str)
        == Some(SYNC_ACTOR)
}

/// The document of a declared flag that does not exist yet.
fn new_doc(declared: &DeclaredFlag) -> Value {
    let variations = variations_of(declared);
    let default = variations
        .iter()
        .position(|v| *v == declared.default)
        .unwrap_or(0);
    let doc = json!({
        "key": declared.key,
        "on": false,
        "variations": variations,
        "offVariation": default,
        "fallthrough": {"variation": default},
        // Bucketing hashes `{key}.{salt}.{value}`; any fixed text does, and the key is one
        // no other flag has.
        "salt": declared.key,
    });
    let mut doc = described(declared, &doc);
    if let Some(record) = doc.get_mut(DECLARED).and_then(Value::as_object_mut) {
        record.insert("createdBy".to_owned(), Value::from(SYNC_ACTOR));
    }
    doc
}

/// The variations of a new flag: `[false, true]` for a `bool`, else the supported values (each
/// once) with the compiled default added when it is not one of them, or the default alone.
fn variations_of(declared: &DeclaredFlag) -> Vec<Value> {
    if declared.flag_type == FlagType::Bool {
        return vec![Value::Bool(false), Value::Bool(true)];
    }
    let mut variations: Vec<Value> = Vec::new();
    for value in declared
        .supported_values
        .iter()
        .chain(std::iter::once(&declared.default))
    {
        // A value listed twice would be two variations people could not tell apart.
        if !variations.contains(value) {
            variations.push(value.clone());
        }
    }
    variations
}

/// `doc` with what the declaration describes written into it: `description` (removed when
/// the declaration has none), the managed tags, and the `_declared` record (keeping whether
/// sync created the flag).
fn described(declared: &DeclaredFlag, doc: &Value) -> Value {
    let mut doc = doc.clone();
    let Some(members) = doc.as_object_mut() else {
        return doc;
    };
    if declared.description.is_empty() {
        members.remove("description");
    } else {
        members.insert(
            "description".to_owned(),
            Value::from(declared.description.as_str()),
        );
    }
    let mut tags: Vec<Value> = members
        .get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter(|tag| {
                    !tag.as_str()
                        .is_some_and(|t| MANAGED_TAGS.iter().any(|p| t.starts_with(p)))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    tags.push(Value::from(format!("feature:{}", declared.feature_name)));
    if !declared.owner.is_empty() {
        tags.push(Value::from(format!("owner:{}", declared.owner)));
    }
    members.insert("tags".to_owned(), Value::Array(tags));
    let created_by = members
        .get(DECLARED)
        .and_then(|r| r.get("createdBy"))
        .cloned();
    let mut record = Map::new();
    record.insert("type".to_owned(), Value::from(declared.flag_type.name()));
    record.insert(
        "layer".to_owned(),
        declared.layer.as_deref().map_or(Value::Null, Value::from),
    );
    record.insert("feature".to_owned(), Value::from(declared.feature.as_str()));
    record.insert("file".to_owned(), Value::from(declared.file.as_str()));
    record.insert("default".to_owned(), declared.default.clone());
    if let Some(created_by) = created_by {
        record.insert("createdBy".to_owned(), created_by);
    }
    members.insert(DECLARED.to_owned(), Value::Object(record));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(key: &str, flag_type: FlagType, default: Value) -> DeclaredFlag {
        DeclaredFlag {
            key: key.to_owned(),
            flag_type,
            layer: None,
            default,
            supported_values: Vec::new(),
            description: String::new(),
            feature: "shop.Checkout".to_owned(),
            feature_name: "checkout".to_owned(),
            owner: String::new(),
            file: "shop/flags.proto".to_owned(),
            field: key.rsplit('.').next().unwrap_or(key).to_owned(),
        }
    }

    #[test]
    fn new_flags_serve_their_compiled_default_off_and_through() {
        let check = |flag: DeclaredFlag, variations: Value, index: usize| {
            let doc = new_doc(&flag);
            assert_eq!(doc["variations"], variations, "{doc}");
            assert_eq!(doc["offVariation"], json!(index), "{doc}");
            assert_eq!(doc["fallthrough"], json!({"variation": index}), "{doc}");
            assert_eq!(doc["on"], json!(false));
            assert_eq!(doc[DECLARED]["createdBy"], json!(SYNC_ACTOR));
            assert_eq!(doc[DECLARED]["type"], json!(flag.flag_type.name()));
        };
        check(
            declared("checkout.on", FlagType::Bool, json!(true)),
            json!([false, true]),
            1,
        );
        check(
            declared("checkout.limit", FlagType::Int64, json!(5)),
            json!([5]),
            0,
        );
        let mut with_values = declared("checkout.mode", FlagType::String, json!("b"));
        with_values.supported_values = vec![json!("a"), json!("b"), json!("a")];
        check(with_values.clone(), json!(["a", "b"]), 1);
        // A default that is not a supported value (the type's zero value, say) is added.
        with_values.default = json!("");
        check(with_values, json!(["a", "b", ""]), 2);
    }

    #[test]
    fn describing_keeps_targeting_and_other_tags() {
        let mut flag = declared("checkout.on", FlagType::Bool, json!(false));
        flag.description = "New checkout".to_owned();
        flag.owner = "payments".to_owned();
        let stored = json!({
            "key": "checkout.on", "version": 4, "on": true, "variations": [false, true],
            "rules": [{"variation": 1, "clauses": []}], "tags": ["team-x", "owner:old"],
            "_declared": {"type": "bool", "layer": null, "createdBy": SYNC_ACTOR},
        });
        let doc = described(&flag, &stored);
        assert_eq!(doc["rules"], stored["rules"]);
        assert_eq!(doc["on"], json!(true));
        assert_eq!(doc["description"], json!("New checkout"));
        assert_eq!(
            doc["tags"],
            json!(["team-x", "feature:checkout", "owner:payments"])
        );
        assert_eq!(doc[DECLARED]["createdBy"], json!(SYNC_ACTOR));
        assert_eq!(
            described(&flag, &doc),
            doc,
            "describing twice changes nothing"
        );
    }

    fn stored(key: &str, doc: Value, archived: bool) -> StoredFlag {
        StoredFlag {
            key: key.to_owned(),
            version: 3,
            archived,
            updated_at: 0,
            doc,
        }
    }

    #[test]
    fn conflicts_are_found_before_any_write() {
        let registry = Registry::from_flags(vec![
            declared("a.int", FlagType::Int64, json!(1)),
            declared("a.bool", FlagType::Bool, json!(false)),
            DeclaredFlag {
                layer: Some("org".to_owned()),
                ..declared("a.layered", FlagType::Bool, json!(false))
            },
            declared("a.new", FlagType::Bool, json!(false)),
        ]);
        let flags = [
            // Recorded as a string by an earlier sync.
            stored(
                "a.int",
                json!({"variations": [1], "_declared": {"type": "string"}}),
                false,
            ),
            // Made by hand with a string variation.
            stored("a.bool", json!({"variations": [false, "yes"]}), false),
            stored(
                "a.layered",
                json!({"variations": [false, true], "_declared": {"type": "bool", "layer": "user"}}),
                false,
            ),
        ];
        let conflicts = plan(&registry, &flags).unwrap_err();
        let messages: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert!(
            messages[0].starts_with("flag a.bool: flag \"a.bool\" is declared bool"),
            "{messages:#?}"
        );
        assert!(messages[0].contains("variation 1, \"yes\", is not a boolean"));
        assert!(
            messages[1].contains("declared int64, but was synced as string"),
            "{messages:#?}"
        );
        assert!(
            messages[2].contains("declared with layer \"org\", but was synced with layer \"user\""),
            "{messages:#?}"
        );
    }

    #[test]
    fn only_flags_sync_created_are_archived_and_brought_back() {
        let registry = Registry::from_flags(vec![declared("a.back", FlagType::Bool, json!(false))]);
        let ours = json!({"variations": [false, true], "_declared": {"type": "bool", "createdBy": SYNC_ACTOR}});
        let flags = [
            stored("a.back", ours.clone(), true),
            stored("a.gone", ours.clone(), false),
            stored("a.gone-already", ours, true),
            stored("a.hand-made", json!({"variations": [1]}), false),
        ];
        let steps = plan(&registry, &flags).unwrap();
        let kinds: Vec<(&str, &str)> = steps
            .iter()
            .map(|step| match step {
                Step::Create { key, .. } => ("create", key.as_str()),
                Step::Update { key, .. } => ("update", key.as_str()),
                Step::Unchanged { key } => ("unchanged", key.as_str()),
                Step::Unarchive { key } => ("unarchive", key.as_str()),
                Step::Archive { key, .. } => ("archive", key.as_str()),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("update", "a.back"),
                ("unarchive", "a.back"),
                ("archive", "a.gone")
            ]
        );
    }
}
