//! `flags-store-redis`: flag and segment data in Redis, in exactly the layout LaunchDarkly's
//! server-side SDKs read in daemon mode, so that they evaluate straight from what flagd writes.
//!
//! - `{prefix}:features` and `{prefix}:segments` are hashes: field = the item's key, value =
//!   the item's JSON, whose `version` orders writes.
//! - A deleted item stays as a tombstone, `{"key":"$deleted","version":N,"deleted":true}`.
//! - `{prefix}:$inited` exists once a whole data set was written.
//!
//! [`RedisStore::init`] replaces everything in one `MULTI`/`EXEC`; [`RedisStore::upsert`] and
//! [`RedisStore::delete`] replace one item only with a newer version, under `WATCH`, retrying
//! when another writer changed the hash in between, and [`RedisStore::upsert_many`] does the
//! same for any number of items in two round trips. The store holds JSON text and versions and
//! knows nothing of what a flag means: callers give each item's JSON as LaunchDarkly's SDKs
//! should read it.
//!
//! [`RedisBigSegments`] keeps big-segment memberships in LaunchDarkly's layout too, and answers
//! an evaluator's [`flags_core::BigSegmentStore`] queries from it.

#![warn(missing_docs)]

// The README's example compiles as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod big_segments;
mod warm;

pub use big_segments::RedisBigSegments;
pub use flags_store::MemberOp;
pub use warm::{KeyTable, inited_environments};

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use serde::Deserialize;
use tokio::sync::Mutex;

/// The prefix LaunchDarkly's SDKs use when none is configured.
pub const DEFAULT_PREFIX: &str = "launchdarkly";

/// How many times an upsert is tried when other writers keep changing the hash under it.
const UPSERT_ATTEMPTS: u32 = 10;

/// Which of the two kinds of item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Flags: `{prefix}:features`.
    Features,
    /// Segments: `{prefix}:segments`.
    Segments,
}

impl Kind {
    /// The kind's namespace, the last part of its hash's name.
    pub fn namespace(self) -> &'static str {
        match self {
            Kind::Features => "features",
            Kind::Segments => "segments",
        }
    }
}

/// One item to write: its key, its version and its JSON (which should carry the same `key`
/// and `version`, as LaunchDarkly's SDKs read both from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The flag or segment key.
    pub key: String,
    /// Its version: a write only replaces an older one.
    pub version: u64,
    /// The item as JSON.
    pub json: String,
}

impl Item {
    /// An item from its parts.
    pub fn new(key: impl Into<String>, version: u64, json: impl Into<String>) -> Item {
        Item {
            key: key.into(),
            version,
            json: json.into(),
        }
    }

    /// The tombstone of `key` at `version`, as LaunchDarkly writes deleted items.
    pub fn deleted(key: impl Into<String>, version: u64) -> Item {
        Item {
            key: key.into(),
            version,
            json: format!(r#"{{"key":"$deleted","version":{version},"deleted":true}}"#),
        }
    }
}

/// What the store holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A live item: its version and JSON.
    Item {
        /// The item's version.
        version: u64,
        /// The item as JSON, as written.
        json: String,
    },
    /// A tombstone: the item was deleted at this version.
    Deleted {
        /// The version of the deletion.
        version: u64,
    },
}

impl Stored {
    /// The version, live or deleted.
    pub fn version(&self) -> u64 {
        match self {
            Stored::Item { version, .. } | Stored::Deleted { version } => *version,
        }
    }

    /// Reads what a hash field holds: its `version` and `deleted` and nothing else.
    fn parse(json: String) -> Result<Stored, StoreError> {
        #[derive(Deserialize)]
        struct Head {
            version: u64,
            #[serde(default)]
            deleted: bool,
        }
        let head: Head = serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("an item without a version: {e}")))?;
        Ok(if head.deleted {
            Stored::Deleted {
                version: head.version,
            }
        } else {
            Stored::Item {
                version: head.version,
                json,
            }
        })
    }
}

/// What [`RedisStore::upsert_many`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// The store was initialized, and this many items were newer than what it held and were
    /// written; the others were left as they were.
    Written(usize),
    /// Nothing was written: `{prefix}:$inited` is missing, so the store does not hold a whole
    /// data set, and a few items written into it would not make one. Write everything with
    /// [`RedisStore::init`].
    NotInitialized,
}

/// How many items the store holds, tombstones included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Fields of `{prefix}:features`.
    pub features: u64,
    /// Fields of `{prefix}:segments`.
    pub segments: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL could not be read.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Other writers kept changing the hash; the upsert gave up.
    #[error("{0}: gave up after {UPSERT_ATTEMPTS} attempts, other writers kept changing it")]
    Contended(String),
    /// A stored value is not an item this store or LaunchDarkly's SDKs wrote.
    #[error("corrupt item: {0}")]
    Corrupt(String),
    /// A prefix template cannot be used as asked.
    #[error("invalid prefix: {0}")]
    Prefix(String),
}

