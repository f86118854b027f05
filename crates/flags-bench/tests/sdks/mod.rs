//! The two SDKs of the SDK benchmark, each set up on one fixture's data: flags-sdk's `Client`
//! serving the fixture as fixed data, and LaunchDarkly's Rust server SDK
//! (`launchdarkly-server-sdk`) fed the same flag and segment JSON through its `TestData` source.
//!
//! Shared by `benches/sdk.rs`, `benches/allocs.rs` and the tests (which include it as
//! `mod sdks;`; the benches through `#[path]`). It cannot live in the crate's library: the
//! library's dependencies are limited to the engine crates (`xtask tidy`), and both SDKs are
//! dev-dependencies.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use flags_bench::{Fixture, FlagdSide};
use flags_core::FlagData;
use launchdarkly_server_sdk as ld_sdk;
use serde_json::Value;

/// How long an SDK may take to hold its first data before the setup gives up.
pub const INIT_DEADLINE: Duration = Duration::from_secs(20);

/// What a case's flag serves for the fixture's context: the typed variation call that
/// evaluates it, and the value it must give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A boolean flag, read with `bool_variation`.
    Bool(bool),
    /// A string flag, read with `str_variation`.
    Str(String),
}

impl Answer {
    /// The value flagd's engine gives for the fixture, which both SDKs must give too.
    pub fn expected(fixture: &Fixture) -> Result<Answer, String> {
        let engine = FlagdSide::new(fixture).map_err(|e| e.to_string())?;
        match engine.evaluate().value {
            Some(Value::Bool(b)) => Ok(Answer::Bool(*b)),
            Some(Value::String(s)) => Ok(Answer::Str(s.clone())),
            other => Err(format!(
                "{}: the SDK benchmark reads bool and string flags, not {other:?}",
                fixture.name
            )),
        }
    }
}

/// flags-sdk's client over one fixture, with the fixture's context parsed once.
pub struct OurSdk {
    pub client: flags_sdk::Client,
    pub context: flags_sdk::Context,
    pub flag_key: &'static str,
    expected: Answer,
    bool_default: bool,
}

impl OurSdk {
    /// The client as applications build it over fixed data: no analytics events (there is no
    /// flagd to send them to).
    pub fn new(fixture: &Fixture) -> Result<OurSdk, String> {
        OurSdk::new_with(fixture, None)
    }

    /// The client sending analytics events to `events_url` (an [`events_sink`]).
    pub fn with_events(fixture: &Fixture, events_url: &str) -> Result<OurSdk, String> {
        OurSdk::new_with(fixture, Some(events_url))
    }

    fn new_with(fixture: &Fixture, events_url: Option<&str>) -> Result<OurSdk, String> {
        let name = fixture.name;
        let expected = Answer::expected(fixture)?;
        let data = FlagData::from_json_value(fixture.data.clone())
            .map_err(|e| format!("{name}: flags-sdk data: {e}"))?;
        let mut builder = flags_sdk::Client::builder("bench-sdk-key").data(data);
        if let Some(url) = events_url {
            builder = builder.events_url(url);
        }
        let client = builder
            .build()
            .map_err(|e| format!("{name}: flags-sdk client: {e}"))?;
        if !client.wait_for_initialization_blocking(INIT_DEADLINE) {
            return Err(format!("{name}: flags-sdk did not initialise"));
        }
        let context = flags_sdk::Context::from_json(&fixture.context)
            .map_err(|e| format!("{name}: flags-sdk context: {e}"))?;
        Ok(OurSdk {
            client,
            context,
            flag_key: fixture.flag_key,
            bool_default: bool_default(&expected),
            expected,
        })
    }

    /// Whether the case's flag is a boolean, so [`OurSdk::bool_variation`] is the call to time.
    pub fn is_bool(&self) -> bool {
        matches!(self.expected, Answer::Bool(_))
    }

    /// The case's boolean flag through `Client::bool_variation`.
    #[inline]
    pub fn bool_variation(&self) -> bool {
        self.client
            .bool_variation(&self.context, self.flag_key, self.bool_default)
    }

    /// The case's string flag through `Client::str_variation`.
    #[inline]
    pub fn str_variation(&self) -> String {
        self.client
            .str_variation(&self.context, self.flag_key, String::new())
    }

    /// One evaluation through the typed call that fits the flag.
    pub fn answer(&self) -> Answer {
        if self.is_bool() {
            Answer::Bool(self.bool_variation())
        } else {
            Answer::Str(self.str_variation())
        }
    }

    pub fn expected(&self) -> &Answer {
        &self.expected
    }
}

/// LaunchDarkly's Rust server SDK over one fixture: its `TestData` source holding the fixture's
/// flags and segments (parsed from the same JSON into the SDK's own model), analytics events
/// discarded by its `NullEventProcessorBuilder` (flags-sdk sends none), started on a runtime of
/// its own and initialised before this returns.
pub struct TheirSdk {
    pub client: ld_sdk::Client,
    pub context: ld_sdk::Context,
    pub flag_key: &'static str,
    expected: Answer,
    bool_default: bool,
}

impl TheirSdk {
    pub fn new(fixture: &Fixture) -> Result<TheirSdk, String> {
        TheirSdk::new_with(fixture, None)
    }

