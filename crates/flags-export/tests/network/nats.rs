//! The NATS JetStream exporter.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use flags_events::Record;
use flags_export::{Exporter, NatsExporter, NatsSettings};
use flags_test_support::nats;
use futures_util::StreamExt;

use crate::records::{batch, retryable, unique};

/// Settings for a stream and subject of this test's own.
fn settings() -> NatsSettings {
    let name = unique("FLAGD_TEST");
    NatsSettings {
        subject: format!("flagd.test.{name}"),
        stream: name,
        ..NatsSettings::new(nats().url())
    }
}

async fn context() -> jetstream::Context {
    jetstream::new(async_nats::connect(nats().url()).await.unwrap())
}

/// Every message of `stream`, read by a consumer from the first: (Nats-Msg-Id, payload).
/// Deletes the stream afterwards.
async fn messages(stream: &str) -> Vec<(String, Vec<u8>)> {
    let context = context().await;
    let handle = context.get_stream(stream).await.unwrap();
    let stored = handle.get_info().await.unwrap().state.messages;
    let consumer: consumer::PullConsumer = handle
        .create_consumer(consumer::pull::Config::default())
        .await
        .unwrap();
    let mut batch = consumer
        .batch()
        .max_messages(usize::try_from(stored).unwrap() + 10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        let id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Msg-Id"))
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        seen.push((id, message.payload.to_vec()));
        message.ack().await.unwrap();
    }
    context.delete_stream(stream).await.unwrap();
    seen
}

#[tokio::test]
async fn a_batch_round_trips_through_the_stream_field_by_field() {
    let settings = settings();
    let stream = settings.stream.clone();
    let exporter = NatsExporter::new(settings).await.unwrap();
    assert!(!exporter.is_bulk());
    let records = batch();
    exporter.export(&records[..4]).await.unwrap();
    exporter.export(&records[4..]).await.unwrap();
    exporter.export(&[]).await.unwrap();
    exporter.close().await.unwrap();

    let messages = messages(&stream).await;
    assert_eq!(messages.len(), records.len());
    for ((_, payload), record) in messages.iter().zip(&records) {
        let read_back: Record = serde_json::from_slice(payload).unwrap();
        assert_eq!(&read_back, record);
    }
    let mut ids: Vec<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert!(ids.iter().all(|id| !id.is_empty()));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        records.len(),
        "every message has an id of its own"
    );
}

/// What the scheduler does after an ack it never got: offer the same batch again. JetStream
/// keeps one copy of each record.
#[tokio::test]
async fn a_batch_offered_again_is_stored_once() {
    let settings = settings();
    let stream = settings.stream.clone();
    let exporter = NatsExporter::new(settings).await.unwrap();
    let records = batch();
    exporter.export(&records[..3]).await.unwrap();
    exporter.export(&records).await.unwrap();
    exporter.export(&records).await.unwrap();
    let read_back: Vec<Record> = messages(&stream)
        .await
        .iter()
        .map(|(_, payload)| serde_json::from_slice(payload).unwrap())
        .collect();
    // The first three went out in a batch of their own, so the full batch's ids differ from
    // theirs: they are there twice. The full batch, offered twice, is there once.
    let mut expected = records[..3].to_vec();
    expected.extend(records);
    assert_eq!(read_back, expected);
}

#[tokio::test]
async fn a_stream_that_went_away_is_retryable_and_a_missing_one_permanent_at_start() {
    let settings = settings();
    let stream = settings.stream.clone();
    let exporter = NatsExporter::new(NatsSettings {
        timeout_ms: 1_000,
        ..settings.clone()
    })
    .await
    .unwrap();
    context().await.delete_stream(&stream).await.unwrap();
    let outcome = exporter.export(&batch()).await;
    assert_eq!(retryable(&outcome), Some(true), "{outcome:?}");

    let missing = NatsExporter::new(NatsSettings {
        create_stream: false,
        ..settings
    })
    .await;
    assert_eq!(missing.err().map(|e| e.is_retryable()), Some(false));
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    let unreachable = NatsExporter::new(NatsSettings {
        timeout_ms: 1_000,
        ..NatsSettings::new("nats://127.0.0.1:1")
    })
    .await;
    assert_eq!(unreachable.err().map(|e| e.is_retryable()), Some(true));
}
