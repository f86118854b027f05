//! Each management command: its checks, its [`Admin`] calls, and what it prints. What can be
//! checked without the data (arguments, the document of `flag put`) is checked before anything
//! is connected to.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use flags_store::{ApiKeyKind, EnvironmentUpdate, NewApiKey, NewEnvironment};
use serde_json::Value;

use super::admin::{Admin, Failure, StoreAdmin, cli_actor};
use super::args::{EnvAction, FlagAction, KeyAction, ManageCommand, Target};
use super::http::HttpAdmin;
use super::output;

/// Runs `command`, with `vars` the process environment.
pub(super) async fn run(
    command: &ManageCommand,
    vars: &HashMap<String, String>,
) -> Result<(), Failure> {
    let connection = command.connection();
    let target = connection.target(vars)?;
    let json = connection.json;
    let text = match command {
        ManageCommand::Env(c) => env_command(&c.action, &target, vars, json).await?,
        ManageCommand::Key(c) => key_command(&c.action, &target, vars, json).await?,
        ManageCommand::Flag(c) => flag_command(&c.action, &target, vars, json).await?,
    };
    print(&text)
}

/// Prints a command's output, ending with a newline.
fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let mut text = text.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Other(format!("cannot write the output: {e}")))
}

/// Connects to where the data is; `vars` names the user for the audit log.
async fn open(target: &Target, vars: &HashMap<String, String>) -> Result<Box<dyn Admin>, Failure> {
    match target {
        Target::Database(url) => {
            let store = crate::open_database(url)
                .await
                .map_err(|e| Failure::Other(e.to_string()))?;
            Ok(Box::new(StoreAdmin::new(store, cli_actor(vars))))
        }
        Target::AdminApi { url, key } => Ok(Box::new(HttpAdmin::new(url, key)?)),
    }
}

async fn env_command(
    action: &EnvAction,
    target: &Target,
    vars: &HashMap<String, String>,
    json: bool,
) -> Result<String, Failure> {
    let admin = open(target, vars).await?;
    Ok(match action {
        EnvAction::Create { key, name, color } => {
            let new = NewEnvironment {
                key: key.clone(),
                name: name.clone().unwrap_or_else(|| key.clone()),
                color: color.clone(),
            };
            let created = admin.create_environment(&new).await?;
            if json {
                output::to_json(&created)
            } else {
                output::environment_created(&created)
            }
        }
        EnvAction::Set {
            key,
            name,
            color,
            no_color,
        } => {
            let update = EnvironmentUpdate {
                name: name.clone(),
                color: if *no_color {
                    Some(None)
                } else {
                    color.clone().map(Some)
                },
            };
            let env = admin.update_environment(key, &update).await?;
            if json {
                output::to_json(&env)
            } else {
                output::environment(&env)
            }
        }
        EnvAction::List => {
            let envs = admin.list_environments().await?;
            if json {
                output::items_json(&envs)
            } else {
                output::environments(&envs)
            }
        }
    })
}

async fn key_command(
    action: &KeyAction,
    target: &Target,
    vars: &HashMap<String, String>,
    json: bool,
) -> Result<String, Failure> {
    if let KeyAction::Create {
        kind: ApiKeyKind::Sdk,
        env: None,
        ..
    } = action
    {
        return Err(Failure::Other(
            "an SDK key selects one environment; name it with --env ENV".to_owned(),
        ));
    }
    let admin = open(target, vars).await?;
    Ok(match action {
        KeyAction::Create { name, kind, env } => {
            let new = NewApiKey {
                name: name.clone(),
                kind: *kind,
                env: env.clone(),
            };
            let created = admin.create_key(&new).await?;
            if json {
                output::key_created_json(&created)
            } else {
                output::key_created(&created)
            }
        }
        KeyAction::List => {
            let keys = admin.list_keys().await?;
            if json {
                output::items_json(&keys)
            } else {
                output::keys(&keys)
            }
        }
        KeyAction::Revoke { id } => {
            let key = admin.revoke_key(*id).await?;
            if json {
                output::to_json(&key)
            } else {
                output::key_revoked(&key)
            }
        }
    })
}

