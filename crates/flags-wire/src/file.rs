//! Reading LaunchDarkly file-data-source documents (`{"flags":{},"segments":{},"flagValues":{}}`)
//! from JSON or YAML files and merging several of them into one set of raw items.
//!
//! Merging works on each item's JSON text, so the merge rules (duplicates, `flagValues`) do not
//! depend on the model, and a big file is never held as one tree of JSON values: each item is
//! read on its own, and kept as text. [`to_model`] then reads the merged items into the model,
//! naming every error's full field path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use flags_core::{Flag, FlagData, Segment};
pub use flags_core::{Problem, Severity};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// One item as merged: a JSON object, as text, with its `key` field set.
pub type RawItem = Box<RawValue>;

/// An item's JSON value as a [`RawItem`].
pub fn raw_item(value: &Value) -> RawItem {
    // A `Value` always serializes: its map keys are strings and its numbers finite.
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| empty_object())
}

fn empty_object() -> RawItem {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

/// Flags and segments as JSON objects, keyed by item key, each with its `key` field set.
#[derive(Debug, Clone, Default)]
pub struct RawData {
    /// Flag key → flag JSON.
    pub flags: BTreeMap<String, RawItem>,
    /// Segment key → segment JSON.
    pub segments: BTreeMap<String, RawItem>,
    /// Flag key → the file that defines it.
    pub flag_origin: BTreeMap<String, PathBuf>,
    /// Segment key → the file that defines it.
    pub segment_origin: BTreeMap<String, PathBuf>,
}

/// The contents of one file as read from disk: its bytes, or why it could not be read.
#[derive(Debug, Clone)]
pub struct FileContents {
    /// The path as given on the command line or in the configuration.
    pub path: PathBuf,
    /// The bytes, or the I/O error's message.
    pub bytes: Result<Vec<u8>, String>,
}

impl FileContents {
    /// Reads a file; an I/O error is kept as a message so it becomes a [`Problem`] later.
    pub fn read(path: &Path) -> FileContents {
        FileContents {
            path: path.to_path_buf(),
            bytes: std::fs::read(path).map_err(|e| e.to_string()),
        }
    }
}

/// Parses and merges files into raw items. Returns the merged data (as far as it could be read)
/// and every problem found; the data is only fit to serve when no problem is an error.
pub fn merge_files(files: &[FileContents]) -> (RawData, Vec<Problem>) {
    let mut merged = RawData::default();
    let mut problems = Vec::new();

    for file in files {
        let path = file.path.as_path();
        let bytes = match &file.bytes {
            Ok(bytes) => bytes,
            Err(message) => {
                problems.push(Problem::error(
                    Some(path),
                    "",
                    format!("cannot read file: {message}"),
                ));
                continue;
            }
        };
        let doc = match read_file(path, bytes, &mut problems) {
            Ok(doc) => doc,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        for (key, flag) in doc.flags {
            if let Some(first) = merged.flag_origin.get(&key) {
                problems.push(duplicate(path, "flags", &key, first));
                continue;
            }
            merged.flag_origin.insert(key.clone(), path.to_path_buf());
            merged.flags.insert(key, flag);
        }
        for (key, segment) in doc.segments {
            if let Some(first) = merged.segment_origin.get(&key) {
                problems.push(duplicate(path, "segments", &key, first));
                continue;
            }
            merged
                .segment_origin
                .insert(key.clone(), path.to_path_buf());
            merged.segments.insert(key, segment);
        }
    }
    (merged, problems)
}

fn duplicate(path: &Path, section: &str, key: &str, first: &Path) -> Problem {
    let what = if section == "flags" {
        "flag"
    } else {
        "segment"
    };
    Problem::error(
        Some(path),
        format!("{section}.{key}"),
        format!(
            "duplicate {what} key {key:?}: defined in both {} and {}",
            first.display(),
            path.display()
        ),
    )
}

/// Parses one file's bytes as JSON or YAML into a JSON value.
///
/// `.json` files are read as JSON, `.yaml`/`.yml` as YAML; any other name is read as JSON when
/// it starts with `{` and as YAML otherwise. YAML merge keys (`<<: *anchor`) are applied.
pub fn parse_document(path: &Path, bytes: &[u8]) -> Result<Value, Problem> {
    match document_text(path, bytes)? {
        (text, true) => parse_json(path, text),
        (text, false) => parse_yaml(path, text),
    }
}

/// Reads one file's items. A JSON document is checked to be JSON as a whole, then read item by
/// item, each item parsed on its own, so the whole document is never one tree of values; YAML is
/// parsed whole (YAML flag files are written by hand, and small).
fn read_file(path: &Path, bytes: &[u8], problems: &mut Vec<Problem>) -> Result<Document, Problem> {
    let (text, as_json) = document_text(path, bytes)?;
    if !as_json {
        return Ok(read_document(path, parse_yaml(path, text)?, problems));
    }
    // Borrowed slices of the text, one per top-level field and then per item. A piece read on
    // its own is not held to what reading it in place would check: a slice's numbers are not
    // read, and its nesting counts from the piece, not from the document. So only a document
    // that reads as one JSON value is read in pieces.
    let top = match serde_json::from_str::<BTreeMap<String, &RawValue>>(text) {
        Ok(top) if is_json(text) => top,
        // Not an object, or not JSON as a whole: the whole-value path says which, as it always
        // has.
        _ => return Ok(read_document(path, parse_json(path, text)?, problems)),
    };
    let mut shell = Map::new();
    let mut sections: BTreeMap<&str, BTreeMap<String, &RawValue>> = BTreeMap::new();
    for (field, raw) in &top {
        let items = match field.as_str() {
            "flags" | "segments" | "flagValues" if raw.get().starts_with('{') => {
                serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get()).ok()
            }
            _ => None,
        };
        let shown = match items {
            Some(items) => {
                sections.insert(field.as_str(), items);
                Value::Object(Map::new())
            }
            // Anything else is small, or of the wrong type, which the shell's check reports.
            None => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
        };
        shell.insert(field.clone(), shown);
    }
    // The document's shape is checked on the shell, whose sections are empty; the items are
    // then read one at a time, in the order the whole-value path reads them.
    let mut doc = read_document(path, Value::Object(shell), problems);
    // Every piece of a JSON document is JSON, so the `Null` is never used.
    let value = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).unwrap_or(Value::Null);
    for (key, raw) in sections.remove("flags").unwrap_or_default() {
        if let Some(item) = keyed_item(path, "flags", &key, value(raw), problems) {
            doc.flags.push((key, raw_item(&item)));
        }
    }
    for (key, raw) in sections.remove("flagValues").unwrap_or_default() {
        flag_value(path, key, value(raw), &mut doc, problems);
    }
    for (key, raw) in sections.remove("segments").unwrap_or_default() {
        if let Some(item) = keyed_item(path, "segments", &key, value(raw), problems) {
            doc.segments.push((key, raw_item(&item)));
        }
    }
    Ok(doc)
}

