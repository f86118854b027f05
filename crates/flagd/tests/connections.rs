//! How flagd holds connections: a header-read deadline, a cap on open connections, and a
//! shutdown that answers kept-alive clients before it closes their connections. Driven over raw
//! TCP, so each test sees exactly what a client sees.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EVALUATE: &str = "POST /v1/evaluate/bool-flag HTTP/1.1\r\nHost: x\r\n\
Content-Type: application/json\r\nContent-Length: 43\r\n\r\n\
{\"context\":{\"kind\":\"user\",\"key\":\"someone\"}}";

/// Reads until the peer closes the connection or `within` passes: `Some(bytes)` when it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one whole answer to [`EVALUATE`] (headers, and the body its length gives).
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

fn server_config(dir: &FlagDir) -> flagd::Config {
    test_config(vec![dir.write("flags.json", FLAGS)])
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let dir = FlagDir::new();
    let mut config = server_config(&dir);
    config.http.header_read_timeout_ms = 200;
    let server = flagd::start(config).await.unwrap();

    let mut half = TcpStream::connect(server.local_addr()).await.unwrap();
    half.write_all(b"POST /v1/evaluate/bool-fl").await.unwrap();
    assert!(
        read_until_closed(&mut half, Duration::from_secs(3))
            .await
            .is_some(),
        "a half-sent request line must not hold its connection"
    );

    // A kept-alive connection that goes quiet after an answer is closed the same way.
    let mut idle = TcpStream::connect(server.local_addr()).await.unwrap();
    idle.write_all(EVALUATE.as_bytes()).await.unwrap();
    assert!(read_answer(&mut idle).await.starts_with("HTTP/1.1 200"));
    assert!(
        read_until_closed(&mut idle, Duration::from_secs(3))
            .await
            .is_some(),
        "an idle kept-alive connection must be closed"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let dir = FlagDir::new();
    let mut config = server_config(&dir);
    config.http.max_connections = 2;
    let server = flagd::start(config).await.unwrap();

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        stream.write_all(EVALUATE.as_bytes()).await.unwrap();
        assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut third = TcpStream::connect(server.local_addr()).await.unwrap();
    let _ = third.write_all(EVALUATE.as_bytes()).await;
    let answer = read_until_closed(&mut third, Duration::from_secs(3)).await;
    assert_eq!(
        answer.as_deref(),
        Some(&b""[..]),
        "closed without an answer while two connections are open"
    );

    // Once one closes, a new connection is served again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        stream.write_all(EVALUATE.as_bytes()).await.unwrap();
        let mut buf = [0u8; 12];
        if let Ok(Ok(12)) =
            tokio::time::timeout(Duration::from_millis(500), stream.read_exact(&mut buf)).await
        {
            again = Some(String::from_utf8_lossy(&buf).into_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again.as_deref(), Some("HTTP/1.1 200"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn at_shutdown_a_kept_alive_connection_gets_its_answer_and_is_told_to_close() {
    let dir = FlagDir::new();
    let mut config = server_config(&dir);
    config.http.shutdown_drain_ms = 2_000;
    let server = flagd::start(config).await.unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream.write_all(EVALUATE.as_bytes()).await.unwrap();
    assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));

    let state = server.state().clone();
    let stopped = tokio::spawn(server.wait());
    state.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The client reuses its idle connection just after the stop signal.
    stream.write_all(EVALUATE.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        read_until_closed(&mut stream, Duration::from_secs(3))
            .await
            .is_some()
    );
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("stopped after the drain")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_request_head_limit_does_not_depend_on_how_the_bytes_arrive() {
    let dir = FlagDir::new();
    let server = flagd::start(server_config(&dir)).await.unwrap();
    let body = r#"{"context":{"kind":"user","key":"u"}}"#;
    for (header, expected) in [(60_000, "HTTP/1.1 200"), (70_000, "HTTP/1.1 431")] {
        let request = format!(
            "POST /v1/evaluate/bool-flag HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            "a".repeat(header),
            body.len()
        );
        for whole in [true, false, true, false] {
            let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
            if whole {
                let _ = stream.write_all(request.as_bytes()).await;
            } else {
                for piece in request.as_bytes().chunks(4_000) {
                    if stream.write_all(piece).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let mut status = [0u8; 12];
            stream.read_exact(&mut status).await.unwrap();
            assert_eq!(
                String::from_utf8_lossy(&status),
                expected,
                "a {header}-byte header sent {}",
                if whole { "whole" } else { "in pieces" }
            );
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn clients_slow_to_send_a_body_do_not_starve_the_others() {
    let dir = FlagDir::new();
    let mut config = server_config(&dir);
    config.http.max_concurrency = 2;
    config.http.body_read_timeout_ms = 500;
    let server = flagd::start(config).await.unwrap();
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        stream
            .write_all(
                b"POST /v1/evaluate/bool-flag HTTP/1.1\r\nHost: x\r\n\
                  Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
            )
            .await
            .unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fast = TcpStream::connect(server.local_addr()).await.unwrap();
    fast.write_all(EVALUATE.as_bytes()).await.unwrap();
    let answer = read_answer(&mut fast).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for mut stream in slow {
        let mut status = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut status))
            .await
            .expect("the slow body is cut off at the body-read time")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status), "HTTP/1.1 408");
    }
    server.shutdown().await.unwrap();
}
