//! The client's data: the current snapshot, swapped whole on every update, and what each
//! update changed, which feeds the change listeners.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;

use arc_swap::ArcSwapOption;
use flags_core::{FlagData, ItemKind};
use flags_data::{DataError, ItemChange, Snapshot, Update};

/// One change of a client's data, as a [`DataHook`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DataUpdate {
    /// The snapshot the client evaluates from now on.
    pub snapshot: Arc<Snapshot>,
    /// The items whose served form changed, appeared or went, with the version now served
    /// (for an item gone, one above the version it had, as a tombstone's).
    pub changed: Vec<ItemChange>,
    /// Whether the whole data set was replaced (a stream's `put`, a poll, a file load) rather
    /// than patched.
    pub replaced: bool,
}

/// Called with every change of a client's data, in order, before evaluations see it: for a
/// program that serves the client's data on (a relay), which must miss no change. It runs
/// while the next update waits, so it must be quick and must not call back into the client.
pub type DataHook = Arc<dyn Fn(&DataUpdate) + Send + Sync>;

/// The snapshot evaluations read, and the lock its writers take in turn.
pub(crate) struct Data {
    current: ArcSwapOption<Snapshot>,
    /// Held while an update is applied, so updates from any source apply one after another in
    /// the order they came; also the generation counter.
    writer: Mutex<u64>,
    hook: Option<DataHook>,
}

/// What one update did.
pub(crate) struct Changed {
    /// The snapshot now served.
    pub new: Arc<Snapshot>,
    /// Flags whose results may differ: changed flags and their dependants, transitively.
    pub affected: BTreeSet<String>,
    /// The first data the client holds: every flag is new, none changed.
    pub first: bool,
}

impl Data {
    pub(crate) fn new(hook: Option<DataHook>) -> Data {
        Data {
            current: ArcSwapOption::const_empty(),
            writer: Mutex::new(0),
            hook,
        }
    }

    /// The current snapshot, read without a lock and without allocating.
    #[inline]
    pub(crate) fn load(&self) -> arc_swap::Guard<Option<Arc<Snapshot>>> {
        self.current.load()
    }

    /// The current snapshot as an owned handle.
    pub(crate) fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Replaces everything with `data` (a stream's `put`, a poll, a file load). Every item
    /// whose served form differs from before counts as changed, and items gone count as
    /// deleted. `None` when nothing differs and data was already held.
    pub(crate) fn replace(&self, data: FlagData) -> Result<Option<Changed>, DataError> {
        let mut generation = self.lock();
        *generation += 1;
        let new = Arc::new(Snapshot::from_models(data, *generation)?);
        let old = self.current.load_full();
        let changed = match &old {
            None => new
                .flags()
                .map(|f| live(ItemKind::Flag, f.key(), f.version()))
                .chain(
                    new.segments()
                        .map(|s| live(ItemKind::Segment, s.key(), s.version())),
                )
                .collect(),
            Some(old) => differences(old, &new),
        };
        if old.is_some() && changed.is_empty() {
            return Ok(None);
        }
        let mut affected = new
            .dependencies()
            .affected_flags(changed.iter().map(|c| (c.kind, c.key.as_str())));
        if let Some(old) = &old {
            // A flag that used a deleted or changed item is found through the old index too.
            affected.extend(
                old.dependencies()
                    .affected_flags(changed.iter().map(|c| (c.kind, c.key.as_str()))),
            );
        }
        self.current.store(Some(Arc::clone(&new)));
        self.tell(&new, changed, true);
        Ok(Some(Changed {
            new,
            affected,
            first: old.is_none(),
        }))
    }

    /// Applies patches and deletes (`None` when each was stale or there is no data yet to
    /// patch; a `put` must come first).
    pub(crate) fn apply(&self, updates: Vec<Update>) -> Result<Option<Changed>, DataError> {
        let mut generation = self.lock();
        let Some(old) = self.current.load_full() else {
            return Ok(None);
        };
        let Some(applied) = old.apply(*generation + 1, updates)? else {
            return Ok(None);
        };
        *generation += 1;
        let affected = applied.affected_flags();
        let new = Arc::new(applied.snapshot);
        self.current.store(Some(Arc::clone(&new)));
        self.tell(&new, applied.changed, false);
        Ok(Some(Changed {
            new,
            affected,
            first: false,
        }))
    }

    /// Runs the hook, if any, while the writer lock is still held: hooks see updates in order.
    fn tell(&self, snapshot: &Arc<Snapshot>, changed: Vec<ItemChange>, replaced: bool) {
        if let Some(hook) = &self.hook {
            hook(&DataUpdate {
                snapshot: Arc::clone(snapshot),
                changed,
                replaced,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The items whose served JSON differs between two snapshots, or that only one has.
fn differences(old: &Snapshot, new: &Snapshot) -> Vec<ItemChange> {
    let (old_data, new_data) = (old.compiled(), new.compiled());
    let mut changed = Vec::new();
    for flag in new.flags() {
        if old_data.flag(flag.key()).map(|f| f.json()) != Some(flag.json()) {
            changed.push(live(ItemKind::Flag, flag.key(), flag.version()));
        }
    }
    for flag in old.flags() {
        if new_data.flag(flag.key()).is_none() {
            changed.push(gone(ItemKind::Flag, flag.key(), flag.version()));
        }
    }
    for segment in new.segments() {
        if old_data.segment(segment.key()).map(|s| s.json()) != Some(segment.json()) {
            changed.push(live(ItemKind::Segment, segment.key(), segment.version()));
        }
    }
    for segment in old.segments() {
        if new_data.segment(segment.key()).is_none() {
            changed.push(gone(ItemKind::Segment, segment.key(), segment.version()));
        }
    }
    changed
}

fn live(kind: ItemKind, key: &str, version: u64) -> ItemChange {
    ItemChange {
        kind,
        key: key.to_owned(),
        version,
        deleted: false,
    }
}

/// An item gone: its tombstone is one version above what was served.
fn gone(kind: ItemKind, key: &str, version: u64) -> ItemChange {
    ItemChange {
        kind,
        key: key.to_owned(),
        version: version.saturating_add(1),
        deleted: true,
    }
}
