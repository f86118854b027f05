//! The evaluation service's messages from and to flagd's own types: contexts in, values and
//! reasons out, each field as `proto/flags/v1/evaluator.proto` describes it.

use flags_core::context::MaybeObject;
use flags_core::{BigSegmentsStatus, Context, ErrorKind, EvalDetail, Reason};
use flags_proto::v1::{self, evaluation_context, flag_value};
use serde::Deserialize;
use serde_json::Value;
use tonic::Status;

/// The LaunchDarkly context of a request: its JSON, read as the HTTP API reads the `context`
/// of a body, or an entity's kind and key. A missing or invalid one is `INVALID_ARGUMENT`
/// with what is wrong, as HTTP's 400.
pub(super) fn context(context: Option<v1::EvaluationContext>) -> Result<Context, Status> {
    match context.and_then(|c| c.context) {
        None => Err(Status::invalid_argument(
            "the request has no context: set context.json (LaunchDarkly context JSON) or \
             context.entity (a kind and a key)",
        )),
        Some(evaluation_context::Context::Json(json)) => {
            let mut deserializer = serde_json::Deserializer::from_str(&json);
            let read = MaybeObject::deserialize(&mut deserializer)
                .and_then(|object| deserializer.end().map(|()| object));
            match read {
                Err(e) => Err(Status::invalid_argument(format!(
                    "context.json is not valid JSON: {e}"
                ))),
                Ok(MaybeObject::Other) => Err(Status::invalid_argument(
                    "invalid context: context.json must be a JSON object",
                )),
                Ok(MaybeObject::Object(members)) => Context::from_members(members)
                    .map_err(|e| Status::invalid_argument(format!("invalid context: {e}"))),
            }
        }
        Some(evaluation_context::Context::Entity(entity)) => {
            Context::single(&entity.kind, &entity.key)
                .map_err(|e| Status::invalid_argument(format!("invalid context.entity: {e}")))
        }
    }
}

