//! The file data source: reads flag files, builds snapshots, and reloads them when they change.
//!
//! Changes are noticed two ways (flagd's `watch` module, which keeps a descriptor set current the
//! same way). An inotify watch (via `notify`) on each file's parent directory
//! sees edits, atomic renames, delete-then-recreate and Kubernetes' `..data` symlink swaps (a
//! watch on the file's inode would miss all but the first); events are debounced so a burst of
//! writes gives one reload. A poll compares a hash of every file's content each interval, for
//! filesystems without inotify and anything the watch misses. Either way, identical content is
//! never reloaded twice.

pub(crate) mod versions;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::ReloadConfig;
use crate::descriptors::{self, DescriptorWatcher, Registry};
use crate::engine::BuildError;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;
use flags_wire::file::{FileContents, Problem, Severity};
use versions::Versions;

pub use crate::watch::ReloadOutcome;
use crate::watch::{Reloadable, content_hash, read_settled, watch};

/// Reads a fixed list of files into a `Store`.
pub struct FileSource {
    paths: Vec<PathBuf>,
    /// A reload deleting more than this share of the flags, in percent, is logged as a warning.
    warn_delete_percent: u8,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// The declared flags the files' flags must match in type, when flagd has descriptors.
    declared: Option<Arc<DescriptorWatcher>>,
    state: Mutex<SourceState>,
}

#[derive(Default)]
struct SourceState {
    versions: Versions,
    generation: u64,
    /// Hash of the files' contents at the last attempt, successful or not.
    last_seen: Option<[u8; 32]>,
}

impl FileSource {
    /// A source for `paths` that nothing has read yet.
    pub fn new(paths: Vec<PathBuf>, store: Arc<Store>, metrics: Arc<Metrics>) -> FileSource {
        FileSource {
            paths,
            warn_delete_percent: 50,
            store,
            metrics,
            declared: None,
            state: Mutex::new(SourceState::default()),
        }
    }

    /// Refuses files holding a flag that `declared`'s descriptor set declares with variations
    /// of another type. A new descriptor set makes the files load again (at the next poll), so
    /// they are checked against it.
    pub fn checked_against(mut self, declared: Arc<DescriptorWatcher>) -> FileSource {
        self.declared = Some(declared);
        self
    }

    /// Warns in the log when a reload deletes more than `percent` of the flags.
    pub fn warn_deletes_over(mut self, percent: u8) -> FileSource {
        self.warn_delete_percent = percent;
        self
    }

    /// The files this source reads.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads the files and, if their content differs from the last attempt, loads them. Blocking
    /// (file I/O and compilation): call it from a blocking thread in async code.
    pub fn reload(&self) -> ReloadOutcome {
        let started = Instant::now();
        let files: Vec<FileContents> = self.paths.iter().map(|p| FileContents::read(p)).collect();
        self.reload_files(files, started)
    }

    /// Loads `files`, read since `started`, unless they are what was seen last.
    fn reload_files(&self, files: Vec<FileContents>, started: Instant) -> ReloadOutcome {
        let registry = self.declared.as_ref().map(|declared| declared.registry());
        let hash = descriptors::checked_hash(content_hash(&files), registry.as_deref());
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.last_seen == Some(hash) {
            return ReloadOutcome::Unchanged;
        }
        state.last_seen = Some(hash);
        if state.generation == 0 {
            // The first load of a large file takes a while before the server can answer; say
            // so (a reload of served data needs no such line: the last data keeps serving).
            let bytes: usize = files
                .iter()
                .map(|f| f.bytes.as_ref().map_or(0, Vec::len))
                .sum();
            tracing::info!(files = files.len(), bytes, "loading flag files");
        }
        match self.load(&mut state, files, registry.as_deref(), started) {
            Ok(changes) => ReloadOutcome::Loaded { changes },
            Err(message) => {
                tracing::error!(error = %message, "flag data not loaded; the last good data keeps serving");
                self.metrics.reload_failed();
                self.store.record_failure(message.clone());
                ReloadOutcome::Failed(message)
            }
        }
    }

