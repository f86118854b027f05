//! The compiled, immutable snapshot of flags and segments.

use std::sync::Arc;

use crate::hash::StrMap;
use flags_core::{Flag, FlagData, LoadError, Segment};

use crate::compile::{CFlag, CSegment};

/// Flag data that cannot be compiled.
///
/// Compilation itself accepts everything LaunchDarkly's SDKs accept; this error arises only when
/// the input cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// The JSON could not be read as flag data (the message names the field path).
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// One compiled flag: the flag as loaded, plus everything evaluation needs precomputed.
#[derive(Debug)]
pub struct CompiledFlag {
    raw: Flag,
    pub(crate) c: CFlag,
}

impl CompiledFlag {
    /// Compiles one flag.
    pub fn compile(flag: Flag) -> CompiledFlag {
        let c = CFlag::compile(&flag);
        CompiledFlag { raw: flag, c }
    }

    /// The flag as loaded.
    pub fn raw(&self) -> &Flag {
        &self.raw
    }

    /// The flag key.
    pub fn key(&self) -> &str {
        &self.raw.key
    }

    /// The flag version.
    pub fn version(&self) -> u64 {
        self.raw.version
    }

    /// Whether this is a deletion tombstone.
    pub fn is_deleted(&self) -> bool {
        self.raw.deleted
    }
}

/// One compiled segment.
#[derive(Debug)]
pub struct CompiledSegment {
    raw: Segment,
    pub(crate) c: CSegment,
}

impl CompiledSegment {
    /// Compiles one segment.
    pub fn compile(segment: Segment) -> CompiledSegment {
        let c = CSegment::compile(&segment);
        CompiledSegment { raw: segment, c }
    }

    /// The segment as loaded.
    pub fn raw(&self) -> &Segment {
        &self.raw
    }

    /// The segment key.
    pub fn key(&self) -> &str {
        &self.raw.key
    }

    /// The segment version.
    pub fn version(&self) -> u64 {
        self.raw.version
    }

    /// Whether this is a deletion tombstone.
    pub fn is_deleted(&self) -> bool {
        self.raw.deleted
    }
}

/// An immutable compiled snapshot of an environment's flags and segments.
///
/// Items are held behind `Arc`, so deriving a new snapshot from an old one (upsert, delete)
/// copies pointers, not flags. Deleted items stay as tombstones so that stale updates are refused.
#[derive(Debug, Clone, Default)]
pub struct CompiledData {
    flags: StrMap<Arc<CompiledFlag>>,
    segments: StrMap<Arc<CompiledSegment>>,
}

impl CompiledData {
    /// Compiles flag data: regexes, dates, versions, sets and attribute references are all
    /// prepared here, once.
    pub fn compile(data: FlagData) -> Result<CompiledData, CompileError> {
        let mut out = CompiledData::default();
        for (key, mut flag) in data.flags {
            if flag.key.is_empty() {
                flag.key.clone_from(&key);
            }
            out.flags
                .insert(key.into_boxed_str(), Arc::new(CompiledFlag::compile(flag)));
        }
        for (key, mut segment) in data.segments {
            if segment.key.is_empty() {
                segment.key.clone_from(&key);
            }
            out.segments.insert(
                key.into_boxed_str(),
                Arc::new(CompiledSegment::compile(segment)),
            );
        }
        Ok(out)
    }

    /// Reads and compiles LaunchDarkly JSON flag data (`{"flags":{...},"segments":{...}}`).
    pub fn from_json_str(text: &str) -> Result<CompiledData, CompileError> {
        CompiledData::compile(FlagData::from_json_str(text)?)
    }

