//! Root mode: serving every environment of an [`AdminStore`] (PostgreSQL in production), kept
//! current from the store's change feed.
//!
//! At start each environment is loaded whole ([`AdminStore::snapshot`]): flags, segments and the
//! kill set, plus every flag's overrides. From then on a notification is only a wake-up call:
//! the environment's changes after the last applied `seq` are read with
//! [`AdminStore::changes_since`] and applied in order, and a flag or segment change fetches the
//! item as it is now and applies it only if its version is newer than the one held. So a missed,
//! repeated or reordered notification can neither skip nor regress data. A timer does the same
//! catch-up every poll interval, which also proves the store is reachable for `/readyz`.
//!
//! A killed flag is served to LaunchDarkly SDKs with `on: false`, so SDKs that evaluate locally
//! honour the kill; its served version is bumped for that (and again on unkill) by the same
//! [`Versions`] bookkeeping file mode uses, because SDKs ignore a patch that is not newer.
//!
//! When the feed fails, the failure is recorded in a [`HealthTracker`], the loop waits
//! ([`Backoff`]: 1x, 2x, 4x, 8x of the base), subscribes again and catches up. The last
//! snapshot keeps serving all along.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flags_cache::{Backoff, HealthReport, HealthTracker};
use flags_core::store::{
    AdminStore, Change, ChangeKind, ChangeSubscription, StoreError, StoredFlag, StoredSegment,
};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::engine::Snapshot;
use crate::env::{Env, Environments};
use crate::server::Shutdown;
use crate::source::file::RawData;
use crate::source::versions::Versions;

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

/// Timing of the sync loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTiming {
    /// Catch-up poll interval (a backstop for missed notifications, and a health probe).
    pub poll_interval: Duration,
    /// Base of the reconnect backoff.
    pub backoff_base: Duration,
}

/// Keeps every environment of a store served.
pub struct RootSync {
    store: Arc<dyn AdminStore>,
    envs: Arc<Environments>,
    health: Arc<RootHealth>,
    backoff: Backoff,
    poll_interval: Duration,
    states: HashMap<String, EnvState>,
}

/// What one environment holds, as the store last told it.
struct EnvState {
    env: Arc<Env>,
    /// Flags and segments by key, archived ones included (for their versions).
    flags: BTreeMap<String, StoredFlag>,
    segments: BTreeMap<String, StoredSegment>,
    /// Versions of deleted items, so an old change cannot bring them back.
    flag_tombstones: HashMap<String, u64>,
    segment_tombstones: HashMap<String, u64>,
    killed: BTreeSet<String>,
    versions: Versions,
    generation: u64,
    cursor: u64,
}

impl RootSync {
    /// A sync for `store` into `envs`.
    pub fn new(
        store: Arc<dyn AdminStore>,
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
        }
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
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64,
            "store change feed failed; serving the last data");
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

    /// Loads one environment whole.
    async fn load(&mut self, key: &str) -> Result<(), StoreError> {
        let snapshot = match self.store.snapshot(key).await {
            Ok(snapshot) => snapshot,
            // Gone between the notification and now: nothing to serve.
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let env = self.envs.get_or_create(key);
        for flag in &snapshot.flags {
            for o in self.store.list_overrides(key, &flag.key).await? {
                env.ops
                    .set_override(&flag.key, &o.context_kind, &o.context_key, o.variation);
            }
        }
        for flag in &snapshot.killed {
            env.ops.kill(flag);
        }
        let mut state = EnvState {
            env,
            flags: snapshot
                .flags
                .into_iter()
                .map(|f| (f.key.clone(), f))
                .collect(),
            segments: snapshot
                .segments
                .into_iter()
                .map(|s| (s.key.clone(), s))
                .collect(),
            flag_tombstones: HashMap::new(),
            segment_tombstones: HashMap::new(),
            killed: snapshot.killed.into_iter().collect(),
            versions: Versions::new(),
            generation: 0,
            cursor: snapshot.cursor,
        };
        state.publish();
        tracing::info!(
            env = key,
            flags = state.flags.len(),
            segments = state.segments.len(),
            "environment loaded"
        );
        self.states.insert(key.to_owned(), state);
        // Changes committed while the snapshot was read are applied now.
        self.catch_up(key).await
    }

    /// Applies an environment's changes after its cursor, then publishes once.
    async fn catch_up(&mut self, key: &str) -> Result<(), StoreError> {
        let Some(state) = self.states.get_mut(key) else {
            return Ok(());
        };
        let changes = self.store.changes_since(key, state.cursor).await?;
        if changes.is_empty() {
            return Ok(());
        }
        for change in &changes {
            if change.seq <= state.cursor {
                continue;
            }
            apply(&*self.store, state, change).await?;
            state.cursor = change.seq;
        }
        state.publish();
        Ok(())
    }
}

