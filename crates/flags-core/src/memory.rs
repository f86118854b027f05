//! In-memory kill set and overrides, for tests and the file-mode server.
//!
//! Lookups take a read lock and borrow the caller's `&str` keys, so they do not allocate.

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock};

use crate::traits::{KillSet, OverrideLookup};

/// A kill set held in memory.
#[derive(Debug, Default)]
pub struct InMemoryKillSet {
    killed: RwLock<HashSet<String>>,
}

impl InMemoryKillSet {
    /// An empty kill set.
    pub fn new() -> InMemoryKillSet {
        InMemoryKillSet::default()
    }

    /// Kills a flag; returns whether it was newly killed.
    pub fn insert(&self, flag_key: &str) -> bool {
        self.killed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(flag_key.to_owned())
    }

    /// Revives a flag; returns whether it was killed.
    pub fn remove(&self, flag_key: &str) -> bool {
        self.killed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(flag_key)
    }

    /// The killed flag keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .killed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        keys.sort();
        keys
    }
}

impl KillSet for InMemoryKillSet {
    fn is_killed(&self, flag_key: &str) -> bool {
        // A poisoned lock only means a writer panicked; the set itself is still consistent.
        self.killed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(flag_key)
    }
}

type KindMap = HashMap<String, HashMap<String, usize>>;

/// Per-entity overrides held in memory: flag → context kind → context key → variation.
#[derive(Debug, Default)]
pub struct InMemoryOverrides {
    by_flag: RwLock<HashMap<String, KindMap>>,
}

impl InMemoryOverrides {
    /// No overrides.
    pub fn new() -> InMemoryOverrides {
        InMemoryOverrides::default()
    }

    /// Pins a context to a variation of a flag; returns the previous variation.
    pub fn insert(
        &self,
        flag_key: &str,
        context_kind: &str,
        context_key: &str,
        variation: usize,
    ) -> Option<usize> {
        self.by_flag
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(flag_key.to_owned())
            .or_default()
            .entry(context_kind.to_owned())
            .or_default()
            .insert(context_key.to_owned(), variation)
    }

    /// Removes an override; returns its variation.
    pub fn remove(&self, flag_key: &str, context_kind: &str, context_key: &str) -> Option<usize> {
        let mut map = self.by_flag.write().unwrap_or_else(PoisonError::into_inner);
        let kinds = map.get_mut(flag_key)?;
        let keys = kinds.get_mut(context_kind)?;
        let old = keys.remove(context_key);
        if keys.is_empty() {
            kinds.remove(context_kind);
        }
        if kinds.is_empty() {
            map.remove(flag_key);
        }
        old
    }

    /// Every override of a flag as (context kind, context key, variation), sorted.
    pub fn of_flag(&self, flag_key: &str) -> Vec<(String, String, usize)> {
        let map = self.by_flag.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(String, String, usize)> = map
            .get(flag_key)
            .into_iter()
            .flatten()
            .flat_map(|(kind, keys)| {
                keys.iter()
                    .map(move |(key, v)| (kind.clone(), key.clone(), *v))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Removes every override of a flag.
    pub fn clear_flag(&self, flag_key: &str) {
        self.by_flag
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(flag_key);
    }
}

impl OverrideLookup for InMemoryOverrides {
    fn variation_for(
        &self,
        flag_key: &str,
        context_kind: &str,
        context_key: &str,
    ) -> Option<usize> {
        let map = self.by_flag.read().unwrap_or_else(PoisonError::into_inner);
        map.get(flag_key)?
            .get(context_kind)?
            .get(context_key)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_set_inserts_and_removes() {
        let k = InMemoryKillSet::new();
        assert!(!k.is_killed("a"));
        assert!(k.insert("a"));
        assert!(!k.insert("a"));
        assert!(k.is_killed("a"));
        assert_eq!(k.keys(), ["a"]);
        assert!(k.remove("a"));
        assert!(!k.is_killed("a"));
    }

    #[test]
    fn overrides_insert_and_remove() {
        let o = InMemoryOverrides::new();
        assert_eq!(o.insert("f", "user", "u1", 2), None);
        assert_eq!(o.insert("f", "user", "u1", 1), Some(2));
        assert_eq!(o.variation_for("f", "user", "u1"), Some(1));
        assert_eq!(o.variation_for("f", "org", "u1"), None);
        assert_eq!(o.variation_for("g", "user", "u1"), None);
        o.insert("f", "org", "o", 0);
        o.insert("f", "user", "a", 2);
        assert_eq!(
            o.of_flag("f"),
            [
                ("org".to_owned(), "o".to_owned(), 0),
                ("user".to_owned(), "a".to_owned(), 2),
                ("user".to_owned(), "u1".to_owned(), 1)
            ]
        );
        assert!(o.of_flag("g").is_empty());
        o.remove("f", "org", "o");
        o.remove("f", "user", "a");
        assert_eq!(o.remove("f", "user", "u1"), Some(1));
        assert_eq!(o.variation_for("f", "user", "u1"), None);
        o.insert("f", "org", "o", 0);
        o.clear_flag("f");
        assert_eq!(o.variation_for("f", "org", "o"), None);
    }
}