/// A JSON value as the typed `FlagValue`: booleans, strings, whole numbers that fit in 64 bits
/// (as written: `1.0` and `1e3` are doubles, as they are in the flag's JSON) and other numbers
/// in their own fields, anything else (objects, arrays, null) as JSON text.
pub(super) fn flag_value(value: &Value) -> v1::FlagValue {
    let value = match value {
        Value::Bool(b) => flag_value::Value::BoolValue(*b),
        Value::String(s) => flag_value::Value::StringValue(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => flag_value::Value::Int64Value(i),
            // A whole number past i64 (up to u64::MAX) or one with a fraction or exponent.
            None => flag_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => flag_value::Value::JsonValue(other.to_string()),
    };
    v1::FlagValue { value: Some(value) }
}

/// LaunchDarkly's reason of an evaluation, with its big-segment status. flagd's labels of
/// kills and overrides are not reason fields here: the answer's `source` says them.
pub(super) fn reason(detail: &EvalDetail<'_>) -> v1::EvaluationReason {
    let mut reason = v1::EvaluationReason {
        big_segments_status: detail
            .big_segments_status
            .map_or(v1::BigSegmentsStatus::Unspecified, big_segments_status)
            .into(),
        ..v1::EvaluationReason::default()
    };
    let kind = match &detail.reason {
        Reason::Off { .. } => v1::ReasonKind::Off,
        Reason::Fallthrough { in_experiment } => {
            reason.in_experiment = *in_experiment;
            v1::ReasonKind::Fallthrough
        }
        Reason::TargetMatch { .. } => v1::ReasonKind::TargetMatch,
        Reason::RuleMatch {
            rule_index,
            rule_id,
            in_experiment,
        } => {
            reason.rule_index = u32::try_from(*rule_index).unwrap_or(u32::MAX);
            reason.rule_id = rule_id.to_string();
            reason.in_experiment = *in_experiment;
            v1::ReasonKind::RuleMatch
        }
        Reason::PrerequisiteFailed { prerequisite_key } => {
            reason.prerequisite_key = prerequisite_key.to_string();
            v1::ReasonKind::PrerequisiteFailed
        }
        Reason::Error { error_kind } => {
            reason.error_kind = self::error_kind(*error_kind).into();
            v1::ReasonKind::Error
        }
    };
    reason.kind = kind.into();
    reason
}

fn error_kind(kind: ErrorKind) -> v1::ErrorKind {
    match kind {
        ErrorKind::ClientNotReady => v1::ErrorKind::ClientNotReady,
        ErrorKind::FlagNotFound => v1::ErrorKind::FlagNotFound,
        ErrorKind::MalformedFlag => v1::ErrorKind::MalformedFlag,
        ErrorKind::UserNotSpecified => v1::ErrorKind::UserNotSpecified,
        ErrorKind::WrongType => v1::ErrorKind::WrongType,
        // A kind this server does not know of is an unexpected failure.
        _ => v1::ErrorKind::Exception,
    }
}

fn big_segments_status(status: BigSegmentsStatus) -> v1::BigSegmentsStatus {
    match status {
        BigSegmentsStatus::Healthy => v1::BigSegmentsStatus::Healthy,
        BigSegmentsStatus::Stale => v1::BigSegmentsStatus::Stale,
        BigSegmentsStatus::StoreError => v1::BigSegmentsStatus::StoreError,
        BigSegmentsStatus::NotConfigured => v1::BigSegmentsStatus::NotConfigured,
    }
}

/// A count or index as the `int32`/`uint32` of a message, saturating rather than wrapping.
pub(super) fn index(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_keep_their_json_type() {
        let check = |json: Value, expected: flag_value::Value| {
            assert_eq!(flag_value(&json).value, Some(expected), "{json}");
        };
        check(json!(true), flag_value::Value::BoolValue(true));
        check(json!("on"), flag_value::Value::StringValue("on".into()));
        check(json!(-7), flag_value::Value::Int64Value(-7));
        check(
            json!(9_007_199_254_740_993_i64),
            flag_value::Value::Int64Value(9_007_199_254_740_993),
        );
        check(json!(0.5), flag_value::Value::DoubleValue(0.5));
        check(json!(1.0), flag_value::Value::DoubleValue(1.0));
        check(
            json!(u64::MAX),
            flag_value::Value::DoubleValue(18_446_744_073_709_551_615.0),
        );
        check(
            json!({"a": [1, null]}),
            flag_value::Value::JsonValue(r#"{"a":[1,null]}"#.into()),
        );
        check(json!(null), flag_value::Value::JsonValue("null".into()));
    }

    #[test]
    fn contexts_are_read_as_the_http_api_reads_them() {
        let json = |text: &str| {
            context(Some(v1::EvaluationContext {
                context: Some(evaluation_context::Context::Json(text.to_owned())),
            }))
        };
        let multi = json(r#"{"kind":"multi","user":{"key":"u"},"org":{"key":"o"}}"#).unwrap();
        assert!(multi.is_multi());
        assert_eq!(json(r#"{"key":"legacy"}"#).unwrap().kind(), "user");
        for (bad, says) in [
            ("{", "not valid JSON"),
            (r#"{"key":"u"} x"#, "not valid JSON"),
            ("[1]", "must be a JSON object"),
            (r#"{"kind":"user"}"#, "invalid context"),
        ] {
            let status = json(bad).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(
                status.message().contains(says),
                "{bad}: {}",
                status.message()
            );
        }
        let entity = context(Some(v1::EvaluationContext {
            context: Some(evaluation_context::Context::Entity(v1::EntityRef {
                kind: "org".into(),
                key: "acme".into(),
            })),
        }))
        .unwrap();
        assert_eq!((entity.kind(), entity.key()), ("org", Some("acme")));
        let empty = context(Some(v1::EvaluationContext {
            context: Some(evaluation_context::Context::Entity(v1::EntityRef::default())),
        }));
        assert_eq!(empty.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(
            context(None).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn reasons_carry_every_field() {
        let detail = EvalDetail {
            value: None,
            variation_index: Some(1),
            reason: Reason::RuleMatch {
                rule_index: 2,
                rule_id: "r2".into(),
                in_experiment: true,
            },
            big_segments_status: Some(BigSegmentsStatus::Stale),
        };
        let reason = reason(&detail);
        assert_eq!(reason.kind(), v1::ReasonKind::RuleMatch);
        assert_eq!((reason.rule_index, reason.rule_id.as_str()), (2, "r2"));
        assert!(reason.in_experiment);
        assert_eq!(reason.big_segments_status(), v1::BigSegmentsStatus::Stale);
        let error = super::reason(&EvalDetail::error(ErrorKind::FlagNotFound));
        assert_eq!(error.kind(), v1::ReasonKind::Error);
        assert_eq!(error.error_kind(), v1::ErrorKind::FlagNotFound);
        assert_eq!(
            error.big_segments_status(),
            v1::BigSegmentsStatus::Unspecified
        );
    }
}
