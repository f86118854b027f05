//! The `watch` example prints what its doc comment promises: the example's own code, run
//! against a client whose data comes from a flag file, so no server and no extra build.

#![allow(clippy::unwrap_used)]

// Its `main` and arguments are the example's, not the test's.
#[allow(dead_code)]
#[path = "../examples/watch.rs"]
mod watch;

use std::io::Write;
use std::time::Duration;

use flags_sdk::{Client, Context, DataSource};
use serde_json::json;
use tokio::sync::mpsc;

#[tokio::test]
async fn watch_prints_one_json_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    let write = |checkout: usize| {
        let data = json!({"flags": {
            "checkout": {"on": true, "variations": [false, true], "fallthrough": {"variation": checkout}},
            "other": {"on": true, "variations": [1], "fallthrough": {"variation": 0}}
        }});
        replace(&path, &data.to_string());
    };
    write(0);
    let client = Client::builder("key")
        .data_source(DataSource::Files {
            paths: vec![path.clone()],
            reload_interval: Duration::from_millis(10),
        })
        .build()
        .unwrap();
    assert!(
        client
            .wait_for_initialization(Duration::from_secs(10))
            .await
    );

    let (tx, mut lines) = mpsc::unbounded_channel();
    let watching = {
        let client = client.clone();
        tokio::spawn(async move {
            let context = Context::user("watch").unwrap();
            let mut out = LineWriter {
                tx,
                partial: Vec::new(),
            };
            watch::watch(
                &client,
                "checkout",
                context,
                &mut out,
                std::future::pending(),
            )
            .await
        })
    };
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.recv())
            .await
            .expect("a line within 10 s")
            .expect("the example still running")
    };

    assert_eq!(next().await, r#"{"type":"status","state":"Valid"}"#);
    write(1);
    assert_eq!(next().await, r#"{"type":"flag_change","key":"checkout"}"#);
    assert_eq!(
        next().await,
        r#"{"type":"value_change","key":"checkout","old":false,"new":true}"#
    );
    replace(&path, "{not json");
    assert_eq!(next().await, r#"{"type":"status","state":"Interrupted"}"#);
    client.close();
    assert_eq!(next().await, r#"{"type":"status","state":"Off"}"#);
    watching.await.unwrap().unwrap();
    assert_eq!(lines.recv().await, None, "nothing after the client closed");
}

/// Replaces a file by rename, so the client never reads it half written.
fn replace(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Sends each complete line written to it.
struct LineWriter {
    tx: mpsc::UnboundedSender<String>,
    partial: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).take(end).collect();
            let _ = self.tx.send(String::from_utf8(line).unwrap());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
