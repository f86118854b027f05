//! Root mode against real PostgreSQL: admin writes at one replica reach a second replica's
//! evaluation endpoint and SDK streams, each in turn (p50/p99 printed over 200 writes; the
//! latency target is measured by `cargo xtask bench-root`), two replicas on one database
//! converge, a kill wins and reaches every stream, an outage of a throwaway cluster keeps the
//! last data serving until the database returns and the replica catches up, and a replica
//! started while the database is down starts anyway and serves once the database appears.
//!
//! Each test makes its own database on `flags_test_support::postgres()` (the server the test
//! command names, else a throwaway one) and drops it. The outage tests start a cluster of their
//! own, which they can stop and start.

#![allow(clippy::unwrap_used)]

mod root_support;

use std::sync::Arc;
use std::time::Instant;

use flags_store::AdminStore;
use flags_test_support::{PgCluster, postgres};
use root_support::*;

async fn open(url: &str) -> Arc<dyn AdminStore> {
    flagd::open_database(url).await.unwrap()
}

async fn start_on(url: &str) -> flagd::RunningServer {
    let mut config = flagd::Config::for_tests(Vec::new());
    config.database_url = Some(url.to_owned());
    config.admin_key = Some("root-admin".to_owned());
    flagd::start(config).await.unwrap()
}

