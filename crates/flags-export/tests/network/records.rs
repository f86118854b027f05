//! The batches the tests export: every kind of record, with values that are easy to get
//! wrong (Unicode, quotes, numbers at the edge of their type, nested JSON, empty and missing
//! fields).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flags_events::{
    CustomRecord, FeatureRecord, JsonText, Metadata, MetricsRecord, Record, SummaryRecord,
};
use flags_export::ExportError;
use serde_json::{Map, Value, json};

/// A name no other test, run or binary uses: `prefix` and letters, digits and `_`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One record of each kind and then some, each distinct.
pub fn batch() -> Vec<Record> {
    let object = |value: Value| -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object literal"),
        }
    };
    vec![
        Record::Feature(FeatureRecord {
            context_kind: "user".into(),
            user_key: "user-1".to_owned(),
            creation_date: 1_700_000_000_123,
            key: "new-checkout".to_owned(),
            variation: Some(1),
            value: json!({"layout": "grid", "limits": [1, 2.5, -3], "nested": {"ok": true}}),
            default: false,
            version: Some(42),
            source: "SERVER".into(),
            metadata: Metadata {
                context_keys: vec![
                    ("org".to_owned(), "acme".to_owned()),
                    ("user".to_owned(), "user-1".to_owned()),
                ],
                reason: Some(JsonText::from_value(
                    &json!({"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "r1"}),
                )),
                default_value: Some(Value::Null),
                environment: Some("prod \"eu\"".into()),
                ..Metadata::default()
            },
        }),
        Record::Feature(FeatureRecord {
            context_kind: "anonymousUser".into(),
            user_key: "ünïcødé \"quoted\" \\ back/slash 🚀".to_owned(),
            creation_date: 0,
            key: "missing-flag".to_owned(),
            variation: None,
            value: json!(u64::MAX),
            default: true,
            version: None,
            source: "SDK".into(),
            metadata: Metadata::default(),
        }),
        Record::Custom(CustomRecord {
            context_kind: "user".into(),
            user_key: "user-2".to_owned(),
            creation_date: 1_700_000_000_999,
            key: "purchase".to_owned(),
            value: Some(19.99),
            data: Some(json!({"items": ["a", "b"], "total": {"amount": 1999, "currency": "EUR"}})),
            source: "SDK".into(),
            metadata: Metadata {
                context_keys: vec![("user".to_owned(), "user-2".to_owned())],
                ..Metadata::default()
            },
        }),
        Record::Custom(CustomRecord {
            context_kind: "user".into(),
            user_key: "user-3".to_owned(),
            creation_date: 1_700_000_001_000,
            key: "page-view".to_owned(),
            value: None,
            data: None,
            source: "SDK".into(),
            metadata: Metadata::default(),
        }),
        Record::Summary(SummaryRecord {
            creation_date: 1_700_000_060_000,
            start_date: 1_700_000_000_000,
            key: "new-checkout".to_owned(),
            variation: Some(0),
            value: json!("control"),
            version: Some(42),
            count: 12_345,
            default: json!("off"),
            context_kinds: vec!["user".to_owned(), "org".to_owned()],
            source: "SERVER".into(),
        }),
        Record::Summary(SummaryRecord {
            creation_date: 1_700_000_060_000,
            start_date: 1_700_000_000_000,
            key: "missing-flag".to_owned(),
            variation: None,
            value: Value::Null,
            version: None,
            count: 1,
            default: json!([1, "two", null]),
            context_kinds: Vec::new(),
            source: "SDK".into(),
        }),
        Record::Metrics(MetricsRecord {
            creation_date: 1_700_000_002_500,
            metric: "latency".to_owned(),
            api: "poll".to_owned(),
            value: 12.75,
            labels: object(json!({"region": "eu-west-1", "sdk": "go"})),
            source: "SDK".into(),
        }),
        Record::Metrics(MetricsRecord {
            creation_date: 1_700_000_002_501,
            metric: "timeoutError".to_owned(),
            api: "stream".to_owned(),
            value: 1.0,
            labels: Map::new(),
            source: "SDK".into(),
        }),
    ]
}

/// `n` distinct feature records.
pub fn many(n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            Record::Feature(FeatureRecord {
                context_kind: "user".into(),
                user_key: format!("user-{i}"),
                creation_date: 1_700_000_000_000 + i,
                key: "bulk".to_owned(),
                variation: Some(usize::try_from(i % 3).unwrap_or_default()),
                value: json!(i),
                default: false,
                version: Some(1),
                source: "SERVER".into(),
                metadata: Metadata::default(),
            })
        })
        .collect()
}

/// Whether `outcome` failed as retryable (`Some(true)`), failed as permanent (`Some(false)`),
/// or succeeded (`None`).
pub fn retryable(outcome: &Result<(), ExportError>) -> Option<bool> {
    outcome.as_ref().err().map(ExportError::is_retryable)
}
