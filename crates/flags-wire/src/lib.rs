//! `flags-wire`: the LaunchDarkly data formats flagd speaks, as a library that servers use to
//! render and clients use to parse.
//!
//! - [`stream`]: the server-side SDK formats: the `latest-all` body, and the stream's `put`,
//!   `patch` and `delete` events.
//! - [`file`](mod@file): LaunchDarkly's flag-file format
//!   (`{"flags":{},"segments":{},"flagValues":{}}`, JSON or YAML), merged from several files with
//!   every problem located by file and field.
//!
//! There is no transport here (no HTTP, no SSE framing, no sockets): bytes in, model out, and
//! back. The model is `flags-core`'s.
//!
//! ```
//! use std::path::Path;
//! use flags_wire::file::{FileContents, merge_files, to_model};
//!
//! let yaml = "flagValues:\n  dark-mode: true\n";
//! let files = [FileContents {
//!     path: Path::new("flags.yaml").to_path_buf(),
//!     bytes: Ok(yaml.as_bytes().to_vec()),
//! }];
//! let (raw, problems) = merge_files(&files);
//! assert!(problems.is_empty());
//! let (data, problems) = to_model(&raw);
//! assert!(problems.is_empty());
//! assert_eq!(data.flags["dark-mode"].variations, [serde_json::json!(true)]);
//! ```

#![warn(missing_docs)]

// The README's example runs as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod file;
pub mod stream;
