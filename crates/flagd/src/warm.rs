//! Warm boot: when its source (flag files, the database, the upstream) cannot be reached at
//! start, flagd serves what it last wrote into Redis, marked stale in `/readyz` until the
//! source answers. Data from the source always replaces it, and streams then start again from
//! a `put`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use flags_store_redis::{Kind, RedisStore, Stored};

use crate::config::env_prefix;
use crate::engine::Snapshot;
use crate::env::{Env, Environments};

/// The hash that remembers SDK keys for root mode under `template`.
pub(crate) fn key_table_name(template: &str) -> String {
    format!("{}:sdk_keys", env_prefix(template, "$flagd"))
}

/// Serves, as stale, the data set Redis holds under `prefix` from `env`, if Redis has one and
/// `env` serves nothing yet. Returns the number of flags served.
pub(crate) async fn serve_env(url: &str, prefix: &str, env: &Env) -> Result<Option<usize>, String> {
    let store = RedisStore::connect(url, prefix)
        .await
        .map_err(|e| e.to_string())?;
    if !store.initialized().await.map_err(|e| e.to_string())? {
        return Ok(None);
    }
    let features = store.all(Kind::Features).await.map_err(|e| e.to_string())?;
    let segments = store.all(Kind::Segments).await.map_err(|e| e.to_string())?;
    let body = latest_all(&features, &segments);
    let data = flags_wire::stream::parse_latest_all(body.as_bytes())
        .map_err(|e| format!("what Redis holds under {prefix} cannot be read: {e}"))?;
    let flags = data.flags.len();
    // Generation 0: whatever the source publishes later is newer.
    let snapshot = Snapshot::from_models(data, 0).map_err(|e| e.to_string())?;
    Ok(env.store.publish_warm(snapshot).then_some(flags))
}

/// Root mode: serves every environment Redis holds under `template`, as [`serve_env`] does.
/// Returns the number of environments served.
pub(crate) async fn serve_all(
    url: &str,
    template: &str,
    envs: &Arc<Environments>,
) -> Result<usize, String> {
    let found = flags_store_redis::inited_environments(url, template)
        .await
        .map_err(|e| e.to_string())?;
    let mut served = 0;
    for (key, prefix) in found {
        let env = envs.get_or_create(&key);
        match serve_env(url, &prefix, &env).await {
            Ok(Some(flags)) => {
                tracing::warn!(
                    env = key,
                    flags,
                    "serving what Redis holds until the store answers"
                );
                served += 1;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(env = key, error = %e, "cannot read the environment from Redis")
            }
        }
    }
    Ok(served)
}

/// The `/sdk/latest-all` body of what a store holds (tombstones left out): the items' JSON as
/// written, so nothing is parsed twice.
fn latest_all(features: &BTreeMap<String, Stored>, segments: &BTreeMap<String, Stored>) -> String {
    fn section(out: &mut String, items: &BTreeMap<String, Stored>) {
        out.push('{');
        let mut first = true;
        for (key, stored) in items {
            let Stored::Item { json, .. } = stored else {
                continue;
            };
            if !first {
                out.push(',');
            }
            first = false;
            // A JSON string of the key; serde_json cannot fail on a str.
            let _ = write!(out, "{}:{json}", serde_json::Value::from(key.as_str()));
        }
        out.push('}');
    }
    let mut out = String::from("{\"flags\":");
    section(&mut out, features);
    out.push_str(",\"segments\":");
    section(&mut out, segments);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_are_left_out_and_keys_quoted() {
        let features = BTreeMap::from([
            (
                "a\"b".to_owned(),
                Stored::Item {
                    version: 1,
                    json: "{\"key\":\"a\\\"b\"}".to_owned(),
                },
            ),
            ("gone".to_owned(), Stored::Deleted { version: 2 }),
        ]);
        let body = latest_all(&features, &BTreeMap::new());
        assert_eq!(body, r#"{"flags":{"a\"b":{"key":"a\"b"}},"segments":{}}"#);
    }

    #[test]
    fn names() {
        assert_eq!(env_prefix("ld:{env}", "prod"), "ld:prod");
        assert_eq!(key_table_name("ld:{env}"), "ld:$flagd:sdk_keys");
    }
}