impl StoreError {
    /// The error as flags-store's traits report it: a Redis that cannot be reached or refuses
    /// is unavailable, anything else internal.
    pub fn into_store_error(self) -> flags_store::StoreError {
        match self {
            StoreError::Redis(e) => flags_store::StoreError::unavailable(e),
            other => flags_store::StoreError::internal(other),
        }
    }
}

/// Flag and segment data in one Redis, under one prefix.
pub struct RedisStore {
    prefix: String,
    /// Shared by reads and whole-data writes: a pipeline's `MULTI`/`EXEC` goes out as one
    /// message, so it cannot interleave with other commands.
    shared: ConnectionManager,
    /// `WATCH` holds for a whole connection, so upserts take turns on one of their own.
    watching: Mutex<MultiplexedConnection>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[:password@]host:port[/db]`), keeping data
    /// under `prefix` ([`DEFAULT_PREFIX`] is LaunchDarkly's).
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        let timeout = Some(Duration::from_secs(5));
        // One try: callers decide how to retry a Redis that does not answer.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1);
        let shared = ConnectionManager::new_with_config(client.clone(), config).await?;
        let watching = client.get_multiplexed_async_connection().await?;
        Ok(RedisStore {
            prefix: prefix.to_owned(),
            shared,
            watching: Mutex::new(watching),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of `kind`'s hash: `{prefix}:features` or `{prefix}:segments`.
    pub fn hash(&self, kind: Kind) -> String {
        format!("{}:{}", self.prefix, kind.namespace())
    }

    /// The name of the key that marks the store initialized: `{prefix}:$inited`.
    pub fn inited_key(&self) -> String {
        format!("{}:$inited", self.prefix)
    }

    /// Replaces everything with `features` and `segments` and marks the store initialized, in
    /// one transaction: a reader sees the old data set or the new one, never a mix.
    pub async fn init(&self, features: &[Item], segments: &[Item]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (kind, items) in [(Kind::Features, features), (Kind::Segments, segments)] {
            let hash = self.hash(kind);
            pipe.del(&hash).ignore();
            if !items.is_empty() {
                let fields: Vec<(&str, &str)> = items
                    .iter()
                    .map(|item| (item.key.as_str(), item.json.as_str()))
                    .collect();
                pipe.hset_multiple(&hash, &fields).ignore();
            }
        }
        pipe.set(self.inited_key(), "").ignore();
        let mut connection = self.shared.clone();
        pipe.query_async::<()>(&mut connection).await?;
        Ok(())
    }

    /// Writes `item` if the store holds nothing newer for its key (a live item or a tombstone
    /// of a higher or equal version). Says whether it was written.
    pub async fn upsert(&self, kind: Kind, item: &Item) -> Result<bool, StoreError> {
        let hash = self.hash(kind);
        let mut connection = self.watching.lock().await;
        for _ in 0..UPSERT_ATTEMPTS {
            redis::cmd("WATCH")
                .arg(&hash)
                .query_async::<()>(&mut *connection)
                .await?;
            let current: Option<String> = redis::cmd("HGET")
                .arg(&hash)
                .arg(&item.key)
                .query_async(&mut *connection)
                .await?;
            let newer_held = match current {
                Some(json) => Stored::parse(json)?.version() >= item.version,
                None => false,
            };
            if newer_held {
                redis::cmd("UNWATCH")
                    .query_async::<()>(&mut *connection)
                    .await?;
                return Ok(false);
            }
            let mut pipe = redis::pipe();
            pipe.atomic().hset(&hash, &item.key, &item.json).ignore();
            // `EXEC` answers nil when a watched key changed: the transaction did not run.
            let done: Option<()> = pipe.query_async(&mut *connection).await?;
            if done.is_some() {
                return Ok(true);
            }
        }
        Err(StoreError::Contended(format!("{hash} {}", item.key)))
    }

    /// Writes every item of `features` and `segments` (tombstones included) that is newer than
    /// what the store holds for its key, all in one transaction, and only into an initialized
    /// store. Whatever the number of items, this is two round trips: `WATCH` with the reads of
    /// the stored versions, then `MULTI`/`EXEC` with the writes, tried again when another
    /// writer changed either hash or `{prefix}:$inited` in between.
    pub async fn upsert_many(
        &self,
        features: &[Item],
        segments: &[Item],
    ) -> Result<Upserted, StoreError> {
        let kinds = [(Kind::Features, features), (Kind::Segments, segments)];
        let hashes = kinds.map(|(kind, _)| self.hash(kind));
        let inited = self.inited_key();
        let mut connection = self.watching.lock().await;
        for _ in 0..UPSERT_ATTEMPTS {
            let mut read = redis::pipe();
            read.cmd("WATCH")
                .arg(&hashes)
                .arg(&inited)
                .ignore()
                .exists(&inited);
            for ((_, items), hash) in kinds.iter().zip(&hashes) {
                if !items.is_empty() {
                    read.cmd("HMGET")
                        .arg(hash)
                        .arg(items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>());
                }
            }
            let mut answers = read
                .query_async::<Vec<redis::Value>>(&mut *connection)
                .await?
                .into_iter();
            let mut next = || {
                answers.next().ok_or_else(|| {
                    StoreError::Corrupt("Redis answered fewer commands than were sent".to_owned())
                })
            };
            let initialized: bool =
                redis::from_redis_value(next()?).map_err(redis::RedisError::from)?;
            if !initialized {
                redis::cmd("UNWATCH")
                    .query_async::<()>(&mut *connection)
                    .await?;
                return Ok(Upserted::NotInitialized);
            }
            let mut write = redis::pipe();
            write.atomic();
            let mut written = 0;
            for ((_, items), hash) in kinds.iter().zip(&hashes) {
                if items.is_empty() {
                    continue;
                }
                let stored: Vec<Option<String>> =
                    redis::from_redis_value(next()?).map_err(redis::RedisError::from)?;
                let mut fields = Vec::new();
                for (item, stored) in items.iter().zip(stored) {
                    let newer_held = match stored {
                        Some(json) => Stored::parse(json)?.version() >= item.version,
                        None => false,
                    };
                    if !newer_held {
                        fields.push((item.key.as_str(), item.json.as_str()));
                    }
                }
                if !fields.is_empty() {
                    written += fields.len();
                    write.hset_multiple(hash, &fields).ignore();
                }
            }
            if written == 0 {
                redis::cmd("UNWATCH")
                    .query_async::<()>(&mut *connection)
                    .await?;
                return Ok(Upserted::Written(0));
            }
            // `EXEC` answers nil when a watched key changed: the transaction did not run.
            let done: Option<()> = write.query_async(&mut *connection).await?;
            if done.is_some() {
                return Ok(Upserted::Written(written));
            }
        }
        Err(StoreError::Contended(format!(
            "{} and {}: {} items",
            hashes[0],
            hashes[1],
            features.len() + segments.len()
        )))
    }

    /// Deletes `key` at `version`: a tombstone replaces anything older. Says whether it did.
    pub async fn delete(&self, kind: Kind, key: &str, version: u64) -> Result<bool, StoreError> {
        self.upsert(kind, &Item::deleted(key, version)).await
    }

    /// What the store holds for `key`.
    pub async fn get(&self, kind: Kind, key: &str) -> Result<Option<Stored>, StoreError> {
        let mut connection = self.shared.clone();
        let json: Option<String> = redis::cmd("HGET")
            .arg(self.hash(kind))
            .arg(key)
            .query_async(&mut connection)
            .await?;
        json.map(Stored::parse).transpose()
    }

    /// Everything the store holds of `kind`, tombstones included, by key.
    pub async fn all(&self, kind: Kind) -> Result<BTreeMap<String, Stored>, StoreError> {
        let mut connection = self.shared.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.hash(kind))
            .query_async(&mut connection)
            .await?;
        fields
            .into_iter()
            .map(|(key, json)| Ok((key, Stored::parse(json)?)))
            .collect()
    }

    /// How many items each hash holds, tombstones included, or `None` when no whole data set
    /// was written (`{prefix}:$inited` is missing): one round trip. A writer that knows how
    /// many items it wrote sees from this whether Redis lost some of them.
    pub async fn held(&self) -> Result<Option<Held>, StoreError> {
        let mut connection = self.shared.clone();
        let (initialized, features, segments): (bool, u64, u64) = redis::pipe()
            .exists(self.inited_key())
            .hlen(self.hash(Kind::Features))
            .hlen(self.hash(Kind::Segments))
            .query_async(&mut connection)
            .await?;
        Ok(initialized.then_some(Held { features, segments }))
    }

    /// Whether a whole data set was written (`{prefix}:$inited` exists).
    pub async fn initialized(&self) -> Result<bool, StoreError> {
        let mut connection = self.shared.clone();
        let exists: bool = redis::cmd("EXISTS")
            .arg(self.inited_key())
            .query_async(&mut connection)
            .await?;
        Ok(exists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_are_launchdarkly_s_and_read_back_as_deletions() {
        let gone = Item::deleted("old-flag", 7);
        assert_eq!(
            gone.json,
            r#"{"key":"$deleted","version":7,"deleted":true}"#
        );
        assert_eq!(
            Stored::parse(gone.json).ok(),
            Some(Stored::Deleted { version: 7 })
        );
        let live = r#"{"key":"f","version":3,"on":true,"deleted":false}"#.to_owned();
        assert_eq!(
            Stored::parse(live.clone()).ok(),
            Some(Stored::Item {
                version: 3,
                json: live
            })
        );
        assert!(matches!(
            Stored::parse(r#"{"key":"f"}"#.to_owned()),
            Err(StoreError::Corrupt(_))
        ));
    }
}
