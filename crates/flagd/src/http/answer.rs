//! The answers of the evaluation routes, written straight into one buffer.
//!
//! They always have the same members, so they are written piece by piece rather than through
//! structs and serde's generic serializer; strings and values still go through
//! `serde_json`, so escaping and number formatting are exactly `serde_json`'s. The bytes are
//! those `axum::Json` wrote for the structs these writers replaced (the tests compare them).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flags_core::{Reason, ReasonJson};
use serde_json::Value;

/// Room for a typical single-flag answer, so that writing one allocates once.
const TYPICAL_ANSWER: usize = 160;

/// Room for a typical flag of an answer for all flags.
const TYPICAL_ENTRY: usize = 96;

/// Where a served value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The flag's own evaluation.
    Flag,
    /// The compiled default of a declared flag whose evaluation served no value; the reason
    /// is the evaluation's, with `"source":"COMPILED_DEFAULT"` in it.
    CompiledDefault,
}

/// `{"key":KEY,"value":VALUE,"variationIndex":INDEX,"reason":REASON}`, with `null` for an absent
/// value or index: the native single-flag answer.
pub(super) fn native_single(
    status: StatusCode,
    key: &str,
    value: Option<&Value>,
    variation_index: Option<usize>,
    reason: &ReasonJson<'_, '_>,
    source: Source,
) -> Response {
    respond(status, TYPICAL_ANSWER, |out| {
        out.extend_from_slice(b"{\"key\":");
        serde_json::to_writer(&mut *out, key)?;
        out.push(b',');
        write_detail(out, value, variation_index, reason, source)?;
        out.push(b'}');
        Ok(())
    })
}

/// `{"flags":{KEY:{"value":VALUE,"variationIndex":INDEX,"reason":REASON},...}}`: the native
/// answer for every flag, with the flags in the order given. Given in key order, as
/// `evaluate_all` gives them, that is the order a map sorted by key writes.
pub(super) fn native_all<'a>(
    entries: impl ExactSizeIterator<
        Item = (
            &'a str,
            Option<&'a Value>,
            Option<usize>,
            ReasonJson<'a, 'a>,
            Source,
        ),
    >,
) -> Response {
    respond(StatusCode::OK, bulk_capacity(entries.len()), |out| {
        out.extend_from_slice(b"{\"flags\":{");
        for (i, (key, value, variation_index, reason, source)) in entries.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, key)?;
            out.extend_from_slice(b":{");
            write_detail(out, value, variation_index, &reason, source)?;
            out.push(b'}');
        }
        out.extend_from_slice(b"}}");
        Ok(())
    })
}

/// `"value":VALUE,"variationIndex":INDEX,"reason":REASON`, with `null` for an absent value or
/// index: the members of an evaluation detail. A compiled default's reason ends with
/// `"source":"COMPILED_DEFAULT"`.
fn write_detail(
    out: &mut Vec<u8>,
    value: Option<&Value>,
    variation_index: Option<usize>,
    reason: &ReasonJson<'_, '_>,
    source: Source,
) -> serde_json::Result<()> {
    out.extend_from_slice(b"\"value\":");
    serde_json::to_writer(&mut *out, &value)?;
    out.extend_from_slice(b",\"variationIndex\":");
    match variation_index {
        Some(index) => write_number(out, index)?,
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"reason\":");
    write_reason(out, reason)?;
    if source == Source::CompiledDefault {
        // A reason is an object with at least `kind`: its closing brace makes room for one
        // more member.
        out.pop();
        out.extend_from_slice(b",\"source\":\"COMPILED_DEFAULT\"}");
    }
    Ok(())
}

