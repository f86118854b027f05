//! Evaluation results: value, variation index and reason, in LaunchDarkly's JSON form.

use std::borrow::Cow;
use std::fmt;

use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The result of evaluating a flag, borrowing from the data snapshot it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalDetail<'a> {
    /// The variation value; `None` means "serve the caller's default".
    pub value: Option<&'a Value>,
    /// The variation index, when a variation was chosen.
    pub variation_index: Option<usize>,
    /// Why this result.
    pub reason: Reason<'a>,
    /// The state of the big-segment store, when a big segment was consulted.
    pub big_segments_status: Option<BigSegmentsStatus>,
}

impl<'a> EvalDetail<'a> {
    /// An error result: no value, no variation.
    pub fn error(kind: ErrorKind) -> EvalDetail<'a> {
        EvalDetail {
            value: None,
            variation_index: None,
            reason: Reason::Error { error_kind: kind },
            big_segments_status: None,
        }
    }

    /// A result serving variation `index` with value `value`.
    pub fn variation(value: &'a Value, index: usize, reason: Reason<'a>) -> EvalDetail<'a> {
        EvalDetail {
            value: Some(value),
            variation_index: Some(index),
            reason,
            big_segments_status: None,
        }
    }

    /// Copies the value and strings out so the result outlives the snapshot.
    pub fn into_owned(self) -> OwnedEvalDetail {
        OwnedEvalDetail {
            value: self.value.cloned(),
            variation_index: self.variation_index,
            reason: self.reason.into_owned(),
            big_segments_status: self.big_segments_status,
        }
    }

    /// Whether the reason is an error.
    pub fn is_error(&self) -> bool {
        matches!(self.reason, Reason::Error { .. })
    }

    /// The reason with the big-segment status inside it, ready to serialize on its own.
    pub fn reason_json(&self) -> ReasonJson<'_, 'a> {
        ReasonJson {
            reason: &self.reason,
            big_segments_status: self.big_segments_status,
        }
    }
}

impl Serialize for EvalDetail<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_detail(s, self.value, self.variation_index, self.reason_json())
    }
}

/// Writes `{"value", "variationIndex", "reason"}`. The big-segment status goes inside the reason,
/// where LaunchDarkly's SDKs put it (`"reason":{"kind":"FALLTHROUGH","bigSegmentsStatus":...}`).
fn write_detail<S: Serializer>(
    s: S,
    value: Option<&Value>,
    variation_index: Option<usize>,
    reason: ReasonJson<'_, '_>,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(None)?;
    map.serialize_entry("value", &value)?;
    if let Some(i) = variation_index {
        map.serialize_entry("variationIndex", &i)?;
    }
    map.serialize_entry("reason", &reason)?;
    map.end()
}

/// A reason as LaunchDarkly's SDKs write it: the [`Reason`]'s own fields plus
/// `"bigSegmentsStatus"` when the evaluation consulted a big segment.
///
/// [`Reason`] alone cannot carry the status (it is a property of the whole evaluation, kept on
/// [`EvalDetail`]); anything that writes a reason on its own, apart from the detail, should write
/// this view so the status is not lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReasonJson<'r, 'a> {
    /// The reason.
    pub reason: &'r Reason<'a>,
    /// The big-segment status written inside it, if any.
    pub big_segments_status: Option<BigSegmentsStatus>,
}

impl Serialize for ReasonJson<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_reason(s, self.reason, self.big_segments_status)
    }
}

/// An [`EvalDetail`] that owns its data.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedEvalDetail {
    /// The variation value; `None` means "serve the caller's default".
    pub value: Option<Value>,
    /// The variation index, when a variation was chosen.
    pub variation_index: Option<usize>,
    /// Why this result.
    pub reason: Reason<'static>,
    /// The state of the big-segment store, when a big segment was consulted.
    pub big_segments_status: Option<BigSegmentsStatus>,
}

