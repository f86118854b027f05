//! Big (unbounded) segments: membership comes from a [`BigSegmentStore`], not from the
//! segment's own lists, and every evaluation that asks the store reports how the store was
//! doing (`bigSegmentsStatus` in the reason), as LaunchDarkly's SDKs do.
//!
//! The rules, as LaunchDarkly's SDKs and their shared contract tests have them:
//! - A big segment without a `generation` cannot be looked up: `NOT_CONFIGURED`, and it does not
//!   match (its rules are not tried). This is checked before the context kind.
//! - A context without the segment's `unboundedContextKind` (default `user`) does not match, and
//!   nothing is queried or reported.
//! - The segment's `included`/`excluded` lists (and their per-kind forms) are ignored.
//! - The store is asked once per evaluation per context key (the query is by key alone, so a
//!   multi-kind context whose kinds share a key is queried once), under the base64 SHA-256 of the
//!   key, and the answer is kept for the rest of that evaluation, prerequisites included.
//! - The membership names segments as `"{key}.g{generation}"`: included → member, excluded →
//!   not (when a reference is listed both ways, inclusion wins); not listed, no membership at
//!   all, a failed query (`STORE_ERROR`) or no store (`NOT_CONFIGURED`) → the segment's rules
//!   decide.
//! - A query that succeeds reports `STORE_ERROR` if the store's metadata cannot be read,
//!   `STALE` if it was last brought up to date [`STALE_AFTER_MS`] or more ago (or never), and
//!   `HEALTHY` otherwise.
//! - When one evaluation sees several statuses the most severe is reported
//!   ([`BigSegmentsStatus::most_severe`]).

use base64::Engine as _;
use flags_core::{BigSegmentMembership, BigSegmentStore, BigSegmentsStatus};
use sha2::{Digest, Sha256};

/// A big-segment store is stale once its last update is this old (LaunchDarkly's default).
pub(crate) const STALE_AFTER_MS: u64 = 120_000;

/// The key under which a big-segment store holds a context's memberships: base64 (standard,
/// padded) of the SHA-256 of the context key.
pub fn big_segment_hash(context_key: &str) -> String {
    let digest = Sha256::digest(context_key.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// How a big-segment store names generation `generation` of segment `segment_key` in its
/// membership sets: `{segmentKey}.g{generation}`.
pub fn big_segment_ref(segment_key: &str, generation: u64) -> String {
    format!("{segment_key}.g{generation}")
}

/// Whether the membership names `segment_ref`: `Some(true)` included, `Some(false)` excluded,
/// `None` not listed. Inclusion wins over exclusion, as in LaunchDarkly's store implementations.
pub(crate) fn membership_of(membership: &BigSegmentMembership, segment_ref: &str) -> Option<bool> {
    if membership.included.contains(segment_ref) {
        Some(true)
    } else if membership.excluded.contains(segment_ref) {
        Some(false)
    } else {
        None
    }
}

/// The state of the store after a membership query that succeeded, judged at `now_ms`.
pub(crate) fn store_status(store: &dyn BigSegmentStore, now_ms: u64) -> BigSegmentsStatus {
    match store.metadata() {
        Ok(meta) => match meta.last_up_to_date {
            Some(t) if now_ms.saturating_sub(t) < STALE_AFTER_MS => BigSegmentsStatus::Healthy,
            _ => BigSegmentsStatus::Stale,
        },
        Err(_) => BigSegmentsStatus::StoreError,
    }
}

/// The current time in Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

type Memberships<'c> = Vec<(&'c str, Option<BigSegmentMembership>)>;

/// What one evaluation has learned from the big-segment store.
///
/// Created empty for every evaluation; it does not allocate until a big segment is reached.
#[derive(Default)]
pub(crate) struct BigSegmentState<'c> {
    /// The status to report, once any big segment has been consulted.
    pub status: Option<BigSegmentsStatus>,
    /// Memberships fetched so far, by context key (`None`: the store knows nothing of the key,
    /// or the query failed). Boxed and optional so that the many evaluations that never reach a
    /// big segment have nothing to drop.
    memberships: Option<Box<Memberships<'c>>>,
}

impl<'c> BigSegmentState<'c> {
    pub fn note(&mut self, status: BigSegmentsStatus) {
        self.status = Some(match self.status {
            Some(seen) => seen.most_severe(status),
            None => status,
        });
    }

    /// Whether the context key's membership names `segment_ref` (see [`membership_of`]),
    /// querying the store the first time a key is needed in this evaluation.
    pub fn check(
        &mut self,
        store: Option<&dyn BigSegmentStore>,
        context_key: &'c str,
        segment_ref: &str,
    ) -> Option<bool> {
        let Some(store) = store else {
            self.note(BigSegmentsStatus::NotConfigured);
            return None;
        };
        let memberships = self.memberships.get_or_insert_default();
        let cached = memberships.iter().position(|(k, _)| *k == context_key);
        let index = match cached {
            Some(i) => i,
            None => {
                let (membership, status) = match store.membership(&big_segment_hash(context_key)) {
                    Ok(m) => (m, store_status(store, now_ms())),
                    Err(_) => (None, BigSegmentsStatus::StoreError),
                };
                memberships.push((context_key, membership));
                let index = memberships.len() - 1;
                self.note(status);
                index
            }
        };
        self.memberships.as_ref()?[index]
            .1
            .as_ref()
            .and_then(|m| membership_of(m, segment_ref))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flags_core::{BigSegmentStoreError, BigSegmentStoreMetadata};

    #[test]
    fn big_segment_hash_vector() {
        assert_eq!(
            big_segment_hash("user-key"),
            "CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0="
        );
    }

    #[test]
    fn inclusion_wins_over_exclusion() {
        let both = BigSegmentMembership {
            included: ["s.g1".to_owned()].into(),
            excluded: ["s.g1".to_owned(), "t.g1".to_owned()].into(),
        };
        assert_eq!(membership_of(&both, "s.g1"), Some(true));
        assert_eq!(membership_of(&both, "t.g1"), Some(false));
        assert_eq!(membership_of(&both, "u.g1"), None);
    }

    struct Meta(Result<Option<u64>, ()>);

    impl BigSegmentStore for Meta {
        fn membership(
            &self,
            _: &str,
        ) -> Result<Option<BigSegmentMembership>, BigSegmentStoreError> {
            Ok(None)
        }
        fn metadata(&self) -> Result<BigSegmentStoreMetadata, BigSegmentStoreError> {
            self.0
                .map(|last_up_to_date| BigSegmentStoreMetadata { last_up_to_date })
                .map_err(|()| BigSegmentStoreError {
                    message: "down".to_owned(),
                })
        }
    }

    #[test]
    fn staleness_starts_at_the_threshold() {
        let now = 1_000_000;
        let status = |meta| store_status(&Meta(meta), now);
        assert_eq!(status(Ok(Some(now))), BigSegmentsStatus::Healthy);
        assert_eq!(
            status(Ok(Some(now - STALE_AFTER_MS + 1))),
            BigSegmentsStatus::Healthy
        );
        assert_eq!(
            status(Ok(Some(now - STALE_AFTER_MS))),
            BigSegmentsStatus::Stale
        );
        // An update time in the future (clock skew) is not stale.
        assert_eq!(status(Ok(Some(now + 5))), BigSegmentsStatus::Healthy);
        assert_eq!(status(Ok(None)), BigSegmentsStatus::Stale);
        assert_eq!(status(Err(())), BigSegmentsStatus::StoreError);
    }
}
