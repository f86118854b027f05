//! The web UI's flag pages over HTTP, without a browser: flagd in PostgreSQL mode on a
//! database of its own, driven as a browser without a script drives it (forms posted with the
//! session cookie and CSRF token, redirects read, not followed). A flag is created through the
//! UI, a rule with two clauses and a 50/50 rollout is added through the targeting form's own
//! fields, the stored document is read back through the admin API, a save that meets a newer
//! version gets the conflict page, and the audit page shows the overwrite path by path.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use flags_store::{Actor, AdminStore, ApiKeyKind, NewApiKey};
use flags_test_support::postgres;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "ui-pages-admin";

/// A browser without a script: one session cookie, no redirects followed.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

/// An answer: status, `Location`, body.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Browser {
    async fn sign_in(base: &str) -> Browser {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let response = client
            .post(format!("{base}/ui/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(&[("key", ADMIN_KEY)]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_owned();
        assert!(cookie.starts_with("flagd_session="), "{cookie}");
        Browser {
            client,
            base: base.to_owned(),
            cookie,
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
        Page::read(response).await
    }

    async fn post(&self, path: &str, fields: &[(String, String)]) -> Page {
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("origin", &self.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(&pairs))
            .send()
            .await
            .unwrap();
        Page::read(response).await
    }
}

impl Page {
    async fn read(response: reqwest::Response) -> Page {
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Page {
            status,
            location,
            body: response.text().await.unwrap(),
        }
    }

    /// The fields a browser submits with the form whose start tag contains `marker`.
    fn form(&self, marker: &str) -> Vec<(String, String)> {
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no form {marker} in:\n{}", self.body));
        let form = &self.body[start..];
        let end = form.find("</form>").unwrap();
        submitted(&form[..end])
    }
}

fn encode(pairs: &[(&str, &str)]) -> String {
    let part = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    pairs
        .iter()
        .map(|(n, v)| format!("{}={}", part(n), part(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Sets field `name` (adding it when absent).
fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    fields.retain(|(n, _)| n != name);
    fields.push((name.to_owned(), value.to_owned()));
}

fn with(fields: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut fields = fields.to_vec();
    set(&mut fields, name, value);
    fields
}

/// What a browser submits for a form's markup: inputs (checked boxes only), textareas and
/// each select's chosen option (its first when none is chosen), with entities decoded and the
/// newline after `<textarea>` dropped, as an HTML parser does.
fn submitted(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        let Some(close) = rest.find('>') else { break };
        let tag = &rest[..close];
        rest = &rest[close + 1..];
        let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
        let attrs = attributes(&tag[name_end..]);
        let attr = |name: &str| {
            attrs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let Some(name) = attr("name") else { continue };
        match &tag[..name_end] {
            "input" => match attr("type").as_deref() {
                Some("checkbox" | "radio") if attr("checked").is_none() => {}
                Some("submit" | "button") => {}
                _ => out.push((name, attr("value").unwrap_or_default())),
            },
            "textarea" => {
                let end = rest.find("</textarea>").unwrap();
                let text = unescape(&rest[..end]);
                out.push((name, text.strip_prefix('\n').unwrap_or(&text).to_owned()));
            }
            "select" => {
                let end = rest.find("</select>").unwrap();
                let mut chosen = None;
                for option in rest[..end].split("<option").skip(1) {
                    let close = option.find('>').unwrap();
                    let attrs = attributes(&option[..close]);
                    let value = attrs
                        .iter()
                        .find(|(n, _)| n == "value")
                        .map(|(_, v)| v.clone());
                    let value = value.unwrap_or_default();
                    if attrs.iter().any(|(n, _)| n == "selected") {
                        chosen = Some(value);
                        break;
                    }
                    chosen.get_or_insert(value);
                }
                out.push((name, chosen.unwrap_or_default()));
            }
            _ => {}
        }
    }
    out
}

fn attributes(text: &str) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = rest[..end].to_owned();
        rest = &rest[end..];
        if let Some(quoted) = rest.strip_prefix("=\"") {
            let close = quoted.find('"').unwrap();
            attrs.push((name, unescape(&quoted[..close])));
            rest = &quoted[close + 1..];
        } else {
            attrs.push((name, String::new()));
        }
        rest = rest.trim_start();
    }
    attrs
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
}

/// The stored flag, through the admin API.
async fn stored(client: &reqwest::Client, base: &str, key: &str) -> Value {
    let response = client
        .get(format!("{base}/api/v1/environments/production/flags/{key}"))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_is_targeted_through_the_form_and_a_conflict_is_never_overwritten_silently() {
    let db = postgres().create_database();
    let mut config = flagd::Config::for_tests(Vec::new());
    config.database_url = Some(db.url().to_owned());
    config.admin_key = Some(ADMIN_KEY.to_owned());
    let server = flagd::start(config).await.unwrap();
    let base = server.url();
    let store: Arc<dyn AdminStore> = flagd::open_database(db.url()).await.unwrap();
    let alice = store
        .create_api_key(
            &Actor::named("test"),
            &NewApiKey {
                name: "alice".to_owned(),
                kind: ApiKeyKind::Admin,
                env: None,
            },
        )
        .await
        .unwrap()
        .secret;

    let browser = Browser::sign_in(&base).await;
    let home = browser.get("/ui").await;
    let csrf = field(&home.form("action=\"/ui/envs\""), "_csrf").to_owned();
    let token = |fields: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut all = vec![("_csrf".to_owned(), csrf.clone())];
        all.extend(
            fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        all
    };
    let page = browser
        .post(
            "/ui/envs",
            &token(&[("key", "production"), ("name", "Production")]),
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);

    // Create the flag through the list's form: it leads to the flag's page.
    let page = browser
        .post(
            "/ui/envs/production/flags",
            &token(&[
                ("key", "checkout"),
                ("name", "New checkout"),
                ("kind", "boolean"),
            ]),
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let detail = "/ui/envs/production/flags/checkout";
    assert_eq!(page.location.as_deref(), Some(detail));
    let page = browser.get(detail).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>New checkout</h1>"), "{}", page.body);
    assert!(page.body.contains("data-live-key=\"checkout\""));
    assert!(
        page.body.contains("Flag checkout created"),
        "the flash is shown once"
    );

    // Add rule, then Add clause: each shows the form again with the edit, unsaved.
    let form = page.form("id=\"targeting\"");
    let page = browser.post(detail, &with(&form, "op", "add-rule")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<legend>Rule 1</legend>"));
    assert!(page.body.contains("Not saved yet"));
    let form = page.form("id=\"targeting\"");
    let page = browser
        .post(detail, &with(&form, "op", "rules.0.add-clause"))
        .await;
    assert!(
        page.body.contains("<legend>Clause 2</legend>"),
        "{}",
        page.body
    );
    assert_eq!(
        stored(&browser.client, &base, "checkout").await["version"],
        1,
        "nothing is saved before Save changes"
    );

    // Fill in the two clauses and a 50/50 rollout; a total other than 100% is refused first.
    let mut form = page.form("id=\"targeting\"");
    for (name, value) in [
        ("rules.0.description", "Staff and gold customers"),
        ("rules.0.clauses.0.attribute", "email"),
        ("rules.0.clauses.0.op", "endsWith"),
        ("rules.0.clauses.0.values", "@example.com\r\n@example.org"),
        ("rules.0.clauses.1.contextKind", "org"),
        ("rules.0.clauses.1.attribute", "tier"),
        ("rules.0.clauses.1.op", "in"),
        ("rules.0.clauses.1.values", "gold\r\nplatinum"),
        ("rules.0.serve", "rollout"),
        ("rules.0.weight.0", "50"),
        ("rules.0.weight.1", "49.5"),
        ("op", "save"),
    ] {
        set(&mut form, name, value);
    }
    let page = browser.post(detail, &form).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.body
            .contains("Rule 1: the weights add up to 99.5%, not 100%."),
        "{}",
        page.body
    );
    set(&mut form, "rules.0.weight.1", "50");
    let page = browser.post(detail, &form).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some(detail));

    let flag = stored(&browser.client, &base, "checkout").await;
    assert_eq!(flag["version"], 2);
    let rule = &flag["doc"]["rules"][0];
    let id = rule["id"].as_str().unwrap();
    assert_eq!(
        *rule,
        json!({
            "id": id,
            "description": "Staff and gold customers",
            "clauses": [
                {"contextKind": "user", "attribute": "email", "op": "endsWith",
                 "values": ["@example.com", "@example.org"]},
                {"contextKind": "org", "attribute": "tier", "op": "in",
                 "values": ["gold", "platinum"]},
            ],
            "rollout": {"variations": [
                {"variation": 0, "weight": 50_000},
                {"variation": 1, "weight": 50_000},
            ]},
        })
    );
    assert_eq!(
        flag["doc"]["salt"], "checkout",
        "fields the form does not show are kept"
    );

    // Someone else turns the flag on while the page is open at version 2.
    let page = browser.get(detail).await;
    assert!(
        page.body
            .contains("Saved checkout in Production: now version 2.")
    );
    let mut mine = page.form("id=\"targeting\"");
    let mut theirs = flag["doc"].clone();
    theirs["on"] = json!(true);
    let response = browser
        .client
        .put(format!(
            "{base}/api/v1/environments/production/flags/checkout"
        ))
        .header("authorization", format!("Bearer {alice}"))
        .header("if-match", "\"2\"")
        .header("content-type", "application/json")
        .body(theirs.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A kill since then changes no version: the conflict still names who made theirs.
    let page = browser
        .post(
            &format!("{detail}/kill"),
            &token(&[("confirm", "1"), ("back", detail)]),
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location.as_deref(),
        Some(detail),
        "back to the flag's page"
    );

    set(&mut mine, "rules.0.description", "Only staff");
    set(&mut mine, "op", "save");
    let page = browser.post(detail, &mine).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    let body = &page.body;
    assert!(
        body.contains("This flag was changed by <strong>alice</strong> at"),
        "{body}"
    );
    assert!(body.contains("while you were editing"));
    assert!(body.contains("Theirs (version 3)"), "{body}");
    assert!(body.contains(">Yours</h2>"));
    assert!(
        body.contains("<code>on</code>"),
        "the diff names the field: {body}"
    );
    assert!(body.contains("<code>rules[0].description</code>"), "{body}");
    assert!(body.contains("&quot;Only staff&quot;"));
    assert!(body.contains(&format!("href=\"{detail}\">Discard mine</a>")));
    let stored_now = stored(&browser.client, &base, "checkout").await;
    assert_eq!(stored_now["version"], 3, "the conflict saved nothing");
    assert_eq!(
        stored_now["doc"]["rules"][0]["description"],
        "Staff and gold customers"
    );

    // Overwrite with mine: saved at their version, so nothing of theirs is lost unseen.
    let overwrite = page.form("action=\"/ui/envs/production/flags/checkout/json\"");
    assert_eq!(field(&overwrite, "version"), "3");
    let page = browser.post(&format!("{detail}/json"), &overwrite).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let flag = stored(&browser.client, &base, "checkout").await;
    assert_eq!(flag["version"], 4);
    assert_eq!(flag["doc"]["rules"][0]["description"], "Only staff");
    assert_eq!(
        flag["doc"]["on"], false,
        "mine was made before they turned it on"
    );

    // Saving the old page again is a conflict too: never a silent overwrite.
    let page = browser.post(detail, &mine).await;
    assert_eq!(page.status, StatusCode::CONFLICT);

    // The audit log shows the overwrite first, path by path, then alice's change.
    let page = browser.get(&format!("{detail}/audit")).await;
    assert_eq!(page.status, StatusCode::OK);
    let body = &page.body;
    let overwrite_at = body.find("<code>rules[0].description</code>").unwrap();
    let alice_at = body.find("<strong>alice</strong> changed").unwrap();
    assert!(overwrite_at < alice_at, "newest first: {body}");
    assert!(
        body.contains("<del><code>&quot;Staff and gold customers&quot;</code></del>"),
        "{body}"
    );
    assert!(body.contains("<ins><code>&quot;Only staff&quot;</code></ins>"));
    assert!(
        body.contains("<strong>bootstrap</strong> created"),
        "{body}"
    );
    let env_log = browser.get("/ui/envs/production/audit").await;
    assert!(
        env_log.body.contains(
            "created <a href=\"/ui/envs/production/settings\">environment production</a>"
        ),
        "{}",
        env_log.body
    );

    server.shutdown().await.unwrap();
    drop(db);
}
