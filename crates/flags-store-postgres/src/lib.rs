//! `flags-store-postgres`: flagd's [`AdminStore`] on PostgreSQL.
//!
//! Flags and segments (as LaunchDarkly JSON documents), the kill set, per-entity overrides, API
//! keys (hashed) and the audit log live in the tables of `migrations/`, which are embedded and
//! applied by [`PostgresStore::migrate`]. Every write runs in one transaction that first locks
//! its environment's row, so writes to an environment are serialized: validation (through
//! `flags_store::validate`, the same code every backend runs) sees exactly the data the
//! write lands on, and change sequence numbers commit in order. The same transaction writes the
//! audit entry and the change, and sends a `NOTIFY` that PostgreSQL delivers at commit; replicas
//! follow it with [`ChangeFeed::subscribe`].
//!
//! It knows SQL and nothing of HTTP: the server maps [`StoreError`]s to status codes. It does
//! not evaluate flags or keep a cache; replicas build their snapshots from
//! [`ChangeFeed::snapshot`] and [`ChangeFeed::changes_since`].
//!
//! ```no_run
//! use flags_store::{Actor, AdminStore, ChangeFeed, ChangeSubscription, StoreError};
//! use flags_store_postgres::{PostgresConfig, PostgresStore};
//! use serde_json::json;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), StoreError> {
//!     let config = PostgresConfig::new("postgres://flagd@localhost/flagd");
//!     let store = PostgresStore::connect_with(&config).await?;
//!     store.migrate().await?;
//!
//!     let mut changes = store.subscribe().await?;
//!     let admin = Actor::named("release-script");
//!     store.create_environment(&admin, "production", "Production").await?;
//!     let flag = json!({"variations": [false, true], "fallthrough": {"variation": 0}});
//!     store.put_flag(&admin, "production", "dark-mode", flag, None).await?;
//!
//!     // Every replica hears of the write, from LISTEN/NOTIFY.
//!     let change = changes.next().await?;
//!     println!("change {} to {} in {}", change.seq, change.key, change.env);
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

// The README's example runs as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod big_segments;
mod diagnose;
mod error;
mod subscription;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flags_core::{Flag, ItemKind, Segment};
use flags_store::check::ReferenceCheck;
use flags_store::validate::{
    Parsed, PreparedItem, apply_environment_update, apply_targets_update, check_audit_query,
    check_env, check_environment_update, check_expected_version, check_item, check_list,
    check_new_api_key, check_new_environment, check_override_key, check_variations_still_used,
    flag_dependents, prepare_flag, prepare_import, prepare_segment, restamp_version, same_document,
    segment_dependents,
};
use flags_store::{
    Actor, AdminStore, ApiKey, ApiKeyKind, AuditAction, AuditEntry, AuditItemKind, AuditQuery,
    BatchError, Change, ChangeFeed, ChangeKind, ChangeSubscription, CreatedApiKey, EnvSnapshot,
    Environment, EnvironmentUpdate, FlagOverride, ImportItem, ImportOutcome, KeyStore, LastChange,
    ListFilter, NewApiKey, NewEnvironment, Override, OverrideKey, SegmentTargetsUpdate, StoreError,
    StoredFlag, StoredSegment, generate_secret, hash_secret,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Transaction};

use crate::error::{corrupt, db, to_u64};

pub use diagnose::explain_unreachable;
pub use subscription::PgSubscription;

/// The channel changes are announced on. The payload is the [`Change`] as JSON, or
/// `{"seq":N,"env":E}` when that would not fit in a notification.
pub const CHANNEL: &str = "flagd_changes";

/// The largest payload sent whole; PostgreSQL refuses notifications of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7_000;

/// How to reach the database. Its `Debug` hides the URL's password ([`redact_url`]).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// The most connections the pool opens (a subscription holds one more of its own).
    pub max_connections: u32,
    /// How long an operation waits for a connection before it fails as unavailable. Short, so
    /// that writes during an outage answer quickly instead of piling up.
    pub acquire_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> PostgresConfig {
        PostgresConfig {
            url: String::new(),
            max_connections: 10,
            acquire_timeout_ms: 3_000,
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .finish()
    }
}

/// A database URL fit for logs: the password of `postgres://user:password@host/db` and any
/// `password` query parameter become `***`. Everything else is kept, so the URL still says
/// which database is meant.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "***";
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{HIDDEN}@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}={HIDDEN}")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

impl PostgresConfig {
    /// The defaults, with this URL.
    pub fn new(url: &str) -> PostgresConfig {
        PostgresConfig {
            url: url.to_owned(),
            ..PostgresConfig::default()
        }
    }

    fn pool_options(&self) -> Result<(PgPoolOptions, PgConnectOptions), StoreError> {
        let connect: PgConnectOptions = self.url.parse().map_err(|e: sqlx::Error| {
            StoreError::invalid("database url", format!("cannot parse the URL: {e}"))
        })?;
        // The server's notices (`relation "_sqlx_migrations" already exists, skipping`, on
        // every start) are not for flagd's operators; warnings and errors still come.
        let connect = connect.options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections.max(1))
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms));
        Ok((pool, connect))
    }
}

