//! Traces from the `flagd` binary, received as a collector receives them: the tests run an OTLP
//! receiver of their own on loopback (OTLP/HTTP with protobuf bodies, and OTLP/gRPC), start
//! flagd as a process with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at it, and read the spans
//! that arrive with the protocol's own message types.
//!
//! Checked: one span per request, named after its route, with the flag key, environment and
//! reason kind; a caller's `traceparent` as its parent; store calls in root mode (PostgreSQL)
//! as its children, in the same trace; every span sent at a graceful stop however long the
//! batch delay; and nothing sent when tracing is turned off.

#![allow(clippy::unwrap_used)]

mod root_support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flags_test_support::postgres;
use flags_test_support::process::{FlagdProcess, flagd_command};
use flags_test_support::wait::Poll;
use http_body_util::StreamBody;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;
use root_support::{bool_flag, env_with_key, evaluate, put_flag};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_flagd");

/// A span as received, with the `service.name` of the resource it came with and the
/// transport it came over.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    transport: Transport,
    span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    HttpProtobuf,
    Grpc,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                AnyValue::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            })
    }
}

/// An OTLP receiver on 127.0.0.1: `POST /v1/traces` (OTLP/HTTP, protobuf) and the gRPC
/// `TraceService/Export`, both keeping every span they receive.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    exports: Arc<Mutex<usize>>,
}

const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl Collector {
    async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let exports = Arc::new(Mutex::new(0));
        let (http_spans, http_exports) = (Arc::clone(&spans), Arc::clone(&exports));
        let (grpc_spans, grpc_exports) = (Arc::clone(&spans), Arc::clone(&exports));
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
                    assert_eq!(
                        headers[header::CONTENT_TYPE],
                        "application/x-protobuf",
                        "OTLP/HTTP with protobuf bodies"
                    );
                    keep(&http_spans, &http_exports, Transport::HttpProtobuf, &body);
                    let answer = ExportTraceServiceResponse::default().encode_to_vec();
                    ([(header::CONTENT_TYPE, "application/x-protobuf")], answer)
                }),
            )
            .route(
                GRPC_EXPORT,
                axum::routing::post(move |body: Bytes| async move {
                    // A gRPC message: one byte for compression (none), four for the length.
                    assert_eq!(body[0], 0, "an uncompressed message");
                    keep(&grpc_spans, &grpc_exports, Transport::Grpc, &body[5..]);
                    grpc_answer(&ExportTraceServiceResponse::default().encode_to_vec())
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // axum's server speaks HTTP/1.1 and, for the gRPC client, HTTP/2 without TLS.
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Collector {
            url,
            spans,
            exports,
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    fn exports(&self) -> usize {
        *self.exports.lock().unwrap()
    }

    /// Waits until a span named `name` has arrived, and returns it.
    async fn span(&self, name: &str) -> Received {
        Poll::new()
            .until_some(&format!("a span named {name:?}"), || async {
                self.spans().into_iter().find(|r| r.span.name == name)
            })
            .await
    }
}

fn keep(spans: &Mutex<Vec<Received>>, exports: &Mutex<usize>, transport: Transport, body: &[u8]) {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut spans = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(Received {
                    service: service.clone(),
                    transport,
                    span,
                });
            }
        }
    }
    *exports.lock().unwrap() += 1;
}

/// A unary gRPC answer: the message, then the `grpc-status` trailer.
fn grpc_answer(message: &[u8]) -> Response {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames = futures_util::stream::iter([
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(framed))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ]);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/grpc")],
        Body::new(StreamBody::new(frames)),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A flag file with one boolean flag, `checkout`, that serves `true` by its fallthrough.
fn flag_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("flags.json");
    let data = json!({"flags": {"checkout": bool_flag("checkout", true)}});
    std::fs::write(&path, data.to_string()).unwrap();
    path.display().to_string()
}

/// `flagd serve ARGS` exporting to `collector`, with `env` added to its environment. The batch
/// delay is short so spans arrive while the test waits, unless `env` sets another.
fn flagd(collector: &Collector, args: &[&str], env: &[(&str, &str)]) -> FlagdProcess {
    let mut command = flagd_command(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    for (name, value) in env {
        command.env(name, value);
    }
    FlagdProcess::spawn(command)
}

/// Stops `server` as an orchestrator does (SIGTERM) and waits for a clean exit.
fn stop(mut server: FlagdProcess) {
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log());
}

