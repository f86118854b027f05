//! A JSON object's members read straight from a deserializer, so that a context can be parsed
//! from request bytes without first building a `serde_json::Value` for it and copying it again.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The members of a JSON object, sorted by name with each name once; a name given more than once
/// keeps the value given last.
///
/// That is the order and the rule of `serde_json::Map`, so a context parsed from members is
/// checked member by member in the same order, and fails with the same first error, as one
/// parsed from a `Value`. Serializing writes the object as `serde_json` writes the `Map`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Members(Vec<(Name, Value)>);

/// A member name. The names a context gives meaning to are kept as `'static` strings, so that
/// reading them from a request allocates nothing; other short names (most attribute names) are
/// stored inline, and only long ones on the heap. Names compare and sort as strings.
#[derive(Clone)]
pub struct Name(Repr);

/// The longest name stored inline.
const INLINE: usize = 22;

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    /// The first `len` bytes of `bytes` are the name, copied from a `str`.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl Name {
    /// A copy of `name`: inline when it is short.
    pub fn new(name: &str) -> Name {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE => {
                let mut bytes = [0u8; INLINE];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                Name(Repr::Inline { len, bytes })
            }
            _ => Name(Repr::Heap(name.into())),
        }
    }

    /// A member name read from JSON: `'static` when it is one of the names contexts and their
    /// request forms give meaning to (so reading it allocates nothing), otherwise a copy as
    /// [`Name::new`] makes. Every reader of request members names them this way, so that the
    /// same text gives the same `Name` whichever reader read it.
    #[inline]
    pub fn member(name: &str) -> Name {
        known_name(name).unwrap_or_else(|| Name::new(name))
    }

    /// The name.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            // Copied from a `str`, so always UTF-8.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }

    /// The name's bytes, without checking them again.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Static(s) => s.as_bytes(),
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// The name's first eight bytes as a big-endian number, zero-padded: names whose numbers
    /// differ are ordered as their numbers are, without a call into `memcmp`.
    #[inline]
    fn prefix8(&self) -> u64 {
        match &self.0 {
            // Zero-filled past `len` when made.
            Repr::Inline { bytes, .. } => prefix8(bytes),
            Repr::Static(s) => prefix8(s.as_bytes()),
            Repr::Heap(s) => prefix8(s.as_bytes()),
        }
    }

    /// The name as a `String`.
    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Heap(s) => s.into_string(),
            _ => self.as_str().to_owned(),
        }
    }
}

/// The first eight bytes of `bytes` as a big-endian number, zero-padded (see [`Name::prefix8`]).
#[inline]
fn prefix8(bytes: &[u8]) -> u64 {
    match bytes.first_chunk::<8>() {
        Some(first) => u64::from_be_bytes(*first),
        // A few shifts, no call.
        None => bytes
            .iter()
            .enumerate()
            .fold(0, |word, (i, &b)| word | (u64::from(b) << (56 - 8 * i))),
    }
}

/// `name`'s order against `bytes`, whose [`prefix8`] is `prefix`.
#[inline]
fn cmp_name(name: &Name, bytes: &[u8], prefix: u64) -> std::cmp::Ordering {
    match name.prefix8().cmp(&prefix) {
        std::cmp::Ordering::Equal => name.as_bytes().cmp(bytes),
        unequal => unequal,
    }
}

impl From<&'static str> for Name {
    fn from(name: &'static str) -> Name {
        Name(Repr::Static(name))
    }
}

