//! [`HttpAdmin`]: the management commands' operations through a running flagd's admin API
//! (`/api/v1`), whose answers and RFC 9457 problem documents it reads back into what
//! [`StoreAdmin`](super::StoreAdmin) gives for the same data.

use std::time::Duration;

use flags_store::{
    ApiKey, ApiKeyKind, CreatedApiKey, Environment, EnvironmentUpdate, NewApiKey, NewEnvironment,
    StoredFlag,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::admin::{Admin, Failure};

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Path segments keep RFC 3986's unreserved characters and escape the rest, so a key holding
/// `/` or `?` reaches the server as one segment (which then refuses it by name).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// [`Admin`] over the admin API of the flagd at a base URL, with an admin key.
pub struct HttpAdmin {
    client: reqwest::Client,
    /// `http://host:port/api/v1`, without a trailing slash.
    api: String,
    key: String,
}

impl HttpAdmin {
    /// A client of the flagd at `url` (`http://host:8013`, with or without `/api/v1`),
    /// presenting the admin key `key`. Only `http://` URLs: this build has no TLS client.
    pub fn new(url: &str, key: &str) -> Result<HttpAdmin, Failure> {
        let trimmed = url.trim().trim_end_matches('/');
        let base = trimmed.strip_suffix("/api/v1").unwrap_or(trimmed);
        let scheme = base.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("http") => {}
            Some("https") => {
                return Err(Failure::Other(format!(
                    "--admin-url {url}: this build reaches the admin API over http:// only \
                     (no TLS client); use an http:// address, or --database"
                )));
            }
            _ => {
                return Err(Failure::Other(format!(
                    "--admin-url {url}: expected an http:// URL such as http://127.0.0.1:8013"
                )));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| Failure::Other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(HttpAdmin {
            client,
            api: format!("{base}/api/v1"),
            key: key.to_owned(),
        })
    }

    /// Sends one request and reads a JSON answer of a success status into `T`, or the problem
    /// document of a failure into a [`Failure`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<T, Failure> {
        let body = body.map(|body| ("application/json", body));
        self.send(method, path, body, if_match).await
    }

    /// [`HttpAdmin::call`] with a body of any JSON media type (`(media type, body)`).
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, &Value)>,
        if_match: Option<u64>,
    ) -> Result<T, Failure> {
        let url = format!("{}{path}", self.api);
        let mut request = self
            .client
            .request(method, &url)
            .bearer_auth(&self.key)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some((media_type, body)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, media_type)
                .body(body.to_string());
        }
        if let Some(version) = if_match {
            request = request.header(reqwest::header::IF_MATCH, format!("\"{version}\""));
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Other(format!("cannot reach flagd at {url}: {}", chain(&e))))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            Failure::Other(format!(
                "cannot read flagd's answer from {url}: {}",
                chain(&e)
            ))
        })?;
        if !status.is_success() {
            return Err(problem_failure(status, &bytes, &url));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Other(format!(
                "unexpected answer from {url} (HTTP {}): {e}",
                status.as_u16()
            ))
        })
    }
}

/// An error and its sources, `outer: inner`, without repeating a source its outer message
/// already ends with.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The members of a problem document that say what went wrong.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProblemDocument {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    detail: String,
    current_version: Option<u64>,
}

/// The [`Failure`] an unsuccessful answer stands for.
fn problem_failure(status: StatusCode, body: &[u8], url: &str) -> Failure {
    let Ok(problem) = serde_json::from_slice::<ProblemDocument>(body) else {
        // Not the admin API talking: a file-mode flagd, a proxy, another server.
        return Failure::Other(format!(
            "{url} answered HTTP {} without a problem document; is --admin-url a flagd \
             serving --database?",
            status.as_u16()
        ));
    };
    let kind = problem
        .kind
        .strip_prefix("urn:flagd:problem:")
        .unwrap_or("");
    match kind {
        "not-found" => Failure::NotFound(problem.detail),
        "version-conflict" | "precondition-failed" | "precondition-required" => Failure::Conflict {
            current: problem.current_version,
        },
        "unauthorized" | "forbidden" => Failure::Other(format!(
            "the admin API refused the key (HTTP {}): {}",
            status.as_u16(),
            problem.detail
        )),
        "no-route" => Failure::Other(format!(
            "{url}: the admin API has no such path; is this flagd older than this command?"
        )),
        _ => Failure::Other(problem.detail),
    }
}

/// `/segment` for a key.
fn segment(text: &str) -> String {
    format!("/{}", utf8_percent_encode(text, SEGMENT))
}

/// The `items` of a list answer.
#[derive(Debug, Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

/// The answer of creating a key: the key, and its secret under `key`.
#[derive(Debug, Deserialize)]
struct Created {
    #[serde(flatten)]
    stored: ApiKey,
    key: String,
}

#[async_trait::async_trait]
impl Admin for HttpAdmin {
    async fn create_environment(&self, new: &NewEnvironment) -> Result<Environment, Failure> {
        let mut body = json!({"key": new.key, "name": new.name});
        if let Some(color) = &new.color {
            body["color"] = json!(color);
        }
        self.call(Method::POST, "/environments", Some(&body), None)
            .await
    }

    async fn update_environment(
        &self,
        key: &str,
        update: &EnvironmentUpdate,
    ) -> Result<Environment, Failure> {
        // A merge patch: members left out are kept, `null` removes the colour.
        let mut patch = json!({});
        if let Some(name) = &update.name {
            patch["name"] = json!(name);
        }
        if let Some(color) = &update.color {
            patch["color"] = json!(color);
        }
        let path = format!("/environments{}", segment(key));
        let body = ("application/merge-patch+json", &patch);
        self.send(Method::PATCH, &path, Some(body), None).await
    }

