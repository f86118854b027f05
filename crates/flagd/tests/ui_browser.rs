//! The admin web UI (`/ui`) in a real browser, and its protections against crafted requests.
//!
//! Each test starts the real `flagd` binary in PostgreSQL mode on a database of its own, with a
//! bootstrap admin key and an environment `production` ("Production", colour `#d73a49`) made
//! through the admin API. The browser tests run a script of `ui/` with Node: Playwright
//! (`playwright-core`) drives the system's Chromium through the UI by the accessible names of its
//! controls, screenshots every page into `<target>/ui-screenshots/<script>/` and checks each with
//! axe-core. The other tests send the requests a hostile page or a careless client would send
//! (no CSRF token, a wrong one, another origin, a cross-site fetch, a GET of every form's
//! target) and check that nothing changes, and that the session cookie and every answer carry
//! the protections the UI promises.
//!
//! Chromium and the npm packages are what `cargo xtask deps` installs; without them these tests
//! fail and say so rather than pass without having run.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use flags_test_support::process::{FlagdProcess, KillOnDrop, clean_env, collected, flagd_command};
use flags_test_support::{TestDatabase, postgres};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// The bootstrap admin key of the flagd under test.
const ADMIN_KEY: &str = "flagd-ui-test-admin-key";

/// The environment every test works in, as the UI should name it.
const ENV: &str = "production";
const ENV_NAME: &str = "Production";
const ENV_COLOR: &str = "#d73a49";

/// The browser `cargo xtask deps` installs.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The directives of the policy every UI answer carries (more directives may tighten it).
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

/// The session cookie's name over plain HTTP.
const SESSION_COOKIE: &str = "flagd_session";

/// The default session lifetime (`--ui-session-ttl`), 8 hours.
const SESSION_SECONDS: u64 = 8 * 60 * 60;

/// Upper bound for a browser script: only a broken build waits this long.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn the_browser_harness_works() {
    let ui = Ui::start();
    ui.run_script("harness-check.mjs");
}

#[test]
fn the_ui_works_end_to_end_in_a_browser() {
    let ui = Ui::start();
    ui.run_script("scenario.mjs");
}

#[test]
fn posts_without_the_token_or_from_another_site_are_refused() {
    let ui = Ui::start();
    ui.put_flag("f");
    let session = ui
        .sign_in(ADMIN_KEY)
        .unwrap_or_else(|a| a.fail("signing in"));
    let kill = format!("/ui/envs/{ENV}/flags/f/kill");
    let token = session.csrf.as_str();
    let origin = ui.url();
    let refused: [(&str, Pairs<'_>, Pairs<'_>); 4] = [
        ("no _csrf field", vec![("confirm", "1")], vec![]),
        (
            "a wrong _csrf",
            vec![("_csrf", "0000wrong0000"), ("confirm", "1")],
            vec![],
        ),
        (
            "the right _csrf from another origin",
            vec![("_csrf", token), ("confirm", "1")],
            vec![("origin", "http://evil.example")],
        ),
        (
            "the right _csrf in a cross-site request",
            vec![("_csrf", token), ("confirm", "1")],
            vec![("sec-fetch-site", "cross-site")],
        ),
    ];
    for (what, fields, headers) in refused {
        let answer = ui.post_form(&kill, Some(&session.cookie), &fields, &headers);
        assert_eq!(answer.status, 403, "a kill with {what}: {answer}");
        assert_policy(&answer, what);
        assert!(
            answer.body.len() > 20,
            "the 403 page says nothing of why: {answer}"
        );
        assert!(ui.killed().is_empty(), "a kill with {what} was carried out");
    }

    // Without a session at all, a POST is 401, even with a token that belongs to another.
    let answer = ui.post_form(&kill, None, &[("_csrf", token), ("confirm", "1")], &[]);
    assert_eq!(answer.status, 401, "{answer}");
    assert!(ui.killed().is_empty());

    // The same request from this server's own page is carried out: the refusals above were the
    // checks', not a broken route's.
    let answer = ui.post_form(
        &kill,
        Some(&session.cookie),
        &[("_csrf", token), ("confirm", "1")],
        &[("origin", &origin), ("sec-fetch-site", "same-origin")],
    );
    assert_eq!(answer.status, 303, "{answer}");
    assert_eq!(ui.killed(), ["f"]);
}

