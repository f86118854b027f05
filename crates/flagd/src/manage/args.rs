//! The command line of `flagd env`, `flagd key` and `flagd flag`, and [`Connection`]: which of
//! the database and a running flagd's admin API they work through.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};
use flags_store::{ApiKeyKind, StoreError, validate};
use flags_store_postgres::redact_url;

use crate::config::Redacted;

use super::admin::Failure;

/// How the commands reach the data and print it; the same on every management command, and
/// accepted before or after the action (`flagd flag --json get ...` or `flagd flag get ...
/// --json`).
#[derive(Default, Args)]
pub struct Connection {
    /// Work in this PostgreSQL database directly, as `flagd import` does
    /// [env: FLAGD_DATABASE_URL].
    #[arg(long = "database", value_name = "URL", global = true)]
    pub database: Option<String>,
    /// Work through the admin API of the flagd at this URL, e.g. http://127.0.0.1:8013
    /// [env: FLAGD_ADMIN_URL].
    #[arg(long = "admin-url", value_name = "URL", global = true)]
    pub admin_url: Option<String>,
    /// The admin key for --admin-url. Prefer FLAGD_ADMIN_KEY, which does not show in the
    /// process list.
    #[arg(long = "admin-key", value_name = "KEY", global = true)]
    pub admin_key: Option<String>,
    /// Print JSON for scripts (what the admin API answers) instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("database", &self.database.as_deref().map(redact_url))
            .field("admin_url", &self.admin_url)
            .field("admin_key", &self.admin_key.as_ref().map(|_| Redacted::One))
            .field("json", &self.json)
            .finish()
    }
}

/// Where the commands work.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// In the database at this URL.
    Database(String),
    /// Through the admin API of the flagd at `url`, with the admin key `key`.
    AdminApi {
        /// The flagd's base URL.
        url: String,
        /// The admin key.
        key: String,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Database(url) => f.debug_tuple("Database").field(&redact_url(url)).finish(),
            Target::AdminApi { url, .. } => f
                .debug_struct("AdminApi")
                .field("url", url)
                .field("key", &Redacted::One)
                .finish(),
        }
    }
}

/// What to pass when no way to the data is given.
const NEITHER: &str = "nowhere to work: pass --database URL (or set FLAGD_DATABASE_URL) to \
                       work in the database, or --admin-url URL with --admin-key KEY (or set \
                       FLAGD_ADMIN_URL and FLAGD_ADMIN_KEY) to work through a running flagd";

impl Connection {
    /// Where to work: `--database` or `--admin-url`, exactly one; when neither flag is given,
    /// `FLAGD_DATABASE_URL` or `FLAGD_ADMIN_URL` from `env`, exactly one. The admin API needs
    /// an admin key, from `--admin-key` or `FLAGD_ADMIN_KEY`.
    pub fn target(&self, env: &HashMap<String, String>) -> Result<Target, Failure> {
        let given = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        let from_env = |name: &str| env.get(name).cloned().filter(|v| !v.trim().is_empty());
        let (database, admin_url) = match (given(&self.database), given(&self.admin_url)) {
            (Some(_), Some(_)) => {
                return Err(Failure::Other(
                    "pass either --database or --admin-url, not both".to_owned(),
                ));
            }
            (None, None) => match (from_env("FLAGD_DATABASE_URL"), from_env("FLAGD_ADMIN_URL")) {
                (Some(_), Some(_)) => {
                    return Err(Failure::Other(
                        "both FLAGD_DATABASE_URL and FLAGD_ADMIN_URL are set; choose one with \
                         --database URL or --admin-url URL"
                            .to_owned(),
                    ));
                }
                pair => pair,
            },
            pair => pair,
        };
        match (database, admin_url) {
            (Some(url), _) => {
                if self.admin_key.is_some() {
                    return Err(Failure::Other(
                        "--admin-key goes with --admin-url; --database needs no key".to_owned(),
                    ));
                }
                Ok(Target::Database(url))
            }
            (None, Some(url)) => {
                let key = given(&self.admin_key)
                    .or_else(|| from_env("FLAGD_ADMIN_KEY"))
                    .ok_or_else(|| {
                        Failure::Other(
                            "--admin-url needs an admin key: pass --admin-key KEY (or set \
                             FLAGD_ADMIN_KEY)"
                                .to_owned(),
                        )
                    })?;
                Ok(Target::AdminApi { url, key })
            }
            (None, None) => Err(Failure::Other(NEITHER.to_owned())),
        }
    }
}