/// Whether `text` reads as one JSON value, checked as reading it into a [`Value`] checks it
/// (syntax, string escapes, numbers that fit, the nesting limit) but without building one.
fn is_json(text: &str) -> bool {
    serde_json::from_str::<Checked>(text).is_ok()
}

/// Any JSON value, read in full and dropped as it is read.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        // `deserialize_any`, as `Value` reads: numbers are read (so one out of range fails) and
        // every array and object counts towards the nesting limit, which ignoring them
        // (`IgnoredAny`) would not do.
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        // Names are read as strings are, escapes and all.
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Adds a `flagValues` entry to `doc` as a simple flag, unless `flags` already names it.
fn flag_value(
    path: &Path,
    key: String,
    value: Value,
    doc: &mut Document,
    problems: &mut Vec<Problem>,
) {
    if doc.flags.iter().any(|(k, _)| *k == key) {
        problems.push(Problem::error(
            Some(path),
            format!("flagValues.{key}"),
            format!("duplicate flag key {key:?}: also defined under \"flags\" in the same file"),
        ));
        return;
    }
    let flag = simple_flag(&key, value);
    doc.flags.push((key, raw_item(&flag)));
}

/// The file's text, and whether it is read as JSON (else YAML).
fn document_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<(&'a str, bool), Problem> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Problem::error(Some(path), "", format!("file is not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        // An empty file is far more often a write caught half-way than an intent to delete every
        // flag, so it is refused and the last good data keeps serving.
        return Err(Problem::error(Some(path), "", "file is empty"));
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let as_json = match extension.as_str() {
        "json" => true,
        "yaml" | "yml" => false,
        _ => text.trim_start().starts_with('{'),
    };
    Ok((text, as_json))
}

