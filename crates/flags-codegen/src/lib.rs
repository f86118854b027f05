//! `flags-codegen`: typed feature flags from protobuf declarations, for build scripts.
//!
//! Teams declare flags as fields of protobuf messages: a message marked with
//! `(flags.feature)` is a feature, and each of its fields marked with `(flags.flag)` is a flag
//! whose type is the field's type (`bool`, `string`, `int64`, `int32`, `double`, `float`), with
//! a compiled default and an optional layer (the context kind it varies by). See
//! `flags/options.proto` ([`OPTIONS_PROTO`]), which every `.proto` file compiled here can
//! import without having a copy.
//!
//! [`Builder`] turns such files into a typed Rust client, from a build script: for each feature
//! a type `{Message}Flags<S>` with one method per flag. A global flag's method takes no
//! argument; a flag with a layer takes the entity's key. Each method returns the flag's value,
//! or its compiled default on any failure, through a [`flags_sdk::typed::FlagSource`]-like
//! runtime (by default `flags_sdk::typed`, whose `Client` evaluates in-process).
//!
//! The flag key of field `field` of message `Message` is `{message}.{field}`, the message name
//! in snake case (`CheckoutFlow.express_enabled` is `checkout_flow.express_enabled`): always a
//! valid LaunchDarkly flag key. Two features of one name are refused, since their keys would
//! collide.
//!
//! ```no_run
//! // In build.rs's `main`:
//! if let Err(err) = flags_codegen::Builder::new()
//!     .include("proto")
//!     .compile(&["proto/shop/flags.proto"])
//! {
//!     panic!("{err}");
//! }
//! ```
//!
//! and in the crate, `include!(concat!(env!("OUT_DIR"), "/flags_typed.rs"));` inside a module
//! of its own.
//!
//! The same compiler also writes prost messages and tonic stubs ([`write_grpc`]); flagd's own
//! `cargo xtask codegen` writes `flags-proto` with it. `.proto` files are compiled by protox, in
//! Rust: no `protoc` is downloaded, installed or run. This crate is for build time only; what
//! the generated code needs at run time lives in the runtime crate.
//!
//! [`flags_sdk::typed::FlagSource`]: https://docs.rs/flags-sdk/latest/flags_sdk/typed/trait.FlagSource.html

#![warn(missing_docs)]

// The README's examples run as doctests too, so they cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod compile;
mod grpc;
mod typed;

use std::path::{Path, PathBuf};

pub use compile::{Compiled, compile};
// The declarations are read by flags-descriptor, which flagd also reads descriptor sets with at
// run time, so generated clients and the server agree on every key and default.
pub use flags_descriptor::{DefaultValue, Feature, Flag, MAX_KEY_LEN, Problem, flag_key};
pub use grpc::write_grpc;
pub use typed::{DEFAULT_RUNTIME, render};

/// `flags/options.proto`: the options that declare features and flags.
pub const OPTIONS_PROTO: &str = include_str!("../proto/flags/options.proto");

/// The name `.proto` files import [`OPTIONS_PROTO`] by.
pub const OPTIONS_PROTO_NAME: &str = "flags/options.proto";

/// The file [`Builder::compile`] writes into `OUT_DIR`.
pub const OUT_FILE: &str = "flags_typed.rs";

/// Why code could not be generated, by what the caller does about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `.proto` files do not compile (syntax, an unresolved import or type): fix them.
    #[error("the .proto files do not compile: {0}")]
    Compile(#[from] Box<protox::Error>),
    /// The files compile, but declare flags wrongly: fix the declarations named.
    #[error("{}", Problem::summary(.0))]
    Declaration(Vec<Problem>),
    /// prost or tonic could not generate or write the messages and stubs.
    #[error("cannot generate messages and stubs: {0}")]
    Generate(#[source] std::io::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// `OUT_DIR` is not set: [`Builder::compile`] runs in a build script, where cargo sets it.
    #[error("OUT_DIR is not set: run this from a build script, or use Builder::generate")]
    NoOutDir,
}

/// The features declared in `files` (names as imports give them) of `pool`, in file order
/// and then message order (nested messages after their parent), with every problem found in
/// their declarations.
pub fn features(
    pool: &prost_reflect::DescriptorPool,
    files: &[String],
) -> Result<Vec<Feature>, Error> {
    flags_descriptor::features(pool, files).map_err(|error| match error {
        flags_descriptor::Error::Declaration(problems) => Error::Declaration(problems),
        // Reading a pool decodes nothing; any other error is still a declaration's.
        other => Error::Declaration(vec![Problem {
            at: files.join(", "),
            message: other.to_string(),
        }]),
    })
}

/// Generates the typed client of a set of `.proto` files.
#[derive(Debug, Clone)]
pub struct Builder {
    includes: Vec<PathBuf>,
    runtime: String,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// A builder using the runtime at [`DEFAULT_RUNTIME`] and, unless include directories are
    /// added, the current directory as the only one.
    pub fn new() -> Builder {
        Builder {
            includes: Vec::new(),
            runtime: DEFAULT_RUNTIME.to_owned(),
        }
    }

    /// Adds a directory that files and imports are looked up under.
    pub fn include(mut self, dir: impl AsRef<Path>) -> Builder {
        self.includes.push(dir.as_ref().to_owned());
        self
    }

    /// The module the generated code takes `FlagSource` and `FlagSpec` from, as a Rust path
    /// (`::flags_sdk::typed` by default).
    pub fn runtime(mut self, path: &str) -> Builder {
        path.clone_into(&mut self.runtime);
        self
    }

    /// The typed client of the features declared in `files` (not in what they import), as
    /// Rust source.
    pub fn generate(&self, files: &[impl AsRef<Path>]) -> Result<String, Error> {
        Ok(self.generate_with_paths(files)?.0)
    }

    /// Writes the typed client of `files` into `$OUT_DIR/flags_typed.rs` ([`OUT_FILE`]) and
    /// tells cargo to run the build script again when any file read changes. Returns the path
    /// written.
    pub fn compile(&self, files: &[impl AsRef<Path>]) -> Result<PathBuf, Error> {
        let out_dir = std::env::var_os("OUT_DIR").ok_or(Error::NoOutDir)?;
        let (code, paths) = self.generate_with_paths(files)?;
        for path in &paths {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        let out = Path::new(&out_dir).join(OUT_FILE);
        write_if_changed(&out, code.as_bytes())?;
        Ok(out)
    }

    fn generate_with_paths(
        &self,
        files: &[impl AsRef<Path>],
    ) -> Result<(String, Vec<PathBuf>), Error> {
        let includes = if self.includes.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            self.includes.clone()
        };
        let compiled = compile(files, &includes)?;
        let features = features(&compiled.pool(), compiled.files())?;
        let code = render(&features, compiled.files(), &self.runtime)?;
        Ok((code, compiled.paths().to_vec()))
    }
}

/// Writes `contents` to `path` unless it holds them already, so that an unchanged file keeps
/// its modification time and nothing that depends on it is rebuilt.
pub fn write_if_changed(path: &Path, contents: &[u8]) -> Result<(), Error> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    std::fs::write(path, contents).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}
