//! The administrative store: where flags, segments, the kill set, overrides, API keys and the
//! audit log live when flagd runs over a database.
//!
//! This module holds the vocabulary and the [`AdminStore`] trait that every backend implements
//! (`flags-store-postgres`, and [`MemoryStore`] here for tests), plus the validation every backend
//! runs before it stores anything ([`validate`]), so "nothing invalid is ever stored" is one piece
//! of code rather than one per database. It does no I/O itself: the trait is async so backends can,
//! but nothing here depends on an async runtime.
//!
//! The rules every implementation keeps (checked by the conformance suite, `conformance`, behind
//! the `test-util` feature):
//! - Every write validates fully before it stores (the flag or segment parses, its variation
//!   indexes are in range, every prerequisite and segment it names exists and is not archived, and
//!   no prerequisite or segment cycle appears), and it validates inside the same transaction as the
//!   write, so two racing writes cannot together store what neither alone would be allowed to.
//! - Writes to one environment are serialized; each applied write bumps the item's version, writes
//!   exactly one [`AuditEntry`] and records [`Change`]s, all atomically. A write that changes
//!   nothing (killing a killed flag) writes no audit entry and no change.
//! - Change sequence numbers of one environment are committed in increasing order, so a reader that
//!   has seen change `n` has seen every change of that environment before `n`.
//! - Deleted flags and segments leave a tombstone version behind: creating the key again continues
//!   from it, so a replica that saw the deletion never ignores the new item as stale.
//! - Archived items are kept (and listed, and in snapshots) but are not served; live items never
//!   reference archived or missing ones.
//! - Every operation checks its arguments before it reads or writes anything (the `check_*`
//!   functions of [`validate`]): a key no environment, flag or segment can have, or text
//!   holding NUL (which PostgreSQL keeps in neither `text` nor `jsonb`), is
//!   [`StoreError::Invalid`] with the argument's name or the document's field path, the same
//!   from every backend.
//!
//! ```
//! use flags_store::{Actor, AdminStore, ChangeFeed, MemoryStore, StoreError};
//! use serde_json::json;
//!
//! /// The same code runs over every backend: `MemoryStore` here, PostgreSQL in production.
//! async fn release(store: &dyn AdminStore) -> Result<(), StoreError> {
//!     let admin = Actor::named("release-script");
//!     store.create_environment(&admin, "production", "Production").await?;
//!     let flag = json!({"variations": [false, true], "fallthrough": {"variation": 0}});
//!     let stored = store.put_flag(&admin, "production", "dark-mode", flag, None).await?;
//!     assert_eq!(stored.version, 1);
//!
//!     // Nothing invalid is stored: this flag falls through to a variation it does not have.
//!     let bad = json!({"variations": [false, true], "fallthrough": {"variation": 5}});
//!     let refused = store.put_flag(&admin, "production", "broken", bad, None).await;
//!     assert!(matches!(refused, Err(StoreError::Invalid { .. })));
//!
//!     // Replicas load an environment whole, then follow its changes from the cursor.
//!     let snapshot = store.snapshot("production").await?;
//!     assert_eq!(snapshot.flags.len(), 1);
//!     assert!(store.changes_since("production", snapshot.cursor).await?.is_empty());
//!     Ok(())
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), StoreError> {
//!     release(&MemoryStore::new()).await
//! }
//! ```

#![warn(missing_docs)]

// The README's example runs as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod big_segments;
pub mod check;
mod fields;
mod keys;
mod memory;
pub mod validate;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use flags_core::ItemKind;
use flags_core::LoadError;
use flags_core::{Flag, FlagData, Problem, Segment, Severity};

pub use big_segments::{
    BigSegmentMembers, COPY_CHUNK, MemberChange, MemberOp, MemberUpload, MemoryBigSegments,
    UploadError, copy_changes, membership_of,
};
pub use keys::{generate_secret, hash_secret, secret_kind};
pub use memory::MemoryStore;

/// An environment: a separate set of flags, segments, kill set and overrides (`production`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// The key used in URLs (`production`); letters, digits, `.`, `_`, `-`, but not `.` or
    /// `..`.
    pub key: String,
    /// A human-readable name (the display name of the environment).
    pub name: String,
    /// The colour people see the environment in, `#rrggbb` in lower case, so that a page
    /// about production does not look like one about staging; `None` when none was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// When it was created, in Unix milliseconds.
    pub created_at: u64,
}

/// An environment to create ([`AdminStore::create_environment_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnvironment {
    /// Its key ([`check::key`]).
    pub key: String,
    /// Its name; not blank.
    pub name: String,
    /// Its colour, `#rrggbb` (either case; stored in lower case).
    pub color: Option<String>,
}