/// Replaces flag `f` through a replica's admin API, with the version it has now.
async fn admin_put(client: &reqwest::Client, base: &str, version: u64, value: bool) -> u64 {
    let response = client
        .put(format!("{base}/api/v1/environments/production/flags/f"))
        .header("authorization", "Bearer root-admin")
        .header("if-match", format!("\"{version}\""))
        .header("content-type", "application/json")
        .body(bool_flag("f", value).to_string())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.status());
    version + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_reach_a_second_replica_in_order() {
    let db = postgres().create_database();
    let store = open(db.url()).await;
    let key = env_with_key(&*store, "production").await;
    let mut version = put_flag(&*store, "production", "f", bool_flag("f", false)).await;
    let writer = start_on(db.url()).await;
    let reader = start_on(db.url()).await;
    let (client, base) = (reqwest::Client::new(), reader.url());
    let (_, body) = evaluate(&client, &base, &key, "f").await;
    assert_eq!(body["value"], false, "{body}");
    let mut stream = Stream::open(&client, &base, &key).await;
    assert_eq!(stream.next().await.event, "put");

    // Each round times one write to the reader's stream and one to its evaluation endpoint
    // (polled every 2 ms), both from the writer's acknowledgement (the commit) on; the admin
    // request's own time is measured apart.
    let mut writes = Vec::new();
    let mut to_stream = Vec::new();
    let mut to_eval = Vec::new();
    for i in 0..200u32 {
        let value = i % 2 == 0;
        let started = Instant::now();
        version = admin_put(&client, &writer.url(), version, value).await;
        writes.push(started.elapsed());
        let acked = Instant::now();
        let patch = stream.next_for("/flags/f").await;
        to_stream.push(acked.elapsed());
        let variation = if value { 0 } else { 1 };
        assert_eq!(patch.data["data"]["fallthrough"]["variation"], variation);
        let started = Instant::now();
        version = admin_put(&client, &writer.url(), version, !value).await;
        writes.push(started.elapsed());
        let acked = Instant::now();
        until("the write at the evaluation endpoint", || async {
            evaluate(&client, &base, &key, "f").await.1["value"] == !value
        })
        .await;
        to_eval.push(acked.elapsed());
        stream.next_for("/flags/f").await;
    }
    let (write_p50, write_p99) = percentiles(writes);
    let (stream_p50, stream_p99) = percentiles(to_stream);
    let (eval_p50, eval_p99) = percentiles(to_eval);
    println!(
        "admin write at replica A (request itself: p50 {write_p50:.1} ms, p99 {write_p99:.1} ms) \
         -> replica B's stream: p50 {stream_p50:.1} ms, p99 {stream_p99:.1} ms; -> replica B's \
         evaluation: p50 {eval_p50:.1} ms, p99 {eval_p99:.1} ms (200 writes each)"
    );
    // Printed, not asserted: on a shared machine a time limit would make this test flaky.
    // `cargo xtask bench-root` measures the latency against its target.
    writer.shutdown().await.unwrap();
    reader.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_converge_and_a_kill_reaches_both_streams() {
    let db = postgres().create_database();
    let store = open(db.url()).await;
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    let a = start_on(db.url()).await;
    let b = start_on(db.url()).await;
    let client = reqwest::Client::new();
    let admin = |base: String, method: reqwest::Method, path: &str, body: serde_json::Value| {
        let request = client
            .request(method, format!("{base}/api/v1{path}"))
            .header("authorization", "Bearer root-admin")
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{:?}", response.status());
        }
    };

    // A write through either replica reaches both.
    for (writer, value) in [(a.url(), false), (b.url(), true)] {
        let current = store.get_flag("production", "f").await.unwrap().version;
        let request = client
            .put(format!("{writer}/api/v1/environments/production/flags/f"))
            .header("authorization", "Bearer root-admin")
            .header("if-match", format!("\"{current}\""))
            .header("content-type", "application/json")
            .body(bool_flag("f", value).to_string());
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{:?}", response.status());
        for server in [&a, &b] {
            until("both replicas to converge", || async {
                evaluate(&client, &server.url(), &key, "f").await.1["value"] == value
            })
            .await;
        }
    }

    let mut stream_a = Stream::open(&client, &a.url(), &key).await;
    let mut stream_b = Stream::open(&client, &b.url(), &key).await;
    stream_a.next().await;
    stream_b.next().await;
    let started = Instant::now();
    admin(
        a.url(),
        reqwest::Method::PUT,
        "/environments/production/flags/f/kill",
        serde_json::json!({}),
    )
    .await;
    for stream in [&mut stream_a, &mut stream_b] {
        let patch = stream.next_for("/flags/f").await;
        assert_eq!(patch.data["data"]["on"], false);
    }
    println!("the kill reached both streams in {:?}", started.elapsed());
    for server in [&a, &b] {
        let (_, body) = evaluate(&client, &server.url(), &key, "f").await;
        assert_eq!(body["reason"]["killed"], true, "{body}");
    }
    admin(
        b.url(),
        reqwest::Method::DELETE,
        "/environments/production/flags/f/kill",
        serde_json::json!({}),
    )
    .await;
    for stream in [&mut stream_a, &mut stream_b] {
        let patch = stream.next_for("/flags/f").await;
        assert_eq!(patch.data["data"]["on"], true, "unkill restores the flag");
    }
    for server in [&a, &b] {
        let (_, body) = evaluate(&client, &server.url(), &key, "f").await;
        assert_eq!(body["value"], true, "{body}");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_serving_and_recovery_catches_up() {
    let cluster = PgCluster::start_new();
    let store = open(&cluster.url()).await;
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    let server = start_on(&cluster.url()).await;
    let (client, base) = (reqwest::Client::new(), server.url());
    let mut stream = Stream::open(&client, &base, &key).await;
    stream.next().await;
    assert_eq!(readyz(&client, &base).await["status"], "SERVING");

    cluster.stop();
    until("DEGRADED while the database is down", || async {
        readyz(&client, &base).await["status"] == "DEGRADED"
    })
    .await;
    let ready = readyz(&client, &base).await;
    assert!(ready["secondsSinceLastContact"].is_u64(), "{ready}");
    assert!(
        ready["consecutiveFailures"].as_u64().unwrap() >= 3,
        "{ready}"
    );
    let (status, body) = evaluate(&client, &base, &key, "f").await;
    assert_eq!(status, 200, "evaluation keeps answering: {body}");
    assert_eq!(body["value"], true, "with the last data: {body}");

    cluster.start();
    // Written as soon as the database is back, likely before the replica has reconnected: it
    // must arrive through the catch-up.
    let writer = open(&cluster.url()).await;
    put_flag(&*writer, "production", "f", bool_flag("f", false)).await;
    let patch = stream.next_for("/flags/f").await;
    assert_eq!(patch.data["data"]["fallthrough"]["variation"], 1);
    until("SERVING after recovery", || async {
        readyz(&client, &base).await["status"] == "SERVING"
    })
    .await;
    // And a change once it is following again.
    writer
        .set_killed(&actor(), "production", "f", true)
        .await
        .unwrap();
    let patch = stream.next_for("/flags/f").await;
    assert_eq!(patch.data["data"]["on"], false);
    let (_, body) = evaluate(&client, &base, &key, "f").await;
    assert_eq!(body["reason"]["killed"], true, "{body}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_the_database_is_down_serves_once_it_appears() {
    let cluster = PgCluster::start_new();
    let store = open(&cluster.url()).await;
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    drop(store);
    cluster.stop();

    // The start does not fail: the server answers, not ready, and keeps trying.
    let server = start_on(&cluster.url()).await;
    let (client, base) = (reqwest::Client::new(), server.url());
    let response = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let ready: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(ready["status"], "CONNECTING", "{ready}");
    let (status, body) = evaluate(&client, &base, &key, "f").await;
    assert_ne!(status, 200, "nothing is served yet: {body}");

    cluster.start();
    until("SERVING once the database is up", || async {
        readyz(&client, &base).await["status"] == "SERVING"
    })
    .await;
    let (status, body) = evaluate(&client, &base, &key, "f").await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, serde_json::json!(true)),
        "{body}"
    );

    // And it follows changes from then on.
    let writer = open(&cluster.url()).await;
    put_flag(&*writer, "production", "f", bool_flag("f", false)).await;
    until("the write after recovery", || async {
        evaluate(&client, &base, &key, "f").await.1["value"] == false
    })
    .await;
    server.shutdown().await.unwrap();
}

/// The label sets of a `/metrics` scrape: counter values grow in digits, the series must not.
async fn metric_series(client: &reqwest::Client, base: &str) -> std::collections::BTreeSet<String> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(labels, _)| labels)
                .to_owned()
        })
        .collect()
}