#[test]
fn the_session_cookie_is_http_only_strict_and_holds_no_key() {
    let ui = Ui::start();
    let session = ui
        .sign_in(ADMIN_KEY)
        .unwrap_or_else(|a| a.fail("signing in"));
    let set_cookie = &session.set_cookie;
    let attributes = cookie_attributes(set_cookie);
    let (name, value) = set_cookie
        .split(';')
        .next()
        .and_then(|pair| pair.trim().split_once('='))
        .unwrap();
    assert_eq!(name, SESSION_COOKIE, "{set_cookie}");
    // 256 random bits take at least 43 characters in any text encoding.
    assert!(value.len() >= 43, "a short session id: {set_cookie}");
    assert!(attributes.contains_key("httponly"), "{set_cookie}");
    assert_eq!(
        attributes.get("samesite").map(String::as_str),
        Some("strict"),
        "{set_cookie}"
    );
    assert_eq!(
        attributes.get("path").map(String::as_str),
        Some("/"),
        "{set_cookie}"
    );
    assert!(
        !attributes.contains_key("secure"),
        "Secure over plain HTTP would keep the browser from sending it: {set_cookie}"
    );
    assert_eq!(
        attributes.get("max-age").map(String::as_str),
        Some(SESSION_SECONDS.to_string().as_str()),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains(ADMIN_KEY), "{set_cookie}");

    // Nor does the key reach the browser in a page.
    for path in [
        format!("/ui/envs/{ENV}/flags"),
        format!("/ui/envs/{ENV}/settings"),
    ] {
        let page = ui.get(&path, Some(&session.cookie));
        assert_eq!(page.status, 200, "{path}: {page}");
        assert!(!page.body.contains(ADMIN_KEY), "{path} shows the admin key");
    }
}

#[test]
fn sign_in_refuses_wrong_and_sdk_keys_and_scoped_keys_see_their_environment_only() {
    let ui = Ui::start();
    for (key, error) in [
        ("flagd-admin-no-such-key", "unknown or revoked key"),
        (ui.sdk_key.as_str(), "an SDK key cannot sign in"),
    ] {
        let answer = ui.sign_in(key).err().unwrap_or_else(|| {
            panic!("signing in with {key:?} succeeded");
        });
        assert!(matches!(answer.status, 401 | 403), "{answer}");
        assert!(
            answer.body.to_lowercase().contains(&error.to_lowercase()),
            "no {error:?} in {answer}"
        );
        assert!(
            answer.body.contains("Admin key"),
            "the form is not shown again"
        );
    }

    let (status, _) = ui.admin(
        reqwest::Method::POST,
        "/environments",
        Some(&json!({"key": "staging", "name": "Staging"})),
    );
    assert_eq!(status, 201);
    let (status, created) = ui.admin(
        reqwest::Method::POST,
        "/environments/staging/keys",
        Some(&json!({"kind": "admin", "name": "staging admin"})),
    );
    assert_eq!(status, 201, "{created}");
    let scoped = ui
        .sign_in(created["key"].as_str().unwrap())
        .unwrap_or_else(|a| a.fail("signing in with a key of one environment"));
    let home = ui.get("/ui", Some(&scoped.cookie));
    assert_eq!(home.status, 303, "{home}");
    assert_eq!(home.header("location"), Some("/ui/envs/staging/flags"));
    let own = ui.get("/ui/envs/staging/flags", Some(&scoped.cookie));
    assert_eq!(own.status, 200, "{own}");
    assert!(
        !own.body.contains("Production"),
        "the switcher offers an environment the key may not use"
    );
    let other = ui.get(&format!("/ui/envs/{ENV}/flags"), Some(&scoped.cookie));
    assert_eq!(other.status, 403, "{other}");
}