/// The schema migrations, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The admin store on PostgreSQL. Cheap to clone (it is a connection pool).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects with default settings; fails as [`StoreError::Unavailable`] if the database
    /// cannot be reached now.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(&PostgresConfig::new(url)).await
    }

    /// Connects; fails if the database cannot be reached now.
    pub async fn connect_with(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        let (pool, connect) = config.pool_options()?;
        let pool = pool.connect_with(connect).await.map_err(db)?;
        Ok(PostgresStore { pool })
    }

    /// A store that connects on first use, so a server can start while the database is down
    /// (each operation then fails as unavailable until it is back), and that applies the
    /// embedded migrations on the first connection it opens, before any operation runs on it.
    /// Until a migration run succeeds, every new connection tries again.
    pub fn connect_lazy_migrated(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        let (pool, connect) = config.pool_options()?;
        let migrated = Arc::new(AtomicBool::new(false));
        let pool = pool.after_connect(move |conn, _meta| {
            let migrated = Arc::clone(&migrated);
            Box::pin(async move {
                if !migrated.load(Ordering::Acquire) {
                    // Several first connections may race here; sqlx serialises the runs with
                    // an advisory lock, and a run finds nothing left to apply.
                    MIGRATOR
                        .run_direct(conn)
                        .await
                        .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
                    migrated.store(true, Ordering::Release);
                    tracing::info!("database reachable; migrations applied");
                }
                Ok(())
            })
        });
        Ok(PostgresStore {
            pool: pool.connect_lazy_with(connect),
        })
    }

    /// A store over an existing pool.
    pub fn from_pool(pool: PgPool) -> PostgresStore {
        PostgresStore { pool }
    }

    /// The pool, for callers that need the database directly (tests, health checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations that have not run yet. Safe to call from several
    /// replicas at once: sqlx takes an advisory lock around them.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(error::migrate)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write to `env`: a transaction holding the environment's row lock.
    async fn begin_write(&self, env: &str) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // NO KEY UPDATE conflicts with itself (so writers of one environment queue here) but not
        // with the KEY SHARE locks that foreign-key checks take, so readers and inserts that
        // merely reference the environment are not held up.
        let found = sqlx::query("SELECT 1 FROM environments WHERE key = $1 FOR NO KEY UPDATE")
            .bind(env)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if found.is_none() {
            return Err(env_not_found(env));
        }
        Ok(tx)
    }

    /// `NotFound` for the environment if it does not exist, else for `what`.
    async fn missing(&self, env: &str, what: StoreError) -> StoreError {
        match env_exists(&self.pool, env).await {
            Ok(true) => what,
            Ok(false) => env_not_found(env),
            Err(e) => e,
        }
    }

    async fn get_item(&self, table: Table, env: &str, key: &str) -> Result<Item, StoreError> {
        check_item(env, table.kind(), key)?;
        let sql = format!(
            "SELECT key, version, archived, deleted, {MS_UPDATED}, doc FROM {} \
             WHERE env = $1 AND key = $2 AND NOT deleted",
            table.name()
        );
        let row: Option<ItemRow> = sqlx::query_as(&sql)
            .bind(env)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        match row {
            Some(row) => Item::from_row(row),
            None => Err(self.missing(env, table.not_found(env, key)).await),
        }
    }

    async fn list_items(
        &self,
        table: Table,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<Item>, StoreError> {
        check_list(env, filter)?;
        let sql = format!(
            "SELECT key, version, archived, deleted, {MS_UPDATED}, doc FROM {} \
             WHERE env = $1 AND NOT deleted \
               AND ($2::boolean IS NULL OR archived = $2) \
               AND ($3::text IS NULL OR starts_with(key, $3)) \
             ORDER BY key",
            table.name()
        );
        let rows: Vec<ItemRow> = sqlx::query_as(&sql)
            .bind(env)
            .bind(filter.archived)
            .bind(filter.key_prefix.as_deref())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        if rows.is_empty() && !env_exists(&self.pool, env).await? {
            return Err(env_not_found(env));
        }
        rows.into_iter().map(Item::from_row).collect()
    }

    async fn put_item(
        &self,
        table: Table,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<Item, StoreError> {
        check_item(env, table.kind(), key)?;
        let mut tx = self.begin_write(env).await?;
        let existing = load_item(&mut tx, table, env, key).await?;
        let current = existing.as_ref().filter(|i| !i.deleted);
        check_expected_version(current.map(|i| i.version), expected_version, true)?;
        let version = existing.as_ref().map_or(0, |i| i.version) + 1;
        let (doc, parsed) = match table {
            Table::Flags => prepare_flag(key, doc, version).map(|(d, f)| (d, Parsed::Flag(f)))?,
            Table::Segments => {
                prepare_segment(key, doc, version).map(|(d, s)| (d, Parsed::Segment(s)))?
            }
        };
        let item = PreparedItem {
            key: key.to_owned(),
            doc,
            parsed,
        };
        let stored = write_item(&mut tx, actor, env, item, version, current).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn set_archived(
        &self,
        table: Table,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<Item, StoreError> {
        check_item(env, table.kind(), key)?;
        let mut tx = self.begin_write(env).await?;
        let item = load_live(&mut tx, table, env, key).await?;
        check_expected_version(Some(item.version), expected_version, false)?;
        if item.archived == archived {
            return Ok(item);
        }
        if archived {
            let dependents = dependents(&mut tx, table, env, key).await?;
            if !dependents.is_empty() {
                return Err(StoreError::HasDependents { dependents });
            }
        } else {
            let check = match table {
                Table::Flags => ReferenceCheck::for_flag(&parse_flag(&item.doc)?),
                Table::Segments => ReferenceCheck::for_segment(&parse_segment(&item.doc)?),
            };
            resolve(&mut tx, env, check).await?;
        }
        let version = item.version + 1;
        let doc = restamp_version(&item.doc, version);
        let sql = format!(
            "UPDATE {} SET version = $3, archived = $4, doc = $5, updated_at = now() \
             WHERE env = $1 AND key = $2 RETURNING {MS_UPDATED}",
            table.name()
        );
        let updated_at: i64 = sqlx::query_scalar(&sql)
            .bind(env)
            .bind(key)
            .bind(to_i64(version))
            .bind(archived)
            .bind(&doc)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let action = if archived {
            AuditAction::Archive
        } else {
            AuditAction::Unarchive
        };
        let audit = Audit {
            env: Some(env),
            item_kind: table.audit_kind(),
            item_key: key,
            action,
            actor,
        };
        audit
            .write(
                &mut tx,
                Some(json!({"archived": !archived})),
                Some(json!({"archived": archived})),
            )
            .await?;
        record(&mut tx, env, key, version, table.change(false)).await?;
        tx.commit().await.map_err(db)?;
        Ok(Item {
            version,
            archived,
            updated_at: to_u64(updated_at, "timestamp")?,
            doc,
            ..item
        })
    }

    async fn delete_item(
        &self,
        table: Table,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        check_item(env, table.kind(), key)?;
        let mut tx = self.begin_write(env).await?;
        let item = load_live(&mut tx, table, env, key).await?;
        check_expected_version(Some(item.version), expected_version, false)?;
        let dependents = dependents(&mut tx, table, env, key).await?;
        if !dependents.is_empty() {
            return Err(StoreError::HasDependents { dependents });
        }
        if table == Table::Flags {
            // Its kill and overrides go with it.
            for sql in [
                "DELETE FROM killed_flags WHERE env = $1 AND flag_key = $2",
                "DELETE FROM overrides WHERE env = $1 AND flag_key = $2",
            ] {
                sqlx::query(sql)
                    .bind(env)
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        let version = item.version + 1;
        let sql = format!(
            "UPDATE {} SET version = $3, deleted = true, updated_at = now() \
             WHERE env = $1 AND key = $2",
            table.name()
        );
        sqlx::query(&sql)
            .bind(env)
            .bind(key)
            .bind(to_i64(version))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let audit = Audit {
            env: Some(env),
            item_kind: table.audit_kind(),
            item_key: key,
            action: AuditAction::Delete,
            actor,
        };
        audit.write(&mut tx, Some(item.doc), None).await?;
        record(&mut tx, env, key, version, table.change(true)).await?;
        tx.commit().await.map_err(db)
    }
}

/// Stores a flag or segment whose shape was checked and whose version is `version`, after
/// checking its references (and, for a replaced flag, that the variations its dependents and
/// overrides use remain), with its audit entry and change. `current` is the live row it
/// replaces.
async fn write_item(
    tx: &mut PgConnection,
    actor: &Actor,
    env: &str,
    item: PreparedItem,
    version: u64,
    current: Option<&Item>,
) -> Result<Item, StoreError> {
    let table = Table::of(item.kind());
    let key = item.key.as_str();
    resolve(tx, env, item.reference_check()).await?;
    if let (Parsed::Flag(flag), Some(_)) = (&item.parsed, current) {
        let dependents = prerequisite_candidates(tx, env, key).await?;
        let overrides = load_overrides(&mut *tx, env, key).await?;
        check_variations_still_used(flag, &dependents, &overrides)?;
    }
    let archived = current.is_some_and(|i| i.archived);
    let sql = format!(
        "INSERT INTO {} (env, key, version, archived, deleted, doc, updated_at) \
         VALUES ($1, $2, $3, $4, false, $5, now()) \
         ON CONFLICT (env, key) DO UPDATE SET version = EXCLUDED.version, \
           archived = EXCLUDED.archived, deleted = false, doc = EXCLUDED.doc, \
           updated_at = EXCLUDED.updated_at \
         RETURNING {MS_UPDATED}",
        table.name()
    );
    let updated_at: i64 = sqlx::query_scalar(&sql)
        .bind(env)
        .bind(key)
        .bind(to_i64(version))
        .bind(archived)
        .bind(&item.doc)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
    let before = current.map(|i| i.doc.clone());
    let action = if before.is_some() {
        AuditAction::Replace
    } else {
        AuditAction::Create
    };
    let audit = Audit {
        env: Some(env),
        item_kind: table.audit_kind(),
        item_key: key,
        action,
        actor,
    };
    audit.write(tx, before, Some(item.doc.clone())).await?;
    record(tx, env, key, version, table.change(false)).await?;
    Ok(Item {
        key: item.key,
        version,
        archived,
        deleted: false,
        updated_at: to_u64(updated_at, "timestamp")?,
        doc: item.doc,
    })
}

/// Applies one item of an import inside its transaction.
async fn import_item(
    tx: &mut PgConnection,
    actor: &Actor,
    env: &str,
    mut item: PreparedItem,
) -> Result<ImportOutcome, StoreError> {
    let table = Table::of(item.kind());
    let existing = load_item(tx, table, env, &item.key).await?;
    let current = existing.as_ref().filter(|i| !i.deleted);
    if let Some(stored) = current
        && same_document(&stored.doc, &item.doc, &item.key)
    {
        return Ok(ImportOutcome::Unchanged);
    }
    let version = existing.as_ref().map_or(0, |i| i.version) + 1;
    item.stamp(version);
    write_item(tx, actor, env, item, version, current).await?;
    Ok(if current.is_some() {
        ImportOutcome::Replaced
    } else {
        ImportOutcome::Created
    })
}

/// Milliseconds since the Unix epoch of `updated_at`, as a bigint column.
const MS_UPDATED: &str = "(extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Flags,
    Segments,
}

impl Table {
    fn of(kind: ItemKind) -> Table {
        match kind {
            ItemKind::Flag => Table::Flags,
            ItemKind::Segment => Table::Segments,
        }
    }

    fn kind(self) -> ItemKind {
        match self {
            Table::Flags => ItemKind::Flag,
            Table::Segments => ItemKind::Segment,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Flags => "flags",
            Table::Segments => "segments",
        }
    }

    fn not_found(self, env: &str, key: &str) -> StoreError {
        let what = match self {
            Table::Flags => "flag",
            Table::Segments => "segment",
        };
        StoreError::not_found(format!("{what} {key:?} in environment {env:?}"))
    }

    fn audit_kind(self) -> AuditItemKind {
        match self {
            Table::Flags => AuditItemKind::Flag,
            Table::Segments => AuditItemKind::Segment,
        }
    }

    fn change(self, deleted: bool) -> ChangeKind {
        match self {
            Table::Flags => ChangeKind::Flag { deleted },
            Table::Segments => ChangeKind::Segment { deleted },
        }
    }
}

type ItemRow = (String, i64, bool, bool, i64, Value);

/// A flag or segment row.
#[derive(Debug, Clone)]
struct Item {
    key: String,
    version: u64,
    archived: bool,
    deleted: bool,
    updated_at: u64,
    doc: Value,
}

impl Item {
    fn from_row(
        (key, version, archived, deleted, updated_at, doc): ItemRow,
    ) -> Result<Item, StoreError> {
        Ok(Item {
            key,
            version: to_u64(version, "version")?,
            archived,
            deleted,
            updated_at: to_u64(updated_at, "timestamp")?,
            doc,
        })
    }

    fn into_flag(self) -> StoredFlag {
        StoredFlag {
            key: self.key,
            version: self.version,
            archived: self.archived,
            updated_at: self.updated_at,
            doc: self.doc,
        }
    }

    fn into_segment(self) -> StoredSegment {
        StoredSegment {
            key: self.key,
            version: self.version,
            archived: self.archived,
            updated_at: self.updated_at,
            doc: self.doc,
        }
    }
}

fn env_not_found(env: &str) -> StoreError {
    StoreError::not_found(format!("environment {env:?}"))
}

/// Versions stay far below `i64::MAX` (one per write); saturating keeps a bogus caller value
/// from wrapping.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

async fn env_exists<'e, E>(executor: E, env: &str) -> Result<bool, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM environments WHERE key = $1)")
        .bind(env)
        .fetch_one(executor)
        .await
        .map_err(db)
}

fn parse_flag(doc: &Value) -> Result<Flag, StoreError> {
    Flag::from_json_value(doc.clone())
        .map_err(|e| corrupt(format!("a stored flag does not parse: {e}")))
}

fn parse_segment(doc: &Value) -> Result<Segment, StoreError> {
    Segment::from_json_value(doc.clone())
        .map_err(|e| corrupt(format!("a stored segment does not parse: {e}")))
}

/// The row of `key`, tombstone included.
async fn load_item(
    conn: &mut PgConnection,
    table: Table,
    env: &str,
    key: &str,
) -> Result<Option<Item>, StoreError> {
    let sql = format!(
        "SELECT key, version, archived, deleted, {MS_UPDATED}, doc FROM {} \
         WHERE env = $1 AND key = $2",
        table.name()
    );
    let row: Option<ItemRow> = sqlx::query_as(&sql)
        .bind(env)
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(db)?;
    row.map(Item::from_row).transpose()
}

/// The row of `key` if it exists and is not deleted, else `NotFound`.
async fn load_live(
    conn: &mut PgConnection,
    table: Table,
    env: &str,
    key: &str,
) -> Result<Item, StoreError> {
    match load_item(conn, table, env, key).await? {
        Some(item) if !item.deleted => Ok(item),
        _ => Err(table.not_found(env, key)),
    }
}

/// Answers a reference check from the live (not archived, not deleted) rows, one query per
/// table per level of nesting.
async fn resolve(
    conn: &mut PgConnection,
    env: &str,
    mut check: ReferenceCheck,
) -> Result<(), StoreError> {
    while let Some(wanted) = check.wanted() {
        if !wanted.flags.is_empty() {
            let found = live_docs(conn, Table::Flags, env, &wanted.flags).await?;
            for key in &wanted.flags {
                let flag = found
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, doc)| parse_flag(doc))
                    .transpose()?;
                check.supply_flag(key, flag.as_ref());
            }
        }
        if !wanted.segments.is_empty() {
            let found = live_docs(conn, Table::Segments, env, &wanted.segments).await?;
            for key in &wanted.segments {
                let segment = found
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, doc)| parse_segment(doc))
                    .transpose()?;
                check.supply_segment(key, segment.as_ref());
            }
        }
    }
    check.finish()
}

