//! The streaming data source against a scripted server: each connection gets the answer the
//! test gives it, so drops, silences, error statuses and unreadable data can be made on purpose.

#![allow(clippy::unwrap_used)]

use flags_test_support::wait::until;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flags_sdk::{
    Client, Context, DataSource, DataSourceErrorKind, DataSourceState, DataUpdate, PollingFallback,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one connection.
#[derive(Clone)]
enum Answer {
    /// Answer 200 with these SSE bytes, then keep the connection open and silent.
    Events(String),
    /// Answer with this status and no body.
    Status(u16),
    /// Answer 200 with this JSON body, as `/sdk/latest-all` does, and close.
    Json(String),
}

/// A server that answers its n-th connection with the n-th scripted answer (the last one
/// repeats), and records each request's head.
struct Script {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn serve(answers: Vec<Answer>) -> Script {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let answer = answers[n.min(answers.len() - 1)].clone();
            n += 1;
            tokio::spawn(answer_one(socket, answer, Arc::clone(&seen)));
        }
    });
    Script { url, requests }
}

async fn answer_one(mut socket: TcpStream, answer: Answer, seen: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let Ok(n) = socket.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        head.extend_from_slice(&buf[..n]);
    }
    seen.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&head).into_owned());
    match answer {
        Answer::Status(code) => {
            let reply =
                format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = socket.write_all(reply.as_bytes()).await;
        }
        Answer::Json(body) => {
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
        Answer::Events(body) => {
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n{body}"
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            // Silent from here on; the client decides when this stream is dead.
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    }
}

/// What a data hook was told changed: key, version, deleted.
type Changes = Vec<(String, u64, bool)>;

fn put(value: bool, version: u64) -> String {
    let data = json!({"path": "/", "data": {"flags": {"f": {
        "key": "f", "version": version, "on": true, "variations": [false, true],
        "fallthrough": {"variation": usize::from(value)}}}, "segments": {}}});
    format!("event: put\ndata: {data}\n\n")
}

fn patch(value: bool, version: u64) -> String {
    let data = json!({"path": "/flags/f", "data": {
        "key": "f", "version": version, "on": true, "variations": [false, true],
        "fallthrough": {"variation": usize::from(value)}}});
    format!("event: patch\ndata: {data}\n\n")
}

fn streaming(url: &str, read_timeout: Duration) -> Client {
    Client::builder("secret-key")
        .base_url(url)
        .data_source(DataSource::Streaming {
            initial_reconnect_delay: Duration::from_millis(20),
            read_timeout,
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn put_patch_and_delete_are_applied_in_order_with_the_key_presented() {
    let delete = "event: delete\ndata: {\"path\":\"/flags/f\",\"version\":9}\n\n";
    let script = serve(vec![Answer::Events(format!(
        ": a comment\n\n{}{}{}{}",
        put(false, 1),
        patch(true, 2),
        // Stale: not newer than what the client holds, so it changes nothing.
        patch(false, 1),
        delete,
    ))])
    .await;
    let client = Client::builder("secret-key")
        .base_url(&script.url)
        .data_source(DataSource::streaming())
        .build()
        .unwrap();
    // Registered before the client's task first runs (this test's runtime has one thread).
    let user = Context::user("u").unwrap();
    let mut changes = client.flag_tracker().add_flag_change_listener();
    let mut values =
        client
            .flag_tracker()
            .add_flag_value_change_listener("f", user.clone(), json!("default"));
    assert!(client.wait_for_initialization(Duration::from_secs(5)).await);
    // Two changes of f, the patch and the delete, in that order; the stale patch is not one.
    for _ in 0..2 {
        let change = tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(change.key, "f");
    }
    let detail = client.bool_variation_detail(&user, "f", false);
    assert_eq!(
        detail.reason,
        flags_sdk::Reason::Error {
            error_kind: flags_sdk::ErrorKind::FlagNotFound
        }
    );
    // The put, the patch, and the delete (a deleted flag gives the default).
    let mut seen = Vec::new();
    for _ in 0..3 {
        let change = tokio::time::timeout(Duration::from_secs(5), values.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push((change.old_value, change.new_value));
    }
    assert_eq!(
        seen,
        [
            (json!("default"), json!(false)),
            (json!(false), json!(true)),
            (json!(true), json!("default")),
        ]
    );
    assert_eq!(changes.try_recv(), Ok(None));
    assert_eq!(values.try_recv(), Ok(None));
    let head = script.requests.lock().unwrap()[0].to_lowercase();
    assert!(head.starts_with("get /all "), "{head}");
    assert!(head.contains("authorization: secret-key"), "{head}");
    assert!(head.contains("accept: text/event-stream"), "{head}");
}

#[tokio::test]
async fn a_silent_stream_is_dropped_and_the_next_put_replaces_everything() {
    let script = serve(vec![
        Answer::Events(put(false, 1)),
        Answer::Events(put(true, 2)),
    ])
    .await;
    let client = streaming(&script.url, Duration::from_millis(300));
    let status = client.data_source_status_provider();
    let mut statuses = status.add_status_listener();
    assert!(client.wait_for_initialization(Duration::from_secs(5)).await);
    let user = Context::user("u").unwrap();
    assert!(!client.bool_variation(&user, "f", true));
    // No bytes for the read timeout: interrupted, reconnected, and the second put serves.
    let mut saw_interrupted = false;
    while let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(5), statuses.recv()).await {
        if s.state == DataSourceState::Interrupted {
            saw_interrupted = true;
            let error = s.last_error.unwrap();
            assert_eq!(error.kind, DataSourceErrorKind::NetworkError);
            assert!(error.message.contains("no data"), "{}", error.message);
        }
        if saw_interrupted && s.state == DataSourceState::Valid {
            break;
        }
    }
    assert!(saw_interrupted);
    assert!(client.bool_variation(&user, "f", false));
    assert_eq!(script.requests.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_and_a_rejected_key_stops_for_good() {
    let script = serve(vec![
        Answer::Status(503),
        Answer::Status(500),
        Answer::Events(put(true, 1)),
    ])
    .await;
    let client = streaming(&script.url, Duration::from_secs(60));
    assert!(client.wait_for_initialization(Duration::from_secs(5)).await);
    assert_eq!(script.requests.lock().unwrap().len(), 3);
    let last = client.data_source_status_provider().status();
    assert_eq!(last.state, DataSourceState::Valid);
    assert_eq!(last.last_error.unwrap().status_code, Some(500));

    let rejected = serve(vec![Answer::Status(401)]).await;
    let client = streaming(&rejected.url, Duration::from_secs(60));
    let started = std::time::Instant::now();
    assert!(!client.wait_for_initialization(Duration::from_secs(5)).await);
    assert!(started.elapsed() < Duration::from_secs(4), "gave up early");
    let status = client.data_source_status_provider().status();
    assert_eq!(status.state, DataSourceState::Off);
    assert_eq!(status.last_error.unwrap().status_code, Some(401));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rejected.requests.lock().unwrap().len(),
        1,
        "no retry after 401"
    );
}

#[tokio::test]
async fn unreadable_data_restarts_the_stream() {
    let script = serve(vec![
        Answer::Events(format!(
            "{}event: patch\ndata: {{not json\n\n",
            put(false, 1)
        )),
        Answer::Events(put(true, 2)),
    ])
    .await;
    let client = streaming(&script.url, Duration::from_secs(60));
    let user = Context::user("u").unwrap();
    until("the second put", || {
        std::future::ready(client.bool_variation(&user, "f", false))
    })
    .await;
    let status = client.data_source_status_provider().status();
    assert_eq!(
        status.last_error.unwrap().kind,
        DataSourceErrorKind::InvalidData
    );
    assert_eq!(script.requests.lock().unwrap().len(), 2);
}

#[test]
fn a_client_built_outside_a_runtime_runs_on_its_own_thread_and_closes_quickly() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let script = runtime.block_on(serve(vec![Answer::Events(put(true, 1))]));
    let client = streaming(&script.url, Duration::from_secs(60));
    assert!(client.wait_for_initialization_blocking(Duration::from_secs(5)));
    assert!(client.bool_variation(&Context::user("u").unwrap(), "f", false));
    let started = std::time::Instant::now();
    client.close();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stream_that_is_down_is_stood_in_for_by_polls_and_hooks_see_every_change() {
    let latest = json!({"flags": {"f": {
        "key": "f", "version": 2, "on": true, "variations": [false, true],
        "fallthrough": {"variation": 1}}}, "segments": {}});
    // The stream brings f = false and goes silent; the poll after its timeout brings f = true;
    // every later connection (stream or poll) is refused with 503.
    let script = serve(vec![
        Answer::Events(put(false, 1)),
        Answer::Json(latest.to_string()),
        Answer::Status(503),
    ])
    .await;
    let seen: Arc<Mutex<Vec<(Changes, bool)>>> = Arc::default();
    let hooked = Arc::clone(&seen);
    let client = Client::builder("secret-key")
        .base_url(&script.url)
        .data_source(DataSource::Streaming {
            initial_reconnect_delay: Duration::from_millis(20),
            read_timeout: Duration::from_millis(300),
        })
        .polling_fallback(PollingFallback {
            interval: Duration::from_secs(60),
            jitter: 0.0,
        })
        .on_data(move |update: &DataUpdate| {
            let changed = update
                .changed
                .iter()
                .map(|c| (c.key.clone(), c.version, c.deleted))
                .collect();
            hooked.lock().unwrap().push((changed, update.replaced));
        })
        .build()
        .unwrap();
    assert!(client.wait_for_initialization(Duration::from_secs(5)).await);
    let user = Context::user("u").unwrap();
    until("the poll's data is served", || {
        let polled = client.bool_variation(&user, "f", false);
        async move { polled }
    })
    .await;
    let status = client.data_source_status_provider();
    // Polls stand in for the stream without saying it is back.
    assert_eq!(status.status().state, DataSourceState::Interrupted);
    assert!(status.last_contact().is_some());
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (vec![("f".to_owned(), 1, false)], true),
            (vec![("f".to_owned(), 2, false)], true),
        ]
    );
    // One poll per interval: the 503s after it are stream attempts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let heads = script.requests.lock().unwrap().clone();
    let polls = heads
        .iter()
        .filter(|h| h.starts_with("GET /sdk/latest-all"))
        .count();
    assert_eq!(polls, 1, "{heads:?}");
    assert!(heads.iter().filter(|h| h.starts_with("GET /all")).count() >= 3);
}

#[tokio::test]
async fn hooks_see_patches_and_deletes_with_the_versions_served() {
    let delete = "event: delete\ndata: {\"path\":\"/flags/f\",\"version\":9}\n\n";
    let script = serve(vec![Answer::Events(format!(
        "{}{}{}{}",
        put(false, 1),
        patch(true, 2),
        // Stale: not newer than what is held, so no hook call.
        patch(false, 1),
        delete,
    ))])
    .await;
    let seen: Arc<Mutex<Vec<(Changes, bool, u64)>>> = Arc::default();
    let hooked = Arc::clone(&seen);
    let client = Client::builder("secret-key")
        .base_url(&script.url)
        .data_source(DataSource::streaming())
        .on_data(move |update: &DataUpdate| {
            let changed = update
                .changed
                .iter()
                .map(|c| (c.key.clone(), c.version, c.deleted))
                .collect();
            let generation = update.snapshot.generation();
            hooked
                .lock()
                .unwrap()
                .push((changed, update.replaced, generation));
        })
        .build()
        .unwrap();
    assert!(client.wait_for_initialization(Duration::from_secs(5)).await);
    until("the delete is applied", || {
        let n = seen.lock().unwrap().len();
        async move { n == 3 }
    })
    .await;
    let f = |version, deleted| vec![("f".to_owned(), version, deleted)];
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (f(1, false), true, 1),
            (f(2, false), false, 2),
            (f(9, true), false, 3)
        ]
    );
}
