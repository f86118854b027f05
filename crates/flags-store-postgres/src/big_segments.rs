//! Big-segment memberships in PostgreSQL (`migrations/0002_big_segments.sql`).
//!
//! An upload runs on a connection of its own. Its chunks are copied (`COPY ... FROM STDIN`)
//! into a temporary table, which only that session sees and which is not logged, so nothing
//! of the upload is visible until the commit: one transaction that reduces the upload to the
//! last change of each context and applies that to `big_segment_members`. An upload dropped
//! before its commit closes its connection, and the temporary table goes with the session.

use std::fmt::Write as _;

use flags_core::ItemKind;
use flags_store::validate::check_item;
use flags_store::{
    BigSegmentMembers, COPY_CHUNK, MemberChange, MemberOp, MemberUpload, StoreError, UploadError,
    membership_of,
};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Postgres, Row};

use crate::PostgresStore;
use crate::error::{corrupt, db, to_u64};

/// The session's table of the upload's changes, as they came.
const UPLOAD_TABLE: &str = "flagd_member_upload";

/// The last change of each context, made at the commit from [`UPLOAD_TABLE`].
const LAST_TABLE: &str = "flagd_member_last";

#[async_trait::async_trait]
impl BigSegmentMembers for PostgresStore {
    async fn begin_upload(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        fresh: bool,
    ) -> Result<Box<dyn MemberUpload>, StoreError> {
        check_item(env, ItemKind::Segment, segment)?;
        let generation = generation_arg(generation)?;
        let mut conn = self.pool().acquire().await.map_err(db)?;
        // The temporary tables and any transaction left open die with the session, so the
        // connection is never handed to anyone else.
        conn.close_on_drop();
        // The session is this upload's alone: a million changes fit in memory for the
        // temporary tables (set before their first use) and for the sort that keeps each
        // context's last change, instead of spilling to disk.
        sqlx::query("SET temp_buffers = '256MB'")
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        sqlx::query("SET work_mem = '256MB'")
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        let create = format!(
            "CREATE TEMPORARY TABLE {UPLOAD_TABLE} (\
                 line bigint NOT NULL, context_hash text COLLATE \"C\" NOT NULL, \
                 op \"char\" NOT NULL)"
        );
        sqlx::query(&create)
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(Box::new(PgUpload {
            conn,
            env: env.to_owned(),
            segment: segment.to_owned(),
            generation,
            fresh,
            lines: 0,
            buffer: String::new(),
        }))
    }