    /// The live (not deleted) flag with this key.
    pub fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags
            .get(key)
            .map(Arc::as_ref)
            .filter(|f| !f.is_deleted())
    }

    /// The live segment with this key.
    pub fn segment(&self, key: &str) -> Option<&CompiledSegment> {
        self.segments
            .get(key)
            .map(Arc::as_ref)
            .filter(|s| !s.is_deleted())
    }

    /// The flag with this key, including a deletion tombstone.
    pub fn flag_or_tombstone(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags.get(key).map(Arc::as_ref)
    }

    /// The segment with this key, including a deletion tombstone.
    pub fn segment_or_tombstone(&self, key: &str) -> Option<&CompiledSegment> {
        self.segments.get(key).map(Arc::as_ref)
    }

    /// Every live flag, in no particular order.
    pub fn flags(&self) -> impl Iterator<Item = &CompiledFlag> + '_ {
        self.flags
            .values()
            .map(Arc::as_ref)
            .filter(|f| !f.is_deleted())
    }

    /// Every live segment, in no particular order.
    pub fn segments(&self) -> impl Iterator<Item = &CompiledSegment> + '_ {
        self.segments
            .values()
            .map(Arc::as_ref)
            .filter(|s| !s.is_deleted())
    }

    /// The number of live flags.
    pub fn flag_count(&self) -> usize {
        self.flags().count()
    }

    /// The live flags and segments as plain data (tombstones left out).
    pub fn flag_data(&self) -> FlagData {
        FlagData {
            flags: self
                .flags()
                .map(|f| (f.key().to_owned(), f.raw().clone()))
                .collect(),
            segments: self
                .segments()
                .map(|s| (s.key().to_owned(), s.raw().clone()))
                .collect(),
        }
    }

    /// A new snapshot with this flag added or replaced, or `None` when the snapshot already
    /// holds the same or a newer version (including a tombstone).
    pub fn upsert_flag(&self, flag: Flag) -> Result<Option<CompiledData>, CompileError> {
        if self.holds_flag(&flag.key, flag.version) {
            return Ok(None);
        }
        let mut next = self.clone();
        next.put_flag(flag)?;
        Ok(Some(next))
    }

    /// A new snapshot with this segment added or replaced, or `None` when stale.
    pub fn upsert_segment(&self, segment: Segment) -> Result<Option<CompiledData>, CompileError> {
        if self.holds_segment(&segment.key, segment.version) {
            return Ok(None);
        }
        let mut next = self.clone();
        next.put_segment(segment)?;
        Ok(Some(next))
    }

    /// A new snapshot with the flag replaced by a tombstone at `version`, or `None` when stale.
    pub fn delete_flag(&self, key: &str, version: u64) -> Option<CompiledData> {
        if self.holds_flag(key, version) {
            return None;
        }
        let mut next = self.clone();
        next.remove_flag(key, version);
        Some(next)
    }

    /// A new snapshot with the segment replaced by a tombstone at `version`, or `None` when stale.
    pub fn delete_segment(&self, key: &str, version: u64) -> Option<CompiledData> {
        if self.holds_segment(key, version) {
            return None;
        }
        let mut next = self.clone();
        next.remove_segment(key, version);
        Some(next)
    }

    /// Adds or replaces this flag in place; `false`, with nothing changed, when the data
    /// already holds the same or a newer version (including a tombstone). Applying a batch of
    /// changes to one copy this way copies the key index once, not once per change.
    pub fn put_flag(&mut self, flag: Flag) -> Result<bool, CompileError> {
        if self.holds_flag(&flag.key, flag.version) {
            return Ok(false);
        }
        let key: Box<str> = flag.key.as_str().into();
        self.flags
            .insert(key, Arc::new(CompiledFlag::compile(flag)));
        Ok(true)
    }

    /// Adds or replaces this segment in place; `false`, with nothing changed, when stale.
    pub fn put_segment(&mut self, segment: Segment) -> Result<bool, CompileError> {
        if self.holds_segment(&segment.key, segment.version) {
            return Ok(false);
        }
        let key: Box<str> = segment.key.as_str().into();
        self.segments
            .insert(key, Arc::new(CompiledSegment::compile(segment)));
        Ok(true)
    }

    /// Replaces the flag by a tombstone at `version` in place; `false` when stale.
    pub fn remove_flag(&mut self, key: &str, version: u64) -> bool {
        if self.holds_flag(key, version) {
            return false;
        }
        let tombstone = Flag {
            key: key.to_owned(),
            version,
            deleted: true,
            ..Flag::default()
        };
        self.flags
            .insert(key.into(), Arc::new(CompiledFlag::compile(tombstone)));
        true
    }

    /// Replaces the segment by a tombstone at `version` in place; `false` when stale.
    pub fn remove_segment(&mut self, key: &str, version: u64) -> bool {
        if self.holds_segment(key, version) {
            return false;
        }
        let tombstone = Segment {
            key: key.to_owned(),
            version,
            deleted: true,
            ..Segment::default()
        };
        self.segments
            .insert(key.into(), Arc::new(CompiledSegment::compile(tombstone)));
        true
    }

    /// Whether flag `key` is held (live or as a tombstone) at `version` or newer.
    fn holds_flag(&self, key: &str, version: u64) -> bool {
        self.flags
            .get(key)
            .is_some_and(|old| old.version() >= version)
    }

    /// Whether segment `key` is held (live or as a tombstone) at `version` or newer.
    fn holds_segment(&self, key: &str, version: u64) -> bool {
        self.segments
            .get(key)
            .is_some_and(|old| old.version() >= version)
    }
}