impl OwnedEvalDetail {
    /// Borrows this as an [`EvalDetail`].
    pub fn as_detail(&self) -> EvalDetail<'_> {
        EvalDetail {
            value: self.value.as_ref(),
            variation_index: self.variation_index,
            reason: self.reason.clone(),
            big_segments_status: self.big_segments_status,
        }
    }
}

impl OwnedEvalDetail {
    /// The reason with the big-segment status inside it, ready to serialize on its own.
    pub fn reason_json(&self) -> ReasonJson<'_, 'static> {
        ReasonJson {
            reason: &self.reason,
            big_segments_status: self.big_segments_status,
        }
    }
}

impl Serialize for OwnedEvalDetail {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_detail(
            s,
            self.value.as_ref(),
            self.variation_index,
            self.reason_json(),
        )
    }
}

impl<'de> Deserialize<'de> for OwnedEvalDetail {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            #[serde(default)]
            value: Option<Value>,
            #[serde(default)]
            variation_index: Option<usize>,
            reason: RawReason,
        }
        let raw = Raw::deserialize(d)?;
        let big_segments_status = raw.reason.big_segments_status;
        Ok(OwnedEvalDetail {
            value: raw.value.filter(|v| !v.is_null()),
            variation_index: raw.variation_index,
            reason: raw.reason.into_reason().map_err(serde::de::Error::custom)?,
            big_segments_status,
        })
    }
}

/// Why an evaluation gave its result (LaunchDarkly's reason kinds, plus flagd's `killed` and
/// `override` markers on `OFF` and `TARGET_MATCH`, which say that the operations layer decided
/// and leave the kind as LaunchDarkly's SDKs give it).
///
/// Deliberately not `#[non_exhaustive]`: the kinds are the closed set LaunchDarkly's SDKs read,
/// and code that writes or maps reasons matches them exhaustively, so that a new kind cannot be
/// written or mapped wrongly without a compile error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason<'a> {
    /// The flag is off (with `killed`: because it is in the kill set, which serves it off).
    Off {
        /// The flag was killed by the operations layer.
        killed: bool,
    },
    /// No target or rule matched.
    Fallthrough {
        /// The fallthrough is an experiment and this context is in a tracked bucket.
        in_experiment: bool,
    },
    /// The context is individually targeted (with `is_override`: by an override, which is
    /// served as a target).
    TargetMatch {
        /// The variation came from a per-entity override.
        is_override: bool,
    },
    /// A rule matched.
    RuleMatch {
        /// The rule's index.
        rule_index: usize,
        /// The rule's id.
        rule_id: Cow<'a, str>,
        /// The rule's rollout is an experiment and this context is in a tracked bucket.
        in_experiment: bool,
    },
    /// A prerequisite was off, missing, or gave another variation.
    PrerequisiteFailed {
        /// The key of the failed prerequisite.
        prerequisite_key: Cow<'a, str>,
    },
    /// Evaluation failed; the caller's default is served.
    Error {
        /// What failed.
        error_kind: ErrorKind,
    },
}

