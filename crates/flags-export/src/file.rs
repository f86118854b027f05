//! The file exporter: records as JSON lines, CSV or Parquet, in files that rotate by size or
//! age and whose names sort by time.
//!
//! A file is written under a hidden temporary name (`.flag-variation-….jsonl.tmp`) and renamed
//! when it is complete, so a reader listing `flag-variation-*` never sees half a file. A JSON
//! lines or CSV file left half-written by a crash is cut at its last whole line and renamed when
//! the exporter next starts; a Parquet file cannot be read without its footer, so such a file
//! is reported and left where it is.
//!
//! CSV and Parquet files have one column per top-level field across every record kind
//! ([`FileExporter::COLUMNS`]). A cell is empty (Parquet: null) when the record's kind has no
//! such field; text fields hold their text, numeric ones their number, and every other value
//! (JSON values, maps, lists, booleans) its JSON text.

use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use flags_events::Record;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde::Deserialize;
use serde_json::Value;

use crate::exporter::{ExportError, Exporter};

/// Where and how the file exporter writes. Only `dir` is required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// The directory the files go to, created if missing.
    pub dir: PathBuf,
    /// The files' format. Default `jsonl`.
    #[serde(default)]
    pub format: FileFormat,
    /// A file is completed once it holds this many bytes (a batch is never split, so a file
    /// may pass it by one batch). `null`: no size limit. Default 64 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: Option<u64>,
    /// A file is completed when a batch arrives this many seconds or more after it was
    /// started, and at shutdown. `null`: no age limit. Default one hour.
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: Option<u64>,
    /// The `{host}` in file names. Default: this machine's host name.
    #[serde(default)]
    pub host: Option<String>,
}

/// A file format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One record's JSON per line (`.jsonl`).
    #[default]
    Jsonl,
    /// A header row, then one row per record (`.csv`).
    Csv,
    /// One row group per batch, Snappy-compressed (`.parquet`).
    Parquet,
}

/// A column of the CSV and Parquet files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The record field's JSON name.
    pub name: &'static str,
    /// What its cells hold.
    pub kind: ColumnKind,
}

/// What a column's cells hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// The field's text. In CSV an empty cell of a text column is an empty string.
    Text,
    /// A non-negative integer (Parquet: `INT64`, annotated unsigned).
    Integer,
    /// The field's JSON text (Parquet: `BYTE_ARRAY` annotated `JSON`).
    Json,
}

/// Why the file exporter could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A setting cannot work.
    #[error("invalid file exporter settings: {0}")]
    Invalid(String),
    /// The directory could not be created or read.
    #[error("file exporter directory {}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// Writes records to files in a directory: a bulk exporter.
pub struct FileExporter {
    name: String,
    format: FileFormat,
    state: Arc<Mutex<State>>,
}

impl FileExporter {
    /// The columns of CSV and Parquet files, in order: the union of every record kind's fields.
    pub const COLUMNS: &'static [Column] = &[
        col("kind", ColumnKind::Text),
        col("creationDate", ColumnKind::Integer),
        col("key", ColumnKind::Text),
        col("contextKind", ColumnKind::Text),
        col("userKey", ColumnKind::Text),
        col("variation", ColumnKind::Text),
        col("value", ColumnKind::Json),
        col("default", ColumnKind::Json),
        col("version", ColumnKind::Text),
        col("source", ColumnKind::Text),
        col("metadata", ColumnKind::Json),
        col("data", ColumnKind::Json),
        col("startDate", ColumnKind::Integer),
        col("count", ColumnKind::Integer),
        col("contextKinds", ColumnKind::Json),
        col("metric", ColumnKind::Text),
        col("api", ColumnKind::Text),
        col("labels", ColumnKind::Json),
    ];

    /// An exporter writing to `settings.dir`, which is created if missing. Files a crash left
    /// half-written there are recovered first (see the module documentation).
    pub fn new(settings: FileSettings) -> Result<FileExporter, FileError> {
        if settings.max_bytes == Some(0) || settings.max_age_secs == Some(0) {
            return Err(FileError::Invalid(
                "max_bytes and max_age_secs must be at least 1 (or null for no limit)".to_owned(),
            ));
        }
        let host = sanitize(&settings.host.clone().unwrap_or_else(host_name));
        if host.is_empty() {
            return Err(FileError::Invalid("host must not be empty".to_owned()));
        }
        fs::create_dir_all(&settings.dir).map_err(|source| FileError::Io {
            path: settings.dir.clone(),
            source,
        })?;
        recover(&settings.dir, settings.format).map_err(|source| FileError::Io {
            path: settings.dir.clone(),
            source,
        })?;
        Ok(FileExporter {
            name: format!("file:{}", settings.dir.display()),
            format: settings.format,
            state: Arc::new(Mutex::new(State {
                dir: settings.dir,
                format: settings.format,
                max_bytes: settings.max_bytes,
                max_age: settings.max_age_secs.map(Duration::from_secs),
                host,
                seq: 0,
                open: None,
                publishing: Vec::new(),
                scratch: Vec::new(),
            })),
        })
    }
}

