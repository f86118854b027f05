//! Analytics events against a scripted server: `/bulk` answers what the test says (an accepted
//! payload, an error status, or nothing at all), every request is recorded, and
//! `/sdk/latest-all` serves the test's flags so a polling client measures its own calls.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flags_events::{SdkEvent, parse_bulk};
use flags_sdk::{
    Client, Context, DataSource, EvaluationEvent, EventProcessor, EventStats, EventsConfig,
};
use flags_test_support::wait::until;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the server answers the n-th `/bulk` request (the last one repeats).
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Reads the request and never answers.
    Silence,
}

/// One request as received.
#[derive(Debug, Clone)]
struct Request {
    method_and_path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn events(&self) -> Vec<Value> {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Server {
    url: String,
    bulk: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn bulk(&self) -> Vec<Request> {
        self.bulk.lock().unwrap().clone()
    }

    async fn wait_for_bulk(&self, n: usize) -> Vec<Request> {
        until(&format!("{n} /bulk requests"), || async {
            self.bulk.lock().unwrap().len() >= n
        })
        .await;
        self.bulk()
    }
}

async fn serve(answers: Vec<Answer>, flags: Value) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bulk = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bulk);
    let flags = Arc::new(flags.to_string());
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (seen, answers, flags) = (Arc::clone(&seen), answers.clone(), Arc::clone(&flags));
            tokio::spawn(async move {
                answer(socket, &seen, &answers, &flags).await;
            });
        }
    });
    Server { url, bulk }
}

/// Answers every request of one connection.
async fn answer(
    mut socket: TcpStream,
    seen: &Mutex<Vec<Request>>,
    answers: &[Answer],
    flags: &str,
) {
    while let Some(request) = read_request(&mut socket).await {
        let reply = if request.method_and_path.starts_with("POST /bulk") {
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(request);
                seen.len() - 1
            };
            match answers[n.min(answers.len() - 1)] {
                Answer::Status(code) => format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n"),
                Answer::Silence => {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    return;
                }
            }
        } else {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{flags}",
                flags.len()
            )
        };
        if socket.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.lines();
    let method_and_path = lines.next()?.to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Some(Request {
        method_and_path,
        headers,
        body: data[head_end..head_end + length].to_vec(),
    })
}

fn no_flags() -> Value {
    json!({"flags": {}, "segments": {}})
}

/// A processor that flushes only when asked.
fn processor(server: &Server, config: EventsConfig) -> EventProcessor {
    let config = EventsConfig {
        flush_interval: Duration::from_secs(3600),
        ..config
    };
    EventProcessor::start("sdk-key-1", &server.url, config).unwrap()
}

fn user(key: &str) -> Context {
    Context::user(key).unwrap()
}

async fn stats_until(
    processor: &EventProcessor,
    what: &str,
    check: impl Fn(&EventStats) -> bool,
) -> EventStats {
    until(what, || async { check(&processor.stats()) }).await;
    processor.stats()
}

#[tokio::test]
async fn a_payload_is_retried_once_after_a_503_with_the_same_id_and_headers() {
    let server = serve(vec![Answer::Status(503), Answer::Status(202)], no_flags()).await;
    let events = processor(&server, EventsConfig::default());
    events.push_identify_event(&user("alice"));
    events.flush();
    let requests = server.wait_for_bulk(2).await;
    let stats = stats_until(&events, "the retry to succeed", |s| s.sent == 1).await;
    assert_eq!((stats.created, stats.retried, stats.dropped), (1, 1, 0));
    let (first, second) = (&requests[0], &requests[1]);
    for request in [first, second] {
        assert_eq!(request.method_and_path, "POST /bulk HTTP/1.1");
        assert_eq!(request.headers["authorization"], "sdk-key-1");
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(request.headers["x-launchdarkly-event-schema"], "4");
        assert_eq!(request.body, first.body);
    }
    let id = &first.headers["x-launchdarkly-payload-id"];
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&second.headers["x-launchdarkly-payload-id"], id);
    assert_eq!(first.events()[0]["kind"], "identify");
    assert_eq!(events.close(Duration::from_secs(5)).undelivered, 0);
}

