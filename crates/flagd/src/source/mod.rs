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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::ReloadConfig;
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
}

/// Reads a fixed list of files into a `Store`.
pub struct FileSource {
    paths: Vec<PathBuf>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
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
            store,
            metrics,
            state: Mutex::new(SourceState::default()),
        }
    }

    /// The files this source reads.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads the files and, if their content differs from the last attempt, loads them. Blocking
    /// (file I/O and compilation): call it from a blocking thread in async code.
    pub fn reload(&self) -> ReloadOutcome {
        let files: Vec<FileContents> = self.paths.iter().map(|p| FileContents::read(p)).collect();
        let hash = content_hash(&files);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.last_seen == Some(hash) {
            return ReloadOutcome::Unchanged;
        }
        state.last_seen = Some(hash);
        match self.load(&mut state, files) {
            Ok(changes) => ReloadOutcome::Loaded { changes },
            Err(message) => {
                tracing::error!(error = %message, "flag data not loaded; the last good data keeps serving");
                self.metrics.reload_failed();
                self.store.record_failure(message.clone());
                ReloadOutcome::Failed(message)
            }
        }
    }

    fn load(&self, state: &mut SourceState, files: Vec<FileContents>) -> Result<usize, String> {
        let (raw, problems) = flags_wire::file::merge_files(&files);
        // The items are copied out of the files' bytes; those go now, not after compiling.
        drop(files);
        let (errors, mut warnings): (Vec<Problem>, Vec<Problem>) = problems
            .into_iter()
            .partition(|p| p.severity == Severity::Error);
        if !errors.is_empty() {
            return Err(BuildError::Invalid(errors).to_string());
        }
        let (versions, changes) = state.versions.assign(&raw);
        let generation = state.generation + 1;
        let served = |kind, key: &str| versions.served(kind, key);
        let current = self.store.snapshot();
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
                self.store.publish(snapshot, built.events);
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
        let (tx, rx) = mpsc::channel::<()>(1);
        let watcher = if reload.watch {
            self.start_watcher(tx)
        } else {
            None
        };
        self.follow(watcher, rx, reload, shutdown)
    }

    async fn follow(
        self: Arc<Self>,
        watcher: Option<notify::RecommendedWatcher>,
        mut rx: mpsc::Receiver<()>,
        reload: ReloadConfig,
        shutdown: Shutdown,
    ) {
        // Kept alive for the loop's lifetime; dropping it stops the watch.
        let _watcher = watcher;
        let (debounce, poll) = (reload.debounce(), reload.poll_interval());
        let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut deadline: Option<Instant> = None;
        loop {
            let sleep_until =
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = shutdown.wait() => break,
                Some(()) = rx.recv() => deadline = Some(Instant::now() + debounce),
                () = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                    deadline = None;
                    self.reload_in_background().await;
                }
                _ = ticker.tick() => self.reload_in_background().await,
            }
        }
    }

    async fn reload_in_background(self: &Arc<Self>) {
        let source = Arc::clone(self);
        if let Err(e) = tokio::task::spawn_blocking(move || source.reload()).await {
            tracing::error!(error = %e, "reload task failed");
        }
    }

    /// Watches every file's parent directory (and, for a symlink, its target's directory).
    /// Returns None when no watch could be set up; polling still runs.
    fn start_watcher(&self, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        let handler = move |event: notify::Result<notify::Event>| match event {
            // Our own reads show up as access events; they must not trigger reloads.
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            // One pending signal is enough: the reload reads everything anyway.
            Ok(_) => {
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
        for path in &self.paths {
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
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn content_hash(files: &[FileContents]) -> [u8; 32] {
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
