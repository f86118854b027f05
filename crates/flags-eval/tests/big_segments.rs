//! Big (unbounded) segments and the `bigSegmentsStatus` they put in the reason, case by case.
//!
//! Every expected result below is what LaunchDarkly's official SDKs answer for the same flags,
//! segments, context and store contents (checked against the Python SDK 9.18 and the Node SDK
//! 9.13). Where those two disagree the case says so, and the answer follows LaunchDarkly's Go
//! evaluator, which sides with one of them each time.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Mutex;

use flags_core::{
    BigSegmentMembership, BigSegmentStore, BigSegmentStoreError, BigSegmentStoreMetadata, Context,
    FlagData, Value,
};
use flags_eval::{CompiledData, Evaluator, big_segment_hash};
use serde_json::json;

/// How the in-memory store answers metadata queries.
#[derive(Clone, Copy)]
enum Meta {
    /// Brought up to date just now.
    Fresh,
    /// Last brought up to date this many milliseconds ago.
    Age(u64),
    /// Never brought up to date.
    Never,
    /// The metadata query fails.
    Fails,
}

/// A big-segment store held in memory, keyed by context hash as a real store is, that records
/// every membership query.
struct MemoryStore {
    memberships: HashMap<String, BigSegmentMembership>,
    failing: Vec<String>,
    meta: Meta,
    queries: Mutex<Vec<String>>,
}

impl MemoryStore {
    fn new(meta: Meta) -> MemoryStore {
        MemoryStore {
            memberships: HashMap::new(),
            failing: Vec::new(),
            meta,
            queries: Mutex::new(Vec::new()),
        }
    }

    /// Lists `context_key` as included in and excluded from the given segment references.
    fn with(mut self, context_key: &str, included: &[&str], excluded: &[&str]) -> MemoryStore {
        let set = |refs: &[&str]| refs.iter().map(|r| (*r).to_owned()).collect();
        self.memberships.insert(
            big_segment_hash(context_key),
            BigSegmentMembership {
                included: set(included),
                excluded: set(excluded),
            },
        );
        self
    }

    /// Membership queries for `context_key` fail.
    fn failing(mut self, context_key: &str) -> MemoryStore {
        self.failing.push(big_segment_hash(context_key));
        self
    }

    fn query_count(&self) -> usize {
        self.queries.lock().unwrap().len()
    }
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

impl BigSegmentStore for MemoryStore {
    fn membership(
        &self,
        context_hash: &str,
    ) -> Result<Option<BigSegmentMembership>, BigSegmentStoreError> {
        self.queries.lock().unwrap().push(context_hash.to_owned());
        if self.failing.iter().any(|h| h == context_hash) {
            return Err(BigSegmentStoreError {
                message: "deliberate membership failure".to_owned(),
            });
        }
        Ok(self.memberships.get(context_hash).cloned())
    }

