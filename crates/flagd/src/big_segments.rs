//! Big segments in flagd: where memberships come from when a request is evaluated, the copy
//! of every upload in Redis, and keeping `synchronized_on` current.
//!
//! Evaluation is synchronous and must not wait on a database, so a request whose environment
//! serves a big segment first fetches (asynchronously, cache first) the memberships of its
//! context's keys and the store's `synchronized_on`, and is then evaluated against a small
//! in-memory [`BigSegmentStore`] holding just those ([`Prefetched`]). flags-eval judges the
//! status from it exactly as LaunchDarkly's SDKs do (`HEALTHY`, `STALE` after 2 minutes,
//! `STORE_ERROR`). Requests to environments without big segments never come here.
//!
//! Root mode reads memberships from its store (PostgreSQL); with `--redis-url` every upload is
//! also copied into Redis under the environment's prefix, in LaunchDarkly's layout, so SDKs in
//! daemon mode read the same sets. File mode with `--redis-url` reads memberships from Redis,
//! as written by whoever keeps them there (LaunchDarkly's Relay does). LaunchDarkly's SDKs call
//! a store stale once `synchronized_on` is 2 minutes old, so while flagd follows its store it
//! writes the time again every `sync.big_segments_refresh_ms`, 30 s by default (root mode only:
//! in file mode whoever writes the memberships owns that time).
//!
//! The same round builds an environment's Redis copy again from the store when the copy
//! missed an upload (Redis was down) or Redis lost it (its `synchronized_on` is gone, as after
//! a restart without persistence, or before the first write): every served generation is
//! emptied and copied whole, with `synchronized_on` absent meanwhile so readers say `STALE`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flags_cache::{CacheConfig, TtlCache};
use flags_core::{
    BigSegmentMembership, BigSegmentStore, BigSegmentStoreError, BigSegmentStoreMetadata, Context,
};
use flags_eval::big_segment_hash;
use flags_store::{BigSegmentMembers, MemberUpload, StoreError};
use flags_store_redis::RedisBigSegments;

use crate::env::Environments;
use crate::shutdown::Shutdown;

/// How long a fetched membership or `synchronized_on` is used (LaunchDarkly's default).
const CACHE_TTL: Duration = Duration::from_secs(5);

/// The most memberships cached at once.
const CACHE_ENTRIES: usize = 100_000;

/// Where big-segment memberships come from, with their cache and the Redis copy of uploads.
pub struct BigSegments {
    members: Arc<dyn BigSegmentMembers>,
    /// By `"{env}\n{hash}"`; `None`: the context is listed nowhere.
    memberships: TtlCache<String, Arc<BigSegmentMembership>, StoreError>,
    /// By environment; `None`: never synchronized.
    synchronized_on: TtlCache<String, u64, StoreError>,
    mirror: Option<RedisMirror>,
}

impl std::fmt::Debug for BigSegments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigSegments")
            .field("mirror", &self.mirror.is_some())
            .finish_non_exhaustive()
    }
}

impl BigSegments {
    /// Memberships read from `members`, and uploads copied to `mirror` when there is one.
    pub(crate) fn with_mirror(
        members: Arc<dyn BigSegmentMembers>,
        mirror: Option<RedisMirror>,
    ) -> Result<BigSegments, flags_cache::ConfigError> {
        let config = CacheConfig {
            ttl: CACHE_TTL,
            jitter: 0.1,
            max_entries: CACHE_ENTRIES,
        };
        let metadata = CacheConfig {
            max_entries: 1_000,
            ..config.clone()
        };
        Ok(BigSegments {
            members,
            memberships: TtlCache::new(config)?,
            synchronized_on: TtlCache::new(metadata)?,
            mirror,
        })
    }

    /// Memberships read from `members`, cached as flagd caches them.
    pub fn new(
        members: Arc<dyn BigSegmentMembers>,
    ) -> Result<BigSegments, flags_cache::ConfigError> {
        BigSegments::with_mirror(members, None)
    }

    /// Where memberships are kept.
    pub fn members(&self) -> &Arc<dyn BigSegmentMembers> {
        &self.members
    }

