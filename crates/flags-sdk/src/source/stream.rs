//! Streaming: flagd's `GET /all`, LaunchDarkly's server-side streaming protocol over SSE.
//!
//! The SSE framing is `eventsource-stream`'s; what is here is the protocol around it: a `put`
//! replaces everything (the first one and the one after every reconnect), `patch` and `delete`
//! change one item; a dropped connection, an error answer, unreadable data, or a request
//! unanswered or a stream silent past the read timeout (flagd sends a comment every 15 s) ends
//! the connection, and the next one is tried after a backoff with jitter. 401 and 403 stop the
//! source for good.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use flags_cache::{Backoff, JitterRng};
use flags_data::Update;
use flags_wire::stream::{Event, ParseError};
use futures_util::StreamExt;

use super::poll::Poller;
use super::{error, is_unrecoverable, sleep_unless_closed};
use crate::inner::Inner;
use crate::status::{DataSourceErrorKind, DataSourceState, ErrorInfo};

/// The name of the stream's connects in the SDK's metrics events (the latency is the time to
/// the answer's head).
const API: &str = "stream";

/// How one connection ended.
enum End {
    /// The client closed.
    Closed,
    /// Retrying cannot help.
    Stop(ErrorInfo),
    /// Try again after a backoff.
    Retry(ErrorInfo),
}

/// Why the byte stream under the events ended.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Http(reqwest::Error),
    #[error("no data for {0:?}")]
    Silent(Duration),
}

/// Where a stream connects, and how long it waits.
pub(super) struct Target {
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) sdk_key: String,
    /// How long the answer's head may take.
    pub(super) answer_timeout: Duration,
    /// How long the stream may stay silent.
    pub(super) read_timeout: Duration,
}

/// Polling while the stream is down ([`crate::PollingFallback`]).
pub(super) struct Fallback {
    pub(super) poller: Poller,
    pub(super) every: Duration,
    pub(super) jitter: f64,
    pub(super) rng: JitterRng,
    /// When the last fallback poll was made, and the wait drawn for the next.
    pub(super) last: Option<(Instant, Duration)>,
}

impl Fallback {
    /// Polls when the last poll is old enough; a failure is logged and left to the stream's
    /// retries (a rejected key stops the stream at its next attempt too).
    async fn poll_if_due(&mut self, inner: &Inner) {
        if let Some((at, wait)) = self.last
            && at.elapsed() < wait
        {
            return;
        }
        let spread = self.every.as_secs_f64() * self.jitter * self.rng.symmetric(1.0);
        let wait = Duration::from_secs_f64((self.every.as_secs_f64() + spread).max(0.0));
        self.last = Some((Instant::now(), wait));
        match self.poller.poll(inner).await {
            Ok(()) => tracing::debug!(url = self.poller.url, "polled while the stream is down"),
            Err((e, _)) => tracing::warn!(
                url = self.poller.url,
                "poll while the stream is down failed: {}",
                e.message
            ),
        }
    }
}

pub(super) async fn run(
    target: Target,
    backoff: Backoff,
    mut fallback: Option<Fallback>,
    inner: Arc<Inner>,
) {
    let mut failures = 0u32;
    loop {
        let end = connect(&target, &inner, &mut failures).await;
        let url = &target.url;
        match end {
            End::Closed => return,
            End::Stop(e) => {
                tracing::error!(url, "streaming stopped: {}", e.message);
                inner.give_up(e);
                return;
            }
            End::Retry(e) => {
                tracing::warn!(url, "stream interrupted: {}", e.message);
                inner.report(DataSourceState::Interrupted, Some(e));
            }
        }
        if let Some(fallback) = &mut fallback {
            fallback.poll_if_due(&inner).await;
        }
        failures = failures.saturating_add(1);
        if !sleep_unless_closed(&inner, backoff.delay(failures)).await {
            return;
        }
    }
}

