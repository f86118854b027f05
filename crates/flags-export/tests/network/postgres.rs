//! The PostgreSQL exporter.

use flags_events::Record;
use flags_export::{Exporter, PostgresExporter, PostgresSettings};
use flags_test_support::{PgCluster, postgres};
use serde_json::Value;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Row};

use crate::records::{batch, retryable, unique};

fn settings(url: &str, table: &str) -> PostgresSettings {
    PostgresSettings {
        table: table.to_owned(),
        ..PostgresSettings::new(url)
    }
}

/// The rows of `table`, in insertion order, with dates back in Unix milliseconds.
async fn rows(url: &str, table: &str) -> Vec<PgRow> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let rows = sqlx::query(&format!(
        "SELECT kind, \
                (extract(epoch FROM creation_date) * 1000)::int8 AS creation_ms, \
                (extract(epoch FROM start_date) * 1000)::int8 AS start_ms, \
                key, context_kind, user_key, variation, version, value, default_served, \
                default_value, count, context_kinds, data, metric, api, source, record \
         FROM {table} ORDER BY id"
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    rows
}

/// What each typed column must hold for `record`: (column, value as JSON), NULL as `null`.
fn expected_columns(record: &Record) -> Vec<(&'static str, Value)> {
    use serde_json::json;
    let null = Value::Null;
    let ms = |ms: u64| json!(ms);
    match record {
        Record::Feature(r) => vec![
            ("kind", json!("feature")),
            ("creation_ms", ms(r.creation_date)),
            ("start_ms", null),
            ("key", json!(r.key)),
            ("context_kind", json!(r.context_kind)),
            ("user_key", json!(r.user_key)),
            ("variation", written(record, "variation")),
            ("version", written(record, "version")),
            ("value", r.value.clone()),
            ("default_served", json!(r.default)),
            ("default_value", Value::Null),
            ("count", Value::Null),
            ("context_kinds", Value::Null),
            ("data", Value::Null),
            ("metric", Value::Null),
            ("api", Value::Null),
            ("source", json!(r.source)),
        ],
        Record::Custom(r) => vec![
            ("kind", json!("custom")),
            ("creation_ms", ms(r.creation_date)),
            ("start_ms", null),
            ("key", json!(r.key)),
            ("context_kind", json!(r.context_kind)),
            ("user_key", json!(r.user_key)),
            ("variation", Value::Null),
            ("version", Value::Null),
            ("value", json!(r.value)),
            ("default_served", Value::Null),
            ("default_value", Value::Null),
            ("count", Value::Null),
            ("context_kinds", Value::Null),
            ("data", r.data.clone().unwrap_or(Value::Null)),
            ("metric", Value::Null),
            ("api", Value::Null),
            ("source", json!(r.source)),
        ],
        Record::Summary(r) => vec![
            ("kind", json!("summary")),
            ("creation_ms", ms(r.creation_date)),
            ("start_ms", ms(r.start_date)),
            ("key", json!(r.key)),
            ("context_kind", Value::Null),
            ("user_key", Value::Null),
            ("variation", written(record, "variation")),
            ("version", written(record, "version")),
            ("value", r.value.clone()),
            ("default_served", Value::Null),
            ("default_value", r.default.clone()),
            ("count", json!(r.count)),
            ("context_kinds", json!(r.context_kinds)),
            ("data", Value::Null),
            ("metric", Value::Null),
            ("api", Value::Null),
            ("source", json!(r.source)),
        ],
        Record::Metrics(r) => vec![
            ("kind", json!("metrics")),
            ("creation_ms", ms(r.creation_date)),
            ("start_ms", null),
            ("key", Value::Null),
            ("context_kind", Value::Null),
            ("user_key", Value::Null),
            ("variation", Value::Null),
            ("version", Value::Null),
            ("value", json!(r.value)),
            ("default_served", Value::Null),
            ("default_value", Value::Null),
            ("count", Value::Null),
            ("context_kinds", Value::Null),
            ("data", Value::Null),
            ("metric", json!(r.metric)),
            ("api", json!(r.api)),
            ("source", json!(r.source)),
        ],
        other => panic!("a kind this test does not know: {other:?}"),
    }
}

/// Field `name` of `record` as its JSON has it (`variation` and `version` are text there).
fn written(record: &Record, name: &str) -> Value {
    serde_json::to_value(record).unwrap()[name].clone()
}

/// Column `name` of `row` as JSON, whatever its SQL type.
fn column(row: &PgRow, name: &str) -> Value {
    let text = |v: Option<String>| v.map_or(Value::Null, Value::from);
    match name {
        "creation_ms" | "start_ms" | "count" => row
            .get::<Option<i64>, _>(name)
            .map_or(Value::Null, Value::from),
        "default_served" => row
            .get::<Option<bool>, _>(name)
            .map_or(Value::Null, Value::from),
        "value" | "default_value" | "data" => {
            row.get::<Option<Value>, _>(name).unwrap_or(Value::Null)
        }
        "context_kinds" => row
            .get::<Option<Vec<String>>, _>(name)
            .map_or(Value::Null, Value::from),
        _ => text(row.get::<Option<String>, _>(name)),
    }
}

#[tokio::test]
async fn a_batch_round_trips_through_the_table_field_by_field() {
    let db = postgres().create_database();
    let table = unique("events");
    let exporter = PostgresExporter::new(settings(db.url(), &table))
        .await
        .unwrap();
    assert!(exporter.is_bulk());
    let name = exporter.name();
    assert!(name.starts_with("postgres:postgres://"), "{name}");
    assert!(name.ends_with(&format!("/{}/{table}", db.name())), "{name}");
    assert!(!name.contains('@'), "no user information: {name}");
    let records = batch();
    exporter.export(&records).await.unwrap();
    exporter.close().await.unwrap();

    let rows = rows(db.url(), &table).await;
    assert_eq!(rows.len(), records.len());
    for (row, record) in rows.iter().zip(&records) {
        for (name, expected) in expected_columns(record) {
            assert_eq!(column(row, name), expected, "column {name} of {record:?}");
        }
        let whole: Value = row.get("record");
        let read_back: Record = serde_json::from_value(whole).unwrap();
        assert_eq!(&read_back, record);
    }
}

#[tokio::test]
async fn batches_append_and_a_schema_qualified_table_is_created_there() {
    let db = postgres().create_database();
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("CREATE SCHEMA analytics")
        .execute(&mut conn)
        .await
        .unwrap();
    let exporter = PostgresExporter::new(settings(db.url(), "analytics.flag_events"))
        .await
        .unwrap();
    let records = batch();
    exporter.export(&records[..3]).await.unwrap();
    exporter.export(&records[3..]).await.unwrap();
    exporter.export(&[]).await.unwrap();
    let rows = rows(db.url(), "analytics.flag_events").await;
    let read_back: Vec<Record> = rows
        .iter()
        .map(|row| serde_json::from_value(row.get("record")).unwrap())
        .collect();
    assert_eq!(read_back, records);
    let registered: Vec<(String, String)> =
        sqlx::query_as("SELECT schema_name, table_name FROM flagd_export.event_tables")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        registered,
        [("analytics".to_owned(), "flag_events".to_owned())]
    );
}

