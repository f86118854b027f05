//! Read-mostly maps and sets keyed by strings, for compiled data.
//!
//! Compiled maps (flags and segments by key, target lists, large `in` lists) are built once from
//! flag data and then only read, with short string keys, on every evaluation. [`StrMap`] is an
//! open-addressing table tuned for exactly that: the key is hashed with a few word-sized loads and
//! one or two multiplications, the slot holds the full hash so that almost every mismatch is
//! rejected without touching the key, and keys are compared inline rather than through `memcmp`.
//! The hash is seeded per map from the standard library's random keys, so slot layouts are not
//! predictable from outside.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::ops::short_eq;

/// A map from string keys to values, for data that is built once and then read.
#[derive(Debug, Clone)]
pub(crate) struct StrMap<V> {
    seed: u64,
    entries: Vec<Entry<V>>,
    /// Indexes into `entries`, plus one (0 is an empty slot); the length is a power of two at
    /// least twice the number of entries, so probe sequences stay short and always end.
    slots: Box<[u32]>,
}

#[derive(Debug, Clone)]
struct Entry<V> {
    hash: u64,
    key: Box<str>,
    value: V,
}

impl<V> Default for StrMap<V> {
    fn default() -> Self {
        StrMap {
            seed: RandomState::new().hash_one(0x5EED_u64),
            entries: Vec::new(),
            slots: Box::new([]),
        }
    }
}

/// Multiplies and folds the two halves of the 128-bit product: the mixing step of wyhash.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn word8(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn word4(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

const K0: u64 = 0xa076_1d64_78bd_642f;
const K1: u64 = 0xe703_7ed1_a0b4_28db;
const K2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// Hashes a string with `seed`. Every byte and the length take part, so two keys collide only
/// by chance, however much they share.
#[inline(always)]
fn hash_str(seed: u64, s: &str) -> u64 {
    let s = s.as_bytes();
    let n = s.len();
    if n <= 16 {
        // Overlapping loads from both ends cover every byte; the length tells the overlaps
        // apart. One multiplication is enough for a table that also compares full hashes and
        // keys.
        let (a, b) = match n {
            0 => (0, 0),
            1..=3 => (
                u64::from(s[0]) | (u64::from(s[n / 2]) << 8) | (u64::from(s[n - 1]) << 16),
                0,
            ),
            4..=7 => (word4(s, 0), word4(s, n - 4)),
            _ => (word8(s, 0), word8(s, n - 8)),
        };
        return fold(a ^ seed ^ K1, b ^ ((n as u64) << 56) ^ K2);
    }
    long_hash(seed, s)
}

#[inline(never)]
fn long_hash(seed: u64, s: &[u8]) -> u64 {
    let n = s.len();
    let mut h = seed;
    for c in s.chunks_exact(16) {
        h = fold(word8(c, 0) ^ K1, word8(c, 8) ^ h);
    }
    // The last 16 bytes (overlapping the loop's when the length is not a multiple of 16).
    let (a, b) = (word8(s, n - 16) ^ h, word8(s, n - 8));
    fold(a ^ K1, b ^ seed ^ K2) ^ fold(n as u64 ^ K0, seed)
}

impl<V> StrMap<V> {
    /// The value stored under `key`.
    #[inline(always)]
    pub fn get(&self, key: &str) -> Option<&V> {
        if self.slots.is_empty() {
            return None;
        }
        let hash = hash_str(self.seed, key);
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = self.slots[i] as usize;
            let entry = self.entries.get(slot.wrapping_sub(1))?;
            if entry.hash == hash && short_eq(entry.key.as_bytes(), key.as_bytes()) {
                return Some(&entry.value);
            }
            i = (i + 1) & mask;
        }
    }

    /// Whether `key` is present.
    #[inline]
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Stores `value` under `key`, replacing any value already there.
    pub fn insert(&mut self, key: Box<str>, value: V) {
        match self.position(&key) {
            Some(i) => self.entries[i].value = value,
            None => self.push(key, value),
        }
    }

    /// Stores `value` under `key` unless the key is already present.
    pub fn insert_if_absent(&mut self, key: Box<str>, value: V) {
        if self.position(&key).is_none() {
            self.push(key, value);
        }
    }

    /// The number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The values, in insertion order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().map(|e| &e.value)
    }

    fn position(&self, key: &str) -> Option<usize> {
        let value = self.get(key)?;
        self.entries
            .iter()
            .position(|e| std::ptr::eq(&e.value, value))
    }

    /// Gives back the room kept for more entries: for a map that is complete.
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    fn push(&mut self, key: Box<str>, value: V) {
        let hash = hash_str(self.seed, &key);
        self.entries.push(Entry { hash, key, value });
        if self.entries.len() * 2 > self.slots.len() {
            self.rebuild();
        } else {
            let index = self.entries.len();
            self.place(hash, index);
        }
    }

    fn rebuild(&mut self) {
        let size = (self.entries.len() * 2).next_power_of_two().max(8);
        self.slots = vec![0u32; size].into_boxed_slice();
        for index in 1..=self.entries.len() {
            let hash = self.entries[index - 1].hash;
            self.place(hash, index);
        }
    }

    /// Puts entry `index` (plus one) into the first free slot of its probe sequence.
    fn place(&mut self, hash: u64, index: usize) {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        // Compiled data never holds anywhere near 2^32 keys; saturating keeps this total.
        self.slots[i] = u32::try_from(index).unwrap_or(u32::MAX);
    }
}

impl<V> FromIterator<(Box<str>, V)> for StrMap<V> {
    fn from_iter<I: IntoIterator<Item = (Box<str>, V)>>(iter: I) -> Self {
        let mut map = StrMap::default();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map.shrink_to_fit();
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_and_nothing_else() {
        // Lengths around every branch of the hash, keys sharing long prefixes and suffixes.
        let keys: Vec<String> = (0..2000)
            .map(|i| match i % 4 {
                0 => format!("{i}"),
                1 => format!("feature-{i}-enabled"),
                2 => format!("checkout-flow-{i:05}-enabled-for-all-the-customers"),
                _ => "x".repeat(i % 40),
            })
            .collect();
        let mut map = StrMap::default();
        for (i, k) in keys.iter().enumerate() {
            map.insert_if_absent(k.as_str().into(), i);
        }
        for k in &keys {
            let first = keys.iter().position(|x| x == k).unwrap();
            assert_eq!(map.get(k), Some(&first), "{k}");
        }
        for miss in [
            "",
            "feature--enabled",
            "user-0097",
            "checkout-flow-00002-enabled",
        ] {
            assert_eq!(map.get(miss), None, "{miss}");
        }
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(map.len(), distinct.len());
    }

    #[test]
    fn insert_replaces_and_insert_if_absent_keeps() {
        let mut map = StrMap::default();
        assert!(map.is_empty());
        assert_eq!(map.get("a"), None);
        map.insert("a".into(), 1);
        map.insert("a".into(), 2);
        map.insert_if_absent("a".into(), 3);
        assert_eq!(map.get("a"), Some(&2));
        assert_eq!(map.len(), 1);
        assert!(map.contains_key("a"));
        assert!(!map.contains_key("b"));
    }
}