    /// What the evaluation of `context` in `env` needs: the memberships of its keys and the
    /// store's `synchronized_on`, from the cache or fetched now.
    pub async fn prefetch(&self, env: &str, context: &Context) -> Prefetched {
        let mut keys: Vec<&str> = context.contexts().iter().map(|c| c.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut memberships = Vec::with_capacity(keys.len());
        for key in keys {
            let hash = big_segment_hash(key);
            let cache_key = format!("{env}\n{hash}");
            let members = &self.members;
            let lookup = self
                .memberships
                .get_or_refresh(&cache_key, || async {
                    let mut found = members
                        .memberships(env, std::slice::from_ref(&hash))
                        .await?;
                    Ok(found.pop().map(|(_, m)| Arc::new(m)))
                })
                .await;
            let membership = match lookup {
                // A stale answer means the store failed just now: reported as such, as an SDK
                // whose query failed does.
                Ok(lookup) if lookup.is_stale() => {
                    Err("the big-segment store did not answer".to_owned())
                }
                Ok(lookup) => Ok(lookup.value),
                Err(e) => Err(e.to_string()),
            };
            memberships.push((hash, membership));
        }
        let lookup = self
            .synchronized_on
            .get_or_refresh(env, || self.members.synchronized_on(env))
            .await;
        let synchronized_on = match lookup {
            Ok(lookup) if lookup.is_stale() => {
                Err("the big-segment store did not answer".to_owned())
            }
            Ok(lookup) => Ok(lookup.value),
            Err(e) => Err(e.to_string()),
        };
        Prefetched {
            memberships,
            synchronized_on,
        }
    }

    /// Forgets what is cached of `env`, after an upload changed it here.
    pub(crate) fn forget(&self, env: &str) {
        // Entries of other environments go too: uploads are rare, and the cache refills in
        // one query per context.
        self.memberships.clear();
        self.synchronized_on.invalidate(env);
    }

    /// The Redis copy of uploads, when `--redis-url` is set in root mode.
    pub(crate) fn mirror(&self) -> Option<&RedisMirror> {
        self.mirror.as_ref()
    }
}

/// One context's membership (`None`: listed nowhere), or why it could not be read.
type Fetched = Result<Option<Arc<BigSegmentMembership>>, String>;

/// What one evaluation may ask of the big-segment store, fetched before it started: the
/// [`BigSegmentStore`] an evaluator of that request reads.
#[derive(Debug)]
pub struct Prefetched {
    /// By context hash: the membership (`None`: listed nowhere), or why it could not be read.
    memberships: Vec<(String, Fetched)>,
    synchronized_on: Result<Option<u64>, String>,
}

impl BigSegmentStore for Prefetched {
    fn membership(
        &self,
        context_hash: &str,
    ) -> Result<Option<BigSegmentMembership>, BigSegmentStoreError> {
        match self
            .memberships
            .iter()
            .find(|(hash, _)| hash == context_hash)
        {
            Some((_, Ok(membership))) => Ok(membership.as_deref().cloned()),
            Some((_, Err(message))) => Err(BigSegmentStoreError {
                message: message.clone(),
            }),
            // Every key of the context was fetched; another key is none of its own.
            None => Ok(None),
        }
    }

    fn metadata(&self) -> Result<BigSegmentStoreMetadata, BigSegmentStoreError> {
        match &self.synchronized_on {
            Ok(last_up_to_date) => Ok(BigSegmentStoreMetadata {
                last_up_to_date: *last_up_to_date,
            }),
            Err(message) => Err(BigSegmentStoreError {
                message: message.clone(),
            }),
        }
    }
}

/// Memberships read from the Redis at `url` under one prefix (file mode), connected on first
/// use, so a Redis that does not answer at start is read once it does; until then lookups
/// fail and evaluations say `STORE_ERROR`, as an SDK's would. After a failed connect the next
/// try waits [`RedisMembers::RETRY`], so requests do not queue behind connection attempts.
pub(crate) struct RedisMembers {
    url: String,
    prefix: String,
    state: tokio::sync::Mutex<Connecting>,
}

#[derive(Default)]
struct Connecting {
    store: Option<Arc<RedisBigSegments>>,
    failed_at: Option<std::time::Instant>,
}

impl RedisMembers {
    const RETRY: Duration = Duration::from_secs(1);

    /// Memberships under `prefix` in the Redis at `url`; nothing is connected yet.
    pub(crate) fn new(url: String, prefix: String) -> RedisMembers {
        RedisMembers {
            url,
            prefix,
            state: tokio::sync::Mutex::new(Connecting::default()),
        }
    }