#[test]
fn signing_out_or_revoking_the_key_ends_the_session() {
    let ui = Ui::start();
    ui.put_flag("f");
    let list = format!("/ui/envs/{ENV}/flags");
    let session = ui
        .sign_in(ADMIN_KEY)
        .unwrap_or_else(|a| a.fail("signing in"));
    assert_eq!(ui.get(&list, Some(&session.cookie)).status, 200);

    let out = ui.post_form(
        "/ui/sign-out",
        Some(&session.cookie),
        &[("_csrf", &session.csrf)],
        &[],
    );
    assert_eq!(out.status, 303, "{out}");
    assert_eq!(out.header("location"), Some("/ui/sign-in"));
    let cleared = out.header("set-cookie").unwrap_or_default();
    let attributes = cookie_attributes(cleared);
    assert!(
        cleared.starts_with(&format!("{SESSION_COOKIE}="))
            && (attributes.get("max-age").map(String::as_str) == Some("0")
                || attributes.contains_key("expires")),
        "signing out does not clear the cookie: {cleared:?}"
    );
    // The old cookie, replayed, no longer opens anything.
    let again = ui.get(&list, Some(&session.cookie));
    assert_eq!(again.status, 303, "{again}");
    assert_eq!(again.header("location"), Some("/ui/sign-in"));
    let kill = ui.post_form(
        &format!("/ui/envs/{ENV}/flags/f/kill"),
        Some(&session.cookie),
        &[("_csrf", &session.csrf), ("confirm", "1")],
        &[],
    );
    assert_eq!(kill.status, 401, "{kill}");
    assert!(ui.killed().is_empty());

    // A stored admin key's sessions end when it is revoked.
    let (status, created) = ui.admin(
        reqwest::Method::POST,
        "/keys",
        Some(&json!({"name": "ui operator"})),
    );
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap();
    let session = ui
        .sign_in(key)
        .unwrap_or_else(|a| a.fail("signing in with a stored admin key"));
    assert_eq!(ui.get(&list, Some(&session.cookie)).status, 200);
    let (status, revoked) = ui.admin(
        reqwest::Method::DELETE,
        &format!("/keys/{}", created["id"]),
        None,
    );
    assert_eq!(status, 200, "{revoked}");
    let after = ui.get(&list, Some(&session.cookie));
    assert_eq!(
        after.status, 303,
        "a revoked key's session goes on: {after}"
    );
    assert_eq!(after.header("location"), Some("/ui/sign-in"));
    let answer = ui.sign_in(key).err().expect("a revoked key signed in");
    assert!(answer.body.contains("unknown or revoked key"), "{answer}");
}

