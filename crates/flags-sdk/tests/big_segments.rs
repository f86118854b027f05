//! Big segments through the client: memberships from the store through the cache, the
//! `bigSegmentsStatus` each evaluation reports, and the store status provider with its
//! listeners.

#![allow(clippy::unwrap_used)]

use flags_test_support::wait::until;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flags_core::{
    BigSegmentMembership, BigSegmentStore, BigSegmentStoreError, BigSegmentStoreMetadata,
    BigSegmentsStatus, Context, FlagData, Reason,
};
use flags_sdk::{BigSegmentStoreStatus, BigSegmentsConfig, Client, InMemoryBigSegmentStore};
use serde_json::json;

/// A flag that serves `true` to members of the big segment `beta` (generation 2).
fn data() -> FlagData {
    serde_json::from_value(json!({
        "flags": {
            "beta-flag": {"key": "beta-flag", "version": 1, "on": true,
                "variations": [false, true], "fallthrough": {"variation": 0},
                "rules": [{"id": "in-beta", "variation": 1, "clauses": [
                    {"attribute": "", "op": "segmentMatch", "values": ["beta"]}]}]},
            "plain": {"key": "plain", "version": 1, "on": true, "variations": [1],
                "fallthrough": {"variation": 0}}
        },
        "segments": {
            "beta": {"key": "beta", "version": 1, "unbounded": true, "generation": 2}
        }
    }))
    .unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn member() -> BigSegmentMembership {
    BigSegmentMembership {
        included: ["beta.g2".to_owned()].into(),
        excluded: Default::default(),
    }
}

/// A store that counts the queries that reach it.
struct Counting {
    inner: InMemoryBigSegmentStore,
    memberships: AtomicUsize,
}

impl BigSegmentStore for Counting {
    fn membership(&self, hash: &str) -> Result<Option<BigSegmentMembership>, BigSegmentStoreError> {
        self.memberships.fetch_add(1, Ordering::SeqCst);
        self.inner.membership(hash)
    }

    fn metadata(&self) -> Result<BigSegmentStoreMetadata, BigSegmentStoreError> {
        self.inner.metadata()
    }
}

fn client_over(
    store: Arc<dyn BigSegmentStore>,
    tune: impl FnOnce(&mut BigSegmentsConfig),
) -> Client {
    let mut config = BigSegmentsConfig::new(store);
    tune(&mut config);
    Client::builder("k")
        .data(data())
        .big_segments(config)
        .build()
        .unwrap()
}

#[tokio::test]
async fn members_match_and_the_reason_says_how_the_store_was() {
    let store = Arc::new(InMemoryBigSegmentStore::new());
    store.set_membership("alice", member());
    store.set_updated(now_ms());
    let client = client_over(store.clone(), |_| {});
    let alice = Context::user("alice").unwrap();
    let bob = Context::user("bob").unwrap();

    let detail = client.bool_variation_detail(&alice, "beta-flag", false);
    assert!(detail.value);
    assert!(matches!(
        detail.reason,
        Reason::RuleMatch { rule_index: 0, .. }
    ));
    assert_eq!(detail.big_segments_status, Some(BigSegmentsStatus::Healthy));
    assert_eq!(detail.reason_json()["bigSegmentsStatus"], json!("HEALTHY"));
    let detail = client.bool_variation_detail(&bob, "beta-flag", false);
    assert!(!detail.value);
    assert_eq!(detail.big_segments_status, Some(BigSegmentsStatus::Healthy));
    // A flag that reaches no big segment reports nothing about the store.
    let detail = client.int_variation_detail(&bob, "plain", 0);
    assert_eq!(detail.big_segments_status, None);
}

#[tokio::test]
async fn an_old_update_is_stale_by_the_clients_own_threshold() {
    let store = Arc::new(InMemoryBigSegmentStore::new());
    store.set_membership("alice", member());
    store.set_updated(now_ms() - 30_000);
    let alice = Context::user("alice").unwrap();

    let default = client_over(store.clone(), |_| {});
    let detail = default.bool_variation_detail(&alice, "beta-flag", false);
    assert!(detail.value, "a stale store still answers");
    assert_eq!(detail.big_segments_status, Some(BigSegmentsStatus::Healthy));
    assert_eq!(
        default.big_segment_store_status_provider().get_status(),
        BigSegmentStoreStatus {
            available: true,
            stale: false
        }
    );

    let strict = client_over(store.clone(), |c| c.stale_after = Duration::from_secs(10));
    let detail = strict.bool_variation_detail(&alice, "beta-flag", false);
    assert!(detail.value);
    assert_eq!(detail.big_segments_status, Some(BigSegmentsStatus::Stale));
    assert!(
        strict
            .big_segment_store_status_provider()
            .get_status()
            .stale
    );

    let never = Arc::new(InMemoryBigSegmentStore::new());
    never.set_membership("alice", member());
    let client = client_over(never, |_| {});
    let detail = client.bool_variation_detail(&alice, "beta-flag", false);
    assert_eq!(detail.big_segments_status, Some(BigSegmentsStatus::Stale));
}

#[tokio::test]
async fn a_failing_store_is_a_store_error_and_no_store_is_not_configured() {
    let store = Arc::new(InMemoryBigSegmentStore::new());
    store.set_membership("alice", member());
    store.set_updated(now_ms());
    store.set_failing(Some("connection refused"));
    let client = client_over(store.clone(), |_| {});
    let alice = Context::user("alice").unwrap();
    let detail = client.bool_variation_detail(&alice, "beta-flag", false);
    assert!(
        !detail.value,
        "no membership: the segment's own rules decide"
    );
    assert_eq!(
        detail.big_segments_status,
        Some(BigSegmentsStatus::StoreError)
    );

    let unconfigured = Client::builder("k").data(data()).build().unwrap();
    let detail = unconfigured.bool_variation_detail(&alice, "beta-flag", false);
    assert!(!detail.value);
    assert_eq!(
        detail.big_segments_status,
        Some(BigSegmentsStatus::NotConfigured)
    );
    assert_eq!(
        unconfigured
            .big_segment_store_status_provider()
            .get_status(),
        BigSegmentStoreStatus {
            available: false,
            stale: false
        }
    );
}

#[tokio::test]
async fn memberships_are_cached_per_context_for_the_cache_time() {
    let counting = Arc::new(Counting {
        inner: InMemoryBigSegmentStore::new(),
        memberships: AtomicUsize::new(0),
    });
    counting.inner.set_membership("alice", member());
    counting.inner.set_updated(now_ms());
    let client = client_over(counting.clone(), |c| {
        c.context_cache_time = Duration::from_millis(200);
        c.context_cache_size = 2;
    });
    let alice = Context::user("alice").unwrap();
    for _ in 0..50 {
        assert!(client.bool_variation(&alice, "beta-flag", false));
    }
    assert_eq!(counting.memberships.load(Ordering::SeqCst), 1, "cached");

    // Past the cache time the store is asked again, and sees a change of membership.
    counting
        .inner
        .set_membership("alice", BigSegmentMembership::default());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!client.bool_variation(&alice, "beta-flag", false));
    assert_eq!(counting.memberships.load(Ordering::SeqCst), 2);

    // Three more contexts in a cache of two: the oldest goes, so alice is asked again.
    for key in ["b", "c", "d"] {
        client.bool_variation(&Context::user(key).unwrap(), "beta-flag", false);
    }
    let before = counting.memberships.load(Ordering::SeqCst);
    client.bool_variation(&alice, "beta-flag", false);
    assert_eq!(counting.memberships.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn status_listeners_hear_every_change() {
    let store = Arc::new(InMemoryBigSegmentStore::new());
    store.set_updated(now_ms());
    let client = client_over(store.clone(), |c| {
        c.status_poll_interval = Duration::from_millis(20);
    });
    let provider = client.big_segment_store_status_provider();
    let mut listener = provider.add_status_listener();
    until("the first metadata poll", || {
        std::future::ready(provider.get_status().available)
    })
    .await;

    store.set_failing(Some("down"));
    let status = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status,
        BigSegmentStoreStatus {
            available: false,
            stale: false
        }
    );
    store.set_failing(None);
    store.set_updated(now_ms() - 200_000);
    let status = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status,
        BigSegmentStoreStatus {
            available: true,
            stale: true
        }
    );
    assert!(provider.remove_status_listener(listener.id()));
    client.close();
}
