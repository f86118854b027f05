//! Contexts read from JSON (`flags_core::Context`): every way in gives the same context or the
//! same error, none panics, and a context written out reads back as itself.

#![no_main]

use flags_core::Context;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // Straight from the bytes, member by member (what flagd's request readers use).
    let streamed = serde_json::from_slice::<Context>(data);
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        assert!(
            streamed.is_err(),
            "read from bytes that are not JSON: {streamed:?}"
        );
        return;
    };
    // From a `Value`, borrowed and moved.
    let read = Context::from_json(&value);
    assert_eq!(read, Context::from_value(value.clone()), "from_value");
    match (&streamed, &read) {
        (Ok(streamed), Ok(read)) => assert_eq!(streamed, read, "from bytes"),
        // serde_json adds where in the text the error was.
        (Err(streamed), Err(read)) => assert!(
            streamed.to_string().starts_with(&read.to_string()),
            "from bytes: {streamed} against {read}"
        ),
        _ => panic!("from bytes: {streamed:?} against {read:?}"),
    }
    let Ok(context) = read else {
        return;
    };

    let _ = context.fully_qualified_key();
    // Attributes are found by name whether the list is scanned or searched.
    for single in context.contexts() {
        for (name, value) in single.custom_attributes() {
            assert_eq!(single.custom_attribute(name), Some(value), "{name:?}");
        }
    }

    let written = match serde_json::to_value(&context) {
        Ok(written) => written,
        Err(e) => panic!("{context:?} cannot be written: {e}"),
    };
    // The legacy user format accepts an empty key, which no other context may have, so such a
    // user is written as a context that cannot be read.
    if context.key() == Some("") {
        return;
    }
    match Context::from_json(&written) {
        Ok(again) => assert_eq!(again, context, "written as {written}"),
        Err(e) => panic!("{context:?} is written as {written}, which does not read: {e}"),
    }

    // What a recycled request context goes through.
    context.into_strings(&mut drop);
});