/// Writes `reason` as its `Serialize` implementation does (members in the same order), without
/// going through a serializer's map for the usual reasons. A reason that carries a big-segment
/// status is left to serde.
fn write_reason(out: &mut Vec<u8>, reason: &ReasonJson<'_, '_>) -> serde_json::Result<()> {
    if reason.big_segments_status.is_some() {
        return serde_json::to_writer(out, reason);
    }
    let reason = reason.reason;
    // Kinds are upper-case ASCII: nothing to escape.
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(reason.kind_str().as_bytes());
    out.push(b'"');
    let flag = |out: &mut Vec<u8>, set: bool, member: &[u8]| {
        if set {
            out.extend_from_slice(member);
        }
    };
    match reason {
        Reason::Off { killed } => flag(out, *killed, b",\"killed\":true"),
        Reason::Fallthrough { in_experiment } => {
            flag(out, *in_experiment, b",\"inExperiment\":true");
        }
        Reason::TargetMatch { is_override } => flag(out, *is_override, b",\"override\":true"),
        Reason::RuleMatch {
            rule_index,
            rule_id,
            in_experiment,
        } => {
            out.extend_from_slice(b",\"ruleIndex\":");
            write_number(out, *rule_index)?;
            out.extend_from_slice(b",\"ruleId\":");
            serde_json::to_writer(&mut *out, rule_id)?;
            flag(out, *in_experiment, b",\"inExperiment\":true");
        }
        Reason::PrerequisiteFailed { prerequisite_key } => {
            out.extend_from_slice(b",\"prerequisiteKey\":");
            serde_json::to_writer(&mut *out, prerequisite_key)?;
        }
        Reason::Error { error_kind } => {
            out.extend_from_slice(b",\"errorKind\":");
            serde_json::to_writer(&mut *out, error_kind)?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// What an OFREP success's `metadata` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Metadata {
    /// Nothing: `{}`.
    Empty,
    /// The value is the compiled default of a declared flag:
    /// `{"source":"COMPILED_DEFAULT","reasonKind":KIND[,"errorKind":ERROR]}`, with the
    /// LaunchDarkly reason of the evaluation that served no value.
    CompiledDefault {
        /// The reason's kind (`ERROR`, `OFF`).
        reason_kind: &'static str,
        /// The error kind of an `ERROR` reason (`FLAG_NOT_FOUND`).
        error_kind: Option<&'static str>,
    },
}

/// `{"key":KEY[,"value":VALUE],"reason":REASON[,"variant":"INDEX"],"metadata":METADATA}`: the
/// OFREP single-flag success, without `value` and `variant` when no variation is served.
pub(super) fn ofrep_success(
    key: &str,
    value: Option<&Value>,
    reason: &str,
    variant: Option<usize>,
    metadata: Metadata,
) -> Response {
    respond(StatusCode::OK, TYPICAL_ANSWER, |out| {
        write_ofrep_success(out, key, value, reason, variant, metadata)
    })
}

/// One flag of an OFREP bulk answer.
pub(super) enum OfrepItem<'a> {
    /// Written as [`ofrep_success`] writes it.
    Success {
        key: &'a str,
        value: Option<&'a Value>,
        reason: &'a str,
        variant: Option<usize>,
        metadata: Metadata,
    },
    /// `{"key":KEY,"errorCode":CODE,"errorDetails":DETAILS}`.
    Failure {
        key: &'a str,
        code: &'a str,
        details: &'a str,
    },
}

/// `{"flags":[ITEM,...]}`: the OFREP bulk answer, with the flags in the order given.
pub(super) fn ofrep_all<'a>(items: impl ExactSizeIterator<Item = OfrepItem<'a>>) -> Response {
    respond(StatusCode::OK, bulk_capacity(items.len()), |out| {
        out.extend_from_slice(b"{\"flags\":[");
        for (i, item) in items.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match item {
                OfrepItem::Success {
                    key,
                    value,
                    reason,
                    variant,
                    metadata,
                } => write_ofrep_success(out, key, value, reason, variant, metadata)?,
                OfrepItem::Failure { key, code, details } => {
                    out.extend_from_slice(b"{\"key\":");
                    serde_json::to_writer(&mut *out, key)?;
                    out.extend_from_slice(b",\"errorCode\":");
                    serde_json::to_writer(&mut *out, code)?;
                    out.extend_from_slice(b",\"errorDetails\":");
                    serde_json::to_writer(&mut *out, details)?;
                    out.push(b'}');
                }
            }
        }
        out.extend_from_slice(b"]}");
        Ok(())
    })
}

