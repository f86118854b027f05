//! The whole SDK path, flags-sdk against LaunchDarkly's Rust server SDK
//! (`launchdarkly-server-sdk` 3.2.0): snapshot (or store) access, flag lookup and evaluation
//! behind each SDK's typed variation call, on the engine benchmark's cases.
//!
//! - `sdk_1t_<case>/{flags_sdk,launchdarkly_sdk}`: one thread, the time of one call.
//! - `sdk_2t_<case>/...`: two threads started together, each making the same number of calls;
//!   the time reported is the pair's wall time divided by all their calls, so one thread's time
//!   divided by this one is the throughput of two threads relative to one (2.0 = perfect).
//!   Each of these benchmarks also prints the CPU time per evaluation of its threads and how
//!   long they waited for a CPU (Linux only), which tells a machine busy with other work from
//!   threads that slow each other down.
//! - `sdk_updates/...`: 10,000 `patch` events streamed to each SDK while two threads evaluate,
//!   through each SDK's real streaming data source (below): the time until the last patch is
//!   served (`_apply_10000`), and the evaluating threads' time per evaluation meanwhile, both
//!   threads' evaluations together as in `sdk_2t_` (`_eval_during`); and the same patches with
//!   no thread evaluating (`_apply_10000_alone`).
//!
//! Both SDKs hold the same flag and segment JSON (`tests/sdks/mod.rs`) and start before anything
//! is timed; the setup checks that each gives the case's value, so a call that fell back to its
//! default cannot be timed as an evaluation.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use flags_bench::fixtures;
use launchdarkly_server_sdk as ld_sdk;
use serde_json::{Value, json};

#[path = "../tests/sdks/mod.rs"]
mod sdks;

use sdks::{OurSdk, TheirSdk};

/// Patches per measured update run.
const PATCHES: u64 = 10_000;

/// The case the threads evaluate during updates: the cheapest evaluation, so the cost updates
/// add to the snapshot (or store) access weighs the most.
const UPDATE_CASE: &str = "plain_bool";

/// The flag the patches replace. It serves its version as a number, so the last patch of a run
/// is seen when the flag gives that number.
const CHURN_FLAG: &str = "churn";

/// How long a run of patches may take before the benchmark gives up on it.
const UPDATE_DEADLINE: Duration = Duration::from_secs(120);

fn variation_calls(c: &mut Criterion) {
    for threads in [1, 2] {
        for fixture in fixtures() {
            let (ours, theirs) = sides(&fixture);
            let group_name = format!("sdk_{threads}t_{}", fixture.name);
            let mut group = c.benchmark_group(&group_name);
            let mut bench = |name: &str, eval: &(dyn Fn() + Sync)| {
                let times = ThreadTimes::default();
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| on_threads(threads, iters, eval, &times));
                });
                times.report(&format!("{group_name}/{name}"));
            };
            if ours.is_bool() {
                bench("flags_sdk", &|| {
                    black_box(black_box(&ours).bool_variation());
                });
                bench("launchdarkly_sdk", &|| {
                    black_box(black_box(&theirs).bool_variation());
                });
            } else {
                bench("flags_sdk", &|| {
                    black_box(black_box(&ours).str_variation());
                });
                bench("launchdarkly_sdk", &|| {
                    black_box(black_box(&theirs).str_variation());
                });
            }
            group.finish();
        }
    }
}

fn updates(c: &mut Criterion) {
    let data = update_data();
    let context = fixtures()
        .into_iter()
        .find(|f| f.name == UPDATE_CASE)
        .map(|f| (f.flag_key, f.context))
        .unwrap_or_else(|| panic!("no fixture {UPDATE_CASE}"));
    let ours = UpdatedSide::flags_sdk(&data, context.0, &context.1);
    let theirs = UpdatedSide::launchdarkly(&data, context.0, &context.1);

    let mut group = c.benchmark_group("sdk_updates");
    // One iteration is a whole run of 10,000 patches, so criterion's linear sampling (1, 2, 3...
    // iterations per sample) would take minutes; ten samples of equal size are enough.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for side in [&ours, &theirs] {
        group.bench_function(format!("{}_apply_{PATCHES}", side.name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| side.run(2).applied).sum());
        });
        group.bench_function(format!("{}_eval_during", side.name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| side.run(2).per_evaluation()).sum());
        });
        // The same patches with nothing else running: what applying them costs the SDK itself.
        group.bench_function(format!("{}_apply_{PATCHES}_alone", side.name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| side.run(0).applied).sum());
        });
    }
    group.finish();
}

