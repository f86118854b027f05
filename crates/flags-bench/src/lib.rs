//! `flags-bench`: benchmark fixtures shared by flagd's engine and its peer.
//!
//! The evaluation benchmarks compare `flags-eval` with LaunchDarkly's own Rust evaluator
//! (`launchdarkly-server-sdk-evaluation`). A comparison only means something when both sides do
//! the same work, so the flag and segment JSON and the context JSON of every case are written
//! once, here, and each side parses them into its own model at setup. The benches
//! (`benches/eval.rs`, `benches/allocs.rs`) and the tests (`tests/agree.rs`, `tests/allocs.rs`,
//! and `tests/served.rs`, which checks that flags served with kills and overrides mean the same
//! to both engines) all build their inputs through [`FlagdSide::new`] and [`PeerSide::new`]. The allocation bench
//! and test count with flags-test-support's counting allocator.
//!
//! The SDK benchmark (`benches/sdk.rs`) compares flags-sdk with LaunchDarkly's Rust server SDK on
//! the same fixtures; both SDKs are dev-dependencies, set up in `tests/sdks/`.
//!
//! This crate is not part of the product: nothing depends on it, it is never published, and it is
//! the only crate in the workspace that depends on the LaunchDarkly evaluator or SDK.

use std::collections::HashMap;

use flags_core::{Context, EvalDetail, FlagData};
use flags_eval::{CompiledData, Evaluator};
use launchdarkly_server_sdk_evaluation as ld;
use serde_json::{Value, json};

/// One benchmark case: a data set, the flag to evaluate in it, the context, and what the
/// evaluation is expected to produce (so a fixture that silently stopped exercising its path is
/// caught by `tests/agree.rs`).
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Criterion group name; short and stable so results stay comparable across runs.
    pub name: &'static str,
    /// The flag evaluated by the timed loop.
    pub flag_key: &'static str,
    /// `{"flags":{...},"segments":{...}}` in LaunchDarkly's server-side JSON model.
    pub data: Value,
    /// A LaunchDarkly context in JSON.
    pub context: Value,
    /// The reason kind both engines must report, e.g. `"RULE_MATCH"`.
    pub expected_reason: &'static str,
}

/// The context key every fixture evaluates for. It sits near the end of the target list in
/// [`target_list_hit`] so a linear scan would have to walk almost all of it.
pub const CONTEXT_KEY: &str = "user-0097";

/// The six cases of the evaluation benchmark, in report order.
pub fn fixtures() -> Vec<Fixture> {
    vec![
        plain_bool(),
        target_list_hit(),
        rules_last_match(),
        percentage_rollout(),
        segment_rule_match(),
        two_prerequisites(),
    ]
}

/// The context shared by all cases: a single `user` context with a few custom attributes that
/// the rules and segment rules below test.
pub fn context_json() -> Value {
    json!({
        "kind": "user",
        "key": CONTEXT_KEY,
        "name": "Alice Example",
        "email": "alice@example.com",
        "country": "gb",
        "plan": "enterprise",
        "groups": ["beta", "staff"],
    })
}

/// Case 1: an on boolean flag with no targets or rules, serving its fallthrough variation.
pub fn plain_bool() -> Fixture {
    Fixture {
        name: "plain_bool",
        flag_key: "plain-bool",
        data: data(vec![flag("plain-bool", json!({}))], vec![]),
        context: context_json(),
        expected_reason: "FALLTHROUGH",
    }
}

/// Case 2: a flag whose target list holds 100 keys, the context's key being the 98th.
pub fn target_list_hit() -> Fixture {
    let keys: Vec<String> = (0..100).map(|i| format!("user-{i:04}")).collect();
    Fixture {
        name: "target_list_100",
        flag_key: "targeted",
        data: data(
            vec![flag(
                "targeted",
                json!({
                    "targets": [{ "values": keys, "variation": 0 }],
                    "fallthrough": { "variation": 1 },
                }),
            )],
            vec![],
        ),
        context: context_json(),
        expected_reason: "TARGET_MATCH",
    }
}

