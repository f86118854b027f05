//! The direct reader against the tree reader: on every body the direct reader reads, the same
//! events; on every body, `parse_bulk` returns exactly the tree reader's result.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use super::parse_bulk_fast;
use crate::input::parse_bulk_tree;
use crate::{EventContext, Metric, SdkEvent, parse_bulk};

/// Checks `body` both ways; the events, if the direct reader read it.
fn agree(body: &[u8]) -> Option<Vec<SdkEvent>> {
    let tree = parse_bulk_tree(body);
    let fast = parse_bulk_fast(body);
    let shown = String::from_utf8_lossy(body);
    if let Some(events) = &fast {
        assert_eq!(Ok(events), tree.as_ref(), "{shown}");
    }
    assert_eq!(parse_bulk(body), tree, "{shown}");
    fast
}

/// Events of the shapes `cargo xtask bench-events payload` writes, in its field order (serde_json
/// writes keys sorted, so `kind` comes after `contextKeys` and `creationDate`).
const BENCH_SHAPES: &str = r#"[
{"contextKeys":{"user":"user-48213"},"creationDate":1767225600000,"default":false,"key":"flag-007","kind":"feature","reason":{"kind":"FALLTHROUGH"},"value":true,"variation":1,"version":8},
{"contextKeys":{"organization":"org-42","user":"user-17"},"creationDate":1767225600001,"default":false,"key":"flag-049","kind":"feature","reason":{"kind":"RULE_MATCH","ruleId":"beta-users","ruleIndex":0},"value":false,"variation":0,"version":5},
{"contextKeys":{"user":"user-3"},"creationDate":1767225600040,"key":"checkout-completed","kind":"custom","metricValue":42.17},
{"contextKeys":{"organization":"org-7","user":"user-99999"},"creationDate":1767225600041,"data":{"items":3,"plan":"pro"},"key":"signup","kind":"custom"},
{"contextKeys":{"user":"user-5"},"creationDate":1767225600042,"key":"page-view","kind":"custom"},
{"endDate":1767225600049,"features":{
  "flag-003":{"contextKinds":["user"],"counters":[{"count":17,"value":false,"variation":0,"version":3},{"count":4,"value":true,"variation":1,"version":3}],"default":false},
  "flag-021":{"contextKinds":["user","organization"],"counters":[{"count":5,"value":"variant-b","variation":2,"version":3}],"default":"control"},
  "flag-040":{"contextKinds":["user"],"counters":[{"count":2,"value":25,"variation":1,"version":3}],"default":0}},
 "kind":"summary","startDate":1767225540049}
]"#;

#[test]
fn the_bench_payload_shapes_are_read_directly() {
    let events = parse_bulk_fast(BENCH_SHAPES.as_bytes()).expect("read directly");
    assert_eq!(Ok(events.clone()), parse_bulk_tree(BENCH_SHAPES.as_bytes()));
    let kinds: Vec<_> = events.iter().map(SdkEvent::kind).collect();
    assert_eq!(
        kinds,
        [
            "feature", "feature", "custom", "custom", "custom", "summary"
        ]
    );
    let SdkEvent::Summary(summary) = &events[5] else {
        panic!("{:?}", events[5]);
    };
    assert_eq!(summary.features.len(), 3);
    assert_eq!(summary.features["flag-003"].counters[1].count, 4);
}

#[test]
fn the_flush_of_the_other_tests_is_read_directly() {
    assert!(agree(&crate::tests::flush()).is_some());
}