    fn metadata(&self) -> Result<BigSegmentStoreMetadata, BigSegmentStoreError> {
        let last_up_to_date = match self.meta {
            Meta::Fresh => Some(now_ms()),
            Meta::Age(ms) => Some(now_ms() - ms),
            Meta::Never => None,
            Meta::Fails => {
                return Err(BigSegmentStoreError {
                    message: "deliberate metadata failure".to_owned(),
                });
            }
        };
        Ok(BigSegmentStoreMetadata { last_up_to_date })
    }
}

/// A rule serving "yes" when the context is in any of `segments`.
fn in_segments(id: &str, segments: &[&str]) -> Value {
    json!({"id": id, "variation": 1, "clauses": [{"attribute": "", "op": "segmentMatch", "values": segments}]})
}

fn flag(rules: Vec<Value>, prerequisites: Value) -> Value {
    let fallthrough = if rules.is_empty() { 1 } else { 0 };
    json!({"on": true, "salt": "s", "variations": ["no", "yes"], "offVariation": 0,
        "fallthrough": {"variation": fallthrough}, "rules": rules, "prerequisites": prerequisites})
}

fn data() -> CompiledData {
    let data = json!({
        "flags": {
            "f-big": flag(vec![in_segments("r0", &["bigseg"])], json!([])),
            "f-bigrule": flag(vec![in_segments("r0", &["bigrule"])], json!([])),
            "f-nogen": flag(vec![in_segments("r0", &["nogen"])], json!([])),
            "f-org": flag(vec![in_segments("r0", &["orgbig"])], json!([])),
            "f-orgnogen": flag(vec![in_segments("r0", &["orgnogen"])], json!([])),
            "f-gen0": flag(vec![in_segments("r0", &["gen0"])], json!([])),
            "f-two": flag(vec![in_segments("r0", &["bigseg"]), in_segments("r1", &["bigrule"])], json!([])),
            "f-multi": flag(vec![in_segments("r0", &["bigseg"]), in_segments("r1", &["orgbig"])], json!([])),
            "f-plain": flag(vec![in_segments("r0", &["plain"])], json!([])),
            "f-prereq": flag(vec![], json!([{"key": "f-nogen", "variation": 0}])),
            "f-prereq-big": flag(vec![in_segments("r0", &["bigseg"])], json!([{"key": "f-nogen", "variation": 0}])),
            "f-big-off": {"on": false, "salt": "s", "variations": ["no", "yes"], "offVariation": 0,
                "fallthrough": {"variation": 0}, "rules": [in_segments("r0", &["bigseg"])]},
            "f-prereq-off": flag(vec![], json!([{"key": "f-big-off", "variation": 0}])),
            "f-bad-attr": flag(vec![in_segments("r0", &["bigseg"]),
                json!({"id": "r1", "variation": 1, "clauses": [{"contextKind": "user", "attribute": "//", "op": "in", "values": ["x"]}]})],
                json!([])),
            "f-bad-variation": {"on": true, "variations": ["no", "yes"], "fallthrough": {"variation": 7},
                "rules": [in_segments("r0", &["bigseg"])]}
        },
        "segments": {
            // The plain `included` list of a big segment is ignored.
            "bigseg": {"unbounded": true, "generation": 2, "included": ["u1"]},
            "bigrule": {"unbounded": true, "generation": 3,
                "rules": [{"clauses": [{"attribute": "key", "op": "in", "values": ["u1", "u2"]}]}]},
            "nogen": {"unbounded": true,
                "rules": [{"clauses": [{"attribute": "key", "op": "in", "values": ["u1"]}]}]},
            "orgbig": {"unbounded": true, "unboundedContextKind": "org", "generation": 1},
            "orgnogen": {"unbounded": true, "unboundedContextKind": "org"},
            "gen0": {"unbounded": true, "generation": 0},
            "plain": {"included": ["u1"]}
        }
    });
    CompiledData::compile(FlagData::from_json_value(data).unwrap()).unwrap()
}

fn u1() -> Value {
    json!({"kind": "user", "key": "u1"})
}

/// Evaluates `flag` for `context` and compares the whole result as JSON, then the number of
/// membership queries the store saw.
fn check(store: Option<&MemoryStore>, flag: &str, context: Value, expected: Value, queries: usize) {
    let data = data();
    let mut ev = Evaluator::new(&data);
    if let Some(store) = store {
        ev = ev.with_big_segments(store);
    }
    let ctx = Context::from_json(&context).unwrap();
    let got = serde_json::to_value(ev.evaluate(flag, &ctx)).unwrap();
    assert_eq!(got, expected, "{flag} for {context}");
    assert_eq!(
        store.map_or(0, MemoryStore::query_count),
        queries,
        "membership queries for {flag}"
    );
}

fn fallthrough(status: Option<&str>) -> Value {
    let mut reason = json!({"kind": "FALLTHROUGH"});
    if let Some(s) = status {
        reason["bigSegmentsStatus"] = json!(s);
    }
    json!({"value": "no", "variationIndex": 0, "reason": reason})
}

fn rule_match(index: usize, status: Option<&str>) -> Value {
    let mut reason =
        json!({"kind": "RULE_MATCH", "ruleIndex": index, "ruleId": format!("r{index}")});
    if let Some(s) = status {
        reason["bigSegmentsStatus"] = json!(s);
    }
    json!({"value": "yes", "variationIndex": 1, "reason": reason})
}

#[test]
fn without_a_store_the_status_is_not_configured() {
    // The reported case: the included list is ignored, nothing matches, and the reason says
    // why big segments could not work.
    check(
        None,
        "f-big",
        u1(),
        json!({"value": "no", "variationIndex": 0,
            "reason": {"kind": "FALLTHROUGH", "bigSegmentsStatus": "NOT_CONFIGURED"}}),
        0,
    );
    // The segment's rules still decide.
    check(
        None,
        "f-bigrule",
        u1(),
        rule_match(0, Some("NOT_CONFIGURED")),
        0,
    );
}

#[test]
fn a_big_segment_without_a_generation_is_not_configured() {
    // Not matched even by its own rule, and the store is not asked.
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["nogen.g0"], &[]);
    check(
        Some(&store),
        "f-nogen",
        u1(),
        fallthrough(Some("NOT_CONFIGURED")),
        0,
    );
    // The generation is checked before the context kind (Python and Go; Node checks the kind
    // first and reports nothing).
    let store = MemoryStore::new(Meta::Fresh);
    check(
        Some(&store),
        "f-orgnogen",
        u1(),
        fallthrough(Some("NOT_CONFIGURED")),
        0,
    );
    // Generation 0 is a generation (Python and Go; Node treats 0 as missing).
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["gen0.g0"], &[]);
    check(
        Some(&store),
        "f-gen0",
        u1(),
        rule_match(0, Some("HEALTHY")),
        1,
    );
}

