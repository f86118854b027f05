//! `PostgresStore` against a real PostgreSQL: the admin store conformance suite, racing
//! writers, lost connections, hashed keys and outages.
//!
//! Every test creates a database of its own and drops it at the end, so tests run in parallel
//! and leave nothing behind. The server is `flags_test_support::postgres()`: the one the test
//! command names in `$FLAGD_TEST_POSTGRES_URL` when it answers, else a throwaway one.
#![allow(clippy::unwrap_used, clippy::panic)]

use flags_store::ChangeFeed;
use flags_store::KeyStore;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flags_store::conformance::{Case, fresh_env};
use flags_store::{
    Actor, AdminStore, ApiKeyKind, AuditAction, AuditQuery, ChangeKind, NewApiKey, StoreError,
    hash_secret,
};
use flags_store_postgres::{CHANNEL, PostgresConfig, PostgresStore};
use flags_test_support::{TestDatabase, postgres};
use serde_json::json;
use tokio::sync::Barrier;

/// How long one test may take before it fails (a subscription that never delivers would
/// otherwise hang).
const LIMIT: Duration = Duration::from_secs(60);

/// A migrated store on `db`.
async fn store_on(db: &TestDatabase) -> PostgresStore {
    let store = PostgresStore::connect(db.url()).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// Runs `test` with a migrated store on a fresh database, then drops the database whether the
/// test passed or not.
fn with_store<F, Fut>(test: F)
where
    F: FnOnce(PostgresStore, Arc<TestDatabase>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = Arc::new(postgres().create_database());
    runtime.block_on(async {
        let store = store_on(&db).await;
        let outcome = tokio::spawn(tokio::time::timeout(
            LIMIT,
            test(store.clone(), Arc::clone(&db)),
        ))
        .await;
        store.close().await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the test did not finish within {LIMIT:?}"),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    });
}

fn run(name: &str, case: Case) {
    let started = Instant::now();
    with_store(move |store, _| async move { case(&store).await });
    eprintln!("{name}: {:?}", started.elapsed());
}

flags_store::store_conformance_tests!(run);

fn admin() -> Actor {
    Actor::named("test")
}

fn flag(salt: &str) -> serde_json::Value {
    json!({"on": true, "variations": [true, false], "fallthrough": {"variation": 0}, "salt": salt})
}

/// Twenty tasks on separate connections race on one flag, round after round: each write
/// applies on the version its writer read or conflicts, and the audit log holds exactly the
/// applied ones, in version order.
#[test]
fn twenty_concurrent_writers_apply_or_conflict() {
    with_store(|store, _| async move {
        const WRITERS: usize = 20;
        const ROUNDS: usize = 3;
        let env = fresh_env(&store).await;
        store
            .put_flag(&admin(), &env, "hot", flag("initial"), None)
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let (store, env, barrier) = (store.clone(), env.clone(), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                let mut applied = Vec::new();
                for round in 0..ROUNDS {
                    let name = format!("writer-{writer}-round-{round}");
                    barrier.wait().await;
                    let read = store.get_flag(&env, "hot").await.unwrap().version;
                    barrier.wait().await;
                    let who = Actor::named(&name);
                    match store
                        .put_flag(&who, &env, "hot", flag(&name), Some(read))
                        .await
                    {
                        Ok(stored) => {
                            assert_eq!(stored.version, read + 1, "{name} applied on what it read");
                            applied.push((stored.version, name));
                        }
                        Err(StoreError::Conflict { current_version }) => {
                            assert!(current_version.is_some_and(|v| v > read), "{name}");
                        }
                        Err(e) => panic!("{name}: {e}"),
                    }
                }
                applied
            }));
        }
        let mut applied = Vec::new();
        for task in tasks {
            applied.extend(task.await.unwrap());
        }
        applied.sort();
        // Every round has a winner: all writers read the same version after the barrier.
        assert_eq!(
            applied.len(),
            ROUNDS,
            "exactly one winner per round: {applied:?}"
        );
        let versions: Vec<u64> = applied.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (2..2 + ROUNDS as u64).collect::<Vec<_>>());

        let current = store.get_flag(&env, "hot").await.unwrap();
        assert_eq!(current.version, 1 + ROUNDS as u64);
        let log = store
            .audit_log(&AuditQuery::flag(&env, "hot", 1000))
            .await
            .unwrap();
        let replaces: Vec<(u64, String)> = log
            .iter()
            .rev()
            .filter(|e| e.action == AuditAction::Replace)
            .map(|e| {
                let version = e.after.as_ref().unwrap()["version"].as_u64().unwrap();
                (version, e.actor.name.clone())
            })
            .collect();
        assert_eq!(
            replaces, applied,
            "the audit log has exactly the applied writes"
        );
    });
}

