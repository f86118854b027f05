//! Delivery of one payload to flagd's `/bulk`, as LaunchDarkly's SDKs deliver theirs: a
//! recoverable failure is retried once after a second, with the same payload id, and a 401 or
//! 403 means the key is refused, so nothing more is sent.

use std::time::Duration;

use super::outbox::Payload;

/// Wait before the one retry of a payload.
pub(crate) const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long one attempt may take, answer included: a server that accepts and never answers
/// fails the attempt instead of holding a flush worker for good.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where payloads go.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    pub(crate) http: reqwest::Client,
    /// `{events_url}/bulk`.
    pub(crate) url: String,
    pub(crate) sdk_key: String,
}

/// What became of one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Sent,
    /// Given up: a second recoverable failure, or an answer that retrying cannot change.
    Failed,
    /// The key was refused (401, 403): send nothing more.
    Refused,
}

/// How one attempt went.
enum Attempt {
    Done(Delivery),
    Retry(String),
}

impl Sender {
    /// Delivers `payload`; `on_retry` is called before the retry.
    pub(crate) async fn deliver(&self, payload: &Payload, on_retry: impl FnOnce()) -> Delivery {
        let id = payload_id();
        match self.attempt(payload, &id).await {
            Attempt::Done(delivery) => delivery,
            Attempt::Retry(why) => {
                tracing::warn!(
                    url = self.url,
                    "sending events failed ({why}); retrying once"
                );
                on_retry();
                tokio::time::sleep(RETRY_DELAY).await;
                match self.attempt(payload, &id).await {
                    Attempt::Done(delivery) => delivery,
                    Attempt::Retry(why) => {
                        tracing::warn!(url = self.url, "sending events failed again ({why})");
                        Delivery::Failed
                    }
                }
            }
        }
    }

    async fn attempt(&self, payload: &Payload, id: &str) -> Attempt {
        let request = self
            .http
            .post(&self.url)
            .header("authorization", &self.sdk_key)
            .header("content-type", "application/json")
            .header("x-launchdarkly-event-schema", "4")
            .header("x-launchdarkly-payload-id", id)
            .timeout(ATTEMPT_TIMEOUT)
            .body(payload.body.clone());
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Attempt::Retry(e.to_string()),
        };
        let status = response.status().as_u16();
        match status {
            200..=299 => Attempt::Done(Delivery::Sent),
            401 | 403 => Attempt::Done(Delivery::Refused),
            _ if is_recoverable(status) => {
                Attempt::Retry(format!("{} answered {status}", self.url))
            }
            _ => {
                tracing::warn!(
                    url = self.url,
                    status,
                    "events refused; this payload is dropped"
                );
                Attempt::Done(Delivery::Failed)
            }
        }
    }
}

/// Whether an error status may pass if the request is sent again, as LaunchDarkly's SDKs judge
/// it: 400, 408, 429 and every 5xx.
fn is_recoverable(status: u16) -> bool {
    matches!(status, 400 | 408 | 429) || status >= 500
}

/// A random version-4 UUID, from the operating system's random source: the payload id that lets
/// a receiver drop a retried payload it already has.
fn payload_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No random source: the time still tells payloads apart in practice.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_ids_are_version_4_uuids_and_differ() {
        let (a, b) = (payload_id(), payload_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let parts: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            assert!(parts[2].starts_with('4'), "{id}");
            assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
        }
    }

    #[test]
    fn recoverable_statuses_are_launchdarkly_s() {
        for (status, expected) in [(400, true), (404, false), (408, true), (413, false)] {
            assert_eq!(is_recoverable(status), expected, "{status}");
        }
        assert!(is_recoverable(429) && is_recoverable(503) && !is_recoverable(401));
    }
}