#[test]
fn a_healthy_store_decides_membership() {
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["bigseg.g2"], &[]);
    check(
        Some(&store),
        "f-big",
        u1(),
        rule_match(0, Some("HEALTHY")),
        1,
    );

    let store = MemoryStore::new(Meta::Fresh).with("u1", &[], &["bigseg.g2"]);
    check(Some(&store), "f-big", u1(), fallthrough(Some("HEALTHY")), 1);

    // An exclusion settles it before the segment's rules.
    let store = MemoryStore::new(Meta::Fresh).with("u1", &[], &["bigrule.g3"]);
    check(
        Some(&store),
        "f-bigrule",
        u1(),
        fallthrough(Some("HEALTHY")),
        1,
    );

    // A key the store does not know, or a membership that does not name the segment: the rules
    // decide.
    let store = MemoryStore::new(Meta::Fresh);
    check(
        Some(&store),
        "f-bigrule",
        u1(),
        rule_match(0, Some("HEALTHY")),
        1,
    );
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["other.g1"], &[]);
    check(
        Some(&store),
        "f-bigrule",
        u1(),
        rule_match(0, Some("HEALTHY")),
        1,
    );

    // A membership from another generation does not count.
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["bigseg.g1"], &[]);
    check(Some(&store), "f-big", u1(), fallthrough(Some("HEALTHY")), 1);

    // When a store lists a reference both ways, inclusion wins.
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["bigseg.g2"], &["bigseg.g2"]);
    check(
        Some(&store),
        "f-big",
        u1(),
        rule_match(0, Some("HEALTHY")),
        1,
    );
}

#[test]
fn a_store_not_updated_recently_is_stale() {
    for meta in [Meta::Age(200_000), Meta::Never] {
        let store = MemoryStore::new(meta).with("u1", &["bigseg.g2"], &[]);
        check(Some(&store), "f-big", u1(), rule_match(0, Some("STALE")), 1);
    }
    let store = MemoryStore::new(Meta::Age(60_000)).with("u1", &["bigseg.g2"], &[]);
    check(
        Some(&store),
        "f-big",
        u1(),
        rule_match(0, Some("HEALTHY")),
        1,
    );
}

#[test]
fn store_errors_are_reported() {
    // Unreadable metadata: the membership that was read still counts.
    let store = MemoryStore::new(Meta::Fails).with("u1", &["bigseg.g2"], &[]);
    check(
        Some(&store),
        "f-big",
        u1(),
        rule_match(0, Some("STORE_ERROR")),
        1,
    );

    // A failed membership query: no membership, so the rules decide.
    let store = MemoryStore::new(Meta::Fresh)
        .with("u1", &[], &["bigrule.g3"])
        .failing("u1");
    check(
        Some(&store),
        "f-bigrule",
        u1(),
        rule_match(0, Some("STORE_ERROR")),
        1,
    );
}

#[test]
fn the_store_is_asked_once_per_context_key() {
    // Two big segments in one evaluation: one query.
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["bigrule.g3"], &[]);
    check(
        Some(&store),
        "f-two",
        u1(),
        rule_match(1, Some("HEALTHY")),
        1,
    );

    // Kinds with different keys: one query each.
    let store = MemoryStore::new(Meta::Fresh).with("o1", &["orgbig.g1"], &[]);
    check(
        Some(&store),
        "f-multi",
        json!({"kind": "multi", "user": {"key": "u1"}, "org": {"key": "o1"}}),
        rule_match(1, Some("HEALTHY")),
        2,
    );

    // Kinds sharing a key: the query is by key alone, so once.
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["orgbig.g1"], &[]);
    check(
        Some(&store),
        "f-multi",
        json!({"kind": "multi", "user": {"key": "u1"}, "org": {"key": "u1"}}),
        rule_match(1, Some("HEALTHY")),
        1,
    );
}