#[test]
fn every_ui_answer_carries_the_security_headers() {
    let ui = Ui::start();
    ui.put_flag("f");
    let session = ui
        .sign_in(ADMIN_KEY)
        .unwrap_or_else(|a| a.fail("signing in"));
    let cookie = Some(session.cookie.as_str());
    let pages = [
        ("/ui/sign-in".to_owned(), None, 200),
        (format!("/ui/envs/{ENV}/flags"), None, 303),
        (format!("/ui/envs/{ENV}/flags"), cookie, 200),
        (format!("/ui/envs/{ENV}/flags/f"), cookie, 200),
        (format!("/ui/envs/{ENV}/flags/f/kill"), cookie, 200),
        (format!("/ui/envs/{ENV}/flags/f/audit"), cookie, 200),
        (format!("/ui/envs/{ENV}/segments"), cookie, 200),
        (format!("/ui/envs/{ENV}/audit"), cookie, 200),
        (format!("/ui/envs/{ENV}/evaluate"), cookie, 200),
        (format!("/ui/envs/{ENV}/settings"), cookie, 200),
        (format!("/ui/envs/{ENV}/flags/no-such-flag"), cookie, 404),
        ("/ui/envs/no-such-env/flags".to_owned(), cookie, 404),
    ];
    for (path, cookie, status) in &pages {
        let page = ui.get(path, *cookie);
        assert_eq!(page.status, *status, "{path}: {page}");
        assert_policy(&page, path);
        for (header, expected) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(page.header(header), Some(expected), "{header} of {path}");
        }
    }

    // The assets the pages name are cacheable for long (their URLs change with their content).
    let page = ui.get(&format!("/ui/envs/{ENV}/flags"), cookie);
    for (asset, content_type) in [("app.js", "javascript"), ("app.css", "text/css")] {
        let prefix = format!("/ui/assets/{asset}?");
        let at = page
            .body
            .find(&prefix)
            .unwrap_or_else(|| panic!("the flag list does not load {prefix}…"));
        let end = page.body[at..]
            .find('"')
            .map_or(page.body.len(), |e| at + e);
        let url = html_unescape(&page.body[at..end]);
        let answer = ui.get(&url, None);
        assert_eq!(answer.status, 200, "{url}: {answer}");
        let served_as = answer.header("content-type").unwrap_or_default();
        assert!(served_as.contains(content_type), "{url} is {served_as}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        let cache = answer.header("cache-control").unwrap_or_default();
        let max_age: u64 = cache
            .split(',')
            .find_map(|d| d.trim().strip_prefix("max-age="))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(
            max_age >= 24 * 60 * 60 && !cache.contains("no-store"),
            "{url}: Cache-Control {cache:?}"
        );
    }
}

#[test]
fn a_get_never_changes_anything() {
    let ui = Ui::start();
    ui.put_flag("f");
    ui.put_flag("g");
    let (status, _) = ui.admin(
        reqwest::Method::PUT,
        &format!("/environments/{ENV}/flags/g/kill"),
        Some(&json!({})),
    );
    assert_eq!(status, 200);
    let (status, _) = ui.admin(
        reqwest::Method::PUT,
        &format!("/environments/{ENV}/flags/f/overrides/user/alice"),
        Some(&json!({"variation": 1})),
    );
    assert_eq!(status, 200);
    let session = ui
        .sign_in(ADMIN_KEY)
        .unwrap_or_else(|a| a.fail("signing in"));
    let cookie = Some(session.cookie.as_str());
    let before = ui.state();

    // Every form of these pages sent as a GET, its fields (the CSRF token and any confirmation
    // included) in the query, and the routes a GET must only show.
    let mut gets = vec![
        "/ui/sign-out".to_owned(),
        format!(
            "/ui/envs/{ENV}/flags/f/kill?confirm=1&_csrf={}",
            session.csrf
        ),
        format!("/ui/envs/{ENV}/flags/g/unkill?_csrf={}", session.csrf),
    ];
    let mut forms = 0;
    for page in [
        format!("/ui/envs/{ENV}/flags"),
        format!("/ui/envs/{ENV}/flags/f"),
        format!("/ui/envs/{ENV}/flags/g"),
        format!("/ui/envs/{ENV}/settings"),
        format!("/ui/envs/{ENV}/segments"),
    ] {
        let answer = ui.get(&page, cookie);
        assert_eq!(answer.status, 200, "{page}: {answer}");
        for form in post_forms(&answer.body) {
            forms += 1;
            let query: Vec<String> = form
                .fields
                .iter()
                .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
                .collect();
            let action = if form.action.is_empty() {
                page.clone()
            } else {
                form.action.clone()
            };
            let separator = if action.contains('?') { '&' } else { '?' };
            gets.push(format!("{action}{separator}{}", query.join("&")));
        }
    }
    assert!(
        forms >= 5,
        "only {forms} POST forms found on the flag list, the flag pages, settings and segments"
    );
    for path in &gets {
        let answer = ui.get(path, cookie);
        assert!(
            answer.status < 500,
            "GET {path} answered {}: {answer}",
            answer.status
        );
    }
    assert_eq!(
        ui.state(),
        before,
        "the GETs changed something: {:#?}",
        gets
    );
    // The GET of /ui/sign-out did not sign out.
    assert_eq!(
        ui.get(&format!("/ui/envs/{ENV}/flags"), cookie).status,
        200,
        "a GET of /ui/sign-out ended the session"
    );
}

