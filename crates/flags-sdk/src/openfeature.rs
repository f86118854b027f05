//! An OpenFeature provider (the `open-feature` crate's `FeatureProvider`) over a [`Client`].
//!
//! Evaluation context → LaunchDarkly context:
//! - `targeting_key` is the key (a `key` field is used when there is no targeting key);
//! - a `kind` field names the context kind (default `user`);
//! - with `kind` = `multi`, every other field holding a structure is one context of the kind
//!   its name gives, read the same way (its own `targetingKey` or `key`, `name`, attributes);
//! - `name`, `anonymous` and `privateAttributes` are LaunchDarkly's built-in attributes; every
//!   other field is an attribute: strings, booleans and numbers as they are, date-times as Unix
//!   milliseconds (what LaunchDarkly's date operators read), structures as JSON objects (a field
//!   holding an `open_feature::StructValue` or a `serde_json::Value`).
//!
//! Results: the variation index is the variant; reasons map `OFF` → `DISABLED`,
//! `FALLTHROUGH` → `DEFAULT`, `TARGET_MATCH` and `RULE_MATCH` → `TARGETING_MATCH`,
//! `PREREQUISITE_FAILED` → itself (as a custom reason), errors → OpenFeature's error codes
//! (`FLAG_NOT_FOUND`, `TYPE_MISMATCH`, `PROVIDER_NOT_READY`, `PARSE_ERROR` for a malformed flag,
//! `INVALID_CONTEXT`/`TARGETING_KEY_MISSING` for contexts). The flag metadata carries the
//! LaunchDarkly reason kind (`reasonKind`) and, for rule matches, `ruleIndex` and `ruleId`.
//!
//! Status follows the data source: `NotReady` until the first data, `Ready` while it is
//! current, `STALE` while the connection is interrupted (the last data keeps serving), and
//! `Error` when the source stopped for good before or after data (a rejected key).

use std::time::Duration;

use flags_core::{Context, ErrorKind, Reason};
use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode,
    EvaluationReason, EvaluationResult, FlagMetadata, StructValue,
};
use serde_json::{Map, Value};

use crate::{Client, DataSourceState, Detail};

/// The name the provider reports in its metadata.
pub const PROVIDER_NAME: &str = "flagd";

/// An OpenFeature provider over a flagd [`Client`].
#[derive(Debug)]
pub struct Provider {
    client: Client,
    metadata: ProviderMetadata,
    init_timeout: Duration,
}

impl Provider {
    /// A provider over `client`; `initialize` waits up to 5 s for its first data.
    pub fn new(client: Client) -> Provider {
        Provider {
            client,
            metadata: ProviderMetadata::new(PROVIDER_NAME),
            init_timeout: Duration::from_secs(5),
        }
    }

    /// How long `initialize` waits for the first data.
    #[must_use]
    pub fn with_init_timeout(mut self, timeout: Duration) -> Provider {
        self.init_timeout = timeout;
        self
    }

    /// The client under the provider.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn resolve<T>(
        &self,
        context: &EvaluationContext,
        evaluate: impl FnOnce(&Client, &Context) -> Detail<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let context = to_context(context)?;
        let detail = evaluate(&self.client, &context);
        if let Reason::Error { error_kind } = detail.reason {
            return Err(error(error_kind));
        }
        let mut metadata =
            FlagMetadata::default().with_value("reasonKind", detail.reason.kind_str());
        if let Reason::RuleMatch {
            rule_index,
            rule_id,
            ..
        } = &detail.reason
        {
            metadata.add_value("ruleIndex", i64::try_from(*rule_index).unwrap_or(i64::MAX));
            metadata.add_value("ruleId", rule_id.to_string());
        }
        Ok(ResolutionDetails {
            value: detail.value,
            variant: detail.variation_index.map(|i| i.to_string()),
            reason: Some(reason(&detail.reason)),
            flag_metadata: Some(metadata),
        })
    }
}

