//! The flag list: search, filters, each flag's state and last change, creating flags, and the
//! kill switch.

use std::collections::HashSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use flags_store::{LastChange, ListFilter, StoredFlag};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::UiState;
use super::layout::{self, Chrome, Flash, Section, path_segment};
use super::session::{Posted, Visitor};

/// Rows on one page of the list.
const PAGE_SIZE: usize = 50;

/// A flag unchanged this long, serving one variation to everyone, is stale: launched or dead,
/// and ready to come out of the code.
const STALE_AFTER_MS: u64 = 30 * 24 * 60 * 60 * 1000;

#[derive(Debug, Default, Deserialize)]
pub struct Home {
    env: Option<String>,
}

/// `GET /ui/`: the first environment's flags (or the chosen one's, from the switcher).
pub async fn home(
    State(state): State<UiState>,
    visitor: Visitor,
    Query(q): Query<Home>,
) -> Response {
    if let Some(env) = q.env.filter(|e| !e.is_empty()) {
        return Redirect::to(&format!("/ui/envs/{}/flags", path_segment(&env))).into_response();
    }
    let envs = match state.admin.store.list_environments().await {
        Ok(envs) => envs,
        Err(e) => return layout::store_error(e),
    };
    if let Some(env) = envs.iter().find(|e| visitor.principal.allows_env(&e.key)) {
        return Redirect::to(&format!("/ui/envs/{}/flags", path_segment(&env.key))).into_response();
    }
    let global = visitor.principal.env.is_none();
    let flash = visitor.take_flash();
    layout::bare_page(
        StatusCode::OK,
        "No environments",
        html! {
            h1 { "No environments yet" }
            @if let Some(flash) = flash {
                div.flash.error role="alert" { (flash.text) }
            }
            @if global {
                p { "Flags live in environments (production, staging, ...). Create the first one." }
                form.inline method="post" action="/ui/envs" {
                    input type="hidden" name="_csrf" value=(visitor.session.csrf());
                    p { label for="env-key" { "Key" } input #env-key type="text" name="key" required; }
                    p { label for="env-name" { "Name" } input #env-name type="text" name="name"; }
                    button.primary type="submit" { "Create environment" }
                }
            } @else {
                p { "Your key's environment does not exist yet; ask for a key for every environment to create it." }
            }
        },
    )
}

/// `POST /ui/envs`: creates an environment (keys for every environment only).
pub async fn create_environment(State(state): State<UiState>, posted: Posted) -> Response {
    let Posted { visitor, form } = posted;
    if visitor.principal.env.is_some() {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Creating an environment needs a key for every environment.",
        );
    }
    let key = form.get("key").unwrap_or_default().trim();
    let name = form.get("name").unwrap_or_default().trim();
    let name = if name.is_empty() { key } else { name };
    match state
        .admin
        .store
        .create_environment(&visitor.principal.actor, key, name)
        .await
    {
        Ok(env) => {
            visitor
                .session
                .set_flash(Flash::done(format!("Environment {} created.", env.key)));
            Redirect::to(&format!("/ui/envs/{}/flags", path_segment(&env.key))).into_response()
        }
        Err(e) if layout::is_refusal(&e) => {
            visitor.session.set_flash(Flash::error(layout::refusal(e)));
            Redirect::to("/ui").into_response()
        }
        Err(e) => layout::store_error(e),
    }
}

/// The list's filters, as its form sends them.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    stale: String,
    #[serde(default)]
    page: Option<usize>,
}

/// What the list shows of one flag.
struct Row<'a> {
    flag: &'a StoredFlag,
    name: &'a str,
    killed: bool,
    on: bool,
    tags: Vec<&'a str>,
    serves: String,
    /// The variations' values, in short.
    variations: String,
    stale: bool,
}

