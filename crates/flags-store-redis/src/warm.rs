//! What a server needs besides the flags to start from Redis alone, when its own source cannot
//! be reached: which environments Redis holds, and the SDK keys it may accept for them.
//!
//! Neither is part of LaunchDarkly's layout, and its SDKs read neither:
//! - the environments are found by their `{prefix}:$inited` keys, for a prefix template with
//!   `{env}` standing for the environment key;
//! - [`KeyTable`] is one hash, field = the SHA-256 (hex) of a key's secret, value = the
//!   environment it selects. Secrets themselves are never written.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::StoreError;

/// Keys scanned per round trip.
const SCAN_COUNT: usize = 1000;

/// The environments for which Redis holds a whole data set under `template` (`{env}` standing
/// for the environment key), by environment key, with their prefixes.
pub async fn inited_environments(
    url: &str,
    template: &str,
) -> Result<BTreeMap<String, String>, StoreError> {
    let Some((head, tail)) = template.split_once("{env}") else {
        return Err(StoreError::Prefix(format!(
            "{template:?} has no {{env}} placeholder"
        )));
    };
    let suffix = format!("{tail}:$inited");
    let pattern = format!("{}*{}", glob_escape(head), glob_escape(&suffix));
    let mut connection = connect(url).await?;
    let mut cursor = 0u64;
    let mut found = BTreeMap::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut connection)
            .await?;
        for key in keys {
            let env = key
                .strip_prefix(head)
                .and_then(|rest| rest.strip_suffix(&suffix));
            // A key the pattern matched through a `*` inside the environment part that still
            // does not split cleanly is someone else's.
            if let Some(env) = env.filter(|e| !e.is_empty() && !e.contains(':')) {
                found.insert(env.to_owned(), template.replace("{env}", env));
            }
        }
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// SDK keys seen to be valid, by the hash of their secret, so that a server that starts while
/// its key store is down can still tell which environment a key selects.
pub struct KeyTable {
    name: String,
    connection: ConnectionManager,
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl KeyTable {
    /// The table in the hash `name` of the Redis at `url`.
    pub async fn connect(url: &str, name: &str) -> Result<KeyTable, StoreError> {
        Ok(KeyTable {
            name: name.to_owned(),
            connection: connect(url).await?,
        })
    }

    /// Records that the secret hashing to `hash` selects `env`.
    pub async fn remember(&self, hash: &str, env: &str) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("HSET")
            .arg(&self.name)
            .arg(hash)
            .arg(env)
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    /// Forgets the secret hashing to `hash` (revoked, or no longer known).
    pub async fn forget(&self, hash: &str) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("HDEL")
            .arg(&self.name)
            .arg(hash)
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    /// Every recorded key: hash → environment.
    pub async fn all(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut connection = self.connection.clone();
        Ok(redis::cmd("HGETALL")
            .arg(&self.name)
            .query_async(&mut connection)
            .await?)
    }
}

async fn connect(url: &str) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
    let timeout = Some(Duration::from_secs(5));
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(1);
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// `text` with the characters Redis's glob patterns treat specially escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\d:e"), "a\\*b\\?\\[c\\]\\\\d:e");
    }
}