// ------------------------------------------------------------------ the server under test

/// flagd in PostgreSQL mode with the test's environment, and an HTTP client that does not
/// follow redirects (the tests look at them).
struct Ui {
    process: FlagdProcess,
    _db: TestDatabase,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    /// An SDK key of [`ENV`], for the native evaluation API.
    sdk_key: String,
}

/// Form fields or headers: names and values.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// One answer, read whole.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// A signed-in browser session: its cookie, as sent back, and the CSRF token of its forms.
struct Session {
    cookie: String,
    set_cookie: String,
    csrf: String,
}

impl Ui {
    fn start() -> Ui {
        let db = postgres().create_database();
        let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(["--database", db.url(), "--admin-key", ADMIN_KEY]);
        let process = FlagdProcess::spawn(command);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut ui = Ui {
            process,
            _db: db,
            runtime,
            http,
            sdk_key: String::new(),
        };
        ui.create_environment();
        let (status, created) = ui.admin(
            reqwest::Method::POST,
            &format!("/environments/{ENV}/keys"),
            Some(&json!({"kind": "sdk", "name": "ui tests"})),
        );
        assert_eq!(status, 201, "{created}");
        ui.sdk_key = created["key"].as_str().unwrap().to_owned();
        ui
    }

    /// Creates [`ENV`] with its display name and colour.
    fn create_environment(&self) {
        let env = json!({"key": ENV, "name": ENV_NAME, "color": ENV_COLOR});
        let (status, answer) = self.admin(reqwest::Method::POST, "/environments", Some(&env));
        assert_eq!(status, 201, "creating {ENV}: {answer}");
    }

    fn url(&self) -> String {
        self.process.url()
    }

