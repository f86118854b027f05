//! Root mode: serving every environment of a store ([`ChangeFeed`]) (PostgreSQL in production), kept
//! current from the store's change feed.
//!
//! At start each environment is loaded whole ([`ChangeFeed::snapshot`]): flags, segments, the
//! kill set and the overrides, read consistently in one snapshot. From then on a notification
//! is only a wake-up call: the environment's changes after the last applied `seq` are read with
//! [`ChangeFeed::changes_since`] and applied in order, and a flag or segment change fetches the
//! item as it is now and applies it only if its version is newer than the one held. So a missed,
//! repeated or reordered notification can neither skip nor regress data. A timer does the same
//! catch-up every poll interval, which also proves the store is reachable for `/readyz`.
//!
//! Kills and overrides reach every client inside the served flag ([`Ops::serve`]): a killed flag
//! is served with `on: false`, and a flag's overrides as its first individual targets. flagd's
//! own evaluation reads the same served flag as the SDKs, so they cannot give different
//! answers. SDKs ignore a patch that is not newer than what they hold, so the served version of
//! a flag is its store version plus the number of kill, unkill and override changes ever
//! recorded for it (see `EnvState::served_version`): it only grows, and every replica computes
//! the same number from the store, before and after a restart.
//!
//! A batch of changes is served incrementally: only the changed items are parsed and compiled
//! into a snapshot that shares every other compiled item with the previous one
//! ([`Snapshot::apply`]); the big `latest-all` and `put` payloads are rendered on first request.
//!
//! When the feed fails, the failure is recorded in a [`HealthTracker`], the loop waits
//! ([`Backoff`]: 1x, 2x, 4x, 8x of the base), subscribes again and catches up. The last
//! snapshot keeps serving all along. A database that is down at start is treated the same way
//! ([`crate::backend::open_lazy`]): nothing is served and `/readyz` says `CONNECTING` until it answers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flags_cache::{Backoff, HealthReport, HealthTracker};
use flags_core::{Flag, FlagData, Segment, Target};
use flags_store::{
    Change, ChangeFeed, ChangeKind, ChangeSubscription, StoreError, StoredFlag, StoredSegment,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::SyncTiming;
use crate::engine::{Ops, Snapshot, Update};
use crate::env::{Env, Environments};
use crate::shutdown::Shutdown;
use flags_core::ItemKind;

/// The health of the store connection, shared with `/readyz`.
#[derive(Default)]
pub struct RootHealth {
    tracker: HealthTracker,
}

impl RootHealth {
    /// What `/readyz` shows.
    pub fn report(&self) -> HealthReport {
        self.tracker.report()
    }
}

/// How far a listener of [`ChangeNotices`] may fall behind before it is told it missed some.
const NOTICE_BUFFER: usize = 1024;

/// One change the root sync has applied and served: what the web UI's live pages hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNotice {
    /// The environment.
    pub env: String,
    /// What changed.
    pub kind: NoticeKind,
    /// The flag or segment key (the environment's for [`NoticeKind::Environment`]).
    pub key: String,
}

/// What a [`ChangeNotice`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// A flag was written, archived or deleted.
    Flag,
    /// A segment was written, archived or deleted.
    Segment,
    /// A flag was killed or unkilled.
    Kill,
    /// An override was set or removed.
    Override,
    /// The environment itself: created, loaded or changed.
    Environment,
}

impl NoticeKind {
    /// What a change of `kind` is about.
    pub fn of(kind: &ChangeKind) -> NoticeKind {
        match kind {
            ChangeKind::Flag { .. } => NoticeKind::Flag,
            ChangeKind::Segment { .. } => NoticeKind::Segment,
            ChangeKind::Kill { .. } => NoticeKind::Kill,
            ChangeKind::Override { .. } => NoticeKind::Override,
            ChangeKind::EnvironmentCreated | ChangeKind::EnvironmentUpdated => {
                NoticeKind::Environment
            }
        }
    }

    /// Its name: `flag`, `segment`, `kill`, `override` or `environment`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Flag => "flag",
            NoticeKind::Segment => "segment",
            NoticeKind::Kill => "kill",
            NoticeKind::Override => "override",
            NoticeKind::Environment => "environment",
        }
    }
}

/// The changes the root sync applies, told to whoever listens as each batch is served. The
/// sync follows the store's change feed once for the whole server; a listener (a browser
/// following a page) costs one receiver here, never a database connection.
#[derive(Debug, Clone)]
pub struct ChangeNotices {
    tx: broadcast::Sender<Arc<ChangeNotice>>,
}

