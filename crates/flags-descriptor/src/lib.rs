//! `flags-descriptor`: the typed feature flags that compiled protobuf descriptors declare.
//!
//! Teams declare flags as fields of protobuf messages with flagd's options
//! (`flags/options.proto`): a message marked with `(flags.feature)` is a feature, and each of its
//! fields marked with `(flags.flag)` is a flag whose type is the field's type (`bool`, `string`,
//! `int64`, `int32`, `double`, `float`), with a compiled default, an optional layer (the context
//! kind it varies by) and optional supported values.
//!
//! This crate reads those declarations into a checked model ([`Feature`], [`Flag`],
//! [`DefaultValue`]), from a [`DescriptorPool`] ([`features`]) or from the bytes of a serialized
//! `google.protobuf.FileDescriptorSet` ([`decode`]), which is what `protoc --include_imports
//! --descriptor_set_out` and protox write. It is the one reading of the declarations:
//! `flags-codegen` generates typed clients from it at build time, and flagd loads descriptor
//! sets with it at run time, so both agree on every flag's key, type and default. The key of
//! field `field` of message `Message` is `{message}.{field}`, the message name in snake case
//! ([`flag_key`]).
//!
//! It compiles no `.proto` files and generates no code; its only protobuf dependency is
//! `prost-reflect`.
//!
//! ```
//! # fn main() -> Result<(), flags_descriptor::Error> {
//! // A set without flagd's options declares nothing; one with them is read the same way.
//! let features = flags_descriptor::decode(&[])?;
//! assert!(features.is_empty());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

// The README's example runs as a doctest too, so it cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod model;

use std::fmt;

pub use model::{DefaultValue, Feature, Flag, MAX_KEY_LEN, features, flag_key};
pub use prost_reflect::DescriptorPool;

/// Why declarations could not be read, by what the caller does about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not an encoded `FileDescriptorSet`, or its files do not resolve (an
    /// import is missing: write the set with its imports, `protoc --include_imports`).
    #[error("not a usable descriptor set: {0}")]
    Decode(#[source] prost_reflect::DescriptorError),
    /// The descriptors declare flags wrongly: fix the declarations named.
    #[error("{}", Problem::summary(.0))]
    Declaration(Vec<Problem>),
}

/// One thing wrong with a flag declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: the file and the message or field.
    pub at: String,
    /// What is wrong, and what to do about it.
    pub message: String,
}

impl Problem {
    /// `problems` as one text: a count, then one problem per line.
    pub fn summary(problems: &[Problem]) -> String {
        let mut text = format!("the flag declarations have {} problem(s):", problems.len());
        for problem in problems {
            text.push_str(&format!("\n  {problem}"));
        }
        text
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// The features declared anywhere in the encoded `FileDescriptorSet` `bytes` (every file of
/// the set, imports included), in file order, checked as [`features`] checks them.
pub fn decode(bytes: &[u8]) -> Result<Vec<Feature>, Error> {
    let pool = DescriptorPool::decode(bytes).map_err(Error::Decode)?;
    declared(&pool)
}

/// The features declared anywhere in `pool`, in file order.
pub fn declared(pool: &DescriptorPool) -> Result<Vec<Feature>, Error> {
    let files: Vec<String> = pool.files().map(|file| file.name().to_owned()).collect();
    features(pool, &files)
}
