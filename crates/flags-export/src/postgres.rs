//! The PostgreSQL exporter: each batch is one multi-row `INSERT` into an events table.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use flags_events::Record;
use serde::Deserialize;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use sqlx::migrate::Migrator;

use crate::endpoint::without_credentials;
use crate::exporter::{ExportError, Exporter};

/// Settings of the PostgreSQL exporter (`kind: postgres` in `events.exporters`).
///
/// ```yaml
/// events:
///   exporters:
///     - kind: postgres
///       url: postgres://flagd@db.internal:5432/analytics
///       table: flagd_events
/// ```
///
/// At start the exporter applies its migrations, in the schema `flagd_export` (which it
/// creates, so its user needs the `CREATE` privilege on the database), and creates the table
/// when it does not exist. The table has a column for each common field (`kind`,
/// `creation_date` as `timestamptz`, `key`, `context_kind`, `user_key`, `variation`,
/// `version`, `value`, `default_served`, `default_value`, `count`, `context_kinds`, `data`,
/// `metric`, `api`, `source`) and the whole record as `record jsonb`. PostgreSQL refuses text
/// with a NUL character, so a batch with one fails as a permanent error.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// The database to write to, as a `postgres://` URL. Required.
    pub url: String,
    /// The events table: a name (`flagd_events`, created in the connection's current schema,
    /// usually `public`) or `schema.name`. Letters, digits and `_` only. Default
    /// `flagd_events`.
    #[serde(default = "default_table")]
    pub table: String,
    /// Connections kept open. Default 2: one batch is written at a time, and one more lets a
    /// new batch start while a broken connection is replaced.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long connecting, and then each batch's `INSERT`, may take before the attempt fails
    /// as retryable, in milliseconds. Default 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl PostgresSettings {
    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> PostgresSettings {
        PostgresSettings {
            url: url.into(),
            table: default_table(),
            max_connections: default_max_connections(),
            timeout_ms: default_timeout_ms(),
        }
    }

    /// The [`Exporter::name`] of the exporter these settings build, known before it connects:
    /// `postgres:` and the URL without credentials, then `/` and the table as configured.
    pub fn name(&self) -> String {
        format!("postgres:{}/{}", without_credentials(&self.url), self.table)
    }
}

// By hand, so the URL's password never reaches a log.
impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &without_credentials(&self.url))
            .field("table", &self.table)
            .field("max_connections", &self.max_connections)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Writes batches of records into a PostgreSQL table.
#[derive(Debug)]
pub struct PostgresExporter {
    name: String,
    pool: PgPool,
    /// `INSERT INTO "schema"."table" ...`, built once from the validated name.
    insert: String,
    timeout: Duration,
}

impl PostgresExporter {
    /// Connects, applies the exporter's migrations and creates the table if needed.
    ///
    /// Invalid settings and a database that refuses the migrations are
    /// [`ExportError::Permanent`]; a database that cannot be reached is
    /// [`ExportError::Retryable`].
    pub async fn new(settings: PostgresSettings) -> Result<PostgresExporter, ExportError> {
        let (schema, table) = parse_table(&settings.table)?;
        let invalid_url = |why: &dyn fmt::Display| {
            ExportError::Permanent(format!(
                "postgres exporter: invalid url {}: {why}",
                without_credentials(&settings.url)
            ))
        };
        // sqlx reads any scheme as PostgreSQL's; another database's URL is a mistake.
        if !["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| settings.url.starts_with(scheme))
        {
            return Err(invalid_url(&"not a postgres:// URL"));
        }
        let options = PgConnectOptions::from_str(&settings.url).map_err(|e| invalid_url(&e))?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        migrate(&options, timeout).await?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(|e| classify("connecting", &e))?;
        // An unqualified table is pinned to the schema it is created in, so later changes of
        // the search path cannot send rows elsewhere.
        let schema: String = match schema {
            Some(schema) => schema.to_owned(),
            None => sqlx::query_scalar("SELECT current_schema()")
                .fetch_optional(&pool)
                .await
                .map_err(|e| classify("reading the current schema", &e))?
                .flatten()
                .ok_or_else(|| {
                    ExportError::Permanent(
                        "postgres exporter: the connection has no current schema; name the \
                         table as schema.table"
                            .to_owned(),
                    )
                })?,
        };
        sqlx::query("SELECT flagd_export.create_event_table($1, $2)")
            .bind(&schema)
            .bind(table)
            .execute(&pool)
            .await
            .map_err(|e| classify("creating the events table", &e))?;
        let target = format!("{}.{}", quote(&schema), quote(table));
        Ok(PostgresExporter {
            name: settings.name(),
            pool,
            insert: insert_statement(&target),
            timeout,
        })
    }
}

#[async_trait]
impl Exporter for PostgresExporter {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_bulk(&self) -> bool {
        true
    }

