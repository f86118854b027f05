//! Properties of evaluation over arbitrary data: it never panics, and it never disagrees with
//! itself (the same answer twice, and the same answer from a snapshot compiled afresh from the
//! serialized data).
//!
//! Flag and segment keys come from tiny sets, so prerequisite cycles, segment cycles, missing
//! prerequisites and missing segments all occur; variation indexes run out of range; attribute
//! references include invalid ones; operators include unknown ones.
#![allow(clippy::unwrap_used)]

use flags_core::{Context, FlagData};
use flags_eval::{CompiledData, Evaluator};
use proptest::prelude::*;
use serde_json::{Value, json};

const FLAG_KEYS: &[&str] = &["f0", "f1", "f2", "f3"];
const SEGMENT_KEYS: &[&str] = &["s0", "s1", "s2"];
const KINDS: &[&str] = &["", "user", "org"];
const ATTRS: &[&str] = &[
    "key",
    "name",
    "kind",
    "email",
    "age",
    "groups",
    "/a/b",
    "a",
    "",
    "/",
    "/a~",
    "/a~1b",
    "anonymous",
];
const OPS: &[&str] = &[
    "in",
    "endsWith",
    "startsWith",
    "matches",
    "contains",
    "lessThan",
    "lessThanOrEqual",
    "greaterThan",
    "greaterThanOrEqual",
    "before",
    "after",
    "semVerEqual",
    "semVerLessThan",
    "semVerGreaterThan",
    "segmentMatch",
    "bogus",
];

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::sample::select(items).prop_map(|s| json!(s))
}

fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        pick(&[
            "a",
            "b",
            "user",
            "org",
            "x@example.com",
            "^[a-z]+",
            "(bad",
            "1.2.3",
            "2",
            "1.2.3-rc.1",
            "02.1",
            "2020-01-01T00:00:00Z",
            "2020-13-01",
            "s0",
            "s1",
            "s2",
            "f0"
        ]),
        any::<i32>().prop_map(|n| json!(n)),
        // Quarter steps are exact in binary, so they survive a text round trip unchanged.
        any::<i32>().prop_map(|n| json!(f64::from(n) / 4.0)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ]
    .boxed()
}

fn value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
        1 => (scalar(), scalar()).prop_map(|(a, b)| json!({"b": a, "c": b})),
    ]
    .boxed()
}

fn clause() -> BoxedStrategy<Value> {
    (pick(KINDS), pick(ATTRS), pick(OPS), prop::collection::vec(value(), 0..3), any::<bool>()).prop_map(
        |(kind, attr, op, values, negate)| {
            json!({"contextKind": kind, "attribute": attr, "op": op, "values": values, "negate": negate})
        },
    )
    .boxed()
}

fn index() -> BoxedStrategy<Value> {
    (-1i64..4).prop_map(|i| json!(i)).boxed()
}

fn rollout() -> BoxedStrategy<Value> {
    (
        prop::collection::vec((index(), 0i64..120_000, any::<bool>()), 0..4),
        any::<bool>(),
        prop::option::of(pick(ATTRS)),
        pick(KINDS),
        prop::option::of(-100i64..100),
    )
        .prop_map(|(buckets, experiment, bucket_by, kind, seed)| {
            let variations: Vec<Value> = buckets
                .into_iter()
                .map(|(v, w, u)| json!({"variation": v, "weight": w, "untracked": u}))
                .collect();
            let mut r = json!({"kind": if experiment { "experiment" } else { "rollout" },
                "contextKind": kind, "variations": variations});
            if let Some(b) = bucket_by {
                r["bucketBy"] = b;
            }
            if let Some(s) = seed {
                r["seed"] = json!(s);
            }
            r
        })
        .boxed()
}

fn outcome() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => index().prop_map(|v| json!({"variation": v})),
        2 => rollout().prop_map(|r| json!({"rollout": r})),
        1 => Just(json!({})),
    ]
    .boxed()
}

fn flag() -> BoxedStrategy<Value> {
    (
        any::<bool>(),
        prop::option::of(index()),
        prop::collection::vec((pick(FLAG_KEYS), index()), 0..3),
        prop::collection::vec((pick(KINDS), prop::collection::vec(pick(&["u1", "u2", "o1"]), 0..3), index()), 0..3),
        prop::collection::vec((prop::collection::vec(clause(), 0..3), outcome()), 0..3),
        outcome(),
    )
        .prop_map(|(on, off, prereqs, targets, rules, fallthrough)| {
            let prerequisites: Vec<Value> = prereqs.into_iter().map(|(k, v)| json!({"key": k, "variation": v})).collect();
            let context_targets: Vec<Value> = targets
                .iter()
                .map(|(kind, values, v)| json!({"contextKind": kind, "values": values, "variation": v}))
                .collect();
            let user_targets: Vec<Value> =
                targets.iter().map(|(_, values, v)| json!({"values": values, "variation": v})).collect();
            let rules: Vec<Value> = rules
                .into_iter()
                .enumerate()
                .map(|(i, (clauses, out))| {
                    let mut r = out;
                    r["id"] = json!(format!("r{i}"));
                    r["clauses"] = json!(clauses);
                    r
                })
                .collect();
            let mut f = json!({"on": on, "salt": "salt", "variations": [true, "x", 3],
                "prerequisites": prerequisites, "targets": user_targets, "contextTargets": context_targets,
                "rules": rules, "fallthrough": fallthrough});
            if let Some(off) = off {
                f["offVariation"] = off;
            }
            f
        })
    .boxed()
}

