//! PostgreSQL for tests: the server a test binary uses, fresh databases on it, and throwaway
//! clusters that a test owns.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::guardian::{self, Guardian};

/// The variable that names the server to use, as a URL of a database to connect to first (the
/// tests' own databases are created from there).
pub(crate) const URL_VARIABLE: &str = "FLAGD_TEST_POSTGRES_URL";

/// The server tried when [`URL_VARIABLE`] is not set: a local one with trust authentication.
pub(crate) const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long a server that accepted a TCP connection may take to answer a query.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL server of this test binary: the one at `$FLAGD_TEST_POSTGRES_URL` (default
/// `postgres://postgres@127.0.0.1:5432/postgres`) when it answers, and otherwise a throwaway
/// [`PgCluster`], started on the first call and stopped when the binary exits. Every test of the
/// binary shares it; each makes its own databases with [`Postgres::create_database`].
///
/// Panics, saying what to install, when nothing answers and PostgreSQL's server programs are
/// not installed.
pub fn postgres() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(Postgres::find_or_start)
}

/// A PostgreSQL server that tests may create databases on.
pub struct Postgres {
    /// A database to connect to for creating and dropping others.
    url: String,
    /// The throwaway server, when no server answered. Never dropped: its guardian stops it.
    cluster: Option<PgCluster>,
}

impl Postgres {
    fn find_or_start() -> Postgres {
        guardian::named_or_throwaway(
            "PostgreSQL",
            URL_VARIABLE,
            DEFAULT_URL,
            answers,
            |url| Postgres { url, cluster: None },
            |why| {
                let cluster = PgCluster::start_new_because(why);
                Postgres {
                    url: cluster.url(),
                    cluster: Some(cluster),
                }
            },
            |postgres| postgres.url.clone(),
        )
    }

    /// The URL of the server's maintenance database (`postgres` on a throwaway server). Tests
    /// should not keep data there: [`Postgres::create_database`] gives them a database of
    /// their own.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is a throwaway server of this binary rather than the one the test command
    /// named.
    pub fn is_throwaway(&self) -> bool {
        self.cluster.is_some()
    }

    /// Creates a database with a name no other test, binary or run uses, and returns it; it is
    /// dropped, with any connections still open to it, when the returned value is dropped.
    /// Blocks while the database is created, which is fine in async tests too.
    pub fn create_database(&self) -> TestDatabase {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "flagd_t_{}_{}_{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = execute(&self.url, &format!("CREATE DATABASE {name}")) {
            panic!("cannot create database {name} at {}: {e}", self.url);
        }
        TestDatabase {
            url: with_database(&self.url, &name),
            admin_url: self.url.clone(),
            name,
        }
    }
}

/// A database made for one test by [`Postgres::create_database`], dropped on drop.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL that connects to this database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: a test that failed already says why, and a database left behind on a
        // shared server is harmless (its name is never used again).
        let _ = execute(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A PostgreSQL cluster of its own: `initdb` into a new directory, trust authentication, a free
/// loopback port, run as an unprivileged user when this process is root. Dropping it stops the
/// server and removes the directory, and so does the end of the test process, however it ends.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    /// The user the server runs as when it is not this process's own.
    user: Option<String>,
    port: u16,
    guardian: Option<Guardian>,
}

impl PgCluster {
    /// Creates and starts a new cluster. Panics, saying what to install, when PostgreSQL's
    /// server programs cannot be found.
    pub fn start_new() -> PgCluster {
        PgCluster::start_new_because("this test starts a PostgreSQL server of its own")
    }

    fn start_new_because(why: &str) -> PgCluster {
        let Some(bin) = server_programs() else {
            panic!(
                "{why}, and none can be started: PostgreSQL's server programs (initdb, pg_ctl, \
                 postgres) are neither on PATH nor under /usr/lib/postgresql/*/bin. Install \
                 them (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install \
                 postgresql-server`; macOS: `brew install postgresql`), or set \
                 {URL_VARIABLE} to a server that accepts connections with trust \
                 authentication. `cargo xtask ci` installs them when it can."
            );
        };
        let dir = guardian::scratch_dir("pg");
        let user = guardian::server_user(&dir);
        if user.is_some() {
            assert!(
                guardian::on_path("runuser").is_some(),
                "{why}, and this process is root, which PostgreSQL refuses to run as: install \
                 `runuser` (package util-linux) so the server can run as another user"
            );
        }
        let data = dir.join("data");
        let stop = guardian::command_as(
            user.as_deref(),
            &bin.join("pg_ctl"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        let guardian = Guardian::spawn(&dir, &stop);
        let mut cluster = PgCluster {
            dir,
            bin,
            user,
            port: 0,
            guardian: Some(guardian),
        };
        // No fsync and C collation: the data is thrown away, and speed matters more.
        if let Err(e) = cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-locale".as_ref(),
                "--no-sync".as_ref(),
            ],
        ) {
            panic!("{why}, and initdb failed: {e}");
        }
        // The free port may be taken before the server binds it; then another one is tried.
        let mut failures = Vec::new();
        for _ in 0..5 {
            cluster.port = guardian::free_port();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "{why}, and the throwaway server in {} did not start: {}",
            cluster.dir.display(),
            failures.join("\n")
        );
    }