    /// The SDK with its analytics events on (its default event processor, on its plain-HTTP
    /// transport), sending them to `events_url` (an [`events_sink`]).
    pub fn with_events(fixture: &Fixture, events_url: &str) -> Result<TheirSdk, String> {
        TheirSdk::new_with(fixture, Some(events_url))
    }

    fn new_with(fixture: &Fixture, events_url: Option<&str>) -> Result<TheirSdk, String> {
        let name = fixture.name;
        let expected = Answer::expected(fixture)?;
        let data = ld_sdk::TestData::new();
        for (key, value) in section(&fixture.data, "flags") {
            let flag: ld_sdk::Flag = serde_json::from_value(value.clone())
                .map_err(|e| format!("{name}: LaunchDarkly SDK flag {key}: {e}"))?;
            data.use_preconfigured_flag(flag);
        }
        for (key, value) in section(&fixture.data, "segments") {
            let segment: ld_sdk::Segment = serde_json::from_value(value.clone())
                .map_err(|e| format!("{name}: LaunchDarkly SDK segment {key}: {e}"))?;
            data.use_preconfigured_segment(segment);
        }
        let config = ld_sdk::ConfigBuilder::new("bench-sdk-key").data_source(&data);
        let client = match events_url {
            None => start_ld_client(config, name)?,
            Some(url) => {
                let mut endpoints = ld_sdk::ServiceEndpointsBuilder::new();
                // The SDK wants all three services or none; only events are used here.
                endpoints.relay_proxy(url);
                let transport = launchdarkly_sdk_transport::HyperTransport::new()
                    .map_err(|e| format!("{name}: LaunchDarkly SDK transport: {e}"))?;
                let mut events = ld_sdk::EventProcessorBuilder::new();
                events.transport(transport);
                let config = config
                    .service_endpoints(&endpoints)
                    .event_processor(&events);
                start_built_ld_client(config, name)?
            }
        };
        let context: ld_sdk::Context = serde_json::from_value(fixture.context.clone())
            .map_err(|e| format!("{name}: LaunchDarkly SDK context: {e}"))?;
        Ok(TheirSdk {
            client,
            context,
            flag_key: fixture.flag_key,
            bool_default: bool_default(&expected),
            expected,
        })
    }

    pub fn is_bool(&self) -> bool {
        matches!(self.expected, Answer::Bool(_))
    }

    /// The case's boolean flag through `Client::bool_variation`.
    #[inline]
    pub fn bool_variation(&self) -> bool {
        self.client
            .bool_variation(&self.context, self.flag_key, self.bool_default)
    }

    /// The case's string flag through `Client::str_variation`.
    #[inline]
    pub fn str_variation(&self) -> String {
        self.client
            .str_variation(&self.context, self.flag_key, String::new())
    }

    pub fn answer(&self) -> Answer {
        if self.is_bool() {
            Answer::Bool(self.bool_variation())
        } else {
            Answer::Str(self.str_variation())
        }
    }

    pub fn expected(&self) -> &Answer {
        &self.expected
    }
}

impl Drop for TheirSdk {
    fn drop(&mut self) {
        // Stops the SDK's data source and runtime threads; flags-sdk's client does this itself
        // when its last handle goes.
        self.client.close();
    }
}

/// Builds a LaunchDarkly client from `config` with analytics events discarded, starts it on a
/// runtime of its own and waits for its first data.
pub fn start_ld_client(
    config: ld_sdk::ConfigBuilder,
    name: &str,
) -> Result<ld_sdk::Client, String> {
    start_built_ld_client(
        config.event_processor(&ld_sdk::NullEventProcessorBuilder::new()),
        name,
    )
}

/// [`start_ld_client`] with the events `config` says.
pub fn start_built_ld_client(
    config: ld_sdk::ConfigBuilder,
    name: &str,
) -> Result<ld_sdk::Client, String> {
    let config = config
        .build()
        .map_err(|e| format!("{name}: LaunchDarkly SDK config: {e}"))?;
    let client =
        ld_sdk::Client::build(config).map_err(|e| format!("{name}: LaunchDarkly SDK: {e}"))?;
    client
        .start_with_runtime()
        .map_err(|e| format!("{name}: LaunchDarkly SDK start: {e}"))?;
    // The SDK's own wait is async; its `initialized` flag is the same state, read here.
    let deadline = Instant::now() + INIT_DEADLINE;
    while !client.initialized() {
        if Instant::now() >= deadline {
            return Err(format!("{name}: LaunchDarkly SDK did not initialise"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(client)
}

/// The items of one section (`flags` or `segments`) of a fixture's data.
pub fn section<'a>(data: &'a Value, name: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    data.get(name)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// The default a boolean call passes: never the served value, so a call that fell back to its
/// default cannot pass for an evaluation. (String calls pass the empty string, which allocates
/// nothing and is no case's value.)
fn bool_default(expected: &Answer) -> bool {
    !matches!(expected, Answer::Bool(true))
}

/// An HTTP server on loopback that answers every request with `202 Accepted`, as flagd's
/// `/bulk` does, and reads no further than it must: where the SDKs' analytics events go in the
/// benchmarks. Runs until the process ends; returns its base URL.
pub fn events_sink() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(read_half) = stream.try_clone() else {
                    return;
                };
                let (mut reader, mut writer) = (BufReader::new(read_half), stream);
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err()
                        || writer
                            .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}
