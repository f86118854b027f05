//! `TestData`: a data source the application drives, for its own tests and for measuring the
//! client: every change goes through the same path as a stream's `put`, `patch` and `delete`
//! (snapshot, dependency index, listeners), without a server.

use std::sync::{Arc, Mutex, Weak};

use flags_core::{Flag, FlagData, Segment};
use flags_data::{DataError, Update};

use crate::inner::Inner;

/// Flag data that the application changes while clients built on it evaluate. Cheap to clone;
/// every clone is the same source, and every client built with it sees each change.
///
/// ```
/// use flags_core::{Flag, FlagData};
/// use flags_sdk::{Client, Context, DataSource, TestData};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let flag = |version, value: bool| {
///     Flag::from_json_value(serde_json::json!({
///         "key": "f", "version": version, "on": true, "variations": [false, true],
///         "fallthrough": {"variation": usize::from(value)}
///     }))
/// };
/// let mut data = FlagData::default();
/// data.flags.insert("f".into(), flag(1, false)?);
/// let source = TestData::new(data);
/// let client = Client::builder("k").data_source(DataSource::TestData(source.clone())).build()?;
/// let user = Context::user("u")?;
/// assert!(!client.bool_variation(&user, "f", true));
/// source.update_flag(flag(2, true)?)?;
/// assert!(client.bool_variation(&user, "f", false));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct TestData {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    data: FlagData,
    clients: Vec<Weak<Inner>>,
}

impl std::fmt::Debug for TestData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = self.lock();
        f.debug_struct("TestData")
            .field("flags", &shared.data.flags.len())
            .field("segments", &shared.data.segments.len())
            .finish_non_exhaustive()
    }
}

impl TestData {
    /// A source that starts with `data`.
    pub fn new(data: FlagData) -> TestData {
        TestData {
            shared: Arc::new(Mutex::new(Shared {
                data,
                clients: Vec::new(),
            })),
        }
    }

    /// Replaces everything, as a stream's `put` does.
    pub fn put(&self, data: FlagData) -> Result<(), DataError> {
        let mut shared = self.lock();
        shared.data = data;
        let data = shared.data.clone();
        for client in live(&mut shared.clients) {
            client.put(data.clone())?;
        }
        Ok(())
    }

    /// Adds or replaces a flag, as a `patch` does: ignored unless its version is newer than
    /// the one held.
    pub fn update_flag(&self, flag: Flag) -> Result<(), DataError> {
        let mut shared = self.lock();
        if newer(
            shared.data.flags.get(&flag.key).map(|f| f.version),
            flag.version,
        ) {
            shared.data.flags.insert(flag.key.clone(), flag.clone());
        }
        self.apply(&mut shared, Update::Flag(flag))
    }

    /// Adds or replaces a segment, as a `patch` does.
    pub fn update_segment(&self, segment: Segment) -> Result<(), DataError> {
        let mut shared = self.lock();
        let held = shared.data.segments.get(&segment.key).map(|s| s.version);
        if newer(held, segment.version) {
            shared
                .data
                .segments
                .insert(segment.key.clone(), segment.clone());
        }
        self.apply(&mut shared, Update::Segment(segment))
    }

    /// Deletes a flag, leaving a tombstone at `version`, as a `delete` does.
    pub fn delete_flag(&self, key: &str, version: u64) -> Result<(), DataError> {
        let mut shared = self.lock();
        if newer(shared.data.flags.get(key).map(|f| f.version), version) {
            shared.data.flags.remove(key);
        }
        self.apply(
            &mut shared,
            Update::DeleteFlag {
                key: key.to_owned(),
                version,
            },
        )
    }

    /// Deletes a segment, leaving a tombstone at `version`.
    pub fn delete_segment(&self, key: &str, version: u64) -> Result<(), DataError> {
        let mut shared = self.lock();
        if newer(shared.data.segments.get(key).map(|s| s.version), version) {
            shared.data.segments.remove(key);
        }
        self.apply(
            &mut shared,
            Update::DeleteSegment {
                key: key.to_owned(),
                version,
            },
        )
    }

    /// Starts a client on the current data and keeps it told of changes.
    pub(crate) fn attach(&self, client: &Arc<Inner>) -> Result<(), DataError> {
        let mut shared = self.lock();
        client.put(shared.data.clone())?;
        shared.clients.push(Arc::downgrade(client));
        Ok(())
    }

    fn apply(&self, shared: &mut Shared, update: Update) -> Result<(), DataError> {
        for client in live(&mut shared.clients) {
            client.apply(vec![update.clone()])?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a change at `version` takes effect over the item held at `held`, by the rule
/// clients apply: only a newer version does.
fn newer(held: Option<u64>, version: u64) -> bool {
    held.is_none_or(|held| version > held)
}

/// The clients still alive, forgetting the others.
fn live(clients: &mut Vec<Weak<Inner>>) -> Vec<Arc<Inner>> {
    clients.retain(|c| c.strong_count() > 0);
    clients.iter().filter_map(Weak::upgrade).collect()
}
