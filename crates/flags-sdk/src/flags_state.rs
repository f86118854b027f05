//! `all_flags_state`: every flag's value for one context, in the JSON LaunchDarkly's
//! server-side SDKs give front ends to bootstrap their client-side SDKs:
//! `{"flag-key": value, ..., "$flagsState": {"flag-key": {"variation", "version", ...}},
//! "$valid": true}`.

use std::collections::BTreeMap;

use flags_core::Context;
use flags_data::Snapshot;
use flags_eval::Evaluator;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

/// Which flags [`Client::all_flags_state`](crate::Client::all_flags_state) includes and how
/// much it says about each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagsStateOptions {
    /// Include each evaluation's reason.
    pub with_reasons: bool,
    /// Only flags made available to client-side SDKs (`clientSideAvailability.usingEnvironmentId`).
    pub client_side_only: bool,
    /// Leave out version and reason for flags that send no full events (smaller bootstrap
    /// data, as LaunchDarkly's option of that name).
    pub details_only_for_tracked_flags: bool,
}

/// One flag's entry in `$flagsState`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagState {
    /// The value (`null` when the flag served no variation).
    #[serde(skip)]
    pub value: Value,
    /// The variation served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variation: Option<usize>,
    /// The flag's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The reason, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Value>,
    /// Whether full events are tracked for this evaluation.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub track_events: bool,
    /// Whether the reason must go with tracked events (an experiment).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub track_reason: bool,
    /// Debug events are sent until this Unix time in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug_events_until_date: Option<u64>,
}

/// The state of every flag for one context.
#[derive(Debug, Clone, PartialEq)]
pub struct AllFlagsState {
    valid: bool,
    flags: BTreeMap<String, FlagState>,
}

impl AllFlagsState {
    pub(crate) fn invalid() -> AllFlagsState {
        AllFlagsState {
            valid: false,
            flags: BTreeMap::new(),
        }
    }

    pub(crate) fn of(
        snapshot: &Snapshot,
        evaluator: &Evaluator<'_>,
        context: &Context,
        options: FlagsStateOptions,
    ) -> AllFlagsState {
        let mut flags = BTreeMap::new();
        let now_ms = crate::big_segments::now_ms();
        for compiled in snapshot.flags() {
            let flag = compiled.to_flag();
            if options.client_side_only
                && !flag
                    .client_side_availability
                    .as_ref()
                    .is_some_and(|a| a.using_environment_id)
            {
                continue;
            }
            let detail = evaluator.evaluate_flag(compiled, context);
            let in_experiment = flags_eval::is_experiment(&flag, &detail.reason);
            let track_events = flag.track_events || in_experiment;
            let debugging = flag.debug_events_until_date.is_some_and(|d| d > now_ms);
            let details = !options.details_only_for_tracked_flags || track_events || debugging;
            let reason = (options.with_reasons || in_experiment)
                .then(|| serde_json::to_value(detail.reason_json()).unwrap_or(Value::Null))
                .filter(|_| details || in_experiment);
            flags.insert(
                flag.key.clone(),
                FlagState {
                    value: detail.value.cloned().unwrap_or(Value::Null),
                    variation: detail.variation_index,
                    version: details.then_some(flag.version),
                    reason,
                    track_events,
                    track_reason: in_experiment,
                    debug_events_until_date: flag.debug_events_until_date,
                },
            );
        }
        AllFlagsState { valid: true, flags }
    }

    /// Whether the state came from data (false before initialisation).
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The value of one flag.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.flags.get(key).map(|f| &f.value)
    }

    /// The state of one flag.
    pub fn flag(&self, key: &str) -> Option<&FlagState> {
        self.flags.get(key)
    }

    /// The bootstrap JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Serialize for AllFlagsState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.flags.len() + 2))?;
        for (key, state) in &self.flags {
            map.serialize_entry(key, &state.value)?;
        }
        map.serialize_entry("$flagsState", &self.flags)?;
        map.serialize_entry("$valid", &self.valid)?;
        map.end()
    }
}
