//! Polling: flagd's `GET /sdk/latest-all` at an interval, with `If-None-Match`, so an unchanged
//! answer is a 304 with no body. Each 200 replaces everything.

use std::sync::Arc;
use std::time::Duration;

use super::{error, is_unrecoverable, sleep_unless_closed};
use crate::inner::Inner;
use crate::status::{DataSourceErrorKind, DataSourceState, ErrorInfo};

/// The name of polling's calls in the SDK's metrics events.
const API: &str = "poll";

/// Counts a failed poll in the metrics events: a timeout, or another error.
fn measure_failure(inner: &Inner, error: &reqwest::Error) {
    if let Some(events) = &inner.events {
        if error.is_timeout() {
            events.push_timeout_error_metrics(API);
        } else {
            events.push_internal_error_metrics(API);
        }
    }
}

pub(super) async fn run(mut poller: Poller, interval: Duration, inner: Arc<Inner>) {
    loop {
        match poller.poll(&inner).await {
            // A 200 made the source valid as its data went in; a 304 says the data held is
            // still current, which is valid too (and recovers an interrupted source).
            Ok(()) => inner.report(DataSourceState::Valid, None),
            Err((e, stop)) => {
                if stop {
                    tracing::error!(url = poller.url, "polling stopped: {}", e.message);
                    inner.give_up(e);
                    return;
                }
                tracing::warn!(url = poller.url, "poll failed: {}", e.message);
                inner.report(DataSourceState::Interrupted, Some(e));
            }
        }
        if !sleep_unless_closed(&inner, interval).await {
            return;
        }
    }
}

/// Polls of one URL, remembering the last answer's `ETag`.
pub(super) struct Poller {
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) sdk_key: String,
    /// How long one poll may take, answer and body together: a server that accepts and never
    /// answers fails the poll instead of stopping polling for good.
    pub(super) timeout: Duration,
    etag: Option<String>,
    /// Polls stand in for a stream that is down: their data goes in, but the source stays
    /// as the stream left it (interrupted), so the state does not flap at every attempt.
    fallback: bool,
}

impl Poller {
    pub(super) fn new(
        http: reqwest::Client,
        url: String,
        sdk_key: String,
        timeout: Duration,
    ) -> Poller {
        Poller {
            http,
            url,
            sdk_key,
            timeout,
            etag: None,
            fallback: false,
        }
    }

    /// A poller standing in for a stream while it is down.
    pub(super) fn fallback(mut self) -> Poller {
        self.fallback = true;
        self
    }

    /// One poll: a 200 replaces the data, a 304 confirms it. The error says whether retrying
    /// can help.
    pub(super) async fn poll(&mut self, inner: &Inner) -> Result<(), (ErrorInfo, bool)> {
        let mut request = self
            .http
            .get(&self.url)
            .header("authorization", &self.sdk_key)
            .timeout(self.timeout);
        if let Some(tag) = self.etag.as_deref() {
            request = request.header("if-none-match", tag);
        }
        let url = &self.url;
        let network = |e: reqwest::Error| {
            (
                error(DataSourceErrorKind::NetworkError, None, e.to_string()),
                false,
            )
        };
        let started = std::time::Instant::now();
        let response = request.send().await.map_err(|e| {
            measure_failure(inner, &e);
            network(e)
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            inner.status.contact();
            if let Some(events) = &inner.events {
                events.push_latency_metrics(API, started.elapsed());
            }
            return Ok(());
        }
        if !status.is_success() {
            if let Some(events) = &inner.events {
                events.push_internal_error_metrics(API);
            }
            let e = error(
                DataSourceErrorKind::ErrorResponse,
                Some(status.as_u16()),
                format!("{url} answered {status}"),
            );
            return Err((e, is_unrecoverable(status.as_u16())));
        }
        let tag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(|e| {
            measure_failure(inner, &e);
            network(e)
        })?;
        if let Some(events) = &inner.events {
            events.push_latency_metrics(API, started.elapsed());
            events.push_size_metrics(API, body.len());
        }
        let invalid = |message: String| {
            (
                error(DataSourceErrorKind::InvalidData, None, message),
                false,
            )
        };
        inner.status.contact();
        let data =
            flags_wire::stream::parse_latest_all(&body).map_err(|e| invalid(e.to_string()))?;
        if self.fallback {
            inner.refresh(data)
        } else {
            inner.put(data)
        }
        .map_err(|e| invalid(e.to_string()))?;
        self.etag = tag;
        Ok(())
    }
}
