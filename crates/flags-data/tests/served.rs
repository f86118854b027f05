//! What a kill and overrides make of a served flag, checked by evaluating the served flag with
//! the plain engine, which is what an SDK does with it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use flags_core::{Context, Flag, FlagData};
use flags_data::{Override, serve_flag};
use flags_eval::CompiledData;
use proptest::prelude::*;
use serde_json::{Value, json};

/// A flag of three variations, `v0` to `v2`, serving `v0` by default and `v2` when off, with
/// `fields` on top.
fn flag(fields: Value) -> Flag {
    let mut doc = json!({
        "key": "f", "version": 1, "on": true, "salt": "f",
        "variations": ["v0", "v1", "v2"], "offVariation": 2, "fallthrough": {"variation": 0}
    });
    for (field, value) in fields.as_object().unwrap() {
        doc[field] = value.clone();
    }
    Flag::from_json_value(doc).unwrap()
}

fn pin(kind: &str, key: &str, variation: usize) -> Override {
    Override {
        context_kind: kind.to_owned(),
        context_key: key.to_owned(),
        variation,
    }
}

/// `flag` and the flag `p` it names as a prerequisite, evaluated for `context` as an SDK would.
fn evaluate(flag: &Flag, context: &Value) -> Value {
    let mut data = FlagData::default();
    data.flags.insert(flag.key.clone(), flag.clone());
    data.flags.insert(
        "p".into(),
        Flag::from_json_value(json!({"key": "p", "on": true, "variations": [false, true],
            "fallthrough": {"variation": 1},
            "targets": [{"values": ["no-prereq"], "variation": 0}]}))
        .unwrap(),
    );
    let compiled = CompiledData::compile(data).unwrap();
    let context = Context::from_json(context).unwrap();
    serde_json::to_value(flags_eval::evaluate(&compiled, &flag.key, &context)).unwrap()
}

/// Serves `fields` with `overrides` (killed when `killed`) and checks the answer for `context`:
/// `expected` is `[value, reason kind]`.
fn check(fields: Value, killed: bool, overrides: &[Override], context: Value, expected: [&str; 2]) {
    let served = serve_flag(flag(fields.clone()), killed, overrides);
    let got = evaluate(&served, &context);
    assert_eq!(
        [
            got["value"].as_str().unwrap_or("none"),
            got["reason"]["kind"].as_str().unwrap()
        ],
        expected,
        "{fields} with {overrides:?} (killed: {killed}) for {context}: {got}"
    );
}