criterion_group!(benches, variation_calls, updates);
criterion_main!(benches);

/// Both SDKs over one fixture, checked to give the case's value.
fn sides(fixture: &flags_bench::Fixture) -> (OurSdk, TheirSdk) {
    // A fixture an SDK cannot load is a broken benchmark, not a result to report.
    let ours = OurSdk::new(fixture).unwrap_or_else(|e| panic!("{e}"));
    let theirs = TheirSdk::new(fixture).unwrap_or_else(|e| panic!("{e}"));
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
    (ours, theirs)
}

/// Runs `eval` `iters` times on each of `threads` threads released together, and returns their
/// wall time divided by `threads`: criterion divides by `iters`, giving the time per evaluation
/// of all the threads together. What the threads spent is added to `times`.
fn on_threads(
    threads: usize,
    iters: u64,
    eval: &(dyn Fn() + Sync),
    times: &ThreadTimes,
) -> Duration {
    let start = Barrier::new(threads + 1);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let before = schedstat();
                    for _ in 0..iters {
                        eval();
                    }
                    times.add(iters, before, schedstat());
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        // At most two threads, so the conversion cannot truncate.
        started.elapsed() / u32::try_from(threads).unwrap_or(u32::MAX)
    })
}

/// What the evaluating threads of one benchmark spent, from Linux's per-thread scheduler
/// statistics: time on a CPU, and time ready to run but waiting for one. On a machine busy with
/// other work the wall-clock times include the waiting, and the two-thread figures then say
/// more about the machine than about the SDK; the CPU time per evaluation does not.
#[derive(Default)]
struct ThreadTimes {
    evaluations: AtomicU64,
    running_ns: AtomicU64,
    waiting_ns: AtomicU64,
}

impl ThreadTimes {
    fn add(&self, evaluations: u64, before: Option<(u64, u64)>, after: Option<(u64, u64)>) {
        if let (Some((run0, wait0)), Some((run1, wait1))) = (before, after) {
            self.evaluations.fetch_add(evaluations, Ordering::Relaxed);
            self.running_ns
                .fetch_add(run1.saturating_sub(run0), Ordering::Relaxed);
            self.waiting_ns
                .fetch_add(wait1.saturating_sub(wait0), Ordering::Relaxed);
        }
    }

    fn report(&self, id: &str) {
        let evaluations = self.evaluations.load(Ordering::Relaxed);
        let running = self.running_ns.load(Ordering::Relaxed);
        let waiting = self.waiting_ns.load(Ordering::Relaxed);
        if evaluations == 0 || running == 0 {
            return;
        }
        // Far below 2^52 nanoseconds and evaluations, so the conversions are exact.
        #[allow(clippy::cast_precision_loss)]
        let (cpu, waited) = (
            running as f64 / evaluations as f64,
            100.0 * waiting as f64 / (running + waiting) as f64,
        );
        println!(
            "{id}: {cpu:.1} ns of CPU per evaluation per thread; the threads waited for a CPU \
             {waited:.1}% of the time"
        );
    }
}

/// This thread's time on a CPU and time waiting for one, in nanoseconds, where Linux reports
/// them (`/proc/thread-self/schedstat`).
fn schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(running)), Some(Ok(waiting))) => Some((running, waiting)),
        _ => None,
    }
}

/// Every fixture's flags and segments in one data set (their keys differ), plus the flag the
/// patches replace, at version 1.
fn update_data() -> Value {
    let mut flags = serde_json::Map::new();
    let mut segments = serde_json::Map::new();
    for fixture in fixtures() {
        for (key, flag) in sdks::section(&fixture.data, "flags") {
            flags.insert(key.clone(), flag.clone());
        }
        for (key, segment) in sdks::section(&fixture.data, "segments") {
            segments.insert(key.clone(), segment.clone());
        }
    }
    flags.insert(CHURN_FLAG.to_owned(), churn_flag(1));
    json!({ "flags": flags, "segments": segments })
}