#[test]
fn odd_but_valid_events_are_read_directly_and_agree() {
    let bodies = [
        // `kind` last, keys and strings escaped.
        r#"[{"key":"f","creationDate":1,"contextKeys":{"user":"u"},"kind":"feature"}]"#,
        r#"[{"\u006bind":"f\u0065ature","key":"caf\u00e9 \"q\"","creationDate":1,"userKey":"\ud83d\ude80"}]"#,
        // Whole numbers written as floats, `-0`, the largest u64.
        r#"[{"kind":"debug","creationDate":1.7e12,"key":"f","version":3.0,"variation":-0,"userKey":"u"}]"#,
        r#"[{"kind":"feature","creationDate":0,"key":"f","variation":18446744073709551615,"userKey":"u"}]"#,
        // Nulls: absent optional fields, `reason: null` and `data: null` are None.
        r#"[{"kind":"feature","creationDate":1,"key":"f","version":null,"variation":null,"value":null,"reason":null,"prereqOf":null,"context":null,"contextKeys":{"user":"u"}}]"#,
        r#"[{"kind":"custom","creationDate":1,"key":"g","data":null,"metricValue":null,"userKey":"u"}]"#,
        // Which context wins.
        r#"[{"kind":"custom","creationDate":1,"key":"g","contextKeys":{"user":"k"},"context":{"key":"c"},"user":{"key":"u"},"userKey":"uk"}]"#,
        r#"[{"kind":"custom","creationDate":1,"key":"g","userKey":"uk","user":{"key":"u"},"contextKeys":null}]"#,
        r#"[{"kind":"custom","creationDate":1,"key":"g","userKey":"uk","user":"not an object"}]"#,
        r#"[{"kind":"custom","creationDate":1,"key":"g","metricValue":7,"contextKeys":{"user":"a","user":"b"}}]"#,
        // Metrics: the error counts default to 1, integers are numbers.
        r#"[{"kind":"metrics","creationDate":1,"metric":"timeoutError","api":"poll","labels":null}]"#,
        r#"[{"kind":"metrics","creationDate":1,"metric":"size","api":"poll","value":2048,"labels":{"tag":"web"}}]"#,
        // Summaries with parts missing or null, and `unknown` other than `true`.
        r#"[{"kind":"summary","startDate":1,"endDate":2}]"#,
        r#"[{"kind":"summary","startDate":1,"endDate":2,"features":null}]"#,
        r#"[{"kind":"summary","startDate":1,"endDate":2,"features":{"f":{},"g":{"counters":null,"contextKinds":null,"default":null,"x":[1]},"h":{"counters":[{"count":1,"unknown":"yes","x":{}},{"count":2,"unknown":true}]}}}]"#,
        // Kinds read no further, with fields a known kind would refuse.
        r#"[{"kind":"diagnostic","id":{"diagnosticId":"x"},"extra":[1,{"a":null}]},{"kind":""}]"#,
        // Nothing, and whitespace around it.
        " [ ] \n",
        r#"[{"kind":"identify","creationDate":5,"context":{"key":"k"}},{"kind":"index","creationDate":6,"context":{"kind":"multi","user":{"key":"u"}}}]"#,
    ];
    for body in bodies {
        assert!(
            agree(body.as_bytes()).is_some(),
            "not read directly: {body}"
        );
    }
}

