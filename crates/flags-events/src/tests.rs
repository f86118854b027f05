use expect_test::expect;
use std::collections::BTreeMap;

use serde_json::json;

use super::*;

/// [`crate::parse_bulk`], checked on every body these tests read: where the direct reader reads
/// the body it gives the tree reader's events, and the result is always the tree reader's.
fn parse_bulk(body: &[u8]) -> Result<Vec<SdkEvent>, EventError> {
    let tree = input::parse_bulk_tree(body);
    if let Some(events) = input::parse_bulk_fast(body) {
        assert_eq!(Ok(events), tree);
    }
    let read = crate::parse_bulk(body);
    assert_eq!(read, tree);
    read
}

/// A flush as LaunchDarkly's server-side SDKs send it: an index event, a tracked flag's full
/// event, a debug event, a goal, and the summary of the period.
pub(crate) fn flush() -> Vec<u8> {
    json!([
        {"kind": "index", "creationDate": 1_700_000_000_000_u64,
         "context": {"kind": "user", "key": "alice", "_meta": {"redactedAttributes": ["email"]}}},
        {"kind": "feature", "creationDate": 1_700_000_000_001_u64, "key": "checkout",
         "version": 7, "variation": 1, "value": true, "default": false,
         "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "beta"},
         "contextKeys": {"user": "alice"}},
        {"kind": "debug", "creationDate": 1_700_000_000_002_u64, "key": "banner",
         "value": "hello", "default": "dflt",
         "context": {"kind": "multi", "user": {"key": "bob", "anonymous": true},
                     "org": {"key": "acme", "anonymous": true}}},
        {"kind": "custom", "creationDate": 1_700_000_000_003_u64, "key": "purchase",
         "contextKeys": {"org": "acme"}, "metricValue": 42.5},
        {"kind": "summary", "startDate": 1_700_000_000_000_u64, "endDate": 1_700_000_010_000_u64,
         "features": {"checkout": {"default": false, "contextKinds": ["user"], "counters": [
             {"value": true, "variation": 1, "version": 7, "count": 12},
             {"value": false, "count": 2, "unknown": true}]}}},
        {"kind": "diagnostic", "id": {"diagnosticId": "x"}}
    ])
    .to_string()
    .into_bytes()
}

#[test]
fn a_flush_reads_as_its_events() {
    let events = parse_bulk(&flush()).unwrap();
    let kinds: Vec<_> = events.iter().map(SdkEvent::kind).collect();
    assert_eq!(
        kinds,
        [
            "index",
            "feature",
            "debug",
            "custom",
            "summary",
            "diagnostic"
        ]
    );
    let SdkEvent::Feature(debug) = &events[2] else {
        panic!("{:?}", events[2]);
    };
    assert!(debug.debug);
    assert_eq!(debug.variation, None);
    assert!(debug.context.is_anonymous());
    assert_eq!(
        debug.context.keys(),
        [
            ("org".to_owned(), "acme".to_owned()),
            ("user".to_owned(), "bob".to_owned())
        ]
    );
}

#[test]
fn moving_events_into_records_makes_the_same_records_as_copying() {
    let mut events = parse_bulk(&flush()).unwrap();
    let identify = json!([{"kind": "identify", "creationDate": 5, "context": {"key": "k"}},
        {"kind": "feature", "creationDate": 6, "key": "p", "value": null, "default": null,
         "prereqOf": "checkout", "contextKeys": {"user": "k", "org": "o"}},
        {"kind": "custom", "creationDate": 7, "key": "goal", "data": {"a": 1},
         "context": {"kind": "multi", "org": {"key": "acme"}, "user": {"key": "u", "anonymous": true}}},
        {"kind": "metrics", "creationDate": 8, "metric": "latency", "api": "poll", "value": 3.5,
         "labels": {"region": "eu"}}]);
    events.extend(parse_bulk(identify.to_string().as_bytes()).unwrap());
    let copied = to_records(&events, "SDK");
    assert_eq!(copied.len(), 8);
    assert_eq!(into_records(events, "SDK"), copied);
}

