//! Flag files: the LaunchDarkly file-data-source format flagd reads (JSON or YAML, several
//! files merged), read again whenever their bytes change. A file with errors keeps the last
//! good data serving and reports the source `Interrupted` with every problem.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flags_wire::file::{FileContents, merge_files, to_model};

use super::{error, sleep_unless_closed};
use crate::inner::Inner;
use crate::status::{DataSourceErrorKind, DataSourceState};

pub(super) async fn run(paths: Vec<PathBuf>, interval: Duration, inner: Arc<Inner>) {
    let mut last: Option<Vec<Result<Vec<u8>, String>>> = None;
    loop {
        let files: Vec<FileContents> = {
            let paths = paths.clone();
            match tokio::task::spawn_blocking(move || {
                paths.iter().map(|p| FileContents::read(p)).collect()
            })
            .await
            {
                Ok(files) => files,
                Err(_) => return,
            }
        };
        let bytes: Vec<_> = files.iter().map(|f| f.bytes.clone()).collect();
        if last.as_ref() != Some(&bytes) {
            load(&files, &inner);
            last = Some(bytes);
        }
        if !sleep_unless_closed(&inner, interval).await {
            return;
        }
    }
}

fn load(files: &[FileContents], inner: &Inner) {
    let (raw, mut problems) = merge_files(files);
    let (data, more) = to_model(&raw);
    problems.extend(more);
    problems.retain(flags_core::Problem::is_error);
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!("flag files not loaded: {message}");
        inner.report(
            DataSourceState::Interrupted,
            Some(error(DataSourceErrorKind::FileError, None, message)),
        );
        return;
    }
    if let Err(e) = inner.put(data) {
        inner.report(
            DataSourceState::Interrupted,
            Some(error(DataSourceErrorKind::FileError, None, e.to_string())),
        );
    }
}