#[open_feature::async_trait]
impl FeatureProvider for Provider {
    async fn initialize(&mut self, _context: &EvaluationContext) {
        self.client.wait_for_initialization(self.init_timeout).await;
    }

    fn status(&self) -> ProviderStatus {
        let status = self.client.data_source_status_provider().status();
        match status.state {
            DataSourceState::Initializing => ProviderStatus::NotReady,
            DataSourceState::Valid => ProviderStatus::Ready,
            DataSourceState::Interrupted if self.client.initialized() => ProviderStatus::STALE,
            DataSourceState::Interrupted => ProviderStatus::NotReady,
            // Off with an error: a rejected key. Off without one: offline or closed, still
            // answering from what it has.
            DataSourceState::Off if status.last_error.is_some() => ProviderStatus::Error,
            DataSourceState::Off if self.client.initialized() => ProviderStatus::Ready,
            DataSourceState::Off => ProviderStatus::NotReady,
        }
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(context, |c, ctx| {
            c.bool_variation_detail(ctx, flag_key, false)
        })
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(context, |c, ctx| c.int_variation_detail(ctx, flag_key, 0))
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(context, |c, ctx| {
            c.float_variation_detail(ctx, flag_key, 0.0)
        })
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(context, |c, ctx| {
            c.str_variation_detail(ctx, flag_key, String::new())
        })
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        let json = self.resolve(context, |c, ctx| {
            c.json_variation_detail(ctx, flag_key, Value::Null)
        })?;
        match open_feature::Value::try_from(&json.value) {
            Ok(open_feature::Value::Struct(value)) => Ok(ResolutionDetails {
                value,
                variant: json.variant,
                reason: json.reason,
                flag_metadata: json.flag_metadata,
            }),
            _ => Err(error(ErrorKind::WrongType)),
        }
    }
}

/// OpenFeature's error for an evaluation error.
fn error(kind: ErrorKind) -> EvaluationError {
    let code = match kind {
        ErrorKind::ClientNotReady => EvaluationErrorCode::ProviderNotReady,
        ErrorKind::FlagNotFound => EvaluationErrorCode::FlagNotFound,
        ErrorKind::WrongType => EvaluationErrorCode::TypeMismatch,
        ErrorKind::MalformedFlag => EvaluationErrorCode::ParseError,
        ErrorKind::UserNotSpecified => EvaluationErrorCode::TargetingKeyMissing,
        other => EvaluationErrorCode::General(other.as_str().to_owned()),
    };
    EvaluationError {
        code,
        message: Some(kind.as_str().to_owned()),
    }
}

/// OpenFeature's reason for a LaunchDarkly reason.
fn reason(reason: &Reason<'_>) -> EvaluationReason {
    match reason {
        Reason::Off { .. } => EvaluationReason::Disabled,
        Reason::Fallthrough { .. } => EvaluationReason::Default,
        Reason::TargetMatch { .. } | Reason::RuleMatch { .. } => EvaluationReason::TargetingMatch,
        Reason::PrerequisiteFailed { .. } => {
            EvaluationReason::Other("PREREQUISITE_FAILED".to_owned())
        }
        Reason::Error { .. } => EvaluationReason::Error,
    }
}

/// The LaunchDarkly context an OpenFeature evaluation context describes (see the module docs).
pub fn to_context(context: &EvaluationContext) -> Result<Context, EvaluationError> {
    let invalid = |message: String| EvaluationError {
        code: EvaluationErrorCode::InvalidContext,
        message: Some(message),
    };
    let kind = context
        .custom_fields
        .get("kind")
        .and_then(EvaluationContextFieldValue::as_str)
        .unwrap_or("user");
    let json = if kind == "multi" {
        let mut multi = Map::new();
        multi.insert("kind".to_owned(), Value::from("multi"));
        for (name, value) in &context.custom_fields {
            if name == "kind" {
                continue;
            }
            let Some(Value::Object(fields)) = struct_json(value) else {
                continue;
            };
            multi.insert(name.clone(), single_from_map(name, fields)?);
        }
        Value::Object(multi)
    } else {
        let key = context.targeting_key.clone().or_else(|| {
            context
                .custom_fields
                .get("key")
                .and_then(EvaluationContextFieldValue::as_str)
                .map(str::to_owned)
        });
        let Some(key) = key else {
            return Err(EvaluationError {
                code: EvaluationErrorCode::TargetingKeyMissing,
                message: Some("the evaluation context has no targeting key".to_owned()),
            });
        };
        let mut single = Map::new();
        single.insert("kind".to_owned(), Value::from(kind));
        single.insert("key".to_owned(), Value::from(key));
        for (name, value) in &context.custom_fields {
            if name == "kind" || name == "key" || name == "targetingKey" {
                continue;
            }
            attribute(&mut single, name, field_json(value));
        }
        Value::Object(single)
    };
    Context::from_json(&json).map_err(|e| invalid(e.to_string()))
}

