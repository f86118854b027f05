//! The typed client generator: its output for a small feature (a snapshot), and every
//! declaration it refuses, with the message that says what to fix.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use expect_test::expect_file;
use flags_codegen::{Builder, Error};

/// The client generated for `tests/data/notifications.proto`; update with
/// `UPDATE_EXPECT=1 cargo test -p flags-codegen`.
#[test]
fn generated_client_snapshot() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let code = Builder::new()
        .include(&dir)
        .generate(&["notifications.proto"])
        .unwrap();
    expect_file!["data/notifications.rs.txt"].assert_eq(&code);
}

/// The runtime path can be another crate's.
#[test]
fn runtime_path_is_configurable() {
    let code = generate_with(
        Builder::new().runtime("::my_runtime::flags"),
        "message F { option (flags.feature) = {}; bool on = 1 [(flags.flag) = {}]; }",
    )
    .unwrap();
    assert!(
        code.contains("impl<S: ::my_runtime::flags::FlagSource> FFlags<S>"),
        "{code}"
    );
    assert!(!code.contains("flags_sdk"), "{code}");
}

/// A file without features gives a client with nothing in it, not an error.
#[test]
fn a_file_without_features_gives_no_types() {
    let code = generate("message Plain { bool on = 1; }").unwrap();
    assert!(!code.contains("pub struct"), "{code}");
}

#[test]
fn wrong_declarations_are_refused_with_what_to_fix() {
    // Each case: the body of a file (after the imports) and a part of the one problem.
    let cases = [
        (
            "message F { option (flags.feature) = {}; \
             bool on = 1 [(flags.flag) = { default: { string_value: { value: \"x\" } } }]; }",
            "example.F.on: the flag is a bool field, so its default is `bool_value`, not \
             `string_value`",
        ),
        (
            "message F { option (flags.feature) = {}; \
             int32 n = 1 [(flags.flag) = { default: { int64_value: { value: 1 } } }]; }",
            "so its default is `int32_value`, not `int64_value`",
        ),
        (
            "message F { option (flags.feature) = {}; repeated bool on = 1 [(flags.flag) = {}]; }",
            "example.F.on: a flag is one value: repeated and map fields cannot be flags",
        ),
        (
            "message F { option (flags.feature) = {}; bytes b = 1 [(flags.flag) = {}]; }",
            "example.F.b: a flag is a bool, string, int64, int32, double or float field, not bytes",
        ),
        (
            "message F { option (flags.feature) = {}; uint64 n = 1 [(flags.flag) = {}]; }",
            "not uint64",
        ),
        (
            "message F { option (flags.feature) = {}; bool on = 1 [(flags.flag) = { layer: \"a b\" }]; }",
            "layer \"a b\" is not a context kind",
        ),
        (
            "message F { option (flags.feature) = {}; bool on = 1 [(flags.flag) = { layer: \"multi\" }]; }",
            "layer \"multi\" is not a context kind",
        ),
        (
            "message F { option (flags.feature) = {}; string s = 1 [(flags.flag) = { \
             default: { string_value: { value: \"c\" } } \
             supported_values: { string_values: [\"a\", \"b\"] } }]; }",
            "example.F.s: the default \"c\" is not one of the supported values",
        ),
        (
            "message F { option (flags.feature) = {}; double d = 1 [(flags.flag) = { \
             default: { double_value: { value: inf } } }]; }",
            "the default is not a finite number",
        ),
        (
            "message Same { option (flags.feature) = {}; } \
             message Outer { message Same { option (flags.feature) = {}; } }",
            "example.Outer.Same: feature name `same` is also the name of example.Same",
        ),
        (
            "message F { option (flags.feature) = {}; bool new = 1 [(flags.flag) = {}]; \
             bool new_flag = 2 [(flags.flag) = {}]; }",
            "example.F.new_flag: two flags of the feature would both be the method `new_flag`",
        ),
    ];
    for (body, expected) in cases {
        match generate(body) {
            Err(Error::Declaration(problems)) => {
                assert_eq!(problems.len(), 1, "{body}: {problems:#?}");
                let shown = problems[0].to_string();
                assert!(
                    shown.contains(expected),
                    "{body}:\n{shown}\nlacks\n{expected}"
                );
            }
            other => panic!("{body}: expected a declaration problem, got {other:?}"),
        }
    }
}

#[test]
fn a_key_longer_than_flagd_stores_is_refused() {
    let field = "f".repeat(250);
    let body = format!(
        "message Feature {{ option (flags.feature) = {{}}; bool {field} = 1 [(flags.flag) = {{}}]; }}"
    );
    match generate(&body) {
        Err(Error::Declaration(problems)) => {
            assert!(
                problems[0].message.contains("longer than 256"),
                "{problems:#?}"
            );
        }
        other => panic!("expected a declaration problem, got {other:?}"),
    }
}

#[test]
fn a_file_that_does_not_compile_says_where() {
    match generate("message F { bool on = 1 [(flags.flag) = { nope: 1 }]; }") {
        Err(err @ Error::Compile(_)) => {
            let shown = err.to_string();
            assert!(shown.contains("option '(flags.flag)'"), "{shown}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

/// The typed client of one file, `example/f.proto`, holding `body` after the package and
/// the import of the options.
fn generate(body: &str) -> Result<String, Error> {
    generate_with(Builder::new(), body)
}

fn generate_with(builder: Builder, body: &str) -> Result<String, Error> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("example")).unwrap();
    std::fs::write(
        dir.path().join("example/f.proto"),
        format!(
            "syntax = \"proto3\";\npackage example;\nimport \"flags/options.proto\";\n{body}\n"
        ),
    )
    .unwrap();
    builder.include(dir.path()).generate(&["example/f.proto"])
}