async fn post(url: String, body: serde_json::Value, headers: &[(&str, &str)]) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_evaluation_request_is_one_span_with_its_flag_environment_and_reason() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = flagd(&collector, &["--file", &flag_file(&dir)], &[]);
    let base = server.url();
    let context = json!({"context": {"kind": "user", "key": "u1"}});
    let ofrep = json!({"context": {"targetingKey": "u1"}});
    assert_eq!(
        post(format!("{base}/v1/evaluate/checkout"), context.clone(), &[]).await,
        200
    );
    assert_eq!(
        post(format!("{base}/v1/evaluate/missing"), context.clone(), &[]).await,
        404
    );
    assert_eq!(
        post(
            format!("{base}/ofrep/v1/evaluate/flags/checkout"),
            ofrep.clone(),
            &[]
        )
        .await,
        200
    );
    assert_eq!(post(format!("{base}/v1/evaluate"), context, &[]).await, 200);
    assert_eq!(
        post(format!("{base}/ofrep/v1/evaluate/flags"), ofrep, &[]).await,
        200
    );
    let latest = reqwest::get(format!("{base}/sdk/latest-all"))
        .await
        .unwrap();
    assert_eq!(latest.status(), 200);

    let one = collector.span("POST /v1/evaluate/{flagKey}").await;
    assert_eq!(one.service, "flagd");
    assert_eq!(one.transport, Transport::HttpProtobuf);
    assert_eq!(one.span.kind, SpanKind::Server as i32);
    let expect = [
        ("feature_flag.key", "checkout"),
        ("flagd.environment", "default"),
        ("flagd.reason.kind", "FALLTHROUGH"),
        ("http.route", "/v1/evaluate/{flagKey}"),
        ("http.request.method", "POST"),
        ("http.response.status_code", "200"),
    ];
    for (key, value) in expect {
        assert_eq!(one.attr(key).as_deref(), Some(value), "{key}: {one:?}");
    }
    assert!(one.span.parent_span_id.is_empty(), "a root span: {one:?}");

    let spans = Poll::new()
        .until_some("every request's span", || async {
            let spans = collector.spans();
            (spans.len() >= 6).then_some(spans)
        })
        .await;
    let missing = spans
        .iter()
        .find(|r| r.attr("feature_flag.key").as_deref() == Some("missing"))
        .unwrap();
    assert_eq!(missing.attr("flagd.reason.kind").as_deref(), Some("ERROR"));
    assert_eq!(
        missing.attr("http.response.status_code").as_deref(),
        Some("404")
    );
    let status = missing.span.status.clone().unwrap_or_default();
    assert_ne!(status.code, SpanStatus::Error as i32, "a 404 is no failure");

    let ofrep_one = collector.span("POST /ofrep/v1/evaluate/flags/{key}").await;
    assert_eq!(
        ofrep_one.attr("feature_flag.key").as_deref(),
        Some("checkout")
    );
    assert_eq!(
        ofrep_one.attr("flagd.reason.kind").as_deref(),
        Some("FALLTHROUGH")
    );
    for bulk in ["POST /v1/evaluate", "POST /ofrep/v1/evaluate/flags"] {
        let span = collector.span(bulk).await;
        assert_eq!(
            span.attr("flagd.flag.count").as_deref(),
            Some("1"),
            "{span:?}"
        );
        assert_eq!(span.attr("flagd.environment").as_deref(), Some("default"));
        assert_eq!(span.attr("feature_flag.key"), None);
    }
    let sdk = collector.span("GET /sdk/latest-all").await;
    assert_eq!(sdk.attr("flagd.environment").as_deref(), Some("default"));
    assert_eq!(
        sdk.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    // One span per request, and nothing else in file mode.
    assert_eq!(spans.len(), 6, "{spans:#?}");
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_makes_the_request_span_a_child_of_the_callers() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = flagd(&collector, &["--file", &flag_file(&dir)], &[]);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let status = post(
        format!("{}/v1/evaluate/checkout", server.url()),
        json!({"context": {"kind": "user", "key": "u1"}}),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(status, 200);
    let span = collector.span("POST /v1/evaluate/{flagKey}").await;
    assert_eq!(hex(&span.span.trace_id), trace_id);
    assert_eq!(hex(&span.span.parent_span_id), parent_id);
    assert_ne!(hex(&span.span.span_id), parent_id);
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_calls_are_child_spans_of_the_request_in_root_mode() {
    let db = postgres().create_database();
    let store = flagd::open_database(db.url()).await.unwrap();
    let key = env_with_key(&*store, "production").await;
    put_flag(
        &*store,
        "production",
        "checkout",
        bool_flag("checkout", true),
    )
    .await;
    let collector = Collector::start().await;
    let server = flagd(
        &collector,
        &["--database", db.url(), "--admin-key", "trace-admin"],
        &[("OTEL_SERVICE_NAME", "flags-eu")],
    );
    let client = reqwest::Client::new();
    // The key's first use is looked up in the store (later ones come from the cache).
    let (status, body) = evaluate(&client, &server.url(), &key, "checkout").await;
    assert_eq!(status, 200, "{body}");
    let request = collector.span("POST /v1/evaluate/{flagKey}").await;
    assert_eq!(request.service, "flags-eu");
    assert_eq!(
        request.attr("flagd.environment").as_deref(),
        Some("production")
    );
    let lookup = collector.span("store.authenticate").await;
    assert_eq!(lookup.span.trace_id, request.span.trace_id);
    assert_eq!(lookup.span.parent_span_id, request.span.span_id);
    assert_eq!(lookup.span.kind, SpanKind::Client as i32);
    assert_eq!(lookup.attr("db.system.name").as_deref(), Some("postgresql"));
    assert_eq!(
        lookup.attr("db.operation.name").as_deref(),
        Some("authenticate")
    );

    // An admin write: the request span, and the store's write as its child.
    let response = client
        .put(format!(
            "{}/api/v1/environments/production/flags/checkout/kill",
            server.url()
        ))
        .header("authorization", "Bearer trace-admin")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let admin = collector
        .span("PUT /api/v1/environments/{env}/flags/{key}/kill")
        .await;
    let write = collector.span("store.set_killed").await;
    assert_eq!(write.span.trace_id, admin.span.trace_id);
    assert_eq!(write.span.parent_span_id, admin.span.span_id);
    assert_eq!(
        write.attr("flagd.environment").as_deref(),
        Some("production")
    );
    assert_ne!(admin.span.trace_id, request.span.trace_id);
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_sends_the_spans_still_queued() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A batch delay far longer than the test: only the stop can send the span.
    let server = flagd(
        &collector,
        &["--file", &flag_file(&dir)],
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let status = post(
        format!("{}/v1/evaluate/checkout", server.url()),
        json!({"context": {"kind": "user", "key": "u1"}}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        collector.exports(),
        0,
        "nothing is sent before the batch is due"
    );
    stop(server);
    let names: Vec<String> = collector.spans().into_iter().map(|r| r.span.name).collect();
    assert_eq!(names, ["POST /v1/evaluate/{flagKey}"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_also_travel_over_grpc() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = flagd(
        &collector,
        &["--file", &flag_file(&dir)],
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
    );
    let status = post(
        format!("{}/v1/evaluate/checkout", server.url()),
        json!({"context": {"kind": "user", "key": "u1"}}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let span = collector.span("POST /v1/evaluate/{flagKey}").await;
    assert_eq!(span.transport, Transport::Grpc);
    assert_eq!(span.attr("feature_flag.key").as_deref(), Some("checkout"));
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_when_tracing_is_turned_off() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = flagd(
        &collector,
        &["--file", &flag_file(&dir)],
        &[("OTEL_TRACES_EXPORTER", "none")],
    );
    let status = post(
        format!("{}/v1/evaluate/checkout", server.url()),
        json!({"context": {"kind": "user", "key": "u1"}}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    stop(server);
    assert_eq!(collector.exports(), 0);
}