    /// One `INSERT ... SELECT FROM UNNEST(...)` per batch: a single statement, so PostgreSQL
    /// runs it in one transaction and stores every row or none, and it binds one array per
    /// column, so no batch is too large for the protocol's 65535 parameters.
    async fn export(&self, records: &[Record]) -> Result<(), ExportError> {
        if records.is_empty() {
            return Ok(());
        }
        let rows = Rows::of(records)?;
        let query = sqlx::query(&self.insert)
            .bind(rows.kind)
            .bind(rows.creation_ms)
            .bind(rows.start_ms)
            .bind(rows.key)
            .bind(rows.context_kind)
            .bind(rows.user_key)
            .bind(rows.variation)
            .bind(rows.version)
            .bind(rows.value)
            .bind(rows.default_served)
            .bind(rows.default_value)
            .bind(rows.count)
            .bind(rows.context_kinds)
            .bind(rows.data)
            .bind(rows.metric)
            .bind(rows.api)
            .bind(rows.source)
            .bind(rows.record);
        match tokio::time::timeout(self.timeout, query.execute(&self.pool)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify("inserting", &e)),
            // The statement may still commit after this; a retry then stores the batch twice,
            // which is the price of not waiting forever on a stuck server.
            Err(_) => Err(ExportError::Retryable(format!(
                "postgres exporter: inserting {} records took longer than {:?}",
                records.len(),
                self.timeout
            ))),
        }
    }

    async fn close(&self) -> Result<(), ExportError> {
        self.pool.close().await;
        Ok(())
    }
}

/// The schema the exporter's own objects (migrations, the table-creating function) live in.
const SCHEMA: &str = "flagd_export";

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies the migrations on a connection of their own whose search path is [`SCHEMA`] alone.
///
/// sqlx 0.8 keeps its bookkeeping in an unqualified `_sqlx_migrations` table, the same name
/// flagd's store uses for its migrations. On this connection that name resolves to
/// `flagd_export._sqlx_migrations`, so the two sets never see each other's versions, even in
/// the same database.
async fn migrate(options: &PgConnectOptions, timeout: Duration) -> Result<(), ExportError> {
    let options = options.clone().options([("search_path", SCHEMA)]);
    let run = async {
        // A pool of one connection rather than a bare connection: sqlx's migrator over
        // `&mut PgConnection` makes a future that cannot be proven `Send`, over a pool it can.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(|e| classify("connecting", &e))?;
        let mut tx = pool.begin().await.map_err(|e| classify("migrating", &e))?;
        // `IF NOT EXISTS` alone still races when two replicas start together.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('flagd_export schema'))")
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("migrating", &e))?;
        sqlx::query("CREATE SCHEMA IF NOT EXISTS flagd_export")
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("creating schema flagd_export", &e))?;
        tx.commit().await.map_err(|e| classify("migrating", &e))?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => classify("migrating", &e),
            other => ExportError::Permanent(format!("postgres exporter: migrating: {other}")),
        })?;
        pool.close().await;
        Ok(())
    };
    // Migrations wait on an advisory lock another replica may hold, so they get a few
    // timeouts' worth of time.
    tokio::time::timeout(timeout * 6, run)
        .await
        .unwrap_or_else(|_| {
            Err(ExportError::Retryable(format!(
                "postgres exporter: migrating took longer than {:?}",
                timeout * 6
            )))
        })
}

/// One array per column, in the order of [`insert_statement`]'s parameters.
#[derive(Default)]
struct Rows {
    kind: Vec<&'static str>,
    creation_ms: Vec<i64>,
    start_ms: Vec<Option<i64>>,
    key: Vec<Option<String>>,
    context_kind: Vec<Option<String>>,
    user_key: Vec<Option<String>>,
    variation: Vec<Option<String>>,
    version: Vec<Option<String>>,
    value: Vec<Option<Value>>,
    default_served: Vec<Option<bool>>,
    default_value: Vec<Option<Value>>,
    count: Vec<Option<i64>>,
    /// JSON arrays of strings, turned into `text[]` by the statement (a parameter cannot be
    /// an array of arrays of different lengths).
    context_kinds: Vec<Option<Value>>,
    data: Vec<Option<Value>>,
    metric: Vec<Option<String>>,
    api: Vec<Option<String>>,
    source: Vec<String>,
    record: Vec<Value>,
}

