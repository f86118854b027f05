//! Evaluation semantics by example, one `check` per case: prerequisites, targets, segments,
//! rollouts and contexts.
#![allow(clippy::unwrap_used)]

use flags_core::{Context, FlagData, Value};
use flags_eval::{CompiledData, Evaluator, is_experiment};
use serde_json::json;

fn compile(data: Value) -> CompiledData {
    CompiledData::compile(FlagData::from_json_value(data).unwrap()).unwrap()
}

fn flags() -> CompiledData {
    compile(json!({
        "flags": {
            "plain": {"on": true, "variations": ["off", "on", "other"], "offVariation": 0, "fallthrough": {"variation": 1}},
            "org-rollout": {"on": true, "salt": "s", "variations": ["a", "b"], "fallthrough": {"rollout": {
                "kind": "experiment", "contextKind": "org", "variations": [{"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}},
            "segment-by-context": {"on": true, "variations": [false, true], "fallthrough": {"variation": 0},
                "rules": [{"id": "in-seg", "variation": 1, "clauses": [{"op": "segmentMatch", "values": ["mixed"]}]}]},
            "weighted-segment": {"on": true, "variations": [false, true], "fallthrough": {"variation": 0},
                "rules": [{"id": "w", "variation": 1, "clauses": [{"op": "segmentMatch", "values": ["none-weighted"]}]}]},
            "tracked": {"on": true, "trackEventsFallthrough": true, "variations": [1], "fallthrough": {"variation": 0}}
        },
        "segments": {
            "mixed": {"included": ["u-in"], "excluded": ["u-out"],
                "includedContexts": [{"contextKind": "org", "values": ["o-in"]}],
                "excludedContexts": [{"contextKind": "org", "values": ["o-out"]}],
                "rules": [{"clauses": [{"attribute": "beta", "op": "in", "values": [true]}]}]},
            "none-weighted": {"salt": "x", "rules": [{"clauses": [], "weight": 0}]}
        }
    }))
}

fn check(evaluator: &Evaluator<'_>, flag: &str, context: Value, expected: Value) {
    let ctx = Context::from_json(&context).unwrap();
    let got = serde_json::to_value(evaluator.evaluate(flag, &ctx)).unwrap();
    assert_eq!(got, expected, "{flag} for {context}");
}

#[test]
fn segments_by_context_kind() {
    let data = flags();
    let ev = Evaluator::new(&data);
    let yes = json!({"value": true, "variationIndex": 1, "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "in-seg"}});
    let no = json!({"value": false, "variationIndex": 0, "reason": {"kind": "FALLTHROUGH"}});
    check(
        &ev,
        "segment-by-context",
        json!({"key": "u-in"}),
        yes.clone(),
    );
    check(
        &ev,
        "segment-by-context",
        json!({"kind": "user", "key": "u-out", "beta": true}),
        no.clone(),
    );
    check(
        &ev,
        "segment-by-context",
        json!({"kind": "user", "key": "u-other", "beta": true}),
        yes.clone(),
    );
    check(
        &ev,
        "segment-by-context",
        json!({"kind": "org", "key": "o-in"}),
        yes.clone(),
    );
    check(
        &ev,
        "segment-by-context",
        json!({"kind": "org", "key": "u-in"}),
        no.clone(),
    );
    // Inclusion by any kind wins over exclusion by another.
    check(
        &ev,
        "segment-by-context",
        json!({"kind": "multi", "user": {"key": "u-out"}, "org": {"key": "o-in"}}),
        yes,
    );
    check(
        &ev,
        "segment-by-context",
        json!({"kind": "multi", "user": {"key": "u-x", "beta": true}, "org": {"key": "o-out"}}),
        no.clone(),
    );
    check(&ev, "weighted-segment", json!({"key": "anyone"}), no);
}

#[test]
fn rollouts_by_context_kind() {
    let data = flags();
    let ev = Evaluator::new(&data);
    // A context without the rollout's kind lands in bucket 0 and is not in the experiment.
    check(
        &ev,
        "org-rollout",
        json!({"key": "u1"}),
        json!({"value": "a", "variationIndex": 0, "reason": {"kind": "FALLTHROUGH"}}),
    );
    let ctx = Context::from_json(&json!({"kind": "org", "key": "o1"})).unwrap();
    let d = ev.evaluate("org-rollout", &ctx);
    assert!(d.reason.in_experiment(), "{d:?}");
    let flag = data.flag("org-rollout").unwrap().to_flag();
    assert!(is_experiment(&flag, &d.reason));
    let tracked = data.flag("tracked").unwrap().to_flag();
    assert!(is_experiment(
        &tracked,
        &ev.evaluate("tracked", &ctx).reason
    ));
    assert!(!is_experiment(
        &data.flag("plain").unwrap().to_flag(),
        &ev.evaluate("plain", &ctx).reason
    ));
}

#[test]
fn invalid_contexts_get_user_not_specified() {
    let data = flags();
    let ev = Evaluator::new(&data);
    for bad in [
        json!({"kind": "user", "key": ""}),
        json!({"kind": "multi"}),
        json!({"kind": "user"}),
        json!(7),
    ] {
        let d = ev.evaluate_json("plain", &bad);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"value": null, "reason": {"kind": "ERROR", "errorKind": "USER_NOT_SPECIFIED"}}),
            "{bad}"
        );
    }
    assert_eq!(
        ev.evaluate_json("missing", &json!({"key": "u"}))
            .reason
            .kind_str(),
        "ERROR"
    );
}

#[test]
fn snapshots_refuse_stale_updates_and_keep_tombstones() {
    let data = flags();
    let mut plain = data.flag("plain").unwrap().to_flag();
    plain.version = 0;
    assert!(
        data.upsert_flag(plain.clone()).unwrap().is_none(),
        "same version is stale"
    );
    plain.version = 2;
    plain.fallthrough.variation = Some(2);
    let next = data.upsert_flag(plain).unwrap().unwrap();
    let ctx = Context::user("u").unwrap();
    assert_eq!(
        flags_eval::evaluate(&next, "plain", &ctx).variation_index,
        Some(2)
    );
    assert_eq!(
        flags_eval::evaluate(&data, "plain", &ctx).variation_index,
        Some(1),
        "old snapshot unchanged"
    );

    let deleted = next.delete_flag("plain", 3).unwrap();
    assert!(deleted.flag("plain").is_none());
    assert!(deleted.flag_or_tombstone("plain").unwrap().is_deleted());
    assert!(deleted.delete_flag("plain", 3).is_none());
    let mut revived = data.flag("plain").unwrap().to_flag();
    revived.version = 3;
    assert!(
        deleted.upsert_flag(revived.clone()).unwrap().is_none(),
        "tombstone blocks same version"
    );
    revived.version = 4;
    assert!(
        deleted
            .upsert_flag(revived)
            .unwrap()
            .unwrap()
            .flag("plain")
            .is_some()
    );
    assert!(!deleted.flag_data().flags.contains_key("plain"));

    let mut seg = data.segment("mixed").unwrap().to_segment();
    seg.version = 1;
    seg.included.clear();
    let next = data.upsert_segment(seg).unwrap().unwrap();
    let ev = Evaluator::new(&next);
    check(
        &ev,
        "segment-by-context",
        json!({"key": "u-in"}),
        json!({"value": false, "variationIndex": 0, "reason": {"kind": "FALLTHROUGH"}}),
    );
    assert!(
        next.delete_segment("mixed", 2)
            .unwrap()
            .segment("mixed")
            .is_none()
    );

    let keys: Vec<&str> = Evaluator::new(&data)
        .evaluate_all(&ctx)
        .map(|(k, _)| k)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), data.flag_count());
}

#[test]
fn deep_prerequisite_chains_are_malformed_not_a_crash() {
    // A chain far deeper than any real flag set ends in MALFORMED_FLAG rather than exhausting
    // the stack.
    let mut flags = serde_json::Map::new();
    for i in 0..1000 {
        let mut f = json!({"on": true, "variations": [true], "fallthrough": {"variation": 0}});
        if i < 999 {
            f["prerequisites"] = json!([{"key": format!("f{}", i + 1), "variation": 0}]);
        }
        flags.insert(format!("f{i}"), f);
    }
    let data = compile(json!({"flags": flags}));
    let ev = Evaluator::new(&data);
    check(
        &ev,
        "f0",
        json!({"key": "u"}),
        json!({"value": null, "reason": {"kind": "ERROR", "errorKind": "MALFORMED_FLAG"}}),
    );
    check(
        &ev,
        "f900",
        json!({"key": "u"}),
        json!({"value": true, "variationIndex": 0, "reason": {"kind": "FALLTHROUGH"}}),
    );
}

/// One evaluation keeps the custom attribute values its rules look up, one per (kind,
/// attribute): the same name under another kind, a prerequisite's own rules, more distinct
/// attributes than are kept, and an attribute missing from the context must all still count.
#[test]
fn rules_reading_the_same_attributes_each_see_their_own_values() {
    let clause = |kind: &str, attr: &str, value: &str| json!({"contextKind": kind, "attribute": attr, "op": "in", "values": [value]});
    // Rules 0 to 9 each test `country` (true for the user, false for the org) and one of ten
    // attributes a0..a9 with a value the context does not have; rule 10 tests them all with the
    // right values, and the org's country last.
    let mut rules: Vec<Value> = (0..10)
        .map(|i| {
            json!({"id": format!("r{i}"), "variation": 0, "clauses": [
                clause("user", "country", "gb"),
                clause("user", &format!("a{i}"), "wrong"),
            ]})
        })
        .collect();
    let mut last: Vec<Value> = (0..10)
        .map(|i| clause("user", &format!("a{i}"), &format!("v{i}")))
        .collect();
    last.push(clause("user", "missing", "x"));
    rules.push(json!({"id": "needs-missing", "variation": 0, "clauses": last.clone()}));
    last.pop();
    last.push(clause("org", "country", "fr"));
    last.push(clause("user", "country", "gb"));
    rules.push(json!({"id": "all", "variation": 1, "clauses": last}));
    let data = compile(json!({"flags": {
        "many": {"on": true, "variations": ["no", "yes", "fallthrough"], "fallthrough": {"variation": 2},
            "rules": rules},
        "gated": {"on": true, "variations": [false, true], "fallthrough": {"variation": 1},
            "prerequisites": [{"key": "many", "variation": 1}],
            "rules": [{"id": "org-gb", "variation": 0, "clauses": [clause("org", "country", "gb")]}]}
    }}));
    let ev = Evaluator::new(&data);
    let mut user = json!({"key": "u", "country": "gb"});
    for i in 0..10 {
        user[format!("a{i}")] = json!(format!("v{i}"));
    }
    let context = json!({"kind": "multi", "user": user, "org": {"key": "o", "country": "fr"}});
    check(
        &ev,
        "many",
        context.clone(),
        json!({"value": "yes", "variationIndex": 1,
            "reason": {"kind": "RULE_MATCH", "ruleIndex": 11, "ruleId": "all"}}),
    );
    check(
        &ev,
        "gated",
        context,
        json!({"value": true, "variationIndex": 1, "reason": {"kind": "FALLTHROUGH"}}),
    );
}

#[test]
fn full_events_are_required_as_the_flag_and_its_rules_say() {
    let data = compile(json!({"flags": {
        "all": {"on": true, "trackEvents": true, "variations": [0, 1], "fallthrough": {"variation": 0}},
        "fall": {"on": true, "trackEventsFallthrough": true, "variations": [0, 1],
            "fallthrough": {"variation": 0},
            "rules": [{"id": "r0", "variation": 1, "trackEvents": false,
                       "clauses": [{"attribute": "key", "op": "in", "values": ["ruled"]}]}]},
        "rule": {"on": true, "variations": [0, 1], "fallthrough": {"variation": 0},
            "rules": [{"id": "r0", "variation": 1, "trackEvents": true,
                       "clauses": [{"attribute": "key", "op": "in", "values": ["ruled"]}]}]},
        "none": {"on": true, "variations": [0, 1], "fallthrough": {"variation": 0},
            "debugEventsUntilDate": 42, "excludeFromSummaries": true}
    }}));
    let ev = Evaluator::new(&data);
    let requires = |flag: &str, key: &str| {
        let context = Context::user(key).unwrap();
        let detail = ev.evaluate(flag, &context);
        data.flag(flag).unwrap().requires_full_event(&detail.reason)
    };
    for (flag, key, expected) in [
        ("all", "anyone", true),
        ("fall", "anyone", true),
        ("fall", "ruled", false),
        ("rule", "anyone", false),
        ("rule", "ruled", true),
        ("none", "anyone", false),
    ] {
        assert_eq!(requires(flag, key), expected, "{flag} for {key}");
        // The compiled flag and the model agree wherever the flag's own switch is off.
        if flag != "all" {
            let context = Context::user(key).unwrap();
            let reason = ev.evaluate(flag, &context).reason;
            assert_eq!(
                is_experiment(&data.flag(flag).unwrap().to_flag(), &reason),
                expected
            );
        }
    }
    let none = data.flag("none").unwrap();
    assert_eq!(none.debug_events_until_date(), Some(42));
    assert!(none.exclude_from_summaries());
    assert!(!data.flag("all").unwrap().exclude_from_summaries());
}

#[test]
fn prerequisites_are_reported_in_evaluation_order() {
    let data = compile(json!({"flags": {
        "top": {"on": true, "variations": [false, true], "offVariation": 0, "fallthrough": {"variation": 1},
            "prerequisites": [{"key": "middle", "variation": 1}, {"key": "other", "variation": 0}]},
        "middle": {"on": true, "variations": [false, true], "offVariation": 0, "fallthrough": {"variation": 1},
            "prerequisites": [{"key": "bottom", "variation": 0}]},
        "bottom": {"on": true, "variations": ["x", "y"], "fallthrough": {"variation": 0}},
        "other": {"on": true, "variations": ["a", "b"], "fallthrough": {"variation": 1}}
    }}));
    let ev = Evaluator::new(&data);
    let context = Context::user("u").unwrap();
    let mut seen = Vec::new();
    let detail = ev.evaluate_observed("top", &context, &mut |p| {
        seen.push((
            p.flag.key().to_owned(),
            p.prerequisite_of.key().to_owned(),
            p.detail.variation_index,
        ));
    });
    // `other` serves variation 1, not the 0 required, so `top` is off.
    assert_eq!(detail.variation_index, Some(0));
    let seen: Vec<(&str, &str, Option<usize>)> = seen
        .iter()
        .map(|(f, of, v)| (f.as_str(), of.as_str(), *v))
        .collect();
    assert_eq!(
        seen,
        [
            ("bottom", "middle", Some(0)),
            ("middle", "top", Some(1)),
            ("other", "top", Some(1)),
        ]
    );
    // The plain call gives the same result.
    assert_eq!(ev.evaluate("top", &context), detail);
}
