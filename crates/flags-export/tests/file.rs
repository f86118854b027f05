//! The file exporter: every format read back and compared field by field with what was
//! exported, rotation, complete files only, and recovery after a crash.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flags_events::{
    CustomRecord, FeatureRecord, JsonText, Metadata, MetricsRecord, Record, SummaryRecord,
};
use flags_export::{
    ColumnKind, Exporter, FileExporter, FileFormat, FileSettings, Scheduler, SchedulerConfig,
};
use serde_json::{Map, Value, json};

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Every kind, with the awkward text CSV must quote, optional fields both present and absent,
/// and nested JSON values.
fn samples() -> Vec<Record> {
    vec![
        Record::Feature(FeatureRecord {
            context_kind: "user".into(),
            user_key: "a,b \"quoted\"\nnew line".to_owned(),
            creation_date: 1_796_534_320_123,
            key: "flag-ü".to_owned(),
            variation: Some(1),
            value: json!({"nested": [1, 2.5, "x", null, true]}),
            default: false,
            version: Some(7),
            source: "SERVER".into(),
            metadata: Metadata {
                context_keys: vec![("user".to_owned(), "a".to_owned())],
                reason: Some(JsonText::from_value(&json!({"kind": "FALLTHROUGH"}))),
                ..Metadata::default()
            },
        }),
        Record::Feature(FeatureRecord {
            context_kind: "anonymousUser".into(),
            user_key: String::new(),
            creation_date: 1,
            key: "k".to_owned(),
            variation: None,
            value: Value::Null,
            default: true,
            version: None,
            source: "SDK".into(),
            metadata: Metadata::default(),
        }),
        Record::Custom(CustomRecord {
            context_kind: "user".into(),
            user_key: "u".to_owned(),
            creation_date: 2,
            key: "goal".to_owned(),
            value: Some(12.25),
            data: Some(json!(["a", {"b": 1}])),
            source: "SDK".into(),
            metadata: Metadata {
                context_keys: vec![("org".to_owned(), "o".to_owned())],
                ..Metadata::default()
            },
        }),
        Record::Custom(CustomRecord {
            context_kind: "user".into(),
            user_key: "u2".to_owned(),
            creation_date: 3,
            key: "click".to_owned(),
            value: None,
            data: None,
            source: "SDK".into(),
            metadata: Metadata::default(),
        }),
        Record::Summary(SummaryRecord {
            creation_date: 10,
            start_date: 5,
            key: "flag".to_owned(),
            variation: Some(0),
            value: json!("on"),
            version: Some(3),
            count: u64::MAX,
            default: json!("off"),
            context_kinds: vec!["user".to_owned(), "org".to_owned()],
            source: "SDK".into(),
        }),
        Record::Metrics(MetricsRecord {
            creation_date: 11,
            metric: "latency".to_owned(),
            api: "poll".to_owned(),
            value: 0.5,
            labels: map(json!({"sdk": "rust"})),
            source: "SDK".into(),
        }),
    ]
}

fn settings(dir: &Path, format: FileFormat) -> FileSettings {
    FileSettings {
        dir: dir.to_owned(),
        format,
        max_bytes: None,
        max_age_secs: None,
        host: Some("test-host".to_owned()),
    }
}

/// The completed files, in name order: what a reader listing `flag-variation-*` sees.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    files.sort();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("flag-variation-test-host-2"), "{name}");
        assert!(!name.ends_with(".tmp"), "{name}");
    }
    files
}

/// Files still being written, under their temporary names.
fn open_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".tmp")
        })
        .count()
}

