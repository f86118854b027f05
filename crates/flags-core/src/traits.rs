//! The small traits that join the engine, the stores and the server. All are synchronous and
//! `Send + Sync`; implementations that need I/O do it elsewhere and expose snapshots here.

use std::collections::HashSet;

/// The operations layer's kill switch: a killed flag serves its off variation everywhere.
pub trait KillSet: Send + Sync {
    /// Whether the flag is killed.
    fn is_killed(&self, flag_key: &str) -> bool;
}

/// Per-entity overrides: one context (kind + key) pinned to a variation of one flag.
pub trait OverrideLookup: Send + Sync {
    /// The overriding variation index for this flag and context, if any.
    fn variation_for(&self, flag_key: &str, context_kind: &str, context_key: &str)
    -> Option<usize>;
}

/// Big-segment membership of one context, as stored by LaunchDarkly's Relay format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BigSegmentMembership {
    /// Segment references (`{key}.g{generation}`) that include the context.
    pub included: HashSet<String>,
    /// Segment references that exclude the context. A reference in both sets counts as
    /// included, as LaunchDarkly's store implementations read it.
    pub excluded: HashSet<String>,
}

impl BigSegmentMembership {
    /// `Some(true)` if included, `Some(false)` if excluded, `None` if not listed either way.
    /// Inclusion wins when a reference is in both sets.
    pub fn check(&self, segment_ref: &str) -> Option<bool> {
        if self.included.contains(segment_ref) {
            Some(true)
        } else if self.excluded.contains(segment_ref) {
            Some(false)
        } else {
            None
        }
    }
}

/// Metadata of a big-segment store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BigSegmentStoreMetadata {
    /// When the store was last brought up to date, in Unix milliseconds.
    pub last_up_to_date: Option<u64>,
}

/// A big-segment store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("big segment store error: {message}")]
pub struct BigSegmentStoreError {
    /// What went wrong.
    pub message: String,
}

/// Big-segment membership lookup by hashed context key (base64 of SHA-256 of the key).
pub trait BigSegmentStore: Send + Sync {
    /// Membership of the context whose hashed key is `context_hash`; `None` if unknown.
    fn membership(
        &self,
        context_hash: &str,
    ) -> Result<Option<BigSegmentMembership>, BigSegmentStoreError>;
    /// The store's metadata, used to judge staleness.
    fn metadata(&self) -> Result<BigSegmentStoreMetadata, BigSegmentStoreError>;
}

/// What kind of item changed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// A flag.
    Flag,
    /// A segment.
    Segment,
}

impl ItemKind {
    /// The section that holds items of this kind: the `latest-all` and flag-file field name, and
    /// the first part of a stream event's path (`/flags/KEY`).
    pub fn section(self) -> &'static str {
        match self {
            ItemKind::Flag => "flags",
            ItemKind::Segment => "segments",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BigSegmentMembership;

    #[test]
    fn membership_check_prefers_inclusion() {
        let set = |refs: &[&str]| refs.iter().map(|r| (*r).to_owned()).collect();
        let m = BigSegmentMembership {
            included: set(&["a.g1"]),
            excluded: set(&["a.g1", "b.g1"]),
        };
        assert_eq!(m.check("a.g1"), Some(true));
        assert_eq!(m.check("b.g1"), Some(false));
        assert_eq!(m.check("c.g1"), None);
    }
}
