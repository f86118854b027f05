//! The on-disk spool: one directory per exporter, holding the records the exporter could not
//! keep in memory, oldest first, until it takes them back.
//!
//! A spool is a list of segment files named by a zero-padded sequence number, so that their
//! names sort in the order they must be replayed. A segment is a run of frames. A frame is a
//! 16-byte header, bincode-encoded with fixed-width little-endian integers (a magic number, the
//! number of records, the payload's length and the CRC-32 of the record count and payload),
//! followed by its payload: the records as JSON lines. Records carry `serde_json::Value`s, which
//! bincode cannot read back (it has no `deserialize_any`), so the payload stays JSON and only the
//! framing is binary.
//!
//! A segment is written once, whole, and synced; a process killed while writing one leaves a
//! torn tail, which replay recognises (a short header or payload), logs and skips, as it does a
//! frame whose checksum does not match. Neither stops the replay of the frames and segments
//! after it. Every segment's record count is kept, so records dropped to honour the disk bound
//! are counted exactly.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flags_events::Record;
use serde::{Deserialize, Serialize};

/// Spooled records, encoded into frames and ready to be written.
pub(crate) struct Encoded {
    frames: Vec<Frame>,
}

/// Where written records go: after everything spooled, or before it (a batch that was being
/// exported when the shutdown deadline passed, older than anything spooled since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Front,
    Back,
}

/// What a write did: records that reached the disk, and records dropped (the oldest, of older
/// segments or of this write) to stay within the bound.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) spooled: u64,
    pub(crate) dropped: u64,
}

/// The oldest segment's records, read back to be exported.
pub(crate) struct Loaded {
    pub(crate) seq: u64,
    pub(crate) records: Vec<Record>,
    /// Records the segment claimed but that could not be read back (a bad checksum, a torn
    /// tail, JSON that no longer parses): lost, to be counted as dropped.
    pub(crate) lost: u64,
}

/// One exporter's spool.
pub(crate) struct Spool {
    dir: PathBuf,
    exporter: String,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    next_seq: u64,
    bytes: u64,
    records: u64,
    /// The segment being replayed: kept on disk until its records are exported, and never
    /// dropped for the bound meanwhile (its records are in memory, in flight).
    loaded: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    seq: u64,
    records: u64,
    bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    magic: u32,
    records: u32,
    len: u32,
    crc: u32,
}

struct Frame {
    records: u64,
    bytes: Vec<u8>,
}

const MAGIC: u32 = u32::from_le_bytes(*b"FXS1");
const HEADER_LEN: usize = 16;
/// Records per frame: a bad frame loses at most this many.
const FRAME_RECORDS: usize = 1024;
/// A header claiming more is garbage, not a frame.
const MAX_FRAME_BYTES: u32 = 1 << 30;
/// Sequence numbers start high so that a batch can be written in front of the oldest segment.
const FIRST_SEQ: u64 = 1 << 40;
const EXTENSION: &str = "spool";

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// The directory name of an exporter's spool: its name with anything but letters, digits, `-`,
/// `_` and `.` replaced, then the CRC-32 of the real name, so two names that sanitise alike
/// still get directories of their own.
pub(crate) fn dir_name(exporter: &str) -> String {
    let mut name: String = exporter
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    format!("{name}-{:08x}", crc32fast::hash(exporter.as_bytes()))
}

/// Encodes `slices`, in order, into frames.
pub(crate) fn encode<'a>(slices: impl IntoIterator<Item = &'a [Record]>) -> Encoded {
    let mut frames = Vec::new();
    let mut payload = Vec::new();
    let mut count = 0usize;
    for slice in slices {
        for record in slice {
            record.write_json(&mut payload);
            payload.push(b'\n');
            count += 1;
            if count == FRAME_RECORDS {
                frames.push(frame(count, &payload));
                payload.clear();
                count = 0;
            }
        }
    }
    if count > 0 {
        frames.push(frame(count, &payload));
    }
    Encoded { frames }
}

impl Encoded {
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.frames.iter().map(|f| f.bytes.len() as u64).sum()
    }
}