    async fn store(&self) -> Result<Arc<RedisBigSegments>, StoreError> {
        let mut state = self.state.lock().await;
        if let Some(store) = &state.store {
            return Ok(Arc::clone(store));
        }
        if state
            .failed_at
            .is_some_and(|at| at.elapsed() < RedisMembers::RETRY)
        {
            return Err(StoreError::unavailable(format!(
                "Redis at {} did not answer a moment ago",
                self.url
            )));
        }
        match RedisBigSegments::connect(&self.url, &self.prefix).await {
            Ok(store) => {
                let store = Arc::new(store);
                state.store = Some(Arc::clone(&store));
                state.failed_at = None;
                Ok(store)
            }
            Err(error) => {
                state.failed_at = Some(std::time::Instant::now());
                Err(error.into_store_error())
            }
        }
    }
}

#[async_trait::async_trait]
impl BigSegmentMembers for RedisMembers {
    async fn begin_upload(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        fresh: bool,
    ) -> Result<Box<dyn MemberUpload>, StoreError> {
        self.store()
            .await?
            .begin_upload(env, segment, generation, fresh)
            .await
    }

    async fn memberships(
        &self,
        env: &str,
        context_hashes: &[String],
    ) -> Result<Vec<(String, BigSegmentMembership)>, StoreError> {
        self.store().await?.memberships(env, context_hashes).await
    }

    async fn synchronized_on(&self, env: &str) -> Result<Option<u64>, StoreError> {
        self.store().await?.synchronized_on(env).await
    }

    async fn set_synchronized_on(&self, env: &str, unix_ms: u64) -> Result<(), StoreError> {
        BigSegmentMembers::set_synchronized_on(self.store().await?.as_ref(), env, unix_ms).await
    }

    async fn clear_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
    ) -> Result<(), StoreError> {
        self.store()
            .await?
            .clear_generation(env, segment, generation)
            .await
    }

    async fn copy_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        into: &mut dyn MemberUpload,
    ) -> Result<u64, StoreError> {
        self.store()
            .await?
            .copy_generation(env, segment, generation, into)
            .await
    }
}

/// The Redis copy of big-segment uploads, one [`RedisBigSegments`] per environment prefix
/// (the prefix `redis_mirror` writes the environment's flags under).
pub(crate) struct RedisMirror {
    url: String,
    /// The prefix, with `{env}` standing for the environment key.
    template: String,
    stores: tokio::sync::Mutex<HashMap<String, Arc<RedisBigSegments>>>,
    /// Environments whose copy missed an upload: their `synchronized_on` is not written in
    /// Redis again, so SDKs reading it report `STALE`, until the copy is rebuilt.
    behind: Mutex<HashSet<String>>,
    /// Held while an upload is copied or a copy rebuilt, so a rebuild never reads the store
    /// half way through an upload it would then overwrite.
    writing: tokio::sync::Mutex<()>,
}

