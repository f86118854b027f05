//! The webhook exporter: each batch is one signed JSON `POST`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use flags_events::Record;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::endpoint::{hex, origin, sha256_hex};
use crate::exporter::{ExportError, Exporter};

/// The header that carries the body's signature, as GitHub names it, so receivers written for
/// GitHub's webhooks verify flagd's unchanged.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The header that identifies a delivery: the lowercase hex SHA-256 of the body. A retried
/// batch has the same body and so the same key, which a receiver can use to drop a delivery
/// it has already processed (when its answer was lost on the way back).
pub const DELIVERY_HEADER: &str = "x-flagd-delivery";

/// Settings of the webhook exporter (`kind: webhook` in `events.exporters`).
///
/// ```yaml
/// events:
///   exporters:
///     - kind: webhook
///       url: http://collector.internal:8080/flagd
///       secret: ${WEBHOOK_SECRET}
///       meta: {environment: production}
///       headers: {Authorization: Bearer abc}
/// ```
///
/// Each batch is one `POST` of `{"meta":{...},"events":[...records...]}` with
/// `Content-Type: application/json`, the [`DELIVERY_HEADER`], and, when `secret` is set,
/// `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256 of the exact body, keyed by the
/// secret>`. Any 2xx answer delivers the batch. 408, 429, 5xx, a timeout or a failed
/// connection are retried by the scheduler (with its backoff); any other answer drops the
/// batch. Redirects are not followed (they would turn the `POST` into a `GET`): configure the
/// final URL. Only `http://` URLs: this build has no TLS.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where to `POST`. Required.
    pub url: String,
    /// The key of the body's HMAC-SHA256 signature. Optional; never shown in logs.
    #[serde(default)]
    pub secret: Option<String>,
    /// Strings sent as the body's `meta` object with every batch (the environment, the
    /// instance). Default empty.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// How long one `POST` may take, connecting included, before it fails as retryable, in
    /// milliseconds. Default 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra request headers (an `Authorization` the receiver wants). Default none. Their values
    /// are never shown in logs.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl WebhookSettings {
    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> WebhookSettings {
        WebhookSettings {
            url: url.into(),
            secret: None,
            meta: BTreeMap::new(),
            timeout_ms: default_timeout_ms(),
            headers: BTreeMap::new(),
        }
    }

    /// The [`Exporter::name`] of the exporter these settings build: `webhook:` and the URL's
    /// scheme, host and port (its path may hold a token), then `#` and the first 8 hex digits
    /// of the whole URL's SHA-256, so two webhooks on one host have names (and spools) of
    /// their own.
    pub fn name(&self) -> String {
        format!(
            "webhook:{}#{}",
            origin(&self.url),
            &sha256_hex(self.url.as_bytes())[..8]
        )
    }
}

// By hand: the secret, header values and the URL's path (some services put a token there)
// never reach a log.
impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &origin(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("meta", &self.meta)
            .field("timeout_ms", &self.timeout_ms)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Posts batches of records to an HTTP endpoint.
pub struct WebhookExporter {
    name: String,
    url: reqwest::Url,
    client: reqwest::Client,
    secret: Option<Hmac<Sha256>>,
    meta: BTreeMap<String, String>,
}

impl fmt::Debug for WebhookExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookExporter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl WebhookExporter {
    /// Checks the settings and builds the HTTP client; nothing is sent yet.
    ///
    /// Every error is [`ExportError::Permanent`]: a URL that is not `http://`, a header that
    /// is not valid HTTP.
    pub fn new(settings: WebhookSettings) -> Result<WebhookExporter, ExportError> {
        let shown = origin(&settings.url);
        let invalid = |why: String| ExportError::Permanent(format!("webhook exporter: {why}"));
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| invalid(format!("invalid url {shown}: {e}")))?;
        if url.scheme() != "http" {
            return Err(invalid(format!(
                "url {shown}: only http:// is supported (this build has no TLS)"
            )));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("invalid header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("invalid value for header {name}")))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("flagd/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let secret = match &settings.secret {
            Some(secret) => Some(
                // HMAC takes keys of any length; the error type exists for fixed-size MACs.
                Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .map_err(|e| invalid(format!("unusable secret: {e}")))?,
            ),
            None => None,
        };
        Ok(WebhookExporter {
            name: settings.name(),
            url,
            client,
            secret,
            meta: settings.meta,
        })
    }
}

#[async_trait]
impl Exporter for WebhookExporter {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_bulk(&self) -> bool {
        false
    }

    /// One `POST`; no retries here, the scheduler offers a failed batch again with backoff.
    async fn export(&self, records: &[Record]) -> Result<(), ExportError> {
        if records.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_vec(&Body {
            meta: &self.meta,
            events: records,
        })
        .map_err(|e| {
            ExportError::Permanent(format!("webhook exporter: cannot encode the batch: {e}"))
        })?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, sha256_hex(&body));
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let response = request.body(body).send().await.map_err(|e| {
            // A request that could not even be built will not build next time either.
            if e.is_builder() {
                ExportError::Permanent(format!("webhook exporter: {e}"))
            } else {
                ExportError::Retryable(format!(
                    "webhook exporter: posting to {}: {}",
                    self.name,
                    without_url(&e)
                ))
            }
        })?;
        classify(response.status())
    }
}

/// What is posted.
#[derive(Serialize)]
struct Body<'a> {
    meta: &'a BTreeMap<String, String>,
    events: &'a [Record],
}

