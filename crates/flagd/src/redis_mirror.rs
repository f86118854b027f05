//! Every served environment written into Redis in LaunchDarkly's persistent-store layout
//! (`flags-store-redis`), so that LaunchDarkly SDKs in daemon mode read what flagd serves:
//! each flag and segment as it is served (kills and overrides folded in, as SDKs receive it on
//! the stream), rewritten whole in one transaction whenever the environment's data changes.
//!
//! Redis being down never stops flagd: the write is retried with backoff, and once Redis
//! answers again everything is written afresh.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flags_store_redis::{Item, RedisStore};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::env::{Env, Environments};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Store, rfc3339};

/// How writing into Redis goes, per environment, for `/readyz`.
#[derive(Debug, Default)]
pub struct RedisHealth {
    envs: Mutex<BTreeMap<String, EnvWrites>>,
}

#[derive(Debug, Default, Clone)]
struct EnvWrites {
    /// When the data was last written, Unix milliseconds.
    last_write: Option<u64>,
    /// The last failure and when, if it came after the last write.
    failing: Option<(String, u64)>,
}

/// `/readyz`'s `redis` section.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisReady {
    /// `OK` when every environment's data is written, `DOWN` when a write fails, `CONNECTING`
    /// before the first write.
    pub status: &'static str,
    /// Per environment: when its data was last written, and its current failure.
    pub environments: BTreeMap<String, serde_json::Value>,
}

impl RedisHealth {
    fn update(&self, env: &str, f: impl FnOnce(&mut EnvWrites)) {
        let mut envs = self.envs.lock().unwrap_or_else(PoisonError::into_inner);
        f(envs.entry(env.to_owned()).or_default());
    }

    fn wrote(&self, env: &str) {
        self.update(env, |w| {
            w.last_write = Some(crate::events::unix_millis());
            w.failing = None;
        });
    }

    fn failed(&self, env: &str, error: String) {
        self.update(env, |w| {
            w.failing = Some((error, crate::events::unix_millis()))
        });
    }

    /// The section `/readyz` shows.
    pub fn report(&self) -> RedisReady {
        let envs = self.envs.lock().unwrap_or_else(PoisonError::into_inner);
        let status = if envs.values().any(|w| w.failing.is_some()) {
            "DOWN"
        } else if envs.is_empty() || envs.values().any(|w| w.last_write.is_none()) {
            "CONNECTING"
        } else {
            "OK"
        };
        let environments = envs
            .iter()
            .map(|(env, w)| {
                (
                    env.clone(),
                    serde_json::json!({
                        "lastWriteAt": w.last_write.map(rfc3339),
                        "lastError": w.failing.as_ref().map(|(e, _)| e.clone()),
                        "lastErrorAt": w.failing.as_ref().map(|(_, at)| rfc3339(*at)),
                    }),
                )
            })
            .collect();
        RedisReady {
            status,
            environments,
        }
    }
}

/// How often the set of environments is looked at for new ones (root mode adds them).
const ENV_SCAN: Duration = Duration::from_secs(1);

/// How often a writer checks that Redis still holds its data (`{prefix}:$inited`): a Redis
/// that went away is noticed without waiting for the next change, and one that came back
/// empty is written again.
const CHECK_EVERY: Duration = Duration::from_secs(1);

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
    health: (Arc<RedisHealth>, Arc<Metrics>),
    shutdown: Shutdown,
) -> JoinHandle<()> {
    let template = crate::config::RedisConfig { url: None, prefix }.template(root_mode);
    tokio::spawn(async move {
        let mut mirrored = HashSet::new();
        loop {
            for env in envs.all() {
                if mirrored.insert(env.key.to_string()) {
                    let prefix = template.replace("{env}", &env.key);
                    let writer = Writer {
                        url: url.clone(),
                        prefix,
                        health: Arc::clone(&health.0),
                        metrics: Arc::clone(&health.1),
                    };
                    tokio::spawn(writer.mirror(env, shutdown.clone()));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(ENV_SCAN) => {}
                () = shutdown.wait() => return,
            }
        }
    })
}

/// Where and how one environment's data is written.
struct Writer {
    url: String,
    prefix: String,
    health: Arc<RedisHealth>,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// Keeps one environment's data in Redis until `shutdown`.
    async fn mirror(self, env: Arc<Env>, shutdown: Shutdown) {
        let mut wait = BACKOFF.0;
        let mut failing = false;
        loop {
            let outcome = tokio::select! {
                outcome = self.follow(&env, &mut failing) => outcome,
                () = shutdown.wait() => return,
            };
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    self.metrics.redis_failed();
                    self.health.failed(&env.key, error.to_string());
                    if !failing {
                        // The first failure since the last good write: said once, and the
                        // backoff starts again from its shortest wait.
                        tracing::warn!(env = %env.key, prefix = %self.prefix, %error,
                            "cannot write to Redis; flagd keeps serving, and writes everything when it answers");
                        wait = BACKOFF.0;
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

    /// Connects, writes the current data, then writes it again after every change and
    /// whenever Redis turns out to have lost it; a write clears `failing`. Returns `Ok` when
    /// the environment's change feed ends, `Err` on the first failure.
    async fn follow(
        &self,
        env: &Env,
        failing: &mut bool,
    ) -> Result<(), flags_store_redis::StoreError> {
        let store: &Store = &env.store;
        let redis = RedisStore::connect(&self.url, &self.prefix).await?;
        // Subscribe before reading, so a change in between is not missed.
        let mut changes = store.subscribe();
        let mut written = None;
        let mut check =
            tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                self.metrics.redis_written();
                self.health.wrote(&env.key);
                if std::mem::take(failing) {
                    tracing::info!(env = %env.key, prefix = %self.prefix,
                        "Redis answers again; everything is written");
                }
                if written.is_none() {
                    tracing::info!(prefix = %self.prefix, flags = features.len(),
                        segments = segments.len(), "written to Redis in LaunchDarkly's layout");
                }
                written = Some(snapshot.generation());
            }
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = check.tick() => {
                    if !redis.initialized().await? {
                        tracing::warn!(prefix = %self.prefix, "Redis lost flagd's data; writing it again");
                        written = None;
                    }
                }
            }
        }
    }
}