    /// [`FileSource::reload`], once every file has gone unmodified for `settle`: a file
    /// modified more recently, or that changes while it is read, is not loaded yet
    /// ([`ReloadOutcome::Settling`]). A file written in place is then loaded whole, not while
    /// its writer pauses half-way.
    pub fn reload_settled(&self, settle: Duration) -> ReloadOutcome {
        let started = Instant::now();
        match read_settled(&self.paths, settle) {
            Some(files) => self.reload_files(files, started),
            None => ReloadOutcome::Settling,
        }
    }

    /// Logs a warning when `changes` delete more than the configured share of the flags served
    /// now: as often a file caught half-written, or the wrong file, as an intended clean-up.
    fn warn_of_deletions(&self, changes: &[flags_data::ItemChange]) {
        let Some(current) = self.store.snapshot() else {
            return;
        };
        let deleted = changes
            .iter()
            .filter(|c| c.deleted && c.kind == flags_core::ItemKind::Flag)
            .count();
        let served = current.flag_count();
        if deleted > 0 && deleted * 100 > served * usize::from(self.warn_delete_percent) {
            tracing::warn!(
                deleted,
                served,
                "this reload deletes more than {}% of the flags; write flag files aside and \
                 rename them into place, so that no half-written file is read",
                self.warn_delete_percent
            );
        }
    }

    fn load(
        &self,
        state: &mut SourceState,
        files: Vec<FileContents>,
        declared: Option<&Registry>,
        started: Instant,
    ) -> Result<usize, String> {
        let (raw, problems) = flags_wire::file::merge_files(&files);
        // The items are copied out of the files' bytes; those go now, not after compiling.
        drop(files);
        let (mut errors, mut warnings): (Vec<Problem>, Vec<Problem>) = problems
            .into_iter()
            .partition(|p| p.severity == Severity::Error);
        if let Some(registry) = declared {
            errors.extend(descriptors::check_files(registry, &raw));
        }
        if !errors.is_empty() {
            return Err(BuildError::Invalid(errors).to_string());
        }
        let (versions, changes) = state.versions.assign(&raw);
        self.warn_of_deletions(&changes);
        let generation = state.generation + 1;
        let served = |kind, key: &str| versions.served(kind, key);
        // Data read from Redis at start is no base for the files' data: it is replaced whole.
        let warm = self.store.is_warm();
        let current = if warm { None } else { self.store.snapshot() };
        let built = crate::engine::build(raw, served, current.as_deref(), generation, &changes)
            .map_err(|e| e.to_string())?;
        warnings.extend(built.warnings);
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        state.versions = versions;
        let (flags, segments) = match built.snapshot {
            Some(snapshot) => {
                let counts = (snapshot.flag_count(), snapshot.segment_count());
                tracing::info!(
                    generation,
                    flags = counts.0,
                    segments = counts.1,
                    changes = changes.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "flag data loaded"
                );
                state.generation = generation;
                if warm {
                    self.store.publish_reset(Arc::new(snapshot));
                } else {
                    self.store.publish(snapshot, built.events);
                }
                // The generation this one replaced goes once its last reader is done, which
                // for most is now; what it held goes back to the system.
                drop(current);
                crate::memory::release_free_pages();
                counts
            }
            // The files changed, but no item did (only their layout, say).
            None => {
                let current = current.as_deref();
                let counts = current.map_or((0, 0), |s| (s.flag_count(), s.segment_count()));
                tracing::info!(
                    flags = counts.0,
                    segments = counts.1,
                    "flag files changed, but no flag or segment did"
                );
                counts
            }
        };
        self.store
            .record_success(warnings.iter().map(ToString::to_string).collect());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.reload_ok(flags, segments, now);
        Ok(changes.len())
    }

    /// Watches the files until `shutdown`, reloading on change: after `reload.debounce_ms` of
    /// quiet following a filesystem event, and every `reload.poll_interval_ms` regardless.
    ///
    /// The filesystem watch is set up before this returns (the future only follows it), so a
    /// caller that then reads the files cannot miss a change made in between.
    pub fn watch(
        self: Arc<Self>,
        reload: ReloadConfig,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + 'static {
        watch(self, reload, None, shutdown)
    }
}

impl Reloadable for FileSource {
    fn watched_paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn reload_settled(&self, settle: Duration) -> ReloadOutcome {
        FileSource::reload_settled(self, settle)
    }
}
