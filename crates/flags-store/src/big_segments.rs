//! Big-segment memberships by environment: who is included in or excluded from which
//! generation of which big (`unbounded`) segment, kept by hashed context key as LaunchDarkly's
//! stores keep them (base64 of the SHA-256 of the context key, [`flags_eval::big_segment_hash`]),
//! and when the data was last brought up to date.
//!
//! [`BigSegmentMembers`] is the role a backend takes on to keep them; writes come in uploads
//! ([`MemberUpload`]): changes are handed over in chunks as they are read, so an upload of any
//! size is never held in memory whole, and become visible together at
//! [`MemberUpload::commit`] where the backend has transactions (PostgreSQL and
//! [`MemoryBigSegments`] do; Redis applies each chunk as it comes). An upload dropped before
//! its commit leaves nothing behind, where the backend can promise that.
//!
//! Within one upload a later change of a context overrides an earlier one, and applying the
//! same upload again changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flags_core::BigSegmentMembership;
use flags_eval::big_segment_ref;

use crate::StoreError;

/// What a membership change does for one context in one generation of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberOp {
    /// Include the context (and take it out of the exclusions).
    Include,
    /// Exclude the context (and take it out of the inclusions).
    Exclude,
    /// List it in neither.
    Remove,
}

impl MemberOp {
    /// The name an upload line gives the operation: `include`, `exclude` or `remove`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberOp::Include => "include",
            MemberOp::Exclude => "exclude",
            MemberOp::Remove => "remove",
        }
    }

    /// The operation named `name` ([`MemberOp::as_str`]).
    pub fn from_name(name: &str) -> Option<MemberOp> {
        match name {
            "include" => Some(MemberOp::Include),
            "exclude" => Some(MemberOp::Exclude),
            "remove" => Some(MemberOp::Remove),
            _ => None,
        }
    }
}

/// One change of an upload: an operation on the context whose key hashes to `context_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberChange {
    /// What happens to the context.
    pub op: MemberOp,
    /// The context key's [`flags_eval::big_segment_hash`].
    pub context_hash: String,
}

impl MemberChange {
    /// The change `op` for the context key `context_key` (hashed here).
    pub fn for_key(op: MemberOp, context_key: &str) -> MemberChange {
        MemberChange {
            op,
            context_hash: flags_eval::big_segment_hash(context_key),
        }
    }
}

/// Why an upload's commit did not fully succeed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Nothing of the upload was stored.
    #[error("{0}")]
    NotStored(#[source] StoreError),
    /// The upload was stored, but copying it to the other store failed; that store holds some
    /// or none of it.
    #[error("stored, but not copied: {0}")]
    NotCopied(#[source] StoreError),
}

impl UploadError {
    /// The store's error, whichever side failed: for a commit with no copy, where the two
    /// cannot be told apart.
    pub fn into_store_error(self) -> StoreError {
        match self {
            UploadError::NotStored(e) | UploadError::NotCopied(e) => e,
        }
    }
}

/// A store of big-segment memberships (see the module documentation).
///
/// `env` names an environment; a backend that keeps a single environment (a Redis prefix)
/// says so and ignores it. Nothing here checks that the environment or the segment exist:
/// callers do, through the [`crate::ChangeFeed`] that serves them.
#[async_trait::async_trait]
pub trait BigSegmentMembers: Send + Sync {
    /// Starts an upload of changes to generation `generation` of segment `segment`. With
    /// `fresh`, the generation's current memberships are dropped when the upload commits, so it
    /// ends up holding exactly what the upload lists.
    async fn begin_upload(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        fresh: bool,
    ) -> Result<Box<dyn MemberUpload>, StoreError>;

    /// The memberships of the contexts hashed to `context_hashes`, as flags-core's
    /// [`flags_core::BigSegmentStore`] reads them (segment references `{key}.g{generation}`);
    /// a context listed nowhere is left out of the answer.
    async fn memberships(
        &self,
        env: &str,
        context_hashes: &[String],
    ) -> Result<Vec<(String, BigSegmentMembership)>, StoreError>;

    /// When the memberships were last known to be up to date, in Unix milliseconds (`None`:
    /// never).
    async fn synchronized_on(&self, env: &str) -> Result<Option<u64>, StoreError>;

    /// Records that the memberships are up to date as of `unix_ms`.
    async fn set_synchronized_on(&self, env: &str, unix_ms: u64) -> Result<(), StoreError>;

    /// Drops every membership of generation `generation` of segment `segment` (a generation no
    /// longer served).
    async fn clear_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
    ) -> Result<(), StoreError>;

    /// Applies every membership of generation `generation` of segment `segment` to `into`, as
    /// an inclusion or an exclusion per listed context, [`COPY_CHUNK`] at a time, and answers
    /// how many; `into` is left uncommitted. This is how a copy that missed uploads is built
    /// again from the store that has them all.
    async fn copy_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        into: &mut dyn MemberUpload,
    ) -> Result<u64, StoreError>;
}

/// One upload under way ([`BigSegmentMembers::begin_upload`]).
#[async_trait::async_trait]
pub trait MemberUpload: Send {
    /// Adds a chunk of changes, in order.
    async fn apply(&mut self, changes: &[MemberChange]) -> Result<(), StoreError>;

    /// Stores the upload, then, with `copy`, applies the same changes through that upload (of
    /// another store) and commits it too: the way a mirror receives exactly what was stored.
    async fn commit(
        self: Box<Self>,
        copy: Option<Box<dyn MemberUpload>>,
    ) -> Result<(), UploadError>;
}