fn segment() -> BoxedStrategy<Value> {
    (
        prop::collection::vec(pick(&["u1", "u2"]), 0..2),
        prop::collection::vec(pick(&["u1", "u2"]), 0..2),
        prop::collection::vec((pick(KINDS), prop::collection::vec(pick(&["u1", "o1"]), 0..2)), 0..2),
        prop::collection::vec(
            (prop::collection::vec(clause(), 0..3), prop::option::of(0i64..100_001), prop::option::of(pick(ATTRS)), pick(KINDS)),
            0..3,
        ),
    )
        .prop_map(|(included, excluded, contexts, rules)| {
            let included_contexts: Vec<Value> =
                contexts.iter().map(|(k, v)| json!({"contextKind": k, "values": v})).collect();
            let rules: Vec<Value> = rules
                .into_iter()
                .map(|(clauses, weight, bucket_by, kind)| {
                    let mut r = json!({"clauses": clauses, "rolloutContextKind": kind});
                    if let Some(w) = weight {
                        r["weight"] = json!(w);
                    }
                    if let Some(b) = bucket_by {
                        r["bucketBy"] = b;
                    }
                    r
                })
                .collect();
            json!({"salt": "ss", "included": included, "excluded": excluded,
                "includedContexts": included_contexts, "excludedContexts": included_contexts.iter().rev().cloned().collect::<Vec<_>>(),
                "rules": rules})
        })
    .boxed()
}

fn single_context() -> BoxedStrategy<Value> {
    (
        pick(&["u1", "u2", "o1", ""]),
        prop::option::of(value()),
        prop::option::of(value()),
        prop::option::of(value()),
        prop::option::of(value()),
    )
        .prop_map(|(key, email, age, groups, a)| {
            let mut c = json!({"key": key});
            for (name, v) in [("email", email), ("age", age), ("groups", groups), ("a", a)] {
                if let Some(v) = v {
                    c[name] = v;
                }
            }
            c
        })
        .boxed()
}

fn context() -> BoxedStrategy<Value> {
    prop_oneof![
        (
            pick(&["user", "org", "multi", "kind", ""]),
            single_context()
        )
            .prop_map(|(kind, mut c)| {
                c["kind"] = kind;
                c
            }),
        single_context(),
        (single_context(), single_context())
            .prop_map(|(u, o)| json!({"kind": "multi", "user": u, "org": o})),
    ]
    .boxed()
}

fn data() -> BoxedStrategy<Value> {
    (
        prop::collection::vec(flag(), 4),
        prop::collection::vec(segment(), 3),
    )
        .prop_map(|(flags, segments)| {
            let flags: serde_json::Map<String, Value> = FLAG_KEYS
                .iter()
                .zip(flags)
                .map(|(k, f)| ((*k).to_owned(), f))
                .collect();
            let segments: serde_json::Map<String, Value> = SEGMENT_KEYS
                .iter()
                .zip(segments)
                .map(|(k, s)| ((*k).to_owned(), s))
                .collect();
            json!({"flags": flags, "segments": segments})
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn evaluation_never_panics_and_agrees_with_itself(data in data(), context in context()) {
        let flag_data = FlagData::from_json_value(data).unwrap();
        let compiled = CompiledData::compile(flag_data.clone()).unwrap();
        let reloaded = FlagData::from_json_str(&serde_json::to_string(&flag_data).unwrap()).unwrap();
        prop_assert_eq!(&reloaded, &flag_data);
        let fresh = CompiledData::compile(reloaded).unwrap();

        let Ok(ctx) = Context::from_json(&context) else {
            // An invalid context is answered, not panicked on.
            let d = Evaluator::new(&compiled).evaluate_json("f0", &context);
            prop_assert!(d.is_error());
            return Ok(());
        };
        let a = Evaluator::new(&compiled);
        let b = Evaluator::new(&fresh);
        for key in FLAG_KEYS.iter().copied().chain(["missing"]) {
            let first = a.evaluate(key, &ctx);
            let second = a.evaluate(key, &ctx);
            let other = b.evaluate(key, &ctx);
            prop_assert_eq!(&first, &second, "flag {} not deterministic", key);
            prop_assert_eq!(first.clone().into_owned(), other.into_owned(), "flag {} differs after reload", key);
            if let (Some(v), Some(i)) = (first.value, first.variation_index) {
                prop_assert_eq!(Some(v), compiled.flag(key).and_then(|f| f.variations().get(i)));
            }
            prop_assert_eq!(first.value.is_some(), first.variation_index.is_some());
        }
        let all: Vec<_> = a.evaluate_all(&ctx).map(|(k, d)| (k.to_owned(), d.into_owned())).collect();
        prop_assert_eq!(all.len(), FLAG_KEYS.len());
    }
}