impl From<String> for Name {
    fn from(name: String) -> Name {
        if name.len() <= INLINE {
            Name::new(&name)
        } else {
            Name(Repr::Heap(name.into_boxed_str()))
        }
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Byte order, which is `str`'s order.
impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        // Zero padding keeps the order: a name that ends within the first eight bytes is a
        // prefix of the other, and so first, unless the other continues with zero bytes, when
        // the numbers are equal and the bytes decide.
        cmp_name(self, other.as_bytes(), other.prefix8())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `name` as a [`Name`], `'static` when it is one of the member names contexts and their
/// request forms give meaning to. The length (and for four bytes, the first byte) picks the one
/// candidate, which is then compared.
#[inline]
fn known_name(name: &str) -> Option<Name> {
    let candidate = match (name.len(), name.as_bytes().first()) {
        (3, _) => "key",
        (4, Some(b'k')) => "kind",
        (4, _) => "name",
        (5, _) => "_meta",
        (6, _) => "custom",
        (9, _) => "anonymous",
        (12, _) => "targetingKey",
        (21, _) => "privateAttributeNames",
        _ => return None,
    };
    super::short_eq(candidate, name).then(|| Name::from(candidate))
}

/// A member name read from a deserializer, as a [`Name`].
struct MemberName(Name);

impl<'de> Deserialize<'de> for MemberName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MemberName, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = MemberName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<MemberName, E> {
                Ok(MemberName(Name::member(name)))
            }
            fn visit_string<E: de::Error>(self, name: String) -> Result<MemberName, E> {
                Ok(MemberName(
                    known_name(&name).unwrap_or_else(|| Name::from(name)),
                ))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

impl Members {
    /// Members from name/value pairs in any order; of a repeated name, the last pair wins.
    pub fn from_pairs(mut pairs: Vec<(Name, Value)>) -> Members {
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable, so repeated names stay in the order given and the last one can win.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs.dedup_by(|later, kept| {
                if later.0 == kept.0 {
                    std::mem::swap(&mut later.1, &mut kept.1);
                    true
                } else {
                    false
                }
            });
        }
        Members(pairs)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        let (bytes, prefix) = (name.as_bytes(), prefix8(name.as_bytes()));
        self.0.binary_search_by(|(k, _)| cmp_name(k, bytes, prefix))
    }

    /// The value of the member `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    /// Whether there is a member `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets the member `name`, returning its previous value.
    pub fn insert(&mut self, name: impl Into<Name>, value: Value) -> Option<Value> {
        let name = name.into();
        match self.position(name.as_str()) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    /// Removes the member `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.position(name).ok().map(|i| self.0.remove(i).1)
    }

    /// The members as sorted pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The sorted pairs.
    pub(crate) fn into_pairs(self) -> Vec<(Name, Value)> {
        self.0
    }
}

impl From<Map<String, Value>> for Members {
    fn from(map: Map<String, Value>) -> Members {
        // A map iterates sorted and holds each name once.
        Members::from_pairs(map.into_iter().map(|(k, v)| (Name::from(k), v)).collect())
    }
}

impl From<Members> for Value {
    fn from(members: Members) -> Value {
        Value::Object(
            members
                .0
                .into_iter()
                .map(|(k, v)| (k.into_string(), v))
                .collect(),
        )
    }
}

impl Serialize for Members {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

/// Collects a map's entries (values as `Value`, as `serde_json::Map` reads them), then sorts
/// them once; a repeated name keeps the value given last, as a map does.
fn collect_pairs<'de, A: MapAccess<'de>>(mut map: A) -> Result<Members, A::Error> {
    let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
    while let Some((MemberName(k), v)) = map.next_entry::<MemberName, Value>()? {
        pairs.push((k, v));
    }
    Ok(Members::from_pairs(pairs))
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Members, A::Error> {
                collect_pairs(map)
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

/// Any JSON value, kept as [`Members`] when it is an object. Any other value is read in full (so
/// a syntax error in it is still an error) and dropped: whether a non-object is acceptable is the
/// caller's decision, not a deserialization error.
#[derive(Debug, Clone, PartialEq)]
pub enum MaybeObject {
    /// The value was an object.
    Object(Members),
    /// The value was a string, number, boolean, null or array.
    Other,
}

impl<'de> Deserialize<'de> for MaybeObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MaybeObject, D::Error> {
        d.deserialize_any(MaybeObjectVisitor)
    }
}

struct MaybeObjectVisitor;

impl<'de> Visitor<'de> for MaybeObjectVisitor {
    type Value = MaybeObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MaybeObject, A::Error> {
        collect_pairs(map).map(MaybeObject::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeObject, A::Error> {
        // Read as `Value`s, which is what a `Value` array would check.
        while seq.next_element::<Value>()?.is_some() {}
        Ok(MaybeObject::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other)
    }

    fn visit_none<E: de::Error>(self) -> Result<MaybeObject, E> {
        Ok(MaybeObject::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<MaybeObject, D::Error> {
        IgnoredAny::deserialize(d).map(|_| MaybeObject::Other)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(text: &str) -> MaybeObject {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn members_match_what_a_map_holds() {
        for text in [
            r#"{"b": 1, "a": 2, "c": {"z": 1, "y": 2}}"#,
            r#"{"k": 1, "a": 2, "k": 3, "a": 4, "k": 5}"#,
            r#"{"a": 1, "b": 2}"#,
            "{}",
        ] {
            let MaybeObject::Object(members) = read(text) else {
                panic!("{text} is an object");
            };
            let map: Map<String, Value> = serde_json::from_str(text).unwrap();
            assert_eq!(members, Members::from(map.clone()), "{text}");
            assert_eq!(Value::from(members.clone()), Value::Object(map.clone()));
            assert_eq!(
                serde_json::to_string(&members).unwrap(),
                serde_json::to_string(&map).unwrap()
            );
        }
        let MaybeObject::Object(members) = read(r#"{"k": 1, "a": 2, "k": 3}"#) else {
            panic!("an object");
        };
        assert_eq!(members.get("k"), Some(&json!(3)));
        assert_eq!(members.len(), 2);
    }

    #[test]
    fn other_values_are_read_in_full() {
        for text in [
            "1",
            "-1",
            "1.5",
            "\"x\"",
            "true",
            "null",
            "[1, {\"a\": [2]}]",
        ] {
            assert_eq!(read(text), MaybeObject::Other, "{text}");
        }
        for text in ["[1,", "[1e400]", "{\"a\": 1e400}", "[\"\\x\"]"] {
            assert!(serde_json::from_str::<MaybeObject>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn known_names_are_static_and_only_they() {
        let known = [
            "kind",
            "key",
            "name",
            "anonymous",
            "_meta",
            "targetingKey",
            "custom",
            "privateAttributeNames",
        ];
        for name in known {
            let found = known_name(name).unwrap();
            assert!(matches!(found.0, Repr::Static(s) if s == name), "{name}");
            let member = Name::member(name);
            assert!(matches!(member.0, Repr::Static(s) if s == name), "{name}");
            // Same length, one byte different: not known.
            let mut other = name.to_owned().into_bytes();
            let last = other.len() - 1;
            other[last] ^= 1;
            let other = String::from_utf8(other).unwrap();
            assert!(known_name(&other).is_none(), "{other}");
        }
        for other in [
            "",
            "k",
            "kin",
            "kinds",
            "nam",
            "email",
            "KEY",
            "privateAttributes",
        ] {
            assert!(known_name(other).is_none(), "{other}");
            assert!(
                matches!(Name::member(other).0, Repr::Inline { .. }),
                "{other}"
            );
        }
        let long = "an attribute name longer than twenty-two bytes";
        assert!(matches!(Name::member(long).0, Repr::Heap(ref s) if &**s == long));
    }

    #[test]
    fn names_sort_in_string_order() {
        let texts = [
            "",
            "\0",
            "a",
            "a\0",
            "a\0\0\0\0\0\0\0\0",
            "ab",
            "abcdefgh",
            "abcdefgh\0",
            "abcdefghi",
            "abcdefgha",
            "key",
            "kind",
            "b",
            "ü",
            "zzzzzzzzzzzzzzzzzzzzzzzzz",
            "zzzzzzzz",
            "privateAttributeNames",
            "privateAttributeNamez",
        ];
        let names: Vec<Name> = texts
            .iter()
            .flat_map(|t| {
                [
                    Name::new(t),
                    Name::from((*t).to_owned()),
                    known_name(t).unwrap_or_else(|| Name::new(t)),
                ]
            })
            .collect();
        for a in &names {
            for b in &names {
                assert_eq!(a.cmp(b), a.as_str().cmp(b.as_str()), "{a:?} {b:?}");
            }
        }
        // Lookups find every name, and only those.
        let members = Members::from_pairs(
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| (Name::new(t), json!(i)))
                .collect(),
        );
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(members.get(t), Some(&json!(i)), "{t:?}");
        }
        for absent in [
            "\0\0",
            "a\0\0",
            "abcdefg",
            "abcdefgh\0\0",
            "kinds",
            "privateAttributeNamey",
        ] {
            assert_eq!(members.get(absent), None, "{absent:?}");
        }
        let heap = Name::from("a much longer attribute name than fits inline".to_owned());
        let inline = Name::new("a much");
        assert_eq!(heap.cmp(&inline), std::cmp::Ordering::Greater);
    }

    #[test]
    fn names_compare_as_strings_however_stored() {
        let texts = [
            "",
            "a",
            "kind",
            "ü€",
            "twenty-two-bytes-long!",
            "twenty-three-bytes-long",
            "a much longer attribute name than fits inline",
        ];
        for a in texts {
            let forms = [Name::new(a), Name::from(a.to_owned())];
            for name in &forms {
                assert_eq!(name.as_str(), a);
                assert_eq!(name.as_bytes(), a.as_bytes());
                assert_eq!(name.clone().into_string(), a);
                assert_eq!(format!("{name:?}"), format!("{a:?}"));
            }
            assert_eq!(forms[0], forms[1]);
            for b in texts {
                assert_eq!(Name::new(a).cmp(&Name::new(b)), a.cmp(b), "{a} {b}");
                assert_eq!(Name::new(a) == *b, a == b);
            }
        }
        assert_eq!(Name::from("kind"), Name::new("kind"));
    }

    #[test]
    fn members_can_be_edited() {
        let mut m = Members::from_pairs(vec![("b".into(), json!(1)), ("a".into(), json!(2))]);
        assert_eq!(m.insert("c", json!(3)), None);
        assert_eq!(m.insert("a", json!(4)), Some(json!(2)));
        assert_eq!(m.remove("b"), Some(json!(1)));
        assert!(!m.contains_key("b"));
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![("a", &json!(4)), ("c", &json!(3))]
        );
        assert!(!m.is_empty());
    }
}