async fn live_docs(
    conn: &mut PgConnection,
    table: Table,
    env: &str,
    keys: &[String],
) -> Result<Vec<(String, Value)>, StoreError> {
    let sql = format!(
        "SELECT key, doc FROM {} WHERE env = $1 AND key = ANY($2) AND NOT deleted AND NOT archived",
        table.name()
    );
    sqlx::query_as(&sql)
        .bind(env)
        .bind(keys)
        .fetch_all(conn)
        .await
        .map_err(db)
}

/// Live flags whose prerequisites mention `key` (found by index; exact matching is core's).
async fn prerequisite_candidates(
    conn: &mut PgConnection,
    env: &str,
    key: &str,
) -> Result<Vec<Flag>, StoreError> {
    let docs: Vec<Value> = sqlx::query_scalar(
        "SELECT doc FROM flags WHERE env = $1 AND NOT deleted AND NOT archived \
           AND doc -> 'prerequisites' @> jsonb_build_array(jsonb_build_object('key', $2::text))",
    )
    .bind(env)
    .bind(key)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    docs.iter().map(parse_flag).collect()
}

/// Live docs of `table` whose rules name segment `key` in a `segmentMatch` clause.
async fn segment_match_candidates(
    conn: &mut PgConnection,
    table: Table,
    env: &str,
    key: &str,
) -> Result<Vec<Value>, StoreError> {
    let sql = format!(
        "SELECT doc FROM {} WHERE env = $1 AND NOT deleted AND NOT archived \
           AND jsonb_path_exists(doc, \
             '$.rules[*].clauses[*] ? (@.op == \"segmentMatch\" && @.values[*] == $k)', \
             jsonb_build_object('k', $2::text))",
        table.name()
    );
    sqlx::query_scalar(&sql)
        .bind(env)
        .bind(key)
        .fetch_all(conn)
        .await
        .map_err(db)
}