    /// One admin API request with the bootstrap key: the status and the JSON answer (`null`
    /// when there is none).
    fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url()))
            .header("authorization", format!("Bearer {ADMIN_KEY}"));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = self.send(request);
        let json = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        (answer.status, json)
    }

    /// Creates boolean flag `key`, on, serving `true`.
    fn put_flag(&self, key: &str) {
        let flag = json!({
            "key": key, "on": true, "variations": [true, false], "offVariation": 1,
            "fallthrough": {"variation": 0}, "salt": key
        });
        let (status, answer) = self.admin(
            reqwest::Method::PUT,
            &format!("/environments/{ENV}/flags/{key}"),
            Some(&flag),
        );
        assert!(status == 200 || status == 201, "{status} {answer}");
    }

    /// The killed flags of [`ENV`].
    fn killed(&self) -> Vec<String> {
        let (status, answer) = self.admin(
            reqwest::Method::GET,
            &format!("/environments/{ENV}/killed"),
            None,
        );
        assert_eq!(status, 200, "{answer}");
        serde_json::from_value(answer["killed"].clone()).unwrap()
    }

    /// Everything a UI write could change, as the admin API shows it: flags and segments with
    /// their versions, kills, overrides, environments, keys and the audit log.
    fn state(&self) -> Value {
        let mut state = serde_json::Map::new();
        for path in [
            format!("/environments/{ENV}/export"),
            format!("/environments/{ENV}/killed"),
            format!("/environments/{ENV}/flags"),
            format!("/environments/{ENV}/segments"),
            format!("/environments/{ENV}/flags/f/overrides"),
            format!("/environments/{ENV}/audit"),
            "/environments".to_owned(),
            "/keys".to_owned(),
        ] {
            let (status, answer) = self.admin(reqwest::Method::GET, &path, None);
            assert_eq!(status, 200, "{path}: {answer}");
            state.insert(path, answer);
        }
        Value::Object(state)
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.runtime.block_on(async {
            let response = request.send().await.unwrap_or_else(|e| {
                panic!(
                    "a request failed: {e}; flagd's log:\n{}",
                    self.process.log()
                )
            });
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.text().await.unwrap_or_default();
            Answer {
                status,
                headers,
                body,
            }
        })
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut request = self.http.get(format!("{}{path}", self.url()));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        self.send(request)
    }

    /// A form POST (`application/x-www-form-urlencoded`) with `fields` and extra `headers`.
    fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let body: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
            .collect();
        let mut request = self
            .http
            .post(format!("{}{path}", self.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    /// Signs in with `key` through the sign-in form, as a browser would: the form's own
    /// cookies and fields go back with the key. The session, or the answer that refused it.
    fn sign_in(&self, key: &str) -> Result<Session, Box<Answer>> {
        let form = self.get("/ui/sign-in", None);
        if form.status != 200 {
            form.fail("GET /ui/sign-in");
        }
        let before = cookies(&form.headers);
        let mut fields: Vec<(String, String)> = post_forms(&form.body)
            .into_iter()
            .flat_map(|f| f.fields)
            .filter(|(name, _)| name != "key")
            .collect();
        fields.push(("key".to_owned(), key.to_owned()));
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let answer = self.post_form(
            "/ui/sign-in",
            (!before.is_empty()).then_some(before.as_str()),
            &fields,
            &[],
        );
        if answer.status != 303 {
            return Err(Box::new(answer));
        }
        assert_eq!(answer.header("location"), Some("/ui"), "{answer}");
        let set_cookie = answer
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
            .unwrap_or_else(|| panic!("signing in set no {SESSION_COOKIE} cookie: {answer}"))
            .to_owned();
        let cookie = set_cookie.split(';').next().unwrap().trim().to_owned();
        let home = self.get("/ui", Some(&cookie));
        assert_eq!(home.status, 303, "GET /ui/ after signing in: {home}");
        let first = home.header("location").unwrap().to_owned();
        let page = self.get(&first, Some(&cookie));
        assert_eq!(page.status, 200, "{first}: {page}");
        let csrf = post_forms(&page.body)
            .into_iter()
            .flat_map(|f| f.fields)
            .find(|(name, _)| name == "_csrf")
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("no form of {first} carries a _csrf field"));
        Ok(Session {
            cookie,
            set_cookie,
            csrf,
        })
    }

    /// Runs `ui/<script>` with Node against this server, and fails with its output when it
    /// fails. Its screenshots go to `<target>/ui-screenshots/<script name>/`.
    fn run_script(&self, script: &str) {
        // One browser at a time: the scenario's one-second limits should measure flagd and the
        // UI, not two Chromiums sharing a small machine.
        static BROWSER: Mutex<()> = Mutex::new(());
        let _turn = BROWSER.lock().unwrap_or_else(PoisonError::into_inner);
        let modules = third_party_dir().join("ui/node_modules");
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing: run `cargo xtask deps`, which installs Debian's chromium"
        );
        assert!(
            modules.join("playwright-core").is_dir() && modules.join("axe-core").is_dir(),
            "the browser test packages are missing from {}: run `cargo xtask deps`",
            modules.display()
        );
        let stem = script.trim_end_matches(".mjs");
        let shots = target_dir().join("ui-screenshots").join(stem);
        // Old screenshots would pass for this run's.
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        let mut command = Command::new("node");
        clean_env(&mut command);
        command
            .arg(ui_dir().join(script))
            .env("FLAGD_URL", self.url())
            .env("FLAGD_ADMIN_KEY", ADMIN_KEY)
            .env("FLAGD_SDK_KEY", &self.sdk_key)
            .env("FLAGD_ENV", ENV)
            .env("FLAGD_ENV_NAME", ENV_NAME)
            .env("FLAGD_ENV_COLOR", ENV_COLOR)
            .env("CHROMIUM", CHROMIUM)
            .env("SCREENSHOT_DIR", &shots)
            .env("NODE_PATH", &modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run node ({e}): install Node, then run `cargo xtask deps`")
        });
        let stdout = collected(child.stdout.take().unwrap());
        let stderr = collected(child.stderr.take().unwrap());
        let mut child = KillOnDrop(child);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > SCRIPT_TIMEOUT {
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        drop(child);
        // Give the readers a moment to catch the last lines.
        thread::sleep(Duration::from_millis(100));
        let output = format!("{}{}", stdout.lock().unwrap(), stderr.lock().unwrap());
        match status {
            Some(status) if status.success() => println!("{output}"),
            // flagd's log follows: FlagdProcess prints it when a test fails.
            Some(status) => panic!(
                "{script} failed ({status}); screenshots in {}:\n{output}",
                shots.display()
            ),
            None => panic!(
                "{script} did not finish within {SCRIPT_TIMEOUT:?}; screenshots in {}:\n{output}",
                shots.display()
            ),
        }
    }
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Fails the test, showing this answer.
    fn fail(&self, what: &str) -> ! {
        panic!("{what}: {self}")
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = self.body.chars().take(1500).collect();
        write!(f, "{} {:?}: {body}", self.status, self.headers)
    }
}