/// `{"key":KEY[,"value":VALUE],"reason":REASON[,"variant":"INDEX"],"metadata":METADATA}`.
fn write_ofrep_success(
    out: &mut Vec<u8>,
    key: &str,
    value: Option<&Value>,
    reason: &str,
    variant: Option<usize>,
    metadata: Metadata,
) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"key\":");
    serde_json::to_writer(&mut *out, key)?;
    if let Some(value) = value {
        out.extend_from_slice(b",\"value\":");
        serde_json::to_writer(&mut *out, value)?;
    }
    out.extend_from_slice(b",\"reason\":");
    serde_json::to_writer(&mut *out, reason)?;
    if let Some(variant) = variant {
        out.extend_from_slice(b",\"variant\":\"");
        write_number(out, variant)?;
        out.push(b'"');
    }
    match metadata {
        Metadata::Empty => out.extend_from_slice(b",\"metadata\":{}}"),
        Metadata::CompiledDefault {
            reason_kind,
            error_kind,
        } => {
            // Kinds are upper-case ASCII: nothing to escape.
            out.extend_from_slice(b",\"metadata\":{\"source\":\"COMPILED_DEFAULT\"");
            out.extend_from_slice(b",\"reasonKind\":\"");
            out.extend_from_slice(reason_kind.as_bytes());
            out.push(b'"');
            if let Some(kind) = error_kind {
                out.extend_from_slice(b",\"errorKind\":\"");
                out.extend_from_slice(kind.as_bytes());
                out.push(b'"');
            }
            out.extend_from_slice(b"}}");
        }
    }
    Ok(())
}

/// Writes `n` in decimal, as `serde_json` writes an integer.
fn write_number(out: &mut Vec<u8>, n: usize) -> serde_json::Result<()> {
    serde_json::to_writer(out, &n)
}

/// Room for an answer for `flags` flags.
fn bulk_capacity(flags: usize) -> usize {
    16 + flags.saturating_mul(TYPICAL_ENTRY)
}