#[async_trait]
impl Exporter for FileExporter {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_bulk(&self) -> bool {
        true
    }

    async fn export(&self, records: &[Record]) -> Result<(), ExportError> {
        if records.is_empty() {
            return Ok(());
        }
        let encode = || {
            encode(self.format, records)
                .map_err(|e| ExportError::Permanent(format!("cannot encode records: {e}")))
        };
        let written = |result: io::Result<()>| {
            result.map_err(|e| ExportError::Retryable(format!("cannot write the file: {e}")))
        };
        if crate::offload::can_block_in_place() {
            // Encoding a large batch is the bulk of the work: done beside the runtime's
            // workers, it shares the CPU with request handling instead of stalling it.
            return tokio::task::block_in_place(|| {
                if self.format == FileFormat::Jsonl {
                    return written(lock(&self.state).write_lines(records));
                }
                let encoded = encode()?;
                written(lock(&self.state).write(encoded))
            });
        }
        let encoded = encode()?;
        let state = Arc::clone(&self.state);
        let result = tokio::task::spawn_blocking(move || lock(&state).write(encoded))
            .await
            .map_err(|e| ExportError::Retryable(format!("file write task failed: {e}")))?;
        written(result)
    }

    async fn close(&self) -> Result<(), ExportError> {
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || lock(&state).finish())
            .await
            .map_err(|e| ExportError::Retryable(format!("file close task failed: {e}")))?
            .map_err(|e| ExportError::Retryable(format!("cannot complete the file: {e}")))
    }
}

impl std::fmt::Debug for FileExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileExporter")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish()
    }
}

impl FileFormat {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Jsonl => "jsonl",
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }
}

const fn col(name: &'static str, kind: ColumnKind) -> Column {
    Column { name, kind }
}

fn default_max_bytes() -> Option<u64> {
    Some(64 << 20)
}

fn default_max_age_secs() -> Option<u64> {
    Some(3600)
}

struct State {
    dir: PathBuf,
    format: FileFormat,
    max_bytes: Option<u64>,
    max_age: Option<Duration>,
    host: String,
    seq: u64,
    open: Option<OpenFile>,
    /// Full files being synced and published on threads of their own, so that writing goes
    /// on into the next file meanwhile; `close` waits for them.
    publishing: Vec<std::thread::JoinHandle<io::Result<()>>>,
    /// Reused by [`State::write_lines`] for each step's bytes.
    scratch: Vec<u8>,
}

struct OpenFile {
    tmp: PathBuf,
    path: PathBuf,
    opened: Instant,
    sink: Sink,
}

impl OpenFile {
    /// Writes out what the file's writer still buffers (a Parquet footer) and gives the file
    /// with its temporary and final names.
    fn close(self) -> io::Result<(File, PathBuf, PathBuf)> {
        let file = match self.sink {
            Sink::Bytes { file, .. } => file,
            Sink::Parquet { writer, .. } => {
                let buffered = (*writer).into_inner().map_err(io::Error::other)?;
                buffered
                    .into_inner()
                    .map_err(io::IntoInnerError::into_error)?
            }
        };
        Ok((file, self.tmp, self.path))
    }
}

/// Syncs a complete file and gives it its final name: only then does a reader see it.
fn publish(file: &File, tmp: &Path, path: &Path) -> io::Result<()> {
    file.sync_all()?;
    fs::rename(tmp, path)
}

enum Sink {
    /// JSON lines and CSV: `len` bytes written, the length to cut back to if a write fails.
    Bytes { file: File, len: u64 },
    Parquet {
        // Boxed: the writer is large, and there is one per open file.
        writer: Box<SerializedFileWriter<BufWriter<File>>>,
        rows: u64,
    },
}

/// A batch, encoded on the runtime and written off it.
enum Encoded {
    Bytes(Vec<u8>),
    Parquet(Vec<ColumnData>),
}

enum ColumnData {
    Text {
        values: Vec<ByteArray>,
        defs: Vec<i16>,
    },
    Integer {
        values: Vec<i64>,
        defs: Vec<i16>,
    },
}