/// Flag fields, killed, overrides, context, and the `[value, reason kind]` expected.
type Case = (Value, bool, Vec<Override>, Value, [&'static str; 2]);

#[test]
fn overrides_act_as_targets_placed_first() {
    let user = |key: &str| json!({"kind": "user", "key": key});
    let org = |key: &str| json!({"kind": "org", "key": key});
    let both = |u: &str, o: &str| json!({"kind": "multi", "user": {"key": u}, "org": {"key": o}});
    let none = json!({});
    let targeted = json!({"targets": [{"values": ["alice", "bob"], "variation": 1}]});
    let by_kind = json!({
        "targets": [{"values": ["alice"], "variation": 1}],
        "contextTargets": [
            {"contextKind": "org", "values": ["acme"], "variation": 2},
            {"contextKind": "user", "values": [], "variation": 1}
        ]
    });
    let cases: Vec<Case> = vec![
        // An override decides for its context alone.
        (
            none.clone(),
            false,
            vec![pin("user", "alice", 1)],
            user("alice"),
            ["v1", "TARGET_MATCH"],
        ),
        (
            none.clone(),
            false,
            vec![pin("user", "alice", 1)],
            user("bob"),
            ["v0", "FALLTHROUGH"],
        ),
        (
            none.clone(),
            false,
            vec![pin("", "alice", 1)],
            user("alice"),
            ["v1", "TARGET_MATCH"],
        ),
        (
            none.clone(),
            false,
            vec![pin("org", "alice", 1)],
            user("alice"),
            ["v0", "FALLTHROUGH"],
        ),
        (
            none.clone(),
            false,
            vec![pin("org", "acme", 2)],
            org("acme"),
            ["v2", "TARGET_MATCH"],
        ),
        // It comes before the flag's own targets, which keep serving everyone else.
        (
            targeted.clone(),
            false,
            vec![pin("user", "alice", 2)],
            user("alice"),
            ["v2", "TARGET_MATCH"],
        ),
        (
            targeted.clone(),
            false,
            vec![pin("user", "alice", 2)],
            user("bob"),
            ["v1", "TARGET_MATCH"],
        ),
        (
            targeted.clone(),
            false,
            vec![pin("user", "carol", 1)],
            user("bob"),
            ["v1", "TARGET_MATCH"],
        ),
        (
            targeted.clone(),
            false,
            vec![pin("user", "alice", 0)],
            user("alice"),
            ["v0", "TARGET_MATCH"],
        ),
        (
            by_kind.clone(),
            false,
            vec![pin("org", "acme", 0)],
            org("acme"),
            ["v0", "TARGET_MATCH"],
        ),
        (
            by_kind.clone(),
            false,
            vec![pin("org", "acme", 0)],
            user("alice"),
            ["v1", "TARGET_MATCH"],
        ),
        (
            by_kind.clone(),
            false,
            vec![pin("user", "alice", 0)],
            org("acme"),
            ["v2", "TARGET_MATCH"],
        ),
        // ... and before the rules.
        (
            json!({"rules": [{"id": "r", "variation": 1, "clauses": [
                {"attribute": "key", "op": "in", "values": ["alice"]}]}]}),
            false,
            vec![pin("user", "alice", 2)],
            user("alice"),
            ["v2", "TARGET_MATCH"],
        ),
        // Of a multi-kind context, an override of any kind comes before the flag's own targets;
        // between overrides, other kinds come before `user`.
        (
            by_kind.clone(),
            false,
            vec![pin("user", "bob", 0)],
            both("bob", "acme"),
            ["v0", "TARGET_MATCH"],
        ),
        (
            by_kind.clone(),
            false,
            vec![pin("org", "initech", 0)],
            both("alice", "initech"),
            ["v0", "TARGET_MATCH"],
        ),
        (
            none.clone(),
            false,
            vec![pin("user", "bob", 1), pin("org", "acme", 2)],
            both("bob", "acme"),
            ["v2", "TARGET_MATCH"],
        ),
        // The `user` list of a variation with `user` overrides holds the flag's own `user`
        // targets of it too, and moves first with them (the one documented difference).
        (
            by_kind.clone(),
            false,
            vec![],
            both("alice", "acme"),
            ["v2", "TARGET_MATCH"],
        ),
        (
            by_kind.clone(),
            false,
            vec![pin("user", "bob", 1)],
            both("alice", "acme"),
            ["v1", "TARGET_MATCH"],
        ),
        // Prerequisites come first: an override does not rescue a failed one.
        (
            json!({"prerequisites": [{"key": "p", "variation": 1}]}),
            false,
            vec![pin("user", "no-prereq", 1)],
            user("no-prereq"),
            ["v2", "PREREQUISITE_FAILED"],
        ),
        // An off or killed flag serves its off variation to everyone.
        (
            json!({"on": false}),
            false,
            vec![pin("user", "alice", 1)],
            user("alice"),
            ["v2", "OFF"],
        ),
        (
            targeted.clone(),
            true,
            vec![pin("user", "alice", 0)],
            user("alice"),
            ["v2", "OFF"],
        ),
        (none.clone(), true, vec![], user("bob"), ["v2", "OFF"]),
        // An override of a variation the flag lacks is malformed for that context only.
        (
            none.clone(),
            false,
            vec![pin("user", "alice", 7)],
            user("alice"),
            ["none", "ERROR"],
        ),
        (
            none,
            false,
            vec![pin("user", "alice", 7)],
            user("bob"),
            ["v0", "FALLTHROUGH"],
        ),
    ];
    for (fields, killed, overrides, context, expected) in cases {
        check(fields, killed, &overrides, context, expected);
    }
}

#[test]
fn the_served_targets_are_in_the_form_every_sdk_reads_alike() {
    let stored = flag(json!({
        "targets": [{"values": ["alice", "bob"], "variation": 1}, {"values": ["carol"], "variation": 1}],
        "contextTargets": [
            {"contextKind": "org", "values": ["acme", "initech"], "variation": 2},
            {"contextKind": "user", "values": [], "variation": 1}
        ]
    }));
    let overrides = [
        pin("user", "bob", 0),
        pin("org", "initech", 1),
        pin("user", "dave", 1),
        pin("device", "d1", 0),
    ];
    let served = serve_flag(stored.clone(), false, &overrides);
    let got = serde_json::to_value(&served).unwrap();
    assert_eq!(
        got["targets"],
        json!([
            {"values": ["bob"], "variation": 0},
            {"values": ["dave", "alice"], "variation": 1}
        ])
    );
    assert_eq!(
        got["contextTargets"],
        json!([
            {"contextKind": "device", "values": ["d1"], "variation": 0},
            {"contextKind": "org", "values": ["initech"], "variation": 1},
            {"contextKind": "user", "values": [], "variation": 0},
            {"contextKind": "user", "values": [], "variation": 1},
            {"contextKind": "org", "values": ["acme"], "variation": 2}
        ])
    );
    // Nothing else changes, and the order the overrides come in does not matter.
    let mut reversed = overrides.to_vec();
    reversed.reverse();
    assert_eq!(serve_flag(stored.clone(), false, &reversed), served);
    let rest = |f: &Flag| Flag {
        targets: Vec::new(),
        context_targets: Vec::new(),
        ..f.clone()
    };
    assert_eq!(rest(&served), rest(&stored));

    // Without overrides the targets stay as stored; a kill changes `on` alone.
    assert_eq!(serve_flag(stored.clone(), false, &[]), stored);
    let killed = serve_flag(stored.clone(), true, &[]);
    assert_eq!(
        killed,
        Flag {
            on: false,
            ..stored
        }
    );
}

// ---------------------------------------------------------------- properties

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn keys() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(KEYS.to_vec(), 0..=3)
        .prop_map(|keys| keys.into_iter().map(str::to_owned).collect())
}

/// A flag whose individual targets take any shape the data model allows: the legacy form,
/// or `contextTargets` of kind `user` (with or without values), empty (meaning `user`) or `org`,
/// with repeated keys and repeated variations; one rule and the fallthrough behind them.
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
    )
        .prop_map(|(targets, context_targets)| {
            flag(json!({
                "targets": targets,
                "contextTargets": context_targets,
                "rules": [{"id": "r", "variation": 1, "clauses": [
                    {"contextKind": "org", "attribute": "key", "op": "in", "values": ["b"]}]}]
            }))
        })
}

