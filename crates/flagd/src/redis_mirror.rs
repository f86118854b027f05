//! Every served environment written into Redis in LaunchDarkly's persistent-store layout
//! (`flags-store-redis`), so that LaunchDarkly SDKs in daemon mode read what flagd serves:
//! each flag and segment as it is served (kills and overrides folded in, as SDKs receive it on
//! the stream), rewritten whole in one transaction whenever the environment's data changes.
//!
//! Redis being down never stops flagd: the write is retried with backoff, and once Redis
//! answers again everything is written afresh.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flags_store_redis::{DEFAULT_PREFIX, Item, RedisStore};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::env::{Env, Environments};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// How often the set of environments is looked at for new ones (root mode adds them).
const ENV_SCAN: Duration = Duration::from_secs(1);

/// The first and the longest wait between tries while Redis does not answer.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Starts writing every environment of `envs` to the Redis at `url`, under `prefix` (with
/// `{env}` standing for the environment key; by default LaunchDarkly's, and per environment in
/// root mode). Ends when `shutdown` fires.
pub(crate) fn spawn(
    envs: Arc<Environments>,
    url: String,
    prefix: Option<String>,
    root_mode: bool,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    let template = prefix.unwrap_or_else(|| {
        if root_mode {
            format!("{DEFAULT_PREFIX}:{{env}}")
        } else {
            DEFAULT_PREFIX.to_owned()
        }
    });
    tokio::spawn(async move {
        let mut mirrored = HashSet::new();
        loop {
            for env in envs.all() {
                if mirrored.insert(env.key.to_string()) {
                    let prefix = template.replace("{env}", &env.key);
                    tokio::spawn(mirror(env, url.clone(), prefix, shutdown.clone()));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(ENV_SCAN) => {}
                () = shutdown.wait() => return,
            }
        }
    })
}

/// Keeps one environment's data in Redis under `prefix` until `shutdown`.
async fn mirror(env: Arc<Env>, url: String, prefix: String, shutdown: Shutdown) {
    let mut wait = BACKOFF.0;
    let mut failing = false;
    loop {
        let outcome = tokio::select! {
            outcome = follow(&env.store, &url, &prefix) => outcome,
            () = shutdown.wait() => return,
        };
        match outcome {
            Ok(()) => return,
            Err(error) => {
                if !failing {
                    tracing::warn!(env = %env.key, %prefix, %error,
                        "cannot write to Redis; flagd keeps serving, and writes everything when it answers");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.wait() => return,
        }
        wait = (wait * 2).min(BACKOFF.1);
    }
}

/// Connects, writes the current data, then writes it again after every change. Returns `Ok`
/// when the environment's change feed ends, `Err` on the first failure.
async fn follow(
    store: &Store,
    url: &str,
    prefix: &str,
) -> Result<(), flags_store_redis::StoreError> {
    let redis = RedisStore::connect(url, prefix).await?;
    // Subscribe before reading, so a change in between is not missed.
    let mut changes = store.subscribe();
    let mut written = None;
    loop {
        if let Some(snapshot) = store.snapshot()
            && written != Some(snapshot.generation())
        {
            let features: Vec<Item> = snapshot
                .flags()
                .map(|f| Item::new(f.key(), f.version(), f.json()))
                .collect();
            let segments: Vec<Item> = snapshot
                .segments()
                .map(|s| Item::new(s.key(), s.version(), s.json()))
                .collect();
            redis.init(&features, &segments).await?;
            if written.is_none() {
                tracing::info!(%prefix, flags = features.len(), segments = segments.len(),
                    "written to Redis in LaunchDarkly's layout");
            }
            written = Some(snapshot.generation());
        }
        match changes.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}