/// Fails unless `answer` carries a Content-Security-Policy with each of [`CSP`]'s directives as
/// it is there, and nothing that loosens a policy (`unsafe-inline`, `unsafe-eval`, `*`).
fn assert_policy(answer: &Answer, what: &str) {
    let policy = answer
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy: {answer}"));
    let directives: BTreeMap<&str, &str> = policy
        .split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.split_once(' ').unwrap_or((d, "")))
        .collect();
    for required in CSP.split(';') {
        let (name, value) = required.trim().split_once(' ').unwrap();
        assert_eq!(
            directives.get(name).copied(),
            Some(value),
            "{what}: {name} in {policy:?}"
        );
    }
    assert!(
        !policy.contains("unsafe-") && !policy.contains('*'),
        "{what}: a loosened policy {policy:?}"
    );
}

// ------------------------------------------------------------------ reading pages

/// A `<form method="post">` of a page: where it goes and the fields it sends as they are (its
/// hidden inputs, inputs with values, and named buttons).
struct Form {
    action: String,
    fields: Vec<(String, String)>,
}

/// The POST forms of an HTML page. A small reader, enough for server-rendered pages whose
/// attributes are quoted: the pages under test are ours.
fn post_forms(html: &str) -> Vec<Form> {
    let mut forms = Vec::new();
    let mut rest = html;
    while let Some(start) = find_tag(rest, "form") {
        let (attributes, after) = tag_attributes(&rest[start..]);
        let end = after.find("</form").unwrap_or(after.len());
        let inside = &after[..end];
        rest = &after[end..];
        let post = attributes
            .get("method")
            .is_some_and(|m| m.eq_ignore_ascii_case("post"));
        if !post {
            continue;
        }
        let mut fields = Vec::new();
        for tag in ["input", "button"] {
            let mut scan = inside;
            while let Some(at) = find_tag(scan, tag) {
                let (attributes, after) = tag_attributes(&scan[at..]);
                scan = after;
                if let Some(name) = attributes.get("name") {
                    let value = attributes.get("value").cloned().unwrap_or_default();
                    fields.push((name.clone(), value));
                }
            }
        }
        forms.push(Form {
            action: attributes.get("action").cloned().unwrap_or_default(),
            fields,
        });
    }
    forms
}

/// Where the next `<tag` (followed by a space or `>`) starts in `html`.
fn find_tag(html: &str, tag: &str) -> Option<usize> {
    let open = format!("<{tag}");
    let mut from = 0;
    while let Some(at) = html[from..].find(&open) {
        let at = from + at;
        match html[at + open.len()..].chars().next() {
            Some(c) if c.is_whitespace() || c == '>' || c == '/' => return Some(at),
            _ => from = at + open.len(),
        }
    }
    None
}