/// Case 3: ten rules of two clauses each. In every rule the first clause (`country in [...]`)
/// matches, so both clauses are tested; only the last rule's `email startsWith` clause matches.
pub fn rules_last_match() -> Fixture {
    let rules: Vec<Value> = (0..10)
        .map(|i| {
            let prefix = if i == 9 {
                "alice@".to_owned()
            } else {
                format!("rule{i}-")
            };
            json!({
                "id": format!("rule-{i}"),
                "clauses": [
                    {
                        "contextKind": "user",
                        "attribute": "country",
                        "op": "in",
                        "values": ["fr", "de", "gb", "nl"],
                        "negate": false,
                    },
                    {
                        "contextKind": "user",
                        "attribute": "email",
                        "op": "startsWith",
                        "values": [prefix],
                        "negate": false,
                    },
                ],
                "variation": 0,
                "trackEvents": false,
            })
        })
        .collect();
    Fixture {
        name: "rules_10x2_last",
        flag_key: "ruled",
        data: data(
            vec![flag(
                "ruled",
                json!({ "rules": rules, "fallthrough": { "variation": 1 } }),
            )],
            vec![],
        ),
        context: context_json(),
        expected_reason: "RULE_MATCH",
    }
}

/// Case 4: a three-way percentage rollout in the fallthrough, bucketed by key (SHA-1 per
/// evaluation on both sides).
pub fn percentage_rollout() -> Fixture {
    Fixture {
        name: "rollout_3way",
        flag_key: "rollout",
        data: data(
            vec![flag(
                "rollout",
                json!({
                    "variations": ["red", "green", "blue"],
                    "offVariation": 0,
                    "fallthrough": {
                        "rollout": {
                            "kind": "rollout",
                            "variations": [
                                { "variation": 0, "weight": 33333 },
                                { "variation": 1, "weight": 33333 },
                                { "variation": 2, "weight": 33334 },
                            ],
                        },
                    },
                }),
            )],
            vec![],
        ),
        context: context_json(),
        expected_reason: "FALLTHROUGH",
    }
}

/// Case 5: a flag rule with `segmentMatch` on a segment that includes 1000 keys (the context is
/// not one of them) and matches the context through its own rule (`plan in ["enterprise"]`).
pub fn segment_rule_match() -> Fixture {
    let included: Vec<String> = (0..1000).map(|i| format!("member-{i:04}")).collect();
    let segment = json!({
        "key": "big-customers",
        "version": 1,
        "included": included,
        "excluded": [],
        "includedContexts": [],
        "excludedContexts": [],
        "rules": [{
            "id": "seg-rule-0",
            "clauses": [{
                "contextKind": "user",
                "attribute": "plan",
                "op": "in",
                "values": ["enterprise"],
                "negate": false,
            }],
        }],
        "salt": "big-customers-salt",
        "deleted": false,
    });
    Fixture {
        name: "segment_1000_rule",
        flag_key: "segmented",
        data: data(
            vec![flag(
                "segmented",
                json!({
                    "rules": [{
                        "id": "in-big-customers",
                        "clauses": [{
                            "contextKind": "user",
                            "attribute": "key",
                            "op": "segmentMatch",
                            "values": ["big-customers"],
                            "negate": false,
                        }],
                        "variation": 0,
                        "trackEvents": false,
                    }],
                    "fallthrough": { "variation": 1 },
                }),
            )],
            vec![segment],
        ),
        context: context_json(),
        expected_reason: "RULE_MATCH",
    }
}

