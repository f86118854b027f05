//! Loading flag data: what LaunchDarkly's SDKs accept loads, and what they cannot read at all is
//! rejected with an error naming the field path.
#![allow(clippy::unwrap_used)]

use expect_test::{Expect, expect};
use flags_core::{Flag, FlagData, Operator, RolloutKind, Segment, written_variation_index};
use serde_json::json;

fn check(input: serde_json::Value, expected: Expect) {
    let got = match FlagData::from_json_value(input) {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    expected.assert_eq(&got);
}

#[test]
fn load_errors_name_the_field_path() {
    check(
        json!({"flags": {"checkout": {"rules": [{}, {}, {"clauses": [{"values": "x"}]}]}}}),
        expect![[
            r#"flags.checkout.rules[2].clauses[0].values: expected an array, found string "x""#
        ]],
    );
    check(
        json!({"flags": {"a": {"on": "yes"}}}),
        expect![[r#"flags.a.on: expected a boolean, found string "yes""#]],
    );
    check(
        json!({"flags": {"a": {"variations": {}}}}),
        expect!["flags.a.variations: expected an array, found an object"],
    );
    check(
        json!({"flags": {"a": {"offVariation": 1.5}}}),
        expect!["flags.a.offVariation: expected an integer variation index, found number 1.5"],
    );
    check(
        json!({"flags": {"a": {"fallthrough": {"rollout": {"variations": [{"weight": "x"}]}}}}}),
        expect![[
            r#"flags.a.fallthrough.rollout.variations[0].weight: expected an integer, found string "x""#
        ]],
    );
    check(
        json!({"segments": {"s": {"included": [1]}}}),
        expect!["segments.s.included[0]: expected a string, found number 1"],
    );
    check(
        json!({"flags": []}),
        expect!["flags: expected an object, found an array"],
    );
    check(json!(3), expect!["expected an object, found number 3"]);
    check(
        json!({"flags": {"a": {"version": -1}}}),
        expect!["flags.a.version: expected a non-negative integer, found number -1"],
    );
}

#[test]
fn text_errors_keep_line_and_column() {
    let err = FlagData::from_json_str("{\"flags\": {\"a\": {\"on\": 3}}}").unwrap_err();
    expect![["flags.a.on: expected a boolean, found number 3 (line 1, column 24)"]]
        .assert_eq(&err.to_string());
    let err = FlagData::from_json_str("{\"flags\": ").unwrap_err();
    assert!(err.to_string().contains("EOF"), "{err}");
}

#[test]
fn tolerated_data_loads() {
    let data = FlagData::from_json_value(json!({
        "flags": {
            "f": {
                "on": null,
                "offVariation": -1,
                "targets": null,
                "fallthrough": {"rollout": {"kind": "mystery", "variations": [{"variation": -3, "weight": 5}]}},
                "rules": [{"variation": 0, "clauses": [{"attribute": "a", "op": "madeUp", "values": [1]}], "unknownField": 1}],
                "prerequisites": [{"key": "p", "variation": 1}]
            }
        },
        "segments": {"s": {"rules": [{"clauses": [], "weight": 50000, "bucketBy": "x", "rolloutContextKind": "org"}]}}
    }))
    .unwrap();
    let f = &data.flags["f"];
    assert_eq!(f.key, "f");
    assert_eq!(f.off_variation, Some(usize::MAX));
    let rollout = f.fallthrough.rollout.as_ref().unwrap();
    assert_eq!(rollout.kind, RolloutKind::Rollout);
    assert_eq!(f.rules[0].clauses[0].op, Operator::Unknown("madeUp".into()));
    assert_eq!(data.segments["s"].key, "s");
    assert_eq!(data.segments["s"].rules[0].weight, Some(50000));
    // Negative indexes are written back as they were written, so LaunchDarkly SDKs read them as
    // malformed too, and messages can name them as the author wrote them.
    let out = serde_json::to_value(f).unwrap();
    assert_eq!(out["offVariation"], json!(-1));
    assert_eq!(
        out["fallthrough"]["rollout"]["variations"][0]["variation"],
        json!(-3)
    );
    let wv = &rollout.variations[0];
    assert_eq!(written_variation_index(wv.variation), -3);
    assert_eq!(written_variation_index(f.off_variation.unwrap()), -1);
    assert_eq!(written_variation_index(2), 2);
    assert_eq!(out["rules"][0]["clauses"][0]["op"], json!("madeUp"));
}

#[test]
fn round_trips_through_json() {
    let flag = json!({
        "key": "f", "version": 3, "on": true, "salt": "s", "variations": [true, false],
        "offVariation": 1, "fallthrough": {"variation": 0},
        "targets": [{"values": ["a"], "variation": 0}],
        "contextTargets": [{"contextKind": "org", "values": ["o"], "variation": 1}],
        "rules": [{"id": "r", "rollout": {"kind": "experiment", "contextKind": "org", "seed": 61,
            "variations": [{"variation": 0, "weight": 100000, "untracked": true}]},
            "clauses": [{"contextKind": "org", "attribute": "/a/b", "op": "semVerEqual", "values": ["1.0.0"], "negate": true}],
            "trackEvents": true}],
        "prerequisites": [{"key": "p", "variation": 0}],
        "clientSideAvailability": {"usingMobileKey": true, "usingEnvironmentId": false},
        "trackEvents": false, "trackEventsFallthrough": false, "deleted": false,
        "excludeFromSummaries": false, "samplingRatio": 2, "debugEventsUntilDate": 5
    });
    let parsed = Flag::from_json_value(flag.clone()).unwrap();
    let again = Flag::from_json_value(serde_json::to_value(&parsed).unwrap()).unwrap();
    assert_eq!(parsed, again);
    assert_eq!(
        serde_json::to_value(&parsed).unwrap()["rules"][0]["rollout"]["kind"],
        json!("experiment")
    );

    let seg = json!({"key": "s", "version": 1, "included": ["a"], "excluded": ["b"],
        "includedContexts": [{"contextKind": "org", "values": ["o"]}], "excludedContexts": [],
        "salt": "x", "rules": [], "unbounded": true, "unboundedContextKind": "org", "generation": 2, "deleted": false});
    let parsed = Segment::from_json_value(seg.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), seg);
}

/// The target lists as LaunchDarkly checks them, for each form of the data.
#[test]
fn target_lists_follow_launchdarkly_reading() {
    let lists = |flag: serde_json::Value| -> Vec<(String, Vec<String>, usize)> {
        let flag = Flag::from_json_value(flag).unwrap();
        flag.target_lists()
            .map(|(kind, keys, variation)| (kind.to_owned(), keys.to_vec(), variation))
            .collect()
    };
    let list = |kind: &str, keys: &[&str], variation| {
        let keys = keys.iter().map(|k| (*k).to_owned()).collect();
        (kind.to_owned(), keys, variation)
    };
    // Without contextTargets: every `targets` list, of kind `user`.
    assert_eq!(
        lists(
            json!({"targets": [{"values": ["a"], "variation": 1}, {"values": ["b"], "variation": 1}]})
        ),
        [list("user", &["a"], 1), list("user", &["b"], 1)]
    );
    // With them: their order, a `user` entry without values standing for the first `targets`
    // list of its variation (skipped when there is none), an empty kind meaning `user`.
    assert_eq!(
        lists(json!({
            "targets": [{"values": ["a"], "variation": 1}, {"values": ["b"], "variation": 1}],
            "contextTargets": [
                {"contextKind": "org", "values": ["o"], "variation": 0},
                {"contextKind": "user", "values": [], "variation": 1},
                {"contextKind": "user", "values": [], "variation": 2},
                {"contextKind": "", "values": ["c"], "variation": 0},
                {"values": [], "variation": 1}
            ]
        })),
        [
            list("org", &["o"], 0),
            list("user", &["a"], 1),
            list("user", &["c"], 0),
            list("user", &["a"], 1)
        ]
    );
}
