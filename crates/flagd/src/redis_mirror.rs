//! Every served environment written into Redis in LaunchDarkly's persistent-store layout
//! (`flags-store-redis`), so that LaunchDarkly SDKs in daemon mode read what flagd serves:
//! each flag and segment as it is served (kills and overrides folded in, as SDKs receive it on
//! the stream).
//!
//! The whole environment is written in one transaction at first, and after that only what each
//! change touched: the items its stream events name, as the current snapshot serves them
//! (tombstones for deletions), in one version-checked transaction per change
//! (`RedisStore::upsert_many`). Everything is written whole again whenever the items alone
//! might not be enough: the change feed lagged and batches were lost, a batch replaced the
//! snapshot without naming what changed, Redis lost `$inited` or holds fewer items than were
//! written, or Redis failed.
//!
//! Redis being down never stops flagd: the write is retried with backoff, and once Redis
//! answers again everything is written afresh.
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flags_core::ItemKind;
use flags_store_redis::{Held, Item, RedisStore, StoreError, Upserted};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;

use crate::engine::Snapshot;
use crate::env::{Env, Environments};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{Batch, Store, rfc3339};

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

/// Starts writing every environment of `envs` to the Redis at `url`, under the prefix
/// `template` (with `{env}` standing for the environment key, see
/// [`RedisConfig::template`](crate::config::RedisConfig::template)). Ends when `shutdown`
/// fires.
pub(crate) fn spawn(
    envs: Arc<Environments>,
    url: String,
    template: String,
    health: (Arc<RedisHealth>, Arc<Metrics>),
    shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut mirrored = HashSet::new();
        loop {
            for env in envs.all() {
                if mirrored.insert(env.key.to_string()) {
                    let prefix = crate::config::env_prefix(&template, &env.key);
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

    /// Connects, writes the current data whole, then the items of every change, and the whole
    /// data again whenever the items alone would not do (see the module's documentation); a
    /// write clears `failing`. Returns `Ok` when the environment's change feed ends, `Err` on
    /// the first failure.
    async fn follow(&self, env: &Env, failing: &mut bool) -> Result<(), StoreError> {
        let store: &Store = &env.store;
        let redis = RedisStore::connect(&self.url, &self.prefix).await?;
        // Subscribe before reading, so a change in between is not missed.
        let mut changes = store.subscribe();
        // What Redis holds, once something was written.
        let mut written: Option<Written> = None;
        let mut check =
            tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if written.is_none()
                && let Some(snapshot) = store.snapshot()
            {
                written = Some(self.write_whole(&redis, env, &snapshot, failing).await?);
            }
            tokio::select! {
                change = changes.recv() => {
                    let mut batches = match change {
                        Ok(batch) => vec![batch],
                        Err(RecvError::Lagged(missed)) => {
                            tracing::debug!(prefix = %self.prefix, missed,
                                "the change feed ran ahead; writing everything");
                            written = None;
                            continue;
                        }
                        Err(RecvError::Closed) => return Ok(()),
                    };
                    // Whatever else is already queued goes out in the same write.
                    let mut lagged = false;
                    loop {
                        match changes.try_recv() {
                            Ok(batch) => batches.push(batch),
                            Err(TryRecvError::Lagged(_)) => lagged = true,
                            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                        }
                    }
                    let Some(at) = written.as_mut() else { continue };
                    if lagged {
                        written = None;
                        continue;
                    }
                    if !self.write_changes(&redis, env, at, &batches, failing).await? {
                        written = None;
                    }
                },
                _ = check.tick() => {
                    if let Some(at) = &written
                        && !at.still_held(redis.held().await?)
                    {
                        tracing::warn!(prefix = %self.prefix, "Redis lost flagd's data; writing it again");
                        written = None;
                    }
                }
            }
        }
    }

    /// Writes `snapshot` whole, in one transaction.
    async fn write_whole(
        &self,
        redis: &RedisStore,
        env: &Env,
        snapshot: &Snapshot,
        failing: &mut bool,
    ) -> Result<Written, StoreError> {
        let features: Vec<Item> = snapshot
            .flags()
            .map(|f| Item::new(f.key(), f.version(), f.json()))
            .collect();
        let segments: Vec<Item> = snapshot
            .segments()
            .map(|s| Item::new(s.key(), s.version(), s.json()))
            .collect();
        redis.init(&features, &segments).await?;
        self.metrics.redis_rewritten();
        self.wrote(env, failing);
        tracing::info!(prefix = %self.prefix, flags = features.len(),
            segments = segments.len(), "written to Redis in LaunchDarkly's layout");
        Ok(Written {
            generation: snapshot.generation(),
            held: Held {
                features: features.len() as u64,
                segments: segments.len() as u64,
            },
        })
    }

    /// Writes the items that `batches` name, as the current snapshot serves them, into what
    /// Redis holds at `at`. Returns `false`, having written nothing, when only a whole write
    /// will do.
    async fn write_changes(
        &self,
        redis: &RedisStore,
        env: &Env,
        at: &mut Written,
        batches: &[Arc<Batch>],
        failing: &mut bool,
    ) -> Result<bool, StoreError> {
        let mut keys = BTreeSet::new();
        let mut last = at.generation;
        for batch in batches {
            // Everything was replaced, perhaps at a lower generation (data from the source
            // after data read from Redis at start): written whole.
            if batch.reset {
                return Ok(false);
            }
            // Batches up to the generation written are in it already.
            if batch.generation <= at.generation {
                continue;
            }
            // A new snapshot that does not say what changed (a whole environment loaded).
            if batch.events.is_empty() {
                return Ok(false);
            }
            for event in &batch.events {
                let Some(item) = changed_item(&event.data) else {
                    tracing::warn!(prefix = %self.prefix, event = event.event,
                        "a change names no item; writing everything");
                    return Ok(false);
                };
                keys.insert(item);
            }
            last = last.max(batch.generation);
        }
        if keys.is_empty() {
            return Ok(true);
        }
        // The snapshot may be newer than the batches: it then holds these items at newer
        // versions, and the batches still to come find them written.
        let Some(snapshot) = env.store.snapshot() else {
            return Ok(false);
        };
        let data = snapshot.compiled();
        let (mut features, mut segments) = (Vec::new(), Vec::new());
        for (kind, key) in &keys {
            let item = match kind {
                ItemKind::Flag => data
                    .flag_or_tombstone(key)
                    .map(|f| (f.is_deleted(), f.version(), f.json())),
                ItemKind::Segment => data
                    .segment_or_tombstone(key)
                    .map(|s| (s.is_deleted(), s.version(), s.json())),
            };
            // Neither served nor a tombstone: the item cannot be written alone.
            let Some((deleted, version, json)) = item else {
                return Ok(false);
            };
            let item = if deleted {
                Item::deleted(key.as_str(), version)
            } else {
                Item::new(key.as_str(), version, json)
            };
            match kind {
                ItemKind::Flag => features.push(item),
                ItemKind::Segment => segments.push(item),
            }
        }
        match redis.upsert_many(&features, &segments).await? {
            Upserted::NotInitialized => {
                tracing::warn!(prefix = %self.prefix, "Redis lost flagd's data; writing it again");
                Ok(false)
            }
            Upserted::Written(_) => {
                at.generation = last;
                self.metrics.redis_written();
                self.wrote(env, failing);
                Ok(true)
            }
        }
    }

    /// Records a successful write.
    fn wrote(&self, env: &Env, failing: &mut bool) {
        self.health.wrote(&env.key);
        if std::mem::take(failing) {
            tracing::info!(env = %env.key, prefix = %self.prefix,
                "Redis answers again; everything is written");
        }
    }
}

/// What one writer knows Redis holds.
struct Written {
    /// The generation of the last change written.
    generation: u64,
    /// How many items the whole write put in each hash. Item writes only add fields or replace
    /// them (a deletion is a tombstone), so Redis holding fewer means it lost some.
    held: Held,
}

impl Written {
    /// Whether Redis, holding `now`, still holds everything written.
    fn still_held(&self, now: Option<Held>) -> bool {
        now.is_some_and(|now| {
            now.features >= self.held.features && now.segments >= self.held.segments
        })
    }
}

/// The item a stream event's data names: `{"path":"/flags/KEY",...}`. Only the path is read;
/// what is written is the item as the snapshot serves it.
fn changed_item(data: &str) -> Option<(ItemKind, String)> {
    #[derive(serde::Deserialize)]
    struct Path<'a> {
        #[serde(borrow)]
        path: Cow<'a, str>,
    }
    let path: Path<'_> = serde_json::from_str(data).ok()?;
    let (kind, key) = flags_wire::stream::parse_path(&path.path)?;
    Some((kind, key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Update;
    use flags_core::{Flag, FlagData};
    use flags_test_support::redis;
    use flags_wire::stream::{render_delete, render_patch_json};

    fn flag(key: &str, version: u64, value: &str) -> Flag {
        serde_json::from_value(serde_json::json!({
            "key": key, "version": version, "on": true, "variations": [value, "other"],
            "fallthrough": {"variation": 0}, "offVariation": 1, "salt": key
        }))
        .unwrap()
    }

    /// Serves `key` at `version` with `value`, publishing the change as a source does.
    fn change(store: &Store, key: &str, version: u64, value: &str) {
        let current = store.snapshot().unwrap();
        let generation = current.generation() + 1;
        let applied = current
            .apply(generation, vec![Update::Flag(flag(key, version, value))])
            .unwrap()
            .unwrap();
        let events = crate::engine::events(&applied.snapshot, &applied.changed).unwrap();
        store.publish(applied.snapshot, events);
    }

    /// `key`'s JSON in `{prefix}:features`, once it holds `value`.
    async fn until_written(prefix: &str, key: &str, value: &str) {
        let mut connection = ::redis::Client::open(redis().url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let json: Option<String> = ::redis::cmd("HGET")
                .arg(format!("{prefix}:features"))
                .arg(key)
                .query_async(&mut connection)
                .await
                .unwrap();
            if json.as_deref().is_some_and(|j| j.contains(value)) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{key}: {json:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn counter(metrics: &Metrics, name: &str) -> u64 {
        let text = metrics.encode();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_feed_that_lagged_is_written_whole_then_changes_item_by_item() {
        // Room for one batch: changes published without a pause overflow it.
        let envs = Arc::new(Environments::new(1));
        let env = envs.get_or_create("default");
        let data = FlagData {
            flags: ["a", "b"]
                .into_iter()
                .map(|k| (k.to_owned(), flag(k, 1, "start")))
                .collect(),
            ..FlagData::default()
        };
        env.store
            .publish(Snapshot::from_models(data, 1).unwrap(), Vec::new());
        let prefix = redis().unique_prefix("flagd-mirror-lag");
        let metrics = Arc::new(Metrics::new());
        let shutdown = Shutdown::new();
        let health = (Arc::new(RedisHealth::default()), Arc::clone(&metrics));
        let _task = spawn(
            Arc::clone(&envs),
            redis().url().to_owned(),
            prefix.clone(),
            health,
            shutdown.clone(),
        );
        until_written(&prefix, "b", "start").await;
        assert_eq!(counter(&metrics, "flagd_redis_rewrites_total"), 1);

        // Five changes with no await in between: the writer finds the feed lagged.
        for version in 2..=6 {
            change(&env.store, "a", version, &format!("lagged-{version}"));
        }
        until_written(&prefix, "a", "lagged-6").await;
        assert_eq!(counter(&metrics, "flagd_redis_rewrites_total"), 2);

        // Then changes are items again.
        change(&env.store, "b", 2, "item");
        until_written(&prefix, "b", "item").await;
        assert_eq!(counter(&metrics, "flagd_redis_rewrites_total"), 2);
        shutdown.trigger();
    }

    #[test]
    fn a_change_names_its_item_from_the_event_path() {
        let cases = [
            (
                render_patch_json(
                    ItemKind::Flag,
                    "checkout",
                    r#"{"key":"checkout","version":2}"#,
                ),
                Some((ItemKind::Flag, "checkout")),
            ),
            (
                render_delete(ItemKind::Segment, "beta/users", 7),
                Some((ItemKind::Segment, "beta/users")),
            ),
        ];
        for (event, expected) in cases {
            let expected = expected.map(|(kind, key)| (kind, key.to_owned()));
            assert_eq!(changed_item(&event.data), expected, "{}", event.data);
        }
        assert_eq!(changed_item(r#"{"data":{}}"#), None);
        assert_eq!(changed_item(r#"{"path":"/other/x"}"#), None);
    }

    #[test]
    fn fewer_items_than_written_means_redis_lost_some() {
        let written = Written {
            generation: 3,
            held: Held {
                features: 2,
                segments: 1,
            },
        };
        let held = |features, segments| Some(Held { features, segments });
        assert!(written.still_held(held(2, 1)));
        assert!(
            written.still_held(held(5, 1)),
            "tombstones and new items add fields"
        );
        assert!(!written.still_held(held(1, 1)));
        assert!(!written.still_held(held(2, 0)));
        assert!(!written.still_held(None), "$inited gone");
    }
}
