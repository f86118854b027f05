//! Turning sqlx errors into [`StoreError`]s, by what the caller can do about them.

use flags_store::StoreError;

/// Maps a database error: anything that means "the database cannot be reached or cannot serve
/// right now" is [`StoreError::Unavailable`] (retry later, serve stale data); the rest is
/// [`StoreError::Internal`].
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    if is_unavailable(&e) {
        StoreError::unavailable(e)
    } else {
        StoreError::internal(e)
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exceptions; 53: insufficient resources (too many
            // connections, disk full); 57P: the server is shutting down or restarting;
            // 40001/40P01: serialization failure and deadlock, which a retry resolves.
            // Class 28 (the server refused the login) and 3D000 (the database does not
            // exist) only come while connecting: no session was opened, so nothing can be
            // served until an operator fixes the server or the URL, as for a server that is
            // down.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code.starts_with("28")
                || code == "3D000"
                || code == "40001"
                || code == "40P01"
        }),
        // The migrations a lazy store runs on each new connection, which fail as the
        // connection under them does.
        sqlx::Error::Migrate(e) => match e.as_ref() {
            sqlx::migrate::MigrateError::Execute(e) => is_unavailable(e),
            _ => false,
        },
        _ => false,
    }
}

/// Maps a migration failure.
pub(crate) fn migrate(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => db(e),
        other => StoreError::internal(other),
    }
}

/// A value read from the database that breaks the schema's promises.
pub(crate) fn corrupt(what: String) -> StoreError {
    StoreError::internal(what)
}

/// Reads a non-negative bigint as u64.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative {what} {value} in the database")))
}
