//! The management commands, `flagd env`, `flagd key` and `flagd flag`: set up environments, API
//! keys and flags from a shell, without starting a server and writing requests by hand.
//!
//! They reach the data one of two ways, chosen by [`Connection`]: straight in the database
//! (`--database`, as `flagd import` does, writing as `cli:$USER` in the audit log), or through a
//! running flagd's admin API (`--admin-url` with `--admin-key`, writing as that key). [`Admin`]
//! is what the commands need of either, implemented over any [`flags_store::AdminStore`]
//! ([`StoreAdmin`]) and over HTTP ([`HttpAdmin`]); the commands do not know which one they use,
//! and print the same either way: text for people, or with `--json` what the admin API answers.
//!
//! Exit codes: 0 done; 1 what the command names does not exist (an environment, flag or key);
//! 2 anything else (bad arguments, a refused write, a version conflict, no connection). Errors
//! go to standard error once, as `flagd: <what is wrong>`.
//!
//! This module knows nothing of HTTP status codes beyond reading the admin API's problem
//! documents, and nothing of SQL.

mod admin;
mod args;
mod commands;
mod http;
mod output;

use std::process::ExitCode;

pub use admin::{Admin, Failure, StoreAdmin, cli_actor};
pub use args::{
    Connection, EnvAction, EnvCommand, FlagAction, FlagCommand, KeyAction, KeyCommand,
    ManageCommand, Target,
};
pub use http::HttpAdmin;

/// The exit code when what a command names does not exist.
pub const EXIT_NOT_FOUND: u8 = 1;
/// The exit code of every other failure.
pub const EXIT_FAILED: u8 = 2;

/// Runs a management command to its end: prints its output, or its error on standard error,
/// and returns the exit code.
pub fn run(command: &ManageCommand) -> ExitCode {
    let env = std::env::vars().collect();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(format!("cannot start the runtime: {e}")))
        .and_then(|runtime| runtime.block_on(commands::run(command, &env)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("flagd: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
