//! The audit log pages: every change of an environment, or of one flag, newest first, each
//! with who made it, when, and what it changed, path by path.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use flags_store::{AuditAction, AuditEntry, AuditItemKind, AuditQuery};
use maud::{Markup, html};
use serde::Deserialize;

use super::UiState;
use super::diff;
use super::flags::{now_ms, when};
use super::layout::{self, Chrome, Section, path_segment};
use super::session::Visitor;

/// Entries on one page.
const PAGE_SIZE: usize = 20;

/// Which page: entries older than `before` (an entry id), or the newest.
#[derive(Debug, Default, Deserialize)]
pub struct Paging {
    before: Option<u64>,
}

/// `GET /ui/envs/{env}/audit`.
pub async fn env_log(
    State(state): State<UiState>,
    visitor: Visitor,
    Path(env): Path<String>,
    Query(paging): Query<Paging>,
) -> Response {
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let query = AuditQuery {
        before_id: paging.before,
        ..AuditQuery::env(&env, PAGE_SIZE + 1)
    };
    let intro = html! {
        p { "Every change in " (chrome.env_name()) ", newest first." }
    };
    log_page(
        &state,
        &chrome,
        &query,
        &chrome.url("/audit"),
        intro,
        paging.before,
    )
    .await
}

/// `GET /ui/envs/{env}/flags/{key}/audit`.
pub async fn flag_log(
    State(state): State<UiState>,
    visitor: Visitor,
    Path((env, key)): Path<(String, String)>,
    Query(paging): Query<Paging>,
) -> Response {
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let query = AuditQuery {
        before_id: paging.before,
        ..AuditQuery::flag(&env, &key, PAGE_SIZE + 1)
    };
    let flag_url = chrome.url(&format!("/flags/{}", path_segment(&key)));
    let intro = html! {
        p {
            "Every change to flag " a href=(flag_url) { code { (key) } }
            " in " (chrome.env_name()) " (its kills and overrides included), newest first."
        }
    };
    let here = format!("{flag_url}/audit");
    log_page(&state, &chrome, &query, &here, intro, paging.before).await
}

async fn log_page(
    state: &UiState,
    chrome: &Chrome,
    query: &AuditQuery,
    here: &str,
    intro: Markup,
    before: Option<u64>,
) -> Response {
    let mut entries = match state.admin.store.audit_log(query).await {
        Ok(entries) => entries,
        Err(e) => return layout::store_error(e),
    };
    let more = entries.len() > PAGE_SIZE;
    entries.truncate(PAGE_SIZE);
    let now = now_ms();
    let main = html! {
        h1 { "Audit log" }
        (intro)
        div #audit-entries data-refresh {
            @if entries.is_empty() {
                p.muted { "No changes here yet." }
            }
            ol.audit {
                @for entry in &entries {
                    (entry_markup(chrome, entry, now))
                }
            }
            nav.pager aria-label="Pages" {
                @if before.is_some() {
                    a href=(here) { "Newest" }
                }
                @if let (true, Some(last)) = (more, entries.last()) {
                    a href=(format!("{here}?before={}", last.id)) rel="next" { "Older" }
                }
            }
        }
    };
    chrome.page(StatusCode::OK, Section::Audit, "Audit log", main)
}

fn entry_markup(chrome: &Chrome, entry: &AuditEntry, now: u64) -> Markup {
    // Every write of a flag or segment bumps its version: said once in the heading rather
    // than as a row of every table.
    let mut rows = diff::diff_optional(entry.before.as_ref(), entry.after.as_ref());
    rows.retain(|row| row.path != "version");
    let version = entry
        .after
        .as_ref()
        .and_then(|after| after.get("version"))
        .and_then(serde_json::Value::as_u64);
    let exact = crate::store::rfc3339(entry.at);
    let what = item_name(entry);
    html! {
        li.audit-entry {
            p.meta {
                (exact) " (" (when(entry.at, now)) ") — "
                strong { (entry.actor.name) } " " (action_text(entry.action)) " "
                @match item_url(chrome, entry) {
                    Some(url) => a href=(url) { (what) },
                    None => span { (what) },
                }
                @if let Some(version) = version {
                    ", now version " (version)
                }
            }
            (diff::table(&rows, &format!("What changed in {what}")))
        }
    }
}

/// "killed", "changed", ... as in "alice killed flag checkout".
pub fn action_text(action: AuditAction) -> &'static str {
    match action {
        AuditAction::Create => "created",
        AuditAction::Replace => "changed",
        AuditAction::Archive => "archived",
        AuditAction::Unarchive => "unarchived",
        AuditAction::Delete => "deleted",
        AuditAction::UpdateTargets => "changed the keys of",
        AuditAction::Kill => "killed",
        AuditAction::Unkill => "unkilled",
        AuditAction::SetOverride => "set an override of",
        AuditAction::RemoveOverride => "removed an override of",
        AuditAction::Revoke => "revoked",
        other => other.as_str(),
    }
}

fn item_name(entry: &AuditEntry) -> String {
    let kind = match entry.item_kind {
        AuditItemKind::Flag => "flag",
        AuditItemKind::Segment => "segment",
        AuditItemKind::Environment => "environment",
        AuditItemKind::ApiKey => "API key",
        other => other.as_str(),
    };
    format!("{kind} {}", entry.item_key)
}

/// The page of the item an entry is about, when it has one.
fn item_url(chrome: &Chrome, entry: &AuditEntry) -> Option<String> {
    let key = path_segment(&entry.item_key);
    match entry.item_kind {
        AuditItemKind::Flag => Some(chrome.url(&format!("/flags/{key}"))),
        AuditItemKind::Segment => Some(chrome.url(&format!("/segments/{key}"))),
        AuditItemKind::Environment if entry.item_key == chrome.env.key => {
            Some(chrome.url("/settings"))
        }
        _ => None,
    }
}
