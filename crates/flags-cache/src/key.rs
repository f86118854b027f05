//! The key of a per-entity override, with a borrowed form for lookups that do not allocate.
//!
//! The cache stores owned keys, but an evaluation holds only `&str`s for the flag key and the
//! context's kind and key. Building an owned key per lookup would cost three allocations on every
//! hit. Instead the owned key lends itself out as `dyn OverrideKeyParts`, a view over three
//! strings, and any three `&str`s can be viewed the same way; both hash and compare through the
//! view, which keeps `Borrow`'s promise that owned and borrowed forms agree.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// An owned (flag key, context kind, context key) triple.
#[derive(Clone, PartialEq, Eq)]
pub struct OverrideKey {
    flag_key: Box<str>,
    context_kind: Box<str>,
    context_key: Box<str>,
}

/// A borrowed (flag key, context kind, context key) triple, for looking up an [`OverrideKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverrideKeyRef<'a> {
    /// The key of the overridden flag.
    pub flag_key: &'a str,
    /// The kind of the context the override is for (`user`, `org`).
    pub context_kind: &'a str,
    /// The key of that context.
    pub context_key: &'a str,
}

/// Anything that reads as a (flag key, context kind, context key) triple.
///
/// `dyn OverrideKeyParts` is the borrowed form of [`OverrideKey`]: a cache keyed by
/// `OverrideKey` is looked up with `&dyn OverrideKeyParts`, usually from
/// [`OverrideKeyRef::as_query`]. `Sync` lets a future that holds such a reference move between
/// threads.
pub trait OverrideKeyParts: Sync {
    /// The flag key, the context kind and the context key.
    fn parts(&self) -> (&str, &str, &str);
}

impl OverrideKey {
    /// An owned key; copies the three strings.
    pub fn new(flag_key: &str, context_kind: &str, context_key: &str) -> Self {
        Self {
            flag_key: flag_key.into(),
            context_kind: context_kind.into(),
            context_key: context_key.into(),
        }
    }

    /// The key of the overridden flag.
    pub fn flag_key(&self) -> &str {
        &self.flag_key
    }

    /// The kind of the context the override is for (`user`, `org`).
    pub fn context_kind(&self) -> &str {
        &self.context_kind
    }

    /// The key of that context.
    pub fn context_key(&self) -> &str {
        &self.context_key
    }

    /// The borrowed form of this key.
    pub fn borrowed(&self) -> OverrideKeyRef<'_> {
        OverrideKeyRef::new(&self.flag_key, &self.context_kind, &self.context_key)
    }
}

impl<'a> OverrideKeyRef<'a> {
    /// A borrowed key over the three strings; copies nothing.
    pub fn new(flag_key: &'a str, context_kind: &'a str, context_key: &'a str) -> Self {
        Self {
            flag_key,
            context_kind,
            context_key,
        }
    }

    /// This triple as the borrowed form of [`OverrideKey`], for a cache lookup.
    pub fn as_query(&self) -> &(dyn OverrideKeyParts + 'a) {
        self
    }
}

impl OverrideKeyParts for OverrideKey {
    fn parts(&self) -> (&str, &str, &str) {
        (&self.flag_key, &self.context_kind, &self.context_key)
    }
}

impl OverrideKeyParts for OverrideKeyRef<'_> {
    fn parts(&self) -> (&str, &str, &str) {
        (self.flag_key, self.context_kind, self.context_key)
    }
}

impl Hash for dyn OverrideKeyParts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // `str`'s `Hash` ends each string with a terminator byte, so ("ab", "c") and ("a", "bc")
        // hash apart.
        self.parts().hash(state);
    }
}

impl PartialEq for dyn OverrideKeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn OverrideKeyParts + '_ {}

impl Hash for OverrideKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must match the view's hash exactly, or borrowed lookups would miss.
        (self as &dyn OverrideKeyParts).hash(state);
    }
}

impl<'a> Borrow<dyn OverrideKeyParts + 'a> for OverrideKey {
    fn borrow(&self) -> &(dyn OverrideKeyParts + 'a) {
        self
    }
}

impl ToOwned for dyn OverrideKeyParts + '_ {
    type Owned = OverrideKey;

    fn to_owned(&self) -> OverrideKey {
        let (flag_key, context_kind, context_key) = self.parts();
        OverrideKey::new(flag_key, context_kind, context_key)
    }
}

impl fmt::Debug for OverrideKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OverrideKey")
            .field(&self.flag_key)
            .field(&self.context_kind)
            .field(&self.context_key)
            .finish()
    }
}

impl<'a> From<OverrideKeyRef<'a>> for OverrideKey {
    fn from(key: OverrideKeyRef<'a>) -> Self {
        Self::new(key.flag_key, key.context_kind, key.context_key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn owned_and_borrowed_forms_hash_and_compare_alike() {
        let hasher = ahash::RandomState::new();
        let owned = OverrideKey::new("checkout", "user", "u-1");
        let borrowed = OverrideKeyRef::new("checkout", "user", "u-1");
        assert_eq!(
            hasher.hash_one(&owned),
            hasher.hash_one(borrowed.as_query())
        );
        assert!(Borrow::<dyn OverrideKeyParts>::borrow(&owned) == borrowed.as_query());
        assert_eq!(borrowed.as_query().to_owned(), owned);
        assert_eq!(OverrideKey::from(owned.borrowed()), owned);
    }

    #[test]
    fn boundaries_between_the_parts_matter() {
        let mut map = HashMap::new();
        map.insert(OverrideKey::new("ab", "c", "d"), 1);
        map.insert(OverrideKey::new("a", "bc", "d"), 2);
        map.insert(OverrideKey::new("a", "b", "cd"), 3);
        let get = |f, k, c| map.get(OverrideKeyRef::new(f, k, c).as_query()).copied();
        assert_eq!(get("ab", "c", "d"), Some(1));
        assert_eq!(get("a", "bc", "d"), Some(2));
        assert_eq!(get("a", "b", "cd"), Some(3));
        assert_eq!(get("abc", "", "d"), None);
    }
}
