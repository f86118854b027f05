//! `flagd`: the flag server.
//!
//! Serves LaunchDarkly-format flag data (from flag files reloaded on change, or every environment
//! of a database) over a
//! native JSON evaluation API, OFREP for OpenFeature SDKs, and the LaunchDarkly server-side SDK
//! endpoints (polling, SSE streaming, events), with health checks and Prometheus metrics. It is
//! the only crate of the workspace that knows HTTP; it does not evaluate flags itself (that is
//! `flags-data` over `flags-eval`) and does not define the data model (that is `flags-core`).
//!
//! Entry points: [`app`] builds the router over an [`AppState`] (tests drive it with
//! `tower::ServiceExt::oneshot`); [`start`] binds a listener and runs everything, including the
//! file watcher, until [`RunningServer::shutdown`]; [`spawn_for_test`] does the same on a free
//! loopback port with short intervals. The `flagd serve` binary prints `listening on ADDR` as
//! its first line on stdout, so a test in any language can start it with `--listen 127.0.0.1:0`.

mod access;
pub mod admin;
mod backend;
mod big_segments;
pub mod cli;
pub mod config;
pub mod descriptors;
mod engine;
mod env;
mod evaluate;
pub mod events;
mod grpc;
// The fuzz targets' way in; not part of flagd's API (see its module comment).
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
mod keys;
pub mod manage;
mod memory;
mod metrics;
pub mod probe;
mod process_metrics;
pub mod progress;
mod proxy;
mod readiness;
mod redis_mirror;
mod root;
mod server;
mod shutdown;
pub mod source;
mod state;
mod store;
pub mod telemetry;
mod tls;
pub mod ui;
pub mod validate;
mod warm;
mod watch;

pub use backend::{Backend, BackendError};
pub use big_segments::{BigSegments, Prefetched};
pub use config::Config;
pub use http::{App, app};
pub use server::{
    Exporters, RunningServer, StartError, open_database, spawn_for_test, start, start_with_store,
};
pub use shutdown::Shutdown;
pub use state::{AppState, Mode};
pub use tls::TlsError;