impl NewEnvironment {
    /// An environment with a key and a name, and no colour.
    pub fn new(key: &str, name: &str) -> NewEnvironment {
        NewEnvironment {
            key: key.to_owned(),
            name: name.to_owned(),
            color: None,
        }
    }
}

/// What [`AdminStore::update_environment`] changes: each field left `None` is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentUpdate {
    /// A new name; not blank.
    pub name: Option<String>,
    /// A new colour (`Some(Some("#rrggbb"))`, either case), or none (`Some(None)`).
    pub color: Option<Option<String>>,
}

/// A flag as stored: the LaunchDarkly flag JSON exactly as written, with `key` and `version` set
/// by the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFlag {
    /// The flag key.
    pub key: String,
    /// The version, bumped by every applied write (archive and unarchive included).
    pub version: u64,
    /// Archived flags are kept but not served.
    pub archived: bool,
    /// When it was last written, in Unix milliseconds.
    pub updated_at: u64,
    /// The LaunchDarkly flag JSON; its `key` and `version` equal the fields above.
    pub doc: Value,
}

impl StoredFlag {
    /// The document as a [`Flag`]. Stored documents were validated when written, so this only
    /// fails if the store was changed behind flagd's back.
    pub fn to_flag(&self) -> Result<Flag, LoadError> {
        Flag::from_json_value(self.doc.clone())
    }

    /// The warnings about the document: what the checks find that does not refuse a write
    /// ([`check::flag`] findings that are advisory), with paths inside the document. A write
    /// answers with them.
    ///
    /// They are read off the stored document rather than returned by the write: every check
    /// that depends on other items refuses, so the warnings depend on the document alone, every
    /// backend gives the same ones, and the store traits need not carry them.
    pub fn warnings(&self) -> Vec<Problem> {
        document_warnings(ItemKind::Flag, &self.doc)
    }
}

/// A segment as stored; see [`StoredFlag`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSegment {
    /// The segment key.
    pub key: String,
    /// The version, bumped by every applied write.
    pub version: u64,
    /// Archived segments are kept but not served.
    pub archived: bool,
    /// When it was last written, in Unix milliseconds.
    pub updated_at: u64,
    /// The LaunchDarkly segment JSON; its `key` and `version` equal the fields above.
    pub doc: Value,
}

impl StoredSegment {
    /// The document as a [`Segment`]; see [`StoredFlag::to_flag`].
    pub fn to_segment(&self) -> Result<Segment, LoadError> {
        Segment::from_json_value(self.doc.clone())
    }

    /// The warnings about the document; see [`StoredFlag::warnings`].
    pub fn warnings(&self) -> Vec<Problem> {
        document_warnings(ItemKind::Segment, &self.doc)
    }
}

/// The warnings a write of `doc` answers with (none for a document that does not parse, which
/// the write refuses).
fn document_warnings(kind: ItemKind, doc: &Value) -> Vec<Problem> {
    let findings = match kind {
        ItemKind::Flag => Flag::from_json_value(doc.clone()).map(|flag| check::flag(&flag)),
        ItemKind::Segment => {
            Segment::from_json_value(doc.clone()).map(|segment| check::segment(&segment))
        }
    };
    let purpose = check::Purpose::Write;
    findings
        .unwrap_or_default()
        .iter()
        .filter(|f| f.severity(purpose) == Severity::Warning)
        .map(|f| f.to_problem(purpose, None))
        .collect()
}

/// Which flags or segments a list returns. Results are sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// `Some(false)`: live items only; `Some(true)`: archived only; `None`: both.
    pub archived: Option<bool>,
    /// Only keys starting with this text.
    pub key_prefix: Option<String>,
}

/// A batch change to the individual keys of a segment.
///
/// With `context_kind` `None` the keys go to the segment's `included` / `excluded` lists (user
/// keys, the pre-context form); with a kind they go to the `includedContexts` /
/// `excludedContexts` entry of that kind, which is created when missing and dropped when emptied.
/// Removals apply before additions; adding a present key or removing an absent one is not an
/// error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SegmentTargetsUpdate {
    /// The context kind of the keys; `None` for the plain user lists.
    pub context_kind: Option<String>,
    /// Keys to add to the included list.
    pub add_included: Vec<String>,
    /// Keys to remove from the included list.
    pub remove_included: Vec<String>,
    /// Keys to add to the excluded list.
    pub add_excluded: Vec<String>,
    /// Keys to remove from the excluded list.
    pub remove_excluded: Vec<String>,
}