/// A context's membership from its listings: (segment key, generation, included).
pub fn membership_of<'a>(
    listings: impl IntoIterator<Item = (&'a str, u64, bool)>,
) -> BigSegmentMembership {
    let mut membership = BigSegmentMembership::default();
    for (segment, generation, included) in listings {
        let reference = big_segment_ref(segment, generation);
        if included {
            membership.included.insert(reference);
        } else {
            membership.excluded.insert(reference);
        }
    }
    membership
}

/// Changes handed to a copy at a time.
pub const COPY_CHUNK: usize = 10_000;

/// Applies `changes` to `copy` in chunks of [`COPY_CHUNK`] and commits it: the copying step of
/// [`MemberUpload::commit`] for backends that have the changes at hand.
pub async fn copy_changes(
    mut copy: Box<dyn MemberUpload>,
    changes: &[MemberChange],
) -> Result<(), UploadError> {
    for chunk in changes.chunks(COPY_CHUNK) {
        copy.apply(chunk).await.map_err(UploadError::NotCopied)?;
    }
    copy.commit(None).await.map_err(|e| match e {
        UploadError::NotStored(e) | UploadError::NotCopied(e) => UploadError::NotCopied(e),
    })
}

/// Big-segment memberships in memory, for tests and for [`crate::MemoryStore`].
#[derive(Debug, Default)]
pub struct MemoryBigSegments {
    /// Shared with the uploads under way, which own what they hold.
    state: Arc<Mutex<MemoryState>>,
}

/// Per environment: per context hash, its listings (segment, generation) → included.
type Listings = HashMap<String, BTreeMap<(String, u64), bool>>;

#[derive(Debug, Default)]
struct MemoryState {
    envs: HashMap<String, Listings>,
    synchronized_on: HashMap<String, u64>,
}

impl MemoryBigSegments {
    /// An empty store.
    pub fn new() -> MemoryBigSegments {
        MemoryBigSegments::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<MemoryState>) -> MutexGuard<'_, MemoryState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An upload into a [`MemoryBigSegments`]: the changes are kept until the commit.
struct MemoryUpload {
    state: Arc<Mutex<MemoryState>>,
    env: String,
    segment: String,
    generation: u64,
    fresh: bool,
    changes: Vec<MemberChange>,
}

#[async_trait::async_trait]
impl MemberUpload for MemoryUpload {
    async fn apply(&mut self, changes: &[MemberChange]) -> Result<(), StoreError> {
        self.changes.extend_from_slice(changes);
        Ok(())
    }

    async fn commit(
        self: Box<Self>,
        copy: Option<Box<dyn MemberUpload>>,
    ) -> Result<(), UploadError> {
        {
            let mut state = lock(&self.state);
            let listings = state.envs.entry(self.env.clone()).or_default();
            let at = (self.segment.clone(), self.generation);
            if self.fresh {
                for of_context in listings.values_mut() {
                    of_context.remove(&at);
                }
            }
            for change in &self.changes {
                let of_context = listings.entry(change.context_hash.clone()).or_default();
                match change.op {
                    MemberOp::Include => drop(of_context.insert(at.clone(), true)),
                    MemberOp::Exclude => drop(of_context.insert(at.clone(), false)),
                    MemberOp::Remove => drop(of_context.remove(&at)),
                }
            }
            listings.retain(|_, of_context| !of_context.is_empty());
        }
        match copy {
            Some(copy) => copy_changes(copy, &self.changes).await,
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl BigSegmentMembers for MemoryBigSegments {
    async fn begin_upload(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        fresh: bool,
    ) -> Result<Box<dyn MemberUpload>, StoreError> {
        Ok(Box::new(MemoryUpload {
            state: Arc::clone(&self.state),
            env: env.to_owned(),
            segment: segment.to_owned(),
            generation,
            fresh,
            changes: Vec::new(),
        }))
    }

    async fn memberships(
        &self,
        env: &str,
        context_hashes: &[String],
    ) -> Result<Vec<(String, BigSegmentMembership)>, StoreError> {
        let state = self.lock();
        let Some(listings) = state.envs.get(env) else {
            return Ok(Vec::new());
        };
        Ok(context_hashes
            .iter()
            .filter_map(|hash| {
                let of_context = listings.get(hash)?;
                let listed = of_context.iter().map(|((segment, generation), included)| {
                    (segment.as_str(), *generation, *included)
                });
                Some((hash.clone(), membership_of(listed)))
            })
            .collect())
    }

    async fn synchronized_on(&self, env: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().synchronized_on.get(env).copied())
    }

    async fn set_synchronized_on(&self, env: &str, unix_ms: u64) -> Result<(), StoreError> {
        self.lock().synchronized_on.insert(env.to_owned(), unix_ms);
        Ok(())
    }

    async fn clear_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(listings) = state.envs.get_mut(env) {
            let at = (segment.to_owned(), generation);
            for of_context in listings.values_mut() {
                of_context.remove(&at);
            }
            listings.retain(|_, of_context| !of_context.is_empty());
        }
        Ok(())
    }

    async fn copy_generation(
        &self,
        env: &str,
        segment: &str,
        generation: u64,
        into: &mut dyn MemberUpload,
    ) -> Result<u64, StoreError> {
        let changes: Vec<MemberChange> = {
            let state = self.lock();
            let at = (segment.to_owned(), generation);
            state
                .envs
                .get(env)
                .into_iter()
                .flat_map(|listings| listings.iter())
                .filter_map(|(hash, of_context)| {
                    let op = match of_context.get(&at)? {
                        true => MemberOp::Include,
                        false => MemberOp::Exclude,
                    };
                    Some(MemberChange {
                        op,
                        context_hash: hash.clone(),
                    })
                })
                .collect()
        };
        for chunk in changes.chunks(COPY_CHUNK) {
            into.apply(chunk).await?;
        }
        Ok(changes.len() as u64)
    }
}
