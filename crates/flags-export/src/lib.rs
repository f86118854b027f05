//! `flags-export`: delivering flagd's event records to where data teams want them.
//!
//! An [`Exporter`] is one destination. Bulk exporters (files, PostgreSQL) get records in batches;
//! streaming exporters (Redis streams, NATS, webhooks) get them as they come. Each export is all
//! or nothing: an error means none of the batch counts as delivered, and
//! [`ExportError::Retryable`] asks for the same batch again later.
//!
//! The [`Scheduler`] feeds every exporter from a queue and a task of its own, so a slow or
//! failing destination never holds back the others, and [`Scheduler::submit`] never blocks its
//! caller (an HTTP handler). A failed batch is kept and retried with backoff; past the memory
//! bound the queue moves to a bounded on-disk spool per exporter, which survives a restart and
//! is replayed first; past the spool's bound the oldest records are dropped, and every dropped
//! record is counted in [`ExporterStats`] and logged. [`Scheduler::shutdown`] exports what it
//! can before a deadline, spools the rest and reports the numbers.
//!
//! [`FileExporter`] writes JSON lines, CSV or Parquet files, rotated by size or age. The network
//! exporters, one module each with its settings, are [`PostgresExporter`] (batched `INSERT`s),
//! [`RedisExporter`] (`XADD` to a stream), [`NatsExporter`] (JetStream publishes with acks) and
//! [`WebhookExporter`] (signed `POST`s).
//!
//! This crate serves no HTTP and knows no metrics library: flagd turns [`Scheduler::stats`] into
//! its Prometheus metrics.

#![warn(missing_docs)]

mod config;
mod endpoint;
mod exporter;
mod file;
pub mod nats;
mod offload;
pub mod postgres;
pub mod redis;
mod scheduler;
mod spool;
pub mod webhook;

pub use config::{ConfigError, ExporterConfig, KINDS};
pub use exporter::{ExportError, Exporter};
pub use file::{Column, ColumnKind, FileError, FileExporter, FileFormat, FileSettings};
pub use nats::{NatsExporter, NatsSettings};
pub use postgres::{PostgresExporter, PostgresSettings};
pub use redis::{RedisExporter, RedisSettings};
pub use scheduler::{
    Backoff, ExporterReport, ExporterStats, Scheduler, SchedulerConfig, ShutdownReport, StartError,
};
pub use webhook::{WebhookExporter, WebhookSettings};