#[test]
fn records_take_go_feature_flags_shape() {
    let events = parse_bulk(&flush()).unwrap();
    let records = to_records(&events, "SDK");
    let lines: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    expect![[r#"
        {"kind":"feature","contextKind":"user","userKey":"alice","creationDate":1700000000001,"key":"checkout","variation":"1","value":true,"default":false,"version":"7","source":"SDK","metadata":{"contextKeys":{"user":"alice"},"defaultValue":false,"reason":{"kind":"RULE_MATCH","ruleId":"beta","ruleIndex":0}}}
        {"kind":"feature","contextKind":"anonymousUser","userKey":"bob","creationDate":1700000000002,"key":"banner","variation":"SdkDefault","value":"hello","default":true,"version":"","source":"SDK","metadata":{"contextKeys":{"org":"acme","user":"bob"},"debug":true,"defaultValue":"dflt"}}
        {"kind":"custom","contextKind":"user","userKey":"acme","creationDate":1700000000003,"key":"purchase","value":42.5,"source":"SDK","metadata":{"contextKeys":{"org":"acme"}}}
        {"kind":"summary","creationDate":1700000010000,"startDate":1700000000000,"key":"checkout","variation":"1","value":true,"version":"7","count":12,"default":false,"contextKinds":["user"],"source":"SDK"}
        {"kind":"summary","creationDate":1700000010000,"startDate":1700000000000,"key":"checkout","variation":"SdkDefault","value":false,"version":"","count":2,"default":false,"contextKinds":["user"],"source":"SDK"}"#]]
    .assert_eq(&lines.join("\n"));
}

#[test]
fn problems_name_the_event_and_the_field() {
    let cases = [
        (
            json!({"kind": "feature"}).to_string(),
            "expected a JSON array of events, found an object",
        ),
        (
            json!([1]).to_string(),
            "[0]: expected an event object, found a number",
        ),
        (json!([{}]).to_string(), "[0].kind: missing"),
        (
            json!([{"kind": "custom", "creationDate": "yesterday", "key": "k",
                    "contextKeys": {"user": "u"}}])
            .to_string(),
            "[0].creationDate: expected a whole number, found a string",
        ),
        (
            json!([{"kind": "index", "creationDate": 1, "context": {}},
                   {"kind": "feature", "creationDate": 1, "key": "f"}])
            .to_string(),
            "[1].context: missing (nor contextKeys)",
        ),
        (
            json!([{"kind": "custom", "creationDate": 1, "key": "k",
                    "contextKeys": {"user": 7}}])
            .to_string(),
            "[0].contextKeys.user: expected a string, found a number",
        ),
        (
            json!([{"kind": "summary", "startDate": 1, "endDate": 2, "features": {
                "f": {"counters": [{"value": true, "count": -1}]}}}])
            .to_string(),
            "[0].features.f.counters[0].count: expected a whole number ≥ 0, found -1",
        ),
        (
            "[{".to_owned(),
            "invalid JSON: EOF while parsing an object at line 1 column 2",
        ),
    ];
    for (body, message) in cases {
        let error = parse_bulk(body.as_bytes()).unwrap_err();
        assert_eq!(error.to_string(), message, "{body}");
    }
}

#[test]
fn whole_numbers_written_as_floats_are_read() {
    let body = json!([{"kind": "feature", "creationDate": 1.7e12, "key": "f", "version": 3.0,
                       "variation": 0.0, "value": 1, "userKey": "legacy"}]);
    let events = parse_bulk(body.to_string().as_bytes()).unwrap();
    let SdkEvent::Feature(f) = &events[0] else {
        panic!();
    };
    assert_eq!(
        (f.creation_date, f.version, f.variation),
        (1_700_000_000_000, Some(3), Some(0))
    );
    assert_eq!(f.context.keys(), [("user".to_owned(), "legacy".to_owned())]);
}

#[test]
fn a_summary_counts_per_variation_and_version_and_reads_back() {
    let mut summarizer = Summarizer::new();
    assert!(summarizer.take().is_none());
    let (on, off, dflt) = (json!(true), json!(false), json!(false));
    let eval = |at, flag, version, variation, value| Evaluation {
        at,
        flag,
        version,
        variation,
        value,
        default: &dflt,
    };
    summarizer.count(eval(200, "checkout", Some(7), Some(1), &on), ["user"]);
    summarizer.count(
        eval(100, "checkout", Some(7), Some(1), &on),
        ["org", "user"],
    );
    summarizer.count(eval(300, "checkout", Some(7), Some(0), &off), ["user"]);
    summarizer.count(eval(250, "missing", None, None, &dflt), ["user"]);
    let summary = summarizer.take().unwrap();
    assert!(summarizer.is_empty());
    let json = summary.to_json();
    expect![[r#"{"endDate":300,"features":{"checkout":{"contextKinds":["org","user"],"counters":[{"count":2,"value":true,"variation":1,"version":7},{"count":1,"value":false,"variation":0,"version":7}],"default":false},"missing":{"contextKinds":["user"],"counters":[{"count":1,"unknown":true,"value":false}],"default":false}},"kind":"summary","startDate":100}"#]]
    .assert_eq(&json.to_string());
    let read = parse_bulk(json!([json]).to_string().as_bytes()).unwrap();
    assert_eq!(read, [SdkEvent::Summary(summary)]);
}

#[test]
fn metrics_events_read_back_and_become_metrics_records() {
    let event = MetricsEvent {
        creation_date: 1_700_000_000_000,
        metric: Metric::Latency,
        api: "poll".to_owned(),
        value: 12.5,
        labels: [("tag".to_owned(), "web".to_owned())].into(),
    };
    let body = json!([event.to_json(),
        {"kind": "metrics", "creationDate": 5, "metric": "timeoutError", "api": "stream"}]);
    let events = parse_bulk(body.to_string().as_bytes()).unwrap();
    assert_eq!(events[0], SdkEvent::Metrics(event));
    let SdkEvent::Metrics(timeout) = &events[1] else {
        panic!("{:?}", events[1]);
    };
    assert_eq!((timeout.metric, timeout.value), (Metric::TimeoutError, 1.0));
    let records = to_records(&events, "SDK");
    expect![[r#"
        {"kind":"metrics","creationDate":1700000000000,"metric":"latency","api":"poll","value":12.5,"labels":{"tag":"web"},"source":"SDK"}
        {"kind":"metrics","creationDate":5,"metric":"timeoutError","api":"stream","value":1.0,"source":"SDK"}"#]]
    .assert_eq(
        &records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let wrong = json!([{"kind": "metrics", "creationDate": 5, "metric": "speed", "api": "x"}]);
    assert_eq!(
        parse_bulk(wrong.to_string().as_bytes())
            .unwrap_err()
            .to_string(),
        r#"[0].metric: expected latency, size, timeoutError or internalError, found "speed""#
    );
    let missing = json!([{"kind": "metrics", "creationDate": 5, "metric": "size", "api": "x"}]);
    assert_eq!(
        parse_bulk(missing.to_string().as_bytes())
            .unwrap_err()
            .to_string(),
        "[0].value: missing"
    );
}

#[test]
fn every_record_reads_back_as_written() {
    let mut events = parse_bulk(&flush()).unwrap();
    events.push(SdkEvent::Metrics(MetricsEvent {
        creation_date: 9,
        metric: Metric::Size,
        api: "poll".to_owned(),
        value: 2048.0,
        labels: BTreeMap::new(),
    }));
    let records = to_records(&events, "SDK");
    assert_eq!(
        records.iter().map(Record::kind).collect::<Vec<_>>(),
        [
            "feature", "feature", "custom", "summary", "summary", "metrics"
        ]
    );
    for record in records {
        let line = serde_json::to_string(&record).unwrap();
        let read: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(read, record, "{line}");
    }
}

#[test]
fn every_event_writes_as_it_reads() {
    let events = parse_bulk(&flush()).unwrap();
    let mut written = Vec::new();
    for event in &events {
        match event.to_json() {
            Some(json) => written.push(json),
            None => assert_eq!(event.kind(), "diagnostic"),
        }
    }
    assert_eq!(written.len(), events.len() - 1);
    let identify = json!({"kind": "identify", "creationDate": 5, "context": {"key": "k"}});
    let prereq = json!({"kind": "feature", "creationDate": 6, "key": "p", "value": null,
                        "default": null, "prereqOf": "checkout", "contextKeys": {"user": "k"}});
    let custom = json!({"kind": "custom", "creationDate": 7, "key": "goal",
                        "context": {"kind": "org", "key": "acme"}, "data": {"a": 1}});
    written.extend([identify, prereq, custom]);
    let body = serde_json::to_vec(&written).unwrap();
    let read = parse_bulk(&body).unwrap();
    assert_eq!(&read[..events.len() - 1], &events[..events.len() - 1]);
    let rewritten: Vec<serde_json::Value> = read.iter().filter_map(SdkEvent::to_json).collect();
    assert_eq!(rewritten, written);
}

/// A small deterministic generator for the writer's cross-check: xorshift, seeded.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self) -> bool {
        self.next() & 1 == 1
    }

    /// Strings that exercise escaping: quotes, backslashes, every control character, DEL,
    /// multi-byte UTF-8, and plain runs around them.
    fn text(&mut self) -> String {
        const PIECES: [&str; 12] = [
            "alice", "\"", "\\", "\n", "\u{1}", "\u{1f}", "\u{7f}", "é", "🚀", "/", " ", "\t\r",
        ];
        let len = self.below(14);
        let mut s = String::new();
        for _ in 0..len {
            let piece = self.below(PIECES.len() as u64 + 1);
            match PIECES.get(usize::try_from(piece).unwrap()) {
                Some(p) => s.push_str(p),
                None => s.push(char::from(u8::try_from(self.below(0x20)).unwrap())),
            }
        }
        s
    }

    fn value(&mut self, depth: u32) -> serde_json::Value {
        match self.below(if depth > 1 { 6 } else { 8 }) {
            0 => serde_json::Value::Null,
            1 => json!(self.chance()),
            2 => json!(self.next()),
            3 => json!(-i64::try_from(self.below(1 << 40)).unwrap()),
            #[allow(clippy::cast_precision_loss)]
            4 => json!(self.below(1_000_000) as f64 / 7.0),
            5 => json!(self.text()),
            6 => serde_json::Value::Array(
                (0..self.below(3)).map(|_| self.value(depth + 1)).collect(),
            ),
            _ => serde_json::Value::Object(
                (0..self.below(3))
                    .map(|_| (self.text(), self.value(depth + 1)))
                    .collect(),
            ),
        }
    }

    fn maybe<T>(&mut self, f: impl FnOnce(&mut Draw) -> T) -> Option<T> {
        if self.chance() { Some(f(self)) } else { None }
    }

    fn metadata(&mut self) -> Metadata {
        let mut context_keys: Vec<(String, String)> = (0..self.below(3))
            .map(|_| (self.text(), self.text()))
            .collect();
        context_keys.sort();
        context_keys.dedup_by(|a, b| a.0 == b.0);
        Metadata {
            context_keys,
            debug: self.chance(),
            default_value: self.maybe(|d| d.value(0)),
            environment: self.maybe(|d| d.text().into()),
            prereq_of: self.maybe(Draw::text),
            reason: self.maybe(|d| JsonText::from_value(&d.value(0))),
        }
    }

    fn word(&mut self) -> Word {
        if self.chance() {
            Word::Borrowed(USER)
        } else {
            Word::Owned(self.text())
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn record(&mut self) -> Record {
        match self.below(4) {
            0 => Record::Feature(FeatureRecord {
                context_kind: self.word(),
                user_key: self.text(),
                creation_date: self.next(),
                key: self.text(),
                variation: self.maybe(|d| usize::try_from(d.below(1 << 20)).unwrap()),
                value: self.value(0),
                default: self.chance(),
                version: self.maybe(Draw::next),
                source: self.word(),
                metadata: self.metadata(),
            }),
            1 => Record::Custom(CustomRecord {
                context_kind: self.word(),
                user_key: self.text(),
                creation_date: self.next(),
                key: self.text(),
                value: self.maybe(|d| d.next() as f64 / 3.0),
                data: self.maybe(|d| d.value(0)),
                source: self.word(),
                metadata: self.metadata(),
            }),
            2 => Record::Summary(SummaryRecord {
                creation_date: self.next(),
                start_date: self.next(),
                key: self.text(),
                variation: self.maybe(|d| usize::try_from(d.below(9)).unwrap()),
                value: self.value(0),
                version: self.maybe(Draw::next),
                count: self.next(),
                default: self.value(0),
                context_kinds: (0..self.below(3)).map(|_| self.text()).collect(),
                source: self.word(),
            }),
            _ => Record::Metrics(MetricsRecord {
                creation_date: self.next(),
                metric: self.text(),
                api: self.text(),
                value: match self.below(4) {
                    0 => f64::NAN,
                    1 => 1.0,
                    _ => self.next() as f64 / 1e9,
                },
                labels: (0..self.below(3))
                    .map(|_| (self.text(), json!(self.text())))
                    .collect(),
                source: self.word(),
            }),
        }
    }
}

#[test]
fn records_are_written_by_hand_exactly_as_serde_writes_them() {
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
    let mut by_hand = Vec::new();
    for i in 0..20_000 {
        let record = draw.record();
        by_hand.clear();
        record.write_json(&mut by_hand);
        let reference = serde_json::to_vec(&record).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&by_hand),
            String::from_utf8_lossy(&reference),
            "record {i}: {record:?}"
        );
    }
    // The examples the other tests read, too.
    let mut events = parse_bulk(&flush()).unwrap();
    events.push(SdkEvent::Metrics(MetricsEvent {
        creation_date: 9,
        metric: Metric::Size,
        api: "poll".to_owned(),
        value: 2048.0,
        labels: [("tag".to_owned(), "web".to_owned())].into(),
    }));
    for record in to_records(&events, "SDK") {
        by_hand.clear();
        record.write_json(&mut by_hand);
        assert_eq!(by_hand, serde_json::to_vec(&record).unwrap());
    }
}
