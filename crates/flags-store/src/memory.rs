//! [`MemoryStore`]: the admin store held in memory, for tests and single-process use.
//!
//! One mutex guards all state, so every write is atomic and writes are serialized, which is
//! what the trait promises. Subscriptions are plain queues with a waker; they need no runtime.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::check::ReferenceCheck;
use crate::validate::{
    PreparedItem, apply_environment_update, apply_targets_update, check_audit_query, check_env,
    check_environment_update, check_expected_version, check_item, check_list, check_new_api_key,
    check_new_environment, check_override_key, check_variations_still_used, flag_dependents,
    prepare_flag, prepare_import, prepare_segment, restamp_version, same_document,
    segment_dependents,
};
use crate::{
    Actor, AdminStore, ApiKey, AuditAction, AuditEntry, AuditItemKind, AuditQuery, BatchError,
    BigSegmentMembers, Change, ChangeFeed, ChangeKind, ChangeSubscription, CreatedApiKey,
    Dependent, EnvSnapshot, Environment, EnvironmentUpdate, FlagOverride, ImportItem,
    ImportOutcome, KeyStore, LastChange, ListFilter, MemoryBigSegments, NewApiKey, NewEnvironment,
    Override, OverrideKey, SegmentTargetsUpdate, StoreError, StoredFlag, StoredSegment,
    generate_secret, hash_secret,
};
use flags_core::ItemKind;
use flags_core::{Flag, Segment};

/// How many undelivered changes a subscriber may hold before it is cut off (and must resync),
/// so a subscriber that stopped reading cannot grow memory without bound.
const SUBSCRIBER_CAPACITY: usize = 10_000;

/// The admin store in memory. Nothing survives the process; everything else behaves as the
/// trait says, including versions, tombstones, the audit log and subscriptions.
///
/// [`MemoryStore::set_available`] simulates an outage, so code above the store can test how it
/// degrades without a database.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Big-segment memberships, kept apart from the admin data they do not touch.
    big_segments: Arc<MemoryBigSegments>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    unavailable: bool,
    envs: BTreeMap<String, EnvState>,
    audit: Vec<AuditEntry>,
    /// Keys by id, each with the hash of its secret.
    keys: BTreeMap<u64, (ApiKey, String)>,
    last_key_id: u64,
    last_seq: u64,
    subscribers: Vec<Arc<Mutex<Queue>>>,
}

struct EnvState {
    env: Environment,
    flags: BTreeMap<String, Item<Flag>>,
    segments: BTreeMap<String, Item<Segment>>,
    killed: BTreeSet<String>,
    /// (flag, context kind, context key) → variation.
    overrides: BTreeMap<(String, String, String), usize>,
    changes: Vec<Change>,
}

/// A stored flag or segment, with its parsed form kept for reference checks.
#[derive(Clone)]
struct Item<T> {
    version: u64,
    archived: bool,
    /// A tombstone: only the version is meaningful.
    deleted: bool,
    updated_at: u64,
    doc: Value,
    parsed: T,
}

impl<T> Item<T> {
    fn live(&self) -> Option<&Item<T>> {
        (!self.deleted).then_some(self)
    }

    /// Served: neither deleted nor archived.
    fn served(&self) -> Option<&T> {
        (!self.deleted && !self.archived).then_some(&self.parsed)
    }
}