/// One cell of a CSV or Parquet row.
enum Cell {
    Text(String),
    Integer(u64),
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update of State completes before its guard drops, so a poisoned one is consistent.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn encode(format: FileFormat, records: &[Record]) -> Result<Encoded, String> {
    match format {
        FileFormat::Jsonl => {
            let mut out = Vec::with_capacity(records.len() * 512);
            for record in records {
                record.write_json(&mut out);
                out.push(b'\n');
            }
            Ok(Encoded::Bytes(out))
        }
        FileFormat::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::with_capacity(records.len() * 256));
            let mut fields: Vec<String> = Vec::with_capacity(FileExporter::COLUMNS.len());
            for record in records {
                fields.clear();
                fields.extend(row(record)?.into_iter().map(|cell| match cell {
                    None => String::new(),
                    Some(Cell::Text(s)) => s,
                    Some(Cell::Integer(n)) => n.to_string(),
                }));
                writer.write_record(&fields).map_err(|e| e.to_string())?;
            }
            writer
                .into_inner()
                .map(Encoded::Bytes)
                .map_err(|e| e.to_string())
        }
        FileFormat::Parquet => {
            let mut columns: Vec<ColumnData> = FileExporter::COLUMNS
                .iter()
                .map(|c| match c.kind {
                    ColumnKind::Integer => ColumnData::Integer {
                        values: Vec::with_capacity(records.len()),
                        defs: Vec::with_capacity(records.len()),
                    },
                    ColumnKind::Text | ColumnKind::Json => ColumnData::Text {
                        values: Vec::with_capacity(records.len()),
                        defs: Vec::with_capacity(records.len()),
                    },
                })
                .collect();
            for record in records {
                for (cell, column) in row(record)?.into_iter().zip(&mut columns) {
                    match (column, cell) {
                        (ColumnData::Text { values, defs }, Some(Cell::Text(s))) => {
                            values.push(ByteArray::from(s.into_bytes()));
                            defs.push(1);
                        }
                        (ColumnData::Integer { values, defs }, Some(Cell::Integer(n))) => {
                            // Stored as INT64 annotated unsigned: the bits are the u64's.
                            values.push(n as i64);
                            defs.push(1);
                        }
                        (ColumnData::Text { defs, .. } | ColumnData::Integer { defs, .. }, _) => {
                            defs.push(0)
                        }
                    }
                }
            }
            Ok(Encoded::Parquet(columns))
        }
    }
}

/// A record's cells, one per column.
fn row(record: &Record) -> Result<Vec<Option<Cell>>, String> {
    let Value::Object(mut fields) = serde_json::to_value(record).map_err(|e| e.to_string())? else {
        return Err("a record did not serialize to a JSON object".to_owned());
    };
    Ok(FileExporter::COLUMNS
        .iter()
        .map(|column| {
            let value = fields.remove(column.name)?;
            match (column.kind, value) {
                (ColumnKind::Text, Value::String(s)) => Some(Cell::Text(s)),
                (ColumnKind::Text, Value::Null) => None,
                (ColumnKind::Integer, Value::Number(n)) => n.as_u64().map(Cell::Integer),
                (ColumnKind::Integer, _) => None,
                (ColumnKind::Text | ColumnKind::Json, value) => Some(Cell::Text(value.to_string())),
            }
        })
        .collect())
}

