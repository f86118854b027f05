//! LaunchDarkly's server-side SDK data formats: the `latest-all` body served for polling, and
//! the `put`, `patch` and `delete` events of the streaming endpoint, rendered by servers and
//! parsed by clients. No transport: bytes in, bytes out.
//!
//! ```
//! use flags_wire::stream::{self, Event};
//! use flags_core::ItemKind;
//!
//! let patch = stream::render_delete(ItemKind::Flag, "checkout", 7);
//! assert_eq!(patch.data, r#"{"path":"/flags/checkout","version":7}"#);
//! match stream::parse(patch.event, &patch.data).unwrap() {
//!     Event::Delete { kind, key, version } => {
//!         assert_eq!((kind, key.as_str(), version), (ItemKind::Flag, "checkout", 7));
//!     }
//!     other => panic!("expected a delete, got {other:?}"),
//! }
//! ```

use std::collections::BTreeMap;

use flags_core::{Flag, FlagData, ItemKind, Segment};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stream event as sent: its name (`put`, `patch` or `delete`) and its JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemEvent {
    /// `put`, `patch` or `delete`.
    pub event: &'static str,
    /// The event's JSON data.
    pub data: String,
}

/// The path of one item in stream events: `/flags/KEY` or `/segments/KEY`.
pub fn item_path(kind: ItemKind, key: &str) -> String {
    format!("/{}/{key}", kind.section())
}

