//! Throwaway servers die with the test process that started them, even when it is killed.
//!
//! A server kept in a `static` is never dropped, so only the guardian can stop it. This binary
//! runs itself as a child that is told no server answers, so it starts a throwaway PostgreSQL,
//! Redis and NATS through [`postgres()`], [`redis()`] and [`nats()`] and says where they
//! listen. The parent kills the child with SIGKILL (no destructor, no exit handler runs) and
//! checks that every server stops listening and that their directories are removed.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use flags_test_support::process::{KillOnDrop, collected};
use flags_test_support::wait::Poll;
use flags_test_support::{nats, postgres, redis};

/// Set in the child's environment: be the child.
const CHILD: &str = "FLAGD_TEST_GUARDIAN_CHILD";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        child();
    } else {
        parent();
        println!("guardian: throwaway servers stopped and removed after their process was killed");
    }
}

fn child() {
    assert!(postgres().is_throwaway() && redis().is_throwaway() && nats().is_throwaway());
    println!("{}", postgres().url());
    println!("{}", redis().url());
    println!("{}", nats().url());
    // Wait to be killed.
    std::thread::sleep(Duration::from_secs(600));
}

fn parent() {
    // Port 1 on loopback: nothing answers there, so the child starts throwaway servers.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .env(
            "FLAGD_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:1/postgres",
        )
        .env("FLAGD_TEST_REDIS_URL", "redis://127.0.0.1:1")
        .env("FLAGD_TEST_NATS_URL", "nats://127.0.0.1:1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let stderr = collected(child.stderr.take().unwrap());
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut next_addr = |scheme: &str| -> SocketAddr {
        let line = lines.next().and_then(Result::ok).unwrap_or_else(|| {
            panic!(
                "the child said nothing; its stderr:\n{}",
                stderr.lock().unwrap()
            )
        });
        let rest = line
            .strip_prefix(scheme)
            .unwrap_or_else(|| panic!("{line}"));
        let authority = rest.split('/').next().unwrap();
        let host_port = authority.rsplit('@').next().unwrap();
        host_port.parse().unwrap()
    };
    let postgres = next_addr("postgres://");
    let redis = next_addr("redis://");
    let nats = next_addr("nats://");
    for addr in [postgres, redis, nats] {
        assert!(TcpStream::connect(addr).is_ok(), "{addr} listens");
    }
    let dirs = || -> Vec<String> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                name.starts_with(&format!("flagd-test-pg-{pid}-"))
                    || name.starts_with(&format!("flagd-test-redis-{pid}-"))
                    || name.starts_with(&format!("flagd-test-nats-{pid}-"))
            })
            .collect()
    };
    assert_eq!(dirs().len(), 3, "{:?}", dirs());

    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let poll = Poll::new().within(Duration::from_secs(30));
    for addr in [postgres, redis, nats] {
        poll.blocking_until_some(&format!("{addr} to stop listening"), || {
            TcpStream::connect(addr).is_err().then_some(())
        });
    }
    poll.blocking_until_some("the servers' directories to be removed", || {
        dirs().is_empty().then_some(())
    });
}