async fn flag_command(
    action: &FlagAction,
    target: &Target,
    vars: &HashMap<String, String>,
    json: bool,
) -> Result<String, Failure> {
    // The document is read first: a bad file fails before anything is connected to.
    let document = match action {
        FlagAction::Put { file, .. } => Some(read_document(file)?),
        _ => None,
    };
    let admin = open(target, vars).await?;
    Ok(match action {
        FlagAction::Get { env, key } => {
            let flag = admin.get_flag(env, key).await?;
            let killed = admin.killed_flags(env).await?.contains(key);
            if json {
                output::flag_json(&flag, killed)
            } else {
                output::flag(env, &flag, killed)
            }
        }
        FlagAction::List { env } => {
            let flags = admin.list_flags(env).await?;
            if json {
                output::items_json(&flags)
            } else {
                let killed = admin.killed_flags(env).await?;
                output::flags(&flags, &killed)
            }
        }
        FlagAction::Put {
            env,
            key,
            if_version,
            ..
        } => {
            let doc = document.unwrap_or(Value::Null);
            put_flag(&*admin, (env, key), doc, *if_version, json).await?
        }
        FlagAction::Kill { env, key } | FlagAction::Unkill { env, key } => {
            let killed = matches!(action, FlagAction::Kill { .. });
            let changed = admin.set_killed(env, key, killed).await?;
            if json {
                output::kill_json(key, killed, changed)
            } else {
                output::kill(env, key, killed, changed)
            }
        }
    })
}

/// `flag put`: replaces the version asked for, or whatever version the flag has (creating it
/// when it has none), and says which when another version is found.
async fn put_flag(
    admin: &dyn Admin,
    (env, key): (&str, &str),
    doc: Value,
    if_version: Option<u64>,
    json: bool,
) -> Result<String, Failure> {
    let expected = match if_version {
        Some(version) => Some(version),
        None => match admin.get_flag(env, key).await {
            Ok(current) => Some(current.version),
            Err(Failure::NotFound(_)) => None,
            Err(e) => return Err(e),
        },
    };
    let flag = admin
        .put_flag(env, key, doc, expected)
        .await
        .map_err(|e| match e {
            Failure::Conflict { current } => {
                Failure::Other(conflict_message(env, key, if_version, current))
            }
            other => other,
        })?;
    if json {
        return Ok(output::flag_written_json(&flag));
    }
    for warning in flag.warnings() {
        eprintln!("warning: {}: {}", warning.path, warning.message);
    }
    Ok(output::flag_written(env, &flag, expected.is_none()))
}

/// What a version conflict of `flag put` means, in its own terms.
fn conflict_message(env: &str, key: &str, if_version: Option<u64>, current: Option<u64>) -> String {
    let flag = format!("flag {key:?} in environment {env:?}");
    match (if_version, current) {
        (Some(asked), Some(current)) => format!("{flag} is at version {current}, not {asked}"),
        (Some(asked), None) => format!("{flag} does not exist, so it is not at version {asked}"),
        (None, Some(current)) => format!(
            "{flag} changed while it was written (now version {current}); run the command again"
        ),
        (None, None) => {
            format!("{flag} was deleted while it was written; run the command again")
        }
    }
}

/// Reads one flag document, JSON or YAML, from a file or (`-`) standard input.
fn read_document(file: &Path) -> Result<Value, Failure> {
    let (bytes, name) = if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::Other(format!("cannot read standard input: {e}")))?;
        (bytes, Path::new("standard input"))
    } else {
        let bytes = std::fs::read(file)
            .map_err(|e| Failure::Other(format!("cannot read {}: {e}", file.display())))?;
        (bytes, file)
    };
    let doc = flags_wire::file::parse_document(name, &bytes)
        .map_err(|problem| Failure::Other(problem.to_string()))?;
    if !doc.is_object() {
        return Err(Failure::Other(format!(
            "{}: expected a flag document (an object such as {{\"on\": true, \"variations\": \
             [true, false], ...}})",
            name.display()
        )));
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_say_which_version_was_found() {
        let check = |asked, current, expected: &str| {
            assert_eq!(conflict_message("p", "x", asked, current), expected);
        };
        check(
            Some(3),
            Some(4),
            "flag \"x\" in environment \"p\" is at version 4, not 3",
        );
        check(
            Some(3),
            None,
            "flag \"x\" in environment \"p\" does not exist, so it is not at version 3",
        );
        check(
            None,
            Some(5),
            "flag \"x\" in environment \"p\" changed while it was written (now version 5); run \
             the command again",
        );
    }

    #[test]
    fn documents_are_json_or_yaml_objects() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("f.json");
        std::fs::write(&json, r#"{"on": true, "variations": [true, false]}"#).unwrap();
        assert_eq!(read_document(&json).unwrap()["on"], true);
        let yaml = dir.path().join("f.yaml");
        std::fs::write(&yaml, "on: true\nvariations: [true, false]\n").unwrap();
        assert_eq!(read_document(&yaml).unwrap()["variations"][1], false);
        let list = dir.path().join("l.json");
        std::fs::write(&list, "[1]").unwrap();
        let err = read_document(&list).unwrap_err().to_string();
        assert!(err.contains("expected a flag document"), "{err}");
        let broken = dir.path().join("b.json");
        std::fs::write(&broken, "{\"on\": ").unwrap();
        let err = read_document(&broken).unwrap_err().to_string();
        assert!(err.starts_with(&broken.display().to_string()), "{err}");
        let missing = read_document(&dir.path().join("none.json")).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read "), "{missing}");
    }
}