fn parse_json(path: &Path, text: &str) -> Result<Value, Problem> {
    {
        serde_json::from_str(text).map_err(|e| {
            Problem::error(
                Some(path),
                "",
                format!(
                    "invalid JSON at line {}, column {}: {}",
                    e.line(),
                    e.column(),
                    json_error_text(&e)
                ),
            )
        })
    }
}

/// serde_json's message without its trailing " at line L column C" (we print those ourselves).
fn json_error_text(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn parse_yaml(path: &Path, text: &str) -> Result<Value, Problem> {
    let mut yaml: serde_norway::Value = serde_norway::from_str(text)
        .map_err(|e| Problem::error(Some(path), "", format!("invalid YAML: {e}")))?;
    yaml.apply_merge()
        .map_err(|e| Problem::error(Some(path), "", format!("invalid YAML merge key: {e}")))?;
    yaml_to_json(&yaml, &mut String::new())
        .map_err(|(at, message)| Problem::error(Some(path), at, message))
}

/// Converts YAML to JSON, turning scalar mapping keys into strings (YAML reads `123:` as a
/// number, but flag keys are always strings). Errors carry the field path.
fn yaml_to_json(yaml: &serde_norway::Value, at: &mut String) -> Result<Value, (String, String)> {
    use serde_norway::Value as Y;
    Ok(match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match serde_json::Number::from_f64(f) {
                    Some(n) => Value::Number(n),
                    None => return Err((at.clone(), format!("{f} cannot be represented in JSON"))),
                }
            }
        }
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                out.push(yaml_to_json(item, at)?);
                at.truncate(len);
            }
            Value::Array(out)
        }
        Y::Mapping(mapping) => {
            let mut out = Map::new();
            for (k, v) in mapping {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".to_owned(),
                    _ => return Err((at.clone(), "mapping keys must be plain scalars".to_owned())),
                };
                let len = at.len();
                push_field(at, &key);
                let value = yaml_to_json(v, at)?;
                at.truncate(len);
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => {
            return Err((
                at.clone(),
                format!("YAML tag {} is not supported", tagged.tag),
            ));
        }
    })
}

fn push_field(at: &mut String, field: &str) {
    if !at.is_empty() {
        at.push('.');
    }
    at.push_str(field);
}

/// The items of one document.
struct Document {
    flags: Vec<(String, RawItem)>,
    segments: Vec<(String, RawItem)>,
}

/// Checks the document's outer shape and collects its items, turning `flagValues` entries into
/// simple flags.
fn read_document(path: &Path, document: Value, problems: &mut Vec<Problem>) -> Document {
    let mut out = Document {
        flags: Vec::new(),
        segments: Vec::new(),
    };
    let Value::Object(mut top) = document else {
        problems.push(Problem::error(
            Some(path),
            "",
            format!(
                "expected an object with \"flags\", \"segments\" and \"flagValues\", found {}",
                type_name(&document)
            ),
        ));
        return out;
    };
    for key in top.keys() {
        if !matches!(key.as_str(), "flags" | "segments" | "flagValues") {
            problems.push(Problem::warning(
                Some(path),
                key.clone(),
                "unknown top-level field (expected \"flags\", \"segments\" or \"flagValues\"); it is ignored",
            ));
        }
    }
    let flags = take_section(path, &mut top, "flags", problems);
    let segments = take_section(path, &mut top, "segments", problems);
    let values = take_section(path, &mut top, "flagValues", problems);

    for (key, item) in flags {
        if let Some(item) = keyed_item(path, "flags", &key, item, problems) {
            out.flags.push((key, raw_item(&item)));
        }
    }
    for (key, value) in values {
        flag_value(path, key, value, &mut out, problems);
    }
    for (key, item) in segments {
        if let Some(item) = keyed_item(path, "segments", &key, item, problems) {
            out.segments.push((key, raw_item(&item)));
        }
    }
    out
}

/// A flag that always serves `value`, the way LaunchDarkly's file data source builds
/// `flagValues` entries: one variation, on, falling through to it.
pub fn simple_flag(key: &str, value: Value) -> Value {
    json!({
        "key": key,
        "on": true,
        "variations": [value],
        "fallthrough": {"variation": 0},
    })
}