/// Which context of which flag an override pins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideKey {
    /// The flag.
    pub flag_key: String,
    /// The context kind (`user`, `org`).
    pub context_kind: String,
    /// The context key.
    pub context_key: String,
}

/// One override: a context pinned to a variation of a flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Override {
    /// The context kind.
    pub context_kind: String,
    /// The context key.
    pub context_key: String,
    /// The variation index served to it.
    pub variation: usize,
}

/// One override of an environment, with the flag it belongs to (as in [`EnvSnapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagOverride {
    /// The flag.
    pub flag_key: String,
    /// The context kind.
    pub context_kind: String,
    /// The context key.
    pub context_key: String,
    /// The variation index served to it.
    pub variation: usize,
}

/// Who makes a write: the API key's id and name, recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// The stored key's id; `None` for keys that are not stored (the bootstrap admin key from
    /// the command line) and for the system itself (imports).
    pub key_id: Option<u64>,
    /// The key's name, or what the caller calls itself.
    pub name: String,
}

impl Actor {
    /// An actor that is not a stored key (`bootstrap`, `import`).
    pub fn named(name: &str) -> Actor {
        Actor {
            key_id: None,
            name: name.to_owned(),
        }
    }

    /// The actor for a stored key.
    pub fn key(key: &ApiKey) -> Actor {
        Actor {
            key_id: Some(key.id),
            name: key.name.clone(),
        }
    }
}

/// What an audit entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditItemKind {
    /// An environment.
    Environment,
    /// A flag (kills and overrides included: they are about a flag).
    Flag,
    /// A segment.
    Segment,
    /// An API key.
    ApiKey,
}

impl AuditItemKind {
    /// The name used in storage and JSON: `environment`, `flag`, `segment`, `api_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditItemKind::Environment => "environment",
            AuditItemKind::Flag => "flag",
            AuditItemKind::Segment => "segment",
            AuditItemKind::ApiKey => "api_key",
        }
    }

    /// Reads a name written by [`AuditItemKind::as_str`].
    pub fn parse(name: &str) -> Option<AuditItemKind> {
        [
            AuditItemKind::Environment,
            AuditItemKind::Flag,
            AuditItemKind::Segment,
            AuditItemKind::ApiKey,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAction {
    /// Created (environment, flag, segment, key).
    Create,
    /// Changed an environment's name or colour.
    Update,
    /// Replaced a flag or segment.
    Replace,
    /// Archived a flag or segment.
    Archive,
    /// Brought an archived flag or segment back.
    Unarchive,
    /// Deleted a flag or segment.
    Delete,
    /// Added or removed individual keys of a segment.
    UpdateTargets,
    /// Killed a flag.
    Kill,
    /// Unkilled a flag.
    Unkill,
    /// Set an override.
    SetOverride,
    /// Removed an override.
    RemoveOverride,
    /// Revoked an API key.
    Revoke,
}

impl AuditAction {
    const ALL: [AuditAction; 12] = [
        AuditAction::Create,
        AuditAction::Update,
        AuditAction::Replace,
        AuditAction::Archive,
        AuditAction::Unarchive,
        AuditAction::Delete,
        AuditAction::UpdateTargets,
        AuditAction::Kill,
        AuditAction::Unkill,
        AuditAction::SetOverride,
        AuditAction::RemoveOverride,
        AuditAction::Revoke,
    ];

    /// The name used in storage and JSON (`create`, `set_override`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Replace => "replace",
            AuditAction::Archive => "archive",
            AuditAction::Unarchive => "unarchive",
            AuditAction::Delete => "delete",
            AuditAction::UpdateTargets => "update_targets",
            AuditAction::Kill => "kill",
            AuditAction::Unkill => "unkill",
            AuditAction::SetOverride => "set_override",
            AuditAction::RemoveOverride => "remove_override",
            AuditAction::Revoke => "revoke",
        }
    }

    /// Reads a name written by [`AuditAction::as_str`].
    pub fn parse(name: &str) -> Option<AuditAction> {
        AuditAction::ALL
            .into_iter()
            .find(|action| action.as_str() == name)
    }
}