/// Case 6: a flag with two prerequisites, both on and serving the required variation.
pub fn two_prerequisites() -> Fixture {
    Fixture {
        name: "prerequisites_2",
        flag_key: "gated",
        data: data(
            vec![
                flag(
                    "gated",
                    json!({
                        "prerequisites": [
                            { "key": "prereq-a", "variation": 0 },
                            { "key": "prereq-b", "variation": 0 },
                        ],
                    }),
                ),
                flag("prereq-a", json!({})),
                flag("prereq-b", json!({})),
            ],
            vec![],
        ),
        context: context_json(),
        expected_reason: "FALLTHROUGH",
    }
}

/// Why a fixture could not be turned into one side's inputs. Either way the fixture is wrong
/// (or an engine rejects valid LaunchDarkly JSON), so the bench stops.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// flagd's loader rejected the flag data.
    #[error("flagd could not load fixture {fixture}: {source}")]
    FlagdLoad {
        fixture: &'static str,
        source: flags_core::LoadError,
    },
    /// flagd's compiler rejected the flag data.
    #[error("flagd could not compile fixture {fixture}: {source}")]
    FlagdCompile {
        fixture: &'static str,
        source: flags_eval::CompileError,
    },
    /// flagd rejected the context.
    #[error("flagd rejected the context of fixture {fixture}: {source}")]
    FlagdContext {
        fixture: &'static str,
        source: flags_core::ContextError,
    },
    /// The LaunchDarkly evaluator's model rejected a flag, segment or the context.
    #[error("the LaunchDarkly evaluator could not parse {what} of fixture {fixture}: {source}")]
    Peer {
        fixture: &'static str,
        what: String,
        source: serde_json::Error,
    },
    /// The fixture names a flag its data does not hold.
    #[error("fixture {fixture} has no flag {flag}")]
    MissingFlag {
        fixture: &'static str,
        flag: &'static str,
    },
}

/// flagd's inputs for one fixture, parsed and compiled once.
pub struct FlagdSide {
    pub data: CompiledData,
    pub context: Context,
    pub flag_key: &'static str,
}

impl FlagdSide {
    pub fn new(fixture: &Fixture) -> Result<Self, FixtureError> {
        let name = fixture.name;
        let flag_data = FlagData::from_json_value(fixture.data.clone()).map_err(|source| {
            FixtureError::FlagdLoad {
                fixture: name,
                source,
            }
        })?;
        let data =
            CompiledData::compile(flag_data).map_err(|source| FixtureError::FlagdCompile {
                fixture: name,
                source,
            })?;
        let context =
            Context::from_json(&fixture.context).map_err(|source| FixtureError::FlagdContext {
                fixture: name,
                source,
            })?;
        Ok(Self {
            data,
            context,
            flag_key: fixture.flag_key,
        })
    }

    /// The evaluator the benchmark times; building it costs nothing, it only borrows.
    pub fn evaluator(&self) -> Evaluator<'_> {
        Evaluator::new(&self.data)
    }

    /// One evaluation, for tests; the benches call the evaluator directly.
    pub fn evaluate(&self) -> EvalDetail<'_> {
        self.evaluator().evaluate(self.flag_key, &self.context)
    }
}

/// An in-memory [`ld::Store`] over hash maps, as an application embedding the LaunchDarkly
/// evaluator would write it. The trait hands out owned flags and segments, so every lookup
/// (prerequisites, segments) clones; that cost is part of the peer's public API.
#[derive(Debug, Default)]
pub struct PeerStore {
    flags: HashMap<String, ld::Flag>,
    segments: HashMap<String, ld::Segment>,
}

impl ld::Store for PeerStore {
    fn flag(&self, flag_key: &str) -> Option<ld::Flag> {
        self.flags.get(flag_key).cloned()
    }

    fn segment(&self, segment_key: &str) -> Option<ld::Segment> {
        self.segments.get(segment_key).cloned()
    }
}

/// The LaunchDarkly evaluator's inputs for one fixture, parsed once.
pub struct PeerSide {
    pub store: PeerStore,
    /// The flag under test, fetched from the store once at setup, so the timed loop is only
    /// `ld::evaluate` (the peer's top-level lookup is not timed, flagd's is).
    pub flag: ld::Flag,
    pub context: ld::Context,
}

