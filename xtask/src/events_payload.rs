//! The `/bulk` payloads `cargo xtask bench-events` posts, generated deterministically. One file
//! for every user: the xtask, and flags-bench's `bulk_parse` benchmark, which includes it by
//! path so that both read exactly the same bodies. Needs only `serde_json`.

use serde_json::{Map, Value, json};

/// Deterministic variety without a random-number generator: SplitMix64 of the index.
pub(crate) fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Flags the events name.
const FLAGS: u64 = 50;

/// One `/bulk` payload of `batch` events as LaunchDarkly's server-side SDKs send them: in every
/// fifty, forty feature events (their contexts as `contextKeys`, one in four of two kinds), nine
/// custom events (some with a metric value, some with data) and one summary of three flags with
/// four counters in all. `seed` varies the keys and dates.
pub(crate) fn payload(seed: usize, batch: usize) -> Value {
    let base_date: u64 = 1_767_225_600_000 + seed as u64 * 60_000;
    let events: Vec<Value> = (0..batch)
        .map(|i| {
            let n = (seed * batch + i) as u64;
            let r = mix(n);
            let date = base_date + i as u64;
            let user = format!("user-{}", r % 100_000);
            let mut keys = Map::new();
            keys.insert("user".to_owned(), Value::from(user));
            if r.is_multiple_of(4) {
                keys.insert(
                    "organization".to_owned(),
                    Value::from(format!("org-{}", (r >> 20) % 500)),
                );
            }
            match i % 50 {
                49 => summary(r, date),
                40..=48 => {
                    let key = ["checkout-completed", "signup", "page-view"][(r % 3) as usize];
                    let mut event = json!({
                        "kind": "custom",
                        "creationDate": date,
                        "key": key,
                        "contextKeys": keys,
                    });
                    if r.is_multiple_of(3) {
                        event["metricValue"] = json!((r % 10_000) as f64 / 100.0);
                    }
                    if r.is_multiple_of(5) {
                        event["data"] = json!({"plan": "pro", "items": r % 7});
                    }
                    event
                }
                _ => {
                    let flag = r % FLAGS;
                    let variation = (r >> 8) % 2;
                    let mut event = json!({
                        "kind": "feature",
                        "creationDate": date,
                        "key": format!("flag-{flag:03}"),
                        "version": 1 + flag % 9,
                        "variation": variation,
                        "value": variation == 1,
                        "default": false,
                        "contextKeys": keys,
                    });
                    event["reason"] = if r.is_multiple_of(3) {
                        json!({"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "beta-users"})
                    } else {
                        json!({"kind": "FALLTHROUGH"})
                    };
                    event
                }
            }
        })
        .collect();
    Value::Array(events)
}

/// A summary event of three distinct flags with four counters in all.
fn summary(r: u64, end: u64) -> Value {
    let counter = |variation: u64, value: Value, count: u64| json!({"variation": variation, "value": value, "version": 3, "count": count});
    json!({
        "kind": "summary",
        "startDate": end - 60_000,
        "endDate": end,
        "features": {
            format!("flag-{:03}", r % 16): {"default": false, "contextKinds": ["user"],
                "counters": [counter(0, json!(false), 1 + r % 90), counter(1, json!(true), 1 + r % 11)]},
            format!("flag-{:03}", 16 + (r >> 16) % 16): {"default": "control", "contextKinds": ["user", "organization"],
                "counters": [counter(2, json!("variant-b"), 1 + r % 40)]},
            format!("flag-{:03}", 32 + (r >> 32) % 16): {"default": 0, "contextKinds": ["user"],
                "counters": [counter(1, json!(25), 1 + r % 7)]},
        }
    })
}

/// The records a payload makes: one per feature and custom event, one per summary counter.
pub(crate) fn records_of(payload: &Value) -> u64 {
    let events = payload.as_array().map(Vec::as_slice).unwrap_or_default();
    events
        .iter()
        .map(|event| match event["kind"].as_str() {
            Some("feature" | "custom") => 1,
            Some("summary") => event["features"].as_object().map_or(0, |features| {
                features
                    .values()
                    .map(|f| f["counters"].as_array().map_or(0, Vec::len) as u64)
                    .sum()
            }),
            _ => 0,
        })
        .sum()
}
