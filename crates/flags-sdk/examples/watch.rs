//! Prints one JSON object per line for every event a client receives:
//!
//! ```text
//! {"type":"status","state":"Valid"}
//! {"type":"flag_change","key":"checkout"}
//! {"type":"value_change","key":"checkout","old":false,"new":true}
//! ```
//!
//! `cargo run -p flags-sdk --example watch -- --base-url URL --sdk-key KEY --flag KEY
//! --context JSON`. The first line is the status at start; value changes are for `--flag` and
//! `--context`; flag changes are for every flag. Runs until interrupted, or until the client stops (a
//! rejected key).

use std::io::Write;

use clap::Parser;
use flags_sdk::{Client, Context, RecvError};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// flagd's address.
    #[arg(long, default_value = flags_sdk::DEFAULT_BASE_URL)]
    base_url: String,
    /// The SDK key to present.
    #[arg(long, default_value = "")]
    sdk_key: String,
    /// The flag whose value to watch.
    #[arg(long)]
    flag: String,
    /// The context to evaluate it for, as LaunchDarkly context JSON.
    #[arg(long, default_value = r#"{"kind":"user","key":"watch"}"#)]
    context: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let context_json: Value = serde_json::from_str(&args.context)?;
    let context = Context::from_json(&context_json)?;
    let client = Client::builder(&args.sdk_key)
        .base_url(&args.base_url)
        .build()?;
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    watch(
        &client,
        &args.flag,
        context,
        &mut std::io::stdout(),
        interrupted,
    )
    .await?;
    client.close();
    Ok(())
}

/// Writes a line to `out` for every event of `client` until the client closes or `stop`
/// completes. (Visible to the crate so that tests/watch_example.rs can run it.)
pub(crate) async fn watch(
    client: &Client,
    flag: &str,
    context: Context,
    out: &mut impl Write,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let provider = client.data_source_status_provider();
    let mut statuses = provider.add_status_listener();
    let tracker = client.flag_tracker();
    let mut flags = tracker.add_flag_change_listener();
    let mut values = tracker.add_flag_value_change_listener(flag, context, Value::Null);

    let mut last_state = provider.status().state;
    print(out, "status", &[("state", &json!(last_state.as_str()))])?;
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            biased;
            status = statuses.recv() => match status {
                Ok(status) if status.state != last_state => {
                    last_state = status.state;
                    print(out, "status", &[("state", &json!(last_state.as_str()))])?;
                }
                Ok(_) => {}
                Err(RecvError::Missed(n)) => print(out, "missed", &[("count", &json!(n))])?,
                Err(RecvError::Closed) => break,
            },
            change = flags.recv() => match change {
                Ok(change) => print(out, "flag_change", &[("key", &json!(change.key))])?,
                Err(RecvError::Missed(n)) => print(out, "missed", &[("count", &json!(n))])?,
                Err(RecvError::Closed) => break,
            },
            change = values.recv() => match change {
                Ok(change) => print(
                    out,
                    "value_change",
                    &[
                        ("key", &json!(change.key)),
                        ("old", &change.old_value),
                        ("new", &change.new_value),
                    ],
                )?,
                Err(RecvError::Missed(n)) => print(out, "missed", &[("count", &json!(n))])?,
                Err(RecvError::Closed) => break,
            },
            () = &mut stop => break,
        }
    }
    Ok(())
}

/// Writes an event as one line, with `type` first and the other fields in the order given, as
/// the format promises (a JSON object's own order would be alphabetical).
fn print(out: &mut impl Write, kind: &str, fields: &[(&str, &Value)]) -> std::io::Result<()> {
    let mut line = format!("{{\"type\":{}", json!(kind));
    for (name, value) in fields {
        line.push_str(&format!(",{}:{}", json!(name), value));
    }
    line.push('}');
    writeln!(out, "{line}")
}
