//! Descriptor sets for the tests: a feature of every kind of flag, compiled with protox against
//! the repository's `proto/flags/options.proto` into an encoded `FileDescriptorSet` with its
//! imports, as `protoc --include_imports --descriptor_set_out` writes one.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// `shop/flags.proto` declaring feature `checkout`: `checkout.express` (bool, layer `user`,
/// default `true`), `checkout.max_items` (int64, default `max_items`, supported 10, 50, 100),
/// `checkout.theme` (string, default `"light"`, supported `light`, `dark`) and
/// `checkout.ratio` (double, default 0.5).
pub fn shop(max_items: i64) -> String {
    format!(
        r#"
syntax = "proto3";
package shop;
import "flags/options.proto";

message Checkout {{
  option (flags.feature) = {{
    display_name: "Checkout" description: "Paying for a cart" owner: "payments-team"
  }};

  bool express = 1 [(flags.flag) = {{
    description: "One-click checkout"
    default: {{ bool_value: {{ value: true }} }}
    layer: "user"
  }}];
  int64 max_items = 2 [(flags.flag) = {{
    default: {{ int64_value: {{ value: {max_items} }} }}
    supported_values: {{ int64_values: [10, 50, 100, {max_items}] }}
  }}];
  string theme = 3 [(flags.flag) = {{
    default: {{ string_value: {{ value: "light" }} }}
    supported_values: {{ string_values: ["light", "dark"] }}
  }}];
  double ratio = 4 [(flags.flag) = {{ default: {{ double_value: {{ value: 0.5 }} }} }}];
}}
"#
    )
}

/// The encoded descriptor set of `source`, compiled as `shop/flags.proto`.
pub fn descriptor_set(source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop/flags.proto");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, source).unwrap();
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut compiler = protox::Compiler::new([dir.path().to_path_buf(), proto]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("shop/flags.proto").unwrap();
    compiler.encode_file_descriptor_set()
}

/// Writes `bytes` to `path` the way deployments replace files: a sibling, renamed over it.
pub fn replace(path: &Path, bytes: &[u8]) -> PathBuf {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    path.to_path_buf()
}
