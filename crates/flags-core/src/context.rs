//! LaunchDarkly evaluation contexts: single-kind, multi-kind (`"kind":"multi"`), and the legacy
//! user format (no `kind`).

use std::borrow::Cow;
use std::fmt;

use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::attr::Builtin;
pub use crate::attr::{AttrRef, AttrRefError};

mod members;
// The request reader's building blocks: public so the server can build contexts from request
// bytes without a `Value` tree, but hidden from the documented API and outside its stability
// promise. The API for everyone else is `Context::from_json` and `Deserialize`.
#[doc(hidden)]
pub use members::{MaybeObject, Members, Name};

/// The kind a context has when none is given (legacy users, clauses without `contextKind`).
pub const DEFAULT_KIND: &str = "user";

/// The most kinds a multi-kind context may hold. A multi-kind context names the few entities one
/// evaluation concerns (a user, their organization, their device, the application), and
/// LaunchDarkly's own examples hold two or three, so a hundred leaves room for any real use.
/// Evaluation finds a kind by looking through the context's kinds for every target list,
/// clause, rollout and override that names one, so their number multiplies the cost of every
/// flag evaluated; and a context with more kinds is refused on its count, before any is read.
pub const MAX_KINDS: usize = 100;

/// The most custom attributes (all but kind, key, name and anonymous) a context of one kind may
/// hold. LaunchDarkly sets no such limit, and real contexts hold tens of attributes, a few
/// hundred at the most; ten thousand is far past any of them. Reading a context costs time and
/// memory in proportion to its attributes, and an operator may raise the server's body limit
/// (a library caller has none), so this bounds what one context can cost whatever carries it.
pub const MAX_ATTRIBUTES: usize = 10_000;

/// The most items any array in a context may hold, at any depth: an attribute's value, an array
/// inside it, or a list of private attributes. Clause operators test every item of an array
/// attribute against the clause's values, for every clause that names the attribute in every
/// flag evaluated, so an array's length multiplies the cost of each evaluation. Real arrays
/// (groups, roles, entitlements) hold tens or hundreds of items; ten thousand is far past them.
pub const MAX_ARRAY_ITEMS: usize = 10_000;

static FALSE: Value = Value::Bool(false);
static TRUE: Value = Value::Bool(true);

/// A validated evaluation context: one or more single-kind contexts.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    inner: Inner,
}

#[derive(Debug, Clone, PartialEq)]
enum Inner {
    Single(SingleContext),
    /// At least two contexts with distinct kinds, in the order they were given.
    Multi(Vec<SingleContext>),
}

/// One context of one kind: a kind, a key and attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct SingleContext {
    /// Always a `Value::String`; held as a value so that `get(kind)` can borrow it.
    kind: Value,
    /// Always a `Value::String`, for the same reason.
    key: Value,
    /// A `Value::String` when present.
    name: Option<Value>,
    anonymous: bool,
    /// Attributes other than kind, key, name and anonymous; never `null`.
    attributes: Attributes,
    private_attributes: Vec<AttrRef>,
}

/// Why a JSON value is not a valid context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The context is not a JSON object.
    #[error("context must be a JSON object")]
    NotAnObject,
    /// `kind` is present but not a string.
    #[error("context kind must be a string")]
    KindNotString,
    /// `kind` is a string that is not a valid kind.
    #[error("context kind {kind:?} is invalid: {why}")]
    InvalidKind {
        /// The kind as given.
        kind: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A multi-kind context without any kinds.
    #[error("context kind \"multi\" requires at least one context")]
    EmptyMulti,
    /// An entry of a multi-kind context is not an object.
    #[error("context kind {kind:?} in a multi-kind context must be a JSON object")]
    MultiEntryNotObject {
        /// The entry's kind.
        kind: String,
    },
    /// `key` is absent.
    #[error("context key is missing")]
    MissingKey,
    /// `key` is not a string.
    #[error("context key must be a string")]
    KeyNotString,
    /// `key` is the empty string.
    #[error("context key must not be empty")]
    EmptyKey,
    /// A built-in attribute has the wrong JSON type.
    #[error("context attribute {attribute:?} must be {expected}")]
    AttributeType {
        /// The attribute name.
        attribute: String,
        /// The JSON type it must have.
        expected: &'static str,
    },
    /// A multi-kind context with more than [`MAX_KINDS`] kinds.
    #[error("multi-kind context has {count} kinds, more than the limit of {MAX_KINDS}")]
    TooManyKinds {
        /// The number of kinds given.
        count: usize,
    },
    /// A context with more than [`MAX_ATTRIBUTES`] custom attributes.
    #[error("context has {count} custom attributes, more than the limit of {MAX_ATTRIBUTES}")]
    TooManyAttributes {
        /// The number of custom attributes given.
        count: usize,
    },
    /// An array in a context with more than [`MAX_ARRAY_ITEMS`] items.
    #[error(
        "context attribute {attribute:?} contains an array of {count} items, more than the limit of {MAX_ARRAY_ITEMS}"
    )]
    ArrayTooLong {
        /// The top-level attribute that holds the array.
        attribute: String,
        /// The number of items in the array.
        count: usize,
    },
    /// An error inside one kind of a multi-kind context.
    #[error("in context kind {kind:?}: {source}")]
    InMulti {
        /// The kind whose context is invalid.
        kind: String,
        /// What is wrong with it.
        source: Box<ContextError>,
    },
}