/// flagd's store keeps its sqlx migrations in `public._sqlx_migrations`, versions from 1 up, as
/// this stand-in does. Both sets must apply in either order, again and again, in one database.
#[tokio::test]
async fn the_exporter_s_migrations_live_apart_from_another_migrator_s() {
    let db = postgres().create_database();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("0001_store.sql"),
        "CREATE TABLE store_items (id int);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("0002_more.sql"),
        "ALTER TABLE store_items ADD COLUMN name text;",
    )
    .unwrap();
    let store = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    store.run(&mut conn).await.unwrap();

    let first = PostgresExporter::new(settings(db.url(), "one"))
        .await
        .unwrap();
    store.run(&mut conn).await.unwrap();
    let second = PostgresExporter::new(settings(db.url(), "two"))
        .await
        .unwrap();
    let again = PostgresExporter::new(settings(db.url(), "one"))
        .await
        .unwrap();
    store.run(&mut conn).await.unwrap();

    let versions = "SELECT version FROM _sqlx_migrations ORDER BY version";
    let public = versions.replace("_sqlx", "public._sqlx");
    let own = versions.replace("_sqlx", "flagd_export._sqlx");
    let numbers = |query| sqlx::query_scalar::<_, i64>(query);
    assert_eq!(numbers(&public).fetch_all(&mut conn).await.unwrap(), [1, 2]);
    assert_eq!(numbers(&own).fetch_all(&mut conn).await.unwrap(), [1]);
    for exporter in [&first, &second, &again] {
        exporter.export(&batch()[..1]).await.unwrap();
    }
    let one = numbers("SELECT count(*) FROM one").fetch_one(&mut conn);
    assert_eq!(one.await.unwrap(), 2);
    let two = numbers("SELECT count(*) FROM two").fetch_one(&mut conn);
    assert_eq!(two.await.unwrap(), 1);
}