impl Default for ChangeNotices {
    fn default() -> ChangeNotices {
        ChangeNotices::new()
    }
}

impl ChangeNotices {
    /// A feed nobody listens to yet.
    pub fn new() -> ChangeNotices {
        ChangeNotices {
            tx: broadcast::channel(NOTICE_BUFFER).0,
        }
    }

    /// Every notice sent from now on. A receiver that falls more than a thousand notices
    /// behind gets `Lagged` and should read everything again.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeNotice>> {
        self.tx.subscribe()
    }

    /// Tells every listener; nobody listening is fine.
    pub fn send(&self, notice: ChangeNotice) {
        let _ = self.tx.send(Arc::new(notice));
    }
}

/// Keeps every environment of a store served.
pub struct RootSync {
    store: Arc<dyn ChangeFeed>,
    envs: Arc<Environments>,
    health: Arc<RootHealth>,
    backoff: Backoff,
    poll_interval: Duration,
    states: HashMap<String, EnvState>,
    /// The database's URL, to find out why it cannot be reached when the store cannot say.
    database_url: Option<String>,
    /// Told of every change once it is served.
    notices: ChangeNotices,
}

/// What one environment holds, as the store last told it. Only versions and states are kept
/// here; the documents themselves live once, compiled, in the served snapshot.
struct EnvState {
    env: Arc<Env>,
    /// Every flag seen, archived and deleted ones included (for their versions).
    flags: HashMap<String, ItemMeta>,
    segments: HashMap<String, ItemMeta>,
    /// Kill, unkill and override changes recorded for each flag, ever: part of its served
    /// version.
    ops_changes: HashMap<String, u64>,
    /// The stored `targets` and `contextTargets` of each flag that has been served with
    /// overrides: the served flag's own are not the stored ones, and serving it again (after an
    /// override or kill changes) starts from these. Dropped with the flag.
    stored_targets: HashMap<String, StoredTargets>,
    generation: u64,
    cursor: u64,
    /// Items whose served form may have changed since the last publish, in change order.
    dirty: Vec<(ItemKind, String)>,
    dirty_set: HashSet<(ItemKind, String)>,
    /// Documents read since the last publish, parsed.
    fresh_flags: HashMap<String, Flag>,
    fresh_segments: HashMap<String, Segment>,
}

/// A flag's `targets` and `contextTargets` as stored.
struct StoredTargets {
    targets: Vec<Target>,
    context_targets: Vec<Target>,
}

/// A flag's or segment's state in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ItemMeta {
    /// The store's version (for a deleted item, its tombstone's).
    version: u64,
    state: ItemState,
    /// The flag's own `on`, which a kill turns off when serving.
    on: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemState {
    Live,
    Archived,
    Deleted,
}

impl StoredTargets {
    fn of(flag: &Flag) -> StoredTargets {
        StoredTargets {
            targets: flag.targets.clone(),
            context_targets: flag.context_targets.clone(),
        }
    }
}

impl ItemMeta {
    fn is_live(&self) -> bool {
        self.state == ItemState::Live
    }
}

impl RootSync {
    /// A sync for `store` into `envs`.
    pub fn new(
        store: Arc<dyn ChangeFeed>,
        envs: Arc<Environments>,
        health: Arc<RootHealth>,
        timing: SyncTiming,
    ) -> RootSync {
        RootSync {
            store,
            envs,
            health,
            backoff: Backoff::new(timing.backoff_base),
            poll_interval: timing.poll_interval.max(Duration::from_millis(10)),
            states: HashMap::new(),
            database_url: None,
            notices: ChangeNotices::new(),
        }
    }

    /// Tells `notices` of every change once it is served.
    pub fn notifying(mut self, notices: ChangeNotices) -> RootSync {
        self.notices = notices;
        self
    }

    /// Failures to reach the store are explained by connecting to `url` directly (see
    /// [`crate::backend::explain_unreachable`]).
    pub fn explained_by(mut self, url: Option<String>) -> RootSync {
        self.database_url = url;
        self
    }

    /// What to say about `error`: why the database cannot be reached, when that can be found
    /// out, else the error itself.
    pub async fn describe(&self, error: &StoreError) -> String {
        let reason = match &self.database_url {
            Some(url) => crate::backend::explain_unreachable(url, error).await,
            None => None,
        };
        reason.unwrap_or_else(|| error.to_string())
    }