/// One applied write, as recorded in the audit log. Entries outlive what they are about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Increases with every entry.
    pub id: u64,
    /// The environment written to; `None` for keys scoped to every environment.
    pub env: Option<String>,
    /// What kind of item.
    pub item_kind: AuditItemKind,
    /// Its key (the flag key for kills and overrides; the key id for API keys).
    pub item_key: String,
    /// What was done.
    pub action: AuditAction,
    /// Who did it.
    pub actor: Actor,
    /// The item before (`None` when created). Flags and segments: the stored document
    /// (archiving: `{"archived": bool}`); kills: `{"killed": bool}`; overrides:
    /// `{"contextKind","contextKey","variation"}`; environments and keys: their public fields,
    /// never a key's secret or its hash.
    pub before: Option<Value>,
    /// The item after (`None` when deleted or removed).
    pub after: Option<Value>,
    /// When, in Unix milliseconds.
    pub at: u64,
}

/// The newest audit entry about one flag of an environment ([`AdminStore::flag_last_changes`]):
/// who last wrote, killed, unkilled or overrode it, how, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastChange {
    /// Who.
    pub actor: Actor,
    /// What was done.
    pub action: AuditAction,
    /// When, in Unix milliseconds.
    pub at: u64,
}

impl LastChange {
    /// The last change an audit entry records.
    pub fn of(entry: &AuditEntry) -> LastChange {
        LastChange {
            actor: entry.actor.clone(),
            action: entry.action,
            at: entry.at,
        }
    }
}

/// Which audit entries to read. Entries come newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this environment's entries; `None` for all (global key entries included).
    pub env: Option<String>,
    /// Only entries about this item (`(Flag, "checkout")`).
    pub item: Option<(AuditItemKind, String)>,
    /// At most this many.
    pub limit: usize,
    /// Only entries older than this id (for paging).
    pub before_id: Option<u64>,
}

impl AuditQuery {
    /// The newest `limit` entries of an environment.
    pub fn env(env: &str, limit: usize) -> AuditQuery {
        AuditQuery {
            env: Some(env.to_owned()),
            item: None,
            limit,
            before_id: None,
        }
    }

    /// The newest `limit` entries about one flag of an environment.
    pub fn flag(env: &str, flag_key: &str, limit: usize) -> AuditQuery {
        AuditQuery {
            item: Some((AuditItemKind::Flag, flag_key.to_owned())),
            ..AuditQuery::env(env, limit)
        }
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyKind {
    /// Evaluation and SDK endpoints; the key selects the environment.
    Sdk,
    /// The admin API.
    Admin,
}

impl ApiKeyKind {
    /// `sdk` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKeyKind::Sdk => "sdk",
            ApiKeyKind::Admin => "admin",
        }
    }

    /// Reads `sdk` or `admin`.
    pub fn parse(name: &str) -> Option<ApiKeyKind> {
        match name {
            "sdk" => Some(ApiKeyKind::Sdk),
            "admin" => Some(ApiKeyKind::Admin),
            _ => None,
        }
    }
}

/// A stored API key. The secret itself is never stored, only its SHA-256 ([`hash_secret`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// Its id.
    pub id: u64,
    /// A human-readable name.
    pub name: String,
    /// SDK or admin.
    pub kind: ApiKeyKind,
    /// The one environment it may use; `None` for all environments.
    pub env: Option<String>,
    /// When it was created, in Unix milliseconds.
    pub created_at: u64,
    /// Revoked keys no longer authenticate.
    pub revoked: bool,
}

impl ApiKey {
    /// Whether the key may be used for `env`.
    pub fn allows_env(&self, env: &str) -> bool {
        !self.revoked && self.env.as_deref().is_none_or(|scope| scope == env)
    }
}

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewApiKey {
    /// A human-readable name.
    pub name: String,
    /// SDK or admin.
    pub kind: ApiKeyKind,
    /// The one environment it may use (which must exist); `None` for all.
    pub env: Option<String>,
}

/// A created key and its secret. The secret is shown this once; the store keeps only its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedApiKey {
    /// The stored key.
    pub key: ApiKey,
    /// The secret to hand to the caller.
    pub secret: String,
}

impl fmt::Debug for CreatedApiKey {
    // Keeps the secret out of logs that print the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What a [`Change`] is about.
///
/// Deliberately not `#[non_exhaustive]`: a follower that skipped a kind of change would serve
/// wrong data, so followers match it exhaustively and a new kind fails to compile until each
/// one applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ChangeKind {
    /// A flag was created, replaced, archived, unarchived or deleted. Read it again for the
    /// document; an archived one is served like a deleted one. Deleting a flag also drops its
    /// kill and overrides (no separate changes are recorded for those).
    Flag {
        /// Whether it was deleted.
        deleted: bool,
    },
    /// A segment changed; as for flags.
    Segment {
        /// Whether it was deleted.
        deleted: bool,
    },
    /// A flag was killed or unkilled.
    Kill {
        /// Whether it is killed now.
        killed: bool,
    },
    /// The environment was created. The change's `key` is the environment's key and its
    /// `version` is 0. A follower that does not serve the environment yet loads it whole
    /// ([`ChangeFeed::snapshot`], whose cursor includes this change); one that does has
    /// nothing to apply.
    EnvironmentCreated,
    /// The environment's name or colour changed ([`AdminStore::update_environment`]). The
    /// change's `key` is the environment's key and its `version` is 0. Nothing served changes;
    /// a follower that shows the environment to people reads it again
    /// ([`ChangeFeed::get_environment`]).
    EnvironmentUpdated,
    /// An override of a flag was set or removed.
    Override {
        /// The context kind.
        context_kind: String,
        /// The context key.
        context_key: String,
        /// The variation now; `None` when removed.
        variation: Option<usize>,
    },
}

