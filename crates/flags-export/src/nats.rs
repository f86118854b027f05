//! The NATS JetStream exporter: each record is one message, published with an acknowledgement.

use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, header};
use async_trait::async_trait;
use bytes::Bytes;
use flags_events::Record;
use serde::Deserialize;

use crate::endpoint::{sha256_hex, without_credentials};
use crate::exporter::{ExportError, Exporter};

/// Settings of the NATS JetStream exporter (`kind: nats` in `events.exporters`).
///
/// ```yaml
/// events:
///   exporters:
///     - kind: nats
///       url: nats://nats.internal:4222
///       subject: flagd.events
///       stream: FLAGD_EVENTS
/// ```
///
/// Each record is one message on `subject`, its payload the record as JSON. Each message has
/// a `Nats-Msg-Id` made of a digest of its batch and its place in it, so when the scheduler
/// offers a batch again after a failure, JetStream drops the messages it already stored
/// (within the stream's duplicate window, two minutes unless the stream says otherwise) and
/// every record is stored once. The flip side: a batch that is byte for byte the same as one
/// stored within the window is taken for a retry and dropped.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// The server, as `nats://[user:password@]host[:port]` (or several, separated by commas).
    /// Required.
    pub url: String,
    /// The subject messages are published on. Default `flagd.events`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The JetStream stream that must store them; a message that would land in another stream
    /// (or in none) is refused. Default `FLAGD_EVENTS`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Whether to create `stream`, capturing `subject`, when it does not exist. With `false`
    /// it must exist at start. Default `true`.
    #[serde(default = "default_create_stream")]
    pub create_stream: bool,
    /// How long connecting, and then each acknowledgement, may take before the attempt fails
    /// as retryable, in milliseconds. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl NatsSettings {
    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> NatsSettings {
        NatsSettings {
            url: url.into(),
            subject: default_subject(),
            stream: default_stream(),
            create_stream: default_create_stream(),
            timeout_ms: default_timeout_ms(),
        }
    }

    /// The [`Exporter::name`] of the exporter these settings build, known before it connects:
    /// `nats:` and the URL without credentials, then `/` and the subject.
    pub fn name(&self) -> String {
        format!("nats:{}/{}", without_credentials(&self.url), self.subject)
    }
}

// By hand, so the URL's password or token never reaches a log.
impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &without_credentials(&self.url))
            .field("subject", &self.subject)
            .field("stream", &self.stream)
            .field("create_stream", &self.create_stream)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Publishes records to a JetStream stream.
pub struct NatsExporter {
    name: String,
    subject: String,
    stream: String,
    client: async_nats::Client,
    jetstream: Context,
}

impl fmt::Debug for NatsExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsExporter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NatsExporter {
    /// Connects, and creates the stream when it is missing and `create_stream` allows.
    ///
    /// A server that cannot be reached is [`ExportError::Retryable`]; a missing stream that may
    /// not be created, or one that cannot be, is [`ExportError::Permanent`].
    pub async fn new(settings: NatsSettings) -> Result<NatsExporter, ExportError> {
        let shown = without_credentials(&settings.url);
        let timeout = Duration::from_millis(settings.timeout_ms);
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .connect(settings.url.as_str())
            .await
            .map_err(|e| {
                ExportError::Retryable(format!("nats exporter: connecting to {shown}: {e}"))
            })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client.clone());
        if settings.create_stream {
            let config = stream::Config {
                name: settings.stream.clone(),
                subjects: vec![settings.subject.clone()],
                ..stream::Config::default()
            };
            jetstream.get_or_create_stream(config).await.map_err(|e| {
                ExportError::Permanent(format!(
                    "nats exporter: cannot get or create stream {}: {e}",
                    settings.stream
                ))
            })?;
        } else {
            jetstream.get_stream(&settings.stream).await.map_err(|e| {
                ExportError::Permanent(format!(
                    "nats exporter: stream {} (create_stream is false): {e}",
                    settings.stream
                ))
            })?;
        }
        Ok(NatsExporter {
            name: settings.name(),
            subject: settings.subject,
            stream: settings.stream,
            client,
            jetstream,
        })
    }
}