fn parquet_schema() -> parquet::errors::Result<Type> {
    use parquet::basic::{ConvertedType, Repetition, Type as Physical};
    let fields = FileExporter::COLUMNS
        .iter()
        .map(|column| {
            let builder = match column.kind {
                ColumnKind::Text => Type::primitive_type_builder(column.name, Physical::BYTE_ARRAY)
                    .with_converted_type(ConvertedType::UTF8),
                ColumnKind::Json => Type::primitive_type_builder(column.name, Physical::BYTE_ARRAY)
                    .with_converted_type(ConvertedType::JSON),
                ColumnKind::Integer => Type::primitive_type_builder(column.name, Physical::INT64)
                    .with_converted_type(ConvertedType::UINT_64),
            };
            builder
                .with_repetition(Repetition::OPTIONAL)
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Type::group_type_builder("flag_variation")
        .with_fields(fields)
        .build()
}

/// Records encoded per write by [`State::write_lines`]: about a megabyte, small enough to be
/// in cache still when the kernel copies it.
const LINES_STEP: usize = 2048;

impl State {
    /// Writes `records` as JSON lines a step at a time through one reused buffer: nothing the
    /// size of the batch is allocated, and each step's bytes are copied while still in cache.
    /// All or nothing, as [`State::write`].
    fn write_lines(&mut self, records: &[Record]) -> io::Result<()> {
        if self.open.as_ref().is_some_and(|open| self.is_full(open)) {
            self.rotate()?;
        }
        if self.open.is_none() {
            self.open = Some(self.start()?);
        }
        let State { open, scratch, .. } = self;
        let Some(OpenFile {
            sink: Sink::Bytes { file, len },
            ..
        }) = open.as_mut()
        else {
            return Err(io::Error::other(
                "JSON lines written to a file of another format",
            ));
        };
        let mut written = 0;
        for step in records.chunks(LINES_STEP) {
            scratch.clear();
            for record in step {
                record.write_json(scratch);
                scratch.push(b'\n');
            }
            if let Err(error) = file.write_all(scratch) {
                // All or nothing: cut the partial batch off, so the retry does not repeat it.
                let _ = file.set_len(*len);
                let _ = file.seek(SeekFrom::Start(*len));
                return Err(error);
            }
            written += scratch.len() as u64;
        }
        *len += written;
        if scratch.capacity() > 4 << 20 {
            *scratch = Vec::new();
        }
        if self.open.as_ref().is_some_and(|open| self.is_full(open)) {
            self.rotate()?;
        }
        Ok(())
    }

    fn write(&mut self, encoded: Encoded) -> io::Result<()> {
        if self.open.as_ref().is_some_and(|open| self.is_full(open)) {
            self.rotate()?;
        }
        if self.open.is_none() {
            self.open = Some(self.start()?);
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        match (&mut open.sink, encoded) {
            (Sink::Bytes { file, len }, Encoded::Bytes(bytes)) => {
                if let Err(error) = file.write_all(&bytes) {
                    // All or nothing: cut the partial batch off, so the retry does not repeat it.
                    let _ = file.set_len(*len);
                    let _ = file.seek(SeekFrom::Start(*len));
                    return Err(error);
                }
                *len += bytes.len() as u64;
            }
            (Sink::Parquet { writer, rows }, Encoded::Parquet(columns)) => {
                let n = columns.first().map_or(0, |c| match c {
                    ColumnData::Text { defs, .. } | ColumnData::Integer { defs, .. } => defs.len(),
                });
                if let Err(error) = write_row_group(writer, &columns) {
                    // A row group cannot be taken back out of a Parquet writer: the file is
                    // abandoned, and said so.
                    let held = *rows;
                    if let Some(open) = self.open.take() {
                        let _ = fs::remove_file(&open.tmp);
                    }
                    tracing::error!(
                        rows = held,
                        %error,
                        "cannot write a Parquet row group; the open file and its earlier rows are lost"
                    );
                    return Err(io::Error::other(error));
                }
                *rows += n as u64;
            }
            _ => {
                return Err(io::Error::other(
                    "an encoded batch does not match the file format",
                ));
            }
        }
        if self.open.as_ref().is_some_and(|open| self.is_full(open)) {
            self.rotate()?;
        }
        Ok(())
    }

    /// Closes the open file and syncs and publishes it on a thread of its own: the sync waits
    /// on the disk, which the next batches need not do.
    fn rotate(&mut self) -> io::Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let (file, tmp, path) = open.close()?;
        self.reap();
        self.publishing
            .push(std::thread::spawn(move || publish(&file, &tmp, &path)));
        Ok(())
    }

    /// Forgets the files published since the last look, logging any that could not be: such
    /// a file keeps its temporary name and is completed at the next start.
    fn reap(&mut self) {
        let (done, going): (Vec<_>, Vec<_>) = std::mem::take(&mut self.publishing)
            .into_iter()
            .partition(|p| p.is_finished());
        self.publishing = going;
        for publishing in done {
            match publishing.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(dir = %self.dir.display(), %error, "cannot sync and publish a full file; it is completed at the next start");
                }
                Err(_) => {
                    tracing::error!(dir = %self.dir.display(), "publishing a full file panicked")
                }
            }
        }
    }

    fn is_full(&self, open: &OpenFile) -> bool {
        let bytes = match &open.sink {
            Sink::Bytes { len, .. } => *len,
            Sink::Parquet { writer, .. } => writer.bytes_written() as u64,
        };
        self.max_bytes.is_some_and(|max| bytes >= max)
            || self.max_age.is_some_and(|max| open.opened.elapsed() >= max)
    }

    fn start(&mut self) -> io::Result<OpenFile> {
        self.seq += 1;
        let name = format!(
            "flag-variation-{}-{}-{:06}.{}",
            self.host,
            timestamp(SystemTime::now()),
            self.seq,
            self.format.extension()
        );
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp)?;
        let sink = match self.format {
            FileFormat::Jsonl => Sink::Bytes { file, len: 0 },
            FileFormat::Csv => {
                let mut header = csv::Writer::from_writer(Vec::new());
                header
                    .write_record(FileExporter::COLUMNS.iter().map(|c| c.name))
                    .map_err(io::Error::other)?;
                let header = header
                    .into_inner()
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let mut file = file;
                file.write_all(&header)?;
                Sink::Bytes {
                    file,
                    len: header.len() as u64,
                }
            }
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_created_by(format!("flagd {}", env!("CARGO_PKG_VERSION")))
                    .build();
                let writer = SerializedFileWriter::new(
                    BufWriter::new(file),
                    Arc::new(parquet_schema().map_err(io::Error::other)?),
                    Arc::new(props),
                )
                .map_err(io::Error::other)?;
                Sink::Parquet {
                    writer: Box::new(writer),
                    rows: 0,
                }
            }
        };
        Ok(OpenFile {
            tmp,
            path,
            opened: Instant::now(),
            sink,
        })
    }

    /// Completes the open file, if any: synced, then renamed to its final name.
    /// Publishes the open file and waits until every file is synced and published.
    fn finish(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        if let Some(open) = self.open.take() {
            result = open
                .close()
                .and_then(|(file, tmp, path)| publish(&file, &tmp, &path));
        }
        for publishing in self.publishing.drain(..) {
            let done = publishing
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("publishing a file panicked")));
            result = result.and(done);
        }
        result
    }
}