#[tokio::test]
async fn a_second_failure_drops_the_payload_and_later_ones_go_on() {
    let answers = vec![
        Answer::Status(500),
        Answer::Status(429),
        Answer::Status(202),
    ];
    let server = serve(answers, no_flags()).await;
    let events = processor(&server, EventsConfig::default());
    events.push_goal_event("first", &user("a"), None, None);
    events.flush();
    stats_until(&events, "the payload to be dropped", |s| s.dropped == 1).await;
    assert_eq!(server.bulk().len(), 2);
    events.push_goal_event("second", &user("a"), None, Some(2.5));
    events.flush();
    let requests = server.wait_for_bulk(3).await;
    stats_until(&events, "the next payload to be sent", |s| s.sent == 1).await;
    let ids: Vec<&String> = requests
        .iter()
        .map(|r| &r.headers["x-launchdarkly-payload-id"])
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_ne!(
        ids[1], ids[2],
        "the dropped payload is not sent a third time"
    );
    let custom: Vec<Value> = requests[2]
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "custom")
        .collect();
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0]["key"], "second");
    assert_eq!(custom[0]["metricValue"], 2.5);
    let stats = events.stats();
    assert_eq!(
        (stats.created, stats.sent, stats.dropped, stats.retried),
        (2, 1, 1, 1)
    );
}

#[tokio::test]
async fn a_refused_key_stops_every_later_delivery() {
    let server = serve(vec![Answer::Status(401), Answer::Status(202)], no_flags()).await;
    let events = processor(&server, EventsConfig::default());
    events.push_identify_event(&user("a"));
    events.flush();
    stats_until(&events, "the refusal", |s| s.dropped == 1).await;
    for key in ["b", "c", "d"] {
        events.push_identify_event(&user(key));
    }
    events.flush();
    let report = events.close(Duration::from_secs(5));
    let stats = events.stats();
    assert_eq!((stats.created, stats.sent, stats.dropped), (4, 0, 4));
    assert_eq!(stats.retried, 0, "a 401 is not retried");
    assert_eq!(report.undelivered, 0);
    assert_eq!(server.bulk().len(), 1);
}

#[tokio::test]
async fn close_reports_what_a_silent_server_never_took() {
    let server = serve(vec![Answer::Silence], no_flags()).await;
    let events = processor(&server, EventsConfig::default());
    for i in 0..5 {
        events.push_latency_metrics("poll", Duration::from_millis(i));
    }
    let report = events.close(Duration::from_millis(300));
    assert_eq!(report.undelivered, 5);
    assert_eq!(server.wait_for_bulk(1).await[0].events().len(), 5);
    let stats = events.stats();
    assert_eq!((stats.created, stats.sent, stats.dropped), (5, 0, 0));
    // Pushes after closing are dropped and counted.
    events.push_identify_event(&user("late"));
    assert_eq!(events.stats().dropped, 1);
}

/// Many threads push far more than fits into a processor whose server never answers: every push
/// returns (the test ends), what did not fit is dropped and counted, and every event pushed is
/// accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_processor_drops_and_counts_instead_of_blocking() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 20_000;
    const CAPACITY: usize = 64;
    let server = serve(vec![Answer::Silence], no_flags()).await;
    let events = processor(
        &server,
        EventsConfig {
            queue_capacity: CAPACITY,
            num_flush_workers: 1,
            flush_size: 16,
            ..EventsConfig::default()
        },
    );
    let context = Arc::new(user("load"));
    let pushers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (events, context) = (events.clone(), Arc::clone(&context));
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let mut event = EvaluationEvent::new(
                        Arc::clone(&context),
                        &format!("flag-{t}-{}", i % 8),
                        json!(true),
                        json!(false),
                    );
                    event.track_events = true;
                    events.push_evaluation_event(event);
                }
            })
        })
        .collect();
    for pusher in pushers {
        pusher.join().unwrap();
    }
    let report = events.close(Duration::from_millis(200));
    let stats = events.stats();
    let pushed = THREADS * PER_THREAD;
    assert_eq!(stats.created, pushed);
    assert_eq!(stats.sent, 0);
    assert_eq!(
        stats.created,
        stats.sent + stats.dropped + report.undelivered
    );
    // Held at most: every pushing thread's full buffer, a full outbox, and one payload under
    // way as large as the outbox.
    let held_at_most = (THREADS + 2) * CAPACITY as u64;
    assert!(report.undelivered > 0, "{stats:?}");
    assert!(report.undelivered <= held_at_most, "{report:?}");
    assert!(stats.dropped >= pushed - held_at_most, "{stats:?}");
}