#[tokio::test]
async fn a_record_postgres_refuses_fails_the_whole_batch_permanently() {
    let db = postgres().create_database();
    let table = unique("events");
    let exporter = PostgresExporter::new(settings(db.url(), &table))
        .await
        .unwrap();
    let mut records = batch();
    // PostgreSQL's text and jsonb cannot hold U+0000.
    if let Record::Custom(custom) = &mut records[3] {
        custom.key = "nul\u{0}here".to_owned();
    }
    let outcome = exporter.export(&records).await;
    assert_eq!(retryable(&outcome), Some(false), "{outcome:?}");
    assert!(
        rows(db.url(), &table).await.is_empty(),
        "nothing of the batch is stored"
    );
}

#[tokio::test]
async fn invalid_settings_are_permanent_and_an_unreachable_database_retryable() {
    let bad_table = PostgresExporter::new(settings(postgres().url(), "x; DROP TABLE y")).await;
    assert_eq!(bad_table.err().map(|e| e.is_retryable()), Some(false));
    let bad_url = PostgresExporter::new(settings("mysql://h/db", "t")).await;
    assert_eq!(bad_url.err().map(|e| e.is_retryable()), Some(false));
    let nobody = PostgresSettings {
        timeout_ms: 2_000,
        ..settings("postgres://postgres@127.0.0.1:1/postgres", "t")
    };
    let unreachable = PostgresExporter::new(nobody).await;
    assert_eq!(unreachable.err().map(|e| e.is_retryable()), Some(true));
}

#[tokio::test]
async fn a_batch_sent_while_the_server_is_down_is_retryable_and_goes_through_after() {
    let cluster = PgCluster::start_new();
    let url = cluster.url();
    let exporter = PostgresExporter::new(PostgresSettings {
        timeout_ms: 2_000,
        ..settings(&url, "events")
    })
    .await
    .unwrap();
    let records = batch();
    exporter.export(&records[..2]).await.unwrap();
    cluster.stop();
    let outcome = exporter.export(&records[2..]).await;
    assert_eq!(retryable(&outcome), Some(true), "{outcome:?}");
    cluster.start();
    // The pool replaces its broken connections on the next attempts.
    let mut delivered = false;
    for _ in 0..10 {
        match exporter.export(&records[2..]).await {
            Ok(()) => {
                delivered = true;
                break;
            }
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(delivered);
    let read_back: Vec<Record> = rows(&url, "events")
        .await
        .iter()
        .map(|row| serde_json::from_value(row.get("record")).unwrap())
        .collect();
    assert_eq!(read_back, records);
}