fn take_section(
    path: &Path,
    top: &mut Map<String, Value>,
    section: &str,
    problems: &mut Vec<Problem>,
) -> Map<String, Value> {
    match top.remove(section) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            problems.push(Problem::error(
                Some(path),
                section,
                format!(
                    "expected an object keyed by {section} key, found {}",
                    type_name(&other)
                ),
            ));
            Map::new()
        }
    }
}

/// Checks that an item is an object whose `key` (if present) matches its map key, and fills the
/// `key` in when it is missing.
fn keyed_item(
    path: &Path,
    section: &str,
    key: &str,
    item: Value,
    problems: &mut Vec<Problem>,
) -> Option<Value> {
    let Value::Object(mut object) = item else {
        problems.push(Problem::error(
            Some(path),
            format!("{section}.{key}"),
            format!("expected an object, found {}", type_name(&item)),
        ));
        return None;
    };
    if key.is_empty() {
        problems.push(Problem::error(
            Some(path),
            section,
            "an item key must not be empty",
        ));
        return None;
    }
    match object.get("key") {
        None | Some(Value::Null) => {
            object.insert("key".to_owned(), Value::String(key.to_owned()));
        }
        Some(Value::String(inner)) if inner == key => {}
        Some(Value::String(inner)) => {
            problems.push(Problem::error(
                Some(path),
                format!("{section}.{key}.key"),
                format!("key {inner:?} does not match its map key {key:?}"),
            ));
            return None;
        }
        Some(other) => {
            problems.push(Problem::error(
                Some(path),
                format!("{section}.{key}.key"),
                format!("expected a string, found {}", type_name(other)),
            ));
            return None;
        }
    }
    Some(Value::Object(object))
}

/// A JSON type name with its article, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads each raw item into the model, collecting every item's error with its file and full
/// field path (`flags.checkout.rules[0].clauses`).
pub fn to_model(raw: &RawData) -> (FlagData, Vec<Problem>) {
    let mut data = FlagData::default();
    let mut problems = Vec::new();
    for (key, item) in &raw.flags {
        match read_flag(key, item, raw.flag_origin.get(key).map(PathBuf::as_path)) {
            Ok(flag) => {
                data.flags.insert(key.clone(), flag);
            }
            Err(problem) => problems.push(problem),
        }
    }
    for (key, item) in &raw.segments {
        match read_segment(key, item, raw.segment_origin.get(key).map(PathBuf::as_path)) {
            Ok(segment) => {
                data.segments.insert(key.clone(), segment);
            }
            Err(problem) => problems.push(problem),
        }
    }
    (data, problems)
}

/// Reads one merged flag into the model; an error names `file` and the full field path.
pub fn read_flag(key: &str, item: &RawItem, file: Option<&Path>) -> Result<Flag, Problem> {
    Flag::from_json_value(item_value(item))
        .map_err(|e| item_problem(file, "flags", key, e.path(), e.message()))
}

/// Reads one merged segment into the model; an error names `file` and the full field path.
pub fn read_segment(key: &str, item: &RawItem, file: Option<&Path>) -> Result<Segment, Problem> {
    Segment::from_json_value(item_value(item))
        .map_err(|e| item_problem(file, "segments", key, e.path(), e.message()))
}

/// An item's JSON value. Items are read through a value of their own, so errors carry no line
/// and column: those of the item's text would not be the file's.
fn item_value(item: &RawItem) -> Value {
    serde_json::from_str(item.get()).unwrap_or(Value::Null)
}

