//! `flags-data`: the served data, as one library for every holder of it: flagd's file and
//! database sources, a proxy relaying an upstream flagd, and the SDK.
//!
//! A [`Snapshot`] is one immutable generation of compiled flags and segments with their served
//! versions, tombstones, a digest and a [`DependencyIndex`]. It changes only by
//! [`Snapshot::apply`], which compiles the changed items alone, shares every other compiled
//! item with its parent and reports what changed ([`Applied`]): the items, and through the
//! index the flags whose results may differ.
//!
//! [`Ops`] is the operations layer above the rules: killed flags and per-context overrides. It
//! reaches every client inside the served flags, in data LaunchDarkly's SDKs already read
//! ([`serve_flag`]): a killed flag is served `on: false`, and overrides as individual targets
//! placed first, so they act where targets do, after the prerequisites. flagd's own evaluation
//! ([`Snapshot::evaluate`]) reads the same served flags as the SDKs, so the precedence is
//! written once and no client can answer differently from another.
//!
//! No I/O, no async runtime, no transport: callers bring the data and send the changes.
//!
//! ```
//! use flags_core::{Context, Flag, FlagData};
//! use flags_data::{Ops, Snapshot, Update};
//! use serde_json::json;
//!
//! let flag = |version, value| {
//!     Flag::from_json_value(json!({
//!         "key": "dark-mode", "version": version, "on": true,
//!         "variations": [false, true], "fallthrough": {"variation": value}
//!     }))
//!     .unwrap()
//! };
//! let mut data = FlagData::default();
//! data.flags.insert("dark-mode".into(), flag(1, 0));
//! let first = Snapshot::from_models(data, 1).unwrap();
//!
//! let applied = first.apply(2, vec![Update::Flag(flag(2, 1))]).unwrap().unwrap();
//! assert_eq!(applied.affected_flags().into_iter().collect::<Vec<_>>(), ["dark-mode"]);
//!
//! let ops = Ops::default();
//! let context = Context::from_json(&json!({"key": "user-1"})).unwrap();
//! let detail = applied.snapshot.evaluate(&ops, "dark-mode", &context);
//! assert_eq!(detail.value, Some(&json!(true)));
//! ```

#![warn(missing_docs)]

// The README's example runs as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod deps;
mod ops;
mod served;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use flags_core::{BigSegmentStore, Context, EvalDetail, Flag, FlagData, ItemKind, Segment};
use flags_eval::{CompiledData, CompiledFlag, CompiledSegment, Evaluator};
use sha2::{Digest, Sha256};

pub use deps::DependencyIndex;
pub use ops::Ops;
pub use served::{Override, serve_flag};

/// One immutable, compiled generation of served data.
///
/// Built whole ([`Snapshot::from_models`]) or derived from its parent by [`Snapshot::apply`].
/// The big JSON forms the SDK endpoints send (`latest-all` and the stream's `put`) are rendered
/// on first request and then kept, so a change costs nothing in proportion to the data's size
/// until someone asks for them.
pub struct Snapshot {
    data: CompiledData,
    generation: u64,
    /// Wrapping sum of [`item_hash`] over every live item: updated per item, order-free.
    digest_sum: u128,
    digest: String,
    flag_count: usize,
    segment_count: usize,
    /// Live big (`unbounded`) segments: evaluation needs a big-segment store only when some are.
    big_segment_count: usize,
    deps: DependencyIndex,
    /// The `put` event's data; the `latest-all` body is a slice of it.
    put: OnceLock<Arc<str>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("digest", &self.digest)
            .field("flags", &self.flag_count)
            .field("segments", &self.segment_count)
            .finish_non_exhaustive()
    }
}

/// One change of served data, for [`Snapshot::apply`]. Items carry their served version; an
/// update that is not newer than what the snapshot holds (tombstones included) is ignored.
#[derive(Debug, Clone)]
pub enum Update {
    /// Serve this flag (added or replaced).
    Flag(Flag),
    /// Serve this segment (added or replaced).
    Segment(Segment),
    /// Stop serving a flag; `version` is its tombstone's.
    DeleteFlag {
        /// The flag key.
        key: String,
        /// The tombstone's version.
        version: u64,
    },
    /// Stop serving a segment; `version` is its tombstone's.
    DeleteSegment {
        /// The segment key.
        key: String,
        /// The tombstone's version.
        version: u64,
    },
}

/// One item that changed between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemChange {
    /// Flag or segment.
    pub kind: ItemKind,
    /// The item's key.
    pub key: String,
    /// The version now served (for a deletion, the tombstone's).
    pub version: u64,
    /// Whether the item was removed.
    pub deleted: bool,
}