/// One recorded change of an environment, in commit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Increases with every change (across environments); within one environment, changes are
    /// committed in `seq` order.
    pub seq: u64,
    /// The environment.
    pub env: String,
    /// The flag or segment key (the environment's key for [`ChangeKind::EnvironmentCreated`]
    /// and [`ChangeKind::EnvironmentUpdated`]).
    pub key: String,
    /// The flag's or segment's version after this change (for kills and overrides, the flag's
    /// current version, which they do not bump; 0 for an environment).
    pub version: u64,
    /// What changed.
    pub kind: ChangeKind,
}

impl Change {
    /// The flag or segment this change is about, for change events. An environment change
    /// is about neither and answers [`ItemKind::Flag`]; look at `kind` first.
    pub fn item_kind(&self) -> ItemKind {
        match self.kind {
            ChangeKind::Segment { .. } => ItemKind::Segment,
            _ => ItemKind::Flag,
        }
    }
}

/// Everything a replica needs to serve an environment, read consistently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvSnapshot {
    /// The environment.
    pub env: String,
    /// Every flag, archived ones included (they are not served), sorted by key.
    pub flags: Vec<StoredFlag>,
    /// Every segment, archived ones included, sorted by key.
    pub segments: Vec<StoredSegment>,
    /// Killed flag keys, sorted.
    pub killed: Vec<String>,
    /// Every override of every flag (archived flags included), sorted by flag key, context kind
    /// and context key; read together with the flags, so none names a flag that is missing.
    #[serde(default)]
    pub overrides: Vec<FlagOverride>,
    /// The `seq` of the last change included; pass it to [`ChangeFeed::changes_since`].
    pub cursor: u64,
}

impl EnvSnapshot {
    /// The flags and segments to serve: live (not archived) ones, parsed.
    pub fn to_flag_data(&self) -> Result<FlagData, LoadError> {
        let mut data = FlagData::default();
        for stored in self.flags.iter().filter(|f| !f.archived) {
            data.flags.insert(stored.key.clone(), stored.to_flag()?);
        }
        for stored in self.segments.iter().filter(|s| !s.archived) {
            data.segments
                .insert(stored.key.clone(), stored.to_segment()?);
        }
        Ok(data)
    }
}

/// An item that refers to another (a flag with a prerequisite, a rule naming a segment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependent {
    /// Flag or segment.
    pub kind: ItemKind,
    /// Its key.
    pub key: String,
}

impl Ord for Dependent {
    /// Flags before segments, then by key.
    fn cmp(&self, other: &Dependent) -> std::cmp::Ordering {
        let rank = |kind: ItemKind| matches!(kind, ItemKind::Segment);
        (rank(self.kind), &self.key).cmp(&(rank(other.kind), &other.key))
    }
}

impl PartialOrd for Dependent {
    fn partial_cmp(&self, other: &Dependent) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Dependent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ItemKind::Flag => write!(f, "flag {}", self.key),
            ItemKind::Segment => write!(f, "segment {}", self.key),
        }
    }
}

/// One flag or segment of an [`AdminStore::import`]: a LaunchDarkly document to store under
/// `key`, as for [`AdminStore::put_flag`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImportItem {
    /// Flag or segment.
    pub kind: ItemKind,
    /// Its key.
    pub key: String,
    /// The document.
    pub doc: Value,
}

impl ImportItem {
    /// The warnings about the document, as a write of it answers them
    /// ([`StoredFlag::warnings`]).
    pub fn warnings(&self) -> Vec<Problem> {
        document_warnings(self.kind, &self.doc)
    }
}

/// What an [`AdminStore::import`] did with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportOutcome {
    /// It did not exist (or was deleted) and was created.
    Created,
    /// It existed with another document and was replaced.
    Replaced,
    /// It existed with the same document (version and key aside) and was left alone.
    Unchanged,
}

