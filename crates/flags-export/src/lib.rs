//! `flags-export`: delivering flagd's event records to where data teams want them.
//!
//! An [`Exporter`] is one destination. Bulk exporters (files, PostgreSQL) get records in batches;
//! streaming exporters (Redis streams, NATS, webhooks) get them as they come. Each export is all
//! or nothing: an error means none of the batch counts as delivered, and
//! [`ExportError::Retryable`] asks for the same batch again later.

#![warn(missing_docs)]

mod exporter;

pub use exporter::{ExportError, Exporter};