/// What [`Snapshot::apply`] made: the new snapshot and the updates that took effect, in order.
#[derive(Debug)]
pub struct Applied {
    /// The new generation.
    pub snapshot: Snapshot,
    /// The items that changed, in the order their updates came (stale updates left out).
    pub changed: Vec<ItemChange>,
}

impl Applied {
    /// The flags whose results may differ from the parent snapshot's: each changed flag and
    /// every flag that reaches a changed item through prerequisites or segment matches.
    pub fn affected_flags(&self) -> BTreeSet<String> {
        self.snapshot
            .dependencies()
            .affected_flags(self.changed.iter().map(|c| (c.kind, c.key.as_str())))
    }
}

/// Data the engine refused as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The compiler refused the data.
    #[error("cannot compile flag data: {0}")]
    Compile(String),
}

impl Snapshot {
    /// Compiles a whole set of flags and segments, each carrying its served version.
    pub fn from_models(data: FlagData, generation: u64) -> Result<Snapshot, DataError> {
        let deps = DependencyIndex::build(data.flags.values(), data.segments.values());
        let compiled =
            CompiledData::compile(data).map_err(|e| DataError::Compile(e.to_string()))?;
        Ok(Snapshot::around(compiled, generation, deps))
    }

    /// The snapshot of `data`, with its counts and digest worked out.
    fn around(data: CompiledData, generation: u64, deps: DependencyIndex) -> Snapshot {
        let mut digest_sum = 0u128;
        let mut flag_count = 0;
        let mut segment_count = 0;
        let mut big_segment_count = 0;
        for flag in data.flags() {
            digest_sum =
                digest_sum.wrapping_add(item_hash(ItemKind::Flag, flag.key(), flag.version()));
            flag_count += 1;
        }
        for segment in data.segments() {
            digest_sum = digest_sum.wrapping_add(item_hash(
                ItemKind::Segment,
                segment.key(),
                segment.version(),
            ));
            segment_count += 1;
            big_segment_count += usize::from(segment.is_unbounded());
        }
        Snapshot::assemble(
            data,
            generation,
            digest_sum,
            (flag_count, segment_count, big_segment_count),
            deps,
        )
    }

    /// A snapshot of parts already worked out; its big JSON bodies are rendered on first use.
    fn assemble(
        data: CompiledData,
        generation: u64,
        digest_sum: u128,
        (flag_count, segment_count, big_segment_count): (usize, usize, usize),
        deps: DependencyIndex,
    ) -> Snapshot {
        Snapshot {
            data,
            generation,
            digest_sum,
            digest: format!("{digest_sum:032x}"),
            flag_count,
            segment_count,
            big_segment_count,
            deps,
            put: OnceLock::new(),
        }
    }