fn flags() -> Value {
    let on = |extra: Value| {
        let mut flag = json!({"on": true, "version": 4, "variations": [false, true],
                              "fallthrough": {"variation": 1}, "offVariation": 0});
        for (k, v) in extra.as_object().unwrap() {
            flag[k] = v.clone();
        }
        flag
    };
    let vip_rule = |track| {
        json!([{"id": "vip", "variation": 0, "trackEvents": track,
                        "clauses": [{"attribute": "key", "op": "in", "values": ["bob"]}]}])
    };
    json!({"flags": {
        "plain": on(json!({})),
        "tracked": on(json!({"trackEvents": true})),
        "by-rule": on(json!({"rules": vip_rule(true)})),
        "by-fallthrough": on(json!({"trackEventsFallthrough": true, "rules": vip_rule(false)})),
        "experiment": on(json!({"fallthrough": {"rollout": {"kind": "experiment",
            "variations": [{"variation": 0, "weight": 0}, {"variation": 1, "weight": 100000}]}}})),
        "needs-tracked": on(json!({"prerequisites": [{"key": "tracked", "variation": 1}]})),
        "text": {"on": true, "version": 1, "variations": ["a"], "fallthrough": {"variation": 0}}
    }, "segments": {}})
}

fn kinds_of(events: &[Value], kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_client_sends_summaries_tracked_evaluations_indexes_and_its_metrics() {
    let server = serve(vec![Answer::Status(202)], flags()).await;
    let client = Client::builder("sdk-key-2")
        .base_url(&server.url)
        .data_source(DataSource::polling(Duration::from_secs(3600)))
        .events(EventsConfig {
            flush_interval: Duration::from_secs(3600),
            private_attributes: vec!["/address/street".to_owned()],
            ..EventsConfig::default()
        })
        .build()
        .unwrap();
    assert!(
        client
            .wait_for_initialization(Duration::from_secs(10))
            .await
    );
    let alice = Context::from_json(&json!({"kind": "user", "key": "alice", "email": "a@x",
        "address": {"street": "Main", "city": "Oslo"},
        "_meta": {"privateAttributes": ["email"]}}))
    .unwrap();
    let bob = user("bob");
    for _ in 0..3 {
        assert!(client.bool_variation(&alice, "plain", false));
    }
    assert!(client.bool_variation(&bob, "plain", false));
    for context in [&alice, &bob] {
        for flag in [
            "tracked",
            "by-rule",
            "by-fallthrough",
            "experiment",
            "needs-tracked",
        ] {
            client.bool_variation(context, flag, false);
        }
    }
    // A string flag read as a boolean serves the default, and is counted so.
    assert!(client.bool_variation(&alice, "text", true));
    assert!(!client.bool_variation(&alice, "missing", false));
    client.track("purchase", &alice, Some(json!({"items": 2})), Some(9.5));
    client.identify(&bob);
    client.flush();
    let request = &server.wait_for_bulk(1).await[0];
    assert_eq!(request.headers["authorization"], "sdk-key-2");
    let events = request.events();
    // flagd's reader takes every event.
    let parsed = parse_bulk(&request.body).unwrap();
    assert_eq!(parsed.len(), events.len());

    // One index event per context, private attributes redacted.
    let index = kinds_of(&events, "index");
    assert_eq!(index.len(), 2, "{index:?}");
    assert_eq!(
        index[0]["context"],
        json!({"kind": "user", "key": "alice", "address": {"city": "Oslo"},
               "_meta": {"redactedAttributes": ["/address/street", "email"]}})
    );
    assert_eq!(index[1]["context"], json!({"kind": "user", "key": "bob"}));

    // Full events exactly for tracked flags, tracked rules and fallthroughs, and experiments.
    let mut features: BTreeSet<(String, String)> = BTreeSet::new();
    for f in kinds_of(&events, "feature") {
        let who = f["contextKeys"]["user"].as_str().unwrap().to_owned();
        assert!(f.get("context").is_none(), "{f}");
        features.insert((f["key"].as_str().unwrap().to_owned(), who));
    }
    let expected: BTreeSet<(String, String)> = [
        ("tracked", "alice"),
        ("tracked", "bob"),
        ("by-rule", "bob"),
        ("by-fallthrough", "alice"),
        ("experiment", "alice"),
        ("experiment", "bob"),
    ]
    .iter()
    .map(|(f, w)| ((*f).to_owned(), (*w).to_owned()))
    .collect();
    assert_eq!(features, expected);
    // The prerequisite was evaluated as one, and is tracked: it says whose.
    let prereqs: Vec<Value> = kinds_of(&events, "feature")
        .into_iter()
        .filter(|f| f.get("prereqOf").is_some())
        .collect();
    assert_eq!(prereqs.len(), 2);
    assert_eq!(prereqs[0]["prereqOf"], "needs-tracked");
    // An experiment's event carries its reason even though no detail was asked for.
    let experiment = kinds_of(&events, "feature")
        .into_iter()
        .find(|f| f["key"] == "experiment")
        .unwrap();
    assert_eq!(experiment["reason"]["inExperiment"], true);

    // The summary counts every evaluation, prerequisites included.
    let summary = &kinds_of(&events, "summary")[0]["features"];
    assert_eq!(
        summary["plain"]["counters"],
        json!([{"value": true, "variation": 1, "version": 4, "count": 4}])
    );
    assert_eq!(summary["tracked"]["counters"][0]["count"], 4);
    assert_eq!(
        summary["text"]["counters"],
        json!([{"value": true, "version": 1, "count": 1}])
    );
    assert_eq!(
        summary["missing"]["counters"],
        json!([{"value": false, "count": 1, "unknown": true}])
    );

    // Goals and identifies carry the whole (redacted) context.
    let custom = &kinds_of(&events, "custom")[0];
    assert_eq!(custom["context"]["key"], "alice");
    assert!(custom["context"].get("email").is_none());
    assert_eq!(
        (custom["data"].clone(), custom["metricValue"].clone()),
        (json!({"items": 2}), json!(9.5))
    );
    assert_eq!(kinds_of(&events, "identify")[0]["context"]["key"], "bob");

    // The client measured its poll.
    let metrics: BTreeSet<(String, String)> = parsed
        .iter()
        .filter_map(|e| match e {
            SdkEvent::Metrics(m) => Some((m.metric.as_str().to_owned(), m.api.clone())),
            _ => None,
        })
        .collect();
    assert!(
        metrics.contains(&("latency".to_owned(), "poll".to_owned())),
        "{metrics:?}"
    );
    assert!(
        metrics.contains(&("size".to_owned(), "poll".to_owned())),
        "{metrics:?}"
    );

    let report = client.close();
    assert_eq!(report.undelivered, 0);
}

// Closing blocks its thread while the server answers, so the server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_send_reasons_and_a_closed_client_flushes_what_it_held() {
    let server = serve(vec![Answer::Status(202)], flags()).await;
    let client = Client::builder("k")
        .events_url(&server.url)
        .data(serde_json::from_value(flags()).unwrap())
        .build()
        .unwrap();
    let detail = client.bool_variation_detail(&user("bob"), "by-rule", true);
    assert_eq!(detail.variation_index, Some(0));
    let report = client.close();
    assert_eq!(report.undelivered, 0);
    let events = server.wait_for_bulk(1).await[0].events();
    let feature = &kinds_of(&events, "feature")[0];
    assert_eq!(feature["reason"]["kind"], "RULE_MATCH");
    assert_eq!(feature["reason"]["ruleId"], "vip");
    assert_eq!(client.event_stats().sent, 1);
}