    async fn memberships(
        &self,
        env: &str,
        context_hashes: &[String],
    ) -> Result<Vec<(String, flags_core::BigSegmentMembership)>, StoreError> {
        if context_hashes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT context_hash, segment, generation, included FROM big_segment_members \
             WHERE env = $1 AND context_hash = ANY($2) ORDER BY context_hash",
        )
        .bind(env)
        .bind(context_hashes)
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        let mut listed: Vec<(String, String, u64, bool)> = Vec::with_capacity(rows.len());
        for row in rows {
            listed.push((
                row.try_get(0).map_err(db)?,
                row.try_get(1).map_err(db)?,
                to_u64(
                    row.try_get(2).map_err(db)?,
                    "big_segment_members.generation",
                )?,
                row.try_get(3).map_err(db)?,
            ));
        }
        let mut memberships = Vec::new();
        for same in listed.chunk_by(|a, b| a.0 == b.0) {
            let membership = membership_of(
                same.iter()
                    .map(|(_, s, g, included)| (s.as_str(), *g, *included)),
            );
            memberships.push((same[0].0.clone(), membership));
        }
        Ok(memberships)
    }

    async fn synchronized_on(&self, env: &str) -> Result<Option<u64>, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT synchronized_on FROM big_segments_synchronized WHERE env = $1",
        )
        .bind(env)
        .fetch_optional(self.pool())
        .await
        .map_err(db)?;
        at.map(|at| to_u64(at, "big_segments_synchronized.synchronized_on"))
            .transpose()
    }

    async fn set_synchronized_on(&self, env: &str, unix_ms: u64) -> Result<(), StoreError> {
        let at = i64::try_from(unix_ms)
            .map_err(|_| StoreError::invalid("synchronizedOn", "past what PostgreSQL keeps"))?;
        sqlx::query(
            "INSERT INTO big_segments_synchronized (env, synchronized_on) VALUES ($1, $2) \
             ON CONFLICT (env) DO UPDATE SET synchronized_on = EXCLUDED.synchronized_on",
        )
        .bind(env)
        .bind(at)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn clear_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
    ) -> Result<(), StoreError> {
        let generation = generation_arg(generation)?;
        sqlx::query(
            "DELETE FROM big_segment_members WHERE env = $1 AND segment = $2 AND generation = $3",
        )
        .bind(env)
        .bind(segment)
        .bind(generation)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn copy_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        into: &mut dyn MemberUpload,
    ) -> Result<u64, StoreError> {
        let generation = generation_arg(generation)?;
        // Page by context hash (the primary key's second column), so a generation of millions
        // is never read whole and no transaction stays open while the copy is written.
        let limit = i64::try_from(COPY_CHUNK).unwrap_or(i64::MAX);
        let mut after = String::new();
        let mut copied = 0u64;
        let mut chunk = Vec::with_capacity(COPY_CHUNK);
        loop {
            let rows = sqlx::query(
                "SELECT context_hash, included FROM big_segment_members \
                 WHERE env = $1 AND context_hash > $2 AND segment = $3 AND generation = $4 \
                 ORDER BY context_hash LIMIT $5",
            )
            .bind(env)
            .bind(&after)
            .bind(segment)
            .bind(generation)
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
            let Some(last) = rows.last() else {
                return Ok(copied);
            };
            after = last.try_get(0).map_err(db)?;
            chunk.clear();
            for row in &rows {
                let included: bool = row.try_get(1).map_err(db)?;
                chunk.push(MemberChange {
                    op: if included {
                        MemberOp::Include
                    } else {
                        MemberOp::Exclude
                    },
                    context_hash: row.try_get(0).map_err(db)?,
                });
            }
            into.apply(&chunk).await?;
            copied += chunk.len() as u64;
        }
    }
}

/// A generation as the table keeps it.
fn generation_arg(generation: u64) -> Result<i64, StoreError> {
    i64::try_from(generation)
        .ok()
        .filter(|g| *g > 0)
        .ok_or_else(|| StoreError::invalid("generation", "must be between 1 and 2^63 - 1"))
}

/// An upload under way on its own connection.
struct PgUpload {
    conn: PoolConnection<Postgres>,
    env: String,
    segment: String,
    generation: i64,
    fresh: bool,
    /// Changes copied so far, which numbers them so the last change of a context wins.
    lines: i64,
    /// The `COPY` text of the chunk being sent, kept between chunks for its capacity.
    buffer: String,
}