/// Two writers that would each be fine alone, but together form a prerequisite cycle: the
/// environment lock makes one of them see the other's write, so exactly one applies.
#[test]
fn racing_writes_cannot_store_a_cycle_together() {
    with_store(|store, _| async move {
        let env = fresh_env(&store).await;
        for round in 0..10 {
            let (a, b) = (format!("a{round}"), format!("b{round}"));
            for key in [&a, &b] {
                store
                    .put_flag(&admin(), &env, key, flag("x"), None)
                    .await
                    .unwrap();
            }
            let with_prereq = |key: &str| {
                let mut doc = flag("x");
                doc["prerequisites"] = json!([{"key": key, "variation": 0}]);
                doc
            };
            let who = admin();
            let (first, second) = tokio::join!(
                store.put_flag(&who, &env, &a, with_prereq(&b), Some(1)),
                store.put_flag(&who, &env, &b, with_prereq(&a), Some(1)),
            );
            let outcomes = [&first, &second];
            let applied = outcomes.iter().filter(|r| r.is_ok()).count();
            let refused = outcomes
                .iter()
                .filter(|r| matches!(r, Err(StoreError::Unresolved { message }) if message.starts_with("prerequisites[0].key: prerequisite cycle")))
                .count();
            assert_eq!((applied, refused), (1, 1), "{first:?} / {second:?}");
        }
    });
}

/// A killed listener connection ends the subscription with an error; a new subscription and
/// `changes_since` pick up what happened in between.
#[test]
fn a_lost_listener_connection_is_reported() {
    with_store(|store, db| async move {
        let env = fresh_env(&store).await;
        let mut sub = store.subscribe().await.unwrap();
        store
            .put_flag(&admin(), &env, "f", flag("1"), None)
            .await
            .unwrap();
        let seen = sub.next().await.unwrap();
        assert_eq!(seen.key, "f");

        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND query ILIKE 'LISTEN%'",
        )
        .bind(db.name())
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(killed, [true], "one listener connection");
        // Written while nobody listens.
        store
            .put_flag(&admin(), &env, "f", flag("2"), Some(1))
            .await
            .unwrap();

        let lost = sub.next().await.unwrap_err();
        assert!(matches!(lost, StoreError::Unavailable { .. }), "{lost}");
        assert!(matches!(
            sub.next().await,
            Err(StoreError::Unavailable { .. })
        ));

        let mut sub = store.subscribe().await.unwrap();
        let missed = store.changes_since(&env, seen.seq).await.unwrap();
        assert_eq!(missed.len(), 1);
        assert_eq!((missed[0].key.as_str(), missed[0].version), ("f", 2));
        store.set_killed(&admin(), &env, "f", true).await.unwrap();
        let next = sub.next().await.unwrap();
        assert_eq!(next.kind, ChangeKind::Kill { killed: true });
        assert_eq!(next.version, 2);
    });
}

/// A notification too large to carry its change names it by seq; the subscription fetches it.
/// Notifications that are not changes are skipped.
#[test]
fn notifications_by_seq_and_foreign_ones() {
    with_store(|store, _| async move {
        let env = fresh_env(&store).await;
        store
            .put_flag(&admin(), &env, "f", flag("1"), None)
            .await
            .unwrap();
        let change = store.changes_since(&env, 0).await.unwrap().pop().unwrap();
        assert_eq!(change.key, "f");
        let mut sub = store.subscribe().await.unwrap();
        for payload in [
            "not json".to_owned(),
            json!({"seq": change.seq, "env": env}).to_string(),
        ] {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(store.pool())
                .await
                .unwrap();
        }
        assert_eq!(sub.next().await.unwrap(), change);
    });
}

/// Only the SHA-256 of a secret is stored, computed as PostgreSQL's own `sha256` does.
#[test]
fn secrets_are_stored_as_their_sha256() {
    with_store(|store, _| async move {
        let created = store
            .create_api_key(
                &admin(),
                &NewApiKey {
                    name: "web".to_owned(),
                    kind: ApiKeyKind::Sdk,
                    env: None,
                },
            )
            .await
            .unwrap();
        let (stored, by_postgres): (String, String) = sqlx::query_as(
            "SELECT secret_sha256, encode(sha256(convert_to($1, 'UTF8')), 'hex') FROM api_keys",
        )
        .bind(&created.secret)
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(stored, hash_secret(&created.secret));
        assert_eq!(stored, by_postgres);
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT t::text FROM api_keys t UNION ALL SELECT a::text FROM audit_log a",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert!(rows.iter().all(|row| !row.contains(&created.secret)));
    });
}

