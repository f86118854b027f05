//! Polling: flagd's `GET /sdk/latest-all` at an interval, with `If-None-Match`, so an unchanged
//! answer is a 304 with no body. Each 200 replaces everything.

use std::sync::Arc;
use std::time::Duration;

use super::{error, is_unrecoverable, sleep_unless_closed};
use crate::inner::Inner;
use crate::status::{DataSourceErrorKind, DataSourceState, ErrorInfo};

/// How long one poll may take, answer and body together: a server that accepts and never
/// answers fails the poll instead of stopping polling for good.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);

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

pub(super) async fn run(
    http: reqwest::Client,
    url: String,
    sdk_key: String,
    interval: Duration,
    inner: Arc<Inner>,
) {
    let mut etag: Option<String> = None;
    loop {
        match poll(&http, &url, &sdk_key, &mut etag, &inner).await {
            // A 200 made the source valid as its data went in; a 304 says the data held is
            // still current, which is valid too (and recovers an interrupted source).
            Ok(()) => inner.report(DataSourceState::Valid, None),
            Err((e, stop)) => {
                if stop {
                    tracing::error!(url, "polling stopped: {}", e.message);
                    inner.give_up(e);
                    return;
                }
                tracing::warn!(url, "poll failed: {}", e.message);
                inner.report(DataSourceState::Interrupted, Some(e));
            }
        }
        if !sleep_unless_closed(&inner, interval).await {
            return;
        }
    }
}

async fn poll(
    http: &reqwest::Client,
    url: &str,
    sdk_key: &str,
    etag: &mut Option<String>,
    inner: &Inner,
) -> Result<(), (ErrorInfo, bool)> {
    let mut request = http
        .get(url)
        .header("authorization", sdk_key)
        .timeout(POLL_TIMEOUT);
    if let Some(tag) = etag.as_deref() {
        request = request.header("if-none-match", tag);
    }
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
    let data = flags_wire::stream::parse_latest_all(&body).map_err(|e| invalid(e.to_string()))?;
    inner.put(data).map_err(|e| invalid(e.to_string()))?;
    *etag = tag;
    Ok(())
}