/// Overrides as a store holds them: one variation per context.
fn any_overrides() -> impl Strategy<Value = Vec<Override>> {
    proptest::collection::btree_map(
        (
            prop_oneof![Just("user"), Just("org")],
            proptest::sample::select(KEYS.to_vec()),
        ),
        0..3usize,
        0..5,
    )
    .prop_map(|map| {
        map.into_iter()
            .map(|((kind, key), variation)| pin(kind, key, variation))
            .collect()
    })
}

/// A `user` context, an `org` context, or both in one multi-kind context (in either order).
fn any_context() -> impl Strategy<Value = Value> {
    let key = || proptest::sample::select(KEYS.to_vec());
    prop_oneof![
        key().prop_map(|k| json!({"kind": "user", "key": k})),
        key().prop_map(|k| json!({"kind": "org", "key": k})),
        (key(), key())
            .prop_map(|(u, o)| json!({"kind": "multi", "user": {"key": u}, "org": {"key": o}})),
        (key(), key())
            .prop_map(|(u, o)| json!({"kind": "multi", "org": {"key": o}, "user": {"key": u}})),
    ]
}

/// The override that decides for `context`, if any: other kinds before `user`.
fn deciding_override(overrides: &[Override], context: &Value) -> Option<usize> {
    let kinds: BTreeMap<&str, &str> = match context["kind"].as_str().unwrap() {
        "multi" => ["org", "user"]
            .into_iter()
            .map(|k| (k, context[k]["key"].as_str().unwrap()))
            .collect(),
        kind => [(kind, context["key"].as_str().unwrap())]
            .into_iter()
            .collect(),
    };
    let find = |kind: &str| {
        let key = kinds.get(kind)?;
        overrides
            .iter()
            .find(|o| o.context_kind == kind && o.context_key == *key)
            .map(|o| o.variation)
    };
    find("org").or_else(|| find("user"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// A context with an override gets it; any other gets what the stored flag gives it (for
    /// a multi-kind context, when the flag's own targets are all of kind `user`, outside the
    /// documented difference). And the served targets are in the form every SDK reads alike.
    #[test]
    fn a_served_flag_gives_overrides_first_and_otherwise_the_flag_as_stored(
        stored in any_flag(),
        overrides in any_overrides(),
        context in any_context(),
    ) {
        let served = serve_flag(stored.clone(), false, &overrides);
        let got = evaluate(&served, &context);
        match deciding_override(&overrides, &context) {
            Some(variation) => {
                prop_assert_eq!(&got["variationIndex"], &json!(variation), "{}", got);
                prop_assert_eq!(&got["reason"], &json!({"kind": "TARGET_MATCH"}));
            }
            None => {
                let single = context["kind"] != "multi";
                let own_user_only = stored.target_lists().all(|(kind, _, _)| kind == "user");
                if single || own_user_only {
                    prop_assert_eq!(got, evaluate(&stored, &context));
                }
            }
        }

        if !overrides.is_empty() {
            let mut variations: Vec<usize> = served.targets.iter().map(|t| t.variation).collect();
            variations.sort_unstable();
            variations.dedup();
            prop_assert_eq!(variations.len(), served.targets.len(), "one user list per variation");
            for ct in &served.context_targets {
                if ct.context_kind == "user" {
                    prop_assert!(ct.values.is_empty());
                    prop_assert!(served.targets.iter().any(|t| t.variation == ct.variation));
                } else {
                    prop_assert!(!ct.values.is_empty());
                }
            }
            prop_assert!(served.targets.iter().all(|t| !t.values.is_empty() && t.context_kind.is_empty()));
            let mut shuffled = overrides.clone();
            shuffled.rotate_left(1);
            prop_assert_eq!(serve_flag(stored, false, &shuffled), served);
        }
    }
}