fn write_row_group(
    writer: &mut SerializedFileWriter<BufWriter<File>>,
    columns: &[ColumnData],
) -> parquet::errors::Result<()> {
    let mut group = writer.next_row_group()?;
    let mut columns = columns.iter();
    while let Some(mut column) = group.next_column()? {
        match columns.next() {
            Some(ColumnData::Text { values, defs }) => {
                column
                    .typed::<ByteArrayType>()
                    .write_batch(values, Some(defs), None)?;
            }
            Some(ColumnData::Integer { values, defs }) => {
                column
                    .typed::<Int64Type>()
                    .write_batch(values, Some(defs), None)?;
            }
            None => {
                return Err(parquet::errors::ParquetError::General(
                    "fewer columns than the schema".to_owned(),
                ));
            }
        }
        column.close()?;
    }
    group.close()?;
    Ok(())
}

/// `20261207T051200123Z`: UTC to the millisecond, in an order that sorts as text.
fn timestamp(at: SystemTime) -> String {
    let millis = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%S%3fZ")
        .to_string()
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Keeps a host name to letters, digits, `.`, `_` and `-`, so it is safe in a file name.
fn sanitize(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

/// Completes the files of `format` a crash left under their temporary names.
fn recover(dir: &Path, format: FileFormat) -> io::Result<()> {
    let suffix = format!(".{}.tmp", format.extension());
    for entry in fs::read_dir(dir)? {
        let tmp = entry?.path();
        let Some(name) = tmp.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !(name.starts_with(".flag-variation-") && name.ends_with(&suffix)) {
            continue;
        }
        let final_name = &name[1..name.len() - ".tmp".len()];
        if format == FileFormat::Parquet {
            tracing::warn!(
                file = %tmp.display(),
                "a Parquet file left incomplete by a crash cannot be read; leaving it"
            );
            continue;
        }
        let bytes = fs::read(&tmp)?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let file = fs::OpenOptions::new().write(true).open(&tmp)?;
        file.set_len(whole as u64)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(final_name))?;
        tracing::warn!(
            file = final_name,
            cut_bytes = bytes.len() - whole,
            "completed a file left open by a crash"
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_534_320_123);
        assert_eq!(timestamp(t), "20261206T051840123Z");
        let later = t + Duration::from_millis(1);
        assert!(timestamp(later) > timestamp(t));
        let much_later = t + Duration::from_secs(86_400 * 400);
        assert!(timestamp(much_later) > timestamp(later));
    }

    #[test]
    fn host_names_are_safe_in_file_names() {
        assert_eq!(sanitize("web-1.example.com"), "web-1.example.com");
        assert_eq!(sanitize("../a/b c"), "_a_b_c");
    }

    #[test]
    fn the_parquet_schema_has_every_column() {
        let schema = parquet_schema().unwrap();
        assert_eq!(schema.get_fields().len(), FileExporter::COLUMNS.len());
    }
}
