//! The Rust SDK (`flags-sdk`) against the real `flagd` binary, started by each test on a free
//! port: initialisation and a rejected key, every typed variation and its errors, the bootstrap
//! JSON, file edits reaching change listeners within the latency budget, exactly the dependants
//! of a change (or deletion) being notified, value listeners hearing only their context's
//! changes, riding out a flagd restart and a flagd gone silent, closing ending the stream and
//! every listener, a stalled listener not holding up the others, polling with ETags, and the
//! client's analytics events reaching flagd's `/bulk`.
//!
//! Flag files are replaced by rename, as editors do, so flagd reloads them after its short
//! debounce rather than waiting for an in-place write to settle.

#![allow(clippy::unwrap_used)]

mod common;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::FlagDir;
use flags_sdk::{
    Client, Context, DataSource, DataSourceErrorKind, DataSourceState, DataSourceStatus, Detail,
    ErrorKind, FlagChangeEvent, FlagValueChangeEvent, FlagsStateOptions, Listener, Reason,
    RecvError,
};
use flags_test_support::process::{FlagdProcess, flagd_command};
use flags_test_support::wait::{DEADLINE, eventually};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_flagd");

/// The key the tests' flagd requires.
const SDK_KEY: &str = "sdk-rust-test-key";

/// How soon a listener must hear of an edit of the flag file, measured from the rename.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Initialisation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialises_from_flagd_and_reports_valid() {
    let flagd = Flagd::start(&file(json!({"greeting": flag(json!(["hi", "hello"]), 1)})));
    let client = streaming_client(&flagd, SDK_KEY);
    assert!(client.wait_for_initialization(Duration::from_secs(5)).await);
    let status = client.data_source_status_provider().status();
    assert_eq!(status.state, DataSourceState::Valid);
    assert_eq!(status.last_error, None);
    assert_eq!(
        client.str_variation(&user("u"), "greeting", "default".to_owned()),
        "hello"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_sdk_key_turns_the_client_off_at_once() {
    let flagd = Flagd::start(&file(json!({"greeting": flag(json!(["hi"]), 0)})));
    let client = streaming_client(&flagd, "not-the-key");
    let started = Instant::now();
    assert!(!client.wait_for_initialization(DEADLINE).await);
    // Retrying cannot fix a wrong key, so there is nothing to wait for once flagd said 401.
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "waited {waited:?} for a data source that had given up"
    );
    let status = client.data_source_status_provider().status();
    assert_eq!(status.state, DataSourceState::Off);
    let error = status.last_error.unwrap();
    assert_eq!(
        (error.kind, error.status_code),
        (DataSourceErrorKind::ErrorResponse, Some(401))
    );
    assert_eq!(
        client.str_variation_detail(&user("u"), "greeting", "default".to_owned()),
        error_detail("default".to_owned(), ErrorKind::ClientNotReady)
    );
}

// ---------------------------------------------------------------------------------------------
// Variations

