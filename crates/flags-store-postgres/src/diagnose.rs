//! Saying why the database cannot be reached. The pool retries a refused connection until its
//! acquire timeout and then reports only that it timed out; [`explain_unreachable`] opens one
//! connection of its own to find out what actually happens at the address the URL names.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// How long the one connection gets.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a connection to `url` fails now, in words an operator can act on (`connection refused
/// at 127.0.0.1:5432`); `None` when one opens (the database answers again) or the URL does
/// not parse (which opening the store has already said).
pub async fn explain_unreachable(url: &str) -> Option<String> {
    let options: PgConnectOptions = url.parse().ok()?;
    let at = address(&options);
    let attempt = tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(&options)).await;
    match attempt {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            None
        }
        Ok(Err(sqlx::Error::Io(e))) => Some(match e.kind() {
            std::io::ErrorKind::ConnectionRefused => format!("connection refused at {at}"),
            std::io::ErrorKind::NotFound => format!("no server socket at {at}"),
            _ => format!("cannot connect to {at}: {e}"),
        }),
        Ok(Err(sqlx::Error::Database(e))) => {
            Some(format!("the server at {at} says: {}", e.message()))
        }
        Ok(Err(e)) => Some(format!("cannot connect to {at}: {e}")),
        Err(_) => Some(format!(
            "no answer from {at} within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// Where `options` connect: `HOST:PORT`, or the socket file for a Unix socket directory.
fn address(options: &PgConnectOptions) -> String {
    let host = options.get_host();
    let port = options.get_port();
    if host.starts_with('/') {
        format!("{host}/.s.PGSQL.{port}")
    } else if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_called_refused_with_its_address() {
        // Bound and dropped: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let explained = explain_unreachable(&format!("postgres://flagd@127.0.0.1:{port}/db")).await;
        assert_eq!(
            explained.as_deref(),
            Some(format!("connection refused at 127.0.0.1:{port}").as_str())
        );
    }

    #[test]
    fn addresses_read_as_written() {
        let at = |url: &str| address(&url.parse().unwrap());
        assert_eq!(at("postgres://u@db.internal:6543/x"), "db.internal:6543");
        assert_eq!(at("postgres://u@[::1]:5432/x"), "[::1]:5432");
        assert_eq!(
            at("postgres://u@%2Fvar%2Frun%2Fpostgresql/x"),
            "/var/run/postgresql/.s.PGSQL.5432"
        );
    }
}