    /// A new generation with `updates` applied: only changed items are compiled, every other
    /// one is shared with `self`. `None` when no update took effect (each was stale).
    ///
    /// Updates are taken one at a time, each compiled before the next is asked for, so a caller
    /// can read a big change item by item without holding every model at once.
    pub fn apply(
        &self,
        generation: u64,
        updates: impl IntoIterator<Item = Update>,
    ) -> Result<Option<Applied>, DataError> {
        let updates = updates.into_iter();
        // The first update copies `self`'s compiled data (its key index; compiled items are
        // shared) and dependency index; every update then changes those copies in place.
        let mut derived: Option<(CompiledData, DependencyIndex)> = None;
        let mut digest_sum = self.digest_sum;
        let mut flag_count = self.flag_count;
        let mut segment_count = self.segment_count;
        let mut big_segment_count = self.big_segment_count;
        let is_big = |data: &CompiledData, key: &str| {
            usize::from(data.segment(key).is_some_and(CompiledSegment::is_unbounded))
        };
        let mut changed = Vec::with_capacity(updates.size_hint().0);
        let compile = |e: flags_eval::CompileError| DataError::Compile(e.to_string());
        for update in updates {
            let (data, deps) =
                derived.get_or_insert_with(|| (self.data.clone(), self.deps.clone()));
            let (kind, key, version, deleted, old) = match update {
                Update::Flag(flag) => {
                    let (key, version) = (flag.key.clone(), flag.version);
                    let old = data.flag(&key).map(CompiledFlag::version);
                    let refs = deps::flag_refs(&flag);
                    if !data.put_flag(flag).map_err(compile)? {
                        continue;
                    }
                    deps.set((ItemKind::Flag, key.clone()), refs);
                    (ItemKind::Flag, key, version, false, old)
                }
                Update::Segment(segment) => {
                    let (key, version) = (segment.key.clone(), segment.version);
                    let old = data.segment(&key).map(CompiledSegment::version);
                    let was_big = is_big(data, &key);
                    let refs = deps::segment_refs(&segment);
                    if !data.put_segment(segment).map_err(compile)? {
                        continue;
                    }
                    big_segment_count = big_segment_count + is_big(data, &key) - was_big;
                    deps.set((ItemKind::Segment, key.clone()), refs);
                    (ItemKind::Segment, key, version, false, old)
                }
                Update::DeleteFlag { key, version } => {
                    let old = data.flag(&key).map(CompiledFlag::version);
                    if !data.remove_flag(&key, version) {
                        continue;
                    }
                    deps.remove(ItemKind::Flag, &key);
                    (ItemKind::Flag, key, version, true, old)
                }
                Update::DeleteSegment { key, version } => {
                    let old = data.segment(&key).map(CompiledSegment::version);
                    let was_big = is_big(data, &key);
                    if !data.remove_segment(&key, version) {
                        continue;
                    }
                    big_segment_count -= was_big;
                    deps.remove(ItemKind::Segment, &key);
                    (ItemKind::Segment, key, version, true, old)
                }
            };
            let count = match kind {
                ItemKind::Flag => &mut flag_count,
                ItemKind::Segment => &mut segment_count,
            };
            match old {
                Some(v) => digest_sum = digest_sum.wrapping_sub(item_hash(kind, &key, v)),
                None if !deleted => *count += 1,
                None => {}
            }
            if deleted {
                if old.is_some() {
                    *count -= 1;
                }
            } else {
                digest_sum = digest_sum.wrapping_add(item_hash(kind, &key, version));
            }
            changed.push(ItemChange {
                kind,
                key,
                version,
                deleted,
            });
        }
        let Some((data, deps)) = derived.filter(|_| !changed.is_empty()) else {
            return Ok(None);
        };
        let snapshot = Snapshot::assemble(
            data,
            generation,
            digest_sum,
            (flag_count, segment_count, big_segment_count),
            deps,
        );
        Ok(Some(Applied { snapshot, changed }))
    }

    /// Increases with every published change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A hex digest of every live item's kind, key and served version: equal data, equal
    /// digest (served versions change whenever an item's content does). Kept per item, so it
    /// costs nothing per change.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Which flags reach which items, for working out what a change affects.
    pub fn dependencies(&self) -> &DependencyIndex {
        &self.deps
    }

    /// `{"flags":{...},"segments":{...}}` as served by `/sdk/latest-all`, rendered on first use.
    /// It shares its buffer with [`Snapshot::put_event`].
    pub fn latest_all(&self) -> Bytes {
        Bytes::from_owner(LatestAll(Arc::clone(self.put())))
    }

    /// The data of the SSE `put` event: `{"path":"/","data":{...}}`, rendered on first use.
    pub fn put_event(&self) -> &str {
        self.put()
    }

    /// [`Snapshot::put_event`] as [`Bytes`] sharing its buffer, to send without a copy.
    pub fn put_event_bytes(&self) -> Bytes {
        Bytes::from_owner(Put(Arc::clone(self.put())))
    }

    fn put(&self) -> &Arc<str> {
        self.put.get_or_init(|| {
            let flags = self.data.flags().map(|f| (f.key(), f.json()));
            let segments = self.data.segments().map(|s| (s.key(), s.json()));
            flags_wire::stream::render_put_json(flags, segments).into()
        })
    }

    /// The stream event for one change of this snapshot: a `patch` with the item as served
    /// here, or a `delete` with its tombstone's version.
    pub fn event_for(&self, change: &ItemChange) -> Option<flags_wire::stream::ItemEvent> {
        use flags_wire::stream::{render_delete, render_patch_json};
        if change.deleted {
            return Some(render_delete(change.kind, &change.key, change.version));
        }
        let json = match change.kind {
            ItemKind::Flag => self.data.flag(&change.key).map(CompiledFlag::json),
            ItemKind::Segment => self.data.segment(&change.key).map(CompiledSegment::json),
        };
        json.map(|json| render_patch_json(change.kind, &change.key, json))
    }

    /// The served flag `key` (its model, with served version and `on`), if live. The snapshot
    /// holds flags compiled and as JSON, so this reads the model from the JSON: for the
    /// occasional look, not for every evaluation.
    pub fn flag(&self, key: &str) -> Option<Flag> {
        self.data.flag(key).map(CompiledFlag::to_flag)
    }