/// One connection, from the request to its end.
async fn connect(target: &Target, inner: &Inner, failures: &mut u32) -> End {
    let Target {
        http,
        url,
        sdk_key,
        answer_timeout,
        read_timeout,
    } = target;
    let (url, read_timeout, answer_timeout) = (url.as_str(), *read_timeout, *answer_timeout);
    let mut closed = inner.closed();
    if *closed.borrow() {
        return End::Closed;
    }
    // The wait for the answer is bounded too (by the fetch timeout, at most the read
    // timeout): a server (or a proxy in front of it) that accepts the connection and never
    // answers would otherwise hold the source here for good, never retrying.
    let request = tokio::time::timeout(
        answer_timeout,
        http.get(url)
            .header("authorization", sdk_key)
            .header("accept", "text/event-stream")
            .send(),
    );
    let started = Instant::now();
    let response = tokio::select! {
        response = request => response,
        _ = closed.wait_for(|c| *c) => return End::Closed,
    };
    if let Some(events) = &inner.events {
        match &response {
            Ok(Ok(_)) => events.push_latency_metrics(API, started.elapsed()),
            Ok(Err(e)) if !e.is_timeout() => events.push_internal_error_metrics(API),
            _ => events.push_timeout_error_metrics(API),
        }
    }
    let response = match response {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return End::Retry(error(
                DataSourceErrorKind::NetworkError,
                None,
                e.to_string(),
            ));
        }
        Err(_) => {
            let message = format!("no answer within {answer_timeout:?}");
            return End::Retry(error(DataSourceErrorKind::NetworkError, None, message));
        }
    };
    let status = response.status();
    if !status.is_success() {
        let e = error(
            DataSourceErrorKind::ErrorResponse,
            Some(status.as_u16()),
            format!("{url} answered {status}"),
        );
        return if is_unrecoverable(status.as_u16()) {
            End::Stop(e)
        } else {
            End::Retry(e)
        };
    }
    inner.status.contact();
    let bytes = Box::pin(response.bytes_stream());
    let timed = futures_util::stream::unfold(Some(bytes), move |state| async move {
        let mut bytes = state?;
        match tokio::time::timeout(read_timeout, bytes.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(ReadError::Http), Some(bytes))),
            Ok(None) => None,
            // Reported once; the stream ends after it.
            Err(_) => Some((Err(ReadError::Silent(read_timeout)), None)),
        }
    });
    let mut events = Box::pin(timed.eventsource());
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = closed.wait_for(|c| *c) => return End::Closed,
        };
        let event = match next {
            None => {
                return End::Retry(error(
                    DataSourceErrorKind::NetworkError,
                    None,
                    "the stream ended".to_owned(),
                ));
            }
            Some(Err(e)) => {
                return End::Retry(error(
                    DataSourceErrorKind::NetworkError,
                    None,
                    e.to_string(),
                ));
            }
            Some(Ok(event)) => event,
        };
        inner.status.contact();
        let outcome = match flags_wire::stream::parse(&event.event, &event.data) {
            Ok(Event::Put(data)) => inner.put(data).map(|()| *failures = 0),
            Ok(Event::PatchFlag(flag)) => inner.apply(vec![Update::Flag(flag)]),
            Ok(Event::PatchSegment(segment)) => inner.apply(vec![Update::Segment(segment)]),
            Ok(Event::Delete { kind, key, version }) => inner.apply(vec![match kind {
                flags_core::ItemKind::Flag => Update::DeleteFlag { key, version },
                flags_core::ItemKind::Segment => Update::DeleteSegment { key, version },
            }]),
            // Events of later protocol versions are not for this client.
            Err(ParseError::UnknownEvent(_) | ParseError::UnknownPath(_)) => Ok(()),
            Ok(_) => Ok(()),
            Err(e) => {
                // As LaunchDarkly's SDKs do: data that cannot be read restarts the stream, whose
                // fresh `put` brings everything again.
                return End::Retry(error(
                    DataSourceErrorKind::InvalidData,
                    None,
                    format!("unreadable {} event: {e}", event.event),
                ));
            }
        };
        if let Err(e) = outcome {
            return End::Retry(error(DataSourceErrorKind::InvalidData, None, e.to_string()));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::{Client, DataSource, DataSourceErrorKind, DataSourceState};

    /// A server that accepts connections and never answers; returns its address and the
    /// connections it has accepted, held open.
    fn black_hole() -> (String, Arc<Mutex<Vec<std::net::TcpStream>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let held = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&held);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                kept.lock().unwrap().push(stream);
            }
        });
        (addr, held)
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_on_after_the_read_timeout() {
        let (addr, held) = black_hole();
        let client = Client::builder("key")
            .base_url(&format!("http://{addr}"))
            .data_source(DataSource::Streaming {
                initial_reconnect_delay: Duration::from_millis(10),
                read_timeout: Duration::from_millis(100),
            })
            .build()
            .unwrap();
        let provider = client.data_source_status_provider();
        let error = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(error) = provider.status().last_error {
                    return error;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a request without an answer is never given up on");
        assert_eq!(error.kind, DataSourceErrorKind::NetworkError);
        assert_eq!(error.message, "no answer within 100ms");
        assert_eq!(provider.status().state, DataSourceState::Initializing);
        // And it tries again.
        tokio::time::timeout(Duration::from_secs(10), async {
            while held.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a second connection");
        client.close();
    }
}