impl PgUpload {
    /// Applies the upload in one transaction.
    async fn store(&mut self) -> Result<(), StoreError> {
        let reduce = format!(
            "CREATE TEMPORARY TABLE {LAST_TABLE} AS \
             SELECT DISTINCT ON (context_hash) context_hash, op FROM {UPLOAD_TABLE} \
             ORDER BY context_hash, line DESC"
        );
        sqlx::query(&reduce)
            .persistent(false)
            .execute(&mut *self.conn)
            .await
            .map_err(db)?;
        // Temporary tables get no statistics on their own. Without them the planner may join
        // every stored member against every line (a nested loop over millions of rows each
        // way) when the members table is already full.
        sqlx::query(&format!("ANALYZE {LAST_TABLE}"))
            .persistent(false)
            .execute(&mut *self.conn)
            .await
            .map_err(db)?;
        let mut tx = self.conn.begin().await.map_err(db)?;
        if self.fresh {
            sqlx::query(
                "DELETE FROM big_segment_members \
                 WHERE env = $1 AND segment = $2 AND generation = $3",
            )
            .bind(&self.env)
            .bind(&self.segment)
            .bind(self.generation)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        } else {
            let remove = format!(
                "DELETE FROM big_segment_members m USING {LAST_TABLE} l \
                 WHERE l.op = 'r' AND m.env = $1 AND m.context_hash = l.context_hash \
                   AND m.segment = $2 AND m.generation = $3"
            );
            sqlx::query(&remove)
                .bind(&self.env)
                .bind(&self.segment)
                .bind(self.generation)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let insert = format!(
            "INSERT INTO big_segment_members (env, context_hash, segment, generation, included) \
             SELECT $1, context_hash, $2, $3, op = 'i' FROM {LAST_TABLE} WHERE op <> 'r' \
             ON CONFLICT (env, context_hash, segment, generation) \
             DO UPDATE SET included = EXCLUDED.included \
             WHERE big_segment_members.included IS DISTINCT FROM EXCLUDED.included"
        );
        sqlx::query(&insert)
            .bind(&self.env)
            .bind(&self.segment)
            .bind(self.generation)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Sends what was stored to `copy`, a chunk at a time through a cursor, and commits it.
    async fn copy(&mut self, mut copy: Box<dyn MemberUpload>) -> Result<(), StoreError> {
        let mut tx = self.conn.begin().await.map_err(db)?;
        let declare = format!(
            "DECLARE flagd_member_copy NO SCROLL CURSOR FOR \
             SELECT context_hash, op::text FROM {LAST_TABLE}"
        );
        sqlx::query(&declare)
            .persistent(false)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let fetch = format!("FETCH {COPY_CHUNK} FROM flagd_member_copy");
        let mut chunk = Vec::with_capacity(COPY_CHUNK);
        loop {
            let rows = sqlx::query(&fetch).fetch_all(&mut *tx).await.map_err(db)?;
            if rows.is_empty() {
                break;
            }
            chunk.clear();
            for row in rows {
                let op: String = row.try_get(1).map_err(db)?;
                chunk.push(MemberChange {
                    op: op_of(&op)?,
                    context_hash: row.try_get(0).map_err(db)?,
                });
            }
            copy.apply(&chunk).await?;
        }
        tx.commit().await.map_err(db)?;
        copy.commit(None)
            .await
            .map_err(UploadError::into_store_error)
    }
}

#[async_trait::async_trait]
impl MemberUpload for PgUpload {
    async fn apply(&mut self, changes: &[MemberChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.buffer.clear();
        for change in changes {
            // Hashes are base64, so nothing in them needs escaping in COPY's text format;
            // anything else is refused rather than escaped.
            if change.context_hash.is_empty()
                || !change
                    .context_hash
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            {
                return Err(StoreError::invalid(
                    "contextHash",
                    format!("{:?} is not a base64 context hash", change.context_hash),
                ));
            }
            self.lines += 1;
            let op = match change.op {
                MemberOp::Include => 'i',
                MemberOp::Exclude => 'e',
                MemberOp::Remove => 'r',
            };
            // Writing to a String cannot fail.
            let _ = writeln!(self.buffer, "{}\t{}\t{op}", self.lines, change.context_hash);
        }
        let statement = format!("COPY {UPLOAD_TABLE} (line, context_hash, op) FROM STDIN");
        let mut copy = self.conn.copy_in_raw(&statement).await.map_err(db)?;
        if let Err(e) = copy.send(self.buffer.as_bytes()).await {
            // The connection is closed on drop whatever the abort does.
            let _ = copy.abort(e.to_string()).await;
            return Err(db(e));
        }
        copy.finish().await.map_err(db)?;
        Ok(())
    }

    async fn commit(
        mut self: Box<Self>,
        copy: Option<Box<dyn MemberUpload>>,
    ) -> Result<(), UploadError> {
        self.store().await.map_err(UploadError::NotStored)?;
        match copy {
            Some(copy) => self.copy(copy).await.map_err(UploadError::NotCopied),
            None => Ok(()),
        }
    }
}

/// The operation a `"char"` column holds, read as text.
fn op_of(op: &str) -> Result<MemberOp, StoreError> {
    match op {
        "i" => Ok(MemberOp::Include),
        "e" => Ok(MemberOp::Exclude),
        "r" => Ok(MemberOp::Remove),
        _ => Err(corrupt(format!(
            "upload operation {op:?} is none of i, e, r"
        ))),
    }
}
