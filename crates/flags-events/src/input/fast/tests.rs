//! The direct reader against the tree reader: on every body the direct reader reads, the same
//! events; on every body, `parse_bulk` returns exactly the tree reader's result.

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