/// Why an [`AdminStore::import`] stored nothing.
#[derive(Debug, thiserror::Error)]
#[error("{}", batch_message(item.as_ref(), source))]
pub struct BatchError {
    /// The item that was refused (`(Flag, "checkout")`); `None` when the batch failed as a
    /// whole (an unknown environment, an unreachable database).
    pub item: Option<(ItemKind, String)>,
    /// Why.
    #[source]
    pub source: StoreError,
}

impl BatchError {
    /// A failure of the batch as a whole.
    pub fn whole(source: StoreError) -> BatchError {
        BatchError { item: None, source }
    }

    /// A failure of one item.
    pub fn item(kind: ItemKind, key: &str, source: StoreError) -> BatchError {
        BatchError {
            item: Some((kind, key.to_owned())),
            source,
        }
    }
}

impl From<StoreError> for BatchError {
    fn from(source: StoreError) -> BatchError {
        BatchError::whole(source)
    }
}

fn batch_message(item: Option<&(ItemKind, String)>, source: &StoreError) -> String {
    match item {
        Some((ItemKind::Flag, key)) => format!("flag {key}: {source}"),
        Some((ItemKind::Segment, key)) => format!("segment {key}: {source}"),
        None => source.to_string(),
    }
}

/// Why a store operation failed, grouped by what the caller does about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The environment, flag, segment, key or override does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for (`flag checkout in production`).
        what: String,
    },
    /// The expected version does not match: stale `If-Match`, a missing `If-Match` for an item
    /// that exists, or an `If-Match` for one that does not.
    #[error("{}", conflict_message(*current_version))]
    Conflict {
        /// The item's current version; `None` when it does not exist.
        current_version: Option<u64>,
    },
    /// Creating something that exists (an environment).
    #[error("{what} already exists")]
    AlreadyExists {
        /// What.
        what: String,
    },
    /// The input is malformed: bad JSON shape, a variation index out of range, a bad key.
    #[error("{}", path_message(path, message))]
    Invalid {
        /// The field path in the document (`rules[2].clauses[0].values`), empty for the whole.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// The input is well-formed but names what does not resolve: an unknown or archived
    /// prerequisite or segment, a prerequisite or segment cycle, a variation that the flag no
    /// longer has.
    #[error("{message}")]
    Unresolved {
        /// What does not resolve.
        message: String,
    },
    /// Deleting or archiving an item that live items still refer to.
    #[error("still referenced by {}", list(dependents))]
    HasDependents {
        /// The items referring to it, sorted.
        dependents: Vec<Dependent>,
    },
    /// The backend cannot be reached (database down, connection lost, subscription lagging).
    /// Retry later; a subscription that returns this is finished and must be replaced.
    #[error("store unavailable: {source}")]
    Unavailable {
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend failed in a way retrying will not fix (stored data it cannot read, a query
    /// the database rejected).
    #[error("store failure: {source}")]
    Internal {
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// A [`StoreError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> StoreError {
        StoreError::NotFound { what: what.into() }
    }

    /// A [`StoreError::Invalid`].
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A [`StoreError::Unresolved`].
    pub fn unresolved(message: impl Into<String>) -> StoreError {
        StoreError::Unresolved {
            message: message.into(),
        }
    }

    /// A [`StoreError::Unavailable`] from any error or message.
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Unavailable {
            source: source.into(),
        }
    }

    /// A [`StoreError::Internal`] from any error or message.
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Internal {
            source: source.into(),
        }
    }
}

impl From<LoadError> for StoreError {
    fn from(e: LoadError) -> StoreError {
        StoreError::Invalid {
            path: e.path().to_owned(),
            message: e.message().to_owned(),
        }
    }
}

fn conflict_message(current: Option<u64>) -> String {
    match current {
        Some(version) => format!("version conflict: the current version is {version}"),
        None => "version conflict: the item does not exist".to_owned(),
    }
}