    /// The served segment `key`, if live (read from its JSON, as [`Snapshot::flag`]).
    pub fn segment(&self, key: &str) -> Option<Segment> {
        self.data.segment(key).map(CompiledSegment::to_segment)
    }

    /// The served flag `key` compiled, if live: its JSON and what evaluation reads.
    pub fn compiled_flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.data.flag(key)
    }

    /// Every live flag compiled, in no particular order.
    pub fn flags(&self) -> impl Iterator<Item = &CompiledFlag> + '_ {
        self.data.flags()
    }

    /// Every live segment compiled, in no particular order.
    pub fn segments(&self) -> impl Iterator<Item = &CompiledSegment> + '_ {
        self.data.segments()
    }

    /// Number of live flags.
    pub fn flag_count(&self) -> usize {
        self.flag_count
    }

    /// Number of live segments.
    pub fn segment_count(&self) -> usize {
        self.segment_count
    }

    /// Whether any live segment is a big (`unbounded`) one, so that evaluating may need a
    /// big-segment store ([`Snapshot::evaluate_with`]).
    pub fn has_big_segments(&self) -> bool {
        self.big_segment_count > 0
    }

    /// The compiled data, for evaluating with an [`Evaluator`] of one's own.
    pub fn compiled(&self) -> &CompiledData {
        &self.data
    }

    /// Evaluates one flag as served, exactly as an SDK holding this snapshot would: kills and
    /// overrides are in the served flags ([`Ops::serve`]), so `ops` only labels the answer
    /// (`"killed": true` on the `OFF` of a killed flag, `"override": true` on the
    /// `TARGET_MATCH` of an override) and never changes its value, variation or reason kind.
    /// Unknown flags give `ERROR`/`FLAG_NOT_FOUND`.
    #[inline]
    pub fn evaluate<'a>(&'a self, ops: &Ops, flag_key: &str, context: &Context) -> EvalDetail<'a> {
        self.evaluate_with(ops, flag_key, context, None)
    }

    /// [`Snapshot::evaluate`], with big segments' memberships read from `big_segments`
    /// (`None`: no store, so big segments report `NOT_CONFIGURED`, as SDKs without one do).
    #[inline]
    pub fn evaluate_with<'a>(
        &'a self,
        ops: &Ops,
        flag_key: &str,
        context: &Context,
        big_segments: Option<&'a dyn BigSegmentStore>,
    ) -> EvalDetail<'a> {
        let mut detail = self.evaluator(big_segments).evaluate(flag_key, context);
        ops.label(flag_key, context, &mut detail);
        detail
    }

    /// Evaluates every flag as [`Snapshot::evaluate`] does, in key order.
    #[inline]
    pub fn evaluate_all<'a>(
        &'a self,
        ops: &Ops,
        context: &Context,
    ) -> Vec<(&'a str, EvalDetail<'a>)> {
        self.evaluate_all_with(ops, context, None)
    }

    /// [`Snapshot::evaluate_all`], with big segments read from `big_segments` as in
    /// [`Snapshot::evaluate_with`].
    #[inline]
    pub fn evaluate_all_with<'a>(
        &'a self,
        ops: &Ops,
        context: &Context,
        big_segments: Option<&'a dyn BigSegmentStore>,
    ) -> Vec<(&'a str, EvalDetail<'a>)> {
        self.evaluator(big_segments)
            .evaluate_all(context)
            .map(|(key, mut detail)| {
                ops.label(key, context, &mut detail);
                (key, detail)
            })
            .collect()
    }
}

impl Snapshot {
    fn evaluator<'a>(&'a self, big_segments: Option<&'a dyn BigSegmentStore>) -> Evaluator<'a> {
        let evaluator = Evaluator::new(&self.data);
        match big_segments {
            Some(store) => evaluator.with_big_segments(store),
            None => evaluator,
        }
    }
}

/// A rendered `put` event's data, as the owner of a [`Bytes`].
struct Put(Arc<str>);

impl AsRef<[u8]> for Put {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The `latest-all` body inside a rendered `put` event's data, as the owner of a [`Bytes`].
struct LatestAll(Arc<str>);

impl AsRef<[u8]> for LatestAll {
    fn as_ref(&self) -> &[u8] {
        let put = self.0.as_bytes();
        let start = flags_wire::stream::PUT_PREFIX.len().min(put.len());
        &put[start..put.len().saturating_sub(1).max(start)]
    }
}

/// One item's share of the snapshot digest: the first 16 bytes of SHA-256 over its kind, key
/// and served version.
fn item_hash(kind: ItemKind, key: &str, version: u64) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(kind.section().as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    hasher.update([0]);
    hasher.update(version.to_le_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