impl Context {
    /// Parses and validates a context from LaunchDarkly JSON.
    pub fn from_json(value: &Value) -> Result<Context, ContextError> {
        Context::from_value(value.clone())
    }

    /// Parses and validates a context from LaunchDarkly JSON, moving its strings and values into
    /// the context rather than copying them.
    pub fn from_value(value: Value) -> Result<Context, ContextError> {
        match value {
            Value::Object(map) => Context::from_members(Members::from(map)),
            _ => Err(ContextError::NotAnObject),
        }
    }

    /// Parses and validates a context from the members of its JSON object, as read by
    /// [`MaybeObject`] straight from a deserializer. Errors are those of [`Context::from_json`]
    /// for the same object.
    #[doc(hidden)]
    pub fn from_members(members: Members) -> Result<Context, ContextError> {
        let mut members = members.into_pairs();
        let kind = members
            .binary_search_by(|(k, _)| k.as_bytes().cmp(b"kind"))
            .ok()
            .map(|i| &mut members[i].1);
        let single = match kind {
            None => parse_legacy_user(members)?,
            Some(Value::String(k)) if k == "multi" => return parse_multi(members),
            Some(kind @ Value::String(_)) => {
                validate_kind(kind.as_str().unwrap_or_default())?;
                // Moved out: `parse_single` skips the `kind` member.
                let kind = std::mem::take(kind);
                parse_single(kind, members)?
            }
            Some(_) => return Err(ContextError::KindNotString),
        };
        Ok(Context {
            inner: Inner::Single(single),
        })
    }

    /// A single-kind context. The kind is validated; the key must be non-empty.
    pub fn single(kind: &str, key: &str) -> Result<Context, ContextError> {
        validate_kind(kind)?;
        if key.is_empty() {
            return Err(ContextError::EmptyKey);
        }
        Ok(Context {
            inner: Inner::Single(SingleContext::bare(kind, key)),
        })
    }

    /// A `user` context with this key.
    pub fn user(key: &str) -> Result<Context, ContextError> {
        Context::single(DEFAULT_KIND, key)
    }

    /// Builds a context from single contexts: one gives that context, several give a multi-kind
    /// context. Kinds must be distinct, and at most [`MAX_KINDS`].
    pub fn multi(contexts: Vec<SingleContext>) -> Result<Context, ContextError> {
        let mut contexts = contexts;
        match contexts.len() {
            0 => Err(ContextError::EmptyMulti),
            1 => Ok(Context {
                inner: Inner::Single(contexts.remove(0)),
            }),
            _ => {
                check_kind_count(contexts.len())?;
                // Each kind against those before it: with at most `MAX_KINDS` kinds that is a
                // few thousand comparisons at worst, and for the usual two or three kinds less
                // than building a set would cost.
                for (i, c) in contexts.iter().enumerate() {
                    if contexts[..i].iter().any(|o| o.kind() == c.kind()) {
                        return Err(ContextError::InvalidKind {
                            kind: c.kind().to_owned(),
                            why: "it appears twice in a multi-kind context",
                        });
                    }
                }
                Ok(Context {
                    inner: Inner::Multi(contexts),
                })
            }
        }
    }

    /// Whether this is a multi-kind context.
    pub fn is_multi(&self) -> bool {
        matches!(self.inner, Inner::Multi(_))
    }

    /// The single contexts, in the order given.
    #[inline]
    pub fn contexts(&self) -> &[SingleContext] {
        match &self.inner {
            Inner::Single(c) => std::slice::from_ref(c),
            Inner::Multi(cs) => cs,
        }
    }

    /// The kinds present, in the order given.
    pub fn kinds(&self) -> impl Iterator<Item = &str> + '_ {
        self.contexts().iter().map(SingleContext::kind)
    }

    /// The context of this kind, if present.
    #[inline]
    pub fn as_single(&self, kind: &str) -> Option<&SingleContext> {
        match &self.inner {
            Inner::Single(c) => short_eq(c.kind(), kind).then_some(c),
            Inner::Multi(cs) => cs.iter().find(|c| short_eq(c.kind(), kind)),
        }
    }

    /// The key of a single-kind context; `None` for a multi-kind context.
    pub fn key(&self) -> Option<&str> {
        match &self.inner {
            Inner::Single(c) => Some(c.key()),
            Inner::Multi(_) => None,
        }
    }

    /// The kind of a single-kind context, or `multi`.
    pub fn kind(&self) -> &str {
        match &self.inner {
            Inner::Single(c) => c.kind(),
            Inner::Multi(_) => "multi",
        }
    }

    /// Takes the context apart, passing each of its owned strings to `keep`: kinds, keys, names,
    /// and every string inside attribute values, object member names included. The rest is
    /// dropped. For a reader of many contexts that reuses string buffers from one context to the
    /// next instead of allocating them again.
    pub fn into_strings<F: FnMut(String)>(mut self, keep: &mut F) {
        self.take_strings(keep);
    }

    /// As [`Context::into_strings`], in place: for a holder that only has `&mut` to a context
    /// it is about to drop (a guard's `Drop`). What is left has no kind, key or attribute
    /// values, and is fit only to be dropped.
    pub fn take_strings<F: FnMut(String)>(&mut self, keep: &mut F) {
        match &mut self.inner {
            Inner::Single(c) => c.take_strings(keep),
            Inner::Multi(cs) => cs.iter_mut().for_each(|c| c.take_strings(keep)),
        }
    }

    /// LaunchDarkly's fully-qualified key: the key for a `user` context, `kind:key` otherwise,
    /// and for multi-kind contexts every `kind:key` sorted by kind and joined with `:`. Keys
    /// escape `%` as `%25` and `:` as `%3A`.
    pub fn fully_qualified_key(&self) -> Cow<'_, str> {
        match &self.inner {
            Inner::Single(c) if c.kind() == DEFAULT_KIND => Cow::Borrowed(c.key()),
            Inner::Single(c) => Cow::Owned(format!("{}:{}", c.kind(), escape_key(c.key()))),
            Inner::Multi(cs) => {
                let mut sorted: Vec<&SingleContext> = cs.iter().collect();
                sorted.sort_by(|a, b| a.kind().cmp(b.kind()));
                let parts: Vec<String> = sorted
                    .iter()
                    .map(|c| format!("{}:{}", c.kind(), escape_key(c.key())))
                    .collect();
                Cow::Owned(parts.join(":"))
            }
        }
    }
}

