//! Environments: separate sets of served data, each with its own snapshot, change feed (for SSE
//! streams), kill set and overrides, and so its own OFREP ETags.
//!
//! In file mode there is exactly one, [`DEFAULT_ENV`]. In root mode (over a database) there is one
//! per stored environment, and the SDK key a request presents picks it. Requests find theirs
//! with one lock-free map lookup; file-mode requests do not even do that.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::engine::Ops;
use crate::store::Store;

/// The key of the one environment of file mode.
pub const DEFAULT_ENV: &str = "default";

/// One environment's served data and operations state.
pub struct Env {
    /// The environment key (`production`); shared, since every exported record names it.
    pub key: Arc<str>,
    /// Its snapshot and change feed.
    pub store: Arc<Store>,
    /// Its kill set and overrides.
    pub ops: Arc<Ops>,
    /// The keys of its flags archived in the store (root mode): not served, but not gone
    /// either, as a flag's state says.
    archived: ArcSwap<BTreeSet<String>>,
}

impl Env {
    /// An empty environment whose change feed buffers `stream_buffer` batches per stream.
    pub fn new(key: &str, stream_buffer: usize) -> Env {
        Env {
            key: Arc::from(key),
            store: Arc::new(Store::new(stream_buffer)),
            ops: Arc::new(Ops::default()),
            archived: ArcSwap::default(),
        }
    }

    /// Whether flag `key` is archived in the store (so not served).
    pub fn is_archived(&self, key: &str) -> bool {
        self.archived.load().contains(key)
    }

    /// Records which flags the store holds archived.
    pub(crate) fn set_archived(&self, keys: BTreeSet<String>) {
        if **self.archived.load() != keys {
            self.archived.store(Arc::new(keys));
        }
    }
}

/// Every served environment, by key. Readers never wait: the map is swapped whole when an
/// environment appears, which is rare.
pub struct Environments {
    map: ArcSwap<HashMap<String, Arc<Env>>>,
    stream_buffer: usize,
}

impl Environments {
    /// No environments; new ones get change feeds of `stream_buffer` batches.
    pub fn new(stream_buffer: usize) -> Environments {
        Environments {
            map: ArcSwap::from_pointee(HashMap::new()),
            stream_buffer,
        }
    }

    /// The environment `key`, if served.
    pub fn get(&self, key: &str) -> Option<Arc<Env>> {
        self.map.load().get(key).cloned()
    }

    /// The environment `key`, created empty when it is not served yet.
    pub fn get_or_create(&self, key: &str) -> Arc<Env> {
        if let Some(env) = self.get(key) {
            return env;
        }
        let created = Arc::new(Env::new(key, self.stream_buffer));
        let mut result = Arc::clone(&created);
        self.map.rcu(|map| {
            if let Some(existing) = map.get(key) {
                result = Arc::clone(existing);
                return Arc::clone(map);
            }
            result = Arc::clone(&created);
            let mut next = HashMap::clone(map);
            next.insert(key.to_owned(), Arc::clone(&created));
            Arc::new(next)
        });
        result
    }

    /// Adds (or replaces) an environment.
    pub fn insert(&self, env: Arc<Env>) {
        self.map.rcu(|map| {
            let mut next = HashMap::clone(map);
            next.insert(env.key.to_string(), Arc::clone(&env));
            Arc::new(next)
        });
    }

    /// Every environment, sorted by key.
    pub fn all(&self) -> Vec<Arc<Env>> {
        let mut envs: Vec<Arc<Env>> = self.map.load().values().cloned().collect();
        envs.sort_by(|a, b| a.key.cmp(&b.key));
        envs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_or_create_keeps_the_first() {
        let envs = Environments::new(4);
        assert!(envs.get("prod").is_none());
        let a = envs.get_or_create("prod");
        let b = envs.get_or_create("prod");
        assert!(Arc::ptr_eq(&a, &b));
        envs.get_or_create("dev");
        let keys: Vec<String> = envs.all().iter().map(|e| e.key.to_string()).collect();
        assert_eq!(keys, ["dev", "prod"]);
    }
}