impl Reason<'_> {
    /// The plain `OFF` reason.
    pub const OFF: Reason<'static> = Reason::Off { killed: false };
    /// The plain `FALLTHROUGH` reason.
    pub const FALLTHROUGH: Reason<'static> = Reason::Fallthrough {
        in_experiment: false,
    };
    /// The plain `TARGET_MATCH` reason.
    pub const TARGET_MATCH: Reason<'static> = Reason::TargetMatch { is_override: false };

    /// The reason kind as LaunchDarkly names it (`OFF`, `RULE_MATCH`, ...).
    pub fn kind_str(&self) -> &'static str {
        match self {
            Reason::Off { .. } => "OFF",
            Reason::Fallthrough { .. } => "FALLTHROUGH",
            Reason::TargetMatch { .. } => "TARGET_MATCH",
            Reason::RuleMatch { .. } => "RULE_MATCH",
            Reason::PrerequisiteFailed { .. } => "PREREQUISITE_FAILED",
            Reason::Error { .. } => "ERROR",
        }
    }

    /// Whether the flag was served off because it is in the kill set.
    pub fn is_killed(&self) -> bool {
        matches!(self, Reason::Off { killed: true })
    }

    /// Whether the variation came from a per-entity override.
    pub fn is_override(&self) -> bool {
        matches!(self, Reason::TargetMatch { is_override: true })
    }

    /// Whether the context was put in a tracked experiment bucket.
    pub fn in_experiment(&self) -> bool {
        matches!(
            self,
            Reason::Fallthrough {
                in_experiment: true
            } | Reason::RuleMatch {
                in_experiment: true,
                ..
            }
        )
    }

    /// The error kind of an `ERROR` reason.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Reason::Error { error_kind } => Some(*error_kind),
            _ => None,
        }
    }

    /// Copies borrowed strings so the reason outlives the snapshot.
    pub fn into_owned(self) -> Reason<'static> {
        match self {
            Reason::Off { killed } => Reason::Off { killed },
            Reason::Fallthrough { in_experiment } => Reason::Fallthrough { in_experiment },
            Reason::TargetMatch { is_override } => Reason::TargetMatch { is_override },
            Reason::RuleMatch {
                rule_index,
                rule_id,
                in_experiment,
            } => Reason::RuleMatch {
                rule_index,
                rule_id: Cow::Owned(rule_id.into_owned()),
                in_experiment,
            },
            Reason::PrerequisiteFailed { prerequisite_key } => Reason::PrerequisiteFailed {
                prerequisite_key: Cow::Owned(prerequisite_key.into_owned()),
            },
            Reason::Error { error_kind } => Reason::Error { error_kind },
        }
    }
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::RuleMatch {
                rule_index,
                rule_id,
                ..
            } => write!(f, "RULE_MATCH({rule_index},{rule_id})"),
            Reason::PrerequisiteFailed { prerequisite_key } => {
                write!(f, "PREREQUISITE_FAILED({prerequisite_key})")
            }
            Reason::Error { error_kind } => write!(f, "ERROR({})", error_kind.as_str()),
            other => f.write_str(other.kind_str()),
        }
    }
}

impl Serialize for Reason<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_reason(s, self, None)
    }
}

fn write_reason<S: Serializer>(
    s: S,
    reason: &Reason<'_>,
    big_segments_status: Option<BigSegmentsStatus>,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(None)?;
    map.serialize_entry("kind", reason.kind_str())?;
    match reason {
        Reason::Off { killed } => {
            if *killed {
                map.serialize_entry("killed", &true)?;
            }
        }
        Reason::Fallthrough { in_experiment } => {
            if *in_experiment {
                map.serialize_entry("inExperiment", &true)?;
            }
        }
        Reason::TargetMatch { is_override } => {
            if *is_override {
                map.serialize_entry("override", &true)?;
            }
        }
        Reason::RuleMatch {
            rule_index,
            rule_id,
            in_experiment,
        } => {
            map.serialize_entry("ruleIndex", rule_index)?;
            map.serialize_entry("ruleId", rule_id)?;
            if *in_experiment {
                map.serialize_entry("inExperiment", &true)?;
            }
        }
        Reason::PrerequisiteFailed { prerequisite_key } => {
            map.serialize_entry("prerequisiteKey", prerequisite_key)?;
        }
        Reason::Error { error_kind } => {
            map.serialize_entry("errorKind", error_kind)?;
        }
    }
    if let Some(status) = big_segments_status {
        map.serialize_entry("bigSegmentsStatus", &status)?;
    }
    map.end()
}

impl<'de> Deserialize<'de> for Reason<'static> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawReason::deserialize(d)?
            .into_reason()
            .map_err(serde::de::Error::custom)
    }
}

/// A reason object as read from JSON, before its kind is checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReason {
    kind: String,
    #[serde(default)]
    killed: bool,
    #[serde(default, rename = "override")]
    is_override: bool,
    #[serde(default)]
    in_experiment: bool,
    #[serde(default)]
    rule_index: usize,
    #[serde(default)]
    rule_id: String,
    #[serde(default)]
    prerequisite_key: String,
    #[serde(default)]
    error_kind: Option<ErrorKind>,
    #[serde(default)]
    big_segments_status: Option<BigSegmentsStatus>,
}

