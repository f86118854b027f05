//! Big (unbounded) segments: membership comes from a [`BigSegmentStore`] (flags-core's trait;
//! a Redis store in LaunchDarkly's Relay layout is one), through a cache, while a poller
//! watches the store's metadata to tell whether it is being kept up to date.
//!
//! As in LaunchDarkly's SDKs: memberships are cached per context key (default 1000 keys for
//! 5 s); the metadata is polled every 5 s, and the store is stale once its last update is
//! older than 120 s; each evaluation that consults a big segment reports `bigSegmentsStatus`
//! (`HEALTHY`, `STALE`, `STORE_ERROR`, or `NOT_CONFIGURED` without a store).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flags_core::{
    BigSegmentMembership, BigSegmentStore, BigSegmentStoreError, BigSegmentStoreMetadata,
};

use crate::listen::{Listener, ListenerId, Listeners};

/// How a client uses a big-segment store.
#[derive(Clone)]
pub struct BigSegmentsConfig {
    /// The store.
    pub store: Arc<dyn BigSegmentStore>,
    /// Context keys whose memberships are cached (LaunchDarkly's default: 1000).
    pub context_cache_size: usize,
    /// How long a cached membership is used (default 5 s).
    pub context_cache_time: Duration,
    /// How often the store's metadata is read (default 5 s).
    pub status_poll_interval: Duration,
    /// The store is stale once its last update is this old (default 120 s).
    pub stale_after: Duration,
}

impl BigSegmentsConfig {
    /// LaunchDarkly's defaults over `store`.
    pub fn new(store: Arc<dyn BigSegmentStore>) -> BigSegmentsConfig {
        BigSegmentsConfig {
            store,
            context_cache_size: 1000,
            context_cache_time: Duration::from_secs(5),
            status_poll_interval: Duration::from_secs(5),
            stale_after: Duration::from_secs(120),
        }
    }
}

impl std::fmt::Debug for BigSegmentsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigSegmentsConfig")
            .field("context_cache_size", &self.context_cache_size)
            .field("context_cache_time", &self.context_cache_time)
            .field("status_poll_interval", &self.status_poll_interval)
            .field("stale_after", &self.stale_after)
            .finish_non_exhaustive()
    }
}

/// The big-segment store's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigSegmentStoreStatus {
    /// The store's metadata could be read at the last poll.
    pub available: bool,
    /// The store has not been updated for longer than `stale_after` (or never).
    pub stale: bool,
}

/// Reads and watches the big-segment store's status. Cheap to clone.
#[derive(Clone)]
pub struct BigSegmentStoreStatusProvider {
    inner: Option<Arc<Shared>>,
}

impl std::fmt::Debug for BigSegmentStoreStatusProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigSegmentStoreStatusProvider")
            .field("status", &self.get_status())
            .finish()
    }
}

impl BigSegmentStoreStatusProvider {
    pub(crate) fn not_configured() -> BigSegmentStoreStatusProvider {
        BigSegmentStoreStatusProvider { inner: None }
    }

    /// The status now. Without a store: not available, not stale. Reads the store's metadata
    /// if it has not been polled yet.
    pub fn get_status(&self) -> BigSegmentStoreStatus {
        match &self.inner {
            None => BigSegmentStoreStatus {
                available: false,
                stale: false,
            },
            Some(shared) => shared.status_now(),
        }
    }

    /// A listener that receives every status change from now on. Without a store it never
    /// receives anything.
    pub fn add_status_listener(&self) -> Listener<BigSegmentStoreStatus> {
        match &self.inner {
            Some(shared) => shared.listeners.add(),
            None => Listeners::new(1).add(),
        }
    }

    /// Removes a listener; returns whether it was registered.
    pub fn remove_status_listener(&self, id: ListenerId) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|shared| shared.listeners.remove(id))
    }
}

/// What the client's evaluator asks: memberships through the cache, metadata as last polled.
#[derive(Clone)]
pub(crate) struct BigSegments {
    shared: Arc<Shared>,
}

struct Shared {
    config: BigSegmentsConfig,
    cache: Mutex<Cache>,
    /// The last poll's outcome: the metadata, or that it failed. `None` before the first.
    polled: Mutex<Option<Result<BigSegmentStoreMetadata, String>>>,
    /// The status the last poll found, which listeners were told of: a status that changes
    /// with time alone (going stale) is a change from this.
    reported: Mutex<Option<BigSegmentStoreStatus>>,
    listeners: Listeners<BigSegmentStoreStatus>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, (Option<BigSegmentMembership>, Instant)>,
    /// Keys in insertion order, to drop the oldest when full.
    order: VecDeque<String>,
}

impl BigSegments {
    pub(crate) fn new(
        config: BigSegmentsConfig,
        listener_capacity: usize,
    ) -> (BigSegments, BigSegmentStoreStatusProvider) {
        let shared = Arc::new(Shared {
            config,
            cache: Mutex::new(Cache::default()),
            polled: Mutex::new(None),
            reported: Mutex::new(None),
            listeners: Listeners::new(listener_capacity),
        });
        (
            BigSegments {
                shared: Arc::clone(&shared),
            },
            BigSegmentStoreStatusProvider {
                inner: Some(shared),
            },
        )
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.shared.config.status_poll_interval
    }

    /// Reads the store's metadata (on a blocking thread: stores may do I/O) and tells the
    /// listeners if the status changed.
    pub(crate) async fn poll(&self) {
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || shared.poll()).await;
    }

    pub(crate) fn close(&self) {
        self.shared.listeners.close();
    }
}