/// Unauthenticated clients choose every method, path, key, environment and flag name they send
/// to a root-mode server; none of it may become a metric label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_the_same_size_whatever_unauthenticated_clients_send() {
    let db = postgres().create_database();
    let store = open(db.url()).await;
    let key = env_with_key(&*store, "production").await;
    put_flag(&*store, "production", "f", bool_flag("f", true)).await;
    let server = start_on(db.url()).await;
    let (client, base) = (reqwest::Client::new(), server.url());
    let context = r#"{"context":{"kind":"user","key":"u"}}"#;
    let round = |i: usize| {
        let odd = reqwest::Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        let wrong_sdk = format!("sdk-wrong-{i}");
        let wrong_admin = format!("Bearer flagd-admin-{i:064}");
        vec![
            (
                reqwest::Method::POST,
                format!("/v1/evaluate/f{i}"),
                wrong_sdk.clone(),
            ),
            (
                reqwest::Method::POST,
                "/v1/evaluate".to_owned(),
                wrong_sdk.clone(),
            ),
            (
                reqwest::Method::POST,
                format!("/ofrep/v1/evaluate/flags/x{i}"),
                wrong_sdk.clone(),
            ),
            (
                reqwest::Method::GET,
                "/sdk/latest-all".to_owned(),
                wrong_sdk.clone(),
            ),
            (reqwest::Method::GET, "/all".to_owned(), wrong_sdk.clone()),
            (
                reqwest::Method::GET,
                format!("/api/v1/environments/e{i}/flags/f{i}"),
                wrong_admin.clone(),
            ),
            (
                reqwest::Method::GET,
                format!("/api/v1/nothing/{i}"),
                wrong_admin.clone(),
            ),
            (odd.clone(), "/api/v1/environments".to_owned(), wrong_admin),
            (odd, format!("/no/such/{i}"), String::new()),
            (
                reqwest::Method::POST,
                format!("/v1/evaluate/f{i}"),
                key.clone(),
            ),
        ]
    };
    let send_round = |i: usize| {
        let (client, base) = (client.clone(), base.clone());
        let requests = round(i);
        async move {
            for (method, path, auth) in requests {
                let mut request = client.request(method, format!("{base}{path}"));
                if !auth.is_empty() {
                    request = request.header("authorization", auth);
                }
                let response = request
                    .header("content-type", "application/json")
                    .body(context)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    response.status().as_u16() < 500 || response.status().as_u16() == 503,
                    "{path}: {}",
                    response.status()
                );
            }
        }
    };
    for i in 0..20 {
        send_round(i).await;
    }
    // The scrape counts itself: its own series exists from the second scrape on.
    metric_series(&client, &base).await;
    let after_a_few = metric_series(&client, &base).await;
    for i in 20..420 {
        send_round(i).await;
    }
    let after_many = metric_series(&client, &base).await;
    let new: Vec<_> = after_many.difference(&after_a_few).collect();
    assert!(
        new.is_empty(),
        "{} new series from client input, such as {:?}",
        new.len(),
        &new[..new.len().min(3)]
    );
    let size: usize = after_many.iter().map(String::len).sum();
    assert!(size < 64 * 1024, "{size} bytes of series");
    server.shutdown().await.unwrap();
}
