//! Problems found in flag data: one type for every check, whoever runs it (`flagd validate`,
//! the admin API, a reload), so the same problem reads the same everywhere.

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// The data would load and serve, but something is almost certainly a mistake (an index out
    /// of range, a reference to a missing flag or segment, a regular expression that never
    /// matches).
    Warning,
    /// The data cannot be loaded or stored.
    Error,
}

/// One thing wrong with flag data, located by file (when it came from one) and field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// The file it is in (None for data that did not come from a file, or for the merged data
    /// as a whole).
    pub file: Option<PathBuf>,
    /// The field path inside the document, e.g. `flags.checkout.rules[2].clauses[0].values`
    /// (empty for the document itself).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// An error: the data cannot be used.
    pub fn error(
        file: Option<&Path>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem::new(Severity::Error, file, path, message)
    }

    /// A warning: the data works, but probably not as meant.
    pub fn warning(
        file: Option<&Path>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem::new(Severity::Warning, file, path, message)
    }

    /// A problem of the given severity.
    pub fn new(
        severity: Severity,
        file: Option<&Path>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            severity,
            file: file.map(Path::to_path_buf),
            path: path.into(),
            message: message.into(),
        }
    }

    /// Whether it is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