/// A `patch` of one item: `{"path":"/flags/KEY","data":{...}}`, with `path` first and the item's
/// fields in the model's order.
pub fn render_patch(
    kind: ItemKind,
    key: &str,
    item: &impl Serialize,
) -> Result<ItemEvent, serde_json::Error> {
    let item = serde_json::to_string(item)?;
    let path = serde_json::to_string(&item_path(kind, key))?;
    let mut data = String::with_capacity(item.len() + path.len() + 19);
    data.push_str(r#"{"path":"#);
    data.push_str(&path);
    data.push_str(r#","data":"#);
    data.push_str(&item);
    data.push('}');
    Ok(ItemEvent {
        event: "patch",
        data,
    })
}

/// A `patch` of one item already rendered as JSON (`item_json`, the item as the model
/// serializes it): the same bytes as [`render_patch`] gives for the item itself.
pub fn render_patch_json(kind: ItemKind, key: &str, item_json: &str) -> ItemEvent {
    let mut data = Vec::with_capacity(item_json.len() + key.len() + 32);
    data.extend_from_slice(br#"{"path":"#);
    write_json_string(&mut data, &item_path(kind, key));
    data.extend_from_slice(br#","data":"#);
    data.extend_from_slice(item_json.as_bytes());
    data.push(b'}');
    ItemEvent {
        event: "patch",
        data: utf8(data),
    }
}

/// A `delete` of one item: `{"path":"/flags/KEY","version":N}`.
pub fn render_delete(kind: ItemKind, key: &str, version: u64) -> ItemEvent {
    #[derive(Serialize)]
    struct Delete {
        path: String,
        version: u64,
    }
    let data = serde_json::to_string(&Delete {
        path: item_path(kind, key),
        version,
    })
    // A struct of a string and an integer always serializes.
    .unwrap_or_default();
    ItemEvent {
        event: "delete",
        data,
    }
}

/// The `latest-all` body, `{"flags":{...},"segments":{...}}`, with both maps in key order.
pub fn render_latest_all<'a>(
    flags: impl IntoIterator<Item = &'a Flag>,
    segments: impl IntoIterator<Item = &'a Segment>,
) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct All<'a> {
        flags: BTreeMap<&'a str, &'a Flag>,
        segments: BTreeMap<&'a str, &'a Segment>,
    }
    serde_json::to_vec(&All {
        flags: flags.into_iter().map(|f| (f.key.as_str(), f)).collect(),
        segments: segments.into_iter().map(|s| (s.key.as_str(), s)).collect(),
    })
}

/// The data of a `put` event around a rendered `latest-all` body: `{"path":"/","data":BODY}`.
pub fn render_put(latest_all: &[u8]) -> Vec<u8> {
    let mut put = Vec::with_capacity(latest_all.len() + 24);
    put.extend_from_slice(br#"{"path":"/","data":"#);
    put.extend_from_slice(latest_all);
    put.push(b'}');
    put
}

/// What a `put` event's data starts with; the `latest-all` body follows, then `}`.
pub const PUT_PREFIX: &str = r#"{"path":"/","data":"#;

/// The data of a `put` event, `{"path":"/","data":BODY}`, from items already rendered as JSON
/// (key, the item as the model serializes it), in one buffer sized for it. BODY is the
/// `latest-all` body, the same bytes as [`render_latest_all`] gives for the items themselves:
/// it is `put[PUT_PREFIX.len()..put.len() - 1]`, so one buffer can serve both.
pub fn render_put_json<'a>(
    flags: impl IntoIterator<Item = (&'a str, &'a str)>,
    segments: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut flags: Vec<(&str, &str)> = flags.into_iter().collect();
    let mut segments: Vec<(&str, &str)> = segments.into_iter().collect();
    flags.sort_unstable_by_key(|&(key, _)| key);
    segments.sort_unstable_by_key(|&(key, _)| key);
    let items = |list: &[(&str, &str)]| -> usize {
        list.iter()
            .map(|(k, json)| json_string_len(k) + 1 + json.len())
            .sum::<usize>()
            + list.len().saturating_sub(1)
    };
    let size = PUT_PREFIX.len()
        + r#"{"flags":{},"segments":{}}}"#.len()
        + items(&flags)
        + items(&segments);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(PUT_PREFIX.as_bytes());
    out.extend_from_slice(br#"{"flags":{"#);
    write_items(&mut out, &flags);
    out.extend_from_slice(br#"},"segments":{"#);
    write_items(&mut out, &segments);
    out.extend_from_slice(b"}}}");
    utf8(out)
}

fn write_items(out: &mut Vec<u8>, items: &[(&str, &str)]) {
    for (i, (key, json)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, key);
        out.push(b':');
        out.extend_from_slice(json.as_bytes());
    }
}

/// The length of `text` written as a JSON string by [`write_json_string`].
fn json_string_len(text: &str) -> usize {
    2 + text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Text assembled from UTF-8 pieces only.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A stream event as a client reads it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Replace everything held with this data.
    Put(FlagData),
    /// Add or replace one flag.
    PatchFlag(Flag),
    /// Add or replace one segment.
    PatchSegment(Segment),
    /// Delete one item, leaving a tombstone at `version`.
    Delete {
        /// Flag or segment.
        kind: ItemKind,
        /// Its key.
        key: String,
        /// The tombstone's version.
        version: u64,
    },
}

/// Why an event or body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The data is not JSON of the expected shape.
    #[error("invalid {what}: {source}")]
    Json {
        /// What was being read (`put event`, `latest-all body`, ...).
        what: &'static str,
        /// serde's error, with its line and column.
        source: serde_json::Error,
    },
    /// A `patch` or `delete` path that names neither `/flags/KEY` nor `/segments/KEY`.
    #[error("unknown item path {0:?}")]
    UnknownPath(String),
    /// An item inside the data does not fit the model.
    #[error("{0}")]
    Item(#[from] flags_core::LoadError),
    /// An event name other than `put`, `patch` and `delete`.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
}

#[derive(Deserialize)]
struct RawAll {
    #[serde(default)]
    flags: BTreeMap<String, Value>,
    #[serde(default)]
    segments: BTreeMap<String, Value>,
}

/// Reads a `latest-all` body (or a `put` event's `data`).
pub fn parse_latest_all(body: &[u8]) -> Result<FlagData, ParseError> {
    let raw: RawAll = serde_json::from_slice(body).map_err(|source| ParseError::Json {
        what: "latest-all body",
        source,
    })?;
    all_to_model(raw)
}

fn all_to_model(raw: RawAll) -> Result<FlagData, ParseError> {
    let mut data = FlagData::default();
    for (key, value) in raw.flags {
        let flag = Flag::from_json_value(value).map_err(|e| e.within("flags", &key))?;
        data.flags.insert(key, flag);
    }
    for (key, value) in raw.segments {
        let segment = Segment::from_json_value(value).map_err(|e| e.within("segments", &key))?;
        data.segments.insert(key, segment);
    }
    Ok(data)
}

/// Splits `/flags/KEY` or `/segments/KEY`.
pub fn parse_path(path: &str) -> Option<(ItemKind, &str)> {
    if let Some(key) = path.strip_prefix("/flags/") {
        Some((ItemKind::Flag, key))
    } else {
        path.strip_prefix("/segments/")
            .map(|key| (ItemKind::Segment, key))
    }
}

/// Reads one stream event from its name and data.
pub fn parse(event: &str, data: &str) -> Result<Event, ParseError> {
    match event {
        "put" => {
            #[derive(Deserialize)]
            struct Put {
                data: RawAll,
            }
            let put: Put = serde_json::from_str(data).map_err(|source| ParseError::Json {
                what: "put event",
                source,
            })?;
            Ok(Event::Put(all_to_model(put.data)?))
        }
        "patch" => {
            #[derive(Deserialize)]
            struct Patch {
                path: String,
                data: Value,
            }
            let patch: Patch = serde_json::from_str(data).map_err(|source| ParseError::Json {
                what: "patch event",
                source,
            })?;
            match parse_path(&patch.path) {
                Some((ItemKind::Flag, key)) => Ok(Event::PatchFlag(
                    Flag::from_json_value(patch.data).map_err(|e| e.within("flags", key))?,
                )),
                Some((ItemKind::Segment, key)) => Ok(Event::PatchSegment(
                    Segment::from_json_value(patch.data).map_err(|e| e.within("segments", key))?,
                )),
                None => Err(ParseError::UnknownPath(patch.path)),
            }
        }
        "delete" => {
            #[derive(Deserialize)]
            struct Delete {
                path: String,
                version: u64,
            }
            let delete: Delete = serde_json::from_str(data).map_err(|source| ParseError::Json {
                what: "delete event",
                source,
            })?;
            let Some((kind, key)) = parse_path(&delete.path) else {
                return Err(ParseError::UnknownPath(delete.path));
            };
            Ok(Event::Delete {
                kind,
                key: key.to_owned(),
                version: delete.version,
            })
        }
        other => Err(ParseError::UnknownEvent(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flag(key: &str, version: u64) -> Flag {
        Flag::from_json_value(json!({
            "key": key, "version": version, "on": true, "variations": [true, false],
            "fallthrough": {"variation": 0}
        }))
        .unwrap()
    }

    #[test]
    fn a_patch_names_its_path_first_and_reads_back() {
        let f = flag("a/b", 3);
        let event = render_patch(ItemKind::Flag, &f.key, &f).unwrap();
        assert!(
            event
                .data
                .starts_with(r#"{"path":"/flags/a/b","data":{"key":"a/b","version":3"#),
            "{}",
            event.data
        );
        assert_eq!(parse("patch", &event.data).unwrap(), Event::PatchFlag(f));
    }

    #[test]
    fn a_put_reads_back_as_the_rendered_data() {
        let flags = [flag("x", 1), flag("a", 2)];
        let body = render_latest_all(&flags, []).unwrap();
        assert!(body.starts_with(br#"{"flags":{"a":"#));
        let put = String::from_utf8(render_put(&body)).unwrap();
        let Event::Put(data) = parse("put", &put).unwrap() else {
            panic!("not a put")
        };
        assert_eq!(data, parse_latest_all(&body).unwrap());
        assert_eq!(data.flags.len(), 2);
        assert_eq!(data.flags["x"], flags[0]);
    }

    #[test]
    fn rendering_from_json_text_gives_the_bytes_the_model_gives() {
        // Keys that need escaping, out of order, in both sections.
        let flags = [
            flag("z\"q", 1),
            flag("a\u{e9}\n", 2),
            flag("m\u{1}\u{7f}\t", 3),
        ];
        let segments =
            [
                Segment::from_json_value(json!({"key": "s\\1", "version": 4, "included": ["u"]}))
                    .unwrap(),
            ];
        let text = |item: &dyn erased::Item| item.json();
        fn pairs(list: &[(String, String)]) -> Vec<(&str, &str)> {
            list.iter().map(|(k, j)| (k.as_str(), j.as_str())).collect()
        }
        let flag_texts: Vec<(String, String)> =
            flags.iter().map(|f| (f.key.clone(), text(f))).collect();
        let segment_texts: Vec<(String, String)> =
            segments.iter().map(|s| (s.key.clone(), text(s))).collect();
        let put = render_put_json(pairs(&flag_texts), pairs(&segment_texts));
        let body = render_latest_all(&flags, &segments).unwrap();
        assert_eq!(put.as_bytes(), render_put(&body));
        assert_eq!(&put.as_bytes()[PUT_PREFIX.len()..put.len() - 1], &body[..]);
        assert_eq!(put.capacity(), put.len(), "one buffer, sized exactly");

        for (f, (key, json)) in flags.iter().zip(&flag_texts) {
            assert_eq!(
                render_patch_json(ItemKind::Flag, key, json),
                render_patch(ItemKind::Flag, key, f).unwrap()
            );
        }
        let empty = render_put_json([], []);
        assert_eq!(empty, r#"{"path":"/","data":{"flags":{},"segments":{}}}"#);
    }

    mod erased {
        pub trait Item {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Item for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }

    #[test]
    fn bad_events_say_what_is_wrong() {
        let err = parse("delete", r#"{"path":"/other/x","version":1}"#).unwrap_err();
        assert_eq!(err.to_string(), r#"unknown item path "/other/x""#);
        let err = parse(
            "patch",
            r#"{"path":"/flags/x","data":{"key":"x","variations":7}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("flags.x.variations"), "{err}");
        let err = parse("ping", "{}").unwrap_err();
        assert_eq!(err.to_string(), r#"unknown event "ping""#);
        assert!(
            parse("put", "{")
                .unwrap_err()
                .to_string()
                .starts_with("invalid put event")
        );
    }
}