/// What live items refer to `key`; deleting or archiving it must wait for them.
async fn dependents(
    conn: &mut PgConnection,
    table: Table,
    env: &str,
    key: &str,
) -> Result<Vec<flags_store::Dependent>, StoreError> {
    match table {
        Table::Flags => {
            let candidates = prerequisite_candidates(conn, env, key).await?;
            Ok(flag_dependents(key, &candidates))
        }
        Table::Segments => {
            let flags = segment_match_candidates(conn, Table::Flags, env, key)
                .await?
                .iter()
                .map(parse_flag)
                .collect::<Result<Vec<_>, _>>()?;
            let segments = segment_match_candidates(conn, Table::Segments, env, key)
                .await?
                .iter()
                .map(parse_segment)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(segment_dependents(key, &flags, &segments))
        }
    }
}

async fn load_overrides<'e, E>(
    executor: E,
    env: &str,
    flag_key: &str,
) -> Result<Vec<Override>, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT context_kind, context_key, variation FROM overrides \
         WHERE env = $1 AND flag_key = $2 ORDER BY context_kind, context_key",
    )
    .bind(env)
    .bind(flag_key)
    .fetch_all(executor)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|(context_kind, context_key, variation)| {
            Ok(Override {
                context_kind,
                context_key,
                variation: override_variation(variation)?,
            })
        })
        .collect()
}

/// The audit entry of a write, minus before and after.
struct Audit<'a> {
    env: Option<&'a str>,
    item_kind: AuditItemKind,
    item_key: &'a str,
    action: AuditAction,
    actor: &'a Actor,
}