#[async_trait]
impl Exporter for NatsExporter {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_bulk(&self) -> bool {
        false
    }

    /// Publishes every record, then awaits every acknowledgement: the messages go out
    /// back to back instead of one round trip each. A missing or late acknowledgement fails
    /// the batch as retryable, and the `Nats-Msg-Id`s make the retry store only what is
    /// missing.
    async fn export(&self, records: &[Record]) -> Result<(), ExportError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut payloads = Vec::with_capacity(records.len());
        for record in records {
            let mut json = Vec::with_capacity(256);
            record.write_json(&mut json);
            payloads.push(Bytes::from(json));
        }
        let batch = batch_id(&payloads);
        // A record over the server's limit would fail after the ones before it were sent;
        // checked first, the batch is refused whole.
        let max_payload = self.client.server_info().max_payload;
        if let Some(too_big) = payloads.iter().find(|p| p.len() > max_payload) {
            return Err(ExportError::Permanent(format!(
                "nats exporter: a record of {} bytes is over the server's max_payload of {max_payload}",
                too_big.len()
            )));
        }
        let mut acks = Vec::with_capacity(payloads.len());
        for (index, payload) in payloads.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_MESSAGE_ID, format!("{batch}-{index}").as_str());
            headers.insert(header::NATS_EXPECTED_STREAM, self.stream.as_str());
            let ack = self
                .jetstream
                .publish_with_headers(self.subject.clone(), headers, payload)
                .await
                .map_err(|e| classify(e.kind(), &e))?;
            acks.push(ack);
        }
        for ack in
            futures_util::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await
        {
            ack.map_err(|e| classify(e.kind(), &e))?;
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), ExportError> {
        self.client
            .flush()
            .await
            .map_err(|e| ExportError::Retryable(format!("nats exporter: flushing: {e}")))
    }
}

/// What the `Nats-Msg-Id`s of a batch start with: a digest of its records, so the same batch
/// offered again gets the same ids. 128 bits of SHA-256 keep unrelated batches apart.
fn batch_id(payloads: &[Bytes]) -> String {
    let mut all = Vec::new();
    for payload in payloads {
        // Lengths first, so the split between records is part of the digest.
        all.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        all.extend_from_slice(payload);
    }
    let mut id = sha256_hex(&all);
    id.truncate(32);
    id
}

/// Sorts a publish failure: a message too large for the server will never go through; a
/// timeout, a broken connection, a stream not there (yet) and anything the server refused for
/// now are worth another try.
fn classify(kind: PublishErrorKind, e: &dyn fmt::Display) -> ExportError {
    let message = format!("nats exporter: publishing: {e}");
    match kind {
        PublishErrorKind::MaxPayloadExceeded => ExportError::Permanent(message),
        _ => ExportError::Retryable(message),
    }
}

fn default_subject() -> String {
    "flagd.events".to_owned()
}

fn default_stream() -> String {
    "FLAGD_EVENTS".to_owned()
}

fn default_create_stream() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    5_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_depend_on_every_record_and_where_they_split() {
        let ab = batch_id(&[Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert_eq!(ab.len(), 32);
        assert_eq!(
            ab,
            batch_id(&[Bytes::from_static(b"a"), Bytes::from_static(b"b")])
        );
        assert_ne!(ab, batch_id(&[Bytes::from_static(b"ab")]));
        assert_ne!(
            ab,
            batch_id(&[Bytes::from_static(b"b"), Bytes::from_static(b"a")])
        );
    }

    #[test]
    fn settings_take_defaults_and_refuse_unknown_fields() {
        let settings: NatsSettings =
            serde_json::from_str(r#"{"url":"nats://tok@n:4222"}"#).unwrap();
        assert_eq!(
            (
                settings.subject.as_str(),
                settings.stream.as_str(),
                settings.create_stream
            ),
            ("flagd.events", "FLAGD_EVENTS", true)
        );
        assert!(!format!("{settings:?}").contains("tok"));
        assert_eq!(settings.name(), "nats:nats://n:4222/flagd.events");
        assert!(serde_json::from_str::<NatsSettings>(r#"{"url":"x","topic":"t"}"#).is_err());
    }
}