#[test]
fn a_context_without_the_segments_kind_is_not_a_member() {
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["orgbig.g1"], &[]);
    check(Some(&store), "f-org", u1(), fallthrough(None), 0);
}

#[test]
fn no_big_segment_no_status() {
    let store = MemoryStore::new(Meta::Fresh);
    check(Some(&store), "f-plain", u1(), rule_match(0, None), 0);
    check(None, "f-plain", u1(), rule_match(0, None), 0);
}

#[test]
fn the_most_severe_status_of_the_evaluation_is_reported() {
    // One key's query fails, the other's succeeds: STORE_ERROR (Node and Go; Python reports the
    // last query's status, HEALTHY).
    let store = MemoryStore::new(Meta::Fresh)
        .with("o1", &["orgbig.g1"], &[])
        .failing("u1");
    check(
        Some(&store),
        "f-multi",
        json!({"kind": "multi", "user": {"key": "u1"}, "org": {"key": "o1"}}),
        rule_match(1, Some("STORE_ERROR")),
        2,
    );
}

#[test]
fn prerequisites_contribute_their_status() {
    // Only the prerequisite reaches a big segment; the status is still reported.
    let store = MemoryStore::new(Meta::Fresh);
    check(
        Some(&store),
        "f-prereq",
        u1(),
        json!({"value": "yes", "variationIndex": 1,
            "reason": {"kind": "FALLTHROUGH", "bigSegmentsStatus": "NOT_CONFIGURED"}}),
        0,
    );
    // The prerequisite's NOT_CONFIGURED outranks the flag's own HEALTHY (Node and Go; Python
    // reports the last status set, HEALTHY).
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["bigseg.g2"], &[]);
    check(
        Some(&store),
        "f-prereq-big",
        u1(),
        rule_match(0, Some("NOT_CONFIGURED")),
        1,
    );
}

#[test]
fn an_off_prerequisite_consults_nothing() {
    // An off flag (a killed one is served off) is not evaluated past `on`, so its big segment
    // is not asked about and adds no status.
    let data = data();
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["bigseg.g2"], &[]);
    let ev = Evaluator::new(&data).with_big_segments(&store);
    let ctx = Context::user("u1").unwrap();
    let got = serde_json::to_value(ev.evaluate("f-prereq-off", &ctx)).unwrap();
    assert_eq!(
        got,
        json!({"value": "no", "variationIndex": 0,
            "reason": {"kind": "PREREQUISITE_FAILED", "prerequisiteKey": "f-big-off"}})
    );
    assert_eq!(store.query_count(), 0);
}

#[test]
fn errors_keep_the_status() {
    // A malformed result still says how big segments fared before it (Node and Go; Python drops
    // the status when evaluation stops on an invalid attribute reference, and keeps it for a bad
    // variation index).
    let store = MemoryStore::new(Meta::Fresh);
    let malformed = json!({"value": null,
        "reason": {"kind": "ERROR", "errorKind": "MALFORMED_FLAG", "bigSegmentsStatus": "HEALTHY"}});
    check(Some(&store), "f-bad-attr", u1(), malformed.clone(), 1);
    let store = MemoryStore::new(Meta::Fresh);
    check(Some(&store), "f-bad-variation", u1(), malformed, 1);
}

#[test]
fn each_evaluation_asks_afresh() {
    // Caching across evaluations belongs to the store (or a cache in front of it); the engine
    // keeps answers only for the evaluation that fetched them.
    let data = data();
    let store = MemoryStore::new(Meta::Fresh).with("u1", &["bigseg.g2"], &[]);
    let ev = Evaluator::new(&data).with_big_segments(&store);
    let ctx = Context::user("u1").unwrap();
    for _ in 0..3 {
        assert_eq!(
            serde_json::to_value(ev.evaluate("f-big", &ctx)).unwrap(),
            rule_match(0, Some("HEALTHY"))
        );
    }
    assert_eq!(store.query_count(), 3);
}