fn read_back(path: &Path, format: FileFormat) -> Vec<Record> {
    match format {
        FileFormat::Jsonl => std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect(),
        FileFormat::Csv => {
            let mut reader = csv::Reader::from_path(path).unwrap();
            let header: Vec<String> = reader
                .headers()
                .unwrap()
                .iter()
                .map(str::to_owned)
                .collect();
            let names: Vec<&str> = FileExporter::COLUMNS.iter().map(|c| c.name).collect();
            assert_eq!(header, names);
            reader
                .records()
                .map(|row| {
                    let row = row.unwrap();
                    let mut object = Map::new();
                    for (column, cell) in FileExporter::COLUMNS.iter().zip(row.iter()) {
                        let value = match column.kind {
                            ColumnKind::Text => Value::from(cell),
                            _ if cell.is_empty() => continue,
                            ColumnKind::Integer => Value::from(cell.parse::<u64>().unwrap()),
                            ColumnKind::Json => serde_json::from_str(cell).unwrap(),
                        };
                        object.insert(column.name.to_owned(), value);
                    }
                    serde_json::from_value(Value::Object(object)).unwrap()
                })
                .collect()
        }
        FileFormat::Parquet => {
            use parquet::file::reader::{FileReader, SerializedFileReader};
            use parquet::record::Field;
            let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
            reader
                .get_row_iter(None)
                .unwrap()
                .map(|row| {
                    let row = row.unwrap();
                    let mut object = Map::new();
                    for ((name, field), column) in row.get_column_iter().zip(FileExporter::COLUMNS)
                    {
                        assert_eq!(name, column.name);
                        let value = match (column.kind, field) {
                            (_, Field::Null) => continue,
                            (ColumnKind::Text, Field::Str(s)) => Value::from(s.as_str()),
                            (ColumnKind::Json, Field::Str(s)) => serde_json::from_str(s).unwrap(),
                            (ColumnKind::Integer, Field::ULong(n)) => Value::from(*n),
                            (kind, field) => panic!("{name}: {kind:?} holds {field:?}"),
                        };
                        object.insert(name.clone(), value);
                    }
                    serde_json::from_value(Value::Object(object)).unwrap()
                })
                .collect()
        }
    }
}

fn read_all(dir: &Path, format: FileFormat) -> Vec<Record> {
    files(dir)
        .iter()
        .flat_map(|f| read_back(f, format))
        .collect()
}

#[tokio::test]
async fn every_format_reads_back_as_exported() {
    for format in [FileFormat::Jsonl, FileFormat::Csv, FileFormat::Parquet] {
        let dir = tempfile::tempdir().unwrap();
        let exporter = FileExporter::new(settings(dir.path(), format)).unwrap();
        let first = samples();
        let second: Vec<Record> = samples().into_iter().rev().collect();
        exporter.export(&first).await.unwrap();
        exporter.export(&second).await.unwrap();
        // Nothing is visible before the file is complete.
        assert!(files(dir.path()).is_empty(), "{format:?}");
        assert_eq!(open_files(dir.path()), 1);
        exporter.close().await.unwrap();
        assert_eq!(open_files(dir.path()), 0);
        let files = files(dir.path());
        assert_eq!(files.len(), 1, "{format:?}");
        assert!(files[0].to_str().unwrap().ends_with(format.extension()));
        let expected: Vec<Record> = first.into_iter().chain(second).collect();
        assert_eq!(read_back(&files[0], format), expected, "{format:?}");
    }
}

#[test]
fn every_field_of_every_kind_has_a_column_of_its_type() {
    for record in samples() {
        let Value::Object(fields) = serde_json::to_value(&record).unwrap() else {
            panic!("not an object");
        };
        for (name, value) in fields {
            let column = FileExporter::COLUMNS
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("{name} of {} has no column", record.kind()));
            match column.kind {
                ColumnKind::Text => assert!(value.is_string(), "{name}"),
                ColumnKind::Integer => assert!(value.is_u64(), "{name}"),
                ColumnKind::Json => {}
            }
        }
    }
}

/// Waits until `n` complete files are in `dir` (full files are published on the side).
async fn eventually_files(dir: &Path, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while files(dir).len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} complete files, expected {n}",
            files(dir).len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(files(dir).len(), n);
}

#[tokio::test]
async fn files_rotate_by_size_and_names_sort_in_order() {
    for format in [FileFormat::Jsonl, FileFormat::Csv, FileFormat::Parquet] {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings(dir.path(), format);
        settings.max_bytes = Some(1);
        let exporter = FileExporter::new(settings).unwrap();
        let mut expected = Vec::new();
        for _ in 0..5 {
            let batch = samples();
            exporter.export(&batch).await.unwrap();
            expected.extend(batch);
        }
        // Every batch filled a file, which is completed (synced and renamed) on the side.
        eventually_files(dir.path(), 5).await;
        exporter.close().await.unwrap();
        assert_eq!(read_all(dir.path(), format), expected, "{format:?}");
    }
}