    /// A URL of the cluster's `postgres` database, as superuser `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (a fast shutdown), as an outage would; [`PgCluster::start`] brings it
    /// back on the same port.
    pub fn stop(&self) {
        let data = self.data();
        let stopped = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        if let Err(e) = stopped {
            panic!("cannot stop the PostgreSQL in {}: {e}", self.dir.display());
        }
    }

    /// Starts the server again after [`PgCluster::stop`].
    pub fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("cannot start the PostgreSQL in {}: {e}", self.dir.display());
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c shared_buffers=32MB",
            self.port,
            self.dir.display()
        );
        let data = self.data();
        let log = self.dir.join("log");
        let started = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
        started.map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}; the server's log ends with:\n{}", tail.join("\n"))
        })
    }

    /// Runs one of the server programs as the server's user, in the cluster's directory.
    fn run(&self, program: &str, args: &[&OsStr]) -> Result<(), String> {
        let line = guardian::command_as(self.user.as_deref(), &self.bin.join(program), args);
        let output = guardian::command(&line)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", show(&line)))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{}` failed ({}): {}{}",
                show(&line),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(guardian) = self.guardian.take() {
            guardian.release();
        }
    }
}

/// The directory holding initdb, pg_ctl and postgres: the one on `PATH`, else the newest
/// version under `/usr/lib/postgresql` (where Debian and Ubuntu put them, off `PATH`).
fn server_programs() -> Option<PathBuf> {
    const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
    let complete = |dir: &Path| {
        PROGRAMS
            .iter()
            .all(|program| guardian::is_executable(&dir.join(program)))
    };
    if let Some(initdb) = guardian::on_path("initdb") {
        let beside = initdb.parent().map(Path::to_path_buf);
        let real = std::fs::canonicalize(&initdb)
            .ok()
            .and_then(|real| real.parent().map(Path::to_path_buf));
        if let Some(dir) = [beside, real]
            .into_iter()
            .flatten()
            .find(|dir| complete(dir))
        {
            return Some(dir);
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether a PostgreSQL at `url` accepts connections and answers a query; why not, if not.
fn answers(url: &str) -> Result<(), String> {
    let options = PgConnectOptions::from_str(url).map_err(|e| format!("not a valid URL: {e}"))?;
    // A quick refusal first, so a machine without a server does not wait for sqlx's timeouts;
    // a host that is a socket directory has no TCP port to try.
    let host = options.get_host();
    if !host.starts_with('/') && guardian::accepts(host, options.get_port()).is_none() {
        return Err("nothing accepts connections there".to_owned());
    }
    let url = url.to_owned();
    block_on(async move {
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            let mut connection = PgConnection::connect(&url).await?;
            sqlx::query("SELECT 1").execute(&mut connection).await?;
            connection.close().await
        })
        .await;
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {ANSWER_TIMEOUT:?}")),
        }
    })
}

/// Runs one statement on the database at `url`, on a connection of its own.
fn execute(url: &str, statement: &str) -> Result<(), sqlx::Error> {
    let (url, statement) = (url.to_owned(), statement.to_owned());
    block_on(async move {
        let mut connection = PgConnection::connect(&url).await?;
        sqlx::query(&statement).execute(&mut connection).await?;
        connection.close().await
    })
}

/// Runs `future` to completion on a thread of its own with its own runtime, so it can be
/// called from synchronous code and from inside another runtime alike.
fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"))
            .block_on(future)
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `url` with its database replaced by `database` (query parameters kept).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |at| at + 3);
    let server = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

fn show(line: &[OsString]) -> String {
    line.iter()
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/t1",
            ),
            (
                "postgres://postgres@127.0.0.1:5432",
                "postgres://postgres@127.0.0.1:5432/t1",
            ),
            (
                "postgres://u:p@db.example/flags?sslmode=disable",
                "postgres://u:p@db.example/t1?sslmode=disable",
            ),
            (
                "postgres://h?application_name=x",
                "postgres://h/t1?application_name=x",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "t1"), expected, "{url}");
        }
    }
}
