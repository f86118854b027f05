//! Hash maps and sets for compiled data.
//!
//! Compiled maps are built once from flag data and then only read, with short string keys, so
//! they use ahash: much quicker than SipHash on short keys, and randomly seeded so that key
//! layouts are not predictable from outside.

use std::collections::{HashMap, HashSet};

pub(crate) type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
pub(crate) type FastSet<K> = HashSet<K, ahash::RandomState>;
