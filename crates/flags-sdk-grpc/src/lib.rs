//! `flags-sdk-grpc`: a [`FlagSource`] for generated typed flag clients that asks flagd's gRPC
//! evaluation service (`flags.v1.FlagEvaluatorService`, served with `--grpc-listen`).
//!
//! [`GrpcFlagSource`] implements `flags_sdk::typed::FlagSource` with a future as its answer, so
//! every client `flags-codegen` generates works over it unchanged: `flags.banner().await`. Each
//! call evaluates one flag for the context the flag's layer and the entity make (the same rule
//! as the in-process client, [`flags_sdk::typed::with_context`]), sending it as an entity (kind
//! and key), with the SDK key in the `authorization` metadata entry.
//!
//! A call never fails: whatever goes wrong, its answer is the flag's compiled default. That
//! covers flagd being unreachable or slower than the call's deadline ([`DEFAULT_TIMEOUT`]
//! unless set), a refused key, a flag that is missing, has no value for the context or is of
//! another type, an entity key that is empty, and numbers outside the flag's type, which are
//! read as the in-process client reads them.
//!
//! This crate is the only one an application adds to evaluate typed flags over gRPC; the
//! in-process SDK and flagd's vocabulary know nothing of gRPC. It holds no cache: every call
//! asks flagd, whose own data survives its source's outages.

#![warn(missing_docs)]

// The README's examples run as doctests too, so they cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use flags_proto::v1::flag_evaluator_service_client::FlagEvaluatorServiceClient;
use flags_proto::v1::flag_value::Value;
use flags_proto::v1::{EntityRef, EvaluateRequest, EvaluationContext, evaluation_context};
use flags_sdk::typed::{FlagSource, FlagSpec, with_context};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

/// How long a call waits for flagd before answering with the compiled default, unless
/// [`GrpcFlagSource::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// The metadata entry that carries the SDK key.
pub const KEY_METADATA: &str = "authorization";

/// Why a source could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address is not a URI tonic can connect to (`http://host:port`).
    #[error("invalid flagd address: {0}")]
    Address(#[source] tonic::transport::Error),
    /// The SDK key cannot be sent as metadata (it holds characters other than visible ASCII).
    #[error("the SDK key cannot be sent as gRPC metadata: {0}")]
    Key(#[source] tonic::metadata::errors::InvalidMetadataValue),
}

/// A typed-flag source that asks flagd's gRPC service. Cheap to clone: clones share the
/// channel.
#[derive(Debug, Clone)]
pub struct GrpcFlagSource {
    client: FlagEvaluatorServiceClient<Channel>,
    key: AsciiMetadataValue,
    timeout: Duration,
}

impl GrpcFlagSource {
    /// A source over `channel` presenting `sdk_key`, with the [`DEFAULT_TIMEOUT`].
    pub fn new(channel: Channel, sdk_key: &str) -> Result<GrpcFlagSource, Error> {
        Ok(GrpcFlagSource {
            client: FlagEvaluatorServiceClient::new(channel),
            key: sdk_key.parse().map_err(Error::Key)?,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A source for the flagd at `uri` (`http://127.0.0.1:8014`), presenting `sdk_key`. It
    /// connects on the first call, and again after the connection is lost, so it can be made
    /// before flagd is up.
    pub fn connect_lazy(uri: &str, sdk_key: &str) -> Result<GrpcFlagSource, Error> {
        let endpoint = Endpoint::from_shared(uri.to_owned())
            .map_err(Error::Address)?
            .connect_timeout(DEFAULT_TIMEOUT)
            .tcp_nodelay(true);
        GrpcFlagSource::new(endpoint.connect_lazy(), sdk_key)
    }

    /// The same source, with calls that wait at most `timeout` for flagd.
    pub fn with_timeout(mut self, timeout: Duration) -> GrpcFlagSource {
        self.timeout = timeout;
        self
    }

    /// The answer for `flag`: its value as `read` takes it, else `default`.
    fn ask<T, S>(
        &self,
        flag: &'static FlagSpec<S>,
        entity: Option<&str>,
        default: T,
        read: fn(Value) -> Option<T>,
    ) -> Answer<T>
    where
        T: Send + 'static,
    {
        // The same context the in-process client would evaluate the flag for; none means the
        // compiled default at once.
        let entity = with_context(flag, entity, |context| {
            context.key().map(|key| EntityRef {
                kind: context.kind().to_owned(),
                key: key.to_owned(),
            })
        });
        let Some(Some(entity)) = entity else {
            return Answer::ready(default);
        };
        let mut request = tonic::Request::new(EvaluateRequest {
            flag_id: flag.key.to_owned(),
            context: Some(EvaluationContext {
                context: Some(evaluation_context::Context::Entity(entity)),
            }),
            default_value: None,
        });
        request
            .metadata_mut()
            .insert(KEY_METADATA, self.key.clone());
        // Also sent as `grpc-timeout`, so flagd gives up when the caller has.
        request.set_timeout(self.timeout);
        let mut client = self.client.clone();
        let timeout = self.timeout;
        Answer(Box::pin(async move {
            let call = tokio::time::timeout(timeout, client.evaluate(request)).await;
            match call {
                Ok(Ok(response)) => response
                    .into_inner()
                    .value
                    .and_then(|value| value.value)
                    .and_then(read)
                    .unwrap_or(default),
                // Unreachable, too slow, refused, or not ready: the compiled default.
                _ => default,
            }
        }))
    }
}

/// What a flag method of [`GrpcFlagSource`] returns: a future of the flag's value, which
/// resolves to the compiled default on any failure.
#[must_use = "the answer is a future: await it"]
pub struct Answer<T>(Pin<Box<dyn Future<Output = T> + Send>>);

impl<T: Send + 'static> Answer<T> {
    fn ready(value: T) -> Answer<T> {
        Answer(Box::pin(std::future::ready(value)))
    }
}

impl<T> Future for Answer<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.0.as_mut().poll(cx)
    }
}

impl<T> std::fmt::Debug for Answer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer")
    }
}

