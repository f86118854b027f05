//! Reading declarations from encoded descriptor sets, as flagd loads them: compiled here with
//! protox from flagd's own `proto/flags/options.proto`, as a user's tools would compile them.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use flags_descriptor::{DefaultValue, Error, decode};

const SHOP: &str = r#"
syntax = "proto3";
package shop;
import "flags/options.proto";

message Checkout {
  option (flags.feature) = { display_name: "Checkout" owner: "payments-team" };

  int64 max_items = 1 [(flags.flag) = {
    description: "Most items in one order"
    default: { int64_value: { value: 50 } }
    supported_values: { int64_values: [10, 50, 100] }
  }];
  bool new_flow = 2 [(flags.flag) = { default: { bool_value: { value: true } } layer: "user" }];
  float ratio = 3 [(flags.flag) = { default: { float_value: { value: 0.25 } } }];
  string plain = 4;
}
"#;

/// The encoded descriptor set of `source` (as `shop/flags.proto`), with its imports when
/// `imports` says so.
fn descriptor_set(source: &str, imports: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop/flags.proto");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, source).unwrap();
    let includes = [dir.path().to_path_buf(), proto_dir()];
    let mut compiler = protox::Compiler::new(includes).unwrap();
    compiler.include_imports(imports);
    compiler.open_file("shop/flags.proto").unwrap();
    compiler.encode_file_descriptor_set()
}

/// flagd's protos, at the root of the repository.
fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

#[test]
fn a_descriptor_set_gives_its_features_and_flags() {
    let features = decode(&descriptor_set(SHOP, true)).unwrap();
    assert_eq!(features.len(), 1);
    let checkout = &features[0];
    assert_eq!(
        (checkout.message.as_str(), checkout.name.as_str()),
        ("shop.Checkout", "checkout")
    );
    assert_eq!(checkout.message_name(), "Checkout");
    assert_eq!(checkout.owner, "payments-team");
    assert_eq!(checkout.file, "shop/flags.proto");
    let flags: Vec<_> = checkout
        .flags
        .iter()
        .map(|flag| (flag.key.as_str(), &flag.default, flag.layer.as_deref()))
        .collect();
    assert_eq!(
        flags,
        [
            ("checkout.max_items", &DefaultValue::Int64(50), None),
            ("checkout.new_flow", &DefaultValue::Bool(true), Some("user")),
            ("checkout.ratio", &DefaultValue::Float(0.25), None),
        ]
    );
    let max_items = &checkout.flags[0];
    assert_eq!(max_items.description, "Most items in one order");
    assert_eq!(
        max_items.supported_values,
        [10, 50, 100].map(DefaultValue::Int64)
    );
}

#[test]
fn what_is_not_a_usable_set_is_refused() {
    assert!(matches!(
        decode(b"\xff\xff not protobuf"),
        Err(Error::Decode(_))
    ));
    // Without its imports, the set names files it does not hold.
    let error = decode(&descriptor_set(SHOP, false)).unwrap_err();
    assert!(matches!(error, Error::Decode(_)), "{error}");
}

#[test]
fn a_set_without_declarations_declares_nothing() {
    let plain = "syntax = \"proto3\";\npackage shop;\nmessage Plain { bool on = 1; }\n";
    assert_eq!(decode(&descriptor_set(plain, true)).unwrap(), []);
    assert_eq!(decode(&[]).unwrap(), []);
}

#[test]
fn wrong_declarations_are_refused_naming_each() {
    let wrong = SHOP.replace("layer: \"user\"", "layer: \"multi\"");
    let Err(Error::Declaration(problems)) = decode(&descriptor_set(&wrong, true)) else {
        panic!("the layer is refused");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].at, "shop/flags.proto: shop.Checkout.new_flow");
    assert!(
        problems[0].message.contains("is not a context kind"),
        "{problems:?}"
    );
}
