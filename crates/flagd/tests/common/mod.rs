//! Helpers shared by flagd's integration tests: flag files in temporary directories, apps and
//! servers with short intervals, request helpers and an SSE reader; waiting with a deadline comes
//! from flags-test-support.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use flagd::source::FileSource;
use flagd::{AppState, Config};
pub use flags_test_support::wait::DEADLINE;
// Not every test binary that includes this module waits for a condition.
#[allow(unused_imports)]
pub use flags_test_support::wait::eventually;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A small flag file exercising each kind of answer.
pub const FLAGS: &str = r#"{
  "flags": {
    "bool-flag": {
      "on": true, "variations": [false, true], "offVariation": 0,
      "targets": [{"values": ["targeted"], "variation": 1}],
      "fallthrough": {"variation": 0}
    },
    "rollout-flag": {
      "on": true, "variations": ["a", "b"], "offVariation": 0, "salt": "s",
      "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}
    },
    "rule-flag": {
      "on": true, "variations": [1, 2, 3], "offVariation": 0,
      "rules": [
        {"id": "r0", "clauses": [{"attribute": "country", "op": "in", "values": ["FR"]}], "variation": 2},
        {"id": "r1", "clauses": [{"attribute": "country", "op": "in", "values": ["DE"]}],
         "rollout": {"variations": [{"variation": 1, "weight": 100000}]}}
      ],
      "fallthrough": {"variation": 0}
    },
    "segment-flag": {
      "on": true, "variations": [false, true], "offVariation": 0,
      "rules": [{"id": "seg", "clauses": [{"attribute": "key", "op": "segmentMatch", "values": ["beta"]}], "variation": 1}],
      "fallthrough": {"variation": 0}
    },
    "off-flag": {"on": false, "variations": ["x", "y"], "offVariation": 1, "fallthrough": {"variation": 0}},
    "org-flag": {
      "on": true, "variations": [false, true], "offVariation": 0,
      "rules": [{"id": "orgs", "clauses": [{"contextKind": "org", "attribute": "key", "op": "in", "values": ["acme"]}], "variation": 1}],
      "fallthrough": {"variation": 0}
    }
  },
  "segments": {"beta": {"included": ["beta-user"]}},
  "flagValues": {"static-flag": {"color": "blue"}}
}"#;

/// A temporary directory holding flag files; removed on drop.
pub struct FlagDir {
    pub dir: tempfile::TempDir,
}

impl FlagDir {
    pub fn new() -> FlagDir {
        FlagDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file in place.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Replaces a file the way editors do: write a sibling, then rename over it.
    pub fn write_atomic(&self, name: &str, contents: &str) -> PathBuf {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        let path = self.path(name);
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

/// A configuration for tests: free port, short debounce and poll, short keep-alive.
pub fn test_config(files: Vec<PathBuf>) -> Config {
    Config::for_tests(files)
}

/// App state with `file` loaded (no watcher: tests reload by calling the source).
pub fn loaded_state(config: &Config) -> (AppState, Arc<FileSource>) {
    let state = AppState::new(config);
    let source = Arc::new(FileSource::new(
        config.files.clone(),
        Arc::clone(&state.store),
        Arc::clone(&state.metrics),
    ));
    source.reload();
    (state, source)
}

/// A router over a state loaded from one file with `contents`.
pub fn app_with(contents: &str) -> (flagd::http::App, AppState, Arc<FileSource>, FlagDir) {
    let dir = FlagDir::new();
    let file = dir.write("flags.json", contents);
    let config = test_config(vec![file]);
    let (state, source) = loaded_state(&config);
    (flagd::app(state.clone()), state, source, dir)
}

/// Sends one request through the router.
pub async fn send(app: &flagd::http::App, request: Request<Body>) -> Response<Body> {
    app.clone().oneshot(request).await.unwrap()
}

pub fn post(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// Status and body (parsed as JSON when it is JSON, else a string; Null when empty).
pub async fn call(app: &flagd::http::App, request: Request<Body>) -> (StatusCode, Value) {
    let response = send(app, request).await;
    let status = response.status();
    (status, body_json(response).await)
}

pub async fn body_bytes(response: Response<Body>) -> Vec<u8> {
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

pub async fn body_json(response: Response<Body>) -> Value {
    let bytes = body_bytes(response).await;
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

/// Reads events from a byte stream of `text/event-stream`, skipping comments (keep-alives).
pub struct SseReader<S> {
    stream: S,
    buffer: String,
    /// Keep-alive comments seen so far.
    pub comments: usize,
}

impl<S, B, E> SseReader<S>
where
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Debug,
{
    pub fn new(stream: S) -> SseReader<S> {
        SseReader {
            stream,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, or None when the stream ends. Fails the test after [`DEADLINE`].
    pub async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(DEADLINE, self.next_inner())
            .await
            .expect("no SSE event before the deadline")
    }

    /// The next event or the end of the stream, waiting at most `limit`; Err on timeout.
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<SseEvent>, ()> {
        tokio::time::timeout(limit, self.next_inner())
            .await
            .map_err(|_| ())
    }

    async fn next_inner(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = Vec::new();
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                        any = true;
                    }
                }
                if any {
                    let data = serde_json::from_str(&data.join("\n")).unwrap();
                    return Some(SseEvent { event, data });
                }
            }
            match self.stream.next().await {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(chunk.unwrap().as_ref()).unwrap()),
                None => return None,
            }
        }
    }
}

/// The flag file's path as a string, for messages.
pub fn show(path: &Path) -> String {
    path.display().to_string()
}

/// Every record in the JSON-lines files of `dir`, completed or still being written.
pub fn exported_records(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".jsonl") || name.ends_with(".jsonl.tmp")
        })
        .collect();
    files.sort();
    let mut records = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // renamed between the listing and the read
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            records.push(serde_json::from_str(line).unwrap());
        }
    }
    records
}
