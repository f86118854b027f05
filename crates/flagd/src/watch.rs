//! Keeping what flagd loads from files current: a filesystem watch on each file's parent
//! directory (edits, atomic renames, delete-then-recreate and Kubernetes' `..data` symlink
//! swaps), debounced, and a poll of the content's hash for anything the watch misses. The flag
//! files ([`crate::source`]) and a descriptor set ([`crate::descriptors`]) are both kept this
//! way, through [`Reloadable`]; neither knows of the other here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flags_wire::file::FileContents;
use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::ReloadConfig;
use crate::shutdown::Shutdown;

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