fn item_problem(
    file: Option<&Path>,
    section: &str,
    key: &str,
    inner: &str,
    message: &str,
) -> Problem {
    let path = if inner.is_empty() {
        format!("{section}.{key}")
    } else {
        format!("{section}.{key}.{inner}")
    };
    Problem::error(file, path, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> FileContents {
        FileContents {
            path: PathBuf::from(name),
            bytes: Ok(text.as_bytes().to_vec()),
        }
    }

    fn value(item: &RawItem) -> Value {
        serde_json::from_str(item.get()).unwrap()
    }

    fn messages(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn json_and_yaml_documents_merge() {
        let (data, problems) = merge_files(&[
            file(
                "a.json",
                r#"{"flags":{"f1":{"on":true,"variations":[1]}},"segments":{"s1":{}}}"#,
            ),
            file("b.yaml", "flagValues:\n  f2: hello\n"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(value(&data.flags["f1"])["key"], "f1");
        assert_eq!(
            value(&data.flags["f2"]),
            json!({"key":"f2","on":true,"variations":["hello"],"fallthrough":{"variation":0}})
        );
        assert_eq!(value(&data.segments["s1"]), json!({"key":"s1"}));
    }

    #[test]
    fn yaml_merge_keys_apply() {
        let text = "base: &base\n  on: true\n  variations: [a, b]\nflags:\n  f:\n    <<: *base\n    offVariation: 1\n";
        let (data, problems) = merge_files(&[file("x.yml", text)]);
        assert_eq!(
            messages(&problems),
            vec![
                "warning: x.yml: base: unknown top-level field (expected \"flags\", \"segments\" or \"flagValues\"); it is ignored"
            ]
        );
        assert_eq!(
            value(&data.flags["f"]),
            json!({"key":"f","on":true,"variations":["a","b"],"offVariation":1})
        );
    }

    #[test]
    fn yaml_numeric_keys_become_strings() {
        let (data, problems) =
            merge_files(&[file("n.yaml", "flagValues:\n  123: 4.5\n  true: x\n")]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(data.flags.contains_key("123"));
        assert!(data.flags.contains_key("true"));
    }

    #[test]
    fn duplicates_across_files_name_both_files() {
        let (_, problems) = merge_files(&[
            file("a.json", r#"{"flagValues":{"x":1},"segments":{"s":{}}}"#),
            file("b.json", r#"{"flags":{"x":{}},"segments":{"s":{}}}"#),
        ]);
        assert_eq!(
            messages(&problems),
            vec![
                "b.json: flags.x: duplicate flag key \"x\": defined in both a.json and b.json",
                "b.json: segments.s: duplicate segment key \"s\": defined in both a.json and b.json",
            ]
        );
    }

    #[test]
    fn duplicate_within_one_file() {
        let (_, problems) =
            merge_files(&[file("a.json", r#"{"flags":{"x":{}},"flagValues":{"x":1}}"#)]);
        assert_eq!(
            messages(&problems),
            vec![
                "a.json: flagValues.x: duplicate flag key \"x\": also defined under \"flags\" in the same file"
            ]
        );
    }

    #[test]
    fn shape_errors_are_located() {
        let cases = [
            (
                "a.json",
                "[1]",
                "a.json: expected an object with \"flags\", \"segments\" and \"flagValues\", found an array",
            ),
            (
                "a.json",
                r#"{"flags":[]}"#,
                "a.json: flags: expected an object keyed by flags key, found an array",
            ),
            (
                "a.json",
                r#"{"flags":{"f":3}}"#,
                "a.json: flags.f: expected an object, found a number",
            ),
            (
                "a.json",
                r#"{"flags":{"f":{"key":"g"}}}"#,
                "a.json: flags.f.key: key \"g\" does not match its map key \"f\"",
            ),
            (
                "a.json",
                r#"{"flags":{"f":{"key":1}}}"#,
                "a.json: flags.f.key: expected a string, found a number",
            ),
            (
                "a.json",
                "{\"flags\":\n {,}}",
                "a.json: invalid JSON at line 2, column 3: key must be a string",
            ),
            ("a.json", "  \n", "a.json: file is empty"),
            ("a.yaml", "flags: [\n", "a.yaml: invalid YAML: "),
            (
                "a.yaml",
                "flags:\n  f: !custom {}\n",
                "a.yaml: flags.f: YAML tag !custom is not supported",
            ),
        ];
        for (name, text, expected) in cases {
            let (_, problems) = merge_files(&[file(name, text)]);
            assert_eq!(problems.len(), 1, "{text}: {problems:?}");
            let got = problems[0].to_string();
            assert!(
                got.starts_with(expected),
                "{text}: got {got:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn json_read_item_by_item_matches_the_whole_document() {
        let docs = [
            r#"{"flags":{"b":{"on":true},"a":{"key":"a"},"bad":3,"k":{"key":"x"}},
                "flagValues":{"a":1,"c":[true]},"segments":{"s":{"included":["u"]},"t":[]},
                "extra":{"deep":[1,2]}}"#,
            r#"{"flags":null,"segments":{"s":null},"flagValues":{}}"#,
            r#"{"flags":[],"segments":"no","flagValues":7}"#,
            r#"{"flags":{"a\"q":{"variations":[1.5e300,"\u00e9"]}}}"#,
            "{}",
        ];
        for text in docs {
            let path = Path::new("d.json");
            let mut streamed = Vec::new();
            let doc = read_file(path, text.as_bytes(), &mut streamed).unwrap();
            let mut whole = Vec::new();
            let expected = read_document(path, parse_json(path, text).unwrap(), &mut whole);
            assert_eq!(messages(&streamed), messages(&whole), "{text}");
            let texts = |items: &[(String, RawItem)]| -> Vec<(String, String)> {
                items
                    .iter()
                    .map(|(k, v)| (k.clone(), v.get().to_owned()))
                    .collect()
            };
            assert_eq!(texts(&doc.flags), texts(&expected.flags), "{text}");
            assert_eq!(texts(&doc.segments), texts(&expected.segments), "{text}");
        }
    }

    /// Documents whose pieces read but which are not JSON as a whole (found by the `flag_file`
    /// fuzz target): a number out of range, or nesting past the limit only when counted from
    /// the document, were read item by item without an error, a `flagValues` entry even as a
    /// flag serving `null`.
    #[test]
    fn json_that_is_not_one_value_is_refused_though_its_pieces_read() {
        let deep = |depth: usize| {
            format!(
                r#"{{"flagValues":{{"a":{}{}}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let cases = [
            (
                r#"{"flagValues":{"a":1e999}}"#.to_owned(),
                "d.json: invalid JSON at line 1, column 24: number out of range",
            ),
            (
                r#"{"flags":{"f":{"variations":[-1e400]}}}"#.to_owned(),
                "d.json: invalid JSON at line 1, column 35: number out of range",
            ),
            (
                format!(r#"{{"extra":{}}}"#, "9".repeat(400)),
                "d.json: invalid JSON at line 1, column 409: number out of range",
            ),
            (
                deep(126),
                "d.json: invalid JSON at line 1, column 145: recursion limit exceeded",
            ),
        ];
        for (text, expected) in &cases {
            let (raw, problems) = merge_files(&[file("d.json", text)]);
            assert_eq!(messages(&problems), [*expected], "{text}");
            assert!(raw.flags.is_empty(), "{text}");
        }
        // One level less, and the document is JSON; so is an integer of 300 digits, which is too
        // large for a whole number but not for a float.
        for text in [
            deep(125),
            format!(r#"{{"flagValues":{{"a":{}}}}}"#, "9".repeat(300)),
        ] {
            let (raw, problems) = merge_files(&[file("d.json", &text)]);
            assert!(problems.is_empty(), "{text}: {problems:?}");
            assert_eq!(raw.flags.len(), 1, "{text}");
        }
    }

    /// What `is_json` accepts is exactly what reads as a `Value`.
    #[test]
    fn json_is_checked_as_a_value_is_read() {
        let texts = [
            "{}",
            "[1, -2.5e-3, true, null, \"\\u00e9\"]",
            "1e308",
            "1e309",
            "-1e400",
            "18446744073709551616",
            "\"\\ud800\"",
            "\"\\uDC00x\"",
            "{\"\\ud83d\\ude00\":1}",
            "{\"\\ud83d\":1}",
            "{\"a\":1,}",
            "[1] x",
            "\"\\x\"",
            "\"a\tb\"",
        ];
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let nested = [
            nested(127),
            nested(128),
            format!("{{\"a\":{}}}", nested(127)),
        ];
        for text in texts
            .iter()
            .copied()
            .chain(nested.iter().map(String::as_str))
        {
            assert_eq!(
                is_json(text),
                serde_json::from_str::<Value>(text).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn unreadable_file_is_a_problem() {
        let missing = FileContents::read(Path::new("/definitely/not/here.json"));
        let (_, problems) = merge_files(&[missing]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("/definitely/not/here.json: cannot read file: ")
        );
    }

    #[test]
    fn extension_less_files_are_sniffed() {
        let (data, problems) = merge_files(&[
            file("flags", r#"{"flagValues":{"a":true}}"#),
            file("more", "flagValues:\n  b: false\n"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(data.flags.len(), 2);
    }
}