impl FlagSource for GrpcFlagSource {
    type Answer<T> = Answer<T>;

    fn bool_flag(&self, flag: &'static FlagSpec<bool>, entity: Option<&str>) -> Answer<bool> {
        self.ask(flag, entity, flag.default, |value| match value {
            Value::BoolValue(b) => Some(b),
            _ => None,
        })
    }

    fn string_flag(
        &self,
        flag: &'static FlagSpec<&'static str>,
        entity: Option<&str>,
    ) -> Answer<String> {
        self.ask(flag, entity, flag.default.to_owned(), |value| match value {
            Value::StringValue(s) => Some(s),
            _ => None,
        })
    }

    fn int64_flag(&self, flag: &'static FlagSpec<i64>, entity: Option<&str>) -> Answer<i64> {
        self.ask(flag, entity, flag.default, integer)
    }

    fn int32_flag(&self, flag: &'static FlagSpec<i32>, entity: Option<&str>) -> Answer<i32> {
        self.ask(flag, entity, flag.default, |value| {
            integer(value).and_then(|i| i32::try_from(i).ok())
        })
    }

    fn double_flag(&self, flag: &'static FlagSpec<f64>, entity: Option<&str>) -> Answer<f64> {
        self.ask(flag, entity, flag.default, number)
    }

    fn float_flag(&self, flag: &'static FlagSpec<f32>, entity: Option<&str>) -> Answer<f32> {
        self.ask(flag, entity, flag.default, |value| {
            number(value).and_then(narrow)
        })
    }
}

/// Any number as an integer, as the in-process client reads one: a fraction is truncated
/// toward zero (saturating at the ends of `i64`), as LaunchDarkly's SDKs do.
fn integer(value: Value) -> Option<i64> {
    match value {
        Value::Int64Value(i) => Some(i),
        #[allow(clippy::cast_possible_truncation)]
        Value::DoubleValue(d) => Some(d as i64),
        _ => None,
    }
}

/// Any number as an `f64`.
fn number(value: Value) -> Option<f64> {
    match value {
        #[allow(clippy::cast_precision_loss)]
        Value::Int64Value(i) => Some(i as f64),
        Value::DoubleValue(d) => Some(d),
        _ => None,
    }
}

/// `value` as an `f32`, when it is one within range (rounded to the nearest `f32`), as the
/// in-process client narrows it.
fn narrow(value: f64) -> Option<f32> {
    // The cast rounds, and saturates to infinity past f32's range, which is then refused.
    #[allow(clippy::cast_possible_truncation)]
    let narrow = value as f32;
    narrow.is_finite().then_some(narrow)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec<T>(key: &'static str, layer: Option<&'static str>, default: T) -> &'static FlagSpec<T> {
        Box::leak(Box::new(FlagSpec {
            key,
            layer,
            default,
        }))
    }

    #[test]
    fn numbers_are_read_as_the_in_process_client_reads_them() {
        assert_eq!(integer(Value::Int64Value(-3)), Some(-3));
        assert_eq!(integer(Value::DoubleValue(2.9)), Some(2));
        assert_eq!(integer(Value::DoubleValue(-2.9)), Some(-2));
        assert_eq!(integer(Value::DoubleValue(1e300)), Some(i64::MAX));
        assert_eq!(integer(Value::StringValue("1".into())), None);
        assert_eq!(number(Value::Int64Value(4)), Some(4.0));
        assert_eq!(number(Value::JsonValue("1".into())), None);
        assert_eq!(narrow(0.25), Some(0.25));
        assert_eq!(narrow(1e300), None);
    }

    /// Nothing listens on port 9 of the loopback: every type answers its compiled default,
    /// and so does a call that cannot make a context, without asking.
    #[tokio::test]
    async fn an_unreachable_flagd_gives_compiled_defaults() {
        let source = GrpcFlagSource::connect_lazy("http://127.0.0.1:9", "key")
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        assert!(source.bool_flag(spec("b", None, true), None).await);
        assert_eq!(
            source
                .string_flag(spec("s", Some("user"), "d"), Some("u"))
                .await,
            "d"
        );
        assert_eq!(source.int64_flag(spec("i", None, 7), None).await, 7);
        assert_eq!(source.int32_flag(spec("i", None, -7), None).await, -7);
        assert_eq!(source.double_flag(spec("d", None, 0.5), None).await, 0.5);
        assert_eq!(source.float_flag(spec("f", None, 1.5), None).await, 1.5);
        // A layered flag without an entity, or with an empty key: no call at all.
        assert_eq!(source.int64_flag(spec("i", Some("org"), 3), None).await, 3);
        assert_eq!(
            source.int64_flag(spec("i", Some("org"), 3), Some("")).await,
            3
        );
    }

    #[test]
    fn bad_addresses_and_keys_are_refused() {
        assert!(matches!(
            GrpcFlagSource::connect_lazy("not a uri", "key"),
            Err(Error::Address(_))
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A lazy channel spawns its worker, so it needs a runtime.
        runtime.block_on(async {
            assert!(matches!(
                GrpcFlagSource::connect_lazy("http://127.0.0.1:9", "bad\nkey"),
                Err(Error::Key(_))
            ));
        });
    }
}
