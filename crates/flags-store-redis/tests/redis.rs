//! The store against a real Redis: the exact layout LaunchDarkly's SDKs read, version order,
//! tombstones, and writers racing on one key.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use flags_store_redis::{DEFAULT_PREFIX, Held, Item, Kind, RedisStore, Stored, Upserted};
use flags_test_support::redis;

fn prefix() -> String {
    redis().unique_prefix("flagd-test")
}

fn flag(key: &str, version: u64) -> Item {
    Item::new(
        key,
        version,
        format!(r#"{{"key":"{key}","version":{version},"on":true}}"#),
    )
}

/// The raw contents of a hash, as another client (an SDK) reads it.
async fn raw_hash(name: &str) -> BTreeMap<String, String> {
    let client = redis::Client::open(redis().url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HGETALL")
        .arg(name)
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn init_writes_launchdarkly_s_layout_and_replaces_what_was_there() {
    let prefix = prefix();
    let store = RedisStore::connect(redis().url(), &prefix).await.unwrap();
    assert_eq!(store.hash(Kind::Features), format!("{prefix}:features"));
    assert_eq!(store.inited_key(), format!("{prefix}:$inited"));
    assert!(!store.initialized().await.unwrap());

    store
        .init(&[flag("a", 1), flag("b", 2)], &[flag("s", 5)])
        .await
        .unwrap();
    assert!(store.initialized().await.unwrap());
    assert_eq!(
        raw_hash(&format!("{prefix}:features")).await,
        BTreeMap::from([
            ("a".to_owned(), flag("a", 1).json),
            ("b".to_owned(), flag("b", 2).json),
        ])
    );
    assert_eq!(
        raw_hash(&format!("{prefix}:segments")).await,
        BTreeMap::from([("s".to_owned(), flag("s", 5).json)])
    );

    // A new data set replaces the old one whole: `a` and the segment are gone.
    store.init(&[flag("b", 3)], &[]).await.unwrap();
    let features = store.all(Kind::Features).await.unwrap();
    assert_eq!(
        features,
        BTreeMap::from([(
            "b".to_owned(),
            Stored::Item {
                version: 3,
                json: flag("b", 3).json
            }
        )])
    );
    assert!(store.all(Kind::Segments).await.unwrap().is_empty());
}

#[tokio::test]
async fn only_newer_versions_replace_an_item_and_a_tombstone_keeps_it_deleted() {
    let store = RedisStore::connect(redis().url(), &prefix()).await.unwrap();
    store.init(&[flag("f", 5)], &[]).await.unwrap();

    assert!(!store.upsert(Kind::Features, &flag("f", 4)).await.unwrap());
    assert!(!store.upsert(Kind::Features, &flag("f", 5)).await.unwrap());
    assert!(store.upsert(Kind::Features, &flag("f", 6)).await.unwrap());
    assert_eq!(
        store
            .get(Kind::Features, "f")
            .await
            .unwrap()
            .map(|s| s.version()),
        Some(6)
    );
    // A key never seen is simply written.
    assert!(store.upsert(Kind::Segments, &flag("new", 1)).await.unwrap());

    assert!(store.delete(Kind::Features, "f", 7).await.unwrap());
    assert_eq!(
        store.get(Kind::Features, "f").await.unwrap(),
        Some(Stored::Deleted { version: 7 })
    );
    assert_eq!(
        raw_hash(&store.hash(Kind::Features)).await["f"],
        r#"{"key":"$deleted","version":7,"deleted":true}"#
    );
    // A write older than the deletion, arriving late, does not bring the flag back.
    assert!(!store.upsert(Kind::Features, &flag("f", 6)).await.unwrap());
    assert!(store.upsert(Kind::Features, &flag("f", 8)).await.unwrap());
    assert_eq!(store.get(Kind::Features, "missing").await.unwrap(), None);
}

#[tokio::test]
async fn many_items_are_written_at_once_each_only_over_an_older_version() {
    let store = RedisStore::connect(redis().url(), &prefix()).await.unwrap();
    // Not initialized: nothing is written, so no partial data set looks whole.
    assert_eq!(
        store.upsert_many(&[flag("a", 1)], &[]).await.unwrap(),
        Upserted::NotInitialized
    );
    assert!(store.all(Kind::Features).await.unwrap().is_empty());
    assert_eq!(store.held().await.unwrap(), None);

    store
        .init(&[flag("a", 5), flag("b", 5)], &[flag("s", 2)])
        .await
        .unwrap();
    let written = store
        .upsert_many(
            // `a` older, `b` newer, `c` new; `b` deleted as a segment key is another item.
            &[flag("a", 4), flag("b", 6), flag("c", 1)],
            &[Item::deleted("s", 3), flag("b", 1)],
        )
        .await
        .unwrap();
    assert_eq!(written, Upserted::Written(4));
    let versions = |kind| {
        let store = &store;
        async move {
            store
                .all(kind)
                .await
                .unwrap()
                .into_iter()
                .map(|(k, s)| (k, s.version()))
                .collect::<BTreeMap<_, _>>()
        }
    };
    assert_eq!(
        versions(Kind::Features).await,
        BTreeMap::from([("a".into(), 5), ("b".into(), 6), ("c".into(), 1)])
    );
    assert_eq!(
        store.get(Kind::Segments, "s").await.unwrap(),
        Some(Stored::Deleted { version: 3 })
    );
    assert_eq!(
        store.held().await.unwrap(),
        Some(Held {
            features: 3,
            segments: 2
        })
    );
    // Everything stale: nothing written, and nothing needed doing.
    assert_eq!(
        store
            .upsert_many(&[flag("b", 6)], &[Item::deleted("s", 2)])
            .await
            .unwrap(),
        Upserted::Written(0)
    );
    assert_eq!(
        store.upsert_many(&[], &[]).await.unwrap(),
        Upserted::Written(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_batch_writers_leave_the_newest_versions() {
    let prefix = prefix();
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(
            RedisStore::connect(redis().url(), &prefix).await.unwrap(),
        ));
    }
    stores[0].init(&[], &[]).await.unwrap();
    let mut writers = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let store = Arc::clone(store);
        writers.push(tokio::spawn(async move {
            for n in 0..30u64 {
                let version = 1 + (n * 7 + i as u64 * 11) % 30;
                let items: Vec<Item> = (0..5).map(|k| flag(&format!("f{k}"), version)).collect();
                store.upsert_many(&items, &[]).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    for k in 0..5 {
        assert_eq!(
            stores[0]
                .get(Kind::Features, &format!("f{k}"))
                .await
                .unwrap()
                .map(|s| s.version()),
            Some(30),
            "f{k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_leave_the_newest_version() {
    // Separate stores: separate connections, so their WATCHes really race.
    let prefix = prefix();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(
            RedisStore::connect(redis().url(), &prefix).await.unwrap(),
        ));
    }
    stores[0].init(&[], &[]).await.unwrap();
    let mut writers = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let store = Arc::clone(store);
        writers.push(tokio::spawn(async move {
            let mut written = 0;
            // Each writer goes through every version, in its own order.
            for n in 0..50u64 {
                let version = 1 + (n * 7 + i as u64 * 13) % 50;
                if store
                    .upsert(Kind::Features, &flag("hot", version))
                    .await
                    .unwrap()
                {
                    written += 1;
                }
            }
            written
        }));
    }
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    assert!(written >= 1);
    assert_eq!(
        stores[0]
            .get(Kind::Features, "hot")
            .await
            .unwrap()
            .map(|s| s.version()),
        Some(50)
    );
}

#[tokio::test]
async fn launchdarkly_s_default_prefix_is_the_default() {
    assert_eq!(DEFAULT_PREFIX, "launchdarkly");
    let store = RedisStore::connect(redis().url(), DEFAULT_PREFIX)
        .await
        .unwrap();
    assert_eq!(store.hash(Kind::Segments), "launchdarkly:segments");
    assert!(RedisStore::connect("not a url", "p").await.is_err());
}