impl Shared {
    fn poll(&self) -> BigSegmentStoreStatus {
        let outcome = self.config.store.metadata().map_err(|e| e.message);
        let after = self.status_of(&outcome);
        // What this poll replaces is read as it stores its outcome, not before the store was
        // asked, so a poll made meanwhile (the first `get_status`, say) counts too; and it is
        // the status found then, not that outcome judged now, so going stale is a change.
        let before = {
            let mut polled = self.lock_polled();
            *polled = Some(outcome);
            self.reported
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .replace(after)
        };
        // The first poll finds the status; only later polls can change it.
        if before.is_some_and(|b| b != after) {
            self.listeners.send(&after);
        }
        after
    }

    fn status_now(&self) -> BigSegmentStoreStatus {
        let polled = self.lock_polled().as_ref().map(|p| self.status_of(p));
        polled.unwrap_or_else(|| self.poll())
    }

    fn status_of(
        &self,
        outcome: &Result<BigSegmentStoreMetadata, String>,
    ) -> BigSegmentStoreStatus {
        match outcome {
            Ok(meta) => BigSegmentStoreStatus {
                available: true,
                stale: self.is_stale(meta),
            },
            Err(_) => BigSegmentStoreStatus {
                available: false,
                stale: false,
            },
        }
    }

    fn is_stale(&self, meta: &BigSegmentStoreMetadata) -> bool {
        let Some(updated) = meta.last_up_to_date else {
            return true;
        };
        let age = now_ms().saturating_sub(updated);
        u128::from(age) >= self.config.stale_after.as_millis()
    }

    fn lock_polled(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<Result<BigSegmentStoreMetadata, String>>> {
        self.polled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl BigSegmentStore for BigSegments {
    fn membership(
        &self,
        context_hash: &str,
    ) -> Result<Option<BigSegmentMembership>, BigSegmentStoreError> {
        let shared = &self.shared;
        let ttl = shared.config.context_cache_time;
        {
            let cache = shared
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((membership, at)) = cache.entries.get(context_hash)
                && at.elapsed() < ttl
            {
                return Ok(membership.clone());
            }
        }
        // Asked outside the lock; failures are not cached, so the next evaluation asks again.
        let membership = shared.config.store.membership(context_hash)?;
        let mut cache = shared
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let capacity = shared.config.context_cache_size;
        if capacity > 0 {
            if cache
                .entries
                .insert(
                    context_hash.to_owned(),
                    (membership.clone(), Instant::now()),
                )
                .is_none()
            {
                cache.order.push_back(context_hash.to_owned());
            }
            while cache.entries.len() > capacity {
                let Some(oldest) = cache.order.pop_front() else {
                    break;
                };
                cache.entries.remove(&oldest);
            }
        }
        Ok(membership)
    }

    /// The metadata as last polled, with `last_up_to_date` moved so that the engine's fixed
    /// 120 s staleness rule gives this client's `stale_after`; a failed poll is an error.
    fn metadata(&self) -> Result<BigSegmentStoreMetadata, BigSegmentStoreError> {
        let shared = &self.shared;
        let polled = shared.lock_polled().clone();
        let outcome = match polled {
            Some(outcome) => outcome,
            None => {
                shared.poll();
                shared
                    .lock_polled()
                    .clone()
                    .unwrap_or_else(|| Err("not polled".to_owned()))
            }
        };
        let meta = outcome.map_err(|message| BigSegmentStoreError { message })?;
        let engine_rule = 120_000_u64;
        let ours = u64::try_from(shared.config.stale_after.as_millis()).unwrap_or(u64::MAX);
        Ok(BigSegmentStoreMetadata {
            last_up_to_date: meta.last_up_to_date.map(|t| {
                if ours >= engine_rule {
                    t.saturating_add(ours - engine_rule)
                } else {
                    t.saturating_sub(engine_rule - ours)
                }
            }),
        })
    }
}

/// The current time in Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A big-segment store held in memory, for tests and for applications that load memberships
/// themselves.
#[derive(Debug, Default)]
pub struct InMemoryBigSegmentStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    memberships: HashMap<String, BigSegmentMembership>,
    metadata: Option<BigSegmentStoreMetadata>,
    failing: Option<String>,
}

impl InMemoryBigSegmentStore {
    /// An empty store, never updated (so stale) until [`InMemoryBigSegmentStore::set_updated`].
    pub fn new() -> InMemoryBigSegmentStore {
        InMemoryBigSegmentStore::default()
    }

    /// Sets the membership of the context whose key is `context_key` (hashed here as stores
    /// hold it).
    pub fn set_membership(&self, context_key: &str, membership: BigSegmentMembership) {
        let hash = flags_eval::big_segment_hash(context_key);
        self.lock().memberships.insert(hash, membership);
    }

    /// Records that the store was brought up to date at `unix_ms`.
    pub fn set_updated(&self, unix_ms: u64) {
        self.lock().metadata = Some(BigSegmentStoreMetadata {
            last_up_to_date: Some(unix_ms),
        });
    }

    /// Makes every call fail with `message` (`None`: answer again).
    pub fn set_failing(&self, message: Option<&str>) {
        self.lock().failing = message.map(str::to_owned);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl BigSegmentStore for InMemoryBigSegmentStore {
    fn membership(
        &self,
        context_hash: &str,
    ) -> Result<Option<BigSegmentMembership>, BigSegmentStoreError> {
        let state = self.lock();
        if let Some(message) = &state.failing {
            return Err(BigSegmentStoreError {
                message: message.clone(),
            });
        }
        Ok(state.memberships.get(context_hash).cloned())
    }

    fn metadata(&self) -> Result<BigSegmentStoreMetadata, BigSegmentStoreError> {
        let state = self.lock();
        if let Some(message) = &state.failing {
            return Err(BigSegmentStoreError {
                message: message.clone(),
            });
        }
        Ok(state.metadata.unwrap_or_default())
    }
}
