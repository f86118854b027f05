//! The web UI over a root-mode flagd on real PostgreSQL, as a browser without JavaScript uses
//! it (plain HTTP, the session cookie, the CSRF token of the page): a change made through the
//! admin API reaches an open live stream within a second, the evaluate page shows byte for byte
//! what `/v1/evaluate` answers an SDK key of the environment, a segment's form saves (and is
//! refused, with both versions shown, when someone saved first), and a big segment's members
//! file uploads as a form and as the script sends it.
//!
//! Each test makes its own database on `flags_test_support::postgres()` and drops it.

#![allow(clippy::unwrap_used)]

mod root_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flags_store::AdminStore;
use flags_test_support::postgres;
use futures_util::StreamExt;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};
use root_support::*;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "ui-admin";

async fn open(url: &str) -> Arc<dyn AdminStore> {
    flagd::open_database(url).await.unwrap()
}

async fn start_on(url: &str) -> flagd::RunningServer {
    let mut config = flagd::Config::for_tests(Vec::new());
    config.database_url = Some(url.to_owned());
    config.admin_key = Some(ADMIN_KEY.to_owned());
    flagd::start(config).await.unwrap()
}

/// A signed-in browser.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

/// An answer: status, headers, body.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl Browser {
    /// Signs in with the admin key through the form.
    async fn sign_in(base: &str) -> Browser {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = client
            .post(format!("{base}/ui/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[("key", ADMIN_KEY)]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = response
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        assert!(cookie.starts_with("flagd_session="), "{cookie}");
        Browser {
            client,
            base: base.to_owned(),
            cookie,
        }
    }

    async fn read(response: reqwest::Response) -> Page {
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        Browser::read(response).await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(fields))
            .send()
            .await
            .unwrap();
        Browser::read(response).await
    }

    /// The session's CSRF token, as every form of a page carries it.
    async fn csrf(&self) -> String {
        let page = self.get("/ui/envs/production/settings").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        attribute_after(&page.body, r#"name="_csrf" value=""#)
    }
}

/// The attribute value that follows `marker` (up to the next quote).
fn attribute_after(html: &str, marker: &str) -> String {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The text of the element that starts with `open`, unescaped.
fn element_text(html: &str, open: &str) -> String {
    let start = html
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {html}"));
    let start = start + html[start..].find('>').unwrap() + 1;
    let end = start + html[start..].find("</").unwrap();
    html[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// An admin API call with the bootstrap key.
async fn admin(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<u64>,
) -> (StatusCode, Value) {
    let mut request = client
        .request(method, format!("{base}/api/v1{path}"))
        .header("authorization", format!("Bearer {ADMIN_KEY}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    if let Some(version) = if_match {
        request = request.header("if-match", format!("\"{version}\""));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An open `GET /ui/envs/{env}/live`, read event by event.
struct Live {
    inner:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Live {
    async fn open(browser: &Browser, env: &str) -> Live {
        let response = browser
            .client
            .get(format!("{}/ui/envs/{env}/live", browser.base))
            .header("cookie", &browser.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut live = Live {
            inner: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        };
        // The stream answers at once with its retry interval, so it is open from here on.
        assert_eq!(live.next_block().await, "retry: 2000");
        live
    }

    /// The next block of lines (an event, a comment or a field), without its blank line.
    async fn next_block(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return block.trim_end().to_owned();
            }
            let chunk = tokio::time::timeout(DEADLINE, self.inner.next())
                .await
                .expect("nothing on the live stream before the deadline")
                .expect("the live stream ended")
                .unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next `change` event's data.
    async fn next_change(&mut self) -> Value {
        loop {
            let block = self.next_block().await;
            if let Some(data) = block.strip_prefix("event: change\ndata: ") {
                return serde_json::from_str(data).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_anywhere_reach_a_live_page_within_a_second() {
    let db = postgres().create_database();
    let store = open(db.url()).await;
    env_with_key(&*store, "production").await;
    env_with_key(&*store, "staging").await;
    let mut version = put_flag(&*store, "production", "f", bool_flag("f", false)).await;
    put_flag(&*store, "staging", "f", bool_flag("f", false)).await;
    let server = start_on(db.url()).await;
    let base = server.url();
    let browser = Browser::sign_in(&base).await;
    let client = reqwest::Client::new();

    // Not signed in: the sign-in page, not a stream.
    let anonymous = Browser {
        client: browser.client.clone(),
        base: base.clone(),
        cookie: String::new(),
    };
    let page = anonymous.get("/ui/envs/production/live").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/ui/sign-in");
    assert_eq!(
        browser.get("/ui/envs/nowhere/live").await.status,
        StatusCode::NOT_FOUND
    );

    let mut live = Live::open(&browser, "production").await;
    for round in 0..5 {
        // Another environment's change is not this page's.
        let path = "/environments/staging/flags/f/kill";
        for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
            let (status, _) = admin(&client, &base, method, path, None, None).await;
            assert!(status.is_success(), "{status}");
        }

        let started = Instant::now();
        let (status, body) = admin(
            &client,
            &base,
            reqwest::Method::PUT,
            "/environments/production/flags/f",
            Some(bool_flag("f", round % 2 == 0)),
            Some(version),
        )
        .await;
        assert!(status.is_success(), "{status} {body}");
        version = body["version"].as_u64().unwrap();
        let committed = started.elapsed();
        let change = live.next_change().await;
        let heard = started.elapsed() - committed;
        assert_eq!(change, json!({"kind": "flag", "key": "f"}));
        assert!(
            heard < Duration::from_secs(1),
            "heard of the change {heard:?} after its commit"
        );
    }

    // Kills, overrides and segments say what they are.
    let kill = "/environments/production/flags/f/kill";
    let (status, _) = admin(&client, &base, reqwest::Method::PUT, kill, None, None).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        live.next_change().await,
        json!({"kind": "kill", "key": "f"})
    );
    let segment = json!({"key": "s", "included": ["a"]});
    let (status, _) = admin(
        &client,
        &base,
        reqwest::Method::PUT,
        "/environments/production/segments/s",
        Some(segment),
        None,
    )
    .await;
    assert!(status.is_success());
    assert_eq!(
        live.next_change().await,
        json!({"kind": "segment", "key": "s"})
    );

    // The stream ends with the server.
    server.shutdown().await.unwrap();
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(_)) = live.inner.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the live stream outlived the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluate_page_shows_what_the_native_api_answers() {
    let db = postgres().create_database();
    let store = open(db.url()).await;
    let sdk_key = env_with_key(&*store, "production").await;
    let mut targeted = bool_flag("targeted", false);
    targeted["rules"] = json!([{"id": "r1", "variation": 0, "clauses": [
        {"attribute": "email", "op": "endsWith", "values": ["@example.com"]}
    ]}]);
    put_flag(&*store, "production", "targeted", targeted).await;
    put_flag(&*store, "production", "plain", bool_flag("plain", true)).await;
    let server = start_on(db.url()).await;
    let base = server.url();
    let browser = Browser::sign_in(&base).await;
    let client = reqwest::Client::new();

    let page = browser.get("/ui/envs/production/evaluate").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>Evaluate</h1>"), "{}", page.body);
    assert!(page.body.contains(r#"<option value="">All flags</option>"#));
    assert!(!page.body.contains("raw-result"));

    let context = r#"{"kind": "user", "key": "alice", "email": "alice@example.com"}"#;
    for flag in ["", "targeted", "missing"] {
        let path = format!(
            "/ui/envs/production/evaluate?context={}&flag={flag}",
            utf8_percent_encode(context, NON_ALPHANUMERIC)
        );
        let page = browser.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let shown = element_text(&page.body, r#"<pre id="raw-result""#);
        let url = if flag.is_empty() {
            format!("{base}/v1/evaluate")
        } else {
            format!("{base}/v1/evaluate/{flag}")
        };
        let api = client
            .post(url)
            .header("authorization", &sdk_key)
            .header("content-type", "application/json")
            .body(format!(r#"{{"context": {context}}}"#))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(shown, api, "flag {flag:?}");
        let parsed: Value = serde_json::from_str(&shown).unwrap();
        match flag {
            "" => assert_eq!(parsed["flags"]["targeted"]["reason"]["kind"], "RULE_MATCH"),
            "targeted" => assert_eq!(parsed["value"], true),
            _ => assert_eq!(parsed["reason"]["errorKind"], "FLAG_NOT_FOUND"),
        }
    }

    // The same context built from the form's fields answers the same.
    let page = browser
        .get(
            "/ui/envs/production/evaluate?build=1&kind=user&key=alice\
             &attr1=email&value1=alice%40example.com&flag=targeted",
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let shown: Value =
        serde_json::from_str(&element_text(&page.body, r#"<pre id="raw-result""#)).unwrap();
    assert_eq!(shown["value"], true, "{shown}");
    assert_eq!(shown["reason"]["kind"], "RULE_MATCH", "{shown}");

    // A context that is not JSON, or not a context, is refused with the reason, and the text
    // stays in the form.
    let page = browser
        .get("/ui/envs/production/evaluate?context=%7Bkind&flag=")
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("The context is not valid JSON"),
        "{}",
        page.body
    );
    assert!(page.body.contains(">{kind</textarea>"), "{}", page.body);
    let no_key = utf8_percent_encode(r#"{"kind":"user"}"#, NON_ALPHANUMERIC).to_string();
    let page = browser
        .get(&format!("/ui/envs/production/evaluate?context={no_key}"))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("Invalid context"), "{}", page.body);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_form_saves_and_never_overwrites_silently() {
    let db = postgres().create_database();
    let store = open(db.url()).await;
    env_with_key(&*store, "production").await;
    let server = start_on(db.url()).await;
    let base = server.url();
    let browser = Browser::sign_in(&base).await;
    let client = reqwest::Client::new();
    let csrf = browser.csrf().await;
    let url = "/ui/envs/production/segments/beta";

    // Create, then the list shows it.
    let page = browser
        .post(
            "/ui/envs/production/segments",
            &[("_csrf", &csrf), ("key", "beta"), ("name", "Beta testers")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), url);
    let list = browser.get("/ui/envs/production/segments?q=TESTERS").await;
    assert!(list.body.contains("Beta testers"), "{}", list.body);
    assert!(
        list.body.contains("Segments in production"),
        "{}",
        list.body
    );

    // Add rule shows the pending rule, unsaved.
    let page = browser
        .post(
            url,
            &[
                ("_csrf", &csrf),
                ("version", "1"),
                ("included", "alice"),
                ("op", "add-rule"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("<legend>Rule 1</legend>"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"name="rule-0-clause-0-op""#));
    assert!(page.body.contains(">alice</textarea>"));
    let (_, stored) = admin(
        &client,
        &base,
        reqwest::Method::GET,
        "/environments/production/segments/beta",
        None,
        None,
    )
    .await;
    assert_eq!(stored["version"], 1, "{stored}");

    // Save.
    let save = |version: &'static str| {
        vec![
            ("version", version),
            ("included", "alice\r\nbob\r\nalice"),
            ("excluded", "mallory"),
            ("rule-0-kept", "{}"),
            ("rule-0-clause-0-kept", "{}"),
            ("rule-0-clause-0-kind", "user"),
            ("rule-0-clause-0-attribute", "email"),
            ("rule-0-clause-0-op", "endsWith"),
            ("rule-0-clause-0-values", "@example.com"),
            ("op", "save"),
        ]
    };
    let mut fields = save("1");
    fields.push(("_csrf", &csrf));
    let page = browser.post(url, &fields).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let (_, stored) = admin(
        &client,
        &base,
        reqwest::Method::GET,
        "/environments/production/segments/beta",
        None,
        None,
    )
    .await;
    assert_eq!(stored["version"], 2, "{stored}");
    assert_eq!(stored["doc"]["included"], json!(["alice", "bob"]));
    assert_eq!(stored["doc"]["excluded"], json!(["mallory"]));
    assert_eq!(stored["doc"]["name"], "Beta testers");
    assert_eq!(
        stored["doc"]["rules"][0]["clauses"][0],
        json!({"attribute": "email", "op": "endsWith", "values": ["@example.com"], "negate": false})
    );
    let page = browser.get(url).await;
    assert!(
        page.body.contains("Segment beta saved (version 2)."),
        "{}",
        page.body
    );

    // Saving the form shown at version 1 again: refused, both shown, nothing written.
    let page = browser.post(url, &fields).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    assert!(
        page.body.contains("This segment was changed by"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Overwrite with mine"));
    assert!(page.body.contains("Discard mine"));
    let theirs_version = attribute_after(&page.body, r#"name="version" value=""#);
    assert_eq!(theirs_version, "2");
    let doc = attribute_after(&page.body, r#"name="doc" value=""#).replace("&quot;", "\"");
    let mine: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(mine["included"], json!(["alice", "bob"]));

    // Overwrite with mine writes it over theirs.
    let page = browser
        .post(
            url,
            &[
                ("_csrf", &csrf),
                ("op", "overwrite"),
                ("version", "2"),
                ("doc", &doc),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let (_, stored) = admin(
        &client,
        &base,
        reqwest::Method::GET,
        "/environments/production/segments/beta",
        None,
        None,
    )
    .await;
    assert_eq!(stored["version"], 3, "{stored}");

    // Values that do not fit their operator are refused by name, the edit kept.
    let mut fields = save("3");
    fields.retain(|(k, _)| !k.ends_with("-op") && !k.ends_with("-values"));
    fields.push(("rule-0-clause-0-op", "lessThan"));
    fields.push(("rule-0-clause-0-values", "ten"));
    fields.push(("_csrf", &csrf));
    let page = browser.post(url, &fields).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body
            .contains("Rule 1, clause 1: &quot;ten&quot; is not a number"),
        "{}",
        page.body
    );
    assert!(page.body.contains(">ten</textarea>"));

    // Without the token, or from another site: refused, nothing written.
    let page = browser.post(url, &save("3")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let (_, stored) = admin(
        &client,
        &base,
        reqwest::Method::GET,
        "/environments/production/segments/beta",
        None,
        None,
    )
    .await;
    assert_eq!(stored["version"], 3);
    drop(server);
}

/// A `multipart/form-data` body as a browser sends the members form.
fn multipart(boundary: &str, csrf: &str, replace: bool, file: &str) -> String {
    let mut body =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{csrf}\r\n");
    if replace {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"replace\"\r\n\r\ntrue\r\n"
        ));
    }
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"members\"; filename=\"keys.txt\"\r\nContent-Type: text/plain\r\n\r\n{file}\r\n--{boundary}--\r\n"
    ));
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_segments_members_file_uploads_with_and_without_the_script() {
    let db = postgres().create_database();
    let store = open(db.url()).await;
    env_with_key(&*store, "production").await;
    let server = start_on(db.url()).await;
    let base = server.url();
    let browser = Browser::sign_in(&base).await;
    let client = reqwest::Client::new();
    let csrf = browser.csrf().await;
    let page = browser
        .post(
            "/ui/envs/production/segments",
            &[("_csrf", &csrf), ("key", "big"), ("unbounded", "1")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = browser.get("/ui/envs/production/segments/big").await;
    assert!(page.body.contains("Members file"), "{}", page.body);
    assert!(page.body.contains(r#"enctype="multipart/form-data""#));
    let members = "/ui/envs/production/segments/big/members";
    let member = |key: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let path = format!("/environments/production/segments/big/members/{key}");
            let (status, body) =
                admin(&client, &base, reqwest::Method::GET, &path, None, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["member"].as_str().unwrap().to_owned()
        }
    };

    // The form without the script: keys and NDJSON lines mixed.
    let boundary = "----flagdtest7MA4YWxkTrZu0gW";
    let file = "alice\nbob\n{\"op\":\"remove\",\"key\":\"carol\"}\n";
    let response = browser
        .client
        .post(format!("{base}{members}"))
        .header("cookie", &browser.cookie)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart(boundary, &csrf, false, file))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let page = browser.get("/ui/envs/production/segments/big").await;
    assert!(
        page.body
            .contains("2 members added, 1 removed (generation 1)."),
        "{}",
        page.body
    );
    assert!(page.body.contains("Generation 1 is served."));
    assert_eq!(member("alice").await, "included");
    assert_eq!(member("bob").await, "included");

    // The script's upload: the file as the body, the token in a header, replacing everyone.
    let response = browser
        .client
        .post(format!("{base}{members}?replace=true"))
        .header("cookie", &browser.cookie)
        .header("x-csrf-token", &csrf)
        .header("content-type", "application/octet-stream")
        .body("dave\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        answer["message"],
        "1 member added, 0 removed; every earlier member replaced (generation 2)."
    );
    assert_eq!(answer["location"], "/ui/envs/production/segments/big");
    assert_eq!(member("dave").await, "included");
    assert_eq!(member("alice").await, "none");

    // A bad line stores nothing and says which line.
    let response = browser
        .client
        .post(format!("{base}{members}"))
        .header("cookie", &browser.cookie)
        .header("x-csrf-token", &csrf)
        .body("erin\n{\"op\":\"add\",\"key\":\"x\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        answer["message"].as_str().unwrap().contains("line 2"),
        "{answer}"
    );
    assert_eq!(member("erin").await, "none");

    // Without the token, either way: refused before anything is read.
    let response = browser
        .client
        .post(format!("{base}{members}"))
        .header("cookie", &browser.cookie)
        .header("x-csrf-token", "wrong")
        .body("frank\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = browser
        .client
        .post(format!("{base}{members}"))
        .header("cookie", &browser.cookie)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart(boundary, "wrong", false, "frank\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(member("frank").await, "none");
    drop(server);
}
