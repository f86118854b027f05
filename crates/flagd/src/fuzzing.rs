//! What the fuzz targets in the repository's `fuzz/` directory reach of flagd's private parts.
//!
//! It exists only for them: hidden from the documentation, outside any stability promise, and
//! used by nothing else. Each function runs one of flagd's readers on arbitrary bytes and says
//! when it disagrees with the reference it is meant to match; panics are left to propagate, as
//! the fuzzer looks for them too.

/// Reads `bytes` as the body of an evaluation request, as the evaluation routes read it (the
/// fast scanner, and `serde_json` for whatever the scanner declines), and as `serde_json` alone
/// reads it; then makes the context of each of the native and OFREP routes from it, and drops
/// it as a request does, so that the next call's strings come from its buffers.
///
/// The error says how the two readings differ: both must give the same body, or the same
/// error. A body that is invalid, or a context that is refused, is not an error here.
pub fn read_evaluation_body(bytes: &[u8]) -> Result<(), String> {
    crate::http::read_evaluation_body(bytes)
}
