//! Messages and tonic stubs, written by prost and tonic's generators.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::compile::Compiled;

/// Writes the Rust for every message and service of `compiled` into `out_dir`, one file per
/// protobuf package (`flags.v1.rs`), with tonic client and server stubs that take any channel
/// (no transport of tonic's own). Google's well-known types map to `prost_types` and get no
/// file. Returns the files written, in name order.
pub fn write_grpc(compiled: &mut Compiled, out_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let fds = compiled.file_descriptor_set();
    // prost names each file after its package, `_` for none.
    let packages: BTreeSet<String> = fds
        .file
        .iter()
        .map(|file| file.package().to_owned())
        .filter(|package| package != "google.protobuf")
        .collect();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_fds(fds)
        .map_err(Error::Generate)?;
    Ok(packages
        .into_iter()
        .map(|package| {
            let name = if package.is_empty() {
                "_".to_owned()
            } else {
                package
            };
            out_dir.join(format!("{name}.rs"))
        })
        .filter(|path| path.is_file())
        .collect())
}