/// The part of each command group's help about where the data is and the exit codes, as a
/// literal for `concat!`.
macro_rules! connection_help {
    () => {
        "

Where the data is: --database URL (or FLAGD_DATABASE_URL) works in the PostgreSQL database
directly, as `flagd import` does, and records `cli:$USER` in the audit log; --admin-url URL with
--admin-key KEY (or FLAGD_ADMIN_URL and FLAGD_ADMIN_KEY) works through a running flagd's admin
API (http:// only), which records the key's name. Give exactly one of the two; the output is the
same either way. --json prints what the admin API answers instead of text.

Exit codes: 0 done; 1 what the command names does not exist (environment, flag or key); 2 any
other error (bad arguments, a refused write, a version conflict, no connection)."
    };
}

/// The management subcommands, flattened into `flagd`'s own.
#[derive(Debug, Subcommand)]
pub enum ManageCommand {
    /// Create, change and list environments, in the database or through a running flagd.
    #[command(after_long_help = concat!("\
Examples:
  flagd env create staging --name Staging --color '#0366d6' --database postgres://localhost/flagd
  flagd env set production --color '#d73a49' --database postgres://localhost/flagd
  flagd env list --admin-url http://127.0.0.1:8013 --admin-key \"$ADMIN_KEY\"", connection_help!()))]
    Env(EnvCommand),
    /// Create, list and revoke API keys, in the database or through a running flagd.
    #[command(after_long_help = concat!("\
Examples:
  flagd key create --name web --kind sdk --env production --database postgres://localhost/flagd
  flagd key list --database postgres://localhost/flagd
  flagd key revoke 7 --database postgres://localhost/flagd", connection_help!()))]
    Key(KeyCommand),
    /// Read, write, kill and unkill flags, in the database or through a running flagd.
    #[command(after_long_help = concat!("\
Examples:
  flagd flag put production dark-mode --file dark-mode.yaml --database postgres://localhost/flagd
  flagd flag get production dark-mode --database postgres://localhost/flagd
  flagd flag kill production dark-mode --database postgres://localhost/flagd", connection_help!()))]
    Flag(FlagCommand),
}

/// `flagd env`.
#[derive(Debug, Args)]
pub struct EnvCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: EnvAction,
    /// Where the data is, and how to print.
    #[command(flatten)]
    pub connection: Connection,
}

/// `flagd env` actions.
#[derive(Debug, Subcommand)]
pub enum EnvAction {
    /// Create an environment: a separate set of flags, segments, kill set and keys.
    #[command(after_long_help = "\
Prints the environment created. An SDK key for it comes next: `flagd key create --kind sdk`.

Example:
  flagd env create staging --name Staging --database postgres://localhost/flagd
  created environment \"staging\" (Staging)")]
    Create {
        /// The environment's key, as URLs and SDK keys name it: letters, digits, `.`, `_`, `-`.
        #[arg(value_name = "KEY")]
        key: String,
        /// A name for people [default: the key].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// The colour people see the environment in, `#rrggbb` (quote it for the shell).
        #[arg(long, value_name = "#RRGGBB", value_parser = parse_color)]
        color: Option<String>,
    },
    /// Change an environment's name or colour.
    #[command(
        group(ArgGroup::new("change").required(true).multiple(true)),
        after_long_help = "\
Prints the environment as it is now. What is not named is kept; changing nothing writes nothing.

Example:
  flagd env set production --name Production --color '#d73a49' --database postgres://localhost/flagd
  environment \"production\" (Production), colour #d73a49"
    )]
    Set {
        /// The environment.
        #[arg(value_name = "KEY")]
        key: String,
        /// A new name for people.
        #[arg(long, value_name = "NAME", group = "change")]
        name: Option<String>,
        /// A new colour, `#rrggbb` (quote it for the shell).
        #[arg(long, value_name = "#RRGGBB", value_parser = parse_color, group = "change", conflicts_with = "no_color")]
        color: Option<String>,
        /// Remove the colour.
        #[arg(long, group = "change")]
        no_color: bool,
    },
    /// List the environments.
    #[command(after_long_help = "\
Prints KEY, NAME, CREATED (UTC) and COLOR columns; with --json, {\"items\": [...]}.

Example:
  flagd env list --database postgres://localhost/flagd")]
    List,
}

/// `flagd key`.
#[derive(Debug, Args)]
pub struct KeyCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: KeyAction,
    /// Where the data is, and how to print.
    #[command(flatten)]
    pub connection: Connection,
}

/// `flagd key` actions.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Create an SDK or admin key and print its secret, this once.
    #[command(after_long_help = "\
The secret is printed once, on its own line, and never again: flagd keeps only its hash. An SDK
key selects its environment (--env is required); an admin key without --env works for every
environment, with --env for that one only.

Example:
  flagd key create --name web --kind sdk --env production --database postgres://localhost/flagd")]
    Create {
        /// A name for people, recorded in the audit log for the key's writes.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// `sdk` (evaluation and SDK endpoints) or `admin` (the admin API).
        #[arg(long, value_name = "sdk|admin", value_parser = parse_kind)]
        kind: ApiKeyKind,
        /// The one environment the key may use [default for admin keys: every environment].
        #[arg(long, value_name = "ENV")]
        env: Option<String>,
    },
    /// List the keys (never their secrets).
    #[command(after_long_help = "\