impl<'a> Row<'a> {
    fn new(flag: &'a StoredFlag, killed: bool, now: u64) -> Row<'a> {
        let doc = &flag.doc;
        let on = doc.get("on").and_then(Value::as_bool).unwrap_or(false);
        let name = doc
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(&flag.key);
        let tags = doc
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let variations = doc
            .get("variations")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let single = single_variation(doc, on);
        let serves = match (on, &single) {
            (_, Some(index)) => format!("serves {}", variation_label(variations, *index)),
            (true, None) => "targeted".to_owned(),
            (false, None) => "serves the default".to_owned(),
        };
        let unchanged = now.saturating_sub(flag.updated_at) >= STALE_AFTER_MS;
        Row {
            flag,
            name,
            killed,
            on,
            tags,
            serves,
            variations: variations_in_short(variations),
            stale: unchanged && single.is_some(),
        }
    }

    fn state(&self) -> (&'static str, &'static str) {
        if self.flag.archived {
            ("Archived", "archived")
        } else if self.killed {
            ("Killed", "killed")
        } else if self.on {
            ("On", "on")
        } else {
            ("Off", "off")
        }
    }
}

/// The first few variations' values, and how many more there are.
fn variations_in_short(variations: &[Value]) -> String {
    const SHOWN: usize = 3;
    let mut text = (0..variations.len().min(SHOWN))
        .map(|i| variation_label(variations, i))
        .collect::<Vec<_>>()
        .join(" · ");
    if variations.len() > SHOWN {
        text.push_str(&format!(" · {} more", variations.len() - SHOWN));
    }
    text
}

/// The one variation a flag serves to everyone, if it does: its off variation when off, its
/// fallthrough variation when on without targets, rules or prerequisites.
fn single_variation(doc: &Value, on: bool) -> Option<usize> {
    let index = |v: &Value| v.as_u64().and_then(|i| usize::try_from(i).ok());
    if !on {
        return doc.get("offVariation").and_then(index);
    }
    let empty = |field: &str| {
        doc.get(field)
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    };
    if !(empty("targets") && empty("contextTargets") && empty("rules") && empty("prerequisites")) {
        return None;
    }
    doc.get("fallthrough")?.get("variation").and_then(index)
}

/// A variation as people read it: its name, or its value in short.
pub fn variation_label(variations: &[Value], index: usize) -> String {
    match variations.get(index) {
        Some(Value::String(s)) => short(&format!("{s:?}"), 40),
        Some(value) => short(&value.to_string(), 40),
        None => format!("variation {index}"),
    }
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// "5 minutes ago", in a `<time>` element with the exact time.
pub fn when(at: u64, now: u64) -> Markup {
    let ago = now.saturating_sub(at) / 1000;
    let text = match ago {
        0..=59 => "just now".to_owned(),
        60..=3599 => plural(ago / 60, "minute"),
        3600..=86_399 => plural(ago / 3600, "hour"),
        _ => plural(ago / 86_400, "day"),
    };
    let exact = crate::store::rfc3339(at);
    html! { time datetime=(exact) title=(exact) { (text) } }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// `GET /ui/envs/{env}/flags`.
pub async fn list(
    State(state): State<UiState>,
    visitor: Visitor,
    Path(env): Path<String>,
    Query(filters): Query<Filters>,
) -> Response {
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let store = &state.admin.store;
    let archived = filters.state == "archived";
    let listed = store
        .list_flags(
            &env,
            &ListFilter {
                archived: Some(archived),
                key_prefix: None,
            },
        )
        .await;
    let flags = match listed {
        Ok(flags) => flags,
        Err(e) => return layout::store_error(e),
    };
    let killed: HashSet<String> = match store.killed_flags(&env).await {
        Ok(killed) => killed.into_iter().collect(),
        Err(e) => return layout::store_error(e),
    };
    let last = match store.flag_last_changes(&env).await {
        Ok(last) => last,
        Err(e) => return layout::store_error(e),
    };
    let now = now_ms();
    let query = filters.q.trim().to_lowercase();
    let mut all_tags: Vec<&str> = flags
        .iter()
        .filter_map(|f| f.doc.get("tags").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    all_tags.sort_unstable();
    all_tags.dedup();
    let rows: Vec<Row<'_>> = flags
        .iter()
        .map(|f| Row::new(f, killed.contains(&f.key), now))
        .filter(|r| {
            query.is_empty()
                || r.flag.key.to_lowercase().contains(&query)
                || r.name.to_lowercase().contains(&query)
        })
        .filter(|r| match filters.state.as_str() {
            "on" => r.on && !r.killed,
            "off" => !r.on && !r.killed,
            "killed" => r.killed,
            _ => true,
        })
        .filter(|r| filters.tag.is_empty() || r.tags.contains(&filters.tag.as_str()))
        .filter(|r| filters.stale.is_empty() || r.stale)
        .collect();
    let pages = rows.len().div_ceil(PAGE_SIZE).max(1);
    let page = filters.page.unwrap_or(1).clamp(1, pages);
    let shown = rows.iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE);
    let page_url = |n: usize| {
        let mut url = chrome.url("/flags");
        let q = [
            ("q", filters.q.as_str()),
            ("state", filters.state.as_str()),
            ("tag", filters.tag.as_str()),
            ("stale", filters.stale.as_str()),
            ("page", &n.to_string()),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", path_segment(v)))
        .collect::<Vec<_>>()
        .join("&");
        url.push('?');
        url.push_str(&q);
        url
    };
    let states = [
        ("", "Any"),
        ("on", "On"),
        ("off", "Off"),
        ("killed", "Killed"),
        ("archived", "Archived"),
    ];
    let env_name = chrome.env_name().to_owned();
    let main = html! {
        h1 { "Flags" }
        form.filters role="search" method="get" action=(chrome.url("/flags")) {
            p {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(filters.q) placeholder="key or name";
            }
            p {
                label for="state" { "State" }
                select #state name="state" {
                    @for (value, label) in states {
                        option value=(value) selected[filters.state == value] { (label) }
                    }
                }
            }
            p {
                label for="tag" { "Tag" }
                select #tag name="tag" {
                    option value="" { "Any" }
                    @for tag in &all_tags {
                        option value=(tag) selected[filters.tag == *tag] { (tag) }
                    }
                }
            }
            p.check {
                label for="stale" { "Stale only" }
                input #stale type="checkbox" name="stale" value="1" checked[!filters.stale.is_empty()];
            }
            button type="submit" { "Filter" }
        }
        div #flag-table data-refresh {
            table {
                caption { "Flags in " (env_name) " — " (rows.len()) " of " (flags.len()) }
                thead {
                    tr {
                        th scope="col" { "Flag" }
                        th scope="col" { "State" }
                        th scope="col" { "Variations" }
                        th scope="col" { "Last change" }
                        th scope="col" { "Actions" }
                    }
                }
                tbody {
                    @for row in shown {
                        (flag_row(&chrome, row, last.get(&row.flag.key), now))
                    }
                }
            }
            @if rows.is_empty() {
                p.muted { "No flags match." }
            }
            nav.pager aria-label="Pages" {
                @if page > 1 {
                    a href=(page_url(page - 1)) rel="prev" { "Previous" }
                }
                span { "Page " (page) " of " (pages) }
                @if page < pages {
                    a href=(page_url(page + 1)) rel="next" { "Next" }
                }
            }
        }
        h2 { "Create a flag" }
        form.inline method="post" action=(chrome.url("/flags")) {
            input type="hidden" name="_csrf" value=(chrome.csrf());
            p { label for="new-key" { "New flag key" } input #new-key type="text" name="key" required; }
            p { label for="new-name" { "Name" } input #new-name type="text" name="name"; }
            p {
                label for="new-kind" { "Kind" }
                select #new-kind name="kind" {
                    option value="boolean" { "boolean" }
                    option value="string" { "string" }
                    option value="number" { "number" }
                    option value="json" { "JSON" }
                }
            }
            button.primary type="submit" { "Create flag" }
        }
    };
    chrome.page(StatusCode::OK, Section::Flags, "Flags", main)
}

fn flag_row(chrome: &Chrome, row: &Row<'_>, last: Option<&LastChange>, now: u64) -> Markup {
    let (state, class) = row.state();
    let key = &row.flag.key;
    let url = chrome.url(&format!("/flags/{}", path_segment(key)));
    html! {
        tr {
            th scope="row" {
                a href=(url) {
                    (row.name)
                    @if row.name != key { br; code.muted { (key) } }
                }
                @if row.stale { " " span.state.archived { "Stale" } }
            }
            td { span.state.(class) { (state) } }
            td { (row.variations) br; span.muted { (row.serves) } }
            td {
                @match last {
                    Some(last) => { (when(last.at, now)) " by " (last.actor.name) }
                    None => { (when(row.flag.updated_at, now)) }
                }
            }
            td.actions {
                @if !row.flag.archived {
                    @if row.killed {
                        form method="post" action=(format!("{url}/unkill")) {
                            input type="hidden" name="_csrf" value=(chrome.csrf());
                            button type="submit" aria-label=(format!("Unkill {key}")) { "Unkill" }
                        }
                    } @else {
                        (kill_form(chrome, key, &url, None))
                    }
                }
            }
        }
    }
}

/// The kill button of one flag: with the script, a dialog asks first; without, the server's
/// confirmation page does. Both name the environment. `back`: the page to return to (else the
/// list).
pub fn kill_form(chrome: &Chrome, key: &str, flag_url: &str, back: Option<&str>) -> Markup {
    let question = format!("Kill {key} in {}?", chrome.env_name());
    html! {
        form method="post" action=(format!("{flag_url}/kill"))
            data-confirm=(question)
            data-confirm-button=(format!("Kill {key} in {}", chrome.env_name())) {
            input type="hidden" name="_csrf" value=(chrome.csrf());
            @if let Some(back) = back {
                input type="hidden" name="back" value=(back);
            }
            button.danger type="submit" aria-label=(format!("Kill {key}")) { "Kill" }
        }
    }
}

/// `GET /ui/envs/{env}/flags/{key}/kill`: asks before killing (the page the kill button
/// leads to without the script).
pub async fn kill_confirmation(
    State(state): State<UiState>,
    visitor: Visitor,
    Path((env, key)): Path<(String, String)>,
    Query(back): Query<Back>,
) -> Response {
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    if let Err(e) = state.admin.store.get_flag(&env, &key).await {
        return layout::store_error(e);
    }
    let url = chrome.url(&format!("/flags/{}", path_segment(&key)));
    let env_name = chrome.env_name().to_owned();
    let main = html! {
        h1 { "Kill " (key) " in " (env_name) "?" }
        p {
            "Every evaluation of " code { (key) } " in " strong { (env_name) }
            " (" code { (chrome.env.key) } ") will serve its off variation until it is unkilled, "
            "whatever its targeting says."
        }
        form method="post" action=(format!("{url}/kill")) {
            input type="hidden" name="_csrf" value=(chrome.csrf());
            input type="hidden" name="confirm" value="1";
            @if let Some(back) = back.back.filter(|b| is_own_page(b)) {
                input type="hidden" name="back" value=(back);
            }
            button.danger type="submit" { "Kill " (key) " in " (env_name) }
            " "
            a href=(url) { "Cancel" }
        }
    };
    chrome.page(StatusCode::OK, Section::Flags, &format!("Kill {key}"), main)
}

/// `POST /ui/envs/{env}/flags/{key}/kill`: kills, once confirmed.
pub async fn kill(
    State(state): State<UiState>,
    Path((env, key)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    if posted.form.get("confirm") != Some("1") {
        let mut url = format!(
            "/ui/envs/{}/flags/{}/kill",
            path_segment(&env),
            path_segment(&key)
        );
        // The confirmation page returns where the button was, too.
        if let Some(back) = posted_back(&posted.form) {
            url.push_str("?back=");
            url.push_str(&path_segment(&back));
        }
        return Redirect::to(&url).into_response();
    }
    set_killed(state, env, key, posted, true).await
}

/// `POST /ui/envs/{env}/flags/{key}/unkill`.
pub async fn unkill(
    State(state): State<UiState>,
    Path((env, key)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    set_killed(state, env, key, posted, false).await
}

async fn set_killed(
    state: UiState,
    env: String,
    key: String,
    posted: Posted,
    killed: bool,
) -> Response {
    let chrome = match Chrome::load(&state, posted.visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let actor = &chrome.visitor.principal.actor;
    let done = state
        .admin
        .store
        .set_killed(actor, &env, &key, killed)
        .await;
    let env_name = chrome.env_name();
    let flash = match done {
        Ok(true) if killed => Flash::done(format!("{key} is killed in {env_name}.")),
        Ok(true) => Flash::done(format!("{key} is no longer killed in {env_name}.")),
        Ok(false) if killed => Flash::done(format!("{key} was already killed in {env_name}.")),
        Ok(false) => Flash::done(format!("{key} was not killed in {env_name}.")),
        Err(e) if layout::is_refusal(&e) => Flash::error(layout::refusal(e)),
        Err(e) => return layout::store_error(e),
    };
    chrome.visitor.session.set_flash(flash);
    // Back where the button was: the list, or the flag's page.
    let back = posted_back(&posted.form).unwrap_or_else(|| chrome.url("/flags"));
    Redirect::to(&back).into_response()
}

/// The page a form asks to return to (`back`), when it is one of the UI's own.
pub fn posted_back(form: &super::session::Form) -> Option<String> {
    form.get("back")
        .filter(|b| is_own_page(b))
        .map(str::to_owned)
}

/// Where the kill confirmation returns to.
#[derive(Debug, Default, Deserialize)]
pub struct Back {
    back: Option<String>,
}

fn is_own_page(url: &str) -> bool {
    url.starts_with("/ui/") && !url.starts_with("//") && !url.contains("://")
}

/// The document of a new flag of `kind`: off, serving its second variation when off and its
/// first when turned on, so turning it on changes what is served.
fn new_flag(key: &str, name: &str, kind: &str) -> Option<Value> {
    let variations = match kind {
        "boolean" => json!([true, false]),
        "string" => json!(["control", "treatment"]),
        "number" => json!([0, 1]),
        "json" => json!([{}, {"enabled": true}]),
        _ => return None,
    };
    let mut doc = json!({
        "key": key,
        "on": false,
        "variations": variations,
        "offVariation": 1,
        "fallthrough": {"variation": 0},
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
        "salt": key,
    });
    if !name.is_empty() {
        doc["name"] = Value::from(name);
    }
    Some(doc)
}

/// `POST /ui/envs/{env}/flags`: creates a flag, then shows it.
pub async fn create(
    State(state): State<UiState>,
    Path(env): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { visitor, form } = posted;
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let key = form.get("key").unwrap_or_default().trim();
    let name = form.get("name").unwrap_or_default().trim();
    let session = &chrome.visitor.session;
    let Some(doc) = new_flag(key, name, form.get("kind").unwrap_or("boolean")) else {
        session.set_flash(Flash::error(
            "Kind must be boolean, string, number or JSON.",
        ));
        return Redirect::to(&chrome.url("/flags")).into_response();
    };
    let actor = &chrome.visitor.principal.actor;
    match state
        .admin
        .store
        .put_flag(actor, &env, key, doc, None)
        .await
    {
        Ok(flag) => {
            session.set_flash(Flash::done(format!("Flag {} created (off).", flag.key)));
            let url = chrome.url(&format!("/flags/{}", path_segment(&flag.key)));
            Redirect::to(&url).into_response()
        }
        Err(e) if layout::is_refusal(&e) => {
            session.set_flash(Flash::error(format!(
                "Flag {key:?} was not created: {}",
                layout::refusal(e)
            )));
            Redirect::to(&chrome.url("/flags")).into_response()
        }
        Err(e) => layout::store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_serving_one_variation_to_everyone_is_recognised() {
        let off = json!({"on": false, "offVariation": 1});
        assert_eq!(single_variation(&off, false), Some(1));
        let launched = json!({"on": true, "fallthrough": {"variation": 0}, "rules": []});
        assert_eq!(single_variation(&launched, true), Some(0));
        let targeted = json!({"on": true, "fallthrough": {"variation": 0},
            "rules": [{"clauses": []}]});
        assert_eq!(single_variation(&targeted, true), None);
        let rollout = json!({"on": true, "fallthrough": {"rollout": {"variations": []}}});
        assert_eq!(single_variation(&rollout, true), None);
    }

    #[test]
    fn variations_are_listed_in_short() {
        assert_eq!(
            variations_in_short(&[json!(true), json!(false)]),
            "true · false"
        );
        let many = [json!("a"), json!("b"), json!("c"), json!("d"), json!("e")];
        assert_eq!(variations_in_short(&many), r#""a" · "b" · "c" · 2 more"#);
        assert_eq!(variations_in_short(&[]), "");
    }

    #[test]
    fn new_flags_are_valid_for_every_kind() {
        for kind in ["boolean", "string", "number", "json"] {
            let doc = new_flag("f", "F", kind).unwrap_or_else(|| panic!("{kind}"));
            flags_core::Flag::from_json_value(doc).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        assert!(new_flag("f", "", "date").is_none());
    }

    #[test]
    fn only_the_uis_own_pages_are_returned_to() {
        let form =
            |back: &str| super::super::session::Form::parse(format!("back={back}").as_bytes());
        assert_eq!(
            posted_back(&form("/ui/envs/p/flags")).as_deref(),
            Some("/ui/envs/p/flags")
        );
        assert_eq!(posted_back(&form("https://evil.example/ui/")), None);
        assert_eq!(posted_back(&form("//evil.example")), None);
    }
}
