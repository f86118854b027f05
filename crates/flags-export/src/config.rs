//! Exporters as a configuration file names them: a `kind` and that exporter's settings, read
//! strictly (an unknown kind or setting is an error naming it), then built. A destination that
//! cannot be reached at start is not an error: its exporter connects on its first export and
//! until then fails it as retryable, so the scheduler keeps the events (and spools them).

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use flags_events::Record;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use crate::exporter::{ExportError, Exporter};
use crate::file::{FileExporter, FileSettings};
use crate::nats::{NatsExporter, NatsSettings};
use crate::postgres::{PostgresExporter, PostgresSettings};
use crate::redis::{RedisExporter, RedisSettings};
use crate::webhook::{WebhookExporter, WebhookSettings};

/// The kinds of exporter there are, as `kind` names them.
pub const KINDS: &[&str] = &["file", "postgres", "redis", "nats", "webhook"];

/// One configured exporter, its settings read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ExporterConfig {
    /// `kind: file`.
    File(FileSettings),
    /// `kind: postgres`.
    Postgres(PostgresSettings),
    /// `kind: redis`.
    Redis(RedisSettings),
    /// `kind: nats`.
    Nats(NatsSettings),
    /// `kind: webhook`.
    Webhook(WebhookSettings),
}

/// Why an exporter's configuration cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ExporterConfig {
    /// Reads the settings of an exporter of `kind`.
    pub fn from_parts(
        kind: &str,
        settings: &Map<String, Value>,
    ) -> Result<ExporterConfig, ConfigError> {
        match kind {
            "file" => read(kind, settings).map(ExporterConfig::File),
            "postgres" => read(kind, settings).map(ExporterConfig::Postgres),
            "redis" => read(kind, settings).map(ExporterConfig::Redis),
            "nats" => read(kind, settings).map(ExporterConfig::Nats),
            "webhook" => read(kind, settings).map(ExporterConfig::Webhook),
            other => Err(ConfigError(format!(
                "unknown exporter kind {other:?}; expected one of: {}",
                KINDS.join(", ")
            ))),
        }
    }

    /// The exporter's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExporterConfig::File(_) => "file",
            ExporterConfig::Postgres(_) => "postgres",
            ExporterConfig::Redis(_) => "redis",
            ExporterConfig::Nats(_) => "nats",
            ExporterConfig::Webhook(_) => "webhook",
        }
    }

    /// Builds the exporter. Settings that cannot work are an error; a destination that does not
    /// answer yet is not: the exporter connects on its first export.
    pub async fn build(self) -> Result<Arc<dyn Exporter>, ConfigError> {
        match self {
            ExporterConfig::File(settings) => FileExporter::new(settings)
                .map(|e| Arc::new(e) as Arc<dyn Exporter>)
                .map_err(|e| ConfigError(format!("file exporter: {e}"))),
            ExporterConfig::Postgres(settings) => {
                let name = settings.name();
                let connector: Connect = Box::new(move || {
                    let settings = settings.clone();
                    Box::pin(async move { PostgresExporter::new(settings).await.map(shared) })
                });
                connect(name, true, connector).await
            }
            ExporterConfig::Redis(settings) => {
                let name = settings.name();
                let connector: Connect = Box::new(move || {
                    let settings = settings.clone();
                    Box::pin(async move { RedisExporter::new(settings).await.map(shared) })
                });
                connect(name, false, connector).await
            }
            ExporterConfig::Nats(settings) => {
                let name = settings.name();
                let connector: Connect = Box::new(move || {
                    let settings = settings.clone();
                    Box::pin(async move { NatsExporter::new(settings).await.map(shared) })
                });
                connect(name, false, connector).await
            }
            ExporterConfig::Webhook(settings) => WebhookExporter::new(settings)
                .map(shared)
                .map_err(|e| ConfigError(e.to_string())),
        }
    }
}

fn shared<E: Exporter>(exporter: E) -> Arc<dyn Exporter> {
    Arc::new(exporter)
}

/// A connection attempt, boxed so that every kind's connector has one type.
type Connect = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Arc<dyn Exporter>, ExportError>> + Send>>
        + Send
        + Sync,
>;

/// Connects once now: settings that cannot work are an error; a destination that does not
/// answer is left to connect on a later export (logged), so flagd starts without it.
async fn connect(
    name: String,
    bulk: bool,
    connect: Connect,
) -> Result<Arc<dyn Exporter>, ConfigError> {
    match connect().await {
        Ok(exporter) => Ok(exporter),
        Err(ExportError::Permanent(message)) => Err(ConfigError(message)),
        Err(error) => {
            tracing::warn!(
                exporter = %name,
                %error,
                "the destination does not answer; its events are kept until it does"
            );
            Ok(Arc::new(Connecting::new(name, bulk, connect)))
        }
    }
}

/// Reads `settings` as `T`, naming the kind in the error.
fn read<T: DeserializeOwned>(kind: &str, settings: &Map<String, Value>) -> Result<T, ConfigError> {
    serde_json::from_value(Value::Object(settings.clone()))
        .map_err(|e| ConfigError(format!("{kind} exporter: {e}")))
}

/// An exporter whose destination did not answer when flagd started: it connects on an export,
/// failing that export as retryable until it can.
pub(crate) struct Connecting {
    name: String,
    bulk: bool,
    connect: Connect,
    inner: OnceCell<Arc<dyn Exporter>>,
}

impl Connecting {
    /// An exporter named `name` (as the connected one will be named, so its spool is found
    /// again after a restart) that runs `connect` until it succeeds.
    pub(crate) fn new(name: String, bulk: bool, connect: Connect) -> Connecting {
        Connecting {
            name,
            bulk,
            connect,
            inner: OnceCell::new(),
        }
    }
}

#[async_trait]
impl Exporter for Connecting {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_bulk(&self) -> bool {
        self.bulk
    }

    async fn export(&self, records: &[Record]) -> Result<(), ExportError> {
        let inner = self.inner.get_or_try_init(|| (self.connect)()).await?;
        inner.export(records).await
    }

    async fn close(&self) -> Result<(), ExportError> {
        match self.inner.get() {
            Some(inner) => inner.close().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_and_settings_are_named() {
        let settings = |v: Value| v.as_object().unwrap().clone();
        let err = ExporterConfig::from_parts("kafka", &Map::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "unknown exporter kind \"kafka\"; expected one of: {}",
                KINDS.join(", ")
            )
        );
        let err = ExporterConfig::from_parts("file", &settings(serde_json::json!({"dri": "/x"})))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("file exporter: unknown field `dri`"),
            "{err}"
        );
        let config =
            ExporterConfig::from_parts("file", &settings(serde_json::json!({"dir": "/x"})))
                .unwrap();
        assert_eq!(config.kind(), "file");
    }
}
