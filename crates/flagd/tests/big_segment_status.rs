//! The SDK's big-segment status provider over a real Redis in LaunchDarkly's layout: available
//! while Redis answers, unavailable while it is down, available again when it is back, and
//! stale once `synchronized_on` is older than the stale time.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flags_core::FlagData;
use flags_sdk::{BigSegmentStoreStatus, BigSegmentsConfig, Client, Listener};
use flags_store_redis::RedisBigSegments;
use flags_test_support::RedisServer;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Waits for the listener to report `expected`, skipping other statuses on the way.
async fn until_status(
    listener: &mut Listener<BigSegmentStoreStatus>,
    expected: BigSegmentStoreStatus,
) {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if listener.recv().await.unwrap() == expected {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never reported {expected:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_follows_a_redis_outage_and_goes_stale_after_the_stale_time() {
    let mut redis = RedisServer::start_new();
    let prefix = "status-test";
    let writer = RedisBigSegments::connect(&redis.url(), prefix)
        .await
        .unwrap();
    writer.set_synchronized_on(now_ms()).await.unwrap();
    let reader = RedisBigSegments::connect(&redis.url(), prefix)
        .await
        .unwrap();
    let mut config = BigSegmentsConfig::new(Arc::new(reader));
    config.status_poll_interval = Duration::from_millis(100);
    config.stale_after = Duration::from_secs(3);
    let client = Client::builder("sdk-key")
        .data(FlagData::default())
        .events_enabled(false)
        .big_segments(config)
        .build()
        .unwrap();
    let provider = client.big_segment_store_status_provider();
    let mut listener = provider.add_status_listener();
    let fresh = BigSegmentStoreStatus {
        available: true,
        stale: false,
    };
    if provider.get_status() != fresh {
        until_status(&mut listener, fresh).await;
    }

    redis.stop();
    let down = BigSegmentStoreStatus {
        available: false,
        stale: false,
    };
    until_status(&mut listener, down).await;

    // Back, empty (no persistence): available, and stale, since nothing says when it was last
    // brought up to date; fresh again once that is written.
    redis.start();
    let stale = BigSegmentStoreStatus {
        available: true,
        stale: true,
    };
    until_status(&mut listener, stale).await;
    let writer = RedisBigSegments::connect(&redis.url(), prefix)
        .await
        .unwrap();
    writer.set_synchronized_on(now_ms()).await.unwrap();
    until_status(&mut listener, fresh).await;

    // Nobody writes `synchronized_on` for longer than the stale time.
    let since = std::time::Instant::now();
    until_status(&mut listener, stale).await;
    assert!(
        since.elapsed() >= Duration::from_secs(2),
        "stale too early: {:?}",
        since.elapsed()
    );
    client.close();
}