    async fn list_environments(&self) -> Result<Vec<Environment>, Failure> {
        let list: Items<Environment> = self.call(Method::GET, "/environments", None, None).await?;
        Ok(list.items)
    }

    async fn create_key(&self, new: &NewApiKey) -> Result<CreatedApiKey, Failure> {
        let body = json!({"name": new.name, "kind": new.kind.as_str()});
        let path = match (&new.env, new.kind) {
            (Some(env), _) => format!("/environments{}/keys", segment(env)),
            (None, ApiKeyKind::Admin) => "/keys".to_owned(),
            (None, ApiKeyKind::Sdk) => {
                return Err(Failure::Other(
                    "an SDK key selects one environment; name it with --env".to_owned(),
                ));
            }
        };
        let created: Created = self.call(Method::POST, &path, Some(&body), None).await?;
        Ok(CreatedApiKey {
            key: created.stored,
            secret: created.key,
        })
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, Failure> {
        let list: Items<ApiKey> = self.call(Method::GET, "/keys", None, None).await?;
        Ok(list.items)
    }

    async fn revoke_key(&self, id: u64) -> Result<ApiKey, Failure> {
        self.call(Method::DELETE, &format!("/keys/{id}"), None, None)
            .await
    }

    async fn get_flag(&self, env: &str, key: &str) -> Result<StoredFlag, Failure> {
        let path = format!("/environments{}/flags{}", segment(env), segment(key));
        self.call(Method::GET, &path, None, None).await
    }

    async fn list_flags(&self, env: &str) -> Result<Vec<StoredFlag>, Failure> {
        let path = format!("/environments{}/flags", segment(env));
        let list: Items<StoredFlag> = self.call(Method::GET, &path, None, None).await?;
        Ok(list.items)
    }

    async fn put_flag(
        &self,
        env: &str,
        key: &str,
        doc: Value,
        expected: Option<u64>,
    ) -> Result<StoredFlag, Failure> {
        let path = format!("/environments{}/flags{}", segment(env), segment(key));
        self.call(Method::PUT, &path, Some(&doc), expected).await
    }

    async fn set_killed(&self, env: &str, key: &str, killed: bool) -> Result<bool, Failure> {
        #[derive(Deserialize)]
        struct KillState {
            changed: bool,
        }
        let path = format!("/environments{}/flags{}/kill", segment(env), segment(key));
        let method = if killed { Method::PUT } else { Method::DELETE };
        let state: KillState = self.call(method, &path, None, None).await?;
        Ok(state.changed)
    }

    async fn killed_flags(&self, env: &str) -> Result<Vec<String>, Failure> {
        #[derive(Deserialize)]
        struct Killed {
            killed: Vec<String>,
        }
        let path = format!("/environments{}/killed", segment(env));
        let list: Killed = self.call(Method::GET, &path, None, None).await?;
        Ok(list.killed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_may_name_the_api_or_not() {
        for url in [
            "http://127.0.0.1:8013",
            "http://127.0.0.1:8013/",
            "http://127.0.0.1:8013/api/v1",
            "http://127.0.0.1:8013/api/v1/",
        ] {
            let admin = HttpAdmin::new(url, "k").unwrap();
            assert_eq!(admin.api, "http://127.0.0.1:8013/api/v1", "{url}");
        }
        let https = HttpAdmin::new("https://flagd.example", "k").err().unwrap();
        assert!(https.to_string().contains("http:// only"), "{https}");
        let bare = HttpAdmin::new("127.0.0.1:8013", "k").err().unwrap();
        assert!(
            bare.to_string().contains("expected an http:// URL"),
            "{bare}"
        );
    }

    #[test]
    fn keys_stay_one_path_segment() {
        assert_eq!(segment("prod-1.a_b~"), "/prod-1.a_b~");
        assert_eq!(segment("a/b?c"), "/a%2Fb%3Fc");
    }

    #[test]
    fn problem_documents_become_failures() {
        let url = "http://h/api/v1/x";
        let check = |status: u16, body: Value| {
            problem_failure(
                StatusCode::from_u16(status).unwrap(),
                body.to_string().as_bytes(),
                url,
            )
        };
        assert_eq!(
            check(
                404,
                json!({"type": "urn:flagd:problem:not-found", "detail": "environment \"s\" not found"})
            ),
            Failure::NotFound("environment \"s\" not found".to_owned())
        );
        assert_eq!(
            check(
                412,
                json!({"type": "urn:flagd:problem:precondition-failed", "detail": "x", "currentVersion": 4})
            ),
            Failure::Conflict { current: Some(4) }
        );
        assert_eq!(
            check(
                428,
                json!({"type": "urn:flagd:problem:precondition-required", "detail": "x", "currentVersion": 2})
            ),
            Failure::Conflict { current: Some(2) }
        );
        assert_eq!(
            check(
                400,
                json!({"type": "urn:flagd:problem:invalid", "detail": "fallthrough.variation: out of range"})
            ),
            Failure::Other("fallthrough.variation: out of range".to_owned())
        );
        let refused = check(
            401,
            json!({"type": "urn:flagd:problem:unauthorized", "detail": "unknown or revoked key"}),
        );
        assert_eq!(
            refused.to_string(),
            "the admin API refused the key (HTTP 401): unknown or revoked key"
        );
        let elsewhere = problem_failure(StatusCode::NOT_FOUND, b"not found", url);
        assert!(
            elsewhere.to_string().contains("without a problem document"),
            "{elsewhere}"
        );
    }
}
