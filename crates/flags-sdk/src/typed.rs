//! Typed flags: what the clients that `flags-codegen` generates from protobuf declarations
//! evaluate through.
//!
//! A generated client has one method per flag. Each method hands the flag's [`FlagSpec`] (its
//! key, layer and compiled default) and, for a flag with a layer, the entity's key to a
//! [`FlagSource`]. [`Client`] is the in-process source: it evaluates from the data it holds, in
//! nanoseconds, and answers with the value itself. The trait leaves room for a source that has
//! to ask over the network (flagd's gRPC `FlagEvaluatorService`): its [`FlagSource::Answer`] is
//! a future of the value instead, and the same generated client works over it unchanged.
//!
//! Whatever goes wrong, a source answers with the flag's compiled default: the flag is missing
//! or of another type, the entity key is empty, the source is down and never had data, or the
//! client is not initialised yet. A source that had data and lost its connection keeps
//! answering from that data (stale data comes before defaults in flagd's precedence).
//!
//! ```
//! use flags_sdk::{Client, DataSource};
//! use flags_sdk::typed::{FlagSource, FlagSpec};
//!
//! // What `flags-codegen` writes for a bool flag with the layer "user" and default `true`.
//! static EMAIL_ENABLED: FlagSpec<bool> = FlagSpec {
//!     key: "notifications.email_enabled",
//!     layer: Some("user"),
//!     default: true,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("sdk-key")
//!     .data_source(DataSource::Offline)
//!     .build()?;
//! // Offline, with no flags: the compiled default.
//! assert!(client.bool_flag(&EMAIL_ENABLED, Some("user-1")));
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, LazyLock};

use flags_core::Context;

use crate::Client;

/// The context kind that flags without a layer (global flags) are evaluated for.
pub const GLOBAL_KIND: &str = "global";

/// The key of the one context global flags are evaluated for. Every caller gets the same
/// answer, so a global flag has one value per environment unless its rules look at nothing
/// but this context.
pub const GLOBAL_KEY: &str = "global";

/// One typed flag as its protobuf declaration gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlagSpec<T: 'static> {
    /// The flag key: `{feature}.{field}`, the feature being the message name in snake case.
    pub key: &'static str,
    /// The context kind the flag varies by (`user`, `org`); `None` for a global flag.
    pub layer: Option<&'static str>,
    /// The compiled default, served on every failure.
    pub default: T,
}

/// Where a generated typed client evaluates its flags.
///
/// Each method evaluates `flag` for `entity` (the entity's key, given for a flag with a layer
/// and `None` for a global flag) and never fails: on any failure the answer is
/// `flag.default`. Numbers that do not fit the flag's type (a fraction for an integer flag is
/// truncated toward zero, as LaunchDarkly's SDKs do; a value beyond `i32` for an `int32` flag
/// is not) give the default too.
pub trait FlagSource {
    /// What a flag method returns for a value of type `T`: `T` itself for a source that
    /// answers at once (the in-process [`Client`]), a future of `T` for one that must ask over
    /// the network.
    type Answer<T>;