/// The patched flag at `version`: the plain boolean fixture's flag, renamed, serving the number
/// `version` (variation 0) through its fallthrough. About 500 bytes of JSON, a small flag.
fn churn_flag(version: u64) -> Value {
    let mut flag = flags_bench::plain_bool().data["flags"]["plain-bool"].clone();
    flag["key"] = json!(CHURN_FLAG);
    flag["salt"] = json!(format!("{CHURN_FLAG}-salt"));
    flag["version"] = json!(version);
    flag["variations"] = json!([version, -1]);
    flag
}

/// `count` patch events of the churn flag, versions `first` onwards, as SSE bytes.
fn patch_events(first: u64, count: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for version in first..first + count {
        let data = json!({ "path": format!("/flags/{CHURN_FLAG}"), "data": churn_flag(version) });
        push_event(&mut out, "patch", &data);
    }
    out
}

fn push_event(out: &mut Vec<u8>, event: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Serializing a `Value` into a `Vec` cannot fail; compact JSON is one line, as SSE needs.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

/// One SDK kept current by its streaming data source from a [`Replayer`], with the calls the
/// update benchmark makes.
struct UpdatedSide {
    name: &'static str,
    sdk: UpdatedSdk,
    replayer: Replayer,
    next_version: AtomicU64,
}

enum UpdatedSdk {
    Ours {
        client: flags_sdk::Client,
        context: flags_sdk::Context,
        key: &'static str,
    },
    Theirs {
        client: Box<ld_sdk::Client>,
        context: ld_sdk::Context,
        key: &'static str,
    },
}

/// What one run of [`PATCHES`] patches measured.
struct UpdateRun {
    /// From the first byte of the patches on the wire until the SDK served the last one.
    applied: Duration,
    /// Evaluations the evaluating threads made meanwhile, all together.
    evaluations: u64,
}

impl UpdateRun {
    /// The pair's time per evaluation while the patches were applied.
    fn per_evaluation(&self) -> Duration {
        // Far below 2^52 evaluations, so the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let evaluations = self.evaluations.max(1) as f64;
        Duration::from_secs_f64(self.applied.as_secs_f64() / evaluations)
    }
}

impl UpdatedSide {
    fn flags_sdk(data: &Value, key: &'static str, context: &Value) -> UpdatedSide {
        let replayer = Replayer::start(data);
        let client = flags_sdk::Client::builder("bench-sdk-key")
            .base_url(&replayer.url)
            .data_source(flags_sdk::DataSource::streaming())
            .build()
            .unwrap_or_else(|e| panic!("flags-sdk client: {e}"));
        assert!(
            client.wait_for_initialization_blocking(sdks::INIT_DEADLINE),
            "flags-sdk did not initialise from the stream"
        );
        let context = flags_sdk::Context::from_json(context)
            .unwrap_or_else(|e| panic!("flags-sdk context: {e}"));
        UpdatedSide::new(
            "flags_sdk",
            UpdatedSdk::Ours {
                client,
                context,
                key,
            },
            replayer,
        )
    }

    fn launchdarkly(data: &Value, key: &'static str, context: &Value) -> UpdatedSide {
        let replayer = Replayer::start(data);
        let mut endpoints = ld_sdk::ServiceEndpointsBuilder::new();
        // Streaming, polling and events all at the replayer (the SDK wants all three or none);
        // only the stream is used, and events are discarded.
        endpoints.relay_proxy(&replayer.url);
        let transport = launchdarkly_sdk_transport::HyperTransport::new()
            .unwrap_or_else(|e| panic!("LaunchDarkly SDK transport: {e}"));
        let mut source = ld_sdk::StreamingDataSourceBuilder::new();
        source.transport(transport);
        let config = ld_sdk::ConfigBuilder::new("bench-sdk-key")
            .service_endpoints(&endpoints)
            .data_source(&source);
        let client = sdks::start_ld_client(config, "updates").unwrap_or_else(|e| panic!("{e}"));
        let context: ld_sdk::Context = serde_json::from_value(context.clone())
            .unwrap_or_else(|e| panic!("LaunchDarkly SDK context: {e}"));
        UpdatedSide::new(
            "launchdarkly_sdk",
            UpdatedSdk::Theirs {
                client: Box::new(client),
                context,
                key,
            },
            replayer,
        )
    }

    fn new(name: &'static str, sdk: UpdatedSdk, replayer: Replayer) -> UpdatedSide {
        let side = UpdatedSide {
            name,
            sdk,
            replayer,
            next_version: AtomicU64::new(2),
        };
        assert!(side.evaluate(), "{name}: the evaluated flag serves true");
        assert_eq!(
            side.churn_version(),
            1,
            "{name}: the patched flag is served"
        );
        side
    }

    /// The flag the threads evaluate.
    fn evaluate(&self) -> bool {
        match &self.sdk {
            UpdatedSdk::Ours {
                client,
                context,
                key,
            } => client.bool_variation(context, key, false),
            UpdatedSdk::Theirs {
                client,
                context,
                key,
            } => client.bool_variation(context, key, false),
        }
    }

    /// The version of the patched flag the SDK serves.
    fn churn_version(&self) -> i64 {
        match &self.sdk {
            UpdatedSdk::Ours {
                client, context, ..
            } => client.int_variation(context, CHURN_FLAG, -2),
            UpdatedSdk::Theirs {
                client, context, ..
            } => client.int_variation(context, CHURN_FLAG, -2),
        }
    }

    /// Streams [`PATCHES`] patches to the SDK while `evaluators` threads evaluate, and waits
    /// until the SDK serves the last one. The events are rendered before anything is timed.
    fn run(&self, evaluators: usize) -> UpdateRun {
        let first = self.next_version.fetch_add(PATCHES, Ordering::Relaxed);
        let last = i64::try_from(first + PATCHES - 1).unwrap_or(i64::MAX);
        let events = patch_events(first, PATCHES);
        let stop = AtomicBool::new(false);
        let evaluations = AtomicU64::new(0);
        let start = Barrier::new(evaluators + 1);
        let applied = thread::scope(|s| {
            for _ in 0..evaluators {
                s.spawn(|| {
                    start.wait();
                    let mut count = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..32 {
                            black_box(self.evaluate());
                        }
                        count += 32;
                    }
                    evaluations.fetch_add(count, Ordering::Relaxed);
                });
            }
            start.wait();
            let started = Instant::now();
            self.replayer.send(events);
            let mut served = self.churn_version();
            while served != last && started.elapsed() < UPDATE_DEADLINE {
                thread::sleep(Duration::from_micros(50));
                served = self.churn_version();
            }
            let applied = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            assert_eq!(served, last, "{}: the last patch was not served", self.name);
            applied
        });
        UpdateRun {
            applied,
            evaluations: evaluations.into_inner(),
        }
    }
}

