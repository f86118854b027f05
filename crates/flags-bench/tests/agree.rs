//! The benchmark compares like with like only if both engines reach the same answer the same
//! way. For every fixture this checks that flagd and LaunchDarkly's evaluator return the same
//! value, variation index and reason (kind and details, as LaunchDarkly JSON), and that the reason
//! is the one the fixture was written to exercise; and that both SDKs of the SDK benchmark give
//! that value through their typed variation calls.
#![allow(clippy::unwrap_used)]

mod sdks;

use flags_bench::{FlagdSide, PeerSide, fixtures, peer_reason_kind, peer_value_json};
use sdks::{OurSdk, TheirSdk};

#[test]
fn both_engines_agree_on_every_fixture() {
    let all = fixtures();
    assert_eq!(all.len(), 6, "the benchmark reports six cases");
    for fixture in &all {
        let flagd = FlagdSide::new(fixture).unwrap();
        let peer = PeerSide::new(fixture).unwrap();
        let ours = flagd.evaluate();
        let theirs = peer.evaluate();
        let name = fixture.name;

        assert_eq!(
            ours.value.cloned(),
            theirs.value.map(peer_value_json),
            "{name}: value"
        );
        assert!(ours.value.is_some(), "{name}: a value is served");
        assert_eq!(
            ours.variation_index,
            theirs.variation_index.and_then(|i| usize::try_from(i).ok()),
            "{name}: variation index"
        );
        assert_eq!(
            ours.reason.kind_str(),
            peer_reason_kind(&theirs.reason),
            "{name}: reason kind"
        );
        assert_eq!(
            ours.reason.kind_str(),
            fixture.expected_reason,
            "{name}: the fixture exercises the path it was written for"
        );
        assert_eq!(
            serde_json::to_value(&ours.reason).unwrap(),
            serde_json::to_value(&theirs.reason).unwrap(),
            "{name}: reason details"
        );
    }
}

#[test]
fn both_sdks_give_the_engines_value_on_every_fixture() {
    // The SDK benchmark times each SDK's typed variation call; a call that fell back to its
    // default (the flag missing, the wrong type, the SDK not ready) would time something else.
    for fixture in &fixtures() {
        let ours = OurSdk::new(fixture).unwrap();
        let theirs = TheirSdk::new(fixture).unwrap();
        assert_eq!(
            &ours.answer(),
            ours.expected(),
            "{}: flags-sdk",
            fixture.name
        );
        assert_eq!(
            &theirs.answer(),
            theirs.expected(),
            "{}: LaunchDarkly SDK",
            fixture.name
        );
    }
}

#[test]
fn rules_fixture_matches_the_last_rule() {
    let fixture = flags_bench::rules_last_match();
    let detail =
        serde_json::to_value(&FlagdSide::new(&fixture).unwrap().evaluate().reason).unwrap();
    assert_eq!(detail["ruleIndex"], 9);
    assert_eq!(detail["ruleId"], "rule-9");
}

#[test]
fn target_fixture_puts_the_context_near_the_end_of_the_list() {
    let fixture = flags_bench::target_list_hit();
    let values = fixture.data["flags"]["targeted"]["targets"][0]["values"]
        .as_array()
        .unwrap();
    assert_eq!(values.len(), 100);
    let position = values
        .iter()
        .position(|v| v == flags_bench::CONTEXT_KEY)
        .unwrap();
    assert!(position >= 90, "context key at {position}");
}

#[test]
fn segment_fixture_matches_by_rule_not_by_inclusion() {
    let fixture = flags_bench::segment_rule_match();
    let included = fixture.data["segments"]["big-customers"]["included"]
        .as_array()
        .unwrap();
    assert_eq!(included.len(), 1000);
    assert!(!included.iter().any(|v| v == flags_bench::CONTEXT_KEY));
    // The same segment without its rule must not match, so the rule is what the case measures.
    let mut without_rule = fixture.clone();
    without_rule.data["segments"]["big-customers"]["rules"] = serde_json::json!([]);
    let peer = PeerSide::new(&without_rule).unwrap();
    assert_eq!(peer_reason_kind(&peer.evaluate().reason), "FALLTHROUGH");
    let flagd = FlagdSide::new(&without_rule).unwrap();
    assert_eq!(flagd.evaluate().reason.kind_str(), "FALLTHROUGH");
}

#[test]
fn peer_alone_reaches_the_expected_reasons() {
    // Pins the fixtures against the reference engine by itself, so a fixture mistake is told
    // apart from a flagd bug when the agreement test fails.
    for fixture in fixtures() {
        let peer = PeerSide::new(&fixture).unwrap();
        let detail = peer.evaluate();
        assert_eq!(
            peer_reason_kind(&detail.reason),
            fixture.expected_reason,
            "{}: {:?}",
            fixture.name,
            detail
        );
        assert!(detail.value.is_some(), "{}", fixture.name);
    }
}
