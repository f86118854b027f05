//! A concurrent TTL cache with jitter, stale fallback, single-flight loading and a size bound.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::OnceCell;

use crate::ConfigError;
use crate::backoff::{check_jitter, scale};
use crate::clock::{Clock, SystemClock};
use crate::rng::JitterRng;

/// How a [`TtlCache`] behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// How long an answer counts as fresh, before jitter.
    pub ttl: Duration,
    /// Each entry's TTL is scaled by a factor drawn uniformly from `[1 - jitter, 1 + jitter)`,
    /// so entries loaded together, and replicas that started together, do not all expire (and
    /// hit the source) at the same moment. Must be in `[0, 1)`.
    pub jitter: f64,
    /// The most entries held at once; at least 1.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    /// 5 s TTL with ±10 % jitter and up to 10 000 entries.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5),
            jitter: 0.1,
            max_entries: 10_000,
        }
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Freshness {
    /// From the cache, within its TTL.
    Fresh,
    /// From the loader, run by this call or by a concurrent call for the same key.
    Loaded,
    /// From the cache past its TTL, because the loader failed.
    Stale,
}

/// A cached answer. `value` is `None` when the loader said the key does not exist: "not found"
/// is cached like any other answer, so a key with nothing behind it does not reach the source
/// on every lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup<V> {
    /// The value, or `None` for a key the loader said does not exist.
    pub value: Option<V>,
    /// Whether the answer was fresh in the cache, just loaded, or stale.
    pub freshness: Freshness,
}

impl<V> Lookup<V> {
    /// Whether this answer is past its TTL.
    pub fn is_stale(&self) -> bool {
        self.freshness == Freshness::Stale
    }
}

/// A concurrent cache in front of a slow or fallible source, such as per-entity overrides in
/// a database.
///
/// [`get_or_refresh`](Self::get_or_refresh) answers from the cache while an entry is fresh and
/// otherwise calls the caller's loader, with these guarantees:
///
/// - **Stale fallback.** When the loader fails, an expired entry for the key is served and marked
///   [`Freshness::Stale`]; only with nothing cached does the error reach the caller. Expired
///   entries are kept for this until the size bound needs their room.
/// - **Single flight.** Concurrent misses on one key run one loader; the others wait for its
///   answer (or its error). If the running call is cancelled, a waiting one runs its own loader.
/// - **Jittered TTL.** See [`CacheConfig::jitter`].
/// - **Bounded size.** Adding a key to a full cache first removes every expired entry; if the
///   cache is still full, it removes the least recently written entries, one sixteenth of the
///   capacity at once (at least one), so the scan this takes is paid once per many inserts.
///   Refreshing a key counts as writing it. The bound is exact: writes are serialized, reads are
///   not.
///
/// A fresh hit takes one shard read lock and clones the value: it allocates nothing when `V`'s
/// clone does not, and when the key is looked up in its borrowed form (`&str` for `String` keys,
/// [`OverrideKeyRef::as_query`](crate::OverrideKeyRef::as_query) for
/// [`OverrideKey`](crate::OverrideKey)). Use `Arc` for large values.
///
/// `E` is the loader's error type. Waiters share one error, so errors come back as `Arc<E>`.
pub struct TtlCache<K, V, E, C = SystemClock> {
    entries: DashMap<K, Slot<V>, ahash::RandomState>,
    flights: DashMap<K, Arc<Flight<V, E>>, ahash::RandomState>,
    config: CacheConfig,
    clock: C,
    rng: JitterRng,
    /// Serializes writes so the size check and the insert it guards see the same length.
    write_lock: Mutex<()>,
    /// Write order, for evicting the oldest.
    next_seq: AtomicU64,
}

struct Slot<V> {
    value: Option<V>,
    /// `None` when the TTL reaches past what `Instant` can represent: never expires.
    expires_at: Option<Instant>,
    seq: u64,
}

/// One load in progress: every caller that missed on the key waits on the same cell, and the
/// first to get in runs its loader to fill it.
type Flight<V, E> = OnceCell<Result<(Option<V>, Freshness), Arc<E>>>;

impl<K, V, E> TtlCache<K, V, E, SystemClock>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    /// A cache on the system clock with entropy-seeded jitter.
    pub fn new(config: CacheConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, SystemClock, JitterRng::from_entropy())
    }
}

