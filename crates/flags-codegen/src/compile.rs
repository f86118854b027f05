//! Compiling `.proto` files with protox: no `protoc`, and `flags/options.proto` always at hand.

use std::path::{Path, PathBuf};

use prost_reflect::DescriptorPool;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

use crate::{Error, OPTIONS_PROTO, OPTIONS_PROTO_NAME};

/// Compiled `.proto` files: the files asked for and everything they import.
pub struct Compiled {
    compiler: protox::Compiler,
    /// The names of the files asked for, as imports name them (`example/flags.proto`).
    files: Vec<String>,
    /// Where each file that came from disk was read, for a build script's `rerun-if-changed`.
    paths: Vec<PathBuf>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("files", &self.files)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// Compiles `files`, each found under one of `includes` (a path under an include directory,
/// or a name relative to one, as an import names it). `flags/options.proto` and Google's
/// well-known types can be imported without being under any of them.
pub fn compile(
    files: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<Compiled, Error> {
    let mut resolver = ChainFileResolver::new();
    for include in includes {
        resolver.add(IncludeFileResolver::new(include.as_ref().to_owned()));
    }
    // After the includes, so that a copy of the options under an include directory (as in
    // flagd's own repository) is the one read, as protoc would read it.
    resolver.add(OptionsResolver);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files).map_err(Box::new)?;
    let files = compiler
        .files()
        .filter(|file| !file.is_import())
        .map(|file| file.name().to_owned())
        .collect();
    let paths = compiler
        .files()
        .filter_map(|file| file.path().map(Path::to_path_buf))
        .collect();
    Ok(Compiled {
        compiler,
        files,
        paths,
    })
}

impl Compiled {
    /// Every compiled file, with its imports, as prost's descriptor types (which keep no custom
    /// options), with source info: what prost and tonic generate code from.
    pub fn file_descriptor_set(&mut self) -> prost_types::FileDescriptorSet {
        self.compiler
            .include_imports(true)
            .include_source_info(true)
            .file_descriptor_set()
    }

    /// Every compiled file, with its imports, encoded as a `FileDescriptorSet` that keeps the
    /// custom options and drops source info: what a gRPC reflection service serves, and what
    /// flagd can load to know the declared flags.
    pub fn encoded_file_descriptor_set(&mut self) -> Vec<u8> {
        self.compiler
            .include_imports(true)
            .include_source_info(false)
            .encode_file_descriptor_set()
    }

    /// The descriptors, with custom options and source info, for reading the declarations.
    pub fn pool(&self) -> DescriptorPool {
        self.compiler.descriptor_pool()
    }

    /// The names of the files asked for, as imports name them.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Where the files read from disk are, imports included.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

/// Serves `flags/options.proto` from the copy built into this crate.
struct OptionsResolver;

impl FileResolver for OptionsResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == OPTIONS_PROTO_NAME {
            File::from_source(name, OPTIONS_PROTO)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}