Prints ID, NAME, KIND, ENV (`*` for every environment), CREATED (UTC) and STATE (live or
revoked) columns; with --json, {\"items\": [...]}. Secrets are never shown.

Example:
  flagd key list --database postgres://localhost/flagd")]
    List,
    /// Revoke a key: it stops working at once.
    #[command(after_long_help = "\
Revoking a revoked key changes nothing. The key stays listed, as revoked.

Example:
  flagd key revoke 7 --database postgres://localhost/flagd")]
    Revoke {
        /// The key's id, as `flagd key list` shows it.
        #[arg(value_name = "ID")]
        id: u64,
    },
}

/// A colour as the store keeps it, checked before anything is connected to.
fn parse_color(text: &str) -> Result<String, String> {
    validate::environment_color(text).map_err(|e| match e {
        StoreError::Invalid { message, .. } => message,
        other => other.to_string(),
    })
}

fn parse_kind(text: &str) -> Result<ApiKeyKind, String> {
    ApiKeyKind::parse(text).ok_or_else(|| "expected sdk or admin".to_owned())
}

/// `flagd flag`.
#[derive(Debug, Args)]
pub struct FlagCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: FlagAction,
    /// Where the data is, and how to print.
    #[command(flatten)]
    pub connection: Connection,
}

/// `flagd flag` actions.
#[derive(Debug, Subcommand)]
pub enum FlagAction {
    /// Print a flag: its version, whether it is archived or killed, and its document.
    #[command(after_long_help = "\
With --json, {\"key\", \"version\", \"archived\", \"killed\", \"updatedAt\", \"doc\"}; `.doc` is
the LaunchDarkly flag document, ready for `flagd flag put --file`.

Example:
  flagd flag get production dark-mode --database postgres://localhost/flagd")]
    Get {
        /// The environment.
        #[arg(value_name = "ENV")]
        env: String,
        /// The flag key.
        #[arg(value_name = "KEY")]
        key: String,
    },
    /// List an environment's flags, archived ones too.
    #[command(after_long_help = "\
Prints KEY, VERSION, STATE (live or archived), KILLED and UPDATED (UTC) columns; with --json,
{\"items\": [...]} with each document.

Example:
  flagd flag list production --database postgres://localhost/flagd")]
    List {
        /// The environment.
        #[arg(value_name = "ENV")]
        env: String,
    },
    /// Create or replace a flag from a LaunchDarkly flag document (JSON or YAML).
    #[command(after_long_help = "\
The document is one flag in LaunchDarkly's format, as under \"flags\" in a flag file; its key,
when present, must be KEY, and its version is set by flagd. Without --if-version the flag is
created or replaced whatever its version; with --if-version N it is replaced only if it is at
version N (exit code 2 otherwise). Prints the flag's new version; warnings go to standard error.

Example:
  flagd flag put production dark-mode --file dark-mode.yaml --database postgres://localhost/flagd
  flagd flag get production dark-mode --json --database \"$DB\" | jq '.doc.on = true | .doc' \\
    | flagd flag put production dark-mode --file - --if-version 3 --database \"$DB\"")]
    Put {
        /// The environment.
        #[arg(value_name = "ENV")]
        env: String,
        /// The flag key.
        #[arg(value_name = "KEY")]
        key: String,
        /// The document: a file (`.json`, `.yaml`, `.yml`; other names are JSON when they start
        /// with `{`), or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        file: PathBuf,
        /// Replace the flag only if it is at this version.
        #[arg(long = "if-version", value_name = "N")]
        if_version: Option<u64>,
    },
    /// Kill a flag: it serves its off variation everywhere, at once.
    #[command(after_long_help = "\
Every replica and SDK serves the flag's off variation within moments, whatever its targeting;
the flag's document is not changed. Killing a killed flag changes nothing.

Example:
  flagd flag kill production dark-mode --database postgres://localhost/flagd")]
    Kill {
        /// The environment.
        #[arg(value_name = "ENV")]
        env: String,
        /// The flag key.
        #[arg(value_name = "KEY")]
        key: String,
    },
    /// Unkill a flag: it is evaluated by its targeting again.
    #[command(after_long_help = "\
Example:
  flagd flag unkill production dark-mode --database postgres://localhost/flagd")]
    Unkill {
        /// The environment.
        #[arg(value_name = "ENV")]
        env: String,
        /// The flag key.
        #[arg(value_name = "KEY")]
        key: String,
    },
}