#[test]
fn whatever_the_direct_reader_leaves_gets_the_tree_readers_answer() {
    let bodies: [&[u8]; 26] = [
        // Problems: the tree reader's errors.
        b"{}",
        b"[1]",
        b"[{}]",
        b"[{",
        b"[] x",
        br#"[{"kind":7}]"#,
        br#"[{"kind":null}]"#,
        br#"[{"kind":"feature","creationDate":-1,"key":"f","userKey":"u"}]"#,
        br#"[{"kind":"feature","creationDate":2.5,"key":"f","userKey":"u"}]"#,
        br#"[{"kind":"feature","creationDate":18446744073709551616,"key":"f","userKey":"u"}]"#,
        br#"[{"kind":"feature","creationDate":null,"key":"f","userKey":"u"}]"#,
        br#"[{"kind":"feature","creationDate":1,"key":"f","userKey":null}]"#,
        br#"[{"kind":"custom","creationDate":1,"key":"g","contextKeys":{"user":7}}]"#,
        br#"[{"kind":"identify","creationDate":1,"context":null}]"#,
        br#"[{"kind":"metrics","creationDate":1,"metric":"latency","api":"poll","value":null}]"#,
        br#"[{"kind":"metrics","creationDate":1,"metric":"latency","api":"poll"}]"#,
        br#"[{"kind":"summary","startDate":1,"endDate":2,"features":{"f":{"counters":[{"count":null}]}}}]"#,
        // Not JSON to a `Value`, even in a field no kind reads.
        br#"[{"kind":"diagnostic","x":"\ud800"}]"#,
        b"[{\"kind\":\"diagnostic\",\"x\":\"\xff\"}]",
        br#"[{"kind":"diagnostic","x":1e400}]"#,
        // Fine for the tree reader, left by the direct one: a field named twice (the last
        // wins), a field of a type no known kind takes, on a kind that does not read it.
        br#"[{"kind":"feature","key":"a","creationDate":1,"userKey":"u","key":"b"}]"#,
        br#"[{"kind":"feature","kind":"custom","key":"a","creationDate":1,"userKey":"u"}]"#,
        br#"[{"kind":"summary","startDate":1,"endDate":2,"features":{"f":{},"f":{"default":1}}}]"#,
        br#"[{"kind":"migration_op","creationDate":"yesterday","key":{}}]"#,
        br#"[{"kind":"custom","creationDate":1,"key":"g","context":{"key":"c"},"contextKeys":7}]"#,
        br#"[{"kind":"feature","creationDate":1,"key":"f","userKey":"u","startDate":"x"}]"#,
    ];
    for body in bodies {
        assert!(
            agree(body).is_none(),
            "read directly: {}",
            String::from_utf8_lossy(body)
        );
    }
    // Nesting past serde_json's limit, in a field no kind reads.
    let deep = format!(
        r#"[{{"kind":"diagnostic","x":{}{}}}]"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(agree(deep.as_bytes()).is_none());
    assert!(parse_bulk(deep.as_bytes()).is_err());
}

#[test]
fn the_direct_reader_fills_every_field() {
    let body = json!([
        {"kind": "feature", "creationDate": 1, "key": "f", "version": 2, "variation": 1,
         "value": [1], "default": {"d": 0}, "reason": {"kind": "OFF"}, "prereqOf": "p",
         "context": {"kind": "org", "key": "acme"}},
        {"kind": "custom", "creationDate": 2, "key": "g", "data": "x", "metricValue": 1.5,
         "user": {"key": "legacy"}},
        {"kind": "metrics", "creationDate": 3, "metric": "internalError", "api": "events",
         "labels": {"region": "eu"}},
    ]);
    let body = body.to_string();
    let events = parse_bulk_fast(body.as_bytes()).expect("read directly");
    assert_eq!(Ok(events.clone()), parse_bulk_tree(body.as_bytes()));
    let [
        SdkEvent::Feature(f),
        SdkEvent::Custom(c),
        SdkEvent::Metrics(m),
    ] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert_eq!(
        (f.version, f.variation, f.prereq_of.as_deref()),
        (Some(2), Some(1), Some("p"))
    );
    assert_eq!(f.reason, Some(json!({"kind": "OFF"})));
    assert_eq!(
        f.context,
        EventContext::Full(json!({"kind": "org", "key": "acme"}))
    );
    assert_eq!(
        (c.data.clone(), c.metric_value),
        (Some(json!("x")), Some(1.5))
    );
    assert_eq!(c.context, EventContext::Full(json!({"key": "legacy"})));
    assert_eq!(
        (m.metric, m.value, m.labels.len()),
        (Metric::InternalError, 1.0, 1)
    );
}

// ------------------------------------------------------------------------- random bodies

fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A field name as a JSON key, now and then with its first letter escaped.
fn key_text(name: &'static str) -> impl Strategy<Value = String> {
    let mut chars = name.chars();
    let escaped = match chars.next() {
        Some(first) => format!("\"\\u{:04x}{}\"", u32::from(first), chars.as_str()),
        None => quoted(name),
    };
    prop_oneof![9 => Just(quoted(name)), 1 => Just(escaped)]
}

/// A JSON string: plain, escaped, non-ASCII, or (rarely, as it spoils the whole body) a lone
/// surrogate, which is not JSON to a `Value`.
fn string_text() -> impl Strategy<Value = String> {
    prop_oneof![
        150 => "[a-z]{0,5}".prop_map(|s| quoted(&s)),
        30 => prop::sample::select(&KINDS[..]).prop_map(quoted),
        8 => Just(r#""caf\u00e9 \"q\" \\ \n""#.to_owned()),
        8 => Just(r#""\ud83d\ude80 é""#.to_owned()),
        1 => Just(r#""\ud800""#.to_owned()),
    ]
}

/// Whole numbers ≥ 0 that serde_json reads as floats, and the largest u64.
const WHOLE_AS_FLOATS: [&str; 8] = [
    "3.0",
    "0.0",
    "-0",
    "-0.0",
    "1.7e12",
    "1E2",
    "0.1e1",
    "18446744073709551615",
];

/// A JSON number: mostly whole and ≥ 0 (some in a float's spelling), else negative,
/// fractional, too large for a u64, or (rarely) out of range.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        120 => (0u64..2_000_000_000_000).prop_map(|n| n.to_string()),
        60 => (0u64..10).prop_map(|n| n.to_string()),
        4 => (-5i64..0).prop_map(|n| n.to_string()),
        20 => prop::sample::select(&WHOLE_AS_FLOATS[..]).prop_map(str::to_owned),
        4 => prop::sample::select(&["2.5", "-1.5", "1.8e19", "18446744073709551616"][..])
            .prop_map(str::to_owned),
        1 => Just("1e400".to_owned()),
    ]
}

/// Any JSON value, a few levels deep.
fn json_text() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number_text(),
        string_text(),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((string_text(), inner), 0..4).prop_map(object),
        ]
    })
    .boxed()
}