impl SingleContext {
    /// See [`Context::take_strings`].
    fn take_strings<F: FnMut(String)>(&mut self, keep: &mut F) {
        value_strings(std::mem::take(&mut self.kind), keep);
        value_strings(std::mem::take(&mut self.key), keep);
        if let Some(name) = self.name.take() {
            value_strings(name, keep);
        }
        for (_, value) in &mut self.attributes.0 {
            value_strings(std::mem::take(value), keep);
        }
    }

    fn bare(kind: &str, key: &str) -> SingleContext {
        SingleContext {
            kind: Value::String(kind.to_owned()),
            key: Value::String(key.to_owned()),
            name: None,
            anonymous: false,
            attributes: Attributes::default(),
            private_attributes: Vec::new(),
        }
    }

    /// Parses one single-kind context from JSON (must have a `kind` other than `multi`).
    pub fn from_json(value: &Value) -> Result<SingleContext, ContextError> {
        let ctx = Context::from_json(value)?;
        match ctx.inner {
            Inner::Single(c) => Ok(c),
            Inner::Multi(_) => Err(ContextError::InvalidKind {
                kind: "multi".to_owned(),
                why: "a single context was expected",
            }),
        }
    }

    /// The context kind.
    #[inline]
    pub fn kind(&self) -> &str {
        self.kind.as_str().unwrap_or(DEFAULT_KIND)
    }

    /// The context kind as a JSON string value.
    #[inline]
    pub fn kind_value(&self) -> &Value {
        &self.kind
    }

    /// The context key.
    #[inline]
    pub fn key(&self) -> &str {
        self.key.as_str().unwrap_or("")
    }

    /// The `name` attribute.
    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().and_then(Value::as_str)
    }

    /// Whether the context is anonymous.
    pub fn anonymous(&self) -> bool {
        self.anonymous
    }

    /// Attribute references marked private.
    pub fn private_attributes(&self) -> &[AttrRef] {
        &self.private_attributes
    }

    /// The custom attribute `name` (never one of the built-ins; see [`AttrRef::is_builtin_name`]).
    /// Inlined into callers: evaluation looks custom attributes up in its innermost loop.
    #[inline]
    pub fn custom_attribute(&self, name: &str) -> Option<&Value> {
        self.attributes.get(name)
    }

    /// Attributes other than `kind`, `key`, `name` and `anonymous`, sorted by name.
    pub fn custom_attributes(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.attributes.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Looks up a top-level attribute by name, including the built-ins `kind`, `key`, `name`
    /// and `anonymous` (which is `false` when not set).
    pub fn get_top(&self, name: &str) -> Option<&Value> {
        match name {
            "kind" => Some(&self.kind),
            "key" => Some(&self.key),
            "name" => self.name.as_ref(),
            "anonymous" => Some(if self.anonymous { &TRUE } else { &FALSE }),
            _ => self.attributes.get(name),
        }
    }

    /// Looks up an attribute by reference, descending into nested objects.
    #[inline]
    pub fn get(&self, attr: &AttrRef) -> Option<&Value> {
        // The reference knows which built-in it names, so no name comparisons are needed here.
        let top = match attr.builtin() {
            Builtin::Kind => Some(&self.kind),
            Builtin::Key => Some(&self.key),
            Builtin::Name => self.name.as_ref(),
            Builtin::Anonymous => Some(if self.anonymous { &TRUE } else { &FALSE }),
            Builtin::None => self.attributes.get(attr.first()),
        }?;
        if attr.is_top_level() {
            Some(top)
        } else {
            attr.descend(top)
        }
    }

    /// Sets an attribute (a `null` removes it). Built-ins must have their JSON type, and the
    /// context keeps within [`MAX_ATTRIBUTES`] and [`MAX_ARRAY_ITEMS`].
    pub fn set(&mut self, name: &str, value: Value) -> Result<(), ContextError> {
        match name {
            "kind" => {
                let Value::String(k) = &value else {
                    return Err(ContextError::KindNotString);
                };
                validate_kind(k)?;
                self.kind = value;
            }
            "key" => match &value {
                Value::String(k) if k.is_empty() => return Err(ContextError::EmptyKey),
                Value::String(_) => self.key = value,
                _ => return Err(ContextError::KeyNotString),
            },
            "name" => match value {
                Value::Null => self.name = None,
                Value::String(_) => self.name = Some(value),
                _ => return Err(type_error("name", "a string")),
            },
            "anonymous" => match value {
                Value::Null => self.anonymous = false,
                Value::Bool(b) => self.anonymous = b,
                _ => return Err(type_error("anonymous", "a boolean")),
            },
            _ if value.is_null() => self.attributes.remove(name),
            _ => {
                check_arrays(name, &value)?;
                self.attributes.insert(name, value)?;
            }
        }
        Ok(())
    }

    fn write_fields<M: SerializeMap>(&self, map: &mut M, with_kind: bool) -> Result<(), M::Error> {
        if with_kind {
            map.serialize_entry("kind", &self.kind)?;
        }
        map.serialize_entry("key", &self.key)?;
        if let Some(name) = &self.name {
            map.serialize_entry("name", name)?;
        }
        if self.anonymous {
            map.serialize_entry("anonymous", &true)?;
        }
        for (k, v) in &self.attributes.0 {
            map.serialize_entry(k.as_str(), v)?;
        }
        if !self.private_attributes.is_empty() {
            let refs: Vec<&str> = self
                .private_attributes
                .iter()
                .map(AttrRef::as_str)
                .collect();
            map.serialize_entry("_meta", &serde_json::json!({ "privateAttributes": refs }))?;
        }
        Ok(())
    }
}

