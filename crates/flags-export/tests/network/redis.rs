//! The Redis stream exporter.

use flags_events::Record;
use flags_export::{Exporter, RedisExporter, RedisSettings};
use flags_test_support::redis;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use crate::records::{batch, many, retryable, unique};

fn settings(stream: &str) -> RedisSettings {
    RedisSettings {
        stream: stream.to_owned(),
        ..RedisSettings::new(redis().url())
    }
}

async fn connection() -> MultiplexedConnection {
    ::redis::Client::open(redis().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every entry of `stream`, oldest first: its fields as (name, value) pairs.
async fn entries(stream: &str) -> Vec<Vec<(String, String)>> {
    let mut conn = connection().await;
    let raw: Vec<(String, Vec<(String, String)>)> = ::redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = conn.del(stream).await.unwrap();
    raw.into_iter().map(|(_id, fields)| fields).collect()
}

#[tokio::test]
async fn a_batch_round_trips_through_the_stream_field_by_field() {
    let stream = unique("flagd:events:test");
    let exporter = RedisExporter::new(settings(&stream)).await.unwrap();
    assert!(!exporter.is_bulk());
    let records = batch();
    exporter.export(&records[..5]).await.unwrap();
    exporter.export(&records[5..]).await.unwrap();
    exporter.export(&[]).await.unwrap();
    exporter.close().await.unwrap();

    let entries = entries(&stream).await;
    assert_eq!(entries.len(), records.len());
    for (fields, record) in entries.iter().zip(&records) {
        let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["kind", "record"]);
        assert_eq!(fields[0].1, record.kind());
        let read_back: Record = serde_json::from_str(&fields[1].1).unwrap();
        assert_eq!(&read_back, record);
    }
}

#[tokio::test]
async fn the_stream_is_trimmed_near_max_len() {
    let stream = unique("flagd:events:trim");
    let exporter = RedisExporter::new(RedisSettings {
        max_len: Some(50),
        ..settings(&stream)
    })
    .await
    .unwrap();
    let records = many(1_000);
    for chunk in records.chunks(100) {
        exporter.export(chunk).await.unwrap();
    }
    let entries = entries(&stream).await;
    // `~` trims whole nodes of the stream's radix tree (100 entries by default), so some
    // more than 50 remain, and they are the newest.
    assert!(
        (50..=250).contains(&entries.len()),
        "{} entries",
        entries.len()
    );
    let last: Record = serde_json::from_str(&entries.last().unwrap()[1].1).unwrap();
    assert_eq!(&last, records.last().unwrap());
}

#[tokio::test]
async fn a_key_that_is_not_a_stream_is_permanent_and_gets_nothing() {
    let key = unique("flagd:events:string");
    let mut conn = connection().await;
    let _: () = conn.set(&key, "not a stream").await.unwrap();
    let exporter = RedisExporter::new(settings(&key)).await.unwrap();
    let outcome = exporter.export(&batch()).await;
    assert_eq!(retryable(&outcome), Some(false), "{outcome:?}");
    let still: String = conn.get(&key).await.unwrap();
    assert_eq!(still, "not a stream");
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn an_invalid_url_is_permanent_and_an_unreachable_server_retryable() {
    let invalid = RedisExporter::new(RedisSettings::new("http://not-redis")).await;
    assert_eq!(invalid.err().map(|e| e.is_retryable()), Some(false));
    let unreachable = RedisExporter::new(RedisSettings {
        timeout_ms: 2_000,
        ..RedisSettings::new("redis://127.0.0.1:1")
    })
    .await;
    assert_eq!(unreachable.err().map(|e| e.is_retryable()), Some(true));
}
