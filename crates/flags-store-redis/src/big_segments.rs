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
use flags_store::{BigSegmentMembers, MemberChange, MemberOp, MemberUpload, UploadError};
use redis::aio::ConnectionManager;

use crate::StoreError;

/// Members written per round trip.
const CHUNK: usize = 10_000;

/// How long a membership or metadata query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes one pipeline of changes to `reference`'s memberships under `prefix`.
async fn write_changes<H: AsRef<str>>(
    prefix: &str,
    reference: &str,
    changes: impl Iterator<Item = (MemberOp, H)>,
    connection: &mut ConnectionManager,
) -> Result<(), StoreError> {
    let mut pipe = redis::pipe();
    let mut include = String::new();
    let mut exclude = String::new();
    for (op, hash) in changes {
        let hash = hash.as_ref();
        include.clear();
        exclude.clear();
        include.push_str(prefix);
        include.push_str(":big_segment_include:");
        include.push_str(hash);
        exclude.push_str(prefix);
        exclude.push_str(":big_segment_exclude:");
        exclude.push_str(hash);
        match op {
            MemberOp::Include => {
                pipe.sadd(&include, reference).ignore();
                pipe.srem(&exclude, reference).ignore();
            }
            MemberOp::Exclude => {
                pipe.sadd(&exclude, reference).ignore();
                pipe.srem(&include, reference).ignore();
            }
            MemberOp::Remove => {
                pipe.srem(&include, reference).ignore();
                pipe.srem(&exclude, reference).ignore();
            }
        }
    }
    pipe.query_async::<()>(connection).await?;
    Ok(())
}