impl PeerSide {
    pub fn new(fixture: &Fixture) -> Result<Self, FixtureError> {
        let name = fixture.name;
        let peer_err = |what: String| {
            move |source| FixtureError::Peer {
                fixture: name,
                what,
                source,
            }
        };
        let mut store = PeerStore::default();
        for (key, value) in items(&fixture.data, "flags") {
            let flag: ld::Flag =
                serde_json::from_value(value.clone()).map_err(peer_err(format!("flag {key}")))?;
            store.flags.insert(key.clone(), flag);
        }
        for (key, value) in items(&fixture.data, "segments") {
            let segment: ld::Segment = serde_json::from_value(value.clone())
                .map_err(peer_err(format!("segment {key}")))?;
            store.segments.insert(key.clone(), segment);
        }
        let context: ld::Context = serde_json::from_value(fixture.context.clone())
            .map_err(peer_err("the context".to_owned()))?;
        let flag = store
            .flags
            .get(fixture.flag_key)
            .cloned()
            .ok_or(FixtureError::MissingFlag {
                fixture: name,
                flag: fixture.flag_key,
            })?;
        Ok(Self {
            store,
            flag,
            context,
        })
    }

    /// One evaluation through the peer's public entry point.
    pub fn evaluate(&self) -> ld::Detail<&ld::FlagValue> {
        ld::evaluate(&self.store, &self.flag, &self.context, None)
    }
}

/// The reason kind of a peer result, spelled as LaunchDarkly's JSON spells it.
pub fn peer_reason_kind(reason: &ld::Reason) -> &'static str {
    match reason {
        ld::Reason::Off => "OFF",
        ld::Reason::TargetMatch => "TARGET_MATCH",
        ld::Reason::RuleMatch { .. } => "RULE_MATCH",
        ld::Reason::PrerequisiteFailed { .. } => "PREREQUISITE_FAILED",
        ld::Reason::Fallthrough { .. } => "FALLTHROUGH",
        ld::Reason::Error { .. } => "ERROR",
    }
}

/// A peer variation value as JSON, for comparing with flagd's [`Value`].
pub fn peer_value_json(value: &ld::FlagValue) -> Value {
    match value {
        ld::FlagValue::Bool(b) => Value::Bool(*b),
        ld::FlagValue::Str(s) => Value::String(s.clone()),
        ld::FlagValue::Number(n) => json!(n),
        ld::FlagValue::Json(v) => v.clone(),
    }
}

/// A complete flag in LaunchDarkly's JSON model: every field the peer's model requires is
/// present, so both parsers see the same document. `overrides` replaces top-level fields.
fn flag(key: &str, overrides: Value) -> Value {
    let mut flag = json!({
        "key": key,
        "version": 1,
        "on": true,
        "variations": [true, false],
        "offVariation": 1,
        "fallthrough": { "variation": 0 },
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
        "salt": format!("{key}-salt"),
        "trackEvents": false,
        "trackEventsFallthrough": false,
        "debugEventsUntilDate": null,
        "clientSideAvailability": { "usingEnvironmentId": false, "usingMobileKey": false },
        "deleted": false,
    });
    if let (Some(base), Value::Object(extra)) = (flag.as_object_mut(), overrides) {
        base.extend(extra);
    }
    flag
}

fn data(flags: Vec<Value>, segments: Vec<Value>) -> Value {
    let by_key = |items: Vec<Value>| -> serde_json::Map<String, Value> {
        items
            .into_iter()
            .map(|item| {
                let key = item["key"].as_str().unwrap_or_default().to_owned();
                (key, item)
            })
            .collect()
    };
    json!({ "flags": by_key(flags), "segments": by_key(segments) })
}

fn items<'a>(data: &'a Value, section: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    data.get(section)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}
