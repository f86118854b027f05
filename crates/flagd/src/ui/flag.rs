//! A flag's page: its state (on, off, killed), its targeting form, its overrides and its raw
//! JSON, and the page a save meets when someone else saved first.
//!
//! Every save names the version the page showed (the admin API's `If-Match`), so a change made
//! meanwhile is never overwritten silently: the save is refused and the conflict page shows
//! both versions and what differs between them, and offers to overwrite theirs with yours.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use flags_store::{AuditAction, AuditQuery, ListFilter, OverrideKey, StoreError, StoredFlag};
use maud::{Markup, html};
use serde_json::Value;

use super::UiState;
use super::audit;
use super::diff;
use super::editor::{self, Editor, OtherFlag, View};
use super::flags::{kill_form, now_ms, when};
use super::layout::{self, Chrome, Flash, Section, path_segment};
use super::session::{Posted, Visitor};

/// `GET /ui/envs/{env}/flags/{key}`.
pub async fn detail(
    State(state): State<UiState>,
    visitor: Visitor,
    Path((env, key)): Path<(String, String)>,
) -> Response {
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    render(&state, &chrome, &key, Pending::default(), StatusCode::OK).await
}

/// `POST /ui/envs/{env}/flags/{key}`: the targeting form. An `op` button shows the form again
/// with its edit; **Save changes** saves it at the version it was made from.
pub async fn save_targeting(
    State(state): State<UiState>,
    Path((env, key)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { visitor, form } = posted;
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let mut editor = match Editor::from_form(&form) {
        Ok(editor) => editor,
        Err(why) => return damaged(&why),
    };
    let op = form.get("op").unwrap_or("save");
    if op != "save" {
        editor.apply(op);
        let pending = Pending {
            editor: Some((editor, Vec::new())),
            raw: None,
        };
        return render(&state, &chrome, &key, pending, StatusCode::OK).await;
    }
    let doc = match editor.to_doc() {
        Ok(doc) => doc,
        Err(errors) => {
            let pending = Pending {
                editor: Some((editor, errors)),
                raw: None,
            };
            return render(
                &state,
                &chrome,
                &key,
                pending,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    if doc == *editor.base() {
        chrome
            .visitor
            .session
            .set_flash(Flash::done("Nothing to save: the targeting is as it was."));
        return Redirect::to(&flag_url(&chrome, &key)).into_response();
    }
    let version = editor.version();
    match write(&state, &chrome, &key, doc.clone(), version).await {
        Written::Refused(error) => {
            let pending = Pending {
                editor: Some((editor, vec![error])),
                raw: None,
            };
            render(
                &state,
                &chrome,
                &key,
                pending,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Written::Conflict => conflict(&state, &chrome, &key, doc).await,
        Written::Done(page) => page,
    }
}

/// `POST /ui/envs/{env}/flags/{key}/json`: saves the **Flag JSON** textarea (and the conflict
/// page's **Overwrite with mine**) at the version posted with it.
pub async fn save_json(
    State(state): State<UiState>,
    Path((env, key)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { visitor, form } = posted;
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let Some(version) = posted_version(&form) else {
        return damaged("the form lacks the version it was made from");
    };
    let text = form.get("json").unwrap_or_default().to_owned();
    let refuse = |error: String| Pending {
        editor: None,
        raw: Some((text.clone(), version, error)),
    };
    let doc = match serde_json::from_str::<Value>(&text) {
        Ok(doc) if doc.is_object() => doc,
        Ok(_) => {
            let pending = refuse("Not saved: a flag is a JSON object ({...}).".to_owned());
            return render(
                &state,
                &chrome,
                &key,
                pending,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
        Err(e) => {
            let pending = refuse(format!("Not saved: this is not valid JSON: {e}."));
            return render(
                &state,
                &chrome,
                &key,
                pending,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    match write(&state, &chrome, &key, doc.clone(), version).await {
        Written::Refused(error) => {
            let pending = refuse(format!("Not saved: {error}"));
            render(
                &state,
                &chrome,
                &key,
                pending,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Written::Conflict => conflict(&state, &chrome, &key, doc).await,
        Written::Done(page) => page,
    }
}

/// `POST /ui/envs/{env}/flags/{key}/state`: **Turn on** / **Turn off**, at the version shown.
pub async fn set_on(
    State(state): State<UiState>,
    Path((env, key)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { visitor, form } = posted;
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let Some(version) = posted_version(&form) else {
        return damaged("the form lacks the version it was made from");
    };
    let on = form.get("on") == Some("1");
    let current = match state.admin.store.get_flag(&env, &key).await {
        Ok(flag) => flag,
        Err(e) => return layout::store_error(e),
    };
    let mut doc = current.doc;
    if let Some(map) = doc.as_object_mut() {
        map.insert("on".to_owned(), Value::Bool(on));
    }
    match write(&state, &chrome, &key, doc.clone(), version).await {
        Written::Refused(error) => {
            chrome.visitor.session.set_flash(Flash::error(error));
            Redirect::to(&flag_url(&chrome, &key)).into_response()
        }
        Written::Conflict => conflict(&state, &chrome, &key, doc).await,
        Written::Done(page) => page,
    }
}

/// `POST /ui/envs/{env}/flags/{key}/overrides`: **Add override**.
pub async fn add_override(
    State(state): State<UiState>,
    Path((env, key)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { visitor, form } = posted;
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let target = OverrideKey {
        flag_key: key.clone(),
        context_kind: form
            .get("context_kind")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        context_key: form
            .get("context_key")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    };
    let flash = match form.get("variation").and_then(|v| v.parse::<usize>().ok()) {
        None => Flash::error("Choose the variation the context gets."),
        Some(variation) => {
            let actor = &chrome.visitor.principal.actor;
            match state
                .admin
                .store
                .set_override(actor, &env, &target, variation)
                .await
            {
                Ok(_) => Flash::done(format!(
                    "{}:{} now gets variation {variation} of {key}.",
                    target.context_kind, target.context_key
                )),
                Err(e) if layout::is_refusal(&e) => {
                    Flash::error(format!("Override not added: {}", layout::refusal(e)))
                }
                Err(e) => return layout::store_error(e),
            }
        }
    };
    chrome.visitor.session.set_flash(flash);
    Redirect::to(&format!("{}#overrides", flag_url(&chrome, &key))).into_response()
}

/// `POST /ui/envs/{env}/flags/{key}/overrides/remove`: an override's **Remove**.
pub async fn remove_override(
    State(state): State<UiState>,
    Path((env, key)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { visitor, form } = posted;
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let target = OverrideKey {
        flag_key: key.clone(),
        context_kind: form.get("context_kind").unwrap_or_default().to_owned(),
        context_key: form.get("context_key").unwrap_or_default().to_owned(),
    };
    let actor = &chrome.visitor.principal.actor;
    let flash = match state
        .admin
        .store
        .remove_override(actor, &env, &target)
        .await
    {
        Ok(Some(_)) => Flash::done(format!(
            "The override of {}:{} is removed.",
            target.context_kind, target.context_key
        )),
        Ok(None) => Flash::done(format!(
            "{}:{} had no override.",
            target.context_kind, target.context_key
        )),
        Err(e) if layout::is_refusal(&e) => Flash::error(layout::refusal(e)),
        Err(e) => return layout::store_error(e),
    };
    chrome.visitor.session.set_flash(flash);
    Redirect::to(&format!("{}#overrides", flag_url(&chrome, &key))).into_response()
}

/// Edits shown instead of the stored flag: the targeting form's (with the reasons it was not
/// saved), or the raw JSON's (the text, its version and why it was refused).
#[derive(Default)]
struct Pending {
    editor: Option<(Editor, Vec<String>)>,
    raw: Option<(String, u64, String)>,
}

/// What a versioned write came to.
enum Written {
    /// Saved: the page to go to.
    Done(Response),
    /// Someone saved first.
    Conflict,
    /// The store refused the document, for this reason.
    Refused(String),
}

async fn write(state: &UiState, chrome: &Chrome, key: &str, doc: Value, version: u64) -> Written {
    let actor = &chrome.visitor.principal.actor;
    let env = &chrome.env.key;
    match state
        .admin
        .store
        .put_flag(actor, env, key, doc, Some(version))
        .await
    {
        Ok(flag) => {
            chrome.visitor.session.set_flash(Flash::done(format!(
                "Saved {key} in {}: now version {}.",
                chrome.env_name(),
                flag.version
            )));
            Written::Done(Redirect::to(&flag_url(chrome, key)).into_response())
        }
        Err(StoreError::Conflict { .. }) => Written::Conflict,
        Err(e) if layout::is_refusal(&e) => Written::Refused(layout::refusal(e)),
        Err(e) => Written::Done(layout::store_error(e)),
    }
}

/// The 409 page: who changed the flag and when, theirs and yours side by side, what differs,
/// and **Overwrite with mine** (yours, at their version) or **Discard mine**.
async fn conflict(state: &UiState, chrome: &Chrome, key: &str, yours: Value) -> Response {
    let store = &state.admin.store;
    let theirs = match store.get_flag(&chrome.env.key, key).await {
        Ok(flag) => flag,
        Err(e) => return layout::store_error(e),
    };
    // The write that made their version: kills and overrides since then do not count.
    let last = store
        .audit_log(&AuditQuery::flag(&chrome.env.key, key, 20))
        .await
        .ok()
        .and_then(|entries| {
            entries.into_iter().find(|e| {
                matches!(
                    e.action,
                    AuditAction::Create
                        | AuditAction::Replace
                        | AuditAction::Archive
                        | AuditAction::Unarchive
                )
            })
        });
    let (actor, at) = match &last {
        Some(entry) => (entry.actor.name.as_str(), entry.at),
        None => ("someone", theirs.updated_at),
    };
    // Yours is saved at their version whatever it says, so the versions are not a difference.
    let without_version = |doc: &Value| {
        let mut doc = doc.clone();
        if let Some(map) = doc.as_object_mut() {
            map.remove("version");
        }
        doc
    };
    let rows = diff::diff(&without_version(&theirs.doc), &without_version(&yours));
    let url = flag_url(chrome, key);
    let yours_text = pretty(&without_version(&yours));
    let exact = crate::store::rfc3339(at);
    let main = html! {
        h1 { "Not saved: " (flag_name(&theirs)) " changed meanwhile" }
        div.flash.error role="alert" {
            "This flag was changed by " strong { (actor) } " at "
            time datetime=(exact) { (exact) } " while you were editing. Nothing was saved."
        }
        p {
            "Their version is " (theirs.version) ". Compare the two, then keep theirs or "
            "replace it with yours."
        }
        h2 { "What yours changes" }
        (diff::table(&rows, "From theirs to yours"))
        div.side-by-side {
            section aria-labelledby="theirs-h" {
                h2 #theirs-h { "Theirs (version " (theirs.version) ")" }
                pre tabindex="0" aria-label="Their version" { code { (pretty(&theirs.doc)) } }
            }
            section aria-labelledby="yours-h" {
                h2 #yours-h { "Yours" }
                pre tabindex="0" aria-label="Your version" { code { (yours_text) } }
            }
        }
        form.inline method="post" action=(format!("{url}/json")) {
            input type="hidden" name="_csrf" value=(chrome.csrf());
            input type="hidden" name="version" value=(theirs.version);
            input type="hidden" name="json" value=(yours_text);
            button.danger type="submit" { "Overwrite with mine" }
            a href=(url) { "Discard mine" }
        }
    };
    chrome.page(
        StatusCode::CONFLICT,
        Section::Flags,
        &format!("Conflict on {key}"),
        main,
    )
}

/// The flag's page, showing `pending` edits where there are some.
async fn render(
    state: &UiState,
    chrome: &Chrome,
    key: &str,
    pending: Pending,
    status: StatusCode,
) -> Response {
    let store = &state.admin.store;
    let env = &chrome.env.key;
    let flag = match store.get_flag(env, key).await {
        Ok(flag) => flag,
        Err(e) => return layout::store_error(e),
    };
    let killed = match store.killed_flags(env).await {
        Ok(killed) => killed.iter().any(|k| k == key),
        Err(e) => return layout::store_error(e),
    };
    let overrides = match store.list_overrides(env, key).await {
        Ok(overrides) => overrides,
        Err(e) => return layout::store_error(e),
    };
    let live = ListFilter {
        archived: Some(false),
        key_prefix: None,
    };
    let others: Vec<OtherFlag> = match store.list_flags(env, &live).await {
        Ok(flags) => flags
            .iter()
            .filter(|f| f.key != key)
            .map(|f| OtherFlag {
                key: f.key.clone(),
                name: flag_name(f).to_owned(),
                variations: f
                    .doc
                    .get("variations")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect(),
        Err(e) => return layout::store_error(e),
    };
    // The last change is a courtesy: the page shows without it.
    let last = store
        .audit_log(&AuditQuery::flag(env, key, 1))
        .await
        .ok()
        .and_then(|entries| entries.into_iter().next());

    let url = flag_url(chrome, key);
    let labels = editor::labels(
        flag.doc
            .get("variations")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default(),
    );
    let (editor, errors, unsaved) = match pending.editor {
        Some((editor, errors)) => (editor, errors, true),
        None => (Editor::from_doc(&flag.doc, flag.version), Vec::new(), false),
    };
    let action = url.clone();
    let view = View {
        action: &action,
        csrf: chrome.csrf(),
        flags: &others,
    };
    let on = flag.doc.get("on").and_then(Value::as_bool).unwrap_or(false);
    let (state_text, state_class) = if killed {
        ("Killed", "killed")
    } else if on {
        ("On", "on")
    } else {
        ("Off", "off")
    };
    let now = now_ms();
    let main = html! {
        div #flag-detail data-live-key=(key) {
            div #changed-notice .flash.error role="alert" hidden {
                "This flag changed since you opened it. "
                form.inline-button method="get" action=(url) {
                    button type="submit" { "Reload" }
                }
            }
            h1 { (flag_name(&flag)) }
            p.muted { code { (key) } " in " (chrome.env_name()) }

            section #flag-state data-refresh aria-labelledby="state-h" {
                h2 #state-h { "State" }
                p {
                    span.state.(state_class) { (state_text) }
                    @if killed && on { " (on, but killed: everyone gets the off variation)" }
                    @if flag.archived { " " span.state.archived { "Archived" } }
                }
                dl.facts {
                    dt { "Version" } dd { (flag.version) }
                    dt { "Archived" } dd { @if flag.archived { "yes: not served" } @else { "no" } }
                    dt { "Last change" }
                    dd {
                        @match &last {
                            Some(entry) => {
                                (when(entry.at, now)) " by " (entry.actor.name)
                                " (" (audit::action_text(entry.action)) ")"
                            }
                            None => { (when(flag.updated_at, now)) }
                        }
                    }
                }
                div.state-actions {
                    form method="post" action=(format!("{url}/state")) {
                        input type="hidden" name="_csrf" value=(chrome.csrf());
                        input type="hidden" name="version" value=(flag.version);
                        @if on {
                            input type="hidden" name="on" value="0";
                            button type="submit" { "Turn off" }
                        } @else {
                            input type="hidden" name="on" value="1";
                            button.primary type="submit" { "Turn on" }
                        }
                    }
                    @if killed {
                        form method="post" action=(format!("{url}/unkill")) {
                            input type="hidden" name="_csrf" value=(chrome.csrf());
                            input type="hidden" name="back" value=(url);
                            button type="submit" aria-label=(format!("Unkill {key}")) { "Unkill" }
                        }
                    } @else {
                        (kill_form(chrome, key, &url, Some(&url)))
                    }
                }
            }

            section aria-labelledby="targeting-h" {
                h2 #targeting-h { "Targeting" }
                (editor.render(&view, &errors, unsaved))
            }

            section #overrides aria-labelledby="overrides-h" {
                h2 #overrides-h { "Overrides" }
                (overrides_section(chrome, &url, &overrides, &labels))
            }

            section aria-labelledby="json-h" {
                h2 #json-h { "Raw JSON" }
                (raw_json(chrome, &url, &flag, pending.raw.as_ref()))
            }

            section aria-labelledby="audit-h" {
                h2 #audit-h { "Audit log" }
                p { a href=(format!("{url}/audit")) { "Every change to " (key) } }
            }
        }
    };
    chrome.page(status, Section::Flags, flag_name(&flag), main)
}

fn overrides_section(
    chrome: &Chrome,
    url: &str,
    overrides: &[flags_store::Override],
    labels: &[String],
) -> Markup {
    let label = |i: usize| {
        labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("variation {i}"))
    };
    html! {
        div #flag-overrides data-refresh {
            p.hint { "An override pins one context to a variation, before targets and rules." }
            @if overrides.is_empty() {
                p.muted { "No overrides." }
            } @else {
                table {
                    caption { "Overrides" }
                    thead {
                        tr {
                            th scope="col" { "Context kind" }
                            th scope="col" { "Context key" }
                            th scope="col" { "Variation" }
                            th scope="col" { "Remove" }
                        }
                    }
                    tbody {
                        @for o in overrides {
                            tr {
                                td { (o.context_kind) }
                                th scope="row" { (o.context_key) }
                                td { (label(o.variation)) }
                                td {
                                    form method="post" action=(format!("{url}/overrides/remove")) {
                                        input type="hidden" name="_csrf" value=(chrome.csrf());
                                        input type="hidden" name="context_kind" value=(o.context_kind);
                                        input type="hidden" name="context_key" value=(o.context_key);
                                        button type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        form.inline method="post" action=(format!("{url}/overrides")) {
            input type="hidden" name="_csrf" value=(chrome.csrf());
            p {
                label for="ov-kind" { "Context kind" }
                input #ov-kind type="text" name="context_kind" value="user" required;
            }
            p {
                label for="ov-key" { "Context key" }
                input #ov-key type="text" name="context_key" required;
            }
            p {
                label for="ov-variation" { "Variation" }
                select #ov-variation name="variation" {
                    @for (i, l) in labels.iter().enumerate() {
                        option value=(i) { (l) }
                    }
                }
            }
            button type="submit" { "Add override" }
        }
    }
}

fn raw_json(
    chrome: &Chrome,
    url: &str,
    flag: &StoredFlag,
    pending: Option<&(String, u64, String)>,
) -> Markup {
    let (text, version, error) = match pending {
        Some((text, version, error)) => (text.clone(), *version, Some(error)),
        None => (pretty(&flag.doc), flag.version, None),
    };
    html! {
        form method="post" action=(format!("{url}/json")) data-track-edits data-pending[error.is_some()] {
            // Not refreshed while it holds text that was refused: that would throw it away.
            div #raw-json-fields data-refresh[error.is_none()] {
                input type="hidden" name="_csrf" value=(chrome.csrf());
                input type="hidden" name="version" value=(version);
                @if let Some(error) = error {
                    div.flash.error role="alert" { (error) }
                }
                p {
                    label for="flag-json" { "Flag JSON" }
                    textarea #flag-json.code name="json" rows="20" spellcheck="false" { (text) }
                }
                p.hint {
                    "The whole LaunchDarkly flag document. Saved at version " (version)
                    "; the store checks it as the admin API does."
                }
                button type="submit" { "Save JSON" }
            }
        }
    }
}

/// A page for a form that did not come from this UI as it is (hidden fields missing).
fn damaged(why: &str) -> Response {
    layout::error_page(
        StatusCode::BAD_REQUEST,
        "Damaged form",
        &format!("Nothing was saved: {why}. Reload the page and try again."),
    )
}

fn posted_version(form: &super::session::Form) -> Option<u64> {
    form.get("version").and_then(|v| v.trim().parse().ok())
}

fn flag_url(chrome: &Chrome, key: &str) -> String {
    chrome.url(&format!("/flags/{}", path_segment(key)))
}

fn flag_name(flag: &StoredFlag) -> &str {
    flag.doc
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(&flag.key)
}

fn pretty(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).unwrap_or_else(|_| doc.to_string())
}