/// Attributes sorted by name. Contexts have few attributes, so a short list scanned with a
/// cheap length check beats a tree or a hash map; long lists are binary-searched.
#[derive(Debug, Clone, PartialEq, Default)]
struct Attributes(Vec<(Name, Value)>);

impl Attributes {
    const SCAN_LIMIT: usize = 16;

    #[inline]
    fn get(&self, name: &str) -> Option<&Value> {
        if self.0.len() <= Self::SCAN_LIMIT {
            self.0
                .iter()
                .find(|(k, _)| short_eq_bytes(k.as_bytes(), name.as_bytes()))
                .map(|(_, v)| v)
        } else {
            self.0
                .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
                .ok()
                .map(|i| &self.0[i].1)
        }
    }

    /// Sets `name`; a new attribute past [`MAX_ATTRIBUTES`] is refused.
    fn insert(&mut self, name: &str, value: Value) -> Result<(), ContextError> {
        match self
            .0
            .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
        {
            Ok(i) => self.0[i].1 = value,
            Err(_) if self.0.len() >= MAX_ATTRIBUTES => {
                return Err(ContextError::TooManyAttributes {
                    count: self.0.len() + 1,
                });
            }
            Err(i) => self.0.insert(i, (Name::new(name), value)),
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) {
        if let Ok(i) = self
            .0
            .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
        {
            self.0.remove(i);
        }
    }
}

/// Passes every owned string in `value` to `keep`, object member names included.
fn value_strings<F: FnMut(String)>(value: Value, keep: &mut F) {
    match value {
        Value::String(s) => keep(s),
        Value::Array(items) => items.into_iter().for_each(|v| value_strings(v, keep)),
        Value::Object(map) => map.into_iter().for_each(|(k, v)| {
            keep(k);
            value_strings(v, keep);
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// String equality that compares short strings inline: contexts compare many tiny strings
/// (kinds, attribute names), where a call into `memcmp` costs more than the comparison.
#[inline]
pub(crate) fn short_eq(a: &str, b: &str) -> bool {
    short_eq_bytes(a.as_bytes(), b.as_bytes())
}

/// [`short_eq`] on bytes.
#[inline]
fn short_eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Compare overlapping machine words from both ends: two loads per side for any length up
    // to 16, no loop and no call.
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        8..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        _ => a == b,
    }
}

#[inline(always)]
fn word4(s: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u32::from_ne_bytes(w)
}

#[inline(always)]
fn word8(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_ne_bytes(w)
}

struct SingleBody<'a>(&'a SingleContext);

impl Serialize for SingleBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        self.0.write_fields(&mut map, false)?;
        map.end()
    }
}

impl Serialize for SingleContext {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        self.write_fields(&mut map, true)?;
        map.end()
    }
}

impl Serialize for Context {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.inner {
            Inner::Single(c) => c.serialize(s),
            Inner::Multi(cs) => {
                let mut map = s.serialize_map(Some(cs.len() + 1))?;
                map.serialize_entry("kind", "multi")?;
                for c in cs {
                    map.serialize_entry(c.kind(), &SingleBody(c))?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match MaybeObject::deserialize(d)? {
            MaybeObject::Object(members) => Context::from_members(members),
            MaybeObject::Other => Err(ContextError::NotAnObject),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fully_qualified_key())
    }
}

fn escape_key(key: &str) -> Cow<'_, str> {
    if key.contains(['%', ':']) {
        Cow::Owned(key.replace('%', "%25").replace(':', "%3A"))
    } else {
        Cow::Borrowed(key)
    }
}

fn type_error(attribute: &str, expected: &'static str) -> ContextError {
    ContextError::AttributeType {
        attribute: attribute.to_owned(),
        expected,
    }
}

/// Checks a kind: non-empty, only `[A-Za-z0-9._-]`, and not `kind` or `multi`.
pub fn validate_kind(kind: &str) -> Result<(), ContextError> {
    let why = if kind.is_empty() {
        "it is empty"
    } else if kind == "kind" {
        "\"kind\" is not a valid kind"
    } else if kind == "multi" {
        "\"multi\" is only allowed as the kind of a multi-kind context"
    } else if !kind
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "only letters, digits, '.', '_' and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(ContextError::InvalidKind {
        kind: kind.to_owned(),
        why,
    })
}

/// Refuses more than [`MAX_KINDS`] kinds.
fn check_kind_count(count: usize) -> Result<(), ContextError> {
    if count > MAX_KINDS {
        return Err(ContextError::TooManyKinds { count });
    }
    Ok(())
}

