//! The evaluation request body, as flagd's routes read it: the fast scanner
//! (`crates/flagd/src/http/scan.rs`) must read every body it accepts exactly as `serde_json`
//! does, and leave every other body, and every error, to `serde_json`. The contexts the native
//! and OFREP routes make of it must not panic either.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(difference) = flagd::fuzzing::read_evaluation_body(data) {
        panic!("{difference}");
    }
});