/// A stand-in for flagd's `GET /all` on 127.0.0.1 for one SDK: it answers the first request
/// with a `put` of the given data, then writes whatever events it is sent, as they come. The
/// bytes are those of LaunchDarkly's streaming protocol, which both SDKs read (flagd serves
/// the same), so both parse and apply identical events. It stands in for flagd because the
/// benchmark crate does not run a server; one connection is all it serves, so an SDK that
/// reconnected would stop receiving patches and its run would fail at its deadline.
struct Replayer {
    url: String,
    events: mpsc::Sender<Vec<u8>>,
}

impl Replayer {
    fn start(data: &Value) -> Replayer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1: {e}"));
        let url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(e) => panic!("no local address: {e}"),
        };
        let mut put = Vec::new();
        push_event(&mut put, "put", &json!({ "path": "/", "data": data }));
        let (events, received) = mpsc::channel::<Vec<u8>>();
        thread::spawn(move || {
            // The connection ending (at the end of the benchmark) ends the thread; an error
            // before then shows as the SDK not initialising or missing its patches.
            let _ = serve(&listener, &put, &received);
        });
        Replayer { url, events }
    }

    fn send(&self, events: Vec<u8>) {
        self.events
            .send(events)
            .unwrap_or_else(|_| panic!("the replayer at {} has stopped", self.url));
    }
}

fn serve(
    listener: &TcpListener,
    put: &[u8],
    events: &mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    let (mut connection, _) = listener.accept()?;
    connection.set_nodelay(true)?;
    // The request's head; its content does not matter (one endpoint, no body).
    let mut head = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = connection.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
    }
    connection.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
          connection: close\r\n\r\n",
    )?;
    connection.write_all(put)?;
    for batch in events {
        connection.write_all(&batch)?;
    }
    Ok(())
}
