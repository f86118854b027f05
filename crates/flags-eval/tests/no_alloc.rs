//! Evaluating flags whose variations are booleans, numbers or strings does not touch the heap.
//!
//! A counting global allocator counts allocations made by this test's own thread while it
//! evaluates a spread of flags: plain on/off, a target hit, rules with string, number, regex,
//! semver and date operators, a rollout, an experiment, segment matches (by rule and by
//! inclusion), and prerequisites. (Labelling answers with the operations layer is checked in
//! flags-data's own test.)
#![allow(clippy::unwrap_used)]

use flags_core::{Context, FlagData};
use flags_eval::{CompiledData, Evaluator};
use flags_test_support::alloc_count::allocations;
use serde_json::json;

flags_test_support::count_allocations!();

fn data() -> CompiledData {
    let targets: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let members: Vec<String> = (0..1000).map(|i| format!("member-{i}")).collect();
    let bool_flag = |extra: serde_json::Value| {
        let mut f = json!({"on": true, "salt": "s", "variations": [false, true], "offVariation": 0,
            "fallthrough": {"variation": 0}});
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    };
    let rule = |clause: serde_json::Value| json!({"rules": [{"id": "r", "variation": 1, "clauses": [clause]}]});
    let data = json!({
        "flags": {
            "plain-on": bool_flag(json!({})),
            "plain-off": bool_flag(json!({"on": false})),
            "number-flag": {"on": true, "variations": [1, 2.5], "fallthrough": {"variation": 1}},
            "string-flag": {"on": true, "variations": ["a", "b"], "fallthrough": {"variation": 0}},
            "target": bool_flag(json!({"targets": [{"values": targets, "variation": 1}],
                "contextTargets": [{"contextKind": "org", "values": ["o1"], "variation": 0}, {"contextKind": "user", "variation": 1}]})),
            "rule-string": bool_flag(rule(json!({"attribute": "email", "op": "endsWith", "values": ["@example.com"]}))),
            "rule-in": bool_flag(rule(json!({"contextKind": "user", "attribute": "/address/city", "op": "in", "values": ["Paris", "Rome"]}))),
            "rule-number": bool_flag(rule(json!({"attribute": "age", "op": "greaterThanOrEqual", "values": [18]}))),
            "rule-regex": bool_flag(rule(json!({"attribute": "email", "op": "matches", "values": ["^[a-z]+@example\\.com$"]}))),
            "rule-semver": bool_flag(rule(json!({"attribute": "version", "op": "semVerGreaterThan", "values": ["1.2"]}))),
            "rule-date": bool_flag(rule(json!({"attribute": "joined", "op": "before", "values": ["2030-01-01T00:00:00Z"]}))),
            "rule-kind": bool_flag(rule(json!({"attribute": "kind", "op": "in", "values": ["user"]}))),
            "rule-array": bool_flag(rule(json!({"attribute": "groups", "op": "in", "values": ["beta"]}))),
            "rollout": {"on": true, "salt": "s", "variations": ["a", "b", "c"],
                "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 33333}, {"variation": 1, "weight": 33333}, {"variation": 2, "weight": 33334}]}}},
            "rollout-by-number": {"on": true, "salt": "s", "variations": ["a", "b"],
                "fallthrough": {"rollout": {"bucketBy": "age", "variations": [{"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}},
            "experiment": {"on": true, "salt": "s", "variations": ["a", "b"],
                "fallthrough": {"rollout": {"kind": "experiment", "seed": 61, "variations": [{"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}},
            "segment-rule": bool_flag(rule(json!({"op": "segmentMatch", "values": ["big"]}))),
            "segment-included": bool_flag(rule(json!({"op": "segmentMatch", "values": ["listed"]}))),
            "segment-nested": bool_flag(rule(json!({"op": "segmentMatch", "values": ["outer"]}))),
            "prereqs": bool_flag(json!({"prerequisites": [{"key": "plain-on", "variation": 0}, {"key": "rule-string", "variation": 1}]})),
            "prereq-fails": bool_flag(json!({"prerequisites": [{"key": "plain-off", "variation": 1}]}))
        },
        "segments": {
            "big": {"salt": "x", "included": members, "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["gold"]}], "weight": 100000, "bucketBy": "key"}]},
            "listed": {"included": ["user-50"], "includedContexts": [{"contextKind": "org", "values": ["o1"]}]},
            "outer": {"rules": [{"clauses": [{"op": "segmentMatch", "values": ["big"]}]}]}
        }
    });
    CompiledData::compile(FlagData::from_json_value(data).unwrap()).unwrap()
}

#[test]
fn evaluation_does_not_allocate() {
    let data = data();
    let user = Context::from_json(&json!({
        "kind": "user", "key": "user-50", "email": "ann@example.com", "age": 42, "plan": "gold",
        "version": "1.10.0", "joined": "2020-05-01T10:00:00Z", "address": {"city": "Paris"},
        "groups": ["alpha", "beta"]
    }))
    .unwrap();
    let multi = Context::from_json(
        &json!({"kind": "multi", "user": {"key": "user-1"}, "org": {"key": "o1"}}),
    )
    .unwrap();
    let evaluator = Evaluator::new(&data);

    let cases: &[(&str, &Context, Option<usize>, &str)] = &[
        ("plain-on", &user, Some(0), "FALLTHROUGH"),
        ("plain-off", &user, Some(0), "OFF"),
        ("number-flag", &user, Some(1), "FALLTHROUGH"),
        ("string-flag", &user, Some(0), "FALLTHROUGH"),
        ("target", &user, Some(1), "TARGET_MATCH"),
        ("target", &multi, Some(0), "TARGET_MATCH"),
        ("rule-string", &user, Some(1), "RULE_MATCH"),
        ("rule-in", &user, Some(1), "RULE_MATCH"),
        ("rule-number", &user, Some(1), "RULE_MATCH"),
        ("rule-regex", &user, Some(1), "RULE_MATCH"),
        ("rule-semver", &user, Some(1), "RULE_MATCH"),
        ("rule-date", &user, Some(1), "RULE_MATCH"),
        ("rule-kind", &multi, Some(1), "RULE_MATCH"),
        ("rule-array", &user, Some(1), "RULE_MATCH"),
        ("rollout", &user, None, "FALLTHROUGH"),
        ("rollout-by-number", &user, None, "FALLTHROUGH"),
        ("experiment", &user, None, "FALLTHROUGH"),
        ("segment-rule", &user, Some(1), "RULE_MATCH"),
        ("segment-included", &multi, Some(1), "RULE_MATCH"),
        ("segment-nested", &user, Some(1), "RULE_MATCH"),
        ("prereqs", &user, Some(0), "FALLTHROUGH"),
        ("prereq-fails", &user, Some(0), "PREREQUISITE_FAILED"),
        ("no-such-flag", &user, None, "ERROR"),
    ];
    // Warm up once: the regex engine keeps a per-thread matching cache that is created on first
    // use and reused afterwards.
    for (key, ctx, _, _) in cases {
        evaluator.evaluate(key, ctx);
    }
    for (key, ctx, want_variation, want_kind) in cases {
        let (count, detail) = allocations(|| evaluator.evaluate(key, ctx));
        assert_eq!(detail.reason.kind_str(), *want_kind, "{key}: {detail:?}");
        if want_variation.is_some() {
            assert_eq!(detail.variation_index, *want_variation, "{key}: {detail:?}");
        }
        assert_eq!(count, 0, "evaluating {key} allocated {count} times");
    }
    // The counter itself works: a deliberate allocation is seen.
    let (count, _) = allocations(|| vec![1u8; 16]);
    assert!(count >= 1);
}