/// Applying the migrations again changes nothing, and a second store on the same database
/// sees the first one's data.
#[test]
fn migrations_run_once_and_data_is_shared() {
    with_store(|store, db| async move {
        let env = fresh_env(&store).await;
        store
            .put_flag(&admin(), &env, "f", flag("1"), None)
            .await
            .unwrap();
        let other = store_on(&db).await;
        other.migrate().await.unwrap();
        assert_eq!(other.get_flag(&env, "f").await.unwrap().version, 1);
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        // Once each, however many stores migrated.
        let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
            .count();
        assert_eq!(applied, i64::try_from(migrations).unwrap());
        other.close().await;
    });
}

/// A lazily connected store applies the migrations on its first connection, so its first
/// operations work on an empty database, even when several start at once.
#[test]
fn a_lazy_store_migrates_on_first_use() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = postgres().create_database();
    runtime.block_on(async {
        let store = PostgresStore::connect_lazy_migrated(&PostgresConfig::new(db.url())).unwrap();
        let actor = admin();
        let (a, b) = tokio::join!(
            store.create_environment(&actor, "production", "Production"),
            store.create_environment(&actor, "staging", "Staging"),
        );
        a.unwrap();
        b.unwrap();
        let keys: Vec<String> = store
            .list_environments()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["production", "staging"]);
        store.close().await;
    });
}

/// A database that cannot be reached is `Unavailable`, quickly.
#[test]
fn an_unreachable_database_is_unavailable() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Port 1 on loopback: nothing listens there, so connecting is refused at once.
        let url = "postgres://postgres@127.0.0.1:1/unreachable";
        let started = Instant::now();
        let err = PostgresStore::connect(url).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");

        let lazy = PostgresStore::connect_lazy_migrated(&PostgresConfig {
            acquire_timeout_ms: 500,
            ..PostgresConfig::new(url)
        })
        .unwrap();
        let err = lazy.get_flag("production", "f").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        let err = lazy
            .put_flag(&admin(), "production", "f", flag("1"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(matches!(
            lazy.subscribe().await,
            Err(StoreError::Unavailable { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(10));

        let bad = PostgresStore::connect("postgres://postgres@127.0.0.1:notaport/unreachable")
            .await
            .unwrap_err();
        assert!(matches!(bad, StoreError::Invalid { .. }), "{bad}");
    });
}

/// A server that answers but has no such database is `Unavailable` as well: nothing can be
/// served until the database is there, and it may yet be created.
#[test]
fn a_missing_database_is_unavailable() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = postgres().create_database();
    let url = db.url().to_owned();
    drop(db);
    runtime.block_on(async {
        let err = PostgresStore::connect(&url).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        let lazy = PostgresStore::connect_lazy_migrated(&PostgresConfig::new(&url)).unwrap();
        let err = lazy.authenticate("flagd-admin-00").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        let err = lazy.snapshot("production").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        lazy.close().await;
    });
}

/// `.` and `..` are refused as new keys, but an earlier flagd stored them: such an environment
/// still loads, and its items can still be read and deleted.
#[test]
fn items_stored_under_dot_keys_stay_reachable() {
    with_store(|store, _| async move {
        let doc = json!({"key": ".", "version": 1, "on": true, "variations": [true],
            "fallthrough": {"variation": 0}});
        for sql in [
            "INSERT INTO environments (key, name) VALUES ('.', 'Dot')",
            "INSERT INTO flags (env, key, version, doc) VALUES ('.', '.', 1, $1)",
            "INSERT INTO flags (env, key, version, doc) VALUES ('.', '..', 1, $1)",
        ] {
            sqlx::query(sql)
                .bind(&doc)
                .execute(store.pool())
                .await
                .unwrap();
        }
        let snapshot = store.snapshot(".").await.unwrap();
        let keys: Vec<&str> = snapshot.flags.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, [".", ".."]);
        assert_eq!(store.get_flag(".", ".").await.unwrap().version, 1);
        store.set_killed(&admin(), ".", "..", true).await.unwrap();
        store.delete_flag(&admin(), ".", "..", None).await.unwrap();
        assert!(matches!(
            store.get_flag(".", "..").await,
            Err(StoreError::NotFound { .. })
        ));
        // Writing one again is refused, as creating one would be.
        let put = store.put_flag(&admin(), ".", ".", flag("x"), Some(1)).await;
        assert!(matches!(put, Err(StoreError::Invalid { .. })), "{put:?}");
    });
}

/// A closed store answers `Unavailable` too (what a server sees while shutting down).
#[test]
fn a_closed_pool_is_unavailable() {
    with_store(|store, _| async move {
        let env = fresh_env(&store).await;
        store.close().await;
        let err = store.snapshot(&env).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    });
}