#[tokio::test]
async fn files_rotate_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), FileFormat::Jsonl);
    settings.max_age_secs = Some(1);
    let exporter = FileExporter::new(settings).unwrap();
    exporter.export(&samples()).await.unwrap();
    assert_eq!(files(dir.path()).len(), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    exporter.export(&samples()).await.unwrap();
    eventually_files(dir.path(), 1).await;
    exporter.close().await.unwrap();
    assert_eq!(files(dir.path()).len(), 2);
}

#[tokio::test]
async fn a_file_left_open_by_a_crash_is_completed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = FileExporter::new(settings(dir.path(), FileFormat::Jsonl)).unwrap();
    exporter.export(&samples()).await.unwrap();
    // No close: as if the process died. Then a torn last line, as a kill mid-write leaves.
    drop(exporter);
    let tmp = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&tmp).unwrap();
    bytes.extend_from_slice(b"{\"kind\":\"feat");
    std::fs::write(&tmp, bytes).unwrap();

    let exporter = FileExporter::new(settings(dir.path(), FileFormat::Jsonl)).unwrap();
    assert_eq!(open_files(dir.path()), 0);
    assert_eq!(read_all(dir.path(), FileFormat::Jsonl), samples());
    exporter.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_submitted_to_the_scheduler_reach_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let exporter: Arc<dyn Exporter> =
        Arc::new(FileExporter::new(settings(dir.path(), FileFormat::Csv)).unwrap());
    let scheduler = Scheduler::start(SchedulerConfig::default(), vec![exporter]).unwrap();
    let mut expected = Vec::new();
    for _ in 0..100 {
        scheduler.submit(samples());
        expected.extend(samples());
    }
    let report = scheduler.shutdown(Duration::from_secs(60)).await;
    assert_eq!(report.exporters[0].exported, 600);
    assert_eq!(read_all(dir.path(), FileFormat::Csv), expected);
}

#[test]
fn settings_have_defaults_and_refuse_unknown_fields() {
    let settings: FileSettings = serde_json::from_value(json!({"dir": "/tmp/x"})).unwrap();
    assert_eq!(settings.format, FileFormat::Jsonl);
    assert_eq!(settings.max_bytes, Some(64 << 20));
    assert_eq!(settings.max_age_secs, Some(3600));
    let settings: FileSettings =
        serde_json::from_value(json!({"dir": "d", "format": "parquet", "max_bytes": null}))
            .unwrap();
    assert_eq!(
        (settings.format, settings.max_bytes),
        (FileFormat::Parquet, None)
    );
    let error =
        serde_json::from_value::<FileSettings>(json!({"dir": "d", "fromat": "csv"})).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `fromat`"),
        "{error}"
    );
    assert!(serde_json::from_value::<FileSettings>(json!({})).is_err());
}

/// On a multi-thread runtime JSON lines are written a step at a time beside the runtime's
/// workers; batches larger than a step, and files rotating between batches, read back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_written_in_steps_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), FileFormat::Jsonl);
    settings.max_bytes = Some(1 << 20);
    let exporter = FileExporter::new(settings).unwrap();
    let mut expected = Vec::new();
    for round in 0..3u64 {
        let batch: Vec<Record> = (0..5_000u64)
            .flat_map(|i| {
                samples().into_iter().map(move |mut r| {
                    if let Record::Feature(f) = &mut r {
                        f.creation_date = round * 1_000_000 + i;
                    }
                    r
                })
            })
            .collect();
        exporter.export(&batch).await.unwrap();
        expected.extend(batch);
    }
    exporter.close().await.unwrap();
    // A batch goes whole into one file; each filled one.
    assert_eq!(files(dir.path()).len(), 3);
    assert_eq!(read_all(dir.path(), FileFormat::Jsonl), expected);
}
