//! Typed flags declared in protobuf, as the server uses them: `--descriptors FILE.pb` names an
//! encoded `google.protobuf.FileDescriptorSet` (what `protoc --include_imports
//! --descriptor_set_out` or protox writes), whose `(flags.feature)` and `(flags.flag)`
//! declarations flags-descriptor reads into a [`Registry`]: each declared flag by key, with its
//! type, layer, compiled default and supported values.
//!
//! - The [`DescriptorWatcher`] keeps the registry current: it follows the file as flag files are
//!   followed (a watch on its directory with a debounce, a content poll, and a read at once on
//!   `SIGHUP`), swaps each good set in whole, and keeps the last good registry when a new file
//!   is bad, saying why in the log and in `/readyz` until a good file arrives.
//! - The registry is the last fallback of evaluation: an answer that serves no value (the flag
//!   is missing, failed to evaluate, or is off without an off variation) of a declared flag
//!   serves its compiled default instead, with the source `COMPILED_DEFAULT` in the answer
//!   (see `crate::evaluate`).
//! - Its types check writes: [`TypedStore`] refuses admin writes of declared flags whose
//!   variations are not of the declared type, and file mode refuses flag files that hold such
//!   flags (`check_files`).
//! - [`sync`] is `flagd sync`: it creates and updates an environment's declared flags.
//!
//! See `docs/descriptors.md`.

mod registry;
pub mod sync;
mod typed_store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use flags_wire::file::{FileContents, Problem, RawData};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

pub use registry::{DeclaredFlag, FlagType, Registry, TypeMismatch, json_of};
pub use typed_store::TypedStore;

use crate::config::ReloadConfig;
use crate::shutdown::Shutdown;
use crate::store::rfc3339;
use crate::watch::{self, ReloadOutcome, Reloadable};

/// Follows a descriptor set file and holds the registry of its last good content.
pub struct DescriptorWatcher {
    /// The file, as the only element, for the watch.
    paths: Vec<PathBuf>,
    registry: ArcSwap<Registry>,
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    /// Hash of the file's content at the last attempt, good or bad.
    last_seen: Option<[u8; 32]>,
    /// When the registry in use was loaded, in Unix milliseconds.
    loaded_at: Option<u64>,
    /// Why the latest content was refused, and when; cleared by the next good one.
    error: Option<(String, u64)>,
}

/// What `/readyz` shows of the descriptor set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescriptorStatus {
    /// The file, as configured.
    pub file: String,
    /// Whether a set is in use (none until a good file has been read).
    pub loaded: bool,
    /// SHA-256 of the set in use, in hex.
    pub digest: Option<String>,
    /// Features declared by the set in use.
    pub features: usize,
    /// Flags declared by the set in use.
    pub flags: usize,
    /// When the set in use was loaded (RFC 3339).
    pub loaded_at: Option<String>,
    /// Why the file's latest content is not in use, until a good one is.
    pub last_error: Option<String>,
    /// When that content was read (RFC 3339).
    pub last_error_at: Option<String>,
}

impl DescriptorWatcher {
    /// A watcher of `path` that has read nothing yet: its registry is empty.
    pub fn new(path: PathBuf) -> DescriptorWatcher {
        DescriptorWatcher {
            paths: vec![path],
            registry: ArcSwap::from_pointee(Registry::default()),
            state: Mutex::new(WatchState::default()),
        }
    }

    /// The file followed.
    pub fn path(&self) -> &Path {
        &self.paths[0]
    }

    /// The registry in use now. Hold it while it is needed: a reload swaps in a new one and
    /// leaves this one as it is.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Reads the file now and, if its content changed since the last attempt, loads it.
    /// Blocking (file I/O): call it from a blocking thread in async code.
    pub fn reload(&self) -> ReloadOutcome {
        let file = FileContents::read(self.path());
        self.load(file)
    }

    /// Where the watcher stands, for `/readyz`.
    pub fn status(&self) -> DescriptorStatus {
        let registry = self.registry();
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let loaded = state.loaded_at.is_some();
        DescriptorStatus {
            file: self.path().display().to_string(),
            loaded,
            digest: loaded.then(|| registry.digest().to_owned()),
            features: registry.feature_count(),
            flags: registry.len(),
            loaded_at: state.loaded_at.map(rfc3339),
            last_error: state.error.as_ref().map(|(message, _)| message.clone()),
            last_error_at: state.error.as_ref().map(|(_, at)| rfc3339(*at)),
        }
    }