    /// A `bool` flag.
    fn bool_flag(&self, flag: &'static FlagSpec<bool>, entity: Option<&str>) -> Self::Answer<bool>;

    /// A `string` flag.
    fn string_flag(
        &self,
        flag: &'static FlagSpec<&'static str>,
        entity: Option<&str>,
    ) -> Self::Answer<String>;

    /// An `int64` flag.
    fn int64_flag(&self, flag: &'static FlagSpec<i64>, entity: Option<&str>) -> Self::Answer<i64>;

    /// An `int32` flag.
    fn int32_flag(&self, flag: &'static FlagSpec<i32>, entity: Option<&str>) -> Self::Answer<i32>;

    /// A `double` flag.
    fn double_flag(&self, flag: &'static FlagSpec<f64>, entity: Option<&str>) -> Self::Answer<f64>;

    /// A `float` flag.
    fn float_flag(&self, flag: &'static FlagSpec<f32>, entity: Option<&str>) -> Self::Answer<f32>;
}

/// Calls `eval` with the context a typed flag is evaluated for: a context of the flag's layer
/// and the entity's key, or the global context for a flag without a layer. `None`, without
/// calling `eval`, when there is no valid context (an empty key, a layered flag asked without
/// an entity), which makes the caller serve the default. Every source goes through this, so
/// all of them evaluate a typed flag for the same context.
#[inline]
pub fn with_context<T, R>(
    flag: &FlagSpec<T>,
    entity: Option<&str>,
    eval: impl FnOnce(&Context) -> R,
) -> Option<R> {
    match (flag.layer, entity) {
        (None, _) => GLOBAL_CONTEXT.as_ref().map(eval),
        // Made and used in place: a context is a few hundred bytes, not worth moving around.
        (Some(kind), Some(key)) => match Context::single(kind, key) {
            Ok(context) => Some(eval(&context)),
            Err(_) => None,
        },
        (Some(_), None) => None,
    }
}

/// Made once: `Context::single` cannot fail for these constants (a valid kind, a non-empty
/// key), and if it ever did, global flags would serve their defaults rather than panic.
static GLOBAL_CONTEXT: LazyLock<Option<Context>> =
    LazyLock::new(|| Context::single(GLOBAL_KIND, GLOBAL_KEY).ok());

impl FlagSource for Client {
    type Answer<T> = T;

    #[inline]
    fn bool_flag(&self, flag: &'static FlagSpec<bool>, entity: Option<&str>) -> bool {
        with_context(flag, entity, |context| {
            self.bool_variation(context, flag.key, flag.default)
        })
        .unwrap_or(flag.default)
    }

    #[inline]
    fn string_flag(&self, flag: &'static FlagSpec<&'static str>, entity: Option<&str>) -> String {
        with_context(flag, entity, |context| {
            self.str_variation(context, flag.key, flag.default.to_owned())
        })
        .unwrap_or_else(|| flag.default.to_owned())
    }

    #[inline]
    fn int64_flag(&self, flag: &'static FlagSpec<i64>, entity: Option<&str>) -> i64 {
        with_context(flag, entity, |context| {
            self.int_variation(context, flag.key, flag.default)
        })
        .unwrap_or(flag.default)
    }

    #[inline]
    fn int32_flag(&self, flag: &'static FlagSpec<i32>, entity: Option<&str>) -> i32 {
        with_context(flag, entity, |context| {
            let value = self.int_variation(context, flag.key, i64::from(flag.default));
            i32::try_from(value).unwrap_or(flag.default)
        })
        .unwrap_or(flag.default)
    }

    #[inline]
    fn double_flag(&self, flag: &'static FlagSpec<f64>, entity: Option<&str>) -> f64 {
        with_context(flag, entity, |context| {
            self.float_variation(context, flag.key, flag.default)
        })
        .unwrap_or(flag.default)
    }

    #[inline]
    fn float_flag(&self, flag: &'static FlagSpec<f32>, entity: Option<&str>) -> f32 {
        with_context(flag, entity, |context| {
            let value = self.float_variation(context, flag.key, f64::from(flag.default));
            narrow(value).unwrap_or(flag.default)
        })
        .unwrap_or(flag.default)
    }
}

/// `value` as an `f32`, when it is one within range (rounded to the nearest `f32`).
fn narrow(value: f64) -> Option<f32> {
    // The cast rounds, and saturates to infinity past f32's range, which is then refused.
    #[allow(clippy::cast_possible_truncation)]
    let narrow = value as f32;
    narrow.is_finite().then_some(narrow)
}

/// Forwards every method to the source behind the reference.
impl<S: FlagSource + ?Sized> FlagSource for &S {
    type Answer<T> = S::Answer<T>;

    #[inline]
    fn bool_flag(&self, flag: &'static FlagSpec<bool>, entity: Option<&str>) -> S::Answer<bool> {
        (**self).bool_flag(flag, entity)
    }

    #[inline]
    fn string_flag(
        &self,
        flag: &'static FlagSpec<&'static str>,
        entity: Option<&str>,
    ) -> S::Answer<String> {
        (**self).string_flag(flag, entity)
    }

    #[inline]
    fn int64_flag(&self, flag: &'static FlagSpec<i64>, entity: Option<&str>) -> S::Answer<i64> {
        (**self).int64_flag(flag, entity)
    }

    #[inline]
    fn int32_flag(&self, flag: &'static FlagSpec<i32>, entity: Option<&str>) -> S::Answer<i32> {
        (**self).int32_flag(flag, entity)
    }

    #[inline]
    fn double_flag(&self, flag: &'static FlagSpec<f64>, entity: Option<&str>) -> S::Answer<f64> {
        (**self).double_flag(flag, entity)
    }

    #[inline]
    fn float_flag(&self, flag: &'static FlagSpec<f32>, entity: Option<&str>) -> S::Answer<f32> {
        (**self).float_flag(flag, entity)
    }
}

/// Forwards every method to the shared source.
impl<S: FlagSource + ?Sized> FlagSource for Arc<S> {
    type Answer<T> = S::Answer<T>;

    #[inline]
    fn bool_flag(&self, flag: &'static FlagSpec<bool>, entity: Option<&str>) -> S::Answer<bool> {
        (**self).bool_flag(flag, entity)
    }

    #[inline]
    fn string_flag(
        &self,
        flag: &'static FlagSpec<&'static str>,
        entity: Option<&str>,
    ) -> S::Answer<String> {
        (**self).string_flag(flag, entity)
    }

    #[inline]
    fn int64_flag(&self, flag: &'static FlagSpec<i64>, entity: Option<&str>) -> S::Answer<i64> {
        (**self).int64_flag(flag, entity)
    }

    #[inline]
    fn int32_flag(&self, flag: &'static FlagSpec<i32>, entity: Option<&str>) -> S::Answer<i32> {
        (**self).int32_flag(flag, entity)
    }

    #[inline]
    fn double_flag(&self, flag: &'static FlagSpec<f64>, entity: Option<&str>) -> S::Answer<f64> {
        (**self).double_flag(flag, entity)
    }

    #[inline]
    fn float_flag(&self, flag: &'static FlagSpec<f32>, entity: Option<&str>) -> S::Answer<f32> {
        (**self).float_flag(flag, entity)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use flags_core::FlagData;

    use super::*;

    fn spec<T>(key: &'static str, layer: Option<&'static str>, default: T) -> &'static FlagSpec<T> {
        Box::leak(Box::new(FlagSpec {
            key,
            layer,
            default,
        }))
    }

    /// A client over fixed data: `answer` serves `value` to everyone; `by-user` serves 1 to
    /// user `bob` and 0 to every other user; `by-org` serves "acme!" to org `acme`.
    fn client(value: serde_json::Value) -> Client {
        let data: FlagData = serde_json::from_value(serde_json::json!({"flags": {
            "answer": {"key": "answer", "version": 1, "on": true, "variations": [value],
                "fallthrough": {"variation": 0}},
            "by-user": {"key": "by-user", "version": 1, "on": true, "variations": [0, 1],
                "targets": [{"values": ["bob"], "variation": 1}],
                "fallthrough": {"variation": 0}},
            "by-org": {"key": "by-org", "version": 1, "on": true, "variations": ["-", "acme!"],
                "contextTargets": [{"contextKind": "org", "values": ["acme"], "variation": 1}],
                "fallthrough": {"variation": 0}},
        }}))
        .unwrap();
        Client::builder("key").data(data).build().unwrap()
    }

    #[test]
    fn every_type_is_served() {
        let c = client(serde_json::json!(true));
        assert!(c.bool_flag(spec("answer", None, false), None));
        let c = client(serde_json::json!("hi"));
        assert_eq!(c.string_flag(spec("answer", None, "d"), None), "hi");
        let c = client(serde_json::json!(-7));
        assert_eq!(c.int64_flag(spec("answer", None, 0), None), -7);
        assert_eq!(c.int32_flag(spec("answer", None, 0), None), -7);
        let c = client(serde_json::json!(0.25));
        assert_eq!(c.double_flag(spec("answer", None, 0.0), None), 0.25);
        assert_eq!(c.float_flag(spec("answer", None, 0.0), None), 0.25);
    }

    #[test]
    fn a_layered_flag_is_evaluated_for_a_context_of_its_kind() {
        let c = client(serde_json::json!(0));
        let by_user = spec("by-user", Some("user"), 9);
        assert_eq!(c.int64_flag(by_user, Some("bob")), 1);
        assert_eq!(c.int64_flag(by_user, Some("alice")), 0);
        let by_org = spec("by-org", Some("org"), "d");
        assert_eq!(c.string_flag(by_org, Some("acme")), "acme!");
        // A user with the org's key is another context.
        let as_user = spec("by-org", Some("user"), "d");
        assert_eq!(c.string_flag(as_user, Some("acme")), "-");
    }

    #[test]
    fn every_failure_gives_the_compiled_default() {
        let c = client(serde_json::json!("text"));
        // Wrong type.
        assert!(c.bool_flag(spec("answer", None, true), None));
        assert_eq!(c.int64_flag(spec("answer", None, 5), None), 5);
        // Missing flag.
        assert_eq!(c.double_flag(spec("missing", None, 1.5), None), 1.5);
        // No valid context: an empty entity key, or none for a layered flag.
        assert_eq!(c.int64_flag(spec("by-user", Some("user"), 9), Some("")), 9);
        assert_eq!(c.int64_flag(spec("by-user", Some("user"), 9), None), 9);
        // Beyond the type's range.
        let c = client(serde_json::json!(1_i64 << 40));
        assert_eq!(c.int32_flag(spec("answer", None, 3), None), 3);
        let c = client(serde_json::json!(1e300));
        assert_eq!(c.float_flag(spec("answer", None, 2.5), None), 2.5);
        // Not initialised: a client whose flag file does not exist has no data.
        let starved = Client::builder("key")
            .data_source(crate::DataSource::files(["/nonexistent/flags.json"]))
            .build()
            .unwrap();
        assert_eq!(starved.string_flag(spec("answer", None, "d"), None), "d");
        starved.close();
    }

    #[test]
    fn references_and_arcs_forward_to_the_source() {
        let c = client(serde_json::json!(42));
        let flag = spec("answer", None, 0);
        assert_eq!(FlagSource::int64_flag(&&c, flag, None), 42);
        assert_eq!(Arc::new(c).int32_flag(spec("answer", None, 0), None), 42);
    }
}
