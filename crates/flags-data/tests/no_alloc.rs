//! Evaluating through a snapshot under the operations layer, labels included, does not touch
//! the heap, as the engine does not.
#![allow(clippy::unwrap_used)]

use flags_core::{Context, FlagData, Reason};
use flags_data::{Ops, Snapshot};
use flags_test_support::alloc_count::allocations;
use serde_json::json;

flags_test_support::count_allocations!();

#[test]
fn labelled_evaluation_does_not_allocate() {
    let flag = |extra: serde_json::Value| {
        let mut f = json!({"on": true, "variations": [false, true], "offVariation": 0,
            "fallthrough": {"variation": 0}});
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    };
    let mut data = FlagData::from_json_value(json!({"flags": {
        "plain": flag(json!({})),
        "off": flag(json!({"on": false})),
        "killed": flag(json!({})),
        "overridden": flag(json!({"targets": [{"values": ["user-2"], "variation": 1}]}))
    }}))
    .unwrap();
    let ops = Ops::default();
    ops.kill("killed");
    ops.set_override("overridden", "org", "o1", 1);
    for flag in data.flags.values_mut() {
        *flag = ops.serve(flag.clone());
    }
    let snapshot = Snapshot::from_models(data, 1).unwrap();
    let multi = Context::from_json(
        &json!({"kind": "multi", "user": {"key": "user-1"}, "org": {"key": "o1"}}),
    )
    .unwrap();
    let user = Context::from_json(&json!({"kind": "user", "key": "user-2"})).unwrap();
    let cases: &[(&str, &Context, Reason<'_>)] = &[
        (
            "plain",
            &multi,
            Reason::Fallthrough {
                in_experiment: false,
            },
        ),
        ("off", &multi, Reason::Off { killed: false }),
        ("killed", &multi, Reason::Off { killed: true }),
        (
            "overridden",
            &multi,
            Reason::TargetMatch { is_override: true },
        ),
        (
            "overridden",
            &user,
            Reason::TargetMatch { is_override: false },
        ),
    ];
    for (key, ctx, _) in cases {
        snapshot.evaluate(&ops, key, ctx);
    }
    for (key, ctx, want) in cases {
        let (count, detail) = allocations(|| snapshot.evaluate(&ops, key, ctx));
        assert_eq!(&detail.reason, want, "{key}");
        assert_eq!(count, 0, "evaluating {key} allocated {count} times");
    }
    let (count, _) = allocations(|| vec![1u8; 16]);
    assert!(count >= 1, "the counter counts");
}
