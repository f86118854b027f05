//! A flag served with overrides (`flags_data::serve_flag`) must mean the same to LaunchDarkly's
//! own evaluator as to flagd's: the overrides travel as targets so that every SDK applies them,
//! and the form they take is chosen so that SDKs that read other target data differently (this
//! evaluator reads every `targets` list of a variation, Go, Python and Node the first) still
//! agree. For flags with targets of every shape, overrides and contexts of several kinds, both
//! engines must give the same value, variation and reason.
#![allow(clippy::unwrap_used)]

use flags_bench::{Fixture, FlagdSide, PeerSide, peer_reason_kind, peer_value_json};
use flags_core::Flag;
use flags_data::{Override, serve_flag};
use proptest::prelude::*;
use serde_json::{Value, json};

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn keys() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(KEYS.to_vec(), 0..=3)
}

/// A stored flag with targets of any shape the data model allows, and a rule behind them.
fn any_flag() -> impl Strategy<Value = Flag> {
    let target = (keys(), 0..3usize)
        .prop_map(|(values, variation)| json!({"values": values, "variation": variation}));
    let context_target = (
        prop_oneof![Just("user"), Just(""), Just("org")],
        keys(),
        any::<bool>(),
        0..3usize,
    )
        .prop_map(|(kind, values, empty, variation)| {
            let values = if empty { Vec::new() } else { values };
            json!({"contextKind": kind, "values": values, "variation": variation})
        });
    (
        proptest::collection::vec(target, 0..4),
        proptest::collection::vec(context_target, 0..4),
        any::<bool>(),
    )
        .prop_map(|(targets, context_targets, legacy)| {
            let context_targets = if legacy { Vec::new() } else { context_targets };
            Flag::from_json_value(json!({
                "key": "f", "version": 1, "on": true, "salt": "f",
                "variations": ["v0", "v1", "v2"], "offVariation": 2,
                "fallthrough": {"variation": 0},
                "targets": targets, "contextTargets": context_targets,
                "rules": [{"id": "r", "variation": 1, "clauses": [
                    {"contextKind": "org", "attribute": "key", "op": "in", "values": ["b"]}]}]
            }))
            .unwrap()
        })
}

fn any_overrides() -> impl Strategy<Value = Vec<Override>> {
    proptest::collection::btree_map(
        (
            prop_oneof![Just("user"), Just("org")],
            proptest::sample::select(KEYS.to_vec()),
        ),
        0..3usize,
        1..5,
    )
    .prop_map(|map| {
        map.into_iter()
            .map(|((kind, key), variation)| Override {
                context_kind: kind.to_owned(),
                context_key: key.to_owned(),
                variation,
            })
            .collect()
    })
}

fn any_context() -> impl Strategy<Value = Value> {
    let key = || proptest::sample::select(KEYS.to_vec());
    prop_oneof![
        key().prop_map(|k| json!({"kind": "user", "key": k})),
        key().prop_map(|k| json!({"kind": "org", "key": k})),
        (key(), key())
            .prop_map(|(u, o)| json!({"kind": "multi", "user": {"key": u}, "org": {"key": o}})),
    ]
}

/// The served flag as LaunchDarkly's JSON, with the fields the peer's model requires.
fn document(flag: &Flag) -> Value {
    let mut doc = serde_json::to_value(flag).unwrap();
    doc["clientSideAvailability"] = json!({"usingEnvironmentId": false, "usingMobileKey": false});
    doc
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn launchdarkly_reads_a_served_flag_as_flagd_does(
        stored in any_flag(),
        overrides in any_overrides(),
        killed in any::<bool>(),
        context in any_context(),
    ) {
        let served = serve_flag(stored, killed, &overrides);
        let fixture = Fixture {
            name: "served",
            flag_key: "f",
            data: json!({"flags": {"f": document(&served)}, "segments": {}}),
            context,
            expected_reason: "",
        };
        let flagd = FlagdSide::new(&fixture).unwrap();
        let peer = PeerSide::new(&fixture).unwrap();
        let ours = flagd.evaluate();
        let theirs = peer.evaluate();
        prop_assert_eq!(ours.value.cloned(), theirs.value.map(peer_value_json), "{}", fixture.data);
        prop_assert_eq!(
            ours.variation_index,
            theirs.variation_index.and_then(|i| usize::try_from(i).ok())
        );
        prop_assert_eq!(ours.reason.kind_str(), peer_reason_kind(&theirs.reason));
        prop_assert_eq!(
            serde_json::to_value(&ours.reason).unwrap(),
            serde_json::to_value(&theirs.reason).unwrap()
        );
    }
}
