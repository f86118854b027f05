//! The webhook exporter, against a receiver each test runs on a loopback port.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use flags_events::Record;
use flags_export::webhook::{DELIVERY_HEADER, SIGNATURE_HEADER};
use flags_export::{ExportError, Exporter, WebhookExporter, WebhookSettings};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::records::{batch, retryable};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Request {
    headers: HeaderMap,
    body: Bytes,
}

/// What the receiver answers, in turn (then 200 for ever), and what it got: every request,
/// and the bodies it accepted.
#[derive(Default)]
struct Receiver {
    answers: VecDeque<StatusCode>,
    delay: Duration,
    requests: Vec<Request>,
    accepted: Vec<Bytes>,
}

type Shared = Arc<Mutex<Receiver>>;

async fn receive(State(receiver): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = receiver.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let mut receiver = receiver.lock().unwrap();
    receiver.requests.push(Request {
        headers,
        body: body.clone(),
    });
    let status = receiver.answers.pop_front().unwrap_or(StatusCode::OK);
    // Only what it answered 2xx to counts as delivered: a failed attempt delivers nothing.
    if status.is_success() {
        receiver.accepted.push(body);
    }
    status
}

/// Starts a receiver that answers `answers` in turn, then 200; returns its URL.
async fn start(answers: &[u16], delay: Duration) -> (String, Shared) {
    let receiver: Shared = Arc::new(Mutex::new(Receiver {
        answers: answers
            .iter()
            .map(|&code| StatusCode::from_u16(code).unwrap())
            .collect(),
        delay,
        ..Receiver::default()
    }));
    let app = Router::new()
        .route("/hook/{token}", post(receive))
        .with_state(Arc::clone(&receiver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook/path-token"), receiver)
}

/// Exports `records` as the scheduler would: again while the failure is retryable, at most
/// `attempts` times; returns the last outcome and the number of attempts made.
async fn export_with_retries(
    exporter: &WebhookExporter,
    records: &[Record],
    attempts: usize,
) -> (Result<(), ExportError>, usize) {
    let mut outcome = Ok(());
    for attempt in 1..=attempts {
        outcome = exporter.export(records).await;
        match &outcome {
            Err(e) if e.is_retryable() => continue,
            _ => return (outcome, attempt),
        }
    }
    (outcome, attempts)
}

fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(bytes) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex.chars().all(|c| !c.is_ascii_uppercase()) && mac.verify_slice(&bytes).is_ok()
}

#[tokio::test]
async fn a_receiver_that_fails_at_first_gets_every_event_once_signed() {
    let (url, receiver) = start(&[503, 500, 429, 408], Duration::ZERO).await;
    let secret = "It's a Secret to Everybody";
    let exporter = WebhookExporter::new(WebhookSettings {
        secret: Some(secret.to_owned()),
        meta: BTreeMap::from([
            ("environment".to_owned(), "production".to_owned()),
            ("instance".to_owned(), "flagd-1".to_owned()),
        ]),
        headers: BTreeMap::from([("Authorization".to_owned(), "Bearer t0ken".to_owned())]),
        ..WebhookSettings::new(&url)
    })
    .unwrap();
    assert!(!exporter.is_bulk());
    assert!(
        !exporter.name().contains("path-token"),
        "{}",
        exporter.name()
    );
    let records = batch();

    let (outcome, attempts) = export_with_retries(&exporter, &records, 10).await;
    outcome.unwrap();
    assert_eq!(attempts, 5);

    let receiver = receiver.lock().unwrap();
    assert_eq!(receiver.requests.len(), 5);
    assert_eq!(
        receiver.accepted.len(),
        1,
        "only the successful attempt delivered"
    );
    let body: Value = serde_json::from_slice(&receiver.accepted[0]).unwrap();
    assert_eq!(
        body["meta"],
        serde_json::json!({"environment": "production", "instance": "flagd-1"})
    );
    let events: Vec<Record> = serde_json::from_value(body["events"].clone()).unwrap();
    assert_eq!(events, records, "every event once, as written");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["events", "meta"]);

    let delivery = hex_sha256(&receiver.accepted[0]);
    for request in &receiver.requests {
        let header = |name: &str| request.headers[name].to_str().unwrap();
        assert!(verify(secret, &request.body, header(SIGNATURE_HEADER)));
        assert!(!verify(
            "another secret",
            &request.body,
            header(SIGNATURE_HEADER)
        ));
        // Every attempt carries the same body, so the same delivery key.
        assert_eq!(request.body, receiver.accepted[0]);
        assert_eq!(header(DELIVERY_HEADER), delivery);
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(header("authorization"), "Bearer t0ken");
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn each_answer_is_sorted_by_what_a_retry_can_change() {
    let cases = [
        (200, None),
        (204, None),
        (408, Some(true)),
        (429, Some(true)),
        (500, Some(true)),
        (502, Some(true)),
        (503, Some(true)),
        (400, Some(false)),
        (401, Some(false)),
        (403, Some(false)),
        (404, Some(false)),
        (413, Some(false)),
        (422, Some(false)),
        (302, Some(false)),
    ];
    for (code, expected) in cases {
        let (url, receiver) = start(&[code], Duration::ZERO).await;
        let exporter = WebhookExporter::new(WebhookSettings::new(url)).unwrap();
        let outcome = exporter.export(&batch()).await;
        assert_eq!(retryable(&outcome), expected, "{code}: {outcome:?}");
        let receiver = receiver.lock().unwrap();
        assert_eq!(
            receiver.requests.len(),
            1,
            "{code}: one request, no retry inside"
        );
        assert!(
            !receiver.requests[0].headers.contains_key(SIGNATURE_HEADER),
            "no secret, no signature"
        );
    }
}

#[tokio::test]
async fn a_receiver_too_slow_or_not_there_is_retryable() {
    let (url, _receiver) = start(&[], Duration::from_secs(5)).await;
    let slow = WebhookExporter::new(WebhookSettings {
        timeout_ms: 200,
        ..WebhookSettings::new(url)
    })
    .unwrap();
    let outcome = slow.export(&batch()).await;
    assert_eq!(retryable(&outcome), Some(true), "{outcome:?}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    let nobody = WebhookExporter::new(WebhookSettings::new(closed)).unwrap();
    let outcome = nobody.export(&batch()).await;
    assert_eq!(retryable(&outcome), Some(true), "{outcome:?}");
    let message = outcome.unwrap_err().to_string();
    assert!(!message.contains("/hook"), "{message}");
}