#[test]
fn events_are_off_without_flagd_unless_asked_for() {
    let data: flags_core::FlagData = serde_json::from_value(flags()).unwrap();
    let fixed = Client::builder("k").data(data.clone()).build().unwrap();
    let offline = Client::builder("k")
        .data_source(DataSource::Offline)
        .build()
        .unwrap();
    let refused = Client::builder("k")
        .base_url("http://127.0.0.1:9")
        .events_enabled(false)
        .data(data)
        .build()
        .unwrap();
    for client in [fixed, offline, refused] {
        client.bool_variation(&user("a"), "tracked", false);
        client.track("goal", &user("a"), None, None);
        assert_eq!(client.event_stats(), EventStats::default());
        assert_eq!(client.close().undelivered, 0);
    }
}

#[tokio::test]
async fn dropping_the_last_client_still_sends_its_events() {
    let server = serve(vec![Answer::Status(202)], flags()).await;
    let client = Client::builder("k")
        .events_url(&server.url)
        .data(serde_json::from_value(flags()).unwrap())
        .build()
        .unwrap();
    client.bool_variation(&user("a"), "plain", false);
    // The drop does not wait for the delivery (this test's one runtime thread also runs the
    // server); the processor's own thread sends the events.
    drop(client);
    let events = server.wait_for_bulk(1).await[0].events();
    assert_eq!(kinds_of(&events, "summary").len(), 1);
}