/// `sha256=<lowercase hex HMAC-SHA256 of body>`.
fn signature(secret: &Hmac<Sha256>, body: &[u8]) -> String {
    let mut mac = secret.clone();
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Sorts an answer: 2xx delivered; 408 (request timeout), 429 (too many requests) and 5xx are
/// the receiver asking to be tried again; anything else (4xx, an unfollowed redirect) would be
/// answered the same way next time.
fn classify(status: StatusCode) -> Result<(), ExportError> {
    if status.is_success() {
        return Ok(());
    }
    let message = format!("webhook exporter: the receiver answered {status}");
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Err(ExportError::Retryable(message))
    } else {
        Err(ExportError::Permanent(message))
    }
}

/// `e`'s message without the URL reqwest puts in it, whose path may hold a token.
fn without_url(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        message = message.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn default_timeout_ms() -> u64 {
    10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_by_what_a_retry_can_change() {
        let cases = [
            (200, Some(true)),
            (202, Some(true)),
            (204, Some(true)),
            (408, Some(false)),
            (429, Some(false)),
            (500, Some(false)),
            (503, Some(false)),
            (400, None),
            (401, None),
            (404, None),
            (413, None),
            (301, None),
        ];
        for (code, expected) in cases {
            let outcome = classify(StatusCode::from_u16(code).unwrap());
            let seen = match outcome {
                Ok(()) => Some(true),
                Err(e) if e.is_retryable() => Some(false),
                Err(_) => None,
            };
            assert_eq!(seen, expected, "{code}");
        }
    }

    #[test]
    fn the_signature_is_github_s() {
        // The example of GitHub's webhook documentation.
        let key = Hmac::<Sha256>::new_from_slice(b"It's a Secret to Everybody").unwrap();
        assert_eq!(
            signature(&key, b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn neither_the_secret_nor_header_values_nor_the_path_are_shown() {
        let settings: WebhookSettings = serde_json::from_str(
            r#"{"url":"http://h:1/T0/tok3n","secret":"s3cret","headers":{"Authorization":"Bearer b34rer"}}"#,
        )
        .unwrap();
        let debug = format!("{settings:?}");
        for secret in ["s3cret", "b34rer", "tok3n"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let exporter = WebhookExporter::new(settings).unwrap();
        let name = exporter.name();
        assert!(name.starts_with("webhook:http://h:1#"), "{name}");
        assert_eq!(name.len(), "webhook:http://h:1#".len() + 8, "{name}");
        let other = WebhookSettings::new("http://h:1/another/path");
        assert_ne!(other.name(), name, "two webhooks on one host");
        assert!(!format!("{exporter:?}").contains("s3cret"));
    }

    #[test]
    fn invalid_settings_are_refused_at_once() {
        for json in [
            r#"{"url":"https://h/x"}"#,
            r#"{"url":"not a url"}"#,
            r#"{"url":"http://h","headers":{"bad name":"v"}}"#,
            r#"{"url":"http://h","headers":{"X":"line\nbreak"}}"#,
        ] {
            let settings: WebhookSettings = serde_json::from_str(json).unwrap();
            let error = WebhookExporter::new(settings).unwrap_err();
            assert!(!error.is_retryable(), "{json}: {error}");
        }
        assert!(
            serde_json::from_str::<WebhookSettings>(r#"{"url":"http://h","timeout":1}"#).is_err()
        );
    }
}
