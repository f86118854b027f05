//! Every network exporter against a real server: PostgreSQL, Redis and NATS from
//! `flags-test-support` (the machine's own when they answer, else throwaway ones), and a
//! webhook receiver each test runs itself. Each test writes a batch, reads it back from the
//! destination and compares it field by field with what was written, and sees the failures
//! the scheduler must tell apart come out as retryable or permanent.
//!
//! Every test uses a table, stream or subject of its own, so the tests run in parallel and
//! again on the same servers.

#![allow(clippy::unwrap_used)]

mod nats;
mod postgres;
mod records;
mod redis;
mod settings;
mod webhook;