fn object(entries: Vec<(String, String)>) -> String {
    let fields: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", fields.join(","))
}

/// Mostly `valid`, else `null` or any value.
fn or_any(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![60 => valid, 1 => Just("null".to_owned()), 1 => json_text()].boxed()
}

/// An object of the fields given (each present with its weight, now and then twice), plus
/// unknown fields, in random order.
fn fields_text(fields: Vec<(&'static str, f64, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let present: Vec<_> = fields
        .into_iter()
        .map(|(name, weight, value)| {
            let twice = proptest::option::weighted(0.04, value.clone());
            proptest::option::weighted(weight, (key_text(name), value, twice))
        })
        .collect();
    let unknown = prop::collection::vec((key_text("x"), json_text()), 0..2);
    (present, unknown)
        .prop_flat_map(|(present, unknown)| {
            let mut entries = unknown;
            for (key, value, twice) in present.into_iter().flatten() {
                if let Some(again) = twice {
                    entries.push((key.clone(), again));
                }
                entries.push((key, value));
            }
            Just(entries).prop_shuffle()
        })
        .prop_map(object)
        .boxed()
}

/// Any JSON value, `null` more often than [`json_text`] gives it: for the fields kept as JSON.
fn value_text() -> BoxedStrategy<String> {
    prop_oneof![1 => Just("null".to_owned()), 3 => json_text()].boxed()
}

const KINDS: [&str; 12] = [
    "feature",
    "debug",
    "custom",
    "identify",
    "index",
    "summary",
    "metrics",
    "diagnostic",
    "migration_op",
    "user",
    "org",
    "latency",
];

fn string_map() -> BoxedStrategy<String> {
    let value = prop_oneof![30 => string_text(), 1 => json_text()];
    prop::collection::vec(
        (prop::sample::select(&KINDS[..]).prop_map(quoted), value),
        0..3,
    )
    .prop_map(object)
    .boxed()
}

fn counter_text() -> BoxedStrategy<String> {
    let unknown = prop_oneof![
        2 => Just("true".to_owned()),
        2 => Just("false".to_owned()),
        1 => value_text(),
    ];
    fields_text(vec![
        ("value", 0.8, value_text()),
        ("variation", 0.7, or_any(number_text())),
        ("version", 0.7, or_any(number_text())),
        ("count", 0.98, or_any(number_text())),
        ("unknown", 0.6, unknown.boxed()),
    ])
}

fn features_text() -> BoxedStrategy<String> {
    let kinds =
        prop::collection::vec(string_text(), 0..3).prop_map(|k| format!("[{}]", k.join(",")));
    let counters =
        prop::collection::vec(counter_text(), 1..3).prop_map(|c| format!("[{}]", c.join(",")));
    let flag = fields_text(vec![
        ("default", 0.8, value_text()),
        ("contextKinds", 0.8, or_any(kinds)),
        ("counters", 0.9, or_any(counters)),
    ]);
    let key = prop_oneof![8 => "[a-z]{1,3}".prop_map(|s| quoted(&s)), 1 => string_text()];
    prop::collection::vec((key, or_any(flag)), 0..3)
        .prop_map(object)
        .boxed()
}

/// One element of the array: mostly an event object whose fields suit its kind.
fn event_text() -> BoxedStrategy<String> {
    let kind = prop_oneof![
        3 => Just("feature"),
        1 => Just("debug"),
        2 => Just("custom"),
        1 => Just("identify"),
        1 => Just("index"),
        3 => Just("summary"),
        2 => Just("metrics"),
        1 => prop::sample::select(&["diagnostic", "migration_op", ""][..]),
    ];
    let event = kind.prop_flat_map(|kind| {
        let own: &[&str] = match kind {
            "feature" | "debug" => &[
                "creationDate",
                "key",
                "version",
                "variation",
                "value",
                "default",
                "reason",
                "prereqOf",
            ],
            "custom" => &["creationDate", "key", "data", "metricValue"],
            "identify" | "index" => &["creationDate", "context"],
            "summary" => &["startDate", "endDate", "features"],
            "metrics" => &["creationDate", "metric", "api", "value", "labels"],
            _ => &["creationDate"],
        };
        let who = matches!(kind, "feature" | "debug" | "custom");
        let weight = |name: &str| {
            if own.contains(&name) {
                0.97
            } else if who && ["context", "contextKeys", "user", "userKey"].contains(&name) {
                0.5
            } else {
                0.04
            }
        };
        let kind_value = prop_oneof![
            30 => Just(quoted(kind)),
            1 => Just(r#""f\u0065ature""#.to_owned()),
            1 => json_text(),
        ];
        let context = prop_oneof![
            5 => Just(r#"{"kind":"user","key":"u"}"#.to_owned()),
            5 => Just(
                r#"{"kind":"multi","user":{"key":"u","anonymous":true},"org":{"key":"o"}}"#
                    .to_owned()
            ),
            1 => json_text(),
        ];
        let metric = vec!["latency", "size", "timeoutError", "internalError", "speed"];
        let metric = prop::sample::select(metric).prop_map(quoted);
        let value = prop_oneof![number_text(), value_text()];
        let fields: Vec<(&'static str, BoxedStrategy<String>)> = vec![
            ("creationDate", or_any(number_text())),
            ("key", or_any(string_text())),
            ("version", or_any(number_text())),
            ("variation", or_any(number_text())),
            ("value", value.boxed()),
            ("default", value_text()),
            ("reason", value_text()),
            ("context", or_any(context)),
            ("contextKeys", or_any(string_map())),
            ("user", or_any(Just(r#"{"key":"legacy"}"#.to_owned()))),
            ("userKey", or_any(string_text())),
            ("prereqOf", or_any(string_text())),
            ("data", value_text()),
            ("metricValue", or_any(number_text())),
            ("metric", or_any(metric)),
            ("api", or_any(string_text())),
            ("labels", or_any(string_map())),
            ("startDate", or_any(number_text())),
            ("endDate", or_any(number_text())),
            ("features", or_any(features_text())),
        ];
        let mut fields: Vec<_> = fields
            .into_iter()
            .map(|(name, value)| (name, weight(name), value))
            .collect();
        fields.push(("kind", 0.98, kind_value.boxed()));
        fields_text(fields)
    });
    prop_oneof![30 => event, 1 => json_text()].boxed()
}

/// A body: mostly an array of events, else something else or something after it.
fn body_text() -> BoxedStrategy<String> {
    let events = prop_oneof![
        3 => prop::collection::vec(event_text(), 1..3),
        1 => prop::collection::vec(event_text(), 0..5),
    ];
    let array = events.prop_map(|e| format!("[{}]", e.join(",")));
    prop_oneof![
        40 => array.clone(),
        1 => array.prop_map(|a| format!(" {a} x")),
        1 => json_text(),
    ]
    .boxed()
}

#[test]
fn random_bodies_read_alike_both_ways() {
    let mut runner = TestRunner::new(Config {
        cases: 4096,
        failure_persistence: None,
        ..Config::default()
    });
    let (direct, tree_ok, tree_err) = (Cell::new(0), Cell::new(0), Cell::new(0));
    // Events read directly, by kind (and summaries with counters apart).
    let kinds = RefCell::new(BTreeMap::<String, usize>::new());
    runner
        .run(&body_text(), |body| {
            if let Some(events) = agree(body.as_bytes()) {
                direct.set(direct.get() + 1);
                let mut kinds = kinds.borrow_mut();
                for event in &events {
                    let kind = match event {
                        SdkEvent::Other { .. } => "other",
                        SdkEvent::Summary(s)
                            if s.features.values().any(|f| !f.counters.is_empty()) =>
                        {
                            "summary, counted"
                        }
                        event => event.kind(),
                    };
                    *kinds.entry(kind.to_owned()).or_default() += 1;
                }
            } else if parse_bulk_tree(body.as_bytes()).is_ok() {
                tree_ok.set(tree_ok.get() + 1);
            } else {
                tree_err.set(tree_err.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let counts = (direct.get(), tree_ok.get(), tree_err.get());
    let kinds = kinds.into_inner();
    println!(
        "read directly, left and read by the tree, refused: {counts:?}; read directly: {kinds:?}"
    );
    // The bodies must reach every outcome and every kind often, or the comparison proves little.
    assert!(
        counts.0 >= 700 && counts.1 >= 50 && counts.2 >= 700,
        "{counts:?}"
    );
    for kind in [
        "feature",
        "debug",
        "custom",
        "identify",
        "index",
        "summary",
        "summary, counted",
        "metrics",
        "other",
    ] {
        let read = kinds.get(kind).copied().unwrap_or_default();
        assert!(read >= 20, "{kind}: {read} read directly");
    }
}
