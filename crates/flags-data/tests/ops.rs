//! The operations layer by example: what a kill and overrides do once served, and the labels
//! flagd's answers carry for them.
#![allow(clippy::unwrap_used)]

use flags_core::{Context, FlagData};
use flags_data::{Ops, Snapshot};
use serde_json::{Value, json};

fn stored() -> FlagData {
    FlagData::from_json_value(json!({"flags": {
        "plain": {"on": true, "variations": ["off", "on", "other"], "offVariation": 0,
            "fallthrough": {"variation": 1}},
        "no-off": {"on": true, "variations": ["a", "b"], "fallthrough": {"variation": 1}},
        "bad-off": {"on": true, "variations": ["a"], "offVariation": 5, "fallthrough": {"variation": 0}},
        "needs-plain": {"on": true, "variations": [false, true], "offVariation": 0,
            "fallthrough": {"variation": 1}, "prerequisites": [{"key": "plain", "variation": 1}]},
        "off": {"on": false, "variations": ["a", "b"], "offVariation": 0, "fallthrough": {"variation": 1},
            "targets": [{"values": ["u1"], "variation": 1}]}
    }}))
    .unwrap()
}

/// The stored flags as served under `ops`, as root mode serves them.
fn served(ops: &Ops) -> Snapshot {
    let mut data = stored();
    for flag in data.flags.values_mut() {
        *flag = ops.serve(flag.clone());
    }
    Snapshot::from_models(data, 1).unwrap()
}

fn check(snapshot: &Snapshot, ops: &Ops, flag: &str, context: Value, expected: Value) {
    let ctx = Context::from_json(&context).unwrap();
    let got = serde_json::to_value(snapshot.evaluate(ops, flag, &ctx)).unwrap();
    assert_eq!(got, expected, "{flag} for {context}");
    let all = snapshot.evaluate_all(ops, &ctx);
    let (_, detail) = all.iter().find(|(key, _)| *key == flag).unwrap();
    let mut in_all = serde_json::to_value(detail).unwrap();
    in_all["key"] = json!(flag);
    let mut expected = expected;
    expected["key"] = json!(flag);
    assert_eq!(in_all, expected, "{flag} for {context}, among all flags");
}

#[test]
fn kills_and_overrides_once_served() {
    let ops = Ops::default();
    let user = json!({"kind": "user", "key": "u1"});
    let fallthrough =
        json!({"value": "on", "variationIndex": 1, "reason": {"kind": "FALLTHROUGH"}});
    check(
        &served(&ops),
        &ops,
        "plain",
        user.clone(),
        fallthrough.clone(),
    );

    ops.set_override("plain", "user", "u1", 2);
    // Until the flag is served again, nothing changes: the answer is the served flag's.
    let as_stored = Snapshot::from_models(stored(), 1).unwrap();
    check(&as_stored, &ops, "plain", user.clone(), fallthrough);
    let overridden = json!({"value": "other", "variationIndex": 2,
        "reason": {"kind": "TARGET_MATCH", "override": true}});
    check(
        &served(&ops),
        &ops,
        "plain",
        user.clone(),
        overridden.clone(),
    );
    // Of a multi-kind context, an override of another kind comes before a `user` one.
    ops.set_override("plain", "org", "o1", 0);
    check(
        &served(&ops),
        &ops,
        "plain",
        json!({"kind": "multi", "user": {"key": "u1"}, "org": {"key": "o1"}}),
        json!({"value": "off", "variationIndex": 0,
            "reason": {"kind": "TARGET_MATCH", "override": true}}),
    );
    check(
        &served(&ops),
        &ops,
        "plain",
        json!({"kind": "org", "key": "u1"}),
        json!({"value": "on", "variationIndex": 1, "reason": {"kind": "FALLTHROUGH"}}),
    );
    ops.set_override("plain", "user", "u9", 7);
    check(
        &served(&ops),
        &ops,
        "plain",
        json!({"key": "u9"}),
        json!({"value": null, "reason": {"kind": "ERROR", "errorKind": "MALFORMED_FLAG"}}),
    );

    // A kill comes first: the flag serves its off variation, and a flag needing it fails.
    ops.kill("plain");
    let snapshot = served(&ops);
    check(
        &snapshot,
        &ops,
        "plain",
        user.clone(),
        json!({"value": "off", "variationIndex": 0, "reason": {"kind": "OFF", "killed": true}}),
    );
    check(
        &snapshot,
        &ops,
        "needs-plain",
        user.clone(),
        json!({"value": false, "variationIndex": 0,
            "reason": {"kind": "PREREQUISITE_FAILED", "prerequisiteKey": "plain"}}),
    );
    ops.kill("no-off");
    ops.kill("bad-off");
    let snapshot = served(&ops);
    check(
        &snapshot,
        &ops,
        "no-off",
        user.clone(),
        json!({"value": null, "reason": {"kind": "OFF", "killed": true}}),
    );
    check(
        &snapshot,
        &ops,
        "bad-off",
        user.clone(),
        json!({"value": null, "reason": {"kind": "ERROR", "errorKind": "MALFORMED_FLAG"}}),
    );
    // A flag off as stored is not labelled killed, nor is a target of its own an override.
    check(
        &snapshot,
        &ops,
        "off",
        user.clone(),
        json!({"value": "a", "variationIndex": 0, "reason": {"kind": "OFF"}}),
    );

    ops.revive("plain");
    let snapshot = served(&ops);
    check(&snapshot, &ops, "plain", user.clone(), overridden);
    check(
        &snapshot,
        &ops,
        "needs-plain",
        json!({"key": "u2"}),
        json!({"value": true, "variationIndex": 1, "reason": {"kind": "FALLTHROUGH"}}),
    );
    // The override's variation is not the prerequisite's, which therefore fails for `u1`:
    // overrides come after prerequisites.
    check(
        &snapshot,
        &ops,
        "needs-plain",
        user,
        json!({"value": false, "variationIndex": 0,
            "reason": {"kind": "PREREQUISITE_FAILED", "prerequisiteKey": "plain"}}),
    );
}

#[test]
fn targets_of_the_flag_itself_are_not_labelled_overrides() {
    let ops = Ops::default();
    let mut data = stored();
    data.flags.get_mut("plain").unwrap().targets = serde_json::from_value(json!([
        {"values": ["u1", "u2"], "variation": 2}
    ]))
    .unwrap();
    ops.set_override("plain", "user", "u3", 2);
    for flag in data.flags.values_mut() {
        *flag = ops.serve(flag.clone());
    }
    let snapshot = Snapshot::from_models(data, 1).unwrap();
    let target = json!({"value": "other", "variationIndex": 2, "reason": {"kind": "TARGET_MATCH"}});
    check(&snapshot, &ops, "plain", json!({"key": "u1"}), target);
    let pinned = json!({"value": "other", "variationIndex": 2,
        "reason": {"kind": "TARGET_MATCH", "override": true}});
    check(&snapshot, &ops, "plain", json!({"key": "u3"}), pinned);
}