impl Rows {
    fn of(records: &[Record]) -> Result<Rows, ExportError> {
        let mut rows = Rows::default();
        for record in records {
            rows.push(record)?;
        }
        Ok(rows)
    }

    fn push(&mut self, record: &Record) -> Result<(), ExportError> {
        let whole = serde_json::to_value(record).map_err(|e| {
            ExportError::Permanent(format!("postgres exporter: cannot encode a record: {e}"))
        })?;
        self.kind.push(record.kind());
        self.creation_ms.push(millis(record.creation_date())?);
        self.record.push(whole);
        // Each kind fills its own columns; the others stay NULL.
        let mut row = Row::default();
        match record {
            Record::Feature(r) => {
                row.key = Some(r.key.clone());
                row.context_kind = Some(r.context_kind.to_string());
                row.user_key = Some(r.user_key.clone());
                row.variation = Some(variation_text(r.variation));
                row.version = Some(version_text(r.version));
                row.value = Some(r.value.clone());
                row.default_served = Some(r.default);
                row.source = r.source.to_string();
            }
            Record::Custom(r) => {
                row.key = Some(r.key.clone());
                row.context_kind = Some(r.context_kind.to_string());
                row.user_key = Some(r.user_key.clone());
                row.value = r.value.map(Value::from);
                row.data.clone_from(&r.data);
                row.source = r.source.to_string();
            }
            Record::Summary(r) => {
                row.start_ms = Some(millis(r.start_date)?);
                row.key = Some(r.key.clone());
                row.variation = Some(variation_text(r.variation));
                row.version = Some(version_text(r.version));
                row.value = Some(r.value.clone());
                row.default_value = Some(r.default.clone());
                row.count = Some(i64::try_from(r.count).map_err(|_| {
                    ExportError::Permanent(format!(
                        "postgres exporter: count {} does not fit a bigint",
                        r.count
                    ))
                })?);
                row.context_kinds = Some(Value::from(r.context_kinds.clone()));
                row.source = r.source.to_string();
            }
            Record::Metrics(r) => {
                row.metric = Some(r.metric.clone());
                row.api = Some(r.api.clone());
                row.value = Some(Value::from(r.value));
                row.source = r.source.to_string();
            }
            // `Record` is non-exhaustive: a kind added later is still stored whole in `record`.
            _ => {}
        }
        self.start_ms.push(row.start_ms);
        self.key.push(row.key);
        self.context_kind.push(row.context_kind);
        self.user_key.push(row.user_key);
        self.variation.push(row.variation);
        self.version.push(row.version);
        self.value.push(row.value);
        self.default_served.push(row.default_served);
        self.default_value.push(row.default_value);
        self.count.push(row.count);
        self.context_kinds.push(row.context_kinds);
        self.data.push(row.data);
        self.metric.push(row.metric);
        self.api.push(row.api);
        self.source.push(row.source);
        Ok(())
    }
}

/// The typed columns of one record, before they go into [`Rows`]' arrays.
#[derive(Default)]
struct Row {
    start_ms: Option<i64>,
    key: Option<String>,
    context_kind: Option<String>,
    user_key: Option<String>,
    variation: Option<String>,
    version: Option<String>,
    value: Option<Value>,
    default_served: Option<bool>,
    default_value: Option<Value>,
    count: Option<i64>,
    context_kinds: Option<Value>,
    data: Option<Value>,
    metric: Option<String>,
    api: Option<String>,
    source: String,
}

/// The `variation` column as the record's JSON has it: the index, or `SdkDefault`.
fn variation_text(variation: Option<usize>) -> String {
    variation.map_or_else(|| flags_events::SDK_DEFAULT.to_owned(), |v| v.to_string())
}

/// The `version` column as the record's JSON has it: the number, or empty.
fn version_text(version: Option<u64>) -> String {
    version.map(|v| v.to_string()).unwrap_or_default()
}

fn millis(ms: u64) -> Result<i64, ExportError> {
    i64::try_from(ms).map_err(|_| {
        ExportError::Permanent(format!(
            "postgres exporter: date {ms} ms is beyond what PostgreSQL can store"
        ))
    })
}

