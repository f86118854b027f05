//! What the management commands print: text for people (aligned columns for lists, one line
//! for a write), or the admin API's JSON for scripts. Pure functions from data to text, so the
//! same data prints the same whichever way it was reached.

use flags_store::{ApiKey, CreatedApiKey, Environment, StoredFlag};
use serde::Serialize;
use serde_json::{Value, json};

/// The JSON of a value, pretty-printed (the types here always serialize).
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// `{"items": [...]}`, as the admin API lists things.
pub fn items_json<T: Serialize>(items: &[T]) -> String {
    to_json(&json!({ "items": items }))
}

/// A Unix-milliseconds time as `2025-01-02 03:04:05` (UTC).
pub fn time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart; `empty`
/// when there are no rows.
pub fn table(header: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        let last = cells.len().saturating_sub(1);
        for (n, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if n < last {
                let pad = width - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push('\n');
        text
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// The environments as a table (`-` for no colour).
pub fn environments(envs: &[Environment]) -> String {
    let rows: Vec<Vec<String>> = envs
        .iter()
        .map(|e| {
            vec![
                e.key.clone(),
                e.name.clone(),
                time(e.created_at),
                e.color.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(
        &["KEY", "NAME", "CREATED", "COLOR"],
        &rows,
        "no environments",
    )
}

/// One line for a created environment.
pub fn environment_created(env: &Environment) -> String {
    format!("created {}", environment(env))
}

/// One line for an environment: its key, its name unless that is the key, and its colour.
pub fn environment(env: &Environment) -> String {
    let mut text = format!("environment {:?}", env.key);
    if env.name != env.key {
        text.push_str(&format!(" ({})", env.name));
    }
    if let Some(color) = &env.color {
        text.push_str(&format!(", colour {color}"));
    }
    text.push('\n');
    text
}

/// Which environments a key may use, as a sentence ends.
fn key_scope(key: &ApiKey) -> String {
    match &key.env {
        Some(env) => format!("environment {env:?}"),
        None => "every environment".to_owned(),
    }
}

/// A created key: what it is, then its secret alone on the last line.
pub fn key_created(created: &CreatedApiKey) -> String {
    let key = &created.key;
    format!(
        "created {} key {} {:?} for {}\nits secret, shown only this once (flagd keeps only a \
         hash of it):\n{}\n",
        key.kind.as_str(),
        key.id,
        key.name,
        key_scope(key),
        created.secret
    )
}

/// A created key as the admin API answers it: the key, and its secret under `key`.
pub fn key_created_json(created: &CreatedApiKey) -> String {
    let mut value = serde_json::to_value(&created.key).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("key".to_owned(), Value::String(created.secret.clone()));
    }
    to_json(&value)
}

/// The keys as a table, without secrets (which are not stored).
pub fn keys(keys: &[ApiKey]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.name.clone(),
                k.kind.as_str().to_owned(),
                k.env.clone().unwrap_or_else(|| "*".to_owned()),
                time(k.created_at),
                if k.revoked { "revoked" } else { "live" }.to_owned(),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "KIND", "ENV", "CREATED", "STATE"],
        &rows,
        "no keys",
    )
}

/// One line for a revoked key.
pub fn key_revoked(key: &ApiKey) -> String {
    format!(
        "revoked {} key {} {:?} for {}\n",
        key.kind.as_str(),
        key.id,
        key.name,
        key_scope(key)
    )
}

/// A flag with its state: the fields, then its document.
pub fn flag(env: &str, flag: &StoredFlag, killed: bool) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    format!(
        "flag:      {}\nenv:       {env}\nversion:   {}\narchived:  {}\nkilled:    {}\nupdated:   {} UTC\n{}\n",
        flag.key,
        flag.version,
        yes_no(flag.archived),
        yes_no(killed),
        time(flag.updated_at),
        to_json(&flag.doc)
    )
}

/// A flag with its state, as JSON: the admin API's stored flag, with `killed`.
pub fn flag_json(flag: &StoredFlag, killed: bool) -> String {
    to_json(&json!({
        "key": flag.key,
        "version": flag.version,
        "archived": flag.archived,
        "killed": killed,
        "updatedAt": flag.updated_at,
        "doc": flag.doc,
    }))
}

/// The flags as a table.
pub fn flags(flags: &[StoredFlag], killed: &[String]) -> String {
    let rows: Vec<Vec<String>> = flags
        .iter()
        .map(|f| {
            vec![
                f.key.clone(),
                f.version.to_string(),
                if f.archived { "archived" } else { "live" }.to_owned(),
                if killed.contains(&f.key) {
                    "killed"
                } else {
                    "-"
                }
                .to_owned(),
                time(f.updated_at),
            ]
        })
        .collect();
    table(
        &["KEY", "VERSION", "STATE", "KILLED", "UPDATED"],
        &rows,
        "no flags",
    )
}

/// One line for a written flag.
pub fn flag_written(env: &str, flag: &StoredFlag, created: bool) -> String {
    let verb = if created { "created" } else { "replaced" };
    let archived = if flag.archived {
        " (archived: not served)"
    } else {
        ""
    };
    format!(
        "{verb} flag {:?} in environment {env:?}: now at version {}{archived}\n",
        flag.key, flag.version
    )
}

/// A written flag as the admin API answers it: the stored flag, with its warnings when it has
/// any.
pub fn flag_written_json(flag: &StoredFlag) -> String {
    let mut value = serde_json::to_value(flag).unwrap_or(Value::Null);
    let warnings: Vec<Value> = flag
        .warnings()
        .into_iter()
        .map(|p| json!({"path": p.path, "message": p.message}))
        .collect();
    if let Value::Object(map) = &mut value
        && !warnings.is_empty()
    {
        map.insert("warnings".to_owned(), Value::Array(warnings));
    }
    to_json(&value)
}

/// One line for a kill or an unkill.
pub fn kill(env: &str, key: &str, killed: bool, changed: bool) -> String {
    match (killed, changed) {
        (true, true) => format!(
            "killed flag {key:?} in environment {env:?}: it serves its off variation everywhere\n"
        ),
        (true, false) => format!("flag {key:?} in environment {env:?} was already killed\n"),
        (false, true) => {
            format!("unkilled flag {key:?} in environment {env:?}: its targeting applies again\n")
        }
        (false, false) => format!("flag {key:?} in environment {env:?} was not killed\n"),
    }
}

/// A kill or an unkill as the admin API answers it.
pub fn kill_json(key: &str, killed: bool, changed: bool) -> String {
    to_json(&json!({"flag": key, "killed": killed, "changed": changed}))
}

#[cfg(test)]
mod tests {
    use flags_store::ApiKeyKind;

    use super::*;

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["production".to_owned(), "Prod".to_owned(), "x".to_owned()],
            vec![
                "qa".to_owned(),
                "Quality assurance".to_owned(),
                "y".to_owned(),
            ],
        ];
        assert_eq!(
            table(&["KEY", "NAME", "CREATED"], &rows, "none"),
            "KEY         NAME               CREATED\n\
             production  Prod               x\n\
             qa          Quality assurance  y\n"
        );
        assert_eq!(table(&["KEY"], &[], "no environments"), "no environments\n");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_700_000_000_123), "2023-11-14 22:13:20");
    }

    #[test]
    fn a_created_key_ends_with_its_secret_alone() {
        let created = CreatedApiKey {
            key: ApiKey {
                id: 3,
                name: "web".to_owned(),
                kind: ApiKeyKind::Sdk,
                env: Some("prod".to_owned()),
                created_at: 0,
                revoked: false,
            },
            secret: "sdk-s3cret".to_owned(),
        };
        let text = key_created(&created);
        assert!(
            text.starts_with("created sdk key 3 \"web\" for environment \"prod\"\n"),
            "{text}"
        );
        assert_eq!(text.lines().last(), Some("sdk-s3cret"));
        let json: Value = serde_json::from_str(&key_created_json(&created)).unwrap();
        assert_eq!(json["key"], "sdk-s3cret");
        assert_eq!(json["id"], 3);
        let listed = keys(std::slice::from_ref(&created.key));
        assert!(!listed.contains("s3cret"), "{listed}");
    }
}
