//! The admin store conformance suite against `MemoryStore`, plus what only the in-memory store
//! can show: simulated outages and subscribers that fall behind.

use crate::ChangeFeed;
use crate::KeyStore;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::conformance::{CASES, Case, fresh_env};
use crate::{Actor, AdminStore, ChangeKind, MemoryStore, StoreError};
use serde_json::json;

/// Runs a future on this thread, failing the test if it takes longer than `limit` (a
/// subscription that never delivers would otherwise hang the test run).
fn block_on<F: Future>(future: F, limit: Duration) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let deadline = Instant::now() + limit;
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let now = Instant::now();
        assert!(now < deadline, "the future did not finish within {limit:?}");
        thread::park_timeout(deadline - now);
    }
}

fn run(name: &str, case: Case) {
    let store = MemoryStore::new();
    let started = Instant::now();
    block_on(case(&store), Duration::from_secs(10));
    eprintln!("{name}: {:?}", started.elapsed());
}

crate::store_conformance_tests!(run);

#[test]
fn the_test_macro_runs_every_case() {
    // One store shared by every case also works: cases use their own environments.
    let store = MemoryStore::new();
    for (name, case) in CASES {
        eprintln!("{name}");
        block_on(case(&store), Duration::from_secs(10));
    }
    // The macro above expands a hand-written list; keep it the same length as CASES.
    let source = include_str!("conformance.rs");
    let listed = source
        .split("(@cases $run:")
        .nth(1)
        .and_then(|rest| rest.split(");").next())
        .unwrap();
    assert_eq!(listed.matches(',').count(), CASES.len());
}

fn admin() -> Actor {
    Actor::named("test")
}

fn flag() -> serde_json::Value {
    json!({"variations": [true, false], "fallthrough": {"variation": 0}})
}

#[test]
fn an_outage_fails_operations_and_ends_subscriptions() {
    let store = MemoryStore::new();
    block_on(
        async {
            let env = fresh_env(&store).await;
            let mut sub = store.subscribe().await.unwrap();
            store
                .put_flag(&admin(), &env, "f", flag(), None)
                .await
                .unwrap();
            store.set_available(false);
            // Changes made before the outage are still delivered, then the loss is reported.
            assert_eq!(sub.next().await.unwrap().key, "f");
            assert!(matches!(
                sub.next().await,
                Err(StoreError::Unavailable { .. })
            ));
            assert!(matches!(
                sub.next().await,
                Err(StoreError::Unavailable { .. })
            ));
            assert!(matches!(
                store.get_flag(&env, "f").await,
                Err(StoreError::Unavailable { .. })
            ));
            assert!(matches!(
                store.subscribe().await,
                Err(StoreError::Unavailable { .. })
            ));

            // Back again: a new subscription, and catching up from the last seq applied.
            store.set_available(true);
            let mut sub = store.subscribe().await.unwrap();
            let last_applied = store
                .changes_since(&env, 0)
                .await
                .unwrap()
                .last()
                .unwrap()
                .seq;
            store
                .put_flag(&admin(), &env, "f", flag(), Some(1))
                .await
                .unwrap();
            let missed = store.changes_since(&env, last_applied).await.unwrap();
            assert_eq!(missed.len(), 1);
            assert_eq!(sub.next().await.unwrap(), missed[0]);
        },
        Duration::from_secs(10),
    );
}

#[test]
fn a_waiting_subscriber_is_woken_by_a_write_on_another_thread() {
    let store = Arc::new(MemoryStore::new());
    let env = block_on(fresh_env(&*store), Duration::from_secs(5));
    let mut sub = block_on(store.subscribe(), Duration::from_secs(5)).unwrap();
    let writer = {
        let store = Arc::clone(&store);
        let env = env.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            block_on(
                store.set_killed(&admin(), &env, "missing", true),
                Duration::from_secs(5),
            )
            .unwrap_err();
            block_on(
                store.put_flag(&admin(), &env, "late", flag(), None),
                Duration::from_secs(5),
            )
            .unwrap();
        })
    };
    let change = block_on(sub.next(), Duration::from_secs(5)).unwrap();
    assert_eq!(
        (change.key.as_str(), &change.kind),
        ("late", &ChangeKind::Flag { deleted: false })
    );
    writer.join().unwrap();
}

#[test]
fn a_subscriber_that_falls_behind_is_cut_off() {
    let store = MemoryStore::new();
    block_on(
        async {
            let env = fresh_env(&store).await;
            store
                .put_flag(&admin(), &env, "f", flag(), None)
                .await
                .unwrap();
            let mut sub = store.subscribe().await.unwrap();
            for i in 0..10_001 {
                store
                    .set_killed(&admin(), &env, "f", i % 2 == 0)
                    .await
                    .unwrap();
            }
            let mut delivered = 0;
            let err = loop {
                match sub.next().await {
                    Ok(_) => delivered += 1,
                    Err(e) => break e,
                }
            };
            assert_eq!(delivered, 10_000);
            assert_eq!(
                err.to_string(),
                "store unavailable: the subscriber fell too far behind"
            );
        },
        Duration::from_secs(30),
    );
}

#[test]
fn key_secrets_are_stored_only_as_hashes() {
    // The store's Debug output is the only window into its state; it shows nothing.
    let store = MemoryStore::new();
    let created = block_on(
        store.create_api_key(
            &admin(),
            &crate::NewApiKey {
                name: "k".to_owned(),
                kind: crate::ApiKeyKind::Sdk,
                env: None,
            },
        ),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(!format!("{store:?}").contains(&created.secret));
    let a = created.secret.clone();
    let b = block_on(
        store.create_api_key(
            &admin(),
            &crate::NewApiKey {
                name: "k2".to_owned(),
                kind: crate::ApiKeyKind::Sdk,
                env: None,
            },
        ),
        Duration::from_secs(5),
    )
    .unwrap()
    .secret;
    assert_ne!(a, b, "every secret is fresh");
}
