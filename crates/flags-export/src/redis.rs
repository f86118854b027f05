//! The Redis stream exporter: each record is one stream entry, added with `XADD`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use flags_events::Record;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RetryMethod};
use serde::Deserialize;

use crate::endpoint::without_credentials;
use crate::exporter::{ExportError, Exporter};

/// Settings of the Redis stream exporter (`kind: redis` in `events.exporters`).
///
/// ```yaml
/// events:
///   exporters:
///     - kind: redis
///       url: redis://cache.internal:6379/0
///       stream: "flagd:events"
///       max_len: 1000000
/// ```
///
/// Each record becomes one entry `kind <kind> record <the record as JSON>`; read them with
/// `XREAD`, `XRANGE` or a consumer group.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// The server, as a `redis://[user:password@]host[:port][/db]` URL. Required.
    pub url: String,
    /// The stream's key. Default `flagd:events`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Keeps the stream near this many entries, trimming the oldest (`MAXLEN ~ N`: Redis trims
    /// whole macro nodes, so the stream may hold somewhat more). `null` never trims. Default
    /// 1000000.
    #[serde(default = "default_max_len")]
    pub max_len: Option<u64>,
    /// How long connecting, and then each batch, may take before the attempt fails as
    /// retryable, in milliseconds. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl RedisSettings {
    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            stream: default_stream(),
            max_len: default_max_len(),
            timeout_ms: default_timeout_ms(),
        }
    }

    /// The [`Exporter::name`] of the exporter these settings build, known before it connects:
    /// `redis:` and the URL without credentials, then `/` and the stream.
    pub fn name(&self) -> String {
        format!("redis:{}/{}", without_credentials(&self.url), self.stream)
    }
}

// By hand, so the URL's password never reaches a log.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &without_credentials(&self.url))
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Appends records to a Redis stream.
pub struct RedisExporter {
    name: String,
    stream: String,
    max_len: Option<u64>,
    /// Reconnects by itself after the connection breaks; cloning it is cheap and shares the
    /// connection.
    connection: ConnectionManager,
}

impl fmt::Debug for RedisExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisExporter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisExporter {
    /// Connects to the server.
    ///
    /// An invalid URL is [`ExportError::Permanent`]; a server that cannot be reached is
    /// [`ExportError::Retryable`].
    pub async fn new(settings: RedisSettings) -> Result<RedisExporter, ExportError> {
        let shown = without_credentials(&settings.url);
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| {
            ExportError::Permanent(format!("redis exporter: invalid url {shown}: {e}"))
        })?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        // The manager's own retries are for reconnecting in the background; a batch is never
        // sent twice by it, since retrying batches is the scheduler's job.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| classify("connecting", &e))?;
        Ok(RedisExporter {
            name: settings.name(),
            stream: settings.stream,
            max_len: settings.max_len,
            connection,
        })
    }
}

#[async_trait]
impl Exporter for RedisExporter {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_bulk(&self) -> bool {
        false
    }

    /// One `MULTI`/`EXEC` transaction of `XADD`s per batch. A plain pipeline could be cut by a
    /// broken connection after some of its commands ran, and the retry would add those
    /// entries twice; `EXEC` runs the queued commands together or, when the connection breaks
    /// before it arrives, not at all. (Redis does not roll back a command that fails inside
    /// `EXEC`, but every command here writes the same key the same way, so they fail alike.)
    async fn export(&self, records: &[Record]) -> Result<(), ExportError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for record in records {
            let mut json = Vec::with_capacity(256);
            record.write_json(&mut json);
            let command = pipe.cmd("XADD").arg(&self.stream);
            if let Some(max_len) = self.max_len {
                command.arg("MAXLEN").arg("~").arg(max_len);
            }
            command
                .arg("*")
                .arg("kind")
                .arg(record.kind())
                .arg("record")
                .arg(json)
                .ignore();
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|e| classify("adding entries", &e))
    }
}

/// Sorts a Redis error by what the scheduler can do about it, as the client itself would
/// retry it: a broken or refused connection, a timeout, a server that is loading, busy or out
/// of memory is worth another try; a command the server refuses (`WRONGTYPE`: the key holds
/// something that is not a stream) is not.
fn classify(doing: &str, e: &RedisError) -> ExportError {
    let message = format!("redis exporter: {doing}: {e}");
    let permanent = matches!(e.retry_method(), RetryMethod::NoRetry)
        && !e.is_timeout()
        && !e.is_connection_refusal()
        && !e.is_connection_dropped()
        && !matches!(
            e.code(),
            Some("OOM" | "LOADING" | "BUSY" | "MASTERDOWN" | "READONLY")
        );
    if permanent {
        ExportError::Permanent(message)
    } else {
        ExportError::Retryable(message)
    }
}

fn default_stream() -> String {
    "flagd:events".to_owned()
}

#[allow(clippy::unnecessary_wraps)] // serde's `default` wants the field's type.
fn default_max_len() -> Option<u64> {
    Some(1_000_000)
}

fn default_timeout_ms() -> u64 {
    5_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_defaults_and_refuse_unknown_fields() {
        let settings: RedisSettings =
            serde_json::from_str(r#"{"url":"redis://:pw@cache:6379"}"#).unwrap();
        assert_eq!(settings.stream, "flagd:events");
        assert_eq!(settings.max_len, Some(1_000_000));
        let no_trim: RedisSettings =
            serde_json::from_str(r#"{"url":"redis://cache","max_len":null}"#).unwrap();
        assert_eq!(no_trim.max_len, None);
        assert!(!format!("{settings:?}").contains("pw"));
        assert_eq!(settings.name(), "redis:redis://cache:6379/flagd:events");
        assert!(serde_json::from_str::<RedisSettings>(r#"{"url":"x","maxlen":3}"#).is_err());
    }
}
