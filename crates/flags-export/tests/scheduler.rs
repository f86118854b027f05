//! The scheduler against exporters that fail, stall and recover: nothing is lost without being
//! counted, order is kept, and no exporter holds back another or the caller.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flags_export::{Backoff, Exporter, Scheduler, SchedulerConfig};
use support::{Mode, TestExporter, records, submit_paced, wait_until};

const LONG: Duration = Duration::from_secs(60);

fn config(spool: Option<&Path>, bound: usize) -> SchedulerConfig {
    SchedulerConfig {
        flush_interval: Duration::from_millis(20),
        max_events_in_memory: bound,
        spool_dir: spool.map(Path::to_owned),
        max_spool_bytes: 1 << 30,
        retry: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(40),
        },
    }
}

fn start(config: SchedulerConfig, exporters: &[&Arc<TestExporter>]) -> Scheduler {
    let exporters = exporters
        .iter()
        .map(|e| Arc::clone(e) as Arc<dyn Exporter>)
        .collect();
    Scheduler::start(config, exporters).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_exporter_gets_a_lone_record_at_the_flush_interval() {
    let exporter = Arc::new(TestExporter::new("bulk", true, Mode::Up));
    let scheduler = start(config(None, 1000), &[&exporter]);
    // Idle through several intervals first, so the task sleeps with no timer armed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    scheduler.submit(records(7..8));
    wait_until(LONG, "the lone record to be exported", || {
        exporter.seen_len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    scheduler.submit(records(8..9));
    wait_until(LONG, "the next lone record to be exported", || {
        exporter.seen_len() == 2
    })
    .await;
    assert_eq!(exporter.seen(), [7, 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_far_larger_than_the_memory_bound_go_to_the_spool_whole() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Arc::new(TestExporter::new("down", false, Mode::Down));
    let scheduler = start(config(Some(dir.path()), 100), &[&exporter]);
    // Each submission is five times the bound: none of it may be dropped while the disk has
    // room.
    for i in 0..10 {
        scheduler.submit(records(i * 500..(i + 1) * 500));
    }
    wait_until(LONG, "everything to be spooled or queued", || {
        let s = &scheduler.stats()[0];
        s.spool_records + s.queue_depth == 5000
    })
    .await;
    assert_eq!(scheduler.stats()[0].dropped, 0);
    exporter.set(Mode::Up);
    wait_until(LONG, "everything to be exported", || {
        exporter.seen_len() == 5000
    })
    .await;
    let mut seen = exporter.seen();
    seen.sort_unstable();
    assert_eq!(seen, (0..5000).collect::<Vec<_>>());
    scheduler.shutdown(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_longer_than_the_memory_bound_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Arc::new(TestExporter::new("down", true, Mode::Down));
    let scheduler = start(config(Some(dir.path()), 100), &[&exporter]);
    submit_paced(&scheduler, 0, 0..5000, 50, 250).await;
    wait_until(LONG, "everything past the bound to be spooled", || {
        let s = &scheduler.stats()[0];
        s.spool_records + s.queue_depth == 5000
    })
    .await;
    let stats = &scheduler.stats()[0];
    assert!(stats.spooled >= 4000, "{stats:?}");
    assert!(stats.spool_bytes > 0 && stats.retried > 0, "{stats:?}");

    exporter.set(Mode::Up);
    wait_until(LONG, "everything to be exported", || {
        exporter.seen_len() == 5000
    })
    .await;
    // In order: the batch that was retried, then the spool, then what stayed in memory.
    assert_eq!(exporter.seen(), (0..5000).collect::<Vec<_>>());
    let report = scheduler.shutdown(LONG).await;
    let stats = &report.exporters[0].stats;
    assert_eq!(
        (stats.received, stats.exported, stats.dropped),
        (5000, 5000, 0)
    );
    assert_eq!(stats.replayed, stats.spooled);
    assert_eq!(
        (stats.spool_records, stats.spool_bytes, stats.queue_depth),
        (0, 0, 0)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_past_the_disk_bound_drops_exactly_what_it_counts() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Arc::new(TestExporter::new("down", true, Mode::Down));
    let mut config = config(Some(dir.path()), 100);
    config.max_spool_bytes = 64 << 10;
    let scheduler = start(config, &[&exporter]);
    submit_paced(&scheduler, 0, 0..20_000, 50, 250).await;
    wait_until(LONG, "everything past the bound to leave memory", || {
        let s = &scheduler.stats()[0];
        s.spool_records + s.queue_depth + s.dropped == 20_000
    })
    .await;
    let stats = scheduler.stats()[0].clone();
    assert!(stats.dropped > 0, "{stats:?}");
    assert!(stats.spool_bytes <= 64 << 10, "{stats:?}");

    exporter.set(Mode::Up);
    let report = scheduler.shutdown(LONG).await;
    let stats = &report.exporters[0].stats;
    let seen = exporter.seen();
    // Every record was exported once or dropped and counted, never both, never neither.
    assert_eq!(seen.len() as u64 + stats.dropped, 20_000, "{stats:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated"
    );
    assert_eq!(seen.last(), Some(&19_999));
    assert_eq!(stats.exported, seen.len() as u64);
    assert_eq!(report.exporters[0].left_in_spool, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spool_the_oldest_past_the_memory_bound_are_dropped_and_counted() {
    let exporter = Arc::new(TestExporter::new("down", false, Mode::Down));
    let scheduler = start(config(None, 100), &[&exporter]);
    for chunk in 0..100 {
        scheduler.submit(records(chunk * 10..chunk * 10 + 10));
    }
    let stats = scheduler.stats()[0].clone();
    assert_eq!(stats.received, 1000);
    assert!(stats.queue_depth <= 200, "{stats:?}");
    assert_eq!(
        stats.received,
        stats.dropped + stats.queue_depth,
        "{stats:?}"
    );

    exporter.set(Mode::Up);
    let report = scheduler.shutdown(LONG).await;
    let stats = &report.exporters[0].stats;
    let seen = exporter.seen();
    assert_eq!(seen.len() as u64 + stats.dropped, 1000, "{stats:?}");
    assert_eq!(seen.last(), Some(&999));
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_are_dropped_and_counted() {
    let exporter = Arc::new(TestExporter::new("refusing", false, Mode::Refusing));
    let scheduler = start(config(None, 100), &[&exporter]);
    scheduler.submit(records(0..30));
    wait_until(LONG, "the refusal", || scheduler.stats()[0].dropped == 30).await;
    let report = scheduler.shutdown(LONG).await;
    assert_eq!(report.exporters[0].stats.exported, 0);
    assert_eq!(report.exporters[0].stats.retried, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_a_million_records_in_flight_exports_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let bulk = Arc::new(TestExporter::new("bulk", true, Mode::Up));
    let streaming = Arc::new(TestExporter::new("streaming", false, Mode::Up));
    // Room for all of them in memory, so that all of them are in flight at the shutdown (with
    // a smaller bound a producer this fast has them spooled, or dropped past four times it).
    let mut config = config(Some(dir.path()), 1_000_000);
    config.flush_interval = Duration::from_secs(3600);
    let scheduler = start(config, &[&bulk, &streaming]);
    for chunk in 0..1000 {
        scheduler.submit(records(chunk * 1000..chunk * 1000 + 1000));
    }
    let report = scheduler.shutdown(LONG).await;
    for (exporter, report) in [&bulk, &streaming].iter().zip(&report.exporters) {
        assert_eq!(report.stats.received, 1_000_000, "{report:?}");
        assert_eq!(report.stats.exported, 1_000_000, "{report:?}");
        assert_eq!((report.dropped, report.left_in_spool), (0, 0), "{report:?}");
        assert!(!report.deadline_passed);
        let seen = exporter.seen();
        assert_eq!(seen.len(), 1_000_000);
        assert!(seen.iter().copied().eq(0..1_000_000), "out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_exporter_does_not_delay_a_fast_one() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(TestExporter::new(
        "slow",
        false,
        Mode::Slow(Duration::from_secs(3600)),
    ));
    let fast = Arc::new(TestExporter::new("fast", false, Mode::Up));
    let scheduler = start(config(Some(dir.path()), 1000), &[&slow, &fast]);
    for chunk in 0..10 {
        scheduler.submit(records(chunk * 10..chunk * 10 + 10));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_until(LONG, "the fast exporter", || fast.seen_len() == 100).await;
    assert_eq!(fast.seen(), (0..100).collect::<Vec<_>>());
    assert_eq!(slow.seen_len(), 0);

    // The slow one's batch in flight and its queue go to the spool at the deadline.
    let report = scheduler.shutdown(Duration::from_millis(200)).await;
    let slow_report = &report.exporters[0];
    assert!(slow_report.deadline_passed);
    assert_eq!(slow_report.spooled, 100, "{slow_report:?}");
    assert_eq!(slow_report.left_in_spool, 100);
    assert_eq!(report.exporters[1].stats.exported, 100);
    assert!(!report.exporters[1].deadline_passed);

    // And the next start exports them, oldest first.
    let back = Arc::new(TestExporter::new("slow", false, Mode::Up));
    let scheduler = start(config(Some(dir.path()), 1000), &[&back]);
    wait_until(LONG, "the replay", || back.seen_len() == 100).await;
    assert_eq!(back.seen(), (0..100).collect::<Vec<_>>());
    assert_eq!(scheduler.stats()[0].replayed, 100);
    scheduler.shutdown(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_under_a_stuck_exporter_returns_promptly() {
    let stuck = Arc::new(TestExporter::new("stuck", true, Mode::Stuck));
    let scheduler = start(config(None, 1000), &[&stuck]);
    let chunks: Vec<_> = (0..200)
        .map(|c| records(c * 1000..c * 1000 + 1000))
        .collect();
    let started = Instant::now();
    for chunk in chunks {
        scheduler.submit(chunk);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let stats = scheduler.stats()[0].clone();
    assert_eq!(stats.received, 200_000);
    assert!(stats.queue_depth <= 2000, "{stats:?}");

    let report = scheduler.shutdown(Duration::from_millis(100)).await;
    let report = &report.exporters[0];
    assert!(report.deadline_passed);
    // Without a spool, what it held at the deadline is dropped, and counted.
    assert_eq!(report.stats.dropped, 200_000, "{report:?}");
    assert_eq!(report.stats.exported, 0);
    // Submitted after shutdown: dropped and counted too.
    scheduler.submit(records(0..5));
    assert_eq!(scheduler.stats()[0].dropped, 200_005);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_waits_for_room_loses_nothing_to_a_slow_exporter() {
    // No spool and a bound of 100: submitted without waiting, a burst of 20,000 into an
    // exporter this slow drops most of it (the test above).
    let slow = Arc::new(TestExporter::new(
        "slow",
        true,
        Mode::Slow(Duration::from_millis(2)),
    ));
    let scheduler = start(config(None, 100), &[&slow]);
    let mut deepest = 0;
    for chunk in 0..400 {
        scheduler
            .submit_when_room(records(chunk * 50..chunk * 50 + 50), LONG)
            .await;
        deepest = deepest.max(scheduler.stats()[0].queue_depth);
    }
    // Within the bound, plus one submission and the batch in flight.
    assert!(deepest <= 250, "{deepest}");
    let report = scheduler.shutdown(LONG).await;
    let stats = &report.exporters[0].stats;
    assert_eq!((stats.exported, stats.dropped), (20_000, 0), "{stats:?}");
    assert_eq!(slow.seen(), (0..20_000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_room_under_a_stuck_exporter_ends_with_the_patience() {
    let stuck = Arc::new(TestExporter::new("stuck", true, Mode::Stuck));
    let scheduler = start(config(None, 100), &[&stuck]);
    // Fills the queue; the task takes a batch and sticks in its export.
    scheduler.submit(records(0..100));
    wait_until(LONG, "the stuck export", || {
        stuck.calls.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    scheduler.submit(records(100..200));
    let started = Instant::now();
    scheduler
        .submit_when_room(records(200..300), Duration::from_millis(300))
        .await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Taken once the patience ran out: the oldest queued gave way, counted.
    let stats = scheduler.stats()[0].clone();
    assert_eq!(stats.received, 300);
    assert_eq!(stats.dropped, 100, "{stats:?}");
    let _ = scheduler.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_and_a_zero_bound_are_refused() {
    let a = Arc::new(TestExporter::new("same", true, Mode::Up));
    let b = Arc::new(TestExporter::new("same", false, Mode::Up));
    let exporters: Vec<Arc<dyn Exporter>> = vec![a, b];
    let error = Scheduler::start(config(None, 10), exporters).unwrap_err();
    assert!(error.to_string().contains("\"same\""), "{error}");
    let error = Scheduler::start(config(None, 0), Vec::new()).unwrap_err();
    assert!(
        error.to_string().contains("max_events_in_memory"),
        "{error}"
    );
}

/// Set in the child process of the SIGKILL test: the spool directory it uses.
const CHILD_SPOOL: &str = "FLAGS_EXPORT_TEST_CHILD_SPOOL";

#[test]
fn records_spooled_before_a_sigkill_are_replayed_after_restart() {
    if let Ok(dir) = std::env::var(CHILD_SPOOL) {
        spool_then_wait_to_be_killed(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "records_spooled_before_a_sigkill_are_replayed_after_restart",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SPOOL, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child exited early"
        );
        assert!(started.elapsed() < LONG, "the child never spooled");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Child::kill sends SIGKILL: no destructor, no shutdown, no flush runs in the child.
    child.kill().unwrap();
    child.wait().unwrap();
    let spooled: u64 = std::fs::read_to_string(&ready).unwrap().parse().unwrap();
    assert!(spooled >= 2000, "{spooled}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let exporter = Arc::new(TestExporter::new("killed", true, Mode::Up));
        let scheduler = start(config(Some(&dir.path().join("spool")), 100), &[&exporter]);
        assert_eq!(scheduler.stats()[0].spool_records, spooled);
        wait_until(LONG, "the replay", || exporter.seen_len() as u64 == spooled).await;
        // One run, in order: the batch in flight (the oldest) was in memory only, and so may
        // be the short queue after the last spill (the newest).
        let seen = exporter.seen();
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 1),
            "not one run in order"
        );
        assert!(
            seen[0] > 0 && *seen.last().unwrap() <= 2999,
            "{:?}",
            (seen[0], seen.last())
        );
        let report = scheduler.shutdown(LONG).await;
        assert_eq!(report.exporters[0].stats.replayed, spooled);
        assert_eq!(report.exporters[0].stats.dropped, 0);
        assert_eq!(report.exporters[0].left_in_spool, 0);
    });
}

fn spool_then_wait_to_be_killed(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let exporter = Arc::new(TestExporter::new("killed", true, Mode::Down));
        let scheduler = start(config(Some(&dir.join("spool")), 100), &[&exporter]);
        submit_paced(&scheduler, 0, 0..3000, 50, 250).await;
        wait_until(LONG, "everything past the bound to be spooled", || {
            let s = &scheduler.stats()[0];
            s.spooled + s.queue_depth == 3000 && s.queue_depth <= 200
        })
        .await;
        let spooled = scheduler.stats()[0].spooled;
        let tmp = dir.join("ready.tmp");
        std::fs::write(&tmp, spooled.to_string()).unwrap();
        std::fs::rename(&tmp, dir.join("ready")).unwrap();
        std::future::pending::<()>().await;
    });
}
