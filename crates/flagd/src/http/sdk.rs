//! The LaunchDarkly server-side SDK endpoints, so official SDKs can point their `base_uri`,
//! `stream_uri` and `events_uri` at flagd: `GET /sdk/latest-all` (polling), `GET /all` (SSE
//! streaming), `POST /bulk` and `POST /diagnostic` (analytics events).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::broadcast::{Receiver, error::RecvError};

use super::auth::EnvOf;
use super::error::{ApiError, parse_json_body};
use super::{etag_matches, not_modified};
use crate::engine::Snapshot;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::{Batch, Store};
use flags_wire::file::type_name as file_type_name;

/// `GET /sdk/latest-all`: every flag and segment, with an ETag of the data.
pub(super) async fn latest_all(EnvOf(env): EnvOf, headers: HeaderMap) -> Response {
    let Some(snapshot) = env.store.snapshot() else {
        return ApiError::not_ready().into_response();
    };
    let etag = format!("\"{}\"", snapshot.digest());
    if etag_matches(&headers, &etag) {
        return not_modified(&etag);
    }
    let mut response = snapshot.latest_all().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

/// `GET /all`: a `put` of all data, then a `patch` or `delete` per changed item. A stream that
/// falls more than the buffer behind gets a fresh `put` instead of the changes it missed, so a
/// slow client costs a bounded amount of memory. The stream ends when the server shuts down.
///
/// The `put` is the snapshot's own rendering, sent as it is: a stream costs no copy of the data,
/// however big, and a thousand streams share one.
pub(super) async fn stream(State(state): State<AppState>, EnvOf(env): EnvOf) -> Response {
    // Past the cap a client is told to come back, rather than every stream getting slower.
    let Ok(permit) = Arc::clone(&state.streams).try_acquire_owned() else {
        return ApiError::too_many_streams(state.http.retry_after_secs).into_response();
    };
    // Subscribe before reading the snapshot so no change can fall between the two.
    let changes = env.store.subscribe();
    let mut queue = VecDeque::new();
    let mut sent = None;
    if let Some(snapshot) = env.store.snapshot() {
        queue.push_back(put_frame(&snapshot));
        sent = Some(snapshot.generation());
    }
    state.metrics.stream_opened();
    let follower = Follower {
        _permit: permit,
        changes,
        store: Arc::clone(&env.store),
        metrics: Arc::clone(&state.metrics),
        sent,
        queue,
        batch: None,
    };
    let shutdown = state.shutdown.clone();
    let frames = follower
        .into_stream(state.http.stream_keepalive())
        .take_until(async move { shutdown.wait().await })
        .flat_map(futures_util::stream::iter)
        .map(Ok::<Bytes, Infallible>);
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Ask reverse proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One SSE frame, as the chunks of bytes it is sent in.
type Frame = Vec<Bytes>;

/// The comment sent when a stream has been quiet for the keep-alive interval.
const KEEP_ALIVE: &[u8] = b": \n\n";

/// A `put` up to this size goes out as one chunk, copied: as cheap as sharing, and one write.
const SMALL_PUT: usize = 64 * 1024;

/// The `put` of `snapshot`: its rendered data between the frame's field names and its end.
fn put_frame(snapshot: &Snapshot) -> Frame {
    const HEAD: &[u8] = b"event: put\ndata: ";
    const TAIL: &[u8] = b"\n\n";
    // Rendered JSON has no line breaks (strings escape them), so the data is one `data:` line.
    let data = snapshot.put_event_bytes();
    if data.len() <= SMALL_PUT {
        let mut frame = Vec::with_capacity(HEAD.len() + data.len() + TAIL.len());
        frame.extend_from_slice(HEAD);
        frame.extend_from_slice(&data);
        frame.extend_from_slice(TAIL);
        return vec![Bytes::from(frame)];
    }
    vec![Bytes::from_static(HEAD), data, Bytes::from_static(TAIL)]
}

/// A frame of event `event` with `data`, one `data:` line per line of it.
fn event_frame(event: &str, data: &str) -> Frame {
    let mut out = Vec::with_capacity(data.len() + event.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.push(b'\n');
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    vec![Bytes::from(out)]
}

/// One stream's position in the change feed.
struct Follower {
    /// The stream's place under the cap, given back when the stream ends.
    _permit: tokio::sync::OwnedSemaphorePermit,
    changes: Receiver<Arc<Batch>>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// Generation of the data the client has (None until the first `put`).
    sent: Option<u64>,
    queue: VecDeque<Frame>,
    /// The batch of changes being sent, and the index of its next event. Each event is framed
    /// only when the connection can take it, so a stream that is not read holds a reference to
    /// one shared batch, not its own copy of every event.
    batch: Option<(Arc<Batch>, usize)>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.metrics.stream_closed();
    }
}

impl Follower {
    /// The stream's frames, with a keep-alive comment whenever none came for `keep_alive`.
    fn into_stream(self, keep_alive: Duration) -> impl Stream<Item = Frame> + Send {
        futures_util::stream::unfold(self, move |mut follower| async move {
            // `next_frame` only waits in `recv`, which loses nothing when cancelled.
            let frame = match tokio::time::timeout(keep_alive, follower.next_frame()).await {
                Ok(frame) => frame?,
                Err(_) => vec![Bytes::from_static(KEEP_ALIVE)],
            };
            Some((frame, follower))
        })
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Some(frame);
            }
            if let Some((batch, next)) = &mut self.batch {
                if let Some(item) = batch.events.get(*next) {
                    *next += 1;
                    return Some(event_frame(item.event, &item.data));
                }
                self.batch = None;
            }
            match self.changes.recv().await {
                // A reset may go back in generations (data from the source replacing data
                // read from Redis at start): it always starts the stream again.
                Ok(batch) if batch.reset => self.resync(),
                Ok(batch) => match self.sent {
                    Some(generation) if batch.generation <= generation => {}
                    Some(_) => {
                        self.sent = Some(batch.generation);
                        self.batch = Some((batch, 0));
                    }
                    None => self.resync(),
                },
                Err(RecvError::Lagged(_)) => {
                    self.metrics.stream_resync();
                    self.resync();
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Queues a `put` of the current data.
    fn resync(&mut self) {
        // Skip whatever is still queued for this stream: the put contains it. Left in place, those
        // stale batches would keep the buffer full and make the very next change lag again.
        // Resubscribing before reading the snapshot keeps the subscribe-then-read order.
        self.changes = self.changes.resubscribe();
        self.batch = None;
        if let Some(snapshot) = self.store.snapshot() {
            self.queue.push_back(put_frame(&snapshot));
            self.sent = Some(snapshot.generation());
        }
    }
}

/// `POST /bulk`: a JSON array of analytics events in LaunchDarkly's format (plus flagd SDKs'
/// `metrics` events), checked whole and handed to the exporters of the key's environment. A
/// payload with one bad event is refused whole, naming the event and the field, so that
/// nothing is half-kept.
pub(super) async fn bulk_events(
    State(state): State<AppState>,
    EnvOf(env): EnvOf,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(rejection) => return ApiError::from_body_rejection(&rejection).into_response(),
    };
    let events = match flags_events::parse_bulk(&bytes) {
        Ok(events) => events,
        Err(flags_events::EventError::Json(detail)) => {
            return ApiError::invalid_json(detail).into_response();
        }
        Err(e) => return ApiError::invalid_request(e.to_string()).into_response(),
    };
    // Count only once the whole payload is known to be valid, so a rejected payload counts nothing.
    for event in &events {
        state.metrics.event_received(event.kind());
    }
    state.events.bulk(&env.key, events).await;
    StatusCode::ACCEPTED.into_response()
}

/// `POST /diagnostic`: one diagnostic event object (`kind` `diagnostic-init` or `diagnostic`).
pub(super) async fn diagnostic_event(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let value = match parse_json_body(body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let Value::Object(event) = &value else {
        return ApiError::invalid_request(format!(
            "expected a diagnostic event object, found {}",
            file_type_name(&value)
        ))
        .into_response();
    };
    match event.get("kind") {
        Some(Value::String(kind)) => state.metrics.event_received(kind),
        Some(other) => {
            return ApiError::invalid_request(format!(
                "kind: expected a string, found {}",
                file_type_name(other)
            ))
            .into_response();
        }
        None => return ApiError::invalid_request("kind: missing").into_response(),
    }
    StatusCode::ACCEPTED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ItemEvent, Snapshot};

    /// A stream holds the batch it is sending and frames one event each time its connection
    /// asks: a client that does not read costs no copy of the batch.
    #[tokio::test]
    async fn a_stream_frames_a_batch_one_event_at_a_time() {
        let store = Arc::new(Store::new(4));
        let snapshot = |generation| Snapshot::from_models(Default::default(), generation).unwrap();
        store.publish(snapshot(1), Vec::new());
        let mut follower = Follower {
            _permit: Arc::new(tokio::sync::Semaphore::new(1))
                .try_acquire_owned()
                .unwrap(),
            changes: store.subscribe(),
            store: Arc::clone(&store),
            metrics: Arc::new(Metrics::new()),
            sent: Some(1),
            queue: VecDeque::new(),
            batch: None,
        };
        let events: Vec<ItemEvent> = (0..1000)
            .map(|i| ItemEvent {
                event: "patch",
                data: format!(r#"{{"path":"/flags/f{i}","data":{{}}}}"#),
            })
            .collect();
        store.publish(snapshot(2), events);

        let first = follower.next_frame().await.unwrap();
        assert_eq!(
            first.concat(),
            b"event: patch\ndata: {\"path\":\"/flags/f0\",\"data\":{}}\n\n".to_vec()
        );
        assert!(
            follower.queue.is_empty(),
            "no event framed ahead of the connection"
        );
        let (batch, next) = follower.batch.as_ref().unwrap();
        assert_eq!((batch.events.len(), *next), (1000, 1));

        for i in 1..1000 {
            let frame = follower.next_frame().await.unwrap().concat();
            assert!(
                String::from_utf8(frame)
                    .unwrap()
                    .contains(&format!("/flags/f{i}\""))
            );
        }
        assert_eq!(follower.sent, Some(2));
    }
}
