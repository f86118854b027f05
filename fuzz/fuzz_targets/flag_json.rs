//! Flags and segments read from JSON (`flags_core`), compiled (`flags_eval`) and evaluated
//! against one fixed context: nothing may panic, and whatever is served is one of the flag's
//! variations.

#![no_main]

use std::sync::LazyLock;

use flags_core::{Context, Flag, FlagData, Segment};
use flags_eval::{CompiledData, Evaluator};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// The most flags evaluated per input: each evaluation may follow prerequisites and segments
/// through the whole data, and an input of many flags would otherwise be slow for no new path.
const MAX_EVALUATIONS: usize = 16;

/// A multi-kind context whose attributes have every type a clause operator looks at: strings,
/// numbers, booleans, arrays, dates (as text and as milliseconds), versions and nested objects.
static CONTEXT: LazyLock<Context> = LazyLock::new(|| {
    let context = json!({
        "kind": "multi",
        "user": {
            "key": "user-key",
            "name": "Alice",
            "email": "alice@example.com",
            "groups": ["beta", "staff", 7, true],
            "age": 42,
            "score": 3.5,
            "version": "2.7.1",
            "created": "2024-01-02T03:04:05Z",
            "createdMs": 1_700_000_000_000_u64,
            "address": {"city": "Berlin", "zip": "10115"},
            "_meta": {"privateAttributes": ["email"]}
        },
        "org": {"key": "org-key", "plan": "pro", "seats": 12}
    });
    match Context::from_json(&context) {
        Ok(context) => context,
        Err(e) => panic!("the fixed context is invalid: {e}"),
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The text as a whole environment, as one flag, and as one segment (with a flag that
    // matches it, so that it is evaluated).
    let mut flag_data = FlagData::from_json_str(text).unwrap_or_default();
    if let Ok(flag) = Flag::from_json_str(text) {
        let key = non_empty(&flag.key, "fuzz-flag");
        flag_data.flags.entry(key).or_insert(flag);
    }
    if let Ok(segment) = Segment::from_json_str(text) {
        let key = non_empty(&segment.key, "fuzz-segment");
        if let Ok(flag) = Flag::from_json_value(json!({
            "on": true,
            "variations": [false, true],
            "fallthrough": {"variation": 0},
            "rules": [{"id": "in", "variation": 1,
                       "clauses": [{"attribute": "key", "op": "segmentMatch", "values": [key]}]}]
        })) {
            flag_data.flags.entry(format!("in-{key}")).or_insert(flag);
        }
        flag_data.segments.entry(key).or_insert(segment);
    }

    let compiled = match CompiledData::compile(flag_data) {
        Ok(compiled) => compiled,
        Err(e) => panic!("compiling read flag data fails: {e}"),
    };
    let evaluator = Evaluator::new(&compiled);
    for flag in compiled.flags().take(MAX_EVALUATIONS) {
        let detail = evaluator.evaluate_flag(flag, &CONTEXT);
        if let Some(value) = detail.value {
            let served = detail
                .variation_index
                .and_then(|i| flag.variations().get(i));
            assert_eq!(
                served,
                Some(value),
                "{} serves a value that is not its variation {:?}",
                flag.key(),
                detail.variation_index
            );
        }
    }
});

fn non_empty(key: &str, instead: &str) -> String {
    if key.is_empty() { instead } else { key }.to_owned()
}