/// The attributes of the tag that `html` starts with, lower-cased names to unescaped values,
/// and the text after the tag.
fn tag_attributes(html: &str) -> (BTreeMap<String, String>, &str) {
    let mut attributes = BTreeMap::new();
    let name_end = html
        .find(|c: char| c.is_whitespace() || c == '>')
        .unwrap_or(html.len());
    let mut rest = &html[name_end..];
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            return (attributes, rest);
        }
        if let Some(after) = rest.strip_prefix('>') {
            return (attributes, after);
        }
        let name_len = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '>' || c == '/')
            .unwrap_or(rest.len())
            .max(1);
        let name = rest[..name_len].to_ascii_lowercase();
        rest = &rest[name_len..];
        let mut value = String::new();
        if let Some(after) = rest.trim_start().strip_prefix('=') {
            let after = after.trim_start();
            let (raw, next) = match after.chars().next() {
                Some(quote @ ('"' | '\'')) => {
                    let body = &after[1..];
                    let end = body.find(quote).unwrap_or(body.len());
                    (&body[..end], body.get(end + 1..).unwrap_or(""))
                }
                _ => {
                    let end = after
                        .find(|c: char| c.is_whitespace() || c == '>')
                        .unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            value = html_unescape(raw);
            rest = next;
        }
        attributes.insert(name, value);
    }
}

fn html_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The `name=value` pairs of every `Set-Cookie`, as a `Cookie` header sends them back.
fn cookies(headers: &HeaderMap) -> String {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The attributes of a `Set-Cookie` value after its `name=value`: lower-cased names to
/// lower-cased values (empty for flags such as `HttpOnly`).
fn cookie_attributes(set_cookie: &str) -> BTreeMap<String, String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            (
                name.trim().to_ascii_lowercase(),
                value.trim().to_ascii_lowercase(),
            )
        })
        .collect()
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// Cargo's target directory, the parent of this test's scratch directory.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `<target>/third-party`, where `cargo xtask deps` installs the browser test packages.
fn third_party_dir() -> PathBuf {
    target_dir().join("third-party")
}

#[test]
fn the_page_reader_finds_post_forms_and_their_fields() {
    let html = r#"<main><form method="get" action="/ui/x"><input name="q" value="a"></form>
        <form class="k" method="POST" action="/ui/envs/p/flags/f/kill">
          <input type="hidden" name="_csrf" value="t&amp;1">
          <input type=hidden name=confirm value=1><label>x <input name="note"></label>
          <button type="submit" name="op" value="add-rule">Add rule</button><button>Go</button>
        </form><formula></formula><form method='post'><input name='k' value='v'/></form>"#;
    let forms = post_forms(html);
    let seen: Vec<(&str, Vec<(&str, &str)>)> = forms
        .iter()
        .map(|f| {
            let fields = f
                .fields
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            (f.action.as_str(), fields)
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "/ui/envs/p/flags/f/kill",
                vec![
                    ("_csrf", "t&1"),
                    ("confirm", "1"),
                    ("note", ""),
                    ("op", "add-rule")
                ]
            ),
            ("", vec![("k", "v")]),
        ]
    );
    let attributes = cookie_attributes("flagd_session=abc; HttpOnly; SameSite=Strict; Path=/");
    assert_eq!(
        attributes.get("samesite").map(String::as_str),
        Some("strict")
    );
    assert!(attributes.contains_key("httponly"));
}

#[test]
fn the_policy_check_takes_tighter_policies_and_refuses_looser_ones() {
    let answer = |policy: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("content-security-policy", policy.parse().unwrap());
        Answer {
            status: 200,
            headers,
            body: String::new(),
        }
    };
    assert_policy(&answer(CSP), "the policy itself");
    assert_policy(
        &answer(&format!("{CSP}; base-uri 'none'")),
        "a tighter policy",
    );
    for looser in [
        "default-src 'self'; frame-ancestors 'none'",
        "default-src *; frame-ancestors 'none'; form-action 'self'",
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; script-src 'self' 'unsafe-inline'",
    ] {
        let refused = std::panic::catch_unwind(|| assert_policy(&answer(looser), "looser"));
        assert!(refused.is_err(), "{looser} was taken");
    }
}