fn path_message(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

fn list(dependents: &[Dependent]) -> String {
    dependents
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The read side of a store: its environments, their items, consistent snapshots and the
/// ordered change feed that replicas follow. A read-only backend (a Redis store, an upstream
/// flagd) implements only this.
///
/// `env` arguments name an environment; reads of a missing one give [`StoreError::NotFound`].
/// A key argument that no item can have ([`validate::check_lookup_key`]) gives
/// [`StoreError::Invalid`] with the argument's name as the path (`env`, `key`), whether or not
/// the store is reachable.
#[async_trait::async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Every environment, sorted by key.
    async fn list_environments(&self) -> Result<Vec<Environment>, StoreError>;

    /// One environment.
    async fn get_environment(&self, key: &str) -> Result<Environment, StoreError>;

    /// One flag (archived or not; not a deleted one).
    async fn get_flag(&self, env: &str, key: &str) -> Result<StoredFlag, StoreError>;

    /// One segment (archived or not).
    async fn get_segment(&self, env: &str, key: &str) -> Result<StoredSegment, StoreError>;

    /// Everything an environment serves, consistent with `cursor`.
    async fn snapshot(&self, env: &str) -> Result<EnvSnapshot, StoreError>;

    /// The changes of an environment after `cursor`, in `seq` order.
    async fn changes_since(&self, env: &str, cursor: u64) -> Result<Vec<Change>, StoreError>;

    /// Starts listening for changes of every environment. Once this returns, every change
    /// committed afterwards is delivered, so: subscribe, then take a snapshot (or call
    /// `changes_since`), then follow the subscription. When the subscription fails, subscribe
    /// again and catch up with `changes_since` from the last `seq` applied.
    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, StoreError>;
}

/// API keys: created, listed, revoked, and checked on every request that presents one.
/// Secrets are stored only as their hash ([`hash_secret`]), so a key created through one
/// backend authenticates through another over the same data.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    /// Creates a key; the secret is in the answer and nowhere else.
    async fn create_api_key(
        &self,
        actor: &Actor,
        new: &NewApiKey,
    ) -> Result<CreatedApiKey, StoreError>;

    /// Every key (revoked ones too), by id.
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key; revoking a revoked key changes nothing.
    async fn revoke_api_key(&self, actor: &Actor, id: u64) -> Result<ApiKey, StoreError>;

    /// The live (not revoked) key with this secret.
    async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>, StoreError>;
}

/// The administrative writes behind the admin API: environments, flags, segments, the kill set,
/// overrides and the audit log. Every write validates fully before it stores (see the crate's
/// rules); what the writes change reaches replicas through the [`ChangeFeed`] it extends.
///
/// `env` arguments name an environment; operations on a missing one give
/// [`StoreError::NotFound`]. Arguments that nothing stored can match or that no store can keep
/// (a key no item can have, a new key [`check::key`] refuses, text with NUL) give
/// [`StoreError::Invalid`] naming the argument (`env`, `key`, `flagKey`, `contextKey`, `name`,
/// ...) or, in a document, the field path (`variations[0]`). Writes take the [`Actor`]
/// recorded in the audit log. Versioned
/// writes take `expected_version`: for `put_*` it must equal the current version when the item
/// exists and be `None` when it does not (so `None` means "create"); the other versioned writes
/// (archive, delete, segment targets) accept `None` to mean "whatever version it has". A
/// mismatch is [`StoreError::Conflict`].
#[async_trait::async_trait]
pub trait AdminStore: ChangeFeed + KeyStore {
    /// Creates an environment with no colour; see [`AdminStore::create_environment_with`].
    async fn create_environment(
        &self,
        actor: &Actor,
        key: &str,
        name: &str,
    ) -> Result<Environment, StoreError> {
        self.create_environment_with(actor, &NewEnvironment::new(key, name))
            .await
    }

    /// Creates an environment; [`StoreError::AlreadyExists`] if the key is taken. The name
    /// must not be blank and a colour must be `#rrggbb` ([`validate::check_new_environment`]).
    /// Records a [`ChangeKind::EnvironmentCreated`] change, so subscribers hear of it at once.
    async fn create_environment_with(
        &self,
        actor: &Actor,
        new: &NewEnvironment,
    ) -> Result<Environment, StoreError>;