/// A flag of each type, reached through each reason.
fn variation_flags() -> String {
    file(json!({
        "bool": {
            "on": true, "version": 7, "variations": [false, true], "offVariation": 0,
            "targets": [{"values": ["alice"], "variation": 1}],
            "fallthrough": {"variation": 0},
            "clientSideAvailability": {"usingEnvironmentId": true, "usingMobileKey": false}
        },
        "string": {
            "on": true, "variations": ["red", "green", "blue"], "offVariation": 0,
            "rules": [{"id": "fr", "variation": 2,
                       "clauses": [{"attribute": "country", "op": "in", "values": ["FR"]}]}],
            "fallthrough": {"variation": 1}
        },
        "int": flag(json!([10, 20]), 1),
        "fraction": {"on": false, "variations": [0.5, 2.75], "offVariation": 1,
                     "fallthrough": {"variation": 0}},
        "json": flag(json!([{"theme": "dark", "sizes": [1, 2]}, {"theme": "light"}]), 0),
        "gated": {
            "on": true, "variations": ["closed", "open"], "offVariation": 0,
            "prerequisites": [{"key": "bool", "variation": 1}],
            "fallthrough": {"variation": 1}
        },
        "no-off-variation": {"on": false, "variations": ["x"], "fallthrough": {"variation": 0}}
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_typed_variation_gives_value_index_and_reason() {
    let flagd = Flagd::start(&variation_flags());
    let client = ready_client(&flagd).await;
    let alice = user("alice");
    let bob = Context::from_json(&json!({"kind": "user", "key": "bob", "country": "FR"})).unwrap();
    let c = &client;

    check(
        c,
        &alice,
        "bool",
        false,
        served(true, 1, Reason::TARGET_MATCH),
    );
    check(c, &bob, "bool", true, served(false, 0, Reason::FALLTHROUGH));
    check(
        c,
        &alice,
        "string",
        s("d"),
        served(s("green"), 1, Reason::FALLTHROUGH),
    );
    let fr = Reason::RuleMatch {
        rule_index: 0,
        rule_id: Cow::Borrowed("fr"),
        in_experiment: false,
    };
    check(c, &bob, "string", s("d"), served(s("blue"), 2, fr));
    check(c, &alice, "int", -1, served(20, 1, Reason::FALLTHROUGH));
    check(c, &alice, "int", -1.0, served(20.0, 1, Reason::FALLTHROUGH));
    check(c, &alice, "fraction", -1.0, served(2.75, 1, Reason::OFF));
    // A fraction asked for as an integer is truncated toward zero, as LaunchDarkly's SDKs do.
    check(c, &alice, "fraction", -1, served(2, 1, Reason::OFF));
    let dark = json!({"theme": "dark", "sizes": [1, 2]});
    check(
        c,
        &alice,
        "json",
        json!(null),
        served(dark, 0, Reason::FALLTHROUGH),
    );
    // Every value is JSON.
    check(
        c,
        &alice,
        "int",
        json!(0),
        served(json!(20), 1, Reason::FALLTHROUGH),
    );
    check(
        c,
        &alice,
        "gated",
        s("d"),
        served(s("open"), 1, Reason::FALLTHROUGH),
    );
    let failed = Reason::PrerequisiteFailed {
        prerequisite_key: Cow::Borrowed("bool"),
    };
    check(c, &bob, "gated", s("d"), served(s("closed"), 0, failed));
    // Off without an off variation: no variation, so the default, but not an error.
    let off_default = Detail {
        value: s("d"),
        variation_index: None,
        reason: Reason::OFF,
        big_segments_status: None,
    };
    check(c, &alice, "no-off-variation", s("d"), off_default);

    // The wrong type gives the default and says so.
    check(
        c,
        &alice,
        "bool",
        s("d"),
        error_detail(s("d"), ErrorKind::WrongType),
    );
    check(
        c,
        &alice,
        "string",
        true,
        error_detail(true, ErrorKind::WrongType),
    );
    check(
        c,
        &alice,
        "string",
        3,
        error_detail(3, ErrorKind::WrongType),
    );
    check(
        c,
        &alice,
        "json",
        0.5,
        error_detail(0.5, ErrorKind::WrongType),
    );
    check(
        c,
        &alice,
        "int",
        s("d"),
        error_detail(s("d"), ErrorKind::WrongType),
    );

    // An unknown flag gives the default, whatever the type.
    let missing = ErrorKind::FlagNotFound;
    check(c, &alice, "nope", true, error_detail(true, missing));
    check(c, &alice, "nope", s("d"), error_detail(s("d"), missing));
    check(c, &alice, "nope", 4, error_detail(4, missing));
    check(c, &alice, "nope", 4.5, error_detail(4.5, missing));
    check(
        c,
        &alice,
        "nope",
        json!([1]),
        error_detail(json!([1]), missing),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_initialisation_every_variation_gives_the_default() {
    // Nothing listens on this port, so the client never gets data.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder(SDK_KEY)
        .base_url(&format!("http://127.0.0.1:{port}"))
        .data_source(streaming())
        .build()
        .unwrap();
    let provider = client.data_source_status_provider();
    let status = eventually("a failed connection to be reported", || async {
        let status = provider.status();
        status.last_error.is_some().then_some(status)
    })
    .await;
    assert_eq!(
        status.state,
        DataSourceState::Initializing,
        "failures before any data keep the client initialising"
    );
    assert_eq!(
        status.last_error.unwrap().kind,
        DataSourceErrorKind::NetworkError
    );
    assert!(!client.initialized());
    assert!(
        !client
            .wait_for_initialization(Duration::from_millis(50))
            .await
    );

    let c = &client;
    let alice = user("alice");
    let not_ready = ErrorKind::ClientNotReady;
    check(c, &alice, "bool", true, error_detail(true, not_ready));
    check(c, &alice, "string", s("d"), error_detail(s("d"), not_ready));
    check(c, &alice, "int", 4, error_detail(4, not_ready));
    check(c, &alice, "fraction", 4.5, error_detail(4.5, not_ready));
    check(
        c,
        &alice,
        "json",
        json!({}),
        error_detail(json!({}), not_ready),
    );
    let state = client.all_flags_state(&alice, FlagsStateOptions::default());
    assert!(!state.valid());
    assert_eq!(state.to_json(), json!({"$flagsState": {}, "$valid": false}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_flags_state_is_the_bootstrap_json() {
    let flagd = Flagd::start(&variation_flags());
    let client = ready_client(&flagd).await;
    let state = client.all_flags_state(&user("alice"), FlagsStateOptions::default());
    assert!(state.valid());
    assert_eq!(
        state.to_json(),
        json!({
            "bool": true,
            "string": "green",
            "int": 20,
            "fraction": 2.75,
            "json": {"theme": "dark", "sizes": [1, 2]},
            "gated": "open",
            "no-off-variation": null,
            "$flagsState": {
                // The version written in the file is the one served.
                "bool": {"variation": 1, "version": 7},
                "string": {"variation": 1, "version": 1},
                "int": {"variation": 1, "version": 1},
                "fraction": {"variation": 1, "version": 1},
                "json": {"variation": 0, "version": 1},
                "gated": {"variation": 1, "version": 1},
                "no-off-variation": {"version": 1}
            },
            "$valid": true
        })
    );

    let with_reasons = FlagsStateOptions {
        with_reasons: true,
        client_side_only: true,
        ..FlagsStateOptions::default()
    };
    let bob = Context::from_json(&json!({"kind": "user", "key": "bob", "country": "FR"})).unwrap();
    assert_eq!(
        client.all_flags_state(&bob, with_reasons).to_json(),
        json!({
            "bool": false,
            "$flagsState": {
                "bool": {"variation": 0, "version": 7, "reason": {"kind": "FALLTHROUGH"}}
            },
            "$valid": true
        }),
        "only the flag available to client-side SDKs, with its reason"
    );
}

// ---------------------------------------------------------------------------------------------
// Change listeners

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_edit_reaches_both_kinds_of_listener_within_a_second() {
    let flags = |banner: usize| {
        file(json!({
            "banner": flag(json!(["old", "new"]), banner),
            "other": flag(json!([1]), 0)
        }))
    };
    let flagd = Flagd::start(&flags(0));
    let client = ready_client(&flagd).await;
    let tracker = client.flag_tracker();
    let changes = tracker.add_flag_change_listener();
    let values = tracker.add_flag_value_change_listener("banner", user("u"), json!("default"));
    let changes = tokio::spawn(received_at(changes));
    let values = tokio::spawn(received_at(values));

    let renamed = flagd.edit(&flags(1));
    let (change, change_at) = changes.await.unwrap();
    let (value, value_at) = values.await.unwrap();
    assert_eq!(change, FlagChangeEvent { key: s("banner") });
    assert_eq!(
        value,
        FlagValueChangeEvent {
            key: s("banner"),
            old_value: json!("old"),
            new_value: json!("new"),
        }
    );
    for (listener, at) in [("flag change", change_at), ("value change", value_at)] {
        let latency = at - renamed;
        assert!(
            latency < PROPAGATION_LIMIT,
            "the {listener} listener heard of the edit {latency:?} after the rename"
        );
    }
    assert_eq!(
        client.str_variation(&user("u"), "banner", s("d")),
        "new",
        "evaluations see the new data by the time listeners hear of it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_listeners_hear_only_their_context_s_changes_and_deletion() {
    let mut data = json!({"flags": {"tiered": {
        "on": true, "variations": ["basic", "pro", "max"], "offVariation": 0,
        "rules": [{"id": "fr", "variation": 1,
                   "clauses": [{"attribute": "country", "op": "in", "values": ["FR"]}]}],
        "fallthrough": {"variation": 0}
    }}});
    let flagd = Flagd::start(&data.to_string());
    let client = ready_client(&flagd).await;
    let tracker = client.flag_tracker();
    let in_country = |country: &str| {
        let context = json!({"kind": "user", "key": country, "country": country});
        tracker.add_flag_value_change_listener(
            "tiered",
            Context::from_json(&context).unwrap(),
            json!("none"),
        )
    };
    let (mut fr, mut de) = (in_country("FR"), in_country("DE"));
    let event = |old: &str, new: &str| FlagValueChangeEvent {
        key: s("tiered"),
        old_value: json!(old),
        new_value: json!(new),
    };

    // Each listener's next event is the one its context's value changed in: an edit that left
    // the value alone would have put an event before it.
    set(&mut data, "/flags/tiered/rules/0/variation", json!(2));
    flagd.edit(&data.to_string());
    assert_eq!(next(&mut fr, "FR's upgrade").await, event("pro", "max"));
    set(&mut data, "/flags/tiered/fallthrough/variation", json!(1));
    flagd.edit(&data.to_string());
    assert_eq!(next(&mut de, "DE's upgrade").await, event("basic", "pro"));
    set(&mut data, "/flags/tiered", None);
    flagd.edit(&data.to_string());
    assert_eq!(next(&mut fr, "FR's deletion").await, event("max", "none"));
    assert_eq!(next(&mut de, "DE's deletion").await, event("pro", "none"));
}

/// A flag that serves `true` to the members of `segment`.
fn uses_segment(segment: &str) -> Value {
    json!({
        "on": true, "variations": [false, true], "offVariation": 0,
        "rules": [{"id": "r", "variation": 1,
                   "clauses": [{"attribute": "key", "op": "segmentMatch", "values": [segment]}]}],
        "fallthrough": {"variation": 0}
    })
}

/// A flag that serves `"yes"` when `prerequisite` serves its second variation.
fn needs(prerequisite: &str) -> Value {
    json!({
        "on": true, "variations": ["no", "yes"], "offVariation": 0,
        "prerequisites": [{"key": prerequisite, "variation": 1}],
        "fallthrough": {"variation": 1}
    })
}

/// Flags that depend on segments and on other flags, directly and through each other.
fn dependency_data() -> Value {
    json!({
        "flags": {
            "uses-s1": uses_segment("s1"),
            // s2 matches whoever s1 matches, so this flag depends on s1 through s2.
            "uses-s2": uses_segment("s2"),
            "uses-s3": uses_segment("s3"),
            "needs-uses-s1": needs("uses-s1"),
            "needs-needs-uses-s1": needs("needs-uses-s1"),
            "base": flag(json!(["a", "b", "c"]), 1),
            "needs-base": needs("base"),
            "needs-needs-base": needs("needs-base"),
            "alone": flag(json!([true]), 0),
            "fence": flag(json!([0, 1]), 0)
        },
        "segments": {
            "s1": {"included": ["in-s1"]},
            "s2": {"included": [], "rules": [{"id": "via-s1", "clauses": [
                {"attribute": "key", "op": "segmentMatch", "values": ["s1"]}
            ]}]},
            "s3": {"included": ["in-s3"], "excluded": []}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_notifies_exactly_the_flags_that_depend_on_it() {
    let mut data = dependency_data();
    let flagd = Flagd::start(&data.to_string());
    let client = ready_client(&flagd).await;
    let mut changes = client.flag_tracker().add_flag_change_listener();

    // (what is edited, its new value or None to delete it, the flags that must be told and no
    // others)
    let cases: &[(&str, Option<Value>, &[&str])] = &[
        (
            "/segments/s1/included",
            Some(json!(["in-s1", "new"])),
            &["needs-needs-uses-s1", "needs-uses-s1", "uses-s1", "uses-s2"],
        ),
        ("/segments/s2/included", Some(json!(["new"])), &["uses-s2"]),
        ("/segments/s3/excluded", Some(json!(["out"])), &["uses-s3"]),
        (
            "/flags/base/fallthrough/variation",
            Some(json!(2)),
            &["base", "needs-base", "needs-needs-base"],
        ),
        (
            "/flags/needs-uses-s1/fallthrough/variation",
            Some(json!(0)),
            &["needs-needs-uses-s1", "needs-uses-s1"],
        ),
        ("/flags/uses-s3/on", Some(json!(false)), &["uses-s3"]),
        // A new flag is a change of its own, and of nothing it depends on.
        ("/flags/late", Some(needs("alone")), &["late"]),
        // Deletions reach dependants that still name what is gone.
        ("/segments/s3", None, &["uses-s3"]),
        (
            "/flags/base",
            None,
            &["base", "needs-base", "needs-needs-base"],
        ),
        ("/flags/needs-needs-uses-s1", None, &["needs-needs-uses-s1"]),
    ];
    for (n, (pointer, value, expected)) in cases.iter().enumerate() {
        set(&mut data, pointer, value.clone());
        flagd.edit(&data.to_string());
        let expected: BTreeSet<String> = expected.iter().map(|k| s(k)).collect();
        let mut heard = BTreeSet::new();
        while !expected.is_subset(&heard) {
            heard.insert(next(&mut changes, pointer).await.key);
        }
        // Events come in the order flagd's reloads happened, so once the fence flag's edit is
        // heard, everything the edit above caused has been heard too.
        set(
            &mut data,
            "/flags/fence/fallthrough/variation",
            json!((n + 1) % 2),
        );
        flagd.edit(&data.to_string());
        loop {
            let key = next(&mut changes, "the fence").await.key;
            if key == "fence" {
                break;
            }
            heard.insert(key);
        }
        assert_eq!(heard, expected, "after editing {pointer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_listener_holds_up_no_other_and_learns_what_it_missed() {
    const EDITS: usize = 6;
    let mut data = json!({"flags": {}});
    for i in 0..EDITS {
        data["flags"][format!("f{i}")] = flag(json!([0, 1]), 0);
    }
    let flagd = Flagd::start(&data.to_string());
    let client = Client::builder(SDK_KEY)
        .base_url(&flagd.url())
        .data_source(streaming())
        .listener_capacity(2)
        .build()
        .unwrap();
    assert!(client.wait_for_initialization(DEADLINE).await);
    let tracker = client.flag_tracker();
    let mut stalled = tracker.add_flag_change_listener();
    let mut prompt = tracker.add_flag_change_listener();

    for i in 0..EDITS {
        set(
            &mut data,
            &format!("/flags/f{i}/fallthrough/variation"),
            json!(1),
        );
        let renamed = flagd.edit(&data.to_string());
        let event = next(&mut prompt, &format!("f{i}'s change")).await;
        let latency = renamed.elapsed();
        assert_eq!(event.key, format!("f{i}"));
        assert!(
            latency < PROPAGATION_LIMIT,
            "edit {i} was heard after {latency:?} beside a stalled listener"
        );
    }
    assert_eq!(stalled.try_recv(), Err(RecvError::Missed(EDITS as u64 - 2)));
    let kept: Vec<_> = std::iter::from_fn(|| stalled.try_recv().unwrap()).collect();
    let newest = [
        FlagChangeEvent { key: s("f4") },
        FlagChangeEvent { key: s("f5") },
    ];
    assert_eq!(kept, newest, "the newest events are kept, in order");
}

// ---------------------------------------------------------------------------------------------
// Outages and polling

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagd_restart_keeps_the_last_data_then_catches_up() {
    let mut data = json!({"flags": {
        "stays": flag(json!(["same"]), 0),
        "moves": flag(json!(["before", "after"]), 0),
        "gone": flag(json!([true]), 0),
        "fence": flag(json!([0, 1]), 0)
    }});
    let mut flagd = Flagd::start(&data.to_string());
    let client = ready_client(&flagd).await;
    let provider = client.data_source_status_provider();
    let mut statuses = provider.add_status_listener();
    let tracker = client.flag_tracker();
    let mut changes = tracker.add_flag_change_listener();
    let alice = user("alice");
    let mut moves = tracker.add_flag_value_change_listener("moves", alice.clone(), json!("d"));

    flagd.kill();
    let status = next_state(&mut statuses, DataSourceState::Valid).await;
    assert_eq!(status.state, DataSourceState::Interrupted);
    assert_eq!(
        status.last_error.unwrap().kind,
        DataSourceErrorKind::NetworkError
    );
    assert_eq!(client.str_variation(&alice, "moves", s("d")), "before");
    assert_eq!(client.str_variation(&alice, "stays", s("d")), "same");

    // The changes flagd was not there to send.
    set(&mut data, "/flags/moves/fallthrough/variation", json!(1));
    set(&mut data, "/flags/gone", None);
    flagd.edit(&data.to_string());
    assert_eq!(
        provider.status().state,
        DataSourceState::Interrupted,
        "nothing to reconnect to yet"
    );
    flagd.restart();

    let status = next_state(&mut statuses, DataSourceState::Interrupted).await;
    assert_eq!(status.state, DataSourceState::Valid);
    assert_eq!(client.str_variation(&alice, "moves", s("d")), "after");
    assert_eq!(client.str_variation(&alice, "stays", s("d")), "same");
    assert_eq!(
        client.bool_variation_detail(&alice, "gone", false),
        error_detail(false, ErrorKind::FlagNotFound)
    );
    assert_eq!(
        next(&mut moves, "the missed value change").await,
        FlagValueChangeEvent {
            key: s("moves"),
            old_value: json!("before"),
            new_value: json!("after"),
        }
    );
    // The missed changes and nothing else (the rest is as it was), up to the fence's edit.
    set(&mut data, "/flags/fence/fallthrough/variation", json!(1));
    flagd.edit(&data.to_string());
    let mut heard = Vec::new();
    loop {
        let key = next(&mut changes, "the fence").await.key;
        if key == "fence" {
            break;
        }
        heard.push(key);
    }
    assert_eq!(heard, ["gone", "moves"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagd_that_stops_answering_is_noticed_after_the_read_timeout() {
    const READ_TIMEOUT: Duration = Duration::from_millis(600);
    // Keep-alives well inside the read timeout, so only a flagd that stopped goes silent.
    let flagd = Flagd::start_with(
        &file(json!({"f": flag(json!(["on"]), 0)})),
        &[("FLAGD_HTTP_STREAM_KEEPALIVE_MS", "50")],
    );
    let client = Client::builder(SDK_KEY)
        .base_url(&flagd.url())
        .data_source(DataSource::Streaming {
            initial_reconnect_delay: Duration::from_millis(100),
            read_timeout: READ_TIMEOUT,
        })
        .build()
        .unwrap();
    assert!(client.wait_for_initialization(DEADLINE).await);
    let mut statuses = client.data_source_status_provider().add_status_listener();

    // A stopped process keeps its sockets open: only the silence tells.
    flagd.signal("STOP");
    let stopped = Instant::now();
    let status = next_state(&mut statuses, DataSourceState::Valid).await;
    let noticed = stopped.elapsed();
    flagd.signal("CONT");
    assert_eq!(status.state, DataSourceState::Interrupted);
    let error = status.last_error.unwrap();
    assert_eq!(error.kind, DataSourceErrorKind::NetworkError);
    assert!(
        error
            .message
            .ends_with(&format!("no data for {READ_TIMEOUT:?}")),
        "{}",
        error.message
    );
    assert!(
        noticed >= READ_TIMEOUT - Duration::from_millis(100) && noticed < READ_TIMEOUT * 3,
        "silence noticed {noticed:?} after the stop, with a read timeout of {READ_TIMEOUT:?}"
    );
    let status = next_state(&mut statuses, DataSourceState::Interrupted).await;
    assert_eq!(status.state, DataSourceState::Valid);
    assert_eq!(client.str_variation(&user("u"), "f", s("d")), "on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_or_dropping_the_client_ends_its_stream_and_listeners() {
    let flagd = Flagd::start(&file(json!({"f": flag(json!(["on"]), 0)})));
    let streams = || flagd.metric("flagd_streams_open ");
    let client = ready_client(&flagd).await;
    let dropped = ready_client(&flagd).await;
    eventually("two streams open", || async {
        (streams().await == 2).then_some(())
    })
    .await;

    let mut changes = client.flag_tracker().add_flag_change_listener();
    let mut statuses = client.data_source_status_provider().add_status_listener();
    client.close();
    assert_eq!(changes.recv().await, Err(RecvError::Closed));
    assert_eq!(
        next(&mut statuses, "the close").await.state,
        DataSourceState::Off
    );
    assert_eq!(statuses.recv().await, Err(RecvError::Closed));
    assert_eq!(
        client.str_variation(&user("u"), "f", s("d")),
        "on",
        "a closed client answers from its last data"
    );
    eventually("the closed client's stream to end", || async {
        (streams().await == 1).then_some(())
    })
    .await;
    // Listeners added after the close end at once, rather than wait for what cannot come.
    let tracker = client.flag_tracker();
    let late = tracker.add_flag_change_listener();
    assert_eq!(recv(late).await, Err(RecvError::Closed));
    let late = tracker.add_flag_value_change_listener("f", user("u"), json!("d"));
    assert_eq!(recv(late).await, Err(RecvError::Closed));
    let late = client.data_source_status_provider().add_status_listener();
    assert_eq!(recv(late).await, Err(RecvError::Closed));

    // A tracker outlives the client it came from, and does not keep it open.
    let tracker = dropped.flag_tracker();
    let mut orphaned = tracker.add_flag_change_listener();
    drop(dropped);
    assert_eq!(orphaned.recv().await, Err(RecvError::Closed));
    eventually("the dropped client's stream to end", || async {
        (streams().await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_gets_data_and_changes_and_sends_etags() {
    let mut data = json!({"flags": {"color": flag(json!(["red", "green"]), 0)}});
    let flagd = Flagd::start(&data.to_string());
    let client = Client::builder(SDK_KEY)
        .base_url(&flagd.url())
        .data_source(DataSource::polling(Duration::from_millis(50)))
        .build()
        .unwrap();
    assert!(client.wait_for_initialization(DEADLINE).await);
    let alice = user("alice");
    assert_eq!(client.str_variation(&alice, "color", s("d")), "red");
    let mut changes = client.flag_tracker().add_flag_change_listener();

    // Unchanged data costs a 304 and changes nothing.
    let answers = |status| flagd.latest_all_answers(status);
    eventually("two polls answered 304", || async {
        (answers("304").await >= 2).then_some(())
    })
    .await;
    assert_eq!(answers("200").await, 1, "only the first poll got a body");
    assert_eq!(client.str_variation(&alice, "color", s("d")), "red");
    assert_eq!(changes.try_recv(), Ok(None));

    set(&mut data, "/flags/color/fallthrough/variation", json!(1));
    flagd.edit(&data.to_string());
    assert_eq!(next(&mut changes, "the polled change").await.key, "color");
    assert_eq!(client.str_variation(&alice, "color", s("d")), "green");
    let before = answers("304").await;
    eventually("a 304 for the new data", || async {
        (answers("304").await > before).then_some(())
    })
    .await;
    assert_eq!(answers("200").await, 2, "one body per version of the data");
    assert_eq!(
        client.data_source_status_provider().status().state,
        DataSourceState::Valid
    );
}

// ---------------------------------------------------------------------------------------------
// Analytics events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_s_events_reach_flagd_and_are_counted_by_kind() {
    let mut tracked = flag(json!([false, true]), 1);
    set(&mut tracked, "/trackEvents", json!(true));
    let flagd = Flagd::start(&file(json!({"tracked": tracked})));
    let client = ready_client(&flagd).await;
    assert!(client.bool_variation(&user("alice"), "tracked", false));
    client.track("purchase", &user("alice"), None, Some(3.0));
    client.identify(&user("bob"));
    client.flush();
    let kinds = [
        "feature", "index", "summary", "custom", "identify", "metrics",
    ];
    eventually(
        "flagd to count every kind of event the client sent",
        || async {
            for kind in kinds {
                let series = format!(r#"flagd_events_received_total{{kind="{kind}"}}"#);
                if flagd.metric(&series).await == 0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    // The answer reaches the client just after flagd counted the payload.
    eventually("every event to count as sent", || async {
        let stats = client.event_stats();
        (stats.sent == stats.created && stats.dropped == 0).then_some(())
    })
    .await;
    assert_eq!(
        flagd
            .metric(r#"flagd_events_received_total{kind="other"}"#)
            .await,
        0
    );
    let report = tokio::task::block_in_place(|| client.close());
    assert_eq!(report.undelivered, 0);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A `flagd serve` of one flag file requiring [`SDK_KEY`]; it can be killed and started again
/// on the same address.
struct Flagd {
    process: Option<FlagdProcess>,
    dir: FlagDir,
    file: PathBuf,
    addr: String,
    env: Vec<(&'static str, &'static str)>,
}

impl Flagd {
    fn start(contents: &str) -> Flagd {
        Flagd::start_with(contents, &[])
    }

    /// Starts flagd with `FLAGD_*` settings in its environment.
    fn start_with(contents: &str, env: &[(&'static str, &'static str)]) -> Flagd {
        let dir = FlagDir::new();
        let file = dir.write("flags.json", contents);
        let process = Flagd::spawn(&file, "127.0.0.1:0", env);
        Flagd {
            addr: process.addr().to_owned(),
            process: Some(process),
            dir,
            file,
            env: env.to_vec(),
        }
    }

    fn spawn(file: &Path, listen: &str, env: &[(&str, &str)]) -> FlagdProcess {
        let mut command = flagd_command(BIN);
        command
            .args(["serve", "--listen", listen, "--log", "warn"])
            .args(["--sdk-key", SDK_KEY])
            .arg("--file")
            .arg(file)
            .envs(env.iter().copied());
        // Starting waits for the process to say it listens: not a wait for the runtime's tasks.
        tokio::task::block_in_place(|| FlagdProcess::spawn(command))
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the flag file by rename; returns when the rename began.
    fn edit(&self, contents: &str) -> Instant {
        let tmp = self.dir.path(".flags.json.tmp");
        std::fs::write(&tmp, contents).unwrap();
        let renamed = Instant::now();
        std::fs::rename(&tmp, &self.file).unwrap();
        renamed
    }

    /// Kills flagd (SIGKILL: no goodbye to its streams).
    fn kill(&mut self) {
        drop(self.process.take());
    }

    /// Starts flagd again on the address it had.
    fn restart(&mut self) {
        assert!(self.process.is_none(), "flagd is still running");
        self.process = Some(Flagd::spawn(&self.file, &self.addr, &self.env));
    }

    /// Sends `signal` (`STOP`, `CONT`) to flagd.
    fn signal(&self, signal: &str) {
        let process = self.process.as_ref().unwrap();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &process.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// How many `GET /sdk/latest-all` flagd answered with `status`, from its metrics.
    async fn latest_all_answers(&self, status: &str) -> u64 {
        self.metric(&format!(
            r#"flagd_http_requests_total{{route="/sdk/latest-all",method="GET",status="{status}"}}"#
        ))
        .await
    }

    /// The value of one series of flagd's metrics, 0 when it does not exist yet.
    async fn metric(&self, series: &str) -> u64 {
        let metrics = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Streaming that reconnects soon, so the tests do not wait out the default second.
fn streaming() -> DataSource {
    DataSource::Streaming {
        initial_reconnect_delay: Duration::from_millis(100),
        read_timeout: Duration::from_secs(60),
    }
}

fn streaming_client(flagd: &Flagd, key: &str) -> Client {
    Client::builder(key)
        .base_url(&flagd.url())
        .data_source(streaming())
        .build()
        .unwrap()
}

async fn ready_client(flagd: &Flagd) -> Client {
    let client = streaming_client(flagd, SDK_KEY);
    assert!(client.wait_for_initialization(DEADLINE).await);
    client
}

/// A flag file of `flags`.
fn file(flags: Value) -> String {
    json!({ "flags": flags }).to_string()
}

/// A flag that is on and serves `variations[fallthrough]` to everyone.
fn flag(variations: Value, fallthrough: usize) -> Value {
    json!({"on": true, "variations": variations, "offVariation": 0,
           "fallthrough": {"variation": fallthrough}})
}

/// Sets the member at `pointer`, adding it if it is new, or with `None` removes it.
fn set(data: &mut Value, pointer: &str, value: impl Into<Option<Value>>) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let object = data
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {parent:?}"));
    match value.into() {
        Some(value) => {
            object.insert(key.to_owned(), value);
        }
        None => assert!(object.remove(key).is_some(), "no {pointer}"),
    }
}

fn user(key: &str) -> Context {
    Context::user(key).unwrap()
}

fn s(text: &str) -> String {
    text.to_owned()
}

fn served<T>(value: T, index: usize, reason: Reason<'static>) -> Detail<T> {
    Detail {
        value,
        variation_index: Some(index),
        reason,
        big_segments_status: None,
    }
}

fn error_detail<T>(default: T, kind: ErrorKind) -> Detail<T> {
    Detail {
        value: default,
        variation_index: None,
        reason: Reason::Error { error_kind: kind },
        big_segments_status: None,
    }
}

/// The typed variation methods, so one check covers each type.
trait Typed: Sized + Clone + PartialEq + Debug {
    fn plain(client: &Client, context: &Context, key: &str, default: Self) -> Self;
    fn detail(client: &Client, context: &Context, key: &str, default: Self) -> Detail<Self>;
}

macro_rules! typed {
    ($type:ty, $plain:ident, $detail:ident) => {
        impl Typed for $type {
            fn plain(client: &Client, context: &Context, key: &str, default: Self) -> Self {
                client.$plain(context, key, default)
            }
            fn detail(
                client: &Client,
                context: &Context,
                key: &str,
                default: Self,
            ) -> Detail<Self> {
                client.$detail(context, key, default)
            }
        }
    };
}

typed!(bool, bool_variation, bool_variation_detail);
typed!(String, str_variation, str_variation_detail);
typed!(i64, int_variation, int_variation_detail);
typed!(f64, float_variation, float_variation_detail);
typed!(Value, json_variation, json_variation_detail);

/// `key`'s detail for `context` is `expected`, and the plain method gives its value.
fn check<T: Typed>(client: &Client, context: &Context, key: &str, default: T, expected: Detail<T>) {
    let detail = T::detail(client, context, key, default.clone());
    assert_eq!(detail, expected, "{key} as {}", std::any::type_name::<T>());
    assert_eq!(
        T::plain(client, context, key, default),
        expected.value,
        "{key} as {}, without detail",
        std::any::type_name::<T>()
    );
}

/// The next event, failing the test after [`DEADLINE`].
async fn next<T: Clone>(listener: &mut Listener<T>, what: &str) -> T {
    tokio::time::timeout(DEADLINE, listener.recv())
        .await
        .unwrap_or_else(|_| panic!("no event for {what} within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// What `listener` gives next, failing the test after [`DEADLINE`].
async fn recv<T: Clone>(mut listener: Listener<T>) -> Result<T, RecvError> {
    tokio::time::timeout(DEADLINE, listener.recv())
        .await
        .unwrap_or_else(|_| panic!("the listener neither ended nor heard anything in {DEADLINE:?}"))
}

/// The next event and when it came.
async fn received_at<T: Clone>(mut listener: Listener<T>) -> (T, Instant) {
    let event = next(&mut listener, "an edit").await;
    (event, Instant::now())
}

/// The next status in a state other than `from` (a failing source reports each new failure
/// in the same state).
async fn next_state(
    statuses: &mut Listener<DataSourceStatus>,
    from: DataSourceState,
) -> DataSourceStatus {
    loop {
        let status = next(statuses, &format!("a state after {from:?}")).await;
        if status.state != from {
            return status;
        }
    }
}