impl Audit<'_> {
    async fn write(
        &self,
        conn: &mut PgConnection,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log \
               (env, item_kind, item_key, action, actor_key_id, actor_name, before, after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(self.env)
        .bind(self.item_kind.as_str())
        .bind(self.item_key)
        .bind(self.action.as_str())
        .bind(self.actor.key_id.map(to_i64))
        .bind(&self.actor.name)
        .bind(before)
        .bind(after)
        .execute(conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}

/// Records a change and announces it; the announcement is delivered when the transaction
/// commits, and dropped if it rolls back.
async fn record(
    conn: &mut PgConnection,
    env: &str,
    key: &str,
    version: u64,
    kind: ChangeKind,
) -> Result<Change, StoreError> {
    let kind_json = serde_json::to_value(&kind).map_err(StoreError::internal)?;
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO changes (env, key, version, kind) VALUES ($1, $2, $3, $4) RETURNING seq",
    )
    .bind(env)
    .bind(key)
    .bind(to_i64(version))
    .bind(&kind_json)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let change = Change {
        seq: to_u64(seq, "change seq")?,
        env: env.to_owned(),
        key: key.to_owned(),
        version,
        kind,
    };
    let mut payload = serde_json::to_string(&change).map_err(StoreError::internal)?;
    if payload.len() > MAX_PAYLOAD {
        payload = json!({"seq": change.seq, "env": env}).to_string();
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(change)
}

type ChangeRow = (i64, String, String, i64, Value);

fn change_from_row((seq, env, key, version, kind): ChangeRow) -> Result<Change, StoreError> {
    Ok(Change {
        seq: to_u64(seq, "change seq")?,
        env,
        key,
        version: to_u64(version, "version")?,
        kind: serde_json::from_value(kind)
            .map_err(|e| corrupt(format!("a stored change kind does not parse: {e}")))?,
    })
}

type AuditRow = (
    i64,
    Option<String>,
    String,
    String,
    String,
    Option<i64>,
    String,
    Option<Value>,
    Option<Value>,
    i64,
);

type LastChangeRow = (String, String, Option<i64>, String, i64);

fn last_change_from_row(row: LastChangeRow) -> Result<(String, LastChange), StoreError> {
    let (item_key, action, actor_key_id, actor_name, at) = row;
    let change = LastChange {
        actor: Actor {
            key_id: actor_key_id.map(|id| to_u64(id, "key id")).transpose()?,
            name: actor_name,
        },
        action: AuditAction::parse(&action)
            .ok_or_else(|| corrupt(format!("unknown audit action {action:?}")))?,
        at: to_u64(at, "timestamp")?,
    };
    Ok((item_key, change))
}

fn audit_from_row(row: AuditRow) -> Result<AuditEntry, StoreError> {
    let (id, env, item_kind, item_key, action, actor_key_id, actor_name, before, after, at) = row;
    Ok(AuditEntry {
        id: to_u64(id, "audit id")?,
        env,
        item_kind: AuditItemKind::parse(&item_kind)
            .ok_or_else(|| corrupt(format!("unknown audit item kind {item_kind:?}")))?,
        item_key,
        action: AuditAction::parse(&action)
            .ok_or_else(|| corrupt(format!("unknown audit action {action:?}")))?,
        actor: Actor {
            key_id: actor_key_id.map(|id| to_u64(id, "key id")).transpose()?,
            name: actor_name,
        },
        before,
        after,
        at: to_u64(at, "timestamp")?,
    })
}

type EnvRow = (String, String, Option<String>, i64);

const ENV_COLUMNS: &str = "key, name, color, (extract(epoch FROM created_at) * 1000)::bigint";

fn env_from_row((key, name, color, created_at): EnvRow) -> Result<Environment, StoreError> {
    Ok(Environment {
        key,
        name,
        color,
        created_at: to_u64(created_at, "timestamp")?,
    })
}

type KeyRow = (i64, String, String, Option<String>, i64, bool);

const KEY_COLUMNS: &str = "id, name, kind, env, (extract(epoch FROM created_at) * 1000)::bigint, \
                           revoked_at IS NOT NULL";

fn key_from_row((id, name, kind, env, created_at, revoked): KeyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: to_u64(id, "key id")?,
        name,
        kind: ApiKeyKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("unknown key kind {kind:?}")))?,
        env,
        created_at: to_u64(created_at, "timestamp")?,
        revoked,
    })
}

fn key_json(key: &ApiKey) -> Option<Value> {
    serde_json::to_value(key).ok()
}

fn override_json(kind: &str, key: &str, variation: usize) -> Option<Value> {
    serde_json::to_value(Override {
        context_kind: kind.to_owned(),
        context_key: key.to_owned(),
        variation,
    })
    .ok()
}

#[async_trait::async_trait]
impl AdminStore for PostgresStore {
    async fn create_environment_with(
        &self,
        actor: &Actor,
        new: &NewEnvironment,
    ) -> Result<Environment, StoreError> {
        let new = check_new_environment(new)?;
        let key = new.key.as_str();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let created: Option<EnvRow> = sqlx::query_as(&format!(
            "INSERT INTO environments (key, name, color) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING RETURNING {ENV_COLUMNS}"
        ))
        .bind(key)
        .bind(&new.name)
        .bind(new.color.as_deref())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(row) = created else {
            return Err(StoreError::AlreadyExists {
                what: format!("environment {key:?}"),
            });
        };
        let env = env_from_row(row)?;
        let audit = Audit {
            env: Some(key),
            item_kind: AuditItemKind::Environment,
            item_key: key,
            action: AuditAction::Create,
            actor,
        };
        audit
            .write(&mut tx, None, serde_json::to_value(&env).ok())
            .await?;
        record(&mut tx, key, key, 0, ChangeKind::EnvironmentCreated).await?;
        tx.commit().await.map_err(db)?;
        Ok(env)
    }