/// One context of a multi-kind context, from a structure field named `kind`.
fn single_from_map(kind: &str, fields: Map<String, Value>) -> Result<Value, EvaluationError> {
    let key = fields
        .get("targetingKey")
        .or_else(|| fields.get("key"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(key) = key else {
        return Err(EvaluationError {
            code: EvaluationErrorCode::TargetingKeyMissing,
            message: Some(format!("the `{kind}` context has no targetingKey or key")),
        });
    };
    let mut single = Map::new();
    single.insert("key".to_owned(), Value::from(key));
    for (name, value) in fields {
        if name == "kind" || name == "key" || name == "targetingKey" {
            continue;
        }
        attribute(&mut single, &name, Some(value));
    }
    Ok(Value::Object(single))
}

/// Adds one attribute, putting `privateAttributes` under `_meta` as LaunchDarkly reads it.
fn attribute(single: &mut Map<String, Value>, name: &str, value: Option<Value>) {
    let Some(value) = value else {
        return;
    };
    if name == "privateAttributes" {
        single.insert(
            "_meta".to_owned(),
            serde_json::json!({ "privateAttributes": value }),
        );
    } else {
        single.insert(name.to_owned(), value);
    }
}

/// A field's value as JSON; `None` for a structure of a type this provider cannot read.
fn field_json(value: &EvaluationContextFieldValue) -> Option<Value> {
    match value {
        EvaluationContextFieldValue::Bool(b) => Some(Value::from(*b)),
        EvaluationContextFieldValue::Int(i) => Some(Value::from(*i)),
        EvaluationContextFieldValue::Float(f) => Some(Value::from(*f)),
        EvaluationContextFieldValue::String(s) => Some(Value::from(s.as_str())),
        EvaluationContextFieldValue::DateTime(t) => {
            let ms = t.unix_timestamp_nanos() / 1_000_000;
            Some(Value::from(i64::try_from(ms).unwrap_or(i64::MAX)))
        }
        EvaluationContextFieldValue::Struct(_) => struct_json(value),
    }
}

/// A structure field's value as JSON, when it holds a `StructValue` or a `serde_json::Value`.
fn struct_json(value: &EvaluationContextFieldValue) -> Option<Value> {
    let EvaluationContextFieldValue::Struct(any) = value else {
        return None;
    };
    if let Some(json) = any.downcast_ref::<Value>() {
        return Some(json.clone());
    }
    any.downcast_ref::<StructValue>().map(struct_value_json)
}

fn struct_value_json(value: &StructValue) -> Value {
    Value::Object(
        value
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), of_value_json(v)))
            .collect(),
    )
}

fn of_value_json(value: &open_feature::Value) -> Value {
    match value {
        open_feature::Value::Bool(b) => Value::from(*b),
        open_feature::Value::Int(i) => Value::from(*i),
        open_feature::Value::Float(f) => Value::from(*f),
        open_feature::Value::String(s) => Value::from(s.as_str()),
        open_feature::Value::Array(items) => {
            Value::Array(items.iter().map(of_value_json).collect())
        }
        open_feature::Value::Struct(s) => struct_value_json(s),
    }
}
