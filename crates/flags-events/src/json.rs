//! Records written as JSON by hand: the same bytes `serde_json` writes for them through their
//! `Serialize` implementations (the reference, which the tests compare against), in a fraction
//! of the time, since an exporter writes every record it is given.

use serde_json::Value;

use crate::record::SDK_DEFAULT;
use crate::record::{CustomRecord, FeatureRecord, Metadata, MetricsRecord, Record, SummaryRecord};

impl Record {
    /// Appends the record as one line of JSON (no newline): the bytes `serde_json` writes for
    /// it, written directly, since exporters write every record this way.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Record::Feature(r) => feature(r, out),
            Record::Custom(r) => custom(r, out),
            Record::Summary(r) => summary(r, out),
            Record::Metrics(r) => metrics(r, out),
        }
    }
}

fn feature(r: &FeatureRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"kind":"feature","#);
    who_and_what(out, &r.context_kind, &r.user_key, r.creation_date, &r.key);
    out.extend_from_slice(br#","variation":"#);
    variation(out, r.variation);
    out.extend_from_slice(br#","value":"#);
    value(out, &r.value);
    out.extend_from_slice(if r.default {
        br#","default":true,"version":"#
    } else {
        br#","default":false,"version":"#
    });
    version(out, r.version);
    out.extend_from_slice(br#","source":"#);
    string(out, &r.source);
    out.extend_from_slice(br#","metadata":"#);
    metadata(out, &r.metadata);
    out.push(b'}');
}

fn custom(r: &CustomRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"kind":"custom","#);
    who_and_what(out, &r.context_kind, &r.user_key, r.creation_date, &r.key);
    if let Some(v) = r.value {
        out.extend_from_slice(br#","value":"#);
        float(out, v);
    }
    if let Some(data) = &r.data {
        out.extend_from_slice(br#","data":"#);
        value(out, data);
    }
    out.extend_from_slice(br#","source":"#);
    string(out, &r.source);
    out.extend_from_slice(br#","metadata":"#);
    metadata(out, &r.metadata);
    out.push(b'}');
}

/// `"contextKind":…,"userKey":…,"creationDate":…,"key":…`, which `feature` and `custom`
/// records share.
fn who_and_what(out: &mut Vec<u8>, context_kind: &str, user_key: &str, at: u64, key: &str) {
    out.extend_from_slice(br#""contextKind":"#);
    string(out, context_kind);
    out.extend_from_slice(br#","userKey":"#);
    string(out, user_key);
    out.extend_from_slice(br#","creationDate":"#);
    number(out, at);
    out.extend_from_slice(br#","key":"#);
    string(out, key);
}

fn summary(r: &SummaryRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"kind":"summary","creationDate":"#);
    number(out, r.creation_date);
    out.extend_from_slice(br#","startDate":"#);
    number(out, r.start_date);
    out.extend_from_slice(br#","key":"#);
    string(out, &r.key);
    out.extend_from_slice(br#","variation":"#);
    variation(out, r.variation);
    out.extend_from_slice(br#","value":"#);
    value(out, &r.value);
    out.extend_from_slice(br#","version":"#);
    version(out, r.version);
    out.extend_from_slice(br#","count":"#);
    number(out, r.count);
    out.extend_from_slice(br#","default":"#);
    value(out, &r.default);
    out.extend_from_slice(br#","contextKinds":["#);
    for (i, kind) in r.context_kinds.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, kind);
    }
    out.extend_from_slice(br#"],"source":"#);
    string(out, &r.source);
    out.push(b'}');
}

fn metrics(r: &MetricsRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"kind":"metrics","creationDate":"#);
    number(out, r.creation_date);
    out.extend_from_slice(br#","metric":"#);
    string(out, &r.metric);
    out.extend_from_slice(br#","api":"#);
    string(out, &r.api);
    out.extend_from_slice(br#","value":"#);
    float(out, r.value);
    if !r.labels.is_empty() {
        out.extend_from_slice(br#","labels":{"#);
        for (i, (name, label)) in r.labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, name);
            out.push(b':');
            value(out, label);
        }
        out.push(b'}');
    }
    out.extend_from_slice(br#","source":"#);
    string(out, &r.source);
    out.push(b'}');
}

fn metadata(out: &mut Vec<u8>, m: &Metadata) {
    out.extend_from_slice(br#"{"contextKeys":{"#);
    for (i, (kind, key)) in m.context_keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, kind);
        out.push(b':');
        string(out, key);
    }
    out.push(b'}');
    if m.debug {
        out.extend_from_slice(br#","debug":true"#);
    }
    if let Some(default) = &m.default_value {
        out.extend_from_slice(br#","defaultValue":"#);
        value(out, default);
    }
    if let Some(env) = &m.environment {
        out.extend_from_slice(br#","environment":"#);
        string(out, env);
    }
    if let Some(parent) = &m.prereq_of {
        out.extend_from_slice(br#","prereqOf":"#);
        string(out, parent);
    }
    if let Some(reason) = &m.reason {
        out.extend_from_slice(br#","reason":"#);
        out.extend_from_slice(reason.as_str().as_bytes());
    }
    out.push(b'}');
}

fn variation(out: &mut Vec<u8>, variation: Option<usize>) {
    match variation {
        Some(index) => {
            out.push(b'"');
            out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
            out.push(b'"');
        }
        None => {
            out.push(b'"');
            out.extend_from_slice(SDK_DEFAULT.as_bytes());
            out.push(b'"');
        }
    }
}

fn version(out: &mut Vec<u8>, version: Option<u64>) {
    out.push(b'"');
    if let Some(v) = version {
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    out.push(b'"');
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn float(out: &mut Vec<u8>, f: f64) {
    // serde_json's own formatting (shortest round trip; `null` when not finite).
    value(out, &Value::from(f));
}

/// Any JSON value, through serde_json: values are mostly scalars, which it writes quickly.
fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
        Value::String(s) => string(out, s),
        // Writing into a Vec cannot fail, and a Value always serializes.
        other => drop(serde_json::to_writer(&mut *out, other)),
    }
}

/// Whether a byte must be escaped in a JSON string as serde_json writes it: the quote, the
/// backslash and the control characters.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Eight bytes at a time: whether any of them needs escaping (the high bit of that byte's lane
/// is set in the result). Bytes of 0x80 and above never need it, and are masked out.
#[inline]
fn escapes_in(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    (control | zero_in(word ^ (ONES * u64::from(b'"'))) | zero_in(word ^ (ONES * u64::from(b'\\'))))
        & !word
}

/// How many leading bytes of `bytes` need no escaping: eight at a time, then one by one.
#[inline]
fn clean_prefix(bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if escapes_in(u64::from_le_bytes(word)) != 0 {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && !needs_escape(bytes[i]) {
        i += 1;
    }
    i
}

/// A JSON string, escaped exactly as serde_json does (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
/// `\t`, else `\u00XX` in lowercase hex). Most strings need no escaping and are copied whole.
#[inline]
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let clean = clean_prefix(bytes);
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if clean == bytes.len() {
        out.extend_from_slice(bytes);
    } else {
        escaped(out, bytes, clean);
    }
    out.push(b'"');
}

/// The rest of a string from the first byte that needs escaping, at `from`.
#[cold]
fn escaped(out: &mut Vec<u8>, bytes: &[u8], from: usize) {
    out.extend_from_slice(&bytes[..from]);
    let mut start = from;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_needs_escaping_exactly_when_one_of_its_bytes_does() {
        for fill in [b'a', 0x80, 0xff, b' '] {
            for lane in 0..8 {
                for b in 0..=u8::MAX {
                    let mut word = [fill; 8];
                    word[lane] = b;
                    assert_eq!(
                        escapes_in(u64::from_le_bytes(word)) != 0,
                        needs_escape(b),
                        "byte {b:#04x} in lane {lane} among {fill:#04x}"
                    );
                }
            }
        }
    }
}