/// Big-segment memberships in one Redis, under one prefix.
///
/// As a [`BigSegmentMembers`] it keeps one environment, the one its prefix names: the `env`
/// arguments are not used. Uploads are written chunk by chunk as they come (Redis has no
/// transaction that could hold millions of writes), so an upload dropped half way leaves its
/// first chunks written; a `fresh` upload does not empty its generation first (a new generation
/// holds nothing yet); and an upload cannot be copied on.
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
            let changes = chunk.iter().map(|key| (op, big_segment_hash(key)));
            write_changes(&self.prefix, &reference, changes, &mut connection).await?;
        }
        Ok(())
    }

    /// Applies `changes` (by context hash, in order) to generation `generation` of segment
    /// `segment_key`, `CHUNK` contexts per round trip. Idempotent.
    pub async fn apply_changes(
        &self,
        segment_key: &str,
        generation: u64,
        changes: &[MemberChange],
    ) -> Result<(), StoreError> {
        let reference = big_segment_ref(segment_key, generation);
        let mut connection = self.writer.clone();
        for chunk in changes.chunks(CHUNK) {
            let changes = chunk.iter().map(|c| (c.op, c.context_hash.as_str()));
            write_changes(&self.prefix, &reference, changes, &mut connection).await?;
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

    /// Deletes `synchronized_on`, so readers report the data `STALE` until it is written again
    /// (while the memberships are being rebuilt).
    pub async fn clear_synchronized_on(&self) -> Result<(), StoreError> {
        let mut connection = self.writer.clone();
        redis::cmd("DEL")
            .arg(self.synchronized_on_key())
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

/// An upload into Redis: every chunk is written as it comes.
struct RedisUpload {
    prefix: String,
    writer: ConnectionManager,
    reference: String,
}

#[async_trait::async_trait]
impl MemberUpload for RedisUpload {
    async fn apply(&mut self, changes: &[MemberChange]) -> Result<(), flags_store::StoreError> {
        for chunk in changes.chunks(CHUNK) {
            let changes = chunk.iter().map(|c| (c.op, c.context_hash.as_str()));
            write_changes(&self.prefix, &self.reference, changes, &mut self.writer)
                .await
                .map_err(StoreError::into_store_error)?;
        }
        Ok(())
    }

    async fn commit(
        self: Box<Self>,
        copy: Option<Box<dyn MemberUpload>>,
    ) -> Result<(), UploadError> {
        match copy {
            None => Ok(()),
            Some(_) => Err(UploadError::NotCopied(flags_store::StoreError::internal(
                "a Redis upload keeps no record of its changes to copy",
            ))),
        }
    }
}

#[async_trait::async_trait]
impl BigSegmentMembers for RedisBigSegments {
    async fn begin_upload(
        &self,
        _env: &str,
        segment: &str,
        generation: u64,
        _fresh: bool,
    ) -> Result<Box<dyn MemberUpload>, flags_store::StoreError> {
        Ok(Box::new(RedisUpload {
            prefix: self.prefix.clone(),
            writer: self.writer.clone(),
            reference: big_segment_ref(segment, generation),
        }))
    }

    async fn memberships(
        &self,
        _env: &str,
        context_hashes: &[String],
    ) -> Result<Vec<(String, BigSegmentMembership)>, flags_store::StoreError> {
        if context_hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for hash in context_hashes {
            pipe.smembers(self.include_key(hash))
                .smembers(self.exclude_key(hash));
        }
        let mut connection = self.writer.clone();
        let sets: Vec<HashSet<String>> = pipe
            .query_async(&mut connection)
            .await
            .map_err(|e| StoreError::from(e).into_store_error())?;
        let mut sets = sets.into_iter();
        let mut found = Vec::new();
        for hash in context_hashes {
            let (Some(included), Some(excluded)) = (sets.next(), sets.next()) else {
                break;
            };
            if !included.is_empty() || !excluded.is_empty() {
                found.push((hash.clone(), BigSegmentMembership { included, excluded }));
            }
        }
        Ok(found)
    }

    async fn synchronized_on(&self, _env: &str) -> Result<Option<u64>, flags_store::StoreError> {
        let mut connection = self.writer.clone();
        let text: Option<String> = redis::cmd("GET")
            .arg(self.synchronized_on_key())
            .query_async(&mut connection)
            .await
            .map_err(|e| StoreError::from(e).into_store_error())?;
        text.map(|text| {
            text.trim().parse().map_err(|_| {
                flags_store::StoreError::internal(format!(
                    "{} holds {text:?}, not Unix milliseconds",
                    self.synchronized_on_key()
                ))
            })
        })
        .transpose()
    }

    async fn set_synchronized_on(
        &self,
        _env: &str,
        unix_ms: u64,
    ) -> Result<(), flags_store::StoreError> {
        RedisBigSegments::set_synchronized_on(self, unix_ms)
            .await
            .map_err(StoreError::into_store_error)
    }

    async fn clear_generation(
        &self,
        _env: &str,
        segment: &str,
        generation: u64,
    ) -> Result<(), flags_store::StoreError> {
        let reference = big_segment_ref(segment, generation);
        let mut connection = self.writer.clone();
        for pattern in [self.include_key("*"), self.exclude_key("*")] {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(CHUNK)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| StoreError::from(e).into_store_error())?;
                if !keys.is_empty() {
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.srem(key, &reference).ignore();
                    }
                    pipe.query_async::<()>(&mut connection)
                        .await
                        .map_err(|e| StoreError::from(e).into_store_error())?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    /// Redis has no index by segment, so this scans every membership set under the prefix,
    /// inclusions first: a context in both sets counts as included, and is sent once.
    async fn copy_generation(
        &self,
        _env: &str,
        segment: &str,
        generation: u64,
        into: &mut dyn MemberUpload,
    ) -> Result<u64, flags_store::StoreError> {
        let reference = big_segment_ref(segment, generation);
        let failed = |e: redis::RedisError| StoreError::from(e).into_store_error();
        let mut connection = self.writer.clone();
        let include_prefix = self.include_key("");
        let exclude_prefix = self.exclude_key("");
        let mut copied = 0u64;
        for (op, prefix) in [
            (MemberOp::Include, &include_prefix),
            (MemberOp::Exclude, &exclude_prefix),
        ] {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}*"))
                    .arg("COUNT")
                    .arg(CHUNK)
                    .query_async(&mut connection)
                    .await
                    .map_err(failed)?;
                let hashes: Vec<&str> = keys
                    .iter()
                    .filter_map(|key| key.strip_prefix(prefix.as_str()))
                    .collect();
                if !hashes.is_empty() {
                    let mut pipe = redis::pipe();
                    for hash in &hashes {
                        pipe.sismember(format!("{prefix}{hash}"), &reference);
                        if op == MemberOp::Exclude {
                            pipe.sismember(self.include_key(hash), &reference);
                        }
                    }
                    let answers: Vec<bool> =
                        pipe.query_async(&mut connection).await.map_err(failed)?;
                    let per_hash = if op == MemberOp::Exclude { 2 } else { 1 };
                    let chunk: Vec<MemberChange> = hashes
                        .iter()
                        .zip(answers.chunks(per_hash))
                        .filter(|(_, answer)| answer == &[true] || answer == &[true, false])
                        .map(|(hash, _)| MemberChange {
                            op,
                            context_hash: (*hash).to_owned(),
                        })
                        .collect();
                    if !chunk.is_empty() {
                        into.apply(&chunk).await?;
                        copied += chunk.len() as u64;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(copied)
    }
}