impl RedisMirror {
    /// A copy into the Redis at `url`, under `template` with `{env}` replaced.
    pub(crate) fn new(url: String, template: String) -> RedisMirror {
        RedisMirror {
            url,
            template,
            stores: tokio::sync::Mutex::new(HashMap::new()),
            behind: Mutex::new(HashSet::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Taken around an upload's commit and copy (see [`RedisMirror::rebuild`]).
    pub(crate) async fn writing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writing.lock().await
    }

    /// The store of `env`'s prefix, connected on first use (and again after a failed connect).
    pub(crate) async fn store(&self, env: &str) -> Result<Arc<RedisBigSegments>, StoreError> {
        let mut stores = self.stores.lock().await;
        if let Some(store) = stores.get(env) {
            return Ok(Arc::clone(store));
        }
        let prefix = crate::config::env_prefix(&self.template, env);
        let store = RedisBigSegments::connect(&self.url, &prefix)
            .await
            .map_err(flags_store_redis::StoreError::into_store_error)?;
        let store = Arc::new(store);
        stores.insert(env.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// An upload into `env`'s copy.
    pub(crate) async fn begin_upload(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        fresh: bool,
    ) -> Result<Box<dyn MemberUpload>, StoreError> {
        self.store(env)
            .await?
            .begin_upload(env, segment, generation, fresh)
            .await
    }

    /// Records whether `env`'s copy holds every upload so far (`whole`: a fresh generation was
    /// copied whole, so earlier misses no longer matter for it).
    pub(crate) fn copied(&self, env: &str, ok: bool, whole: bool) {
        let mut behind = self.behind.lock().unwrap_or_else(PoisonError::into_inner);
        if !ok {
            behind.insert(env.to_owned());
        } else if whole {
            behind.remove(env);
        }
    }

    fn is_behind(&self, env: &str) -> bool {
        self.behind
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(env)
    }

    /// Whether `env`'s copy must be built again: it missed an upload, or Redis has lost it
    /// (`synchronized_on` is gone: a Redis that restarted empty, or one never written).
    async fn needs_rebuild(&self, env: &str) -> Result<bool, StoreError> {
        if self.is_behind(env) {
            return Ok(true);
        }
        let store = self.store(env).await?;
        Ok(store.synchronized_on(env).await?.is_none())
    }

    /// Builds `env`'s copy again from `members`: each served generation (`generations`, by
    /// segment key) is emptied in Redis and copied whole. Until it is done the environment
    /// counts as behind and its `synchronized_on` is gone from Redis, so SDKs reading it
    /// report `STALE`. Answers how many memberships were copied.
    pub(crate) async fn rebuild(
        &self,
        env: &str,
        members: &dyn BigSegmentMembers,
        generations: &[(String, u64)],
    ) -> Result<u64, StoreError> {
        let _writing = self.writing().await;
        self.copied(env, false, false);
        let store = self.store(env).await?;
        store
            .clear_synchronized_on()
            .await
            .map_err(flags_store_redis::StoreError::into_store_error)?;
        let mut copied = 0;
        for (segment, generation) in generations {
            store.clear_generation(env, segment, *generation).await?;
            let mut upload = store.begin_upload(env, segment, *generation, true).await?;
            copied += members
                .copy_generation(env, segment, *generation, upload.as_mut())
                .await?;
            upload
                .commit(None)
                .await
                .map_err(flags_store::UploadError::into_store_error)?;
        }
        self.copied(env, true, true);
        Ok(copied)
    }

    /// Writes `synchronized_on` in `env`'s copy, unless the copy missed an upload.
    pub(crate) async fn synchronized(&self, env: &str, unix_ms: u64) -> Result<(), StoreError> {
        if self.is_behind(env) {
            return Ok(());
        }
        self.store(env)
            .await?
            .set_synchronized_on(unix_ms)
            .await
            .map_err(flags_store_redis::StoreError::into_store_error)
    }
}

/// Writes `synchronized_on` again every `every` for every environment that serves a big
/// segment, in the store and in the Redis copy, while the store answers (root mode). Ends
/// when `shutdown` fires.
pub(crate) fn spawn_refresh(
    big: Arc<BigSegments>,
    envs: Arc<Environments>,
    every: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.wait() => return,
            }
            refresh(&big, &envs).await;
        }
    })
}

/// One round of [`spawn_refresh`].
pub(crate) async fn refresh(big: &BigSegments, envs: &Environments) {
    let now = crate::events::unix_millis();
    for env in envs.all() {
        if !env.store.has_big_segments() {
            continue;
        }
        // The data is current as far as this replica can tell only while it follows the
        // store; a store that does not answer keeps the old time, and turns stale.
        if let Err(error) = big.members.set_synchronized_on(&env.key, now).await {
            tracing::warn!(env = %env.key, %error, "cannot record that big segments are up to date");
            continue;
        }
        big.synchronized_on.invalidate(env.key.as_ref() as &str);
        let Some(mirror) = &big.mirror else {
            continue;
        };
        match mirror.needs_rebuild(&env.key).await {
            Ok(false) => {}
            Ok(true) => {
                let generations = env
                    .store
                    .snapshot()
                    .map(|snapshot| served_generations(snapshot.compiled()))
                    .unwrap_or_default();
                let started = std::time::Instant::now();
                match mirror
                    .rebuild(&env.key, big.members.as_ref(), &generations)
                    .await
                {
                    Ok(copied) => tracing::info!(env = %env.key, copied,
                        segments = generations.len(), ms = started.elapsed().as_millis(),
                        "big segments copied into Redis again"),
                    Err(error) => {
                        tracing::warn!(env = %env.key, %error,
                            "cannot copy big segments into Redis again; its copy stays behind");
                        continue;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(env = %env.key, %error,
                    "cannot read Redis's big-segment copy; it stays as it is");
                continue;
            }
        }
        if let Err(error) = mirror.synchronized(&env.key, now).await {
            tracing::warn!(env = %env.key, %error,
                "cannot record in Redis that big segments are up to date");
        }
    }
}

/// The big segments `data` serves with a generation, by key: the generations evaluators ask
/// a big-segment store about.
fn served_generations(data: &flags_eval::CompiledData) -> Vec<(String, u64)> {
    data.segments()
        .filter(|segment| !segment.is_deleted() && segment.is_unbounded())
        .filter_map(|segment| {
            let generation = segment.to_segment().generation?;
            Some((segment.key().to_owned(), generation))
        })
        .collect()
}