/// The batch insert into `target` (already quoted): the arrays are zipped by `UNNEST`, the
/// millisecond dates become `timestamptz`, and the JSON lists of context kinds `text[]`.
fn insert_statement(target: &str) -> String {
    format!(
        "INSERT INTO {target} (kind, creation_date, start_date, key, context_kind, user_key, \
         variation, version, value, default_served, default_value, count, context_kinds, data, \
         metric, api, source, record) \
         SELECT kind, \
                timestamptz 'epoch' + creation_ms * interval '1 millisecond', \
                timestamptz 'epoch' + start_ms * interval '1 millisecond', \
                key, context_kind, user_key, variation, version, value, default_served, \
                default_value, count, \
                CASE WHEN context_kinds IS NULL THEN NULL \
                     ELSE ARRAY(SELECT jsonb_array_elements_text(context_kinds)) END, \
                data, metric, api, source, record \
         FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::jsonb[], $10::bool[], $11::jsonb[], $12::int8[], \
                     $13::jsonb[], $14::jsonb[], $15::text[], $16::text[], $17::text[], \
                     $18::jsonb[]) \
              AS r(kind, creation_ms, start_ms, key, context_kind, user_key, variation, version, \
                   value, default_served, default_value, count, context_kinds, data, metric, api, \
                   source, record)"
    )
}

/// Splits `table` into an optional schema and a name, refusing anything but plain
/// identifiers: the name is spliced into SQL, so it must never carry SQL of its own.
fn parse_table(table: &str) -> Result<(Option<&str>, &str), ExportError> {
    let (schema, name) = match table.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    };
    let valid = |ident: &str| {
        let mut chars = ident.chars();
        ident.len() <= 63
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if schema.is_some_and(|s| !valid(s)) || !valid(name) {
        return Err(ExportError::Permanent(format!(
            "postgres exporter: table {table:?} is not `name` or `schema.name` made of letters, \
             digits and `_` (at most 63 each)"
        )));
    }
    Ok((schema, name))
}

/// `ident` as a quoted SQL identifier; [`parse_table`] has already refused quotes.
fn quote(ident: &str) -> String {
    format!("\"{ident}\"")
}

/// Sorts a database error by what the scheduler can do about it: a database that is down,
/// restarting, overloaded or in a conflict a retry resolves is worth another try; data it
/// refuses (class 22), a broken constraint (23) and a missing table or privilege (42) are not.
fn classify(doing: &str, e: &sqlx::Error) -> ExportError {
    let message = format!("postgres exporter: {doing}: {e}");
    let retryable = match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exceptions; 53: insufficient resources; 57P: shutting down or
        // restarting; 58: system errors (I/O); 40: serialization failures and deadlocks;
        // 55P03: a lock not available; 28: the login was refused (the password may be rotated
        // by then); 3D000: the database does not exist yet.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["08", "53", "57", "58", "40", "28"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "55P03"
                || code == "3D000"
        }),
        _ => false,
    };
    if retryable {
        ExportError::Retryable(message)
    } else {
        ExportError::Permanent(message)
    }
}

fn default_table() -> String {
    "flagd_events".to_owned()
}

fn default_max_connections() -> u32 {
    2
}

fn default_timeout_ms() -> u64 {
    10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        let cases = [
            ("flagd_events", Some((None, "flagd_events"))),
            ("analytics.events", Some((Some("analytics"), "events"))),
            ("_t1", Some((None, "_t1"))),
            ("Events", Some((None, "Events"))),
            ("1events", None),
            ("events; DROP TABLE x", None),
            ("a.b.c", None),
            ("\"quoted\"", None),
            ("", None),
            (".events", None),
        ];
        for (table, expected) in cases {
            assert_eq!(parse_table(table).ok(), expected, "{table}");
        }
        let long = "x".repeat(64);
        assert!(parse_table(&long).is_err());
    }

    #[test]
    fn settings_take_defaults_and_refuse_unknown_fields() {
        let settings: PostgresSettings =
            serde_json::from_str(r#"{"url":"postgres://u:pw@db/x"}"#).unwrap();
        assert_eq!(settings.table, "flagd_events");
        assert_eq!(settings.max_connections, 2);
        assert_eq!(settings.timeout_ms, 10_000);
        let debug = format!("{settings:?}");
        assert!(!debug.contains("pw"), "{debug}");
        assert_eq!(settings.name(), "postgres:postgres://db/x/flagd_events");
        let unknown = serde_json::from_str::<PostgresSettings>(r#"{"url":"x","tabel":"t"}"#);
        assert!(unknown.is_err());
    }
}