#[derive(Default)]
struct Queue {
    changes: VecDeque<Change>,
    waker: Option<Waker>,
    lost: Option<&'static str>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Simulates the backend going away (`false`) and coming back (`true`). While unavailable,
    /// every operation fails with [`StoreError::Unavailable`]; going away also ends every
    /// subscription, as a lost database connection would.
    pub fn set_available(&self, available: bool) {
        let mut state = self.lock();
        state.unavailable = !available;
        if !available {
            for queue in state.subscribers.drain(..) {
                let mut queue = lock_queue(&queue);
                queue.lost = Some("the store became unavailable");
                if let Some(waker) = queue.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Writes validate before they mutate, so a panic mid-write (a bug) leaves the state as
        // it was; carrying on is safe.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, or `Unavailable` during a simulated outage.
    fn open(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let state = self.lock();
        if state.unavailable {
            return Err(StoreError::unavailable(
                "the in-memory store is set unavailable",
            ));
        }
        Ok(state)
    }
}

/// What differs between flags and segments in this store; the writes themselves are written
/// once, over this.
trait Kind: Clone + Sized {
    const KIND: ItemKind;

    fn items(es: &EnvState) -> &BTreeMap<String, Item<Self>>;

    fn items_mut(es: &mut EnvState) -> &mut BTreeMap<String, Item<Self>>;

    /// Checks the shape of a document and stamps it ([`prepare_flag`], [`prepare_segment`]).
    fn prepare(key: &str, doc: Value, version: u64) -> Result<(Value, Self), StoreError>;

    fn set_version(&mut self, version: u64);

    fn references(&self) -> ReferenceCheck;

    /// The live items referring to `key`, which must go before it can be deleted or archived.
    fn dependents(es: &EnvState, key: &str) -> Vec<Dependent>;

    /// What replacing the live item `key` by `new` must not break besides references.
    fn check_replace(es: &EnvState, key: &str, new: &Self) -> Result<(), StoreError>;
}

impl Kind for Flag {
    const KIND: ItemKind = ItemKind::Flag;

    fn items(es: &EnvState) -> &BTreeMap<String, Item<Flag>> {
        &es.flags
    }

    fn items_mut(es: &mut EnvState) -> &mut BTreeMap<String, Item<Flag>> {
        &mut es.flags
    }

    fn prepare(key: &str, doc: Value, version: u64) -> Result<(Value, Flag), StoreError> {
        prepare_flag(key, doc, version)
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn references(&self) -> ReferenceCheck {
        ReferenceCheck::for_flag(self)
    }

    fn dependents(es: &EnvState, key: &str) -> Vec<Dependent> {
        flag_dependents(key, es.live_flags())
    }

    fn check_replace(es: &EnvState, key: &str, new: &Flag) -> Result<(), StoreError> {
        let dependents = es
            .live_flags()
            .filter(|f| f.prerequisites.iter().any(|p| p.key == key));
        check_variations_still_used(new, dependents, &es.overrides_of(key))
    }
}

impl Kind for Segment {
    const KIND: ItemKind = ItemKind::Segment;

    fn items(es: &EnvState) -> &BTreeMap<String, Item<Segment>> {
        &es.segments
    }

    fn items_mut(es: &mut EnvState) -> &mut BTreeMap<String, Item<Segment>> {
        &mut es.segments
    }

    fn prepare(key: &str, doc: Value, version: u64) -> Result<(Value, Segment), StoreError> {
        prepare_segment(key, doc, version)
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn references(&self) -> ReferenceCheck {
        ReferenceCheck::for_segment(self)
    }

    fn dependents(es: &EnvState, key: &str) -> Vec<Dependent> {
        segment_dependents(key, es.live_flags(), es.live_segments())
    }

    fn check_replace(_: &EnvState, _: &str, _: &Segment) -> Result<(), StoreError> {
        Ok(())
    }
}

fn item_not_found(kind: ItemKind, env: &str, key: &str) -> StoreError {
    match kind {
        ItemKind::Flag => flag_not_found(env, key),
        ItemKind::Segment => segment_not_found(env, key),
    }
}

fn audit_kind(kind: ItemKind) -> AuditItemKind {
    match kind {
        ItemKind::Flag => AuditItemKind::Flag,
        ItemKind::Segment => AuditItemKind::Segment,
    }
}

fn item_change(kind: ItemKind, deleted: bool) -> ChangeKind {
    match kind {
        ItemKind::Flag => ChangeKind::Flag { deleted },
        ItemKind::Segment => ChangeKind::Segment { deleted },
    }
}

impl MemoryStore {
    /// The live item `key`, as `to` shows it.
    fn get_item<T: Kind, R>(
        &self,
        env: &str,
        key: &str,
        to: fn(&str, &Item<T>) -> R,
    ) -> Result<R, StoreError> {
        check_item(env, T::KIND, key)?;
        let state = self.open()?;
        let item = T::items(state.env(env)?).get(key).and_then(Item::live);
        item.map(|item| to(key, item))
            .ok_or_else(|| item_not_found(T::KIND, env, key))
    }

    /// The items matching `filter`, sorted by key, as `to` shows them.
    fn list_items<T: Kind, R>(
        &self,
        env: &str,
        filter: &ListFilter,
        to: fn(&str, &Item<T>) -> R,
    ) -> Result<Vec<R>, StoreError> {
        check_list(env, filter)?;
        let state = self.open()?;
        Ok(T::items(state.env(env)?)
            .iter()
            .filter(|(key, item)| !item.deleted && matches(filter, key, item.archived))
            .map(|(key, item)| to(key, item))
            .collect())
    }

    fn put_item<T: Kind>(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<Item<T>, StoreError> {
        check_item(env, T::KIND, key)?;
        let mut state = self.open()?;
        let es = state.env_mut(env)?;
        let current = T::items(es).get(key).and_then(Item::live);
        check_expected_version(current.map(|i| i.version), expected_version, true)?;
        let (before, item) = es.write::<T>(key, doc)?;
        let action = if before.is_some() {
            AuditAction::Replace
        } else {
            AuditAction::Create
        };
        state.audit(
            Some(env),
            audit_kind(T::KIND),
            key,
            action,
            actor,
            before,
            Some(item.doc.clone()),
        );
        state.record(env, key, item.version, item_change(T::KIND, false));
        Ok(item)
    }

    fn set_item_archived<T: Kind>(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<Item<T>, StoreError> {
        check_item(env, T::KIND, key)?;
        let mut state = self.open()?;
        let es = state.env(env)?;
        let item = T::items(es)
            .get(key)
            .and_then(Item::live)
            .ok_or_else(|| item_not_found(T::KIND, env, key))?;
        check_expected_version(Some(item.version), expected_version, false)?;
        if item.archived == archived {
            return Ok(item.clone());
        }
        if archived {
            let dependents = T::dependents(es, key);
            if !dependents.is_empty() {
                return Err(StoreError::HasDependents { dependents });
            }
        } else {
            es.resolve(item.parsed.references())?;
        }
        let mut item = item.clone();
        item.version += 1;
        item.archived = archived;
        item.updated_at = now_ms();
        item.doc = restamp_version(&item.doc, item.version);
        item.parsed.set_version(item.version);
        T::items_mut(state.env_mut(env)?).insert(key.to_owned(), item.clone());
        let action = if archived {
            AuditAction::Archive
        } else {
            AuditAction::Unarchive
        };
        state.audit(
            Some(env),
            audit_kind(T::KIND),
            key,
            action,
            actor,
            Some(json!({"archived": !archived})),
            Some(json!({"archived": archived})),
        );
        state.record(env, key, item.version, item_change(T::KIND, false));
        Ok(item)
    }

    fn delete_item<T: Kind>(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        check_item(env, T::KIND, key)?;
        let mut state = self.open()?;
        let es = state.env(env)?;
        let item = T::items(es)
            .get(key)
            .and_then(Item::live)
            .ok_or_else(|| item_not_found(T::KIND, env, key))?;
        check_expected_version(Some(item.version), expected_version, false)?;
        let dependents = T::dependents(es, key);
        if !dependents.is_empty() {
            return Err(StoreError::HasDependents { dependents });
        }
        let before = item.doc.clone();
        let mut tombstone = item.clone();
        tombstone.version += 1;
        tombstone.deleted = true;
        tombstone.updated_at = now_ms();
        let version = tombstone.version;
        let es = state.env_mut(env)?;
        T::items_mut(es).insert(key.to_owned(), tombstone);
        if T::KIND == ItemKind::Flag {
            // A deleted flag's kill and overrides go with it.
            es.killed.remove(key);
            es.overrides.retain(|(flag, _, _), _| flag != key);
        }
        state.audit(
            Some(env),
            audit_kind(T::KIND),
            key,
            AuditAction::Delete,
            actor,
            Some(before),
            None,
        );
        state.record(env, key, version, item_change(T::KIND, true));
        Ok(())
    }
}

fn lock_queue(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// 256 bits for a key secret, from std's randomly keyed hasher: each `RandomState` is seeded
/// from the operating system's random source, and its SipHash output is unpredictable without
/// those keys. Good enough for an in-memory store; database backends use the OS generator.
fn entropy() -> [u8; 32] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let word = RandomState::new().hash_one((n, now_ms()));
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

fn env_not_found(env: &str) -> StoreError {
    StoreError::not_found(format!("environment {env:?}"))
}

fn flag_not_found(env: &str, key: &str) -> StoreError {
    StoreError::not_found(format!("flag {key:?} in environment {env:?}"))
}

fn segment_not_found(env: &str, key: &str) -> StoreError {
    StoreError::not_found(format!("segment {key:?} in environment {env:?}"))
}

/// How overrides appear in audit entries: as [`Override`] serializes.
fn override_json(kind: &str, key: &str, variation: usize) -> Value {
    json!({"contextKind": kind, "contextKey": key, "variation": variation})
}

fn key_json(key: &ApiKey) -> Value {
    serde_json::to_value(key).unwrap_or(Value::Null)
}

impl State {
    fn env(&self, env: &str) -> Result<&EnvState, StoreError> {
        self.envs.get(env).ok_or_else(|| env_not_found(env))
    }

    fn env_mut(&mut self, env: &str) -> Result<&mut EnvState, StoreError> {
        self.envs.get_mut(env).ok_or_else(|| env_not_found(env))
    }

    #[allow(clippy::too_many_arguments)] // One audit row has this many fields.
    fn audit(
        &mut self,
        env: Option<&str>,
        item_kind: AuditItemKind,
        item_key: &str,
        action: AuditAction,
        actor: &Actor,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        let id = self.audit.len() as u64 + 1;
        self.audit.push(AuditEntry {
            id,
            env: env.map(str::to_owned),
            item_kind,
            item_key: item_key.to_owned(),
            action,
            actor: actor.clone(),
            before,
            after,
            at: now_ms(),
        });
    }

    /// Records a change and hands it to every live subscriber.
    fn record(&mut self, env: &str, key: &str, version: u64, kind: ChangeKind) {
        self.last_seq += 1;
        let change = Change {
            seq: self.last_seq,
            env: env.to_owned(),
            key: key.to_owned(),
            version,
            kind,
        };
        // Subscriptions dropped by their owner hold the only other reference; forget them.
        self.subscribers
            .retain(|queue| Arc::strong_count(queue) > 1);
        self.subscribers.retain(|queue| {
            let mut queue = lock_queue(queue);
            if queue.changes.len() >= SUBSCRIBER_CAPACITY {
                queue.lost = Some("the subscriber fell too far behind");
            } else {
                queue.changes.push_back(change.clone());
            }
            if let Some(waker) = queue.waker.take() {
                waker.wake();
            }
            queue.lost.is_none()
        });
        if let Some(state) = self.envs.get_mut(env) {
            state.changes.push(change);
        }
    }
}

impl EnvState {
    fn live_flag(&self, key: &str) -> Option<&Flag> {
        self.flags.get(key).and_then(Item::served)
    }

    fn live_segment(&self, key: &str) -> Option<&Segment> {
        self.segments.get(key).and_then(Item::served)
    }

    fn live_flags(&self) -> impl Iterator<Item = &Flag> {
        self.flags.values().filter_map(Item::served)
    }

    fn live_segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.values().filter_map(Item::served)
    }

    fn resolve(&self, check: ReferenceCheck) -> Result<(), StoreError> {
        check
            .run(|key| self.live_flag(key), |key| self.live_segment(key))
            .finish()
    }

    fn overrides_of(&self, flag_key: &str) -> Vec<Override> {
        self.overrides
            .iter()
            .filter(|((flag, _, _), _)| flag == flag_key)
            .map(|((_, kind, key), variation)| Override {
                context_kind: kind.clone(),
                context_key: key.clone(),
                variation: *variation,
            })
            .collect()
    }
}

/// One item an import wrote, for its audit entry and change.
struct ImportWrite {
    kind: ItemKind,
    key: String,
    version: u64,
    before: Option<Value>,
    after: Value,
}

impl EnvState {
    /// Stores `doc` as the next version of `key` after validating it against this environment
    /// (shape, references, and what replacing it must not break). Returns the live document it
    /// replaced (`None`: created) and the new item. An archived item stays archived.
    fn write<T: Kind>(
        &mut self,
        key: &str,
        doc: Value,
    ) -> Result<(Option<Value>, Item<T>), StoreError> {
        let existing = T::items(self).get(key);
        let current = existing.and_then(Item::live);
        let version = existing.map_or(0, |i| i.version) + 1;
        let (doc, parsed) = T::prepare(key, doc, version)?;
        self.resolve(parsed.references())?;
        if current.is_some() {
            T::check_replace(self, key, &parsed)?;
        }
        let before = current.map(|i| i.doc.clone());
        let item = Item {
            version,
            archived: current.is_some_and(|i| i.archived),
            deleted: false,
            updated_at: now_ms(),
            doc,
            parsed,
        };
        T::items_mut(self).insert(key.to_owned(), item.clone());
        Ok((before, item))
    }

    /// Validates and stores one import item; `None` when it equals the stored one.
    fn import_item<T: Kind>(
        &mut self,
        item: PreparedItem,
    ) -> Result<Option<ImportWrite>, StoreError> {
        let key = item.key;
        let current = T::items(self).get(&key).and_then(Item::live);
        if current.is_some_and(|stored| same_document(&stored.doc, &item.doc, &key)) {
            return Ok(None);
        }
        let (before, written) = self.write::<T>(&key, item.doc)?;
        Ok(Some(ImportWrite {
            kind: T::KIND,
            key,
            version: written.version,
            before,
            after: written.doc,
        }))
    }
}

fn stored_flag(key: &str, item: &Item<Flag>) -> StoredFlag {
    StoredFlag {
        key: key.to_owned(),
        version: item.version,
        archived: item.archived,
        updated_at: item.updated_at,
        doc: item.doc.clone(),
    }
}

fn stored_segment(key: &str, item: &Item<Segment>) -> StoredSegment {
    StoredSegment {
        key: key.to_owned(),
        version: item.version,
        archived: item.archived,
        updated_at: item.updated_at,
        doc: item.doc.clone(),
    }
}

fn matches(filter: &ListFilter, key: &str, archived: bool) -> bool {
    filter.archived.is_none_or(|a| a == archived)
        && filter
            .key_prefix
            .as_deref()
            .is_none_or(|prefix| key.starts_with(prefix))
}

#[async_trait::async_trait]
impl AdminStore for MemoryStore {
    async fn create_environment_with(
        &self,
        actor: &Actor,
        new: &NewEnvironment,
    ) -> Result<Environment, StoreError> {
        let new = check_new_environment(new)?;
        let key = new.key.as_str();
        let mut state = self.open()?;
        if state.envs.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                what: format!("environment {key:?}"),
            });
        }
        let env = Environment {
            key: new.key.clone(),
            name: new.name,
            color: new.color,
            created_at: now_ms(),
        };
        state.envs.insert(
            key.to_owned(),
            EnvState {
                env: env.clone(),
                flags: BTreeMap::new(),
                segments: BTreeMap::new(),
                killed: BTreeSet::new(),
                overrides: BTreeMap::new(),
                changes: Vec::new(),
            },
        );
        let after = serde_json::to_value(&env).ok();
        state.audit(
            Some(key),
            AuditItemKind::Environment,
            key,
            AuditAction::Create,
            actor,
            None,
            after,
        );
        state.record(key, key, 0, ChangeKind::EnvironmentCreated);
        Ok(env)
    }

    async fn update_environment(
        &self,
        actor: &Actor,
        key: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, StoreError> {
        let update = check_environment_update(key, update)?;
        let mut state = self.open()?;
        let es = state.env_mut(key)?;
        let before = es.env.clone();
        if !apply_environment_update(&mut es.env, &update) {
            return Ok(before);
        }
        let after = es.env.clone();
        state.audit(
            Some(key),
            AuditItemKind::Environment,
            key,
            AuditAction::Update,
            actor,
            serde_json::to_value(&before).ok(),
            serde_json::to_value(&after).ok(),
        );
        state.record(key, key, 0, ChangeKind::EnvironmentUpdated);
        Ok(after)
    }

    async fn list_flags(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredFlag>, StoreError> {
        self.list_items(env, filter, stored_flag)
    }

    async fn put_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError> {
        let item = self.put_item::<Flag>(actor, env, key, doc, expected_version)?;
        Ok(stored_flag(key, &item))
    }

    async fn set_flag_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError> {
        let item = self.set_item_archived::<Flag>(actor, env, key, archived, expected_version)?;
        Ok(stored_flag(key, &item))
    }

    async fn delete_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        self.delete_item::<Flag>(actor, env, key, expected_version)
    }

    async fn list_segments(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredSegment>, StoreError> {
        self.list_items(env, filter, stored_segment)
    }

    async fn put_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        let item = self.put_item::<Segment>(actor, env, key, doc, expected_version)?;
        Ok(stored_segment(key, &item))
    }

    async fn set_segment_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        let item =
            self.set_item_archived::<Segment>(actor, env, key, archived, expected_version)?;
        Ok(stored_segment(key, &item))
    }

    async fn delete_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        self.delete_item::<Segment>(actor, env, key, expected_version)
    }

    async fn update_segment_targets(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        update: &SegmentTargetsUpdate,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        check_item(env, ItemKind::Segment, key)?;
        let mut state = self.open()?;
        let es = state.env(env)?;
        let item = es
            .segments
            .get(key)
            .and_then(Item::live)
            .ok_or_else(|| segment_not_found(env, key))?;
        check_expected_version(Some(item.version), expected_version, false)?;
        let mut doc = item.doc.clone();
        if !apply_targets_update(&mut doc, update)? {
            return Ok(stored_segment(key, item));
        }
        let version = item.version + 1;
        let (doc, segment) = prepare_segment(key, doc, version)?;
        let before = item.doc.clone();
        let new = Item {
            version,
            archived: item.archived,
            deleted: false,
            updated_at: now_ms(),
            doc: doc.clone(),
            parsed: segment,
        };
        let stored = stored_segment(key, &new);
        state.env_mut(env)?.segments.insert(key.to_owned(), new);
        state.audit(
            Some(env),
            AuditItemKind::Segment,
            key,
            AuditAction::UpdateTargets,
            actor,
            Some(before),
            Some(doc),
        );
        state.record(env, key, version, ChangeKind::Segment { deleted: false });
        Ok(stored)
    }

    async fn set_killed(
        &self,
        actor: &Actor,
        env: &str,
        flag_key: &str,
        killed: bool,
    ) -> Result<bool, StoreError> {
        check_item(env, ItemKind::Flag, flag_key)?;
        let mut state = self.open()?;
        let es = state.env_mut(env)?;
        let version = es
            .flags
            .get(flag_key)
            .and_then(Item::live)
            .map(|i| i.version)
            .ok_or_else(|| flag_not_found(env, flag_key))?;
        let changed = if killed {
            es.killed.insert(flag_key.to_owned())
        } else {
            es.killed.remove(flag_key)
        };
        if !changed {
            return Ok(false);
        }
        let action = if killed {
            AuditAction::Kill
        } else {
            AuditAction::Unkill
        };
        state.audit(
            Some(env),
            AuditItemKind::Flag,
            flag_key,
            action,
            actor,
            Some(json!({"killed": !killed})),
            Some(json!({"killed": killed})),
        );
        state.record(env, flag_key, version, ChangeKind::Kill { killed });
        Ok(true)
    }

    async fn import_with_progress(
        &self,
        actor: &Actor,
        env: &str,
        items: Vec<ImportItem>,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<Vec<ImportOutcome>, BatchError> {
        check_env(env)?;
        let prepared = prepare_import(items)?;
        let mut state = self.open()?;
        let es = state.env(env)?;
        // Applied to a copy of the items, so a refusal leaves the environment untouched.
        let mut work = EnvState {
            env: es.env.clone(),
            flags: es.flags.clone(),
            segments: es.segments.clone(),
            killed: BTreeSet::new(),
            overrides: es.overrides.clone(),
            changes: Vec::new(),
        };
        let mut outcomes = Vec::with_capacity(prepared.len());
        let mut written = Vec::new();
        for item in prepared {
            let (kind, key) = (item.kind(), item.key.clone());
            let result = match kind {
                ItemKind::Flag => work.import_item::<Flag>(item),
                ItemKind::Segment => work.import_item::<Segment>(item),
            };
            match result {
                Ok(Some(write)) => {
                    outcomes.push(if write.before.is_some() {
                        ImportOutcome::Replaced
                    } else {
                        ImportOutcome::Created
                    });
                    written.push(write);
                }
                Ok(None) => outcomes.push(ImportOutcome::Unchanged),
                Err(e) => return Err(BatchError::item(kind, &key, e)),
            }
            progress(outcomes.len());
        }
        let es = state.env_mut(env)?;
        es.flags = work.flags;
        es.segments = work.segments;
        for write in written {
            let action = if write.before.is_some() {
                AuditAction::Replace
            } else {
                AuditAction::Create
            };
            state.audit(
                Some(env),
                audit_kind(write.kind),
                &write.key,
                action,
                actor,
                write.before,
                Some(write.after),
            );
            state.record(
                env,
                &write.key,
                write.version,
                item_change(write.kind, false),
            );
        }
        Ok(outcomes)
    }

    async fn killed_flags(&self, env: &str) -> Result<Vec<String>, StoreError> {
        check_env(env)?;
        Ok(self.open()?.env(env)?.killed.iter().cloned().collect())
    }

    async fn set_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
        variation: usize,
    ) -> Result<Option<usize>, StoreError> {
        check_override_key(env, key)?;
        let mut state = self.open()?;
        let es = state.env_mut(env)?;
        let flag = es
            .flags
            .get(&key.flag_key)
            .and_then(Item::live)
            .ok_or_else(|| flag_not_found(env, &key.flag_key))?;
        let version = flag.version;
        let count = flag.parsed.variations.len();
        if variation >= count {
            return Err(StoreError::invalid(
                "variation",
                format!(
                    "flag {:?} has no variation {variation} (it has {count})",
                    key.flag_key
                ),
            ));
        }
        let map_key = (
            key.flag_key.clone(),
            key.context_kind.clone(),
            key.context_key.clone(),
        );
        let previous = es.overrides.insert(map_key, variation);
        if previous == Some(variation) {
            return Ok(previous);
        }
        state.audit(
            Some(env),
            AuditItemKind::Flag,
            &key.flag_key,
            AuditAction::SetOverride,
            actor,
            previous.map(|v| override_json(&key.context_kind, &key.context_key, v)),
            Some(override_json(
                &key.context_kind,
                &key.context_key,
                variation,
            )),
        );
        state.record(
            env,
            &key.flag_key,
            version,
            ChangeKind::Override {
                context_kind: key.context_kind.clone(),
                context_key: key.context_key.clone(),
                variation: Some(variation),
            },
        );
        Ok(previous)
    }

    async fn remove_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        check_override_key(env, key)?;
        let mut state = self.open()?;
        let es = state.env_mut(env)?;
        let version = es
            .flags
            .get(&key.flag_key)
            .and_then(Item::live)
            .map(|i| i.version)
            .ok_or_else(|| flag_not_found(env, &key.flag_key))?;
        let map_key = (
            key.flag_key.clone(),
            key.context_kind.clone(),
            key.context_key.clone(),
        );
        let Some(previous) = es.overrides.remove(&map_key) else {
            return Ok(None);
        };
        state.audit(
            Some(env),
            AuditItemKind::Flag,
            &key.flag_key,
            AuditAction::RemoveOverride,
            actor,
            Some(override_json(&key.context_kind, &key.context_key, previous)),
            None,
        );
        state.record(
            env,
            &key.flag_key,
            version,
            ChangeKind::Override {
                context_kind: key.context_kind.clone(),
                context_key: key.context_key.clone(),
                variation: None,
            },
        );
        Ok(Some(previous))
    }

    async fn get_override(
        &self,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        check_override_key(env, key)?;
        let state = self.open()?;
        let map_key = (
            key.flag_key.clone(),
            key.context_kind.clone(),
            key.context_key.clone(),
        );
        Ok(state.env(env)?.overrides.get(&map_key).copied())
    }

    async fn list_overrides(&self, env: &str, flag_key: &str) -> Result<Vec<Override>, StoreError> {
        check_item(env, ItemKind::Flag, flag_key)?;
        Ok(self.open()?.env(env)?.overrides_of(flag_key))
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        check_audit_query(query)?;
        let state = self.open()?;
        if let Some(env) = &query.env {
            state.env(env)?;
        }
        Ok(state
            .audit
            .iter()
            .rev()
            .filter(|e| query.before_id.is_none_or(|before| e.id < before))
            .filter(|e| query.env.is_none() || e.env == query.env)
            .filter(|e| {
                query
                    .item
                    .as_ref()
                    .is_none_or(|(kind, key)| e.item_kind == *kind && &e.item_key == key)
            })
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn flag_last_changes(
        &self,
        env: &str,
    ) -> Result<HashMap<String, LastChange>, StoreError> {
        check_env(env)?;
        let state = self.open()?;
        state.env(env)?;
        let mut last = HashMap::new();
        // Oldest first, so each flag ends with its newest entry.
        for entry in &state.audit {
            if entry.item_kind == AuditItemKind::Flag && entry.env.as_deref() == Some(env) {
                last.insert(entry.item_key.clone(), LastChange::of(entry));
            }
        }
        Ok(last)
    }

    fn big_segment_members(&self) -> Option<Arc<dyn BigSegmentMembers>> {
        Some(Arc::clone(&self.big_segments) as Arc<dyn BigSegmentMembers>)
    }
}

#[async_trait::async_trait]
impl ChangeFeed for MemoryStore {
    async fn list_environments(&self) -> Result<Vec<Environment>, StoreError> {
        let state = self.open()?;
        Ok(state.envs.values().map(|e| e.env.clone()).collect())
    }

    async fn get_environment(&self, key: &str) -> Result<Environment, StoreError> {
        check_env(key)?;
        Ok(self.open()?.env(key)?.env.clone())
    }

    async fn get_flag(&self, env: &str, key: &str) -> Result<StoredFlag, StoreError> {
        self.get_item(env, key, stored_flag)
    }

    async fn get_segment(&self, env: &str, key: &str) -> Result<StoredSegment, StoreError> {
        self.get_item(env, key, stored_segment)
    }

    async fn snapshot(&self, env: &str) -> Result<EnvSnapshot, StoreError> {
        check_env(env)?;
        let state = self.open()?;
        let es = state.env(env)?;
        Ok(EnvSnapshot {
            env: env.to_owned(),
            flags: es
                .flags
                .iter()
                .filter(|(_, item)| !item.deleted)
                .map(|(key, item)| stored_flag(key, item))
                .collect(),
            segments: es
                .segments
                .iter()
                .filter(|(_, item)| !item.deleted)
                .map(|(key, item)| stored_segment(key, item))
                .collect(),
            killed: es.killed.iter().cloned().collect(),
            overrides: es
                .overrides
                .iter()
                .map(|((flag_key, kind, key), variation)| FlagOverride {
                    flag_key: flag_key.clone(),
                    context_kind: kind.clone(),
                    context_key: key.clone(),
                    variation: *variation,
                })
                .collect(),
            cursor: es.changes.last().map_or(0, |c| c.seq),
        })
    }

    async fn changes_since(&self, env: &str, cursor: u64) -> Result<Vec<Change>, StoreError> {
        check_env(env)?;
        let state = self.open()?;
        let changes = &state.env(env)?.changes;
        let start = changes.partition_point(|c| c.seq <= cursor);
        Ok(changes[start..].to_vec())
    }

    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, StoreError> {
        let mut state = self.open()?;
        let queue = Arc::new(Mutex::new(Queue::default()));
        state.subscribers.push(Arc::clone(&queue));
        Ok(Box::new(MemorySubscription { queue }))
    }
}

#[async_trait::async_trait]
impl KeyStore for MemoryStore {
    async fn create_api_key(
        &self,
        actor: &Actor,
        new: &NewApiKey,
    ) -> Result<CreatedApiKey, StoreError> {
        check_new_api_key(new)?;
        let mut state = self.open()?;
        if let Some(env) = &new.env {
            state.env(env)?;
        }
        let secret = generate_secret(new.kind, &entropy());
        state.last_key_id += 1;
        let key = ApiKey {
            id: state.last_key_id,
            name: new.name.clone(),
            kind: new.kind,
            env: new.env.clone(),
            created_at: now_ms(),
            revoked: false,
        };
        state
            .keys
            .insert(key.id, (key.clone(), hash_secret(&secret)));
        state.audit(
            new.env.as_deref(),
            AuditItemKind::ApiKey,
            &key.id.to_string(),
            AuditAction::Create,
            actor,
            None,
            Some(key_json(&key)),
        );
        Ok(CreatedApiKey { key, secret })
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let state = self.open()?;
        Ok(state.keys.values().map(|(key, _)| key.clone()).collect())
    }

    async fn revoke_api_key(&self, actor: &Actor, id: u64) -> Result<ApiKey, StoreError> {
        let mut state = self.open()?;
        let (key, _) = state
            .keys
            .get_mut(&id)
            .ok_or_else(|| StoreError::not_found(format!("API key {id}")))?;
        if key.revoked {
            return Ok(key.clone());
        }
        let before = key_json(key);
        key.revoked = true;
        let key = key.clone();
        state.audit(
            key.env.as_deref(),
            AuditItemKind::ApiKey,
            &id.to_string(),
            AuditAction::Revoke,
            actor,
            Some(before),
            Some(key_json(&key)),
        );
        Ok(key)
    }

    async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        let state = self.open()?;
        let hash = hash_secret(secret);
        Ok(state
            .keys
            .values()
            .find(|(key, stored)| !key.revoked && *stored == hash)
            .map(|(key, _)| key.clone()))
    }
}

/// A subscription to a [`MemoryStore`].
struct MemorySubscription {
    queue: Arc<Mutex<Queue>>,
}

impl MemorySubscription {
    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<Change, StoreError>> {
        let mut queue = lock_queue(&self.queue);
        // Changes queued before the loss are still delivered; the error comes after them.
        if let Some(change) = queue.changes.pop_front() {
            return Poll::Ready(Ok(change));
        }
        if let Some(why) = queue.lost {
            return Poll::Ready(Err(StoreError::unavailable(why)));
        }
        queue.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[async_trait::async_trait]
impl ChangeSubscription for MemorySubscription {
    async fn next(&mut self) -> Result<Change, StoreError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}
