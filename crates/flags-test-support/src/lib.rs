//! `flags-test-support`: what flagd's test binaries share, written once instead of copied into
//! each `tests/*/mod.rs`.
//!
//! - [`postgres()`], [`redis()`] and [`nats()`]: the server a test binary talks to. It is the one
//!   at `$FLAGD_TEST_POSTGRES_URL` (`$FLAGD_TEST_REDIS_URL`, `$FLAGD_TEST_NATS_URL`, which must
//!   have JetStream enabled) when that one answers, and otherwise a throwaway server of the
//!   binary's own, started on a free port on first use and stopped when the binary exits,
//!   however it exits. [`Postgres::create_database`] gives each test a fresh
//!   database, dropped afterwards. [`PgCluster`] is a throwaway PostgreSQL, and [`RedisServer`]
//!   a throwaway Redis, that a test owns and may stop and start, to see an outage.
//! - [`wait`]: polling until a condition holds, failing with what was awaited after a deadline.
//! - [`process`]: `flagd` as a child process (the caller passes the binary's path, so this crate
//!   does not depend on flagd), killed when dropped, with its log kept for the failure message.
//! - [`alloc_count`]: a global allocator that counts each thread's allocations, which a test
//!   binary installs with [`count_allocations!`] to prove a path allocates nothing.
//!
//! This crate is not part of the product: only dev-dependencies name it, and its workspace
//! declaration has no version, so it never ships. Its callers are tests, so it reports failure
//! by panicking with a message that says what went wrong and what to install or start.

pub mod alloc_count;
pub mod conformance;
mod guardian;
mod nats;
mod postgres;
pub mod process;
mod redis;
pub mod wait;

pub use nats::{Nats, nats};
pub use postgres::{PgCluster, Postgres, TestDatabase, postgres};
pub use redis::{Redis, RedisServer, redis};
