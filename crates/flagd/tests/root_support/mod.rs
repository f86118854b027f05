//! Shared pieces of the root-mode tests: a flagd serving from a store, keys, HTTP helpers and
//! an SSE reader that times what it sees.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use flags_store::{Actor, AdminStore, ApiKeyKind, NewApiKey};
pub use flags_test_support::wait::DEADLINE;
#[allow(unused_imports)]
pub use flags_test_support::wait::until;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// The actor the tests write as.
pub fn actor() -> Actor {
    Actor::named("test")
}

/// A boolean flag: serves `value` to everyone, `false` when off.
pub fn bool_flag(key: &str, value: bool) -> Value {
    json!({
        "key": key, "on": true, "variations": [true, false],
        "offVariation": 1, "fallthrough": {"variation": if value { 0 } else { 1 }},
        "salt": key
    })
}

/// Creates an environment and an SDK key scoped to it; returns the key's secret.
pub async fn env_with_key(store: &dyn AdminStore, env: &str) -> String {
    store.create_environment(&actor(), env, env).await.unwrap();
    sdk_key(store, env).await
}

/// An SDK key for `env`.
pub async fn sdk_key(store: &dyn AdminStore, env: &str) -> String {
    let new = NewApiKey {
        name: format!("{env} sdk"),
        kind: ApiKeyKind::Sdk,
        env: Some(env.to_owned()),
    };
    store.create_api_key(&actor(), &new).await.unwrap().secret
}

/// Writes a flag whatever its current version.
pub async fn put_flag(store: &dyn AdminStore, env: &str, key: &str, doc: Value) -> u64 {
    let current = store.get_flag(env, key).await.ok().map(|f| f.version);
    store
        .put_flag(&actor(), env, key, doc, current)
        .await
        .unwrap()
        .version
}

/// `POST /v1/evaluate/{flag}` with `key`; returns the status and body.
pub async fn evaluate(client: &reqwest::Client, base: &str, key: &str, flag: &str) -> (u16, Value) {
    let response = client
        .post(format!("{base}/v1/evaluate/{flag}"))
        .header("authorization", key)
        .header("content-type", "application/json")
        .body(json!({"context": {"kind": "user", "key": "u1"}}).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event: String,
    pub data: Value,
}

/// An SSE stream from `GET /all`.
pub struct Stream {
    inner:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Stream {
    /// Opens `GET /all` with `key`.
    pub async fn open(client: &reqwest::Client, base: &str, key: &str) -> Stream {
        let response = client
            .get(format!("{base}/all"))
            .header("authorization", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "stream refused");
        Stream {
            inner: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event, failing the test after [`DEADLINE`].
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(DEADLINE, self.next_inner())
            .await
            .expect("no SSE event before the deadline")
    }

    /// The next event whose data path is `path` (skipping others).
    pub async fn next_for(&mut self, path: &str) -> Event {
        loop {
            let event = self.next().await;
            if event.data["path"] == path {
                return event;
            }
        }
    }

    async fn next_inner(&mut self) -> Event {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data.join("\n")).unwrap();
                    return Event { event, data };
                }
            }
            let chunk = self.inner.next().await.expect("stream ended").unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// A root-mode flagd over `store` on a free port, with the short test intervals.
pub async fn start(store: Arc<dyn AdminStore>) -> flagd::RunningServer {
    let config = flagd::Config::for_tests(Vec::new());
    flagd::start_with_store(config, store).await.unwrap()
}

/// `GET /readyz`.
pub async fn readyz(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap()
}

/// p50 and p99 of durations, in milliseconds.
pub fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}