impl RawReason {
    fn into_reason(self) -> Result<Reason<'static>, String> {
        Ok(match self.kind.as_str() {
            "OFF" => Reason::Off {
                killed: self.killed,
            },
            "FALLTHROUGH" => Reason::Fallthrough {
                in_experiment: self.in_experiment,
            },
            "TARGET_MATCH" => Reason::TargetMatch {
                is_override: self.is_override,
            },
            "RULE_MATCH" => Reason::RuleMatch {
                rule_index: self.rule_index,
                rule_id: Cow::Owned(self.rule_id),
                in_experiment: self.in_experiment,
            },
            "PREREQUISITE_FAILED" => Reason::PrerequisiteFailed {
                prerequisite_key: Cow::Owned(self.prerequisite_key),
            },
            "ERROR" => Reason::Error {
                error_kind: self.error_kind.unwrap_or(ErrorKind::Exception),
            },
            other => return Err(format!("unknown reason kind {other:?}")),
        })
    }
}

/// The kind of an evaluation error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No flag data has been loaded yet.
    ClientNotReady,
    /// No flag with that key.
    FlagNotFound,
    /// The flag data is inconsistent (bad variation index, prerequisite or segment cycle, bad
    /// attribute reference).
    MalformedFlag,
    /// The context is missing or invalid.
    UserNotSpecified,
    /// The value has the wrong type for a typed variation call.
    WrongType,
    /// An unexpected failure.
    Exception,
}

