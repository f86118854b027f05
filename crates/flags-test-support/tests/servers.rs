//! The servers this crate hands out: databases of their own for each test, a Redis that
//! answers, a NATS with JetStream, and a throwaway cluster that goes down and comes back on the
//! same URL.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;

use flags_test_support::{PgCluster, nats, postgres, redis};
use sqlx::{Connection, PgConnection};

async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(url).await
}

async fn database_exists(name: &str) -> bool {
    let mut admin = connect(postgres().url()).await.unwrap();
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    found.is_some()
}

#[tokio::test]
async fn each_database_is_separate_and_dropped_with_its_handle() {
    let (first, second) = (postgres().create_database(), postgres().create_database());
    assert_ne!(first.name(), second.name());
    let mut one = connect(first.url()).await.unwrap();
    sqlx::query("CREATE TABLE only_here (id int)")
        .execute(&mut one)
        .await
        .unwrap();
    let mut two = connect(second.url()).await.unwrap();
    let seen: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_here')::text")
        .fetch_one(&mut two)
        .await
        .unwrap();
    assert_eq!(seen, None, "a table of one database is not in the other");
    two.close().await.unwrap();

    // Dropped even while a connection to it is still open.
    let name = first.name().to_owned();
    assert!(database_exists(&name).await);
    drop(first);
    assert!(!database_exists(&name).await);
    assert!(database_exists(second.name()).await);
    drop(one);
}

#[test]
fn redis_answers_ping() {
    let url = redis().url();
    let addr = url.strip_prefix("redis://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"PING\r\n").unwrap();
    let mut answer = [0_u8; 7];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"+PONG\r\n");
}

#[test]
fn nats_greets_with_jetstream_enabled() {
    let url = nats().url();
    let addr = url.strip_prefix("nats://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut greeting = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !greeting.ends_with(b"\r\n") {
        let read = stream.read(&mut buffer).unwrap();
        assert_ne!(read, 0, "closed after {greeting:?}");
        greeting.extend_from_slice(&buffer[..read]);
    }
    let greeting = String::from_utf8(greeting).unwrap();
    assert!(greeting.starts_with("INFO {"), "{greeting}");
    assert!(greeting.contains("\"jetstream\":true"), "{greeting}");
}

#[tokio::test]
async fn a_cluster_goes_down_and_comes_back_on_the_same_url() {
    let cluster = PgCluster::start_new();
    let url = cluster.url();
    connect(&url).await.unwrap().close().await.unwrap();
    cluster.stop();
    let down = connect(&url).await;
    assert!(down.is_err(), "still answering after stop");
    cluster.start();
    assert_eq!(cluster.url(), url);
    let mut back = connect(&url).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut back)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