fn frame(count: usize, payload: &[u8]) -> Frame {
    // Both fit: a frame holds at most FRAME_RECORDS records, and a payload longer than 4 GiB
    // would take records of megabytes each, which `/bulk`'s body limit never lets in.
    let records = u32::try_from(count).unwrap_or(u32::MAX);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let header = Header {
        magic: MAGIC,
        records,
        len,
        crc: checksum(records, payload),
    };
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    // Encoding four u32s into a Vec cannot fail.
    let _ = bincode::serde::encode_into_std_write(&header, &mut bytes, bincode_config());
    bytes.extend_from_slice(payload);
    Frame {
        records: count as u64,
        bytes,
    }
}

fn checksum(records: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&records.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn decode_header(bytes: &[u8]) -> Option<Header> {
    let (header, _): (Header, usize) =
        bincode::serde::decode_from_slice(bytes.get(..HEADER_LEN)?, bincode_config()).ok()?;
    (header.magic == MAGIC && header.len <= MAX_FRAME_BYTES).then_some(header)
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir` and counts what an earlier run left there.
    pub(crate) fn open(dir: PathBuf, exporter: &str, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(&dir)?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(seq) = segment_seq(&path) else {
                continue;
            };
            let (records, bytes) = scan(&path)?;
            segments.push(Segment {
                seq,
                records,
                bytes,
            });
        }
        segments.sort_by_key(|s| s.seq);
        let next_seq = segments.last().map_or(FIRST_SEQ, |s| s.seq + 1);
        let spool = Spool {
            bytes: segments.iter().map(|s| s.bytes).sum(),
            records: segments.iter().map(|s| s.records).sum(),
            segments: segments.into(),
            dir,
            exporter: exporter.to_owned(),
            max_bytes,
            next_seq,
            loaded: None,
        };
        if spool.records > 0 {
            tracing::info!(
                exporter = %spool.exporter,
                records = spool.records,
                bytes = spool.bytes,
                "found spooled records from an earlier run; replaying them first"
            );
        }
        Ok(spool)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Writes `encoded` as one segment at `end`, first dropping the oldest records (whole
    /// segments, then this write's first frames) while the spool would exceed its bound.
    pub(crate) fn write(&mut self, encoded: Encoded, end: End) -> io::Result<Written> {
        let mut frames: VecDeque<Frame> = encoded.frames.into();
        let mut incoming: u64 = frames.iter().map(|f| f.bytes.len() as u64).sum();
        let mut written = Written::default();
        if end == End::Front {
            written.dropped +=
                drop_oldest_frames(&mut frames, &mut incoming, self.bytes, self.max_bytes);
        }
        while self.bytes + incoming > self.max_bytes {
            let Some(index) = self
                .segments
                .iter()
                .position(|s| Some(s.seq) != self.loaded)
            else {
                break;
            };
            written.dropped += self.remove_at(index)?;
        }
        if end == End::Back {
            written.dropped +=
                drop_oldest_frames(&mut frames, &mut incoming, self.bytes, self.max_bytes);
        }
        if frames.is_empty() {
            return Ok(written);
        }
        let seq = match (end, self.segments.front()) {
            (End::Front, Some(first)) => first.seq - 1,
            _ => self.next_seq,
        };
        self.next_seq = self.next_seq.max(seq + 1);
        let path = self.path(seq);
        if let Err(error) = write_segment(&path, &frames) {
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        let segment = Segment {
            seq,
            records: frames.iter().map(|f| f.records).sum(),
            bytes: incoming,
        };
        written.spooled = segment.records;
        self.bytes += segment.bytes;
        self.records += segment.records;
        match end {
            End::Front => self.segments.push_front(segment),
            End::Back => self.segments.push_back(segment),
        }
        Ok(written)
    }

    /// Reads back the oldest segment, which stays on disk (and within the bound) until
    /// [`Spool::remove`] or [`Spool::release`]. `None` when the spool is empty.
    pub(crate) fn load_oldest(&mut self) -> io::Result<Option<Loaded>> {
        let Some(segment) = self.segments.front().copied() else {
            return Ok(None);
        };
        let bytes = match fs::read(self.path(segment.seq)) {
            Ok(bytes) => bytes,
            Err(error) => {
                // Unreadable: forget it for this run (the file stays for a later one) and let
                // the caller count its records as lost.
                self.forget_front();
                tracing::error!(
                    exporter = %self.exporter,
                    segment = segment.seq,
                    records = segment.records,
                    %error,
                    "cannot read a spool segment; skipping it"
                );
                return Ok(Some(Loaded {
                    seq: segment.seq,
                    records: Vec::new(),
                    lost: segment.records,
                }));
            }
        };
        let (records, lost) = read_frames(&bytes, &self.exporter, segment.seq);
        self.loaded = Some(segment.seq);
        Ok(Some(Loaded {
            seq: segment.seq,
            records,
            lost,
        }))
    }

    /// Deletes a segment whose records were exported (or dropped).
    pub(crate) fn remove(&mut self, seq: u64) -> io::Result<()> {
        if self.loaded == Some(seq) {
            self.loaded = None;
        }
        if let Some(index) = self.segments.iter().position(|s| s.seq == seq) {
            self.remove_at(index)?;
        }
        Ok(())
    }

    /// Leaves a loaded segment on disk for a later run (the deadline passed before it was
    /// exported).
    pub(crate) fn release(&mut self) {
        self.loaded = None;
    }

    fn forget_front(&mut self) {
        if let Some(segment) = self.segments.pop_front() {
            self.bytes -= segment.bytes;
            self.records -= segment.records;
        }
    }

    /// Deletes the segment at `index` and returns how many records it held.
    fn remove_at(&mut self, index: usize) -> io::Result<u64> {
        let Some(segment) = self.segments.remove(index) else {
            return Ok(0);
        };
        self.bytes -= segment.bytes;
        self.records -= segment.records;
        match fs::remove_file(self.path(segment.seq)) {
            Ok(()) => Ok(segment.records),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(segment.records),
            Err(error) => Err(error),
        }
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.{EXTENSION}"))
    }
}

/// Drops `frames` from the front while `spooled + incoming` exceeds `max`, and returns how
/// many records went.
fn drop_oldest_frames(
    frames: &mut VecDeque<Frame>,
    incoming: &mut u64,
    spooled: u64,
    max: u64,
) -> u64 {
    let mut dropped = 0;
    while spooled + *incoming > max {
        let Some(frame) = frames.pop_front() else {
            break;
        };
        *incoming -= frame.bytes.len() as u64;
        dropped += frame.records;
    }
    dropped
}

fn segment_seq(path: &Path) -> Option<u64> {
    if path.extension()? != EXTENSION {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

fn write_segment(path: &Path, frames: &VecDeque<Frame>) -> io::Result<()> {
    let mut file = BufWriter::new(File::create_new(path)?);
    for frame in frames {
        file.write_all(&frame.bytes)?;
    }
    // Synced, so what the spool counts survives a crash of the machine too, not only of flagd.
    file.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_data()
}

/// Counts a segment's records from its headers alone, stopping at a torn tail (replay reports
/// it, with the checksums).
fn scan(path: &Path) -> io::Result<(u64, u64)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut records = 0u64;
    let mut at = 0u64;
    let mut header = [0u8; HEADER_LEN];
    while at + HEADER_LEN as u64 <= len {
        reader.read_exact(&mut header)?;
        let Some(h) = decode_header(&header) else {
            break;
        };
        let end = at + HEADER_LEN as u64 + u64::from(h.len);
        if end > len {
            break;
        }
        records += u64::from(h.records);
        reader.seek(SeekFrom::Start(end))?;
        at = end;
    }
    Ok((records, len))
}

/// The records of a segment's frames, and how many records its damaged frames claimed.
fn read_frames(bytes: &[u8], exporter: &str, segment: u64) -> (Vec<Record>, u64) {
    let mut records = Vec::new();
    let mut lost = 0u64;
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let Some(header) = decode_header(rest) else {
            tracing::warn!(
                exporter,
                segment,
                offset = at,
                bytes = rest.len(),
                "spool segment ends in a torn or unreadable frame header; skipping the rest"
            );
            break;
        };
        let len = header.len as usize;
        let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            lost += u64::from(header.records);
            tracing::warn!(
                exporter,
                segment,
                offset = at,
                records = header.records,
                "spool segment ends in a torn frame (killed while writing?); its records are lost"
            );
            break;
        };
        at += HEADER_LEN + len;
        if checksum(header.records, payload) != header.crc {
            lost += u64::from(header.records);
            tracing::warn!(
                exporter,
                segment,
                records = header.records,
                "spool frame fails its checksum; skipping it"
            );
            continue;
        }
        let before = records.len();
        let parsed: Result<Vec<Record>, _> = serde_json::Deserializer::from_slice(payload)
            .into_iter::<Record>()
            .collect();
        match parsed {
            Ok(frame) if frame.len() == header.records as usize => records.extend(frame),
            Ok(_) | Err(_) => {
                records.truncate(before);
                lost += u64::from(header.records);
                tracing::warn!(
                    exporter,
                    segment,
                    records = header.records,
                    "spool frame holds records that do not read back; skipping it"
                );
            }
        }
    }
    (records, lost)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use flags_events::{CustomRecord, Record};

    fn record(i: u64) -> Record {
        Record::Custom(CustomRecord {
            context_kind: "user".into(),
            user_key: format!("u{i}"),
            creation_date: i,
            key: "goal".to_owned(),
            value: Some(i as f64 / 2.0),
            data: Some(serde_json::json!({"i": i, "nested": [1, "two", null]})),
            source: "SERVER".into(),
            metadata: flags_events::Metadata::default(),
        })
    }

    fn records(range: std::ops::Range<u64>) -> Vec<Record> {
        range.map(record).collect()
    }

    fn dates(records: &[Record]) -> Vec<u64> {
        records.iter().map(Record::creation_date).collect()
    }

    fn drain(spool: &mut Spool) -> (Vec<u64>, u64) {
        let mut seen = Vec::new();
        let mut lost = 0;
        while let Some(loaded) = spool.load_oldest().unwrap() {
            seen.extend(dates(&loaded.records));
            lost += loaded.lost;
            spool.remove(loaded.seq).unwrap();
        }
        (seen, lost)
    }

    #[test]
    fn records_read_back_in_order_across_segments_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().to_owned(), "t", u64::MAX).unwrap();
        let first = records(0..3000);
        let w = spool
            .write(encode([&first[..1000], &first[1000..]]), End::Back)
            .unwrap();
        assert_eq!(
            w,
            Written {
                spooled: 3000,
                dropped: 0
            }
        );
        spool
            .write(encode([&records(3000..3010)[..]]), End::Back)
            .unwrap();
        // Written in front of everything: an older batch, at shutdown.
        spool
            .write(encode([&records(10_000..10_005)[..]]), End::Front)
            .unwrap();
        assert_eq!(spool.records(), 3015);
        let bytes = spool.bytes();
        drop(spool);

        let mut spool = Spool::open(dir.path().to_owned(), "t", u64::MAX).unwrap();
        assert_eq!((spool.records(), spool.bytes()), (3015, bytes));
        let (seen, lost) = drain(&mut spool);
        let expected: Vec<u64> = (10_000..10_005).chain(0..3010).collect();
        assert_eq!((seen, lost), (expected, 0));
        assert_eq!((spool.records(), spool.bytes()), (0, 0));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn replayed_records_equal_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().to_owned(), "t", u64::MAX).unwrap();
        let written = records(0..5);
        spool.write(encode([&written[..]]), End::Back).unwrap();
        let loaded = spool.load_oldest().unwrap().unwrap();
        assert_eq!(loaded.records, written);
    }

    #[test]
    fn torn_tail_and_bad_checksum_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().to_owned(), "t", u64::MAX).unwrap();
        // Three segments of three frames each (1024 + 1024 + 52 records).
        for s in 0..3u64 {
            let batch = records(s * 10_000..s * 10_000 + 2100);
            spool.write(encode([&batch[..]]), End::Back).unwrap();
        }
        drop(spool);
        let mut paths: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        // The first segment: one byte flipped in its second frame's payload.
        let mut bytes = fs::read(&paths[0]).unwrap();
        let second_frame = bytes.len() / 2;
        bytes[second_frame] ^= 0x55;
        fs::write(&paths[0], &bytes).unwrap();
        // The second: cut in the middle of its last frame, as a kill while writing leaves it.
        let bytes = fs::read(&paths[1]).unwrap();
        fs::write(&paths[1], &bytes[..bytes.len() - 100]).unwrap();

        let mut spool = Spool::open(dir.path().to_owned(), "t", u64::MAX).unwrap();
        // The torn frame is not counted when opening: its header is whole but its payload is not.
        assert_eq!(spool.records(), 2100 + 2048 + 2100);
        let (seen, lost) = drain(&mut spool);
        let expected: Vec<u64> = (0..1024)
            .chain(2048..2100)
            .chain(10_000..12_048)
            .chain(20_000..22_100)
            .collect();
        assert_eq!(seen, expected);
        // The bad frame's 1024 and the torn frame's 52.
        assert_eq!(lost, 1024 + 52);
    }

    #[test]
    fn garbage_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        for (i, garbage) in [
            &b""[..],
            b"x",
            &[0u8; 15],
            &[0xff; 40],
            b"FXS1\xff\xff\xff\xff",
        ]
        .iter()
        .enumerate()
        {
            fs::write(dir.path().join(format!("{:020}.spool", i + 1)), garbage).unwrap();
        }
        fs::write(dir.path().join("notes.txt"), "not a segment").unwrap();
        let mut spool = Spool::open(dir.path().to_owned(), "t", u64::MAX).unwrap();
        assert_eq!(spool.records(), 0);
        assert_eq!(drain(&mut spool), (vec![], 0));
    }

    #[test]
    fn past_the_bound_the_oldest_are_dropped_and_counted_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode([&records(0..100)[..]]).bytes();
        // Room for about three segments of 100 records.
        let mut spool = Spool::open(dir.path().to_owned(), "t", one * 3 + one / 2).unwrap();
        let mut dropped = 0;
        for s in 0..10u64 {
            let w = spool
                .write(encode([&records(s * 100..s * 100 + 100)[..]]), End::Back)
                .unwrap();
            assert_eq!(w.spooled, 100);
            dropped += w.dropped;
        }
        assert!(spool.bytes() <= one * 3 + one / 2);
        let (seen, lost) = drain(&mut spool);
        assert_eq!(lost, 0);
        assert_eq!(dropped + seen.len() as u64, 1000);
        assert_eq!(seen, (1000 - seen.len() as u64..1000).collect::<Vec<_>>());

        // A write larger than the whole bound keeps its newest frames.
        let dir = tempfile::tempdir().unwrap();
        let frame = encode([&records(0..1024)[..]]).bytes();
        let mut spool = Spool::open(dir.path().to_owned(), "t", frame * 5 / 2).unwrap();
        let big = records(0..5000);
        let w = spool.write(encode([&big[..]]), End::Back).unwrap();
        assert_eq!(w.spooled + w.dropped, 5000);
        assert!(w.dropped > 0 && w.spooled > 0);
        let (seen, _) = drain(&mut spool);
        assert_eq!(seen.last(), Some(&4999));
    }

    #[test]
    fn the_segment_being_replayed_is_not_dropped_for_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode([&records(200..300)[..]]).bytes();
        let mut spool = Spool::open(dir.path().to_owned(), "t", one * 5 / 2).unwrap();
        spool
            .write(encode([&records(0..100)[..]]), End::Back)
            .unwrap();
        let loaded = spool.load_oldest().unwrap().unwrap();
        let w = spool
            .write(encode([&records(100..200)[..]]), End::Back)
            .unwrap();
        assert_eq!(
            w,
            Written {
                spooled: 100,
                dropped: 0
            }
        );
        let w = spool
            .write(encode([&records(200..300)[..]]), End::Back)
            .unwrap();
        assert_eq!(
            w,
            Written {
                spooled: 100,
                dropped: 100
            }
        );
        spool.remove(loaded.seq).unwrap();
        assert_eq!(drain(&mut spool).0, (200..300).collect::<Vec<_>>());
    }

    #[test]
    fn directory_names_are_safe_and_distinct() {
        assert_eq!(
            dir_name("file"),
            format!("file-{:08x}", crc32fast::hash(b"file"))
        );
        let a = dir_name("webhook:https://example.com/a?b");
        assert!(a.starts_with("webhook_https___example.com_a_b-"));
        assert_ne!(a, dir_name("webhook_https___example.com_a_b"));
        assert!(dir_name("..").starts_with("_."));
        assert!(!dir_name("../../etc").contains('/'));
    }
}
