//! Flag files (`flags_wire::file`) as `flagd validate` reads them: the same bytes as a JSON
//! file and as a YAML file, then as two files without an extension (read as whichever they look
//! like) merged, each checked and built as `serve` would load it. Whatever the bytes, the answer
//! is a report of problems, never a panic.
//!
//! A JSON file is read item by item, each item on its own, so that a big file is never one tree
//! of values; what is not JSON as a whole must still be refused, with the error reading the
//! whole document gives.

#![no_main]

use std::path::{Path, PathBuf};

use flagd::validate::validate_contents;
use flags_wire::file::{FileContents, merge_files, parse_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = |name: &str| FileContents {
        path: PathBuf::from(name),
        bytes: Ok(data.to_vec()),
    };
    if let Err(error) = parse_document(Path::new("flags.json"), data) {
        let (_, problems) = merge_files(&[file("flags.json")]);
        assert!(
            problems.contains(&error),
            "the whole document is refused with {error}, but reading it item by item finds \
             {problems:?}"
        );
    }
    for name in ["flags.json", "flags.yaml"] {
        let report = validate_contents(&[file(name)]);
        let _ = report.summary();
    }
    // Every item of the second file repeats one of the first, which is an error for each.
    let report = validate_contents(&[file("a"), file("b")]);
    assert!(
        report.flags + report.segments == 0 || report.errors() > 0,
        "a file merged with itself has no duplicates: {:?}",
        report.problems
    );
});
