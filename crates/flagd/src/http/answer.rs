//! The answers of the single-flag evaluation routes, written straight into one buffer.
//!
//! They are small and always have the same members, so they are written piece by piece rather
//! than through a struct and serde's generic serializer; strings, values and reasons still go
//! through `serde_json`, so escaping and number formatting are exactly `serde_json`'s. The bytes
//! are those `axum::Json` wrote for the structs these writers replaced.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flags_core::ReasonJson;
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
        serde_json::to_writer(&mut out, reason)?;
        out.push(b'}');
        Ok(())
    })();
    respond(status, written.map(|()| out))
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
    use flags_core::{ErrorKind, Reason};
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
        let reasons = [
            Reason::Off { killed: true },
            Reason::Fallthrough {
                in_experiment: false,
            },
            Reason::Error {
                error_kind: ErrorKind::FlagNotFound,
            },
        ];
        for key in KEYS {
            for value in &values {
                for index in [None, Some(0), Some(3), Some(usize::MAX)] {
                    for reason in &reasons {
                        let reason = ReasonJson {
                            reason,
                            big_segments_status: None,
                        };
                        let expected = serde_json::to_vec(&Single {
                            key,
                            value: value.as_ref(),
                            variation_index: index,
                            reason: ReasonJson {
                                reason: reason.reason,
                                big_segments_status: None,
                            },
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
