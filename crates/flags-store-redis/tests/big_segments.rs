//! Big-segment memberships in LaunchDarkly's Redis layout, written and read back, and a flag
//! evaluated against them.

#![allow(clippy::unwrap_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use flags_core::{BigSegmentStore, Context, FlagData};
use flags_eval::{CompiledData, Evaluator, big_segment_hash, big_segment_ref};
use flags_store_redis::{MemberOp, RedisBigSegments};
use flags_test_support::redis;
use serde_json::json;

fn prefix() -> String {
    redis().unique_prefix("flagd-bigseg-test")
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

async fn raw_members(key: &str) -> Vec<String> {
    let client = redis::Client::open(redis().url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap();
    members.sort();
    members
}

#[tokio::test]
async fn memberships_are_written_in_launchdarkly_s_layout_and_read_back() {
    let prefix = prefix();
    let store = RedisBigSegments::connect(redis().url(), &prefix)
        .await
        .unwrap();
    let hash = big_segment_hash("alice");
    assert_eq!(
        store.include_key(&hash),
        format!("{prefix}:big_segment_include:{hash}")
    );
    assert_eq!(big_segment_ref("beta", 3), "beta.g3");

    store
        .apply("beta", 3, MemberOp::Include, &["alice", "bob"])
        .await
        .unwrap();
    store
        .apply("gamma", 1, MemberOp::Exclude, &["alice"])
        .await
        .unwrap();
    assert_eq!(raw_members(&store.include_key(&hash)).await, ["beta.g3"]);
    assert_eq!(raw_members(&store.exclude_key(&hash)).await, ["gamma.g1"]);

    let alice = store.membership(&hash).unwrap().unwrap();
    assert_eq!(alice.check("beta.g3"), Some(true));
    assert_eq!(alice.check("gamma.g1"), Some(false));
    assert_eq!(alice.check("beta.g2"), None);
    assert!(
        store
            .membership(&big_segment_hash("carol"))
            .unwrap()
            .is_none()
    );

    // Excluding moves a context out of the inclusions; removing lists it nowhere; both again
    // change nothing.
    for _ in 0..2 {
        store
            .apply("beta", 3, MemberOp::Exclude, &["bob"])
            .await
            .unwrap();
    }
    let bob = store.membership(&big_segment_hash("bob")).unwrap().unwrap();
    assert_eq!(bob.check("beta.g3"), Some(false));
    for _ in 0..2 {
        store
            .apply("beta", 3, MemberOp::Remove, &["bob"])
            .await
            .unwrap();
    }
    assert!(
        store
            .membership(&big_segment_hash("bob"))
            .unwrap()
            .is_none()
    );

    assert_eq!(store.metadata().unwrap().last_up_to_date, None);
    store.set_synchronized_on(1_700_000_000_123).await.unwrap();
    assert_eq!(
        store.metadata().unwrap().last_up_to_date,
        Some(1_700_000_000_123)
    );
}

#[tokio::test]
async fn a_flag_evaluates_big_segments_straight_from_redis() {
    let store = RedisBigSegments::connect(redis().url(), &prefix())
        .await
        .unwrap();
    let members: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    store
        .apply("big", 2, MemberOp::Include, &refs)
        .await
        .unwrap();
    store
        .apply("big", 2, MemberOp::Exclude, &["user-4999"])
        .await
        .unwrap();
    let data = CompiledData::compile(
        FlagData::from_json_value(json!({
            "flags": {"f": {"on": true, "variations": [false, true], "fallthrough": {"variation": 0},
                "rules": [{"id": "r0", "variation": 1, "clauses": [{"contextKind": "user",
                    "attribute": "key", "op": "segmentMatch", "values": ["big"]}]}]}},
            "segments": {"big": {"unbounded": true, "generation": 2}}
        }))
        .unwrap(),
    )
    .unwrap();
    let evaluate = |key: &str| {
        let context = Context::user(key).unwrap();
        serde_json::to_value(
            Evaluator::new(&data)
                .with_big_segments(&store)
                .evaluate("f", &context),
        )
        .unwrap()
    };

    // Never synchronized: answered, but stale.
    assert_eq!(
        evaluate("user-17")["reason"],
        json!({"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "r0", "bigSegmentsStatus": "STALE"})
    );
    store.set_synchronized_on(now_ms()).await.unwrap();
    assert_eq!(
        evaluate("user-17"),
        json!({"value": true, "variationIndex": 1,
            "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "r0", "bigSegmentsStatus": "HEALTHY"}})
    );
    assert_eq!(evaluate("user-4999")["value"], false, "excluded");
    assert_eq!(
        evaluate("stranger")["reason"],
        json!({"kind": "FALLTHROUGH", "bigSegmentsStatus": "HEALTHY"})
    );
}

#[tokio::test]
async fn the_store_role_reads_and_writes_the_same_layout() {
    use flags_store::{BigSegmentMembers, MemberChange};
    let prefix = prefix();
    let store = RedisBigSegments::connect(redis().url(), &prefix)
        .await
        .unwrap();
    let members: &dyn BigSegmentMembers = &store;
    let mut upload = members
        .begin_upload("ignored", "seg", 4, true)
        .await
        .unwrap();
    upload
        .apply(&[
            MemberChange::for_key(MemberOp::Include, "alice"),
            MemberChange::for_key(MemberOp::Exclude, "bob"),
            MemberChange::for_key(MemberOp::Include, "carol"),
            MemberChange::for_key(MemberOp::Remove, "carol"),
        ])
        .await
        .unwrap();
    upload.commit(None).await.unwrap();
    let (alice, bob, carol) = (
        big_segment_hash("alice"),
        big_segment_hash("bob"),
        big_segment_hash("carol"),
    );
    assert_eq!(raw_members(&store.include_key(&alice)).await, ["seg.g4"]);
    assert_eq!(raw_members(&store.exclude_key(&bob)).await, ["seg.g4"]);
    let found = members
        .memberships("ignored", &[alice.clone(), bob.clone(), carol])
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, alice);
    assert_eq!(found[0].1.check("seg.g4"), Some(true));
    assert_eq!(found[1].1.check("seg.g4"), Some(false));

    assert_eq!(members.synchronized_on("ignored").await.unwrap(), None);
    members.set_synchronized_on("ignored", 42).await.unwrap();
    assert_eq!(members.synchronized_on("ignored").await.unwrap(), Some(42));

    // A generation copies whole; a context in both sets (written by another writer) counts
    // as included, once.
    let client = redis::Client::open(redis().url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SADD")
        .arg(store.exclude_key(&alice))
        .arg("seg.g4")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    let copy = flags_store::MemoryBigSegments::new();
    let mut into = copy.begin_upload("env", "seg", 4, true).await.unwrap();
    assert_eq!(
        members
            .copy_generation("ignored", "seg", 4, into.as_mut())
            .await
            .unwrap(),
        2
    );
    into.commit(None).await.unwrap();
    let copied = copy
        .memberships("env", &[alice.clone(), bob.clone()])
        .await
        .unwrap();
    assert_eq!(
        copied
            .iter()
            .map(|(hash, m)| (hash == &alice, m.check("seg.g4")))
            .collect::<Vec<_>>(),
        [(true, Some(true)), (false, Some(false))]
    );

    members.clear_generation("ignored", "seg", 4).await.unwrap();
    assert!(
        members
            .memberships("ignored", &[alice, bob])
            .await
            .unwrap()
            .is_empty()
    );
}
