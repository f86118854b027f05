//! Data sources: the background tasks that keep a client's data current.

mod file;
mod poll;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flags_cache::{Backoff, JitterRng};

use crate::config::{Config, DataSource};
use crate::inner::Inner;
use crate::status::{DataSourceErrorKind, ErrorInfo};

pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The tasks that run `config`'s data source for `inner`.
pub(crate) fn tasks(config: &Config, inner: Arc<Inner>) -> Result<Vec<Task>, reqwest::Error> {
    let mut tasks: Vec<Task> = Vec::new();
    match &config.data_source {
        DataSource::Streaming {
            initial_reconnect_delay,
            read_timeout,
        } => {
            let http = http_client(config)?;
            let fallback = config.polling_fallback.map(|fallback| stream::Fallback {
                poller: poll::Poller::new(
                    http.clone(),
                    format!("{}/sdk/latest-all", config.poll_url),
                    config.sdk_key.clone(),
                    config.fetch_timeout,
                )
                .fallback(),
                every: fallback.interval,
                jitter: fallback.jitter.clamp(0.0, 1.0),
                rng: JitterRng::from_entropy(),
                last: None,
            });
            tasks.push(Box::pin(stream::run(
                stream::Target {
                    http,
                    url: format!("{}/all", config.stream_url),
                    sdk_key: config.sdk_key.clone(),
                    answer_timeout: config.fetch_timeout.min(*read_timeout),
                    read_timeout: *read_timeout,
                },
                backoff(*initial_reconnect_delay),
                fallback,
                inner,
            )));
        }
        DataSource::Polling { interval } => {
            let http = http_client(config)?;
            let poller = poll::Poller::new(
                http,
                format!("{}/sdk/latest-all", config.poll_url),
                config.sdk_key.clone(),
                config.fetch_timeout,
            );
            tasks.push(Box::pin(poll::run(poller, *interval, inner)));
        }
        DataSource::Files {
            paths,
            reload_interval,
        } => tasks.push(Box::pin(file::run(paths.clone(), *reload_interval, inner))),
        DataSource::Fixed(_) | DataSource::TestData(_) | DataSource::Offline => {}
    }
    Ok(tasks)
}

fn http_client(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .user_agent(concat!("flags-sdk/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn backoff(base: Duration) -> Backoff {
    let plain = Backoff::new(base);
    // A fraction of 0.5 is within what `with_jitter` accepts; fall back to no jitter anyway.
    plain
        .clone()
        .with_jitter(0.5, JitterRng::from_entropy())
        .unwrap_or(plain)
}

pub(crate) fn error(
    kind: DataSourceErrorKind,
    status_code: Option<u16>,
    message: String,
) -> ErrorInfo {
    ErrorInfo {
        kind,
        status_code,
        message,
        time: SystemTime::now(),
    }
}

/// Whether an HTTP status means retrying cannot help (the key is wrong), as LaunchDarkly's SDKs
/// judge it: 401 and 403 stop the data source; every other error is retried.
pub(crate) fn is_unrecoverable(status: u16) -> bool {
    matches!(status, 401 | 403)
}

/// Sleeps `delay`, or returns `false` at once if the client closes first.
pub(crate) async fn sleep_unless_closed(inner: &Inner, delay: Duration) -> bool {
    let mut closed = inner.closed();
    if *closed.borrow() {
        return false;
    }
    let woken = tokio::select! {
        () = tokio::time::sleep(delay) => false,
        _ = closed.wait_for(|c| *c) => true,
    };
    !woken && !*inner.closed().borrow()
}
