//! Records per second from `Scheduler::submit` to complete JSON lines files, against the floor:
//! the same records through `serde_json::to_writer` into a `BufWriter<File>`, with no scheduler.

#![allow(clippy::unwrap_used)]

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flags_events::{FeatureRecord, JsonText, Metadata, Record};
use flags_export::{Exporter, FileExporter, FileFormat, FileSettings, Scheduler, SchedulerConfig};
use serde_json::json;

const RECORDS: usize = 200_000;
/// Records per `submit`, as one `/bulk` request of a busy SDK brings.
const CHUNK: usize = 500;

/// An evaluation as flagd records them: about 300 bytes of JSON.
fn record(i: usize) -> Record {
    let metadata = Metadata {
        context_keys: vec![("user".to_owned(), format!("user-{i}"))],
        reason: Some(JsonText::from_value(&json!({"kind": "FALLTHROUGH"}))),
        default_value: Some(json!(false)),
        ..Metadata::default()
    };
    Record::Feature(FeatureRecord {
        context_kind: "user".into(),
        user_key: format!("user-{i}"),
        creation_date: 1_796_534_320_123 + i as u64,
        key: format!("flag-{}", i % 50),
        variation: Some(1),
        value: json!(true),
        default: false,
        version: Some(12),
        source: "SERVER".into(),
        metadata,
    })
}

fn chunks() -> Vec<Vec<Record>> {
    (0..RECORDS / CHUNK)
        .map(|c| (c * CHUNK..(c + 1) * CHUNK).map(record).collect())
        .collect()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("export_jsonl");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));

    // The default memory bound (100,000): this producer outruns the file, so the queue past
    // the bound goes through the spool and back.
    scheduler_to_file(&mut group, &runtime, "scheduler_to_file", 100_000);
    // A bound that holds the whole run: no spill.
    scheduler_to_file(&mut group, &runtime, "scheduler_to_file_no_spill", RECORDS);

    group.bench_function("serde_json_bufwriter_floor", |b| {
        b.iter_batched(
            || (chunks(), tempfile::tempdir().unwrap()),
            |(chunks, dir)| {
                let file = std::fs::File::create(dir.path().join("floor.jsonl")).unwrap();
                let mut out = BufWriter::new(file);
                for chunk in &chunks {
                    for record in chunk {
                        serde_json::to_writer(&mut out, record).unwrap();
                        out.write_all(b"\n").unwrap();
                    }
                }
                out.into_inner().unwrap().sync_all().unwrap();
                // Freed inside the timing, as the scheduler frees what it exported.
                drop(chunks);
                dir
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn scheduler_to_file(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    bound: usize,
) {
    let spooled = std::sync::atomic::AtomicU64::new(0);
    group.bench_function(name, |b| {
        b.iter_batched(
            || (chunks(), tempfile::tempdir().unwrap()),
            |(chunks, dir)| {
                runtime.block_on(async {
                    let settings = FileSettings {
                        dir: dir.path().join("out"),
                        format: FileFormat::Jsonl,
                        max_bytes: Some(64 << 20),
                        max_age_secs: None,
                        host: Some("bench".to_owned()),
                    };
                    let exporter: Arc<dyn Exporter> =
                        Arc::new(FileExporter::new(settings).unwrap());
                    let config = SchedulerConfig {
                        spool_dir: Some(dir.path().join("spool")),
                        max_events_in_memory: bound,
                        ..SchedulerConfig::default()
                    };
                    let scheduler = Scheduler::start(config, vec![exporter]).unwrap();
                    for chunk in chunks {
                        scheduler.submit(chunk);
                    }
                    let report = scheduler.shutdown(Duration::from_secs(600)).await;
                    let stats = &report.exporters[0].stats;
                    assert_eq!(stats.exported, RECORDS as u64);
                    spooled.fetch_add(stats.spooled, std::sync::atomic::Ordering::Relaxed);
                });
                dir
            },
            BatchSize::PerIteration,
        );
    });
    eprintln!(
        "{name}: {} records went through the spool over all iterations",
        spooled.into_inner()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