impl ErrorKind {
    /// The name as it appears in JSON (`FLAG_NOT_FOUND`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ClientNotReady => "CLIENT_NOT_READY",
            ErrorKind::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorKind::MalformedFlag => "MALFORMED_FLAG",
            ErrorKind::UserNotSpecified => "USER_NOT_SPECIFIED",
            ErrorKind::WrongType => "WRONG_TYPE",
            ErrorKind::Exception => "EXCEPTION",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of the big-segment store during an evaluation that consulted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BigSegmentsStatus {
    /// The store answered and is up to date.
    Healthy,
    /// The store answered but has not been updated recently.
    Stale,
    /// The store could not be queried.
    StoreError,
    /// A big segment was referenced but no store is configured, or the segment has no
    /// generation, so the store could not be asked.
    NotConfigured,
}

impl BigSegmentsStatus {
    /// The status to report when one evaluation has seen both `self` and `other` (several
    /// context keys queried, or prerequisites that consulted big segments): the more severe,
    /// in LaunchDarkly's order `HEALTHY` < `STALE` < `STORE_ERROR` < `NOT_CONFIGURED`.
    /// `NOT_CONFIGURED` ranks highest because it means big segments cannot work at all, while a
    /// store error may pass.
    pub fn most_severe(self, other: BigSegmentsStatus) -> BigSegmentsStatus {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    fn severity(self) -> u8 {
        match self {
            BigSegmentsStatus::Healthy => 0,
            BigSegmentsStatus::Stale => 1,
            BigSegmentsStatus::StoreError => 2,
            BigSegmentsStatus::NotConfigured => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(reason: Reason<'_>, expected: Value) {
        let got = serde_json::to_value(&reason).unwrap();
        assert_eq!(got, expected);
        let back: Reason<'static> = serde_json::from_value(got).unwrap();
        assert_eq!(back, reason.into_owned());
    }

    #[test]
    fn reasons_serialize_as_launchdarkly_json() {
        check(Reason::OFF, json!({"kind": "OFF"}));
        check(
            Reason::Off { killed: true },
            json!({"kind": "OFF", "killed": true}),
        );
        check(Reason::FALLTHROUGH, json!({"kind": "FALLTHROUGH"}));
        check(
            Reason::Fallthrough {
                in_experiment: true,
            },
            json!({"kind": "FALLTHROUGH", "inExperiment": true}),
        );
        check(Reason::TARGET_MATCH, json!({"kind": "TARGET_MATCH"}));
        check(
            Reason::TargetMatch { is_override: true },
            json!({"kind": "TARGET_MATCH", "override": true}),
        );
        check(
            Reason::RuleMatch {
                rule_index: 2,
                rule_id: Cow::Borrowed("r"),
                in_experiment: false,
            },
            json!({"kind": "RULE_MATCH", "ruleIndex": 2, "ruleId": "r"}),
        );
        check(
            Reason::RuleMatch {
                rule_index: 0,
                rule_id: Cow::Borrowed(""),
                in_experiment: true,
            },
            json!({"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "", "inExperiment": true}),
        );
        check(
            Reason::PrerequisiteFailed {
                prerequisite_key: Cow::Borrowed("p"),
            },
            json!({"kind": "PREREQUISITE_FAILED", "prerequisiteKey": "p"}),
        );
        check(
            Reason::Error {
                error_kind: ErrorKind::MalformedFlag,
            },
            json!({"kind": "ERROR", "errorKind": "MALFORMED_FLAG"}),
        );
        check(
            Reason::Error {
                error_kind: ErrorKind::UserNotSpecified,
            },
            json!({"kind": "ERROR", "errorKind": "USER_NOT_SPECIFIED"}),
        );
    }

    #[test]
    fn details_serialize() {
        let v = json!(true);
        let d = EvalDetail::variation(&v, 1, Reason::FALLTHROUGH);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"value": true, "variationIndex": 1, "reason": {"kind": "FALLTHROUGH"}})
        );
        let e = EvalDetail::error(ErrorKind::FlagNotFound);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            json!({"value": null, "reason": {"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"}})
        );
        let owned: OwnedEvalDetail = serde_json::from_value(json).unwrap();
        assert_eq!(owned, e.into_owned());
    }

    #[test]
    fn big_segments_status_is_written_inside_the_reason() {
        // LaunchDarkly's SDKs report the status as a property of the reason:
        // {"kind":"FALLTHROUGH","bigSegmentsStatus":"NOT_CONFIGURED"}.
        let v = json!("no");
        let mut d = EvalDetail::variation(&v, 0, Reason::FALLTHROUGH);
        d.big_segments_status = Some(BigSegmentsStatus::NotConfigured);
        let expected = json!({"value": "no", "variationIndex": 0,
            "reason": {"kind": "FALLTHROUGH", "bigSegmentsStatus": "NOT_CONFIGURED"}});
        assert_eq!(serde_json::to_value(&d).unwrap(), expected);
        assert_eq!(
            serde_json::to_value(d.reason_json()).unwrap(),
            expected["reason"]
        );
        let owned: OwnedEvalDetail = serde_json::from_value(expected.clone()).unwrap();
        assert_eq!(owned, d.clone().into_owned());
        assert_eq!(serde_json::to_value(&owned).unwrap(), expected);

        let e = EvalDetail {
            big_segments_status: Some(BigSegmentsStatus::StoreError),
            ..EvalDetail::error(ErrorKind::MalformedFlag)
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"value": null, "reason": {"kind": "ERROR", "errorKind": "MALFORMED_FLAG",
                "bigSegmentsStatus": "STORE_ERROR"}})
        );
        // A reason on its own has nowhere to keep the status; the plain reason omits it.
        assert_eq!(
            serde_json::to_value(&d.reason).unwrap(),
            json!({"kind": "FALLTHROUGH"})
        );
    }

    #[test]
    fn the_most_severe_big_segments_status_wins() {
        use BigSegmentsStatus::{Healthy, NotConfigured, Stale, StoreError};
        let order = [Healthy, Stale, StoreError, NotConfigured];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                let want = order[i.max(j)];
                assert_eq!(a.most_severe(*b), want, "{a:?} with {b:?}");
            }
        }
    }
}