/// The JSON answer `write` writes into a buffer of `capacity` bytes, or the plain-text 500
/// `axum::Json` gives when a body cannot be serialized.
fn respond(
    status: StatusCode,
    capacity: usize,
    write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match write(&mut body) {
        Ok(()) => {
            let mut response = Response::new(Body::from(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use flags_core::{BigSegmentsStatus, ErrorKind};
    use http_body_util::BodyExt;
    use serde::Serialize;
    use serde_json::json;

    use super::*;

    /// Checks that `response` is a JSON answer with `status` and exactly the bytes `expected`.
    async fn assert_answer(response: Response, status: StatusCode, expected: Vec<u8>) {
        assert_eq!(response.status(), status);
        let kind = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert_eq!(kind, "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8(bytes.to_vec()).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[derive(Serialize)]
    struct Single<'a> {
        key: &'a str,
        value: Option<&'a Value>,
        #[serde(rename = "variationIndex")]
        variation_index: Option<usize>,
        reason: Reasoned<'a>,
    }

    /// A reason, with `source` after its own members for a compiled default.
    #[derive(Serialize)]
    struct Reasoned<'a> {
        #[serde(flatten)]
        reason: ReasonJson<'a, 'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'static str>,
    }

    impl<'a> Reasoned<'a> {
        fn new(reason: ReasonJson<'a, 'a>, source: Source) -> Reasoned<'a> {
            Reasoned {
                reason,
                source: (source == Source::CompiledDefault).then_some("COMPILED_DEFAULT"),
            }
        }
    }

    #[derive(Serialize)]
    struct Success<'a> {
        key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a Value>,
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        variant: Option<String>,
        metadata: Meta,
    }

    #[derive(Serialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason_kind: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_kind: Option<&'static str>,
    }

    impl Meta {
        fn of(metadata: Metadata) -> Meta {
            match metadata {
                Metadata::Empty => Meta::default(),
                Metadata::CompiledDefault {
                    reason_kind,
                    error_kind,
                } => Meta {
                    source: Some("COMPILED_DEFAULT"),
                    reason_kind: Some(reason_kind),
                    error_kind,
                },
            }
        }
    }

    const METADATA: [Metadata; 3] = [
        Metadata::Empty,
        Metadata::CompiledDefault {
            reason_kind: "OFF",
            error_kind: None,
        },
        Metadata::CompiledDefault {
            reason_kind: "ERROR",
            error_kind: Some("FLAG_NOT_FOUND"),
        },
    ];

    /// The position of `key` in [`KEYS`].
    fn i_of(key: &str) -> usize {
        KEYS.iter().position(|k| *k == key).unwrap_or(0)
    }

    const KEYS: [&str; 5] = [
        "flag-125",
        "a/b c",
        "quote\"back\\slash",
        "tab\tnl\n\u{1}",
        "ü€😀",
    ];

    #[tokio::test]
    async fn native_answers_are_what_serde_writes() {
        let values = [
            None,
            Some(json!("variant-c")),
            Some(json!({"a": [1, 2.5, null, "x\"y"]})),
            Some(json!(-3)),
        ];
        let mut reasons = vec![
            Reason::Off { killed: true },
            Reason::Error {
                error_kind: ErrorKind::FlagNotFound,
            },
            Reason::Error {
                error_kind: ErrorKind::MalformedFlag,
            },
        ];
        for set in [false, true] {
            reasons.push(Reason::Off { killed: set });
            reasons.push(Reason::Fallthrough { in_experiment: set });
            reasons.push(Reason::TargetMatch { is_override: set });
            for (rule_index, rule_id) in [(0, "rule-1"), (usize::MAX, "q\"\\\u{1}ü")] {
                reasons.push(Reason::RuleMatch {
                    rule_index,
                    rule_id: rule_id.into(),
                    in_experiment: set,
                });
            }
        }
        for key in KEYS {
            reasons.push(Reason::PrerequisiteFailed {
                prerequisite_key: key.into(),
            });
        }
        let statuses = [None, Some(BigSegmentsStatus::Healthy)];
        for key in KEYS {
            for value in &values {
                for index in [None, Some(0), Some(3), Some(usize::MAX)] {
                    for (reason, status) in reasons.iter().flat_map(|r| statuses.map(|s| (r, s))) {
                        let reason = ReasonJson {
                            reason,
                            big_segments_status: status,
                        };
                        for source in [Source::Flag, Source::CompiledDefault] {
                            let expected = serde_json::to_vec(&Single {
                                key,
                                value: value.as_ref(),
                                variation_index: index,
                                reason: Reasoned::new(reason, source),
                            })
                            .unwrap();
                            let answer = native_single(
                                StatusCode::NOT_FOUND,
                                key,
                                value.as_ref(),
                                index,
                                &reason,
                                source,
                            );
                            assert_answer(answer, StatusCode::NOT_FOUND, expected).await;
                        }
                    }
                }
            }
        }
    }

    #[derive(Serialize)]
    struct All<'a> {
        flags: std::collections::BTreeMap<&'a str, Entry<'a>>,
    }

    #[derive(Serialize)]
    struct Entry<'a> {
        value: Option<&'a Value>,
        #[serde(rename = "variationIndex")]
        variation_index: Option<usize>,
        reason: Reasoned<'a>,
    }

    #[tokio::test]
    async fn answers_for_all_flags_are_what_serde_writes_for_a_sorted_map() {
        let values = [None, Some(json!("v")), Some(json!({"a": [1, 2.5, null]}))];
        let reasons = [
            Reason::Off { killed: true },
            Reason::Fallthrough {
                in_experiment: false,
            },
            Reason::RuleMatch {
                rule_index: 2,
                rule_id: "q\"\\\u{1}ü".into(),
                in_experiment: true,
            },
            Reason::Error {
                error_kind: ErrorKind::MalformedFlag,
            },
        ];
        let statuses = [None, Some(BigSegmentsStatus::Healthy)];
        let mut keys = KEYS.to_vec();
        keys.sort_unstable();
        for count in [0, 1, keys.len()] {
            let entries: Vec<_> = keys
                .iter()
                .take(count)
                .enumerate()
                .map(|(i, key)| {
                    let reason = ReasonJson {
                        reason: &reasons[i % reasons.len()],
                        big_segments_status: statuses[i % statuses.len()],
                    };
                    let index = (i % 2 == 0).then_some(i);
                    let source = if i % 3 == 1 {
                        Source::CompiledDefault
                    } else {
                        Source::Flag
                    };
                    (
                        *key,
                        values[i % values.len()].as_ref(),
                        index,
                        reason,
                        source,
                    )
                })
                .collect();
            let expected = serde_json::to_vec(&All {
                flags: entries
                    .iter()
                    .map(|&(key, value, variation_index, reason, source)| {
                        (
                            key,
                            Entry {
                                value,
                                variation_index,
                                reason: Reasoned::new(reason, source),
                            },
                        )
                    })
                    .collect(),
            })
            .unwrap();
            assert_answer(native_all(entries.into_iter()), StatusCode::OK, expected).await;
        }
    }

    #[derive(Serialize)]
    struct Failure<'a> {
        key: &'a str,
        #[serde(rename = "errorCode")]
        error_code: &'a str,
        #[serde(rename = "errorDetails")]
        error_details: &'a str,
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    enum Item<'a> {
        Success(Success<'a>),
        Failure(Failure<'a>),
    }

    #[derive(Serialize)]
    struct Bulk<'a> {
        flags: Vec<Item<'a>>,
    }

    #[tokio::test]
    async fn ofrep_bulk_answers_are_what_serde_writes() {
        let values = [None, Some(json!(true)), Some(json!("a\u{7f}\"b"))];
        let details = ["flag \"x\" not found", "tab\t"];
        for count in [0, 1, KEYS.len()] {
            let items = || {
                KEYS.iter().take(count).enumerate().map(|(i, &key)| {
                    if i % 3 == 2 {
                        (key, None, Err(details[i % 2]))
                    } else {
                        (key, values[i % 3].as_ref(), Ok((i % 2 == 0).then_some(i)))
                    }
                })
            };
            let expected = serde_json::to_vec(&Bulk {
                flags: items()
                    .map(|(key, value, outcome)| match outcome {
                        Ok(variant) => Item::Success(Success {
                            key,
                            value,
                            reason: "SPLIT",
                            variant: variant.map(|v| v.to_string()),
                            metadata: Meta::of(METADATA[i_of(key) % METADATA.len()]),
                        }),
                        Err(details) => Item::Failure(Failure {
                            key,
                            error_code: "GENERAL",
                            error_details: details,
                        }),
                    })
                    .collect(),
            })
            .unwrap();
            let answer = ofrep_all(items().map(|(key, value, outcome)| match outcome {
                Ok(variant) => OfrepItem::Success {
                    key,
                    value,
                    reason: "SPLIT",
                    variant,
                    metadata: METADATA[i_of(key) % METADATA.len()],
                },
                Err(details) => OfrepItem::Failure {
                    key,
                    code: "GENERAL",
                    details,
                },
            }));
            assert_answer(answer, StatusCode::OK, expected).await;
        }
    }

    #[tokio::test]
    async fn ofrep_answers_are_what_serde_writes() {
        for key in KEYS {
            for value in [None, Some(json!(true)), Some(json!("a\u{7f}\"b"))] {
                for variant in [None, Some(0), Some(17)] {
                    for (reason, metadata) in ["TARGETING_MATCH", "DISABLED", "DEFAULT"]
                        .into_iter()
                        .flat_map(|r| METADATA.map(|m| (r, m)))
                    {
                        let expected = serde_json::to_vec(&Success {
                            key,
                            value: value.as_ref(),
                            reason,
                            variant: variant.map(|v: usize| v.to_string()),
                            metadata: Meta::of(metadata),
                        })
                        .unwrap();
                        let answer = ofrep_success(key, value.as_ref(), reason, variant, metadata);
                        assert_answer(answer, StatusCode::OK, expected).await;
                    }
                }
            }
        }
    }
}