fn parse_multi(members: Vec<(Name, Value)>) -> Result<Context, ContextError> {
    // Every member but `kind` is a kind. They are counted before any is read, so a context with
    // too many costs no more than counting them.
    check_kind_count(members.len().saturating_sub(1))?;
    let mut contexts = Vec::with_capacity(members.len().saturating_sub(1));
    for (kind, body) in members {
        if kind == "kind" {
            continue;
        }
        let kind = kind.into_string();
        if let Err(e) = validate_kind(&kind) {
            return Err(in_multi(kind, e));
        }
        let Value::Object(body) = body else {
            return Err(ContextError::MultiEntryNotObject { kind });
        };
        match parse_single(
            Value::String(kind.clone()),
            Members::from(body).into_pairs(),
        ) {
            Ok(single) => contexts.push(single),
            Err(e) => return Err(in_multi(kind, e)),
        }
    }
    Context::multi(contexts)
}

fn in_multi(kind: String, e: ContextError) -> ContextError {
    ContextError::InMulti {
        kind,
        source: Box::new(e),
    }
}

/// Reads the `key` member of sorted `members`; `allow_empty` for the legacy user format.
fn take_key(members: &mut [(Name, Value)], allow_empty: bool) -> Result<Value, ContextError> {
    let found = members
        .binary_search_by(|(k, _)| k.as_bytes().cmp(b"key"))
        .ok()
        .map(|i| &mut members[i].1);
    match found {
        None | Some(Value::Null) => Err(ContextError::MissingKey),
        Some(Value::String(k)) if k.is_empty() && !allow_empty => Err(ContextError::EmptyKey),
        Some(key @ Value::String(_)) => Ok(std::mem::take(key)),
        Some(_) => Err(ContextError::KeyNotString),
    }
}

/// One single-kind context from its sorted members, which become its attributes in place. Members
/// are checked in order and the first problem is the error, as [`SingleContext::set`] would find
/// it setting each in turn; their number is checked after them, so that the error can give it.
/// `kind` is a `Value::String` holding a valid kind.
fn parse_single(
    kind: Value,
    mut members: Vec<(Name, Value)>,
) -> Result<SingleContext, ContextError> {
    let key = take_key(&mut members, false)?;
    let mut name = None;
    let mut anonymous = false;
    let mut private_attributes = Vec::new();
    let mut error = None;
    members.retain_mut(|(member, value)| {
        if error.is_some() {
            return false;
        }
        // Bytes, so that inline names are not checked as UTF-8 again.
        let outcome = match member.as_bytes() {
            b"kind" | b"key" => Ok(false),
            b"_meta" => parse_meta(&mut private_attributes, value).map(|()| false),
            b"name" => match value {
                Value::Null => Ok(false),
                Value::String(_) => {
                    name = Some(std::mem::take(value));
                    Ok(false)
                }
                _ => Err(type_error("name", "a string")),
            },
            b"anonymous" => match value {
                Value::Null => Ok(false),
                Value::Bool(b) => {
                    anonymous = *b;
                    Ok(false)
                }
                _ => Err(type_error("anonymous", "a boolean")),
            },
            // A `null` attribute is the same as an absent one.
            _ => check_arrays(member, value).map(|()| !value.is_null()),
        };
        outcome.unwrap_or_else(|e| {
            error = Some(e);
            false
        })
    });
    if let Some(e) = error {
        return Err(e);
    }
    check_attribute_count(members.len())?;
    Ok(SingleContext {
        kind,
        key,
        name,
        anonymous,
        attributes: Attributes(members),
        private_attributes,
    })
}

/// Refuses more than [`MAX_ATTRIBUTES`] custom attributes.
fn check_attribute_count(count: usize) -> Result<(), ContextError> {
    if count > MAX_ATTRIBUTES {
        return Err(ContextError::TooManyAttributes { count });
    }
    Ok(())
}

/// Refuses a value of the attribute `attribute` that holds, at any depth, an array of more than
/// [`MAX_ARRAY_ITEMS`] items. Kept small so that it inlines: most values are not containers.
/// The name is read only for the error, so an inline name is not checked as UTF-8 again.
#[inline]
fn check_arrays<A: AsRef<str> + ?Sized>(attribute: &A, value: &Value) -> Result<(), ContextError> {
    if !matches!(value, Value::Array(_) | Value::Object(_)) {
        return Ok(());
    }
    match overlong_array(value) {
        None => Ok(()),
        Some(count) => Err(array_too_long(attribute.as_ref(), count)),
    }
}

/// The length of the first array in `value`, at any depth, with more than [`MAX_ARRAY_ITEMS`]
/// items.
fn overlong_array(value: &Value) -> Option<usize> {
    match value {
        Value::Array(items) if items.len() > MAX_ARRAY_ITEMS => Some(items.len()),
        Value::Array(items) => items.iter().find_map(overlong_array),
        Value::Object(map) => map.values().find_map(overlong_array),
        _ => None,
    }
}

/// Refuses a list of private attributes longer than [`MAX_ARRAY_ITEMS`], before its items are
/// read.
fn check_private_list(attribute: &str, items: &[Value]) -> Result<(), ContextError> {
    if items.len() > MAX_ARRAY_ITEMS {
        return Err(array_too_long(attribute, items.len()));
    }
    Ok(())
}

