//! Proxy mode: the data of an upstream flagd, followed through the SDK's streaming data source
//! (with polls standing in while the stream is down), served here on every API. The upstream's
//! flags already carry its kill set and overrides, as every SDK receives them, so a proxy
//! serves the same answers; it can itself be the upstream of another proxy.
//!
//! Every change the SDK client applies is published into the default environment in the same
//! step, with the stream events it makes, so the streams of this proxy's own clients miss
//! nothing. The last data is kept for as long as the upstream is gone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flags_sdk::{Client, DataSource, DataSourceState, DataUpdate, PollingFallback};
use serde::Serialize;

use crate::config::UpstreamConfig;
use crate::env::Env;

/// The connection to the upstream.
pub struct Upstream {
    url: String,
    client: Client,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Why following the upstream could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No SDK key to present upstream.
    #[error(
        "proxy mode needs the SDK key to present to the upstream (--sdk-key or FLAGD_SDK_KEYS)"
    )]
    NoKey,
    /// The SDK client could not be built.
    #[error("cannot follow the upstream: {0}")]
    Client(#[from] flags_sdk::BuildError),
}

/// The upstream's part of `/readyz`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamReady {
    /// `CONNECTING` before any data, `SERVING` while the stream is up, `DEGRADED` while it is
    /// down (the last data keeps serving), `DOWN` when the upstream refused the key.
    pub status: &'static str,
    /// The upstream's URL.
    pub url: String,
    /// Whole seconds since the upstream last answered: 0 while the stream is up, `null` if it
    /// never answered.
    pub seconds_since_last_contact: Option<u64>,
    /// The last failure talking to the upstream, kept after recovery.
    pub last_error: Option<String>,
    /// Failed attempts to reach the upstream since it last answered.
    pub consecutive_failures: u32,
}

impl Upstream {
    /// Starts following `config.url` with `sdk_key` and publishing into `env`. Must run in a
    /// Tokio runtime, which the client's tasks run on.
    pub fn start(
        config: &UpstreamConfig,
        url: &str,
        sdk_key: Option<&str>,
        env: Arc<Env>,
    ) -> Result<Upstream, ProxyError> {
        let sdk_key = sdk_key.ok_or(ProxyError::NoKey)?;
        let base = Duration::from_millis(config.reconnect_base_ms.max(1));
        let client = Client::builder(sdk_key)
            .base_url(url)
            // Applications' events come to this proxy's own `/bulk`; the client makes none.
            .events_enabled(false)
            .data_source(DataSource::Streaming {
                initial_reconnect_delay: base,
                read_timeout: Duration::from_secs(300),
            })
            .fetch_timeout(Duration::from_millis(config.fetch_timeout_ms.max(1)))
            .polling_fallback(PollingFallback {
                interval: Duration::from_millis(config.flag_ttl_ms),
                jitter: f64::from(config.jitter_percent.min(100)) / 100.0,
            })
            .on_data(move |update| publish(&env, update))
            .build()?;
        Ok(Upstream {
            url: url.to_owned(),
            client,
        })
    }

    /// Waits up to `timeout` for the first data.
    pub async fn wait_for_data(&self, timeout: Duration) -> bool {
        self.client.wait_for_initialization(timeout).await
    }

    /// How following the upstream goes, for `/readyz`.
    pub fn report(&self) -> UpstreamReady {
        let provider = self.client.data_source_status_provider();
        let status = provider.status();
        let label = match status.state {
            DataSourceState::Off => "DOWN",
            _ if !self.client.initialized() => "CONNECTING",
            DataSourceState::Valid => "SERVING",
            _ => "DEGRADED",
        };
        let seconds = if status.state == DataSourceState::Valid {
            Some(0)
        } else {
            provider.last_contact().map(|at| {
                SystemTime::now()
                    .duration_since(at)
                    .unwrap_or_default()
                    .as_secs()
            })
        };
        UpstreamReady {
            status: label,
            url: self.url.clone(),
            seconds_since_last_contact: seconds,
            last_error: status.last_error.map(|e| e.message),
            consecutive_failures: provider.consecutive_failures(),
        }
    }

    /// Stops following the upstream.
    pub fn close(&self) {
        self.client.close();
    }
}

/// Serves one change of the client's data from `env`: a replacement (the upstream's `put`, a
/// poll) as a `put` on every stream, since the upstream may have come back with lower versions
/// (a restarted file-mode root), a patch or delete as itself.
fn publish(env: &Env, update: &DataUpdate) {
    let snapshot = Arc::clone(&update.snapshot);
    if update.replaced {
        env.store.publish_reset(snapshot);
    } else {
        match crate::engine::events(&update.snapshot, &update.changed) {
            Ok(events) => env.store.publish_shared(snapshot, events),
            // Cannot happen for a snapshot and the changes that made it; a put then brings
            // streams the change all the same.
            Err(e) => {
                tracing::error!(error = %e, "cannot render the upstream's change for streams");
                env.store.publish_reset(snapshot);
            }
        }
    }
    env.store.record_success(Vec::new());
}