    /// Subscribes and loads (or catches up) every environment. On success the subscription
    /// is live and everything committed before it is served.
    pub async fn connect(&mut self) -> Result<Box<dyn ChangeSubscription>, StoreError> {
        let subscription = self.store.subscribe().await?;
        self.sync_all().await?;
        self.health.tracker.record_success();
        Ok(subscription)
    }

    /// Runs until `shutdown`, following `first` (from [`RootSync::connect`]) when given, and
    /// reconnecting with backoff whenever the feed fails.
    pub fn spawn(
        mut self,
        first: Option<Box<dyn ChangeSubscription>>,
        shutdown: Shutdown,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut subscription = first;
            loop {
                let sub = match subscription.take() {
                    Some(sub) => sub,
                    None => match self.connect().await {
                        Ok(sub) => {
                            tracing::info!("store reachable again; caught up");
                            sub
                        }
                        Err(e) => {
                            if !self.fail(&e, &shutdown).await {
                                return;
                            }
                            continue;
                        }
                    },
                };
                match self.follow(sub, &shutdown).await {
                    Ok(()) => return,
                    Err(e) => {
                        if !self.fail(&e, &shutdown).await {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// Records a failure and waits out the backoff; false when shutting down.
    async fn fail(&self, error: &StoreError, shutdown: &Shutdown) -> bool {
        self.health.tracker.record_failure(error);
        let delay = self.health.tracker.next_delay(&self.backoff);
        let error = self.describe(error).await;
        let retry_in_ms = delay.as_millis() as u64;
        if self
            .envs
            .all()
            .iter()
            .any(|env| env.store.snapshot().is_some())
        {
            tracing::warn!(
                error,
                retry_in_ms,
                "store unreachable; serving the last data"
            );
        } else {
            tracing::warn!(
                error,
                retry_in_ms,
                "store unreachable; serving nothing until it answers"
            );
        }
        tokio::select! {
            () = shutdown.wait() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    async fn follow(
        &mut self,
        mut subscription: Box<dyn ChangeSubscription>,
        shutdown: &Shutdown,
    ) -> Result<(), StoreError> {
        let mut ticker = tokio::time::interval(self.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = shutdown.wait() => return Ok(()),
                change = subscription.next() => {
                    let change = change?;
                    self.on_change(&change).await?;
                    self.health.tracker.record_success();
                }
                _ = ticker.tick() => {
                    self.sync_all().await?;
                    self.health.tracker.record_success();
                }
            }
        }
    }

    async fn on_change(&mut self, change: &Change) -> Result<(), StoreError> {
        match self.states.get(&change.env) {
            Some(state) if change.seq <= state.cursor => Ok(()),
            Some(_) => self.catch_up(&change.env).await,
            None => self.load(&change.env).await,
        }
    }

    /// Loads environments not seen yet and catches up on the others.
    async fn sync_all(&mut self) -> Result<(), StoreError> {
        let environments = self.store.list_environments().await?;
        for environment in environments {
            if self.states.contains_key(&environment.key) {
                self.catch_up(&environment.key).await?;
            } else {
                self.load(&environment.key).await?;
            }
        }
        Ok(())
    }

    /// Loads one environment whole. It logs when it starts and when it is done (with the
    /// counts and the time it took), two lines whatever the size, since a large environment
    /// can take seconds and nothing else would show for it.
    async fn load(&mut self, key: &str) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        tracing::info!(env = key, "loading environment");
        let snapshot = match self.store.snapshot(key).await {
            Ok(snapshot) => snapshot,
            // Gone between the notification and now: nothing to serve.
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        // Served versions count every kill, unkill and override change ever recorded (see
        // `served_version`).
        let history = match self.store.changes_since(key, 0).await {
            Ok(history) => history,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut ops_changes: HashMap<String, u64> = HashMap::new();
        for change in history {
            if change.seq <= snapshot.cursor && is_ops_change(&change.kind) {
                *ops_changes.entry(change.key).or_default() += 1;
            }
        }
        let env = self.envs.get_or_create(key);
        for o in &snapshot.overrides {
            env.ops
                .set_override(&o.flag_key, &o.context_kind, &o.context_key, o.variation);
        }
        for flag in &snapshot.killed {
            env.ops.kill(flag);
        }
        let mut state = EnvState {
            env,
            flags: HashMap::with_capacity(snapshot.flags.len()),
            segments: HashMap::with_capacity(snapshot.segments.len()),
            ops_changes,
            stored_targets: HashMap::new(),
            generation: 0,
            cursor: snapshot.cursor,
            dirty: Vec::new(),
            dirty_set: HashSet::new(),
            fresh_flags: HashMap::new(),
            fresh_segments: HashMap::new(),
        };
        let mut data = FlagData::default();
        for stored in snapshot.flags {
            let Some(flag) = state.read_flag(stored) else {
                continue;
            };
            if let Some(served) = state.served_flag(flag, true) {
                data.flags.insert(served.key.clone(), served);
            }
        }
        for stored in snapshot.segments {
            let Some(segment) = state.read_segment(stored) else {
                continue;
            };
            if state
                .segments
                .get(&segment.key)
                .is_some_and(ItemMeta::is_live)
            {
                data.segments.insert(segment.key.clone(), segment);
            }
        }
        state.share_archived();
        match Snapshot::from_models(data, 1) {
            Ok(served) => {
                state.generation = 1;
                if state.env.store.snapshot().is_some() {
                    // Data read from Redis at start, or an earlier load: streams start again
                    // from this one, whatever its generation.
                    state.env.store.publish_reset(Arc::new(served));
                } else {
                    state.env.store.publish(served, Vec::new());
                }
                state.env.store.record_success(Vec::new());
            }
            Err(e) => {
                tracing::error!(env = key, error = %e, "cannot compile the environment's data");
                state.env.store.record_failure(e.to_string());
            }
        }
        tracing::info!(
            env = key,
            flags = state.flags.len(),
            segments = state.segments.len(),
            ms = started.elapsed().as_millis() as u64,
            "environment loaded"
        );
        self.states.insert(key.to_owned(), state);
        self.notices.send(ChangeNotice {
            env: key.to_owned(),
            kind: NoticeKind::Environment,
            key: key.to_owned(),
        });
        // Reading a whole environment parsed every stored document at once; that is gone now.
        crate::memory::release_free_pages();
        // Changes committed while the snapshot was read are applied now.
        self.catch_up(key).await
    }

    /// Applies an environment's changes after its cursor, then publishes once.
    async fn catch_up(&mut self, key: &str) -> Result<(), StoreError> {
        let Some(state) = self.states.get_mut(key) else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let changes = self.store.changes_since(key, state.cursor).await?;
        if changes.is_empty() {
            return Ok(());
        }
        let before = state.cursor;
        for change in &changes {
            if change.seq <= state.cursor {
                continue;
            }
            apply(&*self.store, state, change).await?;
            state.cursor = change.seq;
        }
        let read = started.elapsed();
        state.publish();
        // Told once served, so that whoever looks again on hearing it sees the change.
        for change in changes.iter().filter(|c| c.seq > before) {
            self.notices.send(ChangeNotice {
                env: key.to_owned(),
                kind: NoticeKind::of(&change.kind),
                key: change.key.clone(),
            });
        }
        tracing::debug!(
            env = key,
            changes = changes.len(),
            read_us = read.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "changes applied"
        );
        Ok(())
    }
}

/// Applies one change to `state`: the kill set and overrides at once, flags and segments at
/// the next [`EnvState::publish`].
async fn apply(
    store: &dyn ChangeFeed,
    state: &mut EnvState,
    change: &Change,
) -> Result<(), StoreError> {
    let env = state.env.key.clone();
    match &change.kind {
        ChangeKind::Flag { .. } => match store.get_flag(&env, &change.key).await {
            Ok(stored) => {
                let held = state.flags.get(&stored.key).map(|m| m.version);
                if held.is_none_or(|v| stored.version > v)
                    && let Some(flag) = state.read_flag(stored)
                {
                    state.mark(ItemKind::Flag, &flag.key);
                    state.fresh_flags.insert(flag.key.clone(), flag);
                }
            }
            Err(StoreError::NotFound { .. }) => {
                let held = state.flags.get(&change.key).map_or(0, |m| m.version);
                if change.version >= held {
                    state.flags.insert(
                        change.key.clone(),
                        ItemMeta {
                            version: change.version,
                            state: ItemState::Deleted,
                            on: false,
                        },
                    );
                    state.fresh_flags.remove(&change.key);
                    // A deleted flag's kill and overrides go with it.
                    state.env.ops.revive(&change.key);
                    state.env.ops.clear_flag(&change.key);
                    state.stored_targets.remove(&change.key);
                    state.mark(ItemKind::Flag, &change.key);
                }
            }
            Err(e) => return Err(e),
        },
        ChangeKind::Segment { .. } => match store.get_segment(&env, &change.key).await {
            Ok(stored) => {
                let held = state.segments.get(&stored.key).map(|m| m.version);
                if held.is_none_or(|v| stored.version > v)
                    && let Some(segment) = state.read_segment(stored)
                {
                    state.mark(ItemKind::Segment, &segment.key);
                    state.fresh_segments.insert(segment.key.clone(), segment);
                }
            }
            Err(StoreError::NotFound { .. }) => {
                let held = state.segments.get(&change.key).map_or(0, |m| m.version);
                if change.version >= held {
                    state.segments.insert(
                        change.key.clone(),
                        ItemMeta {
                            version: change.version,
                            state: ItemState::Deleted,
                            on: false,
                        },
                    );
                    state.fresh_segments.remove(&change.key);
                    state.mark(ItemKind::Segment, &change.key);
                }
            }
            Err(e) => return Err(e),
        },
        ChangeKind::Kill { killed } => {
            *state.ops_changes.entry(change.key.clone()).or_default() += 1;
            if *killed {
                state.env.ops.kill(&change.key);
            } else {
                state.env.ops.revive(&change.key);
            }
            state.mark(ItemKind::Flag, &change.key);
        }
        // An environment is loaded whole when first seen; a served one has nothing to apply,
        // and its name and colour are not served.
        ChangeKind::EnvironmentCreated | ChangeKind::EnvironmentUpdated => {}
        ChangeKind::Override {
            context_kind,
            context_key,
            variation,
        } => {
            // The flag is served again with the override among its targets, at a newer version.
            *state.ops_changes.entry(change.key.clone()).or_default() += 1;
            let ops = &state.env.ops;
            match variation {
                Some(v) => {
                    ops.set_override(&change.key, context_kind, context_key, *v);
                }
                None => {
                    ops.remove_override(&change.key, context_kind, context_key);
                }
            }
            state.mark(ItemKind::Flag, &change.key);
        }
    }
    Ok(())
}

/// Whether a change is to the operations layer of a flag, which raises its served version.
fn is_ops_change(kind: &ChangeKind) -> bool {
    matches!(kind, ChangeKind::Kill { .. } | ChangeKind::Override { .. })
}

impl EnvState {
    /// The version SDKs are served for flag `key` at store version `version`.
    ///
    /// A kill is served to SDKs as `on: false` and an override as a target, and SDKs ignore an
    /// update that is not newer than what they hold, so each kill, unkill and override change
    /// must raise the served version although none changes the store's version. The served
    /// version is therefore the store version plus the number of such changes the store has
    /// ever recorded for the flag. Both only grow, so the served version never goes back, and
    /// it is computed from the store's data alone, so every replica, and a replica after a
    /// restart, serves the same version for the same data. A flag never killed or overridden is
    /// served at its store version.
    fn served_version(&self, key: &str, version: u64) -> u64 {
        version + self.ops_changes.get(key).copied().unwrap_or(0)
    }

    /// The flag as served ([`Ops::serve`]): its served version, `on: false` while killed, and
    /// its overrides as its first targets. `flag` is the stored document when `from_store`,
    /// and otherwise the flag as served now, whose own `on` and targets are put back first.
    fn served_flag(&mut self, mut flag: Flag, from_store: bool) -> Option<Flag> {
        let meta = *self.flags.get(&flag.key)?;
        if !meta.is_live() {
            return None;
        }
        let ops: &Ops = &self.env.ops;
        if from_store {
            if ops.has_overrides(&flag.key) || self.stored_targets.contains_key(&flag.key) {
                self.stored_targets
                    .insert(flag.key.clone(), StoredTargets::of(&flag));
            }
        } else if let Some(stored) = self.stored_targets.get(&flag.key) {
            flag.targets.clone_from(&stored.targets);
            flag.context_targets.clone_from(&stored.context_targets);
        } else if ops.has_overrides(&flag.key) {
            // Served without overrides until now, so its targets are the stored ones.
            self.stored_targets
                .insert(flag.key.clone(), StoredTargets::of(&flag));
        }
        flag.on = meta.on;
        flag.version = self.served_version(&flag.key, meta.version);
        Some(self.env.ops.serve(flag))
    }

    /// Tells the environment which flags are archived, for the flag states that report them.
    fn share_archived(&self) {
        let archived = self
            .flags
            .iter()
            .filter(|(_, meta)| meta.state == ItemState::Archived)
            .map(|(key, _)| key.clone())
            .collect();
        self.env.set_archived(archived);
    }

    /// Records a stored flag's state and parses its document (`None`, logged, when it does
    /// not parse; stored documents were validated when written, so that means the store was
    /// changed behind flagd's back).
    fn read_flag(&mut self, stored: StoredFlag) -> Option<Flag> {
        let state = if stored.archived {
            ItemState::Archived
        } else {
            ItemState::Live
        };
        let parsed = Flag::from_json_value(stored.doc);
        let on = parsed.as_ref().is_ok_and(|f| f.on);
        self.flags.insert(
            stored.key.clone(),
            ItemMeta {
                version: stored.version,
                state,
                on,
            },
        );
        match parsed {
            Ok(mut flag) => {
                flag.key = stored.key;
                Some(flag)
            }
            Err(e) => {
                self.bad_item("flags", &stored.key, &e.to_string());
                None
            }
        }
    }

    /// As [`EnvState::read_flag`], for segments.
    fn read_segment(&mut self, stored: StoredSegment) -> Option<Segment> {
        let state = if stored.archived {
            ItemState::Archived
        } else {
            ItemState::Live
        };
        self.segments.insert(
            stored.key.clone(),
            ItemMeta {
                version: stored.version,
                state,
                on: false,
            },
        );
        match Segment::from_json_value(stored.doc) {
            Ok(mut segment) => {
                segment.key = stored.key;
                segment.version = stored.version;
                Some(segment)
            }
            Err(e) => {
                self.bad_item("segments", &stored.key, &e.to_string());
                None
            }
        }
    }

    fn bad_item(&self, section: &str, key: &str, error: &str) {
        let message = format!("cannot read stored {section}.{key}: {error}");
        tracing::error!(env = %self.env.key, "{message}; it is not served");
        self.env.store.record_failure(message);
    }

    fn mark(&mut self, kind: ItemKind, key: &str) {
        if self.dirty_set.insert((kind, key.to_owned())) {
            self.dirty.push((kind, key.to_owned()));
        }
    }

    /// Serves what changed since the last publish: the changed items are compiled into a new
    /// snapshot that shares everything else with the current one, and streams get a `patch`
    /// or `delete` per item whose served form changed. Nothing is published when nothing did.
    fn publish(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        self.dirty_set.clear();
        if dirty.iter().any(|(kind, _)| *kind == ItemKind::Flag) {
            self.share_archived();
        }
        let mut fresh_flags = std::mem::take(&mut self.fresh_flags);
        let mut fresh_segments = std::mem::take(&mut self.fresh_segments);
        let Some(current) = self.env.store.snapshot() else {
            return;
        };
        let mut updates = Vec::with_capacity(dirty.len());
        for (kind, key) in dirty {
            match kind {
                ItemKind::Flag => {
                    let Some(meta) = self.flags.get(&key).copied() else {
                        continue;
                    };
                    if !meta.is_live() {
                        let version = self.served_version(&key, meta.version);
                        updates.push(Update::DeleteFlag { key, version });
                        continue;
                    }
                    // A kill or override change alone re-serves the flag already held.
                    let flag = match fresh_flags.remove(&key) {
                        Some(stored) => Some((stored, true)),
                        None => current.flag(&key).map(|served| (served, false)),
                    };
                    let served = flag.and_then(|(f, from_store)| self.served_flag(f, from_store));
                    if let Some(served) = served {
                        updates.push(Update::Flag(served));
                    }
                }
                ItemKind::Segment => {
                    let Some(meta) = self.segments.get(&key).copied() else {
                        continue;
                    };
                    if !meta.is_live() {
                        updates.push(Update::DeleteSegment {
                            key,
                            version: meta.version,
                        });
                    } else if let Some(segment) = fresh_segments.remove(&key) {
                        updates.push(Update::Segment(segment));
                    }
                }
            }
        }
        if updates.is_empty() {
            return;
        }
        let generation = self.generation + 1;
        match current.apply(generation, updates) {
            Ok(Some(applied)) => {
                self.generation = generation;
                match crate::engine::events(&applied.snapshot, &applied.changed) {
                    Ok(events) => {
                        self.env.store.publish(applied.snapshot, events);
                        self.env.store.record_success(Vec::new());
                    }
                    Err(e) => {
                        tracing::error!(env = %self.env.key, error = %e, "cannot render the store's changes");
                        self.env.store.record_failure(e.to_string());
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(env = %self.env.key, error = %e, "cannot apply the store's changes");
                self.env.store.record_failure(e.to_string());
            }
        }
    }
}
