//! Big segments in Redis, in LaunchDarkly's layout, which its SDKs' Redis big-segment stores
//! read:
//!
//! - `{prefix}:big_segments_synchronized_on`: when the data was last brought up to date, Unix
//!   milliseconds as a decimal string;
//! - sets `{prefix}:big_segment_include:{hash}` and `{prefix}:big_segment_exclude:{hash}`, where
//!   `hash` is base64 (standard, padded) of the SHA-256 of the context key, holding segment
//!   references `{segmentKey}.g{generation}`. A reference in both sets counts as included.
//!
//! [`RedisBigSegments`] writes memberships (asynchronously, for uploads) and answers
//! [`BigSegmentStore`] queries (synchronously, as evaluation asks them, on a connection of its
//! own that it opens again after a failure).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use flags_core::{
    BigSegmentMembership, BigSegmentStore, BigSegmentStoreError, BigSegmentStoreMetadata,
};
use flags_eval::{big_segment_hash, big_segment_ref};
use redis::aio::ConnectionManager;

use crate::StoreError;

/// Members written per round trip.
const CHUNK: usize = 10_000;

/// How long a membership or metadata query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a membership change does for one context in one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberOp {
    /// Include the context (and take it out of the exclusions).
    Include,
    /// Exclude the context (and take it out of the inclusions).
    Exclude,
    /// List it in neither.
    Remove,
}

/// Big-segment memberships in one Redis, under one prefix.
pub struct RedisBigSegments {
    prefix: String,
    client: redis::Client,
    writer: ConnectionManager,
    /// The connection queries use, opened on first use and again after a failure.
    reader: Mutex<Option<redis::Connection>>,
}

impl std::fmt::Debug for RedisBigSegments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBigSegments")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBigSegments {
    /// Connects to the Redis at `url`, keeping memberships under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisBigSegments, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        // One try: callers decide how to retry a Redis that does not answer.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(QUERY_TIMEOUT))
            .set_response_timeout(Some(QUERY_TIMEOUT))
            .set_number_of_retries(1);
        let writer = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(RedisBigSegments {
            prefix: prefix.to_owned(),
            client,
            writer,
            reader: Mutex::new(None),
        })
    }

    /// `{prefix}:big_segment_include:{hash}`, the inclusions of the context hashed to `hash`.
    pub fn include_key(&self, hash: &str) -> String {
        format!("{}:big_segment_include:{hash}", self.prefix)
    }

    /// `{prefix}:big_segment_exclude:{hash}`.
    pub fn exclude_key(&self, hash: &str) -> String {
        format!("{}:big_segment_exclude:{hash}", self.prefix)
    }

    /// `{prefix}:big_segments_synchronized_on`.
    pub fn synchronized_on_key(&self) -> String {
        format!("{}:big_segments_synchronized_on", self.prefix)
    }

    /// Applies `op` to each context key in `context_keys` for generation `generation` of
    /// segment `segment_key`, `CHUNK` contexts per round trip. Idempotent.
    pub async fn apply(
        &self,
        segment_key: &str,
        generation: u64,
        op: MemberOp,
        context_keys: &[&str],
    ) -> Result<(), StoreError> {
        let reference = big_segment_ref(segment_key, generation);
        let mut connection = self.writer.clone();
        for chunk in context_keys.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for key in chunk {
                let hash = big_segment_hash(key);
                let (include, exclude) = (self.include_key(&hash), self.exclude_key(&hash));
                match op {
                    MemberOp::Include => {
                        pipe.sadd(&include, &reference).ignore();
                        pipe.srem(&exclude, &reference).ignore();
                    }
                    MemberOp::Exclude => {
                        pipe.sadd(&exclude, &reference).ignore();
                        pipe.srem(&include, &reference).ignore();
                    }
                    MemberOp::Remove => {
                        pipe.srem(&include, &reference).ignore();
                        pipe.srem(&exclude, &reference).ignore();
                    }
                }
            }
            pipe.query_async::<()>(&mut connection).await?;
        }
        Ok(())
    }

    /// Records that the data is up to date as of `unix_ms`.
    pub async fn set_synchronized_on(&self, unix_ms: u64) -> Result<(), StoreError> {
        let mut connection = self.writer.clone();
        redis::cmd("SET")
            .arg(self.synchronized_on_key())
            .arg(unix_ms.to_string())
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    /// Runs `query` on the reader connection, opening it first if needed; a failed query
    /// drops the connection, so the next one starts afresh.
    fn query<T>(
        &self,
        query: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, BigSegmentStoreError> {
        let failed = |e: redis::RedisError| BigSegmentStoreError {
            message: format!("redis: {e}"),
        };
        let mut reader = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if reader.is_none() {
            let connection = self
                .client
                .get_connection_with_timeout(QUERY_TIMEOUT)
                .map_err(failed)?;
            connection
                .set_read_timeout(Some(QUERY_TIMEOUT))
                .map_err(failed)?;
            *reader = Some(connection);
        }
        let Some(connection) = reader.as_mut() else {
            return Err(failed(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no connection",
            ))));
        };
        query(connection).map_err(|e| {
            *reader = None;
            failed(e)
        })
    }
}

impl BigSegmentStore for RedisBigSegments {
    fn membership(
        &self,
        context_hash: &str,
    ) -> Result<Option<BigSegmentMembership>, BigSegmentStoreError> {
        let (included, excluded): (HashSet<String>, HashSet<String>) = self.query(|c| {
            redis::pipe()
                .smembers(self.include_key(context_hash))
                .smembers(self.exclude_key(context_hash))
                .query(c)
        })?;
        if included.is_empty() && excluded.is_empty() {
            return Ok(None);
        }
        Ok(Some(BigSegmentMembership { included, excluded }))
    }

    fn metadata(&self) -> Result<BigSegmentStoreMetadata, BigSegmentStoreError> {
        let text: Option<String> =
            self.query(|c| redis::cmd("GET").arg(self.synchronized_on_key()).query(c))?;
        let last_up_to_date = match text {
            None => None,
            Some(text) => Some(text.trim().parse().map_err(|_| BigSegmentStoreError {
                message: format!(
                    "{} holds {text:?}, not Unix milliseconds",
                    self.synchronized_on_key()
                ),
            })?),
        };
        Ok(BigSegmentStoreMetadata { last_up_to_date })
    }
}