impl ManageCommand {
    /// The connection options of the command.
    pub fn connection(&self) -> &Connection {
        match self {
            ManageCommand::Env(c) => &c.connection,
            ManageCommand::Key(c) => &c.connection,
            ManageCommand::Flag(c) => &c.connection,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> ManageCommand {
        let mut argv = vec!["flagd"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Manage(command) => command,
            other => panic!("not a management command: {other:?}"),
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[track_caller]
    fn check(args: &[&str], env: &[(&str, &str)], expected: Result<Target, &str>) {
        let command = parse(args);
        let got = command.connection().target(&vars(env));
        match expected {
            Ok(target) => assert_eq!(got, Ok(target)),
            Err(message) => match got {
                Err(failure) => assert!(
                    failure.to_string().contains(message),
                    "{failure} does not say {message:?}"
                ),
                Ok(target) => panic!("expected an error, got {target:?}"),
            },
        }
    }

    #[test]
    fn exactly_one_way_to_the_data() {
        let db = || Target::Database("postgres://db/f".to_owned());
        let api = |key: &str| Target::AdminApi {
            url: "http://h:1".to_owned(),
            key: key.to_owned(),
        };
        check(
            &["env", "list", "--database", "postgres://db/f"],
            &[],
            Ok(db()),
        );
        check(
            &["env", "list"],
            &[("FLAGD_DATABASE_URL", "postgres://db/f")],
            Ok(db()),
        );
        check(
            &[
                "env",
                "list",
                "--admin-url",
                "http://h:1",
                "--admin-key",
                "k",
            ],
            &[],
            Ok(api("k")),
        );
        check(
            &["env", "list"],
            &[("FLAGD_ADMIN_URL", "http://h:1"), ("FLAGD_ADMIN_KEY", "e")],
            Ok(api("e")),
        );
        // A flag chooses; the other way's variable is not in the way.
        check(
            &["env", "list", "--database", "postgres://db/f"],
            &[("FLAGD_ADMIN_URL", "http://h:1")],
            Ok(db()),
        );
        check(
            &["env", "list", "--admin-url", "http://h:1"],
            &[
                ("FLAGD_DATABASE_URL", "postgres://db/f"),
                ("FLAGD_ADMIN_KEY", "e"),
            ],
            Ok(api("e")),
        );
        check(
            &[
                "env",
                "list",
                "--database",
                "postgres://db/f",
                "--admin-url",
                "http://h:1",
            ],
            &[],
            Err("pass either --database or --admin-url, not both"),
        );
        check(
            &["env", "list"],
            &[
                ("FLAGD_DATABASE_URL", "postgres://db/f"),
                ("FLAGD_ADMIN_URL", "http://h:1"),
            ],
            Err("both FLAGD_DATABASE_URL and FLAGD_ADMIN_URL are set"),
        );
        check(&["env", "list"], &[], Err("pass --database URL"));
        check(
            &["env", "list"],
            &[("FLAGD_DATABASE_URL", " ")],
            Err("--admin-url URL"),
        );
        check(
            &["env", "list", "--admin-url", "http://h:1"],
            &[],
            Err("--admin-url needs an admin key"),
        );
        check(
            &[
                "env",
                "list",
                "--database",
                "postgres://db/f",
                "--admin-key",
                "k",
            ],
            &[],
            Err("--admin-key goes with --admin-url"),
        );
    }

    #[test]
    fn options_go_before_or_after_the_action() {
        for args in [
            &[
                "flag",
                "--json",
                "--database",
                "postgres://d",
                "get",
                "p",
                "k",
            ][..],
            &[
                "flag",
                "get",
                "p",
                "k",
                "--json",
                "--database",
                "postgres://d",
            ][..],
        ] {
            let command = parse(args);
            assert!(command.connection().json, "{args:?}");
            let ManageCommand::Flag(FlagCommand {
                action: FlagAction::Get { env, key },
                ..
            }) = &command
            else {
                panic!("{command:?}")
            };
            assert_eq!((env.as_str(), key.as_str()), ("p", "k"));
        }
        let ManageCommand::Key(KeyCommand {
            action: KeyAction::Create { kind, env, .. },
            ..
        }) = parse(&["key", "create", "--name", "n", "--kind", "admin"])
        else {
            panic!("expected key create")
        };
        assert_eq!((kind, env), (ApiKeyKind::Admin, None));
        let err = Cli::try_parse_from(["flagd", "key", "create", "--name", "n", "--kind", "x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected sdk or admin"), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let command = parse(&[
            "key",
            "list",
            "--admin-url",
            "http://h:1",
            "--admin-key",
            "admin-s3cret",
        ]);
        let target = command.connection().target(&HashMap::new()).unwrap();
        let db = parse(&["env", "list", "--database", "postgres://u:db-s3cret@h/d"]);
        for shown in [
            format!("{command:?}"),
            format!("{target:?}"),
            format!("{db:?}"),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }
}