fn array_too_long(attribute: &str, count: usize) -> ContextError {
    ContextError::ArrayTooLong {
        attribute: attribute.to_owned(),
        count,
    }
}

fn parse_meta(private: &mut Vec<AttrRef>, meta: &Value) -> Result<(), ContextError> {
    let meta = match meta {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        _ => return Err(type_error("_meta", "an object")),
    };
    match meta.get("privateAttributes") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(items)) => {
            check_private_list("_meta.privateAttributes", items)?;
            for item in items {
                let s = item
                    .as_str()
                    .ok_or_else(|| type_error("_meta.privateAttributes", "an array of strings"))?;
                // An invalid reference cannot name any attribute, so it redacts nothing.
                if let Ok(r) = AttrRef::parse(s) {
                    private.push(r);
                }
            }
            Ok(())
        }
        Some(_) => Err(type_error("_meta.privateAttributes", "an array of strings")),
    }
}

/// Built-in attributes of the legacy user format that must be strings.
const LEGACY_STRING_ATTRS: [&str; 8] = [
    "secondary",
    "name",
    "firstName",
    "lastName",
    "email",
    "avatar",
    "ip",
    "country",
];

fn parse_legacy_user(mut members: Vec<(Name, Value)>) -> Result<SingleContext, ContextError> {
    // LaunchDarkly accepts an empty key in the legacy user format, but not a missing one.
    let key = take_key(&mut members, true)?;
    let mut ctx = SingleContext {
        kind: Value::String(DEFAULT_KIND.to_owned()),
        key,
        name: None,
        anonymous: false,
        attributes: Attributes::default(),
        private_attributes: Vec::new(),
    };
    // Collected, then sorted once, whatever order they come in: setting them one at a time
    // moves every attribute already set that sorts after the new one, which grows with the
    // square of their number when they come unsorted (a `serde_json` map keeps the order given
    // when a build enables its `preserve_order` feature). No name comes twice: custom attributes
    // are the members of one object and cannot take the names read from the top level.
    let mut attributes = Vec::new();
    let mut add = |name: Name, value: Value| {
        if !value.is_null() {
            check_arrays(&name, &value)?;
            attributes.push((name, value));
        }
        Ok::<(), ContextError>(())
    };
    for (name, value) in members {
        match name.as_str() {
            "key" => {}
            "anonymous" => ctx.set("anonymous", value)?,
            "custom" => match value {
                Value::Null => {}
                Value::Object(custom) => {
                    for (cname, cvalue) in custom {
                        // Custom attributes cannot shadow the built-ins.
                        if matches!(
                            cname.as_str(),
                            "kind" | "key" | "name" | "anonymous" | "_meta"
                        ) || LEGACY_STRING_ATTRS.contains(&cname.as_str())
                        {
                            continue;
                        }
                        add(Name::from(cname), cvalue)?;
                    }
                }
                _ => return Err(type_error("custom", "an object")),
            },
            "privateAttributeNames" => match value {
                Value::Null => {}
                Value::Array(items) => {
                    check_private_list("privateAttributeNames", &items)?;
                    for item in items {
                        let s = item.as_str().ok_or_else(|| {
                            type_error("privateAttributeNames", "an array of strings")
                        })?;
                        if let Ok(r) = AttrRef::from_literal(s) {
                            ctx.private_attributes.push(r);
                        }
                    }
                }
                _ => return Err(type_error("privateAttributeNames", "an array of strings")),
            },
            // The secondary key no longer takes part in evaluation; it is checked and dropped.
            "secondary" if !(value.is_null() || value.is_string()) => {
                return Err(type_error("secondary", "a string"));
            }
            "secondary" => {}
            n if LEGACY_STRING_ATTRS.contains(&n) => {
                if !(value.is_null() || value.is_string()) {
                    return Err(type_error(n, "a string"));
                }
                if n == "name" {
                    ctx.set(n, value)?;
                } else {
                    add(name, value)?;
                }
            }
            // Other top-level properties are not part of the legacy user schema.
            _ => {}
        }
    }
    check_attribute_count(attributes.len())?;
    ctx.attributes = Attributes(Members::from_pairs(attributes).into_pairs());
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: Value, expected: Result<Value, &str>) {
        match (Context::from_json(&input), expected) {
            (Ok(c), Ok(want)) => assert_eq!(serde_json::to_value(&c).unwrap(), want, "{input}"),
            (Err(e), Err(want)) => assert_eq!(e.to_string(), want, "{input}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_valid_contexts() {
        check(
            json!({"kind": "user", "key": "a"}),
            Ok(json!({"kind": "user", "key": "a"})),
        );
        check(
            json!({"kind": "org", "key": "a", "name": "n", "anonymous": true, "x": {"y": 1}, "z": null}),
            Ok(json!({"kind": "org", "key": "a", "name": "n", "anonymous": true, "x": {"y": 1}})),
        );
        check(
            json!({"kind": "multi", "user": {"key": "a"}, "org": {"key": "b", "c": 2}}),
            Ok(json!({"kind": "multi", "org": {"key": "b", "c": 2}, "user": {"key": "a"}})),
        );
        // A multi-kind context with one kind is that single context.
        check(
            json!({"kind": "multi", "org": {"key": "b"}}),
            Ok(json!({"kind": "org", "key": "b"})),
        );
        check(
            json!({"key": "u", "name": "n", "email": "e", "custom": {"plan": "gold", "key": "no"}, "privateAttributeNames": ["email"]}),
            Ok(
                json!({"kind": "user", "key": "u", "name": "n", "email": "e", "plan": "gold", "_meta": {"privateAttributes": ["email"]}}),
            ),
        );
        check(json!({"key": ""}), Ok(json!({"kind": "user", "key": ""})));
        check(
            json!({"kind": "user", "key": "a", "_meta": {"privateAttributes": ["/a/b", "c"]}}),
            Ok(json!({"kind": "user", "key": "a", "_meta": {"privateAttributes": ["/a/b", "c"]}})),
        );
    }

    #[test]
    fn rejects_invalid_contexts() {
        check(json!("x"), Err("context must be a JSON object"));
        check(
            json!({"kind": 1, "key": "a"}),
            Err("context kind must be a string"),
        );
        check(
            json!({"kind": "", "key": "a"}),
            Err("context kind \"\" is invalid: it is empty"),
        );
        check(
            json!({"kind": "kind", "key": "a"}),
            Err("context kind \"kind\" is invalid: \"kind\" is not a valid kind"),
        );
        check(
            json!({"kind": "a b", "key": "a"}),
            Err(
                "context kind \"a b\" is invalid: only letters, digits, '.', '_' and '-' are allowed",
            ),
        );
        check(
            json!({"kind": "multi"}),
            Err("context kind \"multi\" requires at least one context"),
        );
        check(
            json!({"kind": "multi", "user": "x"}),
            Err("context kind \"user\" in a multi-kind context must be a JSON object"),
        );
        check(
            json!({"kind": "multi", "org": {"key": 3}}),
            Err("in context kind \"org\": context key must be a string"),
        );
        check(json!({"kind": "user"}), Err("context key is missing"));
        check(
            json!({"kind": "user", "key": ""}),
            Err("context key must not be empty"),
        );
        check(
            json!({"kind": "user", "key": 1}),
            Err("context key must be a string"),
        );
        check(json!({}), Err("context key is missing"));
        check(json!({"key": 1}), Err("context key must be a string"));
        check(
            json!({"kind": "user", "key": "a", "name": 3}),
            Err("context attribute \"name\" must be a string"),
        );
        check(
            json!({"kind": "user", "key": "a", "anonymous": "yes"}),
            Err("context attribute \"anonymous\" must be a boolean"),
        );
        check(
            json!({"key": "a", "email": 3}),
            Err("context attribute \"email\" must be a string"),
        );
        check(
            json!({"key": "a", "custom": 3}),
            Err("context attribute \"custom\" must be an object"),
        );
    }

    #[test]
    fn looks_up_attributes() {
        let c = Context::from_json(&json!({"kind": "multi", "user": {"key": "a", "address": {"city": "x"}}, "org": {"key": "b"}}))
            .unwrap();
        let user = c.as_single("user").unwrap();
        assert_eq!(
            user.get(&AttrRef::parse("/address/city").unwrap()),
            Some(&json!("x"))
        );
        assert_eq!(
            user.get(&AttrRef::parse("kind").unwrap()),
            Some(&json!("user"))
        );
        assert_eq!(
            user.get(&AttrRef::parse("anonymous").unwrap()),
            Some(&json!(false))
        );
        assert_eq!(user.get(&AttrRef::parse("name").unwrap()), None);
        assert_eq!(c.key(), None);
        assert!(c.is_multi());
        assert_eq!(c.fully_qualified_key(), "org:b:user:a");
        let org = Context::from_json(&json!({"kind": "org", "key": "a:b%"})).unwrap();
        assert_eq!(org.fully_qualified_key(), "org:a%3Ab%25");
        assert_eq!(Context::user("k").unwrap().fully_qualified_key(), "k");
    }

    /// A context's JSON object with `n` members named `{prefix}{i}`, each `value`, besides those
    /// of `base`.
    fn with_members(base: Value, prefix: &str, n: usize, value: &Value) -> Value {
        let mut object = base;
        if let Value::Object(map) = &mut object {
            for i in 0..n {
                map.insert(format!("{prefix}{i}"), value.clone());
            }
        }
        object
    }

    /// Whether the context parses, or its error's message.
    fn outcome(input: &Value) -> Result<(), String> {
        Context::from_json(input)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn multi_kind_contexts_have_at_most_100_kinds() {
        let multi = |n| with_members(json!({"kind": "multi"}), "k", n, &json!({"key": "x"}));
        assert_eq!(outcome(&multi(2)), Ok(()));
        assert_eq!(outcome(&multi(100)), Ok(()));
        assert_eq!(
            outcome(&multi(101)),
            Err("multi-kind context has 101 kinds, more than the limit of 100".to_owned())
        );
        // The body that used to cost seconds of CPU: refused on its count alone.
        assert_eq!(
            outcome(&multi(40_000)),
            Err("multi-kind context has 40000 kinds, more than the limit of 100".to_owned())
        );
        // Counted before any kind is read: an invalid kind past the limit is not what is found.
        let mut bad = multi(101);
        bad["k0"] = json!({"key": 1});
        assert_eq!(
            outcome(&bad),
            Err("multi-kind context has 101 kinds, more than the limit of 100".to_owned())
        );
        // Built from single contexts, the same.
        let kinds = |n: usize| -> Vec<SingleContext> {
            (0..n)
                .map(|i| Context::single(&format!("k{i}"), "x").unwrap().contexts()[0].clone())
                .collect()
        };
        assert!(Context::multi(kinds(100)).is_ok());
        assert_eq!(
            Context::multi(kinds(101)).map_err(|e| e.to_string()),
            Err("multi-kind context has 101 kinds, more than the limit of 100".to_owned())
        );
        assert_eq!(
            Context::multi(kinds(40_000)).map_err(|e| e.to_string()),
            Err("multi-kind context has 40000 kinds, more than the limit of 100".to_owned())
        );
    }

    #[test]
    fn contexts_have_at_most_10000_custom_attributes() {
        let user = json!({"kind": "user", "key": "u", "name": "n", "anonymous": true});
        let one = json!(1);
        assert_eq!(
            outcome(&with_members(user.clone(), "a", 10_000, &one)),
            Ok(())
        );
        let over = "context has 10001 custom attributes, more than the limit of 10000";
        assert_eq!(
            outcome(&with_members(user.clone(), "a", 10_001, &one)),
            Err(over.to_owned())
        );
        // A `null` attribute is an absent one, and does not count.
        let nulls = with_members(
            with_members(user.clone(), "a", 10_000, &one),
            "z",
            5,
            &Value::Null,
        );
        assert_eq!(outcome(&nulls), Ok(()));
        // In a multi-kind context, per kind, and named.
        let org = with_members(json!({"key": "o"}), "a", 10_001, &one);
        assert_eq!(
            outcome(&json!({"kind": "multi", "user": {"key": "u"}, "org": org})),
            Err(format!("in context kind \"org\": {over}"))
        );
        // The legacy user format: custom attributes and the built-ins kept as attributes.
        let custom = with_members(json!({}), "a", 9_999, &one);
        assert_eq!(
            outcome(&json!({"key": "u", "email": "e", "custom": custom})),
            Ok(())
        );
        assert_eq!(
            outcome(&json!({"key": "u", "email": "e", "country": "c", "custom": custom})),
            Err(over.to_owned())
        );
    }

    #[test]
    fn arrays_in_contexts_have_at_most_10000_items() {
        let items = |n: usize| Value::Array(vec![json!(1); n]);
        let user = |attribute: Value| json!({"kind": "user", "key": "u", "groups": attribute});
        assert_eq!(outcome(&user(items(10_000))), Ok(()));
        let over = |attribute: &str| {
            Err(format!(
                "context attribute {attribute:?} contains an array of 10001 items, \
                 more than the limit of 10000"
            ))
        };
        assert_eq!(outcome(&user(items(10_001))), over("groups"));
        // At any depth, since a clause's attribute reference can reach into objects.
        assert_eq!(
            outcome(&user(json!({"a": [1, {"b": items(10_001)}]}))),
            over("groups")
        );
        assert_eq!(outcome(&user(json!([items(10_001)]))), over("groups"));
        // Lists of private attributes, in both formats.
        let names = |n: usize| Value::Array(vec![json!("email"); n]);
        assert_eq!(
            outcome(
                &json!({"kind": "user", "key": "u", "_meta": {"privateAttributes": names(10_000)}})
            ),
            Ok(())
        );
        assert_eq!(
            outcome(
                &json!({"kind": "user", "key": "u", "_meta": {"privateAttributes": names(10_001)}})
            ),
            over("_meta.privateAttributes")
        );
        assert_eq!(
            outcome(&json!({"key": "u", "privateAttributeNames": names(10_001)})),
            over("privateAttributeNames")
        );
        assert_eq!(
            outcome(&json!({"key": "u", "custom": {"groups": items(10_001)}})),
            over("groups")
        );
    }

    #[test]
    fn built_contexts_keep_the_limits() {
        let mut single = SingleContext::from_json(&with_members(
            json!({"kind": "user", "key": "u"}),
            "a",
            10_000,
            &json!(1),
        ))
        .unwrap();
        assert_eq!(
            single.set("b", json!(1)).map_err(|e| e.to_string()),
            Err("context has 10001 custom attributes, more than the limit of 10000".to_owned())
        );
        // Replacing or removing an attribute, or setting a built-in, adds none.
        assert_eq!(single.set("a0", json!(2)), Ok(()));
        assert_eq!(single.set("name", json!("n")), Ok(()));
        assert_eq!(single.set("a1", Value::Null), Ok(()));
        assert_eq!(single.set("b", json!(1)), Ok(()));
        assert_eq!(
            single
                .set("a2", Value::Array(vec![json!(1); 10_001]))
                .map_err(|e| e.to_string()),
            Err(
                "context attribute \"a2\" contains an array of 10001 items, more than the limit of 10000"
                    .to_owned()
            )
        );
        assert_eq!(single.custom_attribute("a2"), Some(&json!(1)));
    }

    #[test]
    fn into_strings_gives_every_owned_string() {
        let context = Context::from_json(&json!({
            "kind": "multi",
            "user": {"key": "u", "name": "Ann", "anonymous": true, "plan": "pro",
                     "groups": ["a", 1, ["b", null]], "address": {"city": "c", "n": 2}},
            "org": {"key": "o", "size": 3},
        }))
        .unwrap();
        let mut strings = Vec::new();
        context.clone().into_strings(&mut |s| strings.push(s));
        strings.sort();
        let mut taken = Vec::new();
        let mut in_place = context;
        in_place.take_strings(&mut |s| taken.push(s));
        taken.sort();
        assert_eq!(taken, strings);
        // Attribute names (`address`, `plan`) are names, not strings the context owns; member
        // names inside an object value (`city`, `n`) are.
        assert_eq!(
            strings,
            [
                "Ann", "a", "b", "c", "city", "n", "o", "org", "pro", "u", "user"
            ]
        );
    }
}