    /// Follows the file until `shutdown`, as flag files are followed (see
    /// [`crate::source::FileSource::watch`]), and reads it at once on each message of
    /// `nudges` (`SIGHUP`, in the server).
    pub fn watch(
        self: Arc<Self>,
        reload: ReloadConfig,
        nudges: Option<mpsc::Receiver<()>>,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + 'static {
        watch::watch(self, reload, nudges, shutdown)
    }

    fn load(&self, file: FileContents) -> ReloadOutcome {
        let hash = watch::content_hash(std::slice::from_ref(&file));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.last_seen == Some(hash) {
            return ReloadOutcome::Unchanged;
        }
        state.last_seen = Some(hash);
        let now = now_ms();
        let read = match &file.bytes {
            Ok(bytes) if bytes.is_empty() => Err("the file is empty".to_owned()),
            Ok(bytes) => Registry::from_descriptor_set(bytes).map_err(|e| e.to_string()),
            Err(message) => Err(format!("cannot read it: {message}")),
        };
        match read {
            Ok(registry) => {
                let changes = changed_flags(&self.registry(), &registry);
                tracing::info!(
                    file = %self.path().display(),
                    features = registry.feature_count(),
                    flags = registry.len(),
                    changes,
                    digest = registry.digest(),
                    "descriptor set loaded"
                );
                self.registry.store(Arc::new(registry));
                state.loaded_at = Some(now);
                state.error = None;
                ReloadOutcome::Loaded { changes }
            }
            Err(message) => {
                let message = format!("{}: {message}", self.path().display());
                tracing::error!(
                    error = %message,
                    "descriptor set not loaded; the last good one stays in use"
                );
                state.error = Some((message.clone(), now));
                ReloadOutcome::Failed(message)
            }
        }
    }
}

impl Reloadable for DescriptorWatcher {
    fn watched_paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn reload_settled(&self, settle: Duration) -> ReloadOutcome {
        match watch::read_settled(&self.paths, settle) {
            Some(mut files) => match files.pop() {
                Some(file) => self.load(file),
                None => ReloadOutcome::Unchanged,
            },
            None => ReloadOutcome::Settling,
        }
    }
}

/// How many flags were added, removed or changed between two registries.
fn changed_flags(old: &Registry, new: &Registry) -> usize {
    let changed_or_added = new
        .flags()
        .filter(|flag| old.get(&flag.key) != Some(*flag))
        .count();
    let removed = old
        .flags()
        .filter(|flag| new.get(&flag.key).is_none())
        .count();
    changed_or_added + removed
}

/// Every declared flag of merged flag files whose variations are not of its declared type, as
/// problems that refuse the files (`flags.KEY.variations[i]`, in the file that defines it).
/// Flags whose `variations` is not a list are left to the model's checks.
pub(crate) fn check_files(registry: &Registry, raw: &RawData) -> Vec<Problem> {
    #[derive(serde::Deserialize)]
    struct Variations {
        #[serde(default)]
        variations: Option<Value>,
    }
    let mut problems = Vec::new();
    if registry.is_empty() {
        return problems;
    }
    for (key, item) in &raw.flags {
        let Some(declared) = registry.get(key) else {
            continue;
        };
        let Ok(Variations {
            variations: Some(Value::Array(variations)),
        }) = serde_json::from_str(item.get())
        else {
            continue;
        };
        if let Err(mismatch) = declared.check_variations(&variations) {
            let file = raw.flag_origin.get(key).map(PathBuf::as_path);
            problems.push(Problem::error(
                file,
                format!("flags.{key}.{}", mismatch.path()),
                mismatch.message,
            ));
        }
    }
    problems
}

/// A hash of flag files' content hash and the registry they are checked against, so that a
/// new descriptor set makes the same files load (and be checked) again.
pub(crate) fn checked_hash(content: [u8; 32], registry: Option<&Registry>) -> [u8; 32] {
    match registry {
        None => content,
        Some(registry) => {
            let mut hasher = Sha256::new();
            hasher.update(content);
            hasher.update(registry.digest().as_bytes());
            hasher.finalize().into()
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