/// Applies one change to `state` (the kill set and overrides at once; flags and segments are
/// served from the next [`EnvState::publish`]).
async fn apply(
    store: &dyn AdminStore,
    state: &mut EnvState,
    change: &Change,
) -> Result<(), StoreError> {
    let env = state.env.key.clone();
    match &change.kind {
        ChangeKind::Flag { .. } => match store.get_flag(&env, &change.key).await {
            Ok(flag) => {
                let held = state
                    .flags
                    .get(&flag.key)
                    .map(|f| f.version)
                    .or_else(|| state.flag_tombstones.get(&flag.key).copied());
                if held.is_none_or(|v| flag.version > v) {
                    state.flag_tombstones.remove(&flag.key);
                    state.flags.insert(flag.key.clone(), flag);
                }
            }
            Err(StoreError::NotFound { .. }) => {
                let held = state.flags.get(&change.key).map_or(0, |f| f.version);
                if change.version >= held {
                    state.flags.remove(&change.key);
                    state
                        .flag_tombstones
                        .insert(change.key.clone(), change.version);
                    // A deleted flag's kill and overrides go with it.
                    state.killed.remove(&change.key);
                    state.env.ops.revive(&change.key);
                    state.env.ops.clear_flag(&change.key);
                }
            }
            Err(e) => return Err(e),
        },
        ChangeKind::Segment { .. } => match store.get_segment(&env, &change.key).await {
            Ok(segment) => {
                let held = state
                    .segments
                    .get(&segment.key)
                    .map(|s| s.version)
                    .or_else(|| state.segment_tombstones.get(&segment.key).copied());
                if held.is_none_or(|v| segment.version > v) {
                    state.segment_tombstones.remove(&segment.key);
                    state.segments.insert(segment.key.clone(), segment);
                }
            }
            Err(StoreError::NotFound { .. }) => {
                let held = state.segments.get(&change.key).map_or(0, |s| s.version);
                if change.version >= held {
                    state.segments.remove(&change.key);
                    state
                        .segment_tombstones
                        .insert(change.key.clone(), change.version);
                }
            }
            Err(e) => return Err(e),
        },
        ChangeKind::Kill { killed } => {
            if *killed {
                state.killed.insert(change.key.clone());
                state.env.ops.kill(&change.key);
            } else {
                state.killed.remove(&change.key);
                state.env.ops.revive(&change.key);
            }
        }
        ChangeKind::Override {
            context_kind,
            context_key,
            variation,
        } => match variation {
            Some(v) => {
                state
                    .env
                    .ops
                    .set_override(&change.key, context_kind, context_key, *v);
            }
            None => {
                state
                    .env
                    .ops
                    .remove_override(&change.key, context_kind, context_key);
            }
        },
    }
    Ok(())
}

impl EnvState {
    /// Builds and serves a snapshot of what is held, with `patch`/`delete` events for every
    /// item whose served form changed. Nothing is published when nothing changed.
    fn publish(&mut self) {
        let mut raw = RawData::default();
        for (key, flag) in self.flags.iter().filter(|(_, f)| !f.archived) {
            let mut doc = flag.doc.clone();
            if self.killed.contains(key)
                && let Value::Object(object) = &mut doc
            {
                object.insert("on".to_owned(), Value::Bool(false));
            }
            raw.flags.insert(key.clone(), doc);
        }
        for (key, segment) in self.segments.iter().filter(|(_, s)| !s.archived) {
            raw.segments.insert(key.clone(), segment.doc.clone());
        }
        let (versions, changes) = self.versions.assign(&mut raw);
        if self.generation > 0 && changes.is_empty() {
            return;
        }
        let generation = self.generation + 1;
        match Snapshot::build(&raw, generation, &changes) {
            Ok((snapshot, events, _warnings)) => {
                self.versions = versions;
                self.generation = generation;
                self.env.store.publish(snapshot, events);
                self.env.store.record_success(Vec::new());
            }
            Err(e) => {
                // Stored documents were validated when written; this means the store was
                // changed behind flagd's back. The last good snapshot keeps serving.
                tracing::error!(env = %self.env.key, error = %e, "cannot build a snapshot from the store's data");
                self.env.store.record_failure(e.to_string());
            }
        }
    }
}
