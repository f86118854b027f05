//! The file data source: reads flag files, builds snapshots, and reloads them when they change.
//!
//! Changes are noticed two ways. An inotify watch (via `notify`) on each file's parent directory
//! sees edits, atomic renames, delete-then-recreate and Kubernetes' `..data` symlink swaps (a
//! watch on the file's inode would miss all but the first); events are debounced so a burst of
//! writes gives one reload. A poll compares a hash of every file's content each interval, for
//! filesystems without inotify and anything the watch misses. Either way, identical content is
//! never reloaded twice.

pub(crate) mod versions;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::ReloadConfig;
use crate::descriptors::{self, DescriptorWatcher, Registry};
use crate::engine::BuildError;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;
use flags_wire::file::{FileContents, Problem, Severity};
use versions::Versions;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are byte-for-byte what was last seen; nothing was done.
    Unchanged,
    /// New data is serving; this many items changed.
    Loaded {
        /// Number of added, changed or removed items.
        changes: usize,
    },
    /// The files are bad; the previous data keeps serving.
    Failed(String),
    /// A file was written too recently, or changed while it was read: it may be half-written,
    /// so it is read again once it has been quiet for the settle time.
    Settling,
}

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
        let files: Vec<FileContents> = self.paths.iter().map(|p| FileContents::read(p)).collect();
        self.reload_files(files)
    }

    fn reload_files(&self, files: Vec<FileContents>) -> ReloadOutcome {
        let registry = self.declared.as_ref().map(|declared| declared.registry());
        let hash = descriptors::checked_hash(content_hash(&files), registry.as_deref());
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.last_seen == Some(hash) {
            return ReloadOutcome::Unchanged;
        }
        state.last_seen = Some(hash);
        match self.load(&mut state, files, registry.as_deref()) {
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
        match read_settled(&self.paths, settle) {
            Some(files) => self.reload_files(files),
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

/// What a watch keeps loaded from files: the flag files, or a descriptor set. It reads them
/// whole and loads them when their content changed since the last attempt.
pub(crate) trait Reloadable: Send + Sync + 'static {
    /// The files, as configured.
    fn watched_paths(&self) -> &[PathBuf];

    /// Reads the files once every one has gone unmodified for `settle` (else
    /// [`ReloadOutcome::Settling`]) and loads them if their content changed. Blocking.
    fn reload_settled(&self, settle: Duration) -> ReloadOutcome;
}

/// Watches `target`'s files until `shutdown`, reloading on change: after `reload.debounce_ms`
/// of quiet following a filesystem event, every `reload.poll_interval_ms` regardless, and at
/// once on each message of `nudges` (a signal asking for a reload now).
///
/// The filesystem watch is set up before this returns (the future only follows it), so a
/// caller that then reads the files cannot miss a change made in between.
pub(crate) fn watch<R: Reloadable>(
    target: Arc<R>,
    reload: ReloadConfig,
    nudges: Option<mpsc::Receiver<()>>,
    shutdown: Shutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let (tx, rx) = mpsc::channel::<()>(1);
    let in_place = Arc::new(AtomicBool::new(false));
    let watcher = if reload.watch {
        start_watcher(target.watched_paths(), tx, Arc::clone(&in_place))
    } else {
        None
    };
    follow(target, watcher, rx, nudges, in_place, reload, shutdown)
}

/// The loop behind [`watch`]. A change that replaced a file (a rename over it, as editors and
/// `kubectl` do) is read after the debounce; one written into a file in place waits until the
/// file has gone unmodified for the settle time, as does whatever the content poll finds,
/// since neither can tell a finished write from a paused one. A nudge reads at once.
async fn follow<R: Reloadable>(
    target: Arc<R>,
    watcher: Option<notify::RecommendedWatcher>,
    mut rx: mpsc::Receiver<()>,
    mut nudges: Option<mpsc::Receiver<()>>,
    in_place: Arc<AtomicBool>,
    reload: ReloadConfig,
    shutdown: Shutdown,
) {
    // Kept alive for the loop's lifetime; dropping it stops the watch.
    let _watcher = watcher;
    let (debounce, poll) = (reload.debounce(), reload.poll_interval());
    let settle = reload.settle();
    let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut deadline: Option<Instant> = None;
    // A read found a file too fresh to trust: the next read waits for it to settle, unless
    // the watch sees it replaced meanwhile.
    let mut needs_settle = false;
    loop {
        let sleep_until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let outcome = tokio::select! {
            () = shutdown.wait() => break,
            Some(()) = rx.recv() => {
                let wait = if in_place.load(Ordering::Relaxed) {
                    settle
                } else {
                    needs_settle = false;
                    debounce
                };
                deadline = Some(Instant::now() + wait);
                continue;
            }
            Some(()) = next_nudge(&mut nudges) => {
                deadline = None;
                needs_settle = false;
                in_place.store(false, Ordering::Relaxed);
                reload_in_background(&target, Duration::ZERO).await
            }
            () = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                deadline = None;
                let written =
                    in_place.swap(false, Ordering::Relaxed) || std::mem::take(&mut needs_settle);
                reload_in_background(&target, if written { settle } else { Duration::ZERO })
                    .await
            }
            // While a read is scheduled, it covers what the poll would find.
            _ = ticker.tick(), if deadline.is_none() => {
                reload_in_background(&target, settle).await
            }
        };
        // A file still being written is looked at again once it may be done.
        if outcome == Some(ReloadOutcome::Settling) {
            needs_settle = true;
            deadline = Some(Instant::now() + settle);
        }
    }
}

/// The next nudge; never, when there are none (or their sender is gone).
async fn next_nudge(nudges: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match nudges {
        Some(rx) => match rx.recv().await {
            Some(()) => Some(()),
            None => {
                *nudges = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

async fn reload_in_background<R: Reloadable>(
    target: &Arc<R>,
    settle: Duration,
) -> Option<ReloadOutcome> {
    let target = Arc::clone(target);
    match tokio::task::spawn_blocking(move || target.reload_settled(settle)).await {
        Ok(outcome) => Some(outcome),
        Err(e) => {
            tracing::error!(error = %e, "reload task failed");
            None
        }
    }
}

/// Watches every file's parent directory (and, for a symlink, its target's directory).
/// Returns None when no watch could be set up; polling still runs.
fn start_watcher(
    paths: &[PathBuf],
    tx: mpsc::Sender<()>,
    in_place: Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    // The files as named and as their links resolve: a write into either is a write in
    // place.
    let mut ours: Vec<PathBuf> = paths.to_vec();
    ours.extend(paths.iter().filter_map(|p| std::fs::canonicalize(p).ok()));
    let handler = move |event: notify::Result<notify::Event>| match event {
        // Our own reads show up as access events; they must not trigger reloads.
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        // One pending signal is enough: the reload reads everything anyway.
        Ok(event) => {
            if matches!(
                event.kind,
                EventKind::Modify(notify::event::ModifyKind::Data(_))
            ) && event.paths.iter().any(|p| ours.contains(p))
            {
                in_place.store(true, Ordering::Relaxed);
            }
            let _ = tx.try_send(());
        }
        Err(e) => tracing::warn!(error = %e, "file watch error; polling continues"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; relying on polling");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        dirs.push(parent_dir(path));
        if let Ok(target) = std::fs::canonicalize(path) {
            dirs.push(parent_dir(&target));
        }
    }
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; relying on polling");
        }
    }
    Some(watcher)
}

/// The files at `paths`, read once every one of them has gone unmodified for `settle`; `None`
/// when one was modified more recently, or changed while it was read (it may be half-written).
pub(crate) fn read_settled(paths: &[PathBuf], settle: Duration) -> Option<Vec<FileContents>> {
    let before = stamps(paths);
    if before
        .iter()
        .flatten()
        .any(|(modified, _)| modified.elapsed().map_or(true, |since| since < settle))
    {
        return None;
    }
    let files: Vec<FileContents> = paths.iter().map(|p| FileContents::read(p)).collect();
    (stamps(paths) == before).then_some(files)
}

/// Each file's modification time and size, where it can be read.
fn stamps(paths: &[PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A hash of what `files` hold, and of why those that could not be read could not.
pub(crate) fn content_hash(files: &[FileContents]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.path.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        match &file.bytes {
            Ok(bytes) => {
                hasher.update([1]);
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
            Err(message) => {
                hasher.update([2]);
                hasher.update(message.as_bytes());
            }
        }
    }
    hasher.finalize().into()
}
