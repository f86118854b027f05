//! The answers of the single-flag evaluation routes, written straight into one buffer.
//!
//! They are small and always have the same members, so they are written piece by piece rather
//! than through a struct and serde's generic serializer; strings and values still go through
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

/// `{"key":KEY,"value":VALUE,"variationIndex":INDEX,"reason":REASON}`, with `null` for an absent
/// value or index: the native single-flag answer.
pub(super) fn native_single(
    status: StatusCode,
    key: &str,
    value: Option<&Value>,
    variation_index: Option<usize>,
    reason: &ReasonJson<'_, '_>,
) -> Response {
    let mut out = Vec::with_capacity(TYPICAL_ANSWER);
    let written = (|| -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"key\":");
        serde_json::to_writer(&mut out, key)?;
        out.extend_from_slice(b",\"value\":");
        serde_json::to_writer(&mut out, &value)?;
        out.extend_from_slice(b",\"variationIndex\":");
        match variation_index {
            Some(index) => write_number(&mut out, index)?,
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"reason\":");
        write_reason(&mut out, reason)?;
        out.push(b'}');
        Ok(())
    })();
    respond(status, written.map(|()| out))
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

/// `{"key":KEY[,"value":VALUE],"reason":REASON[,"variant":"INDEX"],"metadata":{}}`: the OFREP
/// single-flag success, without `value` and `variant` when no variation is served.
pub(super) fn ofrep_success(
    key: &str,
    value: Option<&Value>,
    reason: &str,
    variant: Option<usize>,
) -> Response {
    let mut out = Vec::with_capacity(TYPICAL_ANSWER);
    let written = (|| -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"key\":");
        serde_json::to_writer(&mut out, key)?;
        if let Some(value) = value {
            out.extend_from_slice(b",\"value\":");
            serde_json::to_writer(&mut out, value)?;
        }
        out.extend_from_slice(b",\"reason\":");
        serde_json::to_writer(&mut out, reason)?;
        if let Some(variant) = variant {
            out.extend_from_slice(b",\"variant\":\"");
            write_number(&mut out, variant)?;
            out.push(b'"');
        }
        out.extend_from_slice(b",\"metadata\":{}}");
        Ok(())
    })();
    respond(StatusCode::OK, written.map(|()| out))
}

/// Writes `n` in decimal, as `serde_json` writes an integer.
fn write_number(out: &mut Vec<u8>, n: usize) -> serde_json::Result<()> {
    serde_json::to_writer(out, &n)
}

/// The JSON answer, or the plain-text 500 `axum::Json` gives when a body cannot be serialized.
fn respond(status: StatusCode, body: serde_json::Result<Vec<u8>>) -> Response {
    match body {
        Ok(body) => {
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

    async fn body(response: Response) -> (StatusCode, String, Vec<u8>) {
        let status = response.status();
        let kind = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, kind, bytes.to_vec())
    }

    #[derive(Serialize)]
    struct Single<'a> {
        key: &'a str,
        value: Option<&'a Value>,
        #[serde(rename = "variationIndex")]
        variation_index: Option<usize>,
        reason: ReasonJson<'a, 'a>,
    }

    #[derive(Serialize)]
    struct Success<'a> {
        key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a Value>,
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        variant: Option<String>,
        metadata: serde_json::Map<String, Value>,
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
                        let expected = serde_json::to_vec(&Single {
                            key,
                            value: value.as_ref(),
                            variation_index: index,
                            reason,
                        })
                        .unwrap();
                        let answer = native_single(
                            StatusCode::NOT_FOUND,
                            key,
                            value.as_ref(),
                            index,
                            &reason,
                        );
                        let (status, kind, bytes) = body(answer).await;
                        assert_eq!(status, StatusCode::NOT_FOUND);
                        assert_eq!(kind, "application/json");
                        assert_eq!(
                            String::from_utf8(bytes).unwrap(),
                            String::from_utf8(expected).unwrap()
                        );
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn ofrep_answers_are_what_serde_writes() {
        for key in KEYS {
            for value in [None, Some(json!(true)), Some(json!("a\u{7f}\"b"))] {
                for variant in [None, Some(0), Some(17)] {
                    for reason in ["TARGETING_MATCH", "DISABLED"] {
                        let expected = serde_json::to_vec(&Success {
                            key,
                            value: value.as_ref(),
                            reason,
                            variant: variant.map(|v: usize| v.to_string()),
                            metadata: serde_json::Map::new(),
                        })
                        .unwrap();
                        let answer = ofrep_success(key, value.as_ref(), reason, variant);
                        let (status, kind, bytes) = body(answer).await;
                        assert_eq!(status, StatusCode::OK);
                        assert_eq!(kind, "application/json");
                        assert_eq!(
                            String::from_utf8(bytes).unwrap(),
                            String::from_utf8(expected).unwrap()
                        );
                    }
                }
            }
        }
    }
}
