//! The seam between the scheduler and each destination.

use async_trait::async_trait;
use flags_events::Record;

/// One destination for event records.
#[async_trait]
pub trait Exporter: Send + Sync + 'static {
    /// How logs and metrics name this exporter, unique among those configured (`file`,
    /// `webhook:https://example.com/hook`, ...). Never contains a secret.
    fn name(&self) -> &str;

    /// `true`: the exporter gets batches, every flush interval or when the scheduler holds its
    /// memory bound of records (files, PostgreSQL). `false`: it gets records as they come, in
    /// whatever is queued at that moment (Redis streams, NATS, webhooks).
    fn is_bulk(&self) -> bool;

    /// Delivers `records`, all or nothing: after an error none of them counts as delivered,
    /// and a [`ExportError::Retryable`] one is offered again later.
    async fn export(&self, records: &[Record]) -> Result<(), ExportError>;

    /// Flushes and releases what the exporter holds (a file being written, a connection). Called
    /// once, after the last export, at shutdown.
    async fn close(&self) -> Result<(), ExportError> {
        Ok(())
    }
}

/// Why an export failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Worth trying again: the destination is down, timed out, or asked to be retried later
    /// (HTTP 5xx, 408, 429).
    #[error("{0}")]
    Retryable(String),
    /// Trying again would fail the same way (HTTP 4xx, a record the destination refuses): the
    /// batch is dropped and counted.
    #[error("{0}")]
    Permanent(String),
}

impl ExportError {
    /// Whether the batch should be offered again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ExportError::Retryable(_))
    }
}
