//! Opening a store from its URL: the one place that knows which URL schemes flagd can serve
//! from, so an unsupported one is refused at start with a message that says what is supported.

use std::sync::Arc;

use flags_store::{AdminStore, StoreError};
use flags_store_postgres::{PostgresConfig, PostgresStore, redact_url};

/// The backends flagd can serve from, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL: `postgres://` or `postgresql://`.
    Postgres,
}

/// The schemes accepted, as an error message lists them.
const SUPPORTED: &str = "postgres:// or postgresql://";

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The URL has no `scheme://`.
    #[error("database URL {url:?} has no scheme; flagd serves from {SUPPORTED} URLs")]
    NoScheme {
        /// The URL, password hidden.
        url: String,
    },
    /// The URL's scheme names no backend flagd has.
    #[error(
        "unsupported database URL scheme {scheme:?} in {url}; flagd serves from {SUPPORTED} URLs"
    )]
    UnknownScheme {
        /// The scheme as written.
        scheme: String,
        /// The URL, password hidden.
        url: String,
    },
    /// The backend refused the URL or could not connect.
    #[error("{0}")]
    Open(String),
}

impl Backend {
    /// The database's name in OpenTelemetry's vocabulary (`db.system.name`).
    pub fn system_name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgresql",
        }
    }

    /// The backend a URL names.
    pub fn of(url: &str) -> Result<Backend, BackendError> {
        let Some((scheme, _)) = url.split_once("://") else {
            return Err(BackendError::NoScheme {
                url: redact_url(url),
            });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(BackendError::UnknownScheme {
                scheme: scheme.to_owned(),
                url: redact_url(url),
            }),
        }
    }
}

/// The store at `url` for serving: nothing is connected here, so the server starts while the
/// database is down; the store connects (and migrates its schema) on first use, and root
/// mode's sync loop keeps trying with backoff until it answers.
pub fn open_lazy(url: &str) -> Result<Arc<dyn AdminStore>, BackendError> {
    match Backend::of(url)? {
        Backend::Postgres => {
            let store = PostgresStore::connect_lazy_migrated(&PostgresConfig::new(url))
                .map_err(|e| BackendError::Open(e.to_string()))?;
            Ok(Arc::new(store))
        }
    }
}

/// The store at `url`, connected now, with its schema migrations applied: for the one-shot
/// commands (`migrate`, `import`, `export`), which should fail at once when it is unreachable.
pub async fn open(url: &str) -> Result<Arc<dyn AdminStore>, BackendError> {
    match Backend::of(url)? {
        Backend::Postgres => {
            let store = match PostgresStore::connect(url).await {
                Ok(store) => store,
                Err(e) => {
                    let reason = explain_unreachable(url, &e).await;
                    return Err(BackendError::Open(match reason {
                        Some(reason) => format!("cannot reach the database: {reason}"),
                        None => e.to_string(),
                    }));
                }
            };
            store
                .migrate()
                .await
                .map_err(|e| BackendError::Open(format!("migrations failed: {e}")))?;
            Ok(Arc::new(store))
        }
    }
}

/// Why the database at `url` cannot be reached, when `error` says it is unavailable: the
/// store's own error may only say that waiting for a connection timed out, where the operator
/// needs `connection refused at HOST:PORT`. `None` when the error is of another kind or the
/// database answers again.
pub async fn explain_unreachable(url: &str, error: &StoreError) -> Option<String> {
    if !matches!(error, StoreError::Unavailable { .. }) {
        return None;
    }
    match Backend::of(url).ok()? {
        Backend::Postgres => flags_store_postgres::explain_unreachable(url).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised_or_refused_by_name() {
        assert_eq!(
            Backend::of("postgres://db/flags").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of("PostgreSQL://db/flags").unwrap(),
            Backend::Postgres
        );
        let err = Backend::of("http://user:s3cret@foo/x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported database URL scheme \"http\" in http://user:***@foo/x; flagd serves \
             from postgres:// or postgresql:// URLs"
        );
        let err = Backend::of("db.internal:5432").unwrap_err();
        assert!(matches!(err, BackendError::NoScheme { .. }), "{err}");
    }

    #[test]
    fn serving_from_an_unknown_scheme_fails_before_anything_is_opened() {
        let err = open_lazy("redis://127.0.0.1:6379").err().unwrap();
        assert!(
            err.to_string()
                .starts_with("unsupported database URL scheme \"redis\""),
            "{err}"
        );
    }
}