    /// Changes an environment's name or colour and returns it as it is now. The update is
    /// checked as a creation is ([`validate::check_environment_update`]). An update that
    /// changes something writes an [`AuditAction::Update`] entry (before and after: the public
    /// fields) and records a [`ChangeKind::EnvironmentUpdated`] change; one that changes
    /// nothing writes nothing.
    async fn update_environment(
        &self,
        actor: &Actor,
        key: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, StoreError>;

    /// The flags matching the filter, sorted by key.
    async fn list_flags(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredFlag>, StoreError>;

    /// Creates (`expected_version: None`) or replaces a flag with a LaunchDarkly flag document.
    /// The document's `key`, when present, must equal `key`; its `version` is ignored and set by
    /// the store. Replacing an archived flag keeps it archived.
    async fn put_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError>;

    /// Archives or unarchives a flag. Archiving fails with [`StoreError::HasDependents`] while
    /// live flags name it as a prerequisite; unarchiving validates its references again. Setting
    /// the state it already has changes nothing and returns the flag as it is.
    async fn set_flag_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError>;

    /// Deletes a flag (with its kill and overrides), leaving a tombstone version. Fails with
    /// [`StoreError::HasDependents`] while live flags name it as a prerequisite.
    async fn delete_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError>;

    /// The segments matching the filter, sorted by key.
    async fn list_segments(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredSegment>, StoreError>;

    /// Creates or replaces a segment; as [`AdminStore::put_flag`].
    async fn put_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError>;

    /// Archives or unarchives a segment; fails while live flags or segments refer to it.
    async fn set_segment_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError>;

    /// Deletes a segment; fails while live flags or segments refer to it.
    async fn delete_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Adds and removes individual keys of a segment in one write (one version, one audit
    /// entry). An update that changes nothing writes nothing and returns the segment as it is.
    async fn update_segment_targets(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        update: &SegmentTargetsUpdate,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError>;

    /// Kills (`true`) or unkills a flag, which must exist. Returns whether anything changed.
    async fn set_killed(
        &self,
        actor: &Actor,
        env: &str,
        flag_key: &str,
        killed: bool,
    ) -> Result<bool, StoreError>;

    /// Creates or replaces many flags and segments in one transaction: all of them or none.
    ///
    /// Every document's shape is checked before anything is written; then the items are
    /// applied in the order given, each validated (references, variations still used) against
    /// the environment as the items before it left it, so an item must come after the items of
    /// the batch it refers to. An item equal to the stored one (`version` aside, and `key` when
    /// the document leaves it out) is left alone; the others are written as
    /// [`AdminStore::put_flag`] would without an expected version (an archived item stays
    /// archived), each with its own version, audit entry and change. The first refusal rolls
    /// everything back and names the item. Returns each item's outcome, in order.
    ///
    /// It is [`AdminStore::import_with_progress`] with no one watching.
    async fn import(
        &self,
        actor: &Actor,
        env: &str,
        items: Vec<ImportItem>,
    ) -> Result<Vec<ImportOutcome>, BatchError> {
        self.import_with_progress(actor, env, items, &|_| {}).await
    }

    /// [`AdminStore::import`], calling `progress` with the number of items applied so far as
    /// the write goes, so a long import can show how far it is. The count never decreases and
    /// ends at the number of items when the import succeeds; the items are still committed
    /// all together, or not at all, after the last call. Backends report after each item
    /// (the conformance suite expects it); decorators forward it.
    async fn import_with_progress(
        &self,
        actor: &Actor,
        env: &str,
        items: Vec<ImportItem>,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<Vec<ImportOutcome>, BatchError>;

    /// The killed flag keys of an environment, sorted.
    async fn killed_flags(&self, env: &str) -> Result<Vec<String>, StoreError>;

    /// Pins a context to a variation of a flag. The flag must exist and have that variation;
    /// the context kind must be valid and the key non-empty. Returns the variation it had.
    async fn set_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
        variation: usize,
    ) -> Result<Option<usize>, StoreError>;

    /// Removes an override; returns the variation it had (`None`: there was none, nothing
    /// written).
    async fn remove_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError>;

    /// The overriding variation for one context of one flag.
    async fn get_override(&self, env: &str, key: &OverrideKey)
    -> Result<Option<usize>, StoreError>;

    /// Every override of a flag, sorted by context kind and key.
    async fn list_overrides(&self, env: &str, flag_key: &str) -> Result<Vec<Override>, StoreError>;

    /// Audit entries, newest first.
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    /// The last change of every flag key of an environment that has an audit entry: the
    /// newest entry about that flag (writes, archiving, kills and overrides all count), by flag
    /// key. Keys of deleted flags are included, their last change being the deletion. One read
    /// for the whole environment, so a list of thousands of flags can show each one's.
    async fn flag_last_changes(&self, env: &str)
    -> Result<HashMap<String, LastChange>, StoreError>;

    /// Where this store keeps big-segment memberships, when it keeps them (`None`: it does
    /// not, and big segments can only be served from another source).
    fn big_segment_members(&self) -> Option<Arc<dyn BigSegmentMembers>> {
        None
    }
}

/// A live feed of [`Change`]s from [`ChangeFeed::subscribe`].
#[async_trait::async_trait]
pub trait ChangeSubscription: Send {
    /// The next change. An error means changes may have been missed (the connection was lost,
    /// or this subscriber fell too far behind); the subscription is then finished and returns
    /// errors from then on.
    async fn next(&mut self) -> Result<Change, StoreError>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod memory_tests;