impl<K, V, E, C> TtlCache<K, V, E, C>
where
    K: Hash + Eq + Clone,
    V: Clone,
    C: Clock,
{
    /// A cache reading time from `clock` and drawing jitter from `rng`, so tests can control
    /// both.
    pub fn with_clock(config: CacheConfig, clock: C, rng: JitterRng) -> Result<Self, ConfigError> {
        check_jitter(config.jitter)?;
        if config.max_entries == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        Ok(Self {
            entries: DashMap::with_hasher(ahash::RandomState::new()),
            flights: DashMap::with_hasher(ahash::RandomState::new()),
            config,
            clock,
            rng,
            write_lock: Mutex::new(()),
            next_seq: AtomicU64::new(0),
        })
    }

    /// The settings this cache was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The answer for `key`: from the cache while fresh, otherwise from `loader`, falling back
    /// to a stale entry when the loader fails. The loader answers `Ok(None)` for "not found".
    ///
    /// The loader runs at most once per miss across all concurrent callers, so a source's
    /// health is best recorded inside it: one outage is then counted once, not once per waiter.
    pub async fn get_or_refresh<Q, F, Fut>(&self, key: &Q, loader: F) -> Result<Lookup<V>, Arc<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        if let Some(value) = self.fresh(key, self.clock.now()) {
            return Ok(Lookup {
                value,
                freshness: Freshness::Fresh,
            });
        }
        self.load(key.to_owned(), loader).await
    }

    /// The cached answer for `key` without loading: fresh, stale, or `None` when nothing is
    /// cached. For synchronous callers that cannot wait for a loader.
    pub fn peek<Q>(&self, key: &Q) -> Option<Lookup<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        let slot = self.entries.get(key)?;
        let freshness = if is_fresh(&slot, now) {
            Freshness::Fresh
        } else {
            Freshness::Stale
        };
        Some(Lookup {
            value: slot.value.clone(),
            freshness,
        })
    }

    /// Caches `value` for `key` with a new TTL, as if a loader had just answered it; for
    /// sources that learn of changes without being asked.
    pub fn insert(&self, key: K, value: Option<V>) {
        self.store(key, value);
    }

    /// Forgets `key`, stale fallback included; returns whether it was cached.
    pub fn invalidate<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.remove(key).is_some()
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// Entries held, expired ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held, expired ones included.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key` if it is cached and fresh at `now`.
    fn fresh<Q>(&self, key: &Q, now: Instant) -> Option<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // The shard's read guard lives only inside this synchronous function, so it is never
        // held across an await (where it could block a writer on the same thread).
        let slot = self.entries.get(key)?;
        is_fresh(&slot, now).then(|| slot.value.clone())
    }

    async fn load<F, Fut>(&self, key: K, loader: F) -> Result<Lookup<V>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        let flight = Arc::clone(&*self.flights.entry(key.clone()).or_default());
        let _leave = LeaveFlight {
            flights: &self.flights,
            key: &key,
            flight: &flight,
        };
        let outcome = flight
            .get_or_init(|| async {
                // A flight for this key may have finished between our miss and joining this
                // one; its answer is then in the cache and the source need not be asked again.
                if let Some(value) = self.fresh(&key, self.clock.now()) {
                    return Ok((value, Freshness::Fresh));
                }
                match loader().await {
                    Ok(value) => {
                        self.store(key.clone(), value.clone());
                        Ok((value, Freshness::Loaded))
                    }
                    Err(error) => Err(Arc::new(error)),
                }
            })
            .await;
        match outcome {
            Ok((value, freshness)) => Ok(Lookup {
                value: value.clone(),
                freshness: *freshness,
            }),
            Err(error) => self.peek(&key).ok_or_else(|| Arc::clone(error)),
        }
    }

    fn store(&self, key: K, value: Option<V>) {
        let now = self.clock.now();
        let ttl = if self.config.jitter == 0.0 {
            self.config.ttl
        } else {
            scale(
                self.config.ttl,
                1.0 + self.rng.symmetric(self.config.jitter),
            )
        };
        let expires_at = now.checked_add(ttl);
        // Held only for the length check, a possible eviction and one insert; never across an
        // await. A panic under it cannot leave the map half-written, so poisoning is ignored.
        let _write = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.entries.len() >= self.config.max_entries && !self.entries.contains_key(&key) {
            self.evict(now);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.entries.insert(
            key,
            Slot {
                value,
                expires_at,
                seq,
            },
        );
    }

    /// Makes room for one more entry; called under the write lock with the cache full.
    fn evict(&self, now: Instant) {
        self.entries.retain(|_, slot| is_fresh(slot, now));
        if self.entries.len() < self.config.max_entries {
            return;
        }
        let keep = self.config.max_entries - (self.config.max_entries / 16).max(1);
        let mut seqs: Vec<u64> = self.entries.iter().map(|entry| entry.seq).collect();
        let Some(excess) = seqs.len().checked_sub(keep).filter(|&n| n > 0) else {
            return;
        };
        // Sequence numbers are unique, so everything up to the excess-th smallest goes.
        let (_, &mut cutoff, _) = seqs.select_nth_unstable(excess - 1);
        self.entries.retain(|_, slot| slot.seq > cutoff);
    }
}

fn is_fresh<V>(slot: &Slot<V>, now: Instant) -> bool {
    slot.expires_at.is_none_or(|expires_at| now < expires_at)
}

/// Takes a finished or abandoned flight out of the map when its last participant leaves, on
/// return and on cancellation alike.
struct LeaveFlight<'a, K: Hash + Eq, V, E> {
    flights: &'a DashMap<K, Arc<Flight<V, E>>, ahash::RandomState>,
    key: &'a K,
    flight: &'a Arc<Flight<V, E>>,
}

impl<K: Hash + Eq, V, E> Drop for LeaveFlight<'_, K, V, E> {
    fn drop(&mut self) {
        // A finished flight goes at once: later misses are new questions. An unfinished one (its
        // loader was cancelled) stays while others wait on it, since one of them will take over
        // the load; the map holds one reference and this participant another. Participants
        // clone under the shard lock this closure runs under, but drop without it, so two
        // leaving at once may both see the other and leave the flight behind; the next miss on
        // the key then joins it, loads, and removes it.
        self.flights.remove_if(self.key, |_, flight| {
            Arc::ptr_eq(flight, self.flight)
                && (flight.initialized() || Arc::strong_count(flight) <= 2)
        });
    }
}
