//! `flagd validate`: every problem of a set of flag files, as `serve` would see them merged.

use std::path::PathBuf;

use crate::engine;
use crate::source::versions::Versions;
use flags_wire::file::{self, FileContents, Problem, Severity};

/// Every problem of merged raw flag-file data, as `flagd validate` and a reload see it.
pub use crate::engine::check;

/// What validation found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Number of files checked.
    pub files: usize,
    /// Flags found (including `flagValues`).
    pub flags: usize,
    /// Segments found.
    pub segments: usize,
    /// Every problem, errors and warnings, in file order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether nothing at all was found wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Number of problems that would stop `serve` from loading the files.
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    /// The closing line: `OK: ...` or the problem count.
    pub fn summary(&self) -> String {
        let files = plural(self.files, "file");
        if self.is_ok() {
            format!(
                "OK: {files}, {}, {}",
                plural(self.flags, "flag"),
                plural(self.segments, "segment")
            )
        } else {
            let errors = self.errors();
            let warnings = self.problems.len() - errors;
            format!(
                "{} ({}, {}) in {files}",
                plural(self.problems.len(), "problem"),
                plural(errors, "error"),
                plural(warnings, "warning")
            )
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Reads, merges and checks `paths`: file syntax, document shape, duplicates across files, the
/// flag and segment model, references between items, and finally the engine's own compile step.
pub fn validate(paths: &[PathBuf]) -> Report {
    let files: Vec<FileContents> = paths.iter().map(|p| FileContents::read(p)).collect();
    validate_contents(&files)
}

/// As [`validate`], on files already read: for a caller that has the bytes but no files (the
/// fuzz target over flag files, say).
pub fn validate_contents(files: &[FileContents]) -> Report {
    let (raw, mut problems) = file::merge_files(files);
    // Fields the model drops first: a misspelt one is often why the checks below complain.
    problems.extend(engine::unknown_fields(&raw));
    problems.extend(check(&raw));
    let (flags, segments) = (raw.flags.len(), raw.segments.len());
    if !problems.iter().any(|p| p.severity == Severity::Error) {
        let (versions, changes) = Versions::new().assign(&raw);
        let served = |kind, key: &str| versions.served(kind, key);
        if let Err(e) = engine::build(raw, served, None, 1, &changes) {
            problems.push(Problem::error(None, "", e.to_string()));
        }
    }
    Report {
        files: files.len(),
        flags,
        segments,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> FileContents {
        FileContents {
            path: PathBuf::from(name),
            bytes: Ok(text.as_bytes().to_vec()),
        }
    }

    #[test]
    fn files_already_read_are_validated_as_files_on_disk_are() {
        let report = validate_contents(&[
            file("a.yaml", "flagValues:\n  dark-mode: true\n"),
            file("b.json", r#"{"segments": {"beta": {"included": ["u"]}}}"#),
        ]);
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.summary(), "OK: 2 files, 1 flag, 1 segment");

        let report = validate_contents(&[
            file("a.yaml", "flagValues:\n  dark-mode: true\n"),
            file("b.json", r#"{"flagValues": {"dark-mode": false}}"#),
        ]);
        assert_eq!(report.errors(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0]
                .to_string()
                .contains("duplicate flag key \"dark-mode\""),
            "{}",
            report.problems[0]
        );
    }
}