    async fn update_environment(
        &self,
        actor: &Actor,
        key: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, StoreError> {
        let update = check_environment_update(key, update)?;
        let mut tx = self.begin_write(key).await?;
        let row: EnvRow = sqlx::query_as(&format!(
            "SELECT {ENV_COLUMNS} FROM environments WHERE key = $1"
        ))
        .bind(key)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let before = env_from_row(row)?;
        let mut after = before.clone();
        if !apply_environment_update(&mut after, &update) {
            return Ok(before);
        }
        sqlx::query("UPDATE environments SET name = $2, color = $3 WHERE key = $1")
            .bind(key)
            .bind(&after.name)
            .bind(after.color.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let audit = Audit {
            env: Some(key),
            item_kind: AuditItemKind::Environment,
            item_key: key,
            action: AuditAction::Update,
            actor,
        };
        audit
            .write(
                &mut tx,
                serde_json::to_value(&before).ok(),
                serde_json::to_value(&after).ok(),
            )
            .await?;
        record(&mut tx, key, key, 0, ChangeKind::EnvironmentUpdated).await?;
        tx.commit().await.map_err(db)?;
        Ok(after)
    }

    async fn list_flags(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredFlag>, StoreError> {
        let items = self.list_items(Table::Flags, env, filter).await?;
        Ok(items.into_iter().map(Item::into_flag).collect())
    }

    async fn put_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError> {
        let item = self
            .put_item(Table::Flags, actor, env, key, doc, expected_version)
            .await?;
        Ok(item.into_flag())
    }

    async fn set_flag_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredFlag, StoreError> {
        let item = self
            .set_archived(Table::Flags, actor, env, key, archived, expected_version)
            .await?;
        Ok(item.into_flag())
    }

    async fn delete_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        self.delete_item(Table::Flags, actor, env, key, expected_version)
            .await
    }

    async fn list_segments(
        &self,
        env: &str,
        filter: &ListFilter,
    ) -> Result<Vec<StoredSegment>, StoreError> {
        let items = self.list_items(Table::Segments, env, filter).await?;
        Ok(items.into_iter().map(Item::into_segment).collect())
    }

    async fn put_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        doc: Value,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        let item = self
            .put_item(Table::Segments, actor, env, key, doc, expected_version)
            .await?;
        Ok(item.into_segment())
    }

    async fn set_segment_archived(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        archived: bool,
        expected_version: Option<u64>,
    ) -> Result<StoredSegment, StoreError> {
        let item = self
            .set_archived(Table::Segments, actor, env, key, archived, expected_version)
            .await?;
        Ok(item.into_segment())
    }

    async fn delete_segment(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        expected_version: Option<u64>,
    ) -> Result<(), StoreError> {
        self.delete_item(Table::Segments, actor, env, key, expected_version)
            .await
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
        let mut tx = self.begin_write(env).await?;
        let item = load_live(&mut tx, Table::Segments, env, key).await?;
        check_expected_version(Some(item.version), expected_version, false)?;
        let mut doc = item.doc.clone();
        if !apply_targets_update(&mut doc, update)? {
            return Ok(item.into_segment());
        }
        let version = item.version + 1;
        let (doc, _) = prepare_segment(key, doc, version)?;
        let updated_at: i64 = sqlx::query_scalar(&format!(
            "UPDATE segments SET version = $3, doc = $4, updated_at = now() \
             WHERE env = $1 AND key = $2 RETURNING {MS_UPDATED}"
        ))
        .bind(env)
        .bind(key)
        .bind(to_i64(version))
        .bind(&doc)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let audit = Audit {
            env: Some(env),
            item_kind: AuditItemKind::Segment,
            item_key: key,
            action: AuditAction::UpdateTargets,
            actor,
        };
        audit
            .write(&mut tx, Some(item.doc.clone()), Some(doc.clone()))
            .await?;
        record(
            &mut tx,
            env,
            key,
            version,
            ChangeKind::Segment { deleted: false },
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(StoredSegment {
            key: key.to_owned(),
            version,
            archived: item.archived,
            updated_at: to_u64(updated_at, "timestamp")?,
            doc,
        })
    }

    async fn set_killed(
        &self,
        actor: &Actor,
        env: &str,
        flag_key: &str,
        killed: bool,
    ) -> Result<bool, StoreError> {
        check_item(env, ItemKind::Flag, flag_key)?;
        let mut tx = self.begin_write(env).await?;
        let flag = load_live(&mut tx, Table::Flags, env, flag_key).await?;
        let sql = if killed {
            "INSERT INTO killed_flags (env, flag_key) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM killed_flags WHERE env = $1 AND flag_key = $2"
        };
        let changed = sqlx::query(sql)
            .bind(env)
            .bind(flag_key)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected()
            == 1;
        if !changed {
            return Ok(false);
        }
        let action = if killed {
            AuditAction::Kill
        } else {
            AuditAction::Unkill
        };
        let audit = Audit {
            env: Some(env),
            item_kind: AuditItemKind::Flag,
            item_key: flag_key,
            action,
            actor,
        };
        audit
            .write(
                &mut tx,
                Some(json!({"killed": !killed})),
                Some(json!({"killed": killed})),
            )
            .await?;
        record(
            &mut tx,
            env,
            flag_key,
            flag.version,
            ChangeKind::Kill { killed },
        )
        .await?;
        tx.commit().await.map_err(db)?;
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
        let mut tx = self.begin_write(env).await?;
        let mut outcomes = Vec::with_capacity(prepared.len());
        for item in prepared {
            let (kind, key) = (item.kind(), item.key.clone());
            let outcome = import_item(&mut tx, actor, env, item)
                .await
                .map_err(|e| BatchError::item(kind, &key, e))?;
            outcomes.push(outcome);
            progress(outcomes.len());
        }
        // Dropping the transaction on an error above rolls every item back.
        tx.commit().await.map_err(db)?;
        Ok(outcomes)
    }

    async fn killed_flags(&self, env: &str) -> Result<Vec<String>, StoreError> {
        check_env(env)?;
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT flag_key FROM killed_flags WHERE env = $1 ORDER BY flag_key",
        )
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        if keys.is_empty() && !env_exists(&self.pool, env).await? {
            return Err(env_not_found(env));
        }
        Ok(keys)
    }

    async fn set_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
        variation: usize,
    ) -> Result<Option<usize>, StoreError> {
        check_override_key(env, key)?;
        let mut tx = self.begin_write(env).await?;
        let flag = load_live(&mut tx, Table::Flags, env, &key.flag_key).await?;
        let count = parse_flag(&flag.doc)?.variations.len();
        if variation >= count {
            return Err(StoreError::invalid(
                "variation",
                format!(
                    "flag {:?} has no variation {variation} (it has {count})",
                    key.flag_key
                ),
            ));
        }
        let previous = current_override(&mut tx, env, key).await?;
        if previous == Some(variation) {
            return Ok(previous);
        }
        sqlx::query(
            "INSERT INTO overrides (env, flag_key, context_kind, context_key, variation) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (env, flag_key, context_kind, context_key) \
             DO UPDATE SET variation = EXCLUDED.variation, updated_at = now()",
        )
        .bind(env)
        .bind(&key.flag_key)
        .bind(&key.context_kind)
        .bind(&key.context_key)
        // Below the flag's variation count, so it fits.
        .bind(i32::try_from(variation).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let audit = Audit {
            env: Some(env),
            item_kind: AuditItemKind::Flag,
            item_key: &key.flag_key,
            action: AuditAction::SetOverride,
            actor,
        };
        audit
            .write(
                &mut tx,
                previous.and_then(|v| override_json(&key.context_kind, &key.context_key, v)),
                override_json(&key.context_kind, &key.context_key, variation),
            )
            .await?;
        let kind = ChangeKind::Override {
            context_kind: key.context_kind.clone(),
            context_key: key.context_key.clone(),
            variation: Some(variation),
        };
        record(&mut tx, env, &key.flag_key, flag.version, kind).await?;
        tx.commit().await.map_err(db)?;
        Ok(previous)
    }

    async fn remove_override(
        &self,
        actor: &Actor,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        check_override_key(env, key)?;
        let mut tx = self.begin_write(env).await?;
        let flag = load_live(&mut tx, Table::Flags, env, &key.flag_key).await?;
        let removed: Option<i32> = sqlx::query_scalar(
            "DELETE FROM overrides \
             WHERE env = $1 AND flag_key = $2 AND context_kind = $3 AND context_key = $4 \
             RETURNING variation",
        )
        .bind(env)
        .bind(&key.flag_key)
        .bind(&key.context_kind)
        .bind(&key.context_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(previous) = removed else {
            return Ok(None);
        };
        let previous = usize::try_from(previous)
            .map_err(|_| corrupt(format!("negative override variation {previous}")))?;
        let audit = Audit {
            env: Some(env),
            item_kind: AuditItemKind::Flag,
            item_key: &key.flag_key,
            action: AuditAction::RemoveOverride,
            actor,
        };
        audit
            .write(
                &mut tx,
                override_json(&key.context_kind, &key.context_key, previous),
                None,
            )
            .await?;
        let kind = ChangeKind::Override {
            context_kind: key.context_kind.clone(),
            context_key: key.context_key.clone(),
            variation: None,
        };
        record(&mut tx, env, &key.flag_key, flag.version, kind).await?;
        tx.commit().await.map_err(db)?;
        Ok(Some(previous))
    }

    async fn get_override(
        &self,
        env: &str,
        key: &OverrideKey,
    ) -> Result<Option<usize>, StoreError> {
        check_override_key(env, key)?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let found = current_override(&mut conn, env, key).await?;
        if found.is_none() && !env_exists(&mut *conn, env).await? {
            return Err(env_not_found(env));
        }
        Ok(found)
    }

    async fn list_overrides(&self, env: &str, flag_key: &str) -> Result<Vec<Override>, StoreError> {
        check_item(env, ItemKind::Flag, flag_key)?;
        let overrides = load_overrides(&self.pool, env, flag_key).await?;
        if overrides.is_empty() && !env_exists(&self.pool, env).await? {
            return Err(env_not_found(env));
        }
        Ok(overrides)
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        check_audit_query(query)?;
        if let Some(env) = &query.env
            && !env_exists(&self.pool, env).await?
        {
            return Err(env_not_found(env));
        }
        let (item_kind, item_key) = match &query.item {
            Some((kind, key)) => (Some(kind.as_str()), Some(key.as_str())),
            None => (None, None),
        };
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, env, item_kind, item_key, action, actor_key_id, actor_name, before, \
                    after, (extract(epoch FROM at) * 1000)::bigint \
             FROM audit_log \
             WHERE ($1::text IS NULL OR env = $1) \
               AND ($2::text IS NULL OR (item_kind = $2 AND item_key = $3)) \
               AND ($4::bigint IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5",
        )
        .bind(query.env.as_deref())
        .bind(item_kind)
        .bind(item_key)
        .bind(query.before_id.map(to_i64))
        .bind(to_i64(query.limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(audit_from_row).collect()
    }

    async fn flag_last_changes(
        &self,
        env: &str,
    ) -> Result<HashMap<String, LastChange>, StoreError> {
        check_env(env)?;
        // Two steps in one query. The newest entry id of each flag comes from an index-only
        // scan of `audit_log_by_item` in its own order (each flag's entries adjacent, newest
        // first, DISTINCT ON keeping that one), so nothing is sorted; then only those entries
        // are read, by primary key. Reading whole rows in the first step instead makes the
        // planner scan and sort every entry of the environment's flags: about twice as slow
        // on 10,000 flags with 4 entries each, spilling the sort to disk.
        let rows: Vec<LastChangeRow> = sqlx::query_as(
            "SELECT item_key, action, actor_key_id, actor_name, \
                    (extract(epoch FROM at) * 1000)::bigint \
             FROM audit_log \
             WHERE id IN (SELECT DISTINCT ON (item_key) id FROM audit_log \
                          WHERE env = $1 AND item_kind = $2 \
                          ORDER BY item_key, id DESC)",
        )
        .bind(env)
        .bind(AuditItemKind::Flag.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        if rows.is_empty() && !env_exists(&self.pool, env).await? {
            return Err(env_not_found(env));
        }
        rows.into_iter().map(last_change_from_row).collect()
    }

    fn big_segment_members(&self) -> Option<Arc<dyn flags_store::BigSegmentMembers>> {
        Some(Arc::new(self.clone()))
    }
}

#[async_trait::async_trait]
impl ChangeFeed for PostgresStore {
    async fn list_environments(&self) -> Result<Vec<Environment>, StoreError> {
        let rows: Vec<EnvRow> = sqlx::query_as(&format!(
            "SELECT {ENV_COLUMNS} FROM environments ORDER BY key"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(env_from_row).collect()
    }

    async fn get_environment(&self, key: &str) -> Result<Environment, StoreError> {
        check_env(key)?;
        let row: Option<EnvRow> = sqlx::query_as(&format!(
            "SELECT {ENV_COLUMNS} FROM environments WHERE key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        env_from_row(row.ok_or_else(|| env_not_found(key))?)
    }

    async fn get_flag(&self, env: &str, key: &str) -> Result<StoredFlag, StoreError> {
        Ok(self.get_item(Table::Flags, env, key).await?.into_flag())
    }

    async fn get_segment(&self, env: &str, key: &str) -> Result<StoredSegment, StoreError> {
        Ok(self
            .get_item(Table::Segments, env, key)
            .await?
            .into_segment())
    }

    async fn snapshot(&self, env: &str) -> Result<EnvSnapshot, StoreError> {
        check_env(env)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        // One snapshot of the database for every read below, so the cursor matches the data.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if !env_exists(&mut *tx, env).await? {
            return Err(env_not_found(env));
        }
        let mut items = Vec::new();
        for table in [Table::Flags, Table::Segments] {
            let sql = format!(
                "SELECT key, version, archived, deleted, {MS_UPDATED}, doc FROM {} \
                 WHERE env = $1 AND NOT deleted ORDER BY key",
                table.name()
            );
            let rows: Vec<ItemRow> = sqlx::query_as(&sql)
                .bind(env)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            items.push(
                rows.into_iter()
                    .map(Item::from_row)
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        let killed: Vec<String> = sqlx::query_scalar(
            "SELECT flag_key FROM killed_flags WHERE env = $1 ORDER BY flag_key",
        )
        .bind(env)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let override_rows: Vec<(String, String, String, i32)> = sqlx::query_as(
            "SELECT flag_key, context_kind, context_key, variation FROM overrides \
             WHERE env = $1 ORDER BY flag_key, context_kind, context_key",
        )
        .bind(env)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let overrides = override_rows
            .into_iter()
            .map(|(flag_key, context_kind, context_key, variation)| {
                Ok(FlagOverride {
                    flag_key,
                    context_kind,
                    context_key,
                    variation: override_variation(variation)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let cursor: i64 =
            sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM changes WHERE env = $1")
                .bind(env)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let segments = items.pop().unwrap_or_default();
        let flags = items.pop().unwrap_or_default();
        Ok(EnvSnapshot {
            env: env.to_owned(),
            flags: flags.into_iter().map(Item::into_flag).collect(),
            segments: segments.into_iter().map(Item::into_segment).collect(),
            killed,
            overrides,
            cursor: to_u64(cursor, "change seq")?,
        })
    }

    async fn changes_since(&self, env: &str, cursor: u64) -> Result<Vec<Change>, StoreError> {
        check_env(env)?;
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT seq, env, key, version, kind FROM changes \
             WHERE env = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(env)
        .bind(to_i64(cursor))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        if rows.is_empty() && !env_exists(&self.pool, env).await? {
            return Err(env_not_found(env));
        }
        rows.into_iter().map(change_from_row).collect()
    }

    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, StoreError> {
        Ok(Box::new(PgSubscription::start(self.pool.clone()).await?))
    }
}

#[async_trait::async_trait]
impl KeyStore for PostgresStore {
    async fn create_api_key(
        &self,
        actor: &Actor,
        new: &NewApiKey,
    ) -> Result<CreatedApiKey, StoreError> {
        check_new_api_key(new)?;
        let mut entropy = [0u8; 32];
        getrandom::fill(&mut entropy).map_err(|e| {
            StoreError::internal(format!("the operating system gave no random bytes: {e}"))
        })?;
        let secret = generate_secret(new.kind, &entropy);
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(env) = &new.env
            && !env_exists(&mut *tx, env).await?
        {
            return Err(env_not_found(env));
        }
        let row: KeyRow = sqlx::query_as(&format!(
            "INSERT INTO api_keys (name, kind, env, secret_sha256) VALUES ($1, $2, $3, $4) \
             RETURNING {KEY_COLUMNS}"
        ))
        .bind(&new.name)
        .bind(new.kind.as_str())
        .bind(new.env.as_deref())
        .bind(hash_secret(&secret))
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let key = key_from_row(row)?;
        let id = key.id.to_string();
        let audit = Audit {
            env: key.env.as_deref(),
            item_kind: AuditItemKind::ApiKey,
            item_key: &id,
            action: AuditAction::Create,
            actor,
        };
        audit.write(&mut tx, None, key_json(&key)).await?;
        tx.commit().await.map_err(db)?;
        Ok(CreatedApiKey { key, secret })
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<KeyRow> =
            sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter().map(key_from_row).collect()
    }

    async fn revoke_api_key(&self, actor: &Actor, id: u64) -> Result<ApiKey, StoreError> {
        let not_found = || StoreError::not_found(format!("API key {id}"));
        let id_i64 = i64::try_from(id).map_err(|_| not_found())?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE"
        ))
        .bind(id_i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let key = key_from_row(row.ok_or_else(not_found)?)?;
        if key.revoked {
            return Ok(key);
        }
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
            .bind(id_i64)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let revoked = ApiKey {
            revoked: true,
            ..key.clone()
        };
        let item_key = id.to_string();
        let audit = Audit {
            env: key.env.as_deref(),
            item_kind: AuditItemKind::ApiKey,
            item_key: &item_key,
            action: AuditAction::Revoke,
            actor,
        };
        audit
            .write(&mut tx, key_json(&key), key_json(&revoked))
            .await?;
        tx.commit().await.map_err(db)?;
        Ok(revoked)
    }

    async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_sha256 = $1 AND revoked_at IS NULL"
        ))
        .bind(hash_secret(secret))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(key_from_row).transpose()
    }
}

async fn current_override(
    conn: &mut PgConnection,
    env: &str,
    key: &OverrideKey,
) -> Result<Option<usize>, StoreError> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT variation FROM overrides \
         WHERE env = $1 AND flag_key = $2 AND context_kind = $3 AND context_key = $4",
    )
    .bind(env)
    .bind(&key.flag_key)
    .bind(&key.context_kind)
    .bind(&key.context_key)
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    found.map(override_variation).transpose()
}

/// A stored override variation as an index; the column's check keeps it non-negative.
fn override_variation(variation: i32) -> Result<usize, StoreError> {
    usize::try_from(variation)
        .map_err(|_| corrupt(format!("negative override variation {variation}")))
}

/// Fetches one change by seq (for notifications too large to carry it).
async fn change_by_seq(pool: &PgPool, seq: u64) -> Result<Option<Change>, StoreError> {
    let row: Option<ChangeRow> =
        sqlx::query_as("SELECT seq, env, key, version, kind FROM changes WHERE seq = $1")
            .bind(to_i64(seq))
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    row.map(change_from_row).transpose()
}

#[cfg(test)]
mod tests {
    use super::{PostgresConfig, redact_url};

    #[test]
    fn urls_lose_their_passwords() {
        for (url, shown) in [
            (
                "postgres://user:s3cret@db.example:5432/flags",
                "postgres://user:***@db.example:5432/flags",
            ),
            (
                "postgresql://user:p%40ss@host/db?sslmode=require",
                "postgresql://user:***@host/db?sslmode=require",
            ),
            ("postgres://us:er:x@y@host", "postgres://us:***@host"),
            (
                "postgres://host/db?user=u&password=s3cret&sslmode=disable",
                "postgres://host/db?user=u&password=***&sslmode=disable",
            ),
            ("postgres://user@host/db", "postgres://user@host/db"),
            ("postgres://host", "postgres://host"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let config = PostgresConfig::new("postgres://user:s3cret@host/db");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("postgres://user:***@host/db"), "{debug}");
    }
}
